//! Stored expectations under `baselines/<profile>/<model>/` and the comparison of a run against
//! them (and of one run against another: `reproduce`).
//!
//! Per target and scenario, two files:
//! - `<engine>.<variant>.<scenario>.tokens.snap`: the exact token ids and counts, in insta's
//!   snapshot format, so `cargo insta review` works on them and the end-to-end test asserts them
//!   with `insta::assert_snapshot!`;
//! - `<engine>.<variant>.<scenario>.metrics.json`: the measured numbers (medians, or the mean of
//!   the run medians under `--repeat`) with their 95 % intervals.
//!
//! A number is compared criterion-style ([`classify`]): too noisy (robust CV within one run, CV
//! of run medians across runs, above `max_cv`) is not comparable; a shift within the metric's
//! threshold passes; a larger shift whose interval still overlaps the baseline's is noise; only a
//! larger shift with separate intervals is a regression (or an improvement).
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
    /// The hardware profile and model they were measured with (absent in older baselines: the
    /// directory names them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// sha256 of the model's weight files.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_sha256: BTreeMap<String, String>,
    /// The measurement profile and how many runs of the plan the numbers summarise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<usize>,
    /// prompt -> metric -> median (the mean of the run medians for several runs).
    pub medians: BTreeMap<String, BTreeMap<String, f64>>,
    /// prompt -> metric -> 95 % interval of that value (absent in older baselines).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub intervals: BTreeMap<String, BTreeMap<String, [f64; 2]>>,
}

/// One metric of one prompt as a run measured it: over one run of the plan, or over several.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    /// The median (one run) or the mean of the run medians (several).
    pub value: f64,
    /// Its 95 % interval: distribution-free for a median, Student's t across runs.
    pub interval: Option<[f64; 2]>,
    /// Robust CV within the run, or CV of the run medians across runs.
    pub noise: f64,
    pub runs: usize,
    /// Samples of the first run.
    pub samples: usize,
}

impl Observed {
    fn noise_name(&self) -> &'static str {
        if self.runs > 1 {
            "CV across runs"
        } else {
            "robust CV"
        }
    }
}

/// `metric` of `prompt` in `scenario` over the runs of one target (first run first).
pub fn observe(
    runs: &[&TargetResult],
    scenario: &str,
    prompt: &str,
    metric: Metric,
) -> Option<Observed> {
    let summaries: Vec<&crate::stats::Summary> = runs
        .iter()
        .filter_map(|r| {
            r.stats
                .iter()
                .find(|s| s.id == scenario)?
                .prompts
                .iter()
                .find(|p| p.prompt == prompt)?
                .get(metric)
        })
        .collect();
    let first = summaries.first()?;
    let medians: Vec<f64> = summaries.iter().map(|s| s.median).collect();
    Some(match crate::stats::between_runs(&medians) {
        Some(spread) => Observed {
            value: spread.mean,
            interval: Some([spread.ci95_low, spread.ci95_high]),
            noise: spread.cv,
            runs: spread.runs,
            samples: first.n,
        },
        None => Observed {
            value: first.median,
            interval: first.median_ci95,
            noise: first.noise(),
            runs: 1,
            samples: first.n,
        },
    })
}

/// The results of a run grouped by target, in run order: each target's first run first, then
/// its repetitions.
pub fn by_target(results: &[TargetResult]) -> Vec<(String, Vec<&TargetResult>)> {
    let mut groups: Vec<(String, Vec<&TargetResult>)> = Vec::new();
    for r in results {
        match groups.iter_mut().find(|(t, _)| *t == r.target) {
            Some((_, v)) => v.push(r),
            None => groups.push((r.target.clone(), vec![r])),
        }
    }
    for (_, v) in &mut groups {
        v.sort_by_key(|r| r.run());
    }
    groups
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
    out.push_str(&load_snapshot(sc));
    if let Some(e) = &sc.error {
        out.push_str(&format!("error: {e}\n"));
    }
    Some(out)
}

