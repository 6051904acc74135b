//! The protocol: requests as every Rust engine reads them (`engine_kit::parse_request`) and
//! reports as the harness reads them (parsed, the version checked, then statistics,
//! correctness, analyses, token snapshots and a comparison with itself derived from them).

use engine_kit::parse_request;
use lab_fuzz as fuzz;
use lab_protocol::micro::{Micro, OpModel};
use lab_protocol::{
    Arrival, Device, Dtype, GenerationSettings, Load, ModelSpec, Prompt, Report, Request, Sampling,
    SamplingOverhead, ScenarioKind, ScenarioRequest, WeightFormat, SCHEMA_VERSION,
};
use lab_results::baseline::{self, CheckOptions, EarlierRun};
use lab_results::results::{compute_stats, TargetResult};
use lab_results::{analysis, correctness};

use crate::{committed, shrink, CASES};

fn scenario(id: &str, kind: ScenarioKind) -> ScenarioRequest {
    ScenarioRequest {
        id: id.into(),
        kind,
        prompts: vec![
            Prompt {
                name: "p16".into(),
                token_ids: (1..17).collect(),
                forced_token_ids: vec![],
            },
            Prompt {
                name: "p4".into(),
                token_ids: vec![5, 6, 7, 8],
                forced_token_ids: vec![],
            },
        ],
        generation: GenerationSettings {
            max_new_tokens: 8,
            stop_at_eos: false,
            eos_token_ids: vec![2],
            sampling: Sampling::Greedy,
            kv_cache: true,
        },
        warmup_iterations: 1,
        iterations: 3,
        min_duration_ms: 0,
        max_duration_ms: Some(60_000),
        load: None,
        sampling_overhead: None,
        micro: None,
        lora: None,
    }
}

/// Requests of every scenario kind and setting the harness sends.
fn requests() -> Vec<Vec<u8>> {
    let top_p = Sampling::TopP {
        temperature: 0.7,
        top_p: 0.9,
        seed: 42,
        top_k: Some(50),
    };
    let mut s1 = scenario("s1", ScenarioKind::SingleRequestLatency);
    s1.generation.sampling = top_p.clone();
    let mut kv_off = scenario("kv-off", ScenarioKind::SingleRequestLatency);
    kv_off.generation.kv_cache = false;
    kv_off.min_duration_ms = 100;
    let mut tf = scenario("ref-tf", ScenarioKind::TeacherForced);
    tf.prompts.truncate(1);
    tf.prompts[0].forced_token_ids = (20..27).collect();
    let mut s2 = scenario("s2", ScenarioKind::BatchedThroughput);
    s2.prompts[1].token_ids = (1..17).collect();
    s2.load = Some(Load::Batches {
        batch_sizes: vec![1, 2, 4],
        duration_ms: 500,
    });
    let mut s3 = scenario("s3", ScenarioKind::ConcurrentLoad);
    s3.load = Some(Load::Concurrent {
        concurrency: vec![1, 4],
        arrival: Arrival::Poisson {
            rate_per_s: 2.5,
            seed: 7,
        },
        requests: 8,
        max_batch: 4,
    });
    let mut s3_closed = s3.clone();
    s3_closed.id = "s3-closed".into();
    if let Some(Load::Concurrent { arrival, .. }) = &mut s3_closed.load {
        *arrival = Arrival::Closed;
    }
    let mut sampling = scenario("sampling", ScenarioKind::SamplingOverhead);
    sampling.sampling_overhead = Some(SamplingOverhead {
        strategies: vec![Sampling::Greedy, top_p],
        samples: 16,
    });
    let model = OpModel {
        hidden: 64,
        intermediate: 128,
        heads: 4,
        kv_heads: 2,
        head_dim: 16,
        vocab: 256,
        rms_eps: 1e-5,
        rope_theta: 10000.0,
    };
    let mut micro = scenario("micro", ScenarioKind::Micro);
    micro.micro = Some(Micro {
        cases: lab_results::micro::cases(&model, &[Dtype::F32, Dtype::Bf16], true),
        model,
        seed: 3,
    });
    let mut lora = scenario("lora", ScenarioKind::LoraStep);
    lora.lora =
        Some(lab_results::train::LoraSettings::standard(16, 2, 1, 9).request((1..17).collect()));
    let request = |device, format, dtype, scenarios| Request {
        schema_version: SCHEMA_VERSION,
        model: ModelSpec {
            name: "smollm2-135m".into(),
            dir: "/models/smollm2-135m".into(),
            format,
            dtype,
            synthetic: false,
        },
        device,
        threads: Some(2),
        scenarios,
    };
    vec![
        pretty!(request(
            Device::Cpu,
            WeightFormat::Gguf,
            Dtype::Q4_1,
            vec![s1, kv_off, tf, s2, s3],
        )),
        serde_json::to_vec(&request(
            Device::Cuda { ordinal: 0 },
            WeightFormat::Safetensors,
            Dtype::F32,
            vec![s3_closed, sampling, micro, lora],
        ))
        .unwrap(),
    ]
}

