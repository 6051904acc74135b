//! Summary statistics of raw samples, within one run ([`summarize`]) and between repeated runs
//! ([`between_runs`]). Pure functions, no IO.
//!
//! The gate statistics are robust: the median, the MAD-based CV (`1.4826 · MAD / median`, the CV
//! of a normal sample, but blind to the odd outlier a busy machine produces) and a
//! distribution-free confidence interval of the median.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub mean: f64,
    /// Sample standard deviation (n - 1).
    pub std: f64,
    /// Coefficient of variation, `std / mean` (0 when n < 2).
    pub cv: f64,
    pub min: f64,
    pub max: f64,
    /// 95 % confidence interval of the mean (normal approximation).
    pub ci95_low: f64,
    pub ci95_high: f64,
    /// Median absolute deviation from the median (absent in results written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mad: Option<f64>,
    /// Robust coefficient of variation, `1.4826 · MAD / |median|`: what `check` gates on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub robust_cv: Option<f64>,
    /// Distribution-free 95 % confidence interval of the median (order statistics; `[min, max]`
    /// when there are too few samples for one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median_ci95: Option<[f64; 2]>,
}

impl Summary {
    /// The robust CV, or the plain one for results written before it existed.
    pub fn noise(&self) -> f64 {
        self.robust_cv.unwrap_or(self.cv)
    }
}

/// The spread of one metric between repeated runs of the same plan: computed from each run's
/// median.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spread {
    pub runs: usize,
    /// Median of the run medians.
    pub median: f64,
    /// Mean of the run medians.
    pub mean: f64,
    /// Coefficient of variation of the run medians (sample std / mean): the "variance across
    /// test runs".
    pub cv: f64,
    /// 95 % confidence interval of the mean of the run medians (Student's t).
    pub ci95_low: f64,
    pub ci95_high: f64,
}

/// The 0.975 quantile of Student's t with `df` degrees of freedom (1.96 from 30 on).
pub fn t975(df: usize) -> f64 {
    const T: [f64; 29] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045,
    ];
    match df {
        0 => f64::INFINITY,
        d if d <= T.len() => T[d - 1],
        _ => 1.96,
    }
}

/// The 0.995 quantile of Student's t with `df` degrees of freedom (2.576 from 30 on).
pub fn t995(df: usize) -> f64 {
    const T: [f64; 29] = [
        63.657, 9.925, 5.841, 4.604, 4.032, 3.707, 3.499, 3.355, 3.250, 3.169, 3.106, 3.055, 3.012,
        2.977, 2.947, 2.921, 2.898, 2.878, 2.861, 2.845, 2.831, 2.819, 2.807, 2.797, 2.787, 2.779,
        2.771, 2.763, 2.756,
    ];
    match df {
        0 => f64::INFINITY,
        d if d <= T.len() => T[d - 1],
        _ => 2.576,
    }
}

