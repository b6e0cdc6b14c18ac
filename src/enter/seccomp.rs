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

/// The ioctl request TIOCSTI (fake terminal input), denied on any fd.
pub const TIOCSTI: u64 = libc::TIOCSTI;

/// The filter: everything not listed is allowed; a listed call fails with EPERM.
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
    #[cfg(target_arch = "x86_64")]
    {
        for (_, number) in DENIED {
            rules.insert(number | X32_SYSCALL_BIT, Vec::new());
        }
        for (name, number) in X32_SPECIAL {
            let x32 = number | X32_SYSCALL_BIT;
            rules.insert(x32, if *name == "ioctl" { tiocsti()? } else { Vec::new() });
        }
    }
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .with_context(|| format!("seccomp filters are not supported on {}", std::env::consts::ARCH))?;
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch)
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
            let filter = default_filter()?;
            let sys = RealSys::default();
            sys.set_no_new_privs()?;
            sys.install_seccomp(&filter)?;
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
            }
            Ok(results)
        })
        .join()
        .expect("the seccomp thread does not panic")
        .expect("the filter installs");
        for (name, result, errno) in &outcome {
            let denied = !matches!(name.as_str(), "getpid" | "ioctl FIONREAD");
            if denied {
                assert_eq!((*result, *errno), (-1, libc::EPERM), "{name} must fail with EPERM");
            } else {
                assert_ne!(*errno, libc::EPERM, "{name} must not be denied");
            }
        }
    }
}
