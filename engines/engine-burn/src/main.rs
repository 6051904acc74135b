//! engine-burn: the lab's own Llama written with burn 0.21 (`model.rs`) behind the engine kit.
//! CPU: burn's Flex backend (pure Rust) in F32. The `cuda` feature adds burn's CubeCL CUDA backend in
//! F32, F16 or BF16 (kernels compiled at run time with NVRTC).
//!
//! Reads a request on stdin, writes a report on stdout (see `lab-protocol`). Loads the HF
//! safetensors directory of the model volume; the GGUF is refused (burn has no GGUF reader).

mod model;

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use engine_kit::{Engine, EngineMeta, EngineResult, Loaded};
use lab_protocol::{Dtype, Request, WeightFormat};

const BACKEND: &str = "burn 0.21.0";
const META: EngineMeta = EngineMeta {
    name: "burn",
    version: env!("CARGO_PKG_VERSION"),
    backend: BACKEND,
};
/// RoPE tables and the longest sequence the engine accepts (capped by the model's own limit).
const MAX_POSITIONS: usize = 8192;
/// The most sequences one S2 batch holds; a larger batch runs as consecutive batches.
const MAX_BATCH: usize = 256;

struct Burn<B: Backend> {
    model: model::Llama<B>,
    device: B::Device,
    /// The LoRA scenario's training path (the model loaded again on `Autodiff<B>`).
    train: model::train::BurnTrain<B>,
}

impl<B: Backend> Burn<B> {
    fn load(
        request: &Request,
        device: B::Device,
        backend: &str,
        mut settings: BTreeMap<String, String>,
        threads: u32,
    ) -> EngineResult<Loaded<Box<dyn Engine>>>
    where
        B: 'static,
    {
        let dir = Path::new(&request.model.dir);
        engine_kit::require_hf_dir(dir)?;
        engine_kit::phase("runtime_init");
        let model = model::Llama::<B>::load(dir, MAX_POSITIONS, &device)?;
        engine_kit::phase("weights_loaded");
        let c = model.config();
        settings.insert(
            "attention".into(),
            format!(
                "eager, {} query / {} kv heads, KV cache grown with Tensor::cat",
                c.num_attention_heads,
                c.kv_heads()
            ),
        );
        settings.insert("rope".into(), "half-split (HF layout)".into());
        settings.insert(
            "batching".into(),
            format!(
                "S2 lock-step: batch dimension in the KV cache, one shared position (equal \
                 lengths only; at most {MAX_BATCH} per batch); S3 serial"
            ),
        );
        settings.insert("burn_backend".into(), backend.into());
        settings.insert("weights".into(), "burn-store SafetensorsStore".into());
        let train = model::train::BurnTrain {
            dir: dir.to_path_buf(),
            device: device.clone(),
        };
        let engine: Box<dyn Engine> = Box::new(Burn {
            model,
            device,
            train,
        });
        Ok(META.loaded(engine, request, threads, settings))
    }
}

impl<B: Backend> Engine for Burn<B> {
    fn reset(&mut self) -> EngineResult<()> {
        self.model.reset();
        Ok(())
    }

    fn prefill(&mut self, prompt: &[u32], logits: &mut Vec<f32>) -> EngineResult<()> {
        *logits = self.model.forward(prompt)?;
        Ok(())
    }

    fn decode(&mut self, token: u32, logits: &mut Vec<f32>) -> EngineResult<()> {
        *logits = self.model.forward(&[token])?;
        Ok(())
    }

    fn synchronize(&mut self) -> EngineResult<()> {
        B::sync(&self.device).map_err(|e| format!("synchronizing the device: {e:?}"))?;
        Ok(())
    }

    fn batch(&mut self) -> Option<&mut dyn engine_kit::BatchEngine> {
        Some(self)
    }

    fn ops(&mut self) -> Option<&mut dyn engine_kit::OpBench> {
        Some(&mut self.model)
    }

    fn lora(&mut self) -> Option<&mut dyn engine_kit::train::LoraTrain> {
        Some(&mut self.train)
    }
}

