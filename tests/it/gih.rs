//! The `gih` system (Chen et al.) through the real binary: outputs and headers, determinism on
//! 1 and 2 threads, a sweep over L, and bad input.

use crate::support::*;
use std::path::Path;

/// A small staged run with the full model alongside (well under a second).
const TINY: &str = r#"name = "tiny"
[system]
kind = "gih"
d = 3
pa = [-1, -2]
L = 20
alpha = 0.3
n_sequences = 200
seed = 7
M = 3
H = 3
D = 2
[solver]
rtol = 1e-7
atol = 1e-10
[gih]
samples = 21
a_levels = [0.5]
[gih.mi]
draws = 300
[gih.full]
samples = 11
[[gih.stages]]
name = "I"
train = ["c"]
lr = 1.0
steps = 40
[[gih.stages]]
name = "II"
train = ["w", "layer1"]
lr = 0.5
steps = 40
[[gih.stages]]
name = "III"
train = ["a"]
lr = 1.0
steps = 40
"#;

#[test]
fn gih_run_writes_every_output_with_exact_headers() {
    let dir = tmp();
    let f = write(dir.path(), "tiny.toml", TINY);
    let out = dir.path().join("out");
    let r = run_into(dir.path(), &f, &out, &[]);
    for name in [
        "mi.csv",
        "trajectory.csv",
        "replicator.csv",
        "events.csv",
        "full_trajectory.csv",
        "selection.png",
        "selection.svg",
        "rpe.png",
        "classifier.png",
        "loss.png",
        "manifest.json",
    ] {
        assert!(out.join(name).is_file(), "missing {name}");
    }
    assert_eq!(first_line(&out.join("mi.csv")), "subset,mi,stderr");
    let mi = read_text(&out.join("mi.csv"));
    assert!(mi.contains("\n\"{1,2}\","), "{mi}");
    assert_eq!(mi.lines().count(), 1 + 7);
    let p = "p_{},p_{1},p_{2},p_{3},\"p_{1,2}\",\"p_{1,3}\",\"p_{2,3}\"";
    let w = "w_1_1,w_1_2,w_1_3,w_2_1,w_2_2,w_2_3,w_3_1,w_3_2,w_3_3";
    let sigma =
        "sigma_1_1,sigma_1_2,sigma_1_3,sigma_2_1,sigma_2_2,sigma_2_3,sigma_3_1,sigma_3_2,sigma_3_3";
    assert_eq!(
        first_line(&out.join("trajectory.csv")),
        format!("t,stage,loss,val_loss,{p},{w},a,{sigma}")
    );
    assert_eq!(
        first_line(&out.join("full_trajectory.csv")),
        format!("step,t,stage,loss,val_loss,{p},{w},a,{sigma}")
    );
    assert_eq!(
        first_line(&out.join("events.csv")),
        "event,model,t,stage,t_in_stage,value,located_by"
    );
    // 3 stages x 21 rows
    let traj = read_text(&out.join("trajectory.csv"));
    assert_eq!(traj.lines().count(), 1 + 3 * 21);
    let events = read_text(&out.join("events.csv"));
    for e in [
        "\"p_{1,2}@0.5\",reduced,",
        "argmax_w_3,full,",
        "a@0.5,reduced,",
        "stage_II_done,full,",
    ] {
        assert!(events.contains(e), "{e} missing in\n{events}");
    }
    let m = manifest(&out);
    assert_eq!(m.status, "complete");
    let job = &m.jobs[0];
    assert_eq!(job["job"], "gih");
    assert_eq!(job["mi"]["S_star"], "{1,2}");
    assert_eq!(job["n_train"], 180);
    assert_eq!(job["full"]["steps"], 120);
    assert!(
        job["reduced"]["solve"]["solver_stats"]["steps"]
            .as_u64()
            .unwrap()
            > 3
    );
    assert!(r.stdout.contains("S* = {1,2}"), "{}", r.stdout);
}

#[test]
fn gih_csv_is_byte_identical_on_one_and_two_threads() {
    let dir = tmp();
    let text = format!("{TINY}[gih.transfer]\nL = [10, 40]\nn_sequences = 100\n");
    let f = write(dir.path(), "tiny.toml", &text);
    assert_same_on_1_and_2_threads(
        dir.path(),
        &f,
        &[
            "mi.csv",
            "trajectory.csv",
            "replicator.csv",
            "events.csv",
            "full_trajectory.csv",
            "transfer.csv",
        ],
    );
}

