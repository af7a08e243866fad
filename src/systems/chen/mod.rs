//! Chen et al.: the generalized induction head on n-gram Markov data (docs/theory/chen.md).

pub mod common;
pub mod events;
pub mod figures;
pub mod job;
pub mod markov;
pub mod mi;
pub mod reduced;
pub mod runs;
pub mod scenario;
pub mod setup;
pub mod system;
pub mod transfer;
pub mod transformer;

pub use system::GIH;
