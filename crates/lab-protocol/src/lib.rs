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

mod load;
pub mod manifest;
pub mod micro;
mod sampling;
pub mod train;

use std::collections::BTreeMap;

pub use load::{Arrival, BatchSample, Load, LoadPoint, RequestRecord, RequestStatus};
pub use sampling::{Sampling, SamplingOverhead, SamplingTiming, SAMPLED_IDS_KEPT};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Bumped on every incompatible change of [`Request`] or [`Report`].
pub const SCHEMA_VERSION: u32 = 6;

/// The environment variable by which the harness asks an engine to stretch every forward step
/// by a share of its duration (`bench --slowdown`: the gate study's injected regression). The
/// kit implements it (`engine_kit::slowdown`), the Python engine ports it.
pub const SLOWDOWN_ENV: &str = "LAB_SLOWDOWN";

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
mod tests;
