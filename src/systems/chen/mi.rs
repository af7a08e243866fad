//! The modified χ² mutual information of Chen et al. (docs/theory/chen.md §6.1) and the information
//! set S* (§6.2). [reconstruction]
//!
//! For a set S of offsets (head h ↔ offset h), z = x_{l−S} and e = x_l under the stationary law
//! μ^π of the chain,
//! ```text
//! Ĩ_π(S) = Σ_{e,z} μ(e,z)²/μ(e) − Σ_z μ(z)²                     (power 2, the modified MI)
//! I_π(S) = Σ_{e,z} μ(e,z)²/(μ(z) μ(e)) − 1                       (power 1, the standard χ² MI)
//! Ĩ(S)   = E_π Ĩ_π(S),   S* = argmax_{S ∈ 𝒮_D} Ĩ(S)
//! ```
//! Per kernel the value is computed
//! - **exactly**, by enumerating the d^m histories of m = max(r_max, H) + 1 consecutive tokens
//!   (the lifted stationary law on the first r_max tokens times the transitions that follow), or
//! - **by Monte Carlo over histories** (power 2 only), from pairs of independent stationary
//!   windows: Ĩ_π(S) = E[1{z₁ = z₂}(1{e₁ = e₂}/μ(e₁) − 1)], an unbiased mean with a standard
//!   error; it needs only the lifted law on d^{r_max} states, not the d^m joint.
//!
//! The expectation over π ~ Dirichlet is a Monte-Carlo mean over independent kernel draws, with
//! the standard error of that mean (kernel draw i uses stream i of the seed; the reduction is in
//! draw order, so results do not depend on the thread count). For a fixed kernel there is one
//! draw, and the standard error is 0 (exact) or that of the history sampling (Monte Carlo).

use crate::systems::chen::common::{Subsets, subset_label};
use crate::systems::chen::markov::{
    Kernel, KernelPrior, MarkovError, item_rng, sample_categorical,
};
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How Ĩ_π is computed per kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MiMethod {
    /// Exact when d^m ≤ [`EXACT_LIMIT`], Monte Carlo over histories otherwise.
    #[default]
    Auto,
    Exact,
    MonteCarlo,
}

/// Largest joint table (d^m entries) enumerated by the `auto` method.
pub const EXACT_LIMIT: usize = 1 << 16;

/// Settings of an MI estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MiSpec {
    /// Offsets 1..=heads are candidates (head h ↔ offset h).
    pub heads: usize,
    /// |S| ≤ degree.
    pub degree: usize,
    /// 2: the modified MI; 1: the standard χ² MI (exact method only).
    pub power: u32,
    pub method: MiMethod,
    /// Kernel draws (ignored for a fixed kernel).
    pub draws: usize,
    /// Pairs of windows per kernel for the Monte-Carlo method.
    pub pairs: usize,
    pub seed: u64,
}

/// Ĩ for every S ∈ 𝒮_D, with standard errors and the argmax.
#[derive(Debug, Clone)]
pub struct MiEstimate {
    pub subsets: Subsets,
    pub mi: Vec<f64>,
    pub stderr: Vec<f64>,
    /// The method used per kernel (`exact` or `monte_carlo`).
    pub method: MiMethod,
    pub draws: usize,
    /// Index of S* in `subsets`.
    pub best: usize,
    /// Ĩ(S*) − max_{S ≠ S*} Ĩ(S).
    pub gap: f64,
}

impl MiMethod {
    /// The scenario spelling: `auto`, `exact`, `monte_carlo`.
    pub fn name(&self) -> &'static str {
        match self {
            MiMethod::Auto => "auto",
            MiMethod::Exact => "exact",
            MiMethod::MonteCarlo => "monte_carlo",
        }
    }
}

