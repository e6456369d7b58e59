//! Keeps the in-memory subscriber snapshot in step with the registry file.

use std::path::PathBuf;
use std::sync::{mpsc, Arc, PoisonError, RwLock};
use std::time::Duration;

use registry::{Registry, Snapshot};
use tracing::{info, warn};

/// A reload request: answered once the snapshot it asked for is in place.
pub(crate) type Poke = tokio::sync::oneshot::Sender<()>;

fn install(target: &RwLock<Arc<Snapshot>>, s: Snapshot) {
    *target.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(s);
}

/// Reads the registry into `target` now, then re-reads it when another
/// process commits (polled every second) and when poked (SIGHUP); a poke is
/// answered once the snapshot it asked for is in place, so "configuration
/// reloaded" means the registry was re-read too. Runs on its own thread
/// (SQLite is blocking), which ends when `poke`'s sender is dropped.
pub(crate) fn watch_registry(
    path: PathBuf,
    target: Arc<RwLock<Arc<Snapshot>>>,
    poke: mpsc::Receiver<Poke>,
) -> Result<std::thread::JoinHandle<()>, registry::Error> {
    let reg = Registry::open(&path)?;
    // The version is read before the snapshot: a commit landing between the
    // two is then seen as a change on the first poll, not missed.
    let mut seen = reg.data_version().unwrap_or(-1);
    let first = reg.snapshot()?;
    info!(subscribers = first.by_id.len(), registry = %path.display(), "subscriber registry loaded");
    install(&target, first);
    Ok(std::thread::spawn(move || loop {
        let ack = match poke.recv_timeout(Duration::from_secs(1)) {
            Ok(ack) => Some(ack),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let now = reg.data_version().unwrap_or(seen);
        if now == seen && ack.is_none() {
            continue;
        }
        seen = now;
        match reg.snapshot() {
            Ok(s) => {
                info!(subscribers = s.by_id.len(), "subscriber registry reloaded");
                install(&target, s);
            }
            Err(e) => warn!("reloading the subscriber registry: {e}; keeping the previous one"),
        }
        if let Some(ack) = ack {
            let _ = ack.send(());
        }
    }))
}
