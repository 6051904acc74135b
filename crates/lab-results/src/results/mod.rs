//! What a run writes under `results/<run-id>/`, and how it is read back.
//!
//! - `run.json`: the run's plan, settings, provenance, profile and the outcome of every target;
//!   written when the run starts (`running`) and rewritten as targets finish and at the end
//!   (`complete`, `interrupted`).
//! - `<engine>.<variant>.json`: one [`TargetResult`] per target, written as soon as that engine
//!   finishes, so an interrupted run keeps every finished engine.
//! - the reports (rendered by `lab-report`): `report.md`, `charts/`, `index.html`.
//!
//! [`schema`] holds the files' types, [`io`] the atomic reads and writes; statistics are derived
//! here from raw samples by [`compute_stats`].

mod io;
pub mod load;
mod schema;

#[cfg(any(test, feature = "fixture"))]
pub mod fixture;

use std::collections::BTreeMap;

use lab_protocol::Report;

pub use io::{load_run, read_json, write_atomic, write_json_atomic};
pub use schema::*;

use crate::metric::Metric;
use crate::stats::summarize;

/// Derives per-prompt statistics from the raw samples of a report (timed scenarios only: the
/// correctness scenarios run once and are compared with the reference instead).
pub fn compute_stats(report: &Report) -> Vec<ScenarioStats> {
    report
        .scenarios
        .iter()
        .filter(|s| !crate::scenario::is_correctness_scenario(&s.id))
        .map(|s| ScenarioStats {
            id: s.id.clone(),
            error: s.error.clone(),
            points: load::point_stats(s),
            batching: s.batching.clone(),
            prompts: if s.kind.is_load() {
                load::level_prompt_stats(s)
            } else {
                s.prompts
                    .iter()
                    .map(|p| {
                        let metrics: BTreeMap<String, _> = Metric::ALL
                            .into_iter()
                            .filter_map(|m| Some((m.name().to_string(), summarize(&m.samples(p))?)))
                            .collect();
                        PromptStats {
                            prompt: p.prompt.clone(),
                            prompt_tokens: p.prompt_tokens,
                            new_tokens: p.generated_token_ids.len() as u32,
                            deterministic: p.deterministic,
                            metrics,
                        }
                    })
                    .collect()
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::fixture::fixture;
    use super::*;

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
    fn results_round_trip_through_json() {
        let (m, r) = fixture();
        let back: TargetResult =
            serde_json::from_str(&serde_json::to_string(&r[0]).unwrap()).unwrap();
        assert_eq!(back, r[0]);
        let back: RunManifest = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn committed_json_schemas_are_up_to_date() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
        for (name, text) in json_schemas() {
            let committed = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            assert!(
                committed == text,
                "crates/lab-results/schema/{name} is stale: run `cargo xtask schema`"
            );
        }
    }

    #[test]
    fn bad_run_directories_get_one_line_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("lab-bad-run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let err = |dir: &std::path::Path| load_run(dir).unwrap_err().to_string();
        assert!(err(&dir).contains("not a run directory"), "{}", err(&dir));

        let (m, r) = fixture();
        write_json_atomic(&dir.join("run.json"), &m).unwrap();
        let text = serde_json::to_string(&r[0]).unwrap();
        std::fs::write(dir.join("mock.hf-f32.json"), &text[..text.len() / 2]).unwrap();
        let e = err(&dir);
        assert!(
            e.contains("mock.hf-f32.json: not valid JSON (corrupt or truncated?)")
                && !e.contains('\n'),
            "{e}"
        );

        let mut old = serde_json::to_value(&r[0]).unwrap();
        old["result_version"] = serde_json::json!(0);
        std::fs::write(dir.join("mock.hf-f32.json"), old.to_string()).unwrap();
        assert!(
            err(&dir).contains("written with result schema version 0; this lab reads version 1")
        );

        write_json_atomic(&dir.join("mock.hf-f32.json"), &r[0]).unwrap();
        assert_eq!(load_run(&dir).unwrap().1, r);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn committed_runs_are_readable() {
        // Every published run directory still loads with today's schema.
        let results = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../results");
        let mut n = 0;
        for e in std::fs::read_dir(&results).unwrap() {
            let dir = e.unwrap().path();
            if dir.join("run.json").exists() {
                let (m, r) = load_run(&dir).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(
                    m.targets.iter().filter(|t| t.file.is_some()).count(),
                    r.len()
                );
                n += 1;
            }
        }
        assert!(n > 0, "no run under {}", results.display());
    }
}
