//! A Llama forward pass written out: embedding, RMSNorm, RoPE (interleaved for GGUF's permuted
//! Q/K, half-split for HF checkpoints), grouped-query attention over an f32 KV cache, SwiGLU MLP,
//! tied or separate output head.
//!
//! Weights are memory-mapped and read in place. All activation buffers are allocated at load for
//! a chunk of [`CHUNK`] tokens: prefill runs chunks through batched matrix products (each weight
//! row is read once per chunk), decode is a chunk of one, and nothing is allocated per token.

use std::path::Path;

use memmap2::Mmap;

use crate::gguf::{GgmlType, Gguf};
use crate::pool::{split, Pool};
use crate::quant::{dequantize_row, f16_to_f32, BlockQ8, Format, Simd, QK};
use crate::Result;

#[cfg(test)]
mod fuzz;
mod micro;

/// Prompt tokens per batched forward pass.
pub const CHUNK: usize = 64;

#[derive(Debug, Clone)]
pub struct Config {
    pub dim: usize,
    pub ff: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    pub eps: f32,
    pub theta: f32,
    pub ctx: usize,
    /// GGUF Q/K rows are permuted for interleaved RoPE; HF checkpoints use the half-split form.
    pub interleaved_rope: bool,
}

impl Config {
    pub fn head_dim(&self) -> usize {
        self.dim / self.heads
    }
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim()
    }
}

enum Data {
    /// Byte offset into the memory map.
    Mapped(usize),
    /// Converted at load (F16 matrices, norm vectors).
    Owned(Vec<f32>),
}

pub struct Matrix {
    pub fmt: Format,
    pub rows: usize,
    pub cols: usize,
    data: Data,
}

impl Matrix {
    fn row<'a>(&'a self, map: &'a [u8], r: usize) -> &'a [u8] {
        let rb = self.fmt.row_bytes(self.cols);
        match &self.data {
            Data::Mapped(off) => &map[off + r * rb..off + (r + 1) * rb],
            Data::Owned(v) => {
                let s = &v[r * self.cols..(r + 1) * self.cols];
                // SAFETY: the bytes of `s` (exactly `size_of_val(s)` of them, which is `rb`:
                // owned data is always F32) are initialized, borrowed for 'a, and any byte
                // pattern is a valid u8 (alignment 1).
                unsafe { std::slice::from_raw_parts(s.as_ptr() as *const u8, size_of_val(s)) }
            }
        }
    }
    /// Row `r` of an F32 matrix as f32s (panics for other formats).
    fn row_f32<'a>(&'a self, map: &'a [u8], r: usize) -> &'a [f32] {
        let b = self.row(map, r);
        // Hold for every F32 row (mapped offsets are checked to be 4-byte aligned at load and
        // the map is page-aligned; owned data is a `Vec<f32>`); checked here, per row, so that
        // the view below is sound whatever the matrix.
        assert!(
            self.fmt == Format::F32
                && b.len() == self.cols * 4
                && b.as_ptr().cast::<f32>().is_aligned(),
            "row_f32 of a {:?} matrix or a misaligned row",
            self.fmt
        );
        // SAFETY: `b` is borrowed for 'a, holds exactly `cols` f32s' worth of bytes and is
        // 4-byte aligned (asserted above), and every bit pattern is a valid f32.
        unsafe { std::slice::from_raw_parts(b.as_ptr() as *const f32, self.cols) }
    }
    pub fn bytes(&self) -> usize {
        self.rows * self.fmt.row_bytes(self.cols)
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    wq: Matrix,
    wk: Matrix,
    wv: Matrix,
    wo: Matrix,
    w_gate: Matrix,
    w_up: Matrix,
    w_down: Matrix,
}

pub struct Model {
    pub cfg: Config,
    map: Mmap,
    embed: Matrix,
    output: Matrix,
    norm: Vec<f32>,
    layers: Vec<Layer>,
    pub simd: Simd,
    pub pool: Pool,
    /// Weight bytes read per decoded token (every matrix once; the embedding row is negligible).
    pub weight_bytes_per_token: usize,
    pub formats: String,
    // state: one KV cache and position per slot (slot 0 is the one-sequence path); a slot's
    // cache is allocated on its first use
    k_cache: Vec<Vec<f32>>,
    v_cache: Vec<Vec<f32>>,
    pos: Vec<usize>,
    inv_freq: Vec<f32>,
    // buffers (CHUNK tokens)
    x: Vec<f32>,
    xn: Vec<f32>,
    xq: Vec<BlockQ8>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    tmp: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    hq: Vec<BlockQ8>,
    scores: Vec<f32>,
}

/// A raw pointer that may cross threads; every thread writes a disjoint range through it.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: `Out` never dereferences its pointer itself; every write through it is an `unsafe`
// block inside a `Pool::run` job, which writes only its own disjoint range of a buffer that the
// caller of `run` does not otherwise read or write, and `run` does not return (or unwind) before
// every thread has finished the job.
unsafe impl Send for Out {}
// SAFETY: as for `Send`: sharing `&Out` among the pool's threads only shares the address; the
// writes through it are disjoint per thread (see the `unsafe` blocks at each use).
unsafe impl Sync for Out {}

impl Out {
    /// The pointer to element `i` (a method, so closures capture the whole `Sync` wrapper, not
    /// the field). Computing it is safe; writing through it needs `i` in bounds.
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

impl Model {
    pub fn from_gguf(path: &Path, threads: usize, simd: Simd) -> Result<Model> {
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: memmap2 requires that the file is not modified or truncated while mapped: the
        // model volume is read-only and nothing in the lab rewrites a file in place (the builder
        // writes a new file and renames it).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| format!("{}: {e}", path.display()))?;
        engine_kit::phase("file_open");
        let g = Gguf::parse(&map).map_err(|e| format!("{}: {e}", path.display()))?;
        engine_kit::phase("weights_parsed");
        let (cfg, w) = gguf_weights(&g, &map).map_err(|e| format!("{}: {e}", path.display()))?;
        drop(g);
        Model::assemble(cfg, map, w, threads, simd)
    }

