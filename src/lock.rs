//! Jailfile.lock: the exact contents a Jailfile gives on this host, committed beside it, and the
//! host drift found against it.
//!
//! The lock is JSON with one entry per line, sorted by jail path, so a review diff shows one
//! line per changed path. It holds only what is the same on every host that gives the same files
//! (paths, kinds, sources, sizes, modes, blake3 content hashes, symlink text, sonames, who needed
//! them, dpkg package versions, a digest of the normalized Jailfile and a host fingerprint): no
//! timestamps, inode numbers or ctimes, so two runs on an unchanged host write the same bytes and
//! the lock can be committed and shared.
//!
//! Hashing every file on every plan would turn a no-op plan (a stat walk) into a read of the
//! whole jail. So a per-host accelerator lives outside the repository, in the state directory
//! (`--state-dir`), keyed by the lock's absolute path: for each host source its stat print
//! (size, mtime, ctime, inode) and blake3, the key of the last (desired tree, lock file) pair
//! found fresh, and a memo of the lock file's lines (the digest of what each line was made from,
//! as of the lock file's stat print), so that after a few host changes a review looks at those
//! lines only. A stat match means "hash unchanged"; anything else is re-hashed. The cache is
//! never trusted beyond that: when it is missing, foreign-owned or unreadable, everything is
//! hashed again, and a lock file that is not the one the memo describes is reviewed in full.
#![allow(clippy::disallowed_methods)] // writes Jailfile.lock beside the Jailfile and the cache in the state dir: outside every jail

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use crate::closure::EntryKind;
use crate::desired::{ClosureFacts, DesiredKind, DesiredNode, DesiredTree, Facts};
use crate::host::{HostFs, StatPrint};

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

// ---------------------------------------------------------------------------------------------
// The lock file
// ---------------------------------------------------------------------------------------------

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
struct LockHeader<'a> {
    version: u32,
    jailfile: &'a str,
    host: &'a HostFingerprint,
}

/// What follows the header, before the first entry line; and the entry lines' indent and
/// separator, and the end of the text (after the last line, or after none).
const ENTRIES_OPEN: &str = "  \"entries\": [";
const FIRST_LINE: &str = "\n    ";
const NEXT_LINE: &str = ",\n    ";
const AFTER_LINES: &str = "\n  ]\n}\n";
const NO_LINES: &str = "]\n}\n";

/// Entry lines of a lock text: written from an entry, or copied from the old lock file (a byte
/// range of it holding one or more whole entry lines, separators between them included).
enum Piece<'a> {
    Entry(&'a LockEntry),
    OldLines(std::ops::Range<u64>),
}

/// Where lock text goes: a buffer, or a new lock file spliced from the old one.
trait LockSink {
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
fn write_lock_text<'a>(
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
fn parse_header(text: &str) -> Option<(u32, String, HostFingerprint, usize)> {
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
fn entry_lengths(text: &str) -> Option<Vec<u32>> {
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

// ---------------------------------------------------------------------------------------------
// The normalized Jailfile digest and the host fingerprint
// ---------------------------------------------------------------------------------------------

/// blake3 of the Jailfile's TOML value in a canonical form (keys sorted, no comments, no
/// whitespace, `\n` line endings inside strings as TOML itself reads them): CRLF, comments,
/// formatting and key order do not change it.
pub fn jailfile_digest(text: &str) -> Result<String> {
    let table: toml::Table = toml::from_str(text).context("the Jailfile is not valid TOML")?;
    let mut canonical = String::new();
    canonical_table(&table, &mut canonical);
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
fn fingerprint_with(host: &HostFs, glibc: String) -> HostFingerprint {
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

fn os_release(host: &HostFs) -> String {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|path| host.read(Path::new(path)).ok().and_then(|bytes| String::from_utf8(bytes).ok()))
        .unwrap_or_default()
}

/// The highest `GLIBC_x.y[.z]` version definition of a libc.so.6.
fn glibc_version(host: &HostFs, libc: &Path) -> Option<String> {
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

// ---------------------------------------------------------------------------------------------
// The per-host cache (state directory)
// ---------------------------------------------------------------------------------------------

/// Two files per lock in `<state dir>/lock-cache`, both written atomically:
///
/// * `<name>.cache`, small and rewritten by every review that learns anything: the fresh key,
///   the memo (the lock file's stat print, and the digest, length and source tag of each of its
///   lines), the source hashes learned since the store was written, glibc's version;
/// * `<name>.hashes`, the store: every host source's stat print and blake3, and the dpkg package
///   of those looked up, as fixed-size records sorted by a 128-bit key of the source path. It is
///   read without decoding (a binary search finds a record) and rewritten only by a full review,
///   or when what the small file gathered outgrows it (see [`RECENT_LIMIT`]).
///
/// Bumped whenever either layout or the meaning of a line digest changes.
const CACHE_VERSION: u32 = 3;

/// Source hashes the small file gathers before they are merged into the store: a store rewrite
/// (megabytes) costs more than a review of one changed file, so it waits for this many.
const RECENT_LIMIT: usize = 512;

/// A host source, by the first 16 bytes of the blake3 of its path: fixed-size, cheap to compare.
type SourceKey = [u8; 16];

fn source_key(source: &Path) -> SourceKey {
    let hash = blake3::hash(source.as_os_str().as_encoded_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&hash.as_bytes()[..16]);
    key
}

/// A host source's content hash, valid while its stat print is `print`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct SourceHash {
    key: SourceKey,
    print: StatPrint,
    hash: [u8; 32],
}

/// What jailprov knows of the lock file's lines without reading them: while the lock file has
/// `lock_stat`, its entry line number i is exactly what [`entry_of`] gives for a desired node
/// of digest `lines[i].digest` (see [`DesiredLines::digests`]), with the package a full review would
/// give it, written as [`write_lock_text`] writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Memo {
    lock_stat: StatPrint,
    lines: Vec<MemoLine>,
}

/// One entry line of the lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MemoLine {
    digest: u128,
    /// The length of its JSON: where every line is, without reading the file.
    length: u32,
    /// [`source_tag`] of its source: which lines may share a source with a changed one.
    source_tag: u32,
}

/// 32 bits of blake3 of an entry's source (0: none). Lines of equal tags are read to compare
/// their sources; a tag alone decides nothing.
fn source_tag(source: Option<&str>) -> u32 {
    source.map_or(0, |source| {
        let hash = blake3::hash(source.as_bytes());
        let mut tag = [0u8; 4];
        tag.copy_from_slice(&hash.as_bytes()[..4]);
        u32::from_le_bytes(tag).max(1)
    })
}

/// The small per-lock file, as used.
#[derive(Debug, Default)]
struct Cache {
    /// The key of the last (desired tree, lock file, Jailfile, os-release) found fresh.
    fresh: Option<[u8; 32]>,
    memo: Option<Memo>,
    /// Source hashes learned since the store was written, the latest last.
    recent: Vec<SourceHash>,
    glibc: Option<GlibcSeen>,
}

/// The glibc version last read from the jail's libc.so.6 (a 2 MB read and an ELF parse),
/// valid while its stat print stays the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct GlibcSeen {
    libc: Vec<u8>,
    print: StatPrint,
    version: Option<String>,
}

/// The small file on disk: this postcard head, then `memo_lines` raw [`MEMO_LINE_SIZE`]-byte
/// records (49,000 of them decode in a tight loop, not as 150,000 varints).
#[derive(Debug, Serialize, Deserialize)]
struct CacheHead {
    /// First, and `fresh` second: [`peek_fresh`] reads only these.
    version: u32,
    fresh: Option<[u8; 32]>,
    memo_lock_stat: Option<StatPrint>,
    memo_lines: u32,
    recent: Vec<SourceHash>,
    glibc: Option<GlibcSeen>,
}

/// digest (16 bytes), length, source tag (4 each), little-endian.
const MEMO_LINE_SIZE: usize = 24;

impl Cache {
    fn decode(bytes: &[u8]) -> Option<Cache> {
        let (head, lines) = postcard::take_from_bytes::<CacheHead>(bytes).ok()?;
        if head.version != CACHE_VERSION || lines.len() != head.memo_lines as usize * MEMO_LINE_SIZE {
            return None;
        }
        let memo = match head.memo_lock_stat {
            Some(lock_stat) => {
                let lines =
                    lines.as_chunks::<MEMO_LINE_SIZE>().0.iter().map(decode_memo_line).collect::<Option<_>>()?;
                Some(Memo { lock_stat, lines })
            }
            None => None,
        };
        Some(Cache { fresh: head.fresh, memo, recent: head.recent, glibc: head.glibc })
    }

    fn encode(&self) -> Result<Vec<u8>> {
        let lines = self.memo.as_ref().map_or(&[][..], |memo| &memo.lines[..]);
        let head = CacheHead {
            version: CACHE_VERSION,
            fresh: self.fresh,
            memo_lock_stat: self.memo.as_ref().map(|memo| memo.lock_stat),
            memo_lines: u32::try_from(lines.len()).context("too many lock lines for the cache")?,
            recent: self.recent.clone(),
            glibc: self.glibc.clone(),
        };
        let mut bytes = postcard::to_stdvec(&head).context("serializing the lock cache")?;
        bytes.reserve(lines.len() * MEMO_LINE_SIZE);
        for line in lines {
            bytes.extend_from_slice(&line.digest.to_le_bytes());
            bytes.extend_from_slice(&line.length.to_le_bytes());
            bytes.extend_from_slice(&line.source_tag.to_le_bytes());
        }
        Ok(bytes)
    }
}

fn decode_memo_line(record: &[u8; MEMO_LINE_SIZE]) -> Option<MemoLine> {
    let (digest, rest) = record.split_first_chunk::<16>()?;
    let (length, rest) = rest.split_first_chunk::<4>()?;
    let source_tag = rest.first_chunk::<4>()?;
    Some(MemoLine {
        digest: u128::from_le_bytes(*digest),
        length: u32::from_le_bytes(*length),
        source_tag: u32::from_le_bytes(*source_tag),
    })
}

/// The dpkg database the package answers of a store hold for (see [`dpkg_database_print`]).
type DatabasePrint = (StatPrint, StatPrint);

/// The store's postcard head; the records follow it.
#[derive(Debug, Serialize, Deserialize)]
struct StoreHead {
    version: u32,
    files: u32,
    packages: u32,
    database: Option<DatabasePrint>,
    /// The distinct "package version" strings, which package records name by index (a few
    /// hundred strings for tens of thousands of sources).
    names: Vec<String>,
}

/// key, size, mtime, ctime, inode, blake3.
const FILE_RECORD: usize = 16 + 8 + 16 + 16 + 8 + 32;
/// key, index into the names (or [`NO_PACKAGE`]).
const PACKAGE_RECORD: usize = 16 + 4;
/// "No installed package lists this source".
const NO_PACKAGE: u32 = u32::MAX;

/// The store as read: its bytes, searched in place.
#[derive(Debug, Default)]
struct SourceStore {
    bytes: Vec<u8>,
    files: std::ops::Range<usize>,
    packages: std::ops::Range<usize>,
    database: Option<DatabasePrint>,
    names: Vec<String>,
}

impl SourceStore {
    fn decode(bytes: Vec<u8>) -> Option<SourceStore> {
        let (head, records) = postcard::take_from_bytes::<StoreHead>(&bytes).ok()?;
        let files_size = head.files as usize * FILE_RECORD;
        if head.version != CACHE_VERSION || records.len() != files_size + head.packages as usize * PACKAGE_RECORD {
            return None;
        }
        let start = bytes.len() - records.len();
        let store = SourceStore {
            files: start..start + files_size,
            packages: start + files_size..bytes.len(),
            database: head.database,
            names: head.names,
            bytes,
        };
        // Sorted keys are what the binary searches rely on: anything else is not our store.
        let files_sorted = store.file_records().windows(2).all(|pair| pair[0][..16] < pair[1][..16]);
        let packages_sorted = store.package_records().windows(2).all(|pair| pair[0][..16] < pair[1][..16]);
        let names = store.names.len();
        let packages_valid = store
            .package_records()
            .iter()
            .all(|record| package_index(record).is_some_and(|index| index == NO_PACKAGE || (index as usize) < names));
        (files_sorted && packages_sorted && packages_valid).then_some(store)
    }

    fn file_records(&self) -> &[[u8; FILE_RECORD]] {
        self.bytes[self.files.clone()].as_chunks().0
    }

    fn package_records(&self) -> &[[u8; PACKAGE_RECORD]] {
        self.bytes[self.packages.clone()].as_chunks().0
    }

    /// The hash of `key` if the store has it for the stat print `print`.
    fn hash(&self, key: &SourceKey, print: &StatPrint) -> Option<[u8; 32]> {
        let records = self.file_records();
        let at = records.binary_search_by(|record| record[..16].cmp(&key[..])).ok()?;
        let record = decode_file_record(&records[at])?;
        (record.print == *print).then_some(record.hash)
    }

    /// The package answer for `key` (Some(None): no package lists it) while the dpkg database
    /// is still `database`.
    fn package(&self, key: &SourceKey, database: Option<DatabasePrint>) -> Option<Option<&str>> {
        if database.is_none() || self.database != database {
            return None;
        }
        let records = self.package_records();
        let at = records.binary_search_by(|record| record[..16].cmp(&key[..])).ok()?;
        match package_index(&records[at])? {
            NO_PACKAGE => Some(None),
            index => self.names.get(index as usize).map(|name| Some(name.as_str())),
        }
    }

    fn files(&self) -> impl Iterator<Item = SourceHash> + '_ {
        self.file_records().iter().filter_map(decode_file_record)
    }

    fn packages(&self) -> impl Iterator<Item = (SourceKey, Option<String>)> + '_ {
        self.package_records().iter().filter_map(|record| {
            let (key, _) = record.split_first_chunk::<16>()?;
            let name = match package_index(record)? {
                NO_PACKAGE => None,
                index => Some(self.names.get(index as usize)?.clone()),
            };
            Some((*key, name))
        })
    }

    /// A store of `files` and `packages` (a later record of a key wins), keeping only the
    /// sources `keep` has: the jail's sources now, so the store never outgrows the jail.
    fn encode(
        files: impl Iterator<Item = SourceHash>,
        packages: impl Iterator<Item = (SourceKey, Option<String>)>,
        database: Option<DatabasePrint>,
        keep: &rustc_hash::FxHashSet<SourceKey>,
    ) -> Result<Vec<u8>> {
        let files: BTreeMap<SourceKey, SourceHash> =
            files.filter(|file| keep.contains(&file.key)).map(|file| (file.key, file)).collect();
        let packages: BTreeMap<SourceKey, Option<String>> = packages.filter(|(key, _)| keep.contains(key)).collect();
        let mut names: Vec<String> = packages.values().flatten().cloned().collect();
        names.sort();
        names.dedup();
        let head = StoreHead {
            version: CACHE_VERSION,
            files: u32::try_from(files.len()).context("too many sources for the lock cache")?,
            packages: u32::try_from(packages.len()).context("too many sources for the lock cache")?,
            database,
            names,
        };
        let mut bytes = postcard::to_stdvec(&head).context("serializing the lock's hash store")?;
        bytes.reserve(files.len() * FILE_RECORD + packages.len() * PACKAGE_RECORD);
        for file in files.values() {
            bytes.extend_from_slice(&file.key);
            bytes.extend_from_slice(&file.print.size.to_le_bytes());
            bytes.extend_from_slice(&file.print.mtime_ns.to_le_bytes());
            bytes.extend_from_slice(&file.print.ctime_ns.to_le_bytes());
            bytes.extend_from_slice(&file.print.ino.to_le_bytes());
            bytes.extend_from_slice(&file.hash);
        }
        for (key, name) in &packages {
            let index = match name {
                // The names were taken from these very values.
                Some(name) => head.names.binary_search(name).map_or(NO_PACKAGE, |index| index as u32),
                None => NO_PACKAGE,
            };
            bytes.extend_from_slice(key);
            bytes.extend_from_slice(&index.to_le_bytes());
        }
        Ok(bytes)
    }
}

fn decode_file_record(record: &[u8; FILE_RECORD]) -> Option<SourceHash> {
    let (key, rest) = record.split_first_chunk::<16>()?;
    let (size, rest) = rest.split_first_chunk::<8>()?;
    let (mtime, rest) = rest.split_first_chunk::<16>()?;
    let (ctime, rest) = rest.split_first_chunk::<16>()?;
    let (ino, rest) = rest.split_first_chunk::<8>()?;
    let hash = rest.first_chunk::<32>()?;
    let print = StatPrint {
        size: u64::from_le_bytes(*size),
        mtime_ns: i128::from_le_bytes(*mtime),
        ctime_ns: i128::from_le_bytes(*ctime),
        ino: u64::from_le_bytes(*ino),
    };
    Some(SourceHash { key: *key, print, hash: *hash })
}

fn package_index(record: &[u8; PACKAGE_RECORD]) -> Option<u32> {
    record.last_chunk::<4>().map(|index| u32::from_le_bytes(*index))
}

