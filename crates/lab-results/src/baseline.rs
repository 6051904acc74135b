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
//! A number is compared with the evidence of what this machine resolves ([`crate::gate`]): its
//! alarm threshold is the larger of the tolerance and what A/A runs produce (from the gate
//! study's between-run spread, or the run's own repeats); a shift inside it is never a change,
//! a larger one is a regression (or an improvement); where the threshold is beyond
//! `max_threshold`, or there is no evidence at all, the verdict is "cannot judge on this
//! machine", with what would make it judgeable. A run's within-run noise (robust CV) only
//! refuses a disturbed run ("too noisy"); it says nothing about the drift between sessions.
//!
//! A run never rewrites them: only `cargo xtask check --accept` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::findings::{Finding, Verdict};
use crate::gate::{self, Evidence, Form, SpreadFile};
use crate::metric::Metric;
use crate::results::{read_json, write_atomic, write_json_atomic, TargetResult};
use crate::{Error, Result};

pub const DEFAULT_TOLERANCE: f64 = gate::DEFAULT_TOLERANCE;
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
    /// How the target ran (`native`, `podman`, `docker`; absent in older baselines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// The read bandwidth the run measured, GB/s (the normalised form's divisor; absent in older
    /// baselines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_bandwidth_gb_per_s: Option<f64>,
    /// What defined the numbers besides the engine ([`crate::scenario::settings_of`]: prompts,
    /// tokens, warm-ups, requests per level; absent in older baselines): a run measured with
    /// other settings is not judged against them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<String>,
    /// The largest share of CPU time the hypervisor took while the target ran in the accepted
    /// runs (absent in older baselines): beyond [`gate::MAX_STEAL_SHARE`] the baseline is not
    /// judged against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_steal_share: Option<f64>,
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
    /// Within-run robust CV above which a run was disturbed ("too noisy").
    pub max_cv: f64,
    /// The largest alarm threshold at which a number is judged ([`crate::gate`]).
    pub max_threshold: f64,
    /// What the gate study measured on this machine (`spread.json` beside the baselines);
    /// [`check`] reads it from the baseline directory when this is `None`.
    pub spread: Option<SpreadFile>,
    /// Compare only the deterministic part (token ids and counts).
    pub exact_only: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            tolerance: DEFAULT_TOLERANCE,
            thresholds: BTreeMap::new(),
            max_cv: DEFAULT_MAX_CV,
            max_threshold: gate::DEFAULT_MAX_THRESHOLD,
            spread: None,
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

/// Compares results with `baselines/<profile>/<model>` (`dir`), with the gate study's evidence
/// of `dir` (its `spread.json`) unless `opts` brings its own.
pub fn check(results: &[TargetResult], dir: &Path, mut opts: CheckOptions) -> Result<Vec<Finding>> {
    if opts.spread.is_none() {
        opts.spread = read_spread(dir)?;
    }
    compare(results, &BaselineDir(dir), &opts)
}

/// The gate study's evidence beside a profile's baselines, if it ran there.
pub fn read_spread(dir: &Path) -> Result<Option<SpreadFile>> {
    let path = dir.join(gate::SPREAD_FILE);
    if !path.exists() {
        return Ok(None);
    }
    read_json(&path).map(Some)
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
            let runtime_note = runtime_note(&base, runs[0]);
            let unjudgeable =
                settings_differ(&base, runs[0], &sc.id).or_else(|| disturbed_side(&base, &runs));
            if let Some(why) = unjudgeable {
                for pr in &sc.prompts {
                    for metric in Metric::CHECKED {
                        findings.push(f(
                            &pr.prompt,
                            metric.name(),
                            Verdict::CannotJudge,
                            why.clone(),
                        ));
                    }
                }
                continue;
            }
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
                    let Some(got) = observe(&runs, &sc.id, &pr.prompt, metric) else {
                        findings.push(f(
                            &pr.prompt,
                            metric.name(),
                            Verdict::MissingResult,
                            "the run has no samples".into(),
                        ));
                        continue;
                    };
                    let key = gate::key(&stem, &sc.id, &pr.prompt, metric.name());
                    let evidence = evidence_for(opts, &key, &got);
                    let bandwidths = Bandwidths {
                        baseline: base.read_bandwidth_gb_per_s,
                        run: bandwidth_of(&runs),
                    };
                    let (verdict, mut detail) = classify(
                        metric,
                        want,
                        &got,
                        base.runs.unwrap_or(1),
                        evidence.as_ref(),
                        bandwidths,
                        opts,
                    );
                    if let Some(note) = &runtime_note {
                        detail = format!("{note}; {detail}");
                    }
                    findings.push(f(&pr.prompt, metric.name(), verdict, detail));
                }
            }
        }
    }
    Ok(findings)
}

