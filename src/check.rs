//! `jailprov check`: audits a jail on disk, reading it only through [`JailRoot`] (never following
//! a symlink planted in it), and with `--fix` repairs what apply would repair.
//!
//! Every managed file is verified against the blake3 apply recorded, over all of its bytes
//! (jailkit's jk_check hashes one 1 KB block and misses same-size edits past it). The rest is a
//! walk of the whole jail, managed or not: set-id files, writable directories without the sticky
//! bit, undeclared devices, symlinks leading out or to host-sensitive paths, hard links shared
//! with host files, executables and libraries others can write, and the root and its ancestors.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::Serialize;

use crate::apply;
use crate::desired::{DesiredKind, DesiredTree, SETID_BITS};
use crate::host::HostFs;
use crate::jail_root::{escaped, DirOpening, JailDir, JailRoot, NodeKind, NodeStat};
use crate::plan::{self, Action, Change, Mounts, Plan, RecordedScan};
use crate::progress::Progress;
use crate::state::content_hash::{content_hash, ContentHash};
use crate::state::lock::hash_text;
use crate::state::{ManagedKind, State, StateStore};
use crate::tree::JailPath;

/// How deep the walk descends; a jail process could build an absurdly deep tree.
const MAX_DEPTH: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One thing found wrong, with a one-line fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// JP001...: see the README's table of codes.
    pub code: &'static str,
    pub severity: Severity,
    pub path: String,
    pub message: String,
    pub fix: String,
}

/// The codes, for the README and `--format json` consumers.
pub const CODES: &[(&str, &str)] = &[
    ("JP001", "a managed file's content differs from the hash apply recorded"),
    ("JP002", "a managed file has no recorded hash (applied by an older jailprov)"),
    ("JP003", "a managed path differs from the Jailfile (missing, mode, owner, target, type)"),
    ("JP004", "something jailprov did not create is where the Jailfile wants its own"),
    ("JP005", "a managed path the Jailfile no longer has"),
    ("JP010", "a setuid or setgid file"),
    ("JP011", "a world- or group-writable directory without the sticky bit"),
    ("JP012", "a device node the Jailfile does not declare"),
    ("JP013", "a symlink whose target climbs out of the jail"),
    ("JP014", "a symlink to a host-sensitive path"),
    ("JP015", "a hard link shared with a host file"),
    ("JP016", "an executable or library a non-root user can write"),
    ("JP017", "the jail root or an ancestor is not root-owned or is writable by others"),
    ("JP018", "a persistent mount of the Jailfile is not mounted, or one jailprov made is left over"),
    ("JP019", "a subtree or managed file check could not inspect (unreadable, too deep, another file system)"),
];

/// Paths that lead into the host's kernel or its root once the jail mounts /proc or /dev; with
/// [`crate::host::SECRETS`], what a jail must not reach.
const KERNEL_DOORS: &[&str] = &["/dev/mem", "/dev/kmem", "/dev/port", "/proc/kcore", "/proc/sysrq-trigger"];

/// Under /proc/PID/: the process's root, cwd and open files, which lead to the host's tree.
const SENSITIVE_PROC_ENTRIES: &[&str] = &["root", "cwd", "fd", "map_files"];

/// The result of an audit.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    pub findings: Vec<Finding>,
    /// Managed files whose every byte was hashed.
    pub verified: usize,
}

impl Audit {
    pub fn errors(&self) -> usize {
        self.findings.iter().filter(|finding| finding.severity == Severity::Error).count()
    }

    pub fn warnings(&self) -> usize {
        self.findings.len() - self.errors()
    }
}

fn finding(code: &'static str, severity: Severity, path: &str, message: String, fix: &str) -> Finding {
    Finding { code, severity, path: path.to_owned(), message, fix: fix.to_owned() }
}

