//! Greedy and seeded temperature/top-k/top-p sampling, identical for every Rust engine (and
//! ported line by line to the Python engine; a test compares the two on the same logits).
//!
//! The generator is SplitMix64 written out here (no `rand` dependency) so that the sequence of
//! random numbers is fixed by the seed alone and cannot change with a dependency upgrade.

use lab_protocol::{Sampling, SamplingOverhead, SamplingTiming, SAMPLED_IDS_KEPT};

/// Every strategy of `overhead`, each a fresh [`Sampler`] selecting `samples` tokens from
/// `logits`, each selection timed on its own (`Instant` around the call; a CPU-side selection
/// needs no device sync).
pub fn time_strategies(logits: &[f32], overhead: &SamplingOverhead) -> Vec<SamplingTiming> {
    overhead
        .strategies
        .iter()
        .map(|sampling| {
            let mut sampler = Sampler::new(sampling);
            let mut sample_ns = Vec::with_capacity(overhead.samples as usize);
            let mut token_ids = Vec::with_capacity(SAMPLED_IDS_KEPT);
            for _ in 0..overhead.samples {
                let t = std::time::Instant::now();
                let id = std::hint::black_box(sampler.sample(std::hint::black_box(logits)));
                sample_ns.push(t.elapsed().as_nanos() as u64);
                if token_ids.len() < SAMPLED_IDS_KEPT {
                    token_ids.push(id);
                }
            }
            SamplingTiming {
                sampling: sampling.clone(),
                logits_len: logits.len() as u32,
                sample_ns,
                token_ids,
            }
        })
        .collect()
}

/// Index of the largest logit; ties go to the lowest index; NaN never wins.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

pub struct Sampler {
    mode: Mode,
    scratch: Scratch,
}

enum Mode {
    Greedy,
    TopP {
        inv_temperature: f32,
        top_p: f32,
        top_k: Option<usize>,
        state: u64,
    },
}

impl Sampler {
    /// A fresh sampler; a seeded one restarts its sequence, so every iteration draws the same.
    pub fn new(sampling: &Sampling) -> Self {
        let mode = match *sampling {
            Sampling::Greedy => Mode::Greedy,
            Sampling::TopP {
                temperature,
                top_p,
                seed,
                top_k,
            } if temperature > 0.0 => Mode::TopP {
                inv_temperature: 1.0 / temperature,
                top_p: top_p.clamp(0.0, 1.0),
                top_k: top_k.map(|k| k.max(1) as usize),
                state: seed,
            },
            // Temperature 0 is greedy by definition.
            Sampling::TopP { .. } => Mode::Greedy,
        };
        Sampler {
            mode,
            scratch: Scratch::default(),
        }
    }

    /// Whether this sampler is plain argmax (greedy, or top-p at temperature 0).
    pub fn is_greedy(&self) -> bool {
        matches!(self.mode, Mode::Greedy)
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        match &mut self.mode {
            Mode::Greedy => argmax(logits),
            Mode::TopP {
                inv_temperature,
                top_p,
                top_k,
                state,
            } => {
                let u = next_unit(state);
                sample_top_p(
                    logits,
                    *inv_temperature,
                    *top_p,
                    *top_k,
                    u,
                    &mut self.scratch,
                )
            }
        }
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in [0, 1) with 53 random bits.
fn next_unit(state: &mut u64) -> f64 {
    (splitmix64(state) >> 11) as f64 / (1u64 << 53) as f64
}

/// The lab's exp for `x` ≤ 0: Cephes' `expf` reduction and polynomial written as separate f32
/// multiplies and adds (no fused multiply-add), `0` below −87 and for NaN. The AVX2 path, this
/// scalar path and the Python engine's port perform the same IEEE operations in the same order,
/// so all three give the same bits. Within 2 ulp of the true exp over [−87, 0] (tested).
pub fn lab_exp(x: f32) -> f32 {
    // Also NaN: it compares as nothing.
    if x.partial_cmp(&EXP_MIN).is_none_or(|o| o.is_lt()) {
        return 0.0;
    }
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * C1;
    let r = r - n * C2;
    let z = r * r;
    let mut y = P[0];
    for c in &P[1..] {
        y = y * r + c;
    }
    let y = y * z + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

const EXP_MIN: f32 = -87.0;
const LOG2E: f32 = f32::from_bits(0x3fb8_aa3b);
const C1: f32 = f32::from_bits(0x3f31_8000);
const C2: f32 = f32::from_bits(0xb95e_8083);
const P: [f32; 6] = [
    f32::from_bits(0x3950_6967),
    f32::from_bits(0x3ab7_43ce),
    f32::from_bits(0x3c08_8908),
    f32::from_bits(0x3d2a_a9c1),
    f32::from_bits(0x3e2a_aaaa),
    f32::from_bits(0x3f00_0000),
];

/// Tokens per block of the probability sums (8 lanes × 8 steps).
const BLOCK: usize = 64;

/// A sampler's working memory, kept between draws.
#[derive(Default)]
struct Scratch {
    /// `lab_exp((logit − max) · 1/T)` per token, zero-padded to whole blocks.
    p: Vec<f32>,
    /// Each block's sum ([`block_sums`]).
    blocks: Vec<f64>,
    /// Candidates: (p, id).
    kept: Vec<(f32, u32)>,
}

/// The largest logit, NaN ignored (`-inf` for none).
fn max_logit(logits: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above).
        return unsafe { simd::max(logits) };
    }
    scalar_max(logits)
}

fn scalar_max(logits: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let mut chunks = logits.chunks_exact(8);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.max(x);
        }
    }
    let mut m = acc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &x in chunks.remainder() {
        m = m.max(x);
    }
    m
}

