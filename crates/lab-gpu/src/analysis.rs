//! What the samples say about a time window (one measured iteration, one load level): energy
//! from the counter's deltas, whether a slowdown was active, utilization, clocks, memory. The
//! harness builds the windows from the engines' timestamps; definitions live here, once.
//!
//! - **Energy** of a window: the cumulative energy (Σ counter deltas between consecutive
//!   samples) interpolated linearly at the window's start and end. Where the counter went
//!   backwards, a 32-bit wrap (previous value within the top tenth of `u32`, next within the
//!   bottom tenth) is unwrapped; any other decrease (driver reload, reset) or a missing reading
//!   is replaced by the trapezoid of the two power readings over that interval, and the window
//!   says `energy_estimated`.
//! - **Throttled**: a slowdown reason ([`crate::throttle::SLOWDOWN`]: power cap, thermal, HW
//!   slowdown, power brake) was set in a sample taken inside the window or in the first sample
//!   after it (which covers the window's tail; windows shorter than the period are judged by it).
//! - Utilization, clock, power and memory figures are over the samples inside the window, or the
//!   first one after it when none falls inside.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::backend::Sample;
use crate::throttle;

/// Cumulative energy in joules at each sample time.
#[derive(Debug, Clone)]
pub struct EnergyTrace {
    points: Vec<(u64, f64)>,
    /// `estimated[i]`: the interval ending at point `i` came from power, not the counter.
    estimated: Vec<bool>,
}

const U32: u64 = u32::MAX as u64;

impl EnergyTrace {
    pub fn new(samples: &[Sample]) -> Self {
        let mut points = Vec::with_capacity(samples.len());
        let mut estimated = Vec::with_capacity(samples.len());
        let mut cum = 0.0;
        for (i, s) in samples.iter().enumerate() {
            if i > 0 {
                let p = &samples[i - 1];
                let counter = match (p.energy_mj, s.energy_mj) {
                    (Some(a), Some(b)) if b >= a => Some(b - a),
                    (Some(a), Some(b)) if a > U32 / 10 * 9 && a <= U32 && b < U32 / 10 => {
                        Some(U32 - a + b + 1)
                    }
                    _ => None,
                };
                match counter {
                    Some(mj) => {
                        cum += mj as f64 / 1e3;
                        estimated.push(false);
                    }
                    None => {
                        let dt = s.t_unix_ns.saturating_sub(p.t_unix_ns) as f64 / 1e9;
                        let mw = match (p.power_mw, s.power_mw) {
                            (Some(a), Some(b)) => (f64::from(a) + f64::from(b)) / 2.0,
                            (Some(a), None) | (None, Some(a)) => f64::from(a),
                            (None, None) => 0.0,
                        };
                        cum += mw / 1e3 * dt;
                        estimated.push(true);
                    }
                }
            } else {
                estimated.push(false);
            }
            points.push((s.t_unix_ns, cum));
        }
        Self { points, estimated }
    }

    /// Cumulative joules at `t`, interpolated; `None` outside the sampled span.
    pub fn at(&self, t: u64) -> Option<f64> {
        let i = self.points.partition_point(|&(pt, _)| pt < t);
        if i == self.points.len() {
            return None;
        }
        let (t1, e1) = self.points[i];
        if t1 == t {
            return Some(e1);
        }
        if i == 0 {
            return None;
        }
        let (t0, e0) = self.points[i - 1];
        Some(e0 + (e1 - e0) * (t - t0) as f64 / (t1 - t0) as f64)
    }

    /// Joules spent in `[t0, t1]`, and whether any of it was estimated from power.
    pub fn between(&self, t0: u64, t1: u64) -> Option<(f64, bool)> {
        let e = self.at(t1)? - self.at(t0)?;
        let first = self.points.partition_point(|&(pt, _)| pt <= t0);
        let last = self.points.partition_point(|&(pt, _)| pt < t1);
        let est = (first..=last.min(self.points.len() - 1)).any(|i| self.estimated[i]);
        Some((e, est))
    }
}

