//! The memo of a no-op plan: every host and jail path it looked at, so the next plan can tell by stats alone that nothing moved.
//!
//! A plan is a function of the Jailfile, of what it looked at on the host (every stat, every
//! file read: [`HostFs::observing`](crate::host::HostFs::observing)), of what it stat'ed in the jail ([`JailScan`](super::JailScan)), of the
//! record, of the mounts and of jailprov itself. When a full plan finds nothing to do and the
//! lock fresh, all of these are written down here. The next plan re-stats exactly those paths;
//! when every stat, the record, the lock, the mounts and the binary are as they were, its
//! answer is the same "no changes", and the closure is not computed again. Any difference, or
//! any doubt (a missing or foreign memo), means the full plan.
//!
//! Content is never compared here: a file rewritten in place gets a new mtime and ctime (and
//! the ctime cannot be set back), which is the same promise a no-op plan already relies on for
//! the files apply copied. `jailprov check` reads every byte.
#![allow(clippy::disallowed_methods)] // the memo lives in the state directory, outside every jail

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::host::{Look, Observation, Seen, SeenPrint};
use crate::jail_root::{JailRoot, NodeKind, NodeStat};
use crate::state::StateStore;
use crate::tree::JailPath;

/// The first bytes of a memo file.
const MAGIC: &[u8] = b"jailprov plan memo\n";
/// 2 added the journal to the key; 3 keeps one digest per chunk (a stale memo is found at the
/// first chunk that moved, not after every path was stat'ed).
const FORMAT_VERSION: u32 = 3;
/// Paths checked per parallel task; also the unit the digests are taken over (both sides
/// must cut the same way).
const CHUNK: usize = 2048;

/// What a plan was computed from besides the paths it looked at. All of it must be equal for
/// the memo to speak.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    /// The jailprov binary: another build may plan differently.
    pub program: Seen,
    /// The CPU as the loader sees it (its platform and glibc-hwcaps subdirectories decide
    /// which library copy loads): a VM moved to another host may see another.
    pub cpu: String,
    /// The Jailfile's absolute path and its normalized digest (what it says, not its bytes).
    pub jailfile: PathBuf,
    pub jailfile_digest: String,
    pub root: PathBuf,
    pub adopt: bool,
    /// Jailfile.lock as the plan found it fresh.
    pub lock: Seen,
    /// The state file, its journal (appended to by every apply) and the intent file of an
    /// apply of an older jailprov that did not finish (its pending paths change how a plan judges).
    pub state: Seen,
    pub journal: Seen,
    pub intent: Seen,
    /// What was mounted in the jail.
    pub mounts: String,
}

impl Key {
    /// The key of a plan about to be made now.
    pub fn now(
        jailfile: &Path,
        jailfile_digest: &str,
        root: &Path,
        adopt: bool,
        store: &StateStore,
        mounts: String,
    ) -> Key {
        let jailfile = std::path::absolute(jailfile).unwrap_or_else(|_| jailfile.to_path_buf());
        Key {
            program: Seen::of(&fs::metadata("/proc/self/exe")),
            cpu: cpu_as_the_loader_sees_it(),
            lock: Seen::of(&fs::symlink_metadata(crate::state::lock::lock_path(&jailfile))),
            jailfile,
            jailfile_digest: jailfile_digest.to_owned(),
            root: root.to_path_buf(),
            adopt,
            state: Seen::of(&fs::symlink_metadata(&store.state_file)),
            journal: Seen::of(&fs::symlink_metadata(&store.journal_file)),
            intent: Seen::of(&fs::symlink_metadata(&store.intent_file)),
            mounts,
        }
    }
}

