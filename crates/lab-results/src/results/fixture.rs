//! One fixed run (a manifest and one target result) for the results and report tests (the
//! `fixture` feature exposes it to other crates' tests).

use super::*;
use crate::provenance::{Host, Provenance};
use crate::runtime::{RanUnder, RuntimeKind, Runtimes};
use lab_protocol::*;

pub fn fixture() -> (RunManifest, Vec<TargetResult>) {
    let provenance = provenance();
    let mut report = report();
    report.scenarios.extend(load_scenarios());
    let model = ModelInfo {
        name: "smollm2-135m".into(),
        synthetic: false,
        dir: "models/smollm2-135m".into(),
        sha256: Default::default(),
    };
    let result = TargetResult {
        result_version: RESULT_VERSION,
        run_id: "fixture".into(),
        target: "mock:hf-f32".into(),
        repetition: None,
        profile: "cpu-fixture".into(),
        model: model.clone(),
        engine_binary: "target/release/mock-engine".into(),
        engine_binary_sha256: "0".repeat(64),
        image_digest: None,
        runtime: Some(RanUnder::plain(RuntimeKind::Native)),
        process_wall_ms: 1000.0,
        provenance: provenance.clone(),
        stats: compute_stats(&report),
        telemetry: None,
        footprint: Some(crate::footprint::Footprint {
            binary_bytes: Some(31_457_280),
            image_bytes: Some(40_000_000),
            ..Default::default()
        }),
        startup: None,
        limits: None,
        probe: None,
        correctness: Some(Correctness {
            target: "mock:hf-f32".into(),
            dtype: "f32".into(),
            top1_agree: 255,
            positions: 256,
            top1_agreement: 255.0 / 256.0,
            gate: 0.99,
            gate_reason: "f32".into(),
            greedy_prefix_tokens: 250,
            greedy_tokens: 256,
            greedy_full_matches: 7,
            max_abs_top1_logit_error: Some(3.1e-5),
            prompts: (0..8)
                .map(|i| PromptCorrectness {
                    prompt: format!("q{i}"),
                    top1_agree: 32 - u32::from(i == 0),
                    positions: 32,
                    greedy_prefix: if i == 0 { 26 } else { 32 },
                    greedy_tokens: 32,
                })
                .collect(),
            errors: vec![],
        }),
        report,
    };
    let manifest = RunManifest {
        result_version: RESULT_VERSION,
        run_id: "fixture".into(),
        status: RunStatus::Complete,
        profile: "cpu-fixture".into(),
        settings: RunSettings {
            model,
            device: Device::Cpu,
            threads: 2,
            scenarios: vec!["s1".into()],
            warmup_iterations: 1,
            iterations: 3,
            max_new_tokens: 4,
            runtime: Runtimes(vec![RuntimeKind::Native]),
            timeout_s: 60,
            slowdown: None,
        },
        provenance,
        plan: None,
        targets: vec![
            TargetOutcome {
                target: "mock:hf-f32".into(),
                status: TargetStatus::Ok,
                error: None,
                file: Some("mock.hf-f32.json".into()),
                repetition: None,
            },
            TargetOutcome {
                target: "mock:hf-f16".into(),
                status: TargetStatus::Failed,
                error: Some("mock:hf-f16: timed out after 60 s and was killed".into()),
                file: None,
                repetition: None,
            },
        ],
    };
    (manifest, vec![result])
}

fn provenance() -> Provenance {
    Provenance {
        git_rev: "0123456789abcdef".into(),
        git_dirty: false,
        flake_lock_sha256: None,
        rustc: "rustc 1.95.0".into(),
        started_at: "2026-11-22T00:00:00Z".into(),
        host: Host {
            hostname: "fixture".into(),
            os: "Debian GNU/Linux 12 (bookworm)".into(),
            kernel: "6.1".into(),
            arch: "x86_64".into(),
            cpu_model: "Example CPU".into(),
            cpu_vendor: "GenuineIntel".into(),
            cpu_family: "6".into(),
            cpu_model_number: "167".into(),
            cpu_simd: vec!["avx2".into()],
            logical_cpus: 2,
            memory_bytes: Some(1 << 34),
            gpus: vec![],
        },
        read_bandwidth_gb_per_s: Some(20.0),
        gpu: None,
        gpu_clocks: None,
    }
}

