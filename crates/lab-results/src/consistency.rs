//! Whether a report is what its request asked for. An engine that exits 0 with a valid report
//! can still lie: drop a scenario, answer another, generate fewer tokens than asked, or time
//! fewer tokens than it generated. Such a report is kept (as evidence) but its target is
//! failed, with the first problem as the cause; nothing of it reaches a baseline as a success.

use lab_protocol::{
    Load, Report, Request, RequestStatus, ScenarioKind, ScenarioReport, ScenarioRequest,
};

/// Every way `report` departs from `request`, one line each (empty: consistent). A report with
/// a fatal `error` is not checked further (the error is its cause); a scenario with an error
/// or that is unsupported only needs to be present.
pub fn problems(request: &Request, report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    if report.error.is_some() {
        return out;
    }
    for asked in &request.scenarios {
        let Some(got) = report.scenarios.iter().find(|s| s.id == asked.id) else {
            out.push(format!("scenario {} is missing from the report", asked.id));
            continue;
        };
        if got.kind != asked.kind {
            out.push(format!(
                "scenario {}: reported as {:?}, asked as {:?}",
                asked.id, got.kind, asked.kind
            ));
            continue;
        }
        if got.error.is_some() || got.unsupported.is_some() {
            continue;
        }
        match (&asked.kind, &asked.load) {
            (ScenarioKind::BatchedThroughput, Some(Load::Batches { batch_sizes, .. })) => {
                out.extend(batches(asked, got, batch_sizes));
                continue;
            }
            (
                ScenarioKind::ConcurrentLoad,
                Some(Load::Concurrent {
                    concurrency,
                    requests,
                    ..
                }),
            ) => {
                out.extend(concurrent(asked, got, concurrency, *requests));
                continue;
            }
            (ScenarioKind::SamplingOverhead, _) => {
                out.extend(sampling(asked, got));
                continue;
            }
            (ScenarioKind::SingleRequestLatency | ScenarioKind::TeacherForced, _) => {}
            _ => continue,
        }
        if got.prompts.len() != asked.prompts.len() {
            out.push(format!(
                "scenario {}: {} prompts reported, {} asked",
                asked.id,
                got.prompts.len(),
                asked.prompts.len()
            ));
        }
        let g = &asked.generation;
        for p in &got.prompts {
            let generated = p.generated_token_ids.len();
            // (Teacher forcing generates as many tokens as it is fed, whatever the setting.)
            let fixed_length = asked.kind == ScenarioKind::SingleRequestLatency && !g.stop_at_eos;
            if fixed_length && generated != g.max_new_tokens as usize {
                out.push(format!(
                    "scenario {} prompt {}: {generated} tokens generated, {} asked",
                    asked.id, p.prompt, g.max_new_tokens
                ));
            }
            for (i, s) in p.samples.iter().enumerate() {
                let gaps_ok =
                    s.new_tokens == 0 || s.inter_token_ns.len() + 1 == s.new_tokens as usize;
                if s.new_tokens as usize != generated || !gaps_ok || s.ttft_ns > s.e2e_ns {
                    out.push(format!(
                        "scenario {} prompt {} iteration {}: {} tokens timed with {} gaps (TTFT {} ns, end-to-end {} ns) for {generated} generated",
                        asked.id, p.prompt, i + 1, s.new_tokens, s.inter_token_ns.len(), s.ttft_ns, s.e2e_ns
                    ));
                    break;
                }
            }
        }
    }
    for got in &report.scenarios {
        if !request.scenarios.iter().any(|a| a.id == got.id) {
            out.push(format!("scenario {} was not asked for", got.id));
        }
    }
    out
}

/// The levels a load scenario reported against the ones asked (each once, in order); `None`
/// when they match.
fn levels(asked: &ScenarioRequest, got: &ScenarioReport, want: &[u32]) -> Option<String> {
    let reported: Vec<u32> = got.points.iter().map(|p| p.level).collect();
    (reported != want).then(|| {
        format!(
            "scenario {}: levels {reported:?} reported, {want:?} asked",
            asked.id
        )
    })
}

/// S2: every asked batch size reported; each batch of a level holds that many sequences (or
/// fewer: an engine that cannot batch runs them one at a time), one decode step per token after
/// the first, every sequence's tokens counted, in time order.
fn batches(asked: &ScenarioRequest, got: &ScenarioReport, sizes: &[u32]) -> Vec<String> {
    let mut out: Vec<String> = levels(asked, got, sizes).into_iter().collect();
    let n = asked.generation.max_new_tokens;
    for p in got.points.iter().filter(|p| p.error.is_none()) {
        let at = |what: String| format!("scenario {} batch size {}: {what}", asked.id, p.level);
        if p.batches.is_empty() {
            out.push(at("no batch measured".into()));
            continue;
        }
        let mut last_start = 0;
        for (i, b) in p.batches.iter().enumerate() {
            let steps_ok = b.step_ns.len() + 1 == n as usize;
            // An engine that cannot batch serves a level one sequence at a time.
            let size_ok = (1..=p.level).contains(&b.sequences);
            if !size_ok || !steps_ok || b.new_tokens != b.sequences * n {
                out.push(at(format!(
                    "batch {}: {} sequences, {} decode steps, {} tokens for {n} tokens a sequence",
                    i + 1,
                    b.sequences,
                    b.step_ns.len(),
                    b.new_tokens
                )));
                break;
            }
            if b.start_ns < last_start {
                out.push(at(format!(
                    "batch {} starts before the one before it",
                    i + 1
                )));
                break;
            }
            last_start = b.start_ns;
        }
    }
    out
}

