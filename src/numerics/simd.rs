//! Run-time CPU feature detection for the kernels compiled twice (plain and AVX2).

/// Whether the CPU supports AVX2 (cached by the standard library).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}
