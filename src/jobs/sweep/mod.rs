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

mod figure;
mod log;
pub mod merge;
mod results;

pub use log::{Logged, PointState, read_points_log, verify_point};
pub use results::{FitEntry, Results, fit_all, write_results};
#[allow(unused_imports)]
use {figure::*, log::*, results::*};

/// File names of the sweep outputs.
pub const POINTS_LOG: &str = "sweep.points.csv";
pub const SWEEP_CSV: &str = "sweep.csv";
pub const SLOPES_CSV: &str = "slopes.csv";

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
pub(super) type Done = BTreeMap<usize, Vec<Vec<String>>>;

/// One point's outcome: None when `--max-points` left it for later, else its rows (as text)
/// and statistics, or its error.
pub(super) type Outcome = Option<Result<(Vec<Vec<String>>, Value), Error>>;

/// The points a `--resume` keeps, read and verified before anything is written: every point of
/// the log that is complete and well-formed ([`PointState::Done`]). Incomplete points are
/// evaluated again; a log that contradicts itself, holds points of another shard or is not a
/// log of this sweep is refused (exit 2) and nothing is touched.
pub fn resume_points(spec: &Sweep, out: &OutputDir, control: &Control) -> Result<Resumed, Error> {
    let layout = Layout::new(spec);
    let path = out.file(POINTS_LOG);
    let logged = read_points_log(&path, &layout, spec)?;
    let mut resumed = Resumed::default();
    for (i, state) in logged {
        if control.shard.is_some_and(|s| !s.contains(i)) {
            return Err(Error::Usage(format!(
                "--resume: `{}` holds point {i}, which is not in this run's points",
                path.display()
            )));
        }
        match state {
            PointState::Done(rows) => {
                resumed.done.insert(i, rows);
            }
            PointState::Incomplete(why) => resumed.redo.push((i, why)),
            PointState::Conflict(why) => {
                return Err(Error::Usage(format!(
                    "--resume: `{}`: {why}; the log contradicts itself, so the point cannot be \
                     trusted: remove its rows (or the folder) and resume",
                    path.display()
                )));
            }
        }
    }
    Ok(resumed)
}

/// What `--resume` found in the points log.
#[derive(Debug, Default)]
pub struct Resumed {
    /// The complete points, with their rows.
    pub done: Done,
    /// Points whose rows were incomplete or malformed (evaluated again), and why.
    pub redo: Vec<(usize, String)>,
}

/// Run (or resume, from the verified `resumed` points) the sweep's points of this shard; write
/// the results when all are done.
pub fn run(
    scenario: &Scenario,
    spec: &Sweep,
    out: &OutputDir,
    control: &Control,
    resumed: Resumed,
) -> Result<JobOutput, Error> {
    let layout = Layout::new(spec);
    let header = layout.header();
    let selected: Vec<usize> = (0..spec.n_points)
        .filter(|&i| control.shard.is_none_or(|s| s.contains(i)))
        .collect();
    let redo = resumed.redo;
    let mut done = resumed.done;
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
            if crate::interrupt::requested()
                || control
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
                    // a point that ran while an interrupt came in may have stopped early: it is
                    // not logged, and is evaluated again on --resume
                    if crate::interrupt::requested() {
                        return Ok(None);
                    }
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
                    Ok(Some((rows, p.stats)))
                });
            bar.inc(1);
            match r {
                Ok(None) => (i, None),
                Ok(Some(done)) => (i, Some(Ok(done))),
                Err(e) if crate::interrupt::requested() => {
                    let _ = e;
                    (i, None)
                }
                Err(e) => (i, Some(Err(e))),
            }
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
    if !redo.is_empty() {
        entry["points_redone"] = redo
            .iter()
            .map(|(i, why)| json!({"point": i, "reason": why}))
            .collect();
    }
    if remaining > 0 {
        let why = if crate::interrupt::requested() {
            "interrupted"
        } else {
            "--max-points"
        };
        let console = vec![format!(
            "sweep: stopped with {remaining} of {} points to go ({why}); rerun with --resume to finish",
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
