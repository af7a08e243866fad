//! Sweeps that are interrupted and resumed, sharded and merged: the CSV must come out byte for
//! byte as from one uninterrupted run; bad control input is refused with exit code 2.

use crate::support::*;

/// A two-field sweep (12 points: 6 N x 2 loss scales, 2 thresholds per point).
const SCENARIO: &str = r#"name = "ctl"
[system]
kind = "musat3"
[sweep]
n = [3, 5, 8, 13, 21, 34]
thresholds = [0.5, 0.1]
[sweep.fields]
"system.loss_scale" = [1.0, 0.5]
"#;

fn setup() -> (tempfile::TempDir, String) {
    let dir = tmp();
    let f = dir.path().join("ctl.toml");
    std::fs::write(&f, SCENARIO).unwrap();
    (dir, f.to_string_lossy().into_owned())
}

#[test]
fn interrupted_then_resumed_equals_uninterrupted() {
    let (dir, f) = setup();
    let full = dir.path().join("full");
    run_into(dir.path(), &f, &full, &["-q"]);
    let csv = read_bytes(&full.join("sweep.csv"));
    let text = String::from_utf8(csv.clone()).unwrap();
    assert_eq!(
        text.lines().next().unwrap(),
        "loss_scale,N,threshold,T_gamma3,T_beta2,T_alpha3,T_loss_half,t_peak_alpha_rate"
    );
    assert_eq!(text.lines().count(), 1 + 12 * 2);

    let part = dir.path().join("part");
    run_into(dir.path(), &f, &part, &["--max-points", "5", "-q"]);
    assert_eq!(manifest(&part).status, "partial");
    assert!(
        !part.join("sweep.csv").exists(),
        "no results before the sweep is complete"
    );
    let log = read_text(&part.join("sweep.points.csv"));
    assert_eq!(log.lines().count(), 1 + 5 * 2);
    // Simulate a kill in the middle of a write: a torn last line must be ignored.
    std::fs::write(
        part.join("sweep.points.csv"),
        format!("{log}7,0.5,8,0.1,3."),
    )
    .unwrap();
    run_into(
        dir.path(),
        &f,
        &part,
        &["--resume", "--max-points", "3", "-q"],
    );
    assert_eq!(manifest(&part).status, "partial");
    let r = run_into(dir.path(), &f, &part, &["--resume"]);
    assert!(r.stdout.contains("slope"), "{}", r.stdout);
    assert_eq!(manifest(&part).status, "complete");
    assert_eq!(read_bytes(&part.join("sweep.csv")), csv);
    assert_eq!(
        read_bytes(&part.join("fit.json")),
        read_bytes(&full.join("fit.json"))
    );
    assert_eq!(
        read_bytes(&part.join("sweep.points.csv")),
        read_bytes(&full.join("sweep.points.csv"))
    );
}

#[test]
fn shards_merged_equal_the_unsharded_run() {
    let (dir, f) = setup();
    let full = dir.path().join("full");
    run_into(dir.path(), &f, &full, &["-q"]);
    let root = dir.path().join("runs");
    let mut shard_dirs = Vec::new();
    for i in 1..=3 {
        let shard = format!("{i}/3");
        run_ok(
            dir.path(),
            &[
                "run",
                &f,
                "--shard",
                &shard,
                "--output-root",
                root.to_str().unwrap(),
                "-q",
            ],
            &[],
        );
        let d = root.join(format!("ctl-shard-{i}-of-3"));
        assert_eq!(manifest(&d).status, "complete");
        shard_dirs.push(d.to_string_lossy().into_owned());
    }
    // A merge with a shard missing is refused and writes nothing.
    let merged = dir.path().join("merged");
    let r = ihdyn(
        dir.path(),
        &[
            "merge",
            &shard_dirs[0],
            &shard_dirs[2],
            "--out",
            merged.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("4 of 12 points are missing"),
        "{}",
        r.stderr
    );
    assert!(!merged.exists());
    let mut args = vec!["merge"];
    args.extend(shard_dirs.iter().map(String::as_str));
    args.extend(["--out", merged.to_str().unwrap(), "-q"]);
    run_ok(dir.path(), &args, &[]);
    for file in ["sweep.csv", "fit.json", "slopes.csv", "sweep.points.csv"] {
        assert_eq!(
            read_bytes(&merged.join(file)),
            read_bytes(&full.join(file)),
            "{file}"
        );
    }
    assert!(merged.join("sweep.png").is_file() && merged.join("manifest.json").is_file());
}

#[test]
fn bad_control_input_is_refused_without_overwriting() {
    let (dir, f) = setup();
    for bad in ["0/3", "4/3", "a/b", "3"] {
        let r = ihdyn(dir.path(), &["run", &f, "--shard", bad], &[]);
        assert_eq!(r.code, 2, "{bad}");
        assert!(r.stderr.contains("--shard"), "{bad}: {}", r.stderr);
        assert!(r.stderr.contains("1 <= i <= n"), "{bad}: {}", r.stderr);
    }
    let r = ihdyn(dir.path(), &["run", &f, "--max-points", "0"], &[]);
    assert_eq!(r.code, 2);
    assert!(!dir.path().join("output").exists());

    // A resume into a folder that holds another scenario's run.
    let out = dir.path().join("other");
    let o = out.to_str().unwrap();
    run_ok(dir.path(), &["sweep", "--n", "4,6", "--out", o, "-q"], &[]);
    let before: Vec<(std::path::PathBuf, Vec<u8>)> = files_under(&out)
        .into_iter()
        .map(|p| {
            let b = read_bytes(&p);
            (p, b)
        })
        .collect();
    let r = ihdyn(dir.path(), &["run", &f, "--out", o, "--resume"], &[]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("holds a run of another scenario"),
        "{}",
        r.stderr
    );
    for (p, b) in &before {
        assert_eq!(&read_bytes(p), b, "{} was modified", p.display());
    }
    // Resume and shard need a sweep.
    let r = ihdyn(
        dir.path(),
        &[
            "run",
            repo()
                .join("scenarios/musat3-trajectory.toml")
                .to_str()
                .unwrap(),
            "--resume",
        ],
        &[],
    );
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("apply to sweeps"), "{}", r.stderr);
}
