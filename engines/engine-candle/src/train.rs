//! The LoRA training step with candle: the model's F32 safetensors as frozen tensors, the
//! adapters as `Var`s, the forward of candle-transformers' Llama written with candle-nn's
//! differentiable ops (`rms_norm_slow`, `rope_slow`, the composite `softmax`: the fused ones
//! the inference path uses are forward-only), candle's autograd (`Tensor::backward`) and
//! candle-nn's `AdamW`.

use std::path::PathBuf;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{AdamW, Embedding, Linear, Optimizer, ParamsAdamW, VarBuilder};
use engine_kit::train::{LoraSession, LoraTrain};
use engine_kit::{EngineResult, OpRefusal};
use lab_protocol::micro::{fill, weight_scale, OpChecksum};
use lab_protocol::train::{adapter_stream, AdapterGrad, Lora};

use crate::micro::{causal_mask, rope_tables};

/// Attention of `q` `[1, heads, n, hd]` over `k`, `v` `[1, kv_heads, n, hd]` with the composite
/// softmax (candle-nn's fused `softmax_last_dim`, like its fused `rms_norm` and `rope`, is
/// forward-only: `apply_op*_no_bwd`, so gradients would silently stop at it).
fn attend_train(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let (_, heads, _, hd) = q.dims4()?;
    let rep = heads / k.dim(1)?;
    let k = candle_transformers::utils::repeat_kv(k.clone(), rep)?;
    let v = candle_transformers::utils::repeat_kv(v.clone(), rep)?;
    let att = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
    let att = match mask {
        Some(m) => att.broadcast_add(m)?,
        None => att,
    };
    candle_nn::ops::softmax(&att, candle_core::D::Minus1)?.matmul(&v.contiguous()?)
}

pub struct CandleTrain {
    pub device: Device,
    pub dir: PathBuf,
}

struct Adapter {
    layer: u32,
    target: String,
    a: Var,
    b: Var,
    scale: f64,
}

impl Adapter {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let ax = Linear::new(self.a.as_tensor().clone(), None).forward(x)?;
        Linear::new(self.b.as_tensor().clone(), None).forward(&ax)? * self.scale
    }
}

struct Block {
    in_norm: Tensor,
    post_norm: Tensor,
    /// q, k, v, o, gate, up, down.
    proj: [Linear; 7],
    /// The adapter of each of q..down, where there is one.
    lora: [Option<usize>; 7],
}

const PROJ: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

struct Session {
    device: Device,
    embed: Tensor,
    head: Tensor,
    norm: Tensor,
    blocks: Vec<Block>,
    adapters: Vec<Adapter>,
    opt: AdamW,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f64,
    cos: Tensor,
    sin: Tensor,
    mask: Option<Tensor>,
    inputs: Tensor,
    labels: Tensor,
    loss: Option<Tensor>,
    grads: Option<candle_core::backprop::GradStore>,
}

impl Session {
    fn proj(&self, b: &Block, i: usize, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = b.proj[i].forward(x)?;
        match b.lora[i] {
            Some(a) => y + self.adapters[a].forward(x)?,
            None => Ok(y),
        }
    }

