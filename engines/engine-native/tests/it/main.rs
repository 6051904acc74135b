//! engine-native on the real model through the harness: S1 token baselines, correctness against
//! the reference (SIMD and the portable scalar kernels), agreement with llama.cpp's quantized
//! path, and errors. Kernel-level tests against scalar references live in `src/quant.rs`.

use std::path::{Path, PathBuf};

use lab_harness::PreparedTarget;
use lab_protocol::{Dtype, WeightFormat};
use lab_testkit::{self as testkit, models_dir};

fn native(format: WeightFormat, dtype: Dtype, env: &[(&str, &str)]) -> PreparedTarget {
    testkit::target(
        "native",
        Path::new(env!("CARGO_BIN_EXE_engine-native")),
        format,
        dtype,
        env,
    )
}

#[test]
fn bench_and_check_on_the_real_model() {
    let (plan, results) = testkit::run_s1(
        "native",
        vec![
            native(WeightFormat::Gguf, Dtype::Q4_1, &[]),
            native(WeightFormat::Safetensors, Dtype::F32, &[]),
        ],
        1,
        2,
    );
    for r in &results {
        let s = &r.report.engine.settings;
        assert!(
            ["avx512-vnni+avx2+fma+f16c", "avx2+fma+f16c", "scalar"].contains(&s["simd"].as_str()),
            "{s:?}"
        );
        assert!(s["weight_bytes_per_token"].parse::<u64>().unwrap() > 50_000_000);
        assert_eq!(r.report.engine.threads as usize, testkit::threads());
    }
    testkit::assert_tokens_match_baseline(&plan, &results);
}

/// Both weight paths pass their precision's gate, with the SIMD kernels and with the portable
/// scalar ones (`NATIVE_SIMD=scalar`). The two quantized paths are not bit-identical: a float
/// summation-order difference can flip the rounding of an 8-bit activation, which then moves
/// logits by about the quantization noise itself (~0.1); so they must agree with each other
/// about as well as each agrees with the reference (>= 95 % of positions), not exactly.
#[test]
fn native_agrees_with_the_reference_with_simd_and_scalar_kernels() {
    let (_, results) = testkit::run_correctness(
        "native-ref",
        vec![
            native(WeightFormat::Gguf, Dtype::Q4_1, &[]),
            native(WeightFormat::Safetensors, Dtype::F32, &[]),
            native(
                WeightFormat::Gguf,
                Dtype::Q4_1,
                &[("NATIVE_SIMD", "scalar")],
            ),
        ],
    );
    let c = testkit::assert_correct(&results);
    assert_eq!(results[2].report.engine.settings["simd"], "scalar");
    // F32: the reference's own weights and precision.
    assert_eq!(c[1].top1_agree, c[1].positions, "{:#?}", c[1]);
    let top1 = |r: &lab_results::results::TargetResult| -> Vec<u32> {
        r.report
            .scenarios
            .iter()
            .find(|s| s.id == "ref-tf")
            .unwrap()
            .prompts
            .iter()
            .flat_map(|p| p.generated_token_ids.clone())
            .collect()
    };
    let (a, b) = (top1(&results[0]), top1(&results[2]));
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    eprintln!(
        "native simd vs scalar: same top-1 at {same}/{} positions",
        a.len()
    );
    assert!(same * 100 >= a.len() * 95, "{same}/{}", a.len());
}

fn request(dir: &Path, format: WeightFormat, dtype: Dtype) -> lab_protocol::Request {
    testkit::raw_request(&native(format, dtype, &[]), dir)
}

/// The engine contract every engine keeps (`lab_testkit::conformance`).
#[test]
fn conforms_to_the_engine_contract() {
    testkit::assert_conforms(&native(WeightFormat::Gguf, Dtype::Q4_1, &[]));
}

fn failure(req: &lab_protocol::Request) -> String {
    testkit::engine_failure(&native(req.model.format, req.model.dtype, &[]), req)
}

