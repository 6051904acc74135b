//! GPU telemetry of a run: what the samples taken around each target's engine process (by the
//! harness) say per scenario ([`summarize`]). Engines never see NVML: every engine, in a container or not, is
//! measured from outside the same way.
//!
//! Windows (see `lab_gpu::analysis` for what is computed over a window):
//! - S1, S5 and the correctness scenarios: one window per measured iteration,
//!   `[start_unix_ns, start_unix_ns + e2e]`, with its generated tokens.
//! - S2: one window per measured batch (batches run one after another).
//! - S3: one window per concurrency level, from the level's start to its last request's end
//!   (requests overlap, so they cannot have windows of their own without counting energy twice).
//!
//! Iterations without a Unix start (reports of engines older than protocol v4) have no window.

use lab_gpu::analysis::{self, ScenarioTelemetry};
use lab_gpu::sampler::Telemetry;
use lab_protocol::{Report, ScenarioReport};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A target's telemetry: the summaries per scenario (and load level) and every raw sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetTelemetry {
    pub scenarios: Vec<ScenarioTelemetry>,
    pub raw: Telemetry,
}

impl TargetTelemetry {
    /// The scenario (or load level) with the largest share of throttled windows.
    pub fn worst_throttled(&self) -> Option<&ScenarioTelemetry> {
        self.scenarios
            .iter()
            .filter(|s| s.throttled_windows > 0)
            .max_by(|a, b| a.throttled_fraction().total_cmp(&b.throttled_fraction()))
    }
}

/// `(level, windows)` of one scenario's report: `(start, end, tokens)` in Unix ns.
type Windows = Vec<(Option<u32>, Vec<(u64, u64, u64)>)>;

fn windows(s: &ScenarioReport) -> Windows {
    if s.points.is_empty() {
        let w = s
            .prompts
            .iter()
            .flat_map(|p| &p.samples)
            .filter_map(|x| {
                x.start_unix_ns
                    .map(|t| (t, t.saturating_add(x.e2e_ns), u64::from(x.new_tokens)))
            })
            .collect();
        return vec![(None, w)];
    }
    s.points
        .iter()
        .filter_map(|p| {
            let t0 = p.start_unix_ns?;
            let w = if !p.batches.is_empty() {
                p.batches
                    .iter()
                    .map(|b| {
                        let end = b.start_ns.saturating_add(b.e2e_ns());
                        (
                            t0.saturating_add(b.start_ns),
                            t0.saturating_add(end),
                            u64::from(b.new_tokens),
                        )
                    })
                    .collect()
            } else {
                let end = p.requests.iter().filter_map(|r| r.done_ns).max()?;
                let tokens = p.requests.iter().map(|r| u64::from(r.new_tokens)).sum();
                vec![(t0, t0.saturating_add(end), tokens)]
            };
            Some((Some(p.level), w))
        })
        .collect()
}

