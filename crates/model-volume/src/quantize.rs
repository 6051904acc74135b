//! The lab's own quantizer: the shipped Q4_1 GGUF dequantized and written again at other levels
//! (`model-q8_0.gguf`, `model-q4_0.gguf`, `model-f16.gguf`) for the quantization analysis.
//!
//! The block formats and rounding are ggml's reference ones (`quantize_row_q8_0_ref`,
//! `quantize_row_q4_0_ref`, `GGML_FP32_TO_FP16`), written out here: Q8_0 = 32 weights per block,
//! `d = amax / 127` as f16 and `q = round(x / d)` as i8; Q4_0 = 32 weights per block, `d = max /
//! -8` (`max` the value of largest magnitude, sign kept) as f16 and `q = min(15, trunc(x / d +
//! 8.5))` as nibbles (low nibbles the first 16 weights, high the last 16); F16 = round to nearest
//! even. Every 2-D weight is quantized; 1-D tensors (the norms) stay F32, as llama.cpp's
//! `quantize` keeps them. The source is the Q4_1 file, so every level carries Q4_1's error on
//! top of its own: the files are labelled "derived from the shipped Q4_1" in the manifest.

use std::path::Path;

use candle_core::quantized::{ggml_file::qtensor_from_ggml, gguf_file, GgmlDType, QTensor};
use candle_core::Device;

use crate::{io_err, tmp_path, Error, Result};

/// A level the volume builder writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Q8_0,
    Q4_0,
    F16,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Q8_0, Level::Q4_0, Level::F16];

    /// The file name in the volume entry.
    pub fn file(self) -> &'static str {
        match self {
            Level::Q8_0 => "model-q8_0.gguf",
            Level::Q4_0 => "model-q4_0.gguf",
            Level::F16 => "model-f16.gguf",
        }
    }

    fn ggml(self) -> GgmlDType {
        match self {
            Level::Q8_0 => GgmlDType::Q8_0,
            Level::Q4_0 => GgmlDType::Q4_0,
            Level::F16 => GgmlDType::F16,
        }
    }

    /// GGUF `general.file_type` (llama.cpp's `LLAMA_FTYPE_*`).
    fn file_type(self) -> u32 {
        match self {
            Level::Q8_0 => 7,
            Level::Q4_0 => 2,
            Level::F16 => 1,
        }
    }

    /// The bytes of `x` (a whole number of blocks for the block formats) at this level.
    pub fn quantize(self, x: &[f32]) -> Vec<u8> {
        match self {
            Level::Q8_0 => q8_0(x),
            Level::Q4_0 => q4_0(x),
            Level::F16 => x.iter().flat_map(|&v| f16_bits(v).to_le_bytes()).collect(),
        }
    }
}

pub const QK: usize = 32;

/// f32 → IEEE half, round to nearest even (ggml's `GGML_FP32_TO_FP16` on CPUs with F16C, and its
/// portable fallback): overflow to infinity, NaN kept, subnormals rounded.
pub fn f16_bits(v: f32) -> u16 {
    let x = v.to_bits();
    let sign = ((x >> 16) & 0x8000) as u16;
    let exp = ((x >> 23) & 0xff) as i32;
    let man = x & 0x7f_ffff;
    if exp == 0xff {
        // Inf or NaN (a NaN keeps a payload bit).
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        // Subnormal half (or zero): shift the full mantissa into place, round to nearest even.
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let rest = m & ((1 << shift) - 1);
        let mut h = m >> shift;
        if rest > half || (rest == half && (h & 1) == 1) {
            h += 1;
        }
        return sign | h as u16;
    }
    let mut h = ((e as u32) << 10) | (man >> 13);
    let rest = man & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && (h & 1) == 1) {
        h += 1; // may carry into the exponent, which is the right rounding (up to infinity)
    }
    sign | h as u16
}

/// IEEE half → f32 (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut m = m;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((m & 0x3ff) << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

fn q8_0(x: &[f32]) -> Vec<u8> {
    assert!(
        x.len().is_multiple_of(QK),
        "{} is not a whole number of blocks",
        x.len()
    );
    let mut out = Vec::with_capacity(x.len() / QK * 34);
    for b in x.chunks_exact(QK) {
        let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16_bits(d).to_le_bytes());
        out.extend(b.iter().map(|&v| (v * id).round() as i8 as u8));
    }
    out
}

fn q4_0(x: &[f32]) -> Vec<u8> {
    assert!(
        x.len().is_multiple_of(QK),
        "{} is not a whole number of blocks",
        x.len()
    );
    let mut out = Vec::with_capacity(x.len() / QK * 18);
    for b in x.chunks_exact(QK) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in b {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16_bits(d).to_le_bytes());
        let nib = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
        for j in 0..QK / 2 {
            out.push(nib(b[j]) | (nib(b[j + QK / 2]) << 4));
        }
    }
    out
}

