//! The gate study's injected regression: `LAB_SLOWDOWN=S` (set by `bench --slowdown S`)
//! stretches every forward step the kit times — a sequence's prefill and each decode step, a
//! batch's prefill and decode steps, a continuous-batching admission — by the share `S` of its
//! own duration, spinning (a sleep's granularity is coarser than a decode step). It slows what
//! the metrics measure and nothing else (loading, tokenizing, the harness). The Python engine
//! ports it (`stretch` in `engine.py`).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The variable the harness sets.
pub const ENV: &str = lab_protocol::SLOWDOWN_ENV;

static FACTOR: OnceLock<Result<f64, String>> = OnceLock::new();

/// The share every step is stretched by (0 when unset), or why the variable is not one.
pub fn factor() -> Result<f64, String> {
    FACTOR
        .get_or_init(|| parse(std::env::var(ENV).ok().as_deref()))
        .clone()
}

/// `None` or empty: 0. Otherwise a number between 0 and 1.
pub fn parse(text: Option<&str>) -> Result<f64, String> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(0.0);
    };
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{ENV}={text:?}: expected a share between 0 and 1 (0.1 = 10 % slower steps)"
        )),
    }
}

/// Spins until the step that began at `started` has taken `1 + factor` times as long.
pub fn stretch(started: Instant) {
    let s = factor().unwrap_or(0.0);
    if s > 0.0 {
        spin(started.elapsed().mul_f64(s));
    }
}

fn spin(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_is_parsed_strictly() {
        assert_eq!(parse(None), Ok(0.0));
        assert_eq!(parse(Some("")), Ok(0.0));
        assert_eq!(parse(Some("0.1")), Ok(0.1));
        for bad in ["-0.1", "2", "ten", "NaN"] {
            let e = parse(Some(bad)).unwrap_err();
            assert!(e.contains("LAB_SLOWDOWN") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn a_spin_lasts_at_least_its_duration() {
        let t = Instant::now();
        spin(Duration::from_millis(3));
        assert!(t.elapsed() >= Duration::from_millis(3));
    }
}
