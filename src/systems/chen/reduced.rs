//! Chen et al., the generalized induction head (docs/theory/chen.md §4.1, §5, §7, §8): gradient flow
//! of the FFN coefficients c_S (S ∈ 𝒮_D), the RPE logits w^{(h)} ∈ R^M of every layer-1 head and
//! the classifier scalar a, on a fixed sample of in-context Markov sequences. [reconstruction]
//!
//! Layer 1 is a pure RPE copier (§4.1): for position l and head h,
//! ```text
//! v_l^{(h)} = Σ_{i valid} σ_{l,i}^{(h)} x_{l − o_h(i)},   σ_l^{(h)} = softmax of w^{(h)} over the valid
//!             offsets (those with l − o_h(i) ≥ 1; all of them for l > max offset)
//! v̄ = v (head_norm none, the paper) or v / (‖v‖ + 1e−7) (l2, the authors' code)
//! ```
//! and layer 2 and the loss are those of [`crate::systems::chen::common`]. The loss is the mean of ℓ
//! over the sample, so the gradient is exact for that sample (the population proxy of §3).
//!
//! The flow is dθ/dt = −∇𝓛 with θ = (c, w, a): in particular dc_S/dt = (2a c_S/‖c‖²)(U_S −
//! Σ_T p_T U_T) conserves ‖c‖ (§7). Stages freeze blocks of θ (§8); see [`Block`].

use crate::flow::GradientFlow;
use crate::numerics::kernels::softmax_div_into as softmax;
use crate::systems::chen::common::{
    HeadNorm, L2_EPS, Layer2, Layer2Params, Layer2Sums, Layout, LossKind, PAD, Subsets, TfShape,
    grad_c_from_grad_p, simplex_weights,
};
use crate::systems::chen::markov::Sequences;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

pub use crate::systems::chen::common::Buckets;

/// A block of parameters a stage trains (§8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Block {
    /// The FFN coefficients c_S.
    C,
    /// The RPE logits w^{(h)}.
    W,
    /// The classifier scalar a.
    A,
    /// The full model's layer-1 projections W_Q, W_K, W_OV and its LayerNorm (no such
    /// parameters in the reduced model).
    Layer1,
}

/// Model settings shared by the reduced flow and the full model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GihModel {
    pub shape: TfShape,
    pub head_norm: HeadNorm,
    pub loss: LossKind,
}

/// Initial values of §12: c_S = c₀ for every S, w₊ at each head's own offset and w₋ elsewhere,
/// a = a₀.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GihInit {
    pub c0: f64,
    pub a0: f64,
    pub w_plus: f64,
    pub w_minus: f64,
}

impl GihInit {
    /// θ(0) in the (c, w, a) layout.
    pub fn theta(&self, shape: &TfShape, layout: &Layout) -> Vec<f64> {
        let mut th = vec![0.0; layout.len()];
        for k in layout.c_range() {
            th[k] = self.c0;
        }
        for h in 0..shape.heads {
            for i in 0..shape.window {
                th[layout.w(h, i)] = if i == shape.own_index(h) {
                    self.w_plus
                } else {
                    self.w_minus
                };
            }
        }
        th[layout.a()] = self.a0;
        th
    }
}

/// Layer-1 state of one evaluation, allocated once.
struct Scratch {
    /// Prefix softmaxes σ^{(h,k)}: H × (M + 1) × M (k valid entries).
    sig: Vec<f64>,
    dsig: Vec<f64>,
    feat: Vec<f64>,
    qfeat: Vec<f64>,
    /// ‖v‖ per feature and head (for the l2 backward).
    norms: Vec<f64>,
    qnorms: Vec<f64>,
    p: Vec<f64>,
    dp: Vec<f64>,
    sums: Layer2Sums,
    dv: Vec<f64>,
}

/// The reduced GIH flow on a fixed sample (module doc).
pub struct GihFlow {
    model: GihModel,
    subsets: Subsets,
    layout: Layout,
    names: Vec<String>,
    observable_names: Vec<String>,
    layer2: Layer2,
    scratch: Mutex<Scratch>,
}

