//! The microbenchmark scenario in tests: the `tiny` cases (the model's dimensions, rows 1/4/16,
//! 16 tokens), a few samples each, and the checks every framework must pass: each case ran or
//! says why, and outputs agree across the frameworks run together.

use lab_harness::PreparedTarget;
use lab_protocol::Dtype;
use lab_results::micro::{table, MicroSettings};
use lab_results::results::TargetResult;

/// Runs the micro scenario (tiny shapes, 3 samples, 1 warm-up) for `targets` in `dtypes`.
pub fn run_micro(tag: &str, targets: Vec<PreparedTarget>, dtypes: &[Dtype]) -> Vec<TargetResult> {
    let mut plan = crate::s1_plan(tag, targets, 1, 1, 1);
    plan.spec.scenarios = vec!["micro".into()];
    plan.spec.micro = Some(MicroSettings {
        dtypes: dtypes.to_vec(),
        samples: 3,
        warmup: 1,
        max_case_ms: Some(2_000),
        seed: 11,
        tiny: true,
    });
    crate::run_plan(plan).1
}

/// Every case ran on every target, except `(engine, op)` pairs in `unsupported` (which must say
/// why) and dtypes in `optional` (a framework may not run them: then it says why); every case
/// two or more targets ran has outputs that agree, except the case ids in `disagree` — known
/// numerical differences of a framework, which must still disagree (so a fix shows up).
/// Returns the number of agreeing comparisons.
pub fn assert_micro(
    results: &[TargetResult],
    unsupported: &[(&str, &str)],
    optional: &[Dtype],
    disagree: &[&str],
) -> usize {
    let rows = table(results);
    assert!(!rows.is_empty(), "no target ran the micro scenario");
    let mut agreeing = 0;
    for row in &rows {
        for c in &row.cells {
            let engine = c.target.split(':').next().unwrap_or_default();
            let allowed = unsupported
                .iter()
                .any(|(e, op)| *e == engine && *op == row.case.op.name())
                || optional.contains(&row.case.dtype);
            match (&c.missing, &c.host_us) {
                (None, Some(s)) => assert!(s.n >= 1, "{} {}: no samples", c.target, row.case.id),
                (Some(why), _) if allowed => {
                    assert!(
                        why.len() > 12,
                        "{} {}: a reason, not `{why}`",
                        c.target,
                        row.case.id
                    )
                }
                (m, _) => panic!("{} {}: did not run: {m:?}", c.target, row.case.id),
            }
            let known = disagree.contains(&row.case.id.as_str());
            match c.agrees {
                Some(true) if known => panic!(
                    "{} {}: listed as a known disagreement, but the outputs agree now",
                    c.target, row.case.id
                ),
                Some(true) => agreeing += 1,
                Some(false) if known => {}
                Some(false) => {
                    let sums: Vec<_> = row
                        .cells
                        .iter()
                        .map(|c| {
                            (
                                c.target.as_str(),
                                c.checksum.as_ref().map(|k| (k.sum, k.sum_abs, k.elements)),
                            )
                        })
                        .collect();
                    panic!("{}: outputs disagree: {sums:?}", row.case.id)
                }
                None => {}
            }
        }
    }
    agreeing
}
