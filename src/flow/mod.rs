//! The ODE layer: gradient flows dθ/dt = −(mask ⊙ ∇L(θ)) integrated with Dormand–Prince 5(4)
//! from `ode_solvers`, Hairer's 8(5,3) (`dop853.rs`), the implicit Radau IIA of order 5
//! (`radau5.rs`, with the Jacobian −(mask ⊙ H) of `jacobian.rs`) for stiff flows, or DOP853
//! switching to Radau5 where its stiffness test fires (`solver.method`), with events located on
//! the solver's continuous (dense) output.
//!
//! A reduced system implements [`GradientFlow`]. A [`FlowProblem`] is built and validated once
//! ([`FlowProblem::builder`]), with its initial point, schedule of stages (which coordinates move
//! in which time window), events and stop rule, and then [`FlowProblem::solve`]d.
//!
//! Design notes:
//! - the solver adapter (`Rhs`) evaluates the right-hand side without allocating and checks each
//!   accepted step for divergence and event brackets; the integration loop itself is the
//!   solver's;
//! - events are bracketed between accepted steps and then located on the dense output (a
//!   safeguarded regula falsi, `events::first_fired`), never on a sample grid;
//! - the stiffness check of `ode_solvers` is switched off (it aborts long post-emergence tails);
//!   the run instead stops at a configurable margin after the last requested event (capped by a
//!   number of tail steps, since a stiff tail needs steps of O(1) however long the run), or at
//!   the horizon.

mod dop853;
mod events;
mod jacobian;
mod radau5;
mod solution;

pub use events::{EventRecord, EventSpec, Quantity, Trigger};
pub use solution::{MethodSwitch, Solution, SolverStats, StopReason, SwitchReason};

use crate::report::short;
use nalgebra::allocator::Allocator;
use nalgebra::{Const, DefaultAllocator, Dim, Dyn, OVector, U1};
use ode_solvers::continuous_output_model::ContinuousOutputModel;
use ode_solvers::dop_shared::{IntegrationError, OutputType};
use ode_solvers::{Dopri5, System};
use std::cell::{Cell, RefCell};

use events::EventTracker;
use solution::{CoordMap, DenseOutput, Segment, Spliced, StageStats};

/// A reduced training dynamics: a loss on a small parameter vector and its exact gradient.
///
/// The flow integrated is dθ/dt = −∇L(θ) (with frozen coordinates masked out).
pub trait GradientFlow: Sync {
    /// Coordinate names, in the order of θ (e.g. `alpha3`, `beta2`, `gamma3`).
    fn names(&self) -> &[String];
    /// The loss L(θ).
    fn loss(&self, theta: &[f64]) -> f64;
    /// The exact gradient ∇L(θ), written into `out` (same length as θ). Must not allocate.
    fn grad(&self, theta: &[f64], out: &mut [f64]);
    /// Names of derived quantities reported beside θ (e.g. attention weights).
    fn observable_names(&self) -> &[String] {
        &[]
    }
    /// Values of the observables at θ, written into `out` (length `observable_names().len()`).
    fn observables(&self, _theta: &[f64], _out: &mut [f64]) {}
    /// Why θ lies outside the region where the loss is defined (e.g. where a closed form is
    /// valid), or `None` inside it (the default: everywhere). The integrator rejects a step
    /// whose stages leave the region and retries a shorter one; an initial point outside it, or
    /// a run that cannot continue inside it, is a [`FlowError::OutsideDomain`].
    fn domain_error(&self, _theta: &[f64]) -> Option<String> {
        None
    }
    /// The Hessian ∇²L(θ), row-major into `out` (dim × dim), when the system has it in closed
    /// form; returns whether it wrote it. The default (`false`) lets the implicit method
    /// difference the exact gradient instead (`flow::jacobian`). Must not allocate; tested
    /// against central differences of [`GradientFlow::grad`] like every hand-written
    /// derivative.
    fn hessian(&self, _theta: &[f64], _out: &mut [f64]) -> bool {
        false
    }
}

