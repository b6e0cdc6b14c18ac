//! The only code that writes into a jail: dirfd-relative, never follows a symlink planted inside.
//!
//! A jail's processes (root inside, possibly) may plant a symlink anywhere in the jail at any
//! moment, hoping jailprov writes through it to the host (`/srv/jail/usr/lib -> /etc`). So:
//!
//! - the jail root is opened once as a directory fd (`O_NOFOLLOW`: the root path itself must not
//!   be a symlink); nothing here ever resolves a jail path as a host path string;
//! - the directory holding the name an operation acts on is resolved from that fd with `openat2`
//!   and `RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`: a symlink in any parent
//!   component fails the resolution, and is reported as [`JailError::SymlinkInPath`] naming it
//!   (callers downcast it from `anyhow::Error` to repair instead of writing through it). Mount
//!   points are crossed (`RESOLVE_NO_XDEV` is not set): bind mounts inside a jail are legitimate;
//! - the final name is handled by the `*at` calls that never follow a final symlink (`mkdirat`,
//!   `symlinkat`, `mknodat`, `unlinkat`, `renameat`, `fstatat`/`fchownat` with
//!   `AT_SYMLINK_NOFOLLOW`, `openat` with `O_NOFOLLOW`); new content is written to a fresh
//!   `O_EXCL` temporary name and renamed over the final name, so an existing file is never
//!   opened for writing and a symlink planted at the final name is replaced, not followed;
//! - mode and owner are set on one inode through an `O_PATH | O_NOFOLLOW` fd (`fchownat` and
//!   `fchmodat2` with `AT_EMPTY_PATH`), so no node is ever opened for reading or writing to
//!   change its attributes: opening a device node (a tty, a tape) has side effects, and a FIFO
//!   blocks.
//!
//! The folder splits that one job by what an operation does: `node` holds the types callers see
//! (what a node is, the refusals they match on), `read` looks without changing anything,
//! `write` creates and replaces, `remove` deletes; this file opens the root and resolves a jail
//! path to the directory fd every operation starts from.

mod node;
mod read;
mod remove;
mod write;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode};

use crate::tree::JailPath;

pub use node::{ChangedUnderfoot, JailError, NodeIdentity, NodeKind, NodeStat};
pub use read::{escaped, DirOpening, JailDir};

/// Names of the temporary files written next to their final name; what a crashed apply leaves
/// behind, removed by [`JailRoot::remove_temp_files`].
pub const TEMP_PREFIX: &str = ".jailprov-tmp-";

/// How many times a resolution is retried when the kernel reports a concurrent rename (`EAGAIN`).
const RESOLVE_ATTEMPTS: usize = 16;

/// An open jail root; every operation resolves its path from the root's directory fd.
#[derive(Debug)]
pub struct JailRoot {
    fd: OwnedFd,
    host: PathBuf,
}

/// Resolution of jail paths: the jail fd is "/", and no symlink of any kind is followed.
fn in_jail() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// Resolution of a name below a directory fd (never above it), no symlinks.
fn beneath() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

impl JailRoot {
    /// Opens an existing jail root directory (refuses a symlink, a non-directory, and the host's
    /// own root). Symlinks above the root are the host administrator's and are followed.
    pub fn open(root: &Path) -> Result<JailRoot> {
        // Rebuilt from its components: a trailing "/" would make O_NOFOLLOW follow a symlink.
        let host: PathBuf = root.components().collect();
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match nix::fcntl::open(&host, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(errno) => {
                let is_symlink = std::fs::symlink_metadata(&host).is_ok_and(|meta| meta.file_type().is_symlink());
                if is_symlink || errno == Errno::ELOOP {
                    bail!("the jail root {} is a symlink; name the real directory", root.display());
                }
                if errno == Errno::ENOTDIR {
                    bail!("the jail root {} is not a directory", root.display());
                }
                bail!("cannot open the jail root {}: {errno}", root.display());
            }
        };
        let stat = fstat(&fd).map_err(|errno| anyhow!("cannot inspect the jail root {}: {errno}", root.display()))?;
        if NodeKind::from_mode(stat.st_mode) != Some(NodeKind::Dir) {
            bail!("the jail root {} is not a directory", root.display());
        }
        if let Ok(host_root) = nix::sys::stat::stat("/") {
            if (host_root.st_dev, host_root.st_ino) == (stat.st_dev, stat.st_ino) {
                bail!("the jail root {} is the host's root directory", root.display());
            }
        }
        Ok(JailRoot { fd, host })
    }

    pub fn host_path(&self) -> &Path {
        &self.host
    }

    /// The root's directory fd (for fchdir into it, say).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A jail root from a directory fd already open on it, such as the root of a mount just
    /// made (the fd of the mount, not of the directory it covers). `host` names it in messages.
    pub fn from_directory_fd(fd: OwnedFd, host: &Path) -> Result<JailRoot> {
        let stat = fstat(&fd).map_err(|errno| anyhow!("cannot inspect the jail root {}: {errno}", host.display()))?;
        if NodeKind::from_mode(stat.st_mode) != Some(NodeKind::Dir) {
            bail!("the jail root {} is not a directory", host.display());
        }
        Ok(JailRoot { fd, host: host.to_path_buf() })
    }