impl GihFlow {
    /// The flow on `data` (the training sample). Needs L ≥ the largest offset.
    pub fn new(model: GihModel, data: &Sequences) -> Self {
        let shape = model.shape;
        assert_eq!(
            shape.d, data.d,
            "the data's vocabulary differs from the model's"
        );
        let subsets = Subsets::new(shape.heads, shape.degree);
        let layout = Layout {
            n_subsets: subsets.len(),
            heads: shape.heads,
            window: shape.window,
        };
        let buckets = Buckets::build(data, shape.max_offset(), false);
        let (h, m, d) = (shape.heads, shape.window, shape.d);
        let names = layout.names(&subsets);
        let mut observable_names: Vec<String> = (0..subsets.len())
            .map(|k| format!("p_{}", subsets.label(k)))
            .collect();
        for hh in 0..h {
            for i in 0..m {
                observable_names.push(format!("sigma_{}_{}", hh + 1, i + 1));
            }
        }
        let layer2 = Layer2::new(buckets, h, subsets.clone());
        let nf = layer2.buckets.n_features();
        let nq = layer2.buckets.n_queries();
        let scratch = Scratch {
            sig: vec![0.0; h * (m + 1) * m],
            dsig: vec![0.0; h * (m + 1) * m],
            feat: vec![0.0; nf * h * d],
            qfeat: vec![0.0; nq * h * d],
            norms: vec![0.0; nf * h],
            qnorms: vec![0.0; nq * h],
            p: vec![0.0; subsets.len()],
            dp: vec![0.0; subsets.len()],
            sums: layer2.new_sums(),
            dv: vec![0.0; d],
        };
        GihFlow {
            model,
            subsets,
            layout,
            names,
            observable_names,
            layer2,
            scratch: Mutex::new(scratch),
        }
    }

    pub fn model(&self) -> &GihModel {
        &self.model
    }
    pub fn subsets(&self) -> &Subsets {
        &self.subsets
    }
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    /// Number of sequences in the sample.
    pub fn n_sequences(&self) -> usize {
        self.layer2.n_sequences()
    }
    /// Coordinates of θ that belong to `block` (none for [`Block::Layer1`]).
    pub fn block_indices(&self, block: Block) -> Vec<usize> {
        match block {
            Block::C => self.layout.c_range().collect(),
            Block::W => self.layout.w_range().collect(),
            Block::A => vec![self.layout.a()],
            Block::Layer1 => vec![],
        }
    }

    /// The loss and its gradient (written into `grad`) in one evaluation.
    pub fn loss_and_grad(&self, theta: &[f64], grad: &mut [f64]) -> f64 {
        self.evaluate(theta, Some(grad))
    }

    /// Replace the sample by `data` (same vocabulary and length; fresh batches): the positions are
    /// regrouped and every buffer is resized in place, so a batch no larger than the ones before
    /// allocates nothing here beyond the grouping's hash maps.
    pub fn set_data(&mut self, data: &Sequences) {
        assert_eq!(self.model.shape.d, data.d, "the data's vocabulary differs");
        self.layer2.set_data(data);
        let (h, d) = (self.model.shape.heads, self.model.shape.d);
        let (nf, nq) = (
            self.layer2.buckets.n_features(),
            self.layer2.buckets.n_queries(),
        );
        let s = self
            .scratch
            .get_mut()
            .expect("the scratch lock is never poisoned");
        s.feat.resize(nf * h * d, 0.0);
        s.qfeat.resize(nq * h * d, 0.0);
        s.norms.resize(nf * h, 0.0);
        s.qnorms.resize(nq * h, 0.0);
        self.layer2.fit_sums(&mut s.sums);
    }

