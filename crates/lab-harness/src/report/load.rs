//! The Markdown sections of the load scenarios (S2 throughput, S3 concurrency) and of memory
//! (S4: peak RSS per load level and per long-context prompt).

use std::fmt::Write;

use crate::results::load::{PointStats, SLO_TPOT_MS, SLO_TTFT_MS};
use crate::results::TargetResult;

fn num(v: Option<f64>) -> String {
    v.map(super::markdown::fmt_num)
        .unwrap_or_else(|| "-".into())
}

fn mib(b: Option<u64>) -> String {
    b.map(|b| format!("{:.0}", b as f64 / 1048576.0))
        .unwrap_or_else(|| "-".into())
}

fn dist(p: &PointStats, name: &str, f: fn(&crate::stats::Summary) -> f64) -> String {
    num(p.metrics.get(name).map(f))
}

/// Every level of scenario `id` of every first-run result, with its target and batching.
fn levels<'a>(
    results: &'a [TargetResult],
    id: &'a str,
) -> impl Iterator<Item = (&'a TargetResult, &'a str, &'a PointStats)> + 'a {
    results.iter().filter(|r| r.run() == 1).flat_map(move |r| {
        r.stats
            .iter()
            .filter(move |s| s.id == id)
            .flat_map(move |s| {
                let batching = s.batching.as_deref().unwrap_or("-");
                s.points.iter().map(move |p| (r, batching, p))
            })
    })
}

fn note(p: &PointStats) -> String {
    let mut n = String::new();
    if !p.deterministic {
        n += " NON-DETERMINISTIC";
    }
    if let Some(e) = &p.error {
        let _ = write!(n, " error: {e}");
    }
    n
}

/// S2: one row per target and batch size.
pub fn s2_section(results: &[TargetResult]) -> String {
    let mut s = String::new();
    let rows: Vec<_> = levels(results, "s2").collect();
    if rows.is_empty() {
        return s;
    }
    let _ = writeln!(s, "\n## S2 sustained batched throughput\n");
    let _ = writeln!(s, "Aggregate over every measured batch: prefill tok/s = prompt tokens / time to every first token; decode tok/s = tokens after the first / decode-step time; req/s = sequences / batch time; step = one decode step over the whole batch; windows = output tok/s over time.\n");
    let _ = writeln!(s, "| target | batching | batch | batches | prefill tok/s | decode tok/s | output tok/s | req/s | step p50 ms | step p99 ms | windows tok/s | peak RSS MiB |");
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
    );
    for (r, batching, p) in rows {
        let windows: Vec<String> = p
            .window_tok_per_s
            .iter()
            .map(|&w| super::markdown::fmt_num(w))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {batching} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}{} |",
            r.target,
            p.level,
            batches_of(r, p.level),
            num(p.value("prefill_tok_per_s")),
            num(p.value("decode_tok_per_s")),
            num(p.value("output_tok_per_s")),
            num(p.value("requests_per_s")),
            dist(p, "step_ms", |x| x.median),
            dist(p, "step_ms", |x| x.p99),
            windows.join(" "),
            mib(p.peak_rss_bytes),
            note(p)
        );
    }
    s
}

/// Measured batches of level `b` of S2 in the raw report.
fn batches_of(r: &TargetResult, b: u32) -> usize {
    r.report
        .scenarios
        .iter()
        .filter(|s| s.id == "s2")
        .flat_map(|s| s.points.iter())
        .find(|p| p.level == b)
        .map_or(0, |p| p.batches.len())
}

/// S3: one row per target and concurrency.
pub fn s3_section(results: &[TargetResult]) -> String {
    let mut s = String::new();
    let rows: Vec<_> = levels(results, "s3").collect();
    if rows.is_empty() {
        return s;
    }
    let _ = writeln!(s, "\n## S3 concurrent load\n");
    let _ = writeln!(s, "C clients; TTFT = submit to first token (queueing included); TPOT = (completion − first token) / (tokens − 1); output tok/s = tokens of completed requests / (last completion − first submit); scaling = output tok/s / output tok/s at C = 1; goodput = completed requests/s with TTFT ≤ {SLO_TTFT_MS:.0} ms and TPOT ≤ {SLO_TPOT_MS:.0} ms. Requests: completed / failed / refused of the total.\n");
    let _ = writeln!(s, "| target | batching | C | max batch | requests ok/failed/refused | output tok/s | req/s | scaling | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | e2e p99 ms | goodput req/s | peak RSS MiB |");
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (r, batching, p) in rows {
        let counts = p
            .counts
            .map(|c| format!("{}/{}/{} of {}", c.completed, c.failed, c.refused, c.total))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "| {} | {batching} | {} | {} | {counts} | {} | {} | {} | {} | {} | {} | {} | {} | {}{} |",
            r.target,
            p.level,
            p.max_active,
            num(p.value("output_tok_per_s")),
            num(p.value("requests_per_s")),
            num(p.value("scaling_vs_c1")),
            dist(p, "ttft_ms", |x| x.median),
            dist(p, "ttft_ms", |x| x.p99),
            dist(p, "tpot_ms", |x| x.median),
            dist(p, "e2e_ms", |x| x.p99),
            num(p.value("goodput_requests_per_s")),
            mib(p.peak_rss_bytes),
            note(p)
        );
    }
    s
}

/// S4: peak RSS of every load level and every long-context prompt, per target.
pub fn s4_section(results: &[TargetResult]) -> String {
    let mut s = String::new();
    let mut rows = Vec::new();
    for r in results.iter().filter(|r| r.run() == 1) {
        for sc in &r.report.scenarios {
            for p in &sc.points {
                let what = if sc.id == "s2" { "batch" } else { "C" };
                rows.push((
                    r,
                    sc.id.as_str(),
                    format!("{what} {}", p.level),
                    p.peak_rss_bytes,
                ));
            }
            if sc.id == "s5" {
                for p in &sc.prompts {
                    rows.push((
                        r,
                        "s5",
                        format!("{} tokens", p.prompt_tokens),
                        p.peak_rss_bytes,
                    ));
                }
            }
        }
    }
    if rows.is_empty() {
        return s;
    }
    let _ = writeln!(s, "\n## S4 memory\n");
    let _ = writeln!(s, "Peak resident set size of the engine process during each level or prompt (Linux `VmHWM`, reset at its start); the process peak is in the first table.\n");
    let _ = writeln!(s, "| target | scenario | level | peak RSS MiB |");
    let _ = writeln!(s, "|---|---|---|---:|");
    for (r, id, level, rss) in rows {
        let _ = writeln!(s, "| {} | {id} | {level} | {} |", r.target, mib(rss));
    }
    s
}
