//! A GGUF reader (versions 2 and 3): metadata, tensor directory, and borrowed tensor bytes from a
//! memory map. Tensor types read: F32, F16, Q4_0, Q4_1, Q8_0.

use std::collections::BTreeMap;

use crate::Result;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Int(i) if *i >= 0 => Some(*i as u64),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}

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
    /// (elements per block, bytes per block)
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q8_0 => (32, 34),
        }
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

/// Nesting of metadata arrays beyond this is refused (real files nest at most once); without a
/// bound, a few bytes per level could exhaust the stack.
const MAX_DEPTH: usize = 8;
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: usize = 4;

/// Reads little-endian fields; every error names the byte offset it was reading at.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

fn at(pos: usize, msg: impl std::fmt::Display) -> Box<dyn std::error::Error + Send + Sync> {
    format!("GGUF byte {pos}: {msg}").into()
}

impl<'a> Cursor<'a> {
    fn left(&self) -> usize {
        self.b.len() - self.pos
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.left() {
            return Err(at(
                self.pos,
                format!(
                    "{what}: {n} bytes needed, {} left (truncated GGUF?)",
                    self.left()
                ),
            ));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("took N bytes"))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    /// A count of items of at least `item_bytes` each, refused when the rest of the file cannot
    /// hold them (so that no allocation or loop is sized by a corrupt count).
    fn count(&mut self, item_bytes: usize, what: &str, field: &str) -> Result<usize> {
        let pos = self.pos;
        let n = self.u64(what)?;
        match usize::try_from(n)
            .ok()
            .filter(|&n| n.checked_mul(item_bytes).is_some_and(|b| b <= self.left()))
        {
            Some(n) => Ok(n),
            None => Err(at(
                pos,
                format!(
                    "{what}: {field} {n} is more than the {} bytes left can hold",
                    self.left()
                ),
            )),
        }
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(1, what, "length")?;
        Ok(String::from_utf8_lossy(self.take(n, what)?).into_owned())
    }
    fn value(&mut self, ty: u32, depth: usize, what: &str) -> Result<Value> {
        let pos = self.pos;
        Ok(match ty {
            0 => Value::Int(self.array::<1>(what)?[0] as i64),
            1 => Value::Int(self.array::<1>(what)?[0] as i8 as i64),
            2 => Value::Int(u16::from_le_bytes(self.array(what)?) as i64),
            3 => Value::Int(i16::from_le_bytes(self.array(what)?) as i64),
            4 => Value::Int(self.u32(what)? as i64),
            5 => Value::Int(self.u32(what)? as i32 as i64),
            6 => Value::Float(f32::from_le_bytes(self.array(what)?) as f64),
            7 => Value::Bool(self.array::<1>(what)?[0] != 0),
            8 => Value::Str(self.string(what)?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(at(
                        pos,
                        format!("{what}: arrays nested deeper than {MAX_DEPTH}"),
                    ));
                }
                let ity = self.u32(what)?;
                let n = self.count(min_bytes(ity), what, "element count")?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.value(ity, depth + 1, what)?);
                }
                Value::Array(v)
            }
            10 => Value::Int(self.u64(what)? as i64),
            11 => Value::Int(self.u64(what)? as i64),
            12 => Value::Float(f64::from_le_bytes(self.array(what)?)),
            t => return Err(at(pos, format!("{what}: unknown GGUF value type {t}"))),
        })
    }
}

/// A key or tensor name as an error shows it: escaped, at most 64 characters.
fn shown(name: &str) -> String {
    let mut s: String = name
        .chars()
        .take(64)
        .collect::<String>()
        .escape_debug()
        .collect();
    if name.chars().nth(64).is_some() {
        s.push('…');
    }
    s
}

/// The fewest bytes a value of GGUF type `ty` takes (1 for an unknown type, which fails when
/// read).
fn min_bytes(ty: u32) -> usize {
    match ty {
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => 1,
    }
}

