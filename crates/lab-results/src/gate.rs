//! What this machine can resolve, from evidence: the between-run spread of every gated number
//! over runs of the same build in different sessions (the gate study, `cargo xtask gate-study`),
//! the thresholds `check` derives from it, and the study's own figures (A/A false alarms, A/B
//! detection, minimum detectable change).
//!
//! Definitions, written once here:
//! - **between-run CV** σ of a number: the sample standard deviation of its value over runs ÷
//!   their mean, each run one sample (its median, or the mean of its run medians under
//!   `--repeat`). Runs from different sessions carry the machine's day-to-day drift; repeats in
//!   one session do not, so a run's own repeats are weaker evidence and said so.
//! - **alarm threshold** of a comparison of a candidate over `r` runs with a baseline over `b`,
//!   σ estimated from `k` runs: `max(tolerance, t(0.995, k − 1) · σ · √(1/r + 1/b))` — the 99 %
//!   prediction interval of a new run's value: a shift inside it is what A/A runs produce at a
//!   nominal two-sided 1 % false-alarm rate (Student's t, because σ itself comes from few runs),
//!   and is never called "improved" or "regressed". 99 %, not 95 %, because these VMs' runs are
//!   not normal: a run now and then lands far out (native Q4_1 decoded 30–40 % faster in one of
//!   thirteen quiet f6m167 runs), and a second sitting drifts from the first; at 95 % the study
//!   of thirteen runs in two sittings flagged 818 of 13,008 judged A/A comparisons (6.3 %), at
//!   99 % 111 of 4,904 (2.3 %; `results/gate-study-f6m167-budget-two-sittings-20261207`).
//! - **floor** of a target: the median between-run CV over all its gated numbers (the spreads
//!   of one study). No number of the target is judged with a lower σ: a number's own σ, from
//!   five to ten runs, is itself uncertain, and the numbers whose few runs happened to agree
//!   were exactly the ones judged — and flagged. Measured on the f6m167 Xeon VM over seven quiet
//!   runs (`results/gate-study-f6m167-budget-20261207`): without the floor 299 of 3140 judged
//!   A/A comparisons were flagged (9.5 %).
//! - **minimum detectable change** (95 % power): the alarm threshold + `1.645 · σ · √(1/r + 1/b)`.
//! - **judgeable**: the alarm threshold is at most `max_threshold` (15 % by default, or the
//!   tolerance when a wider one is asked for). Where it is not, the verdict is "cannot judge on this machine", with the repeats that would make it
//!   judgeable — never "pass".
//! - **normalised form** of a number: a throughput ÷ (a latency ×) the read bandwidth measured in
//!   the same run, GB/s; the gate judges it instead of the raw number where the study found its σ
//!   lower by at least [`NORMALISE_GAIN`], and says which form each verdict used.
//! - **disturbed**: a target measured while the hypervisor took more than [`MAX_STEAL_SHARE`] of
//!   the machine's CPU time (steal, `/proc/stat`, recorded around every engine run). Its numbers
//!   are never judged (on either side of a comparison) and never used as evidence of the spread:
//!   the verdict is "cannot judge" with the share that was taken.
//! - **in-run control**: a number ÷ the same number of [`CONTROL_TARGET`] in the same run. The
//!   study reports its CV (`cv_per_control`) beside the others; the gate does not judge it: on
//!   the dev VM it did not lower the spread (the noise is not shared by engines measured minutes
//!   apart; `results/gate-study-budget-20261207`, README "The gate").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The relative shift a number may show without being a change, where the machine resolves it.
pub const DEFAULT_TOLERANCE: f64 = 0.05;
/// z of 95 % power (one-sided).
pub const Z_POWER: f64 = 1.645;
/// The largest alarm threshold at which a number is judged at all.
pub const DEFAULT_MAX_THRESHOLD: f64 = 0.15;
/// The evidence file beside a profile's baselines (`baselines/<profile>/<model>/spread.json`).
pub const SPREAD_FILE: &str = "spread.json";
/// Fewest runs a between-run CV is taken from. Judged on spreads from 3 runs, 40 of 76 A/A pairs
/// were flagged on the AMD VM (before the floor) and 28 of 60 on the five quiet f6m207 Xeon runs
/// (with it, `results/gate-study-xeon-budget-min3-20261207`): a 3-run spread under-states the
/// noise where it matters; 5 is the least this gate accepts.
pub const MIN_RUNS: usize = 5;
/// The normalised form is used where it lowers σ by at least this share (a lower estimate
/// from the same few runs is otherwise as likely luck as signal).
pub const NORMALISE_GAIN: f64 = 0.10;
/// The in-run control the study tries: the speed reference, in every default run.
pub const CONTROL_TARGET: &str = "llamacpp:gguf-q4_1";
/// Largest share of the machine's CPU time the hypervisor may take while a target runs for its
/// numbers to be judged. Measured on the Xeon VM (`results/cpu-xeon-s1-aa1..aa6-20261207`): in
/// the four quiet runs it took at most 1.6 % while any target ran (40 target runs, median
/// 0.1 %); in the three runs of the slower spell that followed, more than 2 % for 18 of 28
/// targets (up to 33 %), and the targets it hit decoded up to 59 % slower (candle Q4_1
/// 3.9 tok/s at 33 %, 9.4–10.2 tok/s in the quiet runs).
pub const MAX_STEAL_SHARE: f64 = 0.02;
/// The slowdown the study's A/B trials inject (each step 10 % longer).
pub const DEFAULT_SLOWDOWN: f64 = 0.10;

