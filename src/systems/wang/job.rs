//! Wang et al. (kind "rich"): the instance, the phase events of docs/theory/wang.md §8, the `[solve]`
//! job (trajectory with the loss split into its 4-gram and IH parts, located phase events, the
//! four phases) and the sweep point (T_G, T_IH and their ratio).
//!
//! Events (all located by root finding on the solver's dense output):
//! - `T_G`: ℓ_G ≤ g_fraction·ℓ_G(0) (the 4-gram is learned; the plateau starts);
//! - `T_plateau_end`: w ≥ θ_lo·w* (phase III starts);
//! - `T_IH`: w ≥ θ_IH·w* (the induction head emerges);
//! - `T_transition_end`: w ≥ θ_hi·w* (phase IV starts);
//! - `T_IH_loss`: ℓ_I ≤ ih_loss_fraction·ℓ_I^plat (the alternative loss-based T_IH of §8);
//! - `T_converged`: ℓ_I ≤ converge·ℓ_I^plat.

use crate::Error;
use crate::flow::{EventSpec, FlowProblem, GradientFlow, Quantity, Solution, Stage};
use crate::report::figure::{Axis, Band, Figure, LegendAt, Panel, Series, VLine, color};
use crate::report::short;
use crate::report::{Cell, Table};
use crate::scenario::SolverSpec;
use crate::systems::plugin::{Column, Instance, Param, PointRows, Role, SolveReport};
use crate::systems::wang::reduced::{OBS_LOSS_G, OBS_LOSS_I, OBS_W, RichFlow, RichMonteCarlo};
use crate::systems::wang::scenario::{Estimator, Layer1Mode, Paradigm, RichSpec};
use plotters::style::RGBColor;
use serde_json::json;

/// Event names, in the order they are declared.
pub const EVENT_NAMES: [&str; 6] = [
    "T_G",
    "T_plateau_end",
    "T_IH",
    "T_transition_end",
    "T_IH_loss",
    "T_converged",
];

/// The flow of this spec: the closed form or the Monte-Carlo estimate.
pub fn build_flow(spec: &RichSpec) -> Box<dyn GradientFlow> {
    let model = spec.model();
    match spec.estimator {
        Estimator::ClosedForm => Box::new(RichFlow::new(model)),
        Estimator::MonteCarlo => {
            Box::new(RichMonteCarlo::new(model, spec.mc_samples, spec.mc_seed))
        }
    }
}

fn label(spec: &RichSpec, with_l: bool) -> String {
    let mut parts = Vec::new();
    if with_l {
        parts.push(format!("L = {}", spec.l));
    }
    parts.push(format!("σ = {}", spec.sigma));
    parts.push(format!(
        "c_G = {}, c_I = {}, w* = {}",
        spec.c_g, spec.c_i, spec.w_star
    ));
    parts.push(
        if spec.kq_factorized {
            "(b) w_K·w_Q"
        } else {
            "(a) w_KQ"
        }
        .into(),
    );
    if spec.estimator == Estimator::MonteCarlo {
        parts.push(format!("Monte Carlo K = {}", spec.mc_samples));
    }
    format!("rich, {}", parts.join(", "))
}

/// The [`Instance`] of a rich spec (for the generic jobs: sweeps' labels, the phase job).
pub fn instance(spec: &RichSpec) -> Instance {
    let param = |column: &str, field: &str, value: f64| Param {
        column: column.into(),
        field: field.into(),
        value,
    };
    Instance {
        flow: build_flow(spec),
        init: spec.init.clone(),
        frozen: Vec::new(),
        time_scale: spec.time_scale(),
        emergence: Vec::new(),
        peak: None,
        label: label(spec, true),
        family: label(spec, false),
        params: vec![
            param("L", "system.L", spec.l as f64),
            param("sigma", "system.sigma", spec.sigma),
            param("c_G", "system.c_G", spec.c_g),
            param("c_I", "system.c_I", spec.c_i),
            param("w_star", "system.w_star", spec.w_star),
        ],
    }
}

