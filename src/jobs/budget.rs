//! Memory and output budgets: every job's peak memory and output size are estimated from the
//! validated scenario before anything runs, and a scenario beyond the budget is refused with
//! the job, the estimate, the fields that drive it, and the flag that raises the budget.
//!
//! Estimates count the dominant buffers (stored dense output, data batches, activations,
//! CSV cells at about 24 bytes each), so they are upper bounds of the right order, not exact.

use super::plan::Scenario;
use crate::Error;
use crate::systems::plugin::Footprint;

/// The default memory budget (bytes): 16 GiB.
pub const DEFAULT_MEMORY: f64 = 16.0 * GIB;
/// The default output budget (bytes): 4 GiB.
pub const DEFAULT_OUTPUT: f64 = 4.0 * GIB;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Bytes of one CSV cell (a shortest-round-trip f64 and its comma).
const CELL: f64 = 24.0;

/// The limits a run is checked against (`--max-memory`, `--max-output`, in GiB).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub memory: f64,
    pub output: f64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            memory: DEFAULT_MEMORY,
            output: DEFAULT_OUTPUT,
        }
    }
}

/// Bytes the stored dense output of one solve may take: every accepted step keeps about
/// eight state-sized vectors (the continuous extension's coefficients), up to `max_steps`.
fn dense_output(scenario: &Scenario, dim: usize) -> f64 {
    scenario.solver.max_steps as f64 * 8.0 * (dim as f64 * 8.0 + 32.0)
}

/// The footprints of every job of `scenario` when `threads` workers run sweep points.
pub fn footprints(scenario: &Scenario, threads: usize) -> Vec<Footprint> {
    let dim = scenario.system.coordinate_names().len();
    let mut out = Vec::new();
    if let Some(solve) = &scenario.solve {
        let samples = solve.samples as f64;
        // trajectory.csv (t, coordinates, loss, rates) and its two figures (SVG paths keep
        // every sample of every curve).
        let cols = (2 * dim + 3) as f64;
        out.push(Footprint {
            what: "[solve]".into(),
            fields: "solver.max_steps, solve.samples",
            memory: dense_output(scenario, dim) + samples * cols * 8.0,
            output: samples * cols * CELL + samples * dim as f64 * 40.0,
        });
    }
    if let Some(sweep) = &scenario.sweep {
        let rows = (sweep.n_points * sweep.thresholds.len().max(1)) as f64;
        let cols = (sweep.fields.len() + 2 + 3 * dim) as f64;
        out.push(Footprint {
            what: "[sweep]".into(),
            fields: "solver.max_steps, sweep.n (points), sweep.thresholds",
            memory: threads.min(sweep.n_points).max(1) as f64 * dense_output(scenario, dim)
                + rows * cols * 8.0,
            // sweep.points.csv and sweep.csv, plus the figure
            output: 2.0 * rows * cols * CELL + rows * 200.0,
        });
    }
    for p in &scenario.phase {
        let cells = (p.grid[0] * p.grid[1]) as f64;
        let starts = p.starts.len() as f64;
        out.push(Footprint {
            what: format!("[[phase]] {}", p.name),
            fields: "phase.grid, phase.starts, solver.max_steps",
            memory: cells * 6.0 * 8.0
                + starts.min(threads as f64).max(1.0) * dense_output(scenario, dim),
            output: cells * 6.0 * CELL + starts * 2001.0 * 3.0 * CELL + cells * 150.0,
        });
    }
    out.extend(scenario.system.footprints(threads));
    out
}

/// Refuse a scenario whose largest job needs more memory than `budget.memory`, or whose jobs
/// together write more than `budget.output`.
pub fn check(scenario: &Scenario, budget: Budget, threads: usize) -> Result<(), Error> {
    let all = footprints(scenario, threads);
    if let Some(f) = all.iter().find(|f| f.memory > budget.memory) {
        return Err(Error::Usage(format!(
            "{}: {} would need about {} of memory, over the budget of {}; lower {}, or raise \
             the budget with --max-memory GIB",
            scenario.origin,
            f.what,
            bytes(f.memory),
            bytes(budget.memory),
            f.fields
        )));
    }
    let total: f64 = all.iter().map(|f| f.output).sum();
    if total > budget.output {
        let big = all
            .iter()
            .max_by(|a, b| a.output.total_cmp(&b.output))
            .expect("a total above zero has a largest part");
        return Err(Error::Usage(format!(
            "{}: the outputs would take about {} on disk ({} alone about {}), over the budget \
             of {}; lower {}, or raise the budget with --max-output GIB",
            scenario.origin,
            bytes(total),
            big.what,
            bytes(big.output),
            bytes(budget.output),
            big.fields
        )));
    }
    Ok(())
}

/// A byte count in binary units, three significant digits.
pub fn bytes(b: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.3} {}", units[i])
            .replacen(".000 ", " ", 1)
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_printed_in_binary_units() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(16.0 * GIB), "16 GiB");
        assert_eq!(bytes(1.5 * 1024.0 * 1024.0), "1.500 MiB");
    }
}
