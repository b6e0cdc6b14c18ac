//! What jailprov manages in a jail, recorded outside the jail where its processes cannot forge it.
//!
//! One file per jail root under the state directory (default /var/lib/jailprov), written
//! atomically, next to a lock file that serialises applies on that jail. The state directory is
//! outside every jail, so this module writes with plain path-based calls.
//!
//! The file is binary (a magic line, then postcard): every plan reads it whole, and for a jail of
//! 50,000 files JSON made a 13 MB file that took longer to parse than the jail took to stat.
//! Applies do not rewrite it: they append what they do to a journal beside it (journal.rs),
//! folded into a new snapshot once it passes a quarter of its size.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read as _;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::desired::{DesiredKind, StatPrint};
use crate::tree::JailPath;

pub mod applied;
pub mod content_hash;
pub mod journal;
pub mod lock;

pub use journal::{Journal, Step};

/// Where state lives unless `--state-dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/jailprov";

/// 3 added the content hash of each managed file (`Managed::hash`), 4 the persistent mounts
/// (`State::mounts`), 5 the snapshot's generation (which journal extends it) before the record;
/// formats 2 and 4 are still read, and rewritten as 5 by the next apply.
const FORMAT_VERSION: u32 = 5;

/// The first bytes of every state file, so that no other file is ever taken for one.
const MAGIC: &[u8] = b"jailprov state\n";

/// The first bytes of an intent file (see [`StateStore::begin`]), and its format.
const INTENT_MAGIC: &[u8] = b"jailprov apply intent\n";
const INTENT_VERSION: u32 = 1;

/// What a managed path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ManagedKind {
    File,
    Dir,
    Symlink,
    Device,
}

impl ManagedKind {
    /// The kind of a desired node (inline content is a file like any other).
    pub fn of(kind: &DesiredKind) -> ManagedKind {
        match kind {
            DesiredKind::File { .. } | DesiredKind::Content { .. } => ManagedKind::File,
            DesiredKind::Dir => ManagedKind::Dir,
            DesiredKind::Symlink { .. } => ManagedKind::Symlink,
            DesiredKind::Device { .. } => ManagedKind::Device,
        }
    }
}

/// One path jailprov manages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Managed {
    pub kind: ManagedKind,
    /// jailprov created it (and so may delete it); false for directories that were already
    /// there, which jailprov only keeps in shape.
    pub created: bool,
    /// The jail file as apply left it, for files: an unchanged stat means unchanged content.
    pub jail: Option<StatPrint>,
    /// The host source as apply copied it.
    pub source: Option<StatPrint>,
    /// blake3 of the jail file's whole content as apply left it (files only): what
    /// `jailprov check` verifies every byte against. None in records written before format 3.
    pub hash: Option<[u8; 32]>,
}

/// The record of one jail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub format_version: u32,
    pub root: PathBuf,
    #[serde(deserialize_with = "sorted_map")]
    pub entries: BTreeMap<JailPath, Managed>,
    /// Paths an apply was about to create when it stopped: they are jailprov's, even without a
    /// full record (a crash between creating a file and recording it must not orphan it).
    pub pending: BTreeSet<JailPath>,
    /// An apply started and did not finish: the next one sweeps temporary files.
    pub interrupted: bool,
    /// Targets of the persistent mounts jailprov made on the host (the only ones it unmounts).
    pub mounts: BTreeSet<JailPath>,
}

impl State {
    pub fn empty(root: &Path) -> State {
        State { format_version: FORMAT_VERSION, root: root.to_path_buf(), ..State::default() }
    }

    /// Whether jailprov created this path (so it may replace or delete it).
    pub fn created(&self, path: &JailPath) -> bool {
        self.pending.contains(path) || self.entries.get(path).is_some_and(|managed| managed.created)
    }
}

