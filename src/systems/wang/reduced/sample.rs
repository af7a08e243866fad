//! The six-parameter model on one sequence: the exact finite-L forward pass and its gradient
//! (docs/theory/wang.md §8), shared by the Monte-Carlo flow and the SGD trainer.
//!
//! For a sequence x_1..x_L, with x̃_τ the layer-1 output at position τ, k_s = x_L x̃_s,
//! a_s = softmax_s(w k_s) over s = 2..L−1 and k̄ = Σ a_s k_s:
//! ```text
//! u_G = w_G Σ_j π_j x̃_{L−j}               ∂u_G/∂w_G = Σ_j π_j x̃_{L−j}
//!                                           ∂u_G/∂p   = w_G Σ_j π_j (m₁ − (j−1)) x̃_{L−j}
//! u_I = v Σ_s a_s x_s                       ∂u_I/∂v   = Σ_s a_s x_s
//!                                           ∂u_I/∂w   = v Σ_s a_s (k_s − k̄) x_s
//! D = u_G − c_G x_{L−2},  E = u_I − c_I Σ_s softmax_s(w* x_L x_{s−1}) x_s,  r = D + E
//! ```
//! For a finite layer-1 slope p₁ (b = e^{−p₁}): x̃_τ = U_τ/Z_τ with U_τ = x_{τ−1} + b U_{τ−1},
//! Z_τ = 1 + b Z_{τ−1}, and the chain-rule terms ∂u_G/∂p₁ = w_G Σ_j π_j ∂x̃_{L−j}/∂p₁,
//! ∂u_I/∂p₁ = v w Σ_s a_s (d_s − d̄) x_s with d_s = x_L ∂x̃_s/∂p₁.

use super::{RichModel, geom};

/// Per-evaluation tables (the 4-gram weights π_j, j = 1..M, and m₁), computed once per θ and
/// reused for every sequence. Its buffers are allocated once (`with_capacity`).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub w_g: f64,
    pub v: f64,
    pub w: f64,
    pub p1: Option<f64>,
    pi: Vec<f64>,
    /// m₁ − (j − 1) for j = 1..M.
    centred: Vec<f64>,
}

/// Scratch per sequence: x̃ and ∂x̃/∂p₁ at every position (allocated once).
#[derive(Debug, Clone)]
pub struct SeqScratch {
    xt: Vec<f64>,
    dxt: Vec<f64>,
}

impl SeqScratch {
    pub fn new(l: usize) -> Self {
        SeqScratch {
            xt: vec![0.0; l + 1],
            dxt: vec![0.0; l + 1],
        }
    }

    /// The buffer length (L + 1 for the L it was made for).
    pub fn len(&self) -> usize {
        self.xt.len()
    }

    pub fn is_empty(&self) -> bool {
        self.xt.is_empty()
    }
}

impl Prepared {
    pub fn new(l: usize) -> Self {
        Prepared {
            w_g: 0.0,
            v: 0.0,
            w: 0.0,
            p1: None,
            pi: vec![0.0; l],
            centred: vec![0.0; l],
        }
    }

    /// Fill the tables for θ. No allocation (the buffers have length ≥ M).
    pub fn prepare(&mut self, model: &RichModel, theta: &[f64]) {
        let lay = model.layout();
        let m = model.n();
        let p = theta[lay.p];
        let g = geom(p, m);
        for j in 1..=m {
            let k = (j - 1) as f64;
            self.pi[j - 1] = (-p * k - g.ln_z).exp();
            self.centred[j - 1] = g.mean - k;
        }
        self.w_g = theta[lay.w_g];
        self.v = theta[lay.v];
        self.w = model.w(theta);
        self.p1 = model.p1(theta);
    }
}

/// One sequence's residual parts and the derivatives of the two heads' outputs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SeqEval {
    /// D = u_G − c_G x_{L−2} (the 4-gram head's error).
    pub d: f64,
    /// E = u_I − y_I (the IH head's error).
    pub e: f64,
    /// ∂u_G/∂(w_G, p, p₁).
    pub ug: [f64; 3],
    /// ∂u_I/∂(v, w, p₁).
    pub ui: [f64; 3],
}

