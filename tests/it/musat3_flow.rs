//! The three-parameter flow solved: exact phase-1 solution, the α–β invariant, tolerance
//! independence of the events, and the large-N limit of the emergence constants.

use crate::support::{rel_err, simpson};
use ihdyn::flow::{EventSpec, FlowProblem, GradientFlow, Quantity, Solution};
use ihdyn::systems::musat::musat3::{ALPHA3, BETA2, GAMMA3, Musat3, Query};

fn standard_events(sys: &Musat3, th: f64) -> Vec<EventSpec> {
    let l0 = sys.loss(&[0.0; 3]);
    vec![
        EventSpec::rises("gamma3", Quantity::Coord(GAMMA3), th),
        EventSpec::rises("beta2", Quantity::Coord(BETA2), th),
        EventSpec::rises("alpha3", Quantity::Coord(ALPHA3), th),
        EventSpec::falls("loss_half", Quantity::Loss, 0.5 * l0),
        EventSpec::peak("peak", Quantity::Rate(ALPHA3)),
    ]
}

fn solve(sys: &Musat3, rtol: f64, atol: f64, th: f64) -> Solution {
    solve_with_margin(sys, rtol, atol, th, 0.0)
}

fn solve_with_margin(sys: &Musat3, rtol: f64, atol: f64, th: f64, margin: f64) -> Solution {
    let n = sys.n() as f64;
    FlowProblem::builder(sys)
        .t_max(10.0 * n * n)
        .tolerances(rtol, atol)
        .events(standard_events(sys, th))
        .stop_after_events(margin)
        .build()
        .unwrap()
        .solve()
        .unwrap()
}

#[test]
fn gamma_follows_its_exact_solution_when_alpha_and_beta_are_frozen() {
    // docs/theory/musat.md §7.3: at α = β = 0, ∂L/∂γ = (γ − 1)/N, so γ(t) = 1 − e^{−t/N} and
    // T_γ(θ) = −N ln(1 − θ); a loss scale s multiplies the rate by s.
    for &n in &[2usize, 8, 100, 1000] {
        for &scale in &[1.0, 0.5] {
            let sys = Musat3::new(n, Query::Last, scale);
            let nf = n as f64;
            let thresholds = [0.1, 0.5, 0.9];
            let sol = FlowProblem::builder(&sys)
                .freeze([ALPHA3, BETA2])
                .t_max(10.0 * nf / scale)
                .events(
                    thresholds
                        .iter()
                        .map(|&th| EventSpec::rises(format!("g{th}"), Quantity::Coord(GAMMA3), th)),
                )
                .build()
                .unwrap()
                .solve()
                .unwrap();
            for k in 0..=50 {
                let t = sol.t_end() * k as f64 / 50.0;
                let exact = 1.0 - (-scale * t / nf).exp();
                let got = sol.state_at(t).unwrap();
                assert!((got[GAMMA3] - exact).abs() < 1e-9, "N={n} t={t}");
                assert_eq!(got[ALPHA3], 0.0);
                assert_eq!(got[BETA2], 0.0);
            }
            for th in thresholds {
                let exact = -nf * (1.0 - th).ln() / scale;
                let got = sol.event_time(&format!("g{th}")).unwrap();
                assert!(rel_err(got, exact) < 1e-8, "N={n} θ={th}: {got} vs {exact}");
            }
        }
    }
}

#[test]
fn alpha_beta_rates_follow_the_invariant_along_the_trajectory() {
    // docs/theory/musat.md §7.3 (q = N): dα/dβ = β(1 − a). The slope is measured from the solver's
    // dense output by central differences in t, independently of the gradient formula.
    for &n in &[3usize, 8, 40] {
        let sys = Musat3::new(n, Query::Last, 1.0);
        let sol = solve_with_margin(&sys, 1e-12, 1e-14, 0.5, 0.5);
        let t_alpha = sol.event_time("alpha3").unwrap();
        let mut checked = 0;
        for k in 1..200 {
            let t = t_alpha * 1.3 * k as f64 / 200.0;
            let h = 1e-4 * t_alpha;
            let (p, m) = (sol.state_at(t + h).unwrap(), sol.state_at(t - h).unwrap());
            let dbeta = p[BETA2] - m[BETA2];
            if dbeta.abs() < 1e-9 {
                continue;
            }
            let slope = (p[ALPHA3] - m[ALPHA3]) / dbeta;
            let th = sol.state_at(t).unwrap();
            let a = th[ALPHA3].exp() / (th[ALPHA3].exp() + 2.0 * n as f64 - 2.0);
            let invariant = th[BETA2] * (1.0 - a);
            assert!(
                (slope - invariant).abs() < 1e-5 * (1.0 + invariant.abs()),
                "N={n} t={t}: dα/dβ = {slope}, β(1−a) = {invariant}"
            );
            // and the consequence α ≤ β²/2 while β rises from 0
            assert!(th[ALPHA3] <= 0.5 * th[BETA2] * th[BETA2] + 1e-9);
            checked += 1;
        }
        assert!(checked > 150);
    }
}

#[test]
fn event_times_agree_with_a_tight_tolerance_reference() {
    for &n in &[2usize, 4, 8, 64, 512] {
        for query in [Query::Last, Query::Uniform] {
            for th in [0.5, 0.1] {
                let sys = Musat3::new(n, query, 1.0);
                let default = solve(&sys, 1e-10, 1e-12, th);
                let reference = solve(&sys, 1e-12, 1e-14, th);
                for e in reference.events() {
                    let t_ref = e.t.unwrap_or_else(|| panic!("{} not reached", e.name));
                    let t = default.event_time(&e.name).unwrap();
                    assert!(
                        rel_err(t, t_ref) < 1e-8,
                        "N={n} {query:?} θ={th} {}: {t} vs reference {t_ref}",
                        e.name
                    );
                }
            }
        }
    }
}

#[test]
fn large_n_emergence_times_approach_the_scaled_limit() {
    // §7.3: in τ = t/(2N²) the system is dβ/dτ = e^α, dα/dτ = β e^α with α = β²/2, so
    // τ(β) = ∫₀^β e^{−s²/2} ds. Hence T_β(½)/N² → 2∫₀^{½} e^{−s²/2} ds and, since α = ½ at
    // β = 1, T_α(½)/N² → 2∫₀^1 e^{−s²/2} ds; the blow-up is at 2·sqrt(π/2)·N².
    let integral = |b: f64| simpson(|s| (-s * s / 2.0).exp(), 0.0, b, 10_000);
    let n = 4096;
    let sys = Musat3::new(n, Query::Last, 1.0);
    let sol = solve(&sys, 1e-10, 1e-12, 0.5);
    let n2 = (n * n) as f64;
    let tb = sol.event_time("beta2").unwrap() / n2;
    let ta = sol.event_time("alpha3").unwrap() / n2;
    assert!(rel_err(tb, 2.0 * integral(0.5)) < 2e-3, "{tb}");
    assert!(rel_err(ta, 2.0 * integral(1.0)) < 2e-3, "{ta}");
    // The loss collapses near the blow-up of the reduced system (within a few percent, the
    // approximation a ≈ e^α/(2N) fails once α ~ ln N).
    let tl = sol.event_time("loss_half").unwrap() / n2;
    let blow_up = 2.0 * (std::f64::consts::PI / 2.0).sqrt();
    assert!(rel_err(tl, blow_up) < 0.05, "{tl} vs {blow_up}");
}
