//! A small Llama written with burn: token embedding, RMSNorm, rotary embeddings in the Hugging
//! Face half-split layout (the layout of the volume's safetensors: no Q/K permutation needed),
//! grouped-query attention with a KV cache, SwiGLU MLP, tied or separate output head. Generic over
//! the backend. A batch of sequences runs in lock-step: one shared position, equal lengths.
//!
//! Weights come from the HF `model.safetensors` through burn-store's `SafetensorsStore` (with the
//! PyTorch adapter: Linear weights transposed, norm `weight` → `gamma`).

use std::path::Path;

use burn::module::{Module, ModuleMapper, Param};
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use burn_store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use serde::Deserialize;

/// The fields of an HF `config.json` this model uses.
#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
}

fn default_rope_theta() -> f64 {
    10_000.0
}

impl LlamaConfig {
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }
}

#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    q_proj: Linear<B>,
    k_proj: Linear<B>,
    v_proj: Linear<B>,
    o_proj: Linear<B>,
}

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    gate_proj: Linear<B>,
    up_proj: Linear<B>,
    down_proj: Linear<B>,
}

#[derive(Module, Debug)]
pub struct Layer<B: Backend> {
    self_attn: Attention<B>,
    mlp: Mlp<B>,
    input_layernorm: RmsNorm<B>,
    post_attention_layernorm: RmsNorm<B>,
}

/// Parameter paths are the HF names without the `model.` prefix (`layers.0.self_attn.q_proj`).
#[derive(Module, Debug)]
pub struct Weights<B: Backend> {
    embed_tokens: Embedding<B>,
    layers: Vec<Layer<B>>,
    norm: RmsNorm<B>,
    /// `None` when the head is tied to the embedding (SmolLM2, Llama-3.2-1B).
    lm_head: Option<Linear<B>>,
}

fn linear<B: Backend>(i: usize, o: usize, device: &B::Device) -> Linear<B> {
    LinearConfig::new(i, o).with_bias(false).init(device)
}

impl<B: Backend> Weights<B> {
    fn init(c: &LlamaConfig, device: &B::Device) -> Self {
        let (d, hd) = (c.hidden_size, c.head_dim());
        let norm = || {
            RmsNormConfig::new(d)
                .with_epsilon(c.rms_norm_eps)
                .init(device)
        };
        Weights {
            embed_tokens: EmbeddingConfig::new(c.vocab_size, d).init(device),
            layers: (0..c.num_hidden_layers)
                .map(|_| Layer {
                    self_attn: Attention {
                        q_proj: linear(d, c.num_attention_heads * hd, device),
                        k_proj: linear(d, c.kv_heads() * hd, device),
                        v_proj: linear(d, c.kv_heads() * hd, device),
                        o_proj: linear(c.num_attention_heads * hd, d, device),
                    },
                    mlp: Mlp {
                        gate_proj: linear(d, c.intermediate_size, device),
                        up_proj: linear(d, c.intermediate_size, device),
                        down_proj: linear(c.intermediate_size, d, device),
                    },
                    input_layernorm: norm(),
                    post_attention_layernorm: norm(),
                })
                .collect(),
            norm: norm(),
            lm_head: (!c.tie_word_embeddings).then(|| linear(d, c.vocab_size, device)),
        }
    }
}

/// The model plus its per-sequence state (KV cache, position) and RoPE tables.
pub struct Llama<B: Backend> {
    w: Weights<B>,
    c: LlamaConfig,
    device: B::Device,
    /// `[max_positions, head_dim]`, each frequency twice (half-split layout).
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
    /// Per layer: keys and values `[batch, kv_heads, positions, head_dim]`.
    cache: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    pos: usize,
}

type Result<T> = std::result::Result<T, String>;

mod micro;
pub mod train;

