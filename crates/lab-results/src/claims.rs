//! Published claims, checked against a run. The claims live in `claims/claims.json` (each with
//! its source and the condition it was made under); every report evaluates each one its run can
//! speak to: confirmed, refuted, inconclusive (the 95 % interval straddles the claimed bound) or
//! not measurable here (why).
//!
//! An engine is represented by its fastest target in the run (by the claim's metric at its
//! longest S1 prompt); ratios are taken at the longest S1 prompt both measured
//! ([`super::ratio::s1_ratio`]) with the conservative interval of [`super::ratio::Ratio`].

use crate::ScenarioId;
use std::path::Path;

use serde::Deserialize;

use super::ratio::{engine_of, interval, s1_prompts, s1_ratio, s1_summary, Ratio};
use crate::metric::Metric;
use crate::results::{RunManifest, TargetResult};
use crate::{Error, Result};

/// The committed claims file (also what `--claims` replaces).
pub const BUILTIN: &str = include_str!("../../../claims/claims.json");
pub const BUILTIN_NAME: &str = "claims/claims.json";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimsFile {
    #[serde(default)]
    pub about: String,
    pub claims: Vec<Claim>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    pub id: String,
    pub claim: String,
    pub source: String,
    pub condition: String,
    pub check: Check,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Check {
    /// Each engine's `metric` ÷ the baseline engine's is at least `at_least`.
    Ratio {
        metric: String,
        device: String,
        engines: Vec<String>,
        baseline: String,
        at_least: f64,
    },
    /// Each engine's `metric` lies in `[min, max]`.
    Range {
        metric: String,
        device: String,
        engines: Vec<String>,
        min: f64,
        max: f64,
    },
    /// Every engine of a tier beats every engine of the tiers after it.
    Order {
        metric: String,
        device: String,
        tiers: Vec<Vec<String>>,
    },
    /// Needs an analysis beyond the scenarios (sampling overhead, KV cache on/off).
    Analysis { analysis: String },
}

/// The claims with every field checked: a claims file that does not load is one error naming
/// the file and the claim.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub file: String,
    pub claims: Vec<Claim>,
}

impl Claims {
    pub fn builtin() -> Claims {
        Claims::parse(BUILTIN, BUILTIN_NAME).expect("the committed claims file loads (tested)")
    }

    pub fn load(path: &Path) -> Result<Claims> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Claims::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, file: &str) -> Result<Claims> {
        let f: ClaimsFile = serde_json::from_str(text).map_err(|e| {
            let e = lab_protocol::one_line(&e.to_string());
            Error::msg(format!("{file}: not a claims file: {e}"))
        })?;
        let engines = crate::ENGINES;
        let mut seen = std::collections::BTreeSet::new();
        for c in &f.claims {
            let bad = |what: String| {
                let what = lab_protocol::one_line(&format!("claim `{}`: {what}", c.id));
                Err(Error::msg(format!("{file}: {what}")))
            };
            if !seen.insert(c.id.clone()) {
                return bad("the id is used twice".into());
            }
            let (metric, device, named): (Option<&str>, Option<&str>, Vec<&String>) = match &c.check
            {
                Check::Ratio {
                    metric,
                    device,
                    engines,
                    baseline,
                    at_least,
                } => {
                    if !(at_least.is_finite() && *at_least > 0.0) {
                        return bad(format!("at_least {at_least} must be a positive number"));
                    }
                    (
                        Some(metric),
                        Some(device),
                        engines.iter().chain([baseline]).collect(),
                    )
                }
                Check::Range {
                    metric,
                    device,
                    engines,
                    min,
                    max,
                } => {
                    if !(min.is_finite() && max.is_finite() && min <= max) {
                        return bad(format!("range [{min}, {max}] is not a range"));
                    }
                    (Some(metric), Some(device), engines.iter().collect())
                }
                Check::Order {
                    metric,
                    device,
                    tiers,
                } => {
                    if tiers.len() < 2 {
                        return bad("an order needs at least two tiers".into());
                    }
                    (Some(metric), Some(device), tiers.iter().flatten().collect())
                }
                Check::Analysis { analysis } => {
                    if !matches!(analysis.as_str(), "sampling-overhead" | "kv-cache") {
                        return bad(format!(
                            "unknown analysis `{analysis}` (known: sampling-overhead, kv-cache)"
                        ));
                    }
                    (None, None, Vec::new())
                }
            };
            if let Some(m) = metric {
                if Metric::from_name(m).is_none() {
                    let known: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
                    return bad(format!(
                        "unknown metric `{m}` (known: {})",
                        known.join(", ")
                    ));
                }
            }
            if let Some(d) = device {
                if !matches!(d, "cpu" | "cuda" | "any") {
                    return bad(format!("unknown device `{d}` (cpu, cuda or any)"));
                }
            }
            for e in named {
                if !engines.contains(&e.as_str()) {
                    return bad(format!("unknown engine `{e}`"));
                }
            }
        }
        Ok(Claims {
            file: file.into(),
            claims: f.claims,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Confirmed,
    Refuted,
    /// The interval straddles the claimed bound.
    Inconclusive,
    NotMeasurable(String),
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Confirmed => "confirmed",
            Outcome::Refuted => "refuted",
            Outcome::Inconclusive => "inconclusive",
            Outcome::NotMeasurable(_) => "not measurable here",
        }
    }
}