/// The store as a review needs it: searched in the file for the few lookups of an incremental
/// review (a 4 MB read costs more than twenty 20-byte reads), read whole for a full review or a
/// rewrite. Opened or read when first needed.
struct LazyStore<'p> {
    path: &'p Path,
    /// Lookups read the file rather than the whole store until the whole is read anyway.
    few_lookups: bool,
    file: std::sync::OnceLock<Option<StoreFile>>,
    whole: std::sync::OnceLock<SourceStore>,
}

impl<'p> LazyStore<'p> {
    /// For a full review: every source is looked up.
    fn new(path: &'p Path) -> LazyStore<'p> {
        LazyStore { path, few_lookups: false, file: std::sync::OnceLock::new(), whole: std::sync::OnceLock::new() }
    }

    /// For an incremental review: a few sources are looked up.
    fn for_few_lookups(path: &'p Path) -> LazyStore<'p> {
        LazyStore { few_lookups: true, ..LazyStore::new(path) }
    }

    fn whole(&self) -> &SourceStore {
        self.whole.get_or_init(|| {
            let _t = crate::timings::phase("lock: store load");
            load_store(self.path)
        })
    }

    fn file(&self) -> Option<&StoreFile> {
        self.file.get_or_init(|| StoreFile::open(self.path)).as_ref()
    }

    fn hash(&self, key: &SourceKey, print: &StatPrint) -> Option<[u8; 32]> {
        if self.few_lookups && self.whole.get().is_none() {
            let record = decode_file_record(&self.file()?.find::<FILE_RECORD>(StoreSection::Files, key)?)?;
            return (record.print == *print).then_some(record.hash);
        }
        self.whole().hash(key, print)
    }

    fn package(&self, key: &SourceKey, database: Option<DatabasePrint>) -> Option<Option<&str>> {
        if self.few_lookups && self.whole.get().is_none() {
            let file = self.file()?;
            if database.is_none() || file.head.database != database {
                return None;
            }
            let record = file.find::<PACKAGE_RECORD>(StoreSection::Packages, key)?;
            return match package_index(&record)? {
                NO_PACKAGE => Some(None),
                index => file.head.names.get(index as usize).map(|name| Some(name.as_str())),
            };
        }
        self.whole().package(key, database)
    }
}

#[derive(Debug, Clone, Copy)]
enum StoreSection {
    Files,
    Packages,
}

/// The store file, its head read, its records searched where they are.
struct StoreFile {
    file: fs::File,
    head: StoreHead,
    /// Where the records start.
    records_at: u64,
}

impl StoreFile {
    /// None when missing, untrusted, not this version, or not the size its head says.
    fn open(path: &Path) -> Option<StoreFile> {
        let file = open_trusted(path)?;
        let size = file.metadata().ok()?.len();
        // The head is a few kilobytes (the package names); read more if it is not.
        let mut wanted: u64 = 64 * 1024;
        loop {
            let mut bytes = vec![0u8; usize::try_from(size.min(wanted)).ok()?];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, 0).ok()?;
            match postcard::take_from_bytes::<StoreHead>(&bytes) {
                Ok((head, rest)) => {
                    let records_at = (bytes.len() - rest.len()) as u64;
                    let records = head.files as u64 * FILE_RECORD as u64 + head.packages as u64 * PACKAGE_RECORD as u64;
                    return (head.version == CACHE_VERSION && records_at + records == size).then_some(StoreFile {
                        file,
                        head,
                        records_at,
                    });
                }
                Err(postcard::Error::DeserializeUnexpectedEnd) if wanted < size => wanted *= 4,
                Err(_) => return None,
            }
        }
    }

    /// The record of `key` in a section: a binary search by reads of one record each (the
    /// records are sorted by key; a store that is not finds nothing, and a miss only costs a
    /// read of the source).
    fn find<const SIZE: usize>(&self, section: StoreSection, key: &SourceKey) -> Option<[u8; SIZE]> {
        let (start, count) = match section {
            StoreSection::Files => (self.records_at, u64::from(self.head.files)),
            StoreSection::Packages => {
                (self.records_at + u64::from(self.head.files) * FILE_RECORD as u64, u64::from(self.head.packages))
            }
        };
        let (mut low, mut high) = (0, count);
        while low < high {
            let middle = low + (high - low) / 2;
            let mut record = [0u8; SIZE];
            std::os::unix::fs::FileExt::read_exact_at(&self.file, &mut record, start + middle * SIZE as u64).ok()?;
            match record[..16].cmp(&key[..]) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return Some(record),
            }
        }
        None
    }
}

/// Source hashes to look up before reading a file: the small file's recent ones, then the store.
struct KnownHashes<'a> {
    recent: HashMap<SourceKey, (StatPrint, [u8; 32])>,
    store: &'a LazyStore<'a>,
}

impl<'a> KnownHashes<'a> {
    fn new(recent: &[SourceHash], store: &'a LazyStore<'a>) -> KnownHashes<'a> {
        let recent = recent.iter().map(|known| (known.key, (known.print, known.hash))).collect();
        KnownHashes { recent, store }
    }

    fn get(&self, key: &SourceKey, print: &StatPrint) -> Option<[u8; 32]> {
        match self.recent.get(key) {
            Some((known, hash)) if known == print => Some(*hash),
            // A recent record is newer than the store's of the same source, whose stat print
            // (an older inode change time) cannot be the file's again: the store cannot help.
            Some(_) => None,
            None => self.store.hash(key, print),
        }
    }
}

/// The stat prints that change whenever dpkg installs, upgrades or removes a package.
fn dpkg_database_print(host: &HostFs) -> Option<DatabasePrint> {
    let status = fs::metadata(host.disk_path(Path::new("/var/lib/dpkg/status"))).ok()?;
    let info = fs::metadata(host.disk_path(Path::new("/var/lib/dpkg/info"))).ok()?;
    Some((StatPrint::of(&status), StatPrint::of(&info)))
}

fn cache_path(state_dir: &Path, lock: &Path) -> PathBuf {
    let absolute = std::path::absolute(lock).unwrap_or_else(|_| lock.to_path_buf());
    let text = absolute.to_string_lossy();
    let readable: String =
        text.trim_matches('/').chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' }).collect();
    let key = blake3::hash(text.as_bytes()).to_hex();
    state_dir.join("lock-cache").join(format!("{readable}-{}.cache", &key[..16]))
}

/// The store beside the small cache file.
fn store_path(cache_file: &Path) -> PathBuf {
    cache_file.with_extension("hashes")
}

/// The bytes of a cache file we may trust: ours, a regular file, writable by nobody else (a
/// forged cache could hide host drift). None when missing or not trusted.
fn read_trusted(path: &Path) -> Option<Vec<u8>> {
    let file = open_trusted(path)?;
    crate::beside::read_bounded(&file, path, "the lock's hash cache", MAX_CACHE_SIZE).ok()
}

/// The largest cache file read: a hash record per host source (under a hundred bytes each), so
/// a few MiB for the largest jails we measure; anything larger is not ours and is ignored.
const MAX_CACHE_SIZE: u64 = 1024 * 1024 * 1024;

/// A cache file opened if we may trust it (see [`read_trusted`]): a regular file (a FIFO is not
/// waited on, a symlink not followed) of at most [`MAX_CACHE_SIZE`].
fn open_trusted(path: &Path) -> Option<fs::File> {
    let (file, metadata) =
        crate::beside::open_regular_nofollow(path, "the lock's hash cache", MAX_CACHE_SIZE).ok()??;
    let trusted =
        metadata.is_file() && metadata.uid() == nix::unistd::geteuid().as_raw() && metadata.mode() & 0o022 == 0;
    trusted.then_some(file)
}

/// The small cache file, or an empty one when it is missing, untrusted or not this version.
fn load_cache(path: &Path) -> Cache {
    read_trusted(path).and_then(|bytes| Cache::decode(&bytes)).unwrap_or_default()
}

/// The store, or an empty one.
fn load_store(path: &Path) -> SourceStore {
    read_trusted(path).and_then(SourceStore::decode).unwrap_or_default()
}

/// Only the "fresh" key of a trusted cache (postcard keeps fields in order: the version and the
/// key lead), so the no-op path does not decode the rest.
fn peek_fresh(path: &Path) -> Option<[u8; 32]> {
    let mut head = Vec::with_capacity(64);
    open_trusted(path)?.take(64).read_to_end(&mut head).ok()?;
    let ((version, fresh), _) = postcard::take_from_bytes::<(u32, Option<[u8; 32]>)>(&head).ok()?;
    (version == CACHE_VERSION).then_some(fresh).flatten()
}

/// Saves a cache file; failing only warns (a plan by a user who cannot write the state
/// directory still works, just slower next time).
fn save_cache_file(path: &Path, bytes: Result<Vec<u8>>) {
    let result = (|| -> Result<()> {
        let bytes = bytes?;
        let dir = path.parent().context("the cache path has a parent")?;
        if let Some(state_dir) = dir.parent() {
            crate::beside::check_state_dir(state_dir)?;
        }
        crate::beside::check_state_dir(dir)?;
        if !dir.exists() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        write_atomically(path, &bytes, 0o600, Durability::Unsynced)
    })();
    if let Err(error) = result {
        eprintln!("warning: cannot save the lock's hash cache ({error:#}); the next plan hashes host files again");
    }
}

/// How a file written by [`write_atomically_with`] meets a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Synced before the rename: after a crash, the old file or the new one, whole.
    Synced,
    /// Not synced: after a crash possibly a torn file. Only for the cache, which every reader
    /// checks (its version and record layout, the lock file's stat print and the line lengths
    /// adding up to its size): a torn cache costs a full review, never a wrong lock.
    Unsynced,
}

/// Writes through a temporary file in the same directory and a rename: never a half-written file.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32, durability: Durability) -> Result<()> {
    write_atomically_with(path, mode, durability, |mut file, temporary| {
        file.write_all(bytes).with_context(|| format!("cannot write {}", temporary.display()))
    })
    .map(drop)
}

/// [`write_atomically`] of what `fill` writes into the temporary file (given with its path);
/// an error of `fill` is returned as it is, the temporary file removed. Returns the file written,
/// now at `path`.
fn write_atomically_with(
    path: &Path,
    mode: u32,
    durability: Durability,
    fill: impl FnOnce(&fs::File, &Path) -> Result<()>,
) -> Result<fs::File> {
    // A random name, O_EXCL | O_NOFOLLOW: a link planted beside the lock is never written through.
    let (file, temporary) = crate::beside::create_temp_beside(path, mode)?;
    let written = fill(&file, &temporary).and_then(|()| match durability {
        Durability::Synced => file.sync_all().with_context(|| format!("cannot write {}", temporary.display())),
        Durability::Unsynced => Ok(()),
    });
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        return Err(error);
    }
    fs::rename(&temporary, path).with_context(|| format!("cannot move {} into place", path.display()))?;
    Ok(file)
}

// ---------------------------------------------------------------------------------------------
// Building the lock of what the host gives now
// ---------------------------------------------------------------------------------------------

/// blake3 of a whole file.
pub fn hash_reader(reader: &mut dyn Read) -> std::io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            return Ok(*hasher.finalize().as_bytes());
        }
        hasher.update(&buffer[..read]);
    }
}

pub fn hash_text(hash: &[u8; 32]) -> String {
    format!("{HASH_ALGORITHM}:{}", blake3::Hash::from_bytes(*hash).to_hex())
}

/// A host source's hash, and whether it had to be read for it (nothing known matched its stat).
#[derive(Debug, Clone, Copy)]
struct HashedSource {
    source: SourceHash,
    read: bool,
}

/// The hash of the host source of each of `nodes` (None for nodes that copy no host file):
/// known where the stat print still matches, read otherwise (in parallel).
fn hash_sources(nodes: &[&DesiredNode], host: &HostFs, known: &KnownHashes) -> Result<Vec<Option<HashedSource>>> {
    nodes
        .par_iter()
        .map(|node| {
            let DesiredKind::File { source, source_print } = &node.kind else { return Ok(None) };
            let key = source_key(source);
            if let Some(hash) = known.get(&key, source_print) {
                return Ok(Some(HashedSource { source: SourceHash { key, print: *source_print, hash }, read: false }));
            }
            let mut file =
                host.open(source).with_context(|| format!("cannot read {} on the host", source.display()))?;
            let hash = hash_reader(&mut file).with_context(|| format!("cannot read {}", source.display()))?;
            // The stat is the one the desired tree saw: if the file changed since, the next run
            // sees another stat and hashes it again.
            Ok(Some(HashedSource { source: SourceHash { key, print: *source_print, hash }, read: true }))
        })
        .collect()
}

/// The keys of every host source of the jail: what the store keeps.
fn source_keys(desired: &DesiredTree) -> rustc_hash::FxHashSet<SourceKey> {
    let keys: Vec<SourceKey> = desired
        .nodes
        .par_iter()
        .filter_map(|(_, node)| match &node.kind {
            DesiredKind::File { source, .. } => Some(source_key(source)),
            _ => None,
        })
        .collect();
    keys.into_iter().collect()
}

/// The lock entry of a node; `hash` is its host source's (for a node that copies one).
fn entry_of(node: &DesiredNode, facts: &ClosureFacts, hash: Option<&[u8; 32]>) -> LockEntry {
    let known = facts.facts.get(&node.path);
    let kind = match (known, &node.kind) {
        (Some(facts), _) => facts.kind.label(),
        (None, DesiredKind::File { .. }) => EntryKind::File.label(),
        (None, DesiredKind::Content { .. }) => EntryKind::Content.label(),
        (None, DesiredKind::Dir) => EntryKind::Dir.label(),
        (None, DesiredKind::Symlink { .. }) => EntryKind::Symlink.label(),
        (None, DesiredKind::Device { .. }) => EntryKind::Device.label(),
    };
    let mut entry = LockEntry {
        path: node.path.as_str().to_owned(),
        kind: kind.to_owned(),
        source: None,
        size: None,
        mode: None,
        owner: None,
        hash: None,
        target: None,
        device: None,
        sonames: known.map(|facts| facts.sonames.clone()).unwrap_or_default(),
        needed_by: known.map(|facts| facts.needed_by.clone()).unwrap_or_default(),
        package: None,
    };
    if !matches!(node.kind, DesiredKind::Symlink { .. }) {
        entry.mode = Some(format!("{:04o}", node.mode));
        if (node.uid, node.gid) != (0, 0) {
            entry.owner = Some(format!("{}:{}", node.uid, node.gid));
        }
    }
    match &node.kind {
        DesiredKind::File { source, source_print } => {
            entry.source = Some(source.to_string_lossy().into_owned());
            entry.size = Some(source_print.size);
            entry.hash = hash.map(hash_text);
        }
        DesiredKind::Content { bytes } => {
            entry.size = Some(bytes.len() as u64);
            entry.hash = Some(hash_text(blake3::hash(bytes).as_bytes()));
        }
        DesiredKind::Symlink { target } => {
            entry.source = known.and_then(|facts| facts.source.clone());
            entry.target = Some(target.clone());
        }
        DesiredKind::Device { block, rdev } => {
            let letter = if *block { 'b' } else { 'c' };
            entry.device = Some(format!("{letter} {}:{}", nix::sys::stat::major(*rdev), nix::sys::stat::minor(*rdev)));
        }
        DesiredKind::Dir => {}
    }
    entry
}

/// A host source and what the lock says it holds (hash, symlink text).
type ContentKey<'a> = (&'a str, Option<&'a str>, Option<&'a str>);

/// A [`ContentKey`] that owns its strings.
type OwnedContentKey = (String, Option<String>, Option<String>);

fn content_key(entry: &LockEntry) -> Option<ContentKey<'_>> {
    entry.source.as_deref().map(|source| (source, entry.hash.as_deref(), entry.target.as_deref()))
}

/// The package each content key of `entries` was recorded with: a file the old lock already
/// had, from the same source with the same content, keeps the package it was found in (for two
/// lines of one key, the later line's).
fn packages_by_content<'a>(
    entries: impl Iterator<Item = &'a LockEntry>,
) -> HashMap<ContentKey<'a>, Option<&'a String>> {
    entries.filter_map(|entry| Some((content_key(entry)?, entry.package.as_ref()))).collect()
}

