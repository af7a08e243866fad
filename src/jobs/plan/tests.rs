use super::*;
use crate::report::Cell;
use crate::scenario::expand_values;
use crate::systems::musat::scenario3::Musat3Spec;
use crate::systems::musat::system::Musat3System;

fn musat3(s: &Scenario) -> &Musat3Spec {
    &s.system
        .downcast::<Musat3System>()
        .expect("musat3 expected")
        .spec
}

fn err(text: &str) -> String {
    parse_str(text, "t.toml", "t").unwrap_err().to_string()
}

#[test]
fn parses_a_full_document_with_defaults() {
    let s = parse_str(
        "[system]\nkind = \"musat3\"\nn = 8\n[solve]\n[sweep]\nn = { from = 4, to = 4096, points = 24 }\nthresholds = [0.5, 0.1]\n",
        "t.toml",
        "stem",
    )
    .unwrap();
    assert_eq!(s.name, "stem");
    let m = musat3(&s);
    assert_eq!(m.n, 8, "the document's N, not the sweep's");
    assert_eq!(s.solver.rtol, 1e-10);
    let sweep = s.sweep.unwrap();
    assert_eq!(sweep.n_points, 24);
    assert_eq!(sweep.fields[0].path, "system.n");
    let ns: Vec<usize> = sweep
        .points
        .iter()
        .map(|p| {
            let m = musat3(&p.scenario);
            m.n
        })
        .collect();
    assert_eq!(ns[0], 4);
    assert_eq!(*ns.last().unwrap(), 4096);
    assert!(ns.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(sweep.thresholds, vec![0.1, 0.5]);
    assert_eq!(s.solve.unwrap().thresholds, vec![0.5]);
}

#[test]
fn geometric_integer_ranges_are_rounded_to_distinct_integers() {
    let v: toml::Value = toml::from_str::<toml::Table>("r = { from = 2, to = 10, points = 30 }")
        .unwrap()["r"]
        .clone();
    let n: Vec<f64> = expand_values(&v, "sweep.n")
        .unwrap()
        .iter()
        .map(|x| x.as_f64())
        .collect();
    assert_eq!(n, (2..=10).map(|i| i as f64).collect::<Vec<_>>());
    let v: toml::Value =
        toml::from_str::<toml::Table>("r = { from = 1e-4, to = 1e-1, points = 4 }").unwrap()["r"]
            .clone();
    let x: Vec<f64> = expand_values(&v, "f")
        .unwrap()
        .iter()
        .map(|x| x.as_f64())
        .collect();
    assert_eq!(x.len(), 4);
    assert_eq!(x[0], 1e-4);
    assert_eq!(x[3], 1e-1);
    assert!((x[1] - 1e-3).abs() < 1e-15 && (x[2] - 1e-2).abs() < 1e-14);
}

#[test]
fn fields_sweeps_form_a_product_of_validated_points() {
    let s = parse_str(
        "[system]\nkind = \"musat3\"\n[sweep]\nn = [4, 8]\n[sweep.fields]\n\"system.loss_scale\" = [1.0, 0.5]\nsolver.rtol = [1e-8]\n",
        "t.toml",
        "t",
    )
    .unwrap();
    let sw = s.sweep.unwrap();
    let paths: Vec<&str> = sw.fields.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["solver.rtol", "system.loss_scale", "system.n"]);
    assert_eq!(sw.n_points, 4);
    let p = &sw.points[3];
    let m = musat3(&p.scenario);
    assert_eq!((m.loss_scale, m.n), (1.0, 8));
    assert_eq!(p.scenario.solver.rtol, 1e-8);
    let e = err(
        "[system]\nkind = \"musat3\"\n[sweep]\nn = [4]\n[sweep.fields]\n\"system.loss_scale\" = [1.0, -2.0]\n",
    );
    assert_eq!(
        e,
        "t.toml: sweep.fields.system.loss_scale: must be > 0 and finite, got -2 (at the sweep value loss_scale = -2)"
    );
    let e = err(
        "[system]\nkind = \"musat3\"\n[sweep]\nn = [4]\n[sweep.fields]\n\"system.speed\" = [1.0]\n",
    );
    assert!(
        e.starts_with("t.toml: sweep.fields.system.speed: unknown field `speed`"),
        "{e}"
    );
    let e = err("[system]\nkind = \"musat3\"\n[sweep]\n[sweep.fields]\n\"system.n\" = []\n");
    assert_eq!(e, "t.toml: sweep.fields.system.n: must not be empty");
    let e = err(
        "[system]\nkind = \"musat3\"\n[sweep]\nn = [4]\n[sweep.fields]\n\"solve.margin\" = [1.0]\n",
    );
    assert!(
        e.contains("only fields under `system.` or `solver.` can be swept"),
        "{e}"
    );
    let e = err("[system]\nkind = \"musat3\"\n[solve]\n[sweep]\nn = [4]\n");
    assert_eq!(
        e,
        "t.toml: system.n: required for [solve], [[phase]], [standard], [compare] and [train] (the \
         sweep sets it for its own points only)"
    );
}

