//! A mock engine for testing the harness itself (never benchmarked as a real engine).
//!
//! Deterministic tokens (`next = (31 * last + 7) mod 49152`), a fixed sleep per forward call
//! (`MOCK_ENGINE_SLEEP_US`, default 1000; 0 measures the kit's own per-token overhead) and
//! failure modes chosen with `MOCK_ENGINE=ok|hang|crash|garbage|fail-load|panic|probe`.
//!
//! Load scenarios: `MOCK_ENGINE_SLOTS=N` (default 8) sequences decode together, one sleep per
//! step whatever the batch (0: no batching, served serially by the kit);
//! `MOCK_ENGINE_FAIL_PREFILL=K` fails the K-th prefill of the process (1-based, warm-ups count),
//! `MOCK_ENGINE_STALL_PREFILL=K:MS` makes the K-th prefill take MS milliseconds longer, and
//! `MOCK_ENGINE_FAIL_STEP=K` fails the K-th batched decode step.
//!
//! Faults (for the harness's fault-injection tests): `MOCK_ENGINE_FAULT_AT=K:F` makes the K-th
//! forward call of the process (prefill or decode, batched or not, warm-ups count) crash with
//! `segv` (SIGSEGV) or `abort` (SIGABRT), `hang`, `exit0` (exit status 0 without a report),
//! `oom` (allocate and touch memory until the allocator or the kernel stops it) or `threads`
//! (start threads until one is refused);
//! `MOCK_ENGINE_STDERR_FLOOD=N` writes N lines and one 1 MiB line to stderr while loading;
//! `MOCK_ENGINE_FAIL_PREFILL_EVERY=N` fails every N-th prefill of a load scenario. Modes that
//! lie on stdout run the healthy mock as a child and alter its report: `MOCK_ENGINE=truncated`
//! (the first half), `oversized` (300 MiB of JSON), `silent` (nothing, exit 0), `short` (one
//! generated token fewer per prompt than asked, the timings to match).
//!
//! `MOCK_ENGINE=oracle` replays the reference file named by `MOCK_ENGINE_REFERENCE`: on a
//! sequence that follows a reference prompt and its greedy continuation it emits the reference's
//! top-5 logits, so it agrees perfectly. `MOCK_ENGINE_WRONG_EVERY=N` makes it wrong at every N-th
//! position (the reference's second token wins): a simulated broken engine for `check`.

use std::collections::BTreeMap;
use std::time::Duration;

use engine_kit::{Engine, EngineMeta, EngineResult, Loaded};
use lab_protocol::Request;
use lab_results::correctness::{load_reference, Reference};

const VOCAB: usize = 49152;

struct Mock {
    last: u32,
    sleep: Duration,
    /// The sequence so far (oracle mode only).
    seq: Vec<u32>,
    oracle: Option<Reference>,
    wrong_every: usize,
    /// Last token of each slot (load scenarios).
    slots: Vec<Option<u32>>,
    prefills: u64,
    steps: u64,
    fail_prefill: Option<u64>,
    stall_prefill: Option<(u64, Duration)>,
    fail_step: Option<u64>,
    fail_prefill_every: Option<u64>,
    /// Forward calls so far, and the fault to raise at one of them.
    calls: u64,
    fault_at: Option<(u64, String)>,
}

fn knob<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