/// A map read as the sorted list it was written as, then built in one pass: inserting 50,000
/// entries one by one leaves every B-tree node half empty (twice the memory, and fresh memory
/// is what a plan of a big jail spends most on).
fn sorted_map<'de, D, K, V>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    K: Deserialize<'de> + Ord,
    V: Deserialize<'de>,
{
    struct Entries<K, V>(std::marker::PhantomData<(K, V)>);
    impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> serde::de::Visitor<'de> for Entries<K, V> {
        type Value = BTreeMap<K, V>;
        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("a map")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let mut entries = Vec::with_capacity(access.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(entry) = access.next_entry()? {
                entries.push(entry);
            }
            // Already sorted (a BTreeMap wrote it): the sort inside from_iter is one pass.
            Ok(entries.into_iter().collect())
        }
    }
    deserializer.deserialize_map(Entries(std::marker::PhantomData))
}

/// The state file and lock of one jail root.
#[derive(Debug, Clone)]
pub struct StateStore {
    pub state_file: PathBuf,
    pub lock_file: PathBuf,
    /// The memo of the last no-op plan (src/plan/memo.rs): named here, beside the record it is
    /// keyed on, but written, read and forgotten by the plan alone.
    pub memo_file: PathBuf,
    /// What the last full plan computed from the host, for the apply after it
    /// (src/plan/reuse.rs): like the memo, plan's alone.
    pub plan_cache_file: PathBuf,
    /// Written by applies before format 5: the paths one was about to create. Still read (an
    /// older jailprov may have been interrupted), removed once they are in the record.
    pub intent_file: PathBuf,
    /// What applies did since the snapshot in `state_file` (journal.rs).
    pub journal_file: PathBuf,
    /// Which Jailfile was last applied to the root, and when ([`Origin`]).
    pub origin_file: PathBuf,
}

/// Where a jail's record came from: the Jailfile last applied to its root and when. A small JSON
/// file beside the record (not a field of it), so records of every format stay readable as they
/// are; a jail last applied before jailprov wrote it has none (`jailprov status` says so). Read
/// by root (`status`), and all of them by Jailfile (the other-root warning, applied.rs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The Jailfile's absolute path (symlinks resolved where it exists: one name however spelled).
    pub jailfile: PathBuf,
    /// The jail root it was applied to (the record's file name carries only a hash of it).
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// When the apply finished, in seconds since the Unix epoch.
    pub applied_at: u64,
}

/// The Jailfile as one name whichever way it was spelled (`-f ./x`, `-f /abs/x`, a symlink).
pub fn jailfile_name(jailfile: &Path) -> PathBuf {
    fs::canonicalize(jailfile).or_else(|_| std::path::absolute(jailfile)).unwrap_or_else(|_| jailfile.to_owned())
}

/// The origin in `path`, or None when there is none; bounded, and only if this user alone could
/// have written it.
pub fn read_origin(path: &Path) -> Result<Option<Origin>> {
    let Some((file, _)) = crate::beside::open_regular_nofollow(path, "the origin file", MAX_ORIGIN_SIZE)? else {
        return Ok(None);
    };
    check_private(path, &file.metadata().with_context(|| format!("cannot inspect {}", path.display()))?)?;
    let bytes = crate::beside::read_bounded(&file, path, "the origin file", MAX_ORIGIN_SIZE)?;
    serde_json::from_slice(&bytes).map(Some).with_context(|| {
        format!("{} is not a jailprov origin file; apply the jail again to rewrite it", path.display())
    })
}

/// The largest origin file read (a path and a number).
const MAX_ORIGIN_SIZE: u64 = 64 * 1024;

impl StateStore {
    /// The store of `root` under `state_dir`: the file name spells the root path (so an operator
    /// can find it) and carries a hash of it (so no two roots share one).
    pub fn for_root(state_dir: &Path, root: &Path) -> StateStore {
        let text = root.to_string_lossy();
        let readable: String = text
            .trim_matches('/')
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' })
            .collect();
        let name = format!("{readable}-{:016x}", fnv1a(text.as_bytes()));
        StateStore {
            state_file: state_dir.join(format!("{name}.state")),
            lock_file: state_dir.join(format!("{name}.lock")),
            memo_file: state_dir.join(format!("{name}.memo")),
            plan_cache_file: state_dir.join(format!("{name}.plan-cache")),
            intent_file: state_dir.join(format!("{name}.intent")),
            journal_file: state_dir.join(format!("{name}.journal")),
            origin_file: state_dir.join(format!("{name}.origin")),
        }
    }

