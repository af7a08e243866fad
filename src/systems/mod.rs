//! The reduced systems and the models trained alongside them, one folder per paper, and the
//! one registry that maps `[system] kind = "..."` to a system.
//!
//! A new system is a new folder here that implements [`System`] plus one line in
//! [`REGISTRY`]; every generic job (`[solve]`, `[sweep]`, `[[phase]]`) then works for it.

pub mod chen;
pub mod musat;
pub mod plugin;
pub mod wang;

pub use plugin::System;

use crate::scenario::FieldError;

/// One registered kind: its name, the top-level scenario sections its own jobs read, a
/// one-line description, and the parser of its `[system]` table (without `kind`).
pub struct Kind {
    pub name: &'static str,
    pub sections: &'static [&'static str],
    pub about: &'static str,
    pub parse: fn(toml::Table) -> Result<Box<dyn System>, FieldError>,
}

/// Every system `ihdyn` knows, in the order they are listed in messages.
pub const REGISTRY: &[Kind] = &[musat::MUSAT3, musat::MUSAT19, wang::RICH, chen::GIH];

/// The registered kind called `name`.
pub fn kind(name: &str) -> Option<&'static Kind> {
    REGISTRY.iter().find(|k| k.name == name)
}

/// The kinds whose jobs read the top-level section `section` (`[standard]` belongs to both
/// Musat systems).
pub fn owners_of(section: &str) -> Vec<&'static Kind> {
    REGISTRY
        .iter()
        .filter(|k| k.sections.contains(&section))
        .collect()
}

/// The kinds, quoted and comma-separated, for messages.
pub fn kind_list() -> String {
    REGISTRY
        .iter()
        .map(|k| format!("\"{}\"", k.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parse `[system]`: its `kind`, then the kind's own table.
pub fn parse_system(mut table: toml::Table) -> Result<Box<dyn System>, FieldError> {
    let name = match table.remove("kind") {
        None => {
            return Err(FieldError::new(
                "system.kind",
                format!("required; one of {}", kind_list()),
            ));
        }
        Some(toml::Value::String(s)) => s,
        Some(other) => {
            return Err(FieldError::new(
                "system.kind",
                format!("expected a string, got {}", other.type_str()),
            ));
        }
    };
    let k = kind(&name).ok_or_else(|| {
        FieldError::new(
            "system.kind",
            format!("unknown system `{name}`, expected one of {}", kind_list()),
        )
    })?;
    (k.parse)(table)
}
