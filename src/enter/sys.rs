//! Every system call `enter` makes, behind one trait: the real kernel, and a recorder for unit tests.
//!
//! The steps in `mod.rs`, `init.rs` and `mounts.rs` only call these methods, so their order
//! (private propagation before any mount, pivot_root before the privilege drop, no_new_privs
//! before seccomp...) is unit-tested against [`Recorder`] without root. The real implementation
//! is deliberately thin: one system call, or a few that only make sense together, per method.

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use caps::{CapSet, Capability, CapsHashSet};
use nix::errno::Errno;
use nix::libc;
use nix::sched::CloneFlags;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid};
use seccompiler::BpfProgram;

use crate::enter::id_maps::IdMaps;
use crate::enter::network::{allow_unprivileged_low_ports, start_pasta, NetworkPlan, Pasta};
use crate::enter::signals::{Ended, FORWARDED_SIGNALS};

/// Which side of a fork or clone the caller is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    Parent(Pid),
    Child,
}

/// Why execve did not replace the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecFailure {
    pub errno: Errno,
}

/// Mount operations on fds; the part of [`Sys`] a mount executor needs (apply can reuse it).
pub trait MountSys {
    /// Clones the host tree at `source` (recursively), sets `attributes` (MOUNT_ATTR_* bits) on
    /// the still-detached clone, then attaches it onto `target`: never visible without them.
    fn mount_bind(&self, source: &Path, recursive: bool, attributes: u64, target: BorrowedFd<'_>) -> Result<()>;
    /// Creates a fresh `fstype` instance with `options` and attaches it onto `target`.
    fn mount_filesystem(
        &self,
        fstype: &str,
        options: &[(String, String)],
        attributes: u64,
        target: BorrowedFd<'_>,
    ) -> Result<()>;
    /// Detaches the mount whose root `target` is (an O_PATH fd opened on the mount point, so
    /// the very mount it resolved to comes off, whatever the path now leads to).
    fn unmount(&self, target: BorrowedFd<'_>) -> Result<()>;
    /// Clones the mount tree at `target` (an O_PATH fd of a node in the jail; with the mounts
    /// below it when `recursive`), sets `attributes` on the detached clone, and attaches it onto
    /// `target` itself: the node gets flags of its own, never visible without them.
    fn bind_onto_itself(&self, target: BorrowedFd<'_>, recursive: bool, attributes: u64) -> Result<()>;
    /// Adds `attributes` to the mount whose root `target` is, in place: that mount alone.
    fn restrict_mount(&self, target: BorrowedFd<'_>, attributes: u64) -> Result<()>;
}

/// Every system call of `enter`.
pub trait Sys: MountSys {
    // Processes.
    /// Blocks the forwarded signals and SIGCHLD (the supervisors wait for them with sigwait; the
    /// children inherit the mask until the command's own process unblocks it).
    fn block_signals(&self) -> Result<()>;
    /// clone3 into new namespaces, fork-like (the child returns `Fork::Child`). The child waits
    /// in [`Sys::wait_for_release`] until the parent calls [`Sys::release_child`].
    fn clone_into_namespaces(&self, namespaces: CloneFlags) -> Result<Fork>;
    /// Writes the id maps of the child just cloned. The real kernel finds it through its pidfd,
    /// never through `child` alone: in a /proc of another PID namespace that number is another
    /// process's (`child` only names it in messages).
    fn write_id_maps(&self, child: Pid, maps: &IdMaps) -> Result<()>;
    fn release_child(&self) -> Result<()>;
    fn wait_for_release(&self) -> Result<()>;
    fn fork(&self) -> Result<Fork>;
    /// Waits for `child`, passing on forwarded signals; with `reap_all` (PID 1) also reaps
    /// every orphan that ends meanwhile.
    fn supervise(&self, child: Pid, reap_all: bool) -> Result<Ended>;
    fn die_with_parent(&self) -> Result<()>;
    fn become_subreaper(&self) -> Result<()>;

    // The mount namespace.
    fn make_mounts_private(&self) -> Result<()>;
    /// Bind-mounts the jail root onto itself; returns an fd on the new mount's root.
    fn bind_root_onto_itself(&self, root: &Path) -> Result<OwnedFd>;
    /// pivot_root into `new_root`, leaving the old root stacked under it.
    fn pivot_root(&self, new_root: BorrowedFd<'_>) -> Result<()>;
    /// Detaches the old root (MNT_DETACH) and goes to the new "/".
    fn detach_old_root(&self) -> Result<()>;

    // Other namespaces.
    fn set_hostname(&self, name: &str) -> Result<()>;
    fn bring_up_loopback(&self) -> Result<()>;
    /// jailprov: pasta attached to `child`'s network namespace, ready (network.rs).
    fn connect_network(&self, child: Pid, network: &NetworkPlan) -> Result<Option<Pasta>>;
    fn allow_unprivileged_low_ports(&self) -> Result<()>;

    // Privileges.
    fn set_rlimit(&self, resource: Resource, limit: u64) -> Result<()>;
    fn drop_bounding_set(&self, keep: &CapsHashSet) -> Result<()>;
    fn keep_capabilities_across_setuid(&self) -> Result<()>;
    fn set_groups(&self, groups: &[u32]) -> Result<()>;
    fn set_ids(&self, uid: u32, gid: u32) -> Result<()>;
    /// Effective, permitted and inheritable become `keep`; ambient is cleared, then `keep`.
    fn set_capabilities(&self, keep: &CapsHashSet) -> Result<()>;
    fn set_no_new_privs(&self) -> Result<()>;
    fn install_seccomp(&self, filter: &BpfProgram) -> Result<()>;

    // The command's process.
    fn reset_signals(&self) -> Result<()>;
    fn close_fds_above_stderr(&self) -> Result<()>;
    fn chdir(&self, path: &str) -> Result<()>;
    fn is_executable_file(&self, path: &str) -> bool;
    /// Replaces the process; returns only on failure.
    fn execve(&self, path: &CStr, argv: &[CString], env: &[CString]) -> ExecFailure;

    // The jail's PID 1 once the command is forked.
    /// PR_SET_DUMPABLE 0: /proc/PID/* becomes root's, and no process without CAP_SYS_PTRACE
    /// can ptrace it or open its memory.
    fn set_non_dumpable(&self) -> Result<()>;
    /// Lets the command's process (waiting in [`Sys::wait_for_init`]) go on to exec.
    fn release_command(&self) -> Result<()>;
    /// In the command's process: waits until PID 1 has dropped its own privileges.
    fn wait_for_init(&self) -> Result<()>;

    // The traced mode (`jailprov trace`, see [`crate::enter::trace`]).
    /// In the command's process: PTRACE_TRACEME, so that the jail's PID 1 follows it.
    fn trace_me(&self) -> Result<()>;
    /// [`Sys::supervise`] of PID 1 for a traced command (`program` names it until it execs):
    /// follows it and its descendants and reports what they missed.
    fn supervise_traced(&self, command: Pid, program: &str) -> Result<Ended>;

    // The terminal and the session.
    /// jailprov's side, before the clone: when its stdin is a terminal, opens a pty pair for
    /// the jail (see [`crate::enter::terminal`]); returns whether it did.
    fn open_terminal(&self) -> Result<bool>;
    /// In the jail's PID 1: a new session, without the caller's terminal; with a pty, its
    /// slave becomes stdin, stdout and stderr (and the master is closed).
    fn leave_caller_session(&self) -> Result<()>;
    /// In the command's process: a session of its own, whose controlling terminal is the
    /// jail's pty when there is one.
    fn start_session(&self) -> Result<()>;
    /// jailprov's side with a pty: relays the caller's terminal until `child` ends.
    fn relay_terminal(&self, child: Pid) -> Result<Ended>;
}

// ---------------------------------------------------------------------------------------------
// The real kernel
// ---------------------------------------------------------------------------------------------

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

/// struct clone_args, the fields up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

fn path_cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| anyhow!("{} contains a NUL byte", path.display()))
}

fn syscall_fd(result: libc::c_long) -> nix::Result<OwnedFd> {
    let fd = Errno::result(result)?;
    // SAFETY: the kernel just returned this new descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn move_mount_onto(mount: &OwnedFd, target: BorrowedFd<'_>) -> nix::Result<()> {
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

fn fsconfig(fs: &OwnedFd, command: libc::c_uint, key: Option<&CStr>, value: Option<&CStr>) -> nix::Result<()> {
    let key = key.map_or(std::ptr::null(), CStr::as_ptr);
    let value = value.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: fsconfig(int fd, uint cmd, const char *key, const void *value, int aux): key and
    // value are NUL-terminated strings (or NULL, as the command expects) alive for the call.
    let result = unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), command, key, value, 0) };
    Errno::result(result).map(drop)
}

/// The system calls themselves. Holds the parent/child synchronisation pipe of one clone, and
/// in the parent the pidfd of the child it created.
#[derive(Default)]
pub struct RealSys {
    release: RefCell<Option<OwnedFd>>,
    child: RefCell<Option<OwnedFd>>,
    /// The pipe between the jail's PID 1 (writer) and the command's process (reader).
    command_gate: RefCell<Option<OwnedFd>>,
    /// The jail's pty (master, slave), from `open_terminal` until each side takes its end.
    terminal: RefCell<Option<(OwnedFd, OwnedFd)>>,
    /// Whether the jail has a pty of its own (so the command makes it its terminal).
    has_terminal: std::cell::Cell<bool>,
    /// The traced mode's report pipe (write end): kept by the jail's PID 1 alone.
    report: RefCell<Option<OwnedFd>>,
}

impl RealSys {
    /// The system calls of a traced `enter`, whose PID 1 writes its report to `report`.
    pub fn reporting_to(report: OwnedFd) -> RealSys {
        RealSys { report: RefCell::new(Some(report)), ..RealSys::default() }
    }
}

/// The do-nothing handlers of the forwarded signals: a namespace's PID 1 is sent only signals
/// it handles (they stay blocked and are taken by sigwait).
pub fn install_forwarding_handlers() -> Result<()> {
    let action = SigAction::new(SigHandler::Handler(note_signal), SaFlags::SA_RESTART, SigSet::empty());
    for signal in FORWARDED_SIGNALS {
        // SAFETY: the handler does nothing; the signals stay blocked and are taken by sigwait.
        unsafe { sigaction(*signal, &action) }.context("cannot install a signal handler")?;
    }
    Ok(())
}

fn forwarded_and_child() -> SigSet {
    let mut set = SigSet::empty();
    for signal in FORWARDED_SIGNALS {
        set.add(*signal);
    }
    set.add(Signal::SIGCHLD);
    set
}

extern "C" fn note_signal(_: libc::c_int) {}

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
        let empty: &CStr = c"";
        let flags = OPEN_TREE_CLONE
            | (libc::O_CLOEXEC | libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 }) as libc::c_uint;
        // SAFETY: open_tree(int dfd, const char *path, uint flags) on a live fd and a static "".
        let tree = syscall_fd(unsafe { libc::syscall(libc::SYS_open_tree, target.as_raw_fd(), empty.as_ptr(), flags) })
            .map_err(|errno| anyhow!("cannot clone the mount tree there: {errno}"))?;
        set_mount_attributes(std::os::fd::AsFd::as_fd(&tree), attributes, recursive)
            .map_err(|errno| anyhow!("cannot set the attributes of the clone: {errno}"))?;
        move_mount_onto(&tree, target).map_err(|errno| anyhow!("cannot attach the clone onto itself: {errno}"))
    }

    fn restrict_mount(&self, target: BorrowedFd<'_>, attributes: u64) -> Result<()> {
        set_mount_attributes(target, attributes, false)
            .map_err(|errno| anyhow!("cannot set the attributes {attributes:#x} of the mount: {errno}"))
    }
}

