//! Shared support for the integration tests (ripgrep-style end-to-end tests): a fresh folder
//! per test, the real binary run as a user would, the checks every system repeats (a refused
//! scenario, byte-identical output on 1 and 2 threads), typed readers for what the binary writes
//! (manifest, JSON, CSV), and the small numerics the solved-flow tests share.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What one run of the binary returned.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A fresh temporary folder; removed when dropped.
pub fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ihdyn-test-")
        .tempdir()
        .unwrap()
}

/// The repository root (for the shipped scenarios).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run `ihdyn args...` with `cwd` as working directory and `env` added to the environment.
pub fn ihdyn(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ihdyn"));
    cmd.current_dir(cwd).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`ihdyn`], requiring exit code 0 (the failure message shows the arguments and stderr).
pub fn run_ok(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let r = ihdyn(cwd, args, env);
    assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    r
}

/// `ihdyn run scenario --out out flags...`, requiring exit code 0; returns the run.
pub fn run_into(cwd: &Path, scenario: &str, out: &Path, flags: &[&str]) -> Run {
    let mut args = vec!["run", scenario, "--out", out.to_str().unwrap()];
    args.extend(flags);
    run_ok(cwd, &args, &[])
}

/// Every file under `dir`, recursively (empty when `dir` does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The text of a file the run wrote (panics naming the file when it is missing).
pub fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The bytes of a file the run wrote (panics naming the file when it is missing).
pub fn read_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn first_line(path: &Path) -> String {
    read_text(path).lines().next().unwrap_or("").to_string()
}

/// Write `text` to `dir/name` and return the path as a string (for the command line).
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// Every `(what, scenario text, expected message)` must be refused: exit code 2, exactly one
/// line on stderr, starting with `ihdyn: ` and containing the message, and no `output/`
/// folder. With `good_first`, that valid scenario is listed before the bad one on the command
/// line and must not run either (validation precedes writing).
pub fn assert_refused(cases: &[(&str, String, &str)], good_first: Option<&str>) {
    for (what, text, message) in cases {
        let dir = tmp();
        let bad = write(dir.path(), "bad.toml", text);
        let good = good_first.map(|g| write(dir.path(), "good.toml", g));
        let mut args = vec!["run"];
        args.extend(good.as_deref());
        args.push(&bad);
        let r = ihdyn(dir.path(), &args, &[]);
        assert_eq!(r.code, 2, "{what}: {}", r.stderr);
        assert!(r.stderr.contains(message), "{what}: got {:?}", r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{what}: one message");
        assert!(r.stderr.starts_with("ihdyn: "), "{what}: {:?}", r.stderr);
        assert!(
            !dir.path().join("output").exists(),
            "{what}: output/ was created"
        );
    }
}

/// Run `ihdyn run scenario --out DIR -q` with RAYON_NUM_THREADS = 1 and then 2, require success
/// and a manifest that records that thread count, and require every file in `files` to be
/// byte-identical between the two runs. Returns the output folders of the two runs (1 thread
/// first).
pub fn assert_same_on_1_and_2_threads(dir: &Path, scenario: &str, files: &[&str]) -> [PathBuf; 2] {
    let outs = ["1", "2"].map(|threads| {
        let out = dir.join(format!("threads{threads}"));
        let r = ihdyn(
            dir,
            &["run", scenario, "--out", out.to_str().unwrap(), "-q"],
            &[("RAYON_NUM_THREADS", threads)],
        );
        assert_eq!(r.code, 0, "{threads} thread(s): {}", r.stderr);
        assert_eq!(
            manifest(&out).threads.to_string(),
            threads,
            "the manifest's threads"
        );
        out
    });
    for f in files {
        let read = |d: &PathBuf| std::fs::read(d.join(f)).unwrap();
        assert!(
            read(&outs[0]) == read(&outs[1]),
            "{f} differs between 1 and 2 threads"
        );
    }
    outs
}

/// The fields of `manifest.json` the tests read (the rest is ignored); see
/// `src/report/manifest.rs` for the writer.
#[derive(Debug, Deserialize)]
pub struct Manifest {
    pub tool: String,
    pub version: String,
    /// `complete`, `partial` or `failed`.
    pub status: String,
    /// Why a run is partial or failed.
    pub error: Option<String>,
    /// The validated scenario with every default filled in.
    pub scenario: serde_json::Value,
    pub threads: usize,
    pub wall_seconds: f64,
    /// One entry per job: settings, solver statistics, files.
    pub jobs: Vec<serde_json::Value>,
}

/// The manifest of the run in `out`, typed.
pub fn manifest(out: &Path) -> Manifest {
    let path = out.join("manifest.json");
    serde_json::from_str(&read_text(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A JSON file the run wrote, untyped.
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&read_text(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A CSV file read with the `csv` crate (quoted fields such as `"p_{1,2}"` unquoted).
pub struct Csv {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Csv {
    /// The index of column `name` (panics listing the header when there is none).
    pub fn column(&self, name: &str) -> usize {
        self.header
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", self.header))
    }
}

pub fn read_csv(path: &Path) -> Csv {
    let mut reader =
        csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = reader.headers().unwrap().iter().map(String::from).collect();
    let rows = reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    Csv { header, rows }
}

/// Relative error |a − b| / |b| (|b| floored at 1e-300, so that b = 0 gives a large number,
/// not NaN); the same as the unit tests' `numerics::testing::rel_err`.
pub fn rel_err(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

/// ∫_a^b f by composite Simpson with `m` (even) intervals.
pub fn simpson(f: impl Fn(f64) -> f64, a: f64, b: f64, m: usize) -> f64 {
    let h = (b - a) / m as f64;
    let mut acc = f(a) + f(b);
    for i in 1..m {
        acc += f(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    acc * h / 3.0
}
