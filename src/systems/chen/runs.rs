//! What the `[gih]` job computes, before anything is written: the χ² MI, the reduced flow
//! through the stages, and the models trained by GD beside it (the full TF(M, H, d, D) and GD on
//! (c, w, a) itself, [`gd`]).

use crate::Error;
use crate::flow::{FlowProblem, GradientFlow, Stage};
use crate::report::progress::Progress;
use crate::report::{Cell, Table};
use crate::scenario::SolverSpec;
use crate::systems::chen::common::{Layout, simplex_weights};
use crate::systems::chen::events::*;
use crate::systems::chen::markov::Sequences;
use crate::systems::chen::mi::{MiEstimate, MiSpec, chi2_mi};
use crate::systems::chen::reduced::{Block, GihFlow, replicator, replicator_rate};
use crate::systems::chen::scenario::{GdData, GihFullSpec, GihJobSpec, GihSpec};
use crate::systems::chen::setup::{data, init, model, prior};
use crate::systems::chen::transformer::{FullSettings, GihTransformer};
use crate::train::checkpoints::log_spaced;
use crate::train::{FlatLearner, Guard, Optimizer, Stage as GdStage, train as train_gd};

mod gd;
pub use gd::{FreshBatches, GdRun, GdSource, batch_seed};

// ---------------------------------------------------------------------------------------------
// Runs

/// The reduced flow's results.
pub struct ReducedRun {
    pub table: Table,
    pub replicator: Option<Table>,
    pub events: Vec<EventRow>,
    pub solution_stats: serde_json::Value,
    pub seconds: f64,
    pub final_theta: Vec<f64>,
    pub final_loss: f64,
    pub final_val_loss: f64,
}

/// The full model's results.
pub struct FullRun {
    pub table: Table,
    pub events: Vec<EventRow>,
    pub steps: u64,
    pub seconds: f64,
    pub final_theta: Vec<f64>,
    pub final_loss: f64,
    pub final_val_loss: f64,
}

/// Everything the job computes.
pub struct GihRun {
    pub mi: MiEstimate,
    pub mi_seconds: f64,
    pub n_train: usize,
    pub n_val: usize,
    pub reduced: ReducedRun,
    pub full: Option<FullRun>,
    /// GD (or SGD on fresh batches) on the reduced model, `[gih.gd]`.
    pub gd: Option<GdRun>,
    /// (name, start, end) of every stage on the time axis.
    pub stages: Vec<(String, f64, f64)>,
}

impl GihRun {
    /// Every event: the reduced flow's, the full model's, then GD's.
    pub fn events(&self) -> impl Iterator<Item = &EventRow> {
        self.reduced
            .events
            .iter()
            .chain(self.full.iter().flat_map(|f| f.events.iter()))
            .chain(self.gd.iter().flat_map(|g| g.events.iter()))
    }
}

/// The stage an event time falls in (the earlier stage at a boundary) and the time since that
/// stage started.
pub fn stage_at(stages: &[(String, f64, f64)], t: f64) -> (usize, f64) {
    let k = stages
        .iter()
        .position(|(_, _, end)| t <= *end)
        .unwrap_or(stages.len().saturating_sub(1));
    (k, t - stages[k].1)
}

/// Sample times of one stage: its start, then `n − 1` log-spaced times from start + dur·1e−6 to
/// its end.
pub fn stage_times(t0: f64, dur: f64, n: usize) -> Vec<f64> {
    let mut v = vec![t0];
    let k = n - 1;
    for i in 0..k {
        let e = if k == 1 {
            0.0
        } else {
            -6.0 + 6.0 * i as f64 / (k - 1) as f64
        };
        v.push(t0 + dur * 10f64.powf(e));
    }
    v
}

