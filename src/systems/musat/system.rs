//! The Musat systems as plugins: `kind = "musat3"` (the three-parameter flow) and
//! `kind = "musat19"` (the 19-dim flow, with the full model of `[compare]` trained alongside).

use crate::Error;
use crate::scenario::validate::FieldError;
use crate::scenario::{PhaseSpec, deserialize_table};
use crate::systems::Kind;
use crate::systems::musat::compare;
use crate::systems::musat::data::{LabelPosition, QueryPosition};
use crate::systems::musat::musat3::{ALPHA3, BETA2, GAMMA3, Musat3, Query, alpha_beta_invariant};
use crate::systems::musat::musat19::Musat19;
use crate::systems::musat::scenario3::{MUSAT3_NAMES, Musat3Spec, RawMusat3};
use crate::systems::musat::scenario19::{CompareSpec, Musat19Spec, RawCompare, RawMusat19};
use crate::systems::musat::subspace::{self, MMatrix, NAMES19};
use crate::systems::plugin::{Instance, JobContext, JobOutput, Param, System, When};

/// `kind = "musat3"`.
pub const MUSAT3: Kind = Kind {
    name: "musat3",
    sections: &[],
    about: "Musat et al.: the three pseudo-parameters (alpha3, beta2, gamma3)",
    parse: |table| {
        let raw: RawMusat3 = deserialize_table(table, "system")?;
        Ok(Box::new(Musat3System {
            spec: raw.validate()?,
        }))
    },
};

/// `kind = "musat19"`.
pub const MUSAT19: Kind = Kind {
    name: "musat19",
    sections: &["compare"],
    about: "Musat et al.: the 19-dim invariant subspace, and the full model ([compare])",
    parse: |table| {
        let raw: RawMusat19 = deserialize_table(table, "system")?;
        Ok(Box::new(Musat19System {
            spec: raw.validate()?,
            compare: None,
        }))
    },
};

/// The system with its spec, echoed with `kind` in the manifest.
fn tagged(kind: &str, spec: &impl serde::Serialize) -> serde_json::Value {
    let mut v = serde_json::to_value(spec).expect("specs serialize");
    v["kind"] = kind.into();
    v
}

/// The query mode and (when not 1) the loss scale of a Musat system, for labels.
fn musat_labels(query: Query, loss_scale: f64) -> (&'static str, String) {
    let query = match query {
        Query::Last => "last",
        Query::Uniform => "uniform",
    };
    let scale = if loss_scale == 1.0 {
        String::new()
    } else {
        format!(", loss scale {loss_scale}")
    };
    (query, scale)
}

fn n_param(n: usize) -> Vec<Param> {
    vec![Param {
        column: "N".into(),
        field: "system.n".into(),
        value: n as f64,
    }]
}

/// `kind = "musat3"` (docs/theory/musat.md §7).
#[derive(Debug, Clone)]
pub struct Musat3System {
    pub spec: Musat3Spec,
}

impl System for Musat3System {
    fn kind(&self) -> &'static str {
        "musat3"
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn to_json(&self) -> serde_json::Value {
        tagged(self.kind(), &self.spec)
    }
    fn coordinate_names(&self) -> Vec<String> {
        MUSAT3_NAMES.iter().map(|s| s.to_string()).collect()
    }
    fn instance(&self) -> Instance {
        let m = &self.spec;
        let n = m.n;
        let (query, scale) = musat_labels(m.query, m.loss_scale);
        Instance {
            flow: Box::new(Musat3::new(n, m.query, m.loss_scale)),
            init: m.init.to_vec(),
            frozen: m.frozen_indices(),
            time_scale: m.time_scale(),
            emergence: vec![
                (GAMMA3, "gamma3".into()),
                (BETA2, "beta2".into()),
                (ALPHA3, "alpha3".into()),
            ],
            peak: Some((ALPHA3, "t_peak_alpha_rate".into())),
            label: format!("musat3, N = {n}, query {query}{scale}"),
            family: format!("musat3, query {query}{scale}"),
            params: n_param(n),
        }
    }
    /// On the (β₂, α₃) slice with query `last`: the invariant dα/dβ = β(1 − a) through the
    /// origin (docs/theory/musat.md §7.3) and its small-a limit α = β²/2.
    fn invariant_curves(&self, spec: &PhaseSpec) -> Vec<(String, Vec<(f64, f64)>)> {
        if self.spec.query != Query::Last {
            return Vec::new();
        }
        let swap = match (spec.x_name.as_str(), spec.y_name.as_str()) {
            ("beta2", "alpha3") => false,
            ("alpha3", "beta2") => true,
            _ => return Vec::new(),
        };
        let beta_max = if swap {
            spec.y_range[1]
        } else {
            spec.x_range[1]
        };
        let exact = alpha_beta_invariant(self.spec.n, (0.0, 0.0), beta_max.max(0.0), 400);
        let approx: Vec<(f64, f64)> = (0..=400)
            .map(|i| beta_max * i as f64 / 400.0)
            .map(|b| (b, b * b / 2.0))
            .collect();
        let orient = |pts: Vec<(f64, f64)>| -> Vec<(f64, f64)> {
            pts.into_iter()
                .map(|(b, a)| if swap { (a, b) } else { (b, a) })
                .collect()
        };
        vec![
            (
                "invariant dα/dβ = β(1 − a) from 0".to_string(),
                orient(exact),
            ),
            ("small-a limit α = β²/2".to_string(), orient(approx)),
        ]
    }
}

