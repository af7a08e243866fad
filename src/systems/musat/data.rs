//! Seeded samplers for the minimal ICL task of Musat et al. (docs/theory/musat.md §3).
//!
//! A sequence is N item–label pairs followed by a query item, T = 2N + 1 tokens, each token
//! h⁰ = [content; position] ∈ R^{2D}, stored row-major (token-major) in a flat slice:
//!
//! | token (0-based) | content | position |
//! |---|---|---|
//! | 2i − 2 (item i) | x_i | p_i |
//! | 2i − 1 (label i) | y_i | M p_i (`rotated`), p_i (`same`) or 0 (`none`) |
//! | 2N (query) | x_q | p_{N+1} (`fresh`) or p_q (`p_q`, an ablation) |
//!
//! The target is y_q. M = J = [[0, −I], [I, 0]] (the default) or the swap involution
//! S = [[0, I], [I, 0]] ([`MMatrix`]; D even).
//!
//! Orthonormal data (Theorem 2): x_1..x_N, y_1..y_N are the first 2N columns of a Haar
//! orthogonal matrix. With M = J the positions come from a Haar unitary frame z_1..z_{N+1} in
//! C^{D/2} with p_k = [Re z_k; Im z_k], so that {p_k, J p_k} is orthonormal. With M = S they
//! come from two independent Haar orthogonal frames u_1..u_{N+1}, v_1..v_{N+1} in R^{D/2}: the
//! Haar frames of the ±1 eigenspaces of S are f⁺_k = [u_k; u_k]/√2, f⁻_k = [v_k; −v_k]/√2 and
//! p_k = (f⁺_k + f⁻_k)/√2 = [(u_k + v_k)/2; (u_k − v_k)/2], so that S p_k = (f⁺_k − f⁻_k)/√2 and
//! {p_k, S p_k} is orthonormal (docs/theory/musat.md §3 [reconstruction]). Either needs D ≥ 2N + 2.
//! Every frame is the Q factor of a Householder QR of a Gaussian matrix **with the sign/phase fix**
//! (column j of Q times R_jj/|R_jj|, Mezzadri, arXiv math-ph/0609050); without it the frames
//! are not Haar ([`SignFix::Naive`], kept only so that tests can show the difference).
//!
//! Isotropic data (Theorem 1): x_i, y_i, p_i, p_{N+1} i.i.d. N(0, I_D/D).
//!
//! Every sampler draws from a seeded ChaCha8 stream, its normals by the ziggurat of
//! `numerics::normal`; the same (seed, stream) gives the same sequences on any machine and
//! thread count.

use crate::numerics::kernels::dot4;
use crate::numerics::normal::Ziggurat;
use crate::numerics::simd::{self, Kernel};
use crate::systems::musat::musat3::Query;
use lanes::{LANES, LaneQr, Lanes};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The fixed matrix M of the label cue M p_i and of the blocks α₂ I + α₃ M (D even).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum MMatrix {
    /// J = [[0, −I_{D/2}], [I_{D/2}, 0]]: J² = −I, Jᵀ = −J (the paper's rotation).
    #[default]
    #[serde(rename = "J")]
    J,
    /// S = [[0, I_{D/2}], [I_{D/2}, 0]]: S² = I, Sᵀ = S (docs/theory/musat.md §3 option `swap`).
    #[serde(rename = "swap")]
    Swap,
}

impl MMatrix {
    /// The column of the nonzero entry of row i of M (D even).
    #[inline]
    pub fn col(self, i: usize, d: usize) -> usize {
        let h = d / 2;
        if i < h { i + h } else { i - h }
    }

    /// The nonzero entry of row i of M: M_{i, col(i)}.
    #[inline]
    pub fn val(self, i: usize, d: usize) -> f64 {
        match self {
            MMatrix::J => {
                if i < d / 2 {
                    -1.0
                } else {
                    1.0
                }
            }
            MMatrix::Swap => 1.0,
        }
    }

    /// out = M p (both of length D, D even).
    pub fn apply(self, p: &[f64], out: &mut [f64]) {
        let d = p.len();
        assert!(d.is_multiple_of(2) && out.len() == d);
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.val(i, d) * p[self.col(i, d)];
        }
    }

    /// The name used in scenarios and outputs: `J` or `swap`.
    pub fn name(self) -> &'static str {
        match self {
            MMatrix::J => "J",
            MMatrix::Swap => "swap",
        }
    }
}

