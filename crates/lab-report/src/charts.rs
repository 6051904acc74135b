//! The run's charts as SVG (plotters' SVG backend: no font or bitmap native dependency, and the
//! same bytes for the same results). Each chart draws what the run has; a scenario the run lacks
//! is named in [`Charts::missing`] instead.
//!
//! Error bars are the 95 % interval of the median ([`lab_results::ratio::interval`]); S2's are the
//! spread (min–max) of its throughput windows. Every target keeps one colour in every chart.

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use lab_results::metric::Metric;
use lab_results::ratio::speedups;
use lab_results::results::{RunManifest, TargetResult};

/// Where the chart files go in a run directory.
pub const DIR: &str = "charts";

/// `charts/<id>.svg` for every chart.
pub struct SvgFiles;

impl crate::input::Exporter for SvgFiles {
    fn render(&self, input: &crate::input::Input) -> Vec<(String, String)> {
        render(input.manifest, input.results)
            .charts
            .into_iter()
            .map(|c| (format!("{DIR}/{}.svg", c.id), c.svg))
            .collect()
    }
}

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

fn colour_of(targets: &[String], target: &str) -> RGBColor {
    let i = targets.iter().position(|t| t == target).unwrap_or(0);
    PALETTE[i % PALETTE.len()]
}

/// Every chart the results allow, in report order.
pub fn render(_manifest: &RunManifest, results: &[TargetResult]) -> Charts {
    let first: Vec<&TargetResult> = results.iter().filter(|r| r.run() == 1).collect();
    let targets: Vec<String> = first.iter().map(|r| r.target.clone()).collect();
    let mut out = Charts::default();
    let has = |id: &str| first.iter().any(|r| r.stats.iter().any(|s| s.id == id));

    for (scenario, x_name) in [("s1", "prompt tokens"), ("s5", "context length (tokens)")] {
        if !has(scenario) {
            continue;
        }
        for metric in [
            Metric::DecodeTokPerS,
            Metric::PrefillTokPerS,
            Metric::TtftMs,
        ] {
            if scenario == "s5" && metric == Metric::TtftMs {
                continue;
            }
            let series = prompt_series(&first, &targets, scenario, metric);
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
                &mut out,
                &format!("{scenario}-{}", metric.name()),
                title.clone(),
                line_chart(&title, &axes, &series),
            );
        }
    }
    if has("s1") {
        let (title, series) = latency_cdf(&first, &targets);
        let axes = Axes {
            x: "end-to-end latency (ms, log scale)",
            y: "fraction of iterations",
            x_log: true,
            lines: true,
        };
        add(
            &mut out,
            "s1-e2e-cdf",
            title.clone(),
            line_chart(&title, &axes, &series),
        );
        if let Some((base, rows)) = speedups(results) {
            let title = format!("S1 decode tok/s relative to the PyTorch baseline ({base})");
            add(
                &mut out,
                "s1-speedup",
                title.clone(),
                speedup_chart(
                    &title,
                    "speed-up (×, decode tok/s ÷ baseline's; bars: 95 % interval)",
                    &rows,
                    &targets,
                ),
            );
        } else {
            out.missing.push(
                "S1 speed-up vs PyTorch: no PyTorch target with S1 decode in this run".into(),
            );
        }
    }
    if has("s2") {
        let series = level_series(&first, &targets, "s2", |p| {
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
            &mut out,
            "s2-output_tok_per_s",
            title.into(),
            line_chart(title, &axes, &series),
        );
    }
    if has("s3") {
        let series = level_series(&first, &targets, "s3", |p| {
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
            &mut out,
            "s3-output_tok_per_s",
            title.into(),
            line_chart(title, &axes, &series),
        );
        let series = level_series(&first, &targets, "s3", |p| {
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
            &mut out,
            "s3-ttft_p99",
            title.into(),
            line_chart(title, &axes, &series),
        );
        let series = per_target(&first, &targets, |r| {
            let s = r.stats.iter().find(|s| s.id == "s3")?;
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
        });
        let title = "S3 throughput vs latency (one point per concurrency; up and left is better)";
        let axes = Axes {
            x: "median time per output token (ms, log scale)",
            y: "output tok/s",
            x_log: true,
            lines: true,
        };
        add(
            &mut out,
            "s3-pareto",
            title.into(),
            line_chart(title, &axes, &series),
        );
    }
    micro_charts(&mut out, results, &targets);
    let with_telemetry = first.iter().any(|r| r.telemetry.is_some());
    if with_telemetry {
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
            let series = telemetry_series(&first, &targets, pick);
            let axes = Axes {
                x: "seconds since the engine started",
                y,
                x_log: false,
                lines: true,
            };
            add(
                &mut out,
                id,
                title.into(),
                line_chart(title, &axes, &series),
            );
        }
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

/// One horizontal bar per target, split into forward, backward and optimizer (medians, ms).
fn phases_chart(
    title: &str,
    rows: &[lab_results::train::TrainRow],
    targets: &[String],
) -> Result<Option<String>, String> {
    if rows.is_empty() {
        return Ok(None);
    }
    let n = rows.len() as i32;
    let parts = |r: &lab_results::train::TrainRow| {
        [
            r.forward_ms.median,
            r.backward_ms.median,
            r.optimizer_ms.median,
        ]
    };
    let hi = rows
        .iter()
        .map(|r| parts(r).iter().sum::<f64>())
        .fold(0.0f64, f64::max)
        * 1.15;
    let names: Vec<String> = rows.iter().map(|r| r.target.clone()).collect();
    let shades = [
        RGBColor(66, 133, 244),
        RGBColor(234, 67, 53),
        RGBColor(251, 188, 5),
    ];
    let mut svg = String::new();
    {
        let height = (H).max(100 + 40 * n as u32);
        let root = SVGBackend::with_string(&mut svg, (W, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(170)
            .build_cartesian_2d(0f64..hi.max(1e-9), (0..n).into_segmented())
            .map_err(err)?;
        let label = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n as usize)
            .y_label_formatter(&label)
            .x_desc("ms per step (forward | backward | optimizer)")
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(err)?;
        for (k, (shade, name)) in shades
            .iter()
            .zip(["forward", "backward", "optimizer"])
            .enumerate()
        {
            chart
                .draw_series(rows.iter().enumerate().map(|(i, r)| {
                    let p = parts(r);
                    let from: f64 = p[..k].iter().sum();
                    let i = i as i32;
                    let mut bar = Rectangle::new(
                        [
                            (from, SegmentValue::Exact(i)),
                            (from + p[k], SegmentValue::Exact(i + 1)),
                        ],
                        shade.filled(),
                    );
                    bar.set_margin(6, 6, 0, 0);
                    bar
                }))
                .map_err(err)?
                .label(name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], shade.filled())
                });
        }
        // Each target's colour as a thin mark at the bar's start, as in the other charts.
        chart
            .draw_series(rows.iter().enumerate().map(|(i, r)| {
                let i = i as i32;
                Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(i)),
                        (hi * 0.004, SegmentValue::Exact(i + 1)),
                    ],
                    colour_of(targets, &r.target).filled(),
                )
            }))
            .map_err(err)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(180, 180, 180))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(Some(svg))
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

