//! Job `compare` (docs/theory/musat.md §10): train the full 28D² disentangled transformer by GD and
//! integrate the 19- and 3-parameter flows from the projection of its initial weights, all on
//! one pseudo-time axis t = η·step/D → `compare.csv`, `compare.json`, `compare.png`,
//! `residual.png`, `coordinates.png` (and SVGs).
//!
//! ODE events are located by root finding on the dense output; full-model events by linear
//! interpolation between checkpoints. The reduced flows describe orthonormal data; with
//! isotropic data only the full model is trained (the Theorem-1 residual check).

use crate::Error;
use crate::flow::{EventSpec, FlowProblem, GradientFlow, Quantity, Solution};
use crate::report::figure::{Axis, Figure, LegendAt, Panel, Series, Style, color};
use crate::report::progress::Progress;
use crate::report::{Cell, Table, fmt_f64};
use crate::scenario::SolverSpec;
use crate::systems::musat::data::{DataKind, LabelPosition, QueryPosition};
use crate::systems::musat::disentangled::{FullGd, Mask, Params, Trainer};
use crate::systems::musat::musat3::Musat3;
use crate::systems::musat::musat19::Musat19;
use crate::systems::musat::scenario19::{CompareSpec, InitKind, Musat19Spec};
use crate::systems::musat::subspace::{
    ALPHA3, BETA2, GAMMA3, MMatrix, NAMES19, Residuals, project_with, residuals_with,
};
use crate::systems::plugin::JobContext;
use crate::systems::plugin::JobOutput;
use crate::train::checkpoints::{Checkpoints, Policy};
use crate::train::crossing::{Direction, first_crossing};
use crate::train::{Guard, Stage, TrainError, train};
mod figures;
mod table;
#[allow(unused_imports)]
use {figures::*, table::*};

use serde_json::{Value, json};
use std::time::Instant;

/// The three coordinates with emergence events, in reporting order.
const EMERGING: [(usize, &str); 3] = [(GAMMA3, "gamma3"), (BETA2, "beta2"), (ALPHA3, "alpha3")];

/// One checkpoint of a full-model run.
#[derive(Debug, Clone)]
struct FullRow {
    step: usize,
    t: f64,
    loss: f64,
    theta: [f64; 19],
    res: Residuals,
    /// Seconds since training started.
    wall: f64,
}

/// A finished (or diverged) full-model run.
struct FullRun {
    batch: usize,
    rows: Vec<FullRow>,
    error: Option<TrainError>,
    seconds: f64,
}

/// A solved reduced flow and what it took.
struct OdeRun {
    name: &'static str,
    flow: Box<dyn GradientFlow>,
    solution: Solution,
    /// Indices of α₃, β₂, γ₃ in the flow's θ (and which of the 19 each coordinate is).
    coords: Vec<usize>,
    seconds: f64,
    seconds_to_alpha3: Option<f64>,
}

fn event_names(threshold: f64) -> Vec<String> {
    let mut names: Vec<String> = EMERGING
        .iter()
        .map(|(_, n)| crate::systems::plugin::threshold_event_name(n, threshold))
        .collect();
    names.push(crate::systems::plugin::loss_event_name(0.5));
    names
}

/// Repetitions of a reduced flow's solve to its α₃ emergence (its wall time is the fastest):
/// at least [`TIMING_MIN_REPEATS`], then more until [`TIMING_BUDGET_SECONDS`] of solving have
/// passed, at most [`TIMING_MAX_REPEATS`].
const TIMING_MIN_REPEATS: usize = 5;
const TIMING_MAX_REPEATS: usize = 500;
const TIMING_BUDGET_SECONDS: f64 = 0.05;

