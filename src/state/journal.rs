//! The record's write-ahead journal: what each apply phase did, appended beside the snapshot as checksummed frames, so that a kill at any moment loses no path and one change costs a few bytes instead of a rewrite of the whole record.
//!
//! The file is a header (magic, format, the generation of the snapshot it extends) and frames:
//! a little-endian u32 length, the first 8 bytes of the blake3 of the payload, the payload
//! (postcard of a [`Step`]). A frame torn by a crash fails its length or checksum: it and
//! everything after it are dropped on load, and cut off before the next append. A journal whose
//! generation is not the snapshot's was already folded into it (a compaction stopped between
//! writing the snapshot and starting its journal) and is ignored.
//!
//! The rules that make any interruption converge (src/apply.rs follows them): a path is named
//! in a `Creating` step, synced, before anything is made at it; a path is `Forgotten` only after
//! it left the disk; so the record holds every path jailprov made and may only hold some that
//! are gone already, which the next plan forgets.
#![allow(clippy::disallowed_methods)] // the journal lives in the state directory, outside every jail

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{Managed, ManagedKind, State};
use crate::tree::JailPath;

/// The first bytes of a journal file.
const MAGIC: &[u8] = b"jailprov journal\n";
const VERSION: u32 = 1;
/// Magic, format (u32) and generation (u64), little-endian.
pub(super) const HEADER_LEN: usize = MAGIC.len() + 4 + 8;
/// Length (u32) and checksum (8 bytes) before each payload.
const FRAME_HEAD: usize = 4 + 8;

/// One thing an apply did to the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// An apply started: until `Finished`, the next one sweeps temporary files first.
    Began,
    /// Paths about to be made (created, or replaced): jailprov's from this step on, whatever
    /// happens next. A path already recorded keeps its kind's new value and loses its stats
    /// (the next plan reads it again rather than trust a stat of what was there before).
    Creating(Vec<(JailPath, ManagedKind)>),
    /// Paths as apply left them.
    Recorded(Vec<(JailPath, Managed)>),
    /// Paths that left the disk (deleted, or found gone).
    Forgotten(Vec<JailPath>),
    /// A persistent mount jailprov made on the host.
    Mounted(JailPath),
    /// A persistent mount jailprov took off, or found gone.
    Unmounted(JailPath),
    /// The apply completed.
    Finished,
}

impl Step {
    /// What the step does to the record.
    pub fn fold_into(self, state: &mut State) {
        match self {
            Step::Began => state.interrupted = true,
            Step::Creating(paths) => {
                for (path, kind) in paths {
                    state.entries.insert(path, Managed { kind, created: true, jail: None, source: None, hash: None });
                }
            }
            Step::Recorded(entries) => state.entries.extend(entries),
            Step::Forgotten(paths) => {
                for path in paths {
                    state.entries.remove(&path);
                }
            }
            Step::Mounted(target) => {
                state.mounts.insert(target);
            }
            Step::Unmounted(target) => {
                state.mounts.remove(&target);
            }
            Step::Finished => state.interrupted = false,
        }
    }
}

/// The header of a journal extending the snapshot of `generation`.
pub(super) fn header(generation: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&generation.to_le_bytes());
    bytes
}

/// Appends the frame of `step` to `out`.
fn encode(step: &Step, out: &mut Vec<u8>) -> Result<()> {
    let payload = postcard::to_stdvec(step).context("serializing a journal step")?;
    let length = u32::try_from(payload.len()).context("a journal step of more than 4 GiB")?;
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&checksum(&payload));
    out.extend_from_slice(&payload);
    Ok(())
}

fn checksum(payload: &[u8]) -> [u8; 8] {
    let hash = blake3::hash(payload);
    let mut short = [0; 8];
    short.copy_from_slice(&hash.as_bytes()[..8]);
    short
}

/// Folds the journal `bytes` into `state` when it extends the snapshot of `generation`; returns
/// the length of its intact part (0: not this snapshot's journal, or no valid header).
/// `path` names the journal in errors: a journal of another format is refused, not guessed at.
pub(super) fn replay(bytes: &[u8], generation: u64, state: &mut State, path: &Path) -> Result<u64> {
    intact_steps(bytes, generation, path, |step| step.fold_into(state))
}

/// The length of the intact part of the journal `bytes` of the snapshot of `generation`, its
/// steps handed to `each` in order.
pub(super) fn intact_steps(bytes: &[u8], generation: u64, path: &Path, mut each: impl FnMut(Step)) -> Result<u64> {
    let Some(body) = bytes.strip_prefix(MAGIC) else {
        bail!("{} is not a jailprov journal; move it away if it is not needed", path.display());
    };
    if body.len() < 12 {
        // Torn while its header was written: it extends nothing yet.
        return Ok(0);
    }
    let version = u32::from_le_bytes(body[..4].try_into().expect("4 bytes were checked to be there"));
    if version != VERSION {
        bail!("{} has journal format {version}; this jailprov reads format {VERSION}", path.display());
    }
    let extends = u64::from_le_bytes(body[4..12].try_into().expect("8 bytes were checked to be there"));
    if extends != generation {
        return Ok(0);
    }
    let mut at = HEADER_LEN;
    while let Some((step, next)) = frame_at(bytes, at) {
        each(step);
        at = next;
    }
    Ok(at as u64)
}

