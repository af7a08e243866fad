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
//! ## Evaluation in token coordinates
//!
//! Every block of W(θ) is a combination of I and J, so every bilinear form the forward pass of
//! §4 computes between tokens (h⁰_k = [c_k; r_k]) is a combination of three T × T Gram matrices
//! of the input, fixed once the configuration is:
//! ```text
//! C_kj = c_k · c_j,   P_kj = r_k · r_j,   PJ_kj = r_kᵀ J r_j.
//! ```
//! Every hidden vector is a combination of tokens: u¹_k = Σ_j A¹_kj h⁰_j (the row a_k of A¹),
//! and with Q the query token, u = a_Q C, a_Q P, a_Q PJ (vectors over tokens):
//! ```text
//! layer 1:  s¹_kj = α₁ C_kj + α₂ P_kj + α₃ PJ_kj  (j < k),   a_k = softmax_j s¹_k·
//! layer 2:  s²_j  = z_j + ⟨a_j, y⟩  (j < Q),   A² = softmax s²,  where
//!           z = β₁ C_Q + β₅ P_Q + β₆ PJ_Q + β₃ a_Q C + β₉ a_Q P + β₁₀ a_Q PJ,
//!           y = β₂ C_Q + β₇ P_Q + β₈ PJ_Q + β₄ a_Q C + β₁₁ a_Q P + β₁₂ a_Q PJ
//! readout:  ŷ = Σ_i w_i c_i,   w = γ₁ e_Q + γ₂ a_Q + γ₃ A² + γ₄ Σ_j A²_j a_j
//! ```
//! (C_Q is row Q of C; the β terms are the sixteen D × D blocks of W² in the order of
//! theory/musat.md §5). The backward pass runs through the same quantities; the loss
//! ‖ŷ − y_q‖² and ∂L/∂w_i = 2 c_i · (ŷ − y_q) use the content vectors themselves (no
//! cancellation when the loss is small). The Gram matrices are stored sparse (the canonical
//! configuration has O(T) nonzeros), and a layer-1 key whose three Gram entries are all 0 has
//! score exactly 0; so one evaluation costs O(T²) = O(N²) with a handful of exponentials per
//! configuration: O(N²) for query `last`, O(N³) for `uniform`, independent of the D of any
//! full model. The formulas hold for any input (not only one-hot tokens); they are tested
//! against the dense full model's backward pass projected onto the basis, on the canonical
//! configurations, on Haar samples and on arbitrary dense data, and against central
//! differences.

use crate::flow::GradientFlow;
use crate::model::data::{LabelPosition, canonical_configuration};
use crate::model::subspace::{NAMES19, j_col, j_val};
use crate::theory::musat3::Query;
use std::cell::RefCell;

/// A sparse vector: (index, value) pairs.
type Sparse = Vec<(usize, f64)>;

/// One Gram entry pair (i, j) of tokens before the query, with (C, P, PJ)_ij.
#[derive(Debug, Clone, Copy)]
struct GramEntry {
    i: usize,
    j: usize,
    c: f64,
    p: f64,
    pj: f64,
}

/// One input sequence, reduced to what the evaluation needs (all θ-independent).
#[derive(Debug, Clone)]
struct Configuration {
    /// Layer-1 keys with a nonzero Gram entry: row k's are `special[special_start[k]..
    /// special_start[k + 1]]`, as (key j, C_kj, P_kj, PJ_kj); every other key j < k of row k
    /// has score exactly 0.
    special_start: Vec<usize>,
    special: Vec<GramEntry>,
    /// Nonzero (C, P, PJ)_ij for i, j < Q (the products a_Q C, a_Q P, a_Q PJ).
    gram: Vec<GramEntry>,
    /// Row Q of C, P, PJ over the keys j < Q.
    c_q: Vec<f64>,
    p_q: Vec<f64>,
    pj_q: Vec<f64>,
    /// Content vectors c_0..c_Q (sparse) and the target.
    contents: Vec<Sparse>,
    target: Sparse,
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
    /// The largest number of special layer-1 keys of a configuration (scratch size).
    max_specials: usize,
    names: Vec<String>,
}

/// Per-thread scratch, grown on first use and reused (no allocation in `grad` afterwards).
#[derive(Default)]
struct Scratch {
    /// A¹ row k: the weight of each key with score 0, and of each special key (aligned with
    /// `Configuration::special`); row Q in full.
    base: Vec<f64>,
    sw: Vec<f64>,
    aq: Vec<f64>,
    /// Exclusive prefix sums (T + 1).
    pre: Vec<f64>,
    a2: Vec<f64>,
    uc: Vec<f64>,
    up: Vec<f64>,
    uj: Vec<f64>,
    z: Vec<f64>,
    y: Vec<f64>,
    ay: Vec<f64>,
    v: Vec<f64>,
    w: Vec<f64>,
    r: Vec<f64>,
    gw: Vec<f64>,
    h: Vec<f64>,
    ds: Vec<f64>,
    big_y: Vec<f64>,
    gq: Vec<f64>,
}