impl engine_kit::BatchEngine for Mock {
    fn max_slots(&self) -> usize {
        self.slots.len()
    }
    fn batching(&self) -> String {
        format!(
            "continuous (mock: {} slots, one sleep per step)",
            self.slots.len()
        )
    }
    fn prefill_slot(
        &mut self,
        slot: usize,
        prompt: &[u32],
        logits: &mut Vec<f32>,
    ) -> EngineResult<()> {
        self.prefills += 1;
        self.tick();
        if self
            .fail_prefill_every
            .is_some_and(|n| self.prefills.is_multiple_of(n))
        {
            return Err(format!(
                "simulated failure of prefill {} (every {})",
                self.prefills,
                self.fail_prefill_every.unwrap_or(0)
            )
            .into());
        }
        if let Some((k, extra)) = self.stall_prefill {
            if k == self.prefills {
                std::thread::sleep(extra);
            }
        }
        if self.fail_prefill == Some(self.prefills) {
            return Err(format!("simulated failure of prefill {}", self.prefills).into());
        }
        if self.slots[slot].is_some() {
            return Err(format!("slot {slot} is not free").into());
        }
        let last = *prompt.last().unwrap_or(&0);
        self.slots[slot] = Some(last);
        self.last = last;
        self.emit(logits);
        Ok(())
    }
    fn decode_slots(&mut self, batch: &[(usize, u32)], logits: &mut Vec<f32>) -> EngineResult<()> {
        self.steps += 1;
        self.tick();
        if self.fail_step == Some(self.steps) {
            return Err(format!("simulated failure of step {}", self.steps).into());
        }
        if !self.sleep.is_zero() {
            std::thread::sleep(self.sleep);
        }
        logits.clear();
        logits.resize(batch.len() * VOCAB, 0.0);
        for (i, &(slot, token)) in batch.iter().enumerate() {
            match self.slots.get_mut(slot) {
                Some(Some(last)) => *last = token,
                _ => return Err(format!("slot {slot} holds no sequence").into()),
            }
            logits[i * VOCAB + ((31 * token as usize) + 7) % VOCAB] = 1.0;
        }
        Ok(())
    }
    fn release_slot(&mut self, slot: usize) {
        self.slots[slot] = None;
    }
}

impl Mock {
    /// One forward call; raises `MOCK_ENGINE_FAULT_AT`'s fault at its call.
    fn tick(&mut self) {
        self.calls += 1;
        let Some((k, fault)) = &self.fault_at else {
            return;
        };
        if *k != self.calls {
            return;
        }
        eprintln!("mock: raising `{fault}` at forward call {k}");
        match fault.as_str() {
            // SAFETY: the default action restored (Rust's own handler, for stack overflows,
            // returns from a raised SIGSEGV), then the signal raised: it ends the process.
            "segv" => unsafe {
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                libc::raise(libc::SIGSEGV);
            },
            "abort" => std::process::abort(),
            "exit0" => std::process::exit(0),
            "hang" => loop {
                std::thread::sleep(Duration::from_secs(1));
            },
            "oom" => {
                let mut hog: Vec<Vec<u8>> = Vec::new();
                loop {
                    let mut block = vec![0u8; 64 << 20];
                    for page in block.iter_mut().step_by(4096) {
                        *page = 1;
                    }
                    hog.push(std::hint::black_box(block));
                }
            }
            "threads" => {
                // Threads until the kernel refuses one (a pids limit), each parked forever.
                for i in 0.. {
                    if let Err(e) = std::thread::Builder::new().spawn(|| loop {
                        std::thread::park();
                    }) {
                        panic!("cannot start thread {}: {e}", i + 1);
                    }
                }
            }
            other => panic!("MOCK_ENGINE_FAULT_AT: unknown fault `{other}`"),
        }
    }

    fn emit(&mut self, logits: &mut Vec<f32>) {
        if !self.sleep.is_zero() {
            std::thread::sleep(self.sleep);
        }
        logits.clear();
        logits.resize(VOCAB, 0.0);
        if let Some(top) = self.oracle_top() {
            for (&id, &l) in top.ids.iter().zip(&top.logits) {
                logits[id as usize] = l;
            }
            return;
        }
        logits[((31 * self.last as usize) + 7) % VOCAB] = 1.0;
    }

