use super::*;
use crate::numerics::normal::NormalSource;

fn spec(n: usize, d: usize, data: DataKind, query: Query, cue: LabelPosition) -> DataSpec {
    DataSpec {
        n,
        d,
        data,
        query,
        label_position: cue,
        query_position: QueryPosition::Fresh,
        m: MMatrix::J,
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The Gram matrix of the given vectors.
fn gram(vs: &[Vec<f64>]) -> Vec<Vec<f64>> {
    vs.iter()
        .map(|a| vs.iter().map(|b| dot(a, b)).collect())
        .collect()
}

#[test]
fn orthonormal_sequences_have_orthonormal_contents_and_position_pairs() {
    for &(n, d) in &[(1usize, 4usize), (4, 10), (4, 12), (7, 20)] {
        for cue in [
            LabelPosition::Rotated,
            LabelPosition::Same,
            LabelPosition::None,
        ] {
            let s = spec(n, d, DataKind::Orthonormal, Query::Uniform, cue);
            let mut sampler = Sampler::new(s, 3, 0);
            let mut tokens = vec![0.0; s.sequence_len()];
            let mut target = vec![0.0; d];
            for _ in 0..5 {
                let q = sampler.sample(&mut tokens, &mut target);
                let e = 2 * d;
                let tok = |k: usize| &tokens[k * e..(k + 1) * e];
                // contents x_1..x_N, y_1..y_N orthonormal
                let mut contents: Vec<Vec<f64>> =
                    (0..2 * n).map(|k| tok(k)[..d].to_vec()).collect();
                let g = gram(&contents);
                for (i, row) in g.iter().enumerate() {
                    for (j, v) in row.iter().enumerate() {
                        let want = if i == j { 1.0 } else { 0.0 };
                        assert!((v - want).abs() < 1e-12, "contents Gram {i},{j} = {v}");
                    }
                }
                // {p_1..p_{N+1}, J p_1..J p_{N+1}} orthonormal
                let j_of = |p: &[f64]| {
                    let h = d / 2;
                    let mut out = vec![0.0; d];
                    for k in 0..h {
                        out[k] = -p[h + k];
                        out[h + k] = p[k];
                    }
                    out
                };
                let mut pos: Vec<Vec<f64>> =
                    (1..=n).map(|i| tok(2 * i - 2)[d..].to_vec()).collect();
                pos.push(tok(2 * n)[d..].to_vec());
                let all: Vec<Vec<f64>> = pos
                    .iter()
                    .cloned()
                    .chain(pos.iter().map(|p| j_of(p)))
                    .collect();
                let g = gram(&all);
                for (i, row) in g.iter().enumerate() {
                    for (j, v) in row.iter().enumerate() {
                        let want = if i == j { 1.0 } else { 0.0 };
                        assert!((v - want).abs() < 1e-12, "positions Gram {i},{j} = {v}");
                    }
                }
                // the label cue
                for i in 1..=n {
                    let label_pos = &tok(2 * i - 1)[d..];
                    let want = match cue {
                        LabelPosition::Rotated => j_of(&pos[i - 1]),
                        LabelPosition::Same => pos[i - 1].clone(),
                        LabelPosition::None => vec![0.0; d],
                    };
                    assert_eq!(label_pos, &want[..]);
                }
                // the query repeats x_q and the target is y_q
                assert_eq!(&tok(2 * n)[..d], &tok(2 * q - 2)[..d]);
                assert_eq!(&target[..], &tok(2 * q - 1)[..d]);
                contents.clear();
            }
        }
    }
}

#[test]
fn queries_are_last_or_cover_every_pair() {
    let s = spec(
        5,
        12,
        DataKind::Orthonormal,
        Query::Last,
        LabelPosition::Rotated,
    );
    let mut sampler = Sampler::new(s, 1, 0);
    let mut tokens = vec![0.0; s.sequence_len()];
    let mut target = vec![0.0; 12];
    assert!((0..20).all(|_| sampler.sample(&mut tokens, &mut target) == 5));
    let s = DataSpec {
        query: Query::Uniform,
        ..s
    };
    let mut sampler = Sampler::new(s, 1, 0);
    let mut counts = [0usize; 6];
    for _ in 0..3000 {
        counts[sampler.sample(&mut tokens, &mut target)] += 1;
    }
    assert_eq!(counts[0], 0);
    for &c in &counts[1..] {
        assert!((c as f64 - 600.0).abs() < 120.0, "{counts:?}");
    }
}

#[test]
fn isotropic_entries_have_variance_one_over_d() {
    let d = 8;
    let s = spec(
        3,
        d,
        DataKind::Isotropic,
        Query::Uniform,
        LabelPosition::Same,
    );
    let mut sampler = Sampler::new(s, 9, 2);
    let mut tokens = vec![0.0; s.sequence_len()];
    let mut target = vec![0.0; d];
    let (mut sum, mut sum2, mut count) = (0.0, 0.0, 0.0);
    for _ in 0..2000 {
        sampler.sample(&mut tokens, &mut target);
        for v in &tokens {
            sum += v;
            sum2 += v * v;
            count += 1.0;
        }
    }
    let mean = sum / count;
    let var = sum2 / count - mean * mean;
    assert!(mean.abs() < 0.01, "mean {mean}");
    assert!(
        (var * d as f64 - 1.0).abs() < 0.02,
        "variance × D = {}",
        var * d as f64
    );
}

#[test]
fn same_seed_and_stream_repeat_and_streams_differ() {
    let s = spec(
        4,
        12,
        DataKind::Orthonormal,
        Query::Uniform,
        LabelPosition::Rotated,
    );
    let draw = |seed, stream| {
        let mut sampler = Sampler::new(s, seed, stream);
        let mut tokens = vec![0.0; 3 * s.sequence_len()];
        let mut targets = vec![0.0; 3 * 12];
        let mut q = [0; 3];
        sampler.fill(&mut tokens, &mut targets, &mut q);
        tokens
    };
    assert_eq!(draw(5, 0), draw(5, 0));
    assert_ne!(draw(5, 0), draw(5, 1));
    assert_ne!(draw(5, 0), draw(6, 0));
}

/// Mean and standard error of the diagonal entries Q_jj (real part) and of the first row.
fn frame_statistics(fix: SignFix, complex: bool, draws: usize) -> (f64, f64, f64) {
    let (n, d) = (4usize, 12usize);
    let s = spec(
        n,
        d,
        DataKind::Orthonormal,
        Query::Last,
        LabelPosition::Rotated,
    );
    let mut sampler = Sampler::new(s, 17, 0).with_sign_fix(fix);
    let (rows, m) = if complex { (d / 2, n + 1) } else { (d, 2 * n) };
    let mut re = vec![0.0; rows * m];
    let mut im = vec![0.0; rows * m];
    let (mut sum, mut sum2, mut positive_first_row, mut count) = (0.0, 0.0, 0usize, 0usize);
    for _ in 0..draws {
        if complex {
            sampler.unitary_frame(m, &mut re, &mut im);
        } else {
            sampler.orthogonal_frame(m, &mut re);
        }
        for j in 0..m {
            let v = re[j * rows + j];
            sum += v;
            sum2 += v * v;
            count += 1;
            if re[j * rows] > 0.0 {
                positive_first_row += 1;
            }
        }
    }
    let mean = sum / count as f64;
    let se = ((sum2 / count as f64 - mean * mean) / count as f64).sqrt();
    (mean, se, positive_first_row as f64 / count as f64)
}

#[test]
fn haar_frames_pass_a_test_that_naive_qr_frames_fail() {
    // For a Haar orthogonal (or unitary) matrix every entry has a symmetric distribution, so the
    // mean diagonal entry is 0 and the first row is positive half of the time. Householder QR
    // without the sign fix returns Q_jj < 0 far more often (Mezzadri, math-ph/0609050).
    for complex in [false, true] {
        let (mean, se, frac) = frame_statistics(SignFix::Haar, complex, 4000);
        assert!(
            mean.abs() < 4.0 * se,
            "Haar (complex {complex}): mean diag {mean} ± {se}"
        );
        assert!(
            (frac - 0.5).abs() < 0.02,
            "Haar (complex {complex}): first row > 0 in {frac}"
        );
        let (mean, se, _) = frame_statistics(SignFix::Naive, complex, 4000);
        assert!(
            mean < -20.0 * se && mean < -0.1,
            "naive (complex {complex}): mean diag {mean} ± {se} should be clearly negative"
        );
    }
}

#[test]
fn canonical_configuration_is_the_documented_one() {
    let n = 3;
    let (tokens, target) = canonical_configuration(
        n,
        2,
        LabelPosition::Rotated,
        QueryPosition::Fresh,
        MMatrix::J,
    );
    let d = 2 * n + 2;
    let e = 2 * d;
    let nz = |k: usize| -> Vec<usize> { (0..e).filter(|&i| tokens[k * e + i] != 0.0).collect() };
    assert_eq!(nz(0), vec![0, d]); // item 1: x_1 = e_1, p_1 = e_1
    assert_eq!(nz(1), vec![n, d + d / 2]); // label 1: y_1 = e_{N+1}, J p_1 = e_{D/2+1}
    assert_eq!(nz(4), vec![2, d + 2]); // item 3
    assert_eq!(nz(6), vec![1, d + n]); // query: x_2, p_{N+1}
    assert_eq!(target.iter().position(|&v| v == 1.0), Some(n + 1)); // y_2
}

#[test]
fn ziggurat_normals_have_the_standard_normal_cdf() {
    // Φ at a few points (from tables); the empirical CDF of 400 000 draws must be within 5
    // standard errors, and the tail beyond the base layer (|x| > 3.654) must be sampled.
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let mut src = NormalSource;
    let n = 400_000;
    let draws: Vec<f64> = (0..n).map(|_| src.sample(&mut rng)).collect();
    for (x, phi) in [
        (-3.0, 0.0013498980316301),
        (-1.5, 0.0668072012688581),
        (0.0, 0.5),
        (0.5, 0.6914624612740131),
        (1.0, 0.8413447460685429),
        (2.0, 0.9772498680518208),
    ] {
        let emp = draws.iter().filter(|&&v| v <= x).count() as f64 / n as f64;
        let se = (phi * (1.0 - phi) / n as f64).sqrt();
        assert!((emp - phi).abs() < 5.0 * se, "F({x}) = {emp}, Φ = {phi}");
    }
    let tail = draws.iter().filter(|v| v.abs() > 3.7).count();
    // P(|Z| > 3.7) = 2.16e-4: about 86 draws
    assert!((40..140).contains(&tail), "{tail} draws beyond 3.7");
}

#[test]
fn real_householder_equals_the_complex_one_on_real_input() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let mut src = NormalSource;
    let (n, m) = (9, 6);
    let a: Vec<f64> = (0..n * m).map(|_| src.sample(&mut rng)).collect();
    for fix in [SignFix::Haar, SignFix::Naive] {
        let mut re = a.clone();
        let mut im = vec![0.0; n * m];
        householder_q(n, m, &mut re, &mut im, fix, &mut QrScratch::default());
        let mut real = a.clone();
        householder_q_real(n, m, &mut real, fix, &mut QrScratch::default());
        for i in 0..n * m {
            assert!(
                (re[i] - real[i]).abs() < 1e-13 && im[i].abs() < 1e-15,
                "{fix:?} {i}"
            );
        }
    }
}

#[test]
fn batched_fill_is_bit_identical_to_one_sequence_at_a_time() {
    // `fill` factors four frames at once (lanes); `sample` factors one. Same stream, same bits,
    // for both sign conventions, both M, both query modes, every cue, and batch sizes that
    // leave a partial group of lanes.
    for &(n, d) in &[(1usize, 4usize), (4, 12), (3, 10), (5, 16)] {
        for (query, cue) in [
            (Query::Last, LabelPosition::Rotated),
            (Query::Uniform, LabelPosition::Same),
            (Query::Uniform, LabelPosition::None),
        ] {
            for (fix, m) in [
                (SignFix::Haar, MMatrix::J),
                (SignFix::Naive, MMatrix::J),
                (SignFix::Haar, MMatrix::Swap),
                (SignFix::Naive, MMatrix::Swap),
            ] {
                for size in [1usize, 4, 7] {
                    let s = DataSpec {
                        m,
                        ..spec(n, d, DataKind::Orthonormal, query, cue)
                    };
                    let len = s.sequence_len();
                    let mut batched = Sampler::new(s, 11, 3).with_sign_fix(fix);
                    let mut tokens = vec![0.0; size * len];
                    let mut targets = vec![0.0; size * d];
                    let mut queries = vec![0; size];
                    batched.fill(&mut tokens, &mut targets, &mut queries);
                    let mut single = Sampler::new(s, 11, 3).with_sign_fix(fix);
                    for b in 0..size {
                        let mut tok = vec![0.0; len];
                        let mut tgt = vec![0.0; d];
                        let q = single.sample(&mut tok, &mut tgt);
                        assert_eq!(q, queries[b]);
                        let same = tok
                            .iter()
                            .chain(&tgt)
                            .zip(
                                tokens[b * len..(b + 1) * len]
                                    .iter()
                                    .chain(&targets[b * d..(b + 1) * d]),
                            )
                            .all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(
                            same,
                            "n {n} d {d} {query:?} {cue:?} {fix:?} {m:?} size {size} seq {b}"
                        );
                    }
                    // and the streams stay in step afterwards
                    let mut a = vec![0.0; len];
                    let mut t = vec![0.0; d];
                    batched.sample(&mut a, &mut t);
                    let mut b2 = vec![0.0; len];
                    single.sample(&mut b2, &mut t);
                    assert_eq!(a, b2);
                }
            }
        }
    }
}

#[test]
fn query_position_p_q_repeats_the_queried_items_position() {
    // With p_q the query token's position is item q's (sample and the batched fill, both
    // data kinds); everything else, and the random stream, is the same as with fresh, whose
    // query position is p_{N+1} (not any item's).
    let (n, d) = (4, 12);
    let e = 2 * d;
    for data in [DataKind::Orthonormal, DataKind::Isotropic] {
        for query in [Query::Last, Query::Uniform] {
            let fresh = spec(n, d, data, query, LabelPosition::Rotated);
            let pq = DataSpec {
                query_position: QueryPosition::PQ,
                ..fresh
            };
            let size = 9;
            let len = fresh.sequence_len();
            let draw = |s: DataSpec, batched: bool| {
                let mut sampler = Sampler::new(s, 11, 2);
                let mut tokens = vec![0.0; size * len];
                let mut targets = vec![0.0; size * d];
                let mut queries = vec![0; size];
                if batched {
                    sampler.fill(&mut tokens, &mut targets, &mut queries);
                } else {
                    for b in 0..size {
                        queries[b] = sampler.sample(
                            &mut tokens[b * len..(b + 1) * len],
                            &mut targets[b * d..(b + 1) * d],
                        );
                    }
                }
                (tokens, targets, queries)
            };
            for batched in [false, true] {
                let (tf, yf, qf) = draw(fresh, batched);
                let (tp, yp, qp) = draw(pq, batched);
                assert_eq!((&qf, &yf), (&qp, &yp), "{data:?} {query:?}");
                for b in 0..size {
                    let (sf, sp) = (&tf[b * len..(b + 1) * len], &tp[b * len..(b + 1) * len]);
                    let q = qp[b];
                    let pos = |s: &[f64], k: usize| s[k * e + d..(k + 1) * e].to_vec();
                    // the query's position is item q's; its content is unchanged
                    assert_eq!(pos(sp, 2 * n), pos(sp, 2 * q - 2), "{data:?} {query:?}");
                    assert_eq!(&sp[2 * n * e..2 * n * e + d], &sf[2 * n * e..2 * n * e + d]);
                    assert!((1..=n).all(|i| pos(sf, 2 * n) != pos(sf, 2 * i - 2)));
                    // every other token is bit-identical
                    assert_eq!(&sp[..2 * n * e], &sf[..2 * n * e]);
                }
            }
        }
    }
}

#[test]
fn canonical_configuration_with_query_position_p_q() {
    let n = 3;
    let d = 2 * n + 2;
    let e = 2 * d;
    for q in 1..=n {
        let (tokens, target) =
            canonical_configuration(n, q, LabelPosition::Rotated, QueryPosition::PQ, MMatrix::J);
        let (fresh, fresh_target) = canonical_configuration(
            n,
            q,
            LabelPosition::Rotated,
            QueryPosition::Fresh,
            MMatrix::J,
        );
        let nz =
            |k: usize| -> Vec<usize> { (0..e).filter(|&i| tokens[k * e + i] != 0.0).collect() };
        // query: x_q = e_q, p_q = e_q
        assert_eq!(nz(2 * n), vec![q - 1, d + q - 1]);
        assert_eq!(
            &tokens[2 * n * e + d..],
            &tokens[(2 * q - 2) * e + d..(2 * q - 1) * e]
        );
        assert_eq!(&tokens[..2 * n * e], &fresh[..2 * n * e]);
        assert_eq!(target, fresh_target);
    }
}

// ---- M = swap (S = [[0, I], [I, 0]])

/// S p = [b; a] for p = [a; b].
fn s_of(p: &[f64]) -> Vec<f64> {
    let h = p.len() / 2;
    p[h..].iter().chain(&p[..h]).copied().collect()
}

/// J p = [−b; a] for p = [a; b].
fn j_of(p: &[f64]) -> Vec<f64> {
    let h = p.len() / 2;
    p[h..]
        .iter()
        .map(|v| -v)
        .chain(p[..h].iter().copied())
        .collect()
}

/// The largest |G_ij − δ_ij| of the Gram matrix of `vs`.
fn max_gram_error(vs: &[Vec<f64>]) -> f64 {
    let g = gram(vs);
    let mut worst = 0.0f64;
    for (i, row) in g.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            worst = worst.max((v - if i == j { 1.0 } else { 0.0 }).abs());
        }
    }
    worst
}

