//! What `check` said about a run, kept beside it (`check.json`) so that its reports show it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::findings::Finding;
use crate::results::TargetResult;
use crate::Result;

/// What `check` said about a run, kept beside it (`check.json`) so its reports show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRecord {
    /// The baseline directory compared with, or why there was none.
    pub against: String,
    /// `passed: 41 comparisons`, `failed: 2 of 41 comparisons`, `no baseline: …`.
    pub outcome: CheckOutcome,
    pub findings: Vec<Finding>,
}

/// What `check` concluded; written as text (`passed: 41 comparisons`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum CheckOutcome {
    /// Every judged number unchanged and every token id as expected; `unjudged` numbers this
    /// machine could not judge (said, not passed).
    Passed {
        comparisons: usize,
        unjudged: usize,
    },
    /// Nothing failed, but some comparisons have no baseline (exit status 2).
    Incomplete {
        missing: usize,
        comparisons: usize,
    },
    Failed {
        failing: usize,
        comparisons: usize,
    },
    /// Why there is no baseline to compare with.
    NoBaseline(String),
}

impl CheckOutcome {
    pub fn passed(&self) -> bool {
        matches!(self, CheckOutcome::Passed { .. })
    }
}

impl std::fmt::Display for CheckOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckOutcome::Passed {
                comparisons,
                unjudged: 0,
            } => write!(f, "passed: {comparisons} comparisons"),
            CheckOutcome::Passed {
                comparisons,
                unjudged,
            } => write!(
                f,
                "passed: {comparisons} comparisons ({unjudged} not judged on this machine)"
            ),
            CheckOutcome::Incomplete {
                missing,
                comparisons,
            } => write!(
                f,
                "incomplete: {missing} of {comparisons} comparisons have no baseline"
            ),
            CheckOutcome::Failed {
                failing,
                comparisons,
            } => write!(f, "failed: {failing} of {comparisons} comparisons"),
            CheckOutcome::NoBaseline(why) => write!(f, "no baseline: {why}"),
        }
    }
}

impl From<CheckOutcome> for String {
    fn from(o: CheckOutcome) -> String {
        o.to_string()
    }
}

impl TryFrom<String> for CheckOutcome {
    type Error = String;

    fn try_from(text: String) -> std::result::Result<CheckOutcome, String> {
        let count = |s: &str| s.parse::<usize>().ok();
        let parsed = if let Some(why) = text.strip_prefix("no baseline: ") {
            Some(CheckOutcome::NoBaseline(why.to_string()))
        } else if let Some(rest) = text.strip_prefix("passed: ") {
            let (n, unjudged) = match rest.split_once(" comparisons (") {
                Some((n, tail)) => (
                    n,
                    tail.strip_suffix(" not judged on this machine)")
                        .and_then(count),
                ),
                None => (rest.strip_suffix(" comparisons").unwrap_or(""), Some(0)),
            };
            count(n)
                .zip(unjudged)
                .map(|(comparisons, unjudged)| CheckOutcome::Passed {
                    comparisons,
                    unjudged,
                })
        } else if let Some(rest) = text.strip_prefix("incomplete: ") {
            rest.strip_suffix(" comparisons have no baseline")
                .and_then(|r| r.split_once(" of "))
                .and_then(|(a, b)| {
                    Some(CheckOutcome::Incomplete {
                        missing: count(a)?,
                        comparisons: count(b)?,
                    })
                })
        } else {
            text.strip_prefix("failed: ")
                .and_then(|r| r.strip_suffix(" comparisons"))
                .and_then(|r| r.split_once(" of "))
                .and_then(|(a, b)| {
                    Some(CheckOutcome::Failed {
                        failing: count(a)?,
                        comparisons: count(b)?,
                    })
                })
        };
        parsed.ok_or_else(|| {
            format!(
                "outcome `{text}`: expected `passed: N comparisons`, `incomplete: N of M comparisons have no baseline`, `failed: N of M comparisons` or `no baseline: …`"
            )
        })
    }
}

pub const CHECK_FILE: &str = "check.json";

/// Reads `check.json` beside a run, if `check` wrote one.
pub fn read_check(run_dir: &Path) -> Result<Option<CheckRecord>> {
    let path = run_dir.join(CHECK_FILE);
    if !path.exists() {
        return Ok(None);
    }
    crate::results::read_json(&path).map(Some)
}

/// The largest share of a scenario's measured windows that may be throttled for `check` to
/// compare its numbers (`--max-throttled`).
pub const DEFAULT_MAX_THROTTLED: f64 = 0.05;

/// One line per target, scenario and level whose share of throttled windows exceeds `max`
/// (`check` refuses such a run: its numbers measure the cooling, not the engine).
pub fn throttled_beyond(results: &[TargetResult], max: f64) -> Vec<String> {
    let mut out = Vec::new();
    for r in results {
        let Some(t) = &r.telemetry else { continue };
        for s in t.scenarios.iter().filter(|s| s.throttled_fraction() > max) {
            out.push(format!(
                "{}{}: {}{} on GPU {}: {} of {} measured windows throttled ({})",
                r.target,
                r.repetition
                    .map(|k| format!(" (run {k})"))
                    .unwrap_or_default(),
                s.scenario,
                s.level.map(|l| format!(" level {l}")).unwrap_or_default(),
                s.device,
                s.throttled_windows,
                s.windows,
                s.slowdowns.join(", ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_written_and_read_as_their_text() {
        for o in [
            CheckOutcome::Passed {
                comparisons: 41,
                unjudged: 0,
            },
            CheckOutcome::Passed {
                comparisons: 41,
                unjudged: 12,
            },
            CheckOutcome::Incomplete {
                missing: 60,
                comparisons: 220,
            },
            CheckOutcome::Failed {
                failing: 2,
                comparisons: 41,
            },
            CheckOutcome::NoBaseline("no baseline for model `x`".into()),
        ] {
            let json = serde_json::to_string(&o).unwrap();
            assert_eq!(json, format!("{:?}", o.to_string()));
            assert_eq!(serde_json::from_str::<CheckOutcome>(&json).unwrap(), o);
        }
        assert!(serde_json::from_str::<CheckOutcome>("\"maybe\"").is_err());
        assert!(CheckOutcome::Passed {
            comparisons: 1,
            unjudged: 0
        }
        .passed());
        // Records written before `unjudged` existed still read.
        assert_eq!(
            serde_json::from_str::<CheckOutcome>("\"passed: 7 comparisons\"").unwrap(),
            CheckOutcome::Passed {
                comparisons: 7,
                unjudged: 0
            }
        );
    }
}
