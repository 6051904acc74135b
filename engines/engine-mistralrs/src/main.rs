//! engine-mistralrs: mistral.rs 0.8.1 through its Rust API, the way its users run it — a model
//! pipeline behind mistral.rs's own engine thread and scheduler, fed requests over a channel and
//! answering with a token stream. CPU by default; the `cuda` feature adds CUDA.
//!
//! mistral.rs owns the generation loop, so this engine implements the kit's [`SequenceEngine`]
//! (one whole sequence per call) rather than the step-wise `Engine`:
//! - token ids in: every request is `RequestMessage::CompletionTokens` (no chat template, no
//!   tokenizer on the way in);
//! - token ids out, and the lab's sampling rule: a `CustomLogitsProcessor` (mistral.rs's own
//!   extension point) runs the kit's sampler on every position's logits, records the id and the
//!   time, and masks the other ids whenever mistral.rs's argmax could pick differently (ties go to
//!   the lowest id in the lab, to the highest in mistral.rs);
//! - fixed length: the runner is built with `disable_eos_stop` and the request's `max_len`;
//! - fairness: prefix caching off, one request at a time, threads from the request;
//! - time to first token from the streaming API (request sent → first chunk received);
//! - teacher forcing: one forward pass over prompt + forced ids with `return_raw_logits`.
//!
//! Offline guard: mistral.rs 0.8 turns a model path that does not exist into a Hugging Face Hub
//! request (and ignores `HF_HUB_OFFLINE`), so every path is checked here before mistral.rs sees it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::{DType, Tensor};
use engine_kit::{
    require_file, EngineMeta, EngineResult, KitError, Loaded, Sampler, SequenceEngine, SequenceRun,
};
use lab_protocol::{
    Dtype, GenerationSettings, IterationSample, Request, Sampling, TopLogits, WeightFormat, TOP_K,
};
use mistralrs::model_builder_trait::{build_gguf_pipeline, build_text_pipeline};
use mistralrs::{GgufModelBuilder, Model, TextModelBuilder};
use mistralrs_core::{
    Constraint, CustomLogitsProcessor, MistralRsBuilder, ModelDType, NormalLoaderType,
    NormalRequest, Request as MistralRequest, RequestMessage, Response, SamplingParams, StopTokens,
    TokenSource,
};

const BACKEND: &str = "mistralrs 0.8.1 (candle-core 0.10.2)";
const META: EngineMeta = EngineMeta {
    name: "mistralrs",
    version: env!("CARGO_PKG_VERSION"),
    backend: BACKEND,
};

/// Checks the model directory and files before mistral.rs is given any path (see the module
/// docs: a missing path would become a Hub request). Returns the absolute directory.
fn guard_paths(request: &Request) -> EngineResult<PathBuf> {
    let dir = Path::new(&request.model.dir);
    if !dir.is_dir() {
        return Err(format!(
            "model directory {} is missing (engines never download; run `cargo xtask models`); \
             refused before mistral.rs could turn it into a Hugging Face Hub request",
            dir.display()
        )
        .into());
    }
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("model directory {}: {e}", dir.display()))?;
    let files: &[&str] = match request.model.format {
        WeightFormat::Gguf => &["model.gguf", "tokenizer.json"],
        WeightFormat::Safetensors => &["config.json", "model.safetensors", "tokenizer.json"],
    };
    for f in files {
        require_file(&dir.join(f))?;
    }
    Ok(dir)
}

/// The lab's sampler inside mistral.rs's sampling step; see the module docs.
struct LabSampler {
    greedy: bool,
    state: Mutex<SamplerState>,
}

struct SamplerState {
    sampler: Sampler,
    tokens: Vec<u32>,
    times: Vec<Instant>,
    error: Option<String>,
}

impl LabSampler {
    fn new(sampling: &Sampling) -> Self {
        LabSampler {
            greedy: Sampler::new(sampling).is_greedy(),
            state: Mutex::new(SamplerState {
                sampler: Sampler::new(sampling),
                tokens: Vec::new(),
                times: Vec::new(),
                error: None,
            }),
        }
    }
}

