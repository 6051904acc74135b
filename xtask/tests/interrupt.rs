//! Ctrl-C at each phase of `cargo xtask bench` (the model volume, the build, writing the
//! results), stopped at a known point by the `LAB_FAULT_PAUSE_AT` hook: the process exits with
//! 130, and the results directory is consistent — no run directory when no engine ran, a
//! complete one when the reports were being written. (Ctrl-C while an engine runs is the
//! harness's test `ctrl_c_records_which_targets_finished_failed_or_did_not_start`.) Needs the
//! model volume and the native engine's release binary (`cargo xtask test` makes both).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `bench` on the native engine paused at `phase`, presses Ctrl-C (SIGINT to the xtask
/// alone) when it says it paused, and returns its exit code, its stderr and the run directory.
fn interrupt_at(phase: &str) -> (Option<i32>, String, PathBuf) {
    let results =
        std::env::temp_dir().join(format!("xtask-interrupt-{phase}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&results);
    #[allow(clippy::disallowed_methods)] // the xtask under test, signalled mid-run
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "bench",
            "--engine",
            "native:gguf-q4_1",
            "--scenario",
            "s1",
            "--profile",
            "quick",
            "--iterations",
            "1",
            "--warmup",
            "0",
            "--max-new-tokens",
            "2",
            "--runtime",
            "native",
            "--no-build",
            "--no-pin",
            "--run-id",
            "run",
            "--results-dir",
        ])
        .arg(&results)
        .env("LAB_FAULT_PAUSE_AT", phase)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the xtask");
    let mut stderr = String::new();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let start = Instant::now();
    for line in lines.by_ref() {
        let line = line.unwrap();
        stderr += &line;
        stderr.push('\n');
        if line.starts_with(&format!("paused at {phase}")) {
            // SAFETY: a signal to our own child process.
            assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "{stderr}");
    }
    for line in lines {
        stderr += &line.unwrap();
        stderr.push('\n');
    }
    let status = child.wait().unwrap();
    (status.code(), stderr, results.join("run"))
}

#[test]
fn ctrl_c_before_the_engines_run_leaves_no_run_directory() {
    for phase in ["volume", "build"] {
        let (code, stderr, run) = interrupt_at(phase);
        assert!(stderr.contains(&format!("paused at {phase}")), "{stderr}");
        assert_eq!(code, Some(130), "{phase}: {stderr}");
        assert!(
            stderr.contains("interrupted (Ctrl-C) before any engine ran"),
            "{stderr}"
        );
        assert!(!run.exists(), "{phase}: {} exists", run.display());
    }
}

#[test]
fn ctrl_c_while_the_results_are_written_lets_them_finish() {
    let (code, stderr, run) = interrupt_at("write");
    assert_eq!(code, Some(130), "{stderr}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(manifest["status"], "complete", "{manifest}");
    assert_eq!(manifest["targets"][0]["status"], "ok", "{manifest}");
    for f in ["native.gguf-q4_1.json", "report.md", "index.html"] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let names: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".partial")), "{names:?}");
}
