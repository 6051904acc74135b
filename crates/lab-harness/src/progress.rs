//! Progress of a run: which engine of how many, time spent and an ETA. On a terminal an
//! indicatif bar (the engines' `progress:` lines become its message, their other lines print
//! above it); without one (CI, a log file) plain lines, one per engine start, with the same
//! numbers.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Shared by the run loop and the thread that streams an engine's stderr.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

struct Inner {
    bar: Option<ProgressBar>,
    total: usize,
    done: AtomicUsize,
    started: Instant,
    /// Each engine run's time in an earlier run of the same plan here, where there was one.
    expected: Vec<Option<Duration>>,
}

/// The remaining time when `done` of `total` equal steps took `elapsed`; `None` before the first.
pub fn eta(elapsed: Duration, done: usize, total: usize) -> Option<Duration> {
    if done == 0 {
        return None;
    }
    Some(elapsed.mul_f64(total.saturating_sub(done) as f64 / done as f64))
}

/// The remaining time from the engine runs' times in an earlier run of the same plan
/// (`expected`, one per engine run, in order), scaled by how much slower or faster the finished
/// ones went this time (by at most 2×); the plain extrapolation [`eta`] where an engine run has
/// no earlier time.
pub fn eta_from(elapsed: Duration, done: usize, expected: &[Option<Duration>]) -> Option<Duration> {
    let sum = |v: &[Option<Duration>]| -> Option<Duration> { v.iter().copied().sum() };
    let (finished, remaining) = expected.split_at(done.min(expected.len()));
    let Some(rest) = sum(remaining) else {
        return eta(elapsed, done, expected.len());
    };
    let scale = match sum(finished) {
        Some(before) if done > 0 && !before.is_zero() => {
            (elapsed.as_secs_f64() / before.as_secs_f64()).clamp(0.5, 2.0)
        }
        _ => 1.0,
    };
    Some(rest.mul_f64(scale))
}

/// `1h02m`, `3m05s`, `42s`.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

impl Progress {
    /// Progress over `total` engine runs; a bar when stderr is a terminal.
    pub fn new(total: usize) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} engines, ETA {eta}  {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(500));
            bar
        });
        Progress::with_bar(total, bar)
    }

    /// Plain lines only (tests, and runs of one engine outside a plan).
    pub fn plain(total: usize) -> Progress {
        Progress::with_bar(total, None)
    }

    fn with_bar(total: usize, bar: Option<ProgressBar>) -> Progress {
        Progress {
            inner: Arc::new(Inner {
                bar,
                total,
                done: AtomicUsize::new(0),
                started: Instant::now(),
                expected: Vec::new(),
            }),
        }
    }

    /// ETAs from each engine run's time in an earlier run (`source`, said at the start with the
    /// estimated total); without one the ETA comes after the first engine.
    pub fn expecting(self, expected: Option<(Vec<Option<Duration>>, String)>) -> Progress {
        let Some((expected, source)) = expected else {
            self.println("estimated total: after the first engine (no earlier run of this plan on this machine to estimate from)");
            return self;
        };
        let known = expected.iter().flatten().count();
        let line = match expected.iter().copied().sum::<Option<Duration>>() {
            Some(total) => format!(
                "estimated total: {} (each engine's time in {source})",
                fmt_duration(total)
            ),
            None => format!(
                "estimated total: after the first engine ({known} of {} engine runs have a time in {source})",
                expected.len()
            ),
        };
        self.println(&line);
        let mut inner =
            Arc::try_unwrap(self.inner).unwrap_or_else(|_| unreachable!("not shared yet"));
        inner.expected = expected;
        Progress {
            inner: Arc::new(inner),
        }
    }

    /// The line that opens one engine run.
    pub fn start(&self, heading: &str) {
        let i = &self.inner;
        let done = i.done.load(Ordering::SeqCst);
        let elapsed = i.started.elapsed();
        let eta = (if i.expected.len() == i.total {
            eta_from(elapsed, done, &i.expected)
        } else {
            eta(elapsed, done, i.total)
        })
        .map(|d| format!("ETA {}", fmt_duration(d)))
        .unwrap_or_else(|| "ETA after the first engine".into());
        let line = format!(
            "== [{}/{}] {heading} · {} elapsed, {eta} ==",
            done + 1,
            i.total,
            fmt_duration(elapsed)
        );
        self.println(&line);
        if let Some(bar) = &i.bar {
            bar.set_message(heading.to_string());
        }
    }

    /// One line of an engine's stderr (`label` is the target's).
    pub fn engine_line(&self, label: &str, line: &str) {
        match &self.inner.bar {
            Some(bar) if line.starts_with("progress: ") => {
                bar.set_message(format!("{label}: {}", &line["progress: ".len()..]));
            }
            _ => self.println(&format!("[{label}] {line}")),
        }
    }

    /// A line of the run itself, above the bar when there is one.
    pub fn println(&self, line: &str) {
        match &self.inner.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// One engine run finished.
    pub fn finish_one(&self) {
        self.inner.done.fetch_add(1, Ordering::SeqCst);
        if let Some(bar) = &self.inner.bar {
            bar.inc(1);
        }
    }

    /// The run is over: the bar goes away, the total time stays.
    pub fn finish(&self) {
        if let Some(bar) = &self.inner.bar {
            bar.finish_and_clear();
        }
        eprintln!(
            "{} of {} engine runs in {}",
            self.inner.done.load(Ordering::SeqCst),
            self.inner.total,
            fmt_duration(self.inner.started.elapsed())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_extrapolates_the_finished_engines() {
        assert_eq!(eta(Duration::from_secs(60), 0, 4), None);
        assert_eq!(
            eta(Duration::from_secs(60), 1, 4),
            Some(Duration::from_secs(180))
        );
        assert_eq!(eta(Duration::from_secs(60), 4, 4), Some(Duration::ZERO));
        // From an earlier run: its remaining times, scaled by this run's pace (at most 2×).
        let m = |s: u64| Some(Duration::from_secs(s * 60));
        let earlier = [m(2), m(4), m(6)];
        assert_eq!(eta_from(Duration::ZERO, 0, &earlier), m(12));
        assert_eq!(eta_from(Duration::from_secs(180), 1, &earlier), m(15));
        assert_eq!(eta_from(Duration::from_secs(3600), 1, &earlier), m(20));
        // An engine run without an earlier time: the plain extrapolation.
        assert_eq!(
            eta_from(Duration::from_secs(60), 1, &[m(2), None, m(6)]),
            Some(Duration::from_secs(120))
        );
        assert_eq!(fmt_duration(Duration::from_secs(42)), "42s");
        assert_eq!(fmt_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(fmt_duration(Duration::from_secs(3720)), "1h02m");
    }
}
