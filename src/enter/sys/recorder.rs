//! The recorder: every call of [`Sys`] as one line, so the steps' order is unit-tested without root.

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Result};
use caps::{Capability, CapsHashSet};
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;
use nix::unistd::Pid;
use seccompiler::BpfProgram;

use super::{ExecFailure, Fork, MountSys, Sys};
use crate::enter::id_maps::IdMaps;
use crate::enter::network::{NetworkPlan, Pasta};
use crate::enter::signals::Ended;

/// Records every call as one line, in order; forks and clones answer as scripted.
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

fn target_name(target: BorrowedFd<'_>) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", target.as_raw_fd()))
        .map(|path| path.display().to_string())
        .unwrap_or_else(|_| "?".into())
}

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

    fn bind_node(&self, source: BorrowedFd<'_>, attributes: u64, target: BorrowedFd<'_>) -> Result<()> {
        self.record(
            "bind_node",
            format!("{} -> {} attributes={attributes:#x}", target_name(source), target_name(target)),
        )
    }

    fn restrict_mount(&self, target: BorrowedFd<'_>, attributes: u64) -> Result<()> {
        self.record("restrict_mount", format!("{} attributes={attributes:#x}", target_name(target)))
    }
}

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

fn sorted(set: &CapsHashSet) -> String {
    let mut names: Vec<String> = set.iter().map(Capability::to_string).collect();
    names.sort();
    format!("[{}]", names.join(","))
}
