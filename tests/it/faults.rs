//! Fault injection (issue 17): torn, missing, duplicated, conflicting and foreign rows in the
//! points log; refusals that must touch nothing; interrupts; stale outputs; budgets; flags and
//! environment variables. Each test reproduces a defect that once gave a wrong result or an
//! unclear failure.

use crate::support::*;
use std::path::Path;

/// The reproduction scenario of the issue: 5 N x 2 thresholds.
const Q: &str = r#"name = "q"
[system]
kind = "musat3"
[sweep]
n = [4, 8, 16, 32, 64]
thresholds = [0.5, 0.1]
"#;

const LOG: &str = "sweep.points.csv";

/// A folder with `q.toml`, the uninterrupted reference run in `full/`, and a partial run of 3
/// points in `part/`.
fn setup() -> (tempfile::TempDir, String) {
    let dir = tmp();
    let f = write(dir.path(), "q.toml", Q);
    run_into(dir.path(), &f, &dir.path().join("full"), &["-q"]);
    run_into(
        dir.path(),
        &f,
        &dir.path().join("part"),
        &["-q", "--max-points", "3"],
    );
    assert_eq!(manifest(&dir.path().join("part")).status, "partial");
    (dir, f)
}

fn log_lines(dir: &Path) -> Vec<String> {
    read_text(&dir.join(LOG))
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_log(dir: &Path, lines: &[String], trailing_newline: bool) {
    let mut text = lines.join("\n");
    if trailing_newline {
        text.push('\n');
    }
    std::fs::write(dir.join(LOG), text).unwrap();
}

/// Resume `part/` to the end and require the reference's sweep.csv byte for byte.
fn resume_equals_full(dir: &Path, f: &str) {
    let part = dir.join("part");
    run_into(dir, f, &part, &["-q", "--resume"]);
    assert_eq!(manifest(&part).status, "complete");
    assert_eq!(
        read_text(&part.join("sweep.csv")),
        read_text(&dir.join("full/sweep.csv"))
    );
}

#[test]
fn a_torn_row_is_rerun_not_dropped() {
    // `truncate -s -1`: the last row loses its newline and last digit, while the point's
    // other threshold row survives.
    let (dir, f) = setup();
    let part = dir.path().join("part");
    let text = read_text(&part.join(LOG));
    std::fs::write(part.join(LOG), &text[..text.len() - 2]).unwrap();
    resume_equals_full(dir.path(), &f);
}

#[test]
fn a_missing_threshold_row_is_rerun() {
    // `sed -i 5d`: one threshold row of a point is gone, cut at a line boundary.
    let (dir, f) = setup();
    let part = dir.path().join("part");
    let mut lines = log_lines(&part);
    lines.remove(4);
    write_log(&part, &lines, true);
    resume_equals_full(dir.path(), &f);
}

#[test]
fn a_row_with_a_nan_cell_is_rerun() {
    // a NaN no run writes (events not reached are empty cells)
    let (dir, f) = setup();
    let part = dir.path().join("part");
    let mut lines = log_lines(&part);
    let mut cells: Vec<String> = lines[1].split(',').map(str::to_string).collect();
    let last = cells.len() - 1;
    cells[last] = "NaN".into();
    lines[1] = cells.join(",");
    write_log(&part, &lines, true);
    resume_equals_full(dir.path(), &f);
}

#[test]
fn an_identical_duplicate_row_is_collapsed() {
    let (dir, f) = setup();
    let part = dir.path().join("part");
    let mut lines = log_lines(&part);
    lines.push(lines[2].clone());
    write_log(&part, &lines, true);
    resume_equals_full(dir.path(), &f);
}

/// The bytes of every file in `dir`.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let b = read_bytes(&p);
            (p, b)
        })
        .collect()
}

