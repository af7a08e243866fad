//! `--set PATH=VALUE`: a field of the scenario set from the command line, applied to the TOML
//! document before validation, so that an override is checked exactly like the file.
//!
//! PATH is a dotted path (`system.n`, `compare.seed`, `solver.rtol`); a segment may be quoted
//! to hold dots (`sweep.fields."system.L"`) and may index an array of tables (`phase[1].grid`).
//! VALUE is a TOML value (`16`, `0.5`, `[4, 8, 16]`, `"uniform"`, `true`); a bare word that is
//! not one (`uniform`) is read as a string. Tables missing on the way are created.

use super::validate::FieldError;

/// One segment of an override's path.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// A parsed `--set PATH=VALUE`.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    path: Vec<Seg>,
    value: toml::Value,
    /// The path as written (for messages).
    pub path_text: String,
    /// The whole flag value as written.
    pub text: String,
}

/// Parse `PATH=VALUE` (the clap value parser of `--set`).
pub fn parse_override(s: &str) -> Result<Override, String> {
    let Some((path_text, value_text)) = split_at_equals(s) else {
        return Err(format!("expected PATH=VALUE (e.g. system.n=16), got `{s}`"));
    };
    let path_text = path_text.trim();
    let path = parse_path(path_text)?;
    let value_text = value_text.trim();
    if value_text.is_empty() {
        return Err(format!(
            "`{path_text}` has no value; write {path_text}=VALUE"
        ));
    }
    let value = match toml::from_str::<toml::Table>(&format!("v = {value_text}")) {
        Ok(mut t) => t.remove("v").expect("the key just written"),
        Err(_) if is_bare_word(value_text) => toml::Value::String(value_text.to_string()),
        Err(_) => {
            return Err(format!(
                "`{value_text}` is not a TOML value (a number, true/false, \"text\", [list])"
            ));
        }
    };
    Ok(Override {
        path,
        value,
        path_text: path_text.to_string(),
        text: s.to_string(),
    })
}

/// The first `=` outside double quotes.
fn split_at_equals(s: &str) -> Option<(&str, &str)> {
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '=' if !quoted => return Some((&s[..i], &s[i + 1..])),
            _ => {}
        }
    }
    None
}

fn is_bare_word(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '+'))
}

fn parse_path(text: &str) -> Result<Vec<Seg>, String> {
    let bad = |why: &str| Err(format!("bad path `{text}`: {why}"));
    let mut segs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        // one key, quoted or bare
        let mut key = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some(c) => key.push(c),
                    None => return bad("an unclosed quote"),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' || c == '[' {
                    break;
                }
                if !(c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                    return bad(&format!("`{c}` in a key (quote keys that hold it)"));
                }
                key.push(c);
                chars.next();
            }
        }
        if key.is_empty() {
            return bad("an empty key");
        }
        segs.push(Seg::Key(key));
        // indices
        while chars.peek() == Some(&'[') {
            chars.next();
            let mut digits = String::new();
            loop {
                match chars.next() {
                    Some(']') => break,
                    Some(c) if c.is_ascii_digit() => digits.push(c),
                    _ => return bad("an index is written [0], [1], ..."),
                }
            }
            let i = digits
                .parse()
                .map_err(|_| format!("bad path `{text}`: an empty index"))?;
            segs.push(Seg::Index(i));
        }
        match chars.next() {
            None => return Ok(segs),
            Some('.') => {}
            Some(c) => return bad(&format!("`{c}` after a key")),
        }
    }
}

/// Apply one override to a scenario document.
pub fn apply(doc: &mut toml::Table, o: &Override) -> Result<(), FieldError> {
    let mut root = toml::Value::Table(std::mem::take(doc));
    let result = apply_to(&mut root, o);
    if let toml::Value::Table(t) = root {
        *doc = t;
    }
    result
}

