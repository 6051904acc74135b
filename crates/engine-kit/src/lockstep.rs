//! The adapter of a lock-step engine (candle's and burn's Llama: one position shared by the
//! whole batch, no padding mask): it implements [`LockStepEngine`] and gets the kit's
//! [`BatchEngine`], whose guards are written here once — a batch is prefilled together from
//! prompts of one length, in slots `0..n`, and decoded together, every sequence at every step.

use crate::engine::{BatchEngine, EngineResult};

/// What a lock-step engine implements; the kit makes it a [`BatchEngine`].
pub trait LockStepEngine {
    /// The engine's name in errors (`candle`).
    const NAME: &'static str;

    /// How many sequences one batch may hold.
    fn max_slots(&self) -> usize;

    /// How it batches, recorded verbatim in the report.
    fn batching(&self) -> String;

    /// Why requests of different lengths cannot share its batch (S3 is served serially, with
    /// this in its label).
    fn why_lock_step(&self) -> String;

    /// Forgets the previous batch and prefills `prompts` (one length, at least one) together,
    /// writing the logits of entry `i`'s last position into `logits[i * vocab..]`.
    fn prefill_together(&mut self, prompts: &[&[u32]], logits: &mut Vec<f32>) -> EngineResult<()>;

    /// One step for every sequence of the batch: `tokens[i]` is sequence `i`'s next token.
    fn decode_together(&mut self, tokens: &[u32], logits: &mut Vec<f32>) -> EngineResult<()>;

    /// How many sequences the current batch holds.
    fn batch_len(&self) -> usize;

    /// Waits until queued device work is done.
    fn sync(&mut self) -> EngineResult<()>;
}

impl<E: LockStepEngine> BatchEngine for E {
    fn max_slots(&self) -> usize {
        LockStepEngine::max_slots(self)
    }

    fn batching(&self) -> String {
        LockStepEngine::batching(self)
    }

    fn lock_step(&self) -> Option<String> {
        Some(self.why_lock_step())
    }

    fn prefill_slot(
        &mut self,
        slot: usize,
        prompt: &[u32],
        logits: &mut Vec<f32>,
    ) -> EngineResult<()> {
        if slot != 0 {
            return Err(format!(
                "{} batches in lock-step: prefill the whole batch at once",
                E::NAME
            )
            .into());
        }
        self.prefill_batch(&[prompt], logits)
    }

    fn prefill_batch(&mut self, prompts: &[&[u32]], logits: &mut Vec<f32>) -> EngineResult<()> {
        let len = prompts.first().map_or(0, |p| p.len());
        if let Some(p) = prompts.iter().find(|p| p.len() != len) {
            return Err(format!(
                "{} shares one position across the batch: prompts of {len} and {} tokens cannot be batched",
                E::NAME,
                p.len()
            )
            .into());
        }
        self.prefill_together(prompts, logits)
    }

    fn decode_slots(&mut self, batch: &[(usize, u32)], logits: &mut Vec<f32>) -> EngineResult<()> {
        let n = self.batch_len();
        if batch.len() != n || batch.iter().enumerate().any(|(i, &(s, _))| i != s) {
            return Err(format!(
                "{} decodes its batch of {n} in lock-step, every sequence at every step",
                E::NAME
            )
            .into());
        }
        let tokens: Vec<u32> = batch.iter().map(|&(_, t)| t).collect();
        self.decode_together(&tokens, logits)
    }

    fn release_slot(&mut self, _slot: usize) {
        // The next prefill starts a new batch.
    }

    fn synchronize(&mut self) -> EngineResult<()> {
        self.sync()
    }
}
