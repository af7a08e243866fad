//! The training loop (the one place a GD loop exists) and its observers.
//!
//! [`train`] evaluates the loss and gradient at W_s on the step's batch, hands checkpoints and
//! progress to the observers, and applies W_{s+1} = W_s − η ∇L. The step itself is
//! [`Trainer`]'s; what is recorded (rows, progress bars) is the observers' (STYLE.md §3–4).
//! A non-finite loss stops the run with the step and the loss.

use super::disentangled::{Params, Trainer};

/// Why training stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The loss became non-finite (GD diverged).
    #[error(
        "gradient descent diverged at step {step} (t = {}): the loss is {loss}; lower the \
         learning rate eta",
        short(*t)
    )]
    Diverged { step: usize, t: f64, loss: f64 },
    /// An observer failed (e.g. could not record a checkpoint).
    #[error("{0}")]
    Observer(String),
}

/// Plain decimals for ordinary magnitudes, exponent form otherwise.
fn short(x: f64) -> String {
    if x == 0.0 || (1e-4..1e15).contains(&x.abs()) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

/// Steps, learning rate and checkpoint cadence of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub steps: usize,
    pub eta: f64,
    /// Checkpoint every this many steps (step 0 and the last step always are).
    pub checkpoint_every: usize,
    /// Pseudo-time per step, η/D (theory/musat.md §5): t = η·step/D.
    pub dt: f64,
}

/// What an observer sees at a checkpoint: the weights W_s and the loss of step s's batch at
/// W_s.
pub struct Checkpoint<'a> {
    pub step: usize,
    pub t: f64,
    pub loss: f64,
    pub params: &'a Params,
}

/// Observers of a training run; every method defaults to doing nothing.
pub trait TrainObserver {
    fn on_checkpoint(&mut self, _cp: &Checkpoint) -> Result<(), TrainError> {
        Ok(())
    }
    /// After every evaluated step (cheap: progress bars).
    fn on_step(&mut self, _step: usize, _loss: f64) -> Result<(), TrainError> {
        Ok(())
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TrainSummary {
    pub steps: usize,
    pub final_loss: f64,
}

/// Run `schedule.steps` GD steps from `params` (updated in place). Evaluates steps + 1 batches:
/// the last one gives the loss at the final weights.
pub fn train(
    trainer: &mut Trainer,
    params: &mut Params,
    schedule: &Schedule,
    observers: &mut [&mut dyn TrainObserver],
) -> Result<TrainSummary, TrainError> {
    let every = schedule.checkpoint_every.max(1);
    let mut loss = f64::NAN;
    for step in 0..=schedule.steps {
        loss = trainer.evaluate(params);
        let t = schedule.dt * step as f64;
        if !loss.is_finite() {
            return Err(TrainError::Diverged { step, t, loss });
        }
        if step % every == 0 || step == schedule.steps {
            let cp = Checkpoint {
                step,
                t,
                loss,
                params,
            };
            for o in observers.iter_mut() {
                o.on_checkpoint(&cp)?;
            }
        }
        for o in observers.iter_mut() {
            o.on_step(step, loss)?;
        }
        if step < schedule.steps {
            trainer.apply(params, schedule.eta);
        }
    }
    Ok(TrainSummary {
        steps: schedule.steps,
        final_loss: loss,
    })
}
