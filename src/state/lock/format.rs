//! The lock file's format: its entries and header, the one writer of its text and its
//! parsers, where it lives, and the digest of the Jailfile and the host fingerprint it records.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::desired::{DesiredKind, DesiredTree};
use crate::host::HostFs;

/// The lock format this jailprov writes and reads.
pub const LOCK_VERSION: u32 = 1;

/// The content hash algorithm, as the lock and the drift lines name it.
pub const HASH_ALGORITHM: &str = "blake3";

/// Where the lock of a Jailfile lives: beside it, named after it (`Jailfile.toml` ->
/// `Jailfile.lock`, `web.toml` -> `web.lock`), so two Jailfiles in one directory never share one.
pub fn lock_path(jailfile: &Path) -> PathBuf {
    let stem = jailfile.file_stem().map_or_else(|| "Jailfile".into(), |stem| stem.to_string_lossy().into_owned());
    jailfile.with_file_name(format!("{stem}.lock"))
}

/// What identifies the host a lock was written on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFingerprint {
    /// os-release `ID`.
    pub os: String,
    /// os-release `VERSION_ID`.
    pub os_version: String,
    /// The glibc of the jail's libc.so.6 (its highest `GLIBC_x.y` version definition), or
    /// "none" for a jail without one.
    pub glibc: String,
    pub arch: String,
}

impl std::fmt::Display for HostFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}, glibc {}, {}", self.os, self.os_version, self.glibc, self.arch)
    }
}

/// One jail path as the host gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockEntry {
    pub path: String,
    /// The closure's kind: binary, library, interpreter, nss-module, file, symlink, dir, device,
    /// content, generated...
    pub kind: String,
    /// The host file it is copied from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Octal permission bits the jail gets (not for symlinks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// "uid:gid" when not root's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// "blake3:<hex>" of the whole content, for files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// A symlink's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// "c 1:3" for a character device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sonames: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needed_by: Vec<String>,
    /// "package version" from the dpkg database, for review; informational, never compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
}

/// A whole lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub version: u32,
    /// "blake3:<hex>" of the normalized Jailfile (see [`jailfile_digest`]).
    pub jailfile: String,
    pub host: HostFingerprint,
    pub entries: Vec<LockEntry>,
}

impl Lock {
    /// The lock as written: one line per entry, fields in a fixed order, a final newline.
    pub fn to_text(&self) -> Result<String> {
        // One buffer, sized once (a 50,000-path lock is over 10 MB), entries written into it.
        let mut text: Vec<u8> = Vec::with_capacity(256 + self.entries.len() * 320);
        let header = LockHeader { version: self.version, jailfile: &self.jailfile, host: &self.host };
        write_lock_text(&mut text, &header, self.entries.iter().map(Piece::Entry))?;
        String::from_utf8(text).context("the lock text is not UTF-8")
    }

    pub fn parse(text: &str, path: &Path) -> Result<Lock> {
        let lock: Lock = serde_json::from_str(text).with_context(|| {
            format!("{} is not a lock jailprov can read; fix it or delete it and run `jailprov lock`", path.display())
        })?;
        if lock.version != LOCK_VERSION {
            bail!("{} has lock version {}; this jailprov reads version {LOCK_VERSION}", path.display(), lock.version);
        }
        Ok(lock)
    }
}

/// A lock's fields before its entries.
pub(super) struct LockHeader<'a> {
    pub(super) version: u32,
    pub(super) jailfile: &'a str,
    pub(super) host: &'a HostFingerprint,
}

/// What follows the header, before the first entry line; and the entry lines' indent and
/// separator, and the end of the text (after the last line, or after none).
pub(super) const ENTRIES_OPEN: &str = "  \"entries\": [";
pub(super) const FIRST_LINE: &str = "\n    ";
pub(super) const NEXT_LINE: &str = ",\n    ";
pub(super) const AFTER_LINES: &str = "\n  ]\n}\n";
pub(super) const NO_LINES: &str = "]\n}\n";

/// Entry lines of a lock text: written from an entry, or copied from the old lock file (a byte
/// range of it holding one or more whole entry lines, separators between them included).
pub(super) enum Piece<'a> {
    Entry(&'a LockEntry),
    OldLines(std::ops::Range<u64>),
}

