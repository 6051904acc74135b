//! The baseline files `check` reads (`baselines/<profile>/<model>/`): a mutated
//! `.metrics.json` through `ensure_comparable` and `check`, a mutated `.tokens.snap` through
//! `check`, against the committed result they were accepted from.

use std::path::Path;

use lab_fuzz as fuzz;
use lab_results::baseline::{self, BaselineDir, CheckOptions};
use lab_results::results::TargetResult;

use crate::{assert_names_file, committed, scratch, shrink, CASES};

const BASELINE: &str = "baselines/cpu-genuineintel-f6m167-2t/smollm2-135m";
const METRICS: &str = "native.gguf-q4_1.s1.metrics.json";
const SNAP: &str = "native.gguf-q4_1.s1.tokens.snap";

/// The committed result the baseline was accepted from (arrays shrunk; the token ids kept).
fn result() -> TargetResult {
    let mut v = committed("results/cpu-7targets-20261122/native.gguf-q4_1.json");
    for s in v["report"]["scenarios"].as_array_mut().unwrap() {
        for p in s["prompts"].as_array_mut().unwrap() {
            for key in ["samples", "top_logits"] {
                if let Some(a) = p.get_mut(key) {
                    shrink(a, 3);
                }
            }
        }
    }
    serde_json::from_value(v).unwrap()
}

/// A baseline directory holding both committed files; `fuzzed` is rewritten by every case.
fn fuzz_file(name: &str, fuzzed: &str, places: &[&str]) {
    let dir = scratch(name);
    let committed_dir = lab_testkit::root().join(BASELINE);
    for f in [METRICS, SNAP] {
        std::fs::copy(committed_dir.join(f), dir.join(f)).unwrap();
    }
    let seed = std::fs::read(committed_dir.join(fuzzed)).unwrap();
    let results = vec![result()];
    let r = &results[0];
    let path = dir.join(fuzzed);
    let check = |dir: &Path| -> lab_harness::Result<()> {
        baseline::ensure_comparable(dir, &r.profile, &r.model.name, &r.model.sha256)?;
        let findings = baseline::check(&results, dir, CheckOptions::default())?;
        assert!(!findings.is_empty());
        let reproduce = baseline::compare(
            &results,
            &BaselineDir(dir),
            &CheckOptions {
                exact_only: true,
                ..CheckOptions::default()
            },
        )?;
        assert!(!reproduce.is_empty());
        Ok(())
    };
    // Each case writes a file and reads the directory: half the budget.
    fuzz::run(name, &[seed], CASES / 2, |bytes| {
        std::fs::write(&path, bytes).unwrap();
        if let Err(e) = check(&dir).inspect(|()| fuzz::accepted()) {
            assert_names_file(&e.to_string(), &path, places);
        }
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fuzz_baseline_metrics() {
    fuzz_file(
        "baseline-metrics",
        METRICS,
        &[
            " line ",
            "accepted on hardware profile",
            "accepted for model",
            "accepted with other weights",
        ],
    );
}

#[test]
fn fuzz_baseline_tokens() {
    fuzz_file(
        "baseline-tokens",
        SNAP,
        &["not an insta snapshot", "not UTF-8 text (byte "],
    );
}
