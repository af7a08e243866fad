use super::*;
use crate::numerics::testing::central_difference;
use crate::systems::musat::data::{DataKind, LabelPosition, QueryPosition};
use crate::systems::musat::musat3::Query;
use crate::systems::musat::subspace::MMatrix;

fn spec(n: usize, d: usize, data: DataKind) -> DataSpec {
    DataSpec {
        n,
        d,
        data,
        query: Query::Uniform,
        label_position: LabelPosition::Rotated,
        query_position: QueryPosition::Fresh,
        m: MMatrix::J,
    }
}

/// The forward pass of docs/theory/musat.md §4 written out naively for one sequence: every row of
/// both layers, explicit matrices, no batching; scores divided by `tau`, and with `inclusive`
/// every row k also attends to itself (keys 0..=k).
fn naive_output(
    p: &Params,
    tokens: &[f64],
    n: usize,
    d: usize,
    tau: f64,
    inclusive: bool,
) -> Vec<f64> {
    let t = 2 * n + 1;
    let e = 2 * d;
    let h0: Vec<Vec<f64>> = (0..t)
        .map(|k| tokens[k * e..(k + 1) * e].to_vec())
        .collect();
    let bil = |w: &[f64], dim: usize, a: &[f64], b: &[f64]| {
        let mut s = 0.0;
        for i in 0..dim {
            for j in 0..dim {
                s += a[i] * w[i * dim + j] * b[j];
            }
        }
        s
    };
    let attend = |w: &[f64], dim: usize, h: &[Vec<f64>]| -> Vec<Vec<f64>> {
        (0..h.len())
            .map(|k| {
                let keys = if inclusive { k + 1 } else { k };
                if keys == 0 {
                    return vec![0.0; dim];
                }
                let s: Vec<f64> = (0..keys).map(|j| bil(w, dim, &h[k], &h[j]) / tau).collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                let mut u = vec![0.0; dim];
                for j in 0..keys {
                    let a = (s[j] - m).exp() / z;
                    for i in 0..dim {
                        u[i] += a * h[j][i];
                    }
                }
                u
            })
            .collect()
    };
    let u1 = attend(&p.w1, e, &h0);
    let h1: Vec<Vec<f64>> = (0..t)
        .map(|k| [h0[k].clone(), u1[k].clone()].concat())
        .collect();
    let u2 = attend(&p.w2, 2 * e, &h1);
    let h2 = [h1[t - 1].clone(), u2[t - 1].clone()].concat();
    (0..d)
        .map(|i| (0..8 * d).map(|j| p.w3[i * 8 * d + j] * h2[j]).sum())
        .collect()
}

/// The paper's model and the three ablated variants (τ = 0.7, inclusive mask, both).
const ATTENTIONS: [Attention; 4] = [
    Attention {
        temperature: 1.0,
        mask: Mask::Strict,
    },
    Attention {
        temperature: 0.7,
        mask: Mask::Strict,
    },
    Attention {
        temperature: 1.0,
        mask: Mask::Inclusive,
    },
    Attention {
        temperature: 0.7,
        mask: Mask::Inclusive,
    },
];

#[test]
fn batched_loss_equals_the_naive_forward_pass() {
    let (n, d, size) = (3, 8, 37); // three chunks, the last one partial
    let s = spec(n, d, DataKind::Orthonormal);
    let batch = Batch::sample(&mut Sampler::new(s, 1, 0), size);
    let p = Params::gaussian(d, 0.4, 2);
    let mut losses = Vec::new();
    for att in ATTENTIONS {
        let mut model = Model::new(Dims { n, d }, size, 0.5).with_attention(att);
        let got = model.loss(&p, &batch);
        let mut want = 0.0;
        for b in 0..size {
            let seq = s.sequence_len();
            let out = naive_output(
                &p,
                &batch.tokens[b * seq..(b + 1) * seq],
                n,
                d,
                att.temperature,
                att.mask == Mask::Inclusive,
            );
            for (o, y) in out.iter().zip(&batch.targets[b * d..(b + 1) * d]) {
                want += (o - y).powi(2);
            }
        }
        want *= 0.5 / size as f64;
        assert!(
            (got - want).abs() < 1e-12 * want,
            "{att:?}: {got} vs {want}"
        );
        losses.push(got);
    }
    // the options change the model (else the comparison above would not see them)
    for i in 0..losses.len() {
        for j in 0..i {
            assert!(
                (losses[i] - losses[j]).abs() > 1e-6 * losses[i],
                "{:?} and {:?} give the same loss",
                ATTENTIONS[i],
                ATTENTIONS[j]
            );
        }
    }
}

#[test]
fn gradient_matches_central_differences_in_every_block() {
    let cases = ATTENTIONS
        .iter()
        .map(|&a| (DataKind::Orthonormal, 0.5, a))
        .chain([(DataKind::Isotropic, 0.8, Attention::default())]);
    for (data, std, att) in cases {
        let (n, d, size) = (2, 6, 19);
        let s = spec(n, d, data);
        let batch = Batch::sample(&mut Sampler::new(s, 5, 0), size);
        let p = Params::gaussian(d, std, 6);
        let mut model = Model::new(Dims { n, d }, size, 1.0).with_attention(att);
        let mut g = Params::zeros(d);
        model.loss_and_grad(&p, &batch, &mut g);
        let h = 1e-6;
        for block in 0..3 {
            let len = p.blocks()[block].len();
            for i in 0..len {
                let fd = central_difference(
                    |x| {
                        let mut at = p.clone();
                        at.blocks_mut()[block][i] = x;
                        model.loss(&at, &batch)
                    },
                    p.blocks()[block][i],
                    h,
                );
                let an = g.blocks()[block][i];
                assert!(
                    (an - fd).abs() < 1e-7 + 1e-6 * fd.abs(),
                    "{data:?} {att:?} W{} entry {i}: analytic {an}, finite difference {fd}",
                    block + 1
                );
            }
        }
    }
}

