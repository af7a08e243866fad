//! Full-parameter models with hand-written f64 backpropagation, their data samplers, and the
//! training loop. Model modules never import `experiment` or `report`.

pub mod data;
pub mod disentangled;
mod gemm;
mod simd;
pub mod subspace;
pub mod train;
