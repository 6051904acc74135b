//! What the lab's tests share (a dev-dependency only, never linked into the xtask or an engine):
//! locating the model volume, running targets through [`lab_harness::bench`] exactly as
//! `cargo xtask bench` does, comparing token ids with the committed baseline of this machine's
//! hardware profile, and the failure checks every engine's suite runs. The crate also holds the
//! mock engine (`src/bin/mock-engine.rs`) and, in `tests/it`, the harness's end-to-end tests
//! that run it; [`fuzz`], the seeded mutational fuzzer of the lab's parsers, whose targets for
//! the protocol and the result and baseline files are in `tests/fuzz`.
//!
//! It panics with the command to run when something is missing.

pub mod conformance;
pub mod load;
pub mod micro;
pub mod train;

pub use conformance::{assert_conforms, pipe_bytes, raw_request};

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use lab_protocol::{Device, Dtype, WeightFormat};

use lab_harness::catalog::{self, Target};
use lab_harness::runner::Launch;
use lab_harness::{model, provenance, BenchPlan, BenchSpec, PreparedTarget};
use lab_results::baseline::{self, CheckOptions, Verdict};
use lab_results::correctness;
use lab_results::results::{RunStatus, TargetResult, TargetStatus};
use lab_results::runtime::{RanUnder, RuntimeKind, Runtimes};

/// Must equal the generation length the committed baselines were accepted with (the default
/// of `cargo xtask bench`), because token snapshots are compared exactly.
pub const BASELINE_MAX_NEW_TOKENS: u32 = 64;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("project root")
}

/// `LAB_MODELS_DIR` or `<root>/models`; panics with the fixing command when smollm2 is missing.
pub fn models_dir() -> PathBuf {
    let dir = std::env::var_os("LAB_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models"));
    assert!(
        dir.join("smollm2-135m/MANIFEST.json").exists(),
        "model volume missing at {}: run `cargo xtask models` (or `cargo xtask test`)",
        dir.display()
    );
    dir
}

/// Held while a test runs a real engine: engines are run one at a time, across the tests of a
/// binary (they run in parallel threads) and across processes (a file lock beside the other
/// temporary files), as `cargo xtask bench` runs them. Two engines that each use every core
/// oversubscribe the machine, and spin-waiting thread pools (llama.cpp's barrier, OpenMP) then
/// slow down by orders of magnitude: a CI run once saw two llama.cpp tests make no progress
/// for 20 minutes.
pub struct Exclusive {
    _file: std::fs::File,
    _guard: std::sync::MutexGuard<'static, ()>,
}

/// Waits for, then holds, the machine-wide right to run an engine (see [`Exclusive`]).
pub fn exclusive() -> Exclusive {
    static IN_PROCESS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that panicked while holding the lock poisons it; the lock itself is still sound.
    let guard = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let path = std::env::temp_dir().join("inference-lab-engine-tests.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("locking {}: {e}", path.display()));
    Exclusive {
        _file: file,
        _guard: guard,
    }
}

/// The environment variables HTTP clients take a proxy from (ureq, reqwest, curl, pip).
pub const PROXY_VARS: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// A TCP listener standing in for a proxy, to see whether a process tries the network: point
/// [`PROXY_VARS`] at the returned URL; the receiver gets the first bytes of the first connection
/// (e.g. `CONNECT huggingface.co:443 …`) and nothing if no connection is made.
pub fn proxy_trap() -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a local port");
    let url = format!("http://{}", listener.local_addr().expect("local address"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).unwrap_or(0);
            let _ = tx.send(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    });
    (url, rx)
}

