//! The load scenarios through the whole harness with the mock engine: every request of S3 at
//! C = 100 accounted for, one injected prefill failure and one stall recorded where they happened,
//! a serial engine labelled as such, the report's sections and counts, and bad settings refused
//! before any engine starts.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use lab_protocol::{Dtype, RequestStatus};
use lab_results::results::{self, TargetStatus};

use super::{mock, plan};
use lab_testkit as testkit;

#[test]
fn every_request_is_accounted_for_under_injected_faults_at_c100() {
    let mut faulty = mock(Dtype::F32, "ok");
    faulty.launch.env.extend([
        ("MOCK_ENGINE_SLOTS".to_string(), "64".to_string()),
        ("MOCK_ENGINE_SLEEP_US".to_string(), "200".to_string()),
        // Prefill 7 of the process fails, prefill 20 stalls 300 ms.
        ("MOCK_ENGINE_FAIL_PREFILL".to_string(), "7".to_string()),
        (
            "MOCK_ENGINE_STALL_PREFILL".to_string(),
            "20:300".to_string(),
        ),
    ]);
    let mut serial = mock(Dtype::F16, "ok");
    serial
        .launch
        .env
        .push(("MOCK_ENGINE_SLOTS".to_string(), "0".to_string()));
    let mut p = plan("load", vec![faulty, serial], Duration::from_secs(120));
    p.spec.scenarios = testkit::ids(&["s2", "s3"]);
    p.spec.warmup_iterations = 0;
    let mut load = testkit::load::small_load();
    load.concurrency = vec![1, 100];
    load.requests = 100;
    load.max_batch = 64;
    p.spec.load = Some(load);
    let (manifest, res) = lab_harness::bench(&p, &AtomicBool::new(false)).unwrap();
    for t in &manifest.targets {
        assert_eq!(t.status, TargetStatus::Ok, "{}: {:?}", t.target, t.error);
    }
    let s3 = |r: &results::TargetResult| {
        r.report
            .scenarios
            .iter()
            .find(|s| s.id == "s3")
            .unwrap()
            .clone()
    };

    // The faulty engine: S2 ran one batch of 1 and one of 4 without warm-up (prefills 1..5), so
    // S3's C = 1 level starts at prefill 6: its second request is the one that fails.
    let f = s3(&res[0]);
    assert!(f.batching.as_deref().unwrap().starts_with("continuous"));
    let c1 = &f.points[0];
    assert_eq!(c1.requests.len(), 100);
    let failed: Vec<_> = c1
        .requests
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r.status, RequestStatus::Failed { .. }))
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, 1);
    let c100 = &f.points[1];
    assert_eq!(c100.requests.len(), 100);
    assert!(c100
        .requests
        .iter()
        .all(|r| r.status == RequestStatus::Completed));
    assert_eq!(c100.max_active, 64, "C = 100 is capped by the max batch");
    // The stalled prefill (the 20th of the process) is in C = 1: that request's TTFT shows it.
    let stalled = c1
        .requests
        .iter()
        .map(|r| {
            r.first_token_ns
                .unwrap_or(0)
                .saturating_sub(r.admit_ns.unwrap_or(0))
        })
        .max()
        .unwrap();
    assert!(stalled >= 300_000_000, "{stalled}");

    // The statistics add up to what was sent, and the report says so.
    let st = res[0].stats.iter().find(|s| s.id == "s3").unwrap();
    let counts = st.points[0].counts.unwrap();
    assert_eq!(
        (
            counts.total,
            counts.completed,
            counts.failed,
            counts.refused
        ),
        (100, 99, 1, 0)
    );
    let md = std::fs::read_to_string(p.run_dir.join("report.md")).unwrap();
    assert!(md.contains("## S2 sustained batched throughput"), "{md}");
    assert!(md.contains("| 1 | 1 | 99/1/0 of 100 |"), "{md}");
    assert!(md.contains("| 100 | 64 | 100/0/0 of 100 |"), "{md}");
    assert!(md.contains("## S4 memory"), "{md}");

    // The engine that cannot batch is served one request at a time, and labelled.
    let s = s3(&res[1]);
    assert_eq!(s.batching.as_deref(), Some(engine_kit::load::SERIAL));
    assert!(s
        .points
        .iter()
        .all(|p| p.max_active == 1 && p.requests.len() == 100));
    assert!(
        md.contains("| mock:hf-f16 | none (serial) | 100 | 1 | 100/0/0 of 100 |"),
        "{md}"
    );
    // Batched and serial mock outputs are the same ids.
    assert_eq!(f.points[1].outputs.len(), s.points[1].outputs.len());
    for o in &f.points[1].outputs {
        let other = s.points[1]
            .outputs
            .iter()
            .find(|x| x.prompt == o.prompt)
            .unwrap();
        assert_eq!(o.token_ids, other.token_ids);
    }
}

