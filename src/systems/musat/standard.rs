//! The standard two-layer attention-only transformer of Musat et al.'s token experiments
//! (docs/theory/musat.md §11–§13): token embeddings T, positional embeddings P, an **additive**
//! residual stream, per-layer W_Q, W_K, W_V (d_head × D) and W_O (D × d_head), and an
//! unembedding W_o (N_E × D), in f64 with a batched forward pass and a hand-written backward
//! pass.
//!
//! ```text
//! h⁰_k  = t_{v_k} + p_k                                   (token v_k at position k, k = 0..T−1)
//! s^ℓ_kj = (W_Q^ℓ h_k)ᵀ(W_K^ℓ h_j) / √d_head             keys j ≤ k (inclusive mask) or j < k
//! A^ℓ    = softmax_j(s^ℓ)         h^ℓ_k = h^{ℓ−1}_k + W_O^ℓ W_V^ℓ Σ_j A^ℓ_kj h^{ℓ−1}_j
//! z      = W_o h²_{T−1}                                  (logits over the N_E tokens)
//! L      = loss_scale · (1/B) Σ_b ℓ(z_b, y_b)
//!          ℓ = ‖z − e_y‖²  (squared error on the target's one-hot embedding e_y, `mse`)
//!          ℓ = log Σ_v e^{z_v} − z_y  (cross-entropy over the vocabulary, `ce`)
//! ```
//! The task (docs/theory/musat.md §3 in tokens, [`data`]): N item→label pairs of 2N distinct
//! tokens drawn per sequence, then the query item; the target is its label. Only the query's
//! output enters the loss, so layer 2 is evaluated for the query row alone.
//!
//! **Merged matrices.** The scores and values depend on the factors only through
//! G^ℓ = W_Q^ℓᵀ W_K^ℓ (D × D) and F^ℓ = W_O^ℓ W_V^ℓ (D × D): s_kj = h_kᵀ G h_j / √d_head and
//! h^ℓ_k = h^{ℓ−1}_k + F ū_k with ū_k = Σ_j A_kj h_j. A step forms G and F once, runs the
//! passes with them (the big products are D × D, layer 2 costs O(T·D) per sequence instead of
//! O(T·D·d_head)), and turns their gradients into the factors' by the chain rule:
//! ∂L/∂W_Q = W_K (∂L/∂G)ᵀ, ∂L/∂W_K = W_Q ∂L/∂G, ∂L/∂W_O = (∂L/∂F) W_Vᵀ, ∂L/∂W_V = W_Oᵀ ∂L/∂F.
//! The loss is the model's with the factors (tested against a naive per-sequence pass that
//! forms W_Q h, W_K h, W_V h explicitly), and every block's gradient against central
//! differences.
//!
//! **Determinism.** The batch is cut into chunks of [`CHUNK`] sequences (a number that does not
//! depend on the thread count); each chunk draws its sequences from its own ChaCha8 stream
//! (seed, chunk index), runs its pass in parallel with the others and keeps its gradient; the
//! chunk gradients are summed in chunk order. Results are bit-identical on any thread count
//! (tested). Every buffer is allocated when the model is built; a step allocates nothing.

use crate::numerics::gemm::{View, gemm};
use crate::numerics::normal::NormalSource;
use crate::systems::musat::disentangled::Mask;
use crate::systems::musat::musat3::Query;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub mod data;
pub mod measures;
mod pass;

pub use data::TokenSampler;

/// Sequences per chunk of the batch (fixed, so that results do not depend on the thread count).
pub const CHUNK: usize = 16;

/// Gradient entries per parallel task of the chunk-order reduction.
const REDUCE_BLOCK: usize = 1024;

/// The loss on the query's logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    /// ‖z − e_y‖²: squared error against the target's one-hot embedding in the output space.
    #[default]
    Mse,
    /// log Σ_v e^{z_v} − z_y: cross-entropy over the vocabulary.
    Ce,
}

/// How positions are embedded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Positions {
    /// P is a parameter, initialised like the others and trained.
    #[default]
    Learned,
    /// P is fixed: sinusoidal rows (sin, cos of k·10000^{−2i/D}) scaled to unit norm.
    Fixed,
}