/// Per target, `metric`'s median per prompt of `scenario`, x = prompt tokens.
fn prompt_series(
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
fn level_series(
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
fn latency_cdf(first: &[&TargetResult], targets: &[String]) -> (String, Vec<Series>) {
    let common = first
        .iter()
        .filter(|r| r.stats.iter().any(|s| s.id == "s1"))
        .map(|r| lab_results::ratio::s1_prompts(r))
        .reduce(|a, b| a.into_iter().filter(|p| b.contains(p)).collect())
        .unwrap_or_default();
    let Some((prompt, _)) = common.into_iter().max_by_key(|(_, n)| *n) else {
        return ("S1 end-to-end latency CDF".into(), Vec::new());
    };
    let series = per_target(first, targets, |r| {
        let sc = r.report.scenarios.iter().find(|s| s.id == "s1")?;
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

fn telemetry_series(
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

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

/// The range of the values and their bars, with some room above (and 0 below when all ≥ 0).
fn y_range(series: &[Series]) -> (f64, f64) {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for p in series.iter().flat_map(|s| &s.points) {
        let (a, b) = p.bar.unwrap_or((p.y, p.y));
        lo = lo.min(p.y).min(a);
        hi = hi.max(p.y).max(b);
    }
    let lo = if lo >= 0.0 { 0.0 } else { lo * 1.1 };
    let hi = if hi > lo { hi * 1.08 } else { lo + 1.0 };
    (lo, hi)
}

/// The x range of the (already transformed) points, with some room.
fn x_range(series: &[Series], log: bool) -> (f64, f64) {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.x));
    let (lo, hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    if log {
        // log₂ values: a third of an octave of room on each side.
        (lo - 0.35, hi + 0.35)
    } else {
        let pad = ((hi - lo) * 0.04).max(1e-9);
        (
            (lo - pad).max(if lo >= 0.0 { 0.0 } else { f64::MIN }),
            hi + pad,
        )
    }
}

/// An axis label: integers without decimals, small values with a few.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a < 1e-12 {
        "0".into()
    } else if a >= 100.0 || (a >= 1.0 && (v - v.round()).abs() < 1e-9) {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Room right of the plot for the legend (one row per target, outside the data).
const LEGEND_W: u32 = 200;

/// A line (or point) chart with one series per target; `Ok(None)` when there is nothing to draw.
/// A logarithmic x axis is drawn as log₂ on a linear axis with ticks at powers of two (1, 2, 4,
/// …), which is where the lab's prompt lengths, batch sizes and concurrencies sit.
fn line_chart(title: &str, axes: &Axes, series: &[Series]) -> Result<Option<String>, String> {
    if series.iter().all(|s| s.points.is_empty()) {
        return Ok(None);
    }
    let tx = |x: f64| {
        if axes.x_log {
            x.max(f64::MIN_POSITIVE).log2()
        } else {
            x
        }
    };
    let series: Vec<Series> = series
        .iter()
        .map(|s| Series {
            name: s.name.clone(),
            colour: s.colour,
            points: s.points.iter().map(|p| Pt { x: tx(p.x), ..*p }).collect(),
        })
        .collect();
    let (x0, x1) = x_range(&series, axes.x_log);
    let (y0, y1) = y_range(&series);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .margin_right(LEGEND_W)
            .x_label_area_size(42)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        let x_fmt = |v: &f64| {
            if axes.x_log {
                let r = v.round();
                if (v - r).abs() < 1e-6 {
                    tick(2f64.powf(r))
                } else {
                    String::new()
                }
            } else {
                tick(*v)
            }
        };
        let y_fmt = |v: &f64| tick(*v);
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(axes.x)
            .y_desc(axes.y)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .light_line_style(RGBColor(240, 240, 240));
        if axes.x_log {
            // One tick per power of two.
            mesh.x_labels(((x1 - x0).ceil() as usize + 1).max(2));
        }
        mesh.draw().map_err(err)?;
        for s in &series {
            let c = s.colour;
            let pts: Vec<(f64, f64)> = s.points.iter().map(|p| (p.x, p.y)).collect();
            if axes.lines {
                chart
                    .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                    .map_err(err)?;
            }
            chart
                .draw_series(pts.iter().map(|&(x, y)| Circle::new((x, y), 3, c.filled())))
                .map_err(err)?;
            chart
                .draw_series(s.points.iter().filter_map(|p| {
                    let (lo, hi) = p.bar?;
                    Some(ErrorBar::new_vertical(
                        p.x,
                        lo,
                        p.y,
                        hi,
                        c.stroke_width(1),
                        8,
                    ))
                }))
                .map_err(err)?;
        }
        // The legend, right of the plot (never over the data): one row per target.
        let x = (W - LEGEND_W) as i32 + 8;
        for (i, s) in series.iter().enumerate() {
            let y = 44 + 18 * i as i32;
            let c = s.colour;
            root.draw(&PathElement::new(
                vec![(x, y), (x + 18, y)],
                c.stroke_width(3),
            ))
            .map_err(err)?;
            root.draw(&Circle::new((x + 9, y), 3, c.filled()))
                .map_err(err)?;
            root.draw(&Text::new(
                s.name.clone(),
                (x + 24, y - 6),
                ("sans-serif", 12).into_font(),
            ))
            .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(Some(svg))
}

/// Room for the longest of `names` left of a chart (sans-serif 12: about 7 px a character).
fn label_area(names: &[String]) -> u32 {
    (names.iter().map(|n| n.chars().count()).max().unwrap_or(0) as u32 * 7).clamp(170, 460)
}

/// Horizontal bars of each target's ratio with its interval, and a rule at 1×.
fn speedup_chart(
    title: &str,
    x_desc: &str,
    rows: &[(String, String, lab_results::ratio::Ratio)],
    targets: &[String],
) -> Result<Option<String>, String> {
    if rows.is_empty() {
        return Ok(None);
    }
    let n = rows.len() as i32;
    let hi = rows
        .iter()
        .map(|(_, _, r)| r.high.max(r.value))
        .fold(1.0f64, f64::max)
        * 1.1;
    let names: Vec<String> = rows.iter().map(|(t, _, _)| t.clone()).collect();
    let mut svg = String::new();
    {
        let height = (H).max(80 + 28 * n as u32);
        let root = SVGBackend::with_string(&mut svg, (W, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(label_area(&names))
            .build_cartesian_2d(0f64..hi, (0..n).into_segmented())
            .map_err(err)?;
        let label = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n as usize)
            .y_label_formatter(&label)
            .x_desc(x_desc)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(rows.iter().enumerate().map(|(i, (t, _, r))| {
                let i = i as i32;
                let mut bar = Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(i)),
                        (r.value, SegmentValue::Exact(i + 1)),
                    ],
                    colour_of(targets, t).filled(),
                );
                bar.set_margin(4, 4, 0, 0);
                bar
            }))
            .map_err(err)?;
        chart
            .draw_series(rows.iter().enumerate().map(|(i, (_, _, r))| {
                ErrorBar::new_horizontal(
                    SegmentValue::CenterOf(i as i32),
                    r.low,
                    r.value,
                    r.high,
                    BLACK.stroke_width(1),
                    8,
                )
            }))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Exact(n))],
                RGBColor(90, 90, 90).stroke_width(1),
            )))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(Some(svg))
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