/// Package versions from the dpkg database (`/var/lib/dpkg/status` and `info/*.list`), read,
/// never run. Empty where there is no dpkg. A path's answer does not depend on which other
/// paths are asked with it (the caches keep answers one by one).
fn dpkg_packages(host: &HostFs, paths: &[&str]) -> HashMap<String, String> {
    let info = host.disk_path(Path::new("/var/lib/dpkg/info"));
    let Ok(status) = fs::read_to_string(host.disk_path(Path::new("/var/lib/dpkg/status"))) else {
        return HashMap::default();
    };
    let mut versions: HashMap<String, String> = HashMap::default();
    for stanza in status.split("\n\n") {
        let field = |name: &str| stanza.lines().find_map(|line| line.strip_prefix(name)).map(str::trim);
        if let (Some(package), Some(version)) = (field("Package:"), field("Version:")) {
            if field("Status:").is_some_and(|status| status.ends_with(" installed")) {
                versions.insert(package.to_owned(), version.to_owned());
            }
        }
    }
    // Debian 12 packages still name /lib/... where the file is reached as /usr/lib/...; both
    // /lib/x and /usr/lib/x may be asked for, so one listed name can answer several paths.
    let mut wanted: HashMap<String, Vec<&str>> = HashMap::default();
    for path in paths {
        wanted.entry((*path).to_owned()).or_default().push(path);
        if let Some(rest) = path.strip_prefix("/usr") {
            if ["/lib", "/bin", "/sbin", "/lib64", "/lib32"].iter().any(|dir| rest.starts_with(&format!("{dir}/"))) {
                wanted.entry(rest.to_owned()).or_default().push(path);
            }
        }
    }
    let mut found = HashMap::default();
    let Ok(lists) = fs::read_dir(&info) else { return found };
    let mut lists: Vec<PathBuf> = lists
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|extension| extension == "list"))
        .collect();
    lists.sort();
    // Hundreds of list files: read in parallel, merged in name order (the first package that
    // lists a path names it, as before).
    let per_list: Vec<Vec<(String, String)>> = lists
        .par_iter()
        .map(|list| {
            let Some(stem) = list.file_stem().map(|stem| stem.to_string_lossy().into_owned()) else {
                return Vec::new();
            };
            let package = stem.split(':').next().unwrap_or(&stem).to_owned();
            let Some(version) = versions.get(&package) else { return Vec::new() };
            let Ok(text) = fs::read_to_string(list) else { return Vec::new() };
            text.lines()
                .filter_map(|line| wanted.get(line))
                .flatten()
                .map(|path| ((*path).to_owned(), format!("{package} {version}")))
                .collect()
        })
        .collect();
    for (path, package) in per_list.into_iter().flatten() {
        found.entry(path).or_insert(package);
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Line digests: what each lock line is made of, condensed
// ---------------------------------------------------------------------------------------------

/// The key the line digests are computed with. Change its context string whenever what
/// [`entry_of`] reads or how a [`LockEntry`] is written changes: a memo of the old meaning must
/// then match nothing.
fn line_digest_key() -> &'static [u8; 32] {
    static KEY: std::sync::LazyLock<[u8; 32]> =
        std::sync::LazyLock::new(|| blake3::derive_key("jailprov Jailfile.lock entry line, format 1", b""));
    &KEY
}

/// The desired nodes in lock order, each written out once as the bytes its lock line is made of
/// ([`node_bytes`]: everything [`entry_of`] reads for it, the host source's stat print standing
/// in for its content hash). The fresh key hashes all of them in one go, on every plan; the line
/// digests hash them one by one, only when the lock is not found fresh.
struct DesiredLines<'a> {
    nodes: Vec<&'a DesiredNode>,
    /// The nodes' bytes, one buffer per thread's share of them.
    shares: Vec<NodeBytes>,
    /// The first node that copies a libc.so.6 ([`host_fingerprint`] takes its glibc).
    libc: Option<usize>,
    digests: std::sync::OnceLock<Vec<u128>>,
}

/// The bytes of consecutive nodes, and where each node's end.
#[derive(Debug, Default, PartialEq, Eq)]
struct NodeBytes {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl NodeBytes {
    fn nodes(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(start, end)| &self.bytes[start..*end])
    }
}

/// The work of one thread per core over consecutive shares of `items`, results in order. On
/// threads of its own rather than rayon's: the review runs beside plan compute, whose rayon jobs
/// would be served first, and the review is the longer of the two.
fn per_share<T: Sync, R: Send>(items: &[T], work: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from).clamp(1, 8);
    let share = items.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let work = &work;
        let workers: Vec<_> = items.chunks(share).map(|items| scope.spawn(move || work(items))).collect();
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}

fn desired_lines<'a>(desired: &'a DesiredTree, facts: &ClosureFacts) -> DesiredLines<'a> {
    let nodes: Vec<&DesiredNode> = desired.nodes.values().collect();
    let (shares, libc): (Vec<NodeBytes>, Vec<Vec<bool>>) =
        per_share(&nodes, |nodes| share_bytes(nodes, facts)).into_iter().unzip();
    let libc = libc.iter().flatten().position(|libc| *libc);
    DesiredLines { nodes, shares, libc, digests: std::sync::OnceLock::new() }
}

/// The bytes of consecutive nodes, and which copy a libc.so.6 (noted while the node is at hand:
/// a second walk of 50,000 nodes costs milliseconds). The facts are met by walking them
/// alongside, both being sorted by path (cheaper than hashing every path to look it up).
fn share_bytes(nodes: &[&DesiredNode], facts: &ClosureFacts) -> (NodeBytes, Vec<bool>) {
    let Some(first) = nodes.first() else { return (NodeBytes::default(), Vec::new()) };
    let mut facts = facts.facts.range(&first.path..).peekable();
    let mut share = NodeBytes { bytes: Vec::with_capacity(nodes.len() * 128), ends: Vec::with_capacity(nodes.len()) };
    let libc = nodes
        .iter()
        .map(|node| {
            while facts.next_if(|(path, _)| **path < node.path).is_some() {}
            let known = facts.peek().filter(|(path, _)| **path == node.path).map(|(_, facts)| *facts);
            node_bytes(node, known, &mut share.bytes);
            share.ends.push(share.bytes.len());
            matches!(node.kind, DesiredKind::File { .. }) && node.path.file_name() == "libc.so.6"
        })
        .collect();
    (share, libc)
}

impl DesiredLines<'_> {
    fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The digest of each node's lock line, in lock order: 128 bits of blake3 of its bytes,
    /// keyed. The package is not in it: it is carried over from the old lock. Equal digests give
    /// equal lines, so a review after a few host changes re-derives only the lines whose digest
    /// moved.
    fn digests(&self) -> &[u128] {
        self.digests.get_or_init(|| {
            let _t = crate::timings::phase("lock: line digests");
            let per_share = per_share(&self.shares, |shares| {
                shares.iter().flat_map(NodeBytes::nodes).map(line_digest).collect::<Vec<u128>>()
            });
            per_share.into_iter().flatten().collect()
        })
    }
}

fn line_digest(bytes: &[u8]) -> u128 {
    let hash = blake3::keyed_hash(line_digest_key(), bytes);
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&hash.as_bytes()[..16]);
    u128::from_le_bytes(digest)
}

/// A node and its closure facts as bytes, every variable-length field length-prefixed so that
/// no two nodes give the same bytes. Kept short (most nodes fit two blake3 blocks): a host
/// source named like its jail path is not written twice, times that fit 64 bits take 64.
fn node_bytes(node: &DesiredNode, facts: Option<&Facts>, bytes: &mut Vec<u8>) {
    fn field(bytes: &mut Vec<u8>, value: &[u8]) {
        // No path or list item reaches 4 GiB.
        bytes.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_le_bytes());
        bytes.extend_from_slice(value);
    }
    let path = node.path.as_str().as_bytes();
    field(bytes, path);
    bytes.extend_from_slice(&node.mode.to_le_bytes());
    bytes.extend_from_slice(&node.uid.to_le_bytes());
    bytes.extend_from_slice(&node.gid.to_le_bytes());
    match &node.kind {
        DesiredKind::File { source, source_print } => {
            let source = source.as_os_str().as_encoded_bytes();
            if source == path {
                bytes.push(b'=');
            } else {
                bytes.push(b'f');
                field(bytes, source);
            }
            bytes.extend_from_slice(&source_print.size.to_le_bytes());
            match (i64::try_from(source_print.mtime_ns), i64::try_from(source_print.ctime_ns)) {
                (Ok(mtime), Ok(ctime)) => {
                    bytes.push(8);
                    bytes.extend_from_slice(&mtime.to_le_bytes());
                    bytes.extend_from_slice(&ctime.to_le_bytes());
                }
                _ => {
                    bytes.push(16);
                    bytes.extend_from_slice(&source_print.mtime_ns.to_le_bytes());
                    bytes.extend_from_slice(&source_print.ctime_ns.to_le_bytes());
                }
            }
            bytes.extend_from_slice(&source_print.ino.to_le_bytes());
        }
        DesiredKind::Content { bytes: content } => {
            bytes.push(b'c');
            field(bytes, content);
        }
        DesiredKind::Dir => bytes.push(b'd'),
        DesiredKind::Symlink { target } => {
            bytes.push(b'l');
            field(bytes, target.as_bytes());
        }
        DesiredKind::Device { block, rdev } => {
            bytes.push(if *block { b'b' } else { b'v' });
            bytes.extend_from_slice(&rdev.to_le_bytes());
        }
    }
    match facts {
        None => bytes.push(0),
        Some(facts) => {
            bytes.push(1);
            field(bytes, facts.kind.label().as_bytes());
            match &facts.source {
                None => bytes.push(0),
                Some(source) => {
                    bytes.push(1);
                    field(bytes, source.as_bytes());
                }
            }
            for list in [&facts.sonames, &facts.needed_by] {
                bytes.extend_from_slice(&u32::try_from(list.len()).unwrap_or(u32::MAX).to_le_bytes());
                for item in list {
                    field(bytes, item.as_bytes());
                }
            }
        }
    }
}

/// The key of "this lock file was found fresh for this desired tree": every node's bytes (host
/// sources by stat print), the lock file's stat print, the normalized Jailfile, os-release and
/// the architecture. glibc's version is covered by libc.so.6's stat print among the nodes'.
fn fresh_key(lines: &DesiredLines, jailfile: &str, lock_stat: Option<StatPrint>, host: &HostFs) -> [u8; 32] {
    // The nodes' bytes in a few large updates, which blake3 hashes many chunks at a time: this
    // runs on every no-op plan. (Node bytes delimit themselves; the rest is length-prefixed.)
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(lines.len() as u64).to_le_bytes());
    for share in &lines.shares {
        hasher.update(&share.bytes);
    }
    let rest = [format!("{lock_stat:?}"), jailfile.to_owned(), os_release(host), std::env::consts::ARCH.to_owned()];
    for part in rest.iter().map(String::as_bytes).chain([&LOCK_VERSION.to_le_bytes()[..]]) {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    *hasher.finalize().as_bytes()
}

// ---------------------------------------------------------------------------------------------
// Comparing: what changed since the lock
// ---------------------------------------------------------------------------------------------

/// One path whose entry differs (None: absent on that side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub path: String,
    pub old: Option<LockEntry>,
    pub new: Option<LockEntry>,
}

/// A difference the host caused (not the Jailfile), as plan shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub path: String,
    pub what: String,
}

impl Drift {
    pub fn line(&self) -> String {
        format!("host drift: {}  {}", self.path, self.what)
    }
}

/// Everything that differs between a lock and what the host gives now.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    pub jailfile: Option<(String, String)>,
    pub host: Option<(HostFingerprint, HostFingerprint)>,
    pub entries: Vec<Difference>,
}

impl Comparison {
    pub fn is_empty(&self) -> bool {
        self.jailfile.is_none() && self.host.is_none() && self.entries.is_empty()
    }

    /// The differences the host caused. With the Jailfile unchanged, every entry difference; when
    /// it was edited, only paths present on both sides, copied from the same host source, whose
    /// host facts (content, size, target, sonames) changed: added and removed paths, inline and
    /// generated files are then the edit's.
    pub fn host_drift(&self) -> Vec<Drift> {
        let mut drift = Vec::new();
        if let Some((old, new)) = &self.host {
            drift.push(Drift { path: "(host)".to_owned(), what: format!("{old} → {new}") });
        }
        for difference in &self.entries {
            let by_host = match (&difference.old, &difference.new) {
                _ if self.jailfile.is_none() => true,
                (Some(old), Some(new)) => {
                    old.kind == new.kind
                        && old.source.is_some()
                        && old.source == new.source
                        && (old.hash != new.hash
                            || old.size != new.size
                            || old.target != new.target
                            || old.sonames != new.sonames)
                }
                _ => false,
            };
            if by_host {
                drift.push(Drift { path: difference.path.clone(), what: describe(difference) });
            }
        }
        drift
    }

    /// Every difference, one line each (for `--locked` errors).
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some((old, new)) = &self.jailfile {
            lines.push(format!("the Jailfile changed since the lock ({} → {})", short(old), short(new)));
        }
        if let Some((old, new)) = &self.host {
            lines.push(format!("the host is {new}, the lock was written on {old}"));
        }
        lines.extend(self.entries.iter().map(|difference| format!("{}  {}", difference.path, describe(difference))));
        lines
    }
}

fn compare(old: &Lock, new: &Lock) -> Comparison {
    let mut comparison = Comparison {
        jailfile: (old.jailfile != new.jailfile).then(|| (old.jailfile.clone(), new.jailfile.clone())),
        host: (old.host != new.host).then(|| (old.host.clone(), new.host.clone())),
        entries: Vec::new(),
    };
    let mut olds = old.entries.iter().peekable();
    let mut news = new.entries.iter().peekable();
    loop {
        let order = match (olds.peek(), news.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(old), Some(new)) => old.path.cmp(&new.path),
        };
        let (old, new) = match order {
            std::cmp::Ordering::Less => (olds.next(), None),
            std::cmp::Ordering::Greater => (None, news.next()),
            std::cmp::Ordering::Equal => (olds.next(), news.next()),
        };
        let same = match (old, new) {
            (Some(old), Some(new)) => {
                LockEntry { package: None, ..old.clone() } == LockEntry { package: None, ..new.clone() }
            }
            _ => false,
        };
        if !same {
            let path = old.or(new).map(|entry| entry.path.clone()).unwrap_or_default();
            comparison.entries.push(Difference { path, old: old.cloned(), new: new.cloned() });
        }
    }
    comparison
}

/// A hash or digest shortened for people: "blake3 a1b2c3d4…".
fn short(hash: &str) -> String {
    match hash.split_once(':') {
        Some((algorithm, hex)) => format!("{algorithm} {}…", &hex[..hex.len().min(8)]),
        None => hash.to_owned(),
    }
}

/// What an entry is, briefly: its hash, link text, device or kind.
fn summary_of(entry: &LockEntry) -> String {
    if let Some(hash) = &entry.hash {
        format!("{} {}", entry.kind, short(hash))
    } else if let Some(target) = &entry.target {
        format!("symlink -> {target}")
    } else if let Some(device) = &entry.device {
        format!("device {device}")
    } else {
        entry.kind.clone()
    }
}

/// "blake3 a1b2… → c3d4…, size 1.2 KiB → 1.3 KiB", "∅ → library blake3 c3d4…".
fn describe(difference: &Difference) -> String {
    let (old, new) = match (&difference.old, &difference.new) {
        (None, Some(new)) => return format!("∅ → {}", summary_of(new)),
        (Some(old), None) => return format!("{} → ∅", summary_of(old)),
        (Some(old), Some(new)) => (old, new),
        (None, None) => return String::new(),
    };
    let mut parts = Vec::new();
    if old.kind != new.kind {
        parts.push(format!("kind {} → {}", old.kind, new.kind));
    }
    if old.source != new.source {
        parts.push(format!("source {} → {}", or_none(&old.source), or_none(&new.source)));
    }
    if old.hash != new.hash {
        let algorithm = new
            .hash
            .as_deref()
            .or(old.hash.as_deref())
            .and_then(|hash| hash.split_once(':'))
            .map_or(HASH_ALGORITHM, |(algorithm, _)| algorithm);
        let hex = |hash: &Option<String>| {
            hash.as_deref().map_or("∅".to_owned(), |hash| {
                let hex = hash.split_once(':').map_or(hash, |(_, hex)| hex);
                format!("{}…", &hex[..hex.len().min(8)])
            })
        };
        parts.push(format!("{algorithm} {} → {}", hex(&old.hash), hex(&new.hash)));
    }
    if let (Some(left), Some(right)) = (&old.package, &new.package) {
        if left != right {
            parts.push(format!("{left} → {right}"));
        }
    }
    if old.size != new.size {
        let size = |size: Option<u64>| size.map_or("∅".to_owned(), human_size);
        parts.push(format!("size {} → {}", size(old.size), size(new.size)));
    }
    if old.target != new.target {
        parts.push(format!("target {} → {}", or_none(&old.target), or_none(&new.target)));
    }
    if old.mode != new.mode {
        parts.push(format!("mode {} → {}", or_none(&old.mode), or_none(&new.mode)));
    }
    if old.owner != new.owner {
        parts.push(format!(
            "owner {} → {}",
            old.owner.as_deref().unwrap_or("0:0"),
            new.owner.as_deref().unwrap_or("0:0")
        ));
    }
    if old.device != new.device {
        parts.push(format!("device {} → {}", or_none(&old.device), or_none(&new.device)));
    }
    if old.sonames != new.sonames {
        parts.push(format!("sonames {}", set_change(&old.sonames, &new.sonames)));
    }
    if old.needed_by != new.needed_by {
        parts.push(format!("needed by {}", set_change(&old.needed_by, &new.needed_by)));
    }
    parts.join(", ")
}