/// Sizes of the standard model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Dims {
    /// Item–label pairs N (T = 2N + 1 tokens per sequence).
    pub n: usize,
    /// Width D of the residual stream.
    pub d: usize,
    /// Head dimension d_head of W_Q, W_K, W_V (rows) and W_O (columns).
    pub d_head: usize,
    /// Vocabulary size N_E (≥ 2N).
    pub vocab: usize,
    /// Number of positional embeddings N_p (≥ 2N + 1).
    pub positions: usize,
}

impl Dims {
    /// Tokens per sequence, T = 2N + 1.
    pub fn t(&self) -> usize {
        2 * self.n + 1
    }

    /// Why these sizes cannot hold the task, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.n < 1 || self.d < 1 || self.d_head < 1 {
            return Err("N, D and d_head must be >= 1".into());
        }
        if self.vocab < 2 * self.n {
            return Err(format!(
                "the vocabulary must hold the 2N = {} distinct tokens of a sequence, got {}",
                2 * self.n,
                self.vocab
            ));
        }
        if self.positions < self.t() {
            return Err(format!(
                "the positions must cover the 2N + 1 = {} tokens of a sequence, got {}",
                self.t(),
                self.positions
            ));
        }
        Ok(())
    }
}

/// The parameter blocks, in the order of the flat parameter vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// T: row v is t_v (N_E × D).
    Tok,
    /// P: row k is p_k (N_p × D).
    Pos,
    Q1,
    K1,
    V1,
    /// W_O¹ (D × d_head).
    O1,
    Q2,
    K2,
    V2,
    O2,
    /// W_o (N_E × D).
    Unemb,
}

/// Every block, in flat order.
pub const BLOCKS: [Block; 11] = [
    Block::Tok,
    Block::Pos,
    Block::Q1,
    Block::K1,
    Block::V1,
    Block::O1,
    Block::Q2,
    Block::K2,
    Block::V2,
    Block::O2,
    Block::Unemb,
];

impl Block {
    /// (rows, columns) of the block, row-major.
    pub fn shape(self, dims: &Dims) -> (usize, usize) {
        let Dims {
            d,
            d_head,
            vocab,
            positions,
            ..
        } = *dims;
        match self {
            Block::Tok | Block::Unemb => (vocab, d),
            Block::Pos => (positions, d),
            Block::Q1 | Block::K1 | Block::V1 | Block::Q2 | Block::K2 | Block::V2 => (d_head, d),
            Block::O1 | Block::O2 => (d, d_head),
        }
    }

    /// The name used in messages and figures.
    pub fn name(self) -> &'static str {
        match self {
            Block::Tok => "T",
            Block::Pos => "P",
            Block::Q1 => "W_Q1",
            Block::K1 => "W_K1",
            Block::V1 => "W_V1",
            Block::O1 => "W_O1",
            Block::Q2 => "W_Q2",
            Block::K2 => "W_K2",
            Block::V2 => "W_V2",
            Block::O2 => "W_O2",
            Block::Unemb => "W_o",
        }
    }

    fn index(self) -> usize {
        BLOCKS.iter().position(|&b| b == self).expect("listed")
    }
}

/// All parameters in one flat vector, block after block ([`BLOCKS`]), each row-major.
/// Gradients have the same layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub dims: Dims,
    pub data: Vec<f64>,
    offsets: [usize; 12],
}

impl Params {
    /// All zero.
    pub fn zeros(dims: Dims) -> Self {
        let mut offsets = [0usize; 12];
        for (i, b) in BLOCKS.iter().enumerate() {
            let (r, c) = b.shape(&dims);
            offsets[i + 1] = offsets[i] + r * c;
        }
        Params {
            dims,
            data: vec![0.0; offsets[11]],
            offsets,
        }
    }

