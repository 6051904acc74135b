//! The GPU side of a run with the mock engine and the fake GPU: telemetry sampled around every
//! engine process and summarized per scenario, throttling flagged and refused, and a clock lock
//! that an interrupted run restores.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use lab_gpu::fake::{FakeDevice, FakeGpu};
use lab_gpu::lock::{self, ClockLock, ClockRequest};
use lab_harness::telemetry::GpuSampling;
use lab_protocol::Dtype;
use lab_results::results::{self, RunStatus};

use super::{mock, plan, tempdir};

fn fake(dir: &std::path::Path, device: FakeDevice) -> FakeGpu {
    FakeGpu::single(&dir.join("gpu.json"), device).unwrap()
}

#[test]
fn telemetry_is_sampled_around_every_engine_and_throttled_windows_are_flagged() {
    let dir = tempdir("gpu-telemetry");
    let mut device = FakeDevice::h100(false);
    device.throttle = vec!["sw_power_cap".into()];
    let gpu = fake(&dir, device);
    let p = plan(
        "gpu-telemetry",
        vec![mock(Dtype::F32, "ok"), mock(Dtype::F16, "crash")],
        Duration::from_secs(60),
    );
    let sampling = GpuSampling {
        gpu: &gpu,
        devices: vec![0],
        period: Duration::from_millis(20),
    };
    let no = AtomicBool::new(false);
    let (_, res) = lab_harness::bench_with(&p, &no, Some(&sampling)).unwrap();
    assert_eq!(res.len(), 1, "the crashed engine wrote no result");
    let t = res[0].telemetry.as_ref().expect("sampled");
    assert!(
        t.raw.source.starts_with("fake device ("),
        "{}",
        t.raw.source
    );
    assert_eq!(t.raw.period_ms, 20);
    let samples = &t.raw.devices[0].samples;
    assert!(samples.len() >= 2);
    // One summary per timed scenario, over every measured iteration.
    let timed: Vec<_> = res[0]
        .report
        .scenarios
        .iter()
        .filter(|s| s.prompts.iter().any(|p| !p.samples.is_empty()))
        .collect();
    assert!(!timed.is_empty());
    assert_eq!(t.scenarios.len(), timed.len());
    for (s, r) in t.scenarios.iter().zip(&timed) {
        let n: usize = r.prompts.iter().map(|p| p.samples.len()).sum();
        assert_eq!(
            (s.scenario.as_str(), s.windows as usize),
            (r.id.as_str(), n)
        );
        assert_eq!(s.throttled_windows, s.windows, "a power cap throughout");
        assert_eq!(s.peak_engine_bytes, Some(1 << 30), "the engine's process");
        let tokens: u64 = r
            .prompts
            .iter()
            .flat_map(|p| &p.samples)
            .map(|x| u64::from(x.new_tokens))
            .sum();
        assert_eq!(s.new_tokens, tokens);
        // Every window lies inside the sampled span (a sample before the engine started and
        // one after it ended), so its energy is known: 300 W over the window.
        let j = s.joules_per_token.expect("energy of every window");
        assert!(j > 0.0 && j.is_finite());
        let w = s.mean_power_w.unwrap();
        assert!((w - 300.0).abs() < 1.0, "{w}");
    }
    // The report counts them, and `check` would refuse the run.
    let (_, on_disk) = results::load_run(&p.run_dir).unwrap();
    assert_eq!(on_disk[0].telemetry, res[0].telemetry);
    let md = std::fs::read_to_string(p.run_dir.join("report.md")).unwrap();
    assert!(md.contains("## GPU telemetry"), "{md}");
    assert!(md.contains("(sw_power_cap)"));
    assert!(
        !lab_results::check::throttled_beyond(&res, lab_results::check::DEFAULT_MAX_THROTTLED)
            .is_empty()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_interrupted_run_restores_the_clocks_it_locked() {
    let dir = tempdir("gpu-ctrlc");
    let gpu = fake(&dir, FakeDevice::h100(true));
    let state = dir.join("state.json");
    let p = plan(
        "gpu-ctrlc",
        vec![mock(Dtype::F32, "ok"), mock(Dtype::F16, "hang")],
        Duration::from_secs(120),
    );
    let flag = Arc::new(AtomicBool::new(false));
    let presser = super::ctrl_c_after_first_result(&p, &flag);
    // What `cargo xtask bench --lock-clocks max` does: lock, run, and return the interruption
    // as an error through the guard's scope.
    let run = || -> Result<(), String> {
        let plan = lock::plan(&gpu, &[0], ClockRequest::Max).map_err(|e| e.to_string())?;
        let _guard = ClockLock::acquire(&gpu, plan, &state).map_err(|e| e.to_string())?;
        let sampling = GpuSampling {
            gpu: &gpu,
            devices: vec![0],
            period: Duration::from_millis(20),
        };
        let (manifest, res) =
            lab_harness::bench_with(&p, &flag, Some(&sampling)).map_err(|e| e.to_string())?;
        // While locked, the engine ran at the locked clock.
        let t = res[0].telemetry.as_ref().unwrap();
        assert!(t.raw.devices[0]
            .samples
            .iter()
            .all(|s| s.sm_mhz == Some(1980)));
        if manifest.status == RunStatus::Interrupted {
            return Err("interrupted".into());
        }
        Ok(())
    };
    assert_eq!(run(), Err("interrupted".into()));
    presser.join().unwrap();
    let d = &gpu.read().unwrap().devices[0];
    assert_eq!((d.locked_sm, d.locked_mem), (None, None), "restored");
    assert!(!state.exists());
    let _ = std::fs::remove_dir_all(&dir);
}
