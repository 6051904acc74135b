//! What a run was asked to do, resolved from the command line: the machine-independent half of a
//! plan. It is written into `run.json` (`plan`) so that a later run can repeat it exactly; the
//! machine-dependent half (binaries, launch commands, images, the model directory) is prepared
//! from it on the machine that runs it (`lab_harness::BenchPlan`).

use std::collections::BTreeMap;

use lab_protocol::Device;

use crate::measure::Profile;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BenchSpec {
    pub run_id: String,
    /// The model as given: a volume entry name, or a directory (recorded relative to the
    /// checkout when it lies inside it).
    pub model: String,
    /// Catalog targets (`candle:gguf-q4_1`), in run order, before runtimes are applied.
    pub targets: Vec<String>,
    /// Scenario ids, in run order.
    pub scenarios: Vec<String>,
    pub device: Device,
    pub threads: usize,
    /// The measurement profile the iteration settings below come from (absent in plans recorded
    /// before profiles existed: `custom`).
    #[serde(default = "custom")]
    pub measure: Profile,
    pub warmup_iterations: u32,
    pub iterations: u32,
    /// Minimum measured time per prompt of a timed scenario (see [`crate::measure`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_duration_ms: u64,
    /// Time budget per prompt of a timed scenario.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_ms: Option<u64>,
    /// How many times the whole plan runs (targets interleaved: every target once per run).
    #[serde(default = "one")]
    pub repeat: u32,
    /// Seconds of idle between two runs of the plan.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cooldown_s: u64,
    pub max_new_tokens: u32,
    /// Per-engine wall-clock limit.
    pub timeout_s: u64,
    /// How engines run (`native`, `podman`, `docker`, `auto`); several compare runtimes.
    pub runtimes: Vec<String>,
    /// CPUs every engine is pinned to, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_cpus: Option<String>,
    /// Prebuilt images by engine (`candle` -> reference).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// How the load scenarios (S2, S3) and S5 run (absent in plans recorded before they
    /// existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<crate::measure::LoadSettings>,
    /// `--lock-clocks` (`base`, `max`, `<sm>[,<mem>]`): GPU clocks locked for the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_clocks: Option<String>,
    /// GPU telemetry sampling period in ms; absent: no telemetry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry_period_ms: Option<u64>,
    /// `--price-per-hour` (and `--price-source`): what an hour of the machine costs, for the
    /// reports' cost per token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<crate::settings::Price>,
    /// How the timed scenarios pick tokens (`--temperature`, `--top-k`, `--top-p`, `--seed`);
    /// absent: greedy. Correctness scenarios are always greedy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<lab_protocol::Sampling>,
    /// `--kv-cache off`: S1 and S5 generate without the KV cache (every step recomputes the
    /// prefix). The `kv-on`/`kv-off` analysis sets its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kv_cache_off: bool,
    /// `--slowdown S`: every forward step stretched by the share S (the gate study's injected
    /// regression); absent for an unchanged build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slowdown: Option<f64>,
    /// `--analysis cold-start`: how many extra starts per target on a cold and a warm page cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<crate::startup::StartSettings>,
    /// `--analysis micro`: the microbenchmarks' dtypes, samples, warm-up and time per case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro: Option<crate::settings::MicroSettings>,
    /// `--analysis lora`: the LoRA step's sequence length, steps and adapters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<crate::settings::LoraSettings>,
    /// `--memory-limit`: the most memory an engine may take, MiB. In a container its memory
    /// cgroup (no swap beyond it); natively `RLIMIT_AS` (the address space, as `ulimit -v`).
    /// Absent: containers get `lab_harness::container::default_memory_bytes`, native processes
    /// none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_mib: Option<u64>,
    /// `--pids-limit`: the most processes and threads an engine container may have (absent:
    /// `lab_harness::container::DEFAULT_PIDS_LIMIT`); a native process has no such limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u64>,
}

fn custom() -> Profile {
    Profile::Custom
}

fn one() -> u32 {
    1
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl BenchSpec {
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_s)
    }
}
