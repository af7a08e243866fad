//! Helpers for running the real binary in a fresh folder (ripgrep-style end-to-end tests).

use std::path::{Path, PathBuf};
use std::process::Command;

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

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run `ihdyn args...` with `cwd` as working directory.
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

pub fn first_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
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

/// Run `ihdyn run scenario --out DIR -q` with RAYON_NUM_THREADS = 1 and then 2, require success,
/// and require every file in `files` to be byte-identical between the two runs. Returns the
/// output folders of the two runs (1 thread first).
pub fn assert_same_on_1_and_2_threads(dir: &Path, scenario: &str, files: &[&str]) -> [PathBuf; 2] {
    let outs = ["1", "2"].map(|threads| {
        let out = dir.join(format!("threads{threads}"));
        let r = ihdyn(
            dir,
            &["run", scenario, "--out", out.to_str().unwrap(), "-q"],
            &[("RAYON_NUM_THREADS", threads)],
        );
        assert_eq!(r.code, 0, "{threads} thread(s): {}", r.stderr);
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
