//! engine-candle on the real model: the end-to-end `bench` + `check`, the GGUF→safetensors
//! conversion check, and error handling. Needs the model volume (`cargo xtask test` builds it).

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use lab_harness::runner::{self, Launch, RunError};
use lab_harness::PreparedTarget;
use lab_protocol::{Dtype, WeightFormat};
use lab_results::results::TargetResult;
use lab_testkit::{self as testkit, models_dir};

fn candle(format: WeightFormat, dtype: Dtype, env: &[(&str, &str)]) -> PreparedTarget {
    testkit::target(
        "candle",
        Path::new(env!("CARGO_BIN_EXE_engine-candle")),
        format,
        dtype,
        env,
    )
}

/// `bench` then `check` on the real model, against the committed baseline of this machine's
/// hardware profile: token ids and counts must be identical (insta snapshots under
/// `baselines/<profile>/`, reviewable with `cargo insta review`). Measured numbers are compared
/// and printed but not asserted: timings are never pass/fail in tests.
#[test]
fn bench_and_check_on_the_real_model() {
    let (plan, results) = testkit::run_s1(
        "candle",
        vec![
            candle(WeightFormat::Gguf, Dtype::Q4_1, &[]),
            candle(WeightFormat::Safetensors, Dtype::F32, &[]),
        ],
        1,
        2,
    );
    testkit::assert_tokens_match_baseline(&plan, &results);
}

/// Teacher-forced top-1 agreement with the reference (transformers on the original GGUF), gated
/// by precision: the quantized GGUF path and the dense F32 path.
#[test]
fn candle_agrees_with_the_reference() {
    let (_, results) = testkit::run_correctness(
        "candle-ref",
        vec![
            candle(WeightFormat::Gguf, Dtype::Q4_1, &[]),
            candle(WeightFormat::Safetensors, Dtype::F32, &[]),
        ],
    );
    testkit::assert_correct(&results);
}

/// The converter's output (F32 HF directory, dense Llama) generates exactly the tokens of the
/// original GGUF dequantized by candle's own loader (`CANDLE_DEQUANTIZE_ALL=1`: F32 matmuls on
/// the dequantized weights) for all S1 prompts and 64 greedy tokens. A wrong tensor name, a
/// missing Q/K un-permutation or a wrong config value changes the tokens within a few steps.
#[test]
fn converted_safetensors_match_the_dequantized_gguf() {
    let (_, results) = testkit::run_s1(
        "candle-convert",
        vec![
            candle(
                WeightFormat::Gguf,
                Dtype::Q4_1,
                &[("CANDLE_DEQUANTIZE_ALL", "1")],
            ),
            candle(WeightFormat::Safetensors, Dtype::F32, &[]),
        ],
        0,
        1,
    );
    let ids = |r: &TargetResult| -> Vec<Vec<u32>> {
        r.report.scenarios[0]
            .prompts
            .iter()
            .map(|p| p.generated_token_ids.clone())
            .collect()
    };
    assert_eq!(ids(&results[0]).len(), 3);
    assert_eq!(ids(&results[0]), ids(&results[1]));
}

fn request_json(dir: &Path, format: &str, dtype: &str) -> String {
    format!(
        r#"{{"schema_version":{v},"model":{{"name":"smollm2-135m","dir":{dir:?},"format":"{format}","dtype":"{dtype}","synthetic":false}},
        "device":{{"kind":"cpu"}},"threads":1,"scenarios":[{{"id":"s1","kind":"single_request_latency",
        "prompts":[{{"name":"p5","token_ids":[504,3575,282,4649,314]}}],
        "generation":{{"max_new_tokens":2,"stop_at_eos":false,"eos_token_ids":[2],"sampling":{{"kind":"greedy"}}}},
        "warmup_iterations":0,"iterations":1}}]}}"#,
        dir = dir.display().to_string(),
        v = lab_protocol::SCHEMA_VERSION
    )
}

/// Runs the engine binary on a (valid) request through the harness's runner.
fn run_raw(request_json: &str) -> Result<lab_protocol::Report, RunError> {
    let binary = env!("CARGO_BIN_EXE_engine-candle");
    let launch = Launch {
        program: binary.into(),
        args: vec![],
        env: vec![],
        cleanup: vec![],
        ..Default::default()
    };
    let request: lab_protocol::Request =
        serde_json::from_str(request_json).expect("test request is valid");
    runner::run_engine(
        &launch,
        &request,
        "candle",
        Duration::from_secs(120),
        &AtomicBool::new(false),
    )
    .map(|f| f.report)
}

fn failure_message(r: Result<lab_protocol::Report, RunError>) -> String {
    match r {
        Err(RunError::Failed {
            message, report, ..
        }) => {
            assert!(report.is_some(), "a failing engine still writes a report");
            message
        }
        other => panic!("expected a failed engine, got {:?}", other.map(|r| r.error)),
    }
}

#[test]
fn a_missing_model_directory_is_an_error_never_a_download() {
    let msg = failure_message(run_raw(&request_json(
        Path::new("/nonexistent/smollm2-135m"),
        "gguf",
        "q4_1",
    )));
    assert!(
        msg.contains("/nonexistent/smollm2-135m/model.gguf is missing")
            && msg.contains("never download"),
        "{msg}"
    );
    let msg = failure_message(run_raw(&request_json(
        Path::new("/nonexistent/x"),
        "safetensors",
        "f32",
    )));
    assert!(
        msg.contains("/nonexistent/x/config.json is missing"),
        "{msg}"
    );
}

