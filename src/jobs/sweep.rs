//! Job `sweep`: evaluate every point of a sweep (in parallel), then write `sweep.csv`, the
//! power-law fits `fit.json` and `sweep.png`/`.svg`.
//!
//! Determinism: each point is an independent, deterministic evaluation; rows are assembled in
//! point order, so `sweep.csv` is byte-identical for any thread count, after a resume, and after
//! merging shards.
//!
//! Resumability: every finished point is appended at once (one write per point) to
//! `sweep.points.csv`, whose first column is the point index. `--resume` reads it back (a torn
//! last line from a killed run is ignored) and runs only the missing points. When every point
//! is done the log is rewritten in point order and the results are written.
//!
//! Sharding: `--shard i/n` runs the points whose index is ≡ i − 1 (mod n); `merge` joins shard
//! folders into exactly what the unsharded run writes.

use crate::Error;
use crate::jobs::JobOutput;
use crate::jobs::plan::{Scenario, Sweep};
use crate::numerics::stats::{PowerLawFit, fit_power_law};
use crate::report::figure::{Axis, Figure, LegendAt, Marker, Panel, Series, color};
use crate::report::progress::Progress;
use crate::report::{Cell, OutputDir, csv_bytes, csv_lines, fmt_f64};
use crate::scenario::SweepValue;
use crate::systems::plugin::{Column, Role};
use plotters::style::RGBColor;
use rayon::prelude::*;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// File names of the sweep outputs.
pub const POINTS_LOG: &str = "sweep.points.csv";
pub const SWEEP_CSV: &str = "sweep.csv";

/// `--shard i/n`: run the points with index ≡ i − 1 (mod n).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Parse `i/n` with 1 ≤ i ≤ n.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad = || format!("expected i/n with integers 1 <= i <= n, got {text:?}");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
    pub fn contains(&self, point: usize) -> bool {
        point % self.count == self.index - 1
    }
    pub fn text(&self) -> String {
        format!("{}/{}", self.index, self.count)
    }
}

/// How a sweep runs: resume, shard, a cap on new points (to stop part-way), progress bar.
#[derive(Debug, Clone, Default)]
pub struct Control {
    pub resume: bool,
    pub shard: Option<Shard>,
    pub max_points: Option<usize>,
    pub progress: bool,
}

/// The columns of `sweep.csv`: swept fields the points do not report themselves, then the
/// points' own columns.
pub struct Layout {
    pub columns: Vec<Column>,
    /// Column of the swept field that is the x of the fits (`sweep.x`).
    pub x: usize,
    /// Columns that group the fits: the other swept fields and the keys.
    pub groups: Vec<usize>,
    /// Swept fields (indices into `spec.fields`) written by the sweep before the point columns.
    prepended: Vec<usize>,
}

impl Layout {
    pub fn new(spec: &Sweep) -> Layout {
        let point_cols = spec.points[0].scenario.system.sweep_columns();
        let claimed = |path: &str| {
            point_cols
                .iter()
                .any(|c| matches!(&c.role, Role::Param { field } if field == path))
        };
        let prepended: Vec<usize> = (0..spec.fields.len())
            .filter(|&i| !claimed(&spec.fields[i].path))
            .collect();
        let mut columns: Vec<Column> = prepended
            .iter()
            .map(|&i| {
                Column::new(
                    spec.fields[i].column(),
                    Role::Param {
                        field: spec.fields[i].path.clone(),
                    },
                )
            })
            .collect();
        columns.extend(point_cols);
        let field_col = |path: &str| {
            columns
                .iter()
                .position(|c| matches!(&c.role, Role::Param { field } if field == path))
                .expect("every swept field has a column")
        };
        let x = field_col(&spec.fields[spec.x].path);
        let mut groups: Vec<usize> = (0..spec.fields.len())
            .filter(|&i| i != spec.x)
            .map(|i| field_col(&spec.fields[i].path))
            .collect();
        groups.extend(
            columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.role == Role::Key)
                .map(|(i, _)| i),
        );
        Layout {
            columns,
            x,
            groups,
            prepended,
        }
    }

    pub fn header(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }

    fn prefix(&self, values: &[SweepValue]) -> Vec<String> {
        self.prepended
            .iter()
            .map(|&i| match values[i] {
                SweepValue::Int(v) => v.to_string(),
                SweepValue::Float(v) => fmt_f64(v),
            })
            .collect()
    }
}

/// Rows of finished points, as CSV text cells, by point index.
type Done = BTreeMap<usize, Vec<Vec<String>>>;

/// One point's outcome: None when `--max-points` left it for later, else its rows (as text)
/// and statistics, or its error.
type Outcome = Option<Result<(Vec<Vec<String>>, Value), Error>>;

