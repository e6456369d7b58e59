//! The outside world of a hybrid-access network, as a model: the copper
//! lines and their physics ([`line`]), the DSL modem over them ([`modem`]),
//! the faults that befall homes, lines,
//! cabinets, cells and the core ([`fault`]), a fleet of homes that reports
//! the way real CPEs do ([`fleet`]), and seeded fault campaigns with their
//! ground truth ([`campaign`]).
//!
//! The ops benchmark (`tandem ops bench`) runs ops' diagnosis on simulated
//! campaigns of thousands of homes; the lab's street (`tandem lab up
//! --homes N`) sets its links' real shaped rate, loss and cuts and its
//! modems' readings from the same model and faults. Ops itself never uses
//! this crate: it sees only reports.
//!
//! What it does not do: any I/O. Everything is deterministic given a seed.
#![forbid(unsafe_code)]

pub mod campaign;
pub mod fault;
pub mod fleet;
pub mod line;
pub mod modem;
mod rng;

pub use campaign::{Campaign, CampaignSpec, Case};
pub use fault::{effect, Effect, FaultKind, Scope};
pub use fleet::{Fleet, FleetSpec, InventoryRow};
