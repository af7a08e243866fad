//! The disentangled two-layer attention-only transformer of Musat et al. (theory/musat.md §4,
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
//! Only the query position's output enters the loss, so layer 2 is evaluated for the query row
//! alone. W rows index query slots and columns key slots.
//!
//! The batch is split into chunks of [`CHUNK`] sequences, a number that does not depend on the
//! thread count; chunks run in parallel (rayon) and their gradients are summed in chunk order,
//! so results are bit-identical on any number of threads. The dense products of a chunk are
//! GEMMs over all its sequences; the attention parts are per-sequence loops. Every buffer is
//! allocated when the model is built; a step allocates nothing.

use super::data::{DataSpec, Sampler};
use super::gemm::{View, gemm};
use rand::SeedableRng;
use rayon::prelude::*;

/// Sequences per chunk of the batch (fixed, so that results do not depend on the thread count).
pub const CHUNK: usize = 16;

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
        let mut normal = super::data::NormalSource;
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

/// B sequences in the token layout of [`super::data`]: `tokens` is B · T · 2D, `targets` B · D.
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

#[inline(always)]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f64; 4];
    let chunks = n / 4;
    for c in 0..chunks {
        let i = 4 * c;
        acc[0] += a[i] * b[i];
        acc[1] += a[i + 1] * b[i + 1];
        acc[2] += a[i + 2] * b[i + 2];
        acc[3] += a[i + 3] * b[i + 3];
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for i in 4 * chunks..n {
        s += a[i] * b[i];
    }
    s
}

/// y ← y + a x.
#[inline(always)]
fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// Softmax of `s` in place (shifted by the maximum).
#[inline(always)]
fn softmax(s: &mut [f64]) {
    let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut z = 0.0;
    for v in s.iter_mut() {
        *v = (*v - m).exp();
        z += *v;
    }
    let inv = 1.0 / z;
    for v in s.iter_mut() {
        *v *= inv;
    }
}

/// [`chunk_pass_body`], compiled for AVX2 when the CPU has it (the loops then use 256-bit
/// vectors; no floating-point operation is reordered or fused, so results are the same bits).
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
) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if super::simd::avx2() {
        // SAFETY: the CPU supports AVX2 (checked at run time just above).
        return unsafe { chunk_pass_avx2(dims, params, x, y, m, coef, ws, grad, want_grad) };
    }
    chunk_pass_body(dims, params, x, y, m, coef, ws, grad, want_grad)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
fn chunk_pass_avx2(
    dims: Dims,
    params: &Params,
    x: &[f64],
    y: &[f64],
    m: usize,
    coef: f64,
    ws: &mut Workspace,
    grad: &mut Params,
    want_grad: bool,
) -> f64 {
    chunk_pass_body(dims, params, x, y, m, coef, ws, grad, want_grad)
}

