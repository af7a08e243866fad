//! Jobs that combine the layers: a scenario's `[solve]` and `[sweep]` sections run here, write
//! their outputs through `report`, and the run ends with `manifest.json`.

pub mod budget;
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
    /// Write into a folder that holds another scenario's outputs (`--force`), removing the
    /// files its manifest lists.
    pub force: bool,
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
    files: Vec<String>,
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
        files: files.into_iter().filter(|f| f != "manifest.json").collect(),
    }
}

/// What a run reads from its folder before it writes anything.
#[derive(Debug, Default)]
pub struct Prepared {
    resumed: sweep::Resumed,
    /// The files the previous run's manifest lists (removed at the end unless rewritten).
    previous_files: Vec<String>,
}

/// Every check of the output folder, with nothing written: the folder holds no other
/// scenario's outputs (unless `--force`), and with `--resume` the run and points there can be
/// continued. `ihdyn run` calls this for every scenario before it runs the first.
pub fn prepare(scenario: &Scenario, opts: &RunOptions) -> Result<Prepared, Error> {
    let mut resumed = sweep::Resumed::default();
    if opts.sweep.resume {
        check_resume(scenario, opts)?;
        if let Some(spec) = &scenario.sweep {
            resumed = sweep::resume_points(spec, &opts.out, &opts.sweep)?;
        }
    }
    let previous_files = check_folder(&scenario.name, opts)?;
    Ok(Prepared {
        resumed,
        previous_files,
    })
}

