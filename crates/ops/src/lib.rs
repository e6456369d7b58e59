//! `tandem ops`: the operator's service. It takes telemetry from every CPE
//! and HAG, keeps each home's recent history, and answers where a home's
//! fault is (home, line, cabinet, mobile, core, customer), whom to send,
//! and why, with the evidence in words and numbers.
//!
//! - [`inventory`]: which cabinet, line card and cell serve each home (CSV).
//! - [`history`]: what is kept per home (bounded minute buckets, its healthy
//!   reference).
//! - [`features`]: the figures read off a home's history at a moment.
//! - [`engine`]: Tandem's diagnosis (correlation, history, both links,
//!   silence) and [`baseline`], the classic per-line DLM rules it is judged
//!   against.
//! - [`replay`]: the same engine on a JSON-lines file of reports.
//! - [`policy`]: incidents change policy (the mobile budget waived for a
//!   line or cabinet incident's homes) and the operator's budget grants.
//! - [`service`]: `tandem ops run`, the HTTP API (signed reports in,
//!   diagnoses and incidents out), over [`store`] (SQLite: tokens,
//!   telemetry history, incidents) and [`config`] (`ops.toml`); [`tls`]
//!   makes the fleet's private CA and ops' certificate.
#![forbid(unsafe_code)]

pub mod baseline;
pub mod config;
pub mod engine;
pub mod features;
pub mod history;
pub mod inventory;
pub mod policy;
pub mod replay;
pub mod service;
pub mod store;
pub mod tls;

pub use engine::{Diagnosis, Engine, Group, Settings};
pub use inventory::Inventory;
