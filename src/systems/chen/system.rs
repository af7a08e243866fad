//! Chen et al. as a plugin: `kind = "gih"`, the generalized induction head's joint flow for the
//! generic jobs, and `[gih]` (the χ² MI, the staged reduced flow, the full model and GD
//! alongside, transfer; docs/theory/chen.md), which in a sweep configures every point.

use crate::Error;
use crate::scenario::SolverSpec;
use crate::scenario::deserialize_table;
use crate::scenario::validate::{FieldError, check};
use crate::systems::Kind;
use crate::systems::chen::common::{Layout, Subsets};
use crate::systems::chen::job;
use crate::systems::chen::scenario::{GdData, GihGdSpec, GihJobSpec, GihSpec, RawGih, RawGihJob};
use crate::systems::plugin::{
    Column, Footprint, Instance, JobContext, JobOutput, PointRows, ScenarioParts, System, When,
};

/// `kind = "gih"`.
pub const GIH: Kind = Kind {
    name: "gih",
    sections: &["gih"],
    about: "Chen et al.: the generalized induction head (c_S, RPE weights, a), with [gih]",
    parse: |table| {
        let raw: RawGih = deserialize_table(table, "system")?;
        Ok(Box::new(GihSystem {
            spec: raw.validate()?,
            job: None,
        }))
    },
};

/// `kind = "gih"` with its optional `[gih]`.
#[derive(Debug, Clone)]
pub struct GihSystem {
    pub spec: GihSpec,
    pub job: Option<GihJobSpec>,
}

impl System for GihSystem {
    fn kind(&self) -> &'static str {
        "gih"
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.spec).expect("specs serialize");
        v["kind"] = self.kind().into();
        v
    }
    fn coordinate_names(&self) -> Vec<String> {
        let g = &self.spec;
        let subsets = Subsets::new(g.heads, g.degree);
        Layout {
            n_subsets: subsets.len(),
            heads: g.heads,
            window: g.window,
        }
        .names(&subsets)
    }
    fn instance(&self) -> Instance {
        job::instance(&self.spec)
    }
    fn sweep_columns(&self) -> Vec<Column> {
        job::point_columns()
    }
    fn sweep_row_keys(&self, _thresholds: &[f64]) -> Vec<Option<String>> {
        vec![None]
    }
    fn sweep_point(&self, solver: &SolverSpec, _thresholds: &[f64]) -> Result<PointRows, Error> {
        let j = self
            .job
            .as_ref()
            .expect("validated: a gih sweep has a [gih] section");
        job::point(&self.spec, j, solver)
    }
    fn check_sweep(&self, _thresholds_given: bool) -> Result<(), FieldError> {
        check("gih", self.job.is_some(), || {
            "a sweep over a gih system needs a [gih] section (its stages)".into()
        })
    }
    fn footprints(&self, _threads: usize) -> Vec<Footprint> {
        let Some(job) = &self.job else {
            return Vec::new();
        };
        let s = &self.spec;
        // per sequence position: the token, and per head a d-vector of features and its cache
        let per_position = (2 * s.heads * s.d + 4) as f64 * 8.0;
        let mut positions = (s.n_sequences * s.length) as f64;
        if let Some(t) = &job.transfer {
            let longest = t.lengths.iter().copied().max().unwrap_or(0);
            positions = positions.max((t.n_sequences * longest) as f64);
        }
        if let Some(GihGdSpec {
            data: GdData::Fresh { batch },
            ..
        }) = &job.gd
        {
            positions = positions.max((batch * s.length) as f64);
        }
        let rows = (job.samples * job.stages.len().max(1)) as f64
            + job.gd.as_ref().map_or(0.0, |g| g.samples as f64);
        vec![Footprint {
            what: "[gih]".into(),
            fields: "system.n_sequences, system.length, system.d, system.heads, gih.samples",
            memory: positions * per_position * 2.0,
            output: rows * 64.0 * 24.0 * 2.0 + rows * 64.0 * 60.0,
        }]
    }
    fn attach(&mut self, section: &str, table: toml::Table) -> Result<(), FieldError> {
        debug_assert_eq!(section, "gih");
        let raw: RawGihJob = deserialize_table(table, "gih")?;
        self.job = Some(raw.validate(&self.spec)?);
        Ok(())
    }
    fn sections_json(&self) -> Vec<(&'static str, serde_json::Value)> {
        self.job
            .iter()
            .map(|j| ("gih", serde_json::to_value(j).expect("specs serialize")))
            .collect()
    }
    fn check(&self, parts: &ScenarioParts) -> Result<(), FieldError> {
        check("gih", self.job.is_none() || parts.solve.is_none(), || {
            "[solve] and [gih] would both write trajectory.csv and events.csv; use one of them"
                .into()
        })
    }
    fn has_own_job(&self) -> bool {
        self.job.is_some()
    }
    fn describe_own(&self, has_sweep: bool) -> Vec<String> {
        self.job
            .iter()
            .map(|g| {
                let names: Vec<&str> = g.stages.iter().map(|st| st.name.as_str()).collect();
                format!(
                    "gih with {} stage(s) [{}]{}{}",
                    g.stages.len(),
                    names.join(", "),
                    if g.full.is_some() {
                        " + full model"
                    } else {
                        ""
                    },
                    if has_sweep { " (per sweep point)" } else { "" }
                )
            })
            .collect()
    }
    /// After the phase portraits, unless the scenario has a sweep (then `[gih]` configures its
    /// points instead).
    fn run_own(&self, when: When, ctx: &JobContext) -> Option<Result<JobOutput, Error>> {
        match (when, &self.job, ctx.has_sweep) {
            (When::AfterPhase, Some(j), false) => Some(job::run(&self.spec, j, ctx)),
            _ => None,
        }
    }
}