/// Audits the jail against the record and the desired tree; `show_progress`: a bar of the
/// hashing on a terminal (src/progress.rs).
pub fn audit(
    desired: &DesiredTree,
    mounts: &Mounts,
    jail: &JailRoot,
    state: &State,
    host: &HostFs,
    root: &Path,
    show_progress: bool,
) -> Result<Audit> {
    let mut audit = Audit::default();
    if let Err(error) = crate::root_safety::check(root) {
        audit.findings.push(finding(
            "JP017",
            Severity::Error,
            "/",
            format!("{error:#}"),
            "make the jail root and every directory above it root-owned and not writable by others",
        ));
    }
    let modified = verify_hashes(jail, state, &mut audit, show_progress)?;
    drift(desired, mounts, jail, state, host, &modified, &mut audit)?;
    walk(desired, mounts, state, jail, host, &mut audit)?;
    audit.findings.sort_by(|a, b| (a.severity, &a.path, a.code).cmp(&(b.severity, &b.path, b.code)));
    Ok(audit)
}

/// JP001/JP002: every managed file hashed in full; returns the paths whose content must be
/// rewritten to match the record.
fn verify_hashes(jail: &JailRoot, state: &State, audit: &mut Audit, show_progress: bool) -> Result<BTreeSet<JailPath>> {
    let files: Vec<(&JailPath, Option<[u8; 32]>, u64)> = state
        .entries
        .iter()
        .filter(|(_, managed)| managed.kind == ManagedKind::File)
        .map(|(path, managed)| (path, managed.hash, expected_size(managed)))
        .collect();
    // (path, recorded hash, what hashing it now found): None when it is not a regular file any
    // more, an error when it could not be read.
    type Verified<'a> = (&'a JailPath, Option<[u8; 32]>, Option<Result<ContentHash>>);
    let bytes = files.iter().map(|(_, _, expected)| *expected).sum();
    let progress = Progress::items_and_bytes("check", files.len() as u64, bytes, show_progress);
    let results: Vec<Verified> = files
        .par_iter()
        .map(|(path, recorded, expected)| {
            // A path that is gone or no longer a regular file is the plan's finding (JP003).
            let is_file = matches!(jail.stat(path), Ok(Some(stat)) if stat.kind == NodeKind::File);
            let now = (is_file && recorded.is_some()).then(|| content_hash(jail, path, *expected));
            progress.step(*expected);
            (*path, *recorded, now)
        })
        .collect();
    progress.finish();
    let mut modified = BTreeSet::new();
    for (path, recorded, now) in results {
        let differs = |message: String| {
            finding(
                "JP001",
                Severity::Error,
                path.as_str(),
                message,
                "`jailprov check --fix` (or apply) rewrites it from the Jailfile's source",
            )
        };
        match (recorded, now) {
            (Some(recorded), Some(Ok(ContentHash::Whole(now)))) => {
                audit.verified += 1;
                if recorded != now {
                    audit.findings.push(differs(format!(
                        "content differs from what apply wrote ({} recorded, {} now)",
                        short(&recorded),
                        short(&now)
                    )));
                    modified.insert(path.clone());
                }
            }
            (Some(_), Some(Ok(ContentHash::Changed(why)))) => {
                audit.findings.push(differs(format!(
                    "content differs from what apply wrote: the file {why} (it was not hashed past that)"
                )));
                modified.insert(path.clone());
            }
            (Some(_), Some(Err(error))) => audit.findings.push(finding(
                "JP019",
                Severity::Error,
                path.as_str(),
                format!("check could not read it to verify its content: {error:#}"),
                "look at it by hand (a jail process may be replacing it), then run check again",
            )),
            (None, _) => {
                audit.findings.push(finding(
                    "JP002",
                    Severity::Warning,
                    path.as_str(),
                    "no content hash recorded (applied by an older jailprov): its bytes cannot be verified".to_owned(),
                    "`jailprov check --fix` rewrites it from its source and records its hash",
                ));
                modified.insert(path.clone());
            }
            (Some(_), None) => {}
        }
    }
    Ok(modified)
}

/// How long a managed file may be: the size apply recorded; inline content is recorded without a
/// stat, and no Jailfile holds more than [`crate::spec::MAX_JAILFILE_SIZE`].
fn expected_size(managed: &crate::state::Managed) -> u64 {
    managed.jail.map_or(crate::spec::MAX_JAILFILE_SIZE, |print| print.size)
}

fn short(hash: &[u8; 32]) -> String {
    let text = hash_text(hash);
    let (algorithm, hex) = text.split_once(':').unwrap_or(("", &text));
    format!("{algorithm} {}…", &hex[..8])
}