/// S2's lock-step batches: the lab's burn Llama keeps a batch dimension in its KV cache with one
/// shared position, so a batch is prompts of one length prefilled and decoded together.
impl<B: Backend> engine_kit::LockStepEngine for Burn<B> {
    const NAME: &'static str = "burn";

    fn max_slots(&self) -> usize {
        MAX_BATCH
    }

    fn batching(&self) -> String {
        "lock-step [batch, seq] input, batch dimension in the KV cache, one shared position".into()
    }

    fn why_lock_step(&self) -> String {
        "the lab's burn Llama has one position for the whole batch and no padding mask, so \
         requests of different lengths cannot share a batch"
            .into()
    }

    fn prefill_together(&mut self, prompts: &[&[u32]], logits: &mut Vec<f32>) -> EngineResult<()> {
        self.model.reset();
        *logits = self.model.forward_batch(prompts)?;
        Ok(())
    }

    fn decode_together(&mut self, tokens: &[u32], logits: &mut Vec<f32>) -> EngineResult<()> {
        let rows: Vec<[u32; 1]> = tokens.iter().map(|&t| [t]).collect();
        let rows: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
        *logits = self.model.forward_batch(&rows)?;
        Ok(())
    }

    fn batch_len(&self) -> usize {
        self.model.batch()
    }

    fn sync(&mut self) -> EngineResult<()> {
        Engine::synchronize(self)
    }
}

/// The backend is chosen at run time, so the engine is boxed behind the kit's trait.
type AnyBurn = Loaded<Box<dyn Engine>>;

fn load(request: &Request) -> EngineResult<AnyBurn> {
    if request.model.format != WeightFormat::Safetensors {
        return Err(format!(
            "engine-burn loads the HF safetensors directory, not {:?} weights (burn has no GGUF reader)",
            request.model.format
        )
        .into());
    }
    let mut settings = BTreeMap::new();
    match request.device {
        lab_protocol::Device::Cpu => {
            if request.model.dtype != Dtype::F32 {
                return Err(format!(
                    "burn's CPU backend (Flex) runs f32 only here, not {}",
                    request.model.dtype.as_str()
                )
                .into());
            }
            let threads = engine_kit::threads(request);
            // burn-flex parallelises with rayon's global pool (gemm too).
            engine_kit::set_rayon_threads(threads);
            // burn-flex (pure Rust, the `gemm` crate), not NdArray: NdArray 0.21 reshapes both
            // matmul operands into owned copies, i.e. copies every weight matrix at every call
            // (measured here: 10.6 s vs 2.0 s for the same 16-token request, same tokens).
            settings.insert("matmul".into(), "gemm crate (burn-flex)".into());
            Burn::<burn::backend::Flex<f32>>::load(
                request,
                burn::backend::flex::FlexDevice,
                "Flex<f32>",
                settings,
                threads as u32,
            )
        }
        lab_protocol::Device::Cuda { ordinal } => cuda(request, ordinal as usize, settings),
    }
}

#[cfg(feature = "cuda")]
fn cuda(
    request: &Request,
    ordinal: usize,
    settings: BTreeMap<String, String>,
) -> EngineResult<AnyBurn> {
    use burn::backend::cuda::CudaDevice;
    use burn::backend::Cuda;
    let device = CudaDevice::new(ordinal);
    match request.model.dtype {
        Dtype::F32 => {
            Burn::<Cuda<f32>>::load(request, device, "Cuda<f32> (CubeCL, fusion)", settings, 0)
        }
        Dtype::F16 => Burn::<Cuda<burn::tensor::f16>>::load(
            request,
            device,
            "Cuda<f16> (CubeCL, fusion)",
            settings,
            0,
        ),
        Dtype::Bf16 => Burn::<Cuda<burn::tensor::bf16>>::load(
            request,
            device,
            "Cuda<bf16> (CubeCL, fusion)",
            settings,
            0,
        ),
        d @ (Dtype::Q4_1 | Dtype::Q8_0 | Dtype::Q4_0) => Err(engine_kit::quantized_needs_gguf(d)),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda(
    _request: &Request,
    _ordinal: usize,
    _settings: BTreeMap<String, String>,
) -> EngineResult<AnyBurn> {
    Err(META.no_cuda())
}

fn main() {
    engine_kit::run_main(META, load)
}
