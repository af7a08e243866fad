//! Scenario files: the TOML schema (serde, `deny_unknown_fields`) and its validation into a
//! typed [`Scenario`]. Every error names the field by its path (`sweep.n`, `system.loss_scale`)
//! and the accepted range.
//!
//! Parsing is two-step, like ripgrep's low-level/high-level arguments: the raw document is
//! deserialized (serde reports unknown fields and wrong types with their path), then
//! [`validate`]d (ranges, cross-field rules) into plain data the experiments consume.

mod phase;
mod sweep;
pub(crate) mod validate;

pub use crate::systems::chen::scenario::{
    GdData, GihFullSpec, GihGdSpec, GihJobSpec, GihSpec, LossName, MiJobSpec, RawGih, RawGihJob,
    StageSpec, TRANSFER_BATCHES, TransferSpec,
};
pub use crate::systems::musat::scenario3::{MUSAT3_NAMES, Musat3Spec, RawMusat3};
pub use crate::systems::musat::scenario19::{
    CompareSpec, InitKind, Musat19Spec, RawCompare, RawMusat19,
};
pub use crate::systems::wang::scenario::{
    Estimator, FullInit, FullOptimizer, FullSpec, Layer1Mode, Paradigm, RawRich, RawRichTrain,
    RichEvents, RichSpec, RichTrainSpec, TrainModel,
};
pub use phase::{PhaseSpec, Slice};
pub use sweep::{MAX_POINTS, SweepField, SweepPoint, SweepSpec, SweepValue, expand_values};
pub use validate::FieldError;

use crate::flow::Method;
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
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phase: Vec<PhaseSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepSpec>,
    /// The Chen et al. job (`[gih]`, system kind `gih`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gih: Option<GihJobSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare: Option<CompareSpec>,
    /// Training alongside the flow (`[train]`, parsed by system kind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainSpec>,
}

/// `[train]`, tagged by the system's kind.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum TrainSpec {
    Rich(RichTrainSpec),
}

/// The reduced system, tagged by `kind`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SystemSpec {
    Musat3(Musat3Spec),
    Musat19(Musat19Spec),
    Rich(RichSpec),
    /// Chen et al.'s generalized induction head (theory/chen.md).
    Gih(GihSpec),
}

impl SystemSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            SystemSpec::Musat3(_) => "musat3",
            SystemSpec::Musat19(_) => "musat19",
            SystemSpec::Rich(_) => "rich",
            SystemSpec::Gih(_) => "gih",
        }
    }

    /// Default of `solver.horizon` (a multiple of the system's time scale).
    pub fn default_horizon(&self) -> f64 {
        match self {
            SystemSpec::Musat3(_) | SystemSpec::Musat19(_) | SystemSpec::Gih(_) => 10.0,
            SystemSpec::Rich(_) => crate::systems::wang::scenario::DEFAULT_HORIZON,
        }
    }

    /// Names of the system's coordinates, in θ order (phase axes, `fixed`, `init`, `freeze`).
    pub fn coordinate_names(&self) -> Vec<String> {
        match self {
            SystemSpec::Musat3(_) => MUSAT3_NAMES.iter().map(|s| s.to_string()).collect(),
            SystemSpec::Musat19(_) => crate::systems::musat::subspace::NAMES19
                .iter()
                .map(|s| s.to_string())
                .collect(),
            SystemSpec::Rich(r) => r.model().names(),
            SystemSpec::Gih(g) => {
                let subsets = crate::systems::chen::common::Subsets::new(g.heads, g.degree);
                crate::systems::chen::common::Layout {
                    n_subsets: subsets.len(),
                    heads: g.heads,
                    window: g.window,
                }
                .names(&subsets)
            }
        }
    }
}

