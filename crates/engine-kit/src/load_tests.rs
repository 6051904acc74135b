//! Tests of the load scheduler with a batch engine whose behaviour is known exactly: the next
//! token of a slot is `(31 * last + 7) % vocab`, the same batched or not.

use lab_protocol::*;

use crate::load::{poisson_arrivals, run_load, BatchEngine, Serial, SERIAL};
use crate::{Engine, EngineResult};

const VOCAB: usize = 101;

fn next(t: u32) -> u32 {
    ((31 * t as usize + 7) % VOCAB) as u32
}

struct Slots {
    slots: Vec<Option<u32>>,
    prefills: u32,
    steps: u32,
    /// Fail these prefills (1-based count).
    fail_prefill: Vec<u32>,
    /// Fail this decode step (1-based).
    fail_step: Option<u32>,
    /// Sleep this long in this prefill (1-based).
    stall: Option<(u32, u64)>,
    widest: usize,
    /// One-sequence mode for `Serial`.
    single: Option<u32>,
}

impl Slots {
    fn new(n: usize) -> Self {
        Slots {
            slots: vec![None; n],
            prefills: 0,
            steps: 0,
            fail_prefill: vec![],
            fail_step: None,
            stall: None,
            widest: 0,
            single: None,
        }
    }
}

fn put(logits: &mut [f32], token: u32) {
    logits[next(token) as usize] = 1.0;
}

