//! The default seccomp filter: system calls that rebuild or leave a jail fail with EPERM.
//!
//! A deny list, compiled by seccompiler (rust-vmm) rather than hand-written BPF. Denied: every
//! way to change the mount table (the old and the new mount API), chroot and pivot_root, joining
//! or creating namespaces, the kernel keyring, BPF, ptrace, file handles (open_by_handle_at
//! reaches any inode of a mounted file system), loading kernels or modules, and the TIOCSTI
//! ioctl (typing into the controlling terminal of whoever started jailprov). The x32 ABI
//! numbers of the same calls are denied too: they are the same architecture to seccomp.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use nix::libc;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// The x32 ABI's syscall numbers are the x86_64 ones with this bit set.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

/// Denied outright, whatever their arguments.
pub const DENIED: &[(&str, i64)] = &[
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("setns", libc::SYS_setns),
    ("unshare", libc::SYS_unshare),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("bpf", libc::SYS_bpf),
    ("ptrace", libc::SYS_ptrace),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    // The new mount API: denying mount(2) alone would leave these open.
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
];

/// The x32 numbers of calls whose x32 entry differs from "x86_64 number | X32_SYSCALL_BIT".
#[cfg(target_arch = "x86_64")]
const X32_SPECIAL: &[(&str, i64)] = &[("ioctl", 514), ("ptrace", 521), ("kexec_load", 528)];

/// clone(2) flags that create namespaces: clone with any of them is denied like unshare (a
/// user namespace would hand the jail a fresh set of capabilities to attack the kernel with).
pub const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// The ioctl request TIOCSTI (fake terminal input), denied on any fd.
pub const TIOCSTI: u64 = libc::TIOCSTI;

/// The filters, installed in this order:
/// - [`default_filter`]: the deny list, EPERM;
/// - [`clone3_filter`]: clone3 fails with ENOSYS. Its flags live in memory a filter cannot read,
///   so it cannot be checked for namespace flags as clone is; ENOSYS (not EPERM) makes glibc
///   fall back to clone for threads and posix_spawn, where the flags are checked.
pub fn default_filters() -> Result<Vec<BpfProgram>> {
    Ok(vec![default_filter()?, clone3_filter()?])
}

fn target_arch() -> Result<TargetArch> {
    TargetArch::try_from(std::env::consts::ARCH)
        .with_context(|| format!("seccomp filters are not supported on {}", std::env::consts::ARCH))
}

/// clone3 answers ENOSYS, as on a kernel without it.
pub fn clone3_filter() -> Result<BpfProgram> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    rules.insert(libc::SYS_clone3, Vec::new());
    #[cfg(target_arch = "x86_64")]
    rules.insert(libc::SYS_clone3 | X32_SYSCALL_BIT, Vec::new());
    let filter =
        SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::ENOSYS as u32), target_arch()?)
            .context("building the clone3 filter")?;
    filter.try_into().context("compiling the clone3 filter")
}

/// clone with a namespace flag (one rule per flag: any of them matches).
fn clone_rules() -> Result<Vec<SeccompRule>> {
    CLONE_NAMESPACE_FLAGS
        .iter()
        .map(|flag| {
            let condition = SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(*flag), *flag)
                .context("building a clone condition")?;
            SeccompRule::new(vec![condition]).context("building a clone rule")
        })
        .collect()
}

