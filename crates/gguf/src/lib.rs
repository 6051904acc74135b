//! The lab's one GGUF header walker (versions 2 and 3): metadata, the tensor directory and where
//! the tensor data starts, read from a file's bytes with every length, count, nesting level,
//! the alignment and every tensor's extent checked against the file's size first. A malformed
//! file is one [`Error`] naming the byte offset and the key or tensor; nothing is allocated or
//! looped over by a length field the rest of the file cannot hold.
//!
//! The volume builder walks a GGUF with it before candle reads the file (candle sizes
//! allocations by those fields); the native engine reads its weights through it; the fuzz
//! targets hold both to it. It depends on nothing.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::{Read, Seek};

/// Nesting of metadata arrays beyond this is refused (real files nest at most once); without a
/// bound a few bytes per level could exhaust the stack.
pub const MAX_DEPTH: usize = 8;
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: u32 = 4;
/// The alignment of the tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value. Integers of every width are `Int` (a `u64` above `i64::MAX` wraps, as
/// GGUF readers keep it).
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

/// ggml's tensor types by id, with (elements per block, bytes per block): every type a GGUF
/// reader of the lab (candle's `GgmlDType`) knows.
pub fn ggml_block(id: u32) -> Option<(u64, u64)> {
    Some(match id {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        30 => (1, 2),     // BF16
        _ => return None,
    })
}

/// One entry of the tensor directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    /// The ggml type id ([`ggml_block`] knows it).
    pub ggml_type: u32,
    /// From the start of the tensor data.
    pub offset: u64,
    pub bytes: u64,
    /// Where its directory entry starts in the file (for errors about it).
    pub entry_at: u64,
}

/// A walked header.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    /// In file order.
    pub tensors: Vec<Tensor>,
    pub alignment: u64,
    /// The byte where the tensor data starts (the header's end, aligned).
    pub data_start: u64,
}

/// What is wrong with a GGUF: `byte N: what: problem`, or a problem of the whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub at: Option<u64>,
    pub message: String,
}