pub(crate) fn header(flow: &dyn GradientFlow, lay: &Layout, full: bool) -> Vec<String> {
    let obs = flow.observable_names();
    let mut h: Vec<String> = Vec::new();
    if full {
        h.push("step".into());
    }
    h.extend(["t", "stage", "loss", "val_loss"].map(String::from));
    h.extend(obs[..lay.n_subsets].iter().cloned());
    h.extend(flow.names()[lay.w_range()].iter().cloned());
    h.push("a".into());
    h.extend(obs[lay.n_subsets..].iter().cloned());
    h
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn row(
    step: Option<u64>,
    t: f64,
    stage: &str,
    loss: f64,
    val: f64,
    theta: &[f64],
    obs: &[f64],
    lay: &Layout,
) -> Vec<Cell> {
    let mut r: Vec<Cell> = Vec::new();
    if let Some(s) = step {
        r.push(Cell::Int(s as i64));
    }
    r.push(t.into());
    r.push(stage.into());
    r.push(loss.into());
    r.push(val.into());
    r.extend(obs[..lay.n_subsets].iter().map(|&v| Cell::Num(v)));
    r.extend(theta[lay.w_range()].iter().map(|&v| Cell::Num(v)));
    r.push(theta[lay.a()].into());
    r.extend(obs[lay.n_subsets..].iter().map(|&v| Cell::Num(v)));
    r
}

/// Coordinates of the reduced θ trained by a stage.
pub(crate) fn trained(lay: &Layout, blocks: &[Block]) -> Vec<usize> {
    let mut v = Vec::new();
    for b in blocks {
        match b {
            Block::C => v.extend(lay.c_range()),
            Block::W => v.extend(lay.w_range()),
            Block::A => v.push(lay.a()),
            Block::Layer1 => {}
        }
    }
    v.sort_unstable();
    v
}

pub(crate) fn run_reduced(
    s: &GihSpec,
    job: &GihJobSpec,
    solver: &SolverSpec,
    train: &Sequences,
    val: &Sequences,
    mi: &MiEstimate,
) -> Result<ReducedRun, Error> {
    let started = std::time::Instant::now();
    let m = model(s);
    let flow = GihFlow::new(m, train);
    let val_flow = GihFlow::new(m, val);
    let lay = *flow.layout();
    let th0 = init(s).theta(&m.shape, &lay);
    let dim = lay.len();
    let stages: Vec<Stage> = job
        .stages
        .iter()
        .map(|st| {
            let moving = trained(&lay, &st.train);
            Stage::new(st.name.clone(), st.duration())
                .frozen((0..dim).filter(|k| !moving.contains(k)))
        })
        .collect();
    let defs = event_defs(&lay, s, job, mi);
    let mut b = FlowProblem::builder(&flow)
        .init(&th0)
        .stages(stages)
        .solver(solver)
        .events(defs.iter().map(EventDef::spec));
    if job.log_c {
        b = b.log_coordinates(lay.c_range());
    }
    let sol = b.build()?.solve()?;
    let solve_seconds = started.elapsed().as_secs_f64();
    let n_obs = flow.observable_names().len();
    let mut obs = vec![0.0; n_obs];
    let mut table = Table::new(header(&flow, &lay, false));
    let mut t0 = 0.0;
    for st in &job.stages {
        for t in stage_times(t0, st.duration(), job.samples) {
            let t = t.min(sol.t_end());
            let th = sol.state_at(t).expect("sample times lie in [0, t_end]");
            flow.observables(&th, &mut obs);
            table.push(row(
                None,
                t,
                &st.name,
                flow.loss(&th),
                val_flow.loss(&th),
                &th,
                &obs,
                &lay,
            ));
        }
        t0 += st.duration();
    }
    // The replicator closed form beside the first stage that trains c (§8), with U_S = Ĩ(S).
    let replicator_table = job
        .stages
        .iter()
        .enumerate()
        .find(|(_, st)| st.train.contains(&Block::C))
        .map(|(k, st)| {
            let start: f64 = job.stages[..k].iter().map(|s| s.duration()).sum();
            let th = sol.state_at(start).expect("stage start lies in the run");
            let c = &th[lay.c_range()];
            let mut p0 = vec![0.0; lay.n_subsets];
            simplex_weights(c, &mut p0);
            let rate = replicator_rate(c, th[lay.a()]);
            let mut names = vec!["t".to_string()];
            names.extend((0..lay.n_subsets).map(|i| format!("p_{}", mi.subsets.label(i))));
            let mut tab = Table::new(names);
            let mut p = vec![0.0; lay.n_subsets];
            for t in stage_times(start, st.duration(), job.samples) {
                replicator(&p0, &mi.mi, rate, t - start, &mut p);
                let mut r: Vec<Cell> = vec![t.into()];
                r.extend(p.iter().map(|&v| Cell::Num(v)));
                tab.push(r);
            }
            tab
        });
    let mut events: Vec<EventRow> = sol
        .events()
        .iter()
        .map(|e| EventRow {
            name: e.name.clone(),
            model: "reduced",
            t: e.t,
            value: e.value,
            located_by: BY_DENSE,
        })
        .collect();
    events.push(stage_two_done(&events, "reduced", job.delta2, BY_DENSE));
    let final_theta = sol.state_at(sol.t_end()).expect("t_end lies in the run");
    Ok(ReducedRun {
        table,
        replicator: replicator_table,
        events,
        solution_stats: {
            let mut s = sol.summary();
            s["log_coordinates_c"] = job.log_c.into();
            s["solve_seconds"] = solve_seconds.into();
            s["dimension"] = dim.into();
            s
        },
        seconds: started.elapsed().as_secs_f64(),
        final_loss: flow.loss(&final_theta),
        final_val_loss: val_flow.loss(&final_theta),
        final_theta,
    })
}

/// The full model's settings of a `[gih.full]` table.
pub(crate) fn full_settings(f: &GihFullSpec) -> FullSettings {
    FullSettings {
        layer_norm: f.layer_norm,
        ln_eps: f.ln_eps,
        self_attention: f.self_attention,
        proj_init: f.proj_init,
    }
}

/// The GD schedule of the job's stages over a θ of layout `lay`: stage k trains the blocks of
/// `gih.stages[k]` (plus `extra` coordinates when it trains `layer1`), with t = lr × steps.
pub(crate) fn gd_stages(
    job: &GihJobSpec,
    lay: &Layout,
    layer1: std::ops::Range<usize>,
) -> Vec<GdStage> {
    job.stages
        .iter()
        .map(|st| {
            let mut trained_idx = trained(lay, &st.train);
            if st.train.contains(&Block::Layer1) {
                trained_idx.extend(layer1.clone());
            }
            GdStage {
                name: st.name.clone(),
                trained: Some(trained_idx),
                lr: st.lr,
                dt: st.lr,
                steps: st.steps,
            }
        })
        .collect()
}

/// How a model trained by GD beside the flow is recorded.
pub(crate) struct GdRecorder<'a> {
    /// `model` in `events.csv` ("full", "gd").
    model: &'static str,
    /// What is trained, for the progress bar and divergence messages.
    what: &'a str,
    /// The model whose observables (p_S, σ) and coordinate names fill the rows.
    observables: &'a dyn GradientFlow,
    /// The `loss` column from θ and the loss of the step's batch.
    train_loss: &'a dyn Fn(&[f64], f64) -> f64,
    /// The `val_loss` column.
    val_loss: &'a dyn Fn(&[f64]) -> f64,
    /// Checkpoint rows per stage.
    samples: usize,
}

