//! Engines in containers: one OCI image per engine, assembled from the locally built release
//! binary and exactly the shared libraries it loads (no base image: nothing can be pulled), and
//! the sandbox every engine container runs in (no network, read-only model volume, non-root,
//! no capabilities).
//!
//! The image recipe is `containers/engine.Containerfile`; the per-runtime settings (this
//! machine's podman needs `runc` and explicit ulimits) are configuration in
//! `containers/runtimes.json`, not code. The flake builds the same images with Nix.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use xshell::{cmd, Shell};

use crate::runner::Launch;
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

/// How engines are started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Native,
    Podman,
    Docker,
}

impl Runtime {
    /// `native`, `podman` or `docker`; `auto` is `None` (see [`detect`]).
    pub fn parse(s: &str) -> Result<Option<Runtime>> {
        match s {
            "auto" => Ok(None),
            "native" => Ok(Some(Runtime::Native)),
            "podman" => Ok(Some(Runtime::Podman)),
            "docker" => Ok(Some(Runtime::Docker)),
            _ => Err(Error::msg(format!(
                "--runtime {s}: expected auto, native, podman or docker"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Runtime::Native => "native",
            Runtime::Podman => "podman",
            Runtime::Docker => "docker",
        }
    }

    pub fn is_container(self) -> bool {
        self != Runtime::Native
    }
}

/// Arguments a container runtime needs on this kind of machine (`containers/runtimes.json`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Before the subcommand (`podman --runtime runc …`).
    #[serde(default)]
    pub global_args: Vec<String>,
    /// Added to every `build`.
    #[serde(default)]
    pub build_args: Vec<String>,
    /// Added to every `run`.
    #[serde(default)]
    pub run_args: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    #[serde(default, rename = "//")]
    pub comment: Option<serde_json::Value>,
    pub podman: RuntimeSettings,
    pub docker: RuntimeSettings,
}

impl RuntimeConfig {
    pub fn settings(&self, rt: Runtime) -> RuntimeSettings {
        match rt {
            Runtime::Podman => self.podman.clone(),
            Runtime::Docker => self.docker.clone(),
            Runtime::Native => RuntimeSettings::default(),
        }
    }
}

pub fn load_config(root: &Path) -> Result<RuntimeConfig> {
    let path = root.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::msg(format!("{}: {e}", path.display())))
}

/// A container runtime ready to use: which one and its settings.
#[derive(Debug, Clone)]
pub struct Engine {
    pub runtime: Runtime,
    pub settings: RuntimeSettings,
    /// `podman version 4.3.1`, as the runtime reports itself.
    pub version: String,
}

impl Engine {
    fn program(&self) -> &'static str {
        self.runtime.name()
    }

    /// `program global_args… args…` as one command.
    fn cmd<'a>(&self, sh: &'a Shell, args: &[String]) -> xshell::Cmd<'a> {
        let p = self.program();
        let g = &self.settings.global_args;
        cmd!(sh, "{p} {g...} {args...}")
    }
}

