use super::*;
use crate::flow::{FlowProblem, Stage};
use crate::numerics::testing::{assert_gradient_matches, central_differences};
use crate::systems::chen::common::RpeWindow;
use crate::systems::chen::markov::{ChainShape, DataSpec, KernelPrior, Start, generate, item_rng};
use rand::Rng;

fn data(d: usize, parents: &[usize], length: usize, n: usize, seed: u64) -> Sequences {
    generate(&DataSpec {
        prior: KernelPrior::Dirichlet {
            shape: ChainShape::new(d, parents),
            alpha: 0.4,
        },
        length,
        start: Start::Uniform,
        n_sequences: n,
        seed,
    })
}

fn model(
    heads: usize,
    window: usize,
    degree: usize,
    rpe: RpeWindow,
    norm: HeadNorm,
    loss: LossKind,
) -> GihModel {
    GihModel {
        shape: TfShape {
            d: 3,
            heads,
            window,
            degree,
            rpe_window: rpe,
        },
        head_norm: norm,
        loss,
    }
}

/// §4.1 evaluated position by position, with no bucketing: an independent reference.
fn naive_loss(m: &GihModel, data: &Sequences, theta: &[f64]) -> f64 {
    let sh = m.shape;
    let subsets = Subsets::new(sh.heads, sh.degree);
    let lay = Layout {
        n_subsets: subsets.len(),
        heads: sh.heads,
        window: sh.window,
    };
    let c = &theta[lay.c_range()];
    let n2: f64 = c.iter().map(|v| v * v).sum();
    let a = theta[lay.a()];
    let len = data.length;
    let mut total = 0.0;
    for j in 0..data.len() {
        let x = data.sequence(j);
        // v̄[l][h] for l = 0..=L (0-based; l = L is the query x_{L+1})
        let mut vbar = vec![vec![vec![0.0; sh.d]; sh.heads]; len + 1];
        for l in 0..=len {
            for h in 0..sh.heads {
                let valid: Vec<usize> = (0..sh.window).filter(|&i| sh.offset(h, i) <= l).collect();
                if valid.is_empty() {
                    continue;
                }
                let mx = valid
                    .iter()
                    .map(|&i| theta[lay.w(h, i)])
                    .fold(f64::MIN, f64::max);
                let z: f64 = valid.iter().map(|&i| (theta[lay.w(h, i)] - mx).exp()).sum();
                for &i in &valid {
                    vbar[l][h][x[l - sh.offset(h, i)] as usize] +=
                        (theta[lay.w(h, i)] - mx).exp() / z;
                }
                if m.head_norm == HeadNorm::L2 {
                    let nn = vbar[l][h].iter().map(|v| v * v).sum::<f64>().sqrt();
                    for v in vbar[l][h].iter_mut() {
                        *v /= nn + 1e-7;
                    }
                }
            }
        }
        let kl: Vec<f64> = (0..len)
            .map(|l| {
                let g: Vec<f64> = (0..sh.heads)
                    .map(|h| (0..sh.d).map(|k| vbar[l][h][k] * vbar[len][h][k]).sum())
                    .collect();
                subsets
                    .members
                    .iter()
                    .enumerate()
                    .map(|(k, s)| c[k] * c[k] / n2 * s.iter().map(|&h| g[h]).product::<f64>())
                    .sum()
            })
            .collect();
        let zmax = kl.iter().map(|k| a * k).fold(f64::MIN, f64::max);
        let z: f64 = kl.iter().map(|k| (a * k - zmax).exp()).sum();
        let mut yhat = vec![0.0; sh.d];
        for l in 0..len {
            yhat[x[l] as usize] += (a * kl[l] - zmax).exp() / z;
        }
        let y = x[len] as usize;
        total += match m.loss {
            LossKind::Paper { epsilon } => -(yhat[y] + epsilon).ln(),
            LossKind::Code => {
                let lse = yhat.iter().map(|v| v.exp()).sum::<f64>().ln();
                lse - yhat[y]
            }
        };
    }
    total / data.len() as f64
}

