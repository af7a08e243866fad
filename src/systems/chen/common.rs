//! What the reduced GIH flow (`theory::gih`) and the full TF(M, H, d, D)
//! (`model::gih_transformer`) share (docs/theory/chen.md §4–§5): the head subsets 𝒮_D, the RPE
//! windows, the parameter layout (c, w, a), the sufficient statistics of a sample (positions
//! grouped by their local history), and layer 2 with the loss, evaluated in parallel over
//! sequences with a fixed-order reduction.
//!
//! **Layer 2** (§4.1–§4.2). Given per-head features v̄_l^{(h)} of every position l ≤ L and of the
//! query position L + 1,
//! ```text
//! g_l^{(h)} = ⟨v̄_l^{(h)}, v̄_{L+1}^{(h)}⟩   (ReLU'd in the full model),  G_{l,S} = Π_{h∈S} g_l^{(h)}
//! K_l = Σ_S p_S G_{l,S},   s = softmax_l(a K_l),   ŷ = Σ_l s_l x_l
//! ℓ = −ln(ŷ_y + ε)   (paper)     or    ℓ = −ŷ_y + ln Σ_k e^{ŷ_k}   (code, §5)
//! ```
//! **Sufficient statistics.** A position's features depend only on its local history (the tokens
//! at the offsets the heads can see, and in the full model the token itself), so the positions
//! of a sequence are grouped into buckets of equal history, each with its count of every token
//! x_l. Layer 2 then costs O(buckets) per sequence instead of O(L), exactly.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;

use crate::systems::chen::markov::Sequences;

/// A history entry before the start of the sequence (not attended to).
pub const PAD: u8 = 255;
/// The zero vector of the query position x_{L+1} (attended to, contributes nothing).
pub const ZERO: u8 = 254;
/// Largest vocabulary (tokens are stored as bytes below the two sentinels).
pub const MAX_D: usize = 250;
/// Number of chunks the sequences are split into. Fixed, so sums are reduced in the same order
/// on any number of threads.
pub const CHUNKS: usize = 16;

/// Which offsets each head's RPE sees (§4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RpeWindow {
    /// Every head sees offsets 1..M (the paper).
    #[default]
    Common,
    /// Head h (1-based) sees offsets h..h+M−1 (the authors' code, with M = H).
    Staggered,
}

/// Normalisation of a head's output before layer 2 (§4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HeadNorm {
    /// Raw head outputs (the paper level).
    #[default]
    None,
    /// v / (‖v‖₂ + 1e−7) (the authors' simplified model).
    L2,
}

/// The ε of v / (‖v‖ + ε) in the `l2` head normalisation.
pub const L2_EPS: f64 = 1e-7;

/// The training loss (§5).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LossKind {
    /// −ln(ŷ_y + ε).
    Paper { epsilon: f64 },
    /// Softmax cross-entropy with ŷ as logits (the authors' code).
    Code,
}

/// The architecture TF(M, H, d, D).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TfShape {
    pub d: usize,
    /// Layer-1 heads H.
    pub heads: usize,
    /// RPE window length M.
    pub window: usize,
    /// Largest FFN degree D.
    pub degree: usize,
    pub rpe_window: RpeWindow,
}

impl TfShape {
    /// Offset (≥ 1) of window entry i of head h (both 0-based).
    pub fn offset(&self, h: usize, i: usize) -> usize {
        match self.rpe_window {
            RpeWindow::Common => i + 1,
            RpeWindow::Staggered => h + i + 1,
        }
    }
    /// Window index of head h's own offset h + 1 (where w₊ is placed).
    pub fn own_index(&self, h: usize) -> usize {
        match self.rpe_window {
            RpeWindow::Common => h,
            RpeWindow::Staggered => 0,
        }
    }
    /// The largest offset any head sees.
    pub fn max_offset(&self) -> usize {
        (0..self.heads)
            .map(|h| self.offset(h, self.window - 1))
            .max()
            .unwrap_or(self.window)
    }
}

/// The family 𝒮_D = {S ⊆ [H] : |S| ≤ D}, ∅ included, ordered by size then lexicographically.
#[derive(Debug, Clone)]
pub struct Subsets {
    pub members: Vec<Vec<usize>>,
    /// For each head h: (subset index, the other heads of that subset) for every S ∋ h.
    by_head: Vec<Vec<(usize, Vec<usize>)>>,
}

