//! `[system] kind = "rich"`: the six-parameter model of Wang et al. (docs/theory/wang.md §3–§8), and
//! its `[train]` section (SGD on the six parameters and the full transformer, §8–§9).

use crate::numerics::normal::Gaussian;
use crate::scenario::validate::{
    DIVERGENCE_BOUND, FieldError, check, check_fraction, check_positive,
};
use crate::systems::wang::reduced::{KeyQuery, Layer1, RichFlow, RichModel};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest context length accepted.
pub const MAX_L: i64 = 1_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRich {
    #[serde(rename = "L")]
    l: Option<i64>,
    #[serde(rename = "c_G")]
    c_g: Option<f64>,
    #[serde(rename = "c_I")]
    c_i: Option<f64>,
    w_star: Option<f64>,
    sigma: Option<f64>,
    scale: Option<BTreeMap<String, f64>>,
    random_init: Option<bool>,
    seed: Option<u64>,
    kq_factorized: Option<bool>,
    #[serde(rename = "exact_finite_M")]
    exact_finite_m: Option<bool>,
    #[serde(default)]
    layer1: Layer1Mode,
    p1: Option<f64>,
    #[serde(default)]
    paradigm: Paradigm,
    stage1_time: Option<f64>,
    #[serde(default)]
    estimator: Estimator,
    mc_samples: Option<i64>,
    mc_seed: Option<u64>,
    loss_scale: Option<f64>,
    events: Option<RawEvents>,
}

/// How layer 1 is treated (§3 "Training").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Layer1Mode {
    /// p₁ → ∞, an exact previous-token copy (the default of §3).
    #[default]
    ExactCopy,
    /// A fixed finite slope `p1`.
    Fixed,
    /// `p1` is trained (its initial value given by `p1`).
    Trained,
}

/// Which layers move when (§3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Paradigm {
    /// Layer 1 first (only with `layer1 = "trained"`: p₁ alone for `stage1_time`), then layer 2.
    #[default]
    Layerwise,
    /// Every coordinate from t = 0 (needs `layer1 = "trained"`).
    Joint,
}

/// Which evaluation of the expected loss the flow integrates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Estimator {
    /// The closed form of §4 (large L).
    #[default]
    ClosedForm,
    /// The exact finite-L loss on `mc_samples` fixed sequences (common random numbers).
    MonteCarlo,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvents {
    g_fraction: Option<f64>,
    #[serde(rename = "theta_IH")]
    theta_ih: Option<f64>,
    theta_lo: Option<f64>,
    theta_hi: Option<f64>,
    ih_loss_fraction: Option<f64>,
    converge: Option<f64>,
}

/// Phase-detection settings (§8), all fractions in (0, 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RichEvents {
    /// T_G: ℓ_G ≤ g_fraction · ℓ_G(0).
    pub g_fraction: f64,
    /// T_IH: w ≥ theta_IH · w*.
    #[serde(rename = "theta_IH")]
    pub theta_ih: f64,
    /// Plateau end (phase III starts): w ≥ theta_lo · w*.
    pub theta_lo: f64,
    /// Transition end (phase IV starts): w ≥ theta_hi · w*.
    pub theta_hi: f64,
    /// T_IH_loss: ℓ_I ≤ ih_loss_fraction · ℓ_I^plat.
    pub ih_loss_fraction: f64,
    /// T_converged: ℓ_I ≤ converge · ℓ_I^plat.
    pub converge: f64,
}

/// Validated `kind = "rich"` settings.
#[derive(Debug, Clone, Serialize)]
pub struct RichSpec {
    #[serde(rename = "L")]
    pub l: usize,
    #[serde(rename = "c_G")]
    pub c_g: f64,
    #[serde(rename = "c_I")]
    pub c_i: f64,
    pub w_star: f64,
    pub sigma: f64,
    /// Per-coordinate multipliers of sigma (1 unless given).
    pub scale: BTreeMap<String, f64>,
    pub random_init: bool,
    pub seed: u64,
    pub kq_factorized: bool,
    #[serde(rename = "exact_finite_M")]
    pub exact_finite_m: bool,
    pub layer1: Layer1Mode,
    pub p1: Option<f64>,
    pub paradigm: Paradigm,
    pub stage1_time: Option<f64>,
    pub estimator: Estimator,
    pub mc_samples: usize,
    pub mc_seed: u64,
    pub loss_scale: f64,
    pub events: RichEvents,
    /// The initial point θ(0), in the flow's coordinate order.
    pub init: Vec<f64>,
}