fn random_theta(flow: &GihFlow, rng: &mut impl Rng) -> Vec<f64> {
    let lay = *flow.layout();
    let mut th = vec![0.0; lay.len()];
    for k in lay.c_range() {
        th[k] = rng.random_range(0.2..1.0) * if rng.random::<bool>() { 1.0 } else { -1.0 };
    }
    for k in lay.w_range() {
        th[k] = rng.random_range(-1.5..1.5);
    }
    th[lay.a()] = rng.random_range(0.5..4.0);
    th
}

fn variants() -> Vec<GihModel> {
    let paper = LossKind::Paper { epsilon: 0.1 };
    vec![
        model(3, 3, 2, RpeWindow::Common, HeadNorm::None, paper),
        model(3, 3, 2, RpeWindow::Common, HeadNorm::L2, paper),
        model(3, 3, 3, RpeWindow::Staggered, HeadNorm::L2, LossKind::Code),
        model(2, 4, 1, RpeWindow::Common, HeadNorm::None, LossKind::Code),
        model(
            3,
            2,
            2,
            RpeWindow::Staggered,
            HeadNorm::None,
            LossKind::Paper { epsilon: 1e-3 },
        ),
    ]
}

#[test]
fn bucketed_loss_equals_the_position_by_position_loss() {
    let mut rng = item_rng(1, 0);
    for (v, m) in variants().into_iter().enumerate() {
        let d = data(3, &[1, 2], 14, 25, 100 + v as u64);
        let flow = GihFlow::new(m, &d);
        for _ in 0..3 {
            let th = random_theta(&flow, &mut rng);
            let got = flow.loss(&th);
            let want = naive_loss(&m, &d, &th);
            assert!(
                (got - want).abs() < 1e-12 * want.abs().max(1.0),
                "variant {v}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn gradient_matches_central_differences() {
    let mut rng = item_rng(2, 0);
    for (v, m) in variants().into_iter().enumerate() {
        let d = data(3, &[1, 2], 12, 20, 200 + v as u64);
        let flow = GihFlow::new(m, &d);
        for _ in 0..2 {
            let th = random_theta(&flow, &mut rng);
            let mut g = vec![0.0; th.len()];
            flow.grad(&th, &mut g);
            let fd = central_differences(|t| flow.loss(t), &th, 1e-5);
            assert_gradient_matches(&g, &fd, 1e-7, flow.names(), &format!("variant {v}"));
        }
    }
}

/// The gradient is byte-identical whatever the number of threads (fixed chunks, ordered sum).
#[test]
fn gradient_is_identical_on_one_and_two_threads() {
    let m = variants()[1];
    let d = data(3, &[1, 2], 30, 200, 7);
    let flow = GihFlow::new(m, &d);
    let th = random_theta(&flow, &mut item_rng(3, 0));
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut g = vec![0.0; th.len()];
            flow.grad(&th, &mut g);
            (flow.loss(&th), g)
        })
    };
    let (l1, g1) = run(1);
    let (l2, g2) = run(2);
    assert_eq!(l1.to_bits(), l2.to_bits());
    assert!(g1.iter().zip(&g2).all(|(a, b)| a.to_bits() == b.to_bits()));
}

