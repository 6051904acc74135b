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
    pub outcome: String,
    pub findings: Vec<Finding>,
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
