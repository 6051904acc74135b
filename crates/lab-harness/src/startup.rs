//! The cold-start analysis (`--analysis cold-start`): after a target's run, its engine is started
//! again several times with a one-token request, first on a cold page cache (every clean page
//! dropped: `sync`, then `3` into `/proc/sys/vm/drop_caches`, which needs root), then on a warm
//! one. Each start is broken down from the engine's own marks ([`lab_protocol::LoadTimings`]):
//! spawn → `main` (process exec, and the container's start in a container), then each loading
//! phase the engine can tell apart, `ready`, and the first token. Definitions are written here
//! once; `report.md` and `index.html` show the medians per cache state.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use lab_protocol::{
    GenerationSettings, LoadPhase, Sampling, ScenarioKind, ScenarioRequest, LOAD_PHASES,
};
use serde::{Deserialize, Serialize};

use crate::plan::{build_request, BenchPlan, PreparedTarget};
use crate::progress::Progress;
use crate::runner::{self, Finished};
use crate::{Error, Result};

/// Where the page cache is dropped.
pub const DROP_CACHES: &str = "/proc/sys/vm/drop_caches";

/// How many starts `--analysis cold-start` makes per target (recorded in the plan).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartSettings {
    /// Starts on a dropped page cache (each after its own drop).
    pub cold: u32,
    /// Starts right after, on the warm page cache.
    pub warm: u32,
    /// Where `3` is written to drop the page cache, when not [`DROP_CACHES`] (the harness's
    /// tests use a plain file: a fake that records the request without touching the machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_caches_file: Option<PathBuf>,
}

impl StartSettings {
    fn drop_caches_file(&self) -> PathBuf {
        self.drop_caches_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(DROP_CACHES))
    }
}

/// The page-cache state a start ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Cache {
    Cold,
    Warm,
    /// The run's own start: whatever the cache held (not a controlled measurement).
    AsFound,
}

impl Cache {
    pub fn name(self) -> &'static str {
        match self {
            Cache::Cold => "cold",
            Cache::Warm => "warm",
            Cache::AsFound => "as found",
        }
    }
}

/// One start of an engine process, ms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartSample {
    pub cache: Cache,
    /// Spawn → the engine's `main` (exec, interpreter start, container start).
    pub spawn_to_main_ms: Option<f64>,
    /// The engine's phases, ms since its `main`.
    pub phases: Vec<LoadPhase>,
    /// `main` → first token of the first request.
    pub first_token_ms: Option<f64>,
    /// Spawn → the process exited (the one-token request included).
    pub wall_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl StartSample {
    /// Spawn → first token, when both parts are known.
    pub fn spawn_to_first_token_ms(&self) -> Option<f64> {
        Some(self.spawn_to_main_ms? + self.first_token_ms?)
    }

    /// How long each phase took (from the previous mark, `main` first), in [`LOAD_PHASES`]
    /// order, `None` for phases the engine did not mark; then `ready` → first token.
    pub fn durations(&self) -> Vec<(&'static str, Option<f64>)> {
        let mut prev = 0.0;
        let mut out = Vec::new();
        for name in LOAD_PHASES {
            let at = self.phases.iter().find(|p| p.name == name).map(|p| p.at_ms);
            out.push((name, at.map(|a| a - prev)));
            if let Some(a) = at {
                prev = a;
            }
        }
        out.push(("first_token", self.first_token_ms.map(|f| f - prev)));
        out
    }

    /// The sample of a finished engine process.
    pub fn of(cache: Cache, f: &Finished) -> StartSample {
        let load = f.report.load.as_ref();
        StartSample {
            cache,
            spawn_to_main_ms: load
                .and_then(|l| l.main_unix_ns)
                .filter(|_| f.spawn_unix_ns > 0)
                .map(|m| (m as f64 - f.spawn_unix_ns as f64) / 1e6),
            phases: load.map(|l| l.phases.clone()).unwrap_or_default(),
            first_token_ms: load.and_then(|l| l.first_token_ms),
            wall_ms: f.wall.as_secs_f64() * 1e3,
            error: f.report.error.clone(),
        }
    }
}

/// The starts of one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Startup {
    /// How the cold page cache was obtained.
    pub cold_cache: String,
    pub samples: Vec<StartSample>,
}

