//! `cargo xtask compare <run-a> <run-b>`: per target and metric, run B relative to run A (the
//! ratio B ÷ A with its conservative 95 % interval, [`Ratio`]) and a verdict:
//!
//! - **faster** / **slower**: the intervals of the two medians separate (the ratio's interval
//!   excludes 1) *and* the change exceeds [`lab_results::baseline::DEFAULT_TOLERANCE`] — the rule
//!   `check` uses for regressions;
//! - **same within noise** otherwise;
//! - values without an interval (S2/S3 throughputs) are judged on the threshold alone and say so.
//!
//! Across machines (different hardware profiles) the table is labelled as such: the ratio then
//! mixes the engine and the machine.

use lab_results::ScenarioId;
use std::fmt::Write as _;

use lab_results::baseline::DEFAULT_TOLERANCE;
use lab_results::metric::Metric;
use lab_results::ratio::Ratio;
use lab_results::results::{RunManifest, TargetResult};
use lab_results::stats::Summary;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Faster,
    Slower,
    Same,
}

impl Change {
    pub fn label(self) -> &'static str {
        match self {
            Change::Faster => "faster",
            Change::Slower => "slower",
            Change::Same => "same within noise",
        }
    }
}

/// One compared number.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub target: String,
    pub scenario: String,
    /// Prompt (`p200`) or level (`B=4`, `C=8`).
    pub at: String,
    pub metric: String,
    pub unit: &'static str,
    pub a: f64,
    pub b: f64,
    pub ratio: Ratio,
    /// False for a point value (no interval): judged on the threshold alone.
    pub has_interval: bool,
    pub change: Change,
}

pub struct Comparison {
    pub a: RunManifest,
    pub b: RunManifest,
    pub across_machines: bool,
    pub rows: Vec<Row>,
    /// Targets or scenarios only one run has.
    pub unmatched: Vec<String>,
}

fn judge(r: &Ratio, higher_is_better: bool, has_interval: bool) -> Change {
    let separate = !has_interval || r.low > 1.0 || r.high < 1.0;
    let shift = (r.value - 1.0).abs() > DEFAULT_TOLERANCE;
    if !(separate && shift) {
        return Change::Same;
    }
    if (r.value > 1.0) == higher_is_better {
        Change::Faster
    } else {
        Change::Slower
    }
}

