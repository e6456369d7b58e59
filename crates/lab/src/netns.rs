//! Work inside a lab node's network namespace from this process, without a
//! command: a thread enters the namespace (`setns`), so the sockets it opens
//! live there whichever thread uses them later. Used by the lab itself
//! (ports coming up, the daemons' admin `/status`), the bench and the
//! end-to-end tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::LabError;

/// Starts `f` on a new thread inside namespace `ns` (a name under
/// `/run/netns`).
pub fn spawn_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<Result<T, LabError>> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        enter(&ns)?;
        Ok(f())
    })
}

/// Runs `f` on a thread inside namespace `ns` and waits for it.
pub fn run_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LabError> {
    join(spawn_in(ns, f))
}

/// Waits for a thread from [`spawn_in`]; a panic in it is an error.
pub fn join<T>(h: JoinHandle<Result<T, LabError>>) -> Result<T, LabError> {
    h.join()
        .map_err(|_| LabError::State("a thread inside a namespace panicked".into()))?
}

/// Moves the calling thread into namespace `ns`.
pub fn enter(ns: &str) -> Result<(), LabError> {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).map_err(|e| LabError::Netns {
        ns: ns.to_owned(),
        msg: e.to_string(),
    })?;
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
        LabError::Netns {
            ns: ns.to_owned(),
            msg: format!("setns: {e}"),
        }
    })
}

/// Whether something accepts TCP connections on `addr` in `ns`.
pub fn port_open(ns: &str, addr: SocketAddr) -> Result<bool, LabError> {
    run_in(ns, move || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
    })
}

/// Waits up to `timeout` until something accepts TCP connections on `addr`
/// in `ns`.
pub fn wait_port(ns: &str, addr: SocketAddr, timeout: Duration) -> Result<(), LabError> {
    let mut failed = None;
    let open = crate::wait::until(timeout, || {
        port_open(ns, addr).unwrap_or_else(|e| {
            failed = Some(e);
            true
        })
    });
    match failed {
        Some(e) => Err(e),
        None if open => Ok(()),
        None => Err(LabError::Timeout(format!("{addr} in {ns}"))),
    }
}

/// One HTTP/1.1 `GET path` to `addr` in `ns`: the status code and the body.
/// Bounded by `timeout` for the connection and for each read.
pub fn http_get(
    ns: &str,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), LabError> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let what = format!("GET http://{addr}{path} in {ns}");
    let w = what.clone();
    let answer = run_in(ns, move || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.write_all(req.as_bytes())?;
        let mut out = Vec::new();
        // An admin answer is small; stop reading at 1 MiB whatever comes.
        s.take(1 << 20).read_to_end(&mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    })?
    .map_err(|e| LabError::Command {
        cmd: w,
        msg: e.to_string(),
    })?;
    let bad = || LabError::Command {
        cmd: what.clone(),
        msg: format!(
            "not an HTTP answer: {:?}",
            answer.chars().take(80).collect::<String>()
        ),
    };
    let (head, body) = answer.split_once("\r\n\r\n").ok_or_else(bad)?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(LabError::Command {
            cmd: what,
            msg: "chunked answer (the admin listener sends lengths)".into(),
        });
    }
    Ok((code, body.to_owned()))
}

/// What a daemon's admin `/status` says (see docs/admin.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct AdminStatus {
    /// Whether it takes new work.
    pub ready: bool,
    /// The configuration generation in force (1 at start, +1 per reload).
    pub config_generation: u64,
}

/// The admin `/status` of the daemon whose admin listener is `addr` in `ns`.
pub fn admin_status(ns: &str, addr: SocketAddr) -> Result<AdminStatus, LabError> {
    let (code, body) = http_get(ns, addr, "/status", Duration::from_secs(5))?;
    if code != 200 {
        return Err(LabError::State(format!(
            "{addr}/status in {ns} answered {code}"
        )));
    }
    serde_json::from_str(&body)
        .map_err(|e| LabError::State(format!("{addr}/status in {ns}: {e}: {body:?}")))
}

/// Waits up to `timeout` until the daemon whose admin listener is `addr` in
/// `ns` says it is ready (`/status`); a listener not answering yet counts as
/// not ready.
pub fn wait_ready(ns: &str, addr: SocketAddr, timeout: Duration) -> Result<(), LabError> {
    let mut last = String::new();
    let ready = crate::wait::until(timeout, || match admin_status(ns, addr) {
        Ok(s) if s.ready => true,
        Ok(_) => {
            last = "answers not ready".to_owned();
            false
        }
        Err(e) => {
            last = e.to_string();
            false
        }
    });
    if ready {
        Ok(())
    } else {
        Err(LabError::Timeout(format!(
            "{addr} in {ns} to be ready (last: {last})"
        )))
    }
}

/// Waits up to `timeout` until the daemon's configuration generation is
/// past `before` (a reload it was sent is in force); returns the new one.
pub fn wait_reloaded(
    ns: &str,
    addr: SocketAddr,
    before: u64,
    timeout: Duration,
) -> Result<u64, LabError> {
    let (mut g, mut failed) = (before, None);
    let moved = crate::wait::until(timeout, || match admin_status(ns, addr) {
        Ok(s) => {
            g = s.config_generation;
            g > before
        }
        Err(e) => {
            failed = Some(e);
            true
        }
    });
    match failed {
        Some(e) => Err(e),
        None if moved => Ok(g),
        None => Err(LabError::Timeout(format!(
            "the reload of {addr} in {ns} (configuration generation still {g})"
        ))),
    }
}