/// Says when the baseline was measured under another runtime (container or not) than the run.
fn runtime_note(base: &MetricsBaseline, run: &TargetResult) -> Option<String> {
    let then = base.runtime.as_deref()?;
    let now = run.runtime.as_ref().map(|r| r.kind.to_string())?;
    (then != now).then(|| format!("baseline measured under {then}, this run under {now}"))
}

/// What the gate knows of a number's spread: the study's, widened by the run's own repeats
/// when they spread more; the repeats alone (one session) when there is no study.
fn evidence_for(opts: &CheckOptions, key: &str, got: &Observed) -> Option<Evidence> {
    let stem = key.split('/').next().unwrap_or(key);
    let study = opts.spread.as_ref().and_then(|s| {
        let e = s.entries.get(key)?;
        Some(Evidence::from_study(e, s.floors.get(stem).copied()))
    });
    let repeats = (got.runs >= gate::MIN_RUNS).then(|| Evidence {
        cv: got.noise,
        runs: got.runs,
        form: Form::Raw,
        source: format!(
            "this run's {} repeats (one session: the drift between sessions is not in them)",
            got.runs
        ),
    });
    match (study, repeats) {
        (Some(s), Some(r)) if r.cv > s.cv => Some(Evidence {
            cv: r.cv,
            runs: r.runs,
            form: Form::Raw,
            source: format!("{}, wider than the {}", r.source, s.source),
        }),
        (Some(s), _) => Some(s),
        (None, r) => r,
    }
}

/// The read bandwidths the normalised form divides by.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bandwidths {
    pub baseline: Option<f64>,
    pub run: Option<f64>,
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

/// One number against its expectation (see the module docs): `expected` over `base_runs` runs,
/// `got` as the run measured it, judged in the evidence's form.
pub fn classify(
    metric: Metric,
    expected: f64,
    got: &Observed,
    base_runs: usize,
    evidence: Option<&Evidence>,
    bw: Bandwidths,
    opts: &CheckOptions,
) -> (Verdict, String) {
    let tolerance = opts.threshold(metric);
    let raw_rel = (got.value - expected) / expected;
    let mut detail = format!(
        "{} {:.4} vs {expected:.4} ({:+.1} %)",
        if got.runs > 1 {
            format!("mean of {} run medians", got.runs)
        } else {
            "median".to_string()
        },
        got.value,
        raw_rel * 100.0,
    );
    // A run disturbed within itself (enough samples to say so) is not comparable.
    if got.runs == 1 && got.samples >= MIN_NOISE_SAMPLES && got.noise > opts.max_cv {
        detail += &format!(
            "; {} {:.1} % above {:.1} %: the run was disturbed, not comparable",
            got.noise_name(),
            got.noise * 100.0,
            opts.max_cv * 100.0
        );
        return (Verdict::TooNoisy, detail);
    }
    let Some(ev) = evidence else {
        detail += "; cannot judge on this machine: no evidence of its between-run spread (run `cargo xtask gate-study` over 5 or more runs of this profile in different sessions, or bench with --repeat 5)";
        return (Verdict::CannotJudge, detail);
    };
    let higher = metric.higher_is_better();
    let (rel, form) = match (
        ev.form.apply(got.value, higher, bw.run),
        ev.form.apply(expected, higher, bw.baseline),
    ) {
        (Some(g), Some(e)) if ev.form != Form::Raw => ((g - e) / e, ev.form),
        _ => (raw_rel, Form::Raw),
    };
    if form != Form::Raw {
        detail += &format!(", {} {:+.1} %", form.name(), rel * 100.0);
    } else if ev.form != Form::Raw {
        detail += ", raw (a bandwidth is missing for the study's normalised form)";
    }
    let threshold = gate::alarm_threshold(tolerance, ev.cv, ev.runs, got.runs, base_runs);
    let detectable = gate::detectable_change(tolerance, ev.cv, ev.runs, got.runs, base_runs);
    detail += &format!(
        "; between-run CV {:.1} % ({}): alarm beyond ±{:.1} %, detects {:.1} % at 95 % power",
        ev.cv * 100.0,
        ev.source,
        threshold * 100.0,
        detectable * 100.0
    );
    // A requested tolerance wider than the ceiling is the user's to ask for.
    if threshold > opts.max_threshold.max(tolerance) {
        detail += &match gate::repeats_needed(ev.cv, ev.runs, opts.max_threshold) {
            Some(n) => format!(
                "; cannot judge on this machine at {:.0} %: needs --repeat {n} for the run and the baseline",
                opts.max_threshold * 100.0
            ),
            None => format!(
                "; cannot judge on this machine at {:.0} %: more than 20 runs a side would be needed",
                opts.max_threshold * 100.0
            ),
        };
        return (Verdict::CannotJudge, detail);
    }
    if rel.abs() <= tolerance {
        return (Verdict::Pass, detail);
    }
    if rel.abs() <= threshold {
        detail += ": beyond the tolerance, inside what A/A runs produce here";
        return (Verdict::WithinNoise, detail);
    }
    let better = if higher { rel > 0.0 } else { rel < 0.0 };
    let v = if better {
        Verdict::Improved
    } else {
        Verdict::Regressed
    };
    (v, detail)
}

