//! Musat et al., the 19-dimensional flow (docs/theory/musat.md §5–6) [reconstruction]: the exact
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
//! Every block of W(θ) is a combination of I and M (J by default, or the swap involution S with
//! [`Musat19::with_m`]), so every bilinear form the forward pass of §4 computes between tokens
//! (h⁰_k = [c_k; r_k]) is a combination of three T × T Gram matrices of the input, fixed once
//! the configuration is:
//! ```text
//! C_kj = c_k · c_j,   P_kj = r_k · r_j,   PJ_kj = r_kᵀ M r_j   (called PJ below for either M).
//! ```
//! Nothing below assumes M antisymmetric: with S, PJ is symmetric and has a diagonal on
//! non-orthonormal data.
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
//! docs/theory/musat.md §5). The backward pass runs through the same quantities; the loss
//! ‖ŷ − y_q‖² and ∂L/∂w_i = 2 c_i · (ŷ − y_q) use the content vectors themselves (no
//! cancellation when the loss is small). The Gram matrices are stored sparse (the canonical
//! configuration has O(T) nonzeros), and a layer-1 key whose three Gram entries are all 0 has
//! score exactly 0; so one evaluation costs O(T²) = O(N²) with a handful of exponentials per
//! configuration: O(N²) for query `last`, O(N³) for `uniform`, independent of the D of any
//! full model. The formulas hold for any input (not only one-hot tokens); they are tested
//! against the dense full model's backward pass projected onto the basis, on the canonical
//! configurations, on Haar samples and on arbitrary dense data, and against central
//! differences.
//!
//! ## The specialised pass (query `last`, cue `rotated`, position `fresh`)
//!
//! The compare scenarios' system has one configuration whose Gram matrices are known in closed
//! form (C = P = I before the query, PJ pairs each item with its label, the query's content is
//! x_N's and its position is orthogonal to all): `canonical.rs` evaluates it in O(N) straight
//! loops over the pairs, with N + 5 exponentials at most and no sparse bookkeeping.
//! [`Musat19::new`] and [`Musat19::with_query_position`] choose it for that case with M = J
//! (never [`Musat19::from_sequences`], never M = swap); every other system takes the generic
//! pass. Tested in
//! `canonical_tests.rs` against the generic pass (to 1e-12), the dense model's projected
//! gradient on the canonical configuration and central differences; the structure it assumes
//! is checked on the generic pass's own reduction of the configuration.
//!
//! ## Query position `p_q` (ablation, docs/theory/musat.md §13)
//!
//! [`Musat19::with_query_position`] gives the query token the queried item's position p_q
//! instead of the fresh p_{N+1}. The 19-dim subspace stays invariant and the canonical
//! configurations still give the population loss, for the same reasons as with `fresh`:
//! - **The distribution keeps the symmetry group of §5.** A group element (U, V) (U ∈ O(D) on
//!   contents, V ∈ O(D) with VJ = JV on positions) maps a sample (x_i, y_i, p_i, q) to
//!   (U x_i, U y_i, V p_i, q), labels' positions J p_i to J V p_i. The query's position p_q is a
//!   function of the sample (the position of item q), so it maps to V p_q, the position of item
//!   q of the image sample: the image is again a `p_q` sample, and since the Haar frames are
//!   (U, V)-invariant it has the same probability. The loss E ℓ is therefore invariant, its
//!   gradient equivariant, and the fixed-point set of the group on the weights (the same span
//!   of I/J blocks, since it depends only on the group, not on the data) is invariant under the
//!   flow. Nothing here used the independence of p_{N+1}.
//! - **One orbit per q.** For a fixed q, any two orthonormal `p_q` samples are related by a
//!   group element (U maps one orthonormal content frame to the other, V ∈ U(D/2) one unitary
//!   position frame to the other), and q is not moved: so each orthonormal sample has the loss
//!   of the canonical configuration with p_q = e_q, and query `uniform` averages the N of them.
//!
//! - **The 3-parameter closed form is unchanged.** docs/theory/musat.md §7 states its setting with
//!   the fresh position, but at a point where only α₃, β₂, γ₃ are nonzero the query's position
//!   enters only the query's own layer-1 row a_Q, which only β₃, β₄, β₉..β₁₂ and γ₂ read (all
//!   0 there): the loss and the three partials are those of §7 for either position, so musat3
//!   is the exact restricted flow (A4) under `p_q` too. The other partials differ (β₅ reads
//!   P_Q, which now has a 1 on item q: the positional shortcut), so the 19-dim flow leaves the
//!   plane differently.
//!
//! Tested in `tests.rs`: every Haar `p_q` sample (D > 2N + 2) has the canonical loss and
//! projected gradient, the dense model's projected gradient on the canonical `p_q`
//! configuration equals this one, and the off-subspace part of the dense gradient on Haar
//! `p_q` batches at a structured point falls like 1/√B (as for `fresh`), and at 3-parameter
//! points both the structured and the dense `p_q` gradients equal musat3's.