impl MiEstimate {
    pub fn best_label(&self) -> String {
        self.subsets.label(self.best)
    }
    /// 0-based heads of S*.
    pub fn best_members(&self) -> &[usize] {
        &self.subsets.members[self.best]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MiError {
    #[error(transparent)]
    Markov(#[from] MarkovError),
    #[error(
        "the exact χ² MI enumerates d^m = {size} histories (more than {limit}); use the \
         monte_carlo method"
    )]
    TooLarge { size: usize, limit: usize },
    #[error("the Monte-Carlo χ² MI supports only power 2 (the modified MI)")]
    PowerForMonteCarlo,
}

impl From<MiError> for crate::Error {
    fn from(e: MiError) -> Self {
        crate::Error::System(Box::new(e))
    }
}

/// Tokens per window: m = max(r_max, H) + 1.
pub fn window_tokens(r_max: usize, heads: usize) -> usize {
    r_max.max(heads) + 1
}

/// Estimate Ĩ over the prior (module doc).
pub fn chi2_mi(prior: &KernelPrior, spec: &MiSpec) -> Result<MiEstimate, MiError> {
    let shape = prior.shape();
    let d = shape.d;
    let m = window_tokens(shape.r_max(), spec.heads);
    let size = d.checked_pow(m as u32).unwrap_or(usize::MAX);
    let method = match spec.method {
        MiMethod::Auto if size <= EXACT_LIMIT => MiMethod::Exact,
        MiMethod::Auto => MiMethod::MonteCarlo,
        other => other,
    };
    if method == MiMethod::Exact && size > EXACT_LIMIT.max(1 << 22) {
        return Err(MiError::TooLarge {
            size,
            limit: EXACT_LIMIT.max(1 << 22),
        });
    }
    if method == MiMethod::MonteCarlo && spec.power != 2 {
        return Err(MiError::PowerForMonteCarlo);
    }
    let subsets = Subsets::new(spec.heads, spec.degree);
    let draws = match prior {
        KernelPrior::Fixed(_) => 1,
        KernelPrior::Dirichlet { .. } => spec.draws,
    };
    // per draw: (estimate per subset, variance of that estimate from history sampling)
    type Draw = Result<(Vec<f64>, Vec<f64>), MiError>;
    let per_draw: Vec<Draw> = (0..draws)
        .into_par_iter()
        .map(|i| {
            let mut rng = item_rng(spec.seed, i as u64);
            let kernel = prior.draw(&mut rng);
            match method {
                MiMethod::MonteCarlo => Ok(sampled_mi(&kernel, &subsets, m, spec.pairs, &mut rng)?),
                _ => {
                    let v = exact_mi(&kernel, &subsets, m, spec.power)?;
                    let z = vec![0.0; v.len()];
                    Ok((v, z))
                }
            }
        })
        .collect();
    let ns = subsets.len();
    let mut sum = vec![0.0; ns];
    let mut sum_sq = vec![0.0; ns];
    let mut var_within = vec![0.0; ns];
    for r in per_draw {
        let (v, w) = r?;
        for k in 0..ns {
            sum[k] += v[k];
            sum_sq[k] += v[k] * v[k];
        }
        var_within.copy_from_slice(&w);
    }
    let n = draws as f64;
    let mi: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let stderr: Vec<f64> = (0..ns)
        .map(|k| {
            if draws >= 2 {
                let var = ((sum_sq[k] - sum[k] * sum[k] / n) / (n - 1.0)).max(0.0);
                (var / n).sqrt()
            } else {
                var_within[k].sqrt()
            }
        })
        .collect();
    let best = (0..ns).fold(0, |b, k| if mi[k] > mi[b] { k } else { b });
    let gap = mi[best]
        - (0..ns)
            .filter(|&k| k != best)
            .map(|k| mi[k])
            .fold(f64::NEG_INFINITY, f64::max);
    Ok(MiEstimate {
        subsets,
        mi,
        stderr,
        method,
        draws,
        best,
        gap,
    })
}

/// The stationary joint law of m consecutive tokens, index Σ_j x_j d^{m−1−j} (x_{l} least
/// significant, the oldest token most significant).
pub fn window_law(kernel: &Kernel, m: usize) -> Result<Vec<f64>, MarkovError> {
    let d = kernel.shape.d;
    let r = kernel.shape.r_max();
    assert!(m > r);
    let mut joint = kernel.stationary()?;
    for _ in r..m {
        let mut next = vec![0.0; joint.len() * d];
        for (idx, &p) in joint.iter().enumerate() {
            if p == 0.0 {
                continue;
            }
            for (x, &px) in kernel.row_of_state(idx).iter().enumerate() {
                next[idx * d + x] = p * px;
            }
        }
        joint = next;
    }
    Ok(joint)
}

/// Ĩ_π(S) (power 2) or I_π(S) (power 1) for every S, exactly.
pub fn exact_mi(
    kernel: &Kernel,
    subsets: &Subsets,
    m: usize,
    power: u32,
) -> Result<Vec<f64>, MarkovError> {
    let d = kernel.shape.d;
    let joint = window_law(kernel, m)?;
    let mut mu_e = vec![0.0; d];
    for (idx, &p) in joint.iter().enumerate() {
        mu_e[idx % d] += p;
    }
    let mut out = Vec::with_capacity(subsets.len());
    for members in &subsets.members {
        if members.is_empty() {
            // Σ_e μ(e)²/μ(e) − 1 = 0 (and I(∅) = 0): exactly, without round-off
            out.push(0.0);
            continue;
        }
        let nz = d.pow(members.len() as u32);
        let mut mu_ez = vec![0.0; nz * d];
        for (idx, &p) in joint.iter().enumerate() {
            // offset s = head + 1 is digit s of idx
            let z = members
                .iter()
                .fold(0, |acc, &h| acc * d + (idx / d.pow(h as u32 + 1)) % d);
            mu_ez[z * d + idx % d] += p;
        }
        let mut value = 0.0;
        for z in 0..nz {
            let row = &mu_ez[z * d..(z + 1) * d];
            let mu_z: f64 = row.iter().sum();
            if mu_z == 0.0 {
                continue;
            }
            let mut s = 0.0;
            for e in 0..d {
                if row[e] > 0.0 {
                    s += row[e] * row[e] / mu_e[e];
                }
            }
            value += match power {
                2 => s - mu_z * mu_z,
                _ => s / mu_z - mu_z,
            };
        }
        out.push(value);
    }
    Ok(out)
}

/// Ĩ_π(S) by Monte Carlo over pairs of independent stationary windows, with the variance of
/// each estimate.
pub fn sampled_mi(
    kernel: &Kernel,
    subsets: &Subsets,
    m: usize,
    pairs: usize,
    rng: &mut impl Rng,
) -> Result<(Vec<f64>, Vec<f64>), MarkovError> {
    let d = kernel.shape.d;
    let mu = kernel.stationary()?;
    // single-token law: the most recent token of the lifted state
    let mut mu_e = vec![0.0; d];
    for (s, &p) in mu.iter().enumerate() {
        mu_e[s % d] += p;
    }
    let ns = subsets.len();
    let mut sum = vec![0.0; ns];
    let mut sum_sq = vec![0.0; ns];
    let (mut w1, mut w2) = (Vec::with_capacity(m), Vec::with_capacity(m));
    for _ in 0..pairs {
        stationary_window(kernel, &mu, m, rng, &mut w1);
        stationary_window(kernel, &mu, m, rng, &mut w2);
        let (e1, e2) = (w1[m - 1], w2[m - 1]);
        let match_e = if e1 == e2 {
            1.0 / mu_e[e1 as usize]
        } else {
            0.0
        };
        for (k, members) in subsets.members.iter().enumerate() {
            if members.is_empty() {
                continue; // Ĩ(∅) = 0 exactly (its estimate would be pure noise)
            }
            let same_z = members.iter().all(|&h| w1[m - 2 - h] == w2[m - 2 - h]);
            let f = if same_z { match_e - 1.0 } else { 0.0 };
            sum[k] += f;
            sum_sq[k] += f * f;
        }
    }
    let n = pairs as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let var: Vec<f64> = (0..ns)
        .map(|k| ((sum_sq[k] - sum[k] * sum[k] / n) / (n - 1.0)).max(0.0) / n)
        .collect();
    Ok((mean, var))
}

/// m consecutive tokens (oldest first) from the stationary chain: the first r_max from the lifted
/// law `mu`, the rest from the kernel.
fn stationary_window(kernel: &Kernel, mu: &[f64], m: usize, rng: &mut impl Rng, out: &mut Vec<u8>) {
    let d = kernel.shape.d;
    let r = kernel.shape.r_max();
    let mut s = sample_categorical(mu, rng);
    out.clear();
    out.resize(r, 0);
    for k in (0..r).rev() {
        out[k] = (s % d) as u8;
        s /= d;
    }
    while out.len() < m {
        let l = out.len();
        let ctx = kernel
            .shape
            .parents
            .iter()
            .fold(0, |acc, &p| acc * d + out[l - p] as usize);
        out.push(sample_categorical(kernel.row(ctx), rng) as u8);
    }
}

/// `{1,2}`-style label of a set of 0-based heads (re-exported for reports).
pub fn label(members: &[usize]) -> String {
    subset_label(members)
}

#[cfg(test)]
mod tests;
