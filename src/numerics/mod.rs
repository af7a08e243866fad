//! The floor of the crate: kernels (exponentials, dot products, softmaxes, GEMM), the normal
//! samplers, SIMD dispatch and the statistics of fits. Nothing here knows about flows, systems
//! or jobs, and nothing here imports from the rest of the crate.

pub(crate) mod expo;
pub(crate) mod gemm;
pub mod kernels;
pub mod normal;
pub(crate) mod simd;
pub mod stats;
#[cfg(test)]
pub(crate) mod testing;