#[test]
fn swap_orthonormal_positions_and_their_images_under_s_are_orthonormal() {
    // With M = swap, {p_1..p_{N+1}, S p_1..S p_{N+1}} is orthonormal on every draw (one at a
    // time and batched), labels sit at S p_i, contents are still orthonormal; and the pairs
    // {p_k, J p_k} are not orthonormal (a different sampler from J's).
    for &(n, d) in &[(1usize, 4usize), (4, 10), (4, 12), (7, 20)] {
        let s = DataSpec {
            m: MMatrix::Swap,
            ..spec(
                n,
                d,
                DataKind::Orthonormal,
                Query::Uniform,
                LabelPosition::Rotated,
            )
        };
        let len = s.sequence_len();
        let size = 6;
        let mut tokens = vec![0.0; size * len];
        let mut targets = vec![0.0; size * d];
        let mut queries = vec![0; size];
        let mut sampler = Sampler::new(s, 23, 1);
        sampler.fill(
            &mut tokens[..3 * len],
            &mut targets[..3 * d],
            &mut queries[..3],
        );
        for b in 3..size {
            queries[b] = sampler.sample(
                &mut tokens[b * len..(b + 1) * len],
                &mut targets[b * d..(b + 1) * d],
            );
        }
        let e = 2 * d;
        let mut j_worst = 0.0f64;
        for b in 0..size {
            let seq = &tokens[b * len..(b + 1) * len];
            let tok = |k: usize| &seq[k * e..(k + 1) * e];
            let contents: Vec<Vec<f64>> = (0..2 * n).map(|k| tok(k)[..d].to_vec()).collect();
            assert!(max_gram_error(&contents) < 1e-12, "n {n} d {d} contents");
            let mut pos: Vec<Vec<f64>> = (1..=n).map(|i| tok(2 * i - 2)[d..].to_vec()).collect();
            pos.push(tok(2 * n)[d..].to_vec());
            let with_s: Vec<Vec<f64>> = pos
                .iter()
                .cloned()
                .chain(pos.iter().map(|p| s_of(p)))
                .collect();
            let err = max_gram_error(&with_s);
            assert!(
                err < 1e-12,
                "n {n} d {d} seq {b}: positions and S positions, {err}"
            );
            let with_j: Vec<Vec<f64>> = pos
                .iter()
                .cloned()
                .chain(pos.iter().map(|p| j_of(p)))
                .collect();
            j_worst = j_worst.max(max_gram_error(&with_j));
            for i in 1..=n {
                assert_eq!(&tok(2 * i - 1)[d..], &s_of(&pos[i - 1])[..], "label {i}");
            }
            let q = queries[b];
            assert_eq!(&tok(2 * n)[..d], &tok(2 * q - 2)[..d]);
            assert_eq!(&targets[b * d..(b + 1) * d], &tok(2 * q - 1)[..d]);
        }
        assert!(
            j_worst > 0.05,
            "n {n} d {d}: swap positions are J-orthonormal ({j_worst})"
        );
    }
}