/// What a recorded GD run produced.
pub(crate) struct GdRecord {
    table: Table,
    events: Vec<EventRow>,
    steps: u64,
    /// θ at the start and at the end of every stage.
    stage_ends: Vec<Vec<f64>>,
}

/// Train `learner` through the job's stages with the shared driver, recording checkpoint rows
/// (log-spaced per stage) and the events of [`event_defs`], located by linear interpolation in
/// t between consecutive GD steps. Used by the full model and by GD on the reduced model.
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_recorded<F: FnMut(u64, &[f64], &mut [f64]) -> f64>(
    learner: &mut FlatLearner<'_, F>,
    stages: &[GdStage],
    job: &GihJobSpec,
    lay: &Layout,
    defs: Vec<EventDef>,
    rec: &GdRecorder<'_>,
    progress: bool,
) -> Result<GdRecord, Error> {
    let marks: Vec<Vec<u64>> = job
        .stages
        .iter()
        .map(|st| log_spaced(st.steps, rec.samples))
        .collect();
    let model = rec.observables;
    let mut obs = vec![0.0; model.observable_names().len()];
    model.observables(&learner.theta, &mut obs);
    let mut probes: Vec<Probe> = defs
        .into_iter()
        .map(|d| Probe::new(d, &learner.theta, &obs))
        .collect();
    let mut table = Table::new(header(model, lay, true));
    let mut stage_ends = vec![learner.theta.clone()];
    let total: u64 = job.stages.iter().map(|s| s.steps).sum();
    let bar = Progress::new(progress, rec.what, total, "steps", None);
    let guard = Guard {
        what: rec.what.to_string(),
        hint: "gih.stages[].lr".into(),
        bound: crate::scenario::validate::DIVERGENCE_BOUND,
    };
    train_gd::<_, Error>(learner, stages, &guard, |p, l| {
        let theta = l.theta.as_slice();
        model.observables(theta, &mut obs);
        for pr in probes.iter_mut() {
            pr.observe(p.t, theta, &obs);
        }
        let at_end = p.stage_step == job.stages[p.stage].steps;
        let boundary = p.stage_step == 0 && p.stage > 0;
        let mark = marks[p.stage].binary_search(&p.stage_step).is_ok();
        if boundary || mark {
            let (loss, val) = ((rec.train_loss)(theta, p.loss), (rec.val_loss)(theta));
            if boundary {
                // the end of the previous stage (same state)
                let prev = &job.stages[p.stage - 1].name;
                table.push(row(Some(p.step), p.t, prev, loss, val, theta, &obs, lay));
                stage_ends.push(theta.to_vec());
            }
            if mark {
                let name = &job.stages[p.stage].name;
                table.push(row(Some(p.step), p.t, name, loss, val, theta, &obs, lay));
            }
        }
        if p.last {
            stage_ends.push(theta.to_vec());
        }
        if !at_end && p.step % 64 == 0 {
            bar.set(p.step);
        }
        Ok(())
    })?;
    drop(bar);
    let mut events: Vec<EventRow> = probes
        .iter()
        .map(|p| EventRow {
            name: p.def.name.clone(),
            model: rec.model,
            t: p.found().map(|f| f.0),
            value: p.found().map(|f| f.1),
            located_by: if p.at_start { "initial state" } else { BY_GD },
        })
        .collect();
    events.push(stage_two_done(&events, rec.model, job.delta2, BY_GD));
    Ok(GdRecord {
        table,
        events,
        steps: total,
        stage_ends,
    })
}

