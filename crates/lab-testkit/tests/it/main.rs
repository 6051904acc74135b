//! Harness tests with the mock engine (`src/bin/mock-engine.rs`): orchestration, failure
//! handling, atomic results, and the baseline comparison. Prompts are tokenized with the real
//! model volume's tokenizer, so the volume must exist (`cargo xtask test` makes it).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lab_harness::catalog::Target;
use lab_harness::runner::Launch;
use lab_harness::{model, BenchPlan, PreparedTarget};
use lab_protocol::{Dtype, WeightFormat};
use lab_results::baseline::{self, CheckOptions, Verdict};
use lab_results::correctness;
use lab_results::results::{self, RunStatus, TargetStatus};

use lab_testkit::{self as testkit, models_dir};

mod containers;
mod engine_pytorch;
mod faults;
mod gpu;
mod load;

fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lab-harness-it-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn mock(variant_dtype: Dtype, mode: &str) -> PreparedTarget {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_mock-engine"));
    PreparedTarget {
        target: Target {
            engine: "mock",
            kind: lab_harness::catalog::EngineKind::Rust,
            package: "lab-testkit",
            binary: "mock-engine",
            format: WeightFormat::Safetensors,
            dtype: variant_dtype,
        },
        launch: Launch {
            program: binary.display().to_string(),
            args: vec![],
            env: vec![("MOCK_ENGINE".into(), mode.into())],
            cleanup: vec![],
            ..Default::default()
        },
        binary,
        model_dir_for_engine: "/models/smollm2-135m".into(),
        image_digest: None,
        runtime: lab_results::runtime::RanUnder::plain(lab_results::runtime::RuntimeKind::Native),
        label_suffix: String::new(),
        binary_sha256: None,
        image_bytes: None,
    }
}

