//! Opening a database file and bringing its schema up to date.
//!
//! Each file has one list of migrations (SQL files in `migrations/`),
//! applied in order, each in its own transaction; index + 1 is the schema
//! version it leads to, kept in `PRAGMA user_version`. A file already at a
//! version is not touched, so existing databases open unchanged.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::{Db, Error};

/// The registry's migrations (`subscribers.db`).
pub const SUBSCRIBERS: &[&str] = &[include_str!("../migrations/subscribers_0001.sql")];

/// The usage file's migrations (`subscribers.usage.db`). Version 1 is the
/// table usage files had before they carried a version; version 2 adds the
/// waived bytes.
pub const USAGE: &[&str] = &[
    include_str!("../migrations/usage_0001.sql"),
    include_str!("../migrations/usage_0002.sql"),
];

/// The ops service's migrations (`ops.db`: tokens, telemetry history,
/// incidents; version 2: the mobile budget grants).
pub const OPS: &[&str] = &[
    include_str!("../migrations/ops_0001.sql"),
    include_str!("../migrations/ops_0002.sql"),
];

/// The migrations of `db`.
pub fn migrations(db: Db) -> &'static [&'static str] {
    match db {
        Db::Subscribers => SUBSCRIBERS,
        Db::Usage => USAGE,
        Db::Ops => OPS,
    }
}

/// Opens (creating if needed) `path` as `db`: waits up to 5 s for another
/// process's lock, write-ahead log (readers never block the writer), and
/// migrates it.
pub fn open(db: Db, path: &Path) -> Result<Connection, Error> {
    let wrap = |source| Error::Sql {
        db,
        path: path.to_path_buf(),
        source,
    };
    let mut conn = Connection::open(path).map_err(wrap)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(wrap)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(wrap)?;
    migrate(&mut conn, migrations(db)).map_err(wrap)?;
    Ok(conn)
}

/// Applies the migrations past the file's `user_version`.
fn migrate(conn: &mut Connection, list: &[&str]) -> rusqlite::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let done = usize::try_from(version.max(0)).unwrap_or(usize::MAX);
    for (i, sql) in list.iter().enumerate().skip(done) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usage_file_from_before_versions_opens_with_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.usage.db");
        {
            // What the HAG wrote before the schema had a version.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS usage (subscriber TEXT NOT NULL, period TEXT NOT NULL,
                 link TEXT NOT NULL, up_bytes INTEGER NOT NULL DEFAULT 0,
                 down_bytes INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (subscriber, period, link));
                 INSERT INTO usage VALUES ('home-1', '2026-11', 'lte', 5, 7);",
            )
            .unwrap();
        }
        let c = open(Db::Usage, &path).unwrap();
        let v: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, USAGE.len() as i64);
        let n: i64 = c
            .query_row("SELECT up_bytes + down_bytes FROM usage", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 12);
        drop(c);
    }
}
