//! Radau5 against exact solutions and reference values of stiff problems, its Jacobian against
//! closed forms, and its events against DOP853's on the Musat flows.

#![allow(clippy::needless_range_loop)]

use crate::flow::{
    EventSpec, FlowError, FlowProblem, GradientFlow, Method, Quantity, StopReason, with_rhs,
};
use crate::systems::musat::data::LabelPosition;
use crate::systems::musat::musat3::{self, Musat3, Query};
use crate::systems::musat::musat19::Musat19;
use crate::systems::musat::subspace::{ALPHA3, BETA2, GAMMA3};
use nalgebra::{DMatrix, DVector};

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

/// L = ½ θᵀAθ with A = R diag(λ₁, λ₂) Rᵀ (R a rotation by φ): θ(t) = R e^{−Λt} Rᵀ θ(0). With
/// `analytic`, the Hessian A is given in closed form.
struct Linear {
    a: [[f64; 2]; 2],
    lambda: [f64; 2],
    rot: [[f64; 2]; 2],
    analytic: bool,
    names: Vec<String>,
}

impl Linear {
    fn new(lambda: [f64; 2], phi: f64, analytic: bool) -> Self {
        let (c, s) = (phi.cos(), phi.sin());
        let rot = [[c, -s], [s, c]];
        let mut a = [[0.0; 2]; 2];
        for (i, row) in a.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (0..2).map(|k| rot[i][k] * lambda[k] * rot[j][k]).sum();
            }
        }
        Linear {
            a,
            lambda,
            rot,
            analytic,
            names: vec!["x".into(), "y".into()],
        }
    }
    fn exact(&self, th0: &[f64], t: f64) -> [f64; 2] {
        // u = Rᵀθ(0), decayed, rotated back
        let u: Vec<f64> = (0..2)
            .map(|k| {
                (self.rot[0][k] * th0[0] + self.rot[1][k] * th0[1]) * (-self.lambda[k] * t).exp()
            })
            .collect();
        [0, 1].map(|i| self.rot[i][0] * u[0] + self.rot[i][1] * u[1])
    }
}

impl GradientFlow for Linear {
    fn names(&self) -> &[String] {
        &self.names
    }
    fn loss(&self, th: &[f64]) -> f64 {
        let a = &self.a;
        0.5 * (a[0][0] * th[0] * th[0] + 2.0 * a[0][1] * th[0] * th[1] + a[1][1] * th[1] * th[1])
    }
    fn grad(&self, th: &[f64], out: &mut [f64]) {
        for i in 0..2 {
            out[i] = self.a[i][0] * th[0] + self.a[i][1] * th[1];
        }
    }
    fn hessian(&self, _th: &[f64], out: &mut [f64]) -> bool {
        if self.analytic {
            out.copy_from_slice(&[self.a[0][0], self.a[0][1], self.a[1][0], self.a[1][1]]);
        }
        self.analytic
    }
}

/// A vector field f written as a "gradient" −f (the integrators only see −∇L), for the classic
/// stiff test problems, which are not gradient flows.
struct Field {
    f: fn(&[f64], &mut [f64]),
    names: Vec<String>,
}

impl Field {
    fn new(f: fn(&[f64], &mut [f64]), dim: usize) -> Self {
        Field {
            f,
            names: (0..dim).map(|i| format!("y{}", i + 1)).collect(),
        }
    }
}

impl GradientFlow for Field {
    fn names(&self) -> &[String] {
        &self.names
    }
    fn loss(&self, _th: &[f64]) -> f64 {
        0.0
    }
    fn grad(&self, th: &[f64], out: &mut [f64]) {
        (self.f)(th, out);
        for o in out.iter_mut() {
            *o = -*o;
        }
    }
}

/// Van der Pol in Hairer's scaling, ε = 10⁻⁶ (μ = 1000): y₁' = y₂, y₂' = ((1 − y₁²)y₂ − y₁)/ε.
fn van_der_pol(y: &[f64], f: &mut [f64]) {
    f[0] = y[1];
    f[1] = ((1.0 - y[0] * y[0]) * y[1] - y[0]) / 1e-6;
}

/// Robertson's chemical kinetics.
fn robertson(y: &[f64], f: &mut [f64]) {
    let (a, b) = (0.04 * y[0], 1e4 * y[1] * y[2]);
    let c = 3e7 * y[1] * y[1];
    f[0] = -a + b;
    f[1] = a - b - c;
    f[2] = c;
}

