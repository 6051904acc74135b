//! Stored expectations under `baselines/<profile>/` and the comparison of a run against them.
//!
//! Per target and scenario, two files:
//! - `<engine>.<variant>.<scenario>.tokens.snap`: the exact token ids and counts, in insta's
//!   snapshot format, so `cargo insta review` works on them and the end-to-end test asserts them
//!   with `insta::assert_snapshot!`;
//! - `<engine>.<variant>.<scenario>.metrics.json`: medians of the measured numbers, compared
//!   within a relative tolerance (5 % by default).
//!
//! A run never rewrites them: only `cargo xtask check --accept` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::findings::{Finding, Verdict};
use crate::metric::Metric;
use crate::results::{read_json, write_atomic, write_json_atomic, TargetResult};
use crate::{Error, Result};

pub const DEFAULT_TOLERANCE: f64 = 0.05;
pub const DEFAULT_MAX_CV: f64 = 0.05;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsBaseline {
    pub target: String,
    pub scenario: String,
    /// Run the numbers were accepted from.
    pub run_id: String,
    pub git_rev: String,
    pub cpu_model: String,
    /// prompt -> metric -> median.
    pub medians: BTreeMap<String, BTreeMap<String, f64>>,
}

pub fn snapshot_name(target_stem: &str, scenario: &str) -> String {
    format!("{target_stem}.{scenario}.tokens")
}

fn metrics_path(dir: &Path, target_stem: &str, scenario: &str) -> PathBuf {
    dir.join(format!("{target_stem}.{scenario}.metrics.json"))
}

fn snap_path(dir: &Path, target_stem: &str, scenario: &str) -> PathBuf {
    dir.join(format!("{}.snap", snapshot_name(target_stem, scenario)))
}

/// `candle:gguf-q4_1` -> `candle.gguf-q4_1`.
pub fn stem_of(target_label: &str) -> String {
    target_label.replacen(':', ".", 1)
}

/// The deterministic part of a result, as text: prompt and generated token counts and ids.
pub fn token_snapshot(result: &TargetResult, scenario: &str) -> Option<String> {
    let sc = result.report.scenarios.iter().find(|s| s.id == scenario)?;
    let mut out = String::new();
    for p in &sc.prompts {
        out.push_str(&format!(
            "{}: {} prompt tokens -> {} new tokens{}\n",
            p.prompt,
            p.prompt_tokens,
            p.generated_token_ids.len(),
            if p.deterministic {
                ""
            } else {
                " (non-deterministic across iterations)"
            }
        ));
        let ids: Vec<String> = p.generated_token_ids.iter().map(u32::to_string).collect();
        out.push_str(&ids.join(" "));
        out.push('\n');
    }
    if let Some(e) = &sc.error {
        out.push_str(&format!("error: {e}\n"));
    }
    Some(out)
}

/// Body of an insta `.snap` file (everything after the second `---` line).
pub fn read_snapshot_body(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut parts = text.splitn(3, "---\n");
    let (_, _, body) = (parts.next(), parts.next(), parts.next());
    body.map(|b| b.to_string()).ok_or_else(|| {
        Error::msg(format!(
            "{}: not an insta snapshot (no `---` header)",
            path.display()
        ))
    })
}

fn write_snapshot(path: &Path, body: &str) -> Result<()> {
    let text =
        format!("---\nsource: cargo xtask check --accept\nexpression: token ids\n---\n{body}");
    write_atomic(path, text.as_bytes())
}

#[derive(Debug, Clone, Copy)]
pub struct CheckOptions {
    pub tolerance: f64,
    pub max_cv: f64,
    /// Compare only the deterministic part (token ids and counts).
    pub exact_only: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            tolerance: DEFAULT_TOLERANCE,
            max_cv: DEFAULT_MAX_CV,
            exact_only: false,
        }
    }
}

