//! One report over runs from different machines (`cargo xtask merge`): each run keeps its own
//! provenance (listed first, one line per machine), and the tables put every machine's numbers
//! for the same target, scenario and prompt next to each other. Numbers across hardware are
//! compared as they are; `check` never judges one machine against another.

use std::fmt::Write;

use crate::fmt::fmt_num;
use lab_results::metric::Metric;
use lab_results::results::{RunManifest, TargetResult};
use lab_results::stats::Summary;

/// A run as the merge sees it: its manifest and its first-run results.
pub struct MergedRun<'a> {
    pub manifest: &'a RunManifest,
    pub results: &'a [TargetResult],
}

fn machine(m: &RunManifest) -> String {
    let p = &m.provenance;
    let gpu = p
        .gpu
        .as_ref()
        .and_then(|g| g.devices.first())
        .map(|d| d.name.clone())
        .or_else(|| {
            p.host
                .gpus
                .first()
                .and_then(|r| r.split(',').nth(1))
                .map(|n| n.trim().to_string())
        });
    match (&m.settings.device, gpu) {
        (lab_protocol::Device::Cpu, _) | (_, None) => {
            format!("{} ({} threads)", p.host.cpu_model, m.settings.threads)
        }
        (_, Some(g)) => g,
    }
}

/// The cross-hardware report of `runs`, in the order given.
pub fn render(runs: &[MergedRun]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Merged report of {} runs\n", runs.len());
    let _ = writeln!(
        s,
        "Runs from different machines, each with its own provenance (below and in `runs/<run-id>/`). Numbers across hardware are side by side, not judged against each other; each run is checked against its own machine's baseline with `cargo xtask check`.\n"
    );
    let _ = writeln!(
        s,
        "| run | machine | hardware profile | device | model | profile | source | started | GPU clocks |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        let m = r.manifest;
        let p = &m.provenance;
        let _ = writeln!(
            s,
            "| {} | {} | `{}` | {} | {} | `{}` | {}{} | {} | {} |",
            m.run_id,
            machine(m),
            m.profile,
            m.settings.device,
            m.settings.model.name,
            m.plan
                .as_ref()
                .map_or("?".into(), |p| p.measure.to_string()),
            p.git_rev.get(..10).unwrap_or(&p.git_rev),
            if p.git_dirty { " (dirty)" } else { "" },
            p.started_at,
            p.gpu_clocks.as_deref().unwrap_or("-"),
        );
    }
    let models: std::collections::BTreeSet<&str> = runs
        .iter()
        .map(|r| r.manifest.settings.model.name.as_str())
        .collect();
    if models.len() > 1 {
        let _ = writeln!(
            s,
            "\n**The runs measured different models ({}):** rows are per model.",
            models.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    s.push_str(&single_requests(runs));
    s.push_str(&load_levels(runs));
    s
}

/// S1-style rows: every machine's median for the same target, scenario and prompt together.
fn single_requests(runs: &[MergedRun]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n## Single requests (medians)\n");
    let _ = writeln!(
        s,
        "| target | scenario | prompt | machine | n | TTFT ms | prefill tok/s | decode tok/s | e2e ms | J/token |"
    );
    let _ = writeln!(s, "|---|---|---|---|---:|---:|---:|---:|---:|---:|");
    let keys = prompt_keys(runs);
    for (target, scenario, prompt, tokens) in &keys {
        for r in runs {
            let Some(t) = r
                .results
                .iter()
                .find(|t| t.run() == 1 && t.target == *target)
            else {
                continue;
            };
            let Some(p) = t
                .stats
                .iter()
                .find(|sc| sc.id == *scenario)
                .and_then(|sc| sc.prompts.iter().find(|p| p.prompt == *prompt))
            else {
                continue;
            };
            let m = |k: Metric| {
                p.get(k)
                    .map(|x: &Summary| fmt_num(x.median))
                    .unwrap_or_else(|| "-".into())
            };
            let jpt = t
                .telemetry
                .as_ref()
                .and_then(|tel| {
                    tel.scenarios
                        .iter()
                        .find(|x| x.scenario == *scenario && x.level.is_none())
                })
                .and_then(|x| x.joules_per_token)
                .map(|j| format!("{j:.4}"))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                s,
                "| {target} | {scenario} | {prompt} ({tokens} tok) | {} | {} | {} | {} | {} | {} | {jpt} |",
                machine(r.manifest),
                p.get(Metric::TtftMs).map_or(0, |x| x.n),
                m(Metric::TtftMs),
                m(Metric::PrefillTokPerS),
                m(Metric::DecodeTokPerS),
                m(Metric::E2eMs),
            );
        }
    }
    s
}

/// Every target, scenario and prompt (with its tokens) of the runs' single-request scenarios,
/// in the order first seen.
fn prompt_keys(runs: &[MergedRun]) -> Vec<(String, String, String, u32)> {
    let mut keys: Vec<(String, String, String, u32)> = Vec::new();
    for r in runs {
        for t in r.results.iter().filter(|t| t.run() == 1) {
            for sc in t.stats.iter().filter(|sc| sc.points.is_empty()) {
                for p in &sc.prompts {
                    let k = (
                        t.target.clone(),
                        sc.id.clone(),
                        p.prompt.clone(),
                        p.prompt_tokens,
                    );
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
            }
        }
    }
    keys
}

/// Load levels: throughput per machine.
fn load_levels(runs: &[MergedRun]) -> String {
    let mut s = String::new();
    let mut load = String::new();
    for r in runs {
        for t in r.results.iter().filter(|t| t.run() == 1) {
            for sc in t.stats.iter().filter(|sc| !sc.points.is_empty()) {
                for p in &sc.points {
                    let _ = writeln!(
                        load,
                        "| {} | {} | {} | {} | {} | {} |",
                        t.target,
                        sc.id,
                        p.level,
                        machine(r.manifest),
                        p.value("output_tok_per_s")
                            .map(fmt_num)
                            .unwrap_or_else(|| "-".into()),
                        p.value("requests_per_s")
                            .map(fmt_num)
                            .unwrap_or_else(|| "-".into()),
                    );
                }
            }
        }
    }
    if !load.is_empty() {
        let _ = writeln!(s, "\n## Load levels (S2 batch size, S3 concurrency)\n");
        let _ = writeln!(
            s,
            "| target | scenario | level | machine | output tok/s | req/s |"
        );
        let _ = writeln!(s, "|---|---|---:|---|---:|---:|");
        s.push_str(&load);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_results::results::fixture::fixture;

    #[test]
    fn runs_of_two_machines_sit_side_by_side_with_their_own_provenance() {
        let (m1, r1) = fixture();
        let (mut m2, mut r2) = fixture();
        m2.run_id = "other".into();
        m2.profile = "cpu-genuineintel-f6m143-8t".into();
        m2.provenance.host.cpu_model = "Other CPU".into();
        m2.settings.threads = 8;
        // The second machine decodes twice as fast.
        for t in &mut r2 {
            for sc in &mut t.stats {
                for p in &mut sc.prompts {
                    if let Some(d) = p.metrics.get_mut(Metric::DecodeTokPerS.name()) {
                        d.median *= 2.0;
                    }
                }
            }
        }
        let md = render(&[
            MergedRun {
                manifest: &m1,
                results: &r1,
            },
            MergedRun {
                manifest: &m2,
                results: &r2,
            },
        ]);
        assert!(md.starts_with("# Merged report of 2 runs"));
        assert!(
            md.contains("| fixture | Example CPU (2 threads) | `"),
            "{md}"
        );
        assert!(
            md.contains("| other | Other CPU (8 threads) | `cpu-genuineintel-f6m143-8t`"),
            "{md}"
        );
        // Every prompt row of the first machine is followed by the second's.
        let rows: Vec<&str> = md
            .lines()
            .filter(|l| l.starts_with("| mock:hf-f32 | s1 |"))
            .collect();
        assert!(!rows.is_empty() && rows.len().is_multiple_of(2), "{rows:?}");
        for pair in rows.chunks(2) {
            assert!(
                pair[0].contains("Example CPU") && pair[1].contains("Other CPU"),
                "{pair:?}"
            );
        }
        let p = &r1[0].stats[0].prompts[0];
        let d = p.get(Metric::DecodeTokPerS).unwrap().median;
        assert!(
            rows[0].contains(&format!("| {} |", fmt_num(d))),
            "{}",
            rows[0]
        );
        assert!(
            rows[1].contains(&format!("| {} |", fmt_num(2.0 * d))),
            "{}",
            rows[1]
        );
        assert!(md.contains("## Load levels"));
    }
}
