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
    scratch: Vec<(f32, u32)>,
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
            scratch: Vec::new(),
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

/// Temperature, then the `top_k` most likely (when set), then the nucleus of what is left:
/// the smallest prefix (descending probability, ascending id on ties) whose share of the kept
/// mass reaches `top_p`; `u` in [0, 1) picks inside it. Sums are f64, in a fixed order (id order
/// over every token without top-k; descending order over the k kept with it).
fn sample_top_p(
    logits: &[f32],
    inv_t: f32,
    top_p: f32,
    top_k: Option<usize>,
    u: f64,
    scratch: &mut Vec<(f32, u32)>,
) -> u32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    scratch.clear();
    let mut sum = 0f64;
    for (i, &l) in logits.iter().enumerate() {
        let p = ((l - max) * inv_t).exp();
        if p > 0.0 {
            sum += p as f64;
            scratch.push((p, i as u32));
        }
    }
    // Descending probability, ascending id on ties: a total order, so the result is deterministic.
    let order = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    match top_k {
        Some(k) if k < scratch.len() => {
            scratch.select_nth_unstable_by(k - 1, order);
            scratch.truncate(k);
            scratch.sort_unstable_by(order);
            sum = scratch.iter().map(|&(p, _)| p as f64).sum();
        }
        _ => scratch.sort_unstable_by(order),
    }
    let mut kept = 0f64;
    let mut n = 0;
    for &(p, _) in scratch.iter() {
        kept += p as f64 / sum;
        n += 1;
        if kept >= top_p as f64 {
            break;
        }
    }
    let nucleus = &scratch[..n.max(1)];
    let mass: f64 = nucleus.iter().map(|&(p, _)| p as f64).sum();
    let target = u * mass;
    let mut acc = 0f64;
    for &(p, id) in nucleus {
        acc += p as f64;
        if target < acc {
            return id;
        }
    }
    nucleus[nucleus.len() - 1].1
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
}
