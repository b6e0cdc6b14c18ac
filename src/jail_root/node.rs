//! What the jail writer reports about a node: its kind, its stat, its identity across plan and
//! apply, and the refusals callers match on.

use std::fmt;

use anyhow::{anyhow, Result};
use nix::libc;
use nix::sys::stat::FileStat;
use serde::{Deserialize, Serialize};

use crate::tree::JailPath;

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
    pub(super) fn of(stat: &FileStat) -> Option<NodeIdentity> {
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
pub(super) fn describe_node(stat: &FileStat) -> String {
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
    pub(super) fn from_stat(stat: &FileStat) -> Result<NodeStat> {
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
