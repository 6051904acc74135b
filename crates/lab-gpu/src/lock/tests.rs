//! The clock-lock guard against the fake device: state file before the lock, restore on drop,
//! error, panic and early return, stale files, refusals and the dry-run description.

use std::path::PathBuf;

use super::*;
use crate::fake::{FakeDevice, FakeFile, FakeGpu};

/// A scratch directory with a fake device whose log says whether the state file existed at
/// each clock change.
struct Scratch {
    dir: PathBuf,
    state: PathBuf,
    gpu: FakeGpu,
}

impl Scratch {
    fn new(name: &str, device: FakeDevice) -> Self {
        let dir = std::env::temp_dir().join(format!("lab-gpu-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let state = dir.join("state").join("lock.json");
        let gpu = FakeGpu::create(
            &dir.join("gpu.json"),
            &FakeFile {
                devices: vec![device],
                log: Vec::new(),
                watch_file: Some(state.clone()),
            },
        )
        .unwrap();
        Self { dir, state, gpu }
    }

    fn log(&self) -> Vec<String> {
        self.gpu.read().unwrap().log
    }

    fn locked(&self) -> (Option<[u32; 2]>, Option<[u32; 2]>) {
        let d = &self.gpu.read().unwrap().devices[0];
        (d.locked_sm, d.locked_mem)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const LOCKED_LOG: [&str; 2] = [
    "lock_sm 0 1980 1980 [watched file present]",
    "lock_mem 0 2619 2619 [watched file present]",
];
const RESTORED_LOG: [&str; 2] = [
    "reset_sm 0 [watched file present]",
    "reset_mem 0 [watched file present]",
];

#[test]
fn requests_parse_and_bad_ones_are_named() {
    assert_eq!("base".parse(), Ok(ClockRequest::Base));
    assert_eq!("max".parse(), Ok(ClockRequest::Max));
    assert_eq!(
        "1410".parse(),
        Ok(ClockRequest::Mhz {
            sm: 1410,
            mem: None
        })
    );
    assert_eq!(
        "1410,1215".parse(),
        Ok(ClockRequest::Mhz {
            sm: 1410,
            mem: Some(1215)
        })
    );
    for bad in ["", "fast", "0", "1410,", "1410,0", "1,2,3", "-5"] {
        let e = bad.parse::<ClockRequest>().unwrap_err();
        assert!(e.starts_with("--lock-clocks: expected"), "{bad}: {e}");
    }
}

#[test]
fn the_state_file_is_written_before_the_lock_and_dropping_restores() {
    let s = Scratch::new("drop", FakeDevice::h100(true));
    let plan = plan(&s.gpu, &[0], ClockRequest::Max).unwrap();
    assert_eq!(plan.devices[0].before.sm_mhz, Some(345));
    {
        let _lock = ClockLock::acquire(&s.gpu, plan, &s.state).unwrap();
        assert!(s.state.exists());
        assert_eq!(s.log(), LOCKED_LOG);
        assert_eq!(s.locked(), (Some([1980, 1980]), Some([2619, 2619])));
    }
    // Restored, then the state file removed (it existed during the resets).
    assert_eq!(s.log()[2..], RESTORED_LOG);
    assert_eq!(s.locked(), (None, None));
    assert!(!s.state.exists());
}

#[test]
fn base_locks_the_default_clocks_and_release_reports() {
    let s = Scratch::new("base", FakeDevice::h100(true));
    let plan = plan(&s.gpu, &[0], ClockRequest::Base).unwrap();
    assert_eq!(
        plan.summary(),
        "base: SM 1755 MHz, memory 2619 MHz on GPU 0"
    );
    let lock = ClockLock::acquire(&s.gpu, plan, &s.state).unwrap();
    assert_eq!(s.locked().0, Some([1755, 1755]));
    let done = lock.release().unwrap();
    assert_eq!(
        done,
        ["GPU 0: SM clocks unlocked", "GPU 0: memory clocks unlocked"]
    );
    assert_eq!(s.locked(), (None, None));
}

#[test]
fn a_lock_that_does_not_take_is_an_error_and_is_restored() {
    let mut d = FakeDevice::h100(true);
    d.ignores_locks = true;
    let s = Scratch::new("notake", d);
    let plan = plan(&s.gpu, &[0], ClockRequest::Max).unwrap();
    let e = ClockLock::acquire(&s.gpu, plan, &s.state)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("the lock did not take"), "{e}");
    assert_eq!(s.log()[2..], RESTORED_LOG);
    assert_eq!(s.locked(), (None, None));
    assert!(!s.state.exists());
}

#[test]
fn a_panic_while_locked_restores() {
    let s = Scratch::new("panic", FakeDevice::h100(true));
    let plan = plan(&s.gpu, &[0], ClockRequest::Max).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _lock = ClockLock::acquire(&s.gpu, plan, &s.state).unwrap();
        panic!("an engine adapter bug");
    }));
    assert!(r.is_err());
    assert_eq!(s.locked(), (None, None));
    assert!(!s.state.exists());
}

