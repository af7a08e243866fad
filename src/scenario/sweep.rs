//! `[sweep]`: which scenario fields vary and over which values (the point scenarios are built
//! and validated by the caller, the `plan` of the jobs layer).
//!
//! ```toml
//! [sweep]
//! n = { from = 4, to = 4096, points = 24 }     # shorthand for fields."system.n"
//! thresholds = [0.5, 0.1]
//! fit_min_n = 16
//! [sweep.fields]
//! "system.loss_scale" = [1.0, 0.5]             # or { from, to, points, spacing }
//! ```
//!
//! The points are the product of the fields' values (fields in the order of their paths, each
//! field's values ascending). Every point is a complete scenario — the document with the point's
//! values written in and `[sweep]` removed — validated when the scenario is loaded, so a bad
//! value anywhere in the sweep is reported before anything runs.

use crate::scenario::MAX_N;
use crate::scenario::validate::{FieldError, check, check_thresholds};
use serde::{Deserialize, Serialize};

/// One swept value: integers stay integers (for integer fields such as `system.n`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum SweepValue {
    Int(i64),
    Float(f64),
}

impl SweepValue {
    pub fn as_f64(self) -> f64 {
        match self {
            SweepValue::Int(i) => i as f64,
            SweepValue::Float(x) => x,
        }
    }
    pub fn to_toml(self) -> toml::Value {
        match self {
            SweepValue::Int(i) => toml::Value::Integer(i),
            SweepValue::Float(x) => toml::Value::Float(x),
        }
    }
}

/// A swept field: its path in the scenario (`system.n`) and its values.
#[derive(Debug, Clone, Serialize)]
pub struct SweepField {
    pub path: String,
    pub values: Vec<SweepValue>,
}

impl SweepField {
    /// Default CSV column name: the last path segment.
    pub fn column(&self) -> &str {
        self.path.rsplit('.').next().unwrap_or(&self.path)
    }
}

/// A validated sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepSpec {
    pub fields: Vec<SweepField>,
    /// Number of points (the product of the fields' value counts).
    pub n_points: usize,
    /// Emergence thresholds reported per point (ascending).
    pub thresholds: Vec<f64>,
    /// Fits use points whose x value is ≥ this (all points when absent).
    pub fit_min_n: Option<f64>,
    /// Index into `fields` of the fits' x (`sweep.x`; default the field with the most values).
    pub x: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSweep {
    n: Option<toml::Value>,
    fields: Option<toml::Table>,
    thresholds: Option<Vec<f64>>,
    #[serde(alias = "fit_min")]
    fit_min_n: Option<f64>,
    x: Option<String>,
}

/// Largest number of points a sweep may have.
pub const MAX_POINTS: usize = 1_000_000;

/// The fields, their values and the sweep settings (the points are built by the caller).
pub struct ParsedSweep {
    pub fields: Vec<SweepField>,
    pub thresholds: Vec<f64>,
    /// Whether `sweep.thresholds` was written (systems without threshold events refuse it).
    pub thresholds_given: bool,
    pub fit_min_n: Option<f64>,
    pub x: usize,
}

