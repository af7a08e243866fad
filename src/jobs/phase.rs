//! Job `phase`: the vector field of any reduced system on a 2-D slice of its coordinates, with
//! trajectories, located events and the invariant curves the theory gives →
//! `<name>.csv` (grid: x, y, dx, dy, speed), `<name>-trajectories.csv`, `<name>.png`/`.svg`.

use crate::Error;
use crate::flow::{FlowProblem, Quantity, Solution, Trigger};
use crate::jobs::plan::Scenario;
use crate::report::figure::{
    Arrow, Axis, ColorBar, Figure, LegendAt, Marker, Panel, Series, color, colormap,
};
use crate::report::{Cell, OutputDir, Table};
use crate::scenario::{PhaseSpec, Slice};
use crate::systems::plugin::{Instance, JobOutput, horizon, standard_events};
use plotters::style::RGBColor;
use serde_json::json;

/// The vector field on the grid: rows of (x, y, dx, dy, speed).
pub fn grid_field(
    inst: &Instance,
    spec: &PhaseSpec,
    reference: Option<&[Vec<f64>]>,
) -> Vec<[f64; 5]> {
    let flow = inst.flow.as_ref();
    let dim = flow.names().len();
    let mut base = inst.init.clone();
    for &(i, v) in &spec.fixed {
        base[i] = v;
    }
    let mut mask = vec![1.0; dim];
    for &i in &inst.frozen {
        mask[i] = 0.0;
    }
    let (sx, sy) = (
        spec.x_range[1] - spec.x_range[0],
        spec.y_range[1] - spec.y_range[0],
    );
    let mut theta = base.clone();
    let mut g = vec![0.0; dim];
    let mut rows = Vec::with_capacity(spec.grid[0] * spec.grid[1]);
    for j in 0..spec.grid[1] {
        let y = spec.y_range[0] + sy * j as f64 / (spec.grid[1] - 1) as f64;
        for i in 0..spec.grid[0] {
            let x = spec.x_range[0] + sx * i as f64 / (spec.grid[0] - 1) as f64;
            if let Some(states) = reference {
                // Others from the reference state nearest to (x, y) in range-scaled distance.
                let nearest = states
                    .iter()
                    .min_by(|a, b| {
                        let d = |s: &Vec<f64>| {
                            ((s[spec.x] - x) / sx).powi(2) + ((s[spec.y] - y) / sy).powi(2)
                        };
                        d(a).total_cmp(&d(b))
                    })
                    .expect("the reference has states");
                theta.copy_from_slice(nearest);
            } else {
                theta.copy_from_slice(&base);
            }
            theta[spec.x] = x;
            theta[spec.y] = y;
            flow.grad(&theta, &mut g);
            let dx = -mask[spec.x] * g[spec.x];
            let dy = -mask[spec.y] * g[spec.y];
            rows.push([x, y, dx, dy, dx.hypot(dy)]);
        }
    }
    rows
}

fn solve_from(
    inst: &Instance,
    spec: &PhaseSpec,
    scenario: &Scenario,
    init: &[f64],
    slice_only: bool,
) -> Result<Solution, Error> {
    let dim = init.len();
    let mut frozen = inst.frozen.clone();
    if slice_only {
        frozen.extend((0..dim).filter(|&i| i != spec.x && i != spec.y));
    }
    let t_max = spec
        .t_max
        .unwrap_or_else(|| horizon(inst, &scenario.solver));
    // The loss event is relative to this trajectory's own start (not the system's initial
    // point): a start below half the initial loss would otherwise stop at once.
    let mut events = standard_events(inst, &[0.5], 0.5);
    let l0 = inst.flow.loss(init);
    for e in &mut events {
        if let (Quantity::Loss, Trigger::Falls(_)) = (e.quantity, e.trigger) {
            e.trigger = Trigger::Falls(0.5 * l0);
        }
    }
    let problem = FlowProblem::builder(inst.flow.as_ref())
        .init(init)
        .freeze(frozen)
        .t_max(t_max)
        .solver(&scenario.solver)
        .events(events)
        .stop_after_events(0.5)
        .tail_steps(5000)
        .build()?;
    Ok(problem.solve()?)
}

fn samples(sol: &Solution, n: usize) -> Vec<(f64, Vec<f64>)> {
    (0..n)
        .map(|i| {
            let t = sol.t_end() * i as f64 / (n - 1) as f64;
            (t, sol.state_at(t).expect("t in [0, t_end]"))
        })
        .collect()
}