/// The phase events of §8 for this spec, with levels fixed from the initial point.
pub fn phase_events(spec: &RichSpec, flow: &dyn GradientFlow) -> Vec<EventSpec> {
    let mut obs = vec![0.0; flow.observable_names().len()];
    flow.observables(&spec.init, &mut obs);
    let ev = &spec.events;
    let plat = spec.model().ih_plateau_loss();
    let ws = spec.w_star;
    vec![
        EventSpec::falls(
            EVENT_NAMES[0],
            Quantity::Observable(OBS_LOSS_G),
            ev.g_fraction * obs[OBS_LOSS_G],
        ),
        EventSpec::rises(
            EVENT_NAMES[1],
            Quantity::Observable(OBS_W),
            ev.theta_lo * ws,
        ),
        EventSpec::rises(
            EVENT_NAMES[2],
            Quantity::Observable(OBS_W),
            ev.theta_ih * ws,
        ),
        EventSpec::rises(
            EVENT_NAMES[3],
            Quantity::Observable(OBS_W),
            ev.theta_hi * ws,
        ),
        EventSpec::falls(
            EVENT_NAMES[4],
            Quantity::Observable(OBS_LOSS_I),
            ev.ih_loss_fraction * plat,
        ),
        EventSpec::falls(
            EVENT_NAMES[5],
            Quantity::Observable(OBS_LOSS_I),
            ev.converge * plat,
        ),
    ]
}

/// The horizon: `solver.t_max`, or `solver.horizon` × L/loss_scale.
pub fn horizon(spec: &RichSpec, solver: &SolverSpec) -> f64 {
    solver.t_max.unwrap_or(solver.horizon * spec.time_scale())
}

/// The schedule: one stage, or (layer-wise with a trained layer 1) p₁ alone for
/// `stage1_time`, then layer 2 with p₁ frozen.
pub fn stages(spec: &RichSpec, t_max: f64) -> Vec<Stage> {
    let dim = spec.init.len();
    match (spec.layer1, spec.paradigm, spec.stage1_time) {
        (Layer1Mode::Trained, Paradigm::Layerwise, Some(t1)) => {
            let p1 = dim - 1;
            vec![
                Stage::new("layer1", t1).frozen((0..dim).filter(|&i| i != p1)),
                Stage::new("layer2", t_max - t1).frozen([p1]),
            ]
        }
        _ => vec![Stage::new("main", t_max)],
    }
}

/// A validated problem for `flow` with the given events; `stop` = (margin, tail steps).
pub fn problem<'a>(
    spec: &RichSpec,
    flow: &'a dyn GradientFlow,
    solver: &SolverSpec,
    events: Vec<EventSpec>,
    stop: Option<(f64, u32)>,
) -> Result<FlowProblem<'a>, Error> {
    let mut b = FlowProblem::builder(flow)
        .init(&spec.init)
        .stages(stages(spec, horizon(spec, solver)))
        .solver(solver)
        .events(events);
    if let Some((margin, tail)) = stop {
        b = b.stop_after_events(margin).tail_steps(tail);
    }
    Ok(b.build()?)
}

/// The reference predictions of §7 for this spec: (T_G ≈ ln(1/σ)/(2c_G); T_IH: (b)
/// (N/(4c_I²w*)) ln(θ_IH w*/(σ_K σ_Q)), (a) Nθ_IH/(2c_I²)). They describe a small
/// initialisation: T_G needs σ < 1, T_IH an initial w below θ_IH·w*; otherwise `None`.
pub fn predictions(spec: &RichSpec) -> (Option<f64>, Option<f64>) {
    let n = (spec.l - 2) as f64;
    let t_g = (spec.sigma < 1.0).then(|| (1.0 / spec.sigma).ln() / (2.0 * spec.c_g));
    let th = spec.events.theta_ih;
    let w0 = spec.model().w(&spec.init).abs();
    if w0 >= th * spec.w_star {
        return (t_g, None);
    }
    let t_ih = if spec.kq_factorized {
        n / (4.0 * spec.c_i * spec.c_i * spec.w_star) * (th * spec.w_star / w0).ln()
    } else {
        n * th / (2.0 * spec.c_i * spec.c_i)
    };
    (t_g, Some(t_ih))
}

/// Shown for a §7 prediction that does not apply (the initialisation is not small).
const NOT_SMALL: &str = "n/a (not a small initialisation)";

/// The four phases of §8 as (name, start, end) from the located events (end of run when an
/// event did not happen).
pub fn phases(sol: &Solution) -> Vec<(&'static str, f64, f64)> {
    let end = sol.t_end();
    let at = |name: &str| sol.event_time(name).unwrap_or(end);
    let (t_g, t_lo, t_hi) = (at("T_G"), at("T_plateau_end"), at("T_transition_end"));
    let t_lo = t_lo.max(t_g);
    let t_hi = t_hi.max(t_lo);
    vec![
        ("I: lazy 4-gram", 0.0, t_g),
        ("II: plateau", t_g, t_lo),
        ("III: emergence", t_lo, t_hi),
        ("IV: convergence", t_hi, end),
    ]
}

