//! The protocol's own tests: round trips, validation, the committed JSON Schemas.

use super::*;

fn sample_report() -> Report {
    Report {
        schema_version: SCHEMA_VERSION,
        engine: EngineIdentity {
            name: "candle".into(),
            version: "0.0.0".into(),
            backend: "candle-core 0.10.2".into(),
            device: "cpu".into(),
            dtype: "q4_1".into(),
            weight_format: WeightFormat::Gguf,
            threads: 2,
            settings: [("kv_cache".to_string(), "cat".to_string())].into(),
        },
        load: Some(LoadTimings {
            process_start_to_ready_ms: 12.5,
            load_ms: 10.0,
            main_unix_ns: None,
            phases: vec![],
            first_token_ms: None,
        }),
        memory: MemoryUsage {
            peak_rss_bytes: Some(1 << 20),
            peak_device_bytes: None,
        },
        scenarios: vec![ScenarioReport {
            id: "s1".into(),
            kind: ScenarioKind::SingleRequestLatency,
            prompts: vec![PromptReport {
                prompt: "p10".into(),
                prompt_tokens: 10,
                generated_token_ids: vec![7042, 30, 198],
                deterministic: true,
                warmup_iterations: 1,
                top_logits: vec![],
                peak_rss_bytes: None,
                samples: vec![IterationSample {
                    ttft_ns: 50_000_000,
                    e2e_ns: 150_000_000,
                    new_tokens: 3,
                    inter_token_ns: vec![50_000_000, 50_000_000],
                    start_unix_ns: None,
                }],
            }],
            error: None,
            batching: None,
            points: vec![],
            sampling: vec![],
            unsupported: None,
            micro: None,
            ops: vec![],
            train: None,
        }],
        error: None,
    }
}

#[test]
fn report_round_trips_through_json() {
    let r = sample_report();
    let text = serde_json::to_string(&r).unwrap();
    let back: Report = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);
    // Units are in field names.
    for field in [
        "\"ttft_ns\"",
        "\"e2e_ns\"",
        "\"peak_rss_bytes\"",
        "\"load_ms\"",
    ] {
        assert!(text.contains(field), "{field} missing from {text}");
    }
}

#[test]
fn derived_rates_use_the_right_spans() {
    let s = &sample_report().scenarios[0].prompts[0].samples[0];
    assert_eq!(s.prefill_tok_per_s(10), 200.0);
    // two tokens after the first, in 100 ms
    assert_eq!(s.decode_tok_per_s(), Some(20.0));
    let one = IterationSample {
        ttft_ns: 5,
        e2e_ns: 5,
        new_tokens: 1,
        inter_token_ns: vec![],
        start_unix_ns: None,
    };
    assert_eq!(one.decode_tok_per_s(), None);
}

#[test]
fn iterations_and_durations_decide_when_a_prompt_is_measured_enough() {
    let s = |iterations, min_duration_ms, max_duration_ms| ScenarioRequest {
        id: "s1".into(),
        kind: ScenarioKind::SingleRequestLatency,
        prompts: vec![],
        generation: GenerationSettings {
            max_new_tokens: 4,
            stop_at_eos: false,
            eos_token_ids: vec![],
            sampling: Sampling::Greedy,
            kv_cache: true,
        },
        warmup_iterations: 0,
        iterations,
        min_duration_ms,
        max_duration_ms,
        load: None,
        sampling_overhead: None,
        micro: None,
        lora: None,
    };
    // A count alone.
    let plain = s(3, 0, None);
    assert!(plain.wants_more(2, 1_000_000));
    assert!(!plain.wants_more(3, 0));
    // A count and a minimum time: both must be reached.
    let standard = s(3, 500, None);
    assert!(standard.wants_more(3, 499));
    assert!(standard.wants_more(2, 10_000));
    assert!(!standard.wants_more(3, 500));
    // A budget cuts the count, but never below one measured iteration.
    let budget = s(10, 0, Some(300));
    assert!(budget.wants_more(0, 10_000));
    assert!(!budget.wants_more(1, 300));
    assert!(budget.wants_more(4, 299));
    assert!(!budget.wants_more(10, 0));
    // Old requests (no duration fields) still parse, and a plain one serializes without them.
    let text = serde_json::to_string(&plain).unwrap();
    assert!(!text.contains("duration"), "{text}");
    assert_eq!(
        serde_json::from_str::<ScenarioRequest>(&text).unwrap(),
        plain
    );
}

#[test]
fn top_logits_are_descending_with_low_ids_first_on_ties() {
    let t = TopLogits::of(&[1.0, 5.0, f32::NAN, 5.0, -2.0, 3.0, 4.0, 0.0], 4);
    assert_eq!(t.ids, vec![1, 3, 6, 5]);
    assert_eq!(t.logits, vec![5.0, 5.0, 4.0, 3.0]);
    assert_eq!(TopLogits::of(&[2.0, 1.0], 5).ids, vec![0, 1]);
}

#[test]
fn unknown_fields_are_rejected() {
    let mut v = serde_json::to_value(sample_report()).unwrap();
    v["surprise"] = serde_json::json!(1);
    let err = serde_json::from_value::<Report>(v).unwrap_err().to_string();
    assert!(err.contains("surprise"), "{err}");
}

/// The committed schema files are what the types generate. Fix with `cargo xtask schema`.
#[test]
fn committed_json_schemas_are_up_to_date() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
    for (name, text) in json_schemas() {
        let committed = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        assert!(
            committed == text,
            "crates/lab-protocol/schema/{name} is stale: run `cargo xtask schema`"
        );
    }
}
