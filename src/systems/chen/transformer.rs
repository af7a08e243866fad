//! The full "standard-attention" TF(M, H, d, D) of the authors' public code (docs/theory/chen.md
//! §4.3), with a hand-written f64 backward, trained by full-batch gradient descent on the same
//! sample as the reduced flow. [paper: authors' public code; equations reconstructed]
//!
//! Layer 1, head h, position l (the query l = L + 1 has x_{L+1} = 0):
//! ```text
//! logit_{l,o} = x_lᵀ W_Q^{(h)} W_K^{(h)ᵀ} x_{l−o} + r^{(h)}(o)   for o ∈ {0} ∪ {o_h(i) : l − o_h(i) ≥ 1}
//! r^{(h)}(o_h(i)) = w^{(h)}_i,   r^{(h)}(0) = 1e−6 (self-attention, when enabled; fixed)
//! A = softmax_o(logit),   u_l^{(h)} = W_OV^{(h)} Σ_o A_o x_{l−o}
//! v̄ = γ ⊙ (u − mean u)/√(var u + 1e−5) + β   (LayerNorm(d) shared by the heads; or v̄ = u)
//! ```
//! Layer 2 is that of §4.2 ([`crate::systems::chen::common`], with ReLU on each g). Initialisation:
//! W_Q = W_K = W_OV = proj_init · I, γ = 1, β = 0, and (c, w, a) as in the reduced model.
//!
//! θ = (c, w, a, W_Q, W_K, W_OV, γ, β); the (c, w, a) block has the reduced model's layout, so
//! p_S = c_S²/‖c‖², the RPE logits w and a are read off the same coordinates.

use crate::flow::GradientFlow;
use crate::numerics::kernels::softmax_div_into as softmax;
use crate::systems::chen::common::{
    Buckets, Layer2, Layer2Params, Layer2Sums, Layout, LossKind, PAD, Subsets, TfShape, ZERO,
    grad_c_from_grad_p, simplex_weights,
};
use crate::systems::chen::markov::Sequences;
use serde::Serialize;
use std::sync::Mutex;

/// The fixed RPE logit of the self position (offset 0).
pub const SELF_RPE: f64 = 1e-6;

/// Switches of the full model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FullSettings {
    /// Shared LayerNorm(d) on the head outputs (the authors' code); otherwise v̄ = u.
    pub layer_norm: bool,
    /// The ε of the LayerNorm (PyTorch's default 1e−5).
    pub ln_eps: f64,
    /// Attend to the position itself (offset 0) with RPE logit 1e−6 (the authors' code).
    pub self_attention: bool,
    /// W_Q = W_K = W_OV = proj_init · I at t = 0.
    pub proj_init: f64,
}

/// Where the blocks of θ start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullLayout {
    pub base: Layout,
    pub d: usize,
    pub heads: usize,
}

impl FullLayout {
    fn mat(&self) -> usize {
        self.d * self.d
    }
    /// W_Q^{(h)}[r][c].
    pub fn wq(&self, h: usize) -> usize {
        self.base.len() + h * self.mat()
    }
    pub fn wk(&self, h: usize) -> usize {
        self.base.len() + (self.heads + h) * self.mat()
    }
    pub fn wov(&self, h: usize) -> usize {
        self.base.len() + (2 * self.heads + h) * self.mat()
    }
    pub fn gamma(&self) -> usize {
        self.base.len() + 3 * self.heads * self.mat()
    }
    pub fn beta(&self) -> usize {
        self.gamma() + self.d
    }
    pub fn len(&self) -> usize {
        self.beta() + self.d
    }
    pub fn is_empty(&self) -> bool {
        false
    }
    /// The layer-1 projections and the LayerNorm.
    pub fn layer1_range(&self) -> std::ops::Range<usize> {
        self.base.len()..self.len()
    }
}

struct Scratch {
    /// B^{(h)} = W_Q W_Kᵀ, H × d × d.
    b: Vec<f64>,
    db: Vec<f64>,
    feat: Vec<f64>,
    qfeat: Vec<f64>,
    /// Per (key, head): attention weights (M + 1), m (d), normalised n (d), std s (1).
    cache: Vec<f64>,
    qcache: Vec<f64>,
    p: Vec<f64>,
    dp: Vec<f64>,
    sums: Layer2Sums,
    work: Vec<f64>,
}

/// The full model on a fixed sample; its loss and gradient (a [`GradientFlow`], so it can also
/// be integrated); it is trained through [`crate::train`].
pub struct GihTransformer {
    shape: TfShape,
    loss: LossKind,
    settings: FullSettings,
    subsets: Subsets,
    layout: FullLayout,
    names: Vec<String>,
    observable_names: Vec<String>,
    layer2: Layer2,
    scratch: Mutex<Scratch>,
}

