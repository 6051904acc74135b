//! Everything a run persists and every pure judgement over it: the saved schema of a run
//! directory ([`results`]), the settings a plan records ([`spec`], [`measure`], [`startup`],
//! [`micro`], [`train`], [`limits`]), statistics ([`stats`], [`metric`], [`ratio`]), and the
//! verdicts: baselines ([`baseline`]), the reference ([`correctness`]), published claims
//! ([`claims`]), a report checked against its request ([`consistency`]), all saying
//! [`findings`].
//!
//! No process is spawned and nothing is rendered here: the harness (`lab-harness`) executes
//! runs and writes these files, the renderers (`lab-report`) read them. Both depend on this
//! crate, neither on the other's internals.

pub mod analysis;
pub mod baseline;
pub mod check;
pub mod claims;
pub mod consistency;
pub mod correctness;
pub mod cost;
pub mod findings;
pub mod footprint;
pub mod gate;
pub mod limits;
pub mod measure;
pub mod metric;
pub mod micro;
pub mod provenance;
pub mod ratio;
pub mod results;
pub mod runtime;
pub mod scenario;
pub mod settings;
pub mod spec;
pub mod startup;
pub mod stats;
pub mod study;
pub mod telemetry;
pub mod train;

use std::path::{Path, PathBuf};

pub use scenario::ScenarioId;
pub use spec::BenchSpec;

/// The lab's engines by name, in the catalog's order (the harness's catalog is tested to have
/// targets of these and no other).
pub const ENGINES: [&str; 6] = [
    "candle",
    "mistralrs",
    "llamacpp",
    "native",
    "burn",
    "pytorch",
];

/// The lab's one library error: a file and what went wrong with it, or a message that names
/// what it is about. `lab-harness` and `lab-report` return it too.
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

/// sha256 of a file's contents, lowercase hex.
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
