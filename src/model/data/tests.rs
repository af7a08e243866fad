use super::*;

fn spec(n: usize, d: usize, data: DataKind, query: Query, cue: LabelPosition) -> DataSpec {
    DataSpec {
        n,
        d,
        data,
        query,
        label_position: cue,
        query_position: QueryPosition::Fresh,
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
    let (tokens, target) =
        canonical_configuration(n, 2, LabelPosition::Rotated, QueryPosition::Fresh);
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
    // for both sign conventions, both query modes, every cue, and batch sizes that leave a
    // partial group of lanes.
    for &(n, d) in &[(1usize, 4usize), (4, 12), (3, 10), (5, 16)] {
        for (query, cue) in [
            (Query::Last, LabelPosition::Rotated),
            (Query::Uniform, LabelPosition::Same),
            (Query::Uniform, LabelPosition::None),
        ] {
            for fix in [SignFix::Haar, SignFix::Naive] {
                for size in [1usize, 4, 7] {
                    let s = spec(n, d, DataKind::Orthonormal, query, cue);
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
                            "n {n} d {d} {query:?} {cue:?} {fix:?} size {size} seq {b}"
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
            canonical_configuration(n, q, LabelPosition::Rotated, QueryPosition::PQ);
        let (fresh, fresh_target) =
            canonical_configuration(n, q, LabelPosition::Rotated, QueryPosition::Fresh);
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
