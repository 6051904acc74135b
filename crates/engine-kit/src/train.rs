//! The LoRA training-step scenario ([`ScenarioKind::LoraStep`]): an engine whose framework can
//! train returns its [`LoraTrain`] from [`crate::Engine::lora`]; the kit starts a session (frozen
//! weights, adapters from the lab's seeded values, the optimizer), then runs the scenario's
//! warm-up and measured steps, timing each phase — forward (to the loss value), backward,
//! optimizer — with `Instant` after the engine's own device sync. The first step's adapter
//! gradients are read between backward and the optimizer, outside the timings.

use std::time::Instant;

use lab_protocol::train::{AdapterGrad, Lora, TrainReport, TrainStep};
use lab_protocol::{ScenarioKind, ScenarioReport, ScenarioRequest};

use crate::micro::OpRefusal;
use crate::rss::PeakRss;
use crate::EngineResult;

/// A training session: adapters and optimizer state live here.
pub trait LoraSession {
    /// The loss of the batch (the graph kept for `backward`); returns after the device finished.
    fn forward(&mut self) -> EngineResult<f64>;
    /// Gradients of the adapters; returns after the device finished.
    fn backward(&mut self) -> EngineResult<()>;
    /// The adapters' gradients after `backward`, in layer then `targets` order, `a` then `b`.
    fn grads(&mut self) -> EngineResult<Vec<AdapterGrad>>;
    /// The optimizer's update, gradients cleared; returns after the device finished.
    fn step(&mut self) -> EngineResult<()>;
    fn trainable_params(&self) -> u64;
    /// How the framework trains, in words.
    fn how(&self) -> String;
}

/// An engine's training path.
pub trait LoraTrain {
    fn start<'a>(&'a mut self, lora: &Lora) -> Result<Box<dyn LoraSession + 'a>, OpRefusal>;
}

/// Why an engine has no [`LoraTrain`].
pub const NO_TRAINING: &str = "the engine runs inference only: its library has no autograd";

