//! GGUF (llama.cpp layout) → Hugging Face Llama checkpoint (`config.json` + F32 safetensors).
//!
//! Three things differ between the layouts: tensor names; the rows of `q_proj`/`k_proj`, which
//! llama.cpp's converter permutes for its interleaved RoPE (HF's RoPE rotates halves); and the
//! output head, absent from SmolLM2's GGUF because the embeddings are tied. Values are the GGUF's
//! dequantized values (exact in F32: Q4_1 is `d * q + m` with f16 `d`, `m`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::json;

use crate::gguf::wrong_type;
use crate::tokenizer::read_gguf;
use crate::{io_err, tmp_path, write_atomic, Error, Result};

/// Llama hyper-parameters read from GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaShape {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    pub bos_token_id: u32,
    pub eos_token_id: u32,
    pub tie_word_embeddings: bool,
}

impl LlamaShape {
    /// Why a Llama of this shape cannot exist (a zero size, heads that do not divide the hidden
    /// size or each other, an odd head size), naming the GGUF key.
    pub fn invalid(&self) -> Option<String> {
        let sizes = [
            ("llama.embedding_length", self.hidden_size),
            ("llama.feed_forward_length", self.intermediate_size),
            ("llama.block_count", self.num_hidden_layers),
            ("llama.attention.head_count", self.num_attention_heads),
            ("llama.attention.head_count_kv", self.num_key_value_heads),
            ("llama.context_length", self.max_position_embeddings),
            ("tokenizer.ggml.tokens", self.vocab_size),
        ];
        if let Some((key, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Some(format!("GGUF metadata `{key}` is 0"));
        }
        let (h, heads, kv) = (
            self.hidden_size,
            self.num_attention_heads,
            self.num_key_value_heads,
        );
        if !h.is_multiple_of(heads) || !(h / heads).is_multiple_of(2) {
            return Some(format!(
                "GGUF metadata `llama.attention.head_count` {heads} does not split `llama.embedding_length` {h} into heads of an even size"
            ));
        }
        if !heads.is_multiple_of(kv) {
            return Some(format!(
                "GGUF metadata `llama.attention.head_count_kv` {kv} does not divide `llama.attention.head_count` {heads}"
            ));
        }
        None
    }

    /// The HF `config.json` for this shape.
    pub fn config_json(&self, synthetic: Option<&str>) -> serde_json::Value {
        let mut v = json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.hidden_size / self.num_attention_heads,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": null,
            "max_position_embeddings": self.max_position_embeddings,
            "vocab_size": self.vocab_size,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.eos_token_id,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": false,
            "mlp_bias": false,
            "initializer_range": 0.02,
            "pretraining_tp": 1,
            "use_cache": true,
            "torch_dtype": "float32"
        });
        if let Some(s) = synthetic {
            v["lab_synthetic"] = json!(s);
        }
        v
    }
}

pub fn shape_from_gguf(
    content: &candle_core::quantized::gguf_file::Content,
    path: &Path,
) -> Result<LlamaShape> {
    use candle_core::quantized::gguf_file::Value;
    let get = |key: &str| {
        content.metadata.get(key).ok_or_else(|| {
            Error::Msg(format!(
                "{}: GGUF metadata key `{key}` is missing",
                path.display()
            ))
        })
    };
    let u = |key: &str| -> Result<usize> {
        match get(key)? {
            Value::U32(v) => Ok(*v as usize),
            v => Err(wrong_type(path, key, v, "a u32")),
        }
    };
    let f = |key: &str| -> Result<f64> {
        match get(key)? {
            // through its shortest decimal, so that 1e-5f32 is written as 1e-5
            Value::F32(v) if v.is_finite() && *v > 0.0 => Ok(v
                .to_string()
                .parse::<f64>()
                .expect("a finite f32 prints as a number")),
            Value::F32(v) => Err(Error::Msg(format!(
                "{}: GGUF metadata `{key}` is {v}, expected a positive number",
                path.display()
            ))),
            v => Err(wrong_type(path, key, v, "an f32")),
        }
    };
    let arch = match get("general.architecture")? {
        Value::String(s) => s,
        v => return Err(wrong_type(path, "general.architecture", v, "a string")),
    };
    if arch != "llama" {
        return Err(Error::Msg(format!(
            "{}: general.architecture is `{}`, expected `llama`",
            path.display(),
            crate::gguf::shown(arch)
        )));
    }
    let vocab_size = match get("tokenizer.ggml.tokens")? {
        Value::Array(a) => a.len(),
        v => return Err(wrong_type(path, "tokenizer.ggml.tokens", v, "an array")),
    };
    let shape = LlamaShape {
        hidden_size: u("llama.embedding_length")?,
        intermediate_size: u("llama.feed_forward_length")?,
        num_hidden_layers: u("llama.block_count")?,
        num_attention_heads: u("llama.attention.head_count")?,
        num_key_value_heads: u("llama.attention.head_count_kv")?,
        rms_norm_eps: f("llama.attention.layer_norm_rms_epsilon")?,
        rope_theta: f("llama.rope.freq_base")?,
        max_position_embeddings: u("llama.context_length")?,
        vocab_size,
        bos_token_id: u("tokenizer.ggml.bos_token_id")? as u32,
        eos_token_id: u("tokenizer.ggml.eos_token_id")? as u32,
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
    };
    match shape.invalid() {
        Some(why) => Err(Error::Msg(format!("{}: {why}", path.display()))),
        None => Ok(shape),
    }
}

