//! The analyses beyond the five scenarios, computed from a run's raw reports (pure functions;
//! the definitions are written here once and the reports, claims and charts use them):
//!
//! - **KV cache** (`kv-on` vs `kv-off`, the same prompt and fixed-length greedy generation):
//!   the cumulative time to N generated tokens of an iteration is TTFT plus the first N − 1
//!   inter-token gaps; at each checkpoint (64, 256, 512 where the generation reaches them, and
//!   its full length) the table gives both medians, N ÷ time as tok/s, and the speed-up
//!   `off ÷ on` of the medians with the conservative 95 % interval of [`Ratio`].
//! - **Sampling overhead** (`sampling`): every strategy's selections, each timed alone on the
//!   logits of the engine's last forward pass (the real vocabulary); the forward pass is the
//!   median decode step of the same scenario (one forward pass plus a greedy selection), and
//!   the share is the median selection ÷ the median decode step, with its interval.

use crate::ratio::Ratio;
use crate::results::TargetResult;
use crate::stats::{summarize, Summary};

/// Where the KV-cache analysis reads cumulative time (each one the generation reaches).
pub const KV_CHECKPOINTS: [u32; 3] = [64, 256, 512];

/// What one target's analysis came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<T> {
    Rows(Vec<T>),
    /// The engine cannot, by design (its own words).
    Unsupported(String),
    /// The scenario failed; why.
    Failed(String),
}

/// One checkpoint of the KV-cache analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct KvRow {
    pub tokens: u32,
    /// Cumulative ms to `tokens` tokens, with and without the cache.
    pub on_ms: Summary,
    pub off_ms: Summary,
    /// `off ÷ on` (how many times faster the cache makes it).
    pub speedup: Option<Ratio>,
    /// The first generated position whose id differs between the two (0-based), `None` when
    /// both generated the same ids: recomputing the prefix is the same model, so a difference
    /// is numerics (a batched prefill vs one-token steps) or a broken path.
    pub ids_differ_at: Option<usize>,
}

impl KvRow {
    pub fn tok_per_s(&self, ms: &Summary) -> f64 {
        self.tokens as f64 / (ms.median / 1e3)
    }
}

/// One strategy of the sampling analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingRow {
    pub strategy: String,
    pub logits: u32,
    /// Every selection's time, µs.
    pub sample_us: Summary,
    /// The decode step of the same engine, µs.
    pub forward_us: Summary,
    /// `sample ÷ forward` (a fraction; × 100 for %).
    pub share: Option<Ratio>,
}

fn scenario<'a>(r: &'a TargetResult, id: &str) -> Option<&'a lab_protocol::ScenarioReport> {
    r.report.scenarios.iter().find(|s| s.id == id)
}

/// Cumulative ms to `n` tokens in each iteration of the scenario's first prompt that reached it.
fn cumulative_ms(s: &lab_protocol::ScenarioReport, n: u32) -> Vec<f64> {
    let Some(p) = s.prompts.first() else {
        return Vec::new();
    };
    p.samples
        .iter()
        .filter(|x| x.new_tokens >= n && n >= 1)
        .map(|x| {
            let gaps: f64 = x
                .inter_token_ns
                .iter()
                .take(n as usize - 1)
                .map(|&g| g as f64)
                .sum();
            (x.ttft_ns as f64 + gaps) / 1e6
        })
        .collect()
}

fn why_not(s: Option<&lab_protocol::ScenarioReport>, id: &str) -> Option<String> {
    match s {
        None => Some(format!("the run has no `{id}` scenario for this target")),
        Some(s) => s
            .unsupported
            .clone()
            .or_else(|| s.error.as_ref().map(|e| format!("failed: {e}"))),
    }
}

/// The KV-cache analysis of a target, `None` when the run asked for neither scenario.
pub fn kv(r: &TargetResult) -> Option<Outcome<KvRow>> {
    let (on, off) = (scenario(r, "kv-on"), scenario(r, "kv-off"));
    if on.is_none() && off.is_none() {
        return None;
    }
    if let Some(s) = off.filter(|s| s.unsupported.is_some()) {
        return Some(Outcome::Unsupported(
            s.unsupported.clone().unwrap_or_default(),
        ));
    }
    if let Some(why) = why_not(on, "kv-on").or_else(|| why_not(off, "kv-off")) {
        return Some(Outcome::Failed(why));
    }
    let (on, off) = (on?, off?);
    let generated = |s: &lab_protocol::ScenarioReport| {
        s.prompts
            .first()
            .and_then(|p| p.samples.iter().map(|x| x.new_tokens).min())
            .unwrap_or(0)
    };
    let n = generated(on).min(generated(off));
    let ids = |s: &lab_protocol::ScenarioReport| {
        s.prompts
            .first()
            .map(|p| p.generated_token_ids.clone())
            .unwrap_or_default()
    };
    let (a, b) = (ids(on), ids(off));
    let ids_differ_at = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .or((a.len() != b.len()).then_some(a.len().min(b.len())));
    let mut points: Vec<u32> = KV_CHECKPOINTS.into_iter().filter(|&c| c <= n).collect();
    if n > 0 && !points.contains(&n) {
        points.push(n);
    }
    let rows = points
        .into_iter()
        .filter_map(|t| {
            let on_ms = summarize(&cumulative_ms(on, t))?;
            let off_ms = summarize(&cumulative_ms(off, t))?;
            Some(KvRow {
                ids_differ_at,
                tokens: t,
                speedup: Ratio::of(&off_ms, &on_ms),
                on_ms,
                off_ms,
            })
        })
        .collect::<Vec<_>>();
    if rows.is_empty() {
        return Some(Outcome::Failed("no iteration was measured".into()));
    }
    Some(Outcome::Rows(rows))
}

