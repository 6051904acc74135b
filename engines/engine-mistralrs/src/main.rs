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
//! - fairness: prefix caching off, threads from the request; S1/S5 one request at a time;
//! - load (S2, S3): many streaming requests into mistral.rs's own scheduler at once (S2 a burst
//!   of B, S3 concurrent clients), its running-sequence limit set from the request;
//! - timing: every token counts from the moment mistral.rs's sampling step decided it (see
//!   `MistralRs::generate`), so TTFT, the gaps and e2e add up;
//! - teacher forcing: one forward pass over prompt + forced ids with `return_raw_logits`.
//!
//! Offline guard: mistral.rs 0.8 turns a model path that does not exist into a Hugging Face Hub
//! request (and ignores `HF_HUB_OFFLINE`), so every path is checked here before mistral.rs sees it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::{DType, Tensor};
use engine_kit::load;
use engine_kit::PeakRss;
use engine_kit::{
    require_file, EngineMeta, EngineResult, KitError, Loaded, Sampler, SequenceEngine, SequenceRun,
};
use lab_protocol::{
    Arrival, BatchSample, Dtype, GenerationSettings, IterationSample, LoadPoint, Prompt, Request,
    RequestRecord, RequestStatus, Sampling, ScenarioReport, ScenarioRequest, TopLogits,
    WeightFormat, TOP_K,
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
    let gguf = request.model.dtype.gguf_file().unwrap_or("model.gguf");
    let gguf_files = [gguf, "tokenizer.json"];
    let files: &[&str] = match request.model.format {
        WeightFormat::Gguf => &gguf_files,
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
    /// Counts this sequence as decoding from its first token (load scenarios).
    activity: Option<Arc<Activity>>,
}

/// Sequences of a load level between their first token and the end of their stream, and the
/// most at once (the level's `max_active`).
#[derive(Default)]
struct Activity {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Activity {
    fn started(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
    }
    fn ended(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

struct SamplerState {
    sampler: Sampler,
    tokens: Vec<u32>,
    times: Vec<Instant>,
    error: Option<String>,
}

impl LabSampler {
    fn new(sampling: &Sampling, activity: Option<Arc<Activity>>) -> Self {
        LabSampler {
            greedy: Sampler::new(sampling).is_greedy(),
            state: Mutex::new(SamplerState {
                sampler: Sampler::new(sampling),
                tokens: Vec::new(),
                times: Vec::new(),
                error: None,
            }),
            activity,
        }
    }

    /// The ids and the time each was decided, once the stream ended; an error when mistral.rs
    /// strayed from the lab's sampler or generated another number of tokens than asked.
    fn finish(&self, g: &GenerationSettings) -> Result<(Vec<u32>, Vec<Instant>), String> {
        let st = self.state.lock().expect("sampler state");
        if let Some(e) = &st.error {
            return Err(e.clone());
        }
        let n = g.max_new_tokens as usize;
        let stopped_early = g.stop_at_eos
            && st
                .tokens
                .last()
                .is_some_and(|t| g.eos_token_ids.contains(t));
        if st.tokens.is_empty() || (st.tokens.len() != n && !stopped_early) {
            return Err(format!(
                "mistral.rs generated {} tokens, {n} were requested",
                st.tokens.len()
            ));
        }
        Ok((st.tokens.clone(), st.times.clone()))
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
        if st.tokens.is_empty() {
            if let Some(a) = &self.activity {
                a.started();
            }
        }
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

/// Why the adapter refuses scenarios without the KV cache: measured, not assumed.
const NO_KV_CACHE: &str = "mistral.rs 0.8.1's KV cache is a setting of the whole runner (MistralRsBuilder::with_no_kv_cache), and a runner built with it does not recompute the prefix on the Llama GGUF or safetensors pipeline: measured on the 2-core dev VM (results/cpu-analyses-dev-20261129, a run made while the code changed), its steps took as long as with the cache (0.92x and 1.02x) and its greedy ids left the cached run's at the first decode step (token 29 repeated)";

struct MistralRs {
    model: Model,
    rt: tokio::runtime::Runtime,
    /// mistral.rs's scheduler limit (`with_max_num_seqs`).
    max_seqs: usize,
}

/// mistral.rs's limit of running sequences: room for the largest S2 batch and the S3 `max_batch`
/// of the request (the kit's engines share that cap), else mistral.rs's default.
fn max_running_sequences(request: &Request) -> usize {
    request
        .scenarios
        .iter()
        .filter_map(|s| match &s.load {
            Some(lab_protocol::Load::Batches { batch_sizes, .. }) => {
                batch_sizes.iter().max().copied()
            }
            Some(lab_protocol::Load::Concurrent { max_batch, .. }) => Some(*max_batch),
            None => None,
        })
        .max()
        .map_or(32, |n| n.max(1) as usize)
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
        let max_seqs = max_running_sequences(request);
        engine_kit::phase("runtime_init");
        let model = Self::runner(request, &dir_s, &dir, &device, &rt, max_seqs, &mut settings)?;
        engine_kit::phase("weights_loaded");
        Self::describe(&mut settings, &device, max_seqs);
        let threads = candle_core::utils::get_num_threads() as u32;
        let engine = MistralRs {
            model,
            rt,
            max_seqs,
        };
        Ok(META.loaded(engine, request, threads, settings))
    }

    /// Loads the pipeline and builds the runner around it.
    fn runner(
        request: &Request,
        dir_s: &str,
        dir: &Path,
        device: &Option<candle_core::Device>,
        rt: &tokio::runtime::Runtime,
        max_seqs: usize,
        settings: &mut BTreeMap<String, String>,
    ) -> EngineResult<Model> {
        let (pipeline, scheduler) = match request.model.format {
            WeightFormat::Gguf => {
                let path = engine_kit::gguf_path(request)?;
                let file = path
                    .file_name()
                    .map(|f| f.to_string_lossy().to_string())
                    .unwrap_or_default();
                // `with_tokenizer_json` is ignored by mistral.rs 0.8.1's GGUF path; the tokenizer
                // model id is what makes it read the volume's tokenizer.json instead of converting
                // the GGUF's vocabulary.
                let mut b = GgufModelBuilder::new(dir_s, vec![file.clone()])
                    .with_tok_model_id(dir_s)
                    .with_token_source(TokenSource::None)
                    .with_prefix_cache_n(None)
                    .with_max_num_seqs(max_seqs);
                b = match device {
                    None => b.with_force_cpu(),
                    Some(d) => b.with_device(d.clone()),
                };
                let (p, s, _) = rt
                    .block_on(build_gguf_pipeline(b))
                    .map_err(|e| format!("mistral.rs cannot load {dir_s}/{file}: {e:#}"))?;
                settings.insert(
                    "tokenizer".into(),
                    "the volume's tokenizer.json (with_tok_model_id), not the GGUF conversion"
                        .into(),
                );
                (p, s)
            }
            WeightFormat::Safetensors => {
                let dtype = model_dtype(request.model.dtype)?;
                let mut b = TextModelBuilder::new(dir_s)
                    .with_loader_type(NormalLoaderType::Llama)
                    .with_dtype(dtype)
                    .with_tokenizer_json(dir.join("tokenizer.json").to_string_lossy())
                    .with_token_source(TokenSource::None)
                    .with_prefix_cache_n(None)
                    .with_max_num_seqs(max_seqs);
                b = match device {
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
        Ok(Model::new(runner))
    }

    /// The fairness-relevant settings of the runners.
    fn describe(
        settings: &mut BTreeMap<String, String>,
        device: &Option<candle_core::Device>,
        max_seqs: usize,
    ) {
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
            "streaming requests; every token counts from the moment mistral.rs's sampling step decided it (the lab's logits processor): TTFT = request sent → token 0, gaps = token k-1 → token k, e2e = sent → last token (TTFT + gaps = e2e); the stream's delivery of each chunk after that is not counted".into(),
        );
        settings.insert(
            "teacher_forcing".into(),
            "one forward pass over prompt + forced ids with return_raw_logits".into(),
        );
        settings.insert(
            "scheduler".into(),
            format!(
                "mistral.rs default scheduler (fixed, at most {max_seqs} running sequences: the \
                 request's largest S2 batch / S3 max_batch, else mistral.rs's default 32); S1/S5 \
                 one request at a time; S2 bursts of B requests; S3 concurrent streaming requests"
            ),
        );
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
        normal_request(
            self.model.inner().next_request_id(),
            ids,
            sampling_params,
            streaming,
            raw_logits,
            processor,
            response,
        )
    }

    /// One streamed generation (S1, S5). Every number spans the same events: the request is
    /// sent into mistral.rs's channel at `sent`; token `k` counts from the moment mistral.rs's
    /// sampling step decided it (the lab's logits processor). TTFT = sent → token 0, each gap =
    /// token k-1 → token k, e2e = sent → last token; so TTFT + Σ gaps = e2e exactly.
    fn generate(&mut self, g: &GenerationSettings, prompt: &[u32]) -> EngineResult<SequenceRun> {
        let id = self.model.inner().next_request_id();
        let sender = self.model.inner().get_sender(None)?;
        let flight = Flight {
            id,
            prompt: prompt.to_vec(),
            g: g.clone(),
            activity: None,
        };
        let done = self.rt.block_on(flight.run(sender))?;
        Ok(SequenceRun {
            sample: IterationSample {
                ttft_ns: ns_between(done.sent, done.times[0]),
                e2e_ns: ns_between(done.sent, *done.times.last().expect("one token")),
                new_tokens: done.tokens.len() as u32,
                inter_token_ns: done
                    .times
                    .windows(2)
                    .map(|w| ns_between(w[0], w[1]))
                    .collect(),
                start_unix_ns: Some(engine_kit::unix_ns_of(done.sent)),
            },
            tokens: done.tokens,
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
                start_unix_ns: None,
            },
            tokens,
            top_logits,
        })
    }
}

fn ns_between(a: Instant, b: Instant) -> u64 {
    b.saturating_duration_since(a).as_nanos() as u64
}

fn normal_request(
    id: usize,
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
        id,
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

/// One streaming generation request, ready to send.
struct Flight {
    id: usize,
    prompt: Vec<u32>,
    g: GenerationSettings,
    activity: Option<Arc<Activity>>,
}

/// What a finished flight gave: the ids, the moment each was decided, when it was sent.
struct Landed {
    sent: Instant,
    tokens: Vec<u32>,
    times: Vec<Instant>,
}

impl Flight {
    /// Sends the request and drives its stream to the end.
    async fn run(
        self,
        sender: tokio::sync::mpsc::Sender<MistralRequest>,
    ) -> Result<Landed, String> {
        let g = self.g;
        let n = g.max_new_tokens as usize;
        let lab = Arc::new(LabSampler::new(&g.sampling, self.activity.clone()));
        let mut params = SamplingParams::deterministic();
        params.max_len = Some(n);
        if g.stop_at_eos {
            params.stop_toks = Some(StopTokens::Ids(g.eos_token_ids.clone()));
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(n + 4);
        let req = normal_request(
            self.id,
            self.prompt,
            params,
            true,
            false,
            Some(lab.clone()),
            tx,
        );
        let sent = Instant::now();
        let streamed = async {
            sender
                .send(req)
                .await
                .map_err(|_| "mistral.rs's engine thread is gone".to_string())?;
            let mut chunks = 0usize;
            while let Some(resp) = rx.recv().await {
                match resp {
                    Response::CompletionChunk(c) => {
                        chunks += 1;
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
            if chunks == 0 {
                return Err("mistral.rs streamed no chunk".into());
            }
            Ok(())
        }
        .await;
        if let Some(a) = &self.activity {
            if !lab.state.lock().expect("sampler state").tokens.is_empty() {
                a.ended();
            }
        }
        streamed?;
        let (tokens, times) = lab.finish(&g)?;
        Ok(Landed {
            sent,
            tokens,
            times,
        })
    }
}

impl MistralRs {
    /// S2 at batch size `b`: bursts of `b` requests sent together into mistral.rs's scheduler,
    /// each burst measured until its last sequence's last token, warm-up bursts first, until
    /// `duration_ms` passed.
    fn bursts(&mut self, scenario: &ScenarioRequest, b: u32, duration_ms: u64) -> LoadPoint {
        let rss = PeakRss::start();
        let mut point = load::empty_point(b);
        let mut outputs = load::Outputs::new();
        let group: Vec<&Prompt> = scenario.prompts.iter().cycle().take(b as usize).collect();
        let activity = Arc::new(Activity::default());
        let mut origin = Instant::now();
        for i in 0u32.. {
            let warmup = i < scenario.warmup_iterations;
            if i == scenario.warmup_iterations {
                origin = Instant::now();
            }
            if !warmup
                && !point.batches.is_empty()
                && origin.elapsed().as_millis() as u64 >= duration_ms
            {
                break;
            }
            match self.burst(scenario, &group, origin, &activity) {
                Ok((sample, landed)) => {
                    for (p, l) in group.iter().zip(&landed) {
                        outputs.record(&p.name, &l.tokens);
                    }
                    if !warmup {
                        point.batches.push(sample);
                    }
                }
                Err(e) => {
                    point.error = Some(format!("burst {}: {e}", i + 1));
                    break;
                }
            }
            eprintln!(
                "progress: {} batch size {b}: {} {} ({:.1} s measured)",
                scenario.id,
                if warmup { "warm-up burst" } else { "burst" },
                if warmup {
                    i + 1
                } else {
                    i + 1 - scenario.warmup_iterations
                },
                if warmup {
                    0.0
                } else {
                    origin.elapsed().as_secs_f64()
                }
            );
        }
        point.max_active = activity.max.load(Ordering::SeqCst) as u32;
        point.deterministic = outputs.deterministic;
        point.outputs = outputs.sorted();
        point.peak_rss_bytes = rss.finish();
        point.start_unix_ns = Some(engine_kit::unix_ns_of(origin));
        point
    }

    /// One burst: every request sent at once; the sample's prefill ends when every sequence has
    /// its first token, step `k` when every sequence has its token `k`.
    fn burst(
        &mut self,
        scenario: &ScenarioRequest,
        group: &[&Prompt],
        origin: Instant,
        activity: &Arc<Activity>,
    ) -> Result<(BatchSample, Vec<Landed>), String> {
        let sender = self
            .model
            .inner()
            .get_sender(None)
            .map_err(|e| e.to_string())?;
        let flights: Vec<Flight> = group
            .iter()
            .map(|p| Flight {
                id: self.model.inner().next_request_id(),
                prompt: p.token_ids.clone(),
                g: scenario.generation.clone(),
                activity: Some(activity.clone()),
            })
            .collect();
        let start = Instant::now();
        let landed = self.rt.block_on(async move {
            let tasks: Vec<_> = flights
                .into_iter()
                .map(|f| tokio::spawn(f.run(sender.clone())))
                .collect();
            let mut out = Vec::with_capacity(tasks.len());
            for t in tasks {
                out.push(t.await.map_err(|e| format!("request task: {e}"))??);
            }
            Ok::<_, String>(out)
        })?;
        let steps = landed.iter().map(|l| l.times.len()).min().unwrap_or(0);
        let at = |k: usize| landed.iter().map(|l| l.times[k]).max().expect("a burst");
        let mut step_ns = Vec::with_capacity(steps.saturating_sub(1));
        for k in 1..steps {
            step_ns.push(ns_between(at(k - 1), at(k)));
        }
        Ok((
            BatchSample {
                start_ns: ns_between(origin, start),
                sequences: group.len() as u32,
                prompt_tokens: group.iter().map(|p| p.token_ids.len() as u32).sum(),
                prefill_ns: ns_between(start, at(0)),
                step_ns,
                new_tokens: landed.iter().map(|l| l.tokens.len() as u32).sum(),
            },
            landed,
        ))
    }

    /// S3 at concurrency `c`: `total` requests into mistral.rs's own scheduler, from `c` closed
    /// loop clients (each sends its next request when the previous one ended) or at seeded
    /// Poisson arrival times. A request's times come from its own stream and sampler.
    fn clients(
        &mut self,
        scenario: &ScenarioRequest,
        c: u32,
        arrival: &Arrival,
        total: u32,
    ) -> LoadPoint {
        let rss = PeakRss::start();
        let mut point = load::empty_point(c);
        let sender = match self.model.inner().get_sender(None) {
            Ok(s) => s,
            Err(e) => {
                point.error = Some(e.to_string());
                return point;
            }
        };
        let total = total as usize;
        let activity = Arc::new(Activity::default());
        let flights: Vec<Flight> = (0..total)
            .map(|i| Flight {
                id: self.model.inner().next_request_id(),
                prompt: scenario.prompts[i % scenario.prompts.len()]
                    .token_ids
                    .clone(),
                g: scenario.generation.clone(),
                activity: Some(activity.clone()),
            })
            .collect();
        let arrival = arrival.clone();
        let level = scenario.id.clone();
        let records = self.rt.block_on(async move {
            let origin = Instant::now();
            let flights = Arc::new(Mutex::new(
                flights.into_iter().map(Some).collect::<Vec<_>>(),
            ));
            let take = move |i: usize| {
                flights.lock().expect("flights")[i]
                    .take()
                    .expect("sent once")
            };
            let fly = move |f: Flight, i: usize, client: u32, submit_ns: u64, sender| async move {
                let landed = f.run(sender).await;
                (
                    i,
                    client,
                    submit_ns,
                    landed,
                    ns_between(origin, Instant::now()),
                )
            };
            let mut tasks = Vec::new();
            match arrival {
                Arrival::Closed => {
                    let next = Arc::new(AtomicUsize::new(0));
                    for client in 0..(c as usize).min(total) {
                        let (next, sender, take, fly) =
                            (next.clone(), sender.clone(), take.clone(), fly);
                        tasks.push(tokio::spawn(async move {
                            let mut done = Vec::new();
                            loop {
                                let i = next.fetch_add(1, Ordering::SeqCst);
                                if i >= total {
                                    break;
                                }
                                let submit = ns_between(origin, Instant::now());
                                done.push(
                                    fly(take(i), i, client as u32, submit, sender.clone()).await,
                                );
                            }
                            done
                        }));
                    }
                }
                Arrival::Poisson { rate_per_s, seed } => {
                    let at = load::poisson_arrivals(rate_per_s, seed, total);
                    for (i, &t) in at.iter().enumerate() {
                        tokio::time::sleep_until((origin + Duration::from_nanos(t)).into()).await;
                        let task = fly(take(i), i, i as u32, t, sender.clone());
                        tasks.push(tokio::spawn(async move { vec![task.await] }));
                    }
                }
            }
            let mut out = Vec::with_capacity(total);
            let mut last_progress = Instant::now();
            for t in tasks {
                match t.await {
                    Ok(v) => out.extend(v),
                    Err(e) => eprintln!("progress: {level}: a client task failed: {e}"),
                }
                if last_progress.elapsed() >= Duration::from_secs(2) {
                    last_progress = Instant::now();
                    eprintln!(
                        "progress: {level} concurrency {c}: {}/{total} requests ended ({:.1} s)",
                        out.len(),
                        origin.elapsed().as_secs_f64()
                    );
                }
            }
            (origin, out)
        });
        let (origin, mut ended) = records;
        point.start_unix_ns = Some(engine_kit::unix_ns_of(origin));
        ended.sort_by_key(|&(i, ..)| i);
        let mut outputs = load::Outputs::new();
        for (i, client, submit_ns, landed, now_ns) in ended {
            let p = &scenario.prompts[i % scenario.prompts.len()];
            let mut r = RequestRecord {
                client,
                prompt: p.name.clone(),
                prompt_tokens: p.token_ids.len() as u32,
                submit_ns,
                // mistral.rs's own scheduler admits it; its queue is not observable from here.
                admit_ns: None,
                first_token_ns: None,
                done_ns: Some(now_ns),
                new_tokens: 0,
                status: RequestStatus::Completed,
            };
            match landed {
                Ok(l) => {
                    r.first_token_ns = Some(ns_between(origin, l.times[0]));
                    r.done_ns = Some(ns_between(origin, *l.times.last().expect("one token")));
                    r.new_tokens = l.tokens.len() as u32;
                    outputs.record(&p.name, &l.tokens);
                }
                Err(reason) => r.status = RequestStatus::Failed { reason },
            }
            point.requests.push(r);
        }
        if point.requests.len() < total {
            point.error = Some(format!(
                "{} of {total} requests were lost by their client tasks",
                total - point.requests.len()
            ));
        }
        point.requests.sort_by_key(|r| (r.submit_ns, r.client));
        point.max_active = activity.max.load(Ordering::SeqCst) as u32;
        point.deterministic = outputs.deterministic;
        point.outputs = outputs.sorted();
        point.peak_rss_bytes = rss.finish();
        point
    }
}

impl SequenceEngine for MistralRs {
    fn kv_cache_off(&self) -> Option<String> {
        Some(NO_KV_CACHE.into())
    }

    fn run_load(&mut self, scenario: &ScenarioRequest) -> Option<ScenarioReport> {
        let batching = format!(
            "mistral.rs's own scheduler (continuous batching, at most {} running sequences; \
             S2: bursts of B requests)",
            self.max_seqs
        );
        Some(load::each_level(scenario, batching, |level| match level {
            load::Level::Batch { size, duration_ms } => self.bursts(scenario, size, duration_ms),
            load::Level::Clients {
                c, arrival, total, ..
            } => self.clients(scenario, c, arrival, total),
        }))
    }

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