fn request_target(bytes: &[u8]) {
    // The kit reads stdin as UTF-8 first: other bytes are an I/O error before any parsing.
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    match parse_request(text) {
        Ok(r) => {
            fuzz::accepted();
            // What engines and the harness derive from a valid request.
            for s in &r.scenarios {
                let _ = s.generation.sampling.label();
                assert!(s.wants_more(0, 0));
                if let Some(m) = &s.micro {
                    for c in &m.cases {
                        let _ = (c.op.name(), c.op.shape(), c.op.flops(&m.model));
                        let _ = c.op.bytes(&m.model, 4);
                    }
                }
            }
        }
        Err(e) => {
            let e = e.to_string();
            crate::assert_one_line(&e);
            assert!(
                (e.contains(" line ") && e.contains(" column "))
                    || e.starts_with("scenario `")
                    || e.starts_with("request schema_version"),
                "a request error that says neither where nor which scenario: {e}"
            );
        }
    }
}

#[test]
fn fuzz_request() {
    let seeds = requests();
    for s in &seeds {
        parse_request(std::str::from_utf8(s).unwrap()).expect("the seeds are valid requests");
    }
    fuzz::run("request", &seeds, CASES, request_target);
}

/// Committed results, shrunk: S1 with the correctness scenarios, S2/S3, the analyses
/// (KV cache, sampling), the microbenchmarks and the LoRA step.
pub fn result_seeds() -> Vec<serde_json::Value> {
    [
        "results/cpu-7targets-20261122/native.gguf-q4_1.json",
        "results/cpu-load-native-llamacpp-20261129/native.gguf-q4_1.json",
        "results/cpu-analyses-20261129/mistralrs.gguf-q4_1@native.json",
        "results/cpu-micro-lora-quick-20261129/native.hf-f32.json",
        "results/cpu-micro-lora-quick-20261129/candle.hf-f32.json",
    ]
    .iter()
    .map(|p| {
        let mut v = committed(p);
        shrink(&mut v, 4);
        v
    })
    .collect()
}

/// Everything the harness derives from one result (its own run's view of it).
pub fn derive(result: &TargetResult, reference: &correctness::Reference) {
    let _ = correctness::evaluate(result, reference);
    let _ = (analysis::kv(result), analysis::sampling(result));
    let one = std::slice::from_ref(result);
    let _ = lab_results::micro::table(one);
    let _ = lab_results::train::rows(one);
    let _ = lab_report::analyses::tables(one);
    for s in &result.stats {
        let _ = baseline::token_snapshot(result, &s.id);
    }
    let earlier = EarlierRun::of(one);
    baseline::compare(one, &earlier, &CheckOptions::default()).expect("no IO");
}

#[test]
fn fuzz_report() {
    let results = result_seeds();
    let seeds: Vec<Vec<u8>> = results.iter().map(|r| pretty!(r["report"])).collect();
    let base: TargetResult = serde_json::from_value(results[0].clone()).unwrap();
    let reference = lab_testkit::reference();
    fuzz::run("report", &seeds, CASES, |bytes| {
        // As the runner reads an engine's stdout.
        let Ok(text) = std::str::from_utf8(bytes) else {
            return;
        };
        let report: Report = match serde_json::from_str(text.trim()) {
            Ok(r) => r,
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains(" line ") && e.contains(" column "), "{e}");
                return;
            }
        };
        if report.schema_version != SCHEMA_VERSION {
            return;
        }
        fuzz::accepted();
        let mut result = base.clone();
        result.stats = compute_stats(&report);
        result.report = report;
        derive(&result, &reference);
    });
}