/// Which form of a number the gate judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    #[default]
    Raw,
    /// ÷ (throughput) or × (latency) the run's read bandwidth.
    PerBandwidth,
}

impl Form {
    pub fn name(self) -> &'static str {
        match self {
            Form::Raw => "raw",
            Form::PerBandwidth => "per GB/s of read bandwidth",
        }
    }

    /// `value` in this form, with the run's bandwidth; `None` when the form needs a bandwidth
    /// the run did not measure.
    pub fn apply(self, value: f64, higher_is_better: bool, bandwidth: Option<f64>) -> Option<f64> {
        match self {
            Form::Raw => Some(value),
            Form::PerBandwidth => {
                let bw = bandwidth.filter(|b| *b > 0.0 && b.is_finite())?;
                Some(if higher_is_better {
                    value / bw
                } else {
                    value * bw
                })
            }
        }
    }
}

/// One gated number's between-run spread on this machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpreadEntry {
    /// Runs (and distinct session days among them) the judged form's spread comes from.
    pub runs: usize,
    pub sessions: usize,
    /// The form the gate judges, and its between-run CV.
    pub form: Form,
    pub cv: f64,
    /// The CV of the raw number over every run, and of the normalised one over the runs that
    /// measured bandwidth (3 or more).
    pub cv_raw: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cv_per_bandwidth: Option<f64>,
    /// The CV of the number ÷ [`CONTROL_TARGET`]'s same number in the same run, over the runs
    /// with both (reported, not judged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cv_per_control: Option<f64>,
}

/// `baselines/<profile>/<model>/spread.json`: what the gate study measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpreadFile {
    pub profile: String,
    pub model: String,
    /// The runs the spreads were computed from (run ids).
    pub runs: Vec<String>,
    /// `<engine>.<variant>/<scenario>/<prompt>/<metric>` -> spread.
    pub entries: BTreeMap<String, SpreadEntry>,
    /// `<engine>.<variant>` -> its floor (module docs; absent in older files: no floor).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub floors: BTreeMap<String, f64>,
}

/// The key of one gated number.
pub fn key(stem: &str, scenario: &str, prompt: &str, metric: &str) -> String {
    format!("{stem}/{scenario}/{prompt}/{metric}")
}

/// What the gate knows about a number's between-run spread, and where it learned it.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub cv: f64,
    /// Runs the CV was estimated from (its degrees of freedom + 1).
    pub runs: usize,
    pub form: Form,
    /// `gate study over 7 runs (5 sessions)`, `this run's 3 repeats (one session)`.
    pub source: String,
}

impl Evidence {
    /// The study's spread of a number, raised to its target's `floor` when that is higher.
    pub fn from_study(e: &SpreadEntry, floor: Option<f64>) -> Evidence {
        let floor = floor.unwrap_or(0.0);
        Evidence {
            cv: e.cv.max(floor),
            runs: e.runs,
            form: e.form,
            source: format!(
                "gate study over {} runs ({} session{}){}",
                e.runs,
                e.sessions,
                if e.sessions == 1 { "" } else { "s" },
                if floor > e.cv {
                    format!(
                        ", σ raised from {:.1} % to the target's median {:.1} %",
                        100.0 * e.cv,
                        100.0 * floor
                    )
                } else {
                    String::new()
                }
            ),
        }
    }
}

/// `1/r + 1/b` under the square root of every threshold.
fn spread_factor(r: usize, b: usize) -> f64 {
    (1.0 / r.max(1) as f64 + 1.0 / b.max(1) as f64).sqrt()
}

/// The alarm threshold (module docs): σ = `cv` estimated from `k` runs.
pub fn alarm_threshold(tolerance: f64, cv: f64, k: usize, r: usize, b: usize) -> f64 {
    tolerance.max(crate::stats::t995(k.saturating_sub(1)) * cv * spread_factor(r, b))
}

