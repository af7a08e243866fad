//! `[system] kind = "musat19"` (the 19-dim flow, docs/theory/musat.md §6) and the `[compare]` job
//! (the full 28D² model trained alongside, docs/theory/musat.md §10).

use crate::scenario::validate::{FieldError, check, check_positive, init_and_freeze};
use crate::systems::musat::data::{DataKind, DataSpec, LabelPosition, QueryPosition};
use crate::systems::musat::disentangled::{Attention, Mask, Refresh};
use crate::systems::musat::musat3::Query;
use crate::systems::musat::subspace::{MMatrix, NAMES19};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMusat19 {
    n: Option<i64>,
    #[serde(default)]
    query: Query,
    #[serde(default)]
    label_position: LabelPosition,
    #[serde(default)]
    query_position: QueryPosition,
    #[serde(default)]
    m: MMatrix,
    loss_scale: Option<f64>,
    init: Option<BTreeMap<String, f64>>,
    freeze: Option<Vec<String>>,
}

/// Validated musat19 settings.
#[derive(Debug, Clone, Serialize)]
pub struct Musat19Spec {
    /// Item–label pairs (a sweep over `system.n` sets it per point).
    pub n: usize,
    pub query: Query,
    /// The label's positional cue (`rotated` = M p_i is the paper's).
    pub label_position: LabelPosition,
    /// The query token's position (`fresh` = p_{N+1} is the paper's; `p_q` an ablation).
    pub query_position: QueryPosition,
    /// The matrix M (`J` = [[0, −I], [I, 0]] is the paper's; `swap` = [[0, I], [I, 0]]).
    pub m: MMatrix,
    pub loss_scale: f64,
    /// Initial point in θ order; default 0.
    pub init: Vec<f64>,
    /// Names of coordinates held at their initial value.
    pub freeze: Vec<String>,
}

impl Musat19Spec {
    pub fn frozen_indices(&self) -> Vec<usize> {
        self.freeze
            .iter()
            .filter_map(|f| NAMES19.iter().position(|n| n == f))
            .collect()
    }

    /// The natural time scale N²/loss_scale that `solver.horizon` multiplies.
    pub fn time_scale(&self) -> f64 {
        (self.n as f64).powi(2) / self.loss_scale
    }
}

/// Largest N of the 19-dim flow in general (a uniform-query gradient costs O(N³)).
pub const MAX_N19: i64 = 4096;
/// Largest N where the gradient takes the O(N) specialised pass (query `last`, label position
/// `rotated`, query position `fresh`, M = J).
pub const MAX_N19_LAST: i64 = 65536;

impl RawMusat19 {
    pub fn validate(self) -> Result<Musat19Spec, FieldError> {
        let Some(n) = self.n else {
            return Err(FieldError::new(
                "system.n",
                "required (N >= 2 item-label pairs)",
            ));
        };
        check("system.n", n >= 2, || format!("must be >= 2, got {n}"))?;
        let specialised = self.query == Query::Last
            && self.label_position == LabelPosition::Rotated
            && self.query_position == QueryPosition::Fresh
            && self.m == MMatrix::J;
        let max = if specialised { MAX_N19_LAST } else { MAX_N19 };
        check("system.n", n <= max, || {
            if specialised {
                format!("must be <= {max} for musat19, got {n}")
            } else {
                format!(
                    "must be <= {max} for musat19 outside the O(N) case (query \"last\", \
                     label_position \"rotated\", query_position \"fresh\", m \"J\", which \
                     allows {MAX_N19_LAST}), got {n}"
                )
            }
        })?;
        let loss_scale = self.loss_scale.unwrap_or(1.0);
        check_positive("system.loss_scale", loss_scale)?;
        let (init, freeze) = init_and_freeze(
            &NAMES19,
            "alpha1..alpha3, beta1..beta12, gamma1..gamma4",
            self.init,
            self.freeze,
        )?;
        Ok(Musat19Spec {
            n: n as usize,
            query: self.query,
            label_position: self.label_position,
            query_position: self.query_position,
            m: self.m,
            loss_scale,
            init,
            freeze,
        })
    }
}

/// `batch = 256` or `batch = [32, 256, 2048]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawBatch {
    One(i64),
    Many(Vec<i64>),
}

/// Initialisation of the full model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum InitKind {
    #[default]
    Zero,
    Gaussian,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompare {
    d: Option<i64>,
    batch: Option<RawBatch>,
    eta: Option<f64>,
    steps: i64,
    checkpoint_every: Option<i64>,
    #[serde(default)]
    init: InitKind,
    init_std: Option<f64>,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    data: DataKind,
    #[serde(default)]
    refresh: Refresh,
    threshold: Option<f64>,
    temperature: Option<f64>,
    #[serde(default)]
    mask: Mask,
}