/// The deny list: everything not listed is allowed; a listed call fails with EPERM.
pub fn default_filter() -> Result<BpfProgram> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_, number) in DENIED {
        // An empty rule list matches the call whatever its arguments.
        rules.insert(*number, Vec::new());
    }
    let tiocsti = || -> Result<Vec<SeccompRule>> {
        let condition = SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, TIOCSTI)
            .context("building the TIOCSTI condition")?;
        Ok(vec![SeccompRule::new(vec![condition]).context("building the TIOCSTI rule")?])
    };
    rules.insert(libc::SYS_ioctl, tiocsti()?);
    rules.insert(libc::SYS_clone, clone_rules()?);
    #[cfg(target_arch = "x86_64")]
    {
        for (_, number) in DENIED {
            rules.insert(number | X32_SYSCALL_BIT, Vec::new());
        }
        rules.insert(libc::SYS_clone | X32_SYSCALL_BIT, clone_rules()?);
        for (name, number) in X32_SPECIAL {
            let x32 = number | X32_SYSCALL_BIT;
            rules.insert(x32, if *name == "ioctl" { tiocsti()? } else { Vec::new() });
        }
    }
    let filter =
        SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), target_arch()?)
            .context("building the seccomp filter")?;
    filter.try_into().context("compiling the seccomp filter")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enter::sys::{RealSys, Sys};

    #[test]
    fn the_issue_s_list_is_denied() {
        let names: Vec<&str> = DENIED.iter().map(|(name, _)| *name).collect();
        for required in [
            "mount",
            "umount2",
            "pivot_root",
            "chroot",
            "setns",
            "unshare",
            "keyctl",
            "bpf",
            "ptrace",
            "open_by_handle_at",
            "kexec_load",
            "init_module",
            "finit_module",
        ] {
            assert!(names.contains(&required), "{required} must be denied");
        }
        assert!(!names.contains(&"execve") && !names.contains(&"ioctl"), "the filter must not break ordinary programs");
        assert_eq!(TIOCSTI, 0x5412);
    }

    /// Installs the filter on a fresh thread (seccomp and no_new_privs are per thread, so the
    /// test harness is untouched) and calls what it denies and what it allows.
    #[test]
    fn the_installed_filter_denies_with_eperm_and_allows_the_rest() {
        let outcome = std::thread::spawn(|| -> Result<Vec<(String, i64, i32)>> {
            let sys = RealSys::default();
            sys.set_no_new_privs()?;
            for filter in default_filters()? {
                sys.install_seccomp(&filter)?;
            }
            let mut results = Vec::new();
            let mut call = |name: &str, result: i64| {
                let errno = if result < 0 { nix::errno::Errno::last_raw() } else { 0 };
                results.push((name.to_owned(), result, errno));
            };
            // SAFETY: each call either fails with EPERM (the point) or has harmless arguments.
            unsafe {
                call("chroot", libc::chroot(c"/".as_ptr()) as i64);
                call("unshare", libc::unshare(0) as i64);
                call("umount2", libc::umount2(c"/nonexistent".as_ptr(), 0) as i64);
                call("ptrace", libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0));
                call("fsopen", libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), 0));
                let mut byte = b'x';
                call("ioctl TIOCSTI", libc::ioctl(0, libc::TIOCSTI, &mut byte) as i64);
                let mut pending: libc::c_int = 0;
                call("ioctl FIONREAD", libc::ioctl(0, libc::FIONREAD, &mut pending) as i64);
                call("getpid", libc::getpid() as i64);
                // Were the filter broken, these would fork the test process: the child leaves at once.
                let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong;
                let cloned = libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0);
                if cloned == 0 {
                    libc::_exit(0);
                }
                call("clone CLONE_NEWUSER", cloned);
                let mut args = [0u64; 11];
                args[4] = libc::SIGCHLD as u64; // exit_signal
                let cloned3 = libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), std::mem::size_of_val(&args));
                if cloned3 == 0 {
                    libc::_exit(0);
                }
                call("clone3", cloned3);
            }
            // Threads still start: glibc falls back from clone3 to clone without namespace flags.
            let thread = std::thread::spawn(|| 42).join();
            results.push(("thread".to_owned(), if thread.is_ok() { 0 } else { -1 }, 0));
            Ok(results)
        })
        .join()
        .expect("the seccomp thread does not panic")
        .expect("the filter installs");
        for (name, result, errno) in &outcome {
            let denied = !matches!(name.as_str(), "getpid" | "ioctl FIONREAD" | "thread" | "clone3");
            if name == "clone3" {
                assert_eq!((*result, *errno), (-1, libc::ENOSYS), "clone3 must look absent");
            } else if name == "thread" {
                assert_eq!(*result, 0, "threads must still start under the filter");
            } else if denied {
                assert_eq!((*result, *errno), (-1, libc::EPERM), "{name} must fail with EPERM");
            } else {
                assert_ne!(*errno, libc::EPERM, "{name} must not be denied");
            }
        }
    }
}