fn apply_to(root: &mut toml::Value, o: &Override) -> Result<(), FieldError> {
    let err = |message: String| FieldError::new(o.path_text.clone(), message);
    let (last, init) = o.path.split_last().expect("a path has a segment");
    let mut here = root;
    for (k, seg) in init.iter().enumerate() {
        let next_is_index = matches!(o.path.get(k + 1), Some(Seg::Index(_)));
        here = match (seg, here) {
            (Seg::Key(key), toml::Value::Table(t)) => t.entry(key.clone()).or_insert_with(|| {
                if next_is_index {
                    toml::Value::Array(Vec::new())
                } else {
                    toml::Value::Table(toml::Table::new())
                }
            }),
            (Seg::Index(i), toml::Value::Array(a)) => {
                let len = a.len();
                a.get_mut(*i).ok_or_else(|| {
                    err(format!(
                        "index {i} is out of range (the list has {len} entries)"
                    ))
                })?
            }
            (Seg::Key(key), other) => {
                return Err(err(format!(
                    "cannot set `{key}` inside a {} (not a table)",
                    other.type_str()
                )));
            }
            (Seg::Index(i), other) => {
                return Err(err(format!(
                    "cannot index [{i}] into a {} (not a list)",
                    other.type_str()
                )));
            }
        };
    }
    match (last, here) {
        (Seg::Key(key), toml::Value::Table(t)) => {
            t.insert(key.clone(), o.value.clone());
            Ok(())
        }
        (Seg::Index(i), toml::Value::Array(a)) if *i < a.len() => {
            a[*i] = o.value.clone();
            Ok(())
        }
        (Seg::Index(i), toml::Value::Array(a)) => Err(err(format!(
            "index {i} is out of range (the list has {} entries)",
            a.len()
        ))),
        (Seg::Index(i), other) => Err(err(format!(
            "cannot index [{i}] into a {} (not a list)",
            other.type_str()
        ))),
        (Seg::Key(key), other) => Err(err(format!(
            "cannot set `{key}` inside a {} (not a table)",
            other.type_str()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn values_paths_and_tables() {
        let mut d =
            doc("[system]\nkind = \"musat3\"\nn = 8\n[[phase]]\ngrid = 21\n[[phase]]\ngrid = 5\n");
        for s in [
            "system.n=16",
            "system.query=uniform",
            "solver.rtol = 1e-8",
            "phase[1].grid=11",
            "sweep.fields.\"system.L\"=[8, 16]",
            "name=\"x\"",
        ] {
            apply(&mut d, &parse_override(s).unwrap()).unwrap();
        }
        let want = doc(
            "name = \"x\"\n[system]\nkind = \"musat3\"\nn = 16\nquery = \"uniform\"\n\
             [solver]\nrtol = 1e-8\n[[phase]]\ngrid = 21\n[[phase]]\ngrid = 11\n\
             [sweep.fields]\n\"system.L\" = [8, 16]\n",
        );
        assert_eq!(d, want);
    }

    #[test]
    fn bad_overrides_say_why() {
        for (s, want) in [
            ("system.n", "expected PATH=VALUE"),
            ("system.n=", "has no value"),
            ("system..n=1", "an empty key"),
            ("system.n=[1,", "not a TOML value"),
            ("phase[x].grid=1", "index"),
        ] {
            let e = parse_override(s).unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
        let mut d = doc("[system]\nn = 8\n[[phase]]\ngrid = 1\n");
        for (s, want) in [
            ("system.n.x=1", "inside a integer"),
            ("phase[3].grid=1", "out of range"),
            ("system[0]=1", "not a list"),
        ] {
            let e = apply(&mut d, &parse_override(s).unwrap()).unwrap_err();
            assert!(e.to_string().contains(want), "{s}: {e}");
        }
        // a failed override leaves the document as it was
        assert_eq!(d, doc("[system]\nn = 8\n[[phase]]\ngrid = 1\n"));
    }
}