#[test]
fn every_bad_field_is_named_with_its_range() {
    let base = "[system]\nkind = \"musat3\"\n";
    assert_eq!(
        err(&format!("{base}[sweep]\nn = [8, 1]\n")),
        "t.toml: sweep.n: must be >= 2, got 1"
    );
    assert_eq!(
        err(&format!(
            "{base}[sweep]\nn = {{ from = 1, to = 8, points = 3 }}\n"
        )),
        "t.toml: sweep.n: must be >= 2, got 1"
    );
    assert_eq!(
        err(&format!("{base}n = 1\n[solve]\n")),
        "t.toml: system.n: must be >= 2, got 1"
    );
    assert_eq!(
        err(&format!("{base}n = 4\n[solve]\nthresholds = [0.5, 0]\n")),
        "t.toml: solve.thresholds: must be > 0, got 0"
    );
    assert_eq!(
        err(&format!("{base}[sweep]\nn = [4]\nthresholds = [-0.1]\n")),
        "t.toml: sweep.thresholds: must be > 0, got -0.1"
    );
    assert_eq!(
        err(&format!(
            "{base}n = 4\n[solver]\nmethod = \"rk45\"\n[solve]\n"
        )),
        "t.toml: solver.method: must be one of \"dopri5\", \"dop853\", \"radau5\", \"auto\" \
         (explicit Dormand–Prince 5(4) or 8(5,3), implicit Radau IIA of order 5, or 8(5,3) \
         switching to Radau where the flow turns stiff), got \"rk45\""
    );
    assert_eq!(
        err(&format!("{base}n = 4\n[solver]\nt_max = 0\n[solve]\n")),
        "t.toml: solver.t_max: must be > 0 and finite, got 0"
    );
    assert!(
        err(&format!("{base}n = 4\nfoo = 1\n[solve]\n"))
            .starts_with("t.toml: system.foo: unknown field `foo`")
    );
    assert_eq!(
        err(&format!("{base}n = \"eight\"\n[solve]\n")),
        "t.toml: system.n: invalid type: string \"eight\", expected i64"
    );
    assert!(
        err(&format!("{base}n = 4\n[solve]\nthreshold = [0.5]\n"))
            .starts_with("t.toml: solve.threshold: unknown field `threshold`")
    );
    assert!(
        err("[system]\nkind = \"musat9\"\n[solve]\n")
            .starts_with("t.toml: system.kind: unknown system `musat9`")
    );
    assert!(
        err(&format!(
            "{base}n = 4\n[solve]\n[sweep]\nn = {{ from = 4, to = 8, pts = 3 }}\n"
        ))
        .starts_with("t.toml: sweep.n.pts: unknown field `pts`")
    );
    assert_eq!(
        err(&format!("{base}n = 4\n")),
        "t.toml: scenario: nothing to run: add a [solve], [sweep], [[phase]], [standard], [compare], [train] or [gih] section"
    );
    assert_eq!(
        err(&format!("{base}[solve]\n")),
        "t.toml: system.n: required (N >= 2 item-label pairs)"
    );
    assert!(
        err(&format!("{base}n = 4\nquery = \"middle\"\n[solve]\n"))
            .starts_with("t.toml: system.query: unknown variant `middle`")
    );
    assert_eq!(
        err("[system]\nkind = \"musat19\"\nn = 4\nm = \"bogus\"\n[solve]\n"),
        "t.toml: system.m: unknown variant `bogus`, expected `J` or `swap`"
    );
    assert!(err("[system\n").starts_with("t.toml: invalid TOML"));
}