pub(super) fn cpu_as_the_loader_sees_it() -> String {
    use crate::closure::platform::{
        host_hwcaps_subdirs, host_legacy_hwcap_subdirs, platform_token, AARCH64, I386, X86_64,
    };
    [&X86_64, &I386, &AARCH64]
        .iter()
        .map(|platform| {
            format!(
                "{} {} {:?} {:?}",
                platform.name,
                platform_token(platform),
                host_hwcaps_subdirs(platform),
                host_legacy_hwcap_subdirs(platform)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A memo as written: its format and key lead (read alone first, see [`read_keyed`]), then what
/// the computation warned about and looked at on the host, then what else it vouches for. The
/// plan memo and the closure memo ([`super::closure_memo`]) differ only in `rest`.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Memo<K, R> {
    pub format_version: u32,
    pub key: K,
    /// The closure's warnings, said again when the memo answers.
    pub warnings: Vec<String>,
    pub host: HostPrint,
    pub rest: R,
}

/// What the plan memo vouches for in the jail.
#[derive(Debug, Serialize, Deserialize)]
struct JailPrint {
    /// Jail paths stat'ed, NUL-separated, sorted.
    paths: Vec<u8>,
    /// One digest per [`CHUNK`] jail paths, in order.
    chunks: Vec<[u8; 32]>,
}

/// Writes the memo of a full plan that found nothing to do, from what it looked at on the host
/// (none of it changed moments before: see [`HostFs::observations`](crate::host::HostFs::observations)). Failing only costs the
/// next plan its shortcut, so it is not an error.
pub fn record(file: &Path, key: Key, warnings: Vec<String>, host: &[Observation], jail: JailScanPrint) {
    let _timing = crate::timings::phase("plan memo: write");
    let Some((jail_paths, jail_chunks)) = jail.finish() else { return };
    let memo = Memo {
        format_version: FORMAT_VERSION,
        key,
        warnings,
        host: HostPrint::of(host),
        rest: JailPrint { paths: jail_paths, chunks: jail_chunks },
    };
    if let Err(error) = write_keyed(file, MAGIC, &memo) {
        eprintln!("warning: cannot save the plan memo ({error:#}); the next plan computes the closure again");
    }
}

/// The largest memo or plan cache read: a few MiB of paths and nodes for 50,000 paths.
const MAX_MEMO_SIZE: u64 = 1024 * 1024 * 1024;

/// Writes `value` after `magic` through a fresh temporary file (random name, `O_EXCL |
/// O_NOFOLLOW`: never a planted link), renamed over `file`. For the plan's caches: no fsync, a
/// file torn by a crash does not decode, and is then only not used.
pub(super) fn write_keyed(file: &Path, magic: &[u8], value: &impl Serialize) -> Result<()> {
    if let Some(dir) = file.parent() {
        crate::beside::check_state_dir(dir)?;
    }
    let (out, temporary) = crate::beside::create_temp_beside(file, 0o600)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    out.write_all(magic).with_context(|| format!("cannot write {}", temporary.display()))?;
    let out = postcard::to_io(value, out).with_context(|| format!("serializing {}", file.display()))?;
    out.into_inner()
        .map_err(|error| error.into_error())
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    crate::beside::rename_into_place(&temporary, file)
}

/// Whether the memo in `file` vouches for "no changes" now: Some(the warnings to say again),
/// or None (no memo, another key, or any path that moved).
pub fn answers(file: &Path, key: &Key, jail: &JailRoot) -> Option<Vec<String>> {
    let _timing = crate::timings::phase("plan memo: check");
    let memo: Memo<Key, JailPrint> = read_keyed(file, MAGIC, FORMAT_VERSION, key)?;
    let host_paths = split_paths(&memo.host.paths);
    let jail_paths = split_paths(&memo.rest.paths);
    if jail_paths.len().div_ceil(CHUNK) != memo.rest.chunks.len() {
        return None;
    }
    let mut checks = memo.host.checks(&host_paths)?;
    checks.extend(
        jail_paths.chunks(CHUNK).zip(&memo.rest.chunks).map(|(paths, digest)| ChunkCheck::Jail { paths, digest }),
    );
    all_hold(&checks, Some(jail)).then_some(memo.warnings)
}

/// The host paths a computation looked at, how, and one digest per [`CHUNK`] of what each look
/// found: enough to tell later, by stats alone, that it would look the same.
#[derive(Debug, Serialize, Deserialize)]
pub struct HostPrint {
    /// Disk paths, NUL-separated, sorted.
    paths: Vec<u8>,
    looks: Vec<Look>,
    chunks: Vec<[u8; 32]>,
}

impl HostPrint {
    pub fn of(observations: &[Observation]) -> HostPrint {
        let mut paths = Vec::with_capacity(observations.len() * 64);
        let mut looks = Vec::with_capacity(observations.len());
        for observation in observations {
            paths.extend_from_slice(observation.disk_path.as_os_str().as_bytes());
            paths.push(0);
            looks.push(observation.look);
        }
        let chunks = observations
            .par_chunks(CHUNK)
            .map(|chunk| chunk_digest(chunk.iter(), |bytes, observation| feed_seen(bytes, &observation.seen)))
            .collect();
        HostPrint { paths, looks, chunks }
    }

    /// Whether every path looks as it did (stopping at the first chunk that moved).
    pub fn holds_now(&self) -> bool {
        let paths = split_paths(&self.paths);
        self.checks(&paths).is_some_and(|checks| all_hold(&checks, None))
    }

    /// One check per chunk, over `paths` (this print's, split); None when the print does not
    /// add up (a damaged file that still decoded).
    fn checks<'a>(&'a self, paths: &'a [&'a [u8]]) -> Option<Vec<ChunkCheck<'a>>> {
        if paths.len() != self.looks.len() || paths.len().div_ceil(CHUNK) != self.chunks.len() {
            return None;
        }
        let chunks = paths.chunks(CHUNK).zip(self.looks.chunks(CHUNK)).zip(&self.chunks);
        Some(chunks.map(|((paths, looks), digest)| ChunkCheck::Host { paths, looks, digest }).collect())
    }
}