pub(crate) fn run_full(
    s: &GihSpec,
    job: &GihJobSpec,
    train: &Sequences,
    val: &Sequences,
    mi: &MiEstimate,
    progress: bool,
) -> Result<FullRun, Error> {
    let f = job.full.as_ref().expect("called with a full model");
    let started = std::time::Instant::now();
    let settings = full_settings(f);
    let full = GihTransformer::new(s.shape(), s.loss, settings, train);
    let val_model = GihTransformer::new(s.shape(), s.loss, settings, val);
    let flay = *full.layout();
    let lay = flay.base;
    let th0 = full.initial_theta(&init(s).theta(&s.shape(), &lay));
    let stages = gd_stages(job, &lay, flay.layer1_range());
    let names = full.names().to_vec();
    let mut learner = FlatLearner::new(&th0, &names, Optimizer::Gd, |_, th, g| {
        full.loss_and_grad(th, Some(g))
    });
    let rec = GdRecorder {
        model: "full",
        what: "full model GD",
        observables: &full,
        train_loss: &|_, batch_loss| batch_loss,
        val_loss: &|th| val_model.loss(th),
        samples: f.samples,
    };
    let defs = event_defs(&lay, s, job, mi);
    let record = train_recorded(&mut learner, &stages, job, &lay, defs, &rec, progress)?;
    let final_theta = learner.theta;
    Ok(FullRun {
        table: record.table,
        events: record.events,
        steps: record.steps,
        seconds: started.elapsed().as_secs_f64(),
        final_loss: full.loss(&final_theta),
        final_val_loss: val_model.loss(&final_theta),
        final_theta,
    })
}

/// "fixed sample" or "fresh batches of B".
pub(crate) fn gd_data_label(data: GdData) -> String {
    match data {
        GdData::Fixed => "full batch on the training sample".into(),
        GdData::Fresh { batch } => format!("fresh batches of {batch}"),
    }
}

/// Compute the whole job (nothing is written); the full model and GD on the reduced model only
/// `with_trained`.
pub fn compute(
    s: &GihSpec,
    solver: &SolverSpec,
    job: &GihJobSpec,
    progress: bool,
    with_trained: bool,
) -> Result<GihRun, Error> {
    let started = std::time::Instant::now();
    let mi = chi2_mi(
        &prior(s),
        &MiSpec {
            heads: s.heads,
            degree: s.degree,
            power: job.mi.power,
            method: job.mi.method,
            draws: job.mi.draws,
            pairs: job.mi.pairs,
            seed: job.mi.seed,
        },
    )?;
    let mi_seconds = started.elapsed().as_secs_f64();
    let (train, val) = data(s);
    let reduced = run_reduced(s, job, solver, &train, &val, &mi)?;
    let full = match (&job.full, with_trained) {
        (Some(_), true) => Some(run_full(s, job, &train, &val, &mi, progress)?),
        _ => None,
    };
    let gd = match (&job.gd, with_trained) {
        (Some(_), true) => Some(gd::run_gd(s, job, &train, &val, &mi, progress)?),
        _ => None,
    };
    let mut stages = Vec::new();
    let mut t0 = 0.0;
    for st in &job.stages {
        stages.push((st.name.clone(), t0, t0 + st.duration()));
        t0 += st.duration();
    }
    Ok(GihRun {
        mi,
        mi_seconds,
        n_train: train.len(),
        n_val: val.len(),
        reduced,
        full,
        gd,
        stages,
    })
}
