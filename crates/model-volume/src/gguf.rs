//! Reading a GGUF with candle, guarded: candle's reader sizes allocations by the file's length
//! and count fields (`vec![0; len]` for a string, `Vec::with_capacity(n)` for an array or a
//! tensor's dimensions), recurses into nested arrays without a bound and divides by
//! `general.alignment`. [`read_content`] first walks the header itself, checking every length,
//! count, nesting level, the alignment and every tensor's extent against the file's size, so a
//! malformed file is one error naming the file and the byte offset (and the key or tensor)
//! before candle reads anything.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;

use crate::{io_err, Error, Result};

/// Nesting of metadata arrays beyond this is refused (real files nest at most once).
const MAX_DEPTH: usize = 8;
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;

/// The tensor types candle reads (its `GgmlDType::from_u32`).
fn dtype(id: u32) -> Option<GgmlDType> {
    Some(match id {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

/// The fewest bytes a metadata value of type `ty` takes.
fn min_bytes(ty: u32) -> u64 {
    match ty {
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => 1,
    }
}

/// A name as an error shows it: escaped, at most 64 characters.
pub(crate) fn shown(name: &str) -> String {
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

/// A string as candle keeps it: lossy UTF-8 without trailing NULs.
fn candle_string(mut bytes: Vec<u8>) -> String {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Walks a GGUF header; errors are `byte N: what: problem`.
struct Walk<R> {
    r: R,
    pos: u64,
    len: u64,
}

impl<R: Read + Seek> Walk<R> {
    fn left(&self) -> u64 {
        self.len - self.pos
    }
    fn need(&self, n: u64, what: &str) -> std::result::Result<(), String> {
        if n > self.left() {
            return Err(format!(
                "byte {}: {what}: {n} bytes needed, {} left (truncated GGUF?)",
                self.pos,
                self.left()
            ));
        }
        Ok(())
    }
    fn bytes<const N: usize>(&mut self, what: &str) -> std::result::Result<[u8; N], String> {
        self.need(N as u64, what)?;
        let mut b = [0u8; N];
        self.r
            .read_exact(&mut b)
            .map_err(|e| format!("byte {}: {what}: {e}", self.pos))?;
        self.pos += N as u64;
        Ok(b)
    }
    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        self.bytes(what).map(u32::from_le_bytes)
    }
    fn u64(&mut self, what: &str) -> std::result::Result<u64, String> {
        self.bytes(what).map(u64::from_le_bytes)
    }
    /// A count of items of at least `item` bytes each that the rest of the file can hold.
    fn count(&mut self, item: u64, what: &str, field: &str) -> std::result::Result<u64, String> {
        let at = self.pos;
        let n = self.u64(what)?;
        if n.checked_mul(item).is_none_or(|b| b > self.left()) {
            return Err(format!(
                "byte {at}: {what}: {field} {n} is more than the {} bytes left can hold",
                self.left()
            ));
        }
        Ok(n)
    }
    fn string(&mut self, what: &str) -> std::result::Result<String, String> {
        let n = self.count(1, what, "length")?;
        let mut b = vec![0u8; n as usize];
        self.r
            .read_exact(&mut b)
            .map_err(|e| format!("byte {}: {what}: {e}", self.pos))?;
        self.pos += n;
        Ok(candle_string(b))
    }
    fn skip(&mut self, n: u64, what: &str) -> std::result::Result<(), String> {
        self.need(n, what)?;
        self.r
            .seek_relative(n as i64)
            .map_err(|e| format!("byte {}: {what}: {e}", self.pos))?;
        self.pos += n;
        Ok(())
    }
    /// Checks one value; returns it when it is an integer candle reads as an alignment.
    fn value(
        &mut self,
        ty: u32,
        depth: usize,
        what: &str,
    ) -> std::result::Result<Option<i64>, String> {
        let at = self.pos;
        Ok(match ty {
            0 => Some(self.bytes::<1>(what)?[0] as i64),
            1 => Some(self.bytes::<1>(what)?[0] as i8 as i64),
            2 => Some(u16::from_le_bytes(self.bytes(what)?) as i64),
            3 => Some(i16::from_le_bytes(self.bytes(what)?) as i64),
            4 => Some(self.u32(what)? as i64),
            5 => Some(self.u32(what)? as i32 as i64),
            6 | 10..=12 => {
                self.skip(min_bytes(ty), what)?;
                None
            }
            7 => match self.bytes::<1>(what)?[0] {
                0 | 1 => None,
                b => return Err(format!("byte {at}: {what}: a bool is {b} (0 or 1)")),
            },
            8 => {
                let n = self.count(1, what, "length")?;
                self.skip(n, what)?;
                None
            }
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(format!(
                        "byte {at}: {what}: arrays nested deeper than {MAX_DEPTH}"
                    ));
                }
                let item = self.u32(what)?;
                let n = self.count(min_bytes(item), what, "element count")?;
                for _ in 0..n {
                    self.value(item, depth + 1, what)?;
                }
                None
            }
            t => return Err(format!("byte {at}: {what}: unknown GGUF value type {t}")),
        })
    }
}

/// Checks the header of the GGUF in `r` (`len` bytes): `byte N: …` on the first problem.
fn check_header<R: Read + Seek>(r: R, len: u64) -> std::result::Result<(), String> {
    let mut w = Walk { r, pos: 0, len };
    let magic = w.bytes::<4>("magic")?;
    if &magic != b"GGUF" {
        return Err("byte 0: not a GGUF file (bad magic)".into());
    }
    let version = w.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(format!(
            "byte 4: GGUF version {version} is not read here (2, 3)"
        ));
    }
    // A tensor entry takes at least 24 bytes, a metadata entry 13.
    let n_tensors = w.count(24, "header", "tensor count")?;
    let n_kv = w.count(13, "header", "metadata count")?;
    let mut keys = std::collections::HashSet::new();
    let mut alignment = 32u64;
    for i in 0..n_kv {
        let at = w.pos;
        let key = w.string(&format!("metadata key {i}"))?;
        let what = format!("metadata `{}`", shown(&key));
        let ty = w.u32(&what)?;
        let v = w.value(ty, 0, &what)?;
        if key == "general.alignment" {
            // candle divides by it when it is one of these integer types, else uses 32
            if matches!(ty, 0..=5) {
                alignment = v
                    .and_then(|a| u64::try_from(a).ok())
                    .filter(|a| a.is_power_of_two())
                    .ok_or_else(|| {
                        let v = v.map_or("not an integer".into(), |a| a.to_string());
                        format!("byte {at}: {what} is {v}, not a power of two")
                    })?;
            }
        }
        if !keys.insert(key) {
            return Err(format!("byte {at}: {what} appears twice"));
        }
    }
    let mut names = std::collections::HashSet::new();
    let mut extents = Vec::new();
    for i in 0..n_tensors {
        let at = w.pos;
        let name = w.string(&format!("tensor {i} name"))?;
        let what = format!("tensor `{}`", shown(&name));
        let nd = w.u32(&what)?;
        if nd > MAX_DIMS {
            return Err(format!(
                "byte {at}: {what}: {nd} dimensions (GGUF tensors have at most {MAX_DIMS})"
            ));
        }
        let mut elements = Some(1u64);
        for _ in 0..nd {
            let d = w.u64(&what)?;
            elements = elements.and_then(|e| e.checked_mul(d));
        }
        let id = w.u32(&what)?;
        let offset = w.u64(&what)?;
        let ty = dtype(id)
            .ok_or_else(|| format!("byte {at}: {what}: ggml type {id} is not one candle reads"))?;
        let (block, size) = (ty.block_size() as u64, ty.type_size() as u64);
        let bytes = elements
            .filter(|e| e.is_multiple_of(block))
            .and_then(|e| (e / block).checked_mul(size))
            .ok_or_else(|| {
                format!("byte {at}: {what}: its dimensions overflow or are not whole {ty:?} blocks")
            })?;
        if !names.insert(name) {
            return Err(format!("byte {at}: {what} appears twice"));
        }
        extents.push((what, offset, bytes));
    }
    let data = w
        .pos
        .div_ceil(alignment)
        .checked_mul(alignment)
        .ok_or_else(|| format!("byte {}: the alignment {alignment} is too large", w.pos))?;
    for (what, offset, bytes) in extents {
        if data
            .checked_add(offset)
            .and_then(|o| o.checked_add(bytes))
            .is_none_or(|end| end > len)
        {
            return Err(format!(
                "{what}: data at byte {data} + offset {offset} ({bytes} bytes) lies beyond the end of the file ({len} bytes; truncated GGUF?)"
            ));
        }
    }
    Ok(())
}

/// Reads the metadata and tensor directory of the GGUF in `reader` (named `path` in errors)
/// with candle, after [`check_header`] found nothing wrong.
pub fn read_content<R: Read + Seek>(reader: &mut R, path: &Path) -> Result<Content> {
    let len = reader.seek(SeekFrom::End(0)).map_err(io_err(path))?;
    reader.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    check_header(BufReader::new(&mut *reader), len)
        .map_err(|m| Error::Msg(format!("{}: GGUF {m}", path.display())))?;
    reader.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    Content::read(reader).map_err(|err| Error::Candle {
        path: path.to_path_buf(),
        err,
    })
}

/// Opens and reads the GGUF at `path` ([`read_content`]); the file is returned for reading
/// tensors.
pub fn read(path: &Path) -> Result<(Content, std::fs::File)> {
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let content = read_content(&mut file, path)?;
    Ok((content, file))
}

/// What a metadata value is, for errors (candle's own errors print the whole value: a
/// 49 152-token array).
pub fn kind(v: &Value) -> String {
    match v {
        Value::U8(_) => "a u8".into(),
        Value::I8(_) => "an i8".into(),
        Value::U16(_) => "a u16".into(),
        Value::I16(_) => "an i16".into(),
        Value::U32(_) => "a u32".into(),
        Value::I32(_) => "an i32".into(),
        Value::U64(_) => "a u64".into(),
        Value::I64(_) => "an i64".into(),
        Value::F32(_) => "an f32".into(),
        Value::F64(_) => "an f64".into(),
        Value::Bool(_) => "a bool".into(),
        Value::String(_) => "a string".into(),
        Value::Array(a) => format!("an array of {} values", a.len()),
    }
}

/// `<path>: GGUF metadata `<key>` is <kind>, expected <expected>`.
pub fn wrong_type(path: &Path, key: &str, v: &Value, expected: &str) -> Error {
    Error::Msg(format!(
        "{}: GGUF metadata `{key}` is {}, expected {expected}",
        path.display(),
        kind(v)
    ))
}
