//! Wang et al. (kind "rich"): the time-scale statements of docs/theory/wang.md §6–§7 measured on the
//! closed-form flow with located events, and the closed form against the exact finite-L loss on
//! a fixed sample (its O(1/L) error).

use crate::support::simpson;
use ihdyn::flow::GradientFlow;
use ihdyn::jobs::plan::{self as scenario, Scenario};
use ihdyn::systems::wang::job::{build_flow, phase_events, predictions, problem};
use ihdyn::systems::wang::reduced::sample::{Prepared, SeqScratch, eval_sequence};
use ihdyn::systems::wang::reduced::{
    KeyQuery, Layer1, OBS_LOSS_G, OBS_LOSS_I, RichFlow, RichModel, RichMonteCarlo, geom,
};
use ihdyn::systems::wang::scenario::RichSpec;
use ihdyn::systems::wang::system::RichSystem;

/// A rich scenario from `[system]` lines (kind added) with a long horizon.
fn scenario(system: &str) -> Scenario {
    let text = format!(
        "[system]\nkind = \"rich\"\n{system}\n[solver]\nhorizon = 400\n[solve]\nmargin = 0\n"
    );
    scenario::parse_str(&text, "test", "t").unwrap()
}

fn spec(s: &Scenario) -> &RichSpec {
    &s.system
        .downcast::<RichSystem>()
        .expect("rich expected")
        .spec
}

/// (T_G, T_IH) located on the dense output; the run stops once both are found.
fn times(system: &str) -> (f64, f64) {
    let s = scenario(system);
    let r = spec(&s);
    let flow = build_flow(r);
    let events = phase_events(r, flow.as_ref())
        .into_iter()
        .filter(|e| e.name == "T_G" || e.name == "T_IH")
        .collect();
    let sol = problem(r, flow.as_ref(), &s.solver, events, Some((0.0, 5000)))
        .unwrap()
        .solve()
        .unwrap();
    (
        sol.event_time("T_G").expect("T_G found"),
        sol.event_time("T_IH").expect("T_IH found"),
    )
}

#[test]
fn t_g_does_not_depend_on_l() {
    // With the M → ∞ 4-gram loss, ℓ_G and its flow do not involve L at all: T_G is the same
    // for every L (up to the integrator's tolerance; the step sequence differs with L).
    let limit: Vec<f64> = [16, 256, 4096]
        .iter()
        .map(|l| times(&format!("L = {l}\nexact_finite_M = false")).0)
        .collect();
    for t in &limit {
        assert!((t / limit[0] - 1.0).abs() < 1e-8, "{limit:?}");
    }
    // With the exact finite-M sums, T_G(L) tends to that value once σL ≫ 1 (§7: for σ ≲ 1/L
    // the slope p starts flat and T_G is shorter). The finite-M corrections to π₁ and S₂ are
    // O(e^{−pM}) and fade as p grows past 1/M during phase I.
    let t_inf = limit[0];
    let rel = |l: usize| (times(&format!("L = {l}")).0 / t_inf - 1.0).abs();
    let (r256, r1024, r4096) = (rel(256), rel(1024), rel(4096));
    assert!(r256 < 1e-2, "σL = 2.56: {r256}");
    assert!(r1024 < 1e-4 && r4096 < 1e-4, "σL ≥ 10: {r1024}, {r4096}");
    // and it is the saddle escape of §7: T_G ≈ ln(1/σ)/(2c_G) plus an O(1) constant
    assert!((t_inf - (100f64).ln()).abs() < 0.5, "T_G = {t_inf}");
}

