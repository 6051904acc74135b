//! The report formats a run writes, each laying out the computed report model.

use crate::charts::DIR;
use crate::input::{Exporter, Input, HTML_FILE};
use crate::model::Model;

/// `report.md`.
pub struct Markdown;

impl Exporter for Markdown {
    fn render_with(&self, input: &Input, _model: &Model) -> Vec<(String, String)> {
        vec![("report.md".into(), crate::markdown::document(input))]
    }
}

/// `charts/<id>.svg` for every chart.
pub struct SvgFiles;

impl Exporter for SvgFiles {
    fn render_with(&self, _input: &Input, model: &Model) -> Vec<(String, String)> {
        model
            .charts
            .charts
            .iter()
            .map(|c| (format!("{DIR}/{}.svg", c.id), c.svg.clone()))
            .collect()
    }
}

/// `index.html`.
pub struct Html;

impl Exporter for Html {
    fn render_with(&self, input: &Input, model: &Model) -> Vec<(String, String)> {
        vec![(HTML_FILE.into(), crate::html::page(input, model))]
    }
}

/// Every report a run writes.
pub fn exporters() -> Vec<Box<dyn Exporter>> {
    vec![Box::new(Markdown), Box::new(SvgFiles), Box::new(Html)]
}
