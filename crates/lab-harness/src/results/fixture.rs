//! One fixed run (a manifest and one target result) for the results and report tests.

use super::*;
use crate::provenance::{Host, Provenance};
use lab_protocol::*;

pub(crate) fn fixture() -> (RunManifest, Vec<TargetResult>) {
    let provenance = provenance();
    let report = report();
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
        runtime: Some("native".into()),
        process_wall_ms: 1000.0,
        provenance: provenance.clone(),
        stats: compute_stats(&report),
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
            device: "cpu".into(),
            threads: 2,
            scenarios: vec!["s1".into()],
            warmup_iterations: 1,
            iterations: 3,
            max_new_tokens: 4,
            runtime: "native".into(),
            timeout_s: 60,
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
    }
}

fn report() -> Report {
    let sample = |ttft_ms: u64, step_ms: u64| IterationSample {
        ttft_ns: ttft_ms * 1_000_000,
        e2e_ns: (ttft_ms + 3 * step_ms) * 1_000_000,
        new_tokens: 4,
        inter_token_ns: vec![step_ms * 1_000_000; 3],
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
            settings: Default::default(),
        },
        load: Some(LoadTimings {
            process_start_to_ready_ms: 120.0,
            load_ms: 100.0,
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
            }],
            error: None,
        }],
        error: None,
    }
}
