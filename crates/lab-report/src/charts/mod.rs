//! The run's charts as SVG (plotters' SVG backend: no font or bitmap native dependency, and the
//! same bytes for the same results). Each chart draws what the run has; a scenario the run lacks
//! is named in [`Charts::missing`] instead.
//!
//! Error bars are the 95 % interval of the median ([`lab_results::ratio::interval`]); S2's are the
//! spread (min–max) of its throughput windows. Every target keeps one colour in every chart.
//!
//! This module picks the charts and their titles; each kind of chart is drawn in its own file
//! (`line`, `speedup`, `phases`) from the series that `series` picks from the results.

mod bars;
mod line;
mod phases;
mod series;
mod speedup;

use lab_results::ScenarioId;
use plotters::prelude::*;

use lab_results::metric::Metric;
use lab_results::ratio::{speedups, Speedup};
use lab_results::results::{RunManifest, TargetResult};

use line::line_chart;
use phases::phases_chart;
use series::{latency_cdf, level_series, pareto_series, prompt_series, telemetry_series};
use speedup::speedup_chart;

/// Where the chart files go in a run directory.
pub const DIR: &str = "charts";

/// One chart: `charts/<id>.svg`.
#[derive(Debug, Clone)]
pub struct Chart {
    pub id: String,
    pub title: String,
    pub svg: String,
}

/// Every chart of a run, and a line for each one it could not draw.
#[derive(Debug, Clone, Default)]
pub struct Charts {
    pub charts: Vec<Chart>,
    pub missing: Vec<String>,
}

const W: u32 = 820;
const H: u32 = 460;

/// Tableau 10: distinct on screen and in print.
const PALETTE: [RGBColor; 10] = [
    RGBColor(78, 121, 167),
    RGBColor(242, 142, 43),
    RGBColor(225, 87, 89),
    RGBColor(118, 183, 178),
    RGBColor(89, 161, 79),
    RGBColor(237, 201, 72),
    RGBColor(176, 122, 161),
    RGBColor(255, 157, 167),
    RGBColor(156, 117, 95),
    RGBColor(186, 176, 172),
];

/// A point with an optional error bar.
#[derive(Debug, Clone, Copy)]
struct Pt {
    x: f64,
    y: f64,
    bar: Option<(f64, f64)>,
}

struct Series {
    name: String,
    colour: RGBColor,
    points: Vec<Pt>,
}

struct Axes<'a> {
    x: &'a str,
    y: &'a str,
    x_log: bool,
    /// Join the points with lines (false: a scatter, e.g. windows).
    lines: bool,
}

fn colour_of(targets: &[String], target: &str) -> RGBColor {
    let i = targets.iter().position(|t| t == target).unwrap_or(0);
    PALETTE[i % PALETTE.len()]
}

/// Every chart the results allow, in report order.
pub fn render(_manifest: &RunManifest, results: &[TargetResult]) -> Charts {
    draw(results, speedups(results).as_ref())
}

/// The charts, with the speed-ups over the PyTorch baseline already computed (the report
/// model's).
pub(crate) fn draw(results: &[TargetResult], speedups: Option<&(String, Vec<Speedup>)>) -> Charts {
    let first: Vec<&TargetResult> = results.iter().filter(|r| r.run() == 1).collect();
    let targets: Vec<String> = first.iter().map(|r| r.target.clone()).collect();
    let mut out = Charts::default();
    let has = |id: &str| first.iter().any(|r| r.stats.iter().any(|s| s.id == id));

    prompt_charts(&mut out, &first, &targets, has);
    if has("s1") {
        s1_charts(&mut out, speedups, &first, &targets);
    }
    if has("s2") {
        s2_chart(&mut out, &first, &targets);
    }
    if has("s3") {
        s3_charts(&mut out, &first, &targets);
    }
    micro_charts(&mut out, results, &targets);
    let with_telemetry = first.iter().any(|r| r.telemetry.is_some());
    if with_telemetry {
        telemetry_charts(&mut out, &first, &targets);
    }
    for (id, what) in [
        ("s1", "S1 single-request charts"),
        ("s2", "S2 throughput chart"),
        (
            "s3",
            "S3 scaling, p99 TTFT and throughput-vs-latency charts",
        ),
        ("s5", "S5 long-context charts"),
    ] {
        if !has(id) {
            out.missing.push(format!(
                "{what}: the run has no {} results",
                id.to_uppercase()
            ));
        }
    }
    if !with_telemetry {
        out.missing
            .push("GPU telemetry time series: the run has no GPU telemetry".into());
    }
    out
}

