//! The microbenchmark scenario ([`crate::ScenarioKind::Micro`]): single operations and whole
//! model components, each timed alone in the engine's own framework, on inputs every framework
//! builds the same way ([`fill`]), so their outputs can be compared ([`OpChecksum`]).
//!
//! Definitions are written here once; the harness computes FLOP/s and bytes/s from them, never
//! an engine:
//!
//! - **matmul** `m×k·k×n`: `x [m, k]` times the transpose of a weight `W [n, k]` (the layout of
//!   every framework's linear layer), `2·m·k·n` FLOPs; bytes `(m·k + n·k + m·n)·element`.
//! - **softmax** over the last dimension of `[rows, cols]`; **rms_norm** of `[rows, dim]` with a
//!   weight `[dim]`; **rope** (half-split, HF layout) of `[tokens, heads, head_dim]` at positions
//!   `0..tokens`: no FLOPs claimed (memory-bound), bytes = input read + output written; its
//!   output is compared heads-first, `[heads, tokens, head_dim]` (transformers' layout).
//! - **attention**: scaled dot-product attention of `tokens` queries (`heads` heads) over
//!   `past + tokens` keys and values (`kv_heads` heads, grouped-query), causal;
//!   `4·heads·tokens·(past+tokens)·head_dim` FLOPs (the full score matrix, as frameworks compute
//!   it), bytes = q, k, v read + output written; q, k and v are filled `[positions, heads,
//!   head_dim]`, the output is compared heads-first, `[heads, tokens, head_dim]`.
//! - **components** use layer 0 of the real model (its weights, converted to the case's dtype):
//!   `embedding` (gather `tokens` rows), `attention_block` (RMSNorm → q/k/v → RoPE → attention
//!   over a `past`-position cache + the new tokens → o → residual), `mlp_block` (RMSNorm →
//!   gate/up → SiLU·up → down → residual), `layer` (both). FLOPs = the projections'
//!   `2·tokens·weights` + the attention's; bytes = the weights once + the KV cache + activations.
//!   A component never grows state across calls: at the decode shape (`tokens` 1, `past` > 0)
//!   every call appends to the same cache of `past` positions, which the engine restores.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Dtype;

/// The model dimensions the ops and components use (from the model's `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpModel {
    pub hidden: u32,
    pub intermediate: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub vocab: u32,
    pub rms_eps: f64,
    pub rope_theta: f64,
}

impl OpModel {
    pub fn kv_dim(&self) -> u64 {
        self.kv_heads as u64 * self.head_dim as u64
    }
    /// Weights of one attention block's projections (q, k, v, o). In f64 (exact below 2^53),
    /// like every count here: a report's dimensions are whatever an engine wrote, and no
    /// product of them may overflow.
    fn attention_weights(&self) -> f64 {
        let h = self.hidden as f64;
        h * (2.0 * h + 2.0 * self.kv_dim() as f64)
    }
    /// Weights of one MLP block (gate, up, down).
    fn mlp_weights(&self) -> f64 {
        3.0 * self.hidden as f64 * self.intermediate as f64
    }
}

/// One operation or component at one shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "op", deny_unknown_fields)]
pub enum Op {
    Matmul {
        m: u32,
        k: u32,
        n: u32,
    },
    Softmax {
        rows: u32,
        cols: u32,
    },
    RmsNorm {
        rows: u32,
        dim: u32,
    },
    Rope {
        tokens: u32,
        heads: u32,
        head_dim: u32,
    },
    Attention {
        tokens: u32,
        past: u32,
        heads: u32,
        kv_heads: u32,
        head_dim: u32,
    },
    Embedding {
        tokens: u32,
    },
    AttentionBlock {
        tokens: u32,
        past: u32,
    },
    MlpBlock {
        tokens: u32,
    },
    Layer {
        tokens: u32,
        past: u32,
    },
}

