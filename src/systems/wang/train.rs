//! Job `train` for kind "rich": the reduced flow, online SGD on the six parameters (§8) and the
//! full two-layer transformer (§9), on one time axis t = η·steps (§10).
//!
//! Outputs: `train_sgd.csv`, `train_full.csv` (checkpoints, log-spaced in steps),
//! `train_events.csv` (the phase events of every model: the flow's located on its dense output,
//! the trained models' by linear interpolation between checkpoints) and `train.png`/`.svg`.
//!
//! Losses of the trained models are measured on a fixed evaluation batch (`eval_samples`
//! sequences from `eval_seed`): for SGD as the Monte-Carlo flow does (ℓ_G exact, ℓ_I = mean E²,
//! cross = mean 2DE); for the full model the total, with ℓ_G evaluated exactly at the read-off
//! coordinates (w_G, p, p₁) of its 4-gram head.

use crate::Error;
use crate::flow::{FlowProblem, GradientFlow};
use crate::numerics::normal::Gaussian;
use crate::report::figure::{Axis, Figure, LegendAt, Panel, Series, VLine, color};
use crate::report::short;
use crate::report::{Cell, Table, fmt_f64};
use crate::scenario::Spacing;
use crate::systems::plugin::{JobContext, JobOutput, sample_times};
use crate::systems::wang::full::{FullModel, FullShape, sample_batch};
use crate::systems::wang::job::{build_flow, horizon, phase_events, stages};
use crate::systems::wang::reduced::{
    KeyQuery, OBS_LOSS_G, OBS_LOSS_I, OBS_W, RichModel, RichMonteCarlo,
};
use crate::systems::wang::scenario::{
    FullInit, FullOptimizer, FullSpec, Layer1Mode, Paradigm, RichSpec, RichTrainSpec, TrainModel,
};
use crate::systems::wang::sgd::{
    FullSettings, Optimizer, SgdSettings, StageMask, checkpoint_steps, train_full, train_sgd,
};
use crate::train::crossing::{Direction, first_crossing};
use serde_json::json;

/// A checkpoint series of one trained model: times and the watched quantities.
struct Track {
    model: &'static str,
    t: Vec<f64>,
    w: Vec<f64>,
    w_g: Vec<f64>,
    v: Vec<f64>,
    loss: Vec<f64>,
    loss_g: Vec<f64>,
    /// None for the full model (no IH part of its own).
    loss_i: Option<Vec<f64>>,
}

impl Track {
    /// An empty track; `with_loss_i` for models that have an IH loss of their own.
    fn new(model: &'static str, with_loss_i: bool) -> Self {
        Track {
            model,
            t: Vec::new(),
            w: Vec::new(),
            w_g: Vec::new(),
            v: Vec::new(),
            loss: Vec::new(),
            loss_g: Vec::new(),
            loss_i: with_loss_i.then(Vec::new),
        }
    }
}

/// The first time the checkpointed series `f` (at times `t`) reaches `level`.
fn crossing(t: &[f64], f: &[f64], level: f64, rises: bool) -> Option<f64> {
    let direction = if rises {
        Direction::Rises
    } else {
        Direction::Falls
    };
    first_crossing(t.iter().copied().zip(f.iter().copied()), level, direction)
}

fn events_of(spec: &RichSpec, tr: &Track) -> Vec<(&'static str, Option<f64>)> {
    let e = &spec.events;
    let ws = spec.w_star;
    let plat = spec.model().ih_plateau_loss();
    let mut out = vec![
        (
            "T_G",
            crossing(&tr.t, &tr.loss_g, e.g_fraction * tr.loss_g[0], false),
        ),
        (
            "T_plateau_end",
            crossing(&tr.t, &tr.w, e.theta_lo * ws, true),
        ),
        ("T_IH", crossing(&tr.t, &tr.w, e.theta_ih * ws, true)),
        (
            "T_transition_end",
            crossing(&tr.t, &tr.w, e.theta_hi * ws, true),
        ),
    ];
    if let Some(li) = &tr.loss_i {
        out.push((
            "T_IH_loss",
            crossing(&tr.t, li, e.ih_loss_fraction * plat, false),
        ));
        out.push(("T_converged", crossing(&tr.t, li, e.converge * plat, false)));
    }
    out
}