/// Whether every chunk holds. The chunks are checked as one pool of parallel tasks; the first
/// one that moved stops the rest, so a stale print costs about one chunk per thread.
fn all_hold(checks: &[ChunkCheck], jail: Option<&JailRoot>) -> bool {
    let moved = AtomicBool::new(false);
    checks.par_iter().for_each(|check| {
        if !moved.load(Ordering::Relaxed) && !check.holds(jail) {
            moved.store(true, Ordering::Relaxed);
        }
    });
    !moved.into_inner()
}

/// One chunk of the memo's paths and the digest they had.
enum ChunkCheck<'a> {
    Host { paths: &'a [&'a [u8]], looks: &'a [Look], digest: &'a [u8; 32] },
    Jail { paths: &'a [&'a [u8]], digest: &'a [u8; 32] },
}

impl ChunkCheck<'_> {
    /// Whether every path of the chunk looks as it did.
    fn holds(&self, jail: Option<&JailRoot>) -> bool {
        match self {
            ChunkCheck::Host { paths, looks, digest } => {
                let seen = paths.iter().zip(*looks).map(|(path, look)| look.see(Path::new(OsStr::from_bytes(path))));
                chunk_digest(seen, |bytes, seen| feed_seen(bytes, &seen)) == **digest
            }
            ChunkCheck::Jail { paths, digest } => {
                jail.and_then(|jail| jail_chunk_now(paths, jail)).is_some_and(|now| now == **digest)
            }
        }
    }
}

