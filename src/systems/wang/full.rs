//! The full two-layer attention-only transformer of docs/theory/wang.md §9, trained alongside the
//! six-parameter flow on the same target, with a hand-written f64 backward pass.
//!
//! Architecture (width d, head dimension d_h, H₁ heads in layer 1, H₂ heads in layer 2):
//! ```text
//! h⁰_i = x_i e₁                                        (fixed embedding)
//! head h at position i:  a_{ij} = softmax_{j<i}( (W_Q h_i)·(W_K h_j) − p_h (i − j − 1) )
//!                        z_i = Σ_{j<i} a_{ij} W_V h_j  (z_1 = 0: no earlier position)
//! h¹_i = h⁰_i + Σ_h W_O^h z^h_i                         (layer 1 at every position)
//! f    = h¹_L + Σ_g W_O^g z^g_L                          (layer 2 at the read-out position)
//! ŷ    = r·f
//! ```
//! Every head has its own W_Q, W_K, W_V ∈ R^{d_h×d}, W_O ∈ R^{d×d_h} and Alibi slope p_h (strict
//! causal mask); no 1/√d_h scaling, so the logit scale maps directly onto the reduced w.
//!
//! Loss: loss_scale · (1/B) Σ_b (ŷ_b − y_b)² on fresh sequences. The batch is split into a fixed
//! number of chunks (independent of the thread count), evaluated in parallel with one
//! preallocated workspace each and summed in chunk order: byte-identical results on any number
//! of threads, and no allocation per step.
//!
//! The six reduced parameters embed exactly ([`FullModel::embed`], needs d ≥ 3, H₁ ≥ 1, H₂ ≥ 2):
//! layer-1 head 0 copies e₁ into e₂ (W_V = e₁ᵀ, W_O = e₂, slope p₁); layer-2 head 0 is the 4-gram
//! head (W_V reads e₂, W_O = w_G e₃, slope p, W_Q = W_K = 0); layer-2 head 1 is the IH head
//! (W_Q = w_Q e₁ᵀ, W_K = w_K e₂ᵀ, W_V = e₁ᵀ, W_O = v e₃, slope 0); r = e₃. [`FullModel::readoff`]
//! reads the reduced coordinates back from any parameter vector (§9 table).

use crate::numerics::kernels::{dot, softmax_div};
use crate::numerics::normal::Gaussian;
use crate::systems::wang::reduced::RichModel;
use crate::systems::wang::reduced::sample::target_parts;
use rayon::prelude::*;

/// Shape of the full model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FullShape {
    pub l: usize,
    pub d: usize,
    pub d_head: usize,
    pub heads1: usize,
    pub heads2: usize,
}

/// Offsets of one head's blocks in the flat parameter vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadIdx {
    pub wq: usize,
    pub wk: usize,
    pub wv: usize,
    pub wo: usize,
    pub slope: usize,
}

/// Parameter layout: layer-1 heads, layer-2 heads, then the readout r.
#[derive(Debug, Clone)]
pub struct ParamLayout {
    pub layer1: Vec<HeadIdx>,
    pub layer2: Vec<HeadIdx>,
    pub readout: usize,
    pub len: usize,
}

impl FullShape {
    pub fn layout(&self) -> ParamLayout {
        let block = self.d_head * self.d;
        let mut at = 0;
        let mut head = || {
            let h = HeadIdx {
                wq: at,
                wk: at + block,
                wv: at + 2 * block,
                wo: at + 3 * block,
                slope: at + 4 * block,
            };
            at += 4 * block + 1;
            h
        };
        let layer1 = (0..self.heads1).map(|_| head()).collect();
        let layer2 = (0..self.heads2).map(|_| head()).collect();
        ParamLayout {
            layer1,
            layer2,
            readout: at,
            len: at + self.d,
        }
    }
}

