//! What an engine adapter implements ([`Engine`], or [`SequenceEngine`] when its library owns the
//! generation loop), what its `load` returns ([`Loaded`]) and its static facts ([`EngineMeta`]).

use lab_protocol::{
    EngineIdentity, GenerationSettings, IterationSample, Request, SamplingOverhead, SamplingTiming,
    ScenarioReport, ScenarioRequest, TopLogits,
};

use crate::micro::OpBench;
use crate::train::LoraTrain;

use crate::KitError;

/// Errors from engine code are boxed; the kit only needs their message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
pub type EngineResult<T> = Result<T, BoxError>;

/// What an engine adapter implements. One sequence at a time; the kit owns the loop.
pub trait Engine {
    /// Forgets the previous sequence (KV cache). Called before every prefill.
    fn reset(&mut self) -> EngineResult<()>;

    /// Runs the prompt and writes the logits of its last position into `logits` (vocab-sized).
    fn prefill(&mut self, prompt: &[u32], logits: &mut Vec<f32>) -> EngineResult<()>;

    /// Feeds one token at the next position and writes its logits into `logits`.
    fn decode(&mut self, token: u32, logits: &mut Vec<f32>) -> EngineResult<()>;

    /// Waits until queued device work is done. Called before every timestamp.
    fn synchronize(&mut self) -> EngineResult<()> {
        Ok(())
    }

    /// Peak accelerator memory in bytes, if the engine runs on one and can tell.
    fn peak_device_bytes(&self) -> Option<u64> {
        None
    }

    /// The engine as a [`BatchEngine`] when it can decode many sequences together; `None`
    /// (the default) serves the load scenarios one request at a time ([`crate::load::Serial`]).
    fn batch(&mut self) -> Option<&mut dyn BatchEngine> {
        None
    }

    /// The engine's framework operations for the microbenchmark scenario; `None` (the
    /// default): the engine's library runs whole models only ([`crate::micro::NO_OPS`]).
    fn ops(&mut self) -> Option<&mut dyn OpBench> {
        None
    }

    /// The engine's training path for the LoRA scenario; `None` (the default): inference only
    /// ([`crate::train::NO_TRAINING`]).
    fn lora(&mut self) -> Option<&mut dyn LoraTrain> {
        None
    }
}

/// One generated sequence as the kit records it.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceRun {
    pub sample: IterationSample,
    /// Generated token ids (`sample.new_tokens` of them).
    pub tokens: Vec<u32>,
    /// Top logits of every predicted position; only for teacher-forced sequences.
    pub top_logits: Vec<TopLogits>,
}

/// What an engine with its own generation loop implements: one whole sequence per call, timed by
/// the engine around its library's API (and documented in its identity's settings).
pub trait SequenceEngine {
    /// Generates `generation.max_new_tokens` tokens after `prompt` (fewer only when
    /// `generation.stop_at_eos` is set and an EOS id is produced), or, with `forced` (teacher
    /// forcing), predicts every position of `forced` plus the one after it and keeps their top
    /// logits.
    fn run_sequence(
        &mut self,
        generation: &GenerationSettings,
        prompt: &[u32],
        forced: Option<&[u32]>,
    ) -> Result<SequenceRun, KitError>;

    /// Waits until queued device work is done (called once after loading).
    fn synchronize(&mut self) -> EngineResult<()> {
        Ok(())
    }

    fn peak_device_bytes(&self) -> Option<u64> {
        None
    }

    /// Runs a load scenario (S2, S3) itself, when its library schedules many sequences (and
    /// the step-wise adapter, which batches through [`BatchEngine`]). `None`, the default: the
    /// kit serves one whole sequence at a time (`load::run_load_sequences`, reported as
    /// `none (serial)`).
    fn run_load(&mut self, scenario: &ScenarioRequest) -> Option<ScenarioReport> {
        let _ = scenario;
        None
    }

    /// Why this engine cannot generate with its KV cache off (`generation.kv_cache: false`), or
    /// `None` when it can. A step-wise engine always can (the kit recomputes the prefix).
    fn ops(&mut self) -> Option<&mut dyn OpBench> {
        None
    }

    fn lora(&mut self) -> Option<&mut dyn LoraTrain> {
        None
    }

    fn kv_cache_off(&self) -> Option<String> {
        Some("the engine's library owns the generation loop and its KV cache; it offers no way to recompute the prefix at every step".into())
    }

    /// Times every strategy of a sampling-overhead scenario on the logits of the last forward
    /// pass, or says why the engine cannot.
    fn time_sampling(
        &mut self,
        overhead: &SamplingOverhead,
    ) -> Result<Vec<SamplingTiming>, String> {
        let _ = overhead;
        Err("the engine's library owns the generation loop; the kit never holds a forward pass's logits to time the samplers on".into())
    }
}

