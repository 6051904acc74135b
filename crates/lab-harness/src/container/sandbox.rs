//! The sandbox every engine container runs in: no network, read-only root and model volume, a
//! private `/tmp`, an unprivileged user, no capabilities. [`run_args`] is the one place that
//! builds it; `containers/runtimes.json` may add host quirks but cannot remove any of it.

use std::path::Path;

use super::image::Image;
use super::runtime::{Runtime, RuntimeSettings};
use super::{MODELS_MOUNT, USER};
use crate::runner::Launch;
use lab_results::limits::{Limits, MemoryLimitBy};

/// Where and how an engine container runs.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    /// `--cpuset-cpus` (e.g. `0-3`): pins the engine to these CPUs.
    pub cpuset_cpus: Option<String>,
    /// Pass every GPU through CDI (`--device nvidia.com/gpu=all`).
    pub gpus: bool,
    /// `--memory` (= `--memory-swap`: no swap beyond it), bytes.
    pub memory_bytes: Option<u64>,
    /// `--pids-limit`.
    pub pids: Option<u64>,
}

impl Sandbox {
    /// The limits a container under this sandbox runs with (recorded in its result).
    pub fn limits(&self) -> Limits {
        Limits {
            memory_bytes: self.memory_bytes,
            memory_by: self.memory_bytes.map(|_| MemoryLimitBy::Cgroup),
            pids: self.pids,
        }
    }
}

/// The `run` arguments of an engine container (without the runtime's global arguments): no
/// network, read-only root and model volume, a private writable `/tmp`, the engine user, no
/// capabilities, no privilege escalation, never a pull, and the sandbox's memory and pids
/// limits. No `--rm`: the harness reads the container's OOM flag after it exited, then removes
/// it (`Launch::cleanup`).
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
    if let Some(b) = sandbox.memory_bytes {
        a.push("--memory".into());
        a.push(b.to_string());
        a.push("--memory-swap".into());
        a.push(b.to_string());
    }
    if let Some(p) = sandbox.pids {
        a.push("--pids-limit".into());
        a.push(p.to_string());
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
    rt: &Runtime,
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
    let mut args = rt.settings.global_args.clone();
    args.extend(run_args(
        &rt.settings,
        name,
        image,
        host_model_dir,
        &mount,
        env,
        sandbox,
    ));
    let runtime_cmd = |tail: &[&str]| {
        let mut c = vec![rt.program().to_string()];
        c.extend(rt.settings.global_args.iter().cloned());
        c.extend(tail.iter().map(|s| s.to_string()));
        c
    };
    (
        Launch {
            program: rt.program().into(),
            args,
            env: Vec::new(),
            cleanup: runtime_cmd(&["rm", "--force", name]),
            oom_query: runtime_cmd(&["inspect", "--format", "{{.State.OOMKilled}}", name]),
            limits: sandbox.limits(),
            work_dir: Some(std::env::temp_dir().join(name)),
        },
        mount,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
                memory_bytes: Some(512 << 20),
                pids: Some(64),
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
            "--memory 536870912 --memory-swap 536870912",
            "--pids-limit 64",
        ] {
            assert!(joined.contains(needle), "{needle} missing from {joined}");
        }
        assert!(!a.contains(&"--rm".to_string()), "removed by the harness");
        // The image is the last argument and is named by ID, so the run uses exactly the image
        // whose digest is recorded.
        assert_eq!(a.last().unwrap(), "sha256:abc");
    }
}