use crate::flow::GradientFlow;
use crate::numerics::expo::{exp_nonpositive, exp_nonpositive_in_place};
use crate::numerics::kernels::dot;
use crate::numerics::simd::{self, Kernel};
use crate::systems::musat::data::{LabelPosition, QueryPosition, canonical_configuration};
use crate::systems::musat::musat3::Query;
use crate::systems::musat::subspace::{MMatrix, NAMES19};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// A sparse vector: (index, value) pairs.
type Sparse = Vec<(usize, f64)>;

/// One input sequence, reduced to what the evaluation needs (all θ-independent), in flat
/// arrays (u32 indices) so that the passes are short loops over contiguous memory.
#[derive(Debug, Clone)]
struct Configuration {
    /// Layer-1 row k (k = 1..=Q) has `zeros[k]` keys whose three Gram entries are all 0 (score
    /// exactly 0) and the special keys `sp_key[sp_start[k]..sp_start[k + 1]]` (in row
    /// `sp_row`) with their (C, P, PJ) entries `sp_g`. The specials of row Q are also the
    /// nonzero entries of row Q of C, P, PJ over the keys j < Q (the z and y terms in β₁, β₂,
    /// β₅..β₈).
    zeros: Vec<f64>,
    /// The weight of each key of row k when row k has no special key (1/k; 0 for row 0).
    plain: Vec<f64>,
    sp_start: Vec<u32>,
    sp_key: Vec<u32>,
    sp_row: Vec<u32>,
    sp_g: Vec<[f64; 3]>,
    /// C, P, PJ among the tokens before the query (the products a_Q C, a_Q P, a_Q PJ): only
    /// those of the three matrices with a nonzero entry (the canonical configurations have no
    /// PJ on the diagonal and only PJ off it).
    gram: Vec<GramPart>,
    /// Content vectors c_0..c_Q in compressed rows: token k has the entries
    /// `c_idx/c_val[c_start[k]..c_start[k + 1]]`; and the target.
    /// When every token has exactly one content entry (one-hot tokens), token k's is entry k.
    c_start: Vec<u32>,
    one_hot: bool,
    c_idx: Vec<u32>,
    c_val: Vec<f64>,
    target: Vec<(u32, f64)>,
    /// Weight of this configuration in the loss (1/number of configurations).
    weight: f64,
}

/// One of C, P, PJ among the tokens before the query: its diagonal (dense, length Q; empty
/// when it is 0) and its nonzero entries off the diagonal (i, j, value).
#[derive(Debug, Clone)]
struct GramPart {
    /// 0, 1, 2 for C, P, PJ.
    m: usize,
    diag: Vec<f64>,
    off: Vec<(u32, u32, f64)>,
}

/// The 19-dimensional flow of Musat et al.
#[derive(Debug, Clone)]
pub struct Musat19 {
    n: usize,
    d: usize,
    query: Query,
    label_position: LabelPosition,
    query_position: QueryPosition,
    m: MMatrix,
    loss_scale: f64,
    configs: Vec<Configuration>,
    /// The largest number of special layer-1 keys of a configuration (scratch size).
    max_specials: usize,
    /// Set by [`Musat19::with_query_position`] for query `last`, cue `rotated` and position
    /// `fresh`: `evaluate` takes the specialised pass of `canonical.rs`.
    canonical_last: bool,
    names: Vec<String>,
}

