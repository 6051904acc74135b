//! engine-native's operations for the microbenchmark scenario: the engine's own kernels
//! (`matmul` over the thread pool, `rmsnorm`, `rope`, the fused causal attention) on the lab's
//! seeded inputs, and the loaded model's layer 0 as components, run in [`CHUNK`]-token chunks as
//! the engine's prefill runs them. F32 only: the engine has no f16/bf16 arithmetic.

use engine_kit::micro::{Call, OpBench, OpRefusal, Prepared};
use lab_protocol::micro::{fill, stream, token_ids, weight_scale, Micro, Op, OpCase, OpModel};
use lab_protocol::Dtype;

use super::{matmul, rmsnorm, rope, Data, Format, Matrix, Model, Out, CHUNK};

fn output(want: bool, v: &[f32]) -> Call {
    Call {
        device_ns: None,
        output: want.then(|| v.to_vec()),
    }
}

/// The protocol's output layout of rope and attention, `[heads, tokens, head_dim]` (what
/// transformers' heads-first tensors flatten to), from the engine's token-major
/// `[tokens, heads, head_dim]`; only the checked first call pays for it (`want`).
fn heads_first(want: bool, v: &[f32], heads: usize, head_dim: usize) -> Call {
    if !want {
        return output(false, v);
    }
    let tokens = v.len() / (heads * head_dim);
    let mut out = Vec::with_capacity(v.len());
    for h in 0..heads {
        for t in 0..tokens {
            let at = (t * heads + h) * head_dim;
            out.extend_from_slice(&v[at..at + head_dim]);
        }
    }
    Call {
        device_ns: None,
        output: Some(out),
    }
}

fn unsupported(why: impl Into<String>) -> OpRefusal {
    OpRefusal::Unsupported(why.into())
}

impl Model {
    /// The micro model's dimensions are this model's (components and the engine's attention
    /// run the loaded model's layout).
    fn same_shape(&self, m: &OpModel) -> Result<(), OpRefusal> {
        let c = &self.cfg;
        let ok = m.hidden as usize == c.dim
            && m.intermediate as usize == c.ff
            && m.heads as usize == c.heads
            && m.kv_heads as usize == c.kv_heads
            && m.vocab as usize == c.vocab;
        if ok {
            Ok(())
        } else {
            Err(OpRefusal::Failed(
                format!("micro.model {m:?} is not the loaded model's shape {c:?}").into(),
            ))
        }
    }

    /// Writes seeded keys and values for positions `0..n` of layer 0, slot 0.
    fn fill_cache(&mut self, seed: u64, n: usize) -> Result<(), OpRefusal> {
        let kvd = self.cfg.kv_dim();
        if n > self.cfg.ctx {
            return Err(unsupported(format!(
                "{n} positions exceed the model's context ({})",
                self.cfg.ctx
            )));
        }
        self.ensure_slot(0)?;
        self.k_cache[0][..n * kvd].copy_from_slice(&fill(seed, stream::W, n * kvd, 1.0));
        self.v_cache[0][..n * kvd].copy_from_slice(&fill(seed, stream::V, n * kvd, 1.0));
        Ok(())
    }

    /// Runs `hidden` (`tokens × dim`) through `block` chunk by chunk at positions `past..`,
    /// slot 0; the result is in `out` when `want`.
    fn run_chunks(
        &mut self,
        hidden: &[f32],
        past: usize,
        want: bool,
        out: &mut Vec<f32>,
        block: fn(&mut Model, &super::Layer, &[(usize, usize)]),
    ) {
        let d = self.cfg.dim;
        out.clear();
        let layers = std::mem::take(&mut self.layers);
        let mut seqs = Vec::with_capacity(CHUNK);
        for (c, chunk) in hidden.chunks(CHUNK * d).enumerate() {
            let t = chunk.len() / d;
            self.x[..t * d].copy_from_slice(chunk);
            seqs.clear();
            seqs.extend((0..t).map(|i| (0, past + c * CHUNK + i)));
            block(self, &layers[0], &seqs);
            if want {
                out.extend_from_slice(&self.x[..t * d]);
            }
        }
        self.layers = layers;
    }
}

