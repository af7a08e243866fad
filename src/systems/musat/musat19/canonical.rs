//! The specialised pass for the canonical configuration of query `last`, label cue `rotated`
//! and the fresh query position (the compare scenarios' system): the same loss and gradient as
//! the generic pass, in O(N) straight-line loops over the pairs with no Gram matrices.
//!
//! ## The configuration
//!
//! Pairs p = 0..N−1 (0-based; L = N − 1 is the queried one), x_p at token 2p, y_p at 2p + 1,
//! the query Q = 2N with the content of x_L and the position p_{N+1} (`canonical_configuration`
//! with q = N). With D = 2N + 2, H = N + 1: c(x_p) = e_p, c(y_p) = e_{N+p}, r(x_p) = e_p,
//! r(y_p) = e_{H+p}, r(Q) = e_N. Hence
//! - C and P among the 2N tokens before the query are the identity, C_{Q,x_L} = 1 is the only
//!   content entry of row Q and P_{Q,j} = 0 for every j < Q;
//! - PJ_kj = r_kᵀ J r_j (J_{i,i+H} = −1, J_{i+H,i} = +1): PJ(y_p, x_p) = +1, PJ(x_p, y_p) = −1,
//!   and 0 otherwise, in particular everywhere in row and column Q (J r(Q) = e_{2N+1}, which
//!   is nobody's position);
//!
//! (checked against the generic `Configuration` in `canonical_tests.rs`). So in layer 1 (j < k):
//! row x_p is uniform over its 2p keys (1/(2p) each; row x_0 is empty), row y_p has 2p keys of
//! score 0 (weight `base_p`) and x_p with score α₃ (`sp_p`), and row Q has 2N − 1 keys of score
//! 0 (weight b_Q) and x_L with score α₁ (a_Q,x_L). With (a_Q PJ)_{x_p} = a_Q,y_p and
//! (a_Q PJ)_{y_p} = −a_Q,x_p:
//! ```text
//! z_{x_p} = β₁ δ_{pL} + (β₃+β₉) a_Q,x_p + β₁₀ a_Q,y_p,   z_{y_p} = (β₃+β₉) a_Q,y_p − β₁₀ a_Q,x_p
//! ```
//! and y the same with (β₂, β₄+β₁₁, β₁₂); β₅..β₈ and α₂ have zero partials. z and y take one
//! value on the x and one on the y tokens of the pairs p < L, and ⟨a_{x_p}, y⟩, ⟨a_{y_p}, y⟩
//! are a prefix sum over the pairs r < p; Σ_j A²_j a_j and Σ_j ds²_j a_j are suffix sums over
//! the pairs r > p plus the special key. ŷ = Σ_i w_i c_i has the coordinates w_{x_p} (+ γ₁ for
//! p = L, the query's content) and w_{y_p}, the target is the content of y_L, so the residual
//! is formed coordinate by coordinate.
//!
//! Four passes over the pairs (scores; residuals and ∂L/∂w from the last pair; the softmax
//! backward from the first; Y and the layer-1 backward from the last), with the queried pair
//! peeled off and the sums over the regular pairs collapsed where a_Q is constant. Two
//! exponentials for layer 1 (one per special score: the other term of each max-shifted
//! softmax is e⁰ = 1) and at most N + 3 for layer 2: one per y_p, and one per class of x
//! tokens (x_0; x_1..x_{L−1}, whose scores are equal; x_L). Over the regular pairs s²_{y_p} is
//! a monotone function of p, so the max shift is the largest of a few scores known after the
//! first pass. Per-pair values live in a stack array for N ≤ 8 (the loops unroll) and in a
//! per-thread scratch vector above (no allocation after the first call of a size). Plain scalar code, compiled once more for AVX2 (without FMA, so the
//! same arithmetic and bits) and chosen at run time like the generic pass; no threads: the
//! same bytes on every call.

use crate::numerics::kernels::exp_shifted;
use crate::numerics::simd::{self, Kernel};
use std::cell::RefCell;

thread_local! {
    /// The per-pair values, grown on first use (no allocation in `grad` afterwards).
    static PAIRS: RefCell<Vec<Pair>> = const { RefCell::new(Vec::new()) };
}

