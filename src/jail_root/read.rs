//! Reading a jail without changing it: stat (one path or a sorted scan), symlink texts, regular
//! files (never a device or FIFO), directory listings, and the by-fd walk `jailprov check` uses.

use std::ffi::{CStr, CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{fcntl, openat, openat2, readlinkat, AtFlags, FcntlArg, OFlag, OpenHow, ResolveFlag};
use nix::libc;
use nix::sys::stat::{fstat, fstatat, Mode};

use super::{beneath, JailRoot, NodeKind, NodeStat};
use crate::tree::JailPath;

impl JailRoot {
    /// lstat of a jail path; `Ok(None)` when it (or a parent) does not exist. A parent that is a
    /// symlink or not a directory is a [`JailError`](super::JailError), not a `None`.
    pub fn stat(&self, path: &JailPath) -> Result<Option<NodeStat>> {
        self.stat_inner(path).with_context(|| self.failure("stat", path))
    }

    /// [`JailRoot::stat`] of many sorted paths for a read-only scan. The directories from the
    /// root down to the current parent stay open (`O_PATH`, as they were when first opened, so
    /// never use this after writing into the jail; writes always resolve afresh): sorted paths
    /// come back to an ancestor after each subtree, and a new directory is opened one name below
    /// its deepest open ancestor rather than from the root.
    pub fn scan_stats(&self, paths: &[&JailPath]) -> Vec<Result<Option<NodeStat>>> {
        // (directory, its fd; None when it does not exist)
        let mut open: Vec<(JailPath, Option<OwnedFd>)> = Vec::new();
        paths
            .iter()
            .map(|path| {
                let Some(parent) = path.parent() else { return self.stat(path) };
                while open.last().is_some_and(|(dir, _)| !parent.starts_with(dir)) {
                    open.pop();
                }
                if open.last().map(|(dir, _)| dir) != Some(&parent) {
                    let fd = self.open_scan_dir(&parent, open.last()).with_context(|| self.failure("stat", path))?;
                    open.push((parent, fd));
                }
                let Some((_, Some(fd))) = open.last() else { return Ok(None) };
                match fstatat(fd, path.file_name(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(stat) => NodeStat::from_stat(&stat).map(Some),
                    Err(Errno::ENOENT) => Ok(None),
                    Err(errno) => Err(anyhow!("{errno}")).with_context(|| self.failure("stat", path)),
                }
            })
            .collect()
    }

    /// `dir` as an `O_PATH` fd for [`JailRoot::scan_stats`]: below `ancestor` when one is open
    /// (never leaving it, no symlink followed), else from the root. Anything but a plain miss
    /// is resolved again from the root, which names the symlink or file in the way.
    fn open_scan_dir(&self, dir: &JailPath, ancestor: Option<&(JailPath, Option<OwnedFd>)>) -> Result<Option<OwnedFd>> {
        let Some((base, base_fd)) = ancestor else { return self.lookup_dir(dir, OFlag::O_PATH) };
        let Some(base_fd) = base_fd else { return Ok(None) };
        let below = dir.as_str()[base.as_str().len()..].trim_start_matches('/');
        let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC).resolve(beneath());
        match openat2(base_fd, below, how) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::ENOENT) => Ok(None),
            Err(_) => self.lookup_dir(dir, OFlag::O_PATH),
        }
    }

    fn stat_inner(&self, path: &JailPath) -> Result<Option<NodeStat>> {
        if path.is_root() {
            let stat = fstat(&self.fd).map_err(|errno| anyhow!("{errno}"))?;
            return NodeStat::from_stat(&stat).map(Some);
        }
        let Some((parent, name)) = self.existing_parent_of(path)? else { return Ok(None) };
        match fstatat(&parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => NodeStat::from_stat(&stat).map(Some),
            Err(Errno::ENOENT) => Ok(None),
            Err(errno) => bail!("{errno}"),
        }
    }

    /// The text of a symlink, exactly as stored.
    pub fn read_link(&self, path: &JailPath) -> Result<OsString> {
        self.read_link_inner(path).with_context(|| self.failure("read the symlink", path))
    }

    fn read_link_inner(&self, path: &JailPath) -> Result<OsString> {
        let (parent, name) = self.parent_of(path)?;
        let target: OsString = match readlinkat(&parent, name) {
            Ok(target) => target,
            Err(Errno::EINVAL) => bail!("it is not a symlink"),
            Err(Errno::ENOENT) => bail!("it does not exist"),
            Err(errno) => bail!("{errno}"),
        };
        // Raw bytes: a jail process may point a managed link at a name that is not UTF-8, which
        // is then simply another target (never an error that would stop plan and apply).
        Ok(target)
    }

    /// Opens a regular file for reading; anything else (symlink, device, FIFO...) is an error and
    /// is never opened: the node is first held by an `O_PATH | O_NOFOLLOW` fd, checked to be a
    /// regular file, and that very inode is reopened through `/proc/self/fd/N`, so a device
    /// swapped in by a jail process cannot be opened by accident. Without `/proc`, it is opened
    /// by name with `O_NOFOLLOW | O_NONBLOCK | O_NOCTTY` and checked to be the same inode.
    pub fn open_read(&self, path: &JailPath) -> Result<File> {
        self.open_read_inner(path).with_context(|| self.failure("open", path))
    }

    fn open_read_inner(&self, path: &JailPath) -> Result<File> {
        let (parent, name) = self.parent_of(path)?;
        let (node, stat) = self.open_node(&parent, name)?;
        match NodeKind::from_mode(stat.st_mode) {
            Some(NodeKind::File) => {}
            Some(kind) => bail!("it is a {kind}, not a regular file"),
            None => bail!("it is not a regular file"),
        }
        let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK;
        let reopen = format!("/proc/self/fd/{}", node.as_raw_fd());
        let fd = match nix::fcntl::open(reopen.as_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => openat(&parent, name, flags | OFlag::O_NOFOLLOW, Mode::empty())
                .map_err(|errno| anyhow!("cannot open it: {errno}"))?,
            Err(errno) => bail!("cannot reopen it through {reopen}: {errno}"),
        };
        let opened = fstat(&fd).map_err(|errno| anyhow!("cannot inspect it: {errno}"))?;
        if (opened.st_dev, opened.st_ino) != (stat.st_dev, stat.st_ino)
            || NodeKind::from_mode(opened.st_mode) != Some(NodeKind::File)
        {
            bail!("it was replaced while being opened");
        }
        // O_NONBLOCK means nothing to a regular file; clear it anyway for a plain File.
        fcntl(&fd, FcntlArg::F_SETFL(OFlag::empty())).map_err(|errno| anyhow!("cannot clear O_NONBLOCK: {errno}"))?;
        Ok(File::from(fd))
    }

    /// Names in a directory (no `.` and `..`), sorted, as the raw bytes they are: a jail process
    /// may create a name that is not UTF-8 (which no `JailPath` can name), and callers must see
    /// it (as something foreign) rather than fail on it or miss it.
    pub fn list(&self, path: &JailPath) -> Result<Vec<OsString>> {
        self.list_inner(path).with_context(|| self.failure("list", path))
    }

    fn list_inner(&self, path: &JailPath) -> Result<Vec<OsString>> {
        use std::os::unix::ffi::OsStringExt;
        let Some(fd) = self.lookup_dir(path, OFlag::O_RDONLY)? else { bail!("it does not exist") };
        let mut names: Vec<OsString> =
            read_names(&fd)?.into_iter().map(|name| OsString::from_vec(name.into_bytes())).collect();
        names.sort();
        Ok(names)
    }

    /// The jail root as a [`JailDir`], for a walk by directory fd (`jailprov check`).
    pub fn root_dir(&self) -> Result<JailDir> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = openat2(&self.fd, ".", OpenHow::new().flags(flags).resolve(beneath()))
            .map_err(|errno| anyhow!("cannot open the jail root {}: {errno}", self.host.display()))?;
        Ok(JailDir { fd })
    }
}