impl GihTransformer {
    pub fn new(shape: TfShape, loss: LossKind, settings: FullSettings, data: &Sequences) -> Self {
        assert_eq!(shape.d, data.d);
        let subsets = Subsets::new(shape.heads, shape.degree);
        let base = Layout {
            n_subsets: subsets.len(),
            heads: shape.heads,
            window: shape.window,
        };
        let layout = FullLayout {
            base,
            d: shape.d,
            heads: shape.heads,
        };
        let (h, m, d) = (shape.heads, shape.window, shape.d);
        let mut names = base.names(&subsets);
        for tag in ["Wq", "Wk", "Wov"] {
            for hh in 0..h {
                for r in 0..d {
                    for c in 0..d {
                        names.push(format!("{tag}_{}_{}_{}", hh + 1, r + 1, c + 1));
                    }
                }
            }
        }
        for tag in ["ln_gamma", "ln_beta"] {
            for k in 0..d {
                names.push(format!("{tag}_{}", k + 1));
            }
        }
        let mut observable_names: Vec<String> = (0..subsets.len())
            .map(|k| format!("p_{}", subsets.label(k)))
            .collect();
        for hh in 0..h {
            for i in 0..m {
                observable_names.push(format!("sigma_{}_{}", hh + 1, i + 1));
            }
        }
        let buckets = Buckets::build(data, shape.max_offset(), true);
        let layer2 = Layer2::new(buckets, h, subsets.clone());
        let nf = layer2.buckets.n_features();
        let nq = layer2.buckets.n_queries();
        let per = m + 1 + 2 * d + 1;
        let scratch = Scratch {
            b: vec![0.0; h * d * d],
            db: vec![0.0; h * d * d],
            feat: vec![0.0; nf * h * d],
            qfeat: vec![0.0; nq * h * d],
            cache: vec![0.0; nf * h * per],
            qcache: vec![0.0; nq * h * per],
            p: vec![0.0; subsets.len()],
            dp: vec![0.0; subsets.len()],
            sums: layer2.new_sums(),
            work: vec![0.0; 4 * d + 2 * (m + 1)],
        };
        GihTransformer {
            shape,
            loss,
            settings,
            subsets,
            layout,
            names,
            observable_names,
            layer2,
            scratch: Mutex::new(scratch),
        }
    }

    pub fn layout(&self) -> &FullLayout {
        &self.layout
    }
    pub fn subsets(&self) -> &Subsets {
        &self.subsets
    }
    pub fn settings(&self) -> &FullSettings {
        &self.settings
    }

    /// θ(0): the reduced block `base_init` (c, w, a), then W = proj_init · I, γ = 1, β = 0.
    pub fn initial_theta(&self, base_init: &[f64]) -> Vec<f64> {
        let lay = self.layout;
        let d = self.shape.d;
        let mut th = vec![0.0; lay.len()];
        th[..lay.base.len()].copy_from_slice(base_init);
        for h in 0..self.shape.heads {
            for start in [lay.wq(h), lay.wk(h), lay.wov(h)] {
                for r in 0..d {
                    th[start + r * d + r] = self.settings.proj_init;
                }
            }
        }
        for k in 0..d {
            th[lay.gamma() + k] = 1.0;
        }
        th
    }

