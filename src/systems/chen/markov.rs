//! In-context n-gram Markov chains (docs/theory/chen.md §3): a parent set pa of offsets, a kernel
//! π : [d]^|pa| → Δ([d]) drawn per sequence with independent Dirichlet(α·1_d) rows, the
//! stationary law of the lifted chain, and seeded data sets split into training and validation.
//!
//! Conventions:
//! - parents are stored as positive offsets r_1 < … < r_n (pa = {−r_1, …, −r_n});
//! - a parent context (x_{l−r_1}, …, x_{l−r_n}) has row index Σ_k x_{l−r_k} d^{n−k}: the most
//!   recent parent is the most significant digit, as in the authors' generator;
//! - a sequence holds L + 1 tokens x_1..x_{L+1}; the input is x_{1:L}, the target x_{L+1}.
//!
//! Randomness: sequence i (and kernel draw i) uses a ChaCha8 stream `i` of the seed, so data are
//! the same on any number of threads.

use crate::numerics::kernels::softmax_div;
use crate::numerics::normal::polar;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Errors of the chain layer.
#[derive(Debug, thiserror::Error)]
pub enum MarkovError {
    /// Power iteration did not settle (a lifted chain that is not primitive, or mixes too slowly).
    #[error(
        "the stationary law of the lifted chain did not converge after {iterations} iterations \
         (L1 change {change:e}); the chain may not be primitive"
    )]
    NotConverged { iterations: usize, change: f64 },
}

/// How the first r_max tokens of a sequence are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// i.i.d. uniform, no burn-in (the authors' code).
    #[default]
    Uniform,
    /// From the stationary law of the lifted chain (the theory).
    Stationary,
    /// As `Uniform`, and the last input token x_L is redrawn uniformly before the target is
    /// drawn from the kernel (the authors' one-parent variant, docs/theory/chen.md §3).
    #[serde(rename = "uniform_last")]
    UniformLast,
}

/// A parent set and vocabulary: the shape of a kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainShape {
    pub d: usize,
    /// Positive parent offsets, strictly increasing.
    pub parents: Vec<usize>,
}

impl ChainShape {
    /// `parents` as positive offsets (any order, distinct, each ≥ 1); d ≥ 2.
    pub fn new(d: usize, parents: &[usize]) -> Self {
        assert!(d >= 2, "vocabulary d must be >= 2");
        let mut p = parents.to_vec();
        p.sort_unstable();
        p.dedup();
        assert!(!p.is_empty() && p[0] >= 1, "parents must be offsets >= 1");
        ChainShape { d, parents: p }
    }
    /// The largest parent offset.
    pub fn r_max(&self) -> usize {
        *self.parents.last().expect("non-empty")
    }
    /// Number of parent contexts d^n.
    pub fn contexts(&self) -> usize {
        self.d.pow(self.parents.len() as u32)
    }
    /// Row index of the context of the token at position `l` of `tokens` (needs l ≥ r_max).
    pub fn context_at(&self, tokens: &[u8], l: usize) -> usize {
        self.parents
            .iter()
            .fold(0, |acc, &r| acc * self.d + tokens[l - r] as usize)
    }
}

/// A transition kernel: one row of Δ([d]) per parent context.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    pub shape: ChainShape,
    /// contexts × d, row-major.
    pub rows: Vec<f64>,
}

impl Kernel {
    /// A kernel from explicit rows (each must sum to 1).
    pub fn from_rows(shape: ChainShape, rows: Vec<f64>) -> Self {
        assert_eq!(rows.len(), shape.contexts() * shape.d);
        for row in rows.chunks(shape.d) {
            let s: f64 = row.iter().sum();
            assert!(
                (s - 1.0).abs() < 1e-9 && row.iter().all(|&p| p >= 0.0),
                "kernel rows must be probability vectors"
            );
        }
        Kernel { shape, rows }
    }

    /// A kernel given by a function of the parent tokens (x_{−r_1}, …, x_{−r_n}).
    pub fn from_fn(shape: ChainShape, f: impl Fn(&[usize]) -> Vec<f64>) -> Self {
        let n = shape.parents.len();
        let mut rows = Vec::with_capacity(shape.contexts() * shape.d);
        let mut ctx = vec![0usize; n];
        for c in 0..shape.contexts() {
            let mut rem = c;
            for k in (0..n).rev() {
                ctx[k] = rem % shape.d;
                rem /= shape.d;
            }
            let row = f(&ctx);
            assert_eq!(row.len(), shape.d);
            rows.extend(row);
        }
        Kernel::from_rows(shape, rows)
    }