#[test]
fn a_sweep_over_l_reports_the_validation_loss_per_point() {
    let dir = tmp();
    let text = TINY
        .replace("L = 20\n", "")
        .replace("[gih.full]\nsamples = 11\n", "")
        + "[sweep]\n[sweep.fields]\n\"system.L\" = [8, 16, 32]\n";
    let f = write(dir.path(), "sweep.toml", &text);
    let out = dir.path().join("out");
    run_into(dir.path(), &f, &out, &["-q"]);
    assert_eq!(
        first_line(&out.join("sweep.csv")),
        "L,S_star,mi_S_star,loss,val_loss,p_S_star,a_final,T_p_S_star@0.9,T_stage_II_done"
    );
    let rows = read_csv(&out.join("sweep.csv")).rows;
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows.iter().map(|r| &r[0]).collect::<Vec<_>>(),
        ["8", "16", "32"]
    );
    for r in &rows {
        assert_eq!(&r[1], "{1,2}");
        let val: f64 = r[4].parse().unwrap();
        assert!(val.is_finite() && val < 1.2, "{r:?}");
    }
    // [gih] configures the points and is not run on its own
    assert!(!out.join("trajectory.csv").exists());
}

/// Each bad input: exit code 2, one message naming the field, nothing under output/.
#[test]
fn bad_gih_input_exits_2_names_the_field_and_writes_nothing() {
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "parent outside the window",
            TINY.replace("pa = [-1, -2]", "pa = [-1, -4]"),
            "system.pa: offset -4 is outside the RPE window -1..-3",
        ),
        (
            "positive parent offset",
            TINY.replace("pa = [-1, -2]", "pa = [1]"),
            "system.pa: offset 1 is outside the RPE window",
        ),
        (
            "D > H",
            TINY.replace("D = 2", "D = 4"),
            "system.D: must be <= H = 3",
        ),
        (
            "alpha = 0",
            TINY.replace("alpha = 0.3", "alpha = 0.0"),
            "system.alpha: must be > 0",
        ),
        (
            "alpha < 0",
            TINY.replace("alpha = 0.3", "alpha = -1.0"),
            "system.alpha: must be > 0",
        ),
        (
            "d < 2",
            TINY.replace("d = 3", "d = 1"),
            "system.d: must be in 2..=250, got 1",
        ),
        (
            "empty stage list",
            TINY[..TINY.find("[[gih.stages]]").unwrap()].to_string(),
            "gih.stages: must list at least one stage",
        ),
        (
            "a stage training nothing",
            TINY.replace("train = [\"a\"]", "train = []"),
            "gih.stages[2].train: must list at least one block",
        ),
        (
            "unknown block",
            TINY.replace("train = [\"a\"]", "train = [\"b\"]"),
            "gih.stages[2].train[0]: unknown variant `b`",
        ),
        (
            "H > M with a common window",
            TINY.replace("H = 3", "H = 4"),
            "system.H: with rpe_window",
        ),
        (
            "L too short",
            TINY.replace("L = 20", "L = 3"),
            "system.L: must be in 4..=100000",
        ),
        (
            "an epsilon with the code loss",
            TINY.replace("seed = 7", "seed = 7\nloss = \"code\"\nepsilon = 0.1"),
            "system.epsilon: only the paper loss has an epsilon",
        ),
        (
            "unknown field",
            TINY.replace("seed = 7", "seed = 7\nsped = 2"),
            "system.sped: unknown field",
        ),
        (
            "[gih] on another system",
            "[system]\nkind = \"musat3\"\nn = 4\n[gih]\n".to_string(),
            "gih: the [gih] section needs [system] kind = \"gih\"",
        ),
        (
            "a transfer length within the window",
            format!("{TINY}[gih.transfer]\nL = [3, 50]\n"),
            "gih.transfer.L: each length must be in 4..=100000",
        ),
        (
            "a transfer prior alpha = 0",
            format!("{TINY}[gih.transfer]\nalpha = [0.1, 0.0]\n"),
            "gih.transfer.alpha: must be > 0",
        ),
        (
            "too few transfer sequences for the batch standard error",
            format!("{TINY}[gih.transfer]\nn_sequences = 9\n"),
            "gih.transfer.n_sequences: must be in 10..=10000000, got 9",
        ),
        (
            "Monte Carlo MI with power 1",
            TINY.replace(
                "draws = 300",
                "draws = 300\nmethod = \"monte_carlo\"\npower = 1",
            ),
            "gih.mi.power: the monte_carlo method supports only power = 2",
        ),
    ];
    assert_refused(&cases, None);
}

