//! Drawing the plots with plotters' SVG backend; `super` decides what to
//! draw from the rows.

use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, IntoSegmentedCoord, SegmentValue, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{Bar, Series};
use crate::report::is_ours;

const WIDTH: u32 = 960;
/// Height of one bar of a ratio chart, in pixels.
const BAR_HEIGHT: u32 = 24;
/// Bars where ours beats every peer, and where it does not.
const OURS_BETTER: RGBColor = RGBColor(0x2e, 0x8b, 0x57);
const OURS_WORSE: RGBColor = RGBColor(0xc0, 0x39, 0x2b);

/// Turns a plotters error into ours, naming the file.
fn draw_err(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> String + '_ {
    move |e| format!("cannot draw {}: {e}", path.display())
}

/// A horizontal bar per ratio, anchored at 1.0x, with its value printed.
pub(super) fn draw_bars(path: &Path, title: &str, bars: &[Bar]) -> Result<(), String> {
    let err = draw_err(path);
    let n = bars.len();
    let height = 90 + BAR_HEIGHT * n as u32;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    // The axis is log2 of the ratio, symmetric about 1.0x so that bars compare
    // by length, with a tick at every power of two.
    let spread = bars
        .iter()
        .map(|b| b.ratio.log2().abs())
        .fold(1.0, f64::max)
        .ceil();
    let ticks = 2 * spread as usize + 1;
    let label_width = bars.iter().map(|b| b.label.len()).max().unwrap_or(0) as u32 * 7 + 10;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        // Room for the value printed after the longest bar.
        .margin_right(60)
        .x_label_area_size(30)
        .y_label_area_size(label_width.min(WIDTH / 2))
        .build_cartesian_2d(-spread..spread, (0..n as i32 - 1).into_segmented())
        .map_err(|e| err(&e))?;
    // Bar 0 is drawn at the top, as the table lists it first.
    let row_of = |i: usize| (n - 1 - i) as i32;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(y) => usize::try_from(*y)
                .ok()
                .and_then(|y| bars.get(n - 1 - y))
                .map_or_else(String::new, |b| b.label.clone()),
            _ => String::new(),
        })
        .x_labels(ticks)
        .x_label_formatter(&|x| ratio_tick(*x))
        .x_desc("ratio to the best peer (log scale)")
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let y = row_of(i);
            let colour = if b.better { OURS_BETTER } else { OURS_WORSE };
            let mut r = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(y)),
                    (b.ratio.log2(), SegmentValue::Exact(y + 1)),
                ],
                colour.filled(),
            );
            r.set_margin(3, 3, 0, 0);
            r
        }))
        .map_err(|e| err(&e))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            Text::new(
                format!(" {:.2}x", b.ratio),
                (b.ratio.log2().max(0.0), SegmentValue::CenterOf(row_of(i))),
                ("sans-serif", 13)
                    .into_font()
                    .into_text_style(&root)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            )
        }))
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, SegmentValue::Exact(0)), (0.0, SegmentValue::Last)],
            BLACK.stroke_width(2),
        ))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// Axis titles and scales of a curve plot.
pub(super) struct Axes<'a> {
    pub(super) x: &'a str,
    pub(super) y: &'a str,
    pub(super) x_log: bool,
    pub(super) y_log: bool,
}

/// A line with markers per series, with a legend; scales as `axes` says.
pub(super) fn draw_curve(
    path: &Path,
    title: &str,
    axes: &Axes,
    series: &Series,
) -> Result<(), String> {
    let points = || series.values().flatten();
    let (x_lo, x_hi) = bounds(points().map(|p| p.0));
    let (y_lo, y_hi) = bounds(points().map(|p| p.1));
    let x = if axes.x_log {
        (x_lo / 1.2, x_hi * 1.2)
    } else {
        (0.0, x_hi * 1.05)
    };
    let y = if axes.y_log {
        (y_lo / 1.5, y_hi * 1.5)
    } else {
        (0.0, y_hi * 1.1)
    };
    // Each scale combination is its own coordinate type.
    match (axes.x_log, axes.y_log) {
        (true, true) => curve(
            path,
            title,
            axes,
            series,
            (x.0..x.1).log_scale(),
            (y.0..y.1).log_scale(),
        ),
        (true, false) => curve(path, title, axes, series, (x.0..x.1).log_scale(), y.0..y.1),
        (false, true) => curve(path, title, axes, series, x.0..x.1, (y.0..y.1).log_scale()),
        (false, false) => curve(path, title, axes, series, x.0..x.1, y.0..y.1),
    }
}

/// A tick of the ratio axis at log2 ratio `x`: `4x`, `1x`, `1/4x`.
pub(super) fn ratio_tick(x: f64) -> String {
    let r = x.exp2();
    if r >= 1.0 {
        format!("{}x", tick(r))
    } else {
        format!("1/{}x", tick(1.0 / r))
    }
}

/// An axis label: no decimals where they carry nothing.
pub(super) fn tick(v: f64) -> String {
    if v.abs() >= 10.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

fn curve<X, Y>(
    path: &Path,
    title: &str,
    axes: &Axes,
    series: &Series,
    x: X,
    y: Y,
) -> Result<(), String>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let err = draw_err(path);
    let root = SVGBackend::new(path, (WIDTH, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x, y)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(axes.x)
        .y_desc(axes.y)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        let width = if is_ours(name) { 3 } else { 1 };
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(width),
            ))
            .map_err(|e| err(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(3)));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}