fn or_none(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("∅")
}

/// What a list gained and lost: "+/usr/bin/head -/usr/bin/cat" (the unchanged members would
/// bury the change).
fn set_change(old: &[String], new: &[String]) -> String {
    let added = new.iter().filter(|value| !old.contains(value)).map(|value| format!("+{value}"));
    let removed = old.iter().filter(|value| !new.contains(value)).map(|value| format!("-{value}"));
    let change: Vec<String> = added.chain(removed).collect();
    if change.is_empty() {
        // Same members, another order.
        format!("{} → {}", list_or_none(old), list_or_none(new))
    } else {
        change.join(" ")
    }
}

fn list_or_none(values: &[String]) -> String {
    if values.is_empty() {
        "∅".to_owned()
    } else {
        values.join(" ")
    }
}

/// 1024-based, one decimal, as `nix store diff-closures` prints sizes: "512 B", "12.6 KiB".
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn signed_size(delta: i128) -> String {
    let sign = if delta < 0 { '-' } else { '+' };
    format!("{sign}{}", human_size(u64::try_from(delta.unsigned_abs()).unwrap_or(u64::MAX)))
}

/// `jailprov lock`'s report, in the style of `nix store diff-closures`: one line per changed
/// path, libraries by file name with their package versions ("libssl.so.3: 3.0.15 → 3.0.17,
/// +12.6 KiB"), other paths by jail path with a hash prefix where no version is known, `∅` for
/// added or removed.
pub fn diff_closures_text(comparison: &Comparison) -> String {
    let mut text = String::new();
    if let Some((old, new)) = &comparison.jailfile {
        let _ = writeln!(text, "Jailfile: {} → {}", short(old), short(new));
    }
    if let Some((old, new)) = &comparison.host {
        let _ = writeln!(text, "host: {old} → {new}");
    }
    for difference in &comparison.entries {
        let _ = writeln!(text, "{}", diff_closures_line(difference));
    }
    text
}

fn diff_closures_line(difference: &Difference) -> String {
    let any = difference.new.as_ref().or(difference.old.as_ref()).expect("a difference has at least one side");
    let is_library = matches!(any.kind.as_str(), "library" | "interpreter" | "nss-module");
    let name = if is_library {
        // By soname, as the loader asks for it ("libtinfo.so.6", not "libtinfo.so.6.4").
        any.sonames
            .first()
            .cloned()
            .unwrap_or_else(|| difference.path.rsplit('/').next().unwrap_or(&difference.path).to_owned())
    } else {
        difference.path.clone()
    };
    let version_of = |entry: &LockEntry| {
        entry.package.as_deref().and_then(|package| package.split_once(' ')).map(|(_, version)| version.to_owned())
    };
    let hash_of = |entry: &LockEntry| entry.hash.as_deref().map(short).unwrap_or_else(|| summary_of(entry));
    let (old, new) = (difference.old.as_ref(), difference.new.as_ref());
    let (left, right) = match (old, new) {
        (Some(old), Some(new)) => match (version_of(old), version_of(new)) {
            (Some(left), Some(right)) if left != right => (left, right),
            _ if old.hash != new.hash => (hash_of(old), hash_of(new)),
            _ => (String::new(), describe(difference)),
        },
        (None, Some(new)) => ("∅".to_owned(), version_of(new).unwrap_or_else(|| hash_of(new))),
        (Some(old), None) => (version_of(old).unwrap_or_else(|| hash_of(old)), "∅".to_owned()),
        (None, None) => (String::new(), String::new()),
    };
    let mut line = if left.is_empty() { format!("{name}: {right}") } else { format!("{name}: {left} → {right}") };
    let size = |entry: Option<&LockEntry>| i128::from(entry.and_then(|entry| entry.size).unwrap_or(0));
    let delta = size(new) - size(old);
    if delta != 0 {
        let _ = write!(line, ", {}", signed_size(delta));
    }
    line
}

// ---------------------------------------------------------------------------------------------
// Reviewing the lock during plan, apply and `jailprov lock`
// ---------------------------------------------------------------------------------------------

/// What plan and apply have at hand.
pub struct Inputs<'a> {
    pub jailfile: &'a Path,
    pub desired: &'a DesiredTree,
    pub facts: &'a ClosureFacts,
    pub host: &'a HostFs,
    pub state_dir: &'a Path,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// plan and apply: write the lock when it is missing or stale.
    Refresh,
    /// `--locked`: any difference is an error; nothing is written.
    Locked,
    /// `jailprov lock`: recompute everything (no fast path), write when anything differs.
    Deliberate,
}

/// What a review found and did.
#[derive(Debug, Clone)]
pub struct Review {
    pub lock_path: PathBuf,
    /// The lock existed before (so the comparison means something).
    pub existed: bool,
    pub comparison: Comparison,
    /// The lock was (re)written.
    pub wrote: bool,
    pub entries: usize,
}

impl Review {
    pub fn host_drift(&self) -> Vec<Drift> {
        if self.existed {
            self.comparison.host_drift()
        } else {
            Vec::new()
        }
    }
}

/// How a review reached its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Nothing moved since the lock was last found fresh.
    Fresh,
    /// Only the lines whose digest changed since the memo were looked at.
    Incremental,
    /// The whole lock was parsed and every line compared.
    Full,
}

/// Compares the lock with what the host gives now, writes it when missing or stale (in
/// `Refresh` and `Deliberate` modes), refuses any difference in `Locked` mode.
pub fn review(inputs: &Inputs, mode: Mode) -> Result<Review> {
    review_by_route(inputs, mode).map(|(review, _)| review)
}

/// What every route of a review works from, computed once.
struct Reviewing<'a> {
    inputs: &'a Inputs<'a>,
    mode: Mode,
    lock_path: PathBuf,
    /// The normalized Jailfile's digest.
    jailfile: String,
    /// The desired nodes and their line digests, in lock order.
    lines: DesiredLines<'a>,
    fresh_key: [u8; 32],
    cache_file: PathBuf,
    store_file: PathBuf,
}

/// The old lock file changed while an incremental review copied lines from it.
#[derive(Debug)]
struct OldLockMoved;

impl std::fmt::Display for OldLockMoved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the lock file changed while it was read")
    }
}

impl std::error::Error for OldLockMoved {}

impl Reviewing<'_> {
    /// The review of a lock that needs no change.
    fn unchanged(&self, comparison: Comparison) -> Review {
        let entries = self.lines.len();
        Review { lock_path: self.lock_path.clone(), existed: true, comparison, wrote: false, entries }
    }

    fn no_lock_error(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "--locked: {} does not exist; run `jailprov lock -f {}` and commit it",
            self.lock_path.display(),
            self.inputs.jailfile.display()
        )
    }

    fn locked_error(&self, comparison: &Comparison) -> anyhow::Error {
        anyhow::anyhow!(
            "--locked: what the host gives differs from {}; nothing was changed:\n  {}\nrun `jailprov lock` to accept it, review and commit the lock",
            self.lock_path.display(),
            comparison.lines().join("\n  ")
        )
    }

    /// Writes the lock through `fill`; returns the file written. Ok(None) when plan or apply
    /// cannot (a read-only checkout: they still work, with a warning); `jailprov lock` must
    /// write. [`OldLockMoved`] is returned as an error whatever the mode: the caller reviews
    /// again.
    fn write_lock(&self, fill: impl FnOnce(&fs::File, &Path) -> Result<()>) -> Result<Option<fs::File>> {
        match write_atomically_with(&self.lock_path, 0o644, Durability::Synced, fill) {
            Ok(file) => Ok(Some(file)),
            Err(error) if error.is::<OldLockMoved>() || self.mode == Mode::Deliberate => Err(error),
            Err(error) => {
                eprintln!("warning: {error:#}; {} stays as it was", self.lock_path.display());
                Ok(None)
            }
        }
    }

    /// The memo of a lock file of `lock_stat` whose text is `text`, of these entries (the
    /// current digests' nodes'); None if the text is not one [`write_lock_text`] writes.
    fn memo_of(&self, lock_stat: StatPrint, text: &str, entries: &[LockEntry]) -> Option<Memo> {
        let lengths = entry_lengths(text)?;
        if lengths.len() != self.lines.len() || entries.len() != self.lines.len() {
            return None;
        }
        let tags: Vec<u32> = entries.par_iter().map(|entry| source_tag(entry.source.as_deref())).collect();
        let lines = self
            .lines
            .digests()
            .iter()
            .zip(lengths)
            .zip(tags)
            .map(|((digest, length), source_tag)| MemoLine { digest: *digest, length, source_tag })
            .collect();
        Some(Memo { lock_stat, lines })
    }

    /// The host fingerprint, glibc's version read from libc.so.6 unless the cache has it for
    /// the file's stat print.
    fn fingerprint(&self, cache: &mut Cache) -> HostFingerprint {
        let libc = self.lines.libc.map(|index| &self.lines.nodes[index].kind);
        let glibc = match libc {
            Some(DesiredKind::File { source, source_print }) => {
                let libc = source.as_os_str().as_encoded_bytes();
                let version = match &cache.glibc {
                    Some(seen) if seen.libc == libc && seen.print == *source_print => seen.version.clone(),
                    _ => {
                        let version = glibc_version(self.inputs.host, source);
                        let seen = GlibcSeen { libc: libc.to_vec(), print: *source_print, version: version.clone() };
                        cache.glibc = Some(seen);
                        version
                    }
                };
                version.unwrap_or_else(|| "unknown".to_owned())
            }
            _ => "none".to_owned(),
        };
        fingerprint_with(self.inputs.host, glibc)
    }

    /// The fresh key and memo (made by `memo` from the lock's stat print) of the lock file
    /// just written. Only while the lock's path still names the file written (`written`, its stat taken
    /// through it): another jailprov may have put its own there since, which this review
    /// knows nothing of.
    fn remember_written(&self, cache: &mut Cache, written: &fs::File, memo: impl FnOnce(StatPrint) -> Option<Memo>) {
        let ours = written.metadata().ok().map(|metadata| StatPrint::of(&metadata));
        let in_place = fs::metadata(&self.lock_path).ok().map(|metadata| StatPrint::of(&metadata));
        let lock_stat = ours.filter(|_| ours == in_place);
        cache.fresh =
            lock_stat.map(|lock_stat| fresh_key(&self.lines, &self.jailfile, Some(lock_stat), self.inputs.host));
        cache.memo = lock_stat.and_then(memo);
    }
}

fn review_by_route(inputs: &Inputs, mode: Mode) -> Result<(Review, Route)> {
    let lock_path = lock_path(inputs.jailfile);
    let source = crate::beside::read_text(inputs.jailfile, "Jailfile", crate::spec::MAX_JAILFILE_SIZE)?;
    let jailfile = jailfile_digest(&source)?;
    let cache_file = cache_path(inputs.state_dir, &lock_path);
    let lock_stat = fs::metadata(&lock_path).ok().map(|metadata| StatPrint::of(&metadata));
    let lines = {
        let _t = crate::timings::phase("lock: node bytes, fresh key");
        let lines = desired_lines(inputs.desired, inputs.facts);
        let fresh_key = fresh_key(&lines, &jailfile, lock_stat, inputs.host);
        (lines, fresh_key)
    };
    let (lines, fresh_key) = lines;
    let reviewing = Reviewing {
        inputs,
        mode,
        store_file: store_path(&cache_file),
        lock_path,
        jailfile,
        lines,
        fresh_key,
        cache_file,
    };
    if mode != Mode::Deliberate && lock_stat.is_some() && peek_fresh(&reviewing.cache_file) == Some(fresh_key) {
        // The entry count is not known without reading the lock; nothing shows it when
        // nothing was written.
        let review = Review { entries: 0, ..reviewing.unchanged(Comparison::default()) };
        return Ok((review, Route::Fresh));
    }
    let mut cache = {
        let _t = crate::timings::phase("lock: cache load");
        load_cache(&reviewing.cache_file)
    };
    // `jailprov lock` recomputes everything, on purpose.
    let memo_matches = cache.memo.as_ref().is_some_and(|memo| Some(memo.lock_stat) == lock_stat);
    if mode != Mode::Deliberate && memo_matches {
        if let Some(review) = review_incremental(&reviewing, &mut cache)? {
            return Ok((review, Route::Incremental));
        }
    }
    review_full(&reviewing, cache).map(|review| (review, Route::Full))
}

/// The lock's text and the stat print of the file it was read from (taken before reading: a
/// change while reading moves the stat past it); None when there is no lock.
/// A FIFO, device or socket at the lock's path is refused (never waited on), and so is a lock
/// past [`MAX_LOCK_SIZE`].
fn read_lock(path: &Path) -> Result<Option<(String, StatPrint)>> {
    let Some((file, metadata)) = crate::beside::open_regular(path, "the lock", MAX_LOCK_SIZE)? else { return Ok(None) };
    let stat = StatPrint::of(&metadata);
    let bytes = crate::beside::read_bounded(&file, path, "the lock", MAX_LOCK_SIZE)?;
    let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("the lock {} is not UTF-8", path.display()))?;
    Ok(Some((text, stat)))
}

/// The largest lock read: one line per jail path of a few hundred bytes, so a jail of 500,000
/// paths (ten times the largest we measure) stays well below it, while a lock swapped for a huge
/// file is refused instead of read into memory.
const MAX_LOCK_SIZE: u64 = 256 * 1024 * 1024;

/// The whole review: every line of the old lock parsed, every line of the new one built and
/// compared. Taken without a memo of the lock file as it is (first run, a lock checked out or
/// edited by hand), and by `jailprov lock`.
fn review_full(reviewing: &Reviewing, mut cache: Cache) -> Result<Review> {
    let inputs = reviewing.inputs;
    let lazy_store = LazyStore::new(&reviewing.store_file);
    let store = lazy_store.whole();
    let _t = crate::timings::phase("lock: old lock parse");
    let old_text = read_lock(&reviewing.lock_path)?;
    let old = match &old_text {
        Some((text, _)) => Some(Lock::parse(text, &reviewing.lock_path)?),
        None => None,
    };
    if old.is_none() && reviewing.mode == Mode::Locked {
        return Err(reviewing.no_lock_error());
    }
    drop(_t);
    let _t = crate::timings::phase("lock: hashes, entries, compare");
    let nodes = &reviewing.lines.nodes;
    let hashed = hash_sources(nodes, inputs.host, &KnownHashes::new(&cache.recent, &lazy_store))?;
    let mut new = Lock {
        version: LOCK_VERSION,
        jailfile: reviewing.jailfile.clone(),
        host: reviewing.fingerprint(&mut cache),
        entries: nodes
            .par_iter()
            .zip(&hashed)
            .map(|(node, hashed)| entry_of(node, inputs.facts, hashed.as_ref().map(|hashed| &hashed.source.hash)))
            .collect(),
    };
    let comparison = match &old {
        Some(old) => compare(old, &new),
        None => Comparison::default(),
    };
    // Every source's hash goes to the store, which keeps the jail's sources only.
    let keep: rustc_hash::FxHashSet<SourceKey> = hashed.iter().flatten().map(|hashed| hashed.source.key).collect();
    let files = hashed.iter().flatten().map(|hashed| hashed.source);
    cache.recent.clear();
    if let (Some(old), Some((old_text, old_stat))) = (&old, &old_text) {
        if comparison.is_empty() {
            // The memo vouches for the lines as a rewrite would write them, packages included;
            // a lock that reads the same but is written otherwise (by hand) gets none, and the
            // next review is a full one again.
            let packages = packages_by_content(old.entries.iter());
            for entry in &mut new.entries {
                entry.package = content_key(entry).and_then(|key| packages.get(&key)).cloned().flatten().cloned();
            }
            let as_written = new.to_text()? == *old_text;
            cache.memo = as_written.then(|| reviewing.memo_of(*old_stat, old_text, &new.entries)).flatten();
            cache.fresh = Some(reviewing.fresh_key);
            drop(_t);
            let _t = crate::timings::phase("lock: save cache");
            save_cache_file(&reviewing.store_file, SourceStore::encode(files, store.packages(), store.database, &keep));
            save_cache_file(&reviewing.cache_file, cache.encode());
            return Ok(reviewing.unchanged(comparison));
        }
    }
    if reviewing.mode == Mode::Locked {
        // The cache still learned the hashes; it never vouches for a stale lock.
        cache.fresh = None;
        cache.memo = None;
        save_cache_file(&reviewing.store_file, SourceStore::encode(files, store.packages(), store.database, &keep));
        save_cache_file(&reviewing.cache_file, cache.encode());
        return Err(reviewing.locked_error(&comparison));
    }
    // A file the old lock already had, from the same source with the same content, keeps the
    // package it was found in; the dpkg database (hundreds of list files) is searched only for
    // the rest, and not at all when there is no rest.
    drop(_t);
    let _t = crate::timings::phase("lock: packages");
    let known = packages_by_content(old.iter().flat_map(|old| &old.entries));
    let reused: Vec<Option<Option<String>>> = new
        .entries
        .iter()
        .map(|entry| content_key(entry).and_then(|key| known.get(&key)).map(|package| package.cloned()))
        .collect();
    let unknown: Vec<&str> = new
        .entries
        .iter()
        .zip(&reused)
        .filter(|(_, reused)| reused.is_none())
        .filter_map(|(entry, _)| entry.source.as_deref())
        .collect();
    let mut answers = PackageAnswers::new(inputs.host, &lazy_store);
    answers.look_up(inputs.host, &unknown);
    let found: Vec<Option<String>> = new
        .entries
        .iter()
        .zip(reused)
        .map(|(entry, reused)| match reused {
            Some(package) => package,
            None => entry.source.as_deref().and_then(|source| answers.get(source)).map(str::to_owned),
        })
        .collect();
    for (entry, package) in new.entries.iter_mut().zip(found) {
        entry.package = package;
    }
    // Compared again now that the new side has its package versions, for `jailprov lock`'s
    // "3.0.15 → 3.0.17" lines (packages never make a difference by themselves).
    let reported = match &old {
        Some(old) => compare(old, &new),
        None => comparison,
    };
    drop(_t);
    let _t = crate::timings::phase("lock: write lock and cache");
    let text = new.to_text()?;
    let written = reviewing.write_lock(|mut file, temporary| {
        file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", temporary.display()))
    })?;
    match &written {
        Some(file) => {
            reviewing.remember_written(&mut cache, file, |lock_stat| reviewing.memo_of(lock_stat, &text, &new.entries))
        }
        None => cache.memo = None,
    }
    let wrote = written.is_some();
    let (database, packages) = answers.into_store_packages();
    save_cache_file(&reviewing.store_file, SourceStore::encode(files, packages, database, &keep));
    save_cache_file(&reviewing.cache_file, cache.encode());
    Ok(Review {
        lock_path: reviewing.lock_path.clone(),
        existed: old.is_some(),
        comparison: reported,
        wrote,
        entries: new.entries.len(),
    })
}