/// Largest N for which the dense configurations are built when the specialised pass applies.
const GENERIC_MAX_N: usize = 4096;

/// Per-thread scratch, grown on first use and reused (no allocation in `grad` afterwards).
#[derive(Default)]
struct Scratch {
    /// The (T, D, specials) the buffers hold at least.
    size: (usize, usize, usize),
    /// A¹ row k: the weight of each key with score 0 (`base[k]`) and of each special key
    /// (aligned with `Configuration::sp_key`); row Q in full (`aq`).
    base: Vec<f64>,
    sw: Vec<f64>,
    aq: Vec<f64>,
    a2: Vec<f64>,
    z: Vec<f64>,
    y: Vec<f64>,
    ay: Vec<f64>,
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
        let size = &mut self.size;
        if size.0 >= t && size.1 >= d && size.2 >= specials {
            return;
        }
        *size = (size.0.max(t), size.1.max(d), size.2.max(specials));
        let grow = |v: &mut Vec<f64>, len: usize| {
            if v.len() < len {
                v.resize(len, 0.0);
            }
        };
        grow(&mut self.sw, specials);
        grow(&mut self.r, d);
        for v in [
            &mut self.base,
            &mut self.aq,
            &mut self.a2,
            &mut self.z,
            &mut self.y,
            &mut self.ay,
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

/// [`Musat19::configuration_pass_body`] as a [`Kernel`] for [`simd::dispatch`].
struct ConfigurationPass;

type PassArgs<'a> = (
    &'a Musat19,
    &'a Configuration,
    &'a [f64],
    &'a mut Scratch,
    Option<&'a mut [f64]>,
);

impl<'a> Kernel<PassArgs<'a>> for ConfigurationPass {
    type Output = f64;
    #[inline(always)]
    fn run(self, (sys, c, th, s, grad): PassArgs<'a>) -> f64 {
        sys.configuration_pass_body(c, th, s, grad)
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

#[inline(always)]
fn dot3(a: [f64; 3], g: &[f64; 3]) -> f64 {
    a[0] * g[0] + a[1] * g[1] + a[2] * g[2]
}

#[inline(always)]
fn axpy3(acc: &mut [f64; 3], s: f64, g: &[f64; 3]) {
    acc[0] += s * g[0];
    acc[1] += s * g[1];
    acc[2] += s * g[2];
}

/// e^x (x ≤ 0: scores shifted by their row's maximum), remembering the last argument: the rows
/// of layer 1 share their few distinct scores.
#[inline(always)]
fn exp_cached(x: f64, memo: &mut (f64, f64)) -> f64 {
    if x == 0.0 {
        1.0
    } else if x == memo.0 {
        memo.1
    } else {
        let e = exp_nonpositive(x);
        *memo = (x, e);
        e
    }
}

impl Configuration {
    /// From dense tokens (T · 2D, token k = [c_k; r_k]) and the target (D).
    ///
    /// The Gram entries are accumulated over the tokens' nonzeros (tokens sharing an index),
    /// so a configuration of one-hot tokens costs O(T) here, dense data O(T² D).
    fn new(tokens: &[f64], target: &[f64], t: usize, d: usize, m: MMatrix, weight: f64) -> Self {
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
                // r_kᵀ M r_j = Σ_i r_k[i] M_{i, col(i)} r_j[col(i)]
                let (col, sign) = (m.col(i, d), m.val(i, d));
                for &(j, y) in &by_p[col] {
                    gram.entry((k, j)).or_default()[2] += x * sign * y;
                }
            }
        }
        let q = t - 1;
        let idx = |i: usize| u32::try_from(i).expect("index fits in u32");
        let mut cf = Configuration {
            zeros: vec![0.0; t],
            plain: vec![0.0; t],
            sp_start: vec![0; t + 1],
            sp_key: Vec::new(),
            sp_row: Vec::new(),
            sp_g: Vec::new(),
            gram: Vec::new(),
            c_start: vec![0],
            one_hot: false,
            c_idx: Vec::new(),
            c_val: Vec::new(),
            target: sparse(target)
                .into_iter()
                .map(|(i, x)| (idx(i), x))
                .collect(),
            weight,
        };
        let mut parts: Vec<GramPart> = (0..3)
            .map(|m| GramPart {
                m,
                diag: vec![0.0; q],
                off: Vec::new(),
            })
            .collect();
        for (&(k, j), &g) in &gram {
            if g == [0.0; 3] {
                continue;
            }
            if j < k {
                // a special layer-1 key (rows are visited in order)
                cf.sp_row.push(idx(k));
                cf.sp_key.push(idx(j));
                cf.sp_g.push(g);
            }
            if k < q && j < q {
                for (part, v) in parts.iter_mut().zip(g) {
                    if k == j {
                        part.diag[k] = v;
                    } else if v != 0.0 {
                        part.off.push((idx(k), idx(j), v));
                    }
                }
            }
        }
        for mut part in parts {
            if part.diag.iter().all(|&v| v == 0.0) {
                part.diag.clear();
            }
            if !part.diag.is_empty() || !part.off.is_empty() {
                cf.gram.push(part);
            }
        }
        for k in 0..t {
            let end = cf.sp_row.partition_point(|&r| r as usize <= k);
            cf.sp_start[k + 1] = idx(end);
            let specials = end - cf.sp_start[k] as usize;
            cf.zeros[k] = (k - specials) as f64;
            if k >= 1 && specials == 0 {
                cf.plain[k] = 1.0 / k as f64;
            }
        }
        for c in &contents {
            for &(i, x) in c {
                cf.c_idx.push(idx(i));
                cf.c_val.push(x);
            }
            cf.c_start.push(idx(cf.c_idx.len()));
        }
        cf.one_hot = contents.iter().all(|c| c.len() == 1);
        cf
    }

