//! Fuzz targets of what the harness and the engines read from each other and from disk
//! (`lab_fuzz`; corpus under `fuzz/corpus/`): the protocol's request (as every Rust
//! engine parses and validates it) and report (as the harness parses it, then derives
//! statistics, correctness and analyses from it), a run directory's `run.json` and result files
//! (loaded, compared and rendered), the baseline files `check` reads, and the claims file.
//! Seeds are built from the protocol types or taken, shrunk, from committed `results/` and
//! `baselines/`.

use std::path::{Path, PathBuf};

use serde_json::Value;

#[global_allocator]
static ALLOC: lab_fuzz::GuardedAlloc = lab_fuzz::GuardedAlloc;

/// CI's budget per target (seconds in release; `LAB_FUZZ_CASES` for a longer campaign).
pub const CASES: usize = 3000;

/// Pretty JSON of a value (what the harness writes).
macro_rules! pretty {
    ($v:expr) => {
        serde_json::to_vec_pretty(&$v).unwrap()
    };
}

mod baseline;
mod protocol;
mod results;

/// The lab's errors are one line (a newline in a quoted field name is escaped).
pub fn assert_one_line(e: &str) {
    assert!(!e.contains(['\n', '\r']), "an error of several lines: {e}");
}

/// A committed JSON file (path relative to the project root).
pub fn committed(path: &str) -> Value {
    let p = lab_testkit::root().join(path);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every array cut to its first `keep` elements: a committed result of 200 KB becomes a seed
/// of a few KB with every field still there.
pub fn shrink(v: &mut Value, keep: usize) {
    match v {
        Value::Array(a) => {
            a.truncate(keep);
            a.iter_mut().for_each(|x| shrink(x, keep));
        }
        Value::Object(o) => o.values_mut().for_each(|x| shrink(x, keep)),
        _ => {}
    }
}

/// A fresh temporary directory for one target.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lab-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An error of a file reader: it starts with the file and says where (line and column, byte,
/// or the field) or what (the version, the missing file).
pub fn assert_names_file(e: &str, file: &Path, places: &[&str]) {
    let file = file.display().to_string();
    assert!(
        e.starts_with(&file) && places.iter().any(|p| e.contains(p)),
        "an error that does not name the file {file} and one of {places:?}: {e}"
    );
    assert_one_line(e);
}