/// Fewest samples of one run whose robust CV says anything about the run (nvbench's minimum
/// for a noise estimate).
pub const MIN_NOISE_SAMPLES: usize = 5;

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
        model_sha256: weights_read(&first.target)
            .map(|file| {
                first
                    .model
                    .sha256
                    .iter()
                    .filter(|(f, _)| f.as_str() == file)
                    .map(|(f, h)| (f.clone(), h.clone()))
                    .collect()
            })
            .unwrap_or_else(|| first.model.sha256.clone()),
        measure: None,
        runs: Some(runs.len()),
        runtime: first.runtime.as_ref().map(|r| r.kind.to_string()),
        read_bandwidth_gb_per_s: bandwidth_of(runs),
        settings: scenario_settings(first, scenario),
        cpu_steal_share: steal_of(runs),
        medians,
        intervals,
    }
}

/// The mean read bandwidth measured around the target's `runs` (the divisor of the normalised
/// form of their mean), `None` unless every run measured it.
pub fn bandwidth_of(runs: &[&TargetResult]) -> Option<f64> {
    let sum = runs
        .iter()
        .map(|r| r.read_bandwidth_gb_per_s())
        .sum::<Option<f64>>()?;
    (!runs.is_empty()).then(|| sum / runs.len() as f64)
}

/// The largest steal share recorded while the target ran in `runs`.
pub fn steal_of(runs: &[&TargetResult]) -> Option<f64> {
    runs.iter()
        .filter_map(|r| r.probe?.cpu_steal_share)
        .reduce(f64::max)
}

/// Says when either side of a comparison was measured disturbed ([`gate::MAX_STEAL_SHARE`]).
fn disturbed_side(base: &MetricsBaseline, runs: &[&TargetResult]) -> Option<String> {
    gate::disturbed_note(steal_of(runs), "this run's").or_else(|| {
        gate::disturbed_note(base.cpu_steal_share, "the baseline's")
            .map(|n| format!("{n} (run {}); accept one from a quieter run", base.run_id))
    })
}

/// [`crate::scenario::settings_of`] of `scenario` as `r` ran it.
fn scenario_settings(r: &TargetResult, scenario: &str) -> Option<String> {
    let s = r.report.scenarios.iter().find(|s| s.id == scenario)?;
    crate::scenario::settings_of(s)
}

/// Says when the baseline was measured with other settings than the run's scenario.
fn settings_differ(base: &MetricsBaseline, run: &TargetResult, scenario: &str) -> Option<String> {
    let then = base.settings.as_deref()?;
    let now = scenario_settings(run, scenario)?;
    (then != now).then(|| {
        format!("cannot judge: the baseline was measured with other settings ({then}), this run with {now}; accept a baseline of these settings")
    })
}

/// The weights file a target reads (`candle:gguf-q8_0` -> `model-q8_0.gguf`): what its baseline
/// is tied to by sha256. The configuration and tokenizer it reads too are not: a rewrite of
/// either that changes nothing (key order, a field added) must not orphan every baseline, and one
/// that changes the model's behaviour changes its token ids, which the snapshots compare
/// exactly. `None` for a variant this does not know (its baseline then records every file).
pub fn weights_read(target_label: &str) -> Option<&'static str> {
    use lab_protocol::Dtype;
    let (_, variant) = target_label.split_once(':')?;
    let dtype = |name: &str| {
        [
            Dtype::F32,
            Dtype::F16,
            Dtype::Bf16,
            Dtype::Q4_1,
            Dtype::Q8_0,
            Dtype::Q4_0,
        ]
        .into_iter()
        .find(|d| d.as_str() == name)
    };
    if let Some(d) = variant.strip_prefix("gguf-") {
        dtype(d)?.gguf_file()
    } else {
        variant.strip_prefix("hf-").and_then(dtype)?;
        Some("model.safetensors")
    }
}

