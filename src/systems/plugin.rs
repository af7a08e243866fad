//! The plug between the engine and a system: everything a job needs to know about one `kind`.
//!
//! A system (one folder under `systems/`) implements [`System`] and is listed once in
//! [`super::REGISTRY`]. The jobs (`[solve]`, `[sweep]`, `[[phase]]`) are written once, in
//! the jobs layer, against this trait: they ask the system for its reduced flow ([`Instance`]),
//! its events, its schedule, its sweep columns and its overlays, and do the rest (integration,
//! tables, figures, manifest) themselves. Every hook has a default that fits a reduced system
//! whose coordinates emerge by crossing thresholds (the Musat flows), so a new system overrides
//! only what differs. A system's own jobs (the models trained alongside its flow: `[compare]`,
//! `[train]`, `[gih]`) come in through [`System::attach`] and [`System::run_own`].

use crate::Error;
use crate::flow::{
    EventSpec, FlowProblem, FlowProblemBuilder, GradientFlow, Quantity, Solution, Stage,
};
use crate::report::figure::Figure;
use crate::report::{Cell, OutputDir, Table};
use crate::scenario::{FieldError, PhaseSpec, SolveRules, SolveSpec, SolverSpec, Spacing};
use serde::Serialize;
use std::path::PathBuf;

/// A reduced system ready to solve, with what the jobs need to know about it.
pub struct Instance {
    pub flow: Box<dyn GradientFlow>,
    pub init: Vec<f64>,
    pub frozen: Vec<usize>,
    /// The time scale that `solver.horizon` multiplies.
    pub time_scale: f64,
    /// Coordinates with emergence events, in reporting order, with their names.
    pub emergence: Vec<(usize, String)>,
    /// The coordinate whose rate peak is reported, and the event/column name.
    pub peak: Option<(usize, String)>,
    /// A one-line description for figure titles.
    pub label: String,
    /// The same without the swept size (for sweeps over it).
    pub family: String,
    /// The scenario parameters that identify a sweep point, as CSV columns.
    pub params: Vec<Param>,
}

/// A parameter column of sweep outputs: its name, the scenario field it comes from, its value.
#[derive(Debug, Clone)]
pub struct Param {
    pub column: String,
    pub field: String,
    pub value: f64,
}

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

/// A column of a sweep's rows.
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

/// The rows one sweep point contributes (each as wide as the columns), and its solver
/// statistics.
pub struct PointRows {
    pub rows: Vec<Vec<Cell>>,
    pub stats: serde_json::Value,
}

/// What a job hands back: its manifest entry, the files it wrote, lines for the terminal, and
/// whether it stopped before finishing (a sweep capped by `--max-points`).
pub struct JobOutput {
    pub manifest: serde_json::Value,
    pub files: Vec<PathBuf>,
    pub console: Vec<String>,
    pub partial: bool,
}

/// What a system's own job gets from the run: the solver settings, where to write, whether to
/// show progress, and whether the scenario also has a sweep.
pub struct JobContext<'a> {
    pub solver: &'a SolverSpec,
    pub out: &'a OutputDir,
    pub progress: bool,
    pub has_sweep: bool,
}

/// Where in a run a system's own job goes: the generic jobs run in the order `[solve]`,
/// (after solve), `[[phase]]`, (after phase), `[sweep]`, (after sweep).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    AfterSolve,
    AfterPhase,
    AfterSweep,
}

/// What a `[solve]` wrote and reports, which a system may add to
/// ([`System::extend_solve`]).
pub struct SolveReport<'a> {
    pub out: &'a OutputDir,
    pub files: Vec<PathBuf>,
    pub manifest: serde_json::Value,
    pub console: Vec<String>,
}

/// The generic parts of a scenario a system checks itself against.
pub struct ScenarioParts<'a> {
    pub solver: &'a SolverSpec,
    pub solve: Option<&'a SolveSpec>,
    pub has_phase: bool,
}

/// One reduced system (a `kind`): its flow, its events, and the jobs it brings.
pub trait System: Send + Sync + std::fmt::Debug {
    /// The `kind` string of `[system]`.
    fn kind(&self) -> &'static str;
    /// The concrete system, for code that knows the kind (tests, benchmarks).
    fn as_any(&self) -> &dyn std::any::Any;
    /// The validated `[system]` table (with `kind`), echoed in the manifest.
    fn to_json(&self) -> serde_json::Value;
    /// Names of the coordinates, in θ order (phase axes, `fixed`, `init`, `freeze`).
    fn coordinate_names(&self) -> Vec<String>;
    /// Default of `solver.horizon` (a multiple of the system's time scale).
    fn default_horizon(&self) -> f64 {
        10.0
    }
    /// The reduced flow with its initial point, time scale, events and labels.
    fn instance(&self) -> Instance;
    /// The schedule over [0, t_max] (which coordinates move when); default one stage.
    fn stages(&self, t_max: f64) -> Vec<Stage> {
        vec![Stage::new("main", t_max)]
    }