    /// I.i.d. N(0, std²) entries from a seeded ChaCha8 stream (stream u64::MAX, apart from the
    /// data streams), block after block; with [`Positions::Fixed`] P is then replaced by the
    /// sinusoidal rows ([`sinusoidal`]).
    pub fn init(dims: Dims, std: f64, positions: Positions, seed: u64) -> Self {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(u64::MAX);
        let mut p = Params::zeros(dims);
        let mut normal = NormalSource;
        for v in p.data.iter_mut() {
            *v = std * normal.sample(&mut rng);
        }
        if positions == Positions::Fixed {
            sinusoidal(dims.positions, dims.d, p.block_mut(Block::Pos));
        }
        p
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The range of `block` in the flat vector.
    pub fn range(&self, block: Block) -> std::ops::Range<usize> {
        let i = block.index();
        self.offsets[i]..self.offsets[i + 1]
    }

    pub fn block(&self, block: Block) -> &[f64] {
        &self.data[self.range(block)]
    }

    pub fn block_mut(&mut self, block: Block) -> &mut [f64] {
        let r = self.range(block);
        &mut self.data[r]
    }

    /// The block and (row, column) of flat coordinate `index`.
    pub fn locate(&self, index: usize) -> (Block, usize, usize) {
        let i = (0..11)
            .find(|&i| index < self.offsets[i + 1])
            .expect("index within the parameters");
        let block = BLOCKS[i];
        let cols = block.shape(&self.dims).1;
        let j = index - self.offsets[i];
        (block, j / cols, j % cols)
    }

    /// Whether every entry is finite.
    pub fn is_finite(&self) -> bool {
        self.data.iter().all(|v| v.is_finite())
    }
}

/// Sinusoidal position rows p_k[2i] = sin(k ω_i), p_k[2i+1] = cos(k ω_i), ω_i = 10000^{−2i/D},
/// each row scaled to unit norm; `out` is `positions × d`, row-major.
pub fn sinusoidal(positions: usize, d: usize, out: &mut [f64]) {
    for k in 0..positions {
        let row = &mut out[k * d..(k + 1) * d];
        for (c, v) in row.iter_mut().enumerate() {
            let i = c / 2;
            let w = 10000f64.powf(-2.0 * i as f64 / d as f64);
            *v = if c % 2 == 0 {
                (k as f64 * w).sin()
            } else {
                (k as f64 * w).cos()
            };
        }
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        for v in row.iter_mut() {
            *v /= norm;
        }
    }
}

/// What the model computes besides its sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    pub dims: Dims,
    pub loss: Loss,
    /// The loss is loss_scale · the mean over the batch.
    pub loss_scale: f64,
    pub mask: Mask,
    /// Whether P is trained (its gradient is computed and applied).
    pub learned_positions: bool,
}

/// B sequences of token ids: `tokens` is B · T, `targets` B.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub tokens: Vec<u32>,
    pub targets: Vec<u32>,
}

impl Batch {
    pub fn zeros(t: usize, size: usize) -> Self {
        Batch {
            tokens: vec![0; size * t],
            targets: vec![0; size],
        }
    }

    /// Draw `size` sequences from `sampler`.
    pub fn sample(sampler: &mut TokenSampler, size: usize) -> Self {
        let mut b = Batch::zeros(sampler.t(), size);
        sampler.fill(&mut b.tokens, &mut b.targets);
        b
    }

    pub fn size(&self) -> usize {
        self.targets.len()
    }
}

/// The merged matrices of one parameter point: G¹, F¹, G², F² (each D × D, row-major).
#[derive(Debug, Clone)]
pub(crate) struct Merged {
    pub g1: Vec<f64>,
    pub f1: Vec<f64>,
    pub g2: Vec<f64>,
    pub f2: Vec<f64>,
}

impl Merged {
    fn zeros(d: usize) -> Self {
        Merged {
            g1: vec![0.0; d * d],
            f1: vec![0.0; d * d],
            g2: vec![0.0; d * d],
            f2: vec![0.0; d * d],
        }
    }

    /// G = W_Qᵀ W_K and F = W_O W_V of both layers.
    pub fn compute(&mut self, p: &Params) {
        let Dims { d, d_head: h, .. } = p.dims;
        for (g, f, q, k, v, o) in [
            (
                &mut self.g1,
                &mut self.f1,
                Block::Q1,
                Block::K1,
                Block::V1,
                Block::O1,
            ),
            (
                &mut self.g2,
                &mut self.f2,
                Block::Q2,
                Block::K2,
                Block::V2,
                Block::O2,
            ),
        ] {
            let qk = View::dense(h, d);
            gemm(
                1.0,
                p.block(q),
                qk.t(),
                p.block(k),
                qk,
                0.0,
                g,
                View::dense(d, d),
            );
            gemm(
                1.0,
                p.block(o),
                View::dense(d, h),
                p.block(v),
                View::dense(h, d),
                0.0,
                f,
                View::dense(d, d),
            );
        }
    }
}

