use super::*;
use crate::jobs::plan::{Scenario, parse_str};
use crate::systems::chen::common::simplex_weights;
use crate::systems::chen::system::GihSystem;
use crate::train::{Stage, TrainError, train};

/// A small gih scenario: one stage I (train c) of `steps` steps at learning rate `lr`, with GD
/// on the fixed sample beside the flow (tight tolerances: the flow is the reference).
fn stage_one(lr: f64, steps: u64, extra: &str) -> Scenario {
    let text = format!(
        "[system]\nkind = \"gih\"\nd = 3\npa = [-1, -2]\nL = 20\nalpha = 0.3\nn_sequences = 120\n\
         seed = 5\na0 = 0.05\n\
         [solver]\nrtol = 1e-11\natol = 1e-14\n\
         [gih]\nsamples = 5\n[gih.mi]\ndraws = 50\n\
         [gih.gd]\n{extra}\n\
         [[gih.stages]]\ntrain = [\"c\"]\nlr = {lr}\nsteps = {steps}\n"
    );
    parse_str(&text, "test", "test").unwrap()
}

fn gih(s: &Scenario) -> &GihSpec {
    &sys(s).spec
}

fn sys(s: &Scenario) -> &GihSystem {
    s.system.downcast::<GihSystem>().expect("a gih system")
}

fn p_of(theta: &[f64], lay: &Layout) -> Vec<f64> {
    let mut p = vec![0.0; lay.n_subsets];
    simplex_weights(&theta[lay.c_range()], &mut p);
    p
}

/// §5: GD on the fixed sample does not conserve ‖c‖ but, since Σ_S c_S ∂𝓛/∂c_S = 0, obeys
/// ‖c_{k+1}‖² = ‖c_k‖² + η²‖∇_c 𝓛(θ_k)‖² at every stage-I step. The production learner (the
/// fixed-sample source through the shared driver) is run step by step and each step is checked
/// against the gradient of an independently built flow on the same sample; the job's own GD run
/// must end at the same θ and report the same ‖c‖.
#[test]
fn gd_grows_the_norm_of_c_by_eta_squared_gradient_squared() {
    let (lr, steps) = (0.7, 6u64);
    let sc = stage_one(lr, steps, "");
    let s = gih(&sc);
    let (train_set, _) = super::super::data(s);
    let m = model(s);
    let flow = GihFlow::new(m, &train_set);
    let reference = GihFlow::new(m, &train_set);
    let lay = *flow.layout();
    let th0 = init(s).theta(&m.shape, &lay);
    let names = flow.names().to_vec();
    let mut source = GdSource::Fixed(&flow);
    let mut learner = FlatLearner::new(&th0, &names, Optimizer::Gd, |k, th, g| {
        source.loss_and_grad(k, th, g)
    });
    let stages = [Stage {
        name: "I".into(),
        trained: Some(lay.c_range().collect()),
        lr,
        dt: lr,
        steps,
    }];
    let guard = crate::train::Guard {
        what: "test".into(),
        hint: "lr".into(),
        bound: 1e100,
    };
    let mut thetas = Vec::new();
    train::<_, TrainError>(&mut learner, &stages, &guard, |_, l| {
        thetas.push(l.theta.clone());
        Ok(())
    })
    .unwrap();
    assert_eq!(thetas.len() as u64, steps + 1);
    let sq = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>();
    let mut g = vec![0.0; th0.len()];
    let mut grew = 0.0;
    for k in 0..steps as usize {
        let (a, b) = (&thetas[k], &thetas[k + 1]);
        reference.grad(a, &mut g);
        let gc = &g[lay.c_range()];
        // the update is plain GD on c, w and a frozen
        for (j, i) in lay.c_range().enumerate() {
            assert!(
                (b[i] - (a[i] - lr * gc[j])).abs() <= 1e-15 * a[i].abs().max(1e-3),
                "step {k}, c[{j}]"
            );
        }
        for i in lay.w_range().chain([lay.a()]) {
            assert_eq!(a[i], b[i]);
        }
        let (n0, n1) = (sq(&a[lay.c_range()]), sq(&b[lay.c_range()]));
        let want = n0 + lr * lr * sq(gc);
        assert!(
            (n1 - want).abs() <= 1e-12 * n1,
            "step {k}: ||c||^2 {n1} vs {want} (rel {:e})",
            (n1 - want) / n1
        );
        grew += (n1 - n0) / n0;
    }
    // not conserved: ‖c‖² grows by a visible amount over the steps
    assert!(grew > 1e-3, "{grew}");
    // the job's GD is this run
    let run = super::super::compute(
        gih(&sc),
        &sc.solver,
        sys(&sc).job.as_ref().unwrap(),
        false,
        true,
    )
    .unwrap();
    let gd = run.gd.unwrap();
    let last = thetas.last().unwrap();
    for (x, y) in gd.final_theta.iter().zip(last) {
        assert!((x - y).abs() <= 1e-15 * y.abs().max(1e-3), "{x} vs {y}");
    }
    assert_eq!(gd.c_norms.len(), 2);
    assert!((gd.c_norms[1] - sq(&last[lay.c_range()]).sqrt()).abs() < 1e-15);
    assert_eq!(gd.steps, steps);
}

