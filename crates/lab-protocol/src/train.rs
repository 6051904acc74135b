//! The LoRA training-step scenario ([`crate::ScenarioKind::LoraStep`]): the model's F32 weights
//! frozen, low-rank adapters on some projections, AdamW, one fixed batch, every step timed in
//! its three phases. Definitions are written here once:
//!
//! - **Adapters**: for each layer `l` and each target projection `W [out, in]` (HF names:
//!   `q_proj`, `v_proj`), `A [rank, in]` and `B [out, rank]`; the projection computes
//!   `W·x + (alpha / rank)·B·(A·x)`. `A` starts as [`crate::micro::fill`] of stream
//!   [`adapter_stream`] scaled by `1/√in`; `B` starts at zero, as LoRA prescribes (so the first
//!   step's loss is the base model's, and only `B` has a gradient at the first step).
//! - **Loss**: the mean cross-entropy of predicting `token_ids[i + 1]` from `token_ids[..=i]`
//!   over the `token_ids.len() − 1` positions of the one sequence (batch 1).
//! - **Optimizer**: AdamW (decoupled weight decay) over the adapters only, `lr`,
//!   `weight_decay`, `beta1`, `beta2`, `eps`; no schedule, no gradient clipping.
//! - **Phases** of a step: forward (inputs → loss), backward (loss → gradients), optimizer (the
//!   update, gradients cleared), each timed after the device finished.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::micro::OpChecksum;

/// The settings of a LoRA training-step scenario. Warm-up steps and measured steps are the
/// scenario's `warmup_iterations` and `iterations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Lora {
    pub rank: u32,
    pub alpha: f64,
    /// HF projection names that get adapters (`q_proj`, `v_proj`).
    pub targets: Vec<String>,
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Seed of the adapters' initial `A` ([`crate::micro::fill`]).
    pub seed: u64,
    /// The one training sequence: inputs `token_ids[..n-1]`, labels `token_ids[1..]`.
    pub token_ids: Vec<u32>,
}

/// The [`crate::micro::fill`] stream of layer `layer`'s adapter `A` on target `target` (its
/// index in [`Lora::targets`]).
pub fn adapter_stream(layer: u32, target: usize) -> u64 {
    1000 + layer as u64 * 16 + target as u64
}

/// One training step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainStep {
    /// A warm-up step (its update counts; its times are not statistics).
    pub warmup: bool,
    pub forward_ns: u64,
    pub backward_ns: u64,
    pub optimizer_ns: u64,
    /// The step's loss (before its update).
    pub loss: f64,
}

/// The gradient of one adapter matrix at the first step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdapterGrad {
    pub layer: u32,
    pub target: String,
    /// `a` or `b`.
    pub matrix: String,
    pub checksum: OpChecksum,
}

/// What a LoRA scenario measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainReport {
    /// Every step in order, warm-ups first.
    pub steps: Vec<TrainStep>,
    /// The first step's gradient of every adapter matrix.
    pub first_grads: Vec<AdapterGrad>,
    /// Predicted positions per step (`token_ids.len() − 1`).
    pub positions: u32,
    /// Trainable parameters (the adapters).
    pub trainable_params: u64,
    /// Peak resident set size during the scenario (Linux `VmHWM` reset at its start).
    pub peak_rss_bytes: Option<u64>,
    /// How the framework runs it (autograd, optimizer implementation), in words.
    pub how: String,
}

/// Why `lora` cannot train, if it cannot (one rule for the harness, the kit and the Python port).
pub fn invalid(lora: &Lora) -> Option<String> {
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if lora.rank == 0 {
        return Some("lora.rank must be at least 1".into());
    }
    if !positive(lora.alpha) || !positive(lora.lr) || !positive(lora.eps) {
        return Some(format!(
            "lora.alpha, lora.lr and lora.eps must be positive numbers, not {}, {}, {}",
            lora.alpha, lora.lr, lora.eps
        ));
    }
    if !(lora.weight_decay.is_finite() && lora.weight_decay >= 0.0) {
        return Some(format!(
            "lora.weight_decay must be 0 or more, not {}",
            lora.weight_decay
        ));
    }
    if ![lora.beta1, lora.beta2]
        .iter()
        .all(|b| (0.0..1.0).contains(b))
    {
        return Some(format!(
            "lora.beta1 and lora.beta2 must lie in [0, 1), not {} and {}",
            lora.beta1, lora.beta2
        ));
    }
    if lora.targets.is_empty() {
        return Some("lora.targets is empty".into());
    }
    if let Some(t) = lora
        .targets
        .iter()
        .enumerate()
        .find_map(|(i, t)| lora.targets[..i].contains(t).then_some(t))
    {
        return Some(format!("lora.targets: `{t}` appears twice"));
    }
    if lora.token_ids.len() < 2 {
        return Some(format!(
            "lora.token_ids has {} ids; a training sequence needs at least 2 (inputs and the next token)",
            lora.token_ids.len()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lora() -> Lora {
        Lora {
            rank: 8,
            alpha: 16.0,
            targets: vec!["q_proj".into(), "v_proj".into()],
            lr: 1e-4,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            seed: 1,
            token_ids: vec![1, 2, 3],
        }
    }

    #[test]
    fn bad_lora_settings_name_the_field() {
        assert_eq!(invalid(&lora()), None);
        type Break = fn(&mut Lora);
        let cases: [(Break, &str); 6] = [
            (|l| l.rank = 0, "lora.rank"),
            (|l| l.lr = f64::NAN, "lora.lr"),
            (|l| l.weight_decay = -1.0, "lora.weight_decay"),
            (|l| l.beta2 = 1.0, "lora.beta2"),
            (
                |l| l.targets.push("q_proj".into()),
                "`q_proj` appears twice",
            ),
            (|l| l.token_ids.truncate(1), "at least 2"),
        ];
        for (f, want) in cases {
            let mut l = lora();
            f(&mut l);
            let why = invalid(&l).unwrap();
            assert!(why.contains(want), "{why} (wanted {want})");
        }
        assert_ne!(adapter_stream(0, 1), adapter_stream(1, 0));
    }
}
