//! Support shared by the unit tests (compiled only under `cfg(test)`): central differences of
//! a loss, relative error, and the check that a hand-written gradient matches the central
//! differences of its loss (every hand-written gradient in ihdyn has a finite-difference
//! test). Plain functions of `f64` and closures, so that numerics names nothing above it.

/// Central difference of `f` at `x` with step `h`: (f(x + h) − f(x − h)) / 2h.
pub(crate) fn central_difference(mut f: impl FnMut(f64) -> f64, x: f64, h: f64) -> f64 {
    let plus = f(x + h);
    let minus = f(x - h);
    (plus - minus) / (2.0 * h)
}

/// The central-difference gradient of `loss` at θ, the same step `h` in every coordinate:
/// ∂L/∂θ_i ≈ (L(θ + h e_i) − L(θ − h e_i)) / 2h.
pub(crate) fn central_differences(
    mut loss: impl FnMut(&[f64]) -> f64,
    theta: &[f64],
    h: f64,
) -> Vec<f64> {
    let mut at = theta.to_vec();
    (0..theta.len())
        .map(|i| {
            let fd = central_difference(
                |x| {
                    at[i] = x;
                    loss(&at)
                },
                theta[i],
                h,
            );
            at[i] = theta[i];
            fd
        })
        .collect()
}

/// Relative error |a − b| / |b| (|b| floored at 1e-300, so that b = 0 gives a large number,
/// not NaN).
pub(crate) fn rel_err(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

/// A hand-written gradient against the central differences `fd` of its loss: every coordinate
/// |g_i − fd_i| < tol · (1 + |fd_i|). The failure message names the case (`what`) and the
/// coordinate (`names[i]`).
#[track_caller]
pub(crate) fn assert_gradient_matches(
    grad: &[f64],
    fd: &[f64],
    tol: f64,
    names: &[impl AsRef<str>],
    what: &str,
) {
    assert_eq!(grad.len(), fd.len(), "{what}: gradient and differences");
    for (i, (g, fd)) in grad.iter().zip(fd).enumerate() {
        let name = names.get(i).map_or("?", AsRef::as_ref);
        assert!(
            (g - fd).abs() < tol * (1.0 + fd.abs()),
            "{what}, coordinate {i} ({name}): analytic {g} vs central difference {fd}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn central_differences_are_exact_on_quadratics() {
        // (x + h)² − (x − h)² = 4xh: the central difference of a quadratic has no truncation
        // error, only rounding.
        let f = |t: &[f64]| 3.0 * t[0] * t[0] - t[0] * t[1] + 0.5 * t[1] * t[1];
        let fd = central_differences(f, &[1.5, -2.0], 1e-3);
        assert!(rel_err(fd[0], 3.0 * 2.0 * 1.5 + 2.0) < 1e-10, "{fd:?}");
        assert!(rel_err(fd[1], -1.5 - 2.0) < 1e-10, "{fd:?}");
        assert!(rel_err(central_difference(f64::exp, 0.0, 1e-4), 1.0) < 1e-8);
        assert_gradient_matches(&[11.0, -3.5], &fd, 1e-9, &["x", "y"], "quadratic");
    }

    #[test]
    #[should_panic(expected = "coordinate 1 (y): analytic -3.4 vs central difference")]
    fn a_wrong_gradient_names_the_coordinate() {
        let f = |t: &[f64]| 3.0 * t[0] * t[0] - t[0] * t[1] + 0.5 * t[1] * t[1];
        let fd = central_differences(f, &[1.5, -2.0], 1e-3);
        assert_gradient_matches(&[11.0, -3.4], &fd, 1e-9, &["x", "y"], "quadratic");
    }
}
