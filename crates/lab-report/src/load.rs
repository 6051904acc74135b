//! The Markdown sections of the load scenarios (S2 throughput, S3 concurrency) and of memory
//! (S4: peak RSS per load level and per long-context prompt).

use lab_results::ScenarioId;
use std::fmt::Write;

use lab_results::results::load::{PointStats, SLO_TPOT_MS, SLO_TTFT_MS};
use lab_results::results::TargetResult;

fn num(v: Option<f64>) -> String {
    v.map(crate::fmt::fmt_num).unwrap_or_else(|| "-".into())
}

fn mib(b: Option<u64>) -> String {
    b.map(|b| format!("{:.0}", b as f64 / 1048576.0))
        .unwrap_or_else(|| "-".into())
}

fn dist(p: &PointStats, name: &str, f: fn(&lab_results::stats::Summary) -> f64) -> String {
    num(p.metrics.get(name).map(f))
}

/// The first words of a batching label (before its details), for a table cell; the whole label
/// is listed once by [`batching_section`].
pub fn short_batching(label: &str) -> &str {
    const SERIAL: &str = "none (serial)";
    if label.starts_with(SERIAL) {
        return SERIAL;
    }
    let end = [" (", " [", ":", ";", ","]
        .iter()
        .filter_map(|sep| label.find(sep))
        .min()
        .unwrap_or(label.len());
    label[..end].trim()
}

#[cfg(test)]
#[test]
fn short_labels_end_before_the_details() {
    assert_eq!(
        short_batching("continuous (one pass, up to 64)"),
        "continuous"
    );
    assert_eq!(short_batching("lock-step [batch, seq] input"), "lock-step");
    assert_eq!(short_batching("none (serial): why"), "none (serial)");
    assert_eq!(
        short_batching("dynamic batches: waiting requests"),
        "dynamic batches"
    );
    assert_eq!(short_batching("plain"), "plain");
}

/// How each target batched S2 and S3, every label written out once.
pub fn batching_section(results: &[TargetResult]) -> String {
    let mut s = String::new();
    let mut rows = Vec::new();
    for r in results.iter().filter(|r| r.run() == 1) {
        let label = |id: &str| {
            r.report
                .scenarios
                .iter()
                .find(|s| s.id == id)
                .and_then(|s| s.batching.clone())
        };
        let (s2, s3) = (label("s2"), label("s3"));
        if s2.is_some() || s3.is_some() {
            rows.push((r.target.clone(), s2, s3));
        }
    }
    if rows.is_empty() {
        return s;
    }
    let _ = writeln!(s, "\n## How each engine batches\n");
    let _ = writeln!(
        s,
        "Each engine is driven the way its users drive it; the tables below show the first words."
    );
    let _ = writeln!(
        s,
        "\n| target | S2 (static batches) | S3 (concurrent requests) |"
    );
    let _ = writeln!(s, "|---|---|---|");
    for (t, s2, s3) in rows {
        let _ = writeln!(
            s,
            "| {t} | {} | {} |",
            s2.as_deref().unwrap_or("-"),
            s3.as_deref().unwrap_or("-")
        );
    }
    s
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
                let batching = s.batching.as_deref().map_or("-", short_batching);
                s.points.iter().map(move |p| (r, batching, p))
            })
    })
}