pub fn write_config_json(gguf: &Path, dest: &Path) -> Result<()> {
    let (content, _) = read_gguf(gguf)?;
    let shape = shape_from_gguf(&content, gguf)?;
    let text =
        serde_json::to_string_pretty(&shape.config_json(None)).expect("config serializes") + "\n";
    write_atomic(dest, text.as_bytes())
}

/// Maps a GGUF llama tensor name to its HF name.
pub fn hf_name(gguf_name: &str) -> Option<String> {
    let fixed = match gguf_name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(n) = fixed {
        return Some(n.to_string());
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, tail) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf_tail = match tail {
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf_tail}"))
}

/// Undoes llama.cpp's Q/K row permutation: rows are grouped per head as (2, half) in HF order and
/// (half, 2) in GGUF order. `w` is `[rows, cols]` with `rows = n_head * head_dim`.
pub fn unpermute_rows(w: &Tensor, n_head: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    w.reshape((n_head, rows / n_head / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

/// The inverse of [`unpermute_rows`] (HF order → GGUF interleaved order).
pub fn permute_rows(w: &Tensor, n_head: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    w.reshape((n_head, 2, rows / n_head / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

/// Every tensor of the GGUF read from `reader` (`content` is its header, `path` names it in
/// errors) dequantized to F32 in HF layout, by HF name; `progress` prints a line every 50.
pub fn hf_tensors<R: std::io::Read + std::io::Seek>(
    content: &candle_core::quantized::gguf_file::Content,
    reader: &mut R,
    shape: &LlamaShape,
    path: &Path,
    progress: bool,
) -> Result<HashMap<String, Tensor>> {
    let ce = |name: &str| {
        let name = crate::gguf::shown(name);
        move |err: candle_core::Error| {
            let err = lab_protocol::one_line(&err.to_string());
            Error::Msg(format!("{}: tensor `{name}`: {err}", path.display()))
        }
    };
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut out: HashMap<String, Tensor> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        let hf = hf_name(name).ok_or_else(|| {
            Error::Msg(format!(
                "{}: unexpected tensor `{}` for a llama GGUF",
                path.display(),
                crate::gguf::shown(name)
            ))
        })?;
        let q = content
            .tensor(reader, name, &Device::Cpu)
            .map_err(ce(name))?;
        let mut t = q.dequantize(&Device::Cpu).map_err(ce(name))?;
        if name.ends_with("attn_q.weight") {
            t = unpermute_rows(&t, shape.num_attention_heads).map_err(ce(name))?;
        } else if name.ends_with("attn_k.weight") {
            t = unpermute_rows(&t, shape.num_key_value_heads).map_err(ce(name))?;
        }
        out.insert(hf, t);
        if progress && ((i + 1) % 50 == 0 || i + 1 == names.len()) {
            eprintln!(
                "model-volume: dequantized {}/{} tensors",
                i + 1,
                names.len()
            );
        }
    }
    Ok(out)
}

/// Dequantizes every tensor of `gguf` to F32 in HF layout and writes `dest` atomically.
pub fn write_safetensors(gguf: &Path, dest: &Path) -> Result<()> {
    let (content, mut file) = read_gguf(gguf)?;
    let shape = shape_from_gguf(&content, gguf)?;
    let out = hf_tensors(&content, &mut file, &shape, gguf, true)?;
    let tmp = tmp_path(dest);
    candle_core::safetensors::save(&out, &tmp).map_err(|err| Error::Candle {
        path: tmp.clone(),
        err,
    })?;
    std::fs::rename(&tmp, dest).map_err(io_err(dest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_like_transformers() {
        assert_eq!(
            hf_name("token_embd.weight").unwrap(),
            "model.embed_tokens.weight"
        );
        assert_eq!(
            hf_name("blk.12.attn_q.weight").unwrap(),
            "model.layers.12.self_attn.q_proj.weight"
        );
        assert_eq!(
            hf_name("blk.0.ffn_down.weight").unwrap(),
            "model.layers.0.mlp.down_proj.weight"
        );
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }

    #[test]
    fn unpermute_inverts_permute_and_moves_rows() {
        // 2 heads of head_dim 4, 3 columns: rows 0..8.
        let w = Tensor::arange(0f32, 24., &Device::Cpu)
            .unwrap()
            .reshape((8, 3))
            .unwrap();
        let p = permute_rows(&w, 2).unwrap();
        assert_ne!(p.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
        let back = unpermute_rows(&p, 2).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
        // HF rows [0,1 | 2,3] of head 0 (first half, second half) interleave to 0,2,1,3 in GGUF.
        let first_col: Vec<f32> = p.to_vec2::<f32>().unwrap().iter().map(|r| r[0]).collect();
        assert_eq!(first_col, vec![0., 6., 3., 9., 12., 18., 15., 21.]);
    }
}
