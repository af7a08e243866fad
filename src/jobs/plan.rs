//! A scenario file, validated into what to run: the generic sections (`scenario`), the system
//! with its own sections (`systems`), and every sweep point as a complete scenario.
//!
//! Parsing is two-step, like ripgrep's low-level/high-level arguments: the raw document is
//! deserialized (serde reports unknown fields and wrong types with their path), then validated
//! (ranges, cross-field rules) into plain data the jobs consume. Every error names the field by
//! its path (`sweep.n`, `system.loss_scale`) and the accepted range.

use crate::scenario::overrides::{self, Override};
use crate::scenario::sweep::SweepSpec;
use crate::scenario::sweep::{self, RawSweep};
use crate::scenario::validate::check;
use crate::scenario::{
    FieldError, PhaseSpec, RawPhase, RawSolve, RawSolver, ScenarioError, SolveSpec, SolverSpec,
    SweepValue, check_name, deserialize_table, read_file, validate_solve, validate_solver,
};
use crate::systems::plugin::ScenarioParts;
use crate::systems::{self, System};
use serde::Deserialize;
use serde::ser::{Serialize, SerializeMap, Serializer};
use std::path::Path;
use std::sync::Arc;

/// A validated scenario: what to run and with which settings.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    /// Where the scenario came from (a file path, "command line", "built-in demo").
    pub origin: String,
    /// The document as written.
    pub text: String,
    pub description: Option<String>,
    /// The system with its own sections (`[compare]`, `[train]`, `[gih]`).
    pub system: Arc<dyn System>,
    pub solver: SolverSpec,
    pub solve: Option<SolveSpec>,
    pub phase: Vec<PhaseSpec>,
    pub sweep: Option<Sweep>,
}

/// A validated sweep and its points.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub spec: SweepSpec,
    pub points: Vec<SweepPoint>,
}

impl std::ops::Deref for Sweep {
    type Target = SweepSpec;
    fn deref(&self) -> &SweepSpec {
        &self.spec
    }
}

/// One point of a sweep: its index in the product order, its values (one per field), and the
/// complete scenario to evaluate.
#[derive(Debug, Clone)]
pub struct SweepPoint {
    pub index: usize,
    pub values: Vec<SweepValue>,
    pub scenario: Box<Scenario>,
}

/// The manifest's echo of the scenario: `name`, `description`, `system` (with `kind`),
/// `solver`, the jobs present, and the system's own sections.
impl Serialize for Scenario {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("name", &self.name)?;
        m.serialize_entry("description", &self.description)?;
        m.serialize_entry("system", &self.system.to_json())?;
        m.serialize_entry("solver", &self.solver)?;
        if let Some(solve) = &self.solve {
            m.serialize_entry("solve", solve)?;
        }
        if !self.phase.is_empty() {
            m.serialize_entry("phase", &self.phase)?;
        }
        if let Some(sweep) = &self.sweep {
            m.serialize_entry("sweep", &sweep.spec)?;
        }
        for (name, value) in self.system.sections_json() {
            m.serialize_entry(name, &value)?;
        }
        m.end()
    }
}

/// The fields a `--resume` may find changed: they cannot change a finished sweep point's result
/// (the step budget, the description, the jobs that are recomputed on every run, output
/// options), besides the system's own sections listed by `System::resume_ignores`.
pub const RESUME_MAY_CHANGE: [&str; 5] = [
    "description",
    "solver.max_steps",
    "solve",
    "phase",
    "figures",
];

/// The manifest echo of a scenario without the fields a resume may change.
pub fn resume_identity(echo: &serde_json::Value, system_ignores: &[&str]) -> serde_json::Value {
    let mut v = echo.clone();
    for path in RESUME_MAY_CHANGE.iter().chain(system_ignores) {
        let mut parts: Vec<&str> = path.split('.').collect();
        let last = parts.pop().expect("non-empty path");
        let mut node = &mut v;
        for p in parts {
            node = &mut node[p];
        }
        if let Some(m) = node.as_object_mut() {
            m.remove(last);
        }
    }
    v
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    description: Option<String>,
    system: toml::Table,
    #[serde(default)]
    solver: RawSolver,
    solve: Option<RawSolve>,
    phase: Option<Vec<RawPhase>>,
}

/// Read and validate a scenario file. The scenario name defaults to the file stem.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    load_with(path, &[])
}

/// [`load`] with `--set` overrides applied before validation.
pub fn load_with(path: &Path, overrides: &[Override]) -> Result<Scenario, ScenarioError> {
    let (text, stem) = read_file(path)?;
    parse_str_with(&text, &path.display().to_string(), &stem, overrides)
}

/// Parse and validate scenario text. `origin` names the source in messages; `default_name` is
/// used when the document has no `name`.
pub fn parse_str(text: &str, origin: &str, default_name: &str) -> Result<Scenario, ScenarioError> {
    parse_str_with(text, origin, default_name, &[])
}

