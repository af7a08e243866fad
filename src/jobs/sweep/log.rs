//! `sweep.points.csv`: the log every finished point is appended to, read back by `--resume`
//! and `merge`.

use super::*;

/// Read `sweep.points.csv`; a last line without its newline (a killed write) is dropped.
pub fn read_points_log(out: &OutputDir, header: &[String]) -> Result<Done, Error> {
    let path = out.file(POINTS_LOG);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Done::new()),
        Err(e) => return Err(crate::report::ReportError::Io { path, source: e }.into()),
    };
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    let corrupt = |why: String| Error::Usage(format!("{}: {why}", path.display()));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(complete.as_bytes());
    let mut done = Done::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.map_err(|e| corrupt(e.to_string()))?;
        let cells: Vec<String> = rec.iter().map(str::to_string).collect();
        if i == 0 {
            let expected: Vec<&str> = std::iter::once("point")
                .chain(header.iter().map(String::as_str))
                .collect();
            if cells != expected {
                return Err(corrupt(format!(
                    "its header `{}` is not this sweep's `{}`",
                    cells.join(","),
                    expected.join(",")
                )));
            }
            continue;
        }
        if cells.len() != header.len() + 1 {
            return Err(corrupt(format!(
                "line {} has {} cells, expected {}",
                i + 1,
                cells.len(),
                header.len() + 1
            )));
        }
        let index: usize = cells[0]
            .parse()
            .map_err(|_| corrupt(format!("line {}: bad point index {:?}", i + 1, cells[0])))?;
        done.entry(index).or_default().push(cells[1..].to_vec());
    }
    Ok(done)
}

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