/// The minimum detectable change at 95 % power (module docs).
pub fn detectable_change(tolerance: f64, cv: f64, k: usize, r: usize, b: usize) -> f64 {
    alarm_threshold(tolerance, cv, k, r, b) + Z_POWER * cv * spread_factor(r, b)
}

/// Runs per side (candidate and baseline alike) at which a change of `change` is detected at
/// 95 % power (its [`detectable_change`] is at most `change`), σ from `k` runs; `None` beyond 20.
pub fn runs_to_detect(tolerance: f64, cv: f64, k: usize, change: f64) -> Option<usize> {
    (1..=20).find(|&n| detectable_change(tolerance, cv, k, n, n) <= change)
}

/// Runs per side (candidate and baseline alike) that bring the alarm threshold to
/// `max_threshold`, σ from `k` runs; `None` beyond 20 (this machine cannot, at any sensible
/// cost).
pub fn repeats_needed(cv: f64, k: usize, max_threshold: f64) -> Option<usize> {
    (1..=20).find(|&n| alarm_threshold(0.0, cv, k, n, n) <= max_threshold)
}

/// One run's value of one number, for the study.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub run_id: String,
    /// The day the run started (`2026-11-29`): runs of one day share a session's drift.
    pub session: String,
    pub value: f64,
    pub bandwidth: Option<f64>,
    /// The same number of [`CONTROL_TARGET`] in the same run (`None` for the control itself).
    pub control: Option<f64>,
    /// The slowdown the run injected (0 for an unchanged build).
    pub slowdown: f64,
    /// The share of CPU time the hypervisor took while the target ran (`None`: not recorded).
    pub steal: Option<f64>,
}

impl Point {
    /// Measured while the hypervisor took more than [`MAX_STEAL_SHARE`] (module docs).
    pub fn disturbed(&self) -> bool {
        disturbed(self.steal)
    }
}

/// A steal share beyond [`MAX_STEAL_SHARE`]; an unrecorded one (older runs, machines without
/// `/proc/stat`) is not known to be disturbed.
pub fn disturbed(steal: Option<f64>) -> bool {
    steal.is_some_and(|s| s > MAX_STEAL_SHARE)
}

/// Why numbers measured with `steal` are not judged (`whose`: "this run's", "the baseline's").
pub fn disturbed_note(steal: Option<f64>, whose: &str) -> Option<String> {
    let s = steal.filter(|_| disturbed(steal))?;
    Some(format!(
        "cannot judge: the hypervisor took {:.1} % of the CPU time while {whose} target ran (more than {:.0} % disturbs every number on these VMs); measure it again when the host is quieter",
        100.0 * s,
        100.0 * MAX_STEAL_SHARE
    ))
}

/// CV of `values` (sample std / mean); `None` below `min_runs` values (and below 2).
pub fn cv_of(values: &[f64], min_runs: usize) -> Option<f64> {
    if values.len() < min_runs.max(2) {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if mean == 0.0 || !mean.is_finite() {
        return None;
    }
    let var = values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some(var.sqrt() / mean.abs())
}

/// The spread of one number over the unchanged, undisturbed runs of `points`; `None` below
/// `min_runs`.
pub fn spread_of(points: &[Point], higher_is_better: bool, min_runs: usize) -> Option<SpreadEntry> {
    let plain: Vec<&Point> = points
        .iter()
        .filter(|p| p.slowdown == 0.0 && !p.disturbed())
        .collect();
    let raw: Vec<f64> = plain.iter().map(|p| p.value).collect();
    let cv_raw = cv_of(&raw, min_runs)?;
    // The normalised form over the runs that measured bandwidth, against the raw form over
    // the same runs (a fair comparison of the two).
    let measured: Vec<&Point> = plain
        .iter()
        .copied()
        .filter(|p| p.bandwidth.is_some())
        .collect();
    let norm: Vec<f64> = measured
        .iter()
        .filter_map(|p| Form::PerBandwidth.apply(p.value, higher_is_better, p.bandwidth))
        .collect();
    let cv_per_bandwidth = cv_of(&norm, min_runs);
    let per_control: Vec<f64> = plain
        .iter()
        .filter_map(|p| Some(p.value / p.control.filter(|c| *c > 0.0)?))
        .collect();
    let raw_same_runs = cv_of(
        &measured.iter().map(|p| p.value).collect::<Vec<_>>(),
        min_runs,
    );
    let form = match (cv_per_bandwidth, raw_same_runs) {
        (Some(n), Some(r)) if n < r * (1.0 - NORMALISE_GAIN) => Form::PerBandwidth,
        _ => Form::Raw,
    };
    let used: &[&Point] = if form == Form::PerBandwidth {
        &measured
    } else {
        &plain
    };
    let mut sessions: Vec<&str> = used.iter().map(|p| p.session.as_str()).collect();
    sessions.sort();
    sessions.dedup();
    Some(SpreadEntry {
        runs: used.len(),
        sessions: sessions.len(),
        form,
        cv: if form == Form::PerBandwidth {
            cv_per_bandwidth.unwrap_or(cv_raw)
        } else {
            cv_raw
        },
        cv_raw,
        cv_per_bandwidth,
        cv_per_control: cv_of(&per_control, min_runs),
    })
}

/// The study's figures for one number.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trials {
    /// A/A: ordered pairs of unchanged runs, one the baseline, the other the candidate.
    pub aa_judged: usize,
    pub aa_flagged: usize,
    /// Pairs whose threshold was beyond `max_threshold` ("cannot judge").
    pub aa_unjudged: usize,
    /// Pairs left without evidence: fewer than `min_runs` *other* unchanged runs.
    #[serde(default)]
    pub aa_no_evidence: usize,
    /// Pairs not judged because one side was measured disturbed ([`MAX_STEAL_SHARE`]).
    #[serde(default)]
    pub aa_disturbed: usize,
    /// A/B with the slowdown applied to the candidate's value (the slowdown's exact effect on
    /// a step-bound number: throughput ÷ (1 + s), latency × (1 + s)).
    pub ab_judged: usize,
    pub ab_detected: usize,
    pub ab_unjudged: usize,
    /// A/B against runs that really injected the slowdown (`bench --slowdown`), when any.
    pub real_ab_judged: usize,
    pub real_ab_detected: usize,
    pub real_ab_unjudged: usize,
    /// Real A/B pairs not judged because one side was measured disturbed.
    #[serde(default)]
    pub real_ab_disturbed: usize,
}

