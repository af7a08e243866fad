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

/// A shaded vertical band [x0, x1] (e.g. a phase of training), named in the legend (unless the
/// label is empty).
#[derive(Debug, Clone)]
pub struct Band {
    pub x0: f64,
    pub x1: f64,
    pub label: String,
    pub color: RGBColor,
}

/// An arrow of a vector field at (x, y) pointing along (dx, dy) (in data units). Arrows are drawn
/// with a fixed pixel length (`Panel::arrow_px`): the field's direction, coloured by `color`.
#[derive(Debug, Clone)]
pub struct Arrow {
    pub x: f64,
    pub y: f64,
    pub dx: f64,
    pub dy: f64,
    pub color: RGBColor,
}

/// A colour scale drawn inside the plot: `label`, and the values at its two ends.
#[derive(Debug, Clone)]
pub struct ColorBar {
    pub label: String,
    pub lo: f64,
    pub hi: f64,
}

/// A perceptually ordered colour map (viridis, 9 anchors, linear in between); t in [0, 1].
pub fn colormap(t: f64) -> RGBColor {
    const ANCHORS: [(u8, u8, u8); 9] = [
        (68, 1, 84),
        (71, 44, 122),
        (59, 81, 139),
        (44, 113, 142),
        (33, 144, 141),
        (39, 173, 129),
        (92, 200, 99),
        (170, 220, 50),
        (253, 231, 37),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pos = t * (ANCHORS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(ANCHORS.len() - 2);
    let f = pos - i as f64;
    let lerp = |a: u8, b: u8| (a as f64 + f * (b as f64 - a as f64)).round() as u8;
    let (a, b) = (ANCHORS[i], ANCHORS[i + 1]);
    RGBColor(lerp(a.0, b.0), lerp(a.1, b.1), lerp(a.2, b.2))
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
    /// The corner whose region (the outer 45% × 40% of the plot) holds the fewest data points.
    Best,
}

/// A grid of values drawn as coloured cells (e.g. attention weights per head and offset), with
/// a colour bar. `values[r][c]` is the cell in row r (drawn top to bottom) and column c; a NaN
/// cell has no value and is drawn light grey.
#[derive(Debug, Clone)]
pub struct Heatmap {
    pub values: Vec<Vec<f64>>,
    pub row_labels: Vec<String>,
    pub col_labels: Vec<String>,
    /// The colour scale's range (values outside are clamped).
    pub range: (f64, f64),
    /// Print each value in its cell.
    pub annotate: bool,
    /// The colour bar's label.
    pub scale_label: String,
}

#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
    pub vlines: Vec<VLine>,
    /// Shaded vertical bands drawn behind the series.
    pub bands: Vec<Band>,
    pub legend: LegendAt,
    /// Short text lines drawn in a box (e.g. fitted slopes).
    pub notes: Vec<String>,
    /// A vector field, drawn under the series.
    pub arrows: Vec<Arrow>,
    /// Pixel length of the arrows.
    pub arrow_px: f64,
    pub colorbar: Option<ColorBar>,
    /// When set, the panel is this heatmap (the axes give the axis labels; series are unused).
    pub heatmap: Option<Heatmap>,
}

impl Panel {
    pub fn new(title: impl Into<String>, x: Axis, y: Axis) -> Self {
        Panel {
            title: title.into(),
            x,
            y,
            series: Vec::new(),
            vlines: Vec::new(),
            bands: Vec::new(),
            legend: LegendAt::UpperLeft,
            notes: Vec::new(),
            arrows: Vec::new(),
            arrow_px: 18.0,
            colorbar: None,
            heatmap: None,
        }
    }

    /// The corner (upper left, upper right, lower left, lower right, in that order of preference
    /// on ties) whose outer 45% × 40% of the plot holds the fewest series points, in axis
    /// coordinates (log10 on log axes).
    pub fn emptiest_corner(&self) -> LegendAt {
        let (x0, x1) = self.range(&self.x, true);
        let (y0, y1) = self.range(&self.y, false);
        let norm = |v: f64, lo: f64, hi: f64, log: bool| {
            let (v, lo, hi) = if log {
                (v.log10(), lo.log10(), hi.log10())
            } else {
                (v, lo, hi)
            };
            (v - lo) / (hi - lo)
        };
        let corners = [
            (LegendAt::UpperLeft, false, true),
            (LegendAt::UpperRight, true, true),
            (LegendAt::LowerLeft, false, false),
            (LegendAt::LowerRight, true, false),
        ];
        let mut counts = [0usize; 4];
        for s in &self.series {
            for &(x, y) in &s.points {
                let (u, v) = (norm(x, x0, x1, self.x.log), norm(y, y0, y1, self.y.log));
                if !(u.is_finite() && v.is_finite()) {
                    continue;
                }
                for (k, &(_, right, upper)) in corners.iter().enumerate() {
                    let in_x = if right { u >= 0.55 } else { u <= 0.45 };
                    let in_y = if upper { v >= 0.6 } else { v <= 0.4 };
                    if in_x && in_y {
                        counts[k] += 1;
                    }
                }
            }
        }
        let best = (0..4).fold(0, |b, k| if counts[k] < counts[b] { k } else { b });
        corners[best].0
    }

    /// A heatmap panel; `x` and `y` name the column and row axes.
    pub fn heatmap(title: impl Into<String>, x: Axis, y: Axis, heatmap: Heatmap) -> Self {
        Panel {
            heatmap: Some(heatmap),
            ..Panel::new(title, x, y)
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
    if let Some(h) = &p.heatmap {
        return draw_heatmap(area, p, h);
    }
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
            // decimal text parses to the correctly rounded value (powi would not)
            let v: f64 = format!("{m}e{e}").parse().expect("a decimal number");
            if v >= lo && v <= hi {
                ticks.push(v);
            }
        }
    }
    ticks
}

/// Tick text: `zero_below` (a tiny fraction of the axis span) turns round-off near 0 into "0".
fn tick_label(v: &f64, zero_below: f64) -> String {
    // round away representation noise of computed tick positions (e.g. 0.30000000000000004)
    let v = &format!("{v:.10e}").parse::<f64>().unwrap_or(*v);
    let a = v.abs();
    if *v == 0.0 || a < zero_below {
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

/// Split a polyline into the pieces inside the box [x0, x1] × [y0, y1], with the crossings of
/// the border interpolated (in log10 space on a log axis); non-finite and, on log axes,
/// non-positive points break the line.
pub fn clip_polyline(
    points: &[(f64, f64)],
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    log_x: bool,
    log_y: bool,
) -> Vec<Vec<(f64, f64)>> {
    let fwd = |v: f64, log: bool| if log { v.log10() } else { v };
    let back = |v: f64, log: bool| if log { 10f64.powf(v) } else { v };
    let valid = |(x, y): (f64, f64)| {
        x.is_finite() && y.is_finite() && (!log_x || x > 0.0) && (!log_y || y > 0.0)
    };
    let (bx0, bx1, by0, by1) = (
        fwd(x0, log_x),
        fwd(x1, log_x),
        fwd(y0, log_y),
        fwd(y1, log_y),
    );
    let mut pieces: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    let flush = |current: &mut Vec<(f64, f64)>, pieces: &mut Vec<Vec<(f64, f64)>>| {
        if current.len() >= 2 {
            pieces.push(std::mem::take(current));
        } else {
            current.clear();
        }
    };
    for w in points.windows(2) {
        let (a, b) = (w[0], w[1]);
        if !valid(a) || !valid(b) {
            flush(&mut current, &mut pieces);
            continue;
        }
        let (ax, ay, bx, by) = (
            fwd(a.0, log_x),
            fwd(a.1, log_y),
            fwd(b.0, log_x),
            fwd(b.1, log_y),
        );
        // Liang–Barsky clipping of the segment a→b.
        let (dx, dy) = (bx - ax, by - ay);
        let (mut t0, mut t1) = (0.0f64, 1.0f64);
        let mut visible = true;
        for (pk, qk) in [
            (-dx, ax - bx0),
            (dx, bx1 - ax),
            (-dy, ay - by0),
            (dy, by1 - ay),
        ] {
            if pk == 0.0 {
                if qk < 0.0 {
                    visible = false;
                    break;
                }
            } else {
                let r = qk / pk;
                if pk < 0.0 {
                    t0 = t0.max(r);
                } else {
                    t1 = t1.min(r);
                }
            }
        }
        if !visible || t0 >= t1 {
            flush(&mut current, &mut pieces);
            continue;
        }
        let p = |t: f64| (back(ax + t * dx, log_x), back(ay + t * dy, log_y));
        let start = if t0 > 0.0 { p(t0) } else { a };
        let end = if t1 < 1.0 { p(t1) } else { b };
        if t0 > 0.0 || current.is_empty() {
            flush(&mut current, &mut pieces);
            current.push(start);
        }
        current.push(end);
        if t1 < 1.0 {
            flush(&mut current, &mut pieces);
        }
    }
    flush(&mut current, &mut pieces);
    pieces
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
    let (ylo, yhi) = p.range(&p.y, false);
    let (xlo, xhi) = p.range(&p.x, true);
    let x_zero = if p.x.log {
        0.0
    } else {
        1e-9 * xlo.abs().max(xhi.abs())
    };
    let y_zero = if p.y.log {
        0.0
    } else {
        1e-9 * ylo.abs().max(yhi.abs())
    };
    let categories = p.x.categories.clone();
    let x_fmt = move |v: &f64| match &categories {
        Some(names) => {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
                names[i as usize].clone()
            } else {
                String::new()
            }
        }
        None => tick_label(v, x_zero),
    };
    let x_labels = p.x.categories.as_ref().map_or(10, |c| c.len() + 2);
    let y_fmt = move |v: &f64| tick_label(v, y_zero);
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
        .x_label_formatter(&x_fmt)
        .x_labels(x_labels)
        .y_label_formatter(&y_fmt)
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(210, 210, 210))
        .draw()
        .map_err(|e| err(&e))?;
    if !p.arrows.is_empty() {
        let plot = chart.plotting_area();
        let base = plot.strip_coord_spec();
        let (ox, oy) = plot.get_base_pixel();
        for a in &p.arrows {
            let (px, py) = plot.map_coordinate(&(a.x, a.y));
            // Direction in pixels: map a small step along (dx, dy).
            let norm = (a.dx * a.dx + a.dy * a.dy).sqrt();
            if !(norm > 0.0 && norm.is_finite()) {
                continue;
            }
            let h = 1e-3 * ((xhi - xlo).abs() + (yhi - ylo).abs()) / norm;
            let (qx, qy) = plot.map_coordinate(&(a.x + h * a.dx, a.y + h * a.dy));
            let (ux, uy) = ((qx - px) as f64, (qy - py) as f64);
            let len = (ux * ux + uy * uy).sqrt();
            if len == 0.0 {
                continue;
            }
            let (ux, uy) = (ux / len, uy / len);
            let half = 0.5 * p.arrow_px;
            let (cx, cy) = ((px - ox) as f64, (py - oy) as f64);
            let tail = ((cx - half * ux) as i32, (cy - half * uy) as i32);
            let tip = ((cx + half * ux) as i32, (cy + half * uy) as i32);
            let head = 0.35 * p.arrow_px;
            let wing = |s: f64| {
                let (c, sn) = (0.5f64.cos(), s * 0.5f64.sin());
                let (wx, wy) = (-(ux * c - uy * sn), -(ux * sn + uy * c));
                (
                    (tip.0 as f64 + head * wx) as i32,
                    (tip.1 as f64 + head * wy) as i32,
                )
            };
            let style = ShapeStyle::from(&a.color).stroke_width(2);
            base.draw(&PathElement::new(vec![tail, tip], style))
                .map_err(|e| err(&e))?;
            base.draw(&PathElement::new(vec![wing(1.0), tip, wing(-1.0)], style))
                .map_err(|e| err(&e))?;
        }
    }
    let in_x = |x: f64| x.is_finite() && (!p.x.log || x > 0.0) && x >= xlo && x <= xhi;
    let in_y = |y: f64| y.is_finite() && (!p.y.log || y > 0.0);
    let mut has_legend = false;
    for b in &p.bands {
        let (x0, x1) = (b.x0.max(xlo), b.x1.min(xhi));
        if x0 >= x1 || x0.is_nan() || x1.is_nan() || !in_x(x0) || !in_x(x1) {
            continue;
        }
        let fill = b.color.mix(0.16).filled();
        let drawn = chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x0, ylo), (x1, yhi)],
                fill,
            )))
            .map_err(|e| err(&e))?;
        if !b.label.is_empty() {
            has_legend = true;
            drawn
                .label(&b.label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], fill));
        }
    }
    for s in &p.series {
        // Lines are clipped to the plotting box (crossings interpolated); markers outside it are
        // dropped.
        let pieces: Vec<Vec<(f64, f64)>> = match s.style {
            Style::Markers(_) | Style::Bars(_) => vec![
                s.points
                    .iter()
                    .copied()
                    .filter(|&(x, y)| in_x(x) && in_y(y) && y >= ylo && y <= yhi)
                    .collect(),
            ],
            _ => clip_polyline(&s.points, (xlo, xhi), (ylo, yhi), p.x.log, p.y.log),
        };
        let Some(first) = pieces.first() else {
            continue;
        };
        let pts = first.clone();
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
            LegendAt::Best => match p.emptiest_corner() {
                LegendAt::UpperRight => SeriesLabelPosition::UpperRight,
                LegendAt::LowerLeft => SeriesLabelPosition::LowerLeft,
                LegendAt::LowerRight => SeriesLabelPosition::LowerRight,
                _ => SeriesLabelPosition::UpperLeft,
            },
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
    if let Some(cb) = &p.colorbar {
        let plot = chart.plotting_area();
        let (w, _) = plot.dim_in_pixel();
        let base = plot.strip_coord_spec();
        let (bw, bh, steps) = (16, 160, 32);
        let x0 = w as i32 - bw - 70;
        let y0 = 12;
        base.draw(&Rectangle::new(
            [(x0 - 8, y0 - 8), (x0 + bw + 66, y0 + bh + 30)],
            ShapeStyle::from(&WHITE.mix(0.9)).filled(),
        ))
        .map_err(|e| err(&e))?;
        for i in 0..steps {
            let t = 1.0 - (i as f64 + 0.5) / steps as f64;
            let ya = y0 + i * bh / steps;
            let yb = y0 + (i + 1) * bh / steps;
            base.draw(&Rectangle::new(
                [(x0, ya), (x0 + bw, yb)],
                colormap(t).filled(),
            ))
            .map_err(|e| err(&e))?;
        }
        let font = ("sans-serif", 15).into_font();
        for (v, yy) in [(cb.hi, y0 - 6), (cb.lo, y0 + bh - 10)] {
            base.draw(&Text::new(
                format!("{v:.2}"),
                (x0 + bw + 6, yy),
                font.clone(),
            ))
            .map_err(|e| err(&e))?;
        }
        base.draw(&Text::new(cb.label.clone(), (x0 - 4, y0 + bh + 8), font))
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

fn draw_heatmap<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: &Panel,
    h: &Heatmap,
) -> Result<(), String> {
    use plotters::coord::ranged1d::SegmentValue;
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let rows = h.values.len().max(1);
    let cols = h.values.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let (w, _) = area.dim_in_pixel();
    let (main, bar) = area.split_horizontally(w.saturating_sub(120));
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
    // colour bar
    let mut cb = ChartBuilder::on(&bar)
        .margin_top(50)
        .margin_bottom(70)
        .margin_right(8)
        .y_label_area_size(62)
        .build_cartesian_2d(0f64..1f64, lo..lo + span)
        .map_err(|e| err(&e))?;
    cb.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_desc(&h.scale_label)
        .axis_desc_style(("sans-serif", 17))
        .label_style(("sans-serif", 15))
        .y_labels(6)
        .y_label_formatter(&|v: &f64| tick_label(v, 1e-9 * span))
        .draw()
        .map_err(|e| err(&e))?;
    let steps = 64;
    cb.draw_series((0..steps).map(|i| {
        let a = lo + span * i as f64 / steps as f64;
        let b = lo + span * (i + 1) as f64 / steps as f64;
        Rectangle::new(
            [(0.0, a), (1.0, b)],
            colormap((i as f64 + 0.5) / steps as f64).filled(),
        )
    }))
    .map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polylines_are_clipped_at_the_box_with_exact_crossings() {
        // y = x from −1 to 3 through the box [0, 2]²: one piece from (0, 0) to (2, 2).
        let line: Vec<(f64, f64)> = (0..=4).map(|i| (i as f64 - 1.0, i as f64 - 1.0)).collect();
        let pieces = clip_polyline(&line, (0.0, 2.0), (0.0, 2.0), false, false);
        assert_eq!(pieces, vec![vec![(0.0, 0.0), (1.0, 1.0), (2.0, 2.0)]]);
        // Leaving and re-entering makes two pieces; crossings at y = 1 on the segment
        // (0.5, 0.5)→(1.5, 1.5) are at x = 1.
        let zig = vec![(0.5, 0.5), (1.5, 1.5), (2.5, 0.5), (3.5, 0.5)];
        let pieces = clip_polyline(&zig, (0.0, 4.0), (0.0, 1.0), false, false);
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[0], vec![(0.5, 0.5), (1.0, 1.0)]);
        assert_eq!(pieces[1], vec![(2.0, 1.0), (2.5, 0.5), (3.5, 0.5)]);
        // On a log axis the crossing is interpolated in log10: the segment (1, 1)→(100, 100) in
        // log-log leaves the box [1, 10]² at (10, 10).
        let pieces = clip_polyline(
            &[(1.0, 1.0), (100.0, 100.0)],
            (1.0, 10.0),
            (1.0, 10.0),
            true,
            true,
        );
        let end = pieces[0][1];
        assert!((end.0 - 10.0).abs() < 1e-12 && (end.1 - 10.0).abs() < 1e-12);
        // Non-positive points on a log axis break the line.
        let pieces = clip_polyline(
            &[(1.0, 2.0), (2.0, 0.0), (3.0, 2.0), (4.0, 3.0)],
            (1.0, 4.0),
            (1.0, 4.0),
            false,
            true,
        );
        assert_eq!(pieces, vec![vec![(3.0, 2.0), (4.0, 3.0)]]);
    }

    #[test]
    fn the_best_legend_corner_is_the_emptiest() {
        let mut p = Panel::new("t", Axis::linear("x"), Axis::linear("y"));
        // a curve falling from the upper left to the lower right leaves the other two corners
        // free; the upper right wins the tie by order of preference
        p.series.push(Series::line(
            "down",
            (0..=100).map(|i| (i as f64, 100.0 - i as f64)).collect(),
            color(0),
        ));
        assert_eq!(p.emptiest_corner(), LegendAt::UpperRight);
        // a flat line at the top and a short low segment on the left: only the lower right is free
        p.series[0].points = (0..=100).map(|i| (i as f64, 1.0)).collect();
        p.series.push(Series::line(
            "low-left",
            vec![(0.0, -5.0), (10.0, -5.0)],
            color(1),
        ));
        assert_eq!(p.emptiest_corner(), LegendAt::LowerRight);
        // on a log x axis the normalisation is in log10
        let mut q = Panel::new("t", Axis::log("x"), Axis::linear("y"));
        q.series.push(Series::line(
            "early",
            (0..=50)
                .map(|i| (10f64.powf(i as f64 / 50.0), 1.0))
                .collect(),
            color(0),
        ));
        q.series
            .push(Series::line("late", vec![(1e3, 0.0), (1e4, 0.0)], color(1)));
        assert_eq!(q.emptiest_corner(), LegendAt::UpperRight);
    }

    #[test]
    fn colormap_runs_from_dark_to_light() {
        let lum = |c: RGBColor| 0.2126 * c.0 as f64 + 0.7152 * c.1 as f64 + 0.0722 * c.2 as f64;
        let l: Vec<f64> = (0..=10).map(|i| lum(colormap(i as f64 / 10.0))).collect();
        assert!(l.windows(2).all(|w| w[1] > w[0]), "{l:?}");
    }
}

#[cfg(test)]
mod log_tick_tests {
    use super::*;

    #[test]
    fn log_ticks_label_every_part_of_the_range() {
        assert_eq!(log_ticks(0.015, 1.2), vec![0.02, 0.05, 0.1, 0.2, 0.5, 1.0]);
        assert_eq!(log_ticks(1.0, 1e8).len(), 9);
        assert_eq!(log_ticks(1.0, 1e9).len(), 5); // every other decade beyond 8 decades
        assert_eq!(
            log_ticks(1e-30, 1.0),
            vec![1e-28, 1e-24, 1e-20, 1e-16, 1e-12, 1e-8, 1e-4, 1.0]
        );
        let short = log_ticks(0.35, 0.9);
        assert!(short.len() >= 4 && short.iter().all(|&v| (0.35..=0.9).contains(&v)));
    }
}
