//! The cold-start breakdown: the kit notes the engine process's `main`, the engine adapter marks
//! each loading phase it can tell apart ([`phase`], names in [`lab_protocol::LOAD_PHASES`]), the
//! kit marks `ready` when the load returns and the process's first token. Reported in
//! [`lab_protocol::LoadTimings`] as ms since `main`.

use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use lab_protocol::{LoadPhase, LOAD_PHASES};

static MAIN: OnceLock<(Instant, u64)> = OnceLock::new();
static PHASES: Mutex<Vec<(&'static str, Instant)>> = Mutex::new(Vec::new());
static FIRST_TOKEN: OnceLock<Instant> = OnceLock::new();

/// The instant of the process's `main` (the first call decides; the kit calls it first thing).
pub fn main_started() -> Instant {
    MAIN.get_or_init(|| (Instant::now(), crate::unix_now_ns()))
        .0
}

/// Marks that loading reached `name` (one of [`LOAD_PHASES`]); called by engine adapters. A
/// phase marked twice keeps its first time.
pub fn phase(name: &'static str) {
    debug_assert!(LOAD_PHASES.contains(&name), "unknown load phase `{name}`");
    main_started();
    let mut p = PHASES.lock().unwrap_or_else(|e| e.into_inner());
    if !p.iter().any(|(n, _)| *n == name) {
        p.push((name, Instant::now()));
    }
}

/// Notes the process's first token (the earliest call wins).
pub(crate) fn first_token_at(at: Instant) {
    FIRST_TOKEN.get_or_init(|| at);
}

/// The phases marked so far, in [`LOAD_PHASES`] order, as ms since `main`; `main`'s Unix time.
pub(crate) fn phases() -> (Vec<LoadPhase>, Option<u64>) {
    let Some(&(main, unix)) = MAIN.get() else {
        return (Vec::new(), None);
    };
    let p = PHASES.lock().unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<LoadPhase> = p
        .iter()
        .map(|(name, at)| LoadPhase {
            name: name.to_string(),
            at_ms: at.saturating_duration_since(main).as_secs_f64() * 1e3,
        })
        .collect();
    out.sort_by_key(|x| LOAD_PHASES.iter().position(|n| *n == x.name));
    (out, Some(unix))
}

/// ms from `main` to the process's first token, once there was one.
pub(crate) fn first_token_ms() -> Option<f64> {
    let (main, _) = MAIN.get()?;
    Some(
        FIRST_TOKEN
            .get()?
            .saturating_duration_since(*main)
            .as_secs_f64()
            * 1e3,
    )
}
