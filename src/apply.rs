//! Executes a Plan through the jail writer, recording what jailprov manages as it goes.
//!
//! Crash safety (write-ahead, src/state/journal.rs): every path about to be made is in the
//! record, synced, before it is made; a deleted path leaves the record only after it left the
//! disk; files are written to a temporary name and renamed into place. So after a `kill -9` at
//! any moment the record holds every path jailprov made (perhaps some already gone, which the
//! next plan forgets), the next apply sees the apply interrupted, sweeps the temporary files and
//! converges on what an uninterrupted apply would have left (tests/interrupt.rs).

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::desired::{DesiredKind, DesiredNode, DesiredTree, StatPrint};
use crate::enter::sys::RealSys;
use crate::host::HostFs;
use crate::jail_root::{ChangedUnderfoot, JailRoot, NodeKind, NodeStat};
use crate::plan::{print_of, Action, Change, Plan};
use crate::state::{Journal, Managed, ManagedKind, State, StateStore, Step};
use crate::tree::JailPath;

/// What happened, for the closing line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    pub added: usize,
    pub changed: usize,
    pub destroyed: usize,
    pub mounted: usize,
    pub unmounted: usize,
}

/// Applies `plan` (computed from `desired` against this jail and `state`).
pub fn apply(
    plan: &Plan,
    desired: &DesiredTree,
    jail: &JailRoot,
    host: &HostFs,
    state: &mut State,
    store: &StateStore,
    report: &mut dyn FnMut(&Change),
) -> Result<Outcome> {
    if !plan.conflicts.is_empty() {
        let paths: Vec<String> =
            plan.conflicts.iter().map(|conflict| format!("{}: {}", conflict.path, conflict.reason)).collect();
        bail!(
            "refusing to overwrite what jailprov did not create (use --adopt to take it over):\n  {}",
            paths.join("\n  ")
        );
    }
    let settled = settle_legacy_pending(jail, state)?;
    let mut journal = store.journal(state)?;
    let sweep = state.interrupted;
    // Queued, synced with the first step that must be: before any temporary file is made.
    journal.record(state, Step::Began)?;
    if !settled.is_empty() {
        journal.record(state, Step::Creating(settled))?;
    }
    if sweep {
        // Still interrupted until the sweep is done, whatever file said so before.
        journal.commit()?;
    }
    store.remove_legacy_intent()?;
    if sweep {
        sweep_temporary_files(jail, desired, state)?;
    }
    let mut outcome = Outcome::default();
    let of = |action: Action| plan.changes.iter().filter(move |change| change.action == action);
    // The plan's order: unmounts (what they uncover may be deleted), deletions (deepest first),
    // creations and updates (parents first), mounts (onto created targets).
    for change in of(Action::Unmount) {
        report(change);
        crate::enter::mounts::unmount(&RealSys::default(), jail, &change.path)?;
        journal.record(state, Step::Unmounted(change.path.clone()))?;
        journal.commit()?;
        outcome.unmounted += 1;
    }
    delete_phase(plan, jail, state, &mut journal, report, &mut outcome)?;
    let untouched = write_phase(plan, desired, jail, host, state, &mut journal, report, &mut outcome)?;
    for change in of(Action::Mount) {
        report(change);
        let mount =
            change.mount.as_ref().with_context(|| format!("the plan mounts {} but says not what", change.path))?;
        let spec = mount.to_spec(&change.path);
        for operation in crate::enter::mounts::operations(&spec) {
            crate::enter::mounts::realize(&RealSys::default(), jail, &operation)?;
        }
        // Recorded at once: a crash right after must not lose track of a host mount.
        journal.record(state, Step::Mounted(change.path.clone()))?;
        journal.commit()?;
        outcome.mounted += 1;
    }
    store.finish(journal, state)?;
    if !untouched.is_empty() {
        bail!(
            "{} path(s) changed while jailprov worked and were left alone; everything else was applied \
             ({} added, {} changed, {} destroyed):\n  {}\n\
             Something in the jail may be racing jailprov: look at these paths, then run `jailprov apply` again",
            untouched.len(),
            outcome.added,
            outcome.changed,
            outcome.destroyed,
            untouched.join("\n  ")
        );
    }
    Ok(outcome)
}

