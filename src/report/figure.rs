//! Figures as data, drawn with plotters to PNG or SVG.
//!
//! A [`Figure`] is a grid of [`Panel`]s; a panel has two axes (linear or log), line/marker
//! series, vertical event markers (listed in the legend with their times) and a few text notes.
//! Jobs describe what to show; this module decides how it looks. Text is rendered with the
//! DejaVu Sans font shipped in `assets/fonts` (no system fonts needed).

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        // The shipped font is valid TrueType; failure here would be a packaging bug.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Colour-blind-friendly palette (Okabe–Ito, then greys).
pub const PALETTE: [RGBColor; 9] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(120, 120, 120),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Marker {
    Circle,
    Triangle,
    Square,
    Cross,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Style {
    Line,
    Dashed,
    Markers(Marker),
    /// Vertical bars from y = 0 to each point, `width` wide in x data units.
    Bars(f64),
}

#[derive(Debug, Clone)]
pub struct Series {
    pub label: Option<String>,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    pub style: Style,
    pub width: u32,
}

impl Series {
    pub fn line(label: impl Into<String>, points: Vec<(f64, f64)>, color: RGBColor) -> Self {
        Series {
            label: Some(label.into()),
            points,
            color,
            style: Style::Line,
            width: 3,
        }
    }
    pub fn dashed(label: impl Into<String>, points: Vec<(f64, f64)>, color: RGBColor) -> Self {
        Series {
            style: Style::Dashed,
            width: 2,
            ..Series::line(label, points, color)
        }
    }
    pub fn markers(
        label: impl Into<String>,
        points: Vec<(f64, f64)>,
        color: RGBColor,
        marker: Marker,
    ) -> Self {
        Series {
            style: Style::Markers(marker),
            ..Series::line(label, points, color)
        }
    }
    /// Bars from 0 to each y, centred on each x, `width` wide (x data units).
    pub fn bars(
        label: impl Into<String>,
        points: Vec<(f64, f64)>,
        color: RGBColor,
        width: f64,
    ) -> Self {
        Series {
            style: Style::Bars(width),
            ..Series::line(label, points, color)
        }
    }
    /// A thinner stroke (1 px), e.g. for guide lines.
    pub fn thin(mut self) -> Self {
        self.width = 1;
        self
    }
    pub fn unlabelled(mut self) -> Self {
        self.label = None;
        self
    }
}

/// A vertical dashed marker at x (e.g. an event time), named in the legend.
#[derive(Debug, Clone)]
pub struct VLine {
    pub x: f64,
    pub label: String,
    pub color: RGBColor,
}

#[derive(Debug, Clone, Default)]
pub struct Axis {
    pub label: String,
    pub log: bool,
    /// Fixed range; otherwise the data range with a small pad.
    pub range: Option<(f64, f64)>,
    /// Named categories at x = 0, 1, 2, ... (a linear axis labelled by name, e.g. for bars).
    pub categories: Option<Vec<String>>,
}

impl Axis {
    pub fn linear(label: impl Into<String>) -> Self {
        Axis {
            label: label.into(),
            log: false,
            range: None,
            categories: None,
        }
    }
    pub fn log(label: impl Into<String>) -> Self {
        Axis {
            label: label.into(),
            log: true,
            range: None,
            categories: None,
        }
    }
    /// A category axis: `names[i]` labels x = i; the range is [−0.6, len − 0.4].
    pub fn categories(label: impl Into<String>, names: Vec<String>) -> Self {
        let len = names.len() as f64;
        Axis {
            label: label.into(),
            log: false,
            range: Some((-0.6, len - 0.4)),
            categories: Some(names),
        }
    }
    pub fn with_range(mut self, lo: f64, hi: f64) -> Self {
        self.range = Some((lo, hi));
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegendAt {
    UpperLeft,
    UpperRight,
    LowerLeft,
    LowerRight,
}

#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
    pub vlines: Vec<VLine>,
    pub legend: LegendAt,
    /// Short text lines drawn in a box (e.g. fitted slopes).
    pub notes: Vec<String>,
}

impl Panel {
    pub fn new(title: impl Into<String>, x: Axis, y: Axis) -> Self {
        Panel {
            title: title.into(),
            x,
            y,
            series: Vec::new(),
            vlines: Vec::new(),
            legend: LegendAt::UpperLeft,
            notes: Vec::new(),
        }
    }

    /// Data range of one axis over every series (and the vertical lines for x), dropping
    /// non-finite values and, on a log axis, non-positive ones; padded by 3% (a factor on log).
    fn range(&self, axis: &Axis, pick_x: bool) -> (f64, f64) {
        if let Some(r) = axis.range {
            return r;
        }
        let ok = |v: f64| v.is_finite() && (!axis.log || v > 0.0);
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        if !pick_x
            && !axis.log
            && self
                .series
                .iter()
                .any(|s| matches!(s.style, Style::Bars(_)))
        {
            // bars start at 0
            lo = 0.0;
            hi = 0.0;
        }
        for s in &self.series {
            for &(x, y) in &s.points {
                let v = if pick_x { x } else { y };
                if ok(v) {
                    lo = lo.min(v);
                    hi = hi.max(v);
                }
            }
        }
        if pick_x {
            for v in &self.vlines {
                if ok(v.x) {
                    lo = lo.min(v.x);
                    hi = hi.max(v.x);
                }
            }
        }
        if !lo.is_finite() {
            return if axis.log { (1.0, 10.0) } else { (0.0, 1.0) };
        }
        if axis.log {
            let (a, b) = (lo.log10(), hi.log10());
            let pad = ((b - a) * 0.04).max(0.05);
            (10f64.powf(a - pad), 10f64.powf(b + pad))
        } else {
            let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
            let pad = 0.03 * span;
            (lo - pad, hi + pad)
        }
    }
}

#[derive(Debug, Clone)]
pub struct Figure {
    pub title: Option<String>,
    pub width: u32,
    pub height: u32,
    pub rows: usize,
    pub cols: usize,
    pub panels: Vec<Panel>,
}

impl Figure {
    /// Panels laid out in a grid of `rows` × `cols`, 700 × 520 pixels per panel.
    pub fn grid(rows: usize, cols: usize, panels: Vec<Panel>) -> Self {
        Figure {
            title: None,
            width: 700 * cols as u32 + 40,
            height: 520 * rows as u32 + 20,
            rows,
            cols,
            panels,
        }
    }
    pub fn titled(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self.height += 50;
        self
    }
}

/// Draw `fig` to `path`; the format follows the extension (`.svg`, otherwise PNG).
pub fn render(fig: &Figure, path: &Path) -> Result<(), String> {
    register_font();
    let size = (fig.width, fig.height);
    if path.extension().is_some_and(|e| e == "svg") {
        let root = SVGBackend::new(path, size).into_drawing_area();
        draw_figure(&root, fig)?;
        root.present().map_err(|e| e.to_string())
    } else {
        let root = BitMapBackend::new(path, size).into_drawing_area();
        draw_figure(&root, fig)?;
        root.present().map_err(|e| e.to_string())
    }
}

fn draw_figure<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    fig: &Figure,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let body = match &fig.title {
        Some(t) => root
            .titled(t, ("sans-serif", 30).into_font())
            .map_err(|e| e.to_string())?,
        None => root.clone(),
    };
    let areas = body.split_evenly((fig.rows, fig.cols));
    for (area, panel) in areas.iter().zip(&fig.panels) {
        draw_panel(area, panel)?;
    }
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Panel) -> Result<(), String> {
    let (x0, x1) = p.range(&p.x, true);
    let (y0, y1) = p.range(&p.y, false);
    let xl = || (x0..x1).log_scale().with_key_points(log_ticks(x0, x1));
    let yl = || (y0..y1).log_scale().with_key_points(log_ticks(y0, y1));
    match (p.x.log, p.y.log) {
        (false, false) => draw_with(area, p, x0..x1, y0..y1),
        (true, false) => draw_with(area, p, xl(), y0..y1),
        (false, true) => draw_with(area, p, x0..x1, yl()),
        (true, true) => draw_with(area, p, xl(), yl()),
    }
}

/// Tick positions of a log axis on [lo, hi]: 1-2-5 steps per decade for short ranges, decades
/// (or every k-th decade) for long ones, so that every part of the range is labelled (plotters'
/// own choice leaves the lowest partial decade bare).
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return vec![];
    }
    let (a, b) = (lo.log10(), hi.log10());
    let span = b - a;
    let mantissas: &[f64] = if span <= 0.6 {
        &[1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    } else if span <= 1.2 {
        &[1.0, 2.0, 3.0, 5.0, 7.0]
    } else if span <= 3.5 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    let every = (span / 8.0).ceil().max(1.0) as i64;
    let mut ticks = Vec::new();
    for e in (a.floor() as i64)..=(b.ceil() as i64) {
        if e.rem_euclid(every) != 0 {
            continue;
        }
        for &m in mantissas {
            let v = m * 10f64.powi(e as i32);
            if v >= lo && v <= hi {
                ticks.push(v);
            }
        }
    }
    ticks
}

