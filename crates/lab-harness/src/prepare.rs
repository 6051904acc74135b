//! A [`BenchSpec`] made runnable on this machine ([`prepare`]): the model volume and the
//! Python environment materialised, the engines built, every target's runtime chosen and its
//! launch or container prepared, the machine's read bandwidth measured. What needs the
//! checkout's own tools (cargo, the volume builder, pip) is asked of a [`Workshop`], which the
//! xtask implements.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use lab_protocol::{Device, Dtype};
use lab_results::provenance::Provenance;
use lab_results::runtime::{RanUnder, RuntimeKind, Runtimes};

use crate::catalog::{self, EngineKind, Target};
use crate::model::{self, ResolvedModel};
use crate::placement::Placement;
use crate::{container, BenchPlan, BenchSpec, Error, PreparedTarget, Result};

macro_rules! bail {
    ($($t:tt)*) => {
        return Err(Error::msg(format!($($t)*)))
    };
}

/// What preparing a plan needs from the checkout's tools.
pub trait Workshop {
    /// The checkout.
    fn root(&self) -> PathBuf;
    /// Cargo's target directory: engine binaries under `release/`, built images under
    /// `lab-images/`.
    fn target_dir(&self) -> PathBuf;
    /// The model volume.
    fn models_dir(&self) -> PathBuf;
    /// Builds (or completes) the volume entry `name`.
    fn build_model(&self, name: &str) -> Result<()>;
    /// The pinned Python environment's interpreter, created when missing.
    fn python(&self) -> Result<PathBuf>;
    /// `cargo build --release` of `packages` in one invocation (their `cuda` features on a GPU
    /// run).
    fn build_engines(&self, packages: &[&str], gpu: bool) -> Result<()>;
}

/// Makes `spec` runnable on this machine: the model volume, the Python environment, the engine
/// builds (unless `build` is false), the runtime of every target and its container image.
/// Ctrl-C (`interrupted`) stops it between steps, before any run directory exists.
pub fn prepare(
    spec: BenchSpec,
    prov: Provenance,
    results_dir: &Path,
    build: bool,
    shop: &dyn Workshop,
    interrupted: &AtomicBool,
) -> Result<BenchPlan> {
    let root = shop.root();
    let gpu = !matches!(spec.device, Device::Cpu);
    let run_dir = results_dir.join(&spec.run_id);
    if run_dir.exists() {
        bail!(
            "{} already exists: choose another --run-id",
            run_dir.display()
        );
    }
    writable(results_dir)?;
    crate::run::pause_at("volume", interrupted);
    stop_if_interrupted(interrupted)?;
    let model = resolve_model(&spec.model, shop)?;
    let (runnable, skipped) = runnable_targets(&spec, &model)?;
    // One runtime normally; several (`native,podman`) run every target under each, side by side,
    // labelled `target@runtime`.
    let runtimes = spec
        .runtimes
        .iter()
        .map(|r| choose_runtime(&root, r, gpu && spec.images.is_empty()))
        .collect::<Result<Vec<_>>>()?;
    // Engines given as prebuilt images need nothing from the host when every runtime is a
    // container; the others need their binary or the Python environment.
    let from_host =
        |t: &&Target| !spec.images.contains_key(t.engine) || runtimes.iter().any(Option::is_none);
    let python = if runnable
        .iter()
        .filter(from_host)
        .any(|t| t.kind == EngineKind::Python)
    {
        Some(shop.python()?)
    } else {
        None
    };
    crate::run::pause_at("build", interrupted);
    stop_if_interrupted(interrupted)?;
    if build {
        let mut packages: Vec<&str> = runnable
            .iter()
            .filter(from_host)
            .filter(|t| t.kind == EngineKind::Rust)
            .map(|t| t.package)
            .collect();
        packages.dedup();
        if !packages.is_empty() {
            shop.build_engines(&packages, gpu)?;
        }
    }
    let ctx = TargetContext {
        root: &root,
        spec: &spec,
        model: &model,
        python: python.as_deref(),
        target_dir: shop.target_dir(),
        prov: &prov,
        compare: runtimes.len() > 1,
    };
    let mut targets = Vec::new();
    for t in &runnable {
        for r in &runtimes {
            targets.push(prepare_target(&ctx, t.clone(), r.as_ref())?);
            stop_if_interrupted(interrupted)?;
        }
    }
    let mut prov = prov;
    let mut probe = None;
    if !gpu && runnable.iter().any(|t| t.engine == "native") {
        let bin = shop.target_dir().join("release").join("native-membw");
        prov.read_bandwidth_gb_per_s = crate::probe::read_bandwidth(&bin, spec.threads);
        probe = prov.read_bandwidth_gb_per_s.is_some().then_some(bin);
    }
    let profile = lab_results::provenance::hardware_profile(&prov.host, &spec.device, spec.threads);
    Ok(BenchPlan {
        runtime: Runtimes(runtimes.iter().map(runtime_kind).collect()),
        spec,
        root,
        run_dir,
        model,
        targets,
        skipped,
        profile,
        provenance: prov,
        probe,
    })
}