/// Which input distribution (docs/theory/musat.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DataKind {
    /// Haar orthonormal contents and positions (Theorem 2; needs D ≥ 2N + 2).
    #[default]
    Orthonormal,
    /// i.i.d. N(0, I/D) contents and positions (Theorem 1).
    Isotropic,
}

/// The positional cue of a label token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LabelPosition {
    /// M p_i: the built-in cue of Eq. 4.
    #[default]
    Rotated,
    /// p_i: the label shares its item's position.
    Same,
    /// The zero vector: labels carry no position.
    None,
}

/// The positional vector of the query token (docs/theory/musat.md §3, §13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum QueryPosition {
    /// p_{N+1}, independent of every p_i: the paper's layout.
    #[default]
    #[serde(rename = "fresh")]
    Fresh,
    /// p_q, the queried item's own position (ablation only): the query can find its pair by
    /// position alone. The samplers still draw p_{N+1} (same random stream as `fresh`) and do
    /// not use it.
    #[serde(rename = "p_q")]
    PQ,
}

/// Whether the QR factor gets the sign/phase fix that makes it Haar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignFix {
    /// Column j of Q times R_jj/|R_jj|: exactly Haar.
    Haar,
    /// Q as Householder QR returns it (R_jj = −e^{i arg a_jj}‖a_j‖): **not** Haar.
    Naive,
}

/// Shape and distribution of the sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DataSpec {
    /// Item–label pairs N ≥ 1.
    pub n: usize,
    /// Content dimension D (even; ≥ 2N + 2 for orthonormal data).
    pub d: usize,
    pub data: DataKind,
    pub query: Query,
    pub label_position: LabelPosition,
    pub query_position: QueryPosition,
    /// The matrix M of the label cue M p_i and of the orthonormal position frames.
    pub m: MMatrix,
}

impl DataSpec {
    /// Tokens per sequence, T = 2N + 1.
    pub fn tokens(&self) -> usize {
        2 * self.n + 1
    }
    /// Length of one sequence in the flat token layout, T · 2D.
    pub fn sequence_len(&self) -> usize {
        self.tokens() * 2 * self.d
    }
    /// The smallest D that orthonormal data allow: 2N + 2.
    pub fn min_orthonormal_d(n: usize) -> usize {
        2 * n + 2
    }
    /// Why this spec cannot be sampled, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.n < 1 {
            return Err(format!("N must be >= 1, got {}", self.n));
        }
        if self.d < 2 || !self.d.is_multiple_of(2) {
            return Err(format!(
                "D must be even and >= 2 (M = {} acts on pairs of coordinates), got {}",
                self.m.name(),
                self.d
            ));
        }
        if self.data == DataKind::Orthonormal && self.d < Self::min_orthonormal_d(self.n) {
            return Err(format!(
                "orthonormal data need D >= 2N + 2 = {}, got {}",
                Self::min_orthonormal_d(self.n),
                self.d
            ));
        }
        Ok(())
    }
}