/// Package answers for host sources: the store's (while the dpkg database is the one they were
/// found in) and those looked up now.
struct PackageAnswers<'a> {
    database: Option<DatabasePrint>,
    store: &'a LazyStore<'a>,
    /// Looked up in this review: source -> package (None: no package lists it).
    learned: HashMap<String, Option<String>>,
}

impl<'a> PackageAnswers<'a> {
    fn new(host: &HostFs, store: &'a LazyStore<'a>) -> PackageAnswers<'a> {
        PackageAnswers { database: dpkg_database_print(host), store, learned: HashMap::default() }
    }

    fn known(&self, source: &str) -> Option<Option<&str>> {
        match self.learned.get(source) {
            Some(answer) => Some(answer.as_deref()),
            None => self.store.package(&source_key(Path::new(source)), self.database),
        }
    }

    /// Asks the dpkg database about the sources no answer is known for yet.
    fn look_up(&mut self, host: &HostFs, sources: &[&str]) {
        let mut unknown: Vec<&str> = sources.iter().copied().filter(|source| self.known(source).is_none()).collect();
        unknown.sort_unstable();
        unknown.dedup();
        if unknown.is_empty() {
            return;
        }
        let mut found = dpkg_packages(host, &unknown);
        for source in unknown {
            self.learned.insert(source.to_owned(), found.remove(source));
        }
    }

    fn get(&self, source: &str) -> Option<&str> {
        self.known(source).flatten()
    }

    /// The answers a store keeps after this review: the still valid ones it had, and the new.
    fn into_store_packages(self) -> (Option<DatabasePrint>, impl Iterator<Item = (SourceKey, Option<String>)> + 'a) {
        let store = self.store.whole();
        let valid = self.database.is_some() && store.database == self.database;
        let kept = store.packages().filter(move |_| valid);
        let learned = self.learned.into_iter().map(|(source, answer)| (source_key(Path::new(&source)), answer));
        (self.database, kept.chain(learned))
    }
}

// ---------------------------------------------------------------------------------------------
// The incremental review: only the lines whose digest moved
// ---------------------------------------------------------------------------------------------

/// How much of the lock file is read for its header (a header jailprov writes is a few hundred
/// bytes; one that does not fit is not jailprov's, and the full review reads it).
const HEADER_READ: u64 = 4096;

/// The old lock file as the memo describes it, read only where needed: its header, and the
/// lines that changed (where each line is follows from the memo's line lengths).
struct OldLock<'m> {
    file: fs::File,
    version: u32,
    jailfile: String,
    host: HostFingerprint,
    lines: &'m [MemoLine],
    /// Where each entry line's JSON starts in the file.
    starts: Vec<u64>,
}

impl<'m> OldLock<'m> {
    /// None when the file is not what the memo describes: another stat print, a header that
    /// does not parse, lines that do not add up to its size.
    fn open(path: &Path, memo: &'m Memo) -> Option<OldLock<'m>> {
        // Never blocks on a FIFO; anything odd there leaves it to the full review's errors.
        let (file, _) = crate::beside::open_regular(path, "the lock", MAX_LOCK_SIZE).ok()??;
        if StatPrint::of(&file.metadata().ok()?) != memo.lock_stat {
            return None;
        }
        let size = memo.lock_stat.size;
        let mut head = vec![0u8; usize::try_from(size.min(HEADER_READ)).ok()?];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0).ok()?;
        // The read may end inside a character of a line after the header.
        let head = match std::str::from_utf8(&head) {
            Ok(head) => head,
            Err(error) => std::str::from_utf8(&head[..error.valid_up_to()]).ok()?,
        };
        let header_end = head.find(ENTRIES_OPEN)? + ENTRIES_OPEN.len();
        let (version, jailfile, host, header_size) = parse_header(&head[..header_end])?;
        let mut at = header_size as u64;
        let mut starts = Vec::with_capacity(memo.lines.len());
        for (index, line) in memo.lines.iter().enumerate() {
            at += if index == 0 { FIRST_LINE.len() } else { NEXT_LINE.len() } as u64;
            starts.push(at);
            at += u64::from(line.length);
        }
        at += if memo.lines.is_empty() { NO_LINES.len() } else { AFTER_LINES.len() } as u64;
        (at == size).then_some(OldLock { file, version, jailfile, host, lines: &memo.lines, starts })
    }

    /// Lines `first..=last` as they stand in the file, the separators between them included.
    fn range(&self, first: usize, last: usize) -> std::ops::Range<u64> {
        self.starts[first]..self.starts[last] + u64::from(self.lines[last].length)
    }

    /// Line `index`, parsed; None if it does not read as an entry.
    fn entry(&self, index: usize) -> Option<LockEntry> {
        let mut json = vec![0u8; usize::try_from(self.lines[index].length).ok()?];
        std::os::unix::fs::FileExt::read_exact_at(&self.file, &mut json, self.starts[index]).ok()?;
        if !(json.starts_with(b"{") && json.ends_with(b"}")) {
            return None;
        }
        serde_json::from_slice(&json).ok()
    }
}

/// The (old, new) positions of equal digests. A digest includes its path, and both sides are
/// sorted by path, so equal digests pair up in order by themselves: a common prefix and suffix,
/// then one hash join of the middle, linear however much changed (a general diff such as Myers'
/// costs the product of length and changes, seconds for an upgrade that touches thousands of
/// files). None when the pairs are not in order (digests of something else).
fn matched_lines(old: &[u128], new: &[u128]) -> Option<Vec<(usize, usize)>> {
    let prefix = old.iter().zip(new).take_while(|(old, new)| old == new).count();
    let suffix = old[prefix..].iter().rev().zip(new[prefix..].iter().rev()).take_while(|(old, new)| old == new).count();
    let (old_end, new_end) = (old.len() - suffix, new.len() - suffix);
    let mut pairs: Vec<(usize, usize)> = (0..prefix).map(|index| (index, index)).collect();
    let mut at: HashMap<u128, usize> = HashMap::default();
    at.reserve(old_end - prefix);
    for (index, digest) in old.iter().enumerate().take(old_end).skip(prefix) {
        if at.insert(*digest, index).is_some() {
            return None;
        }
    }
    let mut last_old = prefix.checked_sub(1);
    for (new_index, digest) in new.iter().enumerate().take(new_end).skip(prefix) {
        if let Some(&old_index) = at.get(digest) {
            if last_old.is_some_and(|last| old_index <= last) {
                return None;
            }
            last_old = Some(old_index);
            pairs.push((old_index, new_index));
        }
    }
    pairs.extend((0..suffix).map(|offset| (old_end + offset, new_end + offset)));
    Some(pairs)
}

/// Whether `changed` of `lines` lines (old and new counted together) are better reviewed in full.
/// Reading lines one by one costs more than the full review's one parse once many changed:
/// measured on 40,000 lines, both take about 140 ms with a quarter of them changed, and with half
/// the incremental review takes 240 ms, the full one 190. A few hundred lines are cheap either way.
fn too_many_changed(changed: usize, lines: usize) -> bool {
    changed > 1024 && changed * 4 > lines
}

/// Reviews a lock from the lines whose digest differs from the memo's: the old ones read and
/// parsed, the new ones built, those compared; the other lines are what they were, and a new
/// lock file takes them from the old one as they stand. The same answer as [`review_full`],
/// byte for byte, for a fraction of the work. Ok(None) when the lock file is not what the memo
/// describes: the full review decides then.
fn review_incremental(reviewing: &Reviewing, cache: &mut Cache) -> Result<Option<Review>> {
    let inputs = reviewing.inputs;
    // The memo is rewritten on every way out of here, or by the full review.
    let Some(memo) = cache.memo.take() else { return Ok(None) };
    // Before the read's phase starts, so that the timings do not count the digests twice.
    let digests = reviewing.lines.digests();
    let _t = crate::timings::phase("lock: incremental read");
    let Some(old) = OldLock::open(&reviewing.lock_path, &memo) else { return Ok(None) };
    if old.version != LOCK_VERSION {
        return Ok(None);
    }
    let old_digests: Vec<u128> = memo.lines.iter().map(|line| line.digest).collect();
    let Some(pairs) = matched_lines(&old_digests, digests) else { return Ok(None) };
    if too_many_changed(memo.lines.len() + digests.len() - 2 * pairs.len(), memo.lines.len() + digests.len()) {
        return Ok(None);
    }
    let mut old_matched = vec![false; memo.lines.len()];
    let mut new_matched = vec![false; reviewing.lines.len()];
    for &(old_index, new_index) in &pairs {
        old_matched[old_index] = true;
        new_matched[new_index] = true;
    }
    let mut old_entries = Vec::new();
    for (index, _) in old_matched.iter().enumerate().filter(|(_, matched)| !**matched) {
        let Some(entry) = old.entry(index) else { return Ok(None) };
        old_entries.push(entry);
    }
    drop(_t);
    let _t = crate::timings::phase("lock: incremental entries");
    let changed_nodes: Vec<&DesiredNode> = reviewing
        .lines
        .nodes
        .iter()
        .zip(&new_matched)
        .filter(|(_, matched)| !**matched)
        .map(|(node, _)| *node)
        .collect();
    let store = LazyStore::for_few_lookups(&reviewing.store_file);
    let hashed = hash_sources(&changed_nodes, inputs.host, &KnownHashes::new(&cache.recent, &store))?;
    let read: Vec<SourceHash> =
        hashed.iter().flatten().filter(|hashed| hashed.read).map(|hashed| hashed.source).collect();
    // One recent record per source: the latest.
    cache.recent.retain(|known| !read.iter().any(|read| read.key == known.key));
    cache.recent.extend(read);
    let old_part =
        Lock { version: old.version, jailfile: old.jailfile.clone(), host: old.host.clone(), entries: old_entries };
    let mut new_part = Lock {
        version: LOCK_VERSION,
        jailfile: reviewing.jailfile.clone(),
        host: reviewing.fingerprint(cache),
        entries: changed_nodes
            .iter()
            .zip(&hashed)
            .map(|(node, hashed)| entry_of(node, inputs.facts, hashed.as_ref().map(|hashed| &hashed.source.hash)))
            .collect(),
    };
    let comparison = compare(&old_part, &new_part);
    drop(_t);
    if comparison.is_empty() {
        // The lines stand as they are, now for these digests (a touched file whose content is
        // the same, say). No difference means the same paths in the same places.
        cache.memo = (memo.lines.len() == reviewing.lines.len()).then(|| Memo {
            lock_stat: memo.lock_stat,
            lines: memo.lines.iter().zip(digests).map(|(line, digest)| MemoLine { digest: *digest, ..*line }).collect(),
        });
        cache.fresh = Some(reviewing.fresh_key);
        save_incremental(reviewing, cache, &store, None);
        return Ok(Some(reviewing.unchanged(comparison)));
    }
    if reviewing.mode == Mode::Locked {
        // Nothing is written: the memo still describes the lock, which stays as it was.
        cache.memo = Some(memo);
        cache.fresh = None;
        save_incremental(reviewing, cache, &store, None);
        return Err(reviewing.locked_error(&comparison));
    }
    let _t = crate::timings::phase("lock: incremental packages");
    // As the full review: by content key from any line of the old lock (unchanged lines
    // included: a new path may copy a source an unchanged line has), else the dpkg database.
    let Some(recorded) = recorded_packages(&old, &new_part.entries) else { return Ok(None) };
    let reused: Vec<Option<Option<String>>> = new_part
        .entries
        .iter()
        .map(|entry| {
            let key = entry.source.clone().map(|source| (source, entry.hash.clone(), entry.target.clone()));
            key.and_then(|key| recorded.get(&key)).cloned()
        })
        .collect();
    let unknown: Vec<&str> = new_part
        .entries
        .iter()
        .zip(&reused)
        .filter(|(_, reused)| reused.is_none())
        .filter_map(|(entry, _)| entry.source.as_deref())
        .collect();
    let mut answers = PackageAnswers::new(inputs.host, &store);
    answers.look_up(inputs.host, &unknown);
    let packages: Vec<Option<String>> = unknown.iter().map(|source| answers.get(source).map(str::to_owned)).collect();
    let mut packages = packages.into_iter();
    for (entry, reused) in new_part.entries.iter_mut().zip(reused) {
        entry.package = match reused {
            Some(package) => package,
            None if entry.source.is_some() => packages.next().flatten(),
            None => None,
        };
    }
    let reported = compare(&old_part, &new_part);
    drop(_t);
    let _t = crate::timings::phase("lock: incremental write");
    let pieces = spliced_pieces(&old, &new_part.entries, &pairs, reviewing.lines.len())?;
    let header = LockHeader { version: new_part.version, jailfile: &new_part.jailfile, host: &new_part.host };
    let written = reviewing.write_lock(|out, temporary| {
        let mut sink = SpliceSink { out, old: &old.file, temporary, buffer: Vec::with_capacity(SPLICE_BUFFER) };
        write_lock_text(&mut sink, &header, pieces.into_iter())?;
        sink.flush()?;
        // Unchanged lines came from the old file: it must still be the one the memo describes,
        // unchanged and still in place.
        let copied_from = old.file.metadata().map(|metadata| StatPrint::of(&metadata)).ok();
        let in_place = fs::metadata(&reviewing.lock_path).map(|metadata| StatPrint::of(&metadata)).ok();
        if copied_from != Some(memo.lock_stat) || in_place != Some(memo.lock_stat) {
            return Err(OldLockMoved.into());
        }
        Ok(())
    });
    let written = match written {
        Err(error) if error.is::<OldLockMoved>() => return Ok(None),
        written => written?,
    };
    match &written {
        Some(file) => {
            let lines = new_memo_lines(&memo.lines, &new_part.entries, &pairs, digests)?;
            reviewing.remember_written(cache, file, |lock_stat| Some(Memo { lock_stat, lines }));
        }
        None => cache.memo = Some(memo),
    }
    let wrote = written.is_some();
    let learned = Some(answers).filter(|answers| !answers.learned.is_empty());
    save_incremental(reviewing, cache, &store, learned);
    Ok(Some(Review {
        lock_path: reviewing.lock_path.clone(),
        existed: true,
        comparison: reported,
        wrote,
        entries: reviewing.lines.len(),
    }))
}

/// The package of every line of the old lock whose content key one of `entries` has, the later
/// line's for two of one key, as [`review_full`] finds them: the lines whose source tag is one
/// of these entries' sources' are read, and those whose source is one of them recorded. None for
/// a line that does not parse.
fn recorded_packages(old: &OldLock, entries: &[LockEntry]) -> Option<HashMap<OwnedContentKey, Option<String>>> {
    let sources: rustc_hash::FxHashSet<&str> = entries.iter().filter_map(|entry| entry.source.as_deref()).collect();
    let tags: rustc_hash::FxHashSet<u32> = sources.iter().map(|source| source_tag(Some(source))).collect();
    let mut recorded = HashMap::default();
    for (index, line) in old.lines.iter().enumerate() {
        if line.source_tag == 0 || !tags.contains(&line.source_tag) {
            continue;
        }
        let entry = old.entry(index)?;
        if let Some(source) = entry.source.filter(|source| sources.contains(source.as_str())) {
            recorded.insert((source, entry.hash, entry.target), entry.package);
        }
    }
    Some(recorded)
}

