//! Radau IIA of order 5 (three stages), after Hairer's RADAU5 (Hairer & Wanner, *Solving ODEs
//! II*, §IV.8, and `radau5.f`), for `solver.method = "radau5"` and the stiff part of
//! `solver.method = "auto"`.
//!
//! The gradient flows here are stiff where fast, strongly damped directions (a Hessian
//! eigenvalue of O(1), e.g. the musat19 readout γ₁ whose curvature is 2 at every N) ride along
//! slow ones (rates of O(1/N²)): an explicit method's step is then held at ~ 3/λ_max by
//! stability, however smooth the trajectory. Radau IIA is L-stable, so its step follows the
//! accuracy of the slow motion only.
//!
//! One step solves the collocation equations for the stage increments Z = (z₁, z₂, z₃),
//! z_i = h Σ_j a_ij f(x + c_j h, y + z_j), by simplified Newton iterations with the Jacobian J
//! of the step's start (`super::jacobian`), in Hairer's transformed form: with W = (T⁻¹ ⊗ I) Z
//! the iteration matrix splits into a real n × n system (γ/h − J) and a complex one
//! ((α + iβ)/h − J), each LU-decomposed once per step size (dense LU with partial pivoting in preallocated buffers, `lu.rs`; the systems
//! here have 3 to ~100 coordinates). The rest is Hairer's code, with his defaults:
//! - tolerances transformed as rtol' = 0.1 rtol^{2/3}, atol' = rtol' · atol/rtol (the error
//!   estimate is of lower order than the method; this makes the achieved accuracy track the
//!   requested one);
//! - Newton: at most 7 iterations, stopping when the estimated error of the iterate is below
//!   κ = max(10 u/rtol', min(0.03, rtol'^{1/2})); a contraction rate that predicts failure
//!   shrinks the step at once; a diverging iteration or a singular matrix halves it;
//! - the embedded error estimate (γ/h − J)⁻¹ [f(x, y) + (e₁z₁ + e₂z₂ + e₃z₃)/h], filtered once
//!   more through the matrix on a first or rejected step when it exceeds 1;
//! - Gustafsson's predictive step-size controller, step ratio in [1/8, 5], a step ratio in
//!   [1, 1.2] keeps the step (and the decompositions); the Jacobian is kept while the Newton
//!   contraction stays ≤ `thet` (Hairer's 0.001, or 0.1 where a Jacobian costs 2·dim
//!   gradients: his advice when Jacobians are expensive);
//! - the starting values of Newton extrapolate the previous step's collocation polynomial.
//!
//! The continuous output is the collocation polynomial of each step (degree 3 through y₀ and
//! the three stage values: Hairer's `contr5`), kept for every step at no cost in right-hand
//! sides. Its error between the step ends is of order h⁴ (the step ends are of order 5), which
//! is the accuracy events are located to.

use super::solution::{DenseOutput, StageStats};
use super::{Rhs, StageRun};
use lu::Lu;
use nalgebra::{Complex, DMatrix, DVector};
use ode_solvers::dop_shared::{IntegrationError, System};
use std::sync::LazyLock;

/// The method's constants (Hairer's `radau5.f`): nodes c₁, c₂ (c₃ = 1), the error estimator's
/// weights, the eigenvalues of A⁻¹ (γ real, α ± iβ) and the transformation T with
/// T⁻¹ A⁻¹ T = [[γ, 0, 0], [0, α, −β], [0, β, α]].
pub(super) struct Constants {
    pub(super) c1: f64,
    pub(super) c2: f64,
    c1m1: f64,
    c2m1: f64,
    c1mc2: f64,
    dd: [f64; 3],
    pub(super) gamma: f64,
    pub(super) alpha: f64,
    pub(super) beta: f64,
    pub(super) t: [[f64; 3]; 3],
    pub(super) ti: [[f64; 3]; 3],
}

