//! `cargo xtask bench`: build engines, make sure the model volume exists, run the scenarios,
//! write `results/<run-id>/` and print the summary table.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lab_harness::catalog::{self, EngineKind, Target};
use lab_harness::{container, model, provenance, BenchPlan, PreparedTarget};
use lab_protocol::Device;
use xshell::cmd;

use crate::paths;

/// Iterations per prompt when none are given: enough for stable medians, small enough for CPU.
pub const CPU_ITERATIONS: u32 = 10;
pub const CPU_WARMUP: u32 = 1;
pub const GPU_ITERATIONS: u32 = 100;
pub const GPU_WARMUP: u32 = 5;

#[derive(clap::Args)]
pub struct Flags {
    /// Run every engine (the default when no --engine is given).
    #[arg(long)]
    pub all: bool,
    /// Engine (`candle`) or target (`candle:hf-f32`); repeatable.
    #[arg(long)]
    pub engine: Vec<String>,
    /// Scenario id (`s1`); repeatable; default: all.
    #[arg(long)]
    pub scenario: Vec<String>,
    /// Measured iterations per prompt [default: 10 on CPU, 100 on GPU].
    #[arg(long)]
    pub iterations: Option<u32>,
    /// Untimed warm-up iterations per prompt [default: 1 on CPU, 5 on GPU].
    #[arg(long)]
    pub warmup: Option<u32>,
    /// Tokens generated per request (fixed length; EOS does not stop generation).
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: u32,
    /// Model volume entry (`smollm2-135m`, `synthetic-llama-3.2-1b`) or a path to an HF Llama directory.
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// CPU threads given to every engine [default: all logical CPUs].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Per-engine wall-clock limit; a hung engine is killed and recorded as failed.
    #[arg(long, default_value_t = 1800)]
    pub timeout_s: u64,
    /// Where run directories go.
    #[arg(long)]
    pub results_dir: Option<PathBuf>,
    /// Name of the run directory [default: <UTC time>-<git short rev>].
    #[arg(long)]
    pub run_id: Option<String>,
    /// Use the engine binaries already built (skip `cargo build`).
    #[arg(long)]
    pub no_build: bool,
    /// How engines are started: `auto` (podman, else docker, else native processes), `native`,
    /// `podman` or `docker`. In a container an engine has no network, a read-only model volume
    /// and an unprivileged user; its image ID goes into the result. A list (`native,podman`)
    /// runs every target under each runtime in turn, labelled `target@runtime`, to measure
    /// container overhead side by side.
    #[arg(long, default_value = "auto")]
    pub runtime: String,
    /// Pin every engine to these CPUs (`0-3`, `0,2`): `--cpuset-cpus` in a container, `taskset`
    /// natively. The default thread count becomes the number of CPUs in the set.
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Run engine E from an existing image instead of building one (`candle=REF`; repeatable),
    /// e.g. the flake's CUDA images after `podman load`. A GPU run in containers needs one for
    /// every engine; GPUs are passed with CDI (`--device nvidia.com/gpu=all`).
    #[arg(long = "image", value_name = "ENGINE=REF")]
    pub images: Vec<String>,
}

/// The number of CPUs in a cpuset list (`0-3,6` → 5).
pub fn cpuset_len(list: &str) -> Result<usize> {
    let mut n = 0;
    for part in list.split(',') {
        let bad = || anyhow::anyhow!("--cpuset-cpus {list}: expected a list like `0-3,6`");
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

/// Which container runtime to use, if any, for `--runtime` and the device; says what it chose.
/// `gpu` means a GPU run without prebuilt (`--image`) images: the images this xtask builds are
/// CPU builds, so such a run stays native.
pub fn choose_runtime(
    root: &std::path::Path,
    flag: &str,
    gpu: bool,
) -> Result<Option<container::Engine>> {
    match container::Runtime::parse(flag)? {
        Some(container::Runtime::Native) => {
            eprintln!("runtime: native (--runtime native)");
            Ok(None)
        }
        Some(rt) => {
            if gpu {
                bail!(
                    "--runtime {}: the images `cargo xtask images` builds are CPU builds; on a GPU run the engines run natively (--runtime native), or give the flake's CUDA images with --image ENGINE=REF (see README.md, Containers)",
                    rt.name()
                );
            }
            let e = container::probe(root, rt)
                .map_err(|why| anyhow::anyhow!("--runtime {}: {why}", rt.name()))?;
            eprintln!("runtime: {} ({})", rt.name(), e.version);
            Ok(Some(e))
        }
        None if gpu => {
            eprintln!(
                "runtime: native (auto: GPU run; the images `cargo xtask images` builds are CPU builds)"
            );
            Ok(None)
        }
        None => {
            let (e, why) = container::detect(root);
            match &e {
                Some(e) => eprintln!("runtime: {} (auto: {why})", e.runtime.name()),
                None => eprintln!("runtime: native (auto: {why})"),
            }
            Ok(e)
        }
    }
}

/// `cargo build --release` of each package (with the `cuda` feature for GPU runs).
pub fn build_packages(packages: &[&str], gpu: bool) -> Result<()> {
    let sh = paths::shell()?;
    crate::deps::ensure_for(packages)?;
    let features: Vec<String> = if gpu {
        vec!["--features".into(), "cuda".into()]
    } else {
        Vec::new()
    };
    for p in packages {
        eprintln!("building {p} (release)");
        let f = features.clone();
        cmd!(sh, "cargo build --release -p {p} {f...}")
            .run()
            .with_context(|| format!("building {p}"))?;
    }
    Ok(())
}

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
            .with_context(|| format!("--device {s}: expected cuda:<ordinal>"))?;
        return Ok(Device::Cuda { ordinal });
    }
    bail!("--device {s}: expected `cpu` or `cuda:<ordinal>`")
}