/// Stage masks (by time) for the six-parameter coordinates, from the flow's schedule.
fn reduced_stage_masks(spec: &RichSpec, t_max: f64) -> Vec<StageMask> {
    let mut t = 0.0;
    stages(spec, t_max)
        .into_iter()
        .map(|s| {
            t += s.duration;
            StageMask {
                t_end: t,
                frozen: s.frozen,
            }
        })
        .collect()
}

/// Stage masks for the full model's parameters: layer-wise with a fixed or copied layer 1
/// freezes layer 1; layer-wise with a trained layer 1 trains layer 1 alone for stage1_time,
/// then the rest; joint trains everything.
fn full_stage_masks(spec: &RichSpec, model: &FullModel, t_max: f64) -> Vec<StageMask> {
    let lay = &model.layout;
    let layer1_end = lay.layer2.first().map_or(lay.readout, |g| g.wq);
    let layer1: Vec<usize> = (0..layer1_end).collect();
    let rest: Vec<usize> = (layer1_end..lay.len).collect();
    match (spec.paradigm, spec.layer1, spec.stage1_time) {
        (Paradigm::Joint, _, _) => vec![StageMask {
            t_end: t_max,
            frozen: vec![],
        }],
        (Paradigm::Layerwise, Layer1Mode::Trained, Some(t1)) => vec![
            StageMask {
                t_end: t1,
                frozen: rest,
            },
            StageMask {
                t_end: t_max,
                frozen: layer1,
            },
        ],
        _ => vec![StageMask {
            t_end: t_max,
            frozen: layer1,
        }],
    }
}

/// The full model's initial parameters (module doc of `model::rich_full` for the embedding).
fn full_init(spec: &RichSpec, full: &FullSpec, model: &FullModel, seed: u64) -> Vec<f64> {
    let rm = spec.model();
    let lay = rm.layout();
    let th = &spec.init;
    let p1 = match spec.layer1 {
        Layer1Mode::ExactCopy => full.copy_slope,
        _ => spec.p1.expect("validated"),
    };
    let mut g = Gaussian::new(seed);
    match full.init {
        FullInit::Embedded => {
            let (wk, wq) = match rm.kq {
                KeyQuery::Factorized => (th[lay.k], th[lay.q]),
                KeyQuery::Single => (1.0, th[lay.k]),
            };
            let mut p = model.embed(th[lay.w_g], th[lay.p], th[lay.v], wk, wq, p1);
            if full.noise > 0.0 {
                for v in &mut p {
                    *v += full.noise * g.sample();
                }
            }
            p
        }
        FullInit::Random => {
            let mut p = vec![0.0; model.n_params()];
            for v in &mut p {
                *v = spec.sigma * g.sample();
            }
            for h in &model.layout.layer1 {
                p[h.slope] = p1;
            }
            p
        }
    }
}