pub fn run(scenario: &Scenario, spec: &PhaseSpec, out: &OutputDir) -> Result<JobOutput, Error> {
    let inst = scenario.system.instance();
    let names = inst.flow.names().to_vec();
    let reference = match spec.slice {
        Slice::Fixed => None,
        Slice::Reference => Some(solve_from(
            &inst,
            spec,
            scenario,
            &inst.init.clone(),
            false,
        )?),
    };
    let ref_states: Option<Vec<Vec<f64>>> = reference
        .as_ref()
        .map(|sol| samples(sol, 2001).into_iter().map(|s| s.1).collect());
    let field = grid_field(&inst, spec, ref_states.as_deref());
    let mut grid = Table::new(["x", "y", "dx", "dy", "speed"]);
    for r in &field {
        grid.push(r.iter().map(|&v| Cell::Num(v)).collect());
    }
    let mut files = vec![out.write_csv(&format!("{}.csv", spec.name), &grid)?];

    // Trajectories from the starts: in the slice (others held), or of the full flow.
    let mut base = inst.init.clone();
    for &(i, v) in &spec.fixed {
        base[i] = v;
    }
    let mut header = vec!["trajectory".to_string(), "t".to_string()];
    header.extend(names.iter().cloned());
    let mut traj_table = Table::new(header);
    let mut trajectories = Vec::new();
    let mut event_log = Vec::new();
    for (k, s) in spec.starts.iter().enumerate() {
        let mut init = base.clone();
        init[spec.x] = s[0];
        init[spec.y] = s[1];
        let sol = solve_from(&inst, spec, scenario, &init, spec.slice == Slice::Fixed)?;
        let pts = samples(&sol, 801);
        for (t, th) in &pts {
            let mut row: Vec<Cell> = vec![Cell::Int(k as i64), Cell::Num(*t)];
            row.extend(th.iter().map(|&v| Cell::Num(v)));
            traj_table.push(row);
        }
        let marks: Vec<(String, (f64, f64))> = sol
            .events()
            .iter()
            .filter_map(|e| {
                let t = e.t?;
                let th = sol.state_at(t)?;
                Some((e.name.clone(), (th[spec.x], th[spec.y])))
            })
            .collect();
        event_log.push(json!({
            "start": s,
            "t_end": sol.t_end(),
            "events": sol.events().iter().map(|e| json!({"event": e.name, "t": e.t})).collect::<Vec<_>>(),
        }));
        trajectories.push((
            pts.iter()
                .map(|(_, th)| (th[spec.x], th[spec.y]))
                .collect::<Vec<_>>(),
            marks,
        ));
    }
    if !spec.starts.is_empty() {
        files.push(out.write_csv(&format!("{}-trajectories.csv", spec.name), &traj_table)?);
    }
    let curves = if spec.invariants {
        scenario.system.invariant_curves(spec)
    } else {
        Vec::new()
    };
    let fig = phase_figure(
        &inst,
        spec,
        &field,
        &trajectories,
        &curves,
        reference.as_ref(),
    );
    files.extend(out.write_figure(&spec.name, &fig)?);
    let speeds: Vec<f64> = field.iter().map(|r| r[4]).collect();
    Ok(JobOutput {
        manifest: json!({
            "job": "phase",
            "name": spec.name,
            "axes": [spec.x_name, spec.y_name],
            "grid": spec.grid,
            "slice": spec.slice,
            "speed_range": [speeds.iter().cloned().fold(f64::INFINITY, f64::min), speeds.iter().cloned().fold(0.0, f64::max)],
            "trajectories": event_log,
            "held": held_values(&inst, spec),
            "invariant_curves": curves.iter().map(|c| c.0.clone()).collect::<Vec<_>>(),
        }),
        files,
        console: vec![format!(
            "phase {}: {} vs {} on a {}x{} grid, {} trajectories",
            spec.name,
            spec.y_name,
            spec.x_name,
            spec.grid[0],
            spec.grid[1],
            spec.starts.len()
        )],
        partial: false,
    })
}

/// The values of the coordinates off the slice (slice "fixed").
fn held_values(inst: &Instance, spec: &PhaseSpec) -> serde_json::Value {
    if spec.slice != Slice::Fixed {
        return serde_json::Value::Null;
    }
    let names = inst.flow.names();
    let mut base = inst.init.clone();
    for &(i, v) in &spec.fixed {
        base[i] = v;
    }
    let map: serde_json::Map<String, serde_json::Value> = (0..names.len())
        .filter(|&i| i != spec.x && i != spec.y)
        .map(|i| (names[i].clone(), json!(base[i])))
        .collect();
    serde_json::Value::Object(map)
}

