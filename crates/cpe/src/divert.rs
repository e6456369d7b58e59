//! Diverting the LAN's TCP to the CPE: an nftables table of our own with a
//! TPROXY rule (loaded with `nft -f -`, one atomic transaction), and the
//! policy rule and local route that deliver marked packets to the CPE
//! (over rtnetlink).
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

/// Interception installed; removed by [`Divert::remove`] or, failing that,
/// when dropped.
pub struct Divert {
    mark: u32,
    table: u32,
    removed: bool,
}

/// The policy rule (`fwmark MARK lookup TABLE`) and the local default route
/// in TABLE that deliver diverted packets to the CPE, for one family, over
/// rtnetlink. Removal is best effort: what is not there is fine.
async fn policy_route(v4: bool, mark: u32, table: u32, add: bool) -> Result<(), DivertError> {
    use rtnetlink::packet_route::route::{RouteScope, RouteType};
    use rtnetlink::packet_route::rule::RuleAction;
    use std::net::{Ipv4Addr, Ipv6Addr};
    let err = |what: &str, e: rtnetlink::Error| DivertError::Command {
        cmd: format!("rtnetlink {what} (mark {mark:#x}, table {table})"),
        msg: e.to_string(),
    };
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| DivertError::Command {
        cmd: "rtnetlink".into(),
        msg: e.to_string(),
    })?;
    let task = tokio::spawn(conn);
    let lo = nix::net::if_::if_nametoindex("lo").unwrap_or(1);
    let rule_req = || {
        handle
            .rule()
            .add()
            .fw_mark(mark)
            .table_id(table)
            .priority(90)
            .action(RuleAction::ToTable)
    };
    let mut rule = if v4 {
        let mut r = rule_req().v4();
        std::mem::take(r.message_mut())
    } else {
        let mut r = rule_req().v6();
        std::mem::take(r.message_mut())
    };
    let route = if v4 {
        rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .table_id(table)
            .kind(RouteType::Local)
            .scope(RouteScope::Host)
            .output_interface(lo)
            .build()
    } else {
        rtnetlink::RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(Ipv6Addr::UNSPECIFIED, 0)
            .table_id(table)
            .kind(RouteType::Local)
            .scope(RouteScope::Host)
            .output_interface(lo)
            .build()
    };
    let result = if add {
        let mut r = handle.rule().add();
        *r.message_mut() = std::mem::take(&mut rule);
        match r.execute().await {
            Ok(()) => handle
                .route()
                .add(route)
                .execute()
                .await
                .map_err(|e| err("add local route", e)),
            Err(e) => Err(err("add fwmark rule", e)),
        }
    } else {
        let _ = handle.rule().del(rule).execute().await;
        let _ = handle.route().del(route).execute().await;
        Ok(())
    };
    task.abort();
    result
}

impl Divert {
    /// Installs the policy routes and the nftables table (replacing
    /// leftovers of a crashed run).
    pub async fn install(c: &Config) -> Result<Self, DivertError> {
        let mut d = Self {
            mark: c.fwmark,
            table: c.route_table,
            removed: false,
        };
        d.remove_routes().await;
        // From here `d` removes whatever was installed if a step fails.
        d.removed = false;
        policy_route(true, d.mark, d.table, true).await?;
        if let Err(e) = policy_route(false, d.mark, d.table, true).await {
            tracing::debug!("IPv6 interception route: {e}");
        }
        run("nft", &["-f", "-"], Some(&ruleset(c)))?;
        Ok(d)
    }

    async fn remove_routes(&mut self) {
        for v4 in [true, false] {
            let _ = policy_route(v4, self.mark, self.table, false).await;
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
        // on a thread of its own, outside any runtime.
        remove_table();
        let (mark, table) = (self.mark, self.table);
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    for v4 in [true, false] {
                        let _ = policy_route(v4, mark, table, false).await;
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