pub fn run(spec: &RichSpec, tspec: &RichTrainSpec, ctx: &JobContext) -> Result<JobOutput, Error> {
    let (out, solver) = (ctx.out, ctx.solver);
    let model = spec.model();
    let t_max = tspec.t_max.unwrap_or_else(|| horizon(spec, solver));
    let started = std::time::Instant::now();
    // The reduced flow, to the same horizon.
    let flow = build_flow(spec);
    let events = phase_events(spec, flow.as_ref());
    let sol = FlowProblem::builder(flow.as_ref())
        .init(&spec.init)
        .stages(stages(spec, t_max))
        .solver(solver)
        .events(events)
        .build()?
        .solve()?;
    let mut ev_table = Table::new(["model", "event", "t", "method"]);
    for e in sol.events() {
        ev_table.push(vec![
            "flow".into(),
            e.name.as_str().into(),
            e.t.into(),
            "dense_output".into(),
        ]);
    }
    let ode_times = sample_times(sol.t_end(), 400, Spacing::Log);
    let mut ode = Track::new("flow", true);
    let rl = model.layout();
    let mut obs = vec![0.0; flow.observable_names().len()];
    for &t in &ode_times {
        let th = sol.state_at(t).expect("inside the run");
        flow.observables(&th, &mut obs);
        ode.t.push(t);
        ode.w.push(obs[OBS_W]);
        ode.w_g.push(th[rl.w_g]);
        ode.v.push(th[rl.v]);
        ode.loss.push(flow.loss(&th));
        ode.loss_g.push(obs[OBS_LOSS_G]);
        if let Some(li) = ode.loss_i.as_mut() {
            li.push(obs[OBS_LOSS_I]);
        }
    }
    let mut files = Vec::new();
    let mut tracks = Vec::new();
    let mut manifest = json!({
        "job": "train",
        "t_max": t_max,
        "time_axis": "t = eta * steps",
        "flow": sol.summary(),
    });
    if tspec.models.contains(&TrainModel::Sgd) {
        let (table, track, secs) = run_sgd(spec, &model, tspec, t_max)?;
        files.push(out.write_csv("train_sgd.csv", &table)?);
        manifest["sgd"] = json!({"steps": (t_max / tspec.eta).round(), "seconds": secs});
        tracks.push(track);
    }
    if let Some(full) = tspec
        .full
        .as_ref()
        .filter(|_| tspec.models.contains(&TrainModel::Full))
    {
        let (table, track, secs, n_params) = run_full(spec, &model, tspec, full, t_max)?;
        files.push(out.write_csv("train_full.csv", &table)?);
        manifest["full"] = json!({
            "steps": (t_max / full.eta).round(),
            "parameters": n_params,
            "seconds": secs,
        });
        tracks.push(track);
    }
    let mut console = vec![format!(
        "train: {} — t_max = {} (t = eta·steps)",
        crate::systems::wang::job::instance(spec).label,
        fmt_f64(t_max)
    )];
    let flow_events: Vec<(&str, Option<f64>)> = sol
        .events()
        .iter()
        .map(|e| (e.name.as_str(), e.t))
        .collect();
    let show = |name: &str, evs: &[(&str, Option<f64>)]| {
        evs.iter()
            .find(|e| e.0 == name)
            .and_then(|e| e.1)
            .map_or("not reached".to_string(), short)
    };
    console.push(format!(
        "  {:<6} T_G = {:<12} T_IH = {}",
        "flow",
        show("T_G", &flow_events),
        show("T_IH", &flow_events)
    ));
    let mut event_rows = Vec::new();
    for tr in &tracks {
        let evs = events_of(spec, tr);
        console.push(format!(
            "  {:<6} T_G = {:<12} T_IH = {}   (checkpoint interpolation)",
            tr.model,
            show("T_G", &evs),
            show("T_IH", &evs)
        ));
        for (name, t) in &evs {
            ev_table.push(vec![
                tr.model.into(),
                (*name).into(),
                (*t).into(),
                "checkpoint_interpolation".into(),
            ]);
            event_rows.push(json!({"model": tr.model, "event": name, "t": t}));
        }
    }
    files.push(out.write_csv("train_events.csv", &ev_table)?);
    files.extend(out.write_figure(
        "train",
        &train_figure(spec, &ode, &tracks, &sol_events_ih(&flow_events), tspec),
    )?);
    manifest["events"] = json!(event_rows);
    manifest["seconds"] = json!(started.elapsed().as_secs_f64());
    Ok(JobOutput {
        manifest,
        files,
        console,
        partial: false,
    })
}

fn sol_events_ih(evs: &[(&str, Option<f64>)]) -> Option<f64> {
    evs.iter().find(|e| e.0 == "T_IH").and_then(|e| e.1)
}

type Trained = (Table, Track, f64);

