//! engine-burn on the real model through the harness: S1 token baselines, correctness against the
//! reference, another Llama shape checked against the native engine, S1 in its container, and
//! errors.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use lab_harness::runner::{self, Launch};
use lab_harness::PreparedTarget;
use lab_protocol::{Dtype, ScenarioKind, WeightFormat};
use lab_testkit::{self as testkit, models_dir};

fn burn(dtype: Dtype) -> PreparedTarget {
    testkit::target(
        "burn",
        Path::new(env!("CARGO_BIN_EXE_engine-burn")),
        WeightFormat::Safetensors,
        dtype,
        &[],
    )
}

#[test]
fn bench_and_check_on_the_real_model() {
    let (plan, results) = testkit::run_s1("burn", vec![burn(Dtype::F32)], 1, 2);
    let s = &results[0].report.engine.settings;
    assert_eq!(s["burn_backend"], "Flex<f32>", "{s:?}");
    assert_eq!(
        results[0].report.engine.threads as usize,
        testkit::threads()
    );
    testkit::assert_tokens_match_baseline(&plan, &results);
}

/// F32 on the CPU: the reference's own precision, so every teacher-forced position agrees.
#[test]
fn burn_agrees_with_the_reference() {
    let (_, results) = testkit::run_correctness("burn-ref", vec![burn(Dtype::F32)]);
    let c = testkit::assert_correct(&results);
    assert_eq!(c[0].top1_agree, c[0].positions, "{:#?}", c[0]);
}

/// A teacher-forced request on `dir` (8 forced tokens after each S1 prompt).
fn teacher_forced(dir: &Path, name: &str) -> lab_protocol::Request {
    let t = burn(Dtype::F32);
    let plan = testkit::s1_plan("burn-tf", vec![t.clone()], 0, 1, 9);
    let (mut scenarios, _) = lab_harness::scenario_requests(&plan).unwrap();
    let mut s = scenarios.remove(0);
    s.kind = ScenarioKind::TeacherForced;
    s.id = "tf".into();
    for p in &mut s.prompts {
        p.forced_token_ids = (0..8u32).map(|i| (i * 977 + 13) % 49_152).collect();
    }
    let mut req = lab_harness::build_request(&plan, &t, &[s]);
    req.model.dir = dir.display().to_string();
    req.model.name = name.into();
    req.model.synthetic = true;
    req
}

