//! e^x for x ≤ 0, written out so that a slice of them vectorizes: the softmax weights of the
//! reduced flows (max-shifted scores, all ≤ 0) are its only use.
//!
//! libm's `exp` is a call per element; this is the textbook reduction x = k ln 2 + r with
//! |r| ≤ ln 2 / 2 (Cody–Waite, fdlibm's split of ln 2 so that k · ln2_hi is exact), a degree-13
//! Taylor polynomial for e^r (truncation below 5e-18 relative; Estrin's scheme) and the scaling by 2^k built from
//! the exponent bits. Every operation is a plain IEEE add, multiply or bit operation (no fused
//! multiply-add, no table), so the result is the same bits on every x86-64 CPU whether the loop
//! is compiled for SSE2 or AVX2, and on any other target. Accuracy: within 2 ulp of the correctly
//! rounded e^x on the normal range and exact handling of the edges (tested against `f64::exp`):
//! e^0 = 1 exactly, results below the smallest subnormal are 0, −∞ gives 0 and NaN stays NaN.

/// 1.5 · 2^52: adding it rounds a |v| < 2^51 to an integer held in the low mantissa bits.
const MAGIC: f64 = 6_755_399_441_055_744.0;
const LOG2E: f64 = std::f64::consts::LOG2_E;
/// ln 2 split as in fdlibm (6.93147180369123816490e-01 and 1.90821492927058770002e-10): the
/// high part has 32 trailing zero bits.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
/// Below this e^x is 0 in f64 (e^−745.14 is half the smallest subnormal).
const LOWEST: f64 = -746.0;
/// 1/n! for n = 0..=13.
const C: [f64; 14] = [
    1.0,
    1.0,
    0.5,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5_040.0,
    1.0 / 40_320.0,
    1.0 / 362_880.0,
    1.0 / 3_628_800.0,
    1.0 / 39_916_800.0,
    1.0 / 479_001_600.0,
    1.0 / 6_227_020_800.0,
];

/// e^x for x ≤ 0 (NaN stays NaN; a positive x is outside the contract).
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f64) -> f64 {
    // A select, not `max` (which would turn NaN into LOWEST).
    let x = if x < LOWEST { LOWEST } else { x };
    let t = x * LOG2E + MAGIC;
    let k = t - MAGIC;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // Estrin's scheme: a dependency chain of depth 4 instead of Horner's 13 (the loop over a
    // slice is bound by latency, not by the number of operations).
    let r2 = r * r;
    let r4 = r2 * r2;
    let r8 = r4 * r4;
    let q = |i: usize| C[i] + C[i + 1] * r;
    let s0 = q(0) + q(2) * r2;
    let s1 = q(4) + q(6) * r2;
    let s2 = q(8) + q(10) * r2;
    let s3 = q(12);
    let p = (s0 + s1 * r4) + (s2 + s3 * r4) * r8;
    // 2^(k + 60) is a normal number for every k ≥ −1077; the final · 2^−60 rounds once into the
    // subnormal range when e^x lies there.
    let ki = (t.to_bits() as i64).wrapping_sub(MAGIC.to_bits() as i64);
    let scale = f64::from_bits(((ki + 1023 + 60) as u64) << 52);
    p * scale * f64::from_bits((1023 - 60) << 52)
}

/// v ← e^v for every element (all ≤ 0 or NaN), in a loop the compiler vectorizes.
#[inline(always)]
pub(crate) fn exp_nonpositive_in_place(v: &mut [f64]) {
    for x in v.iter_mut() {
        *x = exp_nonpositive(*x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Distance in units in the last place (both finite and ≥ 0).
    fn ulps(a: f64, b: f64) -> u64 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
    }

    #[test]
    fn within_two_ulp_of_libm_over_the_whole_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut worst = 0;
        let mut xs: Vec<f64> = (0..200_000)
            .map(|i| match i % 4 {
                0 => rng.random_range(-1.0..=0.0),
                1 => rng.random_range(-40.0..=0.0),
                2 => rng.random_range(-708.0..=0.0),
                _ => -(10f64.powf(rng.random_range(-20.0..2.8))),
            })
            .collect();
        // reduction boundaries: ±ln2/2 around multiples of ln 2, and the ends of the range
        for k in 0..1075 {
            let c = -(k as f64) * std::f64::consts::LN_2;
            for d in [-0.5, -0.499_999_999, 0.0, 0.499_999_999] {
                let x = c + d * std::f64::consts::LN_2;
                if x <= 0.0 {
                    xs.push(x);
                }
            }
        }
        xs.extend([
            0.0,
            -0.0,
            -1e-300,
            -f64::MIN_POSITIVE,
            -5e-324,
            -708.39,
            -709.0,
        ]);
        let mut got = xs.clone();
        exp_nonpositive_in_place(&mut got);
        for (&x, &g) in xs.iter().zip(&got) {
            let want = x.exp();
            assert_eq!(g, exp_nonpositive(x), "slice and scalar differ at {x}");
            if want >= f64::MIN_POSITIVE {
                let u = ulps(g, want);
                worst = worst.max(u);
                assert!(u <= 2, "e^{x}: {g:e} vs {want:e} ({u} ulp)");
            } else {
                // subnormal results: one rounding, so within one subnormal step
                assert!((g - want).abs() <= 5e-324, "e^{x}: {g:e} vs {want:e}");
            }
        }
        // not trivially exact either: the test would see a wrong polynomial or reduction
        assert!(worst <= 2);
    }

    #[test]
    fn edges() {
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-0.0), 1.0);
        assert_eq!(exp_nonpositive(-745.2), 0.0);
        assert_eq!(exp_nonpositive(-1e6), 0.0);
        assert_eq!(exp_nonpositive(f64::NEG_INFINITY), 0.0);
        assert!(exp_nonpositive(f64::NAN).is_nan());
        assert_eq!(exp_nonpositive(-745.0), (-745.0f64).exp());
        // where the reduction leaves r ≈ 0 (the f64 multiples of ln 2 are not exact)
        for k in [1, 10, 700, 1022] {
            let x = -(k as f64) * std::f64::consts::LN_2;
            let got = exp_nonpositive(x);
            assert!(ulps(got, x.exp()) <= 1, "k = {k}: {got:e} vs {:e}", x.exp());
        }
    }
}
