//! Small valid GGUF files built in memory, the seeds of the GGUF fuzz targets: a one-layer
//! llama (hidden 32, 2 heads, 1 KV head, MLP 64, vocabulary 8) with the metadata a volume
//! builder and an engine read (SmolLM2's `gpt2`/`smollm` tokenizer keys included) and every
//! tensor type the lab reads (F32, F16, Q4_0, Q4_1, Q8_0), a few KiB each.

use super::SplitMix64;

/// A GGUF metadata value.
#[derive(Debug, Clone)]
pub enum Meta {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    /// Elements of one type (that of the first; `U8` when empty).
    Array(Vec<Meta>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Meta {
    fn type_id(&self) -> u32 {
        match self {
            Meta::U8(_) => 0,
            Meta::I8(_) => 1,
            Meta::U16(_) => 2,
            Meta::I16(_) => 3,
            Meta::U32(_) => 4,
            Meta::I32(_) => 5,
            Meta::F32(_) => 6,
            Meta::Bool(_) => 7,
            Meta::Str(_) => 8,
            Meta::Array(_) => 9,
            Meta::U64(_) => 10,
            Meta::I64(_) => 11,
            Meta::F64(_) => 12,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Meta::U8(v) => out.push(*v),
            Meta::I8(v) => out.push(*v as u8),
            Meta::U16(v) => out.extend(v.to_le_bytes()),
            Meta::I16(v) => out.extend(v.to_le_bytes()),
            Meta::U32(v) => out.extend(v.to_le_bytes()),
            Meta::I32(v) => out.extend(v.to_le_bytes()),
            Meta::F32(v) => out.extend(v.to_le_bytes()),
            Meta::Bool(v) => out.push(u8::from(*v)),
            Meta::Str(s) => write_str(out, s),
            Meta::Array(items) => {
                out.extend(items.first().map_or(0, Meta::type_id).to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for i in items {
                    i.write(out);
                }
            }
            Meta::U64(v) => out.extend(v.to_le_bytes()),
            Meta::I64(v) => out.extend(v.to_le_bytes()),
            Meta::F64(v) => out.extend(v.to_le_bytes()),
        }
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// ggml tensor types the lab reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
}

impl TensorType {
    fn id(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Q4_0 => 2,
            TensorType::Q4_1 => 3,
            TensorType::Q8_0 => 8,
        }
    }

    /// Random valid bytes for `n` elements (finite f16 scales, any quants).
    fn data(self, n: usize, rng: &mut SplitMix64) -> Vec<u8> {
        let f16 = |rng: &mut SplitMix64| {
            // sign, exponent 8..=12 (about 2^-7..2^-3), any mantissa: finite and small
            let bits = (rng.next_u64() as u16 & 0x83ff) | ((8 + rng.below(5) as u16) << 10);
            bits.to_le_bytes()
        };
        let mut out = Vec::new();
        match self {
            TensorType::F32 => {
                for _ in 0..n {
                    let v = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                    out.extend((v as f32).to_le_bytes());
                }
            }
            TensorType::F16 => (0..n).for_each(|_| out.extend(f16(rng))),
            TensorType::Q4_0 | TensorType::Q4_1 | TensorType::Q8_0 => {
                for _ in 0..n / 32 {
                    out.extend(f16(rng));
                    if self == TensorType::Q4_1 {
                        out.extend(f16(rng));
                    }
                    let quants = if self == TensorType::Q8_0 { 32 } else { 16 };
                    out.extend((0..quants).map(|_| rng.next_u64() as u8));
                }
            }
        }
        out
    }
}

/// A GGUF file in the making.
#[derive(Debug, Clone)]
pub struct Builder {
    version: u32,
    alignment: usize,
    meta: Vec<(String, Meta)>,
    tensors: Vec<(String, Vec<u64>, TensorType, Vec<u8>)>,
    rng: SplitMix64,
}

impl Builder {
    /// An empty GGUF of `version` (2 or 3) whose tensor data is aligned to `alignment` (written
    /// as `general.alignment` unless it is GGUF's default, 32).
    pub fn new(version: u32, alignment: usize, seed: u64) -> Self {
        let mut b = Builder {
            version,
            alignment,
            meta: Vec::new(),
            tensors: Vec::new(),
            rng: SplitMix64::new(seed),
        };
        if alignment != 32 {
            b = b.meta("general.alignment", Meta::U32(alignment as u32));
        }
        b
    }

    pub fn meta(mut self, key: &str, value: Meta) -> Self {
        self.meta.push((key.into(), value));
        self
    }

    /// A tensor of random valid data; `dims` in ggml order (`dims[0]` is the row length).
    pub fn tensor(mut self, name: &str, dims: &[u64], ty: TensorType) -> Self {
        let n = dims.iter().product::<u64>() as usize;
        let data = ty.data(n, &mut self.rng);
        self.tensors.push((name.into(), dims.to_vec(), ty, data));
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let align = |n: usize| n.div_ceil(self.alignment) * self.alignment;
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.meta.len() as u64).to_le_bytes());
        for (k, v) in &self.meta {
            write_str(&mut out, k);
            out.extend(v.type_id().to_le_bytes());
            v.write(&mut out);
        }
        let mut offset = 0;
        for (name, dims, ty, data) in &self.tensors {
            write_str(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.id().to_le_bytes());
            out.extend((offset as u64).to_le_bytes());
            offset = align(offset + data.len());
        }
        out.resize(align(out.len()), 0);
        for (_, _, _, data) in &self.tensors {
            out.extend(data);
            out.resize(align(out.len()), 0);
        }
        out
    }
}

/// The tokens of the seeds' vocabulary: three control tokens, then byte-level BPE pieces.
pub const TOKENS: [&str; 8] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "a",
    "b",
    "c",
    "ab",
    "abc",
];

