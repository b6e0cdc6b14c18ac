//! Creating and replacing nodes in a jail: directories, regular files, symlinks, device nodes,
//! and owner and mode of a node the plan saw. New content goes to an `O_EXCL` temporary name
//! renamed over the final one, so nothing existing is ever opened for writing.

use std::ffi::CStr;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::libc;
use nix::sys::stat::{fchmod, fstat, fstatat, futimens, mkdirat, mknodat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::node::describe_node;
use super::{ChangedUnderfoot, JailError, JailRoot, NodeIdentity, NodeKind, NodeStat, TEMP_PREFIX};
use crate::tree::JailPath;

/// How many fresh temporary names are tried before giving up (each collision is an `EEXIST`).
const TEMP_ATTEMPTS: usize = 32;

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
pub(super) fn fchmodat2_fd(fd: BorrowedFd<'_>, mode: u32) -> nix::Result<()> {
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
pub(super) fn chmod_through_proc(fd: BorrowedFd<'_>, mode: u32) -> Result<()> {
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
    /// Creates a directory with exactly `mode` (set with fchmod after mkdirat: the umask plays
    /// no part) and owner. Only a directory made by this very call gets them: anything already
    /// at `path` (a directory included: the plan saw nothing there) is a [`ChangedUnderfoot`]
    /// (a symlink: [`JailError::SymlinkInPath`]; another non-directory:
    /// [`JailError::NotADirectory`]), and so is a node swapped in between mkdirat and the open
    /// that sets the attributes.
    pub fn mkdir(&self, path: &JailPath, mode: u32, uid: u32, gid: u32) -> Result<()> {
        self.finished("create", path, self.mkdir_inner(path, mode, uid, gid))
    }

    fn mkdir_inner(&self, path: &JailPath, mode: u32, uid: u32, gid: u32) -> Result<()> {
        let mode = permissions(mode)?;
        let (parent, name) = self.parent_of(path)?;
        match mkdirat(&parent, name, Mode::S_IRWXU) {
            Ok(()) => {}
            Err(Errno::EEXIST) => return Err(self.in_the_way_of_mkdir(&parent, name, path)),
            Err(errno) => bail!("{errno}"),
        }
        // A crash here leaves a bare 0700 directory: the record already names it (write-ahead).
        crate::kill_point::passed();
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

    /// Flushes what was written at a few paths: each regular file and directory among them
    /// (fsync), and the directory holding each (its entries: a rename, a new name, a removal).
    /// Cheaper than [`JailRoot::sync`] when little was written, since syncfs also waits for
    /// whatever else on the file system is dirty. A path gone meanwhile is skipped; symlinks and
    /// devices are made durable by their directory.
    pub fn sync_paths(&self, paths: &[&JailPath]) -> Result<()> {
        let mut dirs = std::collections::BTreeSet::new();
        for path in paths {
            if let Some(parent) = path.parent() {
                dirs.insert(parent);
            }
            match self.stat(path) {
                Ok(Some(stat)) if stat.kind == NodeKind::File => {
                    let file = self.open_read(path)?;
                    file.sync_all().with_context(|| self.failure("sync", path))?;
                }
                Ok(Some(stat)) if stat.kind == NodeKind::Dir => {
                    dirs.insert((*path).clone());
                }
                // Gone, under a path no longer a directory, or a node its directory covers.
                _ => {}
            }
        }
        for dir in dirs {
            // Read-only is enough for fsync; a directory gone or replaced has nothing to flush.
            if let Ok(Some(fd)) = self.lookup_dir(&dir, OFlag::O_RDONLY) {
                nix::unistd::fsync(&fd).map_err(|errno| anyhow!("cannot sync {dir}: {errno}"))?;
            }
        }
        Ok(())
    }

    /// Writes a regular file atomically: a temporary `.jailprov-tmp-<random>` in the same
    /// directory (`O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600 until done), written from
    /// `contents`, fchown, fchmod (exact mode including setuid bits, after fchown, which clears
    /// them), the optional mtime (futimens on the fd; atime is left alone), then renameat over
    /// `path`, replacing a file, symlink or device there without following it. A crash of
    /// jailprov at any moment leaves the old or the new file, plus possibly a temporary. There
    /// is no fsync per file (it tripled the time of a large apply): [`JailRoot::sync`] flushes
    /// the whole file system once, before apply records its work. A directory at `path` is an
    /// error (see [`JailRoot::remove_tree`]). Returns the written file's stat, taken through its
    /// fd: what apply records, never whatever a jail process renamed over `path` since.
    pub fn write_file(
        &self,
        path: &JailPath,
        contents: &mut dyn Read,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime_ns: Option<i128>,
    ) -> Result<NodeStat> {
        self.finished("write", path, self.write_file_inner(path, contents, mode, uid, gid, mtime_ns))
    }

    fn write_file_inner(
        &self,
        path: &JailPath,
        contents: &mut dyn Read,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime_ns: Option<i128>,
    ) -> Result<NodeStat> {
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
            // A crash here leaves the temporary, for the next apply's sweep.
            crate::kill_point::passed();
            rename_over(&parent, &temp, name)
        })();
        if written.is_err() {
            discard_temp(&parent, &temp);
        }
        written?;
        // The stat of the file written, through its fd and after the rename (which changes its
        // ctime): a jail process may already have put another file at `path`.
        let stat = fstat(&file).map_err(|errno| anyhow!("cannot inspect the written file: {errno}"))?;
        NodeStat::from_stat(&stat)
    }

    /// Creates (or atomically replaces, via a temporary name and renameat) a symlink whose text
    /// is exactly `target`, owned by `uid:gid`.
    pub fn symlink(&self, path: &JailPath, target: &str, uid: u32, gid: u32) -> Result<()> {
        self.finished("create the symlink", path, self.symlink_inner(path, target, uid, gid))
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
        self.finished("create the device node", path, self.mknod_inner(path, kind, rdev, mode, uid, gid))
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
        self.finished("set mode and owner of", path, self.set_attributes_inner(path, seen, mode, uid, gid))
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
}
