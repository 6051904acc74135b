//! The flags' resolution, tested through clap's parser.

use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    flags: Options,
}

fn parse(args: &[&str]) -> std::result::Result<Options, String> {
    Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
        .map(|c| c.flags)
        .map_err(|e| e.to_string())
}

fn flags(args: &[&str]) -> Options {
    parse(args).unwrap()
}

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn prov() -> Provenance {
    let mut p = crate::provenance::collect(&root(), "2026-11-28T01:02:03Z".into());
    p.git_rev = "0123456789abcdef".into();
    p
}

fn plan(o: &Options, prov: &Provenance) -> Result<BenchSpec> {
    resolve(o, None, prov, &root())
}

#[test]
fn a_plan_resolves_every_default_from_the_flags() {
    let spec = plan(&flags(&["--cpuset-cpus", "0-2"]), &prov()).unwrap();
    assert_eq!(spec.run_id, "20261128T010203-0123456");
    assert_eq!(spec.targets.len(), catalog::targets().len());
    assert_eq!(
        spec.scenarios,
        ["s1", "s2", "s3", "s5", "ref-greedy", "ref-tf"],
        "the mission's scenarios and correctness; the analyses run when named"
    );
    assert_eq!(spec.measure, Profile::Budget, "the CPU default");
    assert_eq!(
        (
            spec.iterations,
            spec.warmup_iterations,
            spec.max_duration_ms
        ),
        (10, 1, Some(3_000))
    );
    assert_eq!((spec.repeat, spec.cooldown_s), (1, 0));
    assert_eq!(spec.threads, 3, "the cpuset's size");
    assert_eq!(spec.cpuset_cpus.as_deref(), Some("0-2"));
    // Pinned by default to the first `threads` CPUs; --no-pin leaves placement to the OS.
    let one = plan(&flags(&["--threads", "1"]), &prov()).unwrap();
    assert_eq!(one.cpuset_cpus.as_deref(), Some("0"));
    let free = plan(&flags(&["--threads", "1", "--no-pin"]), &prov()).unwrap();
    assert_eq!(free.cpuset_cpus, None);
    // Profiles, and counts that override them.
    let standard = plan(
        &flags(&[
            "--profile",
            "standard",
            "--repeat",
            "3",
            "--cooldown-s",
            "5",
        ]),
        &prov(),
    )
    .unwrap();
    assert_eq!(standard.measure, Profile::Standard);
    assert_eq!(
        (
            standard.iterations,
            standard.min_duration_ms,
            standard.max_duration_ms
        ),
        (100, 10_000, None)
    );
    assert_eq!((standard.repeat, standard.cooldown_s), (3, 5));
    let custom = plan(&flags(&["--iterations", "4"]), &prov()).unwrap();
    assert_eq!(custom.measure, Profile::Custom);
    assert_eq!(
        (
            custom.iterations,
            custom.warmup_iterations,
            custom.max_duration_ms
        ),
        (4, 1, None)
    );
    assert_eq!(spec.device, Device::Cpu);
    assert_eq!(spec.runtimes, ["auto"]);
    assert_eq!(spec.model, "smollm2-135m");
    let inside = root().join("prompts");
    let dir = plan(&flags(&["--model", &inside.display().to_string()]), &prov()).unwrap();
    assert_eq!(
        dir.model, "prompts",
        "a directory in the checkout is recorded relative"
    );

    let gpu = plan(
        &flags(&[
            "--device",
            "cuda:1",
            "--engine",
            "candle",
            "--image",
            "candle=x:1",
            "--runtime",
            "native,podman",
        ]),
        &prov(),
    )
    .unwrap();
    assert_eq!(gpu.device, Device::Cuda { ordinal: 1 });
    assert_eq!(gpu.measure, Profile::Full, "the GPU default");
    assert_eq!((gpu.iterations, gpu.warmup_iterations), (200, 10));
    assert_eq!(gpu.cpuset_cpus, None, "GPU runs are not pinned by default");
    assert!(gpu.targets.iter().all(|t| t.starts_with("candle:")));
    assert_eq!(gpu.images["candle"], "x:1");
    assert_eq!(gpu.runtimes, ["native", "podman"]);
    // The spec is what run.json records: it survives JSON.
    let back: BenchSpec = serde_json::from_str(&serde_json::to_string(&gpu).unwrap()).unwrap();
    assert_eq!(back, gpu);
}

