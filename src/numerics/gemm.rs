//! A bounds-checked wrapper around `matrixmultiply::dgemm` (already a dependency of nalgebra;
//! it detects AVX/FMA at run time and is single-threaded, hence deterministic).

/// A strided matrix view: `rows × cols`, element (i, j) at `offset + i·rs + j·cs`.
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub rows: usize,
    pub cols: usize,
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

impl View {
    /// A row-major `rows × cols` block at `offset` with row stride `ld`.
    pub fn rows(rows: usize, cols: usize, offset: usize, ld: usize) -> Self {
        View {
            rows,
            cols,
            offset,
            rs: ld,
            cs: 1,
        }
    }
    /// A dense row-major matrix.
    pub fn dense(rows: usize, cols: usize) -> Self {
        View::rows(rows, cols, 0, cols)
    }
    /// The transpose of this view.
    pub fn t(self) -> Self {
        View {
            rows: self.cols,
            cols: self.rows,
            offset: self.offset,
            rs: self.cs,
            cs: self.rs,
        }
    }
    /// One past the largest index this view touches (0 for an empty view).
    fn end(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            self.offset + (self.rows - 1) * self.rs + (self.cols - 1) * self.cs + 1
        }
    }
}

/// C ← α A B + β C on views of slices. Panics if a view leaves its slice or the shapes
/// disagree. With β = 0, C is overwritten (its old contents may be anything finite or not).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    alpha: f64,
    a: &[f64],
    av: View,
    b: &[f64],
    bv: View,
    beta: f64,
    c: &mut [f64],
    cv: View,
) {
    assert_eq!(av.cols, bv.rows, "gemm: inner dimensions");
    assert_eq!((av.rows, bv.cols), (cv.rows, cv.cols), "gemm: output shape");
    assert!(av.end() <= a.len() && bv.end() <= b.len() && cv.end() <= c.len());
    if cv.rows == 0 || cv.cols == 0 {
        return;
    }
    if av.cols == 0 {
        for i in 0..cv.rows {
            for j in 0..cv.cols {
                let x = &mut c[cv.offset + i * cv.rs + j * cv.cs];
                *x = if beta == 0.0 { 0.0 } else { beta * *x };
            }
        }
        return;
    }
    // SAFETY: every index dgemm touches is offset + i·rs + j·cs with i < rows, j < cols, which
    // the assertions above bound by the slice lengths; `c` is borrowed mutably and cannot alias
    // `a` or `b`.
    unsafe {
        matrixmultiply::dgemm(
            cv.rows,
            av.cols,
            cv.cols,
            alpha,
            a.as_ptr().add(av.offset),
            av.rs as isize,
            av.cs as isize,
            b.as_ptr().add(bv.offset),
            bv.rs as isize,
            bv.cs as isize,
            beta,
            c.as_mut_ptr().add(cv.offset),
            cv.rs as isize,
            cv.cs as isize,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_product_matches_the_naive_triple_loop() {
        // A: 3×4 taken as every other row of a 6×4 buffer; B: the transpose of a 5×4 matrix.
        let abuf: Vec<f64> = (0..24).map(|i| (i as f64 * 0.37).sin()).collect();
        let bbuf: Vec<f64> = (0..20).map(|i| (i as f64 * 0.71).cos()).collect();
        let av = View {
            rows: 3,
            cols: 4,
            offset: 0,
            rs: 8,
            cs: 1,
        };
        let bv = View::dense(5, 4).t();
        let mut c = vec![1.0; 15];
        gemm(2.0, &abuf, av, &bbuf, bv, 0.5, &mut c, View::dense(3, 5));
        for i in 0..3 {
            for j in 0..5 {
                let mut s = 0.0;
                for k in 0..4 {
                    s += abuf[i * 8 + k] * bbuf[j * 4 + k];
                }
                assert!((c[i * 5 + j] - (2.0 * s + 0.5)).abs() < 1e-14);
            }
        }
    }
}
