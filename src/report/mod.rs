//! Output: CSV tables, JSON documents, the run manifest and figures. Everything here writes
//! atomically (a temporary file in the same folder, then a rename), so a reader never sees a
//! half-written file. The report layer formats and draws; it never computes dynamics.

pub mod figure;
mod manifest;
pub mod progress;
mod table;

pub use manifest::{Manifest, git_revision};
pub use table::{Cell, Table, csv_bytes, csv_lines, fmt_f64, short};

use std::io::Write;
use std::path::{Path, PathBuf};

/// Errors while writing outputs (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write `{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot draw `{path}`: {message}")]
    Plot { path: PathBuf, message: String },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The folder a run writes into. Created on first use (never before validation passed).
#[derive(Debug, Clone)]
pub struct OutputDir {
    root: PathBuf,
}

impl OutputDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        OutputDir { root: root.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn ensure(&self) -> Result<(), ReportError> {
        std::fs::create_dir_all(&self.root).map_err(io_err(&self.root))
    }

    /// A temporary sibling of `name` whose extension is kept (plotters picks the image format
    /// from it).
    pub(crate) fn temp_path(&self, name: &str) -> PathBuf {
        self.root
            .join(format!(".{}.tmp-{}-{name}", name, std::process::id()))
    }

    /// Write `bytes` to `name` atomically.
    pub fn write_bytes(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, ReportError> {
        self.ensure()?;
        let tmp = self.temp_path(name);
        let target = self.file(name);
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &target)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(ReportError::Io {
                path: target,
                source: e,
            });
        }
        Ok(target)
    }

    pub fn write_csv(&self, name: &str, table: &Table) -> Result<PathBuf, ReportError> {
        let bytes = table.to_csv_bytes().map_err(io_err(&self.file(name)))?;
        self.write_bytes(name, &bytes)
    }

    pub fn write_json<T: serde::Serialize>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<PathBuf, ReportError> {
        let mut text = serde_json::to_string_pretty(value).map_err(|e| ReportError::Io {
            path: self.file(name),
            source: std::io::Error::other(e),
        })?;
        text.push('\n');
        self.write_bytes(name, text.as_bytes())
    }

    /// Render a figure to `<stem>.png` and `<stem>.svg`.
    pub fn write_figure(
        &self,
        stem: &str,
        fig: &figure::Figure,
    ) -> Result<Vec<PathBuf>, ReportError> {
        self.ensure()?;
        let mut written = Vec::new();
        for ext in ["png", "svg"] {
            let name = format!("{stem}.{ext}");
            let tmp = self.temp_path(&name);
            let target = self.file(&name);
            let drawn = figure::render(fig, &tmp)
                .and_then(|()| std::fs::rename(&tmp, &target).map_err(|e| e.to_string()));
            if let Err(message) = drawn {
                let _ = std::fs::remove_file(&tmp);
                return Err(ReportError::Plot {
                    path: target,
                    message,
                });
            }
            written.push(target);
        }
        Ok(written)
    }
}
