//! The binary end to end: outputs and headers, bad input, determinism, the demo.

use crate::support::*;

#[test]
fn trajectory_scenario_writes_every_file_with_exact_headers() {
    let dir = tmp();
    let scenario = repo().join("scenarios/musat3-trajectory.toml");
    let out = dir.path().join("traj");
    run_into(dir.path(), scenario.to_str().unwrap(), &out, &[]);
    for f in [
        "trajectory.csv",
        "events.csv",
        "trajectory.png",
        "trajectory.svg",
        "manifest.json",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    assert_eq!(
        first_line(&out.join("trajectory.csv")),
        "t,alpha3,beta2,gamma3,loss,a,b"
    );
    assert_eq!(first_line(&out.join("events.csv")), "event,t");
    let events = read_text(&out.join("events.csv"));
    for e in [
        "T_gamma3@0.5,",
        "T_beta2@0.5,",
        "T_alpha3@0.5,",
        "T_alpha3@0.1,",
        "T_loss_half,",
        "t_peak_alpha_rate,",
    ] {
        assert!(events.contains(e), "{e} missing in\n{events}");
    }
    let rows = read_text(&out.join("trajectory.csv"));
    assert_eq!(rows.lines().count(), 1 + 1001);
    let m = manifest(&out);
    assert_eq!(m.tool, "ihdyn");
    assert_eq!(m.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(m.status, "complete");
    assert_eq!(m.scenario["system"]["n"], 8);
    assert!(m.wall_seconds > 0.0);
    let stats = &m.jobs[0]["solver_stats"];
    assert!(stats["steps"].as_u64().unwrap() > 10);
    assert!(stats["rhs_evals"].as_u64().unwrap() > 6 * 10);
    // no temporary files left behind
    assert!(
        files_under(&out)
            .iter()
            .all(|p| !p.to_string_lossy().contains(".tmp-"))
    );
    // the PNG is a real PNG
    let png = read_bytes(&out.join("trajectory.png"));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

/// Each bad input: exit code 2, one message naming the field, nothing under output/.
#[test]
fn bad_input_exits_2_names_the_field_and_writes_nothing() {
    let base = "[system]\nkind = \"musat3\"\n";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown field",
            format!("{base}n = 8\nspeed = 2\n[solve]\n"),
            "system.speed: unknown field `speed`",
        ),
        (
            "wrong type",
            format!("{base}n = 8\n[solve]\nthresholds = \"0.5\"\n"),
            "solve.thresholds: invalid type: string \"0.5\"",
        ),
        (
            "N < 2 in the system",
            format!("{base}n = 1\n[solve]\n"),
            "system.n: must be >= 2, got 1",
        ),
        (
            "N < 2 in the sweep",
            format!("{base}[sweep]\nn = [8, 1]\n"),
            "sweep.n: must be >= 2, got 1",
        ),
        (
            "threshold <= 0",
            format!("{base}[sweep]\nn = [8]\nthresholds = [0.5, 0.0]\n"),
            "sweep.thresholds: must be > 0, got 0",
        ),
        (
            "t_max <= 0",
            format!("{base}n = 8\n[solver]\nt_max = -3\n[solve]\n"),
            "solver.t_max: must be > 0 and finite, got -3",
        ),
        (
            "unknown top-level table",
            format!("{base}n = 8\n[solve]\n[plots]\n"),
            "plots: unknown section or field (accepted: `name`",
        ),
    ];
    assert_refused(
        &cases,
        Some("name = \"good\"\n[system]\nkind = \"musat3\"\nn = 4\n[solve]\n"),
    );
}

#[test]
fn missing_file_and_bad_flags_exit_2_without_output() {
    let dir = tmp();
    let r = ihdyn(dir.path(), &["run", "nope.toml"], &[]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("cannot read scenario file `nope.toml`"),
        "{}",
        r.stderr
    );
    let r = ihdyn(dir.path(), &["sweep", "--n", "8,1"], &[]);
    assert_eq!(r.code, 2);
    assert_eq!(r.stderr.trim(), "ihdyn: --n: must be >= 2, got 1");
    let r = ihdyn(
        dir.path(),
        &["sweep", "--n", "8", "--thresholds", "-0.5"],
        &[],
    );
    assert_eq!(r.code, 2);
    assert_eq!(
        r.stderr.trim(),
        "ihdyn: --thresholds: must be > 0, got -0.5"
    );
    let r = ihdyn(dir.path(), &["sweep", "--n", "8", "--query", "middle"], &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--query"), "{}", r.stderr);
    let r = ihdyn(dir.path(), &["--threads", "0", "demo"], &[]);
    assert_eq!(r.code, 2);
    let two = repo().join("scenarios/musat3-trajectory.toml");
    let two = two.to_str().unwrap();
    let r = ihdyn(dir.path(), &["run", two, two, "--out", "x"], &[]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("--out names the folder of a single scenario")
    );
    assert!(
        files_under(dir.path()).is_empty(),
        "{:?}",
        files_under(dir.path())
    );
}

#[test]
fn validate_checks_without_running() {
    let dir = tmp();
    let good = repo().join("scenarios/musat3-sweep.toml");
    let r = run_ok(dir.path(), &["validate", good.to_str().unwrap()], &[]);
    assert!(
        r.stdout.contains(
            "musat3-sweep (musat3): sweep of 24 points over system.n (24 values) x 2 thresholds"
        ),
        "{}",
        r.stdout
    );
    let bad = write(
        dir.path(),
        "bad.toml",
        "[system]\nkind = \"musat3\"\n[sweep]\nn = []\n",
    );
    let r = ihdyn(dir.path(), &["validate", &bad], &[]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("sweep.n: must not be empty"),
        "{}",
        r.stderr
    );
    assert_eq!(files_under(dir.path()).len(), 1, "only bad.toml");
}

#[test]
fn sweep_csv_is_byte_identical_across_runs_and_thread_counts() {
    let dir = tmp();
    let scenario = repo().join("scenarios/musat3-sweep.toml");
    let mut outputs = Vec::new();
    for (i, threads) in ["1", "2", "2"].iter().enumerate() {
        let out = dir.path().join(format!("run{i}"));
        let r = run_ok(
            dir.path(),
            &[
                "run",
                scenario.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "-q",
            ],
            &[("RAYON_NUM_THREADS", threads)],
        );
        assert!(r.stdout.is_empty(), "--quiet prints nothing");
        outputs.push((
            read_bytes(&out.join("sweep.csv")),
            read_bytes(&out.join("fit.json")),
        ));
        assert_eq!(manifest(&out).status, "complete");
    }
    assert!(outputs.windows(2).all(|w| w[0] == w[1]));
    let text = String::from_utf8(outputs[0].0.clone()).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "N,threshold,T_gamma3,T_beta2,T_alpha3,T_loss_half,t_peak_alpha_rate"
    );
    // 24 N x 2 thresholds, sorted by N then threshold
    let rows: Vec<(usize, f64)> = lines
        .map(|l| {
            let mut c = l.split(',');
            (
                c.next().unwrap().parse().unwrap(),
                c.next().unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 48);
    assert!(
        rows.windows(2)
            .all(|w| w[0].0 < w[1].0 || (w[0].0 == w[1].0 && w[0].1 < w[1].1))
    );
}

#[test]
fn flags_only_sweep_matches_the_scenario_file_sweep() {
    let dir = tmp();
    let text = "name = \"s\"\n[system]\nkind = \"musat3\"\n[sweep]\nn = [8, 64, 256]\nthresholds = [0.5, 0.1]\n";
    let f = write(dir.path(), "s.toml", text);
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    run_into(dir.path(), &f, &a, &["-q"]);
    run_ok(
        dir.path(),
        &[
            "sweep",
            "--system",
            "musat3",
            "--n",
            "8,64,256",
            "--thresholds",
            "0.5,0.1",
            "--out",
            b.to_str().unwrap(),
            "-q",
        ],
        &[],
    );
    for f in ["sweep.csv", "fit.json"] {
        assert_eq!(read_bytes(&a.join(f)), read_bytes(&b.join(f)), "{f}");
    }
    for f in ["sweep.png", "sweep.svg", "manifest.json"] {
        assert!(b.join(f).is_file());
    }
}

#[test]
fn sweep_method_flag_selects_dop853_and_both_integrators_agree() {
    let dir = tmp();
    let text = "name = \"s\"\n[system]\nkind = \"musat3\"\n[solver]\nmethod = \"dop853\"\n[sweep]\nn = [8, 64]\n";
    let f = write(dir.path(), "s.toml", text);
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    run_into(dir.path(), &f, &a, &["-q"]);
    for (out, method) in [(&b, "dop853"), (&c, "dopri5")] {
        let args = [
            "sweep",
            "--n",
            "8,64",
            "--method",
            method,
            "--out",
            out.to_str().unwrap(),
            "-q",
        ];
        run_ok(dir.path(), &args, &[]);
    }
    let csv = |d: &std::path::Path| read_text(&d.join("sweep.csv"));
    assert_eq!(
        csv(&a),
        csv(&b),
        "the flag and the scenario field give the same run"
    );
    assert_ne!(
        csv(&b),
        csv(&c),
        "a different integrator takes different steps"
    );
    // ... to the same event times (both at rtol 1e-10)
    for (lb, lc) in csv(&b).lines().zip(csv(&c).lines()).skip(1) {
        for (x, y) in lb.split(',').zip(lc.split(',')).skip(2) {
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!((x - y).abs() <= 1e-8 * y.abs(), "{lb} vs {lc}");
        }
    }
    let r = ihdyn(dir.path(), &["sweep", "--n", "8", "--method", "rk4"], &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--method"), "{}", r.stderr);
}

#[test]
fn demo_runs_with_no_arguments_and_shows_the_n_squared_law() {
    let dir = tmp();
    let r = run_ok(dir.path(), &[], &[]);
    let out = dir.path().join("output/demo");
    for f in [
        "trajectory.csv",
        "events.csv",
        "trajectory.png",
        "sweep.csv",
        "fit.json",
        "sweep.png",
        "sweep.svg",
        "manifest.json",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    assert!(r.stdout.contains("T_alpha3"), "{}", r.stdout);
    assert!(r.stdout.contains("slope"), "{}", r.stdout);
    let fit = json(&out.join("fit.json"));
    for f in fit["fits"].as_array().unwrap() {
        if f["threshold"] != 0.5 {
            continue;
        }
        let slope = f["fit"]["slope"].as_f64().unwrap();
        let [lo, hi] = match f["column"].as_str().unwrap() {
            "T_gamma3" => [0.95, 1.05],
            _ => [1.9, 2.1],
        };
        assert!(slope > lo && slope < hi, "{}: slope {slope}", f["column"]);
    }
}

#[test]
fn every_shipped_scenario_validates() {
    let dir = tmp();
    let mut files: Vec<String> = std::fs::read_dir(repo().join("scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    let mut args = vec!["validate"];
    args.extend(files.iter().map(String::as_str));
    let r = run_ok(dir.path(), &args, &[]);
    assert_eq!(
        r.stdout.lines().filter(|l| l.starts_with("ok: ")).count(),
        files.len()
    );
    assert!(
        files_under(dir.path()).is_empty(),
        "validate writes nothing"
    );
}

#[test]
fn set_overrides_a_field_exactly_as_editing_the_file() {
    let dir = tmp();
    let base = "name = \"o\"\n[system]\nkind = \"musat3\"\nn = 8\n[sweep]\nn = [4, 8]\nthresholds = [0.5]\n";
    let edited = base.replace("n = [4, 8]", "n = [4, 6, 8]").replace(
        "kind = \"musat3\"",
        "kind = \"musat3\"\nquery = \"uniform\"",
    );
    let f = write(dir.path(), "o.toml", base);
    let g = write(dir.path(), "edited.toml", &edited);
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    run_into(
        dir.path(),
        &f,
        &a,
        &[
            "-q",
            "--set",
            "sweep.n=[4, 6, 8]",
            "--set",
            "system.query=uniform",
        ],
    );
    run_into(dir.path(), &g, &b, &["-q"]);
    assert_eq!(
        read_bytes(&a.join("sweep.csv")),
        read_bytes(&b.join("sweep.csv"))
    );
    // shards of an overridden sweep merge into the same result
    for i in 1..=2 {
        run_into(
            dir.path(),
            &f,
            &dir.path().join(format!("s{i}")),
            &[
                "-q",
                "--shard",
                &format!("{i}/2"),
                "--set",
                "sweep.n=[4, 6, 8]",
                "--set",
                "system.query=uniform",
            ],
        );
    }
    let m = dir.path().join("m");
    run_ok(
        dir.path(),
        &[
            "-q",
            "merge",
            dir.path().join("s1").to_str().unwrap(),
            dir.path().join("s2").to_str().unwrap(),
            "--out",
            m.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(
        read_bytes(&m.join("sweep.csv")),
        read_bytes(&b.join("sweep.csv"))
    );
    // a bad override is named like a bad field, and nothing is written
    let r = ihdyn(
        dir.path(),
        &["run", &f, "--set", "system.loss_scale=-1"],
        &[],
    );
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("with --set system.loss_scale=-1: system.loss_scale: must be > 0"),
        "{}",
        r.stderr
    );
    let r = ihdyn(dir.path(), &["run", &f, "--set", "system.n"], &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("PATH=VALUE"), "{}", r.stderr);
    assert!(!dir.path().join("output").exists());
}

#[test]
fn musat19_reaches_n_65536_only_where_the_gradient_is_o_n() {
    let dir = tmp();
    let last = write(
        dir.path(),
        "l.toml",
        "name = \"l\"\n[system]\nkind = \"musat19\"\nn = 65536\n[solver]\nmethod = \"radau5\"\n[solve]\nsamples = 11\n",
    );
    run_ok(dir.path(), &["validate", &last], &[]);
    // above 4096 the instance skips the O(N²) dense configuration and still solves
    let out = dir.path().join("l");
    run_ok(
        dir.path(),
        &[
            "-q",
            "run",
            &last,
            "--set",
            "system.n=8192",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    let events = read_text(&out.join("events.csv"));
    assert!(events.contains("T_gamma3@0.5"), "{events}");
    let uniform = write(
        dir.path(),
        "u.toml",
        "name = \"u\"\n[system]\nkind = \"musat19\"\nn = 8192\nquery = \"uniform\"\n[solve]\n",
    );
    let r = ihdyn(dir.path(), &["validate", &uniform], &[]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("system.n: must be <= 4096 for musat19 outside the O(N) case"),
        "{}",
        r.stderr
    );
}
