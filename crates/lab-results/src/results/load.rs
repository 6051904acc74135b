//! Statistics of the load scenarios (S2, S3), derived from the raw [`LoadPoint`]s. The
//! definitions (README, "Scenario definitions") are written here once:
//!
//! - S2, per batch size B, over every measured batch: **prefill tok/s** = prompt tokens of all
//!   sequences / time from the batch's start to every sequence's first token; **decode tok/s** =
//!   tokens after each sequence's first / time of the decode steps; **output tok/s** = all
//!   generated tokens / batch wall time; **requests/s** = sequences / batch wall time; **step
//!   latency** = one decode step over the whole batch (p50/p90/p99); **windows**: output tok/s
//!   in consecutive windows of the measured time, so drift is visible.
//! - S3, per concurrency C: **TTFT** = submit to first token (queueing included); **TPOT** =
//!   (completion − first token) / (tokens − 1), per request; **e2e** = submit to completion;
//!   **output tok/s** = tokens of completed requests / (last completion − first submit);
//!   **requests/s** likewise; **scaling** = output tok/s / output tok/s at C = 1;
//!   **goodput** = completed requests per second that met both SLOs ([`SLO_TTFT_MS`],
//!   [`SLO_TPOT_MS`]). Every request is counted once: completed, failed or refused.

use std::collections::BTreeMap;

use lab_protocol::{LoadPoint, RequestStatus, ScenarioReport};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::stats::{summarize, Summary};

/// The SLOs of S3's goodput: time to first token at most this many ms …
pub const SLO_TTFT_MS: f64 = 1000.0;
/// … and time per output token at most this many ms (5 tokens/s, faster than people read).
pub const SLO_TPOT_MS: f64 = 200.0;

/// How S3's requests ended; the three add up to `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestCounts {
    pub total: u32,
    pub completed: u32,
    pub failed: u32,
    pub refused: u32,
}

/// One level of a load scenario, summarized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PointStats {
    /// Batch size (S2) or concurrency (S3).
    pub level: u32,
    pub max_active: u32,
    /// Rates and ratios: `prefill_tok_per_s`, `decode_tok_per_s`, `output_tok_per_s`,
    /// `requests_per_s`, and for S3 `goodput_requests_per_s`, `scaling_vs_c1`.
    pub values: BTreeMap<String, f64>,
    /// Distributions in ms: S2 `step_ms`; S3 `ttft_ms`, `tpot_ms`, `e2e_ms`.
    pub metrics: BTreeMap<String, Summary>,
    /// S3 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<RequestCounts>,
    /// S2 only: output tok/s in consecutive windows of `window_s` seconds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub window_tok_per_s: Vec<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_s: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
    pub deterministic: bool,
    /// Batched vs alone: how many of this level's prompts generated other ids than at level 1
    /// of the same scenario (one sequence at a time), of how many were compared. `None` at
    /// level 1 or without a level 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub differ_from_level1: Option<(u32, u32)>,
    pub error: Option<String>,
}

impl PointStats {
    pub fn value(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }
}

