//! The HTML report's cost and energy section: $ per 1M generated tokens, J/token and requests
//! per hour within the SLOs ([`lab_results::cost`]).

use std::fmt::Write as _;

use super::{esc, table};
use crate::fmt::fmt_num;
use crate::input::Input;

/// The price used (or how to give one) and one row per target and scenario.
pub(super) fn cost(input: &Input) -> String {
    let mut s = String::from("<h2 id=\"cost\">Cost and energy</h2>\n");
    match input.price {
        Some(p) => {
            let _ = writeln!(s, "<p>Machine price: <b>{}</b>. $ per 1M generated tokens = price ÷ (3600 × output tok/s) × 10⁶; S1 serves one request at a time (new tokens ÷ median end-to-end time). Requests per hour within the S3 SLOs = goodput × 3600.</p>", esc(&p.text()));
        }
        None => s.push_str("<p class=\"note\">No price given, so no cost per token: <code>cargo xtask report &lt;run&gt; --price-per-hour &lt;USD&gt; --price-source &lt;where from&gt;</code> adds it. The lab has no prices of its own.</p>\n"),
    }
    let rows: Vec<Vec<String>> = lab_results::cost::rows(input.results, input.price)
        .into_iter()
        .map(|r| {
            vec![
                esc(&r.target),
                esc(&r.scenario),
                esc(&r.at),
                fmt_num(r.output_tok_per_s),
                r.usd_per_mtok.map_or("-".into(), |v| format!("{v:.3}")),
                r.joules_per_token.map_or("-".into(), |v| format!("{v:.3}")),
                r.slo_requests_per_hour
                    .map_or("-".into(), |v| format!("{v:.0}")),
            ]
        })
        .collect();
    if rows.is_empty() {
        s.push_str("<p class=\"note\">No throughput to price in this run.</p>\n");
        return s;
    }
    if !input.results.iter().any(|r| r.telemetry.is_some()) {
        s.push_str("<p class=\"note\">J/token needs GPU telemetry (energy counters); this run has none.</p>\n");
    }
    s.push_str(&table(
        "table-cost",
        &[
            "target",
            "scenario",
            "at",
            "output tok/s",
            "$ / 1M tok",
            "J / tok",
            "requests/h within SLO",
        ],
        &[false, false, false, true, true, true, true],
        &rows,
    ));
    s
}
