//! A run directory: a mutated `run.json` (its result files present) or a mutated result file
//! (listed by a valid `run.json`) through `load_run`, then what `report`, `reproduce` and
//! `compare` do with the loaded run: statistics and analyses, the comparison with itself and
//! every report rendered in memory.

use std::path::Path;

use lab_fuzz as fuzz;
use lab_report::{self as report, Input};
use lab_results::claims::Claims;
use lab_results::correctness::Reference;
use lab_results::results::{load_run, RunManifest, TargetResult};
use serde_json::json;

use crate::protocol::{derive, result_seeds};
use crate::{assert_names_file, committed, scratch, CASES};

/// What a loaded run is used with: the committed claims and reference.
struct Context {
    claims: Claims,
    reference: Reference,
}

impl Context {
    fn new() -> Self {
        Context {
            claims: Claims::builtin(),
            reference: lab_testkit::reference(),
        }
    }
}

/// A loaded run, used as the harness uses it.
fn use_run(manifest: &RunManifest, results: &[TargetResult], cx: &Context) {
    for r in results {
        derive(r, &cx.reference);
    }
    let input = Input {
        manifest,
        results,
        price: manifest.plan.as_ref().and_then(|p| p.price.as_ref()),
        claims: &cx.claims,
        check: None,
    };
    for e in report::exporters() {
        let _ = e.render(&input);
    }
    let _ = report::compare::compare((manifest, results), (manifest, results));
}

/// What a failed `load_run` may say: where in a file, which version, what the OS said.
const PLACES: [&str; 5] = [
    " line ",
    "result_version",
    "result schema version",
    "not a plain file name",
    "(os error ",
];

fn load_and_use(dir: &Path, cx: &Context) {
    match load_run(dir) {
        Ok((m, results)) => {
            fuzz::accepted();
            use_run(&m, &results, cx)
        }
        // run.json or the result file at fault, by name
        Err(e) => assert_names_file(&e.to_string(), dir, &PLACES),
    }
}

#[test]
fn fuzz_run_json() {
    let dir = scratch("run-json");
    let mut seeds = Vec::new();
    for run in ["baseline-cpu-20261122", "cpu-micro-lora-quick-20261129"] {
        let manifest = committed(&format!("results/{run}/run.json"));
        for t in manifest["targets"].as_array().unwrap() {
            let Some(file) = t["file"].as_str() else {
                continue;
            };
            let mut r = committed(&format!("results/{run}/{file}"));
            crate::shrink(&mut r, 4);
            std::fs::write(dir.join(file), pretty!(r)).unwrap();
        }
        seeds.push(pretty!(manifest));
    }
    let cx = Context::new();
    let run_json = dir.join("run.json");
    fuzz::run("run-json", &seeds, CASES / 5, |bytes| {
        std::fs::write(&run_json, bytes).unwrap();
        load_and_use(&dir, &cx);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fuzz_result_file() {
    let dir = scratch("result-file");
    let mut manifest = committed("results/cpu-7targets-20261122/run.json");
    manifest["targets"] = json!([
        {"target": "native:gguf-q4_1", "status": "ok", "error": null, "file": "t.json"}
    ]);
    std::fs::write(dir.join("run.json"), pretty!(manifest)).unwrap();
    let seeds: Vec<Vec<u8>> = result_seeds().iter().map(|r| pretty!(r)).collect();
    let cx = Context::new();
    let file = dir.join("t.json");
    fuzz::run("result-file", &seeds, CASES / 5, |bytes| {
        std::fs::write(&file, bytes).unwrap();
        load_and_use(&dir, &cx);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `claims/claims.json`, parsed strictly (errors name the file and the claim or the place).
#[test]
fn fuzz_claims() {
    let seed = std::fs::read(lab_testkit::root().join("claims/claims.json")).unwrap();
    fuzz::run("claims", &[seed], CASES, |bytes| {
        let Ok(text) = std::str::from_utf8(bytes) else {
            return;
        };
        if let Err(e) = Claims::parse(text, "claims.json").inspect(|_| fuzz::accepted()) {
            let e = e.to_string();
            crate::assert_one_line(&e);
            assert!(
                e.starts_with("claims.json: ") && (e.contains(" line ") || e.contains("claim `")),
                "{e}"
            );
        }
    });
}
