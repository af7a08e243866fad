//! Job `[gih]` (Chen et al., docs/theory/chen.md): the χ² mutual information and the information set
//! S*, the reduced gradient flow of (c, w, a) through the training stages with located events,
//! and optionally the full TF(M, H, d, D) trained by GD on the same sample, on the same time
//! axis (t = Σ lr × steps, §10).
//!
//! Outputs: `mi.csv`, `trajectory.csv`, `replicator.csv`, `events.csv`, the figures
//! `selection`, `rpe`, `classifier`, `loss` (PNG + SVG), and with the full model
//! `full_trajectory.csv` (and the full model's panels beside the reduced ones in every figure),
//! and with `[gih.gd]` (GD or SGD on fresh batches on the reduced model)
//! `gd_trajectory.csv` (drawn over the reduced flow's curves).
//!
//! In a scenario with a `[sweep]`, `[gih]` configures every sweep point ([`point`]) and is not
//! run on its own.

use crate::Error;
use crate::report::{Cell, Table, fmt_f64};
use crate::scenario::SolverSpec;
use crate::systems::chen::common::{Layout, simplex_weights};
use crate::systems::chen::events::*;
use crate::systems::chen::figures::figures;
use crate::systems::chen::reduced::GihFlow;
use crate::systems::chen::runs::*;
use crate::systems::chen::scenario::{GihJobSpec, GihSpec};
use crate::systems::chen::transfer;
use crate::systems::plugin::{Column, Instance, JobContext, JobOutput, Param, PointRows, Role};
use serde_json::json;

pub use crate::systems::chen::runs::{FreshBatches, GdRun, GdSource, batch_seed, compute};
pub use crate::systems::chen::setup::{data, data_spec_with, init, label, model, prior};

/// The joint flow of (c, w, a) on the scenario's training sample, for the generic jobs
/// (`[solve]`, `[[phase]]`); its time scale is stage I's, 1/(κ a₀) = ‖c₀‖²/(4 |a₀|).
pub fn instance(g: &GihSpec) -> Instance {
    let (train, _) = data(g);
    let flow = GihFlow::new(model(g), &train);
    let lay = *flow.layout();
    let init = init(g).theta(&g.shape(), &lay);
    let c2 = lay.n_subsets as f64 * g.c0 * g.c0;
    let time_scale = if g.a0 != 0.0 {
        c2 / (4.0 * g.a0.abs())
    } else {
        1.0
    };
    Instance {
        flow: Box::new(flow),
        init,
        frozen: Vec::new(),
        time_scale,
        emergence: vec![(lay.a(), "a".into())],
        peak: None,
        label: label(g),
        family: format!(
            "gih TF(M={}, H={}, d={}, D={}), pa = {:?}, α = {}",
            g.window, g.heads, g.d, g.degree, g.pa, g.alpha
        ),
        params: vec![Param {
            column: "L".into(),
            field: "system.L".into(),
            value: g.length as f64,
        }],
    }
}

