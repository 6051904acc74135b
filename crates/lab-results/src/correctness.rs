//! Correctness against the reference: an implementation nobody in this project wrote.
//!
//! `baselines/reference/<model>.json` is produced by `cargo xtask reference`: Hugging Face
//! transformers loads the *original GGUF* (dequantized by the `gguf` package, not by the lab's
//! converter) and records, for the committed prompts of `prompts/reference.json`, a greedy
//! continuation and the top-5 logits of every teacher-forced position.
//!
//! Every engine runs the two correctness scenarios (`ref-greedy`, `ref-tf`) through the normal
//! protocol. [`evaluate`] turns a result into figures: teacher-forced top-1 agreement (the gated
//! figure), the matching greedy prefix per prompt, exact token counts, and the logit error on the
//! reference's top-1 token. [`check`] gates them by precision ([`gate_for`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lab_protocol::{Dtype, Prompt, ScenarioReport, TopLogits, WeightFormat};
use serde::{Deserialize, Serialize};

use crate::findings::{Finding, Verdict};
use crate::results::{read_json, TargetResult};
pub use crate::results::{Correctness, PromptCorrectness};
use crate::{Error, Result};

pub const GREEDY_SCENARIO: &str = crate::ScenarioId::RefGreedy.as_str();
pub const TEACHER_FORCED_SCENARIO: &str = crate::ScenarioId::RefTf.as_str();

/// The reference file of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub about: String,
    /// Model volume entry, e.g. `smollm2-135m`.
    pub model: String,
    /// sha256 of the GGUF the reference was computed from.
    pub gguf_sha256: String,
    /// Versions and method of the generating path (torch, transformers, gguf, ...).
    pub generator: BTreeMap<String, String>,
    pub continuation_tokens: u32,
    pub top_k: u32,
    pub prompts: Vec<ReferencePrompt>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferencePrompt {
    pub name: String,
    pub text: String,
    pub token_ids: Vec<u32>,
    /// Greedy continuation, `continuation_tokens` long (EOS does not stop it).
    pub greedy: Vec<u32>,
    /// Top-k per teacher-forced position: after the prompt, then after each greedy token but
    /// the last (`continuation_tokens` entries).
    pub teacher_forced: Vec<TopLogits>,
}

/// `baselines/reference/<model>.json`.
pub fn reference_path(root: &Path, model: &str) -> PathBuf {
    root.join("baselines")
        .join("reference")
        .join(format!("{model}.json"))
}

/// Loads and sanity-checks a reference file; every inconsistency names the file and the field.
pub fn load_reference(path: &Path) -> Result<Reference> {
    let r: Reference = read_json(path)?;
    let bad = |m: String| Error::msg(format!("{}: {m}", path.display()));
    if r.prompts.is_empty() {
        return Err(bad("no prompts".into()));
    }
    for p in &r.prompts {
        let n = r.continuation_tokens as usize;
        if p.token_ids.is_empty() {
            return Err(bad(format!("prompts[{}].token_ids is empty", p.name)));
        }
        if p.greedy.len() != n {
            return Err(bad(format!(
                "prompts[{}].greedy has {} tokens, continuation_tokens is {n}",
                p.name,
                p.greedy.len()
            )));
        }
        if p.teacher_forced.len() != n {
            return Err(bad(format!(
                "prompts[{}].teacher_forced has {} positions, continuation_tokens is {n}",
                p.name,
                p.teacher_forced.len()
            )));
        }
        if let Some(i) = p
            .teacher_forced
            .iter()
            .position(|t| t.ids.is_empty() || t.ids.len() != t.logits.len())
        {
            return Err(bad(format!(
                "prompts[{}].teacher_forced[{i}]: ids and logits must be non-empty and of equal length",
                p.name
            )));
        }
    }
    Ok(r)
}

impl Reference {
    /// Prompts for `ref-greedy`.
    pub fn greedy_prompts(&self) -> Vec<Prompt> {
        self.prompts
            .iter()
            .map(|p| Prompt {
                name: p.name.clone(),
                token_ids: p.token_ids.clone(),
                forced_token_ids: Vec::new(),
            })
            .collect()
    }

    /// Prompts for `ref-tf`: the greedy continuation but its last token is fed back.
    pub fn teacher_forced_prompts(&self) -> Vec<Prompt> {
        self.prompts
            .iter()
            .map(|p| Prompt {
                name: p.name.clone(),
                token_ids: p.token_ids.clone(),
                forced_token_ids: p.greedy[..p.greedy.len() - 1].to_vec(),
            })
            .collect()
    }
}

