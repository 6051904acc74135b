//! The microbenchmark scenario ([`ScenarioKind::Micro`]): an engine that exposes its framework's
//! operations ([`OpBench`], through [`crate::Engine::ops`]) prepares each case — inputs built
//! with [`lab_protocol::micro::fill`], weights of the model's layer 0 for components — and the
//! kit calls it: once for the output's checksum (untimed), the scenario's warm-up calls, then up
//! to `iterations` timed calls or until the case's `max_duration_ms` is spent (never fewer than
//! one). Each call is timed alone with `Instant`; a call returns only after the device finished,
//! and may add the device's own time of it (CUDA events). An op the framework cannot run — the
//! engine refuses it, or preparing it or its first call fails or panics inside the framework —
//! is recorded as unsupported with the reason in the framework's words, and the next case runs;
//! a failure during the timed calls is recorded as that case's error (its samples are kept).

use std::time::{Duration, Instant};

use lab_protocol::micro::{Micro, OpCase, OpChecksum, OpReport};
use lab_protocol::{ScenarioKind, ScenarioReport, ScenarioRequest};

use crate::{BoxError, EngineResult};

/// What one call of a prepared op returns.
#[derive(Debug, Default)]
pub struct Call {
    /// The device's time of the call (CUDA events), when the engine measured it.
    pub device_ns: Option<u64>,
    /// The call's output as f32 values, when asked for (outside any timing).
    pub output: Option<Vec<f32>>,
}

/// A prepared case: `run(want_output)` performs the op once on the prepared inputs.
pub struct Prepared<'a> {
    pub run: Box<dyn FnMut(bool) -> EngineResult<Call> + 'a>,
    /// How the framework ran it, when that differs from the case (e.g. `f32 accumulation`).
    pub note: Option<String>,
}

/// Why a case did not run.
#[derive(Debug)]
pub enum OpRefusal {
    /// The framework cannot run this op, dtype or shape (by design), with the reason.
    Unsupported(String),
    /// Preparing it failed.
    Failed(BoxError),
}

impl<E: Into<BoxError>> From<E> for OpRefusal {
    fn from(e: E) -> Self {
        OpRefusal::Failed(e.into())
    }
}

/// An engine's operations, for the microbenchmark scenario.
pub trait OpBench {
    /// Prepares `case` (inputs from `micro.seed`, component weights from the loaded model).
    fn prepare<'a>(&'a mut self, case: &OpCase, micro: &Micro) -> Result<Prepared<'a>, OpRefusal>;
}

/// Why an engine has no [`OpBench`]: its library runs whole models only.
pub const NO_OPS: &str = "the engine's library runs whole models; it exposes no single operations";

/// Runs a micro scenario on `ops` (`None`: the engine has none, reported as unsupported).
pub fn run_micro(ops: Option<&mut dyn OpBench>, scenario: &ScenarioRequest) -> ScenarioReport {
    let mut report = ScenarioReport {
        kind: ScenarioKind::Micro,
        micro: scenario.micro.clone(),
        ..ScenarioReport::empty(scenario)
    };
    let Some(micro) = scenario.micro.as_ref() else {
        report.error = Some("a micro scenario needs `micro` settings".into());
        return report;
    };
    let Some(ops) = ops else {
        report.unsupported = Some(NO_OPS.into());
        return report;
    };
    let budget = scenario.max_duration_ms.map(Duration::from_millis);
    for (i, case) in micro.cases.iter().enumerate() {
        let r = run_case(ops, case, micro, scenario, budget);
        let what = match (&r.unsupported, &r.error) {
            (Some(why), _) => format!("unsupported: {why}"),
            (_, Some(e)) => format!("failed: {e}"),
            _ => {
                let mut s = r.host_ns.clone();
                s.sort_unstable();
                match s.get(s.len() / 2) {
                    Some(m) => format!("{} samples, median {:.1} µs", s.len(), *m as f64 / 1e3),
                    None => "no samples".into(),
                }
            }
        };
        eprintln!(
            "micro {}/{} {} {} {}: {what}",
            i + 1,
            micro.cases.len(),
            case.op.name(),
            case.op.shape(),
            case.dtype.as_str()
        );
        report.ops.push(r);
    }
    report
}

/// The first line of a framework's message (some append a backtrace).
fn first_line(s: impl std::fmt::Display) -> String {
    s.to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// Runs `f`, turning a panic inside the framework into an error with its message.
fn guarded<T>(f: impl FnOnce() -> EngineResult<T>) -> EngineResult<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(format!("panicked: {}", panic_message(p.as_ref())).into()),
    }
}

