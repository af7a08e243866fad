//! Wang et al., the lazy-to-rich transition (docs/theory/wang.md §3–§7, [reconstruction]): the
//! six-parameter two-layer model on the mixed target
//! ```text
//! y = c_G x_{L−2} + c_I Σ_{s=2}^{L−1} softmax_s(w* x_L x_{s−1}) x_s,   x_i i.i.d. N(0, 1)
//! ŷ = w_G Σ_{j=1}^{M} π_j(p) x̃_{L−j}  +  v Σ_{s=2}^{L−1} softmax_s(w x_L x̃_s) x_s
//! ```
//! where x̃_τ is what layer 1 writes at position τ (x_{τ−1} for the exact previous-token copy,
//! a softmax average Σ_k b^k x_{τ−1−k}/Z₁(τ), b = e^{−p₁}, for a finite slope p₁),
//! π_j = e^{−p(j−1)}/Z(p), N = M = L − 2, and w = w_K w_Q (option (b), `kq_factorized`) or a
//! single weight w_KQ (option (a)).
//!
//! Two evaluations of the expected loss ℓ = E[(ŷ − y)²] (× `loss_scale`):
//! - [`RichFlow`], the closed form of §4: ℓ = ℓ_G(w_G, p) + ℓ_I(v, w), the cross terms (O(1/N))
//!   dropped. ℓ_G is exact for finite M (`exact_finite_m`) or its M → ∞ limit; ℓ_I is the
//!   large-N law-of-large-numbers form, valid for w²ρ² < ½ and w w* q₀ < ½ (ρ² = q₀ = 1 for the
//!   exact copy). Outside that region [`GradientFlow::domain_error`] names the violated bound.
//! - [`RichMonteCarlo`], the exact finite-L loss on a fixed seeded sample of sequences (common
//!   random numbers), so the closed form's O(1/L) error can be measured.
//!
//! With a finite layer-1 slope (extension of §3 for `layer1 = fixed | trained`), ℓ_G stays exact
//! (the 4-gram head reads the Gaussian mixture x̃, so ℓ_G = w_G² Σβ² − 2c_G w_G β_{L−2} + c_G² with
//! β the convolution of π with the layer-1 weights), and ℓ_I uses the stationary layer-1 weights:
//! ```text
//! ℓ_I = (1/N)[v²(1 − 2w²ρ²)^{−1/2} − 2c_I v(1 − 2ww*q₀)^{−1/2} + c_I²(1 − 2w*²)^{−1/2}]
//! q₀ = 1 − e^{−p₁} (weight on the previous token),  ρ² = Σ_k q_k² = tanh(p₁/2)
//! ```
//! (Gaussian keys x̃ with Var x̃ = ρ², Cov(x̃, x_{s−1}) = q₀; the derivation is that of §4.)

mod mc;
pub mod sample;

pub use mc::RichMonteCarlo;

use crate::flow::GradientFlow;
use serde::{Deserialize, Serialize};

/// What layer 1 is (docs/theory/wang.md §3 "Training").
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Layer1 {
    /// p₁ → ∞: x̃_τ = x_{τ−1} exactly (the layer-2 analysis of §5 assumes this).
    ExactCopy,
    /// A fixed finite slope p₁ > 0 (not a coordinate of the flow).
    Fixed { p1: f64 },
    /// p₁ is the sixth coordinate of the flow (`p1`).
    Trained,
}

/// Key–query parametrisation of the IH head (§3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KeyQuery {
    /// (b): w = w_K w_Q, two coordinates (the paper's quadratic mechanism).
    #[default]
    Factorized,
    /// (a): one coordinate w_KQ = w.
    Single,
}

/// The model and target settings shared by every evaluation of the six-parameter model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RichModel {
    /// Context length L ≥ 4 (N = M = L − 2).
    pub l: usize,
    pub c_g: f64,
    pub c_i: f64,
    /// Target IH logit scale, 0 < w* < 1/√2.
    pub w_star: f64,
    pub kq: KeyQuery,
    pub layer1: Layer1,
    /// Closed form only: exact finite-M sums (true) or the M → ∞ limits.
    pub exact_finite_m: bool,
    /// 1, or ½ for the halved loss (doubles every time).
    pub loss_scale: f64,
}

