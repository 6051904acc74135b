//! Reports rendered from a run's saved files: the report model ([`model::Model`]: the figures
//! several formats show, computed once), then one [`Exporter`] per format laying it out, each a
//! pure function of the [`Input`] (so a report can be re-rendered from `results/` at any time,
//! also for runs recorded before a format existed): `report.md`, `charts/*.svg` and
//! `index.html`; the
//! comparison of two runs ([`compare`]) and the cross-machine report ([`merged`]).
//!
//! This crate reads `lab-results` and never the harness: a report cannot run an engine.

pub mod analyses;
pub mod charts;
pub mod compare;
mod exporters;
mod fmt;
pub mod gate_study;
mod gpu;
pub mod html;
mod input;
mod load;
mod markdown;
pub mod merged;
pub mod model;

use std::path::Path;

pub use exporters::{exporters, Html, Markdown, SvgFiles};
pub use input::{Exporter, Input, HTML_FILE};
use lab_results::check::read_check;
use lab_results::claims;
use lab_results::results::{write_atomic, RunManifest, TargetResult};
use lab_results::{Error, Result};
pub use markdown::render as render_markdown;

/// Renders every report into `run_dir`. Everything is rendered in memory first, then each file
/// is written atomically; chart files of an earlier rendering that this one no longer draws are
/// removed.
pub fn write_all(run_dir: &Path, input: &Input) -> Result<()> {
    let model = model::Model::of(input.results);
    let files: Vec<(String, String)> = exporters()
        .iter()
        .flat_map(|e| e.render_with(input, &model))
        .collect();
    let charts = run_dir.join(charts::DIR);
    if files.iter().any(|(name, _)| name.starts_with(charts::DIR)) {
        std::fs::create_dir_all(&charts).map_err(|e| Error::io(&charts, e))?;
    }
    for (name, text) in &files {
        write_atomic(&run_dir.join(name), text.as_bytes())?;
    }
    if let Ok(rd) = std::fs::read_dir(&charts) {
        for e in rd.flatten() {
            let name = format!("{}/{}", charts::DIR, e.file_name().to_string_lossy());
            if name.ends_with(".svg") && !files.iter().any(|(n, _)| *n == name) {
                std::fs::remove_file(e.path()).map_err(|err| Error::io(&e.path(), err))?;
            }
        }
    }
    Ok(())
}

/// Renders a run's reports from what it recorded: its price (`plan.price`), the committed claims
/// and `check.json` when `check` has run on it.
pub fn write_run(run_dir: &Path, manifest: &RunManifest, results: &[TargetResult]) -> Result<()> {
    let check = read_check(run_dir)?;
    let claims = claims::Claims::builtin();
    let input = Input {
        manifest,
        results,
        price: manifest.plan.as_ref().and_then(|p| p.price.as_ref()),
        claims: &claims,
        check: check.as_ref(),
    };
    write_all(run_dir, &input)
}
