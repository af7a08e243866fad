//! Job `[gih]` (Chen et al., docs/theory/chen.md): the χ² mutual information and the information set
//! S*, the reduced gradient flow of (c, w, a) through the training stages with located events,
//! and optionally the full TF(M, H, d, D) trained by GD on the same sample, on the same time
//! axis (t = Σ lr × steps, §10).
//!
//! Outputs: `mi.csv`, `trajectory.csv`, `replicator.csv`, `events.csv`, the figures
//! `selection`, `rpe`, `classifier`, `loss` (PNG + SVG), and with the full model
//! `full_trajectory.csv` (and the full model's panels beside the reduced ones in every figure),
//! and with `[gih.gd]` (GD or SGD on fresh batches on the reduced model, [`gd`])
//! `gd_trajectory.csv` (drawn over the reduced flow's curves).
//!
//! In a scenario with a `[sweep]`, `[gih]` configures every sweep point ([`point`]) and is not
//! run on its own.

use crate::Error;
use crate::flow::{EventSpec, FlowProblem, GradientFlow, Quantity, Stage};
use crate::report::figure::{Axis, Figure, Heatmap, LegendAt, Marker, Panel, Series, VLine, color};
use crate::report::progress::Progress;
use crate::report::{Cell, Table, fmt_f64, short};
use crate::scenario::SolverSpec;
use crate::systems::chen::common::{Layout, simplex_weights};
use crate::systems::chen::markov::Sequences;
use crate::systems::chen::mi::{MiEstimate, MiSpec, chi2_mi};
use crate::systems::chen::reduced::{Block, GihFlow, replicator, replicator_rate};
use crate::systems::chen::scenario::{GdData, GihFullSpec, GihJobSpec, GihSpec};
use crate::systems::chen::transfer;
use crate::systems::chen::transformer::{FullSettings, GihTransformer};
use crate::systems::plugin::{Column, Instance, JobContext, JobOutput, Param, PointRows, Role};
use crate::train::checkpoints::log_spaced;
use crate::train::crossing::{Crossing, Direction};
use crate::train::{FlatLearner, Guard, Optimizer, Stage as GdStage, train as train_gd};
use plotters::style::RGBColor;
use serde_json::json;

mod gd;
pub use gd::{FreshBatches, GdRun, GdSource, batch_seed};

pub use crate::systems::chen::setup::{data, data_spec_with, init, model, prior};

/// The joint flow of (c, w, a) on the scenario's training sample, for the generic jobs
/// (`[solve]`, `[[phase]]`); its time scale is stage I's, 1/(κ a₀) = ‖c₀‖²/(4 |a₀|).
pub fn instance(g: &GihSpec) -> Instance {
    let (train, _) = data(g);
    let flow = GihFlow::new(model(g), &train);
    let lay = *flow.layout();
    let init = init(g).theta(&g.shape(), &lay);
    let c2 = lay.n_subsets as f64 * g.c0 * g.c0;
    let time_scale = if g.a0 != 0.0 {
        c2 / (4.0 * g.a0.abs())
    } else {
        1.0
    };
    Instance {
        flow: Box::new(flow),
        init,
        frozen: Vec::new(),
        time_scale,
        emergence: vec![(lay.a(), "a".into())],
        peak: None,
        label: label(g),
        family: format!(
            "gih TF(M={}, H={}, d={}, D={}), pa = {:?}, α = {}",
            g.window, g.heads, g.d, g.degree, g.pa, g.alpha
        ),
        params: vec![Param {
            column: "L".into(),
            field: "system.L".into(),
            value: g.length as f64,
        }],
    }
}

/// A one-line description of the system.
pub fn label(s: &GihSpec) -> String {
    format!(
        "TF(M={}, H={}, d={}, D={}), pa = {:?}, L = {}, α = {}",
        s.window, s.heads, s.d, s.degree, s.pa, s.length, s.alpha
    )
}

// ---------------------------------------------------------------------------------------------
// Events

/// What an event watches: an observable or a coordinate rising to a level, or the argmax of a
/// block of coordinates changing.
#[derive(Debug, Clone)]
enum Watch {
    Obs(usize, f64),
    Coord(usize, f64),
    Argmax(usize, usize),
}

#[derive(Debug, Clone)]
struct EventDef {
    name: String,
    watch: Watch,
}

