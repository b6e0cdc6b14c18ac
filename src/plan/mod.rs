//! Desired tree vs the jail on disk (+ the record of what jailprov manages) -> a Plan, as data.
//!
//! The jail is only read here, through [`JailRoot`], never following a symlink inside it. A file
//! whose stat matches what apply recorded (and whose host source is unchanged) is not read: a
//! no-op plan is a stat walk, not a hash walk.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::desired::{DesiredKind, DesiredNode, DesiredTree, StatPrint};
use crate::host::HostFs;
use crate::jail_root::{escaped, JailError, JailRoot, NodeIdentity, NodeKind, NodeStat, TEMP_PREFIX};
use crate::jailfile::MountKind;
use crate::mountinfo::JailMounts;
use crate::spec::MountSpec;
use crate::state::{Managed, State};
use crate::tree::JailPath;

pub mod closure_memo;
pub mod memo;
pub mod reuse;
pub mod saved;

/// Inline and generated files up to this size get a unified diff in the plan.
const DIFF_LIMIT: u64 = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Replace,
    Delete,
    /// A `persistent = true` mount made on the host.
    Mount,
    /// A persistent mount jailprov made, no longer in the Jailfile.
    Unmount,
}

impl Action {
    pub fn marker(self) -> &'static str {
        match self {
            Action::Create | Action::Mount => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete | Action::Unmount => "-",
        }
    }
}

/// A persistent mount as the plan carries it: all apply needs to make it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMount {
    pub kind: MountKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
    pub readonly: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

impl PlannedMount {
    pub fn of(mount: &MountSpec) -> PlannedMount {
        PlannedMount {
            kind: mount.kind,
            source: mount.source.clone(),
            readonly: mount.readonly,
            options: mount.options.clone(),
            size: mount.size,
            mode: mount.mode,
        }
    }

    /// Back to the Spec's form, for the mount code shared with `enter`.
    pub fn to_spec(&self, target: &JailPath) -> MountSpec {
        MountSpec {
            key: format!("mount at {target}"),
            kind: self.kind,
            source: self.source.clone(),
            target: target.clone(),
            readonly: self.readonly,
            options: self.options.clone(),
            size: self.size,
            mode: self.mode,
            persistent: true,
        }
    }

    /// What the plan says about it: "bind /srv/data", "read-only", "size 1048576"...
    fn describe(&self) -> Vec<String> {
        let kind = format!("{:?}", self.kind).to_lowercase();
        let mut what = vec![match &self.source {
            Some(source) => format!("{kind} {}", source.display()),
            None => kind,
        }];
        if self.readonly {
            what.push("read-only".to_owned());
        }
        what.extend(self.options.iter().cloned());
        if let Some(size) = self.size {
            what.push(format!("size {size}"));
        }
        if let Some(mode) = self.mode {
            what.push(format!("mode {mode:o}"));
        }
        what
    }
}

/// The Jailfile's persistent mounts and what is mounted in the jail now.
#[derive(Debug, Clone, Default)]
pub struct Mounts {
    pub wished: Vec<(JailPath, PlannedMount)>,
    pub active: JailMounts,
}

impl Mounts {
    pub fn of(mounts: &[MountSpec], active: JailMounts) -> Mounts {
        let wished = mounts
            .iter()
            .filter(|mount| mount.persistent)
            .map(|mount| (mount.target.clone(), PlannedMount::of(mount)))
            .collect();
        Mounts { wished, active }
    }
}

/// One change to the jail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub action: Action,
    pub path: JailPath,
    /// file | dir | symlink | device
    pub kind: String,
    /// What differs: "content", "mode 0755 -> 1777", "owner 0:0 -> 1000:1000", "target a -> b",
    /// "symlink -> dir"...
    pub what: Vec<String>,
    /// A unified diff for small text files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// The whole text before and after, when `diff` is there (Ansible's diff contract wants
    /// both). Never saved with a plan: the diff already pins the same content.
    #[serde(skip)]
    pub texts: Option<Box<TextChange>>,
    /// For mount and unmount: the mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<PlannedMount>,
    /// For an update: the node the plan saw (type, device, inode). Apply sets owner and mode
    /// only on that very node, so one swapped in meanwhile is not touched. Absent in plans
    /// saved before jailprov carried it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<NodeIdentity>,
}

