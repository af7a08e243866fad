//! Events: first threshold crossings and rate peaks, bracketed between accepted steps and located
//! on the dense output by a safeguarded regula falsi ([`first_fired`]).
//!
//! Every event is written as a crossing of an event function g(θ) from g < 0 to g ≥ 0:
//! - `Rises(level)`: g = q − level, the first time q ≥ level (time 0 if q(θ₀) ≥ level);
//! - `Falls(level)`: g = level − q, the first time q ≤ level;
//! - `Peak`: g = −dq/dt along the flow; each downward zero of dq/dt is a local maximum, and the
//!   reported event is the local maximum with the largest q. For the stop rule, a peak counts as
//!   found once every other event of the run has been found and, at a step after that, q lies
//!   below half of its running maximum past a local maximum (so an early bump of q, before
//!   the dynamics it marks, cannot end the run before the real peak);
//! - `ArgmaxChanges { width }`: over the block q_0..q_{width−1} (consecutive coordinates or
//!   observables starting at the event's quantity), with j₀ the first largest entry at t = 0,
//!   g = max_{j ≠ j₀} q_j − q_{j₀}; the event is the first time g > 0 (another entry strictly
//!   overtakes the initial leader; a tie at t = 0 is not a change). Its recorded value is the
//!   0-based index of the new leader.

use super::{FlowError, GradientFlow, Solution, Stage, invalid};

/// What an event watches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quantity {
    /// θ_k.
    Coord(usize),
    /// The loss L(θ).
    Loss,
    /// Observable j of the system.
    Observable(usize),
    /// The rate dθ_k/dt = −mask_k ∂L/∂θ_k.
    Rate(usize),
}

/// When an event fires.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    /// First time the quantity is ≥ the level.
    Rises(f64),
    /// First time the quantity is ≤ the level.
    Falls(f64),
    /// The largest local maximum of the quantity.
    Peak,
    /// The first time the largest of `width` consecutive quantities (starting at the event's
    /// quantity) is no longer the one that was largest at t = 0.
    ArgmaxChanges { width: usize },
}

/// A named event declared with the problem.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSpec {
    pub name: String,
    pub quantity: Quantity,
    pub trigger: Trigger,
}

impl EventSpec {
    pub fn rises(name: impl Into<String>, quantity: Quantity, level: f64) -> Self {
        EventSpec {
            name: name.into(),
            quantity,
            trigger: Trigger::Rises(level),
        }
    }
    pub fn falls(name: impl Into<String>, quantity: Quantity, level: f64) -> Self {
        EventSpec {
            name: name.into(),
            quantity,
            trigger: Trigger::Falls(level),
        }
    }
    pub fn peak(name: impl Into<String>, quantity: Quantity) -> Self {
        EventSpec {
            name: name.into(),
            quantity,
            trigger: Trigger::Peak,
        }
    }
    /// The argmax of the `width` consecutive coordinates (or observables) starting at `first`
    /// changes from its value at t = 0.
    pub fn argmax_changes(name: impl Into<String>, first: Quantity, width: usize) -> Self {
        EventSpec {
            name: name.into(),
            quantity: first,
            trigger: Trigger::ArgmaxChanges { width },
        }
    }

