//! Running system commands (`iptables`, `ethtool`, the daemons, clients such
//! as `curl`; the network itself is built over netlink, [`crate::net`]) for
//! the lab, the bench and the `tandem` binary: one runner
//! whose error ([`LabError::Command`]) keeps the command line and the
//! command's error output, so a failure says what was run and why it
//! failed.
//!
//! [`run`] and [`run_in`] run a command to completion and return its
//! standard output. [`in_ns`] builds the [`Command`] for a program inside a
//! node's namespace when the caller needs the child itself (a daemon, a
//! transfer it watches while it runs); [`output`] finishes such a command
//! with the same error as [`run`].
//!
//! What it does not do: shells. Arguments are passed as they are; nothing
//! is split or expanded.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use crate::LabError;

/// Runs `prog args..` to completion (stdin closed) and returns its
/// standard output; a failure carries the command line and its stderr.
pub fn run(prog: &str, args: &[&str]) -> Result<String, LabError> {
    let mut c = Command::new(prog);
    c.args(args).stdin(Stdio::null());
    output(&mut c)
}

/// Runs `prog args..` inside network namespace `ns` (`ip netns exec`), as
/// [`run`].
pub fn run_in(ns: &str, prog: &str, args: &[&str]) -> Result<String, LabError> {
    output(&mut in_ns(
        ns,
        std::iter::once(prog).chain(args.iter().copied()),
    ))
}

/// The command running `argv` (program first) inside network namespace
/// `ns`, stdin closed. `ip netns exec` execs the program, so a child's pid
/// is the program's own.
pub fn in_ns<S: AsRef<OsStr>>(ns: &str, argv: impl IntoIterator<Item = S>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns])
        .args(argv)
        .stdin(Stdio::null());
    c
}

/// Runs a built command to completion and returns its standard output; a
/// failure carries the command line and its stderr.
pub fn output(c: &mut Command) -> Result<String, LabError> {
    let out = c.output().map_err(|e| LabError::Command {
        cmd: line(c),
        msg: e.to_string(),
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError::Command {
            cmd: line(c),
            msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The command line of `c`, for messages.
pub fn line(c: &Command) -> String {
    std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_failures_keep_the_command_line() {
        assert_eq!(run("echo", &["a", "b c"]).unwrap(), "a b c\n");
        match run("sh", &["-c", "echo oops >&2; exit 3"]) {
            Err(LabError::Command { cmd, msg }) => {
                assert_eq!(cmd, "sh -c echo oops >&2; exit 3");
                assert_eq!(msg, "oops");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            run("/nonexistent/tool", &[]),
            Err(LabError::Command { .. })
        ));
        assert_eq!(
            line(&in_ns("x-home", ["curl", "-sS"])),
            "ip netns exec x-home curl -sS"
        );
    }
}
