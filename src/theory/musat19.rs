//! Musat et al., the 19-dimensional flow (theory/musat.md §5–6) [reconstruction]: the exact
//! population gradient of the disentangled transformer restricted to the invariant subspace,
//! θ = (α₁..α₃, β₁..β₁₂, γ₁..γ₄), dθ/dt = −∂L/∂θ in pseudo-time (t = η·steps/D for the full
//! model).
//!
//! With orthonormal data every sample lies in one orbit of the symmetry group, so the
//! population loss of structured weights W(θ) = Σ θ_k B_k is the loss on one configuration: the
//! canonical one of §3 (D = 2N + 2, x_i = e_i, y_i = e_{N+i}, p_k = e_k), and for query
//! `uniform` the average over the N configurations q = 1..N. The gradient is
//! ∂L/∂θ_k = ⟨∇_W L, B_k⟩_F.
//!
//! The evaluation is the forward and backward pass of §4 written for structured weights: every
//! product with W¹, W², W³ uses the I/M block form (O(D) instead of O(D²)), tokens are stored
//! sparse (two nonzeros each in the canonical configuration), and the gradient is contracted
//! with the B_k on the fly. One configuration costs O(N²), so a gradient costs O(N²) for query
//! `last` and O(N³) for `uniform`, independent of the D of any full model. It is tested against
//! the dense full model's backward pass projected onto the basis.

use crate::flow::GradientFlow;
use crate::model::data::{LabelPosition, canonical_configuration};
use crate::model::subspace::{NAMES19, j_col, j_val};
use crate::theory::musat3::Query;
use std::cell::RefCell;

/// One input sequence with sparse tokens.
#[derive(Debug, Clone)]
struct Configuration {
    /// Token k's nonzeros are entries start[k]..start[k+1] of idx/val.
    start: Vec<usize>,
    idx: Vec<usize>,
    val: Vec<f64>,
    target: Vec<f64>,
    /// Weight of this configuration in the loss (1/number of configurations).
    weight: f64,
}

/// The 19-dimensional flow of Musat et al.
#[derive(Debug, Clone)]
pub struct Musat19 {
    n: usize,
    d: usize,
    query: Query,
    label_position: LabelPosition,
    loss_scale: f64,
    configs: Vec<Configuration>,
    names: Vec<String>,
}

/// Per-thread scratch, grown on first use and reused (no allocation in `grad` afterwards).
#[derive(Default)]
struct Scratch {
    p: Vec<f64>,
    a1: Vec<f64>,
    u1: Vec<f64>,
    q1: Vec<f64>,
    gq: Vec<f64>,
    a2: Vec<f64>,
    ds: Vec<f64>,
    h2: Vec<f64>,
    err: Vec<f64>,
    v: Vec<f64>,
    du1: Vec<f64>,
    wm: Vec<f64>,
    w2v: Vec<f64>,
}