    /// Independent Dirichlet(α·1_d) rows.
    pub fn dirichlet(shape: ChainShape, alpha: f64, rng: &mut impl Rng) -> Self {
        let d = shape.d;
        let mut rows = vec![0.0; shape.contexts() * d];
        for row in rows.chunks_mut(d) {
            dirichlet_symmetric(alpha, row, rng);
        }
        Kernel { shape, rows }
    }

    pub fn row(&self, context: usize) -> &[f64] {
        &self.rows[context * self.shape.d..(context + 1) * self.shape.d]
    }

    /// π(x | context) for the history `state` (the last r_max or more tokens in base d, most
    /// recent least significant).
    pub(crate) fn row_of_state(&self, state: usize) -> &[f64] {
        let d = self.shape.d;
        // the token at offset r from the next position is digit r − 1 (least significant first)
        let ctx = self
            .shape
            .parents
            .iter()
            .fold(0, |acc, &r| acc * d + (state / d.pow((r - 1) as u32)) % d);
        self.row(ctx)
    }

    /// Stationary law of the lifted chain on [d]^{r_max}: states (x_{l−r_max}, …, x_{l−1}) in
    /// base d with x_{l−1} least significant. Power iteration on the lazy chain (P + I)/2
    /// (same stationary law, aperiodic): by repeated squaring of the transition matrix for up to
    /// 64 states, by vector iteration above that.
    pub fn stationary(&self) -> Result<Vec<f64>, MarkovError> {
        let d = self.shape.d;
        let n = d.pow(self.shape.r_max() as u32);
        if n <= 64 {
            self.stationary_by_squaring(n)
        } else {
            let (mu, converged, change) = self.iterate_lazy(n, 1_000_000);
            if converged {
                Ok(mu)
            } else {
                Err(MarkovError::NotConverged {
                    iterations: 1_000_000,
                    change,
                })
            }
        }
    }

    /// The law the first tokens of a `stationary`-start sequence are drawn from: the exact
    /// stationary law when the lifted chain has at most 64 states (repeated squaring, which
    /// always settles), otherwise power iteration on the lazy chain from the uniform law until it
    /// changes by less than 1e-15 or for at most 10⁴ steps (then it is the law after that
    /// burn-in).
    pub fn start_law(&self) -> Vec<f64> {
        let n = self.shape.d.pow(self.shape.r_max() as u32);
        if n <= 64
            && let Ok(mu) = self.stationary_by_squaring(n)
        {
            return mu;
        }
        self.iterate_lazy(n, 10_000).0
    }

    pub(crate) fn stationary_by_squaring(&self, n: usize) -> Result<Vec<f64>, MarkovError> {
        let d = self.shape.d;
        let mut p = vec![0.0; n * n];
        for s in 0..n {
            p[s * n + s] += 0.5;
            let row = self.row_of_state(s);
            for (x, &px) in row.iter().enumerate() {
                p[s * n + (s * d) % n + x] += 0.5 * px;
            }
        }
        let mut q = vec![0.0; n * n];
        let mut change = f64::INFINITY;
        for it in 0..200 {
            for i in 0..n {
                for j in 0..n {
                    let mut acc = 0.0;
                    for k in 0..n {
                        acc += p[i * n + k] * p[k * n + j];
                    }
                    q[i * n + j] = acc;
                }
                let s: f64 = q[i * n..(i + 1) * n].iter().sum();
                q[i * n..(i + 1) * n].iter_mut().for_each(|v| *v /= s);
            }
            std::mem::swap(&mut p, &mut q);
            // Converged when every row equals the first (and the last squaring changed nothing).
            let spread = (1..n)
                .map(|i| (0..n).map(|j| (p[i * n + j] - p[j]).abs()).sum::<f64>())
                .fold(0.0, f64::max);
            let step: f64 = (0..n * n).map(|k| (p[k] - q[k]).abs()).sum::<f64>() / n as f64;
            change = spread.max(step);
            if it >= 2 && change < 1e-13 {
                let mut mu: Vec<f64> = (0..n)
                    .map(|j| (0..n).map(|i| p[i * n + j]).sum::<f64>() / n as f64)
                    .collect();
                let s: f64 = mu.iter().sum();
                mu.iter_mut().for_each(|v| *v /= s);
                return Ok(mu);
            }
        }
        Err(MarkovError::NotConverged {
            iterations: 200,
            change,
        })
    }