impl<B: Backend> Llama<B> {
    /// Loads `config.json` and `model.safetensors` of an HF Llama directory. Every parameter must
    /// come from the file, and every tensor of the file must be used.
    pub fn load(dir: &Path, max_positions: usize, device: &B::Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| format!("{}: {e}", config_path.display()))?;
        let c: LlamaConfig = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a Llama config: {e}", config_path.display()))?;
        if c.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(format!(
                "{}: rope_scaling is not supported by this engine",
                config_path.display()
            ));
        }
        let weights_path = dir.join("model.safetensors");
        let mut w = Weights::<B>::init(&c, device);
        let mut store = SafetensorsStore::from_file(&weights_path)
            .with_from_adapter(PyTorchToBurnAdapter)
            .with_key_remapping(r"^model\.", "")
            // burn's RmsNorm calls its scale `gamma`.
            .with_key_remapping(r"norm\.weight$", "norm.gamma")
            .allow_partial(true);
        let applied = w
            .load_from(&mut store)
            .map_err(|e| format!("{}: {e}", weights_path.display()))?;
        if !applied.errors.is_empty() {
            return Err(format!(
                "{}: {:?}",
                weights_path.display(),
                applied.errors.first().expect("not empty")
            ));
        }
        if let Some((path, _)) = applied.missing.first() {
            return Err(format!(
                "{}: tensor `{path}` is missing ({} missing in all)",
                weights_path.display(),
                applied.missing.len()
            ));
        }
        if let Some(path) = applied.unused.first() {
            return Err(format!(
                "{}: tensor `{path}` does not belong to a Llama with this config.json",
                weights_path.display()
            ));
        }
        // The adapter's transposed Linear weights may be strided views; lay every parameter out
        // contiguously once, at load, so that no backend re-lays one out at every matmul.
        let w = w.map(&mut Contiguous);
        let max_positions = max_positions.min(c.max_position_embeddings).max(1);
        let (cos, sin) = rope_tables::<B>(c.head_dim(), c.rope_theta, max_positions, device);
        Ok(Llama {
            cache: vec![None; c.num_hidden_layers],
            w,
            c,
            device: device.clone(),
            cos,
            sin,
            pos: 0,
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.c
    }

    pub fn reset(&mut self) {
        self.cache.iter_mut().for_each(|c| *c = None);
        self.pos = 0;
    }

    /// Runs `tokens` at the next positions; returns the logits of the last one.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.forward_batch(&[tokens])
    }

    /// Sequences in the cache (0 when empty).
    pub fn batch(&self) -> usize {
        self.cache
            .first()
            .and_then(|c| c.as_ref())
            .map_or(0, |(k, _)| k.dims()[0])
    }

    /// Runs one row of tokens per sequence (all of one length) at the next shared positions;
    /// returns the logits of each row's last position, row after row. The number of rows must
    /// stay the same until [`Llama::reset`].
    pub fn forward_batch(&mut self, rows: &[&[u32]]) -> Result<Vec<f32>> {
        let b = rows.len();
        let s = rows.first().map_or(0, |r| r.len());
        if b == 0 || s == 0 {
            return Err("nothing to run".into());
        }
        if rows.iter().any(|r| r.len() != s) {
            return Err(format!(
                "a lock-step batch needs rows of one length, not {s} and {}",
                rows.iter().map(|r| r.len()).find(|&n| n != s).unwrap_or(0)
            ));
        }
        if self.pos > 0 && self.batch() != b {
            return Err(format!(
                "the cache holds {} sequences, {b} rows were given",
                self.batch()
            ));
        }
        let max = self.cos.dims()[0];
        if self.pos + s > max {
            return Err(format!(
                "sequence of {} tokens exceeds the {max} positions this engine prepared",
                self.pos + s
            ));
        }
        let ids: Vec<i64> = rows
            .iter()
            .flat_map(|r| r.iter().map(|&t| t as i64))
            .collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, s]), &self.device);
        let mut x = self.w.embed_tokens.forward(ids);
        let hd = self.c.head_dim();
        let (cos, sin) = (
            self.cos
                .clone()
                .slice([self.pos..self.pos + s, 0..hd])
                .unsqueeze::<4>(),
            self.sin
                .clone()
                .slice([self.pos..self.pos + s, 0..hd])
                .unsqueeze::<4>(),
        );
        let mask = (s > 1).then(|| causal_mask::<B>(s, self.pos, &self.device));
        for (layer, cache) in self.w.layers.iter().zip(self.cache.iter_mut()) {
            x = attention_block(layer, &self.c, x, &cos, &sin, mask.clone(), cache);
            x = mlp_block(layer, x);
        }
        self.pos += s;
        let d = self.c.hidden_size;
        let last = x.slice([0..b, s - 1..s, 0..d]).reshape([b, d]);
        let last = self.w.norm.forward(last);
        let logits = match &self.w.lm_head {
            Some(head) => head.forward(last),
            None => last.matmul(self.w.embed_tokens.weight.val().transpose()),
        };
        logits
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| format!("reading logits: {e:?}"))
    }
}

/// Rebuilds every float parameter from its data, which is always laid out contiguously.
struct Contiguous;

