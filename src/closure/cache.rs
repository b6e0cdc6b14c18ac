//! What the closure learned of each host ELF file, remembered between runs by file identity.
//!
//! Reading every object's headers, dynamic symbols and versions, and resolving every import, is
//! most of what `closure` costs; none of it changes while the files stay the same. So the
//! results are kept in `<state dir>/closure-cache/objects.bin`, keyed by each file's identity
//! ([`FileIdentity`]: device, inode, size, mtime and ctime in nanoseconds) and jailprov's
//! version:
//! - per file: its ELF facts (interpreter, DT_NEEDED, soname, RPATH/RUNPATH, flags) and the
//!   run-time needs its imports trigger;
//! - per program load: the symbol and version verdict, keyed by the program, its Jailfile
//!   flag and every mapped object (path, identity, how it was found, its names and edges).
//!
//! Any file replaced (a new inode, or a new ctime: a write or a rename changes it) misses, and
//! is read again. A cache that is truncated, garbage, of another version or too large is
//! ignored and rewritten; one jailprov cannot write (a read-only state directory, no root) is
//! only read. The cache is written only into a state directory that exists, and only when the
//! run learned something.
#![allow(clippy::disallowed_methods)] // writes only in the state directory, never in a jail

use std::fs::{self, Metadata};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use super::elf::ElfInfo;
use super::loader::LoadResult;
use super::runtime::{Import, Need};
use super::symbols::Verdict;
use crate::host::StatPrint;

/// Set (to anything but "" or "0") to neither read nor write the cache: a cold run.
pub const NO_CACHE_ENV: &str = "JAILPROV_NO_CACHE";

/// The directory of the cache inside the state directory.
const CACHE_DIR: &str = "closure-cache";
const CACHE_FILE: &str = "objects.bin";
const MAGIC: &[u8; 8] = b"JPCLOSC\0";
/// Bumped whenever what is stored, or what any stored fact means, changes.
const FORMAT: u32 = 1;
/// The largest cache read: /usr/bin's 528 programs and their libraries take about 200 KiB.
const READ_LIMIT: u64 = 64 * 1024 * 1024;
/// Past this many entries in all, what this run neither used nor learned is forgotten: every
/// run reads the whole file, so it must not grow with each `[[files]]` tree or test fixture
/// ever seen (`/usr/bin`'s closure takes about 2,000 entries).
const ENTRY_LIMIT: usize = 30_000;

/// A file as it is on disk now: equal identities mean the file was not replaced nor written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileIdentity {
    pub dev: u64,
    pub print: StatPrint,
}

impl FileIdentity {
    pub fn of(metadata: &Metadata) -> FileIdentity {
        FileIdentity { dev: metadata.dev(), print: StatPrint::of(metadata) }
    }

    /// Device and inode: the same file reached by another path.
    pub fn file(&self) -> (u64, u64) {
        (self.dev, self.print.ino)
    }
}

/// The run-time needs an object's imports trigger, as stored.
type StoredImports = Vec<(Need, String)>;

/// The key of one program load's verdict (128 bits of blake3).
pub type VerdictKey = [u8; 16];

/// The file's contents (after [`MAGIC`] and a blake3 of the rest, which catches garbage
/// that would still decode).
#[derive(Default, Serialize, Deserialize)]
struct Stored {
    /// `FORMAT` and jailprov's version: another build's facts are not trusted.
    version: String,
    elf: Vec<(FileIdentity, ElfInfo)>,
    imports: Vec<(FileIdentity, StoredImports)>,
    /// Each verdict as `closure --format json` shows it: its types are shaped for JSON
    /// (internally tagged, fields left out when empty), which postcard cannot read back.
    verdicts: Vec<(VerdictKey, String, StoredImports)>,
}

/// What this run learned, to be saved beside what it found.
#[derive(Default)]
struct Learned {
    elf: Vec<(FileIdentity, Arc<ElfInfo>)>,
    imports: Vec<(FileIdentity, Vec<Import>)>,
    verdicts: Vec<(VerdictKey, Verdict, Vec<Import>)>,
}

/// The remembered facts of one run: read once at its start, looked up without locking,
/// added to while it runs, saved at its end.
#[derive(Default)]
pub struct ClosureCache {
    /// Where it is saved; None: nothing is written.
    file: Option<PathBuf>,
    elf: HashMap<FileIdentity, Remembered<Arc<ElfInfo>>>,
    imports: HashMap<FileIdentity, Remembered<Vec<Import>>>,
    verdicts: HashMap<VerdictKey, Remembered<(Verdict, Vec<Import>)>>,
    learned: Mutex<Learned>,
}

/// A fact read from the file, and whether this run asked for it (kept past [`ENTRY_LIMIT`]).
struct Remembered<T> {
    value: T,
    used: AtomicBool,
}

impl<T: Clone> Remembered<T> {
    fn new(value: T) -> Remembered<T> {
        Remembered { value, used: AtomicBool::new(false) }
    }

    fn take_copy(&self) -> T {
        self.used.store(true, Ordering::Relaxed);
        self.value.clone()
    }

