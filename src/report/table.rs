//! A small column table written as CSV. Floats use the shortest representation that reads back
//! to the same f64 (plain decimals for 1e-4 ≤ |x| < 1e15, exponent form otherwise), so output
//! is byte-stable and loads losslessly in pandas; a missing value is an empty cell.

/// One CSV cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Num(f64),
    Int(i64),
    Text(String),
    Empty,
}

impl From<f64> for Cell {
    fn from(v: f64) -> Self {
        Cell::Num(v)
    }
}
impl From<Option<f64>> for Cell {
    fn from(v: Option<f64>) -> Self {
        v.map_or(Cell::Empty, Cell::Num)
    }
}
impl From<usize> for Cell {
    fn from(v: usize) -> Self {
        Cell::Int(v as i64)
    }
}
impl From<&str> for Cell {
    fn from(v: &str) -> Self {
        Cell::Text(v.to_string())
    }
}
impl From<String> for Cell {
    fn from(v: String) -> Self {
        Cell::Text(v)
    }
}

/// Shortest round-trip text of an f64 (see the module doc).
pub fn fmt_f64(x: f64) -> String {
    if x == 0.0 || !x.is_finite() || (1e-4..1e15).contains(&x.abs()) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

/// Four significant digits, for legends and the terminal.
pub fn short(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if (1e-3..1e5).contains(&v.abs()) {
        let digits = (3 - v.abs().log10().floor() as i32).max(0) as usize;
        format!("{v:.digits$}")
    } else {
        format!("{v:.3e}")
    }
}

impl Cell {
    /// The CSV text of this cell.
    pub fn to_text(&self) -> String {
        match self {
            Cell::Num(v) => fmt_f64(*v),
            Cell::Int(v) => v.to_string(),
            Cell::Text(s) => s.clone(),
            Cell::Empty => String::new(),
        }
    }
}

/// CSV bytes of a header and rows of already formatted cells.
pub fn csv_bytes<S: AsRef<[u8]>>(header: &[S], rows: &[Vec<String>]) -> std::io::Result<Vec<u8>> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    w.write_record(header)?;
    for row in rows {
        w.write_record(row)?;
    }
    w.into_inner().map_err(|e| e.into_error())
}

/// CSV bytes of rows without a header (rows may differ in length).
pub fn csv_lines(rows: &[Vec<String>]) -> std::io::Result<Vec<u8>> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .flexible(true)
        .from_writer(Vec::new());
    for row in rows {
        w.write_record(row)?;
    }
    w.into_inner().map_err(|e| e.into_error())
}

#[derive(Debug, Clone, Default)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.header.len());
        self.rows.push(row);
    }

    pub fn to_csv_bytes(&self) -> std::io::Result<Vec<u8>> {
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(Cell::to_text).collect())
            .collect();
        csv_bytes(&self.header, &rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_round_trip_and_empty_cells_stay_empty() {
        for &x in &[0.1, 1.0 / 3.0, 1e-20, 123456.789, 2.5e17, -7e-5, 0.0, 1e-4] {
            let s = fmt_f64(x);
            assert_eq!(s.parse::<f64>().unwrap(), x, "{s}");
        }
        assert_eq!(fmt_f64(1e-20), "1e-20");
        assert_eq!(fmt_f64(0.25), "0.25");
        let mut t = Table::new(["a", "b", "subset"]);
        t.push(vec![
            Cell::Num(1.5),
            Cell::Empty,
            Cell::Text("{1,2}".into()),
        ]);
        let text = String::from_utf8(t.to_csv_bytes().unwrap()).unwrap();
        assert_eq!(text, "a,b,subset\n1.5,,\"{1,2}\"\n");
    }
}