fn tick_label(v: &f64) -> String {
    // round away representation noise of computed tick positions (e.g. 0.30000000000000004)
    let v = &format!("{v:.10e}").parse::<f64>().unwrap_or(*v);
    let a = v.abs();
    if *v == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        let e = a.log10().floor();
        let m = v / 10f64.powf(e);
        let m = format!("{m:.1}");
        let m = m.trim_end_matches(".0");
        format!("{m}e{}", e as i64)
    } else {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    }
}

fn draw_with<DB, X, Y>(area: &DrawingArea<DB, Shift>, p: &Panel, xr: X, yr: Y) -> Result<(), String>
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let categories = p.x.categories.clone();
    let x_formatter = move |v: &f64| match &categories {
        Some(names) => {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
                names[i as usize].clone()
            } else {
                String::new()
            }
        }
        None => tick_label(v),
    };
    let x_labels = p.x.categories.as_ref().map_or(10, |c| c.len() + 2);
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 24).into_font())
        .margin(12)
        .x_label_area_size(58)
        .y_label_area_size(86)
        .build_cartesian_2d(xr, yr)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(&p.x.label)
        .y_desc(&p.y.label)
        .axis_desc_style(("sans-serif", 21))
        .label_style(("sans-serif", 17))
        .x_label_formatter(&x_formatter)
        .x_labels(x_labels)
        .y_label_formatter(&tick_label)
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(210, 210, 210))
        .draw()
        .map_err(|e| err(&e))?;
    let (ylo, yhi) = p.range(&p.y, false);
    let (xlo, xhi) = p.range(&p.x, true);
    let in_x = |x: f64| x.is_finite() && (!p.x.log || x > 0.0) && x >= xlo && x <= xhi;
    let in_y = |y: f64| y.is_finite() && (!p.y.log || y > 0.0);
    let mut has_legend = false;
    for s in &p.series {
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|&(x, y)| in_x(x) && in_y(y))
            .map(|(x, y)| (x, y.clamp(ylo, yhi)))
            .collect();
        let color = s.color;
        let style = ShapeStyle::from(&color).stroke_width(s.width);
        let anno =
            match s.style {
                Style::Bars(w) => {
                    let fill = ShapeStyle::from(&color).filled();
                    let base = if p.y.log { ylo } else { 0.0f64.clamp(ylo, yhi) };
                    chart.draw_series(pts.into_iter().map(|(x, y)| {
                        Rectangle::new([(x - w / 2.0, base), (x + w / 2.0, y)], fill)
                    }))
                }
                Style::Line => chart.draw_series(LineSeries::new(pts, style)),
                Style::Dashed => chart.draw_series(DashedLineSeries::new(pts, 10, 6, style)),
                Style::Markers(m) => {
                    let fill = ShapeStyle::from(&color).filled();
                    match m {
                        Marker::Circle => {
                            chart.draw_series(pts.into_iter().map(|c| Circle::new(c, 5, fill)))
                        }
                        Marker::Triangle => chart
                            .draw_series(pts.into_iter().map(|c| TriangleMarker::new(c, 6, fill))),
                        Marker::Square => chart.draw_series(pts.into_iter().map(|c| {
                            EmptyElement::at(c) + Rectangle::new([(-4, -4), (4, 4)], fill)
                        })),
                        Marker::Cross => {
                            chart.draw_series(pts.into_iter().map(|c| Cross::new(c, 5, style)))
                        }
                    }
                }
            }
            .map_err(|e| err(&e))?;
        if let Some(label) = &s.label {
            has_legend = true;
            let st = s.style;
            anno.label(label)
                .legend(move |(x, y)| -> DynElement<'static, DB, (i32, i32)> {
                    let c = (x + 10, y);
                    let fill = color.filled();
                    match st {
                        Style::Markers(Marker::Circle) => Circle::new(c, 5, fill).into_dyn(),
                        Style::Markers(Marker::Triangle) => {
                            TriangleMarker::new(c, 6, fill).into_dyn()
                        }
                        Style::Markers(Marker::Square) | Style::Bars(_) => {
                            Rectangle::new([(x + 6, y - 4), (x + 14, y + 4)], fill).into_dyn()
                        }
                        Style::Markers(Marker::Cross) => {
                            Cross::new(c, 5, color.stroke_width(2)).into_dyn()
                        }
                        Style::Dashed => {
                            PathElement::new(vec![(x, y), (x + 8, y)], color.stroke_width(3))
                                .into_dyn()
                        }
                        Style::Line => {
                            PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                                .into_dyn()
                        }
                    }
                });
        }
    }
    for v in &p.vlines {
        if !in_x(v.x) {
            continue;
        }
        has_legend = true;
        let color = v.color;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(v.x, ylo), (v.x, yhi)],
                6,
                5,
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(&v.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y - 6), (x, y + 6)], color.stroke_width(3))
            });
    }
    if has_legend {
        let pos = match p.legend {
            LegendAt::UpperLeft => SeriesLabelPosition::UpperLeft,
            LegendAt::UpperRight => SeriesLabelPosition::UpperRight,
            LegendAt::LowerLeft => SeriesLabelPosition::LowerLeft,
            LegendAt::LowerRight => SeriesLabelPosition::LowerRight,
        };
        chart
            .configure_series_labels()
            .position(pos)
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .draw()
            .map_err(|e| err(&e))?;
    }
    if !p.notes.is_empty() {
        let plot = chart.plotting_area();
        let (w, h) = plot.dim_in_pixel();
        let line_h = 20;
        let box_h = (p.notes.len() as i32) * line_h + 10;
        let box_w = p.notes.iter().map(|n| n.chars().count()).max().unwrap_or(0) as i32 * 9 + 16;
        let x = w as i32 - box_w - 8;
        let y = h as i32 - box_h - 8;
        let base = plot.strip_coord_spec();
        base.draw(&Rectangle::new(
            [(x, y), (x + box_w, y + box_h)],
            ShapeStyle::from(&WHITE.mix(0.9)).filled(),
        ))
        .map_err(|e| err(&e))?;
        base.draw(&Rectangle::new(
            [(x, y), (x + box_w, y + box_h)],
            RGBColor(160, 160, 160),
        ))
        .map_err(|e| err(&e))?;
        for (i, note) in p.notes.iter().enumerate() {
            base.draw(&Text::new(
                note.clone(),
                (x + 8, y + 6 + i as i32 * line_h),
                ("sans-serif", 16).into_font(),
            ))
            .map_err(|e| err(&e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ticks_label_every_part_of_the_range() {
        assert_eq!(log_ticks(0.015, 1.2), vec![0.02, 0.05, 0.1, 0.2, 0.5, 1.0]);
        assert_eq!(log_ticks(1.0, 1e9).len(), 10);
        assert_eq!(
            log_ticks(1e-30, 1.0),
            vec![1e-28, 1e-24, 1e-20, 1e-16, 1e-12, 1e-8, 1e-4, 1.0]
        );
        let short = log_ticks(0.35, 0.9);
        assert!(short.len() >= 4 && short.iter().all(|&v| (0.35..=0.9).contains(&v)));
    }
}
