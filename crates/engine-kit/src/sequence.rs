//! One timed sequence of a step-wise engine: prefill, then fixed-length decode, a device sync
//! before every timestamp (TTFT = start of prefill to the first token sampled; e2e = start of
//! prefill to the last token sampled). With `generation.kv_cache` off every decode step is a
//! `reset` and a prefill of the prompt plus the tokens so far: the recomputation the KV cache
//! saves, the same way for every step-wise engine.

use std::time::Instant;

use lab_protocol::{GenerationSettings, IterationSample, TopLogits, TOP_K};

use crate::engine::{Engine, SequenceRun};
use crate::{KitError, Sampler};

/// Prefill plus fixed-length decode of one sequence, timed. With `forced` (teacher forcing) the
/// token fed at each step is the next forced one instead of the sampled one, and the top logits
/// of every position are kept (outside the timed span's device work, after its sync).
pub(crate) fn one_sequence<E: Engine>(
    engine: &mut E,
    g: &GenerationSettings,
    prompt: &[u32],
    forced: Option<&[u32]>,
    logits: &mut Vec<f32>,
) -> Result<SequenceRun, KitError> {
    let wrap = |phase: &'static str| move |source| KitError::Engine { phase, source };
    let mut sampler = Sampler::new(&g.sampling);
    let mut tokens = Vec::with_capacity(g.max_new_tokens as usize);
    let mut inter_token_ns = Vec::with_capacity(g.max_new_tokens as usize);
    let mut tops = Vec::new();
    // Without the KV cache: the tokens fed so far and the prefix each step recomputes.
    let mut fed: Vec<u32> = Vec::new();
    let mut prefix: Vec<u32> = Vec::new();

    engine.reset().map_err(wrap("reset"))?;
    engine.synchronize().map_err(wrap("reset"))?;
    let start = Instant::now();
    let start_unix_ns = crate::unix_now_ns();
    engine.prefill(prompt, logits).map_err(wrap("prefill"))?;
    let mut token = sampler.sample(logits);
    if forced.is_some() {
        tops.push(TopLogits::of(logits, TOP_K));
    }
    engine.synchronize().map_err(wrap("prefill"))?;
    crate::slowdown::stretch(start);
    let mut last = Instant::now();
    crate::phase::first_token_at(last);
    let ttft_ns = (last - start).as_nanos() as u64;
    tokens.push(token);

    while (tokens.len() as u32) < g.max_new_tokens {
        let feed = match forced {
            Some(f) => f[tokens.len() - 1],
            None if g.stop_at_eos && g.eos_token_ids.contains(&token) => break,
            None => token,
        };
        if g.kv_cache {
            engine.decode(feed, logits).map_err(wrap("decode"))?;
        } else {
            prefix.clear();
            prefix.extend_from_slice(prompt);
            prefix.extend_from_slice(&fed);
            prefix.push(feed);
            engine.reset().map_err(wrap("decode"))?;
            engine.prefill(&prefix, logits).map_err(wrap("decode"))?;
            fed.push(feed);
        }
        token = sampler.sample(logits);
        if forced.is_some() {
            tops.push(TopLogits::of(logits, TOP_K));
        }
        engine.synchronize().map_err(wrap("decode"))?;
        crate::slowdown::stretch(last);
        let now = Instant::now();
        inter_token_ns.push((now - last).as_nanos() as u64);
        last = now;
        tokens.push(token);
    }
    let e2e_ns = (last - start).as_nanos() as u64;
    let sample = IterationSample {
        ttft_ns,
        e2e_ns,
        new_tokens: tokens.len() as u32,
        inter_token_ns,
        start_unix_ns: Some(start_unix_ns),
    };
    Ok(SequenceRun {
        sample,
        tokens,
        top_logits: tops,
    })
}
