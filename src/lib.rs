//! `ihdyn`: reduced training dynamics of induction heads as ODEs, with the full models trained
//! alongside.
//!
//! Data flows one way: `scenario` → `experiment` → (`theory` | `model`) → `flow` → `report`.
//! `theory` and `flow` never import `experiment` or `report`; `report` never computes dynamics.

pub mod cli;
pub mod error;
pub mod experiment;
pub mod flow;
pub mod model;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod theory;

pub use cli::{Cli, run};
pub use error::Error;