    // ---- [solve]
    /// What `[solve]` accepts.
    fn solve_rules(&self) -> SolveRules {
        SolveRules::THRESHOLDS
    }
    /// The events of `[solve]`; default [`standard_events`].
    fn solve_events(&self, inst: &Instance, spec: &SolveSpec) -> Vec<EventSpec> {
        standard_events(inst, &spec.thresholds, spec.loss_fraction)
    }
    /// The trajectory figure, when the system draws its own (default: the generic one).
    fn trajectory_figure(
        &self,
        _inst: &Instance,
        _sol: &Solution,
        _table: &Table,
        _spacing: Spacing,
    ) -> Option<Figure> {
        None
    }
    /// Further outputs of `[solve]` (tables, manifest fields, console lines).
    fn extend_solve(
        &self,
        _inst: &Instance,
        _sol: &Solution,
        _report: &mut SolveReport,
    ) -> Result<(), Error> {
        Ok(())
    }

    // ---- [sweep]
    /// The columns every sweep point reports; default [`emergence_columns`].
    fn sweep_columns(&self) -> Vec<Column> {
        emergence_columns(&self.instance())
    }
    /// The rows one sweep point writes, one entry per row: the text its key column holds when
    /// it is known before the point runs (the threshold), `None` otherwise. The points log is
    /// verified against it on `--resume` and `merge`. Default: one row per threshold.
    fn sweep_row_keys(&self, thresholds: &[f64]) -> Vec<Option<String>> {
        thresholds
            .iter()
            .map(|&t| Some(crate::report::fmt_f64(t)))
            .collect()
    }
    /// Evaluate this system as one sweep point; default [`emergence_point`].
    fn sweep_point(&self, solver: &SolverSpec, thresholds: &[f64]) -> Result<PointRows, Error> {
        emergence_point(self, solver, thresholds)
    }

    // ---- [[phase]]
    /// Curves the theory gives on a phase slice (label, points); default none.
    fn invariant_curves(&self, _spec: &PhaseSpec) -> Vec<(String, Vec<(f64, f64)>)> {
        Vec::new()
    }

    // ---- the system's own sections and jobs
    /// The top-level sections this system owns (e.g. `compare`), parsed by [`System::attach`].
    fn sections(&self) -> &'static [&'static str] {
        &[]
    }
    /// Parse and validate one of [`System::sections`].
    fn attach(&mut self, section: &str, _table: toml::Table) -> Result<(), FieldError> {
        Err(FieldError::new(
            section,
            format!("not available for kind \"{}\"", self.kind()),
        ))
    }
    /// The validated sections, by name, echoed in the manifest.
    fn sections_json(&self) -> Vec<(&'static str, serde_json::Value)> {
        Vec::new()
    }
    /// Cross-checks against the generic parts of the scenario.
    fn check(&self, _parts: &ScenarioParts) -> Result<(), FieldError> {
        Ok(())
    }
    /// What the system's own sections (`[compare]`, `[train]`, `[gih]`) will hold in memory
    /// and write, estimated from their fields (the dominant buffers, not every byte). The
    /// generic jobs are estimated by the engine.
    fn footprints(&self, _threads: usize) -> Vec<Footprint> {
        Vec::new()
    }
    /// The attached sections that do not change a sweep point's result (a `--resume` may find
    /// them changed).
    fn resume_ignores(&self) -> &'static [&'static str] {
        &[]
    }
    /// Whether an attached section runs a job on the scenario as written (so a swept field
    /// the document lacks cannot be filled in for it).
    fn runs_on_base(&self) -> bool {
        false
    }
    /// Whether an attached section gives the scenario something to run.
    fn has_own_job(&self) -> bool {
        false
    }
    /// One-line descriptions of the attached jobs (`ihdyn validate`).
    fn describe_own(&self, _has_sweep: bool) -> Vec<String> {
        Vec::new()
    }
    /// Run the attached job that belongs at `when`, if any.
    fn run_own(&self, _when: When, _ctx: &JobContext) -> Option<Result<JobOutput, Error>> {
        None
    }
    /// Reject a sweep this system cannot evaluate (e.g. one that needs an attached section).
    fn check_sweep(&self, _thresholds_given: bool) -> Result<(), FieldError> {
        Ok(())
    }
}