/// Rosenbrock's L = (1 − x)² + 10(y − x²)², with its Hessian in closed form on request.
struct Rosenbrock {
    analytic: bool,
    names: Vec<String>,
}

impl Rosenbrock {
    fn new(analytic: bool) -> Self {
        Rosenbrock {
            analytic,
            names: vec!["x".into(), "y".into()],
        }
    }
    fn exact_hessian(th: &[f64]) -> [f64; 4] {
        let (x, y) = (th[0], th[1]);
        [
            2.0 - 40.0 * (y - x * x) + 80.0 * x * x,
            -40.0 * x,
            -40.0 * x,
            20.0,
        ]
    }
}

impl GradientFlow for Rosenbrock {
    fn names(&self) -> &[String] {
        &self.names
    }
    fn loss(&self, th: &[f64]) -> f64 {
        (1.0 - th[0]).powi(2) + 10.0 * (th[1] - th[0] * th[0]).powi(2)
    }
    fn grad(&self, th: &[f64], out: &mut [f64]) {
        let r = th[1] - th[0] * th[0];
        out[0] = -2.0 * (1.0 - th[0]) - 40.0 * th[0] * r;
        out[1] = 20.0 * r;
    }
    fn hessian(&self, th: &[f64], out: &mut [f64]) -> bool {
        if self.analytic {
            out.copy_from_slice(&Self::exact_hessian(th));
        }
        self.analytic
    }
}

/// J = ∂f/∂y at the solver state y, as `Rhs::jacobian` forms it, and whether it was analytic.
fn jacobian(
    sys: &dyn GradientFlow,
    signs: &[f64],
    mask: &[f64],
    y: &[f64],
) -> (DMatrix<f64>, bool) {
    let n = y.len();
    with_rhs(sys, signs.to_vec(), mask.to_vec(), |rhs| {
        let y = DVector::from_column_slice(y);
        let mut f0 = DVector::zeros(n);
        ode_solvers::System::system(&*rhs, 0.0, &y, &mut f0);
        let mut jac = DMatrix::zeros(n, n);
        let mut work = crate::flow::jacobian::Work::new(n);
        let analytic = rhs.jacobian(0.0, &y, &f0, &mut jac, &mut work);
        (jac, analytic)
    })
}

#[test]
fn differenced_jacobian_matches_the_closed_form_hessian() {
    // J = −mask ⊙ H on linear coordinates; with log coordinates (y_k = ln|θ_k|) the chain rule
    // of `jacobian.rs`. The differenced J (2·dim gradients) must match the analytic one (the
    // Hessian hook) and, on linear coordinates, −H itself.
    let th = [0.7, -0.4];
    let h = Rosenbrock::exact_hessian(&th);
    let (fd, analytic) = jacobian(&Rosenbrock::new(false), &[0.0, 0.0], &[1.0, 1.0], &th);
    assert!(!analytic);
    for i in 0..2 {
        for j in 0..2 {
            let exact = -h[2 * i + j];
            assert!(
                (fd[(i, j)] - exact).abs() < 1e-7 * exact.abs().max(1.0),
                "J[{i}][{j}] {} vs {exact}",
                fd[(i, j)]
            );
        }
    }
    // log coordinate 0 (sign −1 as θ₀ < 0 there), coordinate 1 frozen
    let th: [f64; 2] = [-0.3, 1.2];
    let y = [th[0].abs().ln(), th[1]];
    for (signs, mask) in [
        ([-1.0, 0.0], [1.0, 1.0]),
        ([-1.0, 0.0], [1.0, 0.0]),
        ([0.0, 0.0], [0.0, 1.0]),
    ] {
        let yy = if signs[0] != 0.0 { y } else { th };
        let (fd, a1) = jacobian(&Rosenbrock::new(false), &signs, &mask, &yy);
        let (an, a2) = jacobian(&Rosenbrock::new(true), &signs, &mask, &yy);
        assert!(!a1 && a2);
        for i in 0..2 {
            for j in 0..2 {
                let (d, a) = (fd[(i, j)], an[(i, j)]);
                assert!(
                    (d - a).abs() < 1e-7 * a.abs().max(1.0),
                    "{signs:?} {mask:?} J[{i}][{j}] {d} vs {a}"
                );
            }
        }
        if mask[1] == 0.0 {
            assert_eq!(fd[(1, 0)], 0.0);
            assert_eq!(an[(1, 1)], 0.0);
        }
    }
}

