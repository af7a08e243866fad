//! Job `sweep`: emergence times against N, in parallel over N (rayon), then the power-law fits
//! → `sweep.csv`, `fit.json`, `sweep.png`/`.svg`.
//!
//! Each N is an independent, deterministic solve, and rows are assembled in N order, so the
//! CSV is byte-identical for any thread count.

use super::system::{Instance, instantiate};
use super::{JobOutput, build_problem, loss_event_name, standard_events, threshold_event_name};
use crate::Error;
use crate::flow::SolverStats;
use crate::report::figure::{Axis, Figure, LegendAt, Marker, Panel, Series, color};
use crate::report::{Cell, OutputDir, Table, fmt_f64};
use crate::scenario::{Scenario, SweepSpec};
use crate::stats::{PowerLawFit, fit_power_law};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use plotters::style::RGBColor;
use rayon::prelude::*;
use serde::Serialize;
use serde_json::json;

/// Emergence times of one N at one threshold, in the order of `columns`.
#[derive(Debug, Clone)]
pub struct SweepRow {
    pub n: usize,
    pub threshold: f64,
    pub times: Vec<Option<f64>>,
}

/// One power-law fit of a column at a threshold (`fit` is None with fewer than 2 points).
#[derive(Debug, Clone, Serialize)]
pub struct FitEntry {
    pub column: String,
    pub threshold: f64,
    pub fit: Option<PowerLawFit>,
}

/// What one N's solve produced.
struct PointResult {
    rows: Vec<SweepRow>,
    stats: SolverStats,
    t_end: f64,
}

/// Column names after `N,threshold`: T_<coord> per emergence coordinate, T_loss_half, and the
/// rate-peak column.
pub fn columns(inst: &Instance) -> Vec<String> {
    let mut cols: Vec<String> = inst
        .emergence
        .iter()
        .map(|(_, n)| format!("T_{n}"))
        .collect();
    cols.push(loss_event_name(0.5));
    if let Some((_, name)) = &inst.peak {
        cols.push(name.clone());
    }
    cols
}

fn solve_point(scenario: &Scenario, spec: &SweepSpec, n: usize) -> Result<PointResult, Error> {
    let inst = instantiate(&scenario.system, Some(n));
    let events = standard_events(&inst, &spec.thresholds, 0.5);
    let problem = build_problem(&inst, &scenario.solver, events, Some((0.0, 5000)))?;
    let sol = problem.solve()?;
    let rows = spec
        .thresholds
        .iter()
        .map(|&th| {
            let mut times: Vec<Option<f64>> = inst
                .emergence
                .iter()
                .map(|(_, name)| sol.event_time(&threshold_event_name(name, th)))
                .collect();
            times.push(sol.event_time(&loss_event_name(0.5)));
            if let Some((_, name)) = &inst.peak {
                times.push(sol.event_time(name));
            }
            SweepRow {
                n,
                threshold: th,
                times,
            }
        })
        .collect();
    Ok(PointResult {
        rows,
        stats: sol.stats,
        t_end: sol.t_end(),
    })
}

/// Fit every column at every threshold over rows with N ≥ fit_min_n and a time present.
pub fn fit_all(
    columns: &[String],
    rows: &[SweepRow],
    thresholds: &[f64],
    fit_min_n: usize,
) -> Vec<FitEntry> {
    let mut fits = Vec::new();
    for &th in thresholds {
        for (c, name) in columns.iter().enumerate() {
            let pts: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.threshold == th && r.n >= fit_min_n)
                .filter_map(|r| r.times[c].filter(|t| *t > 0.0).map(|t| (r.n as f64, t)))
                .collect();
            fits.push(FitEntry {
                column: name.clone(),
                threshold: th,
                fit: fit_power_law(&pts),
            });
        }
    }
    fits
}

/// The computed sweep: rows in (N, threshold) order and solver statistics.
pub struct SweepResult {
    pub columns: Vec<String>,
    pub rows: Vec<SweepRow>,
    pub total: SolverStats,
    pub per_point: Vec<serde_json::Value>,
    pub seconds: f64,
}