/// A small text file's content in the jail now and as the Jailfile wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextChange {
    pub before: String,
    pub after: String,
}

/// A path jailprov must write but did not create, holding something else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub path: JailPath,
    pub reason: String,
}

/// The plan: changes in execution order (deletions deepest first, then the rest parents first).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub conflicts: Vec<Conflict>,
    /// Managed directories left in place because they hold files jailprov did not create.
    pub kept: Vec<JailPath>,
    /// Paths already as desired but not recorded yet (directories that existed, identical
    /// files): apply records them without touching them.
    pub adopt: Vec<JailPath>,
    /// Files verified identical by content whose recorded stat is stale: apply refreshes the
    /// record so the next plan need not read them again.
    pub refresh: Vec<JailPath>,
    /// Managed paths that vanished from the jail: apply forgets them.
    pub forget: Vec<JailPath>,
    /// Recorded persistent mounts that are no longer mounted: apply forgets them.
    pub forget_mounts: Vec<JailPath>,
}

/// Counts per action, as the summary line and JSON show them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    pub replace: usize,
    /// Persistent mounts (shown only when there are some; `default` keeps them optional in
    /// the JSON Schema).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mount: usize,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unmount: usize,
}

fn is_zero(count: &usize) -> bool {
    *count == 0
}

impl Plan {
    pub fn summary(&self) -> Summary {
        let mut summary = Summary::default();
        for change in &self.changes {
            match change.action {
                Action::Create => summary.create += 1,
                Action::Update => summary.update += 1,
                Action::Replace => summary.replace += 1,
                Action::Delete => summary.delete += 1,
                Action::Mount => summary.mount += 1,
                Action::Unmount => summary.unmount += 1,
            }
        }
        summary
    }

    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty() || !self.conflicts.is_empty()
    }
}

/// Everything a node is judged against besides itself.
struct Judge<'a> {
    jail: Option<&'a JailRoot>,
    state: &'a State,
    host: &'a HostFs,
    adopt: bool,
    /// Mount points in the jail that stay mounted through this plan.
    mounted: JailMounts,
}

/// Reads the jail (if it exists) and diffs it against the desired tree and the persistent
/// mount wishes.
pub fn compute(
    desired: &DesiredTree,
    jail: Option<&JailRoot>,
    state: &State,
    prescan: &RecordedScan,
    mounts: &Mounts,
    host: &HostFs,
    adopt: bool,
) -> Result<Plan> {
    Ok(compute_with_scan(desired, jail, state, prescan, mounts, host, adopt, false)?.0)
}

/// Every jail path a plan stat'ed (the recorded ones and the desired ones, sorted, each once)
/// with what it found: all a plan knows of the jail besides the record (content is read only
/// when a stat differs from the record, and a rewrite changes the stat).
pub type JailScan = memo::JailScanPrint;

/// The plan, and (with `want_scan`) the jail scan it was judged on.
#[allow(clippy::too_many_arguments)]
pub fn compute_with_scan(
    desired: &DesiredTree,
    jail: Option<&JailRoot>,
    state: &State,
    prescan: &RecordedScan,
    mounts: &Mounts,
    host: &HostFs,
    adopt: bool,
    want_scan: bool,
) -> Result<(Plan, Option<JailScan>)> {
    let mut plan = Plan::default();
    let (unmounts, new_mounts) = mount_changes(mounts, state, &mut plan);
    // What apply unmounts first is not in the way of the rest.
    let mut mounted = mounts.active.clone();
    mounted.mounts.retain(|(at, _)| !unmounts.iter().any(|change| &change.path == at));
    let judge = Judge { jail, state, host, adopt, mounted };
    let actuals = scan(desired, jail, state, prescan)?;
    let jail_scan = want_scan.then(|| jail_scan_of(desired, &actuals, state, prescan));
    // Both maps are sorted by path: walk the records alongside instead of searching a
    // 50,000-entry tree for every node.
    let mut records = state.entries.iter().peekable();
    let recorded: Vec<Option<&Managed>> = desired
        .nodes
        .keys()
        .map(|path| {
            while records.next_if(|(recorded, _)| *recorded < path).is_some() {}
            records.peek().filter(|(recorded, _)| *recorded == path).map(|(_, managed)| *managed)
        })
        .collect();
    // Each node is judged on its own (in parallel; reading small files' content included),
    // then the verdicts are gathered in path order.
    let nodes: Vec<&DesiredNode> = desired.nodes.values().collect();
    let verdicts: Vec<Result<Verdict>> = nodes
        .par_iter()
        .zip(actuals)
        .zip(recorded)
        .map(|((node, actual), recorded)| judge.node(node, actual, recorded))
        .collect();
    let mut creations = Vec::new();
    for (node, verdict) in nodes.iter().zip(verdicts) {
        match verdict? {
            Verdict::Matches => {}
            Verdict::Change(change) => creations.push(change),
            Verdict::Conflict(conflict) => plan.conflicts.push(conflict),
            Verdict::Adopt => plan.adopt.push(node.path.clone()),
            Verdict::Refresh => plan.refresh.push(node.path.clone()),
        }
    }
    // Unmounts first (what they uncover may be deleted), mounts last (onto created targets).
    let deleted = deletions(desired, &judge, &mut plan)?;
    plan.changes = unmounts;
    plan.changes.extend(deleted);
    plan.changes.extend(creations);
    plan.changes.extend(new_mounts);
    Ok((plan, jail_scan))
}