/// The machine-independent part of a load scenario: S2's outputs at every batch size (its batches
/// are fixed), S3's at C = 1 and how every level's requests ended. S3's batches at C > 1 form by
/// timing, so an engine whose arithmetic depends on the batch (native Q4_1's four-token kernel) is
/// not expected to repeat those ids exactly; the engines' tests compare them with C = 1 instead.
fn load_snapshot(sc: &lab_protocol::ScenarioReport) -> String {
    let mut out = String::new();
    let concurrent = sc.kind == lab_protocol::ScenarioKind::ConcurrentLoad;
    for p in &sc.points {
        if concurrent {
            let ended = |f: fn(&lab_protocol::RequestStatus) -> bool| {
                p.requests.iter().filter(|r| f(&r.status)).count()
            };
            out.push_str(&format!(
                "C {}: {} requests, {} completed, {} failed, {} refused\n",
                p.level,
                p.requests.len(),
                ended(|s| matches!(s, lab_protocol::RequestStatus::Completed)),
                ended(|s| matches!(s, lab_protocol::RequestStatus::Failed { .. })),
                ended(|s| matches!(s, lab_protocol::RequestStatus::Refused { .. })),
            ));
            if p.level != 1 {
                continue;
            }
        } else {
            out.push_str(&format!("batch {}:\n", p.level));
        }
        for o in &p.outputs {
            let ids: Vec<String> = o.token_ids.iter().map(u32::to_string).collect();
            out.push_str(&format!("{}: {}\n", o.prompt, ids.join(" ")));
        }
        if let Some(e) = &p.error {
            out.push_str(&format!("error: {e}\n"));
        }
    }
    out
}

/// Body of an insta `.snap` file (everything after the second `---` line).
pub fn read_snapshot_body(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::msg(format!(
            "{}: not UTF-8 text (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
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

#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Relative shift a metric may show without being a change (unless overridden below).
    pub tolerance: f64,
    /// Per-metric thresholds instead of `tolerance` (`decode_tok_per_s` -> 0.20).
    pub thresholds: BTreeMap<Metric, f64>,
    pub max_cv: f64,
    /// Compare only the deterministic part (token ids and counts).
    pub exact_only: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            tolerance: DEFAULT_TOLERANCE,
            thresholds: BTreeMap::new(),
            max_cv: DEFAULT_MAX_CV,
            exact_only: false,
        }
    }
}

impl CheckOptions {
    pub fn threshold(&self, metric: Metric) -> f64 {
        self.thresholds
            .get(&metric)
            .copied()
            .unwrap_or(self.tolerance)
    }
}

/// Parses `METRIC=FRACTION` (`decode_tok_per_s=0.2`).
pub fn parse_threshold(spec: &str) -> Result<(Metric, f64)> {
    let bad = || {
        Error::msg(format!(
            "--threshold {spec}: expected METRIC=FRACTION with METRIC one of {} (e.g. decode_tok_per_s=0.2)",
            Metric::CHECKED.map(Metric::name).join(", ")
        ))
    };
    let (m, v) = spec.split_once('=').ok_or_else(bad)?;
    let metric = Metric::from_name(m)
        .filter(|m| Metric::CHECKED.contains(m))
        .ok_or_else(bad)?;
    let v: f64 = v.parse().map_err(|_| bad())?;
    if !(v > 0.0 && v.is_finite()) {
        return Err(bad());
    }
    Ok((metric, v))
}

/// What a target's numbers are expected to be: read from a baseline directory, or taken from an
/// earlier run (`reproduce`).
pub trait Expectations {
    /// The token snapshot body of `target` / `scenario`, or why there is none.
    fn tokens(&self, stem: &str, scenario: &str) -> Result<std::result::Result<String, String>>;
    /// The metrics of `target` / `scenario`, or why there are none.
    fn metrics(
        &self,
        stem: &str,
        scenario: &str,
    ) -> Result<std::result::Result<MetricsBaseline, String>>;
}

/// The files of one baseline directory (`baselines/<profile>/<model>/`).
pub struct BaselineDir<'a>(pub &'a Path);

impl Expectations for BaselineDir<'_> {
    fn tokens(&self, stem: &str, scenario: &str) -> Result<std::result::Result<String, String>> {
        let snap = snap_path(self.0, stem, scenario);
        if !snap.exists() {
            return Ok(Err(format!("{} does not exist", snap.display())));
        }
        read_snapshot_body(&snap).map(Ok)
    }

    fn metrics(
        &self,
        stem: &str,
        scenario: &str,
    ) -> Result<std::result::Result<MetricsBaseline, String>> {
        let mpath = metrics_path(self.0, stem, scenario);
        if !mpath.exists() {
            return Ok(Err(format!("{} does not exist", mpath.display())));
        }
        read_json(&mpath).map(Ok)
    }
}

