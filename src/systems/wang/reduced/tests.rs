use super::sample::{Prepared, SeqScratch, eval_sequence, target_parts};
use super::*;
use crate::flow::{FlowError, FlowProblem};
use crate::numerics::normal::Gaussian;
use crate::numerics::testing::{central_difference, central_differences};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn model(l: usize, kq: KeyQuery, layer1: Layer1, finite_m: bool, loss_scale: f64) -> RichModel {
    RichModel {
        l,
        c_g: 0.6,
        c_i: 0.45,
        w_star: 0.5,
        kq,
        layer1,
        exact_finite_m: finite_m,
        loss_scale,
    }
}

/// Every combination of the options.
fn all_models(l: usize) -> Vec<RichModel> {
    let mut out = Vec::new();
    for kq in [KeyQuery::Factorized, KeyQuery::Single] {
        for layer1 in [
            Layer1::ExactCopy,
            Layer1::Fixed { p1: 1.7 },
            Layer1::Trained,
        ] {
            for finite_m in [true, false] {
                for ls in [1.0, 0.5] {
                    out.push(model(l, kq, layer1, finite_m, ls));
                }
            }
        }
    }
    out
}

/// A random point inside the closed form's domain: p, p₁ > 0, |w| ≤ 0.6.
fn random_point(m: &RichModel, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let lay = m.layout();
    let mut th = vec![0.0; lay.dim];
    th[lay.w_g] = rng.random_range(-1.0..1.5);
    th[lay.p] = rng.random_range(0.05..4.0);
    th[lay.v] = rng.random_range(-1.0..1.0);
    match m.kq {
        KeyQuery::Factorized => {
            th[lay.k] = rng.random_range(-0.75..0.75);
            th[lay.q] = rng.random_range(-0.75..0.75);
        }
        KeyQuery::Single => th[lay.k] = rng.random_range(-0.6..0.6),
    }
    if let Some(i) = lay.p1 {
        th[i] = rng.random_range(0.2..5.0);
    }
    th
}

fn assert_close(got: &[f64], want: &[f64], rtol: f64, what: &str) {
    let scale = want.iter().fold(1e-12f64, |s, v| s.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rtol * scale,
            "{what}: component {i}: got {g}, want {w} (scale {scale})"
        );
    }
}

#[test]
fn geometric_statistics_closed_form_equals_direct_sum_and_derivatives() {
    // Direct evaluation of the definitions, independently of `geom`.
    let direct = |p: f64, n: usize| {
        let w: Vec<f64> = (0..n).map(|k| (-p * k as f64).exp()).collect();
        let z: f64 = w.iter().sum();
        let pi: Vec<f64> = w.iter().map(|v| v / z).collect();
        let mean: f64 = pi.iter().enumerate().map(|(k, v)| k as f64 * v).sum();
        let s2: f64 = pi.iter().map(|v| v * v).sum();
        (pi[0], mean, s2, z.ln())
    };
    for &(p, n) in &[
        (0.3, 7usize),
        (0.3, 30),
        (2.5, 3),
        (0.01, 1000),
        (1e-5, 50),
        (-0.2, 40),
        (0.0, 12),
        (5.0, 2),
        (0.7, 1),
    ] {
        let g = geom(p, n);
        let (f, m, s2, lnz) = direct(p, n);
        for (got, want, what) in [
            (g.first, f, "first"),
            (g.mean, m, "mean"),
            (g.s2, s2, "s2"),
            (g.ln_z, lnz, "ln_z"),
        ] {
            assert!(
                (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                "p = {p}, n = {n}: {what} {got} vs {want}"
            );
        }
        // dS₂/dp and dπ₀/dp = π₀·mean by central differences.
        let h = 1e-6;
        let d_s2 = central_difference(|p| direct(p, n).2, p, h);
        let d_first = central_difference(|p| direct(p, n).0, p, h);
        assert!(
            (g.d_s2 - d_s2).abs() < 1e-7,
            "p = {p}, n = {n}: {} vs {d_s2}",
            g.d_s2
        );
        assert!(
            (g.first * g.mean - d_first).abs() < 1e-7,
            "p = {p}, n = {n}"
        );
    }
}

#[test]
fn closed_form_gradient_matches_central_differences_in_every_variant() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for l in [4usize, 9, 64, 700] {
        for m in all_models(l) {
            let flow = RichFlow::new(m);
            for _ in 0..6 {
                let th = random_point(&m, &mut rng);
                assert!(flow.domain_error(&th).is_none());
                let mut g = vec![0.0; th.len()];
                flow.grad(&th, &mut g);
                let fd = central_differences(|t| flow.loss(t), &th, 1e-6);
                assert_close(&g, &fd, 2e-7, &format!("L = {l}, {m:?}, at {th:?}"));
            }
        }
    }
}

