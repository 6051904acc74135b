//! The LoRA training-step scenario in tests: a short sequence, a few steps, and the checks every
//! framework must pass against the others: the same first loss, the same first gradients, and
//! a loss that falls on its fixed batch.

use lab_harness::PreparedTarget;
use lab_results::results::TargetResult;
use lab_results::train::{rows, LoraSettings, GRAD_TOLERANCE, LOSS_TOLERANCE};

/// Runs the LoRA scenario for `targets`: `seq` predicted positions, 1 warm-up and `steps`
/// measured steps.
pub fn run_lora(
    tag: &str,
    targets: Vec<PreparedTarget>,
    seq: u32,
    steps: u32,
) -> Vec<TargetResult> {
    let mut plan = crate::s1_plan(tag, targets, 1, 1, 1);
    plan.spec.scenarios = vec!["lora".into()];
    plan.spec.lora = Some(LoraSettings::standard(seq, steps, 1, 5));
    crate::run_plan(plan).1
}

/// Every target trained, agrees with the others on the first loss and the first gradients, and
/// its loss fell.
pub fn assert_lora(results: &[TargetResult]) {
    let (rows, missing) = rows(results);
    assert!(missing.is_empty(), "{missing:?}");
    assert_eq!(rows.len(), results.len());
    for r in &rows {
        assert!(
            r.last_loss < r.first_loss,
            "{}: loss {} → {}",
            r.target,
            r.first_loss,
            r.last_loss
        );
        assert!(
            r.loss_rel_diff.is_some_and(|d| d <= LOSS_TOLERANCE),
            "{}: first loss {} differs by {:?}",
            r.target,
            r.first_loss,
            r.loss_rel_diff
        );
        assert!(r.trainable_params > 0);
    }
    // The first target is the others' reference; every other one must have agreed with it
    // (an empty or mismatched gradient list is an infinite difference, never a pass).
    assert_eq!(rows[0].grad_rel_diff, None);
    for r in &rows[1..] {
        assert!(
            r.grad_rel_diff.is_some_and(|d| d <= GRAD_TOLERANCE),
            "{}: first-step gradients differ by {:?}",
            r.target,
            r.grad_rel_diff
        );
    }
}