/// S1 and S5: decode, prefill (and, for S1, TTFT) medians by prompt length.
fn prompt_charts(
    out: &mut Charts,
    first: &[&TargetResult],
    targets: &[String],
    has: impl Fn(&str) -> bool,
) {
    for (scenario, x_name) in [("s1", "prompt tokens"), ("s5", "context length (tokens)")] {
        if !has(scenario) {
            continue;
        }
        for metric in [
            Metric::DecodeTokPerS,
            Metric::PrefillTokPerS,
            Metric::TtftMs,
        ] {
            if scenario == ScenarioId::S5 && metric == Metric::TtftMs {
                continue;
            }
            let series = prompt_series(first, targets, scenario, metric);
            let title = format!(
                "{} {} median ({}) by {x_name}",
                scenario.to_uppercase(),
                metric.label(),
                metric.unit()
            );
            let y = format!("{} {}", metric.label(), metric.unit());
            let axes = Axes {
                x: x_name,
                y: &y,
                x_log: true,
                lines: true,
            };
            add(
                out,
                &format!("{scenario}-{}", metric.name()),
                title.clone(),
                line_chart(&title, &axes, &series),
            );
        }
    }
}

/// S1's end-to-end latency CDF and its decode speed-up over the PyTorch baseline.
fn s1_charts(
    out: &mut Charts,
    speedups: Option<&(String, Vec<Speedup>)>,
    first: &[&TargetResult],
    targets: &[String],
) {
    let (title, series) = latency_cdf(first, targets);
    let axes = Axes {
        x: "end-to-end latency (ms, log scale)",
        y: "fraction of iterations",
        x_log: true,
        lines: true,
    };
    add(
        out,
        "s1-e2e-cdf",
        title.clone(),
        line_chart(&title, &axes, &series),
    );
    if let Some((base, rows)) = speedups {
        let title = format!("S1 decode tok/s relative to the PyTorch baseline ({base})");
        add(
            out,
            "s1-speedup",
            title.clone(),
            speedup_chart(
                &title,
                "speed-up (×, decode tok/s ÷ baseline's; bars: 95 % interval)",
                rows,
                targets,
            ),
        );
    } else {
        out.missing
            .push("S1 speed-up vs PyTorch: no PyTorch target with S1 decode in this run".into());
    }
}

/// S2's output tok/s by batch size, with the spread of its throughput windows.
fn s2_chart(out: &mut Charts, first: &[&TargetResult], targets: &[String]) {
    let series = level_series(first, targets, "s2", |p| {
        let v = p.value("output_tok_per_s")?;
        let (lo, hi) = p
            .window_tok_per_s
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &w| {
                (a.min(w), b.max(w))
            });
        let bar = (p.window_tok_per_s.len() > 1).then_some((lo, hi));
        Some((v, bar))
    });
    let title = "S2 output tok/s by batch size (bars: spread of the throughput windows)";
    let axes = Axes {
        x: "batch size",
        y: "output tok/s",
        x_log: true,
        lines: true,
    };
    add(
        out,
        "s2-output_tok_per_s",
        title.into(),
        line_chart(title, &axes, &series),
    );
}

