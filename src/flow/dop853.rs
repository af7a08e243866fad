//! Dormand–Prince 8(5,3) with its 7th-order continuous extension (Hairer's DOP853, as in
//! Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.10), for `solver.method = "dop853"`.
//!
//! `ode_solvers` ships DOP853's stepper but keeps its dense output private (it only samples it on
//! a fixed grid), and events must be located on the continuous output, not on a grid. This is
//! the same method with the same coefficients (`tableau.rs`, from Hairer's `dop853.f`), the
//! same error norm and step-size controller (`ode_solvers::controller::Controller` with Hairer's
//! DOP853 defaults: safety 0.9, β = 0, step ratio in [1/3, 6]) and the same initial-step
//! heuristic (repeated from a zero state, where its first probe is a placeholder: see
//! [`initial_step`]), and it keeps the continuous output of every accepted step (three extra
//! stages per step; in an events-only run only of the first step and of the steps that
//! bracket an event) so the events of [`super::FlowProblem`] are located on it.
//!
//! At the tight tolerances this crate uses (rtol 1e-10) an 8th-order method takes far fewer
//! steps than Dopri5: on the 19-dimensional Musat flow to its α₃ emergence, 52 steps (658
//! right-hand sides in an events-only run) against 236 (≈ 1430 with the dense output).

use super::solution::{DenseOutput, StageStats};
use super::{Handover, Rhs, StageRun, SwitchReason};
use crate::numerics::simd::{self, Kernel};
use nalgebra::allocator::Allocator;
use nalgebra::{DefaultAllocator, Dim, OVector, U1};
use ode_solvers::controller::Controller;
use ode_solvers::dop_shared::{IntegrationError, System};

mod tableau;

/// The stages with a nonzero coefficient, and the coefficients, of one Runge–Kutta row.
type Row = Vec<(usize, f64)>;

/// DOP853's coefficients, 0-based: stage i (0..16) is evaluated at x + c[i] h from
/// y + h Σ_j a[i] (j, a_ij); stages 0..12 make the step, stage 12 is f(x + h, y_new) (first same
/// as last), stages 13..16 only serve the continuous output.
struct Tableau {
    a: Vec<Row>,
    c: [f64; 16],
    /// The 8th-order weights (stages 0..12).
    b: Row,
    /// The 5th-order error estimator (stages 0..12).
    e: Row,
    /// The 3rd-order estimator: weights of stages 0, 8 and 11.
    bhh: [f64; 3],
    /// Continuous output: row r (= 4..8 of the interpolant's coefficients) over stages 0..16.
    d: [Row; 4],
}

/// Built once per process rather than for every stage run.
static TABLEAU: std::sync::LazyLock<Tableau> = std::sync::LazyLock::new(Tableau::new);

impl Tableau {
    fn new() -> Self {
        let nonzero =
            |v: Vec<(usize, f64)>| -> Row { v.into_iter().filter(|p| p.1 != 0.0).collect() };
        let a = (0..16)
            .map(|i| {
                if i == 0 {
                    Vec::new()
                } else {
                    nonzero(tableau::A[i - 1].iter().copied().enumerate().collect())
                }
            })
            .collect();
        let mut c = tableau::C;
        // The transcribed table leaves c₁₂ and c₁₃ at 0 (its systems are autonomous); both are 1.
        c[11] = 1.0;
        c[12] = 1.0;
        Tableau {
            a,
            c,
            b: nonzero(tableau::B.iter().copied().enumerate().collect()),
            e: nonzero(tableau::E[..12].iter().copied().enumerate().collect()),
            bhh: tableau::BHH,
            d: std::array::from_fn(|r| {
                nonzero(tableau::D[r].iter().copied().enumerate().collect())
            }),
        }
    }
}

/// The continuous output of one stage's accepted steps (of those that keep it, in an
/// events-only run): per step its start, length and the eight coefficient vectors of the
/// interpolant (Hairer's `contd8`).
pub(crate) struct Dop853Dense {
    dim: usize,
    x0: Vec<f64>,
    h: Vec<f64>,
    /// 8 · dim values per step.
    coef: Vec<f64>,
}