impl RichSpec {
    /// The theory-level model.
    pub fn model(&self) -> RichModel {
        RichModel {
            l: self.l,
            c_g: self.c_g,
            c_i: self.c_i,
            w_star: self.w_star,
            kq: if self.kq_factorized {
                KeyQuery::Factorized
            } else {
                KeyQuery::Single
            },
            layer1: match self.layer1 {
                Layer1Mode::ExactCopy => Layer1::ExactCopy,
                Layer1Mode::Fixed => Layer1::Fixed {
                    p1: self.p1.expect("validated"),
                },
                Layer1Mode::Trained => Layer1::Trained,
            },
            exact_finite_m: self.exact_finite_m,
            loss_scale: self.loss_scale,
        }
    }

    /// The natural time scale L/loss_scale that `solver.horizon` multiplies (default 40, §8).
    pub fn time_scale(&self) -> f64 {
        self.l as f64 / self.loss_scale
    }
}

/// Default of `solver.horizon` for this kind: about 40·L (§8).
pub const DEFAULT_HORIZON: f64 = 40.0;

impl RawRich {
    pub fn validate(self) -> Result<RichSpec, FieldError> {
        let Some(l) = self.l else {
            return Err(FieldError::new(
                "system.L",
                "required (context length, >= 4)",
            ));
        };
        check("system.L", l >= 4, || {
            format!(
                "must be >= 4 (the 4-gram reads x_(L-2), and both layer-2 heads need \
                 N = M = L - 2 >= 2 keys), got {l}"
            )
        })?;
        check("system.L", l <= MAX_L, || {
            format!("must be <= {MAX_L}, got {l}")
        })?;
        let c_g = self.c_g.unwrap_or(0.5);
        let c_i = self.c_i.unwrap_or(0.5);
        for (field, v) in [("system.c_G", c_g), ("system.c_I", c_i)] {
            check(field, v >= 0.0 && v.is_finite(), || {
                format!("must be >= 0 and finite, got {v}")
            })?;
        }
        check("system.c_I", c_g + c_i > 0.0, || {
            format!(
                "c_G + c_I must be > 0 (the target would be zero), got c_G = {c_g}, c_I = {c_i}"
            )
        })?;
        let w_star = self.w_star.unwrap_or(0.5);
        let w_max = std::f64::consts::FRAC_1_SQRT_2;
        check("system.w_star", w_star > 0.0 && w_star < w_max, || {
            format!(
                "must be in (0, 1/sqrt(2) = {w_max:.6}) (the closed forms need 2 w*^2 < 1), \
                 got {w_star}"
            )
        })?;
        let sigma = self.sigma.unwrap_or(1e-2);
        check(
            "system.sigma",
            sigma > 0.0 && sigma <= DIVERGENCE_BOUND,
            || {
                format!(
                    "must be > 0 and finite, at most 1e100 (the init scale; 1e100 is the divergence bound), got {sigma}"
                )
            },
        )?;
        let loss_scale = self.loss_scale.unwrap_or(1.0);
        check_positive("system.loss_scale", loss_scale)?;
        let kq_factorized = self.kq_factorized.unwrap_or(true);
        let layer1 = self.layer1;
        match layer1 {
            Layer1Mode::ExactCopy => check("system.p1", self.p1.is_none(), || {
                "only with layer1 = \"fixed\" or \"trained\" (the exact copy has p1 = infinity)"
                    .into()
            })?,
            _ => {
                let Some(p1) = self.p1 else {
                    return Err(FieldError::new(
                        "system.p1",
                        "required with layer1 = \"fixed\" or \"trained\" (a slope > 0)",
                    ));
                };
                check("system.p1", p1 > 0.0 && p1 <= DIVERGENCE_BOUND, || {
                    format!(
                        "must be > 0 and finite, at most 1e100 (the divergence bound), got {p1}"
                    )
                })?;
            }
        }
        check(
            "system.paradigm",
            self.paradigm == Paradigm::Layerwise || layer1 == Layer1Mode::Trained,
            || {
                "\"joint\" needs layer1 = \"trained\" (otherwise layer 1 has nothing to train)"
                    .into()
            },
        )?;
        let needs_stage1 = layer1 == Layer1Mode::Trained && self.paradigm == Paradigm::Layerwise;
        match (needs_stage1, self.stage1_time) {
            (true, None) => {
                return Err(FieldError::new(
                    "system.stage1_time",
                    "required with layer1 = \"trained\" and paradigm = \"layerwise\" (the time \
                     p1 trains alone, > 0)",
                ));
            }
            (true, Some(t)) => check_positive("system.stage1_time", t)?,
            (false, Some(_)) => {
                return Err(FieldError::new(
                    "system.stage1_time",
                    "only with layer1 = \"trained\" and paradigm = \"layerwise\"",
                ));
            }
            (false, None) => {}
        }
        let mc_samples = self.mc_samples.unwrap_or(1000);
        check(
            "system.mc_samples",
            (1..=10_000_000).contains(&mc_samples),
            || format!("must be in 1..=10000000, got {mc_samples}"),
        )?;
        check(
            "system.mc_samples",
            self.estimator == Estimator::MonteCarlo || self.mc_samples.is_none(),
            || "only with estimator = \"monte_carlo\"".into(),
        )?;
        check(
            "system.mc_seed",
            self.estimator == Estimator::MonteCarlo || self.mc_seed.is_none(),
            || "only with estimator = \"monte_carlo\"".into(),
        )?;
        check(
            "system.mc_samples",
            (mc_samples as u128) * (l as u128) <= 200_000_000,
            || {
                format!(
                    "mc_samples x L must be <= 2e8 (memory for the fixed sample), got {}",
                    mc_samples * l
                )
            },
        )?;
        let events = validate_events(self.events)?;
        let random_init = self.random_init.unwrap_or(false);
        check("system.seed", random_init || self.seed.is_none(), || {
            "only with random_init = true".into()
        })?;
        let mut spec = RichSpec {
            l: l as usize,
            c_g,
            c_i,
            w_star,
            sigma,
            scale: BTreeMap::new(),
            random_init,
            seed: self.seed.unwrap_or(0),
            kq_factorized,
            exact_finite_m: self.exact_finite_m.unwrap_or(true),
            layer1,
            p1: self.p1,
            paradigm: self.paradigm,
            stage1_time: self.stage1_time,
            estimator: self.estimator,
            mc_samples: mc_samples as usize,
            mc_seed: self.mc_seed.unwrap_or(1),
            loss_scale,
            events,
            init: Vec::new(),
        };
        let model = spec.model();
        let names = model.names();
        let mut scale = BTreeMap::new();
        for (key, value) in self.scale.unwrap_or_default() {
            let field = format!("system.scale.{key}");
            let known: Vec<&str> = names
                .iter()
                .map(String::as_str)
                .filter(|n| *n != "p1")
                .collect();
            check(&field, known.contains(&key.as_str()), || {
                format!("unknown coordinate, expected one of {}", known.join(", "))
            })?;
            check(&field, value.is_finite(), || {
                format!("must be finite, got {value}")
            })?;
            scale.insert(key, value);
        }
        spec.scale = scale;
        spec.init = initial_point(&spec, &model, &names);
        if spec.estimator == Estimator::ClosedForm {
            let flow = RichFlow::new(model);
            if let Some(reason) = crate::flow::GradientFlow::domain_error(&flow, &spec.init) {
                return Err(FieldError::new(
                    "system.sigma",
                    format!(
                        "the initial point is outside the closed form's domain: {reason}; or \
                         lower sigma (or its scale)"
                    ),
                ));
            }
        }
        Ok(spec)
    }
}

