//! What `check` says about a run: one [`Finding`] per comparison, with a [`Verdict`]. Shared by
//! the baseline comparison ([`crate::baseline`]) and the correctness gate
//! ([`crate::correctness`]).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    WithinNoise,
    Improved,
    Regressed,
    TooNoisy,
    TokenMismatch,
    /// Below the correctness gate against the reference.
    Incorrect,
    MissingBaseline,
    MissingResult,
}

impl Verdict {
    pub fn fails(self) -> bool {
        !matches!(self, Verdict::Pass | Verdict::WithinNoise)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub target: String,
    pub scenario: String,
    pub prompt: String,
    pub metric: String,
    pub verdict: Verdict,
    pub detail: String,
}
