//! Legends: their entries, their size, and where they go so they do not cover the data.

use super::*;

/// A panel's legend placement, decided on an off-screen copy of the panel (see [`render`]).
#[derive(Debug, Clone, Default)]
pub(super) struct Plan {
    pub(super) place: Place,
    /// Height of the legend strip under the panel (0 when the legend is inside or absent).
    pub(super) strip: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) enum Place {
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
pub(super) enum Glyph {
    Line(RGBColor, u32),
    Dashed(RGBColor, u32),
    Marker(Marker, RGBColor),
    Fill(RGBColor),
    Event(RGBColor, (u32, u32)),
}

pub(super) struct Entry {
    pub(super) label: String,
    pub(super) glyph: Glyph,
}

pub(super) const LEGEND_FONT: u32 = 16;
pub(super) const LEGEND_ROW: i32 = 22;
pub(super) const LEGEND_PAD: i32 = 8;
pub(super) const GLYPH_W: i32 = 30;

/// Dash patterns (dash, gap) of the vertical markers of a panel, cycled so that markers of one
/// colour still differ.
pub(super) const EVENT_DASHES: [(u32, u32); 4] = [(7, 5), (2, 4), (14, 5), (10, 3)];

pub(super) fn legend_font() -> FontDesc<'static> {
    ("sans-serif", LEGEND_FONT).into_font()
}

/// Column layout of a legend: entries in column-major order, each column as wide as its widest
/// entry. Returns the columns' widths and the number of rows.
pub(super) fn legend_columns(widths: &[i32], cols: usize) -> (Vec<i32>, usize) {
    let n = widths.len();
    let cols = cols.clamp(1, n.max(1));
    let rows = n.div_ceil(cols).max(1);
    let col_w = widths
        .chunks(rows)
        .map(|c| GLYPH_W + 8 + c.iter().copied().max().unwrap_or(0))
        .collect();
    (col_w, rows)
}

pub(super) fn legend_size(widths: &[i32], cols: usize) -> (i32, i32) {
    let (col_w, rows) = legend_columns(widths, cols);
    let w = col_w.iter().sum::<i32>() + 18 * (col_w.len() as i32 - 1) + 2 * LEGEND_PAD;
    (w, rows as i32 * LEGEND_ROW + 2 * LEGEND_PAD - 4)
}

pub(super) fn draw_glyph<DB: DrawingBackend>(
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
pub(super) fn draw_legend<DB: DrawingBackend>(
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
pub(super) fn segment_meets_rect(a: (f64, f64), b: (f64, f64), rect: (f64, f64, f64, f64)) -> bool {
    super::clip::liang_barsky(a, b, rect).is_some_and(|(t0, t1)| t0 <= t1)
}

/// The pixel rectangle (x0, y0, x1, y1) of the notes box in a plot whose pixel range is `plot`.
pub(super) fn notes_rect(p: &Panel, plot: (i32, i32, i32, i32)) -> Option<(i32, i32, i32, i32)> {
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
pub(super) fn coincides(a: &[(i32, i32)], b: &[(i32, i32)]) -> bool {
    a.len() == b.len()
        && a.len() >= 2
        && a.iter()
            .zip(b)
            .all(|(p, q)| (p.0 - q.0).abs() <= 1 && (p.1 - q.1).abs() <= 1)
}