/// Errors of the flow layer. Divergence is an error carrying the time and state.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The problem definition is inconsistent (a builder setter got a bad value).
    #[error("{field}: {message}")]
    InvalidProblem { field: String, message: String },
    /// The integration produced a non-finite or exploding state, or the step size collapsed.
    #[error(
        "the flow diverged at t = {t}: {reason}; state: {}",
        format_state(names, theta)
    )]
    Diverged {
        t: f64,
        reason: String,
        names: Vec<String>,
        theta: Vec<f64>,
    },
    /// The state left the system's domain ([`GradientFlow::domain_error`]), or started outside.
    #[error(
        "the flow left the domain of its loss at t = {t}: {reason}; state: {}",
        format_state(names, theta)
    )]
    OutsideDomain {
        t: f64,
        reason: String,
        names: Vec<String>,
        theta: Vec<f64>,
    },
    /// The step budget ran out before the horizon.
    #[error(
        "the solver used its budget of {max_steps} steps and stopped at t = {t} (horizon {t_max}); \
         raise solver.max_steps or shorten the horizon"
    )]
    MaxSteps { max_steps: u32, t: f64, t_max: f64 },
}

fn format_state(names: &[String], theta: &[f64]) -> String {
    names
        .iter()
        .zip(theta)
        .map(|(n, v)| format!("{n} = {}", short(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn invalid(field: &str, message: impl Into<String>) -> FlowError {
    FlowError::InvalidProblem {
        field: field.to_string(),
        message: message.into(),
    }
}

pub use crate::scenario::Method;

/// One time window of a schedule: the listed coordinates are frozen (their derivative is zero).
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub name: String,
    pub duration: f64,
    pub frozen: Vec<usize>,
}

impl Stage {
    pub fn new(name: impl Into<String>, duration: f64) -> Self {
        Stage {
            name: name.into(),
            duration,
            frozen: Vec::new(),
        }
    }
    /// Freeze these coordinate indices during this stage.
    pub fn frozen(mut self, idx: impl IntoIterator<Item = usize>) -> Self {
        self.frozen.extend(idx);
        self
    }
}

/// A validated gradient-flow problem. Build it with [`FlowProblem::builder`].
pub struct FlowProblem<'a> {
    system: &'a dyn GradientFlow,
    init: Vec<f64>,
    stages: Vec<Stage>,
    method: Method,
    rtol: f64,
    atol: f64,
    events: Vec<EventSpec>,
    margin: Option<f64>,
    tail_steps: u32,
    max_steps: u32,
    bound: f64,
    map: CoordMap,
    events_only: bool,
}

/// Builder for [`FlowProblem`]. Defaults: θ(0) = 0, rtol = 1e-10, atol = 1e-12, no events, run
/// to the horizon, at most 10⁶ steps (and 5000 steps after the last event when stopping after
/// events), divergence bound |θ_i| ≤ 1e100. A horizon (`t_max`) or a list of stages is required.
pub struct FlowProblemBuilder<'a> {
    system: &'a dyn GradientFlow,
    init: Option<Vec<f64>>,
    t_max: Option<f64>,
    stages: Option<Vec<Stage>>,
    frozen: Vec<usize>,
    method: Method,
    rtol: f64,
    atol: f64,
    events: Vec<EventSpec>,
    margin: Option<f64>,
    tail_steps: u32,
    max_steps: u32,
    bound: f64,
    log_coords: Vec<usize>,
    events_only: bool,
}

impl<'a> FlowProblem<'a> {
    pub fn builder(system: &'a dyn GradientFlow) -> FlowProblemBuilder<'a> {
        FlowProblemBuilder {
            system,
            init: None,
            t_max: None,
            stages: None,
            frozen: Vec::new(),
            method: Method::Dopri5,
            rtol: 1e-10,
            atol: 1e-12,
            events: Vec::new(),
            margin: None,
            tail_steps: 5000,
            max_steps: 1_000_000,
            bound: crate::scenario::validate::DIVERGENCE_BOUND,
            log_coords: Vec::new(),
            events_only: false,
        }
    }
}

impl<'a> FlowProblemBuilder<'a> {
    /// Initial point θ(0); default zero.
    pub fn init(mut self, theta0: &[f64]) -> Self {
        self.init = Some(theta0.to_vec());
        self
    }
    /// Horizon of a single-stage run.
    pub fn t_max(mut self, t_max: f64) -> Self {
        self.t_max = Some(t_max);
        self
    }
    /// A staged schedule; the horizon is the sum of the durations.
    pub fn stages(mut self, stages: Vec<Stage>) -> Self {
        self.stages = Some(stages);
        self
    }
    /// Coordinates frozen in every stage.
    pub fn freeze(mut self, idx: impl IntoIterator<Item = usize>) -> Self {
        self.frozen.extend(idx);
        self
    }
    /// The solver settings of a scenario's `[solver]`: method, tolerances, step budget.
    pub fn solver(self, spec: &crate::scenario::SolverSpec) -> Self {
        self.method(spec.method)
            .tolerances(spec.rtol, spec.atol)
            .max_steps(spec.max_steps)
    }
    /// The integrator (default Dopri5).
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }
    pub fn tolerances(mut self, rtol: f64, atol: f64) -> Self {
        self.rtol = rtol;
        self.atol = atol;
        self
    }
    pub fn event(mut self, spec: EventSpec) -> Self {
        self.events.push(spec);
        self
    }
    pub fn events(mut self, specs: impl IntoIterator<Item = EventSpec>) -> Self {
        self.events.extend(specs);
        self
    }
    /// Stop once every event has been found, after a further `margin` × (time of the last one).
    /// Without this the run goes to the horizon.
    pub fn stop_after_events(mut self, margin: f64) -> Self {
        self.margin = Some(margin);
        self
    }
    /// At most this many accepted steps after every event was found (stop-after-events only).
    pub fn tail_steps(mut self, n: u32) -> Self {
        self.tail_steps = n;
        self
    }
    pub fn max_steps(mut self, n: u32) -> Self {
        self.max_steps = n;
        self
    }
    /// Integrate these coordinates as y_k = ln|θ_k| instead of θ_k. The trajectory is the same
    /// (the sign is kept from θ(0), which must be nonzero); the solver integrates
    /// dy_k/dt = (dθ_k/dt)/θ_k. Meant for coordinates whose rate is proportional to themselves
    /// (dθ_k/dt ∝ θ_k, which never cross zero), where it turns exponential decay into a straight
    /// line and removes the stiffness of decayed coordinates. The rate is evaluated with |θ_k|
    /// floored at e^{−700}, so a coordinate that has decayed below the f64 range keeps a finite
    /// rate (its own contribution to the gradient is then below f64 resolution); its reported
    /// value e^{y_k} may underflow to 0.
    pub fn log_coordinates(mut self, idx: impl IntoIterator<Item = usize>) -> Self {
        self.log_coords.extend(idx);
        self
    }
    /// Keep the continuous output only where the events need it: the steps that bracket an
    /// event (where it is located) and the first step. For a run that is only asked for its
    /// event times (a sweep point, a timing): with `Method::Dop853` it skips the three extra
    /// right-hand sides per step of the 7th-order interpolant everywhere else, and the event
    /// times are the same to the last bit (they are located on the same interpolant).
    /// [`Solution::state_at`] then returns `None` at times whose step kept no output. Dopri5's
    /// continuous output costs no extra right-hand side; it is kept whole either way.
    pub fn events_only(mut self) -> Self {
        self.events_only = true;
        self
    }
    /// |θ_i| above this counts as divergence.
    pub fn divergence_bound(mut self, bound: f64) -> Self {
        self.bound = bound;
        self
    }

    /// Validate and build. Errors name the setter's field.
    pub fn build(self) -> Result<FlowProblem<'a>, FlowError> {
        let dim = self.system.names().len();
        let init = self.init.unwrap_or_else(|| vec![0.0; dim]);
        if init.len() != dim {
            return Err(invalid(
                "init",
                format!("expected {dim} values, got {}", init.len()),
            ));
        }
        if let Some(i) = init.iter().position(|v| !v.is_finite()) {
            return Err(invalid(
                "init",
                format!("{} must be finite, got {}", self.system.names()[i], init[i]),
            ));
        }
        if let Some(reason) = self.system.domain_error(&init) {
            return Err(FlowError::OutsideDomain {
                t: 0.0,
                reason: format!("the initial point is outside: {reason}"),
                names: self.system.names().to_vec(),
                theta: init,
            });
        }
        if !(self.rtol > 0.0 && self.rtol < 1.0) {
            return Err(invalid(
                "rtol",
                format!("must be in (0, 1), got {}", self.rtol),
            ));
        }
        if !(self.atol > 0.0 && self.atol.is_finite()) {
            return Err(invalid("atol", format!("must be > 0, got {}", self.atol)));
        }
        let mut stages = match (self.stages, self.t_max) {
            (Some(_), Some(_)) => {
                return Err(invalid("t_max", "give either t_max or stages, not both"));
            }
            (None, None) => return Err(invalid("t_max", "a horizon is required")),
            (None, Some(t)) => vec![Stage::new("main", t)],
            (Some(s), None) => s,
        };
        if stages.is_empty() {
            return Err(invalid("stages", "must not be empty"));
        }
        for s in &mut stages {
            if !(s.duration > 0.0 && s.duration.is_finite()) {
                return Err(invalid(
                    if s.name == "main" {
                        "t_max"
                    } else {
                        "stages.duration"
                    },
                    format!("must be > 0 and finite, got {}", s.duration),
                ));
            }
            s.frozen.extend(self.frozen.iter().copied());
            s.frozen.sort_unstable();
            s.frozen.dedup();
            if let Some(&i) = s.frozen.iter().find(|&&i| i >= dim) {
                return Err(invalid(
                    "frozen",
                    format!("coordinate index {i} out of range 0..{dim}"),
                ));
            }
        }
        if let Some(m) = self.margin
            && !(m >= 0.0 && m.is_finite())
        {
            return Err(invalid("margin", format!("must be >= 0, got {m}")));
        }
        if self.tail_steps == 0 {
            return Err(invalid("tail_steps", "must be >= 1"));
        }
        let n_obs = self.system.observable_names().len();
        for e in &self.events {
            e.validate(dim, n_obs)?;
        }
        if self.max_steps == 0 {
            return Err(invalid("max_steps", "must be >= 1"));
        }
        let mut signs = vec![0.0; dim];
        for &k in &self.log_coords {
            if k >= dim {
                return Err(invalid(
                    "log_coordinates",
                    format!("coordinate index {k} out of range 0..{dim}"),
                ));
            }
            if init[k] == 0.0 {
                return Err(invalid(
                    "log_coordinates",
                    format!(
                        "{} starts at 0 and cannot be integrated in log scale",
                        self.system.names()[k]
                    ),
                ));
            }
            signs[k] = init[k].signum();
        }
        Ok(FlowProblem {
            system: self.system,
            init,
            stages,
            method: self.method,
            rtol: self.rtol,
            atol: self.atol,
            events: self.events,
            margin: self.margin,
            tail_steps: self.tail_steps,
            max_steps: self.max_steps,
            bound: self.bound,
            map: CoordMap { signs },
            events_only: self.events_only,
        })
    }
}

