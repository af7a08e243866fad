use super::*;
use crate::flow::{EventSpec, FlowProblem, Quantity};
use crate::numerics::testing::{assert_gradient_matches, central_differences};
use crate::systems::musat::data::{DataKind, DataSpec, QueryPosition, Sampler};
use crate::systems::musat::disentangled::{Batch, Dims, Model, Params};
use crate::systems::musat::musat3::Musat3;
use crate::systems::musat::subspace::{
    ALPHA3, BETA2, GAMMA3, inner_products_with, structured_with,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random_theta(rng: &mut ChaCha8Rng, size: f64) -> Vec<f64> {
    (0..19).map(|_| rng.random_range(-size..size)).collect()
}

/// Loss and ⟨∇_W L, B_k⟩ of the dense full model at W(θ) on a batch.
fn dense_projected(theta: &[f64], batch: &Batch, scale: f64) -> (f64, [f64; 19]) {
    dense_projected_with(theta, batch, scale, MMatrix::J)
}

/// [`dense_projected`] with W(θ) and the B_k of M = `m`.
fn dense_projected_with(theta: &[f64], batch: &Batch, scale: f64, m: MMatrix) -> (f64, [f64; 19]) {
    let dims = Dims {
        n: batch.spec.n,
        d: batch.spec.d,
    };
    let mut model = Model::new(dims, batch.size(), scale);
    let mut g = Params::zeros(dims.d);
    let loss = model.loss_and_grad(&structured_with(theta, dims.d, m), batch, &mut g);
    (loss, inner_products_with(&g, m))
}

fn assert_close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}: {a} vs {b}");
}

/// The gradient of `sys` at θ against central differences of its loss (h = 1e-6), every
/// coordinate to 1e-7 · (1 + |fd|); `what` names the system in the message.
pub(super) fn assert_central_differences(sys: &Musat19, th: &[f64], what: &str) {
    let mut g = vec![0.0; 19];
    sys.grad(th, &mut g);
    let fd = central_differences(|t| sys.loss(t), th, 1e-6);
    assert_gradient_matches(&g, &fd, 1e-7, &NAMES19, what);
}