impl ParamLayout {
    /// Names of the flat parameters: `L1h0.wq[i]`, …, `L2h1.slope`, `r[i]`.
    pub fn names(&self) -> Vec<String> {
        let mut names = vec![String::new(); self.len];
        for (layer, heads) in [(1, &self.layer1), (2, &self.layer2)] {
            for (h, idx) in heads.iter().enumerate() {
                let blocks = [
                    ("wq", idx.wq),
                    ("wk", idx.wk),
                    ("wv", idx.wv),
                    ("wo", idx.wo),
                ];
                for (k, (name, start)) in blocks.iter().enumerate() {
                    let end = blocks.get(k + 1).map_or(idx.slope, |b| b.1);
                    for (j, slot) in names[*start..end].iter_mut().enumerate() {
                        *slot = format!("L{layer}h{h}.{name}[{j}]");
                    }
                }
                names[idx.slope] = format!("L{layer}h{h}.slope");
            }
        }
        for (j, slot) in names[self.readout..].iter_mut().enumerate() {
            *slot = format!("r[{j}]");
        }
        names
    }
}

/// Per-sequence buffers of the forward and backward pass (allocated once).
#[derive(Debug, Clone)]
pub struct Workspace {
    h0: Vec<f64>,
    h1: Vec<f64>,
    // layer 1, per head: q, k, v, z (L × d_h), attention (L × L, row i over j < i)
    q1: Vec<f64>,
    k1: Vec<f64>,
    v1: Vec<f64>,
    z1: Vec<f64>,
    a1: Vec<f64>,
    // layer 2, per head: q, z (d_h), k, v (L × d_h), attention (L)
    q2: Vec<f64>,
    z2: Vec<f64>,
    k2: Vec<f64>,
    v2: Vec<f64>,
    a2: Vec<f64>,
    f: Vec<f64>,
    // backward
    df: Vec<f64>,
    dh1: Vec<f64>,
    dz: Vec<f64>,
    dq: Vec<f64>,
    dk: Vec<f64>,
    dv: Vec<f64>,
    da: Vec<f64>,
}

impl Workspace {
    pub fn new(s: &FullShape) -> Self {
        let (l, d, dh) = (s.l, s.d, s.d_head);
        Workspace {
            h0: vec![0.0; l * d],
            h1: vec![0.0; l * d],
            q1: vec![0.0; s.heads1 * l * dh],
            k1: vec![0.0; s.heads1 * l * dh],
            v1: vec![0.0; s.heads1 * l * dh],
            z1: vec![0.0; s.heads1 * l * dh],
            a1: vec![0.0; s.heads1 * l * l],
            q2: vec![0.0; s.heads2 * dh],
            z2: vec![0.0; s.heads2 * dh],
            k2: vec![0.0; s.heads2 * l * dh],
            v2: vec![0.0; s.heads2 * l * dh],
            a2: vec![0.0; s.heads2 * l],
            f: vec![0.0; d],
            df: vec![0.0; d],
            dh1: vec![0.0; l * d],
            dz: vec![0.0; dh],
            dq: vec![0.0; l * dh],
            dk: vec![0.0; l * dh],
            dv: vec![0.0; l * dh],
            da: vec![0.0; l],
        }
    }
}

/// out[r] = Σ_c m[r·cols + c] x[c] for an rows × cols row-major block.
fn matvec(m: &[f64], rows: usize, cols: usize, x: &[f64], out: &mut [f64]) {
    for r in 0..rows {
        let row = &m[r * cols..(r + 1) * cols];
        out[r] = row.iter().zip(x).map(|(a, b)| a * b).sum();
    }
}

/// out[c] += scale·Σ_r m[r·cols + c] y[r] (transposed product, accumulated).
fn matvec_t_add(m: &[f64], rows: usize, cols: usize, y: &[f64], out: &mut [f64]) {
    for r in 0..rows {
        let yr = y[r];
        if yr == 0.0 {
            continue;
        }
        let row = &m[r * cols..(r + 1) * cols];
        for (o, a) in out.iter_mut().zip(row) {
            *o += a * yr;
        }
    }
}

/// g[r·cols + c] += u[r] v[c].
fn outer_add(g: &mut [f64], rows: usize, cols: usize, u: &[f64], v: &[f64]) {
    for r in 0..rows {
        let ur = u[r];
        if ur == 0.0 {
            continue;
        }
        let row = &mut g[r * cols..(r + 1) * cols];
        for (gi, vi) in row.iter_mut().zip(v) {
            *gi += ur * vi;
        }
    }
}

/// The full model: its shape and the target it is trained on.
#[derive(Debug, Clone)]
pub struct FullModel {
    pub shape: FullShape,
    pub layout: ParamLayout,
    pub target: RichModel,
}