/// The generic jobs work on a gih system: `[solve]` integrates the joint flow of (c, w, a) from
/// the initial point (events on a), and `[[phase]]` draws a slice of it.
#[test]
fn generic_solve_and_phase_run_on_a_gih_system() {
    let dir = tmp();
    let text = "[system]\nkind = \"gih\"\nL = 12\nn_sequences = 60\n\
                [solver]\nrtol = 1e-6\natol = 1e-9\nt_max = 5\n\
                [solve]\nthresholds = [0.02]\n\
                [[phase]]\nx = \"a\"\ny = \"w_1_1\"\nx_range = [0.0, 2.0]\ny_range = [0.0, 4.0]\n\
                grid = 5\nstarts = [[0.01, 3.0]]\nt_max = 5\n";
    let f = write(dir.path(), "s.toml", text);
    let out = dir.path().join("out");
    run_into(dir.path(), &f, &out, &["-q"]);
    let header = first_line(&out.join("trajectory.csv"));
    assert!(header.starts_with("t,c_{},c_{1},"), "{header}");
    assert!(header.contains(",a,loss,p_{},"), "{header}");
    let events = read_text(&out.join("events.csv"));
    assert!(events.contains("T_a@0.02,"), "{events}");
    assert!(
        files_under(&out)
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".png") && p.to_string_lossy().contains("phase"))
    );
    // [solve] and [gih] would write the same files: refused before anything runs
    let both = format!("{TINY}[solve]\n");
    let f = write(dir.path(), "both.toml", &both);
    let r = ihdyn(dir.path(), &["run", &f], &[]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("gih: [solve] and [gih] would both write"),
        "{}",
        r.stderr
    );
    assert!(!dir.path().join("output").exists());
}

/// TINY with GD on the reduced model from fresh batches of `batch` sequences and system seed
/// `seed`.
fn tiny_fresh(seed: u64, batch: usize) -> String {
    TINY.replace("seed = 7", &format!("seed = {seed}"))
        + &format!("[gih.gd]\ndata = \"fresh\"\nbatch = {batch}\nsamples = 9\n")
}

fn p_columns(path: &Path) -> Vec<Vec<String>> {
    let csv = read_csv(path);
    let cols: Vec<usize> = (0..csv.header.len())
        .filter(|&i| csv.header[i].starts_with("p_"))
        .collect();
    assert_eq!(cols.len(), 7);
    csv.rows
        .iter()
        .map(|r| cols.iter().map(|&i| r[i].clone()).collect())
        .collect()
}

/// `[gih.gd]` writes gd_trajectory.csv (step, then trajectory.csv's columns; checkpoint rows per
/// stage plus the stage ends) and events with model `gd` located between GD steps; with fresh
/// batches the file is byte-identical on 1 and 2 threads, and another system seed (another
/// batch stream) gives other p_S rows.
#[test]
fn reduced_gd_on_fresh_batches_is_deterministic_and_seeded() {
    let dir = tmp();
    let mut runs = Vec::new();
    for (i, (seed, threads)) in [(7, "1"), (7, "2"), (8, "2")].into_iter().enumerate() {
        let f = write(dir.path(), &format!("f{i}.toml"), &tiny_fresh(seed, 30));
        let out = dir.path().join(format!("run{i}"));
        run_ok(
            dir.path(),
            &["run", &f, "--out", out.to_str().unwrap(), "-q"],
            &[("RAYON_NUM_THREADS", threads)],
        );
        runs.push(out);
    }
    let traj = first_line(&runs[0].join("trajectory.csv"));
    assert_eq!(
        first_line(&runs[0].join("gd_trajectory.csv")),
        format!("step,{traj}")
    );
    let read = |p: &Path| read_bytes(&p.join("gd_trajectory.csv"));
    assert!(
        read(&runs[0]) == read(&runs[1]),
        "gd_trajectory.csv differs between 1 and 2 threads"
    );
    let events = read_text(&runs[0].join("events.csv"));
    assert!(
        events.contains("\"p_{1,2}@0.5\",gd,")
            && events.contains("linear interpolation between GD steps")
            && events.contains("stage_II_done,gd,"),
        "{events}"
    );
    let (a, b) = (
        p_columns(&runs[0].join("gd_trajectory.csv")),
        p_columns(&runs[2].join("gd_trajectory.csv")),
    );
    assert_eq!(a.len(), b.len());
    // the first row is the common initial point; later rows follow each seed's batches
    assert_eq!(a[0], b[0]);
    assert!(a[1..].iter().zip(&b[1..]).all(|(x, y)| x != y));
    // 3 stages x checkpoints(40, 9) rows + 2 stage-end rows
    let rows = read_text(&runs[0].join("gd_trajectory.csv"))
        .lines()
        .count();
    assert!(rows > 3 * 5 && rows <= 1 + 3 * 9 + 2, "{rows}");
    let m = manifest(&runs[0]);
    let gd = &m.jobs[0]["gd"];
    assert_eq!(gd["steps"], 120);
    assert_eq!(gd["data"]["kind"], "fresh");
    assert_eq!(gd["data"]["batch"], 30);
    assert_eq!(gd["c_norm_at_stage_ends"].as_array().unwrap().len(), 4);
}