/// S3's scaling curve, its p99 TTFT by concurrency and throughput against latency.
fn s3_charts(out: &mut Charts, first: &[&TargetResult], targets: &[String]) {
    let series = level_series(first, targets, "s3", |p| {
        Some((p.value("output_tok_per_s")?, None))
    });
    let title = "S3 output tok/s by concurrency (scaling curve)";
    let axes = Axes {
        x: "concurrent requests",
        y: "output tok/s",
        x_log: true,
        lines: true,
    };
    add(
        out,
        "s3-output_tok_per_s",
        title.into(),
        line_chart(title, &axes, &series),
    );
    let series = level_series(first, targets, "s3", |p| {
        Some((p.metrics.get("ttft_ms")?.p99, None))
    });
    let title = "S3 p99 TTFT (ms, queueing included) by concurrency";
    let axes = Axes {
        x: "concurrent requests",
        y: "p99 TTFT ms",
        x_log: true,
        lines: true,
    };
    add(
        out,
        "s3-ttft_p99",
        title.into(),
        line_chart(title, &axes, &series),
    );
    let series = pareto_series(first, targets);
    let title = "S3 throughput vs latency (one point per concurrency; up and left is better)";
    let axes = Axes {
        x: "median time per output token (ms, log scale)",
        y: "output tok/s",
        x_log: true,
        lines: true,
    };
    add(
        out,
        "s3-pareto",
        title.into(),
        line_chart(title, &axes, &series),
    );
}

/// GPU utilization, SM clock and board power over time.
fn telemetry_charts(out: &mut Charts, first: &[&TargetResult], targets: &[String]) {
    type Pick = fn(&lab_gpu::Sample) -> Option<f64>;
    let picks: [(&str, &str, &str, Pick); 3] = [
        (
            "gpu-util",
            "GPU utilization over time (%)",
            "GPU util %",
            |s| s.gpu_util_pct.map(f64::from),
        ),
        ("gpu-sm-clock", "SM clock over time (MHz)", "SM MHz", |s| {
            s.sm_mhz.map(f64::from)
        }),
        ("gpu-power", "Board power over time (W)", "power W", |s| {
            s.power_mw.map(|p| f64::from(p) / 1e3)
        }),
    ];
    for (id, title, y, pick) in picks {
        let series = telemetry_series(first, targets, pick);
        let axes = Axes {
            x: "seconds since the engine started",
            y,
            x_log: false,
            lines: true,
        };
        add(out, id, title.into(), line_chart(title, &axes, &series));
    }
}

/// The microbenchmarks (`--analysis micro`): per dtype, every case's median ÷ the fastest
/// framework's for that case, one bar per framework that ran it (1× is the fastest).
fn micro_charts(out: &mut Charts, results: &[TargetResult], targets: &[String]) {
    let rows = lab_results::micro::table(results);
    let mut dtypes: Vec<lab_protocol::Dtype> = Vec::new();
    for r in &rows {
        if !dtypes.contains(&r.case.dtype) {
            dtypes.push(r.case.dtype);
        }
    }
    for dtype in dtypes {
        let bars: Vec<(String, String, lab_results::ratio::Ratio)> = rows
            .iter()
            .filter(|r| r.case.dtype == dtype)
            .flat_map(|r| {
                r.cells.iter().filter_map(move |c| {
                    let v = c.vs_fastest?;
                    Some((
                        format!("{} {} · {}", r.case.op.name(), r.case.op.shape(), c.target),
                        c.target.clone(),
                        lab_results::ratio::Ratio {
                            value: v,
                            low: v,
                            high: v,
                        },
                    ))
                })
            })
            .collect();
        let title = format!(
            "Microbenchmarks, {}: time ÷ the fastest framework's, per op (1× = fastest)",
            dtype.as_str()
        );
        add(
            out,
            &format!("micro-{}", dtype.as_str()),
            title.clone(),
            speedup_chart(&title, "× the fastest median", &bars, targets),
        );
    }
    let (lora, _) = lab_results::train::rows(results);
    if !lora.is_empty() {
        let title = "LoRA training step: median time per phase (ms)";
        add(
            out,
            "lora-phases",
            title.into(),
            phases_chart(title, &lora, targets),
        );
    }
}

