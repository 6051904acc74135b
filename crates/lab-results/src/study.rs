//! The gate study over recorded runs of one hardware profile and model: every gated number's
//! between-run spread ([`crate::gate::spread_of`]), A/A and A/B trials judged by the gate's own rules
//! ([`crate::gate::trials`]), and what the gate can detect per target. Its [`SpreadFile`] is the
//! evidence `check` judges with.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::baseline::{bandwidth_of, by_target, observe, steal_of, stem_of};
use crate::gate::{self, Point, SpreadEntry, SpreadFile, StudyRules, Trials};
use crate::metric::Metric;
use crate::results::{RunManifest, TargetResult};

/// One run the study drew on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyRun {
    pub run_id: String,
    pub started_at: String,
    /// Measurement profile (`budget`, `standard`, …; `unrecorded` for runs before plans).
    pub measure: String,
    pub git_rev: String,
    pub git_dirty: bool,
    /// The runtimes its targets ran under (`native`, `podman`, …).
    pub runtime: String,
    pub read_bandwidth_gb_per_s: Option<f64>,
    /// The mean f32 GEMM speed probed around its targets (absent in runs before that probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gemm_gflop_per_s: Option<f64>,
    /// The largest share of CPU time the hypervisor took while one of its targets ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu_steal_share: Option<f64>,
    pub slowdown: Option<f64>,
}

/// One gated number's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyRow {
    pub target: String,
    pub scenario: String,
    pub prompt: String,
    pub metric: String,
    pub spread: SpreadEntry,
    /// The study's runs a side against as many: the alarm threshold and the minimum detectable
    /// change at 95 % power (σ raised to the target's floor).
    pub alarm: f64,
    pub detectable: f64,
    /// Runs a side that would make it judgeable at the study's `max_threshold` (1 when it is).
    pub repeats_needed: Option<usize>,
    /// Runs a side at which the study's slowdown is detected at 95 % power (`None`: more than
    /// 20; absent in studies before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs_to_detect: Option<usize>,
    pub trials: Trials,
}

/// The whole study (`study.json` of a gate-study run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Study {
    pub profile: String,
    pub model: String,
    pub tolerance: f64,
    pub max_threshold: f64,
    pub slowdown: f64,
    /// Fewest runs a spread was taken from.
    pub min_runs: usize,
    /// Runs on each side of a trial ([`StudyRules::runs_a_side`]; 1 in studies before it).
    #[serde(default = "one")]
    pub runs_a_side: usize,
    pub runs: Vec<StudyRun>,
    pub rows: Vec<StudyRow>,
    /// Every row's trials summed, and per target.
    pub totals: Trials,
    pub per_target: BTreeMap<String, Trials>,
    /// Per target, the floor of its numbers' σ ([`gate::floor_of`] of the rows' spreads).
    #[serde(default)]
    pub floors: BTreeMap<String, f64>,
}

impl Study {
    /// The evidence `check` reads (`spread.json`).
    pub fn spread_file(&self) -> SpreadFile {
        SpreadFile {
            profile: self.profile.clone(),
            model: self.model.clone(),
            runs: self
                .runs
                .iter()
                .filter(|r| r.slowdown.is_none())
                .map(|r| r.run_id.clone())
                .collect(),
            entries: self
                .rows
                .iter()
                .map(|r| {
                    (
                        gate::key(&stem_of(&r.target), &r.scenario, &r.prompt, &r.metric),
                        r.spread.clone(),
                    )
                })
                .collect(),
            floors: self.floors.iter().map(|(t, f)| (stem_of(t), *f)).collect(),
        }
    }
}