/// Indices of the coordinates in θ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub w_g: usize,
    pub p: usize,
    pub v: usize,
    /// (b): w_K and w_Q; (a): the single w_KQ at `k` (and `q == k`).
    pub k: usize,
    pub q: usize,
    /// p₁ when layer 1 is trained.
    pub p1: Option<usize>,
    pub dim: usize,
}

impl RichModel {
    /// N = M = L − 2, the number of keys of both layer-2 heads.
    pub fn n(&self) -> usize {
        self.l - 2
    }

    pub fn layout(&self) -> Layout {
        let (k, q, next) = match self.kq {
            KeyQuery::Factorized => (3, 4, 5),
            KeyQuery::Single => (3, 3, 4),
        };
        let p1 = matches!(self.layer1, Layer1::Trained).then_some(next);
        Layout {
            w_g: 0,
            p: 1,
            v: 2,
            k,
            q,
            p1,
            dim: next + usize::from(p1.is_some()),
        }
    }

    /// Coordinate names in θ order.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<&str> = vec!["w_G", "p", "v"];
        match self.kq {
            KeyQuery::Factorized => names.extend(["w_K", "w_Q"]),
            KeyQuery::Single => names.push("w_KQ"),
        }
        if matches!(self.layer1, Layer1::Trained) {
            names.push("p1");
        }
        names.into_iter().map(String::from).collect()
    }

    /// The IH logit scale w at θ.
    pub fn w(&self, theta: &[f64]) -> f64 {
        let lay = self.layout();
        match self.kq {
            KeyQuery::Factorized => theta[lay.k] * theta[lay.q],
            KeyQuery::Single => theta[lay.k],
        }
    }

    /// The layer-1 slope at θ: None for the exact copy.
    pub fn p1(&self, theta: &[f64]) -> Option<f64> {
        match self.layer1 {
            Layer1::ExactCopy => None,
            Layer1::Fixed { p1 } => Some(p1),
            Layer1::Trained => Some(theta[self.layout().p1.expect("trained p1 has a slot")]),
        }
    }

    /// Spread ∂ℓ/∂w (and ∂ℓ/∂w_G, ∂ℓ/∂p, ∂ℓ/∂v, ∂ℓ/∂p₁) onto θ's coordinates:
    /// (b) ∂ℓ/∂w_K = w_Q ∂ℓ/∂w, ∂ℓ/∂w_Q = w_K ∂ℓ/∂w.
    pub fn chain(&self, theta: &[f64], g: &ReducedGrad, out: &mut [f64]) {
        let lay = self.layout();
        out[lay.w_g] = g.w_g;
        out[lay.p] = g.p;
        out[lay.v] = g.v;
        match self.kq {
            KeyQuery::Factorized => {
                out[lay.k] = theta[lay.q] * g.w;
                out[lay.q] = theta[lay.k] * g.w;
            }
            KeyQuery::Single => out[lay.k] = g.w,
        }
        if let Some(i) = lay.p1 {
            out[i] = g.p1;
        }
    }

    /// The IH loss on the plateau (§7 Phase II, v = c_I and w = 0 in the closed form):
    /// ℓ_I^plat = (c_I²/N)[(1 − 2w*²)^{−1/2} − 1], times `loss_scale`.
    pub fn ih_plateau_loss(&self) -> f64 {
        let n = self.n() as f64;
        self.loss_scale * self.c_i * self.c_i / n
            * ((1.0 - 2.0 * self.w_star * self.w_star).powf(-0.5) - 1.0)
    }
}

/// Derivatives of a loss with respect to the reduced quantities (w = w_K w_Q as one variable).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReducedGrad {
    pub w_g: f64,
    pub p: f64,
    pub v: f64,
    pub w: f64,
    pub p1: f64,
}

/// Statistics of the normalised geometric weights π_k = e^{−pk}/Z over k = 0..n−1:
/// `first` = π_0, `mean` = Σ k π_k, `s2` = Σ π_k², `d_s2` = dS₂/dp = −2 Σ π_k²(k − mean),
/// `ln_z` = ln Z. Note d π_0/dp = π_0·mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geom {
    pub first: f64,
    pub mean: f64,
    pub s2: f64,
    pub d_s2: f64,
    pub ln_z: f64,
}

