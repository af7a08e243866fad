//! What one sweep point measures, per system: its columns (known before anything runs) and
//! its rows.
//!
//! A system plugs into the generic sweep with two arms, in [`columns`] and [`evaluate`]. Systems
//! whose [`Instance`] lists emergence coordinates (musat3, musat19, and any flow with the same events)
//! share [`emergence_columns`] / [`emergence_point`].

use crate::Error;
use crate::jobs::system::{Instance, instantiate};
use crate::jobs::{build_problem, loss_event_name, standard_events, threshold_event_name};
use crate::report::Cell;
use crate::scenario::{Scenario, SweepSpec, SystemSpec};
use serde::Serialize;

/// How a column of a sweep is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A parameter of the point, set by the scenario field `field` (e.g. N from `system.n`).
    Param { field: String },
    /// Splits a point into several rows and groups the fits (e.g. the threshold).
    Key,
    /// A time, fitted as a power law of the swept value.
    Time,
    /// Reported only.
    Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Column {
    pub name: String,
    pub role: Role,
}

impl Column {
    pub fn new(name: impl Into<String>, role: Role) -> Self {
        Column {
            name: name.into(),
            role,
        }
    }
}

/// The rows one point contributes (each as wide as [`columns`]), and its solver statistics.
pub struct PointRows {
    pub rows: Vec<Vec<Cell>>,
    pub stats: serde_json::Value,
}

/// The columns every point of a sweep over this scenario's system reports.
pub fn columns(scenario: &Scenario) -> Vec<Column> {
    match &scenario.system {
        SystemSpec::Musat3(_) | SystemSpec::Musat19(_) => {
            emergence_columns(&instantiate(&scenario.system))
        }
        SystemSpec::Rich(_) => crate::systems::wang::job::sweep_columns(),
        SystemSpec::Gih(_) => crate::systems::chen::job::point_columns(scenario),
    }
}

/// Evaluate one point scenario.
pub fn evaluate(scenario: &Scenario, spec: &SweepSpec) -> Result<PointRows, Error> {
    match &scenario.system {
        SystemSpec::Musat3(_) | SystemSpec::Musat19(_) => emergence_point(scenario, spec),
        SystemSpec::Rich(_) => crate::systems::wang::job::sweep_point(scenario),
        SystemSpec::Gih(_) => crate::systems::chen::job::point(scenario, spec),
    }
}

/// Params, `threshold`, then T_<coord> per emergence coordinate, `T_loss_half`, the rate peak.
pub fn emergence_columns(inst: &Instance) -> Vec<Column> {
    let mut cols: Vec<Column> = inst
        .params
        .iter()
        .map(|p| {
            Column::new(
                p.column.clone(),
                Role::Param {
                    field: p.field.clone(),
                },
            )
        })
        .collect();
    cols.push(Column::new("threshold", Role::Key));
    for (_, name) in &inst.emergence {
        cols.push(Column::new(format!("T_{name}"), Role::Time));
    }
    cols.push(Column::new(loss_event_name(0.5), Role::Time));
    if let Some((_, name)) = &inst.peak {
        cols.push(Column::new(name.clone(), Role::Time));
    }
    cols
}

/// One solve with every threshold's events; it stops as soon as all events are found, and
/// keeps the continuous output only where they are located. One row per threshold.
pub fn emergence_point(scenario: &Scenario, spec: &SweepSpec) -> Result<PointRows, Error> {
    let inst = instantiate(&scenario.system);
    let events = standard_events(&inst, &spec.thresholds, 0.5);
    let problem = build_problem(&inst, &scenario.solver, events, Some((0.0, 5000)), true)?;
    let sol = problem.solve()?;
    let rows = spec
        .thresholds
        .iter()
        .map(|&th| {
            let mut row: Vec<Cell> = inst.params.iter().map(|p| Cell::Num(p.value)).collect();
            row.push(th.into());
            for (_, name) in &inst.emergence {
                row.push(sol.event_time(&threshold_event_name(name, th)).into());
            }
            row.push(sol.event_time(&loss_event_name(0.5)).into());
            if let Some((_, name)) = &inst.peak {
                row.push(sol.event_time(name).into());
            }
            row
        })
        .collect();
    Ok(PointRows {
        rows,
        stats: serde_json::json!({
            "t_end": sol.t_end(),
            "stop_reason": sol.stop,
            "solver_stats": sol.stats,
        }),
    })
}
