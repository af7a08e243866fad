//! The `[standard]` section of the Musat systems (`kind = "musat3"` or `"musat19"`): the
//! standard two-layer attention-only transformer of docs/theory/musat.md §11 trained on the
//! token version of the task (N from `[system]`, with its query mode and loss scale), its
//! progress measures α̃₃, β̃₂, γ̃₃ recorded on the pseudo-time axis t = lr·step/D.

use crate::scenario::validate::{FieldError, check, check_fraction};
use crate::systems::musat::disentangled::Mask;
use crate::systems::musat::standard::{Dims, Loss, Optimizer, Positions};
use crate::train::checkpoints::Policy;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStandard {
    d: Option<i64>,
    d_head: Option<i64>,
    vocab: Option<i64>,
    positions: Option<i64>,
    #[serde(default)]
    position_embedding: Positions,
    #[serde(default)]
    loss: Loss,
    #[serde(default)]
    optimizer: Optimizer,
    lr: Option<f64>,
    steps: Option<i64>,
    batch: Option<i64>,
    #[serde(default)]
    seed: u64,
    init_std: Option<f64>,
    mask: Option<Mask>,
    checkpoint_every: Option<i64>,
    checkpoints: Option<i64>,
    fraction: Option<f64>,
}

/// When the standard model is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StandardCheckpoints {
    /// Every k-th step and the last.
    Every(usize),
    /// Step 0 and `count − 1` log-spaced steps ending at the last.
    LogSpaced(usize),
}

/// Validated `[standard]` settings.
#[derive(Debug, Clone, Serialize)]
pub struct StandardSpec {
    /// Width D of the residual stream.
    pub d: usize,
    /// Head dimension d_head.
    pub d_head: usize,
    /// Vocabulary size N_E.
    pub vocab: usize,
    /// Number of positional embeddings N_p.
    pub positions: usize,
    pub position_embedding: Positions,
    pub loss: Loss,
    pub optimizer: Optimizer,
    pub lr: f64,
    pub steps: usize,
    pub batch: usize,
    pub seed: u64,
    /// Standard deviation of the i.i.d. Gaussian initialisation of every weight (and of P when
    /// it is learned); default 1/√D.
    pub init_std: f64,
    pub mask: Mask,
    pub checkpoints: StandardCheckpoints,
    /// An event is a measure reaching this fraction of its final value.
    pub fraction: f64,
}

/// Largest sizes and step count accepted.
pub const MAX_D: i64 = 4096;
pub const MAX_VOCAB: i64 = 1 << 16;
pub const MAX_BATCH: i64 = 1 << 20;
pub const MAX_STEPS: i64 = 100_000_000;

impl StandardSpec {
    /// The model sizes for N item–label pairs.
    pub fn dims(&self, n: usize) -> Dims {
        Dims {
            n,
            d: self.d,
            d_head: self.d_head,
            vocab: self.vocab,
            positions: self.positions,
        }
    }

    /// Pseudo-time per step, lr/D (the full Musat model's η/D, docs/theory/musat.md §9–§10).
    pub fn dt(&self) -> f64 {
        self.lr / self.d as f64
    }

    pub fn policy(&self) -> Policy {
        match self.checkpoints {
            StandardCheckpoints::Every(k) => Policy::Every(k as u64),
            StandardCheckpoints::LogSpaced(count) => Policy::LogSpaced { count },
        }
    }
}

fn in_range(field: &str, v: i64, lo: i64, hi: i64, why: &str) -> Result<(), FieldError> {
    check(field, (lo..=hi).contains(&v), || {
        format!("must be in {lo}..={hi}{why}, got {v}")
    })
}