fn run_sgd(
    spec: &RichSpec,
    model: &RichModel,
    tspec: &RichTrainSpec,
    t_max: f64,
) -> Result<Trained, Error> {
    let steps = (t_max / tspec.eta).round().max(1.0) as u64;
    let cps = checkpoint_steps(steps, tspec.checkpoints);
    let eval = RichMonteCarlo::new(*model, tspec.eval_samples, tspec.eval_seed);
    let mut header = vec!["step".to_string(), "t".into()];
    header.extend(model.names());
    header.extend(["w", "loss", "loss_G", "loss_I", "loss_cross"].map(String::from));
    let mut table = Table::new(header);
    let mut track = Track::new("sgd", true);
    let lay = model.layout();
    let mut obs = [0.0; 4];
    let started = std::time::Instant::now();
    train_sgd::<Error>(
        model,
        &spec.init,
        &reduced_stage_masks(spec, t_max),
        &SgdSettings {
            eta: tspec.eta,
            batch: tspec.batch,
            steps,
            seed: tspec.seed,
        },
        &cps,
        |step, t, th| {
            eval.observables(th, &mut obs);
            let loss = obs[OBS_LOSS_G] + obs[OBS_LOSS_I] + obs[3];
            let mut row: Vec<Cell> = vec![Cell::Int(step as i64), t.into()];
            row.extend(th.iter().map(|&v| Cell::Num(v)));
            row.extend([obs[OBS_W], loss, obs[OBS_LOSS_G], obs[OBS_LOSS_I], obs[3]].map(Cell::Num));
            table.push(row);
            track.t.push(t);
            track.w.push(obs[OBS_W]);
            track.w_g.push(th[lay.w_g]);
            track.v.push(th[lay.v]);
            track.loss.push(loss);
            track.loss_g.push(obs[OBS_LOSS_G]);
            track
                .loss_i
                .as_mut()
                .expect("sgd has ℓ_I")
                .push(obs[OBS_LOSS_I]);
            Ok(())
        },
    )?;
    Ok((table, track, started.elapsed().as_secs_f64()))
}

fn run_full(
    spec: &RichSpec,
    model: &RichModel,
    tspec: &RichTrainSpec,
    full: &FullSpec,
    t_max: f64,
) -> Result<(Table, Track, f64, usize), Error> {
    let shape = FullShape {
        l: spec.l,
        d: full.d,
        d_head: full.d_head,
        heads1: full.heads1,
        heads2: full.heads2,
    };
    let fm = FullModel::new(shape, *model);
    let init = full_init(spec, full, &fm, tspec.seed.wrapping_add(1));
    let steps = (t_max / full.eta).round().max(1.0) as u64;
    let cps = checkpoint_steps(steps, tspec.checkpoints);
    let eval_batch = sample_batch(spec.l, tspec.eval_samples, tspec.eval_seed);
    let mut header: Vec<String> = [
        "step",
        "t",
        "loss",
        "w_G",
        "p",
        "v",
        "w",
        "p1",
        "loss_G",
        "kq_norm",
        "prev_mass",
        "corr_G",
        "corr_I",
        "entropy_IH",
    ]
    .map(String::from)
    .to_vec();
    for h in 0..full.heads2 {
        for c in ["slope", "value_G", "value_I", "w"] {
            header.push(format!("{c}_h{h}"));
        }
    }
    let mut table = Table::new(header);
    let mut track = Track::new("full", false);
    let started = std::time::Instant::now();
    train_full::<Error>(
        &fm,
        &init,
        &full_stage_masks(spec, &fm, t_max),
        &FullSettings {
            eta: full.eta,
            batch: tspec.batch,
            steps,
            seed: tspec.seed,
            optimizer: match full.optimizer {
                FullOptimizer::Gd => Optimizer::Gd,
                FullOptimizer::Adam => Optimizer::Adam,
            },
        },
        &cps,
        |step, t, th, engine| {
            let ro = fm.readoff(th);
            let stats = engine.evaluate(&fm, th, &eval_batch);
            let lg = model.loss_scale * model.four_gram(ro.w_g, ro.p, Some(ro.p1), true).loss;
            let mut row: Vec<Cell> = vec![Cell::Int(step as i64), t.into()];
            row.extend(
                [
                    stats.loss,
                    ro.w_g,
                    ro.p,
                    ro.v,
                    ro.w,
                    ro.p1,
                    lg,
                    ro.kq_norm,
                    stats.prev_mass,
                    stats.corr_g,
                    stats.corr_i,
                    stats.entropy_ih,
                ]
                .map(Cell::Num),
            );
            for h in &ro.heads {
                row.extend(h.iter().map(|&v| Cell::Num(v)));
            }
            table.push(row);
            track.t.push(t);
            track.w.push(ro.w);
            track.w_g.push(ro.w_g);
            track.v.push(ro.v);
            track.loss.push(stats.loss);
            track.loss_g.push(lg);
            Ok(())
        },
    )?;
    Ok((table, track, started.elapsed().as_secs_f64(), fm.n_params()))
}

