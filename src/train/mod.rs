//! The training loop: the one driver every model trained alongside a flow goes through (the
//! disentangled transformer of Musat et al., the six-parameter model and the full transformer
//! of Wang et al., Chen et al.'s TF(M, H, d, D)).
//!
//! [`train`] walks the stages of a [`Stage`] schedule. At every step it asks the [`Learner`]
//! for the loss of that step's batch (keeping the gradient), shows the state to the observer,
//! and asks the learner to descend; after the last step it evaluates once more, so the
//! observer also sees the final weights. What a step computes (batches, gradients, the
//! optimizer) is the learner's; what is recorded (rows, events, progress bars) is the
//! observer's. A non-finite loss or gradient, or a parameter beyond the bound,
//! stops the run with a [`TrainError`] naming the step, the time, the stage and the largest
//! parameter.

pub mod checkpoints;
pub mod crossing;

/// Why training stopped early.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TrainError {
    /// The loss or a parameter became non-finite or left the bound.
    #[error("{0}")]
    Diverged(Box<Divergence>),
    /// An observer failed (e.g. could not record a checkpoint).
    #[error("{0}")]
    Observer(String),
    /// The run was interrupted (Ctrl-C, SIGTERM) before step `step`; the observer saw that
    /// state as the last one.
    #[error("{what} interrupted at step {step} (t = {})", crate::report::fmt_f64(*t))]
    Interrupted { what: String, step: u64, t: f64 },
}

/// Where and how a run diverged.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{what} diverged at step {step} (t = {}{}): {reason}; largest |parameter| = {} \
     ({max_name}); lower the learning rate ({hint})",
    crate::report::fmt_f64(*t),
    stage.as_ref().map(|s| format!(", stage {s}")).unwrap_or_default(),
    crate::report::fmt_f64(*max_abs)
)]
pub struct Divergence {
    /// What was trained, e.g. "gradient descent".
    pub what: String,
    pub step: u64,
    pub t: f64,
    /// The stage's name, when the schedule has named stages.
    pub stage: Option<String>,
    pub reason: String,
    pub max_abs: f64,
    pub max_name: String,
    /// Where the learning rate is set, e.g. "compare.eta".
    pub hint: String,
}

/// One stage of a schedule: `steps` updates with learning rate `lr` of the `trained`
/// coordinates (all of them when `None`), each advancing time by `dt`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Shown in divergence messages; empty for an unnamed single stage.
    pub name: String,
    pub trained: Option<Vec<usize>>,
    pub lr: f64,
    /// Time per step on the flow's axis (η/D for Musat et al., η for the others).
    pub dt: f64,
    pub steps: u64,
}

/// What the observer sees: the weights before step `step` (after the last step when `last`)
/// and the loss of that step's batch at them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Steps taken so far, over all stages.
    pub step: u64,
    /// Time reached: the sum over the steps taken of their stage's `dt`.
    pub t: f64,
    /// The stage the next step belongs to (the last stage at the end).
    pub stage: usize,
    /// Steps taken so far within that stage.
    pub stage_step: u64,
    pub loss: f64,
    /// Whether this is the final state (no step follows).
    pub last: bool,
}

/// A model with its parameters, as the driver sees it.
pub trait Learner {
    /// The loss of step `step`'s batch at the current parameters; keeps its gradient.
    fn evaluate(&mut self, step: u64) -> f64;
    /// Whether the kept gradient is finite.
    fn gradient_is_finite(&self) -> bool;
    /// One update with rate `lr` of the coordinates in `trained` (all when `None`); `step` is
    /// the global index of the step (optimizers with state use it).
    fn descend(&mut self, step: u64, lr: f64, trained: Option<&[usize]>);
    /// The index and |value| of the largest parameter; a NaN counts as larger than anything.
    fn largest(&self) -> (usize, f64);
    /// The name of parameter `index` (for divergence messages).
    fn param_name(&self, index: usize) -> String;
}

