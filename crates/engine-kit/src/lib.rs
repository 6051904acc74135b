//! The one measurement loop that every Rust engine uses.
//!
//! An engine implements [`Engine`] (prefill, decode step, reset, device sync) and calls
//! [`run_main`] from its `main` with a `load` that returns the engine and its identity
//! ([`Loaded`]). An engine whose library owns the generation loop (a scheduler behind a request
//! API, like mistral.rs) implements [`SequenceEngine`] instead — one whole timed sequence per
//! call — and calls [`run_main_sequences`]; everything around the sequence (request validation,
//! warm-up and iteration counts, determinism, progress, the report) stays the kit's. The kit
//! reads the [`Request`](lab_protocol::Request) from stdin, times loading, runs the scenarios
//! (warm-up, N iterations, monotonic clock, a device sync before every timestamp, sampling,
//! stopping rules), reports progress on stderr and writes the
//! [`Report`](lab_protocol::Report) to stdout. Fairness comes from every engine being timed by
//! this same code.
//!
//! Modules: [`engine`] (the traits), [`process`] (request → report), [`scenario`] (the scenario
//! loop), `sequence` (one timed step-wise sequence), [`adapter`] (what adapters share: file
//! checks, dtypes, threads, device), `sampling`.

pub mod adapter;
pub mod engine;
pub mod load;
mod lockstep;
pub mod micro;
pub mod phase;
pub mod process;
mod rss;
mod sampling;
pub mod scenario;
pub mod slowdown;
mod stepwise;
pub mod train;

/// Nanoseconds since the Unix epoch: the clock iterations and load levels are placed on
/// (`start_unix_ns`), shared with the harness's GPU telemetry sampler.
pub fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The Unix time of a past `Instant` (for `start_unix_ns` of a level whose origin was taken
/// with `Instant::now()`).
pub fn unix_ns_of(origin: std::time::Instant) -> u64 {
    unix_now_ns().saturating_sub(origin.elapsed().as_nanos() as u64)
}
mod sequence;

pub use adapter::{
    cuda_ordinal, dense_dtype, gguf_path, quantized_needs_gguf, require_file, require_hf_dir,
    set_rayon_threads, threads, HfFiles,
};
pub use engine::{
    BatchEngine, BoxError, Engine, EngineMeta, EngineResult, Loaded, SequenceEngine, SequenceRun,
};
pub use load::Serial;
pub use lockstep::LockStepEngine;
pub use micro::{OpBench, OpRefusal, Prepared};
pub use phase::phase;
pub use process::{parse_request, run_main, run_main_sequences, KitError};
pub use rss::{peak_rss_bytes, process_peak_rss_bytes, PeakRss};
pub use sampling::{argmax, Sampler};
pub use scenario::{run_scenario, run_sequence_scenario};
pub use stepwise::Stepwise;

#[cfg(test)]
mod load_tests;
#[cfg(test)]
mod tests;
