use super::*;

fn mean_var(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, v)
}

/// Gamma(k, 1) has mean k, variance k and E[ln G] = ψ(k); checked within 4 standard errors.
#[test]
fn gamma_variates_have_the_right_moments() {
    let mut rng = item_rng(7, 0);
    let n = 200_000;
    for &k in &[0.1, 0.5, 1.0, 3.7] {
        let xs: Vec<f64> = (0..n)
            .map(|_| ln_gamma_variate(k, &mut rng).exp())
            .collect();
        let (m, v) = mean_var(&xs);
        // Var of the sample mean is k/n; of the sample variance ≈ (μ4 − k²)/n with μ4 = 3k² + 6k.
        let se_m = (k / n as f64).sqrt();
        let se_v = ((3.0 * k * k + 6.0 * k - k * k) / n as f64).sqrt();
        assert!((m - k).abs() < 4.0 * se_m, "k={k}: mean {m}");
        assert!((v - k).abs() < 4.0 * se_v, "k={k}: var {v}");
    }
    // E[ln G] for shape 0.1: ψ(0.1) = −10.4237549404...
    let lns: Vec<f64> = (0..n).map(|_| ln_gamma_variate(0.1, &mut rng)).collect();
    let (m, v) = mean_var(&lns);
    assert!(
        (m + 10.423_754_940_411_08).abs() < 4.0 * (v / n as f64).sqrt(),
        "{m}"
    );
}

#[test]
fn dirichlet_rows_are_simplex_points_with_mean_one_over_d() {
    let mut rng = item_rng(3, 1);
    let d = 4;
    let alpha = 0.1;
    let n = 50_000;
    let mut first = Vec::with_capacity(n);
    let mut row = vec![0.0; d];
    for _ in 0..n {
        dirichlet_symmetric(alpha, &mut row, &mut rng);
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(row.iter().all(|&p| (0.0..=1.0).contains(&p)));
        first.push(row[0]);
    }
    // Beta(α, (d−1)α): mean 1/d, variance (1/d)(1 − 1/d)/(dα + 1).
    let (m, v) = mean_var(&first);
    let var = 0.25 * 0.75 / (d as f64 * alpha + 1.0);
    assert!((m - 0.25).abs() < 4.0 * (var / n as f64).sqrt(), "{m}");
    // the sample variance's standard error is about 1% of var here; 5% is 5 of them
    assert!((v - var).abs() < 0.05 * var, "{v} vs {var}");
}

/// Two states, one parent: P(0→1) = a, P(1→0) = b, μ = (b, a)/(a + b).
#[test]
fn stationary_law_of_a_two_state_chain() {
    let (a, b) = (0.3, 0.05);
    let k = Kernel::from_fn(ChainShape::new(2, &[1]), |ctx| {
        if ctx[0] == 0 {
            vec![1.0 - a, a]
        } else {
            vec![b, 1.0 - b]
        }
    });
    let mu = k.stationary().unwrap();
    assert!((mu[0] - b / (a + b)).abs() < 1e-14);
    let (mu2, converged, _) = k.iterate_lazy(2, 100_000);
    assert!(converged);
    assert!((mu2[0] - b / (a + b)).abs() < 1e-13);
    // A periodic chain (0 → 1 → 0) still has the uniform law (the lazy chain is aperiodic).
    let flip = Kernel::from_fn(ChainShape::new(2, &[1]), |ctx| {
        if ctx[0] == 0 {
            vec![0.0, 1.0]
        } else {
            vec![1.0, 0.0]
        }
    });
    let mu = flip.stationary().unwrap();
    assert!((mu[0] - 0.5).abs() < 1e-14 && (mu[1] - 0.5).abs() < 1e-14);
}

/// Lifted stationary law of a two-parent chain: squaring, vector iteration, and the invariance
/// μ P = μ checked directly.
#[test]
fn lifted_stationary_law_is_invariant() {
    let shape = ChainShape::new(3, &[1, 2]);
    let k = Kernel::dirichlet(shape, 0.5, &mut item_rng(11, 0));
    let mu = k.stationary().unwrap();
    let (mu_it, converged, _) = k.iterate_lazy(9, 1_000_000);
    assert!(converged);
    for (a, b) in mu.iter().zip(&mu_it) {
        assert!((a - b).abs() < 1e-12);
    }
    // (μP)(s') = Σ_s μ(s) π(x | s) with s' = (s·d) mod 9 + x
    let mut next = [0.0; 9];
    for s in 0..9 {
        // context: (x_{l−1}, x_{l−2}) with x_{l−1} most significant
        let ctx = (s % 3) * 3 + (s / 3) % 3;
        for x in 0..3 {
            next[(s * 3) % 9 + x] += mu[s] * k.row(ctx)[x];
        }
    }
    for s in 0..9 {
        assert!((next[s] - mu[s]).abs() < 1e-14, "{s}");
    }
}

