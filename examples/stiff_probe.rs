use ihdyn::flow::{EventSpec, FlowProblem, GradientFlow, Method, Quantity};
use ihdyn::systems::musat::data::LabelPosition;
use ihdyn::systems::musat::musat3::Query;
use ihdyn::systems::musat::musat19::Musat19;
use ihdyn::systems::musat::subspace::{ALPHA3, BETA2, GAMMA3};
use nalgebra::{DMatrix, SymmetricEigen};

fn hessian(f: &dyn GradientFlow, th: &[f64]) -> DMatrix<f64> {
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
            h[(i, j)] = (gp[i] - gm[i]) / (2.0 * e);
        }
    }
    (&h + h.transpose()) * 0.5
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let query = if args.get(1).map(|s| s.as_str()) == Some("uniform") { Query::Uniform } else { Query::Last };
    let ns: Vec<usize> = args[2..].iter().map(|s| s.parse().unwrap()).collect();
    for n in ns {
        let sys = Musat19::new(n, query, LabelPosition::Rotated, 1.0);
        let t0 = std::time::Instant::now();
        let sol = FlowProblem::builder(&sys)
            .t_max(20.0 * (n * n) as f64)
            .method(Method::Dop853)
            .max_steps(100_000_000)
            .event(EventSpec::rises("g", Quantity::Coord(GAMMA3), 0.5))
            .event(EventSpec::rises("b", Quantity::Coord(BETA2), 0.5))
            .event(EventSpec::rises("a", Quantity::Coord(ALPHA3), 0.5))
            .event(EventSpec::peak("peak", Quantity::Rate(ALPHA3)))
            .stop_after_events(1.0)
            .tail_steps(1_000_000)
            .build().unwrap().solve().unwrap();
        let secs = t0.elapsed().as_secs_f64();
        let (tg, tb, ta) = (sol.event_time("g").unwrap(), sol.event_time("b").unwrap(), sol.event_time("a").unwrap());
        println!("N = {n}: T_g {tg:.4} T_b {tb:.4} T_a {ta:.4} t_end {:.1}; {:?}; {secs:.2}s", sol.t_end(), sol.stats);
        let pts = [("T_g/2", tg / 2.0), ("T_g", tg), ("(T_g+T_b)/2", 0.5 * (tg + tb)), ("T_b", tb), ("T_a", ta), ("1.5 T_a", 1.5 * ta), ("2 T_a", 2.0 * ta)];
        for (name, t) in pts {
            if t > sol.t_end() { continue; }
            let th = sol.state_at(t).unwrap();
            let h = hessian(&sys, &th);
            let mut ev: Vec<f64> = SymmetricEigen::new(h).eigenvalues.iter().copied().collect();
            ev.sort_by(|a, b| b.abs().partial_cmp(&a.abs()).unwrap());
            let lmax = ev[0].abs();
            let neg: Vec<f64> = ev.iter().copied().filter(|v| *v < 0.0).collect();
            let minabs = ev.iter().fold(f64::INFINITY, |m, v| m.min(v.abs()));
            println!("  {name:>12} t={t:10.2} |lam|max={lmax:.4e} lam_max*T_a={:.3e} min|lam|={minabs:.2e} neg={:?} top3={:?}",
                lmax * ta, neg.iter().map(|v| format!("{v:.2e}")).collect::<Vec<_>>(), &ev[..3].iter().map(|v| format!("{v:.3e}")).collect::<Vec<_>>());
        }
    }
}
