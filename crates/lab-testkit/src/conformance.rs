//! The contract every engine keeps whatever its library, checked the same way for each: every
//! engine's test suite calls [`assert_conforms`] on one of its targets (and may add checks of its
//! own library's failure modes with [`raw_request`] and [`crate::engine_failure`]).

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use lab_harness::runner::{self, RunError};
use lab_harness::PreparedTarget;
use lab_protocol::{Device, Dtype, Report, Request, WeightFormat};

use crate::{exclusive, s1_plan};

/// A small S1 request for `t` with the model directory `dir` (two tokens after each S1 prompt):
/// what engines' error tests send.
pub fn raw_request(t: &PreparedTarget, dir: &Path) -> Request {
    let plan = s1_plan(
        &format!("{}-raw", t.target.engine),
        vec![t.clone()],
        0,
        1,
        2,
    );
    let (scenarios, _) = lab_harness::scenario_requests(&plan).unwrap();
    let mut req = lab_harness::build_request(&plan, t, &scenarios);
    req.model.dir = dir.display().to_string();
    req
}

/// Feeds raw bytes to `t`'s engine on stdin (not through the harness's runner, which only sends
/// valid requests); returns (exit code, stdout, stderr).
pub fn pipe_bytes(t: &PreparedTarget, input: &str) -> (Option<i32>, String, String) {
    use std::io::Write;
    let _exclusive = exclusive();
    #[allow(clippy::disallowed_methods)] // raw stdin bytes are the point
    let mut child = std::process::Command::new(&t.launch.program)
        .args(&t.launch.args)
        .envs(t.launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", t.launch.program));
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

/// Runs `req` on `t`, which must fail; returns the harness's message and the engine's report
/// (an engine must write one even when it fails).
pub(crate) fn failure(t: &PreparedTarget, req: &Request) -> (String, Report) {
    let _exclusive = exclusive();
    match runner::run_engine(
        &t.launch,
        req,
        &t.label(),
        Duration::from_secs(300),
        &AtomicBool::new(false),
    ) {
        Err(RunError::Failed {
            message,
            report: Some(report),
            ..
        }) => (message, *report),
        Err(RunError::Failed { message, .. }) => {
            panic!("{}: failed without a report: {message}", t.label())
        }
        other => panic!(
            "{}: expected a failure, got {:?}",
            t.label(),
            other.map(|f| f.report.error)
        ),
    }
}

/// The engine contract, for a target `t` the engine supports (built without `cuda`):
/// - malformed JSON on stdin: exit status 1, one `error: malformed request JSON…` line on
///   stderr, and still a report on stdout naming the engine;
/// - a request of another protocol version is refused, naming the versions;
/// - a model directory that does not exist is an error naming the missing file, never a
///   download;
/// - a GPU request to a CPU build, and quantized weights asked for in the dense format, are
///   refused with one line naming what was asked;
/// - every failure report carries the engine's name, and the process exits non-zero.
pub fn assert_conforms(t: &PreparedTarget) {
    let engine = t.target.engine;
    let real = crate::models_dir().join("smollm2-135m");

    let (code, stdout, stderr) = pipe_bytes(t, "{\"schema_version\": 1, oops");
    assert_eq!(code, Some(1), "{engine}: exit status for malformed JSON");
    let report: Report = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{engine}: no report for malformed JSON ({e}): {stdout}"));
    let err = report.error.unwrap_or_default();
    assert!(err.starts_with("malformed request JSON"), "{engine}: {err}");
    assert_eq!(report.engine.name, engine);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("error: malformed request JSON")),
        "{engine}: stderr: {stderr}"
    );

    let mut req = raw_request(t, &real);
    req.schema_version += 1;
    let (msg, report) = failure(t, &req);
    assert!(msg.contains("schema_version"), "{engine}: {msg}");
    assert_eq!(report.engine.name, engine);

    let missing = Path::new("/nonexistent/conformance/smollm2-135m");
    let (msg, report) = failure(t, &raw_request(t, missing));
    assert!(
        msg.contains("/nonexistent/conformance/smollm2-135m")
            && msg.contains("is missing")
            && msg.contains("never download"),
        "{engine}: {msg}"
    );
    assert_eq!(report.engine.name, engine);
    assert!(report.scenarios.is_empty(), "{engine}: measured nothing");

    let mut req = raw_request(t, &real);
    req.device = Device::Cuda { ordinal: 0 };
    let (msg, _) = failure(t, &req);
    assert!(msg.to_lowercase().contains("cuda"), "{engine}: {msg}");

    let mut req = raw_request(t, &real);
    req.model.format = WeightFormat::Safetensors;
    req.model.dtype = Dtype::Q4_1;
    let (msg, report) = failure(t, &req);
    assert!(msg.contains("q4_1"), "{engine}: {msg}");
    assert_eq!(report.engine.dtype, "q4_1");
}
