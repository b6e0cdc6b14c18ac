//! `include = [...]`: a Jailfile and the shared Jailfiles it builds on, read (bounded) and merged
//! into one document whose spans still say which file and line each value came from.
//!
//! Spans live in one address space: the including file at 0, each included file after the
//! previous one (`IncludedFile::base`); `JailfileErrors` maps them back to file:line:column.

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

use crate::diagnostics::{problem_from_toml_error, IncludedFile, JailfileErrors, Problem};

/// The texts of a Jailfile and of everything it includes, in the order they were read.
pub struct Sources {
    pub main: PathBuf,
    pub source: String,
    pub included: Vec<IncludedFile>,
}

impl Sources {
    pub fn errors(self, problems: Vec<Problem>) -> JailfileErrors {
        JailfileErrors { file: self.main, source: self.source, included: self.included, problems }
    }

    /// Every file, with its base: the including one first.
    fn files(&self) -> impl Iterator<Item = (&Path, &str, usize)> {
        std::iter::once((self.main.as_path(), self.source.as_str(), 0))
            .chain(self.included.iter().map(|file| (file.path.as_path(), file.text.as_str(), file.base)))
    }

    pub fn place(&self, offset: usize) -> String {
        let mut files = self.files().filter(|(_, _, base)| offset >= *base);
        let first = files.next().expect("the including file starts at offset 0");
        let (path, text, base) = files.last().unwrap_or(first);
        let (line, column) = crate::diagnostics::line_column(text, offset - base);
        format!("{}:{line}:{column}", path.display())
    }
}

/// Reads the included Jailfiles of `source` (recursively, each relative to the file that names
/// it), refusing cycles and unreadable files with the place of the `include` entry.
pub fn read_included(main: &Path, source: String, limit: u64) -> Result<Sources, JailfileErrors> {
    let mut sources = Sources { main: main.to_path_buf(), source, included: Vec::new() };
    let mut problems = Vec::new();
    let start = (canonical(main), main.to_path_buf());
    let text = sources.source.clone();
    read_includes_of(&mut sources, main, &text, 0, &mut vec![start], limit, &mut problems);
    if problems.is_empty() {
        Ok(sources)
    } else {
        Err(sources.errors(problems))
    }
}

