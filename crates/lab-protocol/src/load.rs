//! The load scenarios (S2 batched throughput, S3 concurrent load): their settings (`Load`,
//! validated by `Load::invalid`; `Arrival`) and what a level reports (`LoadPoint`: batches or
//! requests).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::PromptOutput;

/// How a load scenario is run. Every level is one [`LoadPoint`] of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Load {
    /// S2: static ("offline") batches. For batch size B, the first B prompts (of equal length)
    /// are prefilled and decoded together for `generation.max_new_tokens` tokens (EOS ignored);
    /// after `warmup_iterations` untimed batches, batches repeat until `duration_ms` has passed
    /// (at least one).
    Batches {
        batch_sizes: Vec<u32>,
        duration_ms: u64,
    },
    /// S3: `requests` requests (the prompts in turn) from `concurrency` clients, served with
    /// up to `max_batch` sequences decoding together.
    Concurrent {
        concurrency: Vec<u32>,
        arrival: Arrival,
        /// Requests per level; never fewer than the level's concurrency.
        requests: u32,
        /// The most sequences the engine decodes together (capped by what it can hold).
        max_batch: u32,
    },
}

impl Load {
    /// Why these settings cannot run, naming the field (`batch_sizes must be …`), or `None`.
    /// One rule for the harness (which names its flags), the kit and the Python engine's port.
    pub fn invalid(&self) -> Option<String> {
        match self {
            Load::Batches { batch_sizes, .. } => (batch_sizes.is_empty()
                || batch_sizes.contains(&0))
            .then(|| "batch_sizes must be one or more sizes of at least 1".into()),
            Load::Concurrent {
                concurrency,
                arrival,
                requests,
                max_batch,
            } => {
                if concurrency.is_empty() || concurrency.contains(&0) {
                    return Some("concurrency must be one or more levels of at least 1".into());
                }
                if *requests == 0 {
                    return Some("requests must be at least 1".into());
                }
                if *max_batch == 0 {
                    return Some("max_batch must be at least 1".into());
                }
                match arrival {
                    Arrival::Poisson { rate_per_s, .. }
                        if !(rate_per_s.is_finite() && *rate_per_s > 0.0) =>
                    {
                        Some(format!(
                            "arrival.rate_per_s must be a positive number, not {rate_per_s}"
                        ))
                    }
                    _ => None,
                }
            }
        }
    }
}

/// When S3's requests are submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Arrival {
    /// Closed loop: each of the C clients submits its next request when its previous one ends.
    Closed,
    /// Open loop: requests arrive at exponential gaps of mean `1 / rate_per_s` (seeded), whether
    /// or not earlier ones are done; at most C are in the engine, the rest wait in its queue.
    Poisson { rate_per_s: f64, seed: u64 },
}

/// One level of a load scenario. Times are nanoseconds since the level's measured start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadPoint {
    /// Batch size (S2) or concurrency (S3).
    pub level: u32,
    /// The most sequences decoded together in one step.
    pub max_active: u32,
    /// S2: every measured batch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batches: Vec<BatchSample>,
    /// S3: every request, in submission order: completed, failed or refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<RequestRecord>,
    /// The ids each prompt generated the first time it completed (for token checks).
    pub outputs: Vec<PromptOutput>,
    /// Whether every completion of a prompt generated the same ids (warm-ups included).
    pub deterministic: bool,
    /// Peak resident set size during this level (Linux `VmHWM` reset at its start), if known.
    pub peak_rss_bytes: Option<u64>,
    /// Set when the level ended early; what was measured is kept.
    pub error: Option<String>,
    /// Unix time (ns) of the level's measured start, the origin of its `*_ns` times (for
    /// placing GPU telemetry on the timeline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_unix_ns: Option<u64>,
}

/// One static batch of S2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchSample {
    pub start_ns: u64,
    /// Sequences in the batch.
    pub sequences: u32,
    /// Prompt tokens of all sequences.
    pub prompt_tokens: u32,
    /// Start of the batch to every sequence's first token (all prefills).
    pub prefill_ns: u64,
    /// Every decode step after prefill (each produces one token per sequence).
    pub step_ns: Vec<u64>,
    /// Tokens generated by all sequences (first tokens included).
    pub new_tokens: u32,
}

impl BatchSample {
    /// The decode steps' total (saturating: the numbers are whatever an engine reported).
    pub fn decode_ns(&self) -> u64 {
        self.step_ns.iter().fold(0, |a, &x| a.saturating_add(x))
    }
    pub fn e2e_ns(&self) -> u64 {
        self.prefill_ns.saturating_add(self.decode_ns())
    }
}

/// One request of S3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestRecord {
    /// The client that sent it (closed loop), or its arrival index (open loop).
    pub client: u32,
    pub prompt: String,
    pub prompt_tokens: u32,
    pub submit_ns: u64,
    /// Its prefill started (it left the queue).
    pub admit_ns: Option<u64>,
    pub first_token_ns: Option<u64>,
    pub done_ns: Option<u64>,
    pub new_tokens: u32,
    pub status: RequestStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum RequestStatus {
    Completed,
    /// The engine failed this request (the others go on).
    Failed {
        reason: String,
    },
    /// Never started (the level ended before it could be served).
    Refused {
        reason: String,
    },
}
