//! The disentangled two-layer attention-only transformer of Musat et al. (docs/theory/musat.md §4,
//! §10) at full size (28 D² parameters), with a batched forward pass and a hand-written
//! backward pass in f64.
//!
//! ```text
//! s¹_kj = h⁰_kᵀ W¹ h⁰_j  (j < k, strict)     A¹ = softmax_j   u¹_k = Σ_j A¹_kj h⁰_j  (u¹_1 = 0)
//! h¹_k  = [h⁰_k; u¹_k]                         (2D → 4D)
//! s²_j  = h¹_Tᵀ W² h¹_j   (j < T)              A² = softmax_j   u² = Σ_j A²_j h¹_j
//! h²_T  = [h¹_T; u²]                           (4D → 8D)        ŷ = W³ h²_T
//! L     = loss_scale · (1/B) Σ_b ‖ŷ_b − y_b‖²
//! ```
//! Two ablations of docs/theory/musat.md §13 ([`Attention`]): an attention temperature τ (both
//! layers use softmax(s / τ); τ = 1 is the paper's model, bit for bit) and an inclusive mask
//! (every position also attends to itself: keys j ≤ k in layer 1, j ≤ T in layer 2; then
//! u¹_1 = h⁰_1). The 19-dim and 3-parameter closed forms assume τ = 1 and the strict mask.
//! Only the query position's output enters the loss, so layer 2 is evaluated for the query row
//! alone. W rows index query slots and columns key slots.
//!
//! The batch is split into chunks of [`CHUNK`] sequences, a number that does not depend on the
//! thread count; chunks run in parallel (rayon) and their gradients are summed in chunk order,
//! so results are bit-identical on any number of threads. The dense products of a chunk are
//! GEMMs over all its sequences; the attention parts are per-sequence loops. Every buffer is
//! allocated when the model is built; a step allocates nothing.

use crate::numerics::gemm::{View, gemm};
use crate::numerics::kernels::{combine_rows, dot4_rows, softmax_recip};
use crate::numerics::normal::NormalSource;
use crate::numerics::simd::{self, Kernel};
use crate::systems::musat::data::{DataSpec, Sampler};
use rand::SeedableRng;
use rayon::prelude::*;

/// Sequences per chunk of the batch (fixed, so that results do not depend on the thread count).
pub const CHUNK: usize = 16;

/// Gradient entries per parallel task of the chunk-order reduction.
const REDUCE_BLOCK: usize = 1024;

/// Which keys a query attends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mask {
    /// Keys j < k (the paper's; token 1 has no key and u¹_1 = 0).
    #[default]
    Strict,
    /// Keys j ≤ k: every position also attends to itself.
    Inclusive,
}

/// The attention ablations of docs/theory/musat.md §13: softmax temperature and mask, the same for
/// both layers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attention {
    /// τ > 0: A = softmax(s / τ). 1 is the paper's model.
    pub temperature: f64,
    pub mask: Mask,
}

impl Default for Attention {
    fn default() -> Self {
        Attention {
            temperature: 1.0,
            mask: Mask::Strict,
        }
    }
}

impl Attention {
    /// Whether this is the paper's model (τ = 1, strict mask), the one the reduced flows
    /// describe.
    pub fn is_paper(&self) -> bool {
        *self == Attention::default()
    }
}

/// Sizes of the model for N pairs and content dimension D.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub n: usize,
    pub d: usize,
}

impl Dims {
    /// Tokens per sequence T = 2N + 1.
    pub fn t(&self) -> usize {
        2 * self.n + 1
    }
    /// Token width 2D.
    pub fn e(&self) -> usize {
        2 * self.d
    }
    /// Width of h¹, 4D.
    pub fn f(&self) -> usize {
        4 * self.d
    }
    /// Width of h², 8D.
    pub fn g(&self) -> usize {
        8 * self.d
    }
}

/// The weights W¹ (2D × 2D), W² (4D × 4D), W³ (D × 8D), row-major. Gradients have the same
/// shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub d: usize,
    pub w1: Vec<f64>,
    pub w2: Vec<f64>,
    pub w3: Vec<f64>,
}

