//! The one table of measured metrics: each metric's name (as stored in result and baseline
//! files), unit, direction and how it is extracted from an engine's raw samples. Statistics,
//! baselines, reports and charts take metrics from here, never from string literals.

use lab_protocol::PromptReport;

/// A metric the harness derives from raw samples (per prompt, over the measured iterations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    /// Start of prefill to the first generated token.
    TtftMs,
    /// Prompt tokens / TTFT.
    PrefillTokPerS,
    /// Tokens after the first / time after the first.
    DecodeTokPerS,
    /// Start of prefill to the last generated token.
    E2eMs,
    /// Every gap between consecutive tokens, pooled over iterations.
    InterTokenMs,
}

impl Metric {
    /// Every metric, in report order.
    pub const ALL: [Metric; 5] = [
        Metric::TtftMs,
        Metric::PrefillTokPerS,
        Metric::DecodeTokPerS,
        Metric::E2eMs,
        Metric::InterTokenMs,
    ];

    /// The metrics whose medians are compared against baselines.
    pub const CHECKED: [Metric; 4] = [
        Metric::TtftMs,
        Metric::PrefillTokPerS,
        Metric::DecodeTokPerS,
        Metric::E2eMs,
    ];

    /// The name in result and baseline files (`ttft_ms`).
    pub const fn name(self) -> &'static str {
        match self {
            Metric::TtftMs => "ttft_ms",
            Metric::PrefillTokPerS => "prefill_tok_per_s",
            Metric::DecodeTokPerS => "decode_tok_per_s",
            Metric::E2eMs => "e2e_ms",
            Metric::InterTokenMs => "inter_token_ms",
        }
    }

    /// What a person reads in a table header (`TTFT`).
    pub const fn label(self) -> &'static str {
        match self {
            Metric::TtftMs => "TTFT",
            Metric::PrefillTokPerS => "prefill",
            Metric::DecodeTokPerS => "decode",
            Metric::E2eMs => "e2e",
            Metric::InterTokenMs => "inter-token",
        }
    }

    pub const fn unit(self) -> &'static str {
        match self {
            Metric::TtftMs | Metric::E2eMs | Metric::InterTokenMs => "ms",
            Metric::PrefillTokPerS | Metric::DecodeTokPerS => "tok/s",
        }
    }

    /// A larger value is better (throughputs); a smaller one is better (latencies).
    pub const fn higher_is_better(self) -> bool {
        match self {
            Metric::PrefillTokPerS | Metric::DecodeTokPerS => true,
            Metric::TtftMs | Metric::E2eMs | Metric::InterTokenMs => false,
        }
    }

    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The metric's samples for one prompt: one per measured iteration, except `InterTokenMs`
    /// (every gap of every iteration). Iterations where a metric is undefined (decode rate of a
    /// one-token generation) contribute nothing.
    pub fn samples(self, p: &PromptReport) -> Vec<f64> {
        let it = p.samples.iter();
        match self {
            Metric::TtftMs => it.map(|x| x.ttft_ns as f64 / 1e6).collect(),
            Metric::E2eMs => it.map(|x| x.e2e_ns as f64 / 1e6).collect(),
            Metric::PrefillTokPerS => it.map(|x| x.prefill_tok_per_s(p.prompt_tokens)).collect(),
            Metric::DecodeTokPerS => it.filter_map(|x| x.decode_tok_per_s()).collect(),
            Metric::InterTokenMs => it
                .flat_map(|x| x.inter_token_ns.iter().map(|&n| n as f64 / 1e6))
                .collect(),
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut names: Vec<_> = Metric::ALL.iter().map(|m| m.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Metric::ALL.len());
        for m in Metric::ALL {
            assert_eq!(Metric::from_name(m.name()), Some(m));
        }
        assert_eq!(Metric::from_name("tok_per_s"), None);
    }

    #[test]
    fn throughputs_are_higher_is_better_and_latencies_are_not() {
        for m in Metric::ALL {
            assert_eq!(m.higher_is_better(), m.unit() == "tok/s", "{m}");
        }
        assert!(Metric::CHECKED.iter().all(|m| Metric::ALL.contains(m)));
    }
}