impl Trials {
    pub fn add(&mut self, o: &Trials) {
        self.aa_judged += o.aa_judged;
        self.aa_flagged += o.aa_flagged;
        self.aa_unjudged += o.aa_unjudged;
        self.aa_no_evidence += o.aa_no_evidence;
        self.aa_disturbed += o.aa_disturbed;
        self.ab_judged += o.ab_judged;
        self.ab_detected += o.ab_detected;
        self.ab_unjudged += o.ab_unjudged;
        self.real_ab_judged += o.real_ab_judged;
        self.real_ab_detected += o.real_ab_detected;
        self.real_ab_unjudged += o.real_ab_unjudged;
        self.real_ab_disturbed += o.real_ab_disturbed;
    }
}

/// How a study judges: the check's own rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StudyRules {
    pub tolerance: f64,
    pub max_threshold: f64,
    pub slowdown: f64,
    /// Fewest runs a spread is taken from ([`MIN_RUNS`] for `check`; fewer to show why).
    pub min_runs: usize,
    /// Runs on each side of a trial: 1 judges one run against a one-run baseline; `r` judges the
    /// mean of `r` runs against the mean of `r` others, as `check` judges a `--repeat r` run
    /// against a baseline accepted from `r` runs.
    pub runs_a_side: usize,
}

impl Default for StudyRules {
    fn default() -> Self {
        StudyRules {
            tolerance: DEFAULT_TOLERANCE,
            max_threshold: DEFAULT_MAX_THRESHOLD,
            slowdown: DEFAULT_SLOWDOWN,
            min_runs: MIN_RUNS,
            runs_a_side: 1,
        }
    }
}

/// The most trials (pairs of sides) per target; beyond it every n-th pair is judged, n the
/// smallest that keeps them within (the study says how many it judged).
pub const MAX_TRIAL_PAIRS: usize = 60_000;

/// A slowdown `s` (each step `s` longer) applied to a number.
pub fn slowed(value: f64, higher_is_better: bool, s: f64) -> f64 {
    if higher_is_better {
        value / (1.0 + s)
    } else {
        value * (1.0 + s)
    }
}

/// A/A and A/B trials of one number (a target with one number: its floor is its own spread).
pub fn trials(points: &[Point], higher_is_better: bool, rules: &StudyRules) -> Trials {
    target_trials(&[(points, higher_is_better)], rules)
        .pop()
        .unwrap_or_default()
}

/// The median of `cvs`: a target's [floor](self) (`None` without any).
pub fn floor_of(mut cvs: Vec<f64>) -> Option<f64> {
    if cvs.is_empty() {
        return None;
    }
    cvs.sort_by(f64::total_cmp);
    let n = cvs.len();
    Some(if n % 2 == 1 {
        cvs[n / 2]
    } else {
        (cvs[n / 2 - 1] + cvs[n / 2]) / 2.0
    })
}

