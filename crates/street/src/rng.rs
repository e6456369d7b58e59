//! Sampling helpers on top of `rand` (Poisson counts, normal noise).

use rand::{Rng, RngExt};

/// A normal sample (Box-Muller).
pub(crate) fn normal(r: &mut impl Rng, mean: f64, sd: f64) -> f64 {
    let u1: f64 = r.random::<f64>().max(1e-12);
    let u2: f64 = r.random();
    mean + sd * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A Poisson count of mean `lambda` (Knuth below 30, normal above).
pub(crate) fn poisson(r: &mut impl Rng, lambda: f64) -> u64 {
    if lambda.is_nan() || lambda <= 0.0 {
        return 0;
    }
    if lambda > 30.0 {
        return normal(r, lambda, lambda.sqrt()).round().max(0.0) as u64;
    }
    let l = (-lambda).exp();
    let mut k = 0u64;
    let mut p = 1.0;
    loop {
        p *= r.random::<f64>();
        if p <= l {
            return k;
        }
        k += 1;
    }
}

/// True with probability `p`.
pub(crate) fn chance(r: &mut impl Rng, p: f64) -> bool {
    r.random::<f64>() < p
}

/// Uniform in `lo..hi`.
pub(crate) fn uniform(r: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * r.random::<f64>()
}
