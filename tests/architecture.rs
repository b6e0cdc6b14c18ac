//! The architecture of issue #15, enforced on the source itself: no file over 1,000 lines, each
//! top-level module uses only modules on its own layer or below (the order in `LAYERS`), and no
//! cycle among top-level modules.
//!
//! The references are read from the text of `src/**/*.rs`: every path that reaches the crate root
//! (`crate::x`, `$crate::x`, a `super::` chain that climbs out of the top-level module, and
//! `jailprov::x` in the binary's `main.rs`), in `use` lines, multi-line `use crate::{...}` groups
//! and inline paths alike, comments and string literals left out.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Lines a source file may hold, tests included: past this it holds several jobs.
const MAX_LINES: usize = 1000;

/// The stages, lowest first. A module may use a module on its own line or an earlier one, never
/// a later one (`jailfile` and `spec` are two lines: the serde model knows nothing of the Spec).
/// A new top-level module must be placed here before the test passes.
const LAYERS: &[&[&str]] = &[
    &["tree", "host", "diagnostics", "timings", "kill_point", "mountinfo", "beside", "progress", "words", "json"],
    &["jailfile"],
    &["spec"],
    // root_safety makes and vets the jail root it hands over as a JailRoot, so it sits beside the
    // writer (nothing below jail_root uses it).
    &["jail_root", "root_safety"],
    &["closure"],
    &["desired"],
    // The managed record, the lock file and its review, drift.
    &["state"],
    // Scan, diff and the plan memo.
    &["plan"],
    // apply may use enter's mounts for persistent mounts until they move; trace runs through enter.
    &["apply", "enter", "export", "trace"],
    // init writes a first Jailfile from host look-ups (host, beside, jailfile's schema only);
    // status reads the records, locks and dpkg; the hook acts on it (its applies are jailprov runs).
    &["check", "init", "status", "hook"],
    // The face: nothing below imports it.
    &["render", "reports", "why", "commands", "cli", "main"],
];

/// One use of a top-level module by another, where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    file: String,
    line: usize,
    from: String,
    to: String,
}

fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The module path of a file relative to `src/`: `plan.rs` -> [plan], `enter/mod.rs` -> [enter],
/// `closure/elf.rs` -> [closure, elf].
fn module_path(relative: &Path) -> Vec<String> {
    let mut path: Vec<String> =
        relative.with_extension("").iter().map(|part| part.to_string_lossy().into_owned()).collect();
    if path.last().is_some_and(|last| last == "mod") {
        path.pop();
    }
    path
}

