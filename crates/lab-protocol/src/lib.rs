//! The lab's engine protocol: the only thing the harness and the engines share.
//!
//! An engine is a process. It reads one [`Request`] as JSON on stdin, writes one [`Report`] as
//! JSON on stdout and writes human-readable logs and progress on stderr. Token ids are the
//! interface: prompts arrive as ids and generated ids are returned, so token counts are identical
//! for every engine.
//!
//! Units are part of field names (`_ns`, `_ms`, `_bytes`). Raw per-iteration samples are kept;
//! statistics are computed by the harness, never by engines.
//!
//! The written schema lives in `crates/lab-protocol/schema/*.schema.json` (generated from these
//! types; a test keeps it up to date) so that non-Rust engines can be tested against it.

pub mod manifest;
pub mod micro;
pub mod train;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Bumped on every incompatible change of [`Request`] or [`Report`].
pub const SCHEMA_VERSION: u32 = 6;

/// What the harness asks an engine to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Must equal [`SCHEMA_VERSION`]; engines refuse anything else.
    pub schema_version: u32,
    pub model: ModelSpec,
    pub device: Device,
    /// CPU threads the engine may use (`None`: the engine's default, which it must report).
    pub threads: Option<u32>,
    pub scenarios: Vec<ScenarioRequest>,
}