/// [`Geom`] in O(1) from the geometric sums when p·n > 2 (no cancellation there), else by a
/// direct sum shifted by the largest exponent (also for p ≤ 0).
pub fn geom(p: f64, n: usize) -> Geom {
    debug_assert!(n >= 1);
    let nf = n as f64;
    if p > 0.0 && p * nf > 2.0 {
        let a = (-p).exp();
        let big_a = (-p * nf).exp();
        let one_m_a = -(-p).exp_m1(); // 1 − a
        let one_m_big_a = -(-p * nf).exp_m1(); // 1 − A
        let first = one_m_a / one_m_big_a;
        let mean = a / one_m_a - nf * big_a / one_m_big_a;
        let s2 = one_m_a * (1.0 + big_a) / ((1.0 + a) * one_m_big_a);
        let d_s2 = 2.0 * s2 * (a / (-(-2.0 * p).exp_m1()) - nf * big_a / (1.0 - big_a * big_a));
        return Geom {
            first,
            mean,
            s2,
            d_s2,
            ln_z: one_m_big_a.ln() - one_m_a.ln(),
        };
    }
    // Direct sum with weights e^{−p(k − k0)}, k0 the index of the largest weight.
    let k0 = if p >= 0.0 { 0.0 } else { nf - 1.0 };
    let (mut z, mut zk, mut z2, mut z2k) = (0.0, 0.0, 0.0, 0.0);
    for k in 0..n {
        let kf = k as f64;
        let e = (-p * (kf - k0)).exp();
        z += e;
        zk += kf * e;
        z2 += e * e;
        z2k += kf * e * e;
    }
    let mean = zk / z;
    let s2 = z2 / (z * z);
    Geom {
        first: (p * k0).exp() / z,
        mean,
        s2,
        d_s2: -2.0 * (z2k / (z * z) - mean * s2),
        ln_z: z.ln() - p * k0,
    }
}

/// The 4-gram part and its derivatives.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FourGram {
    pub loss: f64,
    pub d_wg: f64,
    pub d_p: f64,
    pub d_p1: f64,
}

/// The two coefficients of ℓ_G = w_G² B₂ − 2c_G w_G B₁ + c_G² (B₁ = β_{L−2}, the weight on
/// x_{L−2}; B₂ = Σ β²) and their derivatives in p and p₁.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Coefs {
    b1: f64,
    b1_p: f64,
    b1_p1: f64,
    b2: f64,
    b2_p: f64,
    b2_p1: f64,
}

/// Exact finite-M coefficients for a finite layer-1 slope: with c_j = π_j/Z₁(L−j) (the head's
/// weight on key τ = L − j times layer 1's weight on the previous token there), the weight on
/// token L − 1 − n is γ(n) = Σ_{j≤n} c_j b^{n−j}, i.e. γ(n) = b γ(n−1) + c_n, b = e^{−p₁};
/// derivatives by forward mode (dπ_j/dp = π_j(m₁ − (j−1)), d(1/Z₁)/dp₁ = (1/Z₁)·mean).
fn coefs_finite_m(l: usize, p: f64, p1: f64) -> Coefs {
    let m = l - 2;
    let gp = geom(p, m);
    let b = (-p1).exp();
    let (mut g, mut g_p, mut g_p1) = (0.0, 0.0, 0.0);
    let mut c = Coefs::default();
    for n in 1..=m {
        let pi = (-p * (n - 1) as f64 - gp.ln_z).exp();
        let l1 = geom(p1, l - n - 1);
        let cn = pi * l1.first;
        let cn_p = cn * (gp.mean - (n - 1) as f64);
        let cn_p1 = cn * l1.mean;
        g_p1 = b * g_p1 - b * g + cn_p1;
        g_p = b * g_p + cn_p;
        g = b * g + cn;
        c.b2 += g * g;
        c.b2_p += 2.0 * g * g_p;
        c.b2_p1 += 2.0 * g * g_p1;
        if n == 1 {
            (c.b1, c.b1_p, c.b1_p1) = (cn, cn_p, cn_p1);
        }
    }
    c
}

