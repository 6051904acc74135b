//! What every report is rendered from, and the one trait every format implements.

use lab_results::check::CheckRecord;
use lab_results::claims;
use lab_results::cost::Price;
use lab_results::results::{RunManifest, TargetResult};

use crate::model::Model;

/// Everything a report is rendered from.
pub struct Input<'a> {
    pub manifest: &'a RunManifest,
    pub results: &'a [TargetResult],
    /// The machine's hourly price, for cost per token (none: costs are not shown).
    pub price: Option<&'a Price>,
    pub claims: &'a claims::Claims,
    pub check: Option<&'a CheckRecord>,
}

/// One report format: it lays out the computed report model.
pub trait Exporter {
    /// Its files (path relative to the run directory, contents): deterministic for the same
    /// input.
    fn render_with(&self, input: &Input, model: &Model) -> Vec<(String, String)>;

    /// [`Exporter::render_with`] on a model computed for this format alone.
    fn render(&self, input: &Input) -> Vec<(String, String)> {
        self.render_with(input, &Model::of(input.results))
    }
}

/// The HTML report's file name.
pub const HTML_FILE: &str = "index.html";