fn add(out: &mut Charts, id: &str, title: String, drawn: Result<Option<String>, String>) {
    match drawn {
        Ok(Some(svg)) => out.charts.push(Chart {
            id: id.into(),
            title,
            svg,
        }),
        Ok(None) => out
            .missing
            .push(format!("{title}: no target measured it in this run")),
        Err(e) => out
            .missing
            .push(format!("{title}: could not be drawn: {e}")),
    }
}

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_results::results::fixture::{fixture, fixture_engines, with_telemetry};
    use sha2::{Digest, Sha256};

    #[test]
    fn charts_are_the_same_bytes_every_time_and_cover_the_run() {
        let (m, r) = fixture_engines();
        let a = render(&m, &r);
        let b = render(&m, &r);
        let ids: Vec<&str> = a.charts.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "s1-decode_tok_per_s",
                "s1-prefill_tok_per_s",
                "s1-ttft_ms",
                "s1-e2e-cdf",
                "s1-speedup",
                "s2-output_tok_per_s",
                "s3-output_tok_per_s",
                "s3-ttft_p99",
                "s3-pareto",
            ]
        );
        for (x, y) in a.charts.iter().zip(&b.charts) {
            assert_eq!(x.svg, y.svg, "{} differs between two renderings", x.id);
            assert!(x.svg.starts_with("<svg") && x.svg.trim_end().ends_with("</svg>"));
            // Every target is in every chart's legend (the speed-up chart: all but the baseline).
            for t in &r {
                if x.id == "s1-speedup" && t.target == "pytorch:hf-f32" {
                    continue;
                }
                assert!(x.svg.contains(&t.target), "{} lacks {}", x.id, t.target);
            }
        }
        // What the fixture lacks is named, not silently left out.
        assert!(
            a.missing
                .iter()
                .any(|l| l.starts_with("S5 long-context charts: the run has no S5")),
            "{:?}",
            a.missing
        );
        assert!(a.missing.iter().any(|l| l.contains("no GPU telemetry")));
        // The bytes, pinned: any change to a chart shows up in review.
        let listing: String = a
            .charts
            .iter()
            .map(|c| {
                format!(
                    "{} {} {:x} {}\n",
                    c.id,
                    c.svg.len(),
                    Sha256::digest(c.svg.as_bytes()),
                    c.title
                )
            })
            .collect();
        insta::assert_snapshot!("chart_listing", listing);
        insta::assert_snapshot!("chart_s1_decode", a.charts[0].svg);
    }

    #[test]
    fn a_run_with_s1_only_and_telemetry_gets_its_charts_and_the_rest_is_named() {
        let (m, mut r) = fixture();
        for t in &mut r {
            t.stats.retain(|s| s.id == "s1");
        }
        with_telemetry(&mut r[0]);
        let c = render(&m, &r);
        let ids: Vec<&str> = c.charts.iter().map(|c| c.id.as_str()).collect();
        for want in [
            "s1-decode_tok_per_s",
            "gpu-util",
            "gpu-sm-clock",
            "gpu-power",
        ] {
            assert!(ids.contains(&want), "{ids:?}");
        }
        assert!(!ids
            .iter()
            .any(|i| i.starts_with("s2") || i.starts_with("s3")));
        for what in [
            "S2 throughput chart",
            "S3 scaling",
            "S5 long-context",
            "S1 speed-up vs PyTorch",
        ] {
            assert!(
                c.missing.iter().any(|l| l.starts_with(what)),
                "{what}: {:?}",
                c.missing
            );
        }
        // 1980 MHz, 300 W and 97 % are on the charts' scales.
        let svg = |id: &str| &c.charts.iter().find(|c| c.id == id).unwrap().svg;
        assert!(svg("gpu-power").contains(">\n300\n<") || svg("gpu-power").contains("300"));
    }
}
