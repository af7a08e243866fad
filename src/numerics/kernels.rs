//! Dot products and softmaxes of the hot loops, each arithmetic written once.
//!
//! Every function states its exact order of operations: the systems' outputs are pinned to the
//! bit, so two call sites may share a kernel only if they perform the same operations in the
//! same order. Each is plain IEEE arithmetic (no fused multiply-add, no reassociation), so its
//! bits are the same whether the caller is compiled for SSE2 or, through
//! [`super::simd::dispatch`], for AVX2.
//!
//! | kernel | order | users |
//! |---|---|---|
//! | [`dot`] | one sum in index order | 19-dim flow, Wang's full model |
//! | [`dot4`] | four partial sums, then the tail | Musat's data (QR), Musat's full model |
//! | [`dot4_rows`] | [`dot4`] against four rows at once | Musat's full model |
//! | [`combine_rows`] | Σ_j c_j row_j in j order | Musat's full model |
//! | [`softmax_recip`] | e^(s − max), times 1/Σ | Musat's full model |
//! | [`softmax_div`], [`softmax_div_into`] | e^(s − max), over Σ | Wang, Chen, Dirichlet draws |
//! | [`exp_shifted`] | e^x, e^0 = 1 without a call | [`softmax_recip`], canonical 19-dim pass |

/// Σ a_i b_i over the common length, the products added one at a time in index order:
/// `((p₀ + p₁) + p₂) + …`, starting from the identity of `Iterator::sum` (−0.0, so an empty
/// dot is −0.0 and a single product keeps its sign).
#[inline(always)]
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Σ a_i b_i over the common length n with four partial sums: product i goes to sum i mod 4
/// for i < 4⌊n/4⌋ (each sum starting at +0.0 and adding in index order), the sums are combined
/// as (s₀ + s₁) + (s₂ + s₃), then the remaining n mod 4 products are added in index order.
/// The four sums are the lanes of one vector register. Not the bits of [`dot`] in general.
#[inline(always)]
pub fn dot4(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f64; 4];
    let mut ac = a.chunks_exact(4);
    let mut bc = b.chunks_exact(4);
    for (x, y) in (&mut ac).zip(&mut bc) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (x, y) in ac.remainder().iter().zip(bc.remainder()) {
        s += x * y;
    }
    s
}

/// out_j = [`dot4`](p[..len], row j) for the `out.len()` rows of length `len` at stride `ld` in
/// `rows` (row j is `rows[j·ld..j·ld + len]`). Four rows at a time share the loads of p and run
/// four independent sets of partial sums; each row's sum has the order of [`dot4`], so every
/// out_j is the same bits as `dot4(&p[..len], row_j)`.
#[inline(always)]
pub fn dot4_rows(p: &[f64], rows: &[f64], ld: usize, len: usize, out: &mut [f64]) {
    let p = &p[..len];
    let full = len / 4 * 4;
    let mut blocks = out.chunks_exact_mut(4);
    let mut j0 = 0;
    for o in &mut blocks {
        let r: [&[f64]; 4] = std::array::from_fn(|r| &rows[(j0 + r) * ld..(j0 + r) * ld + len]);
        let mut acc = [[0.0f64; 4]; 4];
        for c in (0..full).step_by(4) {
            let pc = &p[c..c + 4];
            for (a, row) in acc.iter_mut().zip(&r) {
                let x = &row[c..c + 4];
                for l in 0..4 {
                    a[l] += pc[l] * x[l];
                }
            }
        }
        for ((o, a), row) in o.iter_mut().zip(&acc).zip(&r) {
            let mut s = (a[0] + a[1]) + (a[2] + a[3]);
            for i in full..len {
                s += p[i] * row[i];
            }
            *o = s;
        }
        j0 += 4;
    }
    for (r, o) in blocks.into_remainder().iter_mut().enumerate() {
        let j = j0 + r;
        *o = dot4(p, &rows[j * ld..j * ld + len]);
    }
}

/// out ← Σ_j coef_j · row_j for the rows of length `out.len()` at stride `ld` in `rows`: every
/// output starts at +0.0 and adds coef_j · row_j,i in j order from 0 (the bits of `out.fill(0)`
/// followed by one axpy per row), with each block of eight outputs kept in registers across
/// the rows.
#[inline(always)]
pub fn combine_rows(coef: &[f64], rows: &[f64], ld: usize, out: &mut [f64]) {
    let len = out.len();
    let mut c0 = 0;
    let mut blocks = out.chunks_exact_mut(8);
    for o in &mut blocks {
        let mut acc = [0.0f64; 8];
        for (j, &a) in coef.iter().enumerate() {
            let x = &rows[j * ld + c0..j * ld + c0 + 8];
            for l in 0..8 {
                acc[l] += a * x[l];
            }
        }
        o.copy_from_slice(&acc);
        c0 += 8;
    }
    for (i, o) in blocks.into_remainder().iter_mut().enumerate() {
        let mut acc = 0.0;
        for (j, &a) in coef.iter().enumerate() {
            acc += a * rows[j * ld + c0 + i];
        }
        *o = acc;
    }
    debug_assert!(coef.is_empty() || (coef.len() - 1) * ld + len <= rows.len());
}

