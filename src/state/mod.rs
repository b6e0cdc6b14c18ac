//! What jailprov manages in a jail, recorded outside the jail where its processes cannot forge it.
//!
//! One file per jail root under the state directory (default /var/lib/jailprov), written
//! atomically, next to a lock file that serialises applies on that jail. The state directory is
//! outside every jail, so this module writes with plain path-based calls.
//!
//! The file is binary (a magic line, then postcard): every plan reads it whole, and for a jail of
//! 50,000 files JSON made a 13 MB file that took longer to parse than the jail took to stat.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::desired::{DesiredKind, StatPrint};
use crate::tree::JailPath;

pub mod content_hash;
pub mod lock;

/// Where state lives unless `--state-dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/jailprov";

/// 3 added the content hash of each managed file (`Managed::hash`), 4 the persistent mounts
/// (`State::mounts`); format 2 is still read.
const FORMAT_VERSION: u32 = 4;

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
    /// Written when an apply starts, removed when it has recorded everything: the paths it is
    /// about to create (a few lines, where rewriting the whole record would cost a 50,000-path
    /// serialization and fsync on every apply).
    pub intent_file: PathBuf,
}

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
            intent_file: state_dir.join(format!("{name}.intent")),
        }
    }

    /// The recorded state, or an empty one when this root was never applied; an apply that did
    /// not finish (its intent file is still there) marks it interrupted, its paths pending.
    pub fn load(&self, root: &Path) -> Result<State> {
        let mut state = self.load_record(root)?;
        if let Some(pending) = self.load_intent()? {
            state.interrupted = true;
            state.pending.extend(pending);
        }
        Ok(state)
    }

    fn load_record(&self, root: &Path) -> Result<State> {
        self.check_dir()?;
        let Some(bytes) = read_private(&self.state_file, "the state file")? else { return Ok(State::empty(root)) };
        let corrupt = || format!("the state file {} is corrupt", self.state_file.display());
        let body = bytes
            .strip_prefix(MAGIC)
            .with_context(|| format!("{} is not a jailprov state file", self.state_file.display()))?;
        // The version leads the body: read it alone first, so that a newer format is named as
        // such rather than reported as corrupt.
        let (format_version, _) = postcard::take_from_bytes::<u32>(body).with_context(corrupt)?;
        if format_version == 2 {
            let state = format2::upgrade(postcard::from_bytes(body).with_context(corrupt)?);
            if state.root != root {
                bail!(
                    "{} records the root {}, not {}",
                    self.state_file.display(),
                    state.root.display(),
                    root.display()
                );
            }
            return Ok(state);
        }
        if format_version != FORMAT_VERSION {
            bail!(
                "{} has state format {format_version} but this jailprov reads format {FORMAT_VERSION}",
                self.state_file.display()
            );
        }
        let state: State = postcard::from_bytes(body).with_context(corrupt)?;
        if state.root != root {
            bail!("{} records the root {}, not {}", self.state_file.display(), state.root.display(), root.display());
        }
        Ok(state)
    }

    /// Before an apply writes anything: the paths it may create, durably (temporary file,
    /// fsync, rename). Until [`StateStore::finish`] removes it, every load treats the apply as
    /// interrupted and these paths as jailprov's.
    pub fn begin(&self, pending: &BTreeSet<JailPath>) -> Result<()> {
        let _t = crate::timings::phase("state: intent");
        let bytes =
            postcard::to_extend(&(INTENT_VERSION, pending), INTENT_MAGIC.to_vec()).context("serializing the intent")?;
        self.write_private(&self.intent_file, &bytes)
    }

    /// After the apply's full record is saved: the intent is fulfilled.
    pub fn finish(&self) -> Result<()> {
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

    /// Writes the state atomically (temporary file, fsync, rename), readable by root only.
    pub fn save(&self, state: &State) -> Result<()> {
        let _t = crate::timings::phase("state save");
        let bytes = postcard::to_extend(state, MAGIC.to_vec()).context("serializing the state")?;
        self.write_private(&self.state_file, &bytes)
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

    /// Removes the state of a destroyed jail.
    pub fn remove(&self) -> Result<()> {
        self.finish()?;
        match fs::remove_file(&self.state_file) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(error).with_context(|| format!("cannot remove {}", self.state_file.display()))
            }
            _ => Ok(()),
        }
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
        store.save(&state).expect("saves");
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
