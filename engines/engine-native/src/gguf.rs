//! The GGUF this engine reads (versions 2 and 3, walked by the lab's `gguf` crate): metadata,
//! tensor directory, and borrowed tensor bytes from a memory map. Tensor types read: F32, F16,
//! Q4_0, Q4_1, Q8_0.

use std::collections::BTreeMap;

use crate::Result;

pub use gguf::Value;

/// ggml tensor types this engine can compute with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
}

impl GgmlType {
    fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub ty: GgmlType,
    /// ggml order: `dims[0]` is the row length (columns).
    pub dims: Vec<usize>,
    pub offset: usize,
    pub nbytes: usize,
}

pub struct Gguf {
    pub metadata: BTreeMap<String, Value>,
    pub tensors: BTreeMap<String, TensorInfo>,
    pub data_start: usize,
}

impl Gguf {
    /// Parses the header of a GGUF file held in `bytes` with the lab's walker (the `gguf`
    /// crate: every count, length and tensor extent checked against the bytes present; errors
    /// name the byte offset and the key or tensor), keeping the tensors this engine computes
    /// with.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        // `GGUF byte N: …`, or a tensor's extent beyond the file (`tensor `x`: …`).
        let h = gguf::walk_bytes(bytes).map_err(|e| match e.at {
            Some(_) => format!("GGUF {e}"),
            None => e.message,
        })?;
        let mut tensors = BTreeMap::new();
        for t in h.tensors {
            let ty = GgmlType::from_id(t.ggml_type).ok_or_else(|| {
                format!(
                    "GGUF byte {}: tensor `{}`: ggml type {} is not supported by engine-native (F32, F16, Q4_0, Q4_1, Q8_0)",
                    t.entry_at,
                    gguf::shown(&t.name),
                    t.ggml_type
                )
            })?;
            // The walker checked every extent against the file, so each fits in a usize.
            let dims = t.dims.iter().map(|&d| d as usize).collect();
            let info = TensorInfo {
                ty,
                dims,
                offset: t.offset as usize,
                nbytes: t.bytes as usize,
            };
            tensors.insert(t.name, info);
        }
        Ok(Gguf {
            metadata: h.metadata,
            tensors,
            data_start: h.data_start as usize,
        })
    }

    pub fn get(&self, key: &str) -> Result<&Value> {
        self.metadata
            .get(key)
            .ok_or_else(|| format!("GGUF metadata `{key}` is missing").into())
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        self.get(key)?
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| format!("GGUF metadata `{key}` is not an unsigned integer").into())
    }

    pub fn f64(&self, key: &str) -> Result<f64> {
        self.get(key)?
            .as_f64()
            .ok_or_else(|| format!("GGUF metadata `{key}` is not a number").into())
    }
}