/// Figures over one window. `None` where the device did not report the quantity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowStats {
    pub samples: u32,
    pub energy_j: Option<f64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub energy_estimated: bool,
    pub mean_power_w: Option<f64>,
    pub gpu_util_mean_pct: Option<f64>,
    pub mem_util_mean_pct: Option<f64>,
    pub sm_mhz_min: Option<u32>,
    pub sm_mhz_mean: Option<f64>,
    pub mem_mhz_mean: Option<f64>,
    pub temperature_max_c: Option<u32>,
    pub peak_used_bytes: Option<u64>,
    pub peak_engine_bytes: Option<u64>,
    pub dram_bw_util_mean_pct: Option<f64>,
    pub sm_util_mean_pct: Option<f64>,
    /// Slowdown reasons seen (empty: not throttled).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slowdowns: Vec<String>,
}

impl WindowStats {
    pub fn throttled(&self) -> bool {
        !self.slowdowns.is_empty()
    }
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (n, s) = v.fold((0u32, 0.0), |(n, s), x| (n + 1, s + x));
    (n > 0).then(|| s / f64::from(n))
}

/// The window's samples: those inside `[t0, t1]` plus the first after it.
fn in_window(samples: &[Sample], t0: u64, t1: u64) -> &[Sample] {
    let a = samples.partition_point(|s| s.t_unix_ns < t0);
    let b = samples.partition_point(|s| s.t_unix_ns <= t1);
    &samples[a..(b + 1).min(samples.len())]
}

/// What the samples say about `[t0, t1]` (Unix ns).
pub fn window(samples: &[Sample], energy: &EnergyTrace, t0: u64, t1: u64) -> WindowStats {
    let w = in_window(samples, t0, t1);
    let energy_j = energy.between(t0, t1);
    let secs = t1.saturating_sub(t0) as f64 / 1e9;
    let bits = w
        .iter()
        .filter_map(|s| s.throttle_bits)
        .fold(0, |a, b| a | b);
    WindowStats {
        samples: w.len() as u32,
        energy_j: energy_j.map(|e| e.0),
        energy_estimated: energy_j.is_some_and(|e| e.1),
        mean_power_w: energy_j
            .filter(|_| secs > 0.0)
            .map(|e| e.0 / secs)
            .or_else(|| {
                mean(
                    w.iter()
                        .filter_map(|s| s.power_mw)
                        .map(|p| f64::from(p) / 1e3),
                )
            }),
        gpu_util_mean_pct: mean(w.iter().filter_map(|s| s.gpu_util_pct).map(f64::from)),
        mem_util_mean_pct: mean(w.iter().filter_map(|s| s.mem_util_pct).map(f64::from)),
        sm_mhz_min: w.iter().filter_map(|s| s.sm_mhz).min(),
        sm_mhz_mean: mean(w.iter().filter_map(|s| s.sm_mhz).map(f64::from)),
        mem_mhz_mean: mean(w.iter().filter_map(|s| s.mem_mhz).map(f64::from)),
        temperature_max_c: w.iter().filter_map(|s| s.temperature_c).max(),
        peak_used_bytes: w.iter().filter_map(|s| s.used_bytes).max(),
        peak_engine_bytes: w.iter().filter_map(|s| s.engine_bytes).max(),
        dram_bw_util_mean_pct: mean(w.iter().filter_map(|s| s.dram_bw_util_pct)),
        sm_util_mean_pct: mean(w.iter().filter_map(|s| s.sm_util_pct)),
        slowdowns: throttle::slowdowns(bits),
    }
}

/// Several windows of one scenario (its measured iterations, or its load levels) and the
/// tokens each generated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioTelemetry {
    pub scenario: String,
    /// Load scenarios: the batch size (S2) or concurrency (S3) of these windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<u32>,
    /// GPU index the figures are for.
    pub device: u32,
    pub windows: u32,
    /// Windows during which a slowdown reason was active.
    pub throttled_windows: u32,
    /// Which windows those were (0-based, in the order given: S1/S5 iterations prompt by
    /// prompt, S2 batches).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub throttled: Vec<u32>,
    /// Union of the slowdown reasons seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slowdowns: Vec<String>,
    /// Σ energy over the windows, and Σ generated tokens in them.
    pub energy_j: Option<f64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub energy_estimated: bool,
    pub new_tokens: u64,
    /// `energy_j / new_tokens`.
    pub joules_per_token: Option<f64>,
    /// Σ energy / Σ window time.
    pub mean_power_w: Option<f64>,
    pub gpu_util_mean_pct: Option<f64>,
    pub sm_mhz_min: Option<u32>,
    pub sm_mhz_mean: Option<f64>,
    pub mem_mhz_mean: Option<f64>,
    pub temperature_max_c: Option<u32>,
    pub peak_used_bytes: Option<u64>,
    pub peak_engine_bytes: Option<u64>,
    pub dram_bw_util_mean_pct: Option<f64>,
    pub sm_util_mean_pct: Option<f64>,
}

