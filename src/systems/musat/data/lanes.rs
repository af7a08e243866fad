//! The Householder QR of [`super::householder_q_real`] and [`super::householder_q`] applied to
//! [`LANES`] independent frames at once: element i of a frame is a `[f64; LANES]` holding that
//! element of every frame, so each arithmetic operation of the scalar code becomes one
//! operation across the lanes (one 256-bit vector instruction with AVX2) instead of a loop over
//! vectors of length at most D.
//!
//! Every lane performs exactly the operations of the scalar code, in the same order (the same
//! four partial sums in `dot4`, the same sequential sums in the complex case); branches become
//! per-lane selects whose untaken side is discarded, and a division or multiplication by 1.0
//! stands in for a skipped normalisation (exact in IEEE arithmetic). So every frame is
//! bit-for-bit the frame the scalar functions return (tested).

use super::SignFix;

/// Frames factored together (four f64 fill one AVX2 register).
pub(super) const LANES: usize = 4;

/// One element of [`LANES`] frames.
pub(super) type Lanes = [f64; LANES];

const ZERO: Lanes = [0.0; LANES];

/// Per-lane [`dot4`](crate::numerics::kernels::dot4) of the scalar code: four partial sums
/// over blocks of four, combined as (s0 + s1) + (s2 + s3), then the remainder added in order.
#[inline(always)]
fn dot4(a: &[Lanes], b: &[Lanes]) -> Lanes {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [ZERO; 4];
    let mut ac = a.chunks_exact(4);
    let mut bc = b.chunks_exact(4);
    for (x, y) in (&mut ac).zip(&mut bc) {
        for q in 0..4 {
            for l in 0..LANES {
                acc[q][l] += x[q][l] * y[q][l];
            }
        }
    }
    let mut s = ZERO;
    for l in 0..LANES {
        s[l] = (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]);
    }
    for (x, y) in ac.remainder().iter().zip(bc.remainder()) {
        for l in 0..LANES {
            s[l] += x[l] * y[l];
        }
    }
    s
}

/// c ← c − 2 p v per lane (as `*ci -= 2.0 * p * vi` in the scalar code).
#[inline(always)]
fn reflect(c: &mut [Lanes], p: Lanes, v: &[Lanes]) {
    for (ci, vi) in c.iter_mut().zip(v) {
        for l in 0..LANES {
            ci[l] -= 2.0 * p[l] * vi[l];
        }
    }
}

/// Storage of the lane-wise QR (reflectors and diagonal of R); grows on first use.
#[derive(Debug, Clone, Default)]
pub(super) struct LaneQr {
    vre: Vec<Lanes>,
    vim: Vec<Lanes>,
    dre: Vec<Lanes>,
    dim: Vec<Lanes>,
}

impl LaneQr {
    fn ensure(&mut self, n: usize, m: usize) {
        if self.vre.len() < n * m {
            self.vre.resize(n * m, ZERO);
            self.vim.resize(n * m, ZERO);
        }
        if self.dre.len() < m {
            self.dre.resize(m, ZERO);
            self.dim.resize(m, ZERO);
        }
    }

    /// [`super::householder_q_real`] on every lane of `a` (n × m, column-major). Inlined into
    /// its caller, so that it is compiled with the caller's target features.
    #[inline(always)]
    pub(super) fn q_real(&mut self, n: usize, m: usize, a: &mut [Lanes], fix: SignFix) {
        assert!(m <= n && a.len() >= n * m);
        self.ensure(n, m);
        let LaneQr { vre, dre, .. } = self;
        for j in 0..m {
            let (col, rest) = a[j * n..].split_at_mut(n);
            let x = &col[j..];
            let nn = dot4(x, x);
            let mut alpha = ZERO;
            for l in 0..LANES {
                let norm = nn[l].sqrt();
                let sign = if x[0][l] < 0.0 { -1.0 } else { 1.0 };
                alpha[l] = -sign * norm;
            }
            dre[j] = alpha;
            let v = &mut vre[j * n..(j + 1) * n];
            v[..j].fill(ZERO);
            v[j..].copy_from_slice(x);
            for l in 0..LANES {
                v[j][l] -= alpha[l];
            }
            let vv = dot4(&v[j..], &v[j..]);
            let mut div = ZERO;
            for l in 0..LANES {
                let vn = vv[l].sqrt();
                div[l] = if vn > 0.0 { vn } else { 1.0 };
            }
            for t in &mut v[j..] {
                for l in 0..LANES {
                    t[l] /= div[l];
                }
            }
            for k in 0..(m - j - 1) {
                let c = &mut rest[k * n + j..(k + 1) * n];
                let p = dot4(&v[j..], c);
                reflect(c, p, &v[j..]);
            }
        }
        for k in 0..m {
            let c = &mut a[k * n..(k + 1) * n];
            c.fill(ZERO);
            c[k] = [1.0; LANES];
            for j in (0..=k).rev() {
                let v = &vre[j * n + j..(j + 1) * n];
                let p = dot4(v, &c[j..]);
                reflect(&mut c[j..], p, v);
            }
            if fix == SignFix::Haar {
                let mut s = ZERO;
                for l in 0..LANES {
                    s[l] = if dre[k][l] < 0.0 { -1.0 } else { 1.0 };
                }
                for ci in c.iter_mut() {
                    for l in 0..LANES {
                        ci[l] *= s[l];
                    }
                }
            }
        }
    }

