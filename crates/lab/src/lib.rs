//! `tandem lab`: a whole hybrid-access network on one Linux machine.
//!
//! It builds network namespaces home → cpe → (dsl, lte) → hag → net, shapes
//! each access link in both directions (htb + bfifo), adds delay, jitter and
//! loss with Tandem's own NFQUEUE emulator (this kernel has no netem), runs a
//! real HTTP origin server on the "internet", and optionally starts the HAG
//! and the CPE. It is the base of the demo, the end-to-end tests and the
//! benchmarks.
//!
//! What it does not do: anything outside its own namespaces. Every address
//! it uses lives in a namespace it created; `down` removes them all.
//!
//! Modules: [`topology`] (up, down, status, link changes), [`net`] (the
//! network inside the namespaces over rtnetlink: veths, addresses, routes,
//! rules, shaping), [`netns`] (creating, listing and deleting namespaces;
//! threads inside one: sysctls, ports, HTTP, the daemons' admin
//! `/status`), [`cmd`] (the one command runner, for the lab and its
//! callers), [`profile`] (link shapes and unit parsing), [`emu`] (the
//! delay/loss emulator), [`origin`] (the HTTP server), [`attack`] (a
//! bounded attacker for the hardening tests and benchmarks), [`wait`]
//! (waiting for a condition with a deadline).
#![forbid(unsafe_code)]

pub mod attack;
pub mod cmd;
pub mod dns;
pub mod emu;
pub mod fault;
pub mod modem;
pub mod net;
pub mod netns;
pub mod origin;
pub mod profile;
pub mod street;
pub mod topology;
pub mod wait;

pub use hybrid::{Link, SteeringMode};
pub use topology::{down, link, status, up, LinkAction, State, UpOptions};

/// For the tests that build namespaces (marked `#[ignore]` with the reason,
/// so that `cargo test` without root lists them as ignored instead of
/// passing them silently; `make test` runs them with `--include-ignored`):
/// panics with what to do unless the process is root.
pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test needs root and network namespaces: run `make test`, or \
         `cargo test -- --include-ignored`, as root"
    );
}

/// What went wrong in the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A system command failed.
    #[error("{cmd}: {msg}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its error output.
        msg: String,
    },
    /// The lab is not up.
    #[error("lab {0:?} is not up (tandem lab up)")]
    NotUp(String),
    /// The lab's state file is unreadable.
    #[error("lab state: {0}")]
    State(String),
    /// A bad argument.
    #[error("{0}")]
    Invalid(String),
    /// Something did not come up in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The emulator failed.
    #[error("link emulator: {0}")]
    Emu(#[from] emu::EmuError),
    /// A namespace could not be created, deleted or entered.
    #[error("namespace {ns}: {msg}")]
    Netns {
        /// The namespace.
        ns: String,
        /// What failed.
        msg: String,
    },
    /// The kernel refused a network change in a namespace (rtnetlink).
    #[error("namespace {ns}: {error}")]
    Netlink {
        /// The namespace.
        ns: String,
        /// The operation and the kernel's errno.
        error: mptcp_sock::route::RouteError,
    },
    /// The MPTCP path manager refused a change in a namespace.
    #[error("namespace {ns}: {error}")]
    PathManager {
        /// The namespace.
        ns: String,
        /// The operation and the kernel's errno.
        error: mptcp_sock::pm::PmError,
    },
    /// The system's random source failed.
    #[error("random bytes: {0}")]
    Random(getrandom::Error),
    /// File I/O on the state directory.
    #[error("{0}")]
    Io(std::io::Error),
}
