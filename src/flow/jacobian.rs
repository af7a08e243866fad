//! The Jacobian J = ∂f/∂y of the solver's right-hand side, for the implicit method.
//!
//! For a gradient flow f(θ) = −mask ⊙ ∇L(θ), J = −(mask ⊙ H) with H the Hessian of the loss
//! (rows of frozen coordinates are zero). With log coordinates (y_k = ln|θ_k|, f_k =
//! −m_k g_k/θ_k, `FlowProblemBuilder::log_coordinates`) the chain rule gives, with R_k = 1/θ_k
//! and D_j = θ_j for log coordinates (1 for linear ones),
//! ```text
//! J_kj = −m_k R_k H_kj D_j + [k log] δ_kj m_k R_k g_k .
//! ```
//! Where the system gives H in closed form ([`GradientFlow::hessian`]) J is formed from it
//! this way. Otherwise J is a central difference of the right-hand side itself, column by
//! column (2·dim gradients, once per Jacobian, not per stage): with steps ε_j = δ max(|y_j|, 1)
//! for a linear coordinate and ε_j = δ in ln|θ_j| (a relative step δ in θ_j) for a log one,
//! δ = u^{1/3} ≈ 6·10⁻⁶. Differencing f rather than ∇L keeps the relative accuracy of a log
//! coordinate whose θ_k has decayed to 1e-300 (its rate g_k/θ_k stays O(1), while an absolute
//! error in H_kj would be amplified by 1/θ_k). A side whose point leaves the system's domain
//! (a non-finite f) is replaced by the centre: a one-sided difference.
//!
//! [`GradientFlow::hessian`]: super::GradientFlow::hessian

use super::Rhs;
use nalgebra::{DMatrix, DVector};
use ode_solvers::dop_shared::System;

/// Relative step of the differenced Jacobian: the cube root of the unit roundoff.
const DELTA: f64 = 6.055_454_452_393_343e-6;

/// Buffers of the Jacobian, allocated once per stage.
pub(super) struct Work {
    hessian: Vec<f64>,
    theta: Vec<f64>,
    g: Vec<f64>,
    y: DVector<f64>,
    f_plus: DVector<f64>,
    f_minus: DVector<f64>,
}

impl Work {
    pub(super) fn new(n: usize) -> Self {
        Work {
            hessian: vec![0.0; n * n],
            theta: vec![0.0; n],
            g: vec![0.0; n],
            y: DVector::zeros(n),
            f_plus: DVector::zeros(n),
            f_minus: DVector::zeros(n),
        }
    }
}

impl Rhs<'_, '_> {
    /// J = ∂f/∂y at the solver's state y (f0 = f(t, y)) into `jac`. Returns whether it came
    /// from an analytic Hessian (otherwise it cost 2·dim gradient evaluations).
    pub(super) fn jacobian(
        &self,
        t: f64,
        y: &DVector<f64>,
        f0: &DVector<f64>,
        jac: &mut DMatrix<f64>,
        work: &mut Work,
    ) -> bool {
        let n = y.len();
        if self.linear {
            work.theta.copy_from_slice(y.as_slice());
        } else {
            self.map.to_eval(y.as_slice(), &mut work.theta);
        }
        if self.system.hessian(&work.theta, &mut work.hessian) {
            self.jacobian_from_hessian(jac, work);
            return true;
        }
        for j in 0..n {
            let log = self.map.signs[j] != 0.0;
            let eps = if log {
                DELTA
            } else {
                DELTA * y[j].abs().max(1.0)
            };
            work.y.copy_from(y);
            let (lo, hi) = (y[j] - eps, y[j] + eps);
            work.y[j] = hi;
            self.system(t, &work.y, &mut work.f_plus);
            work.y[j] = lo;
            self.system(t, &work.y, &mut work.f_minus);
            let finite = |f: &DVector<f64>| f.iter().all(|v| v.is_finite());
            let (plus, hi) = if finite(&work.f_plus) {
                (&work.f_plus, hi)
            } else {
                (f0, y[j])
            };
            let (minus, lo) = if finite(&work.f_minus) {
                (&work.f_minus, lo)
            } else {
                (f0, y[j])
            };
            let width = hi - lo;
            for i in 0..n {
                jac[(i, j)] = if width > 0.0 {
                    (plus[i] - minus[i]) / width
                } else {
                    0.0
                };
            }
        }
        false
    }

    /// J from the analytic Hessian in `work.hessian` at `work.theta` (module doc).
    fn jacobian_from_hessian(&self, jac: &mut DMatrix<f64>, work: &mut Work) {
        let n = work.theta.len();
        let signs = &self.map.signs;
        if !self.linear {
            self.grad_calls.set(self.grad_calls.get() + 1);
            self.system.grad(&work.theta, &mut work.g);
        }
        let theta = &work.theta;
        for k in 0..n {
            let m = self.mask[k];
            let r = if signs[k] != 0.0 { 1.0 / theta[k] } else { 1.0 };
            for j in 0..n {
                let d = if signs[j] != 0.0 { theta[j] } else { 1.0 };
                jac[(k, j)] = -m * r * work.hessian[k * n + j] * d;
            }
            if signs[k] != 0.0 {
                jac[(k, k)] += m * r * work.g[k];
            }
        }
    }
}