/// Integrator settings (`[solver]`).
#[derive(Debug, Clone, Serialize)]
pub struct SolverSpec {
    /// "dopri5" (Dormand–Prince 5(4), from `ode_solvers`; the default) or "dop853" (Hairer's
    /// 8(5,3)); both with dense output.
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    description: Option<String>,
    system: toml::Table,
    #[serde(default)]
    solver: RawSolver,
    solve: Option<RawSolve>,
    phase: Option<Vec<phase::RawPhase>>,
    gih: Option<RawGihJob>,
    compare: Option<RawCompare>,
    train: Option<toml::Table>,
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
    spacing: Option<Spacing>,
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
    let field_err = |error: FieldError| ScenarioError::Field {
        origin: origin.to_string(),
        error,
    };
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| ScenarioError::Syntax {
        origin: origin.to_string(),
        message: e.to_string().trim().replace('\n', " "),
    })?;
    let raw_sweep = match doc.remove("sweep") {
        None => None,
        Some(toml::Value::Table(t)) => Some(
            deserialize_table::<sweep::RawSweep>(t, "sweep")
                .and_then(sweep::RawSweep::parse)
                .map_err(field_err)?,
        ),
        Some(other) => {
            return Err(field_err(FieldError::new(
                "sweep",
                format!("expected a table, got {}", other.type_str()),
            )));
        }
    };
    let Some(parsed) = raw_sweep else {
        let mut scenario = validate_doc(doc, default_name, true).map_err(field_err)?;
        scenario.origin = origin.to_string();
        scenario.text = text.to_string();
        return Ok(scenario);
    };
    // The jobs other than the sweep see the document as written; a swept field it lacks is
    // filled from the first point for validation only, and then no other job may use it.
    let combos = sweep::product(&parsed.fields);
    let mut base_doc = doc.clone();
    let mut filled = Vec::new();
    for (f, v) in parsed.fields.iter().zip(&combos[0]) {
        if !sweep::has_path(&base_doc, &f.path) {
            sweep::set_path(&mut base_doc, &f.path, v.to_toml()).map_err(field_err)?;
            filled.push(f.path.clone());
        }
    }
    // An error on a swept field names the sweep entry and the value.
    let at_point = |mut e: FieldError, values: &[SweepValue]| {
        if let Some((f, v)) = parsed
            .fields
            .iter()
            .zip(values)
            .find(|(f, _)| e.field == f.path || e.field.starts_with(&format!("{}.", f.path)))
        {
            e.field = if f.path == "system.n" && e.field == "system.n" {
                "sweep.n".to_string()
            } else {
                format!("sweep.fields.{}", e.field)
            };
            e.message = format!(
                "{} (at the sweep value {} = {})",
                e.message,
                f.column(),
                v.as_f64()
            );
        }
        field_err(e)
    };
    let mut scenario =
        validate_doc(base_doc, default_name, false).map_err(|e| at_point(e, &combos[0]))?;
    if parsed.thresholds_given && matches!(scenario.system, SystemSpec::Rich(_)) {
        return Err(field_err(FieldError::new(
            "sweep.thresholds",
            "not used by kind \"rich\": set system.events.theta_IH (or sweep it as \
             \"system.events.theta_IH\")",
        )));
    }
    if let (Some(path), true) = (
        filled.first(),
        scenario.solve.is_some()
            || !scenario.phase.is_empty()
            || scenario.compare.is_some()
            || scenario.train.is_some(),
    ) {
        return Err(field_err(FieldError::new(
            path.clone(),
            "required for [solve], [[phase]], [compare] and [train] (the sweep sets it for its \
             own points only)",
        )));
    }
    let mut points = Vec::with_capacity(combos.len());
    for (index, values) in combos.into_iter().enumerate() {
        let mut point_doc = doc.clone();
        for (f, v) in parsed.fields.iter().zip(&values) {
            sweep::set_path(&mut point_doc, &f.path, v.to_toml()).map_err(field_err)?;
        }
        let mut point =
            validate_doc(point_doc, default_name, false).map_err(|e| at_point(e, &values))?;
        point.origin = format!("{origin} [sweep point {index}]");
        point.solve = None;
        point.phase = Vec::new();
        point.compare = None;
        point.train = None;
        points.push(SweepPoint {
            index,
            values,
            scenario: Box::new(point),
        });
    }
    scenario.sweep = Some(SweepSpec {
        fields: parsed.fields,
        n_points: points.len(),
        thresholds: parsed.thresholds,
        fit_min_n: parsed.fit_min_n,
        x: parsed.x,
        points,
    });
    scenario.origin = origin.to_string();
    scenario.text = text.to_string();
    Ok(scenario)
}

/// Validate a document without `[sweep]`. `require_job`: it must have something to run.
fn validate_doc(
    doc: toml::Table,
    default_name: &str,
    require_job: bool,
) -> Result<Scenario, FieldError> {
    let raw: RawScenario =
        serde_path_to_error::deserialize(toml::Value::Table(doc)).map_err(|e| {
            let path = e.path().to_string();
            FieldError::new(
                if path == "." { "scenario".into() } else { path },
                e.inner().message(),
            )
        })?;
    validate(raw, default_name, require_job)
}