#[test]
fn results_are_bit_identical_on_one_and_two_threads() {
    let (n, d) = (4, 12);
    let s = spec(n, d, DataKind::Orthonormal);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut trainer = Trainer::new(s, 70, 1.0, Refresh::Step, 11);
            let mut p = Params::gaussian(d, 0.1, 3);
            let mut losses = Vec::new();
            for _ in 0..3 {
                losses.push(trainer.evaluate(&p).to_bits());
                trainer.apply(&mut p, 2.0);
            }
            (losses, p)
        })
    };
    let (l1, p1) = run(1);
    let (l2, p2) = run(2);
    assert_eq!(l1, l2);
    assert_eq!(p1, p2);
}

#[test]
fn fixed_refresh_reuses_the_batch_and_step_refresh_draws_anew() {
    let s = spec(2, 6, DataKind::Orthonormal);
    let p = Params::gaussian(6, 0.3, 1);
    let mut fixed = Trainer::new(s, 5, 1.0, Refresh::Fixed, 2);
    let mut fresh = Trainer::new(s, 5, 1.0, Refresh::Step, 2);
    let (a, b) = (fixed.evaluate(&p), fixed.evaluate(&p));
    assert_eq!(a, b);
    let (c, e) = (fresh.evaluate(&p), fresh.evaluate(&p));
    assert_eq!(a, c, "same seed, same first batch");
    assert_ne!(c, e);
}

#[test]
fn a_trainer_step_is_the_model_on_the_batch_its_chunk_streams_draw() {
    // Trainer::evaluate draws and evaluates chunk by chunk in one pass; it must equal drawing
    // the batch from the per-chunk streams (seed, c) first and evaluating the model on it.
    let (n, d, size, seed) = (3, 8, 2 * CHUNK + 5, 7);
    let s = spec(n, d, DataKind::Orthonormal);
    let p = Params::gaussian(d, 0.2, 4);
    let mut trainer = Trainer::new(s, size, 0.5, Refresh::Step, seed);
    for step in 0..2 {
        let loss = trainer.evaluate(&p);
        let seq = s.sequence_len();
        let mut batch = Batch::from_parts(s, vec![0.0; size * seq], vec![0.0; size * d]);
        batch.queries = vec![0; size];
        for c in 0..size.div_ceil(CHUNK) {
            let mut sampler = Sampler::new(s, seed, c as u64);
            let (lo, hi) = (c * CHUNK, ((c + 1) * CHUNK).min(size));
            for _ in 0..step {
                // the streams have moved on by one batch per step
                let mut x = vec![0.0; (hi - lo) * seq];
                let mut y = vec![0.0; (hi - lo) * d];
                sampler.fill(&mut x, &mut y, &mut vec![0; hi - lo]);
            }
            sampler.fill(
                &mut batch.tokens[lo * seq..hi * seq],
                &mut batch.targets[lo * d..hi * d],
                &mut batch.queries[lo..hi],
            );
        }
        assert_eq!(trainer.last_batch().tokens, batch.tokens);
        let mut model = Model::new(Dims { n, d }, size, 0.5);
        let mut g = Params::zeros(d);
        assert_eq!(
            loss.to_bits(),
            model.loss_and_grad(&p, &batch, &mut g).to_bits()
        );
        assert_eq!(trainer.gradient(), &g);
    }
}

/// Under the training driver, coordinates are numbered W¹, W², W³ row-major: descending on a
/// subset moves exactly those entries by −η ∇, and the names follow the block shapes.
#[test]
fn the_learner_numbers_coordinates_block_by_block() {
    use crate::train::Learner;
    let s = spec(3, 8, DataKind::Orthonormal);
    let d = s.d;
    let mut gd = FullGd {
        trainer: Trainer::new(s, 5, 1.0, Refresh::Fixed, 3),
        params: Params::gaussian(d, 0.3, 9),
    };
    let before = gd.params.clone();
    gd.evaluate(0);
    let n1 = 4 * d * d;
    let n2 = 16 * d * d;
    let picked = [0, n1 - 1, n1, n1 + n2 - 1, n1 + n2, gd.params.len() - 1];
    gd.descend(0, 0.5, Some(&picked));
    let g = gd.trainer.gradient().clone();
    let flat = |p: &Params| -> Vec<f64> { p.blocks().concat() };
    let (b, a, gf) = (flat(&before), flat(&gd.params), flat(&g));
    for i in 0..b.len() {
        let want = if picked.contains(&i) {
            b[i] - 0.5 * gf[i]
        } else {
            b[i]
        };
        assert_eq!(a[i], want, "coordinate {i}");
    }
    assert!(
        picked.iter().all(|&i| gf[i] != 0.0),
        "a picked gradient entry is zero"
    );
    assert_eq!(gd.param_name(0), "W1[0,0]");
    assert_eq!(
        gd.param_name(n1 - 1),
        format!("W1[{},{}]", 2 * d - 1, 2 * d - 1)
    );
    assert_eq!(
        gd.param_name(n1 + n2 - 1),
        format!("W2[{},{}]", 4 * d - 1, 4 * d - 1)
    );
    assert_eq!(gd.param_name(n1 + n2 + 8 * d), "W3[1,0]");
    // the largest |entry| is found across blocks
    gd.params.w3[5] = 1e6;
    assert_eq!(gd.largest(), (n1 + n2 + 5, 1e6));
}
