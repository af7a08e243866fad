//! Scenario files: the TOML schema (serde, `deny_unknown_fields`) and its validation into a
//! typed [`Scenario`]. Every error names the field by its path (`sweep.n`, `system.loss_scale`)
//! and the accepted range.
//!
//! Parsing is two-step, like ripgrep's low-level/high-level arguments: the raw document is
//! deserialized (serde reports unknown fields and wrong types with their path), then
//! [`validate`]d (ranges, cross-field rules) into plain data the experiments consume.

pub mod overrides;
mod phase;
pub mod sweep;
pub mod validate;

pub use phase::{PhaseSpec, RawPhase, Slice};
pub use sweep::{MAX_POINTS, SweepField, SweepValue, expand_values};
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

/// Integrator settings (`[solver]`).
#[derive(Debug, Clone, Serialize)]
pub struct SolverSpec {
    /// "dopri5" (Dormand–Prince 5(4), from `ode_solvers`; the default), "dop853" (Hairer's
    /// 8(5,3)), "radau5" (Radau IIA of order 5, implicit, for stiff flows) or "auto" (DOP853,
    /// switching to Radau5 where the flow turns stiff); all with dense output.
    pub method: Method,
    pub rtol: f64,
    pub atol: f64,
    /// Absolute horizon, if given.
    pub t_max: Option<f64>,
    /// Horizon as a multiple of the system's time scale (musat3: N²/loss_scale, default 10;
    /// rich: L/loss_scale, default 40), used when `t_max` is not given.
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
    /// Stop `margin` after the last event (always for musat3; for rich only when `margin` is
    /// given, otherwise the run goes to the horizon).
    pub stop_after_events: bool,
}