impl Dop853Dense {
    fn new(dim: usize) -> Self {
        Dop853Dense {
            dim,
            x0: Vec::new(),
            h: Vec::new(),
            coef: Vec::new(),
        }
    }
}

impl DenseOutput for Dop853Dense {
    fn evaluate(&self, t: f64) -> Option<Vec<f64>> {
        let (first, last) = (*self.x0.first()?, self.x0.len() - 1);
        let end = self.x0[last] + self.h[last];
        if !(first..=end).contains(&t) {
            return None;
        }
        let step = self.x0.partition_point(|&x| x <= t).saturating_sub(1);
        // an events-only run keeps some steps only: t must lie in the one found
        if t > self.x0[step] + self.h[step] {
            return None;
        }
        let s = (t - self.x0[step]) / self.h[step];
        let s1 = 1.0 - s;
        let n = self.dim;
        let r = &self.coef[8 * n * step..8 * n * (step + 1)];
        Some(
            (0..n)
                .map(|i| {
                    let rc = |k: usize| r[k * n + i];
                    let conpar = rc(4) + s * (rc(5) + s1 * (rc(6) + s * rc(7)));
                    rc(0) + s * (rc(1) + s1 * (rc(2) + s * (rc(3) + s1 * conpar)))
                })
                .collect(),
        )
    }
}