#[allow(clippy::excessive_precision)] // Hairer's digits, as printed in radau5.f
pub(super) static CONSTANTS: LazyLock<Constants> = LazyLock::new(|| {
    let sq6 = 6f64.sqrt();
    let c1 = (4.0 - sq6) / 10.0;
    let c2 = (4.0 + sq6) / 10.0;
    let (cb81, cb9) = (81f64.cbrt(), 9f64.cbrt());
    let u1 = (6.0 + cb81 - cb9) / 30.0;
    let alph = (12.0 - cb81 + cb9) / 60.0;
    let beta = (cb81 + cb9) * 3f64.sqrt() / 60.0;
    let cno = alph * alph + beta * beta;
    Constants {
        c1,
        c2,
        c1m1: c1 - 1.0,
        c2m1: c2 - 1.0,
        c1mc2: c1 - c2,
        dd: [
            -(13.0 + 7.0 * sq6) / 3.0,
            (-13.0 + 7.0 * sq6) / 3.0,
            -1.0 / 3.0,
        ],
        gamma: 1.0 / u1,
        alpha: alph / cno,
        beta: beta / cno,
        t: [
            [
                9.123_239_487_089_294_3e-2,
                -0.141_255_295_020_954_21,
                -3.002_919_410_514_742_4e-2,
            ],
            [
                0.241_717_932_707_107_02,
                0.204_129_352_293_799_93,
                0.382_942_112_757_261_8,
            ],
            [0.966_048_182_615_092_9, 1.0, 0.0],
        ],
        ti: [
            [
                4.325_579_890_063_155,
                0.339_199_251_815_809_87,
                0.541_770_539_935_874_9,
            ],
            [
                -4.178_718_591_551_905,
                -0.327_682_820_761_062_4,
                0.476_623_554_500_550_45,
            ],
            [
                -0.502_872_634_945_786_9,
                2.571_926_949_855_605_4,
                -0.596_039_204_828_224_9,
            ],
        ],
    }
});

/// Most Newton iterations per step.
const NIT: u32 = 7;
/// Safety factor of the step-size controller.
const SAFE: f64 = 0.9;
/// The new step is at least h/5 and at most 8h.
const FACL: f64 = 5.0;
const FACR: f64 = 0.125;
/// A new step within [1, 1.2] h keeps the old one (and its decompositions).
const QUOT1: f64 = 1.0;
const QUOT2: f64 = 1.2;
/// Unit roundoff (Hairer's default 1e-16).
const UROUND: f64 = 1e-16;
/// Singular iteration matrices in a row that end the run.
const MAX_SINGULAR: u32 = 5;

/// The continuous output of one stage's accepted steps: per step its start, end and length, and
/// the four coefficient vectors of the collocation polynomial
/// u(s) = y₁ + s (c₂ + (s − c₂ + 1)(c₃ + (s − c₁ + 1) c₄)), s = (t − x₁)/h ∈ [−1, 0].
pub(crate) struct Radau5Dense {
    dim: usize,
    x0: Vec<f64>,
    x1: Vec<f64>,
    h: Vec<f64>,
    /// 4 · dim values per step.
    coef: Vec<f64>,
}

impl Radau5Dense {
    fn new(dim: usize) -> Self {
        Radau5Dense {
            dim,
            x0: Vec::new(),
            x1: Vec::new(),
            h: Vec::new(),
            coef: Vec::new(),
        }
    }
}

impl DenseOutput for Radau5Dense {
    fn evaluate(&self, t: f64) -> Option<Vec<f64>> {
        let (first, last) = (*self.x0.first()?, self.x0.len() - 1);
        if !(first..=self.x1[last]).contains(&t) {
            return None;
        }
        let step = self.x0.partition_point(|&x| x <= t).saturating_sub(1);
        Some(self.polynomial(step, t))
    }
}

impl Radau5Dense {
    /// Step `step`'s collocation polynomial at t (extrapolated outside the step).
    fn polynomial(&self, step: usize, t: f64) -> Vec<f64> {
        let k = &*CONSTANTS;
        let s = (t - self.x1[step]) / self.h[step];
        let n = self.dim;
        let r = &self.coef[4 * n * step..4 * n * (step + 1)];
        (0..n)
            .map(|i| {
                r[i] + s * (r[n + i] + (s - k.c2m1) * (r[2 * n + i] + (s - k.c1m1) * r[3 * n + i]))
            })
            .collect()
    }
}

/// Why a Newton iteration gave up.
enum NewtonFailure {
    /// The contraction rate predicts no convergence within [`NIT`] iterations: shrink the step
    /// by this factor (Hairer's prediction).
    Slow(f64),
    /// Diverging, non-finite (a stage outside the domain) or out of iterations: halve the step.
    Failed,
}