fn one() -> usize {
    1
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = values.collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The runtimes of a run's targets, as text (`native`, `podman`, `native,podman`).
fn runtimes(results: &[TargetResult]) -> String {
    let mut kinds: Vec<String> = results
        .iter()
        .map(|r| {
            r.runtime
                .as_ref()
                .map(|k| k.kind.to_string())
                .unwrap_or_else(|| "native".into())
        })
        .collect();
    kinds.sort();
    kinds.dedup();
    kinds.join(",")
}

/// (target, scenario, prompt or level, metric).
type Key = (String, String, String, Metric);
type Series = BTreeMap<Key, Vec<Point>>;

/// Gives every other target's point the same number of [`gate::CONTROL_TARGET`] in its run.
fn with_control(series: &mut Series) {
    let mut control: BTreeMap<(String, String, Metric, String), f64> = BTreeMap::new();
    for ((t, s, p, m), points) in series.iter() {
        if t == gate::CONTROL_TARGET {
            for q in points {
                control.insert((s.clone(), p.clone(), *m, q.run_id.clone()), q.value);
            }
        }
    }
    for ((t, s, p, m), points) in series.iter_mut() {
        if t != gate::CONTROL_TARGET {
            for q in points {
                let k = (s.clone(), p.clone(), *m, q.run_id.clone());
                q.control = control.get(&k).copied();
            }
        }
    }
}

/// One point per run of every gated number: (target, scenario, prompt, metric) -> points.
fn series_of(runs: &[(RunManifest, Vec<TargetResult>)]) -> Series {
    let mut series: Series = BTreeMap::new();
    for (m, results) in runs {
        let slowdown = m.settings.slowdown.unwrap_or(0.0);
        for (target, group) in by_target(results) {
            let steal = steal_of(&group);
            for sc in &group[0].stats {
                if crate::scenario::is_correctness_scenario(&sc.id) {
                    continue;
                }
                for p in &sc.prompts {
                    for metric in Metric::CHECKED {
                        let Some(o) = observe(&group, &sc.id, &p.prompt, metric) else {
                            continue;
                        };
                        series
                            .entry((target.clone(), sc.id.clone(), p.prompt.clone(), metric))
                            .or_default()
                            .push(Point {
                                run_id: m.run_id.clone(),
                                session: m.provenance.started_at.chars().take(10).collect(),
                                value: o.value,
                                bandwidth: bandwidth_of(&group),
                                control: None,
                                slowdown,
                                steal,
                            });
                    }
                }
            }
        }
    }
    series
}

/// The study of `runs` (each a manifest and its results; all of one profile and model, which
/// the caller selected), judged by `rules`.
pub fn study(
    profile: &str,
    model: &str,
    runs: &[(RunManifest, Vec<TargetResult>)],
    rules: &StudyRules,
) -> Study {
    let mut series = series_of(runs);
    with_control(&mut series);
    let mut by_target: BTreeMap<String, Vec<(Key, Vec<Point>)>> = BTreeMap::new();
    for (key, points) in series {
        by_target
            .entry(key.0.clone())
            .or_default()
            .push((key, points));
    }
    let mut rows = Vec::new();
    let mut totals = Trials::default();
    let mut per_target: BTreeMap<String, Trials> = BTreeMap::new();
    let mut floors = BTreeMap::new();
    for (target, numbers) in by_target {
        let spreads: Vec<Option<SpreadEntry>> = numbers
            .iter()
            .map(|((_, _, _, m), pts)| gate::spread_of(pts, m.higher_is_better(), rules.min_runs))
            .collect();
        let Some(floor) = gate::floor_of(spreads.iter().flatten().map(|e| e.cv).collect()) else {
            continue;
        };
        floors.insert(target.clone(), floor);
        let judged: Vec<(&[Point], bool)> = numbers
            .iter()
            .map(|((_, _, _, m), pts)| (pts.as_slice(), m.higher_is_better()))
            .collect();
        let trials = gate::target_trials(&judged, rules);
        for ((((_, scenario, prompt, metric), _), spread), trials) in
            numbers.into_iter().zip(spreads).zip(trials)
        {
            let Some(spread) = spread else { continue };
            totals.add(&trials);
            per_target.entry(target.clone()).or_default().add(&trials);
            let cv = spread.cv.max(floor);
            let (k, r) = (spread.runs, rules.runs_a_side.max(1));
            rows.push(StudyRow {
                alarm: gate::alarm_threshold(rules.tolerance, cv, k, r, r),
                detectable: gate::detectable_change(rules.tolerance, cv, k, r, r),
                repeats_needed: gate::repeats_needed(cv, k, rules.max_threshold),
                runs_to_detect: gate::runs_to_detect(rules.tolerance, cv, k, rules.slowdown),
                target: target.clone(),
                scenario,
                prompt,
                metric: metric.name().to_string(),
                spread,
                trials,
            });
        }
    }
    Study {
        profile: profile.to_string(),
        model: model.to_string(),
        tolerance: rules.tolerance,
        max_threshold: rules.max_threshold,
        slowdown: rules.slowdown,
        min_runs: rules.min_runs,
        runs_a_side: rules.runs_a_side.max(1),
        runs: study_runs(runs),
        rows,
        totals,
        per_target,
        floors,
    }
}

/// What the study says of each run it drew on.
fn study_runs(runs: &[(RunManifest, Vec<TargetResult>)]) -> Vec<StudyRun> {
    runs.iter()
        .map(|(m, results)| StudyRun {
            run_id: m.run_id.clone(),
            started_at: m.provenance.started_at.clone(),
            measure: m
                .plan
                .as_ref()
                .map(|p| p.measure.name().to_string())
                .unwrap_or_else(|| "unrecorded".into()),
            git_rev: m.provenance.git_rev.clone(),
            git_dirty: m.provenance.git_dirty,
            runtime: runtimes(results),
            read_bandwidth_gb_per_s: m.provenance.read_bandwidth_gb_per_s,
            gemm_gflop_per_s: mean(results.iter().filter_map(|r| r.probe?.gemm_gflop_per_s())),
            max_cpu_steal_share: steal_of(&results.iter().collect::<Vec<_>>()),
            slowdown: m.settings.slowdown,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::fixture::fixture;

    /// Runs of the fixture, one per scale: throughputs × the scale, latencies ÷ it.
    fn runs(scales: &[f64], slowdown: Option<f64>) -> Vec<(RunManifest, Vec<TargetResult>)> {
        let (m, r) = fixture();
        scales
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut m = m.clone();
                let mut r = r.clone();
                m.run_id = format!("run{i}{}", if slowdown.is_some() { "-slow" } else { "" });
                m.provenance.started_at = format!("2026-12-0{}T10:00:00Z", 1 + i % 3);
                m.settings.slowdown = slowdown;
                for st in r.iter_mut().flat_map(|t| t.stats.iter_mut()) {
                    for p in &mut st.prompts {
                        for (name, v) in p.metrics.iter_mut() {
                            // Faster throughput is a shorter latency.
                            match Metric::from_name(name).map(Metric::higher_is_better) {
                                Some(false) => v.median /= s,
                                _ => v.median *= s,
                            }
                        }
                    }
                }
                (m, r)
            })
            .collect()
    }

    #[test]
    fn a_study_of_quiet_runs_flags_nothing_and_finds_the_slowdown() {
        let mut all = runs(&[1.0, 1.004, 0.996, 1.002, 0.998], None);
        all.extend(runs(&[1.0 / 1.1], Some(0.1)));
        let rules = StudyRules {
            min_runs: 3,
            ..StudyRules::default()
        };
        let s = study("cpu-fixture", "smollm2-135m", &all, &rules);
        assert!(!s.rows.is_empty());
        assert_eq!(s.totals.aa_flagged, 0, "{:?}", s.totals);
        let unjudged: Vec<_> = s.rows.iter().filter(|r| r.trials.aa_unjudged > 0).collect();
        assert!(unjudged.is_empty(), "{unjudged:#?}");
        assert!(s.totals.aa_judged > 0);
        assert_eq!(s.totals.ab_detected, s.totals.ab_judged);
        assert_eq!(s.totals.real_ab_detected, s.totals.real_ab_judged);
        assert!(s.totals.real_ab_judged > 0);
        // Every row comes from the five unchanged runs over three sessions.
        assert!(s
            .rows
            .iter()
            .all(|r| r.spread.runs == 5 && r.spread.sessions == 3));
        let spread = s.spread_file();
        assert_eq!(spread.runs.len(), 5);
        assert!(spread
            .entries
            .keys()
            .any(|k| k == "mock.hf-f32/s1/p10/decode_tok_per_s"));
        assert_eq!(s.runs[5].slowdown, Some(0.1));
        assert_eq!(s.per_target.len(), 1);
    }

    #[test]
    fn a_study_with_several_runs_a_side_judges_means_and_says_what_it_needs() {
        let all = runs(&[1.0, 1.004, 0.996, 1.002, 0.998, 1.001, 0.999], None);
        let rules = StudyRules {
            min_runs: 3,
            runs_a_side: 2,
            ..StudyRules::default()
        };
        let s = study("cpu-fixture", "smollm2-135m", &all, &rules);
        assert_eq!(s.runs_a_side, 2);
        let t = &s.totals;
        // C(7,2) · C(5,2) ordered pairs of disjoint sides per number.
        let numbers = s.rows.len();
        assert_eq!(
            t.aa_judged + t.aa_unjudged + t.aa_no_evidence,
            210 * numbers
        );
        assert_eq!((t.aa_flagged, t.ab_detected), (0, t.ab_judged));
        // Quiet numbers: one run a side already detects 10 % at 95 % power.
        assert!(
            s.rows.iter().all(|r| r.runs_to_detect == Some(1)),
            "{:?}",
            s.rows[0]
        );
        let one = study(
            "cpu-fixture",
            "smollm2-135m",
            &all,
            &StudyRules {
                runs_a_side: 1,
                ..rules
            },
        );
        assert!(s.rows[0].alarm <= one.rows[0].alarm);
    }
}