impl Sys for RealSys {
    fn block_signals(&self) -> Result<()> {
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&forwarded_and_child()), None)
            .context("cannot block signals")
    }

    fn clone_into_namespaces(&self, namespaces: CloneFlags) -> Result<Fork> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
        // The pidfd names the child itself: its pid number may name another process in a /proc
        // of another PID namespace (see `write_id_maps`).
        let mut pidfd: RawFd = -1;
        let args = CloneArgs {
            flags: namespaces.bits() as u64 | libc::CLONE_PIDFD as u64,
            pidfd: &mut pidfd as *mut RawFd as u64,
            exit_signal: libc::SIGCHLD as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 without CLONE_VM and without a stack is fork(): the child gets a copy of
        // this (single-threaded) process and returns 0 here. `args` and `pidfd` live for the call.
        let result =
            unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
        match Errno::result(result) {
            Ok(0) => {
                drop(write);
                *self.release.borrow_mut() = Some(read);
                Ok(Fork::Child)
            }
            Ok(pid) => {
                drop(read);
                // Only the jail's PID 1 writes the report: jailprov reads until it ends.
                drop(self.report.borrow_mut().take());
                *self.release.borrow_mut() = Some(write);
                // SAFETY: with CLONE_PIDFD the kernel stored a new descriptor, owned by nobody else.
                *self.child.borrow_mut() = Some(unsafe { OwnedFd::from_raw_fd(pidfd) });
                Ok(Fork::Parent(Pid::from_raw(pid as i32)))
            }
            Err(errno @ (Errno::EPERM | Errno::ENOSPC | Errno::EUSERS))
                if namespaces.contains(CloneFlags::CLONE_NEWUSER) =>
            {
                bail!(
                    "the kernel refused to create a user namespace ({errno}): unprivileged user namespaces are disabled or exhausted here (see sysctl kernel.unprivileged_userns_clone, user.max_user_namespaces, or an AppArmor restriction); run jailprov enter as root instead"
                )
            }
            Err(errno) => bail!("cannot create the namespaces ({namespaces:?}): {errno}"),
        }
    }

    fn write_id_maps(&self, child: Pid, maps: &IdMaps) -> Result<()> {
        let pidfd = self.child.borrow();
        let pidfd = pidfd.as_ref().context("write_id_maps without a clone")?;
        super::id_maps::write(pidfd, child, maps)
    }

    fn release_child(&self) -> Result<()> {
        let taken = self.release.borrow_mut().take();
        let write = taken.context("release_child without a clone")?;
        nix::unistd::write(&write, b"1").context("cannot release the jail's first process")?;
        Ok(())
    }

    fn wait_for_release(&self) -> Result<()> {
        let taken = self.release.borrow_mut().take();
        let read = taken.context("wait_for_release without a clone")?;
        let mut byte = [0u8; 1];
        loop {
            match nix::unistd::read(&read, &mut byte) {
                Ok(1) => return Ok(()),
                Ok(_) => bail!("jailprov ended before the jail was ready"),
                Err(Errno::EINTR) => continue,
                Err(errno) => bail!("cannot wait for jailprov: {errno}"),
            }
        }
    }

    fn fork(&self) -> Result<Fork> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
        // SAFETY: the process is single-threaded here (the jail's PID 1, right after clone3).
        match unsafe { nix::unistd::fork() }.context("cannot fork")? {
            nix::unistd::ForkResult::Parent { child } => {
                *self.command_gate.borrow_mut() = Some(write);
                Ok(Fork::Parent(child))
            }
            nix::unistd::ForkResult::Child => {
                // The command's process must not hold the report pipe (closed again below).
                drop(self.report.borrow_mut().take());
                *self.command_gate.borrow_mut() = Some(read);
                Ok(Fork::Child)
            }
        }
    }

    fn supervise(&self, child: Pid, reap_all: bool) -> Result<Ended> {
        // A handler, not SIG_DFL: a namespace's PID 1 is sent only signals it handles.
        install_forwarding_handlers()?;
        let set = forwarded_and_child();
        loop {
            // SAFETY: sigwaitinfo writes one siginfo_t into `info`, which outlives the call.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let signal = unsafe { libc::sigwaitinfo(set.as_ref(), &mut info) };
            if signal < 0 {
                match Errno::last() {
                    Errno::EINTR => continue,
                    errno => bail!("cannot wait for signals: {errno}"),
                }
            }
            if signal == libc::SIGCHLD {
                let target = if reap_all { None } else { Some(child) };
                loop {
                    match waitpid(target, Some(WaitPidFlag::WNOHANG)) {
                        Ok(WaitStatus::Exited(pid, code)) if pid == child => return Ok(Ended::Exited(code)),
                        Ok(WaitStatus::Signaled(pid, signal, _)) if pid == child => {
                            return Ok(Ended::Signaled(signal as i32))
                        }
                        Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                        Ok(_) => continue,
                        Err(Errno::EINTR) => continue,
                        Err(errno) => bail!("cannot wait for the command: {errno}"),
                    }
                }
            } else if let Ok(signal) = Signal::try_from(signal) {
                // The command has a session of its own: even the terminal's signals (^C on the
                // caller's terminal) reach it only through here.
                let _ = kill(child, signal);
            }
        }
    }

    fn die_with_parent(&self) -> Result<()> {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("cannot ask to die with the parent")
    }

    fn become_subreaper(&self) -> Result<()> {
        nix::sys::prctl::set_child_subreaper(true).context("cannot become a child subreaper")
    }

    fn make_mounts_private(&self) -> Result<()> {
        use nix::mount::{mount, MsFlags};
        mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
            .context("cannot make the mounts of the new mount namespace private")
    }

    fn bind_root_onto_itself(&self, root: &Path) -> Result<OwnedFd> {
        use nix::fcntl::OFlag;
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let directory = nix::fcntl::open(root, flags, nix::sys::stat::Mode::empty())
            .with_context(|| format!("cannot open the jail root {}", root.display()))?;
        let empty: &CStr = c"";
        let clone_flags =
            OPEN_TREE_CLONE | (libc::O_CLOEXEC | libc::AT_RECURSIVE | libc::AT_EMPTY_PATH) as libc::c_uint;
        // SAFETY: open_tree(int dfd, const char *path, uint flags) on a live fd and a static "".
        let tree = syscall_fd(unsafe {
            libc::syscall(libc::SYS_open_tree, directory.as_raw_fd(), empty.as_ptr(), clone_flags)
        })
        .with_context(|| format!("cannot clone the mount tree at the jail root {}", root.display()))?;
        move_mount_onto(&tree, std::os::fd::AsFd::as_fd(&directory))
            .with_context(|| format!("cannot bind-mount the jail root {} onto itself", root.display()))?;
        // After move_mount the tree's fd is the root of the attached mount.
        Ok(tree)
    }

    fn pivot_root(&self, new_root: BorrowedFd<'_>) -> Result<()> {
        nix::unistd::fchdir(new_root).context("cannot enter the new root")?;
        // pivot_root(".", "."): the old root ends up stacked under the new one, at ".".
        nix::unistd::pivot_root(".", ".").context("pivot_root into the jail failed")
    }

    fn detach_old_root(&self) -> Result<()> {
        nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH).context("cannot detach the host's root")?;
        nix::unistd::chdir("/").context("cannot go to the jail's /")
    }

    fn set_hostname(&self, name: &str) -> Result<()> {
        nix::unistd::sethostname(name).with_context(|| format!("cannot set the hostname {name:?}"))
    }

    fn connect_network(&self, child: Pid, network: &NetworkPlan) -> Result<Option<Pasta>> {
        start_pasta(child, network).map(Some)
    }
    fn allow_unprivileged_low_ports(&self) -> Result<()> {
        allow_unprivileged_low_ports()
    }
    fn bring_up_loopback(&self) -> Result<()> {
        // SAFETY: a plain socket(2); the fd is owned right away.
        let socket =
            syscall_fd(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) }.into())
                .context("cannot open a socket to configure lo")?;
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *slot = *byte as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq that outlives both calls.
        Errno::result(unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) })
            .context("cannot read the flags of lo")?;
        unsafe { request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
        Errno::result(unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) })
            .context("cannot bring up lo")?;
        Ok(())
    }

    fn set_rlimit(&self, resource: Resource, limit: u64) -> Result<()> {
        setrlimit(resource, limit, limit).with_context(|| format!("cannot set {resource:?} to {limit}"))
    }

    fn drop_bounding_set(&self, keep: &CapsHashSet) -> Result<()> {
        let present = caps::read(None, CapSet::Bounding).context("cannot read the capability bounding set")?;
        for capability in present.difference(keep) {
            caps::drop(None, CapSet::Bounding, *capability)
                .with_context(|| format!("cannot drop {capability} from the bounding set"))?;
        }
        Ok(())
    }

    fn keep_capabilities_across_setuid(&self) -> Result<()> {
        nix::sys::prctl::set_keepcaps(true).context("cannot set PR_SET_KEEPCAPS")
    }

    fn set_groups(&self, groups: &[u32]) -> Result<()> {
        let groups: Vec<Gid> = groups.iter().map(|gid| Gid::from_raw(*gid)).collect();
        nix::unistd::setgroups(&groups).with_context(|| format!("cannot set the supplementary groups {groups:?}"))
    }

    fn set_ids(&self, uid: u32, gid: u32) -> Result<()> {
        let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
        nix::unistd::setresgid(gid, gid, gid).with_context(|| format!("cannot switch to gid {gid}"))?;
        nix::unistd::setresuid(uid, uid, uid).with_context(|| format!("cannot switch to uid {uid}"))
    }

    fn set_capabilities(&self, keep: &CapsHashSet) -> Result<()> {
        caps::clear(None, CapSet::Ambient).context("cannot clear the ambient capabilities")?;
        // Effective first: it must stay within permitted at every step.
        let effective: CapsHashSet = caps::read(None, CapSet::Permitted)
            .context("cannot read capabilities")?
            .intersection(keep)
            .copied()
            .collect();
        caps::set(None, CapSet::Effective, &effective).context("cannot set the effective capabilities")?;
        caps::set(None, CapSet::Permitted, &effective).context("cannot set the permitted capabilities")?;
        caps::set(None, CapSet::Inheritable, &effective).context("cannot set the inheritable capabilities")?;
        if effective.len() != keep.len() {
            let missing: Vec<String> = keep.difference(&effective).map(Capability::to_string).collect();
            bail!("cannot keep {}: jailprov does not hold it", missing.join(", "));
        }
        for capability in &effective {
            caps::raise(None, CapSet::Ambient, *capability)
                .with_context(|| format!("cannot raise {capability} in the ambient set"))?;
        }
        Ok(())
    }

    fn set_no_new_privs(&self) -> Result<()> {
        nix::sys::prctl::set_no_new_privs().context("cannot set PR_SET_NO_NEW_PRIVS")
    }

    fn install_seccomp(&self, filter: &BpfProgram) -> Result<()> {
        seccompiler::apply_filter(filter).context("cannot install the seccomp filter")
    }

    fn reset_signals(&self) -> Result<()> {
        for signal in Signal::iterator() {
            if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
                continue;
            }
            // SAFETY: restoring the default disposition installs no Rust code as a handler.
            unsafe { sigaction(signal, &SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty())) }
                .with_context(|| format!("cannot reset {signal}"))?;
        }
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
            .context("cannot unblock signals")
    }

    fn close_fds_above_stderr(&self) -> Result<()> {
        // The traced mode's report pipe stays open around the ranges closed.
        let kept = self.report.borrow().as_ref().map(|fd| fd.as_raw_fd() as libc::c_uint);
        let ranges = match kept {
            Some(fd) if fd > 3 => vec![(3, fd - 1), (fd + 1, libc::c_uint::MAX)],
            Some(3) => vec![(4, libc::c_uint::MAX)],
            _ => vec![(3, libc::c_uint::MAX)],
        };
        for (first, last) in ranges {
            // SAFETY: close_range(first, last, 0) closes descriptors this process no longer uses;
            // nothing holds them past this point (the process execs or drops privileges next).
            Errno::result(unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) })
                .context("cannot close inherited file descriptors")?;
        }
        Ok(())
    }

    fn chdir(&self, path: &str) -> Result<()> {
        nix::unistd::chdir(path).map_err(|errno| {
            let why = match errno {
                // Runs as the jail user: what it may not search, no user can fix from inside.
                Errno::EACCES => format!(
                    ": the jail user (uid {}) may not search it (without root, `enter` maps the jail user to \
                     the caller's own uid, which owns nothing in the jail); run \
                     as root, make the directory searchable by others (`mode = \"0755\"` in its [[dirs]] entry), \
                     or set [enter].workdir to a directory it may enter",
                    nix::unistd::geteuid()
                ),
                _ => String::new(),
            };
            anyhow::anyhow!("cannot change to the working directory {path}: {errno}{why}")
        })
    }

    fn is_executable_file(&self, path: &str) -> bool {
        nix::sys::stat::stat(path).is_ok_and(|stat| stat.st_mode & libc::S_IFMT == libc::S_IFREG)
    }

    fn execve(&self, path: &CStr, argv: &[CString], env: &[CString]) -> ExecFailure {
        match nix::unistd::execve(path, argv, env) {
            Err(errno) => ExecFailure { errno },
            Ok(never) => match never {},
        }
    }

    fn set_non_dumpable(&self) -> Result<()> {
        nix::sys::prctl::set_dumpable(false).context("cannot set PR_SET_DUMPABLE 0")
    }

    fn release_command(&self) -> Result<()> {
        let taken = self.command_gate.borrow_mut().take();
        let write = taken.context("release_command without a fork")?;
        nix::unistd::write(&write, b"1").context("cannot release the command's process")?;
        Ok(())
    }

    fn wait_for_init(&self) -> Result<()> {
        let taken = self.command_gate.borrow_mut().take();
        let read = taken.context("wait_for_init without a fork")?;
        let mut byte = [0u8; 1];
        loop {
            match nix::unistd::read(&read, &mut byte) {
                Ok(1) => return Ok(()),
                Ok(_) => bail!("the jail's PID 1 ended before it dropped its privileges"),
                Err(Errno::EINTR) => continue,
                Err(errno) => bail!("cannot wait for the jail's PID 1: {errno}"),
            }
        }
    }

    fn trace_me(&self) -> Result<()> {
        nix::sys::ptrace::traceme().context(
            "cannot let the jail's PID 1 trace the command (PTRACE_TRACEME; a Yama ptrace_scope of 3 forbids it)",
        )
    }

    fn supervise_traced(&self, command: Pid, program: &str) -> Result<Ended> {
        let report = self.report.borrow();
        let report = report.as_ref().context("supervise_traced without a report pipe")?;
        super::trace::supervise(command, program, report)
    }

    fn open_terminal(&self) -> Result<bool> {
        let pair = super::terminal::open_pair()?;
        self.has_terminal.set(pair.is_some());
        *self.terminal.borrow_mut() = pair;
        Ok(self.has_terminal.get())
    }

    fn leave_caller_session(&self) -> Result<()> {
        nix::unistd::setsid().context("cannot start a new session for the jail")?;
        if let Some((master, slave)) = self.terminal.borrow_mut().take() {
            drop(master);
            for target in 0..=2 {
                // SAFETY: dup2 onto stdin/stdout/stderr, which this process owns; `slave` lives.
                Errno::result(unsafe { libc::dup2(slave.as_raw_fd(), target) })
                    .context("cannot make the jail's pty stdin, stdout and stderr")?;
            }
        }
        Ok(())
    }

    fn start_session(&self) -> Result<()> {
        nix::unistd::setsid().context("cannot start the command's session")?;
        if self.has_terminal.get() {
            // SAFETY: TIOCSCTTY with argument 0 takes no pointer.
            Errno::result(unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) })
                .context("cannot make the jail's pty the command's controlling terminal")?;
        }
        Ok(())
    }

    fn relay_terminal(&self, child: Pid) -> Result<Ended> {
        let (master, slave) = self.terminal.borrow_mut().take().context("relay_terminal without a pty")?;
        // Only the jail holds the slave now: the master reads EIO once the jail is gone.
        drop(slave);
        super::terminal::relay(master, child)
    }
}

