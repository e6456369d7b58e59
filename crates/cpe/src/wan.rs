//! The home's traffic that does not go through the HAG: UDP (QUIC, DNS,
//! games, VoIP) and the bypass classes. Multipath TCP carries TCP only; this
//! traffic is forwarded and NATed over one link, the *active* one: the fixed
//! line, or the mobile link while the fixed line is down.
//!
//! Routing (over rtnetlink, in this namespace): three tables after the
//! interception's, `route_table + 1` (active link), `+ 2` (fixed line only),
//! `+ 3` (mobile only), each with one default route; rules send marked
//! packets (a flow's link, restored from its conntrack mark by the nftables
//! table, or a pinned bypass class) to their link's table, and the rest of
//! the LAN's traffic to the active table.
//!
//! Failover: when the active link changes, the default route of the active
//! table is replaced and the conntrack entries of the UDP flows that used
//! the other link are deleted (ctnetlink, by mark), so the next packet of
//! each flow is NATed afresh over the new link at once: QUIC migrates, DNS
//! and games carry on. TCP flows (bypassed classes) keep their link: a TCP
//! flow cannot change address without breaking, and the link may come back.
//!
//! What it does not do: bond UDP over both links.

use std::net::IpAddr;

use tracing::{info, warn};

use crate::config::Config;
use crate::divert::{link_mark, LINK_MASK, UDP_BIT};

/// Forwarded traffic could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WanError {
    /// A netlink request failed.
    #[error("{what}: {msg}")]
    Netlink {
        /// What was asked.
        what: String,
        /// The kernel's answer.
        msg: String,
    },
}

fn err(what: impl Into<String>, e: impl std::fmt::Display) -> WanError {
    WanError::Netlink {
        what: what.into(),
        msg: e.to_string(),
    }
}

/// Rule priorities: after the interception's (90).
const PRIO_FIXED: u32 = 91;
const PRIO_MOBILE: u32 = 92;
const PRIO_LAN: u32 = 93;

/// The forwarding tables and rules of one CPE.
#[derive(Debug)]
pub struct Forwarding {
    base: u32,
    lan: String,
    devs: [String; 2],
    gateways: [Option<IpAddr>; 2],
    active: Option<usize>,
}

impl Forwarding {
    /// The tables: active, fixed, mobile.
    fn tables(&self) -> [u32; 3] {
        [self.base + 1, self.base + 2, self.base + 3]
    }