/// The two iteration matrices of one step size, decomposed in buffers allocated once per stage.
struct Decomposed {
    real: Lu<f64>,
    complex: Lu<Complex<f64>>,
    /// γ/h, α/h, β/h.
    fac1: f64,
    alphn: f64,
    betan: f64,
}

impl Decomposed {
    fn new(n: usize) -> Self {
        Decomposed {
            real: Lu::new(n, 0.0),
            complex: Lu::new(n, Complex::new(0.0, 0.0)),
            fac1: 0.0,
            alphn: 0.0,
            betan: 0.0,
        }
    }

    /// Decompose (γ/h − J) and ((α + iβ)/h − J); false if either is singular.
    fn decompose(&mut self, jac: &DMatrix<f64>, h: f64) -> bool {
        let k = &*CONSTANTS;
        let n = jac.nrows();
        (self.fac1, self.alphn, self.betan) = (k.gamma / h, k.alpha / h, k.beta / h);
        // both column-major, like `jac`
        for (idx, &v) in jac.as_slice().iter().enumerate() {
            let diagonal = idx % n == idx / n;
            self.real.a[idx] = if diagonal { self.fac1 - v } else { -v };
            self.complex.a[idx] = if diagonal {
                Complex::new(self.alphn - v, self.betan)
            } else {
                Complex::new(-v, 0.0)
            };
        }
        self.real.factor() && self.complex.factor()
    }
}

/// The buffers of one stage's integration, allocated once.
struct Work {
    /// Stage increments z₁..z₃ and their transforms w = T⁻¹z (Hairer's Z and F).
    z: [DVector<f64>; 3],
    w: [DVector<f64>; 3],
    /// f at the three stages, then the right-hand sides and solutions of the linear systems.
    fz: [DVector<f64>; 3],
    /// The argument of a right-hand side.
    arg: DVector<f64>,
    /// The complex right-hand side.
    cplx: DVector<Complex<f64>>,
    /// The error estimate, and Σ e_i z_i / h.
    err: DVector<f64>,
    ez: DVector<f64>,
    /// The previous step's polynomial coefficients c₂..c₄ (extrapolated for Newton's start).
    cont: [Vec<f64>; 3],
    /// atol + rtol |y| at the step's start.
    scal: Vec<f64>,
}

/// Newton's contraction state, carried from step to step (Hairer's FACCON and THETA).
struct Contraction {
    faccon: f64,
    theta: f64,
}

/// One stage's integration with Radau5 (see the module doc); the arguments are those of
/// `super::run_stage`, plus the first step to try (DOP853's last proposal when `auto` hands
/// over; otherwise an explicit estimate).
pub(super) fn run_stage(
    rhs: &mut Rhs,
    (t0, t1, duration): (f64, f64, f64),
    y0: &[f64],
    (rtol, atol): (f64, f64),
    max_steps: u32,
    h_start: Option<f64>,
) -> StageRun {
    let (result, t_reached, y_last, dense) = integrate(
        rhs,
        (t0, t1, duration),
        y0,
        (rtol, atol),
        max_steps,
        h_start,
    );
    StageRun {
        result,
        t_reached,
        y_last,
        dense: Box::new(dense),
        stiff: None,
    }
}

/// What one stage's integration with Radau5 gives: the counts (or the error), the time and
/// state of the last accepted step, the continuous output.
type Integrated = (
    Result<StageStats, IntegrationError>,
    f64,
    Option<Vec<f64>>,
    Radau5Dense,
);