/// What the per-step checks learn during one integration; owned by `solve`, borrowed by `Rhs`.
struct StepState<'a> {
    tracker: EventTracker<'a>,
    t_prev: f64,
    stop_at: Option<f64>,
    /// Steps taken since every event was found.
    tail: u32,
    tail_cut: bool,
    failure: Option<FlowError>,
    /// The run was interrupted after the latest accepted step.
    interrupted: bool,
    last_good: (f64, Vec<f64>),
    /// θ of the latest accepted step (converted from the solver's state).
    theta: Vec<f64>,
    /// Whether the latest accepted step must keep its continuous output (events-only runs:
    /// it bracketed an event, or it is the run's first step).
    keep_dense: bool,
}

/// The Dopri5 adapter: right-hand side and per-step checks.
struct Rhs<'a, 'b> {
    system: &'a dyn GradientFlow,
    map: &'b CoordMap,
    /// No log coordinates: the solver's state is θ itself.
    linear: bool,
    /// θ at which the right-hand side is evaluated (scratch; `system` takes `&self`).
    eval: RefCell<Vec<f64>>,
    mask: Vec<f64>,
    /// Some coordinate of this stage is frozen (a 0 in `mask`).
    any_frozen: bool,
    grad_calls: &'b Cell<u64>,
    /// The last stage point outside the system's domain (reason), if any; such a stage makes
    /// the step non-finite, so the solver rejects it and retries a shorter one.
    outside: &'b RefCell<Option<String>>,
    state: &'b mut StepState<'a>,
    bound: f64,
    margin: Option<f64>,
    tail_steps: u32,
    events_only: bool,
}

