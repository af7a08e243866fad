use super::*;

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
    let SystemSpec::Musat3(m) = &s.system else {
        panic!("musat3 expected")
    };
    assert_eq!(m.n, Some(8));
    assert_eq!(s.solver.rtol, 1e-10);
    let sweep = s.sweep.unwrap();
    assert_eq!(sweep.n.len(), 24);
    assert_eq!(sweep.n[0], 4);
    assert_eq!(*sweep.n.last().unwrap(), 4096);
    assert_eq!(sweep.thresholds, vec![0.1, 0.5]);
    assert_eq!(s.solve.unwrap().thresholds, vec![0.5]);
}

#[test]
fn geometric_n_is_rounded_to_distinct_integers() {
    let spec = NSpec::Range(NRange {
        from: 2,
        to: 10,
        points: 30,
        spacing: NSpacing::Geometric,
    });
    let n = expand_n(&spec, "sweep.n").unwrap();
    assert_eq!(n, (2..=10).collect::<Vec<_>>());
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
        "t.toml: sweep.n.from: must be >= 2, got 1"
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
        "t.toml: scenario: nothing to run: add a [solve] or a [sweep] section"
    );
    assert_eq!(
        err(&format!("{base}[solve]\n")),
        "t.toml: system.n: required for [solve] (N >= 2)"
    );
    assert!(
        err(&format!("{base}n = 4\nquery = \"middle\"\n[solve]\n"))
            .starts_with("t.toml: system.query: unknown variant `middle`")
    );
    assert!(err("[system\n").starts_with("t.toml: invalid TOML"));
}