impl ScenarioTelemetry {
    /// Share of windows that were throttled (0 when there were none).
    pub fn throttled_fraction(&self) -> f64 {
        if self.windows == 0 {
            0.0
        } else {
            f64::from(self.throttled_windows) / f64::from(self.windows)
        }
    }
}

/// Summarizes `windows` (`(start, end, tokens)` in Unix ns) of one scenario on one device.
pub fn scenario(
    scenario: &str,
    device: u32,
    samples: &[Sample],
    windows: &[(u64, u64, u64)],
) -> ScenarioTelemetry {
    let energy = EnergyTrace::new(samples);
    let stats: Vec<WindowStats> = windows
        .iter()
        .map(|&(t0, t1, _)| window(samples, &energy, t0, t1))
        .collect();
    let weighted = |f: &dyn Fn(&WindowStats) -> Option<f64>| mean(stats.iter().filter_map(f));
    let mut slowdowns: Vec<String> = stats.iter().flat_map(|s| s.slowdowns.clone()).collect();
    slowdowns.sort();
    slowdowns.dedup();
    let all_energy = stats.iter().all(|s| s.energy_j.is_some()) && !stats.is_empty();
    let energy_j = all_energy.then(|| stats.iter().filter_map(|s| s.energy_j).sum::<f64>());
    let new_tokens: u64 = windows.iter().map(|w| w.2).sum();
    let secs: f64 = windows
        .iter()
        .map(|&(a, b, _)| b.saturating_sub(a) as f64 / 1e9)
        .sum();
    ScenarioTelemetry {
        scenario: scenario.to_string(),
        level: None,
        device,
        windows: windows.len() as u32,
        throttled_windows: stats.iter().filter(|s| s.throttled()).count() as u32,
        throttled: (0..stats.len() as u32)
            .filter(|&i| stats[i as usize].throttled())
            .collect(),
        slowdowns,
        energy_j,
        energy_estimated: stats.iter().any(|s| s.energy_estimated),
        new_tokens,
        joules_per_token: energy_j
            .filter(|_| new_tokens > 0)
            .map(|e| e / new_tokens as f64),
        mean_power_w: energy_j.filter(|_| secs > 0.0).map(|e| e / secs),
        gpu_util_mean_pct: weighted(&|s| s.gpu_util_mean_pct),
        sm_mhz_min: stats.iter().filter_map(|s| s.sm_mhz_min).min(),
        sm_mhz_mean: weighted(&|s| s.sm_mhz_mean),
        mem_mhz_mean: weighted(&|s| s.mem_mhz_mean),
        temperature_max_c: stats.iter().filter_map(|s| s.temperature_max_c).max(),
        peak_used_bytes: stats.iter().filter_map(|s| s.peak_used_bytes).max(),
        peak_engine_bytes: stats.iter().filter_map(|s| s.peak_engine_bytes).max(),
        dram_bw_util_mean_pct: weighted(&|s| s.dram_bw_util_mean_pct),
        sm_util_mean_pct: weighted(&|s| s.sm_util_mean_pct),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn s(t_ms: u64, energy_mj: Option<u64>, power_w: u32, bits: u64) -> Sample {
        Sample {
            t_unix_ns: 1_000_000 * MS + t_ms * MS,
            energy_mj,
            power_mw: Some(power_w * 1000),
            throttle_bits: Some(bits),
            sm_mhz: Some(1980),
            gpu_util_pct: Some(100),
            ..Sample::default()
        }
    }

    fn t(ms: u64) -> u64 {
        1_000_000 * MS + ms * MS
    }

    #[test]
    fn energy_is_the_counter_delta_interpolated_at_the_window_edges() {
        // 300 W as a counter: 30 J per 100 ms.
        let v: Vec<Sample> = (0..5)
            .map(|i| s(i * 100, Some(9_000_000 + i * 30_000), 300, 0))
            .collect();
        let e = EnergyTrace::new(&v);
        let (j, est) = e.between(t(100), t(300)).unwrap();
        assert!((j - 60.0).abs() < 1e-9, "{j}");
        assert!(!est);
        // Half-way between samples: linear.
        let (j, _) = e.between(t(150), t(250)).unwrap();
        assert!((j - 30.0).abs() < 1e-9, "{j}");
        // Outside the sampled span: unknown, not zero.
        assert_eq!(e.between(t(0), t(500)), None);
        let stats = scenario("s1", 0, &v, &[(t(0), t(200), 10), (t(200), t(400), 10)]);
        assert!((stats.energy_j.unwrap() - 120.0).abs() < 1e-9);
        assert!((stats.joules_per_token.unwrap() - 6.0).abs() < 1e-9);
        assert!((stats.mean_power_w.unwrap() - 300.0).abs() < 1e-9);
        assert_eq!(stats.throttled_windows, 0);
    }

    #[test]
    fn a_counter_that_wraps_is_unwrapped_and_one_that_resets_is_bridged_with_power() {
        // A 32-bit counter wrapping between the second and third sample: still 30 J per step.
        let top = u32::MAX as u64 - 10_000;
        let v = vec![
            s(0, Some(top - 30_000), 300, 0),
            s(100, Some(top), 300, 0),
            s(200, Some(19_999), 300, 0),
            s(300, Some(49_999), 300, 0),
        ];
        let (j, est) = EnergyTrace::new(&v).between(t(0), t(300)).unwrap();
        assert!((j - 90.0).abs() < 1e-6, "{j}");
        assert!(!est, "a wrap is exact, not estimated");
        // A reset (driver reload) to a small value: that interval comes from power (200 W and
        // 400 W → 300 W × 0.1 s = 30 J) and the window says it was estimated.
        let v = vec![
            s(0, Some(50_000_000), 300, 0),
            s(100, Some(50_030_000), 200, 0),
            s(200, Some(1_000), 400, 0),
            s(300, Some(31_000), 300, 0),
        ];
        let e = EnergyTrace::new(&v);
        let (j, est) = e.between(t(0), t(300)).unwrap();
        assert!((j - 90.0).abs() < 1e-6, "{j}");
        assert!(est);
        let (_, est) = e.between(t(200), t(300)).unwrap();
        assert!(!est, "windows after the reset use the counter again");
        // A missing counter is bridged the same way.
        let v = vec![s(0, Some(0), 100, 0), s(100, None, 100, 0)];
        let (j, est) = EnergyTrace::new(&v).between(t(0), t(100)).unwrap();
        assert!((j - 10.0).abs() < 1e-9 && est);
    }

    #[test]
    fn windows_with_a_slowdown_are_flagged_and_idle_or_locked_clocks_are_not() {
        let v = vec![
            s(0, Some(0), 300, throttle::GPU_IDLE),
            s(100, Some(30_000), 300, throttle::USER_DEFINED_CLOCKS),
            s(200, Some(60_000), 300, throttle::SW_POWER_CAP),
            s(300, Some(90_000), 300, 0),
            s(400, Some(120_000), 300, throttle::HW_THERMAL_SLOWDOWN),
            s(500, Some(150_000), 300, 0),
        ];
        let w = [
            (t(0), t(110), 1),   // idle + user clocks inside, power cap in the next sample
            (t(210), t(290), 1), // no sample inside: judged by the next (none set)
            (t(300), t(390), 1), // next sample has HW thermal
            (t(410), t(500), 1), // clean
        ];
        let e = EnergyTrace::new(&v);
        let flags: Vec<Vec<String>> = w
            .iter()
            .map(|&(a, b, _)| window(&v, &e, a, b).slowdowns)
            .collect();
        assert_eq!(
            flags,
            [
                vec!["sw_power_cap".to_string()],
                vec![],
                vec!["hw_thermal_slowdown".to_string()],
                vec![]
            ]
        );
        let stats = scenario("s1", 0, &v, &w);
        assert_eq!((stats.windows, stats.throttled_windows), (4, 2));
        assert_eq!(stats.throttled, [0, 2]);
        assert_eq!(stats.slowdowns, ["hw_thermal_slowdown", "sw_power_cap"]);
        assert!((stats.throttled_fraction() - 0.5).abs() < 1e-12);
    }
}