impl Op {
    /// Whether the op uses the model's layer 0 (a component) rather than seeded inputs alone.
    pub fn is_component(&self) -> bool {
        matches!(
            self,
            Op::Embedding { .. }
                | Op::AttentionBlock { .. }
                | Op::MlpBlock { .. }
                | Op::Layer { .. }
        )
    }

    /// The op's name in tables (`matmul`, `attention_block`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Matmul { .. } => "matmul",
            Op::Softmax { .. } => "softmax",
            Op::RmsNorm { .. } => "rms_norm",
            Op::Rope { .. } => "rope",
            Op::Attention { .. } => "attention",
            Op::Embedding { .. } => "embedding",
            Op::AttentionBlock { .. } => "attention_block",
            Op::MlpBlock { .. } => "mlp_block",
            Op::Layer { .. } => "layer",
        }
    }

    /// The shape in words (`512×576·576×1536`, `1 token over 512`).
    pub fn shape(&self) -> String {
        let ctx = |tokens: u32, past: u32| {
            if past == 0 {
                format!("{tokens} tokens")
            } else {
                format!(
                    "{tokens} token{} after {past}",
                    if tokens == 1 { "" } else { "s" }
                )
            }
        };
        match *self {
            Op::Matmul { m, k, n } => format!("{m}×{k}·{k}×{n}"),
            Op::Softmax { rows, cols } => format!("{rows}×{cols}"),
            Op::RmsNorm { rows, dim } => format!("{rows}×{dim}"),
            Op::Rope {
                tokens,
                heads,
                head_dim,
            } => format!("{tokens}×{heads}×{head_dim}"),
            Op::Attention {
                tokens,
                past,
                heads,
                kv_heads,
                head_dim,
            } => format!(
                "{} ({heads}/{kv_heads} heads × {head_dim})",
                ctx(tokens, past)
            ),
            Op::Embedding { tokens } | Op::MlpBlock { tokens } => format!("{tokens} tokens"),
            Op::AttentionBlock { tokens, past } | Op::Layer { tokens, past } => ctx(tokens, past),
        }
    }

    /// Floating-point operations of one call (module docs), `None` for memory-bound ops.
    pub fn flops(&self, model: &OpModel) -> Option<f64> {
        let attention = |tokens: u32, past: u32, heads: u32, head_dim: u32| {
            4.0 * heads as f64 * tokens as f64 * (past as f64 + tokens as f64) * head_dim as f64
        };
        let m = model;
        Some(match *self {
            Op::Matmul { m, k, n } => 2.0 * m as f64 * k as f64 * n as f64,
            Op::Attention {
                tokens,
                past,
                heads,
                head_dim,
                ..
            } => attention(tokens, past, heads, head_dim),
            Op::AttentionBlock { tokens, past } => {
                2.0 * tokens as f64 * m.attention_weights()
                    + attention(tokens, past, m.heads, m.head_dim)
            }
            Op::MlpBlock { tokens } => 2.0 * tokens as f64 * m.mlp_weights(),
            Op::Layer { tokens, past } => {
                2.0 * tokens as f64 * (m.attention_weights() + m.mlp_weights())
                    + attention(tokens, past, m.heads, m.head_dim)
            }
            Op::Softmax { .. } | Op::RmsNorm { .. } | Op::Rope { .. } | Op::Embedding { .. } => {
                return None
            }
        })
    }

    /// The least bytes one call must move (module docs), at `element` bytes per value.
    pub fn bytes(&self, model: &OpModel, element: u64) -> f64 {
        let m = model;
        let f = |v: u32| v as f64;
        let h = f(m.hidden);
        let kv = |tokens: u32, past: u32| 2.0 * (f(past) + f(tokens)) * m.kv_dim() as f64;
        let values: f64 = match *self {
            Op::Matmul { m, k, n } => f(m) * f(k) + f(n) * f(k) + f(m) * f(n),
            Op::Softmax { rows, cols } => 2.0 * f(rows) * f(cols),
            Op::RmsNorm { rows, dim } => 2.0 * f(rows) * f(dim) + f(dim),
            Op::Rope {
                tokens,
                heads,
                head_dim,
            } => 2.0 * f(tokens) * f(heads) * f(head_dim),
            Op::Attention {
                tokens,
                past,
                heads,
                kv_heads,
                head_dim,
            } => {
                let q = f(tokens) * f(heads) * f(head_dim);
                2.0 * q + 2.0 * (f(past) + f(tokens)) * f(kv_heads) * f(head_dim)
            }
            Op::Embedding { tokens } => 2.0 * f(tokens) * h,
            Op::AttentionBlock { tokens, past } => {
                m.attention_weights() + kv(tokens, past) + 2.0 * f(tokens) * h + h
            }
            Op::MlpBlock { tokens } => m.mlp_weights() + 2.0 * f(tokens) * h + h,
            Op::Layer { tokens, past } => {
                m.attention_weights()
                    + m.mlp_weights()
                    + kv(tokens, past)
                    + 2.0 * f(tokens) * h
                    + 2.0 * h
            }
        };
        values * element as f64
    }

    /// Why the op cannot run against `model` (a bad shape), if it cannot.
    pub fn invalid(&self, model: &OpModel) -> Option<String> {
        let zero = match *self {
            Op::Matmul { m, k, n } => m == 0 || k == 0 || n == 0,
            Op::Softmax { rows, cols } => rows == 0 || cols == 0,
            Op::RmsNorm { rows, dim } => rows == 0 || dim == 0,
            Op::Rope {
                tokens,
                heads,
                head_dim,
            } => tokens == 0 || heads == 0 || head_dim == 0 || !head_dim.is_multiple_of(2),
            Op::Attention {
                tokens,
                heads,
                kv_heads,
                head_dim,
                ..
            } => {
                tokens == 0
                    || heads == 0
                    || kv_heads == 0
                    || head_dim == 0
                    || !heads.is_multiple_of(kv_heads)
            }
            Op::Embedding { tokens } | Op::MlpBlock { tokens } => tokens == 0,
            Op::AttentionBlock { tokens, .. } | Op::Layer { tokens, .. } => tokens == 0,
        };
        if zero {
            return Some(format!(
                "{} {}: a zero or mismatched dimension",
                self.name(),
                self.shape()
            ));
        }
        let m = model;
        if self.is_component()
            && (m.hidden == 0
                || m.heads == 0
                || m.kv_heads == 0
                || !m.heads.is_multiple_of(m.kv_heads)
                || m.head_dim as u64 * m.heads as u64 != m.hidden as u64
                || m.vocab == 0
                || m.intermediate == 0)
        {
            return Some(format!("micro.model {m:?}: inconsistent dimensions"));
        }
        None
    }
}

