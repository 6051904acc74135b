//! The settings of the analyses and of costs that a plan records (`BenchSpec`): leaf types,
//! so that the plan, the saved schema and the derivations over results can all name them.

use lab_protocol::Dtype;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What an hour of the machine costs, and where that figure comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub usd_per_hour: f64,
    /// Where the price comes from (a provider's price list and its date), as the user said.
    pub source: String,
}

impl Price {
    /// A price from flags: positive and finite; the source defaults to saying it was given
    /// without one.
    pub fn new(usd_per_hour: f64, source: Option<&str>) -> Result<Price> {
        if !(usd_per_hour.is_finite() && usd_per_hour > 0.0) {
            return Err(Error::msg(format!(
                "--price-per-hour {usd_per_hour}: the hourly price must be a positive number of US dollars"
            )));
        }
        let source = match source.map(str::trim) {
            Some("") => return Err(Error::msg(
                "--price-source is empty: say where the price comes from (provider, list, date)",
            )),
            Some(s) => s.to_string(),
            None => "given with --price-per-hour, no source stated".to_string(),
        };
        Ok(Price {
            usd_per_hour,
            source,
        })
    }

    /// US dollars per million tokens at `tok_per_s`.
    pub fn usd_per_mtok(&self, tok_per_s: f64) -> Option<f64> {
        (tok_per_s > 0.0).then(|| self.usd_per_hour / (3600.0 * tok_per_s) * 1e6)
    }

    pub fn text(&self) -> String {
        format!("${:.2}/h ({})", self.usd_per_hour, self.source)
    }
}

/// What `--analysis micro` runs (recorded in the plan).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MicroSettings {
    /// The dtypes every case runs in.
    pub dtypes: Vec<Dtype>,
    /// Timed calls per case (at most; see `max_case_ms`).
    pub samples: u32,
    /// Untimed calls before them.
    pub warmup: u32,
    /// A case stops after this many ms of timed calls (at least one call), if set.
    pub max_case_ms: Option<u64>,
    /// Seed of the inputs.
    pub seed: u64,
    /// `tiny`: the tests' small shapes instead of the model's (rows 1/4/16, 16 tokens).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tiny: bool,
}

/// What `--analysis lora` runs (recorded in the plan).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoraSettings {
    /// Predicted positions of the one training sequence (its token ids are one more).
    pub seq_len: u32,
    /// Measured steps (after the warm-up steps).
    pub steps: u32,
    pub warmup: u32,
    pub rank: u32,
    pub alpha: f64,
    pub targets: Vec<String>,
    pub lr: f64,
    pub weight_decay: f64,
    pub seed: u64,
}

impl LoraSettings {
    /// The step: rank 8, alpha 16, q/v projections, AdamW lr 1e-4, weight decay 0.01.
    pub fn standard(seq_len: u32, steps: u32, warmup: u32, seed: u64) -> Self {
        LoraSettings {
            seq_len,
            steps,
            warmup,
            rank: 8,
            alpha: 16.0,
            targets: vec!["q_proj".into(), "v_proj".into()],
            lr: 1e-4,
            weight_decay: 0.01,
            seed,
        }
    }

    /// The protocol's settings for the sequence `token_ids`.
    pub fn request(&self, token_ids: Vec<u32>) -> lab_protocol::train::Lora {
        lab_protocol::train::Lora {
            rank: self.rank,
            alpha: self.alpha,
            targets: self.targets.clone(),
            lr: self.lr,
            weight_decay: self.weight_decay,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            seed: self.seed,
            token_ids,
        }
    }
}