/// Reduced coordinates read off a parameter vector (§9 table), and per-head values.
#[derive(Debug, Clone, PartialEq)]
pub struct Readoff {
    /// Head 0 of layer 2: r·W_O W_V u (u = layer 1's copy direction Σ_h W_O^h W_V^h e₁).
    pub w_g: f64,
    /// Head 0's slope.
    pub p: f64,
    /// Head 1: r·W_O W_V e₁.
    pub v: f64,
    /// Head 1: (W_Q e₁)·(W_K u).
    pub w: f64,
    /// Layer-1 head 0's slope.
    pub p1: f64,
    /// ‖W_Kᵀ W_Q‖_F of head 1.
    pub kq_norm: f64,
    /// Per layer-2 head: (slope, 4-gram value r·W_O W_V u, IH value r·W_O W_V e₁, logit scale
    /// (W_Q e₁)·(W_K u)).
    pub heads: Vec<[f64; 4]>,
}

/// Diagnostics on an evaluation batch.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EvalStats {
    /// loss_scale · mean (ŷ − y)².
    pub loss: f64,
    /// Mean attention of layer-1 head 0 on the previous position (positions 3..L).
    pub prev_mass: f64,
    /// corr(ŷ, x_{L−2}) and corr(ŷ, the target's IH term).
    pub corr_g: f64,
    pub corr_i: f64,
    /// Mean entropy (nats) of layer-2 head 1's attention at the read-out position.
    pub entropy_ih: f64,
}

impl FullModel {
    /// Shapes are validated upstream (d ≥ 2, d_h ≥ 1, H₁ ≥ 1, H₂ ≥ 1, L = target L).
    pub fn new(shape: FullShape, target: RichModel) -> Self {
        assert_eq!(shape.l, target.l);
        assert!(shape.d >= 2 && shape.d_head >= 1 && shape.heads1 >= 1 && shape.heads2 >= 1);
        FullModel {
            layout: shape.layout(),
            shape,
            target,
        }
    }

    pub fn n_params(&self) -> usize {
        self.layout.len
    }

    /// The full parameters realising the reduced coordinates (w_G, p, v, w_K, w_Q) with a
    /// layer-1 copy head of slope `p1` (see the module doc). Needs d ≥ 3 and H₂ ≥ 2.
    pub fn embed(&self, w_g: f64, p: f64, v: f64, w_k: f64, w_q: f64, p1: f64) -> Vec<f64> {
        let s = &self.shape;
        assert!(
            s.d >= 3 && s.heads2 >= 2,
            "the embedding needs d >= 3 and heads2 >= 2"
        );
        let (d, dh) = (s.d, s.d_head);
        let mut th = vec![0.0; self.layout.len];
        let c = self.layout.layer1[0];
        th[c.wv] = 1.0; // W_V[0][0]: reads e₁
        th[c.wo + dh] = 1.0; // W_O[1][0]: writes e₂
        th[c.slope] = p1;
        let g = self.layout.layer2[0];
        th[g.wv + 1] = 1.0; // W_V[0][1]: reads e₂
        th[g.wo + 2 * dh] = w_g; // W_O[2][0]
        th[g.slope] = p;
        let ih = self.layout.layer2[1];
        th[ih.wq] = w_q; // W_Q[0][0]: query reads e₁
        th[ih.wk + 1] = w_k; // W_K[0][1]: key reads e₂
        th[ih.wv] = 1.0; // value reads e₁
        th[ih.wo + 2 * dh] = v;
        th[self.layout.readout + 2] = 1.0;
        debug_assert!(d >= 3);
        th
    }

