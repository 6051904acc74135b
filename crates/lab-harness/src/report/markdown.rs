//! The Markdown report (`report.md`): the summary table of S1, the correctness table and the
//! targets that did not complete.

use std::fmt::Write as _;

use super::Exporter;
use crate::metric::Metric;
use crate::results::{Correctness, RunManifest, TargetOutcome, TargetResult, TargetStatus};
use crate::stats::Summary;

pub struct Markdown;

impl Exporter for Markdown {
    fn file_name(&self) -> &'static str {
        "report.md"
    }

    fn render(&self, manifest: &RunManifest, results: &[TargetResult]) -> String {
        render(manifest, results)
    }
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The summary table, as Markdown (also printed at the end of `bench`).
pub fn render(manifest: &RunManifest, results: &[TargetResult]) -> String {
    let mut s = header(manifest, results);
    let _ = writeln!(
        s,
        "\nMedians over iterations; CV = std/mean of decode tok/s.\n"
    );
    let _ = writeln!(s, "| target | scenario | prompt | TTFT ms | prefill tok/s | decode tok/s | decode CV | e2e ms | p99 inter-token ms | new tokens | load ms | peak RSS MiB |");
    let _ = writeln!(
        s,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in results {
        s.push_str(&s1_rows(r));
    }
    let correctness: Vec<Correctness> = results
        .iter()
        .filter_map(|r| r.correctness.clone())
        .collect();
    s.push_str(&correctness_table(&correctness));
    s.push_str(&incomplete_targets(manifest));
    s
}

/// The run's settings, provenance and where each engine ran.
fn header(manifest: &RunManifest, results: &[TargetResult]) -> String {
    let mut s = String::new();
    let st = &manifest.settings;
    let synthetic = if st.model.synthetic {
        " (SYNTHETIC random weights: speed only, outputs meaningless)"
    } else {
        ""
    };
    let _ = writeln!(s, "# Run {}\n", manifest.run_id);
    let _ = writeln!(s, "- status: {:?}", manifest.status);
    let _ = writeln!(s, "- model: {}{synthetic}", st.model.name);
    let _ = writeln!(
        s,
        "- device: {}, threads: {}, runtime: {}, profile: `{}`",
        st.device, st.threads, st.runtime, manifest.profile
    );
    let _ = writeln!(
        s,
        "- iterations: {} (+{} warm-up) per prompt, {} new tokens, greedy",
        st.iterations, st.warmup_iterations, st.max_new_tokens
    );
    let p = &manifest.provenance;
    let _ = writeln!(
        s,
        "- source: {}{}; {}; CPU: {} ({} logical); OS: {}",
        p.git_rev,
        if p.git_dirty { " (dirty)" } else { "" },
        p.rustc,
        p.host.cpu_model,
        p.host.logical_cpus,
        p.host.os
    );
    if !p.host.gpus.is_empty() {
        let _ = writeln!(s, "- GPUs: {}", p.host.gpus.join("; "));
    }
    // Where each engine ran, when not plainly natively: container images, or a fallback.
    let placed: Vec<_> = results
        .iter()
        .filter(|r| {
            r.image_digest.is_some() || r.runtime.as_deref().unwrap_or("native") != "native"
        })
        .collect();
    if !placed.is_empty() {
        let _ = writeln!(s, "- engines:");
        for r in placed {
            let _ = writeln!(
                s,
                "  - {}: {}{}",
                r.target,
                r.runtime.as_deref().unwrap_or("native"),
                r.image_digest
                    .as_ref()
                    .map(|d| format!(", image {d}"))
                    .unwrap_or_default()
            );
        }
    }
    s
}

/// One row per prompt of each timed scenario of `r`, and a row per scenario error.
fn s1_rows(r: &TargetResult) -> String {
    let mut s = String::new();
    let load = r
        .report
        .load
        .as_ref()
        .map(|l| fmt_num(l.load_ms))
        .unwrap_or_else(|| "-".into());
    let rss = r
        .report
        .memory
        .peak_rss_bytes
        .map(|b| format!("{:.0}", b as f64 / 1048576.0))
        .unwrap_or_else(|| "-".into());
    for sc in &r.stats {
        for pr in &sc.prompts {
            let m = |k: Metric, f: fn(&Summary) -> f64| {
                pr.get(k)
                    .map(|x| fmt_num(f(x)))
                    .unwrap_or_else(|| "-".into())
            };
            let cv = pr
                .get(Metric::DecodeTokPerS)
                .map(|x| format!("{:.1}%", x.cv * 100.0))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                s,
                "| {} | {} | {} ({} tok) | {} | {} | {} | {} | {} | {} | {}{} | {} | {} |",
                r.target,
                sc.id,
                pr.prompt,
                pr.prompt_tokens,
                m(Metric::TtftMs, |x| x.median),
                m(Metric::PrefillTokPerS, |x| x.median),
                m(Metric::DecodeTokPerS, |x| x.median),
                cv,
                m(Metric::E2eMs, |x| x.median),
                m(Metric::InterTokenMs, |x| x.p99),
                pr.new_tokens,
                if pr.deterministic {
                    ""
                } else {
                    " (NON-DETERMINISTIC)"
                },
                load,
                rss
            );
        }
        if let Some(e) = &sc.error {
            let _ = writeln!(
                s,
                "| {} | {} | error: {e} | | | | | | | | | |",
                r.target, sc.id
            );
        }
    }
    s
}

/// The targets that did not complete, with their status and error.
fn incomplete_targets(manifest: &RunManifest) -> String {
    let mut s = String::new();
    let failed: Vec<&TargetOutcome> = manifest
        .targets
        .iter()
        .filter(|t| t.status != TargetStatus::Ok)
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(s, "\n## Targets that did not complete\n");
        for t in failed {
            let _ = writeln!(
                s,
                "- {}: {:?}: {}",
                t.target,
                t.status,
                t.error.as_deref().unwrap_or("")
            );
        }
    }
    s
}

/// The correctness table of a report (Markdown).
fn correctness_table(rows: &[Correctness]) -> String {
    let mut s = String::new();
    if rows.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "\nCorrectness against the reference (transformers on the original GGUF, F32):\n"
    );
    let _ = writeln!(
        s,
        "| target | teacher-forced top-1 | gate | greedy prefix tokens | identical greedy prompts | max top-1 logit error | verdict |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---|");
    for c in rows {
        let _ = writeln!(
            s,
            "| {} | {}/{} ({:.1} %) | {:.0} % | {}/{} | {}/{} | {} | {} |",
            c.target,
            c.top1_agree,
            c.positions,
            c.top1_agreement * 100.0,
            c.gate * 100.0,
            c.greedy_prefix_tokens,
            c.greedy_tokens,
            c.greedy_full_matches,
            c.prompts.len(),
            c.max_abs_top1_logit_error
                .map(|e| format!("{e:.2e}"))
                .unwrap_or_else(|| "-".into()),
            if c.passes() {
                "pass".to_string()
            } else if c.errors.is_empty() {
                "FAIL (below gate)".to_string()
            } else {
                format!("FAIL ({})", c.errors.join("; "))
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use crate::results::fixture::fixture;

    #[test]
    fn markdown_report_of_a_fixed_run() {
        let (m, r) = fixture();
        insta::assert_snapshot!(super::render(&m, &r));
    }
}
