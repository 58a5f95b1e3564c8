//! Layers point one way: loader -> service -> hint library -> shared types
//! (src/*.rs), and no module imports another that imports it back.
//!
//! Read from the source: every `crate::`, `scx_phase::` and `super::` path,
//! and a module's paths through its own children, outside `#[cfg(test)]`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Module path ("service::server") -> its file, for src/ but the binaries
/// of src/bin and the crate roots.
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut mods = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        if parts[0] == "bin" || parts[0] == "bpf" || parts == ["main"] || parts == ["lib"] {
            continue;
        }
        if parts.last().is_some_and(|l| l == "mod") {
            parts.pop();
        }
        mods.insert(parts.join("::"), f);
    }
    mods
}

/// The layer of a module: 0 shared types, 1 hint library, 2 service, 3 loader.
fn layer(module: &str) -> u8 {
    match module.split("::").next().unwrap() {
        "hint" => 1,
        "service" => 2,
        "loader" => 3,
        _ => 0,
    }
}

/// The paths (a::b::c) that follow each occurrence of `prefix` in `code`,
/// where `prefix` starts a path (not preceded by an identifier character
/// or `::`), with `{a, b::c}` groups expanded one level.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        if code[..at].ends_with(|c: char| ident(c) || c == ':') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let item: String = item
                    .trim()
                    .chars()
                    .take_while(|&c| ident(c) || c == ':')
                    .collect();
                out.push(item.trim_end_matches(':').to_string());
            }
        } else {
            let path: String = rest.chars().take_while(|&c| ident(c) || c == ':').collect();
            out.push(path.trim_end_matches(':').to_string());
        }
    }
    out
}

/// The longest module that `path` names, if any.
fn resolve(mods: &BTreeMap<String, PathBuf>, path: &str) -> Option<String> {
    let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    (1..=segs.len())
        .rev()
        .map(|n| segs[..n].join("::"))
        .find(|c| mods.contains_key(c))
}

/// Module -> the modules it uses.
fn imports(mods: &BTreeMap<String, PathBuf>) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges = BTreeMap::new();
    for (module, file) in mods {
        let text = fs::read_to_string(file).unwrap();
        let text = text.split("#[cfg(test)]").next().unwrap();
        let code: String = text
            .lines()
            .map(|l| l.split("//").next().unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        let join = |base: &str, p: &str| {
            if base.is_empty() {
                p.to_string()
            } else {
                format!("{base}::{p}")
            }
        };
        let mut to = BTreeSet::new();
        let mut paths: Vec<String> = paths_after(&code, "crate::");
        paths.extend(paths_after(&code, "scx_phase::"));
        paths.extend(
            paths_after(&code, "super::")
                .iter()
                .map(|p| join(parent, p)),
        );
        // Its own children, by their names.
        for line in code.lines() {
            let l = line
                .trim_start()
                .trim_start_matches("pub ")
                .trim_start_matches("pub(crate) ");
            if let Some(child) = l.strip_prefix("mod ").and_then(|c| c.strip_suffix(';'))
                && !paths_after(&code, &format!("{child}::")).is_empty()
            {
                paths.push(join(module, child));
            }
        }
        for p in paths {
            if let Some(target) = resolve(mods, &p).filter(|t| t != module) {
                to.insert(target);
            }
        }
        edges.insert(module.clone(), to);
    }
    edges
}

/// The strongly connected components of more than one module.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Kosaraju: finish order on the graph, then components on its reverse.
    fn visit<'a>(
        v: &'a str,
        g: &'a BTreeMap<String, BTreeSet<String>>,
        seen: &mut BTreeSet<&'a str>,
        out: &mut Vec<&'a str>,
    ) {
        if !seen.insert(v) {
            return;
        }
        for w in g.get(v).into_iter().flatten() {
            visit(w, g, seen, out);
        }
        out.push(v);
    }
    let mut reverse: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, bs) in edges {
        for b in bs {
            reverse.entry(b.clone()).or_default().insert(a.clone());
        }
    }
    let (mut seen, mut order) = (BTreeSet::new(), Vec::new());
    for v in edges.keys() {
        visit(v, edges, &mut seen, &mut order);
    }
    let mut seen = BTreeSet::new();
    let mut found = Vec::new();
    for v in order.into_iter().rev() {
        let mut comp = Vec::new();
        visit(v, &reverse, &mut seen, &mut comp);
        if comp.len() > 1 {
            found.push(comp.into_iter().map(String::from).collect());
        }
    }
    found
}

#[test]
fn the_reader_finds_paths_as_rust_writes_them() {
    let code = "use crate::{service::identity, loader::cli::Args};\nlet x = super::maps::Job; scx_phase::hint::protocol::Op; my_crate::x";
    assert_eq!(
        paths_after(code, "crate::"),
        ["service::identity", "loader::cli::Args"]
    );
    assert_eq!(paths_after(code, "super::"), ["maps::Job"]);
    assert_eq!(paths_after(code, "scx_phase::"), ["hint::protocol::Op"]);
    let g: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]
        .iter()
        .fold(BTreeMap::new(), |mut g, (a, b)| {
            g.entry(a.to_string())
                .or_insert_with(BTreeSet::new)
                .insert(b.to_string());
            g.entry(b.to_string()).or_insert_with(BTreeSet::new);
            g
        });
    let found = cycles(&g);
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].iter().collect::<BTreeSet<_>>(),
        ["a", "b", "c"]
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
            .iter()
            .collect()
    );
}

#[test]
fn layers_point_one_way_and_no_module_imports_one_that_imports_it() {
    let mods = modules();
    assert!(
        mods.contains_key("service::server") && mods.contains_key("loader::cli"),
        "src/ not found as expected: {mods:?}"
    );
    let edges = imports(&mods);
    let n: usize = edges.values().map(BTreeSet::len).sum();
    assert!(
        n > 50,
        "only {n} imports found in src/: the reader is broken"
    );
    let upward: Vec<String> = edges
        .iter()
        .flat_map(|(a, bs)| {
            bs.iter()
                .filter(|b| layer(b) > layer(a))
                .map(move |b| format!("{a} -> {b}"))
        })
        .collect();
    assert!(
        upward.is_empty(),
        "imports against the layers (loader -> service -> hint -> shared): {upward:?}"
    );
    let found = cycles(&edges);
    assert!(
        found.is_empty(),
        "modules that import each other, directly or around a loop: {found:?}"
    );

    // The shape, for the record.
    let mut per_folder: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut largest = (0, String::new());
    for file in mods.values() {
        let lines = fs::read_to_string(file).unwrap().lines().count();
        let folder = file
            .parent()
            .unwrap()
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap()
            .display()
            .to_string();
        let e = per_folder.entry(folder).or_default();
        e.0 += 1;
        e.1 += lines;
        if lines > largest.0 {
            largest = (
                lines,
                file.strip_prefix(env!("CARGO_MANIFEST_DIR"))
                    .unwrap()
                    .display()
                    .to_string(),
            );
        }
    }
    let folders: Vec<String> = per_folder
        .iter()
        .map(|(f, (n, l))| format!("{f}: {n} files, {l} lines"))
        .collect();
    println!(
        "MEASURED layers: {} modules, {n} imports, 0 against the layers, 0 cycles; {}; largest {} ({} lines)",
        mods.len(),
        folders.join("; "),
        largest.1,
        largest.0
    );
}