#[test]
fn the_spec_odes_of_section_5_are_minus_the_gradient() {
    // §5 written out for the default (b), exact copy, finite M.
    let m = model(30, KeyQuery::Factorized, Layer1::ExactCopy, true, 1.0);
    let flow = RichFlow::new(m);
    let th = [0.3, 0.8, 0.2, 0.4, 0.5];
    let (wg, p, v, wk, wq) = (th[0], th[1], th[2], th[3], th[4]);
    let w = wk * wq;
    let mm = 28usize;
    let z: f64 = (0..mm).map(|k| (-p * k as f64).exp()).sum();
    let pi: Vec<f64> = (0..mm).map(|k| (-p * k as f64).exp() / z).collect();
    let s2: f64 = pi.iter().map(|x| x * x).sum();
    let m1: f64 = pi.iter().enumerate().map(|(k, x)| k as f64 * x).sum();
    let s2p: f64 = -2.0
        * pi.iter()
            .enumerate()
            .map(|(k, x)| x * x * (k as f64 - m1))
            .sum::<f64>();
    let (cg, ci, ws, n) = (m.c_g, m.c_i, m.w_star, 28.0);
    let want = [
        2.0 * cg * pi[0] - 2.0 * wg * s2,
        2.0 * cg * wg * pi[0] * m1 - wg * wg * s2p,
        (2.0 / n) * (ci * (1.0 - 2.0 * w * ws).powf(-0.5) - v * (1.0 - 2.0 * w * w).powf(-0.5)),
        0.0,
        0.0,
    ];
    let gw = (2.0 / n)
        * (v * v * w * (1.0 - 2.0 * w * w).powf(-1.5)
            - ci * v * ws * (1.0 - 2.0 * w * ws).powf(-1.5));
    let want = [want[0], want[1], want[2], -wq * gw, -wk * gw];
    let mut g = [0.0; 5];
    flow.grad(&th, &mut g);
    let rate: Vec<f64> = g.iter().map(|x| -x).collect();
    assert_close(&rate, &want, 1e-12, "§5");
}

#[allow(clippy::needless_range_loop)]
/// The weights β_m on token x_m of the 4-gram head's output, from the definitions: head weights
/// π_j on keys τ = L − j, layer-1 softmax weights over the τ − 1 earlier tokens (O(M²)).
fn beta_brute_force(l: usize, p: f64, p1: Option<f64>) -> Vec<f64> {
    let m = l - 2;
    let z: f64 = (0..m).map(|k| (-p * k as f64).exp()).sum();
    let mut beta = vec![0.0; l + 1];
    for j in 1..=m {
        let pij = (-p * (j - 1) as f64).exp() / z;
        let tau = l - j;
        match p1 {
            None => beta[tau - 1] += pij,
            Some(p1) => {
                let z1: f64 = (1..tau)
                    .map(|rho| (-p1 * (tau - 1 - rho) as f64).exp())
                    .sum();
                for rho in 1..tau {
                    beta[rho] += pij * (-p1 * (tau - 1 - rho) as f64).exp() / z1;
                }
            }
        }
    }
    beta
}

