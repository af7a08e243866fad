//! The figures of `[compare]`: the full model against the 19- and 3-parameter flows on one
//! time axis (`compare`), the off-subspace residual (`residual`), and every coordinate
//! (`coordinates`).

use super::*;

/// Series colours: the full runs take palette 0.., ode19 and ode3 fixed ones.
pub(super) fn full_color(i: usize) -> plotters::style::RGBColor {
    color([0, 2, 3, 4][i % 4])
}
pub(super) const ODE19_COLOR: usize = 1;
pub(super) const ODE3_COLOR: usize = 7;

pub(super) fn t_axis() -> Axis {
    Axis::linear("t (pseudo-time = η·step/D)")
}

/// α₃, β₂, γ₃ and the loss of every source against t ∈ [0, t_plot].
pub(super) fn trajectories_figure(
    runs: &[FullRun],
    odes: &[OdeRun],
    spec: &CompareSpec,
    t_plot: f64,
    label: &str,
) -> Figure {
    let steps_grid: Vec<f64> = (0..=600).map(|i| t_plot * i as f64 / 600.0).collect();
    let mut panels = Vec::new();
    let mut quantities: Vec<(String, Option<usize>)> =
        [(ALPHA3, "alpha3"), (BETA2, "beta2"), (GAMMA3, "gamma3")]
            .iter()
            .map(|&(k, n)| (n.to_string(), Some(k)))
            .collect();
    quantities.push(("loss".into(), None));
    for (name, k) in quantities {
        let y = match k {
            Some(_) => Axis::linear(name.clone()),
            None => Axis::log("loss (log scale)"),
        };
        let mut p = Panel::new(name.clone(), t_axis(), y);
        for (i, r) in runs.iter().enumerate() {
            let pts = r
                .rows
                .iter()
                .map(|row| (row.t, k.map_or(row.loss, |k| row.theta[k])))
                .collect();
            let lbl = if runs.len() > 1 {
                format!("full, B = {}", r.batch)
            } else {
                format!("full (B = {})", r.batch)
            };
            p.series.push(Series::line(lbl, pts, full_color(i)));
        }
        for o in odes {
            let pts: Vec<(f64, f64)> = steps_grid
                .iter()
                .filter_map(|&t| {
                    let th = o.solution.state_at(t)?;
                    let v = match k {
                        None => o.solution_loss(&th),
                        Some(k) => {
                            let pos = EMERGING.iter().position(|&(c, _)| c == k)?;
                            th[o.coords[pos]]
                        }
                    };
                    Some((t, v))
                })
                .collect();
            let s = if o.name == "ode19" {
                Series::dashed("ode19", pts, color(ODE19_COLOR))
            } else {
                Series {
                    style: Style::Dashed,
                    width: 2,
                    ..Series::line("ode3", pts, color(ODE3_COLOR))
                }
            };
            p.series.push(s);
        }
        if k.is_some() {
            let t_end = t_plot;
            p.series.push(
                Series::dashed(
                    format!("threshold {}", spec.threshold),
                    vec![(0.0, spec.threshold), (t_end, spec.threshold)],
                    color(6),
                )
                .thin(),
            );
            p.legend = LegendAt::UpperLeft;
        } else {
            p.legend = LegendAt::LowerLeft;
        }
        panels.push(p);
    }
    Figure::grid(2, 2, panels).titled(label.to_string())
}

pub(super) fn residual_figure(runs: &[FullRun], label: &str) -> Figure {
    let mut p = Panel::new(
        "off-subspace residual ‖W − Proj W‖ / ‖W‖",
        t_axis(),
        Axis::log("residual (log scale)"),
    );
    for (i, r) in runs.iter().enumerate() {
        let pts = r.rows.iter().map(|row| (row.t, row.res.overall)).collect();
        p.series.push(Series::line(
            format!("all weights, B = {}", r.batch),
            pts,
            full_color(i),
        ));
        if runs.len() == 1 {
            for (j, (nm, pick)) in [
                ("W1", (|x: &Residuals| x.w1) as fn(&Residuals) -> f64),
                ("W2", |x: &Residuals| x.w2),
                ("W3", |x: &Residuals| x.w3),
            ]
            .into_iter()
            .enumerate()
            {
                let pts = r.rows.iter().map(|row| (row.t, pick(&row.res))).collect();
                p.series.push(Series::dashed(
                    format!("{nm}, B = {}", r.batch),
                    pts,
                    color(j + 1),
                ));
            }
        }
    }
    p.legend = LegendAt::UpperRight;
    let mut fig = Figure::grid(1, 1, vec![p]).titled(label.to_string());
    fig.width = 1200;
    fig
}

pub(super) fn coordinates_figure(runs: &[FullRun], odes: &[OdeRun], label: &str) -> Figure {
    let names: Vec<String> = NAMES19
        .iter()
        .map(|n| {
            n.replace("alpha", "α")
                .replace("beta", "β")
                .replace("gamma", "γ")
        })
        .collect();
    let mut p = Panel::new(
        "final coordinates",
        Axis::categories("coordinate", names),
        Axis::linear("value"),
    );
    let ode19 = odes.iter().find(|o| o.name == "ode19");
    let groups = runs.len() + usize::from(ode19.is_some());
    let width = 0.8 / groups as f64;
    let offset = |g: usize| -0.4 + width * (g as f64 + 0.5);
    for (i, r) in runs.iter().enumerate() {
        if let Some(last) = r.rows.last() {
            let pts = (0..19)
                .map(|k| (k as f64 + offset(i), last.theta[k]))
                .collect();
            p.series.push(Series::bars(
                format!("full, B = {} (t = {})", r.batch, fmt_f64(last.t)),
                pts,
                full_color(i),
                width,
            ));
        }
    }
    if let Some(o) = ode19 {
        let t = o.solution.t_end();
        if let Some(th) = o.solution.state_at(t) {
            let pts = (0..19)
                .map(|k| (k as f64 + offset(runs.len()), th[k]))
                .collect();
            p.series.push(Series::bars(
                format!("ode19 (t = {})", fmt_f64(t)),
                pts,
                color(ODE19_COLOR),
                width,
            ));
        }
    }
    p.legend = LegendAt::UpperLeft;
    let mut fig = Figure::grid(1, 1, vec![p]).titled(label.to_string());
    fig.width = 1500;
    fig
}
