//! The gate study as Markdown (`study.md` of a gate-study run): which runs it drew on, how often
//! the gate cried wolf on them (A/A) and how often it caught a known slowdown (A/B), and per
//! target what change it can detect on this machine.

use std::fmt::Write;

use lab_results::gate::{rate, CONTROL_TARGET, NORMALISE_GAIN};
use lab_results::metric::Metric;
use lab_results::study::{Study, StudyRow};

fn pct(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// The rows of `target`'s S1 decode tok/s (one per prompt).
fn s1_decode<'a>(s: &'a Study, target: &'a str) -> impl Iterator<Item = &'a StudyRow> + 'a {
    s.rows.iter().filter(move |r| {
        r.target == target && r.scenario == "s1" && r.metric == Metric::DecodeTokPerS.name()
    })
}

/// The most runs a side any of a target's numbers needs (`>20` for one that never gets there).
fn most_runs(needs: impl Iterator<Item = Option<usize>>) -> String {
    needs
        .map(|n| n.map_or(usize::MAX, |n| n))
        .max()
        .map_or("–".into(), |n| {
            if n == usize::MAX {
                ">20".into()
            } else {
                n.to_string()
            }
        })
}

/// `1 run a side`, `4 runs a side`.
fn sides(n: usize) -> String {
    format!("{n} run{} a side", if n == 1 { "" } else { "s" })
}

/// The per-target table: trials, and S1 decode tok/s's spread, thresholds and runs needed.
fn per_target(s: &Study) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Per target\n");
    let _ = writeln!(out, "S1 decode tok/s columns are medians over its prompts; A/A, A/B over every gated number of the target.\n");
    let _ = writeln!(out, "| target | A/A flagged | A/B detected | real A/B detected | S1 decode between-run CV (raw / per GB/s / ÷ control) | form | alarm, {} | detectable at 95 % power | runs a side to judge at {} | runs a side to detect {} at 95 % power |", sides(s.runs_a_side), pct(s.max_threshold), pct(s.slowdown));
    let _ = writeln!(out, "|---|---|---|---|---|---|---:|---:|---:|---:|");
    for (target, tr) in &s.per_target {
        let rows: Vec<&StudyRow> = s1_decode(s, target).collect();
        let cv_raw = median(rows.iter().map(|r| r.spread.cv_raw).collect());
        let cv_bw = median(
            rows.iter()
                .filter_map(|r| r.spread.cv_per_bandwidth)
                .collect(),
        );
        let cv_ctl = median(
            rows.iter()
                .filter_map(|r| r.spread.cv_per_control)
                .collect(),
        );
        let alarm = median(rows.iter().map(|r| r.alarm).collect());
        let detect = median(rows.iter().map(|r| r.detectable).collect());
        let needs = most_runs(rows.iter().map(|r| r.repeats_needed));
        let to_detect = most_runs(rows.iter().map(|r| r.runs_to_detect));
        let forms: Vec<&str> = {
            let mut f: Vec<&str> = rows.iter().map(|r| r.spread.form.name()).collect();
            f.sort();
            f.dedup();
            f
        };
        let _ = writeln!(
            out,
            "| {target} | {} | {} | {} | {} / {} / {} | {} | {} | {} | {needs} | {to_detect} |",
            rate(tr.aa_flagged, tr.aa_judged),
            rate(tr.ab_detected, tr.ab_judged),
            rate(tr.real_ab_detected, tr.real_ab_judged),
            cv_raw.map_or("–".into(), pct),
            cv_bw.map_or("–".into(), pct),
            cv_ctl.map_or("–".into(), pct),
            if forms.is_empty() {
                "–".into()
            } else {
                forms.join(", ")
            },
            alarm.map_or("–".into(), pct),
            detect.map_or("–".into(), pct),
        );
    }
    out
}

/// What dividing by the in-run control did to the spread, over every number that has both.
fn control_line(s: &Study) -> String {
    let pairs: Vec<(f64, f64)> = s
        .rows
        .iter()
        .filter_map(|r| Some((r.spread.cv_raw, r.spread.cv_per_control?)))
        .collect();
    if pairs.is_empty() {
        return format!("- In-run control (`{CONTROL_TARGET}` in the same run): not measured in enough of these runs.\n");
    }
    let lower = pairs
        .iter()
        .filter(|(raw, c)| *c < raw * (1.0 - NORMALISE_GAIN))
        .count();
    format!(
        "- In-run control (each number ÷ `{CONTROL_TARGET}`'s same number in the same run; reported, not judged): median CV {} raw, {} ÷ control, over {} numbers; lower by {} or more for {}.\n",
        pct(median(pairs.iter().map(|p| p.0).collect()).unwrap_or(0.0)),
        pct(median(pairs.iter().map(|p| p.1).collect()).unwrap_or(0.0)),
        pairs.len(),
        pct(NORMALISE_GAIN),
        rate(lower, pairs.len()),
    )
}

