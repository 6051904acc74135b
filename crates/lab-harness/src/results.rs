//! What a run writes under `results/<run-id>/`, and how it is rendered.
//!
//! - `run.json`: the run's settings, provenance, profile and the outcome of every target; written
//!   when the run starts (`running`) and rewritten at the end (`complete`, `interrupted`).
//! - `<engine>.<variant>.json`: one [`TargetResult`] per target, written as soon as that engine
//!   finishes, so an interrupted run keeps every finished engine.
//! - `report.md`: the summary table.
//!
//! Every file is written atomically (temporary file, then rename).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use lab_protocol::Report;
use serde::{Deserialize, Serialize};

use crate::provenance::Provenance;
use crate::stats::{summarize, Summary};
use crate::{Error, Result};

pub const RESULT_VERSION: u32 = 1;

/// The metrics the harness derives from raw samples, in report order.
pub const METRICS: [&str; 5] = [
    "ttft_ms",
    "prefill_tok_per_s",
    "decode_tok_per_s",
    "e2e_ms",
    "inter_token_ms",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    pub name: String,
    pub synthetic: bool,
    /// The directory engines were given (as the harness saw it).
    pub dir: String,
    /// sha256 of the weight files per file name (from MANIFEST.json or computed).
    pub sha256: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    pub model: ModelInfo,
    pub device: String,
    pub threads: usize,
    pub scenarios: Vec<String>,
    pub warmup_iterations: u32,
    pub iterations: u32,
    pub max_new_tokens: u32,
    pub runtime: String,
    pub timeout_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Complete,
    Interrupted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetStatus {
    Ok,
    /// The engine ran but a scenario or prompt failed (its report says which).
    Partial,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetOutcome {
    pub target: String,
    pub status: TargetStatus,
    pub error: Option<String>,
    /// Result file name within the run directory, when one was written.
    pub file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunManifest {
    pub result_version: u32,
    pub run_id: String,
    pub status: RunStatus,
    pub profile: String,
    pub settings: RunSettings,
    pub provenance: Provenance,
    pub targets: Vec<TargetOutcome>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptStats {
    pub prompt: String,
    pub prompt_tokens: u32,
    pub new_tokens: u32,
    pub deterministic: bool,
    /// Metric name (see [`METRICS`]) -> summary over the measured iterations.
    pub metrics: BTreeMap<String, Summary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioStats {
    pub id: String,
    pub prompts: Vec<PromptStats>,
    pub error: Option<String>,
}

/// One engine target's complete result: raw report, statistics and provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetResult {
    pub result_version: u32,
    pub run_id: String,
    pub target: String,
    pub profile: String,
    pub model: ModelInfo,
    pub engine_binary: String,
    pub engine_binary_sha256: String,
    /// Container image ID (`sha256:…` of the image configuration) when the engine ran in a
    /// container.
    pub image_digest: Option<String>,
    /// How the engine ran (`native`, `podman`, `docker`, `native (fallback: …)`); absent in
    /// results written before containers existed (they ran natively).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Wall time of the engine process as the harness saw it.
    pub process_wall_ms: f64,
    pub provenance: Provenance,
    pub stats: Vec<ScenarioStats>,
    /// Agreement with the model's reference (when the correctness scenarios ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correctness: Option<crate::correctness::Correctness>,
    /// The engine's report, verbatim (raw samples, token ids, load timings, memory, errors).
    pub report: Report,
}

/// Derives per-prompt statistics from the raw samples of a report (timed scenarios only: the
/// correctness scenarios run once and are compared with the reference instead).
pub fn compute_stats(report: &Report) -> Vec<ScenarioStats> {
    report
        .scenarios
        .iter()
        .filter(|s| !crate::catalog::is_correctness_scenario(&s.id))
        .map(|s| ScenarioStats {
            id: s.id.clone(),
            error: s.error.clone(),
            prompts: s
                .prompts
                .iter()
                .map(|p| {
                    let col =
                        |f: &dyn Fn(&lab_protocol::IterationSample) -> Option<f64>| -> Vec<f64> {
                            p.samples.iter().filter_map(f).collect()
                        };
                    let mut metrics = BTreeMap::new();
                    let mut put = |name: &str, v: Vec<f64>| {
                        if let Some(s) = summarize(&v) {
                            metrics.insert(name.to_string(), s);
                        }
                    };
                    put("ttft_ms", col(&|x| Some(x.ttft_ns as f64 / 1e6)));
                    put("e2e_ms", col(&|x| Some(x.e2e_ns as f64 / 1e6)));
                    put(
                        "prefill_tok_per_s",
                        col(&|x| Some(x.prefill_tok_per_s(p.prompt_tokens))),
                    );
                    put("decode_tok_per_s", col(&|x| x.decode_tok_per_s()));
                    put(
                        "inter_token_ms",
                        p.samples
                            .iter()
                            .flat_map(|x| x.inter_token_ns.iter().map(|&n| n as f64 / 1e6))
                            .collect(),
                    );
                    PromptStats {
                        prompt: p.prompt.clone(),
                        prompt_tokens: p.prompt_tokens,
                        new_tokens: p.generated_token_ids.len() as u32,
                        deterministic: p.deterministic,
                        metrics,
                    }
                })
                .collect(),
        })
        .collect()
}

pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("result serializes") + "\n";
    write_atomic(path, text.as_bytes())
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::msg(format!("{}: {e}", path.display())))
}

/// Loads a run directory: its manifest and every target result it lists.
pub fn load_run(dir: &Path) -> Result<(RunManifest, Vec<TargetResult>)> {
    let manifest: RunManifest = read_json(&dir.join("run.json"))?;
    let mut results = Vec::new();
    for t in &manifest.targets {
        if let Some(f) = &t.file {
            results.push(read_json(&dir.join(f))?);
        }
    }
    Ok((manifest, results))
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
pub fn render_markdown(manifest: &RunManifest, results: &[TargetResult]) -> String {
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
                let m = |k: &str, f: fn(&Summary) -> f64| {
                    pr.metrics
                        .get(k)
                        .map(|x| fmt_num(f(x)))
                        .unwrap_or_else(|| "-".into())
                };
                let cv = pr
                    .metrics
                    .get("decode_tok_per_s")
                    .map(|x| format!("{:.1}%", x.cv * 100.0))
                    .unwrap_or_else(|| "-".into());
                let _ = writeln!(
                    s,
                    "| {} | {} | {} ({} tok) | {} | {} | {} | {} | {} | {} | {}{} | {} | {} |",
                    r.target,
                    sc.id,
                    pr.prompt,
                    pr.prompt_tokens,
                    m("ttft_ms", |x| x.median),
                    m("prefill_tok_per_s", |x| x.median),
                    m("decode_tok_per_s", |x| x.median),
                    cv,
                    m("e2e_ms", |x| x.median),
                    m("inter_token_ms", |x| x.p99),
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
    }
    let correctness: Vec<crate::correctness::Correctness> = results
        .iter()
        .filter_map(|r| r.correctness.clone())
        .collect();
    s.push_str(&crate::correctness::render_markdown(&correctness));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::{Host, Provenance};
    use lab_protocol::*;

    fn fixture() -> (RunManifest, Vec<TargetResult>) {
        let provenance = Provenance {
            git_rev: "0123456789abcdef".into(),
            git_dirty: false,
            flake_lock_sha256: None,
            rustc: "rustc 1.95.0".into(),
            started_at: "2026-11-22T00:00:00Z".into(),
            host: Host {
                hostname: "fixture".into(),
                os: "Debian GNU/Linux 12 (bookworm)".into(),
                kernel: "6.1".into(),
                arch: "x86_64".into(),
                cpu_model: "Example CPU".into(),
                cpu_vendor: "GenuineIntel".into(),
                cpu_family: "6".into(),
                cpu_model_number: "167".into(),
                cpu_simd: vec!["avx2".into()],
                logical_cpus: 2,
                memory_bytes: Some(1 << 34),
                gpus: vec![],
            },
        };
        let sample = |ttft_ms: u64, step_ms: u64| IterationSample {
            ttft_ns: ttft_ms * 1_000_000,
            e2e_ns: (ttft_ms + 3 * step_ms) * 1_000_000,
            new_tokens: 4,
            inter_token_ns: vec![step_ms * 1_000_000; 3],
        };
        let report = Report {
            schema_version: SCHEMA_VERSION,
            engine: EngineIdentity {
                name: "mock".into(),
                version: "0.0.0".into(),
                backend: "none".into(),
                device: "cpu".into(),
                dtype: "f32".into(),
                weight_format: WeightFormat::Safetensors,
                threads: 2,
                settings: Default::default(),
            },
            load: Some(LoadTimings {
                process_start_to_ready_ms: 120.0,
                load_ms: 100.0,
            }),
            memory: MemoryUsage {
                peak_rss_bytes: Some(512 << 20),
                peak_device_bytes: None,
            },
            scenarios: vec![ScenarioReport {
                id: "s1".into(),
                kind: ScenarioKind::SingleRequestLatency,
                prompts: vec![PromptReport {
                    prompt: "p10".into(),
                    prompt_tokens: 10,
                    generated_token_ids: vec![1, 2, 3, 4],
                    deterministic: true,
                    warmup_iterations: 1,
                    samples: vec![sample(100, 50), sample(110, 50), sample(90, 40)],
                    top_logits: vec![],
                }],
                error: None,
            }],
            error: None,
        };
        let model = ModelInfo {
            name: "smollm2-135m".into(),
            synthetic: false,
            dir: "models/smollm2-135m".into(),
            sha256: Default::default(),
        };
        let result = TargetResult {
            result_version: RESULT_VERSION,
            run_id: "fixture".into(),
            target: "mock:hf-f32".into(),
            profile: "cpu-fixture".into(),
            model: model.clone(),
            engine_binary: "target/release/mock-engine".into(),
            engine_binary_sha256: "0".repeat(64),
            image_digest: None,
            runtime: Some("native".into()),
            process_wall_ms: 1000.0,
            provenance: provenance.clone(),
            stats: compute_stats(&report),
            correctness: Some(crate::correctness::Correctness {
                target: "mock:hf-f32".into(),
                dtype: "f32".into(),
                top1_agree: 255,
                positions: 256,
                top1_agreement: 255.0 / 256.0,
                gate: 0.99,
                gate_reason: "f32".into(),
                greedy_prefix_tokens: 250,
                greedy_tokens: 256,
                greedy_full_matches: 7,
                max_abs_top1_logit_error: Some(3.1e-5),
                prompts: (0..8)
                    .map(|i| crate::correctness::PromptCorrectness {
                        prompt: format!("q{i}"),
                        top1_agree: 32 - u32::from(i == 0),
                        positions: 32,
                        greedy_prefix: if i == 0 { 26 } else { 32 },
                        greedy_tokens: 32,
                    })
                    .collect(),
                errors: vec![],
            }),
            report,
        };
        let manifest = RunManifest {
            result_version: RESULT_VERSION,
            run_id: "fixture".into(),
            status: RunStatus::Complete,
            profile: "cpu-fixture".into(),
            settings: RunSettings {
                model,
                device: "cpu".into(),
                threads: 2,
                scenarios: vec!["s1".into()],
                warmup_iterations: 1,
                iterations: 3,
                max_new_tokens: 4,
                runtime: "native".into(),
                timeout_s: 60,
            },
            provenance,
            targets: vec![
                TargetOutcome {
                    target: "mock:hf-f32".into(),
                    status: TargetStatus::Ok,
                    error: None,
                    file: Some("mock.hf-f32.json".into()),
                },
                TargetOutcome {
                    target: "mock:hf-f16".into(),
                    status: TargetStatus::Failed,
                    error: Some("mock:hf-f16: timed out after 60 s and was killed".into()),
                    file: None,
                },
            ],
        };
        (manifest, vec![result])
    }

    #[test]
    fn stats_are_derived_from_raw_samples() {
        let (_, r) = fixture();
        let m = &r[0].stats[0].prompts[0].metrics;
        assert_eq!(m["ttft_ms"].median, 100.0);
        // decode: 3 tokens in 150 ms = 20 tok/s, twice; 3 in 120 ms = 25 tok/s
        assert_eq!(m["decode_tok_per_s"].median, 20.0);
        assert_eq!(m["decode_tok_per_s"].max, 25.0);
        assert_eq!(m["prefill_tok_per_s"].median, 100.0);
        assert_eq!(m["inter_token_ms"].n, 9);
    }

    #[test]
    fn markdown_report_of_a_fixed_run() {
        let (m, r) = fixture();
        insta::assert_snapshot!(render_markdown(&m, &r));
    }

    #[test]
    fn results_round_trip_through_json() {
        let (m, r) = fixture();
        let back: TargetResult =
            serde_json::from_str(&serde_json::to_string(&r[0]).unwrap()).unwrap();
        assert_eq!(back, r[0]);
        let back: RunManifest = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}