#[test]
fn an_early_return_restores() {
    // What an interrupted or failed run does: return an error through the guard's scope.
    fn run(s: &Scratch) -> Result<(), String> {
        let plan = plan(&s.gpu, &[0], ClockRequest::Max).map_err(|e| e.to_string())?;
        let _lock = ClockLock::acquire(&s.gpu, plan, &s.state).map_err(|e| e.to_string())?;
        Err("interrupted (Ctrl-C)".into())
    }
    let s = Scratch::new("early", FakeDevice::h100(true));
    assert_eq!(run(&s), Err("interrupted (Ctrl-C)".into()));
    assert_eq!(s.locked(), (None, None));
    assert_eq!(s.log()[2..], RESTORED_LOG);
}

#[test]
fn a_stale_state_file_is_restored_at_the_next_start() {
    let s = Scratch::new("stale", FakeDevice::h100(true));
    let plan = plan(&s.gpu, &[0], ClockRequest::Max).unwrap();
    let lock = ClockLock::acquire(&s.gpu, plan.clone(), &s.state).unwrap();
    // SIGKILL: no destructor runs. (Forgetting the guard is the same for the device.)
    std::mem::forget(lock);
    assert_eq!(s.locked(), (Some([1980, 1980]), Some([2619, 2619])));
    // A new lock refuses while the file is there.
    let e = ClockLock::acquire(&s.gpu, plan, &s.state)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("state file"), "{e}");
    // This process wrote it, so it is not "another running process": restorable here as the
    // next run would.
    let msg = restore_stale(&s.gpu, &s.state).unwrap().unwrap();
    assert!(
        msg.contains("restored GPU clocks left locked (max: SM 1980 MHz"),
        "{msg}"
    );
    assert_eq!(s.locked(), (None, None));
    assert!(!s.state.exists());
    assert_eq!(restore_stale(&s.gpu, &s.state).unwrap(), None);
}

#[test]
fn a_state_file_of_a_running_process_is_not_touched() {
    let s = Scratch::new("alive", FakeDevice::h100(true));
    let plan = plan(&s.gpu, &[0], ClockRequest::Max).unwrap();
    std::fs::create_dir_all(s.state.parent().unwrap()).unwrap();
    // pid 1 always exists.
    write_state(
        &s.state,
        &StateFile {
            pid: 1,
            created_unix_s: 0,
            plan,
        },
    )
    .unwrap();
    let e = restore_stale(&s.gpu, &s.state).unwrap_err().to_string();
    assert!(e.contains("another running process (pid 1"), "{e}");
    assert!(s.log().is_empty());
    std::fs::write(&s.state, "{").unwrap();
    let e = restore_stale(&s.gpu, &s.state).unwrap_err().to_string();
    assert!(
        e.starts_with("clock-lock state file") && e.contains("unreadable"),
        "{e}"
    );
}

#[test]
fn without_root_the_lock_is_refused_and_nothing_stays_changed() {
    let s = Scratch::new("noroot", FakeDevice::h100(false));
    let plan = plan(&s.gpu, &[0], ClockRequest::Max).unwrap();
    let e = ClockLock::acquire(&s.gpu, plan, &s.state)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no permission"), "{e}");
    assert!(e.contains("needs root"), "{e}");
    assert_eq!(s.locked(), (None, None));
    assert!(!s.state.exists(), "the refused lock leaves no state behind");
}

#[test]
fn what_a_device_cannot_do_is_refused_before_anything_changes() {
    let mut volta = FakeDevice::h100(true);
    volta.architecture = "Volta".into();
    let s = Scratch::new("volta", volta);
    let e = plan(
        &s.gpu,
        &[0],
        ClockRequest::Mhz {
            sm: 1380,
            mem: Some(877),
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("Ampere and newer only (Volta)"), "{e}");
    // `max` on Volta locks SM only and says why.
    let p = plan(&s.gpu, &[0], ClockRequest::Max).unwrap();
    assert_eq!(p.devices[0].mem_mhz, None);
    assert!(p
        .describe()
        .contains("memory clocks cannot be locked on Volta"));
    let e = plan(
        &s.gpu,
        &[0],
        ClockRequest::Mhz {
            sm: 2500,
            mem: None,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("above its maximum of 1980 MHz"), "{e}");
    let e = plan(&s.gpu, &[3], ClockRequest::Max)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no GPU with index 3"), "{e}");
    assert!(s.log().is_empty());
}

#[test]
fn a_device_someone_else_locked_is_refused() {
    let mut d = FakeDevice::h100(true);
    d.locked_sm = Some([1500, 1500]);
    let s = Scratch::new("other", d);
    let e = plan(&s.gpu, &[0], ClockRequest::Max)
        .unwrap_err()
        .to_string();
    assert!(e.contains("already limited by a user-defined lock"), "{e}");
}

#[test]
fn dry_run_describes_and_touches_nothing() {
    let s = Scratch::new("dry", FakeDevice::h100(true));
    let p = plan(&s.gpu, &[0], ClockRequest::Max).unwrap();
    assert_eq!(
        p.describe(),
        "GPU 0 (Fake H100 80GB HBM3): lock SM clocks at 1980 MHz (now 345 MHz), memory clocks at \
         2619 MHz (now 2619 MHz); restore: reset the locked SM and memory clocks (the unlocked \
         state found before)\n"
    );
    assert!(s.log().is_empty());
    assert!(!s.state.exists());
}
