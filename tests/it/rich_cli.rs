//! Kind "rich" through the real binary: outputs and headers, the sweep columns, training
//! alongside, determinism on 1 and 2 threads, and bad input.

use crate::support::*;

#[test]
fn solve_writes_the_loss_split_events_and_phases() {
    let dir = tmp();
    let f = write(
        dir.path(),
        "t.toml",
        "name = \"t\"\n[system]\nkind = \"rich\"\nL = 16\n[solve]\nsamples = 201\n",
    );
    let out = dir.path().join("o");
    let r = run_into(dir.path(), &f, &out, &[]);
    assert!(r.stdout.contains("T_IH"), "{}", r.stdout);
    for f in [
        "trajectory.csv",
        "events.csv",
        "phases.csv",
        "trajectory.png",
        "trajectory.svg",
        "manifest.json",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    assert_eq!(
        first_line(&out.join("trajectory.csv")),
        "t,w_G,p,v,w_K,w_Q,loss,loss_G,loss_I,w"
    );
    let rows = read_text(&out.join("trajectory.csv"));
    assert_eq!(rows.lines().count(), 202);
    // loss = loss_G + loss_I in every row (the closed form has no cross term)
    for line in rows.lines().skip(1) {
        let v: Vec<f64> = line.split(',').map(|c| c.parse().unwrap()).collect();
        assert!(
            (v[6] - v[7] - v[8]).abs() <= 1e-15 * v[6].max(1.0),
            "{line}"
        );
    }
    let events = read_text(&out.join("events.csv"));
    let names: Vec<&str> = events
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "T_G",
            "T_plateau_end",
            "T_IH",
            "T_transition_end",
            "T_IH_loss",
            "T_converged"
        ]
    );
    // events in the phase order, all found within the default 40·L horizon
    let t: Vec<f64> = events
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(t[0] < t[1] && t[1] < t[2] && t[2] < t[3], "{t:?}");
    assert_eq!(first_line(&out.join("phases.csv")), "phase,t_start,t_end");
    let m = manifest(&out);
    assert_eq!(m.status, "complete");
    assert_eq!(m.scenario["system"]["kind"], "rich");
    assert_eq!(m.scenario["solver"]["horizon"], 40.0);
    assert_eq!(m.jobs[0]["stop_reason"], "horizon");
    assert_eq!(m.jobs[0]["diagnostics"]["phase1_monotone_w_G_and_p"], true);
}

#[test]
fn monte_carlo_estimator_runs_and_reports_the_cross_term() {
    let dir = tmp();
    let f = write(
        dir.path(),
        "mc.toml",
        "name = \"mc\"\n[system]\nkind = \"rich\"\nL = 8\nestimator = \"monte_carlo\"\nmc_samples = 40\n[solve]\nsamples = 11\nmargin = 0\n",
    );
    let out = dir.path().join("o");
    run_into(dir.path(), &f, &out, &["-q"]);
    assert_eq!(
        first_line(&out.join("trajectory.csv")),
        "t,w_G,p,v,w_K,w_Q,loss,loss_G,loss_I,w,loss_cross"
    );
}

