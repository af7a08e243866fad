//! The figures of `[standard]`: the progress measures normalised by their final values and the
//! loss against t (`progress`), and the weight structure at the start, middle and end of
//! training (`weights-start|mid|end`).

use super::{Event, MEASURES, Row, Snapshot};
use crate::report::figure::{Axis, Figure, Heatmap, LegendAt, Panel, Series, VLine, color};
use crate::report::{fmt_f64, short};
use crate::systems::musat::scenario_standard::StandardSpec;

fn t_axis() -> Axis {
    Axis::linear("t (pseudo-time = lr·step/D)")
}

/// The measure's symbol and its colour (the same in every panel).
fn symbol(name: &str) -> (&'static str, usize) {
    match name {
        "alpha3" => ("α₃", 0),
        "beta2" => ("β₂", 1),
        "gamma3" => ("γ₃", 2),
        _ => ("loss", 7),
    }
}

pub(super) fn progress_figure(
    rows: &[Row],
    events: &[Event],
    spec: &StandardSpec,
    reference: f64,
    title: &str,
    dims: &str,
) -> Figure {
    let mut measures = Panel::new(
        format!(
            "progress measures α₃, β₂, γ₃ of §11 / their final values; events at {}",
            fmt_f64(spec.fraction)
        ),
        t_axis(),
        Axis::linear("measure / final value"),
    );
    let t_end = rows.last().map_or(1.0, |r| r.t);
    for name in MEASURES.iter().rev() {
        let Some(last) = rows.last().map(|r| r.measure(name)) else {
            continue;
        };
        let (sym, c) = symbol(name);
        if !(last.is_finite() && last != 0.0) {
            continue;
        }
        let pts = rows.iter().map(|r| (r.t, r.measure(name) / last)).collect();
        measures.series.push(Series::line(
            format!("{sym} / {} (final)", short(last)),
            pts,
            color(c),
        ));
    }
    measures.series.push(
        Series::dashed(
            format!("fraction {}", fmt_f64(spec.fraction)),
            vec![(0.0, spec.fraction), (t_end, spec.fraction)],
            color(6),
        )
        .thin(),
    );
    let mut loss = Panel::new(
        "loss (each checkpoint's batch)",
        t_axis(),
        Axis::log("loss (log scale)"),
    );
    loss.series.push(Series::line(
        "loss",
        rows.iter().map(|r| (r.t, r.loss)).collect(),
        color(4),
    ));
    loss.series.push(
        Series::dashed(
            "½ loss of zero logits",
            vec![(0.0, 0.5 * reference), (t_end, 0.5 * reference)],
            color(6),
        )
        .thin(),
    );
    for e in events {
        let Some(t) = e.t else { continue };
        let (sym, c) = symbol(e.quantity);
        let (panel, c, what) = if e.quantity == "loss" {
            (&mut loss, color(4), "T_loss_half".to_string())
        } else {
            (&mut measures, color(c), format!("T {sym}"))
        };
        panel.vlines.push(VLine {
            x: t,
            label: format!("{what} = {}", short(t)),
            color: c,
        });
    }
    measures.legend = LegendAt::LowerRight;
    loss.legend = LegendAt::Best;
    let mut fig = Figure::grid(1, 2, vec![measures, loss])
        .titled(format!("standard transformer: {title}; {dims}"));
    fig.width = 1840;
    fig.height += 60;
    fig
}

/// Labels for `count` cells named `prefix`0, `prefix`1, …, every `every`-th written.
fn sparse(prefix: &str, count: usize, every: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            if i % every.max(1) == 0 {
                format!("{prefix}{i}")
            } else {
                String::new()
            }
        })
        .collect()
}

fn rows_of(values: &[f64], n: usize) -> Vec<Vec<f64>> {
    values.chunks(n).map(<[f64]>::to_vec).collect()
}

/// Largest |value| of one block over every snapshot (the colour scale shared by start, middle
/// and end).
fn scale(all: &[Snapshot], pick: fn(&Snapshot) -> &[f64]) -> f64 {
    let m = all
        .iter()
        .flat_map(|s| pick(s).iter())
        .fold(
            0.0f64,
            |m, v| if v.is_finite() { m.max(v.abs()) } else { m },
        );
    if m > 0.0 { m } else { 1.0 }
}

pub(super) fn weights_figure(s: &Snapshot, all: &[Snapshot], title: &str) -> Figure {
    let b = &s.blocks;
    let (nv, t) = (b.vocab, b.positions);
    let every_tok = nv.div_ceil(8);
    let every_pos = t.div_ceil(5);
    let mut emb = sparse("t", nv, every_tok);
    emb.extend(sparse("p", t, every_pos));
    let tokens = sparse("t", nv, every_tok);
    let heat = |values: &[f64], n: usize, rows: Vec<String>, cols: Vec<String>, m: f64| Heatmap {
        values: rows_of(values, n),
        row_labels: rows,
        col_labels: cols,
        range: (-m, m),
        annotate: false,
        scale_label: "value".into(),
    };
    let m1 = scale(all, |s| &s.blocks.qk1);
    let m2 = scale(all, |s| &s.blocks.qk2);
    let m3 = scale(all, |s| &s.blocks.ov2);
    let panels = vec![
        Panel::heatmap(
            "layer-1 QK in the [T P] basis: (W_Q¹ e_row)·(W_K¹ e_col)",
            Axis::linear("key embedding e_col (tokens t_v, then positions p_k)"),
            Axis::linear("query embedding e_row"),
            heat(&b.qk1, nv + t, emb.clone(), emb, m1),
        ),
        Panel::heatmap(
            "layer-2 QK through layer-1 OV: (W_Q² t_u)·(W_K² W_O¹W_V¹ t_v)",
            Axis::linear("key: token v carried by layer 1"),
            Axis::linear("query token u"),
            heat(&b.qk2, nv, tokens.clone(), tokens.clone(), m2),
        ),
        Panel::heatmap(
            "layer-2 OV into the unembedding: W_o W_O²W_V² t_v",
            Axis::linear("attended token v"),
            Axis::linear("logit of token u"),
            heat(&b.ov2, nv, tokens.clone(), tokens, m3),
        ),
    ];
    let mut fig = Figure::grid(1, 3, panels).titled(format!(
        "weights at the {} (step {}, t = {}; colour scales shared) — {title}",
        match s.name {
            "start" => "start",
            "mid" => "middle",
            _ => "end",
        },
        s.step,
        short(s.t)
    ));
    fig.width = 2400;
    fig.height += 140;
    fig
}