/// Per-pair values of pair p (every field is written before it is read in a pass, so stale
/// scratch contents never enter).
#[derive(Debug, Clone, Copy, Default)]
struct Pair {
    /// Row x_p of A¹: the weight of each of its 2p keys, 1/(2p) (0 for p = 0).
    inv: f64,
    /// Row y_p of A¹: the weight of each key of score 0 and of x_p (score α₃).
    base: f64,
    sp: f64,
    /// ⟨a_{y_p}, y⟩.
    ayy: f64,
    /// A² of x_p and y_p (y_p: first unnormalised).
    ax: f64,
    ay: f64,
    /// ∂L/∂w at x_p and y_p.
    gx: f64,
    gy: f64,
    /// h_{y_p} = ⟨a_{y_p}, ∂L/∂w⟩.
    hy: f64,
    /// ∂L/∂s² at x_p and y_p.
    dx: f64,
    dy: f64,
}

/// Loss of the canonical last/rotated/fresh configuration for N = n ≥ 1 pairs (scaled by
/// `scale`), and its gradient written into `grad` (all 19 entries) when given.
///
/// Up to [`FIXED_MAX`] pairs the per-pair values live in an array on the stack whose length is
/// known at compile time, so the loops over the pairs unroll and their values stay in
/// registers (the compare scenarios' N = 4: 8% of a whole solve); larger N use the per-thread
/// scratch. Both run the same operations in the same order: the same bits (tested).
pub(super) fn evaluate(n: usize, th: &[f64], scale: f64, grad: Option<&mut [f64]>) -> f64 {
    assert!(n >= 1 && th.len() == 19);
    match n {
        1 => fixed::<1>(th, scale, grad),
        2 => fixed::<2>(th, scale, grad),
        3 => fixed::<3>(th, scale, grad),
        4 => fixed::<4>(th, scale, grad),
        5 => fixed::<5>(th, scale, grad),
        6 => fixed::<6>(th, scale, grad),
        7 => fixed::<7>(th, scale, grad),
        8 => fixed::<8>(th, scale, grad),
        _ => {
            debug_assert!(n > FIXED_MAX);
            scratch(n, th, scale, grad)
        }
    }
}

/// The largest N evaluated on a stack array of pairs.
pub(super) const FIXED_MAX: usize = 8;

/// [`evaluate`] for N pairs in a stack array, compiled for AVX2 when the CPU has it
/// ([`simd::dispatch`]: no FMA, the same arithmetic as the plain build, fewer register
/// copies).
#[inline(always)]
fn fixed<const N: usize>(th: &[f64], scale: f64, grad: Option<&mut [f64]>) -> f64 {
    simd::dispatch(Fixed::<N>, (th, scale, grad))
}

/// [`pass`] on a fresh stack array of N pairs, as a [`Kernel`] for [`simd::dispatch`].
struct Fixed<const N: usize>;

impl<'a, const N: usize> Kernel<(&'a [f64], f64, Option<&'a mut [f64]>)> for Fixed<N> {
    type Output = f64;
    #[inline(always)]
    fn run(self, (th, scale, grad): (&'a [f64], f64, Option<&'a mut [f64]>)) -> f64 {
        pass(&mut [Pair::default(); N], th, scale, grad)
    }
}

/// [`pass`] as a [`Kernel`] for [`simd::dispatch`].
struct Pass;