/// A long-context prompt that cannot fit the model's context with its generated tokens is one
/// clear error before any engine starts, never a truncation; the three S5 lengths fit.
#[test]
fn a_prompt_longer_than_the_context_is_refused_before_any_engine_starts() {
    let mut p = plan(
        "long",
        vec![mock(Dtype::F32, "ok")],
        Duration::from_secs(60),
    );
    p.spec.scenarios = testkit::ids(&["s5"]);
    let mut load = testkit::load::small_load();
    load.long_lengths = None;
    load.long_new_tokens = 128;
    p.spec.load = Some(load.clone());
    let (requests, _) = lab_harness::scenario_requests(&p).unwrap();
    let lengths: Vec<usize> = requests[0]
        .prompts
        .iter()
        .map(|q| q.token_ids.len())
        .collect();
    assert_eq!(lengths, [1024, 4096, 8064]);

    load.long_new_tokens = 129;
    p.spec.load = Some(load.clone());
    let e = lab_harness::scenario_requests(&p).unwrap_err().to_string();
    assert!(
        e.contains("scenario s5: prompt `p8064` of prompts/s5.json has 8064 tokens; with 129 generated tokens it exceeds model `smollm2-135m`'s context of 8192 tokens"),
        "{e}"
    );
    load.long_new_tokens = 8;
    load.long_lengths = Some(vec![9000]);
    p.spec.load = Some(load);
    let e = lab_harness::scenario_requests(&p).unwrap_err().to_string();
    assert!(
        e.contains("prompt `p9000`") && e.contains("exceeds model"),
        "{e}"
    );
    // Nothing ran: no run directory was created.
    assert!(!p.run_dir.exists());
}

/// `budget` warms an engine process up once: S1's prompts get the profile's warm-up, the
/// timed scenarios after it in the same process none; `standard` warms every scenario up (a
/// load level with at most one untimed batch); correctness scenarios never.
#[test]
fn budget_warms_up_the_first_timed_scenario_only() {
    use lab_results::measure::Profile;
    let mut p = plan(
        "warm-once",
        vec![mock(Dtype::F32, "ok")],
        Duration::from_secs(60),
    );
    p.spec.scenarios = testkit::ids(&["s1", "s2", "s3", "s5", "ref-greedy"]);
    p.spec.load = Some(testkit::load::small_load());
    let warmups = |p: &lab_harness::BenchPlan| -> Vec<(String, u32)> {
        let (requests, _) = lab_harness::scenario_requests(p).unwrap();
        requests
            .iter()
            .map(|r| (r.id.clone(), r.warmup_iterations))
            .collect()
    };
    let pairs = |v: &[(&str, u32)]| -> Vec<(String, u32)> {
        v.iter().map(|(s, n)| (s.to_string(), *n)).collect()
    };
    p.spec.measure = Profile::Budget;
    p.spec.warmup_iterations = 1;
    assert_eq!(
        warmups(&p),
        pairs(&[
            ("s1", 1),
            ("s2", 0),
            ("s3", 0),
            ("s5", 0),
            ("ref-greedy", 0)
        ])
    );
    // Without S1 the first timed scenario (in the order asked) is the one warmed up.
    p.spec.scenarios = testkit::ids(&["s5", "s2"]);
    assert_eq!(warmups(&p), pairs(&[("s5", 1), ("s2", 0)]));
    p.spec.scenarios = testkit::ids(&["s1", "s2", "s3", "s5", "ref-greedy"]);
    p.spec.measure = Profile::Standard;
    p.spec.warmup_iterations = 2;
    assert_eq!(
        warmups(&p),
        pairs(&[
            ("s1", 2),
            ("s2", 1),
            ("s3", 1),
            ("s5", 2),
            ("ref-greedy", 0)
        ])
    );
}

