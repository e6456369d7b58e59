//! Per-subscriber, per-link byte counts that survive restarts: the HAG's
//! count is the one that bills (the mobile data budget is enforced on the
//! CPE, which sees its own link; the HAG's count is what the operator
//! invoices and audits).
//!
//! A file of its own next to the registry (writes here must not make every
//! HAG re-read the registry), one row per subscriber, calendar month (UTC,
//! `YYYY-MM`) and link. Writers add batches ([`Usage::add`]); queueing and
//! batching are the writer's business (the HAG's `usage` module).

use std::path::{Path, PathBuf};

use hybrid::Link;
use rusqlite::{params, Connection};

use crate::{Db, Error};

/// The usage file's default place: beside the registry,
/// `subscribers.db` → `subscribers.usage.db`.
pub fn default_path(registry: &Path) -> PathBuf {
    registry.with_extension("usage.db")
}

/// Bytes to add to a subscriber's count on a link, this month.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRecord {
    /// Subscriber name.
    pub subscriber: String,
    /// The access link.
    pub link: Link,
    /// Bytes from the subscriber.
    pub up: u64,
    /// Bytes to the subscriber.
    pub down: u64,
    /// Bytes from the subscriber while its budget was waived (not billed).
    pub waived_up: u64,
    /// Bytes to the subscriber while its budget was waived (not billed).
    pub waived_down: u64,
}

/// One subscriber's bytes on one link in one month.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow {
    /// Subscriber name.
    pub subscriber: String,
    /// `YYYY-MM`.
    pub period: String,
    /// Link name as stored ("dsl", "lte").
    pub link: String,
    /// Bytes from the subscriber.
    pub up_bytes: u64,
    /// Bytes to the subscriber.
    pub down_bytes: u64,
    /// Bytes from the subscriber while its budget was waived (not billed).
    pub waived_up_bytes: u64,
    /// Bytes to the subscriber while its budget was waived (not billed).
    pub waived_down_bytes: u64,
}

/// An open usage database.
pub struct Usage {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Usage")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Usage {
    fn err(&self, source: rusqlite::Error) -> Error {
        Error::Sql {
            db: Db::Usage,
            path: self.path.clone(),
            source,
        }
    }

    /// Opens (creating if needed) and migrates the file.
    pub fn open(path: &Path) -> Result<Self, Error> {
        Ok(Self {
            conn: crate::schema::open(Db::Usage, path)?,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds a batch to the current month's counts, in one transaction.
    pub fn add(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        self.add_inner(batch).map_err(|e| self.err(e))
    }

    fn add_inner(&mut self, batch: &[UsageRecord]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO usage (subscriber, period, link, up_bytes, down_bytes,
                                    waived_up_bytes, waived_down_bytes)
                 VALUES (?1, strftime('%Y-%m', 'now'), ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (subscriber, period, link) DO UPDATE SET
                   up_bytes = up_bytes + excluded.up_bytes,
                   down_bytes = down_bytes + excluded.down_bytes,
                   waived_up_bytes = waived_up_bytes + excluded.waived_up_bytes,
                   waived_down_bytes = waived_down_bytes + excluded.waived_down_bytes",
            )?;
            for r in batch {
                st.execute(params![
                    r.subscriber,
                    r.link.name(),
                    clamp(r.up),
                    clamp(r.down),
                    clamp(r.waived_up),
                    clamp(r.waived_down)
                ])?;
            }
        }
        tx.commit()
    }

    /// The rows of `subscriber` (all when `None`), newest month first.
    pub fn read(&self, subscriber: Option<&str>) -> Result<Vec<UsageRow>, Error> {
        let mut st = self
            .conn
            .prepare(
                "SELECT subscriber, period, link, up_bytes, down_bytes,
                        waived_up_bytes, waived_down_bytes FROM usage
                 WHERE ?1 IS NULL OR subscriber = ?1
                 ORDER BY period DESC, subscriber, link",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![subscriber], |r| {
                Ok(UsageRow {
                    subscriber: r.get(0)?,
                    period: r.get(1)?,
                    link: r.get(2)?,
                    up_bytes: r.get::<_, i64>(3)?.max(0).unsigned_abs(),
                    down_bytes: r.get::<_, i64>(4)?.max(0).unsigned_abs(),
                    waived_up_bytes: r.get::<_, i64>(5)?.max(0).unsigned_abs(),
                    waived_down_bytes: r.get::<_, i64>(6)?.max(0).unsigned_abs(),
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(s: &str, link: Link, up: u64, down: u64) -> UsageRecord {
        UsageRecord {
            subscriber: s.into(),
            link,
            up,
            down,
            waived_up: 0,
            waived_down: 0,
        }
    }

    #[test]
    fn adds_up_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subscribers.usage.db");
        assert_eq!(default_path(&dir.path().join("subscribers.db")), path);
        for _ in 0..2 {
            let mut u = Usage::open(&path).unwrap();
            u.add(&[
                rec("home-1", Link::Lte, 10, 1_000),
                rec("home-1", Link::Dsl, 5, 500),
                rec("home-2", Link::Lte, 1, 2),
            ])
            .unwrap();
        }
        let u = Usage::open(&path).unwrap();
        let rows = u.read(Some("home-1")).unwrap();
        assert_eq!(rows.len(), 2);
        let lte = rows.iter().find(|r| r.link == "lte").unwrap();
        assert_eq!((lte.up_bytes, lte.down_bytes), (20, 2_000));
        assert_eq!(lte.period.len(), 7, "{}", lte.period);
        assert_eq!(u.read(None).unwrap().len(), 3);
    }

    #[test]
    fn waived_bytes_are_kept_apart_from_the_billed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut u = Usage::open(&dir.path().join("u.db")).unwrap();
        let mut r = rec("home-1", Link::Lte, 10, 100);
        u.add(std::slice::from_ref(&r)).unwrap();
        (r.up, r.down, r.waived_up, r.waived_down) = (0, 0, 7, 70);
        u.add(&[r.clone(), r]).unwrap();
        let row = &u.read(Some("home-1")).unwrap()[0];
        assert_eq!((row.up_bytes, row.down_bytes), (10, 100));
        assert_eq!((row.waived_up_bytes, row.waived_down_bytes), (14, 140));
    }
}