    /// Power iteration of the lazy chain from the uniform law: (law, converged, last L1 change).
    pub(crate) fn iterate_lazy(&self, n: usize, max_iter: usize) -> (Vec<f64>, bool, f64) {
        let d = self.shape.d;
        let mut mu = vec![1.0 / n as f64; n];
        let mut next = vec![0.0; n];
        let mut change = f64::INFINITY;
        for it in 0..max_iter {
            next.iter_mut().zip(&mu).for_each(|(a, &b)| *a = 0.5 * b);
            for (s, &m) in mu.iter().enumerate() {
                if m == 0.0 {
                    continue;
                }
                let base = (s * d) % n;
                for (x, &px) in self.row_of_state(s).iter().enumerate() {
                    next[base + x] += 0.5 * m * px;
                }
            }
            let s: f64 = next.iter().sum();
            next.iter_mut().for_each(|v| *v /= s);
            change = mu.iter().zip(&next).map(|(a, b)| (a - b).abs()).sum();
            std::mem::swap(&mut mu, &mut next);
            if change < 1e-15 && it > 10 {
                return (mu, true, change);
            }
        }
        (mu, false, change)
    }

    /// Draw the next token given the tokens so far (the position is `tokens.len()`).
    fn next_token(&self, tokens: &[u8], rng: &mut impl Rng) -> u8 {
        let l = tokens.len();
        let ctx = self
            .shape
            .parents
            .iter()
            .fold(0, |acc, &r| acc * self.shape.d + tokens[l - r] as usize);
        sample_categorical(self.row(ctx), rng) as u8
    }

    /// A sequence of `len` tokens: the first r_max by `start`, then the chain.
    pub fn sample_sequence(
        &self,
        len: usize,
        start: Start,
        stationary: Option<&[f64]>,
        rng: &mut impl Rng,
        out: &mut Vec<u8>,
    ) {
        let d = self.shape.d;
        let r_max = self.shape.r_max();
        out.clear();
        match start {
            Start::Uniform | Start::UniformLast => {
                for _ in 0..r_max.min(len) {
                    out.push(rng.random_range(0..d) as u8);
                }
            }
            Start::Stationary => {
                let mu = stationary.expect("the stationary law is given for a stationary start");
                let mut s = sample_categorical(mu, rng);
                // digits from the most significant (oldest) to the least (most recent)
                let mut digits = vec![0u8; r_max];
                for k in (0..r_max).rev() {
                    digits[k] = (s % d) as u8;
                    s /= d;
                }
                out.extend(digits.iter().take(len));
            }
        }
        while out.len() < len {
            if start == Start::UniformLast && out.len() + 1 == len && len >= 2 {
                // x_L (the last input token) uniform, then the target from the kernel
                out[len - 2] = rng.random_range(0..d) as u8;
            }
            let x = self.next_token(out, rng);
            out.push(x);
        }
    }
}

/// Index drawn from the probability vector `p` by inversion (the last positive entry absorbs
/// round-off).
pub fn sample_categorical(p: &[f64], rng: &mut impl Rng) -> usize {
    let u: f64 = rng.random::<f64>();
    let mut acc = 0.0;
    let mut last = 0;
    for (i, &pi) in p.iter().enumerate() {
        if pi > 0.0 {
            acc += pi;
            last = i;
            if u < acc {
                return i;
            }
        }
    }
    last
}

/// ln G for G ~ Gamma(shape, 1): Marsaglia–Tsang (2000) for shape ≥ 1; for shape < 1 the boost
/// G = G' U^{1/shape} with G' ~ Gamma(shape + 1), kept in log form so tiny variates (common for
/// shape = 0.1) do not underflow. The normals are [`polar`] draws (the stream the shipped
/// scenarios were made with).
pub fn ln_gamma_variate(shape: f64, rng: &mut impl Rng) -> f64 {
    assert!(shape > 0.0 && shape.is_finite());
    if shape < 1.0 {
        let u: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
        return ln_gamma_variate(shape + 1.0, rng) + u.ln() / shape;
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = polar(rng);
        let v = 1.0 + c * x;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u: f64 = 1.0 - rng.random::<f64>();
        if u < 1.0 - 0.0331 * x.powi(4) || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
            return (d * v).ln();
        }
    }
}