/// `kind = "musat19"` (docs/theory/musat.md §5–§6), with `[compare]` (§10).
#[derive(Debug, Clone)]
pub struct Musat19System {
    pub spec: Musat19Spec,
    pub compare: Option<CompareSpec>,
}

impl System for Musat19System {
    fn kind(&self) -> &'static str {
        "musat19"
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn to_json(&self) -> serde_json::Value {
        tagged(self.kind(), &self.spec)
    }
    fn coordinate_names(&self) -> Vec<String> {
        NAMES19.iter().map(|s| s.to_string()).collect()
    }
    fn instance(&self) -> Instance {
        let m = &self.spec;
        let n = m.n;
        let (query, scale) = musat_labels(m.query, m.loss_scale);
        let cue = match m.label_position {
            LabelPosition::Rotated => "",
            LabelPosition::Same => ", label position same",
            LabelPosition::None => ", label position none",
        };
        let qpos = match m.query_position {
            QueryPosition::Fresh => "",
            QueryPosition::PQ => ", query position p_q",
        };
        let mtext = match m.m {
            MMatrix::J => "",
            MMatrix::Swap => ", M = swap",
        };
        Instance {
            flow: Box::new(Musat19::with_m(
                n,
                m.query,
                m.label_position,
                m.query_position,
                m.m,
                m.loss_scale,
            )),
            init: m.init.clone(),
            frozen: m.frozen_indices(),
            time_scale: m.time_scale(),
            emergence: vec![
                (subspace::GAMMA3, "gamma3".into()),
                (subspace::BETA2, "beta2".into()),
                (subspace::ALPHA3, "alpha3".into()),
            ],
            peak: Some((subspace::ALPHA3, "t_peak_alpha_rate".into())),
            label: format!("musat19, N = {n}, query {query}{scale}{cue}{qpos}{mtext}"),
            family: format!("musat19, query {query}{scale}{cue}{qpos}{mtext}"),
            params: n_param(n),
        }
    }
    fn attach(&mut self, section: &str, table: toml::Table) -> Result<(), FieldError> {
        debug_assert_eq!(section, "compare");
        let raw: RawCompare = deserialize_table(table, "compare")?;
        self.compare = Some(raw.validate(&self.spec)?);
        Ok(())
    }
    fn sections_json(&self) -> Vec<(&'static str, serde_json::Value)> {
        self.compare
            .iter()
            .map(|c| ("compare", serde_json::to_value(c).expect("specs serialize")))
            .collect()
    }
    fn resume_ignores(&self) -> &'static [&'static str] {
        &["compare"]
    }
    fn runs_on_base(&self) -> bool {
        self.compare.is_some()
    }
    fn has_own_job(&self) -> bool {
        self.compare.is_some()
    }
    fn describe_own(&self, _has_sweep: bool) -> Vec<String> {
        self.compare
            .iter()
            .map(|c| {
                format!(
                    "compare (full model D = {}, B = {:?}, {} steps)",
                    c.d, c.batch, c.steps
                )
            })
            .collect()
    }
    fn run_own(&self, when: When, ctx: &JobContext) -> Option<Result<JobOutput, Error>> {
        match (when, &self.compare) {
            (When::AfterSweep, Some(c)) => Some(compare::run(&self.spec, c, ctx)),
            _ => None,
        }
    }
}
