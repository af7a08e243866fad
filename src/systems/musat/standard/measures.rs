//! The progress measures of docs/theory/musat.md §11 and the interpretable weight blocks behind
//! them, for the standard model.
//!
//! **Reading of §11 (marked unverified there).** With t_v the embedding of token v (row v of T),
//! p_k the positional embedding of position k (0-based; row k of P), W_o the unembedding
//! (N_E × D) and the sums taken over what a sequence uses:
//! ```text
//! α̃₃ = Σ_{k=1}^{T−1} (W_K¹ p_{k−1})ᵀ (W_Q¹ p_k)         every position scoring its predecessor
//! β̃₂ = Σ_{v=0}^{N_E−1} (W_K² W_O¹ W_V¹ t_v)ᵀ (W_Q² t_v)  a query token matching a key whose
//!                                                         layer-1 output carries the same token
//! γ̃₃ = tr(W_o W_O² W_V² T) = Σ_v (W_o)_v · W_O² W_V² t_v  layer 2 copying token v to logit v
//! ```
//! (T here is D × N_E with the embeddings as columns, so the trace is over the vocabulary.) Only
//! the token part of a residual vector enters β̃₂ and γ̃₃ and only the positional part α̃₃; the
//! attention scale 1/√d_head is not included (the measures are the bilinear forms as written).
//! They are the analogues of α₃, β₂, γ₃ of the disentangled model (§5): "attend to the previous
//! token", "match the query's content against the layer-1 average", "copy the layer-2 average".
//!
//! In terms of the three matrices [`WeightBlocks`] draws:
//! α̃₃ = Σ_k [Pᵀ G¹ P]_{k, k−1} (the subdiagonal of the position block of layer 1's QK),
//! β̃₂ = tr(Tᵀ G² F¹ T), γ̃₃ = tr(W_o F² T), with G = W_Qᵀ W_K and F = W_O W_V (tested against
//! the factor formulas above).

use super::{Block, Merged, Params};
use crate::numerics::gemm::{View, gemm};

/// α̃₃, β̃₂, γ̃₃ at one parameter point.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Measures {
    pub alpha3: f64,
    pub beta2: f64,
    pub gamma3: f64,
}

/// The interpretable blocks of the weights (each row-major):
/// - `qk1`: layer 1's scores in the [T P] basis, [T P]ᵀ G¹ [T P] restricted to the N_E tokens and
///   the T positions a sequence uses ((N_E + T) × (N_E + T); rows the query's embedding, columns
///   the key's);
/// - `qk2`: layer 2's scores between a query token u and a key whose layer-1 output carries token
///   v: Tᵀ G² F¹ T (N_E × N_E; rows u, columns v);
/// - `ov2`: layer 2's value-output path into the logits, W_o F² T (N_E × N_E; rows the logit,
///   columns the attended token).
#[derive(Debug, Clone, PartialEq)]
pub struct WeightBlocks {
    pub vocab: usize,
    /// Positions shown (T = 2N + 1).
    pub positions: usize,
    pub qk1: Vec<f64>,
    pub qk2: Vec<f64>,
    pub ov2: Vec<f64>,
}

impl WeightBlocks {
    pub fn of(p: &Params) -> Self {
        let dims = p.dims;
        let (d, nv, t) = (dims.d, dims.vocab, dims.t());
        let mut merged = Merged::zeros(d);
        merged.compute(p);
        // E: the N_E token rows then the T position rows (each a row of length D)
        let ne = nv + t;
        let mut e = vec![0.0; ne * d];
        e[..nv * d].copy_from_slice(p.block(Block::Tok));
        e[nv * d..].copy_from_slice(&p.block(Block::Pos)[..t * d]);
        let tok = p.block(Block::Tok);
        let (vd, nd, dd) = (View::dense(nv, d), View::dense(ne, d), View::dense(d, d));
        // qk1 = E G¹ Eᵀ
        let mut eg = vec![0.0; ne * d];
        gemm(1.0, &e, nd, &merged.g1, dd, 0.0, &mut eg, nd);
        let mut qk1 = vec![0.0; ne * ne];
        gemm(1.0, &eg, nd, &e, nd.t(), 0.0, &mut qk1, View::dense(ne, ne));
        // qk2 = T G² F¹ Tᵀ (rows of T as the embeddings)
        let mut tg = vec![0.0; nv * d];
        gemm(1.0, tok, vd, &merged.g2, dd, 0.0, &mut tg, vd);
        let mut tf = vec![0.0; nv * d];
        gemm(1.0, tok, vd, &merged.f1, dd.t(), 0.0, &mut tf, vd); // row v: (F¹ t_v)ᵀ
        let mut qk2 = vec![0.0; nv * nv];
        gemm(
            1.0,
            &tg,
            vd,
            &tf,
            vd.t(),
            0.0,
            &mut qk2,
            View::dense(nv, nv),
        );
        // ov2 = W_o F² Tᵀ
        let mut tf2 = vec![0.0; nv * d];
        gemm(1.0, tok, vd, &merged.f2, dd.t(), 0.0, &mut tf2, vd); // row v: (F² t_v)ᵀ
        let mut ov2 = vec![0.0; nv * nv];
        gemm(
            1.0,
            p.block(Block::Unemb),
            vd,
            &tf2,
            vd.t(),
            0.0,
            &mut ov2,
            View::dense(nv, nv),
        );
        WeightBlocks {
            vocab: nv,
            positions: t,
            qk1,
            qk2,
            ov2,
        }
    }