impl EventDef {
    fn spec(&self) -> EventSpec {
        match self.watch {
            Watch::Obs(j, l) => EventSpec::rises(&self.name, Quantity::Observable(j), l),
            Watch::Coord(k, l) => EventSpec::rises(&self.name, Quantity::Coord(k), l),
            Watch::Argmax(k, w) => EventSpec::argmax_changes(&self.name, Quantity::Coord(k), w),
        }
    }
}

/// The events of docs/theory/chen.md §9 and the issue: p_{S*} reaching ½, 0.9 and 1 − δ₁ (stage I
/// done); each head's largest RPE logit changing offset; σ of each head of S* on its own offset
/// reaching 1 − δ₂ (stage II done); a crossing each level.
fn event_defs(lay: &Layout, s: &GihSpec, job: &GihJobSpec, mi: &MiEstimate) -> Vec<EventDef> {
    let best = mi.best;
    let star = mi.best_label();
    let shape = s.shape();
    let mut defs = Vec::new();
    for level in [0.5, 0.9, 1.0 - job.delta1] {
        defs.push(EventDef {
            name: format!("p_{star}@{}", fmt_f64(level)),
            watch: Watch::Obs(best, level),
        });
    }
    for h in 0..s.heads {
        defs.push(EventDef {
            name: format!("argmax_w_{}", h + 1),
            watch: Watch::Argmax(lay.w(h, 0), s.window),
        });
    }
    for &h in mi.best_members() {
        let i = shape.own_index(h);
        defs.push(EventDef {
            name: format!("sigma_{}_{}@{}", h + 1, i + 1, fmt_f64(1.0 - job.delta2)),
            watch: Watch::Obs(lay.n_subsets + h * s.window + i, 1.0 - job.delta2),
        });
    }
    for &l in &job.a_levels {
        defs.push(EventDef {
            name: format!("a@{}", fmt_f64(l)),
            watch: Watch::Coord(lay.a(), l),
        });
    }
    defs
}

/// One row of `events.csv`.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub name: String,
    pub model: &'static str,
    pub t: Option<f64>,
    pub value: Option<f64>,
    pub located_by: &'static str,
}

const BY_DENSE: &str = "root finding on the dense output";
const BY_GD: &str = "linear interpolation between GD steps";
const BY_MAX: &str = "latest of the per-head events";

/// Stage II is done when every head of S* copies its offset: the latest of those events.
fn stage_two_done(
    rows: &[EventRow],
    model: &'static str,
    delta2: f64,
    located_by: &'static str,
) -> EventRow {
    let suffix = format!("@{}", fmt_f64(1.0 - delta2));
    let heads: Vec<&EventRow> = rows
        .iter()
        .filter(|r| r.name.starts_with("sigma_") && r.name.ends_with(&suffix))
        .collect();
    let t = if heads.is_empty() || heads.iter().any(|r| r.t.is_none()) {
        None
    } else {
        heads
            .iter()
            .filter_map(|r| r.t)
            .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))))
    };
    EventRow {
        name: "stage_II_done".into(),
        model,
        t,
        value: None,
        located_by: if located_by == BY_GD { BY_GD } else { BY_MAX },
    }
}

/// A GD-side event detector: the quantity of [`EventDef`] at every step, with the crossing
/// located by the training driver's one rule for sampled trajectories (linear interpolation in
/// t between the two steps around it, [`crate::train::crossing`]).
struct Probe {
    def: EventDef,
    /// The initially largest entry of a watched block (argmax events).
    leader: usize,
    crossing: Crossing,
    /// The event's value at the step that reached it.
    value: Option<f64>,
    at_start: bool,
}