/// The value in `file` (written by [`write_keyed`] after `magic`, leading with its format
/// version and key), if only this user could have written it and it is of `format_version`
/// and `key`; None for anything else, a damaged or truncated file included.
pub(super) fn read_keyed<K, T>(file: &Path, magic: &[u8], format_version: u32, key: &K) -> Option<T>
where
    K: PartialEq + serde::de::DeserializeOwned,
    T: serde::de::DeserializeOwned,
{
    // Checked on the opened file (a regular file, not through a link, bounded like a record).
    let (opened, metadata) = crate::beside::open_regular_nofollow(file, "a plan cache", MAX_MEMO_SIZE).ok()??;
    if metadata.uid() != nix::unistd::geteuid().as_raw() || metadata.mode() & 0o022 != 0 {
        return None;
    }
    // The format and key lead the file: read alone first, so that a file of another key (every
    // apply moves the record's stat) costs a few hundred bytes, not megabytes of paths.
    let mut head = Vec::with_capacity(KEY_READ as usize);
    (&opened).take(KEY_READ).read_to_end(&mut head).ok()?;
    let (written_version, written_for) = postcard::take_from_bytes::<(u32, K)>(head.strip_prefix(magic)?).ok()?.0;
    if written_version != format_version || written_for != *key {
        return None;
    }
    let mut bytes = head;
    (&opened).take(MAX_MEMO_SIZE.saturating_sub(KEY_READ).saturating_add(1)).read_to_end(&mut bytes).ok()?;
    if bytes.len() as u64 > MAX_MEMO_SIZE {
        return None;
    }
    postcard::from_bytes(bytes.strip_prefix(magic)?).ok()
}

/// Bytes read first for the format and key (a key is a few hundred bytes; a memo shorter than
/// this is read whole at once).
const KEY_READ: u64 = 64 * 1024;

/// Removes the memo (the jail is gone); a missing one is fine.
pub fn forget(file: &Path) {
    let _ = fs::remove_file(file);
}

fn split_paths(blob: &[u8]) -> Vec<&[u8]> {
    match blob.strip_suffix(&[0]) {
        Some(body) => body.split(|byte| *byte == 0).collect(),
        None => Vec::new(),
    }
}

/// The digest of one chunk of jail paths as they are now; None when a path no longer parses.
fn jail_chunk_now(paths: &[&[u8]], jail: &JailRoot) -> Option<[u8; 32]> {
    let paths: Vec<JailPath> = paths
        .iter()
        .map(|path| std::str::from_utf8(path).ok().and_then(|path| JailPath::parse(path).ok()))
        .collect::<Option<_>>()?;
    let refs: Vec<&JailPath> = paths.iter().collect();
    let stats = super::stat_jail_paths(jail, &refs).ok()?;
    Some(chunk_digest(stats.iter(), |bytes, stat| feed_node(bytes, stat.as_ref())))
}

#[cfg(test)]
fn jail_chunk_digests(stats: &[Option<NodeStat>]) -> Vec<[u8; 32]> {
    stats
        .par_chunks(CHUNK)
        .map(|chunk| chunk_digest(chunk.iter(), |bytes, stat| feed_node(bytes, stat.as_ref())))
        .collect()
}

/// The jail paths a plan stat'ed and the digest of what it found, built as the plan goes (cut
/// into chunks exactly as the check cuts them), so no copy of 50,000 stats is kept.
#[derive(Debug)]
pub struct JailScanPrint {
    paths: Vec<u8>,
    pending: Vec<u8>,
    in_pending: usize,
    chunks: Vec<[u8; 32]>,
    /// As for the host (see `HostFs::observing`): a jail path changed this recently may change
    /// again without its stat showing it.
    racy_after_ns: i128,
    racy: bool,
}

impl Default for JailScanPrint {
    fn default() -> JailScanPrint {
        JailScanPrint::since(crate::host::now_ns())
    }
}

impl JailScanPrint {
    /// A print of a scan that started at `started_ns`.
    pub fn since(started_ns: i128) -> JailScanPrint {
        JailScanPrint {
            paths: Vec::new(),
            pending: Vec::new(),
            in_pending: 0,
            chunks: Vec::new(),
            racy_after_ns: started_ns - crate::host::RACY_NS,
            racy: false,
        }
    }

    pub fn push(&mut self, path: &JailPath, stat: Option<&NodeStat>) {
        self.racy |= stat.is_some_and(|stat| stat.kind != NodeKind::Dir && stat.ctime_ns >= self.racy_after_ns);
        self.paths.extend_from_slice(path.as_str().as_bytes());
        self.paths.push(0);
        feed_node(&mut self.pending, stat);
        self.in_pending += 1;
        if self.in_pending == CHUNK {
            self.close_chunk();
        }
    }

