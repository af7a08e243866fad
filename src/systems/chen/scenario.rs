//! `[system] kind = "gih"` (Chen et al., docs/theory/chen.md) and its job section `[gih]`: the data,
//! the model TF(M, H, d, D), the loss and the initial point; the training schedule (stages), the
//! events, the χ² MI estimate and the optional full model.

use crate::scenario::validate::{
    FieldError, check, check_fraction, check_list_len, check_positive, dedup_keep_order,
};
use crate::systems::chen::common::{HeadNorm, LossKind, MAX_D, RpeWindow, Subsets, TfShape};
use crate::systems::chen::markov::Start;
use crate::systems::chen::mi::MiMethod;
use crate::systems::chen::reduced::Block;
use serde::{Deserialize, Serialize};

/// The loss by name (`paper` takes `system.epsilon`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LossName {
    #[default]
    Paper,
    Code,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGih {
    d: Option<i64>,
    pa: Option<Vec<i64>>,
    #[serde(rename = "L")]
    length: Option<i64>,
    alpha: Option<f64>,
    #[serde(default)]
    start: Start,
    n_sequences: Option<i64>,
    train_fraction: Option<f64>,
    seed: Option<u64>,
    #[serde(rename = "M")]
    window: Option<i64>,
    #[serde(rename = "H")]
    heads: Option<i64>,
    #[serde(rename = "D")]
    degree: Option<i64>,
    #[serde(default)]
    rpe_window: RpeWindow,
    #[serde(default)]
    head_norm: HeadNorm,
    #[serde(default)]
    loss: LossName,
    epsilon: Option<f64>,
    c0: Option<f64>,
    a0: Option<f64>,
    w_plus: Option<f64>,
    w_minus: Option<f64>,
}

/// Validated `kind = "gih"` settings (defaults: the paper's Fig. 3 setting, §12).
#[derive(Debug, Clone, Serialize)]
pub struct GihSpec {
    pub d: usize,
    /// Parent offsets as written (negative).
    pub pa: Vec<i64>,
    #[serde(rename = "L")]
    pub length: usize,
    pub alpha: f64,
    pub start: Start,
    pub n_sequences: usize,
    pub train_fraction: f64,
    pub seed: u64,
    #[serde(rename = "M")]
    pub window: usize,
    #[serde(rename = "H")]
    pub heads: usize,
    #[serde(rename = "D")]
    pub degree: usize,
    pub rpe_window: RpeWindow,
    pub head_norm: HeadNorm,
    pub loss: LossKind,
    pub c0: f64,
    pub a0: f64,
    pub w_plus: f64,
    pub w_minus: f64,
}

impl GihSpec {
    /// Parent offsets as positive integers.
    pub fn parents(&self) -> Vec<usize> {
        self.pa.iter().map(|&p| (-p) as usize).collect()
    }
    pub fn shape(&self) -> TfShape {
        TfShape {
            d: self.d,
            heads: self.heads,
            window: self.window,
            degree: self.degree,
            rpe_window: self.rpe_window,
        }
    }
    /// Sequences used for training (the rest validate).
    pub fn n_train(&self) -> usize {
        ((self.train_fraction * self.n_sequences as f64).round() as usize)
            .clamp(1, self.n_sequences - 1)
    }
}

fn int_in(field: &str, v: i64, lo: i64, hi: i64) -> Result<usize, FieldError> {
    check(field, (lo..=hi).contains(&v), || {
        format!("must be in {lo}..={hi}, got {v}")
    })?;
    Ok(v as usize)
}

fn finite(field: &str, v: f64) -> Result<f64, FieldError> {
    check(field, v.is_finite(), || format!("must be finite, got {v}"))?;
    Ok(v)
}

