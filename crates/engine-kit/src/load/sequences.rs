//! The load scenarios of an engine whose library owns the generation loop: one whole
//! sequence at a time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use lab_protocol::{
    Arrival, BatchSample, LoadPoint, RequestRecord, RequestStatus, ScenarioReport, ScenarioRequest,
};

use super::*;
use crate::rss::PeakRss;

/// The load scenarios for a [`SequenceEngine`] (its library owns the generation loop): served one
/// whole sequence at a time, reported as [`SERIAL`]. Each sequence's timestamps come from its own
/// sample: the first token at `ttft_ns` after it started, each later one at its inter-token gap.
pub fn run_load_sequences<S: crate::SequenceEngine + ?Sized>(
    engine: &mut S,
    scenario: &ScenarioRequest,
) -> ScenarioReport {
    each_level(scenario, SERIAL.to_string(), |level| match level {
        Level::Batch { size, duration_ms } => sequence_batches(engine, scenario, size, duration_ms),
        Level::Clients {
            c, arrival, total, ..
        } => sequence_requests(engine, scenario, c, arrival, total as usize),
    })
}

/// A level with nothing measured yet.
pub fn empty_point(level: u32) -> LoadPoint {
    LoadPoint {
        level,
        max_active: 0,
        batches: Vec::new(),
        requests: Vec::new(),
        outputs: Vec::new(),
        deterministic: true,
        peak_rss_bytes: None,
        error: None,
        start_unix_ns: None,
    }
}

/// S2 for a sequence engine: the batch's sequences one after another, one sample each.
fn sequence_batches<S: crate::SequenceEngine + ?Sized>(
    engine: &mut S,
    scenario: &ScenarioRequest,
    b: u32,
    duration_ms: u64,
) -> LoadPoint {
    let rss = PeakRss::start();
    let mut point = empty_point(b);
    let mut outputs = Outputs::new();
    let mut start = Instant::now();
    'batches: for i in 0u32.. {
        let warmup = i < scenario.warmup_iterations;
        if i == scenario.warmup_iterations {
            start = Instant::now();
        }
        if !warmup && !point.batches.is_empty() && ns(start) >= duration_ms * 1_000_000 {
            break;
        }
        for p in scenario.prompts.iter().cycle().take(b as usize) {
            let start_ns = ns(start);
            match engine.run_sequence(&scenario.generation, &p.token_ids, None) {
                Ok(run) => {
                    point.max_active = 1;
                    outputs.record(&p.name, &run.tokens);
                    if !warmup {
                        point.batches.push(BatchSample {
                            start_ns,
                            sequences: 1,
                            prompt_tokens: p.token_ids.len() as u32,
                            prefill_ns: run.sample.ttft_ns,
                            step_ns: run.sample.inter_token_ns,
                            new_tokens: run.tokens.len() as u32,
                        });
                    }
                }
                Err(e) => {
                    point.error = Some(format!("batch {}: {e}", i + 1));
                    break 'batches;
                }
            }
        }
        eprintln!(
            "progress: {} batch size {b}: {} {} ({:.1} s measured, one sequence at a time)",
            scenario.id,
            if warmup { "warm-up batch" } else { "batch" },
            if warmup {
                i + 1
            } else {
                i + 1 - scenario.warmup_iterations
            },
            if warmup { 0.0 } else { ns(start) as f64 / 1e9 }
        );
    }
    point.deterministic = outputs.deterministic;
    point.outputs = outputs.sorted();
    point.peak_rss_bytes = rss.finish();
    point.start_unix_ns = Some(crate::unix_ns_of(start));
    point
}

/// S3 for a sequence engine: requests arrive as for every engine (closed loop or seeded Poisson)
/// and wait in a queue; the engine serves them one whole sequence at a time.
fn sequence_requests<S: crate::SequenceEngine + ?Sized>(
    engine: &mut S,
    scenario: &ScenarioRequest,
    c: u32,
    arrival: &Arrival,
    total: usize,
) -> LoadPoint {
    let rss = PeakRss::start();
    let mut point = empty_point(c);
    let mut outputs = Outputs::new();
    let arrivals = match *arrival {
        Arrival::Closed => None,
        Arrival::Poisson { rate_per_s, seed } => Some(poisson_arrivals(rate_per_s, seed, total)),
    };
    // (client, submit time) of every submitted request not yet served, in order.
    let mut queue: VecDeque<(usize, u32, u64)> = VecDeque::new();
    let origin = Instant::now();
    let mut submitted = 0usize;
    let submit = |queue: &mut VecDeque<(usize, u32, u64)>, submitted: &mut usize, client, at| {
        queue.push_back((*submitted, client, at));
        *submitted += 1;
    };
    if arrivals.is_none() {
        for client in 0..(c as usize).min(total) {
            submit(&mut queue, &mut submitted, client as u32, 0);
        }
    }
    while point.requests.len() < total {
        if let Some(a) = &arrivals {
            while submitted < total && a[submitted] <= ns(origin) {
                let (at, client) = (a[submitted], submitted as u32);
                submit(&mut queue, &mut submitted, client, at);
            }
            if queue.is_empty() {
                let next = a[submitted];
                std::thread::sleep(Duration::from_nanos(next.saturating_sub(ns(origin))));
                continue;
            }
        }
        let Some((index, client, submit_ns)) = queue.pop_front() else {
            break;
        };
        let p = &scenario.prompts[index % scenario.prompts.len()];
        let admit_ns = ns(origin);
        let mut record = RequestRecord {
            client,
            prompt: p.name.clone(),
            prompt_tokens: p.token_ids.len() as u32,
            submit_ns,
            admit_ns: Some(admit_ns),
            first_token_ns: None,
            done_ns: None,
            new_tokens: 0,
            status: RequestStatus::Completed,
        };
        match engine.run_sequence(&scenario.generation, &p.token_ids, None) {
            Ok(run) => {
                point.max_active = 1;
                record.first_token_ns = Some(admit_ns + run.sample.ttft_ns);
                record.done_ns = Some(admit_ns + run.sample.e2e_ns);
                record.new_tokens = run.tokens.len() as u32;
                outputs.record(&p.name, &run.tokens);
            }
            Err(e) => {
                record.done_ns = Some(ns(origin));
                record.status = RequestStatus::Failed {
                    reason: e.to_string(),
                };
            }
        }
        let done = record.done_ns.unwrap_or(admit_ns);
        point.requests.push(record);
        if arrivals.is_none() && submitted < total {
            submit(&mut queue, &mut submitted, client, done);
        }
    }
    // Requests are recorded in service order; keep them in submission order like the scheduler.
    point.requests.sort_by_key(|r| (r.submit_ns, r.client));
    point.deterministic = outputs.deterministic;
    point.outputs = outputs.sorted();
    point.peak_rss_bytes = rss.finish();
    point.start_unix_ns = Some(crate::unix_ns_of(origin));
    point
}
