//! Incidents change policy: while a `line` or `cabinet` incident is open or
//! dispatched, its homes run on the mobile link through no fault of their
//! own, so their mobile bytes are waived (counted apart, not charged); and
//! the operator grants extra mobile budget to a set of homes (a cabinet, a
//! cell, a list) for a while.
//!
//! [`Policies`] is what holds now, recomputed from the database after each
//! scan and after each change of a grant; ops answers every accepted
//! report with the sender's part ([`Policies::for_cpe`],
//! [`Policies::for_hag`]), signed with the sender's key. A [`GrantRequest`]
//! is the API's body for a new grant, checked against the inventory.

use std::collections::{BTreeMap, HashMap};

use hybrid::Location;
use serde::Deserialize;
use telemetry::policy::{HagPolicy, Policy, Waiver};

use crate::inventory::Inventory;
use crate::store::{Incident, Store};

/// How long a policy holds at its sender without a new one, seconds: a CPE
/// or HAG that stops hearing from ops drops a waiver or grant after this.
pub const VALID_S: u32 = 300;

/// The most extra bytes one grant gives (1 PB: a typo, not a grant).
pub const MAX_EXTRA_BYTES: u64 = 1 << 50;

/// The longest a grant may run, hours (a year and a day).
pub const MAX_HOURS: u32 = 8_784;

/// What holds now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policies {
    /// The homes whose mobile bytes are waived, with the incident why.
    pub waived: BTreeMap<String, Waiver>,
    /// The extra mobile bytes granted to each home, summed over its grants.
    pub extra: HashMap<String, u64>,
}

impl Policies {
    /// The policy in force from the active incidents and the grants that
    /// hold at `now_ms`.
    pub fn compute(
        active: &[Incident],
        store: &Store,
        now_ms: u64,
    ) -> Result<Self, crate::store::Error> {
        let mut p = Self::default();
        for inc in active {
            if !inc.state.is_active() || !matches!(inc.location, Location::Line | Location::Cabinet)
            {
                continue;
            }
            for h in &inc.homes {
                p.waived.entry(h.clone()).or_insert_with(|| Waiver {
                    incident: inc.id,
                    location: inc.location.name().into(),
                });
            }
        }
        for g in store.grants(Some(now_ms), 10_000)? {
            for h in &g.homes {
                let e = p.extra.entry(h.clone()).or_default();
                *e = e.saturating_add(g.extra_bytes);
            }
        }
        Ok(p)
    }

    /// A CPE's policy.
    pub fn for_cpe(&self, subscriber: &str, now_ms: u64) -> Policy {
        Policy {
            waiver: self.waived.get(subscriber).cloned(),
            extra_bytes: self.extra.get(subscriber).copied().unwrap_or(0),
            ..Policy::none(subscriber, now_ms, VALID_S)
        }
    }

    /// A HAG's policy: every waived home.
    pub fn for_hag(&self, hag: &str, now_ms: u64) -> HagPolicy {
        HagPolicy {
            schema: telemetry::SCHEMA,
            hag: hag.to_owned(),
            issued_ms: now_ms,
            valid_s: VALID_S,
            waived: self
                .waived
                .keys()
                .take(telemetry::policy::MAX_WAIVED)
                .cloned()
                .collect(),
        }
    }
}

/// `POST /api/v1/grants`: extra mobile budget for a cabinet's homes, a
/// cell's, or a list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// Every home on this cabinet.
    #[serde(default)]
    pub cabinet: Option<String>,
    /// Every home in this cell.
    #[serde(default)]
    pub cell: Option<String>,
    /// These homes.
    #[serde(default)]
    pub homes: Option<Vec<String>>,
    /// Extra bytes for each home, on top of its budget.
    pub extra_bytes: u64,
    /// For how long, hours.
    pub hours: u32,
    /// Why (shown with the grant).
    #[serde(default)]
    pub note: Option<String>,
}

/// A grant request that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The request is malformed (`400`).
    #[error("{0}")]
    Bad(String),
    /// It names a cabinet, cell or home the inventory does not have (`422`).
    #[error("{0}")]
    Unknown(String),
}

