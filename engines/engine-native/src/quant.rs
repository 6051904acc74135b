//! Weight formats and the dot-product kernels of the matrix-vector products.
//!
//! Quantized weights stay in their GGUF block layout (memory-mapped, never copied). Activations
//! are quantized per 32-element block to 8 bits ([`BlockQ8`]: scale `d`, `s = d * sum(q)`), as
//! llama.cpp does, so a block's dot product is an integer dot product and two multiplies:
//!
//! - Q4_1 (`x = d*q + m`, q in 0..16): `dw*dx*sum(qw*qx) + mw*sx`
//! - Q4_0 (`x = d*(q - 8)`):          `dw*dx*sum(qw*qx) - 8*dw*sx`
//! - Q8_0 (`x = d*q`):                `dw*dx*sum(qw*qx)`
//!
//! Each kernel has a portable scalar version and an AVX2+FMA version (`maddubs` on unsigned
//! nibbles × signed activations), selected at run time ([`Simd::detect`]); Q4_1 also has an
//! AVX-512 VNNI version (`vpdpbusd`, two blocks per instruction), selectable where the CPU has
//! it. Tests compare every level the CPU can run with the scalar one on random blocks.

/// f16 bits to f32 (IEEE 754 half, with subnormals, infinities and NaN).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if man == 0 {
            sign
        } else {
            // subnormal: normalise
            let mut e = 127 - 15 + 1;
            let mut m = man;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((m & 0x3ff) << 13)
        }
    } else if exp == 31 {
        sign | 0x7f80_0000 | (man << 13)
    } else {
        sign | ((exp + 127 - 15) << 23) | (man << 13)
    };
    f32::from_bits(bits)
}

pub const QK: usize = 32;

/// An activation block: 32 values as `d * q`, with `s = d * sum(q)` precomputed.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(8))]
pub struct BlockQ8 {
    pub d: f32,
    pub s: f32,
    pub q: [i8; QK],
}

/// Quantizes `x` (a multiple of 32 long) into `out` (max-abs scaling, round half to even).
pub fn quantize_q8(x: &[f32], out: &mut [BlockQ8]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in b.q.iter_mut().zip(xs) {
            let r = (v * id).round_ties_even() as i32;
            *q = r as i8;
            sum += r;
        }
        b.d = d;
        b.s = d * sum as f32;
    }
}

/// How a matrix's rows are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    F32,
    Q4_0,
    Q4_1,
    Q8_0,
}

impl Format {
    /// Bytes of one row of `cols` elements.
    pub fn row_bytes(self, cols: usize) -> usize {
        match self {
            Format::F32 => cols * 4,
            Format::Q4_0 => cols / QK * 18,
            Format::Q4_1 => cols / QK * 20,
            Format::Q8_0 => cols / QK * 34,
        }
    }
}

/// Which kernels run.
///
/// Invariant the SIMD dispatch below relies on: a value other than `Scalar` is only created by
/// [`Simd::detect`] or [`Simd::available`], which check at run time that the CPU has the level's
/// instruction sets (`cpu_has`). Nothing else may construct `Avx2` or `Avx512Vnni`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simd {
    Scalar,
    Avx2,
    /// AVX2 kernels, with AVX-512 VNNI (`vpdpbusd`, two blocks per instruction) for the
    /// quantized dot products.
    Avx512Vnni,
}

impl Simd {
    /// The level `auto` runs: AVX2 when the CPU has it, else scalar. The AVX-512 VNNI kernel is
    /// not chosen automatically: on the lab's AVX-512 Xeon it decoded no faster than the AVX2
    /// one (median 133 vs 140 tok/s over 18 alternating 32-token iterations each: decode is
    /// bound by the weight stream, not by multiply throughput); `NATIVE_SIMD=avx512` selects it.
    pub fn detect() -> Simd {
        if Simd::cpu_has(Simd::Avx2) {
            Simd::Avx2
        } else {
            Simd::Scalar
        }
    }

    fn cpu_has(level: Simd) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            match level {
                Simd::Scalar => true,
                Simd::Avx2 => avx2,
                Simd::Avx512Vnni => {
                    avx2 && is_x86_feature_detected!("avx512f")
                        && is_x86_feature_detected!("avx512bw")
                        && is_x86_feature_detected!("avx512vnni")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            level == Simd::Scalar
        }
    }

