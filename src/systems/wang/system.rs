//! Wang et al. as a plugin: `kind = "rich"`, the six-parameter flow with its phase events
//! (docs/theory/wang.md §8), and `[train]` (SGD and the full transformer alongside, §8–§9).

use crate::Error;
use crate::flow::{EventSpec, Solution, Stage};
use crate::report::Table;
use crate::report::figure::Figure;
use crate::scenario::validate::FieldError;
use crate::scenario::{SolveRules, SolveSpec, SolverSpec, Spacing, deserialize_table};
use crate::systems::Kind;
use crate::systems::plugin::{
    Column, Footprint, Instance, JobContext, JobOutput, PointRows, ScenarioParts, SolveReport,
    System, When,
};
use crate::systems::wang::job;
use crate::systems::wang::scenario::{
    DEFAULT_HORIZON, RawRich, RawRichTrain, RichSpec, RichTrainSpec, check_against_solver,
};
use crate::systems::wang::train;

/// `kind = "rich"`.
pub const RICH: Kind = Kind {
    name: "rich",
    sections: &["train"],
    about: "Wang et al.: the six-parameter lazy-to-rich flow, with SGD and the full model ([train])",
    parse: |table| {
        let raw: RawRich = deserialize_table(table, "system")?;
        Ok(Box::new(RichSystem {
            spec: raw.validate()?,
            train: None,
        }))
    },
};

/// `kind = "rich"` with its optional `[train]`.
#[derive(Debug, Clone)]
pub struct RichSystem {
    pub spec: RichSpec,
    pub train: Option<RichTrainSpec>,
}

impl System for RichSystem {
    fn kind(&self) -> &'static str {
        "rich"
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
        self.spec.model().names()
    }
    fn default_horizon(&self) -> f64 {
        DEFAULT_HORIZON
    }
    fn instance(&self) -> Instance {
        job::instance(&self.spec)
    }
    fn stages(&self, t_max: f64) -> Vec<Stage> {
        job::stages(&self.spec, t_max)
    }
    fn solve_rules(&self) -> SolveRules {
        SolveRules {
            thresholds: false,
            spacing: Spacing::Log,
            stop_after_events: false,
            refusal: "not used by kind \"rich\": its phase events are set in [system.events] \
                      (g_fraction, theta_IH, theta_lo, theta_hi, ih_loss_fraction, converge)",
        }
    }
    fn solve_events(&self, inst: &Instance, _spec: &SolveSpec) -> Vec<EventSpec> {
        job::phase_events(&self.spec, inst.flow.as_ref())
    }
    fn trajectory_figure(
        &self,
        inst: &Instance,
        sol: &Solution,
        table: &Table,
        spacing: Spacing,
    ) -> Option<Figure> {
        Some(job::trajectory_figure(
            &self.spec,
            inst,
            sol,
            table,
            &job::phases(sol),
            spacing,
        ))
    }
    fn extend_solve(
        &self,
        inst: &Instance,
        sol: &Solution,
        report: &mut SolveReport,
    ) -> Result<(), Error> {
        job::extend_solve(&self.spec, inst.flow.as_ref(), sol, report)
    }
    fn sweep_columns(&self) -> Vec<Column> {
        job::sweep_columns()
    }
    fn sweep_row_keys(&self, _thresholds: &[f64]) -> Vec<Option<String>> {
        vec![None]
    }
    fn sweep_point(&self, solver: &SolverSpec, _thresholds: &[f64]) -> Result<PointRows, Error> {
        job::sweep_point(&self.spec, solver)
    }
    fn check_sweep(&self, thresholds_given: bool) -> Result<(), FieldError> {
        if thresholds_given {
            return Err(FieldError::new(
                "sweep.thresholds",
                "not used by kind \"rich\": set system.events.theta_IH (or sweep it as \
                 \"system.events.theta_IH\")",
            ));
        }
        Ok(())
    }
    fn footprints(&self, _threads: usize) -> Vec<Footprint> {
        let Some(t) = &self.train else {
            return Vec::new();
        };
        let l = self.spec.l as f64;
        // the batch and the evaluation set (sequences of L tokens with their one-hot rows);
        // the full model adds activations of width d per position
        let width = t.full.as_ref().map_or(l, |f| (f.d + l as usize) as f64);
        let memory = (t.batch as f64 + t.eval_samples as f64) * l * width * 8.0 * 6.0;
        let rows = (t.checkpoints + 2) as f64 * t.models.len() as f64;
        vec![Footprint {
            what: "[train]".into(),
            fields: "train.batch, train.eval_samples, train.full.d, system.l",
            memory,
            output: rows * 24.0 * 24.0 + rows * 300.0,
        }]
    }
    fn attach(&mut self, section: &str, table: toml::Table) -> Result<(), FieldError> {
        debug_assert_eq!(section, "train");
        let raw: RawRichTrain = deserialize_table(table, "train")?;
        self.train = Some(raw.validate(&self.spec)?);
        Ok(())
    }
    fn sections_json(&self) -> Vec<(&'static str, serde_json::Value)> {
        self.train
            .iter()
            .map(|t| ("train", serde_json::to_value(t).expect("specs serialize")))
            .collect()
    }
    fn check(&self, parts: &ScenarioParts) -> Result<(), FieldError> {
        check_against_solver(&self.spec, parts.solver)
    }
    fn resume_ignores(&self) -> &'static [&'static str] {
        &["train"]
    }
    fn runs_on_base(&self) -> bool {
        self.train.is_some()
    }
    fn has_own_job(&self) -> bool {
        self.train.is_some()
    }
    fn describe_own(&self, _has_sweep: bool) -> Vec<String> {
        self.train
            .iter()
            .map(|t| {
                let models: Vec<String> = t
                    .models
                    .iter()
                    .map(|m| format!("{m:?}").to_lowercase())
                    .collect();
                format!("train ({})", models.join(" + "))
            })
            .collect()
    }
    fn run_own(&self, when: When, ctx: &JobContext) -> Option<Result<JobOutput, Error>> {
        match (when, &self.train) {
            (When::AfterSolve, Some(t)) => Some(train::run(&self.spec, t, ctx)),
            _ => None,
        }
    }
}
