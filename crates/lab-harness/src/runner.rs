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
use lab_results::limits::{Limits, MemoryLimitBy};

use crate::progress::Progress;

/// How to start an engine: the program and its leading arguments (e.g. a container runtime
/// invocation), plus environment variables.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Run after the engine ended, however it ended (exit, timeout, Ctrl-C): a container is run
    /// without `--rm` (so its OOM flag can be read after it exited) and a runtime's client may
    /// die while its container lives on, so `podman rm --force <name>`. Empty for a native
    /// process.
    pub cleanup: Vec<String>,
    /// Asked after an engine exited with a failure, before `cleanup`: prints `true` when the
    /// container was killed for exceeding its memory limit (`podman inspect --format
    /// {{.State.OOMKilled}} <name>`). Empty for a native process.
    pub oom_query: Vec<String>,
    /// The resource limits the engine runs under (recorded in its result).
    pub limits: Limits,
    /// A fresh working directory for the process, removed after it ended: a container
    /// runtime's client runs there, because its monitor (podman's conmon) may write an `oom`
    /// file into its working directory when the kernel kills the container for memory — which
    /// the runner then reads as the OOM kill it is (and which would otherwise litter the user's
    /// directory). `None`: the harness's own working directory.
    pub work_dir: Option<std::path::PathBuf>,
}

/// The most a report may take on stdout; an engine that writes more is not sending a report
/// (the harness stops keeping its output there, so a runaway engine cannot exhaust its memory).
pub const MAX_REPORT_BYTES: usize = 256 << 20;
/// Engine stderr echoed per process, in lines; the rest is counted, not shown.
pub const MAX_STDERR_LINES: usize = 2000;
/// The longest stderr line kept; longer lines are cut (a line without an end cannot grow the
/// harness's memory).
pub const MAX_STDERR_LINE_BYTES: usize = 4096;

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

/// Starts the engine process of `launch` with piped stdio (its working directory made fresh,
/// its address space limited when asked).
fn spawn(launch: &Launch) -> Result<Child, RunError> {
    #[allow(clippy::disallowed_methods)] // streaming stdin/stdout/stderr needs a raw Command
    let mut command = Command::new(&launch.program);
    command
        .args(&launch.args)
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = &launch.work_dir {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|source| RunError::Spawn {
            program: format!("{} (working directory {})", launch.program, dir.display()),
            source,
        })?;
        command.current_dir(dir);
    }
    if let (Some(bytes), Some(MemoryLimitBy::AddressSpace)) =
        (launch.limits.memory_bytes, launch.limits.memory_by)
    {
        address_space_limit(&mut command, bytes);
    }
    command.spawn().map_err(|source| RunError::Spawn {
        program: launch.program.clone(),
        source,
    })
}