impl<B: Backend> ModuleMapper<B> for Contiguous {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let device = tensor.device();
        let tensor = Tensor::from_data(tensor.into_data(), &device);
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// cos/sin of `pos * theta^(-2i/hd)` for `i < hd/2`, each repeated for both halves.
fn rope_tables<B: Backend>(
    hd: usize,
    theta: f64,
    positions: usize,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let half = hd / 2;
    let mut cos = Vec::with_capacity(positions * hd);
    let mut sin = Vec::with_capacity(positions * hd);
    for p in 0..positions {
        for j in 0..hd {
            let i = j % half;
            let freq = 1.0 / theta.powf(2.0 * i as f64 / hd as f64);
            // HF computes the angles in f32.
            let angle = (p as f32) * (freq as f32);
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (
        Tensor::from_data(TensorData::new(cos, [positions, hd]), device),
        Tensor::from_data(TensorData::new(sin, [positions, hd]), device),
    )
}

/// `[1, 1, s, past + s]`: 0 where query `i` (at `past + i`) may see key `j`, else -inf.
fn causal_mask<B: Backend>(s: usize, past: usize, device: &B::Device) -> Tensor<B, 4> {
    let t = past + s;
    let mut m = vec![0f32; s * t];
    for i in 0..s {
        for j in past + i + 1..t {
            m[i * t + j] = f32::NEG_INFINITY;
        }
    }
    Tensor::<B, 2>::from_data(TensorData::new(m, [s, t]), device).unsqueeze::<4>()
}

/// `x` `[batch, heads, s, hd]` rotated in the half-split layout: `x * cos + rotate_half(x) * sin`.
fn rope<B: Backend>(x: Tensor<B, 4>, cos: &Tensor<B, 4>, sin: &Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, h, s, hd] = x.dims();
    let x1 = x.clone().slice([0..b, 0..h, 0..s, 0..hd / 2]);
    let x2 = x.clone().slice([0..b, 0..h, 0..s, hd / 2..hd]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}

/// A layer's attention block: RMSNorm, attention (the cache grows by the new positions),
/// residual.
fn attention_block<B: Backend>(
    layer: &Layer<B>,
    c: &LlamaConfig,
    x: Tensor<B, 3>,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
    mask: Option<Tensor<B, 4>>,
    cache: &mut Option<(Tensor<B, 4>, Tensor<B, 4>)>,
) -> Tensor<B, 3> {
    let h = layer.input_layernorm.forward(x.clone());
    x + attention(&layer.self_attn, c, h, cos, sin, mask, cache)
}

/// A layer's MLP block: RMSNorm, SwiGLU, residual.
fn mlp_block<B: Backend>(layer: &Layer<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let h = layer.post_attention_layernorm.forward(x.clone());
    let m = &layer.mlp;
    x + m
        .down_proj
        .forward(silu(m.gate_proj.forward(h.clone())) * m.up_proj.forward(h))
}

fn attention<B: Backend>(
    a: &Attention<B>,
    c: &LlamaConfig,
    h: Tensor<B, 3>,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
    mask: Option<Tensor<B, 4>>,
    cache: &mut Option<(Tensor<B, 4>, Tensor<B, 4>)>,
) -> Tensor<B, 3> {
    let [b, s, _] = h.dims();
    let (nh, nkv, hd) = (c.num_attention_heads, c.kv_heads(), c.head_dim());
    let heads = |t: Tensor<B, 3>, n: usize| t.reshape([b, s, n, hd]).swap_dims(1, 2);
    let q = rope(heads(a.q_proj.forward(h.clone()), nh), cos, sin);
    let k = rope(heads(a.k_proj.forward(h.clone()), nkv), cos, sin);
    let v = heads(a.v_proj.forward(h), nkv);
    let (k, v) = match cache.take() {
        Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
        None => (k, v),
    };
    *cache = Some((k.clone(), v.clone()));
    let out = sdpa(q, k, v, mask);
    a.o_proj
        .forward(out.swap_dims(1, 2).reshape([b, s, nh * hd]))
}

/// Scaled dot-product attention of `q` `[b, nh, s, hd]` over `k`, `v` `[b, nkv, t, hd]`
/// (grouped-query: each KV head serves `nh / nkv` query heads), plus an additive mask.
fn sdpa<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 4>>,
) -> Tensor<B, 4> {
    let [b, nh, _, hd] = q.dims();
    let [_, nkv, t, _] = k.dims();
    let rep = nh / nkv;
    let expand = |x: Tensor<B, 4>| {
        if rep == 1 {
            x
        } else {
            x.unsqueeze_dim::<5>(2)
                .repeat_dim(2, rep)
                .reshape([b, nh, t, hd])
        }
    };
    let (k, v) = (expand(k), expand(v));
    let mut scores = q.matmul(k.swap_dims(2, 3)) / (hd as f64).sqrt();
    if let Some(m) = mask {
        scores = scores + m;
    }
    softmax(scores, 3).matmul(v)
}