    pub fn from_safetensors(dir: &Path, threads: usize, simd: Simd) -> Result<Model> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path)
            .map_err(|e| format!("{}: {e}", cfg_path.display()))?;
        let c: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
        let get = |k: &str| -> Result<f64> {
            c.get(k).and_then(serde_json::Value::as_f64).ok_or_else(|| {
                format!("{}: `{k}` is missing or not a number", cfg_path.display()).into()
            })
        };
        if c.get("rope_scaling").is_some_and(|v| !v.is_null()) {
            return Err(format!(
                "{}: rope_scaling is not supported by engine-native",
                cfg_path.display()
            )
            .into());
        }
        let heads = get("num_attention_heads")? as usize;
        let dim = get("hidden_size")? as usize;
        if let Some(hd) = c.get("head_dim").and_then(serde_json::Value::as_u64) {
            if (hd as usize).checked_mul(heads) != Some(dim) {
                return Err(format!(
                    "{}: head_dim {hd} x heads {heads} != hidden_size {dim}",
                    cfg_path.display()
                )
                .into());
            }
        }
        let cfg = Config {
            dim,
            ff: get("intermediate_size")? as usize,
            layers: get("num_hidden_layers")? as usize,
            heads,
            kv_heads: get("num_key_value_heads")? as usize,
            vocab: get("vocab_size")? as usize,
            eps: get("rms_norm_eps")? as f32,
            theta: get("rope_theta").unwrap_or(10000.0) as f32,
            ctx: get("max_position_embeddings")? as usize,
            interleaved_rope: false,
        };
        let st_path = dir.join("model.safetensors");
        let file =
            std::fs::File::open(&st_path).map_err(|e| format!("{}: {e}", st_path.display()))?;
        // SAFETY: memmap2 requires that the file is not modified or truncated while mapped: the
        // model volume is read-only and nothing in the lab rewrites a file in place (the builder
        // writes a new file and renames it).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| format!("{}: {e}", st_path.display()))?;
        engine_kit::phase("file_open");
        if map.len() < 8 {
            return Err(format!("{}: truncated safetensors file", st_path.display()).into());
        }
        let hlen = u64::from_le_bytes(map[..8].try_into().unwrap());
        let base = usize::try_from(hlen)
            .ok()
            .and_then(|h| h.checked_add(8))
            .filter(|&b| b <= map.len())
            .ok_or_else(|| {
                format!(
                    "{}: byte 0: header length {hlen} is beyond the end of the file ({} bytes; truncated?)",
                    st_path.display(),
                    map.len()
                )
            })?;
        let header: serde_json::Value = serde_json::from_slice(&map[8..base])
            .map_err(|e| format!("{}: header: {e}", st_path.display()))?;
        engine_kit::phase("weights_parsed");
        let mat = |name: &str| -> Result<Matrix> {
            let t = header
                .get(name)
                .ok_or_else(|| format!("{}: tensor {name} is missing", st_path.display()))?;
            let dtype = t["dtype"].as_str().unwrap_or("");
            let shape: Vec<usize> = t["shape"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_u64().map(|v| v as usize))
                        .collect()
                })
                .unwrap_or_default();
            let offs: Vec<usize> = t["data_offsets"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_u64().map(|v| v as usize))
                        .collect()
                })
                .unwrap_or_default();
            if dtype != "F32" || offs.len() != 2 {
                return Err(format!(
                    "{}: tensor {name} is {dtype}; engine-native reads F32 safetensors",
                    st_path.display()
                )
                .into());
            }
            let (rows, cols) = match shape[..] {
                [r, c] => (r, c),
                [c] => (1, c),
                _ => return Err(format!("tensor {name}: shape {shape:?}").into()),
            };
            let size = rows.checked_mul(cols).and_then(|n| n.checked_mul(4));
            let (Some(off), Some(end)) = (base.checked_add(offs[0]), base.checked_add(offs[1]))
            else {
                return Err(format!(
                    "{}: tensor {name}: data_offsets {offs:?} lie beyond the file",
                    st_path.display()
                )
                .into());
            };
            if offs[1].checked_sub(offs[0]) != size || end > map.len() {
                return Err(format!(
                    "{}: tensor {name} has a bad size or lies beyond the file",
                    st_path.display()
                )
                .into());
            }
            if !off.is_multiple_of(4) {
                return Err(
                    format!("{}: tensor {name} is not 4-byte aligned", st_path.display()).into(),
                );
            }
            Ok(Matrix {
                fmt: Format::F32,
                rows,
                cols,
                data: Data::Mapped(off),
            })
        };
        let vec = |name: &str| -> Result<Vec<f32>> {
            let m = mat(name)?;
            Ok(m.row_f32(&map, 0).to_vec())
        };
        let layers = load_layers(
            cfg.layers,
            |i, s| format!("model.layers.{i}.{s}.weight"),
            &HF_LAYER,
            &mat,
            &vec,
        )?;
        let embed = mat("model.embed_tokens.weight")?;
        let output = if header.get("lm_head.weight").is_some() {
            mat("lm_head.weight")?
        } else {
            mat("model.embed_tokens.weight")?
        };
        let norm = vec("model.norm.weight")?;
        let w = Weights {
            embed,
            output,
            norm,
            layers,
        };
        Model::assemble(cfg, map, w, threads, simd)
    }

    fn assemble(cfg: Config, map: Mmap, w: Weights, threads: usize, simd: Simd) -> Result<Model> {
        validate(&cfg, &w)?;
        let Weights {
            embed,
            output,
            norm,
            layers,
        } = w;
        let (d, kvd, ff) = (cfg.dim, cfg.kv_dim(), cfg.ff);
        let mut bytes = output.bytes();
        let mut formats = std::collections::BTreeMap::<String, usize>::new();
        for l in &layers {
            for m in [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down] {
                bytes += m.bytes();
                *formats.entry(format!("{:?}", m.fmt)).or_default() += 1;
            }
        }
        *formats
            .entry(format!("{:?} (output)", output.fmt))
            .or_default() += 1;
        let formats = formats
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ");
        let hd = cfg.head_dim();
        let inv_freq = (0..hd / 2)
            .map(|i| 1.0 / cfg.theta.powf(2.0 * i as f32 / hd as f32))
            .collect();
        let cache = cfg.layers * cfg.ctx * kvd; // bounded by `validate`
        let pool = Pool::new(threads);
        let n = CHUNK;
        Ok(Model {
            map,
            embed,
            output,
            norm,
            layers,
            simd,
            weight_bytes_per_token: bytes,
            formats,
            // vec![0.0; n] is calloc: pages are only touched as positions are used.
            k_cache: vec![vec![0.0; cache]],
            v_cache: vec![vec![0.0; cache]],
            pos: vec![0],
            inv_freq,
            x: vec![0.0; n * d],
            xn: vec![0.0; n * d],
            xq: vec![BlockQ8::default(); n * d.max(ff) / QK],
            q: vec![0.0; n * d],
            k: vec![0.0; n * kvd],
            v: vec![0.0; n * kvd],
            att: vec![0.0; n * d],
            tmp: vec![0.0; n * d],
            gate: vec![0.0; n * ff],
            up: vec![0.0; n * ff],
            hq: vec![BlockQ8::default(); n * ff / QK],
            scores: vec![0.0; pool.threads() * cfg.ctx],
            pool,
            cfg,
        })
    }

    pub fn reset(&mut self) {
        self.pos[0] = 0;
    }

    /// Runs `tokens` at the next positions of the one-sequence path (slot 0); writes the last
    /// position's logits.
    pub fn forward(&mut self, tokens: &[u32], logits: &mut Vec<f32>) -> Result<()> {
        self.forward_slot(0, tokens, logits)
    }

    /// The most sequences [`Model::decode_batch`] can hold.
    pub const MAX_SLOTS: usize = 256;

    /// Forgets the sequence in `slot` (its cache is kept for the next one).
    pub fn release(&mut self, slot: usize) {
        if let Some(p) = self.pos.get_mut(slot) {
            *p = 0;
        }
    }

    /// Makes `slot` exist (its cache is calloc'd: pages are touched only as positions are used).
    fn ensure_slot(&mut self, slot: usize) -> Result<()> {
        if slot >= Self::MAX_SLOTS {
            return Err(format!("slot {slot}: at most {} slots", Self::MAX_SLOTS).into());
        }
        let cache = self.cfg.layers * self.cfg.ctx * self.cfg.kv_dim();
        while self.pos.len() <= slot {
            self.k_cache.push(vec![0.0; cache]);
            self.v_cache.push(vec![0.0; cache]);
            self.pos.push(0);
        }
        Ok(())
    }

    fn check_tokens(&self, tokens: &[u32], end: usize) -> Result<()> {
        if end > self.cfg.ctx {
            return Err(format!(
                "sequence of {end} tokens exceeds the context length {}",
                self.cfg.ctx
            )
            .into());
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab) {
            return Err(format!(
                "token id {bad} is outside the vocabulary ({})",
                self.cfg.vocab
            )
            .into());
        }
        Ok(())
    }

    /// Runs `tokens` at the next positions of the sequence in `slot`; writes the last
    /// position's logits.
    pub fn forward_slot(
        &mut self,
        slot: usize,
        tokens: &[u32],
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        self.ensure_slot(slot)?;
        self.check_tokens(tokens, self.pos[slot] + tokens.len())?;
        let mut seqs = Vec::with_capacity(CHUNK);
        let mut t = 0;
        for chunk in tokens.chunks(CHUNK) {
            seqs.clear();
            seqs.extend((0..chunk.len()).map(|i| (slot, self.pos[slot] + i)));
            self.forward_chunk(chunk, &seqs);
            self.pos[slot] += chunk.len();
            t = chunk.len();
        }
        logits.resize(self.cfg.vocab, 0.0);
        self.head(t - 1..t, logits);
        Ok(())
    }

    /// One decode step for many sequences: `token` fed to each `slot` at its next position, all
    /// in one pass over every weight matrix (per [`CHUNK`] sequences); the logits of entry `i`
    /// go to `logits[i * vocab..]`.
    pub fn decode_batch(&mut self, batch: &[(usize, u32)], logits: &mut Vec<f32>) -> Result<()> {
        for (i, &(slot, token)) in batch.iter().enumerate() {
            self.ensure_slot(slot)?;
            if batch[..i].iter().any(|&(s, _)| s == slot) {
                return Err(format!("slot {slot} appears twice in one step").into());
            }
            self.check_tokens(&[token], self.pos[slot] + 1)?;
        }
        let vocab = self.cfg.vocab;
        logits.resize(batch.len() * vocab, 0.0);
        let mut seqs = Vec::with_capacity(CHUNK);
        for (c, chunk) in batch.chunks(CHUNK).enumerate() {
            seqs.clear();
            seqs.extend(chunk.iter().map(|&(slot, _)| (slot, self.pos[slot])));
            let tokens: Vec<u32> = chunk.iter().map(|&(_, t)| t).collect();
            self.forward_chunk(&tokens, &seqs);
            for &(slot, _) in chunk {
                self.pos[slot] += 1;
            }
            let at = c * CHUNK * vocab;
            self.head(0..chunk.len(), &mut logits[at..at + chunk.len() * vocab]);
        }
        Ok(())
    }

    /// Runs `tokens` through every layer; token `i` belongs to the sequence in slot
    /// `seqs[i].0` at position `seqs[i].1` (its K/V go there, it attends to that slot's
    /// positions up to its own). Leaves the hidden states in `x[..t * dim]`.
    fn forward_chunk(&mut self, tokens: &[u32], seqs: &[(usize, usize)]) {
        self.embed_chunk(tokens);
        // Moved out for the loop so that `self` can be borrowed mutably beside it (no copy).
        let layers = std::mem::take(&mut self.layers);
        for (li, l) in layers.iter().enumerate() {
            self.attention_block(li, l, seqs);
            self.mlp_block(l, seqs.len());
        }
        self.layers = layers;
    }

    /// The embedding rows of `tokens` into `x`.
    fn embed_chunk(&mut self, tokens: &[u32]) {
        let d = self.cfg.dim;
        for (i, &tok) in tokens.iter().enumerate() {
            dequantize_row(
                self.embed.fmt,
                self.embed.row(&self.map, tok as usize),
                &mut self.x[i * d..(i + 1) * d],
            );
        }
    }

    /// Layer `li`'s attention block on the hidden states in `x` (one per entry of `seqs`):
    /// RMSNorm, q/k/v, RoPE, K/V into each sequence's cache, attention, o, residual.
    fn attention_block(&mut self, li: usize, l: &Layer, seqs: &[(usize, usize)]) {
        let t = seqs.len();
        let (d, kvd, hd) = (self.cfg.dim, self.cfg.kv_dim(), self.cfg.head_dim());
        rmsnorm(
            &self.x[..t * d],
            &l.attn_norm,
            self.cfg.eps,
            &mut self.xn[..t * d],
            d,
        );
        let quantized = l.wq.fmt != Format::F32;
        if quantized {
            self.simd
                .quantize(&self.xn[..t * d], &mut self.xq[..t * d / QK]);
        }
        matmul(
            &self.pool,
            self.simd,
            &self.map,
            &[
                (&l.wq, Out(self.q.as_mut_ptr())),
                (&l.wk, Out(self.k.as_mut_ptr())),
                (&l.wv, Out(self.v.as_mut_ptr())),
            ],
            &self.xn[..t * d],
            &self.xq[..t * d / QK],
            t,
        );
        for (i, &(slot, pos)) in seqs.iter().enumerate() {
            rope(
                &mut self.q[i * d..(i + 1) * d],
                hd,
                pos,
                &self.inv_freq,
                self.cfg.interleaved_rope,
            );
            rope(
                &mut self.k[i * kvd..(i + 1) * kvd],
                hd,
                pos,
                &self.inv_freq,
                self.cfg.interleaved_rope,
            );
            let base = (li * self.cfg.ctx + pos) * kvd;
            self.k_cache[slot][base..base + kvd].copy_from_slice(&self.k[i * kvd..(i + 1) * kvd]);
            self.v_cache[slot][base..base + kvd].copy_from_slice(&self.v[i * kvd..(i + 1) * kvd]);
        }
        self.attention(li, seqs);
        if quantized {
            self.simd
                .quantize(&self.att[..t * d], &mut self.xq[..t * d / QK]);
        }
        matmul(
            &self.pool,
            self.simd,
            &self.map,
            &[(&l.wo, Out(self.tmp.as_mut_ptr()))],
            &self.att[..t * d],
            &self.xq[..t * d / QK],
            t,
        );
        for (x, o) in self.x[..t * d].iter_mut().zip(&self.tmp[..t * d]) {
            *x += o;
        }
    }

    /// A layer's MLP block on the `t` hidden states in `x`: RMSNorm, gate/up, SiLU·up, down,
    /// residual.
    fn mlp_block(&mut self, l: &Layer, t: usize) {
        let (d, ff) = (self.cfg.dim, self.cfg.ff);
        rmsnorm(
            &self.x[..t * d],
            &l.ffn_norm,
            self.cfg.eps,
            &mut self.xn[..t * d],
            d,
        );
        let quantized = l.wq.fmt != Format::F32;
        if quantized {
            self.simd
                .quantize(&self.xn[..t * d], &mut self.xq[..t * d / QK]);
        }
        matmul(
            &self.pool,
            self.simd,
            &self.map,
            &[
                (&l.w_gate, Out(self.gate.as_mut_ptr())),
                (&l.w_up, Out(self.up.as_mut_ptr())),
            ],
            &self.xn[..t * d],
            &self.xq[..t * d / QK],
            t,
        );
        for (g, u) in self.gate[..t * ff].iter_mut().zip(&self.up[..t * ff]) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
        if quantized {
            self.simd
                .quantize(&self.gate[..t * ff], &mut self.hq[..t * ff / QK]);
        }
        matmul(
            &self.pool,
            self.simd,
            &self.map,
            &[(&l.w_down, Out(self.tmp.as_mut_ptr()))],
            &self.gate[..t * ff],
            &self.hq[..t * ff / QK],
            t,
        );
        for (x, o) in self.x[..t * d].iter_mut().zip(&self.tmp[..t * d]) {
            *x += o;
        }
    }

    /// Logits of the processed tokens `rows` (their hidden states are in `x`), one vocab-sized
    /// row each, into `logits` (`rows.len() * vocab` floats).
    fn head(&mut self, rows: std::ops::Range<usize>, logits: &mut [f32]) {
        let d = self.cfg.dim;
        let t = rows.len();
        assert!(logits.len() == t * self.cfg.vocab && rows.end <= CHUNK);
        rmsnorm(
            &self.x[rows.start * d..rows.end * d],
            &self.norm,
            self.cfg.eps,
            &mut self.xn[..t * d],
            d,
        );
        if self.output.fmt != Format::F32 {
            self.simd
                .quantize(&self.xn[..t * d], &mut self.xq[..t * d / QK]);
        }
        matmul(
            &self.pool,
            self.simd,
            &self.map,
            &[(&self.output, Out(logits.as_mut_ptr()))],
            &self.xn[..t * d],
            &self.xq[..t * d / QK],
            t,
        );
    }

    /// Causal attention of every token of `seqs` over its own slot's positions up to its own,
    /// parallel over (token, head).
    fn attention(&mut self, li: usize, seqs: &[(usize, usize)]) {
        let cfg = &self.cfg;
        let (d, kvd, hd, heads) = (cfg.dim, cfg.kv_dim(), cfg.head_dim(), cfg.heads);
        let t = seqs.len();
        let group = cfg.heads / cfg.kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let layer = li * cfg.ctx * kvd..(li + 1) * cfg.ctx * kvd;
        let kcs: Vec<&[f32]> = seqs
            .iter()
            .map(|&(slot, _)| &self.k_cache[slot][layer.clone()])
            .collect();
        let vcs: Vec<&[f32]> = seqs
            .iter()
            .map(|&(slot, _)| &self.v_cache[slot][layer.clone()])
            .collect();
        let q = &self.q;
        let att = Out(self.att.as_mut_ptr());
        let scores = Out(self.scores.as_mut_ptr());
        let ctx = cfg.ctx;
        let simd = self.simd;
        self.pool.run(&|ti, n| {
            let (a, b) = split(t * heads, ti, n, 1);
            // SAFETY: `scores` has `pool.threads() * ctx` floats (allocated in `assemble`) and
            // `ti < n == pool.threads()`, so `ti * ctx..(ti + 1) * ctx` is in bounds; that range
            // is this thread's alone, and `self.scores` is not otherwise used during the run.
            let sc = unsafe { std::slice::from_raw_parts_mut(scores.at(ti * ctx), ctx) };
            for job in a..b {
                let (i, h) = (job / heads, job % heads);
                let len = seqs[i].1 + 1;
                let (kc, vc) = (kcs[i], vcs[i]);
                let qh = &q[i * d + h * hd..i * d + (h + 1) * hd];
                let kvh = h / group;
                let mut max = f32::NEG_INFINITY;
                for (p, s) in sc[..len].iter_mut().enumerate() {
                    let kp = &kc[p * kvd + kvh * hd..p * kvd + (kvh + 1) * hd];
                    *s = simd.dot_f32(qh, kp) * scale;
                    max = max.max(*s);
                }
                let mut sum = 0f32;
                for s in sc[..len].iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let inv = 1.0 / sum;
                // SAFETY: `att` has `CHUNK * d` floats, `i < t <= CHUNK` and `h < heads` with
                // `heads * hd == d`, so the range is in bounds; each (token, head) job belongs to
                // exactly one thread (`split`), so no other thread touches this range, and
                // `self.att` is not otherwise used during the run.
                let out = unsafe { std::slice::from_raw_parts_mut(att.at(i * d + h * hd), hd) };
                out.fill(0.0);
                for (p, &s) in sc[..len].iter().enumerate() {
                    simd.axpy(
                        s * inv,
                        &vc[p * kvd + kvh * hd..p * kvd + (kvh + 1) * hd],
                        out,
                    );
                }
            }
        });
    }
}