impl Rhs<'_, '_> {
    /// Whether the step just reported to `solout` keeps its continuous output.
    fn keep_dense(&self) -> bool {
        !self.events_only || self.state.keep_dense
    }
}

impl<D: Dim> System<f64, OVector<f64, D>> for Rhs<'_, '_>
where
    DefaultAllocator: Allocator<D>,
{
    fn system(&self, _t: f64, y: &OVector<f64, D>, dy: &mut OVector<f64, D>) {
        self.grad_calls.set(self.grad_calls.get() + 1);
        let out = dy.as_mut_slice();
        // A stage outside the domain is marked non-finite. Later stages of the same step are
        // evaluated at states built from it; they must stay non-finite too, because Dormand–
        // Prince's error estimate does not use the second stage itself (its weight is zero),
        // and only a non-finite error estimate makes the solver reject the step.
        // (an `or` over the lanes: one branch-free pass without a serial dependency chain)
        if y.iter().fold(false, |bad, v| bad | !v.is_finite()) {
            out.fill(f64::NAN);
            return;
        }
        // θ from the solver's state (ln|θ_k| for log coordinates).
        let mut guard = self.eval.borrow_mut();
        let theta: &[f64] = if self.linear {
            y.as_slice()
        } else {
            self.map.to_eval(y.as_slice(), &mut guard);
            &guard
        };
        if let Some(reason) = self.system.domain_error(theta) {
            out.fill(f64::NAN);
            *self.outside.borrow_mut() = Some(reason);
            return;
        }
        self.system.grad(theta, out);
        if self.linear && !self.any_frozen {
            for o in out.iter_mut() {
                *o = -*o;
            }
        } else if self.linear {
            for (o, m) in out.iter_mut().zip(&self.mask) {
                *o *= -m;
            }
        } else {
            for k in 0..out.len() {
                out[k] *= -self.mask[k];
                if self.map.signs[k] != 0.0 {
                    out[k] /= theta[k];
                }
            }
        }
    }

    fn solout(&mut self, t: f64, y: &OVector<f64, D>, dy: &OVector<f64, D>) -> bool {
        let st = &mut *self.state;
        self.map.to_theta(y.as_slice(), &mut st.theta);
        let theta = st.theta.as_slice();
        let bad = if theta
            .iter()
            .chain(y.as_slice())
            .chain(dy.as_slice())
            .any(|v| !v.is_finite())
        {
            Some("non-finite state or gradient")
        } else if theta.iter().any(|v| v.abs() > self.bound) {
            Some("a coordinate exceeded the divergence bound")
        } else {
            None
        };
        if let Some(reason) = bad {
            st.failure = Some(FlowError::Diverged {
                t,
                reason: format!("{reason} (last finite state at t = {})", st.last_good.0),
                names: self.system.names().to_vec(),
                theta: theta.to_vec(),
            });
            return true;
        }
        st.last_good.0 = t;
        st.last_good.1.copy_from_slice(theta);
        if crate::interrupt::requested() {
            st.interrupted = true;
            st.keep_dense = true;
            return true;
        }
        let brackets = st.tracker.brackets;
        let found_all = st.tracker.check_step(st.t_prev, t, &st.theta);
        // the first step keeps its output too (an event that holds at t = 0 is read there)
        st.keep_dense = st.tracker.brackets != brackets || st.t_prev == 0.0;
        st.t_prev = t;
        if let (true, Some(m), None) = (found_all, self.margin, st.stop_at) {
            st.stop_at = Some(t * (1.0 + m));
        }
        match st.stop_at {
            Some(s) if t >= s => true,
            Some(_) => {
                st.tail += 1;
                st.tail_cut = st.tail >= self.tail_steps;
                st.tail_cut
            }
            None => false,
        }
    }
}

