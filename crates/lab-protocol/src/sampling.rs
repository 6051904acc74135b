//! How tokens are picked (`Sampling`, validated by `Sampling::invalid`) and what the
//! sampling-overhead scenario asks and reports.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a [`ScenarioKind::SamplingOverhead`] scenario times: after the prompt's measured
/// iterations (greedy; their decode steps are the forward passes), each strategy selects
/// `samples` tokens, one at a time, from the logits of the last forward pass (the real
/// vocabulary), each selection timed on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SamplingOverhead {
    pub strategies: Vec<Sampling>,
    pub samples: u32,
}

/// How many of a strategy's draws a report keeps as ids (to compare samplers across engines).
pub const SAMPLED_IDS_KEPT: usize = 64;

/// One strategy of a sampling-overhead scenario, raw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SamplingTiming {
    pub sampling: Sampling,
    /// Logits per selection (the vocabulary the forward pass produced).
    pub logits_len: u32,
    /// Every selection's duration.
    pub sample_ns: Vec<u64>,
    /// The first [`SAMPLED_IDS_KEPT`] ids drawn (one sampler, its seed, the same logits).
    pub token_ids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Sampling {
    /// Argmax; ties go to the lowest token id.
    Greedy,
    /// Temperature, then the `top_k` most likely tokens (when set), then the nucleus (top-p)
    /// of those, drawn with the kit's seeded generator. `top_p: 1.0` keeps every token (plain
    /// temperature or plain top-k sampling).
    TopP {
        temperature: f32,
        top_p: f32,
        seed: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        top_k: Option<u32>,
    },
}

impl Sampling {
    /// Why these settings cannot be sampled from a vocabulary of `vocab` tokens (`None`: not
    /// known here), or `None` when they can. One rule for the harness, the kit and the Python port.
    pub fn invalid(&self, vocab: Option<u32>) -> Option<String> {
        let Sampling::TopP {
            temperature,
            top_p,
            top_k,
            ..
        } = *self
        else {
            return None;
        };
        if !(temperature.is_finite() && temperature > 0.0) {
            return Some(format!(
                "temperature must be a number above 0, not {temperature} (greedy decoding is `greedy`)"
            ));
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Some(format!("top_p must be in (0, 1], not {top_p}"));
        }
        match (top_k, vocab) {
            (Some(0), _) => Some("top_k must be at least 1".into()),
            (Some(k), Some(v)) if k > v => Some(format!(
                "top_k {k} is larger than the vocabulary ({v} tokens)"
            )),
            _ => None,
        }
    }

    /// A short label: `greedy`, `T=0.7`, `top-k 50`, `top-p 0.9`, or a combination.
    pub fn label(&self) -> String {
        match *self {
            Sampling::Greedy => "greedy".into(),
            Sampling::TopP {
                temperature,
                top_p,
                top_k,
                ..
            } => {
                let mut parts = Vec::new();
                if temperature != 1.0 || (top_k.is_none() && top_p >= 1.0) {
                    parts.push(format!("T={temperature}"));
                }
                if let Some(k) = top_k {
                    parts.push(format!("top-k {k}"));
                }
                if top_p < 1.0 {
                    parts.push(format!("top-p {top_p}"));
                }
                parts.join(", ")
            }
        }
    }
}