/// The values the bytes of [`Level::quantize`] stand for (ggml's `dequantize_row_*`).
pub fn dequantize(level: Level, bytes: &[u8]) -> Vec<f32> {
    match level {
        Level::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        Level::Q8_0 => bytes
            .chunks_exact(34)
            .flat_map(|b| {
                let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
                b[2..].iter().map(move |&q| q as i8 as f32 * d)
            })
            .collect(),
        Level::Q4_0 => bytes
            .chunks_exact(18)
            .flat_map(|b| {
                let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
                let lo: Vec<f32> = b[2..]
                    .iter()
                    .map(|&q| ((q & 0xf) as f32 - 8.0) * d)
                    .collect();
                let hi: Vec<f32> = b[2..]
                    .iter()
                    .map(|&q| ((q >> 4) as f32 - 8.0) * d)
                    .collect();
                lo.into_iter().chain(hi)
            })
            .collect(),
    }
}

/// Writes `dest`: every tensor of `source` (the shipped GGUF) dequantized and quantized again
/// at `level` (1-D tensors stay F32), the metadata copied with `general.file_type` set to the
/// level's and `general.quantized_by` saying where it came from.
pub fn write_level(source: &Path, dest: &Path, level: Level) -> Result<()> {
    let ce = |err| Error::Candle {
        path: source.to_path_buf(),
        err,
    };
    let (content, mut file) = crate::gguf::read(source)?;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for name in names {
        let q = content.tensor(&mut file, name, &Device::Cpu).map_err(ce)?;
        let dims = q.shape().dims().to_vec();
        let x: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .and_then(|t| t.flatten_all()?.to_vec1())
            .map_err(ce)?;
        let (dtype, bytes) = if dims.len() < 2 {
            (
                GgmlDType::F32,
                x.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        } else {
            (level.ggml(), level.quantize(&x))
        };
        // candle's shape (outermost first); `gguf_file::write` stores it innermost first.
        let t = qtensor_from_ggml(dtype, &bytes, dims, &Device::Cpu).map_err(ce)?;
        tensors.push((name.clone(), t));
    }
    let mut metadata: Vec<(String, gguf_file::Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "general.file_type" | "general.quantized_by"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.push((
        "general.file_type".into(),
        gguf_file::Value::U32(level.file_type()),
    ));
    metadata.push((
        "general.quantized_by".into(),
        gguf_file::Value::String(
            "inference-lab model-volume: derived from the shipped Q4_1 GGUF (dequantized, then quantized with ggml's reference rounding)".into(),
        ),
    ));
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    let meta_refs: Vec<(&str, &gguf_file::Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let tmp = tmp_path(dest);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io_err(&tmp))?);
    gguf_file::write(&mut out, &meta_refs, &tensor_refs).map_err(|err| Error::Candle {
        path: tmp.clone(),
        err,
    })?;
    std::io::Write::flush(&mut out).map_err(io_err(&tmp))?;
    drop(out);
    std::fs::rename(&tmp, dest).map_err(io_err(dest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_rounds_to_nearest_even_like_ggml() {
        for (v, h) in [
            (0.0f32, 0x0000u16),
            (-0.0, 0x8000),
            (1.0, 0x3c00),
            (-2.0, 0xc000),
            (65504.0, 0x7bff),
            (65520.0, 0x7c00), // halfway to the next: rounds up to infinity
            (1e-8, 0x0000),
            (5.960_464_5e-8, 0x0001), // the smallest subnormal
            (0.333_333_34, 0x3555),
            (f32::INFINITY, 0x7c00),
        ] {
            assert_eq!(f16_bits(v), h, "{v}");
        }
        // 1 + 2^-11 is halfway between 1 and the next half: ties to even (1.0).
        assert_eq!(f16_bits(1.0 + 1.0 / 2048.0), 0x3c00);
        assert_eq!(f16_bits(1.0 + 3.0 / 2048.0), 0x3c02);
        for h in [0x0001u16, 0x03ff, 0x0400, 0x3c00, 0x7bff, 0xbc01] {
            assert_eq!(f16_bits(f16_to_f32(h)), h, "{h:#x}");
        }
    }

    #[test]
    fn q8_0_and_q4_0_follow_the_reference_formulas() {
        // One block: -1.0, then 31 values in (-1, 1).
        let x: Vec<f32> = (0..32)
            .map(|i| {
                if i == 0 {
                    -1.0
                } else {
                    (i as f32 - 16.0) / 17.0
                }
            })
            .collect();
        let q8 = Level::Q8_0.quantize(&x);
        assert_eq!(q8.len(), 34);
        let d = f16_to_f32(u16::from_le_bytes([q8[0], q8[1]]));
        assert_eq!(u16::from_le_bytes([q8[0], q8[1]]), f16_bits(1.0 / 127.0));
        assert_eq!(q8[2] as i8, -127);
        assert_eq!(q8[3] as i8, (-15.0f32 / 17.0 * 127.0).round() as i8);
        let back = dequantize(Level::Q8_0, &q8);
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() <= d / 2.0 + 1e-6, "{a} vs {b}");
        }
        // Q4_0: the largest magnitude is -1.0, so d = -1 / -8 = 0.125 and -1.0 maps to q = 0.
        let q4 = Level::Q4_0.quantize(&x);
        assert_eq!(q4.len(), 18);
        assert_eq!(u16::from_le_bytes([q4[0], q4[1]]), f16_bits(0.125));
        assert_eq!(q4[2] & 0xf, 0);
        // x[16] = 0 → q = trunc(0 + 8.5) = 8, in the high nibble of byte 0.
        assert_eq!(q4[2] >> 4, 8);
        let back = dequantize(Level::Q4_0, &q4);
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() <= 0.125 / 2.0 + 1e-6, "{a} vs {b}");
        }
        // A block of zeros stays zeros (d = 0, no division by zero).
        let z = [0f32; 32];
        assert!(dequantize(Level::Q4_0, &Level::Q4_0.quantize(&z))
            .iter()
            .all(|&v| v == 0.0));
        assert!(dequantize(Level::Q8_0, &Level::Q8_0.quantize(&z))
            .iter()
            .all(|&v| v == 0.0));
    }

    /// A GGUF written at each level reads back with the source's tensor names and shapes, its
    /// 1-D tensors unchanged in F32 and its weights within the level's rounding.
    #[test]
    fn a_written_level_reads_back_with_the_sources_shapes() {
        let dir = std::env::temp_dir().join(format!("mv-quant-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("src.gguf");
        let w: Vec<f32> = (0..64 * 96)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let norm: Vec<f32> = (0..96).map(|i| 1.0 + i as f32 / 1000.0).collect();
        let wt = candle_core::Tensor::from_vec(w.clone(), (64, 96), &Device::Cpu).unwrap();
        let nt = candle_core::Tensor::from_vec(norm.clone(), 96, &Device::Cpu).unwrap();
        let (wq, nq) = (
            QTensor::quantize(&wt, GgmlDType::F32).unwrap(),
            QTensor::quantize(&nt, GgmlDType::F32).unwrap(),
        );
        let arch = gguf_file::Value::String("llama".into());
        let mut f = std::fs::File::create(&src).unwrap();
        gguf_file::write(
            &mut f,
            &[("general.architecture", &arch)],
            &[
                ("blk.0.ffn_up.weight", &wq),
                ("blk.0.attn_norm.weight", &nq),
            ],
        )
        .unwrap();
        drop(f);
        for (level, tolerance) in [
            (Level::Q8_0, 1.0 / 127.0),
            (Level::Q4_0, 1.0 / 8.0),
            (Level::F16, 1e-3),
        ] {
            let out = dir.join(level.file());
            write_level(&src, &out, level).unwrap();
            let mut f = std::fs::File::open(&out).unwrap();
            let c = gguf_file::Content::read(&mut f).unwrap();
            assert_eq!(
                c.metadata["general.file_type"].to_u32().unwrap(),
                level.file_type()
            );
            let t = c
                .tensor(&mut f, "blk.0.ffn_up.weight", &Device::Cpu)
                .unwrap();
            assert_eq!(t.shape().dims(), [64, 96], "{level:?}");
            assert_eq!(t.dtype(), level.ggml());
            let back: Vec<f32> = t
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let worst = w
                .iter()
                .zip(&back)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst <= tolerance, "{level:?}: {worst}");
            let n = c
                .tensor(&mut f, "blk.0.attn_norm.weight", &Device::Cpu)
                .unwrap();
            assert_eq!(
                (n.shape().dims(), n.dtype()),
                (&[96usize][..], GgmlDType::F32)
            );
            let nb: Vec<f32> = n.dequantize(&Device::Cpu).unwrap().to_vec1().unwrap();
            assert_eq!(nb, norm);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_quantizer_gives_candles_bytes() {
        // candle's quantizer is a port of ggml's reference one: an independent implementation
        // of the same rounding (llama.cpp itself is compared in engine-llamacpp's tests).
        let x: Vec<f32> = (0..32 * 64)
            .map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * (1.0 + (i / 32) as f32))
            .collect();
        let t = candle_core::Tensor::from_vec(x.clone(), (64, 32), &Device::Cpu).unwrap();
        for level in Level::ALL {
            let q = QTensor::quantize(&t, level.ggml()).unwrap();
            let theirs = q.data().unwrap().to_vec();
            assert_eq!(level.quantize(&x), theirs, "{level:?}");
        }
    }
}
