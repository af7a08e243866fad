//! Output: CSV tables, JSON documents, the run manifest and figures. Everything here writes
//! atomically (a temporary file in the same folder, then a rename), so a reader never sees a
//! half-written file. The report layer formats and draws; it never computes dynamics.

pub mod figure;
mod manifest;
pub mod progress;
mod table;

pub use manifest::{Manifest, git_revision};
pub use table::{Cell, Table, csv_bytes, csv_lines, fmt_f64, short};

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    #[error(
        "`{path}` is being written by another ihdyn run (it holds `{path}/.ihdyn.lock`); wait \
         for it to finish or choose another --out"
    )]
    Locked { path: PathBuf },
}

/// Whether `path` still names the open `file` (same device and inode).
#[cfg(unix)]
fn same_file(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &std::fs::File, path: &Path) -> bool {
    path.exists()
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The folder a run writes into. Created on first use (never before validation passed).
/// Remembers the names it wrote (shared between clones), so that the manifest can list them
/// and the next run can remove what it does not rewrite.
#[derive(Debug, Clone)]
pub struct OutputDir {
    root: PathBuf,
    written: Arc<Mutex<BTreeSet<String>>>,
    /// The path of `root` inside the run's folder, with a trailing `/` (empty for the run's
    /// folder itself): names are recorded relative to the run's folder.
    prefix: String,
}

/// The lock file that keeps two runs from writing one folder at once.
pub const LOCK_FILE: &str = ".ihdyn.lock";

/// An exclusive lock on an output folder, released (and its file removed) on drop.
#[derive(Debug)]
pub struct OutputLock {
    file: std::fs::File,
    path: PathBuf,
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Remove the file while holding the lock: a run that opened it meanwhile finds, after
        // locking, that the path no longer names its file, and retries (see `OutputDir::lock`).
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

impl OutputDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        OutputDir {
            root: root.into(),
            written: Arc::default(),
            prefix: String::new(),
        }
    }

    /// The subfolder `name` (one path component), created on first write; what it writes is
    /// recorded with the run's folder as `name/<file>`, so the manifest lists it and the next
    /// run removes it if not rewritten.
    pub fn subdir(&self, name: &str) -> Self {
        debug_assert!(!name.is_empty() && !name.contains(['/', '\\']));
        OutputDir {
            root: self.root.join(name),
            written: Arc::clone(&self.written),
            prefix: format!("{}{name}/", self.prefix),
        }
    }

    /// Note `name` as written by this run (done by every `write_*`).
    pub fn record(&self, name: &str) {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(format!("{}{name}", self.prefix));
    }

    /// The names written so far, sorted.
    pub fn written(&self) -> Vec<String> {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Take the folder's lock (creating the folder): refused while another run holds it.
    pub fn lock(&self) -> Result<OutputLock, ReportError> {
        self.ensure()?;
        let path = self.file(LOCK_FILE);
        for _ in 0..8 {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(ReportError::Locked {
                        path: self.root.clone(),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
            }
            if same_file(&file, &path) {
                return Ok(OutputLock { file, path });
            }
            // The previous holder removed the file between our open and our lock: retry.
        }
        Err(ReportError::Locked {
            path: self.root.clone(),
        })
    }

    /// Remove the files of `previous` (a former manifest's list) this run did not write. Only
    /// plain files named by a relative path inside the folder are touched: never a folder, a
    /// symbolic link's target, or anything the list does not name. Returns the names removed.
    pub fn remove_stale(&self, previous: &[String]) -> Vec<String> {
        let written = self.written();
        let mut removed = Vec::new();
        for name in previous {
            let rel = Path::new(name);
            let inside = !name.is_empty()
                && rel
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !inside || written.contains(name) || name == "manifest.json" || name == LOCK_FILE {
                continue;
            }
            let path = self.root.join(rel);
            let is_file = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file());
            if is_file && std::fs::remove_file(&path).is_ok() {
                removed.push(name.clone());
            }
        }
        removed
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
        self.record(name);
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
            self.record(&name);
            written.push(target);
        }
        Ok(written)
    }
}
