//! The lab's street: N homes, each with its own CPE and LAN client, whose
//! fixed lines run through named street cabinets and whose mobile links
//! run through named cells, to one HAG and one ops (`tandem lab up --homes
//! N --cabinets C --cells K`).
//!
//! ```text
//!  home  ─ cpe  ─ dsl0 ══ cpe0 [dsl ] core0 ══ dsl0 ─ hag ─ net0 ─ net
//!  home2 ─ cpe2 ─ dsl0 ══ cpe0 [dsl2] core0 ══ dsl1 ─┘
//!  home3 ─ cpe3 ─ dsl0 ══ cpe1 [dsl ]      (cabinet 1's second port)
//!            └─── lte0 ══ cpeP [lte, lte2, …: the cells] core0 ══ lteK ─ hag
//! ```
//!
//! A cabinet is one namespace (`dsl` for cabinet 1, `dsl2`, …) with one
//! port per line (`cpe0`, `cpe1`, …: each line's download shaper and delay
//! queue) and one backhaul (`core0`); a cell likewise (`lte`, `lte2`, …).
//! Home 1 keeps the single-home lab's names and addresses (`home`, `cpe`,
//! 10.64.1.2), so a street of one home is the lab every other test uses.
//! In a street of more than one home the upload is shaped where a modem
//! sends it, on the CPE's WAN device, since a cabinet's backhaul carries
//! every line.
//!
//! Home `i` (1-based): CPE at 10.64.1.(1+i) on its line and 10.64.2.(1+i)
//! on the mobile link (every cabinet port answers for the gateway
//! 10.64.1.1, as a BNG's unnumbered ports do), LAN 192.168.(99+i).0/24.
//! Cabinet `j`'s backhaul is 10.65.(2j−1).0/24, cell `k`'s 10.65.(2k).0/24.
//! Homes go to cabinets in turn (home `i` on cabinet `(i−1) mod C + 1`) and
//! to cells in blocks, so a cabinet's homes are spread over the cells.
//!
//! Each line is a pair of its own length ([`pair`]): the street emulator
//! (`tandem lab street`, [`crate::fault`]) runs a [`street::modem::Modem`]
//! on it, which sets both what the modem reports and the line's real shaped
//! rate, loss and sync.

use std::net::Ipv4Addr;

use hybrid::Link;
use serde::{Deserialize, Serialize};
use street::line::{Gauge, Pair, Profile};

use crate::LabError;

/// Lines per line card in a lab cabinet (the fleet's, [`street::fleet::CARD_PORTS`]).
pub const CARD_PORTS: u32 = street::fleet::CARD_PORTS;

/// The most homes a lab street has (addresses and the machine's two cores).
pub const MAX_HOMES: u32 = 24;

/// The shape of the street.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Street {
    /// Homes.
    pub homes: u32,
    /// Street cabinets.
    pub cabinets: u32,
    /// Cells.
    pub cells: u32,
}

impl Default for Street {
    fn default() -> Self {
        Self {
            homes: 1,
            cabinets: 1,
            cells: 1,
        }
    }
}

/// The namespace-name stem of a node that has one per home, cabinet or cell.
const STEMS: &[&str] = &["home", "cpe", "dsl", "lte"];

/// Whether `node` is a lab node name (fixed, or one of a street's).
pub fn is_node(node: &str) -> bool {
    if crate::topology::NODES.contains(&node) {
        return true;
    }
    let stem = node.trim_end_matches(|c: char| c.is_ascii_digit());
    stem.len() < node.len() && STEMS.contains(&stem)
}

fn numbered(stem: &str, i: u32) -> String {
    if i == 1 {
        stem.to_owned()
    } else {
        format!("{stem}{i}")
    }
}

/// Home `i`'s LAN node (its LAN client).
pub fn home_node(i: u32) -> String {
    numbered("home", i)
}

/// Home `i`'s CPE node.
pub fn cpe_node(i: u32) -> String {
    numbered("cpe", i)
}

/// The node of cabinet `j` (`Link::Dsl`) or cell `j` (`Link::Lte`).
pub fn access_node(l: Link, j: u32) -> String {
    numbered(l.name(), j)
}

/// A cabinet's or cell's device towards its `p`-th home (0-based).
pub fn port_dev(p: u32) -> String {
    format!("cpe{p}")
}

/// The HAG's device towards cabinet or cell `j`.
pub fn hag_dev(l: Link, j: u32) -> String {
    format!("{}{}", l.name(), j - 1)
}

/// Home `i`'s subscriber name (HAG registry and ops' inventory).
pub fn subscriber(i: u32) -> String {
    format!("home-{i}")
}

/// Cabinet `j`'s name in the operator's inventory.
pub fn cabinet_name(j: u32) -> String {
    format!("cab{j}")
}