#[test]
fn a_cuda_plan_takes_the_gpu_catalog_and_records_what_it_cannot_run() {
    let spec = plan(&flags(&["--device", "cuda:0"]), &prov()).unwrap();
    assert!(spec.targets.contains(&"burn:hf-bf16".to_string()));
    assert!(spec.targets.contains(&"pytorch:hf-f16".to_string()));
    // Recorded as asked for; `prepare` skips them with the reason.
    assert!(spec.targets.contains(&"native:hf-f32".to_string()));
    assert_eq!(
        spec.telemetry_period_ms,
        Some(100),
        "telemetry on by default on CUDA"
    );
    let (run, skip) = catalog::select_targets_on(&spec.targets, &spec.device).unwrap();
    assert!(run.iter().all(|t| t.engine != "native"));
    assert_eq!(skip.len(), 2);
    let e = plan(
        &flags(&["--device", "cuda:0", "--engine", "native"]),
        &prov(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with(
            "nothing to run on cuda:0: native:gguf-q4_1: the native engine is a CPU engine"
        ),
        "{e}"
    );
}

#[test]
fn bad_flags_are_refused_before_anything_runs() {
    let err = |args: &[&str]| match parse(args) {
        Ok(o) => plan(&o, &prov()).unwrap_err().to_string(),
        Err(e) => e,
    };
    assert!(err(&["--iterations", "0"]).contains("--iterations"));
    assert!(err(&["--repeat", "0"]).contains("--repeat must be at least 1"));
    assert!(err(&["--profile", "fast"]).contains("--profile fast: expected one of"));
    assert!(err(&["--threads", "0"]).contains("--threads"));
    assert!(err(&["--max-new-tokens", "0"]).contains("--max-new-tokens"));
    assert!(err(&["--device", "tpu"]).contains("--device tpu"));
    assert!(err(&["--runtime", "lxc"]).contains("lxc"));
    assert!(err(&["--cpuset-cpus", "3-1"]).contains("--cpuset-cpus"));
    assert!(err(&["--engine", "nope"]).contains("unknown engine `nope`"));
    assert!(err(&["--engine", "candle", "--image", "burn=x"]).contains("--image burn=x"));
    assert!(err(&["--image", "candle"]).contains("expected ENGINE=REF"));
    // The load scenarios' settings.
    assert!(err(&["--batch-sizes", "1,0"]).contains("--batch-sizes"));
    assert!(err(&["--concurrency", "0"]).contains("--concurrency"));
    assert!(err(&["--requests", "0"]).contains("--requests: requests must be at least 1"));
    assert!(err(&["--max-batch", "0"]).contains("--max-batch: max_batch must be at least 1"));
    assert!(err(&["--arrival", "poisson:0"]).contains("RATE > 0"));
    assert!(err(&["--arrival", "poisson:-2:1"]).contains("--arrival poisson:-2:1"));
    assert!(err(&["--arrival", "burst"]).contains("expected `closed` or `poisson"));
    assert!(err(&["--load-new-tokens", "0"]).contains("--load-new-tokens"));
    assert!(err(&["--long-lengths", "0"]).contains("--long-lengths"));
    assert!(err(&["--scenario", "s6"]).contains("unknown scenario `s6`"));
    // The analyses' settings, sampling and the KV cache.
    assert!(err(&["--kv-tokens", "0"]).contains("--kv-tokens must be at least 1"));
    assert!(err(&["--sampling-samples", "0"]).contains("--sampling-samples"));
    for (args, want) in [
        (&["--top-k", "0"][..], "top_k must be at least 1"),
        (&["--top-p", "0"], "top_p must be in (0, 1]"),
        (&["--top-p", "1.5"], "top_p must be in (0, 1]"),
        (
            &["--temperature", "0"],
            "temperature must be a number above 0",
        ),
        (&["--temperature", "-1", "--top-k", "5"], "temperature"),
    ] {
        let e = err(args);
        assert!(
            e.starts_with("--temperature/--top-k/--top-p: ") && e.contains(want),
            "{e}"
        );
    }
    assert!(err(&["--analysis", "speed"]).contains("--analysis speed: unknown analysis"));
    assert!(err(&[
        "--analysis",
        "cold-start",
        "--cold-starts",
        "0",
        "--warm-starts",
        "0"
    ])
    .contains("both 0"));
    let e = err(&["--kv-cache", "off"]);
    assert!(
        e.starts_with("--kv-cache off: mistralrs:gguf-q4_1 cannot: mistral.rs's KV cache"),
        "{e}"
    );
    assert!(err(&["--kv-cache", "maybe"]).contains("[possible values: on, off]"));
}

#[test]
fn sampling_and_the_kv_cache_are_recorded_in_the_plan() {
    let spec = plan(
        &flags(&[
            "--engine",
            "native",
            "--kv-cache",
            "off",
            "--top-k",
            "50",
            "--temperature",
            "0.7",
            "--seed",
            "3",
            "--scenario",
            "kv",
            "--kv-tokens",
            "256",
        ]),
        &prov(),
    )
    .unwrap();
    assert!(spec.kv_cache_off);
    assert_eq!(spec.scenarios, ["kv-on", "kv-off"]);
    assert_eq!(spec.load.as_ref().unwrap().kv_new_tokens, 256);
    assert_eq!(
        spec.sampling,
        Some(lab_protocol::Sampling::TopP {
            temperature: 0.7,
            top_p: 1.0,
            seed: 3,
            top_k: Some(50)
        })
    );
    let back: BenchSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
    assert_eq!(back, spec);
    // The defaults: greedy, with the cache, 64 tokens in the small profiles, 512 in standard.
    let d = plan(&flags(&[]), &prov()).unwrap();
    assert_eq!((d.sampling, d.kv_cache_off), (None, false));
    assert_eq!(d.load.unwrap().kv_new_tokens, 64);
    let s = plan(&flags(&["--profile", "standard"]), &prov()).unwrap();
    assert_eq!(s.load.unwrap().kv_new_tokens, 512);
}

#[test]
fn the_micro_analysis_selects_its_frameworks_and_its_settings() {
    let spec = plan(&flags(&["--analysis", "micro"]), &prov()).unwrap();
    assert_eq!(spec.scenarios, ["micro"]);
    assert_eq!(
        spec.targets,
        [
            "candle:hf-f32",
            "native:hf-f32",
            "burn:hf-f32",
            "pytorch:hf-f32"
        ]
    );
    let m = spec.micro.clone().unwrap();
    assert_eq!(m.dtypes, [Dtype::F32, Dtype::Bf16]);
    assert_eq!(
        (m.samples, m.warmup, m.max_case_ms, m.tiny),
        (100, 3, Some(2_000), false)
    );
    let back: BenchSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
    assert_eq!(back, spec);
    // With --all: every target and the default scenarios, the microbenchmarks on top.
    let all = plan(&flags(&["--micro", "--all"]), &prov()).unwrap();
    assert!(all.targets.len() > 4 && all.scenarios.contains(&"s1".to_string()));
    assert_eq!(all.scenarios.last().map(String::as_str), Some("micro"));
    // Named engines and flags.
    let one = plan(
        &flags(&[
            "--analysis",
            "micro",
            "--engine",
            "candle:hf-f32",
            "--micro-dtypes",
            "f16,f32",
            "--micro-samples",
            "7",
            "--micro-case-s",
            "0.5",
            "--micro-shapes",
            "tiny",
            "--profile",
            "standard",
        ]),
        &prov(),
    )
    .unwrap();
    assert_eq!(one.targets, ["candle:hf-f32"]);
    let m = one.micro.unwrap();
    assert_eq!(m.dtypes, [Dtype::F16, Dtype::F32]);
    assert_eq!(
        (m.samples, m.warmup, m.max_case_ms, m.tiny),
        (7, 10, Some(500), true)
    );
    // Not in a default run.
    assert!(!plan(&flags(&[]), &prov())
        .unwrap()
        .scenarios
        .contains(&"micro".to_string()));
    let err = |args: &[&str]| match parse(args) {
        Ok(o) => plan(&o, &prov()).unwrap_err().to_string(),
        Err(e) => e,
    };
    assert!(err(&["--micro-samples", "5"]).contains("need --analysis micro"));
    assert!(err(&["--micro", "--micro-dtypes", "q4_1"]).contains("--micro-dtypes q4_1"));
    assert!(err(&["--micro", "--micro-samples", "0"]).contains("--micro-samples"));
    assert!(err(&["--micro", "--micro-case-s", "-1"]).contains("--micro-case-s"));
    assert!(err(&["--micro", "--micro-shapes", "huge"])
        .contains("invalid value 'huge' for '--micro-shapes <MICRO_SHAPES>'"));
}

#[test]
fn the_lora_analysis_selects_the_frameworks_that_train() {
    let spec = plan(&flags(&["--analysis", "lora", "--lora-seq", "64"]), &prov()).unwrap();
    assert_eq!(spec.scenarios, ["lora"]);
    assert_eq!(
        spec.targets,
        ["candle:hf-f32", "burn:hf-f32", "pytorch:hf-f32"]
    );
    let l = spec.lora.clone().unwrap();
    assert_eq!((l.seq_len, l.steps, l.warmup, l.rank), (64, 20, 2, 8));
    assert_eq!(l.targets, ["q_proj", "v_proj"]);
    let back: BenchSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
    assert_eq!(back, spec);
    let both = plan(&flags(&["--analysis", "lora", "--micro"]), &prov()).unwrap();
    assert_eq!(both.scenarios, ["micro", "lora"]);
    assert_eq!(both.targets.len(), 4, "{:?}", both.targets);
    let err = |args: &[&str]| match parse(args) {
        Ok(o) => plan(&o, &prov()).unwrap_err().to_string(),
        Err(e) => e,
    };
    assert!(err(&["--lora-steps", "5"]).contains("need --analysis lora"));
    assert!(err(&["--analysis", "lora", "--lora-seq", "0"]).contains("--lora-seq"));
}

#[test]
fn load_settings_come_from_the_profile_and_the_flags() {
    let spec = plan(&flags(&["--profile", "standard"]), &prov()).unwrap();
    let l = spec.load.unwrap();
    assert_eq!(l.batch_sizes, [1, 8, 32, 64]);
    assert_eq!(l.concurrency, [1, 10, 25, 50, 100]);
    let spec = plan(
        &flags(&[
            "--scenario",
            "s4",
            "--batch-sizes",
            "2,4",
            "--arrival",
            "poisson:2.5:9",
            "--long-lengths",
            "1024",
        ]),
        &prov(),
    )
    .unwrap();
    assert_eq!(spec.scenarios, ["s2", "s3", "s5"]);
    let l = spec.load.unwrap();
    assert_eq!(l.batch_sizes, [2, 4]);
    assert_eq!(
        l.arrival,
        lab_protocol::Arrival::Poisson {
            rate_per_s: 2.5,
            seed: 9
        }
    );
    assert_eq!(l.long_lengths, Some(vec![1024]));
}
