//! `dev = "minimal"` (the default): a tmpfs /dev built at enter time, as `bwrap --dev` and OCI
//! runtimes do.
//!
//! The tmpfs is `nosuid,noexec` (device nodes bound onto it keep their own mount's flags, as
//! bubblewrap's are), the jail's own /dev on disk stays untouched below it, and mknod inside
//! stays impossible (no CAP_MKNOD, seccomp). null, zero, full, random, urandom and tty are the
//! host's nodes bound onto empty files; ptmx and pts come from a devpts instance of the jail's
//! own; /dev/shm is a tmpfs of its own; fd, stdin, stdout and stderr are links into /proc/self.
//!
//! What the jail's /dev on disk holds beyond that stays visible: each declared device node (made
//! by apply for jails entered by other means, sshd's ChrootDirectory or plain chroot) bound onto
//! the tmpfs at its path, the directories and symlinks (a `[[links]]` /dev/log) made again on it,
//! and the mount point of each `[[mounts]]` wish under /dev.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::enter::mounts::{self, MountOp, MountSource, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID};
use crate::enter::sys::MountSys;
use crate::jail_root::{JailRoot, NodeKind};
use crate::spec::Spec;
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
/// The directories of a minimal /dev, each a mount of its own.
const MOUNTED_DIRS: &[&str] = &["pts", "shm"];

/// A declared device node's flags on the tmpfs (as bubblewrap's --dev-bind): no nodev, or it
/// could not be opened; nothing to run or setuid in a device node.
const DEVICE: u64 = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC;

/// What a minimal /dev holds beside its own nodes, decided from the Spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MinimalDev {
    /// Declared devices under /dev that it lacks (not null, zero... nor ptmx): the jail's node
    /// on disk, bound onto itself before the tmpfs covers it, then bound onto the tmpfs.
    pub devices: Vec<JailPath>,
}

/// The minimal /dev of a Spec, or None with `dev = "none"` (the jail's /dev on disk alone) and
/// when a `[[mounts]]` wish mounts /dev itself (it would hide the minimal /dev whole).
pub fn plan(spec: &Spec) -> Option<MinimalDev> {
    let dev_is_mounted = spec.mounts.iter().any(|mount| mount.target.as_str() == "/dev");
    (spec.enter.minimal_dev && !dev_is_mounted).then(|| MinimalDev {
        devices: spec
            .devices
            .iter()
            .map(|device| device.path.clone())
            .filter(|path| name_below_dev(path).is_some_and(|name| !provided(name)))
            .collect(),
    })
}

/// The first name below /dev on the way to `path`; None outside /dev (and for /dev itself).
fn name_below_dev(path: &JailPath) -> Option<&str> {
    let below = path.as_str().strip_prefix("/dev/")?;
    below.split('/').next()
}

/// Whether the minimal /dev has this name of its own (a node, a link, or pts and shm).
fn provided(name: &str) -> bool {
    NODES.contains(&name) || LINKS.iter().any(|(link, _)| *link == name) || MOUNTED_DIRS.contains(&name)
}

fn dev_path(name: &str) -> JailPath {
    JailPath::parse(&format!("/dev/{name}")).expect("a fixed absolute jail path")
}

fn mount(sys: &impl MountSys, jail: &JailRoot, target: JailPath, source: MountSource, attributes: u64) -> Result<()> {
    let operation = MountOp { key: "enter.dev".to_owned(), target, source, attributes, optional: false };
    mounts::realize(sys, jail, &operation)
}

/// Who owns what the build creates on the tmpfs: the ids the jail's PID 1 has (jail root, or
/// the jail user in a rootless user namespace, where no other id is mapped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// What the jail's /dev on disk holds that is made again on the tmpfs.
enum Kept {
    /// Owned by the build's owner on the tmpfs: the disk's owner may map to no id of the jail's.
    Dir {
        mode: u32,
    },
    Symlink {
        target: String,
    },
}

/// Builds the minimal /dev over the jail's /dev (which must exist), before pivot_root, once the
/// root is read-only; `later` are the mount operations still to come (the wishes), whose
/// targets under /dev it creates on the tmpfs.
pub fn build(
    sys: &impl MountSys,
    jail: &JailRoot,
    minimal: &MinimalDev,
    later: &[MountOp],
    owner: Owner,
) -> Result<()> {
    let dev = JailPath::parse("/dev").expect("a fixed absolute jail path");
    if !jail.stat(&dev)?.is_some_and(|stat| stat.kind == NodeKind::Dir) {
        bail!(
            "[enter] dev = \"minimal\" (the default) mounts a tmpfs at /dev, which the jail lacks as a directory: run `jailprov apply` (it makes /dev), or set [enter] dev = \"none\" to keep only the jail's /dev on disk"
        );
    }
    // Read before the tmpfs hides them.
    let kept = kept_on_disk(jail, &dev)?;
    let devices = open_devices(jail, &minimal.devices)?;
    let tmpfs = MountSource::Filesystem {
        fstype: "tmpfs",
        options: vec![("mode".to_owned(), "755".to_owned()), ("size".to_owned(), "65536".to_owned())],
    };
    mount(sys, jail, dev, tmpfs, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC)?;
    for name in NODES {
        let path = dev_path(name);
        make_mount_point(jail, &path, false, owner)?;
        let source = MountSource::Bind { source: PathBuf::from(format!("/dev/{name}")) };
        mount(sys, jail, path, source, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC)?;
    }
    make_mount_point(jail, &dev_path("pts"), true, owner)?;
    let devpts = MountSource::Filesystem {
        fstype: "devpts",
        options: vec![("ptmxmode".to_owned(), "0666".to_owned()), ("mode".to_owned(), "0620".to_owned())],
    };
    mount(sys, jail, dev_path("pts"), devpts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC)?;
    make_mount_point(jail, &dev_path("shm"), true, owner)?;
    let shm = MountSource::Filesystem { fstype: "tmpfs", options: vec![("mode".to_owned(), "1777".to_owned())] };
    mount(sys, jail, dev_path("shm"), shm, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)?;
    for (name, target) in LINKS {
        jail.symlink(&dev_path(name), target, owner.uid, owner.gid)?;
    }
    // The wishes' targets first: a bind of a socket (/dev/log) needs a file where the jail's
    // disk has the directory the closure made for it.
    for operation in later.iter().filter(|operation| name_below_dev(&operation.target).is_some()) {
        make_wish_target(jail, operation, owner)?;
    }
    for (path, node) in &kept {
        make_again(jail, path, node, owner)?;
    }
    for (path, source) in minimal.devices.iter().zip(&devices) {
        make_mount_point(jail, path, false, owner)?;
        let target = jail.open_path(path).with_context(|| format!("cannot open the mount point {path}"))?;
        sys.bind_node(source.as_fd(), DEVICE, target.as_fd())
            .with_context(|| format!("cannot bind the declared device {path} onto the minimal /dev"))?;
    }
    Ok(())
}