#[test]
fn four_gram_loss_is_the_exact_expectation_for_finite_m() {
    for l in [4usize, 5, 12, 40] {
        for p1 in [None, Some(0.4), Some(2.0)] {
            let layer1 = p1.map_or(Layer1::ExactCopy, |p1| Layer1::Fixed { p1 });
            let m = model(l, KeyQuery::Factorized, layer1, true, 1.0);
            for &(wg, p) in &[(0.7, 0.3), (-0.4, 2.0), (1.3, -0.1), (0.5, 0.0)] {
                let beta = beta_brute_force(l, p, p1);
                let b2: f64 = beta.iter().map(|b| b * b).sum();
                let want = wg * wg * b2 - 2.0 * m.c_g * wg * beta[l - 2] + m.c_g * m.c_g;
                let got = m.four_gram(wg, p, p1, true);
                assert!(
                    (got.loss - want).abs() < 1e-13,
                    "L = {l}, p1 = {p1:?}: {} vs {want}",
                    got.loss
                );
                // and the derivatives against differences of the brute force
                let f = |t: &[f64]| {
                    let beta = beta_brute_force(l, t[1], p1.map(|_| t[2]));
                    let b2: f64 = beta.iter().map(|b| b * b).sum();
                    t[0] * t[0] * b2 - 2.0 * m.c_g * t[0] * beta[l - 2] + m.c_g * m.c_g
                };
                let fd = central_differences(f, &[wg, p, p1.unwrap_or(0.0)], 1e-6);
                let g = [got.d_wg, got.d_p, if p1.is_some() { got.d_p1 } else { 0.0 }];
                assert_close(&g, &fd, 1e-7, &format!("L = {l}, p1 = {p1:?}"));
            }
        }
    }
}

#[test]
fn four_gram_loss_matches_a_monte_carlo_expectation() {
    // E[D²] over fresh Gaussian sequences, D from the per-sequence forward pass.
    let l = 10;
    for layer1 in [Layer1::ExactCopy, Layer1::Fixed { p1: 0.8 }] {
        let m = model(l, KeyQuery::Factorized, layer1, true, 1.0);
        let th = [0.9, 0.6, 0.3, 0.4, 0.4];
        let mut prep = Prepared::new(l);
        prep.prepare(&m, &th);
        let mut scratch = SeqScratch::new(l);
        let mut g = Gaussian::new(5);
        let mut x = vec![0.0; l];
        let k = 200_000;
        let (mut s, mut s2) = (0.0, 0.0);
        for _ in 0..k {
            g.fill(&mut x);
            let d = eval_sequence(&m, &prep, &x, &mut scratch).d;
            s += d * d;
            s2 += d.powi(4);
        }
        let mean = s / k as f64;
        let se = ((s2 / k as f64 - mean * mean) / k as f64).sqrt();
        let exact = m.four_gram(th[0], th[1], m.p1(&th), true).loss;
        assert!(
            (mean - exact).abs() < 4.0 * se,
            "{layer1:?}: MC {mean} ± {se} vs exact {exact}"
        );
    }
}

#[test]
fn m_to_infinity_limits_are_the_large_m_exact_sums() {
    let l = 6000;
    for p1 in [None, Some(0.5), Some(3.0)] {
        for &(wg, p) in &[(0.7, 0.4), (1.2, 2.5), (0.3, 6.0)] {
            let layer1 = p1.map_or(Layer1::ExactCopy, |p1| Layer1::Fixed { p1 });
            let m = model(l, KeyQuery::Factorized, layer1, true, 1.0);
            let exact = m.four_gram(wg, p, p1, true);
            let limit = m.four_gram(wg, p, p1, false);
            for (a, b, what) in [
                (exact.loss, limit.loss, "loss"),
                (exact.d_wg, limit.d_wg, "d_wg"),
                (exact.d_p, limit.d_p, "d_p"),
                (exact.d_p1, limit.d_p1, "d_p1"),
            ] {
                assert!((a - b).abs() < 1e-10, "p1 {p1:?}, p {p}: {what} {a} vs {b}");
            }
        }
    }
    // the exact-copy limits quoted in §4
    let p: f64 = 1.3;
    let g = geom(p, 100_000);
    assert!((g.s2 - (p / 2.0).tanh()).abs() < 1e-14);
    assert!((g.first - (1.0 - (-p).exp())).abs() < 1e-14);
    assert!((g.first * g.mean - (-p).exp()).abs() < 1e-14);
    assert!((g.d_s2 - 0.5 / (p / 2.0).cosh().powi(2)).abs() < 1e-14);
}

