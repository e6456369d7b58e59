//! The operator's inventory: which street cabinet, line card and cell serve
//! each home. Imported from CSV (`subscriber,cabinet,card,cell`, with that
//! header), the form inventory systems export.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The largest inventory accepted.
pub const MAX_HOMES: usize = 1_000_000;

/// An inventory that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CSV is malformed (with its line).
    #[error("inventory line {line}: {msg}")]
    Row {
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        msg: String,
    },
    /// A subscriber listed twice.
    #[error("inventory line {line}: subscriber {name:?} is listed twice")]
    Duplicate {
        /// 1-based line number.
        line: u64,
        /// The subscriber.
        name: String,
    },
    /// More homes than [`MAX_HOMES`].
    #[error("inventory has more than {MAX_HOMES} homes")]
    TooLarge,
}

/// One home's row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// The registry's name.
    pub subscriber: String,
    /// Street cabinet.
    pub cabinet: String,
    /// Line card within the cabinet.
    pub card: u32,
    /// Cell.
    pub cell: String,
}

/// Homes indexed by subscriber, cabinet, card and cell.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    rows: Vec<Row>,
    by_name: HashMap<String, usize>,
    cabinet_of: Vec<u32>,
    cell_of: Vec<u32>,
    cabinet_homes: Vec<Vec<usize>>,
    cell_homes: Vec<Vec<usize>>,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= telemetry::MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

impl Inventory {
    /// Builds the index from rows.
    pub fn from_rows(rows: Vec<Row>) -> Result<Self, Error> {
        if rows.len() > MAX_HOMES {
            return Err(Error::TooLarge);
        }
        let mut inv = Self::default();
        let mut cab_ix: HashMap<String, u32> = HashMap::new();
        let mut cell_ix: HashMap<String, u32> = HashMap::new();
        for (i, r) in rows.into_iter().enumerate() {
            let line = i as u64 + 2;
            for (what, v) in [
                ("subscriber", &r.subscriber),
                ("cabinet", &r.cabinet),
                ("cell", &r.cell),
            ] {
                if !valid_name(v) {
                    return Err(Error::Row {
                        line,
                        msg: format!("{what} {v:?} is not a name (1 to 64 of A-Z a-z 0-9 - _ . :)"),
                    });
                }
            }
            if inv.by_name.contains_key(&r.subscriber) {
                return Err(Error::Duplicate {
                    line,
                    name: r.subscriber,
                });
            }
            let n = inv.rows.len();
            let c = *cab_ix.entry(r.cabinet.clone()).or_insert_with(|| {
                inv.cabinet_homes.push(Vec::new());
                (inv.cabinet_homes.len() - 1) as u32
            });
            let x = *cell_ix.entry(r.cell.clone()).or_insert_with(|| {
                inv.cell_homes.push(Vec::new());
                (inv.cell_homes.len() - 1) as u32
            });
            inv.cabinet_homes[c as usize].push(n);
            inv.cell_homes[x as usize].push(n);
            inv.cabinet_of.push(c);
            inv.cell_of.push(x);
            inv.by_name.insert(r.subscriber.clone(), n);
            inv.rows.push(r);
        }
        Ok(inv)
    }

    /// Parses the CSV export.
    pub fn from_csv(text: &str) -> Result<Self, Error> {
        let mut rd = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let mut rows = Vec::new();
        for r in rd.deserialize::<Row>() {
            let row = r.map_err(|e| Error::Row {
                line: e.position().map_or(0, |p| p.line()),
                msg: e.to_string(),
            })?;
            rows.push(row);
            if rows.len() > MAX_HOMES {
                return Err(Error::TooLarge);
            }
        }
        Self::from_rows(rows)
    }

    /// The homes, in import order.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// Number of homes.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no homes.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The index of a subscriber.
    pub fn index(&self, subscriber: &str) -> Option<usize> {
        self.by_name.get(subscriber).copied()
    }

    /// The row of home `i`.
    pub fn row(&self, i: usize) -> &Row {
        &self.rows[i]
    }

    /// The homes on home `i`'s cabinet (itself included).
    pub fn cabinet_homes(&self, i: usize) -> &[usize] {
        &self.cabinet_homes[self.cabinet_of[i] as usize]
    }

    /// The homes in home `i`'s cell (itself included).
    pub fn cell_homes(&self, i: usize) -> &[usize] {
        &self.cell_homes[self.cell_of[i] as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_imports_and_indexes() {
        let inv = Inventory::from_csv(
            "subscriber,cabinet,card,cell\nhome-1,cab-1,0,cell-1\nhome-2, cab-1 ,1,cell-2\nhome-3,cab-2,0,cell-1\n",
        )
        .unwrap();
        assert_eq!(inv.len(), 3);
        let h2 = inv.index("home-2").unwrap();
        assert_eq!(inv.cabinet_homes(h2).len(), 2);
        assert_eq!(inv.cell_homes(h2).len(), 1);
        assert_eq!(inv.cell_homes(inv.index("home-3").unwrap()).len(), 2);
    }

    #[test]
    fn bad_csv_names_the_line() {
        let e = Inventory::from_csv("subscriber,cabinet,card,cell\nh1,c1,x,cell\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = Inventory::from_csv("subscriber,cabinet,card,cell\nh1,c1,0,a\nh1,c1,0,a\n")
            .unwrap_err();
        assert!(matches!(e, Error::Duplicate { line: 3, .. }), "{e}");
        let e = Inventory::from_csv("subscriber,cabinet,card,cell\nh 1,c1,0,a\n").unwrap_err();
        assert!(e.to_string().contains("not a name"), "{e}");
        assert!(Inventory::from_csv("nonsense").unwrap().is_empty());
    }
}
