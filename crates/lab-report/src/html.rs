//! `index.html`: the whole run in one self-contained page — no network, no CDN, inline CSS,
//! inline SVG charts and a few lines of inline script (sortable tables); it works from a
//! `file://` URL. Links point at the run's raw files beside it.

use std::fmt::Write as _;

use crate::fmt::fmt_num;
use crate::input::{Exporter, Input};
use lab_results::claims::{evaluate, Outcome};
use lab_results::measure::MIN_SAMPLES;
use lab_results::metric::Metric;
use lab_results::ratio::speedups;
use lab_results::results::{TargetResult, TargetStatus};

pub struct Html;

impl Exporter for Html {
    fn render(&self, input: &Input) -> Vec<(String, String)> {
        vec![(crate::input::HTML_FILE.into(), render(input))]
    }
}

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1180px;padding:1rem 1.5rem;color:#1d1d1f;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
nav a{margin-right:.8rem}table{border-collapse:collapse;margin:.6rem 0;font-size:.86rem}
th,td{border:1px solid #d6d6d6;padding:.22rem .5rem;vertical-align:top}th{background:#f3f4f6;text-align:left}
th.sortable{cursor:pointer}th.sortable:after{content:" \2195";color:#999}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#146c2e;font-weight:600}.bad{color:#b3261e;font-weight:600}.meh{color:#8a5a00;font-weight:600}
.note{color:#555;font-size:.88rem}figure{margin:1rem 0}.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:.5rem 1rem}
figure svg{max-width:100%;height:auto}figcaption{font-size:.85rem;color:#444}
.verdict{background:#f6f8fa;border-left:4px solid #4e79a7;padding:.6rem 1rem}code{background:#f3f4f6;padding:0 .2rem}
"#;

/// Click a header to sort its table (numbers numerically, text alphabetically).
const SCRIPT: &str = r#"
document.querySelectorAll("table.sortable").forEach(function(t){
  t.querySelectorAll("th").forEach(function(th,i){
    th.classList.add("sortable");
    th.addEventListener("click",function(){
      var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
      var asc=th.getAttribute("data-asc")!=="1";th.setAttribute("data-asc",asc?"1":"0");
      function key(r){var s=r.cells[i]?r.cells[i].textContent:"";var n=parseFloat(s.replace(/[^0-9.eE+-]/g,""));return isNaN(n)?s:n;}
      rows.sort(function(a,b){var x=key(a),y=key(b);if(typeof x==="number"&&typeof y==="number")return asc?x-y:y-x;return asc?String(x).localeCompare(String(y)):String(y).localeCompare(String(x));});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"#;

/// A table whose cells are already HTML; `num` marks right-aligned numeric columns.
fn table(id: &str, head: &[&str], num: &[bool], rows: &[Vec<String>]) -> String {
    let mut s = format!("<table class=\"sortable\" id=\"{}\"><thead><tr>", esc(id));
    for h in head {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr></thead><tbody>\n");
    for r in rows {
        s.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            if num.get(i).copied().unwrap_or(false) {
                let _ = write!(s, "<td class=\"num\">{c}</td>");
            } else {
                let _ = write!(s, "<td>{c}</td>");
            }
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody></table>\n");
    s
}

fn opt(v: Option<f64>) -> String {
    v.map(fmt_num).unwrap_or_else(|| "-".into())
}

fn first(results: &[TargetResult]) -> Vec<&TargetResult> {
    results.iter().filter(|r| r.run() == 1).collect()
}

/// The page.
pub fn render(input: &Input) -> String {
    let m = input.manifest;
    let st = &m.settings;
    let mut body = String::new();
    let synthetic = if st.model.synthetic {
        " (SYNTHETIC random weights: speed only)"
    } else {
        ""
    };
    let _ = write!(
        body,
        "<h1>Run {}</h1>\n<p class=\"note\">{} on {} — {} threads, runtime {}, hardware profile <code>{}</code>, status {:?}{}</p>\n",
        esc(&m.run_id),
        esc(&st.model.name),
        esc(&st.device),
        st.threads,
        esc(&st.runtime),
        esc(&m.profile),
        m.status,
        esc(synthetic)
    );
    let sections = [
        ("summary", "Summary"),
        ("scenarios", "Scenarios"),
        ("charts", "Charts"),
        ("analyses", "Analyses"),
        ("cost", "Cost and energy"),
        ("claims", "Published claims"),
        ("correctness", "Correctness"),
        ("check", "Check"),
        ("provenance", "Provenance"),
        ("files", "Raw files"),
    ];
    body.push_str("<nav>");
    for (id, name) in sections {
        let _ = write!(body, "<a href=\"#{id}\">{name}</a>");
    }
    body.push_str("</nav>\n");
    body.push_str(&summary(input));
    body.push_str(&scenarios(input));
    body.push_str(&charts(input));
    body.push_str(&analyses(input));
    body.push_str(&cost(input));
    body.push_str(&claims(input));
    body.push_str(&correctness(input));
    body.push_str(&check(input));
    body.push_str(&provenance(input));
    body.push_str(&files(input));
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>Run {}</title><style>{STYLE}</style></head>\n<body>\n{body}<script>{SCRIPT}</script>\n</body></html>\n",
        esc(&m.run_id)
    )
}

/// The question and what the run answers.
fn summary(input: &Input) -> String {
    let m = input.manifest;
    let rs = first(input.results);
    let mut s = String::from("<h2 id=\"summary\">Summary</h2>\n");
    let _ = write!(
        s,
        "<p><b>Question:</b> which of these engines serves <b>{}</b> fastest on <b>{}</b> of this machine ({}), and are its outputs right?</p>\n<div class=\"verdict\"><ul>\n",
        esc(&m.settings.model.name),
        esc(&m.settings.device),
        esc(&m.provenance.host.cpu_model)
    );
    // S1: the fastest decode at each target's longest prompt.
    let best_s1 = rs
        .iter()
        .filter_map(|r| {
            let (p, _) = lab_results::ratio::s1_prompts(r)
                .into_iter()
                .max_by_key(|(_, n)| *n)?;
            let v = lab_results::ratio::s1_summary(r, &p, Metric::DecodeTokPerS)?.median;
            Some((r.target.clone(), p, v))
        })
        .max_by(|a, b| a.2.total_cmp(&b.2));
    match best_s1 {
        Some((t, p, v)) => {
            let _ = writeln!(
                s,
                "<li>One request at a time (S1): fastest decode <b>{}</b> at {} tok/s (prompt {}).</li>",
                esc(&t),
                fmt_num(v),
                esc(&p)
            );
        }
        None => s.push_str("<li>S1 (one request at a time): not in this run.</li>\n"),
    }
    if let Some((base, rows)) = speedups(input.results) {
        if let Some((t, _, r)) = rows.iter().max_by(|a, b| a.2.value.total_cmp(&b.2.value)) {
            let _ = writeln!(
                s,
                "<li>Largest decode speed-up over the PyTorch baseline ({}): <b>{}</b> {}.</li>",
                esc(&base),
                esc(t),
                esc(&r.text())
            );
        }
    }
    for (id, name, prefix) in [
        ("s2", "Batched throughput (S2)", "B"),
        ("s3", "Concurrent requests (S3)", "C"),
    ] {
        let best = rs
            .iter()
            .filter_map(|r| {
                let sc = r.stats.iter().find(|x| x.id == id)?;
                let p = sc.points.iter().max_by_key(|p| p.level)?;
                Some((r.target.clone(), p.level, p.value("output_tok_per_s")?))
            })
            .max_by(|a, b| a.2.total_cmp(&b.2));
        if let Some((t, level, v)) = best {
            let _ = writeln!(
                s,
                "<li>{name}: highest output <b>{}</b> at {} tok/s ({prefix} = {level}).</li>",
                esc(&t),
                fmt_num(v)
            );
        }
    }
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
            let cls = if c.outcome.starts_with("passed") {
                "ok"
            } else {
                "bad"
            };
            let _ = writeln!(
                s,
                "<li>Check against baselines: <span class=\"{cls}\">{}</span>.</li>",
                esc(&c.outcome)
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
    s.push_str("</ul></div>\n");
    s
}

fn scenarios(input: &Input) -> String {
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
        let mut rows = Vec::new();
        for r in &rs {
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
        if rows.is_empty() {
            let _ = writeln!(s, "<h3>{title}</h3><p class=\"note\">Not in this run.</p>");
            continue;
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
    }
    let mut rows = Vec::new();
    for r in &rs {
        let Some(sc) = r.stats.iter().find(|x| x.id == "s2") else {
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
    let mut rows = Vec::new();
    for r in &rs {
        let Some(sc) = r.stats.iter().find(|x| x.id == "s3") else {
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

fn analyses(input: &Input) -> String {
    let mut s = String::from("<h2 id=\"analyses\">Analyses</h2>\n");
    let tables = super::analyses::tables(input.results);
    if tables.is_empty() {
        s.push_str("<p class=\"note\">Not in this run (scenarios <code>kv</code> and <code>sampling</code>).</p>\n");
    }
    for t in tables {
        let _ = writeln!(
            s,
            "<h3>{}</h3>\n<p class=\"note\">{}</p>",
            esc(t.title),
            esc(&t.note)
        );
        let rows: Vec<Vec<String>> = t
            .rows
            .iter()
            .map(|r| r.iter().map(|c| esc(c)).collect())
            .collect();
        s.push_str(&table(t.id, &t.head, &t.numeric, &rows));
    }
    s
}

fn charts(input: &Input) -> String {
    let c = super::charts::render(input.manifest, input.results);
    let mut s = String::from("<h2 id=\"charts\">Charts</h2>\n");
    let _ = writeln!(
        s,
        "<p class=\"note\">Error bars: 95 % interval of the median (S2: spread of the throughput windows). Also as files under <a href=\"{d}/\">{d}/</a>.</p>",
        d = super::charts::DIR
    );
    s.push_str("<div class=\"charts\">\n");
    for ch in &c.charts {
        // The SVG's own XML declaration is not allowed inside HTML.
        let svg = ch
            .svg
            .trim_start()
            .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
            .unwrap_or(&ch.svg);
        let _ = writeln!(
            s,
            "<figure id=\"chart-{id}\" class=\"chart\">{svg}<figcaption>{} — <a href=\"{d}/{id}.svg\">{id}.svg</a></figcaption></figure>",
            esc(&ch.title),
            id = esc(&ch.id),
            d = super::charts::DIR
        );
    }
    s.push_str("</div>\n");
    if !c.missing.is_empty() {
        s.push_str("<p class=\"note\">Not drawn:</p><ul class=\"note\" id=\"charts-missing\">");
        for line in &c.missing {
            let _ = write!(s, "<li>{}</li>", esc(line));
        }
        s.push_str("</ul>\n");
    }
    s
}

fn cost(input: &Input) -> String {
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

fn claims(input: &Input) -> String {
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

fn correctness(input: &Input) -> String {
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

fn check(input: &Input) -> String {
    let mut s = String::from("<h2 id=\"check\">Check against baselines</h2>\n");
    let Some(c) = input.check else {
        s.push_str("<p class=\"note\">Not checked yet: <code>cargo xtask check --run &lt;this run&gt;</code> compares it with the baselines of its hardware profile and adds the verdicts here.</p>\n");
        return s;
    };
    let _ = writeln!(
        s,
        "<p>Against {}: <b>{}</b></p>",
        esc(&c.against),
        esc(&c.outcome)
    );
    let rows: Vec<Vec<String>> = c
        .findings
        .iter()
        .map(|f| {
            let v = format!("{:?}", f.verdict);
            let cls = if f.verdict.fails() { "bad" } else { "ok" };
            vec![
                esc(&f.target),
                esc(&f.scenario),
                esc(&f.prompt),
                esc(&f.metric),
                format!("<span class=\"{cls}\">{}</span>", esc(&v)),
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

fn provenance(input: &Input) -> String {
    let m = input.manifest;
    let p = &m.provenance;
    let mut s = String::from("<h2 id=\"provenance\">Provenance</h2>\n");
    let mut kv: Vec<(&str, String)> = vec![
        ("run", m.run_id.clone()),
        ("started", p.started_at.clone()),
        (
            "model",
            format!(
                "{} ({})",
                m.settings.model.name,
                m.settings
                    .model
                    .sha256
                    .iter()
                    .map(|(f, h)| format!("{f} sha256 {}", h.chars().take(16).collect::<String>()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        ("device", m.settings.device.clone()),
        ("threads", m.settings.threads.to_string()),
        ("runtime", m.settings.runtime.clone()),
        ("hardware profile", m.profile.clone()),
        (
            "source revision",
            format!(
                "{}{}",
                p.git_rev,
                if p.git_dirty {
                    " (dirty: uncommitted changes)"
                } else {
                    ""
                }
            ),
        ),
        ("rustc", p.rustc.clone()),
        (
            "CPU",
            format!(
                "{} ({} logical; SIMD: {})",
                p.host.cpu_model,
                p.host.logical_cpus,
                p.host.cpu_simd.join(" ")
            ),
        ),
        (
            "OS",
            format!("{} ({}, {})", p.host.os, p.host.kernel, p.host.arch),
        ),
    ];
    if let Some(bw) = p.read_bandwidth_gb_per_s {
        kv.push(("measured read bandwidth", format!("{bw:.1} GB/s")));
    }
    if let Some(f) = &p.flake_lock_sha256 {
        kv.push(("flake.lock sha256", f.clone()));
    }
    if !p.host.gpus.is_empty() {
        kv.push(("GPUs", p.host.gpus.join("; ")));
    }
    kv.push((
        "GPU clocks",
        p.gpu_clocks.clone().unwrap_or_else(|| "no GPU".into()),
    ));
    if let Some(g) = &p.gpu {
        for d in &g.devices {
            kv.push((
                "GPU state at start",
                format!(
                    "GPU {}: SM {} MHz, memory {} MHz, clock event reasons: {}",
                    d.index,
                    d.clocks.sm_mhz.map_or("?".into(), |v| v.to_string()),
                    d.clocks.mem_mhz.map_or("?".into(), |v| v.to_string()),
                    if d.throttle_reasons.is_empty() {
                        "none".into()
                    } else {
                        d.throttle_reasons.join(", ")
                    }
                ),
            ));
        }
    }
    if let Some(plan) = &m.plan {
        kv.push(("measurement profile", plan.measure.to_string()));
        if let Some(c) = &plan.cpuset_cpus {
            kv.push(("engines pinned to CPUs", c.clone()));
        }
    }
    s.push_str("<table id=\"table-provenance\"><tbody>\n");
    for (k, v) in kv {
        let _ = writeln!(s, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    s.push_str("</tbody></table>\n");
    let rows: Vec<Vec<String>> = first(input.results)
        .iter()
        .map(|r| {
            let e = &r.report.engine;
            let f = r.footprint.as_ref();
            vec![
                esc(&r.target),
                esc(&format!("{} {} ({})", e.name, e.version, e.backend)),
                esc(&e.dtype),
                esc(r.runtime.as_deref().unwrap_or("native")),
                esc(r.image_digest.as_deref().unwrap_or("-")),
                esc(&r.engine_binary_sha256.chars().take(16).collect::<String>()),
                opt(r.report.load.as_ref().map(|l| l.load_ms)),
                opt(r.report.memory.peak_rss_bytes.map(|b| b as f64 / 1048576.0)),
                crate::fmt::mib(f.and_then(|f| f.binary_bytes)),
                crate::fmt::mib(f.and_then(|f| f.image_bytes)),
                crate::fmt::mib(f.and_then(|f| f.environment_bytes)),
            ]
        })
        .collect();
    s.push_str(&table(
        "table-engines",
        &[
            "target",
            "engine",
            "dtype",
            "runtime",
            "image",
            "binary sha256 (first 16)",
            "load ms",
            "peak RSS MiB",
            "binary MiB",
            "image MiB",
            "Python env MiB",
        ],
        &[
            false, false, false, false, false, false, true, true, true, true, true,
        ],
        &rows,
    ));
    s
}

fn files(input: &Input) -> String {
    let mut s = String::from("<h2 id=\"files\">Raw files</h2>\n<ul>\n");
    for (f, what) in [
        (
            "run.json",
            "the run: plan, settings, provenance, every target's outcome",
        ),
        ("report.md", "this report as Markdown"),
    ] {
        let _ = writeln!(s, "<li><a href=\"{f}\">{f}</a> — {what}</li>");
    }
    if input.check.is_some() {
        let _ = writeln!(
            s,
            "<li><a href=\"{f}\">{f}</a> — check verdicts</li>",
            f = lab_results::check::CHECK_FILE
        );
    }
    for t in &input.manifest.targets {
        if let Some(f) = &t.file {
            let _ = writeln!(
                s,
                "<li><a href=\"{f}\">{f}</a> — {} ({:?}): raw samples, statistics, correctness</li>",
                esc(&t.target),
                t.status,
                f = esc(f)
            );
        }
    }
    s.push_str("</ul>\n");
    s
}

/// `compare.html`: the comparison of two runs as one self-contained page.
pub fn compare_page(c: &super::compare::Comparison) -> String {
    use super::compare::Change;
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

#[cfg(test)]
mod tests {
    use super::*;
    use lab_results::claims::Claims;
    use lab_results::cost::Price;
    use lab_results::results::fixture::fixture_engines;

    #[test]
    fn the_page_holds_every_target_chart_claim_and_section_and_nothing_external() {
        let (m, r) = fixture_engines();
        let claims = Claims::builtin();
        let price = Price::new(1.5, Some("a test price")).unwrap();
        let input = Input {
            manifest: &m,
            results: &r,
            price: Some(&price),
            claims: &claims,
            check: None,
        };
        let page = render(&input);
        assert_eq!(page, render(&input), "deterministic");
        for t in &r {
            assert!(
                page.contains(&format!("<tr><td>{}</td>", esc(&t.target))),
                "{}",
                t.target
            );
        }
        for c in crate::charts::render(&m, &r).charts {
            assert!(
                page.contains(&format!("<figure id=\"chart-{}\"", c.id)),
                "{}",
                c.id
            );
        }
        for c in &claims.claims {
            assert!(page.contains(&esc(&c.claim)), "{}", c.id);
        }
        for id in [
            "summary",
            "scenarios",
            "charts",
            "cost",
            "claims",
            "correctness",
            "check",
            "provenance",
            "files",
        ] {
            assert!(page.contains(&format!("<h2 id=\"{id}\">")), "{id}");
        }
        assert!(page.contains("$1.50/h (a test price)"));
        assert!(
            page.contains("mock:hf-f16 (Failed: mock:hf-f16: timed out"),
            "the failed target is in the summary"
        );
        // Self-contained: no URL but relative links to the run's own files.
        for bad in ["http://", "https://", "src=\"", "@import", "<link"] {
            let outside: Vec<&str> = page
                .match_indices(bad)
                .map(|(i, _)| &page[i..(i + 60).min(page.len())])
                .filter(|s| !s.starts_with("http://www.w3.org/2000/svg"))
                .collect();
            assert!(outside.is_empty(), "{bad}: {outside:?}");
        }
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