/// The step whose frame starts at `at`, and where the next one starts; None at the end or at a
/// torn or corrupt frame (everything from there on is dropped).
fn frame_at(bytes: &[u8], at: usize) -> Option<(Step, usize)> {
    let head = bytes.get(at..at.checked_add(FRAME_HEAD)?)?;
    let length = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let start = at + FRAME_HEAD;
    let payload = bytes.get(start..start.checked_add(length)?)?;
    if head[4..] != checksum(payload) {
        return None;
    }
    let step = postcard::from_bytes(payload).ok()?;
    Some((step, start + length))
}

/// An open journal, positioned after its last intact frame, with the steps not yet written.
pub struct Journal {
    pub(super) file: File,
    pub(super) path: std::path::PathBuf,
    /// Bytes on disk (header and intact frames).
    pub(super) len: u64,
    /// The snapshot's size: the journal is folded into a new snapshot once it passes a quarter.
    pub(super) snapshot_len: u64,
    pub(super) unwritten: Vec<u8>,
}

impl Journal {
    /// Opens the journal at `path` (which the store has vetted and created) for appending after
    /// its first `intact` bytes, cutting off a torn tail.
    pub(super) fn open(path: &Path, intact: u64, snapshot_len: u64) -> Result<Journal> {
        let file = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
            .with_context(|| format!("cannot open the journal {}", path.display()))?;
        let metadata = file.metadata().with_context(|| format!("cannot inspect {}", path.display()))?;
        if !metadata.is_file() {
            bail!("the journal {} is not a regular file; remove it", path.display());
        }
        super::check_private(path, &metadata)?;
        let mut file = file;
        file.set_len(intact).with_context(|| format!("cannot cut the torn end of {}", path.display()))?;
        file.seek(SeekFrom::End(0)).with_context(|| format!("cannot seek in {}", path.display()))?;
        Ok(Journal { file, path: path.to_path_buf(), len: intact, snapshot_len, unwritten: Vec::new() })
    }

    /// Folds `step` into `state` and queues it for the next [`Journal::commit`].
    pub fn record(&mut self, state: &mut State, step: Step) -> Result<()> {
        encode(&step, &mut self.unwritten)?;
        step.fold_into(state);
        Ok(())
    }

    /// Writes the queued steps and syncs them: after this returns they survive a crash.
    pub fn commit(&mut self) -> Result<()> {
        if self.unwritten.is_empty() {
            return Ok(());
        }
        let _t = crate::timings::phase("state: journal commit");
        self.file.write_all(&self.unwritten).with_context(|| format!("cannot write {}", self.path.display()))?;
        crate::kill_point::passed();
        self.file.sync_data().with_context(|| format!("cannot sync {}", self.path.display()))?;
        self.len += self.unwritten.len() as u64;
        self.unwritten.clear();
        crate::kill_point::passed();
        Ok(())
    }

    /// Whether the journal, with what is queued, has grown past a quarter of the snapshot (then
    /// replaying it on every load costs more than writing a new snapshot once).
    pub(super) fn wants_compaction(&self) -> bool {
        (self.len + self.unwritten.len() as u64).saturating_mul(4) > self.snapshot_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> JailPath {
        JailPath::parse(text).expect("a valid path")
    }

    fn journal_of(generation: u64, steps: &[Step]) -> Vec<u8> {
        let mut bytes = header(generation);
        for step in steps {
            encode(step, &mut bytes).expect("encodes");
        }
        bytes
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_dropped_and_the_rest_replayed() {
        let steps = [Step::Began, Step::Creating(vec![(path("/a"), ManagedKind::Dir)]), Step::Finished];
        let bytes = journal_of(7, &steps);
        let whole = bytes.len() as u64;
        let mut state = State::default();
        assert_eq!(replay(&bytes, 7, &mut state, Path::new("j")).expect("replays"), whole);
        assert!(state.entries.contains_key(&path("/a")) && !state.interrupted);
        // Cut anywhere inside the last frame: that frame alone is dropped.
        for cut in 1..FRAME_HEAD + 1 {
            let mut state = State::default();
            let intact = replay(&bytes[..bytes.len() - cut], 7, &mut state, Path::new("j")).expect("replays");
            assert!(intact < whole, "cut {cut}");
            assert!(state.interrupted, "cut {cut}: Finished was torn off, the apply counts as interrupted");
            assert!(state.entries.contains_key(&path("/a")), "cut {cut}");
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let mut state = State::default();
        assert!(replay(&flipped, 7, &mut state, Path::new("j")).expect("replays") < whole);
        assert!(state.interrupted, "a corrupt frame is dropped like a torn one");
    }

    #[test]
    fn a_journal_of_another_snapshot_is_ignored() {
        let bytes = journal_of(7, &[Step::Forgotten(vec![path("/a")])]);
        let mut state = State::default();
        state.entries.insert(
            path("/a"),
            Managed { kind: ManagedKind::File, created: true, jail: None, source: None, hash: None },
        );
        assert_eq!(replay(&bytes, 8, &mut state, Path::new("j")).expect("replays"), 0);
        assert!(state.entries.contains_key(&path("/a")), "folded already into snapshot 8");
        assert!(replay(b"something else", 8, &mut state, Path::new("j")).is_err());
    }
}