/// The sampling analysis of a target, `None` when the run did not ask for it.
pub fn sampling(r: &TargetResult) -> Option<Outcome<SamplingRow>> {
    let s = scenario(r, "sampling");
    s?;
    if let Some(why) = why_not(s, "sampling") {
        return Some(if s.is_some_and(|s| s.unsupported.is_some()) {
            Outcome::Unsupported(why)
        } else {
            Outcome::Failed(why)
        });
    }
    let s = s?;
    let gaps: Vec<f64> = s
        .prompts
        .iter()
        .flat_map(|p| &p.samples)
        .flat_map(|x| &x.inter_token_ns)
        .map(|&ns| ns as f64 / 1e3)
        .collect();
    let Some(forward_us) = summarize(&gaps) else {
        return Some(Outcome::Failed(
            "no decode step was measured (the scenario needs 2 or more new tokens)".into(),
        ));
    };
    let rows = s
        .sampling
        .iter()
        .filter_map(|t| {
            let us: Vec<f64> = t.sample_ns.iter().map(|&ns| ns as f64 / 1e3).collect();
            let sample_us = summarize(&us)?;
            Some(SamplingRow {
                strategy: t.sampling.label(),
                logits: t.logits_len,
                share: Ratio::of(&sample_us, &forward_us),
                sample_us,
                forward_us: forward_us.clone(),
            })
        })
        .collect();
    Some(Outcome::Rows(rows))
}

/// The targets of `results` (first run of each) with the analysis `f` of each, in run order.
pub fn of_targets<T>(
    results: &[TargetResult],
    f: fn(&TargetResult) -> Option<Outcome<T>>,
) -> Vec<(&str, Outcome<T>)> {
    results
        .iter()
        .filter(|r| r.run() == 1)
        .filter_map(|r| Some((r.target.as_str(), f(r)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::fixture;

    #[test]
    fn the_kv_speedup_is_the_ratio_of_cumulative_times_at_each_checkpoint() {
        let r = fixture::with_analyses(&fixture::fixture_engines().1[0], false);
        let Some(Outcome::Rows(rows)) = kv(&r) else {
            panic!("{:?}", kv(&r))
        };
        // 70 tokens generated: checkpoints 64 and 70; with the cache every step takes 1 ms,
        // without it step i takes i ms (the prefix grows), TTFT 5 ms in both.
        assert_eq!(rows.iter().map(|r| r.tokens).collect::<Vec<_>>(), [64, 70]);
        let at64 = &rows[0];
        assert_eq!(at64.on_ms.median, 5.0 + 63.0);
        assert_eq!(
            at64.ids_differ_at, None,
            "the fixture generates the same ids"
        );
        assert_eq!(at64.off_ms.median, 5.0 + (1..=63).sum::<u32>() as f64);
        let s = at64.speedup.unwrap();
        assert!((s.value - (5.0 + 2016.0) / 68.0).abs() < 1e-9, "{s:?}");
        assert!(s.low <= s.value && s.value <= s.high);
        assert!((at64.tok_per_s(&at64.on_ms) - 64.0 / 0.068).abs() < 1e-6);

        // Ids that part are said, with the first position that differs.
        let mut r2 = r.clone();
        let off = r2
            .report
            .scenarios
            .iter_mut()
            .find(|s| s.id == "kv-off")
            .unwrap();
        off.prompts[0].generated_token_ids[5] = 8;
        match kv(&r2) {
            Some(Outcome::Rows(rows)) => assert_eq!(rows[0].ids_differ_at, Some(5)),
            other => panic!("{other:?}"),
        }

        // An engine that cannot says so; a run without the scenarios has no row at all.
        let r = fixture::with_analyses(&fixture::fixture_engines().1[0], true);
        match kv(&r) {
            Some(Outcome::Unsupported(why)) => assert!(why.contains("owns"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(kv(&fixture::fixture_engines().1[0]), None);
    }

    #[test]
    fn the_sampling_share_divides_each_selection_by_the_decode_step() {
        let r = fixture::with_analyses(&fixture::fixture_engines().1[0], false);
        let Some(Outcome::Rows(rows)) = sampling(&r) else {
            panic!("{:?}", sampling(&r))
        };
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].strategy, "greedy");
        assert_eq!(rows[1].strategy, "top-k 50");
        // Decode steps of 2,000 µs; greedy selections of 20 µs, top-k of 500 µs.
        assert_eq!(rows[0].forward_us.median, 2000.0);
        assert!((rows[0].share.unwrap().value - 0.01).abs() < 1e-12);
        assert!((rows[1].share.unwrap().value - 0.25).abs() < 1e-12);
        assert_eq!(rows[1].logits, 49_152);
        let r = fixture::with_analyses(&fixture::fixture_engines().1[0], true);
        assert!(matches!(sampling(&r), Some(Outcome::Unsupported(_))));
    }
}