#[test]
fn radau5_solves_a_linear_system_with_eigenvalues_minus_one_and_minus_a_million() {
    // y' = −A y, spectrum {−1, −10⁶}, rotated so both coordinates see both modes. DOP853's
    // step is held at ~ 6/10⁶ by stability (≈ 1.7·10⁶ steps to t = 10); Radau5's follows the
    // slow mode's accuracy.
    let th0 = [1.0, 1.0];
    for analytic in [false, true] {
        let sys = Linear::new([1.0, 1e6], 0.3, analytic);
        let sol = FlowProblem::builder(&sys)
            .init(&th0)
            .t_max(10.0)
            .method(Method::Radau5)
            .tolerances(1e-6, 1e-9)
            .build()
            .unwrap()
            .solve()
            .unwrap();
        assert_eq!(sol.stop, StopReason::Horizon);
        assert!(sol.stats.steps < 200, "{:?}", sol.stats);
        assert!(sol.stats.jacobians >= 1 && sol.stats.decompositions >= 1);
        // a linear problem's Jacobian never changes; Newton converges in one iteration
        assert!(sol.stats.jacobians < 10, "{:?}", sol.stats);
        for k in 1..=100 {
            let t = 0.1 * k as f64;
            let (got, exact) = (sol.state_at(t).unwrap(), sys.exact(&th0, t));
            for i in 0..2 {
                let err = (got[i] - exact[i]).abs();
                assert!(err < 1e-5 * exact[i].abs() + 1e-8, "t={t} i={i}: {err}");
            }
        }
        let end = sol.state_at(10.0).unwrap();
        assert!(rel(end[0], sys.exact(&th0, 10.0)[0]) < 1e-4);
    }
    // DOP853 runs out of a step budget 100 times Radau5's steps long before t = 10.
    let sys = Linear::new([1.0, 1e6], 0.3, false);
    let explicit = FlowProblem::builder(&sys)
        .init(&th0)
        .t_max(10.0)
        .method(Method::Dop853)
        .tolerances(1e-6, 1e-9)
        .max_steps(20_000)
        .build()
        .unwrap()
        .solve();
    assert!(
        matches!(explicit, Err(FlowError::MaxSteps { t, .. }) if t < 0.2),
        "{:?}",
        explicit.err()
    );
}

#[test]
fn radau5_dense_output_is_accurate_between_the_step_ends() {
    // The collocation polynomial of each step: at rtol 10⁻⁶ the steps are long (O(0.5) on the
    // slow mode), so the 1000 sample points fall inside steps, not on their ends.
    let th0 = [1.0, -2.0];
    let sys = Linear::new([1.0, 1e3], 1.1, true);
    let sol = FlowProblem::builder(&sys)
        .init(&th0)
        .t_max(5.0)
        .method(Method::Radau5)
        .tolerances(1e-6, 1e-10)
        .build()
        .unwrap()
        .solve()
        .unwrap();
    assert!(sol.stats.steps < 100, "{:?}", sol.stats);
    let mut worst: f64 = 0.0;
    for k in 0..=1000 {
        let t = 5.0 * k as f64 / 1000.0;
        let (got, exact) = (sol.state_at(t).unwrap(), sys.exact(&th0, t));
        for i in 0..2 {
            worst = worst.max((got[i] - exact[i]).abs() / (1e-6 * exact[i].abs() + 1e-10));
        }
    }
    // within a few tolerances (the interpolant is one order below the step ends)
    assert!(worst < 20.0, "worst error {worst} tolerances");
}