/// Where lock text goes: a buffer, or a new lock file spliced from the old one.
pub(super) trait LockSink {
    fn put(&mut self, bytes: &[u8]) -> Result<()>;
    fn put_entry(&mut self, entry: &LockEntry) -> Result<()>;
    fn put_old(&mut self, range: std::ops::Range<u64>) -> Result<()>;
}

impl LockSink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.extend_from_slice(bytes);
        Ok(())
    }

    fn put_entry(&mut self, entry: &LockEntry) -> Result<()> {
        serde_json::to_writer(self, entry).context("serializing a lock entry")
    }

    fn put_old(&mut self, _: std::ops::Range<u64>) -> Result<()> {
        bail!("a lock text built in memory has no old lock file to copy lines from")
    }
}

/// The one writer of lock text, for a whole lock and for one spliced from the old lock file, so
/// the two cannot differ in a separator.
pub(super) fn write_lock_text<'a>(
    sink: &mut impl LockSink,
    header: &LockHeader,
    pieces: impl Iterator<Item = Piece<'a>>,
) -> Result<()> {
    sink.put(b"{\n")?;
    sink.put(format!("  \"version\": {},\n", header.version).as_bytes())?;
    sink.put(format!("  \"jailfile\": {},\n", serde_json::to_string(header.jailfile)?).as_bytes())?;
    sink.put(format!("  \"host\": {},\n", serde_json::to_string(header.host)?).as_bytes())?;
    sink.put(ENTRIES_OPEN.as_bytes())?;
    let mut empty = true;
    for piece in pieces {
        sink.put(if empty { FIRST_LINE } else { NEXT_LINE }.as_bytes())?;
        empty = false;
        match piece {
            Piece::Entry(entry) => sink.put_entry(entry)?,
            Piece::OldLines(range) => sink.put_old(range)?,
        }
    }
    sink.put(if empty { NO_LINES } else { AFTER_LINES }.as_bytes())
}

/// The header of a lock text (version, Jailfile digest, host) and the length of the text up to
/// and including [`ENTRIES_OPEN`]; None for anything [`write_lock_text`] would not have written.
pub(super) fn parse_header(text: &str) -> Option<(u32, String, HostFingerprint, usize)> {
    let mut rest = text.strip_prefix("{\n")?;
    let mut field = |name: &str| -> Option<&str> {
        let (line, after) = rest.split_once('\n')?;
        rest = after;
        line.strip_prefix("  \"")?.strip_prefix(name)?.strip_prefix("\": ")?.strip_suffix(',')
    };
    let version = serde_json::from_str(field("version")?).ok()?;
    let jailfile = serde_json::from_str(field("jailfile")?).ok()?;
    let host = serde_json::from_str(field("host")?).ok()?;
    rest.starts_with(ENTRIES_OPEN).then(|| (version, jailfile, host, text.len() - rest.len() + ENTRIES_OPEN.len()))
}

/// The length of each entry line's JSON in a lock text (without indent and separator), or None
/// for a text [`write_lock_text`] would not have written.
pub(super) fn entry_lengths(text: &str) -> Option<Vec<u32>> {
    let (_, _, _, header_size) = parse_header(text)?;
    let rest = &text[header_size..];
    if rest == NO_LINES {
        return Some(Vec::new());
    }
    let body = rest.strip_prefix(FIRST_LINE)?.strip_suffix(AFTER_LINES)?;
    let mut lengths = Vec::new();
    for line in body.split(NEXT_LINE) {
        // A line's JSON holds no newline (serde_json escapes it) and is one object.
        if line.contains('\n') || !(line.starts_with('{') && line.ends_with('}')) {
            return None;
        }
        lengths.push(u32::try_from(line.len()).ok()?);
    }
    Some(lengths)
}

// The normalized Jailfile digest and the host fingerprint