/// The analyses through the whole harness: `kv-on`/`kv-off` and `sampling` run by the mock
/// engine (a step-wise engine: the kit recomputes the prefix without the cache), their tables in
/// `report.md` and `index.html`; a top-k above the model's vocabulary is refused before any
/// engine starts.
#[test]
fn the_analyses_run_through_the_harness_and_reach_the_reports() {
    use lab_results::analysis::{self, Outcome};
    let mut p = plan(
        "analyses",
        vec![mock(Dtype::F32, "ok")],
        Duration::from_secs(120),
    );
    p.spec.scenarios = testkit::ids(&["kv-on", "kv-off", "sampling"]);
    p.spec.load = Some(testkit::load::small_load());

    let mut bad = p.clone();
    bad.spec.sampling = Some(lab_protocol::Sampling::TopP {
        temperature: 1.0,
        top_p: 1.0,
        seed: 0,
        top_k: Some(60_000),
    });
    let e = lab_harness::scenario_requests(&bad)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("top_k 60000 is larger than the vocabulary (49152 tokens)"),
        "{e}"
    );

    let (requests, _) = lab_harness::scenario_requests(&p).unwrap();
    let kv: Vec<bool> = requests.iter().map(|r| r.generation.kv_cache).collect();
    assert_eq!(kv, [true, false, true]);
    assert_eq!(requests[0].generation.max_new_tokens, 8);
    assert_eq!(requests[0].prompts[0].token_ids.len(), 16);

    let (manifest, results) = lab_harness::bench(&p, &AtomicBool::new(false)).unwrap();
    assert_eq!(
        manifest.targets[0].status,
        TargetStatus::Ok,
        "{:?}",
        manifest.targets[0].error
    );
    let r = &results[0];
    let ids = |id: &str| {
        r.report
            .scenarios
            .iter()
            .find(|s| s.id == id)
            .unwrap()
            .prompts[0]
            .generated_token_ids
            .clone()
    };
    assert_eq!(ids("kv-on").len(), 8);
    assert_eq!(
        ids("kv-on"),
        ids("kv-off"),
        "recomputing the prefix changes no id"
    );
    match analysis::kv(r) {
        Some(Outcome::Rows(rows)) => {
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].tokens, 8);
            assert!(rows[0].speedup.is_some());
            assert_eq!(rows[0].ids_differ_at, None);
        }
        other => panic!("{other:?}"),
    }
    match analysis::sampling(r) {
        Some(Outcome::Rows(rows)) => {
            let labels: Vec<&str> = rows.iter().map(|x| x.strategy.as_str()).collect();
            assert_eq!(labels, ["greedy", "T=0.7", "top-k 50", "top-p 0.9"]);
            for x in &rows {
                assert_eq!((x.logits, x.sample_us.n), (49_152, 50));
                assert!(x.share.is_some());
            }
        }
        other => panic!("{other:?}"),
    }
    // The start-up breakdown every engine process reports: `ready` marked by the kit after the
    // load, the first token after it.
    let load = r.report.load.as_ref().unwrap();
    let ready = load
        .phases
        .iter()
        .find(|p| p.name == "ready")
        .expect("ready");
    assert!(
        (ready.at_ms - load.process_start_to_ready_ms).abs() < 1.0,
        "{load:?}"
    );
    assert!(load.first_token_ms.unwrap() > ready.at_ms, "{load:?}");
    assert!(load.main_unix_ns.is_some());
    let md = std::fs::read_to_string(p.run_dir.join("report.md")).unwrap();
    assert!(md.contains("## KV cache on/off") && md.contains("## Sampling overhead"));
    let html = std::fs::read_to_string(p.run_dir.join("index.html")).unwrap();
    assert!(html.contains("id=\"analysis-kv\"") && html.contains("id=\"analysis-sampling\""));
}