impl RichModel {
    /// The 4-gram part ℓ_G (before `loss_scale`) and its derivatives (§4). `finite_m` selects
    /// the exact sums; otherwise the M → ∞ limits (p > 0, and p₁ > 0 when finite):
    /// exact copy B₁ = 1 − e^{−p}, B₂ = tanh(p/2); finite p₁ with a = e^{−p}, b = e^{−p₁}:
    /// B₁ = (1−a)(1−b), B₂ = (1−a)(1−b)(1+ab)/((1+a)(1+b)(1−ab)).
    pub fn four_gram(&self, w_g: f64, p: f64, p1: Option<f64>, finite_m: bool) -> FourGram {
        let c = match (p1, finite_m) {
            (None, true) => {
                let g = geom(p, self.n());
                Coefs {
                    b1: g.first,
                    b1_p: g.first * g.mean,
                    b2: g.s2,
                    b2_p: g.d_s2,
                    ..Coefs::default()
                }
            }
            (None, false) => {
                let t = (0.5 * p).tanh();
                Coefs {
                    b1: -(-p).exp_m1(),
                    b1_p: (-p).exp(),
                    b2: t,
                    b2_p: 0.5 * (1.0 - t * t),
                    ..Coefs::default()
                }
            }
            (Some(p1), true) => coefs_finite_m(self.l, p, p1),
            (Some(p1), false) => {
                let (a, b) = ((-p).exp(), (-p1).exp());
                let (one_m_a, one_m_b) = (-(-p).exp_m1(), -(-p1).exp_m1());
                let b2 =
                    one_m_a * one_m_b * (1.0 + a * b) / ((1.0 + a) * (1.0 + b) * (1.0 - a * b));
                // d ln B₂/da and /db; da/dp = −a, db/dp₁ = −b.
                let dln_da =
                    -1.0 / one_m_a + b / (1.0 + a * b) - 1.0 / (1.0 + a) + b / (1.0 - a * b);
                let dln_db =
                    -1.0 / one_m_b + a / (1.0 + a * b) - 1.0 / (1.0 + b) + a / (1.0 - a * b);
                Coefs {
                    b1: one_m_a * one_m_b,
                    b1_p: a * one_m_b,
                    b1_p1: one_m_a * b,
                    b2,
                    b2_p: -a * b2 * dln_da,
                    b2_p1: -b * b2 * dln_db,
                }
            }
        };
        let cg = self.c_g;
        FourGram {
            loss: w_g * w_g * c.b2 - 2.0 * cg * w_g * c.b1 + cg * cg,
            d_wg: 2.0 * w_g * c.b2 - 2.0 * cg * c.b1,
            d_p: w_g * w_g * c.b2_p - 2.0 * cg * w_g * c.b1_p,
            d_p1: w_g * w_g * c.b2_p1 - 2.0 * cg * w_g * c.b1_p1,
        }
    }

    /// Layer 1's stationary statistics for ℓ_I: (q₀, dq₀/dp₁, ρ², dρ²/dp₁); (1, 0, 1, 0) for
    /// the exact copy.
    fn layer1_stats(p1: Option<f64>) -> (f64, f64, f64, f64) {
        match p1 {
            None => (1.0, 0.0, 1.0, 0.0),
            Some(p1) => {
                let t = (0.5 * p1).tanh();
                (-(-p1).exp_m1(), (-p1).exp(), t, 0.5 * (1.0 - t * t))
            }
        }
    }

    /// Why (v, w, p₁) is outside the closed form's domain (§4 guard), or None.
    pub fn ih_domain_error(&self, w: f64, p1: Option<f64>) -> Option<String> {
        if let Some(p1) = p1
            && p1 <= 0.0
        {
            return Some(format!(
                "p1 = {p1} <= 0: the stationary layer-1 weights need a positive slope"
            ));
        }
        let (q0, _, rho2, _) = Self::layer1_stats(p1);
        if 2.0 * w * w * rho2 >= 1.0 {
            return Some(format!(
                "w^2 = {} >= 1/2{}: E[exp(w^2 x_L^2)] diverges and the large-L IH loss of §4 is \
                 invalid (use estimator = \"monte_carlo\")",
                round6(w * w),
                if p1.is_some() { " (times rho^2)" } else { "" }
            ));
        }
        if 2.0 * w * self.w_star * q0 >= 1.0 {
            return Some(format!(
                "w*w_star = {} >= 1/2: the large-L IH loss of §4 is invalid (use estimator = \
                 \"monte_carlo\")",
                round6(w * self.w_star)
            ));
        }
        None
    }