/// Every level of a load scenario as the per-prompt statistics that baselines, `check` and
/// `reproduce` compare (`b<B>` for an S2 batch size, `c<C>` for an S3 concurrency), with the
/// usual metric names over that level's samples:
///
/// - S2, one sample per measured batch: `ttft_ms` = time to every first token, `prefill_tok_per_s`
///   and `decode_tok_per_s` aggregate over the batch, `e2e_ms` = batch wall time;
///   `inter_token_ms` = every decode step.
/// - S3, one sample per completed request: `ttft_ms` and `e2e_ms` from submit (queueing
///   included), `prefill_tok_per_s` = prompt tokens / TTFT, `decode_tok_per_s` = 1000 / TPOT,
///   `inter_token_ms` = TPOT. Its `prompt_tokens` is 0: the workload's lengths vary.
pub fn level_prompt_stats(s: &ScenarioReport) -> Vec<crate::results::PromptStats> {
    s.points
        .iter()
        .map(|p| {
            let ms = |ns: u64| ns as f64 / 1e6;
            let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
            let mut push = |k: &'static str, v: Option<f64>| {
                if let Some(v) = v.filter(|v| v.is_finite()) {
                    samples.entry(k).or_default().push(v);
                }
            };
            let (name, prompt_tokens, new_tokens) = if p.requests.is_empty() {
                for b in &p.batches {
                    let decode_ns = b.decode_ns();
                    push("ttft_ms", Some(ms(b.prefill_ns)));
                    push("e2e_ms", Some(ms(b.e2e_ns())));
                    push(
                        "prefill_tok_per_s",
                        rate(b.prompt_tokens as f64, b.prefill_ns),
                    );
                    push(
                        "decode_tok_per_s",
                        rate(b.new_tokens.saturating_sub(b.sequences) as f64, decode_ns),
                    );
                    for &n in &b.step_ns {
                        push("inter_token_ms", Some(ms(n)));
                    }
                }
                let per_seq = |f: fn(&lab_protocol::BatchSample) -> u32| {
                    p.batches.first().map_or(0, |b| f(b) / b.sequences.max(1))
                };
                (
                    format!("b{}", p.level),
                    per_seq(|b| b.prompt_tokens),
                    per_seq(|b| b.new_tokens),
                )
            } else {
                let mut new_tokens = 0;
                for r in &p.requests {
                    let (RequestStatus::Completed, Some(first), Some(done)) =
                        (&r.status, r.first_token_ns, r.done_ns)
                    else {
                        continue;
                    };
                    new_tokens = r.new_tokens;
                    let ttft = first.saturating_sub(r.submit_ns);
                    push("ttft_ms", Some(ms(ttft)));
                    push("e2e_ms", Some(ms(done.saturating_sub(r.submit_ns))));
                    push("prefill_tok_per_s", rate(r.prompt_tokens as f64, ttft));
                    if r.new_tokens > 1 {
                        let tpot = ms(done.saturating_sub(first)) / (r.new_tokens - 1) as f64;
                        push("inter_token_ms", Some(tpot));
                        push("decode_tok_per_s", (tpot > 0.0).then(|| 1e3 / tpot));
                    }
                }
                (format!("c{}", p.level), 0, new_tokens)
            };
            crate::results::PromptStats {
                prompt: name,
                prompt_tokens,
                new_tokens,
                deterministic: p.deterministic,
                metrics: samples
                    .into_iter()
                    .filter_map(|(k, v)| Some((k.to_string(), summarize(&v)?)))
                    .collect(),
            }
        })
        .collect()
}

/// Statistics of every level of a load scenario (empty for other scenarios).
pub fn point_stats(s: &ScenarioReport) -> Vec<PointStats> {
    let mut out: Vec<PointStats> = s.points.iter().map(one_point).collect();
    if let Some(alone) = s.points.iter().find(|p| p.level == 1) {
        for (stats, p) in out.iter_mut().zip(&s.points) {
            if p.level == 1 {
                continue;
            }
            let (mut differ, mut compared) = (0, 0);
            for o in &p.outputs {
                if let Some(a) = alone.outputs.iter().find(|a| a.prompt == o.prompt) {
                    compared += 1;
                    if a.token_ids != o.token_ids {
                        differ += 1;
                    }
                }
            }
            stats.differ_from_level1 = (compared > 0).then_some((differ, compared));
        }
    }
    // Scaling is relative to the C = 1 level of the same scenario.
    let base = out
        .iter()
        .find(|p| p.level == 1 && p.counts.is_some())
        .and_then(|p| p.value("output_tok_per_s"));
    if let Some(base) = base.filter(|b| *b > 0.0) {
        for p in out.iter_mut().filter(|p| p.counts.is_some()) {
            if let Some(v) = p.value("output_tok_per_s") {
                p.values.insert("scaling_vs_c1".into(), v / base);
            }
        }
    }
    out
}

fn one_point(p: &LoadPoint) -> PointStats {
    let mut stats = PointStats {
        level: p.level,
        max_active: p.max_active,
        values: BTreeMap::new(),
        metrics: BTreeMap::new(),
        counts: None,
        window_tok_per_s: Vec::new(),
        window_s: None,
        peak_rss_bytes: p.peak_rss_bytes,
        deterministic: p.deterministic,
        differ_from_level1: None,
        error: p.error.clone(),
    };
    if p.requests.is_empty() {
        batches(p, &mut stats);
    } else {
        requests(p, &mut stats);
    }
    stats
}

fn rate(count: f64, ns: u64) -> Option<f64> {
    (ns > 0).then(|| count / (ns as f64 / 1e9))
}

fn put(stats: &mut PointStats, name: &str, v: Option<f64>) {
    if let Some(v) = v {
        stats.values.insert(name.to_string(), v);
    }
}

