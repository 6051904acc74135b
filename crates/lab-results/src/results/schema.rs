//! The saved schema of a run directory: `run.json` ([`RunManifest`]) and one result file per
//! target ([`TargetResult`]). These types are the files' contract: `deny_unknown_fields`, new
//! fields optional, [`RESULT_VERSION`] bumped on an incompatible change. The JSON Schemas
//! generated from them are committed in `crates/lab-results/schema/` (a test fails when they are
//! stale; `cargo xtask schema` regenerates them).

use std::collections::BTreeMap;

use lab_protocol::{Device, Report};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::metric::Metric;
use crate::provenance::Provenance;
use crate::runtime::{RanUnder, Runtimes};
use crate::spec::BenchSpec;
use crate::stats::Summary;

pub const RESULT_VERSION: u32 = 1;

/// The names of [`Metric::ALL`], in report order.
pub const METRICS: [&str; 5] = [
    Metric::ALL[0].name(),
    Metric::ALL[1].name(),
    Metric::ALL[2].name(),
    Metric::ALL[3].name(),
    Metric::ALL[4].name(),
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    pub name: String,
    pub synthetic: bool,
    /// The directory engines were given (as the harness saw it).
    pub dir: String,
    /// sha256 of the weight files per file name (from MANIFEST.json or computed).
    pub sha256: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    pub model: ModelInfo,
    /// `cpu` or `cuda:N` (written as text).
    #[serde(with = "device_text")]
    #[schemars(with = "String")]
    pub device: Device,
    pub threads: usize,
    pub scenarios: Vec<String>,
    pub warmup_iterations: u32,
    pub iterations: u32,
    pub max_new_tokens: u32,
    /// The runtimes the targets ran under (`native`, `podman`, `native,podman`).
    #[schemars(with = "String")]
    pub runtime: Runtimes,
    pub timeout_s: u64,
    /// The share by which every forward step was stretched (`bench --slowdown`: the gate
    /// study's injected regression); absent for an unchanged build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slowdown: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Complete,
    Interrupted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetStatus {
    Ok,
    /// The engine ran but a scenario or prompt failed (its report says which).
    Partial,
    Failed,
    Skipped,
    /// The run ended (Ctrl-C, or an error writing its results) before this target started.
    NotStarted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetOutcome {
    pub target: String,
    pub status: TargetStatus,
    pub error: Option<String>,
    /// Result file name within the run directory, when one was written.
    pub file: Option<String>,
    /// Which run of the plan this is under `--repeat` (absent for the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunManifest {
    pub result_version: u32,
    pub run_id: String,
    pub status: RunStatus,
    pub profile: String,
    pub settings: RunSettings,
    pub provenance: Provenance,
    pub targets: Vec<TargetOutcome>,
    /// What the run was asked to do (absent in runs written before plans were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<BenchSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptStats {
    pub prompt: String,
    pub prompt_tokens: u32,
    pub new_tokens: u32,
    pub deterministic: bool,
    /// Metric name ([`Metric::name`]) -> summary over the measured iterations.
    pub metrics: BTreeMap<String, Summary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioStats {
    pub id: String,
    pub prompts: Vec<PromptStats>,
    pub error: Option<String>,
    /// Load scenarios (S2, S3): one entry per batch size or concurrency level.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<super::load::PointStats>,
    /// Load scenarios: how the engine batched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<String>,
}

/// One engine target's complete result: raw report, statistics and provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetResult {
    pub result_version: u32,
    pub run_id: String,
    pub target: String,
    /// Which run of the plan this is under `--repeat` (absent for the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition: Option<u32>,
    pub profile: String,
    pub model: ModelInfo,
    pub engine_binary: String,
    pub engine_binary_sha256: String,
    /// Container image ID (`sha256:…` of the image configuration) when the engine ran in a
    /// container.
    pub image_digest: Option<String>,
    /// How the engine ran (`native`, `podman`, `docker`, `native (fallback: …)`); absent in
    /// results written before containers existed (they ran natively).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub runtime: Option<RanUnder>,
    /// Wall time of the engine process as the harness saw it.
    pub process_wall_ms: f64,
    pub provenance: Provenance,
    pub stats: Vec<ScenarioStats>,
    /// Agreement with the model's reference (when the correctness scenarios ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correctness: Option<Correctness>,
    /// The engine's report, verbatim (raw samples, token ids, load timings, memory, errors).
    pub report: Report,
    /// GPU telemetry sampled around the engine process (`--telemetry`), summarized per
    /// scenario and load level, with every raw sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<crate::telemetry::TargetTelemetry>,
    /// Binary, image and environment sizes (absent in results recorded before they were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub footprint: Option<crate::footprint::Footprint>,
    /// `--analysis cold-start`: the extra starts of the engine on a cold and a warm page cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<crate::startup::Startup>,
    /// The resource limits the engine ran under (absent in results written before limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<crate::limits::Limits>,
    /// The machine's read bandwidth measured just before and just after this engine ran (CPU
    /// runs that build engine-native; absent in older results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<crate::provenance::Probe>,
}

impl TargetResult {
    /// The read bandwidth of the machine while this engine ran: its own probe, else the run's
    /// one measurement before the engines.
    pub fn read_bandwidth_gb_per_s(&self) -> Option<f64> {
        self.probe
            .and_then(|p| p.read_bandwidth_gb_per_s())
            .or(self.provenance.read_bandwidth_gb_per_s)
    }
}

impl TargetResult {
    /// 1 for the first run of the plan, k for the k-th under `--repeat`.
    pub fn run(&self) -> u32 {
        self.repetition.unwrap_or(1)
    }
}

impl PromptStats {
    pub fn get(&self, metric: Metric) -> Option<&Summary> {
        self.metrics.get(metric.name())
    }
}

/// Agreement of one target with the model's reference (see [`crate::correctness`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptCorrectness {
    pub prompt: String,
    /// Teacher-forced positions whose top-1 equals the reference's.
    pub top1_agree: u32,
    pub positions: u32,
    /// Leading greedy tokens equal to the reference's greedy continuation.
    pub greedy_prefix: u32,
    pub greedy_tokens: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Correctness {
    pub target: String,
    pub dtype: String,
    pub top1_agree: u32,
    pub positions: u32,
    /// `top1_agree / positions`.
    pub top1_agreement: f64,
    pub gate: f64,
    pub gate_reason: String,
    /// Sum over prompts of the matching greedy prefix, and of the greedy lengths.
    pub greedy_prefix_tokens: u32,
    pub greedy_tokens: u32,
    /// Prompts whose whole greedy continuation equals the reference.
    pub greedy_full_matches: u32,
    /// Largest |engine logit - reference logit| on the reference's top-1 token, over positions
    /// where the engine's top-k contains it.
    pub max_abs_top1_logit_error: Option<f64>,
    pub prompts: Vec<PromptCorrectness>,
    /// Problems that make the result unusable (missing prompts, wrong token counts).
    pub errors: Vec<String>,
}

impl Correctness {
    pub fn passes(&self) -> bool {
        self.errors.is_empty() && self.top1_agreement >= self.gate
    }
}

/// JSON Schemas of the run directory's files, as committed under `crates/lab-results/schema/`.
pub fn json_schemas() -> [(&'static str, String); 2] {
    let run = schemars::schema_for!(RunManifest);
    let result = schemars::schema_for!(TargetResult);
    [
        (
            "run.schema.json",
            serde_json::to_string_pretty(&run).expect("schema serializes") + "\n",
        ),
        (
            "result.schema.json",
            serde_json::to_string_pretty(&result).expect("schema serializes") + "\n",
        ),
    ]
}

/// A device as `run.json` writes it: `cpu` or `cuda:N`.
mod device_text {
    use lab_protocol::Device;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Device, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(d)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Device, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "device `{text}`: expected `cpu` or `cuda:<ordinal>`"
            ))
        })
    }

    pub fn parse(text: &str) -> Option<Device> {
        match text {
            "cpu" => Some(Device::Cpu),
            _ => text
                .strip_prefix("cuda:")?
                .parse()
                .ok()
                .map(|ordinal| Device::Cuda { ordinal }),
        }
    }
}
