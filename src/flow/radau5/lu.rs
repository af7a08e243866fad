//! Dense LU decomposition with partial pivoting, in place on a preallocated column-major
//! buffer, for Radau5's real and complex iteration matrices (Hairer's `dec`/`sol` and
//! `decc`/`solc`): nalgebra's `LU` consumes and allocates its matrix, and Radau5 decomposes
//! anew at every change of step size.

use nalgebra::Complex;
use std::ops::{Div, Mul, SubAssign};

/// The scalars of the two matrices: f64 and Complex<f64>.
pub(super) trait Scalar: Copy + Mul<Output = Self> + Div<Output = Self> + SubAssign {
    /// The pivot's size (|x|, or |re| + |im| as in Hairer's `decc`).
    fn size(self) -> f64;
}

impl Scalar for f64 {
    fn size(self) -> f64 {
        self.abs()
    }
}

impl Scalar for Complex<f64> {
    fn size(self) -> f64 {
        self.re.abs() + self.im.abs()
    }
}

/// An n × n matrix and, once decomposed, its factors L (unit lower, below the diagonal) and U
/// in the same buffer, with the row interchanges.
pub(super) struct Lu<T> {
    n: usize,
    /// Column-major: a[i + j·n].
    pub(super) a: Vec<T>,
    piv: Vec<usize>,
}

impl<T: Scalar> Lu<T> {
    pub(super) fn new(n: usize, zero: T) -> Self {
        Lu {
            n,
            a: vec![zero; n * n],
            piv: vec![0; n],
        }
    }

    /// Decompose the matrix in `a` in place: P A = L U. Returns false (the factors are then
    /// unusable) if a pivot is zero or not finite.
    pub(super) fn factor(&mut self) -> bool {
        let (n, a) = (self.n, &mut self.a);
        for k in 0..n {
            let mut p = k;
            let mut best = a[k + k * n].size();
            for i in k + 1..n {
                let s = a[i + k * n].size();
                if s > best {
                    best = s;
                    p = i;
                }
            }
            self.piv[k] = p;
            if !(best > 0.0 && best.is_finite()) {
                return false;
            }
            if p != k {
                for j in 0..n {
                    a.swap(k + j * n, p + j * n);
                }
            }
            let pivot = a[k + k * n];
            for i in k + 1..n {
                a[i + k * n] = a[i + k * n] / pivot;
            }
            for j in k + 1..n {
                let akj = a[k + j * n];
                for i in k + 1..n {
                    let l = a[i + k * n];
                    a[i + j * n] -= l * akj;
                }
            }
        }
        true
    }

    /// Solve A x = b in place with the factors.
    pub(super) fn solve(&self, b: &mut [T]) {
        let (n, a) = (self.n, &self.a);
        for k in 0..n {
            b.swap(k, self.piv[k]);
        }
        for j in 0..n {
            let bj = b[j];
            for i in j + 1..n {
                b[i] -= a[i + j * n] * bj;
            }
        }
        for j in (0..n).rev() {
            b[j] = b[j] / a[j + j * n];
            let bj = b[j];
            for i in 0..j {
                b[i] -= a[i + j * n] * bj;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::*;

    #[test]
    fn lu_solves_real_and_complex_systems_that_need_pivoting() {
        // a zero in the top-left corner forces a row interchange
        let m = [[0.0, 2.0, 1.0], [1.0, 1.0, 0.0], [3.0, -1.0, 4.0]];
        let x = [1.0, -2.0, 0.5];
        let mut lu = Lu::new(3, 0.0);
        for i in 0..3 {
            for j in 0..3 {
                lu.a[i + 3 * j] = m[i][j];
            }
        }
        assert!(lu.factor());
        let mut b: Vec<f64> = (0..3)
            .map(|i| (0..3).map(|j| m[i][j] * x[j]).sum())
            .collect();
        lu.solve(&mut b);
        for i in 0..3 {
            assert!((b[i] - x[i]).abs() < 1e-14, "{b:?}");
        }
        let shift = Complex::new(0.3, 1.7);
        let mut c = Lu::new(3, Complex::new(0.0, 0.0));
        for i in 0..3 {
            for j in 0..3 {
                c.a[i + 3 * j] =
                    Complex::new(m[i][j], 0.0) + if i == j { shift } else { 0.0.into() };
            }
        }
        let xc = [
            Complex::new(1.0, 2.0),
            Complex::new(-1.0, 0.5),
            Complex::new(0.0, -3.0),
        ];
        let mut bc: Vec<Complex<f64>> = (0..3)
            .map(|i| (0..3).map(|j| c.a[i + 3 * j] * xc[j]).sum())
            .collect();
        assert!(c.factor());
        c.solve(&mut bc);
        for i in 0..3 {
            assert!((bc[i] - xc[i]).norm() < 1e-14, "{bc:?}");
        }
        let mut singular = Lu::new(2, 0.0);
        singular.a.copy_from_slice(&[1.0, 2.0, 2.0, 4.0]);
        assert!(!singular.factor());
    }
}
