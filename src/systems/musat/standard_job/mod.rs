//! Job `standard` (docs/theory/musat.md §11, docs/guide-musat.md): train the standard two-layer
//! attention-only transformer ([`crate::systems::musat::standard`]) on the token version of the
//! task through the training driver, record the progress measures α̃₃, β̃₂, γ̃₃ at the
//! checkpoints → `standard/progress.csv`, `standard/progress.png`, `standard/weights-start.png`,
//! `weights-mid.png`, `weights-end.png` (and SVGs), and the events in the manifest.
//!
//! **Time.** t = lr·step/D, the full Musat model's pseudo-time η·step/D (docs/theory/musat.md
//! §9–§10), so that the two models are read on one axis; with Adam it is the same rescaled
//! step count (Adam is not a discretised gradient flow).
//!
//! **Events.** A measure's event is its first reaching `fraction` × its final value (rising
//! when the final value is above the initial one, falling otherwise; none when the final value
//! is 0 or not finite), the loss's its first falling to ½ L(z = 0), half the loss of all-zero
//! logits ([`zero_output_loss`]: the reduced flows' initial loss). All are located by
//! [`crate::train::crossing`] between checkpoints.

use crate::Error;
use crate::report::progress::Progress;
use crate::report::{Cell, Table, fmt_f64, short};
use crate::systems::musat::musat3::Query;
use crate::systems::musat::scenario_standard::{StandardCheckpoints, StandardSpec};
use crate::systems::musat::standard::measures::{Measures, WeightBlocks};
use crate::systems::musat::standard::{
    CHUNK, Config, Loss, Optimizer, Params, Positions, StandardLearner, Trainer,
};
use crate::systems::plugin::{Footprint, JobContext, JobOutput};
use crate::train::checkpoints::Checkpoints;
use crate::train::crossing::{Direction, first_crossing};
use crate::train::{Guard, Stage, TrainError, train};
use serde_json::{Value, json};
use std::time::Instant;

mod figures;

/// The folder (under the run's output folder) the job writes into.
pub const FOLDER: &str = "standard";

/// The measures in the order their events are expected (docs/theory/musat.md §8, §11).
pub const MEASURES: [&str; 3] = ["gamma3", "beta2", "alpha3"];

/// What the job needs from the system: N, the query mode and the loss scale.
#[derive(Debug, Clone, Copy)]
pub struct Task {
    pub n: usize,
    pub query: Query,
    pub loss_scale: f64,
}

/// One checkpoint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row {
    pub step: u64,
    pub t: f64,
    pub loss: f64,
    pub m: Measures,
}

impl Row {
    pub fn measure(&self, name: &str) -> f64 {
        match name {
            "alpha3" => self.m.alpha3,
            "beta2" => self.m.beta2,
            "gamma3" => self.m.gamma3,
            _ => self.loss,
        }
    }
}

/// One located (or not) event.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub name: String,
    /// Which quantity: a measure's name or `loss`.
    pub quantity: &'static str,
    pub level: Option<f64>,
    pub t: Option<f64>,
}

/// The snapshots drawn as weight-structure heatmaps: start, middle and end of training.
pub(crate) struct Snapshot {
    pub name: &'static str,
    pub step: u64,
    pub t: f64,
    pub blocks: WeightBlocks,
}

fn loss_name(l: Loss) -> &'static str {
    match l {
        Loss::Mse => "mse",
        Loss::Ce => "ce",
    }
}

fn optimizer_name(o: Optimizer) -> &'static str {
    match o {
        Optimizer::Gd => "gd",
        Optimizer::Adam => "adam",
    }
}

/// The loss of the all-zero logits, L(z = 0): loss_scale · ‖e_y‖² = loss_scale for MSE,
/// loss_scale · ln N_E for cross-entropy. The reduced flows start at θ = 0, where the loss is
/// this; the loss event of `[standard]` is the loss falling to half of it (the first step's
/// batch loss depends on the random initialisation's output scale, and the plateau that
/// follows is close to L(z = 0), not to it).
pub fn zero_output_loss(loss: Loss, loss_scale: f64, vocab: usize) -> f64 {
    match loss {
        Loss::Mse => loss_scale,
        Loss::Ce => loss_scale * (vocab as f64).ln(),
    }
}

