//! engine-candle on the real model: the end-to-end `bench` + `check`, the GGUF→safetensors
//! conversion check, and error handling. Needs the model volume (`cargo xtask test` builds it).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use lab_harness::baseline::{self, CheckOptions, Verdict};
use lab_harness::catalog::{self, Target};
use lab_harness::results::{RunStatus, TargetResult, TargetStatus};
use lab_harness::runner::{self, Launch, RunError};
use lab_harness::{model, provenance, BenchPlan, PreparedTarget};
use lab_protocol::{Device, Dtype, WeightFormat};

/// Must equal the generation length the committed baselines were accepted with (the default
/// of `cargo xtask bench`), because token snapshots are compared exactly.
const BASELINE_MAX_NEW_TOKENS: u32 = 64;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn models_dir() -> PathBuf {
    let dir = std::env::var_os("LAB_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models"));
    assert!(
        dir.join("smollm2-135m/MANIFEST.json").exists(),
        "model volume missing at {}: run `cargo xtask models`",
        dir.display()
    );
    dir
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn candle(format: WeightFormat, dtype: Dtype, env: &[(&str, &str)]) -> PreparedTarget {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_engine-candle"));
    let mut env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.push(("RAYON_NUM_THREADS".into(), threads().to_string()));
    PreparedTarget {
        target: Target {
            engine: "candle",
            package: "engine-candle",
            binary: "engine-candle",
            format,
            dtype,
        },
        launch: Launch {
            program: binary.display().to_string(),
            args: vec![],
            env,
        },
        binary,
        model_dir_for_engine: models_dir().join("smollm2-135m").display().to_string(),
        image_digest: None,
    }
}

