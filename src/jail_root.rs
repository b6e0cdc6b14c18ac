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

use std::ffi::{CStr, CString, OsString};
use std::fmt;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{fcntl, openat, openat2, readlinkat, renameat, AtFlags, FcntlArg, OFlag, OpenHow, ResolveFlag};
use nix::libc;
use nix::sys::stat::{fchmod, fstat, fstatat, futimens, mkdirat, mknodat, FileStat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use serde::{Deserialize, Serialize};

use crate::tree::JailPath;

/// Names of the temporary files written next to their final name; what a crashed apply leaves
/// behind, removed by [`JailRoot::remove_temp_files`].
pub const TEMP_PREFIX: &str = ".jailprov-tmp-";

/// How many fresh temporary names are tried before giving up (each collision is an `EEXIST`).
const TEMP_ATTEMPTS: usize = 32;

/// How many times a resolution is retried when the kernel reports a concurrent rename (`EAGAIN`).
const RESOLVE_ATTEMPTS: usize = 16;

/// How deep [`JailRoot::remove_tree`] descends; a jail process could build an absurdly deep tree.
const MAX_TREE_DEPTH: usize = 256;

/// The type of a node in the jail, from `st_mode & S_IFMT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl NodeKind {
    /// The kind of an `st_mode`; `None` for a type Linux does not have.
    pub fn from_mode(st_mode: u32) -> Option<NodeKind> {
        match st_mode & libc::S_IFMT {
            libc::S_IFREG => Some(NodeKind::File),
            libc::S_IFDIR => Some(NodeKind::Dir),
            libc::S_IFLNK => Some(NodeKind::Symlink),
            libc::S_IFCHR => Some(NodeKind::CharDevice),
            libc::S_IFBLK => Some(NodeKind::BlockDevice),
            libc::S_IFIFO => Some(NodeKind::Fifo),
            libc::S_IFSOCK => Some(NodeKind::Socket),
            _ => None,
        }
    }

    /// The short name messages use: "dir", "file", "char device"...
    pub fn short_name(self) -> &'static str {
        match self {
            NodeKind::File => "file",
            NodeKind::Dir => "dir",
            NodeKind::Symlink => "symlink",
            NodeKind::CharDevice => "char device",
            NodeKind::BlockDevice => "block device",
            NodeKind::Fifo => "fifo",
            NodeKind::Socket => "socket",
        }
    }
}

/// Which node is at a path: its type and (device, inode). A plan carries the identity of what
/// it saw, and owner and mode are only ever set on a node that still has it: a jail process
/// that swaps a managed directory for its own executable (`renameat2(RENAME_EXCHANGE)`) between
/// plan and apply must not get a root-owned setgid program out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub kind: NodeKind,
    pub dev: u64,
    pub ino: u64,
}

impl NodeIdentity {
    fn of(stat: &FileStat) -> Option<NodeIdentity> {
        // st_dev and st_ino are u64 on x86_64 but narrower on some architectures.
        #[allow(clippy::useless_conversion)]
        let (dev, ino) = (u64::from(stat.st_dev), u64::from(stat.st_ino));
        Some(NodeIdentity { kind: NodeKind::from_mode(stat.st_mode)?, dev, ino })
    }
}

impl fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ino {}", self.kind.short_name(), self.ino)
    }
}

/// Owner and mode were not set, nothing was written: the node at `path` is not the one the plan
/// saw (or the directory apply had just created). Reach it with `error.downcast_ref()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedUnderfoot {
    pub path: JailPath,
    /// What the plan saw (or apply made): "dir ino 12", "absent".
    pub was: String,
    /// What is there now: "file ino 34 owned by uid 1000", "absent".
    pub now: String,
}

impl fmt::Display for ChangedUnderfoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} changed between plan and apply (was {}, now {}); not touched", self.path, self.was, self.now)
    }
}

impl std::error::Error for ChangedUnderfoot {}

/// "file ino 34 owned by uid 1000", for a [`ChangedUnderfoot`].
fn describe_node(stat: &FileStat) -> String {
    match NodeIdentity::of(stat) {
        Some(identity) => format!("{identity} owned by uid {}", stat.st_uid),
        None => format!("an unknown file type owned by uid {}", stat.st_uid),
    }
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeKind::File => "regular file",
            NodeKind::Dir => "directory",
            NodeKind::Symlink => "symlink",
            NodeKind::CharDevice => "character device",
            NodeKind::BlockDevice => "block device",
            NodeKind::Fifo => "FIFO",
            NodeKind::Socket => "socket",
        })
    }
}

/// What `lstat` says about a node in the jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStat {
    pub kind: NodeKind,
    /// Permission bits including setuid, setgid and sticky: `st_mode & 0o7777`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub ino: u64,
    pub dev: u64,
    pub rdev: u64,
    pub nlink: u64,
}

impl NodeStat {
    /// The identity a plan carries to apply.
    pub fn identity(&self) -> NodeIdentity {
        NodeIdentity { kind: self.kind, dev: self.dev, ino: self.ino }
    }

    // st_nlink, st_dev... are u64 on x86_64 but narrower on some architectures.
    #[allow(clippy::useless_conversion)]
    fn from_stat(stat: &FileStat) -> Result<NodeStat> {
        let kind = NodeKind::from_mode(stat.st_mode)
            .ok_or_else(|| anyhow!("unknown file type {:o}", stat.st_mode & libc::S_IFMT))?;
        Ok(NodeStat {
            kind,
            mode: stat.st_mode & 0o7777,
            uid: stat.st_uid,
            gid: stat.st_gid,
            size: u64::try_from(stat.st_size).unwrap_or(0),
            mtime_ns: i128::from(stat.st_mtime) * 1_000_000_000 + i128::from(stat.st_mtime_nsec),
            ctime_ns: i128::from(stat.st_ctime) * 1_000_000_000 + i128::from(stat.st_ctime_nsec),
            ino: u64::from(stat.st_ino),
            dev: u64::from(stat.st_dev),
            rdev: u64::from(stat.st_rdev),
            nlink: u64::from(stat.st_nlink),
        })
    }
}

/// Refusals callers act on; reach them with `error.downcast_ref::<JailError>()` (context added on
/// top by this module does not hide them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JailError {
    /// `path` is a symlink where a directory is needed: the first symlink among the parent
    /// components of the path an operation was given, or that path itself for the operations
    /// that need a directory there (`mkdir` finding a symlink in place, `list`,
    /// `remove_temp_files`). Nothing was read or written through it.
    SymlinkInPath { path: JailPath },
    /// `path` is neither a directory nor a symlink where a directory is needed (a regular file
    /// as a parent component, say).
    NotADirectory { path: JailPath },
}

impl fmt::Display for JailError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JailError::SymlinkInPath { path } => write!(
                f,
                "{path} is a symlink where a directory should be; jailprov never resolves a path through a symlink inside a jail"
            ),
            JailError::NotADirectory { path } => write!(f, "{path} is not a directory"),
        }
    }
}

impl std::error::Error for JailError {}

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

fn uid_gid(uid: u32, gid: u32) -> (Option<Uid>, Option<Gid>) {
    (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
}

/// Permission bits as a `Mode`; refuses file-type or unknown bits.
fn permissions(mode: u32) -> Result<Mode> {
    if mode & !0o7777 != 0 {
        bail!("mode {mode:o} has bits beyond 7777");
    }
    Ok(Mode::from_bits_truncate(mode))
}

fn timespec_of(ns: i128) -> Result<TimeSpec> {
    let seconds = i64::try_from(ns.div_euclid(1_000_000_000)).map_err(|_| anyhow!("mtime {ns} ns is out of range"))?;
    // rem_euclid is within 0..1e9: it fits a c_long.
    let nanos = ns.rem_euclid(1_000_000_000) as libc::c_long;
    Ok(TimeSpec::new(seconds, nanos))
}

/// A fresh `.jailprov-tmp-<16 hex digits>`. Unpredictability is not what keeps this safe (every
/// temporary is created with `O_EXCL` or its `EEXIST` equivalent and retried); it only makes
/// collisions between concurrent runs unlikely.
fn temp_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the OS's random source.
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    format!("{TEMP_PREFIX}{:016x}", hasher.finish())
}

/// Runs `create` with fresh temporary names until one is free.
fn with_temp_name<T>(mut create: impl FnMut(&str) -> nix::Result<T>) -> Result<(String, T)> {
    for _ in 0..TEMP_ATTEMPTS {
        let name = temp_name();
        match create(&name) {
            Ok(value) => return Ok((name, value)),
            Err(Errno::EEXIST) => continue,
            Err(errno) => bail!("cannot create a temporary {name}: {errno}"),
        }
    }
    bail!("no free temporary name after {TEMP_ATTEMPTS} attempts")
}