/// How divergence is judged and reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Guard {
    /// What is trained, for messages ("gradient descent (full model)").
    pub what: String,
    /// Where the learning rate is set, for messages ("compare.eta").
    pub hint: String,
    /// A parameter beyond this in absolute value counts as diverged.
    pub bound: f64,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TrainSummary {
    pub steps: u64,
    pub final_loss: f64,
}

/// Run every stage of `stages` on `learner`, calling `observe` before every step and once at
/// the end (Σ steps + 1 evaluations). An interrupt ([`crate::interrupt`]) before a step shows
/// that state to the observer as the last one and stops with [`TrainError::Interrupted`].
pub fn train<L: Learner, E: From<TrainError>>(
    learner: &mut L,
    stages: &[Stage],
    guard: &Guard,
    mut observe: impl FnMut(&Point, &mut L) -> Result<(), E>,
) -> Result<TrainSummary, E> {
    let named = |k: usize| Some(stages[k].name.clone()).filter(|n| !n.is_empty());
    let diverged = |learner: &L, step: u64, t: f64, k: usize, reason: &str| {
        let (i, max_abs) = learner.largest();
        TrainError::Diverged(Box::new(Divergence {
            what: guard.what.clone(),
            step,
            t,
            stage: named(k),
            reason: reason.to_string(),
            max_abs,
            max_name: learner.param_name(i),
            hint: guard.hint.clone(),
        }))
    };
    let check_loss = |learner: &L, loss: f64, step: u64, t: f64, k: usize| {
        if !loss.is_finite() {
            Err(diverged(
                learner,
                step,
                t,
                k,
                &format!("the loss is {loss}"),
            ))
        } else if !learner.gradient_is_finite() {
            Err(diverged(learner, step, t, k, "the gradient is not finite"))
        } else {
            Ok(())
        }
    };
    let mut step = 0u64;
    let mut t = 0.0;
    for (k, st) in stages.iter().enumerate() {
        let t_start = t;
        for s in 0..st.steps {
            let loss = learner.evaluate(step);
            check_loss(learner, loss, step, t, k)?;
            let interrupted = crate::interrupt::requested();
            let point = Point {
                step,
                t,
                stage: k,
                stage_step: s,
                loss,
                last: interrupted,
            };
            observe(&point, learner)?;
            if interrupted {
                return Err(TrainError::Interrupted {
                    what: guard.what.clone(),
                    step,
                    t,
                }
                .into());
            }
            learner.descend(step, st.lr, st.trained.as_deref());
            step += 1;
            t = t_start + st.dt * (s + 1) as f64;
            let (_, max_abs) = learner.largest();
            if max_abs.is_nan() || max_abs > guard.bound {
                let reason = "a parameter is non-finite or beyond the divergence bound";
                return Err(diverged(learner, step, t, k, reason).into());
            }
        }
    }
    let k = stages.len().saturating_sub(1);
    let loss = learner.evaluate(step);
    check_loss(learner, loss, step, t, k)?;
    let point = Point {
        step,
        t,
        stage: k,
        stage_step: stages.get(k).map_or(0, |s| s.steps),
        loss,
        last: true,
    };
    observe(&point, learner)?;
    Ok(TrainSummary {
        steps: step,
        final_loss: loss,
    })
}

/// The optimizer of a [`FlatLearner`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// θ ← θ − lr·∇.
    Gd,
    /// Adam with the usual defaults (β₁ = 0.9, β₂ = 0.999, ε = 1e-8); the moments of frozen
    /// coordinates keep being updated.
    Adam,
}

/// A learner over one flat parameter vector whose loss and gradient come from a closure
/// `loss_grad(step, θ, ∇) -> loss` (which draws the step's batch if the data are fresh).
pub struct FlatLearner<'n, F> {
    pub theta: Vec<f64>,
    grad: Vec<f64>,
    names: &'n [String],
    optimizer: Optimizer,
    moments: (Vec<f64>, Vec<f64>),
    loss_grad: F,
}