impl Probe {
    fn new(def: EventDef, theta0: &[f64], obs0: &[f64]) -> Self {
        let leader = match def.watch {
            Watch::Argmax(k, w) => {
                (0..w).fold(0, |b, j| if theta0[k + j] > theta0[k + b] { j } else { b })
            }
            _ => 0,
        };
        let crossing = match def.watch {
            Watch::Obs(_, l) | Watch::Coord(_, l) => Crossing::new(l, Direction::Rises),
            // another entry strictly overtakes the leader: max_{j ≠ leader} − leader > 0
            Watch::Argmax(..) => Crossing::new(0.0, Direction::RisesAbove),
        };
        let mut p = Probe {
            def,
            leader,
            crossing,
            value: None,
            at_start: false,
        };
        p.observe(0.0, theta0, obs0);
        p.at_start = p.value.is_some();
        p
    }
    /// The watched quantity: the observable or coordinate, or for an argmax event the margin
    /// of the best other entry over the initial leader.
    fn quantity(&self, theta: &[f64], obs: &[f64]) -> f64 {
        match self.def.watch {
            Watch::Obs(j, _) => obs[j],
            Watch::Coord(k, _) => theta[k],
            Watch::Argmax(k, w) => {
                let other = (0..w)
                    .filter(|&j| j != self.leader)
                    .map(|j| theta[k + j])
                    .fold(f64::NEG_INFINITY, f64::max);
                other - theta[k + self.leader]
            }
        }
    }
    /// The value reported with the event: the quantity, or the new leader's index.
    fn value(&self, theta: &[f64], obs: &[f64]) -> f64 {
        match self.def.watch {
            Watch::Obs(j, _) => obs[j],
            Watch::Coord(k, _) => theta[k],
            Watch::Argmax(k, w) => (0..w)
                .filter(|&j| j != self.leader)
                .fold(None, |b: Option<usize>, j| match b {
                    Some(b) if theta[k + b] >= theta[k + j] => Some(b),
                    _ => Some(j),
                })
                .unwrap_or(0) as f64,
        }
    }
    fn observe(&mut self, t: f64, theta: &[f64], obs: &[f64]) {
        if self.value.is_some() {
            return;
        }
        let q = self.quantity(theta, obs);
        if self.crossing.observe(t, q).is_some() {
            self.value = Some(self.value(theta, obs));
        }
    }
    /// (time, value) once the event happened.
    fn found(&self) -> Option<(f64, f64)> {
        self.crossing.time().zip(self.value)
    }
}

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