impl RawGih {
    pub fn validate(self) -> Result<GihSpec, FieldError> {
        let d = int_in("system.d", self.d.unwrap_or(3), 2, MAX_D as i64)?;
        let window = int_in("system.M", self.window.unwrap_or(3), 1, 16)?;
        let heads = int_in("system.H", self.heads.unwrap_or(3), 1, 16)?;
        let degree = self.degree.unwrap_or(2);
        check("system.D", degree >= 1, || {
            format!("must be >= 1, got {degree}")
        })?;
        check("system.D", degree as usize <= heads, || {
            format!("must be <= H = {heads} (subsets of the heads), got {degree}")
        })?;
        let degree = degree as usize;
        check(
            "system.H",
            self.rpe_window == RpeWindow::Staggered || heads <= window,
            || {
                format!(
                    "with rpe_window = \"common\" every head's own offset h must lie in the RPE \
                     window 1..M, so H must be <= M = {window}, got {heads} (or use \
                     rpe_window = \"staggered\")"
                )
            },
        )?;
        let n_subsets = Subsets::new(heads, degree).len();
        check("system.D", n_subsets <= 4096, || {
            format!(
                "the family |S| <= D has {n_subsets} subsets of the {heads} heads; at most 4096"
            )
        })?;
        let shape = TfShape {
            d,
            heads,
            window,
            degree,
            rpe_window: self.rpe_window,
        };
        let reach = shape.max_offset();
        let pa = self.pa.unwrap_or_else(|| vec![-1, -2]);
        check("system.pa", !pa.is_empty(), || {
            "must list at least one parent offset, e.g. [-1, -2]".into()
        })?;
        for &p in &pa {
            check("system.pa", p <= -1 && p >= -(reach as i64), || {
                format!(
                    "offset {p} is outside the RPE window -1..-{reach} (M = {window}, rpe_window \
                     = {}); parents are negative offsets the heads can see",
                    match self.rpe_window {
                        RpeWindow::Common => "common",
                        RpeWindow::Staggered => "staggered",
                    }
                )
            })?;
        }
        let mut sorted = pa.clone();
        sorted.sort_unstable();
        sorted.dedup();
        check("system.pa", sorted.len() == pa.len(), || {
            format!("offsets must be distinct, got {pa:?}")
        })?;
        check(
            "system.pa",
            d.checked_pow(pa.len() as u32).is_some_and(|c| c <= 1 << 20),
            || {
                format!(
                    "d^|pa| = {d}^{} kernel rows is too many (at most 2^20)",
                    pa.len()
                )
            },
        )?;
        let length = self.length.unwrap_or(100);
        let length = int_in("system.L", length, reach as i64 + 1, 100_000).map_err(|_| {
            FieldError::new(
                "system.L",
                format!(
                    "must be in {}..=100000 (longer than the largest offset {reach}), got {length}",
                    reach + 1
                ),
            )
        })?;
        let alpha = self.alpha.unwrap_or(0.1);
        check_positive("system.alpha", alpha)?;
        let n_sequences = int_in(
            "system.n_sequences",
            self.n_sequences.unwrap_or(10_000),
            2,
            10_000_000,
        )?;
        check(
            "system.n_sequences",
            (n_sequences as u128) * (length as u128 + 1) <= 2_000_000_000,
            || {
                format!(
                    "n_sequences x (L + 1) tokens must be <= 2e9, got {n_sequences} x {}",
                    length + 1
                )
            },
        )?;
        let train_fraction = self.train_fraction.unwrap_or(0.9);
        check_fraction("system.train_fraction", train_fraction)?;
        let loss = match self.loss {
            LossName::Paper => {
                let eps = self.epsilon.unwrap_or((length as f64).powf(-0.5));
                check_positive("system.epsilon", eps)?;
                LossKind::Paper { epsilon: eps }
            }
            LossName::Code => {
                check("system.epsilon", self.epsilon.is_none(), || {
                    "only the paper loss has an epsilon (loss = \"code\" has none)".into()
                })?;
                LossKind::Code
            }
        };
        let c0 = finite("system.c0", self.c0.unwrap_or(0.01))?;
        check("system.c0", c0 != 0.0, || {
            "must be nonzero (p_S = c_S^2/||c||^2 needs ||c|| > 0)".into()
        })?;
        let a0 = finite("system.a0", self.a0.unwrap_or(0.01))?;
        let w_plus = finite("system.w_plus", self.w_plus.unwrap_or(3.0))?;
        let w_minus = finite("system.w_minus", self.w_minus.unwrap_or(0.1))?;
        let spec = GihSpec {
            d,
            pa,
            length,
            alpha,
            start: self.start,
            n_sequences,
            train_fraction,
            seed: self.seed.unwrap_or(2024),
            window,
            heads,
            degree,
            rpe_window: self.rpe_window,
            head_norm: self.head_norm,
            loss,
            c0,
            a0,
            w_plus,
            w_minus,
        };
        check_feature_memory(&spec, false, "system.d")?;
        Ok(spec)
    }
}

