//! The module rules of ARCHITECTURE.md, checked on the source: imports only go down (front end ->
//! jobs -> systems -> error -> (train, flow) -> (scenario, report, interrupt) -> numerics) and there are no
//! import circles, between top-level modules or between files.
//!
//! The analysis: every `crate::a::b` path, every
//! `use crate::{...}` group and every `super::` path outside test code names the longest
//! module prefix that is a file under `src/`; a file naming one of its own ancestors does not
//! count (that is how `super::Item` reaches the parent). Doc links count too: a module that
//! names a layer above it knows about it. Test code is left out: files declared under
//! `#[cfg(test)]` (and files named `*tests.rs`), and everything from an inline
//! `#[cfg(test)] mod name {` to the end of its file. `crate::Name` for a re-export of
//! `lib.rs` (`pub use error::Error`) names the module it comes from.

use crate::support::repo;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// The layer of each top-level module: a module may name modules of its own layer or below.
/// A new top-level module needs a line here (the test says so).
const LAYERS: &[(&str, u8, &str)] = &[
    ("cli", 6, "front end"),
    ("jobs", 5, "jobs"),
    ("systems", 4, "systems"),
    ("error", 3, "the crate's error"),
    ("train", 2, "engines"),
    ("flow", 2, "engines"),
    ("scenario", 1, "leaves"),
    ("report", 1, "leaves"),
    ("interrupt", 1, "leaves"),
    ("numerics", 0, "numerics"),
];

/// A module path under `src/`: `["systems", "musat", "data"]`; the crate root is `[]`.
type ModPath = Vec<String>;

/// Where an edge was seen: file, line, the path as written.
#[derive(Clone, Debug)]
struct Witness {
    file: PathBuf,
    line: usize,
    path: String,
}

impl std::fmt::Display for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // a use group over several lines, on one
        let path = self.path.split_whitespace().collect::<Vec<_>>().join(" ");
        write!(f, "{}:{}: {}", self.file.display(), self.line, path)
    }
}

/// The import graph between files, with the first place each edge was seen.
struct Graph {
    modules: BTreeSet<ModPath>,
    edges: BTreeMap<ModPath, BTreeMap<ModPath, Witness>>,
}

