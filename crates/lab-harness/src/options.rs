//! The bench flags ([`Options`], typed: a bad value is refused by the parser, naming the
//! flag) and their resolution into a [`BenchSpec`] ([`resolve`]): every default applied and
//! every combination checked before anything is built.

use std::collections::BTreeMap;
use std::path::Path;

use lab_gpu::lock::ClockRequest;
use lab_protocol::{Arrival, Device, Dtype, ScenarioKind};
use lab_results::measure::{LoadSettings, Measurement, Profile};
use lab_results::provenance::Provenance;
use lab_results::settings::{LoraSettings, MicroSettings, Price};
use lab_results::startup::StartSettings;

use crate::catalog::{self, Target};
use crate::{container, model, BenchSpec, Error, Result};

macro_rules! bail {
    ($($t:tt)*) => {
        return Err(Error::msg(format!($($t)*)))
    };
}

/// `--telemetry`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Telemetry {
    /// On for `cuda:N` when NVML is present.
    Auto,
    /// Every GPU, any device; an error without NVML.
    On,
    Off,
}

/// `--kv-cache`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvCache {
    On,
    Off,
}

/// `--micro-shapes`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MicroShapes {
    /// The model's shapes.
    Model,
    /// Rows 1/4/16, 16 tokens: a quick check of the path.
    Tiny,
}

