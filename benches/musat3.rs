//! Benchmarks of the three-parameter flow (run by hand: `cargo bench --bench musat3`).
//!
//! - `sweep_scenario`: the whole `scenarios/musat3-sweep.toml` computation (24 N from 4 to 4096,
//!   2 thresholds, parallel over N), without writing files;
//! - `gradient`: one gradient of the closed form, query last and uniform.

use ihdyn::flow::GradientFlow;
use ihdyn::jobs::plan as scenario;
use ihdyn::systems::musat::musat3::{Musat3, Query};
use rayon::prelude::*;

fn main() {
    divan::main();
}

#[divan::bench(sample_count = 20)]
fn sweep_scenario(bencher: divan::Bencher) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/musat3-sweep.toml");
    let s = scenario::load(&path).unwrap();
    let spec = s.sweep.clone().unwrap();
    // Every point evaluated in parallel, as the sweep job does, without writing files.
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

#[divan::bench(args = [8, 64, 4096])]
fn gradient_last(bencher: divan::Bencher, n: usize) {
    let sys = Musat3::new(n, Query::Last, 1.0);
    let mut g = [0.0; 3];
    bencher.bench_local(|| {
        sys.grad(divan::black_box(&[0.7, 1.3, 0.9]), &mut g);
        g[0]
    });
}

#[divan::bench(args = [8, 64, 4096])]
fn gradient_uniform(bencher: divan::Bencher, n: usize) {
    let sys = Musat3::new(n, Query::Uniform, 1.0);
    let mut g = [0.0; 3];
    bencher.bench_local(|| {
        sys.grad(divan::black_box(&[0.7, 1.3, 0.9]), &mut g);
        g[0]
    });
}
