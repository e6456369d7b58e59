//! Per-subscriber, per-link byte accounting that survives restarts: the
//! HAG's count is the one that bills (the mobile data budget is enforced on
//! the CPE, which sees its own link; the HAG's count is what the operator
//! invoices and audits).
//!
//! A SQLite file of its own (next to the subscriber registry: writes here
//! must not make every HAG re-read the registry), one row per subscriber,
//! calendar month (UTC, `YYYY-MM`) and link. Connections add their bytes
//! when they end, through a bounded queue to one writer thread that commits
//! in batches, so the data path never waits for the disk. What a HAG killed
//! with SIGKILL had not yet written (connections still running, the last
//! second's batch) is lost; SIGTERM drains connections first, so nothing is.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{params, Connection};

/// Usage records waiting for the writer; beyond this they are counted as
/// dropped (and logged) rather than blocking connections.
const QUEUE: usize = 65_536;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS usage (
    subscriber TEXT NOT NULL,
    period     TEXT NOT NULL,   -- calendar month, UTC: YYYY-MM
    link       TEXT NOT NULL,   -- access link name ([links] in the config)
    up_bytes   INTEGER NOT NULL DEFAULT 0,
    down_bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (subscriber, period, link)
);";

/// A usage database could not be used.
#[derive(Debug, thiserror::Error)]
#[error("usage database {path}: {source}")]
pub struct UsageError {
    /// The file.
    pub path: String,
    /// Why.
    #[source]
    pub source: rusqlite::Error,
}

/// One subscriber's bytes on one link in one month.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// Subscriber name.
    pub subscriber: String,
    /// `YYYY-MM`.
    pub period: String,
    /// Link name.
    pub link: String,
    /// Bytes from the subscriber.
    pub up_bytes: u64,
    /// Bytes to the subscriber.
    pub down_bytes: u64,
}

/// The usage file's default place: beside the registry,
/// `subscribers.db` → `subscribers.usage.db`.
pub fn default_path(registry: &Path) -> PathBuf {
    registry.with_extension("usage.db")
}

fn open(path: &Path) -> Result<Connection, UsageError> {
    let wrap = |source| UsageError {
        path: path.display().to_string(),
        source,
    };
    let c = Connection::open(path).map_err(wrap)?;
    c.busy_timeout(Duration::from_secs(5)).map_err(wrap)?;
    c.pragma_update(None, "journal_mode", "WAL").map_err(wrap)?;
    c.execute_batch(SCHEMA).map_err(wrap)?;
    Ok(c)
}

/// Reads the rows of `subscriber` (all when `None`), newest month first.
pub fn read(path: &Path, subscriber: Option<&str>) -> Result<Vec<Row>, UsageError> {
    let c = open(path)?;
    let wrap = |source| UsageError {
        path: path.display().to_string(),
        source,
    };
    let mut st = c
        .prepare(
            "SELECT subscriber, period, link, up_bytes, down_bytes FROM usage
             WHERE ?1 IS NULL OR subscriber = ?1
             ORDER BY period DESC, subscriber, link",
        )
        .map_err(wrap)?;
    let rows = st
        .query_map(params![subscriber], |r| {
            Ok(Row {
                subscriber: r.get(0)?,
                period: r.get(1)?,
                link: r.get(2)?,
                up_bytes: r.get::<_, i64>(3)?.max(0) as u64,
                down_bytes: r.get::<_, i64>(4)?.max(0) as u64,
            })
        })
        .map_err(wrap)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(wrap)?;
    Ok(rows)
}

struct Record {
    subscriber: String,
    link: String,
    up: u64,
    down: u64,
}

enum Msg {
    Record(Record),
    /// Commit everything queued before it, then answer.
    Flush(mpsc::Sender<()>),
}