impl FlowProblem<'_> {
    pub fn system(&self) -> &dyn GradientFlow {
        self.system
    }

    /// Horizon: the end of the last stage.
    pub fn t_max(&self) -> f64 {
        self.stages.iter().map(|s| s.duration).sum()
    }

    /// Integrate the flow through every stage, then locate the bracketed events on the dense
    /// output.
    pub fn solve(&self) -> Result<Solution, FlowError> {
        let dim = self.init.len();
        let grad_calls = Cell::new(0u64);
        let tracker = EventTracker::new(self.system, &self.events, &self.init);
        let mut state = StepState {
            stop_at: (self.margin.is_some() && tracker.all_found()).then_some(0.0),
            tracker,
            t_prev: 0.0,
            tail: 0,
            tail_cut: false,
            failure: None,
            interrupted: false,
            last_good: (0.0, self.init.clone()),
            theta: self.init.clone(),
            keep_dense: true,
        };
        // the solver's state y (θ itself, or ln|θ_k| for log coordinates)
        let mut theta = self.map.to_solver(&self.init);
        let mut t0 = 0.0;
        let mut stats = SolverStats::default();
        let mut segments = Vec::new();
        let mut stop = StopReason::Horizon;
        for (k, stage) in self.stages.iter().enumerate() {
            if matches!(state.stop_at, Some(s) if t0 >= s) {
                stop = StopReason::EventsFound;
                if segments.is_empty() {
                    // Every event held at t = 0: the run is the initial point alone.
                    segments.push(Segment::constant(k, t0, t0, theta.clone()));
                }
                break;
            }
            let t1 = t0 + stage.duration;
            let mut mask = vec![1.0; dim];
            for &i in &stage.frozen {
                mask[i] = 0.0;
            }
            self.map.to_theta(&theta, &mut state.theta);
            let theta_now = state.theta.clone();
            state
                .tracker
                .begin_segment(segments.len(), &theta_now, &mask);
            if stage.frozen.len() == dim {
                // Nothing moves: the stage is a constant segment; no integration is needed.
                segments.push(Segment::constant(k, t0, t1, theta.clone()));
                t0 = t1;
                continue;
            }
            state.t_prev = t0;
            let outside = RefCell::new(None);
            let rhs = Rhs {
                system: self.system,
                map: &self.map,
                linear: self.map.is_identity(),
                eval: RefCell::new(vec![0.0; dim]),
                any_frozen: !stage.frozen.is_empty(),
                mask,
                grad_calls: &grad_calls,
                outside: &outside,
                state: &mut state,
                bound: self.bound,
                margin: self.margin,
                tail_steps: self.tail_steps,
                events_only: self.events_only,
            };
            let remaining = self.max_steps.saturating_sub(stats.steps);
            // `auto` stays implicit once it has switched.
            let method = match (self.method, stats.switch) {
                (Method::Auto, Some(_)) => Method::Radau5,
                (m, _) => m,
            };
            let StageRun {
                result,
                t_reached,
                y_last,
                dense,
                stiff,
            } = integrate_stage(
                method,
                rhs,
                (t0, t1, stage.duration),
                &theta,
                (self.rtol, self.atol),
                remaining,
            );
            if let Some(h) = stiff {
                stats.switch = Some(MethodSwitch {
                    t: h.t,
                    reason: h.reason,
                    explicit_steps: stats.steps + h.explicit_steps,
                });
            }
            let diverged = |t: f64, reason: String, theta: Vec<f64>| FlowError::Diverged {
                t,
                reason,
                names: self.system.names().to_vec(),
                theta,
            };
            // A failed stage whose rejected steps left the domain is reported as leaving it.
            if result.is_err()
                && let Some(reason) = outside.borrow_mut().take()
            {
                let (tg, th) = std::mem::take(&mut state.last_good);
                return Err(FlowError::OutsideDomain {
                    t: tg,
                    reason: format!(
                        "{reason} (the solver could not continue inside the domain; last \
                         accepted state follows)"
                    ),
                    names: self.system.names().to_vec(),
                    theta: th,
                });
            }
            match result {
                Ok(s) => stats.add(s),
                Err(IntegrationError::MaxNumStepReached { x, .. }) => {
                    return Err(FlowError::MaxSteps {
                        max_steps: self.max_steps,
                        t: x,
                        t_max: self.t_max(),
                    });
                }
                Err(IntegrationError::StepSizeUnderflow { x }) => {
                    let (tg, th) = std::mem::take(&mut state.last_good);
                    return Err(diverged(
                        x,
                        format!("the step size collapsed; last accepted state (t = {tg}) follows"),
                        th,
                    ));
                }
                Err(IntegrationError::StiffnessDetected { x }) => {
                    // Unreachable with the stiffness test off; reported honestly if it happens.
                    let th = std::mem::take(&mut state.last_good.1);
                    return Err(diverged(x, "the solver reported stiffness".into(), th));
                }
            }
            if let Some(f) = state.failure.take() {
                return Err(f);
            }
            segments.push(Segment::dense(k, t0, t_reached, dense));
            if let Some(y) = y_last {
                theta = y;
            }
            if state.interrupted {
                stop = StopReason::Interrupted;
                t0 = t_reached;
                break;
            }
            if state.tail_cut {
                stop = StopReason::TailSteps;
                t0 = t_reached;
                break;
            }
            if matches!(state.stop_at, Some(s) if t_reached >= s) {
                stop = StopReason::EventsFound;
                t0 = t_reached;
                break;
            }
            t0 = t1;
        }
        let mut solution = Solution::new(
            self.map.clone(),
            self.system.names().to_vec(),
            self.stages.iter().map(|s| s.name.clone()).collect(),
            segments,
            stats,
            stop,
            t0,
        );
        let records = state.tracker.locate(&solution, &self.stages);
        solution.stats.grad_calls = grad_calls.get() + state.tracker.grad_calls;
        solution.set_events(records);
        Ok(solution)
    }
}

