//! Benchmarks of kind "rich" (run by hand: `cargo bench --bench rich`).
//!
//! - `sweep_l_scenario`: the whole `scenarios/rich-sweep-L.toml` computation (10 L from 16 to
//!   4096, each solved until T_G and T_IH are located), parallel over points, without files;
//! - `closed_form_gradient`: one gradient of the closed-form flow (exact finite-M sums);
//! - `monte_carlo_gradient`: one gradient of the Monte-Carlo flow, K = 1000 sequences;
//! - `sgd_sequence`: the six-parameter model's forward and gradient on one sequence;
//! - `full_step`: one batch loss and gradient of the full transformer (B = 64, d = 3, 1 + 2
//!   heads), i.e. one GD step without the update.

use ihdyn::flow::GradientFlow;
use ihdyn::jobs::plan as scenario;
use ihdyn::systems::wang::full::{BatchEngine, FullModel, FullShape, sample_batch};
use ihdyn::systems::wang::reduced::sample::{Prepared, SeqScratch, eval_sequence};
use ihdyn::systems::wang::reduced::{KeyQuery, Layer1, RichFlow, RichModel, RichMonteCarlo};
use rayon::prelude::*;

fn main() {
    divan::main();
}

fn model(l: usize) -> RichModel {
    RichModel {
        l,
        c_g: 0.5,
        c_i: 0.5,
        w_star: 0.5,
        kq: KeyQuery::Factorized,
        layer1: Layer1::ExactCopy,
        exact_finite_m: true,
        loss_scale: 1.0,
    }
}

const THETA: [f64; 5] = [0.4, 1.2, 0.3, 0.5, 0.6];

#[divan::bench(sample_count = 20)]
fn sweep_l_scenario(bencher: divan::Bencher) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/rich-sweep-L.toml");
    let s = scenario::load(&path).unwrap();
    let spec = s.sweep.clone().unwrap();
    bencher.bench(|| {
        spec.points
            .par_iter()
            .map(|p| {
                p.scenario
                    .system
                    .sweep_point(&p.scenario.solver, &spec.thresholds)
                    .unwrap()
                    .rows
                    .len()
            })
            .sum::<usize>()
    });
}

#[divan::bench(args = [64, 4096])]
fn closed_form_gradient(bencher: divan::Bencher, l: usize) {
    let flow = RichFlow::new(model(l));
    let mut g = [0.0; 5];
    bencher.bench_local(|| {
        flow.grad(divan::black_box(&THETA), &mut g);
        g[0]
    });
}

#[divan::bench(args = [16, 64])]
fn monte_carlo_gradient(bencher: divan::Bencher, l: usize) {
    let flow = RichMonteCarlo::new(model(l), 1000, 1);
    let mut g = [0.0; 5];
    bencher.bench_local(|| {
        flow.grad(divan::black_box(&THETA), &mut g);
        g[0]
    });
}

#[divan::bench(args = [16, 64])]
fn sgd_sequence(bencher: divan::Bencher, l: usize) {
    let m = model(l);
    let mut prep = Prepared::new(l);
    prep.prepare(&m, &THETA);
    let mut scratch = SeqScratch::new(l);
    let x = sample_batch(l, 1, 3);
    bencher.bench_local(|| eval_sequence(&m, &prep, divan::black_box(&x), &mut scratch).d);
}

#[divan::bench(args = [16, 64])]
fn full_step(bencher: divan::Bencher, l: usize) {
    let shape = FullShape {
        l,
        d: 3,
        d_head: 1,
        heads1: 1,
        heads2: 2,
    };
    let fm = FullModel::new(shape, model(l));
    let th = fm.embed(0.4, 1.2, 0.3, 0.5, 0.6, 8.0);
    let batch = sample_batch(l, 64, 5);
    let mut engine = BatchEngine::new(&fm);
    let mut grad = vec![0.0; fm.n_params()];
    bencher.bench_local(|| engine.loss_and_grad(&fm, divan::black_box(&th), &batch, &mut grad));
}