/// Forward and backward pass over one chunk of m sequences. Writes the chunk's gradient (of
/// `coef/2 · Σ_b ‖ŷ_b − y_b‖²`, i.e. with dL/dŷ = coef (ŷ − y)) into `grad`, and returns the
/// chunk's sum of squared errors Σ_b ‖ŷ_b − y_b‖². With `want_grad = false` only the forward
/// pass runs.
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
) -> f64 {
    let (t, e, f, g, d) = (dims.t(), dims.e(), dims.f(), dims.g(), dims.d);
    let rows = m * t;
    let kq = t - 1; // the query token (0-based)
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
            h1b[k * f + e..(k + 1) * f].fill(0.0);
        }
        for k in 1..t {
            let pk = &p1[(b * t + k) * e..(b * t + k + 1) * e];
            let s = &mut a1[(b * t + k) * t..(b * t + k) * t + k];
            for (j, sj) in s.iter_mut().enumerate() {
                *sj = dot(pk, &xb[j * e..(j + 1) * e]);
            }
            softmax(s);
            let u = &mut h1b[k * f + e..(k + 1) * f];
            for (j, &aj) in s.iter().enumerate() {
                axpy(u, aj, &xb[j * e..(j + 1) * e]);
            }
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
        let s = &mut a2[b * t..b * t + kq];
        for (j, sj) in s.iter_mut().enumerate() {
            *sj = dot(gb, &h1b[j * f..(j + 1) * f]);
        }
        softmax(s);
        let h2b = &mut h2[b * g..(b + 1) * g];
        h2b[..f].copy_from_slice(&h1b[kq * f..(kq + 1) * f]);
        let u2 = &mut h2b[f..];
        u2.fill(0.0);
        for (j, &aj) in s.iter().enumerate() {
            axpy(u2, aj, &h1b[j * f..(j + 1) * f]);
        }
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
        let ab = &a2[b * t..b * t + kq];
        let ds = &mut row[..kq];
        let mut mean = 0.0;
        for (j, dsj) in ds.iter_mut().enumerate() {
            *dsj = dot(du2, &h1b[j * f..(j + 1) * f]);
            mean += ab[j] * *dsj;
        }
        let vb = &mut v[b * f..(b + 1) * f];
        vb.fill(0.0);
        let du1b = &mut du1[b * t * e..(b + 1) * t * e];
        for j in 0..kq {
            let sj = ab[j] * (ds[j] - mean); // dL/ds²_j
            axpy(vb, sj, &h1b[j * f..(j + 1) * f]);
            // dL/du¹_j = A²_j du²[u¹ part] + ds²_j g_b[u¹ part]
            let dj = &mut du1b[j * e..(j + 1) * e];
            for i in 0..e {
                dj[i] = ab[j] * du2[e + i] + sj * gb[e + i];
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
        for i in 0..e {
            dq[i] = direct[i] + via_scores[i];
        }
    }

    // ---- backward through layer 1: dA¹, dS¹, Wm_k = Σ_j dS¹_kj x_j, dW¹ = Xᵀ Wm.
    for b in 0..m {
        let xb = &x[b * t * e..(b + 1) * t * e];
        wm[b * t * e..b * t * e + e].fill(0.0);
        for k in 1..t {
            let duk = &du1[(b * t + k) * e..(b * t + k + 1) * e];
            let ak = &a1[(b * t + k) * t..(b * t + k) * t + k];
            let ds = &mut row[..k];
            let mut mean = 0.0;
            for (j, dsj) in ds.iter_mut().enumerate() {
                *dsj = dot(duk, &xb[j * e..(j + 1) * e]);
                mean += ak[j] * *dsj;
            }
            let wk = &mut wm[(b * t + k) * e..(b * t + k + 1) * e];
            wk.fill(0.0);
            for j in 0..k {
                axpy(wk, ak[j] * (ds[j] - mean), &xb[j * e..(j + 1) * e]);
            }
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
            batch,
            chunks,
        }
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
        let (dims, coef, want) = (self.dims, self.coef(), grads.is_some());
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

    /// Sum the chunk gradients in chunk order.
    fn reduce(&self, grads: &mut Params) {
        grads.fill(0.0);
        for ch in &self.chunks {
            grads.axpy(1.0, &ch.grad);
        }
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

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn spec(&self) -> &DataSpec {
        &self.spec
    }

    /// Draw the data of the next step (in parallel over chunks, each from its own stream).
    fn draw(&mut self) {
        if self.drawn && self.refresh == Refresh::Fixed {
            return;
        }
        let seq = self.spec.sequence_len();
        let d = self.spec.d;
        let Batch {
            tokens,
            targets,
            queries,
            ..
        } = &mut self.batch;
        self.samplers
            .par_iter_mut()
            .zip(tokens.par_chunks_mut(CHUNK * seq))
            .zip(targets.par_chunks_mut(CHUNK * d))
            .zip(queries.par_chunks_mut(CHUNK))
            .for_each(|(((s, x), y), q)| s.fill(x, y, q));
        self.drawn = true;
    }

    /// Evaluate the loss and gradient at `params` on the next batch (drawn here). The gradient
    /// is kept for [`Trainer::apply`].
    pub fn evaluate(&mut self, params: &Params) -> f64 {
        self.draw();
        self.model
            .loss_and_grad(params, &self.batch, &mut self.grads)
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

#[cfg(test)]
mod tests;
