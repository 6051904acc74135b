//! Fault injection: one run with a healthy mock engine first and last and, between them, one
//! target per fault (crashes, a hang, lies on stdout, a flood on stderr, an out-of-memory death).
//! Each faulty target is recorded as failed with its cause; every other result is kept; the run
//! directory ends consistent. Ctrl-C, a full disk and the container faults have their own tests.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use lab_harness::PreparedTarget;
use lab_protocol::Dtype;
use lab_results::limits::{Limits, MemoryLimitBy};
use lab_results::results::{self, RunStatus, TargetStatus};

use super::{mock, plan, tempdir};

/// The mock under `mode` with `env`, labelled `mock:hf-f32@<tag>`.
fn faulty(tag: &str, mode: &str, env: &[(&str, &str)]) -> PreparedTarget {
    let mut t = mock(Dtype::F32, mode);
    t.label_suffix = format!("@{tag}");
    t.launch
        .env
        .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    t
}

/// fault → what the run must record for it (a piece of the target's error; `None`: succeeds).
fn faults() -> Vec<(PreparedTarget, Option<&'static str>)> {
    // Forward call 6: the third iteration of the first prompt (1 prefill + 7 decodes each).
    let at = |f: &str| format!("6:{f}");
    let mut oom = faulty("oom", "ok", &[("MOCK_ENGINE_FAULT_AT", &at("oom"))]);
    oom.launch.limits = Limits {
        memory_bytes: Some(1 << 30),
        memory_by: Some(MemoryLimitBy::AddressSpace),
        pids: None,
    };
    vec![
        (faulty("first", "ok", &[]), None),
        (
            faulty("segv", "ok", &[("MOCK_ENGINE_FAULT_AT", &at("segv"))]),
            Some("signal: 11 (SIGSEGV)"),
        ),
        (
            faulty("abort", "ok", &[("MOCK_ENGINE_FAULT_AT", &at("abort"))]),
            Some("signal: 6 (SIGABRT)"),
        ),
        (
            faulty("hang", "ok", &[("MOCK_ENGINE_FAULT_AT", &at("hang"))]),
            Some("timed out after 5 s and was killed"),
        ),
        (faulty("garbage", "garbage", &[]), Some("wrote no valid report on stdout (expected ident")),
        (
            faulty("truncated", "truncated", &[]),
            Some("wrote no valid report on stdout (EOF while parsing"),
        ),
        (
            faulty("oversized", "oversized", &[]),
            Some("more than a report may take (256 MiB); the harness kept none of it"),
        ),
        (
            faulty("exit0", "ok", &[("MOCK_ENGINE_FAULT_AT", &at("exit0"))]),
            Some("wrote no valid report on stdout (stdout was empty)"),
        ),
        (
            faulty("silent", "silent", &[]),
            Some("wrote no valid report on stdout (stdout was empty)"),
        ),
        (
            faulty("short", "short", &[]),
            Some("the report does not match the request (3 problem(s)): scenario s1 prompt p10: 7 tokens generated, 8 asked"),
        ),
        (
            oom,
            Some("out of memory: an allocation failed (limit: memory 1024 MiB (RLIMIT_AS, address space)): memory allocation of 67108864 bytes failed"),
        ),
        (
            faulty("flood", "ok", &[("MOCK_ENGINE_STDERR_FLOOD", "100000")]),
            None,
        ),
        (faulty("last", "ok", &[]), None),
    ]
}

#[test]
fn each_fault_fails_its_target_with_the_cause_and_keeps_every_other_result() {
    let (targets, expected): (Vec<_>, Vec<_>) = faults().into_iter().unzip();
    let p = plan("faults", targets, Duration::from_secs(5));
    let (manifest, res) = lab_harness::bench(&p, &AtomicBool::new(false)).unwrap();
    assert_eq!(manifest.status, RunStatus::Complete);
    assert_eq!(manifest.targets.len(), expected.len());
    for (t, want) in manifest.targets.iter().zip(&expected) {
        let err = t.error.clone().unwrap_or_default();
        eprintln!("{}: {:?}: {err}", t.target, t.status);
        match want {
            None => assert_eq!(t.status, TargetStatus::Ok, "{}: {err}", t.target),
            Some(piece) => {
                assert_eq!(t.status, TargetStatus::Failed, "{}", t.target);
                assert!(err.contains(piece), "{}: {err:?} lacks {piece:?}", t.target);
            }
        }
    }
    // What a lying engine reported is kept as evidence, marked failed; the healthy targets'
    // results are complete.
    let written: Vec<&str> = res.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(
        written,
        [
            "mock:hf-f32@first",
            "mock:hf-f32@short",
            "mock:hf-f32@flood",
            "mock:hf-f32@last"
        ]
    );
    let (on_disk, kept) = results::load_run(&p.run_dir).unwrap();
    assert_eq!(on_disk, manifest);
    assert_eq!(kept.len(), 4);
    for r in [&kept[0], &kept[2], &kept[3]] {
        assert_eq!(r.report.scenarios[0].prompts.len(), 3, "{}", r.target);
        for pr in &r.report.scenarios[0].prompts {
            assert_eq!(pr.generated_token_ids.len(), 8);
            assert_eq!(pr.samples.len(), 3);
        }
    }
    // The address-space limit is recorded with the result of the target that ran under it.
    assert_eq!(kept[0].limits, Some(Limits::default()));
    let names: Vec<String> = std::fs::read_dir(&p.run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".partial")), "{names:?}");
    let md = std::fs::read_to_string(p.run_dir.join("report.md")).unwrap();
    assert!(md.contains("mock:hf-f32@segv: Failed"), "{md}");
}