/// Householder QR of an n × m complex matrix (m ≤ n, column-major, real and imaginary parts
/// separate), returning the first m columns of Q in place of the input. Real input gives real Q.
///
/// With `SignFix::Haar` column j of Q is multiplied by R_jj/|R_jj|, so that R has a positive
/// diagonal and Q is Haar-distributed when the input is i.i.d. Gaussian.
pub fn householder_q(
    n: usize,
    m: usize,
    re: &mut [f64],
    im: &mut [f64],
    fix: SignFix,
    scratch: &mut QrScratch,
) {
    assert!(m <= n && re.len() >= n * m && im.len() >= n * m);
    scratch.ensure(n, m);
    let QrScratch { vre, vim, dre, dim } = scratch;
    // Factor: column j gets the reflector H_j = I − 2 v vᴴ (‖v‖ = 1) with H_j a_j = α e_j.
    for j in 0..m {
        let col = j * n;
        let mut norm2 = 0.0;
        for i in j..n {
            norm2 += re[col + i] * re[col + i] + im[col + i] * im[col + i];
        }
        let norm = norm2.sqrt();
        let (x0r, x0i) = (re[col + j], im[col + j]);
        let abs0 = (x0r * x0r + x0i * x0i).sqrt();
        // phase of x0 (1 when x0 = 0)
        let (ph_r, ph_i) = if abs0 > 0.0 {
            (x0r / abs0, x0i / abs0)
        } else {
            (1.0, 0.0)
        };
        // α = −phase·‖x‖ avoids cancellation in v = x − α e_j.
        let (ar, ai) = (-ph_r * norm, -ph_i * norm);
        dre[j] = ar;
        dim[j] = ai;
        let v = j * n;
        for i in 0..n {
            vre[v + i] = if i < j { 0.0 } else { re[col + i] };
            vim[v + i] = if i < j { 0.0 } else { im[col + i] };
        }
        vre[v + j] -= ar;
        vim[v + j] -= ai;
        let mut vn2 = 0.0;
        for i in j..n {
            vn2 += vre[v + i] * vre[v + i] + vim[v + i] * vim[v + i];
        }
        if vn2 > 0.0 {
            let s = 1.0 / vn2.sqrt();
            for i in j..n {
                vre[v + i] *= s;
                vim[v + i] *= s;
            }
        }
        // Apply H_j to the remaining columns k > j: a_k −= 2 v (vᴴ a_k).
        for k in (j + 1)..m {
            let c = k * n;
            let (mut pr, mut pi) = (0.0, 0.0);
            for i in j..n {
                // conj(v_i) a_i
                pr += vre[v + i] * re[c + i] + vim[v + i] * im[c + i];
                pi += vre[v + i] * im[c + i] - vim[v + i] * re[c + i];
            }
            for i in j..n {
                re[c + i] -= 2.0 * (vre[v + i] * pr - vim[v + i] * pi);
                im[c + i] -= 2.0 * (vre[v + i] * pi + vim[v + i] * pr);
            }
        }
    }
    // Q[:, 0..m] = H_0 ⋯ H_{m−1} [I; 0], built by applying the reflectors in reverse order.
    for k in 0..m {
        let c = k * n;
        for i in 0..n {
            re[c + i] = if i == k { 1.0 } else { 0.0 };
            im[c + i] = 0.0;
        }
        for j in (0..=k).rev() {
            let v = j * n;
            let (mut pr, mut pi) = (0.0, 0.0);
            for i in j..n {
                pr += vre[v + i] * re[c + i] + vim[v + i] * im[c + i];
                pi += vre[v + i] * im[c + i] - vim[v + i] * re[c + i];
            }
            for i in j..n {
                re[c + i] -= 2.0 * (vre[v + i] * pr - vim[v + i] * pi);
                im[c + i] -= 2.0 * (vre[v + i] * pi + vim[v + i] * pr);
            }
        }
        if fix == SignFix::Haar {
            // λ = R_kk/|R_kk|; Q' = Q λ makes R' = λ̄ R have a positive diagonal.
            let a = (dre[k] * dre[k] + dim[k] * dim[k]).sqrt();
            let (lr, li) = if a > 0.0 {
                (dre[k] / a, dim[k] / a)
            } else {
                (1.0, 0.0)
            };
            for i in 0..n {
                let (qr, qi) = (re[c + i], im[c + i]);
                re[c + i] = qr * lr - qi * li;
                im[c + i] = qr * li + qi * lr;
            }
        }
    }
}

/// [`householder_q`] for real input: the same reflectors without imaginary parts.
pub fn householder_q_real(
    n: usize,
    m: usize,
    a: &mut [f64],
    fix: SignFix,
    scratch: &mut QrScratch,
) {
    assert!(m <= n && a.len() >= n * m);
    scratch.ensure(n, m);
    let QrScratch { vre, dre, .. } = scratch;
    for j in 0..m {
        let (col, rest) = a[j * n..].split_at_mut(n);
        let x = &col[j..];
        let norm = dot4(x, x).sqrt();
        let sign = if x[0] < 0.0 { -1.0 } else { 1.0 };
        let alpha = -sign * norm;
        dre[j] = alpha;
        let v = &mut vre[j * n..(j + 1) * n];
        v[..j].fill(0.0);
        v[j..].copy_from_slice(x);
        v[j] -= alpha;
        let vn = dot4(&v[j..], &v[j..]).sqrt();
        if vn > 0.0 {
            for t in &mut v[j..] {
                *t /= vn;
            }
        }
        for k in 0..(m - j - 1) {
            let c = &mut rest[k * n + j..(k + 1) * n];
            let p = dot4(&v[j..], c);
            for (ci, vi) in c.iter_mut().zip(&v[j..]) {
                *ci -= 2.0 * p * vi;
            }
        }
    }
    for k in 0..m {
        let c = &mut a[k * n..(k + 1) * n];
        c.fill(0.0);
        c[k] = 1.0;
        for j in (0..=k).rev() {
            let v = &vre[j * n + j..(j + 1) * n];
            let p = dot4(v, &c[j..]);
            for (ci, vi) in c[j..].iter_mut().zip(v) {
                *ci -= 2.0 * p * vi;
            }
        }
        if fix == SignFix::Haar && dre[k] < 0.0 {
            for ci in c.iter_mut() {
                *ci = -*ci;
            }
        }
    }
}

