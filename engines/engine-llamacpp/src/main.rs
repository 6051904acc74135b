//! engine-llamacpp: llama.cpp (through `llama-cpp-2`, which vendors llama.cpp's sources) behind
//! the lab's engine kit. Loads the volume's GGUF; CPU by default, `cuda` feature for GPUs.
//!
//! Token ids in, token ids out: the prompt is fed as ids in one batch (logits only for its last
//! position), then one token per decode call. The KV cache is cleared before every sequence.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::Path;

use engine_kit::{require_file, Engine, EngineMeta, EngineResult, Loaded};
use lab_protocol::{Dtype, Request, WeightFormat};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

/// The bindings' version and what is knowable about the llama.cpp they vendor: the crate tarball
/// carries no llama.cpp git commit, so the bindings' own git revision and ggml's version stand in.
const BACKEND: &str = "llama-cpp-2 0.1.160 / llama-cpp-sys-2 0.1.161 (llama-cpp-rs git e7af607e, vendored ggml 0.26.0)";
const META: EngineMeta = EngineMeta {
    name: "llamacpp",
    version: env!("CARGO_PKG_VERSION"),
    backend: BACKEND,
};

/// Largest prompt the context accepts (S1 needs 200 + 64 tokens).
const N_CTX: u32 = 4096;

struct LlamaCpp {
    ctx: LlamaContext<'static>,
    batch: LlamaBatch<'static>,
    pos: i32,
}

/// llama.cpp's own account of the CPU features it was compiled with (e.g. `AVX2 = 1`).
fn system_info() -> String {
    // SAFETY: `llama_print_system_info` takes no arguments and returns `c_str()` of a
    // function-local static `std::string` in llama.cpp: NUL-terminated, never freed, and only
    // rewritten by the next call of the same function. `raw` is copied into an owned `String`
    // before this function returns, and nothing else calls it meanwhile (this is its only caller,
    // run once while loading; llama-cpp-2 does not call it).
    let raw = unsafe { std::ffi::CStr::from_ptr(llama_cpp_sys_2::llama_print_system_info()) };
    raw.to_string_lossy().trim().to_string()
}

impl LlamaCpp {
    fn load(request: &Request) -> EngineResult<Loaded<Self>> {
        if request.model.format != WeightFormat::Gguf || request.model.dtype != Dtype::Q4_1 {
            return Err(format!(
                "llama.cpp loads the GGUF as stored (format gguf, dtype q4_1), not {:?} {}",
                request.model.format,
                request.model.dtype.as_str()
            )
            .into());
        }
        let gpu_layers = match request.device {
            lab_protocol::Device::Cpu => 0,
            lab_protocol::Device::Cuda { .. } if cfg!(feature = "cuda") => 999,
            lab_protocol::Device::Cuda { .. } => return Err(META.no_cuda()),
        };
        let path = Path::new(&request.model.dir).join("model.gguf");
        require_file(&path)?;
        let threads = engine_kit::threads(request) as i32;

        // The backend and the model live as long as the process; leaking them gives the context
        // the 'static borrow it needs without a self-referential struct.
        let mut backend = LlamaBackend::init()?;
        backend.void_logs();
        let backend: &'static LlamaBackend = Box::leak(Box::new(backend));
        let params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers);
        let model = LlamaModel::load_from_file(backend, &path, &params)
            .map_err(|e| format!("{}: llama.cpp cannot load it: {e}", path.display()))?;
        let model: &'static LlamaModel = Box::leak(Box::new(model));
        let ctx_params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(N_CTX))
            .with_n_batch(N_CTX)
            .with_n_ubatch(512)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let ctx = model.new_context(backend, ctx_params)?;

        let mut settings = BTreeMap::new();
        settings.insert("system_info".into(), system_info());
        settings.insert("n_ctx".into(), N_CTX.to_string());
        settings.insert("n_ubatch".into(), "512".into());
        settings.insert("n_gpu_layers".into(), gpu_layers.to_string());
        settings.insert(
            "kv_cache".into(),
            "llama.cpp KV cache, cleared before every sequence".into(),
        );
        settings.insert("logits".into(), "last prompt position only".into());
        let engine = LlamaCpp {
            ctx,
            batch: LlamaBatch::new(N_CTX as usize, 1),
            pos: 0,
        };
        Ok(META.loaded(engine, request, threads as u32, settings))
    }

    fn run(&mut self, tokens: &[u32], logits: &mut Vec<f32>) -> EngineResult<()> {
        if self.pos as usize + tokens.len() > N_CTX as usize {
            return Err(format!(
                "sequence of {} tokens exceeds the context of {N_CTX}",
                self.pos as usize + tokens.len()
            )
            .into());
        }
        self.batch.clear();
        for (i, &t) in tokens.iter().enumerate() {
            self.batch.add(
                LlamaToken(t as i32),
                self.pos + i as i32,
                &[0],
                i + 1 == tokens.len(),
            )?;
        }
        self.ctx.decode(&mut self.batch)?;
        self.pos += tokens.len() as i32;
        let out = self.ctx.get_logits_ith(self.batch.n_tokens() - 1);
        logits.clear();
        logits.extend_from_slice(out);
        Ok(())
    }
}

impl Engine for LlamaCpp {
    fn reset(&mut self) -> EngineResult<()> {
        self.ctx.clear_kv_cache();
        self.pos = 0;
        Ok(())
    }

    fn prefill(&mut self, prompt: &[u32], logits: &mut Vec<f32>) -> EngineResult<()> {
        self.run(prompt, logits)
    }

    fn decode(&mut self, token: u32, logits: &mut Vec<f32>) -> EngineResult<()> {
        self.run(&[token], logits)
    }

    fn synchronize(&mut self) -> EngineResult<()> {
        self.ctx.synchronize();
        Ok(())
    }
}

fn main() {
    engine_kit::run_main(META, LlamaCpp::load)
}