/// The new lock's entry lines: runs of unchanged lines from the old file, changed lines from
/// their entries (`changed`, in order).
fn spliced_pieces<'a>(
    old: &OldLock,
    changed: &'a [LockEntry],
    pairs: &[(usize, usize)],
    lines: usize,
) -> Result<Vec<Piece<'a>>> {
    let mut pieces: Vec<Piece> = Vec::new();
    let mut changed = changed.iter();
    let mut pairs = pairs.iter().copied().peekable();
    let mut new_index = 0;
    while new_index < lines {
        match pairs.peek().copied() {
            Some((first_old, paired_new)) if paired_new == new_index => {
                let mut last_old = first_old;
                pairs.next();
                new_index += 1;
                while let Some(&(next_old, next_new)) = pairs.peek() {
                    if next_old != last_old + 1 || next_new != new_index {
                        break;
                    }
                    last_old = next_old;
                    new_index += 1;
                    pairs.next();
                }
                pieces.push(Piece::OldLines(old.range(first_old, last_old)));
            }
            _ => {
                pieces.push(Piece::Entry(changed.next().context("a changed lock line without its entry")?));
                new_index += 1;
            }
        }
    }
    Ok(pieces)
}

/// The memo lines of the spliced lock: unchanged lines' from the old memo, changed lines' from
/// their entries as [`write_lock_text`] writes them.
fn new_memo_lines(
    old: &[MemoLine],
    changed: &[LockEntry],
    pairs: &[(usize, usize)],
    digests: &[u128],
) -> Result<Vec<MemoLine>> {
    let mut old_of_new: Vec<Option<usize>> = vec![None; digests.len()];
    for &(old_index, new_index) in pairs {
        old_of_new[new_index] = Some(old_index);
    }
    let mut changed = changed.iter();
    old_of_new
        .iter()
        .zip(digests)
        .map(|(old_index, digest)| match old_index {
            Some(old_index) => Ok(old[*old_index]),
            None => {
                let entry = changed.next().context("a changed lock line without its entry")?;
                let length = serde_json::to_vec(entry).context("serializing a lock entry")?.len();
                Ok(MemoLine {
                    digest: *digest,
                    length: u32::try_from(length).context("a lock line of 4 GiB")?,
                    source_tag: source_tag(entry.source.as_deref()),
                })
            }
        })
        .collect()
}

/// What a splice writes between two copies of old lines, gathered first.
const SPLICE_BUFFER: usize = 1 << 20;

/// A new lock file written from pieces: runs of unchanged lines are copied from the old lock
/// file by the kernel (`std::io::copy` of one file into another is `copy_file_range`), not read
/// into memory and written again.
struct SpliceSink<'f> {
    out: &'f fs::File,
    old: &'f fs::File,
    temporary: &'f Path,
    buffer: Vec<u8>,
}

impl SpliceSink<'_> {
    fn flush(&mut self) -> Result<()> {
        let mut out = self.out;
        out.write_all(&self.buffer).with_context(|| format!("cannot write {}", self.temporary.display()))?;
        self.buffer.clear();
        Ok(())
    }
}

impl LockSink for SpliceSink<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= SPLICE_BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    fn put_entry(&mut self, entry: &LockEntry) -> Result<()> {
        serde_json::to_writer(&mut self.buffer, entry).context("serializing a lock entry")
    }

    fn put_old(&mut self, range: std::ops::Range<u64>) -> Result<()> {
        self.flush()?;
        let mut old = self.old;
        old.seek(std::io::SeekFrom::Start(range.start)).map_err(|_| OldLockMoved)?;
        let length = range.end - range.start;
        let copied = std::io::copy(&mut old.take(length), &mut self.out)
            .with_context(|| format!("cannot write {}", self.temporary.display()))?;
        if copied != length {
            // Shorter than the memo says: the file changed.
            return Err(OldLockMoved.into());
        }
        Ok(())
    }
}

/// Saves what an incremental review learned: the small file always; the store only when the
/// recent hashes outgrew [`RECENT_LIMIT`] or package answers were looked up (rare: new sources,
/// or dpkg changed), then pruned to the jail's sources (so neither grows without end).
fn save_incremental(reviewing: &Reviewing, cache: &mut Cache, store: &LazyStore, learned: Option<PackageAnswers>) {
    let _t = crate::timings::phase("lock: incremental save cache");
    if cache.recent.len() > RECENT_LIMIT || learned.is_some() {
        let store = store.whole();
        let keep = source_keys(reviewing.inputs.desired);
        let files = store.files().chain(cache.recent.iter().copied());
        let bytes = match learned {
            Some(answers) => {
                let (database, packages) = answers.into_store_packages();
                SourceStore::encode(files, packages, database, &keep)
            }
            None => SourceStore::encode(files, store.packages(), store.database, &keep),
        };
        save_cache_file(&reviewing.store_file, bytes);
        cache.recent.clear();
    }
    save_cache_file(&reviewing.cache_file, cache.encode());
}

// ---------------------------------------------------------------------------------------------
// Output for plan
// ---------------------------------------------------------------------------------------------

/// The plan's "host drift" section (empty when there is none), shown before the jail changes.
pub fn drift_text(review: &Review) -> String {
    let drift = review.host_drift();
    let mut text = String::new();
    if drift.is_empty() {
        return text;
    }
    let name = review.lock_path.file_name().map_or_else(String::new, |name| name.to_string_lossy().into_owned());
    let _ = writeln!(text, "The host no longer gives what {name} records:\n");
    for item in &drift {
        let _ = writeln!(text, "  {}", item.line());
    }
    if review.wrote {
        let _ = writeln!(text, "\n{name} was updated: review it (git diff) and commit it; `--locked` refuses drift.");
    }
    text.push('\n');
    text
}

/// The plan JSON with `"host_drift": [{"path","what"}...]` added.
pub fn plan_json_with_drift(plan_json: &str, review: &Review) -> Result<String> {
    let mut value: serde_json::Value = serde_json::from_str(plan_json).context("re-reading the plan JSON")?;
    if let Some(fields) = value.as_object_mut() {
        fields.insert("host_drift".into(), serde_json::to_value(review.host_drift())?);
    }
    let mut text = serde_json::to_string_pretty(&value)?;
    text.push('\n');
    Ok(text)
}

/// A line on stderr when plan or apply wrote the lock.
pub fn note(review: &Review) {
    if review.wrote {
        let verb = if review.existed { "updated" } else { "wrote" };
        eprintln!("jailprov: {verb} {} ({} entries)", review.lock_path.display(), review.entries);
    }
}

// ---------------------------------------------------------------------------------------------
// `jailprov lock`
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysroot with a two-package dpkg database: libfoo1 installed (listing its library under
    /// /lib, as Debian 12 packages still do), bar only configured-away.
    fn dpkg_sysroot() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        let dpkg = root.path().join("var/lib/dpkg");
        fs::create_dir_all(dpkg.join("info")).expect("mkdir");
        fs::write(
            dpkg.join("status"),
            "Package: libfoo1\nStatus: install ok installed\nVersion: 1.2-3\n\n\
             Package: bar\nStatus: deinstall ok config-files\nVersion: 9\n",
        )
        .expect("status");
        fs::write(dpkg.join("info/libfoo1:amd64.list"), "/.\n/lib/x86_64-linux-gnu/libfoo.so.1\n").expect("list");
        fs::write(dpkg.join("info/bar.list"), "/usr/bin/bar\n").expect("list");
        root
    }

    #[test]
    fn changes_of_needers_are_named_by_what_moved() {
        let list = |items: &[&str]| items.iter().map(|item| (*item).to_owned()).collect::<Vec<_>>();
        assert_eq!(set_change(&list(&["/usr/bin/ls"]), &list(&["/usr/bin/head", "/usr/bin/ls"])), "+/usr/bin/head");
        assert_eq!(set_change(&list(&["a", "b"]), &list(&["b", "c"])), "+c -a");
    }

    #[test]
    fn packages_come_from_the_dpkg_lists_of_installed_packages_only() {
        let root = dpkg_sysroot();
        let host = HostFs::new(root.path());
        let found = dpkg_packages(&host, &["/usr/lib/x86_64-linux-gnu/libfoo.so.1", "/usr/bin/bar", "/etc/motd"]);
        assert_eq!(found.get("/usr/lib/x86_64-linux-gnu/libfoo.so.1").map(String::as_str), Some("libfoo1 1.2-3"));
        assert_eq!(found.get("/usr/bin/bar"), None, "bar is not installed");
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn the_package_cache_key_moves_when_dpkg_installs_something() {
        let root = dpkg_sysroot();
        let host = HostFs::new(root.path());
        let before = dpkg_database_print(&host).expect("a dpkg database");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let status = root.path().join("var/lib/dpkg/status");
        let mut text = fs::read_to_string(&status).expect("status");
        text.push_str("\nPackage: baz\nStatus: install ok installed\nVersion: 1\n");
        fs::write(&status, text).expect("rewrite status");
        assert_ne!(dpkg_database_print(&host), Some(before), "a changed status file invalidates cached answers");
        assert_eq!(dpkg_database_print(&HostFs::new(root.path().join("nowhere"))), None);
    }

    fn file_entry(path: &str, hash: &str, size: u64, package: Option<&str>) -> LockEntry {
        let library = path.contains(".so");
        LockEntry {
            path: path.to_owned(),
            kind: if library { "library" } else { "file" }.to_owned(),
            source: Some(path.to_owned()),
            size: Some(size),
            mode: Some("0644".to_owned()),
            owner: None,
            hash: Some(format!("blake3:{hash}")),
            target: None,
            device: None,
            sonames: if library { vec![path.rsplit('/').next().unwrap_or_default().to_owned()] } else { Vec::new() },
            needed_by: vec!["/usr/bin/python3.11".to_owned()],
            package: package.map(str::to_owned),
        }
    }

    fn lock(entries: Vec<LockEntry>) -> Lock {
        Lock {
            version: LOCK_VERSION,
            jailfile: "blake3:00".to_owned(),
            host: HostFingerprint {
                os: "debian".into(),
                os_version: "12".into(),
                glibc: "2.36".into(),
                arch: "x86_64".into(),
            },
            entries,
        }
    }

    #[test]
    fn crlf_comments_whitespace_and_key_order_do_not_change_the_digest() {
        let plain = "root = \"/srv/j\"\nbinaries = [\"bash\", \"ls\"]\n\n[[files]]\npath = \"/etc/motd\"\ncontent = \"hi\\n\"\n";
        let reformatted = "# a comment\r\nbinaries = [\r\n  \"bash\",\r\n  \"ls\",\r\n]\r\nroot   =   '/srv/j'\r\n\r\n[[files]]\r\ncontent = \"hi\\n\"   # trailing\r\npath = \"/etc/motd\"\r\n";
        assert_eq!(jailfile_digest(plain).expect("valid"), jailfile_digest(reformatted).expect("valid"));
        let other = plain.replace("ls", "cat");
        assert_ne!(jailfile_digest(plain).expect("valid"), jailfile_digest(&other).expect("valid"), "values count");
    }

    #[test]
    fn lock_text_is_one_line_per_entry_and_round_trips() {
        let lock = lock(vec![
            file_entry("/usr/lib/x86_64-linux-gnu/libc.so.6", "aa", 10, None),
            file_entry("/usr/lib/x86_64-linux-gnu/libssl.so.3", "bb", 20, Some("libssl3 3.0.15-1")),
        ]);
        let text = lock.to_text().expect("serializes");
        insta::assert_snapshot!("lock_text", text);
        assert_eq!(Lock::parse(&text, Path::new("Jailfile.lock")).expect("parses"), lock);
        assert_eq!(text, lock.to_text().expect("serializes"), "the same lock, the same bytes");
    }

    #[test]
    fn diff_closures_lines_name_versions_sizes_and_empty_sets() {
        let old = lock(vec![
            file_entry("/etc/gone.conf", "11", 100, None),
            file_entry("/usr/lib/x86_64-linux-gnu/libssl.so.3", "aa", 100_000, Some("libssl3 3.0.15-1")),
        ]);
        let new = lock(vec![
            file_entry("/usr/lib/x86_64-linux-gnu/libnew.so.1", "cc", 2048, None),
            file_entry("/usr/lib/x86_64-linux-gnu/libssl.so.3", "bb", 112_902, Some("libssl3 3.0.17-1")),
        ]);
        let comparison = compare(&old, &new);
        insta::assert_snapshot!("diff_closures", diff_closures_text(&comparison));
        let drift: Vec<String> = comparison.host_drift().iter().map(Drift::line).collect();
        insta::assert_snapshot!("host_drift_lines", drift.join("\n"));
    }

    #[test]
    fn with_an_edited_jailfile_only_host_facts_are_drift() {
        let old = lock(vec![file_entry("/a", "aa", 1, None), file_entry("/b", "bb", 1, None)]);
        let mut new = lock(vec![file_entry("/a", "a2", 1, None), file_entry("/c", "cc", 1, None)]);
        let inline =
            |hash: &str| LockEntry { source: None, kind: "content".into(), ..file_entry("/etc/motd", hash, 1, None) };
        let mut old = old;
        old.entries.push(inline("m1"));
        new.entries.push(inline("m2"));
        new.jailfile = "blake3:11".to_owned();
        let drift = compare(&old, &new).host_drift();
        assert_eq!(drift.len(), 1, "only /a's content is the host's doing, /etc/motd's the Jailfile's: {drift:?}");
        assert_eq!(drift[0].path, "/a");
        assert!(drift[0].what.starts_with("blake3 "), "{drift:?}");
    }

    #[test]
    fn a_package_version_alone_is_not_a_difference() {
        let old = lock(vec![file_entry("/a", "aa", 1, Some("p 1"))]);
        let new = lock(vec![file_entry("/a", "aa", 1, None)]);
        assert!(compare(&old, &new).is_empty());
    }

    #[test]
    fn sizes_read_like_nix() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(12_902), "12.6 KiB");
        assert_eq!(signed_size(-3 * 1024 * 1024), "-3.0 MiB");
    }

    #[test]
    fn the_lock_sits_beside_the_jailfile_named_after_it() {
        assert_eq!(lock_path(Path::new("/x/Jailfile.toml")), PathBuf::from("/x/Jailfile.lock"));
        assert_eq!(lock_path(Path::new("web.toml")), PathBuf::from("web.lock"));
    }

    #[test]
    fn glibc_version_is_read_from_the_version_definitions_of_libc() {
        let host = HostFs::real();
        let Some(libc) = ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"]
            .iter()
            .map(Path::new)
            .find(|path| path.exists())
        else {
            eprintln!("SKIPPED glibc_version_is_read_from_the_version_definitions_of_libc: no libc.so.6 here");
            return;
        };
        let version = glibc_version(&host, libc).expect("libc.so.6 defines GLIBC_ versions");
        assert!(version.starts_with("2."), "{version}");
    }
}
/// The incremental review against the full one: after each kind of edit, the same lock bytes,
/// the same comparison, the same review, and the same error.
#[cfg(test)]
mod incremental_tests {
    use super::*;
    use crate::tree::JailPath;

    /// A host sysroot (with a dpkg database), a Jailfile and a state directory in one tempdir,
    /// and the desired tree and closure facts a test edits between reviews.
    struct Bench {
        dir: tempfile::TempDir,
        desired: DesiredTree,
        facts: ClosureFacts,
    }

    /// What a review gave, in a form two reviews can be compared by.
    #[derive(Debug, PartialEq, Eq)]
    struct Seen {
        route: Option<Route>,
        /// The review's fields, or the error's text.
        outcome: std::result::Result<Reviewed, String>,
        lock: Option<Vec<u8>>,
    }

    #[derive(Debug, PartialEq, Eq)]
    struct Reviewed {
        existed: bool,
        wrote: bool,
        entries: usize,
        /// Every difference in full, old and new entries included.
        comparison: String,
        lines: Vec<String>,
        drift: Vec<String>,
        diff_closures: String,
    }

    /// The cache directory's files and the lock file, as bytes.
    struct Snapshot {
        cache_files: Vec<(PathBuf, Vec<u8>)>,
        lock: Option<Vec<u8>>,
    }

    const DPKG_STATUS: &str = "Package: libfoo1\nStatus: install ok installed\nVersion: 1.2-3\n\n\
        Package: shared\nStatus: install ok installed\nVersion: 1.0\n\n\
        Package: tool\nStatus: install ok installed\nVersion: 7\n";

    fn path(text: &str) -> JailPath {
        JailPath::parse(text).expect("a valid jail path")
    }

    /// Lets the coarse kernel clock move on, so that a file written now gets another ctime
    /// than one written just before (stat prints tell writes apart by it).
    fn tick() {
        std::thread::sleep(std::time::Duration::from_millis(15));
    }

