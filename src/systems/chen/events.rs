//! The events of the `[gih]` job (docs/theory/chen.md §9): their definitions, the rows of
//! `events.csv`, and the probe that locates them on the GD-trained models' steps.

use crate::flow::{EventSpec, Quantity};
use crate::report::fmt_f64;
use crate::systems::chen::common::Layout;
use crate::systems::chen::mi::MiEstimate;
use crate::systems::chen::scenario::{GihJobSpec, GihSpec};
use crate::train::crossing::{Crossing, Direction};

// ---------------------------------------------------------------------------------------------
// Events

/// What an event watches: an observable or a coordinate rising to a level, or the argmax of a
/// block of coordinates changing.
#[derive(Debug, Clone)]
pub(crate) enum Watch {
    Obs(usize, f64),
    Coord(usize, f64),
    Argmax(usize, usize),
}

#[derive(Debug, Clone)]
pub(crate) struct EventDef {
    pub(crate) name: String,
    pub(crate) watch: Watch,
}

impl EventDef {
    pub(crate) fn spec(&self) -> EventSpec {
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
pub(crate) fn event_defs(
    lay: &Layout,
    s: &GihSpec,
    job: &GihJobSpec,
    mi: &MiEstimate,
) -> Vec<EventDef> {
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

pub(crate) const BY_DENSE: &str = "root finding on the dense output";
pub(crate) const BY_GD: &str = "linear interpolation between GD steps";
pub(crate) const BY_MAX: &str = "latest of the per-head events";

/// Stage II is done when every head of S* copies its offset: the latest of those events.
pub(crate) fn stage_two_done(
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
pub(crate) struct Probe {
    pub(crate) def: EventDef,
    /// The initially largest entry of a watched block (argmax events).
    leader: usize,
    crossing: Crossing,
    /// The event's value at the step that reached it.
    value: Option<f64>,
    pub(crate) at_start: bool,
}

impl Probe {
    pub(crate) fn new(def: EventDef, theta0: &[f64], obs0: &[f64]) -> Self {
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
    pub(crate) fn observe(&mut self, t: f64, theta: &[f64], obs: &[f64]) {
        if self.value.is_some() {
            return;
        }
        let q = self.quantity(theta, obs);
        if self.crossing.observe(t, q).is_some() {
            self.value = Some(self.value(theta, obs));
        }
    }
    /// (time, value) once the event happened.
    pub(crate) fn found(&self) -> Option<(f64, f64)> {
        self.crossing.time().zip(self.value)
    }
}
