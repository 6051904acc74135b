//! What every engine adapter needs around its library, written once: refusing missing files
//! before a library could turn them into a download, the weight formats and dtypes an adapter
//! accepts, thread counts, rayon's pool, and the device.

use std::path::{Path, PathBuf};

use lab_protocol::{Device, Dtype, Request};

use crate::engine::{EngineMeta, EngineResult};
use crate::BoxError;

/// Checks that a model file exists and is a non-empty regular file; engines call this before
/// handing a path to their library, so that nothing ever turns a missing file into a download.
pub fn require_file(path: &std::path::Path) -> EngineResult<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() > 0 => Ok(()),
        Ok(_) => Err(format!(
            "model file {} is empty or not a file (rebuild it with `cargo xtask models`)",
            path.display()
        )
        .into()),
        Err(_) => Err(format!(
            "model file {} is missing (engines never download; run `cargo xtask models`)",
            path.display()
        )
        .into()),
    }
}

/// GGUF weights run in the dtype they are stored in: the volume's GGUF file of the request's
/// dtype (`model.gguf` for the shipped Q4_1, `model-q8_0.gguf`, `model-q4_0.gguf`,
/// `model-f16.gguf` derived from it), checked with [`require_file`]; a dtype no GGUF stores is
/// refused with one line naming it.
pub fn gguf_path(request: &Request) -> EngineResult<PathBuf> {
    let Some(name) = request.model.dtype.gguf_file() else {
        return Err(format!(
            "GGUF weights run in the dtype they are stored in (q4_1, q8_0, q4_0, f16), not {}",
            request.model.dtype.as_str()
        )
        .into());
    };
    let path = Path::new(&request.model.dir).join(name);
    require_file(&path)?;
    Ok(path)
}

/// The files of the volume's HF safetensors directory, each checked with [`require_file`].
pub struct HfFiles {
    pub config: PathBuf,
    pub weights: PathBuf,
}

/// `config.json` and `model.safetensors` of `dir`, both present and non-empty.
pub fn require_hf_dir(dir: &Path) -> EngineResult<HfFiles> {
    let files = HfFiles {
        config: dir.join("config.json"),
        weights: dir.join("model.safetensors"),
    };
    require_file(&files.config)?;
    require_file(&files.weights)?;
    Ok(files)
}

/// The error for a quantized dtype requested with dense (safetensors) weights.
pub fn quantized_needs_gguf(dtype: Dtype) -> BoxError {
    format!("{} needs the GGUF weight format", dtype.as_str()).into()
}

/// A dense dtype in the library's own type: `f32`, `f16` or `bf16` for the request's dtype;
/// quantized dtypes are refused ([`quantized_needs_gguf`]).
pub fn dense_dtype<T>(dtype: Dtype, f32: T, f16: T, bf16: T) -> EngineResult<T> {
    match dtype {
        Dtype::F32 => Ok(f32),
        Dtype::F16 => Ok(f16),
        Dtype::Bf16 => Ok(bf16),
        Dtype::Q4_1 | Dtype::Q8_0 | Dtype::Q4_0 => Err(quantized_needs_gguf(dtype)),
    }
}

/// The CPU threads an engine uses: the request's, else every logical CPU.
pub fn threads(request: &Request) -> usize {
    request.threads.map(|t| t as usize).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// Sizes rayon's global pool, which libraries computing with it (candle, burn-flex, gemm) read
/// on first use: call it before anything touches rayon.
pub fn set_rayon_threads(n: usize) {
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
}

/// The CUDA ordinal the request asks for (`None`: the CPU). `cuda_available` is whether this
/// binary can use CUDA at all; a GPU request to one that cannot is refused with
/// [`EngineMeta::no_cuda`].
pub fn cuda_ordinal(
    meta: &EngineMeta,
    request: &Request,
    cuda_available: bool,
) -> EngineResult<Option<usize>> {
    match request.device {
        Device::Cpu => Ok(None),
        Device::Cuda { ordinal } if cuda_available => Ok(Some(ordinal as usize)),
        Device::Cuda { .. } => Err(meta.no_cuda()),
    }
}