    /// Records that `jailfile` was applied to `root` (this store's root) just now.
    pub fn write_origin(&self, jailfile: &Path, root: &Path) -> Result<()> {
        let applied_at =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs());
        let origin = Origin { jailfile: jailfile_name(jailfile), root: Some(root.to_owned()), applied_at };
        let text = serde_json::to_vec(&origin).context("serializing the origin")?;
        self.write_private(&self.origin_file, &text)
    }

    /// The recorded origin, or None when no apply of this jailprov has written one.
    pub fn load_origin(&self) -> Result<Option<Origin>> {
        read_origin(&self.origin_file)
    }

    /// The recorded state (the snapshot and its journal), or an empty one when this root was
    /// never applied; an apply that did not finish marks it interrupted (and, for an apply of an
    /// older jailprov, its intent's paths pending).
    pub fn load(&self, root: &Path) -> Result<State> {
        let (mut state, generation) = self.load_snapshot(root)?;
        if let Some(bytes) = read_private(&self.journal_file, "the journal")? {
            let _t = crate::timings::phase("state: journal replay");
            journal::replay(&bytes, generation, &mut state, &self.journal_file)?;
        }
        if let Some(pending) = self.load_intent()? {
            state.interrupted = true;
            state.pending.extend(pending);
        }
        Ok(state)
    }

    /// The snapshot and its generation (0 for a format that had none, or no snapshot at all).
    fn load_snapshot(&self, root: &Path) -> Result<(State, u64)> {
        self.check_dir()?;
        let Some(bytes) = read_private(&self.state_file, "the state file")? else {
            return Ok((State::empty(root), 0));
        };
        let corrupt = || format!("the state file {} is corrupt", self.state_file.display());
        let body = bytes
            .strip_prefix(MAGIC)
            .with_context(|| format!("{} is not a jailprov state file", self.state_file.display()))?;
        // The version leads the body: read it alone first, so that a newer format is named as
        // such rather than reported as corrupt.
        let (format_version, rest) = postcard::take_from_bytes::<u32>(body).with_context(corrupt)?;
        let (state, generation) = match format_version {
            2 => (format2::upgrade(postcard::from_bytes(body).with_context(corrupt)?), 0),
            4 => {
                let mut state: State = postcard::from_bytes(body).with_context(corrupt)?;
                state.format_version = FORMAT_VERSION;
                (state, 0)
            }
            FORMAT_VERSION => {
                let (generation, record) = rest.split_first_chunk::<8>().with_context(corrupt)?;
                (postcard::from_bytes(record).with_context(corrupt)?, u64::from_le_bytes(*generation))
            }
            _ => bail!(
                "{} has state format {format_version} but this jailprov reads format {FORMAT_VERSION}",
                self.state_file.display()
            ),
        };
        if state.root != root {
            bail!("{} records the root {}, not {}", self.state_file.display(), state.root.display(), root.display());
        }
        Ok((state, generation))
    }

    /// The journal, ready for an apply to append to: the snapshot is written first when there is
    /// none yet or it has an older format (the upgrade), the journal started when it does not
    /// extend this snapshot, and a torn tail cut off. `state` is the record as loaded.
    pub fn journal(&self, state: &State) -> Result<Journal> {
        let _t = crate::timings::phase("state: journal open");
        let generation = match self.snapshot_generation()? {
            Some(generation) => generation,
            None => self.write_snapshot(state)?,
        };
        // `state` has these steps already (loaded under the same lock): only their extent is needed.
        let intact = match read_private(&self.journal_file, "the journal")? {
            Some(bytes) => journal::intact_steps(&bytes, generation, &self.journal_file, drop)?,
            None => 0,
        };
        if intact == 0 {
            self.write_private(&self.journal_file, &journal::header(generation))?;
            crate::kill_point::passed();
        }
        let snapshot_len = fs::symlink_metadata(&self.state_file)
            .with_context(|| format!("cannot inspect {}", self.state_file.display()))?
            .len();
        Journal::open(&self.journal_file, intact.max(journal::HEADER_LEN as u64), snapshot_len)
    }

    /// The generation of a format 5 snapshot, read from its first bytes; None when there is
    /// no snapshot or an older one.
    fn snapshot_generation(&self) -> Result<Option<u64>> {
        let Some((file, _)) =
            crate::beside::open_regular_nofollow(&self.state_file, "the state file", MAX_RECORD_SIZE)?
        else {
            return Ok(None);
        };
        let mut head = Vec::with_capacity(64);
        std::io::Read::take(&file, (MAGIC.len() + 5 + 8) as u64)
            .read_to_end(&mut head)
            .with_context(|| format!("cannot read {}", self.state_file.display()))?;
        let Some(body) = head.strip_prefix(MAGIC) else { return Ok(None) };
        match postcard::take_from_bytes::<u32>(body) {
            Ok((FORMAT_VERSION, rest)) => Ok(rest.first_chunk::<8>().map(|generation| u64::from_le_bytes(*generation))),
            _ => Ok(None),
        }
    }

    /// Writes `state` as a new snapshot (temporary file, fsync, rename) under a fresh
    /// generation, which no journal extends yet; returns it.
    fn write_snapshot(&self, state: &State) -> Result<u64> {
        let _t = crate::timings::phase("state: snapshot write");
        let generation = fresh_generation();
        let mut bytes = postcard::to_extend(&FORMAT_VERSION, MAGIC.to_vec()).context("serializing the state")?;
        bytes.extend_from_slice(&generation.to_le_bytes());
        // Every State in memory has the current format (older ones are upgraded as they load).
        let bytes = postcard::to_extend(state, bytes).context("serializing the state")?;
        self.write_private(&self.state_file, &bytes)?;
        crate::kill_point::passed();
        Ok(generation)
    }

    /// Ends an apply: `Finished` appended and synced, or, when the journal has grown past a
    /// quarter of the snapshot, everything folded into a new snapshot and a fresh journal.
    pub fn finish(&self, mut journal: Journal, state: &mut State) -> Result<()> {
        journal.record(state, Step::Finished)?;
        if !journal.wants_compaction() {
            return journal.commit();
        }
        drop(journal);
        let generation = self.write_snapshot(state)?;
        self.write_private(&self.journal_file, &journal::header(generation))?;
        crate::kill_point::passed();
        Ok(())
    }

    /// Removes the intent file an apply of jailprov before format 5 left (its paths are in the
    /// record by now).
    pub fn remove_legacy_intent(&self) -> Result<()> {
        match fs::remove_file(&self.intent_file) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(error).with_context(|| format!("cannot remove {}", self.intent_file.display()))
            }
            _ => Ok(()),
        }
    }

    fn load_intent(&self) -> Result<Option<BTreeSet<JailPath>>> {
        let Some(bytes) = read_private(&self.intent_file, "the intent file")? else { return Ok(None) };
        let body = bytes
            .strip_prefix(INTENT_MAGIC)
            .with_context(|| format!("{} is not a jailprov intent file", self.intent_file.display()))?;
        let (version, pending): (u32, BTreeSet<JailPath>) = postcard::from_bytes(body)
            .with_context(|| format!("the intent file {} is corrupt", self.intent_file.display()))?;
        if version != INTENT_VERSION {
            bail!(
                "{} has intent format {version}; this jailprov reads format {INTENT_VERSION}",
                self.intent_file.display()
            );
        }
        Ok(Some(pending))
    }

    /// Writes `bytes` to `path` in the state directory: temporary file, fsync, rename.
    /// The temporary file has a random name and is created `O_EXCL | O_NOFOLLOW`: a symlink
    /// planted at any name in the directory is never written through.
    fn write_private(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new("/"));
        create_private_dir(dir)?;
        crate::beside::write_atomically(path, bytes, 0o600, true)
    }

    /// The state directory, refused when another user owns it or can write it (checked before
    /// anything in it is read or written).
    fn check_dir(&self) -> Result<()> {
        let dir = self.state_file.parent().unwrap_or(Path::new("/"));
        crate::beside::check_state_dir(dir)?;
        crate::beside::check_state_dir(&dir.join("lock-cache"))
    }

    /// Removes the state of a destroyed jail: the snapshot last, so that a crash part-way
    /// leaves a record (perhaps without its journal: the paths are gone by then).
    pub fn remove(&self) -> Result<()> {
        self.remove_legacy_intent()?;
        for file in [&self.origin_file, &self.journal_file, &self.state_file] {
            match fs::remove_file(file) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    return Err(error).with_context(|| format!("cannot remove {}", file.display()))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Takes the jail's lock, waiting up to `timeout` for another jailprov to finish.
    pub fn lock(&self, timeout: Duration) -> Result<Flock<fs::File>> {
        let dir = self.lock_file.parent().unwrap_or(Path::new("/"));
        create_private_dir(dir)?;
        let started = Instant::now();
        // O_NOFOLLOW | O_NONBLOCK: never a planted symlink, never waiting on a FIFO.
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode_private()
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&self.lock_file)
            .with_context(|| format!("cannot open the lock {}", self.lock_file.display()))?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(lock),
                Err((returned, nix::errno::Errno::EWOULDBLOCK)) => {
                    if started.elapsed() >= timeout {
                        bail!(
                            "another jailprov holds the lock {} (waited {}s; see --lock-timeout)",
                            self.lock_file.display(),
                            timeout.as_secs()
                        );
                    }
                    file = returned;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err((_, errno)) => {
                    return Err(errno).with_context(|| format!("cannot lock {}", self.lock_file.display()))
                }
            }
        }
    }
}