pub fn run(flags: Flags) -> Result<()> {
    let device = parse_device(&flags.device)?;
    let gpu = !matches!(device, Device::Cpu);
    let runtime_specs: Vec<&str> = flags.runtime.split(',').map(str::trim).collect();
    for r in &runtime_specs {
        container::Runtime::parse(r)?;
    }
    let cpuset = flags.cpuset_cpus.as_deref().map(cpuset_len).transpose()?;
    let targets = catalog::select_targets(&flags.engine)?;
    let scenarios = catalog::select_scenarios(&flags.scenario)?;
    let iterations = flags
        .iterations
        .unwrap_or(if gpu { GPU_ITERATIONS } else { CPU_ITERATIONS });
    let warmup = flags
        .warmup
        .unwrap_or(if gpu { GPU_WARMUP } else { CPU_WARMUP });
    if iterations == 0 {
        bail!("--iterations must be at least 1");
    }
    if flags.max_new_tokens == 0 {
        bail!("--max-new-tokens must be at least 1");
    }

    let root = paths::root();
    if model::is_entry_name(&flags.model)
        && !paths::models_dir()
            .join(&flags.model)
            .join("MANIFEST.json")
            .exists()
    {
        eprintln!(
            "model volume entry `{}` is missing: materialising it",
            flags.model
        );
        crate::models::ensure(&flags.model)?;
    }
    let resolved = model::resolve(&paths::models_dir(), &flags.model)?;

    // Targets whose weight format the model lacks are skipped, visibly.
    let mut runnable: Vec<Target> = Vec::new();
    let mut skipped = Vec::new();
    for t in targets {
        if resolved.formats.contains(&t.format) {
            runnable.push(t);
        } else {
            let why = format!("model `{}` has no {:?} weights", resolved.name, t.format);
            eprintln!("skipping {}: {why}", t.label());
            skipped.push((t.label(), why));
        }
    }
    if runnable.is_empty() {
        bail!(
            "nothing to run: no selected engine can load model `{}`",
            resolved.name
        );
    }

    let python = if runnable.iter().any(|t| t.kind == EngineKind::Python) {
        Some(crate::pyenv::ensure(false)?)
    } else {
        None
    };
    if !flags.no_build {
        let mut packages: Vec<&str> = runnable
            .iter()
            .filter(|t| t.kind == EngineKind::Rust)
            .map(|t| t.package)
            .collect();
        packages.dedup();
        build_packages(&packages, gpu)?;
    }
    // One runtime normally; several (`native,podman`) run every target under each, side by side,
    // labelled `target@runtime`.
    let mut images = std::collections::BTreeMap::new();
    for spec in &flags.images {
        let (engine, reference) = spec
            .split_once('=')
            .filter(|(e, r)| !e.is_empty() && !r.is_empty())
            .with_context(|| format!("--image {spec}: expected ENGINE=REF (candle=inference-lab/engine-candle-cuda:nix-0.0.0)"))?;
        if !runnable.iter().any(|t| t.engine == engine) {
            bail!("--image {spec}: no selected engine is called `{engine}`");
        }
        images.insert(engine.to_string(), reference.to_string());
    }
    let runtimes = runtime_specs
        .iter()
        .map(|r| choose_runtime(&root, r, gpu && images.is_empty()))
        .collect::<Result<Vec<_>>>()?;
    let runtime_name =
        |e: &Option<container::Engine>| e.as_ref().map_or("native", |e| e.runtime.name());
    let compare = runtimes.len() > 1;

    let threads = flags.threads.or(cpuset).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let started = provenance::now_unix();
    let prov = provenance::collect(&root, provenance::rfc3339(started));
    let profile = provenance::hardware_profile(&prov.host, &device, threads);
    let run_id = flags.run_id.clone().unwrap_or_else(|| {
        let t = provenance::rfc3339(started).replace(['-', ':'], "");
        format!(
            "{}-{}",
            t.trim_end_matches('Z'),
            prov.git_rev.get(..7).unwrap_or("norev")
        )
    });
    let results_dir = flags
        .results_dir
        .clone()
        .unwrap_or_else(|| root.join("results"));
    let run_dir = results_dir.join(&run_id);
    if run_dir.exists() {
        bail!(
            "{} already exists: choose another --run-id",
            run_dir.display()
        );
    }

    let sandbox = container::Sandbox {
        cpuset_cpus: flags.cpuset_cpus.clone(),
        gpus: gpu,
    };
    let mut per_runtime = Vec::new();
    for t in &runnable {
        for r in &runtimes {
            per_runtime.push((t.clone(), r));
        }
    }
    let prepared = per_runtime
        .into_iter()
        .map(|(t, container_engine)| {
            let (mut launch, binary) = lab_harness::launch::launch_for(
                &t,
                &root,
                &paths::target_dir().join("release"),
                python.as_deref(),
                threads,
            )?;
            if let (Some(cpus), None) = (&flags.cpuset_cpus, &container_engine) {
                let mut args = vec!["-c".to_string(), cpus.clone(), launch.program];
                args.extend(launch.args);
                launch.program = "taskset".into();
                launch.args = args;
            }
            let native = PreparedTarget {
                target: t,
                launch,
                binary,
                model_dir_for_engine: resolved.dir.display().to_string(),
                image_digest: None,
                runtime: "native".into(),
                label_suffix: if compare {
                    format!("@{}", runtime_name(container_engine))
                } else {
                    String::new()
                },
            };
            let Some(engine) = container_engine else {
                return Ok(native);
            };
            let label = native.label();
            let prebuilt = images.get(native.target.engine).map(String::as_str);
            if gpu && prebuilt.is_none() {
                bail!(
                    "{label}: a GPU run in containers needs --image {}=REF (the images built here are CPU builds)",
                    native.target.engine
                );
            }
            let t = container::containerize(
                &root,
                engine,
                native,
                &resolved.dir,
                &paths::target_dir().join("lab-images"),
                &sandbox,
                &prov,
                prebuilt,
            )
            .with_context(|| format!("{label}: preparing its container"))?;
            match &t.image_digest {
                Some(id) => eprintln!("{label}: image {id}"),
                None => eprintln!("{label}: {}", t.runtime),
            }
            Ok(t)
        })
        .collect::<Result<Vec<_>>>()?;

    let plan = BenchPlan {
        root,
        run_dir: run_dir.clone(),
        run_id,
        model: resolved,
        targets: prepared,
        skipped,
        scenarios,
        device,
        threads,
        warmup_iterations: warmup,
        iterations,
        max_new_tokens: flags.max_new_tokens,
        timeout: Duration::from_secs(flags.timeout_s),
        runtime: runtimes
            .iter()
            .map(runtime_name)
            .collect::<Vec<_>>()
            .join(","),
        profile,
        provenance: prov,
    };

    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;

    let (manifest, results) = lab_harness::bench(&plan, &interrupted)?;
    println!(
        "{}",
        lab_harness::results::render_markdown(&manifest, &results)
    );
    eprintln!("results: {}", run_dir.display());
    eprintln!(
        "compare with baselines: cargo xtask check --run {}",
        run_dir.display()
    );
    if interrupted.load(Ordering::SeqCst) {
        std::process::exit(130);
    }
    let failed: Vec<_> = manifest
        .targets
        .iter()
        .filter(|t| t.status == lab_harness::results::TargetStatus::Failed)
        .map(|t| t.target.clone())
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} engine(s) failed: {} (finished results are kept in {})",
            failed.len(),
            failed.join(", "),
            run_dir.display()
        );
    }
    Ok(())
}