/// The six-parameter model on one sequence, written from §3 with explicit weight vectors.
fn naive_forward(m: &RichModel, th: &[f64], x: &[f64]) -> (f64, f64, f64) {
    let l = m.l;
    let lay = m.layout();
    let tok = |i: usize| x[i - 1];
    let p1 = m.p1(th);
    let xt = |tau: usize| -> f64 {
        match p1 {
            None => tok(tau - 1),
            Some(p1) => {
                let w: Vec<f64> = (1..tau)
                    .map(|rho| (-p1 * (tau - 1 - rho) as f64).exp())
                    .collect();
                let z: f64 = w.iter().sum();
                (1..tau).map(|rho| w[rho - 1] / z * tok(rho)).sum()
            }
        }
    };
    let mm = l - 2;
    let p = th[lay.p];
    let z: f64 = (0..mm).map(|k| (-p * k as f64).exp()).sum();
    let u_g: f64 = th[lay.w_g]
        * (1..=mm)
            .map(|j| (-p * (j - 1) as f64).exp() / z * xt(l - j))
            .sum::<f64>();
    let w = m.w(th);
    let logits: Vec<f64> = (2..l).map(|s| w * tok(l) * xt(s)).collect();
    let zi: f64 = logits.iter().map(|v| v.exp()).sum();
    let u_i: f64 = th[lay.v]
        * (2..l)
            .map(|s| logits[s - 2].exp() / zi * tok(s))
            .sum::<f64>();
    let lt: Vec<f64> = (2..l).map(|s| m.w_star * tok(l) * tok(s - 1)).collect();
    let zt: f64 = lt.iter().map(|v| v.exp()).sum();
    let y_i = m.c_i * (2..l).map(|s| lt[s - 2].exp() / zt * tok(s)).sum::<f64>();
    (u_g, u_i, m.c_g * tok(l - 2) + y_i)
}

#[test]
fn per_sequence_forward_and_gradient_match_the_naive_model() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut gauss = Gaussian::new(8);
    for l in [4usize, 7, 25] {
        for m in all_models(l).into_iter().filter(|m| m.loss_scale == 1.0) {
            let mut prep = Prepared::new(l);
            let mut scratch = SeqScratch::new(l);
            let mut x = vec![0.0; l];
            for _ in 0..4 {
                gauss.fill(&mut x);
                let mut th = random_point(&m, &mut rng);
                th[m.layout().p] -= 1.0; // negative slopes too
                prep.prepare(&m, &th);
                let ev = eval_sequence(&m, &prep, &x, &mut scratch);
                let (ug, ui, y) = naive_forward(&m, &th, &x);
                let (tg, ti) = target_parts(&m, &x);
                assert!((tg + ti - y).abs() < 1e-13);
                assert!((ev.d - (ug - m.c_g * x[l - 3])).abs() < 1e-12, "{m:?}");
                assert!((ev.e - (ui - ti)).abs() < 1e-12, "{m:?}");
                // the squared residual's gradient in θ, chained as the SGD trainer does
                let r = ev.d + ev.e;
                let g = ReducedGrad {
                    w_g: 2.0 * r * ev.ug[0],
                    p: 2.0 * r * ev.ug[1],
                    v: 2.0 * r * ev.ui[0],
                    w: 2.0 * r * ev.ui[1],
                    p1: 2.0 * r * (ev.ug[2] + ev.ui[2]),
                };
                let mut got = vec![0.0; th.len()];
                m.chain(&th, &g, &mut got);
                let f = |t: &[f64]| {
                    let (a, b, y) = naive_forward(&m, t, &x);
                    (a + b - y).powi(2)
                };
                let fd = central_differences(f, &th, 1e-6);
                assert_close(&got, &fd, 1e-6, &format!("L = {l}, {m:?}"));
            }
        }
    }
}