/// Stage I (only c moves): ‖c‖ is conserved by the flow because 𝓛 depends on c only through
/// p = c²/‖c‖² (Σ_S c_S ∂𝓛/∂c_S = 0), whatever the sample.
#[test]
fn stage_one_flow_conserves_the_norm_of_c() {
    let m = variants()[0];
    let d = data(3, &[1, 2], 40, 300, 11);
    let flow = GihFlow::new(m, &d);
    let lay = *flow.layout();
    let init = GihInit {
        c0: 0.01,
        a0: 0.5,
        w_plus: 3.0,
        w_minus: 0.1,
    };
    let th0 = init.theta(&m.shape, &lay);
    let norm = |th: &[f64]| th[lay.c_range()].iter().map(|v| v * v).sum::<f64>().sqrt();
    let frozen: Vec<usize> = lay.w_range().chain([lay.a()]).collect();
    let sol = FlowProblem::builder(&flow)
        .init(&th0)
        .stages(vec![Stage::new("I", 0.05).frozen(frozen)])
        .tolerances(1e-10, 1e-14)
        .build()
        .unwrap()
        .solve()
        .unwrap();
    let n0 = norm(&th0);
    let p0 = {
        let mut p = vec![0.0; lay.n_subsets];
        simplex_weights(&th0[lay.c_range()], &mut p);
        p
    };
    let mut moved = 0.0f64;
    for k in 0..=20 {
        let t = 0.05 * k as f64 / 20.0;
        let th = sol.state_at(t).unwrap();
        assert!(
            (norm(&th) - n0).abs() < 1e-9 * n0,
            "t = {t}: {} vs {n0}",
            norm(&th)
        );
        let mut p = vec![0.0; lay.n_subsets];
        simplex_weights(&th[lay.c_range()], &mut p);
        moved = moved.max(
            p.iter()
                .zip(&p0)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max),
        );
    }
    // and the flow did move p (the test is not vacuous)
    assert!(moved > 0.05, "{moved}");
    // the algebraic identity behind it, at a random point
    let th = random_theta(&flow, &mut item_rng(4, 0));
    let mut g = vec![0.0; th.len()];
    flow.grad(&th, &mut g);
    let radial: f64 = lay.c_range().map(|k| th[k] * g[k]).sum();
    assert!(radial.abs() < 1e-13, "{radial}");
}

/// U_S at a = 0 computed directly: s_l = 1/L, ŷ_y = #{l : x_l = y}/L,
/// β_l = (1/L)(1{x_l = y} − ŷ_y)/(ŷ_y + ε), U_S = mean over sequences of Σ_l β_l G_{l,S}.
fn drive_at_zero_a(m: &GihModel, data: &Sequences, theta: &[f64], epsilon: f64) -> Vec<f64> {
    let sh = m.shape;
    let subsets = Subsets::new(sh.heads, sh.degree);
    let lay = Layout {
        n_subsets: subsets.len(),
        heads: sh.heads,
        window: sh.window,
    };
    let len = data.length;
    let mut u = vec![0.0; subsets.len()];
    let sig: Vec<Vec<f64>> = (0..sh.heads)
        .map(|h| {
            let w: Vec<f64> = (0..sh.window).map(|i| theta[lay.w(h, i)]).collect();
            let mut s = vec![0.0; sh.window];
            softmax(&w, &mut s);
            s
        })
        .collect();
    for j in 0..data.len() {
        let x = data.sequence(j);
        let y = x[len] as usize;
        let yhat = x[..len].iter().filter(|&&t| t as usize == y).count() as f64 / len as f64;
        for l in 0..len {
            // raw head outputs (head_norm none); restricted softmax at short prefixes
            let g: Vec<f64> = (0..sh.heads)
                .map(|h| {
                    let valid: Vec<usize> =
                        (0..sh.window).filter(|&i| sh.offset(h, i) <= l).collect();
                    if valid.is_empty() {
                        return 0.0;
                    }
                    let z: f64 = valid.iter().map(|&i| sig[h][i]).sum();
                    let mut total = 0.0;
                    for &i in &valid {
                        for i2 in 0..sh.window {
                            if x[l - sh.offset(h, i)] == x[len - sh.offset(h, i2)] {
                                total += sig[h][i] / z * sig[h][i2];
                            }
                        }
                    }
                    total
                })
                .collect();
            let beta =
                (f64::from(u8::from(x[l] as usize == y)) - yhat) / (yhat + epsilon) / len as f64;
            for (k, s) in subsets.members.iter().enumerate() {
                u[k] += beta * s.iter().map(|&h| g[h]).product::<f64>();
            }
        }
    }
    u.iter_mut().for_each(|v| *v /= data.len() as f64);
    u
}

