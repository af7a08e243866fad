//! The crate's error type: one variant per layer, joined with `#[from]`. Only `main` turns an
//! error into a message and an exit code.

use crate::flow::FlowError;
use crate::report::ReportError;
use crate::scenario::ScenarioError;
use crate::train::TrainError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad scenario file or field (exit code 2).
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// A bad combination of command-line flags (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The dynamics failed: divergence, step budget (exit code 1).
    #[error(transparent)]
    Flow(#[from] FlowError),
    /// One point of a sweep failed (the point's index and values, then the error).
    #[error("sweep point {point}: {source}")]
    SweepPoint {
        point: String,
        source: Box<FlowError>,
    },
    /// A system's own computation failed (e.g. the χ² mutual information; exit code 1).
    #[error(transparent)]
    System(Box<dyn std::error::Error + Send + Sync>),
    /// Writing outputs failed (exit code 1).
    #[error(transparent)]
    Report(#[from] ReportError),
    /// Training a model alongside a flow failed (divergence; exit code 1).
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The run was interrupted (Ctrl-C, SIGTERM) and wrote what it had computed (exit code 130).
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// A job stopped early but wrote what it had; `manifest` is its manifest entry, and the run
    /// is marked `partial` (exit code 1).
    #[error("{source}")]
    Partial {
        manifest: Box<serde_json::Value>,
        source: Box<Error>,
    },
}

impl Error {
    /// 2 for bad input (scenario, flags, missing file), 1 for a failure while running.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Scenario(_) | Error::Usage(_) => 2,
            Error::Interrupted(_) => 130,
            _ => 1,
        }
    }
}