/// A runaway stderr is shown up to the harness's limit, its long line cut, and the engine's
/// own result is unaffected (the flood target above); here the cut itself.
#[test]
fn a_flood_on_stderr_is_cut_not_kept() {
    let p = plan(
        "flood",
        vec![faulty(
            "flood",
            "fail-load",
            &[("MOCK_ENGINE_STDERR_FLOOD", "50000")],
        )],
        Duration::from_secs(60),
    );
    let (m, _) = lab_harness::bench(&p, &AtomicBool::new(false)).unwrap();
    // The cause is the engine's last word, after 50,001 lines of noise.
    let err = m.targets[0].error.clone().unwrap();
    assert!(err.contains("simulated load failure"), "{err}");
    assert!(err.len() < 1000, "{} bytes", err.len());
}

/// Ctrl-C while an engine runs: the finished target is kept, the running one is failed as
/// interrupted, the rest are recorded as not started, and the run as interrupted.
#[test]
fn ctrl_c_records_which_targets_finished_failed_or_did_not_start() {
    let mut p = plan(
        "ctrlc-rest",
        vec![
            mock(Dtype::F32, "ok"),
            mock(Dtype::F16, "hang"),
            mock(Dtype::Bf16, "ok"),
        ],
        Duration::from_secs(120),
    );
    p.spec.repeat = 2;
    let flag = std::sync::Arc::new(AtomicBool::new(false));
    let presser = super::ctrl_c_after_first_result(&p, &flag);
    let (manifest, res) = lab_harness::bench(&p, &flag).unwrap();
    presser.join().unwrap();
    assert_eq!(manifest.status, RunStatus::Interrupted);
    assert_eq!(res.len(), 1);
    let st: Vec<_> = manifest
        .targets
        .iter()
        .map(|t| (t.target.as_str(), t.status, t.repetition))
        .collect();
    assert_eq!(
        st,
        [
            ("mock:hf-f32", TargetStatus::Ok, None),
            ("mock:hf-f16", TargetStatus::Failed, None),
            ("mock:hf-bf16", TargetStatus::NotStarted, None),
            ("mock:hf-f32", TargetStatus::NotStarted, Some(2)),
            ("mock:hf-f16", TargetStatus::NotStarted, Some(2)),
            ("mock:hf-bf16", TargetStatus::NotStarted, Some(2)),
        ]
    );
    assert_eq!(results::load_run(&p.run_dir).unwrap().0, manifest);
}

/// A full disk while a result is written: the run stops with one error naming the file and the
/// cause; the result written before is intact and `run.json` names only complete files, the
/// target whose result was lost, and the targets not started.
#[test]
fn a_full_disk_stops_the_run_and_keeps_what_was_written() {
    let p = plan(
        "disk-full",
        vec![
            mock(Dtype::F32, "ok"),
            mock(Dtype::F16, "ok"),
            mock(Dtype::Bf16, "ok"),
        ],
        Duration::from_secs(60),
    );
    std::fs::create_dir_all(&p.run_dir).unwrap();
    // The second result's partial file is /dev/full: every write to it fails with ENOSPC.
    std::os::unix::fs::symlink("/dev/full", p.run_dir.join("mock.hf-f16.json.partial")).unwrap();
    let e = lab_harness::bench(&p, &AtomicBool::new(false))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mock.hf-f16.json: No space left on device (os error 28)"),
        "{e}"
    );
    assert!(
        e.contains("holds the 1 result file(s) written before"),
        "{e}"
    );
    let (m, kept) = results::load_run(&p.run_dir).unwrap();
    assert_eq!(m.status, RunStatus::Interrupted);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].report.scenarios[0].prompts.len(), 3);
    assert_eq!(
        super::statuses(&m),
        [
            ("mock:hf-f32", TargetStatus::Ok),
            ("mock:hf-f16", TargetStatus::Failed),
            ("mock:hf-bf16", TargetStatus::NotStarted),
        ]
    );
    assert!(m.targets[1]
        .error
        .as_deref()
        .unwrap()
        .contains("its result could not be written"));
    assert!(!p.run_dir.join("mock.hf-f16.json.partial").exists());
    assert!(!p.run_dir.join("mock.hf-f16.json").exists());
}

/// A results directory that cannot be made is one error naming it, before any engine starts.
#[test]
fn an_unwritable_results_directory_is_refused_before_any_engine_runs() {
    let base = tempdir("unwritable");
    let blocker = base.join("not-a-dir");
    std::fs::write(&blocker, "a file where the results directory should go").unwrap();
    let mut p = plan(
        "unwritable",
        vec![mock(Dtype::F32, "hang")],
        Duration::from_secs(60),
    );
    p.run_dir = blocker.join("run");
    let start = std::time::Instant::now();
    let e = lab_harness::bench(&p, &AtomicBool::new(false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not-a-dir/run"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the hanging engine never started"
    );
}
