//! `ihdyn`: reduced training dynamics of induction heads as ODEs, with the full models trained
//! alongside.
//!
//! Data flows one way: `scenario` → `experiment` → (`theory` | `model`) → `flow` → `report`.
//! `theory` and `flow` never import `experiment` or `report`; `report` never computes dynamics.

pub mod cli;
pub mod error;
pub mod flow;
pub mod interrupt;
pub mod jobs;
pub mod numerics;
pub mod report;
pub mod scenario;
pub mod systems;
pub mod train;

pub use cli::{Cli, run};
pub use error::Error;