/// Solve one reduced flow from θ₀ to `t_end` with the emergence and loss-half events.
fn solve_ode(
    name: &'static str,
    flow: Box<dyn GradientFlow>,
    coords: Vec<usize>,
    theta0: &[f64],
    t_end: f64,
    threshold: f64,
    solver: &SolverSpec,
) -> Result<OdeRun, Error> {
    let names = event_names(threshold);
    let mut events: Vec<EventSpec> = coords
        .iter()
        .zip(&names)
        .map(|(&k, ev)| EventSpec::rises(ev.clone(), Quantity::Coord(k), threshold))
        .collect();
    events.push(EventSpec::falls(
        names[3].clone(),
        Quantity::Loss,
        0.5 * flow.loss(theta0),
    ));
    let build = |events: Vec<EventSpec>| {
        FlowProblem::builder(flow.as_ref())
            .init(theta0)
            .t_max(t_end)
            .solver(solver)
            .events(events)
    };
    let started = Instant::now();
    let solution = build(events).build()?.solve()?;
    let seconds = started.elapsed().as_secs_f64();
    // The time the flow takes to reach its own α₃ emergence: stop right at that event. A
    // solve this short (well under a millisecond) is timed as the best of repeated solves
    // (timeit's rule: the fastest run is the one least disturbed by the machine), so that a
    // cold start (first-touch page faults, scratch set-up) or a scheduler hiccup does not
    // dominate it.
    let alpha_event = EventSpec::rises("alpha3", Quantity::Coord(coords[2]), threshold);
    let to_alpha = build(vec![alpha_event])
        .stop_after_events(0.0)
        .tail_steps(1)
        .events_only()
        .build()?;
    let mut seconds_to_alpha3 = None;
    let mut spent = 0.0;
    for repeat in 0..TIMING_MAX_REPEATS {
        if repeat >= TIMING_MIN_REPEATS && spent >= TIMING_BUDGET_SECONDS {
            break;
        }
        let started = Instant::now();
        let found = to_alpha.solve()?.event_time("alpha3").is_some();
        let elapsed = started.elapsed().as_secs_f64();
        if !found {
            break;
        }
        spent += elapsed;
        seconds_to_alpha3 = Some(seconds_to_alpha3.map_or(elapsed, |s: f64| s.min(elapsed)));
    }
    Ok(OdeRun {
        name,
        flow,
        solution,
        coords,
        seconds,
        seconds_to_alpha3,
    })
}

/// The event times of one source, in pseudo-time, in the order of [`event_names`].
fn full_events(rows: &[FullRow], threshold: f64) -> Vec<Option<f64>> {
    let mut out: Vec<Option<f64>> = EMERGING
        .iter()
        .map(|&(k, _)| {
            first_crossing(
                rows.iter().map(|r| (r.t, r.theta[k])),
                threshold,
                Direction::Rises,
            )
        })
        .collect();
    out.push(rows.first().and_then(|r0| {
        first_crossing(
            rows.iter().map(|r| (r.t, r.loss)),
            0.5 * r0.loss,
            Direction::Falls,
        )
    }));
    out
}

fn events_json(names: &[String], times: &[Option<f64>], steps_per_t: f64) -> Value {
    let mut map = serde_json::Map::new();
    for (name, t) in names.iter().zip(times) {
        map.insert(
            name.clone(),
            json!({"t": t, "steps": t.map(|t| t * steps_per_t)}),
        );
    }
    Value::Object(map)
}

/// Largest |θ_full(t) − θ_ode19(t)| for α₃, β₂, γ₃ over the full model's checkpoints with
/// t ≤ `up_to`.
fn max_abs_difference(rows: &[FullRow], ode19: &Solution, up_to: f64) -> Value {
    let mut worst = [0.0f64; 3];
    let mut compared = 0usize;
    for r in rows.iter().filter(|r| r.t <= up_to) {
        let Some(th) = ode19.state_at(r.t) else {
            continue;
        };
        compared += 1;
        for (w, &(k, _)) in worst.iter_mut().zip(&EMERGING) {
            *w = w.max((r.theta[k] - th[k]).abs());
        }
    }
    json!({
        "up_to_t": up_to,
        "checkpoints_compared": compared,
        "gamma3": worst[0],
        "beta2": worst[1],
        "alpha3": worst[2],
    })
}

/// Initial weights of the full model.
fn initial_params(spec: &CompareSpec) -> Params {
    match spec.init {
        InitKind::Zero => Params::zeros(spec.d),
        InitKind::Gaussian => Params::gaussian(spec.d, spec.init_std, spec.seed),
    }
}

