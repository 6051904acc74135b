//! Greedy and seeded temperature/top-p sampling, identical for every Rust engine.
//!
//! The generator is SplitMix64 written out here (no `rand` dependency) so that the sequence of
//! random numbers is fixed by the seed alone and cannot change with a dependency upgrade.

use lab_protocol::Sampling;

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
            } if temperature > 0.0 => Mode::TopP {
                inv_temperature: 1.0 / temperature,
                top_p: top_p.clamp(0.0, 1.0),
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
                state,
            } => {
                let u = next_unit(state);
                sample_top_p(logits, *inv_temperature, *top_p, u, &mut self.scratch)
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

fn sample_top_p(
    logits: &[f32],
    inv_t: f32,
    top_p: f32,
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
    scratch.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
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
        });
        assert_eq!(s.sample(&logits), 1);
    }
}
