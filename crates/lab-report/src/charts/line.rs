//! Line (and point) charts: one series per target over a linear or log₂ x axis, with error
//! bars and a legend right of the plot.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{err, Axes, Pt, Series, H, W};

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
pub(super) fn line_chart(
    title: &str,
    axes: &Axes,
    series: &[Series],
) -> Result<Option<String>, String> {
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
        legend(&root, &series)?;
        root.present().map_err(err)?;
    }
    Ok(Some(svg))
}

/// The legend, right of the plot (never over the data): one row per target.
fn legend(root: &DrawingArea<SVGBackend, Shift>, series: &[Series]) -> Result<(), String> {
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
    Ok(())
}
