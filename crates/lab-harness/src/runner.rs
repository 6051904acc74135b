//! Runs one engine process: request on stdin, report on stdout, stderr streamed to the user with
//! the target's label, a wall-clock timeout and Ctrl-C handling.
//!
//! This is the one place that uses `std::process::Command` directly (streaming stdio needs it);
//! everything else goes through xshell.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lab_protocol::{Report, Request};

use crate::progress::Progress;

/// How to start an engine: the program and its leading arguments (e.g. a container runtime
/// invocation), plus environment variables.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Run after killing the engine (timeout, Ctrl-C): a container runtime's client may die
    /// while its container lives on, so `podman rm --force <name>`. Empty for a native process.
    pub cleanup: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("timed out after {0} s and was killed")]
    Timeout(u64),
    #[error("interrupted (Ctrl-C) and was killed")]
    Interrupted,
    #[error("exited with {status}: {message}")]
    Failed {
        status: String,
        message: String,
        report: Option<Box<Report>>,
    },
    #[error("wrote no valid report on stdout ({0})")]
    BadReport(String),
}

pub struct Finished {
    pub report: Report,
    pub wall: Duration,
    /// Unix time (ns) just before the process was spawned (with the engine's `main_unix_ns`:
    /// how long the process, or its container, took to reach `main`).
    pub spawn_unix_ns: u64,
}

/// Starts the engine, feeds it `request`, streams its stderr prefixed with `label` and waits.
pub fn run_engine(
    launch: &Launch,
    request: &Request,
    label: &str,
    timeout: Duration,
    interrupted: &AtomicBool,
) -> Result<Finished, RunError> {
    run_engine_with(
        launch,
        request,
        label,
        timeout,
        interrupted,
        &Progress::plain(1),
    )
}

/// [`run_engine`], with the engine's stderr going through a run's [`Progress`].
pub fn run_engine_with(
    launch: &Launch,
    request: &Request,
    label: &str,
    timeout: Duration,
    interrupted: &AtomicBool,
    progress: &Progress,
) -> Result<Finished, RunError> {
    let start = Instant::now();
    let spawn_unix_ns = lab_gpu::now_unix_ns();
    #[allow(clippy::disallowed_methods)] // streaming stdin/stdout/stderr needs a raw Command
    let mut child = Command::new(&launch.program)
        .args(&launch.args)
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| RunError::Spawn {
            program: launch.program.clone(),
            source,
        })?;

    let json = serde_json::to_vec(request).expect("request serializes");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || {
        // An engine that dies early closes its stdin; that shows up as its own error below.
        let _ = stdin.write_all(&json);
    });
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let logger = stream_stderr(
        child.stderr.take().expect("piped stderr"),
        label,
        progress.clone(),
    );

    let status = loop {
        let exited = child
            .try_wait()
            .map_err(|e| RunError::BadReport(e.to_string()))?;
        // Ctrl-C reaches the engine too (same process group): report it as an interruption.
        if interrupted.load(Ordering::SeqCst) {
            kill(&mut child, &launch.cleanup);
            return Err(RunError::Interrupted);
        }
        if let Some(status) = exited {
            break status;
        }
        if start.elapsed() > timeout {
            kill(&mut child, &launch.cleanup);
            return Err(RunError::Timeout(timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = writer.join();
    let out = reader.join().unwrap_or_default();
    let last_stderr = logger.join().unwrap_or_default();
    conclude(status, &out, &last_stderr, start.elapsed()).map(|f| Finished { spawn_unix_ns, ..f })
}

/// Prints the engine's stderr line by line with the target's label; keeps its last 20 lines
/// (the error message of an engine that died without a report).
fn stream_stderr(
    stderr: std::process::ChildStderr,
    label: &str,
    progress: Progress,
) -> JoinHandle<Vec<String>> {
    let label = label.to_string();
    std::thread::spawn(move || {
        let mut last = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            progress.engine_line(&label, &line);
            last.push(line);
            if last.len() > 20 {
                last.remove(0);
            }
        }
        last
    })
}

/// What an exited engine's status, stdout and last stderr lines amount to.
fn conclude(
    status: std::process::ExitStatus,
    out: &[u8],
    last_stderr: &[String],
    wall: Duration,
) -> Result<Finished, RunError> {
    let parsed: Result<Report, String> = std::str::from_utf8(out)
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str::<Report>(s.trim()).map_err(|e| e.to_string()));
    if !status.success() {
        let report = parsed.ok();
        let message = report
            .as_ref()
            .and_then(|r| r.error.clone())
            .or_else(|| {
                last_stderr
                    .iter()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .cloned()
            })
            .unwrap_or_else(|| "no error message".into());
        return Err(RunError::Failed {
            status: status.to_string(),
            message,
            report: report.map(Box::new),
        });
    }
    let report = parsed.map_err(RunError::BadReport)?;
    if report.schema_version != lab_protocol::SCHEMA_VERSION {
        return Err(RunError::BadReport(format!(
            "schema_version {} but the harness speaks {}",
            report.schema_version,
            lab_protocol::SCHEMA_VERSION
        )));
    }
    Ok(Finished {
        report,
        wall,
        spawn_unix_ns: 0,
    })
}

fn kill(child: &mut Child, cleanup: &[String]) {
    let _ = child.kill();
    let _ = child.wait();
    if let Some((program, args)) = cleanup.split_first() {
        #[allow(clippy::disallowed_methods)] // best effort, output not needed
        let _ = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