impl Subsets {
    pub fn new(heads: usize, degree: usize) -> Self {
        let mut members: Vec<Vec<usize>> = vec![vec![]];
        let mut frontier: Vec<Vec<usize>> = vec![vec![]];
        for _ in 0..degree.min(heads) {
            let mut next = Vec::new();
            for s in &frontier {
                let from = s.last().map_or(0, |&m| m + 1);
                for h in from..heads {
                    let mut t = s.clone();
                    t.push(h);
                    next.push(t);
                }
            }
            members.extend(next.iter().cloned());
            frontier = next;
        }
        let by_head = (0..heads)
            .map(|h| {
                members
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.contains(&h))
                    .map(|(k, s)| (k, s.iter().copied().filter(|&x| x != h).collect()))
                    .collect()
            })
            .collect();
        Subsets { members, by_head }
    }
    pub fn len(&self) -> usize {
        self.members.len()
    }
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
    /// `{1,2}` (1-based heads, i.e. offsets), `{}` for the empty set.
    pub fn label(&self, k: usize) -> String {
        subset_label(&self.members[k])
    }
    /// Index of the subset with these 0-based members (any order).
    pub fn index_of(&self, members: &[usize]) -> Option<usize> {
        let mut m = members.to_vec();
        m.sort_unstable();
        self.members.iter().position(|s| *s == m)
    }
}

/// `{1,2}` for the 0-based members [0, 1].
pub fn subset_label(members: &[usize]) -> String {
    let inner: Vec<String> = members.iter().map(|h| (h + 1).to_string()).collect();
    format!("{{{}}}", inner.join(","))
}

/// Where c, w and a sit in θ: c_S for S ∈ 𝒮_D, then w^{(h)}_i head by head, then a.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub n_subsets: usize,
    pub heads: usize,
    pub window: usize,
}

impl Layout {
    pub fn c(&self, k: usize) -> usize {
        k
    }
    pub fn w(&self, h: usize, i: usize) -> usize {
        self.n_subsets + h * self.window + i
    }
    pub fn a(&self) -> usize {
        self.n_subsets + self.heads * self.window
    }
    /// Length of the (c, w, a) block.
    pub fn len(&self) -> usize {
        self.a() + 1
    }
    pub fn is_empty(&self) -> bool {
        false
    }
    pub fn c_range(&self) -> std::ops::Range<usize> {
        0..self.n_subsets
    }
    pub fn w_range(&self) -> std::ops::Range<usize> {
        self.n_subsets..self.a()
    }
    /// `c_{1,2}`, `w_h_i` (1-based head and window entry), `a`.
    pub fn names(&self, subsets: &Subsets) -> Vec<String> {
        let mut names: Vec<String> = (0..self.n_subsets)
            .map(|k| format!("c_{}", subsets.label(k)))
            .collect();
        for h in 0..self.heads {
            for i in 0..self.window {
                names.push(format!("w_{}_{}", h + 1, i + 1));
            }
        }
        names.push("a".into());
        names
    }
}

/// Simplex weights below this are set to 0: they are below f64 resolution next to the
/// others (which sum to 1), and subnormal numbers would slow every product they enter.
pub const P_FLOOR: f64 = 1e-300;

/// p_S = c_S² / Σ_T c_T² (§2), with weights below [`P_FLOOR`] set to 0.
pub fn simplex_weights(c: &[f64], p: &mut [f64]) {
    let n2: f64 = c.iter().map(|v| v * v).sum();
    for (pk, ck) in p.iter_mut().zip(c) {
        let v = ck * ck / n2;
        *pk = if v < P_FLOOR { 0.0 } else { v };
    }
}

/// Chain rule through p = c²/‖c‖²: ∂ℓ/∂c_S = (2 c_S/‖c‖²)(∂ℓ/∂p_S − Σ_T p_T ∂ℓ/∂p_T) (§7).
pub fn grad_c_from_grad_p(c: &[f64], p: &[f64], dp: &[f64], out: &mut [f64]) {
    let n2: f64 = c.iter().map(|v| v * v).sum();
    let mean: f64 = p.iter().zip(dp).map(|(a, b)| a * b).sum();
    for k in 0..c.len() {
        out[k] = 2.0 * c[k] / n2 * (dp[k] - mean);
    }
}

// ---------------------------------------------------------------------------------------------
// Sufficient statistics