impl<'n, F: FnMut(u64, &[f64], &mut [f64]) -> f64> FlatLearner<'n, F> {
    /// `names` has one entry per coordinate of `theta0`.
    pub fn new(theta0: &[f64], names: &'n [String], optimizer: Optimizer, loss_grad: F) -> Self {
        assert_eq!(theta0.len(), names.len(), "one name per parameter");
        let n = theta0.len();
        let moments = match optimizer {
            Optimizer::Gd => (Vec::new(), Vec::new()),
            Optimizer::Adam => (vec![0.0; n], vec![0.0; n]),
        };
        FlatLearner {
            theta: theta0.to_vec(),
            grad: vec![0.0; n],
            names,
            optimizer,
            moments,
            loss_grad,
        }
    }
}

impl<F: FnMut(u64, &[f64], &mut [f64]) -> f64> Learner for FlatLearner<'_, F> {
    fn evaluate(&mut self, step: u64) -> f64 {
        (self.loss_grad)(step, &self.theta, &mut self.grad)
    }

    fn gradient_is_finite(&self) -> bool {
        self.grad.iter().all(|g| g.is_finite())
    }

    fn descend(&mut self, step: u64, lr: f64, trained: Option<&[usize]>) {
        let (theta, grad) = (&mut self.theta, &self.grad);
        match self.optimizer {
            Optimizer::Gd => match trained {
                None => {
                    for (th, g) in theta.iter_mut().zip(grad) {
                        *th -= lr * g;
                    }
                }
                Some(idx) => {
                    for &i in idx {
                        theta[i] -= lr * grad[i];
                    }
                }
            },
            Optimizer::Adam => {
                let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
                let k = (step + 1) as i32;
                let (c1, c2) = (1.0 - b1.powi(k), 1.0 - b2.powi(k));
                let (m1, m2) = (&mut self.moments.0, &mut self.moments.1);
                for i in 0..grad.len() {
                    m1[i] = b1 * m1[i] + (1.0 - b1) * grad[i];
                    m2[i] = b2 * m2[i] + (1.0 - b2) * grad[i] * grad[i];
                }
                let mut update = |i: usize| {
                    theta[i] -= lr * (m1[i] / c1) / ((m2[i] / c2).sqrt() + eps);
                };
                match trained {
                    None => (0..grad.len()).for_each(&mut update),
                    Some(idx) => idx.iter().copied().for_each(&mut update),
                }
            }
        }
    }

    fn largest(&self) -> (usize, f64) {
        largest_abs(self.theta.iter().copied())
    }

    fn param_name(&self, index: usize) -> String {
        self.names[index].clone()
    }
}