fn batches(p: &LoadPoint, stats: &mut PointStats) {
    if p.batches.is_empty() {
        return;
    }
    let sum = |f: &dyn Fn(&lab_protocol::BatchSample) -> u64| {
        p.batches.iter().map(f).fold(0u64, u64::saturating_add)
    };
    let prompt_tokens = sum(&|b| b.prompt_tokens as u64);
    let new_tokens = sum(&|b| b.new_tokens as u64);
    let sequences = sum(&|b| b.sequences as u64);
    let prefill_ns = sum(&|b| b.prefill_ns);
    let decode_ns = sum(&|b| b.decode_ns());
    let wall_ns = sum(&|b| b.e2e_ns());
    put(
        stats,
        "prefill_tok_per_s",
        rate(prompt_tokens as f64, prefill_ns),
    );
    put(
        stats,
        "decode_tok_per_s",
        rate(new_tokens.saturating_sub(sequences) as f64, decode_ns),
    );
    put(stats, "output_tok_per_s", rate(new_tokens as f64, wall_ns));
    put(stats, "requests_per_s", rate(sequences as f64, wall_ns));
    let steps: Vec<f64> = p
        .batches
        .iter()
        .flat_map(|b| b.step_ns.iter().map(|&n| n as f64 / 1e6))
        .collect();
    if let Some(s) = summarize(&steps) {
        stats.metrics.insert("step_ms".into(), s);
    }
    windows(p, stats);
}

/// Output tok/s over time: every token is placed at the moment it became available (first
/// tokens at the end of prefill, then one per sequence at the end of each step) and counted
/// in windows of at least 1 s (at most 20 windows over the measured span).
fn windows(p: &LoadPoint, stats: &mut PointStats) {
    let mut events: Vec<(u64, u64)> = Vec::new();
    for b in &p.batches {
        let mut t = b.start_ns.saturating_add(b.prefill_ns);
        events.push((t, b.sequences as u64));
        for &s in &b.step_ns {
            t = t.saturating_add(s);
            events.push((t, b.sequences as u64));
        }
    }
    let span = events.iter().map(|e| e.0).max().unwrap_or(0);
    let window = (span / 20).max(1_000_000_000);
    let n = span.div_ceil(window).max(1) as usize;
    let mut tokens = vec![0u64; n];
    for (t, k) in events {
        let w = &mut tokens[((t.saturating_sub(1)) / window).min(n as u64 - 1) as usize];
        *w = w.saturating_add(k);
    }
    // The last window is usually partial: its rate uses its real length.
    stats.window_tok_per_s = tokens
        .iter()
        .enumerate()
        .map(|(i, &k)| {
            let len = window.min(span - i as u64 * window).max(1);
            k as f64 / (len as f64 / 1e9)
        })
        .collect();
    stats.window_s = Some(window as f64 / 1e9);
}

