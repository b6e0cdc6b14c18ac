//! What a review of the lock works from and answers: its inputs and mode, the state shared by
//! every route (fresh key, incremental, full), and the review's result.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Result;
use rayon::prelude::*;

use crate::desired::{ClosureFacts, DesiredKind, DesiredTree};
use crate::host::{HostFs, StatPrint};

use super::cache::{save_cache_file, source_tag, write_atomically_with, Cache, GlibcSeen, Memo, MemoLine};
use super::drift::{Comparison, Drift};
use super::format::{entry_lengths, fingerprint_with, glibc_version, HostFingerprint, LockEntry};
use super::lines::{fresh_key, DesiredLines};

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
    /// plan: compare only. The lock is never written (host drift stays visible in every plan
    /// until `jailprov lock` or `apply` accepts it); the per-host cache is saved only into a
    /// state directory that exists already.
    Review,
    /// apply: write the lock when it is missing or stale (a plain apply accepts drift).
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
    /// The review of a lock found fresh (what the plan memo vouches for).
    pub fn fresh(lock_path: PathBuf) -> Review {
        Review { lock_path, existed: true, comparison: Comparison::default(), wrote: false, entries: 0 }
    }

    /// Whether `apply` or `jailprov lock` would write the lock: it is missing, or differs
    /// from what the host gives now (drift, an edited Jailfile). Pending like a jail change.
    pub fn pending(&self) -> bool {
        !self.existed || !self.comparison.is_empty()
    }

    pub fn host_drift(&self) -> Vec<Drift> {
        if self.existed {
            self.comparison.host_drift()
        } else {
            Vec::new()
        }
    }
}

/// What every route of a review works from, computed once.
pub(super) struct Reviewing<'a> {
    pub(super) inputs: &'a Inputs<'a>,
    pub(super) mode: Mode,
    pub(super) lock_path: PathBuf,
    /// The normalized Jailfile's digest.
    pub(super) jailfile: String,
    /// The desired nodes and their line digests, in lock order.
    pub(super) lines: DesiredLines<'a>,
    pub(super) fresh_key: [u8; 32],
    pub(super) cache_file: PathBuf,
    pub(super) store_file: PathBuf,
}

/// The old lock file changed while an incremental review copied lines from it.
#[derive(Debug)]
pub(super) struct OldLockMoved;

impl std::fmt::Display for OldLockMoved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the lock file changed while it was read")
    }
}

impl std::error::Error for OldLockMoved {}

impl Reviewing<'_> {
    /// The review of a lock that needs no change.
    pub(super) fn unchanged(&self, comparison: Comparison) -> Review {
        let entries = self.lines.len();
        Review { lock_path: self.lock_path.clone(), existed: true, comparison, wrote: false, entries }
    }

    /// Saves one of the cache's files; plan (`Review`) leaves a missing state directory
    /// missing: it writes nothing a user sees.
    pub(super) fn save_cache(&self, path: &Path, bytes: Result<Vec<u8>>) {
        save_cache_file(path, bytes, self.mode != Mode::Review);
    }

    pub(super) fn no_lock_error(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "--locked: {} does not exist; run `jailprov lock -f {}` and commit it",
            self.lock_path.display(),
            self.inputs.jailfile.display()
        )
    }

    pub(super) fn locked_error(&self, comparison: &Comparison) -> anyhow::Error {
        anyhow::anyhow!(
            "--locked: what the host gives differs from {}; nothing was changed:\n  {}\nrun `jailprov lock -f {}` to \
             accept it, then review and commit the lock",
            self.lock_path.display(),
            comparison.lines().join("\n  "),
            self.inputs.jailfile.display()
        )
    }

    /// Writes the lock through `fill`; returns the file written. Ok(None) when apply cannot (a
    /// read-only checkout: it still works, with a warning); `jailprov lock` must write. Never
    /// called in `Review` mode. [`OldLockMoved`] is returned as an error whatever the mode: the caller reviews
    /// again.
    pub(super) fn write_lock(&self, fill: impl FnOnce(&fs::File, &Path) -> Result<()>) -> Result<Option<fs::File>> {
        assert!(self.mode != Mode::Review, "plan reviews the lock without writing it");
        match write_atomically_with(&self.lock_path, 0o644, fill) {
            Ok(file) => Ok(Some(file)),
            Err(error) if error.is::<OldLockMoved>() || self.mode == Mode::Deliberate => Err(error),
            Err(error) => {
                eprintln!("warning: {error:#}; {} stays as it was", self.lock_path.display());
                Ok(None)
            }
        }
    }

    /// The memo of a lock file of `lock_stat` whose text is `text`, of these entries (the current
    /// digests' nodes'); None if the text is not one
    /// [`write_lock_text`](super::format::write_lock_text) writes.
    pub(super) fn memo_of(&self, lock_stat: StatPrint, text: &str, entries: &[LockEntry]) -> Option<Memo> {
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
    pub(super) fn fingerprint(&self, cache: &mut Cache) -> HostFingerprint {
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
    pub(super) fn remember_written(
        &self,
        cache: &mut Cache,
        written: &fs::File,
        memo: impl FnOnce(StatPrint) -> Option<Memo>,
    ) {
        let ours = written.metadata().ok().map(|metadata| StatPrint::of(&metadata));
        let in_place = fs::metadata(&self.lock_path).ok().map(|metadata| StatPrint::of(&metadata));
        let lock_stat = ours.filter(|_| ours == in_place);
        cache.fresh =
            lock_stat.map(|lock_stat| fresh_key(&self.lines, &self.jailfile, Some(lock_stat), self.inputs.host));
        cache.memo = lock_stat.and_then(memo);
    }
}

/// The largest lock read: one line per jail path of a few hundred bytes, so a jail of 500,000
/// paths (ten times the largest we measure) stays well below it, while a lock swapped for a huge
/// file is refused instead of read into memory.
pub(super) const MAX_LOCK_SIZE: u64 = 256 * 1024 * 1024;