impl<'a> Kernel<(&'a mut [Pair], &'a [f64], f64, Option<&'a mut [f64]>)> for Pass {
    type Output = f64;
    #[inline(always)]
    fn run(
        self,
        (pairs, th, scale, grad): (&'a mut [Pair], &'a [f64], f64, Option<&'a mut [f64]>),
    ) -> f64 {
        pass(pairs, th, scale, grad)
    }
}

/// [`evaluate`] for any N ≥ 1 in the per-thread scratch (the same dispatch as [`fixed`]).
pub(super) fn scratch(n: usize, th: &[f64], scale: f64, grad: Option<&mut [f64]>) -> f64 {
    assert!(n >= 1 && th.len() == 19);
    PAIRS.with(|cell| {
        let mut pairs = cell.borrow_mut();
        if pairs.len() < n {
            pairs.resize(n, Pair::default());
        }
        simd::dispatch(Pass, (&mut pairs[..n], th, scale, grad))
    })
}

/// e^{−|α|} and e^{α−max(α,0)}: the two terms of a max-shifted softmax with keys of score 0
/// and one key of score α (one of them is e⁰ = 1).
#[inline(always)]
fn shifted_pair(alpha: f64) -> (f64, f64) {
    if alpha > 0.0 {
        ((-alpha).exp(), 1.0)
    } else {
        (1.0, alpha.exp())
    }
}

/// The larger of two scores (one `maxsd`; a NaN score makes the loss NaN anyway).
#[inline(always)]
fn larger(a: f64, b: f64) -> f64 {
    if a > b { a } else { b }
}

/// The softmax backward of pair p given Σ_{r<p} ∂L/∂w_{x_r} + ∂L/∂w_{y_r}: h_{y_p} and
/// ds²_j = A²_j (γ₃ ∂L/∂w_j + γ₄ h_j − mean) for j = x_p, y_p.
#[inline(always)]
fn softmax_backward(e: &mut Pair, gsum: f64, g3: f64, g4: f64, mean: f64) {
    let hx = e.inv * gsum;
    e.hy = e.base * gsum + e.sp * e.gx;
    e.dx = e.ax * (g3 * e.gx + g4 * hx - mean);
    e.dy = e.ay * (g3 * e.gy + g4 * e.hy - mean);
}

#[inline(always)]
fn pass(pairs: &mut [Pair], th: &[f64], scale: f64, grad: Option<&mut [f64]>) -> f64 {
    let n = pairs.len();
    let l = n - 1; // the queried pair; pairs 0..l are the regular ones
    let (al1, al3) = (th[0], th[2]);
    let b = &th[3..15]; // b[0] = β₁, ..., b[11] = β₁₂
    let [g1, g2, g3, g4] = [th[15], th[16], th[17], th[18]];

    // ---- layer 1. Row Q: 2N − 1 keys of score 0 (weight bq), x_L of score α₁ (aqs).
    let (f0, f1) = shifted_pair(al1);
    let inv = 1.0 / ((2 * n - 1) as f64 * f0 + f1);
    let (bq, aqs) = (f0 * inv, f1 * inv);
    // Row y_p: 2p keys of score 0 and x_p of score α₃.
    let (e0, e3) = shifted_pair(al3);

    // ---- layer 2 (query row): z and y on the x and y tokens of a regular pair and of L.
    let (cz, dz, cy, dy) = (b[2] + b[8], b[9], b[3] + b[10], b[11]);
    let (zx, zy, yx, yy) = (
        (cz + dz) * bq,
        (cz - dz) * bq,
        (cy + dy) * bq,
        (cy - dy) * bq,
    );
    let (zxl, zyl, yxl) = (
        b[0] + cz * aqs + dz * bq,
        cz * bq - dz * aqs,
        b[1] + cy * aqs + dy * bq,
    );
    // Row y_p (p ≥ 1, pf = p) of A¹ and ⟨a_{y_p}, y⟩ when y_{x_p} = yxp: its other keys are the
    // tokens of the regular pairs r < p, whose y sum to p·(y_x + y_y). Returns
    // (1/(2p), base, sp, ⟨a_{y_p}, y⟩); row x_p weighs its 2p keys 1/(2p) each.
    let ysum = yx + yy;
    let row = |pf: f64, yxp: f64| -> [f64; 4] {
        let k = 2.0 * pf;
        let d = 1.0 / (k * e0 + e3);
        let (base, sp) = (e0 * d, e3 * d);
        [1.0 / k, base, sp, base * (pf * ysum) + sp * yxp]
    };
    // pass 1: the rows of A¹ and the scores s²_{y_p} = z_{y_p} + ⟨a_{y_p}, y⟩ (in `ay`).
    // Row y_0 has the one key x_0 (weight 1), row x_0 none.
    let set = |e: &mut Pair, r: [f64; 4], z: f64| {
        (e.inv, e.base, e.sp, e.ayy) = (r[0], r[1], r[2], r[3]);
        e.ay = z + r[3];
    };
    let mut pf = 1.0;
    if l >= 1 {
        set(&mut pairs[0], [0.0, 0.0, 1.0, yx], zy);
        for e in pairs[1..l].iter_mut() {
            set(e, row(pf, yx), zy);
            pf += 1.0;
        }
        set(&mut pairs[l], row(pf, yxl), zyl);
    } else {
        set(&mut pairs[0], [0.0, 0.0, 1.0, yxl], zyl);
    }
    // The x scores: x_0 (z only), x_1..x_{L−1} (one value: their keys are all the tokens of
    // regular pairs, ⟨a_{x_p}, y⟩ = (y_x + y_y)/2), x_L. The max shift: s²_{y_p} over the
    // regular p is zy + (e0 p (y_x + y_y) + e3 y_x)/(2p e0 + e3), monotone in p, so its maximum
    // is at p = 0 or p = L − 1.
    let half = 0.5 * ysum;
    let (sx0, sxm, sxl) = (if l == 0 { zxl } else { zx }, zx + half, zxl + half);
    let mut m = larger(sx0, pairs[l].ay);
    if l >= 1 {
        m = larger(m, larger(sxl, larger(pairs[0].ay, pairs[l - 1].ay)));
    }
    if l >= 2 {
        m = larger(m, sxm);
    }
    // the max-shifted exponentials (in a loop of their own: few values live across the calls)
    let mut total = 0.0;
    for e in pairs.iter_mut() {
        e.ay = exp_shifted(e.ay - m);
        total += e.ay;
    }
    let ex0 = exp_shifted(sx0 - m);
    total += ex0;
    let (mut exm, mut exl) = (0.0, 0.0);
    if l >= 1 {
        exl = exp_shifted(sxl - m);
        total += exl;
    }
    if l >= 2 {
        exm = exp_shifted(sxm - m);
        total += (l - 1) as f64 * exm;
    }
    let inv_total = 1.0 / total;
    let (ax0, axm, axl) = (ex0 * inv_total, exm * inv_total, exl * inv_total);

    // pass 2, from the last pair: w = γ₁ e_Q + γ₂ a_Q + γ₃ A² + γ₄ V with V = Σ_j A²_j a_j
    // (V_{y_p} = u_p = Σ_{r>p} A²_{x_r}/(2r) + A²_{y_r} base_r, V_{x_p} = u_p + A²_{y_p} sp_p),
    // the residual ŷ − y_L per coordinate (x_L's also carries the query's w_Q = γ₁, y_L's the
    // target), ∂L/∂w and ∂L/∂γ₃, ∂L/∂γ₄.
    let two_s = 2.0 * scale;
    let e = &mut pairs[l];
    e.ax = if l == 0 { ax0 } else { axl };
    e.ay *= inv_total;
    let vx = e.ay * e.sp; // u_L = 0
    let rx = g2 * aqs + g3 * e.ax + g4 * vx + g1;
    let ry = g2 * bq + g3 * e.ay - 1.0;
    let mut loss = rx * rx + ry * ry;
    let mut u = e.ax * e.inv + e.ay * e.base;
    (e.gx, e.gy) = (two_s * rx, two_s * ry);
    let (gx_l, gy_l) = (e.gx, e.gy);
    let mut g17 = e.gx * e.ax + e.gy * e.ay;
    let mut g18 = e.gx * vx;
    let g2bq = g2 * bq;
    for (p, e) in pairs[..l].iter_mut().enumerate().rev() {
        e.ax = if p == 0 { ax0 } else { axm };
        e.ay *= inv_total;
        let (vx, vy) = (u + e.ay * e.sp, u);
        let rx = g2bq + g3 * e.ax + g4 * vx;
        let ry = g2bq + g3 * e.ay + g4 * vy;
        loss += rx * rx + ry * ry;
        u += e.ax * e.inv + e.ay * e.base;
        (e.gx, e.gy) = (two_s * rx, two_s * ry);
        g17 += e.gx * e.ax + e.gy * e.ay;
        g18 += e.gx * vx + e.gy * vy;
    }
    let loss = scale * loss;
    let Some(grad) = grad else {
        return loss;
    };

    // pass 3: h_j = ⟨a_j, ∂L/∂w⟩ (a prefix sum) and the softmax backward,
    // mean = γ₃ ∂L/∂γ₃ + γ₄ ∂L/∂γ₄.
    let mean = g3 * g17 + g4 * g18;
    let mut gsum = 0.0; // Σ_{r<p} ∂L/∂w_{x_r} + ∂L/∂w_{y_r}
    for e in pairs[..l].iter_mut() {
        softmax_backward(e, gsum, g3, g4, mean);
        gsum += e.gx + e.gy;
    }
    softmax_backward(&mut pairs[l], gsum, g3, g4, mean);
    // ∂L/∂γ₂ = ⟨∂L/∂w, a_Q⟩ (a_Q = bq but on x_L)
    let g16 = bq * (gsum + gy_l) + aqs * gx_l;

    // pass 4, from the last pair: ∂L/∂y = Y = Σ_j ds²_j a_j (a suffix sum like V), the
    // layer-1 backward of rows y_p (α₃: G = γ₄ A²_{y_p} ∂L/∂w + ds²_{y_p} y, special key x_p
    // with PJ = 1, ds¹ = sp_p (G_{x_p} − ⟨a_{y_p}, G⟩)), and the sums over the regular pairs
    // of ds² and Y on their x and y tokens (a_Q = bq there).
    let e = &pairs[l];
    let (dx_l, dy_l, big_yx_l) = (e.dx, e.dy, e.dy * e.sp); // Y_{y_L} = 0
    let mut ud = e.dx * e.inv + e.dy * e.base;
    let mut ga3 = e.sp * (g4 * e.ay * (e.gx - e.hy) + e.dy * (yxl - e.ayy));
    let (mut sdx, mut sdy, mut syx, mut syy) = (0.0, 0.0, 0.0, 0.0);
    for e in pairs[..l].iter().rev() {
        syy += ud;
        syx += ud + e.dy * e.sp;
        sdx += e.dx;
        sdy += e.dy;
        ud += e.dx * e.inv + e.dy * e.base;
        ga3 += e.sp * (g4 * e.ay * (e.gx - e.hy) + e.dy * (yx - e.ayy));
    }
    // ∂L/∂a_Q = γ₂ ∂L/∂w + (β₃ C + β₉ P + β₁₀ PJ) ds² + (β₄ C + β₁₁ P + β₁₂ PJ) Y at x_L and
    // y_L, and summed over the regular tokens; α₁: row Q's special key x_L (C = 1),
    // ds¹ = aqs (∂L/∂a_{Q,x_L} − ⟨a_Q, ∂L/∂a_Q⟩).
    let gq_xl = g2 * gx_l + cz * dx_l - dz * dy_l + cy * big_yx_l;
    let gq_yl = g2 * gy_l + cz * dy_l + dz * dx_l + dy * big_yx_l;
    let gq_reg = g2 * gsum + (cz + dz) * sdx + (cz - dz) * sdy + (cy + dy) * syx + (cy - dy) * syy;
    let mu = bq * (gq_reg + gq_yl) + aqs * gq_xl;
    // ⟨ds², a_Q C⟩ (= ⟨ds², a_Q P⟩), ⟨ds², a_Q PJ⟩, and the same for Y
    let s_daq = bq * (sdx + sdy + dy_l) + aqs * dx_l;
    let s_dpj = bq * (sdx - sdy + dx_l) - aqs * dy_l;
    let s_yaq = bq * (syx + syy) + aqs * big_yx_l;
    let s_ypj = bq * (syx - syy + big_yx_l);
    grad[..19].copy_from_slice(&[
        aqs * (gq_xl - mu), // α₁
        0.0,                // α₂: no layer-1 key has P ≠ 0
        ga3,                // α₃
        dx_l,               // β₁: C_Q = e_{x_L}
        big_yx_l,           // β₂
        s_daq,              // β₃
        s_yaq,              // β₄
        0.0,                // β₅..β₈: P_Q = PJ_Q = 0 on the keys
        0.0,
        0.0,
        0.0,
        s_daq, // β₉
        s_dpj, // β₁₀
        s_yaq, // β₁₁
        s_ypj, // β₁₂
        gx_l,  // γ₁: ∂L/∂w_Q = ∂L/∂w_{x_L} (the same content)
        g16,
        g17,
        g18,
    ]);
    grad[19..].fill(0.0); // a longer buffer: the rest zeroed, as by the generic pass
    loss
}