    /// The loss; with `grad`, its gradient written into it.
    pub fn loss_and_grad(&self, theta: &[f64], grad: Option<&mut [f64]>) -> f64 {
        let mut guard = self
            .scratch
            .lock()
            .expect("the scratch lock is never poisoned");
        let s = &mut *guard;
        let (h_n, d) = (self.shape.heads, self.shape.d);
        let lay = self.layout;
        let per = self.shape.window + 1 + 2 * d + 1;
        for h in 0..h_n {
            let (q, k) = (&theta[lay.wq(h)..], &theta[lay.wk(h)..]);
            for a in 0..d {
                for b in 0..d {
                    let mut acc = 0.0;
                    for c in 0..d {
                        acc += q[a * d + c] * k[b * d + c];
                    }
                    s.b[(h * d + a) * d + b] = acc;
                }
            }
        }
        let bk = &self.layer2.buckets;
        for f in 0..bk.n_features() {
            self.head_outputs(
                bk.feature_key(f),
                theta,
                &s.b,
                &mut s.feat[f * h_n * d..(f + 1) * h_n * d],
                &mut s.cache[f * h_n * per..(f + 1) * h_n * per],
                &mut s.work,
            );
        }
        for q in 0..bk.n_queries() {
            self.head_outputs(
                bk.query_key(q),
                theta,
                &s.b,
                &mut s.qfeat[q * h_n * d..(q + 1) * h_n * d],
                &mut s.qcache[q * h_n * per..(q + 1) * h_n * per],
                &mut s.work,
            );
        }
        let base = lay.base;
        simplex_weights(&theta[base.c_range()], &mut s.p);
        let params = Layer2Params {
            p: &s.p,
            a: theta[base.a()],
            loss: self.loss,
            relu: true,
        };
        self.layer2
            .evaluate(&s.feat, &s.qfeat, params, grad.is_some(), &mut s.sums);
        let n = self.layer2.n_sequences() as f64;
        let loss = s.sums.loss / n;
        let Some(out) = grad else {
            return loss;
        };
        out.fill(0.0);
        for (dp, v) in s.dp.iter_mut().zip(&s.sums.dp) {
            *dp = v / n;
        }
        grad_c_from_grad_p(
            &theta[base.c_range()],
            &s.p,
            &s.dp,
            &mut out[base.c_range()],
        );
        out[base.a()] = s.sums.da / n;
        s.db.fill(0.0);
        let Scratch {
            db,
            cache,
            qcache,
            sums,
            work,
            ..
        } = s;
        for f in 0..bk.n_features() {
            self.head_backward(
                bk.feature_key(f),
                theta,
                &cache[f * h_n * per..(f + 1) * h_n * per],
                &sums.dfeat[f * h_n * d..(f + 1) * h_n * d],
                db,
                out,
                work,
            );
        }
        for q in 0..bk.n_queries() {
            self.head_backward(
                bk.query_key(q),
                theta,
                &qcache[q * h_n * per..(q + 1) * h_n * per],
                &sums.dqfeat[q * h_n * d..(q + 1) * h_n * d],
                db,
                out,
                work,
            );
        }
        // B = W_Q W_Kᵀ: ∂/∂W_Q = (∂/∂B) W_K, ∂/∂W_K = (∂/∂B)ᵀ W_Q
        for h in 0..h_n {
            let dbh = &db[h * d * d..(h + 1) * d * d];
            for a in 0..d {
                for c in 0..d {
                    let (mut gq, mut gk) = (0.0, 0.0);
                    for b in 0..d {
                        gq += dbh[a * d + b] * theta[lay.wk(h) + b * d + c];
                        gk += dbh[b * d + a] * theta[lay.wq(h) + b * d + c];
                    }
                    out[lay.wq(h) + a * d + c] += gq;
                    out[lay.wk(h) + a * d + c] += gk;
                }
            }
        }
        for k in base.w_range().chain(lay.layer1_range()) {
            out[k] /= n;
        }
        loss
    }

    /// Number of RPE window entries of head h that lie inside the sequence for this key (a
    /// prefix of the window; key[o] is the token at offset o, key[0] the position itself).
    fn valid(&self, key: &[u8], h: usize) -> usize {
        (0..self.shape.window)
            .take_while(|&i| key[self.shape.offset(h, i)] != PAD)
            .count()
    }

    /// Forward of layer 1 for one key (key[0] = x_l or ZERO, key[o] = x_{l−o}).
    fn head_outputs(
        &self,
        key: &[u8],
        theta: &[f64],
        b: &[f64],
        out: &mut [f64],
        cache: &mut [f64],
        work: &mut [f64],
    ) {
        let (m, d) = (self.shape.window, self.shape.d);
        let per = m + 1 + 2 * d + 1;
        let lay = self.layout;
        let t0 = key[0];
        for h in 0..self.shape.heads {
            let c = &mut cache[h * per..(h + 1) * per];
            let (att, rest) = c.split_at_mut(m + 1);
            let (mvec, rest) = rest.split_at_mut(d);
            let (nvec, svec) = rest.split_at_mut(d);
            let k = self.valid(key, h);
            let logits = &mut work[..m + 1];
            let mut n_keys = 0;
            let qk = |t: u8| {
                if t0 == ZERO {
                    0.0
                } else {
                    b[(h * d + t0 as usize) * d + t as usize]
                }
            };
            if self.settings.self_attention {
                logits[n_keys] = qk(t0) + SELF_RPE;
                n_keys += 1;
            }
            for i in 0..k {
                let t = key[self.shape.offset(h, i)];
                logits[n_keys] = qk(t) + theta[lay.base.w(h, i)];
                n_keys += 1;
            }
            att.fill(0.0);
            if n_keys > 0 {
                softmax(&logits[..n_keys], &mut att[..n_keys]);
            }
            mvec.fill(0.0);
            let mut j = 0;
            if self.settings.self_attention {
                if t0 != ZERO {
                    mvec[t0 as usize] += att[0];
                }
                j = 1;
            }
            for i in 0..k {
                mvec[key[self.shape.offset(h, i)] as usize] += att[j + i];
            }
            let u = &mut out[h * d..(h + 1) * d];
            let wov = &theta[lay.wov(h)..lay.wov(h) + d * d];
            for r in 0..d {
                let mut acc = 0.0;
                for cc in 0..d {
                    acc += wov[r * d + cc] * mvec[cc];
                }
                u[r] = acc;
            }
            if self.settings.layer_norm {
                let mean = u.iter().sum::<f64>() / d as f64;
                let var = u.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / d as f64;
                let sd = (var + self.settings.ln_eps).sqrt();
                svec[0] = sd;
                for r in 0..d {
                    nvec[r] = (u[r] - mean) / sd;
                    u[r] = theta[lay.gamma() + r] * nvec[r] + theta[lay.beta() + r];
                }
            }
        }
    }