    /// The measures read off the blocks: the position subdiagonal of `qk1`, the traces of `qk2`
    /// and `ov2`.
    pub fn measures(&self) -> Measures {
        let (nv, t) = (self.vocab, self.positions);
        let ne = nv + t;
        let alpha3 = (1..t).map(|k| self.qk1[(nv + k) * ne + nv + k - 1]).sum();
        let beta2 = (0..nv).map(|v| self.qk2[v * nv + v]).sum();
        let gamma3 = (0..nv).map(|v| self.ov2[v * nv + v]).sum();
        Measures {
            alpha3,
            beta2,
            gamma3,
        }
    }
}

/// α̃₃, β̃₂, γ̃₃ of `p` (through [`WeightBlocks`]).
pub fn measures(p: &Params) -> Measures {
    WeightBlocks::of(p).measures()
}

#[cfg(test)]
mod tests {
    use super::super::{Dims, Positions};
    use super::*;

    fn mat_vec(p: &Params, b: Block, x: &[f64]) -> Vec<f64> {
        let (rows, cols) = b.shape(&p.dims);
        let w = p.block(b);
        (0..rows)
            .map(|i| (0..cols).map(|j| w[i * cols + j] * x[j]).sum())
            .collect()
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// The three measures as §11 writes them, factor by factor (matrix–vector products of the
    /// stored blocks), against the blocks' subdiagonal and traces.
    #[test]
    fn the_blocks_give_the_measures_of_section_11_written_with_the_factors() {
        let dims = Dims {
            n: 3,
            d: 6,
            d_head: 4,
            vocab: 9,
            positions: 10,
        };
        for positions in [Positions::Learned, Positions::Fixed] {
            let p = Params::init(dims, 0.7, positions, 5);
            let d = dims.d;
            let tok = |v: usize| p.block(Block::Tok)[v * d..(v + 1) * d].to_vec();
            let pos = |k: usize| p.block(Block::Pos)[k * d..(k + 1) * d].to_vec();
            let alpha3: f64 = (1..dims.t())
                .map(|k| {
                    dot(
                        &mat_vec(&p, Block::K1, &pos(k - 1)),
                        &mat_vec(&p, Block::Q1, &pos(k)),
                    )
                })
                .sum();
            let beta2: f64 = (0..dims.vocab)
                .map(|v| {
                    let ov = mat_vec(&p, Block::O1, &mat_vec(&p, Block::V1, &tok(v)));
                    dot(
                        &mat_vec(&p, Block::K2, &ov),
                        &mat_vec(&p, Block::Q2, &tok(v)),
                    )
                })
                .sum();
            let gamma3: f64 = (0..dims.vocab)
                .map(|v| {
                    let ov = mat_vec(&p, Block::O2, &mat_vec(&p, Block::V2, &tok(v)));
                    mat_vec(&p, Block::Unemb, &ov)[v]
                })
                .sum();
            let m = measures(&p);
            for (got, want, what) in [
                (m.alpha3, alpha3, "alpha3"),
                (m.beta2, beta2, "beta2"),
                (m.gamma3, gamma3, "gamma3"),
            ] {
                assert!(
                    (got - want).abs() < 1e-12 * want.abs().max(1.0),
                    "{positions:?} {what}: {got} vs {want}"
                );
                assert!(want.abs() > 1e-3, "{what} is not trivially 0");
            }
        }
    }
}