/// The index and |value| of the largest entry; the first NaN wins.
pub fn largest_abs(values: impl Iterator<Item = f64>) -> (usize, f64) {
    let mut best = (0, 0.0f64);
    for (i, v) in values.enumerate() {
        if v.is_nan() {
            return (i, f64::NAN);
        }
        if v.abs() > best.1 {
            best = (i, v.abs());
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quadratic(lambda: [f64; 2]) -> impl FnMut(u64, &[f64], &mut [f64]) -> f64 {
        move |_, th, g| {
            g[0] = lambda[0] * th[0];
            g[1] = lambda[1] * th[1];
            0.5 * (lambda[0] * th[0] * th[0] + lambda[1] * th[1] * th[1])
        }
    }

    fn guard() -> Guard {
        Guard {
            what: "test GD".into(),
            hint: "eta".into(),
            bound: 1e10,
        }
    }

    /// GD on L = ½ Σ λ_i θ_i²: θ_i ← (1 − η λ_i) θ_i for the trained coordinates only, with
    /// t = Σ dt · steps; the observer sees every step and the final state.
    #[test]
    fn gradient_descent_follows_the_update_rule_stage_by_stage() {
        let names: Vec<String> = ["x", "y"].map(String::from).to_vec();
        let stages = vec![
            Stage {
                name: "I".into(),
                trained: Some(vec![0]),
                lr: 0.1,
                dt: 0.1,
                steps: 5,
            },
            Stage {
                name: "II".into(),
                trained: Some(vec![1]),
                lr: 0.05,
                dt: 0.5,
                steps: 4,
            },
        ];
        let mut l = FlatLearner::new(&[1.0, 2.0], &names, Optimizer::Gd, quadratic([1.0, 3.0]));
        let mut seen = Vec::new();
        let summary = train::<_, TrainError>(&mut l, &stages, &guard(), |p, l| {
            seen.push((*p, l.theta.clone()));
            Ok(())
        })
        .unwrap();
        assert!((l.theta[0] - 0.9f64.powi(5)).abs() < 1e-15);
        assert!((l.theta[1] - 2.0 * 0.85f64.powi(4)).abs() < 1e-15);
        assert_eq!(summary.steps, 9);
        assert_eq!(seen.len(), 10);
        let (last, th) = seen.last().unwrap();
        assert!(last.last && last.step == 9 && last.stage == 1 && last.stage_step == 4);
        assert!((last.t - (0.5 + 2.0)).abs() < 1e-15);
        assert_eq!(th, &l.theta);
        assert_eq!((seen[5].0.stage, seen[5].0.stage_step), (1, 0));
        assert!((seen[5].0.t - 0.5).abs() < 1e-15);
        let want_loss = 0.5 * (0.9f64.powi(10) + 3.0 * 4.0 * 0.85f64.powi(8));
        assert!((summary.final_loss - want_loss).abs() < 1e-15);
    }

    /// ηλ > 2 blows up; the error names the step, the stage and the largest parameter.
    #[test]
    fn divergence_is_reported_with_step_stage_and_largest_parameter() {
        let names: Vec<String> = ["x", "y"].map(String::from).to_vec();
        let stages = [Stage {
            name: "hot".into(),
            trained: None,
            lr: 1.0,
            dt: 1.0,
            steps: 1000,
        }];
        let mut l = FlatLearner::new(&[1.0, 1.0], &names, Optimizer::Gd, quadratic([1.0, 3.0]));
        let e = train::<_, TrainError>(&mut l, &stages, &guard(), |_, _| Ok(())).unwrap_err();
        // y ← −2 y: |y| = 2^s passes 1e10 at s = 34
        match &e {
            TrainError::Diverged(d) => {
                assert_eq!(d.step, 34);
                assert_eq!(d.stage.as_deref(), Some("hot"));
                assert_eq!(d.max_name, "y");
            }
            other => panic!("{other}"),
        }
        let text = e.to_string();
        assert!(
            text.contains("diverged at step 34") && text.contains("(y)"),
            "{text}"
        );
        assert!(
            text.contains("stage hot") && text.contains("(eta)"),
            "{text}"
        );
        // a NaN loss stops before the observer sees it
        let mut l = FlatLearner::new(&[1.0], &names[..1], Optimizer::Gd, |s, _, g: &mut [f64]| {
            g[0] = 0.0;
            if s == 3 { f64::NAN } else { 1.0 }
        });
        let mut observed = 0;
        let e = train::<_, TrainError>(&mut l, &stages, &guard(), |_, _| {
            observed += 1;
            Ok(())
        })
        .unwrap_err();
        assert_eq!(observed, 3);
        assert!(e.to_string().contains("at step 3"), "{e}");
    }

    /// Adam's first step moves each trained coordinate by lr·sign(g) (bias correction makes
    /// m̂ = g and v̂ = g²), whatever |g| is; frozen coordinates stay.
    #[test]
    fn adam_first_step_is_lr_times_the_sign() {
        let names: Vec<String> = ["x", "y", "z"].map(String::from).to_vec();
        let mut l = FlatLearner::new(&[1.0, -2.0, 5.0], &names, Optimizer::Adam, |_, th, g| {
            g[0] = 1e3 * th[0];
            g[1] = 1e-3 * th[1];
            g[2] = th[2];
            0.0
        });
        l.evaluate(0);
        l.descend(0, 0.01, Some(&[0, 1]));
        assert!((l.theta[0] - (1.0 - 0.01)).abs() < 1e-9, "{:?}", l.theta);
        assert!((l.theta[1] - (-2.0 + 0.01)).abs() < 1e-6, "{:?}", l.theta);
        assert_eq!(l.theta[2], 5.0);
    }
}