pub fn report_for_tests() -> Report {
    report()
}

fn report() -> Report {
    let sample = |ttft_ms: u64, step_ms: u64| IterationSample {
        ttft_ns: ttft_ms * 1_000_000,
        e2e_ns: (ttft_ms + 3 * step_ms) * 1_000_000,
        new_tokens: 4,
        inter_token_ns: vec![step_ms * 1_000_000; 3],
        start_unix_ns: None,
    };
    Report {
        schema_version: SCHEMA_VERSION,
        engine: EngineIdentity {
            name: "mock".into(),
            version: "0.0.0".into(),
            backend: "none".into(),
            device: "cpu".into(),
            dtype: "f32".into(),
            weight_format: WeightFormat::Safetensors,
            threads: 2,
            settings: [
                (
                    "weight_bytes_per_token".to_string(),
                    "100000000".to_string(),
                ),
                ("kv_cache_bytes_per_token".to_string(), "46080".to_string()),
            ]
            .into(),
        },
        load: Some(LoadTimings {
            process_start_to_ready_ms: 120.0,
            load_ms: 100.0,
            main_unix_ns: None,
            phases: vec![],
            first_token_ms: None,
        }),
        memory: MemoryUsage {
            peak_rss_bytes: Some(512 << 20),
            peak_device_bytes: None,
        },
        scenarios: vec![ScenarioReport {
            id: "s1".into(),
            kind: ScenarioKind::SingleRequestLatency,
            prompts: vec![PromptReport {
                prompt: "p10".into(),
                prompt_tokens: 10,
                generated_token_ids: vec![1, 2, 3, 4],
                deterministic: true,
                warmup_iterations: 1,
                samples: vec![sample(100, 50), sample(110, 50), sample(90, 40)],
                top_logits: vec![],
                peak_rss_bytes: None,
            }],
            error: None,
            sampling: vec![],
            unsupported: None,
            micro: None,
            ops: vec![],
            train: None,
            batching: None,
            points: vec![],
        }],
        error: None,
    }
}

/// S2 and S3 scenarios with round numbers (the load statistics' test derives them by hand).
pub fn load_scenarios() -> Vec<ScenarioReport> {
    const MS: u64 = 1_000_000;
    let point = |level, max_active| LoadPoint {
        level,
        max_active,
        batches: vec![],
        requests: vec![],
        outputs: vec![],
        deterministic: true,
        peak_rss_bytes: Some(600 << 20),
        error: None,
        start_unix_ns: None,
    };
    let req = |client, submit: u64, first: Option<u64>, done: Option<u64>, status| RequestRecord {
        client,
        prompt: "p8".into(),
        prompt_tokens: 8,
        submit_ns: submit * MS,
        admit_ns: first.map(|_| submit * MS),
        first_token_ns: first.map(|t| t * MS),
        done_ns: done.map(|t| t * MS),
        new_tokens: if status == RequestStatus::Completed {
            4
        } else {
            0
        },
        status,
    };
    let mut s2 = point(2, 2);
    s2.batches.push(BatchSample {
        start_ns: 0,
        sequences: 2,
        prompt_tokens: 20,
        prefill_ns: 100 * MS,
        step_ns: vec![50 * MS; 3],
        new_tokens: 8,
    });
    let mut c1 = point(1, 1);
    c1.requests = vec![
        req(0, 0, Some(100), Some(400), RequestStatus::Completed),
        req(0, 400, Some(500), Some(800), RequestStatus::Completed),
    ];
    let mut c2 = point(2, 2);
    c2.requests = vec![
        req(0, 0, Some(100), Some(400), RequestStatus::Completed),
        req(1, 0, Some(1200), Some(1500), RequestStatus::Completed),
        req(
            0,
            400,
            None,
            Some(450),
            RequestStatus::Failed {
                reason: "prefill: simulated".into(),
            },
        ),
        req(
            1,
            1500,
            None,
            None,
            RequestStatus::Refused {
                reason: "the level ended: simulated".into(),
            },
        ),
    ];
    let scenario = |id: &str, kind, points| ScenarioReport {
        id: id.into(),
        kind,
        prompts: vec![],
        error: None,
        sampling: vec![],
        unsupported: None,
        micro: None,
        ops: vec![],
        train: None,
        batching: Some("continuous (mock)".into()),
        points,
    };
    vec![
        scenario("s2", ScenarioKind::BatchedThroughput, vec![s2]),
        scenario("s3", ScenarioKind::ConcurrentLoad, vec![c1, c2]),
    ]
}

