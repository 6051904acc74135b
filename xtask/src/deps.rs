//! System build requirements of the engines, checked before cargo runs so that a missing tool
//! is one clear line instead of a build-script backtrace. On a Debian-like machine where we are
//! root, missing packages are installed with apt-get (announced), which keeps the README's
//! promise that two commands set up a fresh machine.

use std::path::Path;

use anyhow::{bail, Result};
use xshell::cmd;

use crate::paths;

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Whether `docker info` answers (a daemon is running and reachable).
fn docker_works() -> bool {
    paths::shell().is_ok_and(|sh| {
        cmd!(sh, "docker info")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .is_ok()
    })
}

/// bindgen loads `libclang.so` (not `libclang-cpp`, which llvm also ships).
fn has_libclang() -> bool {
    if std::env::var_os("LIBCLANG_PATH").is_some() {
        return true;
    }
    let in_dir = |d: &Path| {
        std::fs::read_dir(d)
            .map(|it| {
                it.filter_map(|e| e.ok())
                    .any(|e| e.file_name().to_string_lossy().starts_with("libclang.so"))
            })
            .unwrap_or(false)
    };
    let llvm = std::fs::read_dir("/usr/lib")
        .map(|it| {
            it.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("llvm-"))
                .any(|e| in_dir(&e.path().join("lib")))
        })
        .unwrap_or(false);
    llvm || in_dir(Path::new("/usr/lib/x86_64-linux-gnu")) || in_dir(Path::new("/usr/lib64"))
}

/// Makes sure the packages about to be built can be: today only engine-llamacpp needs system
/// tools (cmake for llama.cpp's build, libclang for bindgen).
pub fn ensure_for(packages: &[&str]) -> Result<()> {
    if !packages
        .iter()
        .any(|p| *p == "engine-llamacpp" || *p == "--workspace")
    {
        return Ok(());
    }
    let mut missing = Vec::new();
    if !on_path("cmake") {
        missing.push("cmake");
    }
    if !has_libclang() {
        missing.push("libclang-dev");
    }
    if missing.is_empty() {
        return Ok(());
    }
    let sh = paths::shell()?;
    let root = cmd!(sh, "id -u")
        .quiet()
        .read()
        .map(|u| u.trim() == "0")
        .unwrap_or(false);
    if !(root && on_path("apt-get")) {
        bail!(
            "engine-llamacpp needs {} to build llama.cpp: install them (Debian/Ubuntu: `apt-get install {}`), \
             or leave llama.cpp out with `--engine candle`",
            missing.join(" and "),
            missing.join(" ")
        );
    }
    eprintln!(
        "installing llama.cpp's build requirements with apt-get: {}",
        missing.join(" ")
    );
    cmd!(sh, "apt-get update -qq").run()?;
    cmd!(
        sh,
        "apt-get install -y -qq --no-install-recommends {missing...}"
    )
    .env("DEBIAN_FRONTEND", "noninteractive")
    .run()?;
    Ok(())
}

/// `bench --runtime auto` on a machine without podman and without a docker that works (a
/// docker client whose daemon is not running does not count: measured on a fresh Debian VM,
/// whose image ships the client only): as root on a Debian-like machine podman (with runc,
/// which Debian's podman needs on such VMs) is installed the way cmake is, announced; otherwise
/// one line says the one command and that the engines will run as native processes. A failed
/// install is said and the run goes on natively (the run's first lines say which runtime each
/// engine got and why).
pub fn ensure_container_runtime() {
    if on_path("podman") || (on_path("docker") && docker_works()) {
        return;
    }
    let root = paths::shell()
        .ok()
        .and_then(|sh| cmd!(sh, "id -u").quiet().read().ok())
        .is_some_and(|u| u.trim() == "0");
    if !(root && on_path("apt-get")) {
        eprintln!(
            "podman is not installed, so every engine will run as a native process: install it for per-engine containers (Debian/Ubuntu, as root: `apt-get install podman runc`)"
        );
        return;
    }
    eprintln!("installing podman for per-engine containers with apt-get: podman runc");
    let installed = paths::shell().and_then(|sh| {
        cmd!(sh, "apt-get update -qq").run()?;
        cmd!(
            sh,
            "apt-get install -y -qq --no-install-recommends podman runc"
        )
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()?;
        Ok(())
    });
    if let Err(e) = installed {
        eprintln!(
            "warning: podman could not be installed ({e:#}): engines run as native processes"
        );
    }
}
