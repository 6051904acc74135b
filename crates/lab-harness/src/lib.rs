//! The harness: execution only. A run is a [`BenchSpec`] prepared on this machine into a
//! [`BenchPlan`] ([`plan`]: the model, each target's launch or container, provenance) and
//! executed by [`bench`] ([`run`]). The harness never links an engine: engines are processes
//! that speak `lab-protocol` JSON ([`runner`]), natively or in a container ([`container`]).
//!
//! What a run writes and every judgement over it are `lab-results`; the reports written at
//! the end of a run are rendered by `lab-report`.

pub mod catalog;
pub mod container;
pub mod footprint;
pub mod launch;
pub mod model;
pub mod options;
pub mod placement;
pub mod plan;
pub mod prepare;
pub mod probe;
pub mod progress;
pub mod provenance;
pub mod run;
pub mod runner;
pub mod startup;
pub mod telemetry;

use std::path::Path;

pub use lab_results::spec::BenchSpec;
pub use plan::{build_request, scenario_requests, BenchPlan, PreparedTarget};
pub use run::{bench, bench_with, Interrupted};

pub use lab_results::{sha256_file, Error, Result};

/// `path` relative to `root` when it lies inside it; under the model volume or the cargo target
/// directory given by the environment, `$LAB_MODELS_DIR/…` or `$CARGO_TARGET_DIR/…` (results
/// never carry this machine's layout); else as given.
pub fn display_path(root: &Path, path: &Path) -> String {
    let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let abs = canon(path);
    if let Ok(rel) = abs.strip_prefix(canon(root)) {
        return rel.display().to_string();
    }
    for var in ["LAB_MODELS_DIR", "CARGO_TARGET_DIR"] {
        let Some(dir) = std::env::var_os(var).filter(|d| !d.is_empty()) else {
            continue;
        };
        if let Ok(rel) = abs.strip_prefix(canon(Path::new(&dir))) {
            return format!("${var}/{}", rel.display());
        }
    }
    path.display().to_string()
}