/// Evaluate the model on x (x[0] = x_1, …, x[L−1] = x_L). No allocation.
pub fn eval_sequence(
    model: &RichModel,
    prep: &Prepared,
    x: &[f64],
    scratch: &mut SeqScratch,
) -> SeqEval {
    let (_, y_i) = target_parts(model, x);
    eval_sequence_with_target(model, prep, x, y_i, scratch)
}

/// [`eval_sequence`] with the target's IH part y_I = c_I Σ_s softmax_s(w* x_L x_{s−1}) x_s
/// already known (it does not depend on θ; the Monte-Carlo flow computes it once per sequence).
pub fn eval_sequence_with_target(
    model: &RichModel,
    prep: &Prepared,
    x: &[f64],
    y_i: f64,
    scratch: &mut SeqScratch,
) -> SeqEval {
    let l = model.l;
    debug_assert_eq!(x.len(), l);
    // 1-based token access.
    let tok = |i: usize| x[i - 1];
    let xt = &mut scratch.xt;
    let dxt = &mut scratch.dxt;
    // Layer 1 output x̃_τ (and ∂x̃_τ/∂p₁) for τ = 2..L−1.
    match prep.p1 {
        None => {
            for tau in 2..l {
                xt[tau] = tok(tau - 1);
                dxt[tau] = 0.0;
            }
        }
        Some(p1) => {
            let b = (-p1).exp();
            let (mut u, mut z, mut u_b, mut z_b) = (0.0, 0.0, 0.0, 0.0);
            for tau in 2..l {
                // U_τ = x_{τ−1} + b U_{τ−1}; ∂U_τ/∂b = U_{τ−1} + b ∂U_{τ−1}/∂b (same for Z).
                u_b = u + b * u_b;
                z_b = z + b * z_b;
                u = tok(tau - 1) + b * u;
                z = 1.0 + b * z;
                let v = u / z;
                xt[tau] = v;
                // ∂x̃/∂p₁ = −b ∂x̃/∂b.
                dxt[tau] = -b * (u_b - v * z_b) / z;
            }
        }
    }
    let m = model.n();
    // 4-gram head: keys τ = L − j, j = 1..M.
    let (mut g1, mut gp, mut gp1) = (0.0, 0.0, 0.0);
    for j in 1..=m {
        let tau = l - j;
        let pij = prep.pi[j - 1];
        g1 += pij * xt[tau];
        gp += pij * prep.centred[j - 1] * xt[tau];
        gp1 += pij * dxt[tau];
    }
    let x_last = tok(l);
    // IH head: softmax over s = 2..L−1, shifted by the max logit.
    let mx = xt[2..l]
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(prep.w * x_last * v));
    let (mut s0, mut sx, mut sk, mut skx, mut sd, mut sdx) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for s in 2..l {
        let xs = tok(s);
        let k = x_last * xt[s];
        let d = x_last * dxt[s];
        let e = (prep.w * k - mx).exp();
        s0 += e;
        sx += e * xs;
        sk += e * k;
        skx += e * k * xs;
        sd += e * d;
        sdx += e * d * xs;
    }
    let i1 = sx / s0;
    let kbar = sk / s0;
    let dbar = sd / s0;
    SeqEval {
        d: prep.w_g * g1 - model.c_g * tok(l - 2),
        e: prep.v * i1 - y_i,
        ug: [g1, prep.w_g * gp, prep.w_g * gp1],
        ui: [
            i1,
            prep.v * (skx / s0 - kbar * i1),
            prep.v * prep.w * (sdx / s0 - dbar * i1),
        ],
    }
}

/// The target's two parts on one sequence: (c_G x_{L−2}, c_I Σ_s softmax_s(w* x_L x_{s−1}) x_s).
pub fn target_parts(model: &RichModel, x: &[f64]) -> (f64, f64) {
    let l = model.l;
    let x_last = x[l - 1];
    let mut mx = f64::NEG_INFINITY;
    for s in 2..l {
        mx = mx.max(model.w_star * x_last * x[s - 2]);
    }
    let (mut t0, mut tx) = (0.0, 0.0);
    for s in 2..l {
        let e = (model.w_star * x_last * x[s - 2] - mx).exp();
        t0 += e;
        tx += e * x[s - 1];
    }
    (model.c_g * x[l - 3], model.c_i * tx / t0)
}