/// The minimum teacher-forced top-1 agreement for an engine, by what it computes with, and why.
///
/// Which positions can flip is a property of the reference: of its 256 positions, 12 have a top-2
/// logit margin below 0.1, 35 below 0.25 and 70 below 0.5 (`baselines/reference/smollm2-135m.json`).
///
/// - F32 dense: the same weights as the reference in the same precision; only summation order
///   differs (measured logit error 3e-5), so nothing but an exact tie may flip: 99 % (the
///   issue's target). Measured: 100 % (candle, PyTorch).
/// - BF16/F16: 8 (BF16) or 11 (F16) mantissa bits through 30 layers move logits by up to ~1.4
///   (measured), which can flip the low-margin positions. Measured: 98.8 % (PyTorch BF16, CPU).
/// - Q4_1 GGUF: the weights equal the reference's exactly (the reference is the dequantized
///   GGUF), but llama.cpp-style kernels quantize activations to 8 bits (Q8_1) for the dot
///   products: logit error up to ~1.1. Measured: 96.1 % (candle), 97.3 % (llama.cpp).
///
/// The levels the volume derives from the shipped Q4_1: Q8_0 and F16 keep its weights within a
/// small rounding (90 %; measured 97-100 %), Q4_0 rounds them a second time to 16 levels and
/// loses a third of the positions (gated at 55 %; measured 64.8-66.0 %).
///
/// Half precision and Q4_1 are gated at 90 %: at most 25 flips, fewer than the 35 positions whose
/// margin is below 0.25, so a correct engine with logit noise of that size passes with room, while
/// a wrong engine (a transposed weight, a wrong RoPE layout or norm epsilon) flips positions with
/// large margins too and lands far below; the test's mock that is wrong at 1 position in 8
/// (87.5 %) fails every gate.
pub fn gate_for(format: WeightFormat, dtype: Dtype) -> (f64, &'static str) {
    match (format, dtype) {
        (_, Dtype::F32) => (
            0.99,
            "f32 dense: same weights and precision as the reference",
        ),
        (_, Dtype::Bf16 | Dtype::F16) => (0.90, "half precision: near-ties flip"),
        (_, Dtype::Q4_1) => (0.90, "q4_1: reference weights, 8-bit quantized activations"),
        (_, Dtype::Q8_0) => (
            0.90,
            "q8_0 derived from the q4_1: reference weights within 1/254 of each block's range",
        ),
        (_, Dtype::Q4_0) => (
            0.55,
            "q4_0 derived from the q4_1: the reference weights rounded a second time to 16 symmetric levels per block (measured: 66.0 % llama.cpp, 64.8 % candle); a broken engine lands far lower",
        ),
    }
}

/// Compares one target's correctness scenarios with the reference. `None` when the result has
/// neither correctness scenario.
pub fn evaluate(result: &TargetResult, reference: &Reference) -> Option<Correctness> {
    let report = &result.report;
    let tf = report
        .scenarios
        .iter()
        .find(|s| s.id == TEACHER_FORCED_SCENARIO);
    let greedy = report.scenarios.iter().find(|s| s.id == GREEDY_SCENARIO);
    if tf.is_none() && greedy.is_none() {
        return None;
    }
    let format = report.engine.weight_format;
    let dtype = dtype_of(&report.engine.dtype);
    let (gate, why) = dtype
        .map(|d| gate_for(format, d))
        .unwrap_or((1.0, "unknown dtype: exact agreement required"));
    let mut c = Correctness {
        target: result.target.clone(),
        dtype: report.engine.dtype.clone(),
        top1_agree: 0,
        positions: 0,
        top1_agreement: 0.0,
        gate,
        gate_reason: why.to_string(),
        greedy_prefix_tokens: 0,
        greedy_tokens: 0,
        greedy_full_matches: 0,
        max_abs_top1_logit_error: None,
        prompts: Vec::new(),
        errors: Vec::new(),
    };
    for s in [tf, greedy].into_iter().flatten() {
        if let Some(e) = &s.error {
            c.errors.push(format!("scenario {}: {e}", s.id));
        }
    }
    if tf.is_none() {
        c.errors.push(format!(
            "the run has no `{TEACHER_FORCED_SCENARIO}` scenario"
        ));
    }
    if greedy.is_none() {
        c.errors
            .push(format!("the run has no `{GREEDY_SCENARIO}` scenario"));
    }
    for rp in &reference.prompts {
        let n = reference.continuation_tokens;
        let mut pc = PromptCorrectness {
            prompt: rp.name.clone(),
            top1_agree: 0,
            positions: n,
            greedy_prefix: 0,
            greedy_tokens: n,
        };
        c.positions += n;
        c.greedy_tokens += n;
        if let Some(tf) = tf {
            score_teacher_forced(&mut c, &mut pc, tf, rp, n);
        }
        if let Some(g) = greedy {
            score_greedy(&mut c, &mut pc, g, rp, n);
        }
        c.top1_agree += pc.top1_agree;
        c.greedy_prefix_tokens += pc.greedy_prefix;
        c.prompts.push(pc);
    }
    c.top1_agreement = if c.positions == 0 {
        0.0
    } else {
        c.top1_agree as f64 / c.positions as f64
    };
    Some(c)
}