/// Presses "Ctrl-C" (sets `flag`) 300 ms after the first engine's result (`mock.hf-f32.json`)
/// is on disk.
fn ctrl_c_after_first_result(p: &BenchPlan, flag: &Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let f = flag.clone();
    let run_dir = p.run_dir.clone();
    std::thread::spawn(move || {
        for _ in 0..600 {
            if run_dir.join("mock.hf-f32.json").exists() {
                std::thread::sleep(Duration::from_millis(300));
                f.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

fn plan(tag: &str, targets: Vec<PreparedTarget>, timeout: Duration) -> BenchPlan {
    let mut plan = testkit::s1_plan(&format!("harness-{tag}"), targets, 1, 3, 8);
    plan.spec.timeout_s = timeout.as_secs();
    plan.spec.threads = 1;
    plan
}

#[test]
fn a_run_writes_results_and_survives_failing_engines() {
    let p = plan(
        "mixed",
        vec![
            mock(Dtype::F32, "ok"),
            mock(Dtype::F16, "crash"),
            mock(Dtype::Bf16, "garbage"),
            mock(Dtype::Q4_1, "fail-load"),
        ],
        Duration::from_secs(60),
    );
    let no = AtomicBool::new(false);
    let (manifest, res) = lab_harness::bench(&p, &no).unwrap();
    assert_eq!(manifest.status, RunStatus::Complete);
    assert_eq!(
        statuses(&manifest),
        [
            ("mock:hf-f32", TargetStatus::Ok),
            ("mock:hf-f16", TargetStatus::Failed),
            ("mock:hf-bf16", TargetStatus::Failed),
            ("mock:hf-q4_1", TargetStatus::Failed)
        ]
    );
    let errs: Vec<String> = manifest
        .targets
        .iter()
        .map(|t| t.error.clone().unwrap_or_default())
        .collect();
    assert!(errs[1].contains("simulated crash"), "{}", errs[1]);
    assert!(errs[2].contains("no valid report"), "{}", errs[2]);
    assert!(errs[3].contains("simulated load failure"), "{}", errs[3]);

    // The successful target's file carries raw samples, stats and provenance.
    assert_eq!(res.len(), 2, "ok and fail-load wrote reports");
    let (m2, on_disk) = results::load_run(&p.run_dir).unwrap();
    assert_eq!(m2, manifest);
    let ok = &on_disk[0];
    assert_eq!(ok.target, "mock:hf-f32");
    assert!(!ok.provenance.git_rev.is_empty() && ok.engine_binary_sha256.len() == 64);
    let bytes = std::fs::metadata(&p.targets[0].binary).unwrap().len();
    assert_eq!(ok.footprint.as_ref().unwrap().binary_bytes, Some(bytes));
    assert_eq!(
        ok.model.sha256.get("model.gguf").map(String::as_str),
        Some(model_volume_gguf_sha())
    );
    let prompts = &ok.report.scenarios[0].prompts;
    assert_eq!(
        prompts.iter().map(|p| p.prompt_tokens).collect::<Vec<_>>(),
        [10, 50, 200]
    );
    for pr in prompts {
        assert_eq!(pr.samples.len(), 3);
        assert_eq!(pr.generated_token_ids.len(), 8);
        assert!(pr.deterministic);
    }
    let stats = &ok.stats[0].prompts[0];
    for m in results::METRICS {
        assert!(stats.metrics.contains_key(m), "missing {m}");
    }
    let md = std::fs::read_to_string(p.run_dir.join("report.md")).unwrap();
    assert!(md.contains("| mock:hf-f32 | s1 | p200 (200 tok) |"), "{md}");
    assert!(md.contains("mock:hf-f16: Failed"), "{md}");
    // The run also ends in its charts and the HTML page, which names the failed targets.
    let html = std::fs::read_to_string(p.run_dir.join("index.html")).unwrap();
    assert!(html.contains("<td>mock:hf-f32</td>"));
    assert!(
        html.contains("mock:hf-f16 (Failed"),
        "the summary names the failure"
    );
    assert!(p.run_dir.join("charts/s1-decode_tok_per_s.svg").exists());
    // No temporary files remain.
    assert!(std::fs::read_dir(&p.run_dir).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".partial")));
}

/// Each target of a run with its status, in `run.json`'s order.
fn statuses(m: &results::RunManifest) -> Vec<(&str, TargetStatus)> {
    m.targets
        .iter()
        .map(|t| (t.target.as_str(), t.status))
        .collect()
}

fn model_volume_gguf_sha() -> &'static str {
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
}

#[test]
fn a_hung_engine_is_killed_at_its_timeout() {
    let p = plan(
        "hang",
        vec![mock(Dtype::F32, "hang"), mock(Dtype::F16, "ok")],
        Duration::from_secs(2),
    );
    let no = AtomicBool::new(false);
    let start = std::time::Instant::now();
    let (manifest, res) = lab_harness::bench(&p, &no).unwrap();
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_eq!(manifest.targets[0].status, TargetStatus::Failed);
    assert!(manifest.targets[0]
        .error
        .as_ref()
        .unwrap()
        .contains("timed out after 2 s"));
    assert_eq!(
        manifest.targets[1].status,
        TargetStatus::Ok,
        "the run goes on after a hung engine"
    );
    assert_eq!(res.len(), 1);
}

#[test]
fn ctrl_c_keeps_finished_results_and_marks_the_run_interrupted() {
    let p = plan(
        "ctrlc",
        vec![
            mock(Dtype::F32, "ok"),
            mock(Dtype::F16, "hang"),
            mock(Dtype::Bf16, "ok"),
        ],
        Duration::from_secs(120),
    );
    let flag = Arc::new(AtomicBool::new(false));
    let presser = ctrl_c_after_first_result(&p, &flag);
    let (manifest, res) = lab_harness::bench(&p, &flag).unwrap();
    presser.join().unwrap();
    assert_eq!(manifest.status, RunStatus::Interrupted);
    assert_eq!(res.len(), 1);
    let (on_disk, kept) = results::load_run(&p.run_dir).unwrap();
    assert_eq!(on_disk.status, RunStatus::Interrupted);
    assert_eq!(kept[0].target, "mock:hf-f32");
    assert!(p.run_dir.join("report.md").exists());
}

#[test]
fn repeated_runs_interleave_targets_and_keep_every_run() {
    let mut p = plan(
        "repeat",
        vec![mock(Dtype::F32, "ok"), mock(Dtype::F16, "ok")],
        Duration::from_secs(60),
    );
    p.spec.repeat = 2;
    // A budget through the protocol: 50 iterations asked, 1 ms allowed (every mock sequence
    // sleeps 8 ms): one measured iteration per prompt, never zero.
    p.spec.iterations = 50;
    p.spec.max_duration_ms = Some(1);
    let no = AtomicBool::new(false);
    let (manifest, res) = lab_harness::bench(&p, &no).unwrap();
    assert_eq!(manifest.status, RunStatus::Complete);
    let order: Vec<_> = manifest
        .targets
        .iter()
        .map(|t| (t.target.as_str(), t.repetition, t.file.as_deref().unwrap()))
        .collect();
    assert_eq!(
        order,
        [
            ("mock:hf-f32", None, "mock.hf-f32.json"),
            ("mock:hf-f16", None, "mock.hf-f16.json"),
            ("mock:hf-f32", Some(2), "mock.hf-f32.run2.json"),
            ("mock:hf-f16", Some(2), "mock.hf-f16.run2.json"),
        ],
        "targets interleaved, every run kept"
    );
    let (_, on_disk) = results::load_run(&p.run_dir).unwrap();
    assert_eq!(on_disk, res);
    assert_eq!(
        on_disk.iter().map(|r| r.run()).collect::<Vec<_>>(),
        [1, 1, 2, 2]
    );
    for r in &on_disk {
        for pr in &r.report.scenarios[0].prompts {
            assert_eq!(pr.samples.len(), 1, "{} {}", r.target, pr.prompt);
        }
    }
    let groups = baseline::by_target(&on_disk);
    assert_eq!(groups.len(), 2);
    assert!(groups.iter().all(|(_, runs)| runs.len() == 2));
    let report = std::fs::read_to_string(p.run_dir.join("report.md")).unwrap();
    assert!(report.contains("Between 2 runs of the plan"), "{report}");
    let recorded = manifest.plan.as_ref().unwrap();
    assert_eq!((recorded.repeat, recorded.max_duration_ms), (2, Some(1)));
}

#[test]
fn check_passes_on_itself_and_fails_on_shifted_numbers_and_tokens() {
    let p = plan(
        "check",
        vec![mock(Dtype::F32, "ok")],
        Duration::from_secs(60),
    );
    let no = AtomicBool::new(false);
    let (_, mut res) = lab_harness::bench(&p, &no).unwrap();
    // The mock sleeps, so its numbers jitter: make every interval a point, so that a shift is
    // exactly what this test says it is.
    for pr in &mut res[0].stats[0].prompts {
        for s in pr.metrics.values_mut() {
            s.median_ci95 = Some([s.median, s.median]);
        }
    }
    let base = tempdir("check-baselines");

    // Nothing accepted yet: every comparison is a missing baseline, which fails.
    let f = baseline::check(&res, &base, CheckOptions::default()).unwrap();
    assert!(
        f.iter().all(|x| x.verdict == Verdict::MissingBaseline)
            && f.iter().all(|x| x.verdict.fails())
    );

    baseline::accept(&res, &base, Some("quick")).unwrap();
    let snap = base.join("mock.hf-f32.s1.tokens.snap");
    let body = baseline::read_snapshot_body(&snap).unwrap();
    assert!(
        body.starts_with("p10: 10 prompt tokens -> 8 new tokens\n"),
        "{body}"
    );

    // The same result against its own baseline, with no evidence of this machine's spread:
    // the token ids pass, no number is judged (and none fails).
    let f = baseline::check(&res, &base, CheckOptions::default()).unwrap();
    assert!(f.iter().all(|x| !x.verdict.fails()), "{f:#?}");
    let numbers = |f: &[lab_results::findings::Finding]| -> Vec<Verdict> {
        f.iter()
            .filter(|x| x.metric != "token_ids")
            .map(|x| x.verdict)
            .collect()
    };
    assert!(numbers(&f).iter().all(|v| *v == Verdict::CannotJudge));
    assert!(f.iter().any(|x| x.detail.contains("gate-study")));

    // The gate study's evidence beside the baselines: a quiet machine (σ 1 % over 10 runs).
    let spread = |cv: f64| lab_results::gate::SpreadFile {
        profile: "cpu-it".into(),
        model: "smollm2-135m".into(),
        runs: (0..10).map(|i| format!("run{i}")).collect(),
        entries: res[0].stats[0]
            .prompts
            .iter()
            .flat_map(|p| {
                lab_results::metric::Metric::CHECKED.map(|m| {
                    (
                        lab_results::gate::key("mock.hf-f32", "s1", &p.prompt, m.name()),
                        lab_results::gate::SpreadEntry {
                            runs: 10,
                            sessions: 3,
                            form: lab_results::gate::Form::Raw,
                            cv,
                            cv_raw: cv,
                            cv_per_bandwidth: None,
                            cv_per_control: None,
                        },
                    )
                })
            })
            .collect(),
        floors: Default::default(),
    };
    let write_spread = |cv: f64| {
        results::write_json_atomic(&base.join(lab_results::gate::SPREAD_FILE), &spread(cv)).unwrap()
    };
    write_spread(0.01);
    let lax = CheckOptions::default();
    let f = baseline::check(&res, &base, lax.clone()).unwrap();
    assert!(numbers(&f).iter().all(|v| *v == Verdict::Pass), "{f:#?}");
    assert!(f.iter().any(|x| x
        .detail
        .contains("between-run CV 1.0 % (gate study over 10 runs (3 sessions))")));

    // Decode 10 % faster and TTFT 10 % slower: both beyond the alarm threshold (5 %).
    let mut shifted = res.clone();
    for pr in &mut shifted[0].stats[0].prompts {
        for m in ["decode_tok_per_s", "ttft_ms"] {
            let s = pr.metrics.get_mut(m).unwrap();
            s.median *= 1.10;
            s.median_ci95 = Some([s.median, s.median]);
        }
    }
    let f = baseline::check(&shifted, &base, lax.clone()).unwrap();
    let verdict = |f: &[lab_results::findings::Finding], metric: &str| {
        f.iter()
            .filter(|x| x.metric == metric)
            .map(|x| x.verdict)
            .collect::<Vec<_>>()
    };
    assert_eq!(verdict(&f, "decode_tok_per_s"), vec![Verdict::Improved; 3]);
    assert_eq!(verdict(&f, "ttft_ms"), vec![Verdict::Regressed; 3]);
    assert!(f.iter().any(|x| x.verdict.fails()));
    // The same shift where the target's numbers spread 8 % in the median: no number of it is
    // judged with its own lucky 1 %, so the 10 % is not called a change.
    let mut floored = spread(0.01);
    floored.floors.insert("mock.hf-f32".into(), 0.08);
    results::write_json_atomic(&base.join(lab_results::gate::SPREAD_FILE), &floored).unwrap();
    let f = baseline::check(&shifted, &base, lax.clone()).unwrap();
    assert!(
        numbers(&f).iter().all(|v| *v == Verdict::CannotJudge),
        "{f:#?}"
    );
    assert!(f.iter().any(|x| x
        .detail
        .contains("σ raised from 1.0 % to the target's median 8.0 %")));
    write_spread(0.01);

    // A per-metric tolerance: a 10 % shift of decode is nothing when 20 % is allowed.
    let mut decode20 = lax.clone();
    decode20
        .thresholds
        .insert(lab_results::metric::Metric::DecodeTokPerS, 0.2);
    let f = baseline::check(&shifted, &base, decode20).unwrap();
    assert_eq!(verdict(&f, "decode_tok_per_s"), vec![Verdict::Pass; 3]);

    // On a noisy machine (σ 12 %) the same 10 % shift is neither a change nor a pass.
    write_spread(0.12);
    let f = baseline::check(&shifted, &base, lax.clone()).unwrap();
    assert!(f
        .iter()
        .filter(|x| x.metric == "ttft_ms")
        .all(|x| x.verdict == Verdict::CannotJudge && x.detail.contains("needs --repeat")));
    write_spread(0.01);

    // Five runs of the plan: judged on the mean of the run medians, with their own spread
    // when it is wider than the study's.
    let mut runs = res.clone();
    for (k, scale) in [(2u32, 1.02), (3, 0.98), (4, 1.01), (5, 0.99)] {
        let mut r = res[0].clone();
        r.repetition = Some(k);
        for pr in &mut r.stats[0].prompts {
            for s in pr.metrics.values_mut() {
                s.median *= scale;
            }
        }
        runs.push(r);
    }
    let f = baseline::check(&runs, &base, lax.clone()).unwrap();
    assert!(f.iter().all(|x| !x.verdict.fails()), "{f:#?}");
    assert!(f.iter().any(|x| x
        .detail
        .contains("between-run CV 1.6 % (this run's 5 repeats")));
    // A judgeable ceiling below what five runs can resolve (±4.8 %): nothing is judged.
    let strict = CheckOptions {
        tolerance: 0.03,
        max_threshold: 0.04,
        ..CheckOptions::default()
    };
    let f = baseline::check(&runs, &base, strict).unwrap();
    assert!(numbers(&f).iter().all(|v| *v == Verdict::CannotJudge));
    // A repetition that generated other tokens is a mismatch of its own.
    runs[2].report.scenarios[0].prompts[0].generated_token_ids[0] += 1;
    let f = baseline::check(&runs, &base, lax.clone()).unwrap();
    assert!(f
        .iter()
        .any(|x| x.verdict == Verdict::TokenMismatch
            && x.detail.starts_with("run 3 differs from run 1")));

    // 4 % is within tolerance.
    let mut near = res.clone();
    near[0].stats[0].prompts[0]
        .metrics
        .get_mut("e2e_ms")
        .unwrap()
        .median *= 1.04;
    let f = baseline::check(&near, &base, lax.clone()).unwrap();
    assert!(f.iter().all(|x| !x.verdict.fails()), "{f:#?}");

    // A run disturbed within itself (robust CV 20 % over 10 samples) is refused even when its
    // median matches.
    let mut noisy = res.clone();
    let s = noisy[0].stats[0].prompts[1]
        .metrics
        .get_mut("e2e_ms")
        .unwrap();
    s.robust_cv = Some(0.2);
    s.n = 10;
    let f = baseline::check(&noisy, &base, CheckOptions::default()).unwrap();
    assert!(f
        .iter()
        .any(|x| x.verdict == Verdict::TooNoisy && x.prompt == "p50" && x.metric == "e2e_ms"));

    // One different token id fails the exact comparison, even in --exact-only mode.
    let mut wrong = res.clone();
    wrong[0].report.scenarios[0].prompts[2].generated_token_ids[3] += 1;
    let exact = CheckOptions {
        exact_only: true,
        ..CheckOptions::default()
    };
    let f = baseline::check(&wrong, &base, exact).unwrap();
    let mismatch = f
        .iter()
        .find(|x| x.verdict == Verdict::TokenMismatch)
        .expect("token mismatch found");
    assert!(mismatch.detail.contains("line 6"), "{}", mismatch.detail);
    assert!(
        f.iter().all(|x| x.metric == "token_ids"),
        "exact-only compares no numbers"
    );
}

/// `check`'s correctness gate through the real protocol: a mock that replays the reference passes;
/// the same mock wrong at one position in eight (its second choice wins) fails with `Incorrect`,
/// and a run without the correctness scenarios cannot pass.
#[test]
fn correctness_check_passes_the_oracle_and_fails_a_perturbed_engine() {
    let reference_file = correctness::reference_path(&testkit::root(), "smollm2-135m");
    let oracle = |wrong_every: &str| {
        let mut t = mock(Dtype::F32, "oracle");
        t.launch.env.push((
            "MOCK_ENGINE_REFERENCE".into(),
            reference_file.display().to_string(),
        ));
        t.launch
            .env
            .push(("MOCK_ENGINE_WRONG_EVERY".into(), wrong_every.into()));
        t.launch
            .env
            .push(("MOCK_ENGINE_SLEEP_US".into(), "0".into()));
        t
    };
    let reference = testkit::reference();
    let run = |tag: &str, wrong_every: &str| {
        let mut p = plan(tag, vec![oracle(wrong_every)], Duration::from_secs(120));
        p.spec.scenarios = testkit::ids(&["ref"]);
        let (m, res) = lab_harness::bench(&p, &AtomicBool::new(false)).unwrap();
        assert_eq!(m.targets[0].status, TargetStatus::Ok, "{:?}", m.targets[0]);
        res
    };

    let good = run("oracle", "0");
    let f = correctness::check(&good, &reference);
    assert!(f.iter().all(|x| !x.verdict.fails()), "{f:#?}");
    let c = good[0]
        .correctness
        .as_ref()
        .expect("evaluated at bench time");
    assert_eq!(c.top1_agree, c.positions);
    assert_eq!(c.greedy_prefix_tokens, c.greedy_tokens);
    assert_eq!(c.max_abs_top1_logit_error, Some(0.0));

    let bad = run("perturbed", "8");
    let f = correctness::check(&bad, &reference);
    let agreement = f.iter().find(|x| x.metric == "top1_agreement").unwrap();
    assert_eq!(agreement.verdict, Verdict::Incorrect, "{agreement:?}");
    assert!(agreement.detail.contains("87.5 %"), "{}", agreement.detail);
    let c = bad[0].correctness.as_ref().unwrap();
    // Greedy decoding leaves the reference path at the 8th token of every prompt.
    assert_eq!(c.greedy_prefix_tokens, 7 * reference.prompts.len() as u32);

    // A result with a wrong token count is refused even when its agreement is perfect.
    let mut short = good.clone();
    let sc = short[0]
        .report
        .scenarios
        .iter_mut()
        .find(|s| s.id == correctness::GREEDY_SCENARIO)
        .unwrap();
    sc.prompts[0].generated_token_ids.pop();
    let f = correctness::check(&short, &reference);
    assert!(
        f.iter()
            .any(|x| x.metric == "token_counts" && x.verdict == Verdict::TokenMismatch),
        "{f:#?}"
    );

    // Only S1 ran: correctness was not seen, so it cannot pass.
    let p = plan(
        "no-ref",
        vec![mock(Dtype::F32, "ok")],
        Duration::from_secs(60),
    );
    let (_, s1_only) = lab_harness::bench(&p, &AtomicBool::new(false)).unwrap();
    let f = correctness::check(&s1_only, &reference);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].verdict, Verdict::MissingResult);
}