/// One directory of the jail held open for reading, for walks that must reach every name: a
/// name that is not UTF-8, or a directory deeper than `PATH_MAX`, is reached through its parent's
/// fd by its raw bytes, never through a path string. Read-only, never following a symlink.
#[derive(Debug)]
pub struct JailDir {
    fd: OwnedFd,
}

/// What [`JailDir::open_dir`] found at a name.
#[derive(Debug)]
pub enum DirOpening {
    Opened(JailDir),
    /// Gone since it was listed.
    Gone,
    /// A mount point: walks stay on one file system.
    MountPoint,
    /// No longer a directory (replaced since it was listed, or a symlink now).
    NotADirectory,
}

impl JailDir {
    /// The names in it (no `.` and `..`), as raw bytes, unsorted.
    pub fn names(&self) -> Result<Vec<CString>> {
        read_names(&self.fd)
    }

    /// `lstat` of `name` in it; None when it is gone.
    pub fn stat(&self, name: &CStr) -> Result<Option<NodeStat>> {
        match fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => NodeStat::from_stat(&stat).map(Some),
            Err(Errno::ENOENT) => Ok(None),
            Err(errno) => bail!("cannot inspect it: {errno}"),
        }
    }

    /// The target of the symlink `name`, as raw bytes.
    pub fn read_link(&self, name: &CStr) -> Result<OsString> {
        readlinkat(&self.fd, name).map_err(|errno| anyhow!("cannot read the symlink: {errno}"))
    }

    /// The directory `name` in it, opened without following a symlink and without crossing into
    /// another mount.
    pub fn open_dir(&self, name: &CStr) -> Result<DirOpening> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let how = OpenHow::new().flags(flags).resolve(beneath() | ResolveFlag::RESOLVE_NO_XDEV);
        match openat2(&self.fd, name, how) {
            Ok(fd) => Ok(DirOpening::Opened(JailDir { fd })),
            Err(Errno::ENOENT) => Ok(DirOpening::Gone),
            Err(Errno::EXDEV) => Ok(DirOpening::MountPoint),
            Err(Errno::ELOOP | Errno::ENOTDIR) => Ok(DirOpening::NotADirectory),
            Err(errno) => bail!("cannot open it: {errno}"),
        }
    }
}