/// The roots of every jail recorded in `state_dir`, sorted: each `*.state` file's root, read from
/// its first bytes (the whole record is loaded by [`StateStore::load`] when wanted). A file whose
/// name is not the one its root would get is not a record of this jailprov and is left out; one
/// that cannot be read is returned as its error (one bad record hides no other).
pub fn recorded_roots(state_dir: &Path) -> Result<Vec<Result<PathBuf>>> {
    let entries = match fs::read_dir(state_dir) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        result => result.with_context(|| format!("cannot list the state directory {}", state_dir.display()))?,
    };
    crate::beside::check_state_dir(state_dir)?;
    let mut roots = Vec::new();
    for entry in entries {
        let path = entry.with_context(|| format!("cannot list the state directory {}", state_dir.display()))?.path();
        if path.extension().is_none_or(|extension| extension != "state") {
            continue;
        }
        match recorded_root(&path) {
            Ok(root) if StateStore::for_root(state_dir, &root).state_file != path => {}
            found => roots.push(found),
        }
    }
    roots.sort_by(|left, right| match (left, right) {
        (Ok(left), Ok(right)) => left.cmp(right),
        (left, right) => left.is_ok().cmp(&right.is_ok()),
    });
    Ok(roots)
}

/// The root a state file records, from its first bytes (every format starts the record with its
/// format version and root; format 5 puts the generation before them).
fn recorded_root(state_file: &Path) -> Result<PathBuf> {
    let Some(bytes) = read_private(state_file, "the state file")? else {
        bail!("{} disappeared while it was read", state_file.display());
    };
    let corrupt = || format!("the state file {} is corrupt", state_file.display());
    let body =
        bytes.strip_prefix(MAGIC).with_context(|| format!("{} is not a jailprov state file", state_file.display()))?;
    let (format_version, rest) = postcard::take_from_bytes::<u32>(body).with_context(corrupt)?;
    let record = match format_version {
        FORMAT_VERSION => rest.get(8..).with_context(corrupt)?,
        _ => body,
    };
    let ((_, root), _) = postcard::take_from_bytes::<(u32, PathBuf)>(record).with_context(corrupt)?;
    Ok(root)
}

