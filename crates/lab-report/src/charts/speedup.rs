//! Horizontal ratio bars: each target's speed-up (or slow-down) with its interval and a rule
//! at 1×; also the microbenchmarks' "× the fastest" bars.

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::bars::bar_frame;
use super::{colour_of, err, H, W};

/// Room for the longest of `names` left of a chart (sans-serif 12: about 7 px a character).
fn label_area(names: &[String]) -> u32 {
    (names.iter().map(|n| n.chars().count()).max().unwrap_or(0) as u32 * 7).clamp(170, 460)
}

/// Horizontal bars of each target's ratio with its interval, and a rule at 1×.
pub(super) fn speedup_chart(
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
        let mut chart = bar_frame(&root, title, &names, label_area(&names), hi, x_desc)?;
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