    /// The reference's top-k for the current position, when the sequence is a reference prompt
    /// followed by a prefix of its greedy continuation; swapped at every `wrong_every`-th position.
    fn oracle_top(&self) -> Option<lab_protocol::TopLogits> {
        let r = self.oracle.as_ref()?;
        for p in &r.prompts {
            let n = p.token_ids.len();
            if self.seq.len() < n || self.seq[..n] != p.token_ids[..] {
                continue;
            }
            let pos = self.seq.len() - n;
            if pos >= p.greedy.len() || self.seq[n..] != p.greedy[..pos] {
                continue;
            }
            let mut top = p.teacher_forced[pos].clone();
            if self.wrong_every > 0
                && (pos + 1).is_multiple_of(self.wrong_every)
                && top.ids.len() > 1
            {
                top.logits.swap(0, 1);
            }
            return Some(top);
        }
        None
    }
}

impl Engine for Mock {
    fn reset(&mut self) -> EngineResult<()> {
        self.seq.clear();
        Ok(())
    }
    fn prefill(&mut self, prompt: &[u32], logits: &mut Vec<f32>) -> EngineResult<()> {
        self.tick();
        self.seq.extend_from_slice(prompt);
        self.last = *prompt.last().unwrap_or(&0);
        self.emit(logits);
        Ok(())
    }
    fn decode(&mut self, token: u32, logits: &mut Vec<f32>) -> EngineResult<()> {
        self.tick();
        self.seq.push(token);
        self.last = token;
        self.emit(logits);
        Ok(())
    }
    fn batch(&mut self) -> Option<&mut dyn engine_kit::BatchEngine> {
        if self.slots.is_empty() {
            None
        } else {
            Some(self)
        }
    }
}

fn load(request: &Request) -> EngineResult<Loaded<Mock>> {
    let mode = std::env::var("MOCK_ENGINE").unwrap_or_else(|_| "ok".into());
    let oracle = if mode == "oracle" {
        let path = std::env::var("MOCK_ENGINE_REFERENCE")
            .map_err(|_| "MOCK_ENGINE=oracle needs MOCK_ENGINE_REFERENCE")?;
        Some(load_reference(std::path::Path::new(&path))?)
    } else {
        None
    };
    match mode.as_str() {
        "hang" => loop {
            std::thread::sleep(Duration::from_secs(1));
        },
        "crash" => {
            eprintln!("mock: simulated crash");
            std::process::exit(3)
        }
        "garbage" => {
            println!("this is not json");
            std::process::exit(0)
        }
        "fail-load" => return Err("simulated load failure".into()),
        "probe" => return Err(probe(&request.model.dir).into()),
        "panic" => panic!("simulated panic"),
        _ => {}
    }
    let mock = Mock {
        last: 0,
        seq: Vec::new(),
        oracle,
        wrong_every: knob("MOCK_ENGINE_WRONG_EVERY").unwrap_or(0),
        sleep: Duration::from_micros(knob("MOCK_ENGINE_SLEEP_US").unwrap_or(1000)),
        slots: vec![None; knob("MOCK_ENGINE_SLOTS").unwrap_or(8)],
        prefills: 0,
        steps: 0,
        fail_prefill: knob("MOCK_ENGINE_FAIL_PREFILL"),
        stall_prefill: std::env::var("MOCK_ENGINE_STALL_PREFILL")
            .ok()
            .and_then(|s| {
                let (k, ms) = s.split_once(':')?;
                Some((k.parse().ok()?, Duration::from_millis(ms.parse().ok()?)))
            }),
        fail_step: knob("MOCK_ENGINE_FAIL_STEP"),
        fail_prefill_every: knob::<u64>("MOCK_ENGINE_FAIL_PREFILL_EVERY").filter(|&n| n > 0),
        calls: 0,
        fault_at: std::env::var("MOCK_ENGINE_FAULT_AT").ok().map(|s| {
            let (k, f) = s.split_once(':').expect("MOCK_ENGINE_FAULT_AT is K:FAULT");
            (
                k.parse().expect("MOCK_ENGINE_FAULT_AT: K is a number"),
                f.to_string(),
            )
        }),
    };
    if let Some(n) = knob::<usize>("MOCK_ENGINE_STDERR_FLOOD") {
        use std::io::Write;
        let mut err = std::io::stderr().lock();
        for i in 0..n {
            let _ = writeln!(err, "mock: flood line {i} {}", "x".repeat(100));
        }
        let _ = writeln!(err, "mock: one long line {}", "y".repeat(1 << 20));
    }
    let threads = request.threads.unwrap_or(1);
    Ok(META.loaded(mock, request, threads, BTreeMap::new()))
}

