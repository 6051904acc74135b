//! The telemetry sampler: a thread that reads every chosen device at a fixed period while a
//! closure (one target's engine run) executes, and returns the readings with the closure's
//! result. Engines never see NVML; the harness samples from outside, so every engine (in a
//! container or not) is measured the same way.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::backend::{Gpu, Sample};

/// The default sampling period. NVML's utilization counters themselves cover the last 1/6 s to
/// 1 s (by product), so utilization is coarser than this; clocks, power, the energy counter,
/// memory and throttle reasons are read as they are at each sample.
pub const DEFAULT_PERIOD: Duration = Duration::from_millis(100);

/// Everything sampled during one target's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// `NVML <version>` or `fake device (<file>)`.
    pub source: String,
    pub period_ms: u64,
    pub devices: Vec<DeviceTrace>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceTrace {
    pub index: u32,
    pub name: String,
    /// Readings in time order; the first is taken before the closure starts, the last after it
    /// ended.
    pub samples: Vec<Sample>,
    /// Why this device could not be sampled (its `samples` are then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Sets the stop flag when dropped, so a panicking closure still ends the sampling thread (the
/// scope joins it before the panic goes on).
struct StopOnDrop<'a> {
    stop: &'a AtomicBool,
    thread: std::thread::Thread,
}

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// Runs `f` while sampling `devices` of `gpu` every `period`.
pub fn record<R>(
    gpu: &dyn Gpu,
    devices: &[u32],
    period: Duration,
    f: impl FnOnce() -> R,
) -> (R, Telemetry) {
    let source = gpu
        .system()
        .map(|s| s.source)
        .unwrap_or_else(|e| e.to_string());
    let stop = AtomicBool::new(false);
    let (r, devices) = std::thread::scope(|s| {
        let (ready, started) = std::sync::mpsc::channel();
        let sampler = s.spawn(|| sample_until(gpu, devices, period, &stop, ready));
        // The first reading is taken before the closure starts (or the sampler died: go on).
        let _ = started.recv();
        let guard = StopOnDrop {
            stop: &stop,
            thread: sampler.thread().clone(),
        };
        let r = f();
        drop(guard);
        let devices = sampler.join().unwrap_or_else(|_| Vec::new());
        (r, devices)
    });
    (
        r,
        Telemetry {
            source,
            period_ms: period.as_millis() as u64,
            devices,
        },
    )
}

fn sample_until(
    gpu: &dyn Gpu,
    devices: &[u32],
    period: Duration,
    stop: &AtomicBool,
    ready: std::sync::mpsc::Sender<()>,
) -> Vec<DeviceTrace> {
    struct Open<'a> {
        probe: Box<dyn crate::backend::Probe + 'a>,
        baseline: Option<BTreeSet<u32>>,
    }
    let mut traces = Vec::new();
    let mut probes = Vec::new();
    for &index in devices {
        let name = gpu
            .status(index)
            .map(|s| s.name)
            .unwrap_or_else(|_| format!("GPU {index}"));
        match gpu.probe(index) {
            Ok(probe) => {
                probes.push(Some(Open {
                    probe,
                    baseline: None,
                }));
                traces.push(DeviceTrace {
                    index,
                    name,
                    samples: Vec::new(),
                    error: None,
                });
            }
            Err(e) => {
                probes.push(None);
                traces.push(DeviceTrace {
                    index,
                    name,
                    samples: Vec::new(),
                    error: Some(e.to_string()),
                });
            }
        }
    }
    let start = Instant::now();
    let mut k: u32 = 0;
    loop {
        // Read once more after the stop flag, so the last reading follows the closure's end.
        let last = stop.load(Ordering::SeqCst);
        for (open, trace) in probes.iter_mut().zip(traces.iter_mut()) {
            let Some(open) = open else { continue };
            let reading = open.probe.read();
            let mut sample = reading.sample;
            let pids: BTreeSet<u32> = reading.processes.iter().map(|p| p.pid).collect();
            match &open.baseline {
                // Processes already on the device when sampling began are not the engine's.
                None => open.baseline = Some(pids),
                Some(base) => {
                    sample.engine_bytes = Some(
                        reading
                            .processes
                            .iter()
                            .filter(|p| !base.contains(&p.pid))
                            .filter_map(|p| p.used_bytes)
                            .sum(),
                    )
                }
            }
            trace.samples.push(sample);
        }
        if k == 0 {
            let _ = ready.send(());
        }
        if last {
            break;
        }
        k += 1;
        let due = start + period * k;
        while !stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= due {
                break;
            }
            std::thread::park_timeout(due - now);
        }
    }
    traces
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeDevice, FakeGpu};

    fn fake(name: &str) -> (std::path::PathBuf, FakeGpu) {
        let path = std::env::temp_dir().join(format!(
            "lab-gpu-sampler-{name}-{}.json",
            std::process::id()
        ));
        let gpu = FakeGpu::single(&path, FakeDevice::h100(false)).unwrap();
        (path, gpu)
    }

    #[test]
    fn samples_span_the_closure_and_attribute_new_processes_to_the_engine() {
        let (path, gpu) = fake("span");
        let mut began = 0;
        let mut ended = 0;
        let (r, t) = record(&gpu, &[0], Duration::from_millis(20), || {
            began = crate::now_unix_ns();
            std::thread::sleep(Duration::from_millis(200));
            ended = crate::now_unix_ns();
            7
        });
        assert_eq!(r, 7);
        assert_eq!(t.period_ms, 20);
        assert!(t.source.starts_with("fake device ("), "{}", t.source);
        let s = &t.devices[0].samples;
        assert!(s.len() >= 4, "{} samples in 200 ms at 20 ms", s.len());
        assert!(s[0].t_unix_ns <= began, "first sample before the run");
        assert!(s.last().unwrap().t_unix_ns >= ended, "last sample after it");
        assert!(s.windows(2).all(|w| w[0].t_unix_ns <= w[1].t_unix_ns));
        // The fake's process appears after the first reading: not in the baseline, so it is the
        // engine's; the first sample has no attribution at all.
        assert_eq!(s[0].engine_bytes, None);
        assert!(s[1..].iter().all(|x| x.engine_bytes == Some(1 << 30)));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_panicking_run_still_stops_the_sampler() {
        let (path, gpu) = fake("panic");
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            record(&gpu, &[0], Duration::from_millis(10), || {
                panic!("engine bug")
            })
        }));
        assert!(r.is_err());
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_device_that_cannot_be_probed_is_recorded_with_the_reason() {
        let (path, gpu) = fake("missing");
        let ((), t) = record(&gpu, &[0, 5], Duration::from_millis(10), || ());
        assert!(t.devices[0].error.is_none());
        assert_eq!(
            t.devices[1].error.as_deref(),
            Some("no GPU with index 5 (this machine has 1)")
        );
        assert!(t.devices[1].samples.is_empty());
        let _ = std::fs::remove_file(path);
    }
}
