//! The Markdown report (`report.md`): the summary table of S1, the correctness table and the
//! targets that did not complete.

use std::fmt::Write as _;

use crate::fmt::{fmt_num, mib};
use crate::input::Input;
use lab_results::measure::MIN_SAMPLES;
use lab_results::metric::Metric;
use lab_results::provenance::Provenance;
use lab_results::results::{Correctness, RunManifest, TargetOutcome, TargetResult, TargetStatus};
use lab_results::stats::Summary;
use lab_results::BenchSpec;

/// `report.md`: the summary table, then costs, claims and the check.
pub(crate) fn document(input: &Input) -> String {
    {
        let mut s = render(input.manifest, input.results);
        s.push_str(&cost_section(input));
        s.push_str(&claims_section(input));
        s.push_str(&check_section(input));
        let _ = writeln!(
            s,
            "\nCharts: `{}/`; everything in one page: `{}`.",
            super::charts::DIR,
            crate::input::HTML_FILE
        );
        s
    }
}

/// $ per 1M generated tokens and J/token per target and scenario ([`lab_results::cost`]).
fn cost_section(input: &Input) -> String {
    let rows = lab_results::cost::rows(input.results, input.price);
    if rows.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n## Cost and energy per generated token\n\n");
    match input.price {
        Some(p) => {
            let _ = writeln!(s, "Machine price: {} — `$ / 1M tok` = price ÷ (3600 × output tok/s) × 10⁶ (S1: one request at a time, new tokens ÷ median e2e).\n", p.text());
        }
        None => {
            let _ = writeln!(s, "No price given, so no cost: `cargo xtask report <run> --price-per-hour <USD> --price-source <where from>` adds it (the lab has no prices of its own).\n");
        }
    }
    let _ = writeln!(
        s,
        "| target | scenario | at | output tok/s | $ / 1M tok | J / tok | requests/h within SLO |"
    );
    let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|");
    let opt = |v: Option<f64>, f: fn(f64) -> String| v.map(f).unwrap_or_else(|| "-".into());
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.target,
            r.scenario,
            r.at,
            fmt_num(r.output_tok_per_s),
            opt(r.usd_per_mtok, |v| format!("{v:.3}")),
            opt(r.joules_per_token, |v| format!("{v:.3}")),
            opt(r.slo_requests_per_hour, |v| format!("{v:.0}"))
        );
    }
    s
}

/// Every published claim's verdict on this run.
fn claims_section(input: &Input) -> String {
    let evals = lab_results::claims::evaluate(input.claims, input.manifest, input.results);
    if evals.is_empty() {
        return String::new();
    }
    let mut s = format!("\n## Published claims ({})\n\n", input.claims.file);
    let _ = writeln!(s, "| claim | source | condition | verdict | measured |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for e in evals {
        let verdict = match &e.outcome {
            lab_results::claims::Outcome::NotMeasurable(why) => {
                format!("not measurable here: {why}")
            }
            o => format!("**{}**", o.label()),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {verdict} | {} |",
            e.claim.claim, e.claim.source, e.claim.condition, e.measured
        );
    }
    s
}

/// What `check` said, when it ran on this run.
fn check_section(input: &Input) -> String {
    let Some(c) = input.check else {
        return String::new();
    };
    let mut s = format!(
        "\n## Check against baselines\n\n- against: {}\n- outcome: {}\n",
        c.against, c.outcome
    );
    let failing: Vec<_> = c.findings.iter().filter(|f| f.verdict.fails()).collect();
    for f in failing {
        let _ = writeln!(
            s,
            "- {}: {} {} {} {}: {}",
            f.verdict.label(),
            f.target,
            f.scenario,
            f.prompt,
            f.metric,
            f.detail
        );
    }
    s
}