/// "What the gate said on these runs": the A/A and A/B totals.
fn verdict_lines(s: &Study) -> String {
    let mut out = String::new();
    let t = &s.totals;
    let _ = writeln!(out, "## What the gate said on these runs\n");
    let _ = writeln!(
        out,
        "- A/A (false alarms), judged comparisons flagged: {}; {} not judged (threshold beyond {}); {} pairs without evidence (fewer than {} other unchanged runs); {} not judged because a side ran disturbed (the hypervisor took more than {} of the CPU time).",
        rate(t.aa_flagged, t.aa_judged),
        t.aa_unjudged,
        pct(s.max_threshold),
        t.aa_no_evidence,
        s.min_runs,
        t.aa_disturbed,
        pct(lab_results::gate::MAX_STEAL_SHARE),
    );
    let _ = writeln!(
        out,
        "- A/B, synthetic {} slowdown (detection), judged comparisons detected: {}; {} not judged.",
        pct(s.slowdown),
        rate(t.ab_detected, t.ab_judged),
        t.ab_unjudged
    );
    let _ = writeln!(
        out,
        "- A/B, real `--slowdown` runs, judged comparisons detected: {}; {} not judged; {} disturbed.",
        rate(t.real_ab_detected, t.real_ab_judged),
        t.real_ab_unjudged,
        t.real_ab_disturbed
    );
    out
}

pub fn markdown(s: &Study) -> String {
    let mut out = format!("# Gate study: `{}`, `{}`\n\n", s.profile, s.model);
    let plain = s.runs.iter().filter(|r| r.slowdown.is_none()).count();
    let mut days: Vec<&str> = s
        .runs
        .iter()
        .map(|r| &r.started_at[..10.min(r.started_at.len())])
        .collect();
    days.sort();
    days.dedup();
    let _ = writeln!(
        out,
        "{plain} runs of an unchanged build and {} with an injected slowdown, over {} day{}. Judged by `check`'s rules: tolerance {}, a number judged only where its alarm threshold is at most {}; synthetic A/B = each unchanged candidate's number slowed by {} (throughput ÷ {:.2}, latency × {:.2}); real A/B = runs made with `bench --slowdown`. Every pair of sides ({}: {}) is one trial, its threshold from the spread of the *other* runs ({} or more of them). Definitions: `lab_results::gate` (README, \"The gate\").\n",
        s.runs.len() - plain,
        days.len(),
        if days.len() == 1 { "" } else { "s" },
        pct(s.tolerance),
        pct(s.max_threshold),
        pct(s.slowdown),
        1.0 + s.slowdown,
        1.0 + s.slowdown,
        sides(s.runs_a_side),
        if s.runs_a_side == 1 {
            "one run against a one-run baseline".to_string()
        } else {
            format!(
                "the mean of {0} runs against the mean of {0} others, as `check` judges a `--repeat {0}` run against a baseline accepted from {0}",
                s.runs_a_side
            )
        },
        s.min_runs,
    );
    out.push_str(&verdict_lines(s));
    out.push_str(&control_line(s));
    out.push('\n');
    out.push_str(&per_target(s));
    let _ = writeln!(out, "\n## Runs\n");
    let _ = writeln!(
        out,
        "| run | started | measure | runtime | tree | read bandwidth GB/s | f32 GEMM GFLOP/s | most CPU stolen while a target ran | slowdown |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---:|---:|---:|---:|");
    for r in &s.runs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.run_id,
            r.started_at,
            r.measure,
            r.runtime,
            if r.git_dirty { "dirty" } else { "clean" },
            r.read_bandwidth_gb_per_s
                .map_or("–".into(), |b| format!("{b:.1}")),
            r.gemm_gflop_per_s.map_or("–".into(), |g| format!("{g:.1}")),
            r.max_cpu_steal_share.map_or("–".into(), pct),
            r.slowdown.map_or("–".into(), pct),
        );
    }
    let _ = writeln!(out, "\n## Every number\n");
    let _ = writeln!(out, "| target | scenario | prompt | metric | runs | days | CV raw | CV per GB/s | CV ÷ control | form | alarm | detectable | A/A flagged | A/B detected |");
    let _ = writeln!(
        out,
        "|---|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|---|"
    );
    for r in &s.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.target,
            r.scenario,
            r.prompt,
            r.metric,
            r.spread.runs,
            r.spread.sessions,
            pct(r.spread.cv_raw),
            r.spread.cv_per_bandwidth.map_or("–".into(), pct),
            r.spread.cv_per_control.map_or("–".into(), pct),
            r.spread.form.name(),
            pct(r.alarm),
            pct(r.detectable),
            rate(r.trials.aa_flagged, r.trials.aa_judged),
            rate(r.trials.ab_detected, r.trials.ab_judged),
        );
    }
    out
}