    /// The IH part ℓ_I (before `loss_scale`) of §4 and its derivatives in v, w and p₁.
    /// Valid only inside [`RichModel::ih_domain_error`]'s region (NaN outside).
    pub fn ih(&self, v: f64, w: f64, p1: Option<f64>) -> (f64, f64, f64, f64) {
        let n = self.n() as f64;
        let (ci, ws) = (self.c_i, self.w_star);
        let (q0, dq0, rho2, drho2) = Self::layer1_stats(p1);
        let a = 1.0 - 2.0 * w * w * rho2;
        let b = 1.0 - 2.0 * w * ws * q0;
        let c = 1.0 - 2.0 * ws * ws;
        let (ah, bh) = (a.powf(-0.5), b.powf(-0.5));
        let (a3, b3) = (ah / a, bh / b);
        let loss = (v * v * ah - 2.0 * ci * v * bh + ci * ci * c.powf(-0.5)) / n;
        let d_v = (2.0 * v * ah - 2.0 * ci * bh) / n;
        let d_w = (2.0 * v * v * w * rho2 * a3 - 2.0 * ci * v * ws * q0 * b3) / n;
        let d_p1 = (v * v * w * w * a3 * drho2 - 2.0 * ci * v * w * ws * b3 * dq0) / n;
        (loss, d_v, d_w, d_p1)
    }
}

/// The closed-form reduced flow (§5): dθ/dt = −∇ℓ with ℓ = loss_scale·(ℓ_G + ℓ_I).
/// Observables: `loss_G`, `loss_I` (both × loss_scale) and `w`.
#[derive(Debug, Clone)]
pub struct RichFlow {
    model: RichModel,
    names: Vec<String>,
    observable_names: Vec<String>,
}

/// Observable indices shared by [`RichFlow`] and [`RichMonteCarlo`].
pub const OBS_LOSS_G: usize = 0;
pub const OBS_LOSS_I: usize = 1;
pub const OBS_W: usize = 2;

impl RichFlow {
    /// A validated model (L ≥ 4, loss_scale > 0; checked by the scenario).
    pub fn new(model: RichModel) -> Self {
        assert!(model.l >= 4, "RichFlow needs L >= 4, got {}", model.l);
        assert!(model.loss_scale > 0.0 && model.loss_scale.is_finite());
        RichFlow {
            names: model.names(),
            observable_names: ["loss_G", "loss_I", "w"].map(String::from).to_vec(),
            model,
        }
    }

    pub fn model(&self) -> &RichModel {
        &self.model
    }

    /// (ℓ_G, ℓ_I, gradient in the reduced variables), before `loss_scale`.
    fn parts(&self, theta: &[f64]) -> (f64, f64, ReducedGrad) {
        let m = &self.model;
        let lay = m.layout();
        let p1 = m.p1(theta);
        let w = m.w(theta);
        let g = m.four_gram(theta[lay.w_g], theta[lay.p], p1, m.exact_finite_m);
        let (li, d_v, d_w, d_p1) = m.ih(theta[lay.v], w, p1);
        (
            g.loss,
            li,
            ReducedGrad {
                w_g: g.d_wg,
                p: g.d_p,
                v: d_v,
                w: d_w,
                p1: g.d_p1 + d_p1,
            },
        )
    }
}

impl GradientFlow for RichFlow {
    fn names(&self) -> &[String] {
        &self.names
    }

    fn loss(&self, theta: &[f64]) -> f64 {
        let (lg, li, _) = self.parts(theta);
        self.model.loss_scale * (lg + li)
    }

    fn grad(&self, theta: &[f64], out: &mut [f64]) {
        let (_, _, mut g) = self.parts(theta);
        let s = self.model.loss_scale;
        g.w_g *= s;
        g.p *= s;
        g.v *= s;
        g.w *= s;
        g.p1 *= s;
        self.model.chain(theta, &g, out);
    }

    fn observable_names(&self) -> &[String] {
        &self.observable_names
    }

    fn observables(&self, theta: &[f64], out: &mut [f64]) {
        let (lg, li, _) = self.parts(theta);
        out[OBS_LOSS_G] = self.model.loss_scale * lg;
        out[OBS_LOSS_I] = self.model.loss_scale * li;
        out[OBS_W] = self.model.w(theta);
    }

    fn domain_error(&self, theta: &[f64]) -> Option<String> {
        let m = &self.model;
        let p = theta[m.layout().p];
        if !m.exact_finite_m && p <= 0.0 {
            return Some(format!(
                "p = {p} <= 0: the M -> infinity limits of the 4-gram loss need p > 0 (use \
                 exact_finite_M = true)"
            ));
        }
        m.ih_domain_error(m.w(theta), m.p1(theta))
    }
}

/// `x` to six decimals, for messages (0.6561000000000001 → 0.6561).
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests;
