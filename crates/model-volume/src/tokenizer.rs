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

use crate::gguf::{kind, shown, wrong_type};
use crate::{write_atomic, Error, Result};

/// GGUF `token_type` of control tokens.
const CONTROL: i32 = 3;

/// The GGUF's metadata and tensor directory, its header checked first ([`crate::gguf`]).
pub(crate) fn read_gguf(path: &Path) -> Result<(gguf_file::Content, std::fs::File)> {
    crate::gguf::read(path)
}

fn meta<'a>(c: &'a gguf_file::Content, path: &Path, key: &str) -> Result<&'a gguf_file::Value> {
    c.metadata.get(key).ok_or_else(|| {
        Error::Msg(format!(
            "{}: GGUF metadata key `{key}` is missing",
            path.display()
        ))
    })
}

fn string<'a>(c: &'a gguf_file::Content, path: &Path, key: &str) -> Result<&'a str> {
    match meta(c, path, key)? {
        gguf_file::Value::String(s) => Ok(s),
        v => Err(wrong_type(path, key, v, "a string")),
    }
}

/// Every element of the array `key`, converted by `f` (`None`: not the type it should be).
fn array<'a, T>(
    c: &'a gguf_file::Content,
    path: &Path,
    key: &str,
    expected: &str,
    f: impl Fn(&'a gguf_file::Value) -> Option<T>,
) -> Result<Vec<T>> {
    let items = match meta(c, path, key)? {
        gguf_file::Value::Array(items) => items,
        v => return Err(wrong_type(path, key, v, "an array")),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            f(v).ok_or_else(|| {
                Error::Msg(format!(
                    "{}: GGUF metadata `{key}`[{i}] is {}, expected {expected}",
                    path.display(),
                    kind(v)
                ))
            })
        })
        .collect()
}

/// Builds the tokenizer JSON value from GGUF metadata.
pub fn tokenizer_json_from_gguf(content: &gguf_file::Content, path: &Path) -> Result<Value> {
    let model = string(content, path, "tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(Error::Msg(format!(
            "{}: tokenizer.ggml.model is `{}`, only `gpt2` (byte-level BPE) is supported",
            path.display(),
            shown(model)
        )));
    }
    let pre = string(content, path, "tokenizer.ggml.pre")?;
    if pre != "smollm" {
        return Err(Error::Msg(format!(
            "{}: tokenizer.ggml.pre is `{}`; this builder reproduces only the `smollm` pre-tokenizer",
            path.display(),
            shown(pre)
        )));
    }
    let as_string = |v: &gguf_file::Value| match v {
        gguf_file::Value::String(s) => Some(s.clone()),
        _ => None,
    };
    let tokens: Vec<String> = array(
        content,
        path,
        "tokenizer.ggml.tokens",
        "a string",
        as_string,
    )?;
    let types: Vec<i32> = array(
        content,
        path,
        "tokenizer.ggml.token_type",
        "an i32",
        |v| match v {
            gguf_file::Value::I32(t) => Some(*t),
            _ => None,
        },
    )?;
    let merges: Vec<String> = array(
        content,
        path,
        "tokenizer.ggml.merges",
        "a string",
        as_string,
    )?;
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

    Ok(document(added, vocab, merges))
}

/// The `tokenizer.json` document of SmolLM2's byte-level BPE with these tokens and merges.
fn document(added: Vec<Value>, vocab: serde_json::Map<String, Value>, merges: Vec<Value>) -> Value {
    json!({
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
    })
}

/// The text of `tokenizer.json` for the GGUF whose header is `content` (`path` names it in
/// errors), checked to load in `tokenizers`.
pub fn tokenizer_json_text(content: &gguf_file::Content, path: &Path) -> Result<String> {
    let value = tokenizer_json_from_gguf(content, path)?;
    let text = serde_json::to_string(&value).expect("tokenizer json serializes");
    tokenizers::Tokenizer::from_bytes(text.as_bytes()).map_err(|e| {
        Error::Msg(format!(
            "{}: the tokenizer rebuilt from its metadata does not load: {e}",
            path.display()
        ))
    })?;
    Ok(text)
}

/// Writes `tokenizer.json` for the GGUF at `gguf`, after checking it loads in `tokenizers`.
pub fn write_tokenizer_json(gguf: &Path, dest: &Path) -> Result<()> {
    let (content, _) = read_gguf(gguf)?;
    let text = tokenizer_json_text(&content, gguf)?;
    write_atomic(dest, text.as_bytes())
}