#[test]
fn radau5_collocation_polynomials_meet_at_the_step_ends() {
    // Each step's polynomial passes through the step's start and end states, so neighbouring
    // steps' polynomials agree at their common end (to rounding), and at the end of the last
    // step it is the returned state.
    let sys = Field::new(van_der_pol, 2);
    with_rhs(&sys, vec![0.0; 2], vec![1.0; 2], |rhs| {
        let (result, t_end, y_last, dense) = super::integrate(
            rhs,
            (0.0, 0.5, 0.5),
            &[2.0, 0.0],
            (1e-6, 1e-6),
            10_000,
            None,
        );
        let stats = result.unwrap();
        assert!(stats.accepted > 20, "{stats:?}");
        assert_eq!(dense.x0.len(), stats.accepted as usize);
        assert_eq!(t_end, 0.5);
        let start = dense.polynomial(0, 0.0);
        assert!(
            (start[0] - 2.0).abs() < 1e-12 && start[1].abs() < 1e-12,
            "{start:?}"
        );
        for k in 1..dense.x0.len() {
            assert_eq!(dense.x0[k], dense.x1[k - 1]);
            let (left, right) = (
                dense.polynomial(k - 1, dense.x1[k - 1]),
                dense.polynomial(k, dense.x0[k]),
            );
            for i in 0..2 {
                let scale = 1e-12 * (1.0 + left[i].abs());
                assert!(
                    (left[i] - right[i]).abs() < scale,
                    "step {k} i={i}: {left:?} {right:?}"
                );
            }
        }
        let last = dense.polynomial(dense.x0.len() - 1, t_end);
        assert_eq!(Some(last), y_last);
    });
}

#[test]
fn radau5_dense_output_follows_the_logistic_curve() {
    // Nonlinear, with a closed form: θ̇ = θ(1 − θ).
    let sys = Field::new(|y, f| f[0] = y[0] * (1.0 - y[0]), 1);
    let th0: f64 = 1e-3;
    let r = (1.0 - th0) / th0;
    let sol = FlowProblem::builder(&sys)
        .init(&[th0])
        .t_max(20.0)
        .method(Method::Radau5)
        .tolerances(1e-9, 1e-12)
        .build()
        .unwrap()
        .solve()
        .unwrap();
    for k in 0..=2000 {
        let t = 0.01 * k as f64;
        let exact = 1.0 / (1.0 + r * (-t).exp());
        let got = sol.state_at(t).unwrap()[0];
        assert!((got - exact).abs() < 1e-7, "t={t}: {got} vs {exact}");
    }
}

#[test]
fn radau5_integrates_van_der_pol_at_mu_1000() {
    // Hairer's vdpol (ε = 10⁻⁶) on [0, 2] from (2, 0); the reference values are those of the
    // IVP test set (Mazzia & Magherini).
    let sys = Field::new(van_der_pol, 2);
    let sol = FlowProblem::builder(&sys)
        .init(&[2.0, 0.0])
        .t_max(2.0)
        .method(Method::Radau5)
        .tolerances(1e-8, 1e-8)
        .build()
        .unwrap()
        .solve()
        .unwrap();
    assert_eq!(sol.stop, StopReason::Horizon);
    let y = sol.state_at(2.0).unwrap();
    assert!(rel(y[0], 1.706_167_732_170_483) < 1e-5, "{y:?}");
    assert!(rel(y[1], -0.892_809_701_024_797_5) < 1e-4, "{y:?}");
    assert!(sol.stats.steps < 2000, "{:?}", sol.stats);
}

#[test]
fn radau5_integrates_robertson() {
    // Robertson's kinetics to t = 40 (Hairer & Wanner's reference values) and on to 10⁵,
    // where mass is still conserved and y₂ stays positive and tiny.
    let sys = Field::new(robertson, 3);
    let sol = FlowProblem::builder(&sys)
        .init(&[1.0, 0.0, 0.0])
        .t_max(1e5)
        .method(Method::Radau5)
        .tolerances(1e-8, 1e-14)
        .build()
        .unwrap()
        .solve()
        .unwrap();
    assert_eq!(sol.stop, StopReason::Horizon);
    let y = sol.state_at(40.0).unwrap();
    assert!(rel(y[0], 0.715_827_068_7) < 1e-6, "{y:?}");
    assert!(rel(y[1], 9.185_534_764e-6) < 1e-4, "{y:?}");
    assert!(rel(y[2], 0.284_163_745_7) < 1e-6, "{y:?}");
    let end = sol.state_at(1e5).unwrap();
    assert!((end.iter().sum::<f64>() - 1.0).abs() < 1e-8, "{end:?}");
    assert!(end[1] > 0.0 && end[1] < 1e-6 && end[0] < 0.05, "{end:?}");
    assert!(sol.stats.steps < 500, "{:?}", sol.stats);
}

