//! The user namespace's id maps, written into /proc/PID of the jail's first process found
//! through its pidfd.
//!
//! The pid number clone3 returns is the child's in jailprov's PID namespace; a /proc mounted
//! for another PID namespace (jailprov started by `unshare --pid --fork` without a /proc of its
//! own, some CI sandboxes) numbers processes differently, and "/proc/<that number>" is then some
//! other process. So the number comes from the pidfd's fdinfo, as this /proc sees it, and the
//! maps are written relative to a directory fd checked to be the child's.

use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::libc;
use nix::unistd::Pid;

/// One line of a uid_map or gid_map: `inside outside count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// The user namespace's id maps, written by the parent for the child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMaps {
    pub uid: IdRange,
    pub gid: IdRange,
    /// `deny` in /proc/PID/setgroups: required for an unprivileged writer of gid_map.
    pub deny_setgroups: bool,
}

/// Writes setgroups (when denied), uid_map and gid_map of the child `pidfd` names.
pub fn write(pidfd: &OwnedFd, child: Pid, maps: &IdMaps) -> Result<()> {
    let directory = open_proc_directory_of(pidfd, child)?;
    if maps.deny_setgroups {
        write_proc_file(&directory, "setgroups", "deny")?;
    }
    write_proc_file(&directory, "uid_map", &format!("{} {} {}\n", maps.uid.inside, maps.uid.outside, maps.uid.count))?;
    write_proc_file(&directory, "gid_map", &format!("{} {} {}\n", maps.gid.inside, maps.gid.outside, maps.gid.count))
}

/// The pid of the process `pidfd` names, as the mounted /proc numbers it (`Pid:` of its fdinfo):
/// `None` when that process is not visible in this /proc (it belongs to another PID namespace).
fn pid_in_this_proc(pidfd: &OwnedFd) -> Result<Option<i32>> {
    let path = format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd());
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("cannot read {path}: the /proc mounted here is not one of jailprov's own PID namespace; {PROC_ADVICE}")
    })?;
    Ok(pid_of_fdinfo(&text))
}

/// The `Pid:` of a pidfd's fdinfo; `None` for -1 (not visible in this /proc, or ended), 0
/// (older kernels' "not in this namespace") or no such line.
fn pid_of_fdinfo(text: &str) -> Option<i32> {
    text.lines()
        .find_map(|line| line.strip_prefix("Pid:"))
        .and_then(|value| value.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 0)
}

/// What to do when /proc cannot show jailprov's own children.
const PROC_ADVICE: &str =
    "mount a /proc of jailprov's own PID namespace (for `unshare --pid --fork`, add --mount-proc)";

/// An fd on /proc/PID of the child `pidfd` names, checked to be that child's: the number comes
/// from the pidfd as this /proc sees it, and the child is still alive once the directory is open
/// (an unreaped child keeps its number, so the directory cannot be another process's).
fn open_proc_directory_of(pidfd: &OwnedFd, child: Pid) -> Result<OwnedFd> {
    use nix::fcntl::OFlag;
    let Some(pid) = pid_in_this_proc(pidfd)? else {
        bail!(
            "the jail's first process (pid {child} for jailprov) is not visible in /proc: /proc belongs to another PID namespace, and jailprov writes only the id maps of a process it created; {PROC_ADVICE}"
        );
    };
    let path = format!("/proc/{pid}");
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let directory = nix::fcntl::open(path.as_str(), flags, nix::sys::stat::Mode::empty())
        .with_context(|| format!("cannot open {path}, the jail's first process"))?;
    // SAFETY: pidfd_send_signal(int pidfd, int sig, siginfo_t *info, uint flags) with signal 0
    // only checks that the process exists; no siginfo is passed.
    let alive = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), 0, std::ptr::null::<u8>(), 0) };
    Errno::result(alive)
        .with_context(|| format!("the jail's first process ended before its id maps were written ({path})"))?;
    Ok(directory)
}

/// Writes `text` to the file `name` of the /proc/PID directory `directory`, never following a link.
fn write_proc_file(directory: &OwnedFd, name: &str, text: &str) -> Result<()> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let file = nix::fcntl::openat(directory, name, flags, nix::sys::stat::Mode::empty())
        .with_context(|| format!("cannot open {name} of the jail's first process"))?;
    let written = nix::unistd::write(&file, text.as_bytes())
        .with_context(|| format!("cannot write {:?} to {name} of the jail's first process", text.trim_end()))?;
    if written != text.len() {
        bail!("short write of {:?} to {name} of the jail's first process", text.trim_end());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::pid_of_fdinfo;

    #[test]
    fn a_child_not_visible_in_this_proc_has_no_pid() {
        assert_eq!(pid_of_fdinfo("pos:\t0\nflags:\t02000002\nPid:\t4242\nNSpid:\t4242\t1\n"), Some(4242));
        assert_eq!(pid_of_fdinfo("pos:\t0\nPid:\t-1\n"), None);
        assert_eq!(pid_of_fdinfo("pos:\t0\nPid:\t0\n"), None);
        assert_eq!(pid_of_fdinfo("pos:\t0\nflags:\t02000002\n"), None);
    }
}
