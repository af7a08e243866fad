//! The figures of the `[gih]` job: selection (p_S over subsets), RPE heatmaps, the classifier
//! scalar and the losses, for the reduced flow and every model trained beside it.

use crate::report::figure::{Axis, Figure, Heatmap, LegendAt, Marker, Panel, Series, VLine, color};
use crate::report::{Cell, Table, short};
use crate::systems::chen::events::EventRow;
use crate::systems::chen::reduced::Block;
use crate::systems::chen::runs::*;
use crate::systems::chen::scenario::{GdData, GihJobSpec, GihSpec};
use crate::systems::chen::setup::label;
use plotters::style::RGBColor;

// ---------------------------------------------------------------------------------------------
// Figures

fn col(table: &Table, name: &str) -> usize {
    table
        .header
        .iter()
        .position(|h| h == name)
        .expect("a known column")
}

fn num(c: &Cell) -> Option<f64> {
    match c {
        Cell::Num(v) => Some(*v),
        Cell::Int(v) => Some(*v as f64),
        _ => None,
    }
}

/// (t, value) of a column over the rows of one stage (t shifted by −offset).
/// A column in a stage as its change since the stage's first row (for log-t axes: t > 0 only),
/// with that first value; None when the stage has no rows.
fn change_since_start(
    table: &Table,
    stage: &str,
    name: &str,
    offset: f64,
) -> Option<(f64, Vec<(f64, f64)>)> {
    let raw = series(table, stage, name, offset);
    let &(_, first) = raw.first()?;
    let pts = raw
        .into_iter()
        .filter(|(t, _)| *t > 0.0)
        .map(|(t, v)| (t, v - first))
        .collect();
    Some((first, pts))
}

fn series(table: &Table, stage: &str, name: &str, offset: f64) -> Vec<(f64, f64)> {
    let (ct, cs, cv) = (col(table, "t"), col(table, "stage"), col(table, name));
    table
        .rows
        .iter()
        .filter(|r| matches!(&r[cs], Cell::Text(s) if s == stage))
        .filter_map(|r| Some((num(&r[ct])? - offset, num(&r[cv])?)))
        .collect()
}

/// The values of the `sigma_h_i` columns at the row nearest to time t.
fn sigma_at(table: &Table, t: f64, s: &GihSpec) -> Vec<Vec<f64>> {
    let ct = col(table, "t");
    let r = table
        .rows
        .iter()
        .min_by(|a, b| {
            let da = (num(&a[ct]).unwrap_or(f64::INFINITY) - t).abs();
            let db = (num(&b[ct]).unwrap_or(f64::INFINITY) - t).abs();
            da.total_cmp(&db)
        })
        .expect("a non-empty table");
    let shape = s.shape();
    let reach = shape.max_offset();
    (0..s.heads)
        .map(|h| {
            let mut cells = vec![f64::NAN; reach];
            for i in 0..s.window {
                let v =
                    num(&r[col(table, &format!("sigma_{}_{}", h + 1, i + 1))]).unwrap_or(f64::NAN);
                cells[shape.offset(h, i) - 1] = v;
            }
            cells
        })
        .collect()
}