/// The gradient keeps, per chunk of sequences, a table of ∂ℓ/∂v̄ for every distinct local
/// history (at most min(n L, (d+1)^{R(+1)}) of them, R the largest offset): refuse settings
/// whose tables would exceed 2^27 numbers (1 GiB).
fn check_feature_memory(s: &GihSpec, full: bool, field: &str) -> Result<(), FieldError> {
    check_feature_memory_n(s, s.n_sequences, full, field)
}

/// [`check_feature_memory`] for a sample of `n` sequences.
fn check_feature_memory_n(
    s: &GihSpec,
    n: usize,
    full: bool,
    field: &str,
) -> Result<(), FieldError> {
    let r = s.shape().max_offset() as u32 + u32::from(full);
    let histories = ((s.d + 1) as f64).powi(r as i32).min((n * s.length) as f64);
    let numbers = histories * (s.heads * s.d * crate::systems::chen::common::CHUNKS) as f64;
    check(field, numbers <= (1u64 << 27) as f64, || {
        format!(
            "d = {}, H = {}, largest offset {} give up to {histories:e} distinct local histories, \
             too many for the gradient's tables; use a smaller d, M or H",
            s.d,
            s.heads,
            s.shape().max_offset()
        )
    })
}

// ---------------------------------------------------------------------------------------------
// [gih]

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGihJob {
    stages: Option<Vec<RawStage>>,
    samples: Option<usize>,
    a_levels: Option<Vec<f64>>,
    delta1: Option<f64>,
    delta2: Option<f64>,
    log_c: Option<bool>,
    #[serde(default)]
    mi: RawMi,
    full: Option<RawFull>,
    gd: Option<RawGd>,
    transfer: Option<RawTransfer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransfer {
    #[serde(rename = "L")]
    lengths: Option<Vec<i64>>,
    alpha: Option<Vec<f64>>,
    n_sequences: Option<i64>,
    seed: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    name: Option<String>,
    train: Vec<Block>,
    lr: f64,
    steps: i64,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMi {
    draws: Option<i64>,
    pairs: Option<i64>,
    power: Option<u32>,
    #[serde(default)]
    method: MiMethod,
    seed: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFull {
    layer_norm: Option<bool>,
    self_attention: Option<bool>,
    proj_init: Option<f64>,
    ln_eps: Option<f64>,
    samples: Option<usize>,
}

/// Where the reduced model's GD steps get their data (docs/theory/chen.md §13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GdDataName {
    /// The flow's training sample, full batch.
    #[default]
    Fixed,
    /// `batch` new sequences (and kernels) from the chain prior at every step.
    Fresh,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGd {
    #[serde(default)]
    data: GdDataName,
    batch: Option<i64>,
    samples: Option<usize>,
}

/// The data of the reduced model's GD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum GdData {
    Fixed,
    Fresh { batch: usize },
}

/// `[gih.gd]`: discrete GD (or SGD on fresh batches) on the reduced model (c, w, a) through
/// the same stages as the flow.
#[derive(Debug, Clone, Serialize)]
pub struct GihGdSpec {
    pub data: GdData,
    /// Checkpoint rows per stage in `gd_trajectory.csv`.
    pub samples: usize,
}

/// Largest fresh batch.
pub const MAX_GD_BATCH: i64 = 1_000_000;

/// One training stage: the blocks that move, the learning rate and the number of GD steps. On
/// the time axis it lasts lr × steps (docs/theory/chen.md §10).
#[derive(Debug, Clone, Serialize)]
pub struct StageSpec {
    pub name: String,
    pub train: Vec<Block>,
    pub lr: f64,
    pub steps: u64,
}

impl StageSpec {
    pub fn duration(&self) -> f64 {
        self.lr * self.steps as f64
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MiJobSpec {
    pub draws: usize,
    pub pairs: usize,
    pub power: u32,
    pub method: MiMethod,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GihFullSpec {
    pub layer_norm: bool,
    pub self_attention: bool,
    pub proj_init: f64,
    pub ln_eps: f64,
    /// Checkpoint rows per stage in `full_trajectory.csv`.
    pub samples: usize,
}

/// Validated `[gih.transfer]`: the trained parameters evaluated on fresh sequences of other
/// lengths and priors (docs/theory/chen.md §12, Fig. 7).
#[derive(Debug, Clone, Serialize)]
pub struct TransferSpec {
    pub lengths: Vec<usize>,
    pub alphas: Vec<f64>,
    pub n_sequences: usize,
    pub seed: u64,
}

/// Batches whose means give the standard error of a transfer loss.
pub const TRANSFER_BATCHES: usize = 10;

/// Validated `[gih]` job.
#[derive(Debug, Clone, Serialize)]
pub struct GihJobSpec {
    pub stages: Vec<StageSpec>,
    /// Rows per stage in `trajectory.csv`.
    pub samples: usize,
    pub a_levels: Vec<f64>,
    pub delta1: f64,
    pub delta2: f64,
    /// Integrate the c_S in log coordinates (exact; removes the stiffness of decayed c_S).
    pub log_c: bool,
    pub mi: MiJobSpec,
    pub full: Option<GihFullSpec>,
    pub transfer: Option<TransferSpec>,
    pub gd: Option<GihGdSpec>,
}

impl RawGihJob {
    pub fn validate(self, system: &GihSpec) -> Result<GihJobSpec, FieldError> {
        let seed = system.seed;
        let raw_stages = self.stages.unwrap_or_default();
        check("gih.stages", !raw_stages.is_empty(), || {
            "must list at least one stage, e.g. [[gih.stages]] train = [\"c\"], lr = 1, steps = 2000"
                .into()
        })?;
        check("gih.stages", raw_stages.len() <= 64, || {
            format!("at most 64 stages, got {}", raw_stages.len())
        })?;
        let roman = ["I", "II", "III", "IV", "V", "VI", "VII", "VIII"];
        let mut stages = Vec::new();
        for (k, s) in raw_stages.into_iter().enumerate() {
            let field = |f: &str| format!("gih.stages[{k}].{f}");
            let name = s
                .name
                .unwrap_or_else(|| roman.get(k).map_or(format!("{}", k + 1), |r| r.to_string()));
            check(
                &field("name"),
                !name.is_empty() && !name.contains(','),
                || format!("must be non-empty without commas, got {name:?}"),
            )?;
            check(&field("train"), !s.train.is_empty(), || {
                "must list at least one block of \"c\", \"w\", \"a\", \"layer1\"".into()
            })?;
            let mut train = s.train.clone();
            train.sort_unstable();
            train.dedup();
            check(&field("train"), train.len() == s.train.len(), || {
                "blocks must be distinct".into()
            })?;
            check_positive(&field("lr"), s.lr)?;
            check(
                &field("steps"),
                (1..=1_000_000_000).contains(&s.steps),
                || format!("must be in 1..=1000000000, got {}", s.steps),
            )?;
            let st = StageSpec {
                name,
                train,
                lr: s.lr,
                steps: s.steps as u64,
            };
            check(&field("lr"), st.duration().is_finite(), || {
                "lr x steps must be finite".into()
            })?;
            stages.push(st);
        }
        let samples = self.samples.unwrap_or(201);
        check("gih.samples", (2..=100_000).contains(&samples), || {
            format!("must be in 2..=100000, got {samples}")
        })?;
        let a_levels = self.a_levels.unwrap_or_else(|| vec![1.0, 2.0, 4.0]);
        check_list_len("gih.a_levels", a_levels.len())?;
        for &l in &a_levels {
            finite("gih.a_levels", l)?;
        }
        let a_levels = dedup_keep_order(&a_levels);
        let delta1 = self.delta1.unwrap_or(0.01);
        check_fraction("gih.delta1", delta1)?;
        let delta2 = self.delta2.unwrap_or(0.01);
        check_fraction("gih.delta2", delta2)?;
        let draws = int_in(
            "gih.mi.draws",
            self.mi.draws.unwrap_or(10_000),
            2,
            10_000_000,
        )?;
        let pairs = int_in("gih.mi.pairs", self.mi.pairs.unwrap_or(100), 2, 100_000_000)?;
        let power = self.mi.power.unwrap_or(2);
        check("gih.mi.power", power == 1 || power == 2, || {
            format!("must be 2 (modified chi^2 MI) or 1 (standard), got {power}")
        })?;
        check(
            "gih.mi.power",
            power == 2 || self.mi.method != MiMethod::MonteCarlo,
            || "the monte_carlo method supports only power = 2".into(),
        )?;
        let r_max = system.parents().into_iter().max().unwrap_or(1);
        let m = crate::systems::chen::mi::window_tokens(r_max, system.heads);
        let table = (system.d as f64).powi(m as i32);
        let exact = match self.mi.method {
            MiMethod::Exact => true,
            MiMethod::Auto => table <= crate::systems::chen::mi::EXACT_LIMIT as f64,
            MiMethod::MonteCarlo => false,
        };
        check("gih.mi.power", power == 2 || exact, || {
            format!(
                "power = 1 needs the exact method, but d^m = {table:e} histories is too many \
                 for method = \"auto\" (at most {})",
                crate::systems::chen::mi::EXACT_LIMIT
            )
        })?;
        check(
            "gih.mi.method",
            !(self.mi.method == MiMethod::Exact && table > (1u64 << 22) as f64),
            || {
                format!(
                    "the exact method enumerates d^m = {table:e} histories, at most 2^22; use \"monte_carlo\""
                )
            },
        )?;
        let full = match self.full {
            None => None,
            Some(f) => {
                check_feature_memory(system, true, "gih.full")?;
                let proj_init = finite("gih.full.proj_init", f.proj_init.unwrap_or(0.01))?;
                let ln_eps = f.ln_eps.unwrap_or(1e-5);
                check_positive("gih.full.ln_eps", ln_eps)?;
                let fs = f.samples.unwrap_or(samples);
                check("gih.full.samples", (2..=100_000).contains(&fs), || {
                    format!("must be in 2..=100000, got {fs}")
                })?;
                Some(GihFullSpec {
                    layer_norm: f.layer_norm.unwrap_or(true),
                    self_attention: f.self_attention.unwrap_or(true),
                    proj_init,
                    ln_eps,
                    samples: fs,
                })
            }
        };
        let transfer = match self.transfer {
            None => None,
            Some(t) => Some(validate_transfer(t, system, full.is_some())?),
        };
        let gd = match self.gd {
            None => None,
            Some(g) => {
                let data = match (g.data, g.batch) {
                    (GdDataName::Fixed, None) => GdData::Fixed,
                    (GdDataName::Fixed, Some(_)) => {
                        return Err(FieldError::new(
                            "gih.gd.batch",
                            "only data = \"fresh\" takes a batch (data = \"fixed\" uses the whole \
                             training sample)",
                        ));
                    }
                    (GdDataName::Fresh, None) => {
                        return Err(FieldError::new(
                            "gih.gd.batch",
                            format!(
                                "required with data = \"fresh\": the sequences drawn per step, \
                                 in 1..={MAX_GD_BATCH}"
                            ),
                        ));
                    }
                    (GdDataName::Fresh, Some(b)) => {
                        let batch = int_in("gih.gd.batch", b, 1, MAX_GD_BATCH)?;
                        check(
                            "gih.gd.batch",
                            (batch as u128) * (system.length as u128 + 1) <= 2_000_000_000,
                            || {
                                format!(
                                    "batch x (L + 1) tokens must be <= 2e9, got {batch} x {}",
                                    system.length + 1
                                )
                            },
                        )?;
                        check_feature_memory_n(system, batch, false, "gih.gd.batch")?;
                        GdData::Fresh { batch }
                    }
                };
                let gs = g.samples.unwrap_or(samples);
                check("gih.gd.samples", (2..=100_000).contains(&gs), || {
                    format!("must be in 2..=100000, got {gs}")
                })?;
                Some(GihGdSpec { data, samples: gs })
            }
        };
        Ok(GihJobSpec {
            stages,
            samples,
            a_levels,
            delta1,
            delta2,
            log_c: self.log_c.unwrap_or(true),
            mi: MiJobSpec {
                draws,
                pairs,
                power,
                method: self.mi.method,
                seed: self.mi.seed.unwrap_or(seed.wrapping_add(1)),
            },
            full,
            transfer,
            gd,
        })
    }
}

fn validate_transfer(
    t: RawTransfer,
    system: &GihSpec,
    full: bool,
) -> Result<TransferSpec, FieldError> {
    let reach = system.shape().max_offset();
    let raw = t
        .lengths
        .unwrap_or_else(|| vec![10, 20, 50, 100, 200, 400, 700, 1000]);
    check(
        "gih.transfer.L",
        !raw.is_empty() && raw.len() <= 1000,
        || format!("must list 1..=1000 lengths, got {}", raw.len()),
    )?;
    let mut lengths = Vec::new();
    for &l in &raw {
        let l = int_in("gih.transfer.L", l, reach as i64 + 1, 100_000).map_err(|_| {
            FieldError::new(
                "gih.transfer.L",
                format!(
                    "each length must be in {}..=100000 (longer than the largest offset \
                     {reach}), got {l}",
                    reach + 1
                ),
            )
        })?;
        lengths.push(l);
    }
    let alphas = t.alpha.unwrap_or_else(|| vec![system.alpha]);
    check(
        "gih.transfer.alpha",
        !alphas.is_empty() && alphas.len() <= 100,
        || format!("must list 1..=100 values, got {}", alphas.len()),
    )?;
    for &a in &alphas {
        check_positive("gih.transfer.alpha", a)?;
    }
    let n = int_in(
        "gih.transfer.n_sequences",
        t.n_sequences.unwrap_or(1000),
        TRANSFER_BATCHES as i64,
        10_000_000,
    )?;
    // the gradient tables of the longest evaluation must fit like the training ones
    // the gradient tables of the longest evaluation must fit like the training ones (the same
    // number of tokens as n sequences of that length)
    let longest = lengths.iter().copied().max().unwrap_or(system.length);
    let tokens_as_n = (n * longest).div_ceil(system.length);
    check_feature_memory_n(system, tokens_as_n, full, "gih.transfer.n_sequences")?;
    Ok(TransferSpec {
        lengths,
        alphas,
        n_sequences: n,
        seed: t.seed.unwrap_or(system.seed.wrapping_add(3)),
    })
}