/// Tensor names of one layer in [`Layer`] field order: the two norms, then q, k, v, o, gate, up,
/// down.
const GGUF_LAYER: [&str; 9] = [
    "attn_norm",
    "ffn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];
const HF_LAYER: [&str; 9] = [
    "input_layernorm",
    "post_attention_layernorm",
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

/// A model's weights as read from a file, before the buffers are allocated.
struct Weights {
    embed: Matrix,
    output: Matrix,
    norm: Vec<f32>,
    layers: Vec<Layer>,
}

/// The configuration and weights of a parsed GGUF whose bytes are `map` (what
/// [`Model::from_gguf`] loads, without allocating the KV cache and buffers): every tensor is
/// checked to lie in `map` with its shape and type, so the forward pass can index it freely.
fn gguf_weights(g: &Gguf, map: &[u8]) -> Result<(Config, Weights)> {
    let arch = match g.get("general.architecture")? {
        crate::gguf::Value::Str(s) => s.clone(),
        _ => String::new(),
    };
    if arch != "llama" {
        return Err(format!("architecture `{arch}` (engine-native runs llama)").into());
    }
    let embed_info = g
        .tensors
        .get("token_embd.weight")
        .ok_or("GGUF tensor token_embd.weight is missing")?;
    let [_, vocab] = embed_info.dims[..] else {
        return Err(format!(
            "tensor token_embd.weight: expected 2 dimensions, found {:?}",
            embed_info.dims
        )
        .into());
    };
    let cfg = Config {
        dim: g.usize("llama.embedding_length")?,
        ff: g.usize("llama.feed_forward_length")?,
        layers: g.usize("llama.block_count")?,
        heads: g.usize("llama.attention.head_count")?,
        kv_heads: g.usize("llama.attention.head_count_kv")?,
        vocab,
        eps: g.f64("llama.attention.layer_norm_rms_epsilon")? as f32,
        theta: match g.metadata.get("llama.rope.freq_base") {
            None => 10000.0,
            Some(_) => g.f64("llama.rope.freq_base")? as f32,
        },
        ctx: g.usize("llama.context_length")?,
        interleaved_rope: true,
    };
    // `Gguf::parse` checked that every tensor's `nbytes` lie in the file.
    let mat = |name: &str| -> Result<Matrix> {
        let t = g
            .tensors
            .get(name)
            .ok_or_else(|| format!("GGUF tensor {name} is missing"))?;
        let [cols, rows] = t.dims[..] else {
            return Err(format!("tensor {name}: expected 2 dimensions, found {:?}", t.dims).into());
        };
        let off = g.data_start + t.offset;
        let fmt = match t.ty {
            GgmlType::F32 => Format::F32,
            GgmlType::Q4_0 => Format::Q4_0,
            GgmlType::Q4_1 => Format::Q4_1,
            GgmlType::Q8_0 => Format::Q8_0,
            GgmlType::F16 => {
                let v = map[off..off + t.nbytes]
                    .chunks_exact(2)
                    .map(|h| f16_to_f32(u16::from_le_bytes([h[0], h[1]])))
                    .collect();
                return Ok(Matrix {
                    fmt: Format::F32,
                    rows,
                    cols,
                    data: Data::Owned(v),
                });
            }
        };
        if fmt == Format::F32 && !off.is_multiple_of(4) {
            return Err(format!("tensor {name}: F32 data is not 4-byte aligned").into());
        }
        if fmt != Format::F32 && !cols.is_multiple_of(QK) {
            return Err(format!("tensor {name}: {cols} columns is not a multiple of {QK}").into());
        }
        Ok(Matrix {
            fmt,
            rows,
            cols,
            data: Data::Mapped(off),
        })
    };
    let vec = |name: &str| -> Result<Vec<f32>> {
        let m = mat(name).or_else(|_| -> Result<Matrix> {
            let t = g
                .tensors
                .get(name)
                .ok_or_else(|| format!("GGUF tensor {name} is missing"))?;
            let bytes = &map[g.data_start + t.offset..][..t.nbytes];
            let v = match t.ty {
                GgmlType::F32 => bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                GgmlType::F16 => bytes
                    .chunks_exact(2)
                    .map(|h| f16_to_f32(u16::from_le_bytes([h[0], h[1]])))
                    .collect::<Vec<f32>>(),
                other => {
                    return Err(format!("tensor {name}: norm weights of type {other:?}").into())
                }
            };
            Ok(Matrix {
                fmt: Format::F32,
                rows: 1,
                cols: v.len(),
                data: Data::Owned(v),
            })
        })?;
        let mut out = vec![0f32; m.rows * m.cols];
        for r in 0..m.rows {
            dequantize_row(m.fmt, m.row(map, r), &mut out[r * m.cols..(r + 1) * m.cols]);
        }
        Ok(out)
    };
    // Any tensor is at most the file's size: a layer count beyond what the file can name is
    // refused before the loop below tries them one by one.
    if cfg.layers > g.tensors.len() {
        return Err(format!(
            "GGUF metadata `llama.block_count` is {}, but the file has {} tensors",
            cfg.layers,
            g.tensors.len()
        )
        .into());
    }
    let layers = load_layers(
        cfg.layers,
        |i, s| format!("blk.{i}.{s}.weight"),
        &GGUF_LAYER,
        &mat,
        &vec,
    )?;
    let embed = mat("token_embd.weight")?;
    let output = if g.tensors.contains_key("output.weight") {
        mat("output.weight")?
    } else {
        mat("token_embd.weight")?
    };
    let norm = vec("output_norm.weight")?;
    let w = Weights {
        embed,
        output,
        norm,
        layers,
    };
    Ok((cfg, w))
}

/// Refuses a configuration the forward pass cannot run, weights whose shapes disagree with it,
/// and a KV cache whose size overflows; errors name the setting or tensor.
fn validate(cfg: &Config, w: &Weights) -> Result<()> {
    for (name, v) in [
        ("hidden size", cfg.dim),
        ("MLP size", cfg.ff),
        ("layer count", cfg.layers),
        ("head count", cfg.heads),
        ("KV head count", cfg.kv_heads),
        ("vocabulary", cfg.vocab),
        ("context length", cfg.ctx),
    ] {
        if v == 0 {
            return Err(format!("unsupported shape: {name} 0 ({cfg:?})").into());
        }
    }
    if !cfg.dim.is_multiple_of(cfg.heads)
        || !cfg.heads.is_multiple_of(cfg.kv_heads)
        || !cfg.head_dim().is_multiple_of(2)
    {
        return Err(format!("unsupported shape: {cfg:?}").into());
    }
    if !(cfg.eps.is_finite() && cfg.eps >= 0.0 && cfg.theta.is_finite() && cfg.theta > 0.0) {
        return Err(format!(
            "unsupported settings: RMSNorm epsilon {} and RoPE base {} (finite, base above 0)",
            cfg.eps, cfg.theta
        )
        .into());
    }
    let check = |m: &Matrix, rows: usize, cols: usize, what: &str| -> Result<()> {
        if m.rows != rows || m.cols != cols {
            return Err(format!(
                "{what}: shape {}x{}, expected {rows}x{cols}",
                m.rows, m.cols
            )
            .into());
        }
        Ok(())
    };
    let norm = |v: &[f32], what: &str| -> Result<()> {
        if v.len() != cfg.dim {
            return Err(format!("{what}: {} weights, expected {}", v.len(), cfg.dim).into());
        }
        Ok(())
    };
    let (d, kvd, ff) = (cfg.dim, cfg.kv_dim(), cfg.ff);
    for (i, l) in w.layers.iter().enumerate() {
        norm(&l.attn_norm, &format!("layer {i} attention norm"))?;
        norm(&l.ffn_norm, &format!("layer {i} MLP norm"))?;
        check(&l.wq, d, d, &format!("layer {i} q"))?;
        check(&l.wk, kvd, d, &format!("layer {i} k"))?;
        check(&l.wv, kvd, d, &format!("layer {i} v"))?;
        check(&l.wo, d, d, &format!("layer {i} o"))?;
        check(&l.w_gate, ff, d, &format!("layer {i} gate"))?;
        check(&l.w_up, ff, d, &format!("layer {i} up"))?;
        check(&l.w_down, d, ff, &format!("layer {i} down"))?;
    }
    check(&w.embed, cfg.vocab, d, "token embedding")?;
    check(&w.output, cfg.vocab, d, "output head")?;
    norm(&w.norm, "output norm")?;
    cfg.layers
        .checked_mul(cfg.ctx)
        .and_then(|n| n.checked_mul(kvd))
        .and_then(|n| n.checked_mul(size_of::<f32>()))
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(|| {
            format!(
                "unsupported shape: a KV cache of {} layers x {} positions x {kvd} overflows",
                cfg.layers, cfg.ctx
            )
        })?;
    Ok(())
}

/// Loads `n` layers whose tensors are named `name(layer, names[k])`.
fn load_layers(
    n: usize,
    name: impl Fn(usize, &str) -> String,
    names: &[&str; 9],
    mat: &dyn Fn(&str) -> Result<Matrix>,
    vec: &dyn Fn(&str) -> Result<Vec<f32>>,
) -> Result<Vec<Layer>> {
    (0..n)
        .map(|i| {
            let m = |k: usize| mat(&name(i, names[k]));
            Ok(Layer {
                attn_norm: vec(&name(i, names[0]))?,
                ffn_norm: vec(&name(i, names[1]))?,
                wq: m(2)?,
                wk: m(3)?,
                wv: m(4)?,
                wo: m(5)?,
                w_gate: m(6)?,
                w_up: m(7)?,
                w_down: m(8)?,
            })
        })
        .collect()
}

fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32], d: usize) {
    for (xs, os) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ss: f32 = xs.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let r = 1.0 / (ss + eps).sqrt();
        for ((o, &v), &g) in os.iter_mut().zip(xs).zip(w) {
            *o = v * r * g;
        }
    }
}