/// The summary table, as Markdown (also printed at the end of `bench`).
pub fn render(manifest: &RunManifest, results: &[TargetResult]) -> String {
    let mut s = header(manifest, results);
    let _ = writeln!(
        s,
        "\nMedians over the measured iterations (n) of the first run; decode CV is the robust CV (1.4826 · MAD / median) of decode tok/s. † marks fewer than {MIN_SAMPLES} samples per metric: fine for a look, thin for publishing (`--profile standard` takes at least {MIN_SAMPLES}).\n"
    );
    let _ = writeln!(s, "| target | scenario | prompt | n | TTFT ms | prefill tok/s | decode tok/s | decode CV | e2e ms | p99 inter-token ms | new tokens | load ms | peak RSS MiB |");
    let _ = writeln!(
        s,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in results.iter().filter(|r| r.run() == 1) {
        s.push_str(&s1_rows(r));
    }
    s.push_str(&between_runs(results));
    s.push_str(&super::load::batching_section(results));
    s.push_str(&super::load::s2_section(results));
    s.push_str(&super::load::s3_section(results));
    s.push_str(&super::load::s4_section(results));
    s.push_str(&super::gpu::telemetry_section(results));
    s.push_str(&footprint_section(results));
    s.push_str(&super::analyses::markdown(results));
    let correctness: Vec<Correctness> = results
        .iter()
        .filter_map(|r| r.correctness.clone())
        .collect();
    s.push_str(&correctness_table(&correctness));
    s.push_str(&incomplete_targets(manifest));
    s
}

/// What each engine occupies on disk ([`lab_results::footprint`]).
fn footprint_section(results: &[TargetResult]) -> String {
    let rows: Vec<_> = results
        .iter()
        .filter(|r| r.run() == 1)
        .filter_map(|r| Some((r, r.footprint.as_ref()?)))
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\n## Footprint on disk\n\n| target | engine binary MiB | image MiB | Python environment MiB |\n|---|---:|---:|---|\n",
    );
    for (r, f) in rows {
        let env = match (&f.environment_bytes, &f.environment) {
            (Some(b), _) => mib(Some(*b)),
            (None, Some(why)) => format!("- ({why})"),
            (None, None) => "-".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {env} |",
            r.target,
            mib(f.binary_bytes),
            mib(f.image_bytes)
        );
    }
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
    if let Some(plan) = &manifest.plan {
        let _ = writeln!(s, "{}", plan_line(plan));
    }
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
    s.push_str(&gpu_lines(p));
    s.push_str(&engine_lines(results));
    s
}

/// How the run was measured: its profile, time bounds, repeats and CPU pinning.
fn plan_line(plan: &BenchSpec) -> String {
    let mut m = format!("- measurement profile: `{}`", plan.measure);
    if plan.min_duration_ms > 0 {
        m += &format!(
            ", at least {:.0} s per prompt",
            plan.min_duration_ms as f64 / 1e3
        );
    }
    if let Some(max) = plan.max_duration_ms {
        m += &format!(", at most {:.0} s per prompt", max as f64 / 1e3);
    }
    if plan.repeat > 1 {
        m += &format!(", {} runs of the plan", plan.repeat);
    }
    if let Some(c) = &plan.cpuset_cpus {
        m += &format!(", engines pinned to CPUs {c}");
    }
    m
}

/// The host's GPUs, their clocks and each one's state at the start.
fn gpu_lines(p: &Provenance) -> String {
    let mut s = String::new();
    if !p.host.gpus.is_empty() {
        let _ = writeln!(s, "- GPUs: {}", p.host.gpus.join("; "));
    }
    if let Some(c) = &p.gpu_clocks {
        let _ = writeln!(s, "- GPU clocks: {c}");
    }
    if let Some(g) = &p.gpu {
        for d in &g.devices {
            let mhz = |v: Option<u32>| v.map_or("?".to_string(), |v| v.to_string());
            let _ = writeln!(
                s,
                "- GPU {} at start: SM {} MHz (max {}), memory {} MHz, power limit {} W, persistence {}, clock event reasons: {}",
                d.index,
                mhz(d.clocks.sm_mhz),
                mhz(d.clocks.sm_max_mhz),
                mhz(d.clocks.mem_mhz),
                d.power_limit_mw.map_or("?".into(), |w| format!("{:.0}", f64::from(w) / 1e3)),
                match d.persistence_mode {
                    Some(true) => "on",
                    Some(false) => "off",
                    None => "?",
                },
                if d.throttle_reasons.is_empty() {
                    "none".to_string()
                } else {
                    d.throttle_reasons.join(", ")
                }
            );
        }
    }
    s
}