// ---------------------------------------------------------------------------------------------
// The recorder
// ---------------------------------------------------------------------------------------------

/// Records every call as one line, in order; forks and clones answer as scripted.
#[cfg(test)]
pub struct Recorder {
    pub calls: RefCell<Vec<String>>,
    /// What `clone_into_namespaces` and `fork` answer, in turn (`Fork::Child` when exhausted).
    pub forks: RefCell<std::collections::VecDeque<Fork>>,
    /// How the supervised child ends.
    pub ended: Ended,
    /// Calls that fail (by method name).
    pub failing: Vec<&'static str>,
    /// Paths `is_executable_file` accepts.
    pub executables: Vec<String>,
    /// A directory whose fd `bind_root_onto_itself` returns (the "jail" of the test).
    pub root: std::path::PathBuf,
    /// What `open_terminal` answers (stdin a terminal).
    pub terminal: bool,
}

#[cfg(test)]
impl Recorder {
    pub fn new(root: &Path) -> Recorder {
        Recorder {
            calls: RefCell::new(Vec::new()),
            forks: RefCell::new(Default::default()),
            ended: Ended::Exited(0),
            failing: Vec::new(),
            executables: Vec::new(),
            root: root.to_path_buf(),
            terminal: false,
        }
    }

    fn record(&self, method: &'static str, detail: String) -> Result<()> {
        let line = if detail.is_empty() { method.to_owned() } else { format!("{method} {detail}") };
        self.calls.borrow_mut().push(line);
        if self.failing.contains(&method) {
            bail!("{method} failed (scripted)");
        }
        Ok(())
    }