/// What one stage's integration returns.
struct StageRun {
    result: Result<StageStats, IntegrationError>,
    /// Time of the last accepted step (t0 if none).
    t_reached: f64,
    /// Solver state at `t_reached`, if a step was accepted.
    y_last: Option<Vec<f64>>,
    dense: Box<dyn DenseOutput>,
    /// `auto`: DOP853 detected stiffness (then, after `integrate_stage`, the counts in `result`
    /// are both methods').
    stiff: Option<Handover>,
}

/// Where DOP853 hands over to Radau5 (`auto`).
#[derive(Debug, Clone, Copy)]
struct Handover {
    reason: SwitchReason,
    /// Time of DOP853's last accepted step in this stage.
    t: f64,
    /// DOP853's proposal for its next step (Radau5's first).
    h_next: f64,
    /// DOP853's accepted steps in this stage.
    explicit_steps: u32,
}

/// Integrate one stage from y0 on `span` = (t0, t1, duration) with the method: Dormand–Prince
/// 5(4) (`ode_solvers`, with its continuous output), DOP853, Radau5, or (`auto`) DOP853 until
/// it detects stiffness and Radau5 from there. States of up to 24 coordinates use fixed-size
/// vectors in the explicit methods, so that the solver's vector arithmetic (seven stage vectors,
/// the dense-output coefficients and their temporaries, every step) allocates nothing; larger
/// states use heap vectors. The arithmetic is the same element by element either way. Radau5
/// works on heap vectors (its linear algebra is dense LU on heap matrices anyway).
fn integrate_stage(
    method: Method,
    mut rhs: Rhs,
    span: (f64, f64, f64),
    y0: &[f64],
    tolerances: (f64, f64),
    max_steps: u32,
) -> StageRun {
    let detect = method == Method::Auto;
    let explicit = match method {
        Method::Radau5 => {
            return radau5::run_stage(&mut rhs, span, y0, tolerances, max_steps, None);
        }
        Method::Dopri5 => return dopri5_stage(rhs, span, y0, tolerances, max_steps),
        Method::Dop853 | Method::Auto => {
            dop853_stage(&mut rhs, span, y0, tolerances, max_steps, detect)
        }
    };
    let Some(handover) = explicit.stiff else {
        return explicit;
    };
    // `auto`: Radau5 from DOP853's last accepted state to the end of the stage.
    let (t_switch, t1) = (handover.t, span.1);
    let y = explicit.y_last.clone().unwrap_or_else(|| y0.to_vec());
    let explicit_stats = match explicit.result {
        Ok(s) => s,
        Err(e) => {
            return StageRun {
                result: Err(e),
                ..explicit
            };
        }
    };
    let implicit = radau5::run_stage(
        &mut rhs,
        (t_switch, t1, t1 - t_switch),
        &y,
        tolerances,
        max_steps.saturating_sub(explicit_stats.accepted),
        Some(handover.h_next),
    );
    let result = implicit.result.map(|s| StageStats {
        accepted: explicit_stats.accepted + s.accepted,
        rejected: explicit_stats.rejected + s.rejected,
        evals: explicit_stats.evals + s.evals,
        jacobians: s.jacobians,
        decompositions: s.decompositions,
    });
    StageRun {
        result,
        t_reached: implicit.t_reached,
        y_last: implicit.y_last.or(explicit.y_last),
        dense: Box::new(Spliced {
            parts: vec![(span.0, explicit.dense), (t_switch, implicit.dense)],
        }),
        stiff: Some(handover),
    }
}

