//! `sweep.points.csv`: the log every finished point is appended to, read back and verified by
//! `--resume` and `merge`.
//!
//! A point counts as done only when **all** of its rows are present and well-formed: as many
//! rows as the system reports per point ([`crate::systems::System::sweep_row_keys`]), each with
//! the point's swept values in its parameter columns, the expected key (e.g. the threshold) in
//! its key column, a finite number or nothing in every number column. Rows appended twice
//! (identical) count once; two different rows for the same key are a conflict. What the log
//! says about each point is a [`PointState`]; `--resume` re-runs every point that is not
//! [`PointState::Done`] and refuses a conflict, `merge` refuses anything but `Done`.
//!
//! Damage to the file itself (a header that is not this sweep's, a line with the wrong number
//! of cells, a point index that is not a number or not a point of this run, bytes that are not
//! text) is refused with the line number: it is not a log this sweep wrote.

use super::*;

/// What the log says about one point.
#[derive(Debug, Clone, PartialEq)]
pub enum PointState {
    /// Every row present and well-formed (as CSV cells, without the index).
    Done(Vec<Vec<String>>),
    /// Rows missing or malformed: the point must be evaluated again.
    Incomplete(String),
    /// Two different rows for the same key: the log contradicts itself.
    Conflict(String),
}

/// The points of a log, by index (points absent from the log are absent here).
pub type Logged = BTreeMap<usize, PointState>;

/// Read and verify the points log of `spec` in `path` (no file: nothing logged). A last line
/// without its newline (a write cut short) is dropped, so its point is incomplete.
pub fn read_points_log(
    path: &std::path::Path,
    layout: &Layout,
    spec: &Sweep,
) -> Result<Logged, Error> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Logged::new()),
        Err(e) => {
            return Err(Error::Usage(format!(
                "cannot read `{}`: {e}",
                path.display()
            )));
        }
    };
    let corrupt = |why: String| Error::Usage(format!("`{}`: {why}", path.display()));
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        corrupt(format!(
            "not a points log this sweep wrote: it is not text (invalid UTF-8 at byte {})",
            e.valid_up_to()
        ))
    })?;
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    let header = layout.header();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(complete.as_bytes());
    let mut rows: BTreeMap<usize, Vec<Vec<String>>> = BTreeMap::new();
    for (i, rec) in reader.records().enumerate() {
        let line = i + 1;
        let rec = rec.map_err(|e| corrupt(format!("line {line}: {e}")))?;
        let cells: Vec<String> = rec.iter().map(str::to_string).collect();
        if i == 0 {
            let expected: Vec<&str> = std::iter::once("point")
                .chain(header.iter().map(String::as_str))
                .collect();
            if cells != expected {
                return Err(corrupt(format!(
                    "its header `{}` is not this sweep's `{}`",
                    short_text(&cells.join(",")),
                    expected.join(",")
                )));
            }
            continue;
        }
        if cells.len() != header.len() + 1 {
            return Err(corrupt(format!(
                "line {line} has {} cells, expected {}",
                cells.len(),
                header.len() + 1
            )));
        }
        let index: usize = cells[0].parse().map_err(|_| {
            corrupt(format!(
                "line {line}: the point index {:?} is not a number",
                short_text(&cells[0])
            ))
        })?;
        if index >= spec.n_points {
            return Err(corrupt(format!(
                "line {line}: point {index} is not a point of this sweep (0..{})",
                spec.n_points
            )));
        }
        rows.entry(index).or_default().push(cells[1..].to_vec());
    }
    Ok(rows
        .into_iter()
        .map(|(i, r)| (i, verify_point(layout, spec, i, r)))
        .collect())
}

/// At most 60 characters of a cell or line, for messages.
fn short_text(s: &str) -> String {
    if s.chars().count() <= 60 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(60).collect::<String>())
    }
}

