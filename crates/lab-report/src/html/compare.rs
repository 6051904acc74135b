//! `compare.html`: the comparison of two runs ([`crate::compare`]) as one self-contained page.

use std::fmt::Write as _;

use super::{esc, table, SCRIPT, STYLE};
use crate::fmt::fmt_num;

/// `compare.html`: the comparison of two runs as one self-contained page.
pub fn compare_page(c: &crate::compare::Comparison) -> String {
    use crate::compare::Change;
    let mut body = format!(
        "<h1>Comparison: B = {} vs A = {}</h1>\n<ul>\n",
        esc(&c.b.run_id),
        esc(&c.a.run_id)
    );
    for (k, line) in c.runs() {
        let _ = writeln!(body, "<li><b>{k}</b>: {}</li>", esc(&line));
    }
    let (f, sl, same) = c.counts();
    let cls = if c.across_machines { "bad" } else { "note" };
    let _ = writeln!(
        body,
        "<li>Scope: <span class=\"{cls}\">{}</span></li>\n<li>{f} faster, {sl} slower, {same} same within noise. Faster/slower: the 95 % intervals of the two medians separate and the change exceeds {:.0} %; † a value without an interval, judged on the threshold alone.</li></ul>",
        esc(&c.scope()),
        lab_results::baseline::DEFAULT_TOLERANCE * 100.0
    );
    let rows: Vec<Vec<String>> = c
        .rows
        .iter()
        .map(|r| {
            let cls = match r.change {
                Change::Faster => "ok",
                Change::Slower => "bad",
                Change::Same => "note",
            };
            vec![
                esc(&r.target),
                esc(&r.scenario),
                esc(&r.at),
                format!("{} ({})", esc(&r.metric), r.unit),
                fmt_num(r.a),
                fmt_num(r.b),
                format!(
                    "{}{}",
                    esc(&r.ratio.text()),
                    if r.has_interval { "" } else { " †" }
                ),
                format!("<span class=\"{cls}\">{}</span>", r.change.label()),
            ]
        })
        .collect();
    body.push_str(&table(
        "table-compare",
        &[
            "target",
            "scenario",
            "at",
            "metric",
            "A",
            "B",
            "B ÷ A [95 %]",
            "verdict",
        ],
        &[false, false, false, false, true, true, false, false],
        &rows,
    ));
    if !c.unmatched.is_empty() {
        body.push_str("<p class=\"note\">Not compared (in one run only):</p><ul class=\"note\">");
        for u in &c.unmatched {
            let _ = write!(body, "<li>{}</li>", esc(u));
        }
        body.push_str("</ul>\n");
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Comparison {} vs {}</title><style>{STYLE}</style></head>\n<body>\n{body}<script>{SCRIPT}</script>\n</body></html>\n",
        esc(&c.b.run_id),
        esc(&c.a.run_id)
    )
}
