//! What a plan computed from the host (the desired tree, the closure's facts), kept in the state directory for the apply right after it, and taken only when nothing it came from moved.
//!
//! `plan` then `apply` is the usual pair (review, then act), and both computed the closure: on
//! a jail of 50,000 paths that is most of what apply spends before it writes. The plan keeps
//! what it computed here, keyed like the plan memo (memo.rs: the jailprov binary, the CPU, the
//! Jailfile, the lock, the record and its journal, the mounts), plus the jail root's identity
//! and a print of every host path the computation looked at. Apply takes it only when the key
//! is equal and every one of those host paths still looks the same (stat by stat, as the memo
//! checks them); any difference, a damaged or foreign file, means apply computes it all again.
//! The jail side is never cached: apply scans the jail and plans against it afresh.
//!
//! Unlike the memo, a path that changed moments before the plan looked at it does not spoil
//! the cache when it was only lstat'ed: a desired node is built from the lstat alone, so the
//! same stat gives the same node whatever the content (see
//! [`HostFs::observations_of_stats_and_reads`](crate::host::HostFs::observations_of_stats_and_reads)).
#![allow(clippy::disallowed_methods)] // the cache lives in the state directory, outside every jail

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::memo::{self, HostPrint};
use crate::desired::{ClosureFacts, DesiredNode, DesiredTree};
use crate::host::Observation;

/// The first bytes of a cache file.
const MAGIC: &[u8] = b"jailprov plan cache\n";
const FORMAT_VERSION: u32 = 1;

/// What the cached computation was made from besides the host paths it looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    pub memo: memo::Key,
    /// The jail root's device and inode (None: no jail yet): a root made again is another jail.
    pub root: Option<(u64, u64)>,
}

impl Key {
    pub fn now(memo: memo::Key) -> Key {
        let root = std::fs::symlink_metadata(&memo.root).ok().map(|metadata| (metadata.dev(), metadata.ino()));
        Key { memo, root }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Cached {
    format_version: u32,
    key: Key,
    host: HostPrint,
    /// The desired tree's nodes in path order, and its warnings.
    nodes: Vec<DesiredNode>,
    warnings: Vec<String>,
    facts: ClosureFacts,
}

/// Keeps what a plan computed, for the apply that may follow. Only into a state directory
/// that exists (plan creates nothing the user sees); failing only costs apply the shortcut.
pub fn keep(file: &Path, key: Key, host: &[Observation], desired: &DesiredTree, facts: &ClosureFacts) {
    let _timing = crate::timings::phase("plan cache: write");
    if !file.parent().is_some_and(Path::is_dir) {
        return;
    }
    let cached = Cached {
        format_version: FORMAT_VERSION,
        key,
        host: HostPrint::of(host),
        nodes: desired.nodes.values().cloned().collect(),
        warnings: desired.warnings.clone(),
        facts: facts.clone(),
    };
    if let Err(error) = memo::write_keyed(file, MAGIC, &cached) {
        eprintln!("warning: cannot save the plan's cache ({error:#}); apply computes the closure again");
    }
}

/// The desired tree and closure facts a plan kept, when `key` is the one they were kept under
/// and every host path they came from looks as it did; None otherwise (apply computes them).
/// The file is removed once read: it serves one apply.
pub fn take(file: &Path, key: &Key) -> Option<(DesiredTree, ClosureFacts)> {
    let _timing = crate::timings::phase("plan cache: check");
    let cached: Cached = memo::read_keyed(file, MAGIC, FORMAT_VERSION, key)?;
    forget(file);
    if !cached.host.holds_now() {
        return None;
    }
    let nodes = cached.nodes.into_iter().map(|node| (node.path.clone(), node)).collect();
    let _said = crate::timings::phase("apply: desired tree from the plan's cache, closure not computed");
    for warning in &cached.warnings {
        eprintln!("warning: {warning}");
    }
    Some((DesiredTree { nodes, warnings: cached.warnings }, cached.facts))
}

/// Removes the cache; a missing one is fine.
pub fn forget(file: &Path) {
    let _ = std::fs::remove_file(file);
}
