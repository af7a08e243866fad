//! The full Musat model and the 19-dim flow end to end: the `compare` job through the binary
//! (files, headers, events, bad input, divergence, determinism), musat19 in the generic sweep,
//! and the Theorem-1 residual against the batch size.

use crate::support::*;
use ihdyn::systems::musat::data::{DataKind, DataSpec, LabelPosition, QueryPosition};
use ihdyn::systems::musat::disentangled::{Params, Refresh, Trainer};
use ihdyn::systems::musat::musat3::Query;
use ihdyn::systems::musat::subspace::{MMatrix, project, residuals};
use serde_json::Value;
use std::path::{Path, PathBuf};

const NAMES: &str = "alpha1,alpha2,alpha3,beta1,beta2,beta3,beta4,beta5,beta6,beta7,beta8,beta9,\
beta10,beta11,beta12,gamma1,gamma2,gamma3,gamma4";

/// A small compare scenario: N = 3, D = 8, B = 64, 120 steps of pseudo-time 0.25.
const SMALL: &str = r#"name = "small"
[system]
kind = "musat19"
n = 3
query = "last"
[compare]
d = 8
batch = 64
eta = 2.0
steps = 120
checkpoint_every = 2
seed = 3
"#;

#[test]
fn compare_writes_every_source_on_one_time_axis() {
    let dir = tmp();
    let f = write(dir.path(), "small.toml", SMALL);
    let out = dir.path().join("out");
    run_into(dir.path(), &f, &out, &[]);
    for file in [
        "compare.csv",
        "compare.json",
        "compare.png",
        "compare.svg",
        "residual.png",
        "coordinates.png",
        "manifest.json",
    ] {
        assert!(out.join(file).is_file(), "missing {file}");
    }
    let header = first_line(&out.join("compare.csv"));
    assert!(
        header.starts_with(&format!("t,source,loss,residual,{NAMES},")),
        "{header}"
    );
    let csv = read_csv(&out.join("compare.csv"));
    let col = |name: &str| csv.column(name);
    let of = |src: &str| csv.rows.iter().filter(|r| r[1] == src).collect::<Vec<_>>();
    // 61 checkpoints (0, 2, ..., 120) per source
    for src in ["full", "ode19", "ode3"] {
        assert_eq!(of(src).len(), 61, "{src}");
    }
    for r in of("full") {
        // t = eta * step / D
        let t: f64 = r[0].parse().unwrap();
        let step: f64 = r[col("step")].parse().unwrap();
        assert!((t - 0.25 * step).abs() < 1e-12);
        assert_eq!(r[col("batch")], "64");
        assert!(!r[col("residual")].is_empty() && !r[col("beta7")].is_empty());
    }
    for r in of("ode3") {
        // ode3 has only alpha3, beta2, gamma3
        assert!(r[col("alpha1")].is_empty() && r[col("beta7")].is_empty());
        assert!(!r[col("alpha3")].is_empty() && !r[col("gamma3")].is_empty());
        assert!(r[col("residual")].is_empty() && r[col("batch")].is_empty());
    }
    let doc = json(&out.join("compare.json"));
    let sources = doc["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 3);
    for s in sources {
        let ev = &s["events"];
        for e in ["T_gamma3@0.5", "T_beta2@0.5", "T_alpha3@0.5", "T_loss_half"] {
            let t = ev[e]["t"]
                .as_f64()
                .unwrap_or_else(|| panic!("{} {e} missing", s["source"]));
            let steps = ev[e]["steps"].as_f64().unwrap();
            assert!(
                (steps - 4.0 * t).abs() < 1e-9 * steps.max(1.0),
                "steps = t D / eta"
            );
        }
    }
    // emergence order gamma3 -> beta2 -> alpha3 in the full model, and it tracks ode19 closely
    let full = &sources[0];
    assert_eq!(full["source"], "full");
    let t = |s: &Value, e: &str| s["events"][e]["t"].as_f64().unwrap();
    assert!(t(full, "T_gamma3@0.5") < t(full, "T_beta2@0.5"));
    let ode19 = sources.iter().find(|s| s["source"] == "ode19").unwrap();
    let rel = rel_err(t(full, "T_alpha3@0.5"), t(ode19, "T_alpha3@0.5"));
    assert!(rel < 0.05, "full vs ode19 T_alpha3 differ by {rel}");
    let diff = &full["max_abs_difference_vs_ode19"];
    assert_eq!(diff["up_to_t"].as_f64().unwrap(), t(ode19, "T_alpha3@0.5"));
    for c in ["alpha3", "beta2", "gamma3"] {
        assert!(diff[c].as_f64().unwrap() < 0.05, "{c}: {}", diff[c]);
    }
    let m = manifest(&out);
    assert_eq!(m.status, "complete");
    assert_eq!(m.jobs[0]["job"], "compare");
}

#[test]
fn compare_csv_is_byte_identical_on_one_and_two_threads() {
    let dir = tmp();
    let f = write(
        dir.path(),
        "small.toml",
        &SMALL.replace("steps = 120", "steps = 30"),
    );
    assert_same_on_1_and_2_threads(dir.path(), &f, &["compare.csv", "compare.json"]);
}

#[test]
fn bad_compare_input_exits_2_names_the_field_and_writes_nothing() {
    let sys = "[system]\nkind = \"musat19\"\nn = 4\n";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "D too small",
            format!("{sys}[compare]\nd = 8\nsteps = 10\n"),
            "compare.d: orthonormal data need D >= 2N + 2 = 10 (N = 4), got 8",
        ),
        (
            "odd D",
            format!("{sys}[compare]\nd = 11\nsteps = 10\n"),
            "compare.d: must be even",
        ),
        (
            "eta <= 0",
            format!("{sys}[compare]\neta = 0\nsteps = 10\n"),
            "compare.eta: must be > 0",
        ),
        (
            "B = 0",
            format!("{sys}[compare]\nbatch = 0\nsteps = 10\n"),
            "compare.batch: each batch size must be in 1..=",
        ),
        (
            "B = 0 in a list",
            format!("{sys}[compare]\nbatch = [32, 0]\nsteps = 10\n"),
            "compare.batch: each batch size must be in 1..=",
        ),
        (
            "unknown query",
            format!("{sys}query = \"middle\"\n[compare]\nsteps = 10\n"),
            "system.query: unknown variant `middle`, expected `last` or `uniform`",
        ),
        (
            "unknown label cue",
            format!("{sys}label_position = \"shifted\"\n[compare]\nsteps = 10\n"),
            "system.label_position: unknown variant `shifted`",
        ),
        (
            "unknown query position",
            format!("{sys}query_position = \"x\"\n[compare]\nsteps = 10\n"),
            "system.query_position: unknown variant `x`, expected `fresh` or `p_q`",
        ),
        (
            "unknown M",
            format!("{sys}m = \"bogus\"\n[compare]\nsteps = 10\n"),
            "system.m: unknown variant `bogus`, expected `J` or `swap`",
        ),
        (
            "M on musat3",
            "[system]\nkind = \"musat3\"\nn = 4\nm = \"swap\"\n[solve]\n".to_string(),
            "system.m: unknown field `m`",
        ),
        (
            "query position on musat3",
            "[system]\nkind = \"musat3\"\nn = 4\nquery_position = \"p_q\"\n[solve]\n".to_string(),
            "system.query_position: unknown field `query_position`",
        ),
        (
            "unknown data",
            format!("{sys}[compare]\ndata = \"tokens\"\nsteps = 10\n"),
            "compare.data: unknown variant `tokens`",
        ),
        (
            "gaussian init without std",
            format!("{sys}[compare]\ninit = \"gaussian\"\nsteps = 10\n"),
            "compare.init_std: required with init = \"gaussian\"",
        ),
        (
            "compare on musat3",
            "[system]\nkind = \"musat3\"\nn = 4\n[compare]\nsteps = 10\n".to_string(),
            "compare: the [compare] section needs [system] kind = \"musat19\"",
        ),
        (
            "unknown compare field",
            format!("{sys}[compare]\nsteps = 10\nlr = 3\n"),
            "compare.lr: unknown field `lr`",
        ),
        (
            "temperature = 0",
            format!("{sys}[compare]\nsteps = 10\ntemperature = 0\n"),
            "compare.temperature: must be > 0 and finite",
        ),
        (
            "temperature < 0",
            format!("{sys}[compare]\nsteps = 10\ntemperature = -1\n"),
            "compare.temperature: must be > 0 and finite",
        ),
        (
            "unknown mask",
            format!("{sys}[compare]\nsteps = 10\nmask = \"bogus\"\n"),
            "compare.mask: unknown variant `bogus`, expected `strict` or `inclusive`",
        ),
        (
            "unknown musat19 coordinate",
            format!("{sys}freeze = [\"beta13\"]\n[solve]\n"),
            "system.freeze: unknown coordinate `beta13`",
        ),
    ];
    assert_refused(&cases, None);
}