/// Fills `s.p` and `s.blocks` and returns (the total, the tokens with p > 0). A block's sum:
/// token `64b + 8i + j` is added to lane `j` in step order `i` (f64, from 0), then the lanes
/// as `((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))`; the total is the blocks' sums
/// added in block order.
fn probabilities(logits: &[f32], inv_t: f32, s: &mut Scratch) -> (f64, usize) {
    let m = max_logit(logits);
    let blocks = logits.len().div_ceil(BLOCK);
    s.p.clear();
    s.p.resize(blocks * BLOCK, 0.0);
    s.blocks.clear();
    s.blocks.resize(blocks, 0.0);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above).
        let positive = unsafe { simd::probabilities(logits, m, inv_t, &mut s.p, &mut s.blocks) };
        return (total_of(&s.blocks), positive);
    }
    scalar_probabilities(logits, m, inv_t, &mut s.p, &mut s.blocks);
    totals(&s.p, &s.blocks)
}

/// [`probabilities`] one token at a time (the same operations as the AVX2 path).
fn scalar_probabilities(logits: &[f32], m: f32, inv_t: f32, p: &mut [f32], blocks: &mut [f64]) {
    for (b, sum) in blocks.iter_mut().enumerate() {
        let mut lanes = [0f64; 8];
        for i in 0..8 {
            for (j, lane) in lanes.iter_mut().enumerate() {
                let id = b * BLOCK + 8 * i + j;
                let x = logits
                    .get(id)
                    .map_or(f32::NEG_INFINITY, |&l| (l - m) * inv_t);
                let e = lab_exp(x);
                p[id] = e;
                *lane += e as f64;
            }
        }
        *sum = lanes_sum(&lanes);
    }
}

fn lanes_sum(l: &[f64; 8]) -> f64 {
    ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
}

fn totals(p: &[f32], blocks: &[f64]) -> (f64, usize) {
    (total_of(blocks), p.iter().filter(|&&q| q > 0.0).count())
}

