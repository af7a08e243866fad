use super::*;
use crate::numerics::testing::{assert_gradient_matches, central_differences};
use crate::systems::chen::common::{HeadNorm, RpeWindow};
use crate::systems::chen::markov::{ChainShape, DataSpec, KernelPrior, Start, generate, item_rng};
use crate::systems::chen::reduced::{GihFlow, GihModel};
use rand::Rng;

fn data(length: usize, n: usize, seed: u64) -> Sequences {
    generate(&DataSpec {
        prior: KernelPrior::Dirichlet {
            shape: ChainShape::new(3, &[1, 2]),
            alpha: 0.4,
        },
        length,
        start: Start::Uniform,
        n_sequences: n,
        seed,
    })
}

fn shape(heads: usize, window: usize, degree: usize, rpe: RpeWindow) -> TfShape {
    TfShape {
        d: 3,
        heads,
        window,
        degree,
        rpe_window: rpe,
    }
}

fn random_theta(m: &GihTransformer, rng: &mut impl Rng) -> Vec<f64> {
    let lay = *m.layout();
    let mut th: Vec<f64> = (0..lay.len())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    for k in lay.base.c_range() {
        th[k] = rng.random_range(0.3..1.0);
    }
    th[lay.base.a()] = rng.random_range(1.0..3.0);
    for k in 0..3 {
        th[lay.gamma() + k] = rng.random_range(0.5..1.5);
    }
    th
}

#[test]
fn full_model_gradient_matches_central_differences() {
    let mut rng = item_rng(21, 0);
    let cases = [
        (
            true,
            true,
            RpeWindow::Common,
            LossKind::Paper { epsilon: 0.1 },
        ),
        (true, false, RpeWindow::Staggered, LossKind::Code),
        (false, true, RpeWindow::Common, LossKind::Code),
        (
            false,
            false,
            RpeWindow::Staggered,
            LossKind::Paper { epsilon: 0.05 },
        ),
    ];
    for (v, (ln, selfa, rpe, loss)) in cases.into_iter().enumerate() {
        let settings = FullSettings {
            layer_norm: ln,
            ln_eps: 1e-5,
            self_attention: selfa,
            proj_init: 0.01,
        };
        let d = data(10, 14, 300 + v as u64);
        let m = GihTransformer::new(shape(2, 2, 2, rpe), loss, settings, &d);
        let th = random_theta(&m, &mut rng);
        let mut g = vec![0.0; th.len()];
        let l0 = m.loss_and_grad(&th, Some(&mut g));
        assert!((l0 - m.loss(&th)).abs() < 1e-15);
        let fd = central_differences(|t| m.loss(t), &th, 1e-6);
        assert_gradient_matches(&g, &fd, 2e-6, m.names(), &format!("case {v}"));
    }
}

/// With W_Q W_Kᵀ = 0, W_OV = I, no LayerNorm and no self-attention, the full model is the
/// reduced model with raw head outputs: same loss, same gradient in (c, w, a), by two separate
/// implementations.
#[test]
fn full_model_reduces_to_the_reduced_model() {
    for rpe in [RpeWindow::Common, RpeWindow::Staggered] {
        let sh = shape(3, 3, 2, rpe);
        let loss = LossKind::Paper { epsilon: 0.2 };
        let d = data(25, 40, 5);
        let full = GihTransformer::new(
            sh,
            loss,
            FullSettings {
                layer_norm: false,
                ln_eps: 1e-5,
                self_attention: false,
                proj_init: 0.0,
            },
            &d,
        );
        let reduced = GihFlow::new(
            GihModel {
                shape: sh,
                head_norm: HeadNorm::None,
                loss,
            },
            &d,
        );
        let lay = *full.layout();
        let mut rng = item_rng(22, 0);
        let base: Vec<f64> = (0..lay.base.len())
            .map(|_| rng.random_range(0.2..1.5))
            .collect();
        let mut th = full.initial_theta(&base);
        for h in 0..3 {
            for r in 0..3 {
                th[lay.wov(h) + r * 3 + r] = 1.0;
            }
        }
        let mut gf = vec![0.0; th.len()];
        let mut gr = vec![0.0; base.len()];
        let lf = full.loss_and_grad(&th, Some(&mut gf));
        reduced.grad(&base, &mut gr);
        let lr = reduced.loss(&base);
        assert!((lf - lr).abs() < 1e-13, "{lf} vs {lr}");
        for i in 0..base.len() {
            assert!(
                (gf[i] - gr[i]).abs() < 1e-13,
                "{}: {} vs {}",
                reduced.names()[i],
                gf[i],
                gr[i]
            );
        }
    }
}
