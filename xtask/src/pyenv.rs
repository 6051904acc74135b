//! `cargo xtask pyenv`: the pinned Python environment of the PyTorch engine and the reference.
//!
//! `LAB_PYTHON` (e.g. the Nix dev shell's Python with PyTorch) is used as is when set; it is only
//! checked to import what the engine needs. Otherwise a virtual environment is created at
//! `LAB_PYENV_DIR` (default `<cargo target dir>/lab-pyenv`) from
//! `engines/engine-pytorch/requirements.txt` with `pip install --no-deps` (every package is pinned
//! there, so pip resolves nothing), and reused while a stamp of the requirements and the
//! interpreter version matches.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::cmd;

use crate::paths;

pub const REQUIREMENTS: &str = "engines/engine-pytorch/requirements.txt";
const STAMP: &str = ".lab-requirements.sha256";
/// What the engine, the reference and the schema test import.
const IMPORT_CHECK: &str =
    "import torch, transformers, safetensors, tokenizers, gguf, accelerate, numpy, jsonschema";

#[derive(clap::Args)]
pub struct Flags {
    /// Recreate the environment even when its stamp matches.
    #[arg(long)]
    pub force: bool,
}

pub fn run(flags: Flags) -> Result<()> {
    let python = ensure(flags.force)?;
    println!("{}", python.display());
    Ok(())
}

/// `LAB_PYENV_DIR` or `<target dir>/lab-pyenv`.
pub fn env_dir() -> PathBuf {
    match std::env::var_os("LAB_PYENV_DIR").map(PathBuf::from) {
        Some(p) if p.is_absolute() => p,
        Some(p) => paths::root().join(p),
        None => paths::target_dir().join("lab-pyenv"),
    }
}

/// The Python interpreter to run the engine with, creating the environment when needed.
pub fn ensure(force: bool) -> Result<PathBuf> {
    let sh = paths::shell()?;
    if let Some(py) = std::env::var_os("LAB_PYTHON").map(PathBuf::from) {
        let check = IMPORT_CHECK;
        cmd!(sh, "{py} -c {check}").quiet().run().with_context(|| {
            format!(
                "LAB_PYTHON={} cannot import the engine's packages (see {REQUIREMENTS})",
                py.display()
            )
        })?;
        eprintln!("python: using LAB_PYTHON={}", py.display());
        return Ok(py);
    }
    let requirements = paths::root().join(REQUIREMENTS);
    let req_sha = lab_harness::sha256_file(&requirements)?;
    let host_python = find_python()?;
    let version = cmd!(sh, "{host_python} --version")
        .quiet()
        .read()
        .context("python3 --version")?;
    let stamp = format!("{req_sha}\n{version}\n");
    let dir = env_dir();
    let py = dir.join("bin").join("python");
    let stamp_path = dir.join(STAMP);
    if !force && py.exists() && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(&stamp)
    {
        return Ok(py);
    }

    eprintln!(
        "python: creating the engine environment in {} ({version}; torch and its CUDA wheels are ~5 GB, a few minutes the first time)",
        dir.display()
    );
    let started = std::time::Instant::now();
    let _ = std::fs::remove_file(&stamp_path);
    if force || !py.exists() {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        cmd!(sh, "{host_python} -m venv {dir}").run().map_err(|e| {
            anyhow::anyhow!(
                "`{} -m venv` failed ({e}); on Debian/Ubuntu install python3-venv",
                host_python.display()
            )
        })?;
    }
    let pip_flags = [
        "--no-deps",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
    ];
    cmd!(sh, "{py} -m pip install {pip_flags...} -r {requirements}")
        .run()
        .context("installing the pinned Python packages (needs PyPI; see the pip output above)")?;
    cmd!(sh, "{py} -m pip check")
        .run()
        .context("`pip check`: the pinned set is inconsistent; regenerate requirements.txt")?;
    let check = IMPORT_CHECK;
    cmd!(sh, "{py} -c {check}").run()?;
    std::fs::write(&stamp_path, stamp)?;
    eprintln!(
        "python: environment ready in {:.0} s ({})",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(py)
}

fn find_python() -> Result<PathBuf> {
    for name in ["python3", "python"] {
        if let Some(p) = which(name) {
            return Ok(p);
        }
    }
    bail!(
        "no python3 on PATH: the PyTorch engine needs Python 3.10+ with venv and pip (Debian: apt install python3 python3-venv python3-pip), or set LAB_PYTHON to an interpreter that has the packages of {REQUIREMENTS}"
    )
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