    fn loss(&self) -> candle_core::Result<Tensor> {
        let mut x = Embedding::new(self.embed.clone(), self.embed.dim(1)?).forward(&self.inputs)?;
        let (bsz, n, hidden) = x.dims3()?;
        for b in &self.blocks {
            let h = candle_nn::ops::rms_norm_slow(&x, &b.in_norm, self.eps as f32)?;
            let split = |t: Tensor, heads: usize| {
                t.reshape((bsz, n, heads, self.head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = split(self.proj(b, 0, &h)?, self.heads)?;
            let k = split(self.proj(b, 1, &h)?, self.kv_heads)?;
            let v = split(self.proj(b, 2, &h)?, self.kv_heads)?;
            let q = candle_nn::rotary_emb::rope_slow(&q, &self.cos, &self.sin)?;
            let k = candle_nn::rotary_emb::rope_slow(&k, &self.cos, &self.sin)?;
            let y = attend_train(&q, &k, &v, self.mask.as_ref())?
                .transpose(1, 2)?
                .reshape((bsz, n, hidden))?;
            x = (x + self.proj(b, 3, &y)?)?;
            let h = candle_nn::ops::rms_norm_slow(&x, &b.post_norm, self.eps as f32)?;
            let a = (candle_nn::ops::silu(&self.proj(b, 4, &h)?)? * self.proj(b, 5, &h)?)?;
            x = (&x + self.proj(b, 6, &a)?)?;
        }
        let x = candle_nn::ops::rms_norm_slow(&x, &self.norm, self.eps as f32)?;
        let logits = Linear::new(self.head.clone(), None)
            .forward(&x)?
            .squeeze(0)?;
        candle_nn::loss::cross_entropy(&logits, &self.labels)
    }
}

impl LoraSession for Session {
    fn forward(&mut self) -> EngineResult<f64> {
        let loss = self.loss()?;
        let v = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        self.loss = Some(loss);
        Ok(v)
    }

    fn backward(&mut self) -> EngineResult<()> {
        let loss = self.loss.take().ok_or("backward before forward")?;
        self.grads = Some(loss.backward()?);
        self.device.synchronize()?;
        Ok(())
    }

    fn grads(&mut self) -> EngineResult<Vec<AdapterGrad>> {
        let grads = self
            .grads
            .as_ref()
            .ok_or("no gradients: backward has not run")?;
        let mut out = Vec::new();
        for a in &self.adapters {
            for (m, var) in [("a", &a.a), ("b", &a.b)] {
                let values = match grads.get(var.as_tensor()) {
                    Some(g) => g.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?,
                    // No path from the loss: a zero gradient.
                    None => vec![0.0; var.as_tensor().elem_count()],
                };
                out.push(AdapterGrad {
                    layer: a.layer,
                    target: a.target.clone(),
                    matrix: m.into(),
                    checksum: OpChecksum::of(values),
                });
            }
        }
        Ok(out)
    }

    fn step(&mut self) -> EngineResult<()> {
        let grads = self.grads.take().ok_or("step before backward")?;
        self.opt.step(&grads)?;
        self.device.synchronize()?;
        Ok(())
    }

    fn trainable_params(&self) -> u64 {
        self.adapters
            .iter()
            .map(|a| (a.a.as_tensor().elem_count() + a.b.as_tensor().elem_count()) as u64)
            .sum()
    }

    fn how(&self) -> String {
        "candle autograd (Tensor::backward); adapters as Vars added to frozen Linear outputs; candle-nn AdamW".into()
    }
}

impl LoraTrain for CandleTrain {
    fn start<'a>(&'a mut self, lora: &Lora) -> Result<Box<dyn LoraSession + 'a>, OpRefusal> {
        let dev = self.device.clone();
        let config = self.dir.join("config.json");
        let c: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&config).map_err(|e| format!("{}: {e}", config.display()))?,
        )
        .map_err(|e| format!("{}: {e}", config.display()))?;
        let num = |k: &str| -> Result<f64, OpRefusal> {
            c.get(k)
                .and_then(serde_json::Value::as_f64)
                .ok_or_else(|| format!("{}: `{k}` is missing", config.display()).into())
        };
        let (hidden, heads) = (
            num("hidden_size")? as usize,
            num("num_attention_heads")? as usize,
        );
        let kv_heads = num("num_key_value_heads").unwrap_or(heads as f64) as usize;
        let head_dim = hidden / heads;
        let (ff, layers, vocab) = (
            num("intermediate_size")? as usize,
            num("num_hidden_layers")? as usize,
            num("vocab_size")? as usize,
        );
        let kvd = kv_heads * head_dim;
        let path = self.dir.join("model.safetensors");
        engine_kit::require_file(&path)?;
        // SAFETY: the safetensors file is memory-mapped, which requires that it is not modified
        // or truncated while mapped: the volume is read-only and nothing in the lab rewrites a
        // file in place (the builder writes a new file and renames it).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &dev) }
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let shapes = [
            (hidden, hidden),
            (kvd, hidden),
            (kvd, hidden),
            (hidden, hidden),
            (ff, hidden),
            (ff, hidden),
            (hidden, ff),
        ];
        let rank = lora.rank as usize;
        let mut adapters = Vec::new();
        let mut blocks = Vec::new();
        for l in 0..layers {
            let lb = vb.pp(format!("model.layers.{l}"));
            let mut proj = Vec::new();
            let mut with = [None; 7];
            for (i, (name, (o, inp))) in PROJ.iter().zip(shapes).enumerate() {
                proj.push(Linear::new(
                    lb.get((o, inp), &format!("{name}.weight"))?,
                    None,
                ));
                let short = name.rsplit('.').next().unwrap_or(name);
                if let Some(ti) = lora.targets.iter().position(|t| t == short) {
                    let a = fill(
                        lora.seed,
                        adapter_stream(l as u32, ti),
                        rank * inp,
                        weight_scale(inp as u32),
                    );
                    let a = Var::from_tensor(&Tensor::from_vec(a, (rank, inp), &dev)?)?;
                    let b = Var::from_tensor(&Tensor::zeros((o, rank), DType::F32, &dev)?)?;
                    with[i] = Some(adapters.len());
                    adapters.push(Adapter {
                        layer: l as u32,
                        target: short.to_string(),
                        a,
                        b,
                        scale: lora.alpha / lora.rank as f64,
                    });
                }
            }
            let proj: [Linear; 7] = proj.try_into().map_err(|_| "seven projections")?;
            blocks.push(Block {
                in_norm: lb.get(hidden, "input_layernorm.weight")?,
                post_norm: lb.get(hidden, "post_attention_layernorm.weight")?,
                proj,
                lora: with,
            });
        }
        for t in &lora.targets {
            if !adapters.iter().any(|a| &a.target == t) {
                return Err(OpRefusal::Unsupported(format!(
                    "lora.targets: `{t}` is not a projection of this model ({})",
                    PROJ.join(", ")
                )));
            }
        }
        let embed = vb.get((vocab, hidden), "model.embed_tokens.weight")?;
        let head = if vb.contains_tensor("lm_head.weight") {
            vb.get((vocab, hidden), "lm_head.weight")?
        } else {
            embed.clone()
        };
        let n = lora.token_ids.len() - 1;
        let (cos, sin) = rope_tables(
            num("rope_theta").unwrap_or(10000.0),
            head_dim,
            0,
            n,
            DType::F32,
            &dev,
        )?;
        let vars: Vec<Var> = adapters
            .iter()
            .flat_map(|a| [a.a.clone(), a.b.clone()])
            .collect();
        let opt = AdamW::new(
            vars,
            ParamsAdamW {
                lr: lora.lr,
                beta1: lora.beta1,
                beta2: lora.beta2,
                eps: lora.eps,
                weight_decay: lora.weight_decay,
            },
        )?;
        let ids = Tensor::new(lora.token_ids.as_slice(), &dev)?;
        Ok(Box::new(Session {
            inputs: ids.narrow(0, 0, n)?.unsqueeze(0)?,
            labels: ids.narrow(0, 1, n)?,
            device: dev.clone(),
            embed,
            head,
            norm: vb.get(hidden, "model.norm.weight")?,
            blocks,
            adapters,
            opt,
            heads,
            kv_heads,
            head_dim,
            eps: num("rms_norm_eps")?,
            cos,
            sin,
            mask: causal_mask(n, 0, &dev)?,
            loss: None,
            grads: None,
        }))
    }
}
