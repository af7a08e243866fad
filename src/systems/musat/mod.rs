//! Musat et al.: the minimal ICL task, the 19-dim invariant subspace and the 3-parameter
//! emergence dynamics (docs/theory/musat.md), with the full disentangled transformer.

pub mod compare;
pub mod data;
pub mod disentangled;
pub mod musat19;
pub mod musat3;
pub mod scenario19;
pub mod scenario3;
pub mod scenario_standard;
pub mod standard;
pub mod standard_job;
pub mod subspace;
pub mod system;

pub use system::{MUSAT3, MUSAT19};