/// Whether `rt` can run containers here: its settings and version, or why not (not installed,
/// daemon not running, …).
pub fn probe(root: &Path, rt: Runtime) -> std::result::Result<Engine, String> {
    let config = load_config(root).map_err(|e| e.to_string())?;
    let settings = config.settings(rt);
    let sh = Shell::new().map_err(|e| e.to_string())?;
    let p = rt.name();
    let version = cmd!(sh, "{p} --version")
        .quiet()
        .ignore_stderr()
        .read()
        .map_err(|_| format!("{p} is not installed"))?;
    let g = &settings.global_args;
    let out = cmd!(sh, "{p} {g...} info")
        .quiet()
        .ignore_status()
        .output()
        .map_err(|e| format!("{p} info: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!("`{p} info` failed: {}", line.trim()));
    }
    Ok(Engine {
        runtime: rt,
        settings,
        version: version.trim().to_string(),
    })
}

/// `auto`: podman when it works, else docker when it works, else native; the reason says why
/// the others were not taken.
pub fn detect(root: &Path) -> (Option<Engine>, String) {
    let mut why = Vec::new();
    for rt in [Runtime::Podman, Runtime::Docker] {
        match probe(root, rt) {
            Ok(e) => {
                let reason = format!("{} found ({})", rt.name(), e.version);
                return (Some(e), reason);
            }
            Err(e) => why.push(e),
        }
    }
    (None, format!("no container runtime: {}", why.join("; ")))
}

/// The files `ldd` says `binary` loads (the dynamic loader included), in ldd's order. A
/// missing library is an error naming it.
pub fn parse_ldd(binary: &Path, text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("statically linked") {
            continue;
        }
        if let Some((name, rest)) = line.split_once("=>") {
            let rest = rest.trim();
            if rest.starts_with("not found") {
                return Err(Error::msg(format!(
                    "{}: shared library {} not found (ldd)",
                    binary.display(),
                    name.trim()
                )));
            }
            // `libfoo.so => /path/libfoo.so (0x…)`; the vDSO has no file.
            if let Some(path) = rest
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/'))
            {
                libs.push(PathBuf::from(path));
            }
        } else if let Some(path) = line
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            // The loader: `/lib64/ld-linux-x86-64.so.2 (0x…)`.
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let sh = Shell::new().map_err(|e| Error::msg(e.to_string()))?;
    let text = cmd!(sh, "ldd {binary}")
        .quiet()
        .read()
        .map_err(|e| Error::msg(format!("ldd {}: {e}", binary.display())))?;
    parse_ldd(binary, &text)
}

/// What goes into one engine's image.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The engine's package (`engine-candle`): the image name.
    pub package: String,
    pub binary: PathBuf,
    /// Provenance labels (git revision, engine version, binary sha256, …).
    pub labels: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `localhost/inference-lab/engine-candle:<binary sha256 prefix>`.
    pub reference: String,
    /// The image ID: sha256 of the image configuration (`sha256:…`).
    pub id: String,
    pub size_bytes: u64,
}

/// Lays out the image's root file system in `rootfs`: the engine, its libraries at the paths
/// the loader expects, a passwd entry for the engine user, the model mount point and `/tmp`.
pub fn assemble_rootfs(spec: &ImageSpec, rootfs: &Path) -> Result<Vec<PathBuf>> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| Error::io(&p, e)
    };
    if rootfs.exists() {
        std::fs::remove_dir_all(rootfs).map_err(io(rootfs))?;
    }
    let libs = shared_libraries(&spec.binary)?;
    let engine = rootfs.join(ENGINE_PATH.trim_start_matches('/'));
    std::fs::create_dir_all(engine.parent().expect("has a parent")).map_err(io(rootfs))?;
    std::fs::copy(&spec.binary, &engine).map_err(io(&spec.binary))?;
    for lib in &libs {
        let dest = rootfs.join(lib.strip_prefix("/").expect("ldd paths are absolute"));
        std::fs::create_dir_all(dest.parent().expect("has a parent")).map_err(io(&dest))?;
        // Follows symlinks: the file lands at the path the loader asks for.
        std::fs::copy(lib, &dest).map_err(io(lib))?;
    }
    let (uid, gid) = USER.split_once(':').expect("uid:gid");
    let etc = rootfs.join("etc");
    std::fs::create_dir_all(&etc).map_err(io(&etc))?;
    std::fs::write(
        etc.join("passwd"),
        format!("root:x:0:0::/:/nonexistent\nlab:x:{uid}:{gid}::/tmp:/nonexistent\n"),
    )
    .map_err(io(&etc))?;
    std::fs::write(etc.join("group"), format!("root:x:0:\nlab:x:{gid}:\n")).map_err(io(&etc))?;
    for dir in [MODELS_MOUNT.trim_start_matches('/'), "tmp"] {
        std::fs::create_dir_all(rootfs.join(dir)).map_err(io(rootfs))?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777))
        .map_err(io(rootfs))?;
    Ok(libs)
}