impl RawSweep {
    pub fn parse(self) -> Result<ParsedSweep, FieldError> {
        let mut fields = Vec::new();
        if let Some(n) = &self.n {
            let values = expand_values(n, "sweep.n")?;
            for v in &values {
                let SweepValue::Int(i) = *v else {
                    return Err(FieldError::new(
                        "sweep.n",
                        format!("must be integers, got {}", v.as_f64()),
                    ));
                };
                check("sweep.n", i >= 2, || format!("must be >= 2, got {i}"))?;
                check("sweep.n", i <= MAX_N, || {
                    format!("must be <= {MAX_N}, got {i}")
                })?;
            }
            fields.push(SweepField {
                path: "system.n".into(),
                values,
            });
        }
        if let Some(table) = self.fields {
            collect_fields(&table, "", &mut fields)?;
        }
        check("sweep", !fields.is_empty(), || {
            "nothing to sweep: give `n` or a [sweep.fields] table".into()
        })?;
        fields.sort_by(|a, b| a.path.cmp(&b.path));
        for w in fields.windows(2) {
            check(
                &format!("sweep.fields.{}", w[1].path),
                w[0].path != w[1].path,
                || "this field is swept twice (`sweep.n` is `system.n`)".into(),
            )?;
        }
        let count = fields
            .iter()
            .try_fold(1usize, |acc, f| acc.checked_mul(f.values.len()))
            .unwrap_or(usize::MAX);
        check("sweep", count <= MAX_POINTS, || {
            format!(
                "the product of the fields has {count} points; at most {MAX_POINTS} are accepted"
            )
        })?;
        let thresholds_given = self.thresholds.is_some();
        let mut thresholds = self.thresholds.unwrap_or_else(|| vec![0.5]);
        check("sweep.thresholds", !thresholds.is_empty(), || {
            "must list at least one threshold".into()
        })?;
        check_thresholds("sweep.thresholds", &thresholds)?;
        thresholds.sort_by(f64::total_cmp);
        thresholds.dedup();
        if let Some(m) = self.fit_min_n {
            check("sweep.fit_min_n", m.is_finite(), || {
                format!("must be finite, got {m}")
            })?;
        }
        let x = match &self.x {
            Some(name) => {
                let path = if name == "n" {
                    "system.n"
                } else {
                    name.as_str()
                };
                fields.iter().position(|f| f.path == path).ok_or_else(|| {
                    let paths: Vec<&str> = fields.iter().map(|f| f.path.as_str()).collect();
                    FieldError::new(
                        "sweep.x",
                        format!(
                            "must be one of the swept fields ({}), got {name:?}",
                            paths.join(", ")
                        ),
                    )
                })?
            }
            // The field with the most values; the first such in path order.
            None => (0..fields.len())
                .rev()
                .max_by_key(|&i| fields[i].values.len())
                .expect("at least one field"),
        };
        Ok(ParsedSweep {
            fields,
            thresholds,
            thresholds_given,
            fit_min_n: self.fit_min_n,
            x,
        })
    }
}