/// S3: every asked concurrency reported with every request accounted for (the setting's count,
/// never fewer than the level), each request's timestamps in order, and a completed one with
/// its first token, its end and (at fixed length) every token asked.
fn concurrent(
    asked: &ScenarioRequest,
    got: &ScenarioReport,
    levels_asked: &[u32],
    requests: u32,
) -> Vec<String> {
    let mut out: Vec<String> = levels(asked, got, levels_asked).into_iter().collect();
    let g = &asked.generation;
    for p in got.points.iter().filter(|p| p.error.is_none()) {
        let at = |what: String| format!("scenario {} concurrency {}: {what}", asked.id, p.level);
        let want = requests.max(p.level) as usize;
        if p.requests.len() != want {
            out.push(at(format!(
                "{} requests recorded, {want} sent",
                p.requests.len()
            )));
        }
        if let Some(problem) = p
            .requests
            .iter()
            .enumerate()
            .find_map(|(i, r)| request(g, i, r))
        {
            out.push(at(problem));
        }
    }
    out
}

/// What is wrong with one S3 request record, if anything.
fn request(
    g: &lab_protocol::GenerationSettings,
    i: usize,
    r: &lab_protocol::RequestRecord,
) -> Option<String> {
    let times = [Some(r.submit_ns), r.admit_ns, r.first_token_ns, r.done_ns];
    let present: Vec<u64> = times.iter().flatten().copied().collect();
    if present.windows(2).any(|w| w[0] > w[1]) {
        return Some(format!(
            "request {}: timestamps out of order (submit {}, admit {:?}, first token {:?}, done {:?})",
            i + 1,
            r.submit_ns,
            r.admit_ns,
            r.first_token_ns,
            r.done_ns
        ));
    }
    if r.status == RequestStatus::Completed {
        if r.first_token_ns.is_none() || r.done_ns.is_none() {
            return Some(format!(
                "request {}: completed without a first token or an end",
                i + 1
            ));
        }
        if !g.stop_at_eos && r.new_tokens != g.max_new_tokens {
            return Some(format!(
                "request {}: completed with {} tokens, {} asked",
                i + 1,
                r.new_tokens,
                g.max_new_tokens
            ));
        }
    }
    None
}