    fn close_chunk(&mut self) {
        self.chunks.push(*blake3::hash(&self.pending).as_bytes());
        self.pending.clear();
        self.in_pending = 0;
    }

    /// The NUL-separated paths and the digest of each chunk of their stats; None when racy.
    fn finish(mut self) -> Option<(Vec<u8>, Vec<[u8; 32]>)> {
        if self.racy {
            return None;
        }
        if self.in_pending > 0 {
            self.close_chunk();
        }
        Some((self.paths, self.chunks))
    }
}

/// blake3 of one chunk's items, each written as bytes by `feed`.
fn chunk_digest<T>(items: impl Iterator<Item = T>, feed: impl Fn(&mut Vec<u8>, T)) -> [u8; 32] {
    let mut bytes = Vec::with_capacity(CHUNK * 80);
    for item in items {
        feed(&mut bytes, item);
    }
    *blake3::hash(&bytes).as_bytes()
}

fn feed_seen(bytes: &mut Vec<u8>, seen: &SeenPrint) {
    bytes.extend_from_slice(&seen.0);
}

fn feed_node(bytes: &mut Vec<u8>, stat: Option<&NodeStat>) {
    let Some(stat) = stat else {
        bytes.push(0);
        return;
    };
    bytes.push(match stat.kind {
        NodeKind::File => 1,
        NodeKind::Dir => 2,
        NodeKind::Symlink => 3,
        NodeKind::CharDevice => 4,
        NodeKind::BlockDevice => 5,
        NodeKind::Fifo => 6,
        NodeKind::Socket => 7,
    });
    for value in [u64::from(stat.mode), u64::from(stat.uid), u64::from(stat.gid), stat.ino, stat.dev, stat.rdev] {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    // A directory's size, times and link count move with every entry made in it (a jailed
    // service's logs, /tmp): the plan judges it by type, mode and owner, and each path in it
    // that matters by its own stat.
    if stat.kind != NodeKind::Dir {
        bytes.extend_from_slice(&stat.size.to_le_bytes());
        bytes.extend_from_slice(&stat.nlink.to_le_bytes());
        bytes.extend_from_slice(&stat.mtime_ns.to_le_bytes());
        bytes.extend_from_slice(&stat.ctime_ns.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostFs;

    fn stat(index: usize) -> Option<NodeStat> {
        (index % 7 != 3).then(|| NodeStat {
            kind: if index.is_multiple_of(5) { NodeKind::Dir } else { NodeKind::File },
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: index as u64,
            mtime_ns: index as i128 * 1_000,
            ctime_ns: index as i128 * 2_000,
            ino: 10_000 + index as u64,
            dev: 1,
            rdev: 0,
            nlink: 1,
        })
    }

    /// The plan's streaming digest and the check's parallel one must cut and hash alike, or the
    /// memo would never answer (or, worse, answer for another scan).
    #[test]
    fn streaming_and_parallel_jail_digests_agree_and_see_one_changed_stat() {
        for count in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 5] {
            let stats: Vec<Option<NodeStat>> = (0..count).map(stat).collect();
            // Started far in the future: nothing in it is racy.
            let mut scan = JailScanPrint::since(i128::MAX / 2);
            for (index, stat) in stats.iter().enumerate() {
                let path = JailPath::parse(&format!("/p/{index:06}")).expect("path");
                scan.push(&path, stat.as_ref());
            }
            let (paths, streamed) = scan.finish().expect("not racy");
            assert_eq!(split_paths(&paths).len(), count);
            assert_eq!(streamed, jail_chunk_digests(&stats), "{count} paths");
            if count > 0 {
                let mut changed = stats.clone();
                if let Some(Some(last)) = changed.last_mut() {
                    last.mode = 0o600;
                } else if let Some(last) = changed.last_mut() {
                    *last = stat(1);
                }
                assert_ne!(jail_chunk_digests(&changed), streamed, "{count} paths: a changed mode must show");
            }
        }
    }

    #[test]
    fn a_jail_directory_counts_by_type_mode_and_owner_a_file_by_its_whole_stat() {
        let (mut dir, mut file) = (stat(0).expect("dir"), stat(1).expect("file"));
        assert_eq!((dir.kind, file.kind), (NodeKind::Dir, NodeKind::File));
        let before = jail_chunk_digests(&[Some(dir.clone()), Some(file.clone())]);
        dir.ctime_ns += 1;
        dir.mtime_ns += 1;
        dir.nlink += 1;
        dir.size += 4096;
        assert_eq!(
            jail_chunk_digests(&[Some(dir.clone()), Some(file.clone())]),
            before,
            "an entry made in a directory"
        );
        file.ctime_ns += 1;
        assert_ne!(jail_chunk_digests(&[Some(dir), Some(file)]), before, "a file's ctime");
    }

    #[test]
    fn a_directory_counts_by_type_mode_and_owner_unless_it_was_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let before = (Look::Lstat.see(dir.path()), Look::List.see(dir.path()));
        fs::write(dir.path().join("new"), "x").expect("write");
        let after = (Look::Lstat.see(dir.path()), Look::List.see(dir.path()));
        assert_eq!(before.0, after.0, "a plain look at a directory ignores what it holds");
        assert_ne!(before.1, after.1, "a listing sees an entry added");
        let file = dir.path().join("new");
        let seen = Look::Lstat.see(&file);
        fs::write(&file, "yy").expect("rewrite");
        assert_ne!(seen, Look::Lstat.see(&file), "a rewritten file looks different");
        assert_ne!(Look::Stat.see(&dir.path().join("missing")), seen);
    }

    /// The plan cache (reuse.rs) keeps a result built from the lstat of a file changed moments
    /// ago (the same stat gives the same desired node, whatever the content), never one that
    /// read such a file; the memo keeps neither.
    #[test]
    fn a_racy_lstat_keeps_the_looks_before_a_mark_a_racy_read_spoils_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fresh = dir.path().join("fresh");
        fs::write(&fresh, "x").expect("write");
        let host = HostFs::real().observing();
        let _ = host.symlink_metadata(&fresh);
        let mark = host.mark().expect("observing");
        let _ = host.open(&fresh);
        assert!(host.observations_before(mark).is_some_and(|looks| looks.len() == 1), "the lstat before the mark");
        assert!(host.observations().is_none(), "the memo vouches for nothing racy");
        let host = HostFs::real().observing();
        let _ = host.open(&fresh);
        let mark = host.mark().expect("observing");
        assert!(host.observations_before(mark).is_none(), "a racy read before the mark");
    }

    /// A path changed just before (or while) a plan looks at it may change again within one
    /// timestamp tick unseen: such a record vouches for nothing.
    #[test]
    fn a_look_at_a_path_changed_moments_ago_spoils_the_record() {
        let long_unchanged = Path::new("/usr/bin/env");
        let host = HostFs::real().observing();
        let _ = host.metadata(long_unchanged);
        assert!(host.observations().is_some_and(|looks| looks.len() == 1), "an old file is a sound look");
        let dir = tempfile::tempdir().expect("tempdir");
        let fresh = dir.path().join("fresh");
        fs::write(&fresh, "x").expect("write");
        let host = HostFs::real().observing();
        let _ = host.metadata(long_unchanged);
        let _ = host.metadata(&fresh);
        assert!(host.observations().is_none(), "a file written a moment ago makes the record racy");

        let mut scan = JailScanPrint::default();
        scan.push(&JailPath::root(), stat(1).as_ref());
        assert!(scan.finish().is_some(), "a stat from 1970 is not racy");
        let mut scan = JailScanPrint::default();
        let mut recent = stat(1).expect("a stat");
        recent.ctime_ns = crate::host::now_ns();
        scan.push(&JailPath::root(), Some(&recent));
        assert!(scan.finish().is_none(), "a jail path changed a moment ago makes the scan racy");
    }
}
