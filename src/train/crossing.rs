//! Event times on sampled trajectories: the models trained alongside a flow are seen only at
//! their steps or checkpoints, so an event (a quantity reaching a level) is located by linear
//! interpolation between the two samples around its first crossing. This is the counterpart,
//! for sampled data, of the root finding on the solver's dense output (`flow`'s events).
//!
//! One rule everywhere: with samples (t₀, v₀), (t₁, v₁) where v₀ has not reached the level and
//! v₁ has, the event time is
//! ```text
//! t = t₀ + (level − v₀)/(v₁ − v₀)·(t₁ − t₀)      (t₁ when v₁ = v₀ or t₁ = t₀)
//! ```
//! clamped to [t₀, t₁]; a level already reached by the first sample gives its time. A NaN
//! sample never counts as reaching the level, and a crossing right after one is put at t₁.

/// How a quantity reaches its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// v ≥ level.
    Rises,
    /// v > level (an event defined by a strict inequality, e.g. an argmax changing).
    RisesAbove,
    /// v ≤ level.
    Falls,
}

/// An on-line crossing detector: feed it the samples in time order.
#[derive(Debug, Clone)]
pub struct Crossing {
    level: f64,
    direction: Direction,
    prev: Option<(f64, f64)>,
    found: Option<f64>,
}

impl Crossing {
    pub fn new(level: f64, direction: Direction) -> Self {
        Crossing {
            level,
            direction,
            prev: None,
            found: None,
        }
    }

    fn reached(&self, v: f64) -> bool {
        match self.direction {
            Direction::Rises => v >= self.level,
            Direction::RisesAbove => v > self.level,
            Direction::Falls => v <= self.level,
        }
    }

    /// Take the sample (t, v); returns the event time once it is known (and from then on,
    /// without looking at later samples).
    pub fn observe(&mut self, t: f64, v: f64) -> Option<f64> {
        if self.found.is_none() {
            if self.reached(v) {
                self.found = Some(match self.prev {
                    None => t,
                    Some((t0, v0)) => interpolate(t0, v0, t, v, self.level),
                });
            }
            self.prev = Some((t, v));
        }
        self.found
    }

    /// The event time, if the level has been reached.
    pub fn time(&self) -> Option<f64> {
        self.found
    }
}

/// The time at which the line through (t₀, v₀), (t₁, v₁) takes the value `level`, clamped to
/// [t₀, t₁] (t₁ when the line is flat, the interval empty or v₀ is NaN).
pub fn interpolate(t0: f64, v0: f64, t1: f64, v1: f64, level: f64) -> f64 {
    if v1 != v0 && t1 > t0 && !v0.is_nan() {
        (t0 + (level - v0) / (v1 - v0) * (t1 - t0)).clamp(t0, t1)
    } else {
        t1
    }
}

/// The first time the samples (t, v), in time order, reach `level` in `direction`.
pub fn first_crossing(
    samples: impl IntoIterator<Item = (f64, f64)>,
    level: f64,
    direction: Direction,
) -> Option<f64> {
    let mut c = Crossing::new(level, direction);
    for (t, v) in samples {
        if let Some(te) = c.observe(t, v) {
            return Some(te);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossings_interpolate_between_samples() {
        let pts = [(0.0, 0.0), (1.0, 0.2), (2.0, 0.6), (3.0, 1.0)];
        assert_eq!(first_crossing(pts, 0.5, Direction::Rises), Some(1.75));
        assert_eq!(first_crossing(pts, 0.0, Direction::Rises), Some(0.0));
        let plateau = [(0.0, 0.0), (1.0, 0.2), (2.0, 0.2), (3.0, 1.0)];
        assert_eq!(first_crossing(plateau, 0.2, Direction::Rises), Some(1.0));
        assert_eq!(
            first_crossing(plateau, 0.2, Direction::RisesAbove),
            Some(2.0)
        );
        assert_eq!(first_crossing(pts, 2.0, Direction::Rises), None);
        let falling = [(0.0, 4.0), (2.0, 1.0)];
        assert_eq!(
            first_crossing(falling, 2.0, Direction::Falls),
            Some(4.0 / 3.0)
        );
    }

    #[test]
    fn a_nan_sample_is_not_a_crossing_and_a_flat_step_gives_its_end() {
        let pts = [(0.0, 0.0), (1.0, f64::NAN), (2.0, 1.0)];
        assert_eq!(first_crossing(pts, 0.5, Direction::Rises), Some(2.0));
        assert_eq!(first_crossing(pts, 0.5, Direction::Falls), Some(0.0));
        assert_eq!(interpolate(1.0, 0.5, 2.0, 0.5, 0.5), 2.0);
        assert_eq!(interpolate(2.0, 0.0, 2.0, 1.0, 0.5), 2.0);
    }

    /// The linear interpolant of a sampled straight line is exact: the crossing of v = a + b t
    /// sampled on any grid is (level − a)/b, to rounding.
    #[test]
    fn a_sampled_line_crosses_where_the_line_does() {
        for (a, b, level) in [(0.1, 0.7, 0.9), (-3.0, 2.5, 1.0), (5.0, -1.25, 0.5)] {
            let grid: Vec<f64> = (0..=37).map(|i| (i as f64 * 0.173).powf(1.3)).collect();
            let dir = if b > 0.0 {
                Direction::Rises
            } else {
                Direction::Falls
            };
            let t = first_crossing(grid.iter().map(|&t| (t, a + b * t)), level, dir).unwrap();
            let exact = (level - a) / b;
            assert!(
                (t - exact).abs() < 1e-12 * exact.abs().max(1.0),
                "{t} vs {exact}"
            );
        }
    }
}