/// [`run_stage`] with its continuous output unboxed.
fn integrate(
    rhs: &mut Rhs,
    (t0, t1, duration): (f64, f64, f64),
    y0: &[f64],
    (rtol, atol): (f64, f64),
    max_steps: u32,
    h_start: Option<f64>,
) -> Integrated {
    let n = y0.len();
    let k = &*CONSTANTS;
    // Hairer's transformation of the tolerances.
    let quot = atol / rtol;
    let rtol = 0.1 * rtol.powf(2.0 / 3.0);
    let atol = rtol * quot;
    let fnewt = (10.0 * UROUND / rtol).max(0.03f64.min(rtol.sqrt()));
    let cfac = SAFE * (1 + 2 * NIT) as f64;
    let zeros = || DVector::<f64>::zeros(n);
    let mut wk = Work {
        z: [zeros(), zeros(), zeros()],
        w: [zeros(), zeros(), zeros()],
        fz: [zeros(), zeros(), zeros()],
        arg: zeros(),
        cplx: DVector::from_element(n, Complex::new(0.0, 0.0)),
        err: zeros(),
        ez: zeros(),
        cont: [vec![0.0; n], vec![0.0; n], vec![0.0; n]],
        scal: vec![0.0; n],
    };
    let mut y = DVector::from_column_slice(y0);
    let mut y_new = zeros();
    let mut dy = zeros();
    let mut dy_new = zeros();
    let mut jac = DMatrix::<f64>::zeros(n, n);
    let mut jac_work = super::jacobian::Work::new(n);
    let mut dense = Radau5Dense::new(n);
    let mut stats = StageStats::default();
    let set_scal = |scal: &mut [f64], y: &DVector<f64>| {
        for (s, v) in scal.iter_mut().zip(y.iter()) {
            *s = atol + rtol * v.abs();
        }
    };

    let mut x = t0;
    rhs.system(x, &y, &mut dy);
    stats.evals += 1;
    set_scal(&mut wk.scal, &y);
    let mut h = match h_start {
        Some(h) => h,
        None => initial_step(rhs, x, &y, &dy, &wk.scal, &mut stats),
    }
    .min(duration);
    let mut last = false;
    if x + h * 1.0001 - t1 >= 0.0 {
        h = t1 - x;
        last = true;
    }
    // Jacobian reuse threshold: Hairer's 0.001, or 0.1 when J costs 2·dim gradients (set
    // once the first Jacobian tells which).
    let mut thet = THET_ANALYTIC;
    let (mut first, mut reject) = (true, false);
    let mut contraction = Contraction {
        faccon: 1.0,
        theta: thet,
    };
    let (mut hold, mut hacc, mut erracc) = (h, h, 1.0);
    let (mut attempts, mut singular) = (0u32, 0u32);
    // `need_jac`: form J at the step's start (Hairer's label 10); `lu`: the decompositions of
    // the current h (label 20 when `None`); `fresh_jac`: J was formed at the current state.
    let mut need_jac = true;
    let mut fresh_jac = false;
    // `decomposed`: `dec` holds the decompositions of the current h and J (else label 20)
    let mut dec = Decomposed::new(n);
    let mut decomposed = false;

    let result = 'integrate: loop {
        if need_jac {
            let analytic = rhs.jacobian(x, &y, &dy, &mut jac, &mut jac_work);
            if stats.jacobians == 0 && !analytic {
                thet = THET_DIFFERENCED;
            }
            stats.jacobians += 1;
            need_jac = false;
            fresh_jac = true;
            decomposed = false;
        }
        if !decomposed {
            stats.decompositions += 1;
            if !dec.decompose(&jac, h) {
                singular += 1;
                if singular >= MAX_SINGULAR {
                    break 'integrate Err(IntegrationError::StepSizeUnderflow { x });
                }
                h *= 0.5;
                reject = true;
                last = false;
                need_jac = !fresh_jac;
                continue;
            }
        }
        // kept only where the next attempt has the same h and J (Hairer's label 30)
        decomposed = false;
        if attempts >= max_steps {
            break 'integrate Err(IntegrationError::MaxNumStepReached {
                x,
                n_step: max_steps,
            });
        }
        if 0.1 * h.abs() <= x.abs() * UROUND {
            break 'integrate Err(IntegrationError::StepSizeUnderflow { x });
        }
        attempts += 1;
        let xph = x + h;
        starting_values(&mut wk, first, h / hold);
        let newt = match newton(
            rhs,
            &mut wk,
            &dec,
            (x, h, &y),
            (fnewt, thet),
            &mut contraction,
            &mut stats,
        ) {
            Ok(newt) => newt,
            Err(failure) => {
                h *= match failure {
                    NewtonFailure::Slow(factor) => factor,
                    NewtonFailure::Failed => 0.5,
                };
                reject = true;
                last = false;
                need_jac = !fresh_jac;
                continue;
            }
        };
        let err = error_estimate(
            rhs,
            &mut wk,
            &dec,
            (x, h, &y, &dy),
            first || reject,
            &mut stats,
        );
        if !err.is_finite() {
            // the refined estimate's state left the domain
            h *= 0.5;
            reject = true;
            last = false;
            need_jac = !fresh_jac;
            continue;
        }
        let fac = SAFE.min(cfac / (newt + 2 * NIT) as f64);
        let mut quot = FACR.max(FACL.min(err.powf(0.25) / fac));
        let mut h_new = h / quot;
        if err >= 1.0 {
            reject = true;
            last = false;
            if first {
                h *= 0.1;
            } else {
                h = h_new;
            }
            if stats.accepted >= 1 {
                stats.rejected += 1;
            }
            need_jac = !fresh_jac;
            continue;
        }
        // The new state and its derivative; a new state outside the domain (a non-finite
        // derivative) rejects the step like a failed iteration.
        y_new.copy_from(&y);
        y_new += &wk.z[2];
        rhs.system(xph, &y_new, &mut dy_new);
        stats.evals += 1;
        if dy_new.iter().any(|v| !v.is_finite()) {
            h *= 0.5;
            reject = true;
            last = false;
            need_jac = !fresh_jac;
            continue;
        }
        first = false;
        stats.accepted += 1;
        // Gustafsson's predictive controller.
        if stats.accepted > 1 {
            let facgus = ((hacc / h) * (err * err / erracc).powf(0.25) / SAFE).clamp(FACR, FACL);
            quot = quot.max(facgus);
            h_new = h / quot;
        }
        hacc = h;
        erracc = err.max(1e-2);
        let x_old = x;
        hold = h;
        x = xph;
        // The collocation polynomial (Hairer's `cont`): the continuous output, and the next
        // step's starting values.
        let base = dense.coef.len();
        dense.coef.resize(base + 4 * n, 0.0);
        let rc = &mut dense.coef[base..];
        let [z1, z2, z3] = &wk.z;
        for i in 0..n {
            let c2 = (z2[i] - z3[i]) / k.c2m1;
            let ak = (z1[i] - z2[i]) / k.c1mc2;
            let acont3 = (ak - z1[i] / k.c1) / k.c2;
            let c3 = (ak - c2) / k.c1m1;
            let c4 = c3 - acont3;
            rc[i] = y_new[i];
            rc[n + i] = c2;
            rc[2 * n + i] = c3;
            rc[3 * n + i] = c4;
            wk.cont[0][i] = c2;
            wk.cont[1][i] = c3;
            wk.cont[2][i] = c4;
        }
        dense.x0.push(x_old);
        dense.x1.push(x);
        dense.h.push(h);
        y.copy_from(&y_new);
        dy.copy_from(&dy_new);
        set_scal(&mut wk.scal, &y);
        let stop = rhs.solout(x, &y, &dy);
        fresh_jac = false;
        if stop || last {
            break 'integrate Ok(stats);
        }
        h_new = h_new.min(duration);
        if reject {
            h_new = h_new.min(h);
        }
        reject = false;
        if x + h_new / QUOT1 - t1 >= 0.0 {
            h = t1 - x;
            last = true;
        } else {
            let qt = h_new / h;
            if contraction.theta <= thet && (QUOT1..=QUOT2).contains(&qt) {
                // the same step: the same Jacobian and decompositions (Hairer's label 30)
                decomposed = true;
                continue;
            }
            h = h_new;
        }
        need_jac = contraction.theta > thet;
    };
    let y_last = (stats.accepted > 0).then(|| y.as_slice().to_vec());
    (result, x, y_last, dense)
}

