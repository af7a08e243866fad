//! The 19-dimensional invariant subspace of Theorem 1 (docs/theory/musat.md §5) [reconstruction]:
//! its basis B_k, the projection of full weights onto the coordinates θ_k, the structured
//! weights W(θ) = Σ θ_k B_k and the off-subspace residual.
//!
//! Each B_k is zero except for one D × D block equal to I or M; ‖B_k‖²_F = D and the B_k are
//! mutually orthogonal (tr M = 0), so
//! ```text
//! θ_k = ⟨W, B_k⟩_F / D,    ∂L/∂θ_k = ⟨∇_W L, B_k⟩_F,
//! residual = ‖W − Σ θ_k B_k‖_F / ‖W‖_F   (0 when W = 0).
//! ```
//! Index order (fixed everywhere): α₁..α₃, β₁..β₁₂, γ₁..γ₄.
//!
//! M is J = [[0, −I], [I, 0]] (the default) or the swap involution S = [[0, I], [I, 0]]
//! ([`MMatrix`], docs/theory/musat.md §3 "M" [reconstruction]). Both are signed permutations with
//! one nonzero per row, off the diagonal blocks, so both have ‖M‖²_F = D and tr M = 0. The
//! functions without a `_with` suffix use M = J.

use crate::systems::musat::disentangled::Params;

pub use crate::systems::musat::data::MMatrix;

/// The 19 coordinate names, in θ order.
pub const NAMES19: [&str; 19] = [
    "alpha1", "alpha2", "alpha3", "beta1", "beta2", "beta3", "beta4", "beta5", "beta6", "beta7",
    "beta8", "beta9", "beta10", "beta11", "beta12", "gamma1", "gamma2", "gamma3", "gamma4",
];

/// Index of α₃, β₂, γ₃ in θ.
pub const ALPHA3: usize = 2;
pub const BETA2: usize = 4;
pub const GAMMA3: usize = 17;

/// Which weight matrix a basis element lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matrix {
    W1,
    W2,
    W3,
}

/// The D × D block pattern: identity or M ([`MMatrix`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    I,
    M,
}

/// One basis element: `pattern` in block (row slot, column slot) of `matrix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BasisElement {
    pub matrix: Matrix,
    pub row_slot: usize,
    pub col_slot: usize,
    pub pattern: Pattern,
}

const fn el(matrix: Matrix, row_slot: usize, col_slot: usize, pattern: Pattern) -> BasisElement {
    BasisElement {
        matrix,
        row_slot,
        col_slot,
        pattern,
    }
}

/// The basis in θ order. Slots: W¹ [c, r]; W² [c, r, u¹c, u¹r]; W³ columns are the 8 slots of
/// h² [c, r, u¹c, u¹r, u²c, u²r, u²u¹c, u²u¹r] (docs/theory/musat.md §5).
pub const BASIS: [BasisElement; 19] = {
    use Matrix::*;
    use Pattern::*;
    [
        el(W1, 0, 0, I), // alpha1
        el(W1, 1, 1, I), // alpha2
        el(W1, 1, 1, M), // alpha3
        el(W2, 0, 0, I), // beta1
        el(W2, 0, 2, I), // beta2: x_qᵀ β₂ u¹_c(j)
        el(W2, 2, 0, I), // beta3
        el(W2, 2, 2, I), // beta4
        el(W2, 1, 1, I), // beta5
        el(W2, 1, 1, M), // beta6
        el(W2, 1, 3, I), // beta7
        el(W2, 1, 3, M), // beta8
        el(W2, 3, 1, I), // beta9
        el(W2, 3, 1, M), // beta10
        el(W2, 3, 3, I), // beta11
        el(W2, 3, 3, M), // beta12
        el(W3, 0, 0, I), // gamma1: reads c
        el(W3, 0, 2, I), // gamma2: reads u¹c
        el(W3, 0, 4, I), // gamma3: reads u²c
        el(W3, 0, 6, I), // gamma4: reads u²u¹c
    ]
};

impl BasisElement {
    /// The weight matrix this element lives in, and its row length (number of columns).
    fn locate<'a>(&self, p: &'a Params) -> (&'a [f64], usize) {
        let d = p.d;
        match self.matrix {
            Matrix::W1 => (&p.w1, 2 * d),
            Matrix::W2 => (&p.w2, 4 * d),
            Matrix::W3 => (&p.w3, 8 * d),
        }
    }

    /// ⟨W, B_k⟩_F for the matrix `w` (row length `ld`).
    fn inner(&self, w: &[f64], ld: usize, d: usize, m: MMatrix) -> f64 {
        let (r0, c0) = (self.row_slot * d, self.col_slot * d);
        (0..d)
            .map(|i| match self.pattern {
                Pattern::I => w[(r0 + i) * ld + c0 + i],
                Pattern::M => m.val(i, d) * w[(r0 + i) * ld + c0 + m.col(i, d)],
            })
            .sum()
    }

    /// w ← w + a B_k.
    fn add_to(&self, w: &mut [f64], ld: usize, d: usize, a: f64, m: MMatrix) {
        let (r0, c0) = (self.row_slot * d, self.col_slot * d);
        for i in 0..d {
            match self.pattern {
                Pattern::I => w[(r0 + i) * ld + c0 + i] += a,
                Pattern::M => w[(r0 + i) * ld + c0 + m.col(i, d)] += a * m.val(i, d),
            }
        }
    }
}