/// Compares results with `baselines/<profile>` (`dir`).
pub fn check(results: &[TargetResult], dir: &Path, opts: CheckOptions) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    for r in results {
        let stem = stem_of(&r.target);
        for sc in &r.stats {
            let f = |prompt: &str, metric: &str, verdict, detail: String| Finding {
                target: r.target.clone(),
                scenario: sc.id.clone(),
                prompt: prompt.to_string(),
                metric: metric.to_string(),
                verdict,
                detail,
            };
            // Exact part.
            let snap = snap_path(dir, &stem, &sc.id);
            let actual = token_snapshot(r, &sc.id).unwrap_or_default();
            if !snap.exists() {
                findings.push(f(
                    "*",
                    "token_ids",
                    Verdict::MissingBaseline,
                    format!("{} does not exist", snap.display()),
                ));
            } else {
                let expected = read_snapshot_body(&snap)?;
                if expected.trim_end() == actual.trim_end() {
                    findings.push(f(
                        "*",
                        "token_ids",
                        Verdict::Pass,
                        "identical token ids and counts".into(),
                    ));
                } else {
                    findings.push(f(
                        "*",
                        "token_ids",
                        Verdict::TokenMismatch,
                        first_difference(&expected, &actual),
                    ));
                }
            }
            if opts.exact_only {
                continue;
            }
            // Measured part.
            let mpath = metrics_path(dir, &stem, &sc.id);
            if !mpath.exists() {
                findings.push(f(
                    "*",
                    "metrics",
                    Verdict::MissingBaseline,
                    format!("{} does not exist", mpath.display()),
                ));
                continue;
            }
            let base: MetricsBaseline = read_json(&mpath)?;
            for pr in &sc.prompts {
                for metric in Metric::CHECKED {
                    let Some(expected) = base
                        .medians
                        .get(&pr.prompt)
                        .and_then(|m| m.get(metric.name()))
                        .copied()
                    else {
                        findings.push(f(
                            &pr.prompt,
                            metric.name(),
                            Verdict::MissingBaseline,
                            format!("no {metric} for {} in {}", pr.prompt, mpath.display()),
                        ));
                        continue;
                    };
                    let Some(summary) = pr.get(metric) else {
                        findings.push(f(
                            &pr.prompt,
                            metric.name(),
                            Verdict::MissingResult,
                            "the run has no samples".into(),
                        ));
                        continue;
                    };
                    findings.push(classify(
                        &pr.prompt,
                        metric,
                        expected,
                        summary.median,
                        summary.cv,
                        opts,
                        &f,
                    ));
                }
            }
        }
    }
    Ok(findings)
}

fn classify(
    prompt: &str,
    metric: Metric,
    expected: f64,
    actual: f64,
    cv: f64,
    opts: CheckOptions,
    f: &dyn Fn(&str, &str, Verdict, String) -> Finding,
) -> Finding {
    let rel = (actual - expected) / expected;
    let detail = format!(
        "median {actual:.4} vs baseline {expected:.4} ({:+.1} %), CV {:.1} %",
        rel * 100.0,
        cv * 100.0
    );
    if cv > opts.max_cv {
        return f(
            prompt,
            metric.name(),
            Verdict::TooNoisy,
            format!(
                "{detail}: CV above {:.1} %, not comparable",
                opts.max_cv * 100.0
            ),
        );
    }
    if rel.abs() <= opts.tolerance {
        let v = if rel == 0.0 {
            Verdict::Pass
        } else {
            Verdict::WithinNoise
        };
        return f(prompt, metric.name(), v, detail);
    }
    let better = if metric.higher_is_better() {
        rel > 0.0
    } else {
        rel < 0.0
    };
    f(
        prompt,
        metric.name(),
        if better {
            Verdict::Improved
        } else {
            Verdict::Regressed
        },
        detail,
    )
}

fn first_difference(expected: &str, actual: &str) -> String {
    for (i, (e, a)) in expected.lines().zip(actual.lines()).enumerate() {
        if e != a {
            return format!(
                "line {}: expected `{}`, got `{}`",
                i + 1,
                truncate(e),
                truncate(a)
            );
        }
    }
    format!(
        "expected {} lines, got {}",
        expected.lines().count(),
        actual.lines().count()
    )
}

fn truncate(s: &str) -> String {
    if s.len() > 80 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(80).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s.to_string()
    }
}

/// Writes the run's token snapshots and medians as the new baselines of `dir`.
pub fn accept(results: &[TargetResult], dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut written = Vec::new();
    for r in results {
        let stem = stem_of(&r.target);
        for sc in &r.stats {
            let snap = snap_path(dir, &stem, &sc.id);
            write_snapshot(&snap, &token_snapshot(r, &sc.id).unwrap_or_default())?;
            written.push(snap);
            let medians = sc
                .prompts
                .iter()
                .map(|p| {
                    let m = Metric::CHECKED
                        .iter()
                        .filter_map(|&k| p.get(k).map(|s| (k.name().to_string(), s.median)))
                        .collect();
                    (p.prompt.clone(), m)
                })
                .collect();
            let base = MetricsBaseline {
                target: r.target.clone(),
                scenario: sc.id.clone(),
                run_id: r.run_id.clone(),
                git_rev: r.provenance.git_rev.clone(),
                cpu_model: r.provenance.host.cpu_model.clone(),
                medians,
            };
            let mpath = metrics_path(dir, &stem, &sc.id);
            write_json_atomic(&mpath, &base)?;
            written.push(mpath);
        }
    }
    Ok(written)
}