/// e^x (libm's `exp`), skipping the call for x = ±0 (the maximum of a max-shifted softmax
/// row): e^0 = 1 exactly, so the bits are those of `x.exp()` for every x.
#[inline(always)]
pub fn exp_shifted(x: f64) -> f64 {
    if x == 0.0 { 1.0 } else { x.exp() }
}

/// Softmax of `s` in place, by the reciprocal of the sum: m = max_i s_i (a fold of `f64::max`
/// from −∞, in index order), s_i ← [`exp_shifted`](s_i − m) while z adds them in index order
/// from +0.0, then s_i ← s_i · (1/z). Within an ulp or so of [`softmax_div`], not its bits.
#[inline(always)]
pub fn softmax_recip(s: &mut [f64]) {
    let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut z = 0.0;
    for v in s.iter_mut() {
        *v = exp_shifted(*v - m);
        z += *v;
    }
    let inv = 1.0 / z;
    for v in s.iter_mut() {
        *v *= inv;
    }
}

/// Softmax of `s` in place, by division: m = max_i s_i (a fold of `f64::max` from −∞, in index
/// order), s_i ← e^(s_i − m) (libm's `exp`, called for every entry) while z adds them in index
/// order from +0.0, then s_i ← s_i / z. An empty slice is left alone.
pub fn softmax_div(s: &mut [f64]) {
    let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut z = 0.0;
    for v in s.iter_mut() {
        *v = (*v - m).exp();
        z += *v;
    }
    for v in s.iter_mut() {
        *v /= z;
    }
}

