//! From a validated `[system] kind = "gih"` to the objects the jobs compute with: the prior of
//! the Markov chains, the training and validation samples, the model and the initial point.

use crate::systems::chen::markov::{ChainShape, DataSpec, KernelPrior, Sequences, generate, split};
use crate::systems::chen::reduced::{GihInit, GihModel};
use crate::systems::chen::scenario::GihSpec;

/// The prior of the scenario: a fresh kernel per sequence with Dirichlet(α) rows.
pub fn prior(s: &GihSpec) -> KernelPrior {
    KernelPrior::Dirichlet {
        shape: ChainShape::new(s.d, &s.parents()),
        alpha: s.alpha,
    }
}

/// One generated set of `n_sequences`, split into training and validation (§3, §12).
pub fn data(s: &GihSpec) -> (Sequences, Sequences) {
    let all = generate(&data_spec_with(s, s.length, s.alpha, s.n_sequences, s.seed));
    split(&all, s.train_fraction)
}

/// `n` fresh sequences of length `length` under a Dirichlet(`alpha`) prior, otherwise as the
/// scenario's chain (parents, start), seeded with `seed`.
pub fn data_spec_with(s: &GihSpec, length: usize, alpha: f64, n: usize, seed: u64) -> DataSpec {
    DataSpec {
        prior: KernelPrior::Dirichlet {
            shape: ChainShape::new(s.d, &s.parents()),
            alpha,
        },
        length,
        start: s.start,
        n_sequences: n,
        seed,
    }
}

pub fn model(s: &GihSpec) -> GihModel {
    GihModel {
        shape: s.shape(),
        head_norm: s.head_norm,
        loss: s.loss,
    }
}

pub fn init(s: &GihSpec) -> GihInit {
    GihInit {
        c0: s.c0,
        a0: s.a0,
        w_plus: s.w_plus,
        w_minus: s.w_minus,
    }
}

/// A one-line description of the system.
pub fn label(s: &GihSpec) -> String {
    format!(
        "TF(M={}, H={}, d={}, D={}), pa = {:?}, L = {}, α = {}",
        s.window, s.heads, s.d, s.degree, s.pa, s.length, s.alpha
    )
}
