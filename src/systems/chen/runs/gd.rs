//! `[gih.gd]`: discrete gradient descent on the reduced model θ = (c, w, a) itself
//! (docs/theory/chen.md §13, level "GD on (c, w, a)"), through the same stages, learning rates and
//! step counts as the flow, so that t = Σ lr × steps puts it on the flow's time axis (§10).
//!
//! The data are either the flow's own training sample (full-batch GD: the flow is this GD's
//! η → 0 limit) or fresh Monte-Carlo batches (§13 "fresh batches (B)"): at every step `batch`
//! new sequences, each with its own kernel drawn from the Dirichlet prior, from the generator of
//! [`crate::systems::chen::markov`], seeded by [`batch_seed`] from `system.seed` and the step index only
//! (so the run does not depend on the thread count). Under GD the scale invariance of c no
//! longer conserves ‖c‖: since Σ_S c_S ∂𝓛/∂c_S = 0, ‖c_{k+1}‖² = ‖c_k‖² + η²‖∇_c 𝓛‖² (§5).

use super::{
    EventDef, GdRecorder, GihJobSpec, GihSpec, Layout, MiEstimate, Sequences, event_defs,
    gd_stages, init, model, prior, train_recorded,
};
use crate::Error;
use crate::flow::GradientFlow;
use crate::report::Table;
use crate::systems::chen::markov::{DataSpec, generate, item_rng};
use crate::systems::chen::reduced::{GihFlow, GihModel};
use crate::systems::chen::scenario::GdData;
use crate::train::{FlatLearner, Optimizer};
use rand::Rng;

/// Mixed into `system.seed` so that the fresh batches form a stream family of their own (the
/// fixed sample uses `system.seed` itself, the χ² MI `system.seed + 1`).
const FRESH_SALT: u64 = 0x6764_5f66_7265_7368; // "gd_fresh"

/// The seed of step `step`'s fresh batch: the first word of stream `step` of the family
/// `seed ^ FRESH_SALT`. Sequence i of the batch then comes from stream i of this seed.
pub fn batch_seed(seed: u64, step: u64) -> u64 {
    item_rng(seed ^ FRESH_SALT, step).random::<u64>()
}

/// Where a GD step's loss and gradient come from.
pub enum GdSource<'a> {
    /// The fixed training sample (full batch).
    Fixed(&'a GihFlow),
    /// A new batch per step.
    Fresh(Box<FreshBatches>),
}

impl GdSource<'_> {
    /// The loss of step `step`'s batch at θ, with its gradient in `grad`.
    pub fn loss_and_grad(&mut self, step: u64, theta: &[f64], grad: &mut [f64]) -> f64 {
        match self {
            GdSource::Fixed(flow) => flow.loss_and_grad(theta, grad),
            GdSource::Fresh(f) => f.loss_and_grad(step, theta, grad),
        }
    }
}

/// Fresh Monte-Carlo batches: one [`GihFlow`] whose sample is replaced at every step (its
/// buffers are reused; see [`GihFlow::set_data`]).
pub struct FreshBatches {
    spec: DataSpec,
    seed: u64,
    flow: GihFlow,
}

impl FreshBatches {
    /// Batches of `data.n_sequences` sequences like `data` (prior, length, start), seeded per
    /// step by [`batch_seed`] from `seed`.
    pub fn new(model: GihModel, data: DataSpec, seed: u64) -> Self {
        let mut spec = data;
        spec.seed = batch_seed(seed, 0);
        let first = generate(&spec);
        FreshBatches {
            flow: GihFlow::new(model, &first),
            spec,
            seed,
        }
    }

    /// Draw step `step`'s batch and evaluate the loss and its gradient on it.
    pub fn loss_and_grad(&mut self, step: u64, theta: &[f64], grad: &mut [f64]) -> f64 {
        self.spec.seed = batch_seed(self.seed, step);
        let batch = generate(&self.spec);
        self.flow.set_data(&batch);
        self.flow.loss_and_grad(theta, grad)
    }
}

/// The reduced model's GD results.
pub struct GdRun {
    pub table: Table,
    pub events: Vec<super::EventRow>,
    pub steps: u64,
    pub seconds: f64,
    /// "fixed" or "fresh".
    pub data: GdData,
    pub final_theta: Vec<f64>,
    /// On the fixed training sample and the validation sample.
    pub final_loss: f64,
    pub final_val_loss: f64,
    /// ‖c‖ at the start and at the end of every stage.
    pub c_norms: Vec<f64>,
}

/// The training-sample loss column: the step's own loss for full-batch GD; for fresh batches
/// the loss on the fixed training sample (the flow's `loss` column), not the batch's.
pub(super) fn run_gd(
    s: &GihSpec,
    job: &GihJobSpec,
    train: &Sequences,
    val: &Sequences,
    mi: &MiEstimate,
    progress: bool,
) -> Result<GdRun, Error> {
    let g = job.gd.as_ref().expect("called with [gih.gd]");
    let started = std::time::Instant::now();
    let m = model(s);
    let flow = GihFlow::new(m, train);
    let val_flow = GihFlow::new(m, val);
    let lay: Layout = *flow.layout();
    let th0 = init(s).theta(&m.shape, &lay);
    let stages = gd_stages(job, &lay, 0..0);
    let names = flow.names().to_vec();
    let mut source = match g.data {
        GdData::Fixed => GdSource::Fixed(&flow),
        GdData::Fresh { batch } => GdSource::Fresh(Box::new(FreshBatches::new(
            m,
            DataSpec {
                prior: prior(s),
                length: s.length,
                start: s.start,
                n_sequences: batch,
                seed: 0,
            },
            s.seed,
        ))),
    };
    let fresh = matches!(g.data, GdData::Fresh { .. });
    let mut learner = FlatLearner::new(&th0, &names, Optimizer::Gd, |step, th, gr| {
        source.loss_and_grad(step, th, gr)
    });
    let what = if fresh {
        "reduced model SGD (fresh batches)"
    } else {
        "reduced model GD"
    };
    let train_loss = |th: &[f64], batch_loss: f64| {
        if fresh { flow.loss(th) } else { batch_loss }
    };
    let rec = GdRecorder {
        model: "gd",
        what,
        observables: &flow,
        train_loss: &train_loss,
        val_loss: &|th| val_flow.loss(th),
        samples: g.samples,
    };
    let defs: Vec<EventDef> = event_defs(&lay, s, job, mi);
    let record = train_recorded(&mut learner, &stages, job, &lay, defs, &rec, progress)?;
    let final_theta = learner.theta;
    let c_norm = |th: &[f64]| th[lay.c_range()].iter().map(|c| c * c).sum::<f64>().sqrt();
    Ok(GdRun {
        table: record.table,
        events: record.events,
        steps: record.steps,
        seconds: started.elapsed().as_secs_f64(),
        data: g.data,
        final_loss: flow.loss(&final_theta),
        final_val_loss: val_flow.loss(&final_theta),
        c_norms: record.stage_ends.iter().map(|th| c_norm(th)).collect(),
        final_theta,
    })
}

#[cfg(test)]
mod tests;
