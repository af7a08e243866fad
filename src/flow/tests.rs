//! Flow-layer tests against exact solutions (diffsol style: the answer ships with the problem).

use super::*;
use crate::numerics::testing::rel_err;

/// L = ½ Σ λ_i (θ_i − c_i)²: θ_i(t) = c_i + (θ_i(0) − c_i) e^{−λ_i t}.
struct Quadratic {
    lambda: Vec<f64>,
    center: Vec<f64>,
    names: Vec<String>,
}

impl Quadratic {
    fn new(lambda: &[f64], center: &[f64]) -> Self {
        Quadratic {
            lambda: lambda.to_vec(),
            center: center.to_vec(),
            names: (0..lambda.len()).map(|i| format!("x{i}")).collect(),
        }
    }
    fn exact(&self, theta0: &[f64], t: f64) -> Vec<f64> {
        (0..theta0.len())
            .map(|i| self.center[i] + (theta0[i] - self.center[i]) * (-self.lambda[i] * t).exp())
            .collect()
    }
}

impl GradientFlow for Quadratic {
    fn names(&self) -> &[String] {
        &self.names
    }
    fn loss(&self, th: &[f64]) -> f64 {
        (0..th.len())
            .map(|i| 0.5 * self.lambda[i] * (th[i] - self.center[i]).powi(2))
            .sum()
    }
    fn grad(&self, th: &[f64], out: &mut [f64]) {
        for i in 0..th.len() {
            out[i] = self.lambda[i] * (th[i] - self.center[i]);
        }
    }
}

/// L = −θ²/2 + θ³/3, so θ̇ = θ(1 − θ): the logistic curve
/// θ(t) = 1/(1 + r e^{−t}), r = (1 − θ₀)/θ₀; its rate peaks at θ = ½, t = ln r.
struct Logistic {
    names: Vec<String>,
}

impl GradientFlow for Logistic {
    fn names(&self) -> &[String] {
        &self.names
    }
    fn loss(&self, th: &[f64]) -> f64 {
        -th[0] * th[0] / 2.0 + th[0].powi(3) / 3.0
    }
    fn grad(&self, th: &[f64], out: &mut [f64]) {
        out[0] = -th[0] + th[0] * th[0];
    }
}

/// L = −θ³/3, θ̇ = θ²: blows up at t = 1/θ₀.
struct BlowUp {
    names: Vec<String>,
}

impl GradientFlow for BlowUp {
    fn names(&self) -> &[String] {
        &self.names
    }
    fn loss(&self, th: &[f64]) -> f64 {
        -th[0].powi(3) / 3.0
    }
    fn grad(&self, th: &[f64], out: &mut [f64]) {
        out[0] = -th[0] * th[0];
    }
}

const METHODS: [Method; 2] = [Method::Dopri5, Method::Dop853];

#[test]
fn dense_output_follows_the_exact_solution() {
    let sys = Quadratic::new(&[1.0, 0.1], &[2.0, -1.0]);
    let th0 = [0.0, 3.0];
    for method in METHODS {
        let sol = FlowProblem::builder(&sys)
            .init(&th0)
            .t_max(20.0)
            .method(method)
            .build()
            .unwrap()
            .solve()
            .unwrap();
        assert_eq!(sol.stop, StopReason::Horizon);
        assert!((sol.t_end() - 20.0).abs() < 1e-12);
        for k in 0..=200 {
            let t = 0.1 * k as f64;
            let got = sol.state_at(t).unwrap();
            let exact = sys.exact(&th0, t);
            for i in 0..2 {
                assert!((got[i] - exact[i]).abs() < 1e-8, "{method:?} t={t} i={i}");
            }
        }
        assert!(sol.state_at(20.5).is_none());
    }
}