/// Deletes what the plan deletes; the record forgets each path only once the disk has (and the
/// deletions are flushed), so a crash in between leaves it recorded, and the next plan forgets it.
fn delete_phase(
    plan: &Plan,
    jail: &JailRoot,
    state: &mut State,
    journal: &mut Journal,
    report: &mut dyn FnMut(&Change),
    outcome: &mut Outcome,
) -> Result<()> {
    let mut gone = Vec::new();
    for change in plan.changes.iter().filter(|change| change.action == Action::Delete) {
        report(change);
        // A directory that gained a foreign file since the plan stays, and stays ours.
        if delete(jail, &change.path, &change.kind)? {
            gone.push(change.path.clone());
            outcome.destroyed += 1;
        }
    }
    if !gone.is_empty() {
        flush(jail, &gone.iter().collect::<Vec<_>>())?;
        journal.record(state, Step::Forgotten(gone))?;
        journal.commit()?;
    }
    Ok(())
}

/// Creates, replaces and updates, then records what was written, adopted, refreshed and found
/// gone. Returns the paths changed underfoot (left alone).
#[allow(clippy::too_many_arguments)]
fn write_phase(
    plan: &Plan,
    desired: &DesiredTree,
    jail: &JailRoot,
    host: &HostFs,
    state: &mut State,
    journal: &mut Journal,
    report: &mut dyn FnMut(&Change),
    outcome: &mut Outcome,
) -> Result<Vec<String>> {
    let changes: Vec<&Change> = plan
        .changes
        .iter()
        .filter(|change| matches!(change.action, Action::Create | Action::Replace | Action::Update))
        .collect();
    let mut creating = Vec::new();
    for change in changes.iter().filter(|change| change.action != Action::Update) {
        let node = desired_node(desired, change)?;
        creating.push((node.path.clone(), ManagedKind::of(&node.kind)));
    }
    if !creating.is_empty() {
        journal.record(state, Step::Creating(creating))?;
    }
    // Write-ahead: whatever is made from here on is already in the record.
    journal.commit()?;
    let mut untouched: Vec<String> = Vec::new();
    let mut recorded = Vec::new();
    let written_paths: Vec<&JailPath> = changes.iter().map(|change| &change.path).collect();
    for change in changes {
        report(change);
        let node = desired_node(desired, change)?;
        let written = match change.action {
            Action::Create => create(jail, host, node),
            Action::Replace => remove_whatever(jail, &node.path).and_then(|()| create(jail, host, node)),
            _ => update(jail, host, node, change),
        };
        // A node swapped under jailprov's feet is left alone, unrecorded; the rest goes on.
        let written = match written {
            Err(error) => match error.downcast_ref::<ChangedUnderfoot>() {
                Some(changed) => {
                    untouched.push(changed.to_string());
                    if change.action != Action::Update {
                        // What is there now is not what jailprov made.
                        journal.record(state, Step::Forgotten(vec![node.path.clone()]))?;
                        journal.commit()?;
                    }
                    continue;
                }
                None => return Err(error),
            },
            Ok(written) => written,
        };
        match change.action {
            Action::Create => outcome.added += 1,
            Action::Replace => {
                outcome.added += 1;
                outcome.destroyed += 1;
            }
            _ => outcome.changed += 1,
        }
        let created = change.action != Action::Update || state.created(&node.path);
        recorded.push(entry(jail, node, created, written)?);
    }
    for path in &plan.adopt {
        if let Some(node) = desired.nodes.get(path) {
            recorded.push(entry(jail, node, false, None)?);
        }
    }
    for path in &plan.refresh {
        if let Some(node) = desired.nodes.get(path) {
            recorded.push(entry(jail, node, state.created(path), None)?);
        }
    }
    // Flushed before the record vouches for the stats of what was written.
    flush(jail, &written_paths)?;
    if !recorded.is_empty() {
        journal.record(state, Step::Recorded(recorded))?;
    }
    if !plan.forget.is_empty() {
        journal.record(state, Step::Forgotten(plan.forget.clone()))?;
    }
    for target in &plan.forget_mounts {
        journal.record(state, Step::Unmounted(target.clone()))?;
    }
    Ok(untouched)
}

