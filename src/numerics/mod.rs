//! The floor of the crate: kernels (exponentials, GEMM), the normal sampler, SIMD dispatch and
//! the statistics of fits. Nothing here knows about flows, systems or jobs.

pub(crate) mod expo;
pub mod gaussian;
pub(crate) mod gemm;
pub(crate) mod simd;
pub mod stats;
#[cfg(test)]
pub(crate) mod testing;