/// `source` with comments, string, byte-string and char literals replaced by spaces (newlines
/// kept, so line numbers stay right): a path in a doc comment or a message is not a use.
fn blank_comments_and_literals(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let blank = |out: &mut String, from: &[char]| {
        out.extend(from.iter().map(|&c| if c == '\n' { '\n' } else { ' ' }));
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            let end = chars[i..].iter().position(|&c| c == '\n').map_or(chars.len(), |at| i + at);
            blank(&mut out, &chars[i..end]);
            i = end;
        } else if c == '/' && next == Some('*') {
            // Block comments nest in Rust.
            let (mut depth, mut end) = (0usize, i);
            while end < chars.len() {
                if chars[end] == '/' && chars.get(end + 1) == Some(&'*') {
                    depth += 1;
                    end += 2;
                } else if chars[end] == '*' && chars.get(end + 1) == Some(&'/') {
                    depth -= 1;
                    end += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    end += 1;
                }
            }
            let end = end.min(chars.len());
            blank(&mut out, &chars[i..end]);
            i = end;
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let hashes = chars[i..].iter().take_while(|&&c| c == '#').count();
            let is_raw_string = matches!(word.as_str(), "r" | "br" | "cr") && chars.get(i + hashes) == Some(&'"');
            if is_raw_string {
                // r#"..."#: ends at a quote followed by as many hashes.
                let mut end = i + hashes + 1;
                while end < chars.len() {
                    if chars[end] == '"'
                        && chars[end + 1..].iter().take(hashes).filter(|&&c| c == '#').count() == hashes
                    {
                        end += 1 + hashes;
                        break;
                    }
                    end += 1;
                }
                let end = end.min(chars.len());
                blank(&mut out, &chars[start..end]);
                i = end;
            } else {
                out.push_str(&word);
            }
        } else if c == '"' {
            let mut end = i + 1;
            while end < chars.len() && chars[end] != '"' {
                end += if chars[end] == '\\' { 2 } else { 1 };
            }
            let end = (end + 1).min(chars.len());
            blank(&mut out, &chars[i..end]);
            i = end;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\''), or a lifetime or label ('a), which stays.
            let end = if next == Some('\\') {
                let mut end = i + 3;
                while end < chars.len() && chars[end] != '\'' {
                    end += 1;
                }
                Some(end + 1)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 3)
            } else {
                None
            };
            match end {
                Some(end) => {
                    let end = end.min(chars.len());
                    blank(&mut out, &chars[i..end]);
                    i = end;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// A token of blanked source: an identifier, `::`, or one punctuation character.
#[derive(Debug)]
struct Token {
    text: String,
    line: usize,
}

fn tokens(cleaned: &str) -> Vec<Token> {
    let chars: Vec<char> = cleaned.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(Token { text: chars[start..i].iter().collect(), line });
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push(Token { text: "::".to_owned(), line });
            i += 2;
        } else {
            tokens.push(Token { text: c.to_string(), line });
            i += 1;
        }
    }
    tokens
}

fn is_identifier(text: &str) -> bool {
    text.starts_with(|c: char| c.is_alphabetic() || c == '_')
}

/// The names `source` reaches at a crate root, each as (root, name, line): `root` is the first
/// segment of the path (`crate`, or another of `crate_names` such as `jailprov`; a `super::`
/// chain that climbs out of the top-level module counts as `crate`). `module` is the file's
/// module path, for `super::`.
fn root_references(source: &str, module: &[String], crate_names: &[&str]) -> Vec<(String, String, usize)> {
    let tokens = tokens(&blank_comments_and_literals(source));
    let text = |at: usize| tokens.get(at).map_or("", |token: &Token| token.text.as_str());
    let mut found = Vec::new();
    // Inline `mod name {` blocks open at a brace depth: (name, depth inside).
    let mut inline_modules: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut at = 0;
    while at < tokens.len() {
        match text(at) {
            "{" => {
                depth += 1;
                if at >= 2 && text(at - 2) == "mod" && is_identifier(text(at - 1)) {
                    inline_modules.push((text(at - 1).to_owned(), depth));
                }
                at += 1;
                continue;
            }
            "}" => {
                if inline_modules.last().is_some_and(|(_, opened)| *opened == depth) {
                    inline_modules.pop();
                }
                depth = depth.saturating_sub(1);
                at += 1;
                continue;
            }
            _ => {}
        }
        // Only the first segment of a path can start at the crate root.
        if at > 0 && text(at - 1) == "::" {
            at += 1;
            continue;
        }
        let first = text(at);
        let mut after_root = None;
        if (first == "crate" || crate_names.contains(&first)) && text(at + 1) == "::" {
            after_root = Some((first, at + 2));
        } else if first == "super" || first == "self" {
            let mut path: Vec<&str> = module.iter().map(String::as_str).collect();
            path.extend(inline_modules.iter().map(|(name, _)| name.as_str()));
            let mut segment = at;
            while matches!(text(segment), "super" | "self") && text(segment + 1) == "::" {
                if text(segment) == "super" && path.pop().is_none() {
                    break;
                }
                segment += 2;
            }
            if path.is_empty() && segment > at {
                after_root = Some(("crate", segment));
            } else {
                at = segment.max(at + 1);
                continue;
            }
        }
        let Some((root, start)) = after_root else {
            at += 1;
            continue;
        };
        if text(start) == "{" {
            // A group: the first identifier of each entry at the group's own level.
            let mut level = 0;
            let mut entry_start = true;
            let mut cursor = start;
            while cursor < tokens.len() {
                match text(cursor) {
                    "{" => {
                        level += 1;
                        entry_start = level == 1;
                    }
                    "}" => {
                        level -= 1;
                        if level == 0 {
                            break;
                        }
                    }
                    "," if level == 1 => entry_start = true,
                    word if entry_start && level == 1 && is_identifier(word) && word != "self" => {
                        found.push((root.to_owned(), word.to_owned(), tokens[cursor].line));
                        entry_start = false;
                    }
                    _ => entry_start = false,
                }
                cursor += 1;
            }
            // The main loop goes on from the group's brace, keeping the brace depth right.
            at = start;
        } else {
            if is_identifier(text(start)) && text(start) != "self" {
                found.push((root.to_owned(), text(start).to_owned(), tokens[start].line));
            }
            at = start;
        }
    }
    found
}

/// The top-level modules a file of the library names, each with its line.
fn top_level_references(source: &str, module: &[String]) -> Vec<(String, usize)> {
    root_references(source, module, &[]).into_iter().map(|(_, name, line)| (name, line)).collect()
}

/// The modules `main.rs` declares (`mod commands;`): they and `main.rs` are the binary crate, where
/// `crate::x` is the binary's own and the library is `jailprov::x`.
fn binary_modules(main: &str) -> BTreeSet<String> {
    let tokens = tokens(&blank_comments_and_literals(main));
    tokens
        .windows(3)
        .filter(|window| window[0].text == "mod" && window[2].text == ";")
        .map(|window| window[1].text.clone())
        .collect()
}

/// The top-level modules a file of the binary names: `jailprov::x` is the library's module x;
/// `crate::x` is the binary's module x, or an item of `main.rs`.
fn binary_references(source: &str, module: &[String], binary_modules: &BTreeSet<String>) -> Vec<(String, usize)> {
    root_references(source, module, &["jailprov"])
        .into_iter()
        .map(|(root, name, line)| match root.as_str() {
            "jailprov" => (name, line),
            _ if binary_modules.contains(&name) => (name, line),
            _ => ("main".to_owned(), line),
        })
        .collect()
}

/// Every use of one top-level module by another in `src/`. `lib.rs` only declares the modules.
fn references() -> Result<Vec<Reference>> {
    let root = source_root();
    let main = root.join("main.rs");
    let main_source = fs::read_to_string(&main).with_context(|| format!("cannot read {}", main.display()))?;
    let binary_modules = binary_modules(&main_source);
    let mut references = Vec::new();
    for file in rust_files(&root)? {
        let relative = file.strip_prefix(&root).context("a source file outside src/")?;
        if relative == Path::new("lib.rs") {
            continue;
        }
        let source = fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let module = if relative == Path::new("main.rs") { vec!["main".to_owned()] } else { module_path(relative) };
        let from = module.first().context("a source file with no module")?.clone();
        let found = if from == "main" || binary_modules.contains(&from) {
            binary_references(&source, &module, &binary_modules)
        } else {
            top_level_references(&source, &module)
        };
        for (to, line) in found {
            if to != from {
                let file = format!("src/{}", relative.display());
                references.push(Reference { file, line, from: from.clone(), to });
            }
        }
    }
    Ok(references)
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn describe_layer(layer: usize) -> String {
    format!("layer {}: {}", layer + 1, LAYERS[layer].join(", "))
}

/// One line per use of a later layer, or of a module the table does not place.
fn layer_violations(references: &[Reference]) -> Vec<String> {
    let mut violations = Vec::new();
    for reference in references {
        let Reference { file, line, from, to } = reference;
        match (layer_of(from), layer_of(to)) {
            (Some(from_layer), Some(to_layer)) if to_layer > from_layer => violations.push(format!(
                "{file}:{line}: {from} ({}) uses {to} ({})",
                describe_layer(from_layer),
                describe_layer(to_layer)
            )),
            (Some(_), Some(_)) => {}
            (None, _) => violations.push(format!("{file}:{line}: module {from} is on no layer: place it in LAYERS")),
            (_, None) => violations
                .push(format!("{file}:{line}: {from} uses crate::{to}, which is on no layer: place it in LAYERS")),
        }
    }
    violations
}

/// The cycles among top-level modules, one per strongly connected set, each as a closed walk
/// `a -> b -> a` with where each step is written.
fn cycles(references: &[Reference]) -> Vec<String> {
    let mut edges: BTreeMap<&str, BTreeMap<&str, &Reference>> = BTreeMap::new();
    for reference in references {
        edges.entry(&reference.from).or_default().entry(&reference.to).or_insert(reference);
    }
    let reaches = |from: &str| -> BTreeSet<&str> {
        let mut seen = BTreeSet::new();
        let mut pending = vec![from];
        while let Some(module) = pending.pop() {
            for &next in edges.get(module).into_iter().flat_map(|targets| targets.keys()) {
                if seen.insert(next) {
                    pending.push(next);
                }
            }
        }
        seen
    };
    let mut reported: BTreeSet<&str> = BTreeSet::new();
    let mut found = Vec::new();
    for &start in edges.keys() {
        if reported.contains(start) || !reaches(start).contains(start) {
            continue;
        }
        // The shortest way back to `start` (breadth first), then its steps.
        let mut previous: BTreeMap<&str, &str> = BTreeMap::new();
        let mut frontier = vec![start];
        'search: while !frontier.is_empty() {
            let mut next_frontier = Vec::new();
            for module in frontier {
                for &next in edges.get(module).into_iter().flat_map(|targets| targets.keys()) {
                    if next == start {
                        previous.insert(start, module);
                        break 'search;
                    }
                    if !previous.contains_key(next) {
                        previous.insert(next, module);
                        next_frontier.push(next);
                    }
                }
            }
            frontier = next_frontier;
        }
        let mut walk = vec![start];
        let mut module = previous[start];
        while module != start {
            walk.push(module);
            module = previous[module];
        }
        walk.push(start);
        walk.reverse();
        let steps: Vec<String> = walk
            .windows(2)
            .map(|step| {
                let reference = edges[step[0]][step[1]];
                format!("{} -> {} at {}:{}", step[0], step[1], reference.file, reference.line)
            })
            .collect();
        found.push(format!("{} ({})", walk.join(" -> "), steps.join("; ")));
        reported.extend(reaches(start).into_iter().filter(|module| reaches(module).contains(start)));
    }
    found
}

// Enabled when the lock and closure splits land (src/lock.rs and src/closure/mod.rs are over).
#[test]
fn no_source_file_is_over_1000_lines() -> Result<()> {
    let root = source_root();
    let mut offenders = Vec::new();
    for file in rust_files(&root)? {
        let text = fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let lines = text.lines().count();
        if lines > MAX_LINES {
            offenders.push(format!("src/{}: {lines} lines", file.strip_prefix(&root)?.display()));
        }
    }
    assert!(
        offenders.is_empty(),
        "source files over {MAX_LINES} lines (tests included; move a big test module to a sibling tests.rs \
         or split the file by responsibility):\n{}",
        offenders.join("\n")
    );
    Ok(())
}

// Enabled when the lock and closure splits land, with the removal of the known tangles (lock uses
// cli, state uses memo, apply uses check) and of check and enter taking their cli argument structs.
#[test]
fn modules_only_use_their_own_layer_or_below() -> Result<()> {
    let violations = layer_violations(&references()?);
    assert!(
        violations.is_empty(),
        "modules using a later layer (move the type down, or pass plain values from above):\n{}",
        violations.join("\n")
    );
    Ok(())
}

// Enabled when the lock and closure splits land, with the removal of the apply/check cycle and of
// lock using cli (the cycle cli -> state -> memo -> lock -> cli).
#[test]
fn no_cycle_among_top_level_modules() -> Result<()> {
    let cycles = cycles(&references()?);
    assert!(cycles.is_empty(), "cycles among top-level modules:\n{}", cycles.join("\n"));
    Ok(())
}

/// The references of a snippet, as (module, line), for a file `src/<module>.rs`.
fn references_in(source: &str, module: &str) -> Vec<(String, usize)> {
    top_level_references(source, &[module.to_owned()])
}

fn named(modules: &[(&str, usize)]) -> Vec<(String, usize)> {
    modules.iter().map(|(module, line)| ((*module).to_owned(), *line)).collect()
}

#[test]
fn parser_reads_every_entry_of_a_multi_line_use_group() {
    let source = "use std::fs;\nuse crate::{\n    spec::{self, Spec},\n    tree::JailPath, jail_root::{JailRoot, NodeKind},\n};\n";
    assert_eq!(references_in(source, "plan"), named(&[("spec", 3), ("tree", 4), ("jail_root", 4)]));
}

#[test]
fn parser_reads_an_inline_path_and_a_renamed_use() {
    let source =
        "use crate::state as store;\nfn f<'a>(x: &'a str) -> u8 {\n    let q = '\"';\n    crate::plan::diff(x)\n}\n";
    assert_eq!(references_in(source, "apply"), named(&[("state", 1), ("plan", 4)]));
}

#[test]
fn parser_ignores_comments_strings_and_visibility() {
    let source = r####"
// crate::cli in a comment
/// [`crate::commands`] in a doc link
/* crate::render /* nested */ crate::check */
pub(crate) fn f() -> &'static str {
    let _ = b"crate::cli";
    let _ = c"crate::cli";
    let _ = r#"crate::cli "quoted" "#;
    let _ = '\'';
    "crate::cli \" crate::cli"
}
"####;
    assert_eq!(references_in(source, "tree"), Vec::new());
}

