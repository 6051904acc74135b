//! candle's operations for the microbenchmark scenario: candle-core/candle-nn ops on the lab's
//! seeded inputs, and layer 0 of the model's safetensors written with the same ops
//! candle-transformers' Llama uses (`Linear`, `rms_norm`, `rope`, `repeat_kv`, attention upcast
//! to f32, `softmax_last_dim`). Each call ends with `Device::synchronize`; on CUDA, two events
//! recorded on candle's stream around it give the device's time of it as well.

use std::path::PathBuf;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};
use engine_kit::micro::{Call, OpBench, OpRefusal, Prepared};
use engine_kit::EngineResult;
use lab_protocol::micro::{fill, stream, token_ids, weight_scale, Micro, Op, OpCase};
use lab_protocol::Dtype;

pub struct CandleOps {
    pub device: Device,
    /// The model's F32 safetensors (components read layer 0 from it).
    pub weights: Option<PathBuf>,
}

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

/// A tensor of [`fill`] values.
fn input(
    seed: u64,
    stream: u64,
    shape: &[usize],
    scale: f32,
    dt: DType,
    dev: &Device,
) -> candle_core::Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_vec(fill(seed, stream, n, scale), shape, &Device::Cpu)?
        .to_dtype(dt)?
        .to_device(dev)
}

/// One op's body: what a call computes.
type Body<'a> = Box<dyn Fn() -> candle_core::Result<Tensor> + 'a>;

/// Runs `body` between two CUDA events on the device's stream: its output and the device's
/// time of it. candle exposes its stream (`CudaDevice::cuda_stream`, cudarc's events).
#[cfg(feature = "cuda")]
fn on_device(dev: &Device, body: &Body) -> EngineResult<(Tensor, Option<u64>)> {
    use candle_core::cuda::cudarc::driver::sys::CUevent_flags;
    let Device::Cuda(cuda) = dev else {
        return Ok((body()?, None));
    };
    let stream = cuda.cuda_stream();
    let start = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    let y = body()?;
    let end = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    let ms = start.elapsed_ms(&end)?;
    Ok((y, Some((ms as f64 * 1e6) as u64)))
}

#[cfg(not(feature = "cuda"))]
fn on_device(_dev: &Device, body: &Body) -> EngineResult<(Tensor, Option<u64>)> {
    Ok((body()?, None))
}

/// A call: the body (timed on the device where it can be), a device sync, the output if asked.
fn call(dev: &Device, body: &Body, want: bool) -> EngineResult<Call> {
    let (y, device_ns) = on_device(dev, body)?;
    dev.synchronize()?;
    Ok(Call {
        device_ns,
        output: if want {
            Some(y.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
        } else {
            None
        },
    })
}

/// cos/sin tables `[positions, head_dim / 2]` for positions `from..from + n` (half-split RoPE).
pub(crate) fn rope_tables(
    theta: f64,
    head_dim: usize,
    from: usize,
    n: usize,
    dt: DType,
    dev: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let inv: Vec<f32> = (0..head_dim / 2)
        .map(|i| 1.0 / (theta as f32).powf(2.0 * i as f32 / head_dim as f32))
        .collect();
    let inv = Tensor::from_vec(inv, (1, head_dim / 2), dev)?;
    let pos = Tensor::arange(from as u32, (from + n) as u32, dev)?
        .to_dtype(DType::F32)?
        .reshape((n, 1))?;
    let f = pos.broadcast_mul(&inv)?;
    Ok((f.cos()?.to_dtype(dt)?, f.sin()?.to_dtype(dt)?))
}

/// The causal mask of `n` queries at positions `past..` over `past + n` keys (0 or -inf), or
/// none for one query.
pub(crate) fn causal_mask(
    n: usize,
    past: usize,
    dev: &Device,
) -> candle_core::Result<Option<Tensor>> {
    if n == 1 {
        return Ok(None);
    }
    let total = past + n;
    let m: Vec<f32> = (0..n)
        .flat_map(|i| (0..total).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Some(Tensor::from_vec(m, (n, total), dev)?))
}

/// Attention of `q [1, heads, n, hd]` over `k`, `v` `[1, kv_heads, past + n, hd]`, in f32 as
/// candle-transformers' Llama computes it; returns `[1, heads, n, hd]` in `q`'s dtype.
pub(crate) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let (_, heads, _, hd) = q.dims4()?;
    let rep = heads / k.dim(1)?;
    let in_dtype = q.dtype();
    let k = candle_transformers::utils::repeat_kv(k.clone(), rep)?;
    let v = candle_transformers::utils::repeat_kv(v.clone(), rep)?;
    let (q, k, v) = (
        q.to_dtype(DType::F32)?,
        k.to_dtype(DType::F32)?,
        v.to_dtype(DType::F32)?,
    );
    let att = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
    let att = match mask {
        Some(m) => att.broadcast_add(m)?,
        None => att,
    };
    let att = candle_nn::ops::softmax_last_dim(&att)?;
    att.matmul(&v.contiguous()?)?.to_dtype(in_dtype)
}

