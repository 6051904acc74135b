//! The HTML report's provenance (the run's settings, source, host and GPU state, and how each
//! engine ran) and the links to the run's raw files.

use std::fmt::Write as _;

use super::{esc, first, opt, table};
use crate::fmt::ran_under;
use crate::input::Input;
use lab_results::provenance::Provenance;
use lab_results::results::RunManifest;

/// The run's settings and provenance, then where and how each engine ran.
pub(super) fn provenance(input: &Input) -> String {
    let mut s = String::from("<h2 id=\"provenance\">Provenance</h2>\n");
    s.push_str("<table id=\"table-provenance\"><tbody>\n");
    for (k, v) in settings(input.manifest) {
        let _ = writeln!(s, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    s.push_str("</tbody></table>\n");
    s.push_str(&engines(input));
    s
}

/// The run's settings and provenance as (key, value) rows, in the order the page lists them.
fn settings(m: &RunManifest) -> Vec<(&'static str, String)> {
    let p = &m.provenance;
    let mut kv: Vec<(&'static str, String)> = vec![
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
        ("device", m.settings.device.to_string()),
        ("threads", m.settings.threads.to_string()),
        ("runtime", m.settings.runtime.to_string()),
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
    kv.extend(gpus(p));
    if let Some(plan) = &m.plan {
        kv.push(("measurement profile", plan.measure.to_string()));
        if let Some(c) = &plan.cpuset_cpus {
            kv.push(("engines pinned to CPUs", c.clone()));
        }
    }
    kv
}

/// The host's GPUs, their clocks and each one's state at the start.
fn gpus(p: &Provenance) -> Vec<(&'static str, String)> {
    let mut kv = Vec::new();
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
    kv
}

/// One row per target: its engine, how it ran and what it occupied.
fn engines(input: &Input) -> String {
    let rows: Vec<Vec<String>> = first(input.results)
        .iter()
        .map(|r| {
            let e = &r.report.engine;
            let f = r.footprint.as_ref();
            vec![
                esc(&r.target),
                esc(&format!("{} {} ({})", e.name, e.version, e.backend)),
                esc(&e.dtype),
                esc(&ran_under(r)),
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
    table(
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
    )
}

/// Links to the run's raw files.
pub(super) fn files(input: &Input) -> String {
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