/// A Dirichlet(α·1) vector written into `out`: G_i ~ Gamma(α) drawn as ln G_i, normalised in
/// log space (G_i / Σ G = softmax(ln G)_i, [`softmax_div`]).
pub fn dirichlet_symmetric(alpha: f64, out: &mut [f64], rng: &mut impl Rng) {
    for v in out.iter_mut() {
        *v = ln_gamma_variate(alpha, rng);
    }
    softmax_div(out);
}

/// Where kernels come from.
#[derive(Debug, Clone, PartialEq)]
pub enum KernelPrior {
    /// A fresh kernel per sequence with Dirichlet(α) rows (the paper's ICL task).
    Dirichlet { shape: ChainShape, alpha: f64 },
    /// One fixed kernel for every sequence (hand-built chains in tests and checks).
    Fixed(Kernel),
}

impl KernelPrior {
    pub fn shape(&self) -> &ChainShape {
        match self {
            KernelPrior::Dirichlet { shape, .. } => shape,
            KernelPrior::Fixed(k) => &k.shape,
        }
    }
    /// A kernel drawn from the prior (the fixed kernel itself for `Fixed`).
    pub fn draw(&self, rng: &mut impl Rng) -> Kernel {
        match self {
            KernelPrior::Dirichlet { shape, alpha } => {
                Kernel::dirichlet(shape.clone(), *alpha, rng)
            }
            KernelPrior::Fixed(k) => k.clone(),
        }
    }
}

/// An RNG for item `index` of the stream family `seed` (independent of thread scheduling).
pub fn item_rng(seed: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    rng
}

/// A set of sequences of L + 1 tokens each: the input x_{1:L} and the target x_{L+1}.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequences {
    pub d: usize,
    /// Input length L.
    pub length: usize,
    /// n × (L + 1) tokens, row-major.
    pub tokens: Vec<u8>,
}

impl Sequences {
    pub fn len(&self) -> usize {
        self.tokens.len() / (self.length + 1)
    }
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
    /// Tokens x_1..x_{L+1} of sequence i (0-based slice index l − 1 for x_l).
    pub fn sequence(&self, i: usize) -> &[u8] {
        let w = self.length + 1;
        &self.tokens[i * w..(i + 1) * w]
    }
    /// The sub-set of sequences `range`.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Sequences {
        let w = self.length + 1;
        Sequences {
            d: self.d,
            length: self.length,
            tokens: self.tokens[range.start * w..range.end * w].to_vec(),
        }
    }
}

/// Settings of a generated data set.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSpec {
    pub prior: KernelPrior,
    /// Input length L (each sequence has L + 1 tokens).
    pub length: usize,
    pub start: Start,
    pub n_sequences: usize,
    pub seed: u64,
}

/// Generate `n_sequences` sequences (sequence i from stream i of the seed, in parallel). A
/// `stationary` start draws from [`Kernel::start_law`].
pub fn generate(spec: &DataSpec) -> Sequences {
    let shape = spec.prior.shape();
    let w = spec.length + 1;
    let fixed_mu = match (&spec.prior, spec.start) {
        (KernelPrior::Fixed(k), Start::Stationary) => Some(k.start_law()),
        _ => None,
    };
    let rows: Vec<Vec<u8>> = (0..spec.n_sequences)
        .into_par_iter()
        .map(|i| {
            let mut rng = item_rng(spec.seed, i as u64);
            let kernel = spec.prior.draw(&mut rng);
            let own;
            let mu = match (&fixed_mu, spec.start) {
                (Some(m), _) => Some(m.as_slice()),
                (None, Start::Stationary) => {
                    own = kernel.start_law();
                    Some(own.as_slice())
                }
                (None, Start::Uniform | Start::UniformLast) => None,
            };
            let mut out = Vec::with_capacity(w);
            kernel.sample_sequence(w, spec.start, mu, &mut rng, &mut out);
            out
        })
        .collect();
    let mut tokens = Vec::with_capacity(spec.n_sequences * w);
    for r in rows {
        tokens.extend(r);
    }
    Sequences {
        d: shape.d,
        length: spec.length,
        tokens,
    }
}

/// The authors' protocol: one generated set, the first `round(train_fraction · n)` sequences
/// for training, the rest for validation.
pub fn split(all: &Sequences, train_fraction: f64) -> (Sequences, Sequences) {
    let n = all.len();
    let n_train = ((train_fraction * n as f64).round() as usize).clamp(1, n.saturating_sub(1));
    (all.slice(0..n_train), all.slice(n_train..n))
}

#[cfg(test)]
mod tests;
