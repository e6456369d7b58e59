//! The HAG's writer of the persistent per-subscriber, per-link usage count
//! (the billing count; the tables and queries are [`registry::usage`]).
//!
//! Connections add their bytes when they end, through a bounded queue to one
//! writer thread that commits in batches, so the data path never waits for
//! the disk. What a HAG killed with SIGKILL had not yet written (connections
//! still running, the last second's batch) is lost; SIGTERM drains
//! connections first, so nothing is.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use hybrid::Link;
use registry::{Usage, UsageRecord};

/// Usage records waiting for the writer; beyond this they are counted as
/// dropped (and logged) rather than blocking connections.
const QUEUE: usize = 65_536;

enum Msg {
    Record(UsageRecord),
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

/// Waits for one message, then takes what else comes within a second into
/// the same batch; returns the batch, the flushes to answer after it, and
/// whether every sender is gone (`None`: nothing came and they are).
fn next_batch(rx: &mpsc::Receiver<Msg>) -> Option<(Vec<UsageRecord>, Vec<mpsc::Sender<()>>, bool)> {
    let first = rx.recv().ok()?;
    let mut batch = Vec::new();
    let mut acks = Vec::new();
    let mut closed = false;
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
    Some((batch, acks, closed))
}

impl Writer {
    /// Opens (creating) the file and starts the writer thread; the thread
    /// ends, after a last commit, when every `Writer` clone is dropped.
    pub fn start(path: &Path) -> Result<(Self, std::thread::JoinHandle<()>), registry::Error> {
        let mut db = Usage::open(path)?;
        let (tx, rx) = mpsc::sync_channel::<Msg>(QUEUE);
        let thread = std::thread::spawn(move || {
            while let Some((batch, acks, closed)) = next_batch(&rx) {
                if !batch.is_empty() {
                    if let Err(e) = db.add(&batch) {
                        tracing::error!(records = batch.len(), "usage not saved: {e}");
                    }
                }
                for a in acks {
                    let _ = a.send(());
                }
                if closed {
                    return;
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

    /// Queues a finished connection's bytes on `link`, `(up, down)`: those
    /// billed and those carried while the subscriber's budget was waived;
    /// false when the queue is full (the record is dropped).
    pub fn add(
        &self,
        subscriber: &str,
        link: Link,
        billed: (u64, u64),
        waived: (u64, u64),
    ) -> bool {
        if billed == (0, 0) && waived == (0, 0) {
            return true;
        }
        self.tx
            .try_send(Msg::Record(UsageRecord {
                subscriber: subscriber.to_string(),
                link,
                up: billed.0,
                down: billed.1,
                waived_up: waived.0,
                waived_down: waived.1,
            }))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_up_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subscribers.usage.db");
        let read = |s| Usage::open(&path).unwrap().read(s).unwrap();
        for _ in 0..2 {
            let (w, t) = Writer::start(&path).unwrap();
            assert!(w.add("home-1", Link::Lte, (10, 1_000), (0, 0)));
            assert!(w.add("home-1", Link::Dsl, (5, 500), (0, 0)));
            w.flush();
            assert_eq!(read(Some("home-1")).len(), 2);
            assert!(w.add("home-2", Link::Lte, (1, 2), (3, 4)));
            assert!(w.add("home-2", Link::Lte, (0, 0), (0, 0)));
            drop(w);
            t.join().unwrap();
        }
        let rows = read(Some("home-1"));
        let lte = rows.iter().find(|r| r.link == "lte").unwrap();
        assert_eq!((lte.up_bytes, lte.down_bytes), (20, 2_000));
        let two = read(Some("home-2"));
        assert_eq!((two[0].waived_up_bytes, two[0].waived_down_bytes), (6, 8));
        assert_eq!(read(None).len(), 3);
    }
}
