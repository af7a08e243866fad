//! Clipping polylines at a panel's box (in log10 on log axes), with the exact crossings.

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
        let (dx, dy) = (bx - ax, by - ay);
        let Some((t0, t1)) =
            liang_barsky((ax, ay), (bx, by), (bx0, by0, bx1, by1)).filter(|(t0, t1)| t0 < t1)
        else {
            flush(&mut current, &mut pieces);
            continue;
        };
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

/// Liang–Barsky: the parameter interval [t0, t1] of the segment a→b (points a + t (b − a),
/// t in [0, 1]) inside the rectangle [x0, x1] × [y0, y1], or `None` when the segment runs
/// parallel to an edge outside it. The segment meets the rectangle iff t0 <= t1.
pub(super) fn liang_barsky(
    a: (f64, f64),
    b: (f64, f64),
    (x0, y0, x1, y1): (f64, f64, f64, f64),
) -> Option<(f64, f64)> {
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
                return None;
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
    Some((t0, t1))
}