/// Dopri5 on stack vectors for small states (see [`integrate_stage`]).
fn dopri5_stage(
    rhs: Rhs,
    span: (f64, f64, f64),
    y0: &[f64],
    tolerances: (f64, f64),
    max_steps: u32,
) -> StageRun {
    #[cfg(test)]
    if tests::FORCE_HEAP.with(|f| f.get()) {
        return run_stage::<Dyn>(rhs, span, y0, tolerances, max_steps);
    }
    macro_rules! by_dim {
        ($($n:literal)*) => {
            match y0.len() {
                $($n => run_stage::<Const<$n>>(rhs, span, y0, tolerances, max_steps),)*
                _ => run_stage::<Dyn>(rhs, span, y0, tolerances, max_steps),
            }
        };
    }
    by_dim!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24)
}

/// DOP853 on stack vectors for small states (see [`integrate_stage`]); `detect`: stop at the
/// first accepted step where the problem turns stiff (`auto`).
fn dop853_stage(
    rhs: &mut Rhs,
    span: (f64, f64, f64),
    y0: &[f64],
    tolerances: (f64, f64),
    max_steps: u32,
    detect: bool,
) -> StageRun {
    #[cfg(test)]
    if tests::FORCE_HEAP.with(|f| f.get()) {
        return dop853::run_stage::<Dyn>(rhs, span, y0, tolerances, max_steps, detect);
    }
    macro_rules! by_dim {
        ($($n:literal)*) => {
            match y0.len() {
                $($n => dop853::run_stage::<Const<$n>>(rhs, span, y0, tolerances, max_steps, detect),)*
                _ => dop853::run_stage::<Dyn>(rhs, span, y0, tolerances, max_steps, detect),
            }
        };
    }
    by_dim!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24)
}

