//! The forward and backward pass of the standard model over one chunk of sequences, in merged
//! coordinates (G¹, F¹, G², F², see the parent module). With R = m·T rows of the chunk:
//!
//! ```text
//! X   = T[v] + P[k]                          (R × D)
//! Q̃¹  = X G¹;   s¹_kj = c q̃¹_k·x_j (c = 1/√d_head);   A¹ = softmax;   Ū¹ = A¹ X
//! H¹  = X + Ū¹ F¹ᵀ
//! q̃²  = h¹_r G² (query row r = T − 1);   s²_j = c q̃²·h¹_j;   ū² = Σ_j A²_j h¹_j
//! h²  = h¹_r + F² ū²;   z = W_o h²
//! ```
//! and back: dW_o = dZᵀ H², dH² = dZ W_o, dF² = dH²ᵀ Ū², dŪ² = dH² F², the layer-2 softmax per
//! sequence (dh¹_j += A²_j dū² + ds²_j q̃², dq̃² = Σ ds²_j h¹_j), dG² = H¹_rᵀ dQ̃²,
//! dH¹_r += dH² + dQ̃² G²ᵀ; dF¹ = dH¹ᵀ Ū¹, dŪ¹ = dH¹ F¹, the layer-1 softmax (per sequence
//! dX_b += A¹_bᵀ dŪ¹_b + dS¹_bᵀ Q̃¹_b, Wm_k = Σ_j ds¹_kj x_j), dG¹ = Xᵀ Wm, dX += Wm G¹ᵀ + dH¹,
//! then dX scattered into the rows of T (and of P when it is learned). Here ds = ∂L/∂(q̃·x),
//! the scale c included.

use super::{Block, Config, Loss, Merged, MergedGrad, Params};
use crate::numerics::gemm::{View, gemm};
use crate::numerics::kernels::{combine_rows, dot4_rows, softmax_recip};
use crate::numerics::simd::{self, Kernel};
use crate::systems::musat::disentangled::Mask;

/// Scratch of one chunk (at most `m` sequences); allocated once.
#[derive(Debug, Clone)]
pub(super) struct Workspace {
    x: Vec<f64>,
    q1: Vec<f64>,
    a1: Vec<f64>,
    u1: Vec<f64>,
    h1: Vec<f64>,
    q2: Vec<f64>,
    a2: Vec<f64>,
    u2: Vec<f64>,
    h2: Vec<f64>,
    z: Vec<f64>,
    dz: Vec<f64>,
    dh2: Vec<f64>,
    du2: Vec<f64>,
    dq2: Vec<f64>,
    dh1: Vec<f64>,
    du1: Vec<f64>,
    ds1: Vec<f64>,
    wm: Vec<f64>,
    dx: Vec<f64>,
    row: Vec<f64>,
}

impl Workspace {
    pub(super) fn new(dims: &super::Dims, m: usize) -> Self {
        let (t, d, v) = (dims.t(), dims.d, dims.vocab);
        let r = m * t;
        Workspace {
            x: vec![0.0; r * d],
            q1: vec![0.0; r * d],
            a1: vec![0.0; r * t],
            u1: vec![0.0; r * d],
            h1: vec![0.0; r * d],
            q2: vec![0.0; m * d],
            a2: vec![0.0; m * t],
            u2: vec![0.0; m * d],
            h2: vec![0.0; m * d],
            z: vec![0.0; m * v],
            dz: vec![0.0; m * v],
            dh2: vec![0.0; m * d],
            du2: vec![0.0; m * d],
            dq2: vec![0.0; m * d],
            dh1: vec![0.0; r * d],
            du1: vec![0.0; r * d],
            ds1: vec![0.0; r * t],
            wm: vec![0.0; r * d],
            dx: vec![0.0; r * d],
            row: vec![0.0; t],
        }
    }
}