#[test]
fn truncated_weights_and_wrong_dtypes_are_named() {
    let dir = std::env::temp_dir().join(format!("engine-candle-trunc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = models_dir().join("smollm2-135m");
    let gguf = std::fs::read(src.join("model.gguf")).unwrap();
    std::fs::write(dir.join("model.gguf"), &gguf[..gguf.len() / 3]).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let st = std::fs::File::open(src.join("model.safetensors")).unwrap();
    let mut head = vec![0u8; 1 << 20];
    std::io::Read::read_exact(&mut &st, &mut head).unwrap();
    std::fs::write(dir.join("model.safetensors"), &head).unwrap();

    let msg = failure_message(run_raw(&request_json(&dir, "gguf", "q4_1")));
    assert!(msg.contains("model.gguf"), "{msg}");
    let msg = failure_message(run_raw(&request_json(&dir, "safetensors", "f32")));
    assert!(msg.contains("model.safetensors"), "{msg}");
    // No GGUF of the volume stores bf16 (q4_1 shipped; q8_0, q4_0, f16 derived).
    let msg = failure_message(run_raw(&request_json(&src, "gguf", "bf16")));
    assert!(msg.contains("q4_1") && msg.contains("not bf16"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The engine contract every engine keeps (`lab_testkit::conformance`): among others, malformed
/// request JSON gets one clear error line and still a report.
#[test]
fn conforms_to_the_engine_contract() {
    testkit::assert_conforms(&candle(WeightFormat::Gguf, Dtype::Q4_1, &[]));
}

/// The same engine inside its container (podman or docker; CI installs podman) produces the
/// token ids of the committed baseline: the image carries everything the binary needs.
#[test]
fn s1_in_a_container_matches_the_baselines() {
    testkit::assert_s1_in_container_matches_baseline(
        "candle-container",
        vec![candle(WeightFormat::Gguf, Dtype::Q4_1, &[])],
    );
}

/// S2 in lock-step batches, S3 served one request at a time (and saying why), S5 at 1024 tokens,
/// on the GGUF and the dense path: every request completes, a batch of 4 is decoded together, and
/// batched greedy outputs equal unbatched ones on F32. On Q4_1 the difference is printed.
#[test]
fn lock_step_batches_s3_serial_and_s5() {
    let load = testkit::load::small_load();
    let (_, results) = testkit::load::run_load(
        "candle-load",
        vec![
            candle(WeightFormat::Safetensors, Dtype::F32, &[]),
            candle(WeightFormat::Gguf, Dtype::Q4_1, &[]),
        ],
        &["s2", "s3", "s5"],
        load.clone(),
    );
    testkit::load::assert_every_request_completed(&results, load.new_tokens);
    for r in &results {
        assert_eq!(testkit::load::max_batched(r), 4, "{}", r.target);
        assert!(testkit::load::batching(r, "s2").starts_with("lock-step"));
        let s3 = testkit::load::batching(r, "s3");
        assert!(s3.starts_with("none (serial): candle's Llama"), "{s3}");
        assert_eq!(testkit::load::max_active(r), 1, "{}", r.target);
        let s5 = r.report.scenarios.iter().find(|s| s.id == "s5").unwrap();
        assert_eq!(s5.error, None, "{}", r.target);
        assert_eq!(s5.prompts[0].prompt_tokens, 1024);
        assert_eq!(s5.prompts[0].generated_token_ids.len(), 8);
    }
    let diff = testkit::load::batched_vs_serial(&results);
    eprintln!("batched vs serial, prompts whose ids differ: {diff:?}");
    assert!(diff[0].1.is_empty(), "F32 batched != serial: {diff:?}");
}

/// The microbenchmark scenario: candle's ops and the model's layer 0 written with them agree
/// with PyTorch's on the same seeded inputs, in f32 and bf16 (where both run it).
#[test]
fn micro_ops_agree_with_pytorch() {
    let results = testkit::micro::run_micro(
        "candle-micro",
        vec![
            candle(WeightFormat::Safetensors, Dtype::F32, &[]),
            testkit::python_target("pytorch", WeightFormat::Safetensors, Dtype::F32),
        ],
        &[Dtype::F32, Dtype::Bf16],
    );
    // candle-nn 0.10's CPU softmax accumulates a bf16 input's sum in bf16: over the
    // 49,152-entry vocabulary the sum stalls and the outputs add up to ~83, not 1.
    let agreeing =
        testkit::micro::assert_micro(&results, &[], &[Dtype::Bf16], &["softmax-1x49152-bf16"]);
    assert!(agreeing >= 2 * 28, "{agreeing} agreeing outputs");
}

/// The LoRA training step: candle and PyTorch start from the same adapters on the same sequence
/// and agree on the first loss and the first gradients; the loss falls in both.
#[test]
fn lora_step_agrees_with_pytorch() {
    let results = testkit::train::run_lora(
        "candle-lora",
        vec![
            candle(WeightFormat::Safetensors, Dtype::F32, &[]),
            testkit::python_target("pytorch", WeightFormat::Safetensors, Dtype::F32),
        ],
        16,
        2,
    );
    testkit::train::assert_lora(&results);
}