    fn kept(&self, keep_all: bool) -> bool {
        keep_all || self.used.load(Ordering::Relaxed)
    }
}

fn version_tag() -> String {
    format!("{FORMAT}/{}", env!("CARGO_PKG_VERSION"))
}

fn imports_stored(imports: &[Import]) -> StoredImports {
    imports.iter().map(|import| (import.need, import.symbol.to_string())).collect()
}

fn verdict_stored(verdict: &Verdict) -> String {
    serde_json::to_string(verdict).expect("a verdict always serializes")
}

fn imports_restored(stored: StoredImports) -> Vec<Import> {
    stored.into_iter().map(|(need, symbol)| Import { need, symbol: symbol.into() }).collect()
}

/// Whether `JAILPROV_NO_CACHE` asks for a cold run.
pub fn switched_off() -> bool {
    std::env::var_os(NO_CACHE_ENV).is_some_and(|value| !value.is_empty() && value != "0")
}

/// `<state_dir>/closure-cache` when the closure caches may live there (it may not exist yet):
/// the state directory exists and is private, the cache directory is private if present, and
/// `JAILPROV_NO_CACHE` is not set. The object cache and the closure memo share it.
pub fn cache_dir(state_dir: &Path) -> Option<PathBuf> {
    if switched_off() || !state_dir.is_dir() || crate::beside::check_state_dir(state_dir).is_err() {
        return None;
    }
    let dir = state_dir.join(CACHE_DIR);
    crate::beside::check_state_dir(&dir).is_ok().then_some(dir)
}

impl ClosureCache {
    /// The cache of the state directory `state_dir`: empty (and never saved) when the directory
    /// does not exist, is not private ([`crate::beside::check_state_dir`]) or `JAILPROV_NO_CACHE`
    /// is set; read-only when jailprov may not write there.
    pub fn in_state_dir(state_dir: &Path) -> ClosureCache {
        let Some(dir) = cache_dir(state_dir) else { return ClosureCache::default() };
        let file = dir.join(CACHE_FILE);
        let mut cache = ClosureCache::read(&file).unwrap_or_default();
        let writable = nix::unistd::access(state_dir, nix::unistd::AccessFlags::W_OK).is_ok();
        cache.file = writable.then_some(file);
        cache
    }

    /// The cache in `file`; Ok(empty) when it is missing, Err when it cannot be used (the
    /// caller starts afresh: a bad cache only costs a cold run).
    fn read(file: &Path) -> Result<ClosureCache> {
        let Some((handle, _)) = crate::beside::open_regular_nofollow(file, "the closure cache", READ_LIMIT)? else {
            return Ok(ClosureCache::default());
        };
        let bytes = crate::beside::read_bounded(&handle, file, "the closure cache", READ_LIMIT)?;
        ClosureCache::decode(&bytes)
    }

    /// The cache held in `bytes`, or an error saying why it is not one of this jailprov.
    pub fn decode(bytes: &[u8]) -> Result<ClosureCache> {
        let Some((header, payload)) = bytes.split_at_checked(MAGIC.len() + 32) else { bail!("truncated header") };
        if &header[..MAGIC.len()] != MAGIC {
            bail!("not a closure cache");
        }
        if header[MAGIC.len()..] != *blake3::hash(payload).as_bytes() {
            bail!("checksum mismatch");
        }
        let stored: Stored = postcard::from_bytes(payload).context("undecodable")?;
        if stored.version != version_tag() {
            bail!("written by another jailprov ({})", stored.version);
        }
        Ok(ClosureCache {
            file: None,
            elf: stored.elf.into_iter().map(|(identity, info)| (identity, Remembered::new(Arc::new(info)))).collect(),
            imports: stored
                .imports
                .into_iter()
                .map(|(identity, stored)| (identity, Remembered::new(imports_restored(stored))))
                .collect(),
            verdicts: stored
                .verdicts
                .into_iter()
                .map(|(key, verdict, stored)| {
                    let verdict: Verdict = serde_json::from_str(&verdict).context("a verdict")?;
                    Ok((key, Remembered::new((verdict, imports_restored(stored)))))
                })
                .collect::<Result<_>>()?,
            learned: Mutex::default(),
        })
    }

