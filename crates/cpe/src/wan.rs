//! The home's traffic that does not go through the HAG: UDP (QUIC, DNS,
//! games, VoIP) and the bypass classes. Multipath TCP carries TCP only; this
//! traffic is forwarded and NATed over one link, the *active* one: the fixed
//! line, or the mobile link while the fixed line is down.
//!
//! Routing (over rtnetlink, [`mptcp_sock::route`], on the process's one
//! connection, in this namespace): three tables after the
//! interception's, `route_table + 1` (active link), `+ 2` (fixed line only),
//! `+ 3` (mobile only), each with one default route; rules send marked
//! packets (a flow's link, restored from its conntrack mark by the nftables
//! table, or a pinned bypass class) to their link's table, and the rest of
//! the LAN's traffic to the active table.
//!
//! Failover: when the active link changes, the default route of the active
//! table is replaced and the conntrack entries of the UDP flows that used
//! the other link are deleted (ctnetlink, by mark, through
//! [`mptcp_sock::conntrack`]), so the next packet of each flow is NATed
//! afresh over the new link at once: QUIC migrates, DNS and games carry on. TCP flows (bypassed classes) keep their link: a TCP
//! flow cannot change address without breaking, and the link may come back.
//!
//! What it does not do: bond UDP over both links.

use std::net::IpAddr;

use mptcp_sock::conntrack::{Conntrack, ConntrackError, MarkFilter};
use mptcp_sock::route::{Family, Route, RouteError, RouteNetlink, Rule};
use tracing::{info, warn};

use crate::config::Config;
use hybrid::{Link, PerLink};

use crate::divert::{link_mark, LINK_MASK, UDP_BIT};

/// Forwarded traffic could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WanError {
    /// A link's interface does not exist.
    #[error("interface {name}: {source}")]
    Interface {
        /// The interface name.
        name: String,
        /// Why it could not be looked up.
        source: nix::Error,
    },
    /// The kernel refused a rule or a route (the error names which, and
    /// its errno).
    #[error(transparent)]
    Netlink(#[from] RouteError),
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
    devs: PerLink<String>,
    gateways: PerLink<Option<IpAddr>>,
    active: Option<Link>,
}

impl Forwarding {
    fn new(c: &Config) -> Self {
        Self {
            base: c.route_table,
            lan: c.lan_interface.clone(),
            devs: PerLink::new(c.dsl.interface.clone(), c.lte.interface.clone()),
            gateways: PerLink::new(c.dsl.gateway, c.lte.gateway),
            active: None,
        }
    }

    /// The table of the active link.
    fn active_table(&self) -> u32 {
        self.base + 1
    }

    /// The table of one link.
    fn link_table(&self, l: Link) -> u32 {
        match l {
            Link::Dsl => self.base + 2,
            Link::Lte => self.base + 3,
        }
    }

    /// Our rules: marked packets to their link's table, the rest of the
    /// LAN's traffic to the active table.
    fn rules(&self) -> [Rule; 3] {
        [
            Rule::fwmark(
                Family::V4,
                PRIO_FIXED,
                link_mark(Link::Dsl),
                Some(LINK_MASK),
                self.link_table(Link::Dsl),
            ),
            Rule::fwmark(
                Family::V4,
                PRIO_MOBILE,
                link_mark(Link::Lte),
                Some(LINK_MASK),
                self.link_table(Link::Lte),
            ),
            Rule::iif(Family::V4, PRIO_LAN, self.lan.clone(), self.active_table()),
        ]
    }

    /// Installs the rules and the per-link tables, with the fixed line
    /// active (replacing leftovers of a crashed run).
    pub async fn install(c: &Config) -> Result<Self, WanError> {
        let mut f = Self::new(c);
        let nl = RouteNetlink::shared()?;
        f.remove_rules(&nl).await;
        for rule in f.rules() {
            nl.add_rule(&rule).await?;
        }
        for l in Link::ALL {
            f.default_route(&nl, f.link_table(l), l).await?;
        }
        f.set_active(Link::Dsl).await?;
        Ok(f)
    }