/// Puts `r`'s S1 iterations on a timeline sampled every 100 ms by a fake GPU at 300 W, 97 %
/// utilization, 1980 MHz, under a power cap throughout; device 1 could not be sampled.
pub fn with_telemetry(r: &mut TargetResult) {
    use crate::telemetry::summarize;
    use lab_gpu::sampler::{DeviceTrace, Telemetry};
    use lab_gpu::Sample;
    let t0 = 1_800_000_000_000_000_000u64;
    let mut at = t0 + 50_000_000;
    for p in &mut r.report.scenarios[0].prompts {
        for x in &mut p.samples {
            x.start_unix_ns = Some(at);
            at += x.e2e_ns + 10_000_000;
        }
    }
    let samples = (0..200u64)
        .map(|i| Sample {
            t_unix_ns: t0 + i * 100_000_000,
            energy_mj: Some(i * 30_000),
            power_mw: Some(300_000),
            gpu_util_pct: Some(97),
            sm_mhz: Some(1980),
            throttle_bits: Some(lab_gpu::throttle::SW_POWER_CAP),
            engine_bytes: Some(700 << 20),
            ..Sample::default()
        })
        .collect();
    let raw = Telemetry {
        source: "fake device (test)".into(),
        period_ms: 100,
        devices: vec![
            DeviceTrace {
                index: 0,
                name: "GPU".into(),
                samples,
                error: None,
            },
            DeviceTrace {
                index: 1,
                name: "GPU".into(),
                samples: vec![],
                error: Some("no GPU with index 1 (this machine has 1)".into()),
            },
        ],
    };
    r.telemetry = Some(summarize(&r.report, raw));
}

/// `r` as another target, with every S1/S5 rate × `k` and every time ÷ `k` (intervals too), and
/// every load throughput × `k`.
pub fn scaled(r: &TargetResult, target: &str, k: f64) -> TargetResult {
    let mut out = r.clone();
    out.target = target.into();
    if let Some(c) = &mut out.correctness {
        c.target = target.into();
    }
    for sc in &mut out.stats {
        for p in &mut sc.prompts {
            for (name, s) in p.metrics.iter_mut() {
                let rate =
                    crate::metric::Metric::from_name(name).is_some_and(|m| m.higher_is_better());
                let f = if rate { k } else { 1.0 / k };
                s.median *= f;
                s.mean *= f;
                s.ci95_low *= f;
                s.ci95_high *= f;
                s.min *= f;
                s.max *= f;
                s.p90 *= f;
                s.p99 *= f;
                s.median_ci95 = s.median_ci95.map(|[a, b]| [a * f, b * f]);
            }
        }
        for p in &mut sc.points {
            for (name, v) in p.values.iter_mut() {
                if name.ends_with("_per_s") {
                    *v *= k;
                }
            }
            for w in &mut p.window_tok_per_s {
                *w *= k;
            }
        }
    }
    out
}

