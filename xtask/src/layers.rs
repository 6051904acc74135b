//! The layering ARCHITECTURE.md promises, checked (as rust-analyzer's tidy tests check theirs):
//!
//! - **Crates stand on floors** ([`FLOORS`]): a crate's dependencies (normal, build and dev) are
//!   on lower floors only, so Cargo itself refuses an arrow up. The one allowed exception: an
//!   engine's tests drive the engine through the harness and the testkit
//!   ([`ENGINE_TEST_DEPS`]).
//! - **Modules run one way** inside every lab crate: the `crate::…`, `super::…` and top-level
//!   paths of each top-level module's non-test code form no cycle. A module's files (`foo.rs`,
//!   `foo/…`) are one node; the crate root (`lib.rs`, `main.rs`) is the crate's face and is no
//!   node (it may name every module; what it defines is shared by all).
//! - **The renderers and the judgements never reach the runner**: the xtask's `check`,
//!   `compare`, `merge` and `report` commands name no `lab_harness` item.
//! - **ARCHITECTURE.md names only paths that exist.**

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::paths;

/// Every workspace crate and its floor: floor 0 is shared formats (the protocol), then the
/// libraries built on them, the results, the renderers, execution, the test kit and the CLI.
const FLOORS: [(&str, u32); 16] = [
    ("lab-protocol", 0),
    ("gguf", 0),
    ("lab-fuzz", 0),
    ("engine-kit", 1),
    ("lab-gpu", 1),
    ("model-volume", 1),
    ("engine-candle", 2),
    ("engine-llamacpp", 2),
    ("engine-native", 2),
    ("engine-burn", 2),
    ("engine-mistralrs", 2),
    ("lab-results", 2),
    ("lab-report", 3),
    ("lab-harness", 4),
    ("lab-testkit", 5),
    ("xtask", 6),
];

/// What an engine's tests may use above its floor: the harness runs the engine's binary and
/// the test kit compares it with the reference and the baselines.
const ENGINE_TEST_DEPS: [&str; 4] = ["lab-harness", "lab-results", "lab-testkit", "model-volume"];

/// The xtask commands that read and judge saved runs: they must not compile against the
/// runner.
const READERS: [&str; 4] = ["check.rs", "compare.rs", "merge.rs", "report.rs"];

struct Manifest {
    name: String,
    /// (section, dependency) for every workspace crate it depends on.
    deps: Vec<(String, String)>,
}

fn members() -> Vec<PathBuf> {
    let root = paths::root();
    let text = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let start = text.find("members = [").expect("workspace members");
    let end = start + text[start..].find(']').unwrap();
    text[start..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(|m| root.join(m))
        .collect()
}

/// The crates a `Cargo.toml` depends on, among `known`, per dependency section.
fn read_manifest(path: &Path, known: &BTreeSet<&str>) -> Manifest {
    let text = std::fs::read_to_string(path).unwrap();
    let mut name = String::new();
    let mut section = String::new();
    let mut deps = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.trim_matches(|c| c == '[' || c == ']').to_string();
            continue;
        }
        let key = line
            .split(|c: char| c == '=' || c == '.' || c.is_whitespace())
            .next()
            .unwrap_or("");
        if section == "package" && key == "name" {
            name = line.split('"').nth(1).unwrap_or("").to_string();
        } else if section.ends_with("dependencies") && known.contains(key) {
            deps.push((section.clone(), key.to_string()));
        }
    }
    Manifest { name, deps }
}

fn manifests() -> Vec<Manifest> {
    let known: BTreeSet<&str> = FLOORS.iter().map(|(n, _)| *n).collect();
    members()
        .iter()
        .map(|m| read_manifest(&m.join("Cargo.toml"), &known))
        .collect()
}

/// Every arrow that does not go down a floor, as `from -> to (section)`.
fn arrows_up(manifests: &[Manifest]) -> Vec<String> {
    let floor: BTreeMap<&str, u32> = FLOORS.iter().copied().collect();
    let mut bad = Vec::new();
    for m in manifests {
        let Some(&own) = floor.get(m.name.as_str()) else {
            bad.push(format!("{} has no floor in layers::FLOORS", m.name));
            continue;
        };
        for (section, dep) in &m.deps {
            let allowed = m.name.starts_with("engine-")
                && m.name != "engine-kit"
                && section == "dev-dependencies"
                && ENGINE_TEST_DEPS.contains(&dep.as_str());
            if floor[dep.as_str()] >= own && !allowed {
                bad.push(format!(
                    "{} (floor {own}) -> {dep} (floor {}) in [{section}]",
                    m.name,
                    floor[dep.as_str()]
                ));
            }
        }
    }
    bad
}

