//! Tests of the measurement loop with a mock engine whose behaviour is known exactly.

use std::collections::BTreeMap;

use lab_protocol::*;

use super::*;

/// A mock engine: the next token is `(last + 1) % vocab`, with a switch to make it fail or be
/// non-deterministic. It counts calls so the tests can check the loop's shape.
struct Mock {
    vocab: usize,
    last: u32,
    fail_on_prompt_len: Option<usize>,
    flaky: bool,
    sequences: u32,
    syncs: u32,
    resets: u32,
    decodes: u32,
    /// Milliseconds every sequence takes (a sleep in `reset`).
    sleep_ms: u64,
    /// The length of every prefill.
    prefills: Vec<usize>,
}

impl Mock {
    fn new() -> Self {
        Mock {
            vocab: 8,
            last: 0,
            fail_on_prompt_len: None,
            flaky: false,
            sequences: 0,
            syncs: 0,
            resets: 0,
            decodes: 0,
            sleep_ms: 0,
            prefills: Vec::new(),
        }
    }
    fn fill(&self, logits: &mut Vec<f32>) {
        logits.clear();
        logits.resize(self.vocab, 0.0);
        let mut next = (self.last as usize + 1) % self.vocab;
        if self.flaky && self.sequences.is_multiple_of(2) {
            next = (next + 1) % self.vocab;
        }
        logits[next] = 1.0;
    }
}

impl Engine for Mock {
    fn reset(&mut self) -> EngineResult<()> {
        self.resets += 1;
        self.sequences += 1;
        std::thread::sleep(std::time::Duration::from_millis(self.sleep_ms));
        Ok(())
    }
    fn prefill(&mut self, prompt: &[u32], logits: &mut Vec<f32>) -> EngineResult<()> {
        if self.fail_on_prompt_len == Some(prompt.len()) {
            return Err("out of memory (simulated)".into());
        }
        self.last = *prompt.last().unwrap();
        self.prefills.push(prompt.len());
        self.fill(logits);
        Ok(())
    }
    fn decode(&mut self, token: u32, logits: &mut Vec<f32>) -> EngineResult<()> {
        self.decodes += 1;
        self.last = token;
        self.fill(logits);
        Ok(())
    }
    fn synchronize(&mut self) -> EngineResult<()> {
        self.syncs += 1;
        Ok(())
    }
}

fn scenario(prompts: &[&[u32]], max_new: u32, stop_at_eos: bool) -> ScenarioRequest {
    ScenarioRequest {
        id: "s1".into(),
        kind: ScenarioKind::SingleRequestLatency,
        prompts: prompts
            .iter()
            .enumerate()
            .map(|(i, p)| Prompt {
                name: format!("p{i}"),
                token_ids: p.to_vec(),
                forced_token_ids: vec![],
            })
            .collect(),
        generation: GenerationSettings {
            max_new_tokens: max_new,
            stop_at_eos,
            eos_token_ids: vec![2],
            sampling: Sampling::Greedy,
            kv_cache: true,
        },
        warmup_iterations: 1,
        iterations: 3,
        min_duration_ms: 0,
        max_duration_ms: None,
        load: None,
        sampling_overhead: None,
        micro: None,
        lora: None,
    }
}

#[test]
fn a_minimum_time_extends_and_a_budget_cuts_the_measured_iterations() {
    let mut e = Mock::new();
    e.sleep_ms = 10;
    // 2 iterations asked, but at least 45 ms of measuring: at least 5 iterations of >= 10 ms.
    let mut sc = scenario(&[&[5, 6]], 3, false);
    sc.iterations = 2;
    sc.min_duration_ms = 45;
    let r = run_scenario(&mut e, &sc);
    let n = r.prompts[0].samples.len();
    assert!((5..=6).contains(&n), "{n} samples");
    assert_eq!(r.prompts[0].warmup_iterations, 1);
    // 100 iterations asked within 15 ms: one or two (never zero).
    let mut sc = scenario(&[&[5, 6], &[7]], 3, false);
    sc.iterations = 100;
    sc.max_duration_ms = Some(15);
    let r = run_scenario(&mut e, &sc);
    for p in &r.prompts {
        assert!((1..=2).contains(&p.samples.len()), "{}", p.samples.len());
        assert!(p.deterministic);
    }
}