/// The blocks' sums added in block order.
fn total_of(blocks: &[f64]) -> f64 {
    let mut total = 0f64;
    for b in blocks {
        total += b;
    }
    total
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// [`super::lab_exp`] on eight lanes: the same operations.
    #[target_feature(enable = "avx2")]
    unsafe fn exp8(x: __m256) -> __m256 {
        let valid = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(super::EXP_MIN));
        let t = _mm256_add_ps(
            _mm256_mul_ps(x, _mm256_set1_ps(super::LOG2E)),
            _mm256_set1_ps(0.5),
        );
        let n = _mm256_floor_ps(t);
        let r = _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(super::C1)));
        let r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(super::C2)));
        let z = _mm256_mul_ps(r, r);
        let mut y = _mm256_set1_ps(super::P[0]);
        for c in &super::P[1..] {
            y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(*c));
        }
        let y = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(y, z), r), _mm256_set1_ps(1.0));
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_and_ps(_mm256_mul_ps(y, _mm256_castsi256_ps(bits)), valid)
    }

    /// [`super::probabilities`]'s exp and block sums, eight lanes at a time.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn probabilities(
        logits: &[f32],
        m: f32,
        inv_t: f32,
        p: &mut [f32],
        blocks: &mut [f64],
    ) -> usize {
        // SAFETY: every load and store is inside `logits` (checked), `p` (whole blocks) or
        // `lanes`; the caller has AVX2.
        unsafe {
            let (vm, vt) = (_mm256_set1_ps(m), _mm256_set1_ps(inv_t));
            let mut positive = 0;
            for (b, sum) in blocks.iter_mut().enumerate() {
                let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
                for i in 0..8 {
                    let at = b * super::BLOCK + 8 * i;
                    let x = if at + 8 <= logits.len() {
                        _mm256_loadu_ps(logits.as_ptr().add(at))
                    } else {
                        let mut tail = [f32::NEG_INFINITY; 8];
                        for (j, t) in tail.iter_mut().enumerate() {
                            if let Some(&l) = logits.get(at + j) {
                                *t = l;
                            }
                        }
                        _mm256_loadu_ps(tail.as_ptr())
                    };
                    let e = exp8(_mm256_mul_ps(_mm256_sub_ps(x, vm), vt));
                    _mm256_storeu_ps(p.as_mut_ptr().add(at), e);
                    let above = _mm256_cmp_ps::<_CMP_GT_OQ>(e, _mm256_setzero_ps());
                    positive += _mm256_movemask_ps(above).count_ones() as usize;
                    lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
                    hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(e)));
                }
                let mut lanes = [0f64; 8];
                _mm256_storeu_pd(lanes.as_mut_ptr(), lo);
                _mm256_storeu_pd(lanes.as_mut_ptr().add(4), hi);
                *sum = super::lanes_sum(&lanes);
            }
            positive
        }
    }

    /// [`super::max_logit`], eight at a time.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn max(logits: &[f32]) -> f32 {
        let mut acc = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut chunks = logits.chunks_exact(8);
        for chunk in &mut chunks {
            // SAFETY: eight floats of `chunk`.
            let v = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
            // maxps returns its second operand when either is NaN: a NaN logit never wins.
            acc = _mm256_max_ps(v, acc);
        }
        let mut lanes = [0f32; 8];
        // SAFETY: eight floats into `lanes`.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        lanes
            .into_iter()
            .chain(chunks.remainder().iter().copied())
            .fold(f32::NEG_INFINITY, f32::max)
    }

    /// How many of `p` are at least each of `taus`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn counts<const N: usize>(p: &[f32], taus: &[f32; N]) -> [usize; N] {
        let t = taus.map(|t| _mm256_set1_ps(t));
        let mut acc = [_mm256_setzero_si256(); N];
        for chunk in p.chunks_exact(8) {
            // SAFETY: eight floats of `chunk`.
            let q = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
            for (a, t) in acc.iter_mut().zip(&t) {
                // A true lane is all ones: −1.
                let hit = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GE_OQ>(q, *t));
                *a = _mm256_sub_epi32(*a, hit);
            }
        }
        acc.map(|a| {
            let mut lanes = [0u32; 8];
            // SAFETY: eight u32 into `lanes`.
            unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), a) };
            lanes.iter().map(|&n| n as usize).sum()
        })
    }

    /// [`super::at_least`], eight at a time.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn at_least(p: &[f32], tau: f32, out: &mut Vec<(f32, u32)>) {
        let (t, zero) = (_mm256_set1_ps(tau), _mm256_setzero_ps());
        for (c, chunk) in p.chunks_exact(8).enumerate() {
            // SAFETY: eight floats of `chunk`.
            let q = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
            let hit = _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_GE_OQ>(q, t),
                _mm256_cmp_ps::<_CMP_GT_OQ>(q, zero),
            );
            let mut mask = _mm256_movemask_ps(hit) as u32;
            while mask != 0 {
                let j = mask.trailing_zeros() as usize;
                out.push((chunk[j], (8 * c + j) as u32));
                mask &= mask - 1;
            }
        }
    }
}

