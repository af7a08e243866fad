//! `compare.csv`: every source's α₃, β₂, γ₃ and loss at the full model's checkpoints.

use super::*;

/// `t,source,loss,residual,<19 coordinates>,step,batch,residual_w1,residual_w2,residual_w3`.
pub(super) fn compare_table(runs: &[FullRun], odes: &[OdeRun], spec: &CompareSpec) -> Table {
    let mut header: Vec<String> = ["t", "source", "loss", "residual"]
        .map(String::from)
        .to_vec();
    header.extend(NAMES19.iter().map(|s| s.to_string()));
    header.extend(["step", "batch", "residual_w1", "residual_w2", "residual_w3"].map(String::from));
    let mut table = Table::new(header);
    for r in runs {
        for row in &r.rows {
            let mut cells: Vec<Cell> = vec![
                row.t.into(),
                "full".into(),
                row.loss.into(),
                row.res.overall.into(),
            ];
            cells.extend(row.theta.iter().map(|&v| Cell::Num(v)));
            cells.extend([
                Cell::from(row.step),
                Cell::from(r.batch),
                row.res.w1.into(),
                row.res.w2.into(),
                row.res.w3.into(),
            ]);
            table.push(cells);
        }
    }
    let dt = spec.dt();
    let every = spec.checkpoint_every;
    let mut steps: Vec<usize> = (0..=spec.steps).step_by(every).collect();
    if steps.last() != Some(&spec.steps) {
        steps.push(spec.steps);
    }
    for o in odes {
        for &s in &steps {
            let t = dt * s as f64;
            let Some(th) = o.solution.state_at(t) else {
                continue;
            };
            let loss = o.solution_loss(&th);
            let mut coords = vec![Cell::Empty; 19];
            if o.name == "ode19" {
                for (c, v) in coords.iter_mut().zip(&th) {
                    *c = Cell::Num(*v);
                }
            } else {
                for (&(k, _), &i) in EMERGING.iter().zip(&o.coords) {
                    coords[k] = Cell::Num(th[i]);
                }
            }
            let mut cells: Vec<Cell> = vec![t.into(), o.name.into(), loss.into(), Cell::Empty];
            cells.extend(coords);
            cells.extend([
                Cell::Num(s as f64),
                Cell::Empty,
                Cell::Empty,
                Cell::Empty,
                Cell::Empty,
            ]);
            table.push(cells);
        }
    }
    table
}

impl OdeRun {
    /// The flow's (population) loss at θ.
    pub(super) fn solution_loss(&self, theta: &[f64]) -> f64 {
        self.flow.loss(theta)
    }
}