impl Scratch {
    fn ensure(&mut self, t: usize, d: usize) {
        let e = 2 * d;
        let f = 4 * d;
        let grow = |v: &mut Vec<f64>, len: usize| {
            if v.len() < len {
                v.resize(len, 0.0);
            }
        };
        grow(&mut self.p, e);
        grow(&mut self.a1, t * t);
        grow(&mut self.u1, t * e);
        grow(&mut self.q1, f);
        grow(&mut self.gq, f);
        grow(&mut self.a2, t);
        grow(&mut self.ds, t);
        grow(&mut self.h2, 8 * d);
        grow(&mut self.err, d);
        grow(&mut self.v, f);
        grow(&mut self.du1, t * e);
        grow(&mut self.wm, e);
        grow(&mut self.w2v, e);
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// out += a · (s I + m J) x, for D-vectors (J applied in O(D)).
fn add_im(out: &mut [f64], a: f64, s: f64, m: f64, x: &[f64]) {
    let d = x.len();
    for i in 0..d {
        out[i] += a * (s * x[i] + m * j_val(i, d) * x[j_col(i, d)]);
    }
}

/// out += a · (s I + m J)ᵀ x; (Jᵀ x)_i = −j_val(i) x_{j_col(i)}.
fn add_im_t(out: &mut [f64], a: f64, s: f64, m: f64, x: &[f64]) {
    let d = x.len();
    for i in 0..d {
        out[i] += a * (s * x[i] - m * j_val(i, d) * x[j_col(i, d)]);
    }
}

/// aᵀ J b for D-vectors.
fn dot_j(a: &[f64], b: &[f64]) -> f64 {
    let d = a.len();
    (0..d).map(|i| a[i] * j_val(i, d) * b[j_col(i, d)]).sum()
}

fn softmax(s: &mut [f64]) {
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

impl Musat19 {
    /// The 19-dim flow on the canonical orthonormal configuration(s) for N ≥ 1 pairs, the query
    /// mode, the label cue and the loss scale (> 0).
    pub fn new(n: usize, query: Query, label_position: LabelPosition, loss_scale: f64) -> Self {
        assert!(n >= 1 && loss_scale > 0.0 && loss_scale.is_finite());
        let d = 2 * n + 2;
        let queries: Vec<usize> = match query {
            Query::Last => vec![n],
            Query::Uniform => (1..=n).collect(),
        };
        let seqs: Vec<(Vec<f64>, Vec<f64>)> = queries
            .iter()
            .map(|&q| canonical_configuration(n, q, label_position))
            .collect();
        let mut s = Self::from_sequences(n, d, &seqs, loss_scale);
        s.query = query;
        s.label_position = label_position;
        s
    }

    /// The same evaluation on arbitrary sequences (dense tokens T · 2D and targets D, equal
    /// weights): L(θ) = loss_scale · mean over the sequences of ‖ŷ − y‖² with W = W(θ). Used
    /// to test the structured evaluation against the dense model on any data.
    pub fn from_sequences(
        n: usize,
        d: usize,
        seqs: &[(Vec<f64>, Vec<f64>)],
        loss_scale: f64,
    ) -> Self {
        assert!(d >= 2 && d.is_multiple_of(2) && !seqs.is_empty());
        let t = 2 * n + 1;
        let e = 2 * d;
        let weight = 1.0 / seqs.len() as f64;
        let configs = seqs
            .iter()
            .map(|(tokens, target)| {
                assert_eq!((tokens.len(), target.len()), (t * e, d));
                let mut c = Configuration {
                    start: vec![0],
                    idx: Vec::new(),
                    val: Vec::new(),
                    target: target.clone(),
                    weight,
                };
                for k in 0..t {
                    for (i, &v) in tokens[k * e..(k + 1) * e].iter().enumerate() {
                        if v != 0.0 {
                            c.idx.push(i);
                            c.val.push(v);
                        }
                    }
                    c.start.push(c.idx.len());
                }
                c
            })
            .collect();
        Musat19 {
            n,
            d,
            query: Query::Last,
            label_position: LabelPosition::Rotated,
            loss_scale,
            configs,
            names: NAMES19.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// The D of the configurations (2N + 2 for the canonical ones).
    pub fn d(&self) -> usize {
        self.d
    }

    pub fn query(&self) -> Query {
        self.query
    }

    pub fn label_position(&self) -> LabelPosition {
        self.label_position
    }

    /// Loss, and the gradient into `grad` when given.
    fn evaluate(&self, theta: &[f64], mut grad: Option<&mut [f64]>) -> f64 {
        assert_eq!(theta.len(), 19);
        if let Some(g) = grad.as_deref_mut() {
            g.fill(0.0);
        }
        let t = 2 * self.n + 1;
        SCRATCH.with(|cell| {
            let mut s = cell.borrow_mut();
            s.ensure(t, self.d);
            let mut loss = 0.0;
            for c in &self.configs {
                loss += self.configuration_pass(c, theta, &mut s, grad.as_deref_mut());
            }
            loss
        })
    }

    /// Forward (and backward when `grad` is given) over one configuration; returns its
    /// weighted, scaled loss and adds its gradient to `grad`.
    fn configuration_pass(
        &self,
        c: &Configuration,
        th: &[f64],
        s: &mut Scratch,
        grad: Option<&mut [f64]>,
    ) -> f64 {
        let d = self.d;
        let (e, f) = (2 * d, 4 * d);
        let t = 2 * self.n + 1;
        let kq = t - 1;
        let [a1c, a2c, a3c] = [th[0], th[1], th[2]];
        let b = &th[3..15]; // b[0] = β₁, ..., b[11] = β₁₂
        let gm = &th[15..19];
        let tok = |k: usize| c.start[k]..c.start[k + 1];
        let Scratch {
            p,
            a1,
            u1,
            q1,
            gq,
            a2,
            ds,
            h2,
            err,
            v,
            du1,
            wm,
            w2v,
        } = s;

        // ---- layer 1: p_k = W¹ᵀ h_k, s_kj = p_k · h_j, u¹_k = Σ_j A¹_kj h_j.
        u1[..t * e].fill(0.0);
        for k in 1..t {
            for r in tok(k) {
                let (i, x) = (c.idx[r], c.val[r]);
                if i < d {
                    p[i] += a1c * x;
                } else {
                    let ri = i - d;
                    p[i] += a2c * x;
                    p[d + j_col(ri, d)] += a3c * j_val(ri, d) * x;
                }
            }
            let row = &mut a1[k * t..k * t + k];
            for (j, sj) in row.iter_mut().enumerate() {
                *sj = tok(j).map(|r| p[c.idx[r]] * c.val[r]).sum();
            }
            softmax(row);
            for r in tok(k) {
                let i = c.idx[r];
                p[i] = 0.0;
                if i >= d {
                    p[d + j_col(i - d, d)] = 0.0;
                }
            }
            let uk = &mut u1[k * e..(k + 1) * e];
            for (j, &aj) in row.iter().enumerate() {
                for r in tok(j) {
                    uk[c.idx[r]] += aj * c.val[r];
                }
            }
        }

        // ---- layer 2 (query row): q = h¹_T, g = W²ᵀ q, s_j = g · h¹_j, u² = Σ A² h¹_j.
        let q1 = &mut q1[..f];
        q1.fill(0.0);
        for r in tok(kq) {
            q1[c.idx[r]] = c.val[r];
        }
        q1[e..].copy_from_slice(&u1[kq * e..(kq + 1) * e]);
        let (qc, qr, quc, qur) = (&q1[..d], &q1[d..e], &q1[e..e + d], &q1[e + d..f]);
        let gq = &mut gq[..f];
        gq.fill(0.0);
        {
            let (g_c, rest) = gq.split_at_mut(d);
            let (g_r, rest) = rest.split_at_mut(d);
            let (g_uc, g_ur) = rest.split_at_mut(d);
            add_im(g_c, 1.0, b[0], 0.0, qc);
            add_im(g_c, 1.0, b[2], 0.0, quc);
            add_im_t(g_r, 1.0, b[4], b[5], qr);
            add_im_t(g_r, 1.0, b[8], b[9], qur);
            add_im(g_uc, 1.0, b[1], 0.0, qc);
            add_im(g_uc, 1.0, b[3], 0.0, quc);
            add_im_t(g_ur, 1.0, b[6], b[7], qr);
            add_im_t(g_ur, 1.0, b[10], b[11], qur);
        }
        let a2 = &mut a2[..kq];
        for (j, sj) in a2.iter_mut().enumerate() {
            *sj = tok(j).map(|r| gq[c.idx[r]] * c.val[r]).sum::<f64>()
                + dot(&gq[e..], &u1[j * e..(j + 1) * e]);
        }
        softmax(a2);
        let h2 = &mut h2[..8 * d];
        h2.fill(0.0);
        h2[..f].copy_from_slice(q1);
        {
            let u2 = &mut h2[f..];
            for (j, &aj) in a2.iter().enumerate() {
                for r in tok(j) {
                    u2[c.idx[r]] += aj * c.val[r];
                }
                let (_, u2u) = u2.split_at_mut(e);
                for (o, x) in u2u.iter_mut().zip(&u1[j * e..(j + 1) * e]) {
                    *o += aj * x;
                }
            }
        }

        // ---- readout ŷ = γ₁ c + γ₂ u¹c + γ₃ u²c + γ₄ u²u¹c (slots 0, 2, 4, 6 of h²).
        let slots = [0usize, 2, 4, 6];
        let err = &mut err[..d];
        for (i, ei) in err.iter_mut().enumerate() {
            let yhat: f64 = (0..4).map(|k| gm[k] * h2[slots[k] * d + i]).sum();
            *ei = yhat - c.target[i];
        }
        let scale = self.loss_scale * c.weight;
        let loss = scale * dot(err, err);
        let Some(grad) = grad else {
            return loss;
        };

        // ---- backward. dy = dL/dŷ; dh² is γ_k dy on slots 0, 2, 4, 6.
        let dy_coef = 2.0 * scale; // dy = dy_coef · err
        for k in 0..4 {
            grad[15 + k] += dy_coef * dot(err, &h2[slots[k] * d..(slots[k] + 1) * d]);
        }
        // du² = [γ₃ dy; 0; γ₄ dy; 0] (slots u²c, u²r, u²u¹c, u²u¹r).
        let ds = &mut ds[..kq];
        let mut mean = 0.0;
        for (j, dsj) in ds.iter_mut().enumerate() {
            let content: f64 = tok(j)
                .filter(|&r| c.idx[r] < d)
                .map(|r| err[c.idx[r]] * c.val[r])
                .sum();
            *dsj = dy_coef * (gm[2] * content + gm[3] * dot(err, &u1[j * e..j * e + d]));
            mean += a2[j] * *dsj;
        }
        let v = &mut v[..f];
        v.fill(0.0);
        for j in 0..kq {
            let sj = a2[j] * (ds[j] - mean); // dL/ds²_j
            ds[j] = sj;
            for r in tok(j) {
                v[c.idx[r]] += sj * c.val[r];
            }
            for (o, x) in v[e..].iter_mut().zip(&u1[j * e..(j + 1) * e]) {
                *o += sj * x;
            }
            // dL/du¹_j = A²_j du²[u¹ part] + ds²_j g[u¹ part]; du²[u¹ part] = [γ₄ dy; 0].
            let dj = &mut du1[j * e..(j + 1) * e];
            for i in 0..d {
                dj[i] = a2[j] * dy_coef * gm[3] * err[i] + sj * gq[e + i];
            }
            for i in d..e {
                dj[i] = sj * gq[e + i];
            }
        }
        let (vc, vr, vuc, vur) = (&v[..d], &v[d..e], &v[e..e + d], &v[e + d..f]);
        // ⟨q vᵀ, B_k⟩ = q_rowslotᵀ (I or J) v_colslot
        let gb = &mut grad[3..15];
        gb[0] += dot(qc, vc);
        gb[1] += dot(qc, vuc);
        gb[2] += dot(quc, vc);
        gb[3] += dot(quc, vuc);
        gb[4] += dot(qr, vr);
        gb[5] += dot_j(qr, vr);
        gb[6] += dot(qr, vur);
        gb[7] += dot_j(qr, vur);
        gb[8] += dot(qur, vr);
        gb[9] += dot_j(qur, vr);
        gb[10] += dot(qur, vur);
        gb[11] += dot_j(qur, vur);
        // du¹ of the query: dh²[u¹ of h¹_T] + (W² v)[u¹ slots]; dh²[u¹c] = γ₂ dy, dh²[u¹r] = 0.
        let w2v = &mut w2v[..e];
        w2v.fill(0.0);
        {
            let (wc, wr) = w2v.split_at_mut(d);
            add_im(wc, 1.0, b[2], 0.0, vc);
            add_im(wc, 1.0, b[3], 0.0, vuc);
            add_im(wr, 1.0, b[8], b[9], vr);
            add_im(wr, 1.0, b[10], b[11], vur);
        }
        let dq = &mut du1[kq * e..(kq + 1) * e];
        for i in 0..d {
            dq[i] = dy_coef * gm[1] * err[i] + w2v[i];
        }
        dq[d..].copy_from_slice(&w2v[d..]);

        // ---- layer 1 backward: ds¹_kj = A¹(du¹_k · h_j − mean), wm_k = Σ_j ds¹_kj h_j,
        // ⟨h_k wm_kᵀ, B⟩ for α₁ (c, c), α₂ (r, r), α₃ (r, J r).
        let wm = &mut wm[..e];
        for k in 1..t {
            let duk = &du1[k * e..(k + 1) * e];
            let ak = &a1[k * t..k * t + k];
            let dsk = &mut ds[..k];
            let mut mean = 0.0;
            for (j, dsj) in dsk.iter_mut().enumerate() {
                *dsj = tok(j).map(|r| duk[c.idx[r]] * c.val[r]).sum();
                mean += ak[j] * *dsj;
            }
            wm.fill(0.0);
            for j in 0..k {
                let sj = ak[j] * (dsk[j] - mean);
                for r in tok(j) {
                    wm[c.idx[r]] += sj * c.val[r];
                }
            }
            for r in tok(k) {
                let (i, x) = (c.idx[r], c.val[r]);
                if i < d {
                    grad[0] += x * wm[i];
                } else {
                    let ri = i - d;
                    grad[1] += x * wm[i];
                    grad[2] += x * j_val(ri, d) * wm[d + j_col(ri, d)];
                }
            }
        }
        loss
    }
}

impl GradientFlow for Musat19 {
    fn names(&self) -> &[String] {
        &self.names
    }

    fn loss(&self, theta: &[f64]) -> f64 {
        self.evaluate(theta, None)
    }

    fn grad(&self, theta: &[f64], out: &mut [f64]) {
        self.evaluate(theta, Some(out));
    }
}

#[cfg(test)]
mod tests;