fn row_of(
    target: &str,
    scenario: &str,
    at: String,
    (metric, unit, higher): (&str, &'static str, bool),
    a: &Summary,
    b: &Summary,
) -> Option<Row> {
    let ratio = Ratio::of(b, a)?;
    Some(Row {
        target: target.into(),
        scenario: scenario.into(),
        at,
        metric: metric.into(),
        unit,
        a: a.median,
        b: b.median,
        change: judge(&ratio, higher, true),
        ratio,
        has_interval: true,
    })
}

/// Compares the first repetition of every target both runs have.
pub fn compare(
    (ma, ra): (&RunManifest, &[TargetResult]),
    (mb, rb): (&RunManifest, &[TargetResult]),
) -> Comparison {
    let mut rows = Vec::new();
    let mut unmatched = Vec::new();
    let first = |rs: &[TargetResult]| -> Vec<TargetResult> {
        rs.iter().filter(|r| r.run() == 1).cloned().collect()
    };
    let (fa, fb) = (first(ra), first(rb));
    for a in &fa {
        let Some(b) = fb.iter().find(|b| b.target == a.target) else {
            unmatched.push(format!("{}: only in {}", a.target, ma.run_id));
            continue;
        };
        for sa in &a.stats {
            let Some(sb) = b.stats.iter().find(|s| s.id == sa.id) else {
                unmatched.push(format!("{} {}: only in {}", a.target, sa.id, ma.run_id));
                continue;
            };
            if sa.points.is_empty() {
                for pa in &sa.prompts {
                    let Some(pb) = sb.prompts.iter().find(|p| p.prompt == pa.prompt) else {
                        continue;
                    };
                    for m in Metric::CHECKED {
                        if let (Some(x), Some(y)) = (pa.get(m), pb.get(m)) {
                            let what = (m.name(), m.unit(), m.higher_is_better());
                            rows.extend(row_of(&a.target, &sa.id, pa.prompt.clone(), what, x, y));
                        }
                    }
                }
                continue;
            }
            let prefix = if sa.id == ScenarioId::S3 { "C" } else { "B" };
            for pa in &sa.points {
                let Some(pb) = sb.points.iter().find(|p| p.level == pa.level) else {
                    continue;
                };
                let at = format!("{prefix}={}", pa.level);
                if let (Some(x), Some(y)) =
                    (pa.value("output_tok_per_s"), pb.value("output_tok_per_s"))
                {
                    if x > 0.0 {
                        let ratio = Ratio {
                            value: y / x,
                            low: y / x,
                            high: y / x,
                        };
                        rows.push(Row {
                            target: a.target.clone(),
                            scenario: sa.id.clone(),
                            at: at.clone(),
                            metric: "output_tok_per_s".into(),
                            unit: "tok/s",
                            a: x,
                            b: y,
                            change: judge(&ratio, true, false),
                            ratio,
                            has_interval: false,
                        });
                    }
                }
                for (name, x) in &pa.metrics {
                    if let Some(y) = pb.metrics.get(name) {
                        let what = (name.as_str(), "ms", false);
                        rows.extend(row_of(&a.target, &sa.id, at.clone(), what, x, y));
                    }
                }
            }
        }
    }
    for b in &fb {
        if !fa.iter().any(|a| a.target == b.target) {
            unmatched.push(format!("{}: only in {}", b.target, mb.run_id));
        }
    }
    Comparison {
        a: ma.clone(),
        b: mb.clone(),
        across_machines: ma.profile != mb.profile,
        rows,
        unmatched,
    }
}

fn fmt(v: f64) -> String {
    crate::fmt::fmt_num(v)
}

impl Comparison {
    /// One line per run: what it is and where it ran.
    pub fn runs(&self) -> Vec<(String, String)> {
        [("A", &self.a), ("B", &self.b)]
            .into_iter()
            .map(|(k, m)| {
                let p = &m.provenance;
                (
                    k.to_string(),
                    format!(
                        "{} — {} on {} ({}), revision {}{}, model {}, started {}",
                        m.run_id,
                        m.settings.device,
                        m.profile,
                        p.host.cpu_model,
                        p.git_rev,
                        if p.git_dirty { " (dirty)" } else { "" },
                        m.settings.model.name,
                        p.started_at
                    ),
                )
            })
            .collect()
    }

    pub fn scope(&self) -> String {
        let commits = if self.a.provenance.git_rev == self.b.provenance.git_rev {
            "the same commit"
        } else {
            "two commits"
        };
        if self.across_machines {
            format!(
                "ACROSS MACHINES ({} vs {}), {commits}: each ratio mixes the engines' change with the machines' difference",
                self.a.profile, self.b.profile
            )
        } else {
            format!("one machine ({}), {commits}", self.a.profile)
        }
    }

    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |c| self.rows.iter().filter(|r| r.change == c).count();
        (n(Change::Faster), n(Change::Slower), n(Change::Same))
    }

    pub fn markdown(&self) -> String {
        let mut s = format!(
            "# Comparison: B = {} vs A = {}\n\n",
            self.b.run_id, self.a.run_id
        );
        for (k, line) in self.runs() {
            let _ = writeln!(s, "- {k}: {line}");
        }
        let (f, sl, same) = self.counts();
        let _ = writeln!(
            s,
            "- scope: {}\n- verdicts: {f} faster, {sl} slower, {same} same within noise (faster/slower: the 95 % intervals separate and the change exceeds {:.0} %; † no interval, threshold only)\n",
            self.scope(),
            DEFAULT_TOLERANCE * 100.0
        );
        let _ = writeln!(
            s,
            "| target | scenario | at | metric | A | B | B ÷ A [95 %] | verdict |"
        );
        let _ = writeln!(s, "|---|---|---|---|---:|---:|---|---|");
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} ({}) | {} | {} | {}{} | {} |",
                r.target,
                r.scenario,
                r.at,
                r.metric,
                r.unit,
                fmt(r.a),
                fmt(r.b),
                r.ratio.text(),
                if r.has_interval { "" } else { " †" },
                r.change.label()
            );
        }
        if !self.unmatched.is_empty() {
            let _ = writeln!(s, "\nNot compared (in one run only):\n");
            for u in &self.unmatched {
                let _ = writeln!(s, "- {u}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_results::results::fixture::fixture;

    #[test]
    fn a_run_against_itself_is_the_same_and_a_faster_one_is_faster() {
        let (m, r) = fixture();
        let same = compare((&m, &r), (&m, &r));
        assert!(!same.rows.is_empty());
        assert!(same
            .rows
            .iter()
            .all(|x| x.change == Change::Same && x.ratio.value == 1.0));
        assert!(!same.across_machines);

        let fast = vec![lab_results::results::fixture::scaled(
            &r[0],
            &r[0].target,
            2.0,
        )];
        let c = compare((&m, &r), (&m, &fast));
        let s1: Vec<_> = c.rows.iter().filter(|x| x.scenario == "s1").collect();
        assert!(!s1.is_empty());
        for x in s1 {
            assert_eq!(x.change, Change::Faster, "{x:?}");
        }
        let md = c.markdown();
        assert!(
            md.contains("| faster |") && md.contains("one machine"),
            "{md}"
        );
        // Backwards, the same numbers are slower.
        let back = compare((&m, &fast), (&m, &r));
        assert!(back
            .rows
            .iter()
            .filter(|x| x.scenario == "s1")
            .all(|x| x.change == Change::Slower));
    }

    #[test]
    fn another_machine_is_labelled_and_missing_targets_named() {
        let (m, r) = fixture();
        let mut other = m.clone();
        other.profile = "cpu-genuineintel-f6m143-8t".into();
        other.run_id = "elsewhere".into();
        let mut fewer = r.clone();
        fewer[0].target = "other:hf-f32".into();
        let c = compare((&m, &r), (&other, &fewer));
        assert!(c.across_machines);
        assert!(c.markdown().contains("ACROSS MACHINES"));
        assert!(c.unmatched.iter().any(|u| u.contains("only in elsewhere")));
    }
}