/// A sample's positions grouped by local history (see the module doc).
#[derive(Debug, Clone)]
pub struct Buckets {
    pub d: usize,
    /// Input length L.
    pub length: usize,
    /// Offsets 1..=depth are recorded in a key.
    pub depth: usize,
    /// Whether a key starts with the token x_l itself (the full model attends to it).
    pub include_self: bool,
    /// Entries per key: depth (+ 1 with include_self).
    pub key_len: usize,
    /// Distinct position keys, n_features × key_len (PAD where the offset reaches before x_1).
    pub feature_keys: Vec<u8>,
    /// Distinct query keys, n_queries × key_len (ZERO for the query token itself).
    pub query_keys: Vec<u8>,
    /// Bucket range of sequence j: seq_offsets[j]..seq_offsets[j + 1].
    pub seq_offsets: Vec<usize>,
    pub seq_query: Vec<u32>,
    pub seq_target: Vec<u8>,
    pub bucket_feature: Vec<u32>,
    /// Positions in the bucket.
    pub bucket_total: Vec<f64>,
    /// Positions in the bucket with x_l = k, n_buckets × d.
    pub bucket_counts: Vec<f64>,
    pub max_buckets: usize,
}

impl Buckets {
    /// Group the positions of `seqs` by their tokens at offsets 1..=depth (and x_l itself when
    /// `include_self`). Ids are assigned in order of first appearance, so they are deterministic.
    pub fn build(seqs: &Sequences, depth: usize, include_self: bool) -> Self {
        let mut b = Buckets {
            d: seqs.d,
            length: seqs.length,
            depth,
            include_self,
            key_len: depth + usize::from(include_self),
            feature_keys: Vec::new(),
            query_keys: Vec::new(),
            seq_offsets: Vec::new(),
            seq_query: Vec::with_capacity(seqs.len()),
            seq_target: Vec::with_capacity(seqs.len()),
            bucket_feature: Vec::new(),
            bucket_total: Vec::new(),
            bucket_counts: Vec::new(),
            max_buckets: 0,
        };
        b.rebuild(seqs);
        b
    }

    /// Regroup the positions of another sample of the same vocabulary and length in place (same
    /// depth and `include_self`), reusing this one's buffers (fresh batches).
    pub fn rebuild(&mut self, seqs: &Sequences) {
        let (d, length, depth, include_self, key_len) = (
            self.d,
            self.length,
            self.depth,
            self.include_self,
            self.key_len,
        );
        assert!(
            seqs.d == d && seqs.length == length,
            "the new sample's vocabulary and length differ from the buckets'"
        );
        assert!(length >= depth, "L must be >= the largest offset");
        let mut feature_ids: HashMap<Vec<u8>, u32> = HashMap::new();
        let mut query_ids: HashMap<Vec<u8>, u32> = HashMap::new();
        let b = self;
        b.feature_keys.clear();
        b.query_keys.clear();
        b.seq_offsets.clear();
        b.seq_offsets.push(0);
        b.seq_query.clear();
        b.seq_target.clear();
        b.bucket_feature.clear();
        b.bucket_total.clear();
        b.bucket_counts.clear();
        b.max_buckets = 0;
        let mut key = vec![0u8; key_len];
        // slot[id] = (sequence stamp, bucket index) for the sequence being built
        let mut slot: Vec<(usize, usize)> = Vec::new();
        for j in 0..seqs.len() {
            let x = seqs.sequence(j);
            let start = b.bucket_feature.len();
            for l in 0..length {
                // 0-based position l holds x_{l+1}; offset o reaches index l − o
                let mut k = 0;
                if include_self {
                    key[0] = x[l];
                    k = 1;
                }
                for o in 1..=depth {
                    key[k] = if l >= o { x[l - o] } else { PAD };
                    k += 1;
                }
                let id = match feature_ids.get(key.as_slice()) {
                    Some(&id) => id,
                    None => {
                        let id = feature_ids.len() as u32;
                        feature_ids.insert(key.clone(), id);
                        b.feature_keys.extend_from_slice(&key);
                        slot.push((usize::MAX, 0));
                        id
                    }
                };
                let (stamp, idx) = slot[id as usize];
                let bucket = if stamp == j {
                    idx
                } else {
                    let idx = b.bucket_feature.len();
                    b.bucket_feature.push(id);
                    b.bucket_total.push(0.0);
                    b.bucket_counts.extend(std::iter::repeat_n(0.0, d));
                    slot[id as usize] = (j, idx);
                    idx
                };
                b.bucket_total[bucket] += 1.0;
                b.bucket_counts[bucket * d + x[l] as usize] += 1.0;
            }
            // the query position L + 1 (0-based index L)
            let mut k = 0;
            if include_self {
                key[0] = ZERO;
                k = 1;
            }
            for o in 1..=depth {
                key[k] = x[length - o];
                k += 1;
            }
            let qid = match query_ids.get(key.as_slice()) {
                Some(&id) => id,
                None => {
                    let id = query_ids.len() as u32;
                    query_ids.insert(key.clone(), id);
                    b.query_keys.extend_from_slice(&key);
                    id
                }
            };
            b.seq_query.push(qid);
            b.seq_target.push(x[length]);
            b.seq_offsets.push(b.bucket_feature.len());
            b.max_buckets = b.max_buckets.max(b.bucket_feature.len() - start);
        }
    }