fn note(p: &PointStats) -> String {
    let mut n = String::new();
    if !p.deterministic {
        n += " NON-DETERMINISTIC";
    }
    if let Some((differ, of)) = p.differ_from_level1.filter(|d| d.0 > 0) {
        let _ = write!(n, " ids of {differ}/{of} prompts differ from level 1");
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
    let _ = writeln!(s, "Aggregate over every measured batch: prefill tok/s = prompt tokens / time to every first token; decode tok/s = tokens after the first / decode-step time; req/s = sequences / batch time; step = one decode step over the whole batch; windows = output tok/s over time. \"ids of k/n prompts differ from level 1\": greedy ids generated in a batch that differ from the same prompt's ids at batch size 1.\n");
    let _ = writeln!(s, "| target | batching | batch | batches | prefill tok/s | decode tok/s | output tok/s | req/s | step p50 ms | step p99 ms | windows tok/s | peak RSS MiB |");
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
    );
    for (r, batching, p) in rows {
        let windows: Vec<String> = p
            .window_tok_per_s
            .iter()
            .map(|&w| crate::fmt::fmt_num(w))
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
        .filter(|s| s.id == ScenarioId::S2)
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
    let _ = writeln!(s, "C clients; TTFT = submit to first token (queueing included); TPOT = (completion − first token) / (tokens − 1); output tok/s = tokens of completed requests / (last completion − first submit); scaling = output tok/s / output tok/s at C = 1; goodput = completed requests/s with TTFT ≤ {SLO_TTFT_MS:.0} ms and TPOT ≤ {SLO_TPOT_MS:.0} ms. Requests: completed / failed / refused of the total. \"ids of k/n prompts differ from level 1\": greedy ids generated under concurrency that differ from the same prompt's ids at C = 1.\n");
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
                let what = if sc.id == ScenarioId::S2 {
                    "batch"
                } else {
                    "C"
                };
                rows.push((
                    r,
                    sc.id.as_str(),
                    format!("{what} {}", p.level),
                    p.peak_rss_bytes,
                ));
            }
            if sc.id == ScenarioId::S5 {
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
    let _ = writeln!(s, "Peak resident set size of the engine process during each level or prompt (Linux `VmHWM`, reset at its start); the process peak is in the first table. KV bytes/token as the engine reports it (its cache's dtype and shape).\n");
    let _ = writeln!(
        s,
        "| target | scenario | level | peak RSS MiB | KV bytes/token |"
    );
    let _ = writeln!(s, "|---|---|---|---:|---:|");
    for (r, id, level, rss) in rows {
        let kv = r
            .report
            .engine
            .settings
            .get("kv_cache_bytes_per_token")
            .map_or("-", String::as_str);
        let _ = writeln!(s, "| {} | {id} | {level} | {} | {kv} |", r.target, mib(rss));
    }
    s.push_str(&bandwidth(results));
    s
}

/// Achieved weight-read bandwidth of engines that report their weight bytes per decode step:
/// bytes × decode steps per second (S1: one token per step; S2: one step per batch), against
/// the machine's read bandwidth measured with the run.
fn bandwidth(results: &[TargetResult]) -> String {
    let mut rows = Vec::new();
    for r in results.iter().filter(|r| r.run() == 1) {
        let Some(bytes) = r
            .report
            .engine
            .settings
            .get("weight_bytes_per_token")
            .and_then(|b| b.parse::<f64>().ok())
        else {
            continue;
        };
        let machine = r.provenance.read_bandwidth_gb_per_s;
        let mut row = |what: String, steps_per_s: Option<f64>| {
            let gbs = steps_per_s.map(|x| x * bytes / 1e9);
            let pct = gbs
                .zip(machine)
                .map(|(g, m)| format!("{:.0}%", 100.0 * g / m));
            rows.push(format!(
                "| {} | {what} | {} | {} |",
                r.target,
                num(gbs),
                pct.unwrap_or_else(|| "-".into())
            ));
        };
        for sc in r.stats.iter().filter(|s| s.id == ScenarioId::S1) {
            for p in &sc.prompts {
                let decode = p
                    .get(lab_results::metric::Metric::DecodeTokPerS)
                    .map(|x| x.median);
                row(format!("s1 {} decode", p.prompt), decode);
            }
        }
        for sc in r.report.scenarios.iter().filter(|s| s.id == ScenarioId::S2) {
            for p in &sc.points {
                let steps: usize = p.batches.iter().map(|b| b.step_ns.len()).sum();
                let ns = p
                    .batches
                    .iter()
                    .map(|b| b.decode_ns())
                    .fold(0, u64::saturating_add);
                row(
                    format!("s2 batch {} decode", p.level),
                    (ns > 0).then(|| steps as f64 / (ns as f64 / 1e9)),
                );
            }
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    let machine = results
        .first()
        .and_then(|r| r.provenance.read_bandwidth_gb_per_s)
        .map(|m| format!("{m:.1} GB/s (`native-membw`, measured with the run)"))
        .unwrap_or_else(|| "not measured in this run".into());
    let mut s = format!("\nAchieved weight-read bandwidth at decode (weight bytes per step × steps/s; the machine's read bandwidth: {machine}):\n\n");
    s.push_str("| target | where | GB/s | % of machine |\n|---|---|---:|---:|\n");
    for r in rows {
        s.push_str(&r);
        s.push('\n');
    }
    s
}