/// The union of the desired paths' stats and the recorded paths' prescan, in path order.
fn jail_scan_of(
    desired: &DesiredTree,
    actuals: &[Option<NodeStat>],
    state: &State,
    prescan: &RecordedScan,
) -> JailScan {
    // Racy from the moment the jail was first looked at.
    let started = if prescan.started_ns > 0 { prescan.started_ns } else { crate::host::now_ns() };
    let mut scan = JailScan::since(started);
    let recorded: Vec<(&JailPath, Option<&NodeStat>)> = if prescan.stats.len() == state.entries.len() {
        state.entries.keys().zip(prescan.stats.iter().map(Option::as_ref)).collect()
    } else {
        Vec::new()
    };
    let mut recorded = recorded.into_iter().peekable();
    for (path, stat) in desired.nodes.keys().zip(actuals) {
        while let Some((earlier, stat)) = recorded.next_if(|(recorded, _)| *recorded < path) {
            scan.push(earlier, stat);
        }
        recorded.next_if(|(recorded, _)| *recorded == path);
        scan.push(path, stat.as_ref());
    }
    for (path, stat) in recorded {
        scan.push(path, stat);
    }
    scan
}

/// The jail's stat of each path (None: absent), in order, without following any symlink
/// inside the jail.
pub fn stat_jail_paths(jail: &JailRoot, paths: &[&JailPath]) -> Result<Vec<Option<NodeStat>>> {
    scan_paths(jail, paths)
}

/// Persistent mounts to make (wished, not mounted) and to undo (made by jailprov, no longer
/// wished); a recorded mount that is gone is forgotten. Mounts jailprov did not make are never
/// unmounted.
fn mount_changes(mounts: &Mounts, state: &State, plan: &mut Plan) -> (Vec<Change>, Vec<Change>) {
    let change = |action, target: &JailPath, mount: Option<&PlannedMount>| Change {
        action,
        path: target.clone(),
        kind: "mount".to_owned(),
        what: mount.map(PlannedMount::describe).unwrap_or_default(),
        diff: None,
        texts: None,
        mount: mount.cloned(),
        seen: None,
    };
    let mut unmounts = Vec::new();
    let mut new_mounts = Vec::new();
    for (target, wish) in &mounts.wished {
        match mounts.active.at(target) {
            None => new_mounts.push(change(Action::Mount, target, Some(wish))),
            // Made by jailprov with other flags: made again.
            Some(point) if point.readonly != wish.readonly && state.mounts.contains(target) => {
                unmounts.push(change(Action::Unmount, target, None));
                new_mounts.push(change(Action::Mount, target, Some(wish)));
            }
            Some(_) => {}
        }
    }
    for target in &state.mounts {
        if mounts.wished.iter().any(|(wished, _)| wished == target) {
            continue;
        }
        if mounts.active.at(target).is_some() {
            unmounts.push(change(Action::Unmount, target, None));
        } else {
            plan.forget_mounts.push(target.clone());
        }
    }
    // Deepest first, as deletions: a mount inside another comes off before it.
    unmounts.sort_by(|a, b| b.path.cmp(&a.path));
    (unmounts, new_mounts)
}