/// One claim's verdict on one run, with what was measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub claim: Claim,
    pub outcome: Outcome,
    pub measured: String,
}

fn device_matches(want: &str, run_device: &str) -> bool {
    want == "any" || run_device == want || run_device.starts_with(&format!("{want}:"))
}

/// An engine's fastest (best by `metric`) target in the run's first repetition.
fn best_of<'a>(
    results: &'a [TargetResult],
    engine: &str,
    metric: Metric,
) -> Option<&'a TargetResult> {
    let value = |r: &TargetResult| {
        let (p, _) = s1_prompts(r).into_iter().max_by_key(|(_, n)| *n)?;
        let v = s1_summary(r, &p, metric)?.median;
        Some(if metric.higher_is_better() { v } else { -v })
    };
    results
        .iter()
        .filter(|r| r.run() == 1 && engine_of(&r.target) == engine)
        .filter_map(|r| Some((r, value(r)?)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(r, _)| r)
}

/// `a` better than `b` by `metric`, as a ratio where > 1 means better.
fn better_ratio(a: &TargetResult, b: &TargetResult, metric: Metric) -> Option<Ratio> {
    let (_, r) = s1_ratio(a, b, metric)?;
    Some(if metric.higher_is_better() {
        r
    } else {
        Ratio {
            value: 1.0 / r.value,
            low: 1.0 / r.high,
            high: 1.0 / r.low,
        }
    })
}

pub fn evaluate(
    claims: &Claims,
    manifest: &RunManifest,
    results: &[TargetResult],
) -> Vec<Evaluation> {
    claims
        .claims
        .iter()
        .map(|c| {
            let (outcome, measured) = evaluate_one(c, manifest, results);
            Evaluation {
                claim: c.clone(),
                outcome,
                measured,
            }
        })
        .collect()
}

fn not(why: String) -> (Outcome, String) {
    (Outcome::NotMeasurable(why), "-".into())
}

fn evaluate_one(c: &Claim, manifest: &RunManifest, results: &[TargetResult]) -> (Outcome, String) {
    let run_device = manifest.settings.device.to_string();
    let run_device = run_device.as_str();
    let (metric, device) = match &c.check {
        Check::Analysis { analysis } => return evaluate_analysis(analysis, results),
        Check::Ratio { metric, device, .. }
        | Check::Range { metric, device, .. }
        | Check::Order { metric, device, .. } => (Metric::from_name(metric), device),
    };
    let Some(metric) = metric else {
        return not("unknown metric".into());
    };
    if !device_matches(device, run_device) {
        return not(format!(
            "the claim is about {device}; this run ran on {run_device}"
        ));
    }
    if !results
        .iter()
        .any(|r| r.stats.iter().any(|s| s.id == ScenarioId::S1))
    {
        return not("the run has no S1 results".into());
    }
    match &c.check {
        Check::Ratio {
            engines,
            baseline,
            at_least,
            ..
        } => ratio_claim(results, metric, engines, baseline, *at_least),
        Check::Range {
            engines, min, max, ..
        } => range_claim(results, metric, engines, *min, *max),
        Check::Order { tiers, .. } => order_claim(results, metric, tiers),
        Check::Analysis { .. } => unreachable!("handled above"),
    }
}

