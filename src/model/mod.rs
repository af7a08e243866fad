//! Full-parameter models with hand-written f64 backpropagation, their data samplers, and the
//! training loops. Model modules never import `experiment` or `report`.

pub mod data;
pub mod disentangled;
pub(crate) mod expo;
pub mod gaussian;
mod gemm;
pub mod gih_common;
pub mod gih_transformer;
pub mod markov;
pub mod rich_full;
pub mod rich_sgd;
pub(crate) mod simd;
pub mod subspace;
pub mod train;
