//! `dev = "minimal"`: a tmpfs /dev built at enter time, as `bwrap --dev` and OCI runtimes do.
//!
//! The tmpfs is `nosuid,noexec` (device nodes bound onto it keep their own mount's flags, as
//! bubblewrap's are), the jail's own /dev on disk stays untouched below it, and mknod inside
//! stays impossible (no CAP_MKNOD, seccomp). null, zero, full, random, urandom and tty are the
//! host's nodes bound onto empty files; ptmx and pts come from a devpts instance of the jail's
//! own; /dev/shm is a tmpfs of its own; fd, stdin, stdout and stderr are links into /proc/self.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::enter::mounts::{self, MountOp, MountSource, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID};
use crate::enter::sys::MountSys;
use crate::jail_root::JailRoot;
use crate::tree::JailPath;

/// The host's device nodes every minimal /dev has.
pub const NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];
/// The links of a minimal /dev, and where each points.
pub const LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];

fn dev_path(name: &str) -> JailPath {
    JailPath::parse(&format!("/dev/{name}")).expect("a fixed absolute jail path")
}

fn mount(sys: &impl MountSys, jail: &JailRoot, target: JailPath, source: MountSource, attributes: u64) -> Result<()> {
    let operation = MountOp { key: "enter.dev".to_owned(), target, source, attributes, optional: false };
    mounts::realize(sys, jail, &operation)
}

/// Builds the minimal /dev over the jail's /dev (which must exist), before pivot_root.
pub fn build(sys: &impl MountSys, jail: &JailRoot) -> Result<()> {
    let dev = JailPath::parse("/dev").expect("a fixed absolute jail path");
    if !jail.stat(&dev)?.is_some_and(|stat| stat.kind == crate::jail_root::NodeKind::Dir) {
        bail!("[enter] dev = \"minimal\" mounts a tmpfs at /dev, which the jail lacks: add [[dirs]] path = \"/dev\" and run `jailprov apply`");
    }
    let tmpfs = MountSource::Filesystem {
        fstype: "tmpfs",
        options: vec![("mode".to_owned(), "755".to_owned()), ("size".to_owned(), "65536".to_owned())],
    };
    mount(sys, jail, dev, tmpfs, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC)?;
    for name in NODES {
        let path = dev_path(name);
        jail.write_file(&path, &mut std::io::empty(), 0o666, 0, 0, None)
            .with_context(|| format!("cannot make the mount point {path}"))?;
        let source = MountSource::Bind { source: PathBuf::from(format!("/dev/{name}")) };
        mount(sys, jail, path, source, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC)?;
    }
    jail.mkdir(&dev_path("pts"), 0o755, 0, 0)?;
    let devpts = MountSource::Filesystem {
        fstype: "devpts",
        options: vec![("ptmxmode".to_owned(), "0666".to_owned()), ("mode".to_owned(), "0620".to_owned())],
    };
    mount(sys, jail, dev_path("pts"), devpts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC)?;
    jail.mkdir(&dev_path("shm"), 0o1777, 0, 0)?;
    let shm = MountSource::Filesystem { fstype: "tmpfs", options: vec![("mode".to_owned(), "1777".to_owned())] };
    mount(sys, jail, dev_path("shm"), shm, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)?;
    for (name, target) in LINKS {
        jail.symlink(&dev_path(name), target, 0, 0)?;
    }
    Ok(())
}