#[test]
fn sweep_has_the_documented_columns_and_is_byte_identical_on_1_and_2_threads() {
    let dir = tmp();
    let f = write(
        dir.path(),
        "s.toml",
        "name = \"s\"\n[system]\nkind = \"rich\"\n[sweep.fields]\n\"system.L\" = [16, 64, 256]\n\"system.c_I\" = [0.5, 0.75]\n",
    );
    let outs = assert_same_on_1_and_2_threads(dir.path(), &f, &["sweep.csv", "fit.json"]);
    assert!(outs.iter().all(|o| o.join("sweep.png").is_file()));
    let text = read_text(&outs[0].join("sweep.csv"));
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "L,sigma,c_G,c_I,w_star,T_G,T_IH,ratio"
    );
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|c| c.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 6);
    for r in &rows {
        assert!(
            (r[7] - r[6] / r[5]).abs() < 1e-9 * r[7],
            "ratio = T_IH/T_G: {r:?}"
        );
    }
    // T_IH/(L − 2) is the same at every L (per c_I), and smaller for the larger c_I
    let per_n = |r: &Vec<f64>| r[6] / (r[0] - 2.0);
    let c05: Vec<f64> = rows.iter().filter(|r| r[3] == 0.5).map(per_n).collect();
    assert!(
        c05.iter().all(|v| (v / c05[0] - 1.0).abs() < 1e-6),
        "{c05:?}"
    );
    let fit = json(&outs[0].join("fit.json"));
    let tih: Vec<&serde_json::Value> = fit["fits"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["column"] == "T_IH")
        .collect();
    assert_eq!(tih.len(), 2, "one fit per c_I");
    for f in tih {
        let slope = f["fit"]["slope"].as_f64().unwrap();
        assert!(slope > 1.0 && slope < 1.06, "T_IH ∝ L − 2: slope {slope}");
    }
}

#[test]
fn training_alongside_is_byte_identical_on_1_and_2_threads() {
    let dir = tmp();
    let f = write(
        dir.path(),
        "tr.toml",
        "name = \"tr\"\n[system]\nkind = \"rich\"\nL = 8\nsigma = 0.05\n[train]\nmodels = [\"sgd\", \"full\"]\neta = 0.1\nbatch = 16\nt_max = 30\ncheckpoints = 40\neval_samples = 64\n[train.full]\nd = 3\nheads2 = 2\n",
    );
    let outs = assert_same_on_1_and_2_threads(
        dir.path(),
        &f,
        &["train_sgd.csv", "train_full.csv", "train_events.csv"],
    );
    assert!(outs.iter().all(|o| o.join("train.png").is_file()));
    let sgd = read_text(&outs[0].join("train_sgd.csv"));
    assert_eq!(
        sgd.lines().next().unwrap(),
        "step,t,w_G,p,v,w_K,w_Q,w,loss,loss_G,loss_I,loss_cross"
    );
    let full = read_text(&outs[0].join("train_full.csv"));
    assert!(
        full.lines().next().unwrap().starts_with(
            "step,t,loss,w_G,p,v,w,p1,loss_G,kq_norm,prev_mass,corr_G,corr_I,entropy_IH,slope_h0"
        ),
        "{}",
        full.lines().next().unwrap()
    );
    // t = η·steps, and the first row is the initial point
    let first: Vec<&str> = sgd.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(
        &first[..7],
        ["0", "0", "0.05", "0.05", "0.05", "0.05", "0.05"]
    );
    let last: Vec<f64> = sgd
        .lines()
        .last()
        .unwrap()
        .split(',')
        .map(|c| c.parse().unwrap())
        .collect();
    assert_eq!(last[0], 300.0);
    assert!((last[1] - 30.0).abs() < 1e-12);
    let events = read_text(&outs[0].join("train_events.csv"));
    assert_eq!(events.lines().next().unwrap(), "model,event,t,method");
    assert!(events.contains("sgd,T_G,"), "{events}");
    assert!(events.contains("full,T_IH,"), "{events}");
    assert!(events.contains("checkpoint_interpolation"));
}