/// [`integrate_stage`] for one vector type; `span` is (t0, t1, t1 − t0 as the stage states
/// it), the last used as the largest step and the output increment.
fn run_stage<D: Dim>(
    rhs: Rhs,
    (t0, t1, duration): (f64, f64, f64),
    y0: &[f64],
    (rtol, atol): (f64, f64),
    max_steps: u32,
) -> StageRun
where
    DefaultAllocator: Allocator<D>,
    OVector<f64, D>: std::ops::Mul<f64, Output = OVector<f64, D>>,
{
    let y0 =
        OVector::<f64, D>::from_iterator_generic(D::from_usize(y0.len()), U1, y0.iter().copied());
    let mut dense = ContinuousOutputModel::new();
    let mut solver = Dopri5::from_param(
        rhs,
        t0,
        t1,
        duration,
        y0,
        rtol,
        atol,
        0.9,
        0.04,
        0.2,
        10.0,
        duration,
        0.0,
        max_steps,
        u32::MAX, // the stiffness test is switched off (see the module doc)
        OutputType::Continuous,
    );
    let result = solver
        .integrate_with_continuous_output_model(&mut dense)
        .map(StageStats::from);
    let t_reached = solver.x_out().last().copied().unwrap_or(t0);
    let y_last = solver.y_out().last().map(|y| y.as_slice().to_vec());
    StageRun {
        result,
        t_reached,
        y_last,
        dense: Box::new(dense),
        stiff: None,
    }
}

#[cfg(test)]
mod tests;

/// Calls `f` with a right-hand side of `system` (no events, no stop rule) whose solver state
/// uses `signs` (0 linear, ±1 log coordinate) and the stage mask `mask`: for tests of the
/// pieces an integrator is built from (the Jacobian, one stage of Radau5).
#[cfg(test)]
fn with_rhs<R>(
    system: &dyn GradientFlow,
    signs: Vec<f64>,
    mask: Vec<f64>,
    f: impl FnOnce(&mut Rhs) -> R,
) -> R {
    let dim = signs.len();
    let map = CoordMap { signs };
    let grad_calls = Cell::new(0u64);
    let outside = RefCell::new(None);
    let theta0 = vec![0.0; dim];
    let mut state = StepState {
        tracker: EventTracker::new(system, &[], &theta0),
        t_prev: 0.0,
        stop_at: None,
        tail: 0,
        tail_cut: false,
        failure: None,
        interrupted: false,
        last_good: (0.0, theta0.clone()),
        theta: theta0,
        keep_dense: true,
    };
    let mut rhs = Rhs {
        system,
        linear: map.is_identity(),
        map: &map,
        eval: RefCell::new(vec![0.0; dim]),
        any_frozen: mask.contains(&0.0),
        mask,
        grad_calls: &grad_calls,
        outside: &outside,
        state: &mut state,
        bound: 1e100,
        margin: None,
        tail_steps: u32::MAX,
        events_only: false,
    };
    f(&mut rhs)
}