#[test]
fn t_ih_grows_linearly_in_l() {
    // The closed-form IH part is (1/N)·f(v, w): in the time t/N the IH flow does not depend on
    // N, so T_IH/N is one number for every L (to the integrator's tolerance).
    let ls = [16usize, 64, 256, 1024, 4096];
    let per_n: Vec<f64> = ls
        .iter()
        .map(|&l| times(&format!("L = {l}")).1 / (l - 2) as f64)
        .collect();
    for v in &per_n {
        assert!((v / per_n[0] - 1.0).abs() < 1e-6, "T_IH/N: {per_n:?}");
    }
    // the log-log slope against N is 1
    let (x0, x1) = ((ls[0] - 2) as f64, (ls[4] - 2) as f64);
    let slope = ((per_n[4] * x1).ln() - (per_n[0] * x0).ln()) / (x1.ln() - x0.ln());
    assert!((slope - 1.0).abs() < 1e-6, "slope {slope}");
    // and T_IH/T_G grows like N c_G/(c_I² w*) (§7): here ratio/N within a factor 2 of 4
    let (tg, tih) = times("L = 1024");
    let ratio_per_n = tih / tg / 1022.0;
    assert!(ratio_per_n > 2.0 && ratio_per_n < 8.0, "{ratio_per_n}");
}

#[test]
fn t_ih_grows_with_ln_one_over_sigma_as_stated_in_option_b() {
    // §7 (b): T_IH ≈ (N/(4c_I²w*)) ln(θ w*/σ²). Everything else that shifts T_IH (the lag of v,
    // the nonlinear end of the growth) is independent of σ, so each decade of σ adds exactly
    // N ln(10)/(2c_I²w*) once σ is small: here 4N per decade.
    let n = 62.0;
    let t: Vec<f64> = [1e-3, 1e-4, 1e-5]
        .iter()
        .map(|s| times(&format!("L = 64\nsigma = {s:e}")).1)
        .collect();
    let per_decade = n * 10f64.ln() / (2.0 * 0.25 * 0.5);
    for w in t.windows(2) {
        let got = (w[1] - w[0]) / per_decade;
        assert!(
            (got - 1.0).abs() < 5e-3,
            "per decade: {got} of the §7 value"
        );
    }
    // Against the §7 formula itself, over c_I and w*: the formula linearises the growth of w
    // around w = 0 with v = c_I from t = 0. The v lag adds N/2 (v = c_I(1 − e^{−2t/N}) gives
    // ∫v = c_I(t − N/2) on the plateau, §7 Phase I); what remains is the nonlinear end of the
    // growth, where (1−2ww*)^{−3/2} and (1−2w²)^{−3/2} change the rate by O(θw*²) over the last
    // e-fold — an O(N) shift, a few per cent of T_IH for θ = ½ (largest at small w*, where the
    // last e-fold is a larger share of the logarithm). Tolerance 6%.
    for (c_i, w_star) in [(0.35, 0.5), (0.5, 0.5), (1.0, 0.5), (0.5, 0.3), (0.5, 0.6)] {
        let sys = format!("L = 64\nsigma = 1e-3\nc_I = {c_i}\nw_star = {w_star}");
        let s = scenario(&sys);
        let pred = predictions(spec(&s)).1.expect("small initialisation");
        let (_, got) = times(&sys);
        let rel = got / (pred + n / 2.0) - 1.0;
        assert!(
            rel.abs() < 0.06,
            "c_I {c_i}, w* {w_star}: T_IH {got} vs {pred} + N/2"
        );
    }
    // A sharper reference, independent of the ODE solver: the same growth law with the
    // nonlinear rate kept, integrated by quadrature, T = N/2 + ∫ dw / (2w·(−g_w(c_I, w))) over
    // [σ², θw*], g_w from §5 at v = c_I.
    for (c_i, w_star) in [(0.5, 0.5), (0.5, 0.3), (1.0, 0.6)] {
        let sigma: f64 = 1e-3;
        let sys = format!("L = 64\nsigma = {sigma:e}\nc_I = {c_i}\nw_star = {w_star}");
        let (_, got) = times(&sys);
        let rate = |w: f64| {
            2.0 * w
                * (2.0 / n)
                * c_i
                * c_i
                * (w_star * (1.0 - 2.0 * w * w_star).powf(-1.5)
                    - w * (1.0 - 2.0 * w * w).powf(-1.5))
        };
        // Simpson in u = ln w
        let (a, b) = ((sigma * sigma).ln(), (0.5 * w_star).ln());
        let quad = n / 2.0 + simpson(|u| u.exp() / rate(u.exp()), a, b, 4000);
        let rel = got / quad - 1.0;
        assert!(
            rel.abs() < 0.01,
            "c_I {c_i}, w* {w_star}: T_IH {got} vs quadrature {quad}"
        );
    }
}