/// An earlier run's results as expectations.
pub struct EarlierRun(pub BTreeMap<(String, String), (String, MetricsBaseline)>);

impl EarlierRun {
    pub fn of(results: &[TargetResult]) -> EarlierRun {
        let mut m = BTreeMap::new();
        for (target, runs) in by_target(results) {
            let stem = stem_of(&target);
            for sc in &runs[0].stats {
                let tokens = token_snapshot(runs[0], &sc.id).unwrap_or_default();
                m.insert(
                    (stem.clone(), sc.id.clone()),
                    (tokens, metrics_baseline(&runs, &sc.id)),
                );
            }
        }
        EarlierRun(m)
    }
}

impl Expectations for EarlierRun {
    fn tokens(&self, stem: &str, scenario: &str) -> Result<std::result::Result<String, String>> {
        Ok(self
            .0
            .get(&(stem.to_string(), scenario.to_string()))
            .map(|(t, _)| t.clone())
            .ok_or_else(|| format!("the earlier run has no {stem} {scenario}")))
    }

    fn metrics(
        &self,
        stem: &str,
        scenario: &str,
    ) -> Result<std::result::Result<MetricsBaseline, String>> {
        Ok(self
            .0
            .get(&(stem.to_string(), scenario.to_string()))
            .map(|(_, m)| m.clone())
            .ok_or_else(|| format!("the earlier run has no {stem} {scenario}")))
    }
}

/// Compares results with `baselines/<profile>/<model>` (`dir`).
pub fn check(results: &[TargetResult], dir: &Path, opts: CheckOptions) -> Result<Vec<Finding>> {
    compare(results, &BaselineDir(dir), &opts)
}

/// Compares results (one run of the plan or several) with `expected`: token ids exactly (and
/// across the runs), then every checked metric of every prompt with [`classify`].
pub fn compare(
    results: &[TargetResult],
    expected: &dyn Expectations,
    opts: &CheckOptions,
) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    for (target, runs) in by_target(results) {
        let stem = stem_of(&target);
        for sc in &runs[0].stats {
            let f = |prompt: &str, metric: &str, verdict, detail: String| Finding {
                target: target.clone(),
                scenario: sc.id.clone(),
                prompt: prompt.to_string(),
                metric: metric.to_string(),
                verdict,
                detail,
            };
            // Exact part: against the expectation, and every run against the first.
            for (verdict, detail) in token_verdicts(&runs, &sc.id, expected.tokens(&stem, &sc.id)?)
            {
                findings.push(f("*", "token_ids", verdict, detail));
            }
            if opts.exact_only {
                continue;
            }
            let base = match expected.metrics(&stem, &sc.id)? {
                Ok(b) => b,
                Err(why) => {
                    findings.push(f("*", "metrics", Verdict::MissingBaseline, why));
                    continue;
                }
            };
            for pr in &sc.prompts {
                for metric in Metric::CHECKED {
                    let Some(want) = base
                        .medians
                        .get(&pr.prompt)
                        .and_then(|m| m.get(metric.name()))
                        .copied()
                    else {
                        findings.push(f(
                            &pr.prompt,
                            metric.name(),
                            Verdict::MissingBaseline,
                            format!("no {metric} for {} in the baseline", pr.prompt),
                        ));
                        continue;
                    };
                    let want_interval = base
                        .intervals
                        .get(&pr.prompt)
                        .and_then(|m| m.get(metric.name()))
                        .copied();
                    let Some(got) = observe(&runs, &sc.id, &pr.prompt, metric) else {
                        findings.push(f(
                            &pr.prompt,
                            metric.name(),
                            Verdict::MissingResult,
                            "the run has no samples".into(),
                        ));
                        continue;
                    };
                    let (verdict, detail) = classify(metric, want, want_interval, &got, opts);
                    findings.push(f(&pr.prompt, metric.name(), verdict, detail));
                }
            }
        }
    }
    Ok(findings)
}

/// The token ids of a target's first run against the expected snapshot (or why there is none),
/// then every later run of the plan against the first.
fn token_verdicts(
    runs: &[&TargetResult],
    scenario: &str,
    expected: std::result::Result<String, String>,
) -> Vec<(Verdict, String)> {
    let actual = token_snapshot(runs[0], scenario).unwrap_or_default();
    let mut out = vec![match expected {
        Err(why) => (Verdict::MissingBaseline, why),
        Ok(e) if e.trim_end() == actual.trim_end() => {
            (Verdict::Pass, "identical token ids and counts".into())
        }
        Ok(e) => (Verdict::TokenMismatch, first_difference(&e, &actual)),
    }];
    for r in &runs[1..] {
        let other = token_snapshot(r, scenario).unwrap_or_default();
        if other.trim_end() != actual.trim_end() {
            out.push((
                Verdict::TokenMismatch,
                format!(
                    "run {} differs from run 1: {}",
                    r.run(),
                    first_difference(&actual, &other)
                ),
            ));
        }
    }
    out
}

