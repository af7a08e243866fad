//! The results of a finished sweep: `sweep.csv`, the power-law fits of `fit.json`, and the
//! terminal summary.

use super::*;

pub struct Results {
    pub files: Vec<std::path::PathBuf>,
    pub console: Vec<String>,
}

/// One power-law fit: a Time column against x, within one group.
#[derive(Debug, Clone)]
pub struct FitEntry {
    pub column: String,
    pub group: Vec<(String, String)>,
    pub fit: Option<PowerLawFit>,
}

pub(super) fn num(s: &str) -> Option<f64> {
    if s.is_empty() { None } else { s.parse().ok() }
}

/// Distinct group labels in row order of first appearance.
pub(super) fn group_keys(layout: &Layout, rows: &[Vec<String>]) -> Vec<Vec<String>> {
    let mut keys: Vec<Vec<String>> = Vec::new();
    for r in rows {
        let k: Vec<String> = layout.groups.iter().map(|&g| r[g].clone()).collect();
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.sort_by(|a, b| {
        a.iter()
            .zip(b)
            .map(|(x, y)| match (num(x), num(y)) {
                (Some(p), Some(q)) => p.total_cmp(&q),
                _ => x.cmp(y),
            })
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    keys
}

/// Fit every Time column against x in every group, over rows with x ≥ fit_min_n.
/// The local exponent between two points of a power law T ∝ x^p: d ln T / d ln x estimated
/// by the secant, ln(t1/t0) / ln(x1/x0). `None` unless all four values are positive and finite
/// and x1 ≠ x0.
pub fn local_slope(x0: f64, t0: f64, x1: f64, t1: f64) -> Option<f64> {
    let ok = |v: f64| v > 0.0 && v.is_finite();
    (ok(x0) && ok(t0) && ok(x1) && ok(t1) && x1 != x0).then(|| (t1 / t0).ln() / (x1 / x0).ln())
}

/// `slopes.csv`: per group (the other swept fields and the threshold), the local exponent of
/// every time column between consecutive x values, `slope_<column>` (empty where either time
/// is missing). Rows sorted by group, then x.
pub(super) fn local_slopes(
    layout: &Layout,
    rows: &[Vec<String>],
) -> (Vec<String>, Vec<Vec<String>>) {
    let x_name = &layout.columns[layout.x].name;
    let times: Vec<usize> = (0..layout.columns.len())
        .filter(|&c| layout.columns[c].role == Role::Time)
        .collect();
    let mut header: Vec<String> = layout
        .groups
        .iter()
        .map(|&g| layout.columns[g].name.clone())
        .collect();
    header.push(format!("{x_name}_lo"));
    header.push(format!("{x_name}_hi"));
    header.extend(
        times
            .iter()
            .map(|&c| format!("slope_{}", layout.columns[c].name)),
    );
    let mut out = Vec::new();
    for key in group_keys(layout, rows) {
        let mut group: Vec<&Vec<String>> = rows
            .iter()
            .filter(|r| layout.groups.iter().zip(&key).all(|(&g, k)| &r[g] == k))
            .filter(|r| num(&r[layout.x]).is_some())
            .collect();
        group.sort_by(|a, b| {
            num(&a[layout.x])
                .unwrap_or(f64::NAN)
                .total_cmp(&num(&b[layout.x]).unwrap_or(f64::NAN))
        });
        for pair in group.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let (x0, x1) = (num(&a[layout.x]).unwrap(), num(&b[layout.x]).unwrap());
            if x0 == x1 {
                continue;
            }
            let mut row = key.clone();
            row.push(a[layout.x].clone());
            row.push(b[layout.x].clone());
            for &c in &times {
                row.push(match (num(&a[c]), num(&b[c])) {
                    (Some(t0), Some(t1)) => {
                        local_slope(x0, t0, x1, t1).map_or(String::new(), fmt_f64)
                    }
                    _ => String::new(),
                });
            }
            out.push(row);
        }
    }
    (header, out)
}

pub fn fit_all(layout: &Layout, rows: &[Vec<String>], fit_min: Option<f64>) -> Vec<FitEntry> {
    let mut fits = Vec::new();
    for key in group_keys(layout, rows) {
        let in_group: Vec<&Vec<String>> = rows
            .iter()
            .filter(|r| layout.groups.iter().zip(&key).all(|(&g, k)| &r[g] == k))
            .collect();
        for (c, col) in layout.columns.iter().enumerate() {
            if col.role != Role::Time {
                continue;
            }
            let pts: Vec<(f64, f64)> = in_group
                .iter()
                .filter_map(|r| Some((num(&r[layout.x])?, num(&r[c])?)))
                .filter(|&(x, t)| x > 0.0 && t > 0.0 && fit_min.is_none_or(|m| x >= m))
                .collect();
            fits.push(FitEntry {
                column: col.name.clone(),
                group: layout
                    .groups
                    .iter()
                    .zip(&key)
                    .map(|(&g, k)| (layout.columns[g].name.clone(), k.clone()))
                    .collect(),
                fit: fit_power_law(&pts),
            });
        }
    }
    fits
}

pub(super) fn fits_json(layout: &Layout, spec: &Sweep, fits: &[FitEntry]) -> Value {
    let entries: Vec<Value> = fits
        .iter()
        .map(|f| {
            let mut m = Map::new();
            m.insert("column".into(), json!(f.column));
            m.insert("x".into(), json!(layout.columns[layout.x].name));
            for (name, value) in &f.group {
                m.insert(name.clone(), num(value).map_or(json!(value), |v| json!(v)));
            }
            m.insert("fit".into(), json!(f.fit));
            Value::Object(m)
        })
        .collect();
    json!({
        "model": "ln T = intercept + slope * ln x (least squares, natural logs)",
        "x": layout.columns[layout.x].name,
        "fit_min_n": spec.fit_min_n,
        "fits": entries,
    })
}

/// Write the points log (in point order), `sweep.csv`, `fit.json` and the figure.
pub fn write_results(
    scenario: &Scenario,
    spec: &Sweep,
    layout: &Layout,
    done: &Done,
    out: &OutputDir,
) -> Result<Results, Error> {
    let header = layout.header();
    let rows: Vec<Vec<String>> = done.values().flatten().cloned().collect();
    let mut files = vec![out.write_bytes(POINTS_LOG, &log_bytes(&header, done))?];
    let bytes = csv_bytes(&header, &rows).expect("writing to memory");
    files.push(out.write_bytes(SWEEP_CSV, &bytes)?);
    let fits = fit_all(layout, &rows, spec.fit_min_n);
    files.push(out.write_json("fit.json", &fits_json(layout, spec, &fits))?);
    let (slope_header, slope_rows) = local_slopes(layout, &rows);
    let bytes = csv_bytes(&slope_header, &slope_rows).expect("writing to memory");
    files.push(out.write_bytes(SLOPES_CSV, &bytes)?);
    // The family label names the fixed settings; with several swept fields only the kind is
    // certain to hold for every point.
    let family = if spec.fields.len() == 1 {
        scenario.system.instance().family
    } else {
        scenario.system.kind().to_string()
    };
    files.extend(out.write_figure("sweep", &sweep_figure(&family, layout, &rows, &fits, spec))?);
    Ok(Results {
        files,
        console: console_summary(layout, &rows, &fits, spec),
    })
}

/// The rows (at the largest threshold when there is one), then every fitted slope.
pub(super) fn console_summary(
    layout: &Layout,
    rows: &[Vec<String>],
    fits: &[FitEntry],
    spec: &Sweep,
) -> Vec<String> {
    let th_col = layout.columns.iter().position(|c| c.name == "threshold");
    let largest = th_col.and_then(|c| {
        rows.iter()
            .filter_map(|r| num(&r[c]))
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
    });
    let shown: Vec<&Vec<String>> = rows
        .iter()
        .filter(|r| match (th_col, largest) {
            (Some(c), Some(t)) => num(&r[c]) == Some(t),
            _ => true,
        })
        .collect();
    let mut lines = vec![match largest {
        Some(t) => format!(
            "sweep: results at threshold {t} (times in the system's own units; empty = not reached)"
        ),
        None => "sweep: results (empty = not reached)".to_string(),
    }];
    let keep: Vec<usize> = (0..layout.columns.len())
        .filter(|&c| Some(c) != th_col)
        .collect();
    let mut head = String::new();
    for &c in &keep {
        head.push_str(&format!(" {:>18}", layout.columns[c].name));
    }
    lines.push(head);
    for r in shown.iter().take(60) {
        let mut line = String::new();
        for &c in &keep {
            let cell = match (&layout.columns[c].role, num(&r[c])) {
                (Role::Time | Role::Value, Some(v)) => format!("{v:.6e}"),
                _ => r[c].clone(),
            };
            line.push_str(&format!(" {cell:>18}"));
        }
        lines.push(line);
    }
    if shown.len() > 60 {
        lines.push(format!("  ... {} more rows in sweep.csv", shown.len() - 60));
    }
    let x = &layout.columns[layout.x].name;
    lines.push(match spec.fit_min_n {
        Some(m) => format!("power-law fits T ∝ {x}^slope over {x} >= {m} (slope [95% CI]):"),
        None => format!("power-law fits T ∝ {x}^slope (slope [95% CI]):"),
    });
    for f in fits {
        let text = match &f.fit {
            Some(fit) => match fit.slope_ci95 {
                Some([lo, hi]) => format!(
                    "{:.4} [{lo:.4}, {hi:.4}] from {} points",
                    fit.slope, fit.n_points
                ),
                None => format!("{:.4} (no interval: {} points)", fit.slope, fit.n_points),
            },
            None => "not enough points".into(),
        };
        let group: Vec<String> = f.group.iter().map(|(k, v)| format!("{k} {v}")).collect();
        lines.push(format!(
            "  {:<18} {:<16} slope {text}",
            f.column,
            group.join(", ")
        ));
    }
    lines
}

#[cfg(test)]
mod slope_tests {
    use super::local_slope;

    #[test]
    fn local_slopes_recover_known_exponents() {
        // a pure power law: the secant is the exponent at every pair
        for p in [0.5, 1.0, 2.0, 2.7] {
            for (x0, x1) in [(4.0, 8.0), (100.0, 3000.0)] {
                let t = |x: f64| 3.5 * f64::powf(x, p);
                let s = local_slope(x0, t(x0), x1, t(x1)).unwrap();
                assert!((s - p).abs() < 1e-12, "p = {p}: {s}");
            }
        }
        // T = N^2 / ln N: the secant is 2 - ln(ln x1 / ln x0) / ln(x1 / x0), which tends to
        // 2 - 1/ln x as the points close in
        let t = |x: f64| x * x / x.ln();
        let (x0, x1) = (1024.0, 2048.0);
        let want = 2.0 - (f64::ln(x1).ln() - f64::ln(x0).ln()) / (x1 / x0).ln();
        assert!((local_slope(x0, t(x0), x1, t(x1)).unwrap() - want).abs() < 1e-12);
        let x = 1e6;
        let near = local_slope(x, t(x), x * 1.0001, t(x * 1.0001)).unwrap();
        assert!((near - (2.0 - 1.0 / x.ln())).abs() < 1e-5, "{near}");
        // refused: non-positive or equal abscissae
        assert!(local_slope(4.0, 0.0, 8.0, 1.0).is_none());
        assert!(local_slope(4.0, 1.0, 4.0, 2.0).is_none());
    }
}
