//! Musat et al., three-parameter reduced dynamics (docs/theory/musat.md §7): the pseudo-parameters
//! θ = (α₃, β₂, γ₃) of the disentangled two-layer transformer on orthonormal inputs, strict
//! causal mask, fresh query position. [reconstruction]
//!
//! Query `last` (q = N, §7.1):
//! ```text
//! a = e^α/(e^α + 2N − 2),  b = e^{βa}/(e^{βa} + K),  K = 2N − 1
//! L = (γb − 1)² + γ²(1 − b)²/K
//! ```
//! Query `uniform` (§7.2): L = (1/N) Σ_q L_q with the layer-1 weights a_i = e^α/(e^α + 2i − 2)
//! and the layer-2 softmax over the 2N keys with logits β ω_k. The q-sum is evaluated in O(N)
//! with suffix sums (the logits of keys after the queried pair do not depend on q).
//!
//! Both losses are multiplied by `loss_scale` (1, or ½ for the halved loss).

use crate::flow::GradientFlow;
use serde::{Deserialize, Serialize};

/// Which pair is queried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Query {
    /// q = N (Theorem 2's setting).
    #[default]
    Last,
    /// q uniform on {1..N}; the loss is the average over q.
    Uniform,
}

/// Index of α₃ in θ.
pub const ALPHA3: usize = 0;
/// Index of β₂ in θ.
pub const BETA2: usize = 1;
/// Index of γ₃ in θ.
pub const GAMMA3: usize = 2;

/// The three-parameter flow of Musat et al. (docs/theory/musat.md §7).
#[derive(Debug, Clone)]
pub struct Musat3 {
    n: usize,
    query: Query,
    loss_scale: f64,
    names: Vec<String>,
    observable_names: Vec<String>,
}

/// 1/(1 + e^{−x}) without overflow.
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Layer-1 weight of label i on its own item and its complement: a_i = e^α/(e^α + 2i − 2),
/// 1 − a_i, both without cancellation (a_1 = 1: label 1 has a single key).
fn own_item_weight(alpha: f64, i: usize) -> (f64, f64) {
    if i == 1 {
        return (1.0, 0.0);
    }
    let log_c = ((2 * i - 2) as f64).ln();
    (sigmoid(alpha - log_c), sigmoid(log_c - alpha))
}

/// Loss, gradient and the mean attention of the query on its label.
struct Eval {
    loss: f64,
    grad: [f64; 3],
    b_target: f64,
}

impl Musat3 {
    /// N ≥ 2 pairs, the query mode and the loss scale (> 0). Validated upstream by the scenario.
    pub fn new(n: usize, query: Query, loss_scale: f64) -> Self {
        assert!(n >= 2, "Musat3 needs N >= 2, got {n}");
        assert!(loss_scale > 0.0 && loss_scale.is_finite());
        Musat3 {
            n,
            query,
            loss_scale,
            names: ["alpha3", "beta2", "gamma3"].map(String::from).to_vec(),
            observable_names: ["a", "b"].map(String::from).to_vec(),
        }
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn query(&self) -> Query {
        self.query
    }

    /// One pass over the queried pairs (q = N only, or q = N..1 for `uniform`), keeping suffix
    /// sums over the pairs i > q. All exponentials are shifted by s = max(β, 0) ≥ β ω_k.
    fn evaluate(&self, theta: &[f64]) -> Eval {
        let (alpha, beta, gamma) = (theta[ALPHA3], theta[BETA2], theta[GAMMA3]);
        let n = self.n;
        let shift = beta.max(0.0);
        let e0 = (-shift).exp(); // a key with ω = 0
        // Suffix sums over keys of pairs i > q: Σ E, Σ E², Σ E ω, Σ E² ω, Σ E ∂ω/∂α, Σ E² ∂ω/∂α.
        let (mut s1, mut s2, mut sw1, mut sw2, mut sd1, mut sd2) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        let (mut loss, mut g_alpha, mut g_beta, mut g_gamma, mut b_sum) = (0.0, 0.0, 0.0, 0.0, 0.0);
        let q_min = match self.query {
            Query::Last => n,
            Query::Uniform => 1,
        };
        for q in (q_min..=n).rev() {
            let (a_q, abar_q) = own_item_weight(alpha, q);
            let n_zero = (2 * q - 1) as f64; // items 1..q and labels 1..q−1
            let e_t = (beta * a_q - shift).exp();
            let z = n_zero * e0 + e_t + s1;
            let b_t = e_t / z;
            let others_sq = (n_zero * e0 * e0 + s2) / (z * z); // Σ_{k≠2q} b_k²
            let resid = gamma * b_t - 1.0;
            loss += resid * resid + gamma * gamma * others_sq;
            g_gamma += 2.0 * b_t * resid + 2.0 * gamma * others_sq;
            let g_t = 2.0 * gamma * resid; // ∂L_q/∂b_{2q}
            let big_g = b_t * g_t + 2.0 * gamma * gamma * others_sq; // Σ_m b_m g_m
            let dz_t = b_t * (g_t - big_g); // ∂L_q/∂z_{2q}
            g_beta += dz_t * a_q + 2.0 * gamma * gamma * sw2 / (z * z) - big_g * sw1 / z;
            g_alpha += beta
                * (dz_t * a_q * abar_q + 2.0 * gamma * gamma * sd2 / (z * z) - big_g * sd1 / z);
            b_sum += b_t;
            if q >= 2 && q > q_min {
                // Pair q joins the suffix for the queries q' < q.
                let c = (2 * q - 2) as f64;
                let w_item = 1.0 / c;
                let w_label = abar_q / c;
                let dw_label = -a_q * abar_q / c;
                let e_item = (beta * w_item - shift).exp();
                let e_label = (beta * w_label - shift).exp();
                s1 += e_item + e_label;
                s2 += e_item * e_item + e_label * e_label;
                sw1 += e_item * w_item + e_label * w_label;
                sw2 += e_item * e_item * w_item + e_label * e_label * w_label;
                sd1 += e_label * dw_label;
                sd2 += e_label * e_label * dw_label;
            }
        }
        let count = (n - q_min + 1) as f64;
        let scale = self.loss_scale / count;
        Eval {
            loss: loss * scale,
            grad: [g_alpha * scale, g_beta * scale, g_gamma * scale],
            b_target: b_sum / count,
        }
    }
}

impl GradientFlow for Musat3 {
    fn names(&self) -> &[String] {
        &self.names
    }

