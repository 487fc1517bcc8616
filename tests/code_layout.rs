//! The shape of the code, as the README's "How the code is laid out" promises it, in both crates
//! of the workspace (`src/`, `server/src/`): no file past 400 lines, and no import loop between
//! the files of a crate (a file never imports a module that, through its own imports, imports it
//! back, nor its own facade).
//!
//! The imports are read from `use` declarations and `mod` declarations (a facade depends on the
//! files it declares); doc links and `#[cfg(test)]` code are not imports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 400;

/// A module path inside the crate: `[]` is the crate root, `["store", "fill"]` is
/// `src/store/fill.rs`.
type ModPath = Vec<String>;

struct SourceFile {
    path: PathBuf,
    /// Part of a `#[cfg(test)] mod tests`: it may reach anywhere.
    is_test_module: bool,
    module: ModPath,
    /// `mod.rs` or `lib.rs`: its children are declared inside it.
    declares_children: bool,
    text: String,
}

fn source_files(src: &Path, dir: &Path, out: &mut Vec<SourceFile>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(src, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(src).unwrap();
            let mut module: ModPath = relative
                .with_extension("")
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            if module.first().is_some_and(|m| m == "bin") {
                continue; // each binary is a crate of its own
            }
            let is_test_module = module.iter().any(|m| m == "tests");
            let declares_children =
                matches!(module.last().map(String::as_str), Some("mod") | Some("lib"));
            if declares_children {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            out.push(SourceFile {
                path,
                is_test_module,
                module,
                declares_children,
                text,
            });
        }
    }
}

/// The `src/` of the library and of the server crate.
fn crates() -> [PathBuf; 2] {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    [root.join("src"), root.join("server/src")]
}

fn files_of(src: &Path) -> Vec<SourceFile> {
    let mut files = Vec::new();
    source_files(src, src, &mut files);
    files
}

/// The text without its `#[cfg(test)]` items (test modules may reach anywhere).
fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            // Skip the item that follows: one line, or a braced block.
            let mut depth = 0i32;
            for next in lines.by_ref() {
                depth += next.matches('{').count() as i32 - next.matches('}').count() as i32;
                if depth <= 0 && (next.trim_end().ends_with(';') || next.trim_end().ends_with('}'))
                {
                    break;
                }
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Every `use` declaration's paths, braces expanded: `use a::{b, c::d};` gives `a::b`, `a::c::d`.
fn use_paths(text: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = text;
    while let Some(at) = find_use(rest) {
        let after = &rest[at..];
        let end = after.find(';').unwrap_or(after.len());
        let tree: String = after[..end].split_whitespace().collect();
        expand(&[], &tree, &mut paths);
        rest = &after[end..];
    }
    paths
}

/// The start of the next `use` tree (after `use `, `pub use `, `pub(crate) use `).
fn find_use(text: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let body = trimmed
            .strip_prefix("pub(crate) ")
            .or_else(|| trimmed.strip_prefix("pub "))
            .unwrap_or(trimmed);
        if let Some(tree) = body.strip_prefix("use ") {
            return Some(offset + (line.len() - tree.len()));
        }
        offset += line.len();
    }
    None
}

fn expand(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
    if let Some(inner) = tree.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(prefix, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(prefix, &inner[start..], out);
        return;
    }
    if tree.is_empty() {
        return;
    }
    match tree.split_once("::") {
        Some((head, rest)) => {
            let mut path = prefix.to_vec();
            path.push(head.to_owned());
            expand(&path, rest, out);
        }
        None => {
            let mut path = prefix.to_vec();
            path.push(tree.split(" as ").next().unwrap().to_owned());
            out.push(path);
        }
    }
}

struct Crate {
    modules: BTreeSet<ModPath>,
    /// What the crate root re-exports, by name: `ImageId` → `image_id`.
    root_aliases: BTreeMap<String, ModPath>,
}

impl Crate {
    /// The module file a path names: its longest prefix that is a module (the crate root's
    /// re-exports resolved to the modules defining them).
    fn resolve(&self, path: &[String]) -> Option<ModPath> {
        for len in (1..=path.len()).rev() {
            if self.modules.contains(&path[..len]) {
                return Some(path[..len].to_vec());
            }
        }
        path.first()
            .and_then(|name| self.root_aliases.get(name).cloned())
    }
}