/// θ(0): σ·scale_i (deterministic) or σ·scale_i·z_i with z_i i.i.d. N(0, 1) from `seed` drawn
/// in coordinate order; p₁ (when trained) starts at `p1`.
fn initial_point(spec: &RichSpec, model: &RichModel, names: &[String]) -> Vec<f64> {
    let mut g = Gaussian::new(spec.seed);
    let lay = model.layout();
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if Some(i) == lay.p1 {
                return spec.p1.expect("trained p1 is given");
            }
            let s = spec.sigma * spec.scale.get(n).copied().unwrap_or(1.0);
            if spec.random_init { s * g.sample() } else { s }
        })
        .collect()
}

fn validate_events(raw: Option<RawEvents>) -> Result<RichEvents, FieldError> {
    let raw = raw.unwrap_or(RawEvents {
        g_fraction: None,
        theta_ih: None,
        theta_lo: None,
        theta_hi: None,
        ih_loss_fraction: None,
        converge: None,
    });
    let e = RichEvents {
        g_fraction: raw.g_fraction.unwrap_or(0.5),
        theta_ih: raw.theta_ih.unwrap_or(0.5),
        theta_lo: raw.theta_lo.unwrap_or(0.1),
        theta_hi: raw.theta_hi.unwrap_or(0.9),
        ih_loss_fraction: raw.ih_loss_fraction.unwrap_or(0.5),
        converge: raw.converge.unwrap_or(0.01),
    };
    check_fraction("system.events.g_fraction", e.g_fraction)?;
    check_fraction("system.events.theta_IH", e.theta_ih)?;
    check_fraction("system.events.theta_lo", e.theta_lo)?;
    check_fraction("system.events.theta_hi", e.theta_hi)?;
    check_fraction("system.events.ih_loss_fraction", e.ih_loss_fraction)?;
    check_fraction("system.events.converge", e.converge)?;
    check("system.events.theta_hi", e.theta_hi > e.theta_lo, || {
        format!(
            "must be > theta_lo ({}) (phase III runs from theta_lo w* to theta_hi w*), got {}",
            e.theta_lo, e.theta_hi
        )
    })?;
    Ok(e)
}