/// Layer 0 of the model, in one dtype.
struct Layer0 {
    in_norm: Tensor,
    post_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    gate: Linear,
    up: Linear,
    down: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f64,
}

impl Layer0 {
    fn attention_block(
        &self,
        x: &Tensor,
        cache: Option<&(Tensor, Tensor)>,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (b, n, hidden) = x.dims3()?;
        let h = candle_nn::ops::rms_norm(x, &self.in_norm, self.eps as f32)?;
        let split = |t: Tensor, heads: usize| {
            t.reshape((b, n, heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.q.forward(&h)?, self.heads)?;
        let k = split(self.k.forward(&h)?, self.kv_heads)?;
        let v = split(self.v.forward(&h)?, self.kv_heads)?;
        let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
        let (k, v) = match cache {
            Some((ck, cv)) => (
                Tensor::cat(&[ck, &k], 2)?.contiguous()?,
                Tensor::cat(&[cv, &v], 2)?.contiguous()?,
            ),
            None => (k, v),
        };
        let y = attend(&q, &k, &v, mask)?
            .transpose(1, 2)?
            .reshape((b, n, hidden))?;
        x + self.o.forward(&y)?
    }

    fn mlp_block(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = candle_nn::ops::rms_norm(x, &self.post_norm, self.eps as f32)?;
        let a = (candle_nn::ops::silu(&self.gate.forward(&h)?)? * self.up.forward(&h)?)?;
        x + self.down.forward(&a)?
    }
}

impl CandleOps {
    fn vb(&self, dt: DType) -> Result<VarBuilder<'static>, OpRefusal> {
        let path = self.weights.as_ref().ok_or_else(|| {
            OpRefusal::Unsupported("components need the model's safetensors; none was found".into())
        })?;
        // SAFETY: the safetensors file is memory-mapped, which requires that it is not modified
        // or truncated while mapped: the volume is read-only and nothing in the lab rewrites a
        // file in place (the builder writes a new file and renames it).
        Ok(
            unsafe { VarBuilder::from_mmaped_safetensors(&[path], dt, &self.device) }
                .map_err(|e| format!("{}: {e}", path.display()))?,
        )
    }

    fn layer0(&self, micro: &Micro, dt: DType) -> Result<Layer0, OpRefusal> {
        let m = &micro.model;
        let vb = self.vb(dt)?.pp("model.layers.0");
        let (h, kvd, ff) = (
            m.hidden as usize,
            m.kv_dim() as usize,
            m.intermediate as usize,
        );
        let lin = |name: &str, o: usize, i: usize| -> candle_core::Result<Linear> {
            Ok(Linear::new(
                vb.get((o, i), &format!("{name}.weight"))?,
                None,
            ))
        };
        Ok(Layer0 {
            in_norm: vb.get(h, "input_layernorm.weight")?,
            post_norm: vb.get(h, "post_attention_layernorm.weight")?,
            q: lin("self_attn.q_proj", h, h)?,
            k: lin("self_attn.k_proj", kvd, h)?,
            v: lin("self_attn.v_proj", kvd, h)?,
            o: lin("self_attn.o_proj", h, h)?,
            gate: lin("mlp.gate_proj", ff, h)?,
            up: lin("mlp.up_proj", ff, h)?,
            down: lin("mlp.down_proj", h, ff)?,
            heads: m.heads as usize,
            kv_heads: m.kv_heads as usize,
            head_dim: m.head_dim as usize,
            eps: m.rms_eps,
        })
    }
}

impl OpBench for CandleOps {
    fn prepare<'a>(&'a mut self, case: &OpCase, micro: &Micro) -> Result<Prepared<'a>, OpRefusal> {
        let dt = dtype(case.dtype)?;
        let dev = self.device.clone();
        let seed = micro.seed;
        let m = &micro.model;
        let mut note = None;
        let body: Body<'a> = match case.op {
            Op::Matmul { m, k, n } => {
                let (m, k, n) = (m as usize, k as usize, n as usize);
                let x = input(seed, stream::X, &[m, k], 1.0, dt, &dev)?;
                let w = input(seed, stream::W, &[n, k], weight_scale(k as u32), dt, &dev)?;
                let lin = Linear::new(w, None);
                Box::new(move || lin.forward(&x))
            }
            Op::Softmax { rows, cols } => {
                let x = input(
                    seed,
                    stream::X,
                    &[rows as usize, cols as usize],
                    1.0,
                    dt,
                    &dev,
                )?;
                Box::new(move || candle_nn::ops::softmax_last_dim(&x))
            }
            Op::RmsNorm { rows, dim } => {
                let x = input(
                    seed,
                    stream::X,
                    &[rows as usize, dim as usize],
                    1.0,
                    dt,
                    &dev,
                )?;
                let w = input(seed, stream::W, &[dim as usize], 1.0, dt, &dev)?;
                let eps = m.rms_eps as f32;
                Box::new(move || candle_nn::ops::rms_norm(&x, &w, eps))
            }
            Op::Rope {
                tokens,
                heads,
                head_dim,
            } => {
                let (t, h, hd) = (tokens as usize, heads as usize, head_dim as usize);
                let x = input(seed, stream::X, &[1, t, h, hd], 1.0, dt, &dev)?
                    .transpose(1, 2)?
                    .contiguous()?;
                let (cos, sin) = rope_tables(m.rope_theta, hd, 0, t, dt, &dev)?;
                Box::new(move || candle_nn::rotary_emb::rope(&x, &cos, &sin))
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
                let heads_first = |s: u64, n: usize, heads: usize| -> candle_core::Result<Tensor> {
                    input(seed, s, &[1, n, heads, hd], 1.0, dt, &dev)?
                        .transpose(1, 2)?
                        .contiguous()
                };
                let q = heads_first(stream::X, t, h)?;
                let k = heads_first(stream::W, p + t, kvh)?;
                let v = heads_first(stream::V, p + t, kvh)?;
                let mask = causal_mask(t, p, &dev)?;
                if dt != DType::F32 {
                    note = Some("scores and softmax in f32 (as candle-transformers' Llama)".into());
                }
                Box::new(move || attend(&q, &k, &v, mask.as_ref()))
            }
            Op::Embedding { tokens } => {
                let vb = self.vb(dt)?;
                let e = Embedding::new(
                    vb.get(
                        (m.vocab as usize, m.hidden as usize),
                        "model.embed_tokens.weight",
                    )?,
                    m.hidden as usize,
                );
                let ids = Tensor::new(token_ids(seed, tokens as usize, m.vocab), &dev)?;
                Box::new(move || e.forward(&ids))
            }
            Op::AttentionBlock { tokens, past } | Op::Layer { tokens, past } => {
                let layer = self.layer0(micro, dt)?;
                let (t, p) = (tokens as usize, past as usize);
                let (kvh, hd) = (m.kv_heads as usize, m.head_dim as usize);
                let x = input(seed, stream::X, &[1, t, m.hidden as usize], 1.0, dt, &dev)?;
                let cache = if p > 0 {
                    let c = |s: u64| -> candle_core::Result<Tensor> {
                        input(seed, s, &[1, p, kvh, hd], 1.0, dt, &dev)?
                            .transpose(1, 2)?
                            .contiguous()
                    };
                    Some((c(stream::W)?, c(stream::V)?))
                } else {
                    None
                };
                let (cos, sin) = rope_tables(m.rope_theta, hd, p, t, dt, &dev)?;
                let mask = causal_mask(t, p, &dev)?;
                let with_mlp = matches!(case.op, Op::Layer { .. });
                if dt != DType::F32 {
                    note = Some("scores and softmax in f32 (as candle-transformers' Llama)".into());
                }
                Box::new(move || {
                    let y = layer.attention_block(&x, cache.as_ref(), &cos, &sin, mask.as_ref())?;
                    if with_mlp {
                        layer.mlp_block(&y)
                    } else {
                        Ok(y)
                    }
                })
            }
            Op::MlpBlock { tokens } => {
                let layer = self.layer0(micro, dt)?;
                let x = input(
                    seed,
                    stream::X,
                    &[1, tokens as usize, m.hidden as usize],
                    1.0,
                    dt,
                    &dev,
                )?;
                Box::new(move || layer.mlp_block(&x))
            }
        };
        Ok(Prepared {
            run: Box::new(move |want| call(&dev, &body, want)),
            note,
        })
    }
}
