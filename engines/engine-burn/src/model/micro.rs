//! burn's operations for the microbenchmark scenario: burn tensor ops on the lab's seeded inputs
//! (the same functions the lab's burn Llama uses: `matmul`, `softmax`, `RmsNorm`, its `rope` and
//! `sdpa`), and the loaded model's layer 0 as components (cast to the case's dtype). Every call
//! ends with the backend's `sync`. A dtype or op the backend cannot run panics inside burn; the
//! kit records that as unsupported with burn's message.

use burn::module::{Module, ModuleMapper, Param};
use burn::nn::{Embedding, RmsNorm};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};
use engine_kit::micro::{Call, OpBench, OpRefusal, Prepared};
use engine_kit::EngineResult;
use lab_protocol::micro::{fill, stream, token_ids, weight_scale, Micro, Op, OpCase};
use lab_protocol::Dtype;

use super::{attention_block, causal_mask, mlp_block, rope, rope_tables, sdpa, Llama};

fn dtype(d: Dtype) -> Result<DType, OpRefusal> {
    Ok(match d {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::Bf16 => DType::BF16,
        other => {
            return Err(OpRefusal::Unsupported(format!(
                "{} is a weight format, not an arithmetic type",
                other.as_str()
            )))
        }
    })
}

/// `[n, heads, hd]` (token-major, as [`fill`] lays it out) → `[heads, n, hd]`.
fn heads_first(v: &[f32], n: usize, heads: usize, hd: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for t in 0..n {
        for h in 0..heads {
            let src = (t * heads + h) * hd;
            let dst = (h * n + t) * hd;
            out[dst..dst + hd].copy_from_slice(&v[src..src + hd]);
        }
    }
    out
}

fn tensor<B: Backend, const D: usize>(
    v: Vec<f32>,
    shape: [usize; D],
    dt: DType,
    dev: &B::Device,
) -> Tensor<B, D> {
    Tensor::<B, D>::from_data(TensorData::new(v, shape), dev).cast(dt)
}

fn finish<B: Backend, const D: usize>(
    t: Tensor<B, D>,
    dev: &B::Device,
    want: bool,
) -> EngineResult<Call> {
    let output = if want {
        Some(
            t.cast(DType::F32)
                .into_data()
                .to_vec::<f32>()
                .map_err(|e| format!("reading the output: {e:?}"))?,
        )
    } else {
        B::sync(dev).map_err(|e| format!("synchronizing the device: {e:?}"))?;
        None
    };
    Ok(Call {
        device_ns: None,
        output,
    })
}

/// Casts every float parameter of a module to one dtype.
struct Cast(DType);

impl<B: Backend> ModuleMapper<B> for Cast {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, tensor.cast(self.0), mapper)
    }
}