/// Between-run spread of `run_medians` (one per run); `None` with fewer than two runs.
pub fn between_runs(run_medians: &[f64]) -> Option<Spread> {
    let mut v: Vec<f64> = run_medians
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    if v.len() < 2 {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let mean = v.iter().sum::<f64>() / n as f64;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    let half = t975(n - 1) * std / (n as f64).sqrt();
    Some(Spread {
        runs: n,
        median: percentile(&v, 0.5),
        mean,
        cv: if mean != 0.0 { std / mean.abs() } else { 0.0 },
        ci95_low: mean - half,
        ci95_high: mean + half,
    })
}

/// The distribution-free 95 % interval of the median of `sorted`: the order statistics at
/// `n/2 ∓ 1.96·√n/2` (normal approximation of the binomial), `[min, max]` for small `n`.
pub fn median_ci95(sorted: &[f64]) -> [f64; 2] {
    let n = sorted.len() as f64;
    let half = 1.96 * n.sqrt() / 2.0;
    let lo = ((n / 2.0 - half).floor() as usize).clamp(1, sorted.len());
    let hi = ((n / 2.0 + half).ceil() as usize).clamp(1, sorted.len());
    [sorted[lo - 1], sorted[hi - 1]]
}

/// Percentile with linear interpolation between closest ranks (numpy's default), `q` in [0, 1].
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    assert!(!sorted.is_empty(), "percentile of no samples");
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Summarises finite samples; `None` when there are none.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let mean = v.iter().sum::<f64>() / n as f64;
    let std = if n > 1 {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    let half = 1.96 * std / (n as f64).sqrt();
    let median = percentile(&v, 0.5);
    let mut dev: Vec<f64> = v.iter().map(|x| (x - median).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let mad = percentile(&dev, 0.5);
    Some(Summary {
        n,
        median,
        p90: percentile(&v, 0.9),
        p99: percentile(&v, 0.99),
        mean,
        std,
        cv: if mean != 0.0 { std / mean.abs() } else { 0.0 },
        min: v[0],
        max: v[n - 1],
        ci95_low: mean - half,
        ci95_high: mean + half,
        mad: Some(mad),
        robust_cv: Some(if median != 0.0 {
            1.4826 * mad / median.abs()
        } else {
            0.0
        }),
        median_ci95: Some(median_ci95(&v)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 2.5);
        assert!((percentile(&v, 0.9) - 3.7).abs() < 1e-12);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 1.0), 4.0);
    }

    #[test]
    fn summary_of_known_samples() {
        let s = summarize(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(s.n, 8);
        assert_eq!(s.median, 4.5);
        assert_eq!(s.mean, 5.0);
        // sample std of this classic set: sqrt(32 / 7)
        assert!((s.std - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert!((s.cv - s.std / 5.0).abs() < 1e-12);
        assert_eq!((s.min, s.max), (2.0, 9.0));
        assert!(s.ci95_low < s.mean && s.mean < s.ci95_high);
    }

    #[test]
    fn non_finite_samples_are_dropped_and_empty_is_none() {
        assert!(summarize(&[]).is_none());
        assert!(summarize(&[f64::NAN]).is_none());
        let s = summarize(&[1.0, f64::INFINITY, 3.0]).unwrap();
        assert_eq!((s.n, s.median, s.cv > 0.0), (2, 2.0, true));
        assert_eq!(summarize(&[3.0]).unwrap().cv, 0.0);
    }

    #[test]
    fn robust_statistics_ignore_an_outlier() {
        // Nine samples near 100 and one 10x outlier: the plain CV explodes, the robust one not.
        let mut v: Vec<f64> = (0..9).map(|i| 99.0 + i as f64 * 0.25).collect();
        v.push(1000.0);
        let s = summarize(&v).unwrap();
        assert!(s.cv > 1.0, "{}", s.cv);
        assert_eq!(s.median, 100.125);
        assert_eq!(s.mad, Some(0.625));
        assert!((s.robust_cv.unwrap() - 1.4826 * 0.625 / 100.125).abs() < 1e-12);
        assert_eq!(s.noise(), s.robust_cv.unwrap());
        // n = 10: ranks 1 and 9 of the sorted samples.
        assert_eq!(s.median_ci95, Some([99.0, 101.0]));
        // 100 samples 1..=100: ranks 40 and 60.
        let h: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(median_ci95(&h), [40.0, 60.0]);
        assert_eq!(median_ci95(&[3.0]), [3.0, 3.0]);
    }

    #[test]
    fn between_run_spread_uses_student_t() {
        assert!(between_runs(&[5.0]).is_none());
        let s = between_runs(&[100.0, 104.0, 96.0]).unwrap();
        assert_eq!((s.runs, s.median, s.mean), (3, 100.0, 100.0));
        // std 4, CV 4 %, half-width t(2) * 4 / sqrt(3)
        assert!((s.cv - 0.04).abs() < 1e-12);
        let half = 4.303 * 4.0 / 3f64.sqrt();
        assert!((s.ci95_high - 100.0 - half).abs() < 1e-9);
        assert!((s.ci95_low - 100.0 + half).abs() < 1e-9);
        assert_eq!(t975(1), 12.706);
        assert_eq!(t975(200), 1.96);
    }
}