#[test]
fn dop853_dense_output_between_steps_matches_the_logistic_curve() {
    // Nonlinear, with a closed form; at rtol 1e-10 DOP853 takes steps of O(1), so most sample
    // points fall inside steps and test the 7th-order interpolant, not the step ends.
    let sys = Logistic {
        names: vec!["x".into()],
    };
    let th0: f64 = 1e-3;
    let r = (1.0 - th0) / th0;
    let exact = |t: f64| 1.0 / (1.0 + r * (-t).exp());
    let mut steps = Vec::new();
    for method in METHODS {
        let sol = FlowProblem::builder(&sys)
            .init(&[th0])
            .t_max(20.0)
            .method(method)
            .tolerances(1e-10, 1e-12)
            .build()
            .unwrap()
            .solve()
            .unwrap();
        let worst = (0..=2000)
            .map(|k| {
                let t = 0.01 * k as f64;
                (sol.state_at(t).unwrap()[0] - exact(t)).abs()
            })
            .fold(0.0, f64::max);
        assert!(worst < 2e-9, "{method:?}: worst error {worst:e}");
        steps.push(sol.stats.steps);
    }
    // The point of the 8th-order method: far fewer steps at tight tolerances.
    assert!(3 * steps[1] < steps[0], "Dopri5 vs DOP853 steps: {steps:?}");
}

/// A 3-dim [`Quadratic`] flow from `th0` to t = 30 with `ode_solvers::Dop853` (Hairer's
/// defaults: its step statistics and end state) and with this crate's DOP853 (its solution).
fn both_dop853(
    sys: &Quadratic,
    th0: &[f64; 3],
    (rtol, atol): (f64, f64),
) -> (ode_solvers::dop_shared::Stats, Vec<f64>, Solution) {
    use ode_solvers::dop_shared::OutputType;
    struct Plain<'a>(&'a Quadratic);
    impl ode_solvers::System<f64, nalgebra::SVector<f64, 3>> for Plain<'_> {
        fn system(
            &self,
            _t: f64,
            y: &nalgebra::SVector<f64, 3>,
            dy: &mut nalgebra::SVector<f64, 3>,
        ) {
            self.0.grad(y.as_slice(), dy.as_mut_slice());
            *dy *= -1.0;
        }
    }
    let y0 = nalgebra::SVector::<f64, 3>::from_column_slice(th0);
    let mut reference = ode_solvers::Dop853::from_param(
        Plain(sys),
        0.0,
        30.0,
        30.0,
        y0,
        rtol,
        atol,
        0.9,
        0.0,
        0.333,
        6.0,
        30.0,
        0.0,
        100_000,
        u32::MAX,
        OutputType::Sparse,
    );
    let stats = reference.integrate().unwrap();
    let y_end = reference.y_out().last().unwrap().as_slice().to_vec();
    let sol = FlowProblem::builder(sys)
        .init(th0)
        .t_max(30.0)
        .method(Method::Dop853)
        .tolerances(rtol, atol)
        .build()
        .unwrap()
        .solve()
        .unwrap();
    (stats, y_end, sol)
}

#[test]
fn dop853_steps_like_the_ode_solvers_stepper() {
    // `ode_solvers::Dop853` is the same method without an accessible continuous output: the
    // same tableau, error norm, controller and initial step must give the same accepted and
    // rejected steps and the same end state (to rounding: sums are ordered differently, and
    // the differences, ~1e-13 per run here, accumulate over the steps).
    // Accuracy-limited (on a stiff problem the stability limit makes accept/reject decisions
    // hinge on the last bits, and a rounding difference can flip one).
    let sys = Quadratic::new(&[1.0, 0.3, 0.02], &[2.0, -1.0, 0.5]);
    let th0 = [0.0, 3.0, -4.0];
    for (rtol, atol) in [(1e-6, 1e-8), (1e-10, 1e-12)] {
        let (stats, y_end, sol) = both_dop853(&sys, &th0, (rtol, atol));
        assert!(stats.accepted_steps > 10, "{stats:?}");
        assert_eq!(sol.stats.steps, stats.accepted_steps, "rtol {rtol}");
        assert_eq!(
            sol.stats.rejected_steps, stats.rejected_steps,
            "rtol {rtol}"
        );
        let ours = sol.state_at(30.0).unwrap();
        for i in 0..3 {
            assert!(
                (ours[i] - y_end[i]).abs() < 1e-11,
                "rtol {rtol}: {ours:?} vs {y_end:?}"
            );
        }
    }
}