/// JP003-JP005: what a plan would change, as findings.
fn drift(
    desired: &DesiredTree,
    mounts: &Mounts,
    jail: &JailRoot,
    state: &State,
    host: &HostFs,
    modified: &BTreeSet<JailPath>,
    audit: &mut Audit,
) -> Result<()> {
    let plan = plan::compute(desired, Some(jail), state, &RecordedScan::default(), mounts, host, false)?;
    for change in &plan.changes {
        let path = change.path.as_str();
        match change.action {
            Action::Mount => audit.findings.push(finding(
                "JP018",
                Severity::Error,
                path,
                format!("the persistent mount ({}) is not mounted", change.what.join(", ")),
                "`jailprov apply` mounts it",
            )),
            Action::Unmount => audit.findings.push(finding(
                "JP018",
                Severity::Warning,
                path,
                "a mount jailprov made that the Jailfile no longer has".to_owned(),
                "`jailprov apply` unmounts it",
            )),
            Action::Delete => audit.findings.push(finding(
                "JP005",
                Severity::Warning,
                path,
                format!("a {} jailprov created that the Jailfile no longer has", change.kind),
                "`jailprov apply` removes it",
            )),
            _ => {
                let what: Vec<&String> = change.what.iter().filter(|what| *what != "content").collect();
                if modified.contains(&change.path) && what.is_empty() {
                    continue; // JP001 already says it
                }
                let message = match change.action {
                    Action::Create => format!("{} missing", change.kind),
                    _ => {
                        format!("{} differs from what the Jailfile gives now: {}", change.kind, change.what.join(", "))
                    }
                };
                audit.findings.push(finding(
                    "JP003",
                    Severity::Error,
                    path,
                    message,
                    "`jailprov check --fix` (or apply) restores it",
                ));
            }
        }
    }
    for conflict in &plan.conflicts {
        audit.findings.push(finding(
            "JP004",
            Severity::Warning,
            conflict.path.as_str(),
            conflict.reason.clone(),
            "move it away, or `jailprov apply --adopt` to let jailprov take it over",
        ));
    }
    Ok(())
}

/// JP010-JP016: a walk of the whole jail by directory fd and raw names (a name that is not
/// UTF-8, or a directory deeper than `PATH_MAX`, is reached like any other), never following a
/// symlink, staying on the root's file system. JP019: every subtree the walk could not inspect
/// (unreadable, too deep, another file system the Jailfile does not mount there), so that no
/// subtree is ever skipped silently.
fn walk(
    desired: &DesiredTree,
    mounts: &Mounts,
    state: &State,
    jail: &JailRoot,
    host: &HostFs,
    audit: &mut Audit,
) -> Result<()> {
    let root_stat = jail.stat(&JailPath::root())?.context("the jail root is there")?;
    let declared_mounts = mounts.wished.iter().map(|(target, _)| target).chain(state.mounts.iter()).cloned().collect();
    let mut walker = Walker { desired, host, root_dev: root_stat.dev, declared_mounts, host_inodes: None, audit };
    walker.inspect(b"/", &root_stat, || bail!("the jail root is not a symlink"));
    match jail.root_dir() {
        Ok(root) => walker.directory(&root, b"", 0),
        Err(error) => walker.not_inspected(b"/", &format!("{error:#}")),
    }
    Ok(())
}

/// The state of one audit walk.
struct Walker<'a> {
    desired: &'a DesiredTree,
    host: &'a HostFs,
    root_dev: u64,
    /// Persistent mounts of the Jailfile or made by jailprov: their contents are not the jail's.
    declared_mounts: BTreeSet<JailPath>,
    host_inodes: Option<BTreeMap<(u64, u64), String>>,
    audit: &'a mut Audit,
}