/// With a₀ → 0 the driving terms U_S no longer depend on p (s_l = 1/L), and the stage-I flow
/// must be the replicator closed form with U_S computed independently at a = 0.
#[test]
fn stage_one_flow_is_the_replicator_when_the_drive_is_fixed() {
    let eps = 0.2;
    let m = model(
        3,
        3,
        2,
        RpeWindow::Common,
        HeadNorm::None,
        LossKind::Paper { epsilon: eps },
    );
    let d = data(3, &[1, 2], 30, 400, 12);
    let flow = GihFlow::new(m, &d);
    let lay = *flow.layout();
    let a0 = 1e-7;
    let init = GihInit {
        c0: 0.01,
        a0,
        w_plus: 3.0,
        w_minus: 0.1,
    };
    let mut th0 = init.theta(&m.shape, &lay);
    // unequal start on the simplex
    for k in lay.c_range() {
        th0[k] *= 1.0 + 0.1 * k as f64;
    }
    let u = drive_at_zero_a(&m, &d, &th0, eps);
    let rate = replicator_rate(&th0[lay.c_range()], a0);
    let spread =
        u.iter().fold(f64::MIN, |a, &b| a.max(b)) - u.iter().fold(f64::MAX, |a, &b| a.min(b));
    let t_end = 6.0 / (rate * spread);
    let frozen: Vec<usize> = lay.w_range().chain([lay.a()]).collect();
    let sol = FlowProblem::builder(&flow)
        .init(&th0)
        .stages(vec![Stage::new("I", t_end).frozen(frozen)])
        .tolerances(1e-11, 1e-14)
        .build()
        .unwrap()
        .solve()
        .unwrap();
    let mut p0 = vec![0.0; lay.n_subsets];
    simplex_weights(&th0[lay.c_range()], &mut p0);
    let mut pred = vec![0.0; lay.n_subsets];
    let mut p = vec![0.0; lay.n_subsets];
    let mut max_change = 0.0f64;
    for k in 0..=10 {
        let t = t_end * k as f64 / 10.0;
        replicator(&p0, &u, rate, t, &mut pred);
        let th = sol.state_at(t).unwrap();
        simplex_weights(&th[lay.c_range()], &mut p);
        for s in 0..p.len() {
            assert!(
                (p[s] - pred[s]).abs() < 1e-6,
                "t = {t}, S = {}: flow {} vs closed form {}",
                flow.subsets().label(s),
                p[s],
                pred[s]
            );
            max_change = max_change.max((p[s] - p0[s]).abs());
        }
    }
    assert!(max_change > 0.3, "the flow must move p: {max_change}");
}

/// Replacing the sample in place (fresh batches) gives bit for bit the loss and gradient of a
/// flow built on the new sample, whether the new sample is larger or smaller (the buffers grow
/// and shrink), and for every model variant.
#[test]
fn set_data_equals_a_flow_built_on_the_new_sample() {
    for m in variants() {
        let small = data(3, &[1, 2], 12, 7, 21);
        let large = data(3, &[1, 2], 12, 90, 22);
        let other = data(3, &[1, 2], 12, 31, 23);
        let mut reused = GihFlow::new(m, &small);
        let th = random_theta(&reused, &mut item_rng(9, 1));
        let n = th.len();
        for next in [&large, &other, &small] {
            reused.set_data(next);
            let fresh = GihFlow::new(m, next);
            let (mut g1, mut g2) = (vec![0.0; n], vec![0.0; n]);
            let l1 = reused.loss_and_grad(&th, &mut g1);
            let l2 = fresh.loss_and_grad(&th, &mut g2);
            assert_eq!(l1.to_bits(), l2.to_bits(), "{m:?}");
            assert_eq!(g1, g2, "{m:?}");
            assert_eq!(reused.n_sequences(), next.len());
        }
    }
}