/// A file's code without comments and without its `#[cfg(test)]` test module (tests may
/// reach anything).
fn non_test_code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim();
        if t == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|n| n.trim().starts_with("mod tests"))
        {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(line.split(" // ").next().unwrap_or(""));
        out.push('\n');
    }
    out
}

/// The identifiers directly after each occurrence of `prefix` (`crate::` → `results`), braces
/// expanded (`crate::{a::X, b}` → `a`, `b`).
fn heads_after(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        if code[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
        {
            continue;
        }
        let rest = &code[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let body = &group[..group.find('}').unwrap_or(group.len())];
            for item in body.split(',') {
                let head: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !head.is_empty() {
                    out.push(head);
                }
            }
        } else {
            let head: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !head.is_empty() {
                out.push(head);
            }
        }
    }
    out
}

/// The module graph of one crate: top-level module → the top-level modules its non-test code
/// names.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    // Module path of every file: `results/schema.rs` → [results, schema]; `foo/mod.rs` → [foo].
    let module_of = |f: &Path| -> Vec<String> {
        let rel = f.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.last().is_some_and(|l| l == "mod") {
            parts.pop();
        }
        parts
    };
    let top_modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_of(f).first().cloned())
        .filter(|m| m != "lib" && m != "main" && m != "bin")
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let path = module_of(f);
        let Some(top) = path.first().filter(|t| top_modules.contains(*t)) else {
            continue;
        };
        let code = non_test_code(&std::fs::read_to_string(f).unwrap());
        let mut named = heads_after(&code, "crate::");
        // `super::x` from a top-level module's own file names the root's `x`; deeper files
        // stay inside their module unless they climb out with `super::super::`.
        let depth = path.len();
        let climbs_out = if depth == 1 {
            "super::"
        } else {
            "super::super::"
        };
        if depth <= 2 {
            named.extend(heads_after(&code, climbs_out));
        }
        let deps = graph.entry(top.clone()).or_default();
        for n in named {
            if top_modules.contains(&n) && n != *top {
                deps.insert(n);
            }
        }
    }
    graph
}

/// A cycle of `graph`, as `a -> b -> a`, if it has one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<String> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<String> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let at = path.iter().position(|p| p == n).unwrap();
                let mut c = path[at..].to_vec();
                c.push(n.to_string());
                return Some(c.join(" -> "));
            }
            _ => {}
        }
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for d in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, graph, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, graph, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn crates_depend_only_on_lower_floors() {
    let manifests = manifests();
    let names: BTreeSet<&str> = manifests.iter().map(|m| m.name.as_str()).collect();
    for (name, _) in FLOORS {
        // A floor entry for a crate that is not (or no longer) a member is a stale map.
        assert!(
            names.contains(name) || ["gguf", "lab-fuzz"].contains(&name),
            "layers::FLOORS names `{name}`, which is not a workspace member"
        );
    }
    let bad = arrows_up(&manifests);
    assert!(
        bad.is_empty(),
        "dependencies that do not go down a floor (see ARCHITECTURE.md, \"Floors\"):\n{}",
        bad.join("\n")
    );
}