/// `--analysis cold-start` with the mock engine: after its run the engine is started once on a
/// "dropped" page cache (a plain file stands in for `/proc/sys/vm/drop_caches`: the harness writes
/// `3` into it, and nothing on the machine changes) and twice warm; each start is broken down
/// into spawn → main, the phases and the first token, and reaches the reports. A drop-caches file
/// that cannot be written is refused before anything runs.
#[test]
fn cold_and_warm_starts_are_broken_down_and_reported() {
    use lab_harness::startup::check_can_drop;
    use lab_results::startup::{Cache, StartSettings};
    let mut p = plan(
        "startup",
        vec![mock(Dtype::F32, "ok")],
        Duration::from_secs(60),
    );
    let fake = p.run_dir.with_extension("drop_caches");
    let _ = std::fs::create_dir_all(fake.parent().unwrap());
    std::fs::write(&fake, "").unwrap();
    let refused = StartSettings {
        cold: 1,
        warm: 0,
        drop_caches_file: Some(fake.join("not-a-dir/drop_caches")),
    };
    let e = check_can_drop(&refused).unwrap_err().to_string();
    assert!(
        e.contains("cannot drop the page cache") && e.contains("needs root"),
        "{e}"
    );

    p.spec.startup = Some(StartSettings {
        cold: 1,
        warm: 2,
        drop_caches_file: Some(fake.clone()),
    });
    check_can_drop(p.spec.startup.as_ref().unwrap()).unwrap();
    let (manifest, results) = lab_harness::bench(&p, &AtomicBool::new(false)).unwrap();
    assert_eq!(manifest.targets[0].status, TargetStatus::Ok);
    assert_eq!(std::fs::read_to_string(&fake).unwrap(), "3\n");
    let s = results[0].startup.as_ref().expect("the starts");
    assert!(s.cold_cache.contains("written to"), "{}", s.cold_cache);
    let caches: Vec<Cache> = s.samples.iter().map(|x| x.cache).collect();
    assert_eq!(caches, [Cache::Cold, Cache::Warm, Cache::Warm]);
    for x in &s.samples {
        assert_eq!(x.error, None);
        assert!(x.spawn_to_main_ms.unwrap() >= 0.0, "{x:?}");
        assert!(x.phases.iter().any(|p| p.name == "ready"), "{x:?}");
        let total = x.spawn_to_first_token_ms().unwrap();
        assert!(total <= x.wall_ms + 5.0, "{x:?}");
    }
    let md = std::fs::read_to_string(p.run_dir.join("report.md")).unwrap();
    assert!(md.contains("## Start-up, broken down"), "{md}");
    assert!(
        md.contains("| cold | 1 |") && md.contains("| warm | 2 |"),
        "{md}"
    );
    let _ = std::fs::remove_file(&fake);
}

/// S3 at C = 100 with every 9th prefill failing, over three runs of the plan (closed loop, then
/// seeded Poisson arrivals): in every run and level, completed + failed + refused = sent, the
/// failed requests are exactly the injected ones, and the statistics say the same.
#[test]
fn s3_at_c100_accounts_for_every_request_with_injected_failures_over_repeated_runs() {
    for arrival in [
        lab_protocol::Arrival::Closed,
        lab_protocol::Arrival::Poisson {
            rate_per_s: 2000.0,
            seed: 7,
        },
    ] {
        let mut t = mock(Dtype::F32, "ok");
        t.launch.env.extend([
            ("MOCK_ENGINE_SLOTS".to_string(), "64".to_string()),
            ("MOCK_ENGINE_SLEEP_US".to_string(), "100".to_string()),
            (
                "MOCK_ENGINE_FAIL_PREFILL_EVERY".to_string(),
                "9".to_string(),
            ),
        ]);
        let mut p = plan("s3-faults", vec![t], Duration::from_secs(120));
        p.spec.scenarios = testkit::ids(&["s3"]);
        p.spec.warmup_iterations = 0;
        p.spec.repeat = 3;
        let mut load = testkit::load::small_load();
        load.concurrency = vec![100];
        load.requests = 300;
        load.max_batch = 64;
        load.arrival = arrival.clone();
        p.spec.load = Some(load);
        let (manifest, res) = lab_harness::bench(&p, &AtomicBool::new(false)).unwrap();
        assert_eq!(res.len(), 3, "{:?}", manifest.targets);
        for r in &res {
            let s3 = r.report.scenarios.iter().find(|s| s.id == "s3").unwrap();
            assert_eq!(s3.points.len(), 1);
            let point = &s3.points[0];
            let (mut completed, mut failed, mut refused) = (0, 0, 0);
            for q in &point.requests {
                match &q.status {
                    RequestStatus::Completed => completed += 1,
                    RequestStatus::Failed { reason } => {
                        assert!(reason.contains("simulated failure of prefill"), "{reason}");
                        failed += 1
                    }
                    RequestStatus::Refused { .. } => refused += 1,
                }
            }
            // One prefill per request, each process counting from 1: 300 / 9 fail.
            assert_eq!(
                (point.requests.len(), completed + failed + refused, failed),
                (300, 300, 33),
                "{arrival:?}, run {:?}",
                r.repetition
            );
            let st = r.stats.iter().find(|s| s.id == "s3").unwrap();
            let c = st.points[0].counts.unwrap();
            assert_eq!(
                (c.total, c.completed, c.failed, c.refused),
                (300, completed, failed, refused)
            );
        }
    }
}