/// Read `sweep.points.csv`; a last line without its newline (a killed write) is dropped.
pub fn read_points_log(out: &OutputDir, header: &[String]) -> Result<Done, Error> {
    let path = out.file(POINTS_LOG);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Done::new()),
        Err(e) => return Err(crate::report::ReportError::Io { path, source: e }.into()),
    };
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    let corrupt = |why: String| Error::Usage(format!("{}: {why}", path.display()));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(complete.as_bytes());
    let mut done = Done::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.map_err(|e| corrupt(e.to_string()))?;
        let cells: Vec<String> = rec.iter().map(str::to_string).collect();
        if i == 0 {
            let expected: Vec<&str> = std::iter::once("point")
                .chain(header.iter().map(String::as_str))
                .collect();
            if cells != expected {
                return Err(corrupt(format!(
                    "its header `{}` is not this sweep's `{}`",
                    cells.join(","),
                    expected.join(",")
                )));
            }
            continue;
        }
        if cells.len() != header.len() + 1 {
            return Err(corrupt(format!(
                "line {} has {} cells, expected {}",
                i + 1,
                cells.len(),
                header.len() + 1
            )));
        }
        let index: usize = cells[0]
            .parse()
            .map_err(|_| corrupt(format!("line {}: bad point index {:?}", i + 1, cells[0])))?;
        done.entry(index).or_default().push(cells[1..].to_vec());
    }
    Ok(done)
}

fn log_bytes(header: &[String], done: &Done) -> Vec<u8> {
    let mut h = vec!["point".to_string()];
    h.extend(header.iter().cloned());
    let rows: Vec<Vec<String>> = done
        .iter()
        .flat_map(|(i, rows)| {
            rows.iter().map(move |r| {
                let mut full = vec![i.to_string()];
                full.extend(r.iter().cloned());
                full
            })
        })
        .collect();
    csv_bytes(&h, &rows).expect("writing to memory")
}