#[test]
fn an_arrow_up_is_caught() {
    let known: BTreeSet<&str> = FLOORS.iter().map(|(n, _)| *n).collect();
    let dir = std::env::temp_dir().join(format!("lab-layers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml = dir.join("Cargo.toml");
    std::fs::write(
        &toml,
        "[package]\nname = \"lab-results\"\n\n[dependencies]\nlab-protocol.workspace = true\nlab-harness = { workspace = true }\n",
    )
    .unwrap();
    let m = read_manifest(&toml, &known);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        arrows_up(&[m]),
        ["lab-results (floor 2) -> lab-harness (floor 4) in [dependencies]"]
    );
}

#[test]
fn modules_of_every_lab_crate_form_no_cycle() {
    let mut checked = 0;
    for member in members() {
        let src = member.join("src");
        let graph = module_graph(&src);
        if let Some(c) = find_cycle(&graph) {
            panic!(
                "{}: the modules form a cycle: {c} (module dependencies run one way; see ARCHITECTURE.md)",
                src.strip_prefix(paths::root()).unwrap_or(&src).display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} crates were checked");
}

#[test]
fn a_module_cycle_is_caught() {
    let dir = std::env::temp_dir().join(format!("lab-layers-mod-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("results")).unwrap();
    std::fs::write(dir.join("lib.rs"), "pub mod a;\npub mod results;\n").unwrap();
    std::fs::write(
        dir.join("a.rs"),
        "use crate::results::X;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n}\n",
    )
    .unwrap();
    std::fs::write(dir.join("results/mod.rs"), "mod schema;\n").unwrap();
    std::fs::write(
        dir.join("results/schema.rs"),
        "// crate::b is only a comment\npub struct X(crate::a::Y);\nuse super::load;\n",
    )
    .unwrap();
    std::fs::write(dir.join("b.rs"), "use crate::{results::X, a};\n").unwrap();
    let graph = module_graph(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(graph["b"], BTreeSet::from(["a".into(), "results".into()]));
    assert_eq!(find_cycle(&graph).as_deref(), Some("a -> results -> a"));
}

#[test]
fn readers_of_saved_runs_never_name_the_harness() {
    for file in READERS {
        let path = paths::root().join("xtask/src").join(file);
        let code = non_test_code(&std::fs::read_to_string(&path).unwrap());
        assert!(
            !code.contains("lab_harness"),
            "xtask/src/{file} names lab_harness: reading and judging saved runs must not compile against the runner"
        );
    }
}

/// The paths ARCHITECTURE.md names in backticks: every one that starts at a top directory of
/// the checkout, or names a source file (`name.rs`, `a/b.py`) — the latter relative to the checkout,
/// or to the crate whose `### <dir>` section it stands in (`<dir>/…` or `<dir>/src/…`).
fn architecture_paths(text: &str) -> Vec<(Option<String>, String)> {
    const TOPS: [&str; 12] = [
        "crates/",
        "engines/",
        "xtask/",
        "prompts/",
        "baselines/",
        "results/",
        "claims/",
        "containers/",
        "nix/",
        "fuzz/",
        ".github/",
        ".ci/",
    ];
    // Source files only: a report's or a run's file names (`report.md`, `run.json`) are
    // outputs, not paths of the checkout.
    const FILES: [&str; 6] = [".rs", ".py", ".nix", ".toml", ".yml", ".cjs"];
    let mut section = None;
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("### ") {
            section = h.split('`').nth(1).map(str::to_string);
        }
        for (i, span) in line.split('`').enumerate() {
            if i % 2 == 0 || span.contains([' ', '<', '*', '{', '(']) {
                continue;
            }
            let top = TOPS.iter().any(|t| span.starts_with(t));
            let file = FILES.iter().any(|e| span.ends_with(e)) && !span.starts_with('.');
            if top || (file && span.contains('/')) || (file && section.is_some()) {
                out.push((section.clone(), span.to_string()));
            }
        }
    }
    out
}

/// Whether a file called `name` lies anywhere under `dir` (a section names its crate's files by
/// name: `schema.rs` is `src/results/schema.rs`).
fn file_named_under(dir: &Path, name: &str) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "target") {
                    stack.push(p);
                }
            } else if p.file_name().is_some_and(|n| n == name) {
                return true;
            }
        }
    }
    false
}

#[test]
fn every_path_architecture_md_names_exists() {
    let root = paths::root();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let paths = architecture_paths(&text);
    let missing: Vec<String> = paths
        .iter()
        .filter(|(section, p)| {
            let mut candidates = vec![root.join(p)];
            if let Some(s) = section {
                candidates.push(root.join(s).join(p));
                candidates.push(root.join(s).join("src").join(p));
            }
            let bare_in_section = section
                .as_ref()
                .filter(|_| !p.contains('/'))
                .is_some_and(|s| file_named_under(&root.join(s), p));
            !candidates.iter().any(|c| c.exists()) && !bare_in_section
        })
        .map(|(section, p)| match section {
            Some(s) => format!("{p} (in {s})"),
            None => p.clone(),
        })
        .collect();
    assert!(
        paths.len() >= 40,
        "ARCHITECTURE.md names only {} paths",
        paths.len()
    );
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist: {missing:?}"
    );
}

#[test]
fn architecture_paths_are_found_in_their_sections() {
    let text = "A `crates/x/y.rs` and `not a path`.\n### `crates/lab-report`\n`html.rs`, `<run>/x.json`, `report.md`, `a/b.py`\n";
    assert_eq!(
        architecture_paths(text),
        [
            (None, "crates/x/y.rs".to_string()),
            (
                Some("crates/lab-report".into()),
                "crates/lab-report".to_string()
            ),
            (Some("crates/lab-report".into()), "html.rs".to_string()),
            (Some("crates/lab-report".into()), "a/b.py".to_string()),
        ]
    );
}