#[test]
fn generates_fixed_length_ignoring_eos_by_default() {
    let mut e = Mock::new();
    let r = run_scenario(&mut e, &scenario(&[&[5, 6]], 6, false));
    assert!(r.error.is_none());
    let p = &r.prompts[0];
    // 6 -> 7 -> 0 -> 1 -> 2 (eos, ignored) -> 3
    assert_eq!(p.generated_token_ids, vec![7, 0, 1, 2, 3, 4]);
    assert_eq!(p.samples.len(), 3);
    assert!(p.deterministic);
    for s in &p.samples {
        assert_eq!(s.new_tokens, 6);
        assert_eq!(s.inter_token_ns.len(), 5);
        assert!(s.e2e_ns >= s.ttft_ns);
    }
    // 4 sequences (1 warm-up + 3), one reset each, 5 decode steps each.
    assert_eq!(e.resets, 4);
    assert_eq!(e.decodes, 4 * 5);
    // A sync before every timestamp: after reset, after prefill, after every decode step.
    assert_eq!(e.syncs, 4 * (2 + 5));
}

#[test]
fn teacher_forcing_feeds_the_forced_tokens_and_keeps_top_logits() {
    let mut e = Mock::new();
    let mut sc = scenario(&[&[5, 6]], 4, true);
    sc.kind = ScenarioKind::TeacherForced;
    // The mock predicts last + 1; feeding 3, 0, 5 makes it predict 4, 1, 6 after the prefill's 7.
    sc.prompts[0].forced_token_ids = vec![3, 0, 5];
    let r = run_scenario(&mut e, &sc);
    assert!(r.error.is_none());
    let p = &r.prompts[0];
    // EOS (2) never stops a teacher-forced pass; every position is predicted once.
    assert_eq!(p.generated_token_ids, vec![7, 4, 1, 6]);
    assert_eq!(p.top_logits.len(), 4);
    assert_eq!(p.top_logits[1].ids[0], 4);
    assert_eq!(p.top_logits[1].logits[0], 1.0);
    // Ties (the zeros) rank by ascending id after the maximum.
    assert_eq!(p.top_logits[1].ids[1..], [0, 1, 2, 3]);
    assert_eq!(e.decodes, 4 * 3);

    // The forced count must match the length, or the request is refused.
    let req = Request {
        schema_version: SCHEMA_VERSION,
        model: ModelSpec {
            name: "m".into(),
            dir: "/m".into(),
            format: WeightFormat::Gguf,
            dtype: Dtype::Q4_1,
            synthetic: false,
        },
        device: Device::Cpu,
        threads: None,
        scenarios: vec![ScenarioRequest {
            generation: GenerationSettings {
                max_new_tokens: 9,
                ..sc.generation.clone()
            },
            ..sc
        }],
    };
    let err = parse_request(&serde_json::to_string(&req).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("p0") && err.contains("3 forced tokens"),
        "{err}"
    );
}

#[test]
fn stops_at_eos_only_when_asked() {
    let mut e = Mock::new();
    let r = run_scenario(&mut e, &scenario(&[&[5, 6]], 6, true));
    assert_eq!(r.prompts[0].generated_token_ids, vec![7, 0, 1, 2]);
    assert_eq!(r.prompts[0].samples[0].new_tokens, 4);
}

#[test]
fn an_engine_error_keeps_the_prompts_already_measured() {
    let mut e = Mock::new();
    e.fail_on_prompt_len = Some(3);
    let r = run_scenario(&mut e, &scenario(&[&[1], &[1, 2, 3], &[4]], 3, false));
    assert_eq!(r.prompts.len(), 1);
    let err = r.error.expect("scenario error");
    assert!(err.contains("p1") && err.contains("simulated"), "{err}");
}

#[test]
fn non_deterministic_engines_are_flagged() {
    let mut e = Mock::new();
    e.flaky = true;
    let r = run_scenario(&mut e, &scenario(&[&[1]], 3, false));
    assert!(!r.prompts[0].deterministic);
}

