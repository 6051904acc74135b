//! Measurement profiles: how long each prompt of a timed scenario is measured. A profile is a
//! count of warm-up and measured iterations plus, where it matters, a time: a minimum (like
//! optimum-benchmark's "iterations and duration", for published numbers) or a budget (for the
//! first run on a small machine). Engines apply them with
//! [`lab_protocol::ScenarioRequest::wants_more`].

use lab_protocol::Device;
use serde::{Deserialize, Serialize};

/// Samples per timed metric per prompt below which a number is marked as thin in reports.
pub const MIN_SAMPLES: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// CI smoke: 1 warm-up, 3 measured iterations per prompt. Not for publishing.
    Quick,
    /// The CPU default: 1 warm-up, then up to 10 measured iterations within 3 s per prompt, so
    /// that every engine finishes in about 15 minutes on a 2-core machine. The warm-ups are
    /// those of the process's first timed scenario (S1): later timed scenarios of the same
    /// engine process run warm, without warm-ups of their own ([`Profile::warms_up_once`]).
    Budget,
    /// Published numbers and baselines: 2 warm-ups, at least 100 measured iterations (100
    /// samples of every per-iteration metric) and at least 10 s of measuring per prompt.
    Standard,
    /// The GPU default: 10 warm-ups, at least 200 iterations and 30 s per prompt.
    Full,
    /// Iterations given on the command line (`--iterations`, `--warmup`).
    Custom,
}

/// What a profile asks of every prompt of a timed scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measurement {
    pub warmup: u32,
    pub iterations: u32,
    pub min_duration_ms: u64,
    pub max_duration_ms: Option<u64>,
}

impl Profile {
    pub const NAMED: [Profile; 4] = [
        Profile::Quick,
        Profile::Budget,
        Profile::Standard,
        Profile::Full,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Profile::Quick => "quick",
            Profile::Budget => "budget",
            Profile::Standard => "standard",
            Profile::Full => "full",
            Profile::Custom => "custom",
        }
    }

    pub fn parse(s: &str) -> Result<Profile, String> {
        Profile::NAMED
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("--profile {s}: expected one of quick, budget, standard, full"))
    }

    /// Whether only the first timed scenario of an engine process gets the profile's warm-ups
    /// (later ones find the weights paged in and the code paths run): `budget`, whose warm-ups
    /// of S5's 1024-token prompt and of each S2 batch size cost slow engines more than the
    /// measurement (candle's Q4_1 path spent 55 s prefilling S5's warm-up). Every result
    /// records the warm-ups each prompt and level had.
    pub fn warms_up_once(self) -> bool {
        matches!(self, Profile::Budget)
    }

    /// `budget` on CPU, `full` on a GPU.
    pub fn default_for(device: &Device) -> Profile {
        match device {
            Device::Cpu => Profile::Budget,
            Device::Cuda { .. } => Profile::Full,
        }
    }

    /// The profile's settings (`Custom` has none of its own: it is what the flags said).
    pub fn measurement(self) -> Option<Measurement> {
        let m = |warmup, iterations, min_duration_ms, max_duration_ms| Measurement {
            warmup,
            iterations,
            min_duration_ms,
            max_duration_ms,
        };
        Some(match self {
            Profile::Quick => m(1, 3, 0, None),
            Profile::Budget => m(1, 10, 0, Some(3_000)),
            Profile::Standard => m(2, MIN_SAMPLES as u32, 10_000, None),
            Profile::Full => m(10, 200, 30_000, None),
            Profile::Custom => return None,
        })
    }
}

