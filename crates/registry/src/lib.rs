//! Tandem's subscriber registry and billing counts: who may use a HAG
//! ([`Registry`]: subscribers, their optional source ACL, revocation, the
//! expiry of the last cookie issued) and how many bytes each one moved per
//! calendar month and access link ([`Usage`]: the count the operator
//! invoices). Used by the HAG, the `tandem hag subscriber` CLI and, next,
//! `ops` and further HAGs: they depend on this crate, never on `hag`.
//!
//! Storage is SQLite, embedded: two files, the registry (`subscribers.db`)
//! and its usage neighbour (`subscribers.usage.db`; separate so that
//! billing writes do not make every HAG re-read the registry). Each file's
//! schema is a list of migrations applied in order, the version kept in
//! `PRAGMA user_version` ([`schema`]).
//!
//! What it does not do: cookies and keys (the HAG's `cookie` module), policy
//! (limits, destinations), caching (the HAG holds a [`Snapshot`] and
//! re-reads it when [`Registry::data_version`] moves).
//!
//! Adding PostgreSQL (several HAGs sharing one registry): the public API is
//! the methods of [`Registry`] and [`Usage`], which take and return plain
//! types, never a SQLite handle. Everything SQLite-specific is in
//! [`schema`] and at the top of each store: opening (`busy_timeout`, WAL),
//! the schema version (`PRAGMA user_version`), change detection (`PRAGMA
//! data_version`; PostgreSQL would use `LISTEN`/`NOTIFY` or a version row)
//! and the dialect of a few statements (`?1` placeholders → `$1`,
//! `strftime('%Y-%m', 'now')` → `to_char(now() at time zone 'utc',
//! 'YYYY-MM')`; `ON CONFLICT … DO UPDATE` is the same). A backend enum
//! inside the two stores, with a `postgres` module beside [`schema`] holding
//! its statements and migrations, adds it without touching callers; the
//! migration lists keep their numbering so a database moved from SQLite
//! starts at the same version.
//!
//! Modules: [`schema`] (opening a file, migrations), [`subscribers`]
//! ([`Registry`], [`Subscriber`], [`Snapshot`]), [`usage`] ([`Usage`],
//! [`UsageRecord`], [`UsageRow`]).
#![forbid(unsafe_code)]

pub mod schema;
pub mod subscribers;
pub mod usage;

use std::path::PathBuf;

pub use subscribers::{Registry, Snapshot, Subscriber};
pub use usage::{Usage, UsageRecord, UsageRow};

/// Which of the two databases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    /// The subscriber registry.
    Subscribers,
    /// The per-subscriber usage (billing) count.
    Usage,
    /// The ops service's tokens, telemetry history and incidents.
    Ops,
}

impl std::fmt::Display for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Subscribers => "subscriber registry",
            Self::Usage => "usage database",
            Self::Ops => "ops database",
        })
    }
}

/// Why a name cannot be a subscriber's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadName {
    /// Empty.
    #[error("name must be 1 to 200 characters")]
    Empty,
    /// Longer than [`subscribers::MAX_NAME`] bytes.
    #[error("name must be 1 to 200 characters")]
    TooLong,
}

/// A registry or usage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database refused (the file could not be opened, is locked past
    /// the busy timeout, is corrupt, ...).
    #[error("{db} {}: {source}", path.display())]
    Sql {
        /// Which database.
        db: Db,
        /// Its file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// The name cannot be used.
    #[error("subscriber {name:?}: {reason}")]
    BadName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: BadName,
    },
    /// A subscriber of that name is already registered.
    #[error("subscriber {0:?} exists")]
    Duplicate(String),
    /// No subscriber of that name.
    #[error("no subscriber {0:?}")]
    NotFound(String),
}

/// The wall clock in Unix seconds (0 before 1970): the registry's
/// timestamps and the cookies' times.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