#[test]
fn swap_position_frames_are_haar_in_each_eigenspace() {
    // p_k = [(u_k + v_k)/2; (u_k − v_k)/2], so u_k = a + b and v_k = a − b for p_k = [a; b]:
    // both must be Haar frames of R^{D/2} (mean diagonal entry 0 within 4 standard errors, first
    // row positive half of the time) and independent (E u_11 v_11 = 0 within 4 standard
    // errors). Without the sign fix the diagonal is clearly negative.
    let (n, d) = (4usize, 12usize);
    let h = d / 2;
    let stats = |fix: SignFix| {
        let s = DataSpec {
            m: MMatrix::Swap,
            ..spec(
                n,
                d,
                DataKind::Orthonormal,
                Query::Last,
                LabelPosition::Rotated,
            )
        };
        let mut sampler = Sampler::new(s, 29, 0).with_sign_fix(fix);
        let mut tokens = vec![0.0; s.sequence_len()];
        let mut target = vec![0.0; d];
        let e = 2 * d;
        let (mut sum, mut sum2, mut positive, mut count) = (0.0, 0.0, 0usize, 0usize);
        let (mut cross, mut cross2) = (0.0, 0.0);
        let draws = 3000;
        for _ in 0..draws {
            sampler.sample(&mut tokens, &mut target);
            let pos = |k: usize| -> &[f64] {
                // p_1..p_N on the items, p_{N+1} on the query (fresh)
                let t = if k < n { 2 * k } else { 2 * n };
                &tokens[t * e + d..(t + 1) * e]
            };
            for k in 0..=n {
                let p = pos(k);
                let u: Vec<f64> = (0..h).map(|i| p[i] + p[h + i]).collect();
                let v: Vec<f64> = (0..h).map(|i| p[i] - p[h + i]).collect();
                for x in [u[k], v[k]] {
                    sum += x;
                    sum2 += x * x;
                    count += 1;
                }
                positive += (u[0] > 0.0) as usize + (v[0] > 0.0) as usize;
                if k == 0 {
                    cross += u[0] * v[0];
                    cross2 += (u[0] * v[0]).powi(2);
                }
            }
        }
        let mean = sum / count as f64;
        let se = ((sum2 / count as f64 - mean * mean) / count as f64).sqrt();
        let c = cross / draws as f64;
        let cse = ((cross2 / draws as f64 - c * c) / draws as f64).sqrt();
        (mean, se, positive as f64 / count as f64, c, cse)
    };
    let (mean, se, frac, c, cse) = stats(SignFix::Haar);
    assert!(mean.abs() < 4.0 * se, "mean diag {mean} ± {se}");
    assert!((frac - 0.5).abs() < 0.02, "first row > 0 in {frac}");
    assert!(c.abs() < 4.0 * cse, "E u_11 v_11 = {c} ± {cse}");
    let (mean, se, _, _, _) = stats(SignFix::Naive);
    assert!(
        mean < -20.0 * se && mean < -0.1,
        "naive: mean diag {mean} ± {se} should be clearly negative"
    );
}

