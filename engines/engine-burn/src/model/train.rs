//! The LoRA training step with burn: the lab's burn Llama loaded again on the autodiff backend
//! (`Autodiff<B>`), its parameters frozen (`no_grad`), adapters as a module of their own whose
//! terms are added to the target projections in a forward written with the model's functions
//! (`rope`, `sdpa`, `mlp_block`), burn's `CrossEntropyLoss` and `AdamW` (burn-optim).

use std::path::PathBuf;

use burn::backend::Autodiff;
use burn::module::{Module, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use engine_kit::train::{LoraSession, LoraTrain};
use engine_kit::{EngineResult, OpRefusal};
use lab_protocol::micro::{fill, weight_scale, OpChecksum};
use lab_protocol::train::{adapter_stream, AdapterGrad, Lora};

use super::{causal_mask, mlp_block, rope, sdpa, Llama};

/// The projections of the attention block that can take an adapter.
const TARGETS: [&str; 4] = ["q_proj", "k_proj", "v_proj", "o_proj"];

#[derive(Module, Debug)]
pub struct Adapters<B: Backend> {
    a: Vec<Param<Tensor<B, 2>>>,
    b: Vec<Param<Tensor<B, 2>>>,
}

pub struct BurnTrain<B: Backend> {
    pub dir: PathBuf,
    pub device: B::Device,
}

struct Session<B: AutodiffBackend> {
    model: Llama<B>,
    adapters: Option<Adapters<B>>,
    /// `(layer, index in TARGETS, target name)` of each adapter.
    slots: Vec<(usize, usize, String)>,
    optim: OptimizerAdaptor<AdamW, Adapters<B>, B>,
    lr: f64,
    scale: f64,
    inputs: Tensor<B, 2, Int>,
    labels: Tensor<B, 1, Int>,
    loss: Option<Tensor<B, 1>>,
    grads: Option<B::Gradients>,
}

impl<B: AutodiffBackend> Session<B> {
    fn adapter(&self, layer: usize, target: usize) -> Option<usize> {
        self.slots
            .iter()
            .position(|&(l, t, _)| l == layer && t == target)
    }

    fn logits(&self) -> Tensor<B, 3> {
        let w = &self.model.w;
        let c = &self.model.c;
        let adapters = self
            .adapters
            .as_ref()
            .expect("adapters are present between steps");
        let [bsz, s] = self.inputs.dims();
        let hd = c.head_dim();
        let (nh, nkv) = (c.num_attention_heads, c.kv_heads());
        let cos = self.model.cos.clone().slice([0..s, 0..hd]).unsqueeze::<4>();
        let sin = self.model.sin.clone().slice([0..s, 0..hd]).unsqueeze::<4>();
        let mask = causal_mask::<B>(s, 0, &self.model.device);
        let mut x = w.embed_tokens.forward(self.inputs.clone());
        for (l, layer) in w.layers.iter().enumerate() {
            let h = layer.input_layernorm.forward(x.clone());
            let a = &layer.self_attn;
            let proj = |i: usize, base: &burn::nn::Linear<B>, h: Tensor<B, 3>| {
                let y = base.forward(h.clone());
                match self.adapter(l, i) {
                    Some(k) => {
                        let ax = h.matmul(adapters.a[k].val().transpose().unsqueeze::<3>());
                        y + ax.matmul(adapters.b[k].val().transpose().unsqueeze::<3>()) * self.scale
                    }
                    None => y,
                }
            };
            let heads = |t: Tensor<B, 3>, n: usize| t.reshape([bsz, s, n, hd]).swap_dims(1, 2);
            let q = rope(heads(proj(0, &a.q_proj, h.clone()), nh), &cos, &sin);
            let k = rope(heads(proj(1, &a.k_proj, h.clone()), nkv), &cos, &sin);
            let v = heads(proj(2, &a.v_proj, h), nkv);
            let out = sdpa(q, k, v, Some(mask.clone()))
                .swap_dims(1, 2)
                .reshape([bsz, s, nh * hd]);
            x = x + proj(3, &a.o_proj, out);
            x = mlp_block(layer, x);
        }
        let x = w.norm.forward(x);
        match &w.lm_head {
            Some(head) => head.forward(x),
            None => x.matmul(w.embed_tokens.weight.val().transpose().unsqueeze::<3>()),
        }
    }
}

fn sync<B: Backend>(device: &B::Device) -> EngineResult<()> {
    B::sync(device).map_err(|e| format!("synchronizing the device: {e:?}"))?;
    Ok(())
}

impl<B: AutodiffBackend> LoraSession for Session<B> {
    fn forward(&mut self) -> EngineResult<f64> {
        let logits = self.logits();
        let [_, s, v] = logits.dims();
        let loss = CrossEntropyLossConfig::new()
            .init(&self.model.device)
            .forward(logits.reshape([s, v]), self.labels.clone());
        let value: f64 = loss.clone().into_scalar().elem();
        self.loss = Some(loss);
        Ok(value)
    }

    fn backward(&mut self) -> EngineResult<()> {
        let loss = self.loss.take().ok_or("backward before forward")?;
        self.grads = Some(loss.backward());
        sync::<B>(&self.model.device)
    }

    fn grads(&mut self) -> EngineResult<Vec<AdapterGrad>> {
        let grads = self
            .grads
            .as_ref()
            .ok_or("no gradients: backward has not run")?;
        let adapters = self.adapters.as_ref().ok_or("no adapters")?;
        let mut out = Vec::new();
        for (k, (layer, _, target)) in self.slots.iter().enumerate() {
            for (m, p) in [("a", &adapters.a[k]), ("b", &adapters.b[k])] {
                let t = p.val();
                let values = match t.grad(grads) {
                    Some(g) => g
                        .into_data()
                        .convert::<f32>()
                        .to_vec::<f32>()
                        .map_err(|e| format!("reading a gradient: {e:?}"))?,
                    None => vec![0.0; t.shape().num_elements()],
                };
                out.push(AdapterGrad {
                    layer: *layer as u32,
                    target: target.clone(),
                    matrix: m.into(),
                    checksum: OpChecksum::of(values),
                });
            }
        }
        Ok(out)
    }

    fn step(&mut self) -> EngineResult<()> {
        let grads = self.grads.take().ok_or("step before backward")?;
        let adapters = self.adapters.take().ok_or("no adapters")?;
        let params = GradientsParams::from_grads(grads, &adapters);
        self.adapters = Some(self.optim.step(self.lr, adapters, params));
        sync::<B>(&self.model.device)
    }

    fn trainable_params(&self) -> u64 {
        self.adapters.as_ref().map_or(0, |a| a.num_params() as u64)
    }

    fn how(&self) -> String {
        "burn Autodiff backend; the Llama's parameters frozen (no_grad), adapters as their own module; burn-optim AdamW".into()
    }
}

impl<B: Backend> LoraTrain for BurnTrain<B> {
    fn start<'a>(&'a mut self, lora: &Lora) -> Result<Box<dyn LoraSession + 'a>, OpRefusal> {
        for t in &lora.targets {
            if !TARGETS.contains(&t.as_str()) {
                return Err(OpRefusal::Unsupported(format!(
                    "lora.targets: `{t}`: the burn engine puts adapters on the attention projections only ({})",
                    TARGETS.join(", ")
                )));
            }
        }
        let n = lora.token_ids.len() - 1;
        let model = Llama::<Autodiff<B>>::load(&self.dir, n.max(1), &self.device)?;
        let model = Llama {
            w: model.w.no_grad(),
            ..model
        };
        let c = model.c.clone();
        let hd = c.head_dim();
        let dims = [
            (c.num_attention_heads * hd, c.hidden_size),
            (c.kv_heads() * hd, c.hidden_size),
            (c.kv_heads() * hd, c.hidden_size),
            (c.hidden_size, c.num_attention_heads * hd),
        ];
        let rank = lora.rank as usize;
        let (mut a, mut b, mut slots) = (Vec::new(), Vec::new(), Vec::new());
        for l in 0..c.num_hidden_layers {
            for (i, name) in TARGETS.iter().enumerate() {
                let Some(ti) = lora.targets.iter().position(|t| t == name) else {
                    continue;
                };
                let (out, inp) = dims[i];
                let init = fill(
                    lora.seed,
                    adapter_stream(l as u32, ti),
                    rank * inp,
                    weight_scale(inp as u32),
                );
                a.push(Param::from_tensor(
                    Tensor::<Autodiff<B>, 2>::from_data(
                        TensorData::new(init, [rank, inp]),
                        &self.device,
                    )
                    .require_grad(),
                ));
                b.push(Param::from_tensor(
                    Tensor::<Autodiff<B>, 2>::zeros([out, rank], &self.device).require_grad(),
                ));
                slots.push((l, i, name.to_string()));
            }
        }
        let ids: Vec<i64> = lora.token_ids.iter().map(|&t| t as i64).collect();
        let inputs = Tensor::<Autodiff<B>, 2, Int>::from_data(
            TensorData::new(ids[..n].to_vec(), [1, n]),
            &self.device,
        );
        let labels = Tensor::<Autodiff<B>, 1, Int>::from_data(
            TensorData::new(ids[1..].to_vec(), [n]),
            &self.device,
        );
        let optim = AdamWConfig::new()
            .with_beta_1(lora.beta1 as f32)
            .with_beta_2(lora.beta2 as f32)
            .with_epsilon(lora.eps as f32)
            .with_weight_decay(lora.weight_decay as f32)
            .init::<Autodiff<B>, Adapters<Autodiff<B>>>();
        Ok(Box::new(Session {
            model,
            adapters: Some(Adapters { a, b }),
            slots,
            optim,
            lr: lora.lr,
            scale: lora.alpha / lora.rank as f64,
            inputs,
            labels,
            loss: None,
            grads: None,
        }))
    }
}
