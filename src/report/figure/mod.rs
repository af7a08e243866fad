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

mod clip;
mod draw;
mod heatmap;
mod legend;
mod ticks;

pub use clip::clip_polyline;
pub use draw::render;
pub use ticks::log_ticks;
#[allow(unused_imports)]
use {draw::*, heatmap::*, legend::*, ticks::*};

static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");
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
