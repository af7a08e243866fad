//! When a model trained alongside a flow is recorded: the one checkpoint policy of the
//! training driver's observers.
//!
//! - [`Policy::Every`]: every k-th step, and the final state (the full Musat model);
//! - [`Policy::LogSpaced`]: step 0, then `count − 1` steps log-spaced in 1..=total, distinct and
//!   ascending, the last one `total` (Wang et al.'s SGD and full model, Chen et al.'s stages).
//!
//! A [`Checkpoints`] tracker answers "is this step a checkpoint?" as the driver walks the steps
//! in order.

/// Which steps are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Every(u64),
    LogSpaced { count: usize },
}

/// Step 0, then `count − 1` steps log-spaced in 1..=total: s_i = round(e^{ln(total)·i/(k−1)}),
/// i = 0..k−1 with k = count − 1 (k = 1: total alone), kept when larger than the previous
/// one; `total` is appended if rounding missed it.
pub fn log_spaced(total: u64, count: usize) -> Vec<u64> {
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

/// The checkpoints of one run of `total` steps, met in ascending order.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    policy: Policy,
    steps: Vec<u64>,
    next: usize,
}

impl Checkpoints {
    pub fn new(policy: Policy, total: u64) -> Self {
        let steps = match policy {
            Policy::Every(_) => Vec::new(),
            Policy::LogSpaced { count } => log_spaced(total, count),
        };
        Checkpoints {
            policy,
            steps,
            next: 0,
        }
    }

    /// A tracker of an explicit list of steps (ascending).
    pub fn listed(steps: &[u64]) -> Self {
        Checkpoints {
            policy: Policy::LogSpaced { count: steps.len() },
            steps: steps.to_vec(),
            next: 0,
        }
    }

    /// Whether `step` is a checkpoint (`last`: the final state, recorded under `Every`). Steps
    /// must be asked in ascending order.
    pub fn due(&mut self, step: u64, last: bool) -> bool {
        match self.policy {
            Policy::Every(k) => step.is_multiple_of(k.max(1)) || last,
            Policy::LogSpaced { .. } => {
                while self.steps.get(self.next).is_some_and(|&s| s < step) {
                    self.next += 1;
                }
                let due = self.steps.get(self.next) == Some(&step);
                self.next += usize::from(due);
                due
            }
        }
    }

    /// The checkpoint steps of a log-spaced policy (empty for `Every`).
    pub fn steps(&self) -> &[u64] {
        &self.steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_spaced_steps_are_distinct_ascending_and_end_at_total() {
        assert_eq!(log_spaced(0, 5), vec![0]);
        for total in [1u64, 2, 3, 7, 10, 999, 1_000_000] {
            for count in [1usize, 2, 3, 7, 50, 5000] {
                let c = log_spaced(total, count);
                assert_eq!(c[0], 0);
                assert_eq!(*c.last().unwrap(), total);
                assert!(c.windows(2).all(|w| w[0] < w[1]), "{c:?}");
                assert!(c.len() <= count.max(2) + 1);
            }
        }
        // the geometric midpoint of 1..=10000 with five points is 10^2
        assert_eq!(log_spaced(10_000, 6), vec![0, 1, 10, 100, 1000, 10_000]);
    }

    #[test]
    fn the_tracker_marks_exactly_the_listed_or_every_kth_steps() {
        let mut c = Checkpoints::new(Policy::LogSpaced { count: 6 }, 10_000);
        let due: Vec<u64> = (0..=10_000).filter(|&s| c.due(s, s == 10_000)).collect();
        assert_eq!(due, vec![0, 1, 10, 100, 1000, 10_000]);
        let mut e = Checkpoints::new(Policy::Every(4), 10);
        let due: Vec<u64> = (0..=10).filter(|&s| e.due(s, s == 10)).collect();
        assert_eq!(due, vec![0, 4, 8, 10]);
    }
}