/// Jacobian reuse thresholds (Hairer's `thet`): keep J while Newton contracts at least this
/// fast. 0.001 (Hairer's default) when the Hessian is analytic; 0.1 (his advice for costly
/// Jacobians) when J costs 2·dim gradients.
const THET_ANALYTIC: f64 = 0.001;
const THET_DIFFERENCED: f64 = 0.1;

/// Newton's starting values: zero on the first step, else the previous step's collocation
/// polynomial extrapolated to the new stages (c3q = h/h_old).
fn starting_values(wk: &mut Work, first: bool, c3q: f64) {
    let k = &*CONSTANTS;
    if first {
        for v in wk.z.iter_mut().chain(wk.w.iter_mut()) {
            v.fill(0.0);
        }
        return;
    }
    let (c1q, c2q) = (k.c1 * c3q, k.c2 * c3q);
    let [c2, c3, c4] = &wk.cont;
    let ti = &k.ti;
    for i in 0..c2.len() {
        let (ak1, ak2, ak3) = (c2[i], c3[i], c4[i]);
        let at = |q: f64| q * (ak1 + (q - k.c2m1) * (ak2 + (q - k.c1m1) * ak3));
        let z = [at(c1q), at(c2q), at(c3q)];
        for s in 0..3 {
            wk.z[s][i] = z[s];
            wk.w[s][i] = ti[s][0] * z[0] + ti[s][1] * z[1] + ti[s][2] * z[2];
        }
    }
}

