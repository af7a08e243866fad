//! The command line: clap definitions (their doc comments are the `--help` text) and `run`, which
//! validates every input before anything is written, then calls one experiment per scenario.

use crate::Error;
use crate::jobs::budget::{self, Budget};
use crate::jobs::plan::{self as scenario, Scenario};
use crate::jobs::sweep::{Control, Shard};
use crate::jobs::{RunOptions, merge_shards, prepare, run_scenario};
use crate::report::OutputDir;
use crate::scenario::ScenarioError;
use crate::scenario::overrides::{Override, parse_override};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  ihdyn                                        run the built-in demo into output/demo/
  ihdyn run scenarios/musat3-sweep.toml        run one scenario into output/musat3-sweep/
  ihdyn run scenarios/*.toml                   run several, each into output/<name>/
  ihdyn validate scenarios/*.toml              check scenario files without running them
  ihdyn sweep --n 8,64,256 --thresholds 0.5,0.1 --out runs/quick
                                               an N-sweep from flags alone
  ihdyn run big.toml --shard 2/3 --out runs/part2   one third of a sweep (e.g. a Slurm array task)
  ihdyn merge runs/part1 runs/part2 runs/part3 --out runs/big
                                               join the shards into the unsharded outputs
  ihdyn run big.toml --resume                  finish an interrupted sweep

Exit codes: 0 success, 1 a run failed (divergence, I/O), 2 bad input (flags, scenario, file).";

/// Reduced training dynamics of induction heads, integrated as ODEs.
#[derive(Parser, Debug)]
#[command(name = "ihdyn", version, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Worker threads for parallel jobs [default: all cores, or RAYON_NUM_THREADS]
    #[arg(long, global = true, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Print only errors: no tables, no progress bars
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Memory budget in GiB: a scenario whose largest job is estimated to need more is
    /// refused before it runs
    #[arg(long, global = true, value_name = "GIB", default_value_t = 16.0,
          value_parser = positive_gib)]
    pub max_memory: f64,
    /// Output budget in GiB: a scenario whose files are estimated to take more is refused
    /// before it runs
    #[arg(long, global = true, value_name = "GIB", default_value_t = 4.0,
          value_parser = positive_gib)]
    pub max_output: f64,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run scenario files (TOML); each writes into output/<scenario name>/
    Run {
        /// Scenario files
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Set a scenario field, e.g. --set system.n=16 --set system.query=uniform (repeatable;
        /// checked like the file; applies to every FILE)
        #[arg(long = "set", value_name = "PATH=VALUE", value_parser = parse_override)]
        set: Vec<Override>,
        #[command(flatten)]
        out: OutArgs,
        #[command(flatten)]
        control: SweepControlArgs,
    },
    /// Check scenario files without running them
    Validate {
        /// Scenario files
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Set a scenario field, as for `run`
        #[arg(long = "set", value_name = "PATH=VALUE", value_parser = parse_override)]
        set: Vec<Override>,
    },
    /// Run an N-sweep from flags alone (the same outputs as a scenario with a [sweep] section)
    Sweep(SweepArgs),
    /// Run the built-in demo: the N = 8 trajectory and the N-sweep 4..4096 (this is what `ihdyn`
    /// without arguments does)
    Demo {
        #[command(flatten)]
        out: OutArgs,
    },
    /// Join the output folders of a sharded sweep (`--shard i/n`) into the outputs of the
    /// unsharded run (byte-identical sweep.csv)
    Merge {
        /// Shard output folders
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Folder for the merged outputs
        #[arg(long, value_name = "DIR", required = true)]
        out: PathBuf,
        /// Write into a folder that holds another scenario's outputs, replacing them (only the
        /// files its manifest lists are removed)
        #[arg(long)]
        force: bool,
    },
}

/// Sweep control: resume, shard, stop part-way.
#[derive(Args, Debug, Clone, Default)]
pub struct SweepControlArgs {
    /// Skip the sweep points already in the output folder's sweep.points.csv (the folder must
    /// hold a run of the same scenario)
    #[arg(long)]
    pub resume: bool,
    /// Run only shard i of n of the sweep's points (1 <= i <= n); the other jobs are skipped;
    /// default folder <output-root>/<name>-shard-<i>-of-<n>
    #[arg(long, value_name = "i/n", value_parser = Shard::parse)]
    pub shard: Option<Shard>,
    /// Stop after this many newly evaluated sweep points (the run is marked partial; finish it
    /// with --resume)
    #[arg(long, value_name = "K", value_parser = positive_count)]
    pub max_points: Option<u64>,
}

#[derive(Args, Debug, Clone)]
pub struct OutArgs {
    /// Output folder (for a single scenario) [default: <output-root>/<scenario name>]
    #[arg(long, value_name = "DIR", conflicts_with = "output_root")]
    pub out: Option<PathBuf>,
    /// Parent folder of the per-scenario output folders
    #[arg(long, value_name = "DIR", default_value = "output")]
    pub output_root: PathBuf,
    /// Write into a folder that holds another scenario's outputs, replacing them (only the
    /// files its manifest lists are removed)
    #[arg(long)]
    pub force: bool,
}

impl Default for OutArgs {
    fn default() -> Self {
        OutArgs {
            out: None,
            output_root: PathBuf::from("output"),
            force: false,
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum SystemArg {
    /// Musat et al., the three-parameter flow (alpha3, beta2, gamma3)
    Musat3,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum QueryArg {
    /// q = N (Theorem 2)
    Last,
    /// q uniform on 1..N
    Uniform,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum MethodArg {
    /// Dormand–Prince 5(4)
    Dopri5,
    /// Dormand–Prince 8(5,3): fewer steps at tight tolerances
    Dop853,
}

#[derive(Args, Debug, Clone)]
pub struct SweepArgs {
    /// Reduced system to sweep
    #[arg(long, value_enum, default_value_t = SystemArg::Musat3)]
    pub system: SystemArg,
    /// Context lengths N, comma-separated, each >= 2 (e.g. 8,64,256)
    #[arg(
        long,
        value_delimiter = ',',
        required = true,
        value_name = "N,...",
        allow_negative_numbers = true
    )]
    pub n: Vec<i64>,
    /// Emergence thresholds, comma-separated, each > 0
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.5",
        value_name = "X,...",
        allow_negative_numbers = true
    )]
    #[arg(value_parser = finite_number)]
    pub thresholds: Vec<f64>,
    /// Which pair is queried
    #[arg(long, value_enum, default_value_t = QueryArg::Last)]
    pub query: QueryArg,
    /// Loss scale: 1, or 0.5 for the halved loss (doubles every time); > 0
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true,
          value_parser = finite_number)]
    pub loss_scale: f64,
    /// Fit the power law over rows with N >= this [default: all rows]
    #[arg(long, value_name = "N", value_parser = finite_number)]
    pub fit_min_n: Option<f64>,
    /// Relative tolerance of the integrator, in (0, 1) [default: 1e-10]
    #[arg(long, allow_negative_numbers = true, value_parser = finite_number)]
    pub rtol: Option<f64>,
    /// Integrator
    #[arg(long, value_enum, default_value_t = MethodArg::Dopri5)]
    pub method: MethodArg,
    /// Name of the run (the folder under --output-root)
    #[arg(long, default_value = "sweep")]
    pub name: String,
    /// Set a scenario field of the sweep these flags describe, e.g. --set solver.atol=1e-14
    #[arg(long = "set", value_name = "PATH=VALUE", value_parser = parse_override)]
    pub set: Vec<Override>,
    #[command(flatten)]
    pub out: OutArgs,
    #[command(flatten)]
    pub control: SweepControlArgs,
}

/// The built-in demo scenario (`ihdyn` with no arguments).
pub const DEMO_SCENARIO: &str = r#"name = "demo"
description = "Musat et al. three-parameter flow: the N = 8 trajectory and emergence time vs N = 4..4096"

[system]
kind = "musat3"
n = 8

[solve]
thresholds = [0.5]

[sweep]
n = { from = 4, to = 4096, points = 24, spacing = "geometric" }
thresholds = [0.5, 0.1]
fit_min_n = 16
"#;

impl SweepArgs {
    /// The scenario these flags describe; validation errors name the flag.
    pub fn to_scenario(&self) -> Result<Scenario, Error> {
        let list = |v: &[i64]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let floats = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let query = match self.query {
            QueryArg::Last => "last",
            QueryArg::Uniform => "uniform",
        };
        let system = match self.system {
            SystemArg::Musat3 => "musat3",
        };
        let mut text = format!(
            "name = {:?}\n[system]\nkind = \"{system}\"\nquery = \"{query}\"\nloss_scale = {:?}\n",
            self.name, self.loss_scale
        );
        let method = match self.method {
            MethodArg::Dopri5 => "dopri5",
            MethodArg::Dop853 => "dop853",
        };
        text.push_str(&format!("[solver]\nmethod = \"{method}\"\n"));
        if let Some(r) = self.rtol {
            text.push_str(&format!("rtol = {r:?}\n"));
        }
        text.push_str(&format!(
            "[sweep]\nn = [{}]\nthresholds = [{}]\n",
            list(&self.n),
            floats(&self.thresholds),
        ));
        if let Some(m) = self.fit_min_n {
            text.push_str(&format!("fit_min_n = {m:?}\n"));
        }
        scenario::parse_str_with(&text, "command line", &self.name, &self.set).map_err(
            |e| match e {
                ScenarioError::Field { mut error, .. } => {
                    error.field = flag_for_field(&error.field);
                    Error::Usage(error.to_string())
                }
                other => Error::Scenario(other),
            },
        )
    }
}

/// The flag that sets a scenario field of `ihdyn sweep`.
fn flag_for_field(field: &str) -> String {
    let flag = match field.split(['.', '[']).collect::<Vec<_>>().as_slice() {
        ["sweep", "n", ..] => "--n",
        ["sweep", "thresholds", ..] => "--thresholds",
        ["sweep", "fit_min_n", ..] => "--fit-min-n",
        ["system", "loss_scale", ..] => "--loss-scale",
        ["system", "query", ..] => "--query",
        ["solver", "rtol", ..] => "--rtol",
        ["name"] => "--name",
        _ => field,
    };
    flag.to_string()
}

/// Where each scenario writes. `--out` names the folder of a single scenario; a shard writes
/// to `<root>/<name>-shard-<i>-of-<n>` by default.
fn output_dirs(
    scenarios: &[Scenario],
    out: &OutArgs,
    shard: Option<Shard>,
) -> Result<Vec<OutputDir>, Error> {
    if let Some(dir) = &out.out {
        if scenarios.len() != 1 {
            return Err(Error::Usage(format!(
                "--out names the folder of a single scenario, got {}; use --output-root DIR to \
                 write each into DIR/<scenario name>/",
                scenarios.len()
            )));
        }
        return Ok(vec![OutputDir::new(dir)]);
    }
    let mut names = std::collections::BTreeSet::new();
    for s in scenarios {
        if !names.insert(&s.name) {
            return Err(Error::Usage(format!(
                "two scenarios are named `{}` and would write the same folder; rename one \
                 (field `name`)",
                s.name
            )));
        }
    }
    Ok(scenarios
        .iter()
        .map(|s| {
            let name = match shard {
                Some(sh) => format!("{}-shard-{}-of-{}", s.name, sh.index, sh.count),
                None => s.name.clone(),
            };
            OutputDir::new(out.output_root.join(name))
        })
        .collect())
}

fn run_all(
    scenarios: Vec<Scenario>,
    out: &OutArgs,
    control: &SweepControlArgs,
    quiet: bool,
    budget: Budget,
) -> Result<(), Error> {
    let threads = rayon::current_num_threads();
    for s in &scenarios {
        budget::check(s, budget, threads)?;
    }
    if control.shard.is_some() || control.max_points.is_some() || control.resume {
        let without_sweep: Vec<&str> = scenarios
            .iter()
            .filter(|s| s.sweep.is_none())
            .map(|s| s.name.as_str())
            .collect();
        if !without_sweep.is_empty() {
            return Err(Error::Usage(format!(
                "--resume, --shard and --max-points apply to sweeps; `{}` has no [sweep]",
                without_sweep.join("`, `")
            )));
        }
    }
    let dirs = output_dirs(&scenarios, out, control.shard)?;
    let command_line: Vec<String> = std::env::args().collect();
    let runs: Vec<(&Scenario, RunOptions)> = scenarios
        .iter()
        .zip(dirs)
        .map(|(s, dir)| {
            let opts = RunOptions {
                out: dir,
                progress: !quiet,
                sweep: Control {
                    resume: control.resume,
                    shard: control.shard,
                    max_points: control.max_points.map(|m| m as usize),
                    progress: !quiet,
                },
                command_line: command_line.clone(),
                force: out.force,
            };
            (s, opts)
        })
        .collect();
    // Every folder is checked before the first scenario runs: a refusal writes nothing.
    for (s, opts) in &runs {
        prepare(s, opts)?;
    }
    for (s, opts) in &runs {
        let dir = &opts.out;
        let lines = run_scenario(s, opts)?;
        if !quiet {
            println!("== {} ({})", s.name, s.origin);
            for l in lines {
                println!("{l}");
            }
            println!("wrote {}/", dir.path().display());
        }
    }
    Ok(())
}

/// Describe a valid scenario in one line for `ihdyn validate`.
fn describe(s: &Scenario) -> String {
    let mut jobs = Vec::new();
    if s.solve.is_some() {
        jobs.push("solve".to_string());
    }
    if let Some(sw) = &s.sweep {
        let fields: Vec<String> = sw
            .fields
            .iter()
            .map(|f| format!("{} ({} values)", f.path, f.values.len()))
            .collect();
        // A system without threshold events (rich) has no threshold key.
        let thresholds = if s.system.solve_rules().thresholds {
            format!(" x {} thresholds", sw.thresholds.len())
        } else {
            String::new()
        };
        jobs.push(format!(
            "sweep of {} points over {}{thresholds}",
            sw.n_points,
            fields.join(" x "),
        ));
    }
    for p in &s.phase {
        jobs.push(format!(
            "{} ({} vs {}, {}x{} grid)",
            p.name, p.y_name, p.x_name, p.grid[0], p.grid[1]
        ));
    }
    jobs.extend(s.system.describe_own(s.sweep.is_some()));
    format!("{} ({}): {}", s.name, s.system.kind(), jobs.join(", "))
}

/// Run the command line. Every scenario is loaded and validated before anything is written.
pub fn run(cli: Cli) -> Result<(), Error> {
    let threads = match cli.threads {
        Some(t) => Some(t),
        None => threads_from_env()?,
    };
    if let Some(t) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t as usize)
            .build_global()
            .map_err(|e| Error::Usage(format!("--threads: {e}")))?;
    }
    let budget = Budget {
        memory: cli.max_memory * GIB,
        output: cli.max_output * GIB,
    };
    let threads = rayon::current_num_threads();
    let command = cli.command.unwrap_or(Command::Demo {
        out: OutArgs::default(),
    });
    match command {
        Command::Run {
            files,
            set,
            out,
            control,
        } => {
            let scenarios = files
                .iter()
                .map(|f| scenario::load_with(f, &set))
                .collect::<Result<Vec<_>, _>>()?;
            run_all(scenarios, &out, &control, cli.quiet, budget)
        }
        Command::Validate { files, set } => {
            let mut last_error = None;
            for f in &files {
                match scenario::load_with(f, &set)
                    .map_err(Error::from)
                    .and_then(|s| budget::check(&s, budget, threads).map(|()| s))
                {
                    Ok(s) => {
                        if !cli.quiet {
                            println!("ok: {} — {}", f.display(), describe(&s));
                        }
                    }
                    Err(e) => {
                        if let Some(prev) = last_error.replace(e) {
                            eprintln!("ihdyn: {prev}");
                        }
                    }
                }
            }
            match last_error {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        Command::Sweep(args) => {
            let s = args.to_scenario()?;
            run_all(vec![s], &args.out, &args.control, cli.quiet, budget)
        }
        Command::Demo { out } => {
            let s = scenario::parse_str(DEMO_SCENARIO, "built-in demo", "demo")?;
            run_all(
                vec![s],
                &out,
                &SweepControlArgs::default(),
                cli.quiet,
                budget,
            )
        }
        Command::Merge { dirs, out, force } => {
            let opts = RunOptions {
                out: OutputDir::new(&out),
                progress: false,
                sweep: Control::default(),
                command_line: std::env::args().collect(),
                force,
            };
            let lines = merge_shards(&dirs, &opts)?;
            if !cli.quiet {
                println!("== merged {} folders", dirs.len());
                for l in lines {
                    println!("{l}");
                }
                println!("wrote {}/", out.display());
            }
            Ok(())
        }
    }
}

/// `RAYON_NUM_THREADS`, checked like `--threads` (rayon itself would silently fall back to all
/// cores on a value it cannot read). Unset or empty: `None`.
fn threads_from_env() -> Result<Option<u16>, Error> {
    let Some(raw) = std::env::var_os("RAYON_NUM_THREADS") else {
        return Ok(None);
    };
    let text = raw.to_string_lossy();
    if text.trim().is_empty() {
        return Ok(None);
    }
    match text.trim().parse::<u16>() {
        Ok(t) if t >= 1 => Ok(Some(t)),
        _ => Err(Error::Usage(format!(
            "environment variable RAYON_NUM_THREADS: must be a whole number in 1..=65535 (like \
             --threads), got `{text}`; unset it to use all cores"
        ))),
    }
}

/// A finite number (`--loss-scale`, `--rtol`, `--fit-min-n`, `--thresholds`); the range is
/// checked with the scenario's own rules, which name the flag.
fn finite_number(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(v) => Err(format!("must be a finite number, got {v}")),
        Err(_) => Err(format!("must be a number, got `{s}`")),
    }
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// A budget in GiB: finite and > 0.
fn positive_gib(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("must be a number of GiB > 0, got `{s}`")),
    }
}

/// A count of at least 1 (`--max-points`).
fn positive_count(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(k) if k >= 1 => Ok(k),
        _ => Err(format!("must be a whole number >= 1, got `{s}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn demo_scenario_is_valid() {
        let s = scenario::parse_str(DEMO_SCENARIO, "built-in demo", "demo").unwrap();
        assert_eq!(s.sweep.unwrap().n_points, 24);
    }

    #[test]
    fn sweep_flags_errors_name_the_flag() {
        let cli = Cli::try_parse_from(["ihdyn", "sweep", "--n", "8,1"]).unwrap();
        let Some(Command::Sweep(a)) = cli.command else {
            panic!()
        };
        let e = a.to_scenario().unwrap_err();
        assert_eq!(e.to_string(), "--n: must be >= 2, got 1");
        assert_eq!(e.exit_code(), 2);
    }
}
