//! Network namespaces from this process, without a command: creating,
//! listing and deleting them as `ip netns` does, and working inside one.
//!
//! A namespace is a file `/run/netns/NAME` that `ip netns` and every other
//! tool know. [`create`] makes it the way iproute2 does: `/run/netns` is
//! made a shared mount (bound onto itself first if it is not a mount
//! point), so that a later unmount also reaches the copies in the mount
//! namespaces of running `ip netns exec` children; a new thread leaves the
//! process's namespace (`unshare(CLONE_NEWNET)`) and bind-mounts its own,
//! `/proc/thread-self/ns/net`, onto the file, which keeps the namespace
//! alive after the thread ends. [`delete`] unmounts (lazily, `MNT_DETACH`)
//! and removes the file; the kernel frees the namespace when nothing else
//! holds it. [`list`] reads `/run/netns`; [`pids`] finds the processes
//! whose `/proc/PID/ns/net` is the same inode as the file (`ip netns
//! pids`).
//!
//! Working inside: a thread enters the namespace (`setns`), so the sockets
//! it opens live there whichever thread uses them later ([`spawn_in`],
//! [`run_in`]); [`sysctl`] writes `/proc/sys` from such a thread. Used by
//! the lab itself (its build over netlink, [`crate::net`], ports coming
//! up, the daemons' admin `/status`), the bench and the end-to-end tests.
//!
//! What it does not do: run programs (that is [`crate::cmd::in_ns`], `ip
//! netns exec`, which also gives the program the namespace's `/sys`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::LabError;

/// Where named network namespaces live (`ip netns`'s directory).
pub const NETNS_DIR: &str = "/run/netns";

/// The file of namespace `name`.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

fn netns_err(ns: &str, msg: impl Into<String>) -> LabError {
    LabError::Netns {
        ns: ns.to_owned(),
        msg: msg.into(),
    }
}

/// Makes `/run/netns` a shared mount, as `ip netns add` does; once per
/// process (two threads binding it onto itself would stack two mounts).
fn share_netns_dir() -> Result<(), LabError> {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *done {
        return Ok(());
    }
    std::fs::create_dir_all(NETNS_DIR)
        .map_err(|e| netns_err(NETNS_DIR, format!("creating it: {e}")))?;
    let share = || {
        mount(
            None::<&str>,
            NETNS_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match share() {
        Ok(()) => {}
        // Not a mount point yet: bind it onto itself, then share it.
        Err(Errno::EINVAL) => mount(
            Some(NETNS_DIR),
            NETNS_DIR,
            Some("none"),
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .and_then(|()| share())
        .map_err(|e| netns_err(NETNS_DIR, format!("making it a shared mount: {e}")))?,
        Err(e) => return Err(netns_err(NETNS_DIR, format!("making it shared: {e}"))),
    }
    *done = true;
    Ok(())
}

/// Creates network namespace `name` (`ip netns add`); an error if it
/// exists. It has only a loopback interface, down.
pub fn create(name: &str) -> Result<(), LabError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(LabError::Invalid(format!("namespace name {name:?}")));
    }
    share_netns_dir()?;
    let file = path(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file)
        .map_err(|e| netns_err(name, format!("creating {}: {e}", file.display())))?;
    let target = file.clone();
    let made = std::thread::spawn(move || -> Result<(), String> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("unshare: {e}"))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind-mounting it on {}: {e}", target.display()))
    })
    .join()
    .unwrap_or_else(|_| Err("the thread creating it panicked".into()));
    made.map_err(|msg| {
        let _ = std::fs::remove_file(&file);
        netns_err(name, msg)
    })
}

/// Deletes network namespace `name` (`ip netns del`): its file goes at
/// once, the namespace itself when no process runs in it any more. One
/// that does not exist is no error.
pub fn delete(name: &str) -> Result<(), LabError> {
    let file = path(name);
    match umount2(&file, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (a file left by a failed create).
        Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
        Err(e) => return Err(netns_err(name, format!("unmounting: {e}"))),
    }
    match std::fs::remove_file(&file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(netns_err(name, format!("removing {}: {e}", file.display()))),
    }
}

/// The names of the network namespaces (`ip netns list`), sorted.
pub fn list() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Whether namespace `name` exists.
pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// The processes running in namespace `name` (`ip netns pids`): those
/// whose `/proc/PID/ns/net` is the namespace's inode. None if it does not
/// exist.
pub fn pids(name: &str) -> Vec<u32> {
    let Ok(ns) = std::fs::metadata(path(name)) else {
        return Vec::new();
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.dev() == ns.dev() && m.ino() == ns.ino())
        })
        .collect()
}

/// Sets a sysctl of namespace `ns` (`net.ipv4.ip_forward`): written from a
/// thread inside it, since `/proc/sys/net` shows the opening thread's
/// namespace; no shell, no command.
pub fn sysctl(ns: &str, key: &str, value: &str) -> Result<(), LabError> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let v = value.to_owned();
    let p = path.clone();
    run_in(ns, move || std::fs::write(&p, v))?.map_err(|e| LabError::Command {
        cmd: format!("sysctl {key}={value} in {ns}"),
        msg: format!("{path}: {e}"),
    })
}

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
    let file = std::fs::File::open(path(ns)).map_err(|e| LabError::Netns {
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
    http_request(ns, addr, "GET", path, None, None, timeout)
}

/// One HTTP/1.1 request to `addr` in `ns`, with an optional bearer token
/// and JSON body: the status code and the body. Bounded as [`http_get`].
pub fn http_request(
    ns: &str,
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    json: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), LabError> {
    request(ns, addr, None, method, path, bearer, json, timeout)
}

/// As [`http_request`], over TLS (ops' API in the lab: its certificate
/// checked against the lab's CA).
#[allow(clippy::too_many_arguments)]
pub fn https_request(
    ns: &str,
    addr: SocketAddr,
    tls: &ops_client::Tls,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    json: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), LabError> {
    request(ns, addr, Some(tls), method, path, bearer, json, timeout)
}

#[allow(clippy::too_many_arguments)]
fn request(
    ns: &str,
    addr: SocketAddr,
    tls: Option<&ops_client::Tls>,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    json: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), LabError> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = bearer {
        req += &format!("Authorization: Bearer {t}\r\n");
    }
    match json {
        Some(b) => {
            req += &format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            );
        }
        None => req += "\r\n",
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let what = format!("{method} {scheme}://{addr}{path} in {ns}");
    let w = what.clone();
    let tls = tls.map(|t| (t.client_config(), t.server_name().clone()));
    let answer = run_in(ns, move || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let mut out = Vec::new();
        match tls {
            None => {
                s.write_all(req.as_bytes())?;
                // An admin answer is small; stop reading at 1 MiB whatever comes.
                s.take(1 << 20).read_to_end(&mut out)?;
            }
            Some((config, name)) => {
                let conn =
                    rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
                let mut t = rustls::StreamOwned::new(conn, s);
                t.write_all(req.as_bytes())?;
                t.flush()?;
                // Ops closes after the answer (`Connection: close`); a
                // close without close_notify after the answer is its end.
                match t.take(1 << 20).read_to_end(&mut out) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
                    Err(e) => return Err(e),
                }
            }
        }
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