impl Params {
    /// All weights zero (the paper's initialisation).
    pub fn zeros(d: usize) -> Self {
        Params {
            d,
            w1: vec![0.0; 4 * d * d],
            w2: vec![0.0; 16 * d * d],
            w3: vec![0.0; 8 * d * d],
        }
    }

    /// I.i.d. N(0, std²) entries from a seeded ChaCha8 stream.
    pub fn gaussian(d: usize, std: f64, seed: u64) -> Self {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(u64::MAX);
        let mut p = Params::zeros(d);
        let mut normal = NormalSource;
        for w in p.blocks_mut() {
            for v in w.iter_mut() {
                *v = std * normal.sample(&mut rng);
            }
        }
        p
    }

    pub fn blocks(&self) -> [&[f64]; 3] {
        [&self.w1, &self.w2, &self.w3]
    }

    pub fn blocks_mut(&mut self) -> [&mut Vec<f64>; 3] {
        [&mut self.w1, &mut self.w2, &mut self.w3]
    }

    /// Number of parameters, 28 D².
    pub fn len(&self) -> usize {
        self.w1.len() + self.w2.len() + self.w3.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn fill(&mut self, v: f64) {
        for w in self.blocks_mut() {
            w.fill(v);
        }
    }

    /// self ← self + a · other.
    pub fn axpy(&mut self, a: f64, other: &Params) {
        for (w, o) in self.blocks_mut().into_iter().zip(other.blocks()) {
            for (x, y) in w.iter_mut().zip(o) {
                *x += a * y;
            }
        }
    }

    /// Whether every entry is finite.
    pub fn is_finite(&self) -> bool {
        self.blocks()
            .iter()
            .all(|w| w.iter().all(|v| v.is_finite()))
    }
}

/// B sequences in the token layout of [`crate::systems::musat::data`]: `tokens` is B · T · 2D, `targets` B · D.
#[derive(Debug, Clone)]
pub struct Batch {
    pub spec: DataSpec,
    pub tokens: Vec<f64>,
    pub targets: Vec<f64>,
    /// The queried pair of each sequence (1-based).
    pub queries: Vec<usize>,
}

impl Batch {
    /// Draw `size` sequences from `sampler`.
    pub fn sample(sampler: &mut Sampler, size: usize) -> Self {
        let spec = *sampler.spec();
        let mut b = Batch {
            spec,
            tokens: vec![0.0; size * spec.sequence_len()],
            targets: vec![0.0; size * spec.d],
            queries: vec![0; size],
        };
        sampler.fill(&mut b.tokens, &mut b.targets, &mut b.queries);
        b
    }

    /// A batch from given sequences (e.g. the canonical configurations).
    pub fn from_parts(spec: DataSpec, tokens: Vec<f64>, targets: Vec<f64>) -> Self {
        let size = targets.len() / spec.d;
        assert_eq!(tokens.len(), size * spec.sequence_len());
        Batch {
            spec,
            tokens,
            targets,
            queries: vec![0; size],
        }
    }

