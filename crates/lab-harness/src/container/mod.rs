//! Engines in containers: one OCI image per engine, assembled from the locally built release
//! binary and exactly the shared libraries it loads (no base image: nothing can be pulled), and
//! the sandbox every engine container runs in (no network, read-only model volume, non-root,
//! no capabilities).
//!
//! The image recipe is `containers/engine.Containerfile`; the per-runtime settings (this
//! machine's podman needs `runc` and explicit ulimits) are configuration in
//! `containers/runtimes.json`, not code. The flake builds the same images with Nix.
//!
//! [`runtime`] detects and configures the runtime, [`image`] assembles and builds images,
//! [`sandbox`] holds the run arguments; [`containerize`] puts the three together for a target.

mod image;
mod runtime;
mod sandbox;

use std::path::Path;

pub use image::{
    assemble_rootfs, build_image, image_labels, inspect, labels, parse_ldd, shared_libraries,
    Image, ImageSpec,
};
pub use runtime::{
    detect, load_config, probe, runtime_kind, Runtime, RuntimeConfig, RuntimeKind, RuntimeSettings,
};
pub use sandbox::{launch, run_args, Sandbox};

use lab_results::runtime::RanUnder;

use crate::{Error, Result};

/// The user every engine runs as inside its container (not root; owns nothing in the image).
pub const USER: &str = "10001:10001";
/// Where the model volume is mounted, read-only.
pub const MODELS_MOUNT: &str = "/models";
/// Where the engine binary lives inside its image (the same for every engine, so one recipe).
pub const ENGINE_PATH: &str = "/usr/local/bin/engine";
pub const CONTAINERFILE: &str = "containers/engine.Containerfile";
pub const CONFIG_FILE: &str = "containers/runtimes.json";
/// Image names: `<IMAGE_REPO>/<engine package>:<tag>`.
pub const IMAGE_REPO: &str = "localhost/inference-lab";
/// An engine container's pids limit unless `--pids-limit` says otherwise: far above what any
/// engine starts (a thread pool per core), far below what takes a host down.
pub const DEFAULT_PIDS_LIMIT: u64 = 4096;

/// An engine container's memory limit unless `--memory-limit` says otherwise: 90 % of the
/// host's memory (`MemTotal`), so a runaway engine is killed before the host must swap or kill
/// something else; `None` when `/proc/meminfo` cannot be read.
pub fn default_memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024 / 10 * 9)
}

/// The sandbox of a run: its CPU set, GPUs and resource limits (the defaults where the spec
/// sets none).
pub fn sandbox_for(spec: &crate::BenchSpec, gpus: bool) -> Sandbox {
    Sandbox {
        cpuset_cpus: crate::placement::Placement::of(spec).cpus,
        gpus,
        memory_bytes: spec
            .memory_limit_mib
            .map(|m| m << 20)
            .or_else(default_memory_bytes),
        pids: Some(spec.pids_limit.unwrap_or(DEFAULT_PIDS_LIMIT)),
    }
}

/// The limits of a native engine process: `--memory-limit` as `RLIMIT_AS`, or none.
pub fn native_limits(spec: &crate::BenchSpec) -> lab_results::limits::Limits {
    lab_results::limits::Limits {
        memory_bytes: spec.memory_limit_mib.map(|m| m << 20),
        memory_by: spec
            .memory_limit_mib
            .map(|_| lab_results::limits::MemoryLimitBy::AddressSpace),
        pids: None,
    }
}

/// Moves a natively prepared target into its container and rewrites the launch. With
/// `prebuilt` (an image reference, e.g. one of the flake's CUDA images loaded with `podman load`)
/// that image runs as it is; otherwise the engine's image is built from its release binary (under
/// `work_root/<package>`). The Python engine has no image of its own here (its pinned environment
/// is ~5 GB of wheels): without `prebuilt` it stays native, and its runtime label says so.
#[allow(clippy::too_many_arguments)]
pub fn containerize(
    root: &Path,
    rt: &Runtime,
    mut t: crate::PreparedTarget,
    host_model_dir: &Path,
    work_root: &Path,
    sandbox: &Sandbox,
    prov: &lab_results::provenance::Provenance,
    prebuilt: Option<&str>,
) -> Result<crate::PreparedTarget> {
    if let Some(reference) = prebuilt {
        let image = inspect(rt, reference).map_err(|e| {
            Error::msg(format!(
                "--image {reference}: {e} (build it with nix and `{} load` it first)",
                rt.kind.name()
            ))
        })?;
        // The engine is the image's own: its provenance comes from the image's labels, and no
        // host binary is needed or recorded.
        let labels = image_labels(rt, reference)?;
        let label = |k: &str| labels.get(k).cloned();
        t.binary = std::path::PathBuf::from(format!("image {reference}"));
        t.binary_sha256 = Some(label("lab.binary.sha256").unwrap_or_else(|| {
            format!("unknown (image {reference} has no lab.binary.sha256 label)")
        }));
        let runtime = RanUnder::noted(
            rt.kind,
            format!(
            "prebuilt image {reference}: revision {}, engine version {}, built by {}; the engine is the image's",
            label("org.opencontainers.image.revision").unwrap_or_else(|| "unknown".into()),
            label("lab.engine.version").unwrap_or_else(|| "unknown".into()),
            label("lab.built-by").unwrap_or_else(|| "the lab's xtask".into()),
            ),
        );
        return Ok(into_image(rt, t, image, host_model_dir, sandbox, runtime));
    }
    if t.target.kind == crate::catalog::EngineKind::Python {
        t.runtime = RanUnder::noted(
            RuntimeKind::Native,
            format!(
                "fallback: no {} image for the Python engine; its pinned environment runs on the host",
                rt.kind.name()
            ),
        );
        return Ok(t);
    }
    let spec = ImageSpec {
        package: t.target.package.to_string(),
        binary: t.binary.clone(),
        labels: labels(root, t.target.package, &t.binary, prov)?,
    };
    let work = work_root.join(t.target.package);
    std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    let image = build_image(root, rt, &spec, &work)?;
    let runtime = RanUnder::plain(rt.kind);
    Ok(into_image(rt, t, image, host_model_dir, sandbox, runtime))
}

fn into_image(
    rt: &Runtime,
    mut t: crate::PreparedTarget,
    image: Image,
    host_model_dir: &Path,
    sandbox: &Sandbox,
    runtime: RanUnder,
) -> crate::PreparedTarget {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "lab-{}-{}-{}",
        t.target.package,
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let (launch, dir) = launch(rt, &name, &image, host_model_dir, &t.launch.env, sandbox);
    t.launch = launch;
    t.model_dir_for_engine = dir;
    t.image_digest = Some(image.id);
    t.image_bytes = Some(image.size_bytes).filter(|&b| b > 0);
    t.runtime = runtime;
    t
}
