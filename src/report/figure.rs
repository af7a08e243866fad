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

/// A colour scale drawn in a column right of the plot: `label`, and the values at its two ends.
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
    /// In a strip under the panel, outside the plot.
    Below,
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
///
/// Layout runs first (on an off-screen bitmap of the same size): each panel's legend goes into
/// the first plot corner where it hides nothing, otherwise into a strip under the panel; rows
/// with such strips make the image taller so that the plots keep their size.
pub fn render(fig: &Figure, path: &Path) -> Result<(), String> {
    register_font();
    let layout = plan_figure(fig)?;
    let size = (fig.width, fig.height + layout.extra.iter().sum::<u32>());
    if path.extension().is_some_and(|e| e == "svg") {
        let root = SVGBackend::new(path, size).into_drawing_area();
        draw_figure(&root, fig, &layout)?;
        root.present().map_err(|e| e.to_string())
    } else {
        let root = BitMapBackend::new(path, size).into_drawing_area();
        draw_figure(&root, fig, &layout)?;
        root.present().map_err(|e| e.to_string())
    }
}

/// The figure's body (below the title) split into its grid cells, as `(x, y, w, h)` relative to
/// the body, row by row.
fn body_cells<DB: DrawingBackend>(body: &DrawingArea<DB, Shift>, fig: &Figure) -> Vec<CellRect> {
    let (bx, by) = body.get_base_pixel();
    body.split_evenly((fig.rows, fig.cols))
        .iter()
        .map(|a| {
            let (x, y) = a.get_base_pixel();
            let (w, h) = a.dim_in_pixel();
            (x - bx, y - by, w, h)
        })
        .collect()
}

type CellRect = (i32, i32, u32, u32);

/// Where each panel's legend goes and how much taller each grid row gets for legend strips.
struct Layout {
    plans: Vec<Plan>,
    /// Extra pixels under each grid row (the tallest legend strip in the row).
    extra: Vec<u32>,
    cells: Vec<CellRect>,
}

fn titled_body<'a, DB: DrawingBackend + 'a>(
    root: &DrawingArea<DB, Shift>,
    fig: &Figure,
) -> Result<DrawingArea<DB, Shift>, String> {
    match &fig.title {
        Some(t) => root
            .titled(t, ("sans-serif", 30).into_font())
            .map_err(|e| e.to_string()),
        None => Ok(root.clone()),
    }
}

fn plan_figure(fig: &Figure) -> Result<Layout, String> {
    let (w, h) = (fig.width.max(1), fig.height.max(1));
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
    let body = titled_body(&root, fig)?;
    let cells = body_cells(&body, fig);
    let mut plans = Vec::new();
    for (&(_, _, cw, ch), p) in cells.iter().zip(&fig.panels) {
        let mut cb = vec![255u8; (cw.max(1) * ch.max(1) * 3) as usize];
        let area = BitMapBackend::with_buffer(&mut cb, (cw.max(1), ch.max(1))).into_drawing_area();
        plans.push(draw_panel(&area, None, p, None)?);
    }
    let mut extra = vec![0u32; fig.rows];
    for (i, plan) in plans.iter().enumerate() {
        let r = i / fig.cols.max(1);
        if r < extra.len() {
            extra[r] = extra[r].max(plan.strip);
        }
    }
    Ok(Layout {
        plans,
        extra,
        cells,
    })
}

fn draw_figure<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    fig: &Figure,
    layout: &Layout,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let body = titled_body(root, fig)?;
    let (bx, by) = body.get_base_pixel();
    let (rx, ry) = root.get_base_pixel();
    let cols = fig.cols.max(1);
    for (i, ((&(x, y, w, h), panel), plan)) in layout
        .cells
        .iter()
        .zip(&fig.panels)
        .zip(&layout.plans)
        .enumerate()
    {
        let row = i / cols;
        let shift: u32 = layout.extra[..row.min(layout.extra.len())].iter().sum();
        let strip_h = layout.extra.get(row).copied().unwrap_or(0);
        let (x0, y0) = (bx - rx + x, by - ry + y + shift as i32);
        let cell = root.clone().shrink((x0, y0), (w, h));
        let strip = (strip_h > 0).then(|| root.clone().shrink((x0, y0 + h as i32), (w, strip_h)));
        draw_panel(&cell, strip.as_ref(), panel, Some(plan))?;
    }
    Ok(())
}