/// Every token with `τ ≤ p` and `0 < p`, as (p, id), into `out`.
fn at_least(p: &[f32], tau: f32, out: &mut Vec<(f32, u32)>) {
    out.clear();
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above).
        unsafe { simd::at_least(p, tau, out) };
        return;
    }
    scalar_at_least(p, tau, out);
}

fn scalar_at_least(p: &[f32], tau: f32, out: &mut Vec<(f32, u32)>) {
    for (c, chunk) in p.chunks_exact(8).enumerate() {
        // Most chunks hold no candidate: test the eight at once.
        if chunk
            .iter()
            .fold(false, |any, &q| any | (q >= tau && q > 0.0))
        {
            for (j, &q) in chunk.iter().enumerate() {
                if q >= tau && q > 0.0 {
                    out.push((q, (8 * c + j) as u32));
                }
            }
        }
    }
}

/// Descending probability, ascending id on ties: a total order, so every result is
/// deterministic.
fn order(a: &(f32, u32), b: &(f32, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Thresholds (p relative to the most likely token's 1) tried in turn for the candidates of a
/// top-k or a nucleus before every token: each a prefix of the descending order, so a result
/// found inside one is the result over all tokens.
const THRESHOLDS: [f32; 3] = [1.0 / 16.0, 1.0 / 256.0, 1.0 / 4096.0];

/// Thresholds for a top-k's candidates, counted in one pass: the highest that `k` tokens reach.
const TOP_K_THRESHOLDS: [f32; 6] = [
    1.0 / 16.0,
    1.0 / 256.0,
    1.0 / 4096.0,
    1.0 / 65536.0,
    1.0 / 1048576.0,
    1.0 / 16777216.0,
];

/// The highest of [`TOP_K_THRESHOLDS`] that at least `k` of `p` reach, else 0 (every token).
fn top_k_threshold(p: &[f32], k: usize) -> f32 {
    let counts = count_at_least(p, &TOP_K_THRESHOLDS);
    TOP_K_THRESHOLDS
        .iter()
        .zip(counts)
        .find(|&(_, n)| n >= k)
        .map_or(0.0, |(&t, _)| t)
}

/// How many of `p` are at least each of `taus`.
fn count_at_least<const N: usize>(p: &[f32], taus: &[f32; N]) -> [usize; N] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above).
        return unsafe { simd::counts(p, taus) };
    }
    scalar_counts(p, taus)
}

fn scalar_counts<const N: usize>(p: &[f32], taus: &[f32; N]) -> [usize; N] {
    taus.map(|t| p.iter().filter(|&&q| q >= t).count())
}

/// Temperature, then the `top_k` most likely (when set and fewer than the tokens with p > 0),
/// then the nucleus of what is left (`top_p` < 1): the smallest prefix, in descending
/// probability and ascending id on ties, whose share of the kept mass (`Σ p / kept total`, in
/// that order, f64) reaches `top_p`. `u` in [0, 1) picks inside what is kept by walking it
/// with a running f64 sum until the sum exceeds `u` × its mass: in that descending order for a
/// top-k or a nucleus, in id order over the blocks of [`probabilities`] (their sums first, then
/// the tokens of the block reached) when every token is kept. The kept total is the block total
/// over every token, the descending-order sum over a top-k. Candidates are found above
/// [`THRESHOLDS`], never by sorting the vocabulary; the result is the one a full sort gives.
fn sample_top_p(
    logits: &[f32],
    inv_t: f32,
    top_p: f32,
    top_k: Option<usize>,
    u: f64,
    s: &mut Scratch,
) -> u32 {
    let (total, positive) = probabilities(logits, inv_t, s);
    if positive == 0 {
        return argmax(logits);
    }
    let top_k = top_k.filter(|&k| k < positive);
    let kept_total = match top_k {
        Some(k) => {
            let tau = top_k_threshold(&s.p, k);
            at_least(&s.p, tau, &mut s.kept);
            s.kept.select_nth_unstable_by(k - 1, order);
            s.kept.truncate(k);
            s.kept.sort_unstable_by(order);
            s.kept.iter().map(|&(q, _)| q as f64).sum()
        }
        None if top_p >= 1.0 => return draw_by_blocks(&s.p, &s.blocks, u * total),
        None => total,
    };
    let n = if top_p >= 1.0 {
        s.kept.len()
    } else if top_k.is_some() {
        nucleus_len(&s.kept, kept_total, top_p).unwrap_or(s.kept.len())
    } else {
        nucleus_of_all(s, total, top_p)
    };
    let nucleus = &s.kept[..n.max(1)];
    let mass: f64 = nucleus.iter().map(|&(q, _)| q as f64).sum();
    let target = u * mass;
    let mut acc = 0f64;
    for &(q, id) in nucleus {
        acc += q as f64;
        if target < acc {
            return id;
        }
    }
    nucleus[nucleus.len() - 1].1
}