    /// Read the reduced coordinates off θ (§9 table, with the copy direction u).
    pub fn readoff(&self, th: &[f64]) -> Readoff {
        let s = &self.shape;
        let (d, dh) = (s.d, s.d_head);
        let mut e1 = vec![0.0; d];
        e1[0] = 1.0;
        // u = Σ_h W_O^h W_V^h e₁
        let mut u = vec![0.0; d];
        let mut tmp = vec![0.0; dh];
        for h in &self.layout.layer1 {
            matvec(&th[h.wv..h.wv + dh * d], dh, d, &e1, &mut tmp);
            let mut out = vec![0.0; d];
            matvec(&th[h.wo..h.wo + d * dh], d, dh, &tmp, &mut out);
            for (ui, o) in u.iter_mut().zip(&out) {
                *ui += o;
            }
        }
        let r = &th[self.layout.readout..self.layout.readout + d];
        let mut heads = Vec::new();
        let mut kq_norm = 0.0;
        for (gi, g) in self.layout.layer2.iter().enumerate() {
            // value map row: vec = (W_O W_V)ᵀ r = W_Vᵀ (W_Oᵀ r)
            let mut wor = vec![0.0; dh];
            matvec_t_add(&th[g.wo..g.wo + d * dh], d, dh, r, &mut wor);
            let mut vec_g = vec![0.0; d];
            matvec_t_add(&th[g.wv..g.wv + dh * d], dh, d, &wor, &mut vec_g);
            let mut qe = vec![0.0; dh];
            let mut ku = vec![0.0; dh];
            matvec(&th[g.wq..g.wq + dh * d], dh, d, &e1, &mut qe);
            matvec(&th[g.wk..g.wk + dh * d], dh, d, &u, &mut ku);
            heads.push([th[g.slope], dot(&vec_g, &u), vec_g[0], dot(&qe, &ku)]);
            if gi == 1 {
                // ‖W_Kᵀ W_Q‖_F² = Σ_{a,b} (Σ_r K[r][a] Q[r][b])²
                let (wk, wq) = (&th[g.wk..g.wk + dh * d], &th[g.wq..g.wq + dh * d]);
                let mut sum = 0.0;
                for a in 0..d {
                    for b in 0..d {
                        let m: f64 = (0..dh).map(|k| wk[k * d + a] * wq[k * d + b]).sum();
                        sum += m * m;
                    }
                }
                kq_norm = sum.sqrt();
            }
        }
        let h1 = heads.get(1).copied().unwrap_or([0.0; 4]);
        Readoff {
            w_g: heads[0][1],
            p: heads[0][0],
            v: h1[2],
            w: h1[3],
            p1: th[self.layout.layer1[0].slope],
            kq_norm,
            heads,
        }
    }

    /// Forward pass on one sequence: ŷ, with every intermediate kept in `ws`.
    #[allow(clippy::needless_range_loop)]
    pub fn forward(&self, th: &[f64], x: &[f64], ws: &mut Workspace) -> f64 {
        let s = &self.shape;
        let (l, d, dh) = (s.l, s.d, s.d_head);
        ws.h0.fill(0.0);
        for i in 0..l {
            ws.h0[i * d] = x[i];
        }
        ws.h1.copy_from_slice(&ws.h0);
        for (hi, h) in self.layout.layer1.iter().enumerate() {
            let (wq, wk, wv, wo) = (
                &th[h.wq..h.wq + dh * d],
                &th[h.wk..h.wk + dh * d],
                &th[h.wv..h.wv + dh * d],
                &th[h.wo..h.wo + d * dh],
            );
            let slope = th[h.slope];
            let base = hi * l * dh;
            for i in 0..l {
                let hv = &ws.h0[i * d..(i + 1) * d];
                matvec(
                    wq,
                    dh,
                    d,
                    hv,
                    &mut ws.q1[base + i * dh..base + (i + 1) * dh],
                );
                matvec(
                    wk,
                    dh,
                    d,
                    hv,
                    &mut ws.k1[base + i * dh..base + (i + 1) * dh],
                );
                matvec(
                    wv,
                    dh,
                    d,
                    hv,
                    &mut ws.v1[base + i * dh..base + (i + 1) * dh],
                );
            }
            let abase = hi * l * l;
            for i in 0..l {
                let z = &mut ws.z1[base + i * dh..base + (i + 1) * dh];
                z.fill(0.0);
                if i == 0 {
                    continue;
                }
                let row = &mut ws.a1[abase + i * l..abase + i * l + i];
                let qi = &ws.q1[base + i * dh..base + (i + 1) * dh];
                for (j, a) in row.iter_mut().enumerate() {
                    *a = dot(qi, &ws.k1[base + j * dh..base + (j + 1) * dh])
                        - slope * (i - j - 1) as f64;
                }
                softmax_div(row);
                for (j, a) in row.iter().enumerate() {
                    for (zk, vk) in z.iter_mut().zip(&ws.v1[base + j * dh..base + (j + 1) * dh]) {
                        *zk += a * vk;
                    }
                }
                // h¹_i += W_O z_i
                let hrow = &mut ws.h1[i * d..(i + 1) * d];
                for (r, hr) in hrow.iter_mut().enumerate() {
                    *hr += dot(&wo[r * dh..(r + 1) * dh], z);
                }
            }
        }
        // Layer 2 at the last position.
        let last = l - 1;
        ws.f.copy_from_slice(&ws.h1[last * d..l * d]);
        for (gi, g) in self.layout.layer2.iter().enumerate() {
            let (wq, wk, wv, wo) = (
                &th[g.wq..g.wq + dh * d],
                &th[g.wk..g.wk + dh * d],
                &th[g.wv..g.wv + dh * d],
                &th[g.wo..g.wo + d * dh],
            );
            let slope = th[g.slope];
            let q = &mut ws.q2[gi * dh..(gi + 1) * dh];
            matvec(wq, dh, d, &ws.h1[last * d..l * d], q);
            let base = gi * l * dh;
            for j in 0..last {
                let hv = &ws.h1[j * d..(j + 1) * d];
                matvec(
                    wk,
                    dh,
                    d,
                    hv,
                    &mut ws.k2[base + j * dh..base + (j + 1) * dh],
                );
                matvec(
                    wv,
                    dh,
                    d,
                    hv,
                    &mut ws.v2[base + j * dh..base + (j + 1) * dh],
                );
            }
            let a = &mut ws.a2[gi * l..gi * l + last];
            for (j, aj) in a.iter_mut().enumerate() {
                *aj = dot(q, &ws.k2[base + j * dh..base + (j + 1) * dh])
                    - slope * (last - j - 1) as f64;
            }
            softmax_div(a);
            let z = &mut ws.z2[gi * dh..(gi + 1) * dh];
            z.fill(0.0);
            for (j, aj) in a.iter().enumerate() {
                for (zk, vk) in z.iter_mut().zip(&ws.v2[base + j * dh..base + (j + 1) * dh]) {
                    *zk += aj * vk;
                }
            }
            for (r, fr) in ws.f.iter_mut().enumerate() {
                *fr += dot(&wo[r * dh..(r + 1) * dh], z);
            }
        }
        dot(&th[self.layout.readout..self.layout.readout + d], &ws.f)
    }