/// The folder may hold a previous run of the scenario `name` (whose files are returned), or
/// nothing of ihdyn's. Another scenario's outputs are refused unless `--force`.
fn check_folder(name: &str, opts: &RunOptions) -> Result<Vec<String>, Error> {
    let dir = opts.out.path().display();
    let path = opts.out.file("manifest.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(_) if opts.force => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Usage(format!(
                "`{}` cannot be read ({e}), so whose outputs `{dir}` holds is unknown; choose \
                 another --out, or pass --force to write there anyway",
                path.display()
            )));
        }
    };
    let theirs: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(_) if opts.force => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Usage(format!(
                "`{}` is not an ihdyn manifest ({e}); choose another --out, or pass --force to \
                 write there anyway",
                path.display()
            )));
        }
    };
    let theirs_name = theirs["scenario"]["name"].as_str().unwrap_or("?");
    if theirs_name != name && !opts.force {
        return Err(Error::Usage(format!(
            "`{dir}` holds the outputs of scenario `{theirs_name}` (from {}), not of `{name}`; \
             choose another --out, or pass --force to replace them (only the files its \
             manifest lists are removed)",
            theirs["scenario_source"].as_str().unwrap_or("?"),
        )));
    }
    Ok(theirs["files"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
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
    let ignores = scenario.system.resume_ignores();
    if plan::resume_identity(&theirs["scenario"], ignores) != plan::resume_identity(&ours, ignores)
    {
        return Err(Error::Usage(format!(
            "--resume: `{}` holds a run of another scenario ({} from {}), or of this one with a \
             field changed that the finished points depend on (only {} and the sections {} may \
             change); refusing to overwrite it — choose another --out, or drop --resume",
            opts.out.path().display(),
            theirs["scenario"]["name"],
            theirs["scenario_source"],
            plan::RESUME_MAY_CHANGE.join(", "),
            if ignores.is_empty() {
                "(none)".to_string()
            } else {
                ignores.join(", ")
            }
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
    // Everything read from the folder is checked before the first write: a refusal touches
    // nothing. (`ihdyn run` has checked every scenario's folder already; this repeats the
    // check under the folder's lock, which a second run into the same folder cannot take.)
    if opts.out.path().exists() {
        prepare(scenario, opts)?;
    }
    let _lock = opts.out.lock()?;
    let Prepared {
        mut resumed,
        previous_files,
    } = prepare(scenario, opts)?;
    let started = start_clock();
    opts.out.write_json(
        "manifest.json",
        &manifest(
            scenario,
            opts,
            "running",
            None,
            started,
            vec![],
            previous_files.clone(),
        ),
    )?;
    let mut jobs = Vec::new();
    let mut console = Vec::new();
    let mut failure = None;
    // A job that stopped early but wrote what it had (a diverged or interrupted training)
    // keeps its job entry: the run is `partial` (or `interrupted`) and reports the error.
    let mut stopped = None;
    let mut partial = false;
    let mut record = |r: Result<JobOutput, Error>,
                      failure: &mut Option<Error>,
                      stopped: &mut Option<Error>| match r {
        Ok(j) => {
            jobs.push(j.manifest);
            console.extend(j.console);
            partial |= j.partial;
        }
        Err(Error::Partial { manifest, source }) => {
            jobs.push(*manifest);
            partial = true;
            *stopped = Some(*source);
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
    // the next job runs unless one failed or the run was interrupted
    let go = |failure: &Option<Error>| failure.is_none() && !crate::interrupt::requested();
    let sharded = opts.sweep.shard.is_some();
    if let (Some(spec), false) = (&scenario.solve, sharded) {
        record(
            solve::run(scenario, spec, &opts.out),
            &mut failure,
            &mut stopped,
        );
    }
    let own = |when: When, failure: &Option<Error>| {
        (go(failure) && !sharded)
            .then(|| system.run_own(when, &ctx))
            .flatten()
    };
    if let Some(r) = own(When::AfterSolve, &failure) {
        record(r, &mut failure, &mut stopped);
    }
    if !sharded {
        for spec in &scenario.phase {
            if go(&failure) {
                record(
                    phase::run(scenario, spec, &opts.out),
                    &mut failure,
                    &mut stopped,
                );
            }
        }
    }
    if let Some(r) = own(When::AfterPhase, &failure) {
        record(r, &mut failure, &mut stopped);
    }
    if let (true, Some(spec)) = (go(&failure), &scenario.sweep) {
        let r = sweep::run(
            scenario,
            spec,
            &opts.out,
            &opts.sweep,
            std::mem::take(&mut resumed),
        );
        record(r, &mut failure, &mut stopped);
    }
    if let Some(r) = own(When::AfterSweep, &failure) {
        record(r, &mut failure, &mut stopped);
    }
    let interrupted = crate::interrupt::requested();
    let status = match (&failure, interrupted, partial) {
        (Some(_), _, _) => "failed",
        (None, true, _) => "interrupted",
        (None, false, true) => "partial",
        (None, false, false) => "complete",
    };
    let failure = match (failure, interrupted) {
        (Some(e), _) => Some(e),
        (None, true) => Some(Error::Interrupted(format!(
            "stopped at the next step boundary and wrote what was computed into `{}` (its \
             manifest says `interrupted`){}",
            opts.out.path().display(),
            if scenario.sweep.is_some() {
                "; finish the sweep with --resume"
            } else {
                ""
            }
        ))),
        (None, false) => stopped,
    };
    let error = failure.as_ref().map(|e| e.to_string());
    opts.out.remove_stale(&previous_files);
    opts.out.write_json(
        "manifest.json",
        &manifest(
            scenario,
            opts,
            status,
            error,
            started,
            jobs,
            opts.out.written(),
        ),
    )?;
    match failure {
        Some(e) => Err(e),
        None => Ok(console),
    }
}

/// `ihdyn merge`: join shard folders into `out`, exactly as the unsharded run would write it.
pub fn merge_shards(dirs: &[PathBuf], opts: &RunOptions) -> Result<Vec<String>, Error> {
    let started = start_clock();
    // The shards and the target folder are checked before anything is written.
    let merged = sweep::merge::read_shards(dirs)?;
    let scenario = &merged.scenario;
    check_folder(&scenario.name, opts)?;
    let _lock = opts.out.lock()?;
    let previous_files = check_folder(&scenario.name, opts)?;
    let (console, entry) = sweep::merge::write_merged(&merged, dirs, &opts.out)?;
    opts.out.remove_stale(&previous_files);
    opts.out.write_json(
        "manifest.json",
        &manifest(
            scenario,
            opts,
            "complete",
            None,
            started,
            vec![entry],
            opts.out.written(),
        ),
    )?;
    Ok(console)
}

#[cfg(test)]
mod tests;