/// The writer's handle: [`Self::add`] queues, a thread commits.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::SyncSender<Msg>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl Writer {
    /// Opens (creating) the file and starts the writer thread; the thread
    /// ends, after a last commit, when every `Writer` clone is dropped.
    pub fn start(path: &Path) -> Result<(Self, std::thread::JoinHandle<()>), UsageError> {
        let mut conn = open(path)?;
        let (tx, rx) = mpsc::sync_channel::<Msg>(QUEUE);
        let path = path.display().to_string();
        let thread = std::thread::spawn(move || {
            let mut closed = false;
            while !closed {
                // Wait for one message, then take what else comes within a
                // second into the same transaction.
                let Ok(first) = rx.recv() else { return };
                let mut batch = Vec::new();
                let mut acks = Vec::new();
                let deadline = std::time::Instant::now() + Duration::from_secs(1);
                let mut next = Some(first);
                while let Some(m) = next.take() {
                    match m {
                        Msg::Record(r) => batch.push(r),
                        Msg::Flush(ack) => {
                            acks.push(ack);
                            break;
                        }
                    }
                    if batch.len() >= 10_000 {
                        break;
                    }
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(m) => next = Some(m),
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => closed = true,
                    }
                }
                if !batch.is_empty() {
                    if let Err(e) = commit(&mut conn, &batch) {
                        tracing::error!(path, records = batch.len(), "usage not saved: {e}");
                    }
                }
                for a in acks {
                    let _ = a.send(());
                }
            }
        });
        Ok((Self { tx }, thread))
    }

    /// Blocks until everything queued so far is committed (at shutdown).
    pub fn flush(&self) {
        let (ack_tx, ack_rx) = mpsc::channel();
        if self.tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(Duration::from_secs(10));
        }
    }

    /// Queues a finished connection's bytes; false when the queue is full
    /// (the record is dropped).
    pub fn add(&self, subscriber: &str, link: &str, up: u64, down: u64) -> bool {
        if up == 0 && down == 0 {
            return true;
        }
        self.tx
            .try_send(Msg::Record(Record {
                subscriber: subscriber.to_string(),
                link: link.to_string(),
                up,
                down,
            }))
            .is_ok()
    }
}

fn commit(conn: &mut Connection, batch: &[Record]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut st = tx.prepare_cached(
            "INSERT INTO usage (subscriber, period, link, up_bytes, down_bytes)
             VALUES (?1, strftime('%Y-%m', 'now'), ?2, ?3, ?4)
             ON CONFLICT (subscriber, period, link) DO UPDATE SET
               up_bytes = up_bytes + excluded.up_bytes,
               down_bytes = down_bytes + excluded.down_bytes",
        )?;
        for r in batch {
            let clamp = |v: u64| v.min(i64::MAX as u64) as i64;
            st.execute(params![r.subscriber, r.link, clamp(r.up), clamp(r.down)])?;
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_up_across_restarts() {
        let dir = std::env::temp_dir().join(format!("tandem-usage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("subscribers.usage.db");
        let _ = std::fs::remove_file(&path);
        assert_eq!(default_path(&dir.join("subscribers.db")), path);
        for _ in 0..2 {
            let (w, t) = Writer::start(&path).unwrap();
            assert!(w.add("home-1", "lte", 10, 1_000));
            assert!(w.add("home-1", "dsl", 5, 500));
            w.flush();
            assert_eq!(read(&path, Some("home-1")).unwrap().len(), 2);
            assert!(w.add("home-2", "lte", 1, 2));
            assert!(w.add("home-2", "lte", 0, 0));
            drop(w);
            t.join().unwrap();
        }
        let rows = read(&path, Some("home-1")).unwrap();
        assert_eq!(rows.len(), 2);
        let lte = rows.iter().find(|r| r.link == "lte").unwrap();
        assert_eq!((lte.up_bytes, lte.down_bytes), (20, 2_000));
        assert_eq!(lte.period.len(), 7, "{}", lte.period);
        assert_eq!(read(&path, None).unwrap().len(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