/// An engine chosen at run time (a backend picked from the request) is boxed behind the trait.
impl<E: Engine + ?Sized> Engine for Box<E> {
    fn reset(&mut self) -> EngineResult<()> {
        (**self).reset()
    }
    fn prefill(&mut self, prompt: &[u32], logits: &mut Vec<f32>) -> EngineResult<()> {
        (**self).prefill(prompt, logits)
    }
    fn decode(&mut self, token: u32, logits: &mut Vec<f32>) -> EngineResult<()> {
        (**self).decode(token, logits)
    }
    fn synchronize(&mut self) -> EngineResult<()> {
        (**self).synchronize()
    }
    fn peak_device_bytes(&self) -> Option<u64> {
        (**self).peak_device_bytes()
    }
    fn batch(&mut self) -> Option<&mut dyn BatchEngine> {
        (**self).batch()
    }
    fn ops(&mut self) -> Option<&mut dyn OpBench> {
        (**self).ops()
    }
    fn lora(&mut self) -> Option<&mut dyn LoraTrain> {
        (**self).lora()
    }
}

/// A loaded engine and the identity it reports (name, versions, device, dtype, threads and
/// fairness settings); the kit keeps the identity, so engines do not store it.
pub struct Loaded<E> {
    pub engine: E,
    pub identity: EngineIdentity,
}

/// Static facts about an engine, known before anything is loaded (used in failure reports).
#[derive(Debug, Clone, Copy)]
pub struct EngineMeta {
    pub name: &'static str,
    pub version: &'static str,
    /// The library doing the work and its version, e.g. `candle-core 0.10.2`.
    pub backend: &'static str,
}

impl EngineMeta {
    /// The identity a loaded engine reports: these facts, the device, dtype and weight format the
    /// request asked for, the threads really used and the engine's settings.
    pub fn identity(
        &self,
        request: &Request,
        threads: u32,
        settings: std::collections::BTreeMap<String, String>,
    ) -> EngineIdentity {
        EngineIdentity {
            name: self.name.to_string(),
            version: self.version.to_string(),
            backend: self.backend.to_string(),
            device: request.device.to_string(),
            dtype: request.model.dtype.as_str().to_string(),
            weight_format: request.model.format,
            threads,
            settings,
        }
    }

    /// `engine` loaded for `request`, with [`EngineMeta::identity`].
    pub fn loaded<E>(
        &self,
        engine: E,
        request: &Request,
        threads: u32,
        settings: std::collections::BTreeMap<String, String>,
    ) -> Loaded<E> {
        Loaded {
            engine,
            identity: self.identity(request, threads, settings),
        }
    }

    /// The error of a binary built without its `cuda` feature that is asked for a GPU.
    pub fn no_cuda(&self) -> BoxError {
        format!(
            "this engine-{} binary was built without the `cuda` feature",
            self.name
        )
        .into()
    }
}

/// An engine that decodes many sequences together. Slots are numbered `0..max_slots()`; the kit
/// prefills a sequence into a free slot, then calls [`BatchEngine::decode_slots`] with every
/// active slot and the token to feed it, and releases the slot when the sequence ends.
pub trait BatchEngine {
    /// How many sequences it can hold at once.
    fn max_slots(&self) -> usize;

    /// How it batches, recorded verbatim in the report (e.g. `continuous (one pass over the
    /// weights per step for every active sequence)`).
    fn batching(&self) -> String;

    /// Starts a new sequence in `slot` (free) with `prompt`, writing the logits of its last
    /// position into `logits` (vocab-sized).
    fn prefill_slot(
        &mut self,
        slot: usize,
        prompt: &[u32],
        logits: &mut Vec<f32>,
    ) -> EngineResult<()>;

    /// Feeds `token` to each `slot` at its next position, in one step; writes the logits of
    /// entry `i` into `logits[i * vocab..(i + 1) * vocab]`.
    fn decode_slots(&mut self, batch: &[(usize, u32)], logits: &mut Vec<f32>) -> EngineResult<()>;

    /// Forgets the sequence in `slot`.
    fn release_slot(&mut self, slot: usize);

    /// Starts the sequences of one S2 batch in slots `0..prompts.len()` (all free), writing the
    /// logits of entry `i`'s last position into `logits[i * vocab..(i + 1) * vocab]`. By default
    /// one [`BatchEngine::prefill_slot`] each; a lock-step engine prefills them in one pass.
    fn prefill_batch(&mut self, prompts: &[&[u32]], logits: &mut Vec<f32>) -> EngineResult<()> {
        let mut all = Vec::new();
        for (slot, p) in prompts.iter().enumerate() {
            self.prefill_slot(slot, p, logits)?;
            all.extend_from_slice(logits);
        }
        *logits = all;
        Ok(())
    }

    /// `Some(why)` for a lock-step engine: its batch is prefilled together
    /// ([`BatchEngine::prefill_batch`]) and decoded to the end together, so no sequence can join
    /// or leave between steps. S2 runs on it batched; S3 is served one request at a time and its
    /// report says `none (serial): <why>`. `None` (the default): continuous batching.
    fn lock_step(&self) -> Option<String> {
        None
    }

    /// Waits until queued device work is done. Called before every timestamp.
    fn synchronize(&mut self) -> EngineResult<()> {
        Ok(())
    }
}