/// What the plan makes of one desired node.
enum Verdict {
    /// Nothing to do.
    Matches,
    /// Create, replace or update it.
    Change(Change),
    /// Something jailprov did not create is in the way.
    Conflict(Conflict),
    /// A foreign path that already matches: recorded as managed (not created) by apply.
    Adopt,
    /// Matches, but only its content said so: apply records its fresh stat.
    Refresh,
}

impl Judge<'_> {
    fn node(&self, node: &DesiredNode, actual: Option<NodeStat>, recorded: Option<&Managed>) -> Result<Verdict> {
        // A mount point shows the mounted file system's root, not the directory jailprov
        // made; and jailprov never writes into a mounted file system.
        if self.mounted.at(&node.path).is_some() && !node.path.is_root() {
            return Ok(Verdict::Matches);
        }
        if let Some(point) = self.mounted.covering(&node.path) {
            return Ok(Verdict::Conflict(Conflict {
                path: node.path.clone(),
                reason: format!(
                    "it lies inside the file system mounted at {point}; jailprov never writes into a mount"
                ),
            }));
        }
        judge(node, actual, recorded, self)
    }
}

fn judge(node: &DesiredNode, actual: Option<NodeStat>, recorded: Option<&Managed>, context: &Judge) -> Result<Verdict> {
    let Judge { jail, state, host, adopt, .. } = *context;
    let Some(actual) = actual else {
        return Ok(Verdict::Change(change(Action::Create, node, Vec::new())));
    };
    let pending = !state.pending.is_empty() && state.pending.contains(&node.path);
    let managed = recorded.is_some() || pending;
    if !same_kind(&node.kind, actual.kind) {
        let what = vec![format!("{} -> {}", kind_label(actual.kind), node.kind.label())];
        if recorded.is_some_and(|managed| managed.created) || pending || adopt {
            // Replacing a directory removes its whole tree: only when all of it is jailprov's.
            let foreign = match jail {
                Some(jail) if actual.kind == NodeKind::Dir => foreign_inside(jail, &node.path, state)?,
                _ => Vec::new(),
            };
            if foreign.is_empty() {
                return Ok(Verdict::Change(change(Action::Replace, node, what)));
            }
            return Ok(Verdict::Conflict(Conflict {
                path: node.path.clone(),
                reason: format!(
                    "the directory here must become a {}, but it holds what jailprov did not create ({}); move that away first",
                    node.kind.label(),
                    foreign.join(", ")
                ),
            }));
        }
        return Ok(Verdict::Conflict(Conflict {
            path: node.path.clone(),
            reason: format!(
                "a {} is there, not created by jailprov, where a {} must go",
                kind_label(actual.kind),
                node.kind.label()
            ),
        }));
    }
    let jail = jail.context("a path exists only when the jail does")?;
    let comparison = compare(jail, node, &actual, recorded, host)?;
    if comparison.what.is_empty() {
        return Ok(if !managed {
            Verdict::Adopt
        } else if comparison.verified_by_content {
            Verdict::Refresh
        } else {
            Verdict::Matches
        });
    }
    // Directories that were already there are kept in shape; other foreign paths are the
    // user's until --adopt says otherwise.
    if managed || adopt || matches!(node.kind, DesiredKind::Dir) {
        let mut update = change(Action::Update, node, comparison.what);
        update.diff = comparison.diff;
        update.texts = comparison.texts;
        update.seen = Some(actual.identity());
        return Ok(Verdict::Change(update));
    }
    Ok(Verdict::Conflict(Conflict {
        path: node.path.clone(),
        reason: format!("not created by jailprov and differs ({})", comparison.what.join(", ")),
    }))
}

/// How many foreign paths a conflict names before it stops looking.
const FOREIGN_SHOWN: usize = 5;