/// Cell `k`'s id as the mobile modems show it (and ops' inventory lists).
pub fn cell_id(k: u32) -> String {
    format!("0A1B2C{k:02X}")
}

/// Addresses of the street (home 1's are [`crate::topology::addr`]'s).
pub mod addr {
    use super::*;

    /// Home `i`'s CPE on link `l`.
    pub fn cpe_wan(l: Link, i: u32) -> Ipv4Addr {
        Ipv4Addr::new(10, 64, link_octet(l), (1 + i) as u8)
    }

    /// The gateway every port of a cabinet (cell) answers for.
    pub fn gateway(l: Link) -> Ipv4Addr {
        Ipv4Addr::new(10, 64, link_octet(l), 1)
    }

    fn link_octet(l: Link) -> u8 {
        match l {
            Link::Dsl => 1,
            Link::Lte => 2,
        }
    }

    /// Home `i`'s LAN network.
    pub fn lan(i: u32) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, (99 + i) as u8, 0)
    }

    /// Home `i`'s LAN device.
    pub fn home(i: u32) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, (99 + i) as u8, 2)
    }

    /// Home `i`'s CPE on the LAN.
    pub fn cpe_lan(i: u32) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, (99 + i) as u8, 1)
    }

    fn backhaul_octet(l: Link, j: u32) -> u8 {
        match l {
            Link::Dsl => (2 * j - 1) as u8,
            Link::Lte => (2 * j) as u8,
        }
    }

    /// Cabinet (cell) `j` on its backhaul.
    pub fn core(l: Link, j: u32) -> Ipv4Addr {
        Ipv4Addr::new(10, 65, backhaul_octet(l, j), 1)
    }

    /// The HAG on cabinet (cell) `j`'s backhaul.
    pub fn hag_side(l: Link, j: u32) -> Ipv4Addr {
        Ipv4Addr::new(10, 65, backhaul_octet(l, j), 2)
    }
}

impl Street {
    /// Checks the shape.
    pub fn validate(&self) -> Result<(), LabError> {
        let ok = (1..=MAX_HOMES).contains(&self.homes)
            && (1..=self.homes).contains(&self.cabinets)
            && (1..=self.homes).contains(&self.cells);
        if ok {
            Ok(())
        } else {
            Err(LabError::Invalid(format!(
                "a street of {} homes, {} cabinets, {} cells: 1 to {MAX_HOMES} homes, \
                 and 1 to that many cabinets and cells",
                self.homes, self.cabinets, self.cells
            )))
        }
    }

    /// A street of more than the one home of the plain lab.
    pub fn is_street(&self) -> bool {
        *self != Self::default()
    }

    /// The homes, 1-based.
    pub fn homes(&self) -> std::ops::RangeInclusive<u32> {
        1..=self.homes
    }

    /// The cabinets (`Link::Dsl`) or cells (`Link::Lte`), 1-based.
    pub fn access(&self, l: Link) -> std::ops::RangeInclusive<u32> {
        match l {
            Link::Dsl => 1..=self.cabinets,
            Link::Lte => 1..=self.cells,
        }
    }

    /// The cabinet (`Dsl`) or cell (`Lte`) home `i` is on.
    pub fn access_of(&self, l: Link, i: u32) -> u32 {
        match l {
            Link::Dsl => (i - 1) % self.cabinets + 1,
            Link::Lte => (i - 1) * self.cells / self.homes + 1,
        }
    }

    /// The homes on cabinet (cell) `j`, in port order.
    pub fn homes_on(&self, l: Link, j: u32) -> Vec<u32> {
        self.homes()
            .filter(|&i| self.access_of(l, i) == j)
            .collect()
    }

    /// Home `i`'s port on its cabinet (cell), 0-based.
    pub fn port(&self, l: Link, i: u32) -> u32 {
        let j = self.access_of(l, i);
        self.homes_on(l, j)
            .iter()
            .position(|&h| h == i)
            .unwrap_or(0) as u32
    }

    /// Home `i`'s line card in its cabinet.
    pub fn card(&self, i: u32) -> u32 {
        self.port(Link::Dsl, i) / CARD_PORTS
    }

    /// Every node of the street and the fixed ones.
    pub fn nodes(&self) -> Vec<String> {
        let mut v: Vec<String> = crate::topology::NODES
            .iter()
            .filter(|n| !STEMS.contains(n))
            .map(|n| (*n).to_owned())
            .collect();
        for i in self.homes() {
            v.push(home_node(i));
            v.push(cpe_node(i));
        }
        for l in Link::ALL {
            v.extend(self.access(l).map(|j| access_node(l, j)));
        }
        v
    }