    /// Loss, and with `grad = Some(out)` its gradient.
    fn evaluate(&self, theta: &[f64], grad: Option<&mut [f64]>) -> f64 {
        let mut guard = self
            .scratch
            .lock()
            .expect("the scratch lock is never poisoned");
        let s = &mut *guard;
        let shape = self.model.shape;
        let (h_n, m, d) = (shape.heads, shape.window, shape.d);
        let lay = self.layout;
        // prefix softmaxes
        for h in 0..h_n {
            let w = &theta[lay.w(h, 0)..lay.w(h, 0) + m];
            for k in 1..=m {
                let base = (h * (m + 1) + k) * m;
                softmax(&w[..k], &mut s.sig[base..base + k]);
            }
        }
        let bk = &self.layer2.buckets;
        for f in 0..bk.n_features() {
            self.head_outputs(
                bk.feature_key(f),
                &s.sig,
                &mut s.feat[f * h_n * d..(f + 1) * h_n * d],
                &mut s.norms[f * h_n..(f + 1) * h_n],
            );
        }
        for q in 0..bk.n_queries() {
            self.head_outputs(
                bk.query_key(q),
                &s.sig,
                &mut s.qfeat[q * h_n * d..(q + 1) * h_n * d],
                &mut s.qnorms[q * h_n..(q + 1) * h_n],
            );
        }
        simplex_weights(&theta[lay.c_range()], &mut s.p);
        let params = Layer2Params {
            p: &s.p,
            a: theta[lay.a()],
            loss: self.model.loss,
            relu: false,
        };
        let want = grad.is_some();
        self.layer2
            .evaluate(&s.feat, &s.qfeat, params, want, &mut s.sums);
        let n = self.layer2.n_sequences() as f64;
        let loss = s.sums.loss / n;
        let Some(out) = grad else {
            return loss;
        };
        // c and a
        for (dp, v) in s.dp.iter_mut().zip(&s.sums.dp) {
            *dp = v / n;
        }
        grad_c_from_grad_p(&theta[lay.c_range()], &s.p, &s.dp, &mut out[lay.c_range()]);
        out[lay.a()] = s.sums.da / n;
        // w: back through the head outputs into the prefix softmaxes, then into the logits
        s.dsig.fill(0.0);
        let Scratch {
            sig,
            dsig,
            feat,
            qfeat,
            norms,
            qnorms,
            sums,
            dv,
            ..
        } = s;
        for f in 0..bk.n_features() {
            let r = f * h_n * d..(f + 1) * h_n * d;
            self.head_backward(
                bk.feature_key(f),
                &feat[r.clone()],
                &norms[f * h_n..(f + 1) * h_n],
                &sums.dfeat[r],
                dsig,
                dv,
            );
        }
        for q in 0..bk.n_queries() {
            let r = q * h_n * d..(q + 1) * h_n * d;
            self.head_backward(
                bk.query_key(q),
                &qfeat[r.clone()],
                &qnorms[q * h_n..(q + 1) * h_n],
                &sums.dqfeat[r],
                dsig,
                dv,
            );
        }
        for h in 0..h_n {
            let gw = &mut out[lay.w(h, 0)..lay.w(h, 0) + m];
            gw.fill(0.0);
            for k in 1..=m {
                let base = (h * (m + 1) + k) * m;
                let sg = &sig[base..base + k];
                let ds = &dsig[base..base + k];
                let mean: f64 = sg.iter().zip(ds).map(|(a, b)| a * b).sum();
                for i in 0..k {
                    gw[i] += sg[i] * (ds[i] - mean) / n;
                }
            }
        }
        loss
    }

    /// Number of valid window entries of head h for a history key (a prefix of the window).
    fn valid(&self, key: &[u8], h: usize) -> usize {
        let shape = &self.model.shape;
        (0..shape.window)
            .take_while(|&i| key[shape.offset(h, i) - 1] != PAD)
            .count()
    }

    /// v̄^{(h)} for every head of one history key (tokens at offsets 1..=depth).
    fn head_outputs(&self, key: &[u8], sig: &[f64], out: &mut [f64], norms: &mut [f64]) {
        let shape = &self.model.shape;
        let (m, d) = (shape.window, shape.d);
        out.fill(0.0);
        for h in 0..shape.heads {
            let k = self.valid(key, h);
            let v = &mut out[h * d..(h + 1) * d];
            let sg = &sig[(h * (m + 1) + k) * m..];
            for i in 0..k {
                v[key[shape.offset(h, i) - 1] as usize] += sg[i];
            }
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            norms[h] = n;
            if self.model.head_norm == HeadNorm::L2 {
                let s = 1.0 / (n + L2_EPS);
                v.iter_mut().for_each(|x| *x *= s);
            }
        }
    }