#[test]
fn a_damaged_reference_file_is_one_clear_error() {
    let reference = testkit::reference();
    let dir = tempdir("bad-reference");
    let path = dir.join("smollm2-135m.json");
    let mut broken = serde_json::to_value(&reference).unwrap();
    broken["prompts"][1]["greedy"].as_array_mut().unwrap().pop();
    std::fs::write(&path, broken.to_string()).unwrap();
    let e = correctness::load_reference(&path).unwrap_err().to_string();
    assert!(
        e.contains("smollm2-135m.json")
            && e.contains("greedy")
            && e.contains(&reference.prompts[1].name),
        "{e}"
    );
    std::fs::write(&path, "{\"about\": 1}").unwrap();
    let e = correctness::load_reference(&path).unwrap_err().to_string();
    assert!(e.contains("smollm2-135m.json"), "{e}");
}

#[test]
fn truncated_model_files_are_refused_before_any_engine_runs() {
    let src = models_dir().join("smollm2-135m");
    let dir = tempdir("truncated").join("smollm2-135m");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["MANIFEST.json", "config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    // The other weight files of the manifest are the real ones (linked), so the truncated one
    // is the only thing wrong.
    for f in [
        "model.safetensors",
        "model-q8_0.gguf",
        "model-q4_0.gguf",
        "model-f16.gguf",
    ] {
        if src.join(f).exists() {
            std::os::unix::fs::symlink(src.join(f), dir.join(f)).unwrap();
        }
    }
    std::fs::write(dir.join("model.gguf"), b"short").unwrap();
    let err = model::resolve(dir.parent().unwrap(), "smollm2-135m")
        .unwrap_err()
        .to_string();
    // The first file in manifest order that is wrong is named: model.gguf (truncated).
    assert!(
        err.contains("model.gguf is 5 bytes but MANIFEST.json says 98362432"),
        "{err}"
    );
    let err = model::resolve(dir.parent().unwrap(), "no-such-model")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model `no-such-model`") && err.contains("cargo xtask models"),
        "{err}"
    );
}

/// `run.json` records the plan that ran (what `reproduce` will re-run), and a run directory
/// written today reads back through the same schema.
#[test]
fn run_json_records_the_plan_that_ran() {
    let p = plan(
        "plan",
        vec![mock(Dtype::F32, "ok")],
        Duration::from_secs(60),
    );
    let (manifest, _) = lab_harness::bench(&p, &AtomicBool::new(false)).unwrap();
    assert_eq!(manifest.plan.as_ref(), Some(&p.spec));
    let (on_disk, _) = results::load_run(&p.run_dir).unwrap();
    let spec = on_disk.plan.expect("run.json has the plan");
    assert_eq!(spec.run_id, "test-harness-plan");
    assert_eq!(spec.scenarios, ["s1"]);
    assert_eq!(
        (spec.iterations, spec.warmup_iterations, spec.max_new_tokens),
        (3, 1, 8)
    );
    assert_eq!(spec.threads, 1);
    assert_eq!(spec.timeout_s, 60);
}