    impl Bench {
        fn new() -> Bench {
            let dir = tempfile::tempdir().expect("tempdir");
            let bench = Bench { dir, desired: DesiredTree::default(), facts: ClosureFacts::default() };
            fs::create_dir_all(bench.host().join("var/lib/dpkg/info")).expect("mkdir dpkg");
            fs::create_dir_all(bench.dir.path().join("repo")).expect("mkdir repo");
            bench.write_dpkg(DPKG_STATUS);
            fs::write(
                bench.host().join("var/lib/dpkg/info/libfoo1:amd64.list"),
                "/.\n/lib/x86_64-linux-gnu/libfoo.so.1\n",
            )
            .expect("list");
            fs::write(bench.host().join("var/lib/dpkg/info/shared.list"), "/srv/shared.conf\n").expect("list");
            fs::write(bench.host().join("var/lib/dpkg/info/tool.list"), "/usr/bin/tool\n").expect("list");
            bench.write_jailfile("root = \"/srv/jails/bench\"\n");
            bench
        }

        /// A jail of every kind of entry: files (one a library with facts, one a program),
        /// a directory, a symlink with facts, inline content, a device.
        fn typical() -> Bench {
            let mut bench = Bench::new();
            bench.add_dir("/srv");
            bench.add_file("/srv/app/a.conf", "/srv/app/a.conf", b"a = 1\n");
            bench.add_file("/srv/app/b.conf", "/srv/app/b.conf", b"b = 2\n");
            bench.add_file("/srv/app/c.conf", "/srv/app/c.conf", b"c = 3\n");
            bench.add_file("/srv/shared.conf", "/srv/shared.conf", b"shared\n");
            bench.add_file("/usr/bin/tool", "/usr/bin/tool", b"\x7fELF tool");
            bench.add_file("/usr/lib/x86_64-linux-gnu/libfoo.so.1", "/usr/lib/x86_64-linux-gnu/libfoo.so.1", b"foo");
            bench.set_facts("/usr/bin/tool", EntryKind::Binary, None, &[], &["binaries \"tool\""]);
            bench.set_facts(
                "/usr/lib/x86_64-linux-gnu/libfoo.so.1",
                EntryKind::Library,
                None,
                &["libfoo.so.1"],
                &["/usr/bin/tool"],
            );
            bench.add_node("/lib", DesiredKind::Symlink { target: "usr/lib".into() }, 0o777);
            bench.set_facts("/lib", EntryKind::Symlink, Some("/lib"), &[], &["/usr/bin/tool"]);
            bench.add_node("/etc/motd", DesiredKind::Content { bytes: b"hello\n".to_vec() }, 0o644);
            bench.add_node(
                "/dev/null",
                DesiredKind::Device { block: false, rdev: nix::sys::stat::makedev(1, 3) },
                0o666,
            );
            bench
        }

        fn host(&self) -> PathBuf {
            self.dir.path().join("host")
        }

        fn jailfile(&self) -> PathBuf {
            self.dir.path().join("repo/Jailfile.toml")
        }

        fn lock_file(&self) -> PathBuf {
            lock_path(&self.jailfile())
        }

        fn state(&self) -> PathBuf {
            self.dir.path().join("state")
        }

        fn cache_file(&self) -> PathBuf {
            cache_path(&self.state(), &self.lock_file())
        }

        fn write_jailfile(&self, text: &str) {
            fs::write(self.jailfile(), text).expect("write the Jailfile");
        }

        fn write_dpkg(&self, status: &str) {
            fs::write(self.host().join("var/lib/dpkg/status"), status).expect("write the dpkg status");
        }

        fn host_file(&self, source: &str) -> PathBuf {
            self.host().join(source.trim_start_matches('/'))
        }

        /// Writes a host file and puts a node copying it at `jail`.
        fn add_file(&mut self, jail: &str, source: &str, content: &[u8]) {
            let disk = self.host_file(source);
            fs::create_dir_all(disk.parent().expect("a parent")).expect("mkdir");
            fs::write(&disk, content).expect("write a host file");
            let source_print = StatPrint::of(&fs::metadata(&disk).expect("stat"));
            self.add_node(jail, DesiredKind::File { source: PathBuf::from(source), source_print }, 0o644);
        }

        fn add_dir(&mut self, jail: &str) {
            self.add_node(jail, DesiredKind::Dir, 0o755);
        }

        fn add_node(&mut self, jail: &str, kind: DesiredKind, mode: u32) {
            self.desired.nodes.insert(path(jail), DesiredNode { path: path(jail), kind, mode, uid: 0, gid: 0 });
        }

        fn set_facts(
            &mut self,
            jail: &str,
            kind: EntryKind,
            source: Option<&str>,
            sonames: &[&str],
            needed_by: &[&str],
        ) {
            let owned = |items: &[&str]| items.iter().map(|item| (*item).to_owned()).collect();
            let facts =
                Facts { kind, source: source.map(str::to_owned), sonames: owned(sonames), needed_by: owned(needed_by) };
            self.facts.facts.insert(path(jail), facts);
        }

        /// Rewrites a host file and takes its new stat print into the desired tree, as the next
        /// plan's desired tree would have it.
        fn edit(&mut self, source: &str, content: &[u8]) {
            fs::write(self.host_file(source), content).expect("rewrite a host file");
            self.restat();
        }

        /// The stat prints of every host source as they are now.
        fn restat(&mut self) {
            let host = self.host();
            for node in self.desired.nodes.values_mut() {
                if let DesiredKind::File { source, source_print } = &mut node.kind {
                    let disk = host.join(source.strip_prefix("/").expect("an absolute source"));
                    *source_print = StatPrint::of(&fs::metadata(disk).expect("stat"));
                }
            }
        }

        fn review(&self, mode: Mode) -> Result<(Review, Route)> {
            let host = HostFs::new(self.host());
            let (jailfile, state) = (self.jailfile(), self.state());
            let inputs = Inputs {
                jailfile: &jailfile,
                desired: &self.desired,
                facts: &self.facts,
                host: &host,
                state_dir: &state,
            };
            review_by_route(&inputs, mode)
        }

        fn seen(&self, mode: Mode) -> Seen {
            let result = self.review(mode);
            let route = result.as_ref().ok().map(|(_, route)| *route);
            let outcome = result
                .map(|(review, _)| Reviewed {
                    existed: review.existed,
                    wrote: review.wrote,
                    entries: review.entries,
                    comparison: format!("{:?}", review.comparison),
                    lines: review.comparison.lines(),
                    drift: review.host_drift().iter().map(Drift::line).collect(),
                    diff_closures: diff_closures_text(&review.comparison),
                })
                .map_err(|error| format!("{error:#}"));
            Seen { route, outcome, lock: fs::read(self.lock_file()).ok() }
        }

        /// The first review writes the lock (full), the second finds it fresh: the memo is in
        /// place for what a test does next.
        fn locked_in(self) -> Bench {
            let first = self.seen(Mode::Refresh);
            assert_eq!(first.route, Some(Route::Full), "{first:?}");
            let second = self.seen(Mode::Refresh);
            assert_eq!(second.route, Some(Route::Fresh), "{second:?}");
            assert!(load_cache(&self.cache_file()).memo.is_some(), "a written lock has its memo");
            tick();
            self
        }

        fn snapshot(&self) -> Snapshot {
            let cache_files = fs::read_dir(self.cache_file().parent().expect("a parent"))
                .map(|entries| {
                    entries
                        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                        .map(|path| {
                            let bytes = fs::read(&path).expect("read a cache file");
                            (path, bytes)
                        })
                        .collect()
                })
                .unwrap_or_default();
            Snapshot { cache_files, lock: fs::read(self.lock_file()).ok() }
        }

        fn restore(&self, Snapshot { cache_files, lock }: &Snapshot) {
            let dir = self.cache_file().parent().expect("a parent").to_path_buf();
            if dir.exists() {
                fs::remove_dir_all(&dir).expect("clear the cache");
            }
            fs::create_dir_all(&dir).expect("mkdir the cache");
            for (path, bytes) in cache_files {
                fs::write(path, bytes).expect("restore a cache file");
            }
            match lock {
                Some(bytes) => fs::write(self.lock_file(), bytes).expect("restore the lock"),
                None => {
                    let _ = fs::remove_file(self.lock_file());
                }
            }
        }

        /// Forgets the memo: the next review of this lock is a full one.
        fn drop_memo(&self) {
            let mut cache = load_cache(&self.cache_file());
            cache.memo = None;
            fs::write(self.cache_file(), cache.encode().expect("encode")).expect("write the cache");
        }

        /// Reviews as a plan would now (incrementally, the memo being in place) and, from the
        /// same lock and cache, in full; asserts that both give the same, then that the state
        /// left behind is coherent (a review right after finds nothing to do, or the same
        /// error). Returns the incremental review's outcome.
        fn assert_incremental_is_full(&self, mode: Mode) -> Seen {
            self.assert_same_as_full(mode, Route::Incremental)
        }

        /// [`Bench::assert_incremental_is_full`] for a review expected to take `route`.
        fn assert_same_as_full(&self, mode: Mode, route: Route) -> Seen {
            let before = self.snapshot();
            let incremental = self.seen(mode);
            let after_incremental = self.snapshot();
            self.restore(&before);
            self.drop_memo();
            let full = self.seen(mode);
            assert_eq!(full.route.unwrap_or(Route::Full), Route::Full, "without a memo the review is a full one");
            assert_eq!(incremental.route.unwrap_or(route), route, "{incremental:?}");
            assert_eq!(incremental.outcome, full.outcome, "incremental and full reviews differ");
            assert_eq!(
                incremental.lock.as_deref().map(String::from_utf8_lossy),
                full.lock.as_deref().map(String::from_utf8_lossy),
                "the lock files differ"
            );
            // Back to the state the incremental review left: what comes next must agree.
            self.restore(&after_incremental);
            let cache = load_cache(&self.cache_file());
            if let (Some(memo), Ok(metadata)) = (&cache.memo, fs::metadata(self.lock_file())) {
                // The restore rewrote the lock: give the memo the restored file's stat.
                let restored = Memo { lock_stat: StatPrint::of(&metadata), lines: memo.lines.clone() };
                let cache = Cache { memo: Some(restored), fresh: None, ..cache };
                fs::write(self.cache_file(), cache.encode().expect("encode")).expect("write the cache");
            }
            let again = self.seen(mode);
            match &incremental.outcome {
                Ok(_) => {
                    // Whatever route it took, the review left a memo that vouches for the lock.
                    assert_eq!(again.route, Some(Route::Incremental), "{again:?}");
                    let reviewed = again.outcome.as_ref().expect("no error after a review that passed");
                    assert!(!reviewed.wrote, "a second review rewrote the lock: {again:?}");
                    assert_eq!(again.lock, incremental.lock);
                }
                Err(error) => assert_eq!(again.outcome.as_ref().err(), Some(error), "the same error again"),
            }
            incremental
        }
    }

    fn wrote(seen: &Seen) -> bool {
        seen.outcome.as_ref().is_ok_and(|reviewed| reviewed.wrote)
    }

    fn lines(seen: &Seen) -> Vec<String> {
        seen.outcome.as_ref().map(|reviewed| reviewed.lines.clone()).unwrap_or_default()
    }

    #[test]
    fn a_changed_file_content_is_one_changed_line() {
        let mut bench = Bench::typical().locked_in();
        bench.edit("/srv/app/b.conf", b"b = 22\n");
        let seen = bench.assert_incremental_is_full(Mode::Refresh);
        assert!(wrote(&seen));
        assert_eq!(lines(&seen).len(), 1, "{seen:?}");
        assert!(lines(&seen)[0].starts_with("/srv/app/b.conf  blake3 "), "{seen:?}");
    }

    #[test]
    fn a_same_size_edit_with_its_mtime_put_back_is_found_by_its_ctime() {
        let mut bench = Bench::typical().locked_in();
        let disk = bench.host_file("/srv/app/b.conf");
        let mtime = fs::metadata(&disk).expect("stat").modified().expect("mtime");
        fs::write(&disk, b"b = 9\n").expect("same size");
        fs::File::options().write(true).open(&disk).expect("open").set_modified(mtime).expect("put the mtime back");
        bench.restat();
        let seen = bench.assert_incremental_is_full(Mode::Refresh);
        assert!(wrote(&seen), "{seen:?}");
        assert_eq!(lines(&seen).len(), 1, "{seen:?}");
    }

    #[test]
    fn a_touched_file_with_the_same_content_changes_nothing() {
        let mut bench = Bench::typical().locked_in();
        let before = fs::read(bench.lock_file()).expect("the lock");
        fs::File::options()
            .write(true)
            .open(bench.host_file("/srv/app/a.conf"))
            .expect("open")
            .set_modified(std::time::SystemTime::now())
            .expect("touch");
        bench.restat();
        let seen = bench.assert_incremental_is_full(Mode::Refresh);
        assert!(!wrote(&seen), "{seen:?}");
        assert!(lines(&seen).is_empty(), "{seen:?}");
        assert_eq!(seen.lock.as_deref(), Some(&before[..]), "the lock is left as it was");
        // The memo now vouches for the lines with the touched file's digest.
        let memo = load_cache(&bench.cache_file()).memo.expect("a memo");
        let digests: Vec<u128> = memo.lines.iter().map(|line| line.digest).collect();
        assert_eq!(digests, desired_lines(&bench.desired, &bench.facts).digests());
    }

    /// Many incremental reviews do not grow the cache without end: the recent hashes go to
    /// the store once there are more than [`RECENT_LIMIT`], and the store keeps the jail's
    /// sources only.
    #[test]
    fn the_cache_stays_the_size_of_the_jail() {
        let mut bench = Bench::typical();
        let many: Vec<String> = (0..RECENT_LIMIT + 8).map(|index| format!("/srv/many/{index:04}")).collect();
        for source in &many {
            bench.add_file(source, source, b"0");
        }
        let mut bench = bench.locked_in();
        let store_file = store_path(&bench.cache_file());
        let store_size = || fs::read(&store_file).expect("a store");
        let full_store = store_size();
        for source in &many[..RECENT_LIMIT / 2] {
            fs::write(bench.host_file(source), b"1").expect("edit");
        }
        bench.desired.nodes.remove(&path(&many[0]));
        bench.restat();
        assert_eq!(bench.seen(Mode::Refresh).route, Some(Route::Incremental));
        assert_eq!(load_cache(&bench.cache_file()).recent.len(), RECENT_LIMIT / 2 - 1, "the store waits");
        assert_eq!(store_size(), full_store, "the store was not rewritten");
        tick();
        for source in &many[RECENT_LIMIT / 2..] {
            fs::write(bench.host_file(source), b"2").expect("edit");
        }
        bench.restat();
        assert_eq!(bench.seen(Mode::Refresh).route, Some(Route::Incremental));
        assert!(load_cache(&bench.cache_file()).recent.is_empty(), "merged into the store");
        let store = load_store(&store_file);
        assert_eq!(store.files().count(), 6 + many.len() - 1, "the jail's sources, the removed one pruned");
    }

    #[test]
    fn added_and_removed_files_are_lines_added_and_removed() {
        let mut bench = Bench::typical().locked_in();
        bench.add_file("/srv/app/b2.conf", "/srv/app/b2.conf", b"new\n");
        let seen = bench.assert_incremental_is_full(Mode::Refresh);
        assert!(lines(&seen).iter().any(|line| line.starts_with("/srv/app/b2.conf  ∅ → ")), "{seen:?}");

        let mut bench = Bench::typical().locked_in();
        bench.desired.nodes.remove(&path("/srv/app/b.conf"));
        let seen = bench.assert_incremental_is_full(Mode::Refresh);
        assert!(lines(&seen).iter().any(|line| line.starts_with("/srv/app/b.conf  file blake3 ")), "{seen:?}");
    }

    #[test]
    fn mode_and_owner_changes_are_changed_lines() {
        let mut bench = Bench::typical().locked_in();
        if let Some(node) = bench.desired.nodes.get_mut(&path("/srv/app/a.conf")) {
            node.mode = 0o600;
        }
        if let Some(node) = bench.desired.nodes.get_mut(&path("/etc/motd")) {
            (node.uid, node.gid) = (1000, 1000);
        }
        let seen = bench.assert_incremental_is_full(Mode::Refresh);
        assert_eq!(lines(&seen).len(), 2, "{seen:?}");
    }

    #[test]
    fn a_change_of_needers_in_the_closure_facts_is_a_changed_line() {
        let mut bench = Bench::typical().locked_in();
        bench.set_facts(
            "/usr/lib/x86_64-linux-gnu/libfoo.so.1",
            EntryKind::Library,
            None,
            &["libfoo.so.1"],
            &["/usr/bin/other", "/usr/bin/tool"],
        );
        let seen = bench.assert_incremental_is_full(Mode::Refresh);
        assert_eq!(lines(&seen), vec!["/usr/lib/x86_64-linux-gnu/libfoo.so.1  needed by +/usr/bin/other"]);
    }