    fn loss(&self, theta: &[f64]) -> f64 {
        self.evaluate(theta).loss
    }

    fn grad(&self, theta: &[f64], out: &mut [f64]) {
        out.copy_from_slice(&self.evaluate(theta).grad);
    }

    /// `a`: label N's layer-1 weight on its own item, a_N = e^α/(e^α + 2N − 2).
    /// `b`: the query's layer-2 weight on its own label (averaged over q for `uniform`).
    fn observable_names(&self) -> &[String] {
        &self.observable_names
    }

    fn observables(&self, theta: &[f64], out: &mut [f64]) {
        out[0] = own_item_weight(theta[ALPHA3], self.n).0;
        out[1] = self.evaluate(theta).b_target;
    }
}

#[cfg(test)]
mod tests;

/// The exact α₃–β₂ relation of the query-`last` flow (docs/theory/musat.md §7.3): along every
/// trajectory dα/dβ = β(1 − a(α)) with a(α) = e^α/(e^α + 2N − 2), whatever γ is. Returns the
/// curve α(β) through (β₀, α₀), sampled at `samples` points of β in [β₀, β_max] (Dopri5,
/// rtol 1e-10, evaluated on its continuous output).
pub fn alpha_beta_invariant(
    n: usize,
    start: (f64, f64),
    beta_max: f64,
    samples: usize,
) -> Vec<(f64, f64)> {
    use ode_solvers::continuous_output_model::ContinuousOutputModel;
    use ode_solvers::{Dopri5, OutputType, System, Vector1};
    struct Slope {
        n: usize,
    }
    impl System<f64, Vector1<f64>> for Slope {
        fn system(&self, beta: f64, y: &Vector1<f64>, dy: &mut Vector1<f64>) {
            dy[0] = beta * own_item_weight(y[0], self.n).1;
        }
    }
    let (b0, a0) = start;
    if beta_max <= b0 || samples < 2 {
        return vec![start];
    }
    let mut model = ContinuousOutputModel::default();
    let mut solver = Dopri5::from_param(
        Slope { n },
        b0,
        beta_max,
        beta_max - b0,
        Vector1::new(a0),
        1e-10,
        1e-12,
        0.9,
        0.04,
        0.2,
        10.0,
        beta_max - b0,
        0.0,
        1_000_000,
        u32::MAX,
        OutputType::Continuous,
    );
    if solver
        .integrate_with_continuous_output_model(&mut model)
        .is_err()
    {
        return vec![start];
    }
    (0..samples)
        .filter_map(|i| {
            let b = b0 + (beta_max - b0) * i as f64 / (samples - 1) as f64;
            model.evaluate(b).map(|a| (b, a[0]))
        })
        .collect()
}