/// The sampling analysis: one timing per asked strategy, in order, each with every selection.
fn sampling(asked: &ScenarioRequest, got: &ScenarioReport) -> Vec<String> {
    let Some(o) = &asked.sampling_overhead else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let strategies: Vec<_> = got.sampling.iter().map(|t| &t.sampling).collect();
    if strategies != o.strategies.iter().collect::<Vec<_>>() {
        out.push(format!(
            "scenario {}: {} strategies reported, {} asked (or in another order)",
            asked.id,
            got.sampling.len(),
            o.strategies.len()
        ));
    }
    for t in &got.sampling {
        if t.sample_ns.len() != o.samples as usize {
            out.push(format!(
                "scenario {}: {:?} timed {} selections, {} asked",
                asked.id,
                t.sampling,
                t.sample_ns.len(),
                o.samples
            ));
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::fixture::{load_scenarios, report_for_tests, with_analyses};
    use lab_protocol::{
        Arrival, Device, Dtype, GenerationSettings, ModelSpec, Sampling, SamplingOverhead,
        WeightFormat, SCHEMA_VERSION,
    };

    fn scenario(id: &str, kind: ScenarioKind, tokens: u32) -> ScenarioRequest {
        ScenarioRequest {
            id: id.into(),
            kind,
            prompts: vec![],
            generation: GenerationSettings {
                max_new_tokens: tokens,
                stop_at_eos: false,
                eos_token_ids: vec![2],
                sampling: Sampling::Greedy,
                kv_cache: true,
            },
            warmup_iterations: 0,
            iterations: 1,
            min_duration_ms: 0,
            max_duration_ms: None,
            load: None,
            sampling_overhead: None,
            micro: None,
            lora: None,
        }
    }

    /// The fixture's S2 (batch size 2, 4 tokens), S3 (levels 1 and 2, 4 tokens) and sampling
    /// reports, and a request for them.
    fn asked_and_answered() -> (Request, Report) {
        let mut s2 = scenario("s2", ScenarioKind::BatchedThroughput, 4);
        s2.load = Some(Load::Batches {
            batch_sizes: vec![2],
            duration_ms: 100,
        });
        let mut s3 = scenario("s3", ScenarioKind::ConcurrentLoad, 4);
        s3.load = Some(Load::Concurrent {
            concurrency: vec![1, 2],
            arrival: Arrival::Closed,
            requests: 2,
            max_batch: 8,
        });
        let mut sampling = scenario("sampling", ScenarioKind::SamplingOverhead, 16);
        sampling.sampling_overhead = Some(SamplingOverhead {
            strategies: vec![
                Sampling::Greedy,
                Sampling::TopP {
                    temperature: 1.0,
                    top_p: 1.0,
                    seed: 20,
                    top_k: Some(50),
                },
            ],
            samples: 1000,
        });
        let request = Request {
            schema_version: SCHEMA_VERSION,
            model: ModelSpec {
                name: "m".into(),
                dir: "/m".into(),
                format: WeightFormat::Gguf,
                dtype: Dtype::Q4_1,
                synthetic: false,
            },
            device: Device::Cpu,
            threads: None,
            scenarios: vec![s2, s3, sampling],
        };
        let mut report = report_for_tests();
        report.scenarios = load_scenarios();
        let analyses = with_analyses(&crate::results::fixture::fixture().1[0], false);
        let sampled = analyses
            .report
            .scenarios
            .iter()
            .find(|s| s.id == "sampling")
            .unwrap()
            .clone();
        report.scenarios.push(sampled);
        (request, report)
    }

    #[test]
    fn every_branch_of_a_load_report_is_checked() {
        let (mut request, report) = asked_and_answered();
        if let Some(Load::Concurrent { requests, .. }) = &mut request.scenarios[1].load {
            *requests = 4;
        }
        let with = |f: &dyn Fn(&mut Report)| {
            let mut r = report.clone();
            // Level 1 as the setting asks: 4 requests.
            let extra = r.scenarios[1].points[1].requests[..2].to_vec();
            r.scenarios[1].points[0].requests.extend(extra);
            let base = problems(&request, &r);
            assert!(base.is_empty(), "{base:?}");
            f(&mut r);
            problems(&request, &r)
        };
        let one = |f: &dyn Fn(&mut Report), want: &str| {
            let p = with(f);
            assert!(p.iter().any(|l| l.contains(want)), "{want}: {p:?}");
        };
        // S2: a level missing, a batch of the wrong size, a missing step, no batch, time order.
        one(
            &|r| r.scenarios[0].points.clear(),
            "levels [] reported, [2] asked",
        );
        one(
            &|r| {
                let b = &mut r.scenarios[0].points[0].batches[0];
                b.sequences = 3;
                b.new_tokens = 12;
            },
            "batch 1: 3 sequences",
        );
        // A serial engine's level: one-sequence batches are fine.
        let p = with(&|r| {
            let b = &mut r.scenarios[0].points[0].batches[0];
            b.sequences = 1;
            b.new_tokens = 4;
        });
        assert!(p.is_empty(), "{p:?}");
        one(
            &|r| {
                r.scenarios[0].points[0].batches[0].step_ns.pop();
            },
            "2 decode steps, 8 tokens for 4 tokens a sequence",
        );
        one(
            &|r| r.scenarios[0].points[0].batches.clear(),
            "no batch measured",
        );
        one(
            &|r| {
                let mut b = r.scenarios[0].points[0].batches[0].clone();
                r.scenarios[0].points[0].batches[0].start_ns = 10;
                b.start_ns = 5;
                r.scenarios[0].points[0].batches.push(b);
            },
            "batch 2 starts before the one before it",
        );
        // S3: a request dropped, out-of-order times, a completion short of tokens or of an end.
        one(
            &|r| {
                r.scenarios[1].points[1].requests.pop();
            },
            "concurrency 2: 3 requests recorded, 4 sent",
        );
        one(
            &|r| r.scenarios[1].points[1].requests[0].first_token_ns = Some(u64::MAX),
            "request 1: timestamps out of order",
        );
        one(
            &|r| r.scenarios[1].points[0].requests[1].new_tokens = 3,
            "request 2: completed with 3 tokens, 4 asked",
        );
        one(
            &|r| {
                let q = &mut r.scenarios[1].points[0].requests[0];
                q.done_ns = None;
            },
            "request 1: completed without a first token or an end",
        );
        // Sampling: a strategy missing, selections short.
        one(
            &|r| {
                r.scenarios[2].sampling.pop();
            },
            "1 strategies reported, 2 asked",
        );
        one(
            &|r| {
                r.scenarios[2].sampling[0].sample_ns.pop();
            },
            "timed 999 selections, 1000 asked",
        );
        // A level that failed only needs to be present.
        let p = with(&|r| {
            r.scenarios[0].points[0].error = Some("out of memory".into());
            r.scenarios[0].points[0].batches.clear();
        });
        assert!(p.is_empty(), "{p:?}");
    }
}