impl Walker<'_> {
    /// Inspects every entry of `dir` (whose jail path is `path`, raw bytes, "" for the root) and
    /// descends into its directories.
    fn directory(&mut self, dir: &JailDir, path: &[u8], depth: usize) {
        let names = match dir.names() {
            Ok(names) => names,
            Err(error) => return self.not_inspected(display_bytes(path), &format!("cannot list it: {error:#}")),
        };
        for name in names {
            let mut child = Vec::with_capacity(path.len() + 1 + name.as_bytes().len());
            child.extend_from_slice(path);
            child.push(b'/');
            child.extend_from_slice(name.as_bytes());
            let stat = match dir.stat(&name) {
                Ok(Some(stat)) => stat,
                Ok(None) => continue, // removed since it was listed
                Err(error) => {
                    self.not_inspected(&child, &format!("{error:#}"));
                    continue;
                }
            };
            self.inspect(&child, &stat, || dir.read_link(&name));
            if stat.kind != NodeKind::Dir {
                continue;
            }
            let declared = || {
                std::str::from_utf8(&child)
                    .ok()
                    .and_then(|text| JailPath::parse(text).ok())
                    .is_some_and(|path| self.declared_mounts.contains(&path))
            };
            if stat.dev != self.root_dev {
                if !declared() {
                    self.not_inspected(&child, "it is on another file system (a mount the Jailfile does not declare)");
                }
                continue;
            }
            if depth + 1 >= MAX_DEPTH {
                self.not_inspected(&child, &format!("it is more than {MAX_DEPTH} directories deep"));
                continue;
            }
            match dir.open_dir(&name) {
                Ok(DirOpening::Opened(sub)) => self.directory(&sub, &child, depth + 1),
                Ok(DirOpening::Gone) => {}
                Ok(DirOpening::MountPoint) => {
                    if !declared() {
                        self.not_inspected(&child, "it is a mount point the Jailfile does not declare");
                    }
                }
                Ok(DirOpening::NotADirectory) => {
                    self.not_inspected(&child, "it was replaced by something else while the jail was walked")
                }
                Err(error) => self.not_inspected(&child, &format!("{error:#}")),
            }
        }
    }

    /// JP019 for the subtree at `path` (raw bytes).
    fn not_inspected(&mut self, path: &[u8], why: &str) {
        self.audit.findings.push(finding(
            "JP019",
            Severity::Error,
            &escaped(display_bytes(path)),
            format!("check could not inspect this subtree: {why}; anything in it (a setuid file...) is unchecked"),
            "look at it by hand, move it out of the jail, or make it readable; unmount a mount the Jailfile does not declare",
        ));
    }

    /// The findings of one node at `path` (raw bytes); `read_link` gives a symlink's target.
    fn inspect(&mut self, path: &[u8], stat: &NodeStat, read_link: impl FnOnce() -> Result<std::ffi::OsString>) {
        // The Jailfile only names UTF-8 paths: a name that is not is never wanted.
        let wanted = std::str::from_utf8(path)
            .ok()
            .and_then(|text| JailPath::parse(text).ok())
            .and_then(|path| self.desired.nodes.get(&path));
        let shown = escaped(path);
        let text = shown.as_str();
        let (desired, host, audit) = (self.desired, self.host, &mut *self.audit);
        let host_inodes = &mut self.host_inodes;
        match stat.kind {
            NodeKind::File => {
                if stat.mode & SETID_BITS != 0 {
                    let bits = match (stat.mode & 0o4000 != 0, stat.mode & 0o2000 != 0) {
                        (true, true) => "setuid and setgid",
                        (true, false) => "setuid",
                        _ => "setgid",
                    };
                    let declared = wanted.is_some_and(|node| node.mode & SETID_BITS == stat.mode & SETID_BITS);
                    let (severity, fix) = if declared {
                        (Severity::Warning, "drop `setuid = true` from the Jailfile unless the jail needs it")
                    } else {
                        (Severity::Error, "`chmod ug-s` it (`jailprov check --fix` does for managed files), or declare it with `setuid = true`")
                    };
                    audit.findings.push(finding(
                        "JP010",
                        severity,
                        text,
                        format!("{bits} file owned by uid {} (gid {})", stat.uid, stat.gid),
                        fix,
                    ));
                }
                let executable = stat.mode & 0o111 != 0;
                let name = String::from_utf8_lossy(path.rsplit(|byte| *byte == b'/').next().unwrap_or_default());
                let library = name.ends_with(".so") || name.contains(".so.");
                if (executable || library) && (stat.uid != 0 || stat.mode & 0o022 != 0) {
                    let who = if stat.uid != 0 {
                        format!("its owner uid {}", stat.uid)
                    } else if stat.mode & 0o002 != 0 {
                        "everyone".to_owned()
                    } else {
                        format!("group {}", stat.gid)
                    };
                    let what = if library { "library" } else { "executable" };
                    audit.findings.push(finding(
                        "JP016",
                        Severity::Error,
                        text,
                        format!("{what} writable by {who} (mode {:04o}): whoever runs it runs their code", stat.mode),
                        "make it root-owned and not group/world-writable (`jailprov check --fix` for managed files)",
                    ));
                }
                if stat.nlink > 1 {
                    let inodes = host_inodes.get_or_insert_with(|| host_inodes_of(desired, host));
                    if let Some(host_path) = inodes.get(&(stat.dev, stat.ino)) {
                        audit.findings.push(finding(
                            "JP015",
                            Severity::Error,
                            text,
                            format!("hard link to the host's {host_path}: a write in the jail changes the host"),
                            "replace it with a copy (remove it and run `jailprov apply`)",
                        ));
                    }
                }
            }
            NodeKind::Dir => {
                if stat.mode & 0o022 != 0 && stat.mode & 0o1000 == 0 {
                    let (severity, who) = if stat.mode & 0o002 != 0 {
                        (Severity::Error, "everyone")
                    } else {
                        (Severity::Warning, "its group")
                    };
                    audit.findings.push(finding(
                        "JP011",
                        severity,
                        text,
                        format!("directory writable by {who} without the sticky bit (mode {:04o})", stat.mode),
                        "add the sticky bit (mode 1777 like /tmp) or drop group/other write",
                    ));
                }
            }
            NodeKind::CharDevice | NodeKind::BlockDevice => {
                let declared = wanted.is_some_and(|node| match node.kind {
                    DesiredKind::Device { block, rdev } => {
                        rdev == stat.rdev && block == (stat.kind == NodeKind::BlockDevice)
                    }
                    _ => false,
                });
                if !declared {
                    audit.findings.push(finding(
                        "JP012",
                        Severity::Error,
                        text,
                        format!(
                            "{} {}:{} not declared in the Jailfile's `devices`",
                            stat.kind,
                            nix::sys::stat::major(stat.rdev),
                            nix::sys::stat::minor(stat.rdev)
                        ),
                        "remove it, or declare it in `devices`",
                    ));
                }
            }
            NodeKind::Symlink => {
                let Ok(target) = read_link() else { return };
                let target = escaped(target.as_bytes());
                // Lexically, on the shown text: escaping keeps every `/` and adds no `..`.
                let Ok(link) = JailPath::parse(text) else { return };
                match symlink_destination(&link, &target) {
                    None => audit.findings.push(finding(
                        "JP013",
                        Severity::Error,
                        text,
                        format!("symlink to {target} climbs above the jail root: seen from the host it leads out"),
                        "point it inside the jail (fewer `..`), or remove it",
                    )),
                    Some(destination) if is_sensitive(&destination) => audit.findings.push(finding(
                        "JP014",
                        Severity::Error,
                        text,
                        format!(
                            "symlink to {target}, a host-sensitive path: it reaches the host once /proc is mounted or /etc bound"
                        ),
                        "remove it or point it elsewhere",
                    )),
                    Some(_) => {}
                }
            }
            NodeKind::Fifo | NodeKind::Socket => {}
        }
    }
}