impl Gguf {
    /// Parses the header of a GGUF file held in `bytes`. Every count, length and tensor extent
    /// is checked against the bytes present; errors name the byte offset and the key or tensor.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut c = Cursor { b: bytes, pos: 0 };
        if c.take(4, "magic")? != b"GGUF" {
            return Err(at(0, "not a GGUF file (bad magic)"));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(at(
                4,
                format!("GGUF version {version} is not supported (2, 3)"),
            ));
        }
        // A tensor entry takes at least 24 bytes, a metadata entry 13.
        let n_tensors = c.count(24, "header", "tensor count")?;
        let n_kv = c.count(13, "header", "metadata count")?;
        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let pos = c.pos;
            let k = c.string(&format!("metadata key {i}"))?;
            let what = format!("metadata `{}`", shown(&k));
            let ty = c.u32(&what)?;
            let v = c.value(ty, 0, &what)?;
            if metadata.insert(k, v).is_some() {
                return Err(at(pos, format!("{what} appears twice")));
            }
        }
        let mut tensors = BTreeMap::new();
        for i in 0..n_tensors {
            let pos = c.pos;
            let name = c.string(&format!("tensor {i} name"))?;
            let what = format!("tensor `{}`", shown(&name));
            let nd = c.u32(&what)? as usize;
            if nd > MAX_DIMS {
                return Err(at(
                    pos,
                    format!("{what}: {nd} dimensions (GGUF tensors have at most {MAX_DIMS})"),
                ));
            }
            let mut dims = Vec::with_capacity(nd);
            for _ in 0..nd {
                let d = c.u64(&what)?;
                dims.push(
                    usize::try_from(d)
                        .map_err(|_| at(pos, format!("{what}: dimension {d} is too large")))?,
                );
            }
            let id = c.u32(&what)?;
            let offset = c.u64(&what)?;
            let ty = GgmlType::from_id(id).ok_or_else(|| {
                at(pos, format!("{what}: ggml type {id} is not supported by engine-native (F32, F16, Q4_0, Q4_1, Q8_0)"))
            })?;
            let (be, bb) = ty.block();
            let n = dims
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .filter(|n| n.checked_mul(bb).is_some())
                .ok_or_else(|| at(pos, format!("{what}: dimensions {dims:?} overflow")))?;
            if !n.is_multiple_of(be) {
                return Err(at(
                    pos,
                    format!("{what}: {n} elements is not a whole number of blocks"),
                ));
            }
            let info = TensorInfo {
                ty,
                dims,
                offset: usize::try_from(offset).unwrap_or(usize::MAX),
                nbytes: n / be * bb,
            };
            if tensors.insert(name, info).is_some() {
                return Err(at(pos, format!("{what} appears twice")));
            }
        }
        let align = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => v
                .as_u64()
                .and_then(|a| usize::try_from(a).ok())
                .filter(|a| a.is_power_of_two())
                .ok_or_else(|| match v {
                    Value::Int(i) => {
                        format!("GGUF metadata `general.alignment` is {i}, not a power of two")
                    }
                    _ => "GGUF metadata `general.alignment` is not an integer".to_string(),
                })?,
        };
        let data_start = c
            .pos
            .div_ceil(align)
            .checked_mul(align)
            .ok_or_else(|| format!("GGUF metadata `general.alignment` {align} is too large"))?;
        for (name, t) in &tensors {
            let end = data_start
                .checked_add(t.offset)
                .and_then(|o| o.checked_add(t.nbytes));
            if end.is_none_or(|e| e > bytes.len()) {
                return Err(format!(
                    "tensor `{}`: data at byte {data_start} + offset {} ({} bytes) lies beyond the end of the file ({} bytes; truncated GGUF?)",
                    shown(name),
                    t.offset,
                    t.nbytes,
                    bytes.len()
                )
                .into());
            }
        }
        Ok(Gguf {
            metadata,
            tensors,
            data_start,
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