/// The file-level import graph of `src/`.
fn graph(files: &[SourceFile]) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let modules: BTreeSet<ModPath> = files.iter().map(|f| f.module.clone()).collect();
    let mut root_aliases = BTreeMap::new();
    let root = files.iter().find(|f| f.module.is_empty()).unwrap();
    for path in use_paths(&without_tests(&root.text)) {
        if let (Some(first), Some(name)) = (path.first(), path.last()) {
            if modules.contains(&vec![first.clone()]) {
                root_aliases.insert(name.clone(), vec![first.clone()]);
            }
        }
    }
    let krate = Crate {
        modules,
        root_aliases,
    };
    let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for file in files.iter().filter(|f| !f.is_test_module) {
        let text = without_tests(&file.text);
        let here = &file.module;
        let deps = edges.entry(here.clone()).or_default();
        for path in use_paths(&text) {
            let absolute: Option<Vec<String>> = match path.first().map(String::as_str) {
                Some("crate") => Some(path[1..].to_vec()),
                Some("super") => {
                    let supers = path.iter().take_while(|p| *p == "super").count();
                    let base = &here[..here.len().saturating_sub(supers)];
                    Some(
                        base.iter()
                            .cloned()
                            .chain(path[supers..].iter().cloned())
                            .collect(),
                    )
                }
                Some("self") => Some(
                    here.iter()
                        .cloned()
                        .chain(path[1..].iter().cloned())
                        .collect(),
                ),
                // A child declared here and used by name (`pub use fill::FillWriter;`).
                Some(first) if file.declares_children => {
                    let child: ModPath = here.iter().cloned().chain([first.to_owned()]).collect();
                    krate
                        .modules
                        .contains(&child)
                        .then(|| here.iter().cloned().chain(path.iter().cloned()).collect())
                }
                _ => None,
            };
            if let Some(target) = absolute.and_then(|p| krate.resolve(&p)) {
                if &target != here {
                    deps.insert(target);
                }
            }
        }
        if file.declares_children {
            for line in text.lines() {
                let line = line.trim();
                let declared = line
                    .strip_prefix("pub(crate) mod ")
                    .or_else(|| line.strip_prefix("pub mod "))
                    .or_else(|| line.strip_prefix("mod "));
                if let Some(name) = declared.and_then(|d| d.strip_suffix(';')) {
                    deps.insert(here.iter().cloned().chain([name.to_owned()]).collect());
                }
            }
        }
    }
    edges
}

fn show(module: &ModPath) -> String {
    if module.is_empty() {
        "lib".into()
    } else {
        module.join("/")
    }
}

#[test]
fn no_file_in_src_passes_400_lines() {
    let long: Vec<String> = crates()
        .iter()
        .flat_map(|src| files_of(src))
        .filter(|f| f.text.lines().count() > MAX_LINES)
        .map(|f| format!("{} ({} lines)", f.path.display(), f.text.lines().count()))
        .collect();
    assert!(long.is_empty(), "split these along their ideas: {long:?}");
}

#[test]
fn no_file_imports_a_module_that_imports_it_back() {
    let [library, server] = crates();
    let edges = graph(&files_of(&library));
    // Sanity: the reader sees the imports it should.
    let fill = edges
        .get(&vec!["store".to_owned(), "fill".to_owned()])
        .unwrap();
    assert!(
        fill.contains(&vec!["store".to_owned(), "cache".to_owned()]),
        "{fill:?}"
    );
    let mut loops = import_loops(&edges);
    loops.extend(import_loops(&graph(&files_of(&server))));
    assert!(loops.is_empty(), "import loops: {loops:#?}");
}

/// The loops in one crate's import graph, each as `a -> b -> a`.
fn import_loops(edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<String> {
    let mut loops = Vec::new();
    let mut state: BTreeMap<&ModPath, u8> = BTreeMap::new();
    let mut stack: Vec<&ModPath> = Vec::new();
    fn visit<'a>(
        at: &'a ModPath,
        edges: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        state: &mut BTreeMap<&'a ModPath, u8>,
        stack: &mut Vec<&'a ModPath>,
        loops: &mut Vec<String>,
    ) {
        state.insert(at, 1);
        stack.push(at);
        for next in edges.get(at).into_iter().flatten() {
            match state.get(next) {
                Some(1) => {
                    let from = stack.iter().position(|m| *m == next).unwrap();
                    let cycle: Vec<String> = stack[from..]
                        .iter()
                        .chain([&next])
                        .map(|m| show(m))
                        .collect();
                    loops.push(cycle.join(" -> "));
                }
                Some(_) => {}
                None => visit(next, edges, state, stack, loops),
            }
        }
        stack.pop();
        state.insert(at, 2);
    }
    for module in edges.keys() {
        if !state.contains_key(module) {
            visit(module, edges, &mut state, &mut stack, &mut loops);
        }
    }
    loops
}
