//! The one run-time dispatch for code compiled twice, plainly and for AVX2.
//!
//! A hot loop is written once as a [`Kernel`]: a unit struct whose `run` is
//! `#[inline(always)]` and usually forwards its arguments to an `#[inline(always)]` body.
//! [`dispatch`] runs it: when the CPU has AVX2 (checked at run time, cached by the standard
//! library) inlined into a function compiled with `#[target_feature(enable = "avx2")]`, so its
//! loops get 256-bit vectors; otherwise inlined into the caller. Only AVX2 is enabled, not FMA:
//! every floating-point operation is the same IEEE operation in both builds (no contraction of
//! a multiply and an add, no reassociation), so both return the same bits.
//! ```text
//! struct Pass;
//! impl<'a> Kernel<(&'a [f64], f64)> for Pass {
//!     type Output = f64;
//!     #[inline(always)]
//!     fn run(self, (x, s): (&'a [f64], f64)) -> f64 { pass_body(x, s) }
//! }
//! let y = simd::dispatch(Pass, (x, s));
//! ```
//! Why a trait and not a closure or a function item (both measured on this crate's six sites):
//! - a closure or function item is called through `FnOnce::call_once`, which for a function
//!   item (and a closure that is `Fn`) is a compiler shim; the body is inlined into the shim and
//!   LLVM then keeps the large shim out of line, so the AVX2 function merely jumps to code
//!   compiled without AVX2 (seen in the disassembly of the model and 19-dim passes);
//! - an `#[inline(always)]` closure is inlined, but its captures reach the body through memory:
//!   callgrind counted 1.8% to 2.3% more instructions on the 19-dim flow's passes than the
//!   hand-written AVX2 twins this replaces, where this form counts the same to 0.01%.
//!
//! `run` is an ordinary method, so `#[inline(always)]` holds, and the AVX2 function takes the
//! arguments as its own parameters (one generic function per arity), the shape of the old twins.
//!
//! This module holds the crate's only `unsafe` for the dispatch.

/// A body compiled twice; `Args` is the tuple of its arguments. Implement `run` with
/// `#[inline(always)]` (else the AVX2 build is lost) and call it through [`dispatch`].
pub(crate) trait Kernel<Args> {
    type Output;
    /// The body on `args`.
    fn run(self, args: Args) -> Self::Output;
}

/// Calling a [`Kernel`] with `Args`, compiled for AVX2 when the CPU has it (one impl per
/// arity).
pub(crate) trait Dispatch<Args> {
    type Output;
    fn dispatch(self, args: Args) -> Self::Output;
}

/// `kernel.run(args)`, compiled for AVX2 when the CPU supports it and plainly otherwise (the
/// same bits either way; see the module doc). On other architectures it runs plainly.
#[inline(always)]
pub(crate) fn dispatch<K: Dispatch<Args>, Args>(kernel: K, args: Args) -> K::Output {
    kernel.dispatch(args)
}

/// [`Dispatch`] for kernels of one arity; `$avx2` is their AVX2 build.
macro_rules! arity {
    ($avx2:ident: $($a:ident $A:ident),+) => {
        impl<K, $($A),+> Dispatch<($($A,)+)> for K
        where
            K: Kernel<($($A,)+)>,
        {
            type Output = K::Output;

            #[inline(always)]
            fn dispatch(self, ($($a,)+): ($($A,)+)) -> K::Output {
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (checked at run time just above).
                    return unsafe { $avx2(self, $($a),+) };
                }
                self.run(($($a,)+))
            }
        }

        /// `kernel.run(args)` compiled with AVX2 (one instance per kernel; `run` is inlined).
        /// `#[inline]` puts each instance in its caller's codegen unit with internal linkage,
        /// as the hand-written twins were: LLVM can then specialise it to constant arguments
        /// (the DOP853 stage sums on a fixed-size state were 10% slower without).
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        #[inline]
        #[allow(clippy::too_many_arguments)] // as many as the body takes
        fn $avx2<K, $($A),+>(kernel: K, $($a: $A),+) -> K::Output
        where
            K: Kernel<($($A,)+)>,
        {
            kernel.run(($($a,)+))
        }
    };
}

arity!(avx2_3: a A, b B, c C);
arity!(avx2_4: a A, b B, c C, d D);
arity!(avx2_5: a A, b B, c C, d D, e E);
arity!(avx2_10: a A, b B, c C, d D, e E, f F, g G, h H, i I, j J);

#[cfg(test)]
mod tests {
    use super::*;

    /// A body whose loop the AVX2 build vectorizes: elementwise products and quotients and a
    /// sequential sum (which must stay sequential).
    #[inline(always)]
    fn body(a: &[f64], b: &[f64], out: &mut [f64]) -> f64 {
        let mut s = 0.0;
        for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
            *o = x * y + x / y;
            s += *o;
        }
        s
    }

    struct Body;

    impl<'a> Kernel<(&'a [f64], &'a [f64], &'a mut [f64])> for Body {
        type Output = f64;
        #[inline(always)]
        fn run(self, (a, b, out): (&'a [f64], &'a [f64], &'a mut [f64])) -> f64 {
            body(a, b, out)
        }
    }

    #[test]
    fn dispatch_returns_the_bits_of_the_plain_build() {
        let a: Vec<f64> = (0..1003).map(|i| (i as f64 * 0.731).sin() * 1e3).collect();
        let b: Vec<f64> = (0..1003).map(|i| 1.0 + (i as f64 * 0.37).cos()).collect();
        let mut plain = vec![0.0; a.len()];
        let mut dispatched = vec![0.0; a.len()];
        let sp = body(&a, &b, &mut plain);
        let sd = dispatch(Body, (&a[..], &b[..], &mut dispatched[..]));
        assert_eq!(sp.to_bits(), sd.to_bits());
        assert!(
            plain
                .iter()
                .zip(&dispatched)
                .all(|(p, d)| p.to_bits() == d.to_bits())
        );
    }
}