    pub fn size(&self) -> usize {
        self.queries.len()
    }
}

/// Scratch of one chunk (at most [`CHUNK`] sequences); allocated once.
#[derive(Debug, Clone)]
struct Workspace {
    p1: Vec<f64>,
    a1: Vec<f64>,
    h1: Vec<f64>,
    gq: Vec<f64>,
    a2: Vec<f64>,
    h2: Vec<f64>,
    yhat: Vec<f64>,
    dy: Vec<f64>,
    dh2: Vec<f64>,
    v: Vec<f64>,
    w2v: Vec<f64>,
    du1: Vec<f64>,
    wm: Vec<f64>,
    row: Vec<f64>,
}

impl Workspace {
    /// Sized for either mask: a layer-1 row has at most T keys (inclusive mask, k = T), as does
    /// the layer-2 query row, so `a1` holds T × T per sequence, `a2` and `row` T.
    fn new(dims: Dims, m: usize) -> Self {
        let (t, e, f, g, d) = (dims.t(), dims.e(), dims.f(), dims.g(), dims.d);
        Workspace {
            p1: vec![0.0; m * t * e],
            a1: vec![0.0; m * t * t],
            h1: vec![0.0; m * t * f],
            gq: vec![0.0; m * f],
            a2: vec![0.0; m * t],
            h2: vec![0.0; m * g],
            yhat: vec![0.0; m * d],
            dy: vec![0.0; m * d],
            dh2: vec![0.0; m * g],
            v: vec![0.0; m * f],
            w2v: vec![0.0; m * e],
            du1: vec![0.0; m * t * e],
            wm: vec![0.0; m * t * e],
            row: vec![0.0; t],
        }
    }
}

/// [`chunk_pass_body`], compiled for AVX2 when the CPU has it ([`simd::dispatch`]: the loops
/// then use 256-bit vectors; no floating-point operation is reordered or fused, so results are
/// the same bits).
#[allow(clippy::too_many_arguments)]
fn chunk_pass(
    dims: Dims,
    params: &Params,
    x: &[f64],
    y: &[f64],
    m: usize,
    coef: f64,
    ws: &mut Workspace,
    grad: &mut Params,
    want_grad: bool,
    att: Attention,
) -> f64 {
    simd::dispatch(
        ChunkPass,
        (dims, params, x, y, m, coef, ws, grad, want_grad, att),
    )
}

/// The arguments of [`chunk_pass_body`].
type ChunkArgs<'a> = (
    Dims,
    &'a Params,
    &'a [f64],
    &'a [f64],
    usize,
    f64,
    &'a mut Workspace,
    &'a mut Params,
    bool,
    Attention,
);

/// [`chunk_pass_body`] as a [`Kernel`] for [`simd::dispatch`].
struct ChunkPass;

impl<'a> Kernel<ChunkArgs<'a>> for ChunkPass {
    type Output = f64;
    #[inline(always)]
    fn run(self, args: ChunkArgs<'a>) -> f64 {
        let (dims, params, x, y, m, coef, ws, grad, want_grad, att) = args;
        chunk_pass_body(dims, params, x, y, m, coef, ws, grad, want_grad, att)
    }
}

