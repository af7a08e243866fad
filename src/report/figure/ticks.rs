//! Tick positions and labels: log ticks that label every part of a range, and one label
//! style per axis (plain decimals or powers of ten, with superscripts).

/// Tick positions of a log axis on [lo, hi]: 1-2-5 steps per decade for short ranges, decades
/// (or every k-th decade) for long ones, so that every part of the range is labelled (plotters'
/// own choice leaves the lowest partial decade bare).
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return vec![];
    }
    let (a, b) = (lo.log10(), hi.log10());
    let span = b - a;
    let mantissas: &[f64] = if span <= 0.6 {
        &[1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    } else if span <= 1.2 {
        &[1.0, 2.0, 3.0, 5.0, 7.0]
    } else if span <= 3.5 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    let every = (span / 8.0).ceil().max(1.0) as i64;
    let mut ticks = Vec::new();
    for e in (a.floor() as i64)..=(b.ceil() as i64) {
        if e.rem_euclid(every) != 0 {
            continue;
        }
        for &m in mantissas {
            // decimal text parses to the correctly rounded value (powi would not)
            let v: f64 = format!("{m}e{e}").parse().expect("a decimal number");
            if v >= lo && v <= hi {
                ticks.push(v);
            }
        }
    }
    ticks
}

/// How an axis writes its ticks: every tick of an axis in the same style, plain decimals when
/// the whole axis lies in [10⁻³, 10⁵) and powers of ten (10⁶, 2×10⁻⁴) otherwise.
#[derive(Debug, Clone, Copy)]
pub(super) struct TickStyle {
    /// Below this magnitude a tick is round-off of 0 and reads "0" (linear axes).
    pub(super) zero_below: f64,
    pub(super) powers: bool,
}

impl TickStyle {
    pub(super) fn of(lo: f64, hi: f64, log: bool) -> Self {
        let plain = |v: f64| v == 0.0 || (1e-3..1e5).contains(&v.abs());
        if log {
            let ticks = log_ticks(lo, hi);
            let powers = if ticks.is_empty() {
                !(plain(lo) && plain(hi))
            } else {
                !ticks.iter().all(|&t| plain(t))
            };
            TickStyle {
                zero_below: 0.0,
                powers,
            }
        } else {
            let top = lo.abs().max(hi.abs());
            TickStyle {
                zero_below: 1e-9 * top,
                powers: top > 0.0 && !(1e-3..1e5).contains(&top),
            }
        }
    }
    pub(super) fn label(&self, v: f64) -> String {
        tick_label(&v, self.zero_below, self.powers)
    }
}

pub(super) fn superscript(n: i64) -> String {
    n.to_string()
        .chars()
        .map(|c| match c {
            '-' => '⁻',
            '0' => '⁰',
            '1' => '¹',
            '2' => '²',
            '3' => '³',
            '4' => '⁴',
            '5' => '⁵',
            '6' => '⁶',
            '7' => '⁷',
            '8' => '⁸',
            '9' => '⁹',
            c => c,
        })
        .collect()
}

/// Tick text: `zero_below` (a tiny fraction of the axis span) turns round-off near 0 into "0";
/// `powers` writes m×10ᵏ (10ᵏ when m = 1) instead of a plain decimal.
pub(super) fn tick_label(v: &f64, zero_below: f64, powers: bool) -> String {
    // round away representation noise of computed tick positions (e.g. 0.30000000000000004)
    let v = &format!("{v:.10e}").parse::<f64>().unwrap_or(*v);
    let a = v.abs();
    if *v == 0.0 || a < zero_below {
        "0".into()
    } else if powers {
        let mut e = a.log10().floor() as i64;
        let mut m = (a / 10f64.powi(e as i32) * 100.0).round() / 100.0;
        if m >= 10.0 {
            m /= 10.0;
            e += 1;
        }
        let sign = if *v < 0.0 { "-" } else { "" };
        if m == 1.0 {
            format!("{sign}10{}", superscript(e))
        } else {
            let m = format!("{m:.2}");
            let m = m.trim_end_matches('0').trim_end_matches('.');
            format!("{sign}{m}×10{}", superscript(e))
        }
    } else {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    }
}