/// One stage's integration with DOP853 (see the module doc); the arguments are those of
/// `super::run_stage`. With `detect` (`method = "auto"`) it stops after the first accepted step
/// at which the problem has turned stiff ([`StiffnessMonitor`]) and says so in
/// [`StageRun::stiff`].
pub(super) fn run_stage<D: Dim>(
    rhs: &mut Rhs,
    (t0, t1, duration): (f64, f64, f64),
    y0: &[f64],
    (rtol, atol): (f64, f64),
    max_steps: u32,
    detect: bool,
) -> StageRun
where
    DefaultAllocator: Allocator<D>,
{
    let n = y0.len();
    let tb = &*TABLEAU;
    let zeros = || OVector::<f64, D>::zeros_generic(D::from_usize(n), U1);
    let mut k: Vec<OVector<f64, D>> = (0..16).map(|_| zeros()).collect();
    let mut y = OVector::<f64, D>::from_iterator_generic(D::from_usize(n), U1, y0.iter().copied());
    let mut y_stage = zeros();
    let mut y_new = zeros();
    let mut incr = vec![0.0; n];
    let mut e5 = vec![0.0; n];
    let mut dense = Dop853Dense::new(n);
    let mut stats = StageStats::default();
    let mut monitor = StiffnessMonitor::default();
    let mut stiff = None;
    let mut controller = Controller::new(0.125, 0.0, 6.0, 0.333, duration, 0.9, 1.0);
    let mut x = t0;
    let mut attempts = 0u32;

    // Stage 0 at the start, and the initial step (Hairer's `hinit` for order 8).
    rhs.system(x, &y, &mut k[0]);
    stats.evals += 1;
    let mut h = initial_step(rhs, x, &y, &k[0], (rtol, atol), duration, &mut stats);

    let result = 'integrate: {
        let mut last = false;
        loop {
            if attempts >= max_steps {
                break 'integrate Err(IntegrationError::MaxNumStepReached {
                    x,
                    n_step: max_steps,
                });
            }
            if 0.1 * h.abs() <= f64::EPSILON * x.abs() {
                break 'integrate Err(IntegrationError::StepSizeUnderflow { x });
            }
            if x + 1.01 * h - t1 > 0.0 {
                h = t1 - x;
                last = true;
            }
            attempts += 1;
            // Stages 1..12.
            for i in 1..12 {
                combine(&y, h, &tb.a[i], &k, y_stage.as_mut_slice());
                rhs.system(x + tb.c[i] * h, &y_stage, &mut k[i]);
            }
            stats.evals += 11;
            weighted_sum(&tb.b, &k, &mut incr);
            weighted_sum(&tb.e, &k, &mut e5);
            for ((yn, yi), inc) in y_new.as_mut_slice().iter_mut().zip(y.as_slice()).zip(&incr) {
                *yn = yi + h * inc;
            }
            // Stage 12 = f(x + h, y_new), the next step's stage 0, evaluated before the step is
            // accepted: a y_new outside the system's domain (a non-finite stage) must reject the
            // step, as Dopri5's error estimate (which uses this stage) does.
            rhs.system(x + h, &y_new, &mut k[12]);
            stats.evals += 1;
            let outside = k[12].as_slice().iter().any(|v| !v.is_finite());
            // Error: Hairer's mix of the 5th- and 3rd-order estimators.
            let (mut err, mut err2) = (0.0, 0.0);
            let (k0, k8, k11) = (k[0].as_slice(), k[8].as_slice(), k[11].as_slice());
            for (i, ((yi, yn), (e5, inc))) in y
                .as_slice()
                .iter()
                .zip(y_new.as_slice())
                .zip(e5.iter().zip(&incr))
                .enumerate()
            {
                let sk = atol + rtol * yi.abs().max(yn.abs());
                let e3 = inc - tb.bhh[0] * k0[i] - tb.bhh[1] * k8[i] - tb.bhh[2] * k11[i];
                err += (e5 / sk) * (e5 / sk);
                err2 += (e3 / sk) * (e3 / sk);
            }
            let mut deno = err + 0.01 * err2;
            if deno <= 0.0 {
                deno = 1.0;
            }
            let err = if outside {
                f64::NAN
            } else {
                h.abs() * err * (1.0 / (deno * n as f64)).sqrt()
            };
            let mut h_new = h;
            // A non-finite error (a stage left the domain) is rejected: NaN ≤ 1 is false and
            // the controller then shortens the step by its largest factor.
            if !controller.accept(err, h, &mut h_new) {
                if stats.accepted >= 1 {
                    stats.rejected += 1;
                }
                if detect && monitor.rejected() {
                    // the state is the last accepted one: hand over from here
                    stiff = Some(Handover {
                        reason: SwitchReason::Rejections,
                        t: x,
                        h_next: h_new,
                        explicit_steps: stats.accepted,
                    });
                    break 'integrate Ok(stats);
                }
                h = h_new;
                last = false;
                continue;
            }
            stats.accepted += 1;
            // Hairer's stiffness test (h·|λ| estimated from the last two stages, both at
            // x + h; `y_stage` still holds stage 11's argument) before the continuous output's
            // stages overwrite it.
            let stiff_now = detect && {
                let (mut num, mut den) = (0.0, 0.0);
                let (k11, k12) = (k[11].as_slice(), k[12].as_slice());
                for (i, (yn, ys)) in y_new.as_slice().iter().zip(y_stage.as_slice()).enumerate() {
                    num += (k12[i] - k11[i]) * (k12[i] - k11[i]);
                    den += (yn - ys) * (yn - ys);
                }
                monitor.accepted(den > 0.0 && h.abs() * (num / den).sqrt() > 6.1)
            };
            // The per-step checks first (divergence, event brackets, the stop rule): they read
            // only the new state and its derivative, and they decide whether this step keeps
            // its continuous output (an events-only run keeps it where events are located).
            let stop = rhs.solout(x + h, &y_new, &k[12]);
            if rhs.keep_dense() {
                // The three stages of the continuous output.
                for i in 13..16 {
                    combine(&y, h, &tb.a[i], &k, y_stage.as_mut_slice());
                    rhs.system(x + tb.c[i] * h, &y_stage, &mut k[i]);
                }
                stats.evals += 3;
                let base = dense.coef.len();
                dense.coef.resize(base + 8 * n, 0.0);
                let rc = &mut dense.coef[base..];
                let (ys, yn, k0, k12) = (
                    y.as_slice(),
                    y_new.as_slice(),
                    k[0].as_slice(),
                    k[12].as_slice(),
                );
                for i in 0..n {
                    let ydiff = yn[i] - ys[i];
                    let bspl = h * k0[i] - ydiff;
                    rc[i] = ys[i];
                    rc[n + i] = ydiff;
                    rc[2 * n + i] = bspl;
                    rc[3 * n + i] = ydiff - h * k12[i] - bspl;
                }
                for (r, row) in tb.d.iter().enumerate() {
                    let out = &mut rc[(4 + r) * n..(5 + r) * n];
                    weighted_sum(row, &k, out);
                    for v in out {
                        *v *= h;
                    }
                }
                dense.x0.push(x);
                dense.h.push(h);
            }
            let (first, rest) = k.split_at_mut(12);
            first[0].copy_from(&rest[0]);
            y.copy_from(&y_new);
            x += h;
            if stop || last {
                break 'integrate Ok(stats);
            }
            if stiff_now {
                stiff = Some(Handover {
                    reason: SwitchReason::StiffnessTest,
                    t: x,
                    h_next: h_new,
                    explicit_steps: stats.accepted,
                });
                break 'integrate Ok(stats);
            }
            h = h_new;
        }
    };
    let y_last = (stats.accepted > 0).then(|| y.as_slice().to_vec());
    StageRun {
        result,
        t_reached: x,
        y_last,
        dense: Box::new(dense),
        stiff,
    }
}

