//! Ratios of two measured medians with their uncertainty, and the one definition of "speed-up vs
//! the PyTorch baseline" that charts, the HTML report, claims and `compare` share.

use crate::metric::Metric;
use crate::results::TargetResult;
use crate::stats::Summary;
use crate::ScenarioId;

/// The 95 % interval of a median: the distribution-free interval where there is one, else the
/// interval of the mean (a few samples), else the point itself.
pub fn interval(s: &Summary) -> (f64, f64) {
    match s.median_ci95 {
        Some([lo, hi]) => (lo, hi),
        None if s.n > 1 => (s.ci95_low, s.ci95_high),
        None => (s.median, s.median),
    }
}

/// `a / b` of two medians; `low`/`high` divide the intervals' opposite ends (a conservative
/// interval of the quotient: it excludes 1 only when the two intervals separate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratio {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

impl Ratio {
    pub fn of(a: &Summary, b: &Summary) -> Option<Ratio> {
        let (alo, ahi) = interval(a);
        let (blo, bhi) = interval(b);
        if !(b.median > 0.0 && blo > 0.0 && a.median.is_finite()) {
            return None;
        }
        Some(Ratio {
            value: a.median / b.median,
            low: alo / bhi,
            high: ahi / blo,
        })
    }

    /// `1.83× [1.71, 1.95]`.
    pub fn text(&self) -> String {
        format!("{:.2}× [{:.2}, {:.2}]", self.value, self.low, self.high)
    }
}

/// The engine part of a target name (`candle` of `candle:gguf-q4_1`).
pub fn engine_of(target: &str) -> &str {
    target.split(':').next().unwrap_or(target)
}

/// The S1 summary of `metric` at `prompt` in a target's first run.
pub fn s1_summary<'a>(r: &'a TargetResult, prompt: &str, metric: Metric) -> Option<&'a Summary> {
    r.stats
        .iter()
        .find(|s| s.id == ScenarioId::S1)?
        .prompts
        .iter()
        .find(|p| p.prompt == prompt)?
        .get(metric)
}

/// The S1 prompts of a target (name, prompt tokens).
pub fn s1_prompts(r: &TargetResult) -> Vec<(String, u32)> {
    r.stats
        .iter()
        .filter(|s| s.id == ScenarioId::S1)
        .flat_map(|s| {
            s.prompts
                .iter()
                .map(|p| (p.prompt.clone(), p.prompt_tokens))
        })
        .collect()
}

/// A target's S1 `metric` relative to another's, at the longest S1 prompt both measured.
pub fn s1_ratio(a: &TargetResult, b: &TargetResult, metric: Metric) -> Option<(String, Ratio)> {
    let theirs = s1_prompts(b);
    let (prompt, _) = s1_prompts(a)
        .into_iter()
        .filter(|(p, _)| theirs.iter().any(|(q, _)| q == p))
        .max_by_key(|(_, n)| *n)?;
    let r = Ratio::of(
        s1_summary(a, &prompt, metric)?,
        s1_summary(b, &prompt, metric)?,
    )?;
    Some((prompt, r))
}

/// The PyTorch baseline of a run: of its PyTorch targets, the one with the highest S1 decode
/// tok/s at its longest prompt (the strongest baseline, so speed-ups are never inflated by a
/// slow dtype choice).
pub fn pytorch_baseline(results: &[TargetResult]) -> Option<&TargetResult> {
    let decode = |r: &TargetResult| {
        let (p, _) = s1_prompts(r).into_iter().max_by_key(|(_, n)| *n)?;
        s1_summary(r, &p, Metric::DecodeTokPerS).map(|s| s.median)
    };
    results
        .iter()
        .filter(|r| r.run() == 1 && engine_of(&r.target) == "pytorch")
        .filter_map(|r| Some((r, decode(r)?)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(r, _)| r)
}

/// One target's speed-up: (target, prompt it was taken at, ratio).
pub type Speedup = (String, String, Ratio);

/// Every other target's S1 decode tok/s relative to the PyTorch baseline (named first), in
/// result order.
pub fn speedups(results: &[TargetResult]) -> Option<(String, Vec<Speedup>)> {
    let base = pytorch_baseline(results)?;
    let rows = results
        .iter()
        .filter(|r| r.run() == 1 && r.target != base.target)
        .filter_map(|r| {
            let (p, ratio) = s1_ratio(r, base, Metric::DecodeTokPerS)?;
            Some((r.target.clone(), p, ratio))
        })
        .collect();
    Some((base.target.clone(), rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(median: f64, lo: f64, hi: f64) -> Summary {
        Summary {
            n: 10,
            median,
            p90: median,
            p99: median,
            mean: median,
            std: 0.0,
            cv: 0.0,
            min: lo,
            max: hi,
            ci95_low: lo,
            ci95_high: hi,
            mad: None,
            robust_cv: None,
            median_ci95: Some([lo, hi]),
        }
    }

    #[test]
    fn a_ratio_divides_opposite_ends() {
        let r = Ratio::of(&summary(20.0, 19.0, 21.0), &summary(10.0, 9.0, 11.0)).unwrap();
        assert_eq!(r.value, 2.0);
        assert!((r.low - 19.0 / 11.0).abs() < 1e-12);
        assert!((r.high - 21.0 / 9.0).abs() < 1e-12);
        assert_eq!(r.text(), "2.00× [1.73, 2.33]");
        assert!(Ratio::of(&summary(1.0, 1.0, 1.0), &summary(0.0, 0.0, 0.0)).is_none());
    }

    #[test]
    fn engine_names() {
        assert_eq!(engine_of("candle:gguf-q4_1"), "candle");
        assert_eq!(engine_of("mock"), "mock");
    }
}
