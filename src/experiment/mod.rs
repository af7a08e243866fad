//! Jobs that combine the layers: a scenario's `[solve]` and `[sweep]` sections run here, write
//! their outputs through `report`, and the run ends with `manifest.json`.

pub mod compare;
pub mod solve;
pub mod sweep;
pub mod system;

use crate::Error;
use crate::flow::{EventSpec, FlowProblem, Quantity};
use crate::report::{Manifest, OutputDir, git_revision};
use crate::scenario::{Scenario, SolverSpec};
use std::path::PathBuf;
use system::Instance;

/// What a job hands back: its manifest entry, the files it wrote, lines for the terminal.
pub struct JobOutput {
    pub manifest: serde_json::Value,
    pub files: Vec<PathBuf>,
    pub console: Vec<String>,
}

/// How to run: where to write, whether to draw progress bars, what to record.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub out: OutputDir,
    pub progress: bool,
    pub command_line: Vec<String>,
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

/// The events every reduced-system job reports: each emergence coordinate at each threshold,
/// the loss reaching `loss_fraction` of its initial value, and the rate peak.
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

/// A validated flow problem for this instance and solver settings; `stop` = (margin, tail
/// steps) stops the run after the events instead of at the horizon.
pub fn build_problem<'a>(
    inst: &'a Instance,
    solver: &SolverSpec,
    events: Vec<EventSpec>,
    stop: Option<(f64, u32)>,
) -> Result<FlowProblem<'a>, Error> {
    let mut b = FlowProblem::builder(inst.flow.as_ref())
        .init(&inst.init)
        .freeze(inst.frozen.iter().copied())
        .t_max(horizon(inst, solver))
        .tolerances(solver.rtol, solver.atol)
        .max_steps(solver.max_steps)
        .events(events);
    if let Some((margin, tail_steps)) = stop {
        b = b.stop_after_events(margin).tail_steps(tail_steps);
    }
    Ok(b.build()?)
}

/// Run every job of a validated scenario into `opts.out`, then write `manifest.json`. A job
/// that fails still gets a manifest (status `failed`, with the error) before the error returns.
pub fn run_scenario(scenario: &Scenario, opts: &RunOptions) -> Result<Vec<String>, Error> {
    let started = std::time::Instant::now();
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut jobs = Vec::new();
    let mut console = Vec::new();
    let mut failure = None;
    if let Some(spec) = &scenario.solve {
        match solve::run(scenario, spec, &opts.out) {
            Ok(j) => {
                jobs.push(j.manifest);
                console.extend(j.console);
            }
            Err(e) => failure = Some(e),
        }
    }
    if let (None, Some(spec)) = (&failure, &scenario.sweep) {
        match sweep::run(scenario, spec, &opts.out, opts.progress) {
            Ok(j) => {
                jobs.push(j.manifest);
                console.extend(j.console);
            }
            Err(e) => failure = Some(e),
        }
    }
    if let (None, Some(spec)) = (&failure, &scenario.compare) {
        match compare::run(scenario, spec, &opts.out, opts.progress) {
            Ok(j) => {
                jobs.push(j.manifest);
                console.extend(j.console);
            }
            Err(e) => failure = Some(e),
        }
    }
    let mut status = match &failure {
        None => "complete",
        Some(_) => "failed",
    };
    if let Some(Error::Partial { manifest, source }) = failure {
        // The job wrote what it had: keep its entry, mark the run partial, report the cause.
        jobs.push(*manifest);
        status = "partial";
        failure = Some(*source);
    }
    let manifest = Manifest {
        tool: "ihdyn",
        version: env!("CARGO_PKG_VERSION"),
        git_revision: git_revision(),
        status: status.into(),
        error: failure.as_ref().map(|e| e.to_string()),
        command_line: opts.command_line.clone(),
        scenario_source: Some(scenario.origin.clone()),
        scenario: serde_json::to_value(scenario).expect("scenario serializes"),
        scenario_text: Some(scenario.text.clone()),
        threads: rayon::current_num_threads(),
        started_unix_seconds: started_unix,
        wall_seconds: started.elapsed().as_secs_f64(),
        jobs,
    };
    opts.out.write_json("manifest.json", &manifest)?;
    match failure {
        Some(e) => Err(e),
        None => Ok(console),
    }
}
