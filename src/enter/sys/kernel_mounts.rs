//! The real kernel's mount calls: the new mount API (open_tree, fsopen, fsmount, move_mount,
//! mount_setattr), every mount made on an fd and never visible before its flags are set.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use anyhow::{anyhow, Result};
use nix::errno::Errno;
use nix::libc;

use super::real::RealSys;
use super::MountSys;

// linux/mount.h and linux/sched.h values the libc crate does not carry everywhere.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;

/// struct mount_attr (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn path_cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| anyhow!("{} contains a NUL byte", path.display()))
}

pub(super) fn syscall_fd(result: libc::c_long) -> nix::Result<OwnedFd> {
    let fd = Errno::result(result)?;
    // SAFETY: the kernel just returned this new descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub(super) fn move_mount_onto(mount: &OwnedFd, target: BorrowedFd<'_>) -> nix::Result<()> {
    let empty: &CStr = c"";
    // SAFETY: move_mount(int from_dfd, const char *from, int to_dfd, const char *to, uint flags):
    // both paths are a valid static empty string, both fds are live for the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    Errno::result(result).map(drop)
}

fn set_mount_attributes(mount: BorrowedFd<'_>, attributes: u64, recursive: bool) -> nix::Result<()> {
    let attr = MountAttr { attr_set: attributes, attr_clr: 0, propagation: 0, userns_fd: 0 };
    let empty: &CStr = c"";
    let flags = libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: mount_setattr(int dfd, const char *path, uint flags, struct mount_attr *, size_t):
    // `attr` lives on this stack frame for the call and its size is passed along.
    let result = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount.as_raw_fd(),
            empty.as_ptr(),
            flags as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    Errno::result(result).map(drop)
}

/// A detached clone of the mount whose root `at` is (with the mounts below it when `recursive`).
pub(super) fn clone_mount_at(at: BorrowedFd<'_>, recursive: bool) -> nix::Result<OwnedFd> {
    let empty: &CStr = c"";
    let flags = OPEN_TREE_CLONE
        | (libc::O_CLOEXEC | libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 }) as libc::c_uint;
    // SAFETY: open_tree(int dfd, const char *path, uint flags) on a live fd and a static "".
    syscall_fd(unsafe { libc::syscall(libc::SYS_open_tree, at.as_raw_fd(), empty.as_ptr(), flags) })
}

fn fsconfig(fs: &OwnedFd, command: libc::c_uint, key: Option<&CStr>, value: Option<&CStr>) -> nix::Result<()> {
    let key = key.map_or(std::ptr::null(), CStr::as_ptr);
    let value = value.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: fsconfig(int fd, uint cmd, const char *key, const void *value, int aux): key and
    // value are NUL-terminated strings (or NULL, as the command expects) alive for the call.
    let result = unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), command, key, value, 0) };
    Errno::result(result).map(drop)
}

impl MountSys for RealSys {
    fn mount_bind(&self, source: &Path, recursive: bool, attributes: u64, target: BorrowedFd<'_>) -> Result<()> {
        let source_c = path_cstring(source)?;
        let flags = OPEN_TREE_CLONE
            | libc::O_CLOEXEC as libc::c_uint
            | if recursive { libc::AT_RECURSIVE } else { 0 } as libc::c_uint;
        // SAFETY: open_tree(int dfd, const char *path, uint flags): a valid C string for the call.
        let tree = syscall_fd(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, source_c.as_ptr(), flags) })
            .map_err(|errno| anyhow!("cannot clone the host tree {}: {errno}", source.display()))?;
        set_mount_attributes(std::os::fd::AsFd::as_fd(&tree), attributes, recursive)
            .map_err(|errno| anyhow!("cannot set the attributes of the bind mount of {}: {errno}", source.display()))?;
        move_mount_onto(&tree, target).map_err(|errno| anyhow!("cannot attach the bind mount: {errno}"))
    }

    fn mount_filesystem(
        &self,
        fstype: &str,
        options: &[(String, String)],
        attributes: u64,
        target: BorrowedFd<'_>,
    ) -> Result<()> {
        let name = CString::new(fstype).map_err(|_| anyhow!("a file system name holds a NUL byte"))?;
        // SAFETY: fsopen(const char *fsname, uint flags): a valid C string for the call.
        let fs = syscall_fd(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) })
            .map_err(|errno| anyhow!("cannot create a {fstype} instance: {errno}"))?;
        for (key, value) in options {
            let key_c = CString::new(key.as_str()).map_err(|_| anyhow!("option {key:?} holds a NUL byte"))?;
            let value_c = CString::new(value.as_str()).map_err(|_| anyhow!("option {value:?} holds a NUL byte"))?;
            fsconfig(&fs, FSCONFIG_SET_STRING, Some(&key_c), Some(&value_c))
                .map_err(|errno| anyhow!("{fstype} refuses {key}={value}: {errno}"))?;
        }
        fsconfig(&fs, FSCONFIG_CMD_CREATE, None, None)
            .map_err(|errno| anyhow!("cannot create the {fstype} file system: {errno}"))?;
        // SAFETY: fsmount(int fs_fd, uint flags, uint attr_flags): plain integers.
        let mount = syscall_fd(unsafe {
            libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attributes as libc::c_uint)
        })
        .map_err(|errno| anyhow!("cannot make a mount of the {fstype} file system: {errno}"))?;
        move_mount_onto(&mount, target).map_err(|errno| anyhow!("cannot attach the {fstype} mount: {errno}"))
    }

    fn unmount(&self, target: BorrowedFd<'_>) -> Result<()> {
        // The magic link resolves to the fd's own (mount, dentry): no path lookup a jailed
        // process could redirect.
        let path = format!("/proc/self/fd/{}", target.as_raw_fd());
        nix::mount::umount2(path.as_str(), nix::mount::MntFlags::MNT_DETACH)
            .map_err(|errno| anyhow!("cannot unmount: {errno}"))
    }

    fn bind_onto_itself(&self, target: BorrowedFd<'_>, recursive: bool, attributes: u64) -> Result<()> {
        let tree =
            clone_mount_at(target, recursive).map_err(|errno| anyhow!("cannot clone the mount tree there: {errno}"))?;
        set_mount_attributes(std::os::fd::AsFd::as_fd(&tree), attributes, recursive)
            .map_err(|errno| anyhow!("cannot set the attributes of the clone: {errno}"))?;
        move_mount_onto(&tree, target).map_err(|errno| anyhow!("cannot attach the clone onto itself: {errno}"))
    }

    fn bind_node(&self, source: BorrowedFd<'_>, attributes: u64, target: BorrowedFd<'_>) -> Result<()> {
        let tree = clone_mount_at(source, false).map_err(|errno| anyhow!("cannot clone the mount: {errno}"))?;
        set_mount_attributes(std::os::fd::AsFd::as_fd(&tree), attributes, false)
            .map_err(|errno| anyhow!("cannot set the attributes of the clone: {errno}"))?;
        move_mount_onto(&tree, target).map_err(|errno| anyhow!("cannot attach the clone: {errno}"))
    }

    fn restrict_mount(&self, target: BorrowedFd<'_>, attributes: u64) -> Result<()> {
        set_mount_attributes(target, attributes, false)
            .map_err(|errno| anyhow!("cannot set the attributes {attributes:#x} of the mount: {errno}"))
    }
}