fn rope(v: &mut [f32], hd: usize, pos: usize, inv_freq: &[f32], interleaved: bool) {
    for head in v.chunks_exact_mut(hd) {
        for (i, &f) in inv_freq.iter().enumerate() {
            let (s, c) = (pos as f32 * f).sin_cos();
            let (a, b) = if interleaved {
                (2 * i, 2 * i + 1)
            } else {
                (i, i + hd / 2)
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * c - x1 * s;
            head[b] = x0 * s + x1 * c;
        }
    }
}

/// `out_m[tok * rows_m + r] = W_m[r] . x[tok]` for every matrix `m` (sharing one input), `t`
/// tokens, parallel over the concatenated rows of all matrices.
///
/// Each `out_m` must point to a buffer of at least `t * rows_m` f32s, distinct from the other
/// outputs and from `x`, that nothing else uses until this returns: the callers pass `Model`'s
/// `CHUNK * rows` buffers (shapes checked in `assemble`, `t <= CHUNK`) or the logits resized to
/// `vocab` rows (`t == 1`).
#[allow(clippy::too_many_arguments)]
fn matmul(
    pool: &Pool,
    simd: Simd,
    map: &[u8],
    mats: &[(&Matrix, Out)],
    x: &[f32],
    xq: &[BlockQ8],
    t: usize,
) {
    let total: usize = mats.iter().map(|(m, _)| m.rows).sum();
    pool.run(&|ti, n| {
        let (a, b) = split(total, ti, n, 16);
        let mut base = 0;
        for (m, out) in mats {
            let (lo, hi) = (a.max(base), b.min(base + m.rows));
            if lo < hi {
                let cols = m.cols;
                let nb = cols / QK;
                for r in lo - base..hi - base {
                    match m.fmt {
                        Format::F32 => {
                            let w = m.row_f32(map, r);
                            for tok in 0..t {
                                let v = simd.dot_f32(w, &x[tok * cols..(tok + 1) * cols]);
                                // SAFETY: `out` has room for `t * m.rows` values (see `matmul`),
                                // `tok < t` and `r < m.rows`; row `r` is in this thread's share
                                // only (`split`), so no other thread writes this element.
                                unsafe { *out.at(tok * m.rows + r) = v };
                            }
                        }
                        fmt => {
                            let w = m.row(map, r);
                            let xt = |tok: usize| &xq[tok * nb..(tok + 1) * nb];
                            let mut tok = 0;
                            while tok + 4 <= t {
                                let v = simd.dot_q_x4(
                                    fmt,
                                    w,
                                    [xt(tok), xt(tok + 1), xt(tok + 2), xt(tok + 3)],
                                );
                                for (k, v) in v.into_iter().enumerate() {
                                    // SAFETY: `out` has room for `t * m.rows` values (see
                                    // `matmul`), `tok + k < t` and `r < m.rows`; row `r` is in
                                    // this thread's share only (`split`).
                                    unsafe { *out.at((tok + k) * m.rows + r) = v };
                                }
                                tok += 4;
                            }
                            for tok in tok..t {
                                let v = simd.dot_q(fmt, w, xt(tok));
                                // SAFETY: `out` has room for `t * m.rows` values (see `matmul`),
                                // `tok < t` and `r < m.rows`; row `r` is in this thread's share
                                // only (`split`).
                                unsafe { *out.at(tok * m.rows + r) = v };
                            }
                        }
                    }
                }
            }
            base += m.rows;
        }
    });
}