#[test]
fn parser_follows_super_out_of_the_top_level_module_only() {
    // In src/check.rs, `super` is the crate root; in its `mod tests`, `super` is check itself.
    let source =
        "use super::apply::Applied;\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::plan;\n}\n";
    assert_eq!(references_in(source, "check"), named(&[("apply", 1), ("plan", 5)]));
    // In src/closure/elf.rs, `super` is closure.
    assert_eq!(top_level_references("use super::Builder;\n", &["closure".into(), "elf".into()]), Vec::new());
    assert_eq!(
        top_level_references("use super::super::tree::JailPath;\n", &["closure".into(), "elf".into()]),
        named(&[("tree", 1)])
    );
}

fn reference(from: &str, to: &str, line: usize) -> Reference {
    Reference { file: format!("src/{from}.rs"), line, from: from.to_owned(), to: to.to_owned() }
}

#[test]
fn a_use_of_a_later_layer_is_reported_with_its_place() {
    let references = [reference("plan", "state", 3), reference("state", "plan", 7), reference("state", "cli", 9)];
    let violations = layer_violations(&references);
    assert_eq!(violations.len(), 2, "{violations:?}");
    assert_eq!(violations[0], "src/state.rs:7: state (layer 7: state) uses plan (layer 8: plan)");
    assert!(
        violations[1].contains("uses cli (layer 11: render, reports, why, commands, cli, main)"),
        "{}",
        violations[1]
    );
    let unplaced = layer_violations(&[reference("plan", "newthing", 1)]);
    assert_eq!(unplaced.len(), 1, "a module on no layer must fail: {unplaced:?}");
}

#[test]
fn a_cycle_is_printed_as_a_closed_walk() {
    let references = [
        reference("apply", "check", 4),
        reference("check", "render", 2),
        reference("check", "apply", 8),
        reference("plan", "state", 1),
    ];
    assert_eq!(
        cycles(&references),
        vec!["apply -> check -> apply (apply -> check at src/apply.rs:4; check -> apply at src/check.rs:8)".to_owned()]
    );
    assert_eq!(cycles(&references[..2]), Vec::<String>::new());
}

#[test]
fn parser_reads_the_binary_crate_apart_from_the_library() {
    let main = "mod commands;\nuse jailprov::cli::Cli;\nfn load_spec() {}\n";
    let binary = binary_modules(main);
    assert_eq!(binary, BTreeSet::from(["commands".to_owned()]));
    let commands = "use jailprov::{apply, render};\nuse crate::{load_spec, print};\nfn f() { crate::commands::g() }\n";
    assert_eq!(
        binary_references(commands, &["commands".into()], &binary),
        named(&[("apply", 1), ("render", 1), ("main", 2), ("main", 2), ("commands", 3)])
    );
}