/// Whether a finished engine was killed for memory: confirmed by the container runtime or the
/// native child's marker, or likely (a container's SIGKILL the harness did not send).
fn oom_kill_of(status: std::process::ExitStatus, launch: &Launch) -> OomKill {
    if status.success() {
        OomKill::No
    } else if container_oom_killed(&launch.oom_query)
        || launch
            .work_dir
            .as_ref()
            .is_some_and(|d| d.join("oom").exists())
    {
        OomKill::Confirmed
    } else if status.code() == Some(137) && launch.limits.memory_by == Some(MemoryLimitBy::Cgroup) {
        // 128 + SIGKILL, from a container runtime, and the harness did not kill it: the
        // kernel's OOM killer under the container's memory limit, unless someone else sent
        // SIGKILL. Some runtimes (podman 4 with runc on cgroup v1) never set the OOM flag.
        OomKill::Likely
    } else {
        OomKill::No
    }
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
    let mut child = spawn(launch)?;

    let json = serde_json::to_vec(request).expect("request serializes");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || {
        // An engine that dies early closes its stdin; that shows up as its own error below.
        let _ = stdin.write_all(&json);
    });
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || read_capped(stdout, MAX_REPORT_BYTES));
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
            kill(&mut child, launch);
            return Err(RunError::Interrupted);
        }
        if let Some(status) = exited {
            break status;
        }
        if start.elapsed() > timeout {
            kill(&mut child, launch);
            return Err(RunError::Timeout(timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let wall = start.elapsed();
    let _ = writer.join();
    let out = reader.join().unwrap_or_default();
    let stderr = logger.join().unwrap_or_default();
    if stderr.suppressed > 0 {
        progress.engine_line(
            label,
            &format!(
                "(the harness did not show {} further stderr lines of this engine: it shows {MAX_STDERR_LINES} at most)",
                stderr.suppressed
            ),
        );
    }
    let oom_killed = oom_kill_of(status, launch);
    run_cleanup(&launch.cleanup);
    if let Some(dir) = &launch.work_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    conclude(status, &out, &stderr.last, wall, &launch.limits, oom_killed)
        .map(|f| Finished { spawn_unix_ns, ..f })
}

/// The engine's stdout, or whether it exceeded `cap` (then the rest is read and dropped, so the
/// engine is not blocked on a full pipe).
#[derive(Default)]
struct Output {
    bytes: Vec<u8>,
    /// Bytes beyond `cap` that were dropped.
    dropped: u64,
}

fn read_capped(mut from: impl Read, cap: usize) -> Output {
    let mut out = Output::default();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match from.read(&mut chunk) {
            Ok(0) | Err(_) => return out,
            Ok(n) => {
                let room = cap.saturating_sub(out.bytes.len()).min(n);
                out.bytes.extend_from_slice(&chunk[..room]);
                out.dropped += (n - room) as u64;
            }
        }
    }
}

/// Sets `RLIMIT_AS` in the child between `fork` and `exec` (`ulimit -v`).
fn address_space_limit(command: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: `setrlimit` is async-signal-safe; the closure allocates nothing and touches no
    // lock, as required between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes as libc::rlim_t,
                rlim_max: bytes as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Whether the kernel killed the engine's container for exceeding its memory limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OomKill {
    No,
    /// The runtime's OOM flag says so.
    Confirmed,
    /// Killed by SIGKILL (exit 137) under a memory limit, not by the harness, and the runtime
    /// has no OOM flag to confirm it.
    Likely,
}

/// Whether the container runtime says the engine's container was killed by its memory limit.
fn container_oom_killed(query: &[String]) -> bool {
    let Some((program, args)) = query.split_first() else {
        return false;
    };
    #[allow(clippy::disallowed_methods)] // a one-line answer, read whole
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
}

/// What the harness kept of an engine's stderr.
#[derive(Default)]
struct Stderr {
    /// The last 20 lines (the error message of an engine that died without a report).
    last: Vec<String>,
    /// Lines beyond [`MAX_STDERR_LINES`], not shown.
    suppressed: u64,
}

/// Prints the engine's stderr line by line with the target's label, at most
/// [`MAX_STDERR_LINES`] lines of at most [`MAX_STDERR_LINE_BYTES`] each (a flooding engine
/// cannot flood the terminal or the harness's memory); keeps the last 20 lines.
fn stream_stderr(
    stderr: std::process::ChildStderr,
    label: &str,
    progress: Progress,
) -> JoinHandle<Stderr> {
    let label = label.to_string();
    std::thread::spawn(move || {
        let mut kept = Stderr::default();
        let mut shown = 0usize;
        let mut reader = BufReader::new(stderr);
        while let Some(line) = read_line_capped(&mut reader, MAX_STDERR_LINE_BYTES) {
            if shown < MAX_STDERR_LINES {
                progress.engine_line(&label, &line);
                shown += 1;
            } else {
                kept.suppressed += 1;
            }
            kept.last.push(line);
            if kept.last.len() > 20 {
                kept.last.remove(0);
            }
        }
        kept
    })
}

/// One line of at most `cap` bytes (the rest of a longer line is skipped and counted); `None`
/// at the end of the stream.
fn read_line_capped(reader: &mut impl BufRead, cap: usize) -> Option<String> {
    let mut line = Vec::new();
    let mut cut = 0usize;
    loop {
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => &[],
        };
        if buf.is_empty() {
            if line.is_empty() && cut == 0 {
                return None;
            }
            break;
        }
        let (take, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        let room = cap.saturating_sub(line.len()).min(take);
        line.extend_from_slice(&buf[..room]);
        cut += take - room;
        reader.consume(take + usize::from(end));
        if end {
            break;
        }
    }
    let mut text = String::from_utf8_lossy(&line).into_owned();
    if cut > 0 {
        text += &format!(" … ({cut} more bytes of this line not shown)");
    }
    Some(text)
}

/// What an exited engine's status, stdout and last stderr lines amount to.
fn conclude(
    status: std::process::ExitStatus,
    out: &Output,
    last_stderr: &[String],
    wall: Duration,
    limits: &Limits,
    oom_killed: OomKill,
) -> Result<Finished, RunError> {
    let parsed: Result<Report, String> = if out.dropped > 0 {
        Err(format!(
            "it wrote {} bytes on stdout, more than a report may take ({} MiB); the harness kept none of it",
            out.bytes.len() as u64 + out.dropped,
            MAX_REPORT_BYTES >> 20
        ))
    } else if out.bytes.iter().all(u8::is_ascii_whitespace) {
        Err("stdout was empty".into())
    } else {
        std::str::from_utf8(&out.bytes)
            .map_err(|e| e.to_string())
            .and_then(|s| serde_json::from_str::<Report>(s.trim()).map_err(|e| e.to_string()))
    };
    if !status.success() {
        let report = parsed.ok();
        let mut message = report
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
        if let Some((oom, line)) = out_of_memory(oom_killed, &message, last_stderr, limits) {
            message = format!("{oom}: {}", line.unwrap_or(message));
        }
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

/// Names an out-of-memory death as such: the container runtime's OOM flag, or what the
/// engine's allocator said when an allocation failed (Rust's `memory allocation of N bytes
/// failed`, C++'s `std::bad_alloc`, Python's `MemoryError`, PyTorch's allocators); with the
/// line that said so, when one did.
fn out_of_memory(
    oom_killed: OomKill,
    message: &str,
    last_stderr: &[String],
    limits: &Limits,
) -> Option<(String, Option<String>)> {
    let limit = limits
        .memory_bytes
        .map(|_| format!(" (limit: {})", limits.describe()))
        .unwrap_or_default();
    match oom_killed {
        OomKill::Confirmed => {
            return Some((
                format!("out of memory: killed by the container's memory limit{limit}"),
                None,
            ))
        }
        OomKill::Likely => {
            return Some((
                format!(
                    "out of memory: killed (SIGKILL) under the container's memory limit{limit}, not by the harness; the runtime keeps no OOM flag to confirm it"
                ),
                None,
            ))
        }
        OomKill::No => {}
    }
    const SIGNS: [&str; 6] = [
        "memory allocation of",
        "bad_alloc",
        "MemoryError",
        "out of memory",
        "can't allocate memory",
        "Cannot allocate memory",
    ];
    let said = std::iter::once(message)
        .chain(last_stderr.iter().map(String::as_str))
        .find(|l| SIGNS.iter().any(|s| l.contains(s)))?;
    Some((
        format!("out of memory: an allocation failed{limit}"),
        Some(said.to_string()),
    ))
}

fn kill(child: &mut Child, launch: &Launch) {
    let _ = child.kill();
    let _ = child.wait();
    run_cleanup(&launch.cleanup);
    if let Some(dir) = &launch.work_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn run_cleanup(cleanup: &[String]) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_beyond_the_cap_is_counted_not_kept() {
        let out = read_capped(&[7u8; 1000][..], 300);
        assert_eq!((out.bytes.len(), out.dropped), (300, 700));
        let out = read_capped(&b"{}"[..], 300);
        assert_eq!((out.bytes.as_slice(), out.dropped), (&b"{}"[..], 0));
    }

    #[test]
    fn a_long_stderr_line_is_cut_and_the_next_one_read() {
        let text = format!("{}\nshort\nlast without end", "z".repeat(50));
        let mut r = BufReader::with_capacity(8, text.as_bytes());
        assert_eq!(
            read_line_capped(&mut r, 10).unwrap(),
            "zzzzzzzzzz … (40 more bytes of this line not shown)"
        );
        assert_eq!(read_line_capped(&mut r, 10).unwrap(), "short");
        assert_eq!(read_line_capped(&mut r, 100).unwrap(), "last without end");
        assert_eq!(read_line_capped(&mut r, 10), None);
    }

    #[test]
    fn out_of_memory_is_named_by_what_said_so() {
        let none = Limits::default();
        let limited = Limits {
            memory_bytes: Some(1 << 30),
            memory_by: Some(MemoryLimitBy::AddressSpace),
            pids: None,
        };
        let stderr = vec![
            "memory allocation of 64 bytes failed".to_string(),
            "note: backtrace".to_string(),
        ];
        assert_eq!(
            out_of_memory(OomKill::No, "x", &stderr, &limited),
            Some((
                "out of memory: an allocation failed (limit: memory 1024 MiB (RLIMIT_AS, address space))"
                    .to_string(),
                Some("memory allocation of 64 bytes failed".to_string())
            ))
        );
        assert_eq!(out_of_memory(OomKill::No, "segfault", &[], &none), None);
        let (confirmed, _) = out_of_memory(OomKill::Confirmed, "x", &[], &none).unwrap();
        assert_eq!(
            confirmed,
            "out of memory: killed by the container's memory limit"
        );
        let (likely, _) = out_of_memory(OomKill::Likely, "x", &[], &none).unwrap();
        assert!(likely.contains("the runtime keeps no OOM flag"), "{likely}");
    }
}