/// Reflector storage for [`householder_q`]; grows on first use, then reused.
#[derive(Debug, Clone, Default)]
pub struct QrScratch {
    vre: Vec<f64>,
    vim: Vec<f64>,
    dre: Vec<f64>,
    dim: Vec<f64>,
}

impl QrScratch {
    fn ensure(&mut self, n: usize, m: usize) {
        if self.vre.len() < n * m {
            self.vre.resize(n * m, 0.0);
            self.vim.resize(n * m, 0.0);
        }
        if self.dre.len() < m {
            self.dre.resize(m, 0.0);
            self.dim.resize(m, 0.0);
        }
    }
}

/// Draws sequences of one [`DataSpec`] from a seeded stream. Buffers are allocated once.
#[derive(Debug, Clone)]
pub struct Sampler {
    spec: DataSpec,
    rng: ChaCha8Rng,
    /// The ziggurat tables (the normals of every frame).
    zig: &'static Ziggurat,
    fix: SignFix,
    qr: QrScratch,
    /// Content frame (D × 2N, column-major).
    c_re: Vec<f64>,
    /// Position frame (D/2 × (N+1), column-major): after a draw, p_k = [p_re[k]; p_im[k]]
    /// (M = J: the real and imaginary parts of a complex frame; M = S: see [`swap_positions`]).
    p_re: Vec<f64>,
    p_im: Vec<f64>,
    /// [`LANES`] content and position frames factored together ([`Sampler::fill`]).
    lane_qr: LaneQr,
    lane_c: Vec<Lanes>,
    lane_re: Vec<Lanes>,
    lane_im: Vec<Lanes>,
}