/// One case of a microbenchmark: an op, its dtype, and the id it is reported under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpCase {
    /// Stable name (`matmul-512x576x1536-f32`).
    pub id: String,
    pub op: Op,
    /// `f32`, `f16` or `bf16`: inputs, weights and outputs in this type.
    pub dtype: Dtype,
}

/// The microbenchmark settings of a [`crate::ScenarioKind::Micro`] scenario. Warm-up calls,
/// samples per case and the per-case time limit are the scenario's `warmup_iterations`,
/// `iterations` and `max_duration_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Micro {
    pub model: OpModel,
    pub cases: Vec<OpCase>,
    /// Seed of [`fill`] for every input tensor.
    pub seed: u64,
}

/// How many of an output's elements [`OpChecksum`] keeps, evenly strided.
pub const SAMPLE_ELEMENTS: usize = 64;

/// A sum of an op's output (f64, over every element of its result, in the case's dtype read
/// back as f32) and a strided sample of its elements, so frameworks can be checked against each
/// other: the sums catch wrong values, the sample a permuted or transposed output (same sums).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpChecksum {
    pub sum: f64,
    pub sum_abs: f64,
    pub elements: u64,
    /// The elements at [`sample_indices`] of the flattened output (row-major), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample: Vec<f32>,
}