/// ⟨W, B_k⟩_F for every k (the chain rule ∂L/∂θ_k = ⟨∇_W L, B_k⟩_F when W is a gradient),
/// M = J.
pub fn inner_products(p: &Params) -> [f64; 19] {
    inner_products_with(p, MMatrix::J)
}

/// [`inner_products`] with the basis of M = `m`.
pub fn inner_products_with(p: &Params, m: MMatrix) -> [f64; 19] {
    let mut out = [0.0; 19];
    for (o, b) in out.iter_mut().zip(&BASIS) {
        let (w, ld) = b.locate(p);
        *o = b.inner(w, ld, p.d, m);
    }
    out
}

/// The coordinates θ_k = ⟨W, B_k⟩_F / D of the orthogonal projection onto the subspace, M = J.
pub fn project(p: &Params) -> [f64; 19] {
    project_with(p, MMatrix::J)
}

/// [`project`] onto the subspace of M = `m`.
pub fn project_with(p: &Params, m: MMatrix) -> [f64; 19] {
    let mut th = inner_products_with(p, m);
    for v in &mut th {
        *v /= p.d as f64;
    }
    th
}

/// The structured weights W(θ) = Σ θ_k B_k in dimension D (D even), M = J.
pub fn structured(theta: &[f64], d: usize) -> Params {
    structured_with(theta, d, MMatrix::J)
}

/// [`structured`] with the basis of M = `m`.
pub fn structured_with(theta: &[f64], d: usize, m: MMatrix) -> Params {
    assert_eq!(theta.len(), 19);
    assert!(
        d >= 2 && d.is_multiple_of(2),
        "M = {} needs an even D, got {d}",
        m.name()
    );
    let mut p = Params::zeros(d);
    for (b, &th) in BASIS.iter().zip(theta) {
        let (w, ld) = match b.matrix {
            Matrix::W1 => (&mut p.w1, 2 * d),
            Matrix::W2 => (&mut p.w2, 4 * d),
            Matrix::W3 => (&mut p.w3, 8 * d),
        };
        b.add_to(w, ld, d, th, m);
    }
    p
}

/// Off-subspace residuals ‖W − Proj W‖_F / ‖W‖_F per matrix and jointly (0 for a zero matrix).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Residuals {
    pub w1: f64,
    pub w2: f64,
    pub w3: f64,
    pub overall: f64,
}

/// The residuals of `p` with respect to its projection `theta` (= [`project`]`(p)`), M = J.
pub fn residuals(p: &Params, theta: &[f64; 19]) -> Residuals {
    residuals_with(p, theta, MMatrix::J)
}

