//! `[gih.transfer]`: the generalisation protocol of Chen et al.'s Fig. 7 (docs/theory/chen.md §12).
//! The parameters trained at `system.L` (the reduced flow's final (c, w, a), and the full
//! model's final weights when it was trained) are evaluated, unchanged, on fresh sequences of
//! other lengths L and Dirichlet priors α. Neither model has a parameter whose shape depends on
//! L (the RPE weights live on the window of M offsets), so "copying the trained RPE rows into
//! a model of the new length" is evaluating the same θ on the new data. The loss is the
//! training loss (same ε). Each (L, α) gets its own seeded sample; the standard error is that
//! of the mean over [`TRANSFER_BATCHES`] equal batches.

use crate::flow::GradientFlow;
use crate::report::figure::{Axis, Figure, Marker, Panel, Series, VLine, color};
use crate::report::{Cell, Table};
use crate::systems::chen::markov::{Sequences, generate};
use crate::systems::chen::reduced::GihFlow;
use crate::systems::chen::scenario::{GihSpec, TRANSFER_BATCHES, TransferSpec};
use crate::systems::chen::setup::{data_spec_with, model};
use crate::systems::chen::transformer::{FullSettings, GihTransformer};
use plotters::style::RGBColor;

/// A trained model to evaluate: its name in `transfer.csv` and how to get its loss on a sample.
pub struct Trained<'a> {
    pub name: &'static str,
    pub theta: &'a [f64],
    /// The full model's settings (None: the reduced model).
    pub full: Option<FullSettings>,
}

/// One row of `transfer.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferRow {
    pub model: &'static str,
    pub length: usize,
    pub alpha: f64,
    pub loss: f64,
    pub stderr: f64,
}

/// The seed of point `i` (α-major, then L): a fixed mix of the transfer seed and the index.
fn point_seed(seed: u64, i: usize) -> u64 {
    seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Mean and standard error of the batch means (batches of equal size but the last, which takes
/// the remainder; the mean is weighted by batch size, the standard error uses the batch means).
fn batch_mean(n: usize, mut loss_of: impl FnMut(std::ops::Range<usize>) -> f64) -> (f64, f64) {
    let k = TRANSFER_BATCHES;
    let size = n / k;
    let means: Vec<(f64, usize)> = (0..k)
        .map(|b| {
            let lo = b * size;
            let hi = if b + 1 == k { n } else { lo + size };
            (loss_of(lo..hi), hi - lo)
        })
        .collect();
    let mean = means.iter().map(|(m, w)| m * *w as f64).sum::<f64>() / n as f64;
    let plain = means.iter().map(|(m, _)| m).sum::<f64>() / k as f64;
    let var = means.iter().map(|(m, _)| (m - plain).powi(2)).sum::<f64>() / (k - 1) as f64;
    (mean, (var / k as f64).sqrt())
}

/// The loss of `trained` on `seqs` (mean over the sequences).
fn loss_on(s: &GihSpec, trained: &Trained, seqs: &Sequences) -> f64 {
    match trained.full {
        None => GihFlow::new(model(s), seqs).loss(trained.theta),
        Some(settings) => {
            GihTransformer::new(s.shape(), s.loss, settings, seqs).loss(trained.theta)
        }
    }
}

/// Evaluate every trained model at every (α, L) of `spec`.
pub fn evaluate(s: &GihSpec, spec: &TransferSpec, models: &[Trained]) -> Vec<TransferRow> {
    let mut rows = Vec::new();
    let mut i = 0;
    for &alpha in &spec.alphas {
        for &length in &spec.lengths {
            let seqs = generate(&data_spec_with(
                s,
                length,
                alpha,
                spec.n_sequences,
                point_seed(spec.seed, i),
            ));
            i += 1;
            for m in models {
                let (loss, stderr) =
                    batch_mean(spec.n_sequences, |r| loss_on(s, m, &seqs.slice(r)));
                rows.push(TransferRow {
                    model: m.name,
                    length,
                    alpha,
                    loss,
                    stderr,
                });
            }
        }
    }
    rows.sort_by(|a, b| {
        a.model
            .cmp(b.model)
            .then(a.alpha.total_cmp(&b.alpha))
            .then(a.length.cmp(&b.length))
    });
    rows
}

/// `transfer.csv`: `model,L,alpha,loss,stderr,n_sequences`, by model, α, L.
pub fn table(rows: &[TransferRow], n: usize) -> Table {
    let mut t = Table::new(["model", "L", "alpha", "loss", "stderr", "n_sequences"]);
    for r in rows {
        t.push(vec![
            r.model.into(),
            Cell::from(r.length),
            r.alpha.into(),
            r.loss.into(),
            r.stderr.into(),
            Cell::from(n),
        ]);
    }
    t
}

/// `transfer.png`: the loss against L (log–log), one line per model and α, ± one standard
/// error as thin lines, and the training length marked.
pub fn figure(s: &GihSpec, rows: &[TransferRow], title: &str, system: &str) -> Figure {
    let mut p = Panel::new(
        format!("{system}: the trained θ on fresh sequences"),
        Axis::log("context length L (log scale)"),
        // linear: the paper loss −ln(ŷ_y + ε) is negative where ŷ_y + ε > 1
        Axis::linear(format!(
            "loss on fresh sequences (bars: ± 1 s.e., {TRANSFER_BATCHES} batches)"
        )),
    );
    let mut keys: Vec<(&str, f64)> = rows.iter().map(|r| (r.model, r.alpha)).collect();
    keys.dedup();
    let markers = [
        Marker::Circle,
        Marker::Square,
        Marker::Triangle,
        Marker::Cross,
    ];
    for (k, (m, a)) in keys.iter().enumerate() {
        let pts: Vec<&TransferRow> = rows
            .iter()
            .filter(|r| r.model == *m && r.alpha == *a)
            .collect();
        let c = color(k);
        let name = if *m == "flow" {
            "reduced model"
        } else {
            "full model"
        };
        let line: Vec<(f64, f64)> = pts.iter().map(|r| (r.length as f64, r.loss)).collect();
        p.series
            .push(Series::line("", line.clone(), c).thin().unlabelled());
        p.series.push(Series::markers(
            format!("{name}, α = {a}"),
            line,
            c,
            markers[k % markers.len()],
        ));
        for r in &pts {
            let x = r.length as f64;
            let (lo, hi) = (r.loss - r.stderr, r.loss + r.stderr);
            if lo > 0.0 {
                p.series.push(
                    Series::line("", vec![(x, lo), (x, hi)], c)
                        .thin()
                        .unlabelled(),
                );
            }
        }
    }
    p.vlines.push(VLine {
        x: s.length as f64,
        label: format!("trained at L = {}", s.length),
        color: RGBColor(80, 80, 80),
    });
    let mut fig = Figure::grid(1, 1, vec![p]).titled(title);
    fig.width = 1000;
    fig
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equal batches: the mean is the plain mean and the standard error that of the batch
    /// means, computed here by hand for means 0, 1, …, 9.
    #[test]
    fn batch_means_give_mean_and_standard_error() {
        let (m, se) = batch_mean(100, |r| (r.start / 10) as f64);
        assert!((m - 4.5).abs() < 1e-15);
        // sample variance of 0..9 is 55/6; s.e. = sqrt(55/6/10)
        assert!((se - (55.0f64 / 60.0).sqrt()).abs() < 1e-15, "{se}");
        // unequal last batch: weights by size
        let (m, _) = batch_mean(25, |r| if r.end == 25 { 1.0 } else { 0.0 });
        assert!((m - 7.0 / 25.0).abs() < 1e-15, "{m}");
    }
}
