//! The blocking policy: the lists in force and the decision for a name.
//!
//! Allowlists are consulted first and win (PASSTHRU). Then the block lists,
//! in configuration order, then the lists built from confirmed citizen
//! reports; the first list with a match decides, with its entry's action
//! (an RPZ `rpz-passthru.` entry lets the name through). The whole set of
//! lists is one immutable [`Snapshot`] behind an `Arc`: a reload builds a new
//! snapshot off the query path and swaps the pointer, so a query sees
//! either the old lists or the new ones, never a mix, and never waits for a
//! load.

use std::sync::{Arc, RwLock};

use serde::Deserialize;

use crate::config::EdeKind;
use crate::names::NameSet;

/// What a listed name gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Action {
    /// A/AAAA of the warning page; NODATA for other types.
    Redirect = 0,
    /// NXDOMAIN.
    Nxdomain = 1,
    /// NOERROR with no records.
    Nodata = 2,
    /// No answer at all.
    Drop = 3,
    /// Let it through (allowlist; RPZ `rpz-passthru.`).
    Passthru = 4,
}

impl Action {
    /// The action with this code (the `repr(u8)` value).
    pub fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => Self::Redirect,
            1 => Self::Nxdomain,
            2 => Self::Nodata,
            3 => Self::Drop,
            4 => Self::Passthru,
            _ => return None,
        })
    }

    /// Lowercase name, as in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redirect => "redirect",
            Self::Nxdomain => "nxdomain",
            Self::Nodata => "nodata",
            Self::Drop => "drop",
            Self::Passthru => "passthru",
        }
    }
}

/// One list in force.
#[derive(Clone, Debug)]
pub struct List {
    /// Its name (EDE text, metrics label).
    pub name: Arc<str>,
    /// An allowlist?
    pub allow: bool,
    /// EDE code on blocked answers.
    pub ede: EdeKind,
    /// The entries.
    pub set: Arc<NameSet>,
    /// Has it been loaded at least once?
    pub loaded: bool,
}

/// All lists at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Allowlists first, then block lists in order.
    pub lists: Vec<List>,
}

/// The decision for one name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No list names it, or an allowlist / passthru entry does.
    Pass,
    /// Blocked by list `list` (index into the snapshot) with `action`.
    Block {
        /// What to answer.
        action: Action,
        /// Index of the deciding list.
        list: usize,
    },
}

impl Snapshot {
    /// The decision for `name` (lowercase, no final dot).
    pub fn decide(&self, name: &str) -> Decision {
        for (i, l) in self.lists.iter().enumerate() {
            match l.set.lookup(name) {
                None => continue,
                Some(_) if l.allow => return Decision::Pass,
                Some((Action::Passthru, _)) => return Decision::Pass,
                Some((action, _)) => return Decision::Block { action, list: i },
            }
        }
        Decision::Pass
    }
}

/// The lists in force, swapped atomically.
#[derive(Debug, Default)]
pub struct Policy {
    current: RwLock<Arc<Snapshot>>,
}

impl Policy {
    /// A policy with these lists (all empty, not yet loaded).
    pub fn new(lists: Vec<(Arc<str>, bool, EdeKind)>) -> Self {
        let mut lists: Vec<List> = lists
            .into_iter()
            .map(|(name, allow, ede)| List {
                name,
                allow,
                ede,
                set: Arc::new(NameSet::default()),
                loaded: false,
            })
            .collect();
        lists.sort_by_key(|l| !l.allow);
        Self {
            current: RwLock::new(Arc::new(Snapshot { lists })),
        }
    }

    /// The lists in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swaps in a new set for the list `name`. Returns false if there is no
    /// such list.
    pub fn replace(&self, name: &str, set: Arc<NameSet>) -> bool {
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        let mut next = Snapshot::clone(&cur);
        let Some(l) = next.lists.iter_mut().find(|l| &*l.name == name) else {
            return false;
        };
        l.set = set;
        l.loaded = true;
        *cur = Arc::new(next);
        true
    }

    /// The current set of the list `name`.
    pub fn set_of(&self, name: &str) -> Option<Arc<NameSet>> {
        self.snapshot()
            .lists
            .iter()
            .find(|l| &*l.name == name)
            .map(|l| l.set.clone())
    }

    /// Have all lists been loaded once?
    pub fn all_loaded(&self) -> bool {
        self.snapshot().lists.iter().all(|l| l.loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{Builder, Meta};

    fn set(names: &[(&str, Meta)]) -> Arc<NameSet> {
        let mut b = Builder::default();
        for (n, m) in names {
            b.push(n.as_bytes(), *m);
        }
        Arc::new(b.finish())
    }

    #[test]
    fn allowlist_wins_and_first_block_list_decides() {
        let p = Policy::new(vec![
            ("feed".into(), false, EdeKind::Blocked),
            ("second".into(), false, EdeKind::Filtered),
            ("allow".into(), true, EdeKind::Blocked),
        ]);
        let all = Meta {
            exact: Some(Action::Redirect),
            subtree: Some(Action::Redirect),
        };
        p.replace("feed", set(&[("evil.example", all)]));
        p.replace(
            "second",
            set(&[
                (
                    "evil.example",
                    Meta {
                        exact: Some(Action::Drop),
                        subtree: None,
                    },
                ),
                (
                    "other.example",
                    Meta {
                        exact: Some(Action::Nxdomain),
                        subtree: None,
                    },
                ),
            ]),
        );
        p.replace("allow", set(&[("good.evil.example", all)]));
        let s = p.snapshot();
        assert_eq!(s.lists[0].name.as_ref(), "allow");
        assert_eq!(
            s.decide("www.evil.example"),
            Decision::Block {
                action: Action::Redirect,
                list: 1
            }
        );
        assert_eq!(s.decide("good.evil.example"), Decision::Pass);
        assert_eq!(s.decide("x.good.evil.example"), Decision::Pass);
        assert_eq!(
            s.decide("other.example"),
            Decision::Block {
                action: Action::Nxdomain,
                list: 2
            }
        );
        assert_eq!(s.decide("example"), Decision::Pass);
        assert!(p.all_loaded());
    }
}