/// What `cargo xtask bench` can be asked: every flag that shapes the run's [`BenchSpec`]
/// (the xtask adds where results go and whether to build).
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Run every engine (the default when no --engine is given).
    #[arg(long)]
    pub all: bool,
    /// Engine (`candle`) or target (`candle:hf-f32`); repeatable.
    #[arg(long)]
    pub engine: Vec<String>,
    /// Scenario id (`s1`); repeatable; default: all.
    #[arg(long)]
    pub scenario: Vec<String>,
    /// Measurement profile: `quick` (CI smoke: 1 warm-up + 3 iterations), `budget` (up to 10
    /// iterations within 3 s per prompt: the whole default run in about 15 minutes on 2
    /// cores), `standard` (published numbers and baselines: at least 100 iterations and 10 s per
    /// prompt) or `full` (at least 200 iterations and 30 s) [default: budget on CPU, full on GPU].
    #[arg(long, value_parser = parse_profile)]
    pub profile: Option<Profile>,
    /// Measured iterations per prompt, instead of the profile's (the run is recorded as `custom`).
    #[arg(long)]
    pub iterations: Option<u32>,
    /// Untimed warm-up iterations per prompt, instead of the profile's.
    #[arg(long)]
    pub warmup: Option<u32>,
    /// Run the whole plan this many times, targets interleaved (every target once per run, so
    /// drift hits all engines alike); `check` then gates on the spread between runs.
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// Seconds of idle between two runs of the plan (`--repeat`).
    #[arg(long, default_value_t = 0)]
    pub cooldown_s: u64,
    /// Do not pin engines to CPUs. By default a CPU run pins every engine to CPUs
    /// 0..threads-1 (`taskset` natively, `--cpuset-cpus` in a container) and binds OpenMP
    /// threads to them (`OMP_PROC_BIND`, `OMP_PLACES`).
    #[arg(long)]
    pub no_pin: bool,
    /// Tokens generated per request (fixed length; EOS does not stop generation).
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: u32,
    /// S2 batch sizes (`1,8,32,64`) [default: by profile].
    #[arg(long, value_delimiter = ',')]
    pub batch_sizes: Vec<u32>,
    /// S2: measured seconds per batch size (at least one batch) [default: by profile].
    #[arg(long)]
    pub batch_duration_s: Option<f64>,
    /// S3 concurrency levels (`1,10,25,50,100`) [default: by profile].
    #[arg(long, value_delimiter = ',')]
    pub concurrency: Vec<u32>,
    /// S3 arrivals: `closed` (each client sends its next request when the previous ends) or
    /// `poisson:RATE[:SEED]` (open loop, RATE requests/s, seeded) [default: closed].
    #[arg(long, value_parser = parse_arrival)]
    pub arrival: Option<Arrival>,
    /// S3 requests per concurrency level (never fewer than the level) [default: by profile].
    #[arg(long)]
    pub requests: Option<u32>,
    /// S3: the most sequences an engine decodes together [default: 64].
    #[arg(long)]
    pub max_batch: Option<u32>,
    /// Tokens generated per sequence in S2 and S3, and per prompt in S5 [default: by profile].
    #[arg(long)]
    pub load_new_tokens: Option<u32>,
    /// S5 prompt lengths in tokens (`1024,4096,8064`) [default: by profile].
    #[arg(long, value_delimiter = ',')]
    pub long_lengths: Vec<u32>,
    /// `on` or `off`: S1 and S5 generate with the KV cache or recompute the whole prefix at
    /// every step (refused when a selected engine cannot). The `kv` analysis runs both.
    #[arg(long, value_enum, default_value_t = KvCache::On)]
    pub kv_cache: KvCache,
    /// Stretch every forward step by this share of its own duration (0.1 = 10 % slower
    /// steps): a known regression for the gate study's A/B trials, recorded in the run
    /// (refused when a selected engine cannot).
    #[arg(long)]
    pub slowdown: Option<f64>,
    /// Tokens the KV-cache analysis (`--scenario kv`) generates [default: 64 in quick/budget,
    /// 512 in standard/full].
    #[arg(long)]
    pub kv_tokens: Option<u32>,
    /// Selections timed per strategy by the sampling analysis (`--scenario sampling`)
    /// [default: 1000].
    #[arg(long)]
    pub sampling_samples: Option<u32>,
    /// Sample the timed scenarios at this temperature (> 0) instead of greedy decoding, with
    /// the kit's seeded sampler (correctness scenarios stay greedy).
    #[arg(long, allow_negative_numbers = true)]
    pub temperature: Option<f32>,
    /// With sampling: keep the K most likely tokens (1 ..= vocabulary size).
    #[arg(long)]
    pub top_k: Option<u32>,
    /// With sampling: nucleus sampling, p in (0, 1] [default: 1, no cut].
    #[arg(long, allow_negative_numbers = true)]
    pub top_p: Option<f32>,
    /// With sampling: the generator's seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Named analyses beyond the scenarios; repeatable: `cold-start` (after its run, every
    /// target is started again with a one-token request on a dropped page cache, which needs
    /// root, then on a warm one; each start broken down into its loading phases) and `quant`
    /// (llama.cpp, candle and mistral.rs on every GGUF level of the volume: the shipped Q4_1 and
    /// the derived Q8_0, Q4_0, F16; alone it runs only those, with `--all` everything) and
    /// `micro` (op and component microbenchmarks of candle, burn, the native engine and PyTorch,
    /// each framework's own ops on the model's shapes; alone it runs only those).
    #[arg(long)]
    pub analysis: Vec<String>,
    /// `--analysis micro`.
    #[arg(long)]
    pub micro: bool,
    /// `--analysis lora`: predicted positions of the training sequence [default: 512].
    #[arg(long)]
    pub lora_seq: Option<u32>,
    /// `--analysis lora`: measured steps [default: 20].
    #[arg(long)]
    pub lora_steps: Option<u32>,
    /// `--analysis lora`: warm-up steps before them [default: 2].
    #[arg(long)]
    pub lora_warmup: Option<u32>,
    /// `--analysis micro`: the dtypes every case runs in [default: f32,bf16 on the CPU;
    /// f32,f16,bf16 on CUDA].
    #[arg(long, value_delimiter = ',', value_parser = parse_micro_dtype)]
    pub micro_dtypes: Vec<Dtype>,
    /// `--analysis micro`: timed calls per case [default: 100].
    #[arg(long)]
    pub micro_samples: Option<u32>,
    /// `--analysis micro`: untimed calls per case before them [default: 3 in quick/budget, 10
    /// in standard/full].
    #[arg(long)]
    pub micro_warmup: Option<u32>,
    /// `--analysis micro`: seconds of timed calls after which a case stops, even short of its
    /// samples (at least one call; fewer than 100 are marked) [default: 2 in quick/budget, 20 in
    /// standard, none in full].
    #[arg(long, allow_negative_numbers = true)]
    pub micro_case_s: Option<f64>,
    /// `--analysis micro`: `model` (the model's shapes) or `tiny` (rows 1/4/16, 16 tokens: a
    /// quick check of the path).
    #[arg(long, value_enum, default_value_t = MicroShapes::Model)]
    pub micro_shapes: MicroShapes,
    /// `--analysis cold-start`: starts on a dropped page cache, and then on a warm one.
    #[arg(long, default_value_t = 1)]
    pub cold_starts: u32,
    #[arg(long, default_value_t = 3)]
    pub warm_starts: u32,
    /// Model volume entry (`smollm2-135m`, `synthetic-llama-3.2-1b`) or a path to an HF Llama directory.
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: Device,
    /// CPU threads given to every engine [default: all logical CPUs].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Per-engine wall-clock limit; a hung engine is killed and recorded as failed.
    #[arg(long, default_value_t = 1800)]
    pub timeout_s: u64,
    /// Name of the run directory [default: <UTC time>-<git short rev>].
    #[arg(long)]
    pub run_id: Option<String>,
    /// How engines are started: `auto` (podman, else docker, else native processes), `native`,
    /// `podman` or `docker`. In a container an engine has no network, a read-only model volume
    /// and an unprivileged user; its image ID goes into the result. A list (`native,podman`)
    /// runs every target under each runtime in turn, labelled `target@runtime`, to measure
    /// container overhead side by side.
    #[arg(long, default_value = "auto", value_delimiter = ',', value_parser = parse_runtime)]
    pub runtime: Vec<String>,
    /// Pin every engine to these CPUs (`0-3`, `0,2`): `--cpuset-cpus` in a container, `taskset`
    /// natively. The default thread count becomes the number of CPUs in the set.
    #[arg(long, value_parser = parse_cpuset)]
    pub cpuset_cpus: Option<String>,
    /// The most memory an engine may take, MiB: in a container its memory cgroup (no swap
    /// beyond it; exceeding it kills the engine, recorded as out of memory), natively the
    /// address space (`ulimit -v`: memory maps and thread stacks count, so leave room).
    /// Default: containers 90 % of the host's memory, native processes unlimited. Recorded in
    /// every result (`limits`).
    #[arg(long, value_name = "MIB")]
    pub memory_limit: Option<u64>,
    /// The most processes and threads an engine container may have (default 4096); recorded
    /// in every result. Native processes have no such limit.
    #[arg(long, value_name = "N")]
    pub pids_limit: Option<u64>,
    /// Run engine E from an existing image instead of building one (`candle=REF`; repeatable),
    /// e.g. the flake's CUDA images after `podman load`. A GPU run in containers needs one for
    /// every engine; GPUs are passed with CDI (`--device nvidia.com/gpu=all`).
    #[arg(long = "image", value_name = "ENGINE=REF")]
    pub images: Vec<String>,
    /// Lock GPU clocks for the run: `base` (default applications clocks), `max` (highest
    /// supported) or `<sm-MHz>[,<mem-MHz>]` (memory: Ampere and newer). Needs root. The state
    /// before is saved to a state file first and restored at the end, on error, on Ctrl-C and
    /// on panic; after a SIGKILL the next `bench` (or `cargo xtask gpu reset`) restores it.
    #[arg(long, value_parser = parse_clocks)]
    pub lock_clocks: Option<ClockRequest>,
    /// With --lock-clocks: print what would be locked and restored, change nothing (the run
    /// goes ahead unlocked, recorded as such).
    #[arg(long)]
    pub dry_run: bool,
    /// GPU telemetry sampled around every engine (utilization, clocks, power, energy,
    /// throttling, memory): `auto` (on for `cuda:N` when NVML is present), `on` (every GPU,
    /// any device; an error without NVML) or `off`.
    #[arg(long, value_enum, default_value_t = Telemetry::Auto)]
    pub telemetry: Telemetry,
    /// GPU telemetry sampling period in ms.
    #[arg(long, default_value_t = 100)]
    pub telemetry_period_ms: u64,
}

