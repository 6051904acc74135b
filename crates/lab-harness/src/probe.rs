//! The machine's read bandwidth and f32 GEMM speed (`native-membw`, built with engine-native):
//! measured once before the engines (provenance) and around every engine, with the CPU time
//! the hypervisor took while it ran (the gate's drift probes).

use std::path::Path;

use crate::Result;

/// The machine's read bandwidth with `threads` threads (`bin` = `native-membw`, built with
/// engine-native), for the achieved-bandwidth figures; `None` (said on stderr) when it cannot run.
pub fn read_bandwidth(bin: &Path, threads: usize) -> Option<f64> {
    match measure_bandwidth(bin, threads) {
        Ok((gbs, text)) => {
            eprintln!("{text}");
            gbs
        }
        Err(e) => {
            eprintln!("read bandwidth not measured: {}: {e}", bin.display());
            None
        }
    }
}

/// What one probe measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    pub read_bandwidth_gb_per_s: Option<f64>,
    pub gemm_gflop_per_s: Option<f64>,
}

/// The probes around every engine: read bandwidth and GEMM speed, without a word on stderr.
pub fn probe(bin: &Path, threads: usize) -> Reading {
    match measure(bin, threads) {
        Ok(text) => parse(&text),
        Err(_) => Reading::default(),
    }
}

/// `native-membw`'s two lines, read.
fn parse(text: &str) -> Reading {
    let value = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|t| t.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    Reading {
        read_bandwidth_gb_per_s: value("read bandwidth: "),
        gemm_gflop_per_s: value("f32 gemm: "),
    }
}

/// The CPU time of the whole machine so far, from `/proc/stat`: (steal, total) in clock ticks;
/// `None` where it cannot be read (not Linux) or the kernel reports no steal column.
pub fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    ticks_of(&stat)
}

fn ticks_of(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice, counted in user/nice]
    let steal = *v.get(7)?;
    Some((steal, v.iter().take(8).sum()))
}

/// The share of the machine's CPU time the hypervisor took between two [`cpu_ticks`] readings.
pub fn steal_share(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((s0, t0), (s1, t1)) = (before?, after?);
    let total = t1.checked_sub(t0).filter(|t| *t > 0)?;
    Some(s1.saturating_sub(s0) as f64 / total as f64)
}

fn measure(bin: &Path, threads: usize) -> Result<String> {
    let threads = threads.to_string();
    xshell::Shell::new()
        .and_then(|sh| {
            xshell::cmd!(sh, "{bin} {threads} 512")
                .quiet()
                .ignore_stderr()
                .read()
        })
        .map_err(|e| crate::Error::msg(e.to_string()))
}

fn measure_bandwidth(bin: &Path, threads: usize) -> Result<(Option<f64>, String)> {
    let text = measure(bin, threads)?;
    Ok((
        parse(&text).read_bandwidth_gb_per_s,
        text.trim().to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_and_cpu_ticks_are_read_from_their_text() {
        let r = parse("read bandwidth: 31.5 GB/s (2 threads, 512 MiB, best of 7; checksum 1f)\nf32 gemm: 12.25 GFLOP/s (2 threads)\n");
        assert_eq!(r.read_bandwidth_gb_per_s, Some(31.5));
        assert_eq!(r.gemm_gflop_per_s, Some(12.25));
        // An older binary without the GEMM line: bandwidth only.
        assert_eq!(parse("read bandwidth: 9.0 GB/s").gemm_gflop_per_s, None);
        assert_eq!(parse("garbage"), Reading::default());
        let stat = "cpu  1148 0 354 23704 91 0 21 30 0 0\ncpu0 438 0 173 11990 49 0 13 13 0 0\n";
        assert_eq!(ticks_of(stat), Some((30, 25348)));
        assert_eq!(ticks_of("cpu  1 2 3"), None);
        assert_eq!(steal_share(Some((30, 1000)), Some((80, 2000))), Some(0.05));
        assert_eq!(steal_share(Some((30, 1000)), Some((30, 1000))), None);
        assert_eq!(steal_share(None, Some((30, 1000))), None);
    }
}