/// `a/b/../c` as `a/c`, for messages: the path as the user would name it (identity is
/// decided on the canonical path).
fn lexically_normal(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir if normal.file_name().is_some() => {
                normal.pop();
            }
            std::path::Component::CurDir => {}
            other => normal.push(other),
        }
    }
    normal
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The `include` entries of one file: (path as written, its span in the file's text).
fn include_entries(text: &str) -> Vec<(String, Range<usize>)> {
    let Ok(document) = DeTable::parse(text) else { return Vec::new() };
    let Some(include) = document.get_ref().get("include") else { return Vec::new() };
    let DeValue::Array(items) = include.get_ref() else { return Vec::new() };
    items.iter().filter_map(|item| item.get_ref().as_str().map(|path| (path.to_owned(), item.span()))).collect()
}

fn read_includes_of(
    sources: &mut Sources,
    file: &Path,
    text: &str,
    base: usize,
    chain: &mut Vec<(PathBuf, PathBuf)>,
    limit: u64,
    problems: &mut Vec<Problem>,
) {
    let directory = file.parent().unwrap_or(Path::new("."));
    for (written, span) in include_entries(text) {
        let span = span.start + base..span.end + base;
        let path = lexically_normal(&directory.join(&written));
        let identity = canonical(&path);
        if let Some(first) = chain.iter().position(|(seen, _)| *seen == identity) {
            let names: Vec<String> = chain[first..]
                .iter()
                .map(|(_, shown)| shown)
                .chain([&path])
                .map(|path| path.display().to_string())
                .collect();
            problems.push(
                Problem::new("include", span, format!("include cycle: {}", names.join(" -> ")))
                    .with_value(&written)
                    .with_help(
                        "a Jailfile cannot include itself, directly or through others: remove one include of the chain",
                    ),
            );
            continue;
        }
        if sources.included.iter().any(|included| canonical(&included.path) == identity) {
            // Included twice along two paths (a diamond): its entries are there once.
            continue;
        }
        let included = match crate::beside::read_text(&path, "the included Jailfile", limit) {
            Ok(included) => included,
            Err(error) => {
                problems.push(
                    Problem::new("include", span, format!("{error:#}"))
                        .with_value(&written)
                        .with_help("include paths are relative to the directory of the Jailfile that names them"),
                );
                continue;
            }
        };
        let next_base = sources.files().last().map_or(0, |(_, text, base)| base + text.len() + 1);
        sources.included.push(IncludedFile { path: path.clone(), text: included.clone(), base: next_base });
        chain.push((identity, path.clone()));
        read_includes_of(sources, &path, &included, next_base, chain, limit, problems);
        chain.pop();
    }
}

/// The one document of all files: included files first (in include order), the including file
/// last; top-level lists concatenated without repeats, tables merged key by key, and a key set
/// to two different values an error naming both places.
pub fn merged(sources: &Sources) -> Result<Spanned<DeTable<'_>>, Vec<Problem>> {
    let mut documents = Vec::new();
    let mut problems = Vec::new();
    for (_, text, base) in sources.files() {
        match DeTable::parse(text) {
            Ok(document) => documents.push(shift_table(document, base)),
            Err(error) => {
                let mut problem = problem_from_toml_error(text, &error);
                problem.span = problem.span.map(|span| span.start + base..span.end + base);
                problems.push(problem);
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    // The including file is first in `files()`; it is merged last, over what it includes.
    documents.rotate_left(1);
    let mut documents = documents.into_iter();
    let mut result = documents.next().expect("the including file is always there");
    for document in documents {
        let span = document.span();
        merge_table(sources, result.get_mut(), document.into_inner(), "", true, &mut problems);
        result = Spanned::new(span, result.into_inner());
    }
    if problems.is_empty() {
        Ok(result)
    } else {
        Err(problems)
    }
}

fn merge_table<'i>(
    sources: &Sources,
    into: &mut DeTable<'i>,
    from: DeTable<'i>,
    key: &str,
    top: bool,
    problems: &mut Vec<Problem>,
) {
    for (name, value) in from {
        let child = if key.is_empty() { name.get_ref().to_string() } else { format!("{key}.{}", name.get_ref()) };
        let Some(existing) = into.get_mut(name.get_ref().as_ref() as &str) else {
            into.insert(name, value);
            continue;
        };
        let span = value.span();
        match (existing.get_mut(), value.into_inner()) {
            (DeValue::Table(into), DeValue::Table(from)) => merge_table(sources, into, from, &child, false, problems),
            (DeValue::Array(into), DeValue::Array(from)) if top => append_new(into, from),
            (earlier, later) if same(earlier, &later) => {}
            (_, later) => problems.push(
                Problem::new(&child, span, format!("`{child}` is set twice, to different values"))
                    .with_value(written(&later))
                    .with_help(format!(
                        "also set at {}; set it in one Jailfile only (lists add up, other keys do not)",
                        sources.place(existing.span().start)
                    )),
            ),
        }
    }
}

fn append_new<'i>(into: &mut DeArray<'i>, from: DeArray<'i>) {
    for item in from {
        if !into.iter().any(|present| same(present.get_ref(), item.get_ref())) {
            into.push(item);
        }
    }
}

/// Equal values, wherever they were written (spans are not compared).
fn same(a: &DeValue<'_>, b: &DeValue<'_>) -> bool {
    match (a, b) {
        (DeValue::String(a), DeValue::String(b)) => a == b,
        (DeValue::Integer(a), DeValue::Integer(b)) => integer(a.as_str(), a.radix()) == integer(b.as_str(), b.radix()),
        (DeValue::Float(a), DeValue::Float(b)) => a.as_str() == b.as_str(),
        (DeValue::Boolean(a), DeValue::Boolean(b)) => a == b,
        (DeValue::Datetime(a), DeValue::Datetime(b)) => a == b,
        (DeValue::Array(a), DeValue::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b.iter()).all(|(a, b)| same(a.get_ref(), b.get_ref()))
        }
        (DeValue::Table(a), DeValue::Table(b)) => {
            a.len() == b.len()
                && a.iter().all(|(name, value)| {
                    b.get(name.get_ref().as_ref() as &str).is_some_and(|other| same(value.get_ref(), other.get_ref()))
                })
        }
        _ => false,
    }
}

fn integer(digits: &str, radix: u32) -> Option<i128> {
    i128::from_str_radix(&digits.replace('_', ""), radix).ok()
}

fn written(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(text) => text.to_string(),
        DeValue::Integer(number) => number.as_str().to_owned(),
        DeValue::Boolean(flag) => flag.to_string(),
        DeValue::Array(_) => "a list".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
        other => other.type_str().to_owned(),
    }
}

fn shift(span: Range<usize>, base: usize) -> Range<usize> {
    span.start + base..span.end + base
}

fn shift_table(table: Spanned<DeTable<'_>>, base: usize) -> Spanned<DeTable<'_>> {
    let span = shift(table.span(), base);
    Spanned::new(span, shift_entries(table.into_inner(), base))
}

fn shift_entries(table: DeTable<'_>, base: usize) -> DeTable<'_> {
    let mut shifted = DeTable::new();
    for (name, value) in table {
        let name = Spanned::new(shift(name.span(), base), name.into_inner());
        shifted.insert(name, shift_value(value, base));
    }
    shifted
}

fn shift_value(value: Spanned<DeValue<'_>>, base: usize) -> Spanned<DeValue<'_>> {
    let span = shift(value.span(), base);
    let inner = match value.into_inner() {
        DeValue::Table(table) => DeValue::Table(shift_entries(table, base)),
        DeValue::Array(items) => {
            let mut shifted = DeArray::new();
            for item in items {
                shifted.push(shift_value(item, base));
            }
            DeValue::Array(shifted)
        }
        other => other,
    };
    Spanned::new(span, inner)
}

/// The offset of each entry of the document's top-level lists, by key (`binaries[3]`).
pub fn entry_offsets(document: &DeTable<'_>) -> std::collections::BTreeMap<String, usize> {
    let mut offsets = std::collections::BTreeMap::new();
    for (name, value) in document.iter() {
        if let DeValue::Array(items) = value.get_ref() {
            for (index, item) in items.iter().enumerate() {
                offsets.insert(format!("{}[{index}]", name.get_ref()), item.span().start);
            }
        }
    }
    offsets
}