/// The state of point `i` from its logged rows (in log order).
pub fn verify_point(layout: &Layout, spec: &Sweep, i: usize, rows: Vec<Vec<String>>) -> PointState {
    let point = &spec.points[i];
    let keys = point.scenario.system.sweep_row_keys(&spec.thresholds);
    // identical rows appended twice count once
    let mut distinct: Vec<Vec<String>> = Vec::with_capacity(rows.len());
    for r in rows {
        if !distinct.contains(&r) {
            distinct.push(r);
        }
    }
    let key_col = layout.columns.iter().position(|c| c.role == Role::Key);
    for (a, ra) in distinct.iter().enumerate() {
        for rb in &distinct[a + 1..] {
            let same_key = key_col.is_none_or(|k| ra[k] == rb[k]);
            if same_key {
                return PointState::Conflict(format!(
                    "point {i} has two different rows{}",
                    key_col
                        .map(|k| format!(" for {} = {}", layout.columns[k].name, ra[k]))
                        .unwrap_or_default()
                ));
            }
        }
    }
    if distinct.len() > keys.len() {
        return PointState::Conflict(format!(
            "point {i} has {} rows, a point of this sweep has {}",
            distinct.len(),
            keys.len()
        ));
    }
    if distinct.len() < keys.len() {
        return PointState::Incomplete(format!(
            "{} of its {} rows are logged",
            distinct.len(),
            keys.len()
        ));
    }
    // rows in key order (the order the point writes them)
    let mut ordered = Vec::with_capacity(keys.len());
    for (j, key) in keys.iter().enumerate() {
        let row = match (key, key_col) {
            (Some(k), Some(c)) => match distinct.iter().find(|r| &r[c] == k) {
                Some(r) => r.clone(),
                None => {
                    return PointState::Incomplete(format!(
                        "no row for {} = {k}",
                        layout.columns[c].name
                    ));
                }
            },
            _ => distinct[j].clone(),
        };
        if let Err(why) = check_row(layout, spec, i, &row) {
            return PointState::Incomplete(why);
        }
        ordered.push(row);
    }
    PointState::Done(ordered)
}

/// One row's cells against the columns: parameters equal to the point's swept values, keys
/// present, numbers finite or empty.
fn check_row(layout: &Layout, spec: &Sweep, i: usize, row: &[String]) -> Result<(), String> {
    let point = &spec.points[i];
    for (c, col) in layout.columns.iter().enumerate() {
        let cell = &row[c];
        let number = || -> Result<Option<f64>, String> {
            if cell.is_empty() {
                return Ok(None);
            }
            match cell.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(Some(v)),
                _ => Err(format!(
                    "column {} holds {:?}, not a finite number",
                    col.name,
                    short_text(cell)
                )),
            }
        };
        match &col.role {
            Role::Param { field } => {
                let v = number()?
                    .ok_or_else(|| format!("column {} (a parameter) is empty", col.name))?;
                if let Some(k) = spec.fields.iter().position(|f| &f.path == field) {
                    let want = point.values[k].as_f64();
                    if v != want {
                        return Err(format!(
                            "column {} holds {v}, but point {i} has {} = {want}",
                            col.name, field
                        ));
                    }
                }
            }
            Role::Key => {
                if cell.is_empty() {
                    return Err(format!("column {} (a key) is empty", col.name));
                }
            }
            Role::Time | Role::Value => {
                number()?;
            }
        }
    }
    Ok(())
}

/// The bytes of a points log holding `done`'s rows in point order.
pub(super) fn log_bytes(header: &[String], done: &Done) -> Vec<u8> {
    let mut h = vec!["point".to_string()];
    h.extend(header.iter().cloned());
    let rows: Vec<Vec<String>> = done
        .iter()
        .flat_map(|(i, rows)| {
            rows.iter().map(move |r| {
                let mut full = vec![i.to_string()];
                full.extend(r.iter().cloned());
                full
            })
        })
        .collect();
    csv_bytes(&h, &rows).expect("writing to memory")
}
