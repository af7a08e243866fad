//! Tests of the specialised pass of `canonical.rs` (query last, cue rotated, position fresh).

use super::*;
use crate::systems::musat::data::{DataKind, DataSpec};
use crate::systems::musat::disentangled::{Batch, Dims, Model, Params};
use crate::systems::musat::subspace::{inner_products, structured};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn canonical_last(n: usize, scale: f64) -> Musat19 {
    Musat19::new(n, Query::Last, LabelPosition::Rotated, scale)
}

fn random_theta(rng: &mut ChaCha8Rng, size: f64) -> Vec<f64> {
    (0..19).map(|_| rng.random_range(-size..size)).collect()
}

fn assert_close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}: {a} vs {b}");
}

/// Loss and gradient by the specialised pass (through `evaluate`) and by the generic one.
fn both(sys: &Musat19, th: &[f64]) -> ((f64, Vec<f64>), (f64, Vec<f64>)) {
    let (mut fast, mut slow) = (vec![f64::NAN; 19], vec![f64::NAN; 19]);
    let lf = sys.evaluate(th, Some(&mut fast));
    let ls = sys.evaluate_generic(th, Some(&mut slow));
    ((lf, fast), (ls, slow))
}

#[test]
fn the_generic_configuration_has_the_structure_the_specialised_pass_assumes() {
    // What canonical.rs reads off the data, checked on the generic pass's own reduction of
    // `canonical_configuration(n, n, Rotated, Fresh)`: one-hot contents c(x_p) = e_p,
    // c(y_p) = e_{N+p}, c(Q) = c(x_L), target c(y_L); C = P = I and PJ(y_p, x_p) = 1,
    // PJ(x_p, y_p) = −1 among the tokens before the query; the only layer-1 keys with a
    // nonzero score are x_p in row y_p (PJ = 1) and x_L in row Q (C = 1).
    for n in [1usize, 2, 3, 4, 7] {
        let sys = canonical_last(n, 1.0);
        assert_eq!(sys.configs.len(), 1);
        let c = &sys.configs[0];
        let (q, l) = (2 * n, n - 1);
        assert_eq!(c.weight, 1.0);
        assert!(c.one_hot);
        let content: Vec<u32> = (0..n)
            .flat_map(|p| [p, n + p])
            .chain([l])
            .map(|i| i as u32)
            .collect();
        assert_eq!(c.c_idx, content, "N={n}");
        assert!(c.c_val.iter().all(|&v| v == 1.0));
        assert_eq!(c.target, vec![((n + l) as u32, 1.0)]);
        let mut specials: Vec<(u32, u32, [f64; 3])> = (0..n)
            .map(|p| ((2 * p + 1) as u32, (2 * p) as u32, [0.0, 0.0, 1.0]))
            .collect();
        specials.push((q as u32, (2 * l) as u32, [1.0, 0.0, 0.0]));
        let got: Vec<(u32, u32, [f64; 3])> = (0..c.sp_key.len())
            .map(|i| (c.sp_row[i], c.sp_key[i], c.sp_g[i]))
            .collect();
        assert_eq!(got, specials, "N={n}");
        assert_eq!(c.gram.len(), 3);
        for part in &c.gram {
            match part.m {
                0 | 1 => {
                    assert_eq!(part.diag, vec![1.0; q], "N={n} m={}", part.m);
                    assert!(part.off.is_empty());
                }
                _ => {
                    assert!(part.diag.is_empty());
                    let mut want: Vec<(u32, u32, f64)> = (0..n)
                        .flat_map(|p| {
                            let (x, y) = ((2 * p) as u32, (2 * p + 1) as u32);
                            [(x, y, -1.0), (y, x, 1.0)]
                        })
                        .collect();
                    want.sort_by_key(|e| (e.0, e.1));
                    assert_eq!(part.off, want, "N={n}");
                }
            }
        }
    }
}