// ---------------------------------------------------------------------------------------------
// [train]

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRichTrain {
    models: Option<Vec<TrainModel>>,
    eta: Option<f64>,
    batch: Option<i64>,
    t_max: Option<f64>,
    checkpoints: Option<i64>,
    seed: Option<u64>,
    eval_samples: Option<i64>,
    eval_seed: Option<u64>,
    full: Option<RawFull>,
}

/// What is trained alongside the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainModel {
    /// Online SGD on the six parameters (§8).
    Sgd,
    /// The full two-layer transformer (§9).
    Full,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFull {
    d: Option<i64>,
    d_head: Option<i64>,
    heads1: Option<i64>,
    heads2: Option<i64>,
    #[serde(default)]
    optimizer: FullOptimizer,
    eta: Option<f64>,
    #[serde(default)]
    init: FullInit,
    copy_slope: Option<f64>,
    noise: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FullOptimizer {
    #[default]
    Gd,
    Adam,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FullInit {
    /// The reduced initial point embedded exactly (§9 mapping), plus `noise`·N(0,1) on every
    /// parameter.
    #[default]
    Embedded,
    /// Every weight sigma·N(0, 1); layer-1 slopes at `copy_slope` (or p1), layer-2 slopes at
    /// sigma·N(0, 1).
    Random,
}

/// Validated full-model settings.
#[derive(Debug, Clone, Serialize)]
pub struct FullSpec {
    pub d: usize,
    pub d_head: usize,
    pub heads1: usize,
    pub heads2: usize,
    pub optimizer: FullOptimizer,
    /// Learning rate (default: train.eta).
    pub eta: f64,
    pub init: FullInit,
    /// Layer-1 slope that stands for the exact copy (layer1 = "exact_copy").
    pub copy_slope: f64,
    pub noise: f64,
}

/// Validated `[train]` for kind "rich".
#[derive(Debug, Clone, Serialize)]
pub struct RichTrainSpec {
    pub models: Vec<TrainModel>,
    pub eta: f64,
    pub batch: usize,
    /// Absolute training horizon (default: the solver's horizon).
    pub t_max: Option<f64>,
    pub checkpoints: usize,
    pub seed: u64,
    pub eval_samples: usize,
    pub eval_seed: u64,
    pub full: Option<FullSpec>,
}

impl RawRichTrain {
    pub fn validate(self, system: &RichSpec) -> Result<RichTrainSpec, FieldError> {
        let models = self.models.unwrap_or_else(|| vec![TrainModel::Sgd]);
        check("train.models", !models.is_empty(), || {
            "must list at least one of \"sgd\", \"full\"".into()
        })?;
        let eta = self.eta.unwrap_or(0.05);
        check_positive("train.eta", eta)?;
        let batch = self.batch.unwrap_or(64);
        check("train.batch", (1..=1_000_000).contains(&batch), || {
            format!("must be in 1..=1000000, got {batch}")
        })?;
        if let Some(t) = self.t_max {
            check_positive("train.t_max", t)?;
        }
        let checkpoints = self.checkpoints.unwrap_or(300);
        check(
            "train.checkpoints",
            (2..=1_000_000).contains(&checkpoints),
            || format!("must be in 2..=1000000, got {checkpoints}"),
        )?;
        let eval_samples = self.eval_samples.unwrap_or(512);
        check(
            "train.eval_samples",
            (1..=10_000_000).contains(&eval_samples),
            || format!("must be in 1..=10000000, got {eval_samples}"),
        )?;
        let wants_full = models.contains(&TrainModel::Full);
        check("train.full", wants_full || self.full.is_none(), || {
            "only with \"full\" in train.models".into()
        })?;
        let full = if wants_full {
            let raw = self.full.unwrap_or(RawFull {
                d: None,
                d_head: None,
                heads1: None,
                heads2: None,
                optimizer: FullOptimizer::Gd,
                eta: None,
                init: FullInit::Embedded,
                copy_slope: None,
                noise: None,
            });
            let d = raw.d.unwrap_or(3);
            let d_head = raw.d_head.unwrap_or(1);
            let heads1 = raw.heads1.unwrap_or(1);
            let heads2 = raw.heads2.unwrap_or(2);
            check("train.full.d", (2..=256).contains(&d), || {
                format!("must be in 2..=256, got {d}")
            })?;
            check("train.full.d_head", (1..=64).contains(&d_head), || {
                format!("must be in 1..=64, got {d_head}")
            })?;
            check("train.full.heads1", (1..=16).contains(&heads1), || {
                format!("must be in 1..=16, got {heads1}")
            })?;
            check("train.full.heads2", (1..=16).contains(&heads2), || {
                format!("must be in 1..=16, got {heads2}")
            })?;
            if raw.init == FullInit::Embedded {
                check("train.full.d", d >= 3, || {
                    format!(
                        "init = \"embedded\" needs d >= 3 (input, copy and output directions), \
                         got {d}"
                    )
                })?;
                check("train.full.heads2", heads2 >= 2, || {
                    format!(
                        "init = \"embedded\" needs heads2 >= 2 (4-gram and IH heads), got {heads2}"
                    )
                })?;
            }
            let full_eta = raw.eta.unwrap_or(eta);
            check_positive("train.full.eta", full_eta)?;
            let copy_slope = raw.copy_slope.unwrap_or(8.0);
            check_positive("train.full.copy_slope", copy_slope)?;
            check(
                "train.full.copy_slope",
                system.layer1 == Layer1Mode::ExactCopy || raw.copy_slope.is_none(),
                || {
                    "only with system.layer1 = \"exact_copy\" (otherwise layer 1 starts at system.p1)".into()
                },
            )?;
            let noise = raw.noise.unwrap_or(0.0);
            check(
                "train.full.noise",
                noise >= 0.0 && noise.is_finite(),
                || format!("must be >= 0, got {noise}"),
            )?;
            check(
                "train.full.d",
                (system.l as u128) * (system.l as u128) * (heads1 as u128) <= 50_000_000,
                || "L^2 x heads1 must be <= 5e7 (layer-1 attention memory)".into(),
            )?;
            Some(FullSpec {
                d: d as usize,
                d_head: d_head as usize,
                heads1: heads1 as usize,
                heads2: heads2 as usize,
                optimizer: raw.optimizer,
                eta: full_eta,
                init: raw.init,
                copy_slope,
                noise,
            })
        } else {
            None
        };
        Ok(RichTrainSpec {
            models,
            eta,
            batch: batch as usize,
            t_max: self.t_max,
            checkpoints: checkpoints as usize,
            seed: self.seed.unwrap_or(0),
            eval_samples: eval_samples as usize,
            eval_seed: self.eval_seed.unwrap_or(1),
            full,
        })
    }
}

/// Cross-checks with `[solver]`: layer 1's stage must end before the horizon.
pub fn check_against_solver(
    spec: &RichSpec,
    solver: &crate::scenario::SolverSpec,
) -> Result<(), FieldError> {
    if let Some(t1) = spec.stage1_time {
        let t_max = solver.t_max.unwrap_or(solver.horizon * spec.time_scale());
        check("system.stage1_time", t1 < t_max, || {
            format!("must be < the horizon ({t_max}), got {t1}")
        })?;
    }
    Ok(())
}