/// What the dots on the trajectories are: the standard events of the system.
fn events_label(inst: &Instance) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !inst.emergence.is_empty() {
        let names: Vec<&str> = inst.emergence.iter().map(|(_, n)| n.as_str()).collect();
        parts.push(format!("{} ≥ 0.5", names.join(", ")));
    }
    parts.push("loss ≤ ½ of its start".into());
    if let Some((_, name)) = &inst.peak {
        parts.push(name.clone());
    }
    format!("events: {}", parts.join("; "))
}

type Trajectory = (Vec<(f64, f64)>, Vec<(String, (f64, f64))>);

fn phase_figure(
    inst: &Instance,
    spec: &PhaseSpec,
    field: &[[f64; 5]],
    trajectories: &[Trajectory],
    curves: &[(String, Vec<(f64, f64)>)],
    reference: Option<&Solution>,
) -> Figure {
    let x_axis = Axis::linear(spec.x_name.clone()).with_range(spec.x_range[0], spec.x_range[1]);
    let y_axis = Axis::linear(spec.y_name.clone()).with_range(spec.y_range[0], spec.y_range[1]);
    let slice = match spec.slice {
        Slice::Fixed => {
            let names = inst.flow.names();
            let mut base = inst.init.clone();
            for &(i, v) in &spec.fixed {
                base[i] = v;
            }
            let others: Vec<String> = (0..names.len())
                .filter(|&i| i != spec.x && i != spec.y)
                .map(|i| format!("{} = {}", names[i], base[i]))
                .collect();
            let text = others.join(", ");
            if others.is_empty() {
                String::new()
            } else if text.chars().count() <= 60 {
                format!(" ({text})")
            } else {
                format!(
                    " ({} other coordinates held; values in manifest.json)",
                    others.len()
                )
            }
        }
        Slice::Reference => " (others from the reference trajectory)".to_string(),
    };
    let mut p = Panel::new(
        format!("{} vs {}{slice}", spec.y_name, spec.x_name),
        x_axis,
        y_axis,
    );
    p.legend = LegendAt::UpperLeft;
    let logs: Vec<f64> = field
        .iter()
        .filter(|r| r[4] > 0.0)
        .map(|r| r[4].log10())
        .collect();
    let (lo, hi) = logs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    for r in field {
        let t = if hi > lo && r[4] > 0.0 {
            (r[4].log10() - lo) / (hi - lo)
        } else {
            0.0
        };
        p.arrows.push(Arrow {
            x: r[0],
            y: r[1],
            dx: r[2],
            dy: r[3],
            color: colormap(t),
        });
    }
    let cells = spec.grid[0].max(spec.grid[1]) as f64;
    p.arrow_px = (480.0 / cells).clamp(8.0, 30.0);
    if lo.is_finite() {
        p.colorbar = Some(ColorBar {
            label: "log10 speed".into(),
            lo,
            hi,
        });
    }
    if let Some(sol) = reference {
        let pts: Vec<(f64, f64)> = samples(sol, 801)
            .iter()
            .map(|(_, th)| (th[spec.x], th[spec.y]))
            .collect();
        p.series
            .push(Series::line("reference trajectory", pts, RGBColor(0, 0, 0)));
    }
    let mut events_drawn = false;
    for (k, (pts, marks)) in trajectories.iter().enumerate() {
        let c = color(1 + k % 6);
        let mut line = Series::line(
            format!(
                "trajectory from ({:.3}, {:.3})",
                spec.starts[k][0], spec.starts[k][1]
            ),
            pts.clone(),
            c,
        );
        if k >= 6 {
            line = line.unlabelled();
        }
        p.series.push(line);
        p.series
            .push(Series::markers("", vec![pts[0]], c, Marker::Square).unlabelled());
        let ev: Vec<(f64, f64)> = marks.iter().map(|m| m.1).collect();
        if !ev.is_empty() {
            let mut s = Series::markers(events_label(inst), ev, RGBColor(0, 0, 0), Marker::Circle);
            if events_drawn {
                s = s.unlabelled();
            }
            events_drawn = true;
            p.series.push(s);
        }
    }
    // Invariant curves on top: the trajectory from the origin lies on the first one.
    for (k, (label, pts)) in curves.iter().enumerate() {
        let col = if k == 0 {
            RGBColor(0, 0, 0)
        } else {
            RGBColor(150, 150, 150)
        };
        p.series
            .push(Series::dashed(label.clone(), pts.clone(), col));
    }
    Figure {
        title: None,
        width: 1100,
        height: 900,
        rows: 1,
        cols: 1,
        panels: vec![p],
    }
    .titled(format!("Phase portrait — {}", inst.label))
}