/// The gradient of one chunk in merged coordinates: T, P, G¹, F¹, G², F², W_o.
#[derive(Debug, Clone)]
pub(crate) struct MergedGrad {
    pub data: Vec<f64>,
    d: usize,
    vocab: usize,
    positions: usize,
}

impl MergedGrad {
    fn zeros(dims: &Dims) -> Self {
        let len = 2 * dims.vocab * dims.d + dims.positions * dims.d + 4 * dims.d * dims.d;
        MergedGrad {
            data: vec![0.0; len],
            d: dims.d,
            vocab: dims.vocab,
            positions: dims.positions,
        }
    }

    /// The slices (tok, pos, g1, f1, g2, f2, unemb).
    #[allow(clippy::type_complexity)]
    pub fn parts_mut(
        &mut self,
    ) -> (
        &mut [f64],
        &mut [f64],
        &mut [f64],
        &mut [f64],
        &mut [f64],
        &mut [f64],
        &mut [f64],
    ) {
        let (vd, pd, dd) = (
            self.vocab * self.d,
            self.positions * self.d,
            self.d * self.d,
        );
        let (tok, rest) = self.data.split_at_mut(vd);
        let (pos, rest) = rest.split_at_mut(pd);
        let (g1, rest) = rest.split_at_mut(dd);
        let (f1, rest) = rest.split_at_mut(dd);
        let (g2, rest) = rest.split_at_mut(dd);
        let (f2, unemb) = rest.split_at_mut(dd);
        (tok, pos, g1, f1, g2, f2, unemb)
    }
}

/// One chunk's buffers and results.
#[derive(Debug, Clone)]
struct Chunk {
    m: usize,
    ws: pass::Workspace,
    grad: MergedGrad,
    loss: f64,
}

/// The model for a fixed batch size: per-chunk workspaces and gradients, the merged matrices.
#[derive(Debug, Clone)]
pub struct Model {
    cfg: Config,
    batch: usize,
    chunks: Vec<Chunk>,
    merged: Merged,
    total: MergedGrad,
}

