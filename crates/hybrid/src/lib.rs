//! The vocabulary every part of Tandem shares, as types: the two access
//! links ([`Link`]), a per-link pair of values ([`PerLink`]), the direction
//! of traffic ([`Direction`]), the steering mode ([`SteeringMode`]), and
//! where a fault is and whom to send ([`Location`], [`Dispatch`]).
//!
//! Each type has one spelling in configurations, metric labels, logs and the
//! lab's CLI (`name()`, `Display`, `FromStr`, serde), so a part never passes
//! `"dsl"` or an index around, and a typo is an error with the valid names.
//!
//! What it does not do: anything at run time. No I/O, no dependencies but
//! serde.
#![forbid(unsafe_code)]

use std::fmt;
use std::ops::{Index, IndexMut};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A name that is not one of the type's values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {given:?} (expected {expected})")]
pub struct UnknownName {
    /// What kind of name it should have been ("link", "steering mode", ...).
    pub what: &'static str,
    /// What was given.
    pub given: String,
    /// The valid names, for the message.
    pub expected: &'static str,
}

/// Implements `Display`, `FromStr` and serde as the type's `name()`.
macro_rules! named {
    ($ty:ty, $what:literal, $expected:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                Self::ALL
                    .into_iter()
                    .find(|v| v.name() == s)
                    .ok_or_else(|| UnknownName {
                        what: $what,
                        given: s.to_string(),
                        expected: $expected,
                    })
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// One of the home's two access links.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Link {
    /// The fixed line (DSL): free, used first.
    Dsl,
    /// The mobile link (LTE/5G): paid per byte, used on overflow and failure.
    Lte,
}

impl Link {
    /// Both links, fixed line first.
    pub const ALL: [Self; 2] = [Self::Dsl, Self::Lte];

    /// The name in configurations, metric labels and logs: `dsl` or `lte`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Dsl => "dsl",
            Self::Lte => "lte",
        }
    }

    /// The other link.
    pub fn other(self) -> Self {
        match self {
            Self::Dsl => Self::Lte,
            Self::Lte => Self::Dsl,
        }
    }

    /// Whether this is the fixed line.
    pub fn is_fixed(self) -> bool {
        self == Self::Dsl
    }

    fn index(self) -> usize {
        match self {
            Self::Dsl => 0,
            Self::Lte => 1,
        }
    }
}

named!(Link, "link", "dsl or lte");

/// One value for each link (state, counters, sockets), indexed by [`Link`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PerLink<T>([T; 2]);

impl<T> PerLink<T> {
    /// The fixed line's value and the mobile link's.
    pub const fn new(dsl: T, lte: T) -> Self {
        Self([dsl, lte])
    }

    /// A value per link from a function of the link.
    pub fn from_fn(mut f: impl FnMut(Link) -> T) -> Self {
        Self([f(Link::Dsl), f(Link::Lte)])
    }

    /// Each link with its value.
    pub fn iter(&self) -> impl Iterator<Item = (Link, &T)> {
        Link::ALL.into_iter().zip(self.0.iter())
    }

    /// Each link with its value, mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Link, &mut T)> {
        Link::ALL.into_iter().zip(self.0.iter_mut())
    }

    /// A new pair from a function of each link and its value.
    pub fn map<U>(self, mut f: impl FnMut(Link, T) -> U) -> PerLink<U> {
        let [d, l] = self.0;
        PerLink([f(Link::Dsl, d), f(Link::Lte, l)])
    }

    /// The links whose value satisfies `f`.
    pub fn links_where(&self, mut f: impl FnMut(&T) -> bool) -> Vec<Link> {
        self.iter().filter(|(_, v)| f(v)).map(|(l, _)| l).collect()
    }
}

impl<T> Index<Link> for PerLink<T> {
    type Output = T;
    fn index(&self, l: Link) -> &T {
        &self.0[l.index()]
    }
}

impl<T> IndexMut<Link> for PerLink<T> {
    fn index_mut(&mut self, l: Link) -> &mut T {
        &mut self.0[l.index()]
    }
}

/// Which way traffic goes, seen from the home.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// From the home towards the internet (upload).
    Upstream,
    /// From the internet towards the home (download).
    Downstream,
}

impl Direction {
    /// Both directions.
    pub const ALL: [Self; 2] = [Self::Upstream, Self::Downstream];

    /// The name in metric labels and logs (TR-181 spelling): `upstream` or
    /// `downstream`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Upstream => "upstream",
            Self::Downstream => "downstream",
        }
    }

    /// The other direction.
    pub fn reverse(self) -> Self {
        match self {
            Self::Upstream => Self::Downstream,
            Self::Downstream => Self::Upstream,
        }
    }

    /// The word for a transfer in this direction, as the benchmark's
    /// results and reports spell it: `upload` or `download`.
    pub fn transfer_name(self) -> &'static str {
        match self {
            Self::Upstream => "upload",
            Self::Downstream => "download",
        }
    }

    /// The direction of a transfer named by [`Self::transfer_name`].
    pub fn from_transfer_name(s: &str) -> Result<Self, UnknownName> {
        Self::ALL
            .into_iter()
            .find(|d| d.transfer_name() == s)
            .ok_or_else(|| UnknownName {
                what: "transfer direction",
                given: s.to_string(),
                expected: "upload or download",
            })
    }
}

named!(Direction, "direction", "upstream or downstream");