pub fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A target started from `binary` (an engine test's `CARGO_BIN_EXE_…`) with extra environment.
pub fn target(
    engine: &'static str,
    binary: &Path,
    format: WeightFormat,
    dtype: Dtype,
    env: &[(&str, &str)],
) -> PreparedTarget {
    let mut env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.push(("RAYON_NUM_THREADS".into(), threads().to_string()));
    let known = catalog::targets();
    let t = known
        .iter()
        .find(|t| t.engine == engine && t.format == format && t.dtype == dtype)
        .cloned()
        .unwrap_or(Target {
            engine,
            kind: catalog::EngineKind::Rust,
            package: engine,
            binary: engine,
            format,
            dtype,
        });
    PreparedTarget {
        target: t,
        launch: Launch {
            program: binary.display().to_string(),
            args: vec![],
            env,
            cleanup: vec![],
            ..Default::default()
        },
        binary: binary.to_path_buf(),
        model_dir_for_engine: models_dir().join("smollm2-135m").display().to_string(),
        image_digest: None,
        runtime: RanUnder::plain(RuntimeKind::Native),
        label_suffix: String::new(),
        binary_sha256: None,
        image_bytes: None,
    }
}

/// The container runtime for container tests: podman or docker, whichever works here. When
/// neither does, the test fails if `LAB_REQUIRE_CONTAINERS=1` (CI installs podman and sets it);
/// otherwise it says loudly that it is skipped and returns `None`.
pub fn container_runtime() -> Option<lab_harness::container::Runtime> {
    let (engine, why) = lab_harness::container::detect(&root());
    if engine.is_none() {
        assert!(
            std::env::var("LAB_REQUIRE_CONTAINERS").as_deref() != Ok("1"),
            "LAB_REQUIRE_CONTAINERS=1 but {why}"
        );
        eprintln!("SKIPPED (container test): {why}; install podman and runc to run it");
    }
    engine
}

/// `t` moved into its container: its image is built (from `t.binary`) and the launch rewritten.
pub fn in_container(engine: &lab_harness::container::Runtime, t: PreparedTarget) -> PreparedTarget {
    in_container_with(engine, t, &lab_harness::container::Sandbox::default())
}

/// [`in_container`] under `sandbox` (its CPU set, GPUs and resource limits).
pub fn in_container_with(
    engine: &lab_harness::container::Runtime,
    t: PreparedTarget,
    sandbox: &lab_harness::container::Sandbox,
) -> PreparedTarget {
    let prov = provenance::collect(
        &root(),
        lab_results::provenance::rfc3339(lab_results::provenance::now_unix()),
    );
    // A build context per call: tests build images in parallel.
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let work = std::env::temp_dir().join(format!("lab-images-{}-{seq}", std::process::id()));
    let model_dir = models_dir().join("smollm2-135m");
    lab_harness::container::containerize(
        &root(),
        engine,
        t,
        &model_dir,
        &work,
        sandbox,
        &prov,
        None,
    )
    .unwrap()
}

/// Runs `t` on a raw request that must fail; returns the error message (the engine must still
/// write a report).
pub fn engine_failure(t: &PreparedTarget, req: &lab_protocol::Request) -> String {
    conformance::failure(t, req).0
}

/// The lab's Python environment: `LAB_PYTHON` (set by `cargo xtask test`); panics with the fixing
/// command when it is not set.
pub fn python() -> PathBuf {
    let p = std::env::var_os("LAB_PYTHON").map(PathBuf::from).expect(
        "LAB_PYTHON is not set: run the tests with `cargo xtask test` (it creates the pinned Python environment), or `cargo xtask pyenv` and export LAB_PYTHON",
    );
    assert!(p.exists(), "LAB_PYTHON={} does not exist", p.display());
    p
}

/// A catalog target of a Python engine, started as `cargo xtask bench` starts it.
pub fn python_target(engine: &str, format: WeightFormat, dtype: Dtype) -> PreparedTarget {
    let t = catalog::targets()
        .into_iter()
        .find(|t| t.engine == engine && t.format == format && t.dtype == dtype)
        .unwrap_or_else(|| panic!("no catalog target {engine} {format:?} {dtype:?}"));
    let py = python();
    let (launch, binary) =
        lab_harness::launch::launch_for(&t, &root(), Path::new("/nonexistent"), Some(&py)).unwrap();
    let mut launch = launch;
    let placement = lab_harness::placement::Placement {
        threads: threads(),
        cpus: None,
    };
    launch.env.extend(placement.env(t.kind));
    PreparedTarget {
        target: t,
        launch,
        binary,
        model_dir_for_engine: models_dir().join("smollm2-135m").display().to_string(),
        image_digest: None,
        runtime: RanUnder::plain(RuntimeKind::Native),
        label_suffix: String::new(),
        binary_sha256: None,
        image_bytes: None,
    }
}

/// A plan for S1 on smollm2-135m on the CPU, writing into a fresh temporary directory, with this
/// machine's hardware profile.
pub fn s1_plan(
    tag: &str,
    targets: Vec<PreparedTarget>,
    warmup: u32,
    iterations: u32,
    max_new_tokens: u32,
) -> BenchPlan {
    let model = model::resolve(&models_dir(), "smollm2-135m").unwrap();
    let prov = provenance::collect(
        &root(),
        lab_results::provenance::rfc3339(lab_results::provenance::now_unix()),
    );
    let profile = lab_results::provenance::hardware_profile(&prov.host, &Device::Cpu, threads());
    let dir = std::env::temp_dir().join(format!("lab-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    BenchPlan {
        spec: BenchSpec {
            run_id: format!("test-{tag}"),
            model: model.name.clone(),
            targets: targets.iter().map(|t| t.target.label()).collect(),
            scenarios: vec!["s1".into()],
            device: Device::Cpu,
            threads: threads(),
            measure: lab_results::measure::Profile::Custom,
            warmup_iterations: warmup,
            iterations,
            min_duration_ms: 0,
            max_duration_ms: None,
            repeat: 1,
            cooldown_s: 0,
            max_new_tokens,
            timeout_s: 1200,
            runtimes: vec!["native".into()],
            cpuset_cpus: None,
            images: Default::default(),
            load: None,
            lock_clocks: None,
            telemetry_period_ms: None,
            price: None,
            sampling: None,
            kv_cache_off: false,
            slowdown: None,
            startup: None,
            micro: None,
            lora: None,
            memory_limit_mib: None,
            pids_limit: None,
        },
        root: root(),
        run_dir: dir.join("run"),
        model,
        targets,
        skipped: vec![],
        runtime: Runtimes(vec![RuntimeKind::Native]),
        profile,
        provenance: prov,
        probe: None,
    }
}

/// Runs S1 on smollm2-135m for `targets` with the baselines' generation length; every target
/// must succeed.
pub fn run_s1(
    tag: &str,
    targets: Vec<PreparedTarget>,
    warmup: u32,
    iterations: u32,
) -> (BenchPlan, Vec<TargetResult>) {
    let plan = s1_plan(tag, targets, warmup, iterations, BASELINE_MAX_NEW_TOKENS);
    run_plan(plan)
}

/// Runs S1 (no warm-up, one iteration) for `targets` inside their containers, as
/// `cargo xtask bench --runtime podman|docker` does; `None` when no container runtime is
/// available and containers are not required (see [`container_runtime`]).
pub fn run_s1_in_container(
    tag: &str,
    targets: Vec<PreparedTarget>,
) -> Option<(BenchPlan, Vec<TargetResult>)> {
    let engine = container_runtime()?;
    let targets = targets
        .into_iter()
        .map(|t| in_container(&engine, t))
        .collect();
    let mut plan = s1_plan(tag, targets, 0, 1, BASELINE_MAX_NEW_TOKENS);
    plan.runtime = Runtimes(vec![engine.kind]);
    let (plan, results) = run_plan(plan);
    for r in &results {
        assert_eq!(r.runtime, Some(RanUnder::plain(engine.kind)));
        assert!(r.image_digest.is_some(), "{}: no image recorded", r.target);
    }
    Some((plan, results))
}

/// S1 inside the targets' containers produces exactly the committed baseline token ids (the
/// image carries everything the binary needs); skipped as [`container_runtime`] says.
pub fn assert_s1_in_container_matches_baseline(tag: &str, targets: Vec<PreparedTarget>) {
    if let Some((plan, results)) = run_s1_in_container(tag, targets) {
        assert_tokens_match_baseline(&plan, &results);
    }
}

/// Runs the correctness scenarios (`ref-greedy`, `ref-tf`) for `targets`; every target must
/// finish. Compare with [`assert_correct`].
pub fn run_correctness(tag: &str, targets: Vec<PreparedTarget>) -> (BenchPlan, Vec<TargetResult>) {
    let mut plan = s1_plan(tag, targets, 0, 1, BASELINE_MAX_NEW_TOKENS);
    plan.spec.scenarios = ids(&["ref"]);
    run_plan(plan)
}

/// The committed reference of smollm2-135m.
pub fn reference() -> correctness::Reference {
    correctness::load_reference(&correctness::reference_path(&root(), "smollm2-135m")).unwrap()
}

/// Every result passes the correctness gate of its precision; the figures are printed.
pub fn assert_correct(results: &[TargetResult]) -> Vec<correctness::Correctness> {
    let reference = reference();
    let mut out = Vec::new();
    for r in results {
        let c = correctness::evaluate(r, &reference).expect("the run has correctness scenarios");
        eprintln!(
            "correctness: {}: top-1 {}/{} ({:.1} %, gate {:.0} %), greedy prefix {}/{}, {}/{} prompts identical, max top-1 logit error {:?}",
            c.target,
            c.top1_agree,
            c.positions,
            c.top1_agreement * 100.0,
            c.gate * 100.0,
            c.greedy_prefix_tokens,
            c.greedy_tokens,
            c.greedy_full_matches,
            c.prompts.len(),
            c.max_abs_top1_logit_error
        );
        assert!(c.passes(), "{c:#?}");
        out.push(c);
    }
    out
}

pub(crate) fn run_plan(plan: BenchPlan) -> (BenchPlan, Vec<TargetResult>) {
    let _exclusive = exclusive();
    let (manifest, results) = lab_harness::bench(&plan, &AtomicBool::new(false)).unwrap();
    assert_eq!(manifest.status, RunStatus::Complete);
    for t in &manifest.targets {
        assert_eq!(t.status, TargetStatus::Ok, "{}: {:?}", t.target, t.error);
    }
    (plan, results)
}

/// Overrides the hardware profile the tests compare with (`LAB_TEST_PROFILE=unknown` exercises
/// the portable path on a machine that has committed baselines; CI does so).
pub const PROFILE_ENV: &str = "LAB_TEST_PROFILE";

/// The hardware profile tests compare against: [`PROFILE_ENV`] when set, else this machine's.
pub fn test_profile(plan: &BenchPlan) -> String {
    std::env::var(PROFILE_ENV)
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| plan.profile.clone())
}

/// The committed baseline directory of the profile under test, or `None` when there is none
/// (said in one line: only the machine-independent checks run then).
pub fn baseline_dir(plan: &BenchPlan) -> Option<PathBuf> {
    let profile = test_profile(plan);
    let dir = baseline::dir_for(&root().join("baselines"), &profile, &plan.model.name);
    if dir.is_dir() {
        return Some(dir);
    }
    // Straight to stderr, past the test harness's output capture: a passing test says it too.
    let _ = writeln!(
        std::io::stderr(),
        "NO BASELINE for hardware profile `{profile}` and model `{}` (baselines/{profile}/{} does not exist): token ids are checked for counts and determinism only, and against the reference by the correctness tests; `cargo xtask bench` then `cargo xtask check --accept` makes one",
        plan.model.name,
        plan.model.name
    );
    None
}

/// What holds for every result on any machine: every scenario finished, every S1 prompt has its
/// prompt length and exactly the requested number of new tokens, and every iteration produced
/// the same ids.
pub fn assert_machine_independent(plan: &BenchPlan, results: &[TargetResult]) {
    let prompts = catalog::load_prompts(
        &plan.root.join("prompts"),
        "s1.json",
        &plan.model.tokenizer_json,
    )
    .unwrap();
    for r in results {
        for sc in &r.stats {
            assert!(sc.error.is_none(), "{} {}: {:?}", r.target, sc.id, sc.error);
            let names: Vec<&str> = sc.prompts.iter().map(|p| p.prompt.as_str()).collect();
            let expected: Vec<&str> = prompts.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names, expected, "{} {}: prompts", r.target, sc.id);
            for (p, want) in sc.prompts.iter().zip(&prompts) {
                assert_eq!(
                    p.prompt_tokens as usize,
                    want.token_ids.len(),
                    "{} {}",
                    r.target,
                    p.prompt
                );
                assert_eq!(
                    p.new_tokens, plan.spec.max_new_tokens,
                    "{} {}: new tokens",
                    r.target, p.prompt
                );
                assert!(
                    p.deterministic,
                    "{} {} produced different ids across iterations",
                    r.target, p.prompt
                );
            }
        }
    }
}