/// Simplified Newton iterations on the collocation equations (Hairer's loop 40): returns the
/// number of iterations, with z, w holding the solution.
fn newton(
    rhs: &Rhs,
    wk: &mut Work,
    dec: &Decomposed,
    (x, h, y): (f64, f64, &DVector<f64>),
    (fnewt, thet): (f64, f64),
    ct: &mut Contraction,
    stats: &mut StageStats,
) -> Result<u32, NewtonFailure> {
    let k = &*CONSTANTS;
    let n = y.len();
    let Work {
        z,
        w,
        fz,
        arg,
        cplx,
        scal,
        ..
    } = wk;
    let nodes = [k.c1, k.c2, 1.0];
    ct.faccon = ct.faccon.max(UROUND).powf(0.8);
    ct.theta = thet;
    let (mut dynold, mut thqold) = (0.0f64, 0.0f64);
    let mut newt = 0u32;
    loop {
        if newt >= NIT {
            return Err(NewtonFailure::Failed);
        }
        for s in 0..3 {
            arg.copy_from(y);
            *arg += &z[s];
            rhs.system(x + nodes[s] * h, arg, &mut fz[s]);
        }
        stats.evals += 3;
        let [f1, f2, f3] = fz;
        for i in 0..n {
            let (a1, a2, a3) = (f1[i], f2[i], f3[i]);
            let r = |s: usize| k.ti[s][0] * a1 + k.ti[s][1] * a2 + k.ti[s][2] * a3;
            let (r1, r2, r3) = (r(0), r(1), r(2));
            let (s2, s3) = (-w[1][i], -w[2][i]);
            f1[i] = r1 - w[0][i] * dec.fac1;
            f2[i] = r2 + s2 * dec.alphn - s3 * dec.betan;
            f3[i] = r3 + s3 * dec.alphn + s2 * dec.betan;
        }
        if f1
            .iter()
            .chain(f2.iter())
            .chain(f3.iter())
            .any(|v| !v.is_finite())
        {
            return Err(NewtonFailure::Failed);
        }
        dec.real.solve(f1.as_mut_slice());
        for i in 0..n {
            cplx[i] = Complex::new(f2[i], f3[i]);
        }
        dec.complex.solve(cplx.as_mut_slice());
        for i in 0..n {
            f2[i] = cplx[i].re;
            f3[i] = cplx[i].im;
        }
        newt += 1;
        let mut dyno = 0.0;
        for i in 0..n {
            let d = scal[i];
            dyno += (f1[i] / d).powi(2) + (f2[i] / d).powi(2) + (f3[i] / d).powi(2);
        }
        let dyno = (dyno / (3 * n) as f64).sqrt();
        if !dyno.is_finite() {
            return Err(NewtonFailure::Failed);
        }
        if newt > 1 && newt < NIT {
            let thq = dyno / dynold;
            ct.theta = if newt == 2 {
                thq
            } else {
                (thq * thqold).sqrt()
            };
            thqold = thq;
            if ct.theta < 0.99 {
                ct.faccon = ct.theta / (1.0 - ct.theta);
                let left = NIT - 1 - newt;
                let dyth = ct.faccon * dyno * ct.theta.powi(left as i32) / fnewt;
                if dyth >= 1.0 {
                    let qnewt = dyth.clamp(1e-4, 20.0);
                    return Err(NewtonFailure::Slow(
                        0.8 * qnewt.powf(-1.0 / (4.0 + left as f64)),
                    ));
                }
            } else {
                return Err(NewtonFailure::Failed);
            }
        }
        dynold = dyno.max(UROUND);
        let t = &k.t;
        for i in 0..n {
            let (a1, a2, a3) = (w[0][i] + f1[i], w[1][i] + f2[i], w[2][i] + f3[i]);
            w[0][i] = a1;
            w[1][i] = a2;
            w[2][i] = a3;
            z[0][i] = t[0][0] * a1 + t[0][1] * a2 + t[0][2] * a3;
            z[1][i] = t[1][0] * a1 + t[1][1] * a2 + t[1][2] * a3;
            z[2][i] = t[2][0] * a1 + a2;
        }
        if ct.faccon * dyno <= fnewt {
            return Ok(newt);
        }
    }
}