impl OpBench for Model {
    fn prepare<'a>(&'a mut self, case: &OpCase, micro: &Micro) -> Result<Prepared<'a>, OpRefusal> {
        if case.dtype != Dtype::F32 {
            return Err(unsupported(
                "engine-native computes in f32 only (f16 weights are widened to f32 at load)",
            ));
        }
        let seed = micro.seed;
        let note = None;
        let run: Box<dyn FnMut(bool) -> engine_kit::EngineResult<Call> + 'a> = match case.op {
            Op::Matmul { m, k, n } => {
                let (m, k, n) = (m as usize, k as usize, n as usize);
                let x = fill(seed, stream::X, m * k, 1.0);
                let w = Matrix {
                    fmt: Format::F32,
                    rows: n,
                    cols: k,
                    data: Data::Owned(fill(seed, stream::W, n * k, weight_scale(k as u32))),
                };
                let mut out = vec![0f32; m * n];
                let (pool, simd) = (&self.pool, self.simd);
                Box::new(move |want| {
                    // `out` holds `m * n` = `t * w.rows` floats and nothing else uses it during
                    // the call (the contract of `matmul`); F32 weights need no mapped file.
                    matmul(pool, simd, &[], &[(&w, Out(out.as_mut_ptr()))], &x, &[], m);
                    Ok(output(want, &out))
                })
            }
            Op::RmsNorm { rows, dim } => {
                let (rows, dim) = (rows as usize, dim as usize);
                let x = fill(seed, stream::X, rows * dim, 1.0);
                let w = fill(seed, stream::W, dim, 1.0);
                let eps = micro.model.rms_eps as f32;
                let mut out = vec![0f32; rows * dim];
                Box::new(move |want| {
                    rmsnorm(&x, &w, eps, &mut out, dim);
                    Ok(output(want, &out))
                })
            }
            Op::Rope {
                tokens,
                heads,
                head_dim,
            } => {
                let (tokens, heads, hd) = (tokens as usize, heads as usize, head_dim as usize);
                let theta = micro.model.rope_theta as f32;
                let inv_freq: Vec<f32> = (0..hd / 2)
                    .map(|i| 1.0 / theta.powf(2.0 * i as f32 / hd as f32))
                    .collect();
                // In place, as the engine rotates its q/k buffers: every call rotates the
                // previous call's result again (norms are kept); the first call's is checked.
                let mut v = fill(seed, stream::X, tokens * heads * hd, 1.0);
                Box::new(move |want| {
                    for (pos, t) in v.chunks_exact_mut(heads * hd).enumerate() {
                        rope(t, hd, pos, &inv_freq, false);
                    }
                    Ok(heads_first(want, &v, heads, hd))
                })
            }
            Op::Softmax { .. } => {
                return Err(unsupported(
                    "engine-native has no standalone softmax: it is fused into its attention kernel (scores, exp and the weighted sum in one pass)",
                ))
            }
            Op::Attention {
                tokens,
                past,
                heads,
                kv_heads,
                head_dim,
            } => {
                let c = &self.cfg;
                if heads as usize != c.heads
                    || kv_heads as usize != c.kv_heads
                    || head_dim as usize != c.head_dim()
                {
                    return Err(unsupported(format!(
                        "engine-native's attention runs the loaded model's heads ({}/{} × {}), not {heads}/{kv_heads} × {head_dim}",
                        c.heads,
                        c.kv_heads,
                        c.head_dim()
                    )));
                }
                let (tokens, past) = (tokens as usize, past as usize);
                let (d, hd) = (c.dim, c.head_dim());
                let heads = heads as usize;
                self.fill_cache(seed, past + tokens)?;
                let q = fill(seed, stream::X, tokens * d, 1.0);
                let mut out = Vec::new();
                Box::new(move |want| {
                    out.clear();
                    let mut seqs = Vec::with_capacity(CHUNK);
                    for (ci, chunk) in q.chunks(CHUNK * d).enumerate() {
                        let t = chunk.len() / d;
                        self.q[..t * d].copy_from_slice(chunk);
                        seqs.clear();
                        seqs.extend((0..t).map(|i| (0, past + ci * CHUNK + i)));
                        self.attention(0, &seqs);
                        if want {
                            out.extend_from_slice(&self.att[..t * d]);
                        }
                    }
                    Ok(heads_first(want, &out, heads, hd))
                })
            }
            Op::Embedding { .. } | Op::AttentionBlock { .. } | Op::MlpBlock { .. } | Op::Layer { .. } => {
                self.same_shape(&micro.model)?;
                if self.layers[0].wq.fmt != Format::F32 || self.embed.fmt != Format::F32 {
                    return Err(unsupported(format!(
                        "components run the loaded model's layer 0, whose weights are {} here: the f32 case needs the F32 safetensors target",
                        self.formats
                    )));
                }
                let d = self.cfg.dim;
                let mut out = Vec::new();
                match case.op {
                    Op::Embedding { tokens } => {
                        let ids = token_ids(seed, tokens as usize, micro.model.vocab);
                        Box::new(move |want| {
                            out.clear();
                            for chunk in ids.chunks(CHUNK) {
                                self.embed_chunk(chunk);
                                if want {
                                    out.extend_from_slice(&self.x[..chunk.len() * d]);
                                }
                            }
                            Ok(output(want, &out))
                        })
                    }
                    Op::AttentionBlock { tokens, past } | Op::Layer { tokens, past } => {
                        let (tokens, past) = (tokens as usize, past as usize);
                        self.fill_cache(seed, past + tokens)?;
                        let hidden = fill(seed, stream::X, tokens * d, 1.0);
                        let block: fn(&mut Model, &super::Layer, &[(usize, usize)]) =
                            if matches!(case.op, Op::Layer { .. }) {
                                |m, l, seqs| {
                                    m.attention_block(0, l, seqs);
                                    m.mlp_block(l, seqs.len());
                                }
                            } else {
                                |m, l, seqs| m.attention_block(0, l, seqs)
                            };
                        Box::new(move |want| {
                            self.run_chunks(&hidden, past, want, &mut out, block);
                            Ok(output(want, &out))
                        })
                    }
                    Op::MlpBlock { tokens } => {
                        let hidden = fill(seed, stream::X, tokens as usize * d, 1.0);
                        Box::new(move |want| {
                            self.run_chunks(&hidden, 0, want, &mut out, |m, l, seqs| {
                                m.mlp_block(l, seqs.len())
                            });
                            Ok(output(want, &out))
                        })
                    }
                    _ => unreachable!("matched above"),
                }
            }
        };
        Ok(Prepared { run, note })
    }
}