/// Validated `[compare]` settings.
#[derive(Debug, Clone, Serialize)]
pub struct CompareSpec {
    /// Content dimension D of the full model.
    pub d: usize,
    /// Batch sizes; the full model is trained once per entry.
    pub batch: Vec<usize>,
    pub eta: f64,
    pub steps: usize,
    pub checkpoint_every: usize,
    pub init: InitKind,
    /// Standard deviation of the Gaussian initialisation (0 for zero init).
    pub init_std: f64,
    pub seed: u64,
    pub data: DataKind,
    pub refresh: Refresh,
    pub threshold: f64,
    /// Attention temperature τ of the full model (softmax(s / τ); 1 is the paper's).
    pub temperature: f64,
    /// Attention mask of the full model (strict is the paper's).
    pub mask: Mask,
}

impl CompareSpec {
    /// The data distribution of the full model.
    pub fn data_spec(&self, system: &Musat19Spec) -> DataSpec {
        DataSpec {
            n: system.n,
            d: self.d,
            data: self.data,
            query: system.query,
            label_position: system.label_position,
            query_position: system.query_position,
            m: system.m,
        }
    }

    /// The full model's attention ablations.
    pub fn attention(&self) -> Attention {
        Attention {
            temperature: self.temperature,
            mask: self.mask,
        }
    }

    /// Pseudo-time per GD step, η/D.
    pub fn dt(&self) -> f64 {
        self.eta / self.d as f64
    }
}

/// Largest D, B and step count accepted (28 D² parameters, B·T·2D floats per step).
pub const MAX_D: i64 = 1024;
pub const MAX_BATCH: i64 = 1 << 20;
pub const MAX_STEPS: i64 = 100_000_000;

impl RawCompare {
    /// Validate against the system (N and the data constraints).
    pub fn validate(self, system: &Musat19Spec) -> Result<CompareSpec, FieldError> {
        let n = system.n as i64;
        check("system.init", system.init.iter().all(|&v| v == 0.0), || {
            "not used by [compare]: the flows start from the projection of the full model's \
                 initial weights (set compare.init instead)"
                .into()
        })?;
        check("system.freeze", system.freeze.is_empty(), || {
            "not used by [compare]: remove it (all 19 coordinates move)".into()
        })?;
        let min_d = DataSpec::min_orthonormal_d(n as usize) as i64;
        let d = self.d.unwrap_or(min_d);
        check("compare.d", d >= 2 && d % 2 == 0, || {
            format!(
                "must be even and >= 2 (M = {} acts on pairs of coordinates), got {d}",
                system.m.name()
            )
        })?;
        if self.data == DataKind::Orthonormal {
            check("compare.d", d >= min_d, || {
                format!("orthonormal data need D >= 2N + 2 = {min_d} (N = {n}), got {d}")
            })?;
        }
        check("compare.d", d <= MAX_D, || {
            format!("must be <= {MAX_D}, got {d}")
        })?;
        let batch = match self.batch.unwrap_or(RawBatch::One(256)) {
            RawBatch::One(b) => vec![b],
            RawBatch::Many(v) => v,
        };
        check("compare.batch", !batch.is_empty(), || {
            "must list at least one batch size".into()
        })?;
        for &b in &batch {
            check("compare.batch", (1..=MAX_BATCH).contains(&b), || {
                format!("each batch size must be in 1..={MAX_BATCH}, got {b}")
            })?;
        }
        let eta = self.eta.unwrap_or(d as f64 / 4.0);
        check("compare.eta", eta > 0.0 && eta.is_finite(), || {
            format!("must be > 0 and finite (the GD learning rate; default D/4), got {eta}")
        })?;
        let steps = self.steps;
        check("compare.steps", (1..=MAX_STEPS).contains(&steps), || {
            format!("must be in 1..={MAX_STEPS}, got {steps}")
        })?;
        let every = self
            .checkpoint_every
            .unwrap_or(((steps + 499) / 500).max(1));
        check("compare.checkpoint_every", every >= 1, || {
            format!("must be >= 1, got {every}")
        })?;
        let init_std = match (self.init, self.init_std) {
            (InitKind::Zero, None) => 0.0,
            (InitKind::Zero, Some(_)) => {
                return Err(FieldError::new(
                    "compare.init_std",
                    "only used with init = \"gaussian\"",
                ));
            }
            (InitKind::Gaussian, None) => {
                return Err(FieldError::new(
                    "compare.init_std",
                    "required with init = \"gaussian\" (> 0)",
                ));
            }
            (InitKind::Gaussian, Some(s)) => {
                check_positive("compare.init_std", s)?;
                s
            }
        };
        let threshold = self.threshold.unwrap_or(0.5);
        check(
            "compare.threshold",
            threshold > 0.0 && threshold.is_finite(),
            || format!("must be > 0, got {threshold}"),
        )?;
        let temperature = self.temperature.unwrap_or(1.0);
        check(
            "compare.temperature",
            temperature > 0.0 && temperature.is_finite(),
            || {
                format!(
                    "must be > 0 and finite (attention softmax(s / temperature); default 1), \
                     got {temperature}"
                )
            },
        )?;
        Ok(CompareSpec {
            d: d as usize,
            batch: batch.into_iter().map(|b| b as usize).collect(),
            eta,
            steps: steps as usize,
            checkpoint_every: every as usize,
            init: self.init,
            init_std,
            seed: self.seed,
            data: self.data,
            refresh: self.refresh,
            threshold,
            temperature,
            mask: self.mask,
        })
    }
}