fn show(m: &[String]) -> String {
    if m.is_empty() {
        "lib".to_string()
    } else {
        m.join("/")
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` -> `[a, b]`, `src/a/mod.rs` -> `[a]`, `src/lib.rs` -> `[]`.
fn module_path(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: ModPath = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The text before the first inline `#[cfg(test)] mod name {` (test code runs to the end of
/// the file by convention), and the names of the modules declared `#[cfg(test)] mod name;`.
fn non_test_code(text: &str) -> (&str, Vec<String>) {
    let mut test_files = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(at) = rest.find("#[cfg(test)]") {
        let after = rest[at + "#[cfg(test)]".len()..].trim_start();
        let after = after
            .strip_prefix("pub(crate)")
            .unwrap_or(after)
            .trim_start();
        let after = after.strip_prefix("pub").unwrap_or(after).trim_start();
        if let Some(decl) = after.strip_prefix("mod ") {
            let name: String = decl
                .trim_start()
                .chars()
                .take_while(|&c| is_ident(c))
                .collect();
            let tail = decl.trim_start()[name.len()..].trim_start();
            if tail.starts_with('{') {
                return (&text[..offset + at], test_files);
            }
            if tail.starts_with(';') {
                test_files.push(name);
            }
        }
        offset += at + 1;
        rest = &rest[at + 1..];
    }
    (text, test_files)
}

/// Parses a use tree at `s` (after `crate::` or `super::`): `a::b`, `a::{b, c::d}`,
/// `{a, b as c}`, `self`, `*`. Pushes every full path (`base` + segments) to `out`.
fn use_tree(s: &str, base: &[String], out: &mut Vec<ModPath>) -> usize {
    let mut i = 0;
    let mut path: ModPath = base.to_vec();
    let bytes = s.as_bytes();
    loop {
        let ident: String = s[i..].chars().take_while(|&c| is_ident(c)).collect();
        if !ident.is_empty() {
            i += ident.len();
            if ident != "self" {
                path.push(ident);
            }
            if s[i..].starts_with("::") {
                i += 2;
                continue;
            }
            out.push(path);
            // `a::b as c`: the new name is not a path
            let rest = s[i..].trim_start();
            if let Some(alias) = rest
                .strip_prefix("as")
                .filter(|r| r.starts_with(char::is_whitespace))
            {
                let alias = alias.trim_start();
                let name = alias.chars().take_while(|&c| is_ident(c)).count();
                i = s.len() - alias.len() + name;
            }
            return i;
        }
        if bytes.get(i) == Some(&b'{') {
            i += 1;
            loop {
                let skip = s[i..].len() - s[i..].trim_start().len();
                i += skip;
                match bytes.get(i) {
                    None => return i,
                    Some(b'}') => return i + 1,
                    Some(b',') => i += 1,
                    _ => {
                        let used = use_tree(&s[i..], &path, out);
                        if used == 0 {
                            i += 1; // `*`, `as name`, anything else: skip a character
                        } else {
                            i += used;
                        }
                    }
                }
            }
        }
        if i > 0 && path.len() > base.len() {
            out.push(path); // `a::*`
        }
        return i;
    }
}

/// Every module path named in `code` (of the file at module path `here`), with its line and
/// the path as written (use groups may span lines).
fn named_paths(code: &str, here: &[String]) -> Vec<(usize, String, ModPath)> {
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].chars().next_back().is_some_and(is_ident) {
            continue; // `mycrate::`
        }
        let start = at + "crate::".len();
        let mut paths = Vec::new();
        let used = use_tree(&code[start..], &[], &mut paths);
        let written = &code[at..start + used];
        found.extend(
            paths
                .into_iter()
                .map(|p| (line_of(at), written.to_string(), p)),
        );
    }
    for (at, _) in code.match_indices("super::") {
        let before = code[..at].trim_end_matches("super::");
        if before.len() != at || before.chars().next_back().is_some_and(is_ident) {
            continue; // the second `super::` of `super::super::`, or `xsuper::`
        }
        let mut rest = &code[at..];
        let mut base = here.to_vec();
        while let Some(r) = rest.strip_prefix("super::") {
            rest = r;
            base.pop();
        }
        let start = code.len() - rest.len();
        let mut paths = Vec::new();
        let used = use_tree(rest, &base, &mut paths);
        let written = &code[at..start + used];
        found.extend(
            paths
                .into_iter()
                .map(|p| (line_of(at), written.to_string(), p)),
        );
    }
    found.sort_by_key(|f| f.0);
    found
}

/// The names `lib.rs` re-exports at the crate root (`pub use error::Error;`,
/// `pub use cli::{Cli, run};`), with the module each comes from.
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for stmt in lib.split(';') {
        let Some(tree) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let mut paths = Vec::new();
        use_tree(tree.trim(), &[], &mut paths);
        for p in paths {
            if p.len() >= 2 {
                out.insert(p[p.len() - 1].clone(), p[0].clone());
            }
        }
    }
    out
}

fn graph() -> Graph {
    let src = repo().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    // src/main.rs is the binary's own crate root: it names the library as `ihdyn::`.
    files.retain(|f| f != &src.join("main.rs"));
    let texts: BTreeMap<ModPath, (PathBuf, String)> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            (
                module_path(&src, f),
                (f.strip_prefix(repo()).unwrap().to_path_buf(), text),
            )
        })
        .collect();
    // Test files: declared `#[cfg(test)] mod name;` by their parent, or named `*tests.rs`.
    let mut test_modules: BTreeSet<ModPath> = BTreeSet::new();
    for (m, (_, text)) in &texts {
        for name in non_test_code(text).1 {
            let mut child = m.clone();
            child.push(name);
            test_modules.insert(child);
        }
    }
    let is_test = |m: &ModPath| {
        m.last().is_some_and(|n| n.ends_with("tests"))
            || test_modules.iter().any(|t| m.starts_with(t))
    };
    let modules: BTreeSet<ModPath> = texts.keys().filter(|m| !is_test(m)).cloned().collect();
    let reexports = root_reexports(&texts[&Vec::new()].1);
    // The longest prefix of `p` that is a module file (the crate root is never a target).
    let resolve = |p: &ModPath| -> Option<ModPath> {
        let mut p = p.clone();
        if let Some(m) = p.first().and_then(|n| reexports.get(n)) {
            p = vec![m.clone()];
        }
        (1..=p.len())
            .rev()
            .map(|k| p[..k].to_vec())
            .find(|k| modules.contains(k))
    };
    let mut edges: BTreeMap<ModPath, BTreeMap<ModPath, Witness>> = BTreeMap::new();
    for m in &modules {
        let (file, text) = &texts[m];
        for (line, written, path) in named_paths(non_test_code(text).0, m) {
            let Some(target) = resolve(&path) else {
                continue;
            };
            if &target == m || m.starts_with(&target) {
                continue; // itself, or one of its ancestors (`super::Item`)
            }
            edges
                .entry(m.clone())
                .or_default()
                .entry(target)
                .or_insert(Witness {
                    file: file.clone(),
                    line,
                    path: written,
                });
        }
    }
    Graph { modules, edges }
}