#[test]
fn a_refused_resume_touches_nothing() {
    let (dir, f) = setup();
    let part = dir.path().join("part");
    let lines = log_lines(&part);
    let header = lines[0].clone();
    let mut conflicting = lines.clone();
    // the same key as row 1 with another value in the last cell
    let mut cells: Vec<String> = lines[1].split(',').map(str::to_string).collect();
    let last = cells.len() - 1;
    cells[last] = "12345.5".into();
    conflicting.push(cells.join(","));
    let mut bad_index = lines.clone();
    bad_index.push(lines[1].replacen(lines[1].split(',').next().unwrap(), "999", 1));
    let mut bad_header = lines.clone();
    bad_header[0] = format!("{header},extra");
    let mut malformed = lines.clone();
    malformed.insert(2, "0,not,a,row".into());
    let jo = |l: &Vec<String>| format!("{}\n", l.join("\n")).into_bytes();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("a conflicting duplicate", (jo)(&conflicting), "point"),
        ("an index out of range", (jo)(&bad_index), "999"),
        ("a wrong header", (jo)(&bad_header), "header"),
        ("a malformed row", (jo)(&malformed), LOG),
        (
            "binary garbage",
            vec![0xff, 0xfe, 0x00, 0x80, b'\n', 0xc3],
            "not text",
        ),
    ];
    for (what, bytes, message) in cases {
        std::fs::write(part.join(LOG), &bytes).unwrap();
        let before = snapshot(&part);
        let r = ihdyn(
            dir.path(),
            &["run", &f, "--out", part.to_str().unwrap(), "--resume"],
            &[],
        );
        assert_eq!(r.code, 2, "{what}: {}", r.stderr);
        assert!(r.stderr.contains(message), "{what}: {}", r.stderr);
        assert!(!r.stderr.contains("cannot write"), "{what}: {}", r.stderr);
        assert_eq!(snapshot(&part), before, "{what}: the folder changed");
    }
}

#[test]
fn merge_refuses_a_shard_with_a_missing_or_duplicated_row() {
    let dir = tmp();
    let f = write(dir.path(), "q.toml", Q);
    run_into(dir.path(), &f, &dir.path().join("full"), &["-q"]);
    let shards: Vec<_> = (1..=2)
        .map(|i| {
            let d = dir.path().join(format!("s{i}"));
            run_into(dir.path(), &f, &d, &["-q", "--shard", &format!("{i}/2")]);
            d
        })
        .collect();
    let merge = |out: &str| {
        ihdyn(
            dir.path(),
            &[
                "merge",
                shards[0].to_str().unwrap(),
                shards[1].to_str().unwrap(),
                "--out",
                out,
            ],
            &[],
        )
    };
    let good = merge("merged");
    assert_eq!(good.code, 0, "{}", good.stderr);
    assert_eq!(
        read_text(&dir.path().join("merged/sweep.csv")),
        read_text(&dir.path().join("full/sweep.csv"))
    );
    let original = log_lines(&shards[0]);
    // a row deleted at a line boundary, then a torn last row
    let mut cut = original.clone();
    cut.remove(3);
    write_log(&shards[0], &cut, true);
    let r = merge("m1");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("incomplete"), "{}", r.stderr);
    assert!(!dir.path().join("m1").exists());
    let text = original.join("\n");
    std::fs::write(shards[0].join(LOG), &text[..text.len() - 1]).unwrap();
    let r = merge("m2");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(!dir.path().join("m2").exists());
    // an identical duplicate is harmless; a conflicting one is refused
    let mut dup = original.clone();
    dup.push(original[1].clone());
    write_log(&shards[0], &dup, true);
    let r = merge("m3");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        read_text(&dir.path().join("m3/sweep.csv")),
        read_text(&dir.path().join("full/sweep.csv"))
    );
    let mut cells: Vec<String> = original[1].split(',').map(str::to_string).collect();
    let last = cells.len() - 1;
    cells[last] = "12345.5".into();
    let mut conflict = original.clone();
    conflict.push(cells.join(","));
    write_log(&shards[0], &conflict, true);
    let r = merge("m4");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(!dir.path().join("m4").exists());
}