/// Raw path bytes as the walk shows them: "" is the root.
fn display_bytes(path: &[u8]) -> &[u8] {
    if path.is_empty() {
        b"/"
    } else {
        path
    }
}

/// Where a symlink leads, resolved lexically in the jail (absolute targets start at the jail
/// root, as inside it); None when a relative target climbs above the root. Symlinks met on the
/// way are not followed: each is judged on its own.
pub fn symlink_destination(link: &JailPath, target: &str) -> Option<String> {
    let parent = link.parent();
    let mut parts: Vec<&str> = match &parent {
        Some(parent) if !target.starts_with('/') => {
            parent.as_str().split('/').filter(|part| !part.is_empty()).collect()
        }
        _ => Vec::new(),
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() && !target.starts_with('/') {
                    return None;
                }
            }
            name => parts.push(name),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// /etc/shadow, /proc/*/root and the like (the path itself or below it).
pub fn is_sensitive(path: &str) -> bool {
    let under = |base: &str| path == base || path.strip_prefix(base).is_some_and(|rest| rest.starts_with('/'));
    if crate::host::SECRETS.iter().chain(KERNEL_DOORS).any(|base| under(base)) {
        return true;
    }
    let mut parts = path.split('/').filter(|part| !part.is_empty());
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some("proc"), Some(_), Some(entry)) if SENSITIVE_PROC_ENTRIES.contains(&entry)
    )
}

