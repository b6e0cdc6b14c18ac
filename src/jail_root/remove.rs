//! Deleting from a jail: one file, one empty directory, a whole tree (never through a symlink,
//! never into a mount), and the temporaries a crashed apply left behind.

use std::ffi::{CStr, CString};
use std::os::fd::OwnedFd;

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::fstatat;
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::read::read_names;
use super::{beneath, JailRoot, NodeKind, TEMP_PREFIX};
use crate::tree::JailPath;

/// How deep [`JailRoot::remove_tree`] descends; a jail process could build an absurdly deep tree.
const MAX_TREE_DEPTH: usize = 256;

impl JailRoot {
    /// Removes a non-directory (file, symlink, device...). `Ok(false)` if it (or its parent) did
    /// not exist; a directory is an error.
    pub fn remove_file(&self, path: &JailPath) -> Result<bool> {
        self.finished("remove", path, self.remove_file_inner(path))
    }

    fn remove_file_inner(&self, path: &JailPath) -> Result<bool> {
        let Some((parent, name)) = self.existing_parent_of(path)? else { return Ok(false) };
        match unlinkat(&parent, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(Errno::EISDIR) => bail!("it is a directory"),
            Err(errno) => bail!("{errno}"),
        }
    }

    /// Removes an empty directory. `Ok(false)` if it is not empty or does not exist; a
    /// non-directory is an error.
    pub fn remove_dir(&self, path: &JailPath) -> Result<bool> {
        self.finished("remove the directory", path, self.remove_dir_inner(path))
    }

    fn remove_dir_inner(&self, path: &JailPath) -> Result<bool> {
        let Some((parent, name)) = self.existing_parent_of(path)? else { return Ok(false) };
        match unlinkat(&parent, name, UnlinkatFlags::RemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT | Errno::ENOTEMPTY | Errno::EEXIST) => Ok(false),
            Err(Errno::ENOTDIR) => bail!("it is not a directory"),
            Err(Errno::EBUSY) => bail!("it is a mount point"),
            Err(errno) => bail!("{errno}"),
        }
    }

    /// Removes a directory tree that jailprov must replace (a directory where a file must go),
    /// never following a symlink inside it (a symlink is removed, not its target) and never
    /// crossing into a mount point (a bind mount inside is refused, not emptied). A non-directory
    /// at `path` is simply removed; nothing there is fine.
    pub fn remove_tree(&self, path: &JailPath) -> Result<()> {
        self.remove_tree_inner(path).with_context(|| self.failure("remove the tree", path))
    }

    fn remove_tree_inner(&self, path: &JailPath) -> Result<()> {
        let Some((parent, name)) = self.existing_parent_of(path)? else { return Ok(()) };
        remove_entry(&parent, &name_cstring(name)?, path.as_str(), 0)
    }

    /// Removes leftover `.jailprov-tmp-*` non-directories directly in `dir` (from a crashed
    /// apply); returns how many. A missing `dir` has none.
    pub fn remove_temp_files(&self, dir: &JailPath) -> Result<usize> {
        self.remove_temp_files_inner(dir).with_context(|| self.failure("remove temporary files in", dir))
    }

    fn remove_temp_files_inner(&self, dir: &JailPath) -> Result<usize> {
        let Some(fd) = self.lookup_dir(dir, OFlag::O_RDONLY)? else { return Ok(0) };
        let mut removed = 0;
        for name in read_names(&fd)? {
            if !name.as_bytes().starts_with(TEMP_PREFIX.as_bytes()) {
                continue;
            }
            match unlinkat(&fd, name.as_c_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) => removed += 1,
                // Gone meanwhile, or a directory: jailprov never makes temporary directories.
                Err(Errno::ENOENT | Errno::EISDIR) => {}
                Err(errno) => bail!("cannot remove {}: {errno}", name.to_string_lossy()),
            }
        }
        Ok(removed)
    }
}

/// Removes `name` in `parent`: a non-directory is unlinked, a directory emptied (recursively,
/// opened with O_NOFOLLOW and RESOLVE_NO_XDEV) then removed. `shown` names it in errors.
fn remove_entry(parent: &OwnedFd, name: &CStr, shown: &str, depth: usize) -> Result<()> {
    let stat = match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::ENOENT) => return Ok(()),
        Err(errno) => bail!("cannot inspect {shown}: {errno}"),
    };
    if NodeKind::from_mode(stat.st_mode) != Some(NodeKind::Dir) {
        let removed = unlinkat(parent, name, UnlinkatFlags::NoRemoveDir);
        crate::kill_point::passed();
        return match removed {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(errno) => bail!("cannot remove {shown}: {errno}"),
        };
    }
    if depth >= MAX_TREE_DEPTH {
        bail!("{shown} is more than {MAX_TREE_DEPTH} directories deep");
    }
    // RESOLVE_NO_XDEV: a mount point (a bind mount of a host directory) is refused, not emptied.
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let how = OpenHow::new().flags(flags).resolve(beneath() | ResolveFlag::RESOLVE_NO_XDEV);
    let dir = match openat2(parent, name, how) {
        Ok(dir) => dir,
        Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EXDEV) => bail!("{shown} is a mount point; unmount it first"),
        // Replaced by a non-directory since the fstatat: remove that instead.
        Err(Errno::ELOOP | Errno::ENOTDIR) => return remove_entry(parent, name, shown, depth + 1),
        Err(errno) => bail!("cannot open {shown}: {errno}"),
    };
    for child in read_names(&dir)? {
        let child_shown = format!("{shown}/{}", child.to_string_lossy());
        remove_entry(&dir, &child, &child_shown, depth + 1)?;
    }
    let removed = unlinkat(parent, name, UnlinkatFlags::RemoveDir);
    crate::kill_point::passed();
    match removed {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::ENOTEMPTY | Errno::EEXIST) => bail!("{shown} filled up again while being removed"),
        Err(errno) => bail!("cannot remove {shown}: {errno}"),
    }
}

fn name_cstring(name: &str) -> Result<CString> {
    CString::new(name).map_err(|_| anyhow!("a name cannot hold a NUL byte"))
}
