//! engine-native: the lab's own CPU engine in the spirit of lm.rs — no ML framework, weights
//! memory-mapped from the model volume's GGUF (Q4_1, Q4_0, Q8_0, F16, F32 tensors) or F32
//! safetensors directory, SIMD kernels chosen at run time, a spin thread pool.
//!
//! `NATIVE_SIMD=scalar|avx2|avx512` forces a kernel level the CPU has (for comparison and tests).

mod gguf;
mod model;
mod pool;
mod quant;

use std::collections::BTreeMap;

use engine_kit::{require_file, Engine, EngineMeta, EngineResult, Loaded};
use lab_protocol::{Device, Dtype, Request, WeightFormat};

/// The fuzz targets (`model/fuzz.rs`) run under the fuzzer's memory limit.
#[cfg(test)]
#[global_allocator]
static ALLOC: lab_fuzz::GuardedAlloc = lab_fuzz::GuardedAlloc;

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const META: EngineMeta = EngineMeta {
    name: "native",
    version: env!("CARGO_PKG_VERSION"),
    backend: "engine-native (no ML framework)",
};

struct Native {
    model: model::Model,
    /// `NATIVE_FAULT=pool-panic`: one worker of the thread pool panics in every prefill, so the
    /// tests can show that a panic inside a pool job is reported as the engine's error (not a
    /// hang, not undefined behaviour).
    pool_panic: bool,
}

impl Engine for Native {
    fn reset(&mut self) -> EngineResult<()> {
        self.model.reset();
        Ok(())
    }
    fn prefill(&mut self, prompt: &[u32], logits: &mut Vec<f32>) -> EngineResult<()> {
        if self.pool_panic {
            self.model.pool.run(&|i, _| {
                if i == 1 {
                    panic!("injected fault (NATIVE_FAULT=pool-panic)");
                }
            });
        }
        self.model.forward(prompt, logits)
    }
    fn decode(&mut self, token: u32, logits: &mut Vec<f32>) -> EngineResult<()> {
        self.model.forward(&[token], logits)
    }
    fn batch(&mut self) -> Option<&mut dyn engine_kit::BatchEngine> {
        Some(self)
    }
    fn ops(&mut self) -> Option<&mut dyn engine_kit::OpBench> {
        Some(&mut self.model)
    }
}

impl engine_kit::BatchEngine for Native {
    fn max_slots(&self) -> usize {
        model::Model::MAX_SLOTS
    }
    fn batching(&self) -> String {
        format!(
            "continuous (one weight pass per step, up to {} sequences)",
            model::CHUNK
        )
    }
    fn prefill_slot(
        &mut self,
        slot: usize,
        prompt: &[u32],
        logits: &mut Vec<f32>,
    ) -> EngineResult<()> {
        self.model.release(slot);
        self.model.forward_slot(slot, prompt, logits)
    }
    fn decode_slots(&mut self, batch: &[(usize, u32)], logits: &mut Vec<f32>) -> EngineResult<()> {
        self.model.decode_batch(batch, logits)
    }
    fn release_slot(&mut self, slot: usize) {
        self.model.release(slot);
    }
}

fn load(request: &Request) -> EngineResult<Loaded<Native>> {
    if request.device != Device::Cpu {
        return Err(format!(
            "engine-native runs on the CPU only (device {} requested)",
            request.device
        )
        .into());
    }
    let threads = engine_kit::threads(request);
    let pool_panic = match std::env::var("NATIVE_FAULT").as_deref() {
        Err(_) => false,
        Ok("pool-panic") => true,
        Ok(other) => {
            return Err(format!("NATIVE_FAULT={other}: the only fault is `pool-panic`").into())
        }
    };
    let simd = match std::env::var("NATIVE_SIMD").as_deref() {
        Ok("scalar") => quant::Simd::Scalar,
        Ok("auto") | Err(_) => quant::Simd::detect(),
        Ok(level) => quant::Simd::available()
            .into_iter()
            .find(|s| s.id() == level)
            .ok_or_else(|| {
                let ids: Vec<_> = quant::Simd::available().iter().map(|s| s.id()).collect();
                format!(
                    "NATIVE_SIMD={level}: this CPU can run {} (or `auto`)",
                    ids.join(", ")
                )
            })?,
    };
    engine_kit::phase("runtime_init");
    let dir = std::path::Path::new(&request.model.dir);
    let model = match (request.model.format, request.model.dtype) {
        (WeightFormat::Gguf, Dtype::Q4_1) => {
            let p = dir.join("model.gguf");
            require_file(&p)?;
            model::Model::from_gguf(&p, threads, simd)?
        }
        (WeightFormat::Safetensors, Dtype::F32) => {
            engine_kit::require_hf_dir(dir)?;
            model::Model::from_safetensors(dir, threads, simd)?
        }
        (f, d) => {
            return Err(format!(
                "engine-native loads the GGUF as stored (q4_1) or the F32 safetensors directory; {f:?} {} requested",
                d.as_str()
            )
            .into())
        }
    };
    engine_kit::phase("weights_loaded");
    let mut settings = BTreeMap::new();
    settings.insert("simd".into(), model.simd.name().into());
    settings.insert("weights".into(), model.formats.clone());
    settings.insert(
        "activations".into(),
        "8-bit blocks of 32 (Q8) for quantized weights, f32 otherwise".into(),
    );
    settings.insert(
        "kv_cache".into(),
        "f32, one per sequence, reserved for the context length (pages touched as used)".into(),
    );
    settings.insert("prefill_chunk_tokens".into(), model::CHUNK.to_string());
    settings.insert(
        "kv_cache_bytes_per_token".into(),
        (2 * model.cfg.layers * model.cfg.kv_dim() * 4).to_string(),
    );
    settings.insert(
        "weight_bytes_per_token".into(),
        model.weight_bytes_per_token.to_string(),
    );
    settings.insert(
        "threads_pool".into(),
        "spin-wait fork-join over weight rows".into(),
    );
    let threads = model.pool.threads();
    eprintln!(
        "native: {} threads, {} kernels, {} weight bytes per token ({})",
        threads,
        model.simd.name(),
        model.weight_bytes_per_token,
        model.formats
    );
    if pool_panic {
        settings.insert("fault".into(), "NATIVE_FAULT=pool-panic".into());
    }
    let engine = Native { model, pool_panic };
    Ok(META.loaded(engine, request, threads as u32, settings))
}

fn main() {
    engine_kit::run_main(META, load)
}
