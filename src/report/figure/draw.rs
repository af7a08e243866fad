//! Drawing a [`Figure`] with plotters: the grid of panels, each panel's axes, series, bands,
//! event markers, arrows and notes.

use super::*;

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
pub(super) fn body_cells<DB: DrawingBackend>(
    body: &DrawingArea<DB, Shift>,
    fig: &Figure,
) -> Vec<CellRect> {
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
pub(super) struct Layout {
    pub(super) plans: Vec<Plan>,
    /// Extra pixels under each grid row (the tallest legend strip in the row).
    pub(super) extra: Vec<u32>,
    pub(super) cells: Vec<CellRect>,
}

pub(super) fn titled_body<'a, DB: DrawingBackend + 'a>(
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

pub(super) fn plan_figure(fig: &Figure) -> Result<Layout, String> {
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

pub(super) fn draw_figure<DB: DrawingBackend>(
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
pub(super) fn draw_panel<DB: DrawingBackend>(
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

pub(super) fn draw_with<DB, X, Y>(
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
