//! Jailfile problems with their place (file, line, column, key path) and the offending value.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use codespan_reporting::diagnostic::{Diagnostic, Label};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, Config};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One thing wrong in a Jailfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Byte range in the Jailfile of the offending value (or key, or table).
    pub span: Option<Range<usize>>,
    /// Key path such as `files[2].mode`.
    pub key: String,
    /// The offending value as written, when there is one.
    pub value: Option<String>,
    /// What is wrong, in words a user acts on.
    pub message: String,
    /// How to fix it, when there is more to say.
    pub help: Option<String>,
}

impl Problem {
    pub fn new(key: impl Into<String>, span: Range<usize>, message: impl Into<String>) -> Problem {
        Problem { span: Some(span), key: key.into(), value: None, message: message.into(), help: None }
    }

    /// A problem about a spanned string value: records the value too.
    pub fn at(key: impl Into<String>, value: &Spanned<String>, message: impl Into<String>) -> Problem {
        Problem::new(key, value.span(), message).with_value(value.get_ref())
    }

    pub fn with_value(mut self, value: impl fmt::Display) -> Problem {
        self.value = Some(value.to_string());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Problem {
        self.help = Some(help.into());
        self
    }
}

/// A Jailfile it includes, placed after the including text in one address space of spans: a
/// span at or past `base` is in this file, at `span - base`.
#[derive(Debug, Clone)]
pub struct IncludedFile {
    pub path: PathBuf,
    pub text: String,
    pub base: usize,
}

/// All problems of one Jailfile (and the Jailfiles it includes); displays as compiler-style
/// messages with source lines.
#[derive(Debug)]
pub struct JailfileErrors {
    pub file: PathBuf,
    pub source: String,
    /// Included Jailfiles, by rising `base`; spans past `source` point into them.
    pub included: Vec<IncludedFile>,
    pub problems: Vec<Problem>,
}

impl JailfileErrors {
    pub fn new(file: &std::path::Path, source: String, problems: Vec<Problem>) -> JailfileErrors {
        JailfileErrors { file: file.to_path_buf(), source, included: Vec::new(), problems }
    }

    /// The file, line and column (both from 1) of a byte offset.
    pub fn place(&self, offset: usize) -> (&std::path::Path, usize, usize) {
        let (path, text, base) = self.file_at(offset);
        let (line, column) = line_column(text, offset - base);
        (path, line, column)
    }

    /// The file holding `offset`, its text and base.
    fn file_at(&self, offset: usize) -> (&std::path::Path, &str, usize) {
        match self.included.iter().rev().find(|file| offset >= file.base) {
            Some(file) => (&file.path, &file.text, file.base),
            None => (&self.file, &self.source, 0),
        }
    }
}

pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |text| text.chars().count()) + 1;
    (line, column)
}

impl fmt::Display for JailfileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.file.display().to_string();
        let config = Config { chars: term::Chars::ascii(), ..Config::default() };
        let mut rendered = String::new();
        for problem in &self.problems {
            let (path, text, base) = problem
                .span
                .as_ref()
                .map_or((self.file.as_path(), self.source.as_str(), 0), |span| self.file_at(span.start));
            let path = path.display().to_string();
            let file = SimpleFile::new(path.as_str(), text);
            let mut notes = Vec::new();
            if !problem.key.is_empty() {
                notes.push(format!("key: {}", problem.key));
            }
            if let Some(value) = problem.value.as_ref().filter(|value| !value.is_empty()) {
                notes.push(format!("value: {value:?}"));
            }
            if let Some(help) = &problem.help {
                notes.push(format!("help: {help}"));
            }
            let mut diagnostic = Diagnostic::error().with_message(&problem.message).with_notes(notes);
            if let Some(span) = &problem.span {
                diagnostic = diagnostic.with_labels(vec![Label::primary((), span.start - base..span.end - base)]);
            } else {
                rendered.push_str(&format!("{name}: "));
            }
            let mut buffer = String::new();
            term::emit_to_string(&mut buffer, &config, &file, &diagnostic).map_err(|_| fmt::Error)?;
            rendered.push_str(&buffer);
        }
        let count = self.problems.len();
        let noun = if count == 1 { "problem" } else { "problems" };
        write!(f, "{rendered}{name}: {count} {noun}; nothing was changed")
    }
}