/// The nucleus over every token: candidates above each threshold in turn (then every token),
/// sorted into `s.kept`; its length.
fn nucleus_of_all(s: &mut Scratch, total: f64, top_p: f32) -> usize {
    // Below this bound all tokens together hold less than half of the mass the nucleus may
    // leave out, so its candidates always hold the nucleus.
    let safe = ((1.0 - top_p as f64) * total / (2.0 * s.p.len() as f64)) as f32;
    for tau in THRESHOLDS.into_iter().chain([safe]).filter(|&t| t > 0.0) {
        at_least(&s.p, tau, &mut s.kept);
        let mass: f64 = s.kept.iter().map(|&(q, _)| q as f64).sum();
        if mass < (top_p as f64 + 1e-6) * total {
            continue;
        }
        s.kept.sort_unstable_by(order);
        if let Some(n) = nucleus_len(&s.kept, total, top_p) {
            return n;
        }
    }
    at_least(&s.p, 0.0, &mut s.kept);
    s.kept.sort_unstable_by(order);
    nucleus_len(&s.kept, total, top_p).unwrap_or(s.kept.len())
}

/// The nucleus's length in `sorted` (`None`: the share never reaches `top_p` there).
fn nucleus_len(sorted: &[(f32, u32)], total: f64, top_p: f32) -> Option<usize> {
    let mut kept = 0f64;
    for (n, &(q, _)) in sorted.iter().enumerate() {
        kept += q as f64 / total;
        if kept >= top_p as f64 {
            return Some(n + 1);
        }
    }
    None
}

/// The first token, in id order, at which the running sum exceeds `target`: the blocks' sums
/// first, then the tokens of the block reached from the sum before it; the last token with
/// p > 0 where rounding leaves the sum at or below it.
fn draw_by_blocks(p: &[f32], blocks: &[f64], target: f64) -> u32 {
    let mut before = 0f64;
    for (b, sum) in blocks.iter().enumerate() {
        let acc = before + sum;
        if acc > target {
            let block = &p[b * BLOCK..(b + 1) * BLOCK];
            let mut acc = before;
            for (j, &q) in block.iter().enumerate() {
                acc += q as f64;
                if acc > target {
                    return (b * BLOCK + j) as u32;
                }
            }
            return last_positive(block).map_or(0, |j| (b * BLOCK + j) as u32);
        }
        before = acc;
    }
    last_positive(p).map_or(0, |j| j as u32)
}