/// The indices [`OpChecksum`] samples from an output of `n` elements: `k·n / m` for
/// `k < m = min(n, SAMPLE_ELEMENTS)` (every element of a small output).
pub fn sample_indices(n: usize) -> impl Iterator<Item = usize> {
    let m = n.min(SAMPLE_ELEMENTS);
    (0..m).map(move |k| k * n / m)
}

impl OpChecksum {
    pub fn of(values: impl IntoIterator<Item = f32>) -> OpChecksum {
        let values: Vec<f32> = values.into_iter().collect();
        let (mut sum, mut sum_abs) = (0f64, 0f64);
        for &v in &values {
            sum += v as f64;
            sum_abs += (v as f64).abs();
        }
        OpChecksum {
            sum,
            sum_abs,
            elements: values.len() as u64,
            sample: sample_indices(values.len()).map(|i| values[i]).collect(),
        }
    }

    /// Whether two frameworks computed the same thing: the same element count, `sum_abs`
    /// within `rel`, `sum` within `rel · sum_abs`, and, where both kept a sample, each sampled
    /// element within `4 · rel` of the larger of the two values and the mean magnitude.
    pub fn agrees(&self, other: &OpChecksum, rel: f64) -> bool {
        let scale = self.sum_abs.max(other.sum_abs).max(f64::MIN_POSITIVE);
        self.elements == other.elements
            && (self.sum_abs - other.sum_abs).abs() <= rel * scale
            && (self.sum - other.sum).abs() <= rel * scale
            && self.samples_agree(other, rel)
    }

    fn samples_agree(&self, other: &OpChecksum, rel: f64) -> bool {
        if self.sample.is_empty() || other.sample.is_empty() {
            return true;
        }
        let mean_abs = self.sum_abs.max(other.sum_abs) / self.elements.max(1) as f64;
        self.sample.len() == other.sample.len()
            && self.sample.iter().zip(&other.sample).all(|(&a, &b)| {
                let (a, b) = (a as f64, b as f64);
                (a - b).abs() <= 4.0 * rel * a.abs().max(b.abs()).max(mean_abs)
            })
    }
}

/// What one engine measured for one case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpReport {
    pub id: String,
    /// Host time of each measured call (after the device finished), ns.
    pub host_ns: Vec<u64>,
    /// Device time of each measured call (CUDA events around it), ns; empty on CPU.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_ns: Vec<u64>,
    /// The output of the first call (see [`OpChecksum`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<OpChecksum>,
    /// How the framework ran it, when it differs from the case (e.g. `f32 accumulation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The framework cannot run this op, dtype or shape, with the reason: not a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<String>,
    /// The case failed; the other cases continue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The lab's input values: element `i` of tensor `stream` is SplitMix64's output `i` from the
/// state `seed + stream·2^32`, its top 24 bits mapped to `[-1, 1)` (exact in f32, f16 rounds),
/// times `scale`. Every framework builds its inputs with this (the Python engine with a numpy
/// port), so outputs are comparable.
pub fn fill(seed: u64, stream: u64, len: usize, scale: f32) -> Vec<f32> {
    let base = seed.wrapping_add(stream << 32);
    (0..len as u64)
        .map(|i| {
            let mut z = base.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 * (2.0 / 16_777_216.0) - 1.0) * scale
        })
        .collect()
}

/// The input streams of [`fill`], one per tensor role, so every engine draws the same tensor
/// for the same role.
pub mod stream {
    /// matmul `x`, softmax/rms_norm/rope input, attention `q`, a component's hidden states.
    pub const X: u64 = 1;
    /// matmul `W`, rms_norm weight, attention `k`, a component's cached keys.
    pub const W: u64 = 2;
    /// attention `v`, a component's cached values.
    pub const V: u64 = 3;
    /// token ids of `embedding`: `fill` mapped to `0..vocab` (`((v + 1) / 2 · vocab)` floored).
    pub const IDS: u64 = 4;
}

