//! Diverting the LAN's TCP to the CPE: an nftables table of our own with a
//! TPROXY rule, and the policy route that delivers marked packets locally.
//!
//! The table is replaced atomically at start (a table left by a crashed run
//! is removed in the same transaction) and deleted at exit by [`Divert`]'s
//! `remove`, also on SIGINT/SIGTERM. `tandem cpe cleanup` removes it by hand.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::config::Config;

/// The nftables table name.
pub const TABLE: &str = "tandem_cpe";

/// Installing or removing the interception failed.
#[derive(Debug, thiserror::Error)]
pub enum DivertError {
    /// A command could not run or reported failure.
    #[error("{cmd}: {msg}")]
    Command {
        /// The command.
        cmd: String,
        /// What it printed or why it did not run.
        msg: String,
    },
}

fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Result<(), DivertError> {
    let err = |msg: String| DivertError::Command {
        cmd: format!("{cmd} {}", args.join(" ")),
        msg,
    };
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

/// The nftables ruleset (one transaction): drop any stale table, add ours.
pub fn ruleset(c: &Config) -> String {
    format!(
        "table inet {TABLE}\n\
         delete table inet {TABLE}\n\
         table inet {TABLE} {{\n\
         \tchain divert {{\n\
         \t\ttype filter hook prerouting priority mangle; policy accept;\n\
         \t\tiifname \"{lan}\" fib daddr type local accept\n\
         \t\tiifname \"{lan}\" meta l4proto tcp meta nfproto ipv4 tproxy ip to :{port} meta mark set {mark:#x} accept\n\
         \t\tiifname \"{lan}\" meta l4proto tcp meta nfproto ipv6 tproxy ip6 to :{port} meta mark set {mark:#x} accept\n\
         \t}}\n\
         }}\n",
        lan = c.lan_interface,
        port = c.intercept_port,
        mark = c.fwmark,
    )
}

/// Interception installed; call [`Divert::remove`] on the way out.
pub struct Divert {
    mark: u32,
    table: u32,
}

fn route_args(family: &str, verb: &str, mark: u32, table: u32) -> Vec<Vec<String>> {
    let s = |v: &str| v.to_string();
    vec![
        vec![
            s(family),
            s("rule"),
            s(verb),
            s("fwmark"),
            format!("{mark:#x}"),
            s("lookup"),
            table.to_string(),
            s("priority"),
            s("90"),
        ],
        vec![
            s(family),
            s("route"),
            s(verb),
            s("local"),
            s(if family == "-4" { "0.0.0.0/0" } else { "::/0" }),
            s("dev"),
            s("lo"),
            s("table"),
            table.to_string(),
        ],
    ]
}

impl Divert {
    /// Installs the table and the policy routes (replacing leftovers).
    pub fn install(c: &Config) -> Result<Self, DivertError> {
        let d = Self {
            mark: c.fwmark,
            table: c.route_table,
        };
        // `d` removes whatever was installed if a later step fails.
        d.remove_routes();
        for family in ["-4", "-6"] {
            for args in route_args(family, "add", d.mark, d.table) {
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                if let Err(e) = run("ip", &refs, None) {
                    if family == "-4" {
                        return Err(e);
                    }
                    tracing::debug!("IPv6 interception route: {e}");
                }
            }
        }
        run("nft", &["-f", "-"], Some(&ruleset(c)))?;
        Ok(d)
    }

    fn remove_routes(&self) {
        for family in ["-4", "-6"] {
            for args in route_args(family, "del", self.mark, self.table) {
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                let _ = run("ip", &refs, None);
            }
        }
    }

    /// Removes the table and routes. Safe to call when they are already gone.
    pub fn remove(&self) {
        remove_table();
        self.remove_routes();
    }
}

impl Drop for Divert {
    fn drop(&mut self) {
        self.remove();
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
pub fn cleanup(c: &Config) {
    Divert {
        mark: c.fwmark,
        table: c.route_table,
    }
    .remove();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_replaces_stale_table_and_diverts_only_lan_tcp() {
        let c = Config::from_toml(
            "lan_interface = \"lan0\"\nhag = \"10.66.0.1:5124\"\n[dsl]\ninterface = \"dsl0\"\naddress = \"10.64.1.2\"\n[lte]\ninterface = \"lte0\"\naddress = \"10.64.2.2\"\n",
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
    }
}
