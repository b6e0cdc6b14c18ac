//! The per-host cache in the state directory: source hashes by stat print, the fresh key and
//! the memo of the lock file's lines, so that a review hashes and reads only what moved.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use crate::host::StatPrint;

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
pub(super) const RECENT_LIMIT: usize = 512;

/// A host source, by the first 16 bytes of the blake3 of its path: fixed-size, cheap to compare.
pub(super) type SourceKey = [u8; 16];

pub(super) fn source_key(source: &Path) -> SourceKey {
    let hash = blake3::hash(source.as_os_str().as_encoded_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&hash.as_bytes()[..16]);
    key
}

/// A host source's content hash, valid while its stat print is `print`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SourceHash {
    pub(super) key: SourceKey,
    pub(super) print: StatPrint,
    pub(super) hash: [u8; 32],
}

/// What jailprov knows of the lock file's lines without reading them: while the lock file has
/// `lock_stat`, its entry line number i is exactly what [`entry_of`](super::entries::entry_of)
/// gives for a desired node of digest `lines[i].digest` (see
/// [`DesiredLines::digests`](super::lines::DesiredLines::digests)), with the package a full review
/// would give it, written as [`write_lock_text`](super::format::write_lock_text) writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Memo {
    pub(super) lock_stat: StatPrint,
    pub(super) lines: Vec<MemoLine>,
}

/// One entry line of the lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MemoLine {
    pub(super) digest: u128,
    /// The length of its JSON: where every line is, without reading the file.
    pub(super) length: u32,
    /// [`source_tag`] of its source: which lines may share a source with a changed one.
    pub(super) source_tag: u32,
}

/// 32 bits of blake3 of an entry's source (0: none). Lines of equal tags are read to compare
/// their sources; a tag alone decides nothing.
pub(super) fn source_tag(source: Option<&str>) -> u32 {
    source.map_or(0, |source| {
        let hash = blake3::hash(source.as_bytes());
        let mut tag = [0u8; 4];
        tag.copy_from_slice(&hash.as_bytes()[..4]);
        u32::from_le_bytes(tag).max(1)
    })
}

/// The small per-lock file, as used.
#[derive(Debug, Default)]
pub(super) struct Cache {
    /// The key of the last (desired tree, lock file, Jailfile, os-release) found fresh.
    pub(super) fresh: Option<[u8; 32]>,
    pub(super) memo: Option<Memo>,
    /// Source hashes learned since the store was written, the latest last.
    pub(super) recent: Vec<SourceHash>,
    pub(super) glibc: Option<GlibcSeen>,
}

