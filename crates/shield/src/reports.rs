//! Citizen reports in SQLite: phishing reports (a confirmed one blocks the
//! domain) and false-positive reports (a confirmed one allows it).
//! Reports of the same domain and kind are merged into one row with a
//! count; every comment is kept. Writes are committed before the API
//! answers, so nothing acknowledged is lost on restart.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use crate::config::normalize_domain;

/// A report store failure.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// SQLite failed.
    #[error("report database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The reported URL names no domain.
    #[error("{0:?} names no domain")]
    BadUrl(String),
    /// No such report.
    #[error("no report {0}")]
    NotFound(i64),
}

/// What a report says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The domain is phishing: block it.
    Phishing,
    /// The domain is blocked wrongly: allow it.
    FalsePositive,
}

impl Kind {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Phishing => "phishing",
            Self::FalsePositive => "false_positive",
        }
    }

    /// From the stored or submitted name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "phishing" | "" => Some(Self::Phishing),
            "false_positive" | "false-positive" => Some(Self::FalsePositive),
            _ => None,
        }
    }
}

/// Where a report stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Waiting for an analyst.
    Pending,
    /// Confirmed: applied to the local lists.
    Confirmed,
    /// Rejected.
    Rejected,
}

impl Status {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Rejected => "rejected",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "confirmed" => Self::Confirmed,
            "rejected" => Self::Rejected,
            _ => Self::Pending,
        }
    }
}

/// One (merged) report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Its ID.
    pub id: i64,
    /// The domain.
    pub domain: String,
    /// Phishing or false positive.
    pub kind: Kind,
    /// The first URL reported.
    pub url: String,
    /// Where it stands.
    pub status: Status,
    /// How many reports were merged into it.
    pub count: i64,
    /// First report, Unix seconds.
    pub first_at: i64,
    /// Last report, Unix seconds.
    pub last_at: i64,
    /// Comments, oldest first.
    pub comments: Vec<String>,
}

/// The outcome of a submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// The report's ID.
    pub id: i64,
    /// Merged into an existing report?
    pub merged: bool,
}

/// The report database.
#[derive(Debug)]
pub struct Store {
    db: Connection,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The domain of a reported URL or bare name.
pub fn domain_of(url: &str) -> Option<String> {
    let s = url.trim();
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    let host = s.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return None;
    }
    let d = normalize_domain(host)?;
    d.contains('.').then_some(d)
}

