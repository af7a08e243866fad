//! `sweep.png`/`.svg`: every time against the swept value on log-log axes, with the fits.

use super::*;

/// Log-log times against x per group with the fitted lines (slope and interval in the legend)
/// and x² / x guide segments; value columns in panels of their own.
pub(super) fn sweep_figure(
    family: &str,
    layout: &Layout,
    rows: &[Vec<String>],
    fits: &[FitEntry],
    spec: &Sweep,
) -> Figure {
    let markers = [
        Marker::Circle,
        Marker::Triangle,
        Marker::Square,
        Marker::Cross,
    ];
    let x_name = layout.columns[layout.x].name.clone();
    let x_axis = || Axis::log(format!("{x_name} (log scale)"));
    let keys = group_keys(layout, rows);
    let in_group = |key: &Vec<String>| -> Vec<&Vec<String>> {
        rows.iter()
            .filter(|r| layout.groups.iter().zip(key).all(|(&g, k)| &r[g] == k))
            .collect()
    };
    let label_of = |key: &Vec<String>| -> String {
        layout
            .groups
            .iter()
            .zip(key)
            .map(|(&g, k)| format!("{} {k}", layout.columns[g].name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let time_cols: Vec<usize> = (0..layout.columns.len())
        .filter(|&c| layout.columns[c].role == Role::Time)
        .collect();
    let value_cols: Vec<usize> = (0..layout.columns.len())
        .filter(|&c| layout.columns[c].role == Role::Value)
        .collect();
    let points_of = |group: &[&Vec<String>], c: usize| -> Vec<(f64, f64)> {
        group
            .iter()
            .filter_map(|r| Some((num(&r[layout.x])?, num(&r[c])?)))
            .collect()
    };
    let mut panels = Vec::new();
    let mut residual_panels = Vec::new();
    if !time_cols.is_empty() {
        for key in keys.iter().take(6) {
            let group = in_group(key);
            let title = if key.is_empty() {
                "emergence times".to_string()
            } else {
                label_of(key)
            };
            let mut resid = Panel::new(
                format!("fit residuals — {title}"),
                x_axis(),
                Axis::linear("ln T − fitted ln T"),
            );
            resid.legend = LegendAt::LowerRight;
            let mut p = Panel::new(title, x_axis(), Axis::log("time T (log scale)"));
            p.legend = LegendAt::UpperLeft;
            let (mut x_lo, mut x_hi) = (f64::INFINITY, 0.0f64);
            let mut ends: Vec<(f64, f64)> = Vec::new();
            for (k, &c) in time_cols.iter().enumerate() {
                let pts: Vec<(f64, f64)> = points_of(&group, c)
                    .into_iter()
                    .filter(|&(x, t)| x > 0.0 && t > 0.0)
                    .collect();
                let name = &layout.columns[c].name;
                let fit = fits
                    .iter()
                    .find(|f| &f.column == name && f.group.iter().map(|g| &g.1).eq(key.iter()))
                    .and_then(|f| f.fit.as_ref());
                let label = match fit {
                    Some(f) => match f.slope_ci95 {
                        Some([lo, hi]) => {
                            format!("{name}: slope {:.3} [{lo:.3}, {hi:.3}]", f.slope)
                        }
                        None => format!("{name}: slope {:.3}", f.slope),
                    },
                    None => name.clone(),
                };
                for &(x, _) in &pts {
                    x_lo = x_lo.min(x);
                    x_hi = x_hi.max(x);
                }
                if let Some(&last) = pts.iter().max_by(|a, b| a.0.total_cmp(&b.0)) {
                    ends.push((last.1, fit.map_or(0.0, |f| f.slope)));
                }
                p.series.push(Series::markers(
                    label,
                    pts.clone(),
                    color(k),
                    markers[k % markers.len()],
                ));
                if let Some(f) = fit {
                    // The fit's residuals, in the order of its points (those with x ≥ fit_min).
                    let used = pts
                        .iter()
                        .filter(|(x, _)| spec.fit_min_n.is_none_or(|m| *x >= m));
                    let r: Vec<(f64, f64)> =
                        used.zip(&f.residuals).map(|(&(x, _), &r)| (x, r)).collect();
                    resid.series.push(
                        Series::markers(name.clone(), r, color(k), markers[k % markers.len()])
                            .unlabelled(),
                    );
                    let lo = spec.fit_min_n.map_or(x_lo, |m| m.max(x_lo));
                    let line: Vec<(f64, f64)> = (0..=40)
                        .map(|i| {
                            let x = (lo.ln() + (x_hi.ln() - lo.ln()) * i as f64 / 40.0).exp();
                            (x, (f.intercept + f.slope * x.ln()).exp())
                        })
                        .collect();
                    p.series.push(Series::line("", line, color(k)).unlabelled());
                }
            }
            if x_hi > x_lo {
                // Guide segments over the upper half of the x range, ending at x_max just below
                // the lowest steep series (x²) and just above the lowest series (x).
                let mid = (x_lo * x_hi).sqrt();
                let lowest = |pred: &dyn Fn(f64) -> bool| {
                    ends.iter()
                        .filter(|(_, s)| pred(*s))
                        .map(|(t, _)| *t)
                        .fold(f64::INFINITY, f64::min)
                };
                let guides = [
                    (
                        2.0,
                        format!("guide ∝ {x_name}²"),
                        RGBColor(80, 80, 80),
                        lowest(&|s| s > 1.5) / 4.0,
                    ),
                    (
                        1.0,
                        format!("guide ∝ {x_name}"),
                        RGBColor(160, 160, 160),
                        lowest(&|_| true) * 4.0,
                    ),
                ];
                for (power, name, col, t_end) in guides {
                    if t_end.is_finite() && t_end > 0.0 {
                        let t_start = t_end * (mid / x_hi).powf(power);
                        p.series.push(Series::dashed(
                            name,
                            vec![(mid, t_start), (x_hi, t_end)],
                            col,
                        ));
                    }
                }
            }
            if let Some(m) = spec.fit_min_n {
                p.notes.push(format!("fits over {x_name} ≥ {m}"));
            }
            if x_hi > x_lo && !resid.series.is_empty() {
                resid.series.push(
                    Series::dashed("0", vec![(x_lo, 0.0), (x_hi, 0.0)], RGBColor(120, 120, 120))
                        .unlabelled(),
                );
                residual_panels.push(resid);
            }
            panels.push(p);
        }
    }
    let main_count = panels.len().max(1);
    panels.extend(residual_panels);
    for &c in &value_cols {
        let name = layout.columns[c].name.clone();
        let all: Vec<f64> = rows.iter().filter_map(|r| num(&r[c])).collect();
        let positive = all.iter().all(|v| *v > 0.0);
        let (lo, hi) = all
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(a, b), v| (a.min(*v), b.max(*v)));
        let y = if positive && hi / lo > 100.0 {
            Axis::log(format!("{name} (log scale)"))
        } else {
            Axis::linear(name.clone())
        };
        let mut p = Panel::new(name.clone(), x_axis(), y);
        for (k, key) in keys.iter().enumerate() {
            let label = if key.is_empty() {
                name.clone()
            } else {
                label_of(key)
            };
            let pts = points_of(&in_group(key), c);
            p.series
                .push(Series::line(label.clone(), pts.clone(), color(k)).unlabelled());
            p.series.push(Series::markers(
                label,
                pts,
                color(k),
                markers[k % markers.len()],
            ));
        }
        panels.push(p);
    }
    if panels.is_empty() {
        panels.push(Panel::new("no numeric results", x_axis(), Axis::linear("")));
    }
    // Main panels on the first row(s), their residuals below, value panels after.
    let cols = main_count
        .clamp(1, 3)
        .min(panels.len())
        .max(if panels.len() > 1 { 2 } else { 1 });
    let rows_n = panels.len().div_ceil(cols);
    let swept: Vec<&str> = spec.fields.iter().map(|f| f.column()).collect();
    let title = if swept.len() == 1 {
        format!("Sweep over {x_name} — {family}")
    } else {
        format!("Sweep over {} — {family}", swept.join(" × "))
    };
    Figure::grid(rows_n, cols, panels).titled(title)
}