impl GrantRequest {
    /// Checks the request and resolves its homes: `(scope, homes)`.
    pub fn resolve(&self, inv: &Inventory) -> Result<(String, Vec<String>), GrantError> {
        let scopes = [
            self.cabinet.is_some(),
            self.cell.is_some(),
            self.homes.is_some(),
        ];
        if scopes.iter().filter(|&&x| x).count() != 1 {
            return Err(GrantError::Bad(
                "give exactly one of cabinet, cell or homes".into(),
            ));
        }
        if self.extra_bytes == 0 || self.extra_bytes > MAX_EXTRA_BYTES {
            return Err(GrantError::Bad(format!(
                "extra_bytes must be 1..={MAX_EXTRA_BYTES}"
            )));
        }
        if !(1..=MAX_HOURS).contains(&self.hours) {
            return Err(GrantError::Bad(format!("hours must be 1..={MAX_HOURS}")));
        }
        if self.note.as_ref().is_some_and(|n| n.len() > 1_000) {
            return Err(GrantError::Bad("note: at most 1000 bytes".into()));
        }
        let rows = inv.rows();
        let (scope, homes): (String, Vec<String>) = if let Some(c) = &self.cabinet {
            let homes: Vec<String> = rows
                .iter()
                .filter(|r| &r.cabinet == c)
                .map(|r| r.subscriber.clone())
                .collect();
            if homes.is_empty() {
                return Err(GrantError::Unknown(format!(
                    "no cabinet {c:?} in the inventory"
                )));
            }
            (format!("cabinet:{c}"), homes)
        } else if let Some(c) = &self.cell {
            let homes: Vec<String> = rows
                .iter()
                .filter(|r| &r.cell == c)
                .map(|r| r.subscriber.clone())
                .collect();
            if homes.is_empty() {
                return Err(GrantError::Unknown(format!(
                    "no cell {c:?} in the inventory"
                )));
            }
            (format!("cell:{c}"), homes)
        } else {
            let list = self.homes.as_deref().unwrap_or_default();
            if list.is_empty() || list.len() > inv.len() {
                return Err(GrantError::Bad(
                    "homes: one or more subscribers of the inventory".into(),
                ));
            }
            if let Some(h) = list.iter().find(|h| inv.index(h).is_none()) {
                return Err(GrantError::Unknown(format!(
                    "subscriber {h:?} is not in the inventory"
                )));
            }
            let mut homes = list.to_vec();
            homes.sort_unstable();
            homes.dedup();
            ("homes".into(), homes)
        };
        Ok((scope, homes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Row;

    fn inv() -> Inventory {
        Inventory::from_rows(
            (0..4)
                .map(|i| Row {
                    subscriber: format!("h{i}"),
                    cabinet: format!("cab{}", i / 2),
                    card: 0,
                    cell: "c1".into(),
                })
                .collect(),
        )
        .unwrap()
    }

    fn req(json: &str) -> Result<(String, Vec<String>), GrantError> {
        serde_json::from_str::<GrantRequest>(json)
            .map_err(|e| GrantError::Bad(e.to_string()))?
            .resolve(&inv())
    }

    #[test]
    fn a_grant_resolves_its_homes_and_refuses_what_is_not_there() {
        let (scope, homes) = req(r#"{"cabinet":"cab1","extra_bytes":5,"hours":24}"#).unwrap();
        assert_eq!(
            (scope.as_str(), homes),
            ("cabinet:cab1", vec!["h2".to_string(), "h3".into()])
        );
        let (_, homes) = req(r#"{"cell":"c1","extra_bytes":5,"hours":1}"#).unwrap();
        assert_eq!(homes.len(), 4);
        let (_, homes) = req(r#"{"homes":["h3","h1","h3"],"extra_bytes":5,"hours":1}"#).unwrap();
        assert_eq!(homes, ["h1", "h3"]);
        for (bad, unknown) in [
            (r#"{"cabinet":"cab9","extra_bytes":5,"hours":1}"#, true),
            (r#"{"homes":["h1","zz"],"extra_bytes":5,"hours":1}"#, true),
            (
                r#"{"cell":"c1","cabinet":"cab1","extra_bytes":5,"hours":1}"#,
                false,
            ),
            (r#"{"extra_bytes":5,"hours":1}"#, false),
            (r#"{"cell":"c1","extra_bytes":0,"hours":1}"#, false),
            (r#"{"cell":"c1","extra_bytes":5,"hours":0}"#, false),
            (r#"{"cell":"c1","extra_bytes":5,"hours":100000}"#, false),
            (r#"{"homes":[],"extra_bytes":5,"hours":1}"#, false),
            (r#"{"cell":"c1","extra_bytes":5,"hours":1,"x":1}"#, false),
        ] {
            match req(bad) {
                Err(GrantError::Unknown(_)) if unknown => {}
                Err(GrantError::Bad(_)) if !unknown => {}
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