/// Removes a temporary after a failure. Best effort on purpose: the operation's own error is
/// the one to report, and `remove_temp_files` sweeps whatever remains.
fn discard_temp(parent: &OwnedFd, temp: &str) {
    let _ = unlinkat(parent, temp, UnlinkatFlags::NoRemoveDir);
}

/// Renames `temp` over `name` in the same directory: replaces a file, symlink or device there
/// without following it; refuses a directory.
fn rename_over(parent: &OwnedFd, temp: &str, name: &str) -> Result<()> {
    match renameat(parent, temp, parent, name) {
        Ok(()) => Ok(()),
        Err(Errno::EISDIR | Errno::ENOTEMPTY | Errno::EEXIST) => {
            bail!("a directory is in the way (remove it first)")
        }
        Err(Errno::EBUSY) => bail!("it is a mount point"),
        Err(errno) => bail!("cannot rename the temporary {temp} over it: {errno}"),
    }
}

/// `fchmodat2(fd, "", mode, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)`: chmod of the inode `fd`
/// (an `O_PATH` fd is enough) without opening it. `ENOSYS` before Linux 6.6.
fn fchmodat2_fd(fd: BorrowedFd<'_>, mode: u32) -> nix::Result<()> {
    // The syscall number is 452 on every architecture sharing the generic table numbering of
    // new syscalls; elsewhere the caller's ENOSYS fallback takes over.
    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64",
        target_arch = "loongarch64",
        target_arch = "powerpc64",
        target_arch = "s390x"
    ))]
    {
        #[cfg(all(target_arch = "x86_64", target_pointer_width = "32"))]
        const SYS_FCHMODAT2: libc::c_long = 0x4000_0000 + 452;
        #[cfg(not(all(target_arch = "x86_64", target_pointer_width = "32")))]
        const SYS_FCHMODAT2: libc::c_long = 452;
        let empty: &CStr = c"";
        // SAFETY: fchmodat2(int dirfd, const char *path, mode_t mode, unsigned int flags) takes
        // no pointer other than `path`, a valid NUL-terminated static string; `fd` is a live
        // descriptor borrowed for the duration of the call. The kernel writes no user memory.
        let result = unsafe {
            libc::syscall(
                SYS_FCHMODAT2,
                fd.as_raw_fd(),
                empty.as_ptr(),
                mode as libc::mode_t,
                (libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW) as libc::c_uint,
            )
        };
        Errno::result(result).map(drop)
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64",
        target_arch = "loongarch64",
        target_arch = "powerpc64",
        target_arch = "s390x"
    )))]
    {
        let _ = (fd, mode);
        Err(Errno::ENOSYS)
    }
}

/// chmod through `/proc/self/fd/N`: the magic link reaches exactly the inode `fd` holds. Only
/// used when the kernel lacks fchmodat2, and never for symlinks (chmod would follow them).
#[allow(clippy::disallowed_methods)] // the fd's own inode, through its magic link: the writer's fallback
fn chmod_through_proc(fd: BorrowedFd<'_>, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    std::fs::set_permissions(&link, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod through {link} (fchmodat2 is missing)"))
}