fn requests(p: &LoadPoint, stats: &mut PointStats) {
    let mut counts = RequestCounts {
        total: p.requests.len() as u32,
        completed: 0,
        failed: 0,
        refused: 0,
    };
    let (mut ttft, mut tpot, mut e2e) = (Vec::new(), Vec::new(), Vec::new());
    let (mut tokens, mut good) = (0u64, 0u32);
    let ms = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e6;
    for r in &p.requests {
        match (&r.status, r.first_token_ns, r.done_ns) {
            (RequestStatus::Completed, Some(first), Some(done)) => {
                counts.completed += 1;
                tokens = tokens.saturating_add(r.new_tokens as u64);
                let t = ms(r.submit_ns, first);
                ttft.push(t);
                e2e.push(ms(r.submit_ns, done));
                let per_token =
                    (r.new_tokens > 1).then(|| ms(first, done) / (r.new_tokens - 1) as f64);
                if let Some(x) = per_token {
                    tpot.push(x);
                }
                if t <= SLO_TTFT_MS && per_token.is_none_or(|x| x <= SLO_TPOT_MS) {
                    good += 1;
                }
            }
            (RequestStatus::Completed, ..) => counts.failed += 1,
            (RequestStatus::Failed { .. }, ..) => counts.failed += 1,
            (RequestStatus::Refused { .. }, ..) => counts.refused += 1,
        }
    }
    let start = p.requests.iter().map(|r| r.submit_ns).min().unwrap_or(0);
    let end = p
        .requests
        .iter()
        .filter_map(|r| r.done_ns)
        .max()
        .unwrap_or(start);
    let span = end.saturating_sub(start);
    put(stats, "output_tok_per_s", rate(tokens as f64, span));
    put(stats, "requests_per_s", rate(counts.completed as f64, span));
    put(stats, "goodput_requests_per_s", rate(good as f64, span));
    for (name, v) in [("ttft_ms", ttft), ("tpot_ms", tpot), ("e2e_ms", e2e)] {
        if let Some(s) = summarize(&v) {
            stats.metrics.insert(name.into(), s);
        }
    }
    stats.counts = Some(counts);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn batched_ids_are_compared_with_level_1() {
        let out = |prompt: &str, ids: &[u32]| lab_protocol::PromptOutput {
            prompt: prompt.into(),
            token_ids: ids.to_vec(),
        };
        let point = |level, outputs| LoadPoint {
            level,
            max_active: level,
            batches: vec![],
            requests: vec![],
            outputs,
            deterministic: true,
            peak_rss_bytes: None,
            error: None,
            start_unix_ns: None,
        };
        let s = ScenarioReport {
            id: "s2".into(),
            kind: lab_protocol::ScenarioKind::BatchedThroughput,
            prompts: vec![],
            error: None,
            sampling: vec![],
            unsupported: None,
            micro: None,
            ops: vec![],
            train: None,
            batching: None,
            points: vec![
                point(1, vec![out("a", &[1, 2, 3])]),
                point(4, vec![out("a", &[1, 2, 4]), out("b", &[5])]),
                point(8, vec![out("a", &[1, 2, 3]), out("b", &[5])]),
            ],
        };
        let st = point_stats(&s);
        assert_eq!(st[0].differ_from_level1, None);
        // Only prompts that ran at level 1 are compared.
        assert_eq!(st[1].differ_from_level1, Some((1, 1)));
        assert_eq!(st[2].differ_from_level1, Some((0, 1)));
    }

    #[test]
    fn load_statistics_follow_their_definitions() {
        let sc = crate::results::fixture::load_scenarios();
        let s2 = &point_stats(&sc[0])[0];
        // 20 prompt tokens in 100 ms; 6 tokens after the first two in 150 ms; 8 in 250 ms.
        assert!(close(s2.value("prefill_tok_per_s"), 200.0), "{s2:?}");
        assert!(close(s2.value("decode_tok_per_s"), 40.0));
        assert!(close(s2.value("output_tok_per_s"), 32.0));
        assert!(close(s2.value("requests_per_s"), 8.0));
        assert_eq!(s2.metrics["step_ms"].n, 3);
        assert_eq!(s2.window_tok_per_s, vec![32.0]);

        let s3 = point_stats(&sc[1]);
        let (c1, c2) = (&s3[0], &s3[1]);
        // C = 1: 8 tokens from 0 to 800 ms.
        assert!(close(c1.value("output_tok_per_s"), 10.0));
        assert!(close(c1.value("scaling_vs_c1"), 1.0));
        assert_eq!(c1.metrics["ttft_ms"].median, 100.0);
        assert_eq!(c1.metrics["tpot_ms"].median, 100.0);
        // C = 2: 2 completed (8 tokens) of 4 in 1.5 s; one of them missed the TTFT SLO.
        let counts = c2.counts.unwrap();
        assert_eq!(
            (
                counts.total,
                counts.completed,
                counts.failed,
                counts.refused
            ),
            (4, 2, 1, 1)
        );
        assert_eq!(
            counts.completed + counts.failed + counts.refused,
            counts.total
        );
        assert!(close(c2.value("output_tok_per_s"), 8.0 / 1.5));
        assert!(close(c2.value("scaling_vs_c1"), 8.0 / 1.5 / 10.0));
        assert!(close(c2.value("goodput_requests_per_s"), 1.0 / 1.5));
        assert_eq!(c2.metrics["ttft_ms"].max, 1200.0);

        // The same levels as per-prompt statistics, for baselines and `check`.
        let b = &level_prompt_stats(&sc[0])[0];
        assert_eq!(
            (b.prompt.as_str(), b.prompt_tokens, b.new_tokens),
            ("b2", 10, 4)
        );
        assert_eq!(b.metrics["decode_tok_per_s"].median, 40.0);
        assert_eq!(b.metrics["inter_token_ms"].n, 3);
        let c = &level_prompt_stats(&sc[1])[1];
        assert_eq!(c.prompt, "c2");
        assert_eq!(
            c.metrics["ttft_ms"].n, 2,
            "failed and refused requests have no TTFT"
        );
        assert_eq!(c.metrics["inter_token_ms"].median, 100.0);
        assert_eq!(c.metrics["decode_tok_per_s"].median, 10.0);
    }
}
