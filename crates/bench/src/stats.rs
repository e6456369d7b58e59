//! Summaries: the median of the runs with their minimum and maximum, and
//! percentiles of a sample.

use serde::{Deserialize, Serialize};

/// One figure over several runs: median, min, max and every run's value
/// (in run order), so a reader can recompute anything.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Median of the runs.
    pub median: f64,
    /// Smallest run.
    pub min: f64,
    /// Largest run.
    pub max: f64,
    /// Every run's value.
    pub runs: Vec<f64>,
    /// Runs that produced no value (failed measurements), left out of the
    /// figure and said next to it.
    #[serde(default)]
    pub failed: usize,
}

impl Summary {
    /// Summarises finite values; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Self> {
        let runs: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if runs.is_empty() {
            return None;
        }
        let mut sorted = runs.clone();
        sorted.sort_by(f64::total_cmp);
        Some(Self {
            median: median_sorted(&sorted),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            failed: values.len() - runs.len(),
            runs,
        })
    }

    /// "12.3 (11.9–12.8)" with `digits` decimals, and "[2 of 3 runs]" when
    /// some runs failed.
    pub fn show(&self, digits: usize) -> String {
        let figure = if self.runs.len() == 1 {
            format!("{:.*}", digits, self.median)
        } else {
            format!(
                "{:.*} ({:.*}–{:.*})",
                digits, self.median, digits, self.min, digits, self.max
            )
        };
        if self.failed == 0 {
            return figure;
        }
        format!(
            "{figure} [{} of {} runs]",
            self.runs.len(),
            self.runs.len() + self.failed
        )
    }
}

fn median_sorted(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Median of a sample (NaN when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    median_sorted(&v)
}

/// The `p`-th percentile (0–100) by the nearest-rank method: the smallest
/// value with at least p % of the sample at or below it (NaN when empty).
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_runs() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(s.runs, vec![3.0, 1.0, 2.0]);
        assert_eq!(Summary::of(&[1.0, 4.0]).unwrap().median, 2.5);
        assert!(Summary::of(&[f64::NAN]).is_none());
        assert_eq!(s.show(1), "2.0 (1.0–3.0)");
        let partial = Summary::of(&[3.0, f64::NAN, 1.0]).unwrap();
        assert_eq!(partial.failed, 1);
        assert_eq!(partial.show(1), "2.0 (1.0–3.0) [2 of 3 runs]");
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&[5.0], 99.0), 5.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 99.0), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
        assert_eq!(median(&[4.0, 1.0, 3.0]), 3.0);
    }
}