impl CustomLogitsProcessor for LabSampler {
    fn apply(&self, logits: &Tensor, context: &[u32]) -> candle_core::Result<Tensor> {
        // mistral.rs has already copied these logits to the host: this is the moment the
        // position's logits are available.
        let now = Instant::now();
        let values: Vec<f32> = logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let mut st = self.state.lock().expect("sampler state");
        if let Some(&previous) = st.tokens.last() {
            if context.last() != Some(&previous) && st.error.is_none() {
                st.error = Some(format!(
                    "mistral.rs continued with {:?} after the lab's sampler chose {previous}",
                    context.last()
                ));
            }
        }
        let token = st.sampler.sample(&values);
        st.tokens.push(token);
        st.times.push(now);
        let chosen = values[token as usize];
        let unique_max = self.greedy
            && values
                .iter()
                .enumerate()
                .all(|(i, &v)| i == token as usize || v < chosen);
        if unique_max {
            // mistral.rs's argmax picks the same id: leave its logits untouched.
            return Ok(logits.clone());
        }
        let mut masked = vec![f32::NEG_INFINITY; values.len()];
        masked[token as usize] = 0.0;
        Tensor::from_vec(masked, logits.shape(), logits.device())?.to_dtype(logits.dtype())
    }
}

struct MistralRs {
    model: Model,
    rt: tokio::runtime::Runtime,
}

fn model_dtype(dtype: Dtype) -> EngineResult<ModelDType> {
    engine_kit::dense_dtype(dtype, ModelDType::F32, ModelDType::F16, ModelDType::BF16)
}

fn device_for(request: &Request) -> EngineResult<Option<candle_core::Device>> {
    engine_kit::cuda_ordinal(&META, request, candle_core::utils::cuda_is_available())?
        .map(|ordinal| Ok(candle_core::Device::new_cuda(ordinal)?))
        .transpose()
}

impl MistralRs {
    fn load(request: &Request) -> EngineResult<Loaded<Self>> {
        if let Some(n) = request.threads {
            // candle's CPU kernels (mistral.rs computes with candle) use rayon's global pool.
            engine_kit::set_rayon_threads(n as usize);
        }
        // Belt and braces: mistral.rs 0.8.1 ignores this, but its dependencies may not.
        std::env::set_var("HF_HUB_OFFLINE", "1");
        if std::env::var_os("HF_HOME").is_none() {
            // mistral.rs creates its cache directories even for local models; keep them off the
            // (possibly read-only) home directory.
            std::env::set_var("HF_HOME", std::env::temp_dir().join("engine-mistralrs-hf"));
        }
        let dir = guard_paths(request)?;
        let dir_s = dir.to_string_lossy().to_string();
        let device = device_for(request)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut settings = BTreeMap::new();

        let (pipeline, scheduler) = match request.model.format {
            WeightFormat::Gguf => {
                engine_kit::require_gguf_dtype(request)?;
                // `with_tokenizer_json` is ignored by mistral.rs 0.8.1's GGUF path; the tokenizer
                // model id is what makes it read the volume's tokenizer.json instead of converting
                // the GGUF's vocabulary.
                let mut b = GgufModelBuilder::new(&dir_s, vec!["model.gguf"])
                    .with_tok_model_id(&dir_s)
                    .with_token_source(TokenSource::None)
                    .with_prefix_cache_n(None);
                b = match &device {
                    None => b.with_force_cpu(),
                    Some(d) => b.with_device(d.clone()),
                };
                let (p, s, _) = rt
                    .block_on(build_gguf_pipeline(b))
                    .map_err(|e| format!("mistral.rs cannot load {dir_s}/model.gguf: {e:#}"))?;
                settings.insert(
                    "tokenizer".into(),
                    "the volume's tokenizer.json (with_tok_model_id), not the GGUF conversion"
                        .into(),
                );
                (p, s)
            }
            WeightFormat::Safetensors => {
                let dtype = model_dtype(request.model.dtype)?;
                let mut b = TextModelBuilder::new(&dir_s)
                    .with_loader_type(NormalLoaderType::Llama)
                    .with_dtype(dtype)
                    .with_tokenizer_json(dir.join("tokenizer.json").to_string_lossy())
                    .with_token_source(TokenSource::None)
                    .with_prefix_cache_n(None);
                b = match &device {
                    None => b.with_force_cpu(),
                    Some(d) => b.with_device(d.clone()),
                };
                let (p, s, _) = rt
                    .block_on(build_text_pipeline(b))
                    .map_err(|e| format!("mistral.rs cannot load {dir_s}: {e:#}"))?;
                settings.insert("tokenizer".into(), "the volume's tokenizer.json".into());
                (p, s)
            }
        };
        // The high-level builders do not expose `disable_eos_stop`; build the runner ourselves
        // (what `build_model_from_pipeline` does, plus that switch).
        let runner = rt.block_on(
            MistralRsBuilder::new(pipeline, scheduler, false, None)
                .with_no_kv_cache(false)
                .with_no_prefix_cache(true)
                .with_disable_eos_stop(true)
                .build(),
        );
        let model = Model::new(runner);

        settings.insert("api".into(), "Rust API: model pipeline + MistralRsBuilder + Model; requests are RequestMessage::CompletionTokens (token ids, no chat template)".into());
        settings.insert("prefix_cache".into(), "off".into());
        settings.insert("kv_cache".into(), "on (mistral.rs default)".into());
        settings.insert(
            "paged_attention".into(),
            match device {
                None => "off (mistral.rs has PagedAttention only on CUDA/Metal)".into(),
                Some(_) => "off (not requested)".into(),
            },
        );
        settings.insert(
            "generation_length".into(),
            "fixed: max_len = max_new_tokens, EOS stop disabled in the runner; stop_at_eos uses stop token ids".into(),
        );
        settings.insert(
            "sampling".into(),
            "the lab's sampler as a mistral.rs CustomLogitsProcessor (greedy ties → lowest id); other ids masked when mistral.rs's argmax could differ".into(),
        );
        settings.insert(
            "timing".into(),
            "streaming API: TTFT = request sent → first chunk received, e2e = → last chunk; inter-token gaps between the per-token logits-processor calls".into(),
        );
        settings.insert(
            "teacher_forcing".into(),
            "one forward pass over prompt + forced ids with return_raw_logits".into(),
        );
        settings.insert(
            "scheduler".into(),
            "mistral.rs default scheduler, one request at a time".into(),
        );
        let threads = candle_core::utils::get_num_threads() as u32;
        Ok(META.loaded(MistralRs { model, rt }, request, threads, settings))
    }

