//! Reading and writing a run directory. Every file is written atomically (a `.partial` file,
//! then a rename), so a reader never sees half a file.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::schema::{RunManifest, TargetResult, RESULT_VERSION};
use crate::{Error, Result};

pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("result serializes") + "\n";
    write_atomic(path, text.as_bytes())
}

/// Writes `bytes` to `<path>.partial`, flushes it to the disk, then renames it over `path`: a
/// reader sees the old file or the new one, never a part, even after a crash or a full disk.
/// On failure (no space, a read-only directory) the partial file is removed and the error
/// names the file; `path` keeps what it held.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Msg(format!("cannot write {}: {e}", path.display())));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::Msg(format!("cannot write {}: {e}", path.display()))
    })
}

/// Reads a JSON file; an error names the file and the line and column.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| json_error(path, e))
}

/// `<path>: <what serde said>` on one line.
fn json_error(path: &Path, e: serde_json::Error) -> Error {
    Error::msg(format!(
        "{}: {}",
        path.display(),
        lab_protocol::one_line(&e.to_string())
    ))
}

/// Loads a run directory: its manifest and every target result it lists. Each problem is one
/// line naming the file: not a run directory, a corrupt or truncated file, another schema
/// version.
pub fn load_run(dir: &Path) -> Result<(RunManifest, Vec<TargetResult>)> {
    let path = dir.join("run.json");
    if !path.exists() {
        return Err(Error::msg(format!(
            "{}: not a run directory (it has no run.json; runs are written by `cargo xtask bench`)",
            dir.display()
        )));
    }
    let manifest: RunManifest = read_versioned(&path)?;
    let mut results = Vec::new();
    for t in &manifest.targets {
        if let Some(f) = &t.file {
            // a plain name inside the run directory, never a path that leaves it
            if !lab_protocol::manifest::plain_file_name(f) {
                return Err(Error::msg(format!(
                    "{}: targets: {f:?} is not a plain file name",
                    path.display()
                )));
            }
            results.push(read_versioned(&dir.join(f))?);
        }
    }
    Ok((manifest, results))
}

/// Reads a run's file after checking its `result_version` (so an older or newer file says so,
/// not which field it lacks).
fn read_versioned<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        Error::msg(format!(
            "{}: not valid JSON (corrupt or truncated?): {}",
            path.display(),
            lab_protocol::one_line(&e.to_string())
        ))
    })?;
    match value.get("result_version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(RESULT_VERSION) => {}
        Some(v) => {
            return Err(Error::msg(format!(
            "{}: written with result schema version {v}; this lab reads version {RESULT_VERSION}",
            path.display()
        )))
        }
        None => {
            return Err(Error::msg(format!(
                "{}: no result_version: not a result file of this lab",
                path.display()
            )))
        }
    }
    // Parsed again from the bytes (not from `value`), so that an error says where.
    serde_json::from_slice(&bytes).map_err(|e| json_error(path, e))
}
