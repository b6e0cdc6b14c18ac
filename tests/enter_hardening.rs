//! `jailprov enter` against a hostile inhabitant of the jail: the process it runs must not reach
//! the caller's terminal, another process's id maps, the jail's PID 1, or the kernel interfaces
//! Docker's default seccomp profile closes.
//!
//! Each test applies its own jail in a fresh tempdir and runs the real binary for every `enter`;
//! the attacks are small static C programs built with gcc (skipped, loudly, without gcc or libc.a).
#![allow(clippy::disallowed_methods)] // tests build fixtures and jails with plain fs calls

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[macro_use]
mod cli;
use cli::{output, Workspace, UNUSED_ROOT};

/// A jail with bash and a few tools, /proc mounted, `files` (static test programs) installed and
/// `enter` as its `[enter]` table.
fn jailfile(enter: &str, files: &str) -> String {
    format!(
        r#"root = "{UNUSED_ROOT}"
binaries = ["bash", "cat", "id", "ls", "readlink", "sleep"]
exclude = ["/usr/share/doc/**", "/usr/share/man/**"]
devices = ["/dev/null", "/dev/zero"]

[[dirs]]
path = "/tmp"
mode = "1777"

[[dirs]]
path = "/proc"

[[mounts]]
kind = "proc"
target = "/proc"

[[groups]]
name = "jailer"
gid = 1000

[[users]]
name = "jailer"
uid = 1000
gid = 1000
home = "/home/jailer"
shell = "/usr/bin/bash"

{files}

[enter]
{enter}
"#
    )
}

/// A fresh applied jail in its own workspace, made traversable (jail root may be an
/// unprivileged host id), with the build directory of its test programs.
struct Jail {
    workspace: Workspace,
}

impl std::ops::Deref for Jail {
    type Target = Workspace;

    fn deref(&self) -> &Workspace {
        &self.workspace
    }
}

impl Jail {
    fn new(text: &str) -> Jail {
        let workspace = Workspace::new("jailprov-hardening-");
        fs::set_permissions(&workspace.dir, fs::Permissions::from_mode(0o755)).expect("chmod the tempdir");
        workspace.write_jailfile(text);
        workspace.apply();
        Jail { workspace }
    }

    /// `jailprov enter ... -- ARGS` as a Command (stdin closed).
    fn enter_command(&self, args: &[&str]) -> Command {
        let mut command = self.command("enter", &[]);
        command.arg("--").args(args);
        command
    }
}

// ---------------------------------------------------------------------------------------------
// Another process's id maps
// ---------------------------------------------------------------------------------------------

/// Under `unshare --pid --fork` without a /proc of its own, jailprov's child has one pid number
/// for jailprov and another in /proc: writing "/proc/<number jailprov sees>/uid_map" wrote
/// another process's map (or failed on it). jailprov finds the child through its pidfd.
#[test]
fn enter_works_under_unshare_pid_fork() {
    need_root!("enter_works_under_unshare_pid_fork");
    let enter = "user = \"root\"\nnamespaces = [\"mount\", \"pid\", \"net\", \"uts\", \"ipc\", \"user\"]";
    let jail = Jail::new(&jailfile(enter, ""));
    let mut command = Command::new("unshare");
    command.args(["--pid", "--fork"]).arg(cli::BIN).args(jail.enter_command(&[]).get_args());
    command.args(["/usr/bin/bash", "-c", "id -u; cat /proc/self/uid_map"]).current_dir(&jail.dir);
    command.stdin(std::process::Stdio::null());
    let run = output(command).code(0, "enter under unshare --pid --fork");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.first().copied(), Some("0"), "{}", run.describe());
    let map: Vec<&str> = lines.get(1).map(|line| line.split_whitespace().collect()).unwrap_or_default();
    assert_eq!(map, ["0", "1610612736", "65536"], "the unprivileged mapping: {}", run.describe());
}
