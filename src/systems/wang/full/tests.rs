use super::*;
use crate::numerics::testing::central_differences;
use crate::systems::wang::reduced::{KeyQuery, Layer1};

fn target(l: usize) -> RichModel {
    RichModel {
        l,
        c_g: 0.5,
        c_i: 0.7,
        w_star: 0.45,
        kq: KeyQuery::Factorized,
        layer1: Layer1::ExactCopy,
        exact_finite_m: true,
        loss_scale: 1.0,
    }
}

fn random_params(model: &FullModel, seed: u64, scale: f64) -> Vec<f64> {
    let mut th = vec![0.0; model.n_params()];
    Gaussian::new(seed).fill(&mut th);
    for v in &mut th {
        *v *= scale;
    }
    th
}

#[test]
fn backward_matches_central_differences() {
    for (shape, seed) in [
        (
            FullShape {
                l: 6,
                d: 3,
                d_head: 2,
                heads1: 2,
                heads2: 2,
            },
            1u64,
        ),
        (
            FullShape {
                l: 5,
                d: 2,
                d_head: 1,
                heads1: 1,
                heads2: 3,
            },
            2,
        ),
        (
            FullShape {
                l: 8,
                d: 4,
                d_head: 3,
                heads1: 1,
                heads2: 2,
            },
            3,
        ),
    ] {
        let model = FullModel::new(shape, target(shape.l));
        let th = random_params(&model, seed, 0.6);
        let batch = sample_batch(shape.l, 5, seed + 10);
        let mut engine = BatchEngine::new(&model);
        let mut grad = vec![0.0; th.len()];
        let loss = engine.loss_and_grad(&model, &th, &batch, &mut grad);
        let f = |t: &[f64]| -> f64 {
            let mut ws = Workspace::new(&shape);
            (0..5)
                .map(|k| {
                    let x = &batch[k * shape.l..(k + 1) * shape.l];
                    (model.forward(t, x, &mut ws) - model.target(x)).powi(2)
                })
                .sum::<f64>()
                / 5.0
        };
        assert!((loss - f(&th)).abs() < 1e-14);
        let h = 1e-6;
        let scale = grad.iter().fold(1e-3f64, |s, g| s.max(g.abs()));
        for (i, fd) in central_differences(f, &th, h).into_iter().enumerate() {
            assert!(
                (grad[i] - fd).abs() < 1e-7 * scale,
                "{shape:?}: parameter {i}: backward {} vs central difference {fd}",
                grad[i]
            );
        }
    }
}

#[test]
fn embedded_reduced_parameters_give_the_reduced_heads() {
    let shape = FullShape {
        l: 9,
        d: 3,
        d_head: 1,
        heads1: 1,
        heads2: 2,
    };
    let model = FullModel::new(shape, target(9));
    let (wg, p, v, wk, wq) = (0.8, 1.3, -0.6, 0.9, 0.7);
    let th = model.embed(wg, p, v, wk, wq, 60.0);
    let ro = model.readoff(&th);
    assert!((ro.w_g - wg).abs() < 1e-15 && (ro.p - p).abs() < 1e-15);
    assert!((ro.v - v).abs() < 1e-15 && (ro.w - wk * wq).abs() < 1e-15);
    assert!((ro.p1 - 60.0).abs() < 1e-15);
    let mut ws = Workspace::new(&shape);
    let batch = sample_batch(9, 20, 4);
    for k in 0..20 {
        let x = &batch[k * 9..(k + 1) * 9];
        // Written from the reduced heads: keys τ = 1..L−1 (1-based); position 1 has no
        // layer-1 output (x̃_1 = 0), x̃_τ = x_{τ−1} otherwise.
        let l = 9usize;
        let xt = |tau: usize| if tau == 1 { 0.0 } else { x[tau - 2] };
        let wg_weights: Vec<f64> = (1..l)
            .map(|tau| (-p * (l - tau - 1) as f64).exp())
            .collect();
        let zg: f64 = wg_weights.iter().sum();
        let u_g: f64 = wg
            * (1..l)
                .map(|tau| wg_weights[tau - 1] / zg * xt(tau))
                .sum::<f64>();
        let w = wk * wq;
        let ih: Vec<f64> = (1..l).map(|tau| (w * x[l - 1] * xt(tau)).exp()).collect();
        let zi: f64 = ih.iter().sum();
        let u_i: f64 = v * (1..l).map(|tau| ih[tau - 1] / zi * x[tau - 1]).sum::<f64>();
        let yhat = model.forward(&th, x, &mut ws);
        assert!(
            (yhat - (u_g + u_i)).abs() < 1e-13,
            "{yhat} vs {}",
            u_g + u_i
        );
    }
}

#[test]
fn batch_gradient_is_identical_on_one_and_two_threads() {
    let shape = FullShape {
        l: 10,
        d: 4,
        d_head: 2,
        heads1: 1,
        heads2: 2,
    };
    let model = FullModel::new(shape, target(10));
    let th = random_params(&model, 7, 0.4);
    let batch = sample_batch(10, 37, 8);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut engine = BatchEngine::new(&model);
            let mut grad = vec![0.0; th.len()];
            let loss = engine.loss_and_grad(&model, &th, &batch, &mut grad);
            (
                loss.to_bits(),
                grad.iter().map(|g| g.to_bits()).collect::<Vec<_>>(),
            )
        })
    };
    assert_eq!(run(1), run(2));
}