/// How many written paths are flushed one by one (fsync of each and of its directory); more,
/// and one syncfs of the jail's file system is cheaper.
const FLUSHED_ONE_BY_ONE: usize = 64;

/// Makes what was written at `paths` durable: before the journal records it as done, so that a
/// power loss cannot leave a record vouching for a stat the disk never got.
fn flush(jail: &JailRoot, paths: &[&JailPath]) -> Result<()> {
    let _t = crate::timings::phase("apply: flush");
    if paths.is_empty() {
        return Ok(());
    }
    if paths.len() <= FLUSHED_ONE_BY_ONE {
        jail.sync_paths(paths)
    } else {
        jail.sync()
    }
}

fn desired_node<'d>(desired: &'d DesiredTree, change: &Change) -> Result<&'d DesiredNode> {
    desired
        .nodes
        .get(&change.path)
        .with_context(|| format!("the plan changes {} but the Jailfile no longer has it", change.path))
}

/// The paths an apply of a jailprov before the journal was about to create when it stopped (its
/// intent file): those on disk are recorded as made by jailprov, the rest dropped.
fn settle_legacy_pending(jail: &JailRoot, state: &mut State) -> Result<Vec<(JailPath, ManagedKind)>> {
    let mut settled = Vec::new();
    for path in std::mem::take(&mut state.pending) {
        if state.entries.contains_key(&path) {
            continue;
        }
        let kind = match jail.stat(&path) {
            Ok(Some(stat)) => match stat.kind {
                NodeKind::File => ManagedKind::File,
                NodeKind::Dir => ManagedKind::Dir,
                NodeKind::Symlink => ManagedKind::Symlink,
                NodeKind::CharDevice | NodeKind::BlockDevice => ManagedKind::Device,
                // jailprov makes no FIFO or socket: a jail process did.
                NodeKind::Fifo | NodeKind::Socket => continue,
            },
            _ => continue,
        };
        settled.push((path, kind));
    }
    Ok(settled)
}

/// A file apply has just written: the blake3 of the bytes (hashed as they were copied, so that
/// recording it reads nothing again) and its stat, taken through the written file's fd.
struct Written {
    hash: [u8; 32],
    stat: NodeStat,
}

/// Makes the node; for a file, returns what was written.
fn create(jail: &JailRoot, host: &HostFs, node: &DesiredNode) -> Result<Option<Written>> {
    match &node.kind {
        DesiredKind::Dir => jail.mkdir(&node.path, node.mode, node.uid, node.gid).map(|()| None),
        DesiredKind::File { source, source_print } => copy_file(jail, host, node, source, source_print).map(Some),
        DesiredKind::Content { bytes } => {
            let stat = jail.write_file(&node.path, &mut bytes.as_slice(), node.mode, node.uid, node.gid, None)?;
            Ok(Some(Written { hash: *blake3::hash(bytes).as_bytes(), stat }))
        }
        DesiredKind::Symlink { target } => jail.symlink(&node.path, target, node.uid, node.gid).map(|()| None),
        DesiredKind::Device { block, rdev } => {
            let kind = if *block { NodeKind::BlockDevice } else { NodeKind::CharDevice };
            jail.mknod(&node.path, kind, *rdev, node.mode, node.uid, node.gid).map(|()| None)
        }
    }
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..read]);
        Ok(read)
    }
}