/// Targets that cannot run, with the reason.
type Skipped = Vec<(String, String)>;

/// The model as engines will get it, materialising a missing volume entry first (or the real
/// model's entry when it lacks a file the volume builder writes now, such as the derived GGUF
/// levels of an entry built before them).
fn resolve_model(spec: &str, shop: &dyn Workshop) -> Result<ResolvedModel> {
    let models = shop.models_dir();
    let dir = models.join(spec);
    let lacking: Vec<&str> = if spec == "smollm2-135m" {
        [Dtype::Q8_0, Dtype::Q4_0, Dtype::F16]
            .iter()
            .filter_map(|d| d.gguf_file())
            .filter(|f| !dir.join(f).exists())
            .collect()
    } else {
        Vec::new()
    };
    if model::is_entry_name(spec) && !dir.join("MANIFEST.json").exists() {
        eprintln!("model volume entry `{spec}` is missing: materialising it");
        shop.build_model(spec)?;
    } else if model::is_entry_name(spec) && !lacking.is_empty() {
        eprintln!(
            "model volume entry `{spec}` lacks {}: materialising it",
            lacking.join(", ")
        );
        shop.build_model(spec)?;
    }
    model::resolve(&models, spec)
}

/// The selected targets that can load `model`, and those skipped (visibly) because the model
/// lacks their weight format.
fn runnable_targets(spec: &BenchSpec, model: &ResolvedModel) -> Result<(Vec<Target>, Skipped)> {
    let mut runnable: Vec<Target> = Vec::new();
    let mut skipped = Vec::new();
    let (selected, unsupported) = catalog::select_targets_on(&spec.targets, &spec.device)?;
    for (t, why) in unsupported {
        eprintln!("skipping {t}: {why}");
        skipped.push((t, why));
    }
    for t in selected {
        if model.formats.contains(&t.format) {
            runnable.push(t);
        } else {
            let why = format!("model `{}` has no {:?} weights", model.name, t.format);
            eprintln!("skipping {}: {why}", t.label());
            skipped.push((t.label(), why));
        }
    }
    if runnable.is_empty() {
        bail!(
            "nothing to run: no selected engine can load model `{}`",
            model.name
        );
    }
    Ok((runnable, skipped))
}

fn runtime_kind(e: &Option<container::Runtime>) -> RuntimeKind {
    e.as_ref().map_or(RuntimeKind::Native, |e| e.kind)
}

/// What every target of one plan is prepared with.
struct TargetContext<'a> {
    root: &'a Path,
    spec: &'a BenchSpec,
    model: &'a ResolvedModel,
    python: Option<&'a Path>,
    target_dir: PathBuf,
    prov: &'a Provenance,
    /// Several runtimes: labels get `@runtime`.
    compare: bool,
}