// ---------------------------------------------------------------------------------------------
// Raw schema

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSolver {
    method: Option<String>,
    rtol: Option<f64>,
    atol: Option<f64>,
    t_max: Option<f64>,
    horizon: Option<f64>,
    max_steps: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSolve {
    thresholds: Option<Vec<f64>>,
    loss_fraction: Option<f64>,
    margin: Option<f64>,
    tail_steps: Option<u32>,
    samples: Option<usize>,
    spacing: Option<Spacing>,
}

/// Deserialize a sub-table, keeping the field path (prefixed with `prefix`) in errors.
pub fn deserialize_table<T: serde::de::DeserializeOwned>(
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

pub fn validate_solver(raw: RawSolver, default_horizon: f64) -> Result<SolverSpec, FieldError> {
    let name = raw.method.unwrap_or_else(|| "dopri5".into());
    let method = Method::parse(&name).ok_or_else(|| {
        FieldError::new(
            "solver.method",
            format!(
                "must be one of {} (explicit Dormand–Prince 5(4) or 8(5,3), implicit Radau IIA \
                 of order 5, or 8(5,3) switching to Radau where the flow turns stiff), got {name:?}",
                Method::NAMES.map(|m| format!("\"{m}\"")).join(", ")
            ),
        )
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
    let horizon = raw.horizon.unwrap_or(default_horizon);
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

/// Validate `[solve]` under a system's rules: whether it takes thresholds, the default spacing
/// and whether it stops after the events by default.
pub fn validate_solve(raw: RawSolve, rules: SolveRules) -> Result<SolveSpec, FieldError> {
    if !rules.thresholds {
        for (field, given) in [
            ("solve.thresholds", raw.thresholds.is_some()),
            ("solve.loss_fraction", raw.loss_fraction.is_some()),
        ] {
            check(field, !given, || rules.refusal.to_string())?;
        }
    }
    let stop_after_events = rules.stop_after_events || raw.margin.is_some();
    let thresholds = raw.thresholds.unwrap_or_else(|| vec![0.5]);
    check_thresholds("solve.thresholds", &thresholds)?;
    let thresholds = validate::dedup_keep_order(&thresholds);
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
        spacing: raw.spacing.unwrap_or(rules.spacing),
        stop_after_events,
    })
}

/// What `[solve]` accepts for a system.
#[derive(Debug, Clone, Copy)]
pub struct SolveRules {
    /// The events are threshold crossings of the emergence coordinates (`thresholds`,
    /// `loss_fraction` accepted, also `sweep.thresholds`); otherwise the system sets its own.
    pub thresholds: bool,
    /// Default sample spacing of `trajectory.csv`.
    pub spacing: Spacing,
    /// Stop `margin` after the last event by default (otherwise only when `margin` is given).
    pub stop_after_events: bool,
    /// Why `thresholds` and `loss_fraction` are refused (when `thresholds` is false).
    pub refusal: &'static str,
}

impl SolveRules {
    /// The rules of a system whose events are threshold crossings.
    pub const THRESHOLDS: SolveRules = SolveRules {
        thresholds: true,
        spacing: Spacing::Linear,
        stop_after_events: true,
        refusal: "",
    };
}

/// The largest scenario file read (bytes): the shipped ones are under 4 KiB.
pub const MAX_SCENARIO_BYTES: u64 = 1 << 20;

/// Read a scenario file as text (the name defaults to the file stem). Only regular files of at
/// most [`MAX_SCENARIO_BYTES`] are read: a FIFO or a device would block or never end.
pub fn read_file(path: &Path) -> Result<(String, String), ScenarioError> {
    use std::io::Read;
    let err = |source: std::io::Error| ScenarioError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(err)?;
    if !meta.is_file() {
        return Err(err(std::io::Error::other(if meta.is_dir() {
            "it is a folder; give a .toml file"
        } else {
            "not a regular file (a FIFO, socket or device); give a .toml file"
        })));
    }
    if meta.len() > MAX_SCENARIO_BYTES {
        return Err(err(too_big()));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SCENARIO_BYTES + 1).read_to_end(&mut bytes))
        .map_err(err)?;
    if bytes.len() as u64 > MAX_SCENARIO_BYTES {
        return Err(err(too_big()));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        ))
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario".into());
    Ok((text, stem))
}

fn too_big() -> std::io::Error {
    std::io::Error::other(format!(
        "larger than {MAX_SCENARIO_BYTES} bytes (1 MiB), the most a scenario file may have"
    ))
}

/// The longest scenario `name` (it names a folder; file systems allow 255 bytes for the whole
/// folder name, which a shard suffix extends).
pub const MAX_NAME_LEN: usize = 100;

/// `name`: a folder name.
pub fn check_name(name: &str) -> Result<(), FieldError> {
    check("name", name.len() <= MAX_NAME_LEN, || {
        format!("at most {MAX_NAME_LEN} characters, got {}", name.len())
    })?;
    check(
        "name",
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !name.starts_with('.'),
        || format!("must be a folder name of letters, digits, '-', '_' or '.', got {name:?}"),
    )
}

/// The integrator (`solver.method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Dormand–Prince 5(4) with its 4th-order continuous output (`ode_solvers`).
    #[default]
    Dopri5,
    /// Dormand–Prince 8(5,3) with its 7th-order continuous output (Hairer's DOP853): fewer
    /// steps at tight tolerances.
    Dop853,
    /// Radau IIA of order 5 (Hairer's RADAU5): implicit, L-stable, with its collocation
    /// polynomial as continuous output; for stiff flows, whose explicit steps are limited by
    /// stability rather than accuracy.
    Radau5,
    /// DOP853 until its stiffness test fires (or its steps keep being rejected), then Radau5
    /// from the last accepted state to the end of the run.
    Auto,
}

impl Method {
    pub const NAMES: [&'static str; 4] = ["dopri5", "dop853", "radau5", "auto"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "dopri5" => Some(Method::Dopri5),
            "dop853" => Some(Method::Dop853),
            "radau5" => Some(Method::Radau5),
            "auto" => Some(Method::Auto),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Method::Dopri5 => "dopri5",
            Method::Dop853 => "dop853",
            Method::Radau5 => "radau5",
            Method::Auto => "auto",
        }
    }
}

/// Largest N accepted anywhere (the uniform-query flow costs O(N) per gradient).
pub const MAX_N: i64 = 10_000_000;