/// Forward and backward pass over one chunk of m sequences. Writes the chunk's gradient (of
/// `coef/2 · Σ_b ‖ŷ_b − y_b‖²`, i.e. with dL/dŷ = coef (ŷ − y)) into `grad`, and returns the
/// chunk's sum of squared errors Σ_b ‖ŷ_b − y_b‖². With `want_grad = false` only the forward
/// pass runs. `att` sets the temperature and the mask of both layers.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn chunk_pass_body(
    dims: Dims,
    params: &Params,
    x: &[f64],
    y: &[f64],
    m: usize,
    coef: f64,
    ws: &mut Workspace,
    grad: &mut Params,
    want_grad: bool,
    att: Attention,
) -> f64 {
    let (t, e, f, g, d) = (dims.t(), dims.e(), dims.f(), dims.g(), dims.d);
    let rows = m * t;
    let kq = t - 1; // the query token (0-based)
    // keys of row k: 0..k + inc (strict: j < k; inclusive: j <= k)
    let inc = usize::from(att.mask == Mask::Inclusive);
    let inv_tau = 1.0 / att.temperature; // τ = 1: the scaling by 1.0 is exact
    let Workspace {
        p1,
        a1,
        h1,
        gq,
        a2,
        h2,
        yhat,
        dy,
        dh2,
        v,
        w2v,
        du1,
        wm,
        row,
    } = ws;

    // ---- layer 1: P = X W¹ (row k is h_kᵀ W¹), scores p_k · x_j, softmax, u¹_k = Σ A x_j.
    gemm(
        1.0,
        x,
        View::dense(rows, e),
        &params.w1,
        View::dense(e, e),
        0.0,
        p1,
        View::dense(rows, e),
    );
    for b in 0..m {
        let xb = &x[b * t * e..(b + 1) * t * e];
        let h1b = &mut h1[b * t * f..(b + 1) * t * f];
        for k in 0..t {
            h1b[k * f..k * f + e].copy_from_slice(&xb[k * e..(k + 1) * e]);
        }
        if inc == 0 {
            h1b[e..f].fill(0.0); // u¹_1 = 0 (token 1 has no key)
        }
        for k in 1 - inc..t {
            let pk = &p1[(b * t + k) * e..(b * t + k + 1) * e];
            let s = &mut a1[(b * t + k) * t..(b * t + k) * t + k + inc];
            dot4_rows(pk, xb, e, e, s);
            for v in s.iter_mut() {
                *v *= inv_tau;
            }
            softmax_recip(s);
            combine_rows(s, xb, e, &mut h1b[k * f + e..(k + 1) * f]);
        }
    }

    // ---- layer 2, query row only: g_b = h¹_Tᵀ W², scores g_b · h¹_j, u² = Σ A² h¹_j.
    let q_view = View::rows(m, f, kq * f, t * f);
    gemm(
        1.0,
        h1,
        q_view,
        &params.w2,
        View::dense(f, f),
        0.0,
        gq,
        View::dense(m, f),
    );
    for b in 0..m {
        let h1b = &h1[b * t * f..(b + 1) * t * f];
        let gb = &gq[b * f..(b + 1) * f];
        let s = &mut a2[b * t..b * t + kq + inc];
        dot4_rows(gb, h1b, f, f, s);
        for v in s.iter_mut() {
            *v *= inv_tau;
        }
        softmax_recip(s);
        let h2b = &mut h2[b * g..(b + 1) * g];
        h2b[..f].copy_from_slice(&h1b[kq * f..(kq + 1) * f]);
        combine_rows(s, h1b, f, &mut h2b[f..]);
    }

    // ---- readout ŷ = W³ h², error and dL/dŷ.
    gemm(
        1.0,
        h2,
        View::dense(m, g),
        &params.w3,
        View::dense(d, g).t(),
        0.0,
        yhat,
        View::dense(m, d),
    );
    let mut sse = 0.0;
    for i in 0..m * d {
        let r = yhat[i] - y[i];
        sse += r * r;
        dy[i] = coef * r;
    }
    if !want_grad {
        return sse;
    }

    // ---- backward through the readout: dW³ = dYᵀ H², dH² = dY W³.
    gemm(
        1.0,
        dy,
        View::dense(m, d).t(),
        h2,
        View::dense(m, g),
        0.0,
        &mut grad.w3,
        View::dense(d, g),
    );
    gemm(
        1.0,
        dy,
        View::dense(m, d),
        &params.w3,
        View::dense(d, g),
        0.0,
        dh2,
        View::dense(m, g),
    );

    // ---- backward through layer 2 (query row).
    for b in 0..m {
        let h1b = &h1[b * t * f..(b + 1) * t * f];
        let gb = &gq[b * f..(b + 1) * f];
        let du2 = &dh2[b * g + f..(b + 1) * g];
        let ab = &a2[b * t..b * t + kq + inc];
        let ds = &mut row[..kq + inc];
        dot4_rows(du2, h1b, f, f, ds);
        let mut mean = 0.0;
        for (a, d) in ab.iter().zip(ds.iter()) {
            mean += a * d;
        }
        for (d, a) in ds.iter_mut().zip(ab) {
            *d = a * (*d - mean) * inv_tau; // dL/ds²_j (s² the unscaled score)
        }
        combine_rows(ds, h1b, f, &mut v[b * f..(b + 1) * f]);
        let du1b = &mut du1[b * t * e..(b + 1) * t * e];
        let (du2u, gbu) = (&du2[e..f], &gb[e..f]);
        for j in 0..kq + inc {
            // dL/du¹_j = A²_j du²[u¹ part] + ds²_j g_b[u¹ part] (inclusive: j = T too)
            let (aj, sj) = (ab[j], ds[j]);
            for ((d, x), y) in du1b[j * e..(j + 1) * e].iter_mut().zip(du2u).zip(gbu) {
                *d = aj * x + sj * y;
            }
        }
    }
    // dW² = Qᵀ V (Q: the query rows of h¹); W² v for the query's own u¹ (rows e..f of W²).
    gemm(
        1.0,
        h1,
        q_view.t(),
        v,
        View::dense(m, f),
        0.0,
        &mut grad.w2,
        View::dense(f, f),
    );
    gemm(
        1.0,
        v,
        View::dense(m, f),
        &params.w2,
        View::rows(e, f, e * f, f).t(),
        0.0,
        w2v,
        View::dense(m, e),
    );
    for b in 0..m {
        let dq = &mut du1[(b * t + kq) * e..(b * t + kq + 1) * e];
        let direct = &dh2[b * g + e..b * g + f];
        let via_scores = &w2v[b * e..(b + 1) * e];
        if inc == 0 {
            for i in 0..e {
                dq[i] = direct[i] + via_scores[i];
            }
        } else {
            // the query's h¹ is also a key and a value of layer 2: keep those terms
            for i in 0..e {
                dq[i] += direct[i] + via_scores[i];
            }
        }
    }

    // ---- backward through layer 1: dA¹, dS¹, Wm_k = Σ_j dS¹_kj x_j, dW¹ = Xᵀ Wm.
    for b in 0..m {
        let xb = &x[b * t * e..(b + 1) * t * e];
        if inc == 0 {
            wm[b * t * e..b * t * e + e].fill(0.0);
        }
        for k in 1 - inc..t {
            let duk = &du1[(b * t + k) * e..(b * t + k + 1) * e];
            let ak = &a1[(b * t + k) * t..(b * t + k) * t + k + inc];
            let ds = &mut row[..k + inc];
            dot4_rows(duk, xb, e, e, ds);
            let mut mean = 0.0;
            for (a, d) in ak.iter().zip(ds.iter()) {
                mean += a * d;
            }
            for (d, a) in ds.iter_mut().zip(ak) {
                *d = a * (*d - mean) * inv_tau;
            }
            combine_rows(ds, xb, e, &mut wm[(b * t + k) * e..(b * t + k + 1) * e]);
        }
    }
    gemm(
        1.0,
        x,
        View::dense(rows, e).t(),
        wm,
        View::dense(rows, e),
        0.0,
        &mut grad.w1,
        View::dense(e, e),
    );
    sse
}