/// The record as format 2 wrote it (no content hashes): read and upgraded, so a jail applied by
/// an older jailprov keeps its record; its files get a hash the next time apply writes them.
mod format2 {
    use super::*;

    #[derive(Deserialize)]
    pub struct Managed {
        kind: ManagedKind,
        created: bool,
        jail: Option<StatPrint>,
        source: Option<StatPrint>,
    }

    #[derive(Deserialize)]
    pub struct State {
        _format_version: u32,
        root: PathBuf,
        entries: BTreeMap<JailPath, Managed>,
        pending: BTreeSet<JailPath>,
        interrupted: bool,
    }

    pub fn upgrade(old: State) -> super::State {
        let entries = old
            .entries
            .into_iter()
            .map(|(path, managed)| {
                let Managed { kind, created, jail, source } = managed;
                (path, super::Managed { kind, created, jail, source, hash: None })
            })
            .collect();
        super::State {
            format_version: FORMAT_VERSION,
            root: old.root,
            entries,
            pending: old.pending,
            interrupted: old.interrupted,
            mounts: BTreeSet::new(),
        }
    }
}

trait PrivateMode {
    fn mode_private(&mut self) -> &mut Self;
}

impl PrivateMode for fs::OpenOptions {
    fn mode_private(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

/// Creates the state directory (0700) when missing; an existing one must be private
/// ([`crate::beside::check_state_dir`]).
fn create_private_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", dir.display()))?;
    }
    crate::beside::check_state_dir(dir)
}