    #[allow(clippy::needless_range_loop)]
    /// Backward pass after [`FullModel::forward`] on the same θ and sequence: adds
    /// `dy`·∂ŷ/∂θ to `grad`.
    pub fn backward(&self, th: &[f64], dy: f64, ws: &mut Workspace, grad: &mut [f64]) {
        let s = &self.shape;
        let (l, d, dh) = (s.l, s.d, s.d_head);
        let last = l - 1;
        let ro = self.layout.readout;
        for r in 0..d {
            grad[ro + r] += dy * ws.f[r];
        }
        ws.dh1.fill(0.0);
        // δf = dy·r; the residual carries it to h¹_L.
        for r in 0..d {
            ws.df[r] = dy * th[ro + r];
            ws.dh1[last * d + r] = ws.df[r];
        }
        for (gi, g) in self.layout.layer2.iter().enumerate() {
            let base = gi * l * dh;
            // δz = W_Oᵀ δf; ∂W_O += δf ⊗ z
            ws.dz.fill(0.0);
            matvec_t_add(&th[g.wo..g.wo + d * dh], d, dh, &ws.df, &mut ws.dz);
            outer_add(
                &mut grad[g.wo..g.wo + d * dh],
                d,
                dh,
                &ws.df,
                &ws.z2[gi * dh..(gi + 1) * dh],
            );
            let a = &ws.a2[gi * l..gi * l + last];
            // δa_j = δz·v_j; δlogit_j = a_j(δa_j − Σ a δa)
            let mut mean = 0.0;
            for j in 0..last {
                let daj = dot(&ws.dz, &ws.v2[base + j * dh..base + (j + 1) * dh]);
                ws.da[j] = daj;
                mean += a[j] * daj;
            }
            let q = &ws.q2[gi * dh..(gi + 1) * dh];
            let dq = &mut ws.dq[..dh];
            dq.fill(0.0);
            let mut dslope = 0.0;
            for j in 0..last {
                let dl = a[j] * (ws.da[j] - mean);
                dslope -= dl * (last - j - 1) as f64;
                // δq += δlogit_j k_j; δk_j = δlogit_j q; δv_j = a_j δz
                for k in 0..dh {
                    dq[k] += dl * ws.k2[base + j * dh + k];
                    ws.dk[j * dh + k] = dl * q[k];
                    ws.dv[j * dh + k] = a[j] * ws.dz[k];
                }
            }
            grad[g.slope] += dslope;
            for j in 0..last {
                let (hj, dk, dv) = (
                    &ws.h1[j * d..(j + 1) * d],
                    &ws.dk[j * dh..(j + 1) * dh],
                    &ws.dv[j * dh..(j + 1) * dh],
                );
                outer_add(&mut grad[g.wk..g.wk + dh * d], dh, d, dk, hj);
                outer_add(&mut grad[g.wv..g.wv + dh * d], dh, d, dv, hj);
                let dhj = &mut ws.dh1[j * d..(j + 1) * d];
                matvec_t_add(&th[g.wk..g.wk + dh * d], dh, d, dk, dhj);
                matvec_t_add(&th[g.wv..g.wv + dh * d], dh, d, dv, dhj);
            }
            let dq = &ws.dq[..dh];
            outer_add(
                &mut grad[g.wq..g.wq + dh * d],
                dh,
                d,
                dq,
                &ws.h1[last * d..l * d],
            );
            matvec_t_add(
                &th[g.wq..g.wq + dh * d],
                dh,
                d,
                dq,
                &mut ws.dh1[last * d..l * d],
            );
        }
        // Layer 1: h¹_i = h⁰_i + Σ_h W_O z_i.
        for (hi, h) in self.layout.layer1.iter().enumerate() {
            let base = hi * l * dh;
            let abase = hi * l * l;
            ws.dq.fill(0.0);
            ws.dk.fill(0.0);
            ws.dv.fill(0.0);
            let mut dslope = 0.0;
            for i in 1..l {
                let dhi = &ws.dh1[i * d..(i + 1) * d];
                ws.dz.fill(0.0);
                matvec_t_add(&th[h.wo..h.wo + d * dh], d, dh, dhi, &mut ws.dz);
                outer_add(
                    &mut grad[h.wo..h.wo + d * dh],
                    d,
                    dh,
                    dhi,
                    &ws.z1[base + i * dh..base + (i + 1) * dh],
                );
                let row = &ws.a1[abase + i * l..abase + i * l + i];
                let mut mean = 0.0;
                for j in 0..i {
                    let daj = dot(&ws.dz, &ws.v1[base + j * dh..base + (j + 1) * dh]);
                    ws.da[j] = daj;
                    mean += row[j] * daj;
                }
                for j in 0..i {
                    let dl = row[j] * (ws.da[j] - mean);
                    dslope -= dl * (i - j - 1) as f64;
                    for k in 0..dh {
                        ws.dq[i * dh + k] += dl * ws.k1[base + j * dh + k];
                        ws.dk[j * dh + k] += dl * ws.q1[base + i * dh + k];
                        ws.dv[j * dh + k] += row[j] * ws.dz[k];
                    }
                }
            }
            grad[h.slope] += dslope;
            for i in 0..l {
                let hv = &ws.h0[i * d..(i + 1) * d];
                outer_add(
                    &mut grad[h.wq..h.wq + dh * d],
                    dh,
                    d,
                    &ws.dq[i * dh..(i + 1) * dh],
                    hv,
                );
                outer_add(
                    &mut grad[h.wk..h.wk + dh * d],
                    dh,
                    d,
                    &ws.dk[i * dh..(i + 1) * dh],
                    hv,
                );
                outer_add(
                    &mut grad[h.wv..h.wv + dh * d],
                    dh,
                    d,
                    &ws.dv[i * dh..(i + 1) * dh],
                    hv,
                );
            }
        }
    }

