//! The HTML report's summary: the question the run answers and its answers — the fastest
//! target per scenario, correctness, the check, the claims and what did not complete.

use std::fmt::Write as _;

use super::esc;
use crate::fmt::fmt_num;
use crate::input::Input;
use crate::model::Model;
use lab_results::claims::evaluate;
use lab_results::results::{RunManifest, TargetResult, TargetStatus};

/// The question and what the run answers.
pub(super) fn summary(input: &Input, model: &Model) -> String {
    let m = input.manifest;
    let mut s = String::from("<h2 id=\"summary\">Summary</h2>\n");
    let _ = write!(
        s,
        "<p><b>Question:</b> which of these engines serves <b>{}</b> fastest on <b>{}</b> of this machine ({}), and are its outputs right?</p>\n<div class=\"verdict\"><ul>\n",
        esc(&m.settings.model.name),
        esc(&m.settings.device.to_string()),
        esc(&m.provenance.host.cpu_model)
    );
    s.push_str(&fastest(model));
    s.push_str(&verdicts(input, &model.first));
    s.push_str(&incomplete(m));
    s.push_str("</ul></div>\n");
    s
}

/// The fastest target of each scenario, and the largest speed-up over the PyTorch baseline.
fn fastest(model: &Model) -> String {
    let mut s = String::new();
    match &model.fastest_s1 {
        Some(f) => {
            let _ = writeln!(
                s,
                "<li>One request at a time (S1): fastest decode <b>{}</b> at {} tok/s (prompt {}).</li>",
                esc(&f.target),
                fmt_num(f.tok_per_s),
                esc(&f.prompt)
            );
        }
        None => s.push_str("<li>S1 (one request at a time): not in this run.</li>\n"),
    }
    if let Some((base, rows)) = &model.speedups {
        if let Some((t, _, r)) = rows.iter().max_by(|a, b| a.2.value.total_cmp(&b.2.value)) {
            let _ = writeln!(
                s,
                "<li>Largest decode speed-up over the PyTorch baseline ({}): <b>{}</b> {}.</li>",
                esc(base),
                esc(t),
                esc(&r.text())
            );
        }
    }
    for b in &model.best_load {
        let _ = writeln!(
            s,
            "<li>{}: highest output <b>{}</b> at {} tok/s ({} = {}).</li>",
            b.name,
            esc(&b.target),
            fmt_num(b.tok_per_s),
            b.prefix,
            b.level
        );
    }
    s
}

/// Correctness, the check against baselines and the published claims, one line each.
fn verdicts(input: &Input, rs: &[&TargetResult]) -> String {
    let mut s = String::new();
    let judged: Vec<_> = rs.iter().filter_map(|r| r.correctness.as_ref()).collect();
    if judged.is_empty() {
        s.push_str("<li>Correctness: not measured in this run (no reference scenarios).</li>\n");
    } else {
        let pass = judged.iter().filter(|c| c.passes()).count();
        let cls = if pass == judged.len() { "ok" } else { "bad" };
        let _ = writeln!(
            s,
            "<li>Correctness against the reference: <span class=\"{cls}\">{pass} of {} targets pass</span>.</li>",
            judged.len()
        );
    }
    match input.check {
        Some(c) => {
            let cls = if c.outcome.passed() {
                "ok"
            } else {
                "bad"
            };
            let _ = writeln!(
                s,
                "<li>Check against baselines: <span class=\"{cls}\">{}</span>.</li>",
                esc(&c.outcome.to_string())
            );
        }
        None => s.push_str("<li>Check against baselines: not run on this run yet (<code>cargo xtask check --run &lt;this run&gt;</code>).</li>\n"),
    }
    let evals = evaluate(input.claims, input.manifest, input.results);
    let count = |o: &str| evals.iter().filter(|e| e.outcome.label() == o).count();
    let _ = writeln!(
        s,
        "<li>Published claims: {} confirmed, {} refuted, {} inconclusive, {} not measurable here.</li>",
        count("confirmed"),
        count("refuted"),
        count("inconclusive"),
        count("not measurable here")
    );
    s
}

/// The targets that did not complete, with their status and error.
fn incomplete(m: &RunManifest) -> String {
    let mut s = String::new();
    let failed: Vec<_> = m
        .targets
        .iter()
        .filter(|t| t.status != TargetStatus::Ok)
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(
            s,
            "<li class=\"bad\">Did not complete: {}.</li>",
            failed
                .iter()
                .map(|t| format!(
                    "{} ({:?}{})",
                    esc(&t.target),
                    t.status,
                    t.error
                        .as_ref()
                        .map(|e| format!(": {}", esc(e)))
                        .unwrap_or_default()
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    s
}