fn validate(
    raw: RawScenario,
    default_name: &str,
    require_job: bool,
) -> Result<Scenario, FieldError> {
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
    let solver = validate_solver(raw.solver, system.default_horizon())?;
    let solve = raw.solve.map(|s| validate_solve(s, &system)).transpose()?;
    let train = raw.train.map(|t| validate_train(t, &system)).transpose()?;
    if let SystemSpec::Rich(r) = &system {
        crate::systems::wang::scenario::check_against_solver(r, &solver)?;
    }
    let raw_phase = raw.phase.unwrap_or_default();
    let names = system.coordinate_names();
    let count = raw_phase.len();
    let phase = raw_phase
        .into_iter()
        .enumerate()
        .map(|(k, p)| p.validate(&names, k, count))
        .collect::<Result<Vec<_>, _>>()?;
    let mut stems = std::collections::BTreeSet::new();
    for p in &phase {
        check("phase", stems.insert(p.name.clone()), || {
            format!(
                "two [[phase]] entries would both write `{}`; give them distinct `name`s",
                p.name
            )
        })?;
    }
    let gih = match (&system, raw.gih) {
        (_, None) => None,
        (SystemSpec::Gih(g), Some(job)) => Some(job.validate(g)?),
        (other, Some(_)) => {
            return Err(FieldError::new(
                "gih",
                format!(
                    "the [gih] job needs [system] kind = \"gih\", got kind = \"{}\"",
                    other.kind()
                ),
            ));
        }
    };
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
    check("gih", gih.is_none() || solve.is_none(), || {
        "[solve] and [gih] would both write trajectory.csv and events.csv; use one of them".into()
    })?;
    check(
        "scenario",
        solve.is_some()
            || !phase.is_empty()
            || compare.is_some()
            || train.is_some()
            || gih.is_some()
            || !require_job,
        || {
            "nothing to run: add a [solve], [sweep], [[phase]], [compare], [train] or [gih] section"
                .into()
        },
    )?;
    Ok(Scenario {
        name,
        origin: String::new(),
        text: String::new(),
        description: raw.description,
        system,
        solver,
        solve,
        phase,
        sweep: None,
        compare,
        train,
        gih,
    })
}

/// `[train]` by system kind.
fn validate_train(table: toml::Table, system: &SystemSpec) -> Result<TrainSpec, FieldError> {
    match system {
        SystemSpec::Rich(spec) => {
            let raw: RawRichTrain = deserialize_table(table, "train")?;
            Ok(TrainSpec::Rich(raw.validate(spec)?))
        }
        other => Err(FieldError::new(
            "train",
            format!(
                "not available for kind \"{}\" (training alongside exists for \"rich\")",
                other.kind()
            ),
        )),
    }
}

fn parse_system(mut table: toml::Table) -> Result<SystemSpec, FieldError> {
    let kind = match table.remove("kind") {
        None => {
            return Err(FieldError::new(
                "system.kind",
                "required; one of \"musat3\", \"musat19\", \"rich\", \"gih\"",
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
        "rich" => {
            let raw: RawRich = deserialize_table(table, "system")?;
            Ok(SystemSpec::Rich(raw.validate()?))
        }
        "gih" => {
            let raw: RawGih = deserialize_table(table, "system")?;
            Ok(SystemSpec::Gih(raw.validate()?))
        }
        other => Err(FieldError::new(
            "system.kind",
            format!(
                "unknown system `{other}`, expected one of \"musat3\", \"musat19\", \"rich\", \"gih\""
            ),
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

fn validate_solver(raw: RawSolver, default_horizon: f64) -> Result<SolverSpec, FieldError> {
    let name = raw.method.unwrap_or_else(|| "dopri5".into());
    let method = Method::parse(&name).ok_or_else(|| {
        FieldError::new(
            "solver.method",
            format!(
                "must be one of {} (Dormand–Prince 5(4) or 8(5,3)), got {name:?}",
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

fn validate_solve(raw: RawSolve, system: &SystemSpec) -> Result<SolveSpec, FieldError> {
    let rich = matches!(system, SystemSpec::Rich(_));
    if rich {
        for (field, given) in [
            ("solve.thresholds", raw.thresholds.is_some()),
            ("solve.loss_fraction", raw.loss_fraction.is_some()),
        ] {
            check(field, !given, || {
                "not used by kind \"rich\": its phase events are set in [system.events] \
                 (g_fraction, theta_IH, theta_lo, theta_hi, ih_loss_fraction, converge)"
                    .into()
            })?;
        }
    }
    let stop_after_events = !rich || raw.margin.is_some();
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
        spacing: raw
            .spacing
            .unwrap_or(if rich { Spacing::Log } else { Spacing::Linear }),
        stop_after_events,
    })
}

/// Largest N accepted anywhere (the uniform-query flow costs O(N) per gradient).
pub const MAX_N: i64 = 10_000_000;

#[cfg(test)]
mod tests;