/// One chunk's buffers and results.
#[derive(Debug, Clone)]
struct Chunk {
    /// Sequences in this chunk.
    m: usize,
    ws: Workspace,
    grad: Params,
    sse: f64,
}

/// The full model for a fixed batch size: per-chunk workspaces and gradients.
#[derive(Debug, Clone)]
pub struct Model {
    dims: Dims,
    loss_scale: f64,
    attention: Attention,
    batch: usize,
    chunks: Vec<Chunk>,
}

impl Model {
    /// A model for `batch` sequences of N pairs in dimension D, with loss
    /// L = loss_scale · mean_b ‖ŷ_b − y_b‖².
    pub fn new(dims: Dims, batch: usize, loss_scale: f64) -> Self {
        assert!(batch >= 1 && dims.n >= 1 && dims.d >= 1);
        let chunks = (0..batch.div_ceil(CHUNK))
            .map(|c| {
                let m = CHUNK.min(batch - c * CHUNK);
                Chunk {
                    m,
                    ws: Workspace::new(dims, m),
                    grad: Params::zeros(dims.d),
                    sse: 0.0,
                }
            })
            .collect();
        Model {
            dims,
            loss_scale,
            attention: Attention::default(),
            batch,
            chunks,
        }
    }

    /// The same model with the attention ablations `attention` (default: the paper's).
    pub fn with_attention(mut self, attention: Attention) -> Self {
        assert!(
            attention.temperature > 0.0 && attention.temperature.is_finite(),
            "temperature must be > 0 and finite"
        );
        self.attention = attention;
        self
    }

    pub fn attention(&self) -> Attention {
        self.attention
    }