    /// c_k · x for the content vector of token k.
    #[inline(always)]
    fn content_dot(&self, k: usize, x: &[f64]) -> f64 {
        if self.one_hot {
            return self.c_val[k] * x[self.c_idx[k] as usize];
        }
        let (lo, hi) = (self.c_start[k] as usize, self.c_start[k + 1] as usize);
        self.c_idx[lo..hi]
            .iter()
            .zip(&self.c_val[lo..hi])
            .map(|(&i, &v)| v * x[i as usize])
            .sum()
    }

    /// x += s c_k.
    #[inline(always)]
    fn add_content(&self, k: usize, s: f64, x: &mut [f64]) {
        if self.one_hot {
            x[self.c_idx[k] as usize] += s * self.c_val[k];
            return;
        }
        let (lo, hi) = (self.c_start[k] as usize, self.c_start[k + 1] as usize);
        for (&i, &v) in self.c_idx[lo..hi].iter().zip(&self.c_val[lo..hi]) {
            x[i as usize] += s * v;
        }
    }
}

impl Musat19 {
    /// The 19-dim flow on the canonical orthonormal configuration(s) for N ≥ 1 pairs, the query
    /// mode, the label cue and the loss scale (> 0).
    pub fn new(n: usize, query: Query, label_position: LabelPosition, loss_scale: f64) -> Self {
        Self::with_query_position(n, query, label_position, QueryPosition::Fresh, loss_scale)
    }

    /// [`Musat19::new`] with the query token's position: `Fresh` (p_{N+1}, the paper's) or `PQ`
    /// (the queried item's position p_q, the ablation of docs/theory/musat.md §13; see the module
    /// documentation for why the subspace stays invariant).
    pub fn with_query_position(
        n: usize,
        query: Query,
        label_position: LabelPosition,
        query_position: QueryPosition,
        loss_scale: f64,
    ) -> Self {
        Self::with_m(
            n,
            query,
            label_position,
            query_position,
            MMatrix::J,
            loss_scale,
        )
    }

