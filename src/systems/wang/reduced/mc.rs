//! The exact finite-L expected loss of the six-parameter model, estimated on a fixed seeded
//! sample of K Gaussian sequences (common random numbers: the same K sequences at every θ, so
//! the estimate is a smooth deterministic function of θ and its gradient is exact).
//!
//! ℓ̂(θ) = loss_scale·[ ℓ_G(θ) + (1/K) Σ_k (2 D_k E_k + E_k²) ]
//!
//! The sample mean of (ŷ − y)² = D² + 2DE + E² has its 4-gram square D² replaced by its exact
//! expectation ℓ_G (exact for finite M and any layer-1 slope, docs/theory/wang.md §4): a control
//! variate with the same expectation that removes the O(1) sampling noise of the 4-gram part,
//! so the O(1/N) effects (the IH part and the cross term the closed form drops) are visible with
//! moderate K. Observables: `loss_G` (exact), `loss_I` = mean E², `w`, and `loss_cross` =
//! mean 2DE (all losses × loss_scale).
//!
//! The K sequences are split into a fixed number of chunks evaluated in parallel and summed in
//! chunk order, so the result does not depend on the thread count.

use super::sample::{Prepared, SeqScratch, eval_sequence_with_target, target_parts};
use super::{OBS_LOSS_G, OBS_LOSS_I, OBS_W, ReducedGrad, RichModel};
use crate::flow::GradientFlow;
use crate::numerics::normal::Gaussian;
use rayon::prelude::*;
use std::cell::RefCell;

/// Number of chunks the sample is split into (fixed, independent of the thread count).
const CHUNKS: usize = 16;

/// Sample size × L from which a pass is split across threads.
const PARALLEL_MIN_WORK: usize = 200_000;

/// Index of the `loss_cross` observable.
pub const OBS_LOSS_CROSS: usize = 3;

thread_local! {
    static SEQ: RefCell<Option<SeqScratch>> = const { RefCell::new(None) };
    static PREP: RefCell<Option<(usize, Prepared)>> = const { RefCell::new(None) };
}

/// Run `f` with this thread's sequence scratch for length L (allocated on first use).
fn with_seq<R>(l: usize, f: impl FnOnce(&mut SeqScratch) -> R) -> R {
    SEQ.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|s| s.len() < l + 1) {
            *slot = Some(SeqScratch::new(l));
        }
        f(slot.as_mut().expect("just filled"))
    })
}

fn with_prepared<R>(l: usize, f: impl FnOnce(&mut Prepared) -> R) -> R {
    PREP.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(cap, _)| *cap < l) {
            *slot = Some((l, Prepared::new(l)));
        }
        f(&mut slot.as_mut().expect("just filled").1)
    })
}

/// The Monte-Carlo estimate of the exact finite-L loss as a gradient flow.
#[derive(Debug, Clone)]
pub struct RichMonteCarlo {
    model: RichModel,
    samples: usize,
    seed: u64,
    /// K × L tokens, sequence k at [k·L, (k+1)·L).
    tokens: Vec<f64>,
    /// The target's IH part per sequence (independent of θ).
    y_i: Vec<f64>,
    names: Vec<String>,
    observable_names: Vec<String>,
}

/// Sums over one chunk: mean-able loss parts and the reduced gradient.
#[derive(Debug, Clone, Copy, Default)]
struct Partial {
    e2: f64,
    cross: f64,
    grad: [f64; 5],
}

impl RichMonteCarlo {
    /// `samples` ≥ 1 sequences of length L drawn from the seeded stream.
    pub fn new(model: RichModel, samples: usize, seed: u64) -> Self {
        assert!(model.l >= 4 && samples >= 1);
        let mut tokens = vec![0.0; samples * model.l];
        Gaussian::new(seed).fill(&mut tokens);
        let y_i = tokens
            .chunks_exact(model.l)
            .map(|x| target_parts(&model, x).1)
            .collect();
        RichMonteCarlo {
            y_i,
            names: model.names(),
            observable_names: ["loss_G", "loss_I", "w", "loss_cross"]
                .map(String::from)
                .to_vec(),
            model,
            samples,
            seed,
            tokens,
        }
    }