/// What the directory `dir` holds, at any depth, that jailprov did not create (the first few,
/// escaped for display): a replacement would delete it with the tree. A name that is not UTF-8
/// is no path jailprov ever created.
fn foreign_inside(jail: &JailRoot, dir: &JailPath, state: &State) -> Result<Vec<String>> {
    let mut foreign = Vec::new();
    let mut to_visit = vec![dir.clone()];
    while let Some(current) = to_visit.pop() {
        for name in jail.list(&current)? {
            let child = name.to_str().and_then(|name| JailPath::parse(&format!("{}/{name}", current.as_str())).ok());
            match child {
                Some(child) if state.created(&child) => {
                    if jail.stat(&child)?.is_some_and(|stat| stat.kind == NodeKind::Dir) {
                        to_visit.push(child);
                    }
                }
                _ => {
                    foreign.push(format!("{}/{}", current.as_str().trim_end_matches('/'), escaped(name.as_bytes())));
                    if foreign.len() == FOREIGN_SHOWN {
                        return Ok(foreign);
                    }
                }
            }
        }
    }
    Ok(foreign)
}

fn change(action: Action, node: &DesiredNode, what: Vec<String>) -> Change {
    Change {
        action,
        path: node.path.clone(),
        kind: node.kind.label().to_owned(),
        what,
        diff: None,
        texts: None,
        mount: None,
        seen: None,
    }
}

/// lstat in the jail; a path under a symlink planted in the jail reads as absent (its parent
/// shows up as a type change and is repaired first).
fn absent_if_under_symlink(stat: Result<Option<NodeStat>>) -> Result<Option<NodeStat>> {
    match stat {
        Ok(stat) => Ok(stat),
        Err(error) if error.downcast_ref::<JailError>().is_some() => Ok(None),
        Err(error) => Err(error),
    }
}

fn stat_in_jail(jail: &JailRoot, path: &JailPath) -> Result<Option<NodeStat>> {
    absent_if_under_symlink(jail.stat(path))
}

/// The jail's stat of sorted paths, in order, read in parallel chunks.
fn scan_paths(jail: &JailRoot, paths: &[&JailPath]) -> Result<Vec<Option<NodeStat>>> {
    const CHUNK: usize = 4096;
    let mut stats = vec![None; paths.len()];
    stats.par_chunks_mut(CHUNK).zip(paths.par_chunks(CHUNK)).try_for_each(|(out, chunk)| -> Result<()> {
        for (slot, stat) in out.iter_mut().zip(jail.scan_stats(chunk)) {
            *slot = absent_if_under_symlink(stat)?;
        }
        Ok(())
    })?;
    Ok(stats)
}

/// The jail's stat of every path the record names, in the record's order: read while the host
/// side (walk, closure, desired tree) is still being computed, since neither needs the other.
#[derive(Debug, Default)]
pub struct RecordedScan {
    stats: Vec<Option<NodeStat>>,
    /// When the scan began (ns since the epoch; 0 when nothing was scanned).
    started_ns: i128,
}

pub fn scan_recorded(state: &State, jail: Option<&JailRoot>) -> Result<RecordedScan> {
    let Some(jail) = jail else { return Ok(RecordedScan::default()) };
    let started_ns = crate::host::now_ns();
    let paths: Vec<&JailPath> = state.entries.keys().collect();
    Ok(RecordedScan { stats: scan_paths(jail, &paths)?, started_ns })
}

/// The jail's stat of every desired path, in order: taken from the scan of recorded paths
/// where the record has the path, read now (in parallel) for the rest.
fn scan(
    desired: &DesiredTree,
    jail: Option<&JailRoot>,
    state: &State,
    prescan: &RecordedScan,
) -> Result<Vec<Option<NodeStat>>> {
    let Some(jail) = jail else { return Ok(vec![None; desired.nodes.len()]) };
    let prescanned = prescan.stats.len() == state.entries.len();
    let mut records = state.entries.keys().enumerate().peekable();
    let mut actuals = Vec::with_capacity(desired.nodes.len());
    let mut unknown: Vec<(usize, &JailPath)> = Vec::new();
    for (index, path) in desired.nodes.keys().enumerate() {
        while records.next_if(|(_, recorded)| *recorded < path).is_some() {}
        match records.peek() {
            Some((at, recorded)) if prescanned && *recorded == path => actuals.push(prescan.stats[*at].clone()),
            _ => {
                actuals.push(None);
                unknown.push((index, path));
            }
        }
    }
    let paths: Vec<&JailPath> = unknown.iter().map(|(_, path)| *path).collect();
    for ((index, _), stat) in unknown.iter().zip(scan_paths(jail, &paths)?) {
        actuals[*index] = stat;
    }
    Ok(actuals)
}