#[test]
fn option_a_single_weight_has_no_log_sigma_factor() {
    // §7 (a): w grows linearly, T_IH ≈ Nθ/(2c_I²) after an O(N) lag (at most N/2: the lag of
    // v) and independent of σ as σ → 0; the nonlinear end only speeds it up.
    let n = 62.0;
    let t: Vec<f64> = [1e-3, 1e-4, 1e-5]
        .iter()
        .map(|s| times(&format!("L = 64\nsigma = {s:e}\nkq_factorized = false")).1)
        .collect();
    assert!(((t[2] - t[1]) / t[2]).abs() < 1e-3, "{t:?}");
    let lin = n * 0.5 / (2.0 * 0.25);
    for v in &t {
        assert!(
            *v > lin && *v < lin + n / 2.0,
            "T_IH {v}: not in [{lin}, {lin} + N/2]"
        );
    }
}

#[test]
fn t_g_grows_with_ln_one_over_sigma_in_the_saddle_escape() {
    // §7 Phase I, σ ≫ 1/L (the M → ∞ form): T_G ≈ ln(1/σ)/(2c_G) + const, so each decade adds
    // ln(10)/(2c_G), and T_G − ln(1/σ)/(2c_G) settles to a constant.
    let t: Vec<f64> = [1e-3, 1e-4, 1e-5, 1e-6]
        .iter()
        .map(|s| times(&format!("L = 64\nsigma = {s:e}\nexact_finite_M = false")).0)
        .collect();
    for w in t.windows(2) {
        let got = (w[1] - w[0]) / 10f64.ln();
        assert!(
            (got - 1.0).abs() < 2e-3,
            "per decade {got}, expected 1/(2c_G) = 1"
        );
    }
    let offsets: Vec<f64> = [1e-3f64, 1e-4, 1e-5, 1e-6]
        .iter()
        .zip(&t)
        .map(|(s, t)| t - (1.0 / s).ln())
        .collect();
    assert!((offsets[3] - offsets[2]).abs() < 1e-3, "{offsets:?}");
    assert!(offsets[3].abs() < 1.0, "{offsets:?}");
}

#[test]
fn the_four_gram_tail_is_one_over_four_t() {
    // §6: on the slow manifold ℓ_G ≈ 1/(4t); at the end of a 40·L run ℓ_G·t is within 1%.
    let s = scenario("L = 1024");
    let r = spec(&s);
    let flow = build_flow(r);
    let sol = problem(r, flow.as_ref(), &s.solver, vec![], None)
        .unwrap()
        .solve()
        .unwrap();
    let t = sol.t_end();
    let mut obs = [0.0; 3];
    flow.observables(&sol.state_at(t).unwrap(), &mut obs);
    let lt = obs[OBS_LOSS_G] * t;
    assert!((lt - 0.25).abs() < 0.0025, "ℓ_G·t = {lt}");
}

