//! Property test: random scenario documents never panic the parser; each either validates or is
//! rejected with an error naming a field (never a crash, never an unnamed error).

use ihdyn::jobs::plan::parse_str;
use ihdyn::scenario::ScenarioError;
use proptest::prelude::*;

fn scalar() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        (-5i64..5000).prop_map(toml::Value::Integer),
        prop_oneof![
            Just(0.5),
            Just(-1.0),
            Just(0.0),
            Just(1e-12),
            Just(1e300),
            Just(f64::NAN),
            Just(f64::INFINITY),
            -10.0..10.0f64
        ]
        .prop_map(toml::Value::Float),
        prop_oneof![
            Just("musat3"),
            Just("last"),
            Just("uniform"),
            Just("linear"),
            Just("log"),
            Just("geometric"),
            Just("dopri5"),
            Just("dop853"),
            Just("beta2"),
            Just("alpha3"),
            Just("gamma3"),
            Just("fixed"),
            Just("reference"),
            Just(""),
            Just("nonsense"),
            Just("system.n"),
        ]
        .prop_map(|s| toml::Value::String(s.to_string())),
        any::<bool>().prop_map(toml::Value::Boolean),
    ]
}

fn value() -> impl Strategy<Value = toml::Value> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("kind"),
        Just("n"),
        Just("query"),
        Just("loss_scale"),
        Just("init"),
        Just("freeze"),
        Just("rtol"),
        Just("method"),
        Just("atol"),
        Just("t_max"),
        Just("horizon"),
        Just("max_steps"),
        Just("thresholds"),
        Just("loss_fraction"),
        Just("margin"),
        Just("samples"),
        Just("spacing"),
        Just("from"),
        Just("to"),
        Just("points"),
        Just("fields"),
        Just("x"),
        Just("y"),
        Just("x_range"),
        Just("y_range"),
        Just("grid"),
        Just("starts"),
        Just("fixed"),
        Just("system.n"),
        Just("system.loss_scale"),
        Just("alpha3"),
        Just("speed"),
    ]
    .prop_map(str::to_string)
}

fn section() -> impl Strategy<Value = (String, toml::Value)> {
    let table = prop::collection::btree_map(key(), value(), 0..6);
    (
        prop_oneof![
            Just("system"),
            Just("solver"),
            Just("solve"),
            Just("sweep"),
            Just("phase"),
            Just("name"),
            Just("description"),
            Just("plots"),
        ],
        table,
        any::<bool>(),
    )
        .prop_map(|(name, mut t, musat)| {
            if name == "system" && musat {
                t.insert("kind".into(), toml::Value::String("musat3".into()));
            }
            let v = match name {
                "name" | "description" => toml::Value::String("x".into()),
                "phase" => toml::Value::Array(vec![toml::Value::Table(t.into_iter().collect())]),
                _ => toml::Value::Table(t.into_iter().collect()),
            };
            (name.to_string(), v)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn random_documents_parse_or_name_a_field(sections in prop::collection::vec(section(), 0..6)) {
        let doc: toml::Table = sections.into_iter().collect();
        let text = toml::to_string(&doc).expect("a table serializes");
        match parse_str(&text, "p.toml", "p") {
            Ok(s) => {
                prop_assert!(s.solve.is_some() || s.sweep.is_some() || !s.phase.is_empty());
            }
            Err(ScenarioError::Field { error, .. }) => {
                prop_assert!(!error.field.is_empty());
                let head = error.field.split(['.', '[']).next().unwrap();
                prop_assert!(
                    ["scenario", "name", "description", "system", "solver", "solve", "sweep", "phase", "plots"].contains(&head),
                    "unexpected field {} ({})", error.field, error.message
                );
                prop_assert!(!error.message.is_empty());
            }
            Err(other) => prop_assert!(false, "not a field error: {other}\n{text}"),
        }
    }
}
