//! The `[standard]` job end to end (docs/guide-musat.md, "The standard transformer"): the
//! standard two-layer transformer trained through the binary on both Musat systems, its files
//! (progress table, figures, weight heatmaps), its events in the manifest, bad input, and the
//! shipped scenarios.

use crate::support::*;
use serde_json::Value;

/// N = 3 (query uniform), D = d_head = 12, N_E = 8, N_p = 7, B = 32, 300 GD steps: small enough
/// for a debug build.
fn small(kind: &str, loss: &str) -> String {
    format!(
        r#"name = "small"
[system]
kind = "{kind}"
n = 3
query = "uniform"
[standard]
d = 12
d_head = 12
vocab = 8
positions = 7
loss = "{loss}"
lr = 0.3
steps = 300
batch = 32
init_std = 0.2
seed = 2
checkpoint_every = 5
"#
    )
}

/// The job entry `standard` of a manifest.
fn standard_entry(manifest: &Value) -> &Value {
    manifest["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "standard")
        .expect("a standard job entry")
}

#[test]
fn standard_writes_progress_events_and_weight_figures_on_both_musat_systems() {
    for (kind, loss) in [("musat3", "mse"), ("musat19", "ce")] {
        let dir = tmp();
        let f = write(dir.path(), "small.toml", &small(kind, loss));
        let out = dir.path().join("out");
        let r = ihdyn(
            dir.path(),
            &["run", &f, "--out", out.to_str().unwrap(), "-q"],
            &[],
        );
        assert_eq!(r.code, 0, "{kind}: {}", r.stderr);
        let folder = out.join("standard");
        for stem in ["progress", "weights-start", "weights-mid", "weights-end"] {
            for ext in ["png", "svg"] {
                let file = folder.join(format!("{stem}.{ext}"));
                assert!(file.is_file(), "{kind}: missing {}", file.display());
            }
        }
        // progress.csv: the header, one row per checkpoint (every 5 of 300 steps and 0), finite
        let text = std::fs::read_to_string(folder.join("progress.csv")).unwrap();
        let mut lines = text.lines();
        let header = lines.next().unwrap();
        assert!(
            header.starts_with("step,t,loss,alpha3,beta2,gamma3"),
            "{header}"
        );
        let rows: Vec<Vec<f64>> = lines
            .map(|l| l.split(',').map(|c| c.parse::<f64>().unwrap()).collect())
            .collect();
        assert_eq!(rows.len(), 61, "{kind}");
        for row in &rows {
            assert!(row.iter().all(|v| v.is_finite()), "{kind}: {row:?}");
        }
        // t = lr * step / D
        for row in &rows {
            assert!((row[1] - 0.3 * row[0] / 12.0).abs() < 1e-12, "{row:?}");
        }
        assert_eq!(rows.last().unwrap()[0], 300.0);
        // the manifest: the job entry with its events, ordered by time, reached ones first
        let m = json(&out.join("manifest.json"));
        assert_eq!(m["status"], "complete");
        let job = standard_entry(&m);
        assert_eq!(job["folder"], "standard");
        assert_eq!(job["loss"], loss);
        let events = job["events"].as_array().unwrap();
        let names: Vec<&str> = events.iter().map(|e| e["name"].as_str().unwrap()).collect();
        let mut sorted_names = names.clone();
        sorted_names.sort();
        assert_eq!(
            sorted_names,
            ["T_alpha3", "T_beta2", "T_gamma3", "T_loss_half"],
            "{kind}"
        );
        let times: Vec<Option<f64>> = events.iter().map(|e| e["t"].as_f64()).collect();
        let reached: Vec<f64> = times.iter().map_while(|t| *t).collect();
        assert!(
            times[reached.len()..].iter().all(Option::is_none),
            "{kind}: unreached events come last: {times:?}"
        );
        assert!(
            reached.windows(2).all(|w| w[0] <= w[1]),
            "{kind}: events ordered by time: {times:?}"
        );
        let t_end = rows.last().unwrap()[1];
        for (e, t) in events.iter().zip(&times) {
            if let Some(t) = t {
                assert!((0.0..=t_end).contains(t), "{e}");
                let step = e["step"].as_f64().unwrap();
                assert!((step - t * 12.0 / 0.3).abs() < 1e-9 * step.max(1.0), "{e}");
            }
        }
        // the scenario's section is echoed in the manifest, and the files of the subfolder are
        // listed (relative to the run's folder) like every other output
        assert_eq!(m["scenario"]["standard"]["d"], 12, "{}", m["scenario"]);
        let files: Vec<&str> = m["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        for f in [
            "standard/progress.csv",
            "standard/progress.png",
            "standard/weights-end.svg",
        ] {
            assert!(files.contains(&f), "{kind}: {f} not in {files:?}");
        }
    }
}

/// The same scenario writes the same `progress.csv` and manifest events on 1 and 2 threads.
#[test]
fn standard_progress_is_byte_identical_on_one_and_two_threads() {
    let dir = tmp();
    let f = write(dir.path(), "small.toml", &small("musat3", "mse"));
    let outs = assert_same_on_1_and_2_threads(dir.path(), &f, &["standard/progress.csv"]);
    let [a, b] = outs.map(|o| standard_entry(&json(&o.join("manifest.json")))["events"].clone());
    assert_eq!(a, b);
}

#[test]
fn standard_bad_input_exits_2_naming_the_field_and_writes_nothing() {
    let sys = "[system]\nkind = \"musat3\"\nn = 4\n";
    let base = "lr = 0.1\nsteps = 10\n";
    let case = |extra: &str| format!("{sys}[standard]\n{base}{extra}");
    assert_refused(
        &[
            (
                "head dim too small",
                case("d_head = 7\n"),
                "standard.d_head: must be in 8..=4096 (>= 2N = 8",
            ),
            (
                "vocabulary too small",
                case("vocab = 7\n"),
                "standard.vocab: must be in 8..=65536 (>= 2N = 8",
            ),
            (
                "positions too small",
                case("positions = 8\n"),
                "standard.positions: must be in 9..=65536 (>= 2N + 1 = 9",
            ),
            (
                "unknown loss",
                case("loss = \"hinge\"\n"),
                "standard.loss: unknown variant `hinge`, expected `mse` or `ce`",
            ),
            (
                "zero lr",
                format!("{sys}[standard]\nlr = 0\nsteps = 10\n"),
                "standard.lr: must be > 0 and finite",
            ),
            (
                "negative lr",
                format!("{sys}[standard]\nlr = -0.5\nsteps = 10\n"),
                "standard.lr: must be > 0 and finite",
            ),
            (
                "zero steps",
                format!("{sys}[standard]\nlr = 0.1\nsteps = 0\n"),
                "standard.steps: must be in 1..=",
            ),
            (
                "negative batch",
                case("batch = -4\n"),
                "standard.batch: must be in 1..=",
            ),
            (
                "unknown field",
                case("width = 3\n"),
                "standard.width: unknown field `width`",
            ),
            (
                "unknown optimizer",
                case("optimizer = \"sgd\"\n"),
                "standard.optimizer: unknown variant `sgd`, expected `gd` or `adam`",
            ),
            (
                "standard on rich",
                "[system]\nkind = \"rich\"\nL = 16\n[standard]\nlr = 0.1\nsteps = 10\n".to_string(),
                "standard: the [standard] section needs [system] kind = \"musat3\" or \"musat19\"",
            ),
        ],
        Some(&small("musat3", "mse")),
    );
}

/// A `[standard]` beyond the memory budget is refused at validation, naming the section and the
/// flag, and nothing is written.
#[test]
fn a_standard_run_beyond_the_memory_budget_is_refused() {
    let dir = tmp();
    let f = write(
        dir.path(),
        "big.toml",
        "name = \"big\"\n[system]\nkind = \"musat3\"\nn = 4\n[standard]\nlr = 0.1\nsteps = 2\n\
         d = 4096\nbatch = 1048576\n",
    );
    let r = ihdyn(dir.path(), &["run", &f], &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("[standard]") && r.stderr.contains("--max-memory"),
        "{}",
        r.stderr
    );
    assert!(!dir.path().join("output").exists());
}

#[test]
fn the_shipped_standard_scenarios_validate() {
    for name in ["musat-standard.toml", "musat-standard-ce.toml"] {
        let path = repo().join("scenarios").join(name);
        let dir = tmp();
        let r = ihdyn(dir.path(), &["validate", path.to_str().unwrap()], &[]);
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        assert!(r.stdout.contains("standard"), "{name}: {}", r.stdout);
        assert!(!dir.path().join("output").exists());
    }
}

/// The shipped MSE scenario end to end (about 10 s in release; skipped in debug builds, where
/// it takes minutes): every event is reached, γ̃₃ first.
#[test]
#[cfg_attr(debug_assertions, ignore = "release only: about 10 s in release")]
fn the_shipped_mse_scenario_runs_and_gamma3_emerges_first() {
    let dir = tmp();
    let path = repo().join("scenarios/musat-standard.toml");
    let out = dir.path().join("out");
    let r = ihdyn(
        dir.path(),
        &[
            "run",
            path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "-q",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let m = json(&out.join("manifest.json"));
    let job = standard_entry(&m);
    let events = job["events"].as_array().unwrap();
    assert!(events.iter().all(|e| e["t"].is_f64()), "{events:?}");
    assert_eq!(events[0]["name"], "T_gamma3", "{events:?}");
    assert!(job["final"]["loss"].as_f64().unwrap() < 0.05, "{job}");
}