/// At least `at_least` × the baseline engine (every engine's interval).
fn ratio_claim(
    results: &[TargetResult],
    metric: Metric,
    engines: &[String],
    baseline: &str,
    at_least: f64,
) -> (Outcome, String) {
    let Some(base) = best_of(results, baseline, metric) else {
        return not(format!("no {baseline} target with S1 {metric} in this run"));
    };
    let mut parts = Vec::new();
    let mut ratios = Vec::new();
    for e in engines {
        let Some(t) = best_of(results, e, metric) else {
            continue;
        };
        if let Some(r) = better_ratio(t, base, metric) {
            parts.push(format!("{} {}", t.target, r.text()));
            ratios.push(r);
        }
    }
    if ratios.is_empty() {
        return not(format!("none of {} ran S1 in this run", engines.join(", ")));
    }
    let measured = format!("vs {}: {}", base.target, parts.join("; "));
    let outcome = if ratios.iter().all(|r| r.low >= at_least) {
        Outcome::Confirmed
    } else if ratios.iter().any(|r| r.high < at_least) {
        Outcome::Refuted
    } else {
        Outcome::Inconclusive
    };
    (outcome, measured)
}

/// Every engine's interval inside `[min, max]` at its longest S1 prompt.
fn range_claim(
    results: &[TargetResult],
    metric: Metric,
    engines: &[String],
    min: f64,
    max: f64,
) -> (Outcome, String) {
    let mut parts = Vec::new();
    let mut spans = Vec::new();
    for e in engines {
        let Some(t) = best_of(results, e, metric) else {
            continue;
        };
        let Some((p, _)) = s1_prompts(t).into_iter().max_by_key(|(_, n)| *n) else {
            continue;
        };
        let Some(s) = s1_summary(t, &p, metric) else {
            continue;
        };
        let (lo, hi) = interval(s);
        parts.push(format!(
            "{} {:.1} {} [{lo:.1}, {hi:.1}] at {p}",
            t.target,
            s.median,
            metric.unit()
        ));
        spans.push((lo, hi));
    }
    if spans.is_empty() {
        return not(format!("none of {} ran S1 in this run", engines.join(", ")));
    }
    let outcome = if spans.iter().all(|&(lo, hi)| lo >= min && hi <= max) {
        Outcome::Confirmed
    } else if spans.iter().any(|&(lo, hi)| hi < min || lo > max) {
        Outcome::Refuted
    } else {
        Outcome::Inconclusive
    };
    (outcome, parts.join("; "))
}

/// Every tier faster than every tier after it.
fn order_claim(
    results: &[TargetResult],
    metric: Metric,
    tiers: &[Vec<String>],
) -> (Outcome, String) {
    let present: Vec<Vec<&TargetResult>> = tiers
        .iter()
        .map(|tier| {
            tier.iter()
                .filter_map(|e| best_of(results, e, metric))
                .collect::<Vec<_>>()
        })
        .collect();
    // A claim about tiers needs every tier it names: an order of two of three is another claim.
    let absent: Vec<String> = tiers
        .iter()
        .zip(&present)
        .filter(|(_, p)| p.is_empty())
        .map(|(t, _)| t.join("/"))
        .collect();
    if !absent.is_empty() {
        return not(format!(
            "tier{} {} did not run S1 in this run",
            if absent.len() == 1 { "" } else { "s" },
            absent.join(", ")
        ));
    }
    let mut all_separate = true;
    let mut violated = Vec::new();
    for (i, upper) in present.iter().enumerate() {
        for lower in &present[i + 1..] {
            for a in upper {
                for b in lower {
                    match better_ratio(a, b, metric) {
                        Some(r) if r.low > 1.0 => {}
                        Some(r) if r.high < 1.0 => {
                            violated.push(format!("{} < {}", a.target, b.target))
                        }
                        _ => all_separate = false,
                    }
                }
            }
        }
    }
    let mut ranked: Vec<(&TargetResult, f64)> = present
        .iter()
        .flatten()
        .filter_map(|r| {
            let (p, _) = s1_prompts(r).into_iter().max_by_key(|(_, n)| *n)?;
            Some((*r, s1_summary(r, &p, metric)?.median))
        })
        .collect();
    ranked.sort_by(|a, b| {
        if metric.higher_is_better() {
            b.1.total_cmp(&a.1)
        } else {
            a.1.total_cmp(&b.1)
        }
    });
    let order = ranked
        .iter()
        .map(|(r, v)| format!("{} {v:.1}", r.target))
        .collect::<Vec<_>>()
        .join(" > ");
    let measured = if violated.is_empty() {
        order
    } else {
        format!("{order} (out of order: {})", violated.join(", "))
    };
    let outcome = if !violated.is_empty() {
        Outcome::Refuted
    } else if all_separate {
        Outcome::Confirmed
    } else {
        Outcome::Inconclusive
    };
    (outcome, measured)
}

