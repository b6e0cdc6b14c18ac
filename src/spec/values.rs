//! The values every section of a Jailfile shares: paths in the jail, modes, owners by name or
//! number, sizes, and host globs.

use std::path::PathBuf;

use globset::{Glob, GlobBuilder};
use toml::Spanned;

use super::users::Owners;
use super::{Attributes, Validator};
use crate::diagnostics::{closest, Problem};
use crate::tree::JailPath;

impl Validator<'_> {
    pub(super) fn jail_path_or_default(
        &mut self,
        key: &str,
        value: Option<&Spanned<String>>,
        default: &str,
    ) -> JailPath {
        match value {
            None => JailPath::parse(default).unwrap_or_else(|_| JailPath::root()),
            Some(value) => self.jail_path(key, value).unwrap_or_else(JailPath::root),
        }
    }

    pub(super) fn jail_path(&mut self, key: &str, value: &Spanned<String>) -> Option<JailPath> {
        match JailPath::parse(value.get_ref()) {
            Ok(path) => Some(path),
            Err(error) => {
                self.report(Problem::at(key, value, format!("a path in the jail {error}")));
                None
            }
        }
    }

    pub(super) fn mode(&mut self, key: &str, value: Option<&Spanned<String>>) -> Option<u32> {
        let value = value?;
        match parse_mode(value.get_ref()) {
            Ok(mode) => Some(mode),
            Err(message) => {
                self.report(
                    Problem::at(key, value, message)
                        .with_help("write the mode as a string of octal digits, e.g. mode = \"0755\""),
                );
                None
            }
        }
    }

    fn id(&mut self, key: &str, value: Option<&Spanned<String>>, known: &[(String, u32)]) -> Option<u32> {
        let value = value?;
        let text = value.get_ref();
        if text == "root" {
            return Some(0);
        }
        if let Ok(number) = text.parse::<u32>() {
            return Some(number);
        }
        if let Some((_, id)) = known.iter().find(|(name, _)| name == text) {
            return Some(*id);
        }
        let mut problem = Problem::at(key, value, "not \"root\", a number, or a name declared in the Jailfile");
        if let Some(near) = closest(text, known.iter().map(|(name, _)| name.as_str())) {
            problem = problem.with_help(format!("did you mean {near:?}?"));
        }
        self.report(problem);
        None
    }

    pub(super) fn attributes(
        &mut self,
        key: &str,
        mode: Option<&Spanned<String>>,
        owner: Option<&Spanned<String>>,
        group: Option<&Spanned<String>>,
        owners: &Owners,
    ) -> Attributes {
        Attributes {
            mode: self.mode(&format!("{key}.mode"), mode),
            owner: self.id(&format!("{key}.owner"), owner, &owners.user_ids()),
            group: self.id(&format!("{key}.group"), group, &owners.group_ids()),
            keep_setuid: false,
        }
    }

    pub(super) fn size(&mut self, key: &str, value: &Spanned<String>) -> Option<u64> {
        match parse_size(value.get_ref()) {
            Ok(size) => Some(size),
            Err(message) => {
                self.report(Problem::at(key, value, message));
                None
            }
        }
    }
}

/// Parses "0644", "755", "1777": 3 or 4 octal digits.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if !(3..=4).contains(&digits.len()) || !digits.bytes().all(|byte| (b'0'..=b'7').contains(&byte)) {
        return Err(format!("{text:?} is not an octal mode (3 or 4 digits 0-7, e.g. \"0644\")"));
    }
    u32::from_str_radix(digits, 8).map_err(|error| format!("{text:?} is not an octal mode: {error}"))
}

/// Parses sizes such as "64M", "256MiB", "1G", "4096" (bytes, 1024-based suffixes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits_end = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(digits_end);
    let invalid = || format!("{text:?} is not a size (e.g. \"64M\", \"1G\", \"4096\")");
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let shift = match suffix.trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return Err(invalid()),
    };
    number.checked_mul(1u64 << shift).ok_or_else(|| format!("{text:?} is too large"))
}

/// Whether a path contains glob syntax.
pub fn is_glob(text: &str) -> bool {
    text.contains(['*', '?', '[', '{'])
}

/// Compiles a path glob: `*` stays within one directory, `**` crosses directories.
pub fn compile_glob(pattern: &str) -> Result<Glob, String> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|error| format!("invalid glob: {}", error.kind()))
}

/// The longest leading directory of a glob pattern without glob syntax: "/usr/lib/python3.11/**" -> "/usr/lib/python3.11".
pub fn glob_base(pattern: &str) -> PathBuf {
    let mut base = PathBuf::from("/");
    for part in pattern.split('/').filter(|part| !part.is_empty()) {
        if is_glob(part) {
            break;
        }
        base.push(part);
    }
    base
}
