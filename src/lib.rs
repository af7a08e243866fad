//! `ihdyn`: reduced training dynamics of induction heads as ODEs, with the full models trained
//! alongside.
//!
//! Imports only go down: `cli` → `jobs` → `systems` (one folder per paper, plugged in through
//! the `System` trait) → `error` → (`train`, `flow`) → (`scenario`, `report`, `interrupt`) →
//! `numerics`. ARCHITECTURE.md says what each folder owns; `tests/it/architecture.rs` checks
//! the order and the absence of import circles on every `cargo test`.

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