/// The largest state or intent file read: a jail of 50,000 paths records a few MiB, so this
/// leaves room for jails a hundred times larger while a record swapped for something huge is
/// refused rather than read into memory.
const MAX_RECORD_SIZE: u64 = 1024 * 1024 * 1024;

/// The bytes of a record in the state directory (a regular file, never through a symlink, at most
/// [`MAX_RECORD_SIZE`], owned by us and writable by no one else); None when there is none.
fn read_private(path: &Path, what: &str) -> Result<Option<Vec<u8>>> {
    let Some((file, _)) = crate::beside::open_regular_nofollow(path, what, MAX_RECORD_SIZE)? else { return Ok(None) };
    check_private(path, &file.metadata().with_context(|| format!("cannot inspect {}", path.display()))?)?;
    crate::beside::read_bounded(&file, path, what, MAX_RECORD_SIZE).map(Some)
}

/// A state file others can write could be forged into deleting host files: refuse it.
fn check_private(path: &Path, metadata: &fs::Metadata) -> Result<()> {
    let euid = nix::unistd::geteuid().as_raw();
    if metadata.uid() != euid || metadata.mode() & 0o022 != 0 {
        bail!(
            "the state file {} must be owned by uid {euid} and writable by no one else (it decides what jailprov deletes)",
            path.display()
        );
    }
    Ok(())
}

/// A generation no earlier snapshot of this jail had (random: a snapshot restored from a backup
/// must not be taken as extended by today's journal).
fn fresh_generation() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's random source.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    hasher.finish()
}

