//! Wang et al.: the lazy-to-rich transition on a mixed 4-gram / in-context 2-gram target
//! (docs/theory/wang.md).

pub mod full;
pub mod job;
pub mod reduced;
pub mod scenario;
pub mod sgd;
pub mod system;
pub mod train;

pub use system::RICH;