/// When `auto` leaves DOP853 for Radau5: Hairer's stiffness test, or steps that keep being
/// rejected.
///
/// Hairer's test (`dop853.f`) estimates h·|λ| along the dominant eigendirection from the two
/// stages at x + h, h ‖f(y₁) − f(ŷ)‖ / ‖y₁ − ŷ‖, and counts the accepted steps where it exceeds
/// 6.1 (the edge of DOP853's stability region on the negative real axis, where a step size is
/// set by stability rather than accuracy); 6 negative tests in a row reset the count and 15
/// positive ones declare the problem stiff. Hairer tests only from every 1000th step on, to
/// save the arithmetic; here it runs on every step (it costs no right-hand side).
///
/// The second sign is a step size that the controller keeps pushing past the stability
/// boundary: at least a third of the last 60 attempts rejected.
#[derive(Debug, Default)]
struct StiffnessMonitor {
    positive: u32,
    negative: u32,
    /// The last 60 attempts as bits (1 = rejected), newest lowest, and how many were made.
    history: u64,
    attempts: u32,
}

impl StiffnessMonitor {
    const WINDOW: u32 = 60;

    /// An accepted step with its stiffness test; returns whether the problem is stiff.
    fn accepted(&mut self, at_stability_edge: bool) -> bool {
        self.push(false);
        if at_stability_edge {
            self.negative = 0;
            self.positive += 1;
            self.positive >= 15
        } else {
            self.negative += 1;
            if self.negative >= 6 {
                self.positive = 0;
            }
            false
        }
    }

    /// A rejected step; returns whether rejections have become the rule.
    fn rejected(&mut self) -> bool {
        self.push(true);
        self.attempts >= Self::WINDOW
            && 3 * (self.history & ((1u64 << Self::WINDOW) - 1)).count_ones() >= Self::WINDOW
    }

    fn push(&mut self, rejected: bool) {
        self.history = (self.history << 1) | u64::from(rejected);
        self.attempts = self.attempts.saturating_add(1);
    }
}

/// out = y + h Σ_j a_j k_j over one row.
#[inline(always)]
fn combine<D: Dim>(y: &OVector<f64, D>, h: f64, row: &Row, k: &[OVector<f64, D>], out: &mut [f64])
where
    DefaultAllocator: Allocator<D>,
{
    let y = y.as_slice();
    blocked(row, k, out, |i, a| y[i] + h * a);
}

/// acc = Σ_j w_j k_j over one row.
#[inline(always)]
fn weighted_sum<D: Dim>(row: &Row, k: &[OVector<f64, D>], acc: &mut [f64])
where
    DefaultAllocator: Allocator<D>,
{
    blocked(row, k, acc, |_, a| a);
}

/// Coordinates per block of [`blocked`]: its partial sums stay in registers.
const BLOCK: usize = 4;

