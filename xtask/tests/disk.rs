//! A results directory that is read-only from the start, or becomes read-only between two
//! engines, with the real xtask: the directory is bind-mounted over itself in a private mount
//! namespace (`unshare --mount`) and remounted read-only there (`nsenter … mount -o remount,ro`),
//! so this needs root and util-linux; where they are missing the test says SKIPPED, unless
//! `LAB_REQUIRE_NAMESPACES=1` (CI sets it where `unshare --mount` works). Needs the model volume
//! and the native engine's release binary (`cargo xtask test` makes both).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn namespaces_work() -> bool {
    #[allow(clippy::disallowed_methods)] // probing util-linux
    let ok = Command::new("unshare")
        .args(["--mount", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("LAB_REQUIRE_NAMESPACES").as_deref() != Ok("1"),
            "LAB_REQUIRE_NAMESPACES=1 but `unshare --mount true` fails"
        );
        eprintln!("SKIPPED (read-only results directory): `unshare --mount` does not work here (needs root)");
    }
    ok
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-disk-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `bench` of two native targets into `results` (bind-mounted over itself, `ro` at once when
/// `readonly`), in its own mount namespace.
fn bench_in_namespace(results: &Path, readonly: bool) -> std::process::Child {
    let r = results.display();
    let remount = if readonly {
        format!(" && mount -o remount,bind,ro {r} {r}")
    } else {
        String::new()
    };
    let script = format!(
        "mount --bind {r} {r}{remount} && exec {} bench --engine native:gguf-q4_1 --engine native:hf-f32 --scenario s1 --profile quick --iterations 1 --warmup 0 --max-new-tokens 2 --runtime native --no-build --no-pin --run-id run --results-dir {r}",
        env!("CARGO_BIN_EXE_xtask")
    );
    #[allow(clippy::disallowed_methods)] // the xtask under test, in its own mount namespace
    Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: std::process::Child) -> (Option<i32>, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_read_only_results_directory_is_refused_before_anything_runs() {
    if !namespaces_work() {
        return;
    }
    let results = scratch("ro");
    let (code, stderr) = finish(bench_in_namespace(&results, true));
    assert_eq!(code, Some(1), "{stderr}");
    let want = format!(
        "error: results directory {} cannot be written (nothing was run): Read-only file system (os error 30)",
        results.display()
    );
    assert!(stderr.contains(&want), "{stderr}");
    assert!(!stderr.contains("== [1/2]"), "no engine ran: {stderr}");
}

#[test]
fn a_results_directory_made_read_only_mid_run_keeps_what_was_written() {
    if !namespaces_work() {
        return;
    }
    let results = scratch("ro-mid");
    let child = bench_in_namespace(&results, false);
    let run = results.join("run");
    // As soon as run.json names the first target, the directory becomes read-only (in the
    // xtask's namespace: the test still sees it writable, and reads what was kept).
    let start = Instant::now();
    loop {
        let named = std::fs::read_to_string(run.join("run.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|m| m["targets"][0]["target"] == "native:gguf-q4_1");
        if named {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no first result"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = results.display().to_string();
    #[allow(clippy::disallowed_methods)] // entering the xtask's mount namespace
    let remounted = Command::new("nsenter")
        .args([
            "--target",
            &child.id().to_string(),
            "--mount",
            "mount",
            "-o",
        ])
        .args(["remount,bind,ro", &r, &r])
        .status()
        .unwrap();
    assert!(remounted.success());
    let (code, stderr) = finish(child);
    assert_eq!(code, Some(1), "{stderr}");
    let want = format!(
        "cannot write {}: Read-only file system (os error 30); the run stops here: {} holds the 1 result file(s) written before",
        run.join("native.hf-f32.json").display(),
        run.display()
    );
    assert!(stderr.contains(&want), "{stderr}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(manifest["targets"][0]["status"], "ok", "{manifest}");
    assert_eq!(manifest["targets"].as_array().unwrap().len(), 1);
    let first: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("native.gguf-q4_1.json")).unwrap())
            .unwrap();
    assert_eq!(
        first["report"]["scenarios"][0]["prompts"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(!run.join("native.hf-f32.json").exists());
    assert!(!run.join("native.hf-f32.json.partial").exists());
}
