//! The real kernel for everything but mounts: processes, namespaces, privileges, the session.

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use anyhow::{bail, Context, Result};
use caps::{CapSet, Capability, CapsHashSet};
use nix::errno::Errno;
use nix::libc;
use nix::sched::CloneFlags;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid};
use seccompiler::BpfProgram;

use super::kernel_mounts::{clone_mount_at, move_mount_onto, syscall_fd};
use super::{ExecFailure, Fork, Sys};
use crate::enter::id_maps::IdMaps;
use crate::enter::network::{allow_unprivileged_low_ports, start_pasta, NetworkPlan, Pasta};
use crate::enter::signals::{Ended, FORWARDED_SIGNALS};

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

/// Waits for the one byte the other side of a gate pipe writes when it lets this process go on;
/// the pipe closing first means that side ended (`ended`).
fn wait_for_gate(read: &OwnedFd, ended: &str, failed: &str) -> Result<()> {
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(read, &mut byte) {
            Ok(1) => return Ok(()),
            Ok(_) => bail!("{ended}"),
            Err(Errno::EINTR) => continue,
            Err(errno) => bail!("{failed}: {errno}"),
        }
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
        crate::enter::id_maps::write(pidfd, child, maps)
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
        wait_for_gate(&read, "jailprov ended before the jail was ready", "cannot wait for jailprov")
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
        let tree = clone_mount_at(std::os::fd::AsFd::as_fd(&directory), true)
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
        wait_for_gate(
            &read,
            "the jail's PID 1 ended before it dropped its privileges",
            "cannot wait for the jail's PID 1",
        )
    }

    fn trace_me(&self) -> Result<()> {
        nix::sys::ptrace::traceme().context(
            "cannot let the jail's PID 1 trace the command (PTRACE_TRACEME; a Yama ptrace_scope of 3 forbids it)",
        )
    }

    fn supervise_traced(&self, command: Pid, program: &str) -> Result<Ended> {
        let report = self.report.borrow();
        let report = report.as_ref().context("supervise_traced without a report pipe")?;
        crate::enter::trace::supervise(command, program, report)
    }

    fn open_terminal(&self) -> Result<bool> {
        let pair = crate::enter::terminal::open_pair()?;
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
        crate::enter::terminal::relay(master, child)
    }
}