/// The directories and symlinks below the jail's /dev on disk, parents first, but for the
/// names the minimal /dev has of its own.
fn kept_on_disk(jail: &JailRoot, dev: &JailPath) -> Result<Vec<(JailPath, Kept)>> {
    let mut kept = Vec::new();
    let mut pending = vec![dev.clone()];
    while let Some(dir) = pending.pop() {
        let names = jail.list(&dir).with_context(|| format!("cannot list the jail's {dir}"))?;
        for name in names {
            let Ok(path) = dir.join(std::path::Path::new(&name)) else { continue };
            if name_below_dev(&path).is_some_and(provided) {
                continue;
            }
            match jail.stat(&path)? {
                Some(stat) if stat.kind == NodeKind::Dir => {
                    kept.push((path.clone(), Kept::Dir { mode: stat.mode & 0o7777 }));
                    pending.push(path);
                }
                Some(stat) if stat.kind == NodeKind::Symlink => {
                    let target = jail.read_link(&path)?.to_string_lossy().into_owned();
                    kept.push((path, Kept::Symlink { target }));
                }
                _ => {}
            }
        }
    }
    kept.sort_by_key(|(path, _)| path.ancestors().len());
    Ok(kept)
}

/// O_PATH fds of the declared devices, each on the device's own mount (bound onto itself).
fn open_devices(jail: &JailRoot, devices: &[JailPath]) -> Result<Vec<OwnedFd>> {
    devices
        .iter()
        .map(|path| {
            jail.open_path(path).with_context(|| {
                format!("cannot open the declared device {path} in the jail: run `jailprov apply` to create it")
            })
        })
        .collect()
}

/// An empty file or directory at `path` on the tmpfs, parents made as needed; nothing when
/// something is already there.
fn make_mount_point(jail: &JailRoot, path: &JailPath, directory: bool, owner: Owner) -> Result<()> {
    for ancestor in path.ancestors() {
        if name_below_dev(&ancestor).is_some() && jail.stat(&ancestor)?.is_none() {
            jail.mkdir(&ancestor, 0o755, owner.uid, owner.gid)?;
        }
    }
    if jail.stat(path)?.is_some() {
        return Ok(());
    }
    if directory {
        jail.mkdir(path, 0o755, owner.uid, owner.gid)
    } else {
        jail.write_file(path, &mut std::io::empty(), 0o644, owner.uid, owner.gid, None)
            .map(drop)
            .with_context(|| format!("cannot make the mount point {path}"))
    }
}

/// The mount point of a wish: a directory for a file system, the kind of the host's source
/// for a bind (a file for a socket or a device).
fn make_wish_target(jail: &JailRoot, operation: &MountOp, owner: Owner) -> Result<()> {
    let directory = match &operation.source {
        MountSource::Bind { source } => std::fs::metadata(source).map_or(true, |metadata| metadata.is_dir()),
        _ => true,
    };
    make_mount_point(jail, &operation.target, directory, owner)
        .with_context(|| format!("cannot make the mount point of {} on the minimal /dev", operation.key))
}

/// A directory or symlink of the jail's /dev on disk, again on the tmpfs.
fn make_again(jail: &JailRoot, path: &JailPath, node: &Kept, owner: Owner) -> Result<()> {
    if jail.stat(path)?.is_some() {
        return Ok(());
    }
    match node {
        Kept::Dir { mode } => jail.mkdir(path, *mode, owner.uid, owner.gid),
        Kept::Symlink { target } => jail.symlink(path, target, owner.uid, owner.gid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jp(path: &str) -> JailPath {
        JailPath::parse(path).expect("a valid jail path")
    }

    #[test]
    fn only_names_the_minimal_dev_lacks_are_extra() {
        assert_eq!(name_below_dev(&jp("/dev/net/tun")), Some("net"));
        assert_eq!(name_below_dev(&jp("/dev")), None);
        assert_eq!(name_below_dev(&jp("/devices/x")), None);
        assert!(provided("null") && provided("ptmx") && provided("pts") && provided("stdout"));
        assert!(!provided("loop-control") && !provided("log") && !provided("mqueue"));
    }
}
