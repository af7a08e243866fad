//! Jobs that combine the layers: a scenario's `[solve]` and `[sweep]` sections run here, write
//! their outputs through `report`, and the run ends with `manifest.json`.

pub mod phase;
pub mod plan;
pub mod solve;
pub mod sweep;

pub use crate::systems::plugin::JobOutput;
pub use plan::{Scenario, load, parse_str};

use crate::Error;
use crate::report::{Manifest, OutputDir, git_revision};
use crate::systems::plugin::{JobContext, When};
use std::path::PathBuf;

/// How to run: where to write, progress bars, sweep control, what to record.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub out: OutputDir,
    pub progress: bool,
    pub sweep: sweep::Control,
    pub command_line: Vec<String>,
}

/// The start of a run: a monotonic instant (wall time) and the Unix time in seconds.
fn start_clock() -> (std::time::Instant, u64) {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (std::time::Instant::now(), unix)
}

/// The manifest of a run so far.
fn manifest(
    scenario: &Scenario,
    opts: &RunOptions,
    status: &str,
    error: Option<String>,
    started: (std::time::Instant, u64),
    jobs: Vec<serde_json::Value>,
) -> Manifest {
    Manifest {
        tool: "ihdyn",
        version: env!("CARGO_PKG_VERSION"),
        git_revision: git_revision(),
        status: status.into(),
        error,
        command_line: opts.command_line.clone(),
        scenario_source: Some(scenario.origin.clone()),
        scenario: serde_json::to_value(scenario).expect("scenario serializes"),
        scenario_text: Some(scenario.text.clone()),
        sweep_shard: opts.sweep.shard.map(|s| s.text()),
        threads: rayon::current_num_threads(),
        started_unix_seconds: started.1,
        wall_seconds: started.0.elapsed().as_secs_f64(),
        jobs,
    }
}

/// With `--resume`, the folder must hold a run of the same scenario (and shard); checked before
/// anything is written.
fn check_resume(scenario: &Scenario, opts: &RunOptions) -> Result<(), Error> {
    let path = opts.out.file("manifest.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(_) if !opts.out.file(sweep::POINTS_LOG).exists() => return Ok(()),
        Err(e) => {
            return Err(Error::Usage(format!(
                "--resume: cannot read `{}` ({e}), so the points in `{}` cannot be checked; \
                 drop --resume to start over",
                path.display(),
                sweep::POINTS_LOG
            )));
        }
    };
    let theirs: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::Usage(format!(
            "--resume: `{}` is not a manifest: {e}",
            path.display()
        ))
    })?;
    let ours = serde_json::to_value(scenario).expect("scenario serializes");
    if theirs["scenario"] != ours {
        return Err(Error::Usage(format!(
            "--resume: `{}` holds a run of another scenario ({} from {}); refusing to overwrite \
             it — choose another --out, or drop --resume",
            opts.out.path().display(),
            theirs["scenario"]["name"],
            theirs["scenario_source"]
        )));
    }
    let shard = opts.sweep.shard.map(|s| s.text());
    if theirs["sweep_shard"].as_str().map(str::to_string) != shard {
        return Err(Error::Usage(format!(
            "--resume: `{}` holds shard {} but this run is shard {}",
            opts.out.path().display(),
            theirs["sweep_shard"].as_str().unwrap_or("(none)"),
            shard.as_deref().unwrap_or("(none)")
        )));
    }
    Ok(())
}

/// Run every job of a validated scenario into `opts.out`. `manifest.json` is written first (status
/// `running`) and last (`complete`, `partial` or `failed` with the error). A sharded run runs
/// only its share of the sweep.
pub fn run_scenario(scenario: &Scenario, opts: &RunOptions) -> Result<Vec<String>, Error> {
    if opts.sweep.resume {
        check_resume(scenario, opts)?;
    }
    let started = start_clock();
    opts.out.write_json(
        "manifest.json",
        &manifest(scenario, opts, "running", None, started, vec![]),
    )?;
    let mut jobs = Vec::new();
    let mut console = Vec::new();
    let mut failure = None;
    let mut partial = false;
    let mut record = |r: Result<JobOutput, Error>, failure: &mut Option<Error>| match r {
        Ok(j) => {
            jobs.push(j.manifest);
            console.extend(j.console);
            partial |= j.partial;
        }
        Err(e) => *failure = Some(e),
    };
    let system = scenario.system.as_ref();
    let ctx = JobContext {
        solver: &scenario.solver,
        out: &opts.out,
        progress: opts.progress,
        has_sweep: scenario.sweep.is_some(),
    };
    // A system's own job whose training diverged keeps its job entry and rows: the run is
    // `partial`, the error is reported, and the exit code is 1.
    let mut stopped = None;
    let own = |when: When, failure: &mut Option<Error>, stopped: &mut Option<Error>| {
        if failure.is_some() || opts.sweep.shard.is_some() {
            return None;
        }
        system.run_own(when, &ctx).map(|r| match r {
            Err(Error::Partial { manifest, source }) => {
                *stopped = Some(*source);
                Ok(JobOutput {
                    manifest: *manifest,
                    files: vec![],
                    console: vec![],
                    partial: true,
                })
            }
            r => r,
        })
    };
    if let (Some(spec), None) = (&scenario.solve, opts.sweep.shard) {
        record(solve::run(scenario, spec, &opts.out), &mut failure);
    }
    if let Some(r) = own(When::AfterSolve, &mut failure, &mut stopped) {
        record(r, &mut failure);
    }
    if opts.sweep.shard.is_none() {
        for spec in &scenario.phase {
            if failure.is_none() {
                record(phase::run(scenario, spec, &opts.out), &mut failure);
            }
        }
    }
    if let Some(r) = own(When::AfterPhase, &mut failure, &mut stopped) {
        record(r, &mut failure);
    }
    if let (None, Some(spec)) = (&failure, &scenario.sweep) {
        record(
            sweep::run(scenario, spec, &opts.out, &opts.sweep),
            &mut failure,
        );
    }
    if let Some(r) = own(When::AfterSweep, &mut failure, &mut stopped) {
        record(r, &mut failure);
    }
    let status = match (&failure, partial) {
        (Some(_), _) => "failed",
        (None, true) => "partial",
        (None, false) => "complete",
    };
    let failure = failure.or(stopped);
    let error = failure.as_ref().map(|e| e.to_string());
    opts.out.write_json(
        "manifest.json",
        &manifest(scenario, opts, status, error, started, jobs),
    )?;
    match failure {
        Some(e) => Err(e),
        None => Ok(console),
    }
}

/// `ihdyn merge`: join shard folders into `out`, exactly as the unsharded run would write it.
pub fn merge_shards(dirs: &[PathBuf], opts: &RunOptions) -> Result<Vec<String>, Error> {
    let started = start_clock();
    let (scenario, console, entry) = sweep::merge(dirs, &opts.out)?;
    opts.out.write_json(
        "manifest.json",
        &manifest(&scenario, opts, "complete", None, started, vec![entry]),
    )?;
    Ok(console)
}