fn top_logits(launch: &Launch, req: &lab_protocol::Request) -> Vec<Vec<f32>> {
    let _exclusive = testkit::exclusive();
    let f = runner::run_engine(
        launch,
        req,
        "tiny",
        Duration::from_secs(300),
        &AtomicBool::new(false),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", launch.program));
    f.report.scenarios[0]
        .prompts
        .iter()
        .flat_map(|p| p.top_logits.iter().map(|t| t.logits.clone()))
        .collect()
}

/// Another Llama shape (the volume's `tiny` synthetic: 2 layers, 4 query / 2 KV heads, head dim
/// 16, rope theta 500000): burn and the native engine's F32 path, written independently, give
/// the same top-5 logits at every teacher-forced position (rank-wise, so near-ties of random
/// weights cannot flip the comparison).
#[test]
fn another_llama_shape_matches_the_native_engine() {
    let tmp = std::env::temp_dir().join(format!("burn-tiny-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    std::os::unix::fs::symlink(models_dir().join("smollm2-135m"), tmp.join("smollm2-135m"))
        .unwrap();
    let dir = model_volume::synthetic::materialize(&tmp, "tiny", 11).unwrap();
    let req = teacher_forced(&dir, "synthetic-tiny");

    // `cargo xtask test` builds every workspace binary next to this test's deps directory.
    let native: PathBuf = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("engine-native");
    assert!(
        native.exists(),
        "{} is missing: run the tests with `cargo xtask test` (it builds the whole workspace)",
        native.display()
    );
    let native = Launch {
        program: native.display().to_string(),
        args: vec![],
        env: vec![],
        cleanup: vec![],
        ..Default::default()
    };
    let a = top_logits(&burn(Dtype::F32).launch, &req);
    let b = top_logits(&native, &req);
    assert_eq!(a.len(), 3 * 9);
    assert_eq!(a.len(), b.len());
    let mut worst = 0f32;
    for (x, y) in a.iter().zip(&b) {
        for (p, q) in x.iter().zip(y) {
            worst = worst.max((p - q).abs());
        }
    }
    let scale = a.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    eprintln!(
        "tiny shape: max |burn - native| over top-5 logits {worst:.2e} (largest logit {scale:.2e})"
    );
    assert!(worst <= 1e-3 * scale.max(1.0), "{worst} vs scale {scale}");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn s1_in_a_container_matches_the_baselines() {
    testkit::assert_s1_in_container_matches_baseline("burn-container", vec![burn(Dtype::F32)]);
}

fn request(dir: &Path, format: WeightFormat, dtype: Dtype) -> lab_protocol::Request {
    let mut req = testkit::raw_request(&burn(dtype), dir);
    req.model.format = format;
    req
}

/// The engine contract every engine keeps (`lab_testkit::conformance`).
#[test]
fn conforms_to_the_engine_contract() {
    testkit::assert_conforms(&burn(Dtype::F32));
}

#[test]
fn missing_unsupported_and_mismatched_inputs_are_named() {
    let t = burn(Dtype::F32);
    let real = models_dir().join("smollm2-135m");
    let missing = PathBuf::from("/nonexistent/smollm2-135m");
    let msg = testkit::engine_failure(
        &t,
        &request(&missing, WeightFormat::Safetensors, Dtype::F32),
    );
    assert!(
        msg.contains("/nonexistent/smollm2-135m/config.json is missing")
            && msg.contains("never download"),
        "{msg}"
    );
    let msg = testkit::engine_failure(&t, &request(&real, WeightFormat::Gguf, Dtype::Q4_1));
    assert!(msg.contains("no GGUF reader"), "{msg}");
    let msg = testkit::engine_failure(&t, &request(&real, WeightFormat::Safetensors, Dtype::Bf16));
    assert!(msg.contains("f32 only") && msg.contains("bf16"), "{msg}");
    let mut cuda = request(&real, WeightFormat::Safetensors, Dtype::F32);
    cuda.device = lab_protocol::Device::Cuda { ordinal: 0 };
    let msg = testkit::engine_failure(&t, &cuda);
    assert!(msg.contains("without the `cuda` feature"), "{msg}");

    // A config that does not fit the weights: the tensor is named.
    let dir = std::env::temp_dir().join(format!("burn-mismatch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(real.join("config.json")).unwrap()).unwrap();
    config["num_hidden_layers"] = serde_json::json!(31);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let link = dir.join("model.safetensors");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(real.join("model.safetensors"), &link).unwrap();
    let msg = testkit::engine_failure(&t, &request(&dir, WeightFormat::Safetensors, Dtype::F32));
    assert!(
        msg.contains("tensor `layers.30.") && msg.contains("is missing"),
        "{msg}"
    );
    config["num_hidden_layers"] = serde_json::json!(30);
    config["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let msg = testkit::engine_failure(&t, &request(&dir, WeightFormat::Safetensors, Dtype::F32));
    assert!(msg.contains("rope_scaling is not supported"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// S2 in lock-step batches (the batch dimension of the KV cache), S3 served one request at a time
/// (and saying why), S5 at 1024 tokens: every request completes, a batch of 4 is decoded
/// together, and batched greedy outputs equal unbatched ones (F32).
#[test]
fn lock_step_batches_s3_serial_and_s5() {
    let load = testkit::load::small_load();
    let (_, results) = testkit::load::run_load(
        "burn-load",
        vec![burn(Dtype::F32)],
        &["s2", "s3", "s5"],
        load.clone(),
    );
    testkit::load::assert_every_request_completed(&results, load.new_tokens);
    let r = &results[0];
    assert_eq!(testkit::load::max_batched(r), 4);
    assert!(testkit::load::batching(r, "s2").starts_with("lock-step"));
    let s3 = testkit::load::batching(r, "s3");
    assert!(
        s3.starts_with("none (serial): the lab's burn Llama"),
        "{s3}"
    );
    let s5 = r.report.scenarios.iter().find(|s| s.id == "s5").unwrap();
    assert_eq!(s5.error, None);
    assert_eq!(s5.prompts[0].prompt_tokens, 1024);
    let diff = testkit::load::batched_vs_serial(&results);
    assert!(diff[0].1.is_empty(), "F32 batched != serial: {diff:?}");
}

/// The microbenchmark scenario: burn's ops and the model's layer 0 agree with PyTorch's on the
/// same seeded inputs, in f32 and bf16 (where both run it).
#[test]
fn micro_ops_agree_with_pytorch() {
    let results = testkit::micro::run_micro(
        "burn-micro",
        vec![
            burn(Dtype::F32),
            testkit::python_target("pytorch", WeightFormat::Safetensors, Dtype::F32),
        ],
        &[Dtype::F32, Dtype::Bf16],
    );
    let agreeing = testkit::micro::assert_micro(&results, &[], &[Dtype::Bf16], &[]);
    assert!(agreeing >= 2 * 28, "{agreeing} agreeing outputs");
}

/// The LoRA training step: burn (autodiff backend) and PyTorch start from the same adapters on
/// the same sequence and agree on the first loss and the first gradients; the loss falls in both.
#[test]
fn lora_step_agrees_with_pytorch() {
    let results = testkit::train::run_lora(
        "burn-lora",
        vec![
            burn(Dtype::F32),
            testkit::python_target("pytorch", WeightFormat::Safetensors, Dtype::F32),
        ],
        16,
        2,
    );
    testkit::train::assert_lora(&results);
}