/// Bad input: exit code 2, one message naming the field, nothing written.
#[test]
fn bad_input_exits_2_names_the_field_and_writes_nothing() {
    let base = "[system]\nkind = \"rich\"\n";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "L too small for the 4-gram",
            format!("{base}L = 3\n[solve]\n"),
            "system.L: must be >= 4",
        ),
        (
            "L missing",
            format!("{base}[solve]\n"),
            "system.L: required",
        ),
        (
            "sigma = 0",
            format!("{base}L = 16\nsigma = 0.0\n[solve]\n"),
            "system.sigma: must be > 0",
        ),
        (
            "sigma < 0",
            format!("{base}L = 16\nsigma = -1e-3\n[solve]\n"),
            "system.sigma: must be > 0",
        ),
        (
            "c_G + c_I = 0",
            format!("{base}L = 16\nc_G = 0.0\nc_I = 0.0\n[solve]\n"),
            "system.c_I: c_G + c_I must be > 0",
        ),
        (
            "negative weight",
            format!("{base}L = 16\nc_G = -0.5\n[solve]\n"),
            "system.c_G: must be >= 0",
        ),
        (
            "w* outside the closed forms' range",
            format!("{base}L = 16\nw_star = 0.75\n[solve]\n"),
            "system.w_star: must be in (0, 1/sqrt(2)",
        ),
        (
            "init outside the closed form's domain",
            format!("{base}L = 16\nsigma = 0.9\n[solve]\n"),
            "system.sigma: the initial point is outside the closed form's domain: w^2 = 0.65",
        ),
        (
            "L = 3 inside a sweep",
            format!("{base}[sweep.fields]\n\"system.L\" = [3, 16]\n"),
            "sweep.fields.system.L: must be >= 4",
        ),
        (
            "musat thresholds on a rich solve",
            format!("{base}L = 16\n[solve]\nthresholds = [0.5]\n"),
            "solve.thresholds: not used by kind \"rich\"",
        ),
        (
            "musat thresholds on a rich sweep",
            format!("{base}[sweep]\nthresholds = [0.5]\n[sweep.fields]\n\"system.L\" = [16]\n"),
            "sweep.thresholds: not used by kind \"rich\"",
        ),
        (
            "unknown field",
            format!("{base}L = 16\ntheta = 2\n[solve]\n"),
            "system.theta: unknown field `theta`",
        ),
        (
            "p1 with the exact copy",
            format!("{base}L = 16\np1 = 2.0\n[solve]\n"),
            "system.p1: only with layer1",
        ),
        (
            "joint without a trained layer 1",
            format!("{base}L = 16\nparadigm = \"joint\"\n[solve]\n"),
            "system.paradigm: \"joint\" needs layer1 = \"trained\"",
        ),
        (
            "theta_hi below theta_lo",
            format!("{base}L = 16\n[system.events]\ntheta_lo = 0.5\ntheta_hi = 0.4\n[solve]\n"),
            "system.events.theta_hi: must be > theta_lo",
        ),
        (
            "train eta <= 0",
            format!("{base}L = 16\n[train]\neta = 0.0\n"),
            "train.eta: must be > 0",
        ),
        (
            "embedded full model too narrow",
            format!("{base}L = 16\n[train]\nmodels = [\"full\"]\n[train.full]\nd = 2\n"),
            "train.full.d: init = \"embedded\" needs d >= 3",
        ),
        (
            "train on musat3",
            "[system]\nkind = \"musat3\"\nn = 4\n[train]\n".to_string(),
            "train: the [train] section needs [system] kind = \"rich\", got kind = \"musat3\"",
        ),
    ];
    assert_refused(
        &cases,
        Some("name = \"good\"\n[system]\nkind = \"rich\"\nL = 8\n[solve]\n"),
    );
}

#[test]
fn the_shipped_rich_scenarios_validate() {
    let dir = tmp();
    let files: Vec<String> = [
        "rich-transition",
        "rich-sweep-L",
        "rich-sweep-sigma",
        "rich-full",
        "rich-phase",
    ]
    .iter()
    .map(|n| {
        repo()
            .join(format!("scenarios/{n}.toml"))
            .to_string_lossy()
            .into_owned()
    })
    .collect();
    let mut args = vec!["validate"];
    args.extend(files.iter().map(String::as_str));
    let r = run_ok(dir.path(), &args, &[]);
    assert!(
        r.stdout
            .contains("rich-sweep-L (rich): sweep of 10 points over system.L (10 values)"),
        "{}",
        r.stdout
    );
    assert!(files_under(dir.path()).is_empty());
}