/// The machine-independent checks ([`assert_machine_independent`]), then, where the profile under
/// test has a committed baseline, exact comparison of every result's token ids and counts with
/// it: first as insta snapshots under `baselines/<profile>/<model>/` (a mismatch leaves a `.snap.new` for
/// `cargo insta review`; nothing is accepted when `INSTA_UPDATE=no`), then through
/// `check --exact-only`. Numbers are compared and printed, never asserted.
pub fn assert_tokens_match_baseline(plan: &BenchPlan, results: &[TargetResult]) {
    assert_machine_independent(plan, results);
    let Some(dir) = baseline_dir(plan) else {
        return;
    };
    for r in results {
        for sc in &r.stats {
            let name = baseline::snapshot_name(&baseline::stem_of(&r.target), &sc.id);
            let body = baseline::token_snapshot(r, &sc.id).expect("scenario is in the report");
            insta::with_settings!({ snapshot_path => dir.clone(), prepend_module_to_snapshot => false, omit_expression => true }, {
                insta::assert_snapshot!(name, body);
            });
        }
    }
    let exact = baseline::check(
        results,
        &dir,
        CheckOptions {
            exact_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        exact.iter().all(|f| f.verdict == Verdict::Pass),
        "{exact:#?}"
    );
    for f in baseline::check(results, &dir, CheckOptions::default()).unwrap() {
        eprintln!(
            "numbers (informational): {} {} {} {:?} {}",
            f.target, f.prompt, f.metric, f.verdict, f.detail
        );
    }
}

/// Scenario ids as a plan's spec holds them (`ref` expands to both correctness scenarios).
pub fn ids(scenarios: &[&str]) -> Vec<String> {
    let specs: Vec<String> = scenarios.iter().map(|s| s.to_string()).collect();
    catalog::select_scenarios(&specs)
        .unwrap()
        .iter()
        .map(|s| s.id.to_string())
        .collect()
}
