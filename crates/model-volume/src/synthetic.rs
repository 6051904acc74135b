//! Seeded random-weight models with real Llama shapes, for throughput work.
//!
//! They reuse SmolLM2's tokenizer and vocabulary (49,152 tokens), so prompts tokenize the same
//! way. Their outputs mean nothing; the name (`synthetic-…`), `config.json` (`lab_synthetic`) and
//! `MANIFEST.json` (`synthetic: true`) all say so, and results carry the label.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use lab_protocol::manifest::{Manifest, MANIFEST_VERSION};

use crate::convert::LlamaShape;
use crate::{
    io_err, manifest_file, read_manifest, sha256_file, tmp_path, write_atomic, write_manifest,
    Error, Result, SMOLLM2,
};

/// Shapes the lab knows. Weights are always F32 safetensors.
pub fn shapes() -> Vec<(&'static str, LlamaShape)> {
    let base = LlamaShape {
        hidden_size: 0,
        intermediate_size: 0,
        num_hidden_layers: 0,
        num_attention_heads: 0,
        num_key_value_heads: 0,
        rms_norm_eps: 1e-5,
        rope_theta: 500_000.0,
        max_position_embeddings: 8192,
        vocab_size: 49_152,
        bos_token_id: 1,
        eos_token_id: 2,
        tie_word_embeddings: true,
    };
    vec![
        // Llama-3.2-1B: 16 layers, d_model 2048, FFN 8192, 32 heads / 8 KV heads, tied embeddings
        // (its own 128k vocabulary replaced by SmolLM2's; rope scaling omitted).
        (
            "llama-3.2-1b",
            LlamaShape {
                hidden_size: 2048,
                intermediate_size: 8192,
                num_hidden_layers: 16,
                num_attention_heads: 32,
                num_key_value_heads: 8,
                ..base.clone()
            },
        ),
        // A tiny Llama for fast engine and harness tests.
        (
            "tiny",
            LlamaShape {
                hidden_size: 64,
                intermediate_size: 128,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                num_key_value_heads: 2,
                ..base
            },
        ),
    ]
}

pub fn shape(name: &str) -> Result<LlamaShape> {
    shapes()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| s)
        .ok_or_else(|| {
            let known: Vec<_> = shapes().iter().map(|(n, _)| *n).collect();
            Error::Msg(format!(
                "unknown synthetic shape `{name}` (known: {})",
                known.join(", ")
            ))
        })
}

pub fn entry_name(shape: &str) -> String {
    format!("synthetic-{shape}")
}

/// SplitMix64 + Box-Muller: a normal(0, std) stream fixed by the seed alone.
struct Normal {
    state: u64,
    spare: Option<f32>,
}

impl Normal {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn sample(&mut self) -> f32 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let (u1, u2) = (self.unit(), self.unit());
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        self.spare = Some((r * t.sin()) as f32);
        (r * t.cos()) as f32
    }
}

fn tensor_names(s: &LlamaShape) -> Vec<(String, Vec<usize>)> {
    let hd = s.hidden_size / s.num_attention_heads;
    let (h, i, kv) = (
        s.hidden_size,
        s.intermediate_size,
        s.num_key_value_heads * hd,
    );
    let mut v = vec![
        (
            "model.embed_tokens.weight".to_string(),
            vec![s.vocab_size, h],
        ),
        ("model.norm.weight".into(), vec![h]),
    ];
    for l in 0..s.num_hidden_layers {
        let p = format!("model.layers.{l}");
        v.push((format!("{p}.input_layernorm.weight"), vec![h]));
        v.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        v.push((format!("{p}.self_attn.q_proj.weight"), vec![h, h]));
        v.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, h]));
        v.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, h]));
        v.push((format!("{p}.self_attn.o_proj.weight"), vec![h, h]));
        v.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
        v.push((format!("{p}.mlp.up_proj.weight"), vec![i, h]));
        v.push((format!("{p}.mlp.down_proj.weight"), vec![h, i]));
    }
    v
}