    /// Accumulate ∂ℓ/∂σ^{(h,k)} from ∂ℓ/∂v̄ of one key.
    fn head_backward(
        &self,
        key: &[u8],
        feat: &[f64],
        norms: &[f64],
        dfeat: &[f64],
        dsig: &mut [f64],
        dv: &mut [f64],
    ) {
        let shape = &self.model.shape;
        let (m, d) = (shape.window, shape.d);
        for h in 0..shape.heads {
            let k = self.valid(key, h);
            if k == 0 {
                continue;
            }
            let g = &dfeat[h * d..(h + 1) * d];
            match self.model.head_norm {
                HeadNorm::None => dv.copy_from_slice(g),
                HeadNorm::L2 => {
                    // v̄ = v/(n + ε): ∂/∂v = G/(n + ε) − (G·v) v /(n (n + ε)²), with v = v̄ (n + ε)
                    let n = norms[h];
                    let vb = &feat[h * d..(h + 1) * d];
                    let gv: f64 = g.iter().zip(vb).map(|(a, b)| a * b).sum::<f64>() * (n + L2_EPS);
                    let s = 1.0 / (n + L2_EPS);
                    for c in 0..d {
                        let v = vb[c] * (n + L2_EPS);
                        dv[c] = g[c] * s - gv * v / (n * (n + L2_EPS) * (n + L2_EPS));
                    }
                }
            }
            let base = (h * (m + 1) + k) * m;
            for i in 0..k {
                dsig[base + i] += dv[key[shape.offset(h, i) - 1] as usize];
            }
        }
    }
}

impl GradientFlow for GihFlow {
    fn names(&self) -> &[String] {
        &self.names
    }

    fn loss(&self, theta: &[f64]) -> f64 {
        self.evaluate(theta, None)
    }

    fn grad(&self, theta: &[f64], out: &mut [f64]) {
        self.evaluate(theta, Some(out));
    }

    /// `p_{S}` = c_S²/‖c‖² for every S, then `sigma_h_i` = softmax(w^{(h)})_i.
    fn observable_names(&self) -> &[String] {
        &self.observable_names
    }

    fn observables(&self, theta: &[f64], out: &mut [f64]) {
        let lay = self.layout;
        let ns = self.subsets.len();
        simplex_weights(&theta[lay.c_range()], &mut out[..ns]);
        let m = self.model.shape.window;
        for h in 0..self.model.shape.heads {
            let w = &theta[lay.w(h, 0)..lay.w(h, 0) + m];
            softmax(w, &mut out[ns + h * m..ns + (h + 1) * m]);
        }
    }
}

/// The stage-I replicator closed form (§8):
/// p_S(t) = p_S(0) e^{κ a₀ U_S t} / Σ_T p_T(0) e^{κ a₀ U_T t}, κ = 4/‖c₀‖², with the driving terms
/// U_S held fixed (Ĩ(S) in the limit of §8). `rate` = κ a₀. Written into `out`.
pub fn replicator(p0: &[f64], drive: &[f64], rate: f64, t: f64, out: &mut [f64]) {
    let m = p0
        .iter()
        .zip(drive)
        .filter(|(p, _)| **p > 0.0)
        .map(|(p, u)| p.ln() + rate * u * t)
        .fold(f64::NEG_INFINITY, f64::max);
    let mut z = 0.0;
    for k in 0..p0.len() {
        out[k] = if p0[k] > 0.0 {
            (p0[k].ln() + rate * drive[k] * t - m).exp()
        } else {
            0.0
        };
        z += out[k];
    }
    out.iter_mut().for_each(|v| *v /= z);
}

/// κ a₀ = 4 a₀ / ‖c₀‖² for the closed form.
pub fn replicator_rate(c0: &[f64], a0: f64) -> f64 {
    4.0 * a0 / c0.iter().map(|c| c * c).sum::<f64>()
}

#[cfg(test)]
mod tests;