/// A name or path from the jail as text to show: UTF-8 as it is, every byte that is not valid
/// UTF-8 as `\xNN`, control characters escaped (a newline in a name must not forge a line of
/// output), and a backslash doubled so that the escapes stay unambiguous.
pub fn escaped(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for character in chunk.valid().chars() {
            match character {
                '\\' => text.push_str("\\\\"),
                character if character.is_control() => text.extend(character.escape_default()),
                character => text.push(character),
            }
        }
        for byte in chunk.invalid() {
            text.push_str(&format!("\\x{byte:02x}"));
        }
    }
    text
}

/// The names in the directory `dir` (a fresh O_RDONLY fd, read from its start), without `.` and
/// `..`. getdents64 directly: nix's `dir` feature (fdopendir) is not enabled in this crate.
pub(super) fn read_names(dir: &OwnedFd) -> Result<Vec<CString>> {
    // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
    const NAME_OFFSET: usize = 19;
    let mut buffer = vec![0u8; 32 * 1024];
    let mut names = Vec::new();
    loop {
        // SAFETY: getdents64(int fd, void *dirp, size_t count) writes at most `count` bytes into
        // `dirp`; `buffer` is a live, exclusively borrowed allocation of exactly that many bytes,
        // and `dir` is a descriptor borrowed for the duration of the call.
        let read = unsafe { libc::syscall(libc::SYS_getdents64, dir.as_raw_fd(), buffer.as_mut_ptr(), buffer.len()) };
        let read = Errno::result(read).map_err(|errno| anyhow!("cannot read the directory: {errno}"))?;
        let filled = usize::try_from(read).map_err(|_| anyhow!("getdents64 returned {read}"))?;
        if filled == 0 {
            return Ok(names);
        }
        let chunk = buffer.get(..filled).ok_or_else(|| anyhow!("getdents64 returned {filled} bytes"))?;
        let mut offset = 0;
        while offset < chunk.len() {
            let record_length = chunk
                .get(offset + 16..offset + 18)
                .and_then(|bytes| <[u8; 2]>::try_from(bytes).ok())
                .map(|bytes| usize::from(u16::from_ne_bytes(bytes)))
                .ok_or_else(|| anyhow!("truncated directory entry"))?;
            let record = chunk
                .get(offset..offset + record_length)
                .filter(|record| record.len() > NAME_OFFSET)
                .ok_or_else(|| anyhow!("malformed directory entry"))?;
            let name = record[NAME_OFFSET..].split(|byte| *byte == 0).next().unwrap_or_default();
            if name != b"." && name != b".." {
                names.push(CString::new(name).map_err(|_| anyhow!("malformed directory entry"))?);
            }
            offset += record_length;
        }
    }
}