/// One number against its expectation (see the module docs).
pub fn classify(
    metric: Metric,
    expected: f64,
    expected_interval: Option<[f64; 2]>,
    got: &Observed,
    opts: &CheckOptions,
) -> (Verdict, String) {
    let rel = (got.value - expected) / expected;
    let threshold = opts.threshold(metric);
    let mut detail = format!(
        "{} {:.4} vs {expected:.4} ({:+.1} %, threshold {:.0} %), {} {:.1} %",
        if got.runs > 1 {
            "mean of run medians"
        } else {
            "median"
        },
        got.value,
        rel * 100.0,
        threshold * 100.0,
        got.noise_name(),
        got.noise * 100.0
    );
    if got.runs > 1 {
        detail += &format!(" over {} runs", got.runs);
    }
    if got.noise > opts.max_cv {
        detail += &format!(": above {:.1} %, not comparable", opts.max_cv * 100.0);
        return (Verdict::TooNoisy, detail);
    }
    if rel.abs() <= threshold {
        let v = if rel == 0.0 {
            Verdict::Pass
        } else {
            Verdict::WithinNoise
        };
        return (v, detail);
    }
    if let (Some([a, b]), Some([c, d])) = (got.interval, expected_interval) {
        if a <= d && c <= b {
            detail += ": beyond the threshold, but the 95 % intervals overlap";
            return (Verdict::WithinNoise, detail);
        }
    }
    let better = if metric.higher_is_better() {
        rel > 0.0
    } else {
        rel < 0.0
    };
    let v = if better {
        Verdict::Improved
    } else {
        Verdict::Regressed
    };
    (v, detail)
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

/// The expectation a target's runs make: medians (or means of run medians) and intervals of
/// every checked metric of every prompt of `scenario`.
fn metrics_baseline(runs: &[&TargetResult], scenario: &str) -> MetricsBaseline {
    let first = runs[0];
    let mut medians = BTreeMap::new();
    let mut intervals = BTreeMap::new();
    let prompts = first
        .stats
        .iter()
        .find(|s| s.id == scenario)
        .map(|s| s.prompts.as_slice())
        .unwrap_or_default();
    for p in prompts {
        let mut m = BTreeMap::new();
        let mut iv = BTreeMap::new();
        for k in Metric::CHECKED {
            if let Some(o) = observe(runs, scenario, &p.prompt, k) {
                m.insert(k.name().to_string(), o.value);
                if let Some(i) = o.interval {
                    iv.insert(k.name().to_string(), i);
                }
            }
        }
        medians.insert(p.prompt.clone(), m);
        intervals.insert(p.prompt.clone(), iv);
    }
    MetricsBaseline {
        target: first.target.clone(),
        scenario: scenario.to_string(),
        run_id: first.run_id.clone(),
        git_rev: first.provenance.git_rev.clone(),
        cpu_model: first.provenance.host.cpu_model.clone(),
        profile: Some(first.profile.clone()),
        model: Some(first.model.name.clone()),
        model_sha256: first.model.sha256.clone(),
        measure: None,
        runs: Some(runs.len()),
        medians,
        intervals,
    }
}

/// The baseline directory of a run: `<root>/<profile>/<model>`.
pub fn dir_for(root: &Path, profile: &str, model: &str) -> PathBuf {
    root.join(profile).join(model)
}

/// The file that makes two weight maps (file name → sha256) other weights: one both record with
/// different hashes, or, when they share no file, any; `None` when either is empty or every
/// shared file agrees. Files the volume gained since (derived GGUF levels) do not make the model
/// another.
fn other_weights(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Option<String> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let mut shared = a.iter().filter(|(f, _)| b.contains_key(*f)).peekable();
    if shared.peek().is_none() {
        return a.keys().next().cloned();
    }
    shared.find(|(f, h)| b[*f] != **h).map(|(f, _)| f.clone())
}

/// Refuses to compare with baselines of another machine or other weights: every metrics file of
/// `dir` that records a hardware profile, a model or its sha256 must match the run's (every
/// weight file both record has the same sha256). One line naming the file.
pub fn ensure_comparable(
    dir: &Path,
    profile: &str,
    model: &str,
    model_sha256: &BTreeMap<String, String>,
) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let path = e.path();
        if !path.to_string_lossy().ends_with(".metrics.json") {
            continue;
        }
        let b: MetricsBaseline = read_json(&path)?;
        if let Some(p) = b.profile.as_deref().filter(|p| *p != profile) {
            return Err(Error::msg(format!(
                "{}: accepted on hardware profile `{}`, this run is `{profile}`: numbers from other hardware are not comparable",
                path.display(),
                lab_protocol::one_line(p)
            )));
        }
        if let Some(m) = b.model.as_deref().filter(|m| *m != model) {
            return Err(Error::msg(format!(
                "{}: accepted for model `{}`, this run measured `{model}`: refusing to compare different models",
                path.display(),
                lab_protocol::one_line(m)
            )));
        }
        if let Some(file) = other_weights(&b.model_sha256, model_sha256) {
            return Err(Error::msg(format!(
                "{}: accepted with other weights of `{model}` ({file}: sha256 differs): refusing to compare different models",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Writes the run's token snapshots and numbers (with intervals; over every run of the plan
/// under `--repeat`) as the new baselines of `dir`. `measure` is the run's measurement profile.
pub fn accept(results: &[TargetResult], dir: &Path, measure: Option<&str>) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut written = Vec::new();
    for (target, runs) in by_target(results) {
        let stem = stem_of(&target);
        for sc in &runs[0].stats {
            let snap = snap_path(dir, &stem, &sc.id);
            write_snapshot(&snap, &token_snapshot(runs[0], &sc.id).unwrap_or_default())?;
            written.push(snap);
            let mut base = metrics_baseline(&runs, &sc.id);
            base.measure = measure.map(str::to_string);
            let mpath = metrics_path(dir, &stem, &sc.id);
            write_json_atomic(&mpath, &base)?;
            written.push(mpath);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::fixture::fixture;

    #[test]
    fn baselines_of_another_machine_or_other_weights_are_refused() {
        let (_, mut r) = fixture();
        r[0].model.sha256 = [("model.gguf".to_string(), "aa".repeat(32))].into();
        let dir = std::env::temp_dir().join(format!("lab-baseline-ok-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        accept(&r, &dir, Some("standard")).unwrap();
        let sha = r[0].model.sha256.clone();
        ensure_comparable(&dir, "cpu-fixture", "smollm2-135m", &sha).unwrap();
        let err = |profile: &str, model: &str, sha: &BTreeMap<String, String>| {
            ensure_comparable(&dir, profile, model, sha)
                .unwrap_err()
                .to_string()
        };
        assert!(err("cpu-other", "smollm2-135m", &sha)
            .contains("accepted on hardware profile `cpu-fixture`, this run is `cpu-other`"));
        assert!(err("cpu-fixture", "tiny", &sha)
            .contains("accepted for model `smollm2-135m`, this run measured `tiny`"));
        let other = [("model.gguf".to_string(), "bb".repeat(32))].into();
        assert!(err("cpu-fixture", "smollm2-135m", &other)
            .contains("other weights of `smollm2-135m` (model.gguf: sha256 differs)"));
        // A file the volume gained since the baseline (a derived level) is the same model.
        let mut grown = sha.clone();
        grown.insert("model-q8_0.gguf".into(), "cc".repeat(32));
        ensure_comparable(&dir, "cpu-fixture", "smollm2-135m", &grown).unwrap();
        let unrelated = [("model.safetensors".to_string(), "aa".repeat(32))].into();
        assert!(err("cpu-fixture", "smollm2-135m", &unrelated).contains("other weights"));
        // What accept wrote: the run's numbers, their intervals and where they came from.
        let b: MetricsBaseline = read_json(&dir.join("mock.hf-f32.s1.metrics.json")).unwrap();
        assert_eq!(b.measure.as_deref(), Some("standard"));
        assert_eq!(
            (b.runs, b.profile.as_deref()),
            (Some(1), Some("cpu-fixture"))
        );
        assert_eq!(b.medians["p10"]["decode_tok_per_s"], 20.0);
        assert_eq!(b.intervals["p10"]["decode_tok_per_s"], [20.0, 25.0]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
