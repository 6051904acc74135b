//! The scenarios' ids as the results name them (`ScenarioReport::id`, `ScenarioStats::id`,
//! baseline file names). What each scenario asks of an engine is the harness's catalog; which
//! ids exist, and which are correctness scenarios, is written here once.

use std::fmt;

use lab_protocol::ScenarioReport;

/// What, besides the engine, defines a scenario's numbers, as the engine's report shows it: per
/// prompt its tokens, the tokens generated and the warm-ups before it; per load level (S2 batch,
/// S3 concurrency) the requests served and the tokens each generated. A baseline records it, and
/// a run measured otherwise is not compared with it. (An S2 level's untimed warm-up batch is not
/// in the report.) `None` for a scenario that measured nothing.
pub fn settings_of(s: &ScenarioReport) -> Option<String> {
    let mut parts: Vec<String> = s
        .prompts
        .iter()
        .map(|p| {
            format!(
                "{} {}+{} tokens, {} warm-up",
                p.prompt,
                p.prompt_tokens,
                p.generated_token_ids.len(),
                p.warmup_iterations
            )
        })
        .collect();
    parts.extend(s.points.iter().map(|p| {
        let new = p.outputs.first().map_or(0, |o| o.token_ids.len());
        if p.requests.is_empty() {
            format!("level {}: {new} tokens per sequence", p.level)
        } else {
            format!(
                "level {}: {} requests, {new} tokens each",
                p.level,
                p.requests.len()
            )
        }
    }));
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// A scenario the lab runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScenarioId {
    /// Single-request latency at 10, 50 and 200 prompt tokens.
    S1,
    /// Batched throughput.
    S2,
    /// Concurrent load.
    S3,
    /// Long context.
    S5,
    /// The KV-cache analysis, with the cache.
    KvOn,
    /// The KV-cache analysis, without it.
    KvOff,
    /// Sampling overhead.
    Sampling,
    /// Microbenchmarks.
    Micro,
    /// The LoRA training step.
    Lora,
    /// Correctness: greedy continuations of the reference prompts.
    RefGreedy,
    /// Correctness: the reference continuation teacher-forced.
    RefTf,
}

impl ScenarioId {
    /// Every scenario, in the catalog's order.
    pub const ALL: [ScenarioId; 11] = [
        ScenarioId::S1,
        ScenarioId::S2,
        ScenarioId::S3,
        ScenarioId::S5,
        ScenarioId::KvOn,
        ScenarioId::KvOff,
        ScenarioId::Sampling,
        ScenarioId::Micro,
        ScenarioId::Lora,
        ScenarioId::RefGreedy,
        ScenarioId::RefTf,
    ];

    /// The id in files and on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            ScenarioId::S1 => "s1",
            ScenarioId::S2 => "s2",
            ScenarioId::S3 => "s3",
            ScenarioId::S5 => "s5",
            ScenarioId::KvOn => "kv-on",
            ScenarioId::KvOff => "kv-off",
            ScenarioId::Sampling => "sampling",
            ScenarioId::Micro => "micro",
            ScenarioId::Lora => "lora",
            ScenarioId::RefGreedy => "ref-greedy",
            ScenarioId::RefTf => "ref-tf",
        }
    }

    pub fn parse(id: &str) -> Option<ScenarioId> {
        ScenarioId::ALL.into_iter().find(|s| s.as_str() == id)
    }

    /// Correctness scenarios are compared with the reference, not timed against baselines.
    pub const fn is_correctness(self) -> bool {
        matches!(self, ScenarioId::RefGreedy | ScenarioId::RefTf)
    }
}

impl fmt::Display for ScenarioId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `s.id == ScenarioId::S1`: an id as files write it compared with a scenario.
impl PartialEq<ScenarioId> for String {
    fn eq(&self, other: &ScenarioId) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<ScenarioId> for str {
    fn eq(&self, other: &ScenarioId) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<ScenarioId> for &str {
    fn eq(&self, other: &ScenarioId) -> bool {
        *self == other.as_str()
    }
}

/// Ids of the correctness scenarios (their timings are not statistics).
pub fn is_correctness_scenario(id: &str) -> bool {
    ScenarioId::parse(id).is_some_and(ScenarioId::is_correctness)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_only_the_reference_scenarios_are_correctness() {
        for s in ScenarioId::ALL {
            assert_eq!(ScenarioId::parse(s.as_str()), Some(s));
        }
        assert_eq!(ScenarioId::parse("s4"), None);
        let c: Vec<_> = ScenarioId::ALL
            .into_iter()
            .filter(|s| s.is_correctness())
            .collect();
        assert_eq!(c, [ScenarioId::RefGreedy, ScenarioId::RefTf]);
        assert!(is_correctness_scenario("ref-tf") && !is_correctness_scenario("s1"));
        assert!(!is_correctness_scenario("unknown"));
    }
}