impl<B: Backend> OpBench for Llama<B> {
    fn prepare<'a>(&'a mut self, case: &OpCase, micro: &Micro) -> Result<Prepared<'a>, OpRefusal> {
        let dt = dtype(case.dtype)?;
        let dev = self.device.clone();
        let seed = micro.seed;
        let m = &micro.model;
        let run: Box<dyn FnMut(bool) -> EngineResult<Call> + 'a> = match case.op {
            Op::Matmul { m, k, n } => {
                let (m, k, n) = (m as usize, k as usize, n as usize);
                let x = tensor::<B, 2>(fill(seed, stream::X, m * k, 1.0), [m, k], dt, &dev);
                // burn's Linear keeps its weight as [in, out]: the lab's W [n, k] transposed,
                // laid out contiguously as burn-store loads it.
                let w_nk = fill(seed, stream::W, n * k, weight_scale(k as u32));
                let w_kn: Vec<f32> = (0..k * n).map(|i| w_nk[(i % n) * k + i / n]).collect();
                let w = tensor::<B, 2>(w_kn, [k, n], dt, &dev);
                Box::new(move |want| finish(x.clone().matmul(w.clone()), &dev, want))
            }
            Op::Softmax { rows, cols } => {
                let (r, c) = (rows as usize, cols as usize);
                let x = tensor::<B, 2>(fill(seed, stream::X, r * c, 1.0), [r, c], dt, &dev);
                Box::new(move |want| finish(softmax(x.clone(), 1), &dev, want))
            }
            Op::RmsNorm { rows, dim } => {
                let (r, d) = (rows as usize, dim as usize);
                let x = tensor::<B, 2>(fill(seed, stream::X, r * d, 1.0), [r, d], dt, &dev);
                let norm = RmsNorm {
                    gamma: Param::from_tensor(tensor::<B, 1>(
                        fill(seed, stream::W, d, 1.0),
                        [d],
                        dt,
                        &dev,
                    )),
                    epsilon: m.rms_eps,
                };
                Box::new(move |want| finish(norm.forward(x.clone()), &dev, want))
            }
            Op::Rope {
                tokens,
                heads,
                head_dim,
            } => {
                let (t, h, hd) = (tokens as usize, heads as usize, head_dim as usize);
                let x = heads_first(&fill(seed, stream::X, t * h * hd, 1.0), t, h, hd);
                let x = tensor::<B, 4>(x, [1, h, t, hd], dt, &dev);
                let (cos, sin) = rope_tables::<B>(hd, m.rope_theta, t, &dev);
                let (cos, sin) = (cos.cast(dt).unsqueeze::<4>(), sin.cast(dt).unsqueeze::<4>());
                Box::new(move |want| finish(rope(x.clone(), &cos, &sin), &dev, want))
            }
            Op::Attention {
                tokens,
                past,
                heads,
                kv_heads,
                head_dim,
            } => {
                let (t, p, h, kvh, hd) = (
                    tokens as usize,
                    past as usize,
                    heads as usize,
                    kv_heads as usize,
                    head_dim as usize,
                );
                let load = |s: u64, n: usize, heads: usize| {
                    let v = heads_first(&fill(seed, s, n * heads * hd, 1.0), n, heads, hd);
                    tensor::<B, 4>(v, [1, heads, n, hd], dt, &dev)
                };
                let (q, k, v) = (
                    load(stream::X, t, h),
                    load(stream::W, p + t, kvh),
                    load(stream::V, p + t, kvh),
                );
                let mask = (t > 1).then(|| causal_mask::<B>(t, p, &dev).cast(dt));
                Box::new(move |want| {
                    finish(
                        sdpa(q.clone(), k.clone(), v.clone(), mask.clone()),
                        &dev,
                        want,
                    )
                })
            }
            Op::Embedding { tokens } => {
                let e = Embedding {
                    weight: Param::from_tensor(self.w.embed_tokens.weight.val().cast(dt)),
                };
                let ids: Vec<i64> = token_ids(seed, tokens as usize, m.vocab)
                    .into_iter()
                    .map(i64::from)
                    .collect();
                let ids = Tensor::<B, 2, Int>::from_data(
                    TensorData::new(ids, [1, tokens as usize]),
                    &dev,
                );
                Box::new(move |want| finish(e.forward(ids.clone()), &dev, want))
            }
            Op::AttentionBlock { tokens, past } | Op::Layer { tokens, past } => {
                let layer = self.w.layers[0].clone().map(&mut Cast(dt));
                let c = self.c.clone();
                let (t, p) = (tokens as usize, past as usize);
                let (kvh, hd) = (c.kv_heads(), c.head_dim());
                let x = tensor::<B, 3>(
                    fill(seed, stream::X, t * c.hidden_size, 1.0),
                    [1, t, c.hidden_size],
                    dt,
                    &dev,
                );
                let cache = (p > 0).then(|| {
                    let load = |s: u64| {
                        let v = heads_first(&fill(seed, s, p * kvh * hd, 1.0), p, kvh, hd);
                        tensor::<B, 4>(v, [1, kvh, p, hd], dt, &dev)
                    };
                    (load(stream::W), load(stream::V))
                });
                let (cos, sin) = (
                    self.cos
                        .clone()
                        .slice([p..p + t, 0..hd])
                        .cast(dt)
                        .unsqueeze::<4>(),
                    self.sin
                        .clone()
                        .slice([p..p + t, 0..hd])
                        .cast(dt)
                        .unsqueeze::<4>(),
                );
                let mask = (t > 1).then(|| causal_mask::<B>(t, p, &dev).cast(dt));
                let with_mlp = matches!(case.op, Op::Layer { .. });
                Box::new(move |want| {
                    let mut kv = cache.clone();
                    let y =
                        attention_block(&layer, &c, x.clone(), &cos, &sin, mask.clone(), &mut kv);
                    let y = if with_mlp { mlp_block(&layer, y) } else { y };
                    finish(y, &dev, want)
                })
            }
            Op::MlpBlock { tokens } => {
                let layer = self.w.layers[0].clone().map(&mut Cast(dt));
                let d = self.c.hidden_size;
                let t = tokens as usize;
                let x = tensor::<B, 3>(fill(seed, stream::X, t * d, 1.0), [1, t, d], dt, &dev);
                Box::new(move |want| finish(mlp_block(&layer, x.clone()), &dev, want))
            }
        };
        Ok(Prepared { run, note: None })
    }
}