/// Builds `<models_dir>/synthetic-<shape>`; needs the SmolLM2 entry for its tokenizer.
/// A no-op when the entry's manifest matches this shape and seed and every file verifies.
pub fn materialize(models_dir: &Path, shape_name: &str, seed: u64) -> Result<PathBuf> {
    let shape = shape(shape_name)?;
    let name = entry_name(shape_name);
    let dir = models_dir.join(&name);
    let origin = format!("synthetic: seeded random weights (SplitMix64 seed {seed}, normal std 0.02, norms 1.0), Llama shape `{shape_name}`, SmolLM2 tokenizer");
    if let Ok(m) = read_manifest(&dir) {
        if m.origin == origin
            && crate::verify(&dir)?
                .iter()
                .all(|(_, s)| *s == crate::FileState::Ok)
        {
            eprintln!("model-volume: {} is up to date", dir.display());
            return Ok(dir);
        }
    }
    let tok_src = models_dir.join(SMOLLM2).join("tokenizer.json");
    if !tok_src.exists() {
        return Err(Error::Msg(format!(
            "{} is missing: synthetic models reuse SmolLM2's tokenizer, materialise `{SMOLLM2}` first",
            tok_src.display()
        )));
    }
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let tok = std::fs::read(&tok_src).map_err(io_err(&tok_src))?;
    write_atomic(&dir.join("tokenizer.json"), &tok)?;
    let config = serde_json::to_string_pretty(&shape.config_json(Some(&origin)))
        .expect("config serializes")
        + "\n";
    write_atomic(&dir.join("config.json"), config.as_bytes())?;

    let mut rng = Normal {
        state: seed,
        spare: None,
    };
    let mut tensors = HashMap::new();
    let names = tensor_names(&shape);
    let total: usize = names.iter().map(|(_, d)| d.iter().product::<usize>()).sum();
    eprintln!(
        "model-volume: generating {name}: {} tensors, {:.2} B parameters",
        names.len(),
        total as f64 / 1e9
    );
    for (n, dims) in names {
        let len: usize = dims.iter().product();
        let data: Vec<f32> = if dims.len() == 1 {
            vec![1.0; len]
        } else {
            (0..len).map(|_| rng.sample() * 0.02).collect()
        };
        let t = Tensor::from_vec(data, dims, &Device::Cpu).map_err(|err| Error::Candle {
            path: dir.clone(),
            err,
        })?;
        tensors.insert(n, t);
    }
    let dest = dir.join("model.safetensors");
    let tmp = tmp_path(&dest);
    candle_core::safetensors::save(&tensors, &tmp).map_err(|err| Error::Candle {
        path: tmp.clone(),
        err,
    })?;
    std::fs::rename(&tmp, &dest).map_err(io_err(&dest))?;

    let tok_sha = sha256_file(&tok_src)?;
    let mut files = BTreeMap::new();
    files.insert(
        "tokenizer.json".into(),
        manifest_file(
            &dir.join("tokenizer.json"),
            format!("copy of {SMOLLM2}/tokenizer.json (sha256 {tok_sha})"),
        )?,
    );
    files.insert(
        "config.json".into(),
        manifest_file(
            &dir.join("config.json"),
            format!("synthetic Llama shape `{shape_name}`"),
        )?,
    );
    files.insert(
        "model.safetensors".into(),
        manifest_file(&dest, origin.clone())?,
    );
    write_manifest(
        &dir,
        &Manifest {
            manifest_version: MANIFEST_VERSION,
            name,
            synthetic: true,
            origin,
            files,
        },
    )?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_stream_is_seeded_and_roughly_standard() {
        let draw = |seed| {
            let mut n = Normal {
                state: seed,
                spare: None,
            };
            (0..20_000).map(|_| n.sample()).collect::<Vec<_>>()
        };
        let a = draw(1);
        assert_eq!(a, draw(1));
        assert_ne!(a, draw(2));
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }

    #[test]
    fn llama_3_2_1b_shape_has_the_real_parameter_count_for_its_layers() {
        let s = shape("llama-3.2-1b").unwrap();
        let per_layer: usize = tensor_names(&s)
            .iter()
            .filter(|(n, _)| n.starts_with("model.layers.0."))
            .map(|(_, d)| d.iter().product::<usize>())
            .sum();
        // Llama-3.2-1B: 2*2048^2 + 2*512*2048 + 3*2048*8192 + 2*2048 weights per block.
        assert_eq!(
            per_layer,
            2 * 2048 * 2048 + 2 * 512 * 2048 + 3 * 2048 * 8192 + 2 * 2048
        );
        assert!(shape("llama-9b")
            .unwrap_err()
            .to_string()
            .contains("known: llama-3.2-1b, tiny"));
    }
}