impl RawStandard {
    /// Validate for N item–label pairs.
    pub fn validate(self, n: usize) -> Result<StandardSpec, FieldError> {
        let n = n as i64;
        let two_n = 2 * n;
        let d = self.d.unwrap_or(64.max(two_n));
        in_range(
            "standard.d",
            d,
            two_n,
            MAX_D,
            &format!(" (>= 2N = {two_n}: the 2N tokens of a sequence need room, N = {n})"),
        )?;
        let d_head = self.d_head.unwrap_or(d);
        in_range(
            "standard.d_head",
            d_head,
            two_n,
            MAX_D,
            &format!(
                " (>= 2N = {two_n}: the heads must keep the 2N tokens of a sequence apart, N = {n})"
            ),
        )?;
        let vocab = self.vocab.unwrap_or(32.max(two_n));
        in_range(
            "standard.vocab",
            vocab,
            two_n,
            MAX_VOCAB,
            &format!(" (>= 2N = {two_n}: a sequence has 2N distinct tokens, N = {n})"),
        )?;
        let positions = self.positions.unwrap_or(32.max(two_n + 1));
        in_range(
            "standard.positions",
            positions,
            two_n + 1,
            MAX_VOCAB,
            &format!(
                " (>= 2N + 1 = {}: one embedding per token of a sequence, N = {n})",
                two_n + 1
            ),
        )?;
        let Some(lr) = self.lr else {
            return Err(FieldError::new(
                "standard.lr",
                "required (the learning rate, > 0 and finite)",
            ));
        };
        check("standard.lr", lr > 0.0 && lr.is_finite(), || {
            format!("must be > 0 and finite (the learning rate), got {lr}")
        })?;
        let Some(steps) = self.steps else {
            return Err(FieldError::new(
                "standard.steps",
                format!("required (1..={MAX_STEPS})"),
            ));
        };
        in_range("standard.steps", steps, 1, MAX_STEPS, "")?;
        let batch = self.batch.unwrap_or(256);
        in_range("standard.batch", batch, 1, MAX_BATCH, "")?;
        let init_std = self.init_std.unwrap_or(1.0 / (d as f64).sqrt());
        check(
            "standard.init_std",
            init_std > 0.0 && init_std.is_finite(),
            || {
                format!(
                    "must be > 0 and finite (all-zero weights are a stationary point), got {init_std}"
                )
            },
        )?;
        let checkpoints = match (self.checkpoint_every, self.checkpoints) {
            (Some(_), Some(_)) => {
                return Err(FieldError::new(
                    "standard.checkpoints",
                    "give either checkpoint_every (every k steps) or checkpoints (a log-spaced \
                     count), not both",
                ));
            }
            (Some(k), None) => {
                in_range(
                    "standard.checkpoint_every",
                    k,
                    1,
                    steps,
                    " (the step count)",
                )?;
                StandardCheckpoints::Every(k as usize)
            }
            (None, Some(c)) => {
                in_range("standard.checkpoints", c, 2, 1_000_000, "")?;
                StandardCheckpoints::LogSpaced(c as usize)
            }
            (None, None) => StandardCheckpoints::Every(((steps + 499) / 500).max(1) as usize),
        };
        let fraction = self.fraction.unwrap_or(0.5);
        check_fraction("standard.fraction", fraction)?;
        Ok(StandardSpec {
            d: d as usize,
            d_head: d_head as usize,
            vocab: vocab as usize,
            positions: positions as usize,
            position_embedding: self.position_embedding,
            loss: self.loss,
            optimizer: self.optimizer,
            lr,
            steps: steps as usize,
            batch: batch as usize,
            seed: self.seed,
            init_std,
            mask: self.mask.unwrap_or(Mask::Inclusive),
            checkpoints,
            fraction,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, n: usize) -> Result<StandardSpec, FieldError> {
        let table: toml::Table = toml::from_str(text).unwrap();
        let raw: RawStandard = crate::scenario::deserialize_table(table, "standard")?;
        raw.validate(n)
    }

    #[test]
    fn defaults_fit_n_and_bad_fields_name_their_range() {
        let s = parse("lr = 0.1\nsteps = 10", 4).unwrap();
        assert_eq!((s.d, s.d_head, s.vocab, s.positions), (64, 64, 32, 32));
        assert_eq!(s.mask, Mask::Inclusive);
        assert_eq!(s.checkpoints, StandardCheckpoints::Every(1));
        assert!(s.dims(4).check().is_ok());
        let s = parse("lr = 0.1\nsteps = 10", 20).unwrap();
        assert_eq!((s.vocab, s.positions), (40, 41));
        for (text, field, says) in [
            (
                "lr = 0.1\nsteps = 10\nd_head = 7",
                "standard.d_head",
                ">= 2N = 8",
            ),
            ("lr = 0.1\nsteps = 10\nd = 6", "standard.d", ">= 2N = 8"),
            (
                "lr = 0.1\nsteps = 10\nvocab = 7",
                "standard.vocab",
                ">= 2N = 8",
            ),
            (
                "lr = 0.1\nsteps = 10\npositions = 8",
                "standard.positions",
                ">= 2N + 1 = 9",
            ),
            ("lr = 0\nsteps = 10", "standard.lr", "> 0"),
            ("lr = -1.0\nsteps = 10", "standard.lr", "> 0"),
            ("lr = 0.1\nsteps = 0", "standard.steps", "1..="),
            ("lr = 0.1\nsteps = 10\nbatch = 0", "standard.batch", "1..="),
            (
                "lr = 0.1\nsteps = 10\nloss = \"l1\"",
                "standard.loss",
                "mse",
            ),
            (
                "lr = 0.1\nsteps = 10\noptimizer = \"sgd\"",
                "standard.optimizer",
                "adam",
            ),
            (
                "lr = 0.1\nsteps = 10\nwidth = 3",
                "standard.width",
                "unknown field `width`",
            ),
            (
                "lr = 0.1\nsteps = 10\ninit_std = 0",
                "standard.init_std",
                "> 0",
            ),
            (
                "lr = 0.1\nsteps = 10\ncheckpoints = 5\ncheckpoint_every = 2",
                "standard.checkpoints",
                "not both",
            ),
            (
                "lr = 0.1\nsteps = 10\nfraction = 1.0",
                "standard.fraction",
                "(0, 1)",
            ),
            ("steps = 10", "standard.lr", "required"),
        ] {
            let e = parse(text, 4).unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
            assert!(e.message.contains(says), "{text}: {e}");
        }
    }
}
