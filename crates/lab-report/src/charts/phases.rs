//! Stacked phase bars: the LoRA training step split into forward, backward and optimizer time,
//! one bar per target.

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::bars::bar_frame;
use super::{colour_of, err, H, W};

/// The phases' colours: forward, backward, optimizer.
const SHADES: [RGBColor; 3] = [
    RGBColor(66, 133, 244),
    RGBColor(234, 67, 53),
    RGBColor(251, 188, 5),
];

/// A step's medians per phase (ms): forward, backward, optimizer.
fn parts(r: &lab_results::train::TrainRow) -> [f64; 3] {
    [
        r.forward_ms.median,
        r.backward_ms.median,
        r.optimizer_ms.median,
    ]
}

/// One horizontal bar per target, split into forward, backward and optimizer (medians, ms).
pub(super) fn phases_chart(
    title: &str,
    rows: &[lab_results::train::TrainRow],
    targets: &[String],
) -> Result<Option<String>, String> {
    if rows.is_empty() {
        return Ok(None);
    }
    let n = rows.len() as i32;
    let hi = rows
        .iter()
        .map(|r| parts(r).iter().sum::<f64>())
        .fold(0.0f64, f64::max)
        * 1.15;
    let names: Vec<String> = rows.iter().map(|r| r.target.clone()).collect();
    let mut svg = String::new();
    {
        let height = (H).max(100 + 40 * n as u32);
        let root = SVGBackend::with_string(&mut svg, (W, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = bar_frame(
            &root,
            title,
            &names,
            170,
            hi.max(1e-9),
            "ms per step (forward | backward | optimizer)",
        )?;
        for (k, (shade, name)) in SHADES
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