#[test]
fn monte_carlo_flow_gradient_matches_central_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for m in all_models(9).into_iter().filter(|m| m.exact_finite_m) {
        let mc = RichMonteCarlo::new(m, 37, 4);
        for _ in 0..3 {
            let th = random_point(&m, &mut rng);
            let mut g = vec![0.0; th.len()];
            mc.grad(&th, &mut g);
            let fd = central_differences(|t| mc.loss(t), &th, 1e-6);
            assert_close(&g, &fd, 1e-7, &format!("{m:?}"));
        }
    }
}

#[test]
fn monte_carlo_loss_is_the_sample_mean_with_the_exact_four_gram_square() {
    // ℓ̂ = ℓ_G + mean(2DE + E²): check against the naive model's mean (ŷ − y)² minus mean D².
    let m = model(
        11,
        KeyQuery::Factorized,
        Layer1::Fixed { p1: 1.1 },
        true,
        0.5,
    );
    let mc = RichMonteCarlo::new(m, 50, 9);
    let th = [0.4, 0.9, 0.35, 0.5, 0.6];
    let (mut r2, mut d2) = (0.0, 0.0);
    for k in 0..50 {
        let x = mc.sequence(k);
        let (ug, ui, y) = naive_forward(&m, &th, x);
        r2 += (ug + ui - y).powi(2);
        d2 += (ug - m.c_g * x[m.l - 3]).powi(2);
    }
    let exact_g = m.four_gram(th[0], th[1], Some(1.1), true).loss;
    let want = 0.5 * (exact_g + (r2 - d2) / 50.0);
    assert!((mc.loss(&th) - want).abs() < 1e-13);
    let mut obs = [0.0; 4];
    mc.observables(&th, &mut obs);
    assert!((obs[0] + obs[1] + obs[3] - want).abs() < 1e-13);
}

#[test]
fn the_validity_guard_is_a_typed_error_not_nan() {
    let m = model(20, KeyQuery::Factorized, Layer1::ExactCopy, true, 1.0);
    let flow = RichFlow::new(m);
    // w = 0.8·0.9 = 0.72: w² = 0.518 ≥ ½
    let err = flow.domain_error(&[0.0, 0.1, 0.0, 0.8, 0.9]).unwrap();
    assert!(err.contains("w^2 = 0.51"), "{err}");
    // w·w* ≥ ½ needs w ≥ 1 here, beyond w² ≥ ½ already; with w* = 0.7, w = 0.71 trips both
    let m2 = RichModel { w_star: 0.7, ..m };
    let err = RichFlow::new(m2)
        .domain_error(&[0.0, 0.1, 0.0, 0.72, 1.0])
        .unwrap();
    assert!(err.contains("w^2"), "{err}");
    let e = FlowProblem::builder(&flow)
        .init(&[0.0, 0.1, 0.0, 0.8, 0.9])
        .t_max(10.0)
        .build()
        .err()
        .unwrap();
    assert!(matches!(e, FlowError::OutsideDomain { .. }), "{e}");
    assert!(e.to_string().contains("monte_carlo"), "{e}");
    // the M → ∞ limits need p > 0
    let lim = RichFlow::new(RichModel {
        exact_finite_m: false,
        ..m
    });
    assert!(lim.domain_error(&[0.0, -0.1, 0.0, 0.1, 0.1]).is_some());
    assert!(lim.domain_error(&[0.0, 0.1, 0.0, 0.1, 0.1]).is_none());
}
