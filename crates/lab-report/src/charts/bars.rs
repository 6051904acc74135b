//! The frame every horizontal bar chart shares: a caption, one labelled row per target and an x
//! axis from 0.

use plotters::coord::ranged1d::{SegmentValue, SegmentedCoord};
use plotters::coord::types::{RangedCoordf64, RangedCoordi32};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::err;

/// A horizontal bar chart's coordinates: x from 0, one segment per row.
pub(super) type Bars<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, SegmentedCoord<RangedCoordi32>>>;

/// Draws the caption, the rows labelled with `names` (`y_area` px wide) and the x axis up to
/// `hi` described by `x_desc`; the bars are the caller's.
pub(super) fn bar_frame<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    names: &[String],
    y_area: u32,
    hi: f64,
    x_desc: &str,
) -> Result<Bars<'a, 'b>, String> {
    let n = names.len() as i32;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(y_area)
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
    Ok(chart)
}