/// The events of a run, in the order γ̃₃, β̃₂, α̃₃, loss half (unsorted); the loss event is
/// the loss falling to ½ `reference`.
pub(crate) fn events(rows: &[Row], fraction: f64, reference: f64) -> Vec<Event> {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Vec::new();
    };
    let mut out: Vec<Event> = MEASURES
        .iter()
        .map(|&name| {
            let (v0, v1) = (first.measure(name), last.measure(name));
            let level = (v1.is_finite() && v1 != 0.0).then_some(fraction * v1);
            let dir = if v1 >= v0 {
                Direction::Rises
            } else {
                Direction::Falls
            };
            Event {
                name: format!("T_{name}"),
                quantity: name,
                level,
                t: level.and_then(|lv| {
                    first_crossing(rows.iter().map(|r| (r.t, r.measure(name))), lv, dir)
                }),
            }
        })
        .collect();
    let level = 0.5 * reference;
    out.push(Event {
        name: crate::systems::plugin::loss_event_name(0.5),
        quantity: "loss",
        level: Some(level),
        t: first_crossing(rows.iter().map(|r| (r.t, r.loss)), level, Direction::Falls),
    });
    out
}

/// The events sorted by time (those never reached last, in their listed order).
pub(crate) fn sorted(mut ev: Vec<Event>) -> Vec<Event> {
    ev.sort_by(|a, b| match (a.t, b.t) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    ev
}

/// `step,t,loss,alpha3,beta2,gamma3`.
fn progress_table(rows: &[Row]) -> Table {
    let mut table = Table::new(["step", "t", "loss", "alpha3", "beta2", "gamma3"]);
    for r in rows {
        table.push(vec![
            Cell::Int(r.step as i64),
            r.t.into(),
            r.loss.into(),
            r.m.alpha3.into(),
            r.m.beta2.into(),
            r.m.gamma3.into(),
        ]);
    }
    table
}

/// A one-line description of the run (task, loss, optimizer), for titles and the terminal.
fn label(task: &Task, spec: &StandardSpec) -> String {
    let query = match task.query {
        Query::Last => "last",
        Query::Uniform => "uniform",
    };
    format!(
        "N = {}, query {query}, {}, {} lr = {}, B = {}",
        task.n,
        loss_name(spec.loss).to_uppercase(),
        match spec.optimizer {
            Optimizer::Gd => "GD",
            Optimizer::Adam => "Adam",
        },
        fmt_f64(spec.lr),
        spec.batch
    )
}

/// The model's sizes, for titles and the terminal.
fn dims_label(spec: &StandardSpec) -> String {
    let pos = match spec.position_embedding {
        Positions::Learned => "learned",
        Positions::Fixed => "fixed",
    };
    format!(
        "D = {}, d_head = {}, N_E = {}, N_p = {} {pos}",
        spec.d, spec.d_head, spec.vocab, spec.positions
    )
}

/// What a `[standard]` run holds in memory and writes, for N item–label pairs (the dominant
/// buffers: per chunk of [`CHUNK`] sequences its pass workspace and its gradient; the weights
/// with their gradient and Adam's moments; the rows and the figures).
pub fn footprint(n: usize, spec: &StandardSpec) -> Footprint {
    let dims = spec.dims(n);
    let (t, d, h) = (dims.t() as f64, dims.d as f64, dims.d_head as f64);
    let (v, p) = (dims.vocab as f64, dims.positions as f64);
    let m = CHUNK as f64;
    let chunks = spec.batch.div_ceil(CHUNK) as f64;
    let workspace = m * t * (10.0 * d + 2.0 * t) + m * (8.0 * d + 2.0 * v);
    let merged_grad = 2.0 * v * d + p * d + 4.0 * d * d;
    let params = 2.0 * v * d + p * d + 8.0 * h * d;
    let memory = 8.0 * (chunks * (workspace + merged_grad) + 2.0 * merged_grad + 4.0 * params)
        + 4.0 * spec.batch as f64 * (t + 1.0);
    let rows = match spec.checkpoints {
        StandardCheckpoints::Every(k) => (spec.steps / k.max(1) + 2) as f64,
        StandardCheckpoints::LogSpaced(c) => c as f64 + 1.0,
    };
    // the table, the progress figure (PNG and an SVG polyline per curve), three heatmap
    // figures (a PNG, and an SVG rectangle per cell)
    let cells = (v + t) * (v + t) + 2.0 * v * v;
    let output = rows * (6.0 * 24.0 + 4.0 * 40.0) + 4.0 * 400e3 + 3.0 * cells * 120.0;
    Footprint {
        what: "[standard]".into(),
        fields: "standard.batch, standard.d, standard.vocab, standard.steps / checkpoints",
        memory,
        output,
    }
}

pub fn run(task: &Task, spec: &StandardSpec, ctx: &JobContext) -> Result<JobOutput, Error> {
    let dims = spec.dims(task.n);
    let cfg = Config {
        dims,
        loss: spec.loss,
        loss_scale: task.loss_scale,
        mask: spec.mask,
        learned_positions: spec.position_embedding == Positions::Learned,
    };
    let dt = spec.dt();
    let steps = spec.steps as u64;
    let mut learner = StandardLearner {
        trainer: Trainer::new(cfg, task.query, spec.batch, spec.optimizer, spec.seed),
        params: Params::init(dims, spec.init_std, spec.position_embedding, spec.seed),
    };
    let stages = [Stage {
        name: String::new(),
        trained: None,
        lr: spec.lr,
        dt,
        steps,
    }];
    let guard = Guard {
        what: format!(
            "the standard transformer ({})",
            optimizer_name(spec.optimizer)
        ),
        hint: "standard.lr".into(),
        bound: f64::INFINITY,
    };
    let mut checkpoints = Checkpoints::new(spec.policy(), steps);
    let mid = steps / 2;
    let mut rows: Vec<Row> = Vec::new();
    let mut snapshots: Vec<Snapshot> = Vec::new();
    let bar = Progress::new(
        ctx.progress,
        "train standard",
        steps + 1,
        "steps",
        Some("loss"),
    );
    let started = Instant::now();
    let result = train::<_, TrainError>(&mut learner, &stages, &guard, |p, l| {
        if checkpoints.due(p.step, p.last) {
            rows.push(Row {
                step: p.step,
                t: p.t,
                loss: p.loss,
                m: crate::systems::musat::standard::measures::measures(&l.params),
            });
            bar.message(format!("{:.4e}", p.loss));
        }
        let mut snap = |name| {
            snapshots.push(Snapshot {
                name,
                step: p.step,
                t: p.t,
                blocks: WeightBlocks::of(&l.params),
            })
        };
        if p.step == 0 {
            snap("start");
        }
        if p.step == mid && !p.last {
            snap("mid");
        }
        if p.last {
            snap("end");
        }
        bar.inc(1);
        Ok(())
    });
    drop(bar);
    let seconds = started.elapsed().as_secs_f64();
    let done = rows.last().map_or(0, |r| r.step);

    // ---- outputs.
    let out = ctx.out.subdir(FOLDER);
    let title = label(task, spec);
    let dims_text = dims_label(spec);
    let reference = zero_output_loss(spec.loss, task.loss_scale, spec.vocab);
    let ev = events(&rows, spec.fraction, reference);
    let mut files = vec![out.write_csv("progress.csv", &progress_table(&rows))?];
    files.extend(out.write_figure(
        "progress",
        &figures::progress_figure(&rows, &ev, spec, reference, &title, &dims_text),
    )?);
    for s in &snapshots {
        files.extend(out.write_figure(
            &format!("weights-{}", s.name),
            &figures::weights_figure(s, &snapshots, &format!("{title}; {dims_text}")),
        )?);
    }
    let ordered = sorted(ev.clone());
    let steps_per_t = 1.0 / dt;
    let events_json: Vec<Value> = ordered
        .iter()
        .map(|e| {
            json!({
                "name": e.name,
                "quantity": e.quantity,
                "level": e.level,
                "t": e.t,
                "step": e.t.map(|t| t * steps_per_t),
            })
        })
        .collect();
    let reached: Vec<&str> = ordered
        .iter()
        .filter(|e| e.t.is_some() && e.quantity != "loss")
        .map(|e| e.quantity)
        .collect();
    let order_holds = reached == MEASURES;
    let last = rows.last();
    let checkpoints_json = match spec.checkpoints {
        StandardCheckpoints::Every(k) => json!({"every": k}),
        StandardCheckpoints::LogSpaced(c) => json!({"log_spaced": c}),
    };
    let mut manifest = json!({
        "job": "standard",
        "folder": FOLDER,
        "n": task.n,
        "d": spec.d,
        "d_head": spec.d_head,
        "vocab": spec.vocab,
        "positions": spec.positions,
        "position_embedding": spec.position_embedding,
        "loss": loss_name(spec.loss),
        "optimizer": optimizer_name(spec.optimizer),
        "lr": spec.lr,
        "batch": spec.batch,
        "steps": spec.steps,
        "seed": spec.seed,
        "init_std": spec.init_std,
        "checkpoints": checkpoints_json,
        "time": "pseudo-time t = lr * step / D (the full Musat model's eta * step / D); step = t * D / lr",
        "t_end": dt * spec.steps as f64,
        "fraction": spec.fraction,
        "event_location": "linear interpolation between checkpoints (train::crossing); a measure's event: it reaches fraction x its final value; T_loss_half: the batch loss falls to half the loss of all-zero logits",
        "zero_output_loss": reference,
        "events": events_json,
        "emergence_order": reached,
        "order_gamma3_beta2_alpha3": order_holds,
        "status": if result.is_err() { "stopped" } else { "complete" },
        "steps_done": done,
        "final": last.map(|r| json!({
            "loss": r.loss,
            "alpha3": r.m.alpha3,
            "beta2": r.m.beta2,
            "gamma3": r.m.gamma3,
        })),
        "train_seconds": seconds,
        "steps_per_second": done as f64 / seconds.max(1e-12),
    });
    if let Err(e) = &result {
        manifest["error"] = json!(e.to_string());
    }

    let mut console = vec![format!(
        "standard transformer: {title}; {dims_text}; t_end = {}",
        short(dt * spec.steps as f64)
    )];
    for e in &ordered {
        console.push(format!(
            "  {:<12} {}",
            e.name,
            e.t.map_or("not reached".into(), |t| format!(
                "t = {}  (step {})",
                short(t),
                short(t * steps_per_t)
            ))
        ));
    }
    if let Some(r) = last {
        console.push(format!("  final loss {}", short(r.loss)));
    }
    if let Err(e) = result {
        return Err(Error::Partial {
            manifest: Box::new(manifest),
            source: Box::new(e.into()),
        });
    }
    Ok(JobOutput {
        manifest,
        files,
        console,
        partial: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(t: f64, loss: f64, a: f64, b: f64, g: f64) -> Row {
        Row {
            step: (t * 10.0) as u64,
            t,
            loss,
            m: Measures {
                alpha3: a,
                beta2: b,
                gamma3: g,
            },
        }
    }

    /// Each measure's event is where it reaches the fraction of its final value (rising or
    /// falling), the loss's where it halves; sorting puts them in time order and the unreached
    /// ones last.
    #[test]
    fn events_are_fractions_of_the_final_values_sorted_by_time() {
        let rows = [
            row(0.0, 4.0, 0.0, 0.0, 0.0),
            row(1.0, 3.0, 0.0, -1.0, 2.0),
            row(2.0, 1.0, 1.0, -2.0, 4.0),
        ];
        let ev = events(&rows, 0.5, 4.0);
        let t: Vec<Option<f64>> = ev.iter().map(|e| e.t).collect();
        assert_eq!(t, vec![Some(1.0), Some(1.0), Some(1.5), Some(1.5)]);
        assert_eq!(ev[1].level, Some(-1.0));
        let flat = [row(0.0, 1.0, 0.0, 0.0, 0.0), row(1.0, 0.9, 0.0, 1.0, 0.0)];
        let s = sorted(events(&flat, 0.5, 1.0));
        let names: Vec<&str> = s.iter().map(|e| e.quantity).collect();
        assert_eq!(names, vec!["beta2", "gamma3", "alpha3", "loss"]);
        assert!(s[1].level.is_none() && s[1].t.is_none());
    }
}