fn train_figure(
    spec: &RichSpec,
    ode: &Track,
    tracks: &[Track],
    ode_t_ih: &Option<f64>,
    tspec: &RichTrainSpec,
) -> Figure {
    let t_axis = || Axis::log("t = η·steps (log scale)");
    let pos = |tr: &Track, ys: &[f64]| -> Vec<(f64, f64)> {
        tr.t.iter()
            .zip(ys)
            .filter(|(t, _)| **t > 0.0)
            .map(|(t, y)| (*t, *y))
            .collect()
    };
    let label = |m: &str| match m {
        "flow" => "reduced flow (ODE)".to_string(),
        "sgd" => format!(
            "SGD, six parameters (B = {}, η = {})",
            tspec.batch, tspec.eta
        ),
        _ => {
            let f = tspec.full.as_ref().expect("full settings");
            format!(
                "full transformer (d = {}, heads {}+{}, η = {})",
                f.d, f.heads1, f.heads2, f.eta
            )
        }
    };
    let all: Vec<&Track> = std::iter::once(ode).chain(tracks.iter()).collect();
    let colors = [color(7), color(1), color(0)];
    let mut panels = Vec::new();
    for (title, ylabel, pick, log_y) in [
        // w grows by decades on the plateau: a log axis (points with w ≤ 0, which it cannot
        // show, are left out below).
        (
            "IH logit scale w",
            "w (log scale; full model: (W_Q e₁)·(W_K u), head 1)",
            0,
            true,
        ),
        ("loss", "loss (log scale)", 1, true),
        ("4-gram value weight w_G", "w_G", 2, false),
        ("IH value weight v", "v", 3, false),
    ] {
        let y = if log_y {
            Axis::log(ylabel)
        } else {
            Axis::linear(ylabel)
        };
        let mut p = Panel::new(title, t_axis(), y);
        for (k, tr) in all.iter().enumerate() {
            let ys = match pick {
                0 => &tr.w,
                1 => &tr.loss,
                2 => &tr.w_g,
                _ => &tr.v,
            };
            let mut pts = pos(tr, ys);
            if log_y {
                // A log axis has no place for w ≤ 0 (or a non-finite value): the line breaks there.
                for q in &mut pts {
                    if !(q.1 > 0.0 && q.1.is_finite()) {
                        q.1 = f64::NAN;
                    }
                }
            }
            p.series
                .push(Series::line(label(tr.model), pts, colors[k % 3]));
        }
        if pick == 0 {
            let level = spec.events.theta_ih * spec.w_star;
            let (t0, t1) = (ode.t[1].max(1e-9), *ode.t.last().expect("samples"));
            p.series.push(Series::dashed(
                format!("θ_IH·w* = {}", short(level)),
                vec![(t0, level), (t1, level)],
                color(6),
            ));
        }
        if let Some(t) = ode_t_ih {
            p.vlines.push(VLine {
                x: *t,
                label: format!("flow T_IH = {}", short(*t)),
                color: color(3),
            });
        }
        p.legend = if pick == 1 {
            LegendAt::LowerLeft
        } else {
            LegendAt::UpperLeft
        };
        panels.push(p);
    }
    let label = crate::systems::wang::job::instance(spec).label;
    Figure::grid(2, 2, panels).titled(format!(
        "Flow, SGD and full model — {}",
        label.trim_start_matches("rich, ")
    ))
}
