//! engine-llamacpp: llama.cpp (through `llama-cpp-2`, which vendors llama.cpp's sources) behind
//! the lab's engine kit. Loads the volume's GGUF; CPU by default, `cuda` feature for GPUs.
//!
//! Token ids in, token ids out: the prompt is fed as ids in one batch (logits only for its last
//! position), then one token per decode call. The KV cache is cleared before every sequence.
//!
//! Load scenarios run the way llama-batched-bench and llama-server do: up to [`N_SEQ`]
//! sequences, each with its own sequence id and positions, in one unified KV cache; a decode
//! step is one `llama_batch` holding one token per active sequence (logits for each, read with
//! `get_logits_ith`), and a finished sequence's cells are removed with `llama_memory_seq_rm`.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use engine_kit::{Engine, EngineMeta, EngineResult, Loaded};
use lab_protocol::{Request, WeightFormat};
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

/// KV cells shared by all sequences (unified cache): room for S3's 64 sequences of up to
/// 128 + 64 tokens, and for one sequence of the model's whole context (S5).
const N_CTX: u32 = 16384;
/// Sequences decoded together at most (`n_seq_max`).
const N_SEQ: usize = 64;
/// Tokens one `llama_decode` call takes (a whole S5 prompt).
const N_BATCH: u32 = 8192;

struct LlamaCpp {
    ctx: LlamaContext<'static>,
    batch: LlamaBatch<'static>,
    pos: i32,
    /// The longest sequence (the model's training context).
    n_ctx_seq: usize,
    /// Next position of each sequence id (load scenarios).
    slot_pos: Vec<i32>,
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
        if request.model.format != WeightFormat::Gguf || request.model.dtype.gguf_file().is_none() {
            return Err(format!(
                "llama.cpp loads a GGUF as stored (format gguf, dtype q4_1, q8_0, q4_0 or f16), not {:?} {}",
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
        let path = engine_kit::gguf_path(request)?;
        let threads = engine_kit::threads(request) as i32;

        // The backend and the model live as long as the process; leaking them gives the context
        // the 'static borrow it needs without a self-referential struct.
        let mut backend = LlamaBackend::init()?;
        backend.void_logs();
        let backend: &'static LlamaBackend = Box::leak(Box::new(backend));
        engine_kit::phase("runtime_init");
        let params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers);
        let model = LlamaModel::load_from_file(backend, &path, &params)
            .map_err(|e| format!("{}: llama.cpp cannot load it: {e}", path.display()))?;
        // One call opens, parses and maps the file (mmap: its pages are read at first use).
        engine_kit::phase("weights_loaded");
        let model: &'static LlamaModel = Box::leak(Box::new(model));
        let ctx_params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(N_CTX))
            .with_n_batch(N_BATCH)
            .with_n_ubatch(512)
            .with_n_seq_max(N_SEQ as u32)
            .with_kv_unified(true)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let ctx = model.new_context(backend, ctx_params)?;

        let mut settings = BTreeMap::new();
        settings.insert("system_info".into(), system_info());
        let n_ctx_seq = model.n_ctx_train() as usize;
        settings.insert("n_ctx".into(), format!("{N_CTX} cells, unified KV cache"));
        settings.insert("n_ctx_seq".into(), n_ctx_seq.to_string());
        settings.insert("n_seq_max".into(), N_SEQ.to_string());
        // K and V in f16 (llama.cpp's default cache type) for every layer's KV heads.
        let head_dim = model.n_embd() as u64 / model.n_head().max(1) as u64;
        settings.insert(
            "kv_cache_bytes_per_token".into(),
            (2 * model.n_layer() as u64 * model.n_head_kv() as u64 * head_dim * 2).to_string(),
        );
        settings.insert("n_batch".into(), N_BATCH.to_string());
        settings.insert("n_ubatch".into(), "512".into());
        settings.insert("n_gpu_layers".into(), gpu_layers.to_string());
        settings.insert(
            "kv_cache".into(),
            "llama.cpp KV cache, cleared before every sequence".into(),
        );
        settings.insert("logits".into(), "last prompt position only".into());
        let engine = LlamaCpp {
            ctx,
            batch: LlamaBatch::new(N_BATCH as usize, 1),
            pos: 0,
            n_ctx_seq,
            slot_pos: vec![0; N_SEQ],
        };
        Ok(META.loaded(engine, request, threads as u32, settings))
    }