fn last_positive(p: &[f32]) -> Option<usize> {
    p.iter().rposition(|&q| q > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_prefers_lowest_index_on_ties_and_ignores_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.25]), 1);
    }

    #[test]
    fn seeded_top_p_is_reproducible_and_seed_sensitive() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let draw = |seed| {
            let mut s = Sampler::new(&Sampling::TopP {
                temperature: 1.0,
                top_p: 0.9,
                seed,
                top_k: None,
            });
            (0..50).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_p_only_returns_tokens_inside_the_nucleus() {
        // One dominant token with 0.99 of the mass: top_p 0.5 must always pick it.
        let mut logits = vec![0.0f32; 50];
        logits[42] = 12.0;
        let mut s = Sampler::new(&Sampling::TopP {
            temperature: 1.0,
            top_p: 0.5,
            seed: 1,
            top_k: None,
        });
        for _ in 0..200 {
            assert_eq!(s.sample(&logits), 42);
        }
        // With top_p 1.0 other tokens must eventually appear (the mass outside is ~0.3 % per draw
        // at T=1, so use a high temperature to make them likely).
        let mut s = Sampler::new(&Sampling::TopP {
            temperature: 10.0,
            top_p: 1.0,
            seed: 1,
            top_k: None,
        });
        assert!((0..200).any(|_| s.sample(&logits) != 42));
    }

    #[test]
    fn zero_temperature_is_greedy() {
        let logits = [0.1, 0.7, 0.2];
        let mut s = Sampler::new(&Sampling::TopP {
            temperature: 0.0,
            top_p: 0.9,
            seed: 3,
            top_k: None,
        });
        assert_eq!(s.sample(&logits), 1);
    }

    #[test]
    fn top_k_draws_only_the_k_most_likely_and_ties_keep_the_lowest_ids() {
        // Ten equal logits at the top: top-k 3 may only ever return ids 0, 1, 2.
        let mut logits = vec![-5.0f32; 1000];
        for l in &mut logits[..10] {
            *l = 2.0;
        }
        let mut s = Sampler::new(&Sampling::TopP {
            temperature: 1.0,
            top_p: 1.0,
            seed: 9,
            top_k: Some(3),
        });
        let drawn: std::collections::BTreeSet<u32> = (0..300).map(|_| s.sample(&logits)).collect();
        assert_eq!(drawn.into_iter().collect::<Vec<_>>(), [0, 1, 2]);
        // top-k 1 is greedy whatever the seed.
        let mut s = Sampler::new(&Sampling::TopP {
            temperature: 5.0,
            top_p: 1.0,
            seed: 4,
            top_k: Some(1),
        });
        logits[7] = 3.0;
        assert!((0..50).all(|_| s.sample(&logits) == 7));
        // A k larger than the vocabulary is plain temperature sampling (same draws).
        let draw = |top_k| {
            let mut s = Sampler::new(&Sampling::TopP {
                temperature: 0.7,
                top_p: 0.95,
                seed: 11,
                top_k,
            });
            (0..100).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(Some(5000)), draw(None));
        assert_ne!(draw(Some(2)), draw(None));
    }

    #[test]
    fn the_labs_exp_is_within_two_ulp_of_exp() {
        let mut worst = 0i64;
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let want = (x as f64).exp() as f32;
            let got = lab_exp(x);
            worst = worst.max((got.to_bits() as i64 - want.to_bits() as i64).abs());
        }
        assert!(worst <= 2, "{worst} ulp");
        assert_eq!(lab_exp(0.0), 1.0);
        assert_eq!(lab_exp(f32::NAN), 0.0);
        assert_eq!(lab_exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(lab_exp(-87.5), 0.0);
        assert!(lab_exp(-86.9) > 0.0);
    }

    /// Logits like a language model's: a few large, a long tail, and `n` of them.
    fn lm_logits(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|i| {
                let u = next_unit(&mut state) as f32;
                if i % 997 == 3 {
                    8.0 + 4.0 * u
                } else {
                    -6.0 + 10.0 * u
                }
            })
            .collect()
    }

    #[test]
    fn the_avx2_and_scalar_paths_give_the_same_bits() {
        for n in [1, 7, 64, 100, 1000, 49_152] {
            let mut logits = lm_logits(n, n as u64);
            if n > 10 {
                logits[5] = f32::NAN;
                logits[6] = f32::NEG_INFINITY;
            }
            let mut s = Scratch::default();
            let (total, positive) = probabilities(&logits, 1.0 / 0.7, &mut s);
            let blocks = n.div_ceil(BLOCK);
            let (mut p, mut b) = (vec![0f32; blocks * BLOCK], vec![0f64; blocks]);
            scalar_probabilities(&logits, max_logit(&logits), 1.0 / 0.7, &mut p, &mut b);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&s.p), bits(&p), "{n} logits");
            assert_eq!(s.blocks, b, "{n} logits");
            assert_eq!((total, positive), totals(&p, &b));
            assert_eq!(max_logit(&logits), scalar_max(&logits));
            assert_eq!(positive, n - usize::from(n > 10) * 2);
            // The candidates and their counts, whichever path finds them.
            assert_eq!(
                count_at_least(&p, &TOP_K_THRESHOLDS),
                scalar_counts(&p, &TOP_K_THRESHOLDS)
            );
            for tau in [0.0, 1.0 / 4096.0, 0.5] {
                let (mut fast, mut slow) = (Vec::new(), Vec::new());
                at_least(&p, tau, &mut fast);
                scalar_at_least(&p, tau, &mut slow);
                assert_eq!(fast, slow, "{n} logits, τ {tau}");
            }
        }
    }

    /// The sampler's result by sorting every token (the definition `sample_top_p` implements
    /// with candidates), for a top-k or a nucleus.
    fn by_full_sort(logits: &[f32], inv_t: f32, top_p: f32, top_k: Option<usize>, u: f64) -> u32 {
        let mut s = Scratch::default();
        let (total, positive) = probabilities(logits, inv_t, &mut s);
        let mut all: Vec<(f32, u32)> = (0..s.p.len())
            .filter(|&i| s.p[i] > 0.0)
            .map(|i| (s.p[i], i as u32))
            .collect();
        all.sort_by(order);
        let top_k = top_k.filter(|&k| k < positive);
        let kept_total = match top_k {
            Some(k) => {
                all.truncate(k);
                all.iter().map(|&(q, _)| q as f64).sum()
            }
            None => total,
        };
        let n = if top_p >= 1.0 {
            all.len()
        } else {
            nucleus_len(&all, kept_total, top_p).unwrap_or(all.len())
        };
        let mass: f64 = all[..n].iter().map(|&(q, _)| q as f64).sum();
        let mut acc = 0f64;
        for &(q, id) in &all[..n] {
            acc += q as f64;
            if u * mass < acc {
                return id;
            }
        }
        all[n - 1].1
    }

    #[test]
    fn candidates_give_what_sorting_every_token_gives() {
        let mut state = 77u64;
        let mut s = Scratch::default();
        let mut distinct = std::collections::BTreeSet::new();
        for case in 0..300 {
            let logits = lm_logits(if case % 3 == 0 { 49_152 } else { 3000 }, case);
            let t = [0.3f32, 0.7, 1.0, 1.6][case as usize % 4];
            let (top_p, top_k) = match case % 5 {
                0 => (0.9, None),
                1 => (0.5, None),
                2 => (0.999, None),
                3 => (1.0, Some(50)),
                _ => (0.9, Some(40 + case as usize)),
            };
            for _ in 0..5 {
                let u = next_unit(&mut state);
                let got = sample_top_p(&logits, 1.0 / t, top_p, top_k, u, &mut s);
                assert_eq!(
                    got,
                    by_full_sort(&logits, 1.0 / t, top_p, top_k, u),
                    "case {case}"
                );
                distinct.insert(got);
            }
        }
        assert!(distinct.len() > 100, "{}", distinct.len());
    }

    #[test]
    fn draws_follow_the_softmax_of_the_kept_tokens() {
        // Five tokens, temperature 1: the exact softmax is known.
        let logits = [1.0f32, 0.0, 2.0, -1.0, 0.5];
        let weights: Vec<f64> = logits.iter().map(|&l| (l as f64).exp()).collect();
        let cases = [
            (1.0f32, None, vec![0usize, 1, 2, 3, 4]),
            (1.0, Some(2), vec![2, 0]),
            (0.8, None, vec![2, 0, 4]),
        ];
        for (top_p, top_k, kept) in cases {
            let mut sampler = Sampler::new(&Sampling::TopP {
                temperature: 1.0,
                top_p,
                seed: 2026,
                top_k,
            });
            let draws = 40_000;
            let mut counts = [0usize; 5];
            for _ in 0..draws {
                counts[sampler.sample(&logits) as usize] += 1;
            }
            let mass: f64 = kept.iter().map(|&i| weights[i]).sum();
            for i in 0..5 {
                let want = if kept.contains(&i) {
                    weights[i] / mass
                } else {
                    0.0
                };
                let got = counts[i] as f64 / draws as f64;
                // Four standard errors of a share out of 40,000 draws.
                let se = (want * (1.0 - want) / draws as f64).sqrt();
                assert!(
                    (got - want).abs() <= 4.0 * se + 1e-12,
                    "top_p {top_p} top_k {top_k:?}: token {i} drawn {got:.4}, softmax {want:.4}"
                );
            }
        }
    }
}