/// Run the job and write its outputs.
pub fn run(s: &GihSpec, job: &GihJobSpec, ctx: &JobContext) -> Result<JobOutput, Error> {
    let (out, progress) = (ctx.out, ctx.progress);
    let started = std::time::Instant::now();
    let r = compute(s, ctx.solver, job, progress, true)?;
    let mut files = Vec::new();
    let mut mi_table = Table::new(["subset", "mi", "stderr"]);
    for k in 0..r.mi.subsets.len() {
        mi_table.push(vec![
            r.mi.subsets.label(k).into(),
            r.mi.mi[k].into(),
            r.mi.stderr[k].into(),
        ]);
    }
    files.push(out.write_csv("mi.csv", &mi_table)?);
    files.push(out.write_csv("trajectory.csv", &r.reduced.table)?);
    if let Some(rep) = &r.reduced.replicator {
        files.push(out.write_csv("replicator.csv", rep)?);
    }
    let mut ev = Table::new([
        "event",
        "model",
        "t",
        "stage",
        "t_in_stage",
        "value",
        "located_by",
    ]);
    for e in r.events() {
        let at = e.t.map(|t| stage_at(&r.stages, t));
        ev.push(vec![
            e.name.as_str().into(),
            e.model.into(),
            e.t.into(),
            at.map_or(Cell::Empty, |(k, _)| r.stages[k].0.as_str().into()),
            at.map(|(_, dt)| dt).into(),
            e.value.into(),
            e.located_by.into(),
        ]);
    }
    files.push(out.write_csv("events.csv", &ev)?);
    if let Some(f) = &r.full {
        files.push(out.write_csv("full_trajectory.csv", &f.table)?);
    }
    if let Some(g) = &r.gd {
        files.push(out.write_csv("gd_trajectory.csv", &g.table)?);
    }
    let figs = figures(s, job, &r);
    for (stem, fig) in &figs {
        files.extend(out.write_figure(stem, fig)?);
    }
    let transfer = match &job.transfer {
        None => None,
        Some(t) => {
            let started = std::time::Instant::now();
            let mut trained = vec![crate::systems::chen::transfer::Trained {
                name: "flow",
                theta: &r.reduced.final_theta,
                full: None,
            }];
            if let (Some(f), Some(fs)) = (&r.full, &job.full) {
                trained.push(crate::systems::chen::transfer::Trained {
                    name: "full",
                    theta: &f.final_theta,
                    full: Some(full_settings(fs)),
                });
            }
            let rows = transfer::evaluate(s, t, &trained);
            files.push(out.write_csv("transfer.csv", &transfer::table(&rows, t.n_sequences))?);
            let title = format!("Fig. 7 protocol: trained at L = {}", s.length);
            files.extend(
                out.write_figure("transfer", &transfer::figure(s, &rows, &title, &label(s)))?,
            );
            Some((rows, started.elapsed().as_secs_f64()))
        }
    };
    let mut console = vec![format!(
        "gih: {} — {} training / {} validation sequences",
        label(s),
        r.n_train,
        r.n_val
    )];
    console.push(format!(
        "  modified chi^2 MI ({} kernel draws, {} per kernel): S* = {} (gap {:.4})",
        r.mi.draws,
        r.mi.method.name(),
        r.mi.best_label(),
        r.mi.gap
    ));
    for k in 0..r.mi.subsets.len() {
        console.push(format!(
            "    {:<10} {:.5} ± {:.5}",
            r.mi.subsets.label(k),
            r.mi.mi[k],
            r.mi.stderr[k]
        ));
    }
    console.push(format!(
        "  reduced flow: final loss {:.5}, validation loss {:.5} ({:.2} s)",
        r.reduced.final_loss, r.reduced.final_val_loss, r.reduced.seconds
    ));
    if let Some(f) = &r.full {
        console.push(format!(
            "  full model: {} GD steps, final loss {:.5}, validation loss {:.5} ({:.2} s)",
            f.steps, f.final_loss, f.final_val_loss, f.seconds
        ));
    }
    if let (Some((rows, secs)), Some(t)) = (&transfer, &job.transfer) {
        console.push(format!(
            "  transfer ({} fresh sequences per point, {secs:.2} s): loss at L = {}",
            t.n_sequences,
            t.lengths
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        for chunk in rows.chunk_by(|a, b| a.model == b.model && a.alpha == b.alpha) {
            console.push(format!(
                "    {:<5} α = {:<6} {}",
                chunk[0].model,
                chunk[0].alpha,
                chunk
                    .iter()
                    .map(|r| format!("{:.4}", r.loss))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if let Some(g) = &r.gd {
        let norms: Vec<String> = g.c_norms.iter().map(|v| format!("{v:.4}")).collect();
        console.push(format!(
            "  reduced GD ({}): {} steps, final loss {:.5}, validation loss {:.5}, ||c|| at the \
             stage ends {} ({:.2} s)",
            gd_data_label(g.data),
            g.steps,
            g.final_loss,
            g.final_val_loss,
            norms.join(" -> "),
            g.seconds
        ));
    }
    console.push("  events (t on the time axis Σ lr × steps):".into());
    for e in r.events() {
        console.push(format!(
            "    {:<8} {:<24} {}",
            e.model,
            e.name,
            e.t.map_or("not reached".into(), fmt_f64)
        ));
    }
    let events_json = |rows: &[EventRow]| -> Vec<serde_json::Value> {
        rows.iter()
            .map(|e| json!({"event": e.name, "t": e.t, "value": e.value, "located_by": e.located_by}))
            .collect()
    };
    Ok(JobOutput {
        manifest: json!({
            "job": "gih",
            "system": label(s),
            "n_train": r.n_train,
            "n_val": r.n_val,
            "stages": job.stages.iter().map(|st| json!({"name": st.name, "train": st.train, "lr": st.lr, "steps": st.steps, "t_start": r.stages.iter().find(|x| x.0 == st.name).map(|x| x.1), "duration": st.duration()})).collect::<Vec<_>>(),
            "mi": {
                "method": r.mi.method,
                "draws": r.mi.draws,
                "subsets": (0..r.mi.subsets.len()).map(|k| r.mi.subsets.label(k)).collect::<Vec<_>>(),
                "mi": r.mi.mi,
                "stderr": r.mi.stderr,
                "S_star": r.mi.best_label(),
                "gap": r.mi.gap,
                "seconds": r.mi_seconds,
            },
            "reduced": {
                "solve": r.reduced.solution_stats,
                "seconds": r.reduced.seconds,
                "final_loss": r.reduced.final_loss,
                "final_val_loss": r.reduced.final_val_loss,
                "events": events_json(&r.reduced.events),
            },
            "gd": r.gd.as_ref().map(|g| json!({
                "data": g.data,
                "steps": g.steps,
                "seconds": g.seconds,
                "final_loss": g.final_loss,
                "final_val_loss": g.final_val_loss,
                "c_norm_at_stage_ends": g.c_norms,
                "events": events_json(&g.events),
            })),
            "full": r.full.as_ref().map(|f| json!({
                "steps": f.steps,
                "seconds": f.seconds,
                "final_loss": f.final_loss,
                "final_val_loss": f.final_val_loss,
                "events": events_json(&f.events),
            })),
            "transfer": job.transfer.as_ref().map(|t| json!({
                "L": t.lengths,
                "alpha": t.alphas,
                "n_sequences": t.n_sequences,
                "seed": t.seed,
                "seconds": transfer.as_ref().map(|x| x.1),
            })),
            "seconds": started.elapsed().as_secs_f64(),
        }),
        files,
        console,
        partial: false,
    })
}

// ---------------------------------------------------------------------------------------------
// Sweep points

/// The columns of a sweep point over a gih scenario: L, the information set S* (a key: times are
/// fitted per S*, since the events differ when S* does), its Ĩ, the final training and
/// validation losses of the reduced flow, p_{S*} and a at the end, and the times at which
/// p_{S*} reached 0.9 and stage II was done.
pub fn point_columns() -> Vec<Column> {
    vec![
        Column::new(
            "L",
            Role::Param {
                field: "system.L".into(),
            },
        ),
        Column::new("S_star", Role::Key),
        Column::new("mi_S_star", Role::Value),
        Column::new("loss", Role::Value),
        Column::new("val_loss", Role::Value),
        Column::new("p_S_star", Role::Value),
        Column::new("a_final", Role::Value),
        Column::new("T_p_S_star@0.9", Role::Time),
        Column::new("T_stage_II_done", Role::Time),
    ]
}

/// Evaluate one sweep point: the reduced flow of the point scenario's `[gih]` job (without the
/// full model).
pub fn point(s: &GihSpec, job: &GihJobSpec, solver: &SolverSpec) -> Result<PointRows, Error> {
    let r = compute(s, solver, job, false, false)?;
    let best = r.mi.best;
    let th = &r.reduced.final_theta;
    let lay = Layout {
        n_subsets: r.mi.subsets.len(),
        heads: s.heads,
        window: s.window,
    };
    let mut p = vec![0.0; lay.n_subsets];
    simplex_weights(&th[lay.c_range()], &mut p);
    let ev = |name: &str| {
        r.reduced
            .events
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.t)
    };
    let row = vec![
        Cell::Int(s.length as i64),
        Cell::Text(r.mi.best_label()),
        r.mi.mi[best].into(),
        r.reduced.final_loss.into(),
        r.reduced.final_val_loss.into(),
        p[best].into(),
        th[lay.a()].into(),
        ev(&format!("p_{}@0.9", r.mi.best_label())).into(),
        ev("stage_II_done").into(),
    ];
    Ok(PointRows {
        rows: vec![row],
        stats: json!({"reduced": r.reduced.solution_stats, "seconds": r.reduced.seconds}),
    })
}
