//! Training alongside the flow (docs/theory/wang.md §8–§10): online SGD on the six-parameter model
//! with freshly sampled sequences, and GD/Adam on the full transformer. Time axis: t = η·steps
//! (the six parameters are the reduced variables, §10).
//!
//! Both trainers draw each step's batch serially from one seeded ChaCha stream, so a seed
//! fixes the run on any thread count; the per-step work uses buffers allocated once.

use crate::numerics::normal::Gaussian;
use crate::systems::wang::full::{BatchEngine, FullModel};
use crate::systems::wang::reduced::sample::{Prepared, SeqScratch, eval_sequence};
use crate::systems::wang::reduced::{ReducedGrad, RichModel};
use crate::train::checkpoints::Checkpoints;
use crate::train::{FlatLearner, Guard, Stage, TrainError, train};
use std::cell::RefCell;

/// A stage of the schedule: coordinates in `frozen` do not move while t < `t_end`.
#[derive(Debug, Clone, PartialEq)]
pub struct StageMask {
    pub t_end: f64,
    pub frozen: Vec<usize>,
}

pub use crate::train::checkpoints::log_spaced as checkpoint_steps;

/// Settings of one online-SGD run.
#[derive(Debug, Clone, PartialEq)]
pub struct SgdSettings {
    pub eta: f64,
    pub batch: usize,
    pub steps: u64,
    pub seed: u64,
}

/// Online SGD on the six-parameter model: θ ← θ − η·loss_scale·(1/B) Σ_b ∇(ŷ_b − y_b)², the
/// frozen coordinates of the active stage held fixed. `on_checkpoint(step, t, θ)` is called at
/// each step listed in `checkpoints` (before that step's update; the last one after the final
/// update).
pub fn train_sgd<E: From<TrainError>>(
    model: &RichModel,
    init: &[f64],
    stages: &[StageMask],
    settings: &SgdSettings,
    checkpoints: &[u64],
    mut on_checkpoint: impl FnMut(u64, f64, &[f64]) -> Result<(), E>,
) -> Result<Vec<f64>, E> {
    let l = model.l;
    let mut prep = Prepared::new(l);
    let mut scratch = SeqScratch::new(l);
    let mut rng = Gaussian::new(settings.seed);
    let mut batch = vec![0.0; settings.batch * l];
    // the step's batch loss (of the residuals) and the gradient of Σ_b (ŷ_b − y_b)²; the
    // factor loss_scale / B goes into the learning rate
    let loss_grad = |_step: u64, theta: &[f64], grad: &mut [f64]| {
        rng.fill(&mut batch);
        prep.prepare(model, theta);
        let mut g = ReducedGrad::default();
        let mut sse = 0.0;
        for k in 0..settings.batch {
            let ev = eval_sequence(model, &prep, &batch[k * l..(k + 1) * l], &mut scratch);
            let r = ev.d + ev.e;
            sse += r * r;
            let r2 = 2.0 * r;
            g.w_g += r2 * ev.ug[0];
            g.p += r2 * ev.ug[1];
            g.v += r2 * ev.ui[0];
            g.w += r2 * ev.ui[1];
            g.p1 += r2 * (ev.ug[2] + ev.ui[2]);
        }
        model.chain(theta, &g, grad);
        model.loss_scale * sse / settings.batch as f64
    };
    let names = model.names();
    let mut learner = FlatLearner::new(init, &names, Optimizer::Gd, loss_grad);
    let lr = settings.eta * (model.loss_scale / settings.batch as f64);
    let schedule = driver_stages(stages, settings.eta, lr, settings.steps, init.len());
    let guard = Guard {
        what: "SGD (six-parameter model)".into(),
        hint: "train.eta".into(),
        bound: crate::scenario::validate::DIVERGENCE_BOUND,
    };
    let mut cps = Checkpoints::listed(checkpoints);
    train::<_, E>(&mut learner, &schedule, &guard, |p, l| {
        if cps.due(p.step, p.last) {
            on_checkpoint(p.step, settings.eta * p.step as f64, &l.theta)?;
        }
        Ok(())
    })?;
    Ok(learner.theta)
}