impl Store {
    /// Opens (and creates) the database.
    pub fn open(path: &Path) -> Result<Self, ReportError> {
        let db = Connection::open(path)?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS reports (
                id INTEGER PRIMARY KEY,
                domain TEXT NOT NULL,
                kind TEXT NOT NULL,
                url TEXT NOT NULL,
                status TEXT NOT NULL DEFAULT 'pending',
                count INTEGER NOT NULL DEFAULT 1,
                first_at INTEGER NOT NULL,
                last_at INTEGER NOT NULL,
                decided_at INTEGER,
                UNIQUE (domain, kind)
            );
            CREATE TABLE IF NOT EXISTS comments (
                report_id INTEGER NOT NULL REFERENCES reports(id),
                at INTEGER NOT NULL,
                comment TEXT NOT NULL
            );",
        )?;
        Ok(Self { db })
    }

    /// Records a report, merged with an earlier one of the same domain and kind.
    pub fn submit(
        &mut self,
        url: &str,
        comment: Option<&str>,
        kind: Kind,
    ) -> Result<Submitted, ReportError> {
        let domain = domain_of(url).ok_or_else(|| ReportError::BadUrl(url.into()))?;
        let url: String = url.trim().chars().take(2048).collect();
        let t = now();
        let tx = self.db.transaction()?;
        let existing: Option<i64> = tx
            .query_row(
                "SELECT id FROM reports WHERE domain = ?1 AND kind = ?2",
                params![domain, kind.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        let (id, merged) = match existing {
            Some(id) => {
                tx.execute(
                    "UPDATE reports SET count = count + 1, last_at = ?2 WHERE id = ?1",
                    params![id, t],
                )?;
                (id, true)
            }
            None => {
                tx.execute(
                    "INSERT INTO reports (domain, kind, url, first_at, last_at) VALUES (?1, ?2, ?3, ?4, ?4)",
                    params![domain, kind.as_str(), url, t],
                )?;
                (tx.last_insert_rowid(), false)
            }
        };
        if let Some(c) = comment.map(str::trim).filter(|c| !c.is_empty()) {
            let c: String = c.chars().take(4096).collect();
            tx.execute(
                "INSERT INTO comments (report_id, at, comment) VALUES (?1, ?2, ?3)",
                params![id, t, c],
            )?;
        }
        tx.commit()?;
        Ok(Submitted { id, merged })
    }

    /// Every report, newest first, optionally of one status.
    pub fn list(&self, status: Option<Status>) -> Result<Vec<Report>, ReportError> {
        let mut q = self.db.prepare(
            "SELECT id, domain, kind, url, status, count, first_at, last_at FROM reports
             WHERE ?1 IS NULL OR status = ?1 ORDER BY last_at DESC, id DESC",
        )?;
        let rows = q.query_map(params![status.map(Status::as_str)], |r| {
            Ok(Report {
                id: r.get(0)?,
                domain: r.get(1)?,
                kind: Kind::parse(&r.get::<_, String>(2)?).unwrap_or(Kind::Phishing),
                url: r.get(3)?,
                status: Status::parse(&r.get::<_, String>(4)?),
                count: r.get(5)?,
                first_at: r.get(6)?,
                last_at: r.get(7)?,
                comments: Vec::new(),
            })
        })?;
        let mut out = rows.collect::<Result<Vec<_>, _>>()?;
        let mut c = self
            .db
            .prepare("SELECT comment FROM comments WHERE report_id = ?1 ORDER BY at, rowid")?;
        for r in &mut out {
            r.comments = c
                .query_map(params![r.id], |x| x.get(0))?
                .collect::<Result<_, _>>()?;
        }
        Ok(out)
    }

    /// Confirms or rejects a report.
    pub fn decide(&mut self, id: i64, status: Status) -> Result<Report, ReportError> {
        let n = self.db.execute(
            "UPDATE reports SET status = ?2, decided_at = ?3 WHERE id = ?1",
            params![id, status.as_str(), now()],
        )?;
        if n == 0 {
            return Err(ReportError::NotFound(id));
        }
        self.list(None)?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or(ReportError::NotFound(id))
    }

    /// Confirmed domains of one kind.
    pub fn confirmed(&self, kind: Kind) -> Result<Vec<String>, ReportError> {
        let mut q = self.db.prepare(
            "SELECT domain FROM reports WHERE status = 'confirmed' AND kind = ?1 ORDER BY domain",
        )?;
        let rows = q.query_map(params![kind.as_str()], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A number that changes whenever another connection commits.
    pub fn data_version(&self) -> Result<i64, ReportError> {
        Ok(self.db.query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_from_urls() {
        assert_eq!(
            domain_of("https://User@Login.Evil.Example:8443/x?y#z"),
            Some("login.evil.example".into())
        );
        assert_eq!(domain_of("evil.example"), Some("evil.example".into()));
        assert_eq!(domain_of("http://192.0.2.1/"), None);
        assert_eq!(domain_of("localhost"), None);
        assert_eq!(domain_of(""), None);
    }

    #[test]
    fn merge_decide_and_persist() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let p = dir.join("r.sqlite");
        {
            let mut s = Store::open(&p).unwrap();
            let a = s
                .submit(
                    "http://evil.example/login",
                    Some("bank look-alike"),
                    Kind::Phishing,
                )
                .unwrap();
            let b = s
                .submit("https://EVIL.example/", Some("again"), Kind::Phishing)
                .unwrap();
            assert_eq!(a.id, b.id);
            assert!(!a.merged && b.merged);
            let fp = s.submit("good.example", None, Kind::FalsePositive).unwrap();
            assert_ne!(fp.id, a.id);
            s.decide(a.id, Status::Confirmed).unwrap();
            assert!(matches!(
                s.decide(999, Status::Rejected),
                Err(ReportError::NotFound(999))
            ));
        }
        let s = Store::open(&p).unwrap();
        let all = s.list(None).unwrap();
        assert_eq!(all.len(), 2);
        let r = all.iter().find(|r| r.domain == "evil.example").unwrap();
        assert_eq!(r.count, 2);
        assert_eq!(r.status, Status::Confirmed);
        assert_eq!(r.comments, vec!["bank look-alike", "again"]);
        assert_eq!(s.confirmed(Kind::Phishing).unwrap(), vec!["evil.example"]);
        assert!(s.confirmed(Kind::FalsePositive).unwrap().is_empty());
    }
}