fn copy_file(jail: &JailRoot, host: &HostFs, node: &DesiredNode, source: &Path, print: &StatPrint) -> Result<Written> {
    // Whoever can write where the source lies may have swapped it (or a directory above it)
    // for a symlink since the plan: HostFs::open_unchanged never follows a final symlink, never
    // waits on a FIFO, refuses another inode or a changed stat, and reads exactly the planned
    // size (a file that shrank mid-copy is an error, not a short copy).
    let file = host.open_unchanged(source, print)?;
    // The copy keeps the host file's modification time, as `cp -p` would.
    let mut hashing = Hashing { inner: file, hasher: blake3::Hasher::new() };
    let stat = jail.write_file(&node.path, &mut hashing, node.mode, node.uid, node.gid, Some(print.mtime_ns))?;
    Ok(Written { hash: *hashing.hasher.finalize().as_bytes(), stat })
}

/// Rewrites content/target/device when they differ (returning what `create` does); otherwise
/// only mode and owner, of the very node the plan saw (None: the content was not written).
fn update(jail: &JailRoot, host: &HostFs, node: &DesiredNode, change: &Change) -> Result<Option<Written>> {
    let rewrite =
        change.what.iter().any(|item| item == "content" || item.starts_with("target ") || item.starts_with("device "));
    if rewrite {
        return create(jail, host, node);
    }
    let seen = change.seen.as_ref().with_context(|| {
        format!("the plan changes the mode or owner of {} but does not say which node it saw there", change.path)
    })?;
    jail.set_attributes(&node.path, seen, node.mode, node.uid, node.gid).map(|()| None)
}

/// Deletes a managed path; false when a directory is no longer empty and so was kept.
fn delete(jail: &JailRoot, path: &JailPath, kind: &str) -> Result<bool> {
    if kind == "dir" {
        match jail.stat(path)? {
            Some(_) => jail.remove_dir(path),
            None => Ok(true),
        }
    } else {
        jail.remove_file(path)?;
        Ok(true)
    }
}

/// Clears what jailprov created at a path before a replacement.
fn remove_whatever(jail: &JailRoot, path: &JailPath) -> Result<()> {
    match jail.stat(path)? {
        Some(stat) if stat.kind == NodeKind::Dir => jail.remove_tree(path),
        Some(_) => jail.remove_file(path).map(|_| ()),
        None => Ok(()),
    }
}

/// The record of a path apply made or checked, with the stats that let the next plan skip
/// reading it, and the hash of a file's content: from `written` when apply just wrote it (a file
/// a jail process renamed over it since is then another inode, which the next plan reads and
/// replaces), else read from the jail.
fn entry(jail: &JailRoot, node: &DesiredNode, created: bool, written: Option<Written>) -> Result<(JailPath, Managed)> {
    let (stat, written) = match written {
        Some(Written { hash, stat }) => (stat, Some(hash)),
        None => (
            jail.stat(&node.path)?.with_context(|| format!("{} vanished right after it was written", node.path))?,
            None,
        ),
    };
    let (jail_print, source) = match &node.kind {
        DesiredKind::File { source_print, .. } => (Some(print_of(&stat)), Some(*source_print)),
        _ => (None, None),
    };
    // What `jailprov check` verifies every byte of the file against (src/check.rs).
    let hash = match written {
        Some(hash) => Some(hash),
        None => crate::state::content_hash::recorded_hash(jail, node)?,
    };
    Ok((node.path.clone(), Managed { kind: ManagedKind::of(&node.kind), created, jail: jail_print, source, hash }))
}

/// Removes temporary files an interrupted apply left in the directories jailprov writes to.
fn sweep_temporary_files(jail: &JailRoot, desired: &DesiredTree, state: &State) -> Result<usize> {
    let mut removed = 0;
    let dirs = desired
        .nodes
        .values()
        .filter(|node| node.kind == DesiredKind::Dir)
        .map(|node| &node.path)
        .chain(state.entries.iter().filter(|(_, managed)| managed.kind == ManagedKind::Dir).map(|(path, _)| path));
    let root = JailPath::root();
    let mut seen = std::collections::BTreeSet::new();
    for dir in dirs.chain(std::iter::once(&root)) {
        if seen.insert(dir.clone()) && matches!(jail.stat(dir), Ok(Some(stat)) if stat.kind == NodeKind::Dir) {
            removed += jail.remove_temp_files(dir)?;
        }
    }
    Ok(removed)
}
