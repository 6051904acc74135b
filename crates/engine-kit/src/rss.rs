//! Peak resident set size: of the process, and of one span (a prompt, a load level).

/// The largest `VmHWM` seen before a [`PeakRss`] reset it, so that the process's peak survives
/// the per-level resets.
static PEAK_SEEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The peak resident set size of one span (a prompt, a load level): `VmHWM` is reset to the
/// current RSS at the start (`/proc/self/clear_refs`, Linux 4.0+) and read at the end. `None`
/// when the reset is not possible (the process peak would be mislabelled as the span's).
pub struct PeakRss {
    reset: bool,
}

impl PeakRss {
    pub fn start() -> Self {
        if let Some(p) = peak_rss_bytes() {
            PEAK_SEEN.fetch_max(p, std::sync::atomic::Ordering::Relaxed);
        }
        PeakRss {
            reset: std::fs::write("/proc/self/clear_refs", "5").is_ok(),
        }
    }

    pub fn finish(self) -> Option<u64> {
        let p = peak_rss_bytes()?;
        PEAK_SEEN.fetch_max(p, std::sync::atomic::Ordering::Relaxed);
        self.reset.then_some(p)
    }
}

/// The peak resident set size of the whole process, across [`PeakRss`] resets.
pub fn process_peak_rss_bytes() -> Option<u64> {
    let now = peak_rss_bytes()?;
    Some(now.max(PEAK_SEEN.load(std::sync::atomic::Ordering::Relaxed)))
}

/// Peak resident set size of this process (Linux `VmHWM`), if the platform tells.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
