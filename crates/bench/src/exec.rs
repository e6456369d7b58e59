//! Processes the benchmark starts: inside a namespace, logged, and stopped
//! by their own pid when their guard is dropped (also on error or panic).

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::BenchError;

/// A background process; stopped (SIGTERM, then SIGKILL after 3 s) and
/// reaped when dropped.
#[derive(Debug)]
pub(crate) struct Proc {
    role: String,
    child: Option<Child>,
}

impl Proc {
    /// Starts `argv` in `ns` with its output in `log`.
    pub(crate) fn spawn<S: AsRef<str>>(
        role: &str,
        ns: &str,
        argv: &[S],
        log: &Path,
    ) -> Result<Self, BenchError> {
        let f = std::fs::File::create(log)
            .map_err(|e| BenchError::io(format!("creating {}", log.display()), e))?;
        let f2 = f
            .try_clone()
            .map_err(|e| BenchError::io("cloning a log handle", e))?;
        let child = lab::cmd::in_ns(ns, argv.iter().map(AsRef::as_ref))
            .stdout(f)
            .stderr(f2)
            .spawn()
            .map_err(|e| BenchError::io(format!("starting {role} in {ns}"), e))?;
        Ok(Self {
            role: role.to_string(),
            child: Some(child),
        })
    }

    /// Its pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Fails if it has already exited.
    pub(crate) fn check_running(&mut self) -> Result<(), BenchError> {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                return Err(BenchError::Setup(format!(
                    "{} exited at start ({status})",
                    self.role
                )));
            }
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            stop_child(c);
        }
    }
}

/// Stops a child by its pid: SIGTERM, SIGKILL after 3 s, and reaps it.
pub(crate) fn stop_child(mut c: Child) {
    if let Ok(Some(_)) = c.try_wait() {
        return;
    }
    let pid = Pid::from_raw(c.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// Kills children at once (they are clients; nothing to drain) and reaps
/// them.
pub(crate) fn kill_all(children: &mut Vec<Child>) {
    for mut c in children.drain(..) {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// CPU seconds (user + system, all threads) a process has used so far.
pub(crate) fn cpu_seconds(pid: u32, ticks_per_sec: f64) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_sec)
}

/// Resident memory of a process, KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`).
pub(crate) fn clock_ticks() -> f64 {
    lab::cmd::run("getconf", &["CLK_TCK"])
        .ok()
        .and_then(|o| o.trim().parse().ok())
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_and_memory() {
        let me = std::process::id();
        assert!(cpu_seconds(me, clock_ticks()).is_some());
        assert!(rss_kib(me).unwrap() > 0);
    }
}