impl std::error::Error for JailfileErrors {}

/// Turns a toml/serde error into a [`Problem`]: finds the key path from the span and adds a
/// "did you mean" for unknown keys and values.
pub fn problem_from_toml_error(source: &str, error: &toml::de::Error) -> Problem {
    let span = error.span();
    let key = span
        .as_ref()
        .and_then(|span| DeTable::parse(source).ok().map(|doc| key_path_at(doc.get_ref(), span.start)))
        .unwrap_or_default();
    let message = error.message().trim().to_owned();
    let help = did_you_mean(&message);
    let value = span.as_ref().and_then(|span| source.get(span.clone())).map(str::to_owned);
    Problem { span, key, value, message, help }
}

/// The dotted key path (`files[2].mode`) of the innermost key whose key or value covers `offset`
/// (searched through every child: array-of-tables spans do not cover their bodies).
pub fn key_path_at(table: &DeTable<'_>, offset: usize) -> String {
    find_in_table(table, offset).unwrap_or_default()
}

fn covers(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

fn find_in_table(table: &DeTable<'_>, offset: usize) -> Option<String> {
    for (key, value) in table.iter() {
        if let Some(inner) = find_in_value(value, offset) {
            return Some(join_key(key.get_ref(), &inner));
        }
        if covers(&key.span(), offset) || covers(&value.span(), offset) {
            return Some(key.get_ref().to_string());
        }
    }
    None
}

/// The path below `value` ("" is never returned: a hit on the value itself is the caller's).
fn find_in_value(value: &Spanned<DeValue<'_>>, offset: usize) -> Option<String> {
    match value.get_ref() {
        DeValue::Table(table) => find_in_table(table, offset),
        DeValue::Array(items) => items.iter().enumerate().find_map(|(index, item)| match find_in_value(item, offset) {
            Some(inner) if inner.starts_with('[') => Some(format!("[{index}]{inner}")),
            Some(inner) => Some(format!("[{index}].{inner}")),
            None if covers(&item.span(), offset) => Some(format!("[{index}]")),
            None => None,
        }),
        _ => None,
    }
}

fn join_key(key: &str, inner: &str) -> String {
    if inner.starts_with('[') {
        format!("{key}{inner}")
    } else {
        format!("{key}.{inner}")
    }
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" (and "unknown variant"), the
/// closest expected name, if one is close enough to be a typo.
pub fn did_you_mean(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `").or_else(|| message.strip_prefix("unknown variant `"))?;
    let (typed, expected) = rest.split_once('`')?;
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let best = closest(typed, candidates.iter().copied())?;
    Some(format!("did you mean `{best}`?"))
}

/// The candidate closest to `typed` when it is plausibly a typo of it.
pub fn closest<'a>(typed: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|candidate| (strsim::jaro_winkler(typed, candidate), candidate))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests build their fixtures with plain fs calls
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_finds_a_typo_among_expected_fields() {
        let message = "unknown field `binarys`, expected one of `root`, `binaries`, `exclude`";
        assert_eq!(did_you_mean(message), Some("did you mean `binaries`?".to_owned()));
        assert_eq!(did_you_mean("unknown field `zzz`, expected `root`"), None);
    }

    #[test]
    fn key_path_names_array_index_and_nested_key() {
        let source = "root = \"/x\"\n[[files]]\nsrc = \"/a\"\n[[files]]\nmode = \"9\"\n";
        let doc = DeTable::parse(source).expect("valid toml");
        let offset = source.find("\"9\"").expect("present");
        assert_eq!(key_path_at(doc.get_ref(), offset), "files[1].mode");
    }

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("a\nbc", 3), (2, 2));
    }
}