#[test]
fn the_specialised_pass_equals_the_generic_pass() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for n in [1usize, 2, 3, 4, 7, 16, 33] {
        for scale in [1.0, 0.3] {
            let sys = canonical_last(n, scale);
            assert!(sys.uses_canonical_last());
            for i in 0..40 {
                // mostly moderate, some large enough to need the max shifts
                let size = if i % 8 == 7 { 8.0 } else { 3.0 };
                let th = random_theta(&mut rng, size);
                let ((lf, gf), (ls, gs)) = both(&sys, &th);
                let what = format!("N={n} scale {scale} θ={th:?}");
                assert!(lf.is_finite() && gf.iter().all(|g| g.is_finite()), "{what}");
                assert_close(lf, ls, 1e-12, &format!("{what} loss"));
                for k in 0..19 {
                    assert_close(gf[k], gs[k], 1e-12, &format!("{what} {}", NAMES19[k]));
                }
                // the loss alone is the same number, and repeated calls give the same bytes
                assert_eq!(sys.loss(&th).to_bits(), lf.to_bits(), "{what}");
                let mut again = vec![0.0; 19];
                sys.grad(&th, &mut again);
                assert!(
                    again
                        .iter()
                        .zip(&gf)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{what}"
                );
            }
        }
    }
}

#[test]
fn the_specialised_pass_equals_the_dense_model_on_the_canonical_configuration() {
    // Independent of both token-coordinate passes: the dense 28D² backward pass at W(θ) on
    // `canonical_configuration(n, n, Rotated, Fresh)`, projected onto the basis.
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    for n in [1usize, 2, 4, 7] {
        let d = 2 * n + 2;
        let (tokens, target) = canonical_configuration(
            n,
            n,
            LabelPosition::Rotated,
            QueryPosition::Fresh,
            MMatrix::J,
        );
        let spec = DataSpec {
            n,
            d,
            data: DataKind::Orthonormal,
            query: Query::Last,
            label_position: LabelPosition::Rotated,
            query_position: QueryPosition::Fresh,
            m: MMatrix::J,
        };
        let batch = Batch::from_parts(spec, tokens, target);
        let sys = canonical_last(n, 0.5);
        assert!(sys.uses_canonical_last());
        for i in 0..6 {
            let th = random_theta(&mut rng, if i == 5 { 6.0 } else { 2.0 });
            let dims = Dims { n, d };
            let mut model = Model::new(dims, 1, 0.5);
            let mut g = Params::zeros(d);
            let loss = model.loss_and_grad(&structured(&th, d), &batch, &mut g);
            let want = inner_products(&g);
            let mut got = vec![0.0; 19];
            sys.grad(&th, &mut got);
            assert_close(sys.loss(&th), loss, 1e-10, &format!("N={n} loss"));
            for k in 0..19 {
                assert_close(got[k], want[k], 1e-10, &format!("N={n} {}", NAMES19[k]));
            }
        }
    }
}

#[test]
fn the_specialised_gradient_matches_central_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    for n in [1usize, 2, 3, 5, 16] {
        let sys = canonical_last(n, 1.0);
        assert!(sys.uses_canonical_last());
        for _ in 0..3 {
            let th = random_theta(&mut rng, 1.5);
            super::tests::assert_central_differences(&sys, &th, &format!("N={n}"));
        }
    }
}

