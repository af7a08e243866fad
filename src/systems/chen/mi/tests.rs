use super::*;
use crate::flow::{FlowProblem, GradientFlow, Stage};
use crate::systems::chen::common::{HeadNorm, LossKind, RpeWindow, TfShape, simplex_weights};
use crate::systems::chen::markov::{ChainShape, DataSpec, Start, generate};
use crate::systems::chen::reduced::{GihFlow, GihInit, GihModel};

fn spec(heads: usize, degree: usize, method: MiMethod) -> MiSpec {
    MiSpec {
        heads,
        degree,
        power: 2,
        method,
        draws: 1,
        pairs: 1,
        seed: 1,
    }
}

/// Two states, one parent, P(0→1) = a, P(1→0) = b: Ĩ({1}) and Ĩ({2}) written out by hand from
/// μ = (b, a)/(a + b) and the one- and two-step kernels.
#[test]
fn exact_mi_of_a_two_state_chain() {
    let (a, b) = (0.3, 0.1);
    let p = [[1.0 - a, a], [b, 1.0 - b]];
    let k = Kernel::from_fn(ChainShape::new(2, &[1]), |ctx| p[ctx[0]].to_vec());
    let mu = [b / (a + b), a / (a + b)];
    let p2 = |z: usize, e: usize| p[z][0] * p[0][e] + p[z][1] * p[1][e];
    let tilde = |cond: &dyn Fn(usize, usize) -> f64| -> f64 {
        (0..2)
            .map(|z| {
                mu[z] * mu[z] * ((0..2).map(|e| cond(z, e).powi(2) / mu[e]).sum::<f64>() - 1.0)
            })
            .sum()
    };
    let want1 = tilde(&|z, e| p[z][e]);
    let want2 = tilde(&p2);
    let est = chi2_mi(&KernelPrior::Fixed(k.clone()), &spec(2, 2, MiMethod::Exact)).unwrap();
    let labels: Vec<String> = (0..est.subsets.len())
        .map(|i| est.subsets.label(i))
        .collect();
    assert_eq!(labels, ["{}", "{1}", "{2}", "{1,2}"]);
    assert!(est.mi[0].abs() < 1e-15, "Ĩ(∅) = 0");
    assert!(
        (est.mi[1] - want1).abs() < 1e-14,
        "{} vs {want1}",
        est.mi[1]
    );
    assert!(
        (est.mi[2] - want2).abs() < 1e-14,
        "{} vs {want2}",
        est.mi[2]
    );
    assert_eq!(est.stderr, vec![0.0; 4]);
    // power 1: Σ_z μ(z) χ²(π(·|z) ‖ μ)
    let std1: f64 = (0..2)
        .map(|z| mu[z] * ((0..2).map(|e| p[z][e].powi(2) / mu[e]).sum::<f64>() - 1.0))
        .sum();
    let e1 = chi2_mi(
        &KernelPrior::Fixed(k),
        &MiSpec {
            power: 1,
            ..spec(2, 2, MiMethod::Exact)
        },
    )
    .unwrap();
    assert!((e1.mi[1] - std1).abs() < 1e-14);
}

/// Exact enumeration and Monte Carlo over histories agree within 4 standard errors: for one
/// fixed kernel (history sampling only), and over a Dirichlet prior with independent kernel
/// draws for the two methods.
#[test]
fn exact_and_monte_carlo_mi_agree_within_four_standard_errors() {
    let shape = ChainShape::new(3, &[1, 2]);
    let k = Kernel::dirichlet(shape.clone(), 0.7, &mut item_rng(42, 0));
    let fixed = KernelPrior::Fixed(k);
    let ex = chi2_mi(&fixed, &spec(3, 2, MiMethod::Exact)).unwrap();
    let mc = chi2_mi(
        &fixed,
        &MiSpec {
            pairs: 400_000,
            ..spec(3, 2, MiMethod::MonteCarlo)
        },
    )
    .unwrap();
    assert_eq!(mc.method, MiMethod::MonteCarlo);
    for s in 1..ex.mi.len() {
        assert!(mc.stderr[s] > 0.0);
        let z = (ex.mi[s] - mc.mi[s]).abs() / mc.stderr[s];
        assert!(
            z < 4.0,
            "fixed kernel, S = {}: exact {} vs MC {} ± {}",
            ex.subsets.label(s),
            ex.mi[s],
            mc.mi[s],
            mc.stderr[s]
        );
    }
    let prior = KernelPrior::Dirichlet {
        shape: ChainShape::new(2, &[1]),
        alpha: 0.5,
    };
    let ex = chi2_mi(
        &prior,
        &MiSpec {
            draws: 4000,
            seed: 1,
            ..spec(2, 2, MiMethod::Exact)
        },
    )
    .unwrap();
    let mc = chi2_mi(
        &prior,
        &MiSpec {
            draws: 4000,
            pairs: 50,
            seed: 2,
            ..spec(2, 2, MiMethod::MonteCarlo)
        },
    )
    .unwrap();
    for s in 1..ex.mi.len() {
        let se = (ex.stderr[s].powi(2) + mc.stderr[s].powi(2)).sqrt();
        assert!(se > 0.0 && se < 0.2 * ex.mi[s].abs(), "{se}");
        assert!(
            (ex.mi[s] - mc.mi[s]).abs() < 4.0 * se,
            "prior, S = {}: exact {} ± {} vs MC {} ± {}",
            ex.subsets.label(s),
            ex.mi[s],
            ex.stderr[s],
            mc.mi[s],
            mc.stderr[s]
        );
    }
}