/// A stationary-start sequence has the stationary single-token law at every position, so the
/// empirical frequency of token 0 at position 0 over many sequences matches μ.
#[test]
fn stationary_start_draws_from_the_stationary_law() {
    let k = Kernel::from_fn(ChainShape::new(2, &[2]), |ctx| {
        if ctx[0] == 0 {
            vec![0.9, 0.1]
        } else {
            vec![0.3, 0.7]
        }
    });
    let spec = DataSpec {
        prior: KernelPrior::Fixed(k.clone()),
        length: 5,
        start: Start::Stationary,
        n_sequences: 40_000,
        seed: 5,
    };
    let data = generate(&spec);
    // single-token law: 0.3/(0.1 + 0.3) = 0.75 for token 0
    for pos in [0, 1, 5] {
        let f = (0..data.len())
            .filter(|&i| data.sequence(i)[pos] == 0)
            .count() as f64
            / data.len() as f64;
        let se = (0.75 * 0.25 / data.len() as f64).sqrt();
        assert!((f - 0.75).abs() < 4.0 * se, "pos {pos}: {f}");
    }
}

#[test]
fn data_are_seeded_and_split_ninety_ten() {
    let spec = DataSpec {
        prior: KernelPrior::Dirichlet {
            shape: ChainShape::new(3, &[1, 2]),
            alpha: 0.1,
        },
        length: 20,
        start: Start::Uniform,
        n_sequences: 100,
        seed: 2024,
    };
    let a = generate(&spec);
    let b = generate(&spec);
    assert_eq!(a, b);
    assert_eq!(a.len(), 100);
    assert!(a.tokens.iter().all(|&t| t < 3));
    let (train, val) = split(&a, 0.9);
    assert_eq!((train.len(), val.len()), (90, 10));
    assert_eq!(train.sequence(89), a.sequence(89));
    assert_eq!(val.sequence(0), a.sequence(90));
    let other = generate(&DataSpec { seed: 2025, ..spec });
    assert_ne!(a, other);
}

/// A deterministic rule x_l = x_{l−2} is followed exactly by the sampler.
#[test]
fn sequences_follow_the_kernel() {
    let k = Kernel::from_fn(ChainShape::new(3, &[2]), |ctx| {
        let mut r = vec![0.0; 3];
        r[ctx[0]] = 1.0;
        r
    });
    let mut out = Vec::new();
    k.sample_sequence(30, Start::Uniform, None, &mut item_rng(1, 2), &mut out);
    assert_eq!(out.len(), 30);
    for l in 2..30 {
        assert_eq!(out[l], out[l - 2]);
    }
}

/// The one-parent variant: with the rule x_l = x_{l−1} + 1 (mod 3), the chain is followed up to
/// x_{L−1}; x_L is uniform and independent of x_{L−1} (all 9 pairs appear, about equally
/// often), and the target follows the kernel from the redrawn x_L. With `Uniform` x_L follows
/// the rule (3 pairs only).
#[test]
fn uniform_last_redraws_the_last_input_token() {
    let k = Kernel::from_fn(ChainShape::new(3, &[1]), |ctx| {
        let mut r = vec![0.0; 3];
        r[(ctx[0] + 1) % 3] = 1.0;
        r
    });
    let len = 12; // L = 11 inputs and the target
    let mut pairs = [[0usize; 3]; 3];
    let mut out = Vec::new();
    for i in 0..9000 {
        k.sample_sequence(len, Start::UniformLast, None, &mut item_rng(3, i), &mut out);
        for l in 1..len - 2 {
            assert_eq!(
                out[l] as usize,
                (out[l - 1] as usize + 1) % 3,
                "chain before x_L"
            );
        }
        assert_eq!(
            out[len - 1] as usize,
            (out[len - 2] as usize + 1) % 3,
            "target from x_L"
        );
        pairs[out[len - 3] as usize][out[len - 2] as usize] += 1;
    }
    for row in &pairs {
        for &c in row {
            // 1000 expected per pair; 5 sigma of a binomial(9000, 1/9) is about 150
            assert!((850..=1150).contains(&c), "{pairs:?}");
        }
    }
    k.sample_sequence(len, Start::Uniform, None, &mut item_rng(3, 0), &mut out);
    assert_eq!(out[len - 2] as usize, (out[len - 3] as usize + 1) % 3);
}
