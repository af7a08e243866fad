//! A sweep point reports the same event times as `[solve]` on the same system: checked on the
//! first points of every shipped sweep scenario (issue 17: a sweep's stop rule once ended a
//! point before the real rate peak that `[solve]` found).

use super::plan;
use super::solve;
use crate::report::{Cell, OutputDir};
use crate::scenario::{RawSolve, validate_solve};
use crate::systems::plugin::Role;
use std::collections::BTreeMap;

fn events(out: &OutputDir) -> BTreeMap<String, f64> {
    let text = std::fs::read_to_string(out.file("events.csv")).expect("events.csv written");
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let (name, t) = l.rsplit_once(',')?;
            Some((name.to_string(), t.parse().ok()?))
        })
        .collect()
}

#[test]
fn sweep_points_and_solve_report_the_same_event_times() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let mut compared = BTreeMap::new();
    for path in files {
        let scenario = plan::load(&path).unwrap();
        let Some(sweep) = &scenario.sweep else {
            continue;
        };
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // A gih point is the reduced run of its [gih] job (`chen::job::point` and the job call
        // the same `compute`, through the stages), not a [solve]: nothing to compare here.
        if scenario.system.kind() == "gih" {
            continue;
        }
        for point in sweep.points.iter().take(2) {
            let s = &point.scenario;
            let rules = s.system.solve_rules();
            let raw: RawSolve = if rules.thresholds {
                toml::from_str(&format!("thresholds = {:?}", sweep.thresholds)).unwrap()
            } else {
                toml::from_str("").unwrap()
            };
            let spec = validate_solve(raw, rules).unwrap();
            let tmp = tempfile::tempdir().unwrap();
            let out = OutputDir::new(tmp.path());
            solve::run(s, &spec, &out).unwrap();
            let solved = events(&out);
            let columns = s.system.sweep_columns();
            let rows = s
                .system
                .sweep_point(&s.solver, &sweep.thresholds)
                .unwrap()
                .rows;
            for row in rows {
                assert_eq!(row.len(), columns.len(), "{name}: a row per column");
                let key = columns
                    .iter()
                    .zip(&row)
                    .find(|(c, _)| c.role == Role::Key)
                    .map(|(_, v)| v.to_text());
                for (c, v) in columns.iter().zip(&row) {
                    let Cell::Num(t) = *v else { continue };
                    if c.role != Role::Time && c.role != Role::Value {
                        continue;
                    }
                    let keyed = key.as_ref().map(|k| format!("{}@{k}", c.name));
                    let Some(want) = keyed
                        .and_then(|k| solved.get(&k))
                        .or_else(|| solved.get(&c.name))
                    else {
                        continue;
                    };
                    let rel = (t - want).abs() / want.abs().max(1e-300);
                    assert!(
                        rel <= 1e-9 || (t.is_nan() && want.is_nan()),
                        "{name}, {}: {} = {t} in the sweep, {want} in [solve]",
                        point.scenario.name,
                        c.name
                    );
                    *compared.entry(name.clone()).or_insert(0) += 1;
                }
            }
        }
    }
    // every shipped sweep scenario was compared on at least one event
    for sweep_file in [
        "musat19-sweep-uniform.toml",
        "musat19-sweep.toml",
        "musat3-sweep.toml",
        "rich-sweep-L.toml",
        "rich-sweep-sigma.toml",
    ] {
        assert!(
            compared.get(sweep_file).is_some_and(|&k| k > 0),
            "{sweep_file}: no event compared ({compared:?})"
        );
    }
}
