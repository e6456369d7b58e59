//! The ops database (SQLite, opened and migrated through
//! [`registry::schema`], the one place Tandem's databases are opened):
//! tokens, telemetry history and incidents.

use std::collections::HashMap;
use std::path::Path;

use hybrid::{Dispatch, Location};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::engine::{Diagnosis, Group};

/// A database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening or migrating.
    #[error(transparent)]
    Open(#[from] registry::Error),
    /// A query.
    #[error("ops database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A name that cannot hold a token.
    #[error("{0:?} is not a name (1 to 64 of A-Z a-z 0-9 - _ . :)")]
    BadName(String),
    /// The system's random source failed.
    #[error("no random bytes for a token: {0}")]
    Random(String),
    /// No incident of that id.
    #[error("no incident {0}")]
    NoIncident(i64),
    /// No grant of that id.
    #[error("no grant {0}")]
    NoGrant(i64),
    /// An incident in a state that does not allow the change.
    #[error("incident {id} is {state}; {wanted} needs it {needs}")]
    State {
        /// The incident.
        id: i64,
        /// Its state.
        state: String,
        /// The change asked for.
        wanted: &'static str,
        /// The state(s) the change needs.
        needs: &'static str,
    },
}

/// Who a token belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A CPE (named by its subscriber): signs its reports.
    Cpe,
    /// A HAG: signs its reports.
    Hag,
    /// An operator (or the console): reads and changes incidents.
    Operator,
}

impl TokenKind {
    /// The name in the database and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpe => "cpe",
            Self::Hag => "hag",
            Self::Operator => "operator",
        }
    }
}

/// The state of an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Seen, nobody sent yet.
    Open,
    /// Someone is on the way.
    Dispatched,
    /// Repaired, with the technician's finding.
    Resolved,
    /// Gone before anyone went.
    Cleared,
    /// Folded into a larger incident (a cabinet, a cell, the core).
    Merged,
}

impl State {
    /// Every state.
    pub const ALL: [Self; 5] = [
        Self::Open,
        Self::Dispatched,
        Self::Resolved,
        Self::Cleared,
        Self::Merged,
    ];

    /// The name in the API and the database.
    pub fn name(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Dispatched => "dispatched",
            Self::Resolved => "resolved",
            Self::Cleared => "cleared",
            Self::Merged => "merged",
        }
    }

    /// The state of a name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.name() == s)
    }

    /// Whether the incident still needs someone.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Open | Self::Dispatched)
    }
}

/// One incident with its homes.
#[derive(Clone, Debug, Serialize)]
pub struct Incident {
    /// Its number.
    pub id: i64,
    /// What it groups (`home:NAME`, `cabinet:NAME`, `card:CAB/N`, `cell:NAME`, `core`).
    pub group: String,
    /// Where the fault is.
    pub location: Location,
    /// Whom to send.
    pub dispatch: Dispatch,
    /// The likely fault.
    pub fault: String,
    /// Its state.
    pub state: State,
    /// Opened, Unix ms.
    pub opened_ms: i64,
    /// Last changed, Unix ms.
    pub updated_ms: i64,
    /// Dispatched, Unix ms.
    pub dispatched_ms: Option<i64>,
    /// Resolved, Unix ms.
    pub resolved_ms: Option<i64>,
    /// The technician's finding: where the fault really was.
    pub finding: Option<Location>,
    /// A note (the technician's, or why it was merged).
    pub note: Option<String>,
    /// The diagnosis that opened it (or its latest, while open).
    pub diagnosis: serde_json::Value,
    /// The homes it affects.
    pub homes: Vec<String>,
}

/// An operator's grant of extra mobile budget to a set of homes.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Grant {
    /// Its number.
    pub id: i64,
    /// What it was given to: `cabinet:NAME`, `cell:ID` or `homes`.
    pub scope: String,
    /// Extra bytes on top of each home's budget while it holds.
    pub extra_bytes: u64,
    /// From when, Unix ms.
    pub from_ms: i64,
    /// Until when, Unix ms.
    pub until_ms: i64,
    /// Why (the operator's words).
    pub note: Option<String>,
    /// When it was taken back, if it was.
    pub revoked_ms: Option<i64>,
    /// The homes it covers.
    pub homes: Vec<String>,
}