    /// Parses `home-2`, `2` (a home), `cab2`, `2` (a cabinet), `cell2`, a
    /// cell id or `2` (a cell) into an index, checked against the street.
    pub fn parse_target(&self, what: Scope, s: &str) -> Result<u32, LabError> {
        let (max, names): (u32, fn(u32) -> Vec<String>) = match what {
            Scope::Home => (self.homes, |i| vec![subscriber(i)]),
            Scope::Cabinet => (self.cabinets, |j| vec![cabinet_name(j)]),
            Scope::Cell => (self.cells, |k| vec![format!("cell{k}"), cell_id(k)]),
        };
        let found = s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .or_else(|| (1..=max).find(|&n| names(n).iter().any(|x| x.eq_ignore_ascii_case(s))));
        found.ok_or_else(|| {
            LabError::Invalid(format!(
                "{s:?}: no such {} in this street (1 to {max}, or {})",
                what.name(),
                names(1)[0]
            ))
        })
    }
}

/// What a target names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// A home.
    Home,
    /// A cabinet.
    Cabinet,
    /// A cell.
    Cell,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Self::Home => "home",
            Self::Cabinet => "cabinet",
            Self::Cell => "cell",
        }
    }
}

/// Home `i`'s pair: VDSL2 17a on 0.5 mm copper, loops from 0.4 to 1.4 km
/// (home 1's is the single-home lab's 0.8 km), ten other lines in the
/// binder.
pub fn pair(i: u32) -> Pair {
    const KM: [f64; 6] = [0.8, 0.6, 1.1, 1.4, 0.5, 1.0];
    Pair {
        length_km: KM[((i - 1) % 6) as usize],
        gauge: Gauge::Mm05,
        profile: Profile::Vdsl2_17a,
        disturbers: 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_street_of_one_is_the_plain_lab() {
        let s = Street::default();
        assert!(!s.is_street());
        let mut nodes = s.nodes();
        nodes.sort();
        let mut plain: Vec<String> = crate::topology::NODES
            .iter()
            .map(|n| n.to_string())
            .collect();
        plain.sort();
        assert_eq!(nodes, plain);
        assert_eq!(addr::cpe_wan(Link::Dsl, 1), crate::topology::addr::CPE_DSL);
        assert_eq!(addr::cpe_wan(Link::Lte, 1), crate::topology::addr::CPE_LTE);
        assert_eq!(addr::gateway(Link::Dsl), crate::topology::addr::DSL_GW);
        assert_eq!(addr::home(1), crate::topology::addr::HOME);
        assert_eq!(addr::cpe_lan(1), crate::topology::addr::CPE_LAN);
        assert_eq!(addr::core(Link::Dsl, 1), crate::topology::addr::DSL_CORE);
        assert_eq!(addr::hag_side(Link::Lte, 1), crate::topology::addr::HAG_LTE);
        assert_eq!(hag_dev(Link::Dsl, 1), "dsl0");
        assert_eq!(port_dev(s.port(Link::Dsl, 1)), "cpe0");
        assert_eq!(cell_id(1), crate::modem::CELL_ID);
    }

    #[test]
    fn homes_spread_over_cabinets_and_cells() {
        let s = Street {
            homes: 6,
            cabinets: 2,
            cells: 2,
        };
        s.validate().unwrap();
        assert_eq!(s.homes_on(Link::Dsl, 1), [1, 3, 5]);
        assert_eq!(s.homes_on(Link::Dsl, 2), [2, 4, 6]);
        assert_eq!(s.homes_on(Link::Lte, 1), [1, 2, 3]);
        assert_eq!(s.homes_on(Link::Lte, 2), [4, 5, 6]);
        assert_eq!(s.port(Link::Dsl, 5), 2);
        assert_eq!(s.port(Link::Lte, 5), 1);
        assert!(s.nodes().contains(&"dsl2".to_owned()));
        assert!(is_node("cpe6") && is_node("lte2") && is_node("hag") && !is_node("hag2"));
        assert!(!is_node("cpex") && !is_node("6"));
        assert_eq!(s.parse_target(Scope::Home, "home-4").unwrap(), 4);
        assert_eq!(s.parse_target(Scope::Cabinet, "cab2").unwrap(), 2);
        assert_eq!(s.parse_target(Scope::Cell, "0A1B2C02").unwrap(), 2);
        assert_eq!(s.parse_target(Scope::Cell, "1").unwrap(), 1);
        let e = s
            .parse_target(Scope::Home, "home-7")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such home"), "{e}");
        for bad in [(0, 1, 1), (4, 5, 1), (25, 1, 1), (3, 1, 0)] {
            let s = Street {
                homes: bad.0,
                cabinets: bad.1,
                cells: bad.2,
            };
            assert!(s.validate().is_err(), "{s:?}");
        }
    }
}