    /// Everything remembered and learned, as the file holds it.
    pub fn encode(&self) -> Vec<u8> {
        let learned = self.lock_learned();
        let fresh = learned.elf.len() + learned.imports.len() + learned.verdicts.len();
        // Over the limit, only what this run used or learned is kept: a host upgraded many
        // times over, or many jails' plugin trees, leave identities nothing asks for again.
        let keep_all = self.elf.len() + self.imports.len() + self.verdicts.len() + fresh <= ENTRY_LIMIT;
        let stored = Stored {
            version: version_tag(),
            elf: self
                .elf
                .iter()
                .filter(|(_, info)| info.kept(keep_all))
                .map(|(identity, info)| (*identity, (*info.value).clone()))
                .chain(learned.elf.iter().map(|(identity, info)| (*identity, (**info).clone())))
                .collect(),
            imports: self
                .imports
                .iter()
                .filter(|(_, imports)| imports.kept(keep_all))
                .map(|(identity, imports)| (*identity, imports_stored(&imports.value)))
                .chain(learned.imports.iter().map(|(identity, imports)| (*identity, imports_stored(imports))))
                .collect(),
            verdicts: self
                .verdicts
                .iter()
                .filter(|(_, verdict)| verdict.kept(keep_all))
                .map(|(key, remembered)| {
                    let (verdict, imports) = &remembered.value;
                    (*key, verdict_stored(verdict), imports_stored(imports))
                })
                .chain(
                    learned
                        .verdicts
                        .iter()
                        .map(|(key, verdict, imports)| (*key, verdict_stored(verdict), imports_stored(imports))),
                )
                .collect(),
        };
        let payload = postcard::to_allocvec(&stored).expect("the cache's types always serialize");
        let mut bytes = Vec::with_capacity(MAGIC.len() + 32 + payload.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(blake3::hash(&payload).as_bytes());
        bytes.extend_from_slice(&payload);
        bytes
    }

    /// Writes the cache when this run learned anything and may write; a failure is a warning
    /// (the next run is only slower).
    pub fn save(&self) {
        let Some(file) = &self.file else { return };
        {
            let learned = self.lock_learned();
            if learned.elf.is_empty() && learned.imports.is_empty() && learned.verdicts.is_empty() {
                return;
            }
        }
        if let Err(error) = self.write(file) {
            eprintln!("warning: cannot save the closure cache ({error:#}); the next closure reads every file again");
        }
    }

    fn write(&self, file: &Path) -> Result<()> {
        let dir = file.parent().unwrap_or(Path::new("/"));
        if !dir.exists() {
            fs::create_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot restrict {}", dir.display()))?;
        }
        crate::beside::check_state_dir(dir)?;
        crate::beside::write_atomically(file, &self.encode(), 0o600, false)
    }

    fn lock_learned(&self) -> std::sync::MutexGuard<'_, Learned> {
        self.learned.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Nothing remembered: lookups are skipped (and so the stat they need).
    pub fn is_empty(&self) -> bool {
        self.elf.is_empty() && self.imports.is_empty() && self.verdicts.is_empty()
    }

    /// The ELF facts of the file of this identity, if remembered.
    pub fn elf(&self, identity: &FileIdentity) -> Option<Arc<ElfInfo>> {
        self.elf.get(identity).map(Remembered::take_copy)
    }

    pub fn learn_elf(&self, identity: FileIdentity, info: &Arc<ElfInfo>) {
        if self.file.is_some() {
            self.lock_learned().elf.push((identity, info.clone()));
        }
    }

    /// The run-time needs the imports of the file of this identity trigger, if remembered.
    pub fn imports(&self, identity: &FileIdentity) -> Option<Vec<Import>> {
        self.imports.get(identity).map(Remembered::take_copy)
    }

    pub fn learn_imports(&self, identity: FileIdentity, imports: &[Import]) {
        if self.file.is_some() {
            self.lock_learned().imports.push((identity, imports.to_vec()));
        }
    }

    /// A program load's verdict and its own imports, if remembered.
    pub fn verdict(&self, key: &VerdictKey) -> Option<(Verdict, Vec<Import>)> {
        self.verdicts.get(key).map(Remembered::take_copy)
    }

    pub fn learn_verdict(&self, key: VerdictKey, verdict: &Verdict, imports: &[Import]) {
        if self.file.is_some() {
            self.lock_learned().verdicts.push((key, verdict.clone(), imports.to_vec()));
        }
    }
}

/// The key of a program load's verdict: everything the verdict depends on. The verdict reads
/// only the mapped objects (their symbols, versions and relocations: their identities), in the
/// order and with the names and edges the load gives them, and the Jailfile's
/// `allow_unresolved`. None when an object's identity is unknown (then it is not remembered).
pub fn verdict_key(
    program: &Path,
    allow_unresolved: bool,
    load: &LoadResult,
    identity_of: impl Fn(&Path) -> Option<FileIdentity>,
) -> Option<VerdictKey> {
    let mut hasher = blake3::Hasher::new();
    let mut field = |bytes: &[u8]| {
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(version_tag().as_bytes());
    field(program.as_os_str().as_encoded_bytes());
    field(&[u8::from(allow_unresolved), u8::from(load.missing.is_empty())]);
    for object in &load.mapped {
        let identity = identity_of(&object.path)?;
        field(object.path.as_os_str().as_encoded_bytes());
        field(&postcard::to_allocvec(&identity).ok()?);
        field(object.found_by.to_string().as_bytes());
        field(&postcard::to_allocvec(&object.dependencies).ok()?);
        for name in &object.names {
            field(name.as_bytes());
        }
        field(b"\0");
    }
    for object in &load.objects {
        field(object.name.as_bytes());
    }
    let mut key = [0u8; 16];
    key.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    Some(key)
}

#[cfg(test)]
mod tests;