/// [`residuals`] for the subspace of M = `m` (`theta` = [`project_with`]`(p, m)`).
pub fn residuals_with(p: &Params, theta: &[f64; 19], m: MMatrix) -> Residuals {
    let s = structured_with(theta, p.d, m);
    let mut off = [0.0; 3];
    let mut norm = [0.0; 3];
    for (k, (w, ws)) in p.blocks().iter().zip(s.blocks()).enumerate() {
        for (a, b) in w.iter().zip(ws) {
            off[k] += (a - b) * (a - b);
            norm[k] += a * a;
        }
    }
    let ratio = |o: f64, n: f64| if n > 0.0 { (o / n).sqrt() } else { 0.0 };
    Residuals {
        w1: ratio(off[0], norm[0]),
        w2: ratio(off[1], norm[1]),
        w3: ratio(off[2], norm[2]),
        overall: ratio(off.iter().sum(), norm.iter().sum()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn projecting_structured_weights_returns_the_coordinates() {
        for (m, seed, reps) in [(MMatrix::J, 4, 1), (MMatrix::Swap, 41, 3)] {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for &d in &[2usize, 6, 12, 34] {
                for _ in 0..reps {
                    let theta: Vec<f64> = (0..19).map(|_| rng.random_range(-3.0..3.0)).collect();
                    let p = structured_with(&theta, d, m);
                    let back = project_with(&p, m);
                    for k in 0..19 {
                        assert!(
                            (back[k] - theta[k]).abs() < 1e-12,
                            "{m:?} D={d} {}: {} vs {}",
                            NAMES19[k],
                            back[k],
                            theta[k]
                        );
                    }
                    let r = residuals_with(&p, &back, m);
                    assert!(
                        r.overall < 1e-14 && r.w1 < 1e-14 && r.w2 < 1e-14 && r.w3 < 1e-14,
                        "{m:?} D={d}"
                    );
                    // 4D² + 16D² + 8D² = 28D² parameters
                    assert_eq!(p.len(), 28 * d * d, "{m:?}");
                    if m == MMatrix::Swap {
                        // S ⟂ J (tr(Jᵀ S) = 0): the J basis sees none of the five M
                        // coordinates (α₃, β₆, β₈, β₁₀, β₁₂), and the J residual is their share
                        // of ‖W‖.
                        let back_j = project(&p);
                        let m_coords: Vec<usize> = (0..19)
                            .filter(|&k| BASIS[k].pattern == Pattern::M)
                            .collect();
                        assert_eq!(m_coords, [ALPHA3, 8, 10, 12, 14]);
                        for k in 0..19 {
                            let want = if m_coords.contains(&k) { 0.0 } else { theta[k] };
                            assert!((back_j[k] - want).abs() < 1e-12, "D={d} J {}", NAMES19[k]);
                        }
                        let m2: f64 = m_coords.iter().map(|&k| theta[k] * theta[k]).sum();
                        let all2: f64 = theta.iter().map(|t| t * t).sum();
                        let rj = residuals(&p, &back_j).overall;
                        assert!((rj - (m2 / all2).sqrt()).abs() < 1e-12, "D={d}: {rj}");
                    }
                }
            }
        }
    }

    /// The 19 matrices B_k of M = `m` at dimension `d`, after checking ⟨B_a, B_b⟩ = d δ_ab.
    fn orthogonal_basis_with_norm_d(d: usize, m: MMatrix) -> Vec<Params> {
        let mats: Vec<Params> = (0..19)
            .map(|k| {
                let mut th = [0.0; 19];
                th[k] = 1.0;
                structured_with(&th, d, m)
            })
            .collect();
        for (a, pa) in mats.iter().enumerate() {
            for (b, pb) in mats.iter().enumerate() {
                let ip: f64 = pa
                    .blocks()
                    .iter()
                    .zip(pb.blocks())
                    .map(|(x, y)| x.iter().zip(y).map(|(u, v)| u * v).sum::<f64>())
                    .sum();
                let want = if a == b { d as f64 } else { 0.0 };
                assert_eq!(ip, want, "{m:?} ⟨B_{a}, B_{b}⟩");
            }
        }
        mats
    }

    #[test]
    fn basis_is_orthogonal_with_norm_d_and_m_is_j() {
        let d = 8;
        let mats = orthogonal_basis_with_norm_d(d, MMatrix::J);
        // α₃'s block is J: J e_1 = e_{D/2+1}, J² = −I.
        let w = &mats[ALPHA3].w1;
        let e = 2 * d;
        let jm = |i: usize, j: usize| w[(d + i) * e + d + j];
        assert_eq!(jm(d / 2, 0), 1.0);
        for i in 0..d {
            for k in 0..d {
                let sq: f64 = (0..d).map(|j| jm(i, j) * jm(j, k)).sum();
                assert_eq!(sq, if i == k { -1.0 } else { 0.0 });
            }
        }
    }

    #[test]
    fn swap_basis_is_orthogonal_with_norm_d_and_m_is_s() {
        let d = 8;
        let h = d / 2;
        let mats = orthogonal_basis_with_norm_d(d, MMatrix::Swap);
        // α₃'s block is S = [[0, I], [I, 0]]: S e_i = e_{D/2+i}, S e_{D/2+i} = e_i, S² = I.
        let w = &mats[ALPHA3].w1;
        let e = 2 * d;
        let sm = |i: usize, j: usize| w[(d + i) * e + d + j];
        for i in 0..d {
            for j in 0..d {
                let want = if j == (i + h) % d { 1.0 } else { 0.0 };
                assert_eq!(sm(i, j), want, "S[{i}][{j}]");
                let sq: f64 = (0..d).map(|k| sm(i, k) * sm(k, j)).sum();
                assert_eq!(sq, if i == j { 1.0 } else { 0.0 });
            }
        }
        // `apply` is the same matrix, for both M
        let p: Vec<f64> = (0..d).map(|i| i as f64 + 1.0).collect();
        let mut out = vec![0.0; d];
        MMatrix::Swap.apply(&p, &mut out);
        assert_eq!(out, [5.0, 6.0, 7.0, 8.0, 1.0, 2.0, 3.0, 4.0]);
        MMatrix::J.apply(&p, &mut out);
        assert_eq!(out, [-5.0, -6.0, -7.0, -8.0, 1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn residual_of_an_orthogonal_perturbation_is_its_relative_size() {
        let d = 4;
        let mut th = [0.0; 19];
        th[BETA2] = 2.0;
        let mut p = structured(&th, d);
        // an off-subspace entry (content row, position column of W¹)
        p.w1[1] = 3.0;
        let proj = project(&p);
        assert!((proj[BETA2] - 2.0).abs() < 1e-15);
        let r = residuals(&p, &proj);
        let norm = (4.0 * d as f64 + 9.0f64).sqrt();
        assert!((r.overall - 3.0 / norm).abs() < 1e-15);
        assert_eq!(r.w1, 1.0);
        assert_eq!(r.w2, 0.0);
    }
}