    /// Every level this CPU can run, from the portable one up (the tests run them all).
    pub fn available() -> Vec<Simd> {
        [Simd::Scalar, Simd::Avx2, Simd::Avx512Vnni]
            .into_iter()
            .filter(|&l| Simd::cpu_has(l))
            .collect()
    }

    /// The `NATIVE_SIMD` value that selects this level.
    pub fn id(self) -> &'static str {
        match self {
            Simd::Scalar => "scalar",
            Simd::Avx2 => "avx2",
            Simd::Avx512Vnni => "avx512",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Simd::Scalar => "scalar",
            Simd::Avx2 => "avx2+fma+f16c",
            Simd::Avx512Vnni => "avx512-vnni+avx2+fma+f16c",
        }
    }

    /// Dot product of one quantized weight row (raw GGUF blocks) with quantized activations.
    #[inline]
    pub fn dot_q(self, fmt: Format, row: &[u8], x: &[BlockQ8]) -> f32 {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Simd::detect`/`Simd::available` checked at run time that the CPU has AVX2,
            // FMA and F16C before producing `Avx2` (see `Simd`); the kernel checks its slice
            // lengths itself.
            Simd::Avx2 => unsafe { avx2::dot_q(fmt, row, x) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Simd::available` checked at run time that the CPU has AVX-512 F/BW/VNNI,
            // AVX2, FMA and F16C before producing `Avx512Vnni` (see `Simd`); the kernel checks its
            // slice lengths itself.
            Simd::Avx512Vnni if fmt == Format::Q4_1 => unsafe { avx512::dot_q4_1(row, x) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Simd::available` checked at run time that the CPU has AVX2, FMA and F16C
            // (with AVX-512) before producing `Avx512Vnni` (see `Simd`); the kernel checks its
            // slice lengths itself.
            Simd::Avx512Vnni => unsafe { avx2::dot_q(fmt, row, x) },
            _ => scalar::dot_q(fmt, row, x),
        }
    }

    /// [`quantize_q8`] with SIMD (same rounding: to nearest, ties away from zero).
    #[inline]
    pub fn quantize(self, x: &[f32], out: &mut [BlockQ8]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `self` is `Avx2` or `Avx512Vnni`, so `Simd::detect`/`Simd::available`
            // checked at run time that the CPU has AVX2, FMA and F16C (see `Simd`); the
            // kernel checks its slice lengths itself.
            Simd::Avx2 | Simd::Avx512Vnni => unsafe { avx2::quantize(x, out) },
            _ => quantize_q8(x, out),
        }
    }

    /// Four dot products of one weight row with four tokens' activations (prefill): the row's
    /// blocks are unpacked once for all four.
    #[inline]
    pub fn dot_q_x4(self, fmt: Format, row: &[u8], x: [&[BlockQ8]; 4]) -> [f32; 4] {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `self` is `Avx2` or `Avx512Vnni`, so `Simd::detect`/`Simd::available`
            // checked at run time that the CPU has AVX2, FMA and F16C (see `Simd`); the
            // kernel checks its slice lengths itself.
            Simd::Avx2 | Simd::Avx512Vnni if fmt == Format::Q4_1 || fmt == Format::Q8_0 => unsafe {
                avx2::dot_q_x4(fmt, row, x)
            },
            _ => x.map(|xt| self.dot_q(fmt, row, xt)),
        }
    }

    /// f32 dot product.
    #[inline]
    pub fn dot_f32(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `self` is `Avx2` or `Avx512Vnni`, so `Simd::detect`/`Simd::available`
            // checked at run time that the CPU has AVX2, FMA and F16C (see `Simd`); the
            // kernel reads only the common length of `a` and `b`.
            Simd::Avx2 | Simd::Avx512Vnni => unsafe { avx2::dot_f32(a, b) },
            _ => scalar::dot_f32(a, b),
        }
    }

    /// `y += a * x`
    #[inline]
    pub fn axpy(self, a: f32, x: &[f32], y: &mut [f32]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `self` is `Avx2` or `Avx512Vnni`, so `Simd::detect`/`Simd::available`
            // checked at run time that the CPU has AVX2, FMA and F16C (see `Simd`); the
            // kernel touches only the common length of `x` and `y`.
            Simd::Avx2 | Simd::Avx512Vnni => unsafe { avx2::axpy(a, x, y) },
            _ => scalar::axpy(a, x, y),
        }
    }
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]))
}

/// Dequantizes one row (for embeddings and tests).
pub fn dequantize_row(fmt: Format, row: &[u8], out: &mut [f32]) {
    match fmt {
        Format::F32 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(4)) {
                *o = f32::from_le_bytes(c.try_into().unwrap());
            }
        }
        Format::Q4_1 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(row.chunks_exact(20)) {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                for j in 0..16 {
                    o[j] = (b[4 + j] & 0x0f) as f32 * d + m;
                    o[j + 16] = (b[4 + j] >> 4) as f32 * d + m;
                }
            }
        }
        Format::Q4_0 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(row.chunks_exact(18)) {
                let d = f16_at(b, 0);
                for j in 0..16 {
                    o[j] = ((b[2 + j] & 0x0f) as i32 - 8) as f32 * d;
                    o[j + 16] = ((b[2 + j] >> 4) as i32 - 8) as f32 * d;
                }
            }
        }
        Format::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(row.chunks_exact(34)) {
                let d = f16_at(b, 0);
                for j in 0..QK {
                    o[j] = b[2 + j] as i8 as f32 * d;
                }
            }
        }
    }
}

pub mod scalar {
    use super::*;

    pub fn dot_q(fmt: Format, row: &[u8], x: &[BlockQ8]) -> f32 {
        let mut acc = 0f32;
        match fmt {
            Format::Q4_1 => {
                for (b, xb) in row.chunks_exact(20).zip(x) {
                    let mut s = 0i32;
                    for j in 0..16 {
                        s += (b[4 + j] & 0x0f) as i32 * xb.q[j] as i32;
                        s += (b[4 + j] >> 4) as i32 * xb.q[j + 16] as i32;
                    }
                    acc += f16_at(b, 0) * xb.d * s as f32 + f16_at(b, 2) * xb.s;
                }
            }
            Format::Q4_0 => {
                for (b, xb) in row.chunks_exact(18).zip(x) {
                    let mut s = 0i32;
                    for j in 0..16 {
                        s += (b[2 + j] & 0x0f) as i32 * xb.q[j] as i32;
                        s += (b[2 + j] >> 4) as i32 * xb.q[j + 16] as i32;
                    }
                    let d = f16_at(b, 0);
                    acc += d * xb.d * s as f32 - 8.0 * d * xb.s;
                }
            }
            Format::Q8_0 => {
                for (b, xb) in row.chunks_exact(34).zip(x) {
                    let mut s = 0i32;
                    for j in 0..QK {
                        s += b[2 + j] as i8 as i32 * xb.q[j] as i32;
                    }
                    acc += f16_at(b, 0) * xb.d * s as f32;
                }
            }
            Format::F32 => unreachable!("f32 rows use dot_f32"),
        }
        acc
    }

    pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        // Eight partial sums, like the SIMD version, so both round alike.
        let mut p = [0f32; 8];
        let n8 = a.len() / 8 * 8;
        for i in (0..n8).step_by(8) {
            for k in 0..8 {
                p[k] += a[i + k] * b[i + k];
            }
        }
        let mut s: f32 = p.iter().sum();
        for i in n8..a.len() {
            s += a[i] * b[i];
        }
        s
    }

    pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
        for (y, x) in y.iter_mut().zip(x) {
            *y += a * x;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    /// 16 bytes of nibbles -> 32 unsigned bytes (low nibbles first, then high nibbles).
    ///
    /// # Safety
    ///
    /// The 16 bytes from `p` must be readable (no alignment needed), and the CPU must have AVX2
    /// and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        // SAFETY: the caller guarantees 16 readable bytes at p (an unaligned load); SSE2 is
        // implied by the AVX2 this function is compiled for.
        let b = unsafe { _mm_loadu_si128(p as *const __m128i) };
        let m = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(b, m);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(b), m);
        _mm256_set_m128i(hi, lo)
    }

    /// Sum of u8 x i8 products of 32 pairs as 8 f32 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn mul_sum_us8(w: __m256i, x: __m256i) -> __m256 {
        let p16 = _mm256_maddubs_epi16(w, x);
        let p32 = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
        _mm256_cvtepi32_ps(p32)
    }

    /// Sum of i8 x i8 products (signs moved onto the activations, as maddubs needs).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn mul_sum_i8(w: __m256i, x: __m256i) -> __m256 {
        let aw = _mm256_sign_epi8(w, w);
        let sx = _mm256_sign_epi8(x, w);
        mul_sum_us8(aw, sx)
    }

    /// How far ahead of the current block the weight stream is prefetched (bytes).
    const PREFETCH: usize = 512;

    /// Two f16 values (bytes at p, p+2) to f32 with F16C.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn h2(b: &[u8], i: usize) -> (f32, f32) {
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes([
            b[i],
            b[i + 1],
            b[i + 2],
            b[i + 3],
        ])));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_shuffle_ps::<1>(v, v)))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn h1(b: &[u8], i: usize) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            u16::from_le_bytes([b[i], b[i + 1]]) as i32,
        )))
    }

    /// [`super::scalar::dot_q`] with AVX2: `row` holds at least `x.len()` blocks of `fmt`
    /// (asserted; `fmt` must not be F32, which panics).
    ///
    /// # Safety
    ///
    /// The CPU must have AVX2, FMA and F16C (callers check with [`Simd::detect`] /
    /// [`Simd::available`]).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q(fmt: Format, row: &[u8], x: &[BlockQ8]) -> f32 {
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut extra = 0f32;
        let n = x.len();
        match fmt {
            Format::Q4_1 => {
                assert!(row.len() >= n * 20);
                let mut i = 0;
                while i < n {
                    let b = &row[i * 20..i * 20 + 20];
                    let xb = &x[i];
                    // Stream ahead: rows are contiguous, so this also reaches into the next row.
                    _mm_prefetch::<_MM_HINT_T0>(b.as_ptr().wrapping_add(PREFETCH) as *const i8);
                    let (dw, mw) = h2(b, 0);
                    // SAFETY: `b` is a 20-byte slice (bounds-checked), so the 16 nibble bytes at
                    // offset 4 are readable; `xb.q` is `[i8; 32]`, one unaligned 32-byte load.
                    // The CPU features are this function's contract.
                    let (w, xq) = unsafe {
                        (
                            nibbles(b.as_ptr().add(4)),
                            _mm256_loadu_si256(xb.q.as_ptr() as *const __m256i),
                        )
                    };
                    let p = mul_sum_us8(w, xq);
                    if i % 2 == 0 {
                        acc0 = _mm256_fmadd_ps(p, _mm256_set1_ps(dw * xb.d), acc0);
                    } else {
                        acc1 = _mm256_fmadd_ps(p, _mm256_set1_ps(dw * xb.d), acc1);
                    }
                    extra += mw * xb.s;
                    i += 1;
                }
            }
            Format::Q4_0 => {
                assert!(row.len() >= n * 18);
                for (i, xb) in x.iter().enumerate() {
                    let b = &row[i * 18..i * 18 + 18];
                    // SAFETY: `b` is an 18-byte slice (bounds-checked), so the 16 nibble bytes at
                    // offset 2 are readable; `xb.q` is `[i8; 32]`, one unaligned 32-byte load.
                    // The CPU features are this function's contract.
                    let (w, xq) = unsafe {
                        (
                            nibbles(b.as_ptr().add(2)),
                            _mm256_loadu_si256(xb.q.as_ptr() as *const __m256i),
                        )
                    };
                    let dw = h1(b, 0);
                    acc0 = _mm256_fmadd_ps(mul_sum_us8(w, xq), _mm256_set1_ps(dw * xb.d), acc0);
                    extra -= 8.0 * dw * xb.s;
                }
            }
            Format::Q8_0 => {
                assert!(row.len() >= n * 34);
                for (i, xb) in x.iter().enumerate() {
                    let b = &row[i * 34..i * 34 + 34];
                    _mm_prefetch::<_MM_HINT_T0>(b.as_ptr().wrapping_add(PREFETCH) as *const i8);
                    // SAFETY: `b` is a 34-byte slice (bounds-checked), so the 32 quant bytes at
                    // offset 2 are readable; `xb.q` is `[i8; 32]`; both are unaligned 32-byte
                    // loads. The CPU features are this function's contract.
                    let (w, xq) = unsafe {
                        (
                            _mm256_loadu_si256(b.as_ptr().add(2) as *const __m256i),
                            _mm256_loadu_si256(xb.q.as_ptr() as *const __m256i),
                        )
                    };
                    let p = mul_sum_i8(w, xq);
                    let d = _mm256_set1_ps(h1(b, 0) * xb.d);
                    if i % 2 == 0 {
                        acc0 = _mm256_fmadd_ps(p, d, acc0);
                    } else {
                        acc1 = _mm256_fmadd_ps(p, d, acc1);
                    }
                }
            }
            Format::F32 => unreachable!("f32 rows use dot_f32"),
        }
        hsum(_mm256_add_ps(acc0, acc1)) + extra
    }

    /// [`dot_q`] of one row with four tokens' activations of the same length (asserted); only
    /// Q4_1 and Q8_0 (anything else panics).
    ///
    /// # Safety
    ///
    /// The CPU must have AVX2, FMA and F16C (callers check with [`Simd::detect`] /
    /// [`Simd::available`]).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q_x4(fmt: Format, row: &[u8], x: [&[BlockQ8]; 4]) -> [f32; 4] {
        let n = x[0].len();
        assert!(x.iter().all(|xt| xt.len() == n));
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut extra = [0f32; 4];
        match fmt {
            Format::Q4_1 => {
                assert!(row.len() >= n * 20);
                for i in 0..n {
                    let b = &row[i * 20..i * 20 + 20];
                    let (dw, mw) = h2(b, 0);
                    // SAFETY: `b` is a 20-byte slice (bounds-checked), so the 16 nibble bytes at
                    // offset 4 are readable. The CPU features are this function's contract.
                    let w = unsafe { nibbles(b.as_ptr().add(4)) };
                    for k in 0..4 {
                        let xb = &x[k][i];
                        // SAFETY: `xb.q` is `[i8; 32]`, one unaligned 32-byte load; the CPU
                        // features are this function's contract.
                        let xq = unsafe { _mm256_loadu_si256(xb.q.as_ptr() as *const __m256i) };
                        acc[k] =
                            _mm256_fmadd_ps(mul_sum_us8(w, xq), _mm256_set1_ps(dw * xb.d), acc[k]);
                        extra[k] += mw * xb.s;
                    }
                }
            }
            Format::Q8_0 => {
                assert!(row.len() >= n * 34);
                for i in 0..n {
                    let b = &row[i * 34..i * 34 + 34];
                    let dw = h1(b, 0);
                    // SAFETY: `b` is a 34-byte slice (bounds-checked), so the 32 quant bytes at
                    // offset 2 are readable (unaligned load). The CPU features are this
                    // function's contract.
                    let w = unsafe { _mm256_loadu_si256(b.as_ptr().add(2) as *const __m256i) };
                    let aw = _mm256_sign_epi8(w, w);
                    for k in 0..4 {
                        let xb = &x[k][i];
                        // SAFETY: `xb.q` is `[i8; 32]`, one unaligned 32-byte load; the CPU
                        // features are this function's contract.
                        let xq = unsafe { _mm256_loadu_si256(xb.q.as_ptr() as *const __m256i) };
                        let p = mul_sum_us8(aw, _mm256_sign_epi8(xq, w));
                        acc[k] = _mm256_fmadd_ps(p, _mm256_set1_ps(dw * xb.d), acc[k]);
                    }
                }
            }
            _ => unreachable!("dispatch sends only Q4_1 and Q8_0 here"),
        }
        [0, 1, 2, 3].map(|k| hsum(acc[k]) + extra[k])
    }

    /// Quantizes blocks of 32 to 8 bits: max-abs scale, round half to even. `x` holds at least
    /// `out.len() * QK` values (asserted).
    ///
    /// # Safety
    ///
    /// The CPU must have AVX2, FMA and F16C (callers check with [`Simd::detect`] /
    /// [`Simd::available`]).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quantize(x: &[f32], out: &mut [BlockQ8]) {
        assert!(x.len() >= out.len() * QK);
        let sign_mask = _mm256_set1_ps(-0.0);
        for (bi, b) in out.iter_mut().enumerate() {
            let p = x[bi * QK..].as_ptr();
            // SAFETY: `x.len() >= out.len() * QK` (asserted above) and `bi < out.len()`, so the
            // 32 floats from `p` are in bounds (unaligned loads). The CPU features are this
            // function's contract.
            let v = unsafe {
                [
                    _mm256_loadu_ps(p),
                    _mm256_loadu_ps(p.add(8)),
                    _mm256_loadu_ps(p.add(16)),
                    _mm256_loadu_ps(p.add(24)),
                ]
            };
            let mut m = _mm256_andnot_ps(sign_mask, v[0]);
            for vv in &v[1..] {
                m = _mm256_max_ps(m, _mm256_andnot_ps(sign_mask, *vv));
            }
            let amax = hmax(m);
            let d = amax / 127.0;
            let id = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
            let mut sum = _mm256_setzero_si256();
            let mut q = [0i32; 32];
            for (k, vv) in v.iter().enumerate() {
                let s = _mm256_mul_ps(*vv, id);
                let r = _mm256_cvtps_epi32(_mm256_round_ps::<
                    { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
                >(s));
                sum = _mm256_add_epi32(sum, r);
                // SAFETY: `q` is `[i32; 32]` and `k < 4`, so 8 i32 from `k * 8` are in bounds
                // (unaligned store). The CPU features are this function's contract.
                unsafe { _mm256_storeu_si256(q.as_mut_ptr().add(k * 8) as *mut __m256i, r) };
            }
            for (dst, &src) in b.q.iter_mut().zip(&q) {
                *dst = src as i8;
            }
            let s128 = _mm_add_epi32(
                _mm256_castsi256_si128(sum),
                _mm256_extracti128_si256::<1>(sum),
            );
            let s64 = _mm_add_epi32(s128, _mm_shuffle_epi32::<0b01_00_11_10>(s128));
            let s32 = _mm_add_epi32(s64, _mm_shuffle_epi32::<0b10_11_00_01>(s64));
            b.d = d;
            b.s = d * _mm_cvtsi128_si32(s32) as f32;
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hmax(v: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_shuffle_ps::<1>(m, m));
        _mm_cvtss_f32(m)
    }

    /// f32 dot product over the common length of `a` and `b`.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX2 and FMA (callers check with [`Simd::detect`] /
    /// [`Simd::available`]).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let n8 = n / 8 * 8;
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i < n8 {
            // SAFETY: `i + 8 <= n8 <= n`, the common length of `a` and `b`, so both unaligned
            // 8-float loads are in bounds. The CPU features are this function's contract.
            unsafe {
                acc = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                    acc,
                );
            }
            i += 8;
        }
        let mut s = hsum(acc);
        for j in n8..n {
            s += a[j] * b[j];
        }
        s
    }

    /// `y += a * x` over the common length of `x` and `y`.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX2 and FMA (callers check with [`Simd::detect`] /
    /// [`Simd::available`]).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let n8 = n / 8 * 8;
        let va = _mm256_set1_ps(a);
        let mut i = 0;
        while i < n8 {
            // SAFETY: `i + 8 <= n8 <= n`, the common length of `x` and `y`, so the unaligned
            // 8-float loads and the store are in bounds (`y` is borrowed mutably, nothing else
            // aliases it). The CPU features are this function's contract.
            unsafe {
                let yp = y.as_mut_ptr().add(i);
                _mm256_storeu_ps(
                    yp,
                    _mm256_fmadd_ps(va, _mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(yp)),
                );
            }
            i += 8;
        }
        for j in n8..n {
            y[j] += a * x[j];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    fn scales(b: &[u8]) -> (f32, f32) {
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes([
            b[0], b[1], b[2], b[3],
        ])));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_shuffle_ps::<1>(v, v)))
    }

    /// 16 bytes of nibbles -> 32 unsigned bytes (low nibbles first, then high nibbles).
    ///
    /// # Safety
    ///
    /// The 16 bytes from `p` must be readable (no alignment needed), and the CPU must have
    /// AVX-512 F/BW/VNNI, AVX2, FMA and F16C.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        // SAFETY: the caller guarantees 16 readable bytes at p (an unaligned load); SSE2 is
        // implied by the AVX2 this function is compiled for.
        let b = unsafe { _mm_loadu_si128(p as *const __m128i) };
        let m = _mm_set1_epi8(0x0f);
        _mm256_set_m128i(
            _mm_and_si128(_mm_srli_epi16::<4>(b), m),
            _mm_and_si128(b, m),
        )
    }

    /// Q4_1 x Q8 with `vpdpbusd`: two blocks per 512-bit multiply-accumulate. `row` holds at
    /// least `x.len()` Q4_1 blocks (asserted).
    ///
    /// # Safety
    ///
    /// The CPU must have AVX-512 F/BW/VNNI, AVX2, FMA and F16C (callers check with
    /// [`Simd::available`]).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub unsafe fn dot_q4_1(row: &[u8], x: &[BlockQ8]) -> f32 {
        let n = x.len();
        assert!(row.len() >= n * 20);
        let mut acc = _mm512_setzero_ps();
        let mut extra = 0f32;
        let mut i = 0;
        while i + 2 <= n {
            let (b0, b1) = (&row[i * 20..i * 20 + 20], &row[i * 20 + 20..i * 20 + 40]);
            let (x0, x1) = (&x[i], &x[i + 1]);
            _mm_prefetch::<_MM_HINT_T0>(b0.as_ptr().wrapping_add(512) as *const i8);
            let ((d0, m0), (d1, m1)) = (scales(b0), scales(b1));
            // SAFETY: `b0` and `b1` are 20-byte slices (bounds-checked), so the 16 nibble bytes
            // at offset 4 of each are readable; `x0.q` and `x1.q` are `[i8; 32]` (unaligned
            // 32-byte loads). The CPU features are this function's contract.
            let (w, q) = unsafe {
                (
                    _mm512_inserti64x4::<1>(
                        _mm512_castsi256_si512(nibbles(b0.as_ptr().add(4))),
                        nibbles(b1.as_ptr().add(4)),
                    ),
                    _mm512_inserti64x4::<1>(
                        _mm512_castsi256_si512(_mm256_loadu_si256(x0.q.as_ptr() as *const __m256i)),
                        _mm256_loadu_si256(x1.q.as_ptr() as *const __m256i),
                    ),
                )
            };
            let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, q);
            // [d0 x 8, d1 x 8] without AVX-512 DQ: insert as 64-bit lanes.
            let s = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                _mm512_castps_pd(_mm512_set1_ps(d0 * x0.d)),
                _mm256_castps_pd(_mm256_set1_ps(d1 * x1.d)),
            ));
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), s, acc);
            extra += m0 * x0.s + m1 * x1.s;
            i += 2;
        }
        let mut total = _mm512_reduce_add_ps(acc) + extra;
        if i < n {
            // SAFETY: the CPU has AVX2, FMA and F16C (part of this function's contract); the
            // kernel checks the lengths of the last odd block's slices itself.
            total += unsafe { super::avx2::dot_q(Format::Q4_1, &row[i * 20..], &x[i..]) };
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (no `rand` dependency).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn f(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }

    fn f32_to_f16_bits(v: f32) -> u16 {
        // Good enough for test scales (normal range): round-toward-zero of the mantissa.
        let b = v.to_bits();
        let sign = ((b >> 16) & 0x8000) as u16;
        let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
        if exp <= 0 {
            return sign;
        }
        sign | ((exp as u16) << 10) | ((b >> 13) & 0x3ff) as u16
    }

    /// Random raw blocks of `fmt` for `nb` blocks.
    fn random_row(fmt: Format, nb: usize, rng: &mut Rng) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..nb {
            let d = f32_to_f16_bits(0.01 + rng.f().abs() * 0.05).to_le_bytes();
            match fmt {
                Format::Q4_1 => {
                    out.extend(d);
                    out.extend(f32_to_f16_bits(rng.f() * 0.2).to_le_bytes());
                    out.extend((0..16).map(|_| rng.next() as u8));
                }
                Format::Q4_0 => {
                    out.extend(d);
                    out.extend((0..16).map(|_| rng.next() as u8));
                }
                Format::Q8_0 => {
                    out.extend(d);
                    out.extend((0..32).map(|_| rng.next() as u8));
                }
                Format::F32 => out.extend(rng.f().to_le_bytes()),
            }
        }
        out
    }

    #[test]
    fn f16_conversion_matches_known_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8); // smallest subnormal
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), 0x8000_0000);
    }

    /// Every quantized kernel equals a straightforward f64 reference on the dequantized weights
    /// and the quantized activations, for 1..=40 blocks (odd counts included); the SIMD kernel
    /// equals the scalar one up to float summation order.
    #[test]
    fn quantized_dots_match_the_scalar_reference() {
        for simd in Simd::available() {
            quantized_dots_match(simd);
        }
    }

    fn quantized_dots_match(simd: Simd) {
        let mut rng = Rng(7);
        for fmt in [Format::Q4_1, Format::Q4_0, Format::Q8_0] {
            for nb in (1..=40).chain([18, 48]) {
                let row = random_row(fmt, nb, &mut rng);
                let x: Vec<f32> = (0..nb * QK).map(|_| rng.f() * 3.0).collect();
                let mut xq = vec![BlockQ8::default(); nb];
                quantize_q8(&x, &mut xq);
                let mut w = vec![0f32; nb * QK];
                dequantize_row(fmt, &row, &mut w);
                let reference: f64 = w
                    .iter()
                    .enumerate()
                    .map(|(i, &wv)| wv as f64 * (xq[i / QK].d * xq[i / QK].q[i % QK] as f32) as f64)
                    .sum();
                let s = scalar::dot_q(fmt, &row, &xq) as f64;
                let v = simd.dot_q(fmt, &row, &xq) as f64;
                let tol = 1e-4 * (1.0 + reference.abs());
                assert!(
                    (s - reference).abs() <= tol,
                    "{fmt:?} nb={nb}: scalar {s} vs {reference}"
                );
                assert!(
                    (v - s).abs() <= tol,
                    "{fmt:?} nb={nb}: {simd:?} {v} vs scalar {s}"
                );
                // The four-token kernel: each lane equals its own token's dot product.
                let mut other = vec![BlockQ8::default(); nb];
                let y: Vec<f32> = (0..nb * QK).map(|_| rng.f()).collect();
                quantize_q8(&y, &mut other);
                let four = simd.dot_q_x4(fmt, &row, [&xq, &other, &xq, &other]);
                let o = scalar::dot_q(fmt, &row, &other) as f64;
                for (k, want) in [s, o, s, o].into_iter().enumerate() {
                    let got = four[k] as f64;
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{fmt:?} nb={nb} lane {k}"
                    );
                }
            }
        }
    }

    #[test]
    fn activation_quantization_is_within_half_a_step() {
        let mut rng = Rng(3);
        let x: Vec<f32> = (0..96).map(|_| rng.f() * 10.0).collect();
        let mut q = vec![BlockQ8::default(); 3];
        quantize_q8(&x, &mut q);
        for (i, &v) in x.iter().enumerate() {
            let b = &q[i / QK];
            assert!((b.d * b.q[i % QK] as f32 - v).abs() <= b.d * 0.5 + 1e-6);
        }
        for b in &q {
            let sum: i32 = b.q.iter().map(|&v| v as i32).sum();
            assert!((b.s - b.d * sum as f32).abs() < 1e-5);
        }
        // An all-zero block has scale 0 and no NaN.
        let mut z = [BlockQ8::default()];
        quantize_q8(&[0.0; 32], &mut z);
        assert_eq!(z[0].d, 0.0);
        assert_eq!(z[0].q, [0; 32]);
    }

    #[test]
    fn simd_quantization_equals_scalar() {
        for simd in Simd::available() {
            quantization_equals_scalar(simd);
        }
    }

    fn quantization_equals_scalar(simd: Simd) {
        let mut rng = Rng(5);
        let mut x: Vec<f32> = (0..32 * 50).map(|_| rng.f() * 4.0).collect();
        // exact halves (scaled by 127 / 4) and zeros
        x[0] = 0.0;
        x[1] = 4.0;
        x[2] = 2.5 * 4.0 / 127.0;
        x[3] = -3.5 * 4.0 / 127.0;
        x[40..72].fill(0.0);
        let (mut a, mut b) = (vec![BlockQ8::default(); 50], vec![BlockQ8::default(); 50]);
        quantize_q8(&x, &mut a);
        simd.quantize(&x, &mut b);
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            assert_eq!(p.q, q.q, "block {i}");
            assert_eq!(p.d, q.d);
            assert!((p.s - q.s).abs() <= 1e-6 * p.s.abs().max(1.0));
        }
    }

    #[test]
    fn f32_kernels_match_scalar_for_odd_lengths() {
        let mut rng = Rng(11);
        for n in [1, 7, 8, 9, 31, 64, 65, 577] {
            let a: Vec<f32> = (0..n).map(|_| rng.f()).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.f()).collect();
            let reference: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            for k in Simd::available() {
                assert!(
                    (k.dot_f32(&a, &b) as f64 - reference).abs() < 1e-4,
                    "{k:?} n={n}"
                );
                let mut y = b.clone();
                k.axpy(0.5, &a, &mut y);
                for i in 0..n {
                    assert!((y[i] - (b[i] + 0.5 * a[i])).abs() < 1e-6);
                }
            }
        }
    }
}
