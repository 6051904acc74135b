//! The fuzz target of the GGUF reader and loader (`lab_fuzz`): mutated llama GGUFs go
//! through `Gguf::parse`, then what `Model::from_gguf` does with the bytes (every tensor's
//! shape, type and extent, the configuration), and a model small enough is assembled and runs a
//! prefill and a decode step. A malformed file is one error naming the byte offset, the key or
//! the tensor, never a panic or an allocation sized by a length field.

use lab_fuzz as fuzz;
use memmap2::MmapMut;

use super::{gguf_weights, validate, Model};
use crate::gguf::Gguf;
use crate::quant::{dequantize_row, Simd};

/// CI's budget (a few seconds in release; `LAB_FUZZ_CASES` for a longer campaign).
const CASES: usize = 4000;

fn one_line(e: &str) {
    assert!(!e.contains('\n'), "an error of several lines: {e}");
}

fn target(bytes: &[u8]) {
    let g = match Gguf::parse(bytes) {
        Ok(g) => g,
        Err(e) => {
            let e = e.to_string();
            one_line(&e);
            assert!(
                e.starts_with("GGUF byte ")
                    || e.starts_with("tensor `")
                    || e.contains("`general.alignment`"),
                "a parse error that names no offset, key or tensor: {e}"
            );
            return;
        }
    };
    for (name, t) in &g.tensors {
        let start = g.data_start + t.offset;
        assert!(
            bytes.get(start..start + t.nbytes).is_some(),
            "tensor {name} accepted beyond the file"
        );
    }
    let (cfg, w) =
        match gguf_weights(&g, bytes).and_then(|(c, w)| validate(&c, &w).map(|()| (c, w))) {
            Ok(ok) => ok,
            Err(e) => {
                let e = e.to_string();
                one_line(&e);
                assert!(
                    [
                        "tensor",
                        "GGUF metadata",
                        "unsupported",
                        "architecture",
                        "layer ",
                        "token embedding",
                        "output "
                    ]
                    .iter()
                    .any(|w| e.contains(w)),
                    "a load error that names no tensor or setting: {e}"
                );
                return;
            }
        };
    // What the forward pass relies on: every row of every matrix lies in the file.
    for m in w
        .layers
        .iter()
        .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down])
        .chain([&w.embed, &w.output])
    {
        let mut out = vec![0f32; m.cols];
        for r in 0..m.rows {
            let row = m.row(bytes, r);
            assert_eq!(row.len(), m.fmt.row_bytes(m.cols));
            dequantize_row(m.fmt, row, &mut out);
        }
    }
    fuzz::accepted();
    // A model this small is cheap to build and run: its KV cache and buffers are bounded.
    if cfg.layers * cfg.ctx * cfg.kv_dim() > 1 << 20 || cfg.dim.max(cfg.ff) > 1 << 12 {
        return;
    }
    let mut map = MmapMut::map_anon(bytes.len().max(1)).expect("anonymous map");
    map[..bytes.len()].copy_from_slice(bytes);
    let map = map.make_read_only().expect("read-only map");
    let mut model = Model::assemble(cfg, map, w, 1, Simd::detect()).expect("validated");
    let vocab = model.cfg.vocab as u32;
    let mut logits = Vec::new();
    if model.forward(&[0, vocab - 1], &mut logits).is_ok() {
        assert_eq!(logits.len(), vocab as usize);
        let _ = model.forward(&[vocab / 2], &mut logits);
    }
}

#[test]
fn fuzz_gguf_reader_and_loader() {
    fuzz::run("native-gguf", &fuzz::gguf::llama_seeds(), CASES, target);
}

#[test]
fn the_seeds_load_and_run() {
    for seed in fuzz::gguf::llama_seeds() {
        let g = Gguf::parse(&seed).unwrap();
        let (cfg, w) = gguf_weights(&g, &seed).unwrap();
        validate(&cfg, &w).unwrap();
    }
}

/// Arrays nested 100 000 deep (1.2 MB: built here rather than committed to the corpus): an
/// error at the ninth level, not a stack overflow.
#[test]
fn deeply_nested_arrays_are_refused() {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend(4u64.to_le_bytes());
    b.extend(b"deep");
    b.extend(9u32.to_le_bytes());
    for _ in 0..100_000 {
        b.extend(9u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
    }
    let e = Gguf::parse(&b).err().expect("refused").to_string();
    assert!(e.contains("nested deeper than 8"), "{e}");
    assert!(e.starts_with("GGUF byte 136: metadata `deep`"), "{e}");
}
