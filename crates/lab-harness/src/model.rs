//! Resolving `--model` to a model volume entry (or a user's own HF Llama directory) and checking
//! that its files are complete before any engine starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lab_protocol::manifest::{Manifest, MANIFEST_FILE};
use lab_protocol::WeightFormat;

use crate::{sha256_file, Error, Result};
use lab_results::results::{read_json, ModelInfo};

#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub name: String,
    pub dir: PathBuf,
    pub synthetic: bool,
    pub tokenizer_json: PathBuf,
    pub eos_token_ids: Vec<u32>,
    /// Weight formats present in the directory.
    pub formats: Vec<WeightFormat>,
    pub sha256: BTreeMap<String, String>,
    /// The longest sequence the model was trained for (`max_position_embeddings` of
    /// `config.json`), when the directory says.
    pub context_length: Option<u32>,
    /// `vocab_size` of `config.json`, when the directory says.
    pub vocab_size: Option<u32>,
}

impl ResolvedModel {
    pub fn info(&self) -> ModelInfo {
        ModelInfo {
            name: self.name.clone(),
            synthetic: self.synthetic,
            dir: self.dir.display().to_string(),
            sha256: self.sha256.clone(),
        }
    }
}

/// Is `spec` a volume entry name (as opposed to a path)?
pub fn is_entry_name(spec: &str) -> bool {
    !spec.contains('/') && !spec.starts_with('.')
}

/// Resolves a volume entry (`<models_dir>/<name>`, with MANIFEST.json) or a directory path.
/// Files are checked against the manifest's sizes (a cheap check for truncation; `cargo xtask
/// models` does the full sha256 check).
pub fn resolve(models_dir: &Path, spec: &str) -> Result<ResolvedModel> {
    let dir = if is_entry_name(spec) {
        models_dir.join(spec)
    } else {
        PathBuf::from(spec)
    };
    if !dir.is_dir() {
        return Err(Error::msg(format!(
            "model `{spec}`: {} does not exist (run `cargo xtask models`{})",
            dir.display(),
            if spec.starts_with("synthetic-") {
                " --synthetic <shape>"
            } else {
                ""
            }
        )));
    }
    let manifest_path = dir.join(MANIFEST_FILE);
    let (name, synthetic, sha256) = if manifest_path.exists() {
        let m: Manifest = read_json(&manifest_path)?;
        if let Some(why) = m.invalid() {
            return Err(Error::msg(format!("{}: {why}", manifest_path.display())));
        }
        for (file, entry) in &m.files {
            let p = dir.join(file);
            let len = std::fs::metadata(&p).map(|md| md.len()).map_err(|_| {
                Error::msg(format!(
                    "model `{}`: {} is missing (rebuild with `cargo xtask models`)",
                    m.name,
                    p.display()
                ))
            })?;
            if len != entry.bytes {
                return Err(Error::msg(format!(
                    "model `{}`: {} is {len} bytes but MANIFEST.json says {} (truncated or modified; rebuild with `cargo xtask models`)",
                    m.name,
                    p.display(),
                    entry.bytes
                )));
            }
        }
        let sha = m
            .files
            .iter()
            .map(|(k, v)| (k.clone(), v.sha256.clone()))
            .collect();
        (m.name.clone(), m.synthetic, sha)
    } else {
        // A user's own HF directory: hash what engines will load, for provenance.
        let mut sha = BTreeMap::new();
        for f in [
            "config.json",
            "model.safetensors",
            "model.gguf",
            "tokenizer.json",
        ] {
            let p = dir.join(f);
            if p.exists() {
                eprintln!("hashing {} for provenance", p.display());
                sha.insert(f.to_string(), sha256_file(&p)?);
            }
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| spec.to_string());
        (name, false, sha)
    };
    let tokenizer_json = dir.join("tokenizer.json");
    if !tokenizer_json.exists() {
        return Err(Error::msg(format!(
            "model `{name}`: {} is missing",
            tokenizer_json.display()
        )));
    }
    let mut formats = Vec::new();
    if dir.join("model.gguf").exists() {
        formats.push(WeightFormat::Gguf);
    }
    if dir.join("model.safetensors").exists() && dir.join("config.json").exists() {
        formats.push(WeightFormat::Safetensors);
    }
    let eos_token_ids = eos_ids(&dir.join("config.json"))?;
    let context_length = context_length(&dir.join("config.json"))?;
    Ok(ResolvedModel {
        context_length,
        vocab_size: config_u32(&dir.join("config.json"), "vocab_size")?,
        name,
        dir,
        synthetic,
        tokenizer_json,
        eos_token_ids,
        formats,
        sha256,
    })
}

fn context_length(config: &Path) -> Result<Option<u32>> {
    if !config.exists() {
        return Ok(None);
    }
    let v: serde_json::Value = read_json(config)?;
    Ok(v["max_position_embeddings"].as_u64().map(|n| n as u32))
}

fn config_u32(config: &Path, key: &str) -> Result<Option<u32>> {
    if !config.exists() {
        return Ok(None);
    }
    let v: serde_json::Value = read_json(config)?;
    Ok(v[key].as_u64().map(|n| n as u32))
}

fn eos_ids(config: &Path) -> Result<Vec<u32>> {
    if !config.exists() {
        return Ok(Vec::new());
    }
    let v: serde_json::Value = read_json(config)?;
    Ok(match &v["eos_token_id"] {
        serde_json::Value::Number(n) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    })
}