    /// [`Musat19::with_query_position`] with the matrix M of the cue and of the basis: `J`
    /// (the default) or `Swap` (S = [[0, I], [I, 0]], docs/theory/musat.md §3). Both J and S
    /// leave the canonical tokens unchanged (S e_k = J e_k = e_{D/2+k}); the Gram matrix
    /// PM_kj = r_kᵀ M r_j differs, and only J takes the specialised pass of `canonical.rs`.
    pub fn with_m(
        n: usize,
        query: Query,
        label_position: LabelPosition,
        query_position: QueryPosition,
        m: MMatrix,
        loss_scale: f64,
    ) -> Self {
        assert!(n >= 1 && loss_scale > 0.0 && loss_scale.is_finite());
        let d = 2 * n + 2;
        let queries: Vec<usize> = match query {
            Query::Last => vec![n],
            Query::Uniform => (1..=n).collect(),
        };
        let t = 2 * n + 1;
        let weight = 1.0 / queries.len() as f64;
        // the specialised pass hard-codes J's signs (r_itemᵀ J r_label = −1)
        let canonical = query == Query::Last
            && label_position == LabelPosition::Rotated
            && query_position == QueryPosition::Fresh
            && m == MMatrix::J;
        // One configuration at a time: the dense tokens are O(N²) (68 GB at N = 65536). The
        // specialised pass needs none; above GENERIC_MAX_N they are not built at all (below,
        // the tests compare the two passes on them).
        let configs = if canonical && n > GENERIC_MAX_N {
            Vec::new()
        } else {
            queries
                .iter()
                .map(|&q| {
                    let (tokens, target) =
                        canonical_configuration(n, q, label_position, query_position, m);
                    Configuration::new(&tokens, &target, t, d, m, weight)
                })
                .collect()
        };
        let mut s = Self::from_configurations(n, d, configs, m, loss_scale);
        s.query = query;
        s.label_position = label_position;
        s.query_position = query_position;
        s.canonical_last = canonical;
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
        Self::from_sequences_with_m(n, d, seqs, MMatrix::J, loss_scale)
    }