/// `phases.csv`, the §8 diagnostics and the §7 predictions: what `[solve]` adds for kind
/// "rich" to the generic trajectory, events and figure.
pub fn extend_solve(
    spec: &RichSpec,
    flow: &dyn GradientFlow,
    sol: &Solution,
    report: &mut SolveReport,
) -> Result<(), Error> {
    let ph = phases(sol);
    let mut pt = Table::new(["phase", "t_start", "t_end"]);
    for (name, a, b) in &ph {
        pt.push(vec![(*name).into(), (*a).into(), (*b).into()]);
    }
    report.files.push(report.out.write_csv("phases.csv", &pt)?);
    let diag = diagnostics(spec, flow, sol);
    let predicted = |key: &str| {
        diag[key]
            .as_f64()
            .map_or(format!(": {NOT_SMALL}"), |t| format!(" ≈ {}", short(t)))
    };
    report.console.push(format!(
        "  §7 predictions: T_G{}, T_IH{}; T_IH/(L-2) = {}; loss_G·t at the end = {} \
         (→ 1/4); (w_G, p) monotone in phase I: {}",
        predicted("prediction_T_G"),
        predicted("prediction_T_IH"),
        diag["T_IH_over_N"].as_f64().map_or("-".into(), short),
        short(diag["loss_G_times_t_at_end"].as_f64().unwrap_or(f64::NAN)),
        diag["phase1_monotone_w_G_and_p"]
    ));
    let at_start: Vec<&str> = sol
        .events()
        .iter()
        .filter(|e| e.t == Some(0.0))
        .map(|e| e.name.as_str())
        .collect();
    if !at_start.is_empty() {
        report.console.push(format!(
            "  note: {} already hold at t = 0: the initial state is past their thresholds \
             (system.sigma is not small)",
            at_start.join(", ")
        ));
    }
    report.manifest["phases"] = ph
        .iter()
        .map(|(n, a, b)| json!({"phase": n, "t_start": a, "t_end": b}))
        .collect();
    report.manifest["diagnostics"] = diag;
    Ok(())
}

/// §8 diagnostics: ℓ_G·t at the end of the run (→ 1/4 on the slow manifold, §6), T_IH/N, the
/// §7 predictions, and whether w_G and p rise monotonically through phase I (checked on 2001
/// points of the dense output in [0, T_G]).
fn diagnostics(spec: &RichSpec, flow: &dyn GradientFlow, sol: &Solution) -> serde_json::Value {
    let mut obs = vec![0.0; flow.observable_names().len()];
    let end = sol.t_end();
    let th_end = sol.state_at(end).expect("t_end is in the solution");
    flow.observables(&th_end, &mut obs);
    let (pg, pih) = predictions(spec);
    let n = (spec.l - 2) as f64;
    let t_ih = sol.event_time("T_IH");
    let t_g = sol.event_time("T_G");
    let monotone = t_g.map(|tg| {
        let lay = spec.model().layout();
        let mut prev = sol.state_at(0.0).expect("t = 0");
        (1..=2000).all(|i| {
            let th = sol
                .state_at(tg * i as f64 / 2000.0)
                .expect("inside the run");
            let ok = th[lay.w_g] >= prev[lay.w_g] - 1e-12 && th[lay.p] >= prev[lay.p] - 1e-12;
            prev = th;
            ok
        })
    });
    json!({
        "loss_G_times_t_at_end": obs[OBS_LOSS_G] * end,
        "T_IH_over_N": t_ih.map(|t| t / n),
        "T_IH_over_L": t_ih.map(|t| t / spec.l as f64),
        "T_IH_over_T_G": t_ih.zip(t_g).map(|(a, b)| a / b),
        "prediction_T_G": pg.map(|t| t * spec.loss_scale.recip()),
        "prediction_T_IH": pih.map(|t| t * spec.loss_scale.recip()),
        "phase1_monotone_w_G_and_p": monotone,
        "ih_plateau_loss": spec.model().ih_plateau_loss(),
    })
}