#[test]
fn dop853_from_a_zero_state_probes_for_its_first_step() {
    // From θ = 0 Hairer's initial step is the placeholder 10⁻⁴ (100 · 10⁻⁶); repeating the probe
    // at the capped step starts at the flow's own scale: fewer steps than `ode_solvers`, the
    // same accuracy against the exact solution.
    let sys = Quadratic::new(&[1.0, 0.3, 0.02], &[2.0, -1.0, 0.5]);
    let th0 = [0.0; 3];
    let exact = sys.exact(&th0, 30.0);
    for (rtol, atol) in [(1e-6, 1e-8), (1e-10, 1e-12)] {
        let (stats, y_end, sol) = both_dop853(&sys, &th0, (rtol, atol));
        assert!(
            sol.stats.steps + 2 <= stats.accepted_steps,
            "rtol {rtol}: {} steps vs ode_solvers' {}",
            sol.stats.steps,
            stats.accepted_steps
        );
        let ours = sol.state_at(30.0).unwrap();
        let err = |y: &[f64]| (0..3).map(|i| (y[i] - exact[i]).abs()).fold(0.0, f64::max);
        assert!(
            err(&ours) <= 2.0 * err(&y_end) + 100.0 * atol,
            "rtol {rtol}: error {:e} vs ode_solvers' {:e}",
            err(&ours),
            err(&y_end)
        );
    }
}

#[test]
fn threshold_and_loss_events_match_closed_forms() {
    for method in METHODS {
        let sys = Quadratic::new(&[0.7], &[1.0]);
        // θ(t) = 1 − e^{−0.7 t}; θ ≥ 0.5 at t = ln 2 / 0.7; L = ½·0.7·e^{−1.4 t}, L ≤ L0/4 at ln 4/1.4.
        let l0 = sys.loss(&[0.0]);
        let sol = FlowProblem::builder(&sys)
            .t_max(50.0)
            .method(method)
            .event(EventSpec::rises("half", Quantity::Coord(0), 0.5))
            .event(EventSpec::falls("loss_quarter", Quantity::Loss, 0.25 * l0))
            .event(EventSpec::rises("never", Quantity::Coord(0), 2.0))
            .event(EventSpec::falls("at_start", Quantity::Coord(0), 0.0))
            .build()
            .unwrap()
            .solve()
            .unwrap();
        let t_half = sol.event_time("half").unwrap();
        assert!(rel_err(t_half, 2f64.ln() / 0.7) < 1e-9, "{t_half}");
        let t_q = sol.event_time("loss_quarter").unwrap();
        assert!(rel_err(t_q, 4f64.ln() / 1.4) < 1e-9, "{t_q}");
        assert_eq!(sol.event_time("never"), None);
        assert_eq!(sol.event_time("at_start"), Some(0.0));
    }
}

#[test]
fn rate_peak_of_the_logistic_curve() {
    let sys = Logistic {
        names: vec!["x".into()],
    };
    for &th0 in &[1e-3, 0.05, 0.2] {
        let r: f64 = (1.0 - th0) / th0;
        let sol = FlowProblem::builder(&sys)
            .init(&[th0])
            .t_max(40.0)
            .event(EventSpec::peak("peak", Quantity::Rate(0)))
            .event(EventSpec::rises("x_0.9", Quantity::Coord(0), 0.9))
            .stop_after_events(0.0)
            .build()
            .unwrap()
            .solve()
            .unwrap();
        let t_peak = sol.event_time("peak").unwrap();
        assert!(
            rel_err(t_peak, r.ln()) < 1e-8,
            "θ0={th0}: {t_peak} vs {}",
            r.ln()
        );
        // θ = 0.9 at t = ln(9 r).
        let t9 = sol.event_time("x_0.9").unwrap();
        assert!(rel_err(t9, (9.0 * r).ln()) < 1e-9);
        assert_eq!(sol.stop, StopReason::EventsFound);
        assert!(sol.t_end() < 40.0);
    }
}

#[test]
fn margin_stops_after_the_last_event() {
    let sys = Quadratic::new(&[1.0], &[1.0]);
    let sol = FlowProblem::builder(&sys)
        .t_max(1000.0)
        .event(EventSpec::rises("half", Quantity::Coord(0), 0.5))
        .stop_after_events(1.0)
        .build()
        .unwrap()
        .solve()
        .unwrap();
    assert_eq!(sol.stop, StopReason::EventsFound);
    let t = sol.event_time("half").unwrap();
    // stops at the first accepted step past (bracket end)·(1 + margin)
    assert!(
        sol.t_end() >= 2.0 * t && sol.t_end() < 10.0,
        "{}",
        sol.t_end()
    );
}

