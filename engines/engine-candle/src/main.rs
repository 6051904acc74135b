//! engine-candle: candle's quantized Llama (GGUF) and dense Llama (HF safetensors) behind the
//! lab's engine kit. CPU by default; the `cuda` feature adds `Device::Cuda`.
//!
//! Reads a request on stdin, writes a report on stdout (see `lab-protocol`).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::{llama, quantized_llama};
use engine_kit::{require_file, Engine, EngineMeta, EngineResult, Loaded};
use lab_protocol::{Request, WeightFormat};

const BACKEND: &str = "candle-core 0.10.2 / candle-transformers 0.10.2";
const META: EngineMeta = EngineMeta {
    name: "candle",
    version: env!("CARGO_PKG_VERSION"),
    backend: BACKEND,
};

enum Model {
    Quantized(quantized_llama::ModelWeights),
    Dense {
        model: llama::Llama,
        config: llama::Config,
        cache: llama::Cache,
        dtype: DType,
    },
}

struct Candle {
    model: Model,
    device: Device,
    /// Position of the next token in the current sequence.
    pos: usize,
}

fn device_for(request: &Request) -> EngineResult<Device> {
    Ok(
        match engine_kit::cuda_ordinal(&META, request, candle_core::utils::cuda_is_available())? {
            None => Device::Cpu,
            Some(ordinal) => Device::new_cuda(ordinal)?,
        },
    )
}

impl Candle {
    fn load(request: &Request) -> EngineResult<Loaded<Self>> {
        if let Some(n) = request.threads {
            // candle's CPU kernels use rayon's global pool.
            engine_kit::set_rayon_threads(n as usize);
        }
        let device = device_for(request)?;
        let dir = Path::new(&request.model.dir);
        let mut settings = BTreeMap::new();
        let model = match request.model.format {
            WeightFormat::Gguf => {
                engine_kit::require_gguf_dtype(request)?;
                let path = dir.join("model.gguf");
                require_file(&path)?;
                let mut file = std::fs::File::open(&path)?;
                let content = gguf_file::Content::read(&mut file)
                    .map_err(|e| format!("{}: not a readable GGUF: {e}", path.display()))?;
                let weights = quantized_llama::ModelWeights::from_gguf(content, &mut file, &device)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                settings.insert(
                    "activations".into(),
                    "quantized to q8_1 for the q4_1 matmuls (candle's vec_dot)".into(),
                );
                if matches!(device, Device::Cpu) {
                    settings.insert(
                        "q4_1_cpu_kernel".into(),
                        "scalar (candle 0.10 has no SIMD vec_dot for q4_1)".into(),
                    );
                }
                Model::Quantized(weights)
            }
            WeightFormat::Safetensors => {
                let engine_kit::HfFiles {
                    config: config_path,
                    weights: weights_path,
                } = engine_kit::require_hf_dir(dir)?;
                let text = std::fs::read_to_string(&config_path)?;
                let config: llama::LlamaConfig = serde_json::from_str(&text)
                    .map_err(|e| format!("{}: not a Llama config: {e}", config_path.display()))?;
                let config = config.into_config(false);
                let dtype = engine_kit::dense_dtype(
                    request.model.dtype,
                    DType::F32,
                    DType::F16,
                    DType::BF16,
                )?;
                // SAFETY: the safetensors file is memory-mapped, which requires that it is not
                // modified or truncated while mapped: the volume is read-only and nothing in the
                // lab rewrites a file in place (the builder writes a new file and renames it).
                let vb = unsafe {
                    candle_nn::VarBuilder::from_mmaped_safetensors(&[&weights_path], dtype, &device)
                }
                .map_err(|e| format!("{}: {e}", weights_path.display()))?;
                let model = llama::Llama::load(vb, &config)
                    .map_err(|e| format!("{}: {e}", weights_path.display()))?;
                let cache = llama::Cache::new(true, dtype, &config, &device)?;
                settings.insert("attention".into(), "eager (no flash-attn)".into());
                Model::Dense {
                    model,
                    config,
                    cache,
                    dtype,
                }
            }
        };
        settings.insert("kv_cache".into(), "grown with Tensor::cat per step".into());
        settings.insert(
            "avx2_compiled".into(),
            candle_core::utils::with_avx().to_string(),
        );
        let engine = Candle {
            model,
            device,
            pos: 0,
        };
        let threads = candle_core::utils::get_num_threads() as u32;
        Ok(META.loaded(engine, request, threads, settings))
    }

    fn forward(&mut self, tokens: &[u32], logits: &mut Vec<f32>) -> EngineResult<()> {
        let input = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        let out = match &mut self.model {
            Model::Quantized(m) => m.forward(&input, self.pos)?,
            Model::Dense { model, cache, .. } => model.forward(&input, self.pos, cache)?,
        };
        self.pos += tokens.len();
        let v = out.squeeze(0)?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        logits.clear();
        logits.extend_from_slice(&v);
        Ok(())
    }
}

impl Engine for Candle {
    fn reset(&mut self) -> EngineResult<()> {
        self.pos = 0;
        match &mut self.model {
            // quantized_llama drops its KV cache when it sees index_pos == 0.
            Model::Quantized(_) => {}
            Model::Dense {
                config,
                cache,
                dtype,
                ..
            } => {
                *cache = llama::Cache::new(true, *dtype, config, &self.device)?;
            }
        }
        Ok(())
    }

    fn prefill(&mut self, prompt: &[u32], logits: &mut Vec<f32>) -> EngineResult<()> {
        self.forward(prompt, logits)
    }

    fn decode(&mut self, token: u32, logits: &mut Vec<f32>) -> EngineResult<()> {
        self.forward(&[token], logits)
    }

    fn synchronize(&mut self) -> EngineResult<()> {
        self.device.synchronize()?;
        Ok(())
    }
}

fn main() {
    engine_kit::run_main(META, Candle::load)
}