/// out_i = finish(i, Σ_j w_j k_j,i) over one row, the sum in the row's order for every
/// coordinate (w₀k₀ + w₁k₁ + …, the same operations as one pass over a scratch vector per
/// stage), in blocks of [`BLOCK`] coordinates whose partial sums stay in registers. The last
/// block ends at the last coordinate and may overlap the one before it (an overlapped
/// coordinate gets the same value twice), so there is no scalar tail for n ≥ [`BLOCK`].
/// Compiled for AVX2 when the CPU has it ([`simd::dispatch`]: no FMA, the same arithmetic and
/// bits, one register per block).
#[inline(always)]
fn blocked<D: Dim>(
    row: &Row,
    k: &[OVector<f64, D>],
    out: &mut [f64],
    finish: impl Fn(usize, f64) -> f64,
) where
    DefaultAllocator: Allocator<D>,
{
    simd::dispatch(Blocked, (row, k, out, finish))
}

/// [`blocked_plain`] as a [`Kernel`] for [`simd::dispatch`].
struct Blocked;

impl<'a, D: Dim, F: Fn(usize, f64) -> f64>
    Kernel<(&'a Row, &'a [OVector<f64, D>], &'a mut [f64], F)> for Blocked
where
    DefaultAllocator: Allocator<D>,
{
    type Output = ();
    #[inline(always)]
    fn run(self, (row, k, out, finish): (&'a Row, &'a [OVector<f64, D>], &'a mut [f64], F)) {
        blocked_plain(row, k, out, finish)
    }
}

/// The body of [`blocked`], inlined into both builds.
#[inline(always)]
fn blocked_plain<D: Dim>(
    row: &Row,
    k: &[OVector<f64, D>],
    out: &mut [f64],
    finish: impl Fn(usize, f64) -> f64,
) where
    DefaultAllocator: Allocator<D>,
{
    let (&(j0, w0), rest) = row.split_first().expect("a row has a nonzero weight");
    let n = out.len();
    if n < BLOCK {
        for (i, o) in out.iter_mut().enumerate() {
            let mut a = w0 * k[j0][i];
            for &(j, w) in rest {
                a += w * k[j][i];
            }
            *o = finish(i, a);
        }
        return;
    }
    for b in (0..n - BLOCK).step_by(BLOCK) {
        block_at(b, (j0, w0), rest, k, out, &finish);
    }
    block_at(n - BLOCK, (j0, w0), rest, k, out, &finish);
}

/// One block of [`blocked`]: coordinates b..b + [`BLOCK`].
#[inline(always)]
fn block_at<D: Dim>(
    b: usize,
    (j0, w0): (usize, f64),
    rest: &[(usize, f64)],
    k: &[OVector<f64, D>],
    out: &mut [f64],
    finish: &impl Fn(usize, f64) -> f64,
) where
    DefaultAllocator: Allocator<D>,
{
    let k0 = &k[j0].as_slice()[b..b + BLOCK];
    let mut a: [f64; BLOCK] = std::array::from_fn(|l| w0 * k0[l]);
    for &(j, w) in rest {
        let kj = &k[j].as_slice()[b..b + BLOCK];
        for l in 0..BLOCK {
            a[l] += w * kj[l];
        }
    }
    for (l, o) in out[b..b + BLOCK].iter_mut().enumerate() {
        *o = finish(b + l, a[l]);
    }
}

/// Hairer's initial step for an order-8 method (as in `ode_solvers`' DOP853), at most `h_max`.
///
/// Hairer's rule probes the flow with one explicit Euler step of h₀ = 0.01 ‖y‖/‖f‖, or of
/// h₀ = 10⁻⁶ when y or f vanishes on the tolerance scale, and takes min(100 h₀, h₁) with h₁ from
/// the derivatives it sees. At a zero initial state (the reduced flows start at θ = 0) the
/// 10⁻⁶ is a placeholder, and the cap 100 h₀ = 10⁻⁴ then sets the first step: the controller
/// needs four more steps (×6 each) to reach the flow's own scale. So in that case only, while
/// the cap is what binds, the probe is repeated at the capped step (one right-hand side each,
/// at most [`PROBES`] times) and the estimate is taken from the longest probe. Every other
/// start gets Hairer's step exactly.
fn initial_step<D: Dim>(
    rhs: &Rhs,
    x: f64,
    y: &OVector<f64, D>,
    f0: &OVector<f64, D>,
    (rtol, atol): (f64, f64),
    h_max: f64,
    stats: &mut StageStats,
) -> f64
where
    DefaultAllocator: Allocator<D>,
{
    let (mut d0, mut d1) = (0.0, 0.0);
    for (yi, fi) in y.iter().zip(f0.iter()) {
        let sk = atol + rtol * yi.abs();
        d0 += (yi / sk) * (yi / sk);
        d1 += (fi / sk) * (fi / sk);
    }
    let placeholder = d0 < 1e-10 || d1 < 1e-10;
    let mut h0 = if placeholder {
        1e-6
    } else {
        0.01 * (d0 / d1).sqrt()
    };
    h0 = h0.min(h_max);
    let mut f1 = f0.clone();
    let mut probes = 0;
    loop {
        let y1 = y + f0 * h0;
        rhs.system(x + h0, &y1, &mut f1);
        stats.evals += 1;
        probes += 1;
        let mut d2 = 0.0;
        for ((yi, a), b) in y.iter().zip(f0.iter()).zip(f1.iter()) {
            let sk = atol + rtol * yi.abs();
            d2 += ((b - a) / sk) * ((b - a) / sk);
        }
        let d2 = d2.sqrt() / h0;
        let der = d1.sqrt().max(d2);
        let h1 = if der <= 1e-15 {
            1e-6_f64.max(h0 * 1e-3)
        } else {
            (0.01 / der).powf(0.125)
        };
        let h = (100.0 * h0).min(h1).min(h_max);
        if !placeholder || h < 100.0 * h0 || h >= h_max || probes >= PROBES {
            return h;
        }
        h0 = h;
    }
}

/// The most probes of [`initial_step`] from a zero state (10⁻⁶ · 100³ = 1).
const PROBES: u32 = 4;

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::Dyn;

    /// The blocked sums (overlapping last block, scalar path below [`BLOCK`], AVX2 build)
    /// give the bits of the plain per-coordinate sum in the row's order, for every size
    /// around the block boundaries and every row of the tableau.
    #[test]
    fn blocked_sums_are_the_plain_ordered_sums_bit_for_bit() {
        let tb = Tableau::new();
        for n in 1..=13 {
            let k: Vec<OVector<f64, Dyn>> = (0..16)
                .map(|j| {
                    OVector::<f64, Dyn>::from_iterator(
                        n,
                        (0..n).map(|i| {
                            ((7 * j + 3 * i) as f64 * 0.37).sin() * 1e3f64.powi(j as i32 % 3)
                        }),
                    )
                })
                .collect();
            let y = OVector::<f64, Dyn>::from_iterator(n, (0..n).map(|i| 1.0 / (i as f64 + 0.3)));
            let h = 0.731;
            let rows = tb.a.iter().chain([&tb.b, &tb.e]).chain(&tb.d);
            for row in rows.filter(|r| !r.is_empty()) {
                let plain: Vec<f64> = (0..n)
                    .map(|i| {
                        let mut a = row[0].1 * k[row[0].0][i];
                        for &(j, w) in &row[1..] {
                            a += w * k[j][i];
                        }
                        a
                    })
                    .collect();
                let mut out = vec![f64::NAN; n];
                weighted_sum(row, &k, &mut out);
                assert_eq!(bits(&out), bits(&plain), "n = {n}");
                let mut plain_build = vec![f64::NAN; n];
                blocked_plain(row, &k, &mut plain_build, |_, a| a);
                assert_eq!(bits(&plain_build), bits(&plain), "n = {n}");
                combine(&y, h, row, &k, &mut out);
                let expect: Vec<f64> = plain
                    .iter()
                    .zip(y.iter())
                    .map(|(a, yi)| yi + h * a)
                    .collect();
                assert_eq!(bits(&out), bits(&expect), "n = {n}");
            }
        }
    }

    fn bits(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }
}
