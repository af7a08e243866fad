//! Job `solve`: one trajectory with located events → `trajectory.csv`, `events.csv`,
//! `trajectory.png`/`.svg`.

use crate::Error;
use crate::flow::{Quantity, Solution};
use crate::jobs::plan::Scenario;
use crate::report::figure::{Axis, Figure, LegendAt, Panel, Series, VLine, color};
use crate::report::{Cell, OutputDir, Table, fmt_f64, short};
use crate::scenario::{SolveSpec, Spacing};
use crate::systems::plugin::{
    Instance, JobOutput, SolveReport, horizon, problem_builder, sample_times,
};
use plotters::style::RGBColor;
use serde_json::json;

/// The trajectory table: `t`, every coordinate, `loss`, every observable.
pub fn trajectory_table(inst: &Instance, sol: &Solution, times: &[f64]) -> Table {
    let flow = inst.flow.as_ref();
    let mut header = vec!["t".to_string()];
    header.extend(flow.names().iter().cloned());
    header.push("loss".into());
    header.extend(flow.observable_names().iter().cloned());
    let mut table = Table::new(header);
    let mut obs = vec![0.0; flow.observable_names().len()];
    for &t in times {
        let theta = sol.state_at(t).expect("sample times lie in [0, t_end]");
        let mut row: Vec<Cell> = vec![t.into()];
        row.extend(theta.iter().map(|&v| Cell::Num(v)));
        row.push(flow.loss(&theta).into());
        flow.observables(&theta, &mut obs);
        row.extend(obs.iter().map(|&v| Cell::Num(v)));
        table.push(row);
    }
    table
}

/// Job `[solve]` for any system: its events, schedule and stop rule from the system, then
/// the trajectory sampled on the dense output, the events, the figure and whatever the system
/// adds ([`crate::systems::System::extend_solve`]).
pub fn run(scenario: &Scenario, spec: &SolveSpec, out: &OutputDir) -> Result<JobOutput, Error> {
    let system = scenario.system.as_ref();
    let inst = system.instance();
    let events = system.solve_events(&inst, spec);
    let event_colors: Vec<_> = events.iter().map(|e| event_color(e.quantity)).collect();
    let t_max = horizon(&inst, &scenario.solver);
    let mut builder = problem_builder(system, &inst, &scenario.solver, t_max).events(events);
    if spec.stop_after_events {
        builder = builder
            .stop_after_events(spec.margin)
            .tail_steps(spec.tail_steps);
    }
    let problem = builder.build()?;
    let started = std::time::Instant::now();
    let sol = problem.solve()?;
    let solve_seconds = started.elapsed().as_secs_f64();

    let times = sample_times(sol.t_end(), spec.samples, spec.spacing);
    let table = trajectory_table(&inst, &sol, &times);
    let mut files = vec![out.write_csv("trajectory.csv", &table)?];
    files.push(out.write_csv("events.csv", &events_table(&sol))?);
    let figure = system
        .trajectory_figure(&inst, &sol, &table, spec.spacing)
        .unwrap_or_else(|| trajectory_figure(&inst, &sol, &table, &event_colors, spec.spacing));
    files.extend(out.write_figure("trajectory", &figure)?);
    let mut report = SolveReport {
        out,
        files,
        manifest: solve_manifest(&inst, &sol, t_max, solve_seconds),
        console: console_summary(&inst, &sol),
    };
    system.extend_solve(&inst, &sol, &mut report)?;
    Ok(JobOutput {
        manifest: report.manifest,
        files: report.files,
        console: report.console,
        partial: false,
    })
}

/// `events.csv` of a solve: `event,t` (empty t for an event that did not happen).
pub fn events_table(sol: &Solution) -> Table {
    let mut ev = Table::new(["event", "t"]);
    for e in sol.events() {
        ev.push(vec![e.name.as_str().into(), e.t.into()]);
    }
    ev
}

/// The manifest entry of a solve: horizon, where and why it ended, solver statistics, events.
pub fn solve_manifest(
    inst: &Instance,
    sol: &Solution,
    t_max: f64,
    solve_seconds: f64,
) -> serde_json::Value {
    let mut m = sol.summary();
    m["job"] = "solve".into();
    m["system"] = inst.label.clone().into();
    m["t_max"] = t_max.into();
    m["solve_seconds"] = solve_seconds.into();
    m["events"] = sol
        .events()
        .iter()
        .map(|e| json!({"event": e.name, "t": e.t, "value": e.value}))
        .collect();
    m
}

/// The terminal summary of a solve: how it ended, then every event's time.
pub fn console_summary(inst: &Instance, sol: &Solution) -> Vec<String> {
    let mut console = vec![format!(
        "solve: {} — t_end = {} ({}), {} steps",
        inst.label,
        fmt_f64(sol.t_end()),
        sol.stop.text(),
        sol.stats.steps
    )];
    for e in sol.events() {
        console.push(format!(
            "  {:<22} {}",
            e.name,
            e.t.map_or("not reached".into(), fmt_f64)
        ));
    }
    console
}

/// Coordinates, observables and loss against t, with the events as dashed markers.
/// An event's marker takes the colour of the coordinate it watches; loss events are black and
/// rate peaks grey.
fn event_color(q: Quantity) -> RGBColor {
    match q {
        Quantity::Coord(k) => color(k),
        Quantity::Loss => color(7),
        _ => color(6),
    }
}

fn trajectory_figure(
    inst: &Instance,
    sol: &Solution,
    table: &Table,
    colors: &[RGBColor],
    spacing: Spacing,
) -> Figure {
    let t_axis = || match spacing {
        Spacing::Linear => Axis::linear("t (pseudo-time)"),
        Spacing::Log => Axis::log("t (pseudo-time, log scale)"),
    };
    let col = |name: &str| table.header.iter().position(|h| h == name).expect("column");
    let series_of = |c: usize| -> Vec<(f64, f64)> {
        table
            .rows
            .iter()
            .filter_map(|r| match (&r[0], &r[c]) {
                (Cell::Num(t), Cell::Num(v)) => Some((*t, *v)),
                _ => None,
            })
            .collect()
    };
    let vlines: Vec<VLine> = sol
        .events()
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            e.t.map(|t| VLine {
                x: t,
                label: format!("{} = {}", e.name, short(t)),
                color: colors[i],
            })
        })
        .collect();
    let flow = inst.flow.as_ref();
    let mut coords = Panel::new("pseudo-parameters", t_axis(), Axis::linear("value"));
    for (i, name) in flow.names().iter().enumerate() {
        coords
            .series
            .push(Series::line(name.clone(), series_of(col(name)), color(i)));
    }
    coords.vlines = vlines.clone();
    let mut panels = vec![coords];
    if !flow.observable_names().is_empty() {
        let mut obs = Panel::new(
            "attention weights",
            t_axis(),
            Axis::linear("weight").with_range(0.0, 1.02),
        );
        for (i, name) in flow.observable_names().iter().enumerate() {
            obs.series.push(Series::line(
                name.clone(),
                series_of(col(name)),
                color(i + 4),
            ));
        }
        obs.legend = LegendAt::UpperLeft;
        panels.push(obs);
    }
    let mut loss = Panel::new("loss", t_axis(), Axis::log("loss (log scale)"));
    loss.series
        .push(Series::line("loss", series_of(col("loss")), color(1)));
    loss.vlines = vlines;
    loss.legend = LegendAt::LowerLeft;
    panels.push(loss);
    let cols = panels.len();
    Figure::grid(1, cols, panels).titled(inst.label.clone())
}