/// Sets owner, then mode (chown clears setuid/setgid, so the mode comes last), on the inode of
/// `fd`, which may be an `O_PATH` fd; a symlink only gets its owner.
fn set_owner_and_mode(fd: BorrowedFd<'_>, kind: NodeKind, mode: u32, uid: u32, gid: u32) -> Result<()> {
    let mode_bits = permissions(mode)?.bits();
    let (owner, group) = uid_gid(uid, gid);
    fchownat(fd, "", owner, group, AtFlags::AT_EMPTY_PATH | AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|errno| anyhow!("cannot change the owner to {uid}:{gid}: {errno}"))?;
    if kind == NodeKind::Symlink {
        return Ok(());
    }
    match fchmodat2_fd(fd, mode_bits) {
        Ok(()) => Ok(()),
        Err(Errno::ENOSYS) => chmod_through_proc(fd, mode_bits),
        Err(errno) => bail!("cannot change the mode to {mode_bits:04o}: {errno}"),
    }
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

    /// lstat of a jail path; `Ok(None)` when it (or a parent) does not exist. A parent that is a
    /// symlink or not a directory is a [`JailError`], not a `None`.
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
    pub fn read_link(&self, path: &JailPath) -> Result<String> {
        self.read_link_inner(path).with_context(|| self.failure("read the symlink", path))
    }

    fn read_link_inner(&self, path: &JailPath) -> Result<String> {
        let (parent, name) = self.parent_of(path)?;
        let target: OsString = match readlinkat(&parent, name) {
            Ok(target) => target,
            Err(Errno::EINVAL) => bail!("it is not a symlink"),
            Err(Errno::ENOENT) => bail!("it does not exist"),
            Err(errno) => bail!("{errno}"),
        };
        target.into_string().map_err(|target| anyhow!("its target {target:?} is not UTF-8"))
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

    /// Creates a directory with exactly `mode` (set with fchmod after mkdirat: the umask plays
    /// no part) and owner. Only a directory made by this very call gets them: anything already
    /// at `path` (a directory included: the plan saw nothing there) is a [`ChangedUnderfoot`]
    /// (a symlink: [`JailError::SymlinkInPath`]; another non-directory:
    /// [`JailError::NotADirectory`]), and so is a node swapped in between mkdirat and the open
    /// that sets the attributes.
    pub fn mkdir(&self, path: &JailPath, mode: u32, uid: u32, gid: u32) -> Result<()> {
        self.mkdir_inner(path, mode, uid, gid).with_context(|| self.failure("create", path))
    }

    fn mkdir_inner(&self, path: &JailPath, mode: u32, uid: u32, gid: u32) -> Result<()> {
        let mode = permissions(mode)?;
        let (parent, name) = self.parent_of(path)?;
        match mkdirat(&parent, name, Mode::S_IRWXU) {
            Ok(()) => {}
            Err(Errno::EEXIST) => return Err(self.in_the_way_of_mkdir(&parent, name, path)),
            Err(errno) => bail!("{errno}"),
        }
        // O_DIRECTORY: never opens anything but a directory; O_NOFOLLOW: never a planted symlink.
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let just_made = || ChangedUnderfoot {
            path: path.clone(),
            was: "the directory jailprov had just created".to_owned(),
            now: match fstatat(&parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(stat) => describe_node(&stat),
                Err(_) => "absent".to_owned(),
            },
        };
        let dir = openat(&parent, name, flags, Mode::empty()).map_err(|_| just_made())?;
        let stat = fstat(&dir).map_err(|errno| anyhow!("cannot inspect the new directory: {errno}"))?;
        // What mkdirat made is owned by us with no group/other bits (mode 0700 at most); a jail
        // user cannot make a directory like that, so anything else was swapped in meanwhile.
        let ours = stat.st_uid == nix::unistd::geteuid().as_raw() && stat.st_mode & 0o077 == 0;
        if NodeKind::from_mode(stat.st_mode) != Some(NodeKind::Dir) || !ours {
            return Err(ChangedUnderfoot { now: describe_node(&stat), ..just_made() }.into());
        }
        let (owner, group) = uid_gid(uid, gid);
        fchown(&dir, owner, group).map_err(|errno| anyhow!("cannot change the owner to {uid}:{gid}: {errno}"))?;
        fchmod(&dir, mode).map_err(|errno| anyhow!("cannot change the mode to {:04o}: {errno}", mode.bits()))?;
        Ok(())
    }

    /// Why mkdir found `name` taken: a symlink or file as a [`JailError`], a directory as a
    /// [`ChangedUnderfoot`] (it appeared after the plan saw nothing there).
    fn in_the_way_of_mkdir(&self, parent: &OwnedFd, name: &str, path: &JailPath) -> anyhow::Error {
        match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) if NodeKind::from_mode(stat.st_mode) == Some(NodeKind::Symlink) => {
                JailError::SymlinkInPath { path: path.clone() }.into()
            }
            Ok(stat) if NodeKind::from_mode(stat.st_mode) != Some(NodeKind::Dir) => {
                JailError::NotADirectory { path: path.clone() }.into()
            }
            Ok(stat) => {
                ChangedUnderfoot { path: path.clone(), was: "absent".to_owned(), now: describe_node(&stat) }.into()
            }
            Err(errno) => anyhow!("it exists but cannot be inspected: {errno}"),
        }
    }

    /// Flushes everything written to the jail's file system (syncfs), so a power loss after this
    /// returns cannot lose what apply is about to record as done.
    pub fn sync(&self) -> Result<()> {
        nix::unistd::syncfs(&self.fd).map_err(|errno| anyhow!("cannot sync {}: {errno}", self.host.display()))
    }

    /// Writes a regular file atomically: a temporary `.jailprov-tmp-<random>` in the same
    /// directory (`O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600 until done), written from
    /// `contents`, fchown, fchmod (exact mode including setuid bits, after fchown, which clears
    /// them), the optional mtime (futimens on the fd; atime is left alone), then renameat over
    /// `path`, replacing a file, symlink or device there without following it. A crash of
    /// jailprov at any moment leaves the old or the new file, plus possibly a temporary. There
    /// is no fsync per file (it tripled the time of a large apply): [`JailRoot::sync`] flushes
    /// the whole file system once, before apply records its work. A directory at `path` is an
    /// error (see [`JailRoot::remove_tree`]).
    pub fn write_file(
        &self,
        path: &JailPath,
        contents: &mut dyn Read,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime_ns: Option<i128>,
    ) -> Result<()> {
        self.write_file_inner(path, contents, mode, uid, gid, mtime_ns).with_context(|| self.failure("write", path))
    }

    fn write_file_inner(
        &self,
        path: &JailPath,
        contents: &mut dyn Read,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime_ns: Option<i128>,
    ) -> Result<()> {
        let mode = permissions(mode)?;
        let mtime = mtime_ns.map(timespec_of).transpose()?;
        let (parent, name) = self.parent_of(path)?;
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let (temp, fd) = with_temp_name(|temp| openat(&parent, temp, flags, Mode::S_IRUSR | Mode::S_IWUSR))?;
        let mut file = File::from(fd);
        let written = (|| -> Result<()> {
            std::io::copy(contents, &mut file).context("cannot write the contents")?;
            let (owner, group) = uid_gid(uid, gid);
            fchown(&file, owner, group).map_err(|errno| anyhow!("cannot change the owner to {uid}:{gid}: {errno}"))?;
            fchmod(&file, mode).map_err(|errno| anyhow!("cannot change the mode to {:04o}: {errno}", mode.bits()))?;
            if let Some(mtime) = mtime {
                futimens(&file, &TimeSpec::UTIME_OMIT, &mtime)
                    .map_err(|errno| anyhow!("cannot set the mtime: {errno}"))?;
            }
            rename_over(&parent, &temp, name)
        })();
        if written.is_err() {
            discard_temp(&parent, &temp);
        }
        written
    }

    /// Creates (or atomically replaces, via a temporary name and renameat) a symlink whose text
    /// is exactly `target`, owned by `uid:gid`.
    pub fn symlink(&self, path: &JailPath, target: &str, uid: u32, gid: u32) -> Result<()> {
        self.symlink_inner(path, target, uid, gid).with_context(|| self.failure("create the symlink", path))
    }

    fn symlink_inner(&self, path: &JailPath, target: &str, uid: u32, gid: u32) -> Result<()> {
        if target.is_empty() {
            bail!("a symlink target cannot be empty");
        }
        let (parent, name) = self.parent_of(path)?;
        let (temp, ()) = with_temp_name(|temp| symlinkat(target, &parent, temp))?;
        // The owner goes on the symlink just made, held by an fd: a jail process that can write
        // here could have put its own file under the temporary name meanwhile.
        let done = (|| -> Result<()> {
            let (node, stat) = self.open_node(&parent, &temp)?;
            if NodeKind::from_mode(stat.st_mode) != Some(NodeKind::Symlink) {
                bail!("the temporary {temp} was replaced before its owner was set");
            }
            set_owner_and_mode(node.as_fd(), NodeKind::Symlink, 0, uid, gid)?;
            rename_over(&parent, &temp, name)
        })();
        if done.is_err() {
            discard_temp(&parent, &temp);
        }
        done
    }

    /// Creates (or atomically replaces) a device node, char or block (a FIFO too: `rdev` is then
    /// ignored), with `rdev`, exactly `mode` and owner: made under a temporary name with no
    /// permission bits, given its attributes through an O_PATH fd (never opened), renamed over.
    pub fn mknod(&self, path: &JailPath, kind: NodeKind, rdev: u64, mode: u32, uid: u32, gid: u32) -> Result<()> {
        self.mknod_inner(path, kind, rdev, mode, uid, gid).with_context(|| self.failure("create the device node", path))
    }

    fn mknod_inner(&self, path: &JailPath, kind: NodeKind, rdev: u64, mode: u32, uid: u32, gid: u32) -> Result<()> {
        let (file_type, rdev) = match kind {
            NodeKind::CharDevice => (SFlag::S_IFCHR, rdev),
            NodeKind::BlockDevice => (SFlag::S_IFBLK, rdev),
            NodeKind::Fifo => (SFlag::S_IFIFO, 0),
            other => bail!("mknod makes device nodes and FIFOs, not a {other}"),
        };
        permissions(mode)?;
        let (parent, name) = self.parent_of(path)?;
        let (temp, ()) = with_temp_name(|temp| mknodat(&parent, temp, file_type, Mode::empty(), rdev))?;
        let done = (|| -> Result<()> {
            let (node, stat) = self.open_node(&parent, &temp)?;
            let made = NodeKind::from_mode(stat.st_mode);
            if made != Some(kind) || (kind != NodeKind::Fifo && NodeStat::from_stat(&stat)?.rdev != rdev) {
                bail!("the temporary {temp} was replaced before its attributes were set");
            }
            set_owner_and_mode(node.as_fd(), kind, mode, uid, gid)?;
            rename_over(&parent, &temp, name)
        })();
        if done.is_err() {
            discard_temp(&parent, &temp);
        }
        done
    }

    /// Sets mode and owner of the node at `path` if it is still `seen` (same type, device and
    /// inode: what the plan saw there), else changes nothing and returns a [`ChangedUnderfoot`].
    /// Never follows a final symlink (a symlink only gets its owner). Works on the jail root
    /// ("/") too. The node is held by one O_PATH fd, checked and changed through it, and never
    /// opened, so a device node or FIFO is safe and a node swapped in after the check is not
    /// the one changed.
    pub fn set_attributes(&self, path: &JailPath, seen: &NodeIdentity, mode: u32, uid: u32, gid: u32) -> Result<()> {
        self.set_attributes_inner(path, seen, mode, uid, gid)
            .with_context(|| self.failure("set mode and owner of", path))
    }

    fn set_attributes_inner(&self, path: &JailPath, seen: &NodeIdentity, mode: u32, uid: u32, gid: u32) -> Result<()> {
        let changed = |now: String| ChangedUnderfoot { path: path.clone(), was: seen.to_string(), now };
        let held;
        let node = if path.is_root() {
            self.fd.as_fd()
        } else {
            let (parent, name) = self.parent_of(path)?;
            held = match openat(&parent, name, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => return Err(changed("absent".to_owned()).into()),
                Err(errno) => bail!("cannot open it: {errno}"),
            };
            held.as_fd()
        };
        let stat = fstat(node).map_err(|errno| anyhow!("cannot inspect it: {errno}"))?;
        if NodeIdentity::of(&stat).as_ref() != Some(seen) {
            return Err(changed(describe_node(&stat)).into());
        }
        set_owner_and_mode(node, seen.kind, mode, uid, gid)
    }

    /// Removes a non-directory (file, symlink, device...). `Ok(false)` if it (or its parent) did
    /// not exist; a directory is an error.
    pub fn remove_file(&self, path: &JailPath) -> Result<bool> {
        self.remove_file_inner(path).with_context(|| self.failure("remove", path))
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
        self.remove_dir_inner(path).with_context(|| self.failure("remove the directory", path))
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

fn name_cstring(name: &str) -> Result<CString> {
    CString::new(name).map_err(|_| anyhow!("a name cannot hold a NUL byte"))
}

/// The names in the directory `dir` (a fresh O_RDONLY fd, read from its start), without `.` and
/// `..`. getdents64 directly: nix's `dir` feature (fdopendir) is not enabled in this crate.
fn read_names(dir: &OwnedFd) -> Result<Vec<CString>> {
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

/// Removes `name` in `parent`: a non-directory is unlinked, a directory emptied (recursively,
/// opened with O_NOFOLLOW and RESOLVE_NO_XDEV) then removed. `shown` names it in errors.
fn remove_entry(parent: &OwnedFd, name: &CStr, shown: &str, depth: usize) -> Result<()> {
    let stat = match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::ENOENT) => return Ok(()),
        Err(errno) => bail!("cannot inspect {shown}: {errno}"),
    };
    if NodeKind::from_mode(stat.st_mode) != Some(NodeKind::Dir) {
        return match unlinkat(parent, name, UnlinkatFlags::NoRemoveDir) {
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
    match unlinkat(parent, name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::ENOTEMPTY | Errno::EEXIST) => bail!("{shown} filled up again while being removed"),
        Err(errno) => bail!("cannot remove {shown}: {errno}"),
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests build their fixtures with plain fs calls
mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::io;
    use std::os::unix::fs::{symlink as host_symlink, FileTypeExt, MetadataExt};
    use std::sync::atomic::AtomicBool;
    use std::sync::{mpsc, Arc};
    use std::time::{Duration, Instant};

    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    use nix::sys::stat::{major, makedev, minor, umask};
    use tempfile::TempDir;

    use super::*;

    fn jp(text: &str) -> JailPath {
        JailPath::parse(text).expect("test paths are valid jail paths")
    }

    /// `set_attributes` on whatever is at the path right now (what a plan made a moment ago
    /// would see); a missing path is refused like any other change.
    trait SetAttributesNow {
        fn set_attributes_now(&self, path: &JailPath, mode: u32, uid: u32, gid: u32) -> Result<()>;
    }

    impl SetAttributesNow for JailRoot {
        fn set_attributes_now(&self, path: &JailPath, mode: u32, uid: u32, gid: u32) -> Result<()> {
            let seen = match self.stat(path)? {
                Some(stat) => stat.identity(),
                None => NodeIdentity { kind: NodeKind::File, dev: 0, ino: 0 },
            };
            self.set_attributes(path, &seen, mode, uid, gid)
        }
    }

    /// A jail and, next to it, an "outside" canary directory standing for the host.
    struct Scene {
        _dir: TempDir,
        jail_dir: PathBuf,
        outside: PathBuf,
        jail: JailRoot,
    }

    fn scene() -> Result<Scene> {
        assert!(nix::unistd::geteuid().is_root(), "the jail_root tests need root (chown, mknod, mount)");
        let dir = tempfile::tempdir()?;
        let jail_dir = dir.path().join("jail");
        let outside = dir.path().join("outside");
        fs::create_dir(&jail_dir)?;
        fs::create_dir(&outside)?;
        fs::write(outside.join("secret"), b"host secret\n")?;
        fs::create_dir(outside.join("empty"))?;
        fs::create_dir(outside.join("sub"))?;
        fs::write(outside.join("sub/file"), b"host file\n")?;
        let jail = JailRoot::open(&jail_dir)?;
        Ok(Scene { _dir: dir, jail_dir, outside, jail })
    }

    /// Every fact about a host tree a write could change: names, kinds, modes, owners, inode
    /// numbers, mtime and ctime (a chown to the same owner still moves ctime), contents, link
    /// texts.
    fn snapshot(root: &Path) -> Result<BTreeMap<PathBuf, String>> {
        let mut facts = BTreeMap::new();
        let mut pending = vec![root.to_path_buf()];
        while let Some(path) = pending.pop() {
            let meta = fs::symlink_metadata(&path)?;
            let what = if meta.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&path)?.display())
            } else if meta.is_dir() {
                for entry in fs::read_dir(&path)? {
                    pending.push(entry?.path());
                }
                "dir".to_owned()
            } else if meta.is_file() {
                format!("{:?}", fs::read(&path)?)
            } else {
                format!("special rdev {}", meta.rdev())
            };
            let facts_of = format!(
                "{what} mode {:o} owner {}:{} ino {} mtime {}.{} ctime {}.{}",
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.ino(),
                meta.mtime(),
                meta.mtime_nsec(),
                meta.ctime(),
                meta.ctime_nsec()
            );
            facts.insert(path.strip_prefix(root)?.to_path_buf(), facts_of);
        }
        Ok(facts)
    }

    fn symlink_in_path(error: &anyhow::Error) -> Option<JailPath> {
        match error.downcast_ref::<JailError>() {
            Some(JailError::SymlinkInPath { path }) => Some(path.clone()),
            _ => None,
        }
    }

    fn temp_names(jail: &JailRoot, dir: &str) -> Result<Vec<String>> {
        Ok(jail
            .list(&jp(dir))?
            .into_iter()
            .filter_map(|name| name.into_string().ok())
            .filter(|name| name.starts_with(TEMP_PREFIX))
            .collect())
    }

    /// Runs `body` on a thread of its own after `unshare(flags)`: a private umask (CLONE_FS) or
    /// mount namespace (CLONE_NEWNS) that the other tests of this process never see.
    fn on_own_thread(flags: CloneFlags, body: impl FnOnce() -> Result<()> + Send + 'static) -> Result<()> {
        let thread = std::thread::spawn(move || -> Result<()> {
            unshare(flags).context("unshare")?;
            body()
        });
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// A reader that fails after a few bytes, like a host file vanishing mid-copy.
    struct FailingReader(usize);

    impl Read for FailingReader {
        fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("source vanished"));
            }
            let count = self.0.min(buffer.len());
            buffer[..count].fill(b'x');
            self.0 -= count;
            Ok(count)
        }
    }

    #[test]
    fn open_refuses_a_symlink_a_file_and_the_host_root() -> Result<()> {
        let scene = scene()?;
        let link = scene.jail_dir.with_file_name("jail-link");
        host_symlink(&scene.jail_dir, &link)?;
        for refused in [link.clone(), link.join(""), PathBuf::from(format!("{}/", link.display()))] {
            let error = JailRoot::open(&refused).expect_err("a symlinked jail root must be refused");
            assert!(error.to_string().contains("is a symlink"), "{error:#}");
        }
        let error = JailRoot::open(&scene.outside.join("secret")).expect_err("a file is no jail root");
        assert!(error.to_string().contains("not a directory"), "{error:#}");
        assert!(JailRoot::open(Path::new("/")).is_err(), "the host root is no jail root");
        assert!(JailRoot::open(&scene.jail_dir.join("missing")).is_err());
        let opened = JailRoot::open(&scene.jail_dir.join(""))?;
        assert_eq!(opened.host_path(), scene.jail_dir.as_path());
        Ok(())
    }

    #[test]
    fn creates_every_kind_exactly_whatever_the_umask() -> Result<()> {
        let scene = scene()?;
        on_own_thread(CloneFlags::CLONE_FS, move || {
            umask(Mode::from_bits_truncate(0o077));
            // The umask is in force on this thread: a plain mkdir loses group/other bits.
            let control = scene.jail_dir.join("control");
            fs::create_dir(&control)?;
            assert_eq!(fs::metadata(&control)?.mode() & 0o7777, 0o700);

            let jail = &scene.jail;
            jail.mkdir(&jp("/tmp"), 0o1777, 0, 0)?;
            jail.mkdir(&jp("/home"), 0o755, 0, 0)?;
            jail.mkdir(&jp("/home/jailer"), 0o750, 1000, 1001)?;
            jail.mkdir(&jp("/usr"), 0o755, 0, 0)?;
            jail.mkdir(&jp("/usr/bin"), 0o755, 0, 0)?;
            jail.mkdir(&jp("/dev"), 0o755, 0, 0)?;
            jail.mkdir(&jp("/run"), 0o755, 0, 0)?;
            let mtime = 1_600_000_000_123_456_789;
            jail.write_file(&jp("/usr/bin/su"), &mut &b"#!/bin/true\n"[..], 0o4755, 1000, 1000, Some(mtime))?;
            jail.write_file(&jp("/usr/bin/wall"), &mut &b"wall"[..], 0o2711, 0, 5, None)?;
            jail.symlink(&jp("/bin"), "usr/bin", 1000, 1001)?;
            jail.mknod(&jp("/dev/sda1"), NodeKind::BlockDevice, makedev(8, 1), 0o660, 0, 6)?;
            jail.mknod(&jp("/run/initctl"), NodeKind::Fifo, 0, 0o620, 0, 5)?;

            let stat = |path: &str| -> Result<NodeStat> { jail.stat(&jp(path))?.context("missing") };
            let dir = stat("/tmp")?;
            assert_eq!((dir.kind, dir.mode, dir.uid, dir.gid), (NodeKind::Dir, 0o1777, 0, 0));
            assert_eq!(fs::metadata(scene.jail_dir.join("tmp"))?.mode() & 0o7777, 0o1777);
            let home = stat("/home/jailer")?;
            assert_eq!((home.kind, home.mode, home.uid, home.gid), (NodeKind::Dir, 0o750, 1000, 1001));
            let su = stat("/usr/bin/su")?;
            assert_eq!((su.kind, su.mode, su.uid, su.gid, su.size), (NodeKind::File, 0o4755, 1000, 1000, 12));
            assert_eq!(su.mtime_ns, mtime);
            assert_eq!(fs::read(scene.jail_dir.join("usr/bin/su"))?, b"#!/bin/true\n");
            let wall = stat("/usr/bin/wall")?;
            assert_eq!((wall.mode, wall.uid, wall.gid), (0o2711, 0, 5));
            let bin = stat("/bin")?;
            assert_eq!((bin.kind, bin.uid, bin.gid), (NodeKind::Symlink, 1000, 1001));
            assert_eq!(jail.read_link(&jp("/bin"))?, "usr/bin");
            assert_eq!(fs::read_link(scene.jail_dir.join("bin"))?, Path::new("usr/bin"));
            let disk = stat("/dev/sda1")?;
            assert_eq!((disk.kind, disk.mode, disk.uid, disk.gid), (NodeKind::BlockDevice, 0o660, 0, 6));
            assert_eq!((major(disk.rdev), minor(disk.rdev)), (8, 1));
            assert!(fs::symlink_metadata(scene.jail_dir.join("dev/sda1"))?.file_type().is_block_device());
            let fifo = stat("/run/initctl")?;
            assert_eq!((fifo.kind, fifo.mode, fifo.gid), (NodeKind::Fifo, 0o620, 5));

            // mkdir over an existing directory changes nothing: it is not the one mkdir made.
            let error = jail.mkdir(&jp("/tmp"), 0o755, 1000, 1000).expect_err("the directory was there already");
            let changed = error.downcast_ref::<ChangedUnderfoot>().expect("a ChangedUnderfoot");
            assert_eq!(changed.was, "absent", "{error:#}");
            let tmp = stat("/tmp")?;
            assert_eq!((tmp.mode, tmp.uid, tmp.gid), (0o1777, 0, 0));
            for dir in ["/", "/usr/bin", "/dev", "/run"] {
                assert_eq!(temp_names(jail, dir)?, Vec::<String>::new(), "temporaries left in {dir}");
            }
            Ok(())
        })
    }

    #[test]
    fn mknod_of_dev_null_has_its_rdev() -> Result<()> {
        let scene = scene()?;
        scene.jail.mkdir(&jp("/dev"), 0o755, 0, 0)?;
        scene.jail.mknod(&jp("/dev/null"), NodeKind::CharDevice, makedev(1, 3), 0o666, 0, 0)?;
        let null = scene.jail.stat(&jp("/dev/null"))?.context("missing")?;
        assert_eq!((null.kind, null.mode, null.uid, null.gid), (NodeKind::CharDevice, 0o666, 0, 0));
        assert_eq!(null.rdev, makedev(1, 3));
        assert_eq!((major(null.rdev), minor(null.rdev)), (1, 3));
        let host = fs::symlink_metadata(scene.jail_dir.join("dev/null"))?;
        assert!(host.file_type().is_char_device());
        assert_eq!(host.rdev(), fs::symlink_metadata("/dev/null")?.rdev());
        assert!(scene.jail.mknod(&jp("/dev/x"), NodeKind::File, 0, 0o644, 0, 0).is_err());
        Ok(())
    }

    #[test]
    fn replaces_every_kind_atomically_and_removes_them() -> Result<()> {
        let scene = scene()?;
        let jail = &scene.jail;
        jail.mkdir(&jp("/etc"), 0o755, 0, 0)?;
        jail.write_file(&jp("/etc/f"), &mut &b"old"[..], 0o644, 0, 0, None)?;
        fs::hard_link(scene.jail_dir.join("etc/f"), scene.jail_dir.join("etc/old-link"))?;
        let old_ino = jail.stat(&jp("/etc/f"))?.context("missing")?.ino;
        jail.write_file(&jp("/etc/f"), &mut &b"new"[..], 0o600, 1000, 1000, None)?;
        // Renamed over, not rewritten in place: the old inode keeps the old bytes.
        assert_eq!(fs::read(scene.jail_dir.join("etc/f"))?, b"new");
        assert_eq!(fs::read(scene.jail_dir.join("etc/old-link"))?, b"old");
        let new = jail.stat(&jp("/etc/f"))?.context("missing")?;
        assert_ne!(new.ino, old_ino);
        assert_eq!((new.mode, new.uid, new.nlink), (0o600, 1000, 1));

        // A file over a symlink and over a device node.
        jail.symlink(&jp("/etc/l"), "f", 0, 0)?;
        jail.write_file(&jp("/etc/l"), &mut &b"was a link"[..], 0o644, 0, 0, None)?;
        assert_eq!(jail.stat(&jp("/etc/l"))?.map(|stat| stat.kind), Some(NodeKind::File));
        jail.mknod(&jp("/etc/d"), NodeKind::CharDevice, makedev(1, 5), 0o666, 0, 0)?;
        jail.write_file(&jp("/etc/d"), &mut &b"was a device"[..], 0o644, 0, 0, None)?;
        assert_eq!(fs::read(scene.jail_dir.join("etc/d"))?, b"was a device");

        // A symlink over a symlink (new text) and over a file; a device over a file.
        jail.symlink(&jp("/lib"), "usr/lib", 0, 0)?;
        jail.symlink(&jp("/lib"), "usr/lib64", 1000, 1000)?;
        assert_eq!(jail.read_link(&jp("/lib"))?, "usr/lib64");
        assert_eq!(jail.stat(&jp("/lib"))?.map(|stat| stat.uid), Some(1000));
        jail.symlink(&jp("/etc/l"), "f", 0, 0)?;
        assert_eq!(jail.read_link(&jp("/etc/l"))?, "f");
        jail.mknod(&jp("/etc/f"), NodeKind::CharDevice, makedev(1, 3), 0o640, 0, 0)?;
        let device = jail.stat(&jp("/etc/f"))?.context("missing")?;
        assert_eq!((device.kind, device.rdev, device.mode), (NodeKind::CharDevice, makedev(1, 3), 0o640));

        // A directory in the way is refused, and leaves no temporary behind.
        jail.mkdir(&jp("/etc/dir"), 0o755, 0, 0)?;
        jail.write_file(&jp("/etc/dir/inner"), &mut &b"x"[..], 0o644, 0, 0, None)?;
        let error = jail.write_file(&jp("/etc/dir"), &mut &b"x"[..], 0o644, 0, 0, None).expect_err("dir in the way");
        assert!(format!("{error:#}").contains("a directory is in the way"), "{error:#}");
        assert!(jail.symlink(&jp("/etc/dir"), "x", 0, 0).is_err());
        assert!(jail.mknod(&jp("/etc/dir"), NodeKind::CharDevice, makedev(1, 3), 0o666, 0, 0).is_err());
        assert!(jail.mkdir(&jp("/etc/l"), 0o755, 0, 0).is_err(), "mkdir over a file");
        // A source failing mid-copy leaves the old file whole and no temporary.
        jail.write_file(&jp("/etc/keep"), &mut &b"intact"[..], 0o644, 0, 0, None)?;
        assert!(jail.write_file(&jp("/etc/keep"), &mut FailingReader(100_000), 0o644, 0, 0, None).is_err());
        assert_eq!(fs::read(scene.jail_dir.join("etc/keep"))?, b"intact");
        assert_eq!(temp_names(jail, "/etc")?, Vec::<String>::new());
        assert_eq!(temp_names(jail, "/")?, Vec::<String>::new());

        // Removal of each kind; a second removal reports absence.
        for name in ["/etc/f", "/etc/l", "/etc/d", "/lib", "/etc/old-link"] {
            assert!(jail.remove_file(&jp(name))?, "{name} was there");
            assert!(!jail.remove_file(&jp(name))?, "{name} is gone");
            assert_eq!(jail.stat(&jp(name))?, None);
        }
        assert!(!jail.remove_file(&jp("/nowhere/x"))?);
        assert!(jail.remove_file(&jp("/etc/dir")).is_err(), "remove_file refuses a directory");
        assert!(!jail.remove_dir(&jp("/etc/dir"))?, "not empty");
        assert!(jail.remove_dir(&jp("/etc/keep")).is_err(), "remove_dir refuses a file");
        assert!(jail.remove_file(&jp("/etc/dir/inner"))?);
        assert!(jail.remove_dir(&jp("/etc/dir"))?);
        assert!(!jail.remove_dir(&jp("/etc/dir"))?);
        assert_eq!(jail.stat(&jp("/etc/dir"))?, None);
        Ok(())
    }

    #[test]
    fn write_file_replaces_a_planted_symlink_instead_of_writing_through_it() -> Result<()> {
        let scene = scene()?;
        let jail = &scene.jail;
        jail.mkdir(&jp("/etc"), 0o755, 0, 0)?;
        let secret = scene.outside.join("secret");
        host_symlink(&secret, scene.jail_dir.join("etc/passwd"))?;
        host_symlink("../../outside/secret", scene.jail_dir.join("etc/shadow"))?;
        host_symlink(&secret, scene.jail_dir.join("etc/motd"))?;
        host_symlink(&scene.outside, scene.jail_dir.join("etc/dir"))?;
        // The trap is real: following those links lands on the host's file.
        assert_eq!(fs::read(scene.jail_dir.join("etc/shadow"))?, b"host secret\n");
        let before = snapshot(&scene.outside)?;

        jail.write_file(&jp("/etc/passwd"), &mut &b"root:x:0:0::/root:/bin/sh\n"[..], 0o644, 0, 0, None)?;
        jail.write_file(&jp("/etc/shadow"), &mut &b"root:*::::::\n"[..], 0o640, 0, 42, None)?;
        jail.symlink(&jp("/etc/motd"), "issue", 0, 0)?;
        jail.set_attributes_now(&jp("/etc/dir"), 0o777, 1000, 1000)?;
        let error = jail.mkdir(&jp("/etc/dir"), 0o755, 0, 0).expect_err("mkdir over a planted symlink");
        assert_eq!(symlink_in_path(&error), Some(jp("/etc/dir")), "{error:#}");

        assert_eq!(fs::read(&secret)?, b"host secret\n");
        assert_eq!(snapshot(&scene.outside)?, before, "the host side changed");
        let passwd = jail.stat(&jp("/etc/passwd"))?.context("missing")?;
        assert_eq!((passwd.kind, passwd.mode), (NodeKind::File, 0o644));
        assert_eq!(fs::read(scene.jail_dir.join("etc/passwd"))?, b"root:x:0:0::/root:/bin/sh\n");
        assert_eq!(jail.stat(&jp("/etc/shadow"))?.map(|stat| (stat.kind, stat.gid)), Some((NodeKind::File, 42)));
        assert_eq!(jail.read_link(&jp("/etc/motd"))?, "issue");
        // set_attributes on a symlink changed the link's owner only.
        assert_eq!(jail.stat(&jp("/etc/dir"))?.map(|stat| (stat.kind, stat.uid)), Some((NodeKind::Symlink, 1000)));
        Ok(())
    }

    #[test]
    fn every_operation_refuses_a_parent_replaced_by_a_symlink() -> Result<()> {
        for style in ["absolute", "relative", "dotdot-heavy"] {
            let scene = scene()?;
            let jail = &scene.jail;
            let root = scene.jail_dir.display().to_string();
            let target = match style {
                "absolute" => scene.outside.clone(),
                "relative" => PathBuf::from("../outside"),
                _ => PathBuf::from(format!("{}{}", "../".repeat(40), scene.outside.display())),
            };
            host_symlink(&target, scene.jail_dir.join("usr"))?;
            fs::create_dir_all(scene.jail_dir.join("a"))?;
            host_symlink(&target, scene.jail_dir.join("a/b"))?;
            assert_eq!(fs::read(scene.jail_dir.join("usr/secret"))?, b"host secret\n", "{style}: the trap works");
            let before = snapshot(&scene.outside)?;

            let outcomes: Vec<(&str, &str, Result<()>)> = vec![
                ("mkdir", "/usr/new", jail.mkdir(&jp("/usr/new"), 0o755, 0, 0)),
                ("mkdir", "/usr/sub/new", jail.mkdir(&jp("/usr/sub/new"), 0o755, 0, 0)),
                ("write_file", "/usr/new", jail.write_file(&jp("/usr/new"), &mut &b"x"[..], 0o644, 0, 0, None)),
                ("write_file", "/usr/secret", jail.write_file(&jp("/usr/secret"), &mut &b"x"[..], 0o644, 0, 0, None)),
                ("symlink", "/usr/link", jail.symlink(&jp("/usr/link"), "x", 0, 0)),
                ("mknod", "/usr/null", jail.mknod(&jp("/usr/null"), NodeKind::CharDevice, makedev(1, 3), 0o666, 0, 0)),
                ("set_attributes", "/usr/secret", jail.set_attributes_now(&jp("/usr/secret"), 0o777, 1000, 1000)),
                ("set_attributes", "/usr/sub", jail.set_attributes_now(&jp("/usr/sub"), 0o777, 1000, 1000)),
                ("remove_file", "/usr/secret", jail.remove_file(&jp("/usr/secret")).map(drop)),
                ("remove_file", "/usr/sub/file", jail.remove_file(&jp("/usr/sub/file")).map(drop)),
                ("remove_dir", "/usr/empty", jail.remove_dir(&jp("/usr/empty")).map(drop)),
                ("remove_tree", "/usr/sub", jail.remove_tree(&jp("/usr/sub"))),
                ("remove_temp_files", "/usr", jail.remove_temp_files(&jp("/usr")).map(drop)),
                ("stat", "/usr/secret", jail.stat(&jp("/usr/secret")).map(drop)),
                ("read_link", "/usr/secret", jail.read_link(&jp("/usr/secret")).map(drop)),
                ("open_read", "/usr/secret", jail.open_read(&jp("/usr/secret")).map(drop)),
                ("list", "/usr", jail.list(&jp("/usr")).map(drop)),
                ("list", "/usr/sub", jail.list(&jp("/usr/sub")).map(drop)),
            ];
            for (operation, path, outcome) in outcomes {
                let error = outcome.expect_err(&format!("{style}: {operation} {path} went through the symlink"));
                assert_eq!(symlink_in_path(&error), Some(jp("/usr")), "{style}: {operation} {path}: {error:#}");
                let message = format!("{error:#}");
                assert!(message.contains(&format!(" {path} in {root}: ")), "{style}: {operation}: {message}");
            }
            let error = jail.mkdir(&jp("/usr/new"), 0o755, 0, 0).expect_err("refused");
            assert_eq!(
                format!("{error:#}"),
                format!("cannot create /usr/new in {root}: /usr is a symlink where a directory should be; jailprov never resolves a path through a symlink inside a jail")
            );
            // A symlink deeper down is named precisely.
            for path in ["/a/b/c", "/a/b/c/d/e"] {
                let error = jail.write_file(&jp(path), &mut &b"x"[..], 0o644, 0, 0, None).expect_err("refused");
                assert_eq!(symlink_in_path(&error), Some(jp("/a/b")), "{style}: {error:#}");
            }
            assert_eq!(snapshot(&scene.outside)?, before, "{style}: the host side changed");
        }
        Ok(())
    }

    #[test]
    fn an_absolute_symlink_to_slash_does_not_reach_the_host() -> Result<()> {
        let scene = scene()?;
        let jail = &scene.jail;
        host_symlink("/", scene.jail_dir.join("x"))?;
        host_symlink("../../../../../../../../../../..", scene.jail_dir.join("y"))?;
        fs::create_dir(scene.jail_dir.join("z"))?;
        host_symlink("../../../../../../../../../../../etc", scene.jail_dir.join("z/w"))?;
        // Followed naively, each of them reads the host's /etc/passwd.
        for naive in ["x/etc/passwd", "y/etc/passwd", "z/w/passwd"] {
            assert!(fs::metadata(scene.jail_dir.join(naive)).is_ok(), "the trap {naive} works");
        }
        for (path, culprit) in [("/x/etc/passwd", "/x"), ("/y/etc/passwd", "/y"), ("/z/w/passwd", "/z/w")] {
            let error = jail.stat(&jp(path)).expect_err("stat through a symlink");
            assert_eq!(symlink_in_path(&error), Some(jp(culprit)), "{error:#}");
            let error = jail.open_read(&jp(path)).expect_err("open through a symlink");
            assert_eq!(symlink_in_path(&error), Some(jp(culprit)), "{error:#}");
        }
        // The links themselves are visible as links; reading one as a file is refused.
        assert_eq!(jail.stat(&jp("/x"))?.map(|stat| stat.kind), Some(NodeKind::Symlink));
        assert_eq!(jail.read_link(&jp("/y"))?, "../../../../../../../../../../..");
        assert_eq!(symlink_in_path(&jail.list(&jp("/x")).expect_err("list a symlink")), Some(jp("/x")));
        host_symlink("/etc/passwd", scene.jail_dir.join("passwd"))?;
        let error = jail.open_read(&jp("/passwd")).expect_err("open_read follows no final symlink");
        assert!(format!("{error:#}").contains("it is a symlink, not a regular file"), "{error:#}");
        Ok(())
    }

    #[test]
    fn list_returns_a_non_utf8_name_and_escaped_shows_it() -> Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let scene = scene()?;
        let name = std::ffi::OsStr::from_bytes(b"a\xffb\n");
        fs::create_dir(scene.jail_dir.join("d"))?;
        fs::write(scene.jail_dir.join("d").join(name), "x")?;
        let jail = &scene.jail;
        assert_eq!(jail.list(&jp("/d"))?, vec![name.to_owned()], "listed, not an error");
        assert_eq!(escaped(name.as_bytes()), "a\\xffb\\n");
        assert_eq!(escaped("\\é".as_bytes()), "\\\\é");
        Ok(())
    }

    #[test]
    fn stat_list_read_link_and_open_read() -> Result<()> {
        let scene = scene()?;
        let jail = &scene.jail;
        assert_eq!(jail.stat(&JailPath::root())?.map(|stat| stat.kind), Some(NodeKind::Dir));
        assert_eq!(jail.stat(&jp("/missing"))?, None);
        assert_eq!(jail.stat(&jp("/missing/deeper/still"))?, None);
        jail.mkdir(&jp("/etc"), 0o755, 0, 0)?;
        jail.write_file(&jp("/etc/hosts"), &mut &b"127.0.0.1 localhost\n"[..], 0o644, 0, 0, None)?;
        jail.write_file(&jp("/etc/a"), &mut &b""[..], 0o644, 0, 0, None)?;
        jail.symlink(&jp("/etc/localtime"), "/usr/share/zoneinfo/UTC", 0, 0)?;
        let error = jail.stat(&jp("/etc/hosts/x")).expect_err("a file as a parent");
        assert_eq!(error.downcast_ref::<JailError>(), Some(&JailError::NotADirectory { path: jp("/etc/hosts") }));
        assert_eq!(jail.list(&JailPath::root())?, vec!["etc"]);
        assert_eq!(jail.list(&jp("/etc"))?, vec!["a", "hosts", "localtime"]);
        assert!(jail.list(&jp("/etc/hosts")).is_err());
        assert!(jail.list(&jp("/nope")).is_err());
        assert_eq!(jail.read_link(&jp("/etc/localtime"))?, "/usr/share/zoneinfo/UTC");
        assert!(jail.read_link(&jp("/etc/hosts")).is_err());
        let mut text = String::new();
        jail.open_read(&jp("/etc/hosts"))?.read_to_string(&mut text)?;
        assert_eq!(text, "127.0.0.1 localhost\n");
        assert!(jail.open_read(&jp("/etc")).is_err(), "a directory is not a regular file");
        assert!(jail.open_read(&jp("/etc/missing")).is_err());
        let root = jail.stat(&JailPath::root())?.context("root")?;
        assert_eq!(root.ino, fs::metadata(&scene.jail_dir)?.ino());
        Ok(())
    }

    /// A character major no driver registered: opening such a node fails (ENXIO), so an
    /// operation that opened the node would fail too.
    fn unregistered_char_major() -> Result<u64> {
        let devices = fs::read_to_string("/proc/devices")?;
        let section = devices.split("Block devices:").next().unwrap_or_default();
        let used: Vec<u64> = section.lines().filter_map(|line| line.split_whitespace().next()?.parse().ok()).collect();
        (60..=63).chain(120..=127).chain(240..=254).find(|major| !used.contains(major)).context("no free major")
    }

    #[test]
    fn set_attributes_refuses_a_node_swapped_in_after_the_plan_saw_a_directory() -> Result<()> {
        let scene = scene()?;
        let jail = &scene.jail;
        jail.mkdir(&jp("/home"), 0o755, 1000, 1000)?;
        jail.mkdir(&jp("/home/shared"), 0o755, 0, 0)?;
        let seen = jail.stat(&jp("/home/shared"))?.context("missing")?.identity();
        // The jail user swaps its program for the directory.
        jail.write_file(&jp("/home/prog"), &mut &b"#!/bin/sh\n"[..], 0o755, 1000, 1000, None)?;
        let home = scene.jail_dir.join("home");
        renameat2(AT_FDCWD, &home.join("shared"), AT_FDCWD, &home.join("prog"), RenameFlags::RENAME_EXCHANGE)?;
        let error = jail.set_attributes(&jp("/home/shared"), &seen, 0o2775, 0, 0).expect_err("not the directory");
        let changed = error.downcast_ref::<ChangedUnderfoot>().expect("a ChangedUnderfoot");
        assert!(changed.was.starts_with("dir ino ") && changed.now.starts_with("file ino "), "{changed}");
        assert!(changed.to_string().ends_with("; not touched"), "{changed}");
        let program = jail.stat(&jp("/home/shared"))?.context("missing")?;
        assert_eq!((program.mode, program.uid, program.gid), (0o755, 1000, 1000), "the program is untouched");
        // Back in place, the directory itself is changed.
        renameat2(AT_FDCWD, &home.join("shared"), AT_FDCWD, &home.join("prog"), RenameFlags::RENAME_EXCHANGE)?;
        jail.set_attributes(&jp("/home/shared"), &seen, 0o2775, 0, 0)?;
        assert_eq!(jail.stat(&jp("/home/shared"))?.context("missing")?.mode, 0o2775);
        Ok(())
    }

    #[test]
    fn set_attributes_never_opens_the_node() -> Result<()> {
        let scene = scene()?;
        let jail = Arc::new(JailRoot::open(&scene.jail_dir)?);
        jail.set_attributes_now(&JailPath::root(), 0o711, 1000, 1001)?;
        let root = jail.stat(&JailPath::root())?.context("root")?;
        assert_eq!((root.mode, root.uid, root.gid), (0o711, 1000, 1001));
        jail.set_attributes_now(&JailPath::root(), 0o755, 0, 0)?;

        jail.mkdir(&jp("/dev"), 0o755, 0, 0)?;
        let free = unregistered_char_major()?;
        jail.mknod(&jp("/dev/nothing"), NodeKind::CharDevice, makedev(free, 0), 0o600, 0, 0)?;
        assert!(File::open(scene.jail_dir.join("dev/nothing")).is_err(), "opening the node must fail");
        jail.set_attributes_now(&jp("/dev/nothing"), 0o4640, 1000, 1000)?;
        let node = jail.stat(&jp("/dev/nothing"))?.context("missing")?;
        assert_eq!((node.mode, node.uid, node.gid), (0o4640, 1000, 1000));
        let error = jail.open_read(&jp("/dev/nothing")).expect_err("not a regular file");
        assert!(format!("{error:#}").contains("it is a character device, not a regular file"), "{error:#}");

        // A FIFO without a writer blocks whoever opens it for reading: this must not block.
        jail.mknod(&jp("/dev/fifo"), NodeKind::Fifo, 0, 0o600, 0, 0)?;
        let (done, finished) = mpsc::channel();
        let background = Arc::clone(&jail);
        std::thread::spawn(move || {
            let result = background.set_attributes_now(&jp("/dev/fifo"), 0o666, 1000, 1000).and_then(|()| {
                background.open_read(&jp("/dev/fifo")).map(drop).err().context("open_read opened a FIFO")
            });
            let _ = done.send(result.map(|error| format!("{error:#}")));
        });
        let message = finished.recv_timeout(Duration::from_secs(30)).context("blocked on a FIFO")??;
        assert!(message.contains("it is a FIFO, not a regular file"), "{message}");
        assert_eq!(jail.stat(&jp("/dev/fifo"))?.map(|stat| (stat.mode, stat.uid)), Some((0o666, 1000)));

        // A regular file keeps setuid (mode after owner); a directory keeps sticky.
        jail.write_file(&jp("/su"), &mut &b"x"[..], 0o755, 0, 0, None)?;
        jail.set_attributes_now(&jp("/su"), 0o4755, 1000, 1000)?;
        assert_eq!(jail.stat(&jp("/su"))?.map(|stat| (stat.mode, stat.uid)), Some((0o4755, 1000)));
        jail.set_attributes_now(&jp("/dev"), 0o1777, 0, 0)?;
        assert_eq!(jail.stat(&jp("/dev"))?.map(|stat| stat.mode), Some(0o1777));
        assert!(jail.set_attributes_now(&jp("/missing"), 0o755, 0, 0).is_err());
        assert!(jail.set_attributes_now(&jp("/su"), 0o10755, 0, 0).is_err(), "file-type bits are refused");
        Ok(())
    }

    #[test]
    fn chmod_fallbacks_reach_the_inode_of_an_o_path_fd() -> Result<()> {
        let scene = scene()?;
        let path = scene.jail_dir.join("f");
        fs::write(&path, b"x")?;
        let fd = nix::fcntl::open(&path, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())?;
        fchmodat2_fd(fd.as_fd(), 0o4711)?;
        assert_eq!(fs::metadata(&path)?.mode() & 0o7777, 0o4711);
        chmod_through_proc(fd.as_fd(), 0o2750)?;
        assert_eq!(fs::metadata(&path)?.mode() & 0o7777, 0o2750);
        Ok(())
    }

    #[test]
    fn scan_stats_agrees_with_stat_across_subtrees_and_never_follows_a_planted_link() -> Result<()> {
        let scene = scene()?;
        let jail = &scene.jail;
        for dir in ["/a", "/a/b", "/a/b/c", "/a/d", "/e"] {
            jail.mkdir(&jp(dir), 0o755, 0, 0)?;
        }
        for file in ["/a/1", "/a/b/2", "/a/b/c/3", "/a/b.x", "/a/d/4", "/e/5", "/top"] {
            jail.write_file(&jp(file), &mut &b"x"[..], 0o644, 0, 0, None)?;
        }
        // A directory of the jail replaced by a link to the host, as a jailed process could.
        host_symlink(&scene.outside, scene.jail_dir.join("link"))?;
        let mut paths: Vec<JailPath> = [
            "/a",
            "/a/1",
            "/a/b",
            "/a/b/2",
            "/a/b/c",
            "/a/b/c/3",
            "/a/b.x",
            "/a/d",
            "/a/d/4",
            "/a/missing/x",
            "/e",
            "/e/5",
            "/link",
            "/link/secret",
            "/link/sub/file",
            "/top",
        ]
        .into_iter()
        .map(jp)
        .collect();
        paths.sort();
        let refs: Vec<&JailPath> = paths.iter().collect();
        for (path, scanned) in paths.iter().zip(jail.scan_stats(&refs)) {
            let one_by_one = jail.stat(path);
            match (scanned, one_by_one) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{path}"),
                (Err(a), Err(b)) => {
                    assert!(a.downcast_ref::<JailError>().is_some(), "{path}: {a:#}");
                    assert!(b.downcast_ref::<JailError>().is_some(), "{path}: {b:#}");
                }
                (a, b) => panic!("{path}: scan {a:?} but stat {b:?}"),
            }
        }
        let link_children: Vec<JailPath> = ["/link/secret", "/link/sub/file"].into_iter().map(jp).collect();
        for result in jail.scan_stats(&link_children.iter().collect::<Vec<_>>()) {
            assert!(result.is_err(), "a path under a planted link is never stat'ed through it: {result:?}");
        }
        Ok(())
    }

    #[test]
    fn remove_temp_files_cleans_leftovers_only() -> Result<()> {
        let scene = scene()?;
        let jail = &scene.jail;
        jail.mkdir(&jp("/etc"), 0o755, 0, 0)?;
        let etc = scene.jail_dir.join("etc");
        fs::write(etc.join(".jailprov-tmp-0123456789abcdef"), b"half written")?;
        host_symlink(scene.outside.join("secret"), etc.join(".jailprov-tmp-link"))?;
        nix::unistd::mkfifo(&etc.join(".jailprov-tmp-fifo"), Mode::S_IRUSR)?;
        fs::create_dir(etc.join(".jailprov-tmp-dir"))?;
        fs::write(etc.join("keep"), b"keep")?;
        fs::write(etc.join("x.jailprov-tmp-not-a-prefix"), b"keep")?;
        fs::write(scene.jail_dir.join(".jailprov-tmp-at-root"), b"x")?;
        let before = snapshot(&scene.outside)?;
        assert_eq!(jail.remove_temp_files(&jp("/etc"))?, 3);
        assert_eq!(jail.list(&jp("/etc"))?, vec![".jailprov-tmp-dir", "keep", "x.jailprov-tmp-not-a-prefix"]);
        assert_eq!(jail.remove_temp_files(&JailPath::root())?, 1);
        assert_eq!(jail.list(&JailPath::root())?, vec!["etc"]);
        assert_eq!(jail.remove_temp_files(&jp("/etc"))?, 0);
        assert_eq!(jail.remove_temp_files(&jp("/missing"))?, 0);
        assert_eq!(snapshot(&scene.outside)?, before);
        Ok(())
    }

    #[test]
    fn remove_tree_deletes_symlinks_not_what_they_point_to() -> Result<()> {
        let scene = scene()?;
        let jail = &scene.jail;
        let app = scene.jail_dir.join("opt/app");
        fs::create_dir_all(app.join("sub/deeper"))?;
        fs::write(app.join("a"), b"a")?;
        fs::write(app.join("sub/deeper/c"), b"c")?;
        host_symlink(&scene.outside, app.join("sub/escape"))?;
        host_symlink("../../../../outside", app.join("sub/deeper/escape-relative"))?;
        host_symlink(scene.outside.join("secret"), app.join("secret-link"))?;
        // Links handed to a destructive operation point at the scene's canary directory, never
        // at the real "/": a regression (or a mutation test) must damage only the canary. A link
        // to "/" here once let a bug injected during mutation testing delete files of the host's
        // /etc.
        host_symlink(scene.outside.join(".."), app.join("up-and-out"))?;
        nix::unistd::mkfifo(&app.join("fifo"), Mode::S_IRUSR)?;
        fs::create_dir(app.join("locked"))?;
        fs::write(app.join("locked/inside"), b"x")?;
        fs::set_permissions(app.join("locked"), std::os::unix::fs::PermissionsExt::from_mode(0o000))?;
        assert!(fs::metadata(app.join("sub/escape/secret")).is_ok(), "the trap works");
        let before = snapshot(&scene.outside)?;
        jail.remove_tree(&jp("/opt/app"))?;
        assert_eq!(jail.stat(&jp("/opt/app"))?, None);
        assert_eq!(jail.list(&jp("/opt"))?, Vec::<OsString>::new());
        assert_eq!(snapshot(&scene.outside)?, before, "the host side changed");
        jail.remove_tree(&jp("/opt/app"))?;
        jail.remove_tree(&jp("/missing/app"))?;
        fs::write(scene.jail_dir.join("opt/file"), b"x")?;
        jail.remove_tree(&jp("/opt/file"))?;
        assert_eq!(jail.stat(&jp("/opt/file"))?, None);
        assert!(jail.remove_tree(&JailPath::root()).is_err());
        Ok(())
    }

    #[test]
    fn bind_mounts_are_crossed_for_writes_but_never_emptied_by_remove_tree() -> Result<()> {
        let scene = scene()?;
        on_own_thread(CloneFlags::CLONE_NEWNS, move || {
            mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)?;
            let target = scene.jail_dir.join("opt/app/mnt");
            fs::create_dir_all(&target)?;
            mount(Some(&scene.outside), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
            let outcome = (|| -> Result<()> {
                // Opened in this mount namespace: an fd opened before the unshare keeps walking
                // the old namespace's mounts, where the bind mount does not exist.
                let jail = JailRoot::open(&scene.jail_dir)?;
                // A legitimate bind mount inside the jail is written through.
                jail.mkdir(&jp("/opt/app/mnt/made-inside"), 0o755, 0, 0)?;
                assert!(scene.outside.join("made-inside").is_dir());
                let before = snapshot(&scene.outside)?;
                let error = jail.remove_tree(&jp("/opt/app")).expect_err("a mount point inside the tree");
                assert!(format!("{error:#}").contains("/opt/app/mnt is a mount point"), "{error:#}");
                let error = jail.remove_tree(&jp("/opt/app/mnt")).expect_err("the tree is a mount point");
                assert!(format!("{error:#}").contains("is a mount point"), "{error:#}");
                assert_eq!(snapshot(&scene.outside)?, before, "the mounted directory was emptied");
                Ok(())
            })();
            umount2(&target, MntFlags::MNT_DETACH)?;
            outcome
        })
    }

    #[test]
    fn racing_a_parent_against_a_symlink_never_reaches_outside() -> Result<()> {
        let scene = scene()?;
        fs::create_dir(scene.jail_dir.join("usr"))?;
        host_symlink(&scene.outside, scene.jail_dir.join("usr-swap"))?;
        let before = snapshot(&scene.outside)?;
        let stop = Arc::new(AtomicBool::new(false));
        let attacker = {
            let stop = Arc::clone(&stop);
            let (dir, link) = (scene.jail_dir.join("usr"), scene.jail_dir.join("usr-swap"));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = renameat2(AT_FDCWD, &dir, AT_FDCWD, &link, RenameFlags::RENAME_EXCHANGE);
                }
            })
        };
        let (mut written, mut refused) = (0, 0);
        let started = Instant::now();
        let mut round = 0;
        while round < 300 || ((written == 0 || refused == 0) && started.elapsed() < Duration::from_secs(20)) {
            round += 1;
            let name = format!("/usr/f{round}");
            match scene.jail.write_file(&jp(&name), &mut &b"x"[..], 0o644, 0, 0, None) {
                Ok(()) => written += 1,
                Err(error) if symlink_in_path(&error).is_some() => refused += 1,
                Err(error) => return Err(error),
            }
            let _ = scene.jail.mkdir(&jp(&format!("/usr/d{round}")), 0o755, 0, 0);
            let _ = scene.jail.symlink(&jp(&format!("/usr/l{round}")), "x", 0, 0);
            assert!(scene.jail.set_attributes_now(&jp("/usr/secret"), 0o777, 1000, 1000).is_err());
            assert!(!matches!(scene.jail.remove_file(&jp("/usr/secret")), Ok(true)));
        }
        stop.store(true, Ordering::Relaxed);
        if attacker.join().is_err() {
            bail!("the attacker thread panicked");
        }
        assert!(written > 0 && refused > 0, "the race was not exercised: {written} written, {refused} refused");
        assert_eq!(snapshot(&scene.outside)?, before, "a write went through the swapped-in symlink");
        Ok(())
    }
}