#[test]
fn a_resume_may_change_the_step_budget_and_description_but_not_the_points() {
    let (dir, _) = setup();
    let changed = Q.replace(
        "[sweep]",
        "description = \"now described\"\n[solver]\nmax_steps = 2000000\n[sweep]",
    );
    // `description` is top level: put it before the first table
    let changed = format!(
        "description = \"now described\"\n{}",
        changed.replace("description = \"now described\"\n", "")
    );
    let f2 = write(dir.path(), "q2.toml", &changed);
    let part = dir.path().join("part");
    run_into(dir.path(), &f2, &part, &["-q", "--resume"]);
    assert_eq!(manifest(&part).status, "complete");
    assert_eq!(
        read_text(&part.join("sweep.csv")),
        read_text(&dir.path().join("full/sweep.csv"))
    );
    // a changed N list is another sweep: refused, nothing touched
    let other = write(dir.path(), "q3.toml", &Q.replace("64]", "128]"));
    let before = snapshot(&part);
    let r = ihdyn(
        dir.path(),
        &["run", &other, "--out", part.to_str().unwrap(), "--resume"],
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(snapshot(&part), before);
}

#[cfg(unix)]
#[test]
fn an_interrupted_sweep_keeps_its_points_and_says_so() {
    // Slow points (the 19-dim flow at larger N), so that the signal lands mid-sweep.
    let dir = tmp();
    let f = write(
        dir.path(),
        "slow.toml",
        "name = \"slow\"\n[system]\nkind = \"musat19\"\n[sweep]\nn = [16, 24, 32, 48, 64, 96, 128, 192, 256, 384]\n",
    );
    let out = dir.path().join("out");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ihdyn"))
        .current_dir(dir.path())
        .args([
            "-q",
            "--threads",
            "1",
            "run",
            &f,
            "--out",
            out.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // wait until at least one point is logged
    let start = std::time::Instant::now();
    loop {
        let logged = std::fs::read_to_string(out.join(LOG))
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if logged >= 2 {
            break;
        }
        assert!(
            start.elapsed().as_secs() < 60,
            "no point was logged within 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "exit code after SIGINT");
    let m = manifest(&out);
    assert_eq!(m.status, "interrupted");
    assert!(m.error.unwrap().contains("--resume"));
    assert!(
        !out.join("sweep.csv").exists(),
        "no results from a partial sweep"
    );
    let lines = log_lines(&out);
    assert!(
        lines.len() >= 2 && lines.len() < 11,
        "{} lines",
        lines.len()
    );
    assert!(!out.join(LOCK).exists(), "the lock is released");
}

const LOCK: &str = ".ihdyn.lock";

#[test]
fn another_scenarios_folder_is_refused_and_stale_files_are_removed() {
    let dir = tmp();
    let phase = repo().join("scenarios/musat3-phase.toml");
    let traj = repo().join("scenarios/musat3-trajectory.toml");
    let out = dir.path().join("o");
    run_into(dir.path(), phase.to_str().unwrap(), &out, &["-q"]);
    let before = snapshot(&out);
    let r = ihdyn(
        dir.path(),
        &[
            "run",
            traj.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("musat3-phase") && r.stderr.contains("--force"));
    assert_eq!(snapshot(&out), before, "a refusal touches nothing");
    // a file ihdyn did not write survives --force; the phase files go
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    run_into(dir.path(), traj.to_str().unwrap(), &out, &["-q", "--force"]);
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "events.csv",
            "manifest.json",
            "notes.txt",
            "trajectory.csv",
            "trajectory.png",
            "trajectory.svg"
        ]
    );
    let listed = json(&out.join("manifest.json"))["files"].clone();
    assert_eq!(
        listed,
        serde_json::json!([
            "events.csv",
            "trajectory.csv",
            "trajectory.png",
            "trajectory.svg"
        ])
    );
    // the same scenario without [solve]'s figure inputs changed: files it no longer writes go
    let text = read_text(&traj);
    let no_solve = write(
        dir.path(),
        "t.toml",
        &format!(
            "{}\n[[phase]]\nname = \"ab\"\nx = \"beta2\"\ny = \"alpha3\"\nx_range = [0.0, 4.0]\n\
             y_range = [0.0, 4.0]\ngrid = 5\nfixed = {{ gamma3 = 1.0 }}\n",
            text.split("[solve]").next().unwrap()
        ),
    );
    let r = ihdyn(
        dir.path(),
        &["-q", "run", &no_solve, "--out", out.to_str().unwrap()],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        !out.join("events.csv").exists(),
        "the stale events.csv stayed"
    );
    assert!(out.join("notes.txt").exists());
}

#[test]
fn a_second_run_into_a_locked_folder_is_refused() {
    let dir = tmp();
    let f = write(dir.path(), "q.toml", Q);
    let out = dir.path().join("o");
    std::fs::create_dir_all(&out).unwrap();
    let lock = std::fs::File::create(out.join(LOCK)).unwrap();
    lock.lock().unwrap();
    let r = ihdyn(
        dir.path(),
        &["run", &f, "--out", out.to_str().unwrap()],
        &[],
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("another ihdyn run"), "{}", r.stderr);
    assert!(!out.join("manifest.json").exists());
    lock.unlock().unwrap();
}

#[test]
fn budgets_refuse_what_would_not_fit() {
    let dir = tmp();
    let bomb = write(
        dir.path(),
        "bomb.toml",
        "name = \"bomb\"\n[system]\nkind = \"musat19\"\nn = 4\n[compare]\nsteps = 2\nd = 1024\nbatch = [1048576]\n",
    );
    let r = ihdyn(dir.path(), &["run", &bomb], &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("[compare]") && r.stderr.contains("--max-memory"),
        "{}",
        r.stderr
    );
    assert!(!dir.path().join("output").exists());
    let steps = write(
        dir.path(),
        "steps.toml",
        "name = \"s\"\n[system]\nkind = \"musat3\"\nn = 4\n[solver]\nmax_steps = 4000000000\n[solve]\n",
    );
    let r = ihdyn(dir.path(), &["validate", &steps], &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("solver.max_steps"), "{}", r.stderr);
    let r = ihdyn(
        dir.path(),
        &["--max-memory", "4096", "validate", &steps],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let samples = write(
        dir.path(),
        "samples.toml",
        "name = \"s\"\n[system]\nkind = \"musat3\"\nn = 4\n[solve]\nsamples = 10000000\n",
    );
    let r = ihdyn(
        dir.path(),
        &["--max-output", "0.5", "validate", &samples],
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--max-output"), "{}", r.stderr);
    // every shipped scenario fits the default budgets
    for entry in std::fs::read_dir(repo().join("scenarios")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            let r = ihdyn(dir.path(), &["validate", p.to_str().unwrap()], &[]);
            assert_eq!(r.code, 0, "{}: {}", p.display(), r.stderr);
        }
    }
}

#[test]
fn solve_thresholds_are_deduplicated_and_lists_capped() {
    let dir = tmp();
    let f = write(
        dir.path(),
        "d.toml",
        "name = \"d\"\n[system]\nkind = \"musat3\"\nn = 4\n[solve]\nthresholds = [0.5, 0.1, 0.5, 0.5]\n",
    );
    let out = dir.path().join("d");
    run_into(dir.path(), &f, &out, &["-q"]);
    let events = read_text(&out.join("events.csv"));
    assert_eq!(events.matches("T_gamma3@0.5").count(), 1, "{events}");
    assert_eq!(events.matches("T_gamma3@0.1").count(), 1, "{events}");
    let many: Vec<String> = (1..=65).map(|i| format!("{}", i as f64 / 100.0)).collect();
    let long = format!(
        "name = \"d\"\n[system]\nkind = \"musat3\"\nn = 4\n[solve]\nthresholds = [{}]\n",
        many.join(", ")
    );
    assert_refused(
        &[("65 thresholds", long, "solve.thresholds: at most 64 values")],
        None,
    );
}

#[test]
fn incomplete_validation_is_complete_now() {
    let name = "x".repeat(300);
    let deep = format!("x = {}", "[".repeat(100_000));
    assert_refused(
        &[
            (
                "a 300-character name",
                format!("name = \"{name}\"\n[system]\nkind = \"musat3\"\nn = 4\n[solve]\n"),
                "name: at most 100 characters",
            ),
            (
                "an initial value beyond the divergence bound",
                "name = \"i\"\n[system]\nkind = \"musat3\"\nn = 4\ninit = { alpha3 = 1e308 }\n[solve]\n"
                    .into(),
                "system.init.alpha3: must be finite with |value| <= 1e100",
            ),
            ("deeply nested input", deep, "invalid TOML"),
        ],
        None,
    );
    // the echo of a 100 000-character line is cut
    let dir = tmp();
    let f = write(
        dir.path(),
        "n.toml",
        &format!("x = {}", "[".repeat(100_000)),
    );
    let r = ihdyn(dir.path(), &["validate", &f], &[]);
    assert!(r.stderr.len() < 1000, "{} bytes of message", r.stderr.len());
}

#[cfg(unix)]
#[test]
fn scenario_files_must_be_small_regular_files() {
    let dir = tmp();
    let fifo = dir.path().join("fifo.toml");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let big = dir.path().join("big.toml");
    std::fs::write(&big, vec![b'#'; 2 << 20]).unwrap();
    for (path, message) in [
        (fifo.to_str().unwrap(), "not a regular file"),
        ("/dev/zero", "not a regular file"),
        (big.to_str().unwrap(), "1 MiB"),
        (dir.path().to_str().unwrap(), "folder"),
    ] {
        let r = ihdyn(dir.path(), &["run", path], &[]);
        assert_eq!(r.code, 2, "{path}: {}", r.stderr);
        assert!(r.stderr.contains(message), "{path}: {}", r.stderr);
        assert!(!dir.path().join("output").exists());
    }
}

#[test]
fn flags_and_environment_are_checked_by_name() {
    let dir = tmp();
    for (args, message) in [
        (
            vec!["sweep", "--n", "4,8", "--loss-scale", "nan"],
            "--loss-scale",
        ),
        (
            vec!["sweep", "--n", "4,8", "--fit-min-n", "nan"],
            "--fit-min-n",
        ),
        (vec!["sweep", "--n", "4,8", "--rtol", "inf"], "--rtol"),
        (
            vec!["sweep", "--n", "4,8", "--thresholds", "0.5,nan"],
            "--thresholds",
        ),
        (
            vec!["sweep", "--n", "4,8", "--out", "a", "--output-root", "b"],
            "cannot be used with",
        ),
    ] {
        let r = ihdyn(dir.path(), &args, &[]);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(message), "{args:?}: {}", r.stderr);
        assert!(!r.stderr.contains("TOML"), "{args:?}: {}", r.stderr);
    }
    for value in ["garbage", "0", "-1", "1.5"] {
        let r = ihdyn(
            dir.path(),
            &["sweep", "--n", "4,8"],
            &[("RAYON_NUM_THREADS", value)],
        );
        assert_eq!(r.code, 2, "RAYON_NUM_THREADS={value}: {}", r.stderr);
        assert!(r.stderr.contains("RAYON_NUM_THREADS"), "{}", r.stderr);
    }
    assert!(!dir.path().join("output").exists());
    assert!(!dir.path().join("a").exists() && !dir.path().join("b").exists());
}

#[cfg(unix)]
#[test]
fn a_full_disk_mid_sweep_then_resume_gives_the_full_result() {
    // RLIMIT_FSIZE stands in for a full disk: writes past 8 KiB in one file fail (EFBIG; the
    // shell ignores SIGXFSZ for the binary), here in the middle of the points log.
    let dir = tmp();
    let ns: Vec<String> = (4..64).map(|n| n.to_string()).collect();
    let text = format!(
        "name = \"df\"\n[system]\nkind = \"musat3\"\n[sweep]\nn = [{}]\nthresholds = [0.5, 0.1]\n",
        ns.join(", ")
    );
    let f = write(dir.path(), "df.toml", &text);
    run_into(dir.path(), &f, &dir.path().join("full"), &["-q"]);
    let out = dir.path().join("out");
    let status = std::process::Command::new("sh")
        .current_dir(dir.path())
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 16; exec '{}' -q --threads 1 run '{f}' --out '{}'",
            env!("CARGO_BIN_EXE_ihdyn"),
            out.display()
        ))
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(stderr.contains("cannot write"), "{stderr}");
    let m = manifest(&out);
    assert_eq!(m.status, "failed");
    assert!(!out.join("sweep.csv").exists());
    run_into(dir.path(), &f, &out, &["-q", "--resume"]);
    assert_eq!(manifest(&out).status, "complete");
    assert_eq!(
        read_bytes(&out.join("sweep.csv")),
        read_bytes(&dir.path().join("full/sweep.csv"))
    );
}
