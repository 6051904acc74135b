//! The engine process: read and validate the request, load, run every scenario, write the report.
//! Every path writes a report; errors and panics in the engine become a report with `error` set.

use std::io::{Read, Write};
use std::time::Instant;

use lab_protocol::{
    EngineIdentity, LoadTimings, MemoryUsage, Report, Request, ScenarioKind, SCHEMA_VERSION,
};

use crate::engine::{Engine, EngineMeta, EngineResult, Loaded, SequenceEngine};
use crate::rss::process_peak_rss_bytes;
use crate::stepwise::Stepwise;
use crate::BoxError;

#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error("cannot read the request from stdin: {0}")]
    Stdin(std::io::Error),
    #[error("malformed request JSON on stdin: {}", lab_protocol::one_line(&.0.to_string()))]
    MalformedRequest(serde_json::Error),
    #[error("request schema_version is {got}, this engine speaks {expected}")]
    SchemaVersion { got: u32, expected: u32 },
    #[error(
        "scenario `{}`: {}",
        lab_protocol::one_line(scenario),
        lab_protocol::one_line(message)
    )]
    InvalidScenario { scenario: String, message: String },
    #[error("engine error during {phase}: {source}")]
    Engine {
        phase: &'static str,
        source: BoxError,
    },
}

/// Parses and validates a request. Exposed for tests and for engines with their own `main`.
pub fn parse_request(json: &str) -> Result<Request, KitError> {
    let request: Request = serde_json::from_str(json).map_err(KitError::MalformedRequest)?;
    if request.schema_version != SCHEMA_VERSION {
        return Err(KitError::SchemaVersion {
            got: request.schema_version,
            expected: SCHEMA_VERSION,
        });
    }
    for s in &request.scenarios {
        let bad = |message: &str| KitError::InvalidScenario {
            scenario: s.id.clone(),
            message: message.to_string(),
        };
        if s.iterations == 0 {
            return Err(bad("iterations must be at least 1"));
        }
        if s.max_duration_ms == Some(0) {
            return Err(bad("max_duration_ms must be at least 1 (or absent)"));
        }
        if s.max_duration_ms.is_some_and(|max| max < s.min_duration_ms) {
            return Err(bad("min_duration_ms is larger than max_duration_ms"));
        }
        if s.generation.max_new_tokens == 0 {
            return Err(bad("generation.max_new_tokens must be at least 1"));
        }
        if let Some(p) = s.prompts.iter().find(|p| p.token_ids.is_empty()) {
            return Err(bad(&format!("prompt `{}` has no tokens", p.name)));
        }
        validate_load(s).map_err(|m| bad(&m))?;
        if !s.generation.kv_cache && s.kind.is_load() {
            return Err(bad(
                "generation.kv_cache off is for one sequence at a time; load scenarios keep the cache",
            ));
        }
        if let Some(why) = s.generation.sampling.invalid(None) {
            return Err(bad(&format!("generation.sampling: {why}")));
        }
        match (s.kind, &s.sampling_overhead) {
            (ScenarioKind::SamplingOverhead, Some(o)) => {
                if o.strategies.is_empty() || o.samples == 0 {
                    return Err(bad(
                        "sampling_overhead needs one or more strategies and samples of at least 1",
                    ));
                }
                if let Some(why) = o.strategies.iter().find_map(|x| x.invalid(None)) {
                    return Err(bad(&format!("sampling_overhead.strategies: {why}")));
                }
            }
            (ScenarioKind::SamplingOverhead, None) => {
                return Err(bad(
                    "a sampling-overhead scenario needs `sampling_overhead` settings",
                ))
            }
            (k, Some(_)) => {
                return Err(bad(&format!(
                    "`sampling_overhead` does not fit a {k:?} scenario"
                )))
            }
            (_, None) => {}
        }
        validate_micro(s).map_err(|m| bad(&m))?;
        validate_lora(s).map_err(|m| bad(&m))?;
        if s.kind == ScenarioKind::TeacherForced {
            if let Some(p) = s
                .prompts
                .iter()
                .find(|p| p.forced_token_ids.len() as u32 + 1 != s.generation.max_new_tokens)
            {
                return Err(bad(&format!(
                    "prompt `{}` has {} forced tokens; a teacher-forced scenario needs generation.max_new_tokens = forced + 1",
                    p.name,
                    p.forced_token_ids.len()
                )));
            }
        }
    }
    Ok(request)
}