/// The embedded error estimate in the scaled RMS norm (Hairer's `estrad`):
/// e = (γ/h − J)⁻¹ [f(x, y) + Σ e_i z_i / h], and on a first or rejected step, when that
/// exceeds 1, once more e = (γ/h − J)⁻¹ [f(x, y + e) + Σ e_i z_i / h]. At least 1e-10.
fn error_estimate(
    rhs: &Rhs,
    wk: &mut Work,
    dec: &Decomposed,
    (x, h, y, dy): (f64, f64, &DVector<f64>, &DVector<f64>),
    refine: bool,
    stats: &mut StageStats,
) -> f64 {
    let k = &*CONSTANTS;
    let n = y.len();
    let hee = k.dd.map(|d| d / h);
    let Work {
        z,
        fz,
        arg,
        err,
        ez,
        scal,
        ..
    } = wk;
    for i in 0..n {
        ez[i] = hee[0] * z[0][i] + hee[1] * z[1][i] + hee[2] * z[2][i];
        err[i] = ez[i] + dy[i];
    }
    dec.real.solve(err.as_mut_slice());
    let norm = |e: &DVector<f64>| {
        let s: f64 = e
            .iter()
            .zip(scal.iter())
            .map(|(v, s)| (v / s).powi(2))
            .sum();
        (s / n as f64).sqrt().max(1e-10)
    };
    let e = norm(err);
    if e < 1.0 || !refine {
        return e;
    }
    arg.copy_from(y);
    *arg += &*err;
    let f1 = &mut fz[0];
    rhs.system(x, arg, f1);
    stats.evals += 1;
    for i in 0..n {
        err[i] = f1[i] + ez[i];
    }
    if err.iter().any(|v| !v.is_finite()) {
        return f64::NAN;
    }
    dec.real.solve(err.as_mut_slice());
    norm(err)
}

/// A first step from an explicit estimate (Hairer's `hinit` for order 5): one Euler probe of
/// h₀ = 0.01 ‖y‖/‖f‖ (10⁻⁶ when either vanishes on the tolerance scale), then
/// min(100 h₀, (0.01/max(‖f‖, ‖f′‖))^{1/5}).
fn initial_step(
    rhs: &Rhs,
    x: f64,
    y: &DVector<f64>,
    f0: &DVector<f64>,
    scal: &[f64],
    stats: &mut StageStats,
) -> f64 {
    let n = y.len() as f64;
    let rms = |v: &mut dyn Iterator<Item = f64>| (v.map(|e| e * e).sum::<f64>() / n).sqrt();
    let d0 = rms(&mut y.iter().zip(scal).map(|(v, s)| v / s));
    let d1 = rms(&mut f0.iter().zip(scal).map(|(v, s)| v / s));
    let h0 = if d0 < 1e-5 || d1 < 1e-5 {
        1e-6
    } else {
        0.01 * d0 / d1
    };
    let y1 = y + f0 * h0;
    let mut f1 = DVector::zeros(y.len());
    rhs.system(x + h0, &y1, &mut f1);
    stats.evals += 1;
    let d2 = rms(&mut f1
        .iter()
        .zip(f0.iter())
        .zip(scal)
        .map(|((a, b), s)| (a - b) / s))
        / h0;
    let der = d1.max(d2);
    let h1 = if der.is_nan() || der <= 1e-15 {
        (h0 * 1e-3).max(1e-6)
    } else {
        (0.01 / der).powf(0.2)
    };
    (100.0 * h0).min(h1)
}

mod lu;
#[cfg(test)]
mod tests;