    /// Installs the rules and the per-link tables, with the fixed line
    /// active (replacing leftovers of a crashed run).
    pub async fn install(c: &Config) -> Result<Self, WanError> {
        let mut f = Self {
            base: c.route_table,
            lan: c.lan_interface.clone(),
            devs: [c.dsl.interface.clone(), c.lte.interface.clone()],
            gateways: [c.dsl.gateway, c.lte.gateway],
            active: None,
        };
        f.remove_rules().await;
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| err("rtnetlink", e))?;
        let task = tokio::spawn(conn);
        let t = f.tables();
        let r = async {
            for (prio, mark, table) in [
                (PRIO_FIXED, Some(link_mark(0)), t[1]),
                (PRIO_MOBILE, Some(link_mark(1)), t[2]),
                (PRIO_LAN, None, t[0]),
            ] {
                let mut req = handle.rule().add().v4().priority(prio).table_id(table);
                req = req.action(rtnetlink::packet_route::rule::RuleAction::ToTable);
                match mark {
                    Some(m) => {
                        req = req.fw_mark(m);
                        req.message_mut().attributes.push(
                            rtnetlink::packet_route::rule::RuleAttribute::FwMask(LINK_MASK),
                        );
                    }
                    None => req = req.input_interface(f.lan.clone()),
                }
                req.execute()
                    .await
                    .map_err(|e| err(format!("add rule priority {prio} → table {table}"), e))?;
            }
            for i in 0..2 {
                f.default_route(&handle, t[i + 1], i).await?;
            }
            Ok::<(), WanError>(())
        }
        .await;
        task.abort();
        r?;
        f.set_active(0).await?;
        Ok(f)
    }

    /// Replaces the default route of `table` with one out of link `i`.
    async fn default_route(
        &self,
        handle: &rtnetlink::Handle,
        table: u32,
        i: usize,
    ) -> Result<(), WanError> {
        let dev = &self.devs[i];
        let index = nix::net::if_::if_nametoindex(dev.as_str())
            .map_err(|e| err(format!("interface {dev}"), e))?;
        let mut b = rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .destination_prefix(std::net::Ipv4Addr::UNSPECIFIED, 0)
            .table_id(table)
            .output_interface(index);
        if let Some(IpAddr::V4(gw)) = self.gateways[i] {
            b = b.gateway(gw);
        }
        handle
            .route()
            .add(b.build())
            .replace()
            .execute()
            .await
            .map_err(|e| err(format!("default route via {dev} in table {table}"), e))
    }

    /// Makes link `i` the active one (also re-installing the per-link
    /// routes, which the kernel drops when an interface goes down). When it
    /// changes, the UDP flows that used the other link are moved.
    pub async fn set_active(&mut self, i: usize) -> Result<(), WanError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| err("rtnetlink", e))?;
        let task = tokio::spawn(conn);
        let t = self.tables();
        let r = async {
            for l in 0..2 {
                // A link that is down may refuse its route; the active
                // one must not.
                if let Err(e) = self.default_route(&handle, t[l + 1], l).await {
                    if l == i {
                        return Err(e);
                    }
                }
            }
            self.default_route(&handle, t[0], i).await
        }
        .await;
        task.abort();
        r?;
        if self.active != Some(i) {
            let previous = self.active.replace(i);
            if let Some(p) = previous {
                match flush_conntrack(link_mark(p) | UDP_BIT, LINK_MASK | UDP_BIT) {
                    Ok(()) => {}
                    Err(e) => warn!("moving UDP flows off {}: {e}", self.devs[p]),
                }
                info!(
                    from = %self.devs[p],
                    to = %self.devs[i],
                    "forwarded traffic (UDP, bypass) moved to the other link"
                );
            }
        }
        Ok(())
    }

    async fn remove_rules(&self) {
        let Ok((conn, handle, _)) = rtnetlink::new_connection() else {
            return;
        };
        let task = tokio::spawn(conn);
        use futures::TryStreamExt;
        let mut rules = handle.rule().get(rtnetlink::IpVersion::V4).execute();
        let mut ours = Vec::new();
        while let Ok(Some(r)) = rules.try_next().await {
            let prio = r.attributes.iter().find_map(|a| match a {
                rtnetlink::packet_route::rule::RuleAttribute::Priority(p) => Some(*p),
                _ => None,
            });
            if matches!(prio, Some(PRIO_FIXED | PRIO_MOBILE | PRIO_LAN)) {
                ours.push(r);
            }
        }
        for r in ours {
            let _ = handle.rule().del(r).execute().await;
        }
        task.abort();
    }

    /// Removes the rules (the tables' routes go with the namespace or stay
    /// unused).
    pub async fn remove(self) {
        self.remove_rules().await;
    }

    /// Removes the rules a CPE with this configuration may have left (after
    /// a crash); nothing if there are none.
    pub async fn cleanup(c: &Config) {
        Self {
            base: c.route_table,
            lan: c.lan_interface.clone(),
            devs: [c.dsl.interface.clone(), c.lte.interface.clone()],
            gateways: [c.dsl.gateway, c.lte.gateway],
            active: None,
        }
        .remove_rules()
        .await;
    }
}

/// Deletes the conntrack entries whose mark matches `mark` under `mask`
/// (`IPCTNL_MSG_CT_DELETE` without a tuple: a filtered flush).
pub fn flush_conntrack(mark: u32, mask: u32) -> std::io::Result<()> {
    use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
    const NFNL_SUBSYS_CTNETLINK: u16 = 1;
    const IPCTNL_MSG_CT_DELETE: u16 = 2;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_ACK: u16 = 4;
    const CTA_MARK: u16 = 8;
    const CTA_MARK_MASK: u16 = 21;
    const NLMSG_ERROR: u16 = 2;
    let mut sock = Socket::new(NETLINK_NETFILTER)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    let mut msg = Vec::with_capacity(36);
    msg.extend_from_slice(&36u32.to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE).to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel
                                                // nfgenmsg: AF_UNSPEC, version 0, resource id 0 (both families).
    msg.extend_from_slice(&[0, 0, 0, 0]);
    for (kind, value) in [(CTA_MARK, mark), (CTA_MARK_MASK, mask)] {
        msg.extend_from_slice(&8u16.to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&value.to_be_bytes());
    }
    sock.send(&msg, 0)?;
    let mut buf = vec![0u8; 4096];
    let n = sock.recv(&mut &mut buf[..], 0)?;
    // The acknowledgement: nlmsghdr, then the error code (0: done; ENOENT:
    // nothing matched).
    if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR {
        let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if code == 0 || -code == nix::errno::Errno::ENOENT as i32 {
            return Ok(());
        }
        return Err(std::io::Error::from_raw_os_error(-code));
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "conntrack flush: unexpected reply",
    ))
}