/// Run (or resume) the sweep's points of this shard; write the results when all are done.
pub fn run(
    scenario: &Scenario,
    spec: &Sweep,
    out: &OutputDir,
    control: &Control,
) -> Result<JobOutput, Error> {
    let layout = Layout::new(spec);
    let header = layout.header();
    let selected: Vec<usize> = (0..spec.n_points)
        .filter(|&i| control.shard.is_none_or(|s| s.contains(i)))
        .collect();
    let mut done = if control.resume {
        read_points_log(out, &header)?
    } else {
        Done::new()
    };
    if let Some(stray) = done.keys().find(|i| !selected.contains(i)) {
        return Err(Error::Usage(format!(
            "--resume: {} holds point {stray}, which is not in this run's points",
            out.file(POINTS_LOG).display()
        )));
    }
    let resumed = done.len();
    // The log is (re)started with the rows already known, then appended to per point.
    out.write_bytes(POINTS_LOG, &log_bytes(&header, &done))?;
    let log_path = out.file(POINTS_LOG);
    let log = Mutex::new(
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log_path)
            .map_err(crate::report::io_err(&log_path))?,
    );
    let todo: Vec<usize> = selected
        .iter()
        .copied()
        .filter(|i| !done.contains_key(i))
        .collect();
    let bar = Progress::new(
        control.progress,
        "sweep",
        selected.len() as u64,
        "points",
        None,
    );
    bar.start_at(resumed as u64);
    let started_count = AtomicUsize::new(0);
    let started = std::time::Instant::now();
    let results: Vec<(usize, Outcome)> = todo
        .par_iter()
        .map(|&i| {
            if control
                .max_points
                .is_some_and(|m| started_count.fetch_add(1, Ordering::SeqCst) >= m)
            {
                return (i, None);
            }
            let point = &spec.points[i];
            let r = point
                .scenario
                .system
                .sweep_point(&point.scenario.solver, &spec.thresholds)
                .and_then(|p| {
                    let prefix = layout.prefix(&point.values);
                    let rows: Vec<Vec<String>> = p
                        .rows
                        .iter()
                        .map(|r| {
                            let mut row = prefix.clone();
                            row.extend(r.iter().map(Cell::to_text));
                            row
                        })
                        .collect();
                    let indexed: Vec<Vec<String>> = rows
                        .iter()
                        .map(|r| {
                            std::iter::once(i.to_string())
                                .chain(r.iter().cloned())
                                .collect()
                        })
                        .collect();
                    let bytes = csv_lines(&indexed).expect("writing to memory");
                    let mut f = log.lock().expect("no panics while holding the log");
                    f.write_all(&bytes).and_then(|()| f.flush()).map_err(|e| {
                        Error::from(crate::report::ReportError::Io {
                            path: log_path.clone(),
                            source: e,
                        })
                    })?;
                    Ok((rows, p.stats))
                });
            bar.inc(1);
            (i, Some(r))
        })
        .collect();
    drop(bar);
    let seconds = started.elapsed().as_secs_f64();
    let mut per_point = Vec::new();
    let mut first_error = None;
    for (i, r) in results {
        match r {
            None => {}
            Some(Ok((rows, stats))) => {
                done.insert(i, rows);
                per_point.push(json!({"point": i, "stats": stats}));
            }
            Some(Err(e)) if first_error.is_none() => {
                first_error = Some(point_error(spec, i, e));
            }
            Some(Err(_)) => {}
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let evaluated = per_point.len();
    let remaining = selected.len() - done.len();
    let mut entry = json!({
        "job": "sweep",
        "points_total": spec.n_points,
        "points_in_this_run": selected.len(),
        "points_resumed": resumed,
        "points_evaluated": evaluated,
        "points_remaining": remaining,
        "shard": control.shard.map(|s| s.text()),
        "columns": layout.columns,
        "sweep_seconds": seconds,
        "per_point": per_point,
    });
    if remaining > 0 {
        let console = vec![format!(
            "sweep: stopped with {remaining} of {} points to go (--max-points); rerun with --resume to finish",
            selected.len()
        )];
        return Ok(JobOutput {
            manifest: entry,
            files: vec![log_path],
            console,
            partial: true,
        });
    }
    let results = write_results(scenario, spec, &layout, &done, out)?;
    entry["fits_written"] = json!(true);
    Ok(JobOutput {
        manifest: entry,
        files: results.files,
        console: results.console,
        partial: false,
    })
}

fn point_error(spec: &Sweep, i: usize, e: Error) -> Error {
    let at = spec
        .fields
        .iter()
        .zip(&spec.points[i].values)
        .map(|(f, v)| format!("{} = {}", f.column(), v.as_f64()))
        .collect::<Vec<_>>()
        .join(", ");
    match e {
        Error::Flow(f) => Error::SweepPoint {
            point: format!("{i} ({at})"),
            source: Box::new(f),
        },
        other => other,
    }
}

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

fn num(s: &str) -> Option<f64> {
    if s.is_empty() { None } else { s.parse().ok() }
}

/// Distinct group labels in row order of first appearance.
fn group_keys(layout: &Layout, rows: &[Vec<String>]) -> Vec<Vec<String>> {
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

fn fits_json(layout: &Layout, spec: &Sweep, fits: &[FitEntry]) -> Value {
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
fn console_summary(
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

/// Log-log times against x per group with the fitted lines (slope and interval in the legend)
/// and x² / x guide segments; value columns in panels of their own.
fn sweep_figure(
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

/// Join shard folders into the outputs of the unsharded run.
pub fn merge(
    dirs: &[std::path::PathBuf],
    out: &OutputDir,
) -> Result<(Scenario, Vec<String>, Value), Error> {
    let usage = |m: String| Error::Usage(m);
    let mut first: Option<(Value, String, String)> = None;
    let mut shards = Vec::new();
    for d in dirs {
        let path = d.join("manifest.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| usage(format!("merge: cannot read `{}`: {e}", path.display())))?;
        let m: Value = serde_json::from_str(&text).map_err(|e| {
            usage(format!(
                "merge: `{}` is not a manifest: {e}",
                path.display()
            ))
        })?;
        let scenario = m["scenario"].clone();
        let source = m["scenario_source"]
            .as_str()
            .unwrap_or("merged")
            .to_string();
        let stext = m["scenario_text"].as_str().unwrap_or_default().to_string();
        match &first {
            None => first = Some((scenario, source, stext)),
            Some((s, _, _)) if *s != scenario => {
                return Err(usage(format!(
                    "merge: `{}` belongs to another scenario than `{}`",
                    d.display(),
                    dirs[0].display()
                )));
            }
            _ => {}
        }
        shards.push(m["sweep_shard"].as_str().map(str::to_string));
    }
    let (scenario_json, source, stext) =
        first.ok_or_else(|| usage("merge: no folders given".into()))?;
    let name = scenario_json["name"].as_str().unwrap_or("merged");
    let scenario = crate::jobs::plan::parse_str(&stext, &source, name)?;
    let spec = scenario
        .sweep
        .clone()
        .ok_or_else(|| usage("merge: the scenario has no [sweep]".into()))?;
    let layout = Layout::new(&spec);
    let header = layout.header();
    let mut done = Done::new();
    for d in dirs {
        let part = read_points_log(&OutputDir::new(d), &header)?;
        for (i, rows) in part {
            if let Some(prev) = done.get(&i) {
                if *prev != rows {
                    return Err(usage(format!("merge: point {i} differs between shards")));
                }
                continue;
            }
            done.insert(i, rows);
        }
    }
    let missing: Vec<usize> = (0..spec.n_points)
        .filter(|i| !done.contains_key(i))
        .collect();
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().take(10).map(|i| i.to_string()).collect();
        return Err(usage(format!(
            "merge: {} of {} points are missing (first: {}); finish the shards (with --resume) first",
            missing.len(),
            spec.n_points,
            list.join(", ")
        )));
    }
    let results = write_results(&scenario, &spec, &layout, &done, out)?;
    let entry = json!({
        "job": "sweep",
        "merged_from": dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>(),
        "shards": shards,
        "points_total": spec.n_points,
        "columns": layout.columns,
    });
    Ok((scenario, results.console, entry))
}
