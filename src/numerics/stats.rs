//! Small statistics: the power-law fit T ≈ C·N^slope by least squares on (ln N, ln T), with a
//! 95% confidence interval from Student's t distribution.

use serde::Serialize;

/// ln Γ(x) for x > 0 (Lanczos approximation, g = 7, 9 terms; relative error ≲ 1e-15).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Continued fraction for the incomplete beta function (modified Lentz).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    let tiny = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < tiny {
        d = tiny;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..1000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < tiny {
            d = tiny;
        }
        c = 1.0 + aa / c;
        if c.abs() < tiny {
            c = tiny;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < tiny {
            d = tiny;
        }
        c = 1.0 + aa / c;
        if c.abs() < tiny {
            c = tiny;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// The regularized incomplete beta function I_x(a, b).
pub fn inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, 1.0 - x) / b
    }
}

/// CDF of Student's t with `dof` degrees of freedom.
pub fn student_t_cdf(t: f64, dof: f64) -> f64 {
    let tail = 0.5 * inc_beta(dof / 2.0, 0.5, dof / (dof + t * t));
    if t >= 0.0 { 1.0 - tail } else { tail }
}

/// Quantile of Student's t (bisection on the CDF to 1e-14).
pub fn student_t_quantile(p: f64, dof: f64) -> f64 {
    assert!(p > 0.0 && p < 1.0 && dof > 0.0);
    if p < 0.5 {
        return -student_t_quantile(1.0 - p, dof);
    }
    let (mut lo, mut hi) = (0.0, 1.0);
    while student_t_cdf(hi, dof) < p {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if student_t_cdf(mid, dof) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-14 * hi.max(1.0) {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// Least-squares fit of ln T = intercept + slope·ln N.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PowerLawFit {
    pub n_points: usize,
    pub slope: f64,
    /// Natural-log intercept: T ≈ exp(intercept)·N^slope.
    pub intercept: f64,
    /// Standard error of the slope (None with fewer than 3 points).
    pub slope_stderr: Option<f64>,
    /// 95% confidence interval of the slope (None with fewer than 3 points).
    pub slope_ci95: Option<[f64; 2]>,
    pub intercept_stderr: Option<f64>,
    pub r_squared: Option<f64>,
    /// ln T − fitted ln T, in the order of the points.
    pub residuals: Vec<f64>,
}

/// Fit a power law through (N, T) points (all must be > 0). None with fewer than 2 distinct N.
pub fn fit_power_law(points: &[(f64, f64)]) -> Option<PowerLawFit> {
    let n = points.len();
    if n < 2 {
        return None;
    }
    let xs: Vec<f64> = points.iter().map(|p| p.0.ln()).collect();
    let ys: Vec<f64> = points.iter().map(|p| p.1.ln()).collect();
    let mx = xs.iter().sum::<f64>() / n as f64;
    let my = ys.iter().sum::<f64>() / n as f64;
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let residuals: Vec<f64> = xs
        .iter()
        .zip(&ys)
        .map(|(x, y)| y - (intercept + slope * x))
        .collect();
    let (slope_stderr, slope_ci95, intercept_stderr, r_squared) = if n >= 3 {
        let sse: f64 = residuals.iter().map(|r| r * r).sum();
        let syy: f64 = ys.iter().map(|y| (y - my).powi(2)).sum();
        let s2 = sse / (n - 2) as f64;
        let se = (s2 / sxx).sqrt();
        let se_int = (s2 * (1.0 / n as f64 + mx * mx / sxx)).sqrt();
        let tq = student_t_quantile(0.975, (n - 2) as f64);
        let r2 = if syy > 0.0 { 1.0 - sse / syy } else { 1.0 };
        (
            Some(se),
            Some([slope - tq * se, slope + tq * se]),
            Some(se_int),
            Some(r2),
        )
    } else {
        (None, None, None, None)
    };
    Some(PowerLawFit {
        n_points: n,
        slope,
        intercept,
        slope_stderr,
        slope_ci95,
        intercept_stderr,
        r_squared,
        residuals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_matches_factorials_and_sqrt_pi() {
        let mut fact: f64 = 1.0;
        for n in 1..30 {
            // Γ(n) = (n−1)!
            assert!((ln_gamma(n as f64) - fact.ln()).abs() < 1e-12 * fact.ln().abs().max(1.0));
            fact *= n as f64;
        }
        let half = 0.5 * std::f64::consts::PI.ln();
        assert!((ln_gamma(0.5) - half).abs() < 1e-14);
    }

    #[test]
    fn t_quantiles_match_closed_forms() {
        // ν = 1 (Cauchy): t_p = tan(π(p − ½)); ν = 2: t_p = (2p − 1)/sqrt(2p(1 − p)).
        for &p in &[0.6, 0.9, 0.975, 0.995] {
            let cauchy = (std::f64::consts::PI * (p - 0.5)).tan();
            assert!((student_t_quantile(p, 1.0) - cauchy).abs() < 1e-9 * cauchy.max(1.0));
            let two = (2.0 * p - 1.0) / (2.0 * p * (1.0 - p)).sqrt();
            assert!((student_t_quantile(p, 2.0) - two).abs() < 1e-9 * two.max(1.0));
        }
        // ν → ∞: the normal quantile 1.959963984540054.
        assert!((student_t_quantile(0.975, 1e7) - 1.959963984540054).abs() < 1e-6);
    }

    #[test]
    fn t_cdf_agrees_with_numerical_integration_of_the_density() {
        // f(t) = Γ((ν+1)/2) / (sqrt(νπ) Γ(ν/2)) (1 + t²/ν)^(−(ν+1)/2), Simpson on [0, x].
        for &nu in &[3.0, 7.5, 22.0] {
            let c = (ln_gamma((nu + 1.0) / 2.0) - ln_gamma(nu / 2.0)).exp()
                / (nu * std::f64::consts::PI).sqrt();
            let f = |t: f64| c * (1.0 + t * t / nu).powf(-(nu + 1.0) / 2.0);
            let x = 2.3;
            let m = 2000;
            let h = x / m as f64;
            let mut s = f(0.0) + f(x);
            for i in 1..m {
                s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
            }
            let integral = 0.5 + s * h / 3.0;
            assert!((student_t_cdf(x, nu) - integral).abs() < 1e-10);
        }
    }

    #[test]
    fn exact_power_law_is_recovered_and_noise_widens_the_interval() {
        let pts: Vec<(f64, f64)> = [4.0, 8.0, 16.0, 64.0]
            .iter()
            .map(|&n: &f64| (n, 3.0 * n.powf(2.0)))
            .collect();
        let fit = fit_power_law(&pts).unwrap();
        assert!((fit.slope - 2.0).abs() < 1e-12);
        assert!((fit.intercept - 3f64.ln()).abs() < 1e-12);
        assert!(fit.slope_stderr.unwrap() < 1e-12);
        // Perturb one point: the slope's interval must contain the OLS slope and be non-trivial.
        let mut noisy = pts.clone();
        noisy[1].1 *= 1.1;
        let fit = fit_power_law(&noisy).unwrap();
        let [lo, hi] = fit.slope_ci95.unwrap();
        assert!(lo < fit.slope && fit.slope < hi && hi - lo > 1e-3);
        let r: f64 = fit.residuals.iter().sum();
        assert!(r.abs() < 1e-12, "OLS residuals sum to zero");
        assert!(fit_power_law(&pts[..1]).is_none());
        assert!(fit_power_law(&pts[..2]).unwrap().slope_ci95.is_none());
    }
}