/// The driver's stages for `steps` steps of size `eta` in time: step s belongs to the first
/// stage with η·s < t_end (the last stage after all of them), and trains every coordinate
/// that stage does not freeze.
fn driver_stages(stages: &[StageMask], eta: f64, lr: f64, steps: u64, dim: usize) -> Vec<Stage> {
    let stage_of = |step: u64| {
        let t = eta * step as f64;
        stages
            .iter()
            .position(|s| t < s.t_end)
            .unwrap_or(stages.len().saturating_sub(1))
    };
    let mut out: Vec<(usize, u64)> = Vec::new();
    for step in 0..steps {
        let k = stage_of(step);
        match out.last_mut() {
            Some((last, n)) if *last == k => *n += 1,
            _ => out.push((k, 1)),
        }
    }
    out.into_iter()
        .map(|(k, n)| {
            let frozen = stages.get(k).map_or(&[][..], |s| s.frozen.as_slice());
            Stage {
                name: if stages.len() > 1 {
                    format!("{}", k + 1)
                } else {
                    String::new()
                },
                trained: Some((0..dim).filter(|i| !frozen.contains(i)).collect()),
                lr,
                dt: eta,
                steps: n,
            }
        })
        .collect()
}

pub use crate::train::Optimizer;

/// Settings of one full-model run.
#[derive(Debug, Clone, PartialEq)]
pub struct FullSettings {
    pub eta: f64,
    pub batch: usize,
    pub steps: u64,
    pub seed: u64,
    pub optimizer: Optimizer,
}

/// GD or Adam on the full model with fresh batches (t = η·steps); the parameters frozen in the
/// active stage do not move. `on_checkpoint(step, t, θ, engine)` as in [`train_sgd`].
pub fn train_full<E: From<TrainError>>(
    model: &FullModel,
    init: &[f64],
    stages: &[StageMask],
    settings: &FullSettings,
    checkpoints: &[u64],
    mut on_checkpoint: impl FnMut(u64, f64, &[f64], &mut BatchEngine) -> Result<(), E>,
) -> Result<Vec<f64>, E> {
    let l = model.shape.l;
    let n = model.n_params();
    // the observer evaluates with the same engine between steps
    let engine = RefCell::new(BatchEngine::new(model));
    let mut rng = Gaussian::new(settings.seed);
    let mut batch = vec![0.0; settings.batch * l];
    let loss_grad = |_step: u64, theta: &[f64], grad: &mut [f64]| {
        rng.fill(&mut batch);
        engine
            .borrow_mut()
            .loss_and_grad(model, theta, &batch, grad)
    };
    let names = model.layout.names();
    let mut learner = FlatLearner::new(init, &names, settings.optimizer, loss_grad);
    let schedule = driver_stages(stages, settings.eta, settings.eta, settings.steps, n);
    let guard = Guard {
        what: "full-model training".into(),
        hint: "train.full.eta".into(),
        bound: crate::scenario::validate::DIVERGENCE_BOUND,
    };
    let mut cps = Checkpoints::listed(checkpoints);
    train::<_, E>(&mut learner, &schedule, &guard, |p, l| {
        if cps.due(p.step, p.last) {
            let t = settings.eta * p.step as f64;
            on_checkpoint(p.step, t, &l.theta, &mut engine.borrow_mut())?;
        }
        Ok(())
    })?;
    Ok(learner.theta)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Step s belongs to the first stage with η·s < t_end, the last stage after them all.
    #[test]
    fn time_stages_become_step_counts() {
        let stages = [
            StageMask {
                t_end: 1.0,
                frozen: vec![0],
            },
            StageMask {
                t_end: 3.0,
                frozen: vec![1],
            },
        ];
        let d = driver_stages(&stages, 0.25, 0.1, 20, 3);
        let got: Vec<_> = d.iter().map(|s| (s.steps, s.trained.clone())).collect();
        assert_eq!(got, vec![(4, Some(vec![1, 2])), (16, Some(vec![0, 2]))]);
        assert!(d.iter().all(|s| s.lr == 0.1 && s.dt == 0.25));
        assert_eq!(driver_stages(&stages[..1], 0.25, 0.1, 2, 2).len(), 1);
    }
}