/// Where each engine ran, when not plainly natively: container images, or a fallback.
fn engine_lines(results: &[TargetResult]) -> String {
    let mut s = String::new();
    let placed: Vec<_> = results
        .iter()
        .filter(|r| r.image_digest.is_some() || crate::fmt::ran_under(r) != "native")
        .collect();
    if !placed.is_empty() {
        let _ = writeln!(s, "- engines:");
        for r in placed {
            let _ = writeln!(
                s,
                "  - {}: {}{}",
                r.target,
                crate::fmt::ran_under(r),
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
        // Load levels have their own sections (their per-level statistics serve `check`).
        let prompts = if sc.points.is_empty() {
            sc.prompts.as_slice()
        } else {
            &[]
        };
        for pr in prompts {
            let m = |k: Metric, f: fn(&Summary) -> f64| {
                pr.get(k)
                    .map(|x| fmt_num(f(x)))
                    .unwrap_or_else(|| "-".into())
            };
            // One sample has no spread to speak of.
            let cv = pr
                .get(Metric::DecodeTokPerS)
                .filter(|x| x.n > 1)
                .map(|x| format!("{:.1}%", x.noise() * 100.0))
                .unwrap_or_else(|| "-".into());
            let n = pr.get(Metric::TtftMs).map_or(0, |x| x.n);
            let _ = writeln!(
                s,
                "| {} | {} | {} ({} tok) | {n}{} | {} | {} | {} | {} | {} | {} | {}{} | {} | {} |",
                r.target,
                sc.id,
                pr.prompt,
                pr.prompt_tokens,
                if n < MIN_SAMPLES { " †" } else { "" },
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
                "| {} | {} | error: {e} | | | | | | | | | | |",
                r.target, sc.id
            );
        }
    }
    s
}

/// Under `--repeat`: per target and prompt, the spread of the run medians of decode tok/s and
/// TTFT (mean, CV across runs, 95 % interval): the "variance across test runs".
fn between_runs(results: &[TargetResult]) -> String {
    let groups = lab_results::baseline::by_target(results);
    let Some(runs) = groups.iter().map(|(_, v)| v.len()).max().filter(|&n| n > 1) else {
        return String::new();
    };
    let mut s = format!(
        "\nBetween {runs} runs of the plan (targets interleaved): mean of the run medians, CV across runs, 95 % interval (Student's t).\n\n| target | scenario | prompt | runs | decode tok/s | decode CV across runs | decode 95 % interval | TTFT ms | TTFT CV across runs |\n|---|---|---|---:|---:|---:|---|---:|---:|\n"
    );
    for (target, runs) in &groups {
        for sc in &runs[0].stats {
            for p in &sc.prompts {
                let obs = |m| lab_results::baseline::observe(runs, &sc.id, &p.prompt, m);
                let (Some(d), Some(t)) = (obs(Metric::DecodeTokPerS), obs(Metric::TtftMs)) else {
                    continue;
                };
                let interval = d
                    .interval
                    .map(|[a, b]| format!("{}–{}", fmt_num(a), fmt_num(b)))
                    .unwrap_or_else(|| "-".into());
                let _ = writeln!(
                    s,
                    "| {target} | {} | {} | {} | {} | {:.1}% | {interval} | {} | {:.1}% |",
                    sc.id,
                    p.prompt,
                    d.runs,
                    fmt_num(d.value),
                    d.noise * 100.0,
                    fmt_num(t.value),
                    t.noise * 100.0
                );
            }
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
    use lab_results::results::fixture::fixture;

    #[test]
    fn markdown_report_of_a_fixed_run() {
        let (m, r) = fixture();
        insta::assert_snapshot!(super::render(&m, &r));
    }

    #[test]
    fn repeated_runs_get_a_between_run_table_and_one_row_each() {
        let (m, mut r) = fixture();
        let mut again = r[0].clone();
        again.repetition = Some(2);
        for p in &mut again.stats[0].prompts {
            for s in p.metrics.values_mut() {
                s.median *= 1.1;
            }
        }
        r.push(again);
        let text = super::render(&m, &r);
        assert_eq!(
            text.matches("| mock:hf-f32 | s1 | p10 (10 tok) |").count(),
            1
        );
        assert!(text.contains("Between 2 runs of the plan"), "{text}");
        // decode medians 20 and 22: mean 21, CV 6.7 %.
        assert!(
            text.contains("| mock:hf-f32 | s1 | p10 | 2 | 21.0 | 6.7% |"),
            "{text}"
        );
        assert!(text.contains("| 3 † |"), "three samples are marked: {text}");
    }
}