pub(crate) fn figures(s: &GihSpec, job: &GihJobSpec, r: &GihRun) -> Vec<(String, Figure)> {
    let mut out = Vec::new();
    let models: Vec<(&str, &Table)> = std::iter::once(("reduced flow", &r.reduced.table))
        .chain(r.full.as_ref().map(|f| ("full model (GD)", &f.table)))
        .collect();
    let cols = models.len();
    let star = r.mi.best_label();
    let suffix = if cols > 1 {
        format!(" — {}", label(s))
    } else {
        String::new()
    };
    let stages_with = |b: Block| -> Vec<usize> {
        job.stages
            .iter()
            .enumerate()
            .filter(|(_, st)| st.train.contains(&b))
            .map(|(k, _)| k)
            .collect()
    };
    let events_of =
        |model: &str| -> Vec<&EventRow> { r.events().filter(|e| e.model == model).collect() };
    // GD on the reduced model is drawn over the reduced flow's panels, as circles at its
    // checkpoints (t > 0 within the stage).
    let gd_points = |stage: &str, column: &str, t0: f64| -> Vec<(f64, f64)> {
        r.gd.as_ref()
            .map(|g| series(&g.table, stage, column, t0))
            .unwrap_or_default()
            .into_iter()
            .filter(|(t, _)| *t > 0.0)
            .collect()
    };
    let gd_name = r.gd.as_ref().map(|g| match g.data {
        GdData::Fixed => "GD".to_string(),
        GdData::Fresh { batch } => format!("SGD, B = {batch}"),
    });
    let with_gd = |i: usize, title: &str| match (&gd_name, i) {
        (Some(gn), 0) => format!("{title} (lines), {gn} (circles)"),
        _ => title.to_string(),
    };
    let model_key = |i: usize| if i == 0 { "reduced" } else { "full" };
    let since = |name: &str| Axis::log(format!("time since the start of stage {name} (log scale)"));
    // Side-by-side panels share the time range: from the latest first sample of the models (GD
    // checkpoints start one step in) to the end of the stage.
    let shared = |k: usize| -> Axis {
        let (name, t0, t1) = &r.stages[k];
        let axis = since(name);
        if cols < 2 {
            return axis;
        }
        let lo = models
            .iter()
            .filter_map(|(_, table)| {
                series(table, name, "a", *t0)
                    .into_iter()
                    .map(|p| p.0)
                    .find(|&t| t > 0.0)
            })
            .fold(0.0f64, f64::max);
        if lo > 0.0 && lo < t1 - t0 {
            axis.with_range(lo, t1 - t0)
        } else {
            axis
        }
    };
    // 1. selection: p_S during the first stage that trains c, with the replicator closed form
    if let Some(&k) = stages_with(Block::C).first() {
        let (name, t0, t1) = &r.stages[k];
        let mut panels = Vec::new();
        for (i, (title, table)) in models.iter().enumerate() {
            let mut p = Panel::new(
                format!("{}: p_S in stage {name}", with_gd(i, title)),
                shared(k),
                Axis::linear("p_S = c_S² / ‖c‖²").with_range(0.0, 1.02),
            );
            // The replicator curves go after every p_S line, so that the legend lists the p_S
            // together and the dashed curves are drawn on top.
            let mut replicator = Vec::new();
            let mut gd_markers = Vec::new();
            for sidx in 0..r.mi.subsets.len() {
                let lab = r.mi.subsets.label(sidx);
                let pts: Vec<(f64, f64)> = series(table, name, &format!("p_{lab}"), *t0)
                    .into_iter()
                    .filter(|(t, _)| *t > 0.0)
                    .collect();
                let mark = if sidx == r.mi.best { " = S*" } else { "" };
                let mut se = Series::line(format!("p_{lab}{mark}"), pts, color(sidx));
                se.width = if sidx == r.mi.best { 4 } else { 2 };
                p.series.push(se);
                if i == 0
                    && let Some(rep) = &r.reduced.replicator
                {
                    let (ct, cv) = (col(rep, "t"), col(rep, &format!("p_{lab}")));
                    let pts: Vec<(f64, f64)> = rep
                        .rows
                        .iter()
                        .filter_map(|row| Some((num(&row[ct])? - t0, num(&row[cv])?)))
                        .filter(|(t, _)| *t > 0.0)
                        .collect();
                    let d = Series::dashed("", pts, color(sidx));
                    replicator.push(if sidx == r.mi.best {
                        Series {
                            label: Some("dashed: replicator with U_S = Ĩ(S)".into()),
                            ..d
                        }
                    } else {
                        d.unlabelled()
                    });
                }
                if i == 0
                    && let Some(gn) = &gd_name
                {
                    let m = Series::markers(
                        format!("circles: {gn} on (c, w, a)"),
                        gd_points(name, &format!("p_{lab}"), *t0),
                        color(sidx),
                        Marker::Circle,
                    );
                    gd_markers.push(if sidx == r.mi.best { m } else { m.unlabelled() });
                }
            }
            p.series.append(&mut replicator);
            p.series.append(&mut gd_markers);
            // One colour per event (none of the p_S colours), so the markers tell apart.
            const EVENT_COLORS: [RGBColor; 3] = [
                RGBColor(0, 0, 0),
                RGBColor(136, 34, 85),
                RGBColor(110, 80, 20),
            ];
            for e in events_of(model_key(i)) {
                if let (true, Some(t)) = (e.name.starts_with(&format!("p_{star}@")), e.t)
                    && t > *t0
                    && t <= *t1
                {
                    let k = p.vlines.len();
                    p.vlines.push(VLine {
                        x: t - t0,
                        label: format!("{} at {}", e.name, short(t - t0)),
                        color: EVENT_COLORS[k % EVENT_COLORS.len()],
                    });
                }
            }
            p.legend = LegendAt::Best;
            panels.push(p);
        }
        out.push((
            "selection".to_string(),
            Figure::grid(1, cols, panels)
                .titled(format!("Stage {name}: the FFN selects S* = {star}{suffix}")),
        ));
    }
    // 2. RPE heatmaps before and after the stages that train w
    let w_stages = stages_with(Block::W);
    if let (Some(&first), Some(&last)) = (w_stages.first(), w_stages.last()) {
        let mut panels = Vec::new();
        let gd_title = gd_name.as_ref().map(|gn| format!("reduced model, {gn}"));
        let mut rpe_models: Vec<(&str, &Table)> = models.clone();
        if let (Some(g), Some(title)) = (&r.gd, &gd_title) {
            rpe_models.push((title.as_str(), &g.table));
        }
        for (title, table) in &rpe_models {
            for (when, k, t) in [
                ("before", first, r.stages[first].1),
                ("after", last, r.stages[last].2),
            ] {
                panels.push(Panel::heatmap(
                    format!("{title}: {when} stage {} (t = {})", r.stages[k].0, short(t)),
                    Axis::linear("offset (head attends to x_{l+offset})"),
                    Axis::linear("layer-1 head"),
                    Heatmap {
                        values: sigma_at(table, t, s),
                        row_labels: (1..=s.heads).map(|h| format!("head {h}")).collect(),
                        col_labels: (1..=s.shape().max_offset())
                            .map(|o| format!("−{o}"))
                            .collect(),
                        range: (0.0, 1.0),
                        annotate: true,
                        scale_label: "σ^(h) = softmax(w^(h))".into(),
                    },
                ));
            }
        }
        out.push((
            "rpe".to_string(),
            Figure::grid(rpe_models.len(), 2, panels).titled(format!(
                "RPE attention of the layer-1 heads (S* = {star}; grey: outside a head's window)"
            )),
        ));
    }
    // 3. classifier: a in the last stage that trains a, on a log-t axis
    if let Some(&k) = stages_with(Block::A).last() {
        let (name, t0, t1) = &r.stages[k];
        let mut panels = Vec::new();
        for (i, (title, table)) in models.iter().enumerate() {
            let mut p = Panel::new(
                format!("{}: a in stage {name}", with_gd(i, title)),
                shared(k),
                Axis::linear("classifier scalar a"),
            );
            let pts: Vec<(f64, f64)> = series(table, name, "a", *t0)
                .into_iter()
                .filter(|(t, _)| *t > 0.0)
                .collect();
            p.series.push(Series::line("a", pts, color(0)));
            if i == 0
                && let Some(gn) = &gd_name
            {
                p.series.push(Series::markers(
                    format!("a, {gn} on (c, w, a)"),
                    gd_points(name, "a", *t0),
                    color(0),
                    Marker::Circle,
                ));
            }
            let a_events = events_of(model_key(i))
                .into_iter()
                .filter(|e| e.name.starts_with("a@"));
            for (j, e) in a_events.enumerate() {
                if let Some(t) = e.t.filter(|t| t > t0 && t <= t1) {
                    p.vlines.push(VLine {
                        x: t - t0,
                        label: format!("{} at {}", e.name, short(t - t0)),
                        color: color(j + 1),
                    });
                }
            }
            p.legend = LegendAt::Best;
            panels.push(p);
        }
        out.push((
            "classifier".to_string(),
            Figure::grid(1, cols, panels).titled(format!(
                "Stage {name}: the classifier scalar a grows{suffix}"
            )),
        ));
    }
    // 4. losses: the change since each stage's start, train and validation, reduced and full
    let mut panels = Vec::new();
    for (name, t0, _) in &r.stages {
        let mut p = Panel::new(
            format!("stage {name}"),
            since(name),
            Axis::linear("loss − loss at the stage start"),
        );
        for (i, (title, table)) in models.iter().enumerate() {
            for (j, (which, column)) in [("train", "loss"), ("validation", "val_loss")]
                .into_iter()
                .enumerate()
            {
                let Some((first, pts)) = change_since_start(table, name, column, *t0) else {
                    continue;
                };
                let lab = format!("{title}, {which} (at start {})", short(first));
                p.series.push(if i == 0 {
                    Series::line(lab, pts, color(j))
                } else {
                    Series::dashed(lab, pts, color(j + 2))
                });
            }
        }
        if let (Some(g), Some(gn)) = (&r.gd, &gd_name) {
            for (j, (which, column)) in [("train", "loss"), ("validation", "val_loss")]
                .into_iter()
                .enumerate()
            {
                let Some((_, pts)) = change_since_start(&g.table, name, column, *t0) else {
                    continue;
                };
                p.series.push(Series::markers(
                    format!("reduced {gn}, {which}"),
                    pts,
                    color(j),
                    Marker::Circle,
                ));
            }
        }
        p.legend = LegendAt::Best;
        panels.push(p);
    }
    let n = panels.len();
    let grid_cols = n.min(3);
    let title = if grid_cols > 1 {
        format!("Loss per stage — {}", label(s))
    } else {
        "Loss (change since the start of the run)".to_string()
    };
    out.push((
        "loss".to_string(),
        Figure::grid(n.div_ceil(grid_cols), grid_cols, panels).titled(title),
    ));
    out
}
