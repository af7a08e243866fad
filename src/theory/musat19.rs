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
use crate::model::disentangled::exp_shifted;
use crate::model::subspace::{NAMES19, j_col, j_val};
use crate::theory::musat3::Query;
use std::cell::RefCell;
use std::collections::BTreeMap;

/// A sparse vector: (index, value) pairs.
type Sparse = Vec<(usize, f64)>;

/// A sparse matrix over the tokens before the query: (row i, column j, value).
type SparseMatrix = Vec<(usize, usize, f64)>;

/// One input sequence, reduced to what the evaluation needs (all θ-independent).
#[derive(Debug, Clone)]
struct Configuration {
    /// Layer-1 row k (k = 1..=Q) has `zeros[k]` keys whose three Gram entries are all 0 (score
    /// exactly 0) and the special keys `sp_key[sp_start[k]..sp_start[k + 1]]` with their
    /// (C, P, PJ) entries.
    zeros: Vec<f64>,
    sp_start: Vec<usize>,
    sp_key: Vec<usize>,
    sp_c: Vec<f64>,
    sp_p: Vec<f64>,
    sp_pj: Vec<f64>,
    /// Row k of every special key (`sp_row[i]` for key `sp_key[i]`).
    sp_row: Vec<usize>,
    /// C, P, PJ among the tokens before the query (the products a_Q C, a_Q P, a_Q PJ): the
    /// diagonals (dense, length Q) and the nonzero entries off the diagonal.
    diag: [Vec<f64>; 3],
    gram_c: SparseMatrix,
    gram_p: SparseMatrix,
    gram_pj: SparseMatrix,
    /// Row Q of C, P, PJ over the keys j < Q.
    c_q: Sparse,
    p_q: Sparse,
    pj_q: Sparse,
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
    /// A¹ row k: the weight of each key with score 0 (`base[k]`) and of each special key
    /// (aligned with `Configuration::sp_key`); row Q in full (`aq`).
    base: Vec<f64>,
    sw: Vec<f64>,
    aq: Vec<f64>,
    /// Exclusive prefix sums (T + 1).
    pre: Vec<f64>,
    a2: Vec<f64>,
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
        grow(&mut self.r, d);
        for v in [
            &mut self.base,
            &mut self.aq,
            &mut self.a2,
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
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

#[inline(always)]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Σ v x_j over a sparse vector (j, v).
#[inline(always)]
fn sparse_dot(sp: &[(usize, f64)], x: &[f64]) -> f64 {
    sp.iter().map(|&(j, v)| v * x[j]).sum()
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

impl Configuration {
    /// From dense tokens (T · 2D, token k = [c_k; r_k]) and the target (D).
    ///
    /// The Gram entries are accumulated over the tokens' nonzeros (tokens sharing an index),
    /// so a configuration of one-hot tokens costs O(T) here, dense data O(T² D).
    fn new(tokens: &[f64], target: &[f64], t: usize, d: usize, weight: f64) -> Self {
        let e = 2 * d;
        let sparse = |v: &[f64]| -> Sparse {
            v.iter()
                .enumerate()
                .filter(|(_, x)| **x != 0.0)
                .map(|(i, &x)| (i, x))
                .collect()
        };
        let contents: Vec<Sparse> = (0..t).map(|k| sparse(&tokens[k * e..k * e + d])).collect();
        let positions: Vec<Sparse> = (0..t)
            .map(|k| sparse(&tokens[k * e + d..(k + 1) * e]))
            .collect();
        // tokens holding each index: (token, value)
        let holders = |vs: &[Sparse]| {
            let mut by = vec![Vec::new(); d];
            for (k, v) in vs.iter().enumerate() {
                for &(i, x) in v {
                    by[i].push((k, x));
                }
            }
            by
        };
        let (by_c, by_p) = (holders(&contents), holders(&positions));
        // (C, P, PJ)_kj for every pair of tokens with a nonzero entry, ordered by (k, j)
        let mut gram: BTreeMap<(usize, usize), [f64; 3]> = BTreeMap::new();
        for k in 0..t {
            for &(i, x) in &contents[k] {
                for &(j, y) in &by_c[i] {
                    gram.entry((k, j)).or_default()[0] += x * y;
                }
            }
            for &(i, x) in &positions[k] {
                for &(j, y) in &by_p[i] {
                    gram.entry((k, j)).or_default()[1] += x * y;
                }
                // r_kᵀ J r_j = Σ_i r_k[i] J_{i, j_col(i)} r_j[j_col(i)]
                let (col, sign) = (j_col(i, d), j_val(i, d));
                for &(j, y) in &by_p[col] {
                    gram.entry((k, j)).or_default()[2] += x * sign * y;
                }
            }
        }
        let q = t - 1;
        let mut cf = Configuration {
            zeros: vec![0.0; t],
            sp_start: vec![0; t + 1],
            sp_row: Vec::new(),
            sp_key: Vec::new(),
            sp_c: Vec::new(),
            sp_p: Vec::new(),
            sp_pj: Vec::new(),
            diag: [vec![0.0; q], vec![0.0; q], vec![0.0; q]],
            gram_c: Vec::new(),
            gram_p: Vec::new(),
            gram_pj: Vec::new(),
            c_q: Vec::new(),
            p_q: Vec::new(),
            pj_q: Vec::new(),
            contents,
            target: sparse(target),
            weight,
        };
        for (&(k, j), &g) in &gram {
            if g == [0.0; 3] {
                continue;
            }
            if j < k {
                // a special layer-1 key (rows are visited in order)
                cf.sp_row.push(k);
                cf.sp_key.push(j);
                cf.sp_c.push(g[0]);
                cf.sp_p.push(g[1]);
                cf.sp_pj.push(g[2]);
            }
            if k < q && j < q {
                if k == j {
                    for (dg, v) in cf.diag.iter_mut().zip(g) {
                        dg[k] = v;
                    }
                } else {
                    for (list, v) in [&mut cf.gram_c, &mut cf.gram_p, &mut cf.gram_pj]
                        .into_iter()
                        .zip(g)
                    {
                        if v != 0.0 {
                            list.push((k, j, v));
                        }
                    }
                }
            } else if k == q && j < q {
                for (list, v) in [&mut cf.c_q, &mut cf.p_q, &mut cf.pj_q].into_iter().zip(g) {
                    if v != 0.0 {
                        list.push((j, v));
                    }
                }
            }
        }
        for k in 0..t {
            let end = cf.sp_row.partition_point(|&r| r <= k);
            cf.sp_start[k + 1] = end;
            cf.zeros[k] = (k - (end - cf.sp_start[k])) as f64;
        }
        cf
    }
}

/// The rows 1..=Q of A¹ as the evaluation holds them: a common weight `base[k]` on the keys
/// with score 0, and the weights `sw` of the special keys `key` (in rows `row`, ascending).
struct Rows<'a> {
    base: &'a [f64],
    sw: &'a [f64],
    row: &'a [usize],
    key: &'a [usize],
}

impl Rows<'_> {
    /// out[k] = ⟨a_k, x⟩ for k = 1..q−1 (out[0] = 0: token 0 has no keys), from the exclusive
    /// prefix sums of x (written to `pre`).
    #[inline(always)]
    fn dots(&self, q: usize, x: &[f64], out: &mut [f64], pre: &mut [f64]) {
        let mut acc = 0.0;
        for ((p, o), (&xi, &bk)) in pre
            .iter_mut()
            .zip(out.iter_mut())
            .zip(x[..q].iter().zip(self.base))
        {
            *p = acc;
            *o = bk * acc;
            acc += xi;
        }
        out[0] = 0.0;
        for ((&k, &j), &a) in self.row.iter().zip(self.key).zip(self.sw) {
            if k >= q {
                break;
            }
            out[k] += (a - self.base[k]) * x[j];
        }
    }

    /// out = Σ_{k=1}^{q−1} coef_k a_k: suffix sums of coef_k base_k plus the special keys.
    #[inline(always)]
    fn combine(&self, q: usize, coef: &[f64], out: &mut [f64]) {
        let mut suffix = 0.0;
        for i in (1..q).rev() {
            out[i] = suffix;
            suffix += coef[i] * self.base[i];
        }
        out[0] = suffix;
        for ((&k, &j), &a) in self.row.iter().zip(self.key).zip(self.sw) {
            if k >= q {
                break;
            }
            out[j] += coef[k] * (a - self.base[k]);
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
        let t = 2 * n + 1;
        let weight = 1.0 / queries.len() as f64;
        // one configuration at a time: the dense tokens are O(N²)
        let configs = queries
            .iter()
            .map(|&q| {
                let (tokens, target) = canonical_configuration(n, q, label_position);
                Configuration::new(&tokens, &target, t, d, weight)
            })
            .collect();
        let mut s = Self::from_configurations(n, d, configs, loss_scale);
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
        Self::from_configurations(n, d, configs, loss_scale)
    }

    fn from_configurations(
        n: usize,
        d: usize,
        configs: Vec<Configuration>,
        loss_scale: f64,
    ) -> Self {
        Musat19 {
            max_specials: configs.iter().map(|c| c.sp_key.len()).max().unwrap_or(0),
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
        let (base, aq, pre) = (&mut base[..t], &mut aq[..q], &mut pre[..t]);
        let (a2, z, y, ay, v) = (
            &mut a2[..q],
            &mut z[..q],
            &mut y[..q],
            &mut ay[..q],
            &mut v[..q],
        );
        let sw = &mut sw[..c.sp_key.len()];
        let sp = c.sp_start.as_slice();
        let (key, sc, sp_p, spj) = (&c.sp_key, &c.sp_c, &c.sp_p, &c.sp_pj);

        // ---- layer 1: rows k = 1..=q; keys without a Gram entry score exactly 0.
        let mut memo = (f64::NAN, f64::NAN);
        for k in 1..=q {
            let range = sp[k]..sp[k + 1];
            let zeros = c.zeros[k];
            let mut m = if zeros > 0.0 { 0.0 } else { f64::NEG_INFINITY };
            for i in range.clone() {
                sw[i] = al1 * sc[i] + al2 * sp_p[i] + al3 * spj[i];
                m = m.max(sw[i]);
            }
            let e0 = if zeros > 0.0 {
                exp_cached(-m, &mut memo)
            } else {
                0.0
            };
            let mut total = zeros * e0;
            for x in &mut sw[range.clone()] {
                *x = exp_cached(*x - m, &mut memo);
                total += *x;
            }
            let inv = 1.0 / total;
            for x in &mut sw[range] {
                *x *= inv;
            }
            base[k] = e0 * inv;
        }
        aq.fill(base[q]);
        for i in sp[q]..sp[q + 1] {
            aq[key[i]] = sw[i];
        }
        let rows = Rows {
            base,
            sw,
            row: &c.sp_row,
            key,
        };
        // ---- layer 2 (query row): z, y; s²_j = z_j + ⟨a_j, y⟩.
        z.fill(0.0);
        y.fill(0.0);
        for (list, bz, by) in [
            (&c.c_q, b[0], b[1]),
            (&c.p_q, b[4], b[6]),
            (&c.pj_q, b[5], b[7]),
        ] {
            for &(j, val) in list {
                z[j] += bz * val;
                y[j] += by * val;
            }
        }
        let [dc, dp, dpj] = &c.diag;
        for (((((zj, yj), a), x), p), pj) in z
            .iter_mut()
            .zip(y.iter_mut())
            .zip(aq.iter())
            .zip(dc)
            .zip(dp)
            .zip(dpj)
        {
            *zj += a * (b[2] * x + b[8] * p + b[9] * pj);
            *yj += a * (b[3] * x + b[10] * p + b[11] * pj);
        }
        for (list, bz, by) in [
            (&c.gram_c, b[2], b[3]),
            (&c.gram_p, b[8], b[10]),
            (&c.gram_pj, b[9], b[11]),
        ] {
            for &(i, j, val) in list {
                let u = aq[i] * val;
                z[j] += bz * u;
                y[j] += by * u;
            }
        }
        rows.dots(q, y, ay, pre);
        let mut m = f64::NEG_INFINITY;
        for ((a, zj), yj) in a2.iter_mut().zip(z.iter()).zip(ay.iter()) {
            *a = zj + yj;
            m = m.max(*a);
        }
        let mut total = 0.0;
        for x in a2.iter_mut() {
            *x = exp_shifted(*x - m);
            total += *x;
        }
        let inv = 1.0 / total;
        for x in a2.iter_mut() {
            *x *= inv;
        }

        // ---- readout: w = γ₁ e_Q + γ₂ a_Q + γ₃ A² + γ₄ Σ_j A²_j a_j; ŷ = Σ_i w_i c_i.
        rows.combine(q, a2, v);
        let w = &mut w[..t];
        for (((wi, a), b2), vi) in w.iter_mut().zip(aq.iter()).zip(a2.iter()).zip(v.iter()) {
            *wi = gm[1] * a + gm[2] * b2 + gm[3] * vi;
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
            *g = dy_coef * sparse_dot(ci, r);
        }
        grad[15] += gw[q];
        let gwk = &gw[..q];
        grad[16] += dot(gwk, aq);
        grad[17] += dot(gwk, a2);
        grad[18] += dot(gwk, v);
        // A²: ∂L/∂A²_j = γ₃ ∂L/∂w_j + γ₄ ⟨∂L/∂w, a_j⟩; softmax backward to ds²_j.
        let (h, ds) = (&mut h[..q], &mut ds[..q]);
        rows.dots(q, gwk, h, pre);
        let mut mean = 0.0;
        for (((d, g), hj), a) in ds.iter_mut().zip(gwk).zip(h.iter()).zip(a2.iter()) {
            *d = gm[2] * g + gm[3] * hj;
            mean += a * *d;
        }
        for (d, a) in ds.iter_mut().zip(a2.iter()) {
            *d = a * (*d - mean);
        }
        // ∂L/∂z = ds, ∂L/∂y = Y = Σ_j ds_j a_j.
        let big_y = &mut big_y[..q];
        rows.combine(q, ds, big_y);
        let gb = &mut grad[3..15];
        for (list, iz, iy) in [(&c.c_q, 0, 1), (&c.p_q, 4, 6), (&c.pj_q, 5, 7)] {
            gb[iz] += sparse_dot(list, ds);
            gb[iy] += sparse_dot(list, big_y);
        }
        // ∂L/∂a_Q = γ₂ ∂L/∂w + (β₃ C + β₉ P + β₁₀ PJ) ds + (β₄ C + β₁₁ P + β₁₂ PJ) Y.
        let gq = &mut gq[..q];
        for (g, x) in gq.iter_mut().zip(gwk) {
            *g = gm[1] * x;
        }
        for ((dg, iz), iy) in c.diag.iter().zip([2, 8, 9]).zip([3, 10, 11]) {
            let (bz, by) = (b[iz], b[iy]);
            let (mut sz, mut sy) = (0.0, 0.0);
            for ((((g, &a), &val), &d), &yy) in gq
                .iter_mut()
                .zip(aq.iter())
                .zip(dg)
                .zip(ds.iter())
                .zip(big_y.iter())
            {
                let u = a * val;
                sz += u * d;
                sy += u * yy;
                *g += val * (bz * d + by * yy);
            }
            gb[iz] += sz;
            gb[iy] += sy;
        }
        for (list, iz, iy) in [(&c.gram_c, 2, 3), (&c.gram_p, 8, 10), (&c.gram_pj, 9, 11)] {
            let (bz, by) = (b[iz], b[iy]);
            let (mut sz, mut sy) = (0.0, 0.0);
            for &(i, j, val) in list {
                let u = aq[i] * val;
                sz += u * ds[j];
                sy += u * big_y[j];
                gq[i] += val * (bz * ds[j] + by * big_y[j]);
            }
            gb[iz] += sz;
            gb[iy] += sy;
        }

        // ---- layer 1 backward, only where a Gram entry (hence an α) enters the score:
        // ds¹_kj = a_kj (G_kj − ⟨a_k, G_k⟩) with G_k = ∂L/∂a_k.
        let (mut g1, mut g2, mut g3) = (0.0, 0.0, 0.0);
        let mu = dot(aq, gq);
        for i in sp[q]..sp[q + 1] {
            let j = key[i];
            let d1 = aq[j] * (gq[j] - mu);
            g1 += d1 * sc[i];
            g2 += d1 * sp_p[i];
            g3 += d1 * spj[i];
        }
        // rows k < Q: G_k = γ₄ A²_k ∂L/∂w + ds_k y, so ⟨a_k, G_k⟩ = γ₄ A²_k h_k + ds_k ⟨a_k, y⟩.
        for k in 1..q {
            let cw = gm[3] * a2[k];
            let mu = cw * h[k] + ds[k] * ay[k];
            for i in sp[k]..sp[k + 1] {
                let j = key[i];
                let d1 = sw[i] * (cw * gw[j] + ds[k] * y[j] - mu);
                g1 += d1 * sc[i];
                g2 += d1 * sp_p[i];
                g3 += d1 * spj[i];
            }
        }
        grad[0] += g1;
        grad[1] += g2;
        grad[2] += g3;
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