#[test]
fn frozen_coordinates_and_stages() {
    let sys = Quadratic::new(&[1.0, 2.0], &[1.0, 1.0]);
    // Stage A: x1 frozen for 1 time unit; stage B: x0 frozen for 2.
    let sol = FlowProblem::builder(&sys)
        .stages(vec![
            Stage::new("A", 1.0).frozen([1]),
            Stage::new("B", 2.0).frozen([0]),
        ])
        .event(EventSpec::rises("x1_half", Quantity::Coord(1), 0.5))
        .build()
        .unwrap()
        .solve()
        .unwrap();
    let x0_end_a = 1.0 - (-1.0f64).exp();
    let end = sol.state_at(3.0).unwrap();
    assert!((end[0] - x0_end_a).abs() < 1e-9);
    assert!((end[1] - (1.0 - (-4.0f64).exp())).abs() < 1e-9);
    // x1 starts moving at t = 1 and reaches ½ after ln 2 / 2 more.
    let t = sol.event_time("x1_half").unwrap();
    assert!(rel_err(t, 1.0 + 2f64.ln() / 2.0) < 1e-9);
    assert_eq!(sol.stage_at(0.5), Some("A"));
    assert_eq!(sol.stage_at(2.5), Some("B"));
}

#[test]
fn blow_up_is_reported_with_time_and_state() {
    for method in METHODS {
        let sys = BlowUp {
            names: vec!["x".into()],
        };
        let err = FlowProblem::builder(&sys)
            .init(&[0.5])
            .t_max(10.0)
            .method(method)
            .divergence_bound(1e8)
            .build()
            .unwrap()
            .solve()
            .err()
            .expect("the flow blows up at t = 2");
        match &err {
            FlowError::Diverged { t, theta, .. } => {
                assert!(*t > 1.99 && *t < 2.0 + 1e-6, "t = {t}");
                assert!(theta[0].abs() > 1e8 || !theta[0].is_finite());
            }
            other => panic!("expected divergence, got {other}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("diverged at t = 1.99") && text.contains("x = "),
            "{text}"
        );
    }
}

#[test]
fn builder_rejects_bad_settings_naming_the_field() {
    let sys = Quadratic::new(&[1.0], &[1.0]);
    let e = FlowProblem::builder(&sys).build().err().unwrap();
    assert!(e.to_string().starts_with("t_max:"), "{e}");
    let e = FlowProblem::builder(&sys)
        .t_max(-1.0)
        .build()
        .err()
        .unwrap();
    assert_eq!(e.to_string(), "t_max: must be > 0 and finite, got -1");
    let e = FlowProblem::builder(&sys)
        .t_max(1.0)
        .init(&[1.0, 2.0])
        .build()
        .err()
        .unwrap();
    assert_eq!(e.to_string(), "init: expected 1 values, got 2");
    let e = FlowProblem::builder(&sys)
        .t_max(1.0)
        .tolerances(0.0, 1e-12)
        .build()
        .err()
        .unwrap();
    assert!(e.to_string().starts_with("rtol:"));
}

#[test]
fn step_budget_is_an_error() {
    let sys = Quadratic::new(&[1.0], &[1.0]);
    let e = FlowProblem::builder(&sys)
        .t_max(1e6)
        .max_steps(5)
        .build()
        .unwrap()
        .solve()
        .err()
        .unwrap();
    assert!(matches!(e, FlowError::MaxSteps { max_steps: 5, .. }), "{e}");
}

#[test]
fn a_long_tail_is_cut_at_its_step_cap() {
    // Stiff-ish tail: λ = 50 forces small steps; the margin asks for far more time than the cap.
    let sys = Quadratic::new(&[50.0], &[1.0]);
    let sol = FlowProblem::builder(&sys)
        .t_max(1e6)
        .event(EventSpec::rises("half", Quantity::Coord(0), 0.5))
        .stop_after_events(1e5)
        .tail_steps(100)
        .build()
        .unwrap()
        .solve()
        .unwrap();
    assert_eq!(sol.stop, StopReason::TailSteps);
    assert!(rel_err(sol.event_time("half").unwrap(), 2f64.ln() / 50.0) < 1e-9);
    assert!(sol.stats.steps < 200);
}

/// θ₀ = e^{−t}, θ₁ = 1 − e^{−2t} (λ = (1, 2), centres (0, 1)): the leader changes from 0 to 1
/// where e^{−t} = 1 − e^{−2t}, i.e. u = e^{−t} solves u² + u − 1 = 0: t = ln φ, φ = (1 + √5)/2.
#[test]
fn argmax_change_is_located_at_the_exact_crossing() {
    let sys = Quadratic::new(&[1.0, 2.0, 0.5], &[0.0, 1.0, 0.2]);
    let sol = FlowProblem::builder(&sys)
        .init(&[1.0, 0.0, 0.0])
        .t_max(10.0)
        .event(EventSpec::argmax_changes("lead", Quantity::Coord(0), 3))
        .event(EventSpec::argmax_changes("lead01", Quantity::Coord(0), 2))
        .event(EventSpec::argmax_changes("never", Quantity::Coord(1), 2))
        .build()
        .unwrap()
        .solve()
        .unwrap();
    let phi = (1.0 + 5f64.sqrt()) / 2.0;
    for name in ["lead", "lead01"] {
        let t = sol.event_time(name).unwrap();
        assert!(rel_err(t, phi.ln()) < 1e-10, "{name}: {t} vs {}", phi.ln());
    }
    // θ₂ = 0.2(1 − e^{−t/2}) stays below θ₁ = 1 − e^{−2t} for t > 0 (tie at 0 is no change)
    assert_eq!(sol.event_time("never"), None);
    let rec = sol.events().iter().find(|e| e.name == "lead").unwrap();
    assert_eq!(rec.value, Some(1.0), "the new leader is entry 1");
    let e = FlowProblem::builder(&sys)
        .t_max(1.0)
        .event(EventSpec::argmax_changes("bad", Quantity::Coord(2), 2))
        .build()
        .err()
        .unwrap();
    assert!(e.to_string().starts_with("events.bad:"), "{e}");
}

/// In log coordinates exponential decay is a straight line: λ = 200 over t = 100 is stiff for
/// an explicit solver in θ, but takes a handful of steps in ln θ, with the same trajectory.
#[test]
fn log_coordinates_remove_the_stiffness_of_decay() {
    let sys = Quadratic::new(&[200.0, 1.0], &[0.0, 0.0]);
    let th0 = [-2.0, 3.0];
    let solve = |log: bool| {
        let mut b = FlowProblem::builder(&sys)
            .init(&th0)
            .t_max(100.0)
            .tolerances(1e-10, 1e-12)
            .event(EventSpec::falls("x1_half", Quantity::Coord(1), 1.5));
        if log {
            b = b.log_coordinates([0, 1]);
        }
        b.build().unwrap().solve().unwrap()
    };
    let lin = solve(false);
    let log = solve(true);
    assert!(log.stats.steps < 60, "{}", log.stats.steps);
    assert!(
        lin.stats.steps > 10 * log.stats.steps,
        "{} vs {}",
        lin.stats.steps,
        log.stats.steps
    );
    for k in 0..=50 {
        let t = 0.02 * k as f64;
        let got = log.state_at(t).unwrap();
        let exact = sys.exact(&th0, t);
        assert!(
            rel_err(got[0], exact[0]) < 1e-8 || (got[0] - exact[0]).abs() < 1e-300,
            "t = {t}"
        );
        assert!(rel_err(got[1], exact[1]) < 1e-8, "t = {t}");
        assert!(got[0] < 0.0, "the sign is kept");
    }
    // θ₀ = −2 e^{−20000} underflows to (−)0 at the end; the rate stayed finite
    assert_eq!(log.state_at(100.0).unwrap()[0], 0.0);
    assert!(rel_err(log.event_time("x1_half").unwrap(), 2f64.ln()) < 1e-9);
    // the logistic curve θ' = θ(1 − θ) in ln θ: same solution 1/(1 + r e^{−t})
    let lg = Logistic {
        names: vec!["x".into()],
    };
    let sol = FlowProblem::builder(&lg)
        .init(&[0.01])
        .t_max(12.0)
        .log_coordinates([0])
        .build()
        .unwrap()
        .solve()
        .unwrap();
    for k in 0..=12 {
        let t = k as f64;
        let exact = 1.0 / (1.0 + 99.0 * (-t).exp());
        assert!(rel_err(sol.state_at(t).unwrap()[0], exact) < 1e-8);
    }
    let e = FlowProblem::builder(&sys)
        .init(&[0.0, 1.0])
        .t_max(1.0)
        .log_coordinates([0])
        .build()
        .err()
        .unwrap();
    assert!(
        e.to_string().starts_with("log_coordinates: x0 starts at 0"),
        "{e}"
    );
}

/// θ̇ = 1 (L = −θ), defined only for θ < 1: the trajectory θ = θ₀ + t reaches the edge of the
/// domain at t = 1 − θ₀.
struct Walled {
    names: Vec<String>,
}

impl GradientFlow for Walled {
    fn names(&self) -> &[String] {
        &self.names
    }
    fn loss(&self, th: &[f64]) -> f64 {
        -th[0]
    }
    fn grad(&self, _th: &[f64], out: &mut [f64]) {
        out[0] = -1.0;
    }
    fn domain_error(&self, th: &[f64]) -> Option<String> {
        (th[0] >= 1.0).then(|| format!("x0 = {} >= 1", th[0]))
    }
}

#[test]
fn leaving_the_domain_is_a_typed_error_at_the_edge() {
    for method in METHODS {
        let sys = Walled {
            names: vec!["x0".into()],
        };
        let err = FlowProblem::builder(&sys)
            .init(&[0.25])
            .t_max(5.0)
            .method(method)
            .build()
            .unwrap()
            .solve()
            .err()
            .expect("the run cannot pass the edge");
        match &err {
            FlowError::OutsideDomain {
                t, theta, reason, ..
            } => {
                // The last accepted state sits just below the edge, at t just below 0.75.
                assert!((t - 0.75).abs() < 1e-6, "t = {t}");
                assert!(theta[0] < 1.0 && theta[0] > 1.0 - 1e-6, "{theta:?}");
                assert!(reason.contains(">= 1"), "{reason}");
            }
            other => panic!("expected OutsideDomain, got {other}"),
        }
        assert!(err.to_string().contains("left the domain"), "{err}");
        // Inside the domain the same flow runs normally.
        let sol = FlowProblem::builder(&sys)
            .init(&[0.25])
            .t_max(0.5)
            .method(method)
            .build()
            .unwrap()
            .solve()
            .unwrap();
        assert!((sol.state_at(0.5).unwrap()[0] - 0.75).abs() < 1e-12);
        // An initial point outside is refused by the builder.
        let err = FlowProblem::builder(&sys)
            .init(&[1.5])
            .t_max(1.0)
            .build()
            .err()
            .unwrap();
        assert!(
            matches!(err, FlowError::OutsideDomain { t, .. } if t == 0.0),
            "{err}"
        );
    }
}

#[test]
fn events_that_hold_at_the_start_stop_a_run_with_the_initial_point_as_its_solution() {
    let sys = Quadratic::new(&[1.0], &[0.0]);
    let sol = FlowProblem::builder(&sys)
        .init(&[2.0])
        .t_max(5.0)
        .event(EventSpec::rises("already", Quantity::Coord(0), 1.0))
        .stop_after_events(0.5)
        .build()
        .unwrap()
        .solve()
        .unwrap();
    assert_eq!(sol.stop, StopReason::EventsFound);
    assert_eq!(sol.t_end(), 0.0);
    assert_eq!(sol.event_time("already"), Some(0.0));
    assert_eq!(sol.state_at(0.0).unwrap(), vec![2.0]);
}

thread_local! {
    /// Makes `integrate_stage` use heap vectors whatever the dimension (to compare the paths).
    pub(super) static FORCE_HEAP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[test]
fn stack_and_heap_vectors_give_the_same_bits() {
    // States of up to 24 coordinates are integrated on fixed-size vectors; the arithmetic must
    // be that of the heap vectors, element by element: same steps, events and dense output.
    let sys = Quadratic::new(&[1.0, 0.3, 2.5, 0.05], &[2.0, -1.0, 0.5, 3.0]);
    let solve = |heap: bool, method: Method| {
        FORCE_HEAP.with(|f| f.set(heap));
        let sol = FlowProblem::builder(&sys)
            .init(&[0.1, 3.0, -2.0, 1.0])
            .stages(vec![
                Stage::new("a", 3.0).frozen([1]),
                Stage::new("b", 40.0),
            ])
            .log_coordinates([3])
            .method(method)
            .event(EventSpec::rises("x0", Quantity::Coord(0), 1.5))
            .event(EventSpec::falls("loss", Quantity::Loss, 0.5))
            .event(EventSpec::peak("rate", Quantity::Rate(2)))
            .build()
            .unwrap()
            .solve()
            .unwrap();
        FORCE_HEAP.with(|f| f.set(false));
        let states: Vec<u64> = (0..=430)
            .flat_map(|k| sol.state_at(0.1 * k as f64).unwrap())
            .map(f64::to_bits)
            .collect();
        let events: Vec<Option<u64>> = sol.events().iter().map(|e| e.t.map(f64::to_bits)).collect();
        (sol.stats, events, states)
    };
    for method in METHODS {
        let (stack, heap) = (solve(false, method), solve(true, method));
        assert!(stack.0.steps > 10, "{method:?}: {:?}", stack.0);
        assert_eq!(stack, heap, "{method:?}");
    }
}

/// An events-only run locates the same events to the last bit as a run that keeps the whole
/// continuous output, over stages, with threshold, loss, peak and at-start events; with DOP853
/// it saves exactly three right-hand sides per step that keeps no output, and its `state_at`
/// is `None` only inside such steps.
#[test]
fn events_only_runs_locate_the_same_events_with_fewer_right_hand_sides() {
    let sys = Quadratic::new(&[0.7, 1.3, 0.4], &[1.0, 2.0, -1.0]);
    let logistic = Logistic {
        names: vec!["x".into()],
    };
    let l0 = sys.loss(&[0.0; 3]);
    for method in METHODS {
        let quad = |events_only: bool| {
            let b = FlowProblem::builder(&sys)
                .stages(vec![
                    Stage::new("A", 2.0).frozen([1]),
                    Stage::new("B", 30.0),
                ])
                .method(method)
                .event(EventSpec::rises("x0_half", Quantity::Coord(0), 0.5))
                .event(EventSpec::rises("x1_one", Quantity::Coord(1), 1.0))
                .event(EventSpec::falls("x2_low", Quantity::Coord(2), -0.9))
                .event(EventSpec::falls("loss_tenth", Quantity::Loss, 0.1 * l0))
                .event(EventSpec::falls("at_start", Quantity::Coord(0), 0.0))
                .stop_after_events(0.5);
            if events_only { b.events_only() } else { b }
                .build()
                .unwrap()
                .solve()
                .unwrap()
        };
        let peak = |events_only: bool| {
            let b = FlowProblem::builder(&logistic)
                .init(&[1e-3])
                .t_max(40.0)
                .method(method)
                .event(EventSpec::peak("peak", Quantity::Rate(0)))
                .stop_after_events(0.0);
            if events_only { b.events_only() } else { b }
                .build()
                .unwrap()
                .solve()
                .unwrap()
        };
        for (full, lean) in [(quad(false), quad(true)), (peak(false), peak(true))] {
            assert_eq!(full.events(), lean.events(), "{method:?}");
            assert!(full.events().iter().all(|e| e.t.is_some()));
            assert_eq!(full.stats.steps, lean.stats.steps);
            assert_eq!(full.t_end(), lean.t_end());
            let events = full.events().iter().filter(|e| e.t != Some(0.0)).count() as u32;
            match method {
                Method::Dopri5 => assert_eq!(full.stats, lean.stats),
                Method::Dop853 => {
                    // every step but the first and the bracketing ones drops 3 evaluations
                    let dropped = full.stats.rhs_evals - lean.stats.rhs_evals;
                    assert!(dropped % 3 == 0, "{dropped}");
                    let kept = full.stats.steps - dropped / 3;
                    assert!(
                        (1..=1 + events).contains(&kept),
                        "kept {kept} of {}",
                        full.stats.steps
                    );
                    assert!(full.stats.steps > 10);
                }
                Method::Radau5 | Method::Auto => unreachable!("not in METHODS"),
            }
            // state_at: equal where both have it, and present at every event time
            let mut missing = 0;
            for i in 0..=400 {
                let t = full.t_end() * i as f64 / 400.0;
                match lean.state_at(t) {
                    Some(th) => assert_eq!(Some(th), full.state_at(t)),
                    None => missing += 1,
                }
            }
            for e in lean.events() {
                assert_eq!(lean.state_at(e.t.unwrap()), full.state_at(e.t.unwrap()));
            }
            match method {
                Method::Dopri5 => assert_eq!(missing, 0),
                Method::Dop853 => assert!(missing > 200, "{missing}"),
                Method::Radau5 | Method::Auto => unreachable!("not in METHODS"),
            }
        }
    }
}

/// The event root finder against crossings known in closed form: it keeps its bracket (the
/// returned end has fired, and lies within the final width of the exact crossing), agrees with
/// a plain bisection, and needs far fewer evaluations on smooth crossings; on a jump or a
/// flat crossing (where regula falsi alone stalls) its bisection safeguard keeps it within
/// about three times bisection's count.
#[test]
fn event_root_finder_keeps_its_bracket_and_beats_bisection_on_smooth_crossings() {
    use super::events::first_fired;
    let rises = |g: f64| g >= 0.0;
    // plain bisection to the same width (the former locator), with its evaluation count
    let bisection = |(mut lo, mut hi): (f64, f64), g: &dyn Fn(f64) -> f64| {
        let mut evals = 0;
        loop {
            let mid = 0.5 * (lo + hi);
            if mid <= lo || mid >= hi || hi - lo <= 1e-14 * hi.abs() {
                return (hi, evals);
            }
            evals += 1;
            if g(mid) >= 0.0 {
                hi = mid;
            } else {
                lo = mid;
            }
        }
    };
    let r3 = 2f64.cbrt();
    type Crossing = (&'static str, Box<dyn Fn(f64) -> f64>, (f64, f64), f64);
    let smooth: [Crossing; 4] = [
        ("cubic", Box::new(|t: f64| t * t * t - 2.0), (0.0, 3.0), r3),
        // a logistic emergence like α₃'s: steep at the crossing, flat on both sides
        (
            "logistic",
            Box::new(|t: f64| 1.0 / (1.0 + (-(t - 24.9) * 3.0).exp()) - 0.5),
            (20.0, 31.0),
            24.9,
        ),
        (
            "falling exp",
            Box::new(|t: f64| 0.5 - (-t).exp()),
            (0.1, 5.0),
            2f64.ln(),
        ),
        (
            "line",
            Box::new(|t: f64| 7.0 * (t - 1e-3)),
            (0.0, 1.0),
            1e-3,
        ),
    ];
    for (name, g, (a, b), root) in &smooth {
        let (t, evals) = first_fired((*a, g(*a)), (*b, g(*b)), rises, g);
        let (tb, bis_evals) = bisection((*a, *b), g.as_ref());
        assert!(g(t) >= 0.0, "{name}: the returned end has fired");
        assert!(
            (t - root).abs() <= 2e-14 * root,
            "{name}: t = {t:e}, exact {root:e}"
        );
        assert!(
            (t - tb).abs() <= 2e-14 * root,
            "{name}: bisection gives {tb:e}"
        );
        assert!(
            evals <= 11 && bis_evals >= 40,
            "{name}: {evals} vs bisection {bis_evals}"
        );
    }
    // A jump (an argmax-like g, fired when g > 0) and a triple root: regula falsi alone
    // crawls; the safeguard keeps the count within about three times bisection's.
    let jump = |t: f64| if t > 0.3 { 1.0 } else { -1.0 };
    let (t, evals) = first_fired((0.0, -1.0), (1.0, 1.0), |g| g > 0.0, jump);
    let (_, bis_evals) = bisection((0.0, 1.0), &|t| if t > 0.3 { 1.0 } else { -1.0 });
    assert!(t > 0.3 && t - 0.3 <= 1e-14, "jump: {t:e}");
    assert!(
        evals <= 3 * bis_evals + 3,
        "jump: {evals} vs bisection {bis_evals}"
    );
    let flat = |t: f64| (t - 0.7).powi(3);
    let (t, evals) = first_fired((0.0, flat(0.0)), (1.0, flat(1.0)), rises, flat);
    let (_, bis_evals) = bisection((0.0, 1.0), &flat);
    assert!(flat(t) >= 0.0 && (t - 0.7).abs() <= 1e-14, "flat: {t:e}");
    assert!(
        evals <= 3 * bis_evals + 3,
        "flat: {evals} vs bisection {bis_evals}"
    );
    // NaN values (a stage outside a domain) count as not fired.
    let nan_left = |t: f64| if t < 0.4 { f64::NAN } else { t - 0.4 };
    let (t, _) = first_fired((0.0, f64::NAN), (1.0, 0.6), rises, nan_left);
    assert!(t >= 0.4 && t - 0.4 <= 1e-14, "NaN side: {t:e}");
}