/// The arguments of [`chunk_pass_body`].
type PassArgs<'a> = (
    &'a Config,
    &'a Params,
    &'a Merged,
    &'a [u32],
    &'a [u32],
    usize,
    f64,
    &'a mut Workspace,
    &'a mut MergedGrad,
    bool,
);

struct ChunkPass;

impl<'a> Kernel<PassArgs<'a>> for ChunkPass {
    type Output = f64;
    #[inline(always)]
    fn run(self, a: PassArgs<'a>) -> f64 {
        chunk_pass_body(a.0, a.1, a.2, a.3, a.4, a.5, a.6, a.7, a.8, a.9)
    }
}

/// [`chunk_pass_body`], compiled for AVX2 when the CPU has it ([`simd::dispatch`]; the same
/// bits either way).
#[allow(clippy::too_many_arguments)]
pub(super) fn chunk_pass(
    cfg: &Config,
    params: &Params,
    merged: &Merged,
    tokens: &[u32],
    targets: &[u32],
    m: usize,
    coef: f64,
    ws: &mut Workspace,
    grad: &mut MergedGrad,
    want_grad: bool,
) -> f64 {
    simd::dispatch(
        ChunkPass,
        (
            cfg, params, merged, tokens, targets, m, coef, ws, grad, want_grad,
        ),
    )
}

/// Softmax attention of query `q` over the `keys` rows of `h` (stride `d`): the weights into
/// `a` (scores scaled by `c`), their average of the rows into `u`.
#[inline(always)]
fn attend(q: &[f64], h: &[f64], d: usize, c: f64, a: &mut [f64], u: &mut [f64]) {
    dot4_rows(q, h, d, d, a);
    for v in a.iter_mut() {
        *v *= c;
    }
    softmax_recip(a);
    combine_rows(a, h, d, u);
}

/// ds_j = c · A_j (dA_j − Σ_i A_i dA_i) in place of dA in `ds`.
#[inline(always)]
fn softmax_backward(a: &[f64], ds: &mut [f64], c: f64) {
    let mut mean = 0.0;
    for (x, y) in a.iter().zip(ds.iter()) {
        mean += x * y;
    }
    for (y, x) in ds.iter_mut().zip(a) {
        *y = c * x * (*y - mean);
    }
}

