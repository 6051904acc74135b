//! A step-wise [`Engine`] seen as a [`SequenceEngine`]: the kit's own timed loop, its load
//! scenarios batched through [`crate::engine::BatchEngine`] or served serially.

use lab_protocol::{
    GenerationSettings, SamplingOverhead, SamplingTiming, ScenarioReport, ScenarioRequest,
};

use crate::engine::{Engine, EngineResult, SequenceEngine, SequenceRun};
use crate::load::Serial;
use crate::micro::OpBench;
use crate::train::LoraTrain;
use crate::KitError;

/// A step-wise [`Engine`] seen as a [`SequenceEngine`]: the kit's own timed loop.
pub struct Stepwise<'a, E> {
    engine: &'a mut E,
    logits: Vec<f32>,
}

impl<'a, E: Engine> Stepwise<'a, E> {
    pub fn new(engine: &'a mut E) -> Self {
        Stepwise {
            engine,
            logits: Vec::new(),
        }
    }
}

impl<E: Engine> SequenceEngine for Stepwise<'_, E> {
    fn run_sequence(
        &mut self,
        generation: &GenerationSettings,
        prompt: &[u32],
        forced: Option<&[u32]>,
    ) -> Result<SequenceRun, KitError> {
        crate::sequence::one_sequence(self.engine, generation, prompt, forced, &mut self.logits)
    }

    fn synchronize(&mut self) -> EngineResult<()> {
        self.engine.synchronize()
    }

    fn peak_device_bytes(&self) -> Option<u64> {
        self.engine.peak_device_bytes()
    }

    fn kv_cache_off(&self) -> Option<String> {
        None
    }

    fn time_sampling(
        &mut self,
        overhead: &SamplingOverhead,
    ) -> Result<Vec<SamplingTiming>, String> {
        if self.logits.is_empty() {
            return Err("no forward pass ran before the sampling was timed".into());
        }
        Ok(crate::sampling::time_strategies(&self.logits, overhead))
    }

    fn run_load(&mut self, scenario: &ScenarioRequest) -> Option<ScenarioReport> {
        // A lock-step engine batches S2; S3's requests (arriving at any time, of any length)
        // are served one at a time, and the report says why.
        let why_serial = match self.engine.batch() {
            None => None,
            Some(b) => match b.lock_step() {
                Some(why) if scenario.kind == lab_protocol::ScenarioKind::ConcurrentLoad => {
                    Some(why)
                }
                _ => return Some(crate::load::run_load(b, scenario)),
            },
        };
        Some(crate::load::run_load(
            &mut Serial(&mut *self.engine, why_serial),
            scenario,
        ))
    }

    fn ops(&mut self) -> Option<&mut dyn OpBench> {
        self.engine.ops()
    }

    fn lora(&mut self) -> Option<&mut dyn LoraTrain> {
        self.engine.lora()
    }
}