fn mask_name(mask: Mask) -> &'static str {
    match mask {
        Mask::Strict => "strict",
        Mask::Inclusive => "inclusive",
    }
}

pub fn run(sys: &Musat19Spec, spec: &CompareSpec, ctx: &JobContext) -> Result<JobOutput, Error> {
    let (out, progress) = (ctx.out, ctx.progress);
    let data = spec.data_spec(sys);
    let n = data.n;
    let dt = spec.dt();
    let steps_per_t = 1.0 / dt;
    let t_end = dt * spec.steps as f64;
    let params0 = initial_params(spec);
    let theta0 = project_with(&params0, sys.m);

    // ---- the full model, once per batch size.
    let stages = [Stage {
        name: String::new(),
        trained: None,
        lr: spec.eta,
        dt,
        steps: spec.steps as u64,
    }];
    let guard = Guard {
        what: "gradient descent".into(),
        hint: "compare.eta".into(),
        // only the loss decides (a NaN parameter still counts): it is what the error reports
        bound: f64::INFINITY,
    };
    let mut runs = Vec::new();
    for &batch in &spec.batch {
        let mut learner = FullGd {
            trainer: Trainer::new(data, batch, sys.loss_scale, spec.refresh, spec.seed)
                .with_attention(spec.attention()),
            params: params0.clone(),
        };
        let mut rows = Vec::new();
        let bar = Progress::new(
            progress,
            &format!("train B = {batch}"),
            spec.steps as u64 + 1,
            "steps",
            Some("loss"),
        );
        let mut checkpoints = Checkpoints::new(
            Policy::Every(spec.checkpoint_every as u64),
            spec.steps as u64,
        );
        let started = Instant::now();
        // checkpoints: projection, residuals and wall time
        let result = train::<_, TrainError>(&mut learner, &stages, &guard, |p, l| {
            if checkpoints.due(p.step, p.last) {
                let theta = project_with(&l.params, sys.m);
                rows.push(FullRow {
                    step: p.step as usize,
                    t: p.t,
                    loss: p.loss,
                    res: residuals_with(&l.params, &theta, sys.m),
                    theta,
                    wall: started.elapsed().as_secs_f64(),
                });
                bar.message(format!("{:.4e}", p.loss));
            }
            bar.inc(1);
            Ok(())
        });
        drop(bar);
        let seconds = started.elapsed().as_secs_f64();
        let diverged = result.is_err();
        runs.push(FullRun {
            batch,
            rows,
            error: result.err(),
            seconds,
        });
        if diverged {
            break;
        }
    }

    // ---- the reduced flows (orthonormal data only), from the projection of W₀, up to the
    // time the full model reached (t_end unless GD diverged).
    let t_reached = runs
        .iter()
        .filter_map(|r| r.rows.last().map(|l| l.t))
        .fold(0.0f64, f64::max);
    let t_ode = t_reached;
    let mut odes = Vec::new();
    let mut skipped = Vec::new();
    if t_reached == 0.0 {
        for src in ["ode19", "ode3"] {
            skipped.push(json!({"source": src, "reason": "the full model stopped at t = 0"}));
        }
    } else if !spec.attention().is_paper() {
        for s in ["ode19", "ode3"] {
            skipped.push(json!({"source": s, "reason": format!("the reduced flows describe the paper's attention (temperature 1, strict mask; docs/theory/musat.md §4, §13); the full model runs with temperature {} and the {} mask", fmt_f64(spec.temperature), mask_name(spec.mask))}));
        }
    } else if spec.data == DataKind::Orthonormal {
        let m19 = Musat19::with_m(
            n,
            sys.query,
            sys.label_position,
            sys.query_position,
            sys.m,
            sys.loss_scale,
        );
        odes.push(solve_ode(
            "ode19",
            Box::new(m19),
            vec![GAMMA3, BETA2, ALPHA3],
            &theta0,
            t_ode,
            spec.threshold,
            ctx.solver,
        )?);
        // The closed form holds for both query positions: at a point with only α₃, β₂, γ₃
        // nonzero the query's position enters only its own layer-1 row, which no nonzero
        // coefficient reads (theory/musat19.rs, "Query position p_q"). It holds for both M:
        // a label's position against its item's is (M p_i)ᵀ M p_i = 1 for J and for S.
        if sys.label_position == LabelPosition::Rotated {
            let m3 = Musat3::new(n, sys.query, sys.loss_scale);
            let th3 = [theta0[ALPHA3], theta0[BETA2], theta0[GAMMA3]];
            odes.push(solve_ode(
                "ode3",
                Box::new(m3),
                vec![2, 1, 0],
                &th3,
                t_ode,
                spec.threshold,
                ctx.solver,
            )?);
        } else {
            skipped.push(json!({"source": "ode3", "reason": "the 3-parameter closed form assumes the rotated label cue"}));
        }
    } else {
        for s in ["ode19", "ode3"] {
            skipped.push(json!({"source": s, "reason": "the reduced flows describe orthonormal data (docs/theory/musat.md §6); isotropic data are the Theorem-1 check of the full model"}));
        }
    }

    // ---- outputs.
    let names = event_names(spec.threshold);
    let query_position_text = match sys.query_position {
        QueryPosition::Fresh => "",
        QueryPosition::PQ => ", query position p_q",
    };
    let m_text = match sys.m {
        MMatrix::J => "",
        MMatrix::Swap => ", M = swap",
    };
    let table = compare_table(&runs, &odes, spec);
    let mut files = vec![out.write_csv("compare.csv", &table)?];
    let ode19 = odes.iter().find(|o| o.name == "ode19");
    let t_alpha19 = ode19.and_then(|o| o.solution.event_time(&names[2]));
    let mut sources = Vec::new();
    for r in &runs {
        let times = full_events(&r.rows, spec.threshold);
        let last = r.rows.last();
        let mut entry = json!({
            "source": "full",
            "batch": r.batch,
            "status": if r.error.is_some() { "diverged" } else { "complete" },
            "steps_done": last.map(|l| l.step),
            "events": events_json(&names, &times, steps_per_t),
            "final_loss": last.map(|l| l.loss),
            "final_residual": last.map(|l| l.res),
        });
        if let Some(e) = &r.error {
            entry["error"] = json!(e.to_string());
        }
        if let Some(o) = ode19 {
            let up_to = t_alpha19.unwrap_or(o.solution.t_end());
            entry["max_abs_difference_vs_ode19"] = max_abs_difference(&r.rows, &o.solution, up_to);
        }
        sources.push(entry);
    }
    for o in &odes {
        let times: Vec<Option<f64>> = names.iter().map(|nm| o.solution.event_time(nm)).collect();
        sources.push(json!({
            "source": o.name,
            "events": events_json(&names, &times, steps_per_t),
        }));
    }
    let doc = json!({
        "system": format!("musat, N = {n}, query {:?}, label position {:?}{}", sys.query, sys.label_position, query_position_text).to_lowercase() + m_text,
        "threshold": spec.threshold,
        "time": "pseudo-time t = eta * step / D; every event is also given as full-model steps = t * D / eta",
        "d": spec.d,
        "eta": spec.eta,
        "temperature": spec.temperature,
        "mask": mask_name(spec.mask),
        "steps_per_unit_t": steps_per_t,
        "event_location": {
            "ode19": "root finding on the Dormand-Prince dense output",
            "ode3": "root finding on the Dormand-Prince dense output",
            "full": format!("linear interpolation between checkpoints (every {} steps); the loss is each step's batch loss", spec.checkpoint_every),
        },
        "sources": sources,
        "not_run": skipped,
    });
    files.push(out.write_json("compare.json", &doc)?);
    let against = match odes.len() {
        0 => String::new(),
        1 => " vs the 19-parameter flow".to_string(),
        _ => " vs 19- and 3-parameter flows".to_string(),
    };
    let data_text = match spec.data {
        DataKind::Orthonormal => "",
        DataKind::Isotropic => ", isotropic data",
    };
    let mut attention_text = String::new();
    if spec.temperature != 1.0 {
        attention_text += &format!(", τ = {}", fmt_f64(spec.temperature));
    }
    if spec.mask == Mask::Inclusive {
        attention_text += ", inclusive mask";
    }
    let label = format!(
        "full model (D = {}, η = {}{attention_text}){against} — N = {n}, query {}{query_position_text}{m_text}{data_text}",
        spec.d,
        fmt_f64(spec.eta),
        match sys.query {
            crate::systems::musat::musat3::Query::Last => "last",
            crate::systems::musat::musat3::Query::Uniform => "uniform",
        }
    );
    files.extend(out.write_figure(
        "compare",
        &trajectories_figure(&runs, &odes, spec, t_ode, &label),
    )?);
    files.extend(out.write_figure("residual", &residual_figure(&runs, &label))?);
    files.extend(out.write_figure("coordinates", &coordinates_figure(&runs, &odes, &label))?);

    let mut console = vec![format!("compare: {label}; t_end = {}", fmt_f64(t_end))];
    console.push(format!(
        "  {:<14} {:>14} {:>14} {:>14} {:>14}",
        "source", "T_gamma3", "T_beta2", "T_alpha3", "T_loss_half"
    ));
    let fmt = |t: Option<f64>| t.map_or("not reached".into(), |v| format!("{v:.4}"));
    for (r, s) in runs.iter().zip(&sources) {
        let ev = &s["events"];
        console.push(format!(
            "  {:<14} {:>14} {:>14} {:>14} {:>14}   final residual {:.3e}",
            format!("full B={}", r.batch),
            fmt(ev[&names[0]]["t"].as_f64()),
            fmt(ev[&names[1]]["t"].as_f64()),
            fmt(ev[&names[2]]["t"].as_f64()),
            fmt(ev[&names[3]]["t"].as_f64()),
            r.rows.last().map_or(f64::NAN, |l| l.res.overall),
        ));
    }
    for o in &odes {
        console.push(format!(
            "  {:<14} {:>14} {:>14} {:>14} {:>14}",
            o.name,
            fmt(o.solution.event_time(&names[0])),
            fmt(o.solution.event_time(&names[1])),
            fmt(o.solution.event_time(&names[2])),
            fmt(o.solution.event_time(&names[3])),
        ));
    }

    let manifest = json!({
        "job": "compare",
        "d": spec.d,
        "batch": spec.batch,
        "eta": spec.eta,
        "steps": spec.steps,
        "t_end": t_end,
        "seed": spec.seed,
        "full_runs": runs.iter().map(|r| {
            let t_alpha = full_events(&r.rows, spec.threshold)[2];
            json!({
                "batch": r.batch,
                "status": if r.error.is_some() { "diverged" } else { "complete" },
                "train_seconds": r.seconds,
                "steps_per_second": r.rows.last().map(|l| l.step as f64 / r.seconds.max(1e-12)),
                "wall_seconds_to_T_alpha3": t_alpha.and_then(|t| wall_at(&r.rows, t)),
            })
        }).collect::<Vec<_>>(),
        "reduced_flows": odes.iter().map(|o| {
            let mut entry = o.solution.summary();
            entry["source"] = o.name.into();
            entry["solve_seconds"] = o.seconds.into();
            entry["wall_seconds_to_T_alpha3"] = o.seconds_to_alpha3.into();
            entry
        }).collect::<Vec<_>>(),
    });
    if let Some(e) = runs.iter().find_map(|r| r.error.as_ref()) {
        let source = e.clone();
        return Err(Error::Partial {
            manifest: Box::new(manifest),
            source: Box::new(source.into()),
        });
    }
    Ok(JobOutput {
        manifest,
        files,
        console,
        partial: false,
    })
}

/// Wall time at pseudo-time t, interpolated between checkpoints.
fn wall_at(rows: &[FullRow], t: f64) -> Option<f64> {
    let i = rows.iter().position(|r| r.t >= t)?;
    if i == 0 {
        return Some(rows[0].wall);
    }
    let (a, b) = (&rows[i - 1], &rows[i]);
    Some(a.wall + (t - a.t) / (b.t - a.t) * (b.wall - a.wall))
}
