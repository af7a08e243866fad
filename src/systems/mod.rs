//! The reduced systems and the models trained alongside them, one folder per paper.

pub mod chen;
pub mod musat;
pub mod wang;