/// The micro settings of a scenario match its kind, and every case can run.
pub(crate) fn validate_micro(s: &lab_protocol::ScenarioRequest) -> Result<(), String> {
    match (s.kind, &s.micro) {
        (ScenarioKind::Micro, Some(m)) => {
            if m.cases.is_empty() {
                return Err("micro.cases is empty".into());
            }
            let mut ids = std::collections::BTreeSet::new();
            for c in &m.cases {
                if !ids.insert(c.id.as_str()) {
                    return Err(format!("micro.cases: the id `{}` appears twice", c.id));
                }
                if let Some(why) = c.op.invalid(&m.model) {
                    return Err(format!("micro.cases `{}`: {why}", c.id));
                }
            }
            Ok(())
        }
        (ScenarioKind::Micro, None) => Err("a micro scenario needs `micro` settings".into()),
        (k, Some(_)) => Err(format!("`micro` does not fit a {k:?} scenario")),
        (_, None) => Ok(()),
    }
}

/// The LoRA settings of a scenario match its kind and can train.
pub(crate) fn validate_lora(s: &lab_protocol::ScenarioRequest) -> Result<(), String> {
    match (s.kind, &s.lora) {
        (ScenarioKind::LoraStep, Some(l)) => lab_protocol::train::invalid(l).map_or(Ok(()), Err),
        (ScenarioKind::LoraStep, None) => Err("a LoRA scenario needs `lora` settings".into()),
        (k, Some(_)) => Err(format!("`lora` does not fit a {k:?} scenario")),
        (_, None) => Ok(()),
    }
}

/// The load settings of a scenario match its kind and ask for something that can run.
fn validate_load(s: &lab_protocol::ScenarioRequest) -> Result<(), String> {
    use lab_protocol::Load;
    match (&s.kind, &s.load) {
        (ScenarioKind::BatchedThroughput, Some(l @ Load::Batches { .. })) => {
            if let Some(why) = l.invalid() {
                return Err(format!("load.{why}"));
            }
            if s.prompts.is_empty() {
                return Err("a batched scenario needs prompts".into());
            }
            let n = s.prompts[0].token_ids.len();
            if let Some(p) = s.prompts.iter().find(|p| p.token_ids.len() != n) {
                return Err(format!(
                    "prompt `{}` has {} tokens, `{}` has {n}: static batches need prompts of equal length",
                    p.name,
                    p.token_ids.len(),
                    s.prompts[0].name
                ));
            }
            Ok(())
        }
        (ScenarioKind::ConcurrentLoad, Some(l @ Load::Concurrent { .. })) => {
            if let Some(why) = l.invalid() {
                return Err(format!("load.{why}"));
            }
            if s.prompts.is_empty() {
                return Err("a concurrent scenario needs prompts (its workload)".into());
            }
            Ok(())
        }
        (k, None) if k.is_load() => Err(format!("a {k:?} scenario needs `load` settings")),
        (k, Some(l)) => Err(format!("`load` {l:?} does not fit a {k:?} scenario")),
        _ => Ok(()),
    }
}

/// The whole engine process: read request, load, run, write report. Every path writes a report;
/// the process exits with status 1 when the report carries a fatal error. Panics inside the
/// engine are caught and reported as errors.
pub fn run_main<E, L>(meta: EngineMeta, load: L) -> !
where
    E: Engine,
    L: FnOnce(&Request) -> EngineResult<Loaded<E>>,
{
    let mut loaded: Option<E> = None;
    let slot = &mut loaded;
    run_main_sequences(meta, move |request| {
        // Moving the captured reference out makes this closure FnOnce, so the engine can be
        // borrowed for as long as `loaded` lives.
        let slot = slot;
        let Loaded { engine, identity } = load(request)?;
        Ok(Loaded {
            engine: Stepwise::new(slot.insert(engine)),
            identity,
        })
    })
}