/// The fixture with four engines: the mock, a PyTorch baseline at half its speed, the native
/// engine at 3× and llama.cpp at 4× (charts, claims and the HTML report need several).
pub fn fixture_engines() -> (RunManifest, Vec<TargetResult>) {
    let (mut m, r) = fixture();
    let base = &r[0];
    let results = vec![
        base.clone(),
        scaled(base, "pytorch:hf-f32", 0.5),
        scaled(base, "native:gguf-q4_1", 3.0),
        scaled(base, "llamacpp:gguf-q4_1", 4.0),
    ];
    for t in ["pytorch:hf-f32", "native:gguf-q4_1", "llamacpp:gguf-q4_1"] {
        m.targets.push(TargetOutcome {
            target: t.into(),
            status: TargetStatus::Ok,
            error: None,
            file: Some(format!("{}.json", t.replace(':', "."))),
            repetition: None,
        });
    }
    (m, results)
}

/// `r` with the analyses' scenarios, in round numbers: `kv-on` / `kv-off` generating 70 tokens
/// after TTFT 5 ms (with the cache every step 1 ms, without it step i takes i ms; three
/// iterations), `sampling` with decode steps of 2 ms and 1,000 selections of 20 µs (greedy) and
/// 500 µs (top-k 50) from 49,152 logits. With `unsupported`, the engine could do neither.
pub fn with_analyses(r: &TargetResult, unsupported: bool) -> TargetResult {
    use lab_protocol::{Sampling, SamplingTiming};
    let mut out = r.clone();
    let iteration = |step: &dyn Fn(u64) -> u64| {
        let gaps: Vec<u64> = (1..70).map(|i| step(i) * 1_000_000).collect();
        IterationSample {
            ttft_ns: 5_000_000,
            e2e_ns: 5_000_000 + gaps.iter().sum::<u64>(),
            new_tokens: 70,
            inter_token_ns: gaps,
            start_unix_ns: None,
        }
    };
    let prompt = |samples: Vec<IterationSample>| PromptReport {
        prompt: "p16".into(),
        prompt_tokens: 16,
        generated_token_ids: vec![7; 70],
        deterministic: true,
        warmup_iterations: 1,
        samples,
        top_logits: vec![],
        peak_rss_bytes: None,
    };
    let scenario = |id: &str, kind, prompts, sampling, unsupported: Option<&str>| ScenarioReport {
        id: id.into(),
        kind,
        prompts,
        error: None,
        batching: None,
        points: vec![],
        sampling,
        unsupported: unsupported.map(str::to_string),
        micro: None,
        ops: vec![],
        train: None,
    };
    let why = unsupported.then_some("the engine's library owns the generation loop");
    let on = vec![iteration(&|_| 1), iteration(&|_| 1), iteration(&|_| 1)];
    let off = vec![iteration(&|i| i), iteration(&|i| i), iteration(&|i| i)];
    let timing = |sampling, us: u64| SamplingTiming {
        sampling,
        logits_len: 49_152,
        sample_ns: vec![us * 1000; 1000],
        token_ids: vec![3; 64],
    };
    let decode = IterationSample {
        ttft_ns: 9_000_000,
        e2e_ns: 9_000_000 + 15 * 2_000_000,
        new_tokens: 16,
        inter_token_ns: vec![2_000_000; 15],
        start_unix_ns: None,
    };
    out.report.scenarios.extend([
        scenario(
            "kv-on",
            ScenarioKind::SingleRequestLatency,
            vec![prompt(on)],
            vec![],
            None,
        ),
        scenario(
            "kv-off",
            ScenarioKind::SingleRequestLatency,
            if unsupported {
                vec![]
            } else {
                vec![prompt(off)]
            },
            vec![],
            why,
        ),
        scenario(
            "sampling",
            ScenarioKind::SamplingOverhead,
            vec![prompt(vec![decode.clone(), decode])],
            if unsupported {
                vec![]
            } else {
                vec![
                    timing(Sampling::Greedy, 20),
                    timing(
                        Sampling::TopP {
                            temperature: 1.0,
                            top_p: 1.0,
                            seed: 20,
                            top_k: Some(50),
                        },
                        500,
                    ),
                ]
            },
            why,
        ),
    ]);
    out.stats = crate::results::compute_stats(&out.report);
    out
}