    /// [`Musat19::from_sequences`] with W = W(θ) built on the basis of M = `m`.
    pub fn from_sequences_with_m(
        n: usize,
        d: usize,
        seqs: &[(Vec<f64>, Vec<f64>)],
        m: MMatrix,
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
                Configuration::new(tokens, target, t, d, m, weight)
            })
            .collect();
        Self::from_configurations(n, d, configs, m, loss_scale)
    }

    fn from_configurations(
        n: usize,
        d: usize,
        configs: Vec<Configuration>,
        m: MMatrix,
        loss_scale: f64,
    ) -> Self {
        Musat19 {
            max_specials: configs.iter().map(|c| c.sp_key.len()).max().unwrap_or(0),
            n,
            d,
            query: Query::Last,
            label_position: LabelPosition::Rotated,
            query_position: QueryPosition::Fresh,
            m,
            loss_scale,
            configs,
            canonical_last: false,
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

    pub fn query_position(&self) -> QueryPosition {
        self.query_position
    }

    /// The matrix M of the label cue and of the basis.
    pub fn m(&self) -> MMatrix {
        self.m
    }

    /// Whether `loss` and `grad` take the specialised pass of `canonical.rs`.
    #[cfg(test)]
    pub(crate) fn uses_canonical_last(&self) -> bool {
        self.canonical_last
    }

    /// Loss, and the gradient into `grad` when given.
    fn evaluate(&self, theta: &[f64], grad: Option<&mut [f64]>) -> f64 {
        assert_eq!(theta.len(), 19);
        if self.canonical_last {
            // one configuration, weight 1
            return canonical::evaluate(self.n, theta, self.loss_scale, grad);
        }
        self.evaluate_generic(theta, grad)
    }

    /// [`Musat19::evaluate`] by the generic pass over the configurations, whatever they are.
    fn evaluate_generic(&self, theta: &[f64], mut grad: Option<&mut [f64]>) -> f64 {
        assert_eq!(theta.len(), 19);
        assert!(
            !self.configs.is_empty(),
            "the generic pass needs the configurations (built for N <= {GENERIC_MAX_N})"
        );
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
    /// O(T²) on the canonical configurations. The special corrections are applied first and
    /// the prefix (suffix) sums are fused with the elementwise work that follows them.
    /// Compiled for AVX2 when the CPU has it ([`simd::dispatch`]: no FMA, the same arithmetic as
    /// the plain build).
    fn configuration_pass(
        &self,
        c: &Configuration,
        th: &[f64],
        s: &mut Scratch,
        grad: Option<&mut [f64]>,
    ) -> f64 {
        simd::dispatch(ConfigurationPass, (self, c, th, s, grad))
    }

    #[inline(always)]
    fn configuration_pass_body(
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
        // the coefficients of (C, P, PJ) in z and y: query row, and a_Q times the Gram matrix
        let (bzq, byq) = ([b[0], b[4], b[5]], [b[1], b[6], b[7]]);
        let (bz, by) = ([b[2], b[8], b[9]], [b[3], b[10], b[11]]);
        let Scratch {
            base,
            sw,
            aq,
            a2,
            z,
            y,
            ay,
            w,
            r,
            gw,
            h,
            ds,
            big_y,
            gq,
            ..
        } = s;
        let base = &mut base[..t];
        let (aq, a2, z, y, ay) = (
            &mut aq[..q],
            &mut a2[..q],
            &mut z[..q],
            &mut y[..q],
            &mut ay[..q],
        );
        let nsp = c.sp_key.len();
        let sw = &mut sw[..nsp];
        let (key, row, spg) = (&c.sp_key[..nsp], &c.sp_row[..nsp], &c.sp_g[..nsp]);
        let sp = &c.sp_start[..t + 1];
        // the specials of rows 1..q−1 (layer 2 keys), and those of the query row
        let nk = sp[q] as usize;
        let qsp = nk..nsp;

        // ---- layer 1: rows without special keys weigh each key 1/k; the others are
        // softmaxes over their special scores and `zeros[k]` scores exactly 0.
        let mut memo = (f64::NAN, f64::NAN);
        base[0] = 0.0;
        for k in 1..=q {
            let range = sp[k] as usize..sp[k + 1] as usize;
            if range.is_empty() {
                base[k] = c.plain[k];
                continue;
            }
            let zeros = c.zeros[k];
            let mut m = if zeros > 0.0 { 0.0 } else { f64::NEG_INFINITY };
            let (ws, gs) = (&mut sw[range.clone()], &spg[range]);
            for (x, g) in ws.iter_mut().zip(gs) {
                *x = al1 * g[0] + al2 * g[1] + al3 * g[2];
                m = m.max(*x);
            }
            let e0 = if zeros > 0.0 {
                exp_cached(-m, &mut memo)
            } else {
                0.0
            };
            let mut total = zeros * e0;
            for x in ws.iter_mut() {
                *x = exp_cached(*x - m, &mut memo);
                total += *x;
            }
            let inv = 1.0 / total;
            for x in ws.iter_mut() {
                *x *= inv;
            }
            base[k] = e0 * inv;
        }
        aq.fill(base[q]);
        for i in qsp.clone() {
            aq[key[i] as usize] = sw[i];
        }

        // ---- layer 2 (query row): z, y; s²_j = z_j + ⟨a_j, y⟩.
        z.fill(0.0);
        y.fill(0.0);
        ay.fill(0.0);
        for part in &c.gram {
            let (bzm, bym) = (bz[part.m], by[part.m]);
            if !part.diag.is_empty() {
                for (((zj, yj), &a), &v) in z
                    .iter_mut()
                    .zip(y.iter_mut())
                    .zip(aq.iter())
                    .zip(&part.diag[..q])
                {
                    let u = a * v;
                    *zj += bzm * u;
                    *yj += bym * u;
                }
            }
            for &(i, j, v) in &part.off {
                let u = aq[i as usize] * v;
                z[j as usize] += bzm * u;
                y[j as usize] += bym * u;
            }
        }
        for i in qsp.clone() {
            let (j, g) = (key[i] as usize, &spg[i]);
            z[j] += dot3(bzq, g);
            y[j] += dot3(byq, g);
        }
        for i in 0..nk {
            let k = row[i] as usize;
            ay[k] += (sw[i] - base[k]) * y[key[i] as usize];
        }
        let mut acc = 0.0;
        let mut m = f64::NEG_INFINITY;
        for ((((x, a), &zj), &yj), &bk) in ay
            .iter_mut()
            .zip(a2.iter_mut())
            .zip(z.iter())
            .zip(y.iter())
            .zip(base.iter())
        {
            *x += bk * acc;
            acc += yj;
            *a = zj + *x;
            m = m.max(*a);
        }
        for x in a2.iter_mut() {
            *x -= m;
        }
        exp_nonpositive_in_place(a2);
        let inv = 1.0 / a2.iter().sum::<f64>();

        // ---- readout: w = γ₁ e_Q + γ₂ a_Q + γ₃ A² + γ₄ Σ_j A²_j a_j; ŷ = Σ_i w_i c_i.
        let w = &mut w[..t];
        for ((wi, x), &a) in w.iter_mut().zip(a2.iter_mut()).zip(aq.iter()) {
            *x *= inv;
            *wi = gm[1] * a + gm[2] * *x;
        }
        for i in 0..nk {
            let k = row[i] as usize;
            w[key[i] as usize] += gm[3] * a2[k] * (sw[i] - base[k]);
        }
        w[q] = gm[0];
        let r = &mut r[..self.d];
        r.fill(0.0);
        for &(i, x) in &c.target {
            r[i as usize] = -x;
        }
        c.add_content(q, w[q], r);
        let mut suffix = 0.0;
        for i in (0..q).rev() {
            w[i] += gm[3] * suffix;
            suffix += a2[i] * base[i];
            c.add_content(i, w[i], r);
        }
        let scale = self.loss_scale * c.weight;
        let loss = scale * dot(r, r);
        let Some(grad) = grad else {
            return loss;
        };

        // ---- backward. ∂L/∂w_i = 2·scale·c_i · (ŷ − y); h_k = ⟨a_k, ∂L/∂w⟩.
        let dy_coef = 2.0 * scale;
        let (gw, h) = (&mut gw[..q], &mut h[..q]);
        let (mut g16, mut g17, mut g18) = (0.0, 0.0, 0.0);
        let mut acc = 0.0;
        for (k, ((((g, hk), &a), &b2), &bk)) in gw
            .iter_mut()
            .zip(h.iter_mut())
            .zip(aq.iter())
            .zip(a2.iter())
            .zip(base.iter())
            .enumerate()
        {
            let x = dy_coef * c.content_dot(k, r);
            *g = x;
            *hk = bk * acc;
            acc += x;
            g16 += x * a;
            g17 += x * b2;
            g18 += b2 * *hk;
        }
        for i in 0..nk {
            let k = row[i] as usize;
            let u = (sw[i] - base[k]) * gw[key[i] as usize];
            h[k] += u;
            g18 += a2[k] * u;
        }
        // γ: ⟨∂L/∂w, e_Q⟩, ⟨∂L/∂w, a_Q⟩, ⟨∂L/∂w, A²⟩, ⟨∂L/∂w, Σ_k A²_k a_k⟩ = Σ_k A²_k h_k.
        grad[15] += dy_coef * c.content_dot(q, r);
        grad[16] += g16;
        grad[17] += g17;
        grad[18] += g18;
        // A²: ∂L/∂A²_j = γ₃ ∂L/∂w_j + γ₄ h_j; softmax backward to ds²_j (the mean
        // Σ_j A²_j ∂L/∂A²_j is γ₃ g17 + γ₄ g18).
        let ds = &mut ds[..q];
        let mean = gm[2] * g17 + gm[3] * g18;
        for (((d, &g), &hj), &a) in ds.iter_mut().zip(gw.iter()).zip(h.iter()).zip(a2.iter()) {
            *d = a * (gm[2] * g + gm[3] * hj - mean);
        }
        // ∂L/∂z = ds, ∂L/∂y = Y = Σ_j ds_j a_j; ∂L/∂a_Q = γ₂ ∂L/∂w + (β₃ C + β₉ P + β₁₀ PJ) ds
        // + (β₄ C + β₁₁ P + β₁₂ PJ) Y.
        let (big_y, gq) = (&mut big_y[..q], &mut gq[..q]);
        big_y.fill(0.0);
        for i in 0..nk {
            let k = row[i] as usize;
            big_y[key[i] as usize] += ds[k] * (sw[i] - base[k]);
        }
        let mut suffix = 0.0;
        for i in (0..q).rev() {
            big_y[i] += suffix;
            suffix += ds[i] * base[i];
        }
        for (g, &x) in gq.iter_mut().zip(gw.iter()) {
            *g = gm[1] * x;
        }
        let (mut sz, mut sy) = ([0.0; 3], [0.0; 3]);
        for part in &c.gram {
            let (bzm, bym) = (bz[part.m], by[part.m]);
            let (mut az, mut ay_) = (0.0, 0.0);
            if !part.diag.is_empty() {
                for ((((g, &a), &v), &d), &yy) in gq
                    .iter_mut()
                    .zip(aq.iter())
                    .zip(&part.diag[..q])
                    .zip(ds.iter())
                    .zip(big_y.iter())
                {
                    let u = a * v;
                    az += u * d;
                    ay_ += u * yy;
                    *g += v * (bzm * d + bym * yy);
                }
            }
            for &(i, j, v) in &part.off {
                let (i, j) = (i as usize, j as usize);
                let (d, yy) = (ds[j], big_y[j]);
                let u = aq[i] * v;
                az += u * d;
                ay_ += u * yy;
                gq[i] += v * (bzm * d + bym * yy);
            }
            sz[part.m] = az;
            sy[part.m] = ay_;
        }
        let (mut szq, mut syq) = ([0.0; 3], [0.0; 3]);
        for i in qsp.clone() {
            let (j, g) = (key[i] as usize, &spg[i]);
            axpy3(&mut szq, ds[j], g);
            axpy3(&mut syq, big_y[j], g);
        }
        let gb = &mut grad[3..15];
        for m in 0..3 {
            gb[[0, 4, 5][m]] += szq[m];
            gb[[1, 6, 7][m]] += syq[m];
            gb[[2, 8, 9][m]] += sz[m];
            gb[[3, 10, 11][m]] += sy[m];
        }

        // ---- layer 1 backward, only where a Gram entry (hence an α) enters the score:
        // ds¹_kj = a_kj (G_kj − ⟨a_k, G_k⟩) with G_k = ∂L/∂a_k.
        let mut ga = [0.0; 3];
        let mu = dot(aq, gq);
        for i in qsp {
            let d1 = sw[i] * (gq[key[i] as usize] - mu);
            axpy3(&mut ga, d1, &spg[i]);
        }
        // rows k < Q: G_k = γ₄ A²_k ∂L/∂w + ds_k y, so ⟨a_k, G_k⟩ = γ₄ A²_k h_k + ds_k ⟨a_k, y⟩.
        for i in 0..nk {
            let (k, j) = (row[i] as usize, key[i] as usize);
            let cw = gm[3] * a2[k];
            let mu = cw * h[k] + ds[k] * ay[k];
            let d1 = sw[i] * (cw * gw[j] + ds[k] * y[j] - mu);
            axpy3(&mut ga, d1, &spg[i]);
        }
        grad[0] += ga[0];
        grad[1] += ga[1];
        grad[2] += ga[2];
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

mod canonical;

#[cfg(test)]
mod canonical_tests;
#[cfg(test)]
mod tests;
