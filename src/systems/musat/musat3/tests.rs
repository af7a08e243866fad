use super::*;
use crate::flow::GradientFlow;
use crate::numerics::testing::{assert_gradient_matches, central_differences};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// §7.1 written out directly (q = N), as an independent reference for the suffix-sum code.
fn closed_form_last(n: usize, th: &[f64]) -> (f64, [f64; 3]) {
    let (al, be, ga) = (th[0], th[1], th[2]);
    let nf = n as f64;
    let k = 2.0 * nf - 1.0;
    let a = al.exp() / (al.exp() + 2.0 * nf - 2.0);
    let b = (be * a).exp() / ((be * a).exp() + k);
    let l = (ga * b - 1.0).powi(2) + ga * ga * (1.0 - b).powi(2) / k;
    let dl_dg = 2.0 * b * (ga * b - 1.0) + 2.0 * ga * (1.0 - b).powi(2) / k;
    let dl_db = 2.0 * ga * (ga * b - 1.0) - 2.0 * ga * ga * (1.0 - b) / k;
    let dl_dbeta = dl_db * b * (1.0 - b) * a;
    let dl_dalpha = dl_db * b * (1.0 - b) * be * a * (1.0 - a);
    (l, [dl_dalpha, dl_dbeta, dl_dg])
}

/// §7.2 evaluated naively: for every q build all 2N logits ω_k, the softmax, and L_q.
fn naive_uniform_loss(n: usize, th: &[f64]) -> f64 {
    let (al, be, ga) = (th[0], th[1], th[2]);
    let a = |i: usize| al.exp() / (al.exp() + (2 * i - 2) as f64);
    let mut total = 0.0;
    for q in 1..=n {
        // keys k = 1..2N: item i at 2i−1, label i at 2i
        let mut omega = vec![0.0; 2 * n + 1];
        omega[2 * q] = a(q);
        for i in (q + 1)..=n {
            omega[2 * i - 1] = 1.0 / (2 * i - 2) as f64;
            omega[2 * i] = (1.0 - a(i)) / (2 * i - 2) as f64;
        }
        let z: f64 = (1..=2 * n).map(|k| (be * omega[k]).exp()).sum();
        let b: Vec<f64> = (0..=2 * n).map(|k| (be * omega[k]).exp() / z).collect();
        let mut lq = (ga * b[2 * q] - 1.0).powi(2);
        for (k, bk) in b.iter().enumerate().skip(1) {
            if k != 2 * q {
                lq += ga * ga * bk * bk;
            }
        }
        total += lq;
    }
    total / n as f64
}

fn random_point(rng: &mut ChaCha8Rng) -> Vec<f64> {
    vec![
        rng.random_range(-2.0..4.0),
        rng.random_range(-2.0..6.0),
        rng.random_range(-0.5..1.5),
    ]
}

#[test]
fn gradient_matches_central_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for &n in &[2usize, 3, 8, 50, 400] {
        for query in [Query::Last, Query::Uniform] {
            for scale in [1.0, 0.5] {
                let sys = Musat3::new(n, query, scale);
                for _ in 0..10 {
                    let th = random_point(&mut rng);
                    let mut g = vec![0.0; 3];
                    sys.grad(&th, &mut g);
                    let fd = central_differences(|t| sys.loss(t), &th, 1e-5);
                    let what = format!("N={n} {query:?} scale={scale} θ={th:?}");
                    assert_gradient_matches(&g, &fd, 1e-7, sys.names(), &what);
                }
            }
        }
    }
}

#[test]
fn last_query_equals_the_closed_form_of_7_1() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for &n in &[2usize, 5, 64, 1000] {
        let sys = Musat3::new(n, Query::Last, 1.0);
        for _ in 0..20 {
            let th = random_point(&mut rng);
            let (l, g) = closed_form_last(n, &th);
            let mut got = vec![0.0; 3];
            sys.grad(&th, &mut got);
            assert!((sys.loss(&th) - l).abs() < 1e-13 * (1.0 + l.abs()));
            for i in 0..3 {
                assert!(
                    (got[i] - g[i]).abs() < 1e-12 * (1.0 + g[i].abs()),
                    "N={n} i={i} {} vs {}",
                    got[i],
                    g[i]
                );
            }
        }
    }
}

#[test]
fn uniform_query_equals_the_naive_sum_over_queries() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for &n in &[2usize, 3, 7, 40] {
        let sys = Musat3::new(n, Query::Uniform, 1.0);
        for _ in 0..20 {
            let th = random_point(&mut rng);
            let reference = naive_uniform_loss(n, &th);
            let got = sys.loss(&th);
            assert!(
                (got - reference).abs() < 1e-12 * (1.0 + reference),
                "N={n} θ={th:?}: {got} vs {reference}"
            );
        }
    }
}

#[test]
fn gamma_gradient_at_the_origin_is_gamma_minus_one_over_n() {
    // §7.3 phase 1: at α = β = 0, b = 1/(2N) and ∂L/∂γ = (γ − 1)/N exactly.
    for &n in &[2usize, 9, 333] {
        let sys = Musat3::new(n, Query::Last, 1.0);
        for &gamma in &[0.0, 0.3, 1.7] {
            let mut g = vec![0.0; 3];
            sys.grad(&[0.0, 0.0, gamma], &mut g);
            let expected = (gamma - 1.0) / n as f64;
            assert!((g[GAMMA3] - expected).abs() < 1e-15);
            let mut obs = [0.0; 2];
            sys.observables(&[0.0, 0.0, gamma], &mut obs);
            assert!((obs[1] - 1.0 / (2 * n) as f64).abs() < 1e-15);
        }
    }
}

#[test]
fn stable_for_large_coordinates() {
    let sys = Musat3::new(4096, Query::Uniform, 1.0);
    let th = [800.0, 900.0, 1.0];
    let mut g = vec![0.0; 3];
    sys.grad(&th, &mut g);
    assert!(sys.loss(&th).is_finite() && g.iter().all(|v| v.is_finite()));
}