/// (dev, ino) of the host files a jail file could be a hard link to: every source the
/// closure copies, and the host's own secrets.
fn host_inodes_of(desired: &DesiredTree, host: &HostFs) -> BTreeMap<(u64, u64), String> {
    use std::os::unix::fs::MetadataExt;
    let sources = desired.nodes.values().filter_map(|node| match &node.kind {
        DesiredKind::File { source, .. } => Some(source.clone()),
        _ => None,
    });
    let secrets =
        ["/etc/shadow", "/etc/gshadow", "/etc/passwd", "/etc/group", "/etc/sudoers"].map(std::path::PathBuf::from);
    sources
        .chain(secrets)
        .filter_map(|source| {
            let metadata = std::fs::metadata(host.disk_path(&source)).ok()?;
            Some(((metadata.dev(), metadata.ino()), source.display().to_string()))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// --fix
// ---------------------------------------------------------------------------------------------

/// What `--fix` did and left.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Repair {
    pub fixed: Vec<String>,
    /// Paths apply would replace (a different type is there): left for `jailprov apply`.
    pub left: Vec<String>,
}

/// Repairs what apply would repair for the Jailfile's paths (missing, mode, owner, content, and
/// modified or unverifiable managed files), never deleting anything: no deletions, no
/// replacements (which could remove what a jail user put there), no conflicts taken over.
pub fn fix(
    desired: &DesiredTree,
    mounts: &Mounts,
    jail: &JailRoot,
    state: &mut State,
    store: &StateStore,
    host: &HostFs,
    audit: &Audit,
) -> Result<Repair> {
    let plan = plan::compute(desired, Some(jail), state, &RecordedScan::default(), mounts, host, false)?;
    let mut repair = Repair::default();
    let mut changes: Vec<Change> = Vec::new();
    for change in plan.changes {
        match change.action {
            Action::Create | Action::Update => changes.push(change),
            // Mounts are apply's to make and undo.
            Action::Replace | Action::Mount | Action::Unmount => repair.left.push(change.path.to_string()),
            Action::Delete => {}
        }
    }
    let rewrite: BTreeSet<&str> = audit
        .findings
        .iter()
        .filter(|finding| matches!(finding.code, "JP001" | "JP002"))
        .map(|finding| finding.path.as_str())
        .collect();
    for path in rewrite {
        let Ok(path) = JailPath::parse(path) else { continue };
        let Some(node) = desired.nodes.get(&path) else { continue };
        if !matches!(node.kind, DesiredKind::File { .. } | DesiredKind::Content { .. }) {
            continue;
        }
        match changes.iter_mut().find(|change| change.path == path) {
            Some(change) => {
                if !change.what.iter().any(|what| what == "content") {
                    change.what.push("content".to_owned());
                }
            }
            None => changes.push(Change {
                action: Action::Update,
                path,
                kind: node.kind.label().to_owned(),
                what: vec!["content".to_owned()],
                diff: None,
                texts: None,
                mount: None,
                seen: None,
            }),
        }
    }
    let repair_plan = Plan { changes, refresh: plan.refresh, forget: plan.forget, ..Plan::default() };
    if repair_plan.changes.is_empty() && repair_plan.refresh.is_empty() && repair_plan.forget.is_empty() {
        return Ok(repair);
    }
    let mut report = |change: &Change| {
        let what = if change.what.is_empty() { String::new() } else { format!(" ({})", change.what.join(", ")) };
        repair.fixed.push(format!("{}{what}", change.path));
    };
    apply::apply(&repair_plan, desired, jail, host, state, store, &mut report)?;
    Ok(repair)
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

pub fn text(audit: &Audit, repair: Option<&Repair>, root: &Path) -> String {
    let mut text = String::new();
    if let Some(repair) = repair {
        if !repair.fixed.is_empty() {
            let _ = writeln!(text, "Fixed:");
            for path in &repair.fixed {
                let _ = writeln!(text, "  {path}");
            }
            text.push('\n');
        }
        if !repair.left.is_empty() {
            let _ = writeln!(text, "Not fixed (another type is there; `jailprov apply` replaces it):");
            for path in &repair.left {
                let _ = writeln!(text, "  {path}");
            }
            text.push('\n');
        }
    }
    for finding in &audit.findings {
        let severity = match finding.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = writeln!(text, "{severity:<7} {} {}: {}", finding.code, finding.path, finding.message);
        let _ = writeln!(text, "        fix: {}", finding.fix);
    }
    if audit.findings.is_empty() {
        let _ = writeln!(
            text,
            "No findings in {}: {} managed files match their recorded hashes.",
            root.display(),
            audit.verified
        );
    } else {
        let plural = |count: usize, word: &str| format!("{count} {word}{}", if count == 1 { "" } else { "s" });
        let _ = writeln!(
            text,
            "\n{}, {} in {} ({} managed files verified).",
            plural(audit.errors(), "error"),
            plural(audit.warnings(), "warning"),
            root.display(),
            audit.verified
        );
    }
    text
}

/// What `check --format json` prints.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "jailprov check --format json")]
pub struct CheckReport {
    /// "1".
    pub format_version: &'static str,
    pub root: String,
    pub findings: Vec<Finding>,
    pub summary: CheckSummary,
    /// With `--fix`: the paths repaired, with what was repaired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed: Option<Vec<String>>,
    /// With `--fix`: paths left for `jailprov apply` (another type is there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_fixed: Option<Vec<String>>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckSummary {
    pub errors: usize,
    pub warnings: usize,
    /// Managed files whose every byte was hashed against the record.
    pub verified_files: usize,
}

impl CheckReport {
    pub fn of(audit: &Audit, repair: Option<&Repair>, root: &Path) -> CheckReport {
        CheckReport {
            format_version: "1",
            root: root.display().to_string(),
            findings: audit.findings.clone(),
            summary: CheckSummary {
                errors: audit.errors(),
                warnings: audit.warnings(),
                verified_files: audit.verified,
            },
            fixed: repair.map(|repair| repair.fixed.clone()),
            not_fixed: repair.map(|repair| repair.left.clone()),
        }
    }
}

pub fn json(audit: &Audit, repair: Option<&Repair>, root: &Path) -> String {
    crate::json::to_json(&CheckReport::of(audit, repair, root))
}

/// `jailprov check [--fix] [--format json]`: exit 1 when any finding is an error.
#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> JailPath {
        JailPath::parse(text).expect("valid")
    }

    #[test]
    fn absolute_targets_stay_in_the_jail_relative_ones_may_climb_out() {
        assert_eq!(symlink_destination(&path("/bin"), "usr/bin").as_deref(), Some("/usr/bin"));
        assert_eq!(symlink_destination(&path("/a/b/c"), "../../../../etc/shadow"), None, "climbs above /");
        assert_eq!(
            symlink_destination(&path("/a/b"), "/../../etc/shadow").as_deref(),
            Some("/etc/shadow"),
            "an absolute .. stops at the jail root, as in a chroot"
        );
        assert_eq!(symlink_destination(&path("/usr/lib/x"), "../../x").as_deref(), Some("/x"));
    }

    #[test]
    fn host_sensitive_paths_are_recognized() {
        for sensitive in
            ["/etc/shadow", "/etc/sudoers.d/x", "/proc/self/root", "/proc/1/root/etc", "/proc/42/cwd", "/dev/mem"]
        {
            assert!(is_sensitive(sensitive), "{sensitive}");
        }
        for harmless in ["/etc/shadowsocks", "/proc/self/status", "/usr/lib/x", "/rootfs", "/etc/passwd"] {
            assert!(!is_sensitive(harmless), "{harmless}");
        }
    }

    #[test]
    fn every_code_is_listed_once() {
        let codes: BTreeSet<&str> = CODES.iter().map(|(code, _)| *code).collect();
        assert_eq!(codes.len(), CODES.len());
    }

    #[test]
    fn text_and_json_output() {
        let audit = Audit {
            findings: vec![
                finding("JP001", Severity::Error, "/usr/bin/bash", "content differs".into(), "fix it"),
                finding("JP011", Severity::Warning, "/srv", "group-writable".into(), "chmod g-w"),
            ],
            verified: 7,
        };
        insta::assert_snapshot!("check_text", text(&audit, None, Path::new("/srv/jail")));
        insta::assert_snapshot!("check_json", json(&audit, None, Path::new("/srv/jail")));
    }
}
