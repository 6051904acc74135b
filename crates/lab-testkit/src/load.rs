//! Load-scenario runs for the engines' suites: small settings that fit CI, and the checks that
//! hold on any machine (every request accounted for, batched outputs equal to unbatched ones).

use std::collections::BTreeMap;

use lab_harness::{BenchPlan, PreparedTarget};
use lab_protocol::{LoadPoint, RequestStatus};
use lab_results::measure::LoadSettings;
use lab_results::results::TargetResult;

/// S2 at batch 1 and 4, S3 at C = 1 and 8 (8 requests, the whole workload once), 8 new tokens;
/// S5 (when asked) at 1024 tokens only.
pub fn small_load() -> LoadSettings {
    LoadSettings {
        batch_sizes: vec![1, 4],
        batch_duration_ms: 0,
        concurrency: vec![1, 8],
        arrival: lab_protocol::Arrival::Closed,
        requests: 8,
        max_batch: 8,
        new_tokens: 8,
        long_new_tokens: 8,
        long_lengths: Some(vec![1024]),
        kv_new_tokens: 8,
        sampling_samples: 50,
    }
}

/// Runs `scenarios` with `load` for `targets` (no warm-up, one iteration); every target must
/// finish.
pub fn run_load(
    tag: &str,
    targets: Vec<PreparedTarget>,
    scenarios: &[&str],
    load: LoadSettings,
) -> (BenchPlan, Vec<TargetResult>) {
    let mut plan = crate::s1_plan(tag, targets, 0, 1, 8);
    plan.spec.scenarios = crate::ids(scenarios);
    plan.spec.load = Some(load);
    crate::run_plan(plan)
}

fn points<'a>(r: &'a TargetResult, id: &str) -> &'a [LoadPoint] {
    r.report
        .scenarios
        .iter()
        .find(|s| s.id == id)
        .map(|s| s.points.as_slice())
        .unwrap_or_else(|| panic!("{}: no scenario {id}", r.target))
}

fn outputs(p: &LoadPoint) -> BTreeMap<&str, &[u32]> {
    p.outputs
        .iter()
        .map(|o| (o.prompt.as_str(), o.token_ids.as_slice()))
        .collect()
}

/// Every S3 request of every level completed (none failed, refused or lost) with its tokens,
/// and every S2 batch generated what it was asked.
pub fn assert_every_request_completed(results: &[TargetResult], new_tokens: u32) {
    for r in results {
        for p in points(r, "s3") {
            assert!(
                p.error.is_none(),
                "{} C={}: {:?}",
                r.target,
                p.level,
                p.error
            );
            assert_eq!(
                p.requests.len(),
                8.max(p.level as usize),
                "{} C={}",
                r.target,
                p.level
            );
            for q in &p.requests {
                assert_eq!(
                    q.status,
                    RequestStatus::Completed,
                    "{} C={}: {q:?}",
                    r.target,
                    p.level
                );
                assert_eq!(q.new_tokens, new_tokens, "{}", r.target);
            }
        }
        for p in points(r, "s2") {
            assert!(
                p.error.is_none(),
                "{} B={}: {:?}",
                r.target,
                p.level,
                p.error
            );
            assert!(!p.batches.is_empty());
            for b in &p.batches {
                assert_eq!(b.new_tokens, b.sequences * new_tokens, "{}", r.target);
            }
        }
    }
}

/// Batched and unbatched greedy outputs of the same prompt: S3 at C = 1 (one sequence at a
/// time) against the highest level, S2 at batch 1 against the largest batch (its first prompt).
/// Returns, per target, the prompts whose ids differ (empty: identical).
pub fn batched_vs_serial(results: &[TargetResult]) -> Vec<(String, Vec<String>)> {
    results
        .iter()
        .map(|r| {
            let mut differ = Vec::new();
            for id in ["s3", "s2"] {
                let ps = points(r, id);
                let (one, many) = (outputs(&ps[0]), outputs(ps.last().unwrap()));
                assert_eq!(
                    ps[0].level, 1,
                    "{} {id}: the first level must be 1",
                    r.target
                );
                for (prompt, ids) in &one {
                    let other = many
                        .get(prompt)
                        .unwrap_or_else(|| panic!("{} {id}: {prompt} missing", r.target));
                    if other != ids {
                        differ.push(format!("{id} {prompt}"));
                    }
                }
            }
            (r.target.clone(), differ)
        })
        .collect()
}

/// The largest number of sequences a target decoded together in S3.
pub fn max_active(r: &TargetResult) -> u32 {
    points(r, "s3")
        .iter()
        .map(|p| p.max_active)
        .max()
        .unwrap_or(0)
}

/// The batching label a target's scenario `id` reported.
pub fn batching<'a>(r: &'a TargetResult, id: &str) -> &'a str {
    r.report
        .scenarios
        .iter()
        .find(|s| s.id == id)
        .and_then(|s| s.batching.as_deref())
        .unwrap_or_else(|| panic!("{}: scenario {id} has no batching label", r.target))
}

/// The largest number of sequences a target decoded together in S2.
pub fn max_batched(r: &TargetResult) -> u32 {
    points(r, "s2")
        .iter()
        .map(|p| p.max_active)
        .max()
        .unwrap_or(0)
}