/// [`parse_str`] with `--set` overrides applied to the document before validation; messages
/// then name the source as `FILE with --set PATH=VALUE ...`.
pub fn parse_str_with(
    text: &str,
    origin: &str,
    default_name: &str,
    overrides: &[Override],
) -> Result<Scenario, ScenarioError> {
    let origin = &if overrides.is_empty() {
        origin.to_string()
    } else {
        let sets: Vec<String> = overrides
            .iter()
            .map(|o| format!("--set {}", o.text))
            .collect();
        format!("{origin} with {}", sets.join(" "))
    };
    let field_err = |error: FieldError| ScenarioError::Field {
        origin: origin.to_string(),
        error,
    };
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| ScenarioError::Syntax {
        origin: origin.to_string(),
        message: syntax_message(&e.to_string()),
    })?;
    for o in overrides {
        overrides::apply(&mut doc, o).map_err(field_err)?;
    }
    // With overrides, the text kept for the manifest (and re-read by `merge`) is the document
    // they produced, so that it reproduces this scenario.
    let effective;
    let text = if overrides.is_empty() {
        text
    } else {
        effective = format!(
            "# {origin}\n{}",
            toml::to_string(&doc).expect("a parsed document serializes")
        );
        effective.as_str()
    };
    let raw_sweep = match doc.remove("sweep") {
        None => None,
        Some(toml::Value::Table(t)) => Some(
            deserialize_table::<RawSweep>(t, "sweep")
                .and_then(RawSweep::parse)
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
    scenario
        .system
        .check_sweep(parsed.thresholds_given)
        .map_err(field_err)?;
    if let (Some(path), true) = (
        filled.first(),
        scenario.solve.is_some() || !scenario.phase.is_empty() || scenario.system.runs_on_base(),
    ) {
        return Err(field_err(FieldError::new(
            path.clone(),
            "required for [solve], [[phase]], [standard], [compare] and [train] (the sweep sets it \
             for its own points only)",
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
        points.push(SweepPoint {
            index,
            values,
            scenario: Box::new(point),
        });
    }
    scenario.sweep = Some(Sweep {
        spec: SweepSpec {
            fields: parsed.fields,
            n_points: points.len(),
            thresholds: parsed.thresholds,
            fit_min_n: parsed.fit_min_n,
            x: parsed.x,
        },
        points,
    });
    scenario.origin = origin.to_string();
    scenario.text = text.to_string();
    Ok(scenario)
}

/// Validate a document without `[sweep]`. `require_job`: it must have something to run.
fn validate_doc(
    mut doc: toml::Table,
    default_name: &str,
    require_job: bool,
) -> Result<Scenario, FieldError> {
    // The sections that belong to a system's own jobs are handed to that system.
    let mut sections = Vec::new();
    for kind in systems::REGISTRY {
        for &name in kind.sections {
            if let Some(value) = doc.remove(name) {
                sections.push((name, value));
            }
        }
    }
    let raw: RawScenario =
        serde_path_to_error::deserialize(toml::Value::Table(doc)).map_err(|e| {
            let path = e.path().to_string();
            FieldError::new(
                if path == "." { "scenario".into() } else { path },
                e.inner().message(),
            )
        })?;
    let name = raw.name.unwrap_or_else(|| default_name.to_string());
    check_name(&name)?;
    let mut system = systems::parse_system(raw.system)?;
    let solver = validate_solver(raw.solver, system.default_horizon())?;
    let solve = raw
        .solve
        .map(|s| validate_solve(s, system.solve_rules()))
        .transpose()?;
    for (section, value) in sections {
        let owners = systems::owners_of(section);
        if !owners.iter().any(|k| k.name == system.kind()) {
            let kinds: Vec<String> = owners.iter().map(|k| format!("\"{}\"", k.name)).collect();
            return Err(FieldError::new(
                section,
                format!(
                    "the [{section}] section needs [system] kind = {}, got kind = \"{}\"",
                    kinds.join(" or "),
                    system.kind()
                ),
            ));
        }
        let toml::Value::Table(table) = value else {
            return Err(FieldError::new(
                section,
                format!("expected a table, got {}", value.type_str()),
            ));
        };
        system.attach(section, table)?;
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
    system.check(&ScenarioParts {
        solver: &solver,
        solve: solve.as_ref(),
        has_phase: !phase.is_empty(),
    })?;
    check(
        "scenario",
        solve.is_some() || !phase.is_empty() || system.has_own_job() || !require_job,
        || {
            let mut jobs: Vec<String> = ["[solve]", "[sweep]", "[[phase]]"]
                .into_iter()
                .map(String::from)
                .collect();
            for s in systems::REGISTRY.iter().flat_map(|k| k.sections) {
                let s = format!("[{s}]");
                if !jobs.contains(&s) {
                    jobs.push(s);
                }
            }
            let last = jobs.pop().expect("the generic jobs");
            format!(
                "nothing to run: add a {} or {last} section",
                jobs.join(", ")
            )
        },
    )?;
    Ok(Scenario {
        name,
        origin: String::new(),
        text: String::new(),
        description: raw.description,
        system: Arc::from(system),
        solver,
        solve,
        phase,
        sweep: None,
    })
}

#[cfg(test)]
mod tests;

/// A TOML error on one line, the echo of the offending source line cut to [`ECHO_CHARS`]
/// characters (a 200 KB line would otherwise be printed whole).
fn syntax_message(raw: &str) -> String {
    raw.trim()
        .lines()
        .map(|line| {
            if line.chars().count() > ECHO_CHARS {
                let cut: String = line.chars().take(ECHO_CHARS).collect();
                format!("{cut}…")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// How much of an offending line a syntax error echoes.
const ECHO_CHARS: usize = 120;