/// When the mobile link carries traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SteeringMode {
    /// Fixed line first; the mobile link takes only the overflow once the
    /// fixed line is full (BBF "least costly network first", ATSSS
    /// priority-based).
    #[default]
    Priority,
    /// Both links always (lowest round-trip time first).
    Aggregate,
    /// The mobile link only when the fixed line is down.
    ActiveStandby,
}

impl SteeringMode {
    /// Every mode, the default first.
    pub const ALL: [Self; 3] = [Self::Priority, Self::Aggregate, Self::ActiveStandby];

    /// The name in configurations, metric labels and the lab's CLI.
    pub fn name(self) -> &'static str {
        match self {
            Self::Priority => "priority",
            Self::Aggregate => "aggregate",
            Self::ActiveStandby => "active-standby",
        }
    }
}

named!(
    SteeringMode,
    "steering mode",
    "priority, aggregate or active-standby"
);

/// Where a home's fault is, as ops diagnoses it and the lab injects it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Location {
    /// In the home: the gateway, in-home wiring, a missing microfilter.
    Home,
    /// The home's copper pair between the house and the street cabinet.
    Line,
    /// Street equipment serving many lines: one job for all of them.
    Cabinet,
    /// The cell serving the home: mobile operations, no truck.
    Mobile,
    /// The HAG or upstream of it: the NOC, no truck.
    Core,
    /// Something the customer can fix (power off, cable unplugged).
    Customer,
    /// No fault found.
    None,
}

impl Location {
    /// Every location, in the order of the confusion matrix.
    pub const ALL: [Self; 7] = [
        Self::Home,
        Self::Line,
        Self::Cabinet,
        Self::Mobile,
        Self::Core,
        Self::Customer,
        Self::None,
    ];

    /// The name in the API, the lab's CLI and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Home => "home",
            Self::Line => "line",
            Self::Cabinet => "cabinet",
            Self::Mobile => "mobile",
            Self::Core => "core",
            Self::Customer => "customer",
            Self::None => "none",
        }
    }

    /// Whom to send for a fault here.
    pub fn dispatch(self) -> Dispatch {
        match self {
            Self::Home => Dispatch::HomeTechnician,
            Self::Line | Self::Cabinet => Dispatch::OutsidePlant,
            Self::Mobile | Self::Core | Self::Customer | Self::None => Dispatch::Nobody,
        }
    }
}

named!(
    Location,
    "fault location",
    "home, line, cabinet, mobile, core, customer or none"
);

/// Whom the operator sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dispatch {
    /// A technician into the home.
    HomeTechnician,
    /// An outside-plant technician (the street: pair, cabinet).
    OutsidePlant,
    /// No truck: the customer, mobile operations or the NOC handle it.
    Nobody,
}

impl Dispatch {
    /// Every choice.
    pub const ALL: [Self; 3] = [Self::HomeTechnician, Self::OutsidePlant, Self::Nobody];

    /// The name in the API and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::HomeTechnician => "home-technician",
            Self::OutsidePlant => "outside-plant",
            Self::Nobody => "nobody",
        }
    }

    /// Whether a truck goes out.
    pub fn is_truck(self) -> bool {
        self != Self::Nobody
    }
}

named!(
    Dispatch,
    "dispatch",
    "home-technician, outside-plant or nobody"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_typos_list_the_valid_names() {
        for l in Link::ALL {
            assert_eq!(l.name().parse::<Link>().unwrap(), l);
            assert_eq!(l.other().other(), l);
        }
        for d in Direction::ALL {
            assert_eq!(d.to_string().parse::<Direction>().unwrap(), d);
            assert_eq!(Direction::from_transfer_name(d.transfer_name()), Ok(d));
        }
        assert_eq!(Direction::Downstream.transfer_name(), "download");
        assert!(Direction::from_transfer_name("downstream").is_err());
        for m in SteeringMode::ALL {
            assert_eq!(m.name().parse::<SteeringMode>().unwrap(), m);
        }
        let e = "prority".parse::<SteeringMode>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown steering mode \"prority\" (expected priority, aggregate or active-standby)"
        );
        assert!("DSL".parse::<Link>().is_err(), "names are exact");
    }

    #[test]
    fn serde_uses_the_names() {
        #[derive(Deserialize, Serialize, Debug, PartialEq)]
        struct C {
            link: Link,
            mode: SteeringMode,
        }
        let c: C = toml::from_str("link = \"lte\"\nmode = \"active-standby\"").unwrap();
        assert_eq!(
            c,
            C {
                link: Link::Lte,
                mode: SteeringMode::ActiveStandby
            }
        );
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"link":"lte","mode":"active-standby"}"#
        );
        let e = toml::from_str::<C>("link = \"dsl\"\nmode = \"prority\"").unwrap_err();
        assert!(
            e.to_string().contains("expected priority, aggregate"),
            "{e}"
        );
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn per_link_is_indexed_by_link() {
        let mut p = PerLink::new(1, 2);
        p[Link::Lte] += 10;
        assert_eq!(p[Link::Dsl], 1);
        assert_eq!(p[Link::Lte], 12);
        assert_eq!(p.map(|l, v| (l, v * 2))[Link::Lte], (Link::Lte, 24));
        assert_eq!(p.links_where(|v| *v > 5), vec![Link::Lte]);
        assert_eq!(PerLink::from_fn(Link::is_fixed), PerLink::new(true, false));
    }
}