/// Summaries of `raw` over every scenario (and level) of `report`, per sampled device.
pub fn summarize(report: &Report, raw: Telemetry) -> TargetTelemetry {
    let mut scenarios = Vec::new();
    for s in &report.scenarios {
        for (level, w) in windows(s) {
            if w.is_empty() {
                continue;
            }
            for d in raw.devices.iter().filter(|d| !d.samples.is_empty()) {
                let mut st = analysis::scenario(&s.id, d.index, &d.samples, &w);
                st.level = level;
                scenarios.push(st);
            }
        }
    }
    TargetTelemetry { scenarios, raw }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_gpu::sampler::DeviceTrace;
    use lab_gpu::Sample;
    use lab_protocol::{BatchSample, IterationSample, LoadPoint, PromptReport, ScenarioKind};

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_800_000_000 * S;

    fn trace(bits_at: impl Fn(u64) -> u64) -> Telemetry {
        // 10 s at 100 ms, 250 W as a counter (25 J per sample).
        let samples = (0..=100)
            .map(|i| Sample {
                t_unix_ns: T0 + i * S / 10,
                energy_mj: Some(1_000_000 + i * 25_000),
                power_mw: Some(250_000),
                throttle_bits: Some(bits_at(i)),
                ..Sample::default()
            })
            .collect();
        Telemetry {
            source: "test".into(),
            period_ms: 100,
            devices: vec![DeviceTrace {
                index: 0,
                name: "GPU".into(),
                samples,
                error: None,
            }],
        }
    }

    fn s1(starts_s: &[u64]) -> ScenarioReport {
        ScenarioReport {
            id: "s1".into(),
            kind: ScenarioKind::SingleRequestLatency,
            prompts: vec![PromptReport {
                prompt: "p".into(),
                prompt_tokens: 8,
                generated_token_ids: vec![1; 10],
                deterministic: true,
                warmup_iterations: 0,
                samples: starts_s
                    .iter()
                    .map(|&t| IterationSample {
                        ttft_ns: S / 10,
                        e2e_ns: S,
                        new_tokens: 10,
                        inter_token_ns: vec![S / 10; 9],
                        start_unix_ns: Some(T0 + t * S),
                    })
                    .collect(),
                top_logits: vec![],
                peak_rss_bytes: None,
            }],
            error: None,
            sampling: vec![],
            unsupported: None,
            micro: None,
            ops: vec![],
            train: None,
            batching: None,
            points: vec![],
        }
    }

    fn report(scenarios: Vec<ScenarioReport>) -> Report {
        let mut r = crate::results::fixture::report_for_tests();
        r.scenarios = scenarios;
        r
    }

    #[test]
    fn iterations_are_windows_with_their_energy_tokens_and_throttling() {
        // A power cap from 4.0 s to 5.0 s: the iteration at 4 s is throttled, the others not.
        let raw = trace(|i| {
            if (40..50).contains(&i) {
                lab_gpu::throttle::SW_POWER_CAP
            } else {
                0
            }
        });
        let t = summarize(&report(vec![s1(&[1, 4, 7])]), raw);
        assert_eq!(t.scenarios.len(), 1);
        let s = &t.scenarios[0];
        assert_eq!((s.windows, s.throttled_windows), (3, 1));
        assert_eq!(s.throttled, [1], "the iteration at 4 s");
        assert_eq!(s.slowdowns, ["sw_power_cap"]);
        // 3 windows of 1 s at 250 W; 30 tokens.
        assert!((s.energy_j.unwrap() - 750.0).abs() < 1e-6);
        assert!((s.joules_per_token.unwrap() - 25.0).abs() < 1e-6);
        assert!((s.mean_power_w.unwrap() - 250.0).abs() < 1e-6);
        assert_eq!(t.worst_throttled().map(|w| w.scenario.as_str()), Some("s1"));
        // One of three windows is above 5 % but not above a half.
        let (_, mut results) = crate::results::fixture::fixture();
        results[0].telemetry = Some(t);
        assert_eq!(
            crate::check::throttled_beyond(&results, crate::check::DEFAULT_MAX_THROTTLED),
            ["mock:hf-f32: s1 on GPU 0: 1 of 3 measured windows throttled (sw_power_cap)"]
        );
        assert!(crate::check::throttled_beyond(&results, 0.5).is_empty());
    }

    #[test]
    fn batches_and_levels_become_windows_and_unstamped_iterations_do_not() {
        let batch = |start_s: u64| BatchSample {
            start_ns: start_s * S,
            sequences: 4,
            prompt_tokens: 32,
            prefill_ns: S / 2,
            step_ns: vec![S / 2],
            new_tokens: 8,
        };
        let s2 = ScenarioReport {
            id: "s2".into(),
            kind: ScenarioKind::BatchedThroughput,
            prompts: vec![],
            error: None,
            sampling: vec![],
            unsupported: None,
            micro: None,
            ops: vec![],
            train: None,
            batching: Some("static".into()),
            points: vec![LoadPoint {
                level: 4,
                max_active: 4,
                batches: vec![batch(0), batch(1), batch(2)],
                requests: vec![],
                outputs: vec![],
                deterministic: true,
                peak_rss_bytes: None,
                error: None,
                start_unix_ns: Some(T0 + 2 * S),
            }],
        };
        let mut old = s1(&[1]);
        old.prompts[0].samples[0].start_unix_ns = None;
        let t = summarize(&report(vec![s2, old]), trace(|_| 0));
        assert_eq!(t.scenarios.len(), 1, "the unstamped S1 has no window");
        let s = &t.scenarios[0];
        assert_eq!(
            (s.scenario.as_str(), s.level, s.windows),
            ("s2", Some(4), 3)
        );
        assert_eq!(s.new_tokens, 24);
        assert!((s.energy_j.unwrap() - 750.0).abs() < 1e-6);
    }
}
