//! From a validated system spec to a runnable reduced system, with what the jobs need to know
//! about it: initial point, frozen coordinates, natural time scale, which coordinates emerge
//! (and in which order they are reported), and whose rate peak marks the blow-up.

use crate::flow::GradientFlow;
use crate::scenario::SystemSpec;
use crate::theory::musat3::{ALPHA3, BETA2, GAMMA3, Musat3};

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
pub fn instantiate(spec: &SystemSpec) -> Instance {
    match spec {
        SystemSpec::Musat3(m) => {
            let n = m.n;
            let query = match m.query {
                crate::theory::musat3::Query::Last => "last",
                crate::theory::musat3::Query::Uniform => "uniform",
            };
            let scale = if m.loss_scale == 1.0 {
                String::new()
            } else {
                format!(", loss scale {}", m.loss_scale)
            };
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
        SystemSpec::Gih(g) => {
            // The joint flow of (c, w, a) on the scenario's training sample (theory/chen.md).
            let (train, _) = super::gih::data(g);
            let flow = crate::theory::gih::GihFlow::new(super::gih::model(g), &train);
            let lay = *flow.layout();
            let init = super::gih::init(g).theta(&g.shape(), &lay);
            // stage I's time scale 1/(κ a₀) = ‖c₀‖²/(4 |a₀|)
            let c2 = lay.n_subsets as f64 * g.c0 * g.c0;
            let time_scale = if g.a0 != 0.0 {
                c2 / (4.0 * g.a0.abs())
            } else {
                1.0
            };
            Instance {
                flow: Box::new(flow),
                init,
                frozen: Vec::new(),
                time_scale,
                emergence: vec![(lay.a(), "a".into())],
                peak: None,
                label: super::gih::label(g),
                family: format!(
                    "gih TF(M={}, H={}, d={}, D={}), pa = {:?}, α = {}",
                    g.window, g.heads, g.d, g.degree, g.pa, g.alpha
                ),
                params: vec![Param {
                    column: "L".into(),
                    field: "system.L".into(),
                    value: g.length as f64,
                }],
            }
        }
    }
}