fn same_kind(desired: &DesiredKind, actual: NodeKind) -> bool {
    matches!(
        (desired, actual),
        (DesiredKind::File { .. } | DesiredKind::Content { .. }, NodeKind::File)
            | (DesiredKind::Dir, NodeKind::Dir)
            | (DesiredKind::Symlink { .. }, NodeKind::Symlink)
            | (DesiredKind::Device { block: false, .. }, NodeKind::CharDevice)
            | (DesiredKind::Device { block: true, .. }, NodeKind::BlockDevice)
    )
}

pub fn kind_label(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::File => "file",
        NodeKind::Dir => "dir",
        NodeKind::Symlink => "symlink",
        NodeKind::CharDevice | NodeKind::BlockDevice => "device",
        NodeKind::Fifo => "fifo",
        NodeKind::Socket => "socket",
    }
}

struct Comparison {
    what: Vec<String>,
    diff: Option<String>,
    texts: Option<Box<TextChange>>,
    /// The content had to be read (the recorded stat did not vouch for it) and was identical.
    verified_by_content: bool,
}

fn compare(
    jail: &JailRoot,
    node: &DesiredNode,
    actual: &NodeStat,
    recorded: Option<&Managed>,
    host: &HostFs,
) -> Result<Comparison> {
    let mut comparison = Comparison { what: Vec::new(), diff: None, texts: None, verified_by_content: false };
    match &node.kind {
        DesiredKind::File { source, source_print } => {
            let vouched = recorded.is_some_and(|managed| {
                managed.jail == Some(print_of(actual)) && managed.source.as_ref() == Some(source_print)
            });
            if !vouched {
                if actual.size != source_print.size || !same_content(jail, &node.path, host, source, source_print.size)?
                {
                    comparison.what.push("content".into());
                    comparison.diff =
                        Some(host_source_diff(jail, &node.path, actual.size, host, source, source_print.size)?);
                } else {
                    comparison.verified_by_content = true;
                }
            }
        }
        DesiredKind::Content { bytes } => {
            // Held whole only up to the diff size, or the Jailfile's own content when longer.
            let limit = (DIFF_LIMIT * 16).max(bytes.len() as u64);
            let current = read_small(jail, &node.path, actual.size, limit)?;
            if current.as_deref() != Some(bytes.as_slice()) {
                comparison.what.push("content".into());
                if let Some((diff, texts)) = current.and_then(|current| unified_diff(&node.path, &current, bytes)) {
                    comparison.diff = Some(diff);
                    comparison.texts = Some(Box::new(texts));
                }
            }
        }
        DesiredKind::Symlink { target } => {
            let current = jail.read_link(&node.path)?;
            if current.as_bytes() != target.as_bytes() {
                comparison.what.push(format!("target {} -> {target}", escaped(current.as_bytes())));
            }
        }
        DesiredKind::Device { rdev, .. } => {
            if actual.rdev != *rdev {
                comparison.what.push(format!("device {} -> {}", device_numbers(actual.rdev), device_numbers(*rdev)));
            }
        }
        DesiredKind::Dir => {}
    }
    if !matches!(node.kind, DesiredKind::Symlink { .. }) && actual.mode != node.mode {
        comparison.what.push(format!("mode {:04o} -> {:04o}", actual.mode, node.mode));
    }
    if (actual.uid, actual.gid) != (node.uid, node.gid) {
        comparison.what.push(format!("owner {}:{} -> {}:{}", actual.uid, actual.gid, node.uid, node.gid));
    }
    Ok(comparison)
}

pub fn print_of(stat: &NodeStat) -> StatPrint {
    StatPrint { size: stat.size, mtime_ns: stat.mtime_ns, ctime_ns: stat.ctime_ns, ino: stat.ino }
}

fn device_numbers(rdev: u64) -> String {
    format!("{}:{}", nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev))
}

