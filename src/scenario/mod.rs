//! Scenario files: the TOML schema (serde, `deny_unknown_fields`) and its validation into a
//! typed [`Scenario`]. Every error names the field by its path (`sweep.n`, `system.loss_scale`)
//! and the accepted range.
//!
//! Parsing is two-step, like ripgrep's low-level/high-level arguments: the raw document is
//! deserialized (serde reports unknown fields and wrong types with their path), then
//! [`validate`]d (ranges, cross-field rules) into plain data the experiments consume.

mod musat;
mod musat_full;
mod validate;

pub use musat::{Musat3Spec, RawMusat3};
pub use musat_full::{CompareSpec, InitKind, Musat19Spec, RawCompare, RawMusat19};
pub use validate::FieldError;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use validate::{check, check_fraction, check_positive, check_thresholds};

/// Errors in a scenario (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario file `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: invalid TOML: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: {error}")]
    Field { origin: String, error: FieldError },
}

/// A validated scenario: what to run and with which settings.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: String,
    /// Where the scenario came from (a file path, "command line", "built-in demo").
    #[serde(skip)]
    pub origin: String,
    /// The document as written.
    #[serde(skip)]
    pub text: String,
    pub description: Option<String>,
    pub system: SystemSpec,
    pub solver: SolverSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub solve: Option<SolveSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare: Option<CompareSpec>,
}

/// The reduced system, tagged by `kind`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SystemSpec {
    Musat3(Musat3Spec),
    Musat19(Musat19Spec),
}

impl SystemSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            SystemSpec::Musat3(_) => "musat3",
            SystemSpec::Musat19(_) => "musat19",
        }
    }

    /// N, when the system sets it.
    pub fn n(&self) -> Option<usize> {
        match self {
            SystemSpec::Musat3(m) => m.n,
            SystemSpec::Musat19(m) => m.n,
        }
    }
}

/// Integrator settings (`[solver]`).
#[derive(Debug, Clone, Serialize)]
pub struct SolverSpec {
    /// Always "dopri5" (Dormand–Prince 5(4) with dense output, from `ode_solvers`).
    pub method: String,
    pub rtol: f64,
    pub atol: f64,
    /// Absolute horizon, if given.
    pub t_max: Option<f64>,
    /// Horizon as a multiple of the system's time scale (musat3: N²/loss_scale), used when
    /// `t_max` is not given.
    pub horizon: f64,
    pub max_steps: u32,
}

/// Sample spacing of `trajectory.csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Spacing {
    #[default]
    Linear,
    Log,
}

/// A single trajectory (`[solve]`).
#[derive(Debug, Clone, Serialize)]
pub struct SolveSpec {
    pub thresholds: Vec<f64>,
    pub loss_fraction: f64,
    pub margin: f64,
    /// At most this many steps after the last event (the post-emergence tail is stiff).
    pub tail_steps: u32,
    pub samples: usize,
    pub spacing: Spacing,
}

/// A sweep over N (`[sweep]`).
#[derive(Debug, Clone, Serialize)]
pub struct SweepSpec {
    /// The distinct N values, ascending.
    pub n: Vec<usize>,
    pub thresholds: Vec<f64>,
    pub fit_min_n: usize,
}

// ---------------------------------------------------------------------------------------------
// Raw schema

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    description: Option<String>,
    system: toml::Table,
    #[serde(default)]
    solver: RawSolver,
    solve: Option<RawSolve>,
    sweep: Option<RawSweep>,
    compare: Option<RawCompare>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSolver {
    method: Option<String>,
    rtol: Option<f64>,
    atol: Option<f64>,
    t_max: Option<f64>,
    horizon: Option<f64>,
    max_steps: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSolve {
    thresholds: Option<Vec<f64>>,
    loss_fraction: Option<f64>,
    margin: Option<f64>,
    tail_steps: Option<u32>,
    samples: Option<usize>,
    #[serde(default)]
    spacing: Spacing,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweep {
    n: NSpec,
    thresholds: Option<Vec<f64>>,
    fit_min_n: Option<usize>,
}

/// `n = [8, 64, 256]` or `n = { from = 4, to = 4096, points = 24, spacing = "geometric" }`.
#[derive(Debug, Clone)]
pub enum NSpec {
    List(Vec<i64>),
    Range(NRange),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NRange {
    from: i64,
    to: i64,
    points: i64,
    #[serde(default)]
    spacing: NSpacing,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum NSpacing {
    #[default]
    Geometric,
    Linear,
}

impl<'de> Deserialize<'de> for NSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = NSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of integers or a table {from, to, points, spacing}")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, a: A) -> Result<NSpec, A::Error> {
                Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(a))
                    .map(NSpec::List)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, a: A) -> Result<NSpec, A::Error> {
                Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(a))
                    .map(NSpec::Range)
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Loading

/// Read and validate a scenario file. The scenario name defaults to the file stem.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario".into());
    parse_str(&text, &path.display().to_string(), &stem)
}

/// Parse and validate scenario text. `origin` names the source in messages; `default_name` is
/// used when the document has no `name`.
pub fn parse_str(text: &str, origin: &str, default_name: &str) -> Result<Scenario, ScenarioError> {
    let de = toml::Deserializer::parse(text).map_err(|e| ScenarioError::Syntax {
        origin: origin.to_string(),
        message: e.to_string().trim().replace('\n', " "),
    })?;
    let raw: RawScenario = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ScenarioError::Field {
            origin: origin.to_string(),
            error: FieldError::new(
                if path == "." { "scenario".into() } else { path },
                e.inner().message(),
            ),
        }
    })?;
    let mut scenario = validate(raw, default_name).map_err(|error| ScenarioError::Field {
        origin: origin.to_string(),
        error,
    })?;
    scenario.origin = origin.to_string();
    scenario.text = text.to_string();
    Ok(scenario)
}