pub fn trajectory_figure(
    spec: &RichSpec,
    inst: &Instance,
    sol: &Solution,
    table: &Table,
    phases: &[(&'static str, f64, f64)],
    spacing: crate::scenario::Spacing,
) -> Figure {
    let log_t = spacing == crate::scenario::Spacing::Log;
    let t_axis = || {
        if log_t {
            Axis::log("t (training time, log scale)")
        } else {
            Axis::linear("t (training time)")
        }
    };
    let col = |name: &str| table.header.iter().position(|h| h == name);
    let series_of = |c: usize| -> Vec<(f64, f64)> {
        table
            .rows
            .iter()
            .filter_map(|r| match (&r[0], &r[c]) {
                (Cell::Num(t), Cell::Num(v)) if !log_t || *t > 0.0 => Some((*t, *v)),
                _ => None,
            })
            .collect()
    };
    let band_colors = [
        RGBColor(0, 158, 115),
        RGBColor(120, 120, 120),
        RGBColor(213, 94, 0),
        RGBColor(0, 114, 178),
    ];
    let bands: Vec<Band> = phases
        .iter()
        .zip(band_colors)
        .filter(|((_, a, b), _)| b > a)
        .map(|((name, a, b), c)| Band {
            x0: *a,
            x1: *b,
            label: format!("phase {name}"),
            color: c,
        })
        .collect();
    let vlines: Vec<VLine> = sol
        .events()
        .iter()
        .filter(|e| matches!(e.name.as_str(), "T_G" | "T_IH" | "T_converged"))
        .enumerate()
        .filter_map(|(i, e)| {
            e.t.filter(|&t| !log_t || t > 0.0).map(|t| VLine {
                x: t,
                label: format!("{} = {}", e.name, short(t)),
                color: [color(7), color(3), color(6)][i % 3],
            })
        })
        .collect();
    let plat = spec.model().ih_plateau_loss();
    // (a) the loss and its parts, log-log, with the 1/(4t) tail of §6 and the IH plateau.
    let mut losses = Panel::new(
        "loss: 4-gram and induction-head parts",
        t_axis(),
        Axis::log("loss (log scale)"),
    );
    for (i, name) in ["loss", "loss_G", "loss_I"].iter().enumerate() {
        if let Some(c) = col(name) {
            let label = match *name {
                "loss" => "ℓ (total)",
                "loss_G" => "ℓ_G (4-gram part)",
                _ => "ℓ_I (IH part)",
            };
            losses.series.push(Series::line(
                label,
                series_of(c),
                [color(7), color(2), color(1)][i],
            ));
        }
    }
    let end = sol.t_end();
    let t_tail = sol.event_time("T_G").unwrap_or(1.0).max(1e-9);
    losses.series.push(Series::dashed(
        "1/(4t) (§6 tail of ℓ_G)",
        (0..=20)
            .map(|i| {
                let t = t_tail * (end / t_tail).powf(i as f64 / 20.0);
                (t, 1.0 / (4.0 * t))
            })
            .collect(),
        color(2),
    ));
    if plat > 0.0 {
        losses.series.push(Series::dashed(
            "ℓ_I plateau (§7)",
            vec![(t_tail, plat), (end, plat)],
            color(1),
        ));
    }
    let unlabelled: Vec<Band> = bands
        .iter()
        .map(|b| Band {
            label: String::new(),
            ..b.clone()
        })
        .collect();
    // The IH loss collapses to rounding level after the transition: keep the axis on the
    // scales that carry information (down to 1e-3 of the smallest of ℓ_G(end), ℓ_I^plat).
    let last = |name: &str| {
        col(name)
            .and_then(|c| series_of(c).last().map(|p| p.1))
            .unwrap_or(f64::NAN)
    };
    let top = col("loss")
        .map(|c| series_of(c).iter().fold(0.0f64, |m, p| m.max(p.1)))
        .unwrap_or(1.0);
    let floor = 1e-3 * last("loss_G").min(if plat > 0.0 { plat } else { f64::INFINITY });
    if floor.is_finite() && floor > 0.0 && top > floor {
        losses.y = losses.y.clone().with_range(floor, 2.0 * top);
    }
    losses.bands = unlabelled.clone();
    losses.vlines = vlines.clone();
    losses.legend = LegendAt::LowerLeft;
    // (b) the value-like coordinates and w.
    let flow = inst.flow.as_ref();
    let mut params = Panel::new("parameters and phases", t_axis(), Axis::linear("value"));
    for (i, name) in flow.names().iter().enumerate() {
        if name == "p" || name == "p1" {
            continue;
        }
        if let Some(c) = col(name) {
            params
                .series
                .push(Series::line(name.clone(), series_of(c), color(i)));
        }
    }
    if let Some(c) = col("w").filter(|_| spec.kq_factorized) {
        params
            .series
            .push(Series::line("w = w_K·w_Q", series_of(c), color(7)));
    }
    params.bands = bands.clone();
    params.vlines = vlines.clone();
    // (c) the slopes.
    let mut slopes = Panel::new("Alibi slopes", t_axis(), Axis::linear("slope"));
    for (i, name) in ["p", "p1"].iter().enumerate() {
        if let Some(c) = col(name) {
            slopes.series.push(Series::line(
                format!(
                    "{name} ({})",
                    if i == 0 { "4-gram head" } else { "layer 1" }
                ),
                series_of(c),
                color(1 + 4 * i),
            ));
        }
    }
    slopes.bands = unlabelled;
    slopes.legend = LegendAt::UpperLeft;
    slopes.vlines = vlines.clone();
    // (d) w against linear t up to the end of the transition: exponential growth on the plateau
    // in (b) (log scale), linear growth in (a) (§7), with the §7 growth law.
    let n = (spec.l - 2) as f64;
    let t_ih = sol.event_time("T_IH").unwrap_or(end);
    let t_hi = sol
        .event_time("T_transition_end")
        .map_or(end, |t| (1.5 * t).min(end));
    let w0 = flow_w0(spec);
    let factorized = spec.kq_factorized;
    let mut growth = Panel::new(
        if factorized {
            "w = w_K·w_Q: exponential growth on the plateau"
        } else {
            "w = w_KQ: linear growth on the plateau"
        },
        Axis::linear("t (training time)").with_range(0.0, t_hi),
        if factorized {
            Axis::log("w (log scale)")
        } else {
            Axis::linear("w")
        },
    );
    if let Some(c) = col("w") {
        let pts: Vec<(f64, f64)> = table
            .rows
            .iter()
            .filter_map(|r| match (&r[0], &r[c]) {
                (Cell::Num(t), Cell::Num(v)) if *t <= t_hi && (!factorized || *v > 0.0) => {
                    Some((*t, *v))
                }
                _ => None,
            })
            .collect();
        growth.series.push(Series::line("w", pts, color(7)));
    }
    let ls = spec.loss_scale;
    if factorized && w0 > 0.0 {
        let rate = 4.0 * spec.c_i * spec.c_i * spec.w_star / n * ls;
        growth.series.push(Series::dashed(
            "§7 (b): σ_Kσ_Q·exp(4c_I²w* t/N)",
            (0..=40)
                .map(|i| {
                    let t = t_ih * i as f64 / 40.0;
                    (t, w0 * (rate * t).exp())
                })
                .collect(),
            color(3),
        ));
    } else if !factorized {
        let rate = 2.0 * spec.c_i * spec.c_i * spec.w_star / n * ls;
        growth.series.push(Series::dashed(
            "§7 (a): w(0) + 2c_I²w* t/N",
            vec![(0.0, w0), (t_ih, w0 + rate * t_ih)],
            color(3),
        ));
    }
    growth.vlines.push(VLine {
        x: t_ih,
        label: format!("T_IH = {}", short(t_ih)),
        color: color(3),
    });
    growth.legend = if factorized {
        LegendAt::LowerRight
    } else {
        LegendAt::UpperLeft
    };
    Figure::grid(2, 2, vec![losses, params, slopes, growth]).titled(inst.label.clone())
}

fn flow_w0(spec: &RichSpec) -> f64 {
    spec.model().w(&spec.init)
}

/// The columns of a rich sweep point: `L,sigma,c_G,c_I,w_star,T_G,T_IH,ratio`.
pub fn sweep_columns() -> Vec<Column> {
    let param = |name: &str| {
        Column::new(
            name,
            Role::Param {
                field: format!("system.{name}"),
            },
        )
    };
    vec![
        param("L"),
        param("sigma"),
        param("c_G"),
        param("c_I"),
        param("w_star"),
        Column::new("T_G", Role::Time),
        Column::new("T_IH", Role::Time),
        Column::new("ratio", Role::Value),
    ]
}

/// One sweep point: a solve that stops as soon as T_G and T_IH are located; one row with
/// ratio = T_IH/T_G (empty when either was not reached within the horizon).
pub fn sweep_point(spec: &RichSpec, solver: &SolverSpec) -> Result<PointRows, Error> {
    let flow = build_flow(spec);
    let events: Vec<EventSpec> = phase_events(spec, flow.as_ref())
        .into_iter()
        .filter(|e| e.name == "T_G" || e.name == "T_IH")
        .collect();
    let sol = problem(spec, flow.as_ref(), solver, events, Some((0.0, 5000)))?.solve()?;
    let (t_g, t_ih) = (sol.event_time("T_G"), sol.event_time("T_IH"));
    let ratio = t_g.zip(t_ih).map(|(g, i)| i / g);
    let row = vec![
        Cell::Num(spec.l as f64),
        spec.sigma.into(),
        spec.c_g.into(),
        spec.c_i.into(),
        spec.w_star.into(),
        t_g.into(),
        t_ih.into(),
        ratio.into(),
    ];
    Ok(PointRows {
        rows: vec![row],
        stats: sol.summary(),
    })
}
