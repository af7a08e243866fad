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
use crate::systems::musat::scenario_standard::{RawStandard, StandardSpec};
use crate::systems::musat::scenario3::{MUSAT3_NAMES, Musat3Spec, RawMusat3};
use crate::systems::musat::scenario19::{CompareSpec, Musat19Spec, RawCompare, RawMusat19};
use crate::systems::musat::standard::{Loss, Optimizer};
use crate::systems::musat::standard_job;
use crate::systems::musat::subspace::{self, MMatrix, NAMES19};
use crate::systems::plugin::{Footprint, Instance, JobContext, JobOutput, Param, System, When};

/// `kind = "musat3"`.
pub const MUSAT3: Kind = Kind {
    name: "musat3",
    sections: &["standard"],
    about: "Musat et al.: the three pseudo-parameters (alpha3, beta2, gamma3)",
    parse: |table| {
        let raw: RawMusat3 = deserialize_table(table, "system")?;
        Ok(Box::new(Musat3System {
            spec: raw.validate()?,
            standard: None,
        }))
    },
};

/// `kind = "musat19"`.
pub const MUSAT19: Kind = Kind {
    name: "musat19",
    sections: &["compare", "standard"],
    about: "Musat et al.: the 19-dim invariant subspace, and the full model ([compare])",
    parse: |table| {
        let raw: RawMusat19 = deserialize_table(table, "system")?;
        Ok(Box::new(Musat19System {
            spec: raw.validate()?,
            compare: None,
            standard: None,
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

/// Parse and validate `[standard]` for N item–label pairs.
fn attach_standard(table: toml::Table, n: usize) -> Result<StandardSpec, FieldError> {
    let raw: RawStandard = deserialize_table(table, "standard")?;
    raw.validate(n)
}

fn standard_json(spec: &Option<StandardSpec>) -> Option<(&'static str, serde_json::Value)> {
    spec.as_ref().map(|s| {
        (
            "standard",
            serde_json::to_value(s).expect("specs serialize"),
        )
    })
}

fn describe_standard(n: usize, s: &StandardSpec) -> String {
    let dims = s.dims(n);
    let loss = match s.loss {
        Loss::Mse => "MSE",
        Loss::Ce => "cross-entropy",
    };
    let optimizer = match s.optimizer {
        Optimizer::Gd => "GD",
        Optimizer::Adam => "Adam",
    };
    format!(
        "standard (transformer D = {}, d_head = {}, N_E = {}, N_p = {}, {loss}, {optimizer}, \
         B = {}, {} steps)",
        dims.d, dims.d_head, dims.vocab, dims.positions, s.batch, s.steps
    )
}

/// `kind = "musat3"` (docs/theory/musat.md §7), with `[standard]` (§11).
#[derive(Debug, Clone)]
pub struct Musat3System {
    pub spec: Musat3Spec,
    pub standard: Option<StandardSpec>,
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
    fn attach(&mut self, section: &str, table: toml::Table) -> Result<(), FieldError> {
        debug_assert_eq!(section, "standard");
        self.standard = Some(attach_standard(table, self.spec.n)?);
        Ok(())
    }
    fn sections_json(&self) -> Vec<(&'static str, serde_json::Value)> {
        standard_json(&self.standard).into_iter().collect()
    }
    /// `[standard]` is recomputed on every run; it never changes a sweep point.
    fn resume_ignores(&self) -> &'static [&'static str] {
        &["standard"]
    }
    fn footprints(&self, _threads: usize) -> Vec<Footprint> {
        self.standard
            .iter()
            .map(|s| standard_job::footprint(self.spec.n, s))
            .collect()
    }
    fn runs_on_base(&self) -> bool {
        self.standard.is_some()
    }
    fn has_own_job(&self) -> bool {
        self.standard.is_some()
    }
    fn describe_own(&self, _has_sweep: bool) -> Vec<String> {
        self.standard
            .iter()
            .map(|s| describe_standard(self.spec.n, s))
            .collect()
    }
    fn run_own(&self, when: When, ctx: &JobContext) -> Option<Result<JobOutput, Error>> {
        let task = standard_job::Task {
            n: self.spec.n,
            query: self.spec.query,
            loss_scale: self.spec.loss_scale,
        };
        match (when, &self.standard) {
            (When::AfterPhase, Some(s)) => Some(standard_job::run(&task, s, ctx)),
            _ => None,
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

/// `kind = "musat19"` (docs/theory/musat.md §5–§6), with `[compare]` (§10) and `[standard]`
/// (§11).
#[derive(Debug, Clone)]
pub struct Musat19System {
    pub spec: Musat19Spec,
    pub compare: Option<CompareSpec>,
    pub standard: Option<StandardSpec>,
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
    fn footprints(&self, threads: usize) -> Vec<Footprint> {
        let standard = self
            .standard
            .iter()
            .map(|s| standard_job::footprint(self.spec.n, s));
        let Some(c) = &self.compare else {
            return standard.collect();
        };
        let data = c.data_spec(&self.spec);
        let b = c.batch.iter().copied().max().unwrap_or(1) as f64;
        let t = data.tokens() as f64;
        let d = c.d as f64;
        // the batch (tokens and targets), the per-thread chunk activations, and the weights
        // with their gradient and optimizer copies (the reduced flows solved beside are
        // counted like [solve])
        let batch = b * (data.sequence_len() as f64 + d) * 8.0;
        let work = threads as f64
            * crate::systems::musat::disentangled::CHUNK as f64
            * t
            * (10.0 * d + t)
            * 8.0;
        let weights = 28.0 * d * d * 8.0 * 4.0;
        let rows = (c.steps / c.checkpoint_every.max(1) + 2) as f64 * c.batch.len() as f64;
        vec![Footprint {
            what: "[compare]".into(),
            fields: "compare.batch, compare.d, compare.steps / compare.checkpoint_every",
            memory: batch + work + weights,
            output: rows * 40.0 * 24.0 + rows * 3.0 * 200.0,
        }]
        .into_iter()
        .chain(standard)
        .collect()
    }
    fn attach(&mut self, section: &str, table: toml::Table) -> Result<(), FieldError> {
        if section == "standard" {
            self.standard = Some(attach_standard(table, self.spec.n)?);
            return Ok(());
        }
        debug_assert_eq!(section, "compare");
        let raw: RawCompare = deserialize_table(table, "compare")?;
        self.compare = Some(raw.validate(&self.spec)?);
        Ok(())
    }
    fn sections_json(&self) -> Vec<(&'static str, serde_json::Value)> {
        self.compare
            .iter()
            .map(|c| ("compare", serde_json::to_value(c).expect("specs serialize")))
            .chain(standard_json(&self.standard))
            .collect()
    }
    fn resume_ignores(&self) -> &'static [&'static str] {
        &["compare", "standard"]
    }
    fn runs_on_base(&self) -> bool {
        self.compare.is_some() || self.standard.is_some()
    }
    fn has_own_job(&self) -> bool {
        self.compare.is_some() || self.standard.is_some()
    }
    fn describe_own(&self, _has_sweep: bool) -> Vec<String> {
        let standard = self
            .standard
            .iter()
            .map(|s| describe_standard(self.spec.n, s));
        self.compare
            .iter()
            .map(|c| {
                format!(
                    "compare (full model D = {}, B = {:?}, {} steps)",
                    c.d, c.batch, c.steps
                )
            })
            .chain(standard)
            .collect()
    }
    /// `[standard]` after `[[phase]]`, `[compare]` after `[sweep]`.
    fn run_own(&self, when: When, ctx: &JobContext) -> Option<Result<JobOutput, Error>> {
        match (when, &self.compare, &self.standard) {
            (When::AfterPhase, _, Some(s)) => {
                let task = standard_job::Task {
                    n: self.spec.n,
                    query: self.spec.query,
                    loss_scale: self.spec.loss_scale,
                };
                Some(standard_job::run(&task, s, ctx))
            }
            (When::AfterSweep, Some(c), _) => Some(compare::run(&self.spec, c, ctx)),
            _ => None,
        }
    }
}
