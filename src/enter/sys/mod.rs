//! Every system call `enter` makes, behind one trait: the real kernel, and a recorder for unit tests.
//!
//! The steps in `mod.rs`, `init.rs` and `mounts.rs` only call these methods, so their order
//! (private propagation before any mount, pivot_root before the privilege drop, no_new_privs
//! before seccomp...) is unit-tested against [`Recorder`] without root. The real implementation
//! is deliberately thin: one system call, or a few that only make sense together, per method.

mod kernel_mounts;
mod real;
#[cfg(test)]
mod recorder;

use std::ffi::{CStr, CString};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use anyhow::Result;
use caps::CapsHashSet;
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;
use nix::unistd::Pid;
use seccompiler::BpfProgram;

use crate::enter::id_maps::IdMaps;
use crate::enter::network::{NetworkPlan, Pasta};
use crate::enter::signals::Ended;
pub use real::{install_forwarding_handlers, RealSys};
#[cfg(test)]
pub use recorder::Recorder;

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
    /// Clones the mount whose root `source` is (an O_PATH fd opened before something covered
    /// it, e.g. a jail's device node under the minimal /dev's tmpfs), sets `attributes` on the
    /// detached clone, and attaches it onto `target`.
    fn bind_node(&self, source: BorrowedFd<'_>, attributes: u64, target: BorrowedFd<'_>) -> Result<()>;
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
