//! The HTML report's verdicts: the published claims judged on the run, the correctness against
//! the reference and what `check` said against the baselines.

use std::fmt::Write as _;

use super::{esc, first, table};
use crate::input::Input;
use lab_results::claims::{evaluate, Outcome};

/// Every published claim with its verdict on this run.
pub(super) fn claims(input: &Input) -> String {
    let mut s = format!(
        "<h2 id=\"claims\">Published claims</h2>\n<p class=\"note\">From <code>{}</code>; each judged on this run (confirmed / refuted need the 95 % interval on one side of the claimed bound).</p>\n",
        esc(&input.claims.file)
    );
    let rows: Vec<Vec<String>> = evaluate(input.claims, input.manifest, input.results)
        .into_iter()
        .map(|e| {
            let verdict = match &e.outcome {
                Outcome::Confirmed => "<span class=\"ok\">confirmed</span>".to_string(),
                Outcome::Refuted => "<span class=\"bad\">refuted</span>".to_string(),
                Outcome::Inconclusive => "<span class=\"meh\">inconclusive</span>".to_string(),
                Outcome::NotMeasurable(why) => format!("not measurable here: {}", esc(why)),
            };
            vec![
                esc(&e.claim.claim),
                esc(&e.claim.source),
                esc(&e.claim.condition),
                verdict,
                esc(&e.measured),
            ]
        })
        .collect();
    s.push_str(&table(
        "table-claims",
        &["claim", "source", "condition", "verdict", "measured"],
        &[],
        &rows,
    ));
    s
}

/// One row per target judged against the reference.
pub(super) fn correctness(input: &Input) -> String {
    let mut s = String::from("<h2 id=\"correctness\">Correctness</h2>\n");
    let rows: Vec<Vec<String>> = first(input.results)
        .iter()
        .filter_map(|r| {
            let c = r.correctness.as_ref()?;
            let verdict = if c.passes() {
                "<span class=\"ok\">pass</span>".to_string()
            } else {
                format!(
                    "<span class=\"bad\">FAIL</span> {}",
                    esc(&c.errors.join("; "))
                )
            };
            Some(vec![
                esc(&r.target),
                esc(&c.dtype),
                format!("{:.4}", c.top1_agreement),
                format!("{:.2} ({})", c.gate, esc(&c.gate_reason)),
                format!("{}/{}", c.greedy_prefix_tokens, c.greedy_tokens),
                format!("{}/{}", c.greedy_full_matches, c.prompts.len()),
                verdict,
            ])
        })
        .collect();
    if rows.is_empty() {
        s.push_str("<p class=\"note\">No reference scenarios in this run.</p>\n");
    } else {
        s.push_str("<p class=\"note\">Teacher-forced top-1 agreement with the reference (transformers on the original GGUF) and the greedy continuation's matching prefix.</p>\n");
        s.push_str(&table(
            "table-correctness",
            &[
                "target",
                "dtype",
                "top-1 agreement",
                "gate",
                "greedy prefix tokens",
                "full greedy matches",
                "verdict",
            ],
            &[false, false, true, false, false, false, false],
            &rows,
        ));
    }
    s
}

/// The check's outcome and its findings, or how to run it.
pub(super) fn check(input: &Input) -> String {
    let mut s = String::from("<h2 id=\"check\">Check against baselines</h2>\n");
    let Some(c) = input.check else {
        s.push_str("<p class=\"note\">Not checked yet: <code>cargo xtask check --run &lt;this run&gt;</code> compares it with the baselines of its hardware profile and adds the verdicts here.</p>\n");
        return s;
    };
    let _ = writeln!(
        s,
        "<p>Against {}: <b>{}</b></p>",
        esc(&c.against),
        esc(&c.outcome.to_string())
    );
    let rows: Vec<Vec<String>> = c
        .findings
        .iter()
        .map(|f| {
            let v = f.verdict.label();
            let cls = if f.verdict.fails() {
                "bad"
            } else if f.verdict.passes() {
                "ok"
            } else {
                "meh"
            };
            vec![
                esc(&f.target),
                esc(&f.scenario),
                esc(&f.prompt),
                esc(&f.metric),
                format!("<span class=\"{cls}\">{}</span>", esc(v)),
                esc(&f.detail),
            ]
        })
        .collect();
    s.push_str(&table(
        "table-check",
        &[
            "target", "scenario", "prompt", "metric", "verdict", "detail",
        ],
        &[],
        &rows,
    ));
    s
}
