//! The HTML report's scenario tables: S1 and S5 per prompt, S2 per batch size and S3 per
//! concurrency, each sortable, with the 95 % interval of every median.

use lab_results::ScenarioId;
use std::fmt::Write as _;

use super::{esc, first, opt, table};
use crate::fmt::fmt_num;
use crate::input::Input;
use lab_results::measure::MIN_SAMPLES;
use lab_results::metric::Metric;
use lab_results::results::TargetResult;

/// Every scenario's table (or a line saying the run lacks it).
pub(super) fn scenarios(input: &Input) -> String {
    let rs = first(input.results);
    let mut s = String::from("<h2 id=\"scenarios\">Scenarios</h2>\n");
    let _ = writeln!(
        s,
        "<p class=\"note\">Medians over the measured iterations (n) of the first run, with the 95 % interval of the median in brackets; † fewer than {MIN_SAMPLES} samples. Click a column header to sort.</p>"
    );
    for (id, title) in [
        ("s1", "S1 — one request at a time"),
        ("s5", "S5 — long context"),
    ] {
        s.push_str(&prompt_table(&rs, id, title));
    }
    s.push_str(&s2_table(&rs));
    s.push_str(&s3_table(&rs));
    s
}

/// S1 or S5: one row per target and prompt.
fn prompt_table(rs: &[&TargetResult], id: &str, title: &str) -> String {
    let rows = prompt_rows(rs, id);
    let mut s = String::new();
    if rows.is_empty() {
        let _ = writeln!(s, "<h3>{title}</h3><p class=\"note\">Not in this run.</p>");
        return s;
    }
    let _ = writeln!(s, "<h3>{title}</h3>");
    s.push_str(&table(
        &format!("table-{id}"),
        &[
            "target",
            "prompt",
            "prompt tokens",
            "n",
            "TTFT ms",
            "prefill tok/s",
            "decode tok/s",
            "e2e ms",
            "new tokens",
        ],
        &[false, false, true, true, true, true, true, true, true],
        &rows,
    ));
    s
}

/// The rows of [`prompt_table`], and one per scenario error.
fn prompt_rows(rs: &[&TargetResult], id: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for r in rs {
        let Some(sc) = r.stats.iter().find(|x| x.id == id) else {
            continue;
        };
        for p in &sc.prompts {
            let cell = |m: Metric| match p.get(m) {
                Some(x) => {
                    let (lo, hi) = lab_results::ratio::interval(x);
                    format!(
                        "{} <span class=\"note\">[{}, {}]</span>",
                        fmt_num(x.median),
                        fmt_num(lo),
                        fmt_num(hi)
                    )
                }
                None => "-".into(),
            };
            let n = p.get(Metric::E2eMs).map_or(0, |x| x.n);
            rows.push(vec![
                esc(&r.target),
                esc(&p.prompt),
                p.prompt_tokens.to_string(),
                format!("{n}{}", if n < MIN_SAMPLES { " †" } else { "" }),
                cell(Metric::TtftMs),
                cell(Metric::PrefillTokPerS),
                cell(Metric::DecodeTokPerS),
                cell(Metric::E2eMs),
                p.new_tokens.to_string(),
            ]);
        }
        if let Some(e) = &sc.error {
            rows.push(vec![
                esc(&r.target),
                "error".into(),
                String::new(),
                String::new(),
                esc(e),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
    }
    rows
}

/// S2: one row per target and batch size.
fn s2_table(rs: &[&TargetResult]) -> String {
    let mut s = String::new();
    let mut rows = Vec::new();
    for r in rs {
        let Some(sc) = r.stats.iter().find(|x| x.id == ScenarioId::S2) else {
            continue;
        };
        for p in &sc.points {
            rows.push(vec![
                esc(&r.target),
                p.level.to_string(),
                opt(p.value("output_tok_per_s")),
                opt(p.value("prefill_tok_per_s")),
                opt(p.value("decode_tok_per_s")),
                opt(p.value("requests_per_s")),
                opt(p.metrics.get("step_ms").map(|x| x.median)),
                opt(p.peak_rss_bytes.map(|b| b as f64 / 1048576.0)),
                esc(sc.batching.as_deref().unwrap_or("-")),
            ]);
        }
    }
    if rows.is_empty() {
        s.push_str("<h3>S2 — batched throughput</h3><p class=\"note\">Not in this run.</p>\n");
    } else {
        s.push_str("<h3>S2 — batched throughput</h3>\n");
        s.push_str(&table(
            "table-s2",
            &[
                "target",
                "batch",
                "output tok/s",
                "prefill tok/s",
                "decode tok/s",
                "requests/s",
                "step ms p50",
                "peak RSS MiB",
                "batching",
            ],
            &[false, true, true, true, true, true, true, true, false],
            &rows,
        ));
    }
    s
}

/// S3: one row per target and concurrency, with goodput and the request counts.
fn s3_table(rs: &[&TargetResult]) -> String {
    let mut s = String::new();
    let mut rows = Vec::new();
    for r in rs {
        let Some(sc) = r.stats.iter().find(|x| x.id == ScenarioId::S3) else {
            continue;
        };
        for p in &sc.points {
            let q = |name: &str, f: fn(&lab_results::stats::Summary) -> f64| {
                opt(p.metrics.get(name).map(f))
            };
            rows.push(vec![
                esc(&r.target),
                p.level.to_string(),
                opt(p.value("output_tok_per_s")),
                opt(p.value("requests_per_s")),
                opt(p.value("goodput_requests_per_s")),
                q("ttft_ms", |x| x.median),
                q("ttft_ms", |x| x.p99),
                q("tpot_ms", |x| x.median),
                opt(p.value("scaling_vs_c1")),
                p.counts
                    .map(|c| format!("{}/{}/{} of {}", c.completed, c.failed, c.refused, c.total))
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    if rows.is_empty() {
        s.push_str("<h3>S3 — concurrent requests</h3><p class=\"note\">Not in this run.</p>\n");
    } else {
        let _ = writeln!(
            s,
            "<h3>S3 — concurrent requests</h3>\n<p class=\"note\">Goodput: completed requests per second within TTFT ≤ {} ms and TPOT ≤ {} ms. Requests: completed/failed/refused of sent.</p>",
            lab_results::results::load::SLO_TTFT_MS,
            lab_results::results::load::SLO_TPOT_MS
        );
        s.push_str(&table(
            "table-s3",
            &[
                "target",
                "concurrency",
                "output tok/s",
                "requests/s",
                "goodput req/s",
                "TTFT p50 ms",
                "TTFT p99 ms",
                "TPOT p50 ms",
                "scaling vs C=1",
                "requests",
            ],
            &[false, true, true, true, true, true, true, true, true, false],
            &rows,
        ));
    }
    s
}