/// The glibc version last read from the jail's libc.so.6 (a 2 MB read and an ELF parse),
/// valid while its stat print stays the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct GlibcSeen {
    pub(super) libc: Vec<u8>,
    pub(super) print: StatPrint,
    pub(super) version: Option<String>,
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
    pub(super) fn decode(bytes: &[u8]) -> Option<Cache> {
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

    pub(super) fn encode(&self) -> Result<Vec<u8>> {
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

/// The dpkg database the package answers of a store hold for (see [`dpkg_database_print`](super::packages::dpkg_database_print)).
pub(super) type DatabasePrint = (StatPrint, StatPrint);

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
pub(super) struct SourceStore {
    bytes: Vec<u8>,
    files: std::ops::Range<usize>,
    packages: std::ops::Range<usize>,
    pub(super) database: Option<DatabasePrint>,
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

    pub(super) fn files(&self) -> impl Iterator<Item = SourceHash> + '_ {
        self.file_records().iter().filter_map(decode_file_record)
    }

    pub(super) fn packages(&self) -> impl Iterator<Item = (SourceKey, Option<String>)> + '_ {
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
    pub(super) fn encode(
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
pub(super) struct LazyStore<'p> {
    path: &'p Path,
    /// Lookups read the file rather than the whole store until the whole is read anyway.
    pub(super) few_lookups: bool,
    file: std::sync::OnceLock<Option<StoreFile>>,
    pub(super) whole: std::sync::OnceLock<SourceStore>,
}

impl<'p> LazyStore<'p> {
    /// For a full review: every source is looked up.
    pub(super) fn new(path: &'p Path) -> LazyStore<'p> {
        LazyStore { path, few_lookups: false, file: std::sync::OnceLock::new(), whole: std::sync::OnceLock::new() }
    }

    /// For an incremental review: a few sources are looked up.
    pub(super) fn for_few_lookups(path: &'p Path) -> LazyStore<'p> {
        LazyStore { few_lookups: true, ..LazyStore::new(path) }
    }

    pub(super) fn whole(&self) -> &SourceStore {
        self.whole.get_or_init(|| {
            let _t = crate::timings::phase("lock: store load");
            load_store(self.path)
        })
    }

    fn file(&self) -> Option<&StoreFile> {
        self.file.get_or_init(|| StoreFile::open(self.path)).as_ref()
    }

    pub(super) fn hash(&self, key: &SourceKey, print: &StatPrint) -> Option<[u8; 32]> {
        if self.few_lookups && self.whole.get().is_none() {
            let record = decode_file_record(&self.file()?.find::<FILE_RECORD>(StoreSection::Files, key)?)?;
            return (record.print == *print).then_some(record.hash);
        }
        self.whole().hash(key, print)
    }

    pub(super) fn package(&self, key: &SourceKey, database: Option<DatabasePrint>) -> Option<Option<&str>> {
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
pub(super) struct KnownHashes<'a> {
    recent: HashMap<SourceKey, (StatPrint, [u8; 32])>,
    store: &'a LazyStore<'a>,
}

impl<'a> KnownHashes<'a> {
    pub(super) fn new(recent: &[SourceHash], store: &'a LazyStore<'a>) -> KnownHashes<'a> {
        let recent = recent.iter().map(|known| (known.key, (known.print, known.hash))).collect();
        KnownHashes { recent, store }
    }

    pub(super) fn get(&self, key: &SourceKey, print: &StatPrint) -> Option<[u8; 32]> {
        match self.recent.get(key) {
            Some((known, hash)) if known == print => Some(*hash),
            // A recent record is newer than the store's of the same source, whose stat print
            // (an older inode change time) cannot be the file's again: the store cannot help.
            Some(_) => None,
            None => self.store.hash(key, print),
        }
    }
}

pub(super) fn cache_path(state_dir: &Path, lock: &Path) -> PathBuf {
    let absolute = std::path::absolute(lock).unwrap_or_else(|_| lock.to_path_buf());
    let text = absolute.to_string_lossy();
    let readable: String =
        text.trim_matches('/').chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' }).collect();
    let key = blake3::hash(text.as_bytes()).to_hex();
    state_dir.join("lock-cache").join(format!("{readable}-{}.cache", &key[..16]))
}

/// The store beside the small cache file.
pub(super) fn store_path(cache_file: &Path) -> PathBuf {
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
    crate::beside::trusted_owner(&metadata).then_some(file)
}

/// The small cache file, or an empty one when it is missing, untrusted or not this version.
pub(super) fn load_cache(path: &Path) -> Cache {
    read_trusted(path).and_then(|bytes| Cache::decode(&bytes)).unwrap_or_default()
}

/// The store, or an empty one.
pub(super) fn load_store(path: &Path) -> SourceStore {
    read_trusted(path).and_then(SourceStore::decode).unwrap_or_default()
}

/// Only the "fresh" key of a trusted cache (postcard keeps fields in order: the version and the
/// key lead), so the no-op path does not decode the rest.
pub(super) fn peek_fresh(path: &Path) -> Option<[u8; 32]> {
    let mut head = Vec::with_capacity(64);
    open_trusted(path)?.take(64).read_to_end(&mut head).ok()?;
    let ((version, fresh), _) = postcard::take_from_bytes::<(u32, Option<[u8; 32]>)>(&head).ok()?;
    (version == CACHE_VERSION).then_some(fresh).flatten()
}

/// Saves a cache file; failing only warns (a plan by a user who cannot write the state
/// directory still works, just slower next time). Without `may_create_state_dir` (plan),
/// nothing is saved when the state directory does not exist.
pub(super) fn save_cache_file(path: &Path, bytes: Result<Vec<u8>>, may_create_state_dir: bool) {
    let result = (|| -> Result<()> {
        let dir = path.parent().context("the cache path has a parent")?;
        if let Some(state_dir) = dir.parent() {
            if !may_create_state_dir && !state_dir.exists() {
                // plan: a missing state directory stays missing; the cache is only an accelerator.
                return Ok(());
            }
            crate::beside::check_state_dir(state_dir)?;
        }
        let bytes = bytes?;
        crate::beside::check_state_dir(dir)?;
        if !dir.exists() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        crate::beside::write_atomically(path, &bytes, 0o600, false)
    })();
    if let Err(error) = result {
        // The cache is two files saved one after the other, both failing for the same reason
        // (an unwritable state directory): one warning per run says it.
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            eprintln!("warning: cannot save the lock's hash cache ({error:#}); the next plan hashes host files again");
        });
    }
}

/// Writes what `fill` writes into a fresh temporary file beside `path` (given with its path),
/// synced, then renamed over `path`: never a half-written lock. An error of `fill` is returned as
/// it is, the temporary file removed. Returns the file written, now at `path`.
pub(super) fn write_atomically_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&fs::File, &Path) -> Result<()>,
) -> Result<fs::File> {
    // A random name, O_EXCL | O_NOFOLLOW: a link planted beside the lock is never written through.
    let (file, temporary) = crate::beside::create_temp_beside(path, mode)?;
    // Synced before the rename: after a crash, the old file or the new one, whole. (The cache is
    // written unsynced by crate::beside::write_atomically: every reader checks it, so a torn
    // cache costs a full review, never a wrong lock.)
    let written = fill(&file, &temporary)
        .and_then(|()| file.sync_all().with_context(|| format!("cannot write {}", temporary.display())));
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        return Err(error);
    }
    crate::beside::rename_into_place(&temporary, path)?;
    Ok(file)
}