/// The strongly connected components with more than one node (Tarjan).
fn cycles(
    nodes: &BTreeSet<ModPath>,
    edges: &BTreeMap<ModPath, BTreeSet<ModPath>>,
) -> Vec<Vec<ModPath>> {
    struct State<'a> {
        edges: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<ModPath, usize>,
        low: BTreeMap<ModPath, usize>,
        stack: Vec<ModPath>,
        on_stack: BTreeSet<ModPath>,
        out: Vec<Vec<ModPath>>,
    }
    fn visit(s: &mut State, v: &ModPath) {
        let i = s.index.len();
        s.index.insert(v.clone(), i);
        s.low.insert(v.clone(), i);
        s.stack.push(v.clone());
        s.on_stack.insert(v.clone());
        for w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(&w);
                let done = &w == v;
                comp.push(w);
                if done {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in nodes {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// One shortest circle through the first node of a strongly connected component (BFS).
fn one_cycle(comp: &[ModPath], edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<ModPath> {
    let start = &comp[0];
    let mut prev: BTreeMap<&ModPath, &ModPath> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in edges.get(v).into_iter().flatten() {
            if !comp.contains(w) {
                continue;
            }
            if w == start {
                let mut path = vec![v.clone()];
                let mut at = v;
                while at != start {
                    at = prev[at];
                    path.push(at.clone());
                }
                path.reverse();
                path.push(start.clone());
                return path;
            }
            if !prev.contains_key(w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    unreachable!("a strongly connected component has a circle")
}

/// Each circle as `a -> b -> a`, with the line that makes each step.
fn describe_cycles(
    what: &str,
    comps: &[Vec<ModPath>],
    edges: &BTreeMap<ModPath, BTreeSet<ModPath>>,
    witness: impl Fn(&ModPath, &ModPath) -> Witness,
) -> Vec<String> {
    comps
        .iter()
        .map(|comp| {
            let circle = one_cycle(comp, edges);
            let chain: Vec<String> = circle.iter().map(|m| show(m)).collect();
            let steps: Vec<String> = circle
                .windows(2)
                .map(|w| {
                    format!(
                        "    {} -> {}: {}",
                        show(&w[0]),
                        show(&w[1]),
                        witness(&w[0], &w[1])
                    )
                })
                .collect();
            format!(
                "{what} circle {} (the component: {}):\n{}",
                chain.join(" -> "),
                comp.iter().map(|m| show(m)).collect::<Vec<_>>().join(", "),
                steps.join("\n")
            )
        })
        .collect()
}

fn layer(top: &str) -> Option<(u8, &'static str)> {
    LAYERS.iter().find(|l| l.0 == top).map(|l| (l.1, l.2))
}

/// The edges between top-level modules (`a -> b` for every file edge from under `a` to under
/// `b`), each with the first line that makes it.
fn top_level_edges(g: &Graph) -> BTreeMap<(String, String), Witness> {
    let mut out = BTreeMap::new();
    for (from, to_all) in &g.edges {
        for (to, w) in to_all {
            if let (Some(a), Some(b)) = (from.first(), to.first())
                && a != b
            {
                out.entry((a.clone(), b.clone()))
                    .or_insert_with(|| w.clone());
            }
        }
    }
    out
}

#[test]
fn imports_only_go_down_the_layers() {
    let g = graph();
    let top = top_level_edges(&g);
    // The design's main arrows must be seen, or the checks would pass on a parser that sees
    // nothing. If the design changes, change this list with it.
    for (a, b) in [
        ("cli", "jobs"),
        ("jobs", "systems"),
        ("systems", "flow"),
        ("systems", "train"),
        ("flow", "numerics"),
    ] {
        assert!(
            top.contains_key(&(a.to_string(), b.to_string())),
            "the import parser found no {a} -> {b} edge; top-level edges seen: {:?}",
            top.keys().collect::<Vec<_>>()
        );
    }
    let mut problems = Vec::new();
    let tops: BTreeSet<&str> = g
        .modules
        .iter()
        .filter_map(|m| m.first())
        .map(String::as_str)
        .collect();
    for top in &tops {
        if layer(top).is_none() {
            problems.push(format!(
                "src/{top}: a new top-level module; give it a layer in LAYERS (tests/it/architecture.rs) and ARCHITECTURE.md"
            ));
        }
    }
    // Every offending file edge, not only the first per pair of top-level modules.
    for (from, to_all) in &g.edges {
        for (to, w) in to_all {
            let (Some(a), Some(b)) = (from.first(), to.first()) else {
                continue; // lib.rs declares and re-exports the modules
            };
            if let (Some((la, na)), Some((lb, nb))) = (layer(a), layer(b))
                && lb > la
            {
                problems.push(format!(
                    "{} -> {}: `{a}` ({na}, layer {la}) names `{b}` ({nb}, layer {lb}), a layer above it\n    {w}",
                    show(from),
                    show(to)
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "imports must only go down: front end > jobs > systems > error > (train, flow) > (scenario, report) > numerics\n{}",
        problems.join("\n")
    );
}

#[test]
fn no_import_circles_between_modules_or_files() {
    let g = graph();
    let file_edges: BTreeMap<ModPath, BTreeSet<ModPath>> = g
        .edges
        .iter()
        .map(|(a, bs)| (a.clone(), bs.keys().cloned().collect()))
        .collect();
    let top_witness = top_level_edges(&g);
    let mut top_edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (a, b) in top_witness.keys() {
        top_edges
            .entry(vec![a.clone()])
            .or_default()
            .insert(vec![b.clone()]);
    }
    let tops: BTreeSet<ModPath> = g
        .modules
        .iter()
        .filter(|m| !m.is_empty())
        .map(|m| vec![m[0].clone()])
        .collect();
    let mut problems = describe_cycles(
        "top-level",
        &cycles(&tops, &top_edges),
        &top_edges,
        |a, b| top_witness[&(a[0].clone(), b[0].clone())].clone(),
    );
    problems.extend(describe_cycles(
        "file",
        &cycles(&g.modules, &file_edges),
        &file_edges,
        |a, b| g.edges[a][b].clone(),
    ));
    assert!(
        problems.is_empty(),
        "import circles:\n{}",
        problems.join("\n")
    );
}

/// The parser itself, on the forms the source uses.
#[test]
fn the_import_parser_reads_paths_groups_and_super() {
    let here: ModPath = vec!["systems".into(), "musat".into(), "data".into()];
    let code = "use crate::flow::{EventSpec, solution::Solution as S};\n\
                use crate::{numerics::stats, report::{self, table::Table}};\n\
                let e: crate::Error = super::super::plugin::System::x();\n\
                use super::{musat3::Musat3, *};\n\
                fn f() -> mycrate::x::Y { $crate::numerics::expo() }\n";
    let got: Vec<(usize, String)> = named_paths(code, &here)
        .into_iter()
        .map(|(line, _, p)| (line, p.join("::")))
        .collect();
    let want = [
        (1, "flow::EventSpec"),
        (1, "flow::solution::Solution"),
        (2, "numerics::stats"),
        (2, "report"),
        (2, "report::table::Table"),
        (3, "Error"),
        (3, "systems::plugin::System::x"),
        (4, "systems::musat::musat3::Musat3"),
        (5, "numerics::expo"),
    ];
    let want: Vec<(usize, String)> = want.iter().map(|(l, p)| (*l, p.to_string())).collect();
    assert_eq!(got, want);
    let lib = "pub mod cli;\npub use cli::{Cli, run};\npub use error::Error;\n";
    let re = root_reexports(lib);
    assert_eq!(re["Error"], "error");
    assert_eq!(re["run"], "cli");
    let text = "fn a() {}\n#[cfg(test)]\nmod tests;\n#[cfg(test)]\npub(crate) mod testing;\n\
                #[cfg(test)]\nmod inline {\n    use crate::jobs::x;\n}\n";
    let (code, files) = non_test_code(text);
    assert_eq!(files, ["tests", "testing"]);
    assert!(!code.contains("crate::jobs"), "{code}");
}