    #[test]
    fn an_edited_jailfile_changes_the_header_alone() {
        let bench = Bench::typical().locked_in();
        bench.write_jailfile("root = \"/srv/jails/bench\"\nbinaries = [\"tool\"]\n");
        let seen = bench.assert_incremental_is_full(Mode::Refresh);
        assert!(wrote(&seen));
        assert!(lines(&seen)[0].starts_with("the Jailfile changed since the lock"), "{seen:?}");
        // A host fingerprint change too (os-release appears), with no line changed.
        fs::create_dir_all(bench.host().join("etc")).expect("mkdir");
        fs::write(bench.host().join("etc/os-release"), "ID=debian\nVERSION_ID=\"12\"\n").expect("os-release");
        let seen = bench.assert_incremental_is_full(Mode::Refresh);
        assert!(lines(&seen)[0].starts_with("the host is debian 12"), "{seen:?}");
    }

    #[test]
    fn a_changed_libc_changes_the_glibc_of_the_header() {
        let mut bench = Bench::typical();
        bench.add_file("/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", b"not ELF");
        let mut bench = bench.locked_in();
        assert!(String::from_utf8_lossy(&fs::read(bench.lock_file()).expect("lock")).contains("\"glibc\":\"unknown\""));
        let Some(libc) = ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"]
            .iter()
            .find_map(|path| fs::read(path).ok())
        else {
            eprintln!("SKIPPED a_changed_libc_changes_the_glibc_of_the_header: no libc.so.6 here");
            return;
        };
        bench.edit("/usr/lib/x86_64-linux-gnu/libc.so.6", &libc);
        let seen = bench.assert_incremental_is_full(Mode::Refresh);
        assert!(lines(&seen).iter().any(|line| line.contains(", glibc unknown, ")), "{seen:?}");
        assert!(!String::from_utf8_lossy(seen.lock.as_deref().unwrap_or_default()).contains("\"glibc\":\"unknown\""));
    }

    #[test]
    fn the_first_and_the_last_line_and_several_at_once() {
        let mut bench = Bench::typical().locked_in();
        // "/dev/null" sorts first, "/usr/lib/..." last.
        if let Some(node) = bench.desired.nodes.get_mut(&path("/dev/null")) {
            node.mode = 0o600;
        }
        bench.edit("/usr/lib/x86_64-linux-gnu/libfoo.so.1", b"foo 2");
        let seen = bench.assert_incremental_is_full(Mode::Refresh);
        assert_eq!(lines(&seen).len(), 2, "{seen:?}");

        let mut bench = Bench::typical().locked_in();
        bench.add_file("/aaa", "/srv/aaa", b"first now\n");
        bench.add_file("/zzz", "/srv/zzz", b"last now\n");
        bench.desired.nodes.remove(&path("/srv/app/c.conf"));
        bench.edit("/srv/app/a.conf", b"a = 11\n");
        bench.edit("/usr/bin/tool", b"\x7fELF tool 2");
        bench.write_jailfile("root = \"/srv/jails/bench\"\n# reformatted, same digest\n");
        let seen = bench.assert_incremental_is_full(Mode::Refresh);
        assert_eq!(lines(&seen).len(), 5, "{seen:?}");
        // And --locked refuses all of it with the same words, writing nothing.
        bench.add_file("/zzz", "/srv/zzz", b"last changed\n");
        let before = fs::read(bench.lock_file()).expect("the lock");
        let seen = bench.assert_incremental_is_full(Mode::Locked);
        assert!(seen.outcome.as_ref().is_err_and(|error| error.starts_with("--locked: what the host gives differs")));
        assert_eq!(seen.lock.as_deref(), Some(&before[..]), "--locked leaves the lock byte for byte");
    }

    /// Past a quarter of the lines (and a thousand), the full review is the cheaper one.
    #[test]
    fn many_changed_lines_are_reviewed_in_full() {
        let mut bench = Bench::typical();
        for index in 0..2100 {
            let source = format!("/srv/many/{index:04}");
            bench.add_file(&source, &source, b"0");
        }
        let mut bench = bench.locked_in();
        // 520 changed lines of 2,110, counted on both sides: 1,040 of 4,220.
        for node in bench.desired.nodes.values_mut().filter(|node| node.path.as_str() >= "/srv/many/").take(520) {
            node.mode = 0o600;
        }
        let seen = bench.assert_incremental_is_full(Mode::Refresh);
        assert_eq!(lines(&seen).len(), 520);
        for node in bench.desired.nodes.values_mut().filter(|node| node.path.as_str().starts_with("/srv/many/")) {
            node.mode = 0o640;
        }
        let seen = bench.assert_same_as_full(Mode::Refresh, Route::Full);
        assert_eq!(lines(&seen).len(), 2100);
        assert!(!too_many_changed(1024, 1024) && too_many_changed(1025, 4096) && !too_many_changed(1025, 4100));
    }

    #[test]
    fn an_empty_lock_and_back() {
        let mut bench = Bench::new().locked_in();
        assert!(String::from_utf8_lossy(&fs::read(bench.lock_file()).expect("lock")).contains("\"entries\": []"));
        bench.add_file("/srv/one", "/srv/one", b"1\n");
        bench.add_dir("/srv");
        let seen = bench.assert_incremental_is_full(Mode::Refresh);
        assert_eq!(lines(&seen).len(), 2, "{seen:?}");

        let mut bench = Bench::typical().locked_in();
        bench.desired = DesiredTree::default();
        let seen = bench.assert_incremental_is_full(Mode::Refresh);
        assert_eq!(lines(&seen).len(), 10, "{seen:?}");
        assert!(String::from_utf8_lossy(seen.lock.as_deref().unwrap_or_default()).contains("\"entries\": []"));
    }

    /// A new path copying a host source an unchanged line already has takes that line's
    /// package, as the full review does, even when dpkg would now answer otherwise.
    #[test]
    fn a_new_copy_of_a_source_takes_the_package_an_unchanged_line_has() {
        let mut bench = Bench::typical().locked_in();
        assert!(
            String::from_utf8_lossy(&fs::read(bench.lock_file()).expect("lock")).contains("\"package\":\"shared 1.0\"")
        );
        bench.write_dpkg(&DPKG_STATUS.replace("Version: 1.0", "Version: 2.0"));
        bench.add_file("/opt/copy.conf", "/srv/shared.conf", b"shared\n");
        bench.restat();
        let seen = bench.assert_incremental_is_full(Mode::Refresh);
        let lock = String::from_utf8_lossy(seen.lock.as_deref().unwrap_or_default()).into_owned();
        let copy = lock.lines().find(|line| line.contains("\"path\":\"/opt/copy.conf\"")).expect("the new line");
        assert!(copy.contains("\"package\":\"shared 1.0\""), "{copy}");
        // A new source no line has: asked of dpkg (the answer is cached in the store).
        bench.add_file("/usr/bin/tool2", "/usr/bin/tool", b"\x7fELF tool");
        bench.restat();
        bench.assert_incremental_is_full(Mode::Refresh);
    }

    #[test]
    fn a_lock_edited_by_hand_is_reviewed_in_full_and_rewritten() {
        let bench = Bench::typical().locked_in();
        let written = fs::read_to_string(bench.lock_file()).expect("lock");
        fs::write(bench.lock_file(), written.replace("\"mode\":\"0755\"", "\"mode\":\"0700\"")).expect("hand edit");
        let seen = bench.seen(Mode::Refresh);
        assert_eq!(seen.route, Some(Route::Full), "{seen:?}");
        assert!(wrote(&seen), "{seen:?}");
        assert_eq!(seen.lock.as_deref(), Some(written.as_bytes()), "rewritten as the host gives it");
        // Reformatted by hand but equal in content: no difference, but no memo either.
        tick();
        let pretty =
            serde_json::to_string_pretty(&Lock::parse(&written, Path::new("x")).expect("parses")).expect("json");
        fs::write(bench.lock_file(), &pretty).expect("reformat");
        let seen = bench.seen(Mode::Refresh);
        assert_eq!((seen.route, wrote(&seen)), (Some(Route::Full), false), "{seen:?}");
        assert!(
            load_cache(&bench.cache_file()).memo.is_none(),
            "a memo vouches only for lines as jailprov writes them"
        );
    }

    /// The incremental review really leaves unchanged lines alone: one damaged on purpose (the
    /// memo made to vouch for the damaged file) is carried over as it stands, where the full
    /// review would have put it right.
    #[test]
    fn unchanged_lines_are_copied_not_parsed() {
        let mut bench = Bench::typical().locked_in();
        let written = fs::read_to_string(bench.lock_file()).expect("lock");
        let motd = written.lines().find(|line| line.contains("\"path\":\"/etc/motd\"")).expect("motd line");
        let damaged_line = motd.replace("\"kind\":\"content\"", "\"kind\":\"CONTENT\"");
        assert_eq!(damaged_line.len(), motd.len());
        let damaged = written.replace(motd, &damaged_line);
        fs::write(bench.lock_file(), &damaged).expect("damage");
        let mut cache = load_cache(&bench.cache_file());
        let memo = cache.memo.as_mut().expect("a memo");
        memo.lock_stat = StatPrint::of(&fs::metadata(bench.lock_file()).expect("stat"));
        fs::write(bench.cache_file(), cache.encode().expect("encode")).expect("write the cache");

        bench.edit("/srv/app/a.conf", b"a = 100\n");
        let seen = bench.seen(Mode::Refresh);
        assert_eq!(seen.route, Some(Route::Incremental), "{seen:?}");
        assert_eq!(lines(&seen).len(), 1, "only a.conf was compared: {seen:?}");
        let lock = String::from_utf8_lossy(seen.lock.as_deref().unwrap_or_default()).into_owned();
        assert!(lock.contains(&damaged_line), "the unchanged (damaged) line was copied as it stood");
        bench.drop_memo();
        tick();
        bench.edit("/srv/app/a.conf", b"a = 1000\n");
        let seen = bench.seen(Mode::Refresh);
        assert_eq!(seen.route, Some(Route::Full));
        assert!(lines(&seen).iter().any(|line| line.starts_with("/etc/motd  kind CONTENT → content")), "{seen:?}");
    }

    /// The facts met by walking them alongside the nodes are the facts of each node's path,
    /// wherever a thread's share of the nodes starts; the digests are of each node's bytes.
    #[test]
    fn line_digests_take_each_node_with_its_own_facts() {
        let bench = Bench::typical();
        let nodes: Vec<&DesiredNode> = bench.desired.nodes.values().collect();
        let expected: Vec<Vec<u8>> = nodes
            .iter()
            .map(|node| {
                let mut bytes = Vec::new();
                node_bytes(node, bench.facts.facts.get(&node.path), &mut bytes);
                bytes
            })
            .collect();
        for start in 0..nodes.len() {
            let (share, _) = share_bytes(&nodes[start..], &bench.facts);
            assert_eq!(share.nodes().collect::<Vec<_>>(), expected[start..], "from node {start}");
        }
        let lines = desired_lines(&bench.desired, &bench.facts);
        let digests: Vec<u128> = expected.iter().map(|bytes| line_digest(bytes)).collect();
        assert_eq!(lines.digests(), digests);
        assert_eq!(lines.libc, None);
        let mut bench = bench;
        bench.add_file("/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", b"not ELF");
        let lines = desired_lines(&bench.desired, &bench.facts);
        assert_eq!(
            lines.libc.map(|index| lines.nodes[index].path.as_str()),
            Some("/usr/lib/x86_64-linux-gnu/libc.so.6")
        );
    }

    /// A lock file whose lines do not add up to the memo's lengths is not the memo's, even with
    /// the memo's stat print: reviewed in full (here the last line grew by a byte, which a copy
    /// by the memo's offsets would have cut).
    #[test]
    fn a_lock_that_does_not_add_up_to_the_memo_is_reviewed_in_full() {
        let mut bench = Bench::typical().locked_in();
        let written = fs::read_to_string(bench.lock_file()).expect("lock");
        let last = written.lines().rev().find(|line| line.starts_with("    {")).expect("a last line");
        let grown = written.replace(last, &last.replacen("{\"path\"", "{ \"path\"", 1));
        fs::write(bench.lock_file(), &grown).expect("grow the last line");
        let mut cache = load_cache(&bench.cache_file());
        cache.memo.as_mut().expect("a memo").lock_stat = StatPrint::of(&fs::metadata(bench.lock_file()).expect("stat"));
        fs::write(bench.cache_file(), cache.encode().expect("encode")).expect("write the cache");
        bench.edit("/srv/app/a.conf", b"a = 5\n");
        let seen = bench.seen(Mode::Refresh);
        assert_eq!(seen.route, Some(Route::Full), "{seen:?}");
        let lock = String::from_utf8_lossy(seen.lock.as_deref().unwrap_or_default()).into_owned();
        assert!(lock.contains(&format!("\n{last}\n")), "the last line as a rewrite writes it: {lock}");
        let parsed = Lock::parse(&lock, Path::new("Jailfile.lock")).expect("a lock");
        assert_eq!(parsed.to_text().expect("text"), lock, "written whole, as jailprov writes a lock");
    }

    #[test]
    fn equal_digests_pair_up_in_order() {
        assert_eq!(matched_lines(&[1, 2, 3, 4], &[1, 2, 3, 4]), Some(vec![(0, 0), (1, 1), (2, 2), (3, 3)]));
        assert_eq!(matched_lines(&[1, 2, 3, 4], &[1, 9, 3, 4]), Some(vec![(0, 0), (2, 2), (3, 3)]));
        assert_eq!(matched_lines(&[1, 2, 3], &[1, 5, 2, 3, 6]), Some(vec![(0, 0), (1, 2), (2, 3)]));
        assert_eq!(matched_lines(&[1, 2, 3, 4], &[2, 4]), Some(vec![(1, 0), (3, 1)]));
        assert_eq!(matched_lines(&[], &[1]), Some(vec![]));
        assert_eq!(matched_lines(&[1, 7, 8, 2], &[1, 8, 7, 2]), None, "out of order: not digests of sorted lines");
    }

    #[test]
    fn caches_round_trip_and_refuse_what_is_not_theirs() {
        let print = StatPrint { size: 3, mtime_ns: -5, ctime_ns: i128::MAX, ino: 9 };
        let cache = Cache {
            fresh: Some([7; 32]),
            memo: Some(Memo {
                lock_stat: print,
                lines: vec![MemoLine { digest: u128::MAX - 1, length: 80, source_tag: 3 }],
            }),
            recent: vec![SourceHash { key: [1; 16], print, hash: [2; 32] }],
            glibc: None,
        };
        let bytes = cache.encode().expect("encode");
        let decoded = Cache::decode(&bytes).expect("decode");
        assert_eq!((decoded.fresh, &decoded.memo, &decoded.recent), (cache.fresh, &cache.memo, &cache.recent));
        assert!(Cache::decode(&bytes[..bytes.len() - 1]).is_none(), "a torn cache is no cache");

        let keep: rustc_hash::FxHashSet<SourceKey> = [[1; 16], [3; 16]].into_iter().collect();
        let files =
            [SourceHash { key: [3; 16], print, hash: [4; 32] }, SourceHash { key: [1; 16], print, hash: [5; 32] }];
        let packages = [([3; 16], Some("p 1".to_owned())), ([1; 16], None), ([2; 16], Some("gone 1".to_owned()))];
        let database = Some((print, print));
        let bytes = SourceStore::encode(files.into_iter(), packages.into_iter(), database, &keep).expect("encode");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("store");
        fs::write(&file, &bytes).expect("write the store");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).expect("chmod");
        // Read whole (a full review) and searched in the file (an incremental one): the same.
        for store in [LazyStore::new(&file), LazyStore::for_few_lookups(&file)] {
            assert_eq!(store.hash(&[1; 16], &print), Some([5; 32]));
            assert_eq!(store.hash(&[3; 16], &print), Some([4; 32]));
            assert_eq!(store.hash(&[3; 16], &StatPrint { ino: 10, ..print }), None, "another stat print");
            assert_eq!(store.hash(&[0; 16], &print), None);
            assert_eq!(store.hash(&[9; 16], &print), None);
            assert_eq!(store.package(&[3; 16], database), Some(Some("p 1")));
            assert_eq!(store.package(&[1; 16], database), Some(None));
            assert_eq!(store.package(&[2; 16], database), None, "pruned: not a source of the jail");
            assert_eq!(store.package(&[3; 16], None), None, "answers hold for their dpkg database only");
            assert_eq!(store.whole.get().is_some(), !store.few_lookups, "an incremental review reads no whole store");
        }
        fs::write(&file, &bytes[..bytes.len() - 1]).expect("tear the store");
        assert!(LazyStore::for_few_lookups(&file).hash(&[1; 16], &print).is_none(), "a torn store is no store");
        assert!(LazyStore::new(&file).hash(&[1; 16], &print).is_none(), "a torn store is no store");
    }
}
