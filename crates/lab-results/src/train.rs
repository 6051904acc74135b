//! The LoRA training-step analysis (`--analysis lora`): its settings, and what a run measured
//! ([`rows`]). The step's definitions (adapters, loss, optimizer, phases) live once in
//! [`lab_protocol::train`].
//!
//! Per target: the median of each phase over the measured steps (forward, backward, optimizer)
//! and of the whole step, each phase's share of the step, training tokens/s (the sequence's
//! predicted positions ÷ the median step), the scenario's peak RSS, the first and last loss;
//! then agreement across frameworks: the first step's loss (the base model's: `B` starts at
//! zero) as a relative difference from the median of the frameworks, and the first step's
//! adapter gradients as the largest relative difference of their checksums.

use lab_protocol::micro::OpChecksum;
use lab_protocol::train::TrainReport;

use crate::results::TargetResult;
use crate::stats::{summarize, Summary};

/// The scenario id of the LoRA step.
pub const SCENARIO: &str = crate::ScenarioId::Lora.as_str();

pub use crate::settings::LoraSettings;

/// Relative tolerance of the first step's loss across frameworks (f32 forward passes of the
/// same weights; summation orders differ).
pub const LOSS_TOLERANCE: f64 = 1e-4;
/// Relative tolerance of the first step's adapter gradients (checksums) across frameworks.
pub const GRAD_TOLERANCE: f64 = 2e-3;

/// One target's LoRA step.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainRow {
    pub target: String,
    /// Per measured step, ms.
    pub forward_ms: Summary,
    pub backward_ms: Summary,
    pub optimizer_ms: Summary,
    pub step_ms: Summary,
    pub tokens_per_s: f64,
    pub peak_rss_bytes: Option<u64>,
    pub trainable_params: u64,
    pub first_loss: f64,
    pub last_loss: f64,
    /// `|first_loss − median of every target's first loss| ÷ that median`.
    pub loss_rel_diff: Option<f64>,
    /// The largest relative difference of a first-step gradient checksum (sum and summed
    /// magnitude, relative to the magnitude) from the first target's; `None` for the first.
    pub grad_rel_diff: Option<f64>,
    pub how: String,
}

/// Why a target has no row: unsupported or failed, in words.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainMissing {
    pub target: String,
    pub why: String,
}

fn train_of(r: &TargetResult) -> Option<Result<&TrainReport, String>> {
    let s = r.report.scenarios.iter().find(|s| s.id == SCENARIO)?;
    Some(match (&s.train, &s.unsupported, &s.error) {
        (_, Some(why), _) => Err(format!("cannot: {why}")),
        (Some(t), None, None) => Ok(t),
        (_, None, Some(e)) => Err(format!("failed: {e}")),
        (None, None, None) => Err("failed: no training report".into()),
    })
}

/// The largest relative difference between two sets of gradient checksums; infinite when the
/// sets do not match (another count, another adapter, another shape) or either is empty: an
/// engine that reports no gradients has not agreed with anything.
fn grad_diff(a: &[(String, OpChecksum)], b: &[(String, OpChecksum)]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return f64::INFINITY;
    }
    let mut worst: f64 = 0.0;
    for ((na, x), (nb, y)) in a.iter().zip(b) {
        if na != nb || x.elements != y.elements {
            return f64::INFINITY;
        }
        let scale = x.sum_abs.max(y.sum_abs);
        if scale == 0.0 {
            continue;
        }
        worst = worst
            .max((x.sum_abs - y.sum_abs).abs() / scale)
            .max((x.sum - y.sum).abs() / scale);
    }
    worst
}