impl Grant {
    /// Whether it holds at `now_ms`.
    pub fn holds(&self, now_ms: u64) -> bool {
        let now = to_i64(now_ms);
        self.revoked_ms.is_none() && self.from_ms <= now && now < self.until_ms
    }
}

/// The key of a group, as stored.
pub fn group_key(g: &Group) -> String {
    match g {
        Group::Home(h) => format!("home:{h}"),
        Group::Cabinet(c) => format!("cabinet:{c}"),
        Group::Card(c, n) => format!("card:{c}/{n}"),
        Group::Cell(c) => format!("cell:{c}"),
        Group::Core => "core".into(),
    }
}

fn issue(conn: &Connection, kind: TokenKind, name: &str, now_ms: u64) -> Result<String, Error> {
    if !valid_name(name) {
        return Err(Error::BadName(name.to_string()));
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| Error::Random(e.to_string()))?;
    let token = hex::encode(raw);
    let key = telemetry::key(token.as_bytes());
    conn.prepare_cached(
        "INSERT INTO tokens (kind, name, key, created_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (kind, name) DO UPDATE SET key = excluded.key, created_ms = excluded.created_ms",
    )?
    .execute(params![kind.name(), name, key.as_bytes().to_vec(), to_i64(now_ms)])?;
    Ok(token)
}

/// One report to keep.
#[derive(Clone, Debug)]
pub struct StoredReport {
    /// Subscriber.
    pub subscriber: String,
    /// Boot id.
    pub boot_id: String,
    /// Sequence.
    pub seq: u64,
    /// CPE clock.
    pub sent_at_ms: u64,
    /// Ops clock.
    pub received_ms: u64,
    /// The body as received.
    pub body: String,
}

/// The last report of one CPE boot (for the replay check after a restart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastSeq {
    /// Subscriber.
    pub subscriber: String,
    /// Boot id.
    pub boot_id: String,
    /// Highest sequence number.
    pub seq: u64,
    /// The latest report date of that boot, Unix ms.
    pub sent_at_ms: u64,
}

/// An open ops database.
pub struct Store {
    conn: Connection,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= telemetry::MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn location(s: &str) -> Location {
    s.parse().unwrap_or(Location::None)
}

impl Store {
    /// Opens (creating and migrating) the database.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let conn = registry::schema::open(registry::Db::Ops, path)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(Self { conn })
    }

    /// Issues a new token for `name` (replacing any it had) and returns
    /// it; only its key is kept.
    pub fn issue_token(&self, kind: TokenKind, name: &str, now_ms: u64) -> Result<String, Error> {
        issue(&self.conn, kind, name, now_ms)
    }

    /// Issues tokens for many names in one transaction (a fleet's CPEs),
    /// in the same order.
    pub fn issue_tokens(
        &mut self,
        kind: TokenKind,
        names: &[String],
        now_ms: u64,
    ) -> Result<Vec<String>, Error> {
        let tx = self.conn.transaction()?;
        let tokens = names
            .iter()
            .map(|n| issue(&tx, kind, n, now_ms))
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit()?;
        Ok(tokens)
    }

    /// Revokes `name`'s token; whether it had one.
    pub fn revoke_token(&self, kind: TokenKind, name: &str) -> Result<bool, Error> {
        Ok(self.conn.execute(
            "DELETE FROM tokens WHERE kind = ?1 AND name = ?2",
            params![kind.name(), name],
        )? > 0)
    }