impl dyn System {
    /// The concrete system of type `T`, if this is one.
    pub fn downcast<T: 'static>(&self) -> Option<&T> {
        self.as_any().downcast_ref()
    }
}

/// Name of the event "coordinate `name` reaches `threshold`" (also the sweep column stem).
pub fn threshold_event_name(coord: &str, threshold: f64) -> String {
    format!("T_{coord}@{threshold}")
}

/// Name of the event "loss ≤ fraction × initial loss": `T_loss_half` for ½.
pub fn loss_event_name(fraction: f64) -> String {
    if fraction == 0.5 {
        "T_loss_half".into()
    } else {
        format!("T_loss@{fraction}")
    }
}

/// The events of a system whose coordinates emerge: each emergence coordinate at each
/// threshold, the loss reaching `loss_fraction` of its initial value, and the rate peak.
pub fn standard_events(inst: &Instance, thresholds: &[f64], loss_fraction: f64) -> Vec<EventSpec> {
    let mut events = Vec::new();
    for &th in thresholds {
        for (k, name) in &inst.emergence {
            events.push(EventSpec::rises(
                threshold_event_name(name, th),
                Quantity::Coord(*k),
                th,
            ));
        }
    }
    let l0 = inst.flow.loss(&inst.init);
    events.push(EventSpec::falls(
        loss_event_name(loss_fraction),
        Quantity::Loss,
        loss_fraction * l0,
    ));
    if let Some((k, name)) = &inst.peak {
        events.push(EventSpec::peak(name.clone(), Quantity::Rate(*k)));
    }
    events
}

/// The horizon of a run: `solver.t_max`, or `solver.horizon` × the system's time scale.
pub fn horizon(inst: &Instance, solver: &SolverSpec) -> f64 {
    solver.t_max.unwrap_or(solver.horizon * inst.time_scale)
}

/// The problem builder of a system's flow: its initial point, frozen coordinates, schedule to
/// `t_max` and the solver settings; the caller adds events and the stop rule.
pub fn problem_builder<'a, S: System + ?Sized>(
    system: &S,
    inst: &'a Instance,
    solver: &SolverSpec,
    t_max: f64,
) -> FlowProblemBuilder<'a> {
    FlowProblem::builder(inst.flow.as_ref())
        .init(&inst.init)
        .freeze(inst.frozen.iter().copied())
        .stages(system.stages(t_max))
        .solver(solver)
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
pub fn emergence_point<S: System + ?Sized>(
    system: &S,
    solver: &SolverSpec,
    thresholds: &[f64],
) -> Result<PointRows, Error> {
    let inst = system.instance();
    let events = standard_events(&inst, thresholds, 0.5);
    let problem = problem_builder(system, &inst, solver, horizon(&inst, solver))
        .events(events)
        .stop_after_events(0.0)
        .tail_steps(5000)
        .events_only()
        .build()?;
    let sol = problem.solve()?;
    let rows = thresholds
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
        stats: sol.summary(),
    })
}

/// Sample times for `trajectory.csv`: `samples` points on [0, t_end], evenly spaced, or
/// log-spaced from t_end·1e-6 with t = 0 first.
pub fn sample_times(t_end: f64, samples: usize, spacing: Spacing) -> Vec<f64> {
    let last = (samples - 1) as f64;
    match spacing {
        Spacing::Linear => (0..samples).map(|i| t_end * i as f64 / last).collect(),
        Spacing::Log => {
            let lo = (t_end * 1e-6).ln();
            let hi = t_end.ln();
            std::iter::once(0.0)
                .chain((0..samples - 1).map(|i| {
                    let s = if samples == 2 {
                        1.0
                    } else {
                        i as f64 / (last - 1.0)
                    };
                    (lo + s * (hi - lo)).exp()
                }))
                .map(|t: f64| t.min(t_end))
                .collect()
        }
    }
}

/// A job's estimated peak memory and output size in bytes, checked against the run's budget at
/// validation. `what` names the job and `fields` the scenario fields that drive the estimate
/// (the message tells the user which to lower).
#[derive(Debug, Clone, PartialEq)]
pub struct Footprint {
    pub what: String,
    pub fields: &'static str,
    pub memory: f64,
    pub output: f64,
}
