//! Reading a GGUF with candle, guarded: candle's reader sizes allocations by the file's length
//! and count fields (`vec![0; len]` for a string, `Vec::with_capacity(n)` for an array or a
//! tensor's dimensions), recurses into nested arrays without a bound and divides by
//! `general.alignment`. [`read_content`] first walks the header with the lab's walker (the
//! `gguf` crate), checking every length,
//! count, nesting level, the alignment and every tensor's extent against the file's size, so a
//! malformed file is one error naming the file and the byte offset (and the key or tensor)
//! before candle reads anything.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};

use crate::{io_err, Error, Result};

/// A name as an error shows it: escaped, at most 64 characters.
pub(crate) fn shown(name: &str) -> String {
    gguf::shown(name)
}

/// Reads the metadata and tensor directory of the GGUF in `reader` (named `path` in errors)
/// with candle, after the lab's walker (`gguf::walk`) found nothing wrong in its header.
pub fn read_content<R: Read + Seek>(reader: &mut R, path: &Path) -> Result<Content> {
    let len = reader.seek(SeekFrom::End(0)).map_err(io_err(path))?;
    reader.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    gguf::walk(BufReader::new(&mut *reader), len)
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