#[test]
fn bad_requests_get_one_clear_error() {
    let err = parse_request("{not json").unwrap_err().to_string();
    assert!(err.starts_with("malformed request JSON"), "{err}");

    let mut req = Request {
        schema_version: SCHEMA_VERSION,
        model: ModelSpec {
            name: "m".into(),
            dir: "/models/m".into(),
            format: WeightFormat::Gguf,
            dtype: Dtype::Q4_1,
            synthetic: false,
        },
        device: Device::Cpu,
        threads: None,
        scenarios: vec![scenario(&[&[1]], 3, false)],
    };
    let ok = serde_json::to_string(&req).unwrap();
    assert_eq!(parse_request(&ok).unwrap(), req);

    req.schema_version = 99;
    let err = parse_request(&serde_json::to_string(&req).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("schema_version is 99"), "{err}");

    req.schema_version = SCHEMA_VERSION;
    req.scenarios[0].iterations = 0;
    let err = parse_request(&serde_json::to_string(&req).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`s1`") && err.contains("iterations"), "{err}");

    req.scenarios[0].iterations = 1;
    req.scenarios[0].min_duration_ms = 50;
    req.scenarios[0].max_duration_ms = Some(10);
    let err = parse_request(&serde_json::to_string(&req).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("min_duration_ms"), "{err}");
    req.scenarios[0].min_duration_ms = 0;
    req.scenarios[0].max_duration_ms = Some(0);
    let err = parse_request(&serde_json::to_string(&req).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_duration_ms"), "{err}");

    // Unknown fields are refused rather than silently ignored.
    let with_typo = ok.replace("\"threads\"", "\"thread\"");
    let err = parse_request(&with_typo).unwrap_err().to_string();
    assert!(err.contains("thread"), "{err}");
}

#[test]
fn without_the_kv_cache_every_step_recomputes_the_whole_prefix() {
    let mut on = scenario(&[&[5, 6]], 4, false);
    on.warmup_iterations = 0;
    on.iterations = 1;
    let mut off = on.clone();
    off.generation.kv_cache = false;
    let mut e = Mock::new();
    let r_on = run_scenario(&mut e, &on);
    assert_eq!((e.resets, e.decodes, e.prefills.clone()), (1, 3, vec![2]));
    let mut e = Mock::new();
    let r_off = run_scenario(&mut e, &off);
    assert_eq!(r_off.error, None);
    // One reset per step, no decode call, and each prefill one token longer: prompt + fed.
    assert_eq!((e.resets, e.decodes), (4, 0));
    assert_eq!(e.prefills, [2, 3, 4, 5]);
    assert_eq!(
        r_off.prompts[0].generated_token_ids,
        r_on.prompts[0].generated_token_ids
    );
    assert_eq!(r_off.prompts[0].samples[0].inter_token_ns.len(), 3);

    // An engine whose library owns its loop says it cannot, and runs nothing.
    let mut w = Whole::default();
    let r = run_sequence_scenario(&mut w, &off);
    assert!(r.prompts.is_empty() && w.sequences == 0);
    assert_eq!(r.error, None, "a design limit is not a failure");
    let why = r.unsupported.unwrap();
    assert!(why.contains("cannot run without the KV cache"), "{why}");
    // With the cache on it runs.
    assert_eq!(run_sequence_scenario(&mut w, &on).error, None);
}

/// A [`SequenceEngine`] that owns its loop: `n` tokens counting up from the prompt's last.
#[derive(Default)]
struct Whole {
    sequences: u32,
}

impl SequenceEngine for Whole {
    fn run_sequence(
        &mut self,
        g: &GenerationSettings,
        prompt: &[u32],
        _forced: Option<&[u32]>,
    ) -> Result<SequenceRun, KitError> {
        self.sequences += 1;
        let n = g.max_new_tokens;
        let last = *prompt.last().unwrap();
        Ok(SequenceRun {
            sample: IterationSample {
                ttft_ns: 10,
                e2e_ns: 10 * n as u64,
                new_tokens: n,
                inter_token_ns: vec![10; n as usize - 1],
                start_unix_ns: None,
            },
            tokens: (1..=n).map(|i| last + i).collect(),
            top_logits: vec![],
        })
    }
}

fn sampling_scenario(samples: u32) -> ScenarioRequest {
    let mut sc = scenario(&[&[3]], 3, false);
    sc.id = "sampling".into();
    sc.kind = ScenarioKind::SamplingOverhead;
    sc.sampling_overhead = Some(SamplingOverhead {
        strategies: vec![
            Sampling::Greedy,
            Sampling::TopP {
                temperature: 1.0,
                top_p: 1.0,
                seed: 5,
                top_k: Some(2),
            },
        ],
        samples,
    });
    sc
}

#[test]
fn the_sampling_overhead_times_every_strategy_on_the_last_logits() {
    let mut e = Mock::new();
    e.vocab = 6;
    let r = run_scenario(&mut e, &sampling_scenario(200));
    assert_eq!(r.error, None);
    // The forward passes: the prompt's iterations, greedy.
    assert_eq!(r.prompts[0].generated_token_ids, [4, 5, 0]);
    assert_eq!(r.sampling.len(), 2);
    for t in &r.sampling {
        assert_eq!((t.logits_len, t.sample_ns.len()), (6, 200));
        assert_eq!(t.token_ids.len(), SAMPLED_IDS_KEPT);
    }
    // The last logits (of the step that produced 0) peak at 0: greedy always picks it; top-k 2
    // at T = 1 picks 0 or the runner-up 1 (the lowest id among the equal rest).
    assert!(r.sampling[0].token_ids.iter().all(|&i| i == 0));
    assert!(r.sampling[1].token_ids.iter().all(|&i| i == 0 || i == 1));
    assert!(r.sampling[1].token_ids.contains(&1));

    // An engine that owns its loop cannot; the prompts it ran are kept.
    let r = run_sequence_scenario(&mut Whole::default(), &sampling_scenario(10));
    assert_eq!(r.prompts.len(), 1);
    assert!(r.sampling.is_empty() && r.error.is_none());
    assert!(
        r.unsupported
            .as_deref()
            .unwrap()
            .contains("cannot time the samplers"),
        "{:?}",
        r.unsupported
    );
}

#[test]
fn bad_sampling_and_kv_settings_are_refused_with_the_field() {
    let req = |sc: ScenarioRequest| Request {
        schema_version: SCHEMA_VERSION,
        model: ModelSpec {
            name: "m".into(),
            dir: "/models/m".into(),
            format: WeightFormat::Gguf,
            dtype: Dtype::Q4_1,
            synthetic: false,
        },
        device: Device::Cpu,
        threads: None,
        scenarios: vec![sc],
    };
    let err_of = |sc: ScenarioRequest| {
        parse_request(&serde_json::to_string(&req(sc)).unwrap())
            .unwrap_err()
            .to_string()
    };
    let with = |temperature, top_p, top_k| {
        let mut sc = scenario(&[&[1]], 3, false);
        sc.generation.sampling = Sampling::TopP {
            temperature,
            top_p,
            seed: 1,
            top_k,
        };
        sc
    };
    assert!(parse_request(&serde_json::to_string(&req(with(0.7, 0.9, Some(50)))).unwrap()).is_ok());
    for (sc, want) in [
        (with(0.0, 0.9, None), "temperature must be a number above 0"),
        (with(-1.0, 0.9, None), "temperature"),
        (with(0.7, 0.0, None), "top_p must be in (0, 1]"),
        (with(0.7, 1.5, None), "top_p must be in (0, 1]"),
        (with(0.7, 0.9, Some(0)), "top_k must be at least 1"),
    ] {
        let err = err_of(sc);
        assert!(err.contains("`s1`") && err.contains(want), "{err}");
    }
    let mut sc = sampling_scenario(0);
    assert!(err_of(sc.clone()).contains("samples of at least 1"));
    sc.sampling_overhead = None;
    assert!(err_of(sc).contains("needs `sampling_overhead`"));
    let mut sc = scenario(&[&[1]], 3, false);
    sc.sampling_overhead = sampling_scenario(5).sampling_overhead;
    assert!(err_of(sc).contains("does not fit"));
}

#[test]
fn peak_rss_is_reported_on_linux() {
    if cfg!(target_os = "linux") {
        assert!(peak_rss_bytes().unwrap() > 0);
    }
}

fn request_on(device: Device, dtype: Dtype) -> Request {
    Request {
        schema_version: SCHEMA_VERSION,
        model: ModelSpec {
            name: "m".into(),
            dir: "/nonexistent".into(),
            format: WeightFormat::Safetensors,
            dtype,
            synthetic: false,
        },
        device,
        threads: Some(3),
        scenarios: vec![],
    }
}

const META: EngineMeta = EngineMeta {
    name: "mock",
    version: "0",
    backend: "none",
};

#[test]
fn adapters_share_the_device_dtype_and_thread_rules() {
    let cpu = request_on(Device::Cpu, Dtype::F32);
    let gpu = request_on(Device::Cuda { ordinal: 1 }, Dtype::F32);
    assert_eq!(cuda_ordinal(&META, &cpu, false).unwrap(), None);
    assert_eq!(cuda_ordinal(&META, &gpu, true).unwrap(), Some(1));
    let e = cuda_ordinal(&META, &gpu, false).unwrap_err().to_string();
    assert_eq!(
        e,
        "this engine-mock binary was built without the `cuda` feature"
    );
    assert_eq!(dense_dtype(Dtype::Bf16, 32, 16, 17).unwrap(), 17);
    let e = dense_dtype(Dtype::Q4_1, 32, 16, 17)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "q4_1 needs the GGUF weight format");
    assert_eq!(threads(&cpu), 3);
    let e = require_hf_dir(std::path::Path::new("/nonexistent/m"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("/nonexistent/m/config.json is missing") && e.contains("never download"),
        "{e}"
    );
    let loaded = META.loaded((), &cpu, 3, BTreeMap::new());
    assert_eq!(
        (loaded.identity.name.as_str(), loaded.identity.threads),
        ("mock", 3)
    );
}

#[test]
fn a_boxed_engine_runs_like_the_engine_itself() {
    let scenario = scenario(&[&[1, 2, 3]], 4, false);
    let mut direct = Mock::new();
    let mut boxed: Box<dyn Engine> = Box::new(Mock::new());
    let a = run_scenario(&mut direct, &scenario);
    let b = run_scenario(&mut boxed, &scenario);
    assert_eq!(
        a.prompts[0].generated_token_ids,
        b.prompts[0].generated_token_ids
    );
    assert!(b.error.is_none() && b.prompts[0].deterministic);
}