    /// An `O_PATH` fd on the node at `path` itself, for mounting onto it: read-only, resolved
    /// like every write (no symlink in a parent), and a symlink *at* `path` is refused too
    /// ([`JailError::SymlinkInPath`] naming `path`) rather than followed or held.
    pub fn open_path(&self, path: &JailPath) -> Result<OwnedFd> {
        self.open_path_inner(path).with_context(|| self.failure("open", path))
    }

    fn open_path_inner(&self, path: &JailPath) -> Result<OwnedFd> {
        if path.is_root() {
            let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_CLOEXEC).resolve(in_jail());
            return openat2(&self.fd, ".", how).map_err(|errno| anyhow!("cannot open it: {errno}"));
        }
        let (parent, name) = self.parent_of(path)?;
        let (node, stat) = self.open_node(&parent, name)?;
        if NodeKind::from_mode(stat.st_mode) == Some(NodeKind::Symlink) {
            return Err(JailError::SymlinkInPath { path: path.clone() }.into());
        }
        Ok(node)
    }

    /// "cannot VERB PATH in ROOT", the context of every error.
    fn failure(&self, verb: &str, path: &JailPath) -> String {
        format!("cannot {verb} {path} in {}", self.host.display())
    }

    /// The outcome of one write step, its error naming the step and path; the step counts as a
    /// crash point for tests/interrupt.rs whether it succeeded or not.
    fn finished<T>(&self, verb: &str, path: &JailPath, done: Result<T>) -> Result<T> {
        let done = done.with_context(|| self.failure(verb, path));
        crate::kill_point::passed();
        done
    }

    /// Opens the directory `dir` of the jail with `flags` (`O_PATH` or `O_RDONLY`); `None` when
    /// it (or a parent) does not exist. A symlink or non-directory on the way (`dir` included)
    /// is a [`JailError`].
    fn lookup_dir(&self, dir: &JailPath, flags: OFlag) -> Result<Option<OwnedFd>> {
        let relative = if dir.is_root() { "." } else { dir.relative() };
        let how = OpenHow::new().flags(flags | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC).resolve(in_jail());
        let mut attempts = 0;
        loop {
            match openat2(&self.fd, relative, how) {
                Ok(fd) => return Ok(Some(fd)),
                Err(Errno::ENOENT) => return Ok(None),
                Err(Errno::EAGAIN) if attempts < RESOLVE_ATTEMPTS => attempts += 1,
                Err(errno @ (Errno::ELOOP | Errno::ENOTDIR)) => return Err(self.culprit(dir, errno).into()),
                Err(errno) => bail!("cannot resolve {dir}: {errno}"),
            }
        }
    }

    /// Which component of `dir` made its resolution fail with ELOOP or ENOTDIR: walks it again
    /// one component at a time, only looking (fstatat, O_PATH opens), never following.
    fn culprit(&self, dir: &JailPath, errno: Errno) -> JailError {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let how = OpenHow::new().flags(flags).resolve(beneath());
        let mut current: Option<OwnedFd> = None;
        let mut walked = JailPath::root();
        for name in dir.relative().split('/').filter(|name| !name.is_empty()) {
            let Ok(next) = walked.join(Path::new(name)) else { break };
            walked = next;
            let base = current.as_ref().map_or(self.fd.as_fd(), |fd| fd.as_fd());
            let Ok(stat) = fstatat(base, name, AtFlags::AT_SYMLINK_NOFOLLOW) else { break };
            match NodeKind::from_mode(stat.st_mode) {
                Some(NodeKind::Dir) => {}
                Some(NodeKind::Symlink) => return JailError::SymlinkInPath { path: walked },
                _ => return JailError::NotADirectory { path: walked },
            }
            match openat2(base, name, how) {
                Ok(fd) => current = Some(fd),
                Err(_) => break,
            }
        }
        // The culprit changed again meanwhile: blame the whole path, keeping the error's type.
        if errno == Errno::ELOOP {
            JailError::SymlinkInPath { path: dir.clone() }
        } else {
            JailError::NotADirectory { path: dir.clone() }
        }
    }

    /// The parent directory of `path` (as an O_PATH fd) and the final name, for operations that
    /// need the parent to exist.
    fn parent_of<'p>(&self, path: &'p JailPath) -> Result<(OwnedFd, &'p str)> {
        let parent = path.parent().ok_or_else(|| anyhow!("this cannot be done to the jail root itself"))?;
        match self.lookup_dir(&parent, OFlag::O_PATH)? {
            Some(fd) => Ok((fd, path.file_name())),
            None => bail!("{parent} does not exist"),
        }
    }

    /// Like `parent_of`, `None` when the parent does not exist.
    fn existing_parent_of<'p>(&self, path: &'p JailPath) -> Result<Option<(OwnedFd, &'p str)>> {
        let parent = path.parent().ok_or_else(|| anyhow!("this cannot be done to the jail root itself"))?;
        Ok(self.lookup_dir(&parent, OFlag::O_PATH)?.map(|fd| (fd, path.file_name())))
    }

    /// An O_PATH fd on the node itself (a symlink stays a symlink) and its stat.
    fn open_node(&self, parent: &OwnedFd, name: &str) -> Result<(OwnedFd, FileStat)> {
        let fd = match openat(parent, name, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => bail!("it does not exist"),
            Err(errno) => bail!("cannot open it: {errno}"),
        };
        let stat = fstat(&fd).map_err(|errno| anyhow!("cannot inspect it: {errno}"))?;
        Ok((fd, stat))
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests build their fixtures with plain fs calls
mod tests;
