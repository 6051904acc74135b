//! engine-candle: candle's quantized Llama (GGUF) and dense Llama (HF safetensors) behind the
//! lab's engine kit. CPU by default; the `cuda` feature adds `Device::Cuda`.
//!
//! Reads a request on stdin, writes a report on stdout (see `lab-protocol`).

mod micro;
mod train;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::{llama, quantized_llama};
use engine_kit::{Engine, EngineMeta, EngineResult, Loaded};
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
    /// The microbenchmark scenario's ops (`micro.rs`).
    ops: micro::CandleOps,
    /// The LoRA scenario's training path (`train.rs`).
    train: train::CandleTrain,
    /// Position of the next token in the current sequence (or lock-step batch).
    pos: usize,
    /// Sequences in the current batch (1 outside S2).
    batch: usize,
}

/// The most sequences one S2 batch holds; a larger batch runs as consecutive batches.
const MAX_BATCH: usize = 256;

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
        engine_kit::phase("runtime_init");
        let dir = Path::new(&request.model.dir);
        let mut settings = BTreeMap::new();
        let model = match request.model.format {
            WeightFormat::Gguf => {
                let path = engine_kit::gguf_path(request)?;
                let mut file = std::fs::File::open(&path)?;
                engine_kit::phase("file_open");
                let content = gguf_file::Content::read(&mut file)
                    .map_err(|e| format!("{}: not a readable GGUF: {e}", path.display()))?;
                engine_kit::phase("weights_parsed");
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
                // Mapped and its header read: the weights are read as the model is built.
                engine_kit::phase("weights_parsed");
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
        engine_kit::phase("weights_loaded");
        settings.insert("kv_cache".into(), "grown with Tensor::cat per step".into());
        settings.insert(
            "avx2_compiled".into(),
            candle_core::utils::with_avx().to_string(),
        );
        settings.insert(
            "batching".into(),
            format!(
                "S2 lock-step: the batch's prompts as one (batch, seq) input at one shared \
                 position (equal lengths only; at most {MAX_BATCH} per batch); S3 serial"
            ),
        );
        let weights = dir.join("model.safetensors");
        let engine = Candle {
            model,
            ops: micro::CandleOps {
                device: device.clone(),
                weights: weights.is_file().then_some(weights),
            },
            train: train::CandleTrain {
                device: device.clone(),
                dir: dir.to_path_buf(),
            },
            device,
            pos: 0,
            batch: 1,
        };
        let threads = candle_core::utils::get_num_threads() as u32;
        Ok(META.loaded(engine, request, threads, settings))
    }

    fn forward(&mut self, tokens: &[u32], logits: &mut Vec<f32>) -> EngineResult<()> {
        let input = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        self.forward_batch(input, logits)
    }

    /// Runs `input` `(batch, seq)` at the current position; writes the logits of every row's
    /// last position, row after row.
    fn forward_batch(&mut self, input: Tensor, logits: &mut Vec<f32>) -> EngineResult<()> {
        let seq = input.dim(1)?;
        let out = match &mut self.model {
            Model::Quantized(m) => m.forward(&input, self.pos)?,
            Model::Dense { model, cache, .. } => model.forward(&input, self.pos, cache)?,
        };
        self.pos += seq;
        let v = out.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        logits.clear();
        logits.extend_from_slice(&v);
        Ok(())
    }
}

/// S2's lock-step batches: candle's Llama takes `(batch, seq)` with one position for the whole
/// batch, so a batch is prompts of one length prefilled together and decoded together.
impl engine_kit::LockStepEngine for Candle {
    const NAME: &'static str = "candle";

    fn max_slots(&self) -> usize {
        MAX_BATCH
    }

    fn batching(&self) -> String {
        match self.model {
            Model::Dense { .. } => "lock-step (batch, seq) input, one shared position".into(),
            Model::Quantized(_) => "lock-step (batch, seq) input, one shared position; a batch \
                 is prefilled one position at a time (candle-transformers 0.10.2's quantized \
                 Llama fails on batch > 1 with seq > 1)"
                .into(),
        }
    }

    fn why_lock_step(&self) -> String {
        "candle's Llama has one position for the whole batch and no padding mask, so \
         requests of different lengths cannot share a batch"
            .into()
    }

    fn prefill_together(&mut self, prompts: &[&[u32]], logits: &mut Vec<f32>) -> EngineResult<()> {
        let len = prompts.first().map_or(0, |p| p.len());
        Engine::reset(self)?;
        self.batch = prompts.len();
        if prompts.len() > 1 && matches!(self.model, Model::Quantized(_)) {
            // candle-transformers 0.10.2's quantized Llama fails on a (batch > 1, seq > 1)
            // input: its output QMatMul is given the strided last-position slice ("input tensor
            // is not contiguous"). One position at a time for the whole batch works.
            for i in 0..len {
                let column: Vec<u32> = prompts.iter().map(|p| p[i]).collect();
                let input = Tensor::from_vec(column, (prompts.len(), 1), &self.device)?;
                self.forward_batch(input, logits)?;
            }
            return Ok(());
        }
        let flat: Vec<u32> = prompts.iter().flat_map(|p| p.iter().copied()).collect();
        let input = Tensor::from_vec(flat, (prompts.len(), len), &self.device)?;
        self.forward_batch(input, logits)
    }

    fn decode_together(&mut self, tokens: &[u32], logits: &mut Vec<f32>) -> EngineResult<()> {
        let input = Tensor::from_vec(tokens.to_vec(), (tokens.len(), 1), &self.device)?;
        self.forward_batch(input, logits)
    }

    fn batch_len(&self) -> usize {
        self.batch
    }

    fn sync(&mut self) -> EngineResult<()> {
        Engine::synchronize(self)
    }
}

impl Engine for Candle {
    fn reset(&mut self) -> EngineResult<()> {
        self.pos = 0;
        self.batch = 1;
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

    fn batch(&mut self) -> Option<&mut dyn engine_kit::BatchEngine> {
        Some(self)
    }

    fn ops(&mut self) -> Option<&mut dyn engine_kit::OpBench> {
        Some(&mut self.ops)
    }

    fn lora(&mut self) -> Option<&mut dyn engine_kit::train::LoraTrain> {
        Some(&mut self.train)
    }
}

fn main() {
    engine_kit::run_main(META, Candle::load)
}