fn header(flow: &dyn GradientFlow, lay: &Layout, full: bool) -> Vec<String> {
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
fn row(
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
fn trained(lay: &Layout, blocks: &[Block]) -> Vec<usize> {
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

fn run_reduced(
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
fn full_settings(f: &GihFullSpec) -> FullSettings {
    FullSettings {
        layer_norm: f.layer_norm,
        ln_eps: f.ln_eps,
        self_attention: f.self_attention,
        proj_init: f.proj_init,
    }
}

/// The GD schedule of the job's stages over a θ of layout `lay`: stage k trains the blocks of
/// `gih.stages[k]` (plus `extra` coordinates when it trains `layer1`), with t = lr × steps.
fn gd_stages(job: &GihJobSpec, lay: &Layout, layer1: std::ops::Range<usize>) -> Vec<GdStage> {
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
struct GdRecorder<'a> {
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
struct GdRecord {
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
fn train_recorded<F: FnMut(u64, &[f64], &mut [f64]) -> f64>(
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
        bound: 1e100,
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

fn run_full(
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
fn gd_data_label(data: GdData) -> String {
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

/// Run the job and write its outputs.
pub fn run(s: &GihSpec, job: &GihJobSpec, ctx: &JobContext) -> Result<JobOutput, Error> {
    let (out, progress) = (ctx.out, ctx.progress);
    let started = std::time::Instant::now();
    let r = compute(s, ctx.solver, job, progress, true)?;
    let mut files = Vec::new();
    let mut mi_table = Table::new(["subset", "mi", "stderr"]);
    for k in 0..r.mi.subsets.len() {
        mi_table.push(vec![
            r.mi.subsets.label(k).into(),
            r.mi.mi[k].into(),
            r.mi.stderr[k].into(),
        ]);
    }
    files.push(out.write_csv("mi.csv", &mi_table)?);
    files.push(out.write_csv("trajectory.csv", &r.reduced.table)?);
    if let Some(rep) = &r.reduced.replicator {
        files.push(out.write_csv("replicator.csv", rep)?);
    }
    let mut ev = Table::new([
        "event",
        "model",
        "t",
        "stage",
        "t_in_stage",
        "value",
        "located_by",
    ]);
    for e in r.events() {
        let at = e.t.map(|t| stage_at(&r.stages, t));
        ev.push(vec![
            e.name.as_str().into(),
            e.model.into(),
            e.t.into(),
            at.map_or(Cell::Empty, |(k, _)| r.stages[k].0.as_str().into()),
            at.map(|(_, dt)| dt).into(),
            e.value.into(),
            e.located_by.into(),
        ]);
    }
    files.push(out.write_csv("events.csv", &ev)?);
    if let Some(f) = &r.full {
        files.push(out.write_csv("full_trajectory.csv", &f.table)?);
    }
    if let Some(g) = &r.gd {
        files.push(out.write_csv("gd_trajectory.csv", &g.table)?);
    }
    let figs = figures(s, job, &r);
    for (stem, fig) in &figs {
        files.extend(out.write_figure(stem, fig)?);
    }
    let transfer = match &job.transfer {
        None => None,
        Some(t) => {
            let started = std::time::Instant::now();
            let mut trained = vec![crate::systems::chen::transfer::Trained {
                name: "flow",
                theta: &r.reduced.final_theta,
                full: None,
            }];
            if let (Some(f), Some(fs)) = (&r.full, &job.full) {
                trained.push(crate::systems::chen::transfer::Trained {
                    name: "full",
                    theta: &f.final_theta,
                    full: Some(full_settings(fs)),
                });
            }
            let rows = transfer::evaluate(s, t, &trained);
            files.push(out.write_csv("transfer.csv", &transfer::table(&rows, t.n_sequences))?);
            let title = format!("Fig. 7 protocol: trained at L = {}", s.length);
            files.extend(
                out.write_figure("transfer", &transfer::figure(s, &rows, &title, &label(s)))?,
            );
            Some((rows, started.elapsed().as_secs_f64()))
        }
    };
    let mut console = vec![format!(
        "gih: {} — {} training / {} validation sequences",
        label(s),
        r.n_train,
        r.n_val
    )];
    console.push(format!(
        "  modified chi^2 MI ({} kernel draws, {} per kernel): S* = {} (gap {:.4})",
        r.mi.draws,
        r.mi.method.name(),
        r.mi.best_label(),
        r.mi.gap
    ));
    for k in 0..r.mi.subsets.len() {
        console.push(format!(
            "    {:<10} {:.5} ± {:.5}",
            r.mi.subsets.label(k),
            r.mi.mi[k],
            r.mi.stderr[k]
        ));
    }
    console.push(format!(
        "  reduced flow: final loss {:.5}, validation loss {:.5} ({:.2} s)",
        r.reduced.final_loss, r.reduced.final_val_loss, r.reduced.seconds
    ));
    if let Some(f) = &r.full {
        console.push(format!(
            "  full model: {} GD steps, final loss {:.5}, validation loss {:.5} ({:.2} s)",
            f.steps, f.final_loss, f.final_val_loss, f.seconds
        ));
    }
    if let (Some((rows, secs)), Some(t)) = (&transfer, &job.transfer) {
        console.push(format!(
            "  transfer ({} fresh sequences per point, {secs:.2} s): loss at L = {}",
            t.n_sequences,
            t.lengths
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        for chunk in rows.chunk_by(|a, b| a.model == b.model && a.alpha == b.alpha) {
            console.push(format!(
                "    {:<5} α = {:<6} {}",
                chunk[0].model,
                chunk[0].alpha,
                chunk
                    .iter()
                    .map(|r| format!("{:.4}", r.loss))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if let Some(g) = &r.gd {
        let norms: Vec<String> = g.c_norms.iter().map(|v| format!("{v:.4}")).collect();
        console.push(format!(
            "  reduced GD ({}): {} steps, final loss {:.5}, validation loss {:.5}, ||c|| at the \
             stage ends {} ({:.2} s)",
            gd_data_label(g.data),
            g.steps,
            g.final_loss,
            g.final_val_loss,
            norms.join(" -> "),
            g.seconds
        ));
    }
    console.push("  events (t on the time axis Σ lr × steps):".into());
    for e in r.events() {
        console.push(format!(
            "    {:<8} {:<24} {}",
            e.model,
            e.name,
            e.t.map_or("not reached".into(), fmt_f64)
        ));
    }
    let events_json = |rows: &[EventRow]| -> Vec<serde_json::Value> {
        rows.iter()
            .map(|e| json!({"event": e.name, "t": e.t, "value": e.value, "located_by": e.located_by}))
            .collect()
    };
    Ok(JobOutput {
        manifest: json!({
            "job": "gih",
            "system": label(s),
            "n_train": r.n_train,
            "n_val": r.n_val,
            "stages": job.stages.iter().map(|st| json!({"name": st.name, "train": st.train, "lr": st.lr, "steps": st.steps, "t_start": r.stages.iter().find(|x| x.0 == st.name).map(|x| x.1), "duration": st.duration()})).collect::<Vec<_>>(),
            "mi": {
                "method": r.mi.method,
                "draws": r.mi.draws,
                "subsets": (0..r.mi.subsets.len()).map(|k| r.mi.subsets.label(k)).collect::<Vec<_>>(),
                "mi": r.mi.mi,
                "stderr": r.mi.stderr,
                "S_star": r.mi.best_label(),
                "gap": r.mi.gap,
                "seconds": r.mi_seconds,
            },
            "reduced": {
                "solve": r.reduced.solution_stats,
                "seconds": r.reduced.seconds,
                "final_loss": r.reduced.final_loss,
                "final_val_loss": r.reduced.final_val_loss,
                "events": events_json(&r.reduced.events),
            },
            "gd": r.gd.as_ref().map(|g| json!({
                "data": g.data,
                "steps": g.steps,
                "seconds": g.seconds,
                "final_loss": g.final_loss,
                "final_val_loss": g.final_val_loss,
                "c_norm_at_stage_ends": g.c_norms,
                "events": events_json(&g.events),
            })),
            "full": r.full.as_ref().map(|f| json!({
                "steps": f.steps,
                "seconds": f.seconds,
                "final_loss": f.final_loss,
                "final_val_loss": f.final_val_loss,
                "events": events_json(&f.events),
            })),
            "transfer": job.transfer.as_ref().map(|t| json!({
                "L": t.lengths,
                "alpha": t.alphas,
                "n_sequences": t.n_sequences,
                "seed": t.seed,
                "seconds": transfer.as_ref().map(|x| x.1),
            })),
            "seconds": started.elapsed().as_secs_f64(),
        }),
        files,
        console,
        partial: false,
    })
}

// ---------------------------------------------------------------------------------------------
// Sweep points

/// The columns of a sweep point over a gih scenario: L, the information set S* (a key: times are
/// fitted per S*, since the events differ when S* does), its Ĩ, the final training and
/// validation losses of the reduced flow, p_{S*} and a at the end, and the times at which
/// p_{S*} reached 0.9 and stage II was done.
pub fn point_columns() -> Vec<Column> {
    vec![
        Column::new(
            "L",
            Role::Param {
                field: "system.L".into(),
            },
        ),
        Column::new("S_star", Role::Key),
        Column::new("mi_S_star", Role::Value),
        Column::new("loss", Role::Value),
        Column::new("val_loss", Role::Value),
        Column::new("p_S_star", Role::Value),
        Column::new("a_final", Role::Value),
        Column::new("T_p_S_star@0.9", Role::Time),
        Column::new("T_stage_II_done", Role::Time),
    ]
}

/// Evaluate one sweep point: the reduced flow of the point scenario's `[gih]` job (without the
/// full model).
pub fn point(s: &GihSpec, job: &GihJobSpec, solver: &SolverSpec) -> Result<PointRows, Error> {
    let r = compute(s, solver, job, false, false)?;
    let best = r.mi.best;
    let th = &r.reduced.final_theta;
    let lay = Layout {
        n_subsets: r.mi.subsets.len(),
        heads: s.heads,
        window: s.window,
    };
    let mut p = vec![0.0; lay.n_subsets];
    simplex_weights(&th[lay.c_range()], &mut p);
    let ev = |name: &str| {
        r.reduced
            .events
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.t)
    };
    let row = vec![
        Cell::Int(s.length as i64),
        Cell::Text(r.mi.best_label()),
        r.mi.mi[best].into(),
        r.reduced.final_loss.into(),
        r.reduced.final_val_loss.into(),
        p[best].into(),
        th[lay.a()].into(),
        ev(&format!("p_{}@0.9", r.mi.best_label())).into(),
        ev("stage_II_done").into(),
    ];
    Ok(PointRows {
        rows: vec![row],
        stats: json!({"reduced": r.reduced.solution_stats, "seconds": r.reduced.seconds}),
    })
}

// ---------------------------------------------------------------------------------------------
// Figures

fn col(table: &Table, name: &str) -> usize {
    table
        .header
        .iter()
        .position(|h| h == name)
        .expect("a known column")
}

fn num(c: &Cell) -> Option<f64> {
    match c {
        Cell::Num(v) => Some(*v),
        Cell::Int(v) => Some(*v as f64),
        _ => None,
    }
}

/// (t, value) of a column over the rows of one stage (t shifted by −offset).
/// A column in a stage as its change since the stage's first row (for log-t axes: t > 0 only),
/// with that first value; None when the stage has no rows.
fn change_since_start(
    table: &Table,
    stage: &str,
    name: &str,
    offset: f64,
) -> Option<(f64, Vec<(f64, f64)>)> {
    let raw = series(table, stage, name, offset);
    let &(_, first) = raw.first()?;
    let pts = raw
        .into_iter()
        .filter(|(t, _)| *t > 0.0)
        .map(|(t, v)| (t, v - first))
        .collect();
    Some((first, pts))
}

fn series(table: &Table, stage: &str, name: &str, offset: f64) -> Vec<(f64, f64)> {
    let (ct, cs, cv) = (col(table, "t"), col(table, "stage"), col(table, name));
    table
        .rows
        .iter()
        .filter(|r| matches!(&r[cs], Cell::Text(s) if s == stage))
        .filter_map(|r| Some((num(&r[ct])? - offset, num(&r[cv])?)))
        .collect()
}

/// The values of the `sigma_h_i` columns at the row nearest to time t.
fn sigma_at(table: &Table, t: f64, s: &GihSpec) -> Vec<Vec<f64>> {
    let ct = col(table, "t");
    let r = table
        .rows
        .iter()
        .min_by(|a, b| {
            let da = (num(&a[ct]).unwrap_or(f64::INFINITY) - t).abs();
            let db = (num(&b[ct]).unwrap_or(f64::INFINITY) - t).abs();
            da.total_cmp(&db)
        })
        .expect("a non-empty table");
    let shape = s.shape();
    let reach = shape.max_offset();
    (0..s.heads)
        .map(|h| {
            let mut cells = vec![f64::NAN; reach];
            for i in 0..s.window {
                let v =
                    num(&r[col(table, &format!("sigma_{}_{}", h + 1, i + 1))]).unwrap_or(f64::NAN);
                cells[shape.offset(h, i) - 1] = v;
            }
            cells
        })
        .collect()
}

fn figures(s: &GihSpec, job: &GihJobSpec, r: &GihRun) -> Vec<(String, Figure)> {
    let mut out = Vec::new();
    let models: Vec<(&str, &Table)> = std::iter::once(("reduced flow", &r.reduced.table))
        .chain(r.full.as_ref().map(|f| ("full model (GD)", &f.table)))
        .collect();
    let cols = models.len();
    let star = r.mi.best_label();
    let suffix = if cols > 1 {
        format!(" — {}", label(s))
    } else {
        String::new()
    };
    let stages_with = |b: Block| -> Vec<usize> {
        job.stages
            .iter()
            .enumerate()
            .filter(|(_, st)| st.train.contains(&b))
            .map(|(k, _)| k)
            .collect()
    };
    let events_of =
        |model: &str| -> Vec<&EventRow> { r.events().filter(|e| e.model == model).collect() };
    // GD on the reduced model is drawn over the reduced flow's panels, as circles at its
    // checkpoints (t > 0 within the stage).
    let gd_points = |stage: &str, column: &str, t0: f64| -> Vec<(f64, f64)> {
        r.gd.as_ref()
            .map(|g| series(&g.table, stage, column, t0))
            .unwrap_or_default()
            .into_iter()
            .filter(|(t, _)| *t > 0.0)
            .collect()
    };
    let gd_name = r.gd.as_ref().map(|g| match g.data {
        GdData::Fixed => "GD".to_string(),
        GdData::Fresh { batch } => format!("SGD, B = {batch}"),
    });
    let with_gd = |i: usize, title: &str| match (&gd_name, i) {
        (Some(gn), 0) => format!("{title} (lines), {gn} (circles)"),
        _ => title.to_string(),
    };
    let model_key = |i: usize| if i == 0 { "reduced" } else { "full" };
    let since = |name: &str| Axis::log(format!("time since the start of stage {name} (log scale)"));
    // Side-by-side panels share the time range: from the latest first sample of the models (GD
    // checkpoints start one step in) to the end of the stage.
    let shared = |k: usize| -> Axis {
        let (name, t0, t1) = &r.stages[k];
        let axis = since(name);
        if cols < 2 {
            return axis;
        }
        let lo = models
            .iter()
            .filter_map(|(_, table)| {
                series(table, name, "a", *t0)
                    .into_iter()
                    .map(|p| p.0)
                    .find(|&t| t > 0.0)
            })
            .fold(0.0f64, f64::max);
        if lo > 0.0 && lo < t1 - t0 {
            axis.with_range(lo, t1 - t0)
        } else {
            axis
        }
    };
    // 1. selection: p_S during the first stage that trains c, with the replicator closed form
    if let Some(&k) = stages_with(Block::C).first() {
        let (name, t0, t1) = &r.stages[k];
        let mut panels = Vec::new();
        for (i, (title, table)) in models.iter().enumerate() {
            let mut p = Panel::new(
                format!("{}: p_S in stage {name}", with_gd(i, title)),
                shared(k),
                Axis::linear("p_S = c_S² / ‖c‖²").with_range(0.0, 1.02),
            );
            // The replicator curves go after every p_S line, so that the legend lists the p_S
            // together and the dashed curves are drawn on top.
            let mut replicator = Vec::new();
            let mut gd_markers = Vec::new();
            for sidx in 0..r.mi.subsets.len() {
                let lab = r.mi.subsets.label(sidx);
                let pts: Vec<(f64, f64)> = series(table, name, &format!("p_{lab}"), *t0)
                    .into_iter()
                    .filter(|(t, _)| *t > 0.0)
                    .collect();
                let mark = if sidx == r.mi.best { " = S*" } else { "" };
                let mut se = Series::line(format!("p_{lab}{mark}"), pts, color(sidx));
                se.width = if sidx == r.mi.best { 4 } else { 2 };
                p.series.push(se);
                if i == 0
                    && let Some(rep) = &r.reduced.replicator
                {
                    let (ct, cv) = (col(rep, "t"), col(rep, &format!("p_{lab}")));
                    let pts: Vec<(f64, f64)> = rep
                        .rows
                        .iter()
                        .filter_map(|row| Some((num(&row[ct])? - t0, num(&row[cv])?)))
                        .filter(|(t, _)| *t > 0.0)
                        .collect();
                    let d = Series::dashed("", pts, color(sidx));
                    replicator.push(if sidx == r.mi.best {
                        Series {
                            label: Some("dashed: replicator with U_S = Ĩ(S)".into()),
                            ..d
                        }
                    } else {
                        d.unlabelled()
                    });
                }
                if i == 0
                    && let Some(gn) = &gd_name
                {
                    let m = Series::markers(
                        format!("circles: {gn} on (c, w, a)"),
                        gd_points(name, &format!("p_{lab}"), *t0),
                        color(sidx),
                        Marker::Circle,
                    );
                    gd_markers.push(if sidx == r.mi.best { m } else { m.unlabelled() });
                }
            }
            p.series.append(&mut replicator);
            p.series.append(&mut gd_markers);
            // One colour per event (none of the p_S colours), so the markers tell apart.
            const EVENT_COLORS: [RGBColor; 3] = [
                RGBColor(0, 0, 0),
                RGBColor(136, 34, 85),
                RGBColor(110, 80, 20),
            ];
            for e in events_of(model_key(i)) {
                if let (true, Some(t)) = (e.name.starts_with(&format!("p_{star}@")), e.t)
                    && t > *t0
                    && t <= *t1
                {
                    let k = p.vlines.len();
                    p.vlines.push(VLine {
                        x: t - t0,
                        label: format!("{} at {}", e.name, short(t - t0)),
                        color: EVENT_COLORS[k % EVENT_COLORS.len()],
                    });
                }
            }
            p.legend = LegendAt::Best;
            panels.push(p);
        }
        out.push((
            "selection".to_string(),
            Figure::grid(1, cols, panels)
                .titled(format!("Stage {name}: the FFN selects S* = {star}{suffix}")),
        ));
    }
    // 2. RPE heatmaps before and after the stages that train w
    let w_stages = stages_with(Block::W);
    if let (Some(&first), Some(&last)) = (w_stages.first(), w_stages.last()) {
        let mut panels = Vec::new();
        let gd_title = gd_name.as_ref().map(|gn| format!("reduced model, {gn}"));
        let mut rpe_models: Vec<(&str, &Table)> = models.clone();
        if let (Some(g), Some(title)) = (&r.gd, &gd_title) {
            rpe_models.push((title.as_str(), &g.table));
        }
        for (title, table) in &rpe_models {
            for (when, k, t) in [
                ("before", first, r.stages[first].1),
                ("after", last, r.stages[last].2),
            ] {
                panels.push(Panel::heatmap(
                    format!("{title}: {when} stage {} (t = {})", r.stages[k].0, short(t)),
                    Axis::linear("offset (head attends to x_{l+offset})"),
                    Axis::linear("layer-1 head"),
                    Heatmap {
                        values: sigma_at(table, t, s),
                        row_labels: (1..=s.heads).map(|h| format!("head {h}")).collect(),
                        col_labels: (1..=s.shape().max_offset())
                            .map(|o| format!("−{o}"))
                            .collect(),
                        range: (0.0, 1.0),
                        annotate: true,
                        scale_label: "σ^(h) = softmax(w^(h))".into(),
                    },
                ));
            }
        }
        out.push((
            "rpe".to_string(),
            Figure::grid(rpe_models.len(), 2, panels).titled(format!(
                "RPE attention of the layer-1 heads (S* = {star}; grey: outside a head's window)"
            )),
        ));
    }
    // 3. classifier: a in the last stage that trains a, on a log-t axis
    if let Some(&k) = stages_with(Block::A).last() {
        let (name, t0, t1) = &r.stages[k];
        let mut panels = Vec::new();
        for (i, (title, table)) in models.iter().enumerate() {
            let mut p = Panel::new(
                format!("{}: a in stage {name}", with_gd(i, title)),
                shared(k),
                Axis::linear("classifier scalar a"),
            );
            let pts: Vec<(f64, f64)> = series(table, name, "a", *t0)
                .into_iter()
                .filter(|(t, _)| *t > 0.0)
                .collect();
            p.series.push(Series::line("a", pts, color(0)));
            if i == 0
                && let Some(gn) = &gd_name
            {
                p.series.push(Series::markers(
                    format!("a, {gn} on (c, w, a)"),
                    gd_points(name, "a", *t0),
                    color(0),
                    Marker::Circle,
                ));
            }
            let a_events = events_of(model_key(i))
                .into_iter()
                .filter(|e| e.name.starts_with("a@"));
            for (j, e) in a_events.enumerate() {
                if let Some(t) = e.t.filter(|t| t > t0 && t <= t1) {
                    p.vlines.push(VLine {
                        x: t - t0,
                        label: format!("{} at {}", e.name, short(t - t0)),
                        color: color(j + 1),
                    });
                }
            }
            p.legend = LegendAt::Best;
            panels.push(p);
        }
        out.push((
            "classifier".to_string(),
            Figure::grid(1, cols, panels).titled(format!(
                "Stage {name}: the classifier scalar a grows{suffix}"
            )),
        ));
    }
    // 4. losses: the change since each stage's start, train and validation, reduced and full
    let mut panels = Vec::new();
    for (name, t0, _) in &r.stages {
        let mut p = Panel::new(
            format!("stage {name}"),
            since(name),
            Axis::linear("loss − loss at the stage start"),
        );
        for (i, (title, table)) in models.iter().enumerate() {
            for (j, (which, column)) in [("train", "loss"), ("validation", "val_loss")]
                .into_iter()
                .enumerate()
            {
                let Some((first, pts)) = change_since_start(table, name, column, *t0) else {
                    continue;
                };
                let lab = format!("{title}, {which} (at start {})", short(first));
                p.series.push(if i == 0 {
                    Series::line(lab, pts, color(j))
                } else {
                    Series::dashed(lab, pts, color(j + 2))
                });
            }
        }
        if let (Some(g), Some(gn)) = (&r.gd, &gd_name) {
            for (j, (which, column)) in [("train", "loss"), ("validation", "val_loss")]
                .into_iter()
                .enumerate()
            {
                let Some((_, pts)) = change_since_start(&g.table, name, column, *t0) else {
                    continue;
                };
                p.series.push(Series::markers(
                    format!("reduced {gn}, {which}"),
                    pts,
                    color(j),
                    Marker::Circle,
                ));
            }
        }
        p.legend = LegendAt::Best;
        panels.push(p);
    }
    let n = panels.len();
    let grid_cols = n.min(3);
    let title = if grid_cols > 1 {
        format!("Loss per stage — {}", label(s))
    } else {
        "Loss (change since the start of the run)".to_string()
    };
    out.push((
        "loss".to_string(),
        Figure::grid(n.div_ceil(grid_cols), grid_cols, panels).titled(title),
    ));
    out
}
