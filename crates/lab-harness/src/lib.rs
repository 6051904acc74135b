//! The harness: orchestration, statistics, provenance, results and baselines.
//!
//! The xtask is a thin CLI over this library. The harness never links an engine: engines are
//! processes that speak `lab-protocol` JSON ([`runner`]). A run is a [`BenchSpec`] prepared into
//! a [`BenchPlan`] and executed by [`bench`] ([`run`]); statistics do no IO ([`stats`]); the
//! saved files are [`results`], the rendered ones [`report`]; baselines are compared by
//! [`baseline`], the reference by [`correctness`], both saying [`findings`].

pub mod analysis;
pub mod baseline;
pub mod catalog;
pub mod consistency;
pub mod container;
pub mod correctness;
pub mod cost;
pub mod findings;
pub mod footprint;
pub mod launch;
pub mod measure;
pub mod metric;
pub mod micro;
pub mod model;
pub mod plan;
pub mod progress;
pub mod provenance;
pub mod report;
pub mod results;
pub mod run;
pub mod runner;
pub mod spec;
pub mod startup;
pub mod stats;
pub mod telemetry;
pub mod train;

use std::path::{Path, PathBuf};

pub use plan::{build_request, scenario_requests, BenchPlan, PreparedTarget};
pub use run::{bench, bench_with, Interrupted};
pub use spec::BenchSpec;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{0}")]
    Msg(String),
}

impl Error {
    pub fn io(path: &Path, err: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            err,
        }
    }
    pub fn msg(m: impl Into<String>) -> Self {
        Error::Msg(m.into())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

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