    pub(super) fn validate(&self, dim: usize, n_obs: usize) -> Result<(), FlowError> {
        let field = format!("events.{}", self.name);
        match self.quantity {
            Quantity::Coord(k) | Quantity::Rate(k) if k >= dim => {
                return Err(invalid(
                    &field,
                    format!("coordinate {k} out of range 0..{dim}"),
                ));
            }
            Quantity::Observable(j) if j >= n_obs => {
                return Err(invalid(
                    &field,
                    format!("observable {j} out of range 0..{n_obs}"),
                ));
            }
            _ => {}
        }
        match self.trigger {
            Trigger::Rises(l) | Trigger::Falls(l) if !l.is_finite() => {
                Err(invalid(&field, format!("level must be finite, got {l}")))
            }
            Trigger::ArgmaxChanges { width } => {
                let (start, limit) = match self.quantity {
                    Quantity::Coord(k) => (k, dim),
                    Quantity::Observable(j) => (j, n_obs),
                    _ => {
                        return Err(invalid(
                            &field,
                            "an argmax event watches coordinates or observables",
                        ));
                    }
                };
                if width < 2 || start + width > limit {
                    return Err(invalid(
                        &field,
                        format!(
                            "the block {start}..{} must hold at least 2 entries inside 0..{limit}",
                            start + width
                        ),
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Whether an event function value means the event has happened (g ≥ 0; g > 0 for argmax
/// events, so that a tie is not a change).
fn fired(trigger: Trigger, g: f64) -> bool {
    match trigger {
        Trigger::ArgmaxChanges { .. } => g > 0.0,
        _ => g >= 0.0,
    }
}

/// The crossing in [lo, hi] of a function g that has not fired at lo (`ga = g(lo)`) and has
/// fired at hi (`gb = g(hi)`): the bracket is shrunk, keeping that property, until its width
/// is at most 1e-14 |hi| (or 1e-300) or no float lies strictly inside it, and its fired end is
/// returned, with the number of evaluations of g.
///
/// The trial point is the regula falsi point of the bracket with the Anderson–Björck rule
/// (when the same end moves twice in a row, the value kept at the other end is scaled by
/// m = 1 − g_new/g_old, or ½ if m ≤ 0, so that a stuck end is left superlinearly), kept at
/// least half the final width inside the bracket, so that a converged estimate closes the
/// bracket in one more step. A bisection step is taken instead whenever the last three steps
/// did not halve the bracket, or the values give no finite point (a NaN value counts as not
/// fired, as in bisection). So on the smooth crossings of the flows it needs 5 to 11
/// evaluations instead of bisection's 40 to 50, and on a jump or a multiple root, where regula
/// falsi crawls, at most about three times bisection's.
pub(crate) fn first_fired(
    (mut lo, mut ga): (f64, f64),
    (mut hi, mut gb): (f64, f64),
    fired: impl Fn(f64) -> bool,
    mut g: impl FnMut(f64) -> f64,
) -> (f64, u32) {
    let mut evals = 0;
    // The bracket's width before each of the last three steps (newest first), and which end
    // moved last (+1 hi, −1 lo).
    let mut widths = [f64::INFINITY; 3];
    let mut moved = 0i8;
    // Anderson–Björck's scale for the end that stays put.
    let scale = |new: f64, old: f64| {
        let m = 1.0 - new / old;
        if m > 0.0 { m } else { 0.5 }
    };
    while evals < 1000 {
        let width = hi - lo;
        let mid = 0.5 * (lo + hi);
        let tol = 1e-14 * hi.abs().max(1e-300);
        if mid <= lo || mid >= hi || width <= tol {
            break;
        }
        let falsi = hi - gb * (width / (gb - ga));
        let t = if width > 0.5 * widths[2] || !falsi.is_finite() {
            mid
        } else {
            let q = 0.5 * tol;
            falsi.max(lo + q).min(hi - q)
        };
        let t = if t > lo && t < hi { t } else { mid };
        let v = g(t);
        evals += 1;
        widths = [width, widths[0], widths[1]];
        if fired(v) {
            if moved == 1 {
                ga *= scale(v, gb);
            }
            (hi, gb, moved) = (t, v, 1);
        } else {
            if moved == -1 {
                gb *= scale(v, ga);
            }
            (lo, ga, moved) = (t, v, -1);
        }
    }
    (hi, evals)
}

/// Entry j of the block that starts at `first`.
fn block_entry(first: Quantity, j: usize) -> Quantity {
    match first {
        Quantity::Coord(k) => Quantity::Coord(k + j),
        Quantity::Observable(k) => Quantity::Observable(k + j),
        other => other,
    }
}

/// A located event: `t` is `None` when it did not happen before the run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub name: String,
    pub t: Option<f64>,
    /// The watched quantity at `t`.
    pub value: Option<f64>,
}

/// A bracket [ta, tb] in one segment with g(ta) < 0 ≤ g(tb) (the values ga, gb).
#[derive(Debug, Clone, Copy)]
struct Bracket {
    segment: usize,
    ta: f64,
    tb: f64,
    ga: f64,
    gb: f64,
}

#[derive(Debug, Clone)]
struct Track {
    prev: f64,
    at_start: bool,
    first: Option<Bracket>,
    /// Peak events: candidate brackets with the larger endpoint value of q.
    candidates: Vec<(Bracket, f64)>,
    running_max: f64,
    found: bool,
}

/// Scratch buffers, allocated once per tracker.
struct Scratch {
    g: Vec<f64>,
    velocity: Vec<f64>,
    shifted: Vec<f64>,
    obs: Vec<f64>,
}

pub(crate) struct EventTracker<'a> {
    system: &'a dyn GradientFlow,
    specs: Vec<EventSpec>,
    tracks: Vec<Track>,
    /// For argmax events: the index (in the block) of the leader at t = 0.
    leaders: Vec<usize>,
    scratch: Scratch,
    mask: Vec<f64>,
    segment: usize,
    pub(crate) grad_calls: u64,
    /// Brackets recorded so far (a step that adds one must keep its continuous output).
    pub(crate) brackets: u64,
}

impl<'a> EventTracker<'a> {
    pub(crate) fn new(system: &'a dyn GradientFlow, specs: &[EventSpec], theta0: &[f64]) -> Self {
        let dim = theta0.len();
        let mut tracker = EventTracker {
            system,
            specs: specs.to_vec(),
            tracks: Vec::with_capacity(specs.len()),
            leaders: vec![0; specs.len()],
            scratch: Scratch {
                g: vec![0.0; dim],
                velocity: vec![0.0; dim],
                shifted: vec![0.0; dim],
                obs: vec![0.0; system.observable_names().len()],
            },
            mask: vec![1.0; dim],
            segment: 0,
            grad_calls: 0,
            brackets: 0,
        };
        for (i, spec) in specs.iter().enumerate() {
            if let Trigger::ArgmaxChanges { width } = spec.trigger {
                tracker.leaders[i] = tracker.block_argmax(spec.quantity, width, theta0);
            }
        }
        for (i, spec) in specs.iter().enumerate() {
            let g = tracker.event_fn(i, theta0);
            let at_start = !matches!(spec.trigger, Trigger::Peak) && fired(spec.trigger, g);
            tracker.tracks.push(Track {
                prev: g,
                at_start,
                first: None,
                candidates: Vec::new(),
                running_max: f64::NEG_INFINITY,
                found: at_start,
            });
        }
        tracker
    }

    pub(crate) fn all_found(&self) -> bool {
        self.tracks.iter().all(|t| t.found)
    }

    /// Start a new segment (stage) at θ with this mask: the event functions are re-evaluated so
    /// that no bracket spans a change of mask.
    pub(crate) fn begin_segment(&mut self, segment: usize, theta: &[f64], mask: &[f64]) {
        self.segment = segment;
        self.mask.copy_from_slice(mask);
        for i in 0..self.specs.len() {
            self.tracks[i].prev = self.event_fn(i, theta);
        }
    }

    /// Check one accepted step [ta, tb] ending at θ. Returns whether every event is found.
    pub(crate) fn check_step(&mut self, ta: f64, tb: f64, theta: &[f64]) -> bool {
        let segment = self.segment;
        // whether every event but the peaks was found at an earlier step
        let others_found = self
            .tracks
            .iter()
            .zip(&self.specs)
            .all(|(tr, s)| tr.found || matches!(s.trigger, Trigger::Peak));
        for i in 0..self.specs.len() {
            if self.tracks[i].found && !matches!(self.specs[i].trigger, Trigger::Peak) {
                continue;
            }
            let g = self.event_fn(i, theta);
            let is_peak = matches!(self.specs[i].trigger, Trigger::Peak);
            let q = if is_peak {
                self.quantity(self.specs[i].quantity, theta)
            } else {
                0.0
            };
            let trigger = self.specs[i].trigger;
            let tr = &mut self.tracks[i];
            let crossed = !fired(trigger, tr.prev) && fired(trigger, g);
            let bracket = Bracket {
                segment,
                ta,
                tb,
                ga: tr.prev,
                gb: g,
            };
            tr.prev = g;
            self.brackets += u64::from(crossed);
            if is_peak {
                if crossed {
                    tr.candidates.push((bracket, q));
                }
                tr.running_max = tr.running_max.max(q);
                if others_found
                    && !tr.found
                    && !tr.candidates.is_empty()
                    && q <= 0.5 * tr.running_max
                {
                    tr.found = true;
                }
            } else if crossed {
                tr.first = Some(bracket);
                tr.found = true;
            }
        }
        self.all_found()
    }

    /// Locate every bracketed event on the dense output of `solution`.
    pub(crate) fn locate(&mut self, solution: &Solution, stages: &[Stage]) -> Vec<EventRecord> {
        let dim = self.mask.len();
        let masks: Vec<Vec<f64>> = solution
            .segment_stage_indices()
            .map(|k| {
                let mut m = vec![1.0; dim];
                for &i in &stages[k].frozen {
                    m[i] = 0.0;
                }
                m
            })
            .collect();
        let mut records = Vec::with_capacity(self.specs.len());
        for i in 0..self.specs.len() {
            let name = self.specs[i].name.clone();
            let quantity = self.specs[i].quantity;
            let tr = self.tracks[i].clone();
            let located = if tr.at_start {
                let theta = solution.state_at(0.0).expect("t = 0 lies in the solution");
                self.mask.copy_from_slice(&masks[0]);
                Some((0.0, self.record_value(i, &theta)))
            } else if matches!(self.specs[i].trigger, Trigger::Peak) {
                // Locate the candidates that can hold the largest maximum, keep the largest.
                let best = tr
                    .candidates
                    .iter()
                    .map(|c| c.1)
                    .fold(f64::NEG_INFINITY, f64::max);
                let mut winner: Option<(f64, f64)> = None;
                for (b, q_end) in &tr.candidates {
                    if *q_end < 0.5 * best {
                        continue;
                    }
                    self.mask.copy_from_slice(&masks[b.segment]);
                    let t = self.locate_in(i, solution, *b);
                    let theta = solution.state_in_segment(b.segment, t);
                    let q = self.quantity(quantity, &theta);
                    if winner.is_none_or(|(_, qw)| q > qw) {
                        winner = Some((t, q));
                    }
                }
                winner
            } else {
                tr.first.map(|b| {
                    self.mask.copy_from_slice(&masks[b.segment]);
                    let t = self.locate_in(i, solution, b);
                    let theta = solution.state_in_segment(b.segment, t);
                    (t, self.record_value(i, &theta))
                })
            };
            records.push(EventRecord {
                name,
                t: located.map(|l| l.0),
                value: located.map(|l| l.1),
            });
        }
        records
    }

    /// The event's time in bracket `b`, on the dense output: [`first_fired`] to a relative
    /// width of 1e-14 of t (absolute 1e-300 near 0).
    fn locate_in(&mut self, i: usize, solution: &Solution, b: Bracket) -> f64 {
        let trigger = self.specs[i].trigger;
        let g = |t: f64| self.event_fn(i, &solution.state_in_segment(b.segment, t));
        first_fired((b.ta, b.ga), (b.tb, b.gb), |g| fired(trigger, g), g).0
    }

    /// g(θ) for event i (crossing from g < 0 to g ≥ 0).
    fn event_fn(&mut self, i: usize, theta: &[f64]) -> f64 {
        let spec = &self.specs[i];
        let (quantity, trigger) = (spec.quantity, spec.trigger);
        match trigger {
            Trigger::Rises(level) => self.quantity(quantity, theta) - level,
            Trigger::Falls(level) => level - self.quantity(quantity, theta),
            Trigger::Peak => -self.time_derivative(quantity, theta),
            Trigger::ArgmaxChanges { width } => {
                let lead = self.leaders[i];
                let q0 = self.quantity(block_entry(quantity, lead), theta);
                let mut best = f64::NEG_INFINITY;
                for j in (0..width).filter(|&j| j != lead) {
                    best = best.max(self.quantity(block_entry(quantity, j), theta));
                }
                best - q0
            }
        }
    }

    /// The first index of the largest entry of a block.
    fn block_argmax(&mut self, first: Quantity, width: usize, theta: &[f64]) -> usize {
        let mut best = 0;
        let mut best_q = f64::NEG_INFINITY;
        for j in 0..width {
            let q = self.quantity(block_entry(first, j), theta);
            if q > best_q {
                best_q = q;
                best = j;
            }
        }
        best
    }

    /// What an event records at its time: the watched quantity, or for an argmax event the
    /// index of the (new) leader.
    fn record_value(&mut self, i: usize, theta: &[f64]) -> f64 {
        let spec = &self.specs[i];
        match spec.trigger {
            Trigger::ArgmaxChanges { width } => {
                let first = spec.quantity;
                let lead = self.leaders[i];
                // the leader at the event: the largest entry other than the initial leader
                let mut best = lead;
                let mut best_q = f64::NEG_INFINITY;
                for j in (0..width).filter(|&j| j != lead) {
                    let q = self.quantity(block_entry(first, j), theta);
                    if q > best_q {
                        best_q = q;
                        best = j;
                    }
                }
                best as f64
            }
            _ => self.quantity(spec.quantity, theta),
        }
    }

    fn quantity(&mut self, q: Quantity, theta: &[f64]) -> f64 {
        match q {
            Quantity::Coord(k) => theta[k],
            Quantity::Loss => self.system.loss(theta),
            Quantity::Observable(j) => {
                self.system.observables(theta, &mut self.scratch.obs);
                self.scratch.obs[j]
            }
            Quantity::Rate(k) => {
                self.grad_calls += 1;
                self.system.grad(theta, &mut self.scratch.g);
                -self.mask[k] * self.scratch.g[k]
            }
        }
    }

    /// dq/dt along the flow at θ: exact for a coordinate, a central difference of q along the
    /// velocity θ̇ otherwise (step 1e-6 relative to θ's scale over |θ̇|).
    fn time_derivative(&mut self, q: Quantity, theta: &[f64]) -> f64 {
        self.grad_calls += 1;
        self.system.grad(theta, &mut self.scratch.g);
        let mut vmax: f64 = 0.0;
        for ((v, g), m) in self
            .scratch
            .velocity
            .iter_mut()
            .zip(&self.scratch.g)
            .zip(&self.mask)
        {
            *v = -m * g;
            vmax = vmax.max(v.abs());
        }
        if let Quantity::Coord(k) = q {
            return self.scratch.velocity[k];
        }
        if vmax == 0.0 {
            return 0.0;
        }
        let scale = theta.iter().fold(1.0f64, |s, v| s.max(v.abs()));
        let eps = 1e-6 * scale / vmax;
        let velocity = std::mem::take(&mut self.scratch.velocity);
        let mut shifted = std::mem::take(&mut self.scratch.shifted);
        for ((s, th), v) in shifted.iter_mut().zip(theta).zip(&velocity) {
            *s = th + eps * v;
        }
        let q_plus = self.quantity(q, &shifted);
        for ((s, th), v) in shifted.iter_mut().zip(theta).zip(&velocity) {
            *s = th - eps * v;
        }
        let q_minus = self.quantity(q, &shifted);
        self.scratch.velocity = velocity;
        self.scratch.shifted = shifted;
        (q_plus - q_minus) / (2.0 * eps)
    }
}