/// Runs a LoRA scenario on `train` (`None`: unsupported, [`NO_TRAINING`]).
pub fn run_lora(train: Option<&mut dyn LoraTrain>, scenario: &ScenarioRequest) -> ScenarioReport {
    let mut report = ScenarioReport {
        kind: ScenarioKind::LoraStep,
        ..ScenarioReport::empty(scenario)
    };
    let Some(lora) = scenario.lora.as_ref() else {
        report.error = Some("a LoRA scenario needs `lora` settings".into());
        return report;
    };
    let Some(train) = train else {
        report.unsupported = Some(NO_TRAINING.into());
        return report;
    };
    let peak = PeakRss::start();
    let mut session = match train.start(lora) {
        Ok(s) => s,
        Err(OpRefusal::Unsupported(why)) => {
            report.unsupported = Some(why);
            return report;
        }
        Err(OpRefusal::Failed(e)) => {
            report.error = Some(format!("starting the session: {e}"));
            return report;
        }
    };
    let mut out = TrainReport {
        steps: Vec::new(),
        first_grads: Vec::new(),
        positions: lora.token_ids.len().saturating_sub(1) as u32,
        trainable_params: session.trainable_params(),
        peak_rss_bytes: None,
        how: session.how(),
    };
    let total = scenario.warmup_iterations + scenario.iterations;
    let outcome = (|| -> EngineResult<()> {
        for k in 0..total {
            let t0 = Instant::now();
            let loss = session.forward()?;
            let forward = t0.elapsed();
            let t1 = Instant::now();
            session.backward()?;
            let backward = t1.elapsed();
            if k == 0 {
                out.first_grads = session.grads()?;
                if out.first_grads.iter().all(|g| g.checksum.sum_abs == 0.0) {
                    return Err("no adapter received a gradient at the first step: the framework's backward pass does not reach the adapters".into());
                }
            }
            let t2 = Instant::now();
            session.step()?;
            let optimizer = t2.elapsed();
            if !loss.is_finite() {
                return Err(format!("step {}: the loss is {loss}", k + 1).into());
            }
            out.steps.push(TrainStep {
                warmup: k < scenario.warmup_iterations,
                forward_ns: forward.as_nanos() as u64,
                backward_ns: backward.as_nanos() as u64,
                optimizer_ns: optimizer.as_nanos() as u64,
                loss,
            });
            eprintln!(
                "progress: {} step {}/{total} loss {loss:.4} (forward {:.0} ms, backward {:.0} ms, optimizer {:.0} ms)",
                scenario.id,
                k + 1,
                forward.as_secs_f64() * 1e3,
                backward.as_secs_f64() * 1e3,
                optimizer.as_secs_f64() * 1e3
            );
        }
        Ok(())
    })();
    drop(session);
    if let Err(e) = outcome {
        report.error = Some(e.to_string());
    }
    out.peak_rss_bytes = peak.finish();
    report.train = Some(out);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_protocol::micro::OpChecksum;
    use lab_protocol::{GenerationSettings, Sampling};

    /// A fake trainer: the loss halves at every step; `fail_at` makes that step's backward fail.
    struct Fake {
        fail_at: Option<u32>,
        refuse: bool,
    }
    struct FakeSession {
        loss: f64,
        step: u32,
        fail_at: Option<u32>,
        backwards: u32,
    }

    impl LoraSession for FakeSession {
        fn forward(&mut self) -> EngineResult<f64> {
            Ok(self.loss)
        }
        fn backward(&mut self) -> EngineResult<()> {
            self.step += 1;
            self.backwards += 1;
            if Some(self.step) == self.fail_at {
                return Err("out of memory (simulated)".into());
            }
            Ok(())
        }
        fn grads(&mut self) -> EngineResult<Vec<AdapterGrad>> {
            Ok(vec![AdapterGrad {
                layer: 0,
                target: "q_proj".into(),
                matrix: "b".into(),
                checksum: OpChecksum::of([self.backwards as f32]),
            }])
        }
        fn step(&mut self) -> EngineResult<()> {
            self.loss /= 2.0;
            Ok(())
        }
        fn trainable_params(&self) -> u64 {
            42
        }
        fn how(&self) -> String {
            "fake".into()
        }
    }

    impl LoraTrain for Fake {
        fn start<'a>(&'a mut self, _lora: &Lora) -> Result<Box<dyn LoraSession + 'a>, OpRefusal> {
            if self.refuse {
                return Err(OpRefusal::Unsupported("no autograd for this dtype".into()));
            }
            Ok(Box::new(FakeSession {
                loss: 8.0,
                step: 0,
                fail_at: self.fail_at,
                backwards: 0,
            }))
        }
    }

    fn scenario() -> ScenarioRequest {
        ScenarioRequest {
            id: "lora".into(),
            kind: ScenarioKind::LoraStep,
            prompts: vec![],
            generation: GenerationSettings {
                max_new_tokens: 1,
                stop_at_eos: false,
                eos_token_ids: vec![],
                sampling: Sampling::Greedy,
                kv_cache: true,
            },
            warmup_iterations: 1,
            iterations: 3,
            min_duration_ms: 0,
            max_duration_ms: None,
            load: None,
            sampling_overhead: None,
            micro: None,
            lora: Some(Lora {
                rank: 8,
                alpha: 16.0,
                targets: vec!["q_proj".into()],
                lr: 1e-4,
                weight_decay: 0.01,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                seed: 1,
                token_ids: vec![1, 2, 3, 4, 5],
            }),
        }
    }

    #[test]
    fn every_step_is_timed_in_three_phases_and_the_first_gradients_are_kept() {
        let mut fake = Fake {
            fail_at: None,
            refuse: false,
        };
        let r = run_lora(Some(&mut fake), &scenario());
        assert_eq!((r.error.as_ref(), r.unsupported.as_ref()), (None, None));
        let t = r.train.unwrap();
        assert_eq!(t.steps.len(), 4, "1 warm-up + 3 measured");
        assert_eq!(
            t.steps.iter().map(|s| s.warmup).collect::<Vec<_>>(),
            [true, false, false, false]
        );
        assert_eq!(
            t.steps.iter().map(|s| s.loss).collect::<Vec<_>>(),
            [8.0, 4.0, 2.0, 1.0]
        );
        assert_eq!(t.first_grads.len(), 1);
        assert_eq!(
            t.first_grads[0].checksum.sum, 1.0,
            "read after the first backward"
        );
        assert_eq!(
            (t.positions, t.trainable_params, t.how.as_str()),
            (4, 42, "fake")
        );
    }

    #[test]
    fn a_failed_step_keeps_the_steps_before_and_a_refusal_is_unsupported() {
        let mut fake = Fake {
            fail_at: Some(3),
            refuse: false,
        };
        let r = run_lora(Some(&mut fake), &scenario());
        assert_eq!(r.error.as_deref(), Some("out of memory (simulated)"));
        assert_eq!(r.train.unwrap().steps.len(), 2);

        let mut fake = Fake {
            fail_at: None,
            refuse: true,
        };
        let r = run_lora(Some(&mut fake), &scenario());
        assert_eq!(r.unsupported.as_deref(), Some("no autograd for this dtype"));
        let r = run_lora(None, &scenario());
        assert_eq!(r.unsupported.as_deref(), Some(NO_TRAINING));
    }
}
