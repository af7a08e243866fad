//! `ihdyn merge`: join shard folders into exactly what the unsharded run writes.

use super::*;

/// Join shard folders into the outputs of the unsharded run.
/// The shards of one sweep, read and checked (nothing written yet).
pub struct Merged {
    pub scenario: Scenario,
    spec: super::Sweep,
    layout: Layout,
    done: Done,
    shards: Vec<Option<String>>,
}

/// Read and check the shard folders: one scenario, every point present and complete.
pub fn read_shards(dirs: &[std::path::PathBuf]) -> Result<Merged, Error> {
    let usage = |m: String| Error::Usage(m);
    let mut first: Option<(Value, String, String)> = None;
    let mut shards = Vec::new();
    for d in dirs {
        let path = d.join("manifest.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| usage(format!("merge: cannot read `{}`: {e}", path.display())))?;
        let m: Value = serde_json::from_str(&text).map_err(|e| {
            usage(format!(
                "merge: `{}` is not a manifest: {e}",
                path.display()
            ))
        })?;
        let scenario = m["scenario"].clone();
        let source = m["scenario_source"]
            .as_str()
            .unwrap_or("merged")
            .to_string();
        let stext = m["scenario_text"].as_str().unwrap_or_default().to_string();
        match &first {
            None => first = Some((scenario, source, stext)),
            Some((s, _, _)) if *s != scenario => {
                return Err(usage(format!(
                    "merge: `{}` belongs to another scenario than `{}`",
                    d.display(),
                    dirs[0].display()
                )));
            }
            _ => {}
        }
        shards.push(m["sweep_shard"].as_str().map(str::to_string));
    }
    let (scenario_json, source, stext) =
        first.ok_or_else(|| usage("merge: no folders given".into()))?;
    let name = scenario_json["name"].as_str().unwrap_or("merged");
    let scenario = crate::jobs::plan::parse_str(&stext, &source, name)?;
    let spec = scenario
        .sweep
        .clone()
        .ok_or_else(|| usage("merge: the scenario has no [sweep]".into()))?;
    let layout = Layout::new(&spec);
    let mut done = Done::new();
    for d in dirs {
        let path = OutputDir::new(d).file(POINTS_LOG);
        for (i, state) in read_points_log(&path, &layout, &spec)? {
            let rows = match state {
                PointState::Done(rows) => rows,
                PointState::Incomplete(why) => {
                    return Err(usage(format!(
                        "merge: `{}`: point {i} is incomplete ({why}); finish that shard with \
                         --resume first",
                        path.display()
                    )));
                }
                PointState::Conflict(why) => {
                    return Err(usage(format!("merge: `{}`: {why}", path.display())));
                }
            };
            if let Some(prev) = done.get(&i) {
                if *prev != rows {
                    return Err(usage(format!("merge: point {i} differs between shards")));
                }
                continue;
            }
            done.insert(i, rows);
        }
    }
    let missing: Vec<usize> = (0..spec.n_points)
        .filter(|i| !done.contains_key(i))
        .collect();
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().take(10).map(|i| i.to_string()).collect();
        return Err(usage(format!(
            "merge: {} of {} points are missing (first: {}); finish the shards (with --resume) first",
            missing.len(),
            spec.n_points,
            list.join(", ")
        )));
    }
    Ok(Merged {
        scenario,
        spec,
        layout,
        done,
        shards,
    })
}

/// Write the merged outputs (exactly those of the unsharded run): the console lines and the
/// manifest's job entry.
pub fn write_merged(
    m: &Merged,
    dirs: &[std::path::PathBuf],
    out: &OutputDir,
) -> Result<(Vec<String>, Value), Error> {
    let results = write_results(&m.scenario, &m.spec, &m.layout, &m.done, out)?;
    let entry = json!({
        "job": "sweep",
        "merged_from": dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>(),
        "shards": m.shards,
        "points_total": m.spec.n_points,
        "columns": m.layout.columns,
    });
    Ok((results.console, entry))
}