fn validate(raw: RawScenario, default_name: &str) -> Result<Scenario, FieldError> {
    let name = raw.name.unwrap_or_else(|| default_name.to_string());
    check(
        "name",
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !name.starts_with('.'),
        || format!("must be a folder name of letters, digits, '-', '_' or '.', got {name:?}"),
    )?;
    let system = parse_system(raw.system)?;
    let solver = validate_solver(raw.solver)?;
    let solve = raw.solve.map(validate_solve).transpose()?;
    let sweep = raw.sweep.map(validate_sweep).transpose()?;
    let compare = match (raw.compare, &system) {
        (None, _) => None,
        (Some(c), SystemSpec::Musat19(m)) => Some(c.validate(m)?),
        (Some(_), other) => {
            return Err(FieldError::new(
                "compare",
                format!(
                    "needs [system] kind = \"musat19\" (the full model is compared with the \
                     19- and 3-parameter flows), got \"{}\"",
                    other.kind()
                ),
            ));
        }
    };
    check(
        "scenario",
        solve.is_some() || sweep.is_some() || compare.is_some(),
        || "nothing to run: add a [solve], [sweep] or [compare] section".into(),
    )?;
    if solve.is_some() && system.n().is_none() {
        return Err(FieldError::new("system.n", "required for [solve] (N >= 2)"));
    }
    Ok(Scenario {
        name,
        origin: String::new(),
        text: String::new(),
        description: raw.description,
        system,
        solver,
        solve,
        sweep,
        compare,
    })
}

fn parse_system(mut table: toml::Table) -> Result<SystemSpec, FieldError> {
    let kind = match table.remove("kind") {
        None => {
            return Err(FieldError::new(
                "system.kind",
                "required; one of \"musat3\", \"musat19\"",
            ));
        }
        Some(toml::Value::String(s)) => s,
        Some(other) => {
            return Err(FieldError::new(
                "system.kind",
                format!("expected a string, got {}", other.type_str()),
            ));
        }
    };
    match kind.as_str() {
        "musat3" => {
            let raw: RawMusat3 = deserialize_table(table, "system")?;
            Ok(SystemSpec::Musat3(raw.validate()?))
        }
        "musat19" => {
            let raw: RawMusat19 = deserialize_table(table, "system")?;
            Ok(SystemSpec::Musat19(raw.validate()?))
        }
        other => Err(FieldError::new(
            "system.kind",
            format!("unknown system `{other}`, expected one of \"musat3\", \"musat19\""),
        )),
    }
}

/// Deserialize a sub-table, keeping the field path (prefixed with `prefix`) in errors.
fn deserialize_table<T: serde::de::DeserializeOwned>(
    table: toml::Table,
    prefix: &str,
) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            prefix.to_string()
        } else {
            format!("{prefix}.{path}")
        };
        FieldError::new(field, e.inner().message())
    })
}