/// A/A and A/B trials of every number of one target (each number's points, one per run, and
/// whether higher is better), judged exactly as `check` judges a run against a baseline: every
/// ordered pair of disjoint sides of [`StudyRules::runs_a_side`] unchanged runs each (baseline,
/// candidate; a side's value is the mean of its runs' values, as `check` takes the mean of a
/// `--repeat` run's medians), each number's spread estimated from the *other* runs only
/// (leave-out, so a pair never sets its own threshold) and floored at the median of the
/// target's numbers' spreads over those same runs. A pair with a disturbed side is counted, not
/// judged, as `check` does not judge it. At most [`MAX_TRIAL_PAIRS`] pairs, evenly thinned. One
/// [`Trials`] per number, in order.
pub fn target_trials(numbers: &[(&[Point], bool)], rules: &StudyRules) -> Vec<Trials> {
    let mut out = vec![Trials::default(); numbers.len()];
    let mut plain_runs: Vec<&str> = Vec::new();
    let mut slowed_runs: Vec<&str> = Vec::new();
    for p in numbers.iter().flat_map(|(pts, _)| pts.iter()) {
        let runs = if p.slowdown == 0.0 {
            &mut plain_runs
        } else {
            &mut slowed_runs
        };
        if !runs.contains(&p.run_id.as_str()) {
            runs.push(&p.run_id);
        }
    }
    let r = rules.runs_a_side.max(1);
    let mut pairs: Vec<(Vec<&str>, Vec<&str>, bool)> = Vec::new();
    for base in subsets(&plain_runs, r) {
        for cand in subsets(&slowed_runs, r) {
            pairs.push((base.clone(), cand, true));
        }
        let rest: Vec<&str> = plain_runs
            .iter()
            .copied()
            .filter(|run| !base.contains(run))
            .collect();
        for cand in subsets(&rest, r) {
            pairs.push((base.clone(), cand, false));
        }
    }
    let step = pairs.len().div_ceil(MAX_TRIAL_PAIRS).max(1);
    for (base, cand, real) in pairs.iter().step_by(step) {
        pair_trials(numbers, (base, cand), *real, rules, &mut out);
    }
    out
}

/// Every `r`-element subset of `items`, in order.
fn subsets<'a>(items: &[&'a str], r: usize) -> Vec<Vec<&'a str>> {
    if r == 0 {
        return vec![Vec::new()];
    }
    let Some((first, rest)) = items.split_first() else {
        return Vec::new();
    };
    let mut out: Vec<Vec<&str>> = subsets(rest, r - 1)
        .into_iter()
        .map(|mut s| {
            s.insert(0, *first);
            s
        })
        .collect();
    out.extend(subsets(rest, r));
    out
}

/// One side of a trial: the points of `runs` (all of them, else `None`) as one, the mean of
/// their values and bandwidths, the largest steal.
fn side_of(pts: &[Point], runs: &[&str], slowed: bool) -> Option<Point> {
    let found: Vec<&Point> = runs
        .iter()
        .map(|run| {
            pts.iter()
                .find(|p| p.run_id == *run && (p.slowdown > 0.0) == slowed)
        })
        .collect::<Option<_>>()?;
    let n = found.len() as f64;
    let first = found.first()?;
    Some(Point {
        run_id: runs.join("+"),
        session: first.session.clone(),
        value: found.iter().map(|p| p.value).sum::<f64>() / n,
        bandwidth: found
            .iter()
            .map(|p| p.bandwidth)
            .sum::<Option<f64>>()
            .map(|b| b / n),
        control: None,
        slowdown: first.slowdown,
        steal: found.iter().filter_map(|p| p.steal).reduce(f64::max),
    })
}