/// x_l = x_{l−2} + 1 (mod 3) with probability 0.85, uniform otherwise: pa = {−2}.
fn second_parent_chain() -> Kernel {
    Kernel::from_fn(ChainShape::new(3, &[2]), |ctx| {
        let mut r = vec![0.05; 3];
        r[(ctx[0] + 1) % 3] += 0.85;
        r
    })
}

/// x_l = x_{l−1} + x_{l−2} (mod 3) with probability 0.85, uniform otherwise: pa = {−1, −2}.
fn two_parent_chain() -> Kernel {
    Kernel::from_fn(ChainShape::new(3, &[1, 2]), |ctx| {
        let mut r = vec![0.05; 3];
        r[(ctx[0] + ctx[1]) % 3] += 0.85;
        r
    })
}

#[test]
fn information_set_of_hand_built_chains() {
    let est = chi2_mi(
        &KernelPrior::Fixed(second_parent_chain()),
        &spec(3, 2, MiMethod::Auto),
    )
    .unwrap();
    assert_eq!(est.method, MiMethod::Exact);
    assert_eq!(est.best_label(), "{2}", "{:?}", est.mi);
    assert!(est.gap > 0.0);
    // dilution: adding the uninformative offset 1 lowers Ĩ
    let i2 = est.mi[est.subsets.index_of(&[1]).unwrap()];
    let i12 = est.mi[est.subsets.index_of(&[0, 1]).unwrap()];
    assert!(i12 < i2, "{i12} vs {i2}");
    let est = chi2_mi(
        &KernelPrior::Fixed(two_parent_chain()),
        &spec(3, 2, MiMethod::Auto),
    )
    .unwrap();
    assert_eq!(est.best_label(), "{1,2}", "{:?}", est.mi);
    // neither parent alone says anything about x_l: Ĩ({1}) = Ĩ({2}) = 0
    assert!(est.mi[1].abs() < 1e-12 && est.mi[2].abs() < 1e-12);
}

/// The stage-I flow on data from the x_{−2} chain puts its weight on S* = {2}.
#[test]
fn stage_one_flow_selects_the_information_set() {
    let kernel = second_parent_chain();
    let est = chi2_mi(
        &KernelPrior::Fixed(kernel.clone()),
        &spec(3, 2, MiMethod::Exact),
    )
    .unwrap();
    let data = generate(&DataSpec {
        prior: KernelPrior::Fixed(kernel),
        length: 60,
        start: Start::Stationary,
        n_sequences: 300,
        seed: 3,
    });
    let model = GihModel {
        shape: TfShape {
            d: 3,
            heads: 3,
            window: 3,
            degree: 2,
            rpe_window: RpeWindow::Common,
        },
        head_norm: HeadNorm::None,
        loss: LossKind::Paper {
            epsilon: 60f64.powf(-0.5),
        },
    };
    let flow = GihFlow::new(model, &data);
    let lay = *flow.layout();
    let th0 = GihInit {
        c0: 0.01,
        a0: 0.01,
        w_plus: 3.0,
        w_minus: 0.1,
    }
    .theta(&model.shape, &lay);
    let frozen: Vec<usize> = lay.w_range().chain([lay.a()]).collect();
    let sol = FlowProblem::builder(&flow)
        .init(&th0)
        .stages(vec![Stage::new("I", 20.0).frozen(frozen)])
        .tolerances(1e-8, 1e-12)
        .build()
        .unwrap()
        .solve()
        .unwrap();
    let th = sol.state_at(sol.t_end()).unwrap();
    let mut p = vec![0.0; lay.n_subsets];
    simplex_weights(&th[lay.c_range()], &mut p);
    let winner = (0..p.len()).fold(0, |b, k| if p[k] > p[b] { k } else { b });
    assert_eq!(winner, est.best, "p = {p:?}, Ĩ = {:?}", est.mi);
    assert!(p[winner] > 0.99, "{p:?}");
    assert!(flow.loss(&th) < flow.loss(&th0));
}
