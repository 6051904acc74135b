//! Summary statistics of raw samples. Pure functions, no IO.

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
    Some(Summary {
        n,
        median: percentile(&v, 0.5),
        p90: percentile(&v, 0.9),
        p99: percentile(&v, 0.99),
        mean,
        std,
        cv: if mean != 0.0 { std / mean.abs() } else { 0.0 },
        min: v[0],
        max: v[n - 1],
        ci95_low: mean - half,
        ci95_high: mean + half,
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
}