impl Scratch {
    fn ensure(&mut self, t: usize, d: usize, specials: usize) {
        let grow = |v: &mut Vec<f64>, len: usize| {
            if v.len() < len {
                v.resize(len, 0.0);
            }
        };
        grow(&mut self.sw, specials);
        grow(&mut self.pre, t + 1);
        for v in [
            &mut self.base,
            &mut self.aq,
            &mut self.a2,
            &mut self.uc,
            &mut self.up,
            &mut self.uj,
            &mut self.z,
            &mut self.y,
            &mut self.ay,
            &mut self.v,
            &mut self.w,
            &mut self.gw,
            &mut self.h,
            &mut self.ds,
            &mut self.big_y,
            &mut self.gq,
        ] {
            grow(v, t);
        }
        grow(&mut self.r, d);
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

#[inline(always)]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// e^x, remembering the last argument: the rows of layer 1 share their few distinct scores.
#[inline(always)]
fn exp_cached(x: f64, memo: &mut (f64, f64)) -> f64 {
    if x == 0.0 {
        1.0
    } else if x == memo.0 {
        memo.1
    } else {
        let e = x.exp();
        *memo = (x, e);
        e
    }
}

/// r_aᵀ J r_b for position vectors of even length.
fn dot_j(a: &[f64], b: &[f64]) -> f64 {
    let d = a.len();
    (0..d).map(|i| a[i] * j_val(i, d) * b[j_col(i, d)]).sum()
}

impl Configuration {
    /// From dense tokens (T · 2D, token k = [c_k; r_k]) and the target (D).
    fn new(tokens: &[f64], target: &[f64], t: usize, d: usize, weight: f64) -> Self {
        let e = 2 * d;
        let c = |k: usize| &tokens[k * e..k * e + d];
        let r = |k: usize| &tokens[k * e + d..(k + 1) * e];
        let entry = |i: usize, j: usize| GramEntry {
            i,
            j,
            c: dot(c(i), c(j)),
            p: dot(r(i), r(j)),
            pj: dot_j(r(i), r(j)),
        };
        let nonzero = |g: &GramEntry| g.c != 0.0 || g.p != 0.0 || g.pj != 0.0;
        let q = t - 1;
        let mut special_start = vec![0];
        let mut special = Vec::new();
        for k in 0..t {
            special.extend((0..k).map(|j| entry(k, j)).filter(nonzero));
            special_start.push(special.len());
        }
        let gram = (0..q)
            .flat_map(|i| (0..q).map(move |j| (i, j)))
            .map(|(i, j)| entry(i, j))
            .filter(nonzero)
            .collect();
        let row_q: Vec<GramEntry> = (0..q).map(|j| entry(q, j)).collect();
        let sparse = |v: &[f64]| -> Sparse {
            v.iter()
                .enumerate()
                .filter(|(_, x)| **x != 0.0)
                .map(|(i, &x)| (i, x))
                .collect()
        };
        Configuration {
            special_start,
            special,
            gram,
            c_q: row_q.iter().map(|g| g.c).collect(),
            p_q: row_q.iter().map(|g| g.p).collect(),
            pj_q: row_q.iter().map(|g| g.pj).collect(),
            contents: (0..t).map(|k| sparse(c(k))).collect(),
            target: sparse(target),
            weight,
        }
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
        let configs: Vec<Configuration> = seqs
            .iter()
            .map(|(tokens, target)| {
                assert_eq!((tokens.len(), target.len()), (t * e, d));
                Configuration::new(tokens, target, t, d, weight)
            })
            .collect();
        Musat19 {
            max_specials: configs.iter().map(|c| c.special.len()).max().unwrap_or(0),
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
            s.ensure(t, self.d, self.max_specials);
            let mut loss = 0.0;
            for c in &self.configs {
                loss += self.configuration_pass(c, theta, &mut s, grad.as_deref_mut());
            }
            loss
        })
    }

    /// Forward (and backward when `grad` is given) over one configuration in token
    /// coordinates (module doc); returns its weighted, scaled loss and adds its gradient to
    /// `grad`.
    ///
    /// Row k of A¹ is a common weight `base_k` on every key with score 0 plus the weights of
    /// its special keys, so ⟨a_k, x⟩ = base_k Σ_{i<k} x_i + Σ_special (a_kj − base_k) x_j and
    /// Σ_k c_k a_k is a suffix sum plus the special corrections: O(T) per product instead of
    /// O(T²) on the canonical configurations.
    fn configuration_pass(
        &self,
        c: &Configuration,
        th: &[f64],
        s: &mut Scratch,
        grad: Option<&mut [f64]>,
    ) -> f64 {
        let t = 2 * self.n + 1;
        let q = t - 1; // the query token; the keys of layer 2 are 0..q
        let [al1, al2, al3] = [th[0], th[1], th[2]];
        let b = &th[3..15]; // b[0] = β₁, ..., b[11] = β₁₂
        let gm = &th[15..19];
        let Scratch {
            base,
            sw,
            aq,
            pre,
            a2,
            uc,
            up,
            uj,
            z,
            y,
            ay,
            v,
            w,
            r,
            gw,
            h,
            ds,
            big_y,
            gq,
        } = s;
        let range = |k: usize| c.special_start[k]..c.special_start[k + 1];

        // ---- layer 1: rows k = 1..=q; keys without a Gram entry score exactly 0.
        let mut memo = (f64::NAN, f64::NAN);
        for k in 1..=q {
            let sp = &c.special[range(k)];
            let score = |g: &GramEntry| al1 * g.c + al2 * g.p + al3 * g.pj;
            let zeros = k - sp.len();
            let mut m = if zeros > 0 { 0.0 } else { f64::NEG_INFINITY };
            for g in sp {
                m = m.max(score(g));
            }
            let e0 = if zeros > 0 {
                exp_cached(-m, &mut memo)
            } else {
                0.0
            };
            let mut total = zeros as f64 * e0;
            let swk = &mut sw[range(k)];
            for (x, g) in swk.iter_mut().zip(sp) {
                *x = exp_cached(score(g) - m, &mut memo);
                total += *x;
            }
            let inv = 1.0 / total;
            for x in swk.iter_mut() {
                *x *= inv;
            }
            base[k] = e0 * inv;
        }
        // ⟨a_k, x⟩ from the exclusive prefix sums `pre` of x.
        let row_dot = |k: usize, x: &[f64], pre: &[f64], sw: &[f64], base: &[f64]| -> f64 {
            let mut acc = base[k] * pre[k];
            for (g, &a) in c.special[range(k)].iter().zip(&sw[range(k)]) {
                acc += (a - base[k]) * x[g.j];
            }
            acc
        };
        // out = Σ_{k=1}^{q−1} coef_k a_k (a vector over the tokens before the query).
        let combine = |coef: &[f64], out: &mut [f64], sw: &[f64], base: &[f64]| {
            let mut suffix = 0.0;
            for i in (0..q).rev() {
                out[i] = suffix;
                if i >= 1 {
                    suffix += coef[i] * base[i];
                }
            }
            for k in 1..q {
                for (g, &a) in c.special[range(k)].iter().zip(&sw[range(k)]) {
                    out[g.j] += coef[k] * (a - base[k]);
                }
            }
        };
        let prefix = |x: &[f64], pre: &mut [f64]| {
            let mut acc = 0.0;
            for (p, &xi) in pre.iter_mut().zip(x) {
                *p = acc;
                acc += xi;
            }
            pre[x.len()] = acc;
        };
        let aq = &mut aq[..q];
        aq.fill(base[q]);
        for (g, &a) in c.special[range(q)].iter().zip(&sw[range(q)]) {
            aq[g.j] = a;
        }

        // ---- layer 2 (query row): u = a_Q C, a_Q P, a_Q PJ; z, y; s²_j = z_j + ⟨a_j, y⟩.
        let (uc, up, uj) = (&mut uc[..q], &mut up[..q], &mut uj[..q]);
        uc.fill(0.0);
        up.fill(0.0);
        uj.fill(0.0);
        for g in &c.gram {
            let a = aq[g.i];
            uc[g.j] += a * g.c;
            up[g.j] += a * g.p;
            uj[g.j] += a * g.pj;
        }
        let (z, y) = (&mut z[..q], &mut y[..q]);
        for j in 0..q {
            z[j] = b[0] * c.c_q[j]
                + b[4] * c.p_q[j]
                + b[5] * c.pj_q[j]
                + b[2] * uc[j]
                + b[8] * up[j]
                + b[9] * uj[j];
            y[j] = b[1] * c.c_q[j]
                + b[6] * c.p_q[j]
                + b[7] * c.pj_q[j]
                + b[3] * uc[j]
                + b[10] * up[j]
                + b[11] * uj[j];
        }
        let (a2, ay) = (&mut a2[..q], &mut ay[..q]);
        prefix(y, pre);
        ay[0] = 0.0;
        for j in 1..q {
            ay[j] = row_dot(j, y, pre, sw, base);
        }
        let mut m = f64::NEG_INFINITY;
        for j in 0..q {
            a2[j] = z[j] + ay[j];
            m = m.max(a2[j]);
        }
        let mut total = 0.0;
        for x in a2.iter_mut() {
            *x = (*x - m).exp();
            total += *x;
        }
        let inv = 1.0 / total;
        for x in a2.iter_mut() {
            *x *= inv;
        }

        // ---- readout: w = γ₁ e_Q + γ₂ a_Q + γ₃ A² + γ₄ Σ_j A²_j a_j; ŷ = Σ_i w_i c_i.
        let v = &mut v[..q];
        combine(a2, v, sw, base);
        let w = &mut w[..t];
        for i in 0..q {
            w[i] = gm[1] * aq[i] + gm[2] * a2[i] + gm[3] * v[i];
        }
        w[q] = gm[0];
        let r = &mut r[..self.d];
        r.fill(0.0);
        for (wi, ci) in w.iter().zip(&c.contents) {
            for &(idx, x) in ci {
                r[idx] += wi * x;
            }
        }
        for &(idx, x) in &c.target {
            r[idx] -= x;
        }
        let scale = self.loss_scale * c.weight;
        let loss = scale * dot(r, r);
        let Some(grad) = grad else {
            return loss;
        };

        // ---- backward. ∂L/∂w_i = 2·scale·c_i · (ŷ − y).
        let dy_coef = 2.0 * scale;
        let gw = &mut gw[..t];
        for (g, ci) in gw.iter_mut().zip(&c.contents) {
            *g = dy_coef * ci.iter().map(|&(idx, x)| x * r[idx]).sum::<f64>();
        }
        grad[15] += gw[q];
        grad[16] += dot(&gw[..q], aq);
        grad[17] += dot(&gw[..q], a2);
        grad[18] += dot(&gw[..q], v);
        // A²: ∂L/∂A²_j = γ₃ ∂L/∂w_j + γ₄ ⟨∂L/∂w, a_j⟩; softmax backward to ds²_j.
        let (h, ds) = (&mut h[..q], &mut ds[..q]);
        prefix(&gw[..q], pre);
        h[0] = 0.0;
        for j in 1..q {
            h[j] = row_dot(j, gw, pre, sw, base);
        }
        let mut mean = 0.0;
        for j in 0..q {
            ds[j] = gm[2] * gw[j] + gm[3] * h[j];
            mean += a2[j] * ds[j];
        }
        for j in 0..q {
            ds[j] = a2[j] * (ds[j] - mean);
        }
        // ∂L/∂z = ds, ∂L/∂y = Y = Σ_j ds_j a_j.
        let big_y = &mut big_y[..q];
        combine(ds, big_y, sw, base);
        let gb = &mut grad[3..15];
        gb[0] += dot(ds, &c.c_q);
        gb[4] += dot(ds, &c.p_q);
        gb[5] += dot(ds, &c.pj_q);
        gb[2] += dot(ds, uc);
        gb[8] += dot(ds, up);
        gb[9] += dot(ds, uj);
        gb[1] += dot(big_y, &c.c_q);
        gb[6] += dot(big_y, &c.p_q);
        gb[7] += dot(big_y, &c.pj_q);
        gb[3] += dot(big_y, uc);
        gb[10] += dot(big_y, up);
        gb[11] += dot(big_y, uj);
        // ∂L/∂a_Q = γ₂ ∂L/∂w + (β₃ C + β₉ P + β₁₀ PJ) ds + (β₄ C + β₁₁ P + β₁₂ PJ) Y.
        let gq = &mut gq[..q];
        for i in 0..q {
            gq[i] = gm[1] * gw[i];
        }
        for g in &c.gram {
            gq[g.i] += (b[2] * g.c + b[8] * g.p + b[9] * g.pj) * ds[g.j]
                + (b[3] * g.c + b[10] * g.p + b[11] * g.pj) * big_y[g.j];
        }

        // ---- layer 1 backward, only where a Gram entry (hence an α) enters the score:
        // ds¹_kj = a_kj (G_kj − ⟨a_k, G_k⟩) with G_k = ∂L/∂a_k.
        let mut add = |g: &GramEntry, d1: f64| {
            grad[0] += d1 * g.c;
            grad[1] += d1 * g.p;
            grad[2] += d1 * g.pj;
        };
        let mu = dot(aq, gq);
        for g in &c.special[range(q)] {
            add(g, aq[g.j] * (gq[g.j] - mu));
        }
        // rows j < Q: G_j = γ₄ A²_j ∂L/∂w + ds_j y, so ⟨a_j, G_j⟩ = γ₄ A²_j h_j + ds_j ⟨a_j, y⟩.
        for j in 1..q {
            let cw = gm[3] * a2[j];
            let mu = cw * h[j] + ds[j] * ay[j];
            for (g, &a) in c.special[range(j)].iter().zip(&sw[range(j)]) {
                add(g, a * (cw * gw[g.j] + ds[j] * y[g.j] - mu));
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