/// Builds `spec`'s image with `engine` from `containers/engine.Containerfile`, in `work_dir`
/// (a build context of its own). The tar is written with fixed owners and times, and podman
/// builds with `--timestamp 0` (containers/runtimes.json), so the same binary gives the same
/// image ID.
pub fn build_image(
    root: &Path,
    engine: &Engine,
    spec: &ImageSpec,
    work_dir: &Path,
) -> Result<Image> {
    let sh = Shell::new().map_err(|e| Error::msg(e.to_string()))?;
    let rootfs = work_dir.join("rootfs");
    assemble_rootfs(spec, &rootfs)?;
    let tar = work_dir.join("rootfs.tar");
    cmd!(
        sh,
        "tar --numeric-owner --owner=0 --group=0 --mtime=@0 --sort=name -C {rootfs} -cf {tar} ."
    )
    .quiet()
    .run()
    .map_err(|e| Error::msg(format!("packing {}: {e}", rootfs.display())))?;
    let containerfile = root.join(CONTAINERFILE);
    let sha = crate::sha256_file(&spec.binary)?;
    let reference = format!("{IMAGE_REPO}/{}:{}", spec.package, &sha[..16]);
    let mut args: Vec<String> = vec!["build".into()];
    args.extend(engine.settings.build_args.iter().cloned());
    for (k, v) in &spec.labels {
        args.push("--label".into());
        args.push(format!("{k}={v}"));
    }
    args.extend([
        "--tag".into(),
        reference.clone(),
        "--file".into(),
        containerfile.display().to_string(),
        work_dir.display().to_string(),
    ]);
    let out = engine
        .cmd(&sh, &args)
        .quiet()
        .ignore_status()
        .output()
        .map_err(|e| Error::msg(format!("{} build: {e}", engine.program())))?;
    if !out.status.success() {
        return Err(Error::msg(format!(
            "{} build of {} failed: {}",
            engine.program(),
            spec.package,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let _ = std::fs::remove_dir_all(&rootfs);
    let _ = std::fs::remove_file(&tar);
    inspect(engine, &reference)
}

/// The ID and size of a local image.
pub fn inspect(engine: &Engine, reference: &str) -> Result<Image> {
    let sh = Shell::new().map_err(|e| Error::msg(e.to_string()))?;
    let args: Vec<String> = vec![
        "image".into(),
        "inspect".into(),
        "--format".into(),
        "{{.Id}} {{.Size}}".into(),
        reference.into(),
    ];
    let out = engine
        .cmd(&sh, &args)
        .quiet()
        .ignore_status()
        .output()
        .map_err(|e| Error::msg(format!("inspecting image {reference}: {e}")))?;
    if !out.status.success() {
        return Err(Error::msg(format!(
            "{} has no local image {reference}",
            engine.program()
        )));
    }
    let out = String::from_utf8_lossy(&out.stdout);
    let mut it = out.split_whitespace();
    let id = it.next().unwrap_or_default();
    let size = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let id = if id.starts_with("sha256:") {
        id.to_string()
    } else {
        format!("sha256:{id}")
    };
    Ok(Image {
        reference: reference.into(),
        id,
        size_bytes: size,
    })
}

/// Where and how an engine container runs.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    /// `--cpuset-cpus` (e.g. `0-3`): pins the engine to these CPUs.
    pub cpuset_cpus: Option<String>,
    /// Pass every GPU through CDI (`--device nvidia.com/gpu=all`).
    pub gpus: bool,
}

/// The `run` arguments of an engine container (without the runtime's global arguments): no
/// network, read-only root and model volume, a private writable `/tmp`, the engine user, no
/// capabilities, no privilege escalation, never a pull.
pub fn run_args(
    settings: &RuntimeSettings,
    name: &str,
    image: &Image,
    host_model_dir: &Path,
    model_mount: &str,
    env: &[(String, String)],
    sandbox: &Sandbox,
) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "run".into(),
        "--rm".into(),
        "--interactive".into(),
        "--name".into(),
        name.into(),
        "--network".into(),
        "none".into(),
        "--read-only".into(),
        "--tmpfs".into(),
        "/tmp".into(),
        "--user".into(),
        USER.into(),
        "--cap-drop".into(),
        "all".into(),
        "--security-opt".into(),
        "no-new-privileges".into(),
        "--volume".into(),
        format!("{}:{model_mount}:ro", host_model_dir.display()),
    ];
    a.extend(settings.run_args.iter().cloned());
    if let Some(c) = &sandbox.cpuset_cpus {
        a.push("--cpuset-cpus".into());
        a.push(c.clone());
    }
    if sandbox.gpus {
        a.push("--device".into());
        a.push("nvidia.com/gpu=all".into());
    }
    for (k, v) in env {
        a.push("--env".into());
        a.push(format!("{k}={v}"));
    }
    a.push(image.id.clone());
    a
}

/// How to start an engine inside its container; returns the launch and the model directory as
/// the engine sees it.
pub fn launch(
    engine: &Engine,
    name: &str,
    image: &Image,
    host_model_dir: &Path,
    env: &[(String, String)],
    sandbox: &Sandbox,
) -> (Launch, String) {
    let model_name = host_model_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let mount = format!("{MODELS_MOUNT}/{model_name}");
    let mut args = engine.settings.global_args.clone();
    args.extend(run_args(
        &engine.settings,
        name,
        image,
        host_model_dir,
        &mount,
        env,
        sandbox,
    ));
    let mut cleanup = vec![engine.program().to_string()];
    cleanup.extend(engine.settings.global_args.iter().cloned());
    cleanup.extend(["rm".into(), "--force".into(), name.into()]);
    (
        Launch {
            program: engine.program().into(),
            args,
            env: Vec::new(),
            cleanup,
        },
        mount,
    )
}

/// The framework an engine is built on and its version, from `Cargo.lock` (`candle-core 0.10.2`),
/// or the engine package's own version when it uses none (the native engine).
pub fn engine_version(root: &Path, package: &str) -> String {
    const FRAMEWORKS: [&str; 4] = ["candle-core", "llama-cpp-2", "mistralrs", "burn"];
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let mut own = None;
    for block in lock.split("[[package]]") {
        let field = |k: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k} = \"")))
                .map(|v| v.trim_end_matches('"').to_string())
        };
        if field("name").as_deref() == Some(package) {
            own = field("version");
            for dep in block
                .lines()
                .map(|l| l.trim().trim_matches(|c| c == '"' || c == ','))
            {
                let name = dep.split_whitespace().next().unwrap_or("");
                if FRAMEWORKS.contains(&name) {
                    // Dependency entries are `name` or `name version` (when several exist).
                    let version = dep
                        .split_whitespace()
                        .nth(1)
                        .map(str::to_string)
                        .or_else(|| {
                            lock.split("[[package]]").find_map(|b| {
                                b.contains(&format!("name = \"{name}\"\n")).then(|| {
                                    b.lines()
                                        .find_map(|l| l.strip_prefix("version = \""))
                                        .unwrap_or("?")
                                        .trim_end_matches('"')
                                        .to_string()
                                })
                            })
                        });
                    return format!("{name} {}", version.unwrap_or_else(|| "?".into()));
                }
            }
        }
    }
    format!("{package} {}", own.unwrap_or_else(|| "?".into()))
}

