//! Training alongside the flow (theory/wang.md §8–§10): online SGD on the six-parameter model
//! with freshly sampled sequences, and GD/Adam on the full transformer. Time axis: t = η·steps
//! (the six parameters are the reduced variables, §10).
//!
//! Both trainers draw each step's batch serially from one seeded ChaCha stream, so a seed
//! fixes the run on any thread count; the per-step work uses buffers allocated once.

use super::gaussian::Gaussian;
use super::rich_full::{BatchEngine, FullModel};
use crate::theory::rich::sample::{Prepared, SeqScratch, eval_sequence};
use crate::theory::rich::{ReducedGrad, RichModel};

/// Errors while training (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum RichTrainError {
    #[error(
        "{what} training diverged at step {step} (t = {t}): non-finite or exploding parameters; \
         lower the learning rate (train.eta){state}"
    )]
    Diverged {
        what: &'static str,
        step: u64,
        t: f64,
        state: String,
    },
}

/// A stage of the schedule: coordinates in `frozen` do not move while t < `t_end`.
#[derive(Debug, Clone, PartialEq)]
pub struct StageMask {
    pub t_end: f64,
    pub frozen: Vec<usize>,
}

/// Checkpoint steps: 0, then `count` − 1 steps log-spaced in 1..=total (distinct, ascending,
/// the last one = total).
pub fn checkpoint_steps(total: u64, count: usize) -> Vec<u64> {
    let mut out = vec![0];
    if total == 0 {
        return out;
    }
    let k = count.saturating_sub(1).max(1);
    for i in 0..k {
        let s = if k == 1 {
            1.0
        } else {
            i as f64 / (k - 1) as f64
        };
        let step = ((total as f64).ln() * s).exp().round() as u64;
        let step = step.clamp(1, total);
        if *out.last().expect("non-empty") < step {
            out.push(step);
        }
    }
    if *out.last().expect("non-empty") != total {
        out.push(total);
    }
    out
}

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
pub fn train_sgd<E: From<RichTrainError>>(
    model: &RichModel,
    init: &[f64],
    stages: &[StageMask],
    settings: &SgdSettings,
    checkpoints: &[u64],
    mut on_checkpoint: impl FnMut(u64, f64, &[f64]) -> Result<(), E>,
) -> Result<Vec<f64>, E> {
    let l = model.l;
    let dim = init.len();
    let mut theta = init.to_vec();
    let mut prep = Prepared::new(l);
    let mut scratch = SeqScratch::new(l);
    let mut rng = Gaussian::new(settings.seed);
    let mut batch = vec![0.0; settings.batch * l];
    let mut grad = vec![0.0; dim];
    let mut mask = vec![1.0; dim];
    let mut next_cp = 0;
    let scale = model.loss_scale / settings.batch as f64;
    for step in 0..=settings.steps {
        let t = settings.eta * step as f64;
        if next_cp < checkpoints.len() && checkpoints[next_cp] == step {
            on_checkpoint(step, t, &theta)?;
            next_cp += 1;
        }
        if step == settings.steps {
            break;
        }
        rng.fill(&mut batch);
        prep.prepare(model, &theta);
        let mut g = ReducedGrad::default();
        for k in 0..settings.batch {
            let ev = eval_sequence(model, &prep, &batch[k * l..(k + 1) * l], &mut scratch);
            let r2 = 2.0 * (ev.d + ev.e);
            g.w_g += r2 * ev.ug[0];
            g.p += r2 * ev.ug[1];
            g.v += r2 * ev.ui[0];
            g.w += r2 * ev.ui[1];
            g.p1 += r2 * (ev.ug[2] + ev.ui[2]);
        }
        model.chain(&theta, &g, &mut grad);
        set_mask(stages, t, &mut mask);
        for ((th, gr), m) in theta.iter_mut().zip(&grad).zip(&mask) {
            *th -= settings.eta * scale * gr * m;
        }
        if theta.iter().any(|v| !v.is_finite() || v.abs() > 1e100) {
            let names = model.names();
            return Err(RichTrainError::Diverged {
                what: "SGD (six-parameter model)",
                step: step + 1,
                t: settings.eta * (step + 1) as f64,
                state: format!(
                    "; state: {}",
                    names
                        .iter()
                        .zip(&theta)
                        .map(|(n, v)| format!("{n} = {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
            .into());
        }
    }
    Ok(theta)
}

fn set_mask(stages: &[StageMask], t: f64, mask: &mut [f64]) {
    mask.fill(1.0);
    let stage = stages
        .iter()
        .find(|s| t < s.t_end)
        .or(stages.last())
        .map(|s| s.frozen.as_slice())
        .unwrap_or(&[]);
    for &i in stage {
        mask[i] = 0.0;
    }
}

/// Optimizer of the full model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// Plain gradient descent on each fresh batch.
    Gd,
    /// Adam with the usual defaults (β₁ = 0.9, β₂ = 0.999, ε = 1e-8).
    Adam,
}

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
pub fn train_full<E: From<RichTrainError>>(
    model: &FullModel,
    init: &[f64],
    stages: &[StageMask],
    settings: &FullSettings,
    checkpoints: &[u64],
    mut on_checkpoint: impl FnMut(u64, f64, &[f64], &mut BatchEngine) -> Result<(), E>,
) -> Result<Vec<f64>, E> {
    let l = model.shape.l;
    let n = model.n_params();
    let mut theta = init.to_vec();
    let mut engine = BatchEngine::new(model);
    let mut rng = Gaussian::new(settings.seed);
    let mut batch = vec![0.0; settings.batch * l];
    let mut grad = vec![0.0; n];
    let mut mask = vec![1.0; n];
    let (mut m1, mut m2) = (vec![0.0; n], vec![0.0; n]);
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
    let mut next_cp = 0;
    for step in 0..=settings.steps {
        let t = settings.eta * step as f64;
        if next_cp < checkpoints.len() && checkpoints[next_cp] == step {
            on_checkpoint(step, t, &theta, &mut engine)?;
            next_cp += 1;
        }
        if step == settings.steps {
            break;
        }
        rng.fill(&mut batch);
        engine.loss_and_grad(model, &theta, &batch, &mut grad);
        set_mask(stages, t, &mut mask);
        match settings.optimizer {
            Optimizer::Gd => {
                for ((th, g), m) in theta.iter_mut().zip(&grad).zip(&mask) {
                    *th -= settings.eta * g * m;
                }
            }
            Optimizer::Adam => {
                let k = (step + 1) as i32;
                let (c1, c2) = (1.0 - b1.powi(k), 1.0 - b2.powi(k));
                for i in 0..n {
                    m1[i] = b1 * m1[i] + (1.0 - b1) * grad[i];
                    m2[i] = b2 * m2[i] + (1.0 - b2) * grad[i] * grad[i];
                    theta[i] -= mask[i] * settings.eta * (m1[i] / c1) / ((m2[i] / c2).sqrt() + eps);
                }
            }
        }
        if theta.iter().any(|v| !v.is_finite() || v.abs() > 1e100) {
            return Err(RichTrainError::Diverged {
                what: "full-model",
                step: step + 1,
                t: settings.eta * (step + 1) as f64,
                state: String::new(),
            }
            .into());
        }
    }
    Ok(theta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_are_distinct_ascending_and_end_at_total() {
        for (total, count) in [(0u64, 5usize), (1, 5), (10, 100), (1000, 50), (7, 2)] {
            let c = checkpoint_steps(total, count);
            assert_eq!(c[0], 0);
            assert_eq!(*c.last().unwrap(), total);
            assert!(c.windows(2).all(|w| w[0] < w[1]), "{c:?}");
            assert!(c.len() <= count.max(2) + 1, "{total} {count}: {c:?}");
        }
    }
}
