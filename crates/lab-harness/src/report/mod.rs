//! Reports rendered from a run's saved files: one [`Exporter`] per format, each a pure function
//! of the manifest and the target results (so a report can be re-rendered from `results/` at any
//! time). Markdown now; charts and HTML plug in here.

mod gpu;
mod load;
mod markdown;
pub mod merged;

use std::path::Path;

pub use markdown::{render as render_markdown, Markdown};

use crate::results::{write_atomic, RunManifest, TargetResult};
use crate::Result;

/// One report format.
pub trait Exporter {
    /// The file it writes in the run directory.
    fn file_name(&self) -> &'static str;
    /// The file's contents: deterministic for the same inputs.
    fn render(&self, manifest: &RunManifest, results: &[TargetResult]) -> String;
}

/// Every report a run writes.
pub fn exporters() -> Vec<Box<dyn Exporter>> {
    vec![Box::new(Markdown)]
}

/// Renders every report into `run_dir` (atomically, each file on its own).
pub fn write_all(run_dir: &Path, manifest: &RunManifest, results: &[TargetResult]) -> Result<()> {
    for e in exporters() {
        let text = e.render(manifest, results);
        write_atomic(&run_dir.join(e.file_name()), text.as_bytes())?;
    }
    Ok(())
}
