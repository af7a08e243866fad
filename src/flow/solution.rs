//! The result of a solve: dense output per segment, located events, statistics, stop reason.

use super::EventRecord;
use nalgebra::allocator::Allocator;
use nalgebra::{DefaultAllocator, Dim, OVector};
use ode_solvers::continuous_output_model::ContinuousOutputModel;
use serde::Serialize;

/// Why the run ended (not an error: divergence is a [`super::FlowError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The horizon (end of the last stage) was reached.
    Horizon,
    /// Every requested event was found and the margin after the last one has passed.
    EventsFound,
    /// Every requested event was found; the tail after them was cut at its step cap.
    TailSteps,
    /// The run was interrupted (Ctrl-C, SIGTERM): the solution ends at the last accepted step.
    Interrupted,
}

impl StopReason {
    pub fn text(&self) -> &'static str {
        match self {
            StopReason::Horizon => "reached the horizon",
            StopReason::EventsFound => "all events found (plus the margin)",
            StopReason::TailSteps => "all events found (tail cut at its step cap)",
            StopReason::Interrupted => "interrupted",
        }
    }
}

/// Solver statistics, summed over stages. The implicit method's counts and the switch of
/// `method = "auto"` are written only when they happened, so the statistics of an explicit
/// solve read as they always have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SolverStats {
    /// Accepted steps.
    pub steps: u32,
    /// Rejected steps (by the error test; Radau5's failed Newton iterations are not counted).
    pub rejected_steps: u32,
    /// Right-hand-side evaluations made by the integrator (not those of differenced Jacobians).
    pub rhs_evals: u32,
    /// All gradient evaluations (integrator, differenced Jacobians, event location).
    pub grad_calls: u64,
    /// Jacobians formed by the implicit method (each an analytic Hessian or 2·dim gradients).
    #[serde(skip_serializing_if = "is_zero")]
    pub jacobians: u32,
    /// LU decompositions of the implicit method's iteration matrices (a real and a complex
    /// one each).
    #[serde(skip_serializing_if = "is_zero")]
    pub decompositions: u32,
    /// `method = "auto"`: where DOP853 handed over to Radau5, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch: Option<MethodSwitch>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The hand-over of `method = "auto"` from DOP853 to Radau5.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MethodSwitch {
    /// Time of the last accepted DOP853 step; Radau5 continues from its state.
    pub t: f64,
    /// What fired (see [`SwitchReason::text`]).
    pub reason: SwitchReason,
    /// Accepted DOP853 steps before the switch (included in `steps`).
    pub explicit_steps: u32,
}

/// Why `method = "auto"` switched to the implicit method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchReason {
    /// Hairer's DOP853 stiffness test: h·|λ| > 6.1 (the edge of the method's stability
    /// region) in 15 tests without 6 negative ones in a row.
    StiffnessTest,
    /// At least a third of the last 60 attempted steps were rejected (a step size held down by
    /// stability, not accuracy).
    Rejections,
}

impl SwitchReason {
    pub fn text(&self) -> &'static str {
        match self {
            SwitchReason::StiffnessTest => {
                "DOP853's stiffness test (h·|λ| > 6.1 at the stability boundary, 15 times)"
            }
            SwitchReason::Rejections => "a third of the last 60 DOP853 steps were rejected",
        }
    }
}

/// What one stage's integration counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StageStats {
    pub(crate) accepted: u32,
    pub(crate) rejected: u32,
    pub(crate) evals: u32,
    pub(crate) jacobians: u32,
    pub(crate) decompositions: u32,
}

impl From<ode_solvers::dop_shared::Stats> for StageStats {
    fn from(s: ode_solvers::dop_shared::Stats) -> Self {
        StageStats {
            accepted: s.accepted_steps,
            rejected: s.rejected_steps,
            evals: s.num_eval,
            ..StageStats::default()
        }
    }
}

impl SolverStats {
    pub(crate) fn add(&mut self, s: StageStats) {
        self.steps += s.accepted;
        self.rejected_steps += s.rejected;
        self.rhs_evals += s.evals;
        self.jacobians += s.jacobians;
        self.decompositions += s.decompositions;
    }
}

/// The continuous output of one stage: Dopri5's whatever the solver's vector type (stack
/// vectors for small states, heap vectors otherwise; see `flow::integrate_stage`), DOP853's,
/// Radau5's, or two of them spliced.
pub(crate) trait DenseOutput {
    /// The interpolated state at t, if t lies in the model's range.
    fn evaluate(&self, t: f64) -> Option<Vec<f64>>;
}

impl<D: Dim> DenseOutput for ContinuousOutputModel<f64, OVector<f64, D>>
where
    DefaultAllocator: Allocator<D>,
{
    fn evaluate(&self, t: f64) -> Option<Vec<f64>> {
        ContinuousOutputModel::evaluate(self, t).map(|y| y.as_slice().to_vec())
    }
}

/// The continuous output of a stage integrated by two methods in turn (`method = "auto"`):
/// each part covers the time from its start to the next part's start.
pub(crate) struct Spliced {
    pub(crate) parts: Vec<(f64, Box<dyn DenseOutput>)>,
}

impl DenseOutput for Spliced {
    fn evaluate(&self, t: f64) -> Option<Vec<f64>> {
        let i = self.parts.partition_point(|p| p.0 <= t).saturating_sub(1);
        self.parts.get(i)?.1.evaluate(t)
    }
}

enum Dense {
    Interpolant(Box<dyn DenseOutput>),
    Constant(Vec<f64>),
}

/// One stage's piece of the trajectory on [t0, t1].
pub(crate) struct Segment {
    stage: usize,
    t0: f64,
    t1: f64,
    dense: Dense,
}