/// Compares a jail file with its host source byte for byte (sizes were equal when stat'ed).
/// Both reads stop at `size` + 1 byte (enough to notice that either grew): a jail process
/// may swap in a file of any length between the stat and the read, and a file that is longer or
/// shorter than `size` now is simply not the same content.
fn same_content(jail: &JailRoot, path: &JailPath, host: &HostFs, source: &Path, size: u64) -> Result<bool> {
    let jail_file = jail.open_read(path)?;
    let mut in_jail = std::io::BufReader::with_capacity(64 * 1024, jail_file.take(size.saturating_add(1)));
    let host_file = host.open(source).with_context(|| format!("cannot read {} on the host", source.display()))?;
    let mut on_host = std::io::BufReader::with_capacity(64 * 1024, host_file.take(size.saturating_add(1)));
    let mut left = [0u8; 64 * 1024];
    let mut right = [0u8; 64 * 1024];
    loop {
        let read = on_host.read(&mut left).with_context(|| format!("cannot read {}", source.display()))?;
        if read == 0 {
            // The jail file must end here too.
            return Ok(in_jail.read(&mut right[..1]).with_context(|| format!("cannot read {path}"))? == 0);
        }
        match in_jail.read_exact(&mut right[..read]) {
            Ok(()) => {}
            // Shorter than its source now: truncated since the stat.
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(error) => return Err(error).with_context(|| format!("cannot read {path} in the jail")),
        }
        if left[..read] != right[..read] {
            return Ok(false);
        }
    }
}