/// `cpu` or `cuda:N` (`cuda` is `cuda:0`).
pub fn parse_device(s: &str) -> Result<Device> {
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    if let Some(n) = s
        .strip_prefix("cuda:")
        .or(if s == "cuda" { Some("0") } else { None })
    {
        let ordinal = n
            .parse()
            .map_err(|_| Error::msg(format!("--device {s}: expected cuda:<ordinal>")))?;
        return Ok(Device::Cuda { ordinal });
    }
    bail!("--device {s}: expected `cpu` or `cuda:<ordinal>`")
}

fn parse_profile(s: &str) -> std::result::Result<Profile, String> {
    Profile::parse(s)
}

/// `auto`, `native`, `podman` or `docker`.
fn parse_runtime(s: &str) -> Result<String> {
    let s = s.trim();
    container::runtime_kind(s)?;
    Ok(s.to_string())
}

fn parse_clocks(s: &str) -> std::result::Result<ClockRequest, String> {
    s.parse::<ClockRequest>()
}

fn parse_micro_dtype(s: &str) -> Result<Dtype> {
    match s.trim() {
        "f32" => Ok(Dtype::F32),
        "f16" => Ok(Dtype::F16),
        "bf16" => Ok(Dtype::Bf16),
        other => bail!("--micro-dtypes {other}: expected f32, f16 or bf16"),
    }
}