/// The token ids `embedding` gathers (stream [`stream::IDS`]).
pub fn token_ids(seed: u64, tokens: usize, vocab: u32) -> Vec<u32> {
    fill(seed, stream::IDS, tokens, 1.0)
        .into_iter()
        .map(|v| (((v as f64 + 1.0) / 2.0 * vocab as f64) as u32).min(vocab - 1))
        .collect()
}

/// Scale of matmul weights (`1/√k`, so outputs stay near the inputs' size) and of a
/// component's hidden states (1).
pub fn weight_scale(k: u32) -> f32 {
    1.0 / (k as f32).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_splitmix64_mapped_to_the_unit_interval() {
        // SplitMix64's first output from state 0 is 0xE220A8397B1DCDAF (Vigna's reference).
        let z: u64 = 0xE220_A839_7B1D_CDAF;
        let want = (z >> 40) as f32 * (2.0 / 16_777_216.0) - 1.0;
        assert_eq!(fill(0, 0, 1, 1.0), [want]);
        let a = fill(7, stream::W, 10_000, 1.0);
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        // A prefix of a longer tensor is the shorter tensor; streams and seeds differ.
        assert_eq!(fill(7, stream::W, 100, 1.0), a[..100]);
        assert_ne!(fill(7, stream::X, 100, 1.0), a[..100]);
        assert_ne!(fill(8, stream::W, 100, 1.0), a[..100]);
        assert_eq!(fill(7, stream::W, 3, 0.5)[2], a[2] * 0.5);
        let ids = token_ids(7, 500, 49152);
        assert!(ids.iter().all(|&i| i < 49152) && ids.iter().any(|&i| i > 40000));
    }

    #[test]
    fn checksums_agree_within_the_tolerance_and_count_elements() {
        let a = OpChecksum::of([1.0, -2.0, 3.0]);
        assert_eq!((a.sum, a.sum_abs, a.elements), (2.0, 6.0, 3));
        assert!(a.agrees(&OpChecksum::of([1.0, -2.0, 3.004]), 1e-3));
        assert!(!a.agrees(&OpChecksum::of([1.0, -2.0, 3.1]), 1e-3));
        assert!(!a.agrees(&OpChecksum::of([1.0, -2.0, 3.0, 0.0]), 1e-3));
        // A sign error keeps the magnitudes but not the sum.
        assert!(!a.agrees(&OpChecksum::of([1.0, 2.0, 3.0]), 1e-3));
    }

    #[test]
    fn a_permuted_or_transposed_output_disagrees_though_its_sums_agree() {
        assert_eq!(sample_indices(3).collect::<Vec<_>>(), [0, 1, 2]);
        let idx: Vec<usize> = sample_indices(1000).collect();
        assert_eq!((idx.len(), idx[1], idx[63]), (64, 15, 984));
        // A 48 x 40 matrix and its transpose: the same sums, different elements.
        let (r, c) = (48, 40);
        let m: Vec<f32> = (0..r * c).map(|i| ((i * 37) % 101) as f32 - 50.0).collect();
        let t: Vec<f32> = (0..r * c).map(|i| m[(i % r) * c + i / r]).collect();
        let (a, b) = (OpChecksum::of(m.clone()), OpChecksum::of(t));
        assert_eq!(a.sample.len(), 64);
        assert!((a.sum - b.sum).abs() < 1e-9 && (a.sum_abs - b.sum_abs).abs() < 1e-9);
        assert!(!a.agrees(&b, 2e-2));
        let mut rev = m.clone();
        rev.reverse();
        assert!(!a.agrees(&OpChecksum::of(rev), 2e-2));
        // Rounding every element by 0.5 % still agrees at the half-precision tolerance.
        let rounded: Vec<f32> = m.iter().map(|v| v * 1.005).collect();
        assert!(a.agrees(&OpChecksum::of(rounded), 2e-2));
        // A checksum without a sample (older results) is judged by its sums.
        let old = OpChecksum {
            sample: Vec::new(),
            ..a.clone()
        };
        assert!(old.agrees(&b, 2e-2) && b.agrees(&old, 2e-2));
    }
}
