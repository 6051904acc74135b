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
    /// The run was disturbed within itself (its robust CV over enough samples): not compared.
    TooNoisy,
    /// This machine cannot resolve the number at the requested tolerance (or there is no
    /// evidence of how far it can): said with what would make it judgeable. Not a pass.
    CannotJudge,
    TokenMismatch,
    /// Below the correctness gate against the reference.
    Incorrect,
    MissingBaseline,
    MissingResult,
}

impl Verdict {
    /// A verdict that fails `check` (exit 1, or 2 when every failure is a missing baseline).
    /// Numbers that could not be judged do not fail it; they are counted and said.
    pub fn fails(self) -> bool {
        !matches!(
            self,
            Verdict::Pass | Verdict::WithinNoise | Verdict::TooNoisy | Verdict::CannotJudge
        )
    }

    /// A number compared and found unchanged.
    pub fn passes(self) -> bool {
        matches!(self, Verdict::Pass | Verdict::WithinNoise)
    }

    /// What a person reads (`cannot judge here`).
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::WithinNoise => "within noise",
            Verdict::Improved => "improved",
            Verdict::Regressed => "regressed",
            Verdict::TooNoisy => "too noisy (disturbed run)",
            Verdict::CannotJudge => "cannot judge here",
            Verdict::TokenMismatch => "token mismatch",
            Verdict::Incorrect => "incorrect",
            Verdict::MissingBaseline => "missing baseline",
            Verdict::MissingResult => "missing result",
        }
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