/// How one target starts: natively (pinned with `taskset` under `--cpuset-cpus`) or in its
/// container image under `runtime`.
fn prepare_target(
    ctx: &TargetContext,
    t: Target,
    runtime: Option<&container::Runtime>,
) -> Result<PreparedTarget> {
    let spec = ctx.spec;
    let prebuilt = spec.images.get(t.engine).map(String::as_str);
    let (mut launch, binary) = match (prebuilt, runtime) {
        // A prebuilt image carries its engine: no host binary or Python environment is needed
        // (its provenance comes from the image's labels).
        (Some(reference), Some(_)) => (
            crate::runner::Launch {
                program: container::ENGINE_PATH.into(),
                args: Vec::new(),
                env: crate::launch::image_env(&t),
                cleanup: Vec::new(),
                ..Default::default()
            },
            PathBuf::from(format!("image {reference}")),
        ),
        _ => crate::launch::launch_for(&t, ctx.root, &ctx.target_dir.join("release"), ctx.python)?,
    };
    let placement = Placement::of(spec);
    launch.env.extend(placement.env(t.kind));
    if let Some(s) = spec.slowdown {
        launch
            .env
            .push((lab_protocol::SLOWDOWN_ENV.into(), s.to_string()));
    }
    launch.limits = container::native_limits(spec);
    if runtime.is_none() {
        placement.pin_native(&mut launch);
    }
    let native = PreparedTarget {
        target: t,
        launch,
        binary,
        model_dir_for_engine: ctx.model.dir.display().to_string(),
        image_digest: None,
        runtime: RanUnder::plain(RuntimeKind::Native),
        label_suffix: if ctx.compare {
            format!("@{}", runtime_kind(&runtime.cloned()))
        } else {
            String::new()
        },
        binary_sha256: None,
        image_bytes: None,
    };
    let Some(runtime) = runtime else {
        return Ok(native);
    };
    let label = native.label();
    let gpu = !matches!(spec.device, Device::Cpu);
    if gpu && prebuilt.is_none() {
        bail!(
            "{label}: a GPU run in containers needs --image {}=REF (the images built here are CPU builds)",
            native.target.engine
        );
    }
    let sandbox = container::sandbox_for(spec, gpu);
    let t = container::containerize(
        ctx.root,
        runtime,
        native,
        &ctx.model.dir,
        &ctx.target_dir.join("lab-images"),
        &sandbox,
        ctx.prov,
        prebuilt,
    )
    .map_err(|e| Error::msg(format!("{label}: preparing its container: {e}")))?;
    match &t.image_digest {
        Some(id) => eprintln!("{label}: image {id}"),
        None => eprintln!("{label}: {}", t.runtime),
    }
    Ok(t)
}

/// Which container runtime to use, if any, for `--runtime` and the device; says what it chose.
/// `gpu` means a GPU run without prebuilt (`--image`) images: the images this xtask builds are
/// CPU builds, so such a run stays native.
pub fn choose_runtime(root: &Path, flag: &str, gpu: bool) -> Result<Option<container::Runtime>> {
    match container::runtime_kind(flag)? {
        Some(container::RuntimeKind::Native) => {
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
                .map_err(|why| Error::msg(format!("--runtime {}: {why}", rt.name())))?;
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
                Some(e) => eprintln!("runtime: {} (auto: {why})", e.kind.name()),
                None => eprintln!("runtime: native (auto: {why})"),
            }
            Ok(e)
        }
    }
}

/// Refuses, before anything is built or measured, a results directory that cannot take a file
/// (read-only, full, not a directory).
fn writable(results_dir: &Path) -> Result<()> {
    let probe = results_dir.join(format!(".write-probe-{}", std::process::id()));
    let tried = std::fs::create_dir_all(results_dir)
        .and_then(|_| std::fs::write(&probe, b"probe"))
        .and_then(|_| std::fs::remove_file(&probe));
    tried.map_err(|e| {
        Error::msg(format!(
            "results directory {} cannot be written (nothing was run): {e}",
            results_dir.display()
        ))
    })
}

/// An error once Ctrl-C came (the xtask reports it as [`crate::Interrupted`]).
fn stop_if_interrupted(flag: &AtomicBool) -> Result<()> {
    if flag.load(Ordering::SeqCst) {
        eprintln!("interrupted (Ctrl-C) before any engine ran: no run directory was made");
        return Err(Error::msg("interrupted (Ctrl-C)"));
    }
    Ok(())
}