/// A cpuset list (`0-3,6`), checked.
fn parse_cpuset(s: &str) -> Result<String> {
    cpuset_len(s).map(|_| s.to_string())
}

/// The number of CPUs in a cpuset list (`0-3,6` → 5).
pub fn cpuset_len(list: &str) -> Result<usize> {
    let mut n = 0;
    for part in list.split(',') {
        let bad = || {
            Error::msg(format!(
                "--cpuset-cpus {list}: expected a list like `0-3,6`"
            ))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if b < a {
                    return Err(bad());
                }
                n += b - a + 1;
            }
            None => {
                part.parse::<usize>().map_err(|_| bad())?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// `closed` or `poisson:RATE[:SEED]`.
pub fn parse_arrival(a: &str) -> Result<Arrival> {
    let bad = || {
        Error::msg(format!(
            "--arrival {a}: expected `closed` or `poisson:RATE[:SEED]` with RATE > 0 requests/s"
        ))
    };
    if a == "closed" {
        return Ok(Arrival::Closed);
    }
    let rest = a.strip_prefix("poisson:").ok_or_else(bad)?;
    let (rate, seed) = rest.split_once(':').unwrap_or((rest, "0"));
    let rate_per_s: f64 = rate.parse().map_err(|_| bad())?;
    let seed: u64 = seed.parse().map_err(|_| bad())?;
    if !(rate_per_s.is_finite() && rate_per_s > 0.0) {
        return Err(bad());
    }
    Ok(Arrival::Poisson { rate_per_s, seed })
}

/// The sampling period, when telemetry is on for this device (`--telemetry`).
fn telemetry_period(o: &Options, device: &Device) -> Result<Option<u64>> {
    if o.telemetry_period_ms == 0 {
        bail!("--telemetry-period-ms must be at least 1");
    }
    if o.dry_run && o.lock_clocks.is_none() {
        bail!("--dry-run only applies to --lock-clocks");
    }
    Ok(match o.telemetry {
        Telemetry::Off => None,
        Telemetry::On => Some(o.telemetry_period_ms),
        Telemetry::Auto => matches!(device, Device::Cuda { .. }).then_some(o.telemetry_period_ms),
    })
}

/// A resource limit flag: absent, or a positive number.
fn positive(flag: &str, v: Option<u64>) -> Result<Option<u64>> {
    match v {
        Some(0) => bail!("{flag} 0: a limit must be positive"),
        v => Ok(v),
    }
}

/// Resolves the flags (and the price, from the xtask's price flags) into what the run will do;
/// checks every flag before anything is built. `root`: the checkout (a model directory inside it
/// is recorded relative to it).
pub fn resolve(
    o: &Options,
    price: Option<Price>,
    prov: &Provenance,
    root: &Path,
) -> Result<BenchSpec> {
    let device = o.device.clone();
    let gpu = !matches!(device, Device::Cpu);
    let runtimes = o.runtime.clone();
    let cpuset = o.cpuset_cpus.as_deref().map(cpuset_len).transpose()?;
    let micro = micro(o, &device)?;
    let lora = lora(o)?;
    let (engines, scenario_specs) = selection(o, &device, micro.is_some(), lora.is_some())?;
    let (targets, unsupported) = catalog::select_targets_on(&engines, &device)?;
    if targets.is_empty() {
        bail!(
            "nothing to run on {device}: {}",
            unsupported
                .iter()
                .map(|(t, why)| format!("{t}: {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    let scenarios = catalog::select_scenarios(&scenario_specs)?;
    let m = measurement(o, &device)?;
    let micro = micro.map(|f| f(m.0));
    if o.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    if o.max_new_tokens == 0 {
        bail!("--max-new-tokens must be at least 1");
    }
    let images = images(o, &targets)?;
    let (threads, cpuset_cpus) = threads_and_pinning(o, gpu, cpuset)?;
    let run_id = run_id(o, prov);
    Ok(BenchSpec {
        run_id,
        // A directory is recorded relative to the checkout when it lies inside it.
        model: if model::is_entry_name(&o.model) {
            o.model.clone()
        } else {
            crate::display_path(root, Path::new(&o.model))
        },
        // What was asked for on this device, the targets it cannot run included (they are
        // recorded as skipped with the reason).
        targets: targets
            .iter()
            .map(Target::label)
            .chain(unsupported.iter().map(|(t, _)| t.clone()))
            .collect(),
        scenarios: scenarios.iter().map(|s| s.id.to_string()).collect(),
        telemetry_period_ms: telemetry_period(o, &device)?,
        device,
        threads,
        measure: m.0,
        warmup_iterations: m.1.warmup,
        iterations: m.1.iterations,
        min_duration_ms: m.1.min_duration_ms,
        max_duration_ms: m.1.max_duration_ms,
        repeat: o.repeat,
        cooldown_s: o.cooldown_s,
        max_new_tokens: o.max_new_tokens,
        timeout_s: o.timeout_s,
        runtimes,
        cpuset_cpus,
        images,
        load: Some(load_settings(o, m.0)?),
        price,
        sampling: sampling(o)?,
        kv_cache_off: kv_cache_off(o, &targets)?,
        slowdown: slowdown(o, &targets)?,
        startup: startup(o)?,
        micro,
        lora,
        memory_limit_mib: positive("--memory-limit", o.memory_limit)?,
        pids_limit: positive("--pids-limit", o.pids_limit)?,
        lock_clocks: o.lock_clocks.as_ref().map(ClockRequest::to_string),
    })
}

/// The engines (`--engine`, with what `--analysis quant`, `micro` and `lora` add) and the
/// scenario ids to select. The named analyses that are scenarios of their own (not in a default
/// run) alone run only themselves on their frameworks' targets; with `--all` (or named
/// scenarios and engines) they come on top.
fn selection(
    o: &Options,
    device: &Device,
    micro: bool,
    lora: bool,
) -> Result<(Vec<String>, Vec<String>)> {
    // `--analysis quant` adds every GGUF level of the GGUF engines (alone: only those).
    let mut engines = o.engine.clone();
    if o.analysis.iter().any(|a| a == "quant") {
        if o.all && engines.is_empty() {
            engines = catalog::targets_on(device)
                .iter()
                .map(Target::label)
                .collect();
        }
        engines.push("quant".into());
    }
    let mut analyses: Vec<&str> = Vec::new();
    if micro {
        analyses.push("micro");
    }
    if lora {
        analyses.push("lora");
    }
    let mut scenario_specs = o.scenario.clone();
    if !analyses.is_empty() {
        if o.engine.is_empty() {
            if o.all && engines.is_empty() {
                engines = catalog::targets_on(device)
                    .iter()
                    .map(Target::label)
                    .collect();
            } else if !o.all {
                engines.extend(analyses.iter().map(|a| a.to_string()));
            }
        }
        if scenario_specs.is_empty() && o.all {
            scenario_specs = catalog::select_scenarios(&[])?
                .iter()
                .map(|s| s.id.to_string())
                .collect();
        }
        scenario_specs.extend(analyses.iter().map(|a| a.to_string()));
    }
    Ok((engines, scenario_specs))
}

/// `--image ENGINE=REF`, each naming a selected engine.
fn images(o: &Options, targets: &[Target]) -> Result<BTreeMap<String, String>> {
    let mut images = BTreeMap::new();
    for spec in &o.images {
        let (engine, reference) = spec
            .split_once('=')
            .filter(|(e, r)| !e.is_empty() && !r.is_empty())
            .ok_or_else(|| Error::msg(format!("--image {spec}: expected ENGINE=REF (candle=inference-lab/engine-candle-cuda:nix-0.0.0)")))?;
        if !targets.iter().any(|t| t.engine == engine) {
            bail!("--image {spec}: no selected engine is called `{engine}`");
        }
        images.insert(engine.to_string(), reference.to_string());
    }
    Ok(images)
}

/// The threads every engine gets and the CPUs it is pinned to: `--threads`, else the cpuset's
/// size, else every CPU; pinned by default on CPU to the first `threads` CPUs (when there are
/// that many), unless `--no-pin`.
fn threads_and_pinning(
    o: &Options,
    gpu: bool,
    cpuset: Option<usize>,
) -> Result<(usize, Option<String>)> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads = o.threads.or(cpuset).unwrap_or(cpus);
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    let cpuset_cpus = match (&o.cpuset_cpus, gpu || o.no_pin) {
        (Some(c), _) => Some(c.clone()),
        (None, false) if threads <= cpus => Some(if threads == 1 {
            "0".to_string()
        } else {
            format!("0-{}", threads - 1)
        }),
        _ => None,
    };
    Ok((threads, cpuset_cpus))
}

/// `--run-id`, else `<UTC start>-<short git revision>`.
fn run_id(o: &Options, prov: &Provenance) -> String {
    o.run_id.clone().unwrap_or_else(|| {
        let t = prov.started_at.replace(['-', ':'], "");
        format!(
            "{}-{}",
            t.trim_end_matches('Z'),
            prov.git_rev.get(..7).unwrap_or("norev")
        )
    })
}

/// The load-scenario settings: the profile's, changed by the flags; zeros are refused here,
/// before anything is built.
fn load_settings(o: &Options, profile: Profile) -> Result<LoadSettings> {
    let mut l = profile.load_settings();
    if !o.batch_sizes.is_empty() {
        l.batch_sizes = o.batch_sizes.clone();
    }
    if !o.concurrency.is_empty() {
        l.concurrency = o.concurrency.clone();
    }
    if let Some(d) = o.batch_duration_s {
        if !(d.is_finite() && d >= 0.0) {
            bail!("--batch-duration-s must be a number of seconds, not {d}");
        }
        l.batch_duration_ms = (d * 1e3) as u64;
    }
    l.requests = o.requests.unwrap_or(l.requests);
    l.max_batch = o.max_batch.unwrap_or(l.max_batch);
    match o.load_new_tokens {
        Some(0) => bail!("--load-new-tokens must be at least 1"),
        Some(n) => {
            l.new_tokens = n;
            l.long_new_tokens = n;
        }
        None => {}
    }
    if let Some(a) = &o.arrival {
        l.arrival = a.clone();
    }
    if !o.long_lengths.is_empty() {
        if o.long_lengths.contains(&0) {
            bail!("--long-lengths: every length must be at least 1");
        }
        l.long_lengths = Some(o.long_lengths.clone());
    }
    for (flag, v, field) in [
        ("--kv-tokens", o.kv_tokens, &mut l.kv_new_tokens),
        (
            "--sampling-samples",
            o.sampling_samples,
            &mut l.sampling_samples,
        ),
    ] {
        match v {
            Some(0) => bail!("{flag} must be at least 1"),
            Some(v) => *field = v,
            None => {}
        }
    }
    // The protocol's own rule for what a load can run (`Load::invalid`), named by flag.
    const FLAGS: [(&str, &str); 5] = [
        ("batch_sizes", "--batch-sizes"),
        ("concurrency", "--concurrency"),
        ("requests", "--requests"),
        ("max_batch", "--max-batch"),
        ("arrival", "--arrival"),
    ];
    for kind in [
        ScenarioKind::BatchedThroughput,
        ScenarioKind::ConcurrentLoad,
    ] {
        if let Some(why) = crate::plan::load_request(kind, &l).and_then(|r| r.invalid()) {
            let flag = FLAGS
                .iter()
                .find(|(field, _)| why.starts_with(field))
                .map_or("--load", |(_, flag)| flag);
            bail!("{flag}: {why}");
        }
    }
    Ok(l)
}

/// `--temperature`/`--top-k`/`--top-p`/`--seed` as the protocol's sampling (none: greedy),
/// checked before anything is built (the vocabulary bound once the model is known).
fn sampling(o: &Options) -> Result<Option<lab_protocol::Sampling>> {
    if o.temperature.is_none() && o.top_k.is_none() && o.top_p.is_none() {
        return Ok(None);
    }
    let s = lab_protocol::Sampling::TopP {
        temperature: o.temperature.unwrap_or(1.0),
        top_p: o.top_p.unwrap_or(1.0),
        seed: o.seed,
        top_k: o.top_k,
    };
    match s.invalid(None) {
        Some(why) => bail!("--temperature/--top-k/--top-p: {why}"),
        None => Ok(Some(s)),
    }
}

/// `--kv-cache on|off`; `off` is refused when a selected engine cannot generate without it.
fn kv_cache_off(o: &Options, targets: &[Target]) -> Result<bool> {
    match o.kv_cache {
        KvCache::On => Ok(false),
        KvCache::Off => {
            if let Some((t, why)) = targets
                .iter()
                .find_map(|t| catalog::kv_cache_off_unsupported(t.engine).map(|w| (t, w)))
            {
                bail!(
                    "--kv-cache off: {} cannot: {why}; leave it out (`--engine`) or run the `kv` analysis, which records it as unsupported",
                    t.label()
                );
            }
            Ok(true)
        }
    }
}

/// `--slowdown S`: a share between 0 (exclusive) and 1, and every selected engine able to.
fn slowdown(o: &Options, targets: &[Target]) -> Result<Option<f64>> {
    let Some(s) = o.slowdown else {
        return Ok(None);
    };
    if !(s > 0.0 && s <= 1.0) {
        bail!("--slowdown {s}: a share of each step's duration, above 0 and at most 1 (0.1 = 10 % slower steps)");
    }
    if let Some((t, why)) = targets
        .iter()
        .find_map(|t| catalog::slowdown_unsupported(t.engine).map(|w| (t, w)))
    {
        bail!(
            "--slowdown: {} cannot: {why}; leave it out (`--engine`)",
            t.label()
        );
    }
    Ok(Some(s))
}

/// `--analysis`: the named analyses; `cold-start` is refused here when the page cache cannot be
/// dropped (before anything is built).
fn startup(o: &Options) -> Result<Option<StartSettings>> {
    let mut out = None;
    for a in &o.analysis {
        match a.as_str() {
            "quant" | "micro" | "lora" => {} // targets and scenarios, selected in `plan`
            "cold-start" => {
                if o.cold_starts + o.warm_starts == 0 {
                    bail!("--analysis cold-start: --cold-starts and --warm-starts are both 0");
                }
                let s = StartSettings {
                    cold: o.cold_starts,
                    warm: o.warm_starts,
                    drop_caches_file: None,
                };
                if s.cold > 0 {
                    crate::startup::check_can_drop(&s)?;
                }
                out = Some(s);
            }
            other => bail!(
                "--analysis {other}: unknown analysis (known: cold-start, quant, micro, lora; the KV-cache and sampling analyses are scenarios: --scenario kv, --scenario sampling)"
            ),
        }
    }
    Ok(out)
}

/// `--analysis micro` (or `--micro`) and its flags, checked before anything is built; the
/// profile's defaults are applied once the profile is known.
#[allow(clippy::type_complexity)]
fn micro(
    o: &Options,
    device: &Device,
) -> Result<Option<Box<dyn FnOnce(Profile) -> MicroSettings>>> {
    let asked = o.micro || o.analysis.iter().any(|a| a == "micro");
    let set = !o.micro_dtypes.is_empty()
        || o.micro_samples.is_some()
        || o.micro_warmup.is_some()
        || o.micro_case_s.is_some()
        || o.micro_shapes != MicroShapes::Model;
    if !asked {
        if set {
            bail!("--micro-dtypes/--micro-samples/--micro-warmup/--micro-case-s/--micro-shapes need --analysis micro");
        }
        return Ok(None);
    }
    let dtypes: Vec<Dtype> = if o.micro_dtypes.is_empty() {
        match device {
            Device::Cpu => vec![Dtype::F32, Dtype::Bf16],
            Device::Cuda { .. } => vec![Dtype::F32, Dtype::F16, Dtype::Bf16],
        }
    } else {
        let mut out = Vec::new();
        for d in &o.micro_dtypes {
            if !out.contains(d) {
                out.push(*d);
            }
        }
        out
    };
    if o.micro_samples == Some(0) {
        bail!("--micro-samples must be at least 1");
    }
    if let Some(s) = o.micro_case_s {
        if !(s.is_finite() && s > 0.0) {
            bail!("--micro-case-s must be a positive number of seconds, not {s}");
        }
    }
    let tiny = o.micro_shapes == MicroShapes::Tiny;
    let (samples, warmup, case_s, seed) = (o.micro_samples, o.micro_warmup, o.micro_case_s, o.seed);
    Ok(Some(Box::new(move |profile: Profile| {
        let small = matches!(profile, Profile::Quick | Profile::Budget | Profile::Custom);
        MicroSettings {
            dtypes,
            samples: samples.unwrap_or(lab_results::measure::MIN_SAMPLES as u32),
            warmup: warmup.unwrap_or(if small { 3 } else { 10 }),
            max_case_ms: match case_s {
                Some(s) => Some((s * 1e3) as u64),
                None => match profile {
                    Profile::Full => None,
                    Profile::Standard => Some(20_000),
                    _ => Some(2_000),
                },
            },
            seed,
            tiny,
        }
    })))
}

/// `--analysis lora` and its flags, checked before anything is built.
fn lora(o: &Options) -> Result<Option<LoraSettings>> {
    let asked = o.analysis.iter().any(|a| a == "lora");
    let set = o.lora_seq.is_some() || o.lora_steps.is_some() || o.lora_warmup.is_some();
    if !asked {
        if set {
            bail!("--lora-seq/--lora-steps/--lora-warmup need --analysis lora");
        }
        return Ok(None);
    }
    for (flag, v) in [("--lora-seq", o.lora_seq), ("--lora-steps", o.lora_steps)] {
        if v == Some(0) {
            bail!("{flag} must be at least 1");
        }
    }
    Ok(Some(LoraSettings::standard(
        o.lora_seq.unwrap_or(512),
        o.lora_steps.unwrap_or(20),
        o.lora_warmup.unwrap_or(2),
        o.seed,
    )))
}

/// The measurement profile and its settings: `--profile` (default: by device), with
/// `--iterations` / `--warmup` overriding the counts (the run is then `custom`).
fn measurement(o: &Options, device: &Device) -> Result<(Profile, Measurement)> {
    let profile = match &o.profile {
        Some(p) => *p,
        None if o.iterations.is_some() || o.warmup.is_some() => Profile::Quick,
        None => Profile::default_for(device),
    };
    let mut m = profile.measurement().expect("a named profile");
    if o.profile.is_none() && (o.iterations.is_some() || o.warmup.is_some()) {
        // Counts only: no time rules the flags did not ask for.
        m.min_duration_ms = 0;
        m.max_duration_ms = None;
    }
    let custom = o.iterations.is_some() || o.warmup.is_some();
    m.iterations = o.iterations.unwrap_or(m.iterations);
    m.warmup = o.warmup.unwrap_or(m.warmup);
    if m.iterations == 0 {
        bail!("--iterations must be at least 1");
    }
    Ok((if custom { Profile::Custom } else { profile }, m))
}

#[cfg(test)]
mod tests;
