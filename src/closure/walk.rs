//! `[[files]]` sources on the host: the paths a file, directory or glob names, walked without
//! following symlinks and in parallel, each with the jail path it goes to and its lstat.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rayon::prelude::*;

use super::jail_path_of;
use crate::host::{HostFs, Look, StatPrint};
use crate::spec::{Exclude, HostSource};
use crate::tree::JailPath;

/// A host path found for a `[[files]]` source, the jail path it goes to, and its lstat.
pub(super) struct Found {
    pub(super) host_path: PathBuf,
    pub(super) jail_path: JailPath,
    pub(super) stat: FoundStat,
}

/// What the walk keeps of a host path's lstat: its type and mode bits, and its print.
#[derive(Debug, Clone, Copy)]
pub(super) struct FoundStat {
    pub(super) mode: u32,
    pub(super) print: StatPrint,
}

impl FoundStat {
    fn of(metadata: &std::fs::Metadata) -> FoundStat {
        FoundStat { mode: metadata.mode(), print: StatPrint::of(metadata) }
    }

    /// Whether the file type (`nix::libc::S_IF*`) is `file_type`.
    pub(super) fn is(&self, file_type: nix::libc::mode_t) -> bool {
        self.mode & nix::libc::S_IFMT == file_type
    }
}

/// The paths of a `[[files]]` source that are not excluded, each with the jail path it goes to
/// (the excluded ones are added to `pruned`). Placing runs in parallel, one walked directory at
/// a time.
pub(super) fn expand_source(
    host: &HostFs,
    source: &HostSource,
    dest: Option<&JailPath>,
    exclude: &Exclude,
    pruned: &mut Vec<PathBuf>,
) -> Result<Vec<Vec<Found>>> {
    let base = source_base(source);
    let place = |host_path: PathBuf, stat: FoundStat| -> Result<Option<Found>> {
        let jail_path = match dest {
            None => jail_path_of(&host_path)?,
            Some(dest) => {
                let relative = host_path.strip_prefix(base).unwrap_or(Path::new(""));
                dest.join(relative).map_err(|error| anyhow::anyhow!("{}: {error}", host_path.display()))?
            }
        };
        // Excluded paths are dropped before they are looked at, so nothing they would bring (a
        // link's target, an ELF file's libraries) comes either; `dest` can move a path under a
        // pattern, so the jail path is checked too.
        if exclude.is_excluded(Path::new(jail_path.as_str())) {
            return Ok(None);
        }
        Ok(Some(Found { host_path, jail_path, stat }))
    };
    let batches = match source {
        HostSource::Path(path) => {
            let metadata = host.symlink_metadata(path).with_context(|| format!("cannot inspect {}", path.display()))?;
            if !metadata.is_dir() {
                return Ok(vec![place(path.clone(), FoundStat::of(&metadata))?.into_iter().collect()]);
            }
            walk(host, path, exclude, pruned)?
        }
        HostSource::Glob { base, .. } => walk(host, base, exclude, pruned)?,
    };
    let matcher = match source {
        HostSource::Glob { matcher, .. } => Some(matcher),
        HostSource::Path(_) => None,
    };
    let placed: Vec<Result<(Vec<Found>, Vec<PathBuf>)>> = batches
        .into_par_iter()
        .map(|batch| {
            let mut found = Vec::with_capacity(batch.len());
            let mut excluded = Vec::new();
            for (host_path, stat) in batch {
                if matcher.is_some_and(|matcher| !matcher.is_match(&host_path)) {
                    continue;
                }
                let kept = host_path.clone();
                match place(host_path, stat)? {
                    Some(one) => found.push(one),
                    None => excluded.push(kept),
                }
            }
            Ok((found, excluded))
        })
        .collect();
    let mut result = Vec::with_capacity(placed.len());
    for batch in placed {
        let (found, excluded) = batch?;
        result.push(found);
        pruned.extend(excluded);
    }
    Ok(result)
}

/// Whether the kernel or the loader could run or load this file: executable, or named like a
/// shared object (`.so`, `.so.1.2`; dlopen'ed modules need no exec bit). Only these are read
/// for an ELF header, so a tree of 40,000 data files costs no extra open each.
pub(super) fn may_be_loaded(path: &Path, mode: u32) -> bool {
    mode & 0o111 != 0 || path.file_name().and_then(|name| name.to_str()).is_some_and(|name| name.contains(".so"))
}

/// The host directory a source's paths are taken relative to when `dest` moves them.
pub(super) fn source_base(source: &HostSource) -> &Path {
    match source {
        HostSource::Path(path) => path,
        HostSource::Glob { base, .. } => base,
    }
}

/// Every path under a host directory (itself included) with its lstat, not following
/// symlinks, one batch per directory read; excluded paths and everything under an excluded
/// directory are left out (and listed in `pruned`). Directories are read in parallel at every
/// level (a 40,000-file tree is mostly waiting on getdents and lstat, and its top-level subtrees
/// are rarely balanced).
fn walk(host: &HostFs, dir: &Path, exclude: &Exclude, pruned: &mut Vec<PathBuf>) -> Result<Vec<WalkBatch>> {
    if exclude.is_excluded(dir) {
        pruned.push(dir.to_path_buf());
        return Ok(Vec::new());
    }
    let metadata = host.symlink_metadata(dir).with_context(|| format!("cannot inspect {}", dir.display()))?;
    let is_dir = metadata.is_dir();
    let mut batches = vec![vec![(dir.to_path_buf(), FoundStat::of(&metadata))]];
    if is_dir {
        let mut excluded = Vec::new();
        walk_children(host, dir, exclude, &mut batches, &mut excluded)?;
        pruned.extend(excluded);
    }
    Ok(batches)
}

/// What one directory holds (its subdirectories' contents come as batches of their own, so
/// nothing is copied up the tree level by level).
type WalkBatch = Vec<(PathBuf, FoundStat)>;

fn walk_children(
    host: &HostFs,
    dir: &Path,
    exclude: &Exclude,
    batches: &mut Vec<WalkBatch>,
    pruned: &mut Vec<PathBuf>,
) -> Result<()> {
    let mut batch = Vec::new();
    let mut subdirs = Vec::new();
    let entries = host.read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut observed = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let path = dir.join(entry.file_name());
        if exclude.is_excluded(&path) {
            pruned.push(path);
            continue;
        }
        // DirEntry::metadata is fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW): an lstat.
        let metadata = entry.metadata();
        if host.is_observing() {
            observed.push(host.observation(entry.path(), Look::Lstat, &metadata));
        }
        let metadata = metadata.with_context(|| format!("cannot inspect {}", path.display()))?;
        if metadata.is_dir() {
            subdirs.push(path.clone());
        }
        batch.push((path, FoundStat::of(&metadata)));
    }
    batches.push(batch);
    host.record(observed);
    let below: Vec<Result<(Vec<WalkBatch>, Vec<PathBuf>)>> = subdirs
        .par_iter()
        .map(|subdir| {
            let (mut nested, mut excluded) = (Vec::new(), Vec::new());
            walk_children(host, subdir, exclude, &mut nested, &mut excluded).map(|()| (nested, excluded))
        })
        .collect();
    for nested in below {
        let (nested, excluded) = nested?;
        batches.extend(nested);
        pruned.extend(excluded);
    }
    Ok(())
}
