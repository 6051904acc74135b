//! Where a result came from: source revision, toolchain, host hardware and software state (the
//! recorded types; the harness collects them).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// `git rev-parse HEAD`, or `unknown` outside a git checkout.
    pub git_rev: String,
    /// Uncommitted changes were present when the run started.
    pub git_dirty: bool,
    /// sha256 of `flake.lock`, when the checkout has one.
    pub flake_lock_sha256: Option<String>,
    pub rustc: String,
    /// UTC, RFC 3339.
    pub started_at: String,
    pub host: Host,
    /// The machine's read bandwidth in GB/s (10^9 bytes/s), measured by `native-membw` with the
    /// run's threads just before the engines ran (CPU runs that build engine-native).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_bandwidth_gb_per_s: Option<f64>,
    /// Every GPU's state from NVML when the run started (clocks, power limit, persistence,
    /// throttle reasons), or why there is none (`unavailable`). Absent in older runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<lab_gpu::GpuState>,
    /// The run's GPU clocks: `not locked`, or what `--lock-clocks` locked them to (a dry run
    /// says what it would have set). Absent on CPU runs and in older runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_clocks: Option<String>,
}

/// The mean of a probe before and after an engine, or whichever of the two was measured.
fn around(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    match (before, after) {
        (Some(a), Some(b)) => Some((a + b) / 2.0),
        (a, b) => a.or(b),
    }
}

/// The machine measured right around one engine run (the drift probes): read bandwidth and an
/// f32 GEMM's speed just before the engine started and just after it ended, with the run's
/// threads (`native-membw`), and the share of CPU time the hypervisor took meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    pub read_bandwidth_before_gb_per_s: Option<f64>,
    pub read_bandwidth_after_gb_per_s: Option<f64>,
    /// f32 GEMM (256³) GFLOP/s before and after (absent in older runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gemm_before_gflop_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gemm_after_gflop_per_s: Option<f64>,
    /// Steal time ÷ all CPU time of the machine (`/proc/stat`) while the engine ran: the share
    /// the hypervisor gave to other guests; absent where not readable and in older runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_steal_share: Option<f64>,
}

impl Probe {
    /// The mean of what was measured around the engine, if anything.
    pub fn read_bandwidth_gb_per_s(&self) -> Option<f64> {
        around(
            self.read_bandwidth_before_gb_per_s,
            self.read_bandwidth_after_gb_per_s,
        )
    }

    /// The mean of the GEMM speeds measured around the engine, if any.
    pub fn gemm_gflop_per_s(&self) -> Option<f64> {
        around(self.gemm_before_gflop_per_s, self.gemm_after_gflop_per_s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub cpu_model: String,
    pub cpu_vendor: String,
    pub cpu_family: String,
    pub cpu_model_number: String,
    /// SIMD features that matter for inference kernels, as the kernel reports them.
    pub cpu_simd: Vec<String>,
    pub logical_cpus: usize,
    pub memory_bytes: Option<u64>,
    /// One row per GPU, `index, name, driver, memory` (from NVML; older runs have
    /// `nvidia-smi` rows), empty when no NVIDIA GPU is visible. The full state is
    /// [`Provenance::gpu`].
    pub gpus: Vec<String>,
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Baseline profile name: numbers are comparable only within one profile.
/// CPU: `cpu-<vendor>-f<family>m<model>-<threads>t`; GPU: `gpu-<name>`.
pub fn hardware_profile(host: &Host, device: &lab_protocol::Device, threads: usize) -> String {
    match device {
        lab_protocol::Device::Cpu => format!(
            "cpu-{}-f{}m{}-{}t",
            slug(&host.cpu_vendor),
            slug(&host.cpu_family),
            slug(&host.cpu_model_number),
            threads
        ),
        lab_protocol::Device::Cuda { ordinal } => {
            let name = host
                .gpus
                .get(*ordinal as usize)
                .and_then(|row| row.split(',').nth(1))
                .map(slug)
                .unwrap_or_else(|| "unknown".into());
            format!("gpu-{name}")
        }
    }
}

/// Seconds since the Unix epoch as RFC 3339 UTC, without a date library.
pub fn rfc3339(unix_secs: u64) -> String {
    let (days, rem) = (unix_secs / 86_400, unix_secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn profile_names_are_slugs() {
        let h = Host {
            hostname: "h".into(),
            os: "linux".into(),
            kernel: "6".into(),
            arch: "x86_64".into(),
            cpu_model: "x".into(),
            cpu_vendor: "GenuineIntel".into(),
            cpu_family: "6".into(),
            cpu_model_number: "167".into(),
            cpu_simd: vec![],
            logical_cpus: 2,
            memory_bytes: None,
            gpus: vec!["0, NVIDIA H100 80GB HBM3, 580.1, 81559 MiB".into()],
        };
        assert_eq!(
            hardware_profile(&h, &lab_protocol::Device::Cpu, 2),
            "cpu-genuineintel-f6m167-2t"
        );
        assert_eq!(
            hardware_profile(&h, &lab_protocol::Device::Cuda { ordinal: 0 }, 2),
            "gpu-nvidia-h100-80gb-hbm3"
        );
    }
}