impl Model {
    /// A model for `batch` sequences.
    pub fn new(cfg: Config, batch: usize) -> Self {
        assert!(batch >= 1);
        if let Err(e) = cfg.dims.check() {
            panic!("invalid standard-model sizes: {e}");
        }
        let chunks = (0..batch.div_ceil(CHUNK))
            .map(|c| {
                let m = CHUNK.min(batch - c * CHUNK);
                Chunk {
                    m,
                    ws: pass::Workspace::new(&cfg.dims, m),
                    grad: MergedGrad::zeros(&cfg.dims),
                    loss: 0.0,
                }
            })
            .collect();
        Model {
            cfg,
            batch,
            chunks,
            merged: Merged::zeros(cfg.dims.d),
            total: MergedGrad::zeros(&cfg.dims),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Loss of `params` on `batch`; its gradient into `grads`.
    pub fn loss_and_grad(&mut self, params: &Params, batch: &Batch, grads: &mut Params) -> f64 {
        self.run(params, batch, true);
        self.finish_gradient(params, grads);
        self.total_loss()
    }

    /// Loss only.
    pub fn loss(&mut self, params: &Params, batch: &Batch) -> f64 {
        self.run(params, batch, false);
        self.total_loss()
    }

    fn run(&mut self, params: &Params, batch: &Batch, want_grad: bool) {
        assert_eq!(batch.size(), self.batch, "batch size");
        assert_eq!(params.dims, self.cfg.dims, "parameter sizes");
        self.merged.compute(params);
        let t = self.cfg.dims.t();
        let (cfg, coef, merged) = (self.cfg, self.coef(), &self.merged);
        self.chunks.par_iter_mut().enumerate().for_each(|(c, ch)| {
            let lo = c * CHUNK;
            ch.loss = pass::chunk_pass(
                &cfg,
                params,
                merged,
                &batch.tokens[lo * t..(lo + ch.m) * t],
                &batch.targets[lo..lo + ch.m],
                ch.m,
                coef,
                &mut ch.ws,
                &mut ch.grad,
                want_grad,
            );
        });
    }

    /// dL/dz = coef · (z − e_y) for MSE (coef = 2 loss_scale / B) and coef · (softmax(z) − e_y)
    /// for cross-entropy (coef = loss_scale / B).
    fn coef(&self) -> f64 {
        let s = self.cfg.loss_scale / self.batch as f64;
        match self.cfg.loss {
            Loss::Mse => 2.0 * s,
            Loss::Ce => s,
        }
    }

    fn total_loss(&self) -> f64 {
        let sum: f64 = self.chunks.iter().map(|c| c.loss).sum();
        self.cfg.loss_scale * sum / self.batch as f64
    }

    /// Sum the chunk gradients in chunk order (blocks of entries in parallel, each entry in
    /// chunk order: the bits of one serial pass), then the chain rule from G, F to the factors.
    fn finish_gradient(&mut self, params: &Params, grads: &mut Params) {
        let chunks = &self.chunks;
        self.total
            .data
            .par_chunks_mut(REDUCE_BLOCK)
            .enumerate()
            .for_each(|(i, o)| {
                let (lo, len) = (i * REDUCE_BLOCK, o.len());
                o.fill(0.0);
                for ch in chunks {
                    for (x, y) in o.iter_mut().zip(&ch.grad.data[lo..lo + len]) {
                        *x += y;
                    }
                }
            });
        let Dims { d, d_head: h, .. } = self.cfg.dims;
        let (tok, pos, dg1, df1, dg2, df2, unemb) = self.total.parts_mut();
        grads.block_mut(Block::Tok).copy_from_slice(tok);
        if self.cfg.learned_positions {
            grads.block_mut(Block::Pos).copy_from_slice(pos);
        } else {
            grads.block_mut(Block::Pos).fill(0.0);
        }
        grads.block_mut(Block::Unemb).copy_from_slice(unemb);
        let (dd, hd, dh) = (View::dense(d, d), View::dense(h, d), View::dense(d, h));
        for (dg, df, [q, k, v, o]) in [
            (&*dg1, &*df1, [Block::Q1, Block::K1, Block::V1, Block::O1]),
            (&*dg2, &*df2, [Block::Q2, Block::K2, Block::V2, Block::O2]),
        ] {
            // ∂L/∂W_Q = W_K (∂L/∂G)ᵀ, ∂L/∂W_K = W_Q ∂L/∂G
            gemm(
                1.0,
                params.block(k),
                hd,
                dg,
                dd.t(),
                0.0,
                grads.block_mut(q),
                hd,
            );
            gemm(
                1.0,
                params.block(q),
                hd,
                dg,
                dd,
                0.0,
                grads.block_mut(k),
                hd,
            );
            // ∂L/∂W_O = (∂L/∂F) W_Vᵀ, ∂L/∂W_V = W_Oᵀ ∂L/∂F
            gemm(
                1.0,
                df,
                dd,
                params.block(v),
                hd.t(),
                0.0,
                grads.block_mut(o),
                dh,
            );
            gemm(
                1.0,
                params.block(o),
                dh.t(),
                df,
                dd,
                0.0,
                grads.block_mut(v),
                hd,
            );
        }
    }
}

/// The optimizer of a standard-model run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// W ← W − η ∇L.
    #[default]
    Gd,
    /// Adam (β₁ = 0.9, β₂ = 0.999, ε = 1e-8, bias-corrected), learning rate η.
    Adam,
}

/// One step's worth of state: the model, per-chunk samplers and data, the gradient and the
/// optimizer's moments. Chunk c draws its sequences from stream (seed, c).
pub struct Trainer {
    model: Model,
    samplers: Vec<TokenSampler>,
    batch: Batch,
    grads: Params,
    optimizer: Optimizer,
    /// Adam's first and second moments (empty for GD).
    moments: (Vec<f64>, Vec<f64>),
    /// Fixed batch: drawn once, before the first step.
    fixed: bool,
    drawn: bool,
}

impl Trainer {
    pub fn new(cfg: Config, query: Query, batch: usize, optimizer: Optimizer, seed: u64) -> Self {
        let model = Model::new(cfg, batch);
        let samplers = (0..model.chunks.len())
            .map(|c| TokenSampler::new(cfg.dims.n, cfg.dims.vocab, query, seed, c as u64))
            .collect();
        let grads = Params::zeros(cfg.dims);
        let len = grads.len();
        let moments = match optimizer {
            Optimizer::Gd => (Vec::new(), Vec::new()),
            Optimizer::Adam => (vec![0.0; len], vec![0.0; len]),
        };
        Trainer {
            model,
            samplers,
            batch: Batch::zeros(cfg.dims.t(), batch),
            grads,
            optimizer,
            moments,
            fixed: false,
            drawn: false,
        }
    }

