//! Field-level validation helpers: every message names the field path and the accepted range.

use serde::Serialize;

/// A bad value in a named field, e.g. `sweep.n: must be >= 2, got 1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// `Err(field: message())` unless `ok`.
pub fn check(field: &str, ok: bool, message: impl FnOnce() -> String) -> Result<(), FieldError> {
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(field, message()))
    }
}

pub fn check_positive(field: &str, v: f64) -> Result<(), FieldError> {
    check(field, v > 0.0 && v.is_finite(), || {
        format!("must be > 0 and finite, got {v}")
    })
}

/// A fraction strictly between 0 and 1.
pub fn check_fraction(field: &str, v: f64) -> Result<(), FieldError> {
    check(field, v > 0.0 && v < 1.0, || {
        format!("must be in (0, 1), got {v}")
    })
}

/// Emergence thresholds: at most [`MAX_LIST`] of them, each > 0 and finite.
pub fn check_thresholds(field: &str, values: &[f64]) -> Result<(), FieldError> {
    check_list_len(field, values.len())?;
    for &v in values {
        check(field, v > 0.0 && v.is_finite(), || {
            format!("must be > 0, got {v}")
        })?;
    }
    Ok(())
}

/// The longest list of levels (thresholds, `a` levels) a scenario may give: each level adds
/// events and columns to every output, and more than this is a mistake, not a request.
pub const MAX_LIST: usize = 64;

/// At most [`MAX_LIST`] entries.
pub fn check_list_len(field: &str, len: usize) -> Result<(), FieldError> {
    check(field, len <= MAX_LIST, || {
        format!("at most {MAX_LIST} values, got {len}")
    })
}

/// The values in first-seen order with repeats removed (a repeated level would repeat its
/// events and columns).
pub fn dedup_keep_order(values: &[f64]) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::with_capacity(values.len());
    for &v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// Parameters beyond this magnitude count as diverged (the integrators and the training
/// driver stop there), so no initial value may start beyond it.
pub const DIVERGENCE_BOUND: f64 = 1e100;

/// A finite initial value within [`DIVERGENCE_BOUND`].
pub fn check_initial(field: &str, v: f64) -> Result<(), FieldError> {
    check(field, v.is_finite() && v.abs() <= DIVERGENCE_BOUND, || {
        format!("must be finite with |value| <= 1e100 (the divergence bound), got {v:e}")
    })
}

/// `system.init` (a table of coordinate = value) and `system.freeze` (coordinate names) against
/// a system's coordinate names: the initial point (0 where not given) and the frozen names.
/// `names_hint` is how the accepted names are listed in messages.
pub fn init_and_freeze(
    names: &[&str],
    names_hint: &str,
    init: Option<std::collections::BTreeMap<String, f64>>,
    freeze: Option<Vec<String>>,
) -> Result<(Vec<f64>, Vec<String>), FieldError> {
    let mut point = vec![0.0; names.len()];
    for (key, value) in init.unwrap_or_default() {
        let field = format!("system.init.{key}");
        let Some(i) = names.iter().position(|n| *n == key) else {
            return Err(FieldError::new(
                field,
                format!("unknown coordinate, expected one of {names_hint}"),
            ));
        };
        check_initial(&field, value)?;
        point[i] = value;
    }
    let freeze = freeze.unwrap_or_default();
    for f in &freeze {
        check("system.freeze", names.contains(&f.as_str()), || {
            format!("unknown coordinate `{f}`, expected one of {names_hint}")
        })?;
    }
    let distinct: std::collections::BTreeSet<_> = freeze.iter().collect();
    check("system.freeze", distinct.len() < names.len(), || {
        format!(
            "freezing all {} coordinates leaves nothing to integrate",
            names.len()
        )
    })?;
    Ok((point, freeze))
}
