//! What `check` said about a run, kept beside it (`check.json`) so that its reports show it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::findings::Finding;
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