    pub fn n_sequences(&self) -> usize {
        self.seq_query.len()
    }
    pub fn n_features(&self) -> usize {
        self.feature_keys.len() / self.key_len
    }
    pub fn n_queries(&self) -> usize {
        self.query_keys.len() / self.key_len
    }
    pub fn feature_key(&self, f: usize) -> &[u8] {
        &self.feature_keys[f * self.key_len..(f + 1) * self.key_len]
    }
    pub fn query_key(&self, q: usize) -> &[u8] {
        &self.query_keys[q * self.key_len..(q + 1) * self.key_len]
    }
}

// ---------------------------------------------------------------------------------------------
// Layer 2

/// Layer-2 settings for one evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Layer2Params<'a> {
    /// p_S for S ∈ 𝒮_D.
    pub p: &'a [f64],
    pub a: f64,
    pub loss: LossKind,
    /// Pass each g through ReLU (the full model, §4.2).
    pub relu: bool,
}

/// Sums over the training sequences of ℓ and its partial derivatives with respect to p, a and
/// the feature tables (not yet divided by the number of sequences).
#[derive(Debug, Clone)]
pub struct Layer2Sums {
    pub loss: f64,
    pub dp: Vec<f64>,
    pub da: f64,
    /// ∂/∂v̄ of every position feature, n_features × H × d.
    pub dfeat: Vec<f64>,
    /// ∂/∂v̄ of every query feature, n_queries × H × d.
    pub dqfeat: Vec<f64>,
}

impl Layer2Sums {
    fn new(n_subsets: usize, n_feat: usize, n_query: usize, heads: usize, d: usize) -> Self {
        Layer2Sums {
            loss: 0.0,
            dp: vec![0.0; n_subsets],
            da: 0.0,
            dfeat: vec![0.0; n_feat * heads * d],
            dqfeat: vec![0.0; n_query * heads * d],
        }
    }
    fn clear(&mut self) {
        self.loss = 0.0;
        self.da = 0.0;
        self.dp.fill(0.0);
        self.dfeat.fill(0.0);
        self.dqfeat.fill(0.0);
    }
    fn add(&mut self, other: &Layer2Sums) {
        self.loss += other.loss;
        self.da += other.da;
        for (a, b) in self.dp.iter_mut().zip(&other.dp) {
            *a += b;
        }
        for (a, b) in self.dfeat.iter_mut().zip(&other.dfeat) {
            *a += b;
        }
        for (a, b) in self.dqfeat.iter_mut().zip(&other.dqfeat) {
            *a += b;
        }
    }
}

/// Per-sequence scratch, sized once for the largest bucket count.
#[derive(Debug, Clone)]
struct SeqScratch {
    g: Vec<f64>,
    big_g: Vec<f64>,
    k: Vec<f64>,
    e: Vec<f64>,
    yhat: Vec<f64>,
    coef: Vec<f64>,
}

struct Chunk {
    range: std::ops::Range<usize>,
    sums: Layer2Sums,
    scratch: SeqScratch,
}

/// Layer 2 and the loss over a fixed sample, in [`CHUNKS`] fixed chunks of sequences evaluated
/// in parallel (each chunk's state behind its own, uncontended, lock) and summed in chunk order.
/// Nothing is allocated per evaluation.
pub struct Layer2 {
    pub buckets: Buckets,
    pub heads: usize,
    pub subsets: Subsets,
    chunks: Vec<Mutex<Chunk>>,
}