    fn request(
        &self,
        ids: Vec<u32>,
        sampling_params: SamplingParams,
        streaming: bool,
        raw_logits: bool,
        processor: Option<Arc<LabSampler>>,
        response: tokio::sync::mpsc::Sender<Response>,
    ) -> MistralRequest {
        MistralRequest::Normal(Box::new(NormalRequest {
            messages: RequestMessage::CompletionTokens(ids),
            sampling_params,
            response,
            return_logprobs: false,
            is_streaming: streaming,
            id: self.model.inner().next_request_id(),
            constraint: Constraint::None,
            suffix: None,
            tools: None,
            tool_choice: None,
            logits_processors: processor.map(|p| vec![p as Arc<dyn CustomLogitsProcessor>]),
            return_raw_logits: raw_logits,
            web_search_options: None,
            model_id: None,
            truncate_sequence: false,
        }))
    }

    fn generate(&mut self, g: &GenerationSettings, prompt: &[u32]) -> EngineResult<SequenceRun> {
        let n = g.max_new_tokens as usize;
        let lab = Arc::new(LabSampler::new(&g.sampling));
        let mut params = SamplingParams::deterministic();
        params.max_len = Some(n);
        if g.stop_at_eos {
            params.stop_toks = Some(StopTokens::Ids(g.eos_token_ids.clone()));
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(n + 4);
        let req = self.request(prompt.to_vec(), params, true, false, Some(lab.clone()), tx);
        let sender = self.model.inner().get_sender(None)?;
        let (start, first, last) = self.rt.block_on(async move {
            let start = Instant::now();
            sender
                .send(req)
                .await
                .map_err(|_| "mistral.rs's engine thread is gone".to_string())?;
            let mut first = None;
            let mut last = None;
            while let Some(resp) = rx.recv().await {
                match resp {
                    Response::CompletionChunk(c) => {
                        let now = Instant::now();
                        first.get_or_insert(now);
                        last = Some(now);
                        if c.choices.iter().any(|ch| ch.finish_reason.is_some()) {
                            break;
                        }
                    }
                    Response::CompletionDone(_) => break,
                    Response::InternalError(e) | Response::ValidationError(e) => {
                        return Err(format!("mistral.rs: {e}"))
                    }
                    Response::CompletionModelError(msg, _) => {
                        return Err(format!("mistral.rs: {msg}"))
                    }
                    _ => return Err("mistral.rs answered with an unexpected response kind".into()),
                }
            }
            Ok::<_, String>((start, first, last))
        })?;
        let st = lab.state.lock().expect("sampler state");
        if let Some(e) = &st.error {
            return Err(e.clone().into());
        }
        let (Some(first), Some(last)) = (first, last) else {
            return Err("mistral.rs streamed no chunk".into());
        };
        let tokens = st.tokens.clone();
        let stopped_early =
            g.stop_at_eos && tokens.last().is_some_and(|t| g.eos_token_ids.contains(t));
        if tokens.is_empty() || (tokens.len() != n && !stopped_early) {
            return Err(format!(
                "mistral.rs generated {} tokens, {n} were requested",
                tokens.len()
            )
            .into());
        }
        let inter_token_ns = st
            .times
            .windows(2)
            .map(|w| (w[1] - w[0]).as_nanos() as u64)
            .collect();
        Ok(SequenceRun {
            sample: IterationSample {
                ttft_ns: (first - start).as_nanos() as u64,
                e2e_ns: (last - start).as_nanos() as u64,
                new_tokens: tokens.len() as u32,
                inter_token_ns,
            },
            tokens,
            top_logits: Vec::new(),
        })
    }

    fn teacher_forced(
        &mut self,
        g: &GenerationSettings,
        prompt: &[u32],
        forced: &[u32],
    ) -> EngineResult<SequenceRun> {
        let mut ids = prompt.to_vec();
        ids.extend_from_slice(forced);
        let total = ids.len();
        let mut params = SamplingParams::deterministic();
        params.max_len = Some(1);
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let req = self.request(ids, params, false, true, None, tx);
        let sender = self.model.inner().get_sender(None)?;
        let (elapsed, chunks) = self.rt.block_on(async move {
            let start = Instant::now();
            sender
                .send(req)
                .await
                .map_err(|_| "mistral.rs's engine thread is gone".to_string())?;
            match rx.recv().await {
                Some(Response::Raw { logits_chunks, .. }) => Ok((start.elapsed(), logits_chunks)),
                Some(Response::InternalError(e)) | Some(Response::ValidationError(e)) => {
                    Err(format!("mistral.rs: {e}"))
                }
                Some(_) => Err("mistral.rs answered a raw-logits request with another kind".into()),
                None => Err("mistral.rs closed the response channel".into()),
            }
        })?;
        let logits = Tensor::cat(&chunks, 0)?.to_dtype(DType::F32)?;
        let (rows, _vocab) = logits.dims2()?;
        if rows != total {
            return Err(format!(
                "mistral.rs returned logits for {rows} positions, {total} were fed"
            )
            .into());
        }
        let mut sampler = Sampler::new(&g.sampling);
        let mut tokens = Vec::with_capacity(forced.len() + 1);
        let mut top_logits = Vec::with_capacity(forced.len() + 1);
        for pos in prompt.len() - 1..total {
            let row: Vec<f32> = logits.get(pos)?.to_vec1()?;
            tokens.push(sampler.sample(&row));
            top_logits.push(TopLogits::of(&row, TOP_K));
        }
        let ns = elapsed.as_nanos() as u64;
        Ok(SequenceRun {
            sample: IterationSample {
                ttft_ns: ns,
                e2e_ns: ns,
                new_tokens: tokens.len() as u32,
                // One forward pass: every position is available at once.
                inter_token_ns: vec![0; tokens.len() - 1],
            },
            tokens,
            top_logits,
        })
    }
}

impl SequenceEngine for MistralRs {
    fn run_sequence(
        &mut self,
        generation: &GenerationSettings,
        prompt: &[u32],
        forced: Option<&[u32]>,
    ) -> Result<SequenceRun, KitError> {
        let (phase, result) = match forced {
            None => ("generate", self.generate(generation, prompt)),
            Some(f) => (
                "teacher-forced pass",
                self.teacher_forced(generation, prompt, f),
            ),
        };
        result.map_err(|source| KitError::Engine { phase, source })
    }
}

fn main() {
    engine_kit::run_main_sequences(META, MistralRs::load)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lab_testkit as testkit;

    use super::*;

    /// The control for the integration test `a_missing_model_path_is_refused_without_network_access`:
    /// without the engine's guard, mistral.rs 0.8.1 itself sends a missing local path to the
    /// Hugging Face Hub (here it reaches the proxy trap instead of the internet).
    #[test]
    fn unguarded_mistralrs_turns_a_missing_path_into_a_hub_request() {
        let (proxy, seen) = testkit::proxy_trap();
        for var in testkit::PROXY_VARS {
            std::env::set_var(var, &proxy);
        }
        std::env::set_var(
            "HF_HOME",
            std::env::temp_dir().join("engine-mistralrs-test-hf"),
        );
        std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let b =
                GgufModelBuilder::new("/nonexistent/HuggingFaceTB/SmolLM2-135M", vec!["m.gguf"])
                    .with_token_source(TokenSource::None)
                    .with_force_cpu();
            let _ = rt.block_on(build_gguf_pipeline(b));
        });
        let first = seen
            .recv_timeout(Duration::from_secs(120))
            .expect("mistral.rs made no network request for a missing path");
        eprintln!(
            "unguarded mistral.rs asked the proxy: {:?}",
            first.lines().next()
        );
        assert!(first.contains("huggingface.co"), "{first}");
    }
}
