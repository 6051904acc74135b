//! Running the cold-start analysis (`--analysis cold-start`): the engine started again on a
//! dropped and then a warm page cache (the recorded types and their definitions are
//! `lab_results::startup`).

use std::sync::atomic::AtomicBool;

use lab_protocol::{GenerationSettings, Sampling, ScenarioKind, ScenarioRequest};
use lab_results::startup::{Cache, StartSample, StartSettings, Startup};

use crate::plan::{build_request, BenchPlan, PreparedTarget};
use crate::progress::Progress;
use crate::runner::{self, Finished};
use crate::{Error, Result};

/// The sample of a finished engine process.
pub fn sample_of(cache: Cache, f: &Finished) -> StartSample {
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
            Ok(f) => sample_of(cache, &f),
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
