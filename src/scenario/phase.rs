//! `[[phase]]`: phase portraits on a 2-D slice of any system's coordinates.
//!
//! ```toml
//! [[phase]]
//! x = "beta2"                # axis coordinates (names of the system's coordinates)
//! y = "alpha3"
//! x_range = [0.0, 3.0]
//! y_range = [0.0, 3.0]
//! grid = 21                  # arrows per axis (or [nx, ny])
//! slice = "fixed"            # others held at `fixed` (else the system's init); or "reference":
//!                            # others taken from the reference trajectory (solved from init)
//! fixed = { gamma3 = 1.0 }
//! starts = [[0.0, 0.0], [1.0, 0.2]]   # trajectories from these (x, y)
//! t_max = 200.0              # trajectory horizon (default: the solver's horizon)
//! ```

use crate::scenario::validate::{FieldError, check, check_positive};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How the coordinates off the slice are set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Slice {
    /// Held at `fixed` (default: the system's initial values); trajectories move in the slice.
    #[default]
    Fixed,
    /// Taken from the reference trajectory (the full flow from the system's initial point) at its
    /// point nearest to each grid point; trajectories are of the full flow, projected.
    Reference,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPhase {
    name: Option<String>,
    x: String,
    y: String,
    x_range: [f64; 2],
    y_range: [f64; 2],
    grid: Option<toml::Value>,
    #[serde(default)]
    slice: Slice,
    fixed: Option<BTreeMap<String, f64>>,
    starts: Option<Vec<[f64; 2]>>,
    t_max: Option<f64>,
    invariants: Option<bool>,
}

/// A validated phase portrait.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseSpec {
    /// File stem of its outputs (`phase`, or `phase-<name>`).
    pub name: String,
    pub x: usize,
    pub y: usize,
    pub x_name: String,
    pub y_name: String,
    pub x_range: [f64; 2],
    pub y_range: [f64; 2],
    pub grid: [usize; 2],
    pub slice: Slice,
    /// (coordinate index, value) for the coordinates off the slice set by `fixed`.
    pub fixed: Vec<(usize, f64)>,
    pub starts: Vec<[f64; 2]>,
    pub t_max: Option<f64>,
    pub invariants: bool,
}

impl RawPhase {
    /// Validate against the system's coordinate names; `k` is the entry's index, `count` the
    /// number of `[[phase]]` entries.
    pub fn validate(
        self,
        names: &[String],
        k: usize,
        count: usize,
    ) -> Result<PhaseSpec, FieldError> {
        let f = |field: &str| format!("phase[{k}].{field}");
        let find = |field: &str, name: &str| {
            names.iter().position(|n| n == name).ok_or_else(|| {
                FieldError::new(
                    f(field),
                    format!(
                        "unknown coordinate `{name}`, expected one of {}",
                        names.join(", ")
                    ),
                )
            })
        };
        let x = find("x", &self.x)?;
        let y = find("y", &self.y)?;
        check(&f("y"), x != y, || "must differ from x".into())?;
        for (field, r) in [("x_range", self.x_range), ("y_range", self.y_range)] {
            check(
                &f(field),
                r[0].is_finite() && r[1].is_finite() && r[0] < r[1],
                || format!("must be [lo, hi] with lo < hi, got [{}, {}]", r[0], r[1]),
            )?;
        }
        let grid = match &self.grid {
            None => [21, 21],
            Some(toml::Value::Integer(n)) => {
                let v = (*n).max(0) as usize;
                [v, v]
            }
            Some(toml::Value::Array(a)) if a.len() == 2 => {
                let mut g = [0usize; 2];
                for (i, v) in a.iter().enumerate() {
                    g[i] = v
                        .as_integer()
                        .ok_or_else(|| {
                            FieldError::new(f("grid"), "expected an integer or [nx, ny]")
                        })?
                        .max(0) as usize;
                }
                g
            }
            Some(_) => {
                return Err(FieldError::new(
                    f("grid"),
                    "expected an integer or [nx, ny]",
                ));
            }
        };
        for g in grid {
            check(&f("grid"), (2..=200).contains(&g), || {
                format!("must be in 2..=200, got {g}")
            })?;
        }
        let mut fixed = Vec::new();
        for (name, value) in self.fixed.unwrap_or_default() {
            let field = format!("fixed.{name}");
            let i = find(&field, &name)?;
            check(&f(&field), i != x && i != y, || {
                "is an axis of the slice; it cannot be fixed".into()
            })?;
            check(&f(&field), value.is_finite(), || {
                format!("must be finite, got {value}")
            })?;
            fixed.push((i, value));
        }
        check(
            &f("fixed"),
            fixed.is_empty() || self.slice == Slice::Fixed,
            || "only with slice = \"fixed\"".into(),
        )?;
        let starts = self.starts.unwrap_or_default();
        for s in &starts {
            check(&f("starts"), s[0].is_finite() && s[1].is_finite(), || {
                format!("must be finite, got [{}, {}]", s[0], s[1])
            })?;
        }
        if let Some(t) = self.t_max {
            check_positive(&f("t_max"), t)?;
        }
        let name = match self.name {
            Some(n) => {
                check(
                    &f("name"),
                    !n.is_empty()
                        && n.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')),
                    || format!("must be letters, digits, '-' or '_', got {n:?}"),
                )?;
                format!("phase-{n}")
            }
            None if count == 1 => "phase".to_string(),
            None => format!("phase-{}-vs-{}", self.y, self.x),
        };
        Ok(PhaseSpec {
            name,
            x,
            y,
            x_name: self.x,
            y_name: self.y,
            x_range: self.x_range,
            y_range: self.y_range,
            grid,
            slice: self.slice,
            fixed,
            starts,
            t_max: self.t_max,
            invariants: self.invariants.unwrap_or(true),
        })
    }
}