    pub fn dims(&self) -> Dims {
        self.dims
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Loss of `params` on `batch` and its gradient (written into `grads`).
    pub fn loss_and_grad(&mut self, params: &Params, batch: &Batch, grads: &mut Params) -> f64 {
        self.run(params, batch, Some(grads))
    }

    /// Loss only.
    pub fn loss(&mut self, params: &Params, batch: &Batch) -> f64 {
        self.run(params, batch, None)
    }

    fn run(&mut self, params: &Params, batch: &Batch, grads: Option<&mut Params>) -> f64 {
        assert_eq!(batch.size(), self.batch, "batch size");
        assert_eq!((batch.spec.n, batch.spec.d), (self.dims.n, self.dims.d));
        let (dims, coef, want, att) = (self.dims, self.coef(), grads.is_some(), self.attention);
        let seq = batch.spec.sequence_len();
        let d = self.dims.d;
        self.chunks.par_iter_mut().enumerate().for_each(|(c, ch)| {
            let lo = c * CHUNK;
            let x = &batch.tokens[lo * seq..(lo + ch.m) * seq];
            let y = &batch.targets[lo * d..(lo + ch.m) * d];
            ch.sse = chunk_pass(
                dims,
                params,
                x,
                y,
                ch.m,
                coef,
                &mut ch.ws,
                &mut ch.grad,
                want,
                att,
            );
        });
        if let Some(g) = grads {
            self.reduce(g);
        }
        self.total_loss()
    }

    /// dL/dŷ = coef (ŷ − y) with coef = 2 loss_scale / B.
    fn coef(&self) -> f64 {
        2.0 * self.loss_scale / self.batch as f64
    }

    /// Sum the chunk gradients in chunk order (entry by entry, so blocks of entries are summed
    /// in parallel with the same bits as one serial pass).
    fn reduce(&self, grads: &mut Params) {
        let [g1, g2, g3] = grads.blocks_mut();
        let sum = |k: usize, out: &mut [f64]| {
            out.par_chunks_mut(REDUCE_BLOCK)
                .enumerate()
                .for_each(|(i, o)| {
                    let lo = i * REDUCE_BLOCK;
                    o.fill(0.0);
                    for ch in &self.chunks {
                        let src = &ch.grad.blocks()[k][lo..lo + o.len()];
                        for (x, y) in o.iter_mut().zip(src) {
                            *x += 1.0 * y;
                        }
                    }
                })
        };
        rayon::join(|| sum(0, g1), || rayon::join(|| sum(1, g2), || sum(2, g3)));
    }

    fn total_loss(&self) -> f64 {
        let sse: f64 = self.chunks.iter().map(|c| c.sse).sum();
        self.loss_scale * sse / self.batch as f64
    }
}

/// How the training data are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Refresh {
    /// A fresh batch of B sequences every step (online SGD with minibatches of B).
    #[default]
    Step,
    /// One fixed set of B sequences drawn before the first step (full-batch GD on it).
    Fixed,
}

/// One GD step's worth of state: the model, per-chunk samplers and data, and the gradient.
/// Each chunk draws its sequences from its own stream (seed, chunk index), so the data do not
/// depend on the thread count either.
pub struct Trainer {
    model: Model,
    spec: DataSpec,
    refresh: Refresh,
    samplers: Vec<Sampler>,
    batch: Batch,
    grads: Params,
    drawn: bool,
}

impl Trainer {
    pub fn new(spec: DataSpec, batch: usize, loss_scale: f64, refresh: Refresh, seed: u64) -> Self {
        let dims = Dims {
            n: spec.n,
            d: spec.d,
        };
        let model = Model::new(dims, batch, loss_scale);
        let samplers = (0..model.chunks.len())
            .map(|c| Sampler::new(spec, seed, c as u64))
            .collect();
        Trainer {
            model,
            spec,
            refresh,
            samplers,
            batch: Batch {
                spec,
                tokens: vec![0.0; batch * spec.sequence_len()],
                targets: vec![0.0; batch * spec.d],
                queries: vec![0; batch],
            },
            grads: Params::zeros(spec.d),
            drawn: false,
        }
    }