/// [`run_main`] for engines that implement [`SequenceEngine`].
pub fn run_main_sequences<S, L>(meta: EngineMeta, load: L) -> !
where
    S: SequenceEngine,
    L: FnOnce(&Request) -> EngineResult<Loaded<S>>,
{
    let process_start = crate::phase::main_started();
    let mut parsed: Option<Request> = None;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(process_start, load, &mut parsed)
    }));
    let outcome = match outcome {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(format!("engine panicked: {msg}"))
        }
    };
    let (report, ok) = match outcome {
        Ok(report) => {
            let ok = report.error.is_none();
            (report, ok)
        }
        Err(e) => {
            eprintln!("error: {e}");
            (
                failed_report(failure_identity(&meta, parsed.as_ref()), e),
                false,
            )
        }
    };
    let mut out = std::io::stdout().lock();
    let written = serde_json::to_writer(&mut out, &report)
        .map_err(std::io::Error::from)
        .and_then(|_| out.write_all(b"\n"))
        .and_then(|_| out.flush());
    if let Err(e) = written {
        eprintln!("error: cannot write the report to stdout: {e}");
        std::process::exit(1);
    }
    std::process::exit(if ok { 0 } else { 1 })
}

fn failure_identity(meta: &EngineMeta, request: Option<&Request>) -> EngineIdentity {
    EngineIdentity {
        name: meta.name.to_string(),
        version: meta.version.to_string(),
        backend: meta.backend.to_string(),
        device: request.map(|r| r.device.to_string()).unwrap_or_default(),
        dtype: request
            .map(|r| r.model.dtype.as_str().to_string())
            .unwrap_or_default(),
        weight_format: request
            .map(|r| r.model.format)
            .unwrap_or(lab_protocol::WeightFormat::Safetensors),
        threads: request.and_then(|r| r.threads).unwrap_or(0),
        settings: Default::default(),
    }
}

fn failed_report(engine: EngineIdentity, error: String) -> Report {
    Report {
        schema_version: SCHEMA_VERSION,
        engine,
        load: None,
        memory: MemoryUsage {
            peak_rss_bytes: process_peak_rss_bytes(),
            peak_device_bytes: None,
        },
        scenarios: Vec::new(),
        error: Some(error),
    }
}

fn run<S, L>(
    process_start: Instant,
    load: L,
    parsed: &mut Option<Request>,
) -> Result<Report, KitError>
where
    S: SequenceEngine,
    L: FnOnce(&Request) -> EngineResult<Loaded<S>>,
{
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(KitError::Stdin)?;
    let request = parse_request(&input)?;
    *parsed = Some(request.clone());
    crate::slowdown::factor().map_err(|message| KitError::InvalidScenario {
        scenario: "*".into(),
        message,
    })?;

    eprintln!(
        "loading {} ({:?}, {}) on {}",
        request.model.name,
        request.model.format,
        request.model.dtype.as_str(),
        request.device
    );
    let load_start = Instant::now();
    let Loaded {
        mut engine,
        identity,
    } = load(&request).map_err(|source| KitError::Engine {
        phase: "load",
        source,
    })?;
    engine.synchronize().map_err(|source| KitError::Engine {
        phase: "load",
        source,
    })?;
    crate::phase::phase("ready");
    let mut load = LoadTimings {
        load_ms: load_start.elapsed().as_secs_f64() * 1e3,
        process_start_to_ready_ms: process_start.elapsed().as_secs_f64() * 1e3,
        main_unix_ns: None,
        phases: Vec::new(),
        first_token_ms: None,
    };
    eprintln!("loaded in {:.0} ms", load.load_ms);

    let mut scenarios = Vec::new();
    for scenario in &request.scenarios {
        scenarios.push(if scenario.kind.is_load() {
            crate::scenario::run_load_scenario(&mut engine, scenario)
        } else if scenario.kind == ScenarioKind::Micro {
            crate::micro::run_micro(engine.ops(), scenario)
        } else if scenario.kind == ScenarioKind::LoraStep {
            crate::train::run_lora(engine.lora(), scenario)
        } else {
            crate::scenario::run_sequence_scenario(&mut engine, scenario)
        });
    }
    (load.phases, load.main_unix_ns) = crate::phase::phases();
    load.first_token_ms = crate::phase::first_token_ms();
    Ok(Report {
        schema_version: SCHEMA_VERSION,
        engine: identity,
        load: Some(load),
        memory: MemoryUsage {
            peak_rss_bytes: process_peak_rss_bytes(),
            peak_device_bytes: engine.peak_device_bytes(),
        },
        scenarios,
        error: None,
    })
}