/// Forward and backward pass over one chunk of m sequences. Returns the chunk's sum of the
/// per-sequence losses ℓ(z_b, y_b); with `want_grad` writes the gradient of
/// coef/κ · Σ_b ℓ_b (κ = 2 for MSE, 1 for CE: dL/dz = coef (z − e_y) or coef (softmax(z) − e_y))
/// into `grad` (merged coordinates).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn chunk_pass_body(
    cfg: &Config,
    params: &Params,
    merged: &Merged,
    tokens: &[u32],
    targets: &[u32],
    m: usize,
    coef: f64,
    ws: &mut Workspace,
    grad: &mut MergedGrad,
    want_grad: bool,
) -> f64 {
    let dims = cfg.dims;
    let (t, d, nv) = (dims.t(), dims.d, dims.vocab);
    let rows = m * t;
    let r = t - 1; // the query row
    let inc = usize::from(cfg.mask == Mask::Inclusive);
    let c = 1.0 / (dims.d_head as f64).sqrt();
    let Workspace {
        x,
        q1,
        a1,
        u1,
        h1,
        q2,
        a2,
        u2,
        h2,
        z,
        dz,
        dh2,
        du2,
        dq2,
        dh1,
        du1,
        ds1,
        wm,
        dx,
        row,
    } = ws;
    let (tok, pos, unemb) = (
        params.block(Block::Tok),
        params.block(Block::Pos),
        params.block(Block::Unemb),
    );
    let dd = View::dense(d, d);
    let rd = View::dense(rows, d);
    let md = View::dense(m, d);
    let query_rows = View::rows(m, d, r * d, t * d);

    // ---- embeddings: x_k = t_{v_k} + p_k
    for (i, &v) in tokens[..rows].iter().enumerate() {
        let k = i % t;
        let (tv, pk) = (
            &tok[v as usize * d..(v as usize + 1) * d],
            &pos[k * d..(k + 1) * d],
        );
        for ((o, a), b) in x[i * d..(i + 1) * d].iter_mut().zip(tv).zip(pk) {
            *o = a + b;
        }
    }

    // ---- layer 1, every row: Q̃¹ = X G¹, A¹, Ū¹ = A¹ X, H¹ = X + Ū¹ F¹ᵀ
    gemm(1.0, x, rd, &merged.g1, dd, 0.0, q1, rd);
    for b in 0..m {
        let xb = &x[b * t * d..(b + 1) * t * d];
        for k in 0..t {
            let i = b * t + k;
            let keys = k + inc;
            let ak = &mut a1[i * t..(i + 1) * t];
            ak[keys..].fill(0.0);
            let uk = &mut u1[i * d..(i + 1) * d];
            if keys == 0 {
                uk.fill(0.0); // strict mask: the first token has no key
                continue;
            }
            attend(&q1[i * d..(i + 1) * d], xb, d, c, &mut ak[..keys], uk);
        }
    }
    h1.copy_from_slice(x);
    gemm(1.0, u1, rd, &merged.f1, dd.t(), 1.0, h1, rd);

    // ---- layer 2, the query row: q̃² = h¹_r G², A², ū², h² = h¹_r + F² ū²
    gemm(1.0, h1, query_rows, &merged.g2, dd, 0.0, q2, md);
    let keys2 = r + inc;
    for b in 0..m {
        let h1b = &h1[b * t * d..(b + 1) * t * d];
        attend(
            &q2[b * d..(b + 1) * d],
            h1b,
            d,
            c,
            &mut a2[b * t..b * t + keys2],
            &mut u2[b * d..(b + 1) * d],
        );
        h2[b * d..(b + 1) * d].copy_from_slice(&h1b[r * d..(r + 1) * d]);
    }
    gemm(1.0, u2, md, &merged.f2, dd.t(), 1.0, h2, md);

    // ---- logits z = W_o h², the loss and dL/dz
    gemm(
        1.0,
        h2,
        md,
        unemb,
        View::dense(nv, d).t(),
        0.0,
        z,
        View::dense(m, nv),
    );
    let mut total = 0.0;
    for b in 0..m {
        let y = targets[b] as usize;
        let zb = &z[b * nv..(b + 1) * nv];
        let gb = &mut dz[b * nv..(b + 1) * nv];
        match cfg.loss {
            Loss::Mse => {
                for (v, (g, &zv)) in gb.iter_mut().zip(zb).enumerate() {
                    let e = zv - if v == y { 1.0 } else { 0.0 };
                    total += e * e;
                    *g = coef * e;
                }
            }
            Loss::Ce => {
                let mx = zb.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut sum = 0.0;
                for (g, &zv) in gb.iter_mut().zip(zb) {
                    *g = (zv - mx).exp();
                    sum += *g;
                }
                total += mx + sum.ln() - zb[y];
                let inv = 1.0 / sum;
                for (v, g) in gb.iter_mut().enumerate() {
                    *g = coef * (*g * inv - if v == y { 1.0 } else { 0.0 });
                }
            }
        }
    }
    if !want_grad {
        return total;
    }
    let (g_tok, g_pos, g_g1, g_f1, g_g2, g_f2, g_unemb) = grad.parts_mut();

    // ---- readout: dW_o = dZᵀ H², dH² = dZ W_o
    gemm(
        1.0,
        dz,
        View::dense(m, nv).t(),
        h2,
        md,
        0.0,
        g_unemb,
        View::dense(nv, d),
    );
    gemm(
        1.0,
        dz,
        View::dense(m, nv),
        unemb,
        View::dense(nv, d),
        0.0,
        dh2,
        md,
    );

    // ---- layer 2: dF² = dH²ᵀ Ū², dŪ² = dH² F², the softmax, dG² = H¹_rᵀ dQ̃², dH¹_r
    gemm(1.0, dh2, md.t(), u2, md, 0.0, g_f2, dd);
    gemm(1.0, dh2, md, &merged.f2, dd, 0.0, du2, md);
    dh1.fill(0.0);
    for b in 0..m {
        let h1b = &h1[b * t * d..(b + 1) * t * d];
        let dub = &du2[b * d..(b + 1) * d];
        let qb = &q2[b * d..(b + 1) * d];
        let ab = &a2[b * t..b * t + keys2];
        let ds = &mut row[..keys2];
        dot4_rows(dub, h1b, d, d, ds);
        softmax_backward(ab, ds, c);
        combine_rows(ds, h1b, d, &mut dq2[b * d..(b + 1) * d]);
        let dh1b = &mut dh1[b * t * d..(b + 1) * t * d];
        for j in 0..keys2 {
            let (aj, sj) = (ab[j], ds[j]);
            for ((o, u), q) in dh1b[j * d..(j + 1) * d].iter_mut().zip(dub).zip(qb) {
                *o += aj * u + sj * q;
            }
        }
        for (o, g) in dh1b[r * d..(r + 1) * d]
            .iter_mut()
            .zip(&dh2[b * d..(b + 1) * d])
        {
            *o += g;
        }
    }
    gemm(1.0, h1, query_rows.t(), dq2, md, 0.0, g_g2, dd);
    gemm(1.0, dq2, md, &merged.g2, dd.t(), 1.0, dh1, query_rows);

    // ---- layer 1: dF¹ = dH¹ᵀ Ū¹, dŪ¹ = dH¹ F¹, the softmax, dG¹ = Xᵀ Wm, dX
    gemm(1.0, dh1, rd.t(), u1, rd, 0.0, g_f1, dd);
    gemm(1.0, dh1, rd, &merged.f1, dd, 0.0, du1, rd);
    dx.copy_from_slice(dh1);
    for b in 0..m {
        let xb = &x[b * t * d..(b + 1) * t * d];
        for k in 0..t {
            let i = b * t + k;
            let keys = k + inc;
            let dsk = &mut ds1[i * t..(i + 1) * t];
            dsk[keys..].fill(0.0);
            let wk = &mut wm[i * d..(i + 1) * d];
            if keys == 0 {
                wk.fill(0.0);
                continue;
            }
            let ds = &mut dsk[..keys];
            dot4_rows(&du1[i * d..(i + 1) * d], xb, d, d, ds);
            softmax_backward(&a1[i * t..i * t + keys], ds, c);
            combine_rows(ds, xb, d, wk);
        }
        // dX_b += A¹_bᵀ dŪ¹_b + dS¹_bᵀ Q̃¹_b (T × T times T × D; entries above the keys are 0)
        let (tt, td) = (
            View::rows(t, t, b * t * t, t),
            View::rows(t, d, b * t * d, d),
        );
        gemm(1.0, a1, tt.t(), du1, td, 1.0, dx, td);
        gemm(1.0, ds1, tt.t(), q1, td, 1.0, dx, td);
    }
    gemm(1.0, x, rd.t(), wm, rd, 0.0, g_g1, dd);
    gemm(1.0, wm, rd, &merged.g1, dd.t(), 1.0, dx, rd);

    // ---- scatter dX into the rows of T (and P)
    g_tok.fill(0.0);
    g_pos.fill(0.0);
    let learned = cfg.learned_positions;
    for (i, &v) in tokens[..rows].iter().enumerate() {
        let k = i % t;
        let dxi = &dx[i * d..(i + 1) * d];
        for (o, g) in g_tok[v as usize * d..(v as usize + 1) * d]
            .iter_mut()
            .zip(dxi)
        {
            *o += g;
        }
        if learned {
            for (o, g) in g_pos[k * d..(k + 1) * d].iter_mut().zip(dxi) {
                *o += g;
            }
        }
    }
    total
}