/// Event times of one flow by DOP853 and Radau5 (both at rtol 10⁻¹⁰), every coordinate's
/// threshold crossings plus the peak of α₃'s rate.
fn event_times(sys: &dyn GradientFlow, coords: [usize; 3], t_max: f64) -> [Vec<(String, f64)>; 2] {
    [Method::Dop853, Method::Radau5].map(|method| {
        let sol = FlowProblem::builder(sys)
            .t_max(t_max)
            .method(method)
            .tolerances(1e-10, 1e-12)
            .events(coords.iter().flat_map(|&k| {
                [0.1, 0.5].map(|th| EventSpec::rises(format!("{k}@{th}"), Quantity::Coord(k), th))
            }))
            .event(EventSpec::peak("peak", Quantity::Rate(coords[0])))
            .stop_after_events(0.5)
            .build()
            .unwrap()
            .solve()
            .unwrap();
        assert_eq!(sol.stop, StopReason::EventsFound, "{method:?}");
        sol.events()
            .iter()
            .map(|e| (e.name.clone(), e.t.expect("every event is found")))
            .collect()
    })
}

fn assert_same_events([a, b]: &[Vec<(String, f64)>; 2], what: &str) {
    assert_eq!(a.len(), 7, "{what}");
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        assert!(
            rel(*tb, *ta) < 1e-6,
            "{what} {na}: radau5 {tb} vs dop853 {ta}"
        );
    }
}

#[test]
fn radau5_events_agree_with_dop853_on_musat3() {
    for query in [Query::Last, Query::Uniform] {
        let sys = Musat3::new(16, query, 1.0);
        let times = event_times(&sys, [musat3::ALPHA3, musat3::BETA2, musat3::GAMMA3], 1e5);
        assert_same_events(&times, &format!("musat3 {query:?}"));
    }
}

#[test]
fn radau5_events_agree_with_dop853_on_musat19() {
    let sys = Musat19::new(16, Query::Last, LabelPosition::Rotated, 1.0);
    let times = event_times(&sys, [ALPHA3, BETA2, GAMMA3], 1e5);
    assert_same_events(&times, "musat19 last");
}

#[test]
fn auto_switches_to_radau5_where_dop853_turns_stiff_and_only_there() {
    // Stiff: DOP853's stiffness test fires within its first hundred steps (once the fast mode
    // has decayed and the step sits at the stability limit), and Radau5 finishes the run.
    let th0 = [1.0, 1.0];
    let sys = Linear::new([1.0, 1e6], 0.3, false);
    let sol = FlowProblem::builder(&sys)
        .init(&th0)
        .t_max(10.0)
        .method(Method::Auto)
        .tolerances(1e-6, 1e-9)
        .build()
        .unwrap()
        .solve()
        .unwrap();
    let switch = sol.stats.switch.expect("auto switches on a stiff flow");
    assert!(switch.t < 1e-3 && switch.explicit_steps < 200, "{switch:?}");
    assert!(sol.stats.steps < 400, "{:?}", sol.stats);
    for k in 0..=100 {
        // both sides of the switch, from the spliced continuous output
        let t = (1e-5 * k as f64 + 0.1 * k as f64).min(10.0);
        let (got, exact) = (
            sol.state_at(t)
                .unwrap_or_else(|| panic!("t={t} {switch:?} {:?}", sol.stats)),
            sys.exact(&th0, t),
        );
        for i in 0..2 {
            let err = (got[i] - exact[i]).abs();
            assert!(err < 1e-5 * exact[i].abs() + 1e-8, "t={t} i={i}: {err}");
        }
    }
    // Not stiff: `auto` is DOP853, bit for bit, and says nothing of a switch.
    let sys = Field::new(|y, f| f[0] = y[0] * (1.0 - y[0]), 1);
    let run = |method| {
        FlowProblem::builder(&sys)
            .init(&[1e-3])
            .t_max(20.0)
            .method(method)
            .event(EventSpec::peak("peak", Quantity::Rate(0)))
            .build()
            .unwrap()
            .solve()
            .unwrap()
    };
    let (auto, dop) = (run(Method::Auto), run(Method::Dop853));
    assert_eq!(auto.stats, dop.stats);
    assert!(auto.stats.switch.is_none());
    assert_eq!(auto.events(), dop.events());
    assert_eq!(auto.state_at(7.3), dop.state_at(7.3));
    assert_eq!(
        serde_json::to_string(&auto.summary()).unwrap(),
        serde_json::to_string(&dop.summary()).unwrap()
    );
}