    /// Draw one batch before the first step and train on it throughout (full-batch GD).
    pub fn with_fixed_batch(mut self) -> Self {
        self.fixed = true;
        self
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The loss and gradient at `params` on the next batch (each chunk draws its sequences and
    /// runs its pass in one parallel task). The gradient is kept for [`Trainer::apply`].
    pub fn evaluate(&mut self, params: &Params) -> f64 {
        let fresh = !(self.fixed && self.drawn);
        let t = self.model.cfg.dims.t();
        self.model.merged.compute(params);
        let (cfg, coef) = (self.model.cfg, self.model.coef());
        let merged = &self.model.merged;
        let Batch { tokens, targets } = &mut self.batch;
        self.model
            .chunks
            .par_iter_mut()
            .zip(self.samplers.par_iter_mut())
            .zip(tokens.par_chunks_mut(CHUNK * t))
            .zip(targets.par_chunks_mut(CHUNK))
            .for_each(|(((ch, s), x), y)| {
                if fresh {
                    s.fill(x, y);
                }
                ch.loss = pass::chunk_pass(
                    &cfg,
                    params,
                    merged,
                    x,
                    y,
                    ch.m,
                    coef,
                    &mut ch.ws,
                    &mut ch.grad,
                    true,
                );
            });
        self.drawn = true;
        self.model.finish_gradient(params, &mut self.grads);
        self.model.total_loss()
    }

    /// One update with the last evaluated gradient at global step `step` (Adam's bias
    /// correction uses it): GD W ← W − η∇L, or Adam. P is left alone unless it is learned.
    pub fn apply(&mut self, params: &mut Params, step: u64, lr: f64) {
        let skip = (!self.model.cfg.learned_positions).then(|| params.range(Block::Pos));
        let g = &self.grads.data;
        let update = |i: usize| skip.as_ref().is_none_or(|r| !r.contains(&i));
        match self.optimizer {
            Optimizer::Gd => {
                for (i, (w, g)) in params.data.iter_mut().zip(g).enumerate() {
                    if update(i) {
                        *w -= lr * g;
                    }
                }
            }
            Optimizer::Adam => {
                let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
                let k = (step + 1).min(i32::MAX as u64) as i32;
                let (c1, c2) = (1.0 - b1.powi(k), 1.0 - b2.powi(k));
                let (m1, m2) = (&mut self.moments.0, &mut self.moments.1);
                for (i, w) in params.data.iter_mut().enumerate() {
                    if !update(i) {
                        continue;
                    }
                    m1[i] = b1 * m1[i] + (1.0 - b1) * g[i];
                    m2[i] = b2 * m2[i] + (1.0 - b2) * g[i] * g[i];
                    *w -= lr * (m1[i] / c1) / ((m2[i] / c2).sqrt() + eps);
                }
            }
        }
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

/// The standard model under the training driver ([`crate::train`]): a [`Trainer`] and the
/// weights it moves. Coordinates are numbered block after block ([`BLOCKS`]), each row-major.
pub struct StandardLearner {
    pub trainer: Trainer,
    pub params: Params,
}

impl crate::train::Learner for StandardLearner {
    fn evaluate(&mut self, _step: u64) -> f64 {
        self.trainer.evaluate(&self.params)
    }

    fn gradient_is_finite(&self) -> bool {
        self.trainer.gradient().is_finite()
    }

    /// The whole model moves (the driver's `trained` subsets are not used by this model).
    fn descend(&mut self, step: u64, lr: f64, _trained: Option<&[usize]>) {
        self.trainer.apply(&mut self.params, step, lr);
    }

    fn largest(&self) -> (usize, f64) {
        crate::train::largest_abs(self.params.data.iter().copied())
    }

    fn param_name(&self, index: usize) -> String {
        let (b, r, c) = self.params.locate(index);
        format!("{}[{r},{c}]", b.name())
    }
}

#[cfg(test)]
mod tests;