    /// Backward of layer 1 for one key: accumulates into ∂/∂B (db) and into `out` (w, W_OV, γ, β;
    /// not yet divided by the number of sequences).
    #[allow(clippy::too_many_arguments)]
    fn head_backward(
        &self,
        key: &[u8],
        theta: &[f64],
        cache: &[f64],
        dfeat: &[f64],
        db: &mut [f64],
        out: &mut [f64],
        work: &mut [f64],
    ) {
        let (m, d) = (self.shape.window, self.shape.d);
        let per = m + 1 + 2 * d + 1;
        let lay = self.layout;
        let t0 = key[0];
        for h in 0..self.shape.heads {
            let dv = &dfeat[h * d..(h + 1) * d];
            if dv.iter().all(|&x| x == 0.0) {
                continue;
            }
            let c = &cache[h * per..(h + 1) * per];
            let att = &c[..m + 1];
            let mvec = &c[m + 1..m + 1 + d];
            let nvec = &c[m + 1 + d..m + 1 + 2 * d];
            let sd = c[m + 1 + 2 * d];
            let (du, rest) = work.split_at_mut(d);
            let (dm, rest) = rest.split_at_mut(d);
            let da = &mut rest[..m + 1];
            if self.settings.layer_norm {
                let mut mean_dn = 0.0;
                let mut mean_dnn = 0.0;
                for r in 0..d {
                    let dn = dv[r] * theta[lay.gamma() + r];
                    out[lay.gamma() + r] += dv[r] * nvec[r];
                    out[lay.beta() + r] += dv[r];
                    du[r] = dn;
                    mean_dn += dn;
                    mean_dnn += dn * nvec[r];
                }
                mean_dn /= d as f64;
                mean_dnn /= d as f64;
                for r in 0..d {
                    du[r] = (du[r] - mean_dn - nvec[r] * mean_dnn) / sd;
                }
            } else {
                du.copy_from_slice(dv);
            }
            let wov = lay.wov(h);
            dm.fill(0.0);
            for r in 0..d {
                for cc in 0..d {
                    out[wov + r * d + cc] += du[r] * mvec[cc];
                    dm[cc] += theta[wov + r * d + cc] * du[r];
                }
            }
            let k = self.valid(key, h);
            let mut n_keys = 0;
            let self_key = self.settings.self_attention;
            if self_key {
                da[0] = if t0 == ZERO { 0.0 } else { dm[t0 as usize] };
                n_keys = 1;
            }
            for i in 0..k {
                da[n_keys + i] = dm[key[self.shape.offset(h, i)] as usize];
            }
            n_keys += k;
            let mean: f64 = (0..n_keys).map(|j| att[j] * da[j]).sum();
            let j0 = usize::from(self_key);
            if self_key && t0 != ZERO {
                let dl = att[0] * (da[0] - mean);
                db[(h * d + t0 as usize) * d + t0 as usize] += dl;
            }
            for i in 0..k {
                let dl = att[j0 + i] * (da[j0 + i] - mean);
                out[lay.base.w(h, i)] += dl;
                if t0 != ZERO {
                    let t = key[self.shape.offset(h, i)] as usize;
                    db[(h * d + t0 as usize) * d + t] += dl;
                }
            }
        }
    }
}

impl GradientFlow for GihTransformer {
    fn names(&self) -> &[String] {
        &self.names
    }
    fn loss(&self, theta: &[f64]) -> f64 {
        self.loss_and_grad(theta, None)
    }
    fn grad(&self, theta: &[f64], out: &mut [f64]) {
        self.loss_and_grad(theta, Some(out));
    }
    /// `p_{S}` and `sigma_h_i` = softmax(w^{(h)})_i, as in the reduced flow.
    fn observable_names(&self) -> &[String] {
        &self.observable_names
    }
    fn observables(&self, theta: &[f64], out: &mut [f64]) {
        let base = self.layout.base;
        let ns = self.subsets.len();
        simplex_weights(&theta[base.c_range()], &mut out[..ns]);
        let m = self.shape.window;
        for h in 0..self.shape.heads {
            softmax(
                &theta[base.w(h, 0)..base.w(h, 0) + m],
                &mut out[ns + h * m..ns + (h + 1) * m],
            );
        }
    }
}

#[cfg(test)]
mod tests;
