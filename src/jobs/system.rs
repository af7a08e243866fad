//! From a validated system spec to a runnable reduced system, with what the jobs need to know
//! about it: initial point, frozen coordinates, natural time scale, which coordinates emerge
//! (and in which order they are reported), and whose rate peak marks the blow-up.

use crate::flow::GradientFlow;
use crate::scenario::SystemSpec;
use crate::systems::musat::data::{LabelPosition, QueryPosition};
use crate::systems::musat::musat3::{ALPHA3, BETA2, GAMMA3, Musat3};
use crate::systems::musat::musat19::Musat19;
use crate::systems::musat::subspace::{self, MMatrix};

/// A reduced system ready to solve.
pub struct Instance {
    pub flow: Box<dyn GradientFlow>,
    pub init: Vec<f64>,
    pub frozen: Vec<usize>,
    /// The time scale that `solver.horizon` multiplies.
    pub time_scale: f64,
    /// Coordinates with emergence events, in reporting order, with their names.
    pub emergence: Vec<(usize, String)>,
    /// The coordinate whose rate peak is reported, and the event/column name.
    pub peak: Option<(usize, String)>,
    /// A one-line description for figure titles.
    pub label: String,
    /// The same without N (for sweeps over N).
    pub family: String,
    /// The scenario parameters that identify a sweep point, as CSV columns.
    pub params: Vec<Param>,
}

/// A parameter column of sweep outputs: its name, the scenario field it comes from, its value.
#[derive(Debug, Clone)]
pub struct Param {
    pub column: String,
    pub field: String,
    pub value: f64,
}

/// Build the system described by `spec`.
/// The query mode and (when not 1) the loss scale of a Musat system, for labels.
fn musat_labels(
    query: crate::systems::musat::musat3::Query,
    loss_scale: f64,
) -> (&'static str, String) {
    let query = match query {
        crate::systems::musat::musat3::Query::Last => "last",
        crate::systems::musat::musat3::Query::Uniform => "uniform",
    };
    let scale = if loss_scale == 1.0 {
        String::new()
    } else {
        format!(", loss scale {loss_scale}")
    };
    (query, scale)
}

pub fn instantiate(spec: &SystemSpec) -> Instance {
    match spec {
        SystemSpec::Rich(r) => crate::systems::wang::job::instance(r),
        SystemSpec::Gih(g) => crate::systems::chen::job::instance(g),
        SystemSpec::Musat3(m) => {
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
                params: vec![Param {
                    column: "N".into(),
                    field: "system.n".into(),
                    value: n as f64,
                }],
            }
        }
        SystemSpec::Musat19(m) => {
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
                params: vec![Param {
                    column: "N".into(),
                    field: "system.n".into(),
                    value: n as f64,
                }],
            }
        }
    }
}