#[test]
fn only_the_canonical_last_rotated_fresh_system_takes_the_specialised_pass() {
    let th: Vec<f64> = (0..19).map(|k| 0.1 * (k as f64 - 9.0)).collect();
    // N ≤ 8 (stack) and above (scratch), up to sweep sizes
    for n in [1usize, 4, 8, 9, 64, 200] {
        let sys = canonical_last(n, 0.7);
        assert!(sys.uses_canonical_last(), "N={n}");
        // `loss` and `grad` are the specialised pass's numbers, bit for bit
        let mut want = vec![0.0; 19];
        let loss = canonical::evaluate(n, &th, 0.7, Some(&mut want));
        let mut got = vec![0.0; 19];
        sys.grad(&th, &mut got);
        assert_eq!(sys.loss(&th).to_bits(), loss.to_bits(), "N={n}");
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
    }
    for n in [1usize, 4] {
        for (query, cue, qpos) in [
            (Query::Uniform, LabelPosition::Rotated, QueryPosition::Fresh),
            (Query::Last, LabelPosition::Same, QueryPosition::Fresh),
            (Query::Last, LabelPosition::None, QueryPosition::Fresh),
            (Query::Last, LabelPosition::Rotated, QueryPosition::PQ),
            (Query::Uniform, LabelPosition::Rotated, QueryPosition::PQ),
        ] {
            let sys = Musat19::with_query_position(n, query, cue, qpos, 1.0);
            assert!(
                !sys.uses_canonical_last(),
                "N={n} {query:?} {cue:?} {qpos:?}"
            );
        }
        // the same sequence through `from_sequences`: generic, and the same numbers
        let (t, y) = canonical_configuration(
            n,
            n,
            LabelPosition::Rotated,
            QueryPosition::Fresh,
            MMatrix::J,
        );
        let seq = Musat19::from_sequences(n, 2 * n + 2, &[(t, y)], 1.0);
        assert!(!seq.uses_canonical_last());
        let fast = canonical_last(n, 1.0);
        let (mut a, mut b) = (vec![0.0; 19], vec![0.0; 19]);
        seq.grad(&th, &mut a);
        fast.grad(&th, &mut b);
        assert_close(seq.loss(&th), fast.loss(&th), 1e-12, "loss");
        for k in 0..19 {
            assert_close(a[k], b[k], 1e-12, NAMES19[k]);
        }
    }
}

#[test]
fn the_scratch_of_one_size_does_not_leak_into_another() {
    // The per-thread scratch keeps the values of the last, larger call: every value a pass
    // reads must be one it wrote. Evaluate N = 40, then N = 12, 40 again, at other θ in
    // between, and compare with fresh results.
    let mut rng = ChaCha8Rng::seed_from_u64(24);
    let (a, b) = (canonical_last(40, 1.0), canonical_last(12, 1.0));
    let (ta, tb) = (random_theta(&mut rng, 3.0), random_theta(&mut rng, 3.0));
    let eval = |sys: &Musat19, th: &[f64]| {
        let mut g = vec![0.0; 19];
        let loss = sys.evaluate(th, Some(&mut g));
        (
            loss.to_bits(),
            g.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        )
    };
    let first_a = eval(&a, &ta);
    let first_b = eval(&b, &tb);
    let _ = eval(&a, &tb);
    assert_eq!(eval(&b, &tb), first_b);
    let _ = eval(&b, &ta);
    assert_eq!(eval(&a, &ta), first_a);
}

#[test]
fn the_stack_pairs_of_small_n_give_the_bits_of_the_scratch_pass() {
    // N ≤ FIXED_MAX runs on a stack array (unrolled loops); the per-thread scratch pass must
    // give the same loss and gradient to the last bit, at moderate and at extreme θ, and with
    // the loss alone.
    let mut rng = ChaCha8Rng::seed_from_u64(25);
    for n in 1..=canonical::FIXED_MAX + 1 {
        for size in [0.5, 3.0, 40.0] {
            let th = random_theta(&mut rng, size);
            let (mut g1, mut g2) = (vec![f64::NAN; 19], vec![f64::NAN; 19]);
            let l1 = canonical::evaluate(n, &th, 0.7, Some(&mut g1));
            let l2 = canonical::scratch(n, &th, 0.7, Some(&mut g2));
            assert_eq!(l1.to_bits(), l2.to_bits(), "n = {n}, size {size}: loss");
            for k in 0..19 {
                assert_eq!(
                    g1[k].to_bits(),
                    g2[k].to_bits(),
                    "n = {n}, size {size}: {k}"
                );
            }
            let l3 = canonical::evaluate(n, &th, 0.7, None);
            assert_eq!(
                l3.to_bits(),
                l1.to_bits(),
                "n = {n}, size {size}: loss alone"
            );
        }
    }
}