    /// Refuses a sequence longer than the model's context or a prompt longer than one batch.
    fn check_len(&self, pos: i32, tokens: usize) -> EngineResult<()> {
        let end = pos as usize + tokens;
        if end > self.n_ctx_seq || tokens > N_BATCH as usize {
            return Err(format!(
                "sequence of {end} tokens ({tokens} at once) exceeds the context of {} tokens (or a batch of {N_BATCH})",
                self.n_ctx_seq
            )
            .into());
        }
        Ok(())
    }

    /// Feeds `tokens` to sequence `seq` from position `pos`; the last position's logits.
    fn run_seq(
        &mut self,
        seq: i32,
        pos: i32,
        tokens: &[u32],
        logits: &mut Vec<f32>,
    ) -> EngineResult<()> {
        self.check_len(pos, tokens.len())?;
        self.batch.clear();
        for (i, &t) in tokens.iter().enumerate() {
            self.batch.add(
                LlamaToken(t as i32),
                pos + i as i32,
                &[seq],
                i + 1 == tokens.len(),
            )?;
        }
        self.ctx.decode(&mut self.batch)?;
        let out = self.ctx.get_logits_ith(self.batch.n_tokens() - 1);
        logits.clear();
        logits.extend_from_slice(out);
        Ok(())
    }

    fn run(&mut self, tokens: &[u32], logits: &mut Vec<f32>) -> EngineResult<()> {
        self.run_seq(0, self.pos, tokens, logits)?;
        self.pos += tokens.len() as i32;
        Ok(())
    }

    fn slot_id(slot: usize) -> EngineResult<i32> {
        if slot >= N_SEQ {
            return Err(format!("sequence id {slot}: at most {N_SEQ} sequences").into());
        }
        Ok(slot as i32)
    }
}

impl engine_kit::BatchEngine for LlamaCpp {
    fn max_slots(&self) -> usize {
        N_SEQ
    }

    fn batching(&self) -> String {
        format!("continuous (llama_batch with sequence ids, n_seq_max {N_SEQ})")
    }

    fn prefill_slot(
        &mut self,
        slot: usize,
        prompt: &[u32],
        logits: &mut Vec<f32>,
    ) -> EngineResult<()> {
        let seq = Self::slot_id(slot)?;
        self.ctx.clear_kv_cache_seq(Some(slot as u32), None, None)?;
        self.run_seq(seq, 0, prompt, logits)?;
        self.slot_pos[slot] = prompt.len() as i32;
        Ok(())
    }

    fn decode_slots(&mut self, batch: &[(usize, u32)], logits: &mut Vec<f32>) -> EngineResult<()> {
        self.batch.clear();
        for &(slot, token) in batch {
            let seq = Self::slot_id(slot)?;
            self.check_len(self.slot_pos[slot], 1)?;
            self.batch
                .add(LlamaToken(token as i32), self.slot_pos[slot], &[seq], true)?;
        }
        self.ctx.decode(&mut self.batch)?;
        logits.clear();
        for (i, &(slot, _)) in batch.iter().enumerate() {
            logits.extend_from_slice(self.ctx.get_logits_ith(i as i32));
            self.slot_pos[slot] += 1;
        }
        Ok(())
    }

    fn release_slot(&mut self, slot: usize) {
        if slot < N_SEQ {
            // Removing a sequence's cells cannot fail for an id below n_seq_max.
            let _ = self.ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
            self.slot_pos[slot] = 0;
        }
    }

    fn synchronize(&mut self) -> EngineResult<()> {
        self.ctx.synchronize();
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

    fn batch(&mut self) -> Option<&mut dyn engine_kit::BatchEngine> {
        Some(self)
    }
}

fn main() {
    engine_kit::run_main(META, LlamaCpp::load)
}