/// Solve every N (in parallel) and assemble the rows in N order.
pub fn compute(
    scenario: &Scenario,
    spec: &SweepSpec,
    progress: bool,
) -> Result<SweepResult, Error> {
    let columns = columns(&instantiate(&scenario.system, Some(spec.n[0])));
    let bar = if progress {
        ProgressBar::with_draw_target(Some(spec.n.len() as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "sweep {bar:30} {pos}/{len} N  [{elapsed} elapsed, ETA {eta}]",
        )
        .expect("valid template"),
    );
    let started = std::time::Instant::now();
    let results: Vec<Result<PointResult, Error>> = spec
        .n
        .par_iter()
        .map(|&n| {
            let r = solve_point(scenario, spec, n);
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let mut rows = Vec::new();
    let mut per_point = Vec::new();
    let mut total = SolverStats::default();
    for (r, &n) in results.into_iter().zip(&spec.n) {
        let p = r.map_err(|e| point_error(n, e))?;
        total.steps += p.stats.steps;
        total.rejected_steps += p.stats.rejected_steps;
        total.rhs_evals += p.stats.rhs_evals;
        total.grad_calls += p.stats.grad_calls;
        per_point.push(json!({"N": n, "t_end": p.t_end, "solver_stats": p.stats}));
        rows.extend(p.rows);
    }
    Ok(SweepResult {
        columns,
        rows,
        total,
        per_point,
        seconds,
    })
}

pub fn run(
    scenario: &Scenario,
    spec: &SweepSpec,
    out: &OutputDir,
    progress: bool,
) -> Result<JobOutput, Error> {
    let SweepResult {
        columns,
        rows,
        total,
        per_point,
        seconds,
    } = compute(scenario, spec, progress)?;
    let mut header = vec!["N".to_string(), "threshold".to_string()];
    header.extend(columns.iter().cloned());
    let mut table = Table::new(header);
    for r in &rows {
        let mut row: Vec<Cell> = vec![r.n.into(), r.threshold.into()];
        row.extend(r.times.iter().map(|&t| Cell::from(t)));
        table.push(row);
    }
    let fits = fit_all(&columns, &rows, &spec.thresholds, spec.fit_min_n);
    let mut files = vec![out.write_csv("sweep.csv", &table)?];
    files.push(out.write_json(
        "fit.json",
        &json!({
            "model": "ln T = intercept + slope * ln N (least squares, natural logs)",
            "fit_min_n": spec.fit_min_n,
            "fits": fits,
        }),
    )?);
    let system_label = instantiate(&scenario.system, Some(spec.n[0])).family;
    files.extend(out.write_figure(
        "sweep",
        &sweep_figure(&system_label, &columns, &rows, &fits, spec),
    )?);
    Ok(JobOutput {
        manifest: json!({
            "job": "sweep",
            "points": spec.n.len(),
            "thresholds": spec.thresholds,
            "sweep_seconds": seconds,
            "solver_stats_total": total,
            "per_point": per_point,
        }),
        files,
        console: console_summary(&columns, &rows, &fits, spec),
    })
}

fn point_error(n: usize, e: Error) -> Error {
    match e {
        Error::Flow(f) => Error::SweepPoint {
            n,
            source: Box::new(f),
        },
        other => other,
    }
}

/// The T table at the largest threshold, and every fitted slope.
fn console_summary(
    columns: &[String],
    rows: &[SweepRow],
    fits: &[FitEntry],
    spec: &SweepSpec,
) -> Vec<String> {
    let th = *spec
        .thresholds
        .last()
        .expect("validated: at least one threshold");
    let mut lines = vec![format!(
        "sweep: emergence times at threshold {th} (pseudo-time; empty = not reached)"
    )];
    let mut head = format!("{:>7}", "N");
    for c in columns {
        head.push_str(&format!(" {c:>18}"));
    }
    lines.push(head);
    for r in rows.iter().filter(|r| r.threshold == th) {
        let mut line = format!("{:>7}", r.n);
        for t in &r.times {
            line.push_str(&format!(
                " {:>18}",
                t.map_or(String::new(), |v| format!("{v:.6e}"))
            ));
        }
        lines.push(line);
    }
    lines.push(format!(
        "power-law fits, N >= {} (slope [95% CI]):",
        spec.fit_min_n
    ));
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
        lines.push(format!(
            "  {:<18} threshold {:<6} slope {text}",
            f.column,
            fmt_f64(f.threshold)
        ));
    }
    lines
}

/// Log-log emergence times against N, one panel per threshold, with the fitted lines and N²
/// (and N) guides.
fn sweep_figure(
    system: &str,
    columns: &[String],
    rows: &[SweepRow],
    fits: &[FitEntry],
    spec: &SweepSpec,
) -> Figure {
    let markers = [
        Marker::Circle,
        Marker::Triangle,
        Marker::Square,
        Marker::Cross,
        Marker::Circle,
    ];
    let mut panels = Vec::new();
    for &th in &spec.thresholds {
        let mut p = Panel::new(
            format!("threshold {th}"),
            Axis::log("N (item–label pairs)"),
            Axis::log("emergence time T (pseudo-time)"),
        );
        p.legend = LegendAt::UpperLeft;
        for (c, name) in columns.iter().enumerate() {
            let pts: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.threshold == th)
                .filter_map(|r| r.times[c].filter(|t| *t > 0.0).map(|t| (r.n as f64, t)))
                .collect();
            let entry = fits.iter().find(|f| f.column == *name && f.threshold == th);
            let fit = entry.and_then(|e| e.fit.as_ref());
            let label = match fit {
                Some(f) => match f.slope_ci95 {
                    Some([lo, hi]) => format!("{name}: slope {:.3} [{lo:.3}, {hi:.3}]", f.slope),
                    None => format!("{name}: slope {:.3}", f.slope),
                },
                None => name.clone(),
            };
            p.series.push(Series::markers(
                label,
                pts,
                color(c),
                markers[c % markers.len()],
            ));
            if let Some(f) = fit {
                let lo = (spec.fit_min_n.max(spec.n[0])) as f64;
                let hi = *spec.n.last().unwrap() as f64;
                let line: Vec<(f64, f64)> = (0..=40)
                    .map(|i| {
                        let n = (lo.ln() + (hi.ln() - lo.ln()) * i as f64 / 40.0).exp();
                        (n, (f.intercept + f.slope * n.ln()).exp())
                    })
                    .collect();
                p.series.push(Series::line("", line, color(c)).unlabelled());
            }
        }
        // Slope guides over the upper half of the N range (log scale), ending at N_max just
        // below the lowest quadratic series (N²) and just above the lowest series (N).
        let n_max = *spec.n.last().expect("validated: N non-empty") as f64;
        let n_mid = (spec.n[0] as f64 * n_max).sqrt();
        let at_max: Vec<(f64, Option<f64>)> = columns
            .iter()
            .enumerate()
            .map(|(c, name)| {
                let t = rows
                    .iter()
                    .filter(|r| r.threshold == th && r.n as f64 == n_max)
                    .find_map(|r| r.times[c]);
                let slope = fits
                    .iter()
                    .find(|f| f.column == *name && f.threshold == th)
                    .and_then(|f| f.fit.as_ref())
                    .map_or(0.0, |f| f.slope);
                (slope, t)
            })
            .collect();
        let lowest = |pred: &dyn Fn(f64) -> bool| {
            at_max
                .iter()
                .filter(|(s, _)| pred(*s))
                .filter_map(|(_, t)| *t)
                .fold(f64::INFINITY, f64::min)
        };
        let guides = [
            (
                2.0,
                "guide ∝ N²",
                RGBColor(80, 80, 80),
                lowest(&|s| s > 1.5) / 4.0,
            ),
            (
                1.0,
                "guide ∝ N",
                RGBColor(160, 160, 160),
                lowest(&|_| true) * 4.0,
            ),
        ];
        for (power, name, col, t_end) in guides {
            if t_end.is_finite() && t_end > 0.0 {
                let t_start = t_end * (n_mid / n_max).powf(power);
                p.series.push(Series::dashed(
                    name,
                    vec![(n_mid, t_start), (n_max, t_end)],
                    col,
                ));
            }
        }
        p.notes.push(format!("fits over N ≥ {}", spec.fit_min_n));
        panels.push(p);
    }
    let cols = panels.len().min(2);
    let rows_n = panels.len().div_ceil(cols);
    Figure::grid(rows_n, cols, panels).titled(format!("Emergence time vs N — {system}"))
}
