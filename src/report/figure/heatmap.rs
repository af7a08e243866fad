//! Heatmaps and their colour bars.

use super::*;

/// Width of the colour-bar column right of a plot.
pub(super) const COLORBAR_W: u32 = 124;

/// Round tick values inside [lo, hi] (steps of 1, 2 or 5 times a power of ten, at most
/// `most_steps` + 1 of them).
pub(super) fn nice_ticks(lo: f64, hi: f64, most_steps: f64) -> Vec<f64> {
    if !(hi > lo && lo.is_finite() && hi.is_finite()) {
        return vec![lo];
    }
    let raw = (hi - lo) / most_steps;
    let base = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * base)
        .find(|s| (hi - lo) / s <= most_steps + 0.5)
        .unwrap_or(10.0 * base);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last)
        .map(|k| {
            format!("{:.10e}", k as f64 * step)
                .parse()
                .unwrap_or(k as f64 * step)
        })
        .collect()
}

/// A vertical colour bar (viridis from `lo` at the bottom to `hi` at the top) in the column
/// `bar`, between `top` and `bottom` pixels from its edges: ticks on its right, the label
/// (rotated) right of those.
pub(super) fn draw_colorbar<DB: DrawingBackend>(
    bar: &DrawingArea<DB, Shift>,
    (lo, hi): (f64, f64),
    label: &str,
    top: u32,
    bottom: u32,
) -> Result<(), String> {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let (w, h) = bar.dim_in_pixel();
    let span = if hi > lo { hi - lo } else { 1.0 };
    let (x0, x1) = (12, 34);
    let (y0, y1) = (top as i32, h as i32 - bottom as i32);
    if y1 - y0 < 20 {
        return Ok(());
    }
    let steps = 64;
    for i in 0..steps {
        let ya = y1 - (y1 - y0) * i / steps;
        let yb = y1 - (y1 - y0) * (i + 1) / steps;
        bar.draw(&Rectangle::new(
            [(x0, yb), (x1, ya)],
            colormap((i as f64 + 0.5) / steps as f64).filled(),
        ))
        .map_err(e)?;
    }
    bar.draw(&Rectangle::new([(x0, y0), (x1, y1)], BLACK.mix(0.6)))
        .map_err(e)?;
    let ticks = TickStyle::of(lo, lo + span, false);
    let font =
        TextStyle::from(("sans-serif", 16).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for v in nice_ticks(lo, lo + span, 5.0) {
        let y = y1 - ((v - lo) / span * (y1 - y0) as f64).round() as i32;
        bar.draw(&PathElement::new(vec![(x1, y), (x1 + 5, y)], BLACK))
            .map_err(e)?;
        bar.draw(&Text::new(ticks.label(v), (x1 + 8, y), font.clone()))
            .map_err(e)?;
    }
    let desc = TextStyle::from(("sans-serif", 19).into_font())
        .transform(FontTransform::Rotate90)
        .pos(Pos::new(HPos::Center, VPos::Center));
    bar.draw(&Text::new(
        label.to_string(),
        (w as i32 - 14, (y0 + y1) / 2),
        desc,
    ))
    .map_err(e)?;
    Ok(())
}

pub(super) fn draw_heatmap<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: &Panel,
    h: &Heatmap,
) -> Result<(), String> {
    use plotters::coord::ranged1d::SegmentValue;
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let rows = h.values.len().max(1);
    let cols = h.values.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let (w, _) = area.dim_in_pixel();
    let (main, bar) = area.split_horizontally(w.saturating_sub(COLORBAR_W));
    let (lo, hi) = h.range;
    let span = if hi > lo { hi - lo } else { 1.0 };
    let mut chart = ChartBuilder::on(&main)
        .caption(&p.title, ("sans-serif", 24).into_font())
        .margin(12)
        .x_label_area_size(58)
        .y_label_area_size(86)
        .build_cartesian_2d(
            (0..cols - 1).into_segmented(),
            (0..rows - 1).into_segmented(),
        )
        .map_err(|e| err(&e))?;
    let row_label = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(r) if *r < rows => {
            h.row_labels.get(rows - 1 - r).cloned().unwrap_or_default()
        }
        _ => String::new(),
    };
    let col_label = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(c) if *c < cols => h.col_labels.get(*c).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(&p.x.label)
        .y_desc(&p.y.label)
        .axis_desc_style(("sans-serif", 21))
        .label_style(("sans-serif", 17))
        .x_labels(cols)
        .y_labels(rows)
        .x_label_formatter(&col_label)
        .y_label_formatter(&row_label)
        .draw()
        .map_err(|e| err(&e))?;
    for (r, row) in h.values.iter().enumerate() {
        let y = rows - 1 - r; // first row on top
        for (c, &v) in row.iter().enumerate() {
            let fill = if v.is_finite() {
                colormap((v - lo) / span)
            } else {
                RGBColor(225, 225, 225)
            };
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [
                        (SegmentValue::Exact(c), SegmentValue::Exact(y + 1)),
                        (SegmentValue::Exact(c + 1), SegmentValue::Exact(y)),
                    ],
                    fill.filled(),
                )))
                .map_err(|e| err(&e))?;
            if h.annotate && v.is_finite() {
                let light = (v - lo) / span > 0.55;
                let color = if light { BLACK } else { WHITE };
                let style = ("sans-serif", 20).into_font().color(&color).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Center,
                    ),
                );
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!("{v:.3}"),
                        (SegmentValue::CenterOf(c), SegmentValue::CenterOf(y)),
                        style,
                    )))
                    .map_err(|e| err(&e))?;
            }
        }
    }
    draw_colorbar(&bar, (lo, lo + span), &h.scale_label, 50, 70)
}