impl Layer2 {
    pub fn new(buckets: Buckets, heads: usize, subsets: Subsets) -> Self {
        let n = buckets.n_sequences();
        let d = buckets.d;
        let nb = buckets.max_buckets.max(1);
        let chunks = (0..CHUNKS)
            .map(|c| {
                Mutex::new(Chunk {
                    range: (c * n / CHUNKS)..((c + 1) * n / CHUNKS),
                    sums: Layer2Sums::new(
                        subsets.len(),
                        buckets.n_features(),
                        buckets.n_queries(),
                        heads,
                        d,
                    ),
                    scratch: SeqScratch {
                        g: vec![0.0; nb * heads],
                        big_g: vec![0.0; nb * subsets.len()],
                        k: vec![0.0; nb],
                        e: vec![0.0; nb],
                        yhat: vec![0.0; d],
                        coef: vec![0.0; d],
                    },
                })
            })
            .collect();
        Layer2 {
            buckets,
            heads,
            subsets,
            chunks,
        }
    }

    /// Replace the sample by `seqs` (same vocabulary and length; fresh batches): the positions
    /// are regrouped ([`Buckets::rebuild`]), the chunk ranges move and the per-chunk sums and
    /// scratch are resized in place (no allocation once they are large enough). Resize every
    /// [`Layer2Sums`] passed to [`Layer2::evaluate`] with [`Layer2::fit_sums`].
    pub fn set_data(&mut self, seqs: &Sequences) {
        self.buckets.rebuild(seqs);
        let buckets = &self.buckets;
        let n = buckets.n_sequences();
        let (heads, d, ns) = (self.heads, buckets.d, self.subsets.len());
        let nb = buckets.max_buckets.max(1);
        let (nf, nq) = (buckets.n_features(), buckets.n_queries());
        for (c, chunk) in self.chunks.iter_mut().enumerate() {
            let ch = chunk.get_mut().expect("a chunk lock is never poisoned");
            ch.range = (c * n / CHUNKS)..((c + 1) * n / CHUNKS);
            ch.sums.dfeat.resize(nf * heads * d, 0.0);
            ch.sums.dqfeat.resize(nq * heads * d, 0.0);
            ch.scratch.g.resize(nb * heads, 0.0);
            ch.scratch.big_g.resize(nb * ns, 0.0);
            ch.scratch.k.resize(nb, 0.0);
            ch.scratch.e.resize(nb, 0.0);
        }
    }

    /// Resize an accumulator to the current sample (after [`Layer2::set_data`]).
    pub fn fit_sums(&self, sums: &mut Layer2Sums) {
        let hd = self.heads * self.buckets.d;
        sums.dfeat.resize(self.buckets.n_features() * hd, 0.0);
        sums.dqfeat.resize(self.buckets.n_queries() * hd, 0.0);
    }

    /// A zeroed accumulator of the right sizes (allocate once, reuse).
    pub fn new_sums(&self) -> Layer2Sums {
        Layer2Sums::new(
            self.subsets.len(),
            self.buckets.n_features(),
            self.buckets.n_queries(),
            self.heads,
            self.buckets.d,
        )
    }

    pub fn n_sequences(&self) -> usize {
        self.buckets.n_sequences()
    }

    /// Sum ℓ (and with `grad`, its derivatives) over every sequence into `out`, given the
    /// features `feat` (n_features × H × d) and `qfeat` (n_queries × H × d).
    pub fn evaluate(
        &self,
        feat: &[f64],
        qfeat: &[f64],
        params: Layer2Params<'_>,
        grad: bool,
        out: &mut Layer2Sums,
    ) {
        self.chunks.par_iter().for_each(|c| {
            let mut guard = c.lock().expect("a chunk lock is never poisoned");
            let chunk = &mut *guard;
            chunk.sums.clear();
            for j in chunk.range.clone() {
                sequence(
                    &self.buckets,
                    &self.subsets,
                    self.heads,
                    j,
                    feat,
                    qfeat,
                    &params,
                    grad,
                    &mut chunk.scratch,
                    &mut chunk.sums,
                );
            }
        });
        out.clear();
        for c in &self.chunks {
            out.add(&c.lock().expect("a chunk lock is never poisoned").sums);
        }
    }
}

