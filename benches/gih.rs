//! Benchmarks of the Chen et al. GIH system (run by hand: `cargo bench --bench gih`).
//!
//! - `gradient_reduced`: one exact gradient of the reduced (c, w, a) flow on the paper's sample
//!   (9000 training sequences, L = 100, TF(3,3,3,2), pa = {-1,-2}, alpha = 0.1);
//! - `gradient_full`: one gradient of the full TF(3,3,3,2) (QK, OV, LayerNorm) on the same sample;
//! - `mi`: the modified chi^2 MI over 10^4 Dirichlet kernel draws (exact per kernel);
//! - `paper_scenario`: the whole `scenarios/chen-paper.toml` computation without writing files;
//! - `fresh_batch_gradient`: one step of `[gih.gd] data = "fresh"` at the paper's setting with
//!   B = 900: draw the batch (fresh kernels), swap it into the flow's buffers, loss and gradient.

use ihdyn::flow::GradientFlow;
use ihdyn::jobs::plan::{self as scenario, Scenario};
use ihdyn::systems::chen::job as gih;
use ihdyn::systems::chen::markov::{DataSpec, generate};
use ihdyn::systems::chen::mi::{MiMethod, MiSpec, chi2_mi};
use ihdyn::systems::chen::reduced::GihFlow;
use ihdyn::systems::chen::system::GihSystem;
use ihdyn::systems::chen::transformer::{FullSettings, GihTransformer};

fn main() {
    divan::main();
}

fn paper() -> Scenario {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/chen-paper.toml");
    scenario::load(&path).unwrap()
}

#[divan::bench(sample_count = 30)]
fn gradient_reduced(bencher: divan::Bencher) {
    let s = paper();
    let g = &s.system.downcast::<GihSystem>().unwrap().spec;
    let (train, _) = gih::data(g);
    let flow = GihFlow::new(gih::model(g), &train);
    let th = gih::init(g).theta(&g.shape(), flow.layout());
    let mut out = vec![0.0; th.len()];
    bencher.bench_local(|| {
        flow.grad(divan::black_box(&th), &mut out);
        out[0]
    });
}

#[divan::bench(sample_count = 30)]
fn gradient_full(bencher: divan::Bencher) {
    let s = paper();
    let g = &s.system.downcast::<GihSystem>().unwrap().spec;
    let (train, _) = gih::data(g);
    let settings = FullSettings {
        layer_norm: true,
        ln_eps: 1e-5,
        self_attention: true,
        proj_init: 0.01,
    };
    let full = GihTransformer::new(g.shape(), g.loss, settings, &train);
    let th = full.initial_theta(&gih::init(g).theta(&g.shape(), &full.layout().base));
    let mut out = vec![0.0; th.len()];
    bencher.bench_local(|| {
        full.grad(divan::black_box(&th), &mut out);
        out[0]
    });
}

#[divan::bench(sample_count = 10)]
fn mi(bencher: divan::Bencher) {
    let s = paper();
    let g = &s.system.downcast::<GihSystem>().unwrap().spec;
    let prior = gih::prior(g);
    bencher.bench(|| {
        chi2_mi(
            &prior,
            &MiSpec {
                heads: 3,
                degree: 2,
                power: 2,
                method: MiMethod::Exact,
                draws: 10_000,
                pairs: 100,
                seed: 1,
            },
        )
        .unwrap()
        .best
    });
}

#[divan::bench(sample_count = 3)]
fn paper_scenario(bencher: divan::Bencher) {
    let s = paper();
    let sys = s.system.downcast::<GihSystem>().unwrap();
    let job = sys.job.clone().unwrap();
    bencher.bench(|| {
        gih::compute(&sys.spec, &s.solver, &job, false, false)
            .unwrap()
            .reduced
            .final_loss
    });
}

#[divan::bench(sample_count = 30)]
fn fresh_batch_gradient(bencher: divan::Bencher) {
    let s = paper();
    let g = &s.system.downcast::<GihSystem>().unwrap().spec;
    let spec = gih::data_spec_with(g, g.length, g.alpha, 900, 1);
    let mut flow = GihFlow::new(gih::model(g), &generate(&spec));
    let th = gih::init(g).theta(&g.shape(), flow.layout());
    let mut out = vec![0.0; th.len()];
    let mut step = 1u64;
    bencher.bench_local(|| {
        step += 1;
        let batch = generate(&DataSpec {
            seed: step,
            ..spec.clone()
        });
        flow.set_data(&batch);
        flow.loss_and_grad(divan::black_box(&th), &mut out)
    });
}