#[test]
fn missing_truncated_and_unsupported_inputs_are_named() {
    let missing = PathBuf::from("/nonexistent/smollm2-135m");
    let msg = failure(&request(&missing, WeightFormat::Gguf, Dtype::Q4_1));
    assert!(
        msg.contains("/nonexistent/smollm2-135m/model.gguf is missing")
            && msg.contains("never download"),
        "{msg}"
    );
    let msg = failure(&request(&missing, WeightFormat::Safetensors, Dtype::F32));
    assert!(msg.contains("config.json is missing"), "{msg}");

    let dir = std::env::temp_dir().join(format!("engine-native-trunc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = models_dir().join("smollm2-135m");
    let gguf = std::fs::read(src.join("model.gguf")).unwrap();
    std::fs::write(dir.join("model.gguf"), &gguf[..gguf.len() / 3]).unwrap();
    let msg = failure(&request(&dir, WeightFormat::Gguf, Dtype::Q4_1));
    assert!(
        msg.contains("model.gguf") && msg.contains("beyond the end of the file"),
        "{msg}"
    );
    std::fs::write(dir.join("model.gguf"), b"GGML not a gguf").unwrap();
    let msg = failure(&request(&dir, WeightFormat::Gguf, Dtype::Q4_1));
    assert!(msg.contains("not a GGUF file"), "{msg}");

    let msg = failure(&request(&src, WeightFormat::Safetensors, Dtype::Bf16));
    assert!(msg.contains("bf16"), "{msg}");
    let mut cuda = request(&src, WeightFormat::Gguf, Dtype::Q4_1);
    cuda.device = lab_protocol::Device::Cuda { ordinal: 0 };
    let msg = failure(&cuda);
    assert!(msg.contains("CPU only"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A panic inside a thread-pool job (`NATIVE_FAULT=pool-panic`: a worker panics in every
/// prefill) ends the engine with that panic as its reported error and exit status 1: no hang
/// (`engine_failure` gives up after a bounded time), no run on a dangling job.
#[test]
fn a_panic_in_a_pool_job_is_reported_not_hung() {
    let t = native(
        WeightFormat::Gguf,
        Dtype::Q4_1,
        &[("NATIVE_FAULT", "pool-panic")],
    );
    let mut req = testkit::raw_request(&t, &models_dir().join("smollm2-135m"));
    req.threads = Some(2);
    let msg = testkit::engine_failure(&t, &req);
    assert!(
        msg.contains("native pool: worker 1 panicked: injected fault (NATIVE_FAULT=pool-panic)"),
        "{msg}"
    );
}

/// The same engine inside its container (podman or docker; CI installs podman) produces the
/// token ids of the committed baseline: the image carries everything the binary needs.
#[test]
fn s1_in_a_container_matches_the_baselines() {
    testkit::assert_s1_in_container_matches_baseline(
        "native-container",
        vec![native(WeightFormat::Gguf, Dtype::Q4_1, &[])],
    );
}

/// S2 and S3 on the real model: every request completes, the engine really batches (more than
/// one sequence per step), and batched greedy outputs equal unbatched ones exactly on the F32
/// path (the same arithmetic per token). On Q4_1 a batch runs the 4-token kernel where a lone
/// sequence runs the 1-token one; their outputs are compared and the difference printed.
#[test]
fn batched_decode_matches_serial_and_accounts_for_every_request() {
    let load = testkit::load::small_load();
    let (_, results) = testkit::load::run_load(
        "native-load",
        vec![
            native(WeightFormat::Safetensors, Dtype::F32, &[]),
            native(WeightFormat::Gguf, Dtype::Q4_1, &[]),
        ],
        &["s2", "s3"],
        load.clone(),
    );
    testkit::load::assert_every_request_completed(&results, load.new_tokens);
    for r in &results {
        assert!(
            testkit::load::max_active(r) >= 4,
            "{}: never batched",
            r.target
        );
        assert!(r.report.scenarios[0]
            .batching
            .as_deref()
            .unwrap()
            .starts_with("continuous"));
    }
    let diff = testkit::load::batched_vs_serial(&results);
    eprintln!("batched vs serial, prompts whose ids differ: {diff:?}");
    assert!(diff[0].1.is_empty(), "F32 batched != serial: {diff:?}");
}

/// S5 end to end at 1024 tokens: prefill and decode at that depth, with the prompt's own peak
/// memory.
#[test]
fn long_context_prompt_runs_at_depth() {
    let (_, results) = testkit::load::run_load(
        "native-s5",
        vec![native(WeightFormat::Gguf, Dtype::Q4_1, &[])],
        &["s5"],
        testkit::load::small_load(),
    );
    let s5 = &results[0].report.scenarios[0];
    assert_eq!(s5.id, "s5");
    let p = &s5.prompts[0];
    assert_eq!((p.prompt.as_str(), p.prompt_tokens), ("p1024", 1024));
    assert_eq!(p.generated_token_ids.len(), 8);
    assert!(
        p.peak_rss_bytes.is_some_and(|b| b > 50 << 20),
        "{:?}",
        p.peak_rss_bytes
    );
}

/// The microbenchmark scenario: the engine's own kernels and the model's layer 0 on the lab's
/// seeded inputs agree with PyTorch's ops on the same inputs (output checksums), every f32 case
/// runs except the softmax it fuses into attention, and the other dtypes say why they cannot.
#[test]
fn micro_ops_agree_with_pytorch() {
    let results = testkit::micro::run_micro(
        "native-micro",
        vec![
            native(WeightFormat::Safetensors, Dtype::F32, &[]),
            testkit::python_target("pytorch", WeightFormat::Safetensors, Dtype::F32),
        ],
        &[Dtype::F32, Dtype::Bf16],
    );
    let agreeing =
        testkit::micro::assert_micro(&results, &[("native", "softmax")], &[Dtype::Bf16], &[]);
    assert!(agreeing >= 2 * 26, "{agreeing} agreeing outputs");
    let native = &results[0].report.scenarios[0];
    let bf16: Vec<_> = native
        .ops
        .iter()
        .filter(|o| o.id.ends_with("-bf16"))
        .collect();
    assert!(!bf16.is_empty());
    for o in bf16 {
        assert!(
            o.unsupported
                .as_deref()
                .is_some_and(|u| u.contains("f32 only")),
            "{o:?}"
        );
    }
}