/// Forward (and backward) of layer 2 and the loss for sequence j (module doc; β of §7).
#[allow(clippy::too_many_arguments)]
fn sequence(
    bk: &Buckets,
    subsets: &Subsets,
    heads: usize,
    j: usize,
    feat: &[f64],
    qfeat: &[f64],
    par: &Layer2Params<'_>,
    grad: bool,
    s: &mut SeqScratch,
    out: &mut Layer2Sums,
) {
    let d = bk.d;
    let hd = heads * d;
    let ns = subsets.len();
    let (b0, b1) = (bk.seq_offsets[j], bk.seq_offsets[j + 1]);
    let nb = b1 - b0;
    let q = bk.seq_query[j] as usize;
    let y = bk.seq_target[j] as usize;
    let qf = &qfeat[q * hd..(q + 1) * hd];
    let a = par.a;
    let mut zmax = f64::NEG_INFINITY;
    for b in 0..nb {
        let f = bk.bucket_feature[b0 + b] as usize;
        let ff = &feat[f * hd..(f + 1) * hd];
        let g = &mut s.g[b * heads..(b + 1) * heads];
        for h in 0..heads {
            let mut dot = 0.0;
            for k in 0..d {
                dot += ff[h * d + k] * qf[h * d + k];
            }
            g[h] = if par.relu { dot.max(0.0) } else { dot };
        }
        let gg = &mut s.big_g[b * ns..(b + 1) * ns];
        let mut kb = 0.0;
        for (k, members) in subsets.members.iter().enumerate() {
            let mut prod = 1.0;
            for &h in members {
                prod *= g[h];
            }
            gg[k] = prod;
            kb += par.p[k] * prod;
        }
        s.k[b] = kb;
        zmax = zmax.max(a * kb);
    }
    let mut z = 0.0;
    s.yhat.fill(0.0);
    for b in 0..nb {
        let e = (a * s.k[b] - zmax).exp();
        s.e[b] = e;
        z += bk.bucket_total[b0 + b] * e;
        let counts = &bk.bucket_counts[(b0 + b) * d..(b0 + b + 1) * d];
        for (yk, &n) in s.yhat.iter_mut().zip(counts) {
            *yk += n * e;
        }
    }
    for v in s.yhat.iter_mut() {
        *v /= z;
    }
    // β_b = Σ_{l ∈ b} β_l = (e_b/Z) (Σ_k n_{b,k} coef_k − n_b ⟨ŷ, coef⟩): coef_k = 1{k = y}/(ŷ_y + ε)
    // for the paper loss (so that ⟨ŷ, coef⟩ = ŷ_y/(ŷ_y + ε)), coef = e_y − softmax(ŷ) for the code
    // loss.
    let loss = match par.loss {
        LossKind::Paper { epsilon } => {
            let py = s.yhat[y] + epsilon;
            s.coef.fill(0.0);
            s.coef[y] = 1.0 / py;
            -py.ln()
        }
        LossKind::Code => {
            let m = s.yhat.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + s.yhat.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            for k in 0..d {
                s.coef[k] = -(s.yhat[k] - lse).exp();
            }
            s.coef[y] += 1.0;
            lse - s.yhat[y]
        }
    };
    out.loss += loss;
    if !grad {
        return;
    }
    let mean_coef: f64 = s.yhat.iter().zip(&s.coef).map(|(p, c)| p * c).sum();
    for b in 0..nb {
        let counts = &bk.bucket_counts[(b0 + b) * d..(b0 + b + 1) * d];
        let dot: f64 = counts.iter().zip(&s.coef).map(|(n, c)| n * c).sum();
        let beta = s.e[b] / z * (dot - bk.bucket_total[b0 + b] * mean_coef);
        out.da -= beta * s.k[b];
        let dk = -a * beta; // ∂ℓ/∂K_b
        let gg = &s.big_g[b * ns..(b + 1) * ns];
        for (dp, &gk) in out.dp.iter_mut().zip(gg) {
            *dp += dk * gk;
        }
        let g = &s.g[b * heads..(b + 1) * heads];
        let f = bk.bucket_feature[b0 + b] as usize;
        for h in 0..heads {
            if par.relu && g[h] <= 0.0 {
                continue;
            }
            let mut dg = 0.0;
            for (k, others) in &subsets.by_head[h] {
                let mut prod = par.p[*k];
                for &o in others {
                    prod *= g[o];
                }
                dg += prod;
            }
            dg *= dk;
            if dg == 0.0 {
                continue;
            }
            let ff = &feat[f * hd + h * d..f * hd + (h + 1) * d];
            let qh = &qf[h * d..(h + 1) * d];
            let df = &mut out.dfeat[f * hd + h * d..f * hd + (h + 1) * d];
            for k in 0..d {
                df[k] += dg * qh[k];
            }
            let dq = &mut out.dqfeat[q * hd + h * d..q * hd + (h + 1) * d];
            for k in 0..d {
                dq[k] += dg * ff[k];
            }
        }
    }
}

#[cfg(test)]
mod tests;
