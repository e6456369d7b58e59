//! The subscriber registry: one table (`subscribers`).
//!
//! The HAG reads a [`Snapshot`] into memory at start, on SIGHUP, and whenever
//! another process (the `tandem hag subscriber` CLI) commits a change
//! ([`Registry::data_version`], polled every second), so a revocation applies
//! to the subscriber's next connection without a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::IpNet;
use rusqlite::{params, Connection, OptionalExtension};

use crate::{now_unix, BadName, Db, Error};

/// The longest subscriber name, in bytes.
pub const MAX_NAME: usize = 200;

const COLUMNS: &str = "id, name, created_unix, revoked_unix, source_prefixes, cookie_expires";

/// One subscriber as the HAG needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscriber {
    /// Registry id (in the cookie).
    pub id: u32,
    /// Operator's name for it.
    pub name: String,
    /// Created (Unix seconds).
    pub created_unix: i64,
    /// Revoked (Unix seconds), if it is.
    pub revoked_unix: Option<i64>,
    /// Optional source ACL: when not empty, connections must come from here.
    pub source_prefixes: Vec<IpNet>,
    /// Expiry of the last cookie issued.
    pub cookie_expires: i64,
}

/// All subscribers, by id, as read at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// By registry id.
    pub by_id: HashMap<u32, Subscriber>,
}

/// An open registry.
pub struct Registry {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn parse_prefixes(s: &str) -> Vec<IpNet> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .filter_map(|p| IpNet::from_str(p.trim()).ok())
        .collect()
}

fn check_name(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        BadName::Empty
    } else if name.len() > MAX_NAME {
        BadName::TooLong
    } else {
        return Ok(());
    };
    Err(Error::BadName {
        name: name.to_string(),
        reason,
    })
}

impl Registry {
    fn err(&self, source: rusqlite::Error) -> Error {
        Error::Sql {
            db: Db::Subscribers,
            path: self.path.clone(),
            source,
        }
    }

    /// Opens (creating if needed) and migrates the database.
    pub fn open(path: &Path) -> Result<Self, Error> {
        Ok(Self {
            conn: crate::schema::open(Db::Subscribers, path)?,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Changes when another connection commits (cheap to poll).
    pub fn data_version(&self) -> Result<i64, Error> {
        self.conn
            .pragma_query_value(None, "data_version", |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Adds a subscriber; returns it.
    pub fn add(&self, name: &str, prefixes: &[IpNet]) -> Result<Subscriber, Error> {
        check_name(name)?;
        let list = prefixes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        self.conn
            .execute(
                "INSERT INTO subscribers (name, created_unix, source_prefixes) VALUES (?1, ?2, ?3)",
                params![name, now_unix(), list],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Error::Duplicate(name.to_string())
                }
                e => self.err(e),
            })?;
        self.get(name)
    }

    /// Looks a subscriber up by name.
    pub fn get(&self, name: &str) -> Result<Subscriber, Error> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM subscribers WHERE name = ?1"),
                params![name],
                row_to_subscriber,
            )
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| Error::NotFound(name.to_string()))
    }

    /// Records the expiry of the cookie just issued.
    pub fn set_cookie_expiry(&self, id: u32, expires: i64) -> Result<(), Error> {
        self.conn
            .execute(
                "UPDATE subscribers SET cookie_expires = ?1 WHERE id = ?2",
                params![expires, id],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Revokes a subscriber (kept for the record).
    pub fn revoke(&self, name: &str) -> Result<Subscriber, Error> {
        let n = self
            .conn
            .execute(
                "UPDATE subscribers SET revoked_unix = ?1 WHERE name = ?2 AND revoked_unix IS NULL",
                params![now_unix(), name],
            )
            .map_err(|e| self.err(e))?;
        let s = self.get(name)?;
        if n == 0 && s.revoked_unix.is_none() {
            return Err(Error::NotFound(name.to_string()));
        }
        Ok(s)
    }

    /// Every subscriber, by id.
    pub fn list(&self) -> Result<Vec<Subscriber>, Error> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM subscribers ORDER BY id"))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], row_to_subscriber)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Everything the HAG needs, in memory.
    pub fn snapshot(&self) -> Result<Snapshot, Error> {
        Ok(Snapshot {
            by_id: self.list()?.into_iter().map(|s| (s.id, s)).collect(),
        })
    }
}

fn row_to_subscriber(r: &rusqlite::Row<'_>) -> rusqlite::Result<Subscriber> {
    let id: i64 = r.get(0)?;
    Ok(Subscriber {
        id: u32::try_from(id).unwrap_or(u32::MAX),
        name: r.get(1)?,
        created_unix: r.get(2)?,
        revoked_unix: r.get(3)?,
        source_prefixes: parse_prefixes(&r.get::<_, String>(4)?),
        cookie_expires: r.get(5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_get_revoke_and_notice_changes_from_another_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subs.db");
        let hag = Registry::open(&path).unwrap();
        let v0 = hag.data_version().unwrap();
        let cli = Registry::open(&path).unwrap();
        let a = cli
            .add("line-1", &["10.64.1.0/24".parse().unwrap()])
            .unwrap();
        assert!(matches!(cli.add("line-1", &[]), Err(Error::Duplicate(n)) if n == "line-1"));
        assert!(matches!(
            cli.add("", &[]),
            Err(Error::BadName {
                reason: BadName::Empty,
                ..
            })
        ));
        assert!(matches!(
            cli.add(&"x".repeat(MAX_NAME + 1), &[]),
            Err(Error::BadName {
                reason: BadName::TooLong,
                ..
            })
        ));
        assert!(cli.add(&"x".repeat(MAX_NAME), &[]).is_ok());
        assert_ne!(
            hag.data_version().unwrap(),
            v0,
            "the HAG must see the CLI's commit"
        );
        let snap = hag.snapshot().unwrap();
        assert_eq!(snap.by_id[&a.id].source_prefixes.len(), 1);
        let r = cli.revoke("line-1").unwrap();
        assert!(r.revoked_unix.is_some());
        assert!(hag.snapshot().unwrap().by_id[&a.id].revoked_unix.is_some());
        assert!(matches!(cli.revoke("nobody"), Err(Error::NotFound(_))));
        // Reopening keeps everything (migrations are not re-applied).
        drop((hag, cli));
        let again = Registry::open(&path).unwrap();
        assert_eq!(again.list().unwrap().len(), 2);
    }

    #[test]
    fn sql_errors_name_the_file() {
        let e = Registry::open(Path::new("/nonexistent-dir/subs.db")).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(
                e,
                Error::Sql {
                    db: Db::Subscribers,
                    ..
                }
            ) && text.contains("subscriber registry /nonexistent-dir/subs.db"),
            "{text}"
        );
    }
}