/// The analysis claims: the KV cache at least 2× faster (the longest checkpoint of every target
/// that ran both), sampling under 1 % of a forward pass (every strategy of every target).
/// Confirmed / refuted need every / one interval wholly on one side of the bound.
fn evaluate_analysis(analysis: &str, results: &[TargetResult]) -> (Outcome, String) {
    use crate::analysis::{self, Outcome as A};
    let (bound, spans, cannot): (f64, Vec<(String, Ratio)>, Vec<String>) = match analysis {
        "kv-cache" => {
            let mut spans = Vec::new();
            let mut cannot = Vec::new();
            for (t, o) in analysis::of_targets(results, analysis::kv) {
                match o {
                    A::Rows(rows) => {
                        if let Some((row, r)) =
                            rows.last().and_then(|row| Some((row, row.speedup?)))
                        {
                            spans.push((format!("{t} {} at {} tokens", r.text(), row.tokens), r));
                        }
                    }
                    A::Unsupported(_) => cannot.push(format!("{t} cannot")),
                    A::Failed(_) => cannot.push(format!("{t} failed")),
                }
            }
            (2.0, spans, cannot)
        }
        _ => {
            let mut spans = Vec::new();
            let mut cannot = Vec::new();
            for (t, o) in analysis::of_targets(results, analysis::sampling) {
                match o {
                    A::Rows(rows) => {
                        let worst = rows
                            .iter()
                            .filter_map(|r| Some((r, r.share?)))
                            .max_by(|a, b| a.1.value.total_cmp(&b.1.value));
                        if let Some((row, r)) = worst {
                            let pct = Ratio {
                                value: r.value * 100.0,
                                low: r.low * 100.0,
                                high: r.high * 100.0,
                            };
                            spans.push((
                                format!(
                                    "{t} worst {} {:.2} % [{:.2}, {:.2}]",
                                    row.strategy, pct.value, pct.low, pct.high
                                ),
                                r,
                            ));
                        }
                    }
                    A::Unsupported(_) => cannot.push(format!("{t} cannot")),
                    A::Failed(_) => cannot.push(format!("{t} failed")),
                }
            }
            (0.01, spans, cannot)
        }
    };
    if spans.is_empty() {
        return not(format!(
            "the run has no {analysis} analysis results{}",
            if cannot.is_empty() {
                " (scenario `kv` or `sampling`)".to_string()
            } else {
                format!(": {}", cannot.join(", "))
            }
        ));
    }
    let mut measured: Vec<String> = spans.iter().map(|(s, _)| s.clone()).collect();
    measured.extend(cannot);
    let (all_ok, any_bad) = if analysis == "kv-cache" {
        (
            spans.iter().all(|(_, r)| r.low >= bound),
            spans.iter().any(|(_, r)| r.high < bound),
        )
    } else {
        (
            spans.iter().all(|(_, r)| r.high < bound),
            spans.iter().any(|(_, r)| r.low >= bound),
        )
    };
    let outcome = if any_bad {
        Outcome::Refuted
    } else if all_ok {
        Outcome::Confirmed
    } else {
        Outcome::Inconclusive
    };
    (outcome, measured.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_analysis_claims_are_judged_on_the_analyses() {
        let (m, results) = crate::results::fixture::fixture_engines();
        let claims = Claims::builtin();
        let of = |results: &[TargetResult], id: &str| {
            evaluate(&claims, &m, results)
                .into_iter()
                .find(|e| e.claim.id == id)
                .unwrap()
        };
        // Without the scenarios: not measurable, and said why.
        let e = of(&results, "kv-cache-2x");
        assert!(
            matches!(&e.outcome, Outcome::NotMeasurable(w) if w.contains("no kv-cache analysis")),
            "{e:?}"
        );
        // The fixture's analyses: the cache 29.7× at 70 tokens (confirmed); top-k takes 25 % of
        // a 2 ms decode step (refuted).
        let with: Vec<TargetResult> = results
            .iter()
            .map(|r| crate::results::fixture::with_analyses(r, false))
            .collect();
        let e = of(&with, "kv-cache-2x");
        assert_eq!(e.outcome, Outcome::Confirmed, "{e:?}");
        assert!(e.measured.contains("at 70 tokens"), "{}", e.measured);
        let e = of(&with, "sampling-overhead-1pct");
        assert_eq!(e.outcome, Outcome::Refuted, "{e:?}");
        assert!(
            e.measured.contains("worst top-k 50 25.00 %"),
            "{}",
            e.measured
        );
        // An engine that cannot is named, the others still judge the claim.
        let mut mixed = with.clone();
        mixed[0] = crate::results::fixture::with_analyses(&results[0], true);
        let e = of(&mixed, "kv-cache-2x");
        assert_eq!(e.outcome, Outcome::Confirmed);
        assert!(
            e.measured.contains(&format!("{} cannot", mixed[0].target)),
            "{}",
            e.measured
        );
    }

    #[test]
    fn the_committed_claims_load() {
        let c = Claims::builtin();
        assert!(c.claims.len() >= 6);
        assert!(c
            .claims
            .iter()
            .all(|c| !c.source.is_empty() && !c.condition.is_empty()));
    }

    #[test]
    fn bad_claims_are_one_error_naming_file_and_claim() {
        let one = |check: &str| {
            format!(
                r#"{{"claims":[{{"id":"x","claim":"c","source":"s","condition":"k","check":{check}}}]}}"#
            )
        };
        let cases = [
            (
                one(
                    r#"{"kind":"range","metric":"tok_per_s","device":"cpu","engines":["native"],"min":1,"max":2}"#,
                ),
                "unknown metric `tok_per_s`",
            ),
            (
                one(
                    r#"{"kind":"ratio","metric":"decode_tok_per_s","device":"cpu","engines":["vllm"],"baseline":"pytorch","at_least":2}"#,
                ),
                "unknown engine `vllm`",
            ),
            (
                one(
                    r#"{"kind":"ratio","metric":"decode_tok_per_s","device":"tpu","engines":["native"],"baseline":"pytorch","at_least":2}"#,
                ),
                "unknown device `tpu`",
            ),
            (
                one(
                    r#"{"kind":"ratio","metric":"decode_tok_per_s","device":"cpu","engines":["native"],"baseline":"pytorch","at_least":0}"#,
                ),
                "at_least 0",
            ),
            (one(r#"{"kind":"vibes"}"#), "unknown variant `vibes`"),
            (
                one(r#"{"kind":"analysis","analysis":"x"}"#),
                "unknown analysis",
            ),
        ];
        for (text, want) in cases {
            let e = Claims::parse(&text, "my-claims.json")
                .unwrap_err()
                .to_string();
            assert!(e.contains("my-claims.json") && e.contains(want), "{e}");
        }
    }

    #[test]
    fn claims_are_judged_on_the_fixture() {
        use crate::results::fixture::{fixture, fixture_engines, scaled};
        let (manifest, results) = fixture_engines();
        let evals = evaluate(&Claims::builtin(), &manifest, &results);
        let by = |evals: &[Evaluation], id: &str| {
            let e = evals.iter().find(|e| e.claim.id == id).unwrap().clone();
            (e.outcome, e.measured)
        };
        // The fixture runs on the CPU: a CUDA claim is not measurable, with the reason.
        match by(&evals, "candle-cuda-5x-pytorch").0 {
            Outcome::NotMeasurable(why) => {
                assert!(why.contains("cuda") && why.contains("cpu"), "{why}")
            }
            o => panic!("{o:?}"),
        }
        match by(&evals, "kv-cache-2x").0 {
            Outcome::NotMeasurable(why) => assert!(why.contains("kv-cache"), "{why}"),
            o => panic!("{o:?}"),
        }
        // native = 3 × mock, PyTorch = 0.5 × mock: 6× the baseline, every interval clear of 2×.
        let (o, measured) = by(&evals, "rust-2x-pytorch");
        assert_eq!(o, Outcome::Confirmed, "{measured}");
        assert!(
            measured.starts_with("vs pytorch:hf-f32: native:gguf-q4_1 6.00×"),
            "{measured}"
        );
        // llama.cpp (4×) > native (3×) > PyTorch (0.5×).
        let (o, measured) = by(&evals, "engine-hierarchy");
        assert_eq!(o, Outcome::Confirmed, "{measured}");
        assert!(
            measured.starts_with("llamacpp:gguf-q4_1") && measured.contains("> pytorch:hf-f32"),
            "{measured}"
        );
        // Without PyTorch the claim's last tier is missing: not measurable, never confirmed.
        let no_pytorch: Vec<TargetResult> = results
            .iter()
            .filter(|r| !r.target.starts_with("pytorch"))
            .cloned()
            .collect();
        let (o, measured) = by(
            &evaluate(&Claims::builtin(), &manifest, &no_pytorch),
            "engine-hierarchy",
        );
        assert!(
            matches!(&o, Outcome::NotMeasurable(why) if why.contains("pytorch") && why.contains("did not run")),
            "{o:?} {measured}"
        );

        // The same run with the native engine at 1.5× PyTorch: refuted, and out of order
        // against llama.cpp once it is faster than it.
        let (_, base) = fixture();
        let mut slow = results.clone();
        slow[2] = scaled(&base[0], "native:gguf-q4_1", 0.75);
        let evals = evaluate(&Claims::builtin(), &manifest, &slow);
        assert_eq!(by(&evals, "rust-2x-pytorch").0, Outcome::Refuted);
        let mut fast = results.clone();
        fast[2] = scaled(&base[0], "native:gguf-q4_1", 8.0);
        let (o, measured) = by(
            &evaluate(&Claims::builtin(), &manifest, &fast),
            "engine-hierarchy",
        );
        assert_eq!(o, Outcome::Refuted);
        assert!(
            measured.contains("out of order: llamacpp:gguf-q4_1 < native:gguf-q4_1"),
            "{measured}"
        );

        // A range is confirmed only with the whole interval inside it.
        let decode = |r: &TargetResult| {
            let (p, _) = s1_prompts(r).into_iter().max_by_key(|(_, n)| *n).unwrap();
            s1_summary(r, &p, Metric::DecodeTokPerS).unwrap().clone()
        };
        let d = decode(&results[2]);
        let (lo, hi) = interval(&d);
        let range = |min: f64, max: f64| {
            let text = format!(
                r#"{{"claims":[{{"id":"r","claim":"c","source":"s","condition":"k","check":{{"kind":"range","metric":"decode_tok_per_s","device":"cpu","engines":["native"],"min":{min},"max":{max}}}}}]}}"#
            );
            let c = Claims::parse(&text, "t.json").unwrap();
            evaluate(&c, &manifest, &results).remove(0).outcome
        };
        assert_eq!(range(lo * 0.9, hi * 1.1), Outcome::Confirmed);
        assert_eq!(range(hi * 1.1, hi * 2.0), Outcome::Refuted);
        if hi > lo {
            assert_eq!(range((lo + hi) / 2.0, hi * 2.0), Outcome::Inconclusive);
        }
    }
}