/// One (baseline side, candidate side) pair of [`target_trials`], added to `out`.
fn pair_trials(
    numbers: &[(&[Point], bool)],
    (base_runs, cand_runs): (&[&str], &[&str]),
    real: bool,
    rules: &StudyRules,
    out: &mut [Trials],
) {
    let sides = (base_runs.len(), cand_runs.len());
    // Each number's sides and its spread from the other unchanged runs.
    let judged: Vec<Option<(Point, Point, Option<SpreadEntry>)>> = numbers
        .iter()
        .map(|(pts, higher)| {
            // A run is one side only: unchanged (a baseline, or an A/A candidate) or slowed.
            let base = side_of(pts, base_runs, false)?;
            let cand = side_of(pts, cand_runs, real)?;
            let others: Vec<Point> = pts
                .iter()
                .filter(|p| {
                    p.slowdown == 0.0
                        && !base_runs.contains(&p.run_id.as_str())
                        && !cand_runs.contains(&p.run_id.as_str())
                })
                .cloned()
                .collect();
            let ev = spread_of(&others, *higher, rules.min_runs);
            Some((base, cand, ev))
        })
        .collect();
    let floor = floor_of(
        judged
            .iter()
            .filter_map(|j| Some(j.as_ref()?.2.as_ref()?.cv))
            .collect(),
    )
    .unwrap_or(0.0);
    for ((j, (_, higher)), t) in judged.into_iter().zip(numbers).zip(out.iter_mut()) {
        let Some((base, cand, ev)) = j else { continue };
        let higher = *higher;
        if base.disturbed() || cand.disturbed() {
            if real {
                t.real_ab_disturbed += 1;
            } else {
                t.aa_disturbed += 1;
            }
            continue;
        }
        let Some(ev) = ev else {
            if !real {
                t.aa_no_evidence += 1;
            }
            continue;
        };
        let verdict = |cand: &Point| judge(&base, cand, &ev, floor, sides, higher, rules);
        if real {
            match verdict(&cand) {
                None => t.real_ab_unjudged += 1,
                Some(rel) => {
                    t.real_ab_judged += 1;
                    t.real_ab_detected += usize::from(worse(rel, higher));
                }
            }
            continue;
        }
        match verdict(&cand) {
            None => t.aa_unjudged += 1,
            Some(rel) => {
                t.aa_judged += 1;
                t.aa_flagged += usize::from(rel != 0.0);
            }
        }
        let mut ab = cand.clone();
        ab.value = slowed(ab.value, higher, rules.slowdown);
        match verdict(&ab) {
            None => t.ab_unjudged += 1,
            Some(rel) => {
                t.ab_judged += 1;
                t.ab_detected += usize::from(worse(rel, higher));
            }
        }
    }
}

fn worse(rel: f64, higher_is_better: bool) -> bool {
    if higher_is_better {
        rel < 0.0
    } else {
        rel > 0.0
    }
}

/// `None`: cannot judge (threshold beyond `max_threshold`, or the form needs a bandwidth a run
/// lacks); `Some(0.0)`: inside the threshold; otherwise the relative shift that was flagged.
fn judge(
    base: &Point,
    cand: &Point,
    ev: &SpreadEntry,
    floor: f64,
    (base_runs, cand_runs): (usize, usize),
    higher_is_better: bool,
    rules: &StudyRules,
) -> Option<f64> {
    let threshold = alarm_threshold(
        rules.tolerance,
        ev.cv.max(floor),
        ev.runs,
        cand_runs,
        base_runs,
    );
    if threshold > rules.max_threshold.max(rules.tolerance) {
        return None;
    }
    let b = ev
        .form
        .apply(base.value, higher_is_better, base.bandwidth)?;
    let c = ev
        .form
        .apply(cand.value, higher_is_better, cand.bandwidth)?;
    let rel = (c - b) / b;
    Some(if rel.abs() > threshold { rel } else { 0.0 })
}

