//! SmolLM2's real `tokenizer.json`, rebuilt from the GGUF's `tokenizer.ggml.*` metadata.
//!
//! The automatic GGUF→tokenizer converters of candle, mistral.rs and transformers all build a
//! different pre-tokenizer for this model (prefix space, no digit split, other regexes), so the
//! lab writes the file itself, in the shape of the tokenizer Hugging Face ships for SmolLM2:
//! no normalizer; pre-tokenizer `Sequence[Digits(individual_digits), ByteLevel(add_prefix_space
//! = false, use_regex)]`; BPE without unk token or byte fallback; ByteLevel decoder; the GGUF's
//! control tokens (token_type 3) as special added tokens. llama.cpp's `smollm` pre-tokenizer is
//! the same algorithm; the tests compare against independently produced ids.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use serde_json::{json, Value};

use crate::{io_err, write_atomic, Error, Result};

/// GGUF `token_type` of control tokens.
const CONTROL: i32 = 3;

pub(crate) fn read_gguf(path: &Path) -> Result<(gguf_file::Content, std::fs::File)> {
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let content = gguf_file::Content::read(&mut file).map_err(|err| Error::Candle {
        path: path.to_path_buf(),
        err,
    })?;
    Ok((content, file))
}

fn meta<'a>(c: &'a gguf_file::Content, path: &Path, key: &str) -> Result<&'a gguf_file::Value> {
    c.metadata.get(key).ok_or_else(|| {
        Error::Msg(format!(
            "{}: GGUF metadata key `{key}` is missing",
            path.display()
        ))
    })
}

fn bad(path: &Path, key: &str, e: candle_core::Error) -> Error {
    Error::Msg(format!(
        "{}: GGUF metadata key `{key}`: {e}",
        path.display()
    ))
}

/// Builds the tokenizer JSON value from GGUF metadata.
pub fn tokenizer_json_from_gguf(content: &gguf_file::Content, path: &Path) -> Result<Value> {
    let model = meta(content, path, "tokenizer.ggml.model")?
        .to_string()
        .map_err(|e| bad(path, "tokenizer.ggml.model", e))?;
    if model != "gpt2" {
        return Err(Error::Msg(format!(
            "{}: tokenizer.ggml.model is `{model}`, only `gpt2` (byte-level BPE) is supported",
            path.display()
        )));
    }
    let pre = meta(content, path, "tokenizer.ggml.pre")?
        .to_string()
        .map_err(|e| bad(path, "tokenizer.ggml.pre", e))?;
    if pre != "smollm" {
        return Err(Error::Msg(format!(
            "{}: tokenizer.ggml.pre is `{pre}`; this builder reproduces only the `smollm` pre-tokenizer",
            path.display()
        )));
    }
    let tokens: Vec<String> = meta(content, path, "tokenizer.ggml.tokens")?
        .to_vec()
        .map_err(|e| bad(path, "tokenizer.ggml.tokens", e))?
        .iter()
        .map(|v| v.to_string().cloned())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(path, "tokenizer.ggml.tokens", e))?;
    let types: Vec<i32> = meta(content, path, "tokenizer.ggml.token_type")?
        .to_vec()
        .map_err(|e| bad(path, "tokenizer.ggml.token_type", e))?
        .iter()
        .map(|v| v.to_i32())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(path, "tokenizer.ggml.token_type", e))?;
    let merges: Vec<String> = meta(content, path, "tokenizer.ggml.merges")?
        .to_vec()
        .map_err(|e| bad(path, "tokenizer.ggml.merges", e))?
        .iter()
        .map(|v| v.to_string().cloned())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(path, "tokenizer.ggml.merges", e))?;
    if types.len() != tokens.len() {
        return Err(Error::Msg(format!(
            "{}: {} tokens but {} token types",
            path.display(),
            tokens.len(),
            types.len()
        )));
    }

    let mut vocab = serde_json::Map::new();
    let mut seen = BTreeMap::new();
    for (id, t) in tokens.iter().enumerate() {
        if let Some(first) = seen.insert(t.as_str(), id) {
            return Err(Error::Msg(format!(
                "{}: token {t:?} appears twice (ids {first} and {id})",
                path.display()
            )));
        }
        vocab.insert(t.clone(), json!(id));
    }
    let merges: Vec<Value> = merges
        .iter()
        .map(|m| {
            let (a, b) = m.split_once(' ').ok_or_else(|| {
                Error::Msg(format!("{}: merge {m:?} is not `a b`", path.display()))
            })?;
            Ok(json!([a, b]))
        })
        .collect::<Result<_>>()?;
    let added: Vec<Value> = tokens
        .iter()
        .enumerate()
        .filter(|(id, _)| types[*id] == CONTROL)
        .map(|(id, t)| {
            json!({"id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();

    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
            ]
        },
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": merges
        }
    }))
}

/// Writes `tokenizer.json` for the GGUF at `gguf`, after checking it loads in `tokenizers`.
pub fn write_tokenizer_json(gguf: &Path, dest: &Path) -> Result<()> {
    let (content, _) = read_gguf(gguf)?;
    let value = tokenizer_json_from_gguf(&content, gguf)?;
    let text = serde_json::to_string(&value).expect("tokenizer json serializes");
    tokenizers::Tokenizer::from_bytes(text.as_bytes()).map_err(|e| {
        Error::Msg(format!(
            "{}: rebuilt tokenizer does not load: {e}",
            dest.display()
        ))
    })?;
    write_atomic(dest, text.as_bytes())
}
