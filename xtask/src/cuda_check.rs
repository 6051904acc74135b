//! `cargo xtask cuda-check`: compiles the engines' CUDA paths as far as this machine allows,
//! without a GPU. burn's CubeCL CUDA backend loads the driver and NVRTC at run time (cudarc's
//! dynamic loading), so it compiles anywhere; candle, mistral.rs and llama.cpp compile CUDA
//! kernels with `nvcc`, so they are checked only where one is installed (Debian's
//! `nvidia-cuda-toolkit` 11.8 builds candle's and mistral.rs's kernels for compute capability 80;
//! llama.cpp's CUDA code and H100/H200's `90a` need CUDA 12, the flake's toolkit). Says what it
//! checked and what it skipped, and why.

use anyhow::{Context, Result};
use xshell::cmd;

use crate::paths;

#[derive(clap::Args)]
pub struct Flags {
    /// Also check the engines that need nvcc (candle, llama.cpp, mistral.rs) when it exists.
    #[arg(long)]
    pub with_nvcc: bool,
}

pub fn run(flags: Flags) -> Result<()> {
    let sh = paths::shell()?;
    eprintln!("cuda-check: engine-burn --features cuda (CubeCL CUDA; no nvcc needed)");
    cmd!(
        sh,
        "cargo check --release -p engine-burn --features engine-burn/cuda"
    )
    .run()
    .context("engine-burn's CUDA backend does not compile")?;
    let nvcc = cmd!(sh, "nvcc --version")
        .quiet()
        .ignore_stderr()
        .read()
        .ok();
    match (flags.with_nvcc, nvcc) {
        (true, Some(v)) => {
            let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
            let version = v
                .lines()
                .find(|l| l.contains("release"))
                .unwrap_or_default()
                .to_string();
            eprintln!("cuda-check: nvcc: {version}; CUDA_COMPUTE_CAP={cap}");
            let _cap = sh.push_env("CUDA_COMPUTE_CAP", &cap);
            // "Cuda compilation tools, release 11.8, V11.8.89"
            let major: u32 = v
                .split("release ")
                .nth(1)
                .and_then(|r| r.split('.').next())
                .and_then(|m| m.trim().parse().ok())
                .unwrap_or(0);
            let mut packages = vec!["engine-candle", "engine-mistralrs"];
            if major >= 12 {
                packages.push("engine-llamacpp");
            } else {
                eprintln!(
                    "cuda-check: SKIPPED engine-llamacpp: its vendored llama.cpp needs CUDA 12 (with nvcc {major}.x, ggml-cuda's common.cuh calls cudaGridDependencySynchronize, which CUDA 11 does not declare)"
                );
            }
            for p in packages {
                let feature = format!("{p}/cuda");
                cmd!(sh, "cargo check --release -p {p} --features {feature}")
                    .run()
                    .with_context(|| format!("{p}'s CUDA path does not compile"))?;
            }
        }
        (true, None) => anyhow::bail!(
            "--with-nvcc: no nvcc on PATH (Debian: nvidia-cuda-toolkit from contrib non-free; or `nix develop`)"
        ),
        (false, _) => eprintln!(
            "cuda-check: SKIPPED candle, llama.cpp, mistral.rs (they compile CUDA kernels with nvcc: `cargo xtask cuda-check --with-nvcc` where one is installed)"
        ),
    }
    eprintln!("cuda-check: done");
    Ok(())
}
