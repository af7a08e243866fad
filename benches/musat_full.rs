//! Benchmarks of the full Musat model and the 19-dim flow (run by hand:
//! `cargo bench --bench musat_full`).
//!
//! - `gd_step`: one GD step (draw a fresh orthonormal batch, forward, backward, update) at
//!   D = 12, N = 4, B = 256, on a rayon pool of 1 and of 2 threads;
//! - `musat19_gradient`: one gradient of the 19-dim flow at N = 4 (the compare scenario) and
//!   N = 16, query last and uniform (and one musat3 gradient for scale);
//! - `to_alpha3`: the compare scenario's reduced flows solved to their own α₃ emergence.
//! - `standard_gd_step`: one GD step of the standard transformer of `[standard]` at D = 64,
//!   N = 16, B = 256, on 1 and 2 threads.

use ihdyn::flow::GradientFlow;
use ihdyn::systems::musat::data::{DataKind, DataSpec, LabelPosition, QueryPosition};
use ihdyn::systems::musat::disentangled::{Params, Refresh, Trainer};
use ihdyn::systems::musat::musat3::Query;
use ihdyn::systems::musat::subspace::MMatrix;

fn main() {
    divan::main();
}

#[divan::bench(args = [1, 2], sample_count = 200)]
fn gd_step(bencher: divan::Bencher, threads: usize) {
    let spec = DataSpec {
        n: 4,
        d: 12,
        data: DataKind::Orthonormal,
        query: Query::Last,
        label_position: LabelPosition::Rotated,
        query_position: QueryPosition::Fresh,
        m: MMatrix::J,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let mut trainer = Trainer::new(spec, 256, 1.0, Refresh::Step, 1);
    let mut params = Params::gaussian(12, 0.05, 2);
    // `install` costs microseconds; a step takes about a millisecond.
    bencher.bench_local(|| {
        pool.install(|| {
            let loss = trainer.evaluate(&params);
            trainer.apply(&mut params, 0.01);
            loss
        })
    });
}

#[divan::bench(args = ["last", "uniform"], consts = [4, 16])]
fn musat19_gradient<const N: usize>(bencher: divan::Bencher, query: &str) {
    use ihdyn::systems::musat::musat19::Musat19;
    let q = if query == "last" {
        Query::Last
    } else {
        Query::Uniform
    };
    let sys = Musat19::new(N, q, LabelPosition::Rotated, 1.0);
    let theta: Vec<f64> = (0..19).map(|k| 0.1 * (k as f64 - 9.0)).collect();
    let mut g = vec![0.0; 19];
    bencher.bench_local(|| {
        sys.grad(divan::black_box(&theta), &mut g);
        g[0]
    });
}

/// One musat3 gradient at N = 16 for scale.
#[divan::bench]
fn musat3_gradient_n16(bencher: divan::Bencher) {
    use ihdyn::systems::musat::musat3::Musat3;
    let sys = Musat3::new(16, Query::Last, 1.0);
    let mut g = [0.0; 3];
    bencher.bench_local(|| {
        sys.grad(divan::black_box(&[0.7, 1.3, 0.9]), &mut g);
        g[0]
    });
}

/// The reduced flows of `scenarios/musat-compare.toml` (N = 4, query last, rtol 1e-8, atol
/// 1e-10; and the earlier rtol 1e-10, atol 1e-12) solved from zero to their own α₃ emergence
/// (threshold 0.5), exactly as the compare job times them (`wall_seconds_to_T_alpha3` in its
/// manifest), with either integrator.
#[divan::bench(args = [
    "ode19/dop853/1e-8",
    "ode19/dop853/1e-10",
    "ode19/dopri5/1e-8",
    "ode3/dop853/1e-8",
    "ode3/dopri5/1e-8",
])]
fn to_alpha3(bencher: divan::Bencher, arg: &str) {
    use ihdyn::flow::{EventSpec, FlowProblem, Method, Quantity};
    use ihdyn::systems::musat::musat3::Musat3;
    use ihdyn::systems::musat::musat19::Musat19;
    let mut parts = arg.split('/');
    let (source, method, rtol) = (
        parts.next().unwrap(),
        Method::parse(parts.next().unwrap()).unwrap(),
        parts.next().unwrap().parse::<f64>().unwrap(),
    );
    let (flow, k): (Box<dyn GradientFlow>, usize) = if source == "ode19" {
        let f = Musat19::new(4, Query::Last, LabelPosition::Rotated, 1.0);
        (Box::new(f), ihdyn::systems::musat::subspace::ALPHA3)
    } else {
        (Box::new(Musat3::new(4, Query::Last, 1.0)), 0)
    };
    let dim = flow.names().len();
    let theta0 = vec![0.0; dim];
    bencher.bench_local(|| {
        let sol = FlowProblem::builder(flow.as_ref())
            .init(&theta0)
            .t_max(60.0)
            .method(method)
            .tolerances(rtol, rtol * 1e-2)
            .events(vec![EventSpec::rises("alpha3", Quantity::Coord(k), 0.5)])
            .stop_after_events(0.0)
            .tail_steps(1)
            .events_only()
            .build()
            .unwrap()
            .solve()
            .unwrap();
        sol.event_time("alpha3").unwrap()
    });
}

/// One GD step of the standard transformer (`[standard]`, docs/guide-musat.md): draw a fresh
/// batch of token sequences, forward, backward, update, at D = d_head = 64, N = 16
/// (N_E = 32 tokens, N_p = 33 positions, learned), B = 256, mean-squared error, query uniform,
/// on a rayon pool of 1 and of 2 threads.
#[divan::bench(args = [1, 2], sample_count = 30)]
fn standard_gd_step(bencher: divan::Bencher, threads: usize) {
    use ihdyn::systems::musat::disentangled::Mask;
    use ihdyn::systems::musat::standard::{
        Config, Dims, Loss, Optimizer, Params, Positions, Trainer,
    };
    let dims = Dims {
        n: 16,
        d: 64,
        d_head: 64,
        vocab: 32,
        positions: 33,
    };
    let cfg = Config {
        dims,
        loss: Loss::Mse,
        loss_scale: 1.0,
        mask: Mask::Inclusive,
        learned_positions: true,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let mut trainer = Trainer::new(cfg, Query::Uniform, 256, Optimizer::Gd, 1);
    let mut params = Params::init(dims, 0.02, Positions::Learned, 2);
    let mut step = 0;
    bencher.bench_local(|| {
        pool.install(|| {
            let loss = trainer.evaluate(&params);
            trainer.apply(&mut params, step, 0.01);
            step += 1;
            loss
        })
    });
}