fn run(
    tag: &str,
    targets: Vec<PreparedTarget>,
    warmup: u32,
    iterations: u32,
) -> (BenchPlan, Vec<TargetResult>) {
    let model = model::resolve(&models_dir(), "smollm2-135m").unwrap();
    let prov = provenance::collect(&root(), provenance::rfc3339(provenance::now_unix()));
    let profile = provenance::hardware_profile(&prov.host, &Device::Cpu, threads());
    let dir = std::env::temp_dir().join(format!("engine-candle-it-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let plan = BenchPlan {
        root: root(),
        run_dir: dir.join("run"),
        run_id: format!("test-{tag}"),
        model,
        targets,
        skipped: vec![],
        scenarios: catalog::select_scenarios(&["s1".into()]).unwrap(),
        device: Device::Cpu,
        threads: threads(),
        warmup_iterations: warmup,
        iterations,
        max_new_tokens: BASELINE_MAX_NEW_TOKENS,
        timeout: Duration::from_secs(1200),
        runtime: "native".into(),
        profile,
        provenance: prov,
    };
    let (manifest, results) = lab_harness::bench(&plan, &AtomicBool::new(false)).unwrap();
    assert_eq!(manifest.status, RunStatus::Complete);
    for t in &manifest.targets {
        assert_eq!(t.status, TargetStatus::Ok, "{}: {:?}", t.target, t.error);
    }
    (plan, results)
}

/// `bench` then `check` on the real model, against the committed baseline of this machine's
/// hardware profile: token ids and counts must be identical (insta snapshots under
/// `baselines/<profile>/`, reviewable with `cargo insta review`). Measured numbers are compared
/// and printed but not asserted: timings are never pass/fail in tests.
#[test]
fn bench_and_check_on_the_real_model() {
    let (plan, results) = run(
        "e2e",
        vec![
            candle(WeightFormat::Gguf, Dtype::Q4_1, &[]),
            candle(WeightFormat::Safetensors, Dtype::F32, &[]),
        ],
        1,
        2,
    );
    let baseline_dir = root().join("baselines").join(&plan.profile);
    assert!(
        baseline_dir.is_dir(),
        "no baseline for hardware profile `{}` ({}): run `cargo xtask bench` and review it, then `cargo xtask check --accept`",
        plan.profile,
        baseline_dir.display()
    );
    for r in &results {
        let name = baseline::snapshot_name(&baseline::stem_of(&r.target), "s1");
        let body = baseline::token_snapshot(r, "s1").unwrap();
        insta::with_settings!({ snapshot_path => baseline_dir.clone(), prepend_module_to_snapshot => false, omit_expression => true }, {
            insta::assert_snapshot!(name, body);
        });
        for p in &r.report.scenarios[0].prompts {
            assert!(
                p.deterministic,
                "{} {} produced different ids across iterations",
                r.target, p.prompt
            );
        }
    }
    let exact = baseline::check(
        &results,
        &baseline_dir,
        CheckOptions {
            exact_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        exact.iter().all(|f| f.verdict == Verdict::Pass),
        "{exact:#?}"
    );
    // The numeric comparison runs on real numbers; its verdicts are shown, not asserted.
    for f in baseline::check(&results, &baseline_dir, CheckOptions::default()).unwrap() {
        eprintln!(
            "numbers (informational): {} {} {} {:?} {}",
            f.target, f.prompt, f.metric, f.verdict, f.detail
        );
    }
}

/// The converter's output (F32 HF directory, dense Llama) generates exactly the tokens of the
/// original GGUF dequantized by candle's own loader (`CANDLE_DEQUANTIZE_ALL=1`: F32 matmuls on
/// the dequantized weights) for all S1 prompts and 64 greedy tokens. A wrong tensor name, a
/// missing Q/K un-permutation or a wrong config value changes the tokens within a few steps.
#[test]
fn converted_safetensors_match_the_dequantized_gguf() {
    let (_, results) = run(
        "convert",
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
        r#"{{"schema_version":1,"model":{{"name":"smollm2-135m","dir":{dir:?},"format":"{format}","dtype":"{dtype}","synthetic":false}},
        "device":{{"kind":"cpu"}},"threads":1,"scenarios":[{{"id":"s1","kind":"single_request_latency",
        "prompts":[{{"name":"p5","token_ids":[504,3575,282,4649,314]}}],
        "generation":{{"max_new_tokens":2,"stop_at_eos":false,"eos_token_ids":[2],"sampling":{{"kind":"greedy"}}}},
        "warmup_iterations":0,"iterations":1}}]}}"#,
        dir = dir.display().to_string()
    )
}

/// Runs the engine binary on a (valid) request through the harness's runner.
fn run_raw(request_json: &str) -> Result<lab_protocol::Report, RunError> {
    let binary = env!("CARGO_BIN_EXE_engine-candle");
    let launch = Launch {
        program: binary.into(),
        args: vec![],
        env: vec![],
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
    let msg = failure_message(run_raw(&request_json(&src, "gguf", "f16")));
    assert!(msg.contains("q4_1") && msg.contains("f16"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_request_json_gets_one_clear_error_and_a_report() {
    // The kit's own parser is what the engine uses on stdin; this checks the binary's behaviour.
    let binary = env!("CARGO_BIN_EXE_engine-candle");
    let out = pipe_bytes(binary, "{\"schema_version\": 1, oops");
    assert_eq!(out.0, Some(1));
    let report: lab_protocol::Report =
        serde_json::from_str(out.1.trim()).expect("a report even for bad input");
    let err = report.error.unwrap();
    assert!(err.starts_with("malformed request JSON"), "{err}");
    assert!(
        out.2
            .lines()
            .any(|l| l.starts_with("error: malformed request JSON")),
        "stderr: {}",
        out.2
    );
}

/// Feeds raw bytes to a binary's stdin; returns (exit code, stdout, stderr).
fn pipe_bytes(binary: &str, input: &str) -> (Option<i32>, String, String) {
    use std::io::Write;
    #[allow(clippy::disallowed_methods)] // raw stdin bytes are the point of this test
    let mut child = std::process::Command::new(binary)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}