impl Error {
    fn at(at: u64, message: impl Into<String>) -> Self {
        Error {
            at: Some(at),
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some(at) => write!(f, "byte {at}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

/// A key or tensor name as an error shows it: escaped, at most 64 characters.
pub fn shown(name: &str) -> String {
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
fn min_bytes(ty: u32) -> u64 {
    match ty {
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => 1,
    }
}

/// Walks a GGUF header over a reader that knows its length.
struct Walk<R> {
    r: R,
    pos: u64,
    len: u64,
}

type Step<T> = Result<T, Error>;

impl<R: Read + Seek> Walk<R> {
    fn left(&self) -> u64 {
        self.len - self.pos
    }

    fn need(&self, n: u64, what: &str) -> Step<()> {
        if n > self.left() {
            return Err(Error::at(
                self.pos,
                format!(
                    "{what}: {n} bytes needed, {} left (truncated GGUF?)",
                    self.left()
                ),
            ));
        }
        Ok(())
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Step<[u8; N]> {
        self.need(N as u64, what)?;
        let mut b = [0u8; N];
        self.r
            .read_exact(&mut b)
            .map_err(|e| Error::at(self.pos, format!("{what}: {e}")))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Step<u32> {
        self.bytes(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Step<u64> {
        self.bytes(what).map(u64::from_le_bytes)
    }

    /// A count of items of at least `item` bytes each that the rest of the file can hold.
    fn count(&mut self, item: u64, what: &str, field: &str) -> Step<u64> {
        let at = self.pos;
        let n = self.u64(what)?;
        if n.checked_mul(item).is_none_or(|b| b > self.left()) {
            return Err(Error::at(
                at,
                format!(
                    "{what}: {field} {n} is more than the {} bytes left can hold",
                    self.left()
                ),
            ));
        }
        Ok(n)
    }

    /// A string as GGUF readers keep it: lossy UTF-8 without trailing NULs.
    fn string(&mut self, what: &str) -> Step<String> {
        let n = self.count(1, what, "length")?;
        let mut b = vec![0u8; n as usize];
        self.r
            .read_exact(&mut b)
            .map_err(|e| Error::at(self.pos, format!("{what}: {e}")))?;
        self.pos += n;
        while b.last() == Some(&0) {
            b.pop();
        }
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    fn value(&mut self, ty: u32, depth: usize, what: &str) -> Step<Value> {
        let at = self.pos;
        Ok(match ty {
            0 => Value::Int(self.bytes::<1>(what)?[0] as i64),
            1 => Value::Int(self.bytes::<1>(what)?[0] as i8 as i64),
            2 => Value::Int(u16::from_le_bytes(self.bytes(what)?) as i64),
            3 => Value::Int(i16::from_le_bytes(self.bytes(what)?) as i64),
            4 => Value::Int(self.u32(what)? as i64),
            5 => Value::Int(self.u32(what)? as i32 as i64),
            6 => Value::Float(f32::from_le_bytes(self.bytes(what)?) as f64),
            7 => match self.bytes::<1>(what)?[0] {
                b @ (0 | 1) => Value::Bool(b == 1),
                b => return Err(Error::at(at, format!("{what}: a bool is {b} (0 or 1)"))),
            },
            8 => Value::Str(self.string(what)?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(Error::at(
                        at,
                        format!("{what}: arrays nested deeper than {MAX_DEPTH}"),
                    ));
                }
                let item = self.u32(what)?;
                let n = self.count(min_bytes(item), what, "element count")?;
                let mut v = Vec::new();
                for _ in 0..n {
                    v.push(self.value(item, depth + 1, what)?);
                }
                Value::Array(v)
            }
            10 => Value::Int(self.u64(what)? as i64),
            11 => Value::Int(self.u64(what)? as i64),
            12 => Value::Float(f64::from_le_bytes(self.bytes(what)?)),
            t => {
                return Err(Error::at(
                    at,
                    format!("{what}: unknown GGUF value type {t}"),
                ))
            }
        })
    }

    /// The metadata; `general.alignment`, when present, must be an integer of the types GGUF
    /// readers honour (8 to 32 bits) and a power of two.
    fn metadata(&mut self, n_kv: u64) -> Step<(BTreeMap<String, Value>, u64)> {
        let mut metadata = BTreeMap::new();
        let mut alignment = DEFAULT_ALIGNMENT;
        for i in 0..n_kv {
            let at = self.pos;
            let key = self.string(&format!("metadata key {i}"))?;
            let what = format!("metadata `{}`", shown(&key));
            let ty = self.u32(&what)?;
            let v = self.value(ty, 0, &what)?;
            if key == "general.alignment" {
                alignment = match (&v, ty) {
                    (Value::Int(a), 0..=5) => u64::try_from(*a)
                        .ok()
                        .filter(|a| a.is_power_of_two())
                        .ok_or_else(|| {
                            Error::at(at, format!("{what} is {a}, not a power of two"))
                        })?,
                    _ => {
                        return Err(Error::at(
                            at,
                            format!("{what} has value type {ty}: the alignment is an integer of 8 to 32 bits"),
                        ))
                    }
                };
            }
            if metadata.insert(key, v).is_some() {
                return Err(Error::at(at, format!("{what} appears twice")));
            }
        }
        Ok((metadata, alignment))
    }

    fn tensor(&mut self, i: u64) -> Step<Tensor> {
        let at = self.pos;
        let name = self.string(&format!("tensor {i} name"))?;
        let what = format!("tensor `{}`", shown(&name));
        let nd = self.u32(&what)?;
        if nd > MAX_DIMS {
            return Err(Error::at(
                at,
                format!("{what}: {nd} dimensions (GGUF tensors have at most {MAX_DIMS})"),
            ));
        }
        let mut dims = Vec::new();
        for _ in 0..nd {
            dims.push(self.u64(&what)?);
        }
        let ggml_type = self.u32(&what)?;
        let offset = self.u64(&what)?;
        let (block, size) = ggml_block(ggml_type)
            .ok_or_else(|| Error::at(at, format!("{what}: ggml type {ggml_type} is unknown")))?;
        let bytes = dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .filter(|e| e.is_multiple_of(block))
            .and_then(|e| (e / block).checked_mul(size))
            .ok_or_else(|| {
                Error::at(
                    at,
                    format!("{what}: dimensions {dims:?} overflow or are not whole blocks of type {ggml_type}"),
                )
            })?;
        Ok(Tensor {
            name,
            dims,
            ggml_type,
            offset,
            bytes,
            entry_at: at,
        })
    }
}

/// Walks the header of the GGUF in `r`, `len` bytes long: the first problem is the error.
pub fn walk<R: Read + Seek>(r: R, len: u64) -> Result<Header, Error> {
    let mut w = Walk { r, pos: 0, len };
    if &w.bytes::<4>("magic")? != b"GGUF" {
        return Err(Error::at(0, "not a GGUF file (bad magic)"));
    }
    let version = w.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(Error::at(
            4,
            format!("GGUF version {version} is not read here (2, 3)"),
        ));
    }
    // A tensor entry takes at least 24 bytes, a metadata entry 13.
    let n_tensors = w.count(24, "header", "tensor count")?;
    let n_kv = w.count(13, "header", "metadata count")?;
    let (metadata, alignment) = w.metadata(n_kv)?;
    let mut names = HashSet::new();
    let mut tensors = Vec::new();
    for i in 0..n_tensors {
        let t = w.tensor(i)?;
        if !names.insert(t.name.clone()) {
            return Err(Error::at(
                t.entry_at,
                format!("tensor `{}` appears twice", shown(&t.name)),
            ));
        }
        tensors.push(t);
    }
    let data_start = w
        .pos
        .div_ceil(alignment)
        .checked_mul(alignment)
        .ok_or_else(|| Error::at(w.pos, format!("the alignment {alignment} is too large")))?;
    for t in &tensors {
        if data_start
            .checked_add(t.offset)
            .and_then(|o| o.checked_add(t.bytes))
            .is_none_or(|end| end > len)
        {
            return Err(Error {
                at: None,
                message: format!(
                    "tensor `{}`: data at byte {data_start} + offset {} ({} bytes) lies beyond the end of the file ({len} bytes; truncated GGUF?)",
                    shown(&t.name),
                    t.offset,
                    t.bytes
                ),
            });
        }
    }
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_start,
    })
}

/// [`walk`] over bytes in memory (a memory map).
pub fn walk_bytes(bytes: &[u8]) -> Result<Header, Error> {
    walk(std::io::Cursor::new(bytes), bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF v3 with the given metadata entries (already encoded) and tensors.
    fn file(kv: &[Vec<u8>], tensors: &[(&str, &[u64], u32, u64)], data: usize) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend((tensors.len() as u64).to_le_bytes());
        b.extend((kv.len() as u64).to_le_bytes());
        for e in kv {
            b.extend(e);
        }
        for (name, dims, ty, offset) in tensors {
            b.extend((name.len() as u64).to_le_bytes());
            b.extend(name.as_bytes());
            b.extend((dims.len() as u32).to_le_bytes());
            for d in *dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(ty.to_le_bytes());
            b.extend(offset.to_le_bytes());
        }
        b.resize(b.len().div_ceil(32) * 32 + data, 0);
        b
    }

    fn kv_u32(key: &str, v: u32) -> Vec<u8> {
        let mut b = (key.len() as u64).to_le_bytes().to_vec();
        b.extend(key.as_bytes());
        b.extend(4u32.to_le_bytes());
        b.extend(v.to_le_bytes());
        b
    }

    #[test]
    fn a_good_header_is_read_with_its_extents() {
        let f = file(
            &[kv_u32("llama.block_count", 2)],
            &[("w", &[64, 2], 8, 0), ("n", &[64], 0, 128)],
            128 + 256,
        );
        let h = walk_bytes(&f).unwrap();
        assert_eq!(h.metadata["llama.block_count"].as_u64(), Some(2));
        assert_eq!(h.tensors[0].bytes, 2 * 2 * 34);
        assert_eq!(h.tensors[1].bytes, 256);
        assert_eq!(h.data_start % 32, 0);
    }

    #[test]
    fn every_problem_names_its_byte_and_what() {
        let good = file(
            &[kv_u32("general.alignment", 64)],
            &[("w", &[32], 2, 0)],
            64,
        );
        let h = walk_bytes(&good).unwrap();
        assert_eq!((h.alignment, h.data_start % 64), (64, 0));
        let cut = (h.data_start + h.tensors[0].bytes - 1) as usize;
        let e = walk_bytes(&good[..cut]).unwrap_err().to_string();
        assert!(e.contains("lies beyond the end of the file"), "{e}");
        let e = walk_bytes(&good[..30]).unwrap_err().to_string();
        assert_eq!(
            e,
            "byte 8: header: tensor count 1 is more than the 14 bytes left can hold"
        );
        let bad_align = file(&[kv_u32("general.alignment", 24)], &[], 0);
        let e = walk_bytes(&bad_align).unwrap_err().to_string();
        assert_eq!(
            e,
            "byte 24: metadata `general.alignment` is 24, not a power of two"
        );
        let twice = file(&[kv_u32("a", 1), kv_u32("a", 2)], &[], 0);
        assert!(walk_bytes(&twice)
            .unwrap_err()
            .to_string()
            .contains("appears twice"));
        let unknown = file(&[], &[("w", &[32], 99, 0)], 64);
        let e = walk_bytes(&unknown).unwrap_err().to_string();
        assert!(e.contains("tensor `w`: ggml type 99 is unknown"), "{e}");
        let mut huge = good.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = walk_bytes(&huge).unwrap_err().to_string();
        assert!(
            e.starts_with("byte 8: header: tensor count 18446744073709551615 is more"),
            "{e}"
        );
        assert_eq!(
            walk_bytes(b"GGML").unwrap_err().to_string(),
            "byte 0: not a GGUF file (bad magic)"
        );
    }
}