    pub fn model(&self) -> &RichModel {
        &self.model
    }

    pub fn samples(&self) -> usize {
        self.samples
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Sequence k (x_1..x_L).
    pub fn sequence(&self, k: usize) -> &[f64] {
        &self.tokens[k * self.model.l..(k + 1) * self.model.l]
    }

    /// The sample sums (in chunk order) at θ, with or without the gradient.
    fn sums(&self, theta: &[f64], want_grad: bool) -> Partial {
        let l = self.model.l;
        let model = &self.model;
        with_prepared(l, |prep| {
            prep.prepare(model, theta);
            let prep = &*prep;
            let mut parts = [Partial::default(); CHUNKS];
            let per = self.samples.div_ceil(CHUNKS);
            let chunk = |(c, part): (usize, &mut Partial)| {
                let lo = (c * per).min(self.samples);
                let hi = ((c + 1) * per).min(self.samples);
                with_seq(l, |scratch| {
                    for k in lo..hi {
                        let ev = eval_sequence_with_target(
                            model,
                            prep,
                            self.sequence(k),
                            self.y_i[k],
                            scratch,
                        );
                        part.e2 += ev.e * ev.e;
                        part.cross += 2.0 * ev.d * ev.e;
                        if want_grad {
                            // ∂(2DE + E²) = 2E ∂u_G + 2(D + E) ∂u_I.
                            let (gg, gi) = (2.0 * ev.e, 2.0 * (ev.d + ev.e));
                            part.grad[0] += gg * ev.ug[0];
                            part.grad[1] += gg * ev.ug[1];
                            part.grad[2] += gi * ev.ui[0];
                            part.grad[3] += gi * ev.ui[1];
                            part.grad[4] += gg * ev.ug[2] + gi * ev.ui[2];
                        }
                    }
                });
            };
            // The same chunks in the same order either way; threads only pay off for large
            // samples (waking the pool costs more than a small pass).
            if self.samples * l >= PARALLEL_MIN_WORK {
                parts.par_iter_mut().enumerate().for_each(chunk);
            } else {
                parts.iter_mut().enumerate().for_each(chunk);
            }
            let mut total = Partial::default();
            for p in &parts {
                total.e2 += p.e2;
                total.cross += p.cross;
                for (t, g) in total.grad.iter_mut().zip(&p.grad) {
                    *t += g;
                }
            }
            let k = self.samples as f64;
            total.e2 /= k;
            total.cross /= k;
            for g in &mut total.grad {
                *g /= k;
            }
            total
        })
    }

    fn four_gram(&self, theta: &[f64]) -> super::FourGram {
        let m = &self.model;
        let lay = m.layout();
        m.four_gram(theta[lay.w_g], theta[lay.p], m.p1(theta), true)
    }
}

impl GradientFlow for RichMonteCarlo {
    fn names(&self) -> &[String] {
        &self.names
    }

    fn loss(&self, theta: &[f64]) -> f64 {
        let s = self.sums(theta, false);
        self.model.loss_scale * (self.four_gram(theta).loss + s.e2 + s.cross)
    }

    fn grad(&self, theta: &[f64], out: &mut [f64]) {
        let s = self.sums(theta, true);
        let g4 = self.four_gram(theta);
        let ls = self.model.loss_scale;
        let g = ReducedGrad {
            w_g: ls * (g4.d_wg + s.grad[0]),
            p: ls * (g4.d_p + s.grad[1]),
            v: ls * s.grad[2],
            w: ls * s.grad[3],
            p1: ls * (g4.d_p1 + s.grad[4]),
        };
        self.model.chain(theta, &g, out);
    }

    fn observable_names(&self) -> &[String] {
        &self.observable_names
    }

    fn observables(&self, theta: &[f64], out: &mut [f64]) {
        let s = self.sums(theta, false);
        let ls = self.model.loss_scale;
        out[OBS_LOSS_G] = ls * self.four_gram(theta).loss;
        out[OBS_LOSS_I] = ls * s.e2;
        out[OBS_W] = self.model.w(theta);
        out[OBS_LOSS_CROSS] = ls * s.cross;
    }
}