/// Which weights to load, as the engine sees them (inside a container the path is the mount).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Model volume entry name, e.g. `smollm2-135m`.
    pub name: String,
    /// Directory of the model volume entry (read-only).
    pub dir: String,
    pub format: WeightFormat,
    /// Compute dtype. For GGUF this is the dtype the file stores (e.g. `q4_1`).
    pub dtype: Dtype,
    /// True for seeded random-weight models: their outputs are meaningless, only their speed is.
    pub synthetic: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WeightFormat {
    /// `model.gguf` as shipped (quantized).
    Gguf,
    /// `model.safetensors` + `config.json` in Hugging Face Llama layout.
    Safetensors,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Dtype {
    F32,
    F16,
    Bf16,
    /// GGUF quantized weights as stored in the file (SmolLM2: Q4_1 with one Q8_0 tensor).
    Q4_1,
    /// The volume's Q8_0 GGUF (derived from the shipped Q4_1 by the lab's quantizer).
    #[serde(rename = "q8_0")]
    Q8_0,
    /// The volume's Q4_0 GGUF (derived likewise).
    #[serde(rename = "q4_0")]
    Q4_0,
}

impl Dtype {
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
            Dtype::Q4_1 => "q4_1",
            Dtype::Q8_0 => "q8_0",
            Dtype::Q4_0 => "q4_0",
        }
    }

    /// Whether the dtype only exists as a quantized GGUF.
    pub fn is_quantized(self) -> bool {
        matches!(self, Dtype::Q4_1 | Dtype::Q8_0 | Dtype::Q4_0)
    }

    /// The volume entry's GGUF file holding this dtype: the shipped `model.gguf` (Q4_1) or one
    /// the volume builder derived from it; `None` for a dtype no GGUF of the volume stores.
    pub fn gguf_file(self) -> Option<&'static str> {
        match self {
            Dtype::Q4_1 => Some("model.gguf"),
            Dtype::Q8_0 => Some("model-q8_0.gguf"),
            Dtype::Q4_0 => Some("model-q4_0.gguf"),
            Dtype::F16 => Some("model-f16.gguf"),
            Dtype::F32 | Dtype::Bf16 => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Device {
    Cpu,
    Cuda { ordinal: u32 },
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda { ordinal } => write!(f, "cuda:{ordinal}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioRequest {
    /// Scenario id as the user names it, e.g. `s1`.
    pub id: String,
    pub kind: ScenarioKind,
    pub prompts: Vec<Prompt>,
    pub generation: GenerationSettings,
    /// Untimed iterations per prompt before measuring.
    pub warmup_iterations: u32,
    /// Measured iterations per prompt (see [`ScenarioRequest::wants_more`] for the durations).
    pub iterations: u32,
    /// After `iterations`, keep measuring a prompt until its measured iterations took this many
    /// milliseconds in all (0: no minimum). Published numbers ask for both a count and a time.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_duration_ms: u64,
    /// Stop measuring a prompt once its measured iterations took this many milliseconds, even
    /// before `iterations` (never fewer than one): the time-budgeted default on CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_ms: Option<u64>,
    /// Load scenarios (S2, S3) only: the batch sizes or concurrency levels and how to run them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<Load>,
    /// Sampling-overhead scenarios only: the strategies to time and how often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_overhead: Option<SamplingOverhead>,
    /// Micro scenarios only: the cases (warm-up calls, samples and the per-case time limit are
    /// `warmup_iterations`, `iterations` and `max_duration_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro: Option<micro::Micro>,
    /// LoRA scenarios only: the adapters, optimizer and training sequence (warm-up and measured
    /// steps are `warmup_iterations` and `iterations`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<train::Lora>,
}

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

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl ScenarioRequest {
    /// Whether an engine measures another iteration of a prompt after `measured` iterations that
    /// took `elapsed_ms` in all: until `iterations` and `min_duration_ms` are both reached, cut at
    /// `max_duration_ms` once at least one iteration was measured. Every engine (the Python one
    /// included) uses exactly this rule.
    pub fn wants_more(&self, measured: u32, elapsed_ms: u64) -> bool {
        if measured == 0 {
            return true;
        }
        if self.max_duration_ms.is_some_and(|max| elapsed_ms >= max) {
            return false;
        }
        measured < self.iterations || elapsed_ms < self.min_duration_ms
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScenarioKind {
    /// S1: one request at a time; prefill the prompt, then decode a fixed number of tokens.
    SingleRequestLatency,
    /// Correctness: prefill the prompt, then feed each of the prompt's `forced_token_ids` in turn
    /// (instead of the sampled token) and report the top-k logits of every position.
    /// `generation.max_new_tokens` must equal `forced_token_ids.len() + 1`.
    TeacherForced,
    /// S2: sustained throughput of static batches ([`Load::Batches`]).
    BatchedThroughput,
    /// S3: concurrent clients ([`Load::Concurrent`]), batched as the engine can (continuous
    /// batching, lock-step, or one at a time; the report's `batching` says which).
    ConcurrentLoad,
    /// The sampling analysis: S1-style greedy iterations of one prompt (the forward passes),
    /// then every strategy of [`SamplingOverhead`] timed on the last logits.
    SamplingOverhead,
    /// Microbenchmarks: single operations and model components in the engine's framework
    /// ([`micro::Micro`]), each timed alone; no prompts.
    Micro,
    /// A LoRA fine-tuning step ([`train::Lora`]): forward, backward and optimizer of each step
    /// timed; no prompts.
    LoraStep,
}

impl ScenarioKind {
    /// Whether the scenario is a load scenario (reported as [`LoadPoint`]s, not per prompt).
    pub fn is_load(self) -> bool {
        matches!(
            self,
            ScenarioKind::BatchedThroughput | ScenarioKind::ConcurrentLoad
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Prompt {
    /// Stable name, e.g. `p10` for the 10-token prompt.
    pub name: String,
    pub token_ids: Vec<u32>,
    /// Teacher-forced scenarios only: the tokens fed after the prompt, one per decode step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forced_token_ids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerationSettings {
    /// Tokens to generate (the first one comes from prefill).
    pub max_new_tokens: u32,
    /// Stop early at an EOS token. Off by default: fixed-length generation keeps work equal.
    pub stop_at_eos: bool,
    pub eos_token_ids: Vec<u32>,
    pub sampling: Sampling,
    /// Keep the KV cache between steps (the default). `false`: every decode step recomputes the
    /// whole prefix (prompt + tokens so far) from an empty cache, the baseline of the KV-cache
    /// analysis; an engine whose library cannot do that fails the scenario and says why.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub kv_cache: bool,
}

fn yes() -> bool {
    true
}

fn is_true(v: &bool) -> bool {
    *v
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

/// What an engine writes on stdout, once, at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub schema_version: u32,
    pub engine: EngineIdentity,
    /// `None` when the engine failed before it finished loading.
    pub load: Option<LoadTimings>,
    pub memory: MemoryUsage,
    pub scenarios: Vec<ScenarioReport>,
    /// A fatal error (the engine could not load or could not run at all).
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EngineIdentity {
    /// Lab engine name, e.g. `candle`.
    pub name: String,
    /// Version of the engine adapter crate.
    pub version: String,
    /// The library doing the work and its version, e.g. `candle-core 0.10.2`.
    pub backend: String,
    /// `cpu` or `cuda:N`.
    pub device: String,
    pub dtype: String,
    pub weight_format: WeightFormat,
    /// CPU threads actually used.
    pub threads: u32,
    /// Fairness-relevant settings, recorded verbatim (e.g. prefix caching, SIMD level).
    pub settings: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadTimings {
    /// From the engine's `main` to ready to serve (includes parsing the request and loading).
    pub process_start_to_ready_ms: f64,
    /// Loading weights and building the model.
    pub load_ms: f64,
    /// Unix time (ns) of the engine's `main`, so the harness can tell how long the process (or
    /// its container) took to get there from its spawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_unix_ns: Option<u64>,
    /// The cold-start breakdown: each phase the engine can tell apart, in order, as ms since
    /// its `main` (names in [`LOAD_PHASES`]; an engine whose library does several in one call
    /// marks only the last of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<LoadPhase>,
    /// From `main` to the first token of the process's first sequence (warm-ups included: the
    /// first request a fresh process serves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<f64>,
}

/// The cold-start phases, in order: `runtime_init` (libraries, thread pool, device or CUDA
/// context ready), `file_open` (the weight file opened or mapped), `weights_parsed` (its header
/// and tensor index read), `weights_loaded` (every weight in memory, on the device), `ready`
/// (the model built; marked by the kit after the load returns).
pub const LOAD_PHASES: [&str; 5] = [
    "runtime_init",
    "file_open",
    "weights_parsed",
    "weights_loaded",
    "ready",
];

/// One phase of loading: reached `at_ms` after the engine's `main`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadPhase {
    pub name: String,
    pub at_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryUsage {
    /// Peak resident set size of the engine process (Linux `VmHWM`).
    pub peak_rss_bytes: Option<u64>,
    /// Peak accelerator memory, when the engine runs on one.
    pub peak_device_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioReport {
    pub id: String,
    pub kind: ScenarioKind,
    pub prompts: Vec<PromptReport>,
    /// Set when this scenario failed; results of earlier prompts are kept.
    pub error: Option<String>,
    /// Load scenarios only: how the engine batched (e.g. `none (serial)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<String>,
    /// Load scenarios only: one entry per batch size (S2) or concurrency level (S3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<LoadPoint>,
    /// Sampling-overhead scenarios only: one entry per strategy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sampling: Vec<SamplingTiming>,
    /// Set when the engine cannot do what the scenario asks by design (its library offers no
    /// way), with the reason: not a failure; what it could run is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<String>,
    /// Micro scenarios only: the request's settings, echoed (so a report names its cases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro: Option<micro::Micro>,
    /// Micro scenarios only: one entry per case, in the request's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ops: Vec<micro::OpReport>,
    /// LoRA scenarios only: every step and the first step's adapter gradients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<train::TrainReport>,
}

impl ScenarioReport {
    /// The report of `scenario` before anything ran: its id and kind, nothing measured.
    pub fn empty(scenario: &ScenarioRequest) -> ScenarioReport {
        ScenarioReport {
            id: scenario.id.clone(),
            kind: scenario.kind,
            prompts: Vec::new(),
            error: None,
            batching: None,
            points: Vec::new(),
            sampling: Vec::new(),
            unsupported: None,
            micro: None,
            ops: Vec::new(),
            train: None,
        }
    }
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptOutput {
    pub prompt: String,
    pub token_ids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptReport {
    pub prompt: String,
    pub prompt_tokens: u32,
    /// Token ids generated in the first measured iteration.
    pub generated_token_ids: Vec<u32>,
    /// Whether every warm-up and measured iteration produced exactly these ids.
    pub deterministic: bool,
    pub warmup_iterations: u32,
    pub samples: Vec<IterationSample>,
    /// Teacher-forced scenarios only: the top-[`TOP_K`] logits of every position of the first
    /// measured iteration (prefill's last position, then one per forced token).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_logits: Vec<TopLogits>,
    /// Peak resident set size while this prompt ran (Linux `VmHWM` reset before it), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
}

/// How many logits a teacher-forced report keeps per position.
pub const TOP_K: usize = 5;

/// The largest logits of one position: descending value, ascending id on ties.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopLogits {
    pub ids: Vec<u32>,
    pub logits: Vec<f32>,
}

impl TopLogits {
    /// The top `k` of `logits` (NaN never ranks).
    pub fn of(logits: &[f32], k: usize) -> Self {
        let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
        for (i, &v) in logits.iter().enumerate() {
            if v.is_nan() {
                continue;
            }
            if best.len() == k && best.last().is_some_and(|&(w, _)| v <= w) {
                continue;
            }
            // Insert after every value >= v (keeps lower ids first among equal values).
            let at = best.partition_point(|&(w, _)| w >= v);
            best.insert(at, (v, i as u32));
            best.truncate(k);
        }
        TopLogits {
            ids: best.iter().map(|&(_, i)| i).collect(),
            logits: best.iter().map(|&(v, _)| v).collect(),
        }
    }
}

/// One measured iteration, raw. Timestamps come from a monotonic clock after a device sync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IterationSample {
    /// Start of prefill to the first generated token (sampled) being available.
    pub ttft_ns: u64,
    /// Start of prefill to the last generated token being available.
    pub e2e_ns: u64,
    pub new_tokens: u32,
    /// Gaps between consecutive generated tokens (`new_tokens - 1` entries).
    pub inter_token_ns: Vec<u64>,
    /// Unix time (ns) at which the iteration started (just before its prefill). Only for
    /// placing outside measurements (GPU telemetry) on the timeline; durations never come
    /// from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_unix_ns: Option<u64>,
}

impl IterationSample {
    /// Prompt tokens per second of time to first token.
    pub fn prefill_tok_per_s(&self, prompt_tokens: u32) -> f64 {
        prompt_tokens as f64 / (self.ttft_ns as f64 / 1e9)
    }

    /// Decode throughput: tokens after the first over the time after the first.
    pub fn decode_tok_per_s(&self) -> Option<f64> {
        let decode_ns = self.e2e_ns.checked_sub(self.ttft_ns)?;
        if self.new_tokens < 2 || decode_ns == 0 {
            return None;
        }
        Some((self.new_tokens - 1) as f64 / (decode_ns as f64 / 1e9))
    }
}

/// An error message as one line: control characters (a newline inside a quoted field name of a
/// malformed file) escaped. Every reader of the lab's files and pipes reports one line.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// JSON Schemas of the two protocol messages, as committed under `schema/`.
pub fn json_schemas() -> [(&'static str, String); 2] {
    let req = schemars::schema_for!(Request);
    let rep = schemars::schema_for!(Report);
    [
        (
            "request.schema.json",
            serde_json::to_string_pretty(&req).unwrap() + "\n",
        ),
        (
            "report.schema.json",
            serde_json::to_string_pretty(&rep).unwrap() + "\n",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_report() -> Report {
        Report {
            schema_version: SCHEMA_VERSION,
            engine: EngineIdentity {
                name: "candle".into(),
                version: "0.0.0".into(),
                backend: "candle-core 0.10.2".into(),
                device: "cpu".into(),
                dtype: "q4_1".into(),
                weight_format: WeightFormat::Gguf,
                threads: 2,
                settings: [("kv_cache".to_string(), "cat".to_string())].into(),
            },
            load: Some(LoadTimings {
                process_start_to_ready_ms: 12.5,
                load_ms: 10.0,
                main_unix_ns: None,
                phases: vec![],
                first_token_ms: None,
            }),
            memory: MemoryUsage {
                peak_rss_bytes: Some(1 << 20),
                peak_device_bytes: None,
            },
            scenarios: vec![ScenarioReport {
                id: "s1".into(),
                kind: ScenarioKind::SingleRequestLatency,
                prompts: vec![PromptReport {
                    prompt: "p10".into(),
                    prompt_tokens: 10,
                    generated_token_ids: vec![7042, 30, 198],
                    deterministic: true,
                    warmup_iterations: 1,
                    top_logits: vec![],
                    peak_rss_bytes: None,
                    samples: vec![IterationSample {
                        ttft_ns: 50_000_000,
                        e2e_ns: 150_000_000,
                        new_tokens: 3,
                        inter_token_ns: vec![50_000_000, 50_000_000],
                        start_unix_ns: None,
                    }],
                }],
                error: None,
                batching: None,
                points: vec![],
                sampling: vec![],
                unsupported: None,
                micro: None,
                ops: vec![],
                train: None,
            }],
            error: None,
        }
    }

    #[test]
    fn report_round_trips_through_json() {
        let r = sample_report();
        let text = serde_json::to_string(&r).unwrap();
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        // Units are in field names.
        for field in [
            "\"ttft_ns\"",
            "\"e2e_ns\"",
            "\"peak_rss_bytes\"",
            "\"load_ms\"",
        ] {
            assert!(text.contains(field), "{field} missing from {text}");
        }
    }

    #[test]
    fn derived_rates_use_the_right_spans() {
        let s = &sample_report().scenarios[0].prompts[0].samples[0];
        assert_eq!(s.prefill_tok_per_s(10), 200.0);
        // two tokens after the first, in 100 ms
        assert_eq!(s.decode_tok_per_s(), Some(20.0));
        let one = IterationSample {
            ttft_ns: 5,
            e2e_ns: 5,
            new_tokens: 1,
            inter_token_ns: vec![],
            start_unix_ns: None,
        };
        assert_eq!(one.decode_tok_per_s(), None);
    }

    #[test]
    fn iterations_and_durations_decide_when_a_prompt_is_measured_enough() {
        let s = |iterations, min_duration_ms, max_duration_ms| ScenarioRequest {
            id: "s1".into(),
            kind: ScenarioKind::SingleRequestLatency,
            prompts: vec![],
            generation: GenerationSettings {
                max_new_tokens: 4,
                stop_at_eos: false,
                eos_token_ids: vec![],
                sampling: Sampling::Greedy,
                kv_cache: true,
            },
            warmup_iterations: 0,
            iterations,
            min_duration_ms,
            max_duration_ms,
            load: None,
            sampling_overhead: None,
            micro: None,
            lora: None,
        };
        // A count alone.
        let plain = s(3, 0, None);
        assert!(plain.wants_more(2, 1_000_000));
        assert!(!plain.wants_more(3, 0));
        // A count and a minimum time: both must be reached.
        let standard = s(3, 500, None);
        assert!(standard.wants_more(3, 499));
        assert!(standard.wants_more(2, 10_000));
        assert!(!standard.wants_more(3, 500));
        // A budget cuts the count, but never below one measured iteration.
        let budget = s(10, 0, Some(300));
        assert!(budget.wants_more(0, 10_000));
        assert!(!budget.wants_more(1, 300));
        assert!(budget.wants_more(4, 299));
        assert!(!budget.wants_more(10, 0));
        // Old requests (no duration fields) still parse, and a plain one serializes without them.
        let text = serde_json::to_string(&plain).unwrap();
        assert!(!text.contains("duration"), "{text}");
        assert_eq!(
            serde_json::from_str::<ScenarioRequest>(&text).unwrap(),
            plain
        );
    }

    #[test]
    fn top_logits_are_descending_with_low_ids_first_on_ties() {
        let t = TopLogits::of(&[1.0, 5.0, f32::NAN, 5.0, -2.0, 3.0, 4.0, 0.0], 4);
        assert_eq!(t.ids, vec![1, 3, 6, 5]);
        assert_eq!(t.logits, vec![5.0, 5.0, 4.0, 3.0]);
        assert_eq!(TopLogits::of(&[2.0, 1.0], 5).ids, vec![0, 1]);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let mut v = serde_json::to_value(sample_report()).unwrap();
        v["surprise"] = serde_json::json!(1);
        let err = serde_json::from_value::<Report>(v).unwrap_err().to_string();
        assert!(err.contains("surprise"), "{err}");
    }

    /// The committed schema files are what the types generate. Fix with `cargo xtask schema`.
    #[test]
    fn committed_json_schemas_are_up_to_date() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
        for (name, text) in json_schemas() {
            let committed = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            assert!(
                committed == text,
                "crates/lab-protocol/schema/{name} is stale: run `cargo xtask schema`"
            );
        }
    }
}
