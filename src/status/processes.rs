//! Processes running inside a jail that still map a file apply has since replaced: a `(deleted)`
//! mapping in /proc/PID/maps (as needrestart finds them), of a process whose root is the jail.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Serialize;

/// A process to restart so that it runs the jail's new files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct StaleProcess {
    pub pid: u32,
    /// Its name (/proc/PID/comm).
    pub command: String,
    /// The replaced files it maps, as the process sees them.
    pub deleted: Vec<String>,
}

/// For each of `roots`, the processes whose root is that jail and that map a deleted file. A
/// process is matched by the device and inode of its root directory (enter's pivot_root leaves
/// /proc/PID/root naming "/", but the directory is the jail's) or by the path /proc/PID/root names
/// (a plain chroot). Processes that vanish or cannot be read while scanned are passed over.
pub fn stale_by_root<'a>(roots: impl Iterator<Item = &'a Path>) -> BTreeMap<PathBuf, Vec<StaleProcess>> {
    let mut by_identity: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
    let mut by_path: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    for root in roots {
        if let Ok(metadata) = std::fs::metadata(root) {
            by_identity.insert((metadata.dev(), metadata.ino()), root.to_path_buf());
            by_path.insert(root.to_path_buf(), root.to_path_buf());
        }
    }
    let mut found: BTreeMap<PathBuf, Vec<StaleProcess>> = BTreeMap::new();
    if by_identity.is_empty() {
        return found;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else { return found };
    let mut pids: Vec<u32> = entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok()).collect();
    pids.sort_unstable();
    for pid in pids {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let by_link = std::fs::read_link(proc_dir.join("root")).ok().and_then(|link| by_path.get(&link).cloned());
        let root = by_link.or_else(|| {
            let metadata = std::fs::metadata(proc_dir.join("root")).ok()?;
            by_identity.get(&(metadata.dev(), metadata.ino())).cloned()
        });
        let Some(root) = root else { continue };
        let deleted = deleted_mappings(&proc_dir, &root);
        if deleted.is_empty() {
            continue;
        }
        let command = std::fs::read_to_string(proc_dir.join("comm")).unwrap_or_default().trim_end().to_owned();
        found.entry(root).or_default().push(StaleProcess { pid, command, deleted });
    }
    found
}

/// The files a process maps that were deleted (replaced) since it mapped them, as jail paths
/// (maps names them from our root: a chrooted process's files lie under the jail root).
fn deleted_mappings(proc_dir: &Path, root: &Path) -> Vec<String> {
    let prefix = format!("{}/", root.display());
    let Ok(maps) = std::fs::read_to_string(proc_dir.join("maps")) else { return Vec::new() };
    let files: BTreeSet<String> = maps
        .lines()
        .filter_map(|line| line.strip_suffix(" (deleted)"))
        // The path is the sixth field and may hold spaces: everything from the first '/'.
        .filter_map(|line| line.find('/').map(|start| &line[start..]))
        .map(|file| file.strip_prefix(&prefix).map_or_else(|| file.to_owned(), |inside| format!("/{inside}")))
        // Shared memory and memfd mappings are deleted by nature, not replaced files.
        .filter(|file| !file.starts_with("/dev/shm/") && !file.starts_with("/memfd:") && !file.starts_with("/SYSV"))
        .collect();
    files.into_iter().collect()
}