    fn next_fork(&self) -> Fork {
        self.forks.borrow_mut().pop_front().unwrap_or(Fork::Child)
    }

    /// Index of the first call starting with `prefix`.
    pub fn position(&self, prefix: &str) -> Option<usize> {
        self.calls.borrow().iter().position(|call| call.starts_with(prefix))
    }

    pub fn lines(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
}

#[cfg(test)]
fn target_name(target: BorrowedFd<'_>) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", target.as_raw_fd()))
        .map(|path| path.display().to_string())
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
impl MountSys for Recorder {
    fn mount_bind(&self, source: &Path, recursive: bool, attributes: u64, target: BorrowedFd<'_>) -> Result<()> {
        self.record(
            "mount_bind",
            format!("{} -> {} recursive={recursive} attributes={attributes:#x}", source.display(), target_name(target)),
        )
    }

    fn mount_filesystem(
        &self,
        fstype: &str,
        options: &[(String, String)],
        attributes: u64,
        target: BorrowedFd<'_>,
    ) -> Result<()> {
        self.record(
            "mount_filesystem",
            format!("{fstype} {options:?} -> {} attributes={attributes:#x}", target_name(target)),
        )
    }

    fn unmount(&self, target: BorrowedFd<'_>) -> Result<()> {
        self.record("unmount", target_name(target))
    }

    fn bind_onto_itself(&self, target: BorrowedFd<'_>, recursive: bool, attributes: u64) -> Result<()> {
        self.record(
            "bind_onto_itself",
            format!("{} recursive={recursive} attributes={attributes:#x}", target_name(target)),
        )
    }

    fn restrict_mount(&self, target: BorrowedFd<'_>, attributes: u64) -> Result<()> {
        self.record("restrict_mount", format!("{} attributes={attributes:#x}", target_name(target)))
    }
}

#[cfg(test)]
impl Sys for Recorder {
    fn block_signals(&self) -> Result<()> {
        self.record("block_signals", String::new())
    }
    fn clone_into_namespaces(&self, namespaces: CloneFlags) -> Result<Fork> {
        self.record("clone_into_namespaces", format!("{namespaces:?}"))?;
        Ok(self.next_fork())
    }
    fn write_id_maps(&self, child: Pid, maps: &IdMaps) -> Result<()> {
        self.record("write_id_maps", format!("{child} {maps:?}"))
    }
    fn release_child(&self) -> Result<()> {
        self.record("release_child", String::new())
    }
    fn wait_for_release(&self) -> Result<()> {
        self.record("wait_for_release", String::new())
    }
    fn fork(&self) -> Result<Fork> {
        self.record("fork", String::new())?;
        Ok(self.next_fork())
    }
    fn supervise(&self, child: Pid, reap_all: bool) -> Result<Ended> {
        self.record("supervise", format!("{child} reap_all={reap_all}"))?;
        Ok(self.ended)
    }
    fn die_with_parent(&self) -> Result<()> {
        self.record("die_with_parent", String::new())
    }
    fn become_subreaper(&self) -> Result<()> {
        self.record("become_subreaper", String::new())
    }
    fn make_mounts_private(&self) -> Result<()> {
        self.record("make_mounts_private", String::new())
    }
    fn bind_root_onto_itself(&self, root: &Path) -> Result<OwnedFd> {
        self.record("bind_root_onto_itself", root.display().to_string())?;
        let fd = nix::fcntl::open(
            &self.root,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        Ok(fd)
    }
    fn pivot_root(&self, _new_root: BorrowedFd<'_>) -> Result<()> {
        self.record("pivot_root", String::new())
    }
    fn detach_old_root(&self) -> Result<()> {
        self.record("detach_old_root", String::new())
    }
    fn set_hostname(&self, name: &str) -> Result<()> {
        self.record("set_hostname", name.to_owned())
    }
    fn connect_network(&self, child: Pid, network: &NetworkPlan) -> Result<Option<Pasta>> {
        self.record("connect_network", format!("{child} egress={}", network.egress)).map(|()| None)
    }
    fn allow_unprivileged_low_ports(&self) -> Result<()> {
        self.record("allow_unprivileged_low_ports", String::new())
    }
    fn bring_up_loopback(&self) -> Result<()> {
        self.record("bring_up_loopback", String::new())
    }
    fn set_rlimit(&self, resource: Resource, limit: u64) -> Result<()> {
        self.record("set_rlimit", format!("{resource:?} {limit}"))
    }
    fn drop_bounding_set(&self, keep: &CapsHashSet) -> Result<()> {
        self.record("drop_bounding_set", format!("keep={}", sorted(keep)))
    }
    fn keep_capabilities_across_setuid(&self) -> Result<()> {
        self.record("keep_capabilities_across_setuid", String::new())
    }
    fn set_groups(&self, groups: &[u32]) -> Result<()> {
        self.record("set_groups", format!("{groups:?}"))
    }
    fn set_ids(&self, uid: u32, gid: u32) -> Result<()> {
        self.record("set_ids", format!("{uid} {gid}"))
    }
    fn set_capabilities(&self, keep: &CapsHashSet) -> Result<()> {
        self.record("set_capabilities", format!("keep={}", sorted(keep)))
    }
    fn set_no_new_privs(&self) -> Result<()> {
        self.record("set_no_new_privs", String::new())
    }
    fn install_seccomp(&self, filter: &BpfProgram) -> Result<()> {
        self.record("install_seccomp", format!("{} instructions", filter.len()))
    }
    fn reset_signals(&self) -> Result<()> {
        self.record("reset_signals", String::new())
    }
    fn close_fds_above_stderr(&self) -> Result<()> {
        self.record("close_fds_above_stderr", String::new())
    }
    fn chdir(&self, path: &str) -> Result<()> {
        self.record("chdir", path.to_owned())
    }
    fn is_executable_file(&self, path: &str) -> bool {
        self.executables.iter().any(|known| known == path)
    }
    fn execve(&self, path: &CStr, argv: &[CString], env: &[CString]) -> ExecFailure {
        let _ = self.record("execve", format!("{path:?} {argv:?} {env:?}"));
        ExecFailure { errno: Errno::ENOENT }
    }
    fn set_non_dumpable(&self) -> Result<()> {
        self.record("set_non_dumpable", String::new())
    }
    fn release_command(&self) -> Result<()> {
        self.record("release_command", String::new())
    }
    fn wait_for_init(&self) -> Result<()> {
        self.record("wait_for_init", String::new())
    }
    fn trace_me(&self) -> Result<()> {
        self.record("trace_me", String::new())
    }
    fn supervise_traced(&self, command: Pid, program: &str) -> Result<Ended> {
        self.record("supervise_traced", format!("{command} {program}"))?;
        Ok(self.ended)
    }
    fn open_terminal(&self) -> Result<bool> {
        self.record("open_terminal", String::new())?;
        Ok(self.terminal)
    }
    fn leave_caller_session(&self) -> Result<()> {
        self.record("leave_caller_session", String::new())
    }
    fn start_session(&self) -> Result<()> {
        self.record("start_session", String::new())
    }
    fn relay_terminal(&self, child: Pid) -> Result<Ended> {
        self.record("relay_terminal", child.to_string())?;
        Ok(self.ended)
    }
}

#[cfg(test)]
fn sorted(set: &CapsHashSet) -> String {
    let mut names: Vec<String> = set.iter().map(Capability::to_string).collect();
    names.sort();
    format!("[{}]", names.join(","))
}
