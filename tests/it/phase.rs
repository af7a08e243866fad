//! Phase portraits: the arrows are the system's velocity, and the invariant curve of theory is
//! the trajectory from the origin.

use crate::support::*;
use ihdyn::flow::{FlowProblem, GradientFlow};
use ihdyn::systems::musat::musat3::{ALPHA3, BETA2, GAMMA3, Musat3, Query, alpha_beta_invariant};

#[test]
fn grid_arrows_are_minus_the_gradient() {
    let dir = tmp();
    let out = dir.path().join("p");
    let scenario = repo().join("scenarios/musat3-phase.toml");
    run_into(dir.path(), scenario.to_str().unwrap(), &out, &["-q"]);
    let sys = Musat3::new(8, Query::Last, 1.0);
    for (file, fixed, x_axis, y_axis) in [
        ("phase-alpha-beta.csv", (GAMMA3, 1.0), BETA2, ALPHA3),
        ("phase-gamma-beta.csv", (ALPHA3, 0.0), BETA2, GAMMA3),
    ] {
        let text = read_text(&out.join(file));
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), "x,y,dx,dy,speed");
        let rows: Vec<Vec<f64>> = lines
            .map(|l| l.split(',').map(|c| c.parse().unwrap()).collect())
            .collect();
        assert_eq!(rows.len(), 21 * 21);
        for row in rows.iter().step_by(37) {
            let mut th = [0.0; 3];
            th[fixed.0] = fixed.1;
            th[x_axis] = row[0];
            th[y_axis] = row[1];
            let mut g = [0.0; 3];
            sys.grad(&th, &mut g);
            assert_eq!(row[2], -g[x_axis], "{file} at {row:?}");
            assert_eq!(row[3], -g[y_axis], "{file} at {row:?}");
            assert!((row[4] - row[2].hypot(row[3])).abs() <= 1e-15 * row[4]);
        }
    }
    for f in [
        "phase-alpha-beta-trajectories.csv",
        "phase-alpha-beta.png",
        "phase-gamma-beta.svg",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    assert_eq!(
        first_line(&out.join("phase-alpha-beta-trajectories.csv")),
        "trajectory,t,alpha3,beta2,gamma3"
    );
}

#[test]
fn the_trajectory_from_zero_lies_on_the_invariant_curve() {
    // Two independent integrations: the flow in t, and dα/dβ = β(1 − a(α)) in β.
    for &n in &[3usize, 8, 50] {
        let sys = Musat3::new(n, Query::Last, 1.0);
        let sol = FlowProblem::builder(&sys)
            .t_max(2.0 * (n * n) as f64)
            .tolerances(1e-11, 1e-13)
            .build()
            .unwrap()
            .solve()
            .unwrap();
        let beta_end = sol.state_at(sol.t_end()).unwrap()[BETA2];
        let curve = alpha_beta_invariant(n, (0.0, 0.0), beta_end, 4001);
        for k in 1..100 {
            let th = sol.state_at(sol.t_end() * k as f64 / 100.0).unwrap();
            // linear interpolation of the curve at β(t)
            let b = th[BETA2];
            let i = curve.partition_point(|p| p.0 < b).clamp(1, curve.len() - 1);
            let (p, q) = (curve[i - 1], curve[i]);
            let alpha = p.1 + (q.1 - p.1) * (b - p.0) / (q.0 - p.0);
            assert!(
                (alpha - th[ALPHA3]).abs() < 1e-6 * (1.0 + alpha.abs()),
                "N={n} β={b}: {alpha} vs {}",
                th[ALPHA3]
            );
        }
    }
}

#[test]
fn the_invariant_curve_tends_to_half_beta_squared_when_a_is_small() {
    // a ≈ e^α/(2N) → 0 for large N, so α(β) → β²/2 from below.
    let curve = alpha_beta_invariant(1_000_000, (0.0, 0.0), 2.0, 201);
    for &(b, a) in &curve {
        assert!(a <= b * b / 2.0 + 1e-12);
        assert!((a - b * b / 2.0).abs() < 2e-5, "β={b}: {a}");
    }
}

#[test]
fn bad_phase_input_is_refused() {
    let base = "[system]\nkind = \"musat3\"\nn = 8\n[[phase]]\n";
    let cases = [
        (
            "x = \"beta\"\ny = \"alpha3\"\nx_range = [0, 1]\ny_range = [0, 1]\n",
            "phase[0].x: unknown coordinate `beta`, expected one of alpha3, beta2, gamma3",
        ),
        (
            "x = \"alpha3\"\ny = \"alpha3\"\nx_range = [0, 1]\ny_range = [0, 1]\n",
            "phase[0].y: must differ from x",
        ),
        (
            "x = \"beta2\"\ny = \"alpha3\"\nx_range = [1, 0]\ny_range = [0, 1]\n",
            "phase[0].x_range: must be [lo, hi] with lo < hi, got [1, 0]",
        ),
        (
            "x = \"beta2\"\ny = \"alpha3\"\nx_range = [0, 1]\ny_range = [0, 1]\ngrid = 1\n",
            "phase[0].grid: must be in 2..=200, got 1",
        ),
        (
            "x = \"beta2\"\ny = \"alpha3\"\nx_range = [0, 1]\ny_range = [0, 1]\nfixed = { alpha3 = 1 }\n",
            "phase[0].fixed.alpha3: is an axis of the slice",
        ),
    ];
    let cases: Vec<(&str, String, &str)> = cases
        .iter()
        .map(|&(text, message)| (text, format!("{base}{text}"), message))
        .collect();
    assert_refused(&cases, None);
}
