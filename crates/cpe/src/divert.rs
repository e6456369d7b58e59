//! Diverting the LAN's TCP to the CPE: an nftables table of our own with a
//! TPROXY rule (loaded with `nft -f -`, one atomic transaction), and the
//! policy rule and local route that deliver marked packets to the CPE
//! (over rtnetlink, [`mptcp_sock::route`]). `nft` is the one program the
//! CPE runs ([`run`], errors naming the command, its exit status and
//! stderr): nftables has no stable typed netlink library in Rust.
//!
//! The table is replaced atomically at start (a table left by a crashed run
//! is removed in the same transaction) and deleted at exit by [`Divert`]'s
//! `remove`, also on SIGINT/SIGTERM. `tandem cpe cleanup` removes it by hand.

use std::fmt;
use std::io::{self, Write};
use std::process::{Command, ExitStatus, Stdio};

use hybrid::Link;
use mptcp_sock::route::{Family, Route, RouteError, RouteNetlink, Rule};

use crate::config::Config;

/// The nftables table name.
pub const TABLE: &str = "tandem_cpe";

/// Installing or removing the interception failed.
#[derive(Debug, thiserror::Error)]
pub enum DivertError {
    /// `nft` could not run or refused the table.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The kernel refused the policy rule or the local route (the error
    /// names which, and its errno).
    #[error(transparent)]
    Netlink(#[from] RouteError),
}

/// A command line, for messages: the program and its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandLine {
    /// The program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
}

impl fmt::Display for CommandLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for a in &self.args {
            write!(f, " {a}")?;
        }
        Ok(())
    }
}

/// A command the CPE ran failed. The CPE runs one program, `nft` (the
/// kernel's other interfaces it reaches over netlink, see
/// [`mptcp_sock::route`]), through [`run`].
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program could not be started (not installed, not executable).
    #[error("{command}: could not run: {source}")]
    Spawn {
        /// What was run.
        command: CommandLine,
        /// Why it did not start.
        source: io::Error,
    },
    /// Its input could not be written, or it could not be waited for.
    #[error("{command}: {source}")]
    Io {
        /// What was run.
        command: CommandLine,
        /// The I/O error.
        source: io::Error,
    },
    /// It ran and reported failure.
    #[error("{command}: {status}: {stderr}")]
    Failed {
        /// What was run.
        command: CommandLine,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed on standard error (trimmed).
        stderr: String,
    },
}