impl BatchEngine for Slots {
    fn max_slots(&self) -> usize {
        self.slots.len()
    }
    fn batching(&self) -> String {
        "test".into()
    }
    fn prefill_slot(
        &mut self,
        slot: usize,
        prompt: &[u32],
        logits: &mut Vec<f32>,
    ) -> EngineResult<()> {
        self.prefills += 1;
        if let Some((k, ms)) = self.stall {
            if k == self.prefills {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
        }
        if self.fail_prefill.contains(&self.prefills) {
            return Err("injected prefill failure".into());
        }
        assert!(self.slots[slot].is_none(), "slot {slot} reused while busy");
        let last = *prompt.last().unwrap();
        self.slots[slot] = Some(last);
        logits.clear();
        logits.resize(VOCAB, 0.0);
        put(logits, last);
        Ok(())
    }
    fn decode_slots(&mut self, batch: &[(usize, u32)], logits: &mut Vec<f32>) -> EngineResult<()> {
        self.steps += 1;
        self.widest = self.widest.max(batch.len());
        if self.fail_step == Some(self.steps) {
            return Err("injected step failure".into());
        }
        logits.clear();
        logits.resize(VOCAB * batch.len(), 0.0);
        for (i, &(slot, token)) in batch.iter().enumerate() {
            assert!(self.slots[slot].is_some(), "slot {slot} decoded while free");
            self.slots[slot] = Some(token);
            put(&mut logits[i * VOCAB..(i + 1) * VOCAB], token);
        }
        Ok(())
    }
    fn release_slot(&mut self, slot: usize) {
        self.slots[slot] = None;
    }
}

/// The same rule as a one-sequence engine (served through `Serial`).
impl Engine for Slots {
    fn reset(&mut self) -> EngineResult<()> {
        self.single = None;
        Ok(())
    }
    fn prefill(&mut self, prompt: &[u32], logits: &mut Vec<f32>) -> EngineResult<()> {
        self.prefills += 1;
        if self.fail_prefill.contains(&self.prefills) {
            return Err("injected prefill failure".into());
        }
        self.single = prompt.last().copied();
        logits.clear();
        logits.resize(VOCAB, 0.0);
        put(logits, *prompt.last().unwrap());
        Ok(())
    }
    fn decode(&mut self, token: u32, logits: &mut Vec<f32>) -> EngineResult<()> {
        assert!(self.single.is_some());
        logits.clear();
        logits.resize(VOCAB, 0.0);
        put(logits, token);
        Ok(())
    }
}

fn prompts(lengths: &[usize]) -> Vec<Prompt> {
    lengths
        .iter()
        .enumerate()
        .map(|(i, &n)| Prompt {
            name: format!("q{i}"),
            token_ids: (0..n as u32).map(|t| t * 3 + i as u32).collect(),
            forced_token_ids: vec![],
        })
        .collect()
}

fn scenario(
    kind: ScenarioKind,
    prompts: Vec<Prompt>,
    new_tokens: u32,
    load: Load,
) -> ScenarioRequest {
    ScenarioRequest {
        id: "load".into(),
        kind,
        prompts,
        generation: GenerationSettings {
            max_new_tokens: new_tokens,
            stop_at_eos: false,
            eos_token_ids: vec![],
            sampling: Sampling::Greedy,
            kv_cache: true,
        },
        warmup_iterations: 0,
        iterations: 1,
        min_duration_ms: 0,
        max_duration_ms: None,
        load: Some(load),
        sampling_overhead: None,
        micro: None,
        lora: None,
    }
}

fn closed(concurrency: &[u32], requests: u32, max_batch: u32) -> Load {
    Load::Concurrent {
        concurrency: concurrency.to_vec(),
        arrival: Arrival::Closed,
        requests,
        max_batch,
    }
}

fn expected(prompt: &Prompt, n: u32) -> Vec<u32> {
    let mut t = next(*prompt.token_ids.last().unwrap());
    let mut out = vec![t];
    while out.len() < n as usize {
        t = next(t);
        out.push(t);
    }
    out
}

#[test]
fn every_request_at_c100_is_accounted_for_and_correct() {
    let ps = prompts(&[3, 9, 5, 17]);
    let sc = scenario(
        ScenarioKind::ConcurrentLoad,
        ps.clone(),
        6,
        closed(&[1, 10, 100], 100, 32),
    );
    let mut engine = Slots::new(64);
    let report = run_load(&mut engine, &sc);
    assert_eq!(report.batching.as_deref(), Some("test"));
    assert_eq!(report.points.len(), 3);
    for p in &report.points {
        assert_eq!(p.requests.len(), 100, "level {}", p.level);
        assert!(p.error.is_none());
        for r in &p.requests {
            assert_eq!(r.status, RequestStatus::Completed, "{r:?}");
            assert_eq!(r.new_tokens, 6);
            let (s, a, f, d) = (
                r.submit_ns,
                r.admit_ns.unwrap(),
                r.first_token_ns.unwrap(),
                r.done_ns.unwrap(),
            );
            assert!(s <= a && a <= f && f <= d, "{r:?}");
        }
        // Every prompt's output is what the rule gives, batched or not.
        assert!(p.deterministic);
        for o in &p.outputs {
            let prompt = ps.iter().find(|q| q.name == o.prompt).unwrap();
            assert_eq!(o.token_ids, expected(prompt, 6));
        }
        // The batch never exceeds the level, the request's max batch or the slots.
        assert!(p.max_active <= p.level.min(32), "{}", p.max_active);
    }
    assert_eq!(report.points[0].max_active, 1);
    assert_eq!(report.points[2].max_active, 32);
    assert!(
        engine.slots.iter().all(Option::is_none),
        "a slot was never released"
    );
    // Closed loop: at C = 10 each client has at most one request in flight.
    let p = &report.points[1];
    for c in 0..10 {
        let mine: Vec<_> = p.requests.iter().filter(|r| r.client == c).collect();
        for w in mine.windows(2) {
            assert!(
                w[1].submit_ns >= w[0].done_ns.unwrap(),
                "client {c} overlapped"
            );
        }
    }
}

#[test]
fn injected_failures_fail_only_their_requests() {
    let ps = prompts(&[4, 6]);
    let sc = scenario(ScenarioKind::ConcurrentLoad, ps, 5, closed(&[4], 20, 8));
    let mut engine = Slots::new(8);
    engine.fail_prefill = vec![3, 11];
    engine.stall = Some((5, 30));
    let report = run_load(&mut engine, &sc);
    let p = &report.points[0];
    assert_eq!(p.requests.len(), 20);
    let failed: Vec<_> = p
        .requests
        .iter()
        .filter(|r| matches!(&r.status, RequestStatus::Failed { reason } if reason.contains("injected prefill failure")))
        .collect();
    assert_eq!(failed.len(), 2, "{:?}", p.requests);
    assert_eq!(
        p.requests
            .iter()
            .filter(|r| r.status == RequestStatus::Completed)
            .count(),
        18
    );
    // The stalled prefill delays the others' tokens but loses nothing.
    assert!(p.requests.iter().all(|r| r.done_ns.is_some()));

    // A failed decode step fails the requests in that step; the rest complete.
    let mut engine = Slots::new(8);
    engine.fail_step = Some(2);
    let sc = scenario(
        ScenarioKind::ConcurrentLoad,
        prompts(&[4, 6]),
        5,
        closed(&[4], 12, 8),
    );
    let p = &run_load(&mut engine, &sc).points[0];
    let step_failed = p
        .requests
        .iter()
        .filter(|r| matches!(&r.status, RequestStatus::Failed { reason } if reason.contains("injected step failure")))
        .count();
    assert!((1..=4).contains(&step_failed), "{step_failed}");
    assert_eq!(
        p.requests
            .iter()
            .filter(|r| r.status == RequestStatus::Completed)
            .count()
            + step_failed,
        12
    );
    assert!(engine.slots.iter().all(Option::is_none));
}

#[test]
fn serial_engines_serve_one_at_a_time_with_the_same_tokens() {
    let ps = prompts(&[3, 8, 5]);
    let sc = scenario(
        ScenarioKind::ConcurrentLoad,
        ps.clone(),
        4,
        closed(&[1, 5], 9, 64),
    );
    let mut batched = Slots::new(16);
    let b = run_load(&mut batched, &sc);
    let mut one = Slots::new(1);
    let s = run_load(&mut Serial(&mut one as &mut dyn Engine, None), &sc);
    assert_eq!(s.batching.as_deref(), Some(SERIAL));
    for (bp, sp) in b.points.iter().zip(&s.points) {
        assert_eq!(sp.max_active, 1);
        assert_eq!(bp.outputs, sp.outputs);
        assert_eq!(sp.requests.len(), 9);
    }
    assert_eq!(b.points[1].max_active, 5);
}

#[test]
fn static_batches_decode_in_lock_step() {
    let ps = prompts(&[6, 6, 6, 6, 6]);
    let sc = scenario(
        ScenarioKind::BatchedThroughput,
        ps.clone(),
        7,
        Load::Batches {
            batch_sizes: vec![1, 4],
            duration_ms: 0,
        },
    );
    let mut engine = Slots::new(64);
    let report = run_load(&mut engine, &sc);
    let p4 = &report.points[1];
    assert_eq!(p4.level, 4);
    assert_eq!(p4.max_active, 4);
    assert_eq!(p4.batches.len(), 1);
    let b = &p4.batches[0];
    assert_eq!((b.sequences, b.prompt_tokens, b.new_tokens), (4, 24, 28));
    assert_eq!(b.step_ns.len(), 6);
    assert_eq!(engine.widest, 4);
    assert_eq!(p4.outputs.len(), 4);
    for o in &p4.outputs {
        let prompt = ps.iter().find(|q| q.name == o.prompt).unwrap();
        assert_eq!(o.token_ids, expected(prompt, 7));
    }
    // A serial engine runs the batch as four one-sequence chunks.
    let mut one = Slots::new(1);
    let s = run_load(&mut Serial(&mut one as &mut dyn Engine, None), &sc);
    assert_eq!(s.points[1].batches.len(), 4);
    assert_eq!(s.points[1].max_active, 1);
    assert_eq!(s.points[1].outputs, p4.outputs);
}

#[test]
fn open_loop_arrivals_are_seeded_and_requests_wait_their_turn() {
    let a = poisson_arrivals(50.0, 7, 200);
    assert_eq!(a, poisson_arrivals(50.0, 7, 200));
    assert_ne!(a, poisson_arrivals(50.0, 8, 200));
    assert!(a.windows(2).all(|w| w[0] <= w[1]));
    // The mean gap is about 1 / rate (20 ms; 200 draws: within 25 %).
    let mean_ms = *a.last().unwrap() as f64 / 200.0 / 1e6;
    assert!((15.0..25.0).contains(&mean_ms), "{mean_ms}");

    let sc = scenario(
        ScenarioKind::ConcurrentLoad,
        prompts(&[3, 4]),
        3,
        Load::Concurrent {
            concurrency: vec![2],
            arrival: Arrival::Poisson {
                rate_per_s: 400.0,
                seed: 1,
            },
            requests: 12,
            max_batch: 8,
        },
    );
    let mut engine = Slots::new(8);
    let p = &run_load(&mut engine, &sc).points[0];
    let arrivals = poisson_arrivals(400.0, 1, 12);
    for (r, at) in p.requests.iter().zip(&arrivals) {
        // Stamped with the arrival time, served no earlier.
        assert_eq!(r.submit_ns, *at);
        assert!(r.admit_ns.unwrap() >= *at);
        assert_eq!(r.status, RequestStatus::Completed);
    }
    assert!(p.max_active <= 2);
}

#[test]
fn load_settings_are_checked_before_loading() {
    let base = scenario(
        ScenarioKind::ConcurrentLoad,
        prompts(&[3]),
        3,
        closed(&[1], 1, 1),
    );
    let check = |s: &ScenarioRequest| {
        let mut req = Request {
            schema_version: SCHEMA_VERSION,
            model: ModelSpec {
                name: "m".into(),
                dir: "/m".into(),
                format: WeightFormat::Gguf,
                dtype: Dtype::Q4_1,
                synthetic: false,
            },
            device: Device::Cpu,
            threads: Some(1),
            scenarios: vec![],
        };
        req.scenarios.push(s.clone());
        crate::parse_request(&serde_json::to_string(&req).unwrap())
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert!(check(&base).is_ok());
    let mut s = base.clone();
    s.load = Some(closed(&[0], 1, 1));
    assert!(check(&s).unwrap_err().contains("load.concurrency"));
    s.load = Some(Load::Concurrent {
        concurrency: vec![1],
        arrival: Arrival::Poisson {
            rate_per_s: 0.0,
            seed: 0,
        },
        requests: 1,
        max_batch: 1,
    });
    assert!(check(&s).unwrap_err().contains("rate_per_s"));
    s.load = None;
    assert!(check(&s).unwrap_err().contains("needs `load` settings"));
    let mut b = scenario(
        ScenarioKind::BatchedThroughput,
        prompts(&[3, 4]),
        3,
        Load::Batches {
            batch_sizes: vec![2],
            duration_ms: 0,
        },
    );
    assert!(check(&b).unwrap_err().contains("equal length"));
    b.prompts = prompts(&[3, 3]);
    assert!(check(&b).is_ok());
    b.load = Some(Load::Batches {
        batch_sizes: vec![0],
        duration_ms: 0,
    });
    assert!(check(&b).unwrap_err().contains("batch_sizes"));
}

/// A library-owned generation loop: whole sequences only (the kit's step-wise loop inside).
struct Whole(Slots);

impl crate::SequenceEngine for Whole {
    fn run_sequence(
        &mut self,
        generation: &GenerationSettings,
        prompt: &[u32],
        forced: Option<&[u32]>,
    ) -> Result<crate::SequenceRun, crate::KitError> {
        crate::Stepwise::new(&mut self.0).run_sequence(generation, prompt, forced)
    }
}

#[test]
fn sequence_engines_are_served_serially_with_their_own_timestamps() {
    let ps = prompts(&[3, 8, 5]);
    let sc = scenario(
        ScenarioKind::ConcurrentLoad,
        ps.clone(),
        4,
        closed(&[1, 3], 9, 64),
    );
    let mut whole = Whole(Slots::new(1));
    whole.0.fail_prefill = vec![4];
    let report = crate::scenario::run_load_scenario(&mut whole, &sc);
    assert_eq!(report.batching.as_deref(), Some(SERIAL));
    let mut batched = Slots::new(8);
    let b = run_load(&mut batched, &sc);
    for (p, bp) in report.points.iter().zip(&b.points) {
        assert_eq!(p.requests.len(), 9);
        assert_eq!(p.max_active, 1);
        assert_eq!(p.outputs, bp.outputs);
        for r in &p.requests {
            if r.status == RequestStatus::Completed {
                let (s, a, f, d) = (
                    r.submit_ns,
                    r.admit_ns.unwrap(),
                    r.first_token_ns.unwrap(),
                    r.done_ns.unwrap(),
                );
                assert!(s <= a && a <= f && f <= d, "{r:?}");
                assert_eq!(r.new_tokens, 4);
            }
        }
    }
    // The fourth sequence of the process (C = 1's fourth request) failed; the rest completed.
    let failed: Vec<_> = report.points[0]
        .requests
        .iter()
        .filter(|r| matches!(r.status, RequestStatus::Failed { .. }))
        .collect();
    assert_eq!(failed.len(), 1);
    // At C = 3 every client waits for its own previous request.
    let p = &report.points[1];
    for c in 0..3 {
        let mine: Vec<_> = p.requests.iter().filter(|r| r.client == c).collect();
        assert_eq!(mine.len(), 3);
        for w in mine.windows(2) {
            assert!(w[1].submit_ns >= w[0].done_ns.unwrap());
        }
    }

    let s2 = scenario(
        ScenarioKind::BatchedThroughput,
        prompts(&[6, 6, 6]),
        5,
        Load::Batches {
            batch_sizes: vec![3],
            duration_ms: 0,
        },
    );
    let r = crate::scenario::run_load_scenario(&mut Whole(Slots::new(1)), &s2);
    let p = &r.points[0];
    assert_eq!(p.batches.len(), 3);
    assert!(p
        .batches
        .iter()
        .all(|b| b.sequences == 1 && b.new_tokens == 5 && b.step_ns.len() == 4));
}

/// A lock-step engine (like candle's batched Llama): one shared position, the whole batch
/// prefilled together, every step over every sequence of the batch.
struct LockSteps {
    inner: Slots,
    /// Sequences of the current batch.
    batch: usize,
    batched_prefills: u32,
}

impl BatchEngine for LockSteps {
    fn max_slots(&self) -> usize {
        8
    }
    fn batching(&self) -> String {
        "lock-step test".into()
    }
    fn prefill_slot(&mut self, _: usize, _: &[u32], _: &mut Vec<f32>) -> EngineResult<()> {
        Err("a lock-step engine prefills whole batches".into())
    }
    fn prefill_batch(&mut self, prompts: &[&[u32]], logits: &mut Vec<f32>) -> EngineResult<()> {
        if prompts.iter().any(|p| p.len() != prompts[0].len()) {
            return Err("unequal prompt lengths".into());
        }
        self.batched_prefills += 1;
        self.batch = prompts.len();
        self.inner.slots.iter_mut().for_each(|s| *s = None);
        let mut all = Vec::new();
        for (slot, p) in prompts.iter().enumerate() {
            self.inner.prefill_slot(slot, p, logits)?;
            all.extend_from_slice(logits);
        }
        *logits = all;
        Ok(())
    }
    fn decode_slots(&mut self, batch: &[(usize, u32)], logits: &mut Vec<f32>) -> EngineResult<()> {
        assert_eq!(
            batch.len(),
            self.batch,
            "a lock-step step covers the whole batch"
        );
        assert!(batch.iter().enumerate().all(|(i, &(s, _))| i == s));
        self.inner.decode_slots(batch, logits)
    }
    fn release_slot(&mut self, slot: usize) {
        self.inner.release_slot(slot)
    }
    fn lock_step(&self) -> Option<String> {
        Some("one shared position".into())
    }
}

impl Engine for LockSteps {
    fn reset(&mut self) -> EngineResult<()> {
        self.inner.reset()
    }
    fn prefill(&mut self, prompt: &[u32], logits: &mut Vec<f32>) -> EngineResult<()> {
        Engine::prefill(&mut self.inner, prompt, logits)
    }
    fn decode(&mut self, token: u32, logits: &mut Vec<f32>) -> EngineResult<()> {
        Engine::decode(&mut self.inner, token, logits)
    }
    fn batch(&mut self) -> Option<&mut dyn BatchEngine> {
        Some(self)
    }
}

#[test]
fn lock_step_engines_batch_s2_and_serve_s3_serially_saying_why() {
    use crate::SequenceEngine;
    let mut engine = LockSteps {
        inner: Slots::new(8),
        batch: 0,
        batched_prefills: 0,
    };
    let ps = prompts(&[5, 5, 5, 5]);
    let s2 = scenario(
        ScenarioKind::BatchedThroughput,
        ps.clone(),
        6,
        Load::Batches {
            batch_sizes: vec![4, 12],
            duration_ms: 0,
        },
    );
    let report = crate::Stepwise::new(&mut engine)
        .run_load(&s2)
        .expect("the step-wise adapter runs every load scenario");
    assert_eq!(report.batching.as_deref(), Some("lock-step test"));
    let p4 = &report.points[0];
    assert_eq!((p4.max_active, p4.batches.len()), (4, 1));
    assert_eq!(p4.batches[0].new_tokens, 24);
    for o in &p4.outputs {
        let prompt = ps.iter().find(|q| q.name == o.prompt).unwrap();
        assert_eq!(o.token_ids, expected(prompt, 6));
    }
    // 12 sequences on an engine of 8: one batch of 8 and one of 4, both in lock-step.
    let p12 = &report.points[1];
    assert_eq!(p12.error, None);
    let sizes: Vec<u32> = p12.batches.iter().map(|b| b.sequences).collect();
    assert_eq!(sizes, [8, 4]);
    assert_eq!(engine.batched_prefills, 3);

    // S3: prompts of any length at any time, served one at a time with the reason.
    let s3 = scenario(
        ScenarioKind::ConcurrentLoad,
        prompts(&[3, 9, 4]),
        5,
        closed(&[1, 3], 6, 64),
    );
    let report = crate::Stepwise::new(&mut engine)
        .run_load(&s3)
        .expect("the step-wise adapter runs every load scenario");
    assert_eq!(
        report.batching.as_deref(),
        Some("none (serial): one shared position")
    );
    assert!(report.points.iter().all(|p| p.max_active == 1
        && p.error.is_none()
        && p.requests.len() == 6
        && p.requests
            .iter()
            .all(|r| r.status == RequestStatus::Completed)));
    assert_eq!(engine.batched_prefills, 3);

    // Unequal lengths in one S2 batch fail that batch size with the engine's reason; the next
    // size still runs.
    let s2 = scenario(
        ScenarioKind::BatchedThroughput,
        prompts(&[5, 6]),
        3,
        Load::Batches {
            batch_sizes: vec![2, 1],
            duration_ms: 0,
        },
    );
    let report = crate::Stepwise::new(&mut engine)
        .run_load(&s2)
        .expect("the step-wise adapter runs every load scenario");
    assert!(report.points[0]
        .error
        .as_deref()
        .is_some_and(|e| e.contains("unequal prompt lengths")));
    assert_eq!(report.points[1].error, None);
    assert_eq!(report.points[1].batches.len(), 1);
}

#[test]
fn iterations_and_levels_are_placed_on_the_unix_clock_in_order() {
    // What the harness maps GPU telemetry onto: every measured iteration and every load level
    // has a Unix start inside the run's own wall-clock span, in the order they ran.
    let before = crate::unix_now_ns();
    let ps = prompts(&[3, 8, 5]);
    let s2 = scenario(
        ScenarioKind::BatchedThroughput,
        vec![ps[0].clone()],
        4,
        Load::Batches {
            batch_sizes: vec![1, 4],
            duration_ms: 0,
        },
    );
    let s3 = scenario(
        ScenarioKind::ConcurrentLoad,
        ps.clone(),
        4,
        closed(&[1, 5], 9, 64),
    );
    let mut engine = Slots::new(16);
    let r2 = run_load(&mut engine, &s2);
    let r3 = run_load(&mut engine, &s3);
    let mut one = Slots::new(1);
    let r3s = run_load(&mut Serial(&mut one as &mut dyn Engine, None), &s3);
    let s1 = crate::run_scenario(&mut one, &s1_of(&ps));
    let after = crate::unix_now_ns();
    let mut stamps = Vec::new();
    for p in r2.points.iter().chain(&r3.points).chain(&r3s.points) {
        stamps.push(p.start_unix_ns.expect("every level is stamped"));
    }
    for p in &s1.prompts {
        for s in &p.samples {
            stamps.push(s.start_unix_ns.expect("every iteration is stamped"));
        }
    }
    assert_eq!(stamps.len(), 6 + 3 * 3);
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{stamps:?}");
    assert!(before <= stamps[0] && *stamps.last().unwrap() <= after);
}

/// S1 over `ps`, three measured iterations each.
fn s1_of(ps: &[Prompt]) -> ScenarioRequest {
    let mut s = scenario(
        ScenarioKind::SingleRequestLatency,
        ps.to_vec(),
        4,
        closed(&[1], 1, 1),
    );
    s.load = None;
    s.iterations = 3;
    s
}