fn run_case(
    ops: &mut dyn OpBench,
    case: &OpCase,
    micro: &Micro,
    scenario: &ScenarioRequest,
    budget: Option<Duration>,
) -> OpReport {
    let mut r = OpReport {
        id: case.id.clone(),
        host_ns: Vec::new(),
        device_ns: Vec::new(),
        checksum: None,
        note: None,
        unsupported: None,
        error: None,
    };
    // What fails before the first result (preparing, or the first call) is something the
    // framework cannot run: unsupported, with its own words. A failure after that is an error.
    let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        // Moved in (FnOnce), so the prepared case may keep borrowing the engine.
        let ops = ops;
        ops.prepare(case, micro)
    }));
    let mut prepared = match prepared {
        Ok(Ok(p)) => p,
        Ok(Err(OpRefusal::Unsupported(why))) => {
            r.unsupported = Some(why);
            return r;
        }
        Ok(Err(OpRefusal::Failed(e))) => {
            r.unsupported = Some(first_line(e));
            return r;
        }
        Err(p) => {
            r.unsupported = Some(first_line(format!(
                "panicked: {}",
                panic_message(p.as_ref())
            )));
            return r;
        }
    };
    r.note = prepared.note.take();
    let first = guarded(|| {
        (prepared.run)(true)?
            .output
            .ok_or_else(|| "the engine returned no output when asked for it".into())
    });
    match first {
        Ok(out) => r.checksum = Some(OpChecksum::of(out)),
        Err(e) => {
            r.unsupported = Some(first_line(e));
            return r;
        }
    }
    let timed = guarded(|| {
        for _ in 0..scenario.warmup_iterations {
            (prepared.run)(false)?;
        }
        let start = Instant::now();
        while r.host_ns.len() < scenario.iterations as usize {
            let t = Instant::now();
            let call = (prepared.run)(false)?;
            r.host_ns.push(t.elapsed().as_nanos() as u64);
            if let Some(d) = call.device_ns {
                r.device_ns.push(d);
            }
            if budget.is_some_and(|b| start.elapsed() >= b) {
                break;
            }
        }
        Ok(())
    });
    if let Err(e) = timed {
        r.error = Some(first_line(e));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_protocol::micro::{Op, OpModel};
    use lab_protocol::{Dtype, GenerationSettings, Sampling};

    /// Ops of a fake framework: matmul runs (an output of `m·n` ones, `sleep` per call), softmax
    /// is refused, rms_norm panics while preparing, rope fails at its first call, attention at
    /// its third.
    struct Fake {
        sleep: std::time::Duration,
        calls: u32,
    }

    impl OpBench for Fake {
        fn prepare<'a>(
            &'a mut self,
            case: &OpCase,
            _micro: &Micro,
        ) -> Result<Prepared<'a>, OpRefusal> {
            let sleep = self.sleep;
            let calls = &mut self.calls;
            let run: Box<dyn FnMut(bool) -> EngineResult<Call> + 'a> = match case.op {
                Op::Matmul { m, n, .. } => Box::new(move |want| {
                    *calls += 1;
                    std::thread::sleep(sleep);
                    Ok(Call {
                        device_ns: Some(7),
                        output: want.then(|| vec![1.0; (m * n) as usize]),
                    })
                }),
                Op::Softmax { .. } => return Err(OpRefusal::Unsupported("no softmax here".into())),
                Op::RmsNorm { .. } => panic!("dtype not implemented"),
                Op::Rope { .. } => Box::new(|_| Err("kernel missing".into())),
                _ => {
                    let mut n = 0;
                    Box::new(move |want| {
                        n += 1;
                        if n == 3 {
                            return Err("device lost".into());
                        }
                        Ok(Call {
                            device_ns: None,
                            output: want.then(|| vec![-2.0, 3.0]),
                        })
                    })
                }
            };
            Ok(Prepared {
                run,
                note: Some("fake".into()),
            })
        }
    }

    fn model() -> OpModel {
        OpModel {
            hidden: 8,
            intermediate: 16,
            heads: 2,
            kv_heads: 1,
            head_dim: 4,
            vocab: 32,
            rms_eps: 1e-5,
            rope_theta: 10000.0,
        }
    }

    fn scenario(ops: Vec<Op>, iterations: u32, max_ms: Option<u64>) -> ScenarioRequest {
        ScenarioRequest {
            id: "micro".into(),
            kind: ScenarioKind::Micro,
            prompts: vec![],
            generation: GenerationSettings {
                max_new_tokens: 1,
                stop_at_eos: false,
                eos_token_ids: vec![],
                sampling: Sampling::Greedy,
                kv_cache: true,
            },
            warmup_iterations: 2,
            iterations,
            min_duration_ms: 0,
            max_duration_ms: max_ms,
            load: None,
            sampling_overhead: None,
            lora: None,
            micro: Some(Micro {
                model: model(),
                cases: ops
                    .into_iter()
                    .enumerate()
                    .map(|(i, op)| OpCase {
                        id: format!("c{i}"),
                        op,
                        dtype: Dtype::F32,
                    })
                    .collect(),
                seed: 1,
            }),
        }
    }

    #[test]
    fn every_case_is_timed_alone_and_what_cannot_run_says_why() {
        let mut fake = Fake {
            sleep: std::time::Duration::ZERO,
            calls: 0,
        };
        let sc = scenario(
            vec![
                Op::Matmul { m: 2, k: 4, n: 3 },
                Op::Softmax { rows: 1, cols: 4 },
                Op::RmsNorm { rows: 1, dim: 4 },
                Op::Rope {
                    tokens: 1,
                    heads: 1,
                    head_dim: 4,
                },
                Op::MlpBlock { tokens: 1 },
            ],
            5,
            None,
        );
        let r = run_micro(Some(&mut fake), &sc);
        assert_eq!(r.kind, ScenarioKind::Micro);
        assert_eq!(r.micro, sc.micro, "the settings are echoed");
        assert_eq!(r.ops.len(), 5);
        let mm = &r.ops[0];
        // One untimed call for the output, 2 warm-ups, 5 timed.
        assert_eq!(fake.calls, 1 + 2 + 5);
        assert_eq!(mm.host_ns.len(), 5);
        assert_eq!(mm.device_ns, [7; 5]);
        assert_eq!(mm.checksum, Some(OpChecksum::of(vec![1.0; 6])));
        assert_eq!(mm.note.as_deref(), Some("fake"));
        assert_eq!((mm.unsupported.as_ref(), mm.error.as_ref()), (None, None));
        assert_eq!(r.ops[1].unsupported.as_deref(), Some("no softmax here"));
        assert!(
            r.ops[2]
                .unsupported
                .as_deref()
                .is_some_and(|u| u.contains("panicked: dtype not implemented")),
            "{:?}",
            r.ops[2]
        );
        assert_eq!(r.ops[3].unsupported.as_deref(), Some("kernel missing"));
        // A failure after the first result is the case's error; what ran before is kept.
        let mlp = &r.ops[4];
        assert_eq!(mlp.error.as_deref(), Some("device lost"));
        assert_eq!(mlp.checksum.as_ref().map(|c| c.sum), Some(1.0));
        assert!(mlp.unsupported.is_none() && mlp.host_ns.is_empty());
    }

    #[test]
    fn a_case_stops_at_its_time_limit_and_an_engine_without_ops_is_unsupported() {
        let mut fake = Fake {
            sleep: std::time::Duration::from_millis(20),
            calls: 0,
        };
        let sc = scenario(vec![Op::Matmul { m: 1, k: 1, n: 1 }], 1000, Some(50));
        let r = run_micro(Some(&mut fake), &sc);
        let n = r.ops[0].host_ns.len();
        assert!(
            (1..=4).contains(&n),
            "{n} samples in a 50 ms limit of 20 ms calls"
        );

        let r = run_micro(None, &sc);
        assert_eq!(r.unsupported.as_deref(), Some(NO_OPS));
        assert!(r.ops.is_empty());
    }

    #[test]
    fn bad_micro_settings_are_refused_with_the_field() {
        let check = |sc: ScenarioRequest, want: &str| {
            let e = crate::process::validate_micro(&sc).unwrap_err();
            assert!(e.contains(want), "{e} (wanted {want})");
        };
        let mut sc = scenario(vec![Op::Matmul { m: 0, k: 1, n: 1 }], 1, None);
        check(sc.clone(), "micro.cases `c0`: matmul 0×1·1×1: a zero");
        sc.micro.as_mut().unwrap().cases.clear();
        check(sc.clone(), "micro.cases is empty");
        let mut two = scenario(vec![Op::Embedding { tokens: 1 }; 2], 1, None);
        two.micro.as_mut().unwrap().cases[1].id = "c0".into();
        check(two, "the id `c0` appears twice");
        let mut none = scenario(vec![], 1, None);
        none.micro = None;
        check(none, "needs `micro` settings");
        let mut s1 = scenario(vec![Op::Embedding { tokens: 1 }], 1, None);
        s1.kind = ScenarioKind::SingleRequestLatency;
        check(s1, "does not fit");
        let mut bad_model = scenario(vec![Op::Layer { tokens: 1, past: 0 }], 1, None);
        bad_model.micro.as_mut().unwrap().model.kv_heads = 3;
        check(bad_model, "inconsistent dimensions");
    }
}