/// Bad `[gih.gd]` input: exit 2, one message naming `gih.gd.<field>` and the accepted values,
/// nothing written.
#[test]
fn bad_gih_gd_input_exits_2_names_the_field_and_writes_nothing() {
    let gd = |body: &str| format!("{TINY}[gih.gd]\n{body}\n");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown data",
            gd("data = \"bogus\""),
            "gih.gd.data: unknown variant `bogus`, expected `fixed` or `fresh`",
        ),
        (
            "batch = 0",
            gd("data = \"fresh\"\nbatch = 0"),
            "gih.gd.batch: must be in 1..=1000000, got 0",
        ),
        (
            "batch too large",
            gd("data = \"fresh\"\nbatch = 1000001"),
            "gih.gd.batch: must be in 1..=1000000, got 1000001",
        ),
        (
            "fresh without a batch",
            gd("data = \"fresh\""),
            "gih.gd.batch: required with data = \"fresh\": the sequences drawn per step, in 1..=1000000",
        ),
        (
            "a batch with the fixed sample",
            gd("batch = 10"),
            "gih.gd.batch: only data = \"fresh\" takes a batch",
        ),
        (
            "samples = 1",
            gd("samples = 1"),
            "gih.gd.samples: must be in 2..=100000, got 1",
        ),
        (
            "unknown field",
            gd("bach = 3"),
            "gih.gd.bach: unknown field",
        ),
    ];
    assert_refused(&cases, None);
}

/// `[gih.transfer]` (Fig. 7's protocol): every trained model at every (α, L), in order, and
/// at the training (L, α) the loss of the trained flow on fresh sequences agrees with its loss
/// on the validation sample (an independent sample of the same law) within 4 standard errors.
#[test]
fn transfer_evaluates_the_trained_models_at_other_lengths() {
    let dir = tmp();
    let text = format!(
        "{}[gih.transfer]\nL = [20, 8, 60]\nalpha = [0.3, 1.0]\nn_sequences = 400\n",
        TINY.replace("n_sequences = 200", "n_sequences = 2000")
    );
    let f = write(dir.path(), "t.toml", &text);
    let out = dir.path().join("out");
    run_into(dir.path(), &f, &out, &[]);
    let csv = read_text(&out.join("transfer.csv"));
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("model,L,alpha,loss,stderr,n_sequences"));
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    // flow and full, 2 priors, 3 lengths; sorted by model, alpha, L
    assert_eq!(rows.len(), 12, "{csv}");
    let keys: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r[0].clone(), r[2].clone(), r[1].clone()))
        .collect();
    assert_eq!(keys[0], ("flow".into(), "0.3".into(), "8".into()));
    assert_eq!(keys[2], ("flow".into(), "0.3".into(), "60".into()));
    assert_eq!(keys[3], ("flow".into(), "1".into(), "8".into()));
    assert_eq!(keys[6], ("full".into(), "0.3".into(), "8".into()));
    for r in &rows {
        let (loss, se): (f64, f64) = (r[3].parse().unwrap(), r[4].parse().unwrap());
        assert!(loss.is_finite() && se > 0.0 && se < 0.1, "{r:?}");
        assert_eq!(r[5], "400");
    }
    let m = manifest(&out);
    let job = &m.jobs[0];
    let val = job["reduced"]["final_val_loss"].as_f64().unwrap();
    let at_train = &rows[1]; // flow, alpha 0.3, L 20: the training law
    let (loss, se): (f64, f64) = (at_train[3].parse().unwrap(), at_train[4].parse().unwrap());
    assert!(
        (loss - val).abs() < 4.0 * se,
        "transfer at the training law {loss} ± {se} vs validation loss {val}"
    );
    assert!(out.join("transfer.png").exists() && out.join("transfer.svg").exists());
}

/// `start = "uniform_last"` (the one-parent variant) is accepted and changes the data, hence the
/// trajectory; an unknown start names the accepted values.
#[test]
fn the_one_parent_variant_runs_and_changes_the_data() {
    let dir = tmp();
    let mut csv = Vec::new();
    for (i, start) in ["uniform", "uniform_last"].iter().enumerate() {
        let text = TINY
            .replace("pa = [-1, -2]", "pa = [-1]")
            .replace("seed = 7", &format!("seed = 7\nstart = \"{start}\""));
        let f = write(dir.path(), &format!("s{i}.toml"), &text);
        let out = dir.path().join(format!("o{i}"));
        run_into(dir.path(), &f, &out, &[]);
        csv.push(read_text(&out.join("trajectory.csv")));
    }
    assert_ne!(csv[0], csv[1], "the variant must change the sample");
    let text = TINY.replace("seed = 7", "seed = 7\nstart = \"last\"");
    let f = write(dir.path(), "bad.toml", &text);
    let r = ihdyn(dir.path(), &["run", &f], &[]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("system.start") && r.stderr.contains("uniform_last"),
        "{}",
        r.stderr
    );
}