/// `MOCK_ENGINE=probe`: what an engine could do to its surroundings, as the load error (so it
/// reaches the harness through the protocol): its user, writing into the model directory,
/// its network interfaces, and connecting out (to TEST-NET-1, which no route should reach
/// quickly; the error kind is what matters).
fn probe(model_dir: &str) -> String {
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Uid:")
                .map(|v| v.split_whitespace().next().unwrap_or("?").to_string())
        })
        .unwrap_or_else(|| "?".into());
    let target = std::path::Path::new(model_dir).join(".probe-write");
    let write = match std::fs::File::create(&target) {
        Ok(_) => {
            let _ = std::fs::remove_file(&target);
            "succeeded".to_string()
        }
        Err(e) => e.to_string(),
    };
    let interfaces: Vec<String> = std::fs::read_to_string("/proc/net/dev")
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|n| n.trim().to_string()))
        .collect();
    let addr: std::net::SocketAddr = "192.0.2.1:80".parse().expect("valid address");
    let connect = match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(_) => "succeeded".to_string(),
        Err(e) => e.to_string(),
    };
    format!(
        "probe: uid={uid}; write {}: {write}; interfaces: {}; connect {addr}: {connect}",
        target.display(),
        interfaces.join(",")
    )
}

const META: EngineMeta = EngineMeta {
    name: "mock",
    version: env!("CARGO_PKG_VERSION"),
    backend: "none",
};

/// The lying modes: run the healthy mock as a child on the same request, then alter what it
/// reported.
fn relay(mode: &str) -> ! {
    use std::io::{Read, Write};
    let mut request = Vec::new();
    std::io::stdin()
        .read_to_end(&mut request)
        .expect("read stdin");
    #[allow(clippy::disallowed_methods)] // the mock relays a child's report (a test fixture)
    let mut child = std::process::Command::new(std::env::current_exe().expect("own path"))
        .env("MOCK_ENGINE", "ok")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the healthy mock");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(&request)
        .expect("send the request");
    let out = child.wait_with_output().expect("healthy mock's report");
    let text = String::from_utf8(out.stdout).expect("UTF-8 report");
    let mut stdout = std::io::stdout().lock();
    match mode {
        "truncated" => {
            let _ = stdout.write_all(&text.as_bytes()[..text.len() / 2]);
        }
        "silent" => {}
        "oversized" => {
            let _ = stdout.write_all(br#"{"schema_version":6,"padding":""#);
            let block = vec![b'x'; 1 << 20];
            for _ in 0..300 {
                if stdout.write_all(&block).is_err() {
                    break;
                }
            }
            let _ = stdout.write_all(b"\"}\n");
        }
        "short" => {
            let mut report: lab_protocol::Report =
                serde_json::from_str(text.trim()).expect("the healthy mock's report parses");
            for s in &mut report.scenarios {
                for p in &mut s.prompts {
                    p.generated_token_ids.pop();
                    for sample in &mut p.samples {
                        sample.new_tokens = sample.new_tokens.saturating_sub(1);
                        sample.inter_token_ns.pop();
                    }
                }
            }
            let _ = serde_json::to_writer(&mut stdout, &report);
            let _ = stdout.write_all(b"\n");
        }
        other => panic!("not a relay mode: {other}"),
    }
    let _ = stdout.flush();
    std::process::exit(0)
}

fn main() {
    if let Ok(mode) = std::env::var("MOCK_ENGINE") {
        if matches!(
            mode.as_str(),
            "truncated" | "silent" | "oversized" | "short"
        ) {
            relay(&mode);
        }
    }
    engine_kit::run_main(META, load)
}