/// At θ the specialised loss and gradient are finite, the loss equals the generic pass's to
/// 1e-12 and every partial is within 1e-10 · (1 + max |generic partial|) of it.
fn assert_finite_and_near_generic(sys: &Musat19, th: &[f64], what: &str) {
    let ((lf, gf), (ls, gs)) = both(sys, th);
    assert!(lf.is_finite() && gf.iter().all(|g| g.is_finite()), "{what}");
    assert_close(lf, ls, 1e-12, &format!("{what} loss"));
    let norm = gs.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    for k in 0..19 {
        assert!(
            (gf[k] - gs[k]).abs() <= 1e-10 * (1.0 + norm),
            "{what} {}: {} vs {} (max norm {norm})",
            NAMES19[k],
            gf[k],
            gs[k]
        );
    }
}

#[test]
fn extreme_scores_stay_finite_and_equal_the_generic_pass() {
    // θ of size 3000: the layer-2 scores differ by far more than the ≈ 709 an unshifted
    // exponential survives, so the max shift (taken from a few scores, by the monotonicity of
    // s²_{y_p} in p) must be the true maximum up to rounding or the loss overflows. The
    // gradient is compared norm-wise: at this size rounding in the β and α partials (products
    // of θ-sized coefficients with the softmax backward) is amplified by up to ~|θ| against the
    // gradient's own scale (observed ≈ 1e-12 of its max norm).
    let mut rng = ChaCha8Rng::seed_from_u64(25);
    for n in [1usize, 2, 3, 4, 7, 16] {
        let sys = canonical_last(n, 1.0);
        for _ in 0..200 {
            let th = random_theta(&mut rng, 3000.0);
            assert_finite_and_near_generic(&sys, &th, &format!("N={n} θ={th:?}"));
        }
    }
}

/// θ (indices as NAMES19) with α = 0, the given β and γ = (0.5, −0.3, 0.7, 0.2).
fn theta_with(betas: &[(usize, f64)]) -> Vec<f64> {
    let mut th = vec![0.0; 19];
    for &(i, v) in betas {
        th[3 + i - 1] = v; // β_i
    }
    th[15..].copy_from_slice(&[0.5, -0.3, 0.7, 0.2]);
    th
}

#[test]
fn each_candidate_of_the_max_shift_can_be_the_maximum() {
    // N = 4, α = 0 (b_Q = a_{Q,x_L} = 1/8, and base_p = sp_p = 1/(2p + 1)): for each of the six
    // scores the max shift is taken from (y_0, y_{L−1}, y_L, x_0, x_1..x_{L−1}, x_L) a θ where
    // it exceeds every other candidate by more than 709, so that leaving it out overflows.
    // With z_x = (β₃ + β₉ + β₁₀)/8, z_y = (β₃ + β₉ − β₁₀)/8, y_x = (β₄ + β₁₁ + β₁₂)/8,
    // y_y = (β₄ + β₁₁ − β₁₂)/8, s²_{y_p} = z_y + (p (y_x + y_y) + y_x)/(2p + 1) for p < L:
    let cases = [
        // y_{L−1} = 4000 (y_1 3333, y_0 0, y_L 0, x −5000)
        (
            "y_{L-1}",
            theta_with(&[(2, -30000.0), (10, -40000.0), (12, -40000.0)]),
        ),
        // y_0 = 10000 (y_{L−1} 6000, y_L 5000, x −5000)
        (
            "y_0",
            theta_with(&[(2, -5000.0), (10, -40000.0), (12, 40000.0)]),
        ),
        // x_1..x_{L−1} = 6000 (x_0 5000, x_L 0, y ≤ −4000)
        (
            "x_mid",
            theta_with(&[(1, -6000.0), (4, 8000.0), (10, 40000.0)]),
        ),
        // x_0 = 5000 (x_mid 4000, x_L −2000, y < −5000)
        (
            "x_0",
            theta_with(&[(1, -6000.0), (4, -8000.0), (10, 40000.0)]),
        ),
        // x_L = 16000 (x_mid 6000)
        (
            "x_L",
            theta_with(&[(1, 10000.0), (4, 8000.0), (10, 40000.0)]),
        ),
        // y_L = 16000 (x_mid 6000)
        (
            "y_L",
            theta_with(&[(1, -6000.0), (2, 140000.0), (4, 8000.0), (10, 40000.0)]),
        ),
    ];
    let sys = canonical_last(4, 1.0);
    for (what, th) in &cases {
        assert_finite_and_near_generic(&sys, th, what);
    }
}
