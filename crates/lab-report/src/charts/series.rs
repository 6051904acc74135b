//! The data every chart draws: one series of points per target, in the target's colour, picked
//! from its first-run results (prompts, load levels, iterations or telemetry samples).

use lab_results::metric::Metric;
use lab_results::results::TargetResult;
use lab_results::ScenarioId;

use super::{colour_of, Pt, Series};

/// One series per target, in its colour, from the points `f` finds in its result (a target
/// without points has no series).
fn per_target(
    first: &[&TargetResult],
    targets: &[String],
    f: impl Fn(&TargetResult) -> Option<Vec<Pt>>,
) -> Vec<Series> {
    first
        .iter()
        .filter_map(|r| {
            let points = f(r)?;
            (!points.is_empty()).then(|| Series {
                name: r.target.clone(),
                colour: colour_of(targets, &r.target),
                points,
            })
        })
        .collect()
}

/// Per target, `metric`'s median per prompt of `scenario`, x = prompt tokens.
pub(super) fn prompt_series(
    first: &[&TargetResult],
    targets: &[String],
    scenario: &str,
    metric: Metric,
) -> Vec<Series> {
    per_target(first, targets, |r| {
        let s = r.stats.iter().find(|s| s.id == scenario)?;
        let points: Vec<Pt> = s
            .prompts
            .iter()
            .filter_map(|p| {
                let m = p.get(metric)?;
                Some(Pt {
                    x: f64::from(p.prompt_tokens),
                    y: m.median,
                    bar: Some(lab_results::ratio::interval(m)),
                })
            })
            .collect();
        Some(points)
    })
}

/// Per target, one value per load level of `scenario`, x = the level.
pub(super) fn level_series(
    first: &[&TargetResult],
    targets: &[String],
    scenario: &str,
    value: impl Fn(&lab_results::results::load::PointStats) -> Option<(f64, Option<(f64, f64)>)>,
) -> Vec<Series> {
    per_target(first, targets, |r| {
        let s = r.stats.iter().find(|s| s.id == scenario)?;
        let points: Vec<Pt> = s
            .points
            .iter()
            .filter_map(|p| {
                let (y, bar) = value(p)?;
                Some(Pt {
                    x: f64::from(p.level),
                    y,
                    bar,
                })
            })
            .collect();
        Some(points)
    })
}

/// The empirical CDF of S1 end-to-end latency per target, at the longest S1 prompt every
/// target measured (the same work for all).
pub(super) fn latency_cdf(first: &[&TargetResult], targets: &[String]) -> (String, Vec<Series>) {
    let common = first
        .iter()
        .filter(|r| r.stats.iter().any(|s| s.id == ScenarioId::S1))
        .map(|r| lab_results::ratio::s1_prompts(r))
        .reduce(|a, b| a.into_iter().filter(|p| b.contains(p)).collect())
        .unwrap_or_default();
    let Some((prompt, _)) = common.into_iter().max_by_key(|(_, n)| *n) else {
        return ("S1 end-to-end latency CDF".into(), Vec::new());
    };
    let series = per_target(first, targets, |r| {
        let sc = r.report.scenarios.iter().find(|s| s.id == ScenarioId::S1)?;
        let p = sc.prompts.iter().find(|p| p.prompt == prompt)?;
        let mut v = Metric::E2eMs.samples(p);
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        let points: Vec<Pt> = v
            .iter()
            .enumerate()
            .map(|(i, &x)| Pt {
                x,
                y: (i + 1) as f64 / n,
                bar: None,
            })
            .collect();
        Some(points)
    });
    (
        format!("S1 end-to-end latency CDF, prompt {prompt} (every measured iteration)"),
        series,
    )
}

/// Per target, the first GPU's samples picked by `pick`, x = seconds since the first sample.
pub(super) fn telemetry_series(
    first: &[&TargetResult],
    targets: &[String],
    pick: fn(&lab_gpu::Sample) -> Option<f64>,
) -> Vec<Series> {
    per_target(first, targets, |r| {
        let dev = r.telemetry.as_ref()?.raw.devices.first()?;
        let t0 = dev.samples.first()?.t_unix_ns;
        let points: Vec<Pt> = dev
            .samples
            .iter()
            .filter_map(|s| {
                Some(Pt {
                    x: s.t_unix_ns.saturating_sub(t0) as f64 / 1e9,
                    y: pick(s)?,
                    bar: None,
                })
            })
            .collect();
        Some(points)
    })
}

/// S3 per target: output tok/s against the median time per output token, one point per
/// concurrency.
pub(super) fn pareto_series(first: &[&TargetResult], targets: &[String]) -> Vec<Series> {
    per_target(first, targets, |r| {
        let s = r.stats.iter().find(|s| s.id == ScenarioId::S3)?;
        let points: Vec<Pt> = s
            .points
            .iter()
            .filter_map(|p| {
                Some(Pt {
                    x: p.metrics.get("tpot_ms")?.median,
                    y: p.value("output_tok_per_s")?,
                    bar: None,
                })
            })
            .collect();
        Some(points)
    })
}