fn validate_solver(raw: RawSolver) -> Result<SolverSpec, FieldError> {
    let method = raw.method.unwrap_or_else(|| "dopri5".into());
    check("solver.method", method == "dopri5", || {
        format!("must be \"dopri5\" (the only integrator), got {method:?}")
    })?;
    let rtol = raw.rtol.unwrap_or(1e-10);
    check("solver.rtol", rtol > 0.0 && rtol < 1.0, || {
        format!("must be in (0, 1), got {rtol}")
    })?;
    let atol = raw.atol.unwrap_or(1e-12);
    check_positive("solver.atol", atol)?;
    if let Some(t) = raw.t_max {
        check_positive("solver.t_max", t)?;
    }
    check(
        "solver.horizon",
        raw.t_max.is_none() || raw.horizon.is_none(),
        || "give either solver.t_max or solver.horizon, not both".into(),
    )?;
    let horizon = raw.horizon.unwrap_or(10.0);
    check_positive("solver.horizon", horizon)?;
    let max_steps = raw.max_steps.unwrap_or(1_000_000);
    check("solver.max_steps", max_steps >= 1, || {
        format!("must be >= 1, got {max_steps}")
    })?;
    Ok(SolverSpec {
        method,
        rtol,
        atol,
        t_max: raw.t_max,
        horizon,
        max_steps,
    })
}

fn validate_solve(raw: RawSolve) -> Result<SolveSpec, FieldError> {
    let thresholds = raw.thresholds.unwrap_or_else(|| vec![0.5]);
    check_thresholds("solve.thresholds", &thresholds)?;
    let loss_fraction = raw.loss_fraction.unwrap_or(0.5);
    check_fraction("solve.loss_fraction", loss_fraction)?;
    let margin = raw.margin.unwrap_or(0.25);
    check("solve.margin", margin >= 0.0 && margin.is_finite(), || {
        format!("must be >= 0, got {margin}")
    })?;
    let tail_steps = raw.tail_steps.unwrap_or(5000);
    check("solve.tail_steps", tail_steps >= 1, || {
        format!("must be >= 1, got {tail_steps}")
    })?;
    let samples = raw.samples.unwrap_or(1001);
    check("solve.samples", (2..=10_000_000).contains(&samples), || {
        format!("must be in 2..=10000000, got {samples}")
    })?;
    Ok(SolveSpec {
        thresholds,
        loss_fraction,
        margin,
        tail_steps,
        samples,
        spacing: raw.spacing,
    })
}

/// Largest N accepted anywhere (the uniform-query flow costs O(N) per gradient).
pub const MAX_N: i64 = 10_000_000;

fn check_n(field: &str, n: i64) -> Result<(), FieldError> {
    check(field, n >= 2, || format!("must be >= 2, got {n}"))?;
    check(field, n <= MAX_N, || format!("must be <= {MAX_N}, got {n}"))
}

/// Expand an N specification into distinct ascending integers.
pub fn expand_n(spec: &NSpec, field: &str) -> Result<Vec<usize>, FieldError> {
    let mut values: Vec<usize> = match spec {
        NSpec::List(list) => {
            check(field, !list.is_empty(), || "must not be empty".into())?;
            for &n in list {
                check_n(field, n)?;
            }
            list.iter().map(|&n| n as usize).collect()
        }
        NSpec::Range(r) => {
            check_n(&format!("{field}.from"), r.from)?;
            check_n(&format!("{field}.to"), r.to)?;
            check(&format!("{field}.to"), r.to >= r.from, || {
                format!("must be >= from ({}), got {}", r.from, r.to)
            })?;
            check(&format!("{field}.points"), r.points >= 1, || {
                format!("must be >= 1, got {}", r.points)
            })?;
            check(&format!("{field}.points"), r.points <= 100_000, || {
                format!("must be <= 100000, got {}", r.points)
            })?;
            check(
                &format!("{field}.points"),
                r.points > 1 || r.from == r.to,
                || "a single point needs from = to".into(),
            )?;
            let (a, b, k) = (r.from as f64, r.to as f64, r.points);
            (0..k)
                .map(|i| {
                    let s = if k == 1 {
                        0.0
                    } else {
                        i as f64 / (k - 1) as f64
                    };
                    let x = match r.spacing {
                        NSpacing::Geometric => (a.ln() + s * (b.ln() - a.ln())).exp(),
                        NSpacing::Linear => a + s * (b - a),
                    };
                    x.round().clamp(a, b) as usize
                })
                .collect()
        }
    };
    values.sort_unstable();
    values.dedup();
    Ok(values)
}

fn validate_sweep(raw: RawSweep) -> Result<SweepSpec, FieldError> {
    let n = expand_n(&raw.n, "sweep.n")?;
    let mut thresholds = raw.thresholds.unwrap_or_else(|| vec![0.5]);
    check("sweep.thresholds", !thresholds.is_empty(), || {
        "must list at least one threshold".into()
    })?;
    check_thresholds("sweep.thresholds", &thresholds)?;
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup();
    let fit_min_n = raw.fit_min_n.unwrap_or(16);
    Ok(SweepSpec {
        n,
        thresholds,
        fit_min_n,
    })
}

#[cfg(test)]
mod tests;