/// How the load scenarios run (S2 batch sizes, S3 concurrency, generation lengths): chosen by
/// the profile, changed by flags, recorded in the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadSettings {
    /// S2 batch sizes.
    pub batch_sizes: Vec<u32>,
    /// S2: measured time per batch size (at least one batch).
    pub batch_duration_ms: u64,
    /// S3 concurrency levels.
    pub concurrency: Vec<u32>,
    /// S3 arrivals: closed-loop clients or a seeded Poisson process.
    pub arrival: lab_protocol::Arrival,
    /// S3 requests per level (never fewer than the level).
    pub requests: u32,
    /// S3: the most sequences decoding together.
    pub max_batch: u32,
    /// Tokens generated per sequence in S2 and S3.
    pub new_tokens: u32,
    /// Tokens generated per prompt in S5 (at the prompt's depth).
    pub long_new_tokens: u32,
    /// S5 prompt lengths instead of `prompts/s5.json`'s (1024, 4096, 8064).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_lengths: Option<Vec<u32>>,
    /// Tokens generated by the KV-cache analysis (`kv-on`, `kv-off`); cumulative times are
    /// read at 64, 256 and 512 tokens where it reaches them.
    #[serde(default = "kv_new_tokens")]
    pub kv_new_tokens: u32,
    /// Selections timed per strategy by the sampling-overhead analysis.
    #[serde(default = "sampling_samples")]
    pub sampling_samples: u32,
}

fn kv_new_tokens() -> u32 {
    64
}

fn sampling_samples() -> u32 {
    1000
}

impl Profile {
    /// The load-scenario settings of a profile (`Custom` takes `Budget`'s). `Standard` and `Full`
    /// run the published sweeps (batch 1/8/32/64, concurrency 1/10/25/50/100, S5 at 1024, 4096
    /// and 8064 tokens; `Full` for the spec's 5 minutes per batch size); `Budget` and `Quick`
    /// are smaller so that a 2-core machine runs every engine in minutes.
    pub fn load_settings(self) -> LoadSettings {
        let l =
            |batch_sizes: &[u32], batch_duration_ms, concurrency: &[u32], requests, new_tokens| {
                LoadSettings {
                    batch_sizes: batch_sizes.to_vec(),
                    batch_duration_ms,
                    concurrency: concurrency.to_vec(),
                    arrival: lab_protocol::Arrival::Closed,
                    requests,
                    max_batch: 64,
                    new_tokens,
                    long_new_tokens: new_tokens,
                    long_lengths: None,
                    kv_new_tokens: kv_new_tokens(),
                    sampling_samples: sampling_samples(),
                }
            };
        // The small profiles run S5 at 1024 tokens only: an engine without a fast quantized
        // path (candle's Q4_1 prefills ~25 tok/s on 2 cores) would spend many minutes on 8064.
        // They also generate 64 tokens in the KV-cache analysis, not 512: without the cache
        // the work grows with the square of the length.
        let short = |mut l: LoadSettings| {
            l.long_lengths = Some(vec![1024]);
            l
        };
        let long_kv = |mut l: LoadSettings| {
            l.kv_new_tokens = 512;
            l
        };
        match self {
            Profile::Quick => short(l(&[1, 4], 500, &[1, 4], 8, 8)),
            Profile::Budget | Profile::Custom => short(l(&[1, 8], 1_000, &[1, 4], 4, 16)),
            Profile::Standard => {
                long_kv(l(&[1, 8, 32, 64], 10_000, &[1, 10, 25, 50, 100], 100, 32))
            }
            Profile::Full => long_kv(l(&[1, 8, 32, 64], 300_000, &[1, 10, 25, 50, 100], 200, 32)),
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_and_standard_gives_enough_samples() {
        for p in Profile::NAMED {
            assert_eq!(Profile::parse(p.name()), Ok(p));
        }
        assert!(Profile::parse("custom")
            .unwrap_err()
            .contains("--profile custom"));
        let standard = Profile::Standard.measurement().unwrap();
        assert!(standard.iterations as usize >= MIN_SAMPLES && standard.min_duration_ms > 0);
        assert!(Profile::Budget
            .measurement()
            .unwrap()
            .max_duration_ms
            .is_some());
        assert_eq!(Profile::default_for(&Device::Cpu), Profile::Budget);
        assert_eq!(
            Profile::default_for(&Device::Cuda { ordinal: 0 }),
            Profile::Full
        );
    }
}