#[test]
fn closed_form_and_sampled_exact_loss_agree_within_the_stated_o_one_over_l() {
    // docs/theory/wang.md §4: ℓ = ℓ_G + ℓ_I + O(1/N). The leading O(1/N) term is the cross term the
    // closed form drops: E[a_s] = 1/N exactly (exchangeable keys), so
    //   2E[DE] = (2/N)(v − c_I)(w_G(1 − π_M) − c_G) + O(1/N²)
    // (D, E the 4-gram and IH heads' errors; key x_1 carries no value). The law-of-large-numbers
    // form of ℓ_I is o(1/N) off. Checked on K = 20000 seeded sequences per L, with the sample's
    // own standard errors.
    let th = [0.3, 1.0, 0.2, 0.5, 0.6];
    let (w_g, p, v) = (th[0], th[1], th[2]);
    let mut lli_err = Vec::new();
    for l in [16usize, 32, 64, 128, 256] {
        let model = RichModel {
            l,
            c_g: 0.5,
            c_i: 0.5,
            w_star: 0.5,
            kq: KeyQuery::Factorized,
            layer1: Layer1::ExactCopy,
            exact_finite_m: true,
            loss_scale: 1.0,
        };
        let k = 20_000;
        let mc = RichMonteCarlo::new(model, k, 17);
        let closed = RichFlow::new(model);
        let n = (l - 2) as f64;
        // per-sequence terms, for the standard errors
        let mut prep = Prepared::new(l);
        prep.prepare(&model, &th);
        let mut scratch = SeqScratch::new(l);
        let (mut c1, mut c2, mut e1, mut e2) = (0.0, 0.0, 0.0, 0.0);
        for i in 0..k {
            let ev = eval_sequence(&model, &prep, mc.sequence(i), &mut scratch);
            let (c, e) = (2.0 * ev.d * ev.e, ev.e * ev.e);
            c1 += c;
            c2 += c * c;
            e1 += e;
            e2 += e * e;
        }
        let kf = k as f64;
        let (cross, ih) = (c1 / kf, e1 / kf);
        let se_cross = ((c2 / kf - cross * cross) / kf).sqrt();
        let se_ih = ((e2 / kf - ih * ih) / kf).sqrt();
        let mut obs = [0.0; 4];
        mc.observables(&th, &mut obs);
        assert!((obs[3] - cross).abs() < 1e-12 && (obs[OBS_LOSS_I] - ih).abs() < 1e-12);
        let mut cobs = [0.0; 3];
        closed.observables(&th, &mut cobs);
        // the 4-gram part is exact in both
        assert!((obs[OBS_LOSS_G] - cobs[OBS_LOSS_G]).abs() < 1e-15);
        let diff = mc.loss(&th) - closed.loss(&th);
        let pi_m = (-p * (n - 1.0) - geom(p, l - 2).ln_z).exp();
        let cross_pred = 2.0 * (v - 0.5) * (w_g * (1.0 - pi_m) - 0.5) / n;
        // the stated bound: |ℓ − ℓ_closed| ≤ (|N·cross_pred| + 0.05)/N (the 0.05 covers the
        // o(1/N) remainder, ≤ 0.035/N here), plus 4 standard errors of the sample
        let bound = (n * cross_pred.abs() + 0.05) / n + 4.0 * (se_cross + se_ih);
        assert!(
            diff.abs() <= bound,
            "L = {l}: |ℓ_MC − ℓ_closed| = {diff:e} > {bound:e}"
        );
        // the sampled cross term is the predicted one
        assert!(
            (cross - cross_pred).abs() <= 4.0 * se_cross + 0.02 / n,
            "L = {l}: N·cross {} vs predicted {}",
            n * cross,
            n * cross_pred
        );
        lli_err.push((n, n * (ih - cobs[OBS_LOSS_I]).abs(), n * se_ih));
    }
    // N·(ℓ_I,MC − ℓ_I,closed) → 0: the law-of-large-numbers form is o(1/N).
    let first = lli_err[0].1;
    let last = lli_err[lli_err.len() - 1];
    assert!(last.1 < 0.5 * first, "{lli_err:?}");
    assert!(last.1 < 0.02 + 4.0 * last.2, "{lli_err:?}");
}

/// The §7 predictions describe a small initialisation: with σ = 0.81 (w = σ² = 0.656, past
/// θ_IH·w* = 0.25) there is no T_IH prediction, and with σ ≥ 1 no T_G one; a small σ has both,
/// positive.
#[test]
fn predictions_apply_only_to_a_small_initialisation() {
    let s = scenario("L = 64\nsigma = 0.81");
    let (t_g, t_ih) = predictions(spec(&s));
    assert!(t_g.unwrap() > 0.0);
    assert_eq!(t_ih, None);
    let s = scenario("L = 64\nsigma = 1.2\nestimator = \"monte_carlo\"");
    assert_eq!(predictions(spec(&s)).0, None);
    let s = scenario("L = 64\nsigma = 1e-3");
    let (t_g, t_ih) = predictions(spec(&s));
    assert!(t_g.unwrap() > 0.0 && t_ih.unwrap() > 0.0);
}