/// FNV-1a: a stable, dependency-free name hash (not a security boundary).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x100000001b3))
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests build their fixtures with plain fs calls
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn state_round_trips_and_refuses_another_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::for_root(dir.path(), Path::new("/srv/jails/a"));
        let mut state = State::empty(Path::new("/srv/jails/a"));
        state.entries.insert(
            JailPath::parse("/usr/bin/bash").expect("valid"),
            Managed { kind: ManagedKind::File, created: true, jail: None, source: None, hash: Some([7; 32]) },
        );
        store.write_snapshot(&state).expect("saves");
        assert_eq!(store.load(Path::new("/srv/jails/a")).expect("loads"), state);
        assert!(store.load(Path::new("/srv/jails/b")).is_err());
    }

    #[test]
    fn a_format_2_record_is_read_without_hashes() {
        #[derive(Serialize)]
        struct OldManaged {
            kind: ManagedKind,
            created: bool,
            jail: Option<StatPrint>,
            source: Option<StatPrint>,
        }
        #[derive(Serialize)]
        struct OldState {
            format_version: u32,
            root: PathBuf,
            entries: BTreeMap<JailPath, OldManaged>,
            pending: BTreeSet<JailPath>,
            interrupted: bool,
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::for_root(dir.path(), Path::new("/srv/jails/a"));
        let bash = JailPath::parse("/usr/bin/bash").expect("valid");
        let old = OldState {
            format_version: 2,
            root: PathBuf::from("/srv/jails/a"),
            entries: [(bash.clone(), OldManaged { kind: ManagedKind::File, created: true, jail: None, source: None })]
                .into(),
            pending: BTreeSet::new(),
            interrupted: false,
        };
        let bytes = postcard::to_extend(&old, MAGIC.to_vec()).expect("serializes");
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode_private()
            .open(&store.state_file)
            .expect("create");
        file.write_all(&bytes).expect("write");
        let state = store.load(Path::new("/srv/jails/a")).expect("a format 2 record still loads");
        assert_eq!(state.format_version, FORMAT_VERSION);
        assert_eq!(state.entries[&bash].hash, None, "format 2 had no hashes");
        assert!(state.entries[&bash].created);
    }

    fn file_entry() -> Managed {
        Managed { kind: ManagedKind::File, created: true, jail: None, source: None, hash: Some([7; 32]) }
    }

    fn write_raw(path: &Path, bytes: &[u8]) {
        let mut file =
            fs::OpenOptions::new().write(true).create(true).truncate(true).mode_private().open(path).expect("create");
        file.write_all(bytes).expect("write");
    }

    /// An apply appends to the journal instead of rewriting the record; the next load sees both.
    #[test]
    fn steps_in_the_journal_are_loaded_and_the_snapshot_is_not_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Path::new("/srv/jails/a");
        let store = StateStore::for_root(dir.path(), root);
        let mut state = State::empty(root);
        for index in 0..200 {
            state.entries.insert(JailPath::parse(&format!("/f{index:03}")).expect("valid"), file_entry());
        }
        store.write_snapshot(&state).expect("saves");
        let snapshot = fs::metadata(&store.state_file).expect("stat");
        let mut loaded = store.load(root).expect("loads");
        let mut journal = store.journal(&loaded).expect("opens");
        journal.record(&mut loaded, Step::Began).expect("records");
        journal.record(&mut loaded, Step::Forgotten(vec![JailPath::parse("/f000").expect("valid")])).expect("records");
        store.finish(journal, &mut loaded).expect("finishes");
        let again = fs::metadata(&store.state_file).expect("stat");
        assert_eq!((again.ino(), again.mtime_nsec()), (snapshot.ino(), snapshot.mtime_nsec()), "snapshot untouched");
        let journal = fs::metadata(&store.journal_file).expect("a journal");
        assert_eq!(journal.mode() & 0o777, 0o600);
        let reloaded = store.load(root).expect("loads");
        assert_eq!(reloaded, loaded);
        assert!(!reloaded.entries.contains_key(&JailPath::parse("/f000").expect("valid")) && !reloaded.interrupted);
    }

    /// A journal past a quarter of the snapshot is folded into a new snapshot; a torn tail is
    /// dropped on load and cut off before the next append.
    #[test]
    fn a_long_journal_is_compacted_and_a_torn_tail_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Path::new("/srv/jails/a");
        let store = StateStore::for_root(dir.path(), root);
        let mut state = store.load(root).expect("an empty record");
        let journal = store.journal(&state).expect("opens");
        store.finish(journal, &mut state).expect("finishes");
        let mut journal = store.journal(&state).expect("opens");
        journal.record(&mut state, Step::Began).expect("records");
        // Torn: the Began frame written halfway, as a kill during the write leaves it.
        journal.commit().expect("commits");
        let len = fs::metadata(&store.journal_file).expect("stat").len();
        fs::OpenOptions::new()
            .append(true)
            .open(&store.journal_file)
            .expect("open")
            .write_all(&[9, 0, 0])
            .expect("tear");
        assert!(store.load(root).expect("loads").interrupted, "the intact Began frame is read");
        let mut loaded = store.load(root).expect("loads");
        let journal = store.journal(&loaded).expect("opens");
        assert_eq!(fs::metadata(&store.journal_file).expect("stat").len(), len, "the torn tail is cut off");
        let entries: Vec<(JailPath, Managed)> =
            (0..500).map(|index| (JailPath::parse(&format!("/g{index:03}")).expect("valid"), file_entry())).collect();
        let mut journal = journal;
        journal.record(&mut loaded, Step::Recorded(entries)).expect("records");
        let before = fs::metadata(&store.state_file).expect("stat").ino();
        store.finish(journal, &mut loaded).expect("finishes");
        assert_ne!(fs::metadata(&store.state_file).expect("stat").ino(), before, "compacted into a new snapshot");
        assert_eq!(fs::metadata(&store.journal_file).expect("stat").len(), journal::HEADER_LEN as u64);
        assert_eq!(store.load(root).expect("loads"), loaded);
    }

    /// A format 4 record and the intent file of an older jailprov's interrupted apply still load
    /// (the intent's paths pending); the first journal rewrites the record as format 5.
    #[test]
    fn a_format_4_record_with_an_intent_loads_and_is_upgraded_on_the_next_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Path::new("/srv/jails/a");
        let store = StateStore::for_root(dir.path(), root);
        let mut old = State::empty(root);
        old.format_version = 4;
        old.entries.insert(JailPath::parse("/usr/bin/bash").expect("valid"), file_entry());
        write_raw(&store.state_file, &postcard::to_extend(&old, MAGIC.to_vec()).expect("serializes"));
        let pending: BTreeSet<JailPath> = [JailPath::parse("/etc/passwd").expect("valid")].into();
        write_raw(
            &store.intent_file,
            &postcard::to_extend(&(INTENT_VERSION, &pending), INTENT_MAGIC.to_vec()).expect("serializes"),
        );
        let state = store.load(root).expect("loads");
        assert!(state.interrupted && state.pending == pending);
        assert_eq!(state.entries, old.entries);
        assert_eq!(store.snapshot_generation().expect("reads"), None, "format 4 has no generation");
        let _journal = store.journal(&state).expect("opens");
        assert!(store.snapshot_generation().expect("reads").is_some(), "rewritten as format 5");
        assert_eq!(store.load(root).expect("loads").entries, old.entries);
    }

    #[test]
    fn a_journal_others_can_write_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Path::new("/srv/jails/a");
        let store = StateStore::for_root(dir.path(), root);
        let state = store.load(root).expect("an empty record");
        drop(store.journal(&state).expect("opens"));
        fs::set_permissions(&store.journal_file, fs::Permissions::from_mode(0o622)).expect("chmod");
        let error = store.load(root).expect_err("refused");
        assert!(format!("{error:#}").contains("writable by no one else"), "{error:#}");
    }

    /// `jailprov status` finds every jail from the state directory alone, whatever format its
    /// record has, and the origin an apply wrote.
    #[test]
    fn recorded_roots_are_read_from_records_of_every_format_with_their_origin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let current = StateStore::for_root(dir.path(), Path::new("/srv/jails/new"));
        current.write_snapshot(&State::empty(Path::new("/srv/jails/new"))).expect("saves");
        let old = StateStore::for_root(dir.path(), Path::new("/srv/jails/old"));
        let mut record = State::empty(Path::new("/srv/jails/old"));
        record.format_version = 4;
        write_raw(&old.state_file, &postcard::to_extend(&record, MAGIC.to_vec()).expect("serializes"));
        write_raw(&dir.path().join("stray.state"), &postcard::to_extend(&record, MAGIC.to_vec()).expect("serializes"));
        let roots: Vec<PathBuf> =
            recorded_roots(dir.path()).expect("lists").into_iter().map(|root| root.expect("readable")).collect();
        assert_eq!(
            roots,
            [PathBuf::from("/srv/jails/new"), PathBuf::from("/srv/jails/old")],
            "a stray file is no record"
        );
        assert_eq!(current.load_origin().expect("reads"), None, "no apply wrote one yet");
        current.write_origin(Path::new("/etc/jails/Jailfile.toml"), Path::new("/srv/jails/new")).expect("writes");
        let origin = current.load_origin().expect("reads").expect("written");
        assert_eq!(origin.jailfile, Path::new("/etc/jails/Jailfile.toml"));
        assert!(origin.applied_at > 1_700_000_000, "{origin:?}");
        current.remove().expect("removes");
        assert!(!current.origin_file.exists(), "forgetting a jail forgets its origin");
    }

    #[test]
    fn different_roots_get_different_files() {
        let a = StateStore::for_root(Path::new("/s"), Path::new("/srv/a-b"));
        let b = StateStore::for_root(Path::new("/s"), Path::new("/srv/a/b"));
        assert_ne!(a.state_file, b.state_file);
    }

    #[test]
    fn second_lock_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::for_root(dir.path(), Path::new("/srv/jails/a"));
        let _held = store.lock(Duration::from_secs(1)).expect("first lock");
        let error = store.lock(Duration::from_millis(200)).expect_err("second must wait and fail");
        assert!(error.to_string().contains("another jailprov holds the lock"), "{error}");
    }
}