/// The provenance labels of an engine image.
pub fn labels(
    root: &Path,
    package: &str,
    binary: &Path,
    prov: &crate::provenance::Provenance,
) -> Result<Vec<(String, String)>> {
    Ok(vec![
        ("org.opencontainers.image.title".into(), package.into()),
        (
            "org.opencontainers.image.revision".into(),
            prov.git_rev.clone(),
        ),
        ("lab.git.dirty".into(), prov.git_dirty.to_string()),
        ("lab.engine.version".into(), engine_version(root, package)),
        ("lab.binary.sha256".into(), crate::sha256_file(binary)?),
        ("lab.rustc".into(), prov.rustc.clone()),
    ])
}

/// Moves a natively prepared target into its container and rewrites the launch. With
/// `prebuilt` (an image reference, e.g. one of the flake's CUDA images loaded with `podman load`)
/// that image runs as it is; otherwise the engine's image is built from its release binary (under
/// `work_root/<package>`). The Python engine has no image of its own here (its pinned environment
/// is ~5 GB of wheels): without `prebuilt` it stays native, and its runtime label says so.
#[allow(clippy::too_many_arguments)]
pub fn containerize(
    root: &Path,
    engine: &Engine,
    mut t: crate::PreparedTarget,
    host_model_dir: &Path,
    work_root: &Path,
    sandbox: &Sandbox,
    prov: &crate::provenance::Provenance,
    prebuilt: Option<&str>,
) -> Result<crate::PreparedTarget> {
    if let Some(reference) = prebuilt {
        let image = inspect(engine, reference).map_err(|e| {
            Error::msg(format!(
                "--image {reference}: {e} (build it with nix and `{} load` it first)",
                engine.runtime.name()
            ))
        })?;
        let runtime = format!(
            "{} (prebuilt image {reference}; the recorded engine binary is the host build, the image ID is what ran)",
            engine.runtime.name()
        );
        return Ok(into_image(
            engine,
            t,
            image,
            host_model_dir,
            sandbox,
            runtime,
        ));
    }
    if t.target.kind == crate::catalog::EngineKind::Python {
        t.runtime = format!(
            "native (fallback: no {} image for the Python engine; its pinned environment runs on the host)",
            engine.runtime.name()
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
    let image = build_image(root, engine, &spec, &work)?;
    let runtime = engine.runtime.name().to_string();
    Ok(into_image(
        engine,
        t,
        image,
        host_model_dir,
        sandbox,
        runtime,
    ))
}

fn into_image(
    engine: &Engine,
    mut t: crate::PreparedTarget,
    image: Image,
    host_model_dir: &Path,
    sandbox: &Sandbox,
    runtime: String,
) -> crate::PreparedTarget {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "lab-{}-{}-{}",
        t.target.package,
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let (launch, dir) = launch(
        engine,
        &name,
        &image,
        host_model_dir,
        &t.launch.env,
        sandbox,
    );
    t.launch = launch;
    t.model_dir_for_engine = dir;
    t.image_digest = Some(image.id);
    t.runtime = runtime;
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_becomes_the_list_of_files_to_copy() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgomp.so.1 => /lib/x86_64-linux-gnu/libgomp.so.1 (0x00007f1)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        let libs = parse_ldd(Path::new("e"), text).unwrap();
        assert_eq!(
            libs,
            [
                "/lib/x86_64-linux-gnu/libgomp.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        let err = parse_ldd(
            Path::new("engine-x"),
            "\tlibcuda.so.1 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("engine-x") && err.contains("libcuda.so.1"),
            "{err}"
        );
        assert!(parse_ldd(Path::new("e"), "\tstatically linked\n")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn the_sandbox_is_always_applied() {
        let image = Image {
            reference: "r".into(),
            id: "sha256:abc".into(),
            size_bytes: 1,
        };
        let settings = RuntimeSettings {
            global_args: vec![],
            build_args: vec![],
            run_args: vec!["--ulimit".into(), "nofile=1024:1024".into()],
        };
        let a = run_args(
            &settings,
            "lab-x",
            &image,
            Path::new("/vol/smollm2-135m"),
            "/models/smollm2-135m",
            &[("RAYON_NUM_THREADS".into(), "2".into())],
            &Sandbox {
                cpuset_cpus: Some("0-1".into()),
                gpus: true,
            },
        );
        let joined = a.join(" ");
        for needle in [
            "--network none",
            "--read-only",
            "--user 10001:10001",
            "--cap-drop all",
            "--security-opt no-new-privileges",
            "--volume /vol/smollm2-135m:/models/smollm2-135m:ro",
            "--ulimit nofile=1024:1024",
            "--cpuset-cpus 0-1",
            "--device nvidia.com/gpu=all",
            "--env RAYON_NUM_THREADS=2",
        ] {
            assert!(joined.contains(needle), "{needle} missing from {joined}");
        }
        // The image is the last argument and is named by ID, so the run uses exactly the image
        // whose digest is recorded.
        assert_eq!(a.last().unwrap(), "sha256:abc");
    }

    #[test]
    fn runtimes_parse_and_the_committed_config_loads() {
        assert_eq!(Runtime::parse("auto").unwrap(), None);
        assert_eq!(Runtime::parse("podman").unwrap(), Some(Runtime::Podman));
        let e = Runtime::parse("lxc").unwrap_err().to_string();
        assert!(e.contains("--runtime lxc"), "{e}");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let c = load_config(&root).unwrap();
        assert!(c.podman.run_args.iter().any(|a| a.starts_with("nofile=")));
        assert!(root.join(CONTAINERFILE).exists());
    }

    #[test]
    fn engine_versions_come_from_the_lock_file() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        assert!(engine_version(&root, "engine-candle").starts_with("candle-core 0."));
        assert!(engine_version(&root, "engine-llamacpp").starts_with("llama-cpp-2 0."));
        assert_eq!(
            engine_version(&root, "engine-native"),
            "engine-native 0.0.0"
        );
    }
}