/// Runs `program` with `args`, `stdin` (if any) as its input, its output
/// discarded; success if it exits with status 0. The CPE's one command
/// runner.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), CommandError> {
    let command = || CommandLine {
        program: program.to_string(),
        args: args.iter().map(|a| a.to_string()).collect(),
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CommandError::Spawn {
            command: command(),
            source,
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|source| CommandError::Io {
                command: command(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| CommandError::Io {
            command: command(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(CommandError::Failed {
            command: command(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Conntrack and packet marks of the forwarded (not diverted) traffic: the
/// link a flow left on, in bits 24..27 (1: fixed, 2: mobile), and bit 28 for
/// UDP flows (the ones moved at once when links change, see [`crate::wan`]).
pub const LINK_MASK: u32 = 0x0f00_0000;
/// Set on the conntrack mark of forwarded UDP flows.
pub const UDP_BIT: u32 = 0x1000_0000;

/// The mark of a link's forwarded flows (1 << 24: fixed, 2 << 24: mobile).
pub fn link_mark(l: Link) -> u32 {
    let n: u32 = match l {
        Link::Dsl => 1,
        Link::Lte => 2,
    };
    n << 24
}

fn set_of<T: fmt::Display>(v: &[T]) -> String {
    let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("{{ {} }}", items.join(", "))
}

/// One bypass rule's nftables line: not diverted, pinned to a link if asked.
fn bypass_rule(b: &crate::config::Bypass, lan: &str) -> String {
    use crate::config::Pin;
    let mut m = format!("iifname \"{lan}\"");
    if let Some(first) = b.destinations.first() {
        let fam = if first.addr().is_ipv4() { "ip" } else { "ip6" };
        m += &format!(" {fam} daddr {}", set_of(&b.destinations));
    }
    if !b.ports.is_empty() {
        m += &format!(" th dport {}", set_of(&b.ports));
    }
    if !b.dscp.is_empty() {
        // Both families when no destination says which.
        let fam = match b.destinations.first() {
            Some(n) if n.addr().is_ipv6() => "ip6",
            _ => "ip",
        };
        m += &format!(" {fam} dscp {}", set_of(&b.dscp));
    }
    let pin = match b.link {
        Pin::Any => String::new(),
        Pin::Dsl => format!(" meta mark set {:#x}", link_mark(Link::Dsl)),
        Pin::Lte => format!(" meta mark set {:#x}", link_mark(Link::Lte)),
    };
    format!(
        "\t\t{m}{pin} counter accept comment \"bypass {}\"\n",
        b.name
    )
}

/// The nftables ruleset (one transaction): drop any stale table, add ours.
///
/// - `divert` (prerouting): the LAN's TCP goes to the CPE (TPROXY), except
///   the bypass classes; forwarded flows get their link's mark back from
///   their conntrack entry, so a flow stays on the link it started on.
/// - `flows` (postrouting): a new forwarded flow records the link it left on.
/// - `nat` (postrouting): forwarded traffic leaves with the link's address.
pub fn ruleset(c: &Config) -> String {
    let lan = &c.lan_interface;
    let mut divert = String::new();
    let mut extra = String::new();
    if c.nat {
        divert += &format!(
            "\t\tiifname \"{lan}\" ct mark and {LINK_MASK:#x} != 0 meta mark set ct mark and {LINK_MASK:#x}\n"
        );
        for b in &c.bypass {
            divert += &bypass_rule(b, lan);
        }
        let mut flows = String::new();
        for (l, dev) in [(Link::Dsl, &c.dsl.interface), (Link::Lte, &c.lte.interface)] {
            let m = link_mark(l);
            // The UDP rule last: it refines the mark the first one set.
            flows += &format!(
                "\t\tiifname \"{lan}\" oifname \"{dev}\" ct state new ct mark set {m:#x}\n\
                 \t\tiifname \"{lan}\" oifname \"{dev}\" ct state new meta l4proto udp ct mark set {:#x}\n",
                m | UDP_BIT
            );
        }
        extra = format!(
            "\tchain flows {{\n\
             \t\ttype filter hook postrouting priority mangle; policy accept;\n\
             {flows}\
             \t}}\n\
             \tchain nat {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\tiifname \"{lan}\" oifname {{ \"{}\", \"{}\" }} masquerade\n\
             \t}}\n",
            c.dsl.interface, c.lte.interface
        );
    }
    format!(
        "table inet {TABLE}\n\
         delete table inet {TABLE}\n\
         table inet {TABLE} {{\n\
         \tchain divert {{\n\
         \t\ttype filter hook prerouting priority mangle; policy accept;\n\
         \t\tiifname \"{lan}\" fib daddr type local accept\n\
         {divert}\
         \t\tiifname \"{lan}\" meta l4proto tcp meta nfproto ipv4 tproxy ip to :{port} meta mark set {mark:#x} accept\n\
         \t\tiifname \"{lan}\" meta l4proto tcp meta nfproto ipv6 tproxy ip6 to :{port} meta mark set {mark:#x} accept\n\
         \t}}\n\
         {extra}\
         }}\n",
        port = c.intercept_port,
        mark = c.fwmark,
    )
}

/// Interception installed; removed by [`Divert::remove`] or, failing that,
/// when dropped.
pub struct Divert {
    mark: u32,
    table: u32,
    removed: bool,
}

/// The interception's rule priority (before the forwarding's, 91..93).
const PRIO_DIVERT: u32 = 90;

/// The policy rule (`fwmark MARK lookup TABLE`) and the local default route
/// in TABLE that deliver diverted packets to the CPE, for one family.
fn policy_route(family: Family, mark: u32, table: u32) -> (Rule, Route) {
    let lo = nix::net::if_::if_nametoindex("lo").unwrap_or(1);
    (
        Rule::fwmark(family, PRIO_DIVERT, mark, None, table),
        Route::local_default(family, table, lo),
    )
}

/// Installs the policy rule and route of `family`.
async fn add_policy_route(
    nl: &RouteNetlink,
    family: Family,
    mark: u32,
    table: u32,
) -> Result<(), DivertError> {
    let (rule, route) = policy_route(family, mark, table);
    nl.add_rule(&rule).await?;
    nl.add_route(&route).await?;
    Ok(())
}

/// Removes the policy rules and routes of both families. Best effort: what
/// is not there is fine.
async fn remove_policy_routes(nl: &RouteNetlink, mark: u32, table: u32) {
    for family in Family::ALL {
        let (rule, route) = policy_route(family, mark, table);
        for r in [nl.delete_rule(&rule).await, nl.delete_route(&route).await] {
            match r {
                Err(e) if !e.is_not_found() => tracing::debug!("removing the interception: {e}"),
                _ => {}
            }
        }
    }
}

impl Divert {
    /// Installs the policy routes and the nftables table (replacing
    /// leftovers of a crashed run).
    pub async fn install(c: &Config) -> Result<Self, DivertError> {
        let d = Self {
            mark: c.fwmark,
            table: c.route_table,
            removed: false,
        };
        let nl = RouteNetlink::shared()?;
        remove_policy_routes(&nl, d.mark, d.table).await;
        // From here `d` removes whatever was installed if a step fails.
        add_policy_route(&nl, Family::V4, d.mark, d.table).await?;
        if let Err(e) = add_policy_route(&nl, Family::V6, d.mark, d.table).await {
            tracing::debug!("IPv6 interception route: {e}");
        }
        run("nft", &["-f", "-"], Some(&ruleset(c)))?;
        Ok(d)
    }

    /// Replaces the nftables table with `c`'s (one atomic transaction:
    /// running diverted connections are sockets and are not affected).
    pub fn update(&self, c: &Config) -> Result<(), DivertError> {
        Ok(run("nft", &["-f", "-"], Some(&ruleset(c)))?)
    }

    async fn remove_routes(&mut self) {
        match RouteNetlink::shared() {
            Ok(nl) => remove_policy_routes(&nl, self.mark, self.table).await,
            Err(e) => tracing::debug!("removing the interception: {e}"),
        }
        self.removed = true;
    }

    /// Removes the table and routes. Safe when they are already gone.
    pub async fn remove(mut self) {
        remove_table();
        self.remove_routes().await;
    }
}

impl Drop for Divert {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        // Not removed on the normal path (an error unwound past it): do it
        // on a thread of its own, outside any runtime, on a connection of
        // its own (the process's one needs the runtime this thread may be
        // blocking).
        remove_table();
        let (mark, table) = (self.mark, self.table);
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    if let Ok(nl) = RouteNetlink::connect() {
                        remove_policy_routes(&nl, mark, table).await;
                    }
                });
            }
        })
        .join();
    }
}

/// Removes our nftables table if present (used at exit and by `cleanup`).
pub fn remove_table() {
    let _ = run(
        "nft",
        &["-f", "-"],
        Some(&format!("table inet {TABLE}\ndelete table inet {TABLE}\n")),
    );
}

/// Removes everything a CPE with this config may have left behind.
pub async fn cleanup(c: &Config) {
    Divert {
        mark: c.fwmark,
        table: c.route_table,
        removed: false,
    }
    .remove()
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_errors_say_which_command_its_status_and_stderr() {
        run("sh", &["-c", "cat >/dev/null"], Some("input\n")).unwrap();
        let e = run("sh", &["-c", "echo no such table >&2; exit 3"], None).unwrap_err();
        let CommandError::Failed {
            command,
            status,
            stderr,
        } = &e
        else {
            panic!("{e:?}");
        };
        assert_eq!(command.program, "sh");
        assert_eq!(status.code(), Some(3));
        assert_eq!(stderr, "no such table");
        let s = e.to_string();
        assert!(s.starts_with("sh -c echo no such table"), "{s}");
        assert!(s.ends_with("exit status: 3: no such table"), "{s}");
        let e = run("/nonexistent/nft", &["-f", "-"], Some("")).unwrap_err();
        assert!(
            matches!(&e, CommandError::Spawn { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{e:?}"
        );
    }

    #[test]
    fn ruleset_replaces_stale_table_and_diverts_only_lan_tcp() {
        let c = Config::from_toml(
            "lan_interface = \"lan0\"\nhag = \"10.66.0.1:5124\"\n[steering]\nmode = \"aggregate\"\n[dsl]\ninterface = \"dsl0\"\naddress = \"10.64.1.2\"\n[lte]\ninterface = \"lte0\"\naddress = \"10.64.2.2\"\n",
        )
        .unwrap();
        let r = ruleset(&c);
        let delete = r.find("delete table inet tandem_cpe").unwrap();
        let create = r.find("table inet tandem_cpe {").unwrap();
        assert!(delete < create);
        assert!(
            r.contains("iifname \"lan0\" meta l4proto tcp meta nfproto ipv4 tproxy ip to :15124")
        );
        assert!(r.contains("fib daddr type local accept"));
        assert!(r.contains("masquerade"));
    }

    #[test]
    fn bypass_rules_come_before_the_diversion() {
        let c = Config::from_toml(
            "lan_interface = \"lan0\"\nhag = \"10.66.0.1:5124\"\n[steering]\nmode = \"aggregate\"\n[dsl]\ninterface = \"dsl0\"\naddress = \"10.64.1.2\"\n[lte]\ninterface = \"lte0\"\naddress = \"10.64.2.2\"\n\
             [[bypass]]\nname = \"iptv\"\ndestinations = [\"198.51.100.0/24\"]\nlink = \"dsl\"\n\
             [[bypass]]\nname = \"voip\"\nports = [5060]\ndscp = [46]\n",
        )
        .unwrap();
        let r = ruleset(&c);
        let iptv = r
            .find("iifname \"lan0\" ip daddr { 198.51.100.0/24 } meta mark set 0x1000000 counter accept comment \"bypass iptv\"")
            .expect(&r);
        let voip = r
            .find("iifname \"lan0\" th dport { 5060 } ip dscp { 46 } counter accept comment \"bypass voip\"")
            .expect(&r);
        let tproxy = r.find("tproxy ip to").unwrap();
        assert!(iptv < tproxy && voip < tproxy);
        let udp = r
            .find("oifname \"dsl0\" ct state new meta l4proto udp ct mark set 0x11000000")
            .unwrap();
        let any = r
            .find("oifname \"dsl0\" ct state new ct mark set 0x1000000")
            .unwrap();
        assert!(any < udp, "the UDP mark must not be overwritten");
        let no_nat = Config::from_toml(
            "lan_interface = \"lan0\"\nhag = \"10.66.0.1:5124\"\nnat = false\n[steering]\nmode = \"aggregate\"\n[dsl]\ninterface = \"dsl0\"\naddress = \"10.64.1.2\"\n[lte]\ninterface = \"lte0\"\naddress = \"10.64.2.2\"\n",
        )
        .unwrap();
        assert!(!ruleset(&no_nat).contains("masquerade"));
    }
}
