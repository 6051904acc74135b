//! engine-pytorch (a Python package under `engines/engine-pytorch`) on the real model, started
//! exactly as `cargo xtask bench` starts it, with the pinned environment (`LAB_PYTHON`, set by
//! `cargo xtask test`): S1 with exact token baselines, correctness against the reference, the
//! converter check (F32 HF directory vs transformers on the original GGUF), the report schema,
//! and its errors.

use std::path::PathBuf;
use std::time::Duration;

use lab_harness::runner::{self, RunError};
use lab_protocol::{Dtype, Report, WeightFormat};
use lab_testkit::{self as testkit, python_target};

fn f32_target() -> lab_harness::PreparedTarget {
    python_target("pytorch", WeightFormat::Safetensors, Dtype::F32)
}

#[test]
fn pytorch_s1_matches_its_token_baselines() {
    let (plan, results) = testkit::run_s1(
        "pytorch",
        vec![
            f32_target(),
            python_target("pytorch", WeightFormat::Safetensors, Dtype::Bf16),
        ],
        1,
        2,
    );
    testkit::assert_tokens_match_baseline(&plan, &results);
    for r in &results {
        assert_eq!(r.report.engine.name, "pytorch");
        assert!(
            r.report.engine.backend.starts_with("torch 2."),
            "{}",
            r.report.engine.backend
        );
        assert_eq!(r.report.engine.settings["attn_implementation"], "eager");
        assert_eq!(r.report.engine.threads as usize, testkit::threads());
        // The Python environment's size is recorded (torch alone is hundreds of MB), or why not.
        let f = r.footprint.clone().expect("a footprint");
        match (f.environment_bytes, f.environment.as_deref()) {
            (Some(b), _) => assert!(b > 200 << 20, "{b} bytes"),
            (None, Some(why)) => assert!(why.contains("not in a virtual environment"), "{why}"),
            (None, None) => panic!("no environment figure and no reason"),
        }
        assert_eq!(f.binary_bytes, None);
    }
}

/// The converter check of the reference issue: the lab's F32 safetensors directory, run by
/// transformers, must reproduce transformers-on-the-original-GGUF: same top-5 ids at every
/// teacher-forced position and logits within 1e-3 (measured: 3e-5; the two differ only in
/// incremental vs full-sequence attention, i.e. summation order).
#[test]
fn pytorch_f32_reproduces_the_reference_and_the_converter_is_exact() {
    let (_plan, results) = testkit::run_correctness("pytorch-ref", vec![f32_target()]);
    let c = testkit::assert_correct(&results);
    assert_eq!(c[0].top1_agree, c[0].positions, "{:#?}", c[0]);

    let reference = testkit::reference();
    let tf = results[0]
        .report
        .scenarios
        .iter()
        .find(|s| s.id == "ref-tf")
        .unwrap();
    // Rank-wise: the k-th largest logit can move no more than the largest per-token error,
    // whatever happens to ids that tie.
    let mut worst = 0f64;
    for (rp, p) in reference.prompts.iter().zip(&tf.prompts) {
        assert_eq!(rp.name, p.prompt);
        assert_eq!(p.top_logits.len(), rp.teacher_forced.len());
        for (got, want) in p.top_logits.iter().zip(&rp.teacher_forced) {
            for (a, b) in got.logits.iter().zip(&want.logits) {
                worst = worst.max((*a as f64 - *b as f64).abs());
            }
        }
    }
    eprintln!(
        "converter check: max |logit difference| over the top-5 of every position: {worst:.2e}"
    );
    assert!(worst <= 1e-3, "max logit difference {worst}");
}

#[test]
fn pytorch_bf16_passes_its_correctness_gate() {
    let (_plan, results) = testkit::run_correctness(
        "pytorch-bf16-ref",
        vec![python_target(
            "pytorch",
            WeightFormat::Safetensors,
            Dtype::Bf16,
        )],
    );
    testkit::assert_correct(&results);
}

fn request(dir: &str, format: WeightFormat) -> lab_protocol::Request {
    let t = f32_target();
    let mut plan = testkit::s1_plan("pytorch-schema", vec![], 0, 1, 3);
    plan.targets = vec![t.clone()];
    let (scenarios, _) = lab_harness::scenario_requests(&plan).unwrap();
    let mut req = lab_harness::build_request(&plan, &t, &scenarios);
    req.model.dir = dir.into();
    req.model.format = format;
    req
}