/// The LoRA table of a run (first run of each target), and the targets that could not.
pub fn rows(results: &[TargetResult]) -> (Vec<TrainRow>, Vec<TrainMissing>) {
    let mut rows = Vec::new();
    let mut missing = Vec::new();
    let mut grads0: Option<Vec<(String, OpChecksum)>> = None;
    for r in results.iter().filter(|r| r.run() == 1) {
        let t = match train_of(r) {
            None => continue,
            Some(Err(why)) => {
                missing.push(TrainMissing {
                    target: r.target.clone(),
                    why,
                });
                continue;
            }
            Some(Ok(t)) => t,
        };
        let measured: Vec<_> = t.steps.iter().filter(|s| !s.warmup).collect();
        let ms = |f: fn(&lab_protocol::train::TrainStep) -> u64| {
            summarize(
                &measured
                    .iter()
                    .map(|s| f(s) as f64 / 1e6)
                    .collect::<Vec<_>>(),
            )
        };
        let (Some(forward_ms), Some(backward_ms), Some(optimizer_ms), Some(step_ms)) = (
            ms(|s| s.forward_ns),
            ms(|s| s.backward_ns),
            ms(|s| s.optimizer_ns),
            ms(|s| {
                s.forward_ns
                    .saturating_add(s.backward_ns)
                    .saturating_add(s.optimizer_ns)
            }),
        ) else {
            missing.push(TrainMissing {
                target: r.target.clone(),
                why: "failed: no measured step".into(),
            });
            continue;
        };
        let mut grads: Vec<(String, OpChecksum)> = t
            .first_grads
            .iter()
            .map(|g| {
                (
                    format!("{:05}.{}.{}", g.layer, g.target, g.matrix),
                    g.checksum.clone(),
                )
            })
            .collect();
        grads.sort_by(|a, b| a.0.cmp(&b.0));
        let grad_rel_diff = match &grads0 {
            None => {
                grads0 = Some(grads.clone());
                None
            }
            Some(g0) => Some(grad_diff(g0, &grads)),
        };
        rows.push(TrainRow {
            target: r.target.clone(),
            tokens_per_s: t.positions as f64 / (step_ms.median / 1e3),
            forward_ms,
            backward_ms,
            optimizer_ms,
            step_ms,
            peak_rss_bytes: t.peak_rss_bytes,
            trainable_params: t.trainable_params,
            first_loss: t.steps.first().map_or(f64::NAN, |s| s.loss),
            last_loss: t.steps.last().map_or(f64::NAN, |s| s.loss),
            loss_rel_diff: None,
            grad_rel_diff,
            how: t.how.clone(),
        });
    }
    let mut firsts: Vec<f64> = rows.iter().map(|r| r.first_loss).collect();
    firsts.sort_by(f64::total_cmp);
    if let Some(&mid) = firsts.get(firsts.len() / 2) {
        if rows.len() > 1 {
            for r in &mut rows {
                r.loss_rel_diff = Some((r.first_loss - mid).abs() / mid.abs());
            }
        }
    }
    (rows, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(name: &str, elements: u64, sum: f64) -> (String, OpChecksum) {
        (
            name.into(),
            OpChecksum {
                elements,
                sum,
                sum_abs: sum.abs(),
                sample: Vec::new(),
            },
        )
    }

    #[test]
    fn gradients_agree_only_when_both_sets_are_there_and_match() {
        let a = [g("0.q.a", 8, 1.0), g("0.q.b", 8, 2.0)];
        assert_eq!(grad_diff(&a, &a), 0.0);
        let close = [g("0.q.a", 8, 1.01), g("0.q.b", 8, 2.0)];
        assert!((grad_diff(&a, &close) - 0.0099).abs() < 1e-3);
        // No gradients, fewer, another adapter or another shape: no agreement.
        assert_eq!(grad_diff(&a, &[]), f64::INFINITY);
        assert_eq!(grad_diff(&[], &[]), f64::INFINITY);
        assert_eq!(grad_diff(&a, &a[..1]), f64::INFINITY);
        assert_eq!(
            grad_diff(&a, &[g("0.v.a", 8, 1.0), g("0.q.b", 8, 2.0)]),
            f64::INFINITY
        );
        assert_eq!(
            grad_diff(&a, &[g("0.q.a", 4, 1.0), g("0.q.b", 8, 2.0)]),
            f64::INFINITY
        );
    }
}