    /// [`super::householder_q`] on every lane of (`re`, `im`) (n × m, column-major).
    #[inline(always)]
    pub(super) fn q_complex(
        &mut self,
        n: usize,
        m: usize,
        re: &mut [Lanes],
        im: &mut [Lanes],
        fix: SignFix,
    ) {
        assert!(m <= n && re.len() >= n * m && im.len() >= n * m);
        self.ensure(n, m);
        let LaneQr { vre, vim, dre, dim } = self;
        for j in 0..m {
            let col = j * n;
            let mut norm2 = ZERO;
            for i in j..n {
                let (r, s) = (re[col + i], im[col + i]);
                for l in 0..LANES {
                    norm2[l] += r[l] * r[l] + s[l] * s[l];
                }
            }
            let (x0r, x0i) = (re[col + j], im[col + j]);
            let (mut ar, mut ai) = (ZERO, ZERO);
            for l in 0..LANES {
                let norm = norm2[l].sqrt();
                let abs0 = (x0r[l] * x0r[l] + x0i[l] * x0i[l]).sqrt();
                let ok = abs0 > 0.0;
                let ph_r = if ok { x0r[l] / abs0 } else { 1.0 };
                let ph_i = if ok { x0i[l] / abs0 } else { 0.0 };
                ar[l] = -ph_r * norm;
                ai[l] = -ph_i * norm;
            }
            dre[j] = ar;
            dim[j] = ai;
            let v = j * n;
            vre[v..v + j].fill(ZERO);
            vim[v..v + j].fill(ZERO);
            vre[v + j..v + n].copy_from_slice(&re[col + j..col + n]);
            vim[v + j..v + n].copy_from_slice(&im[col + j..col + n]);
            for l in 0..LANES {
                vre[v + j][l] -= ar[l];
                vim[v + j][l] -= ai[l];
            }
            let mut vn2 = ZERO;
            for i in j..n {
                let (r, s) = (vre[v + i], vim[v + i]);
                for l in 0..LANES {
                    vn2[l] += r[l] * r[l] + s[l] * s[l];
                }
            }
            let mut sc = ZERO;
            for l in 0..LANES {
                sc[l] = if vn2[l] > 0.0 {
                    1.0 / vn2[l].sqrt()
                } else {
                    1.0
                };
            }
            for i in j..n {
                for l in 0..LANES {
                    vre[v + i][l] *= sc[l];
                    vim[v + i][l] *= sc[l];
                }
            }
            for k in (j + 1)..m {
                let c = k * n;
                let (vr, vi) = (&vre[v + j..v + n], &vim[v + j..v + n]);
                let (cr, ci) = (&mut re[c + j..c + n], &mut im[c + j..c + n]);
                apply_complex(vr, vi, cr, ci);
            }
        }
        for k in 0..m {
            let c = k * n;
            re[c..c + n].fill(ZERO);
            im[c..c + n].fill(ZERO);
            re[c + k] = [1.0; LANES];
            for j in (0..=k).rev() {
                let v = j * n;
                let (vr, vi) = (&vre[v + j..v + n], &vim[v + j..v + n]);
                let (cr, ci) = (&mut re[c + j..c + n], &mut im[c + j..c + n]);
                apply_complex(vr, vi, cr, ci);
            }
            if fix == SignFix::Haar {
                let (mut lr, mut li) = (ZERO, ZERO);
                for l in 0..LANES {
                    let (dr, di) = (dre[k][l], dim[k][l]);
                    let a = (dr * dr + di * di).sqrt();
                    let ok = a > 0.0;
                    lr[l] = if ok { dr / a } else { 1.0 };
                    li[l] = if ok { di / a } else { 0.0 };
                }
                for i in 0..n {
                    let (qr, qi) = (re[c + i], im[c + i]);
                    for l in 0..LANES {
                        re[c + i][l] = qr[l] * lr[l] - qi[l] * li[l];
                        im[c + i][l] = qr[l] * li[l] + qi[l] * lr[l];
                    }
                }
            }
        }
    }
}

/// a ← a − 2 v (vᴴ a) per lane, with the sequential sums of the scalar code.
#[inline(always)]
fn apply_complex(vr: &[Lanes], vi: &[Lanes], cr: &mut [Lanes], ci: &mut [Lanes]) {
    let (mut pr, mut pi) = (ZERO, ZERO);
    for i in 0..vr.len() {
        for l in 0..LANES {
            pr[l] += vr[i][l] * cr[i][l] + vi[i][l] * ci[i][l];
            pi[l] += vr[i][l] * ci[i][l] - vi[i][l] * cr[i][l];
        }
    }
    for i in 0..vr.len() {
        for l in 0..LANES {
            cr[i][l] -= 2.0 * (vr[i][l] * pr[l] - vi[i][l] * pi[l]);
            ci[i][l] -= 2.0 * (vr[i][l] * pi[l] + vi[i][l] * pr[l]);
        }
    }
}
