//! Helpers of the root tests: a network namespace that deletes itself, a
//! command runner that fails the test, and a thread that runs checks
//! inside a namespace.
#![allow(dead_code, unreachable_pub)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Deletes the namespace when dropped.
pub struct NetnsGuard {
    pub name: String,
}

impl NetnsGuard {
    /// Creates `<prefix>-<pid>-<n>`.
    pub fn create(prefix: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run(&["ip", "netns", "add", &name]);
        Self { name }
    }

    /// Runs `ip netns exec NAME <args>` and returns stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let st = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if !matches!(st, Ok(s) if s.success()) {
            eprintln!("warning: could not delete netns {}: {st:?}", self.name);
        }
    }
}

pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// For the tests marked `#[ignore]` because they need root (`make test`
/// runs them): panics with what to do unless the process is root.
pub fn require_root() {
    // Effective uid is the second field of the `Uid:` line.
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .is_some_and(|u| u == "0")
    });
    assert!(
        root,
        "this test needs root and network namespaces: run `make test`, or \
         `cargo test -- --include-ignored`, as root"
    );
}

/// Runs `f` on a new thread that has joined the namespace; a panic in `f`
/// fails the caller.
pub fn on_netns_thread<F>(ns: &NetnsGuard, f: F)
where
    F: FnOnce() + Send + 'static,
{
    let path = format!("/run/netns/{}", ns.name);
    let t = std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns only reads the fd, which `file` keeps open for the
        // duration of the call; it changes the network namespace of this
        // thread only (a thread we own and that runs nothing else).
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        drop(file);
        f();
    });
    if let Err(panic) = t.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Runs `f` on a new thread that has joined the namespace, inside a
/// current-thread tokio runtime, bounded by a timeout.
pub fn in_netns<F, Fut>(ns: &NetnsGuard, f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    on_netns_thread(ns, move || block_on(f()));
}

/// Runs `fut` to completion on a new current-thread runtime, bounded by a
/// timeout.
pub fn block_on(fut: impl std::future::Future<Output = ()>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), fut)
            .await
            .expect("checks timed out");
    });
}
