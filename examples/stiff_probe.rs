//! Is the 19-dim Musat flow stiff, and does Radau5 pay off on it?
//!
//! For each N: the query-last flow from θ = 0 solved to all its events (α₃, β₂, γ₃ at 0.5, the
//! loss at half its start, the peak of α₃'s rate: a sweep point's events, events-only, stopping
//! when they are found) with DOP853, Radau5 and `auto`, at the scenario defaults
//! rtol 1e-10, atol 1e-12 and at rtol 1e-8, atol 1e-10; then the extreme eigenvalues of the
//! symmetrized Jacobian −½(H + Hᵀ) (H by central differences of the exact gradient) at a few
//! times along the trajectory, and h·|λ|max for DOP853's steps there.
//!
//! `cargo run --release --example stiff_probe -- [N ...]` (default 256 1024 4096); one markdown
//! table row per solve, then the eigenvalues.

use ihdyn::flow::{EventSpec, FlowProblem, GradientFlow, Method, Quantity, Solution};
use ihdyn::systems::musat::data::LabelPosition;
use ihdyn::systems::musat::musat3::Query;
use ihdyn::systems::musat::musat19::Musat19;
use ihdyn::systems::musat::subspace::{ALPHA3, BETA2, GAMMA3};
use nalgebra::{DMatrix, SymmetricEigen};
use std::time::Instant;

const EVENTS: [(&str, usize); 3] = [("alpha3", ALPHA3), ("beta2", BETA2), ("gamma3", GAMMA3)];

fn solve(
    sys: &Musat19,
    n: usize,
    method: Method,
    (rtol, atol): (f64, f64),
    lean: bool,
) -> Solution {
    let l0 = sys.loss(&[0.0; 19]);
    let mut b = FlowProblem::builder(sys)
        .t_max(50.0 * (n * n) as f64)
        .method(method)
        .tolerances(rtol, atol)
        .max_steps(100_000_000)
        .events(EVENTS.map(|(name, k)| EventSpec::rises(name, Quantity::Coord(k), 0.5)))
        .event(EventSpec::falls("loss_half", Quantity::Loss, 0.5 * l0))
        .event(EventSpec::peak("peak", Quantity::Rate(ALPHA3)))
        .stop_after_events(0.0)
        .tail_steps(5000);
    if lean {
        b = b.events_only();
    }
    b.build().unwrap().solve().unwrap()
}

/// −½(H + Hᵀ) with H by central differences of the gradient.
fn jacobian(f: &dyn GradientFlow, th: &[f64]) -> DMatrix<f64> {
    let n = th.len();
    let mut h = DMatrix::zeros(n, n);
    let (mut gp, mut gm) = (vec![0.0; n], vec![0.0; n]);
    let mut x = th.to_vec();
    for j in 0..n {
        let e = 1e-5 * th[j].abs().max(1.0);
        x[j] = th[j] + e;
        f.grad(&x, &mut gp);
        x[j] = th[j] - e;
        f.grad(&x, &mut gm);
        x[j] = th[j];
        for i in 0..n {
            h[(i, j)] = -(gp[i] - gm[i]) / (2.0 * e);
        }
    }
    (&h + h.transpose()) * 0.5
}

/// DOP853 on [0, cap] without events: its steps and wall time, to extrapolate where a full
/// solve would take hours (its step is held at the stability limit, so steps grow linearly in t).
fn truncated(sys: &Musat19, method: Method, tol: (f64, f64), cap: f64) -> (u32, u32, f64) {
    let t0 = Instant::now();
    let sol = FlowProblem::builder(sys)
        .t_max(cap)
        .method(method)
        .tolerances(tol.0, tol.1)
        .max_steps(100_000_000)
        .events_only()
        .build()
        .unwrap()
        .solve()
        .unwrap();
    (
        sol.stats.steps,
        sol.stats.rhs_evals,
        t0.elapsed().as_secs_f64(),
    )
}