#[test]
fn gradient_matches_central_differences() {
    // J at the fresh query position; S (generic pass only) at both positions.
    for (m, seed, positions, reps) in [
        (MMatrix::J, 1, &[QueryPosition::Fresh][..], 3),
        (MMatrix::Swap, 31, &POSITIONS[..], 2),
    ] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for &n in &[1usize, 2, 5] {
            for query in [Query::Last, Query::Uniform] {
                for cue in [
                    LabelPosition::Rotated,
                    LabelPosition::Same,
                    LabelPosition::None,
                ] {
                    for &qpos in positions {
                        let sys = Musat19::with_m(n, query, cue, qpos, m, 1.0);
                        if m == MMatrix::Swap {
                            // S never takes the specialised pass
                            assert!(!sys.uses_canonical_last());
                        }
                        for _ in 0..reps {
                            let th = random_theta(&mut rng, 1.5);
                            let what = format!("{m:?} N={n} {query:?} {cue:?} {qpos:?}");
                            assert_central_differences(&sys, &th, &what);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn structured_evaluation_equals_the_dense_model_on_any_data() {
    // Random dense sequences (not orthonormal, every token entry nonzero): the structured
    // pass must equal the dense model's loss and projected gradient at W(θ), for both M. On
    // isotropic swap data p_kᵀ S p_k ≠ 0, so the Gram matrix PM has a diagonal (J's never
    // does); the structured pass still equals the dense model projected onto the S basis.
    let (n, d, size) = (3, 6, 5);
    for (m, seed) in [(MMatrix::J, 2), (MMatrix::Swap, 36)] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let spec = DataSpec {
            n,
            d,
            data: DataKind::Isotropic,
            query: Query::Uniform,
            label_position: LabelPosition::Rotated,
            query_position: QueryPosition::Fresh,
            m,
        };
        let batch = Batch::sample(&mut Sampler::new(spec, 3, 0), size);
        let seq = spec.sequence_len();
        let seqs: Vec<(Vec<f64>, Vec<f64>)> = (0..size)
            .map(|b| {
                (
                    batch.tokens[b * seq..(b + 1) * seq].to_vec(),
                    batch.targets[b * d..(b + 1) * d].to_vec(),
                )
            })
            .collect();
        let sys = Musat19::from_sequences_with_m(n, d, &seqs, m, 0.5);
        for _ in 0..5 {
            let th = random_theta(&mut rng, 2.0);
            let (loss, g) = dense_projected_with(&th, &batch, 0.5, m);
            let mut got = vec![0.0; 19];
            sys.grad(&th, &mut got);
            assert_close(sys.loss(&th), loss, 1e-12, &format!("{m:?} loss"));
            for k in 0..19 {
                assert_close(got[k], g[k], 1e-11, &format!("{m:?} {}", NAMES19[k]));
            }
        }
    }
}

#[test]
fn every_haar_sample_gives_the_canonical_loss_and_gradient() {
    // The orbit argument of docs/theory/musat.md §3: at any structured W(θ), each orthonormal sample
    // (here D = 12 > 2N + 2 = 10, random Haar frames, query last) has the loss and projected
    // gradient of the canonical configuration with D = 2N + 2.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (n, d) = (4, 12);
    for cue in [LabelPosition::Rotated, LabelPosition::Same] {
        let spec = DataSpec {
            n,
            d,
            data: DataKind::Orthonormal,
            query: Query::Last,
            label_position: cue,
            query_position: QueryPosition::Fresh,
            m: MMatrix::J,
        };
        let mut sampler = Sampler::new(spec, 9, 0);
        let sys = Musat19::new(n, Query::Last, cue, 1.0);
        for _ in 0..4 {
            let th = random_theta(&mut rng, 1.5);
            let batch = Batch::sample(&mut sampler, 1);
            let (loss, g) = dense_projected(&th, &batch, 1.0);
            let mut got = vec![0.0; 19];
            sys.grad(&th, &mut got);
            assert_close(sys.loss(&th), loss, 1e-10, "loss");
            for k in 0..19 {
                assert_close(got[k], g[k], 1e-10, NAMES19[k]);
            }
        }
    }
}

/// θ with only α₃, β₂, γ₃ set.
fn three(th3: &[f64]) -> Vec<f64> {
    let mut th = vec![0.0; 19];
    th[ALPHA3] = th3[0];
    th[BETA2] = th3[1];
    th[GAMMA3] = th3[2];
    th
}

#[test]
fn full_model_at_a_three_parameter_point_equals_the_musat3_closed_form() {
    // Dense 28D² model, random Haar data of each M (D = 12, N = 4, query last), W with only
    // α₃ (a J or S block), β₂, γ₃: loss and the projected gradient on those three coordinates
    // equal §7.1.
    let (n, d) = (4, 12);
    let m3 = Musat3::new(n, Query::Last, 1.0);
    for (m, seed, reps) in [(MMatrix::J, 6, 10), (MMatrix::Swap, 35, 6)] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let spec = DataSpec {
            n,
            d,
            data: DataKind::Orthonormal,
            query: Query::Last,
            label_position: LabelPosition::Rotated,
            query_position: QueryPosition::Fresh,
            m,
        };
        let batch = Batch::sample(&mut Sampler::new(spec, 4, 0), 40);
        for _ in 0..reps {
            let th3 = [
                rng.random_range(-2.0..4.0),
                rng.random_range(-2.0..6.0),
                rng.random_range(-0.5..1.5),
            ];
            let (loss, g) = dense_projected_with(&three(&th3), &batch, 1.0, m);
            let mut want = [0.0; 3];
            m3.grad(&th3, &mut want);
            assert_close(loss, m3.loss(&th3), 1e-10, &format!("{m:?} loss"));
            assert_close(g[ALPHA3], want[0], 1e-10, &format!("{m:?} alpha3"));
            assert_close(g[BETA2], want[1], 1e-10, &format!("{m:?} beta2"));
            assert_close(g[GAMMA3], want[2], 1e-10, &format!("{m:?} gamma3"));
        }
    }
}

#[test]
fn restricted_to_three_coordinates_it_is_musat3_for_both_query_modes() {
    // §7's closed forms do not depend on M: a label meets its item through (M p_i)ᵀ M p_i = 1
    // for J and S alike. Off the plane the two flows differ (the item–label Gram entry
    // p_iᵀ M (M p_i) is −1 for J, +1 for S). J at the fresh query position and two loss
    // scales; S at both positions.
    for (m, seed, positions, scales, reps) in [
        (
            MMatrix::J,
            7,
            &[QueryPosition::Fresh][..],
            &[1.0, 0.5][..],
            5,
        ),
        (MMatrix::Swap, 32, &POSITIONS[..], &[0.5][..], 4),
    ] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for &n in &[2usize, 4, 9] {
            for query in [Query::Last, Query::Uniform] {
                for &qpos in positions {
                    for &scale in scales {
                        let sys = Musat19::with_m(n, query, LabelPosition::Rotated, qpos, m, scale);
                        let j = (m == MMatrix::Swap).then(|| {
                            Musat19::with_m(
                                n,
                                query,
                                LabelPosition::Rotated,
                                qpos,
                                MMatrix::J,
                                scale,
                            )
                        });
                        let m3 = Musat3::new(n, query, scale);
                        for _ in 0..reps {
                            let th3 = [
                                rng.random_range(-2.0..4.0),
                                rng.random_range(-2.0..6.0),
                                rng.random_range(-0.5..1.5),
                            ];
                            let mut g = vec![0.0; 19];
                            sys.grad(&three(&th3), &mut g);
                            let mut want = [0.0; 3];
                            m3.grad(&th3, &mut want);
                            let what = format!("{m:?} N={n} {query:?} {qpos:?} scale {scale}");
                            assert_close(sys.loss(&three(&th3)), m3.loss(&th3), 1e-12, &what);
                            assert_close(g[ALPHA3], want[0], 1e-11, &what);
                            assert_close(g[BETA2], want[1], 1e-11, &what);
                            assert_close(g[GAMMA3], want[2], 1e-11, &what);
                            if let Some(j) = &j {
                                let mut gj = vec![0.0; 19];
                                j.grad(&three(&th3), &mut gj);
                                let off =
                                    (0..19).map(|k| (g[k] - gj[k]).abs()).fold(0.0f64, f64::max);
                                assert!(
                                    off > 1e-4,
                                    "{what}: swap and J gradients agree off the plane"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn with_sixteen_coordinates_frozen_the_flow_reproduces_musat3() {
    for &n in &[3usize, 6] {
        for query in [Query::Last, Query::Uniform] {
            let sys = Musat19::new(n, query, LabelPosition::Rotated, 1.0);
            let m3 = Musat3::new(n, query, 1.0);
            let t_max = 6.0 * (n * n) as f64;
            let frozen: Vec<usize> = (0..19)
                .filter(|k| ![ALPHA3, BETA2, GAMMA3].contains(k))
                .collect();
            let s19 = FlowProblem::builder(&sys)
                .freeze(frozen)
                .t_max(t_max)
                .tolerances(1e-12, 1e-14)
                .event(EventSpec::rises("a", Quantity::Coord(ALPHA3), 0.5))
                .build()
                .unwrap()
                .solve()
                .unwrap();
            let s3 = FlowProblem::builder(&m3)
                .t_max(t_max)
                .tolerances(1e-12, 1e-14)
                .event(EventSpec::rises("a", Quantity::Coord(0), 0.5))
                .build()
                .unwrap()
                .solve()
                .unwrap();
            for i in 0..=200 {
                let t = t_max * i as f64 / 200.0;
                let a = s19.state_at(t).unwrap();
                let b = s3.state_at(t).unwrap();
                for (k, &c) in [ALPHA3, BETA2, GAMMA3].iter().enumerate() {
                    assert!(
                        (a[c] - b[k]).abs() < 1e-8,
                        "N={n} {query:?} t={t} {}: {} vs {}",
                        NAMES19[c],
                        a[c],
                        b[k]
                    );
                }
                assert!(
                    a.iter()
                        .enumerate()
                        .all(|(k, v)| [ALPHA3, BETA2, GAMMA3].contains(&k) || *v == 0.0)
                );
            }
            let (ta, tb) = (s19.event_time("a").unwrap(), s3.event_time("a").unwrap());
            assert!((ta - tb).abs() < 1e-8 * tb, "T_alpha3 {ta} vs {tb}");
        }
    }
}

#[test]
fn dopri5_and_dop853_agree_on_the_full_19_dim_flow() {
    // Two integrators of different order and step sequence (≈ 4× fewer steps for DOP853) must
    // trace the same trajectory and emergence times; the compare scenarios use DOP853.
    use crate::flow::Method;
    for query in [Query::Last, Query::Uniform] {
        let sys = Musat19::new(4, query, LabelPosition::Rotated, 1.0);
        let solve = |method| {
            FlowProblem::builder(&sys)
                .t_max(60.0)
                .method(method)
                .tolerances(1e-11, 1e-13)
                .events(
                    [ALPHA3, BETA2, GAMMA3]
                        .map(|k| EventSpec::rises(NAMES19[k], Quantity::Coord(k), 0.5)),
                )
                .build()
                .unwrap()
                .solve()
                .unwrap()
        };
        let (a, b) = (solve(Method::Dopri5), solve(Method::Dop853));
        assert!(
            4 * b.stats.steps < 2 * a.stats.steps,
            "{:?} vs {:?}",
            a.stats,
            b.stats
        );
        for k in [ALPHA3, BETA2, GAMMA3] {
            let (ta, tb) = (
                a.event_time(NAMES19[k]).unwrap(),
                b.event_time(NAMES19[k]).unwrap(),
            );
            assert!(
                (ta - tb).abs() < 1e-9 * ta,
                "{query:?} {}: {ta} vs {tb}",
                NAMES19[k]
            );
        }
        for i in 0..=600 {
            let t = 0.1 * i as f64;
            let (x, y) = (a.state_at(t).unwrap(), b.state_at(t).unwrap());
            for k in 0..19 {
                assert!(
                    (x[k] - y[k]).abs() < 1e-8 * (1.0 + x[k].abs()),
                    "{query:?} t={t} {}",
                    NAMES19[k]
                );
            }
        }
    }
}

// ---- query position p_q (the ablation of docs/theory/musat.md §13)

#[test]
fn query_position_p_q_gradient_matches_central_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for &n in &[1usize, 2, 5] {
        for query in [Query::Last, Query::Uniform] {
            let sys = Musat19::with_query_position(
                n,
                query,
                LabelPosition::Rotated,
                QueryPosition::PQ,
                1.0,
            );
            for _ in 0..3 {
                let th = random_theta(&mut rng, 1.5);
                assert_central_differences(&sys, &th, &format!("N={n} {query:?} p_q"));
            }
        }
    }
}

/// The batch of the canonical configuration(s) of M = `m` (D = 2N + 2, label cue rotated):
/// one for query last, the N of them for uniform.
fn canonical_batch(n: usize, query: Query, qpos: QueryPosition, m: MMatrix) -> Batch {
    let qs: Vec<usize> = match query {
        Query::Last => vec![n],
        Query::Uniform => (1..=n).collect(),
    };
    let (mut tokens, mut targets) = (Vec::new(), Vec::new());
    for &q in &qs {
        let (t, y) = canonical_configuration(n, q, LabelPosition::Rotated, qpos, m);
        tokens.extend(t);
        targets.extend(y);
    }
    let spec = DataSpec {
        n,
        d: 2 * n + 2,
        data: DataKind::Orthonormal,
        query,
        label_position: LabelPosition::Rotated,
        query_position: qpos,
        m,
    };
    Batch::from_parts(spec, tokens, targets)
}

#[test]
fn query_position_p_q_equals_the_dense_model_on_the_canonical_configurations() {
    // The dense 28D² backward pass at W(θ) on the canonical p_q configuration(s) (one for
    // query last, the N of them for uniform), projected onto the basis, is the structured
    // gradient; and p_q changes the loss (the query can match by position).
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let n = 4;
    for query in [Query::Last, Query::Uniform] {
        let batch = canonical_batch(n, query, QueryPosition::PQ, MMatrix::J);
        let sys =
            Musat19::with_query_position(n, query, LabelPosition::Rotated, QueryPosition::PQ, 0.5);
        let fresh = Musat19::new(n, query, LabelPosition::Rotated, 0.5);
        for _ in 0..5 {
            let th = random_theta(&mut rng, 1.5);
            let (loss, g) = dense_projected(&th, &batch, 0.5);
            let mut got = vec![0.0; 19];
            sys.grad(&th, &mut got);
            assert_close(sys.loss(&th), loss, 1e-12, "loss");
            for k in 0..19 {
                assert_close(got[k], g[k], 1e-11, NAMES19[k]);
            }
            assert!((sys.loss(&th) - fresh.loss(&th)).abs() > 1e-6);
        }
    }
}

/// Each orthonormal sample of M = `m` (N = 4, D = 12 > 2N + 2, random Haar frames from
/// `sampler_seed`) for each (query, label cue, query position) of `cases` has, at a structured
/// W(θ) of the basis of M (θ from `seed`, `reps` of them a case), the loss and projected
/// gradient (to 1e-10) of the canonical configuration of its q.
fn assert_haar_samples_give_their_canonical_configuration(
    m: MMatrix,
    cases: &[(Query, LabelPosition, QueryPosition)],
    seed: u64,
    sampler_seed: u64,
    reps: usize,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (n, d) = (4, 12);
    for &(query, cue, qpos) in cases {
        let spec = DataSpec {
            n,
            d,
            data: DataKind::Orthonormal,
            query,
            label_position: cue,
            query_position: qpos,
            m,
        };
        let mut sampler = Sampler::new(spec, sampler_seed, 0);
        for _ in 0..reps {
            let th = random_theta(&mut rng, 1.5);
            let batch = Batch::sample(&mut sampler, 1);
            let q = batch.queries[0];
            let (t, y) = canonical_configuration(n, q, cue, qpos, m);
            let sys = Musat19::from_sequences_with_m(n, 2 * n + 2, &[(t, y)], m, 1.0);
            let (loss, g) = dense_projected_with(&th, &batch, 1.0, m);
            let mut got = vec![0.0; 19];
            sys.grad(&th, &mut got);
            let what = format!("{m:?} {query:?} {cue:?} {qpos:?}");
            assert_close(sys.loss(&th), loss, 1e-10, &format!("{what} loss"));
            for k in 0..19 {
                assert_close(got[k], g[k], 1e-10, &format!("{what} {}", NAMES19[k]));
            }
        }
    }
}

#[test]
fn every_haar_sample_with_query_position_p_q_gives_the_canonical_loss_and_gradient() {
    // The one-orbit-per-q argument of the module documentation, for p_q samples with q drawn
    // uniformly.
    let cases = [(Query::Uniform, LabelPosition::Rotated, QueryPosition::PQ)];
    assert_haar_samples_give_their_canonical_configuration(MMatrix::J, &cases, 13, 10, 6);
}

#[test]
fn off_subspace_part_of_the_dense_gradient_is_batch_noise_for_both_query_positions() {
    // Invariance of the 19-dim subspace of each M under data of that M: at a structured point
    // the population gradient lies in the subspace, so the off-subspace part of the dense
    // gradient on a Haar batch is noise and falls like 1/√B (64x the batch: 8x smaller;
    // required >= 4x). Control: the naive (not Haar) frames break the symmetry, and at
    // B = 4096 their residual (a bias that does not fall with B) is well above the Haar
    // frames' noise.
    use crate::systems::musat::data::SignFix;
    use crate::systems::musat::subspace::{project_with, residuals_with};
    let (n, d) = (3, 8);
    let dims = Dims { n, d };
    for (m, seed) in [(MMatrix::J, 14), (MMatrix::Swap, 37)] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let th = random_theta(&mut rng, 1.0);
        let w = structured_with(&th, d, m);
        for qpos in POSITIONS {
            let spec = DataSpec {
                n,
                d,
                data: DataKind::Orthonormal,
                query: Query::Uniform,
                label_position: LabelPosition::Rotated,
                query_position: qpos,
                m,
            };
            let residual = |size: usize, fix: SignFix| {
                let mut sampler = Sampler::new(spec, 15, 0).with_sign_fix(fix);
                let batch = Batch::sample(&mut sampler, size);
                let mut model = Model::new(dims, size, 1.0);
                let mut g = Params::zeros(d);
                model.loss_and_grad(&w, &batch, &mut g);
                // absolute: ‖∇W − Proj ∇W‖_F
                let norm = g
                    .blocks()
                    .iter()
                    .flat_map(|b| b.iter())
                    .map(|v| v * v)
                    .sum::<f64>();
                residuals_with(&g, &project_with(&g, m), m).overall * norm.sqrt()
            };
            let (small, large) = (residual(64, SignFix::Haar), residual(4096, SignFix::Haar));
            assert!(
                large > 0.0 && small >= 4.0 * large,
                "{m:?} {qpos:?}: B = 64: {small}, B = 4096: {large}"
            );
            let naive = residual(4096, SignFix::Naive);
            assert!(
                naive > 2.5 * large,
                "{m:?} {qpos:?} B = 4096: naive frames {naive}, Haar frames {large}"
            );
        }
    }
}

#[test]
fn with_query_position_p_q_the_three_parameter_restriction_is_still_musat3() {
    // At a point with only α₃, β₂, γ₃ nonzero, p_q changes nothing the closed form of §7 sees:
    // the structured evaluation and the dense full model on Haar p_q samples give musat3's
    // loss and three partials; some of the other 16 partials differ from fresh (the 19-dim
    // flow leaves the plane another way).
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    for &n in &[2usize, 4, 9] {
        for query in [Query::Last, Query::Uniform] {
            let sys = Musat19::with_query_position(
                n,
                query,
                LabelPosition::Rotated,
                QueryPosition::PQ,
                1.0,
            );
            let fresh = Musat19::new(n, query, LabelPosition::Rotated, 1.0);
            let m3 = Musat3::new(n, query, 1.0);
            for _ in 0..4 {
                let th3 = [
                    rng.random_range(-2.0..4.0),
                    rng.random_range(-2.0..6.0),
                    rng.random_range(-0.5..1.5),
                ];
                let (mut g, mut gf) = (vec![0.0; 19], vec![0.0; 19]);
                sys.grad(&three(&th3), &mut g);
                fresh.grad(&three(&th3), &mut gf);
                let mut want = [0.0; 3];
                m3.grad(&th3, &mut want);
                let what = format!("N={n} {query:?}");
                assert_close(sys.loss(&three(&th3)), m3.loss(&th3), 1e-12, &what);
                assert_close(g[ALPHA3], want[0], 1e-11, &what);
                assert_close(g[BETA2], want[1], 1e-11, &what);
                assert_close(g[GAMMA3], want[2], 1e-11, &what);
                let off = (0..19).map(|k| (g[k] - gf[k]).abs()).fold(0.0f64, f64::max);
                assert!(
                    off > 1e-4,
                    "{what}: p_q and fresh gradients agree off the plane"
                );
            }
        }
    }
    // the dense 28D² model on Haar p_q samples (D = 12, N = 4, query last) against §7.1
    let (n, d) = (4, 12);
    let spec = DataSpec {
        n,
        d,
        data: DataKind::Orthonormal,
        query: Query::Last,
        label_position: LabelPosition::Rotated,
        query_position: QueryPosition::PQ,
        m: MMatrix::J,
    };
    let batch = Batch::sample(&mut Sampler::new(spec, 17, 0), 40);
    let m3 = Musat3::new(n, Query::Last, 1.0);
    for _ in 0..5 {
        let th3 = [
            rng.random_range(-2.0..4.0),
            rng.random_range(-2.0..6.0),
            rng.random_range(-0.5..1.5),
        ];
        let (loss, g) = dense_projected(&three(&th3), &batch, 1.0);
        let mut want = [0.0; 3];
        m3.grad(&th3, &mut want);
        assert_close(loss, m3.loss(&th3), 1e-10, "loss");
        assert_close(g[ALPHA3], want[0], 1e-10, "alpha3");
        assert_close(g[BETA2], want[1], 1e-10, "beta2");
        assert_close(g[GAMMA3], want[2], 1e-10, "gamma3");
    }
}

// ---- M = swap (S = [[0, I], [I, 0]], docs/theory/musat.md §3)

const POSITIONS: [QueryPosition; 2] = [QueryPosition::Fresh, QueryPosition::PQ];

#[test]
fn swap_equals_the_dense_model_on_the_canonical_configurations() {
    // The dense 28D² backward pass at W(θ) = Σ θ_k B_k (S blocks) on the canonical
    // configuration(s), projected onto the S basis, is the structured gradient, for both query
    // modes and positions; and the loss is not J's.
    let mut rng = ChaCha8Rng::seed_from_u64(33);
    for n in [1usize, 4] {
        for query in [Query::Last, Query::Uniform] {
            for qpos in POSITIONS {
                let batch = canonical_batch(n, query, qpos, MMatrix::Swap);
                let sys =
                    Musat19::with_m(n, query, LabelPosition::Rotated, qpos, MMatrix::Swap, 0.5);
                assert!(!sys.uses_canonical_last());
                assert_eq!(sys.m(), MMatrix::Swap);
                let j = Musat19::with_m(n, query, LabelPosition::Rotated, qpos, MMatrix::J, 0.5);
                for _ in 0..5 {
                    let th = random_theta(&mut rng, 1.5);
                    let (loss, g) = dense_projected_with(&th, &batch, 0.5, MMatrix::Swap);
                    let mut got = vec![0.0; 19];
                    sys.grad(&th, &mut got);
                    let what = format!("N={n} {query:?} {qpos:?}");
                    assert_close(sys.loss(&th), loss, 1e-12, &format!("{what} loss"));
                    for k in 0..19 {
                        assert_close(got[k], g[k], 1e-11, &format!("{what} {}", NAMES19[k]));
                    }
                    if n > 1 {
                        assert!((sys.loss(&th) - j.loss(&th)).abs() > 1e-8, "{what}");
                    }
                }
            }
        }
    }
}

#[test]
fn every_haar_swap_sample_gives_the_canonical_loss_and_gradient() {
    // The orbit argument for S: the centraliser O(D/2) × O(D/2) of S moves any orthonormal
    // {p_k, S p_k} frame to any other, so each swap-sampled orthonormal sequence has, at a
    // structured W(θ) of the S basis, the loss and projected gradient of the canonical
    // configuration of its q.
    let cases = [
        (Query::Last, LabelPosition::Rotated, QueryPosition::Fresh),
        (Query::Last, LabelPosition::Same, QueryPosition::Fresh),
        (Query::Uniform, LabelPosition::Rotated, QueryPosition::Fresh),
        (Query::Uniform, LabelPosition::Rotated, QueryPosition::PQ),
    ];
    assert_haar_samples_give_their_canonical_configuration(MMatrix::Swap, &cases, 34, 19, 4);
}