/// A one-layer llama GGUF: its metadata (SmolLM2's keys, plus a value of every GGUF type) and
/// tensors, matrices in `matrix` types (cycled), norms in `norm`, the output head tied unless
/// `output` names its type.
pub fn llama(
    version: u32,
    alignment: usize,
    matrix: &[TensorType],
    norm: TensorType,
    output: Option<TensorType>,
) -> Vec<u8> {
    let (dim, ff, vocab, kv) = (32u64, 64u64, TOKENS.len() as u64, 16u64);
    let str_array =
        |items: &[&str]| Meta::Array(items.iter().map(|s| Meta::Str(s.to_string())).collect());
    let mut b = Builder::new(version, alignment, 0x5eed ^ version as u64)
        .meta("general.architecture", Meta::Str("llama".into()))
        .meta("general.name", Meta::Str("fuzz seed".into()))
        .meta("general.file_type", Meta::U32(3))
        .meta("general.tags", str_array(&["fuzz", "seed"]))
        .meta("llama.context_length", Meta::U32(64))
        .meta("llama.embedding_length", Meta::U32(dim as u32))
        .meta("llama.block_count", Meta::U32(1))
        .meta("llama.feed_forward_length", Meta::U32(ff as u32))
        .meta("llama.rope.dimension_count", Meta::U32(16))
        .meta("llama.attention.head_count", Meta::U32(2))
        .meta("llama.attention.head_count_kv", Meta::U32(1))
        .meta("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5))
        .meta("llama.rope.freq_base", Meta::F32(10000.0))
        .meta("llama.vocab_size", Meta::U32(vocab as u32))
        .meta("tokenizer.ggml.model", Meta::Str("gpt2".into()))
        .meta("tokenizer.ggml.pre", Meta::Str("smollm".into()))
        .meta("tokenizer.ggml.tokens", str_array(&TOKENS))
        .meta(
            "tokenizer.ggml.token_type",
            Meta::Array(
                (0..TOKENS.len())
                    .map(|i| Meta::I32(if i < 3 { 3 } else { 1 }))
                    .collect(),
            ),
        )
        .meta("tokenizer.ggml.merges", str_array(&["a b", "ab c"]))
        .meta("tokenizer.ggml.bos_token_id", Meta::U32(1))
        .meta("tokenizer.ggml.eos_token_id", Meta::U32(2))
        .meta("fuzz.u8", Meta::U8(7))
        .meta("fuzz.i8", Meta::I8(-7))
        .meta("fuzz.u16", Meta::U16(700))
        .meta("fuzz.i16", Meta::I16(-700))
        .meta("fuzz.bool", Meta::Bool(true))
        .meta("fuzz.u64", Meta::U64(1 << 40))
        .meta("fuzz.i64", Meta::I64(-(1 << 40)))
        .meta("fuzz.f64", Meta::F64(0.25))
        .meta(
            "fuzz.nested",
            Meta::Array(vec![
                Meta::Array(vec![Meta::I8(1), Meta::I8(2)]),
                Meta::Array(vec![Meta::I8(3)]),
            ]),
        );
    let mut types = matrix.iter().copied().cycle();
    b = b.tensor("token_embd.weight", &[dim, vocab], types.next().unwrap());
    let layer = [
        ("attn_q", dim, dim),
        ("attn_k", dim, kv),
        ("attn_v", dim, kv),
        ("attn_output", dim, dim),
        ("ffn_gate", dim, ff),
        ("ffn_up", dim, ff),
        ("ffn_down", ff, dim),
    ];
    b = b.tensor("blk.0.attn_norm.weight", &[dim], norm).tensor(
        "blk.0.ffn_norm.weight",
        &[dim],
        norm,
    );
    for (name, cols, rows) in layer {
        b = b.tensor(
            &format!("blk.0.{name}.weight"),
            &[cols, rows],
            types.next().unwrap(),
        );
    }
    b = b.tensor("output_norm.weight", &[dim], norm);
    if let Some(t) = output {
        b = b.tensor("output.weight", &[dim, vocab], t);
    }
    b.build()
}

/// The GGUF fuzz targets' seeds: SmolLM2's layout (v3, Q4_1, tied head, F32 norms), every
/// tensor type with a separate head and F16 norms, and a v2 file aligned to 64 bytes.
pub fn llama_seeds() -> Vec<Vec<u8>> {
    use TensorType::*;
    vec![
        llama(3, 32, &[Q4_1], F32, None),
        llama(3, 32, &[Q8_0, Q4_0, F16, F32, Q4_1], F16, Some(F16)),
        llama(2, 64, &[Q4_0, Q8_0], F32, Some(Q8_0)),
    ]
}