    /// y for one sequence (the mixed target).
    pub fn target(&self, x: &[f64]) -> f64 {
        let (g, i) = target_parts(&self.target, x);
        g + i
    }
}

/// One chunk's workspace and gradient accumulator.
#[derive(Debug, Clone)]
struct Chunk {
    ws: Workspace,
    grad: Vec<f64>,
    loss: f64,
}

/// Number of chunks a batch is split into (fixed, independent of the thread count).
pub const BATCH_CHUNKS: usize = 8;

/// Batch loss and gradient with per-chunk workspaces; allocated once.
#[derive(Debug, Clone)]
pub struct BatchEngine {
    chunks: Vec<Chunk>,
}

impl BatchEngine {
    pub fn new(model: &FullModel) -> Self {
        BatchEngine {
            chunks: (0..BATCH_CHUNKS)
                .map(|_| Chunk {
                    ws: Workspace::new(&model.shape),
                    grad: vec![0.0; model.n_params()],
                    loss: 0.0,
                })
                .collect(),
        }
    }

    /// loss_scale · mean (ŷ − y)² over the B sequences in `batch` (B × L), and its gradient in
    /// `grad`. No allocation.
    pub fn loss_and_grad(
        &mut self,
        model: &FullModel,
        th: &[f64],
        batch: &[f64],
        grad: &mut [f64],
    ) -> f64 {
        let l = model.shape.l;
        let b = batch.len() / l;
        let per = b.div_ceil(BATCH_CHUNKS);
        let scale = model.target.loss_scale / b as f64;
        self.chunks.par_iter_mut().enumerate().for_each(|(c, ch)| {
            ch.grad.fill(0.0);
            ch.loss = 0.0;
            for k in (c * per).min(b)..((c + 1) * per).min(b) {
                let x = &batch[k * l..(k + 1) * l];
                let yhat = model.forward(th, x, &mut ch.ws);
                let r = yhat - model.target(x);
                ch.loss += r * r;
                model.backward(th, 2.0 * r * scale, &mut ch.ws, &mut ch.grad);
            }
        });
        grad.fill(0.0);
        let mut loss = 0.0;
        for ch in &self.chunks {
            loss += ch.loss;
            for (g, c) in grad.iter_mut().zip(&ch.grad) {
                *g += c;
            }
        }
        loss * scale
    }

