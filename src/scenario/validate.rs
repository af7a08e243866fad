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

/// Emergence thresholds: each > 0 and finite.
pub fn check_thresholds(field: &str, values: &[f64]) -> Result<(), FieldError> {
    for &v in values {
        check(field, v > 0.0 && v.is_finite(), || {
            format!("must be > 0, got {v}")
        })?;
    }
    Ok(())
}