/// Teacher-forced top-1 agreement and the logit error of one prompt.
fn score_teacher_forced(
    c: &mut Correctness,
    pc: &mut PromptCorrectness,
    tf: &ScenarioReport,
    rp: &ReferencePrompt,
    n: u32,
) {
    match tf.prompts.iter().find(|p| p.prompt == rp.name) {
        None => c
            .errors
            .push(format!("{}: prompt `{}` missing", tf.id, rp.name)),
        Some(p) => {
            if p.generated_token_ids.len() != n as usize {
                c.errors.push(format!(
                    "{}: prompt `{}` has {} positions, expected {n}",
                    tf.id,
                    rp.name,
                    p.generated_token_ids.len()
                ));
            }
            for (i, (&got, want)) in p
                .generated_token_ids
                .iter()
                .zip(&rp.teacher_forced)
                .enumerate()
            {
                if got == want.ids[0] {
                    pc.top1_agree += 1;
                }
                // (an engine's report may list fewer logits than ids: it says nothing then)
                let engine_logit = p.top_logits.get(i).and_then(|t| {
                    t.ids
                        .iter()
                        .position(|&id| id == want.ids[0])
                        .and_then(|k| t.logits.get(k).copied())
                });
                if let Some(l) = engine_logit {
                    let err = (l as f64 - want.logits[0] as f64).abs();
                    let m = c.max_abs_top1_logit_error.get_or_insert(0.0);
                    *m = m.max(err);
                }
            }
        }
    }
}

/// The greedy prefix of one prompt that matches the reference.
fn score_greedy(
    c: &mut Correctness,
    pc: &mut PromptCorrectness,
    g: &ScenarioReport,
    rp: &ReferencePrompt,
    n: u32,
) {
    match g.prompts.iter().find(|p| p.prompt == rp.name) {
        None => c
            .errors
            .push(format!("{}: prompt `{}` missing", g.id, rp.name)),
        Some(p) => {
            if p.generated_token_ids.len() != n as usize {
                c.errors.push(format!(
                    "{}: prompt `{}` generated {} tokens, expected exactly {n}",
                    g.id,
                    rp.name,
                    p.generated_token_ids.len()
                ));
            }
            pc.greedy_prefix = p
                .generated_token_ids
                .iter()
                .zip(&rp.greedy)
                .take_while(|(a, b)| a == b)
                .count() as u32;
            if pc.greedy_prefix == n {
                c.greedy_full_matches += 1;
            }
        }
    }
}

fn dtype_of(s: &str) -> Option<Dtype> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

/// Gates every result against the reference. Results of synthetic models are not compared.
/// A result without the correctness scenarios fails: `check` must not pass on what it did not see.
pub fn check(results: &[TargetResult], reference: &Reference) -> Vec<Finding> {
    let mut out = Vec::new();
    for r in results {
        let f = |metric: &str, verdict, detail: String| Finding {
            target: r.target.clone(),
            scenario: "ref".into(),
            prompt: "*".into(),
            metric: metric.into(),
            verdict,
            detail,
        };
        let Some(c) = evaluate(r, reference) else {
            out.push(f(
                "correctness",
                Verdict::MissingResult,
                "the run has no correctness scenarios (run `cargo xtask bench` with the default scenarios or `--scenario ref`)".into(),
            ));
            continue;
        };
        out.push(f(
            "top1_agreement",
            if c.top1_agreement >= c.gate {
                Verdict::Pass
            } else {
                Verdict::Incorrect
            },
            format!(
                "{}/{} = {:.1} % (gate >= {:.0} %: {}); max |logit error| on the reference top-1 {}",
                c.top1_agree,
                c.positions,
                c.top1_agreement * 100.0,
                c.gate * 100.0,
                c.gate_reason,
                c.max_abs_top1_logit_error
                    .map(|e| format!("{e:.2e}"))
                    .unwrap_or_else(|| "-".into())
            ),
        ));
        out.push(f(
            "greedy_prefix",
            Verdict::Pass,
            format!(
                "{}/{} tokens match before the first difference; {}/{} prompts identical (reported, not gated: after a near-tie flip greedy paths legitimately part)",
                c.greedy_prefix_tokens,
                c.greedy_tokens,
                c.greedy_full_matches,
                c.prompts.len()
            ),
        ));
        out.push(if c.errors.is_empty() {
            f(
                "token_counts",
                Verdict::Pass,
                "every prompt has exactly the reference's token counts".into(),
            )
        } else {
            f("token_counts", Verdict::TokenMismatch, c.errors.join("; "))
        });
    }
    out
}