/// `part` of `whole` as a percentage text (`3 of 60 (5.0 %)`), or `none judged`.
pub fn rate(part: usize, whole: usize) -> String {
    if whole == 0 {
        "none judged".into()
    } else {
        format!(
            "{part} of {whole} ({:.1} %)",
            100.0 * part as f64 / whole as f64
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(values: &[f64], bw: &[f64]) -> Vec<Point> {
        values
            .iter()
            .zip(bw)
            .enumerate()
            .map(|(i, (v, b))| Point {
                run_id: format!("r{i}"),
                session: format!("2026-11-{:02}", 20 + i / 2),
                value: *v,
                bandwidth: Some(*b),
                control: Some(2.0 * v),
                slowdown: 0.0,
                steal: Some(0.001),
            })
            .collect()
    }

    #[test]
    fn thresholds_follow_the_spread_and_the_runs_behind_each_side() {
        // σ 1 %: the tolerance decides.
        assert_eq!(alarm_threshold(0.05, 0.01, 30, 1, 1), 0.05);
        // σ 5 % from 31 runs, one run a side: 2.576 · 5 % · √2 = 18.2 %.
        assert!((alarm_threshold(0.05, 0.05, 31, 1, 1) - 0.1821).abs() < 1e-3);
        // σ from 4 runs is uncertain: Student's t (5.841) widens it to 41.3 %.
        assert!((alarm_threshold(0.05, 0.05, 4, 1, 1) - 0.4130).abs() < 1e-3);
        // More runs a side narrow it; the detectable change is larger than the alarm.
        assert!(alarm_threshold(0.05, 0.05, 31, 4, 4) < alarm_threshold(0.05, 0.05, 31, 1, 1));
        assert!(detectable_change(0.05, 0.05, 31, 1, 1) > alarm_threshold(0.05, 0.05, 31, 1, 1));
        // σ 12 % (from 31 runs) needs 9 runs a side to resolve 15 %, σ 5 % two; σ 100 % never.
        assert_eq!(repeats_needed(0.12, 31, 0.15), Some(9));
        assert_eq!(repeats_needed(0.05, 31, 0.15), Some(2));
        assert_eq!(repeats_needed(1.0, 31, 0.15), None);
    }

    #[test]
    fn normalising_is_chosen_only_where_it_lowers_the_spread() {
        // The value follows the bandwidth exactly: per GB/s it does not move at all.
        let p = pts(&[100.0, 120.0, 90.0, 110.0], &[10.0, 12.0, 9.0, 11.0]);
        let s = spread_of(&p, true, 3).unwrap();
        assert_eq!(s.form, Form::PerBandwidth);
        assert!(s.cv < 1e-9 && s.cv_raw > 0.1, "{s:?}");
        assert_eq!((s.runs, s.sessions), (4, 2));
        // A control that moves with the value: its ratio does not move (reported, not judged).
        assert!(s.cv_per_control.unwrap() < 1e-9);
        let mut own = p.clone();
        own.iter_mut().for_each(|q| q.control = Some(50.0));
        let s = spread_of(&own, true, 3).unwrap();
        assert!((s.cv_per_control.unwrap() - s.cv_raw).abs() < 1e-9);
        own[0].control = None;
        own[1].control = None;
        assert_eq!(spread_of(&own, true, 3).unwrap().cv_per_control, None);
        // Bandwidth unrelated to the value: raw stays.
        let p = pts(&[100.0, 101.0, 99.0, 100.5], &[10.0, 14.0, 8.0, 12.0]);
        assert_eq!(spread_of(&p, true, 3).unwrap().form, Form::Raw);
        // A latency is multiplied by the bandwidth.
        assert_eq!(Form::PerBandwidth.apply(10.0, false, Some(2.0)), Some(20.0));
        assert_eq!(Form::PerBandwidth.apply(10.0, true, None), None);
        // Too few runs: no evidence.
        assert!(spread_of(&p[..2], true, 3).is_none());
        // A run without a bandwidth: the normalised form over the others, compared with the
        // raw form over the same runs.
        let mut partly = pts(
            &[100.0, 120.0, 90.0, 110.0, 50.0],
            &[10.0, 12.0, 9.0, 11.0, 1.0],
        );
        partly[4].bandwidth = None;
        let s = spread_of(&partly, true, 3).unwrap();
        assert_eq!((s.form, s.runs), (Form::PerBandwidth, 4));
        assert!(s.cv_raw > 0.2, "{s:?}");
    }

    #[test]
    fn trials_count_false_alarms_and_detections_against_left_out_spreads() {
        // Quiet runs (±1 %): no A/A alarm, every 10 % slowdown found.
        let quiet = pts(
            &[100.0, 101.0, 99.0, 100.5, 99.5, 100.2],
            &[10.0, 10.0, 10.0, 10.0, 10.0, 10.0],
        );
        let three = StudyRules {
            min_runs: 3,
            ..StudyRules::default()
        };
        // With the gate's own minimum (5), six runs leave too few for a leave-two-out spread.
        assert_eq!(trials(&quiet, true, &StudyRules::default()).aa_judged, 0);
        let t = trials(&quiet, true, &three);
        assert_eq!((t.aa_judged, t.aa_flagged, t.aa_unjudged), (30, 0, 0));
        assert_eq!((t.ab_judged, t.ab_detected), (30, 30));
        // Noisy runs (±20 %): nothing is judged at a 15 % ceiling, so nothing is called.
        let noisy = pts(&[100.0, 130.0, 80.0, 120.0, 90.0], &[10.0; 5]);
        let t = trials(&noisy, true, &three);
        assert_eq!((t.aa_judged, t.ab_judged), (0, 0));
        assert_eq!(t.aa_unjudged, 20);
        // A run that really ran slower is a real A/B trial.
        let mut with_slow = quiet.clone();
        with_slow.push(Point {
            run_id: "slow".into(),
            session: "2026-11-30".into(),
            value: 90.0,
            bandwidth: Some(10.0),
            control: None,
            slowdown: 0.1,
            steal: None,
        });
        let t = trials(&with_slow, true, &three);
        assert_eq!((t.real_ab_judged, t.real_ab_detected), (6, 6));
        // A run measured while the hypervisor took 18 % of the CPU is neither judged nor
        // evidence: a slow value there raises no alarm and does not widen the spread.
        let mut stolen = quiet.clone();
        stolen[5].value = 60.0;
        stolen[5].steal = Some(0.18);
        assert!(stolen[5].disturbed() && !quiet[5].disturbed());
        let t = trials(&stolen, true, &three);
        assert_eq!((t.aa_judged, t.aa_flagged, t.aa_disturbed), (20, 0, 10));
        let s = spread_of(&stolen, true, 3).unwrap();
        assert_eq!(s.runs, 5);
        assert!(s.cv < 0.01, "{s:?}");
        let mut hit = with_slow.clone();
        hit[6].steal = Some(0.05);
        assert_eq!(trials(&hit, true, &three).real_ab_disturbed, 6);
        assert!(disturbed_note(Some(0.182), "this run's")
            .unwrap()
            .contains("took 18.2 % of the CPU time while this run's target ran"));
        assert_eq!(disturbed_note(Some(0.01), "this run's"), None);
        assert_eq!(disturbed_note(None, "this run's"), None);
    }

    #[test]
    fn a_number_is_never_judged_with_less_spread_than_its_targets_median() {
        let three = StudyRules {
            min_runs: 3,
            ..StudyRules::default()
        };
        // One number whose six runs agree within ±1 %, two of the same target spreading ±8 %.
        let lucky = pts(&[100.0, 101.0, 99.0, 100.5, 99.5, 108.0], &[10.0; 6]);
        let wide = pts(&[100.0, 110.0, 92.0, 104.0, 95.0, 100.0], &[10.0; 6]);
        // Alone, the lucky number's pairs with the sixth run are judged and flagged.
        let alone = trials(&lucky, true, &three);
        assert!(alone.aa_flagged > 0, "{alone:?}");
        // Beside its target's wider numbers it is held to their median: nothing is judged.
        let t = target_trials(&[(&lucky, true), (&wide, true), (&wide, false)], &three);
        assert_eq!(t.len(), 3);
        assert_eq!((t[0].aa_judged, t[0].aa_flagged), (0, 0), "{:?}", t[0]);
        assert_eq!(t[0].aa_unjudged, 30);
        assert_eq!(floor_of(vec![0.03, 0.01, 0.2]), Some(0.03));
        assert_eq!(floor_of(vec![0.02, 0.04]), Some(0.03));
        assert_eq!(floor_of(Vec::new()), None);
        // What check reads: the study's σ raised to the floor, and said so.
        let e = spread_of(&lucky[..5], true, 3).unwrap();
        let ev = Evidence::from_study(&e, Some(0.08));
        assert_eq!(ev.cv, 0.08);
        assert!(
            ev.source.contains("to the target's median 8.0 %"),
            "{}",
            ev.source
        );
        assert_eq!(Evidence::from_study(&e, Some(0.001)).cv, e.cv);
        assert_eq!(Evidence::from_study(&e, None).cv, e.cv);
        // For a latency a slowdown is a larger number.
        assert!((slowed(10.0, false, 0.1) - 11.0).abs() < 1e-12);
        assert_eq!(rate(3, 60), "3 of 60 (5.0 %)");
    }

    #[test]
    fn trials_with_several_runs_a_side_judge_their_means() {
        let quiet = pts(
            &[100.0, 101.0, 99.0, 100.5, 99.5, 100.2, 100.8, 99.2, 100.1],
            &[10.0; 9],
        );
        let two = StudyRules {
            min_runs: 3,
            runs_a_side: 2,
            ..StudyRules::default()
        };
        // Every ordered pair of disjoint two-run sides: C(9,2) · C(7,2).
        let t = trials(&quiet, true, &two);
        assert_eq!(t.aa_judged + t.aa_unjudged, 36 * 21);
        assert_eq!((t.aa_flagged, t.ab_detected), (0, t.ab_judged));
        assert!(t.ab_judged > 0);
        // A side is the mean of its runs: one run 12 % slow in a pair of two is a 6 % shift.
        let mut one_slow = quiet.clone();
        one_slow[8].value = 88.0;
        let (a, b) = (
            side_of(&one_slow, &["r7", "r8"], false).unwrap(),
            side_of(&one_slow, &["r7", "r6"], false).unwrap(),
        );
        assert!((a.value - 93.6).abs() < 1e-9 && a.run_id == "r7+r8");
        assert!((b.value - 100.0).abs() < 1e-9);
        assert_eq!(side_of(&one_slow, &["r7", "r9"], false), None);
        // Several runs a side narrow the threshold: σ 5 % from 12 runs needs 12 runs a side to
        // catch 10 % at 95 % power, σ 2 % needs 2.
        assert_eq!(runs_to_detect(0.05, 0.05, 12, 0.10), Some(12));
        assert_eq!(runs_to_detect(0.05, 0.02, 12, 0.10), Some(2));
        assert_eq!(runs_to_detect(0.05, 0.5, 12, 0.10), None);
        assert_eq!(subsets(&["a", "b", "c"], 2).len(), 3);
        assert_eq!(subsets(&["a"], 2).len(), 0);
    }
}