impl Segment {
    pub(crate) fn dense(stage: usize, t0: f64, t1: f64, model: Box<dyn DenseOutput>) -> Self {
        Segment {
            stage,
            t0,
            t1,
            dense: Dense::Interpolant(model),
        }
    }
    pub(crate) fn constant(stage: usize, t0: f64, t1: f64, theta: Vec<f64>) -> Self {
        Segment {
            stage,
            t0,
            t1,
            dense: Dense::Constant(theta),
        }
    }

    /// The state at t (clamped into [t0, t1]); `None` only in an events-only run, at a step
    /// that kept no continuous output.
    fn eval(&self, t: f64) -> Option<Vec<f64>> {
        match &self.dense {
            Dense::Constant(th) => Some(th.clone()),
            Dense::Interpolant(m) => {
                // Clamp into the model's validity range: t is always inside [t0, t1] here, and
                // the interpolant is only ever evaluated inside the accepted steps.
                m.evaluate(t.clamp(self.t0, self.t1))
            }
        }
    }
}

/// How the solver's state y maps to θ: linear coordinates are θ_k = y_k; a log coordinate
/// (sign s_k = ±1) is θ_k = s_k e^{y_k}.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CoordMap {
    /// 0 for a linear coordinate, ±1 for a log coordinate.
    pub(crate) signs: Vec<f64>,
}

/// ln of the smallest |θ_k| at which a log coordinate's rate is evaluated (see
/// `FlowProblemBuilder::log_coordinates`).
pub(crate) const LOG_FLOOR: f64 = -700.0;

impl CoordMap {
    pub(crate) fn is_identity(&self) -> bool {
        self.signs.iter().all(|&s| s == 0.0)
    }
    /// y from θ (log coordinates must be nonzero).
    pub(crate) fn to_solver(&self, theta: &[f64]) -> Vec<f64> {
        theta
            .iter()
            .zip(&self.signs)
            .map(|(&t, &s)| if s == 0.0 { t } else { t.abs().ln() })
            .collect()
    }
    /// θ from y.
    pub(crate) fn to_theta(&self, y: &[f64], theta: &mut [f64]) {
        for ((t, &v), &s) in theta.iter_mut().zip(y).zip(&self.signs) {
            *t = if s == 0.0 { v } else { s * v.exp() };
        }
    }
    /// θ from y with |θ_k| floored at e^{LOG_FLOOR} for log coordinates (where rates are
    /// evaluated).
    pub(crate) fn to_eval(&self, y: &[f64], theta: &mut [f64]) {
        for ((t, &v), &s) in theta.iter_mut().zip(y).zip(&self.signs) {
            *t = if s == 0.0 {
                v
            } else {
                s * v.max(LOG_FLOOR).exp()
            };
        }
    }
}

/// A solved trajectory: θ(t) anywhere on [0, t_end] from the dense output, and the events.
pub struct Solution {
    map: CoordMap,
    names: Vec<String>,
    stage_names: Vec<String>,
    segments: Vec<Segment>,
    events: Vec<EventRecord>,
    pub stats: SolverStats,
    pub stop: StopReason,
    t_end: f64,
}

impl Solution {
    /// Where and why the solve ended and its step counts, as every job's manifest reports
    /// them: `{"t_end", "stop_reason", "solver_stats"}`.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "t_end": self.t_end(),
            "stop_reason": self.stop,
            "solver_stats": self.stats,
        })
    }

    pub(crate) fn new(
        map: CoordMap,
        names: Vec<String>,
        stage_names: Vec<String>,
        segments: Vec<Segment>,
        stats: SolverStats,
        stop: StopReason,
        t_end: f64,
    ) -> Self {
        Solution {
            map,
            names,
            stage_names,
            segments,
            events: Vec::new(),
            stats,
            stop,
            t_end,
        }
    }

    pub(crate) fn set_events(&mut self, events: Vec<EventRecord>) {
        self.events = events;
    }

    pub(crate) fn segment_stage_indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.segments.iter().map(|s| s.stage)
    }

    /// θ at t in one segment; t lies in a step that kept its continuous output (an event's
    /// bracket).
    pub(crate) fn state_in_segment(&self, segment: usize, t: f64) -> Vec<f64> {
        let y = self.segments[segment]
            .eval(t)
            .expect("an event's bracket keeps its continuous output");
        self.theta_of(y)
    }

    fn theta_of(&self, y: Vec<f64>) -> Vec<f64> {
        if self.map.is_identity() {
            return y;
        }
        let mut theta = vec![0.0; y.len()];
        self.map.to_theta(&y, &mut theta);
        theta
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The time at which the run ended.
    pub fn t_end(&self) -> f64 {
        self.t_end
    }

    /// θ(t) from the dense output, for 0 ≤ t ≤ t_end (None outside, and in an events-only run
    /// at a step that kept no output: see `FlowProblemBuilder::events_only`). At a stage
    /// boundary the later stage's segment is used (the state is continuous there).
    pub fn state_at(&self, t: f64) -> Option<Vec<f64>> {
        if !(0.0..=self.t_end).contains(&t) {
            return None;
        }
        let seg = self
            .segments
            .iter()
            .rev()
            .find(|s| s.t0 <= t)
            .or(self.segments.first())?;
        Some(self.theta_of(seg.eval(t)?))
    }

    /// Name of the stage that is active at time t.
    pub fn stage_at(&self, t: f64) -> Option<&str> {
        let seg = self.segments.iter().rev().find(|s| s.t0 <= t)?;
        Some(&self.stage_names[seg.stage])
    }

    /// The located events, in the order they were declared.
    pub fn events(&self) -> &[EventRecord] {
        &self.events
    }

    /// Time of the named event, if it happened.
    pub fn event_time(&self, name: &str) -> Option<f64> {
        self.events
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.t)
    }
}