fn main() {
    // N ... [--full-dop853-up-to M]: DOP853 is solved in full for N <= M (default 1024) and
    // extrapolated from [0, 2·10⁴] above.
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut full_up_to = 1024;
    if let Some(i) = args.iter().position(|a| a == "--full-dop853-up-to") {
        full_up_to = args[i + 1].parse().unwrap();
        args.drain(i..i + 2);
    }
    let args: Vec<usize> = args.iter().map(|s| s.parse().unwrap()).collect();
    let ns = if args.is_empty() {
        vec![256, 1024, 4096]
    } else {
        args
    };
    println!(
        "| N | rtol | method | steps | rejected | RHS evals | Jacobians | LU pairs | gradient calls | wall s | T_gamma3 | T_beta2 | T_alpha3 | T_loss_half | T_peak |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &n in &ns {
        let sys = Musat19::new(n, Query::Last, LabelPosition::Rotated, 1.0);
        for tol in [(1e-10, 1e-12), (1e-8, 1e-10)] {
            let mut t_end = 0.0;
            for method in [Method::Radau5, Method::Auto, Method::Dop853] {
                if method == Method::Dop853 && n > full_up_to {
                    let cap = 2e4;
                    let (steps, evals, secs) = truncated(&sys, method, tol, cap);
                    let k = t_end / cap;
                    println!(
                        "| {n} | {:.0e} | dop853, extrapolated from [0, {cap:.0e}] ({steps} steps, {evals} RHS, {secs:.1} s) to t_end {t_end:.0} | ≈ {:.2e} | | ≈ {:.2e} | 0 | 0 | | ≈ {:.1} | | | | | |",
                        tol.0,
                        steps as f64 * k,
                        evals as f64 * k,
                        secs * k
                    );
                    continue;
                }
                // fastest of a few repetitions (the machine's speed wanders); one for DOP853
                let reps = if method == Method::Dop853 { 1 } else { 3 };
                let mut best = f64::INFINITY;
                let mut sol = None;
                for _ in 0..reps {
                    let t0 = Instant::now();
                    let s = solve(&sys, n, method, tol, true);
                    best = best.min(t0.elapsed().as_secs_f64());
                    sol = Some(s);
                }
                let sol = sol.unwrap();
                t_end = sol.t_end();
                let st = &sol.stats;
                let t = |name: &str| {
                    sol.event_time(name)
                        .map_or("-".to_string(), |t| format!("{t:.10}"))
                };
                let name = match (method, st.switch) {
                    (Method::Auto, Some(s)) => format!("auto (switched at t = {:.4})", s.t),
                    (Method::Auto, None) => "auto (stayed DOP853)".to_string(),
                    (m, _) => m.name().to_string(),
                };
                println!(
                    "| {n} | {:.0e} | {name} | {} | {} | {} | {} | {} | {} | {best:.4} | {} | {} | {} | {} | {} |",
                    tol.0,
                    st.steps,
                    st.rejected_steps,
                    st.rhs_evals,
                    st.jacobians,
                    st.decompositions,
                    st.grad_calls,
                    t("gamma3"),
                    t("beta2"),
                    t("alpha3"),
                    t("loss_half"),
                    t("peak"),
                );
            }
        }
    }
    println!();
    println!(
        "Eigenvalues of the symmetrized Jacobian −½(H + Hᵀ) along the trajectory (Radau5, rtol 1e-10):"
    );
    println!();
    println!(
        "| N | where | t | λ most negative | λ largest | stiffness ratio | DOP853 stable step ≤ 6.1/max abs λ |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &n in &ns {
        let sys = Musat19::new(n, Query::Last, LabelPosition::Rotated, 1.0);
        let sol = solve(&sys, n, Method::Radau5, (1e-10, 1e-12), false);
        let (tg, tb, ta) = (
            sol.event_time("gamma3").unwrap(),
            sol.event_time("beta2").unwrap(),
            sol.event_time("alpha3").unwrap(),
        );
        let pts = [
            ("0", 0.0),
            ("T_gamma3/2", tg / 2.0),
            ("T_gamma3", tg),
            ("T_alpha3", ta),
            ("T_beta2", tb),
            ("t_end", sol.t_end()),
        ];
        for (name, t) in pts {
            let Some(th) = sol.state_at(t) else { continue };
            let ev = SymmetricEigen::new(jacobian(&sys, &th)).eigenvalues;
            let lo = ev.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ev.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let maxabs = lo.abs().max(hi.abs());
            println!(
                "| {n} | {name} | {t:.2} | {lo:.4e} | {hi:.4e} | {:.1e} | {:.3} |",
                lo.abs() / hi.abs(),
                6.1 / maxabs
            );
        }
    }
}