/// The jail file's bytes when it holds at most `limit` bytes; None when it is longer, at the
/// stat or while being read. The read stops at `limit` + 1 bytes whatever the earlier stat said:
/// a jail process flipping the file between 10 bytes and a 1 TiB sparse file must not make plan
/// read (and hold) a terabyte.
fn read_small(jail: &JailRoot, path: &JailPath, size: u64, limit: u64) -> Result<Option<Vec<u8>>> {
    if size > limit {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    jail.open_read(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {path} in the jail"))?;
    if bytes.len() as u64 > limit {
        return Ok(None);
    }
    Ok(Some(bytes))
}

/// What changed in a file copied from the host: a unified diff (jail -> host source, the source
/// named in its header) when both are small text, else "binary, N bytes → M bytes". Host drift
/// shows as what it changed, not only as a path.
fn host_source_diff(
    jail: &JailRoot,
    path: &JailPath,
    jail_size: u64,
    host: &HostFs,
    source: &Path,
    source_size: u64,
) -> Result<String> {
    let sizes = |what: &str| format!("{what}, {jail_size} bytes → {source_size} bytes (from {})", source.display());
    if jail_size > DIFF_LIMIT || source_size > DIFF_LIMIT {
        return Ok(sizes("too large to diff"));
    }
    let Some(current) = read_small(jail, path, jail_size, DIFF_LIMIT)? else { return Ok(sizes("too large to diff")) };
    let mut wanted = Vec::new();
    host.open(source)
        .and_then(|file| file.take(DIFF_LIMIT + 1).read_to_end(&mut wanted))
        .with_context(|| format!("cannot read {} on the host", source.display()))?;
    let (Ok(old), Ok(new)) = (std::str::from_utf8(&current), std::str::from_utf8(&wanted)) else {
        return Ok(sizes("binary"));
    };
    if old.contains('\0') || new.contains('\0') || wanted.len() as u64 > DIFF_LIMIT {
        return Ok(sizes("binary"));
    }
    let diff = similar::TextDiff::from_lines(old, new);
    Ok(diff
        .unified_diff()
        .context_radius(3)
        .header(&format!("{path} (jail)"), &format!("{} (host)", source.display()))
        .to_string())
}

/// A unified diff (jail -> Jailfile) for small text, and both texts whole.
fn unified_diff(path: &JailPath, old: &[u8], new: &[u8]) -> Option<(String, TextChange)> {
    if old.len() as u64 > DIFF_LIMIT || new.len() as u64 > DIFF_LIMIT {
        return None;
    }
    let (old, new) = (std::str::from_utf8(old).ok()?, std::str::from_utf8(new).ok()?);
    let diff = similar::TextDiff::from_lines(old, new);
    let text = diff
        .unified_diff()
        .context_radius(3)
        .header(&format!("{path} (jail)"), &format!("{path} (Jailfile)"))
        .to_string();
    Some((text, TextChange { before: old.to_owned(), after: new.to_owned() }))
}

/// Managed paths the desired tree no longer has, deepest first; directories still holding
/// files jailprov did not create are kept.
fn deletions(desired: &DesiredTree, context: &Judge, plan: &mut Plan) -> Result<Vec<Change>> {
    let Judge { jail, state, .. } = *context;
    let Some(jail) = jail else {
        plan.forget.extend(state.entries.keys().filter(|path| !desired.nodes.contains_key(*path)).cloned());
        return Ok(Vec::new());
    };
    let candidates: BTreeSet<&JailPath> = state
        .entries
        .iter()
        .filter(|(path, managed)| managed.created && !desired.nodes.contains_key(*path))
        .map(|(path, _)| path)
        .chain(state.pending.iter().filter(|path| !desired.nodes.contains_key(*path)))
        .collect();
    let mut changes = Vec::new();
    for path in candidates.iter().rev() {
        // Never into a mounted file system, and never a mount point.
        if context.mounted.covering(path).is_some() || context.mounted.at(path).is_some() {
            plan.kept.push((*path).clone());
            continue;
        }
        let actual = match jail.stat(path) {
            Ok(actual) => actual,
            // A parent is a file or a symlink now (replaced by an apply a kill stopped before it
            // recorded the deletion, or by a jail process): the path jailprov made cannot be
            // there, only something reached through that parent, which is never followed.
            Err(error) if error.downcast_ref::<JailError>().is_some() => {
                plan.forget.push((*path).clone());
                continue;
            }
            Err(error) => return Err(error),
        };
        let Some(actual) = actual else {
            plan.forget.push((*path).clone());
            continue;
        };
        if actual.kind == NodeKind::Dir {
            // Children come first (deepest first): a child kept for its foreign files keeps
            // its parent too.
            // A name that is not UTF-8 is no path jailprov ever created: foreign.
            // A temporary file an interrupted apply left is swept by the next apply before it
            // deletes: it keeps nothing.
            let foreign = jail.list(path)?.into_iter().any(|name| {
                if state.interrupted && name.as_bytes().starts_with(TEMP_PREFIX.as_bytes()) {
                    return false;
                }
                name.to_str()
                    .and_then(|name| JailPath::parse(&format!("{}/{name}", path.as_str())).ok())
                    .is_none_or(|child| !candidates.contains(&child) || plan.kept.contains(&child))
            });
            if foreign {
                plan.kept.push((*path).clone());
                continue;
            }
        }
        changes.push(Change {
            action: Action::Delete,
            path: (*path).clone(),
            kind: kind_label(actual.kind).to_owned(),
            what: Vec::new(),
            diff: None,
            texts: None,
            mount: None,
            seen: None,
        });
    }
    Ok(changes)
}

/// A stable digest of the desired tree (what the Jailfile and the host would give).
pub fn desired_digest(desired: &DesiredTree) -> String {
    let mut hasher = blake3::Hasher::new();
    for node in desired.nodes.values() {
        hasher.update(node.path.as_str().as_bytes());
        hasher.update(&[0]);
        hasher.update(format!("{:o} {} {}", node.mode, node.uid, node.gid).as_bytes());
        match &node.kind {
            DesiredKind::File { source, source_print } => {
                hasher.update(format!("file {} {:?}", source.display(), source_print).as_bytes());
            }
            DesiredKind::Content { bytes } => {
                hasher.update(b"content ");
                hasher.update(bytes);
            }
            DesiredKind::Dir => {
                hasher.update(b"dir");
            }
            DesiredKind::Symlink { target } => {
                hasher.update(format!("symlink {target}").as_bytes());
            }
            DesiredKind::Device { block, rdev } => {
                hasher.update(format!("device {block} {rdev}").as_bytes());
            }
        }
        hasher.update(&[0]);
    }
    hasher.finalize().to_hex().to_string()
}

/// A digest of the jail paths a plan looked at, as they are now (stat level).
pub fn jail_digest(desired: &DesiredTree, jail: Option<&JailRoot>, state: &State) -> Result<String> {
    let mut hasher = blake3::Hasher::new();
    let Some(jail) = jail else { return Ok("no jail yet".to_owned()) };
    let paths: BTreeSet<&JailPath> = desired.nodes.keys().chain(state.entries.keys()).collect();
    for path in paths {
        hasher.update(path.as_str().as_bytes());
        match stat_in_jail(jail, path)? {
            Some(stat) => {
                hasher.update(
                    format!("{:?} {:o} {} {} {:?}", stat.kind, stat.mode, stat.uid, stat.gid, print_of(&stat))
                        .as_bytes(),
                );
            }
            None => {
                hasher.update(b" absent");
            }
        }
        hasher.update(&[0]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}