    /// Loss and diagnostics on a fixed batch (serial, deterministic).
    pub fn evaluate(&mut self, model: &FullModel, th: &[f64], batch: &[f64]) -> EvalStats {
        let l = model.shape.l;
        let b = batch.len() / l;
        let ws = &mut self.chunks[0].ws;
        let (mut loss, mut prev, mut ent) = (0.0, 0.0, 0.0);
        let (mut sy, mut syy, mut sg, mut sgg, mut syg, mut si, mut sii, mut syi) =
            (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for k in 0..b {
            let x = &batch[k * l..(k + 1) * l];
            let yhat = model.forward(th, x, ws);
            let (tg, ti) = target_parts(&model.target, x);
            let r = yhat - tg - ti;
            loss += r * r;
            let xg = x[l - 3];
            sy += yhat;
            syy += yhat * yhat;
            sg += xg;
            sgg += xg * xg;
            syg += yhat * xg;
            si += ti;
            sii += ti * ti;
            syi += yhat * ti;
            // layer-1 head 0 on the previous position, positions i = 2..L−1 (0-based)
            let mut pm = 0.0;
            for i in 2..l {
                pm += ws.a1[i * l + i - 1];
            }
            prev += pm / (l - 2) as f64;
            if model.shape.heads2 >= 2 {
                let a = &ws.a2[l..l + l - 1];
                ent -= a
                    .iter()
                    .filter(|&&v| v > 0.0)
                    .map(|&v| v * v.ln())
                    .sum::<f64>();
            }
        }
        let bf = b as f64;
        let corr = |sx: f64, sxx: f64, sxy: f64| {
            let cov = sxy / bf - sy / bf * sx / bf;
            let vy = syy / bf - (sy / bf).powi(2);
            let vx = sxx / bf - (sx / bf).powi(2);
            if vy > 0.0 && vx > 0.0 {
                cov / (vy * vx).sqrt()
            } else {
                0.0
            }
        };
        EvalStats {
            loss: model.target.loss_scale * loss / bf,
            prev_mass: prev / bf,
            corr_g: corr(sg, sgg, syg),
            corr_i: corr(si, sii, syi),
            entropy_ih: ent / bf,
        }
    }
}

/// A fixed batch of `count` sequences of length L from `seed`.
pub fn sample_batch(l: usize, count: usize, seed: u64) -> Vec<f64> {
    let mut v = vec![0.0; l * count];
    Gaussian::new(seed).fill(&mut v);
    v
}

#[cfg(test)]
mod tests;