impl Sampler {
    /// A sampler on stream `stream` of `seed` (independent streams for parallel chunks).
    /// Panics if the spec cannot be sampled ([`DataSpec::check`] is done by the caller).
    pub fn new(spec: DataSpec, seed: u64, stream: u64) -> Self {
        if let Err(e) = spec.check() {
            panic!("invalid data spec: {e}");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        let (d, n) = (spec.d, spec.n);
        Sampler {
            spec,
            rng,
            zig: Ziggurat::get(),
            fix: SignFix::Haar,
            qr: QrScratch::default(),
            c_re: vec![0.0; d * 2 * n],
            p_re: vec![0.0; d / 2 * (n + 1)],
            p_im: vec![0.0; d / 2 * (n + 1)],
            lane_qr: LaneQr::default(),
            lane_c: vec![[0.0; LANES]; d * 2 * n],
            lane_re: vec![[0.0; LANES]; d / 2 * (n + 1)],
            lane_im: vec![[0.0; LANES]; d / 2 * (n + 1)],
        }
    }

    /// Use the naive (not Haar) QR frames. Only for demonstrating the pitfall.
    pub fn with_sign_fix(mut self, fix: SignFix) -> Self {
        self.fix = fix;
        self
    }

    pub fn spec(&self) -> &DataSpec {
        &self.spec
    }

    #[inline(always)]
    fn gaussian(&mut self) -> f64 {
        self.zig.sample(&mut self.rng)
    }

    /// A real D × m orthonormal frame (column-major) into `self.c_re`.
    fn content_frame(&mut self, m: usize) {
        let d = self.spec.d;
        for i in 0..d * m {
            self.c_re[i] = self.gaussian();
        }
        householder_q_real(d, m, &mut self.c_re, self.fix, &mut self.qr);
    }

    /// A complex D/2 × m unitary frame (column-major) into `self.p_re`, `self.p_im`.
    fn unitary_position_frame(&mut self, m: usize) {
        let h = self.spec.d / 2;
        self.position_normals(h * m);
        householder_q(h, m, &mut self.p_re, &mut self.p_im, self.fix, &mut self.qr);
    }

    /// The first `len` entries of `p_re`, `p_im`: i.i.d. standard normals, interleaved.
    fn position_normals(&mut self, len: usize) {
        for i in 0..len {
            self.p_re[i] = self.gaussian();
            self.p_im[i] = self.gaussian();
        }
    }

    /// Positions p_1..p_m with {p_k, M p_k} orthonormal, halves into `self.p_re`, `self.p_im`.
    /// The same normals for either M: J factors them as one complex frame, S as two real
    /// frames u (from `p_re`) and v (from `p_im`), then [`swap_positions`].
    fn position_frame(&mut self, m: usize) {
        let h = self.spec.d / 2;
        match self.spec.m {
            MMatrix::J => self.unitary_position_frame(m),
            MMatrix::Swap => {
                self.position_normals(h * m);
                householder_q_real(h, m, &mut self.p_re, self.fix, &mut self.qr);
                householder_q_real(h, m, &mut self.p_im, self.fix, &mut self.qr);
                swap_positions(&mut self.p_re[..h * m], &mut self.p_im[..h * m]);
            }
        }
    }

    /// Draw the first m columns of a D × m Haar orthogonal frame (for tests of the sampler):
    /// entry (i, j) is `out[j * D + i]`.
    pub fn orthogonal_frame(&mut self, m: usize, out: &mut [f64]) {
        assert!(m <= 2 * self.spec.n && out.len() >= self.spec.d * m);
        self.content_frame(m);
        out[..self.spec.d * m].copy_from_slice(&self.c_re[..self.spec.d * m]);
    }

    /// Draw a D/2 × m Haar unitary frame (for tests): real and imaginary parts, column-major.
    pub fn unitary_frame(&mut self, m: usize, re: &mut [f64], im: &mut [f64]) {
        let h = self.spec.d / 2;
        assert!(m <= self.spec.n + 1 && re.len() >= h * m && im.len() >= h * m);
        self.unitary_position_frame(m);
        re[..h * m].copy_from_slice(&self.p_re[..h * m]);
        im[..h * m].copy_from_slice(&self.p_im[..h * m]);
    }

    /// Draw one sequence: `tokens` (T · 2D) and `target` (D). Returns the queried pair q
    /// (1-based).
    pub fn sample(&mut self, tokens: &mut [f64], target: &mut [f64]) -> usize {
        let DataSpec { n, d, data, .. } = self.spec;
        debug_assert_eq!(tokens.len(), self.spec.sequence_len());
        debug_assert_eq!(target.len(), d);
        let q = self.draw_query();
        match data {
            DataKind::Orthonormal => {
                self.content_frame(2 * n);
                self.position_frame(n + 1);
            }
            DataKind::Isotropic => {
                let s = 1.0 / (d as f64).sqrt();
                for i in 0..d * 2 * n {
                    self.c_re[i] = s * self.gaussian();
                }
                // Positions N(0, I_D/D): the D real coordinates of p_k are [p_re; p_im].
                let h = d / 2;
                for i in 0..h * (n + 1) {
                    self.p_re[i] = s * self.gaussian();
                    self.p_im[i] = s * self.gaussian();
                }
            }
        }
        self.write_sequence(q, tokens, target);
        q
    }

    /// The queried pair of the next sequence (1-based): N, or uniform (one draw).
    fn draw_query(&mut self) -> usize {
        match self.spec.query {
            Query::Last => self.spec.n,
            Query::Uniform => self.rng.random_range(1..=self.spec.n),
        }
    }

    /// Lay out one sequence from the frames in `c_re`, `p_re`, `p_im` and the query q.
    fn write_sequence(&self, q: usize, tokens: &mut [f64], target: &mut [f64]) {
        let DataSpec {
            n,
            d,
            label_position,
            query_position,
            m,
            ..
        } = self.spec;
        let e = 2 * d;
        let h = d / 2;
        for i in 1..=n {
            let item = &mut tokens[(2 * i - 2) * e..(2 * i - 1) * e];
            item[..d].copy_from_slice(&self.c_re[(i - 1) * d..i * d]);
            let (pr, pi) = (
                &self.p_re[(i - 1) * h..i * h],
                &self.p_im[(i - 1) * h..i * h],
            );
            item[d..d + h].copy_from_slice(pr);
            item[d + h..].copy_from_slice(pi);
            let label = &mut tokens[(2 * i - 1) * e..2 * i * e];
            label[..d].copy_from_slice(&self.c_re[(n + i - 1) * d..(n + i) * d]);
            match (label_position, m) {
                (LabelPosition::Rotated, MMatrix::J) => {
                    // J [a; b] = [−b; a]
                    for k in 0..h {
                        label[d + k] = -pi[k];
                        label[d + h + k] = pr[k];
                    }
                }
                (LabelPosition::Rotated, MMatrix::Swap) => {
                    // S [a; b] = [b; a]
                    label[d..d + h].copy_from_slice(pi);
                    label[d + h..].copy_from_slice(pr);
                }
                (LabelPosition::Same, _) => {
                    label[d..d + h].copy_from_slice(pr);
                    label[d + h..].copy_from_slice(pi);
                }
                (LabelPosition::None, _) => label[d..].fill(0.0),
            }
        }
        let query_tok = &mut tokens[2 * n * e..(2 * n + 1) * e];
        query_tok[..d].copy_from_slice(&self.c_re[(q - 1) * d..q * d]);
        // p_{N+1} (fresh) is column N of the position frame, p_q is column q − 1
        let k = match query_position {
            QueryPosition::Fresh => n,
            QueryPosition::PQ => q - 1,
        };
        query_tok[d..d + h].copy_from_slice(&self.p_re[k * h..(k + 1) * h]);
        query_tok[d + h..].copy_from_slice(&self.p_im[k * h..(k + 1) * h]);
        target.copy_from_slice(&self.c_re[(n + q - 1) * d..(n + q) * d]);
    }

    /// Draw `queries.len()` sequences into consecutive slots of `tokens` and `targets`,
    /// compiled for AVX2 when the CPU has it ([`simd::dispatch`]: the same operations, hence
    /// the same bits).
    pub fn fill(&mut self, tokens: &mut [f64], targets: &mut [f64], queries: &mut [usize]) {
        simd::dispatch(Fill, (self, tokens, targets, queries))
    }

    /// Orthonormal data are drawn [`LANES`] sequences at a time: the Gaussian entries of each
    /// sequence in turn (the same stream order as [`Sampler::sample`]), then all their frames
    /// factored together by [`LaneQr`], which returns the same bits as the one-at-a-time QR.
    #[inline(always)]
    fn fill_body(&mut self, tokens: &mut [f64], targets: &mut [f64], queries: &mut [usize]) {
        let len = self.spec.sequence_len();
        let d = self.spec.d;
        if self.spec.data == DataKind::Orthonormal {
            let (n, h) = (self.spec.n, d / 2);
            let (mc, mp) = (2 * n, n + 1);
            let mut b0 = 0;
            while b0 < queries.len() {
                let group = LANES.min(queries.len() - b0);
                for l in 0..LANES {
                    if l < group {
                        queries[b0 + l] = self.draw_query();
                        for i in 0..d * mc {
                            self.lane_c[i][l] = self.gaussian();
                        }
                        for i in 0..h * mp {
                            self.lane_re[i][l] = self.gaussian();
                            self.lane_im[i][l] = self.gaussian();
                        }
                    } else {
                        // unused lanes of the last group: zeros (factored, then discarded)
                        for v in self.lane_c.iter_mut() {
                            v[l] = 0.0;
                        }
                        for (r, i) in self.lane_re.iter_mut().zip(self.lane_im.iter_mut()) {
                            r[l] = 0.0;
                            i[l] = 0.0;
                        }
                    }
                }
                self.lane_qr.q_real(d, mc, &mut self.lane_c, self.fix);
                match self.spec.m {
                    MMatrix::J => self.lane_qr.q_complex(
                        h,
                        mp,
                        &mut self.lane_re,
                        &mut self.lane_im,
                        self.fix,
                    ),
                    MMatrix::Swap => {
                        self.lane_qr.q_real(h, mp, &mut self.lane_re, self.fix);
                        self.lane_qr.q_real(h, mp, &mut self.lane_im, self.fix);
                    }
                }
                for l in 0..group {
                    for (c, v) in self.c_re.iter_mut().zip(&self.lane_c) {
                        *c = v[l];
                    }
                    for ((r, i), (vr, vi)) in self
                        .p_re
                        .iter_mut()
                        .zip(self.p_im.iter_mut())
                        .zip(self.lane_re.iter().zip(&self.lane_im))
                    {
                        *r = vr[l];
                        *i = vi[l];
                    }
                    if self.spec.m == MMatrix::Swap {
                        swap_positions(&mut self.p_re, &mut self.p_im);
                    }
                    let b = b0 + l;
                    self.write_sequence(
                        queries[b],
                        &mut tokens[b * len..(b + 1) * len],
                        &mut targets[b * d..(b + 1) * d],
                    );
                }
                b0 += group;
            }
            return;
        }
        for (b, q) in queries.iter_mut().enumerate() {
            *q = self.sample(
                &mut tokens[b * len..(b + 1) * len],
                &mut targets[b * d..(b + 1) * d],
            );
        }
    }
}

/// [`Sampler::fill_body`] as a [`Kernel`] for [`simd::dispatch`].
struct Fill;

impl<'a>
    Kernel<(
        &'a mut Sampler,
        &'a mut [f64],
        &'a mut [f64],
        &'a mut [usize],
    )> for Fill
{
    type Output = ();
    #[inline(always)]
    fn run(
        self,
        (sampler, tokens, targets, queries): (
            &'a mut Sampler,
            &'a mut [f64],
            &'a mut [f64],
            &'a mut [usize],
        ),
    ) {
        sampler.fill_body(tokens, targets, queries)
    }
}

/// Two real frames u (in `re`) and v (in `im`), entry by entry, into the halves of
/// p = [(u + v)/2; (u − v)/2] = (f⁺ + f⁻)/√2 with f⁺ = [u; u]/√2, f⁻ = [v; −v]/√2.
fn swap_positions(re: &mut [f64], im: &mut [f64]) {
    for (a, b) in re.iter_mut().zip(im.iter_mut()) {
        let (u, v) = (*a, *b);
        *a = 0.5 * (u + v);
        *b = 0.5 * (u - v);
    }
}

/// The canonical orthonormal configuration of docs/theory/musat.md §3 with D = 2N + 2: x_i = e_i,
/// y_i = e_{N+i}, p_k = e_k, labels at M p_i (`rotated`), query q (1-based); the query's
/// position is p_{N+1} = e_{N+1} (`fresh`) or p_q = e_q (`p_q`). Returns (tokens, target).
///
/// Both J and S map e_k (k ≤ D/2) to e_{D/2+k}, so the tokens are the same for either M; the
/// Gram matrices r_kᵀ M r_j built from them are not (an item's position against its label's
/// is −1 with J and +1 with S).
pub fn canonical_configuration(
    n: usize,
    q: usize,
    label_position: LabelPosition,
    query_position: QueryPosition,
    m: MMatrix,
) -> (Vec<f64>, Vec<f64>) {
    assert!(n >= 1 && (1..=n).contains(&q));
    let d = 2 * n + 2;
    let e = 2 * d;
    let t = 2 * n + 1;
    let mut tokens = vec![0.0; t * e];
    for i in 1..=n {
        let item = (2 * i - 2) * e;
        tokens[item + (i - 1)] = 1.0;
        tokens[item + d + (i - 1)] = 1.0;
        let label = (2 * i - 1) * e;
        tokens[label + (n + i - 1)] = 1.0;
        match label_position {
            LabelPosition::Rotated => {
                // M p_i for p_i = e_i: the column i − 1 of M
                let (item_pos, label_pos) = tokens.split_at_mut(label + d);
                m.apply(&item_pos[item + d..item + e], &mut label_pos[..d]);
            }
            LabelPosition::Same => tokens[label + d + (i - 1)] = 1.0,
            LabelPosition::None => {}
        }
    }
    let query = 2 * n * e;
    tokens[query + (q - 1)] = 1.0;
    tokens[query
        + d
        + match query_position {
            QueryPosition::Fresh => n, // p_{N+1} = e_{N+1}
            QueryPosition::PQ => q - 1,
        }] = 1.0;
    let mut target = vec![0.0; d];
    target[n + q - 1] = 1.0;
    (tokens, target)
}

mod lanes;

#[cfg(test)]
mod tests;
