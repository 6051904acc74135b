//! Reading and writing a run directory. Every file is written atomically (a `.partial` file,
//! then a rename), so a reader never sees half a file.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::schema::{RunManifest, TargetResult};
use crate::{Error, Result};

pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("result serializes") + "\n";
    write_atomic(path, text.as_bytes())
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::msg(format!("{}: {e}", path.display())))
}

/// Loads a run directory: its manifest and every target result it lists.
pub fn load_run(dir: &Path) -> Result<(RunManifest, Vec<TargetResult>)> {
    let manifest: RunManifest = read_json(&dir.join("run.json"))?;
    let mut results = Vec::new();
    for t in &manifest.targets {
        if let Some(f) = &t.file {
            results.push(read_json(&dir.join(f))?);
        }
    }
    Ok((manifest, results))
}
