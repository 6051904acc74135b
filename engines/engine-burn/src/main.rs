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
use engine_kit::{require_file, Engine, EngineMeta, EngineResult};
use lab_protocol::{Dtype, EngineIdentity, Request, WeightFormat};

const BACKEND: &str = "burn 0.21.0";
const META: EngineMeta = EngineMeta {
    name: "burn",
    version: env!("CARGO_PKG_VERSION"),
    backend: BACKEND,
};
/// RoPE tables and the longest sequence the engine accepts (capped by the model's own limit).
const MAX_POSITIONS: usize = 8192;

struct Burn<B: Backend> {
    model: model::Llama<B>,
    device: B::Device,
    identity: EngineIdentity,
}

impl<B: Backend> Burn<B> {
    fn load(
        request: &Request,
        device: B::Device,
        backend: &str,
        mut settings: BTreeMap<String, String>,
        threads: u32,
    ) -> EngineResult<Self> {
        let dir = Path::new(&request.model.dir);
        require_file(&dir.join("config.json"))?;
        require_file(&dir.join("model.safetensors"))?;
        let model = model::Llama::<B>::load(dir, MAX_POSITIONS, &device)?;
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
        settings.insert("burn_backend".into(), backend.into());
        settings.insert("weights".into(), "burn-store SafetensorsStore".into());
        let identity = META.identity(request, threads, settings);
        Ok(Burn {
            model,
            device,
            identity,
        })
    }
}

impl<B: Backend> Engine for Burn<B> {
    fn identity(&self) -> EngineIdentity {
        self.identity.clone()
    }

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
}

/// The backend is chosen at run time, so the engine is boxed behind the kit's trait.
struct AnyBurn(Box<dyn Engine>);

impl Engine for AnyBurn {
    fn identity(&self) -> EngineIdentity {
        self.0.identity()
    }
    fn reset(&mut self) -> EngineResult<()> {
        self.0.reset()
    }
    fn prefill(&mut self, prompt: &[u32], logits: &mut Vec<f32>) -> EngineResult<()> {
        self.0.prefill(prompt, logits)
    }
    fn decode(&mut self, token: u32, logits: &mut Vec<f32>) -> EngineResult<()> {
        self.0.decode(token, logits)
    }
    fn synchronize(&mut self) -> EngineResult<()> {
        self.0.synchronize()
    }
    fn peak_device_bytes(&self) -> Option<u64> {
        self.0.peak_device_bytes()
    }
}

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
            let threads = request.threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
            });
            // burn-flex parallelises with rayon's global pool (gemm too), which reads this on
            // first use.
            std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
            // burn-flex (pure Rust, the `gemm` crate), not NdArray: NdArray 0.21 reshapes both
            // matmul operands into owned copies, i.e. copies every weight matrix at every call
            // (measured here: 10.6 s vs 2.0 s for the same 16-token request, same tokens).
            settings.insert("matmul".into(), "gemm crate (burn-flex)".into());
            let e: Box<dyn Engine> = Box::new(Burn::<burn::backend::Flex<f32>>::load(
                request,
                burn::backend::flex::FlexDevice,
                "Flex<f32>",
                settings,
                threads,
            )?);
            Ok(AnyBurn(e))
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
    let e: Box<dyn Engine> = match request.model.dtype {
        Dtype::F32 => Box::new(Burn::<Cuda<f32>>::load(
            request,
            device,
            "Cuda<f32> (CubeCL, fusion)",
            settings,
            0,
        )?),
        Dtype::F16 => Box::new(Burn::<Cuda<burn::tensor::f16>>::load(
            request,
            device,
            "Cuda<f16> (CubeCL, fusion)",
            settings,
            0,
        )?),
        Dtype::Bf16 => Box::new(Burn::<Cuda<burn::tensor::bf16>>::load(
            request,
            device,
            "Cuda<bf16> (CubeCL, fusion)",
            settings,
            0,
        )?),
        Dtype::Q4_1 => return Err("q4_1 needs the GGUF weight format".into()),
    };
    Ok(AnyBurn(e))
}

#[cfg(not(feature = "cuda"))]
fn cuda(
    _request: &Request,
    _ordinal: usize,
    _settings: BTreeMap<String, String>,
) -> EngineResult<AnyBurn> {
    Err("this engine-burn binary was built without the `cuda` feature".into())
}

fn main() {
    engine_kit::run_main(META, load)
}
