//! `[system] kind = "musat3"`: the three-parameter flow of Musat et al. (docs/theory/musat.md §7).

use crate::scenario::validate::{FieldError, check, check_positive, init_and_freeze};
use crate::systems::musat::musat3::Query;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Coordinate names of the three-parameter flow, in θ order.
pub const MUSAT3_NAMES: [&str; 3] = ["alpha3", "beta2", "gamma3"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMusat3 {
    n: Option<i64>,
    #[serde(default)]
    query: Query,
    loss_scale: Option<f64>,
    init: Option<BTreeMap<String, f64>>,
    freeze: Option<Vec<String>>,
}

/// Validated musat3 settings.
#[derive(Debug, Clone, Serialize)]
pub struct Musat3Spec {
    /// Number of item–label pairs (a sweep over `system.n` sets it per point).
    pub n: usize,
    pub query: Query,
    /// 1 (default) or ½ (halves every gradient, doubles every time); any value > 0 is accepted.
    pub loss_scale: f64,
    /// Initial point (α₃, β₂, γ₃); default 0.
    pub init: [f64; 3],
    /// Names of coordinates held at their initial value.
    pub freeze: Vec<String>,
}

impl Musat3Spec {
    /// Indices of the frozen coordinates.
    pub fn frozen_indices(&self) -> Vec<usize> {
        self.freeze
            .iter()
            .filter_map(|f| MUSAT3_NAMES.iter().position(|n| n == f))
            .collect()
    }

    /// The natural time scale N²/loss_scale that `solver.horizon` multiplies.
    pub fn time_scale(&self) -> f64 {
        (self.n as f64).powi(2) / self.loss_scale
    }
}

impl RawMusat3 {
    pub fn validate(self) -> Result<Musat3Spec, FieldError> {
        let Some(n) = self.n else {
            return Err(FieldError::new(
                "system.n",
                "required (N >= 2 item-label pairs)",
            ));
        };
        check("system.n", n >= 2, || format!("must be >= 2, got {n}"))?;
        check("system.n", n <= crate::scenario::MAX_N, || {
            format!("must be <= {}, got {n}", crate::scenario::MAX_N)
        })?;
        let loss_scale = self.loss_scale.unwrap_or(1.0);
        check_positive("system.loss_scale", loss_scale)?;
        let (init, freeze) = init_and_freeze(
            &MUSAT3_NAMES,
            "alpha3, beta2, gamma3",
            self.init,
            self.freeze,
        )?;
        let init: [f64; 3] = init.try_into().expect("three coordinates");
        Ok(Musat3Spec {
            n: n as usize,
            query: self.query,
            loss_scale,
            init,
            freeze,
        })
    }
}