    /// Every key of a kind, by name.
    pub fn keys(&self, kind: TokenKind) -> Result<HashMap<String, telemetry::Key>, Error> {
        let mut st = self
            .conn
            .prepare("SELECT name, key FROM tokens WHERE kind = ?1")?;
        let rows = st.query_map([kind.name()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = HashMap::new();
        for r in rows {
            let (name, key) = r?;
            if let Ok(k) = <[u8; 32]>::try_from(key.as_slice()) {
                out.insert(name, telemetry::Key::from_bytes(k));
            }
        }
        Ok(out)
    }

    /// What changes when a token is issued or revoked (their count and the
    /// newest one's time), to notice `tandem ops token` without a restart.
    pub fn tokens_version(&self) -> Result<(i64, i64), Error> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*), COALESCE(MAX(created_ms), 0) FROM tokens",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    /// Keeps a batch of reports (one transaction; a report already kept is
    /// skipped).
    pub fn insert_reports(&mut self, batch: &[StoredReport]) -> Result<(), Error> {
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT OR IGNORE INTO reports (subscriber, boot_id, seq, sent_at_ms, received_ms, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for r in batch {
                st.execute(params![
                    r.subscriber,
                    r.boot_id,
                    to_i64(r.seq),
                    to_i64(r.sent_at_ms),
                    to_i64(r.received_ms),
                    r.body
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Reports kept now.
    pub fn report_count(&self) -> Result<u64, Error> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM reports", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Deletes reports received before `before_ms`; how many.
    pub fn prune(&self, before_ms: u64) -> Result<usize, Error> {
        Ok(self.conn.execute(
            "DELETE FROM reports WHERE received_ms < ?1",
            [to_i64(before_ms)],
        )?)
    }

    /// The reports received since `since_ms`, oldest first (bodies), to
    /// give a restarted engine its history back.
    pub fn reports_since(&self, since_ms: u64, mut f: impl FnMut(&str)) -> Result<u64, Error> {
        let mut st = self
            .conn
            .prepare("SELECT body FROM reports WHERE received_ms >= ?1 ORDER BY received_ms")?;
        let mut rows = st.query([to_i64(since_ms)])?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            let body: String = r.get(0)?;
            f(&body);
            n += 1;
        }
        Ok(n)
    }

    /// The last sequence number of every boot received since `since_ms`.
    pub fn last_seqs(&self, since_ms: u64) -> Result<Vec<LastSeq>, Error> {
        let mut st = self.conn.prepare(
            "SELECT subscriber, boot_id, MAX(seq), MAX(sent_at_ms) FROM reports
             WHERE received_ms >= ?1 GROUP BY subscriber, boot_id",
        )?;
        let rows = st.query_map([to_i64(since_ms)], |r| {
            Ok(LastSeq {
                subscriber: r.get(0)?,
                boot_id: r.get(1)?,
                seq: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                sent_at_ms: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Opens an incident for `d` with `homes`.
    pub fn open_incident(
        &self,
        d: &Diagnosis,
        homes: &[String],
        now_ms: u64,
    ) -> Result<i64, Error> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO incidents (group_key, location, dispatch, fault, state, opened_ms, updated_ms, diagnosis)
             VALUES (?1, ?2, ?3, ?4, 'open', ?5, ?5, ?6)",
            params![
                group_key(&d.group),
                d.location.name(),
                d.dispatch.name(),
                d.fault,
                to_i64(now_ms),
                serde_json::to_string(d).unwrap_or_default()
            ],
        )?;
        let id = tx.last_insert_rowid();
        for h in homes {
            tx.execute(
                "INSERT OR IGNORE INTO incident_homes (incident, subscriber, added_ms) VALUES (?1, ?2, ?3)",
                params![id, h, to_i64(now_ms)],
            )?;
        }
        tx.commit()?;
        Ok(id)
    }

    /// Adds homes to an incident, and refreshes its diagnosis while it is
    /// open; the homes that were new.
    pub fn update_incident(
        &self,
        id: i64,
        d: &Diagnosis,
        homes: &[String],
        now_ms: u64,
    ) -> Result<Vec<String>, Error> {
        let tx = self.conn.unchecked_transaction()?;
        let mut added = Vec::new();
        for h in homes {
            if tx.execute(
                "INSERT OR IGNORE INTO incident_homes (incident, subscriber, added_ms) VALUES (?1, ?2, ?3)",
                params![id, h, to_i64(now_ms)],
            )? > 0
            {
                added.push(h.clone());
            }
        }
        let changed = tx.execute(
            "UPDATE incidents SET location = ?2, dispatch = ?3, fault = ?4, diagnosis = ?5, updated_ms = ?6
             WHERE id = ?1 AND state = 'open' AND (fault != ?4 OR location != ?2)",
            params![
                id,
                d.location.name(),
                d.dispatch.name(),
                d.fault,
                serde_json::to_string(d).unwrap_or_default(),
                to_i64(now_ms)
            ],
        )?;
        if changed == 0 && !added.is_empty() {
            tx.execute(
                "UPDATE incidents SET updated_ms = ?2 WHERE id = ?1",
                params![id, to_i64(now_ms)],
            )?;
        }
        tx.commit()?;
        Ok(added)
    }

    /// Moves an incident to `to` (with a finding and a note), checking the
    /// transition: open → dispatched, open|dispatched → resolved,
    /// open → cleared, open → merged.
    pub fn transition(
        &self,
        id: i64,
        to: State,
        finding: Option<Location>,
        note: Option<&str>,
        now_ms: u64,
    ) -> Result<Incident, Error> {
        let cur = self.incident(id)?.ok_or(Error::NoIncident(id))?;
        let (wanted, needs, ok) = match to {
            State::Dispatched => ("dispatch", "open", cur.state == State::Open),
            State::Resolved => ("resolve", "open or dispatched", cur.state.is_active()),
            State::Cleared => ("clear", "open", cur.state == State::Open),
            State::Merged => ("merge", "open", cur.state == State::Open),
            State::Open => ("reopen", "never", false),
        };
        if !ok {
            return Err(Error::State {
                id,
                state: cur.state.name().into(),
                wanted,
                needs,
            });
        }
        let now = to_i64(now_ms);
        self.conn.execute(
            "UPDATE incidents SET state = ?2, updated_ms = ?3,
                dispatched_ms = CASE WHEN ?2 = 'dispatched' THEN ?3 ELSE dispatched_ms END,
                resolved_ms = CASE WHEN ?2 IN ('resolved', 'cleared', 'merged') THEN ?3 ELSE resolved_ms END,
                finding = COALESCE(?4, finding), note = COALESCE(?5, note)
             WHERE id = ?1",
            params![id, to.name(), now, finding.map(Location::name), note],
        )?;
        self.incident(id)?.ok_or(Error::NoIncident(id))
    }

    /// One incident.
    pub fn incident(&self, id: i64) -> Result<Option<Incident>, Error> {
        let mut v = self.query_incidents("WHERE id = ?1", params![id], 1)?;
        Ok(v.pop())
    }

    /// Incidents in a state (all when `None`), newest first.
    pub fn incidents(&self, state: Option<State>, limit: usize) -> Result<Vec<Incident>, Error> {
        match state {
            Some(s) => self.query_incidents("WHERE state = ?1", params![s.name()], limit),
            None => self.query_incidents("", params![], limit),
        }
    }

    /// Incidents resolved (repaired) at or after `since_ms`, newest first.
    pub fn resolved_since(&self, since_ms: u64) -> Result<Vec<Incident>, Error> {
        self.query_incidents(
            "WHERE state = 'resolved' AND resolved_ms >= ?1",
            params![to_i64(since_ms)],
            usize::MAX,
        )
    }

    /// The active (open or dispatched) incident of a group, if any.
    pub fn active_incident(&self, group: &str) -> Result<Option<i64>, Error> {
        Ok(self
            .conn
            .query_row(
                "SELECT id FROM incidents WHERE group_key = ?1 AND state IN ('open', 'dispatched')
                 ORDER BY id DESC LIMIT 1",
                [group],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Incidents per state, and the resolved ones whose finding was the
    /// diagnosed location (first-time fix).
    pub fn stats(&self) -> Result<(HashMap<&'static str, u64>, u64, u64), Error> {
        let mut by_state = HashMap::new();
        for s in State::ALL {
            let n: i64 = self.conn.query_row(
                "SELECT COUNT(*) FROM incidents WHERE state = ?1",
                [s.name()],
                |r| r.get(0),
            )?;
            by_state.insert(s.name(), u64::try_from(n).unwrap_or(0));
        }
        let (resolved, right): (i64, i64) = self.conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(finding = location), 0) FROM incidents
             WHERE state = 'resolved' AND finding IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((
            by_state,
            u64::try_from(resolved).unwrap_or(0),
            u64::try_from(right).unwrap_or(0),
        ))
    }

    /// Records a grant of `extra_bytes` to `homes` from `from_ms` to
    /// `until_ms`.
    pub fn create_grant(
        &self,
        scope: &str,
        homes: &[String],
        extra_bytes: u64,
        from_ms: u64,
        until_ms: u64,
        note: Option<&str>,
    ) -> Result<Grant, Error> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO grants (scope, extra_bytes, from_ms, until_ms, note) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![scope, to_i64(extra_bytes), to_i64(from_ms), to_i64(until_ms), note],
        )?;
        let id = tx.last_insert_rowid();
        for h in homes {
            tx.execute(
                "INSERT OR IGNORE INTO grant_homes (grant_id, subscriber) VALUES (?1, ?2)",
                params![id, h],
            )?;
        }
        tx.commit()?;
        self.grant(id)?.ok_or(Error::NoGrant(id))
    }

    /// Takes a grant back (it stops holding now).
    pub fn revoke_grant(&self, id: i64, now_ms: u64) -> Result<Grant, Error> {
        self.conn.execute(
            "UPDATE grants SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
            params![id, to_i64(now_ms)],
        )?;
        self.grant(id)?.ok_or(Error::NoGrant(id))
    }

    /// One grant.
    pub fn grant(&self, id: i64) -> Result<Option<Grant>, Error> {
        Ok(self.query_grants("WHERE id = ?1", params![id], 1)?.pop())
    }

    /// The grants, newest first; with `holding_at`, only those that hold
    /// then.
    pub fn grants(&self, holding_at: Option<u64>, limit: usize) -> Result<Vec<Grant>, Error> {
        match holding_at {
            Some(t) => self.query_grants(
                "WHERE revoked_ms IS NULL AND from_ms <= ?1 AND ?1 < until_ms",
                params![to_i64(t)],
                limit,
            ),
            None => self.query_grants("", params![], limit),
        }
    }

    fn query_grants(
        &self,
        filter: &str,
        args: &[&dyn rusqlite::ToSql],
        limit: usize,
    ) -> Result<Vec<Grant>, Error> {
        let sql = format!(
            "SELECT id, scope, extra_bytes, from_ms, until_ms, note, revoked_ms
             FROM grants {filter} ORDER BY id DESC LIMIT {}",
            limit.min(10_000)
        );
        let mut st = self.conn.prepare(&sql)?;
        let rows = st.query_map(args, |r| {
            Ok(Grant {
                id: r.get(0)?,
                scope: r.get(1)?,
                extra_bytes: r.get::<_, i64>(2)?.max(0).unsigned_abs(),
                from_ms: r.get(3)?,
                until_ms: r.get(4)?,
                note: r.get(5)?,
                revoked_ms: r.get(6)?,
                homes: Vec::new(),
            })
        })?;
        let mut out: Vec<Grant> = rows.collect::<Result<_, _>>()?;
        let mut st = self.conn.prepare_cached(
            "SELECT subscriber FROM grant_homes WHERE grant_id = ?1 ORDER BY subscriber",
        )?;
        for g in &mut out {
            g.homes = st
                .query_map([g.id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
        }
        Ok(out)
    }

    fn query_incidents(
        &self,
        filter: &str,
        args: &[&dyn rusqlite::ToSql],
        limit: usize,
    ) -> Result<Vec<Incident>, Error> {
        let sql = format!(
            "SELECT id, group_key, location, dispatch, fault, state, opened_ms, updated_ms,
                    dispatched_ms, resolved_ms, finding, note, diagnosis
             FROM incidents {filter} ORDER BY id DESC LIMIT {}",
            limit.min(10_000)
        );
        let mut st = self.conn.prepare(&sql)?;
        let rows = st.query_map(args, |r| {
            let state: String = r.get(5)?;
            let finding: Option<String> = r.get(10)?;
            let diagnosis: String = r.get(12)?;
            Ok(Incident {
                id: r.get(0)?,
                group: r.get(1)?,
                location: location(&r.get::<_, String>(2)?),
                dispatch: r.get::<_, String>(3)?.parse().unwrap_or(Dispatch::Nobody),
                fault: r.get(4)?,
                state: State::parse(&state).unwrap_or(State::Open),
                opened_ms: r.get(6)?,
                updated_ms: r.get(7)?,
                dispatched_ms: r.get(8)?,
                resolved_ms: r.get(9)?,
                finding: finding.as_deref().map(location),
                note: r.get(11)?,
                diagnosis: serde_json::from_str(&diagnosis).unwrap_or_default(),
                homes: Vec::new(),
            })
        })?;
        let mut out: Vec<Incident> = rows.collect::<Result<_, _>>()?;
        let mut st = self.conn.prepare_cached(
            "SELECT subscriber FROM incident_homes WHERE incident = ?1 ORDER BY subscriber",
        )?;
        for i in &mut out {
            i.homes = st
                .query_map([i.id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
        }
        Ok(out)
    }
}