    /// The same trainer with the attention ablations `attention` (see [`Model::with_attention`]).
    pub fn with_attention(mut self, attention: Attention) -> Self {
        self.model = self.model.with_attention(attention);
        self
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn spec(&self) -> &DataSpec {
        &self.spec
    }

    /// Evaluate the loss and gradient at `params` on the next batch (drawn here). The gradient
    /// is kept for [`Trainer::apply`].
    ///
    /// Each chunk draws its sequences and runs its forward and backward pass in one parallel
    /// task (one fork-join per step, and the chunk's data are still in cache when its pass
    /// reads them). Chunk c draws from stream (seed, c); the result is [`Model::loss_and_grad`]
    /// on the batch so drawn (tested).
    pub fn evaluate(&mut self, params: &Params) -> f64 {
        let fresh = !(self.drawn && self.refresh == Refresh::Fixed);
        let seq = self.spec.sequence_len();
        let d = self.spec.d;
        let (dims, coef, att) = (self.model.dims, self.model.coef(), self.model.attention);
        let Batch {
            tokens,
            targets,
            queries,
            ..
        } = &mut self.batch;
        self.model
            .chunks
            .par_iter_mut()
            .zip(self.samplers.par_iter_mut())
            .zip(tokens.par_chunks_mut(CHUNK * seq))
            .zip(targets.par_chunks_mut(CHUNK * d))
            .zip(queries.par_chunks_mut(CHUNK))
            .for_each(|((((ch, s), x), y), q)| {
                if fresh {
                    s.fill(x, y, q);
                }
                ch.sse = chunk_pass(
                    dims,
                    params,
                    x,
                    y,
                    ch.m,
                    coef,
                    &mut ch.ws,
                    &mut ch.grad,
                    true,
                    att,
                );
            });
        self.drawn = true;
        self.model.reduce(&mut self.grads);
        self.model.total_loss()
    }

    /// GD update with the last evaluated gradient: W ← W − η ∇L.
    pub fn apply(&self, params: &mut Params, eta: f64) {
        params.axpy(-eta, &self.grads);
    }

    /// The gradient of the last evaluation.
    pub fn gradient(&self) -> &Params {
        &self.grads
    }

    /// The batch of the last evaluation.
    pub fn last_batch(&self) -> &Batch {
        &self.batch
    }
}

/// The full model under the training driver ([`crate::train`]): a [`Trainer`] and the
/// weights it moves. Coordinates are numbered W¹, then W², then W³, each row-major.
pub struct FullGd {
    pub trainer: Trainer,
    pub params: Params,
}

impl Params {
    /// The block (0, 1, 2 for W¹, W², W³) and offset of flat coordinate `index`.
    fn locate(&self, index: usize) -> (usize, usize) {
        let (n1, n2) = (self.w1.len(), self.w2.len());
        match index {
            i if i < n1 => (0, i),
            i if i < n1 + n2 => (1, i - n1),
            i => (2, i - n1 - n2),
        }
    }
}

impl crate::train::Learner for FullGd {
    fn evaluate(&mut self, _step: u64) -> f64 {
        self.trainer.evaluate(&self.params)
    }

    fn gradient_is_finite(&self) -> bool {
        self.trainer.gradient().is_finite()
    }

    fn descend(&mut self, _step: u64, lr: f64, trained: Option<&[usize]>) {
        match trained {
            None => self.trainer.apply(&mut self.params, lr),
            Some(idx) => {
                let grads = self.trainer.gradient().blocks();
                for &i in idx {
                    let (b, j) = self.params.locate(i);
                    self.params.blocks_mut()[b][j] -= lr * grads[b][j];
                }
            }
        }
    }

    fn largest(&self) -> (usize, f64) {
        crate::train::largest_abs(self.params.blocks().into_iter().flatten().copied())
    }

    fn param_name(&self, index: usize) -> String {
        let (b, j) = self.params.locate(index);
        // columns: W¹ and W² are square (2D, 4D), W³ is D × 8D
        let cols = [2, 4, 8][b] * self.params.d;
        format!("W{}[{},{}]", b + 1, j / cols, j % cols)
    }
}

#[cfg(test)]
mod tests;