/// The baseline directory of a run: `<root>/<profile>/<model>`.
pub fn dir_for(root: &Path, profile: &str, model: &str) -> PathBuf {
    root.join(profile).join(model)
}

/// The file that makes two weight maps (file name → sha256) other weights: the target's own
/// `weights` file when both record it, else any file both record with different hashes, or, when
/// they share no file, any; `None` when either is empty or what is compared agrees. Files the
/// volume gained since (derived GGUF levels) and, for a target whose weights file is known,
/// every other file (configuration, tokenizer: the token ids judge them) do not make the model
/// another.
fn other_weights(
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
    weights: Option<&str>,
) -> Option<String> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    // The target's own weights file, where both record it, is the whole question.
    if let Some((w, h)) = weights.and_then(|w| Some((w, a.get(w)?)).filter(|_| b.contains_key(w))) {
        return (b[w] != *h).then(|| w.to_string());
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
        if let Some(file) = other_weights(&b.model_sha256, model_sha256, weights_read(&b.target)) {
            return Err(Error::msg(format!(
                "{}: accepted with other weights of `{model}` ({}: sha256 differs): refusing to compare different models",
                path.display(),
                lab_protocol::one_line(&file)
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
        // The target reads the safetensors; the GGUF is another target's file.
        r[0].model.sha256 = [
            ("model.safetensors".to_string(), "aa".repeat(32)),
            ("model.gguf".to_string(), "dd".repeat(32)),
        ]
        .into();
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
        let other = [("model.safetensors".to_string(), "bb".repeat(32))].into();
        assert!(err("cpu-fixture", "smollm2-135m", &other)
            .contains("other weights of `smollm2-135m` (model.safetensors: sha256 differs)"));
        // The baseline is tied to the files its target reads: another file of the volume
        // changing (a re-quantized GGUF) does not orphan it.
        let b: MetricsBaseline = read_json(&dir.join("mock.hf-f32.s1.metrics.json")).unwrap();
        assert_eq!(
            b.model_sha256.keys().collect::<Vec<_>>(),
            ["model.safetensors"]
        );
        let mut requantized = sha.clone();
        requantized.insert("model.gguf".into(), "ee".repeat(32));
        // A rewritten configuration does not either (the token ids judge what it changes),
        // also against an older baseline that recorded the whole volume.
        let mut whole = b.clone();
        whole.model_sha256 = sha.clone();
        whole
            .model_sha256
            .insert("config.json".into(), "ab".repeat(32));
        write_json_atomic(&dir.join("mock.hf-f32.s1.metrics.json"), &whole).unwrap();
        requantized.insert("config.json".into(), "ff".repeat(32));
        ensure_comparable(&dir, "cpu-fixture", "smollm2-135m", &requantized).unwrap();
        write_json_atomic(&dir.join("mock.hf-f32.s1.metrics.json"), &b).unwrap();
        // A file the volume gained since the baseline (a derived level) is the same model.
        let mut grown = sha.clone();
        grown.insert("model-q8_0.gguf".into(), "cc".repeat(32));
        ensure_comparable(&dir, "cpu-fixture", "smollm2-135m", &grown).unwrap();
        let unrelated = [("model-q8_0.gguf".to_string(), "aa".repeat(32))].into();
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
        assert_eq!(b.read_bandwidth_gb_per_s, Some(20.0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_run_with_other_scenario_settings_is_not_judged_against_the_baseline() {
        let (_, mut r) = fixture();
        let dir = std::env::temp_dir().join(format!("lab-baseline-set-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        accept(&r, &dir, Some("budget")).unwrap();
        let b: MetricsBaseline = read_json(&dir.join("mock.hf-f32.s1.metrics.json")).unwrap();
        let settings = b.settings.clone().unwrap();
        assert!(settings.contains("warm-up"), "{settings}");
        let about = |findings: &[Finding]| {
            findings
                .iter()
                .filter(|f| f.scenario == "s1" && f.detail.contains("other settings"))
                .count()
        };
        let same = check(&r, &dir, CheckOptions::default()).unwrap();
        assert_eq!(about(&same), 0);
        // One warm-up fewer before a prompt: every S1 number is "cannot judge", none fails.
        let s1 = r[0]
            .report
            .scenarios
            .iter_mut()
            .find(|s| s.id == "s1")
            .unwrap();
        s1.prompts[0].warmup_iterations += 1;
        let other = check(&r, &dir, CheckOptions::default()).unwrap();
        let s1_numbers: Vec<&Finding> = other
            .iter()
            .filter(|f| f.scenario == "s1" && f.metric != "token_ids")
            .collect();
        assert!(!s1_numbers.is_empty());
        assert!(s1_numbers
            .iter()
            .all(|f| f.verdict == Verdict::CannotJudge && f.detail.contains(&settings)));
        assert_eq!(about(&other), s1_numbers.len());
        // An older baseline without settings is compared as before.
        let mut old = b.clone();
        old.settings = None;
        write_json_atomic(&dir.join("mock.hf-f32.s1.metrics.json"), &old).unwrap();
        assert_eq!(about(&check(&r, &dir, CheckOptions::default()).unwrap()), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_target_measured_while_the_hypervisor_took_the_cpu_is_not_judged() {
        use crate::provenance::Probe;
        let (_, mut r) = fixture();
        let dir = std::env::temp_dir().join(format!("lab-baseline-steal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let probe = |steal: f64| Probe {
            read_bandwidth_before_gb_per_s: Some(20.0),
            read_bandwidth_after_gb_per_s: Some(20.0),
            gemm_before_gflop_per_s: None,
            gemm_after_gflop_per_s: None,
            cpu_steal_share: Some(steal),
        };
        r[0].probe = Some(probe(0.004));
        accept(&r, &dir, Some("budget")).unwrap();
        let b: MetricsBaseline = read_json(&dir.join("mock.hf-f32.s1.metrics.json")).unwrap();
        assert_eq!(b.cpu_steal_share, Some(0.004));
        let stolen = |findings: &[Finding]| -> Vec<Finding> {
            findings
                .iter()
                .filter(|f| f.metric != "token_ids" && f.detail.contains("the hypervisor took"))
                .cloned()
                .collect()
        };
        assert!(stolen(&check(&r, &dir, CheckOptions::default()).unwrap()).is_empty());
        // The same numbers measured while 18 % was stolen: every number "cannot judge",
        // tokens still compared.
        r[0].probe = Some(probe(0.18));
        let now = check(&r, &dir, CheckOptions::default()).unwrap();
        let numbers = now.iter().filter(|f| f.metric != "token_ids").count();
        let s = stolen(&now);
        assert_eq!(s.len(), numbers);
        assert!(s.iter().all(|f| f.verdict == Verdict::CannotJudge
            && f.detail.contains("18.0 %")
            && f.detail.contains("this run's")));
        assert!(now
            .iter()
            .any(|f| f.metric == "token_ids" && f.verdict == Verdict::Pass));
        // A baseline accepted from a disturbed run is named, with its run.
        accept(&r, &dir, Some("budget")).unwrap();
        r[0].probe = Some(probe(0.004));
        let s = stolen(&check(&r, &dir, CheckOptions::default()).unwrap());
        assert_eq!(s.len(), numbers);
        assert!(s[0].detail.contains("the baseline's target") && s[0].detail.contains("(run "));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn repeats_are_normalised_by_the_mean_of_their_bandwidths() {
        use crate::provenance::Probe;
        let (_, r) = fixture();
        let at = |gb: Option<f64>| {
            let mut t = r[0].clone();
            t.probe = Some(Probe {
                read_bandwidth_before_gb_per_s: gb,
                read_bandwidth_after_gb_per_s: gb,
                gemm_before_gflop_per_s: None,
                gemm_after_gflop_per_s: None,
                cpu_steal_share: None,
            });
            t
        };
        let (a, b, mut none) = (at(Some(18.0)), at(Some(22.0)), at(None));
        none.provenance.read_bandwidth_gb_per_s = None;
        assert_eq!(bandwidth_of(&[&a, &b]), Some(20.0));
        assert_eq!(bandwidth_of(&[&a]), Some(18.0));
        assert_eq!(bandwidth_of(&[&a, &none]), None);
        assert_eq!(bandwidth_of(&[]), None);
    }

    #[test]
    fn the_weights_a_target_reads_come_from_its_variant() {
        assert_eq!(weights_read("candle:gguf-q8_0"), Some("model-q8_0.gguf"));
        assert_eq!(weights_read("llamacpp:gguf-q4_1"), Some("model.gguf"));
        assert_eq!(weights_read("pytorch:hf-bf16"), Some("model.safetensors"));
        assert_eq!(weights_read("x:onnx"), None);
        assert_eq!(weights_read("nolabel"), None);
    }

    fn observed(value: f64, runs: usize, samples: usize, noise: f64) -> Observed {
        Observed {
            value,
            interval: None,
            noise,
            runs,
            samples,
        }
    }

    fn study(cv: f64, form: Form) -> Evidence {
        Evidence {
            cv,
            runs: 31,
            form,
            source: "gate study over 6 runs (3 sessions)".into(),
        }
    }

    #[test]
    fn verdicts_come_from_the_evidence_of_what_this_machine_resolves() {
        let opts = CheckOptions::default();
        let m = Metric::DecodeTokPerS;
        let bw = Bandwidths::default();
        let v = |got: f64, ev: Option<&Evidence>| {
            classify(m, 100.0, &observed(got, 1, 10, 0.01), 1, ev, bw, &opts)
        };
        // No evidence: never a pass, never a change.
        let (verdict, detail) = v(70.0, None);
        assert_eq!(verdict, Verdict::CannotJudge);
        assert!(detail.contains("gate-study"), "{detail}");
        // σ 2 %: alarm at ±7.3 %; 4 % passes, 5.3 % is within noise, 8 % is a regression.
        let quiet = study(0.02, Form::Raw);
        assert_eq!(v(96.0, Some(&quiet)).0, Verdict::Pass);
        assert_eq!(v(94.7, Some(&quiet)).0, Verdict::WithinNoise);
        assert_eq!(v(92.0, Some(&quiet)).0, Verdict::Regressed);
        assert_eq!(v(108.0, Some(&quiet)).0, Verdict::Improved);
        // σ 12 %: a 30 % drop is not absorbed as noise: this machine cannot judge it.
        let noisy = study(0.12, Form::Raw);
        let (verdict, detail) = v(70.0, Some(&noisy));
        assert_eq!(verdict, Verdict::CannotJudge);
        assert!(detail.contains("needs --repeat 9"), "{detail}");
        // The same σ over 9 runs a side is judged, and the drop is found.
        let got = observed(70.0, 9, 10, 0.1);
        let (verdict, _) = classify(m, 100.0, &got, 9, Some(&noisy), bw, &opts);
        assert_eq!(verdict, Verdict::Regressed);
        // A disturbed run (robust CV over enough samples) is refused; two samples say nothing.
        let disturbed = observed(100.0, 1, 10, 0.2);
        let thin = observed(100.0, 1, 2, 0.0);
        assert_eq!(
            classify(m, 100.0, &disturbed, 1, Some(&quiet), bw, &opts).0,
            Verdict::TooNoisy
        );
        assert_eq!(
            classify(m, 100.0, &thin, 1, Some(&quiet), bw, &opts).0,
            Verdict::Pass
        );
        // Normalised by bandwidth: the machine was 20 % slower, and so was the engine.
        let per_bw = study(0.02, Form::PerBandwidth);
        let slow_day = Bandwidths {
            baseline: Some(10.0),
            run: Some(8.0),
        };
        let (verdict, detail) = classify(
            m,
            100.0,
            &observed(80.0, 1, 10, 0.01),
            1,
            Some(&per_bw),
            slow_day,
            &opts,
        );
        assert_eq!(verdict, Verdict::Pass, "{detail}");
        assert!(
            detail.contains("per GB/s of read bandwidth +0.0 %"),
            "{detail}"
        );
        // Without a bandwidth the raw number is judged, and the detail says so.
        let (verdict, detail) = v(80.0, Some(&per_bw));
        assert_eq!(verdict, Verdict::Regressed);
        assert!(detail.contains("raw (a bandwidth is missing"), "{detail}");
        // A latency's regression is a larger number.
        let (verdict, _) = classify(
            Metric::TtftMs,
            100.0,
            &observed(120.0, 1, 10, 0.01),
            1,
            Some(&quiet),
            bw,
            &opts,
        );
        assert_eq!(verdict, Verdict::Regressed);
    }
}
