//! The run manifest: everything needed to reproduce a figure (scenario echo, version, git
//! revision, seeds, thread count, wall time, solver statistics, files written).

use serde::Serialize;

/// Git revision the binary was built from (set by build.rs; None outside a git checkout).
pub fn git_revision() -> Option<&'static str> {
    option_env!("IHDYN_GIT_REV").filter(|s| !s.is_empty())
}

#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub tool: &'static str,
    pub version: &'static str,
    pub git_revision: Option<&'static str>,
    /// `running` while the jobs run; then `complete`, `partial` (a sweep stopped by
    /// `--max-points`, finish it with `--resume`; or a compare run whose GD diverged, see
    /// `error`), or `failed` (see `error`).
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub command_line: Vec<String>,
    pub scenario_source: Option<String>,
    /// The validated scenario with every default filled in.
    pub scenario: serde_json::Value,
    /// The scenario file as written, when it came from a file.
    pub scenario_text: Option<String>,
    /// `i/n` for a sharded sweep (`--shard`).
    pub sweep_shard: Option<String>,
    pub threads: usize,
    pub started_unix_seconds: u64,
    pub wall_seconds: f64,
    /// One entry per job (solve, sweep, ...): settings, solver statistics, files.
    pub jobs: Vec<serde_json::Value>,
    /// Every file of the folder this run wrote (relative names, sorted). While the run is
    /// `running`, also the files the previous run listed (they may still be there). The next
    /// run into the folder removes the listed files it does not rewrite, and nothing else.
    pub files: Vec<String>,
}