/// The attention ablations (temperature, inclusive mask) train the full model only: the
/// reduced flows are listed under `not_run` with the reason, and both settings are echoed.
#[test]
fn attention_ablations_train_the_full_model_and_skip_the_flows() {
    for (extra, temperature, mask) in [
        ("temperature = 0.7\n", 0.7, "strict"),
        ("mask = \"inclusive\"\n", 1.0, "inclusive"),
    ] {
        let dir = tmp();
        let text = SMALL.replace("steps = 120", "steps = 20").to_string() + extra;
        let f = write(dir.path(), "abl.toml", &text);
        let out = dir.path().join("out");
        run_into(dir.path(), &f, &out, &[]);
        let doc = json(&out.join("compare.json"));
        let sources: Vec<&str> = doc["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["source"].as_str().unwrap())
            .collect();
        assert_eq!(sources, ["full"], "{extra}");
        let not_run = doc["not_run"].as_array().unwrap();
        assert_eq!(not_run.len(), 2, "{extra}");
        for (entry, src) in not_run.iter().zip(["ode19", "ode3"]) {
            assert_eq!(entry["source"], src);
            let reason = entry["reason"].as_str().unwrap();
            assert!(reason.contains("temperature 1, strict mask"), "{reason}");
        }
        assert_eq!(doc["temperature"].as_f64(), Some(temperature));
        assert_eq!(doc["mask"], mask);
        let m = manifest(&out);
        assert_eq!(
            m.scenario["compare"]["temperature"].as_f64(),
            Some(temperature)
        );
        assert_eq!(m.scenario["compare"]["mask"], mask);
        let csv = read_text(&out.join("compare.csv"));
        assert!(
            csv.lines()
                .skip(1)
                .all(|l| l.split(',').nth(1) == Some("full")),
            "{extra}: only full-model rows"
        );
    }
}

/// Runs [`SMALL`] with `steps` steps and the `extra` lines of `[system]` (after `query`) as
/// `name` in `dir`, checks that it succeeds, and returns its output folder.
fn run_small(dir: &Path, name: &str, steps: usize, extra: &str) -> PathBuf {
    let text = SMALL
        .replace("steps = 120", &format!("steps = {steps}"))
        .replace("query = \"last\"\n", &format!("query = \"last\"\n{extra}"));
    let f = write(dir, &format!("{name}.toml"), &text);
    let out = dir.join(name);
    run_into(dir, &f, &out, &[]);
    out
}

/// The rows of source `src` in `out/compare.csv`.
fn rows(out: &Path, src: &str) -> Vec<String> {
    read_text(&out.join("compare.csv"))
        .lines()
        .filter(|l| l.split(',').nth(1) == Some(src))
        .map(String::from)
        .collect()
}

/// What a variant of [`SMALL`] (in `variant`) shares against the default (in `base`): the
/// full model, ode19 and ode3 all run, `rows_each` rows each; ode3 (the 3-parameter closed form,
/// the same for every variant) is the default's trajectory, ode19 and the full model are not;
/// nothing is skipped, and compare.json names the system `system`. Returns compare.json.
fn assert_every_source_runs_and_only_ode3_is_unchanged(
    variant: &Path,
    base: &Path,
    rows_each: usize,
    system: &str,
) -> Value {
    for src in ["full", "ode19", "ode3"] {
        assert_eq!(rows(variant, src).len(), rows_each, "{src}");
    }
    assert_eq!(rows(variant, "ode3"), rows(base, "ode3"));
    assert_ne!(rows(variant, "ode19"), rows(base, "ode19"));
    assert_ne!(rows(variant, "full"), rows(base, "full"));
    let doc = json(&variant.join("compare.json"));
    assert!(doc["not_run"].as_array().unwrap().is_empty());
    assert_eq!(doc["system"], system);
    doc
}

/// query_position = "p_q": the full model, ode19 and ode3 all run. ode3 (the 3-parameter
/// closed form, unchanged by the query's position) is the same trajectory as with fresh;
/// ode19 is not (the query can match its item by position).
#[test]
fn query_position_p_q_runs_every_source_and_ode3_is_unchanged() {
    let dir = tmp();
    let run = |name: &str, extra: &str| run_small(dir.path(), name, 40, extra);
    let (pq, fresh) = (run("pq", "query_position = \"p_q\"\n"), run("fresh", ""));
    assert_every_source_runs_and_only_ode3_is_unchanged(
        &pq,
        &fresh,
        21,
        "musat, n = 3, query last, label position rotated, query position p_q",
    );
    let m = manifest(&pq);
    assert_eq!(m.scenario["system"]["query_position"], "p_q");
    assert_eq!(
        manifest(&fresh).scenario["system"]["query_position"],
        "fresh"
    );
}

/// m = "swap" (M = S = [[0, I], [I, 0]]): the full model on swap data, ode19 with S and ode3
/// all run; ode3 (the closed form, the same for both M) is J's trajectory, ode19 and the full
/// model are not, and the full model follows ode19 as closely as it does with J.
#[test]
fn m_swap_runs_every_source_and_ode3_is_unchanged() {
    let dir = tmp();
    let run = |name: &str, extra: &str| run_small(dir.path(), name, 120, extra);
    let (swap, j) = (run("swap", "m = \"swap\"\n"), run("j", ""));
    let doc = assert_every_source_runs_and_only_ode3_is_unchanged(
        &swap,
        &j,
        61,
        "musat, n = 3, query last, label position rotated, M = swap",
    );
    let full = &doc["sources"][0];
    for c in ["alpha3", "beta2", "gamma3"] {
        let diff = full["max_abs_difference_vs_ode19"][c].as_f64().unwrap();
        assert!(diff < 0.05, "{c}: full vs ode19 {diff}");
    }
    assert_eq!(manifest(&swap).scenario["system"]["m"], "swap");
    assert_eq!(manifest(&j).scenario["system"]["m"], "J");
}

#[test]
fn a_diverging_gd_run_keeps_its_rows_and_is_marked_partial() {
    let dir = tmp();
    let text = SMALL
        .replace("eta = 2.0", "eta = 1000.0")
        .replace("steps = 120", "steps = 400")
        .replace("checkpoint_every = 2", "checkpoint_every = 1");
    let f = write(dir.path(), "div.toml", &text);
    let out = dir.path().join("out");
    let r = ihdyn(
        dir.path(),
        &["run", &f, "--out", out.to_str().unwrap()],
        &[],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("gradient descent diverged at step"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("the loss is"), "{}", r.stderr);
    let m = manifest(&out);
    assert_eq!(m.status, "partial");
    assert!(m.error.unwrap().contains("diverged at step"));
    let doc = json(&out.join("compare.json"));
    let full = &doc["sources"][0];
    assert_eq!(full["status"], "diverged");
    let done = full["steps_done"].as_u64().unwrap();
    assert!((1..400).contains(&done));
    assert_eq!(
        rows(&out, "full").len() as u64,
        done + 1,
        "every checkpoint before the divergence is kept"
    );
}

#[test]
fn musat19_runs_in_the_generic_solve_and_sweep() {
    let dir = tmp();
    let f = write(
        dir.path(),
        "s.toml",
        "[system]\nkind = \"musat19\"\nn = 3\nquery = \"uniform\"\n[solve]\n[sweep]\nn = [2, 3, 5]\n",
    );
    let out = dir.path().join("out");
    run_into(dir.path(), &f, &out, &[]);
    assert_eq!(
        first_line(&out.join("sweep.csv")),
        "N,threshold,T_gamma3,T_beta2,T_alpha3,T_loss_half,t_peak_alpha_rate"
    );
    assert_eq!(
        first_line(&out.join("trajectory.csv")),
        format!("t,{NAMES},loss")
    );
    let sweep = read_text(&out.join("sweep.csv"));
    for line in sweep.lines().skip(1) {
        // every event found, in the order gamma3 -> beta2 -> alpha3 (query uniform)
        let v: Vec<f64> = line.split(',').map(|c| c.parse().unwrap()).collect();
        assert!(v[2] < v[3] && v[3] < v[4], "{line}");
    }
}

#[test]
fn musat19_solve_takes_the_query_position_and_m() {
    let dir = tmp();
    let solve = |name: &str, extra: &str| {
        let f = write(
            dir.path(),
            &format!("{name}.toml"),
            &format!("[system]\nkind = \"musat19\"\nn = 3\n{extra}[solve]\n"),
        );
        let out = dir.path().join(name);
        run_into(dir.path(), &f, &out, &[]);
        read_text(&out.join("trajectory.csv"))
    };
    let (fresh, pq) = (
        solve("fresh", ""),
        solve("pq", "query_position = \"p_q\"\n"),
    );
    assert_eq!(
        first_line(&dir.path().join("pq/trajectory.csv")),
        format!("t,{NAMES},loss")
    );
    assert_ne!(fresh, pq);
    assert_eq!(fresh, solve("default", "query_position = \"fresh\"\n"));
    // and M: swap is another flow, J the default
    assert_ne!(fresh, solve("swap", "m = \"swap\"\n"));
    assert_eq!(fresh, solve("j", "m = \"J\"\n"));
}

#[test]
fn off_subspace_residual_falls_with_the_batch_size() {
    // Theorem 1: zero init, isotropic data, query uniform. The off-subspace part of W is batch
    // noise: after the same steps with the same eta, B = 2048 leaves a residual at least 3x
    // smaller than B = 32 (1/sqrt(B) predicts 8x).
    let (n, d) = (3, 8);
    let spec = DataSpec {
        n,
        d,
        data: DataKind::Isotropic,
        query: Query::Uniform,
        label_position: LabelPosition::Rotated,
        query_position: QueryPosition::Fresh,
        m: MMatrix::J,
    };
    let residual_after = |batch: usize| {
        let mut trainer = Trainer::new(spec, batch, 1.0, Refresh::Step, 7);
        let mut p = Params::zeros(d);
        for _ in 0..40 {
            trainer.evaluate(&p);
            trainer.apply(&mut p, 2.0);
        }
        residuals(&p, &project(&p)).overall
    };
    let small = residual_after(32);
    let large = residual_after(2048);
    assert!(
        large > 0.0 && small >= 3.0 * large,
        "B = 32: {small}, B = 2048: {large}"
    );
}
