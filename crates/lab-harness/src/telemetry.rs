//! GPU telemetry sampling: which devices, how often; `run_target` samples them around each
//! target's engine process and `lab_results::telemetry::summarize` says what the samples mean.

use std::time::Duration;

use lab_gpu::Gpu;

/// What to sample during a run.
pub struct GpuSampling<'g> {
    pub gpu: &'g dyn Gpu,
    pub devices: Vec<u32>,
    pub period: Duration,
}