    /// Replaces the default route of `table` with one out of link `l`.
    async fn default_route(&self, nl: &RouteNetlink, table: u32, l: Link) -> Result<(), WanError> {
        let dev = &self.devs[l];
        let index =
            nix::net::if_::if_nametoindex(dev.as_str()).map_err(|source| WanError::Interface {
                name: dev.clone(),
                source,
            })?;
        let gateway = self.gateways[l].filter(IpAddr::is_ipv4);
        nl.replace_route(&Route::default_via(Family::V4, table, index, gateway))
            .await?;
        Ok(())
    }

    /// Makes link `i` the active one (also re-installing the per-link
    /// routes, which the kernel drops when an interface goes down). When it
    /// changes, the UDP flows that used the other link are moved.
    pub async fn set_active(&mut self, i: Link) -> Result<(), WanError> {
        let nl = RouteNetlink::shared()?;
        for l in Link::ALL {
            // A link that is down may refuse its route; the active
            // one must not.
            if let Err(e) = self.default_route(&nl, self.link_table(l), l).await {
                if l == i {
                    return Err(e);
                }
            }
        }
        self.default_route(&nl, self.active_table(), i).await?;
        if self.active != Some(i) {
            let previous = self.active.replace(i);
            if let Some(p) = previous {
                let udp = MarkFilter {
                    mark: link_mark(p) | UDP_BIT,
                    mask: LINK_MASK | UDP_BIT,
                };
                if let Err(e) = flush_conntrack(udp).await {
                    warn!("moving UDP flows off {}: {e}", self.devs[p]);
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

    /// Deletes every IPv4 rule at our priorities (best effort: what is not
    /// there is fine).
    async fn remove_rules(&self, nl: &RouteNetlink) {
        let rules = match nl.rules(Family::V4).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("listing rules: {e}");
                return;
            }
        };
        for r in rules {
            if matches!(r.priority, PRIO_FIXED | PRIO_MOBILE | PRIO_LAN) {
                if let Err(e) = nl.delete_rule(&r).await {
                    tracing::debug!("{e}");
                }
            }
        }
    }

    /// Removes the rules (the tables' routes go with the namespace or stay
    /// unused).
    pub async fn remove(self) {
        if let Ok(nl) = RouteNetlink::shared() {
            self.remove_rules(&nl).await;
        }
    }

    /// Removes the rules a CPE with this configuration may have left (after
    /// a crash); nothing if there are none.
    pub async fn cleanup(c: &Config) {
        Self::new(c).remove().await;
    }
}

/// Deletes the conntrack entries (both families) whose mark matches
/// `filter` (ctnetlink `IPCTNL_MSG_CT_DELETE` without a tuple: a filtered
/// flush), on the process's ctnetlink connection. None matching is fine.
pub async fn flush_conntrack(filter: MarkFilter) -> Result<(), ConntrackError> {
    Conntrack::shared()?.delete(filter).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use mptcp_sock::route::{FwMark, RuleTarget};

    #[test]
    fn rules_send_marked_flows_to_their_link_and_the_lan_to_the_active_table() {
        let c = Config::from_toml(
            "lan_interface = \"lan0\"\nhag = \"10.66.0.1:5124\"\nroute_table = 200\n[steering]\nmode = \"aggregate\"\n[dsl]\ninterface = \"dsl0\"\naddress = \"10.64.1.2\"\n[lte]\ninterface = \"lte0\"\naddress = \"10.64.2.2\"\n",
        )
        .unwrap();
        let f = Forwarding::new(&c);
        assert_eq!(
            [
                f.active_table(),
                f.link_table(Link::Dsl),
                f.link_table(Link::Lte)
            ],
            [201, 202, 203]
        );
        let [fixed, mobile, lan] = f.rules();
        assert_eq!(
            (fixed.priority, fixed.fwmark, fixed.target),
            (
                PRIO_FIXED,
                Some(FwMark {
                    value: link_mark(Link::Dsl),
                    mask: Some(LINK_MASK)
                }),
                RuleTarget::Lookup(202)
            )
        );
        assert_eq!(mobile.fwmark.map(|m| m.value), Some(link_mark(Link::Lte)));
        assert_eq!(mobile.target, RuleTarget::Lookup(203));
        assert_eq!(lan.iif.as_deref(), Some("lan0"));
        assert_eq!(lan.target, RuleTarget::Lookup(201));
        // After the interception's rule (90), in this order.
        assert!(90 < fixed.priority && fixed.priority < mobile.priority);
        assert!(mobile.priority < lan.priority);
    }
}