#[test]
fn swap_isotropic_labels_sit_at_s_p_and_share_the_stream_with_j() {
    // Isotropic data with M = swap: the same draws as J (every content and item position is
    // bit-identical); only the label positions change, from J p_i to S p_i.
    let (n, d) = (3, 8);
    let e = 2 * d;
    let j = spec(
        n,
        d,
        DataKind::Isotropic,
        Query::Uniform,
        LabelPosition::Rotated,
    );
    let sw = DataSpec {
        m: MMatrix::Swap,
        ..j
    };
    let draw = |s: DataSpec| {
        let mut sampler = Sampler::new(s, 5, 4);
        let mut tokens = vec![0.0; 4 * s.sequence_len()];
        let mut targets = vec![0.0; 4 * d];
        let mut q = [0; 4];
        sampler.fill(&mut tokens, &mut targets, &mut q);
        (tokens, targets, q)
    };
    let ((tj, yj, qj), (ts, ys, qs)) = (draw(j), draw(sw));
    assert_eq!((yj, qj), (ys, qs));
    let len = j.sequence_len();
    for b in 0..4 {
        let tok = |t: &[f64], k: usize| t[b * len + k * e..b * len + (k + 1) * e].to_vec();
        for k in 0..=2 * n {
            let (a, s) = (tok(&tj, k), tok(&ts, k));
            assert_eq!(a[..d], s[..d], "content of token {k}");
            if k % 2 == 0 {
                assert_eq!(a[d..], s[d..], "position of token {k}");
            } else {
                let p = tok(&ts, k - 1)[d..].to_vec();
                assert_eq!(s[d..], s_of(&p)[..], "swap label {k}");
                assert_eq!(a[d..], j_of(&p)[..], "J label {k}");
            }
        }
    }
}

#[test]
fn canonical_configuration_with_swap_puts_labels_at_s_p() {
    // S e_k = J e_k = e_{D/2+k} for k <= D/2: the canonical tokens are the same for both M, and
    // each label's position is S p_i.
    let n = 3;
    let d = 2 * n + 2;
    let e = 2 * d;
    for qpos in [QueryPosition::Fresh, QueryPosition::PQ] {
        let (tokens, target) =
            canonical_configuration(n, 2, LabelPosition::Rotated, qpos, MMatrix::Swap);
        for i in 1..=n {
            let p = &tokens[(2 * i - 2) * e + d..(2 * i - 1) * e];
            assert_eq!(&tokens[(2 * i - 1) * e + d..2 * i * e], &s_of(p)[..]);
        }
        let (tj, yj) = canonical_configuration(n, 2, LabelPosition::Rotated, qpos, MMatrix::J);
        assert_eq!((tokens, target), (tj, yj));
    }
}