/// Flatten `[sweep.fields]`: quoted dotted keys (`"system.L" = [...]`) and nested tables
/// (`system.L = [...]`, which TOML reads as `system = { L = [...] }`) both name `system.L`.
fn collect_fields(
    table: &toml::Table,
    prefix: &str,
    out: &mut Vec<SweepField>,
) -> Result<(), FieldError> {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let field = format!("sweep.fields.{path}");
        if let toml::Value::Table(t) = value
            && !t.contains_key("from")
        {
            collect_fields(t, &path, out)?;
            continue;
        }
        check(
            &field,
            path.starts_with("system.") || path.starts_with("solver."),
            || "only fields under `system.` or `solver.` can be swept".into(),
        )?;
        let values = expand_values(value, &field)?;
        out.push(SweepField { path, values });
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    from: toml::Value,
    to: toml::Value,
    points: i64,
    #[serde(default)]
    spacing: RangeSpacing,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RangeSpacing {
    #[default]
    Geometric,
    Linear,
}

fn number(v: &toml::Value, field: &str) -> Result<SweepValue, FieldError> {
    match v {
        toml::Value::Integer(i) => Ok(SweepValue::Int(*i)),
        toml::Value::Float(x) if x.is_finite() => Ok(SweepValue::Float(*x)),
        toml::Value::Float(x) => Err(FieldError::new(field, format!("must be finite, got {x}"))),
        other => Err(FieldError::new(
            field,
            format!("expected a number, got {}", other.type_str()),
        )),
    }
}

/// Expand a list or a `{from, to, points, spacing}` range into distinct ascending values.
/// Integer bounds give integers (rounded, duplicates dropped); otherwise floats.
pub fn expand_values(v: &toml::Value, field: &str) -> Result<Vec<SweepValue>, FieldError> {
    let mut values = match v {
        toml::Value::Array(list) => {
            check(field, !list.is_empty(), || "must not be empty".into())?;
            let vals = list
                .iter()
                .map(|x| number(x, field))
                .collect::<Result<Vec<_>, _>>()?;
            if vals.iter().any(|x| matches!(x, SweepValue::Float(_))) {
                vals.into_iter()
                    .map(|x| SweepValue::Float(x.as_f64()))
                    .collect()
            } else {
                vals
            }
        }
        toml::Value::Table(t) => {
            let r: RawRange = crate::scenario::deserialize_table(t.clone(), field)?;
            let from = number(&r.from, &format!("{field}.from"))?;
            let to = number(&r.to, &format!("{field}.to"))?;
            let (a, b) = (from.as_f64(), to.as_f64());
            check(&format!("{field}.to"), b >= a, || {
                format!("must be >= from ({a}), got {b}")
            })?;
            check(
                &format!("{field}.points"),
                (1..=100_000).contains(&r.points),
                || format!("must be in 1..=100000, got {}", r.points),
            )?;
            check(&format!("{field}.points"), r.points > 1 || a == b, || {
                "a single point needs from = to".into()
            })?;
            if r.spacing == RangeSpacing::Geometric {
                check(&format!("{field}.from"), a > 0.0, || {
                    format!("geometric spacing needs from > 0, got {a}")
                })?;
            }
            let integer = matches!((from, to), (SweepValue::Int(_), SweepValue::Int(_)));
            let k = r.points;
            (0..k)
                .map(|i| {
                    let s = if k == 1 {
                        0.0
                    } else {
                        i as f64 / (k - 1) as f64
                    };
                    let x = match r.spacing {
                        RangeSpacing::Geometric => (a.ln() + s * (b.ln() - a.ln())).exp(),
                        RangeSpacing::Linear => a + s * (b - a),
                    };
                    // The end points are exact, whatever the rounding inside.
                    let x = if i == 0 {
                        a
                    } else if i == k - 1 {
                        b
                    } else {
                        x
                    };
                    if integer {
                        SweepValue::Int(x.round().clamp(a, b) as i64)
                    } else {
                        SweepValue::Float(x)
                    }
                })
                .collect()
        }
        other => {
            return Err(FieldError::new(
                field,
                format!(
                    "expected a list of numbers or a table {{ from, to, points, spacing }}, got {}",
                    other.type_str()
                ),
            ));
        }
    };
    values.sort_by(|x, y| x.as_f64().total_cmp(&y.as_f64()));
    values.dedup_by(|x, y| x.as_f64() == y.as_f64());
    Ok(values)
}

/// The product of the fields' values, in order (the last field varies fastest).
pub fn product(fields: &[SweepField]) -> Vec<Vec<SweepValue>> {
    let mut points = vec![Vec::new()];
    for f in fields {
        points = points
            .into_iter()
            .flat_map(|p| {
                f.values.iter().map(move |v| {
                    let mut q = p.clone();
                    q.push(*v);
                    q
                })
            })
            .collect();
    }
    points
}

/// Write `value` at a dotted `path` into a document, creating tables on the way.
pub fn set_path(doc: &mut toml::Table, path: &str, value: toml::Value) -> Result<(), FieldError> {
    let mut segments: Vec<&str> = path.split('.').collect();
    let last = segments.pop().expect("a path has a segment");
    let mut table = doc;
    for (i, seg) in segments.iter().enumerate() {
        let entry = table
            .entry(seg.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(FieldError::new(
                    format!("sweep.fields.{path}"),
                    format!("`{}` is not a table", segments[..=i].join(".")),
                ));
            }
        };
    }
    table.insert(last.to_string(), value);
    Ok(())
}

/// Whether a dotted path is present in a document.
pub fn has_path(doc: &toml::Table, path: &str) -> bool {
    let mut table = doc;
    let mut segments = path.split('.').peekable();
    while let Some(seg) = segments.next() {
        match (table.get(seg), segments.peek()) {
            (Some(_), None) => return true,
            (Some(toml::Value::Table(t)), Some(_)) => table = t,
            _ => return false,
        }
    }
    false
}