/// blake3 of the Jailfile's TOML value in a canonical form (keys sorted, no comments, no
/// whitespace, `\n` line endings inside strings as TOML itself reads them): CRLF, comments,
/// formatting and key order do not change it. The Jailfiles it includes count too, each in the
/// same form after it, in the order they are read (a Jailfile without `include` keeps the
/// digest it always had).
pub fn jailfile_digest(jailfile: &std::path::Path, text: &str) -> Result<String> {
    let mut canonical = String::new();
    for text in std::iter::once(text.to_owned()).chain(crate::spec::included_texts(jailfile, text)?) {
        if !canonical.is_empty() {
            canonical.push('\n');
        }
        let table: toml::Table = toml::from_str(&text).context("the Jailfile is not valid TOML")?;
        canonical_table(&table, &mut canonical);
    }
    Ok(format!("{HASH_ALGORITHM}:{}", blake3::hash(canonical.as_bytes()).to_hex()))
}

fn canonical_table(table: &toml::Table, out: &mut String) {
    let sorted: BTreeMap<&String, &toml::Value> = table.iter().collect();
    out.push('{');
    for (key, value) in sorted {
        out.push_str(&serde_json::to_string(key).unwrap_or_default());
        out.push(':');
        canonical_value(value, out);
        out.push(',');
    }
    out.push('}');
}

fn canonical_value(value: &toml::Value, out: &mut String) {
    match value {
        toml::Value::String(text) => out.push_str(&serde_json::to_string(text).unwrap_or_default()),
        toml::Value::Integer(number) => {
            let _ = write!(out, "i{number}");
        }
        toml::Value::Float(number) => {
            let _ = write!(out, "f{:x}", number.to_bits());
        }
        toml::Value::Boolean(flag) => {
            let _ = write!(out, "{flag}");
        }
        toml::Value::Datetime(datetime) => {
            let _ = write!(out, "d{datetime}");
        }
        toml::Value::Array(items) => {
            out.push('[');
            for item in items {
                canonical_value(item, out);
                out.push(',');
            }
            out.push(']');
        }
        toml::Value::Table(table) => canonical_table(table, out),
    }
}

/// os-release, the glibc the jail gets, and the architecture. Nothing is executed: glibc's
/// version is the highest `GLIBC_x.y` version its libc.so.6 defines, read with goblin.
pub fn host_fingerprint(host: &HostFs, desired: &DesiredTree) -> HostFingerprint {
    let glibc = desired
        .nodes
        .values()
        .find_map(|node| match &node.kind {
            DesiredKind::File { source, .. } if node.path.file_name() == "libc.so.6" => Some(source.clone()),
            _ => None,
        })
        .map_or_else(|| "none".to_owned(), |libc| glibc_version(host, &libc).unwrap_or_else(|| "unknown".to_owned()));
    fingerprint_with(host, glibc)
}

/// The fingerprint of a host whose jail gets `glibc`.
pub(super) fn fingerprint_with(host: &HostFs, glibc: String) -> HostFingerprint {
    let os_release = os_release(host);
    let field = |name: &str| {
        os_release
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
            .map(|value| value.trim().trim_matches('"').to_owned())
            .unwrap_or_else(|| "unknown".to_owned())
    };
    HostFingerprint { os: field("ID"), os_version: field("VERSION_ID"), glibc, arch: std::env::consts::ARCH.to_owned() }
}

pub(super) fn os_release(host: &HostFs) -> String {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|path| host.read(Path::new(path)).ok().and_then(|bytes| String::from_utf8(bytes).ok()))
        .unwrap_or_default()
}

/// The highest `GLIBC_x.y[.z]` version definition of a libc.so.6.
pub(super) fn glibc_version(host: &HostFs, libc: &Path) -> Option<String> {
    let bytes = host.read(libc).ok()?;
    let elf = goblin::elf::Elf::parse(&bytes).ok()?;
    let verdef = elf.verdef.as_ref()?;
    let mut best: Option<(Vec<u32>, String)> = None;
    for definition in verdef.iter() {
        for aux in definition.iter() {
            let Some(name) = elf.dynstrtab.get_at(aux.vda_name) else { continue };
            let Some(version) = name.strip_prefix("GLIBC_") else { continue };
            let Ok(numbers) = version.split('.').map(str::parse::<u32>).collect::<Result<Vec<u32>, _>>() else {
                continue;
            };
            if best.as_ref().is_none_or(|(known, _)| numbers > *known) {
                best = Some((numbers, version.to_owned()));
            }
        }
    }
    best.map(|(_, version)| version)
}