/// [`softmax_div`] of `w` written into `out` (the same length; panics otherwise): the same
/// operations, so the same bits.
pub fn softmax_div_into(w: &[f64], out: &mut [f64]) {
    out.copy_from_slice(w);
    softmax_div(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(rng: &mut ChaCha8Rng, n: usize, scale: f64) -> Vec<f64> {
        (0..n)
            .map(|_| scale * rng.random_range(-1.0..1.0))
            .collect()
    }

    fn bits(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Distance in units in the last place (same sign, finite).
    fn ulps(a: f64, b: f64) -> u64 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
    }

    #[test]
    fn dot_is_the_sequential_sum() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for n in 0..20 {
            let (a, b) = (random(&mut rng, n, 3.0), random(&mut rng, n + 2, 3.0));
            let mut want = -0.0;
            for i in 0..n {
                want += a[i] * b[i];
            }
            assert_eq!(dot(&a, &b).to_bits(), want.to_bits(), "n = {n}");
            assert_eq!(dot(&b, &a).to_bits(), want.to_bits(), "n = {n}");
        }
        assert!(dot(&[], &[]).is_sign_negative());
        assert_eq!(dot(&[-2.0], &[0.0]).to_bits(), (-0.0f64).to_bits());
    }

    #[test]
    fn dot4_is_four_accumulators_bit_for_bit_and_the_dot_within_rounding() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for n in 0..40 {
            let (a, b) = (random(&mut rng, n, 2.0), random(&mut rng, n + 3, 2.0));
            // the documented order, written out by hand
            let (mut s0, mut s1, mut s2, mut s3) = (0.0, 0.0, 0.0, 0.0);
            let full = n / 4 * 4;
            let mut i = 0;
            while i < full {
                s0 += a[i] * b[i];
                s1 += a[i + 1] * b[i + 1];
                s2 += a[i + 2] * b[i + 2];
                s3 += a[i + 3] * b[i + 3];
                i += 4;
            }
            let mut want = (s0 + s1) + (s2 + s3);
            for i in full..n {
                want += a[i] * b[i];
            }
            let got = dot4(&a, &b);
            assert_eq!(got.to_bits(), want.to_bits(), "n = {n}");
            assert_eq!(dot4(&b, &a).to_bits(), want.to_bits(), "n = {n}");
            // the same sum in another order: within n rounding errors of Σ |a_i b_i|
            let abs: f64 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum();
            let tol = (n as f64 + 1.0) * f64::EPSILON * abs;
            assert!(
                (got - dot(&a, &b)).abs() <= tol,
                "n = {n}: {got} vs {}",
                dot(&a, &b)
            );
        }
        // where the orders part: lane 0 holds 1e16 + 1 = 1e16 (the 1 is lost), the sequential
        // sum has cancelled 1e16 before the 1 arrives
        let a = [1e16, -1e16, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
        assert_eq!(dot4(&a, &[1.0; 8]), 0.0);
        assert_eq!(dot(&a, &[1.0; 8]), 1.0);
    }

    #[test]
    fn dot4_rows_is_dot4_per_row() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for len in 0..11 {
            for nrows in 0..10 {
                let ld = len + 2;
                let p = random(&mut rng, len + 1, 1.5);
                let rows = random(&mut rng, nrows * ld, 1.5);
                let mut out = vec![f64::NAN; nrows];
                dot4_rows(&p, &rows, ld, len, &mut out);
                let want: Vec<f64> = (0..nrows)
                    .map(|j| dot4(&p[..len], &rows[j * ld..j * ld + len]))
                    .collect();
                assert_eq!(bits(&out), bits(&want), "len = {len}, rows = {nrows}");
            }
        }
    }

    #[test]
    fn combine_rows_is_one_axpy_per_row_in_order() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for len in 0..20 {
            for nrows in 0..6 {
                let ld = len + 3;
                let coef = random(&mut rng, nrows, 2.0);
                let rows = random(&mut rng, nrows * ld + len, 2.0);
                let mut want = vec![0.0; len];
                for (j, c) in coef.iter().enumerate() {
                    for i in 0..len {
                        want[i] += c * rows[j * ld + i];
                    }
                }
                let mut out = vec![f64::NAN; len];
                combine_rows(&coef, &rows, ld, &mut out);
                assert_eq!(bits(&out), bits(&want), "len = {len}, rows = {nrows}");
            }
        }
    }

    #[test]
    fn exp_shifted_is_libm_exp() {
        for x in [
            0.0,
            -0.0,
            -1e-300,
            -0.5,
            -1.0,
            -30.0,
            -745.5,
            f64::NEG_INFINITY,
            2.0,
        ] {
            assert_eq!(exp_shifted(x).to_bits(), x.exp().to_bits(), "x = {x}");
        }
        assert!(exp_shifted(f64::NAN).is_nan());
    }

    /// e^(s_i) / Σ_j e^(s_j) without the shift (fine for |s| ≤ 30).
    fn naive_softmax(s: &[f64]) -> Vec<f64> {
        let z: f64 = s.iter().map(|v| v.exp()).sum();
        s.iter().map(|v| v.exp() / z).collect()
    }

    #[test]
    fn both_softmaxes_match_the_naive_formula_and_each_other() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for n in 1..30 {
            let s = random(&mut rng, n, 30.0);
            let naive = naive_softmax(&s);
            let mut div = s.clone();
            softmax_div(&mut div);
            let mut recip = s.clone();
            softmax_recip(&mut recip);
            let mut into = vec![f64::NAN; n];
            softmax_div_into(&s, &mut into);
            assert_eq!(bits(&into), bits(&div), "n = {n}");
            let sum: f64 = div.iter().sum();
            assert!(
                (sum - 1.0).abs() <= 4.0 * n as f64 * f64::EPSILON,
                "n = {n}: Σ = {sum}"
            );
            for i in 0..n {
                let tol = 1e-13 * naive[i] + 1e-300;
                assert!((div[i] - naive[i]).abs() <= tol, "n = {n}, i = {i}");
                // x · (1/z) and x / z: one extra rounding apart
                assert!(ulps(div[i], recip[i]) <= 2, "n = {n}, i = {i}");
            }
        }
    }

    #[test]
    fn softmax_edges() {
        // the maximum gets e^0 = 1 exactly; equal scores are uniform; −∞ gets weight 0
        let mut s = [3.0, 3.0, f64::NEG_INFINITY, 3.0];
        softmax_recip(&mut s);
        assert_eq!(s, [1.0 / 3.0, 1.0 / 3.0, 0.0, 1.0 / 3.0]);
        let mut s = [3.0, 3.0, f64::NEG_INFINITY, 3.0];
        softmax_div(&mut s);
        assert_eq!(s, [1.0 / 3.0, 1.0 / 3.0, 0.0, 1.0 / 3.0]);
        let mut one = [-7.5];
        softmax_div(&mut one);
        assert_eq!(one, [1.0]);
        let mut empty: [f64; 0] = [];
        softmax_div(&mut empty);
        softmax_recip(&mut empty);
    }
}