/// Runs the engine through the harness's runner; the report's error on failure.
fn raw_run(req: &lab_protocol::Request) -> Result<Report, String> {
    let t = f32_target();
    let res = runner::run_engine(
        &t.launch,
        req,
        "pytorch",
        Duration::from_secs(600),
        &std::sync::atomic::AtomicBool::new(false),
    );
    match res {
        Ok(f) => Ok(f.report),
        Err(RunError::Failed {
            report, message, ..
        }) => Err(format!(
            "{message} / {}",
            report.and_then(|r| r.error).unwrap_or_default()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Validates `json_text` against the committed report schema with Python's `jsonschema`
/// (an implementation independent of the Rust types the schema was generated from).
fn schema_errors(json_text: &str) -> Option<String> {
    let schema = testkit::root().join("crates/lab-protocol/schema/report.schema.json");
    let file = std::env::temp_dir().join(format!(
        "lab-pytorch-report-{}-{}.json",
        std::process::id(),
        json_text.len()
    ));
    std::fs::write(&file, json_text).unwrap();
    let code = "import json, sys, jsonschema\n\
                schema = json.load(open(sys.argv[1]))\n\
                doc = json.load(open(sys.argv[2]))\n\
                errs = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=str)\n\
                print('\\n'.join(e.message for e in errs))\n\
                sys.exit(1 if errs else 0)\n";
    #[allow(clippy::disallowed_methods)] // a one-shot validator run in a test
    let out = std::process::Command::new(testkit::python())
        .args(["-c", code])
        .arg(&schema)
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    if out.status.success() {
        None
    } else {
        Some(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The engine's own stdout, unparsed, validated against the committed JSON Schema — for a
/// successful run (with a teacher-forced scenario) and for a failure report.
#[test]
fn pytorch_reports_follow_the_committed_schema() {
    let model_dir = testkit::models_dir().join("smollm2-135m");
    let mut req = request(&model_dir.display().to_string(), WeightFormat::Safetensors);
    let plan = {
        let mut p = testkit::s1_plan("pytorch-schema-ref", vec![f32_target()], 0, 1, 3);
        p.spec.scenarios = testkit::ids(&["ref-tf"]);
        p
    };
    let (tf, _) = lab_harness::scenario_requests(&plan).unwrap();
    let mut tf = tf[0].clone();
    tf.prompts.truncate(1);
    tf.prompts[0].forced_token_ids.truncate(2);
    tf.generation.max_new_tokens = 3;
    req.scenarios.push(tf);

    let stdout = engine_stdout(&req);
    assert_eq!(schema_errors(&stdout), None, "{stdout}");
    let report: Report = serde_json::from_str(&stdout).unwrap();
    assert!(report.error.is_none());
    assert_eq!(report.scenarios[1].prompts[0].top_logits.len(), 3);

    // A failure report (missing model directory) follows the schema too.
    let bad = request("/nonexistent/smollm2-135m", WeightFormat::Safetensors);
    let stdout = engine_stdout(&bad);
    assert_eq!(schema_errors(&stdout), None, "{stdout}");

    // The validator is not a rubber stamp: an unknown field and a missing one are refused.
    let mut v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    v["surprise"] = serde_json::json!(true);
    assert!(schema_errors(&v.to_string()).is_some());
    let mut v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    v.as_object_mut().unwrap().remove("memory");
    assert!(schema_errors(&v.to_string()).unwrap().contains("memory"));
}

/// Raw stdout of the engine for `req` (whatever its exit status).
fn engine_stdout(req: &lab_protocol::Request) -> String {
    let t = f32_target();
    let out = pipe(
        &t.launch.program,
        &t.launch.args,
        &t.launch.env,
        &serde_json::to_string(req).unwrap(),
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `program args` with `env`, feeding `stdin`; stderr goes to the test's output.
fn pipe(
    program: &str,
    args: &[String],
    env: &[(String, String)],
    stdin: &str,
) -> std::process::Output {
    use std::io::Write;
    let _exclusive = testkit::exclusive();
    #[allow(clippy::disallowed_methods)] // raw stdin/stdout are the point of these tests
    let mut child = std::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn pytorch_errors_name_the_problem() {
    // A missing model file: one error naming the file, exit status 1, nothing downloaded.
    let e = raw_run(&request(
        "/nonexistent/smollm2-135m",
        WeightFormat::Safetensors,
    ))
    .unwrap_err();
    assert!(
        e.contains("/nonexistent/smollm2-135m/config.json") && e.contains("missing"),
        "{e}"
    );

    // GGUF is not what this engine loads: said, not guessed around.
    let dir: PathBuf = testkit::models_dir().join("smollm2-135m");
    let e = raw_run(&request(&dir.display().to_string(), WeightFormat::Gguf)).unwrap_err();
    assert!(e.contains("safetensors directory only"), "{e}");

    // A request of another protocol version.
    let mut old = request(&dir.display().to_string(), WeightFormat::Safetensors);
    old.schema_version = 1;
    let e = raw_run(&old).unwrap_err();
    assert!(e.contains("schema_version is 1"), "{e}");
}

/// The committed reference is what its independent path produces: regenerating two of its
/// prompts with `lab_engine_pytorch.reference` (transformers on the original GGUF) gives the same
/// greedy ids and top-5 ids, and logits within 1e-4 (other CPUs may round differently).
#[test]
fn the_committed_reference_is_reproducible() {
    let reference = testkit::reference();
    let model_dir = testkit::models_dir().join("smollm2-135m");
    assert_eq!(
        reference.gguf_sha256,
        lab_harness::sha256_file(&model_dir.join("model.gguf")).unwrap(),
        "the reference was computed from another GGUF"
    );
    let picked: Vec<_> = [0, reference.prompts.len() - 1]
        .iter()
        .map(|&i| &reference.prompts[i])
        .collect();
    let spec = serde_json::json!({
        "model_dir": model_dir,
        "gguf_file": "model.gguf",
        "continuation_tokens": reference.continuation_tokens,
        "prompts": picked.iter().map(|p| serde_json::json!({"name": p.name, "token_ids": p.token_ids})).collect::<Vec<_>>(),
    });
    let out = pipe(
        &testkit::python().display().to_string(),
        &["-m".into(), "lab_engine_pytorch.reference".into()],
        &[
            (
                "PYTHONPATH".into(),
                testkit::root()
                    .join("engines/engine-pytorch")
                    .display()
                    .to_string(),
            ),
            ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
        ],
        &spec.to_string(),
    );
    assert!(out.status.success());
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Every list is compared whole: a zip alone would pass a shorter regeneration.
    let prompts = again["prompts"].as_array().unwrap();
    assert_eq!(prompts.len(), picked.len(), "prompts regenerated");
    for (want, got) in picked.iter().zip(prompts) {
        let greedy: Vec<u32> = serde_json::from_value(got["greedy"].clone()).unwrap();
        assert_eq!(greedy, want.greedy, "{}", want.name);
        let tf: Vec<lab_protocol::TopLogits> =
            serde_json::from_value(got["teacher_forced"].clone()).unwrap();
        assert_eq!(
            tf.len(),
            want.teacher_forced.len(),
            "{}: teacher-forced positions",
            want.name
        );
        for (i, (a, b)) in tf.iter().zip(&want.teacher_forced).enumerate() {
            assert_eq!(a.ids, b.ids, "{} position {i}", want.name);
            assert_eq!(a.logits.len(), b.logits.len(), "{} position {i}", want.name);
            for (x, y) in a.logits.iter().zip(&b.logits) {
                assert!(
                    (x - y).abs() <= 1e-4,
                    "{} position {i}: {x} vs {y}",
                    want.name
                );
            }
        }
    }
}

/// Runs a short Python check against the engine's package (`python -c script [input]`), which
/// must succeed; its stdout.
fn python_check(script: &str, input: Option<&std::path::Path>) -> std::process::Output {
    #[allow(clippy::disallowed_methods)] // a one-line Python check, not an engine run
    let out = std::process::Command::new(testkit::python())
        .arg("-c")
        .arg(script)
        .args(input)
        .current_dir(testkit::root().join("engines/engine-pytorch"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The Python engine's port of `ScenarioRequest::wants_more` decides exactly like the Rust one,
/// over a grid of counts, times, minimums and budgets.
#[test]
fn pytorch_measures_as_many_iterations_as_the_rust_engines() {
    let mut cases = Vec::new();
    let mut expected = String::new();
    let (scenarios, _) =
        lab_harness::scenario_requests(&testkit::s1_plan("pytorch-more", vec![], 0, 3, 3)).unwrap();
    let base = scenarios[0].clone();
    for min in [0u64, 40] {
        for max in [None, Some(25u64), Some(40)] {
            for measured in [0u32, 1, 2, 3, 4] {
                for elapsed in [0u64, 24, 25, 39, 40, 100] {
                    let mut s = base.clone();
                    (s.min_duration_ms, s.max_duration_ms) = (min, max);
                    expected.push(if s.wants_more(measured, elapsed) {
                        '1'
                    } else {
                        '0'
                    });
                    cases.push(serde_json::json!([s, measured, elapsed]));
                }
            }
        }
    }
    let script = "import json,sys\nfrom lab_engine_pytorch.engine import wants_more\n\
        print(''.join('1' if wants_more(s, m, e) else '0' for s, m, e in json.load(open(sys.argv[1]))))";
    let input = crate::tempdir("pytorch-more").join("cases.json");
    std::fs::write(&input, serde_json::to_string(&cases).unwrap()).unwrap();
    let out = python_check(script, Some(&input));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);
}

/// The PyTorch engine batches S2 as padded batches and S3 as dynamic batches of the waiting
/// requests (prompts of different lengths, left-padded), says so, accounts for every request, and
/// generates the same greedy ids batched as alone (F32).
#[test]
fn pytorch_batches_the_load_scenarios_and_accounts_for_every_request() {
    let mut load = testkit::load::small_load();
    load.batch_sizes = vec![1, 3];
    load.concurrency = vec![1, 4];
    load.requests = 4;
    load.new_tokens = 6;
    let (_, results) = testkit::load::run_load(
        "pytorch-load",
        vec![testkit::python_target(
            "pytorch",
            WeightFormat::Safetensors,
            Dtype::F32,
        )],
        &["s2", "s3"],
        load,
    );
    let r = &results[0];
    assert!(testkit::load::batching(r, "s2").starts_with("padded batches"));
    assert!(testkit::load::batching(r, "s3").starts_with("dynamic batches"));
    assert_eq!(testkit::load::max_batched(r), 3);
    // C = 4 closed-loop clients: the four first requests wait together and form one batch.
    assert_eq!(testkit::load::max_active(r), 4);
    let s3 = &r.report.scenarios[1];
    for p in &s3.points {
        assert_eq!(p.error, None);
        assert_eq!(p.requests.len(), 4);
        assert!(p
            .requests
            .iter()
            .all(|q| q.status == lab_protocol::RequestStatus::Completed && q.new_tokens == 6));
        let lengths: std::collections::BTreeSet<u32> =
            p.requests.iter().map(|q| q.prompt_tokens).collect();
        assert!(
            lengths.len() > 1,
            "the batch must need padding: {lengths:?}"
        );
    }
    let diff = testkit::load::batched_vs_serial(&results);
    eprintln!("batched vs alone, prompts whose ids differ: {diff:?}");
    assert!(diff[0].1.is_empty(), "{diff:?}");
    let st = r.stats.iter().find(|s| s.id == "s3").unwrap();
    assert_eq!(st.points[1].counts.unwrap().completed, 4);
}

/// The Python port of the open-loop arrival times gives the kit's exact offsets.
#[test]
fn pytorch_poisson_arrivals_equal_the_kits() {
    let script = "from lab_engine_pytorch.engine import poisson_arrivals\n\
        print(' '.join(str(t) for r, s in [(0.5, 0), (50.0, 7), (1000.0, 12345)] for t in poisson_arrivals(r, s, 40)))";
    let out = python_check(script, None);
    let expected: Vec<String> = [(0.5, 0u64), (50.0, 7), (1000.0, 12345)]
        .iter()
        .flat_map(|&(r, s)| engine_kit::load::poisson_arrivals(r, s, 40))
        .map(|t| t.to_string())
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        expected.join(" ")
    );
}

/// The Python port of the kit's sampler draws the kit's ids: the same logits over the real
/// vocabulary (49,152, a seeded mixture of a few large logits and a long tail), the same seeds,
/// 300 draws for each of greedy, temperature, top-k, top-p, all three together and a top-k wider
/// than the nucleus.
#[test]
fn the_python_sampler_draws_the_kits_ids() {
    use lab_protocol::Sampling;
    let mut state = 0x5EED_u64;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    };
    let logits: Vec<f32> = (0..49_152)
        .map(|i| {
            let u = next();
            if i % 997 == 3 {
                8.0 + 4.0 * u
            } else {
                -6.0 + 10.0 * u
            }
        })
        .collect();
    let top = |temperature, top_p, top_k, seed| Sampling::TopP {
        temperature,
        top_p,
        seed,
        top_k,
    };
    let strategies = [
        Sampling::Greedy,
        top(0.7, 1.0, None, 1),
        top(1.0, 1.0, Some(50), 2),
        top(1.0, 0.9, None, 3),
        top(0.7, 0.9, Some(50), 4),
        top(1.3, 0.5, Some(5000), 5),
    ];
    let draws = 300;
    let expected: Vec<Vec<u32>> = strategies
        .iter()
        .map(|s| {
            let mut sampler = engine_kit::Sampler::new(s);
            (0..draws).map(|_| sampler.sample(&logits)).collect()
        })
        .collect();
    // The draws are not trivial: every random strategy picks several ids.
    for (s, ids) in strategies.iter().zip(&expected).skip(1) {
        let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
        assert!(distinct.len() > 3, "{} drew {distinct:?}", s.label());
    }
    let input = crate::tempdir("pytorch-sampler").join("case.json");
    std::fs::write(
        &input,
        serde_json::to_string(&serde_json::json!({
            "logits": logits, "strategies": strategies, "draws": draws
        }))
        .unwrap(),
    )
    .unwrap();
    let script = "import json,sys,torch\nfrom lab_engine_pytorch.engine import Sampler\n\
        c = json.load(open(sys.argv[1]))\n\
        x = torch.tensor(c['logits'], dtype=torch.float32)\n\
        for s in c['strategies']:\n    \
            sm = Sampler(s)\n    \
            print(' '.join(str(sm.sample(x)) for _ in range(c['draws'])))";
    let out = python_check(script, Some(&input));
    let got = String::from_utf8_lossy(&out.stdout);
    let got: Vec<&str> = got.lines().collect();
    assert_eq!(got.len(), strategies.len());
    for ((s, want), line) in strategies.iter().zip(&expected).zip(got) {
        let line_ids: Vec<u32> = line.split(' ').map(|t| t.parse().unwrap()).collect();
        let first_diff = want.iter().zip(&line_ids).position(|(a, b)| a != b);
        assert_eq!(
            first_diff,
            None,
            "{}: the Python port differs from the kit at draw {first_diff:?}",
            s.label()
        );
        assert_eq!(line_ids.len(), want.len());
    }
}

/// The PyTorch engine runs both analyses its own way: `kv-off` with `use_cache=False` (the whole
/// prefix every step; the same greedy ids as with the cache, F32), and `sampling` with its port
/// of the kit's sampler over the real vocabulary.
#[test]
fn pytorch_runs_the_kv_and_sampling_analyses() {
    use lab_results::analysis::{self, Outcome};
    let (_, results) = testkit::load::run_load(
        "pytorch-analyses",
        vec![f32_target()],
        &["kv-on", "kv-off", "sampling"],
        testkit::load::small_load(),
    );
    let r = &results[0];
    let ids = |id: &str| {
        let s = r.report.scenarios.iter().find(|s| s.id == id).unwrap();
        assert_eq!((&s.error, &s.unsupported), (&None, &None), "{id}");
        s.prompts[0].generated_token_ids.clone()
    };
    assert_eq!(ids("kv-on").len(), 8);
    assert_eq!(ids("kv-on"), ids("kv-off"));
    assert!(matches!(analysis::kv(r), Some(Outcome::Rows(rows)) if rows[0].tokens == 8));
    match analysis::sampling(r) {
        Some(Outcome::Rows(rows)) => {
            assert_eq!(rows.len(), 4);
            for x in &rows {
                assert_eq!((x.logits, x.sample_us.n), (49_152, 50), "{}", x.strategy);
            }
        }
        other => panic!("{other:?}"),
    }
}

/// The Python engine's numpy port of `lab_protocol::micro::fill` (and `token_ids`) gives the
/// same bits as the Rust one, so every framework's microbenchmark inputs are the same values.
#[test]
fn the_python_micro_inputs_are_the_protocols() {
    use lab_protocol::micro::{fill, token_ids, weight_scale};
    let out = python_check(
        "import sys, struct\n\
         from lab_engine_pytorch.micro import fill, token_ids, weight_scale\n\
         for seed, stream, n, k in [(0, 0, 5, 1), (11, 2, 3000, 576), (2**63 + 5, 3, 100, 1536)]:\n\
         \x20   v = fill(seed, stream, n, weight_scale(k) if k > 1 else 1.0)\n\
         \x20   print(' '.join(str(struct.unpack('<I', struct.pack('<f', float(x)))[0]) for x in v))\n\
         print(' '.join(str(int(i)) for i in token_ids(11, 200, 49152)))\n",
        None,
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    for (seed, stream, n, k) in [
        (0u64, 0u64, 5usize, 1u32),
        (11, 2, 3000, 576),
        ((1u64 << 63) + 5, 3, 100, 1536),
    ] {
        let scale = if k > 1 { weight_scale(k) } else { 1.0 };
        let want: Vec<String> = fill(seed, stream, n, scale)
            .iter()
            .map(|v| v.to_bits().to_string())
            .collect();
        assert_eq!(
            lines.next().unwrap(),
            want.join(" "),
            "seed {seed} stream {stream}"
        );
    }
    let ids: Vec<String> = token_ids(11, 200, 49152)
        .iter()
        .map(u32::to_string)
        .collect();
    assert_eq!(lines.next().unwrap(), ids.join(" "));
}