/// Whether the page cache can be dropped here: checked when the plan is made, before anything
/// is built, so a run without root is refused with the reason instead of mislabelled.
pub fn check_can_drop(settings: &StartSettings) -> Result<()> {
    let path = settings.drop_caches_file();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map(|_| ())
        .map_err(|e| {
            Error::msg(format!(
                "--analysis cold-start: cannot drop the page cache: {}: {e} (writing it needs root; run as root, or leave out cold-start)",
                path.display()
            ))
        })
}

/// `sync`, then drops clean pages, dentries and inodes; says how.
fn drop_page_cache(settings: &StartSettings) -> Result<String> {
    #[allow(clippy::disallowed_methods)] // one system call, no output to stream
    let _ = std::process::Command::new("sync").status();
    let path = settings.drop_caches_file();
    std::fs::write(&path, "3\n").map_err(|e| {
        Error::msg(format!(
            "cannot drop the page cache: {}: {e} (needs root)",
            path.display()
        ))
    })?;
    Ok(format!(
        "`sync`, then `3` written to {} before each cold start (page cache, dentries and inodes of the whole machine dropped)",
        path.display()
    ))
}

/// The one-token request every start serves: the KV analysis's 16-token prompt, one token.
fn start_request(plan: &BenchPlan) -> Result<ScenarioRequest> {
    let prompts = crate::catalog::load_prompts(
        &plan.root.join("prompts"),
        "kv.json",
        &plan.model.tokenizer_json,
    )?;
    Ok(ScenarioRequest {
        id: "start".into(),
        kind: ScenarioKind::SingleRequestLatency,
        prompts,
        generation: GenerationSettings {
            max_new_tokens: 1,
            stop_at_eos: false,
            eos_token_ids: plan.model.eos_token_ids.clone(),
            sampling: Sampling::Greedy,
            kv_cache: true,
        },
        warmup_iterations: 0,
        iterations: 1,
        min_duration_ms: 0,
        max_duration_ms: None,
        load: None,
        sampling_overhead: None,
        micro: None,
        lora: None,
    })
}

/// Starts `t`'s engine `settings.cold` times on a dropped page cache, then `settings.warm` times.
/// A start that fails is kept with its error; an interruption stops the series (what was
/// measured is kept).
pub fn measure(
    plan: &BenchPlan,
    t: &PreparedTarget,
    settings: &StartSettings,
    interrupted: &AtomicBool,
    progress: &Progress,
) -> Result<Startup> {
    let request = build_request(plan, t, &[start_request(plan)?]);
    let label = format!("{} start", t.label());
    let mut cold_cache = String::from("no cold start asked");
    let mut samples = Vec::new();
    let plan_of = std::iter::repeat_n(Cache::Cold, settings.cold as usize)
        .chain(std::iter::repeat_n(Cache::Warm, settings.warm as usize));
    for (i, cache) in plan_of.enumerate() {
        if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        if cache == Cache::Cold {
            cold_cache = drop_page_cache(settings)?;
        }
        progress.println(&format!(
            "{label} {}/{} ({} page cache)",
            i + 1,
            settings.cold + settings.warm,
            cache.name()
        ));
        let started = std::time::Instant::now();
        let sample = match runner::run_engine_with(
            &t.launch,
            &request,
            &label,
            plan.spec.timeout(),
            interrupted,
            progress,
        ) {
            Ok(f) => StartSample::of(cache, &f),
            Err(e) => StartSample {
                cache,
                spawn_to_main_ms: None,
                phases: Vec::new(),
                first_token_ms: None,
                wall_ms: started.elapsed().as_secs_f64() * 1e3,
                error: Some(e.to_string()),
            },
        };
        samples.push(sample);
    }
    Ok(Startup {
        cold_cache,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_is_broken_down_into_the_phases_the_engine_marked() {
        let s = StartSample {
            cache: Cache::Cold,
            spawn_to_main_ms: Some(40.0),
            phases: [
                ("runtime_init", 5.0),
                ("weights_loaded", 105.0),
                ("ready", 110.0),
            ]
            .iter()
            .map(|&(n, a)| LoadPhase {
                name: n.into(),
                at_ms: a,
            })
            .collect(),
            first_token_ms: Some(130.0),
            wall_ms: 200.0,
            error: None,
        };
        assert_eq!(s.spawn_to_first_token_ms(), Some(170.0));
        let d = s.durations();
        assert_eq!(
            d,
            [
                ("runtime_init", Some(5.0)),
                ("file_open", None),
                ("weights_parsed", None),
                ("weights_loaded", Some(100.0)),
                ("ready", Some(5.0)),
                ("first_token", Some(20.0)),
            ]
        );
    }
}