/// GD with a small learning rate tracks the flow (its η → 0 limit): at the end of a short stage
/// I, p_S under GD with η = 0.01 (1000 steps) is within 1e-3 of the ODE's p_S, and at least ten
/// times closer than GD with η = 1 (10 steps) over the same t = 10.
#[test]
fn gd_with_a_small_learning_rate_tracks_the_flow() {
    let err = |lr: f64, steps: u64| {
        let sc = stage_one(lr, steps, "");
        let run = super::super::compute(
            gih(&sc),
            &sc.solver,
            sys(&sc).job.as_ref().unwrap(),
            false,
            true,
        )
        .unwrap();
        let s = gih(&sc);
        let lay = Layout {
            n_subsets: run.mi.subsets.len(),
            heads: s.heads,
            window: s.window,
        };
        let flow = p_of(&run.reduced.final_theta, &lay);
        let gd = p_of(&run.gd.unwrap().final_theta, &lay);
        // the stage moved p (the comparison is not between two unmoved states)
        assert!(flow[run.mi.best] > 0.5, "{flow:?}");
        flow.iter()
            .zip(&gd)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    };
    let small = err(0.01, 1000);
    let large = err(1.0, 10);
    assert!(small < 1e-3, "{small}");
    assert!(small * 10.0 < large, "{small} vs {large}");
}

/// Fresh batches: step k's gradient is the gradient on the batch generated with seed
/// batch_seed(system seed, k), whatever batches came before; different steps and different
/// seeds draw different batches.
#[test]
fn fresh_batches_are_the_generator_seeded_per_step() {
    let sc = stage_one(1.0, 3, "data = \"fresh\"\nbatch = 17");
    let s = gih(&sc);
    let m = model(s);
    let spec = DataSpec {
        prior: prior(s),
        length: s.length,
        start: s.start,
        n_sequences: 17,
        seed: 0,
    };
    let mut fresh = FreshBatches::new(m, spec.clone(), s.seed);
    let probe = GihFlow::new(m, &generate(&spec));
    let lay = *probe.layout();
    let th = init(s).theta(&m.shape, &lay);
    let n = th.len();
    for step in [0u64, 5, 1, 1000] {
        let (mut g1, mut g2) = (vec![0.0; n], vec![0.0; n]);
        let l1 = fresh.loss_and_grad(step, &th, &mut g1);
        let batch = generate(&DataSpec {
            seed: batch_seed(s.seed, step),
            ..spec.clone()
        });
        let l2 = GihFlow::new(m, &batch).loss_and_grad(&th, &mut g2);
        assert_eq!(l1.to_bits(), l2.to_bits(), "step {step}");
        assert_eq!(g1, g2, "step {step}");
    }
    assert_ne!(batch_seed(s.seed, 0), batch_seed(s.seed, 1));
    assert_ne!(batch_seed(s.seed, 0), batch_seed(s.seed + 1, 0));
    // the batch stream is not the fixed sample's (stream i of system.seed)
    assert_ne!(batch_seed(s.seed, 0), s.seed);
    let a = generate(&DataSpec {
        seed: batch_seed(s.seed, 0),
        ..spec.clone()
    });
    let b = generate(&DataSpec {
        seed: batch_seed(s.seed, 1),
        ..spec.clone()
    });
    assert_ne!(a.tokens, b.tokens);
}