/// Lay out (`plan` = None: nothing of value is drawn, the plan is returned) or draw a panel in
/// `area`, its legend strip (if the plan has one) in `strip`.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    strip: Option<&DrawingArea<DB, Shift>>,
    p: &Panel,
    plan: Option<&Plan>,
) -> Result<Plan, String> {
    if let Some(h) = &p.heatmap {
        if plan.is_some() {
            draw_heatmap(area, p, h)?;
        }
        return Ok(Plan::default());
    }
    let (x0, x1) = p.range(&p.x, true);
    let (y0, y1) = p.range(&p.y, false);
    let xl = || (x0..x1).log_scale().with_key_points(log_ticks(x0, x1));
    let yl = || (y0..y1).log_scale().with_key_points(log_ticks(y0, y1));
    match (p.x.log, p.y.log) {
        (false, false) => draw_with(area, strip, p, x0..x1, y0..y1, plan),
        (true, false) => draw_with(area, strip, p, xl(), y0..y1, plan),
        (false, true) => draw_with(area, strip, p, x0..x1, yl(), plan),
        (true, true) => draw_with(area, strip, p, xl(), yl(), plan),
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

/// How an axis writes its ticks: every tick of an axis in the same style, plain decimals when
/// the whole axis lies in [10⁻³, 10⁵) and powers of ten (10⁶, 2×10⁻⁴) otherwise.
#[derive(Debug, Clone, Copy)]
struct TickStyle {
    /// Below this magnitude a tick is round-off of 0 and reads "0" (linear axes).
    zero_below: f64,
    powers: bool,
}

impl TickStyle {
    fn of(lo: f64, hi: f64, log: bool) -> Self {
        let plain = |v: f64| v == 0.0 || (1e-3..1e5).contains(&v.abs());
        if log {
            let ticks = log_ticks(lo, hi);
            let powers = if ticks.is_empty() {
                !(plain(lo) && plain(hi))
            } else {
                !ticks.iter().all(|&t| plain(t))
            };
            TickStyle {
                zero_below: 0.0,
                powers,
            }
        } else {
            let top = lo.abs().max(hi.abs());
            TickStyle {
                zero_below: 1e-9 * top,
                powers: top > 0.0 && !(1e-3..1e5).contains(&top),
            }
        }
    }
    fn label(&self, v: f64) -> String {
        tick_label(&v, self.zero_below, self.powers)
    }
}

fn superscript(n: i64) -> String {
    n.to_string()
        .chars()
        .map(|c| match c {
            '-' => '⁻',
            '0' => '⁰',
            '1' => '¹',
            '2' => '²',
            '3' => '³',
            '4' => '⁴',
            '5' => '⁵',
            '6' => '⁶',
            '7' => '⁷',
            '8' => '⁸',
            '9' => '⁹',
            c => c,
        })
        .collect()
}

/// Tick text: `zero_below` (a tiny fraction of the axis span) turns round-off near 0 into "0";
/// `powers` writes m×10ᵏ (10ᵏ when m = 1) instead of a plain decimal.
fn tick_label(v: &f64, zero_below: f64, powers: bool) -> String {
    // round away representation noise of computed tick positions (e.g. 0.30000000000000004)
    let v = &format!("{v:.10e}").parse::<f64>().unwrap_or(*v);
    let a = v.abs();
    if *v == 0.0 || a < zero_below {
        "0".into()
    } else if powers {
        let mut e = a.log10().floor() as i64;
        let mut m = (a / 10f64.powi(e as i32) * 100.0).round() / 100.0;
        if m >= 10.0 {
            m /= 10.0;
            e += 1;
        }
        let sign = if *v < 0.0 { "-" } else { "" };
        if m == 1.0 {
            format!("{sign}10{}", superscript(e))
        } else {
            let m = format!("{m:.2}");
            let m = m.trim_end_matches('0').trim_end_matches('.');
            format!("{sign}{m}×10{}", superscript(e))
        }
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

/// A panel's legend placement, decided on an off-screen copy of the panel (see [`render`]).
#[derive(Debug, Clone, Default)]
struct Plan {
    place: Place,
    /// Height of the legend strip under the panel (0 when the legend is inside or absent).
    strip: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
enum Place {
    #[default]
    None,
    /// In this corner of the plot, where it covers no data.
    Inside(LegendAt),
    /// In a strip under the panel, `cols` columns wide, centred on the plot (x offset in the
    /// panel).
    Below { cols: usize, center: i32 },
}

/// How a legend entry is drawn.
#[derive(Debug, Clone, Copy)]
enum Glyph {
    Line(RGBColor, u32),
    Dashed(RGBColor, u32),
    Marker(Marker, RGBColor),
    Fill(RGBColor),
    Event(RGBColor, (u32, u32)),
}

struct Entry {
    label: String,
    glyph: Glyph,
}

const LEGEND_FONT: u32 = 16;
const LEGEND_ROW: i32 = 22;
const LEGEND_PAD: i32 = 8;
const GLYPH_W: i32 = 30;

/// Dash patterns (dash, gap) of the vertical markers of a panel, cycled so that markers of one
/// colour still differ.
const EVENT_DASHES: [(u32, u32); 4] = [(7, 5), (2, 4), (14, 5), (10, 3)];

fn legend_font() -> FontDesc<'static> {
    ("sans-serif", LEGEND_FONT).into_font()
}

/// Column layout of a legend: entries in column-major order, each column as wide as its widest
/// entry. Returns the columns' widths and the number of rows.
fn legend_columns(widths: &[i32], cols: usize) -> (Vec<i32>, usize) {
    let n = widths.len();
    let cols = cols.clamp(1, n.max(1));
    let rows = n.div_ceil(cols).max(1);
    let col_w = widths
        .chunks(rows)
        .map(|c| GLYPH_W + 8 + c.iter().copied().max().unwrap_or(0))
        .collect();
    (col_w, rows)
}

fn legend_size(widths: &[i32], cols: usize) -> (i32, i32) {
    let (col_w, rows) = legend_columns(widths, cols);
    let w = col_w.iter().sum::<i32>() + 18 * (col_w.len() as i32 - 1) + 2 * LEGEND_PAD;
    (w, rows as i32 * LEGEND_ROW + 2 * LEGEND_PAD - 4)
}

fn draw_glyph<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    g: Glyph,
    (x, y): (i32, i32),
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    match g {
        Glyph::Line(c, w) => area
            .draw(&PathElement::new(
                vec![(x, y), (x + GLYPH_W, y)],
                c.stroke_width(w.max(2)),
            ))
            .map_err(e),
        Glyph::Dashed(c, w) => {
            for k in 0..3 {
                let a = x + k * 12;
                area.draw(&PathElement::new(
                    vec![(a, y), ((a + 7).min(x + GLYPH_W), y)],
                    c.stroke_width(w.max(2)),
                ))
                .map_err(e)?;
            }
            Ok(())
        }
        Glyph::Marker(m, c) => {
            let at = (x + GLYPH_W / 2, y);
            match m {
                Marker::Circle => area.draw(&Circle::new(at, 5, c.filled())),
                Marker::Triangle => area.draw(&TriangleMarker::new(at, 6, c.filled())),
                Marker::Square => area.draw(&Rectangle::new(
                    [(at.0 - 4, y - 4), (at.0 + 4, y + 4)],
                    c.filled(),
                )),
                Marker::Cross => area.draw(&Cross::new(at, 5, c.stroke_width(2))),
            }
            .map_err(e)
        }
        Glyph::Fill(c) => area
            .draw(&Rectangle::new(
                [(x, y - 7), (x + GLYPH_W, y + 7)],
                c.mix(0.3).filled(),
            ))
            .map_err(e),
        Glyph::Event(c, (dash, gap)) => {
            let mut a = y - 9;
            while a < y + 9 {
                let b = (a + dash as i32).min(y + 9);
                area.draw(&PathElement::new(
                    vec![(x + GLYPH_W / 2, a), (x + GLYPH_W / 2, b)],
                    c.stroke_width(2),
                ))
                .map_err(e)?;
                a = b + gap as i32;
            }
            Ok(())
        }
    }
}

/// Draw a boxed legend with its upper-left corner at `at` in `area`.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[Entry],
    widths: &[i32],
    cols: usize,
    at: (i32, i32),
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let (w, h) = legend_size(widths, cols);
    let (col_w, rows) = legend_columns(widths, cols);
    area.draw(&Rectangle::new(
        [at, (at.0 + w, at.1 + h)],
        WHITE.mix(0.9).filled(),
    ))
    .map_err(e)?;
    area.draw(&Rectangle::new(
        [at, (at.0 + w, at.1 + h)],
        RGBColor(160, 160, 160),
    ))
    .map_err(e)?;
    let font = legend_font();
    let mut x = at.0 + LEGEND_PAD;
    for (c, chunk) in entries.chunks(rows).enumerate() {
        for (r, entry) in chunk.iter().enumerate() {
            let y = at.1 + LEGEND_PAD - 2 + r as i32 * LEGEND_ROW + LEGEND_ROW / 2;
            draw_glyph(area, entry.glyph, (x, y))?;
            area.draw(&Text::new(
                entry.label.clone(),
                (x + GLYPH_W + 8, y),
                TextStyle::from(font.clone()).pos(plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Left,
                    plotters::style::text_anchor::VPos::Center,
                )),
            ))
            .map_err(e)?;
        }
        x += col_w[c] + 18;
    }
    Ok(())
}

/// Does the segment a→b (pixels) meet the rectangle [x0, x1] × [y0, y1]?
fn segment_meets_rect(
    a: (f64, f64),
    b: (f64, f64),
    (x0, y0, x1, y1): (f64, f64, f64, f64),
) -> bool {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (pk, qk) in [
        (-dx, a.0 - x0),
        (dx, x1 - a.0),
        (-dy, a.1 - y0),
        (dy, y1 - a.1),
    ] {
        if pk == 0.0 {
            if qk < 0.0 {
                return false;
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
    t0 <= t1
}

/// The pixel rectangle (x0, y0, x1, y1) of the notes box in a plot whose pixel range is `plot`.
fn notes_rect(p: &Panel, plot: (i32, i32, i32, i32)) -> Option<(i32, i32, i32, i32)> {
    if p.notes.is_empty() {
        return None;
    }
    let box_h = (p.notes.len() as i32) * 20 + 10;
    let box_w = p.notes.iter().map(|n| n.chars().count()).max().unwrap_or(0) as i32 * 9 + 16;
    let (x1, y1) = (plot.2 - 8, plot.3 - 8);
    Some((x1 - box_w, y1 - box_h, x1, y1))
}

/// A series drawn as a dashed line over an earlier solid one it coincides with (same points to
/// within a pixel), so that both stay visible.
fn coincides(a: &[(i32, i32)], b: &[(i32, i32)]) -> bool {
    a.len() == b.len()
        && a.len() >= 2
        && a.iter()
            .zip(b)
            .all(|(p, q)| (p.0 - q.0).abs() <= 1 && (p.1 - q.1).abs() <= 1)
}

fn draw_with<DB, X, Y>(
    area: &DrawingArea<DB, Shift>,
    strip: Option<&DrawingArea<DB, Shift>>,
    p: &Panel,
    xr: X,
    yr: Y,
    plan: Option<&Plan>,
) -> Result<Plan, String>
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
    let x_ticks = TickStyle::of(xlo, xhi, p.x.log);
    let y_ticks = TickStyle::of(ylo, yhi, p.y.log);
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
        None => x_ticks.label(*v),
    };
    let x_labels = p.x.categories.as_ref().map_or(10, |c| c.len() + 2);
    let y_fmt = move |v: &f64| y_ticks.label(*v);
    // A colour bar gets its own column right of the plot.
    let (main, bar) = if p.colorbar.is_some() {
        let (w, _) = area.dim_in_pixel();
        let (m, b) = area.split_horizontally(w.saturating_sub(COLORBAR_W));
        (m, Some(b))
    } else {
        (area.clone(), None)
    };
    // The y tick labels get the room they need (powers of ten are wider than plain numbers).
    let y_tick_w = {
        let probe: Vec<f64> = if p.y.log {
            log_ticks(ylo, yhi)
        } else {
            nice_ticks(ylo, yhi, 10.0)
        };
        let style = TextStyle::from(("sans-serif", 17).into_font());
        probe
            .iter()
            .filter_map(|&v| area.estimate_text_size(&y_ticks.label(v), &style).ok())
            .map(|(w, _)| w)
            .max()
            .unwrap_or(0)
    };
    let mut chart = ChartBuilder::on(&main)
        .caption(&p.title, ("sans-serif", 24).into_font())
        .margin(12)
        .x_label_area_size(58)
        .y_label_area_size((y_tick_w + 46).max(86))
        .build_cartesian_2d(xr, yr)
        .map_err(|e| err(&e))?;
    let (plot_x, plot_y) = chart.plotting_area().get_pixel_range();
    let (ax, ay) = area.get_base_pixel();
    // Plot box in `area`'s pixel coordinates.
    let plot = (
        plot_x.start - ax,
        plot_y.start - ay,
        plot_x.end - ax,
        plot_y.end - ay,
    );
    let in_x = |x: f64| x.is_finite() && (!p.x.log || x > 0.0) && x >= xlo && x <= xhi;
    let in_y = |y: f64| y.is_finite() && (!p.y.log || y > 0.0);
    // Visible pieces of each series (lines clipped to the box, markers outside it dropped).
    let pieces: Vec<Vec<Vec<(f64, f64)>>> = p
        .series
        .iter()
        .map(|s| match s.style {
            Style::Markers(_) | Style::Bars(_) => vec![
                s.points
                    .iter()
                    .copied()
                    .filter(|&(x, y)| in_x(x) && in_y(y) && y >= ylo && y <= yhi)
                    .collect(),
            ],
            _ => clip_polyline(&s.points, (xlo, xhi), (ylo, yhi), p.x.log, p.y.log),
        })
        .collect();
    let px = |(x, y): (f64, f64)| {
        let (u, v) = chart.backend_coord(&(x, y));
        (u - ax, v - ay)
    };
    // Solid lines lying exactly on an earlier solid line are drawn dashed on top of it.
    let pixel_paths: Vec<Vec<(i32, i32)>> = p
        .series
        .iter()
        .map(|s| s.points.iter().map(|&q| px(q)).collect())
        .collect();
    let dashed_over: Vec<bool> = (0..p.series.len())
        .map(|j| {
            p.series[j].style == Style::Line
                && (0..j).any(|i| {
                    p.series[i].style == Style::Line && coincides(&pixel_paths[i], &pixel_paths[j])
                })
        })
        .collect();
    // Legend entries: bands, series, then vertical markers, in the panel's order.
    let mut entries: Vec<Entry> = Vec::new();
    for b in &p.bands {
        let (x0, x1) = (b.x0.max(xlo), b.x1.min(xhi));
        if !b.label.is_empty() && x0 < x1 && in_x(x0) && in_x(x1) {
            entries.push(Entry {
                label: b.label.clone(),
                glyph: Glyph::Fill(b.color),
            });
        }
    }
    for (k, s) in p.series.iter().enumerate() {
        let Some(label) = &s.label else { continue };
        if pieces[k].is_empty() {
            continue;
        }
        let glyph = match s.style {
            Style::Line if dashed_over[k] => Glyph::Dashed(s.color, s.width),
            Style::Line => Glyph::Line(s.color, s.width),
            Style::Dashed => Glyph::Dashed(s.color, s.width.max(3)),
            Style::Markers(m) => Glyph::Marker(m, s.color),
            Style::Bars(_) => Glyph::Marker(Marker::Square, s.color),
        };
        entries.push(Entry {
            label: label.clone(),
            glyph,
        });
    }
    let visible_vlines: Vec<&VLine> = p.vlines.iter().filter(|v| in_x(v.x)).collect();
    for (k, v) in visible_vlines.iter().enumerate() {
        entries.push(Entry {
            label: v.label.clone(),
            glyph: Glyph::Event(v.color, EVENT_DASHES[k % EVENT_DASHES.len()]),
        });
    }
    let font = legend_font();
    let widths: Vec<i32> = entries
        .iter()
        .map(|e| {
            area.estimate_text_size(&e.label, &TextStyle::from(font.clone()))
                .map_or(e.label.chars().count() as i32 * 9, |(w, _)| w as i32)
        })
        .collect();
    let Some(plan) = plan else {
        // Layout only: choose the legend's place.
        if entries.is_empty() {
            return Ok(Plan::default());
        }
        let (lw, lh) = legend_size(&widths, 1);
        let inset = 10;
        let corner = |c: LegendAt| {
            let x0 = match c {
                LegendAt::UpperRight | LegendAt::LowerRight => plot.2 - inset - lw,
                _ => plot.0 + inset,
            };
            let y0 = match c {
                LegendAt::LowerLeft | LegendAt::LowerRight => plot.3 - inset - lh,
                _ => plot.1 + inset,
            };
            (x0, y0, x0 + lw, y0 + lh)
        };
        let fits = lw + 2 * inset <= plot.2 - plot.0 && lh + 2 * inset <= plot.3 - plot.1;
        let free = |r: (i32, i32, i32, i32)| -> bool {
            let grow = |d: i32| {
                (
                    (r.0 - d) as f64,
                    (r.1 - d) as f64,
                    (r.2 + d) as f64,
                    (r.3 + d) as f64,
                )
            };
            for (k, s) in p.series.iter().enumerate() {
                let rr = grow(s.width as i32 + 2);
                for piece in &pieces[k] {
                    let q: Vec<(f64, f64)> = piece
                        .iter()
                        .map(|&d| {
                            let (u, v) = px(d);
                            (u as f64, v as f64)
                        })
                        .collect();
                    let hit = match s.style {
                        Style::Markers(_) | Style::Bars(_) => {
                            let rm = grow(8);
                            q.iter()
                                .any(|&(u, v)| u >= rm.0 && u <= rm.2 && v >= rm.1 && v <= rm.3)
                        }
                        _ => q.windows(2).any(|w| segment_meets_rect(w[0], w[1], rr)),
                    };
                    if hit {
                        return false;
                    }
                }
            }
            for v in &visible_vlines {
                let (u, _) = px((v.x, ylo));
                if u >= r.0 - 3 && u <= r.2 + 3 {
                    return false;
                }
            }
            let half = (0.5 * p.arrow_px).ceil() as i32 + 2;
            for a in &p.arrows {
                let (u, v) = px((a.x, a.y));
                if u >= r.0 - half && u <= r.2 + half && v >= r.1 - half && v <= r.3 + half {
                    return false;
                }
            }
            if let Some(n) = notes_rect(p, plot)
                && n.0 < r.2
                && r.0 < n.2
                && n.1 < r.3
                && r.1 < n.3
            {
                return false;
            }
            true
        };
        let order = [
            LegendAt::UpperLeft,
            LegendAt::UpperRight,
            LegendAt::LowerLeft,
            LegendAt::LowerRight,
        ];
        let first = match p.legend {
            LegendAt::Best => p.emptiest_corner(),
            c => c,
        };
        if first != LegendAt::Below && fits {
            let candidates =
                std::iter::once(first).chain(order.into_iter().filter(|&c| c != first));
            for c in candidates {
                if free(corner(c)) {
                    return Ok(Plan {
                        place: Place::Inside(c),
                        strip: 0,
                    });
                }
            }
        }
        // No free corner: under the panel, in as many columns as fit its width.
        let (aw, _) = area.dim_in_pixel();
        let avail = aw as i32 - 24;
        let cols = (1..=entries.len())
            .rev()
            .find(|&c| legend_size(&widths, c).0 <= avail)
            .unwrap_or(1);
        let (_, h) = legend_size(&widths, cols);
        return Ok(Plan {
            place: Place::Below {
                cols,
                center: (plot.0 + plot.2) / 2,
            },
            strip: h as u32 + 14,
        });
    };
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
    for b in &p.bands {
        let (x0, x1) = (b.x0.max(xlo), b.x1.min(xhi));
        if x0 >= x1 || x0.is_nan() || x1.is_nan() || !in_x(x0) || !in_x(x1) {
            continue;
        }
        let fill = b.color.mix(0.16).filled();
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x0, ylo), (x1, yhi)],
                fill,
            )))
            .map_err(|e| err(&e))?;
    }
    for (k, s) in p.series.iter().enumerate() {
        let color = s.color;
        let style = ShapeStyle::from(&color).stroke_width(s.width);
        for pts in pieces[k].iter().cloned() {
            match s.style {
                Style::Bars(w) => {
                    let fill = ShapeStyle::from(&color).filled();
                    let base = if p.y.log { ylo } else { 0.0f64.clamp(ylo, yhi) };
                    chart.draw_series(pts.into_iter().map(|(x, y)| {
                        Rectangle::new([(x - w / 2.0, base), (x + w / 2.0, y)], fill)
                    }))
                }
                Style::Line if dashed_over[k] => {
                    chart.draw_series(DashedLineSeries::new(pts, 9, 9, style))
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
        }
    }
    for (k, v) in visible_vlines.iter().enumerate() {
        let (dash, gap) = EVENT_DASHES[k % EVENT_DASHES.len()];
        chart
            .draw_series(DashedLineSeries::new(
                vec![(v.x, ylo), (v.x, yhi)],
                dash,
                gap,
                v.color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?;
    }
    if let Some(cb) = &p.colorbar
        && let Some(bar) = &bar
    {
        let (_, bh) = bar.dim_in_pixel();
        draw_colorbar(
            bar,
            (cb.lo, cb.hi),
            &cb.label,
            plot.1 as u32,
            bh.saturating_sub(plot.3 as u32),
        )?;
    }
    if let Some((x0, y0, x1, y1)) = notes_rect(p, plot) {
        area.draw(&Rectangle::new(
            [(x0, y0), (x1, y1)],
            ShapeStyle::from(&WHITE.mix(0.9)).filled(),
        ))
        .map_err(|e| err(&e))?;
        area.draw(&Rectangle::new(
            [(x0, y0), (x1, y1)],
            RGBColor(160, 160, 160),
        ))
        .map_err(|e| err(&e))?;
        for (i, note) in p.notes.iter().enumerate() {
            area.draw(&Text::new(
                note.clone(),
                (x0 + 8, y0 + 6 + i as i32 * 20),
                ("sans-serif", 16).into_font(),
            ))
            .map_err(|e| err(&e))?;
        }
    }
    match plan.place {
        Place::None => {}
        Place::Inside(c) => {
            let (lw, lh) = legend_size(&widths, 1);
            let x0 = match c {
                LegendAt::UpperRight | LegendAt::LowerRight => plot.2 - 10 - lw,
                _ => plot.0 + 10,
            };
            let y0 = match c {
                LegendAt::LowerLeft | LegendAt::LowerRight => plot.3 - 10 - lh,
                _ => plot.1 + 10,
            };
            draw_legend(area, &entries, &widths, 1, (x0, y0))?;
        }
        Place::Below { cols, center } => {
            if let Some(strip) = strip {
                let (sw, _) = strip.dim_in_pixel();
                let (lw, _) = legend_size(&widths, cols);
                let x0 = (center - lw / 2).clamp(4, (sw as i32 - lw - 4).max(4));
                draw_legend(strip, &entries, &widths, cols, (x0, 2))?;
            }
        }
    }
    Ok(plan.clone())
}

/// Width of the colour-bar column right of a plot.
const COLORBAR_W: u32 = 124;

/// Round tick values inside [lo, hi] (steps of 1, 2 or 5 times a power of ten, at most
/// `most_steps` + 1 of them).
fn nice_ticks(lo: f64, hi: f64, most_steps: f64) -> Vec<f64> {
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
fn draw_colorbar<DB: DrawingBackend>(
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

#[cfg(test)]
mod tick_style_tests {
    use super::*;

    #[test]
    fn an_axis_writes_all_its_ticks_in_one_style() {
        // 1 … 10⁷ on a log axis: powers of ten throughout, not "1, 100, 10000, 1e6"
        let s = TickStyle::of(0.5, 2e7, true);
        let labels: Vec<String> = log_ticks(0.5, 2e7).iter().map(|&v| s.label(v)).collect();
        assert_eq!(labels[0], "10⁰");
        assert!(labels.contains(&"10⁶".to_string()), "{labels:?}");
        // a log axis inside [10⁻³, 10⁵) stays plain
        let s = TickStyle::of(3.0, 5000.0, true);
        assert_eq!(s.label(20.0), "20");
        assert_eq!(s.label(1000.0), "1000");
        // a linear axis reaching 2×10⁵ writes every nonzero tick as a power
        let s = TickStyle::of(0.0, 2e5, false);
        assert_eq!(s.label(0.0), "0");
        assert_eq!(s.label(5e4), "5×10⁴");
        assert_eq!(s.label(1.5e5), "1.5×10⁵");
        let s = TickStyle::of(-2e-4, 0.0, false);
        assert_eq!(s.label(-1e-4), "-10⁻⁴");
    }

    #[test]
    fn colour_bar_ticks_are_round_and_inside() {
        let t = nice_ticks(-2.11, -0.45, 5.0);
        assert_eq!(t, vec![-2.0, -1.5, -1.0, -0.5]);
    }
}