#[test]
fn single_bracket_phase_and_misspelt_sections_get_a_hint() {
    let base = "name = \"a\"\n[system]\nkind = \"musat3\"\nn = 4\n";
    for (extra, want) in [
        (
            "[phase]\nx = \"beta2\"\ny = \"alpha3\"\n",
            "phase: write [[phase]] with double brackets",
        ),
        (
            "[swep]\nn = [4, 8]\n",
            "swep: unknown section or field; did you mean `sweep`?",
        ),
        ("[solv]\n", "did you mean `solve`?"),
        ("[comprae]\n", "did you mean `compare`?"),
        (
            "[xyzzy]\n",
            "xyzzy: unknown section or field (accepted: `name`",
        ),
    ] {
        let e = parse_str(&format!("{base}{extra}"), "t", "t").unwrap_err();
        assert!(e.to_string().contains(want), "{extra}: {e}");
    }
}

#[test]
fn every_kind_runs_with_radau5_and_auto_and_agrees_with_dop853() {
    // `[solver] method` reaches every system's flow: one sweep point per kind (the emergence
    // times, or gih's stage results) with the implicit method and with `auto` matches DOP853's
    // to the tolerance's reach (Radau5's event times carry errors of about rtol^(2/3)).
    let kinds = [
        "[system]\nkind = \"musat3\"\nn = 64\n[solve]\n",
        "[system]\nkind = \"musat19\"\nn = 16\n[solve]\n",
        "[system]\nkind = \"rich\"\nL = 64\n[solve]\n",
        "[system]\nkind = \"gih\"\nd = 3\npa = [-1, -2]\nL = 20\nalpha = 0.3\nn_sequences = 120\n\
         seed = 5\na0 = 0.05\n[gih]\nsamples = 5\n[gih.mi]\ndraws = 50\n\
         [[gih.stages]]\ntrain = [\"c\"]\nlr = 0.1\nsteps = 2000\n",
    ];
    for kind in kinds {
        let rows = |method: &str| {
            let s = parse_str(
                &format!("{kind}[solver]\nmethod = \"{method}\"\nrtol = 1e-10\natol = 1e-12\n"),
                "t.toml",
                "t",
            )
            .unwrap();
            assert_eq!(s.solver.method.name(), method);
            s.system.sweep_point(&s.solver, &[0.5]).unwrap().rows
        };
        let reference = rows("dop853");
        for method in ["radau5", "auto"] {
            let got = rows(method);
            assert_eq!(got.len(), reference.len(), "{kind}");
            for (a, b) in got.iter().zip(&reference) {
                for (x, y) in a.iter().zip(b) {
                    match (x, y) {
                        (Cell::Num(x), Cell::Num(y)) => assert!(
                            (x - y).abs() <= 1e-6 * y.abs() + 1e-9,
                            "{kind} {method}: {x} vs {y}"
                        ),
                        _ => assert_eq!(x, y, "{kind} {method}"),
                    }
                }
            }
        }
    }
}
