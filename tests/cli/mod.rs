//! Running the jailprov binary in tests: what one run printed and returned, and `need_root!`
//! (`#[macro_use] mod cli;` from each test crate).
#![allow(dead_code)] // each test crate uses a different subset

/// Returns from a test that needs root, saying so loudly: never a silent pass.
macro_rules! need_root {
    ($name:expr) => {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED {}: needs root", $name);
            return;
        }
    };
}

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What the tests need from the host, each with its Debian package (one copy, shared with
/// tests/support).
#[path = "../support/prerequisites.rs"]
pub mod prerequisites;
/// Trees on disk, snapshotted for comparison.
pub mod tree;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_jailprov");

/// The test Jailfiles' own `root`: never used, every command gets `--root`.
pub const UNUSED_ROOT: &str = "/srv/jails/jailprov-tests-always-pass-root";

/// A fresh 0700 tempdir holding the Jailfile, the jail root (`jail`, not created) and the state
/// directory (`state`); everything goes when it drops. Each suite's `Jail` builds on it.
pub struct Workspace {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub jailfile: PathBuf,
}

impl Workspace {
    /// A workspace in a tempdir named `PREFIX…`, with no Jailfile yet.
    pub fn new(prefix: &str) -> Workspace {
        let tmp = tempfile::Builder::new().prefix(prefix).tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        Workspace {
            root: dir.join("jail"),
            state: dir.join("state"),
            jailfile: dir.join("Jailfile.toml"),
            dir,
            _tmp: tmp,
        }
    }

    pub fn write_jailfile(&self, text: &str) {
        #[allow(clippy::disallowed_methods)] // the test's own Jailfile, outside every jail
        std::fs::write(&self.jailfile, text).expect("write the Jailfile");
    }

    /// `jailprov SUBCOMMAND -f Jailfile --root ROOT --state-dir STATE EXTRA...`, run from the
    /// workspace with stdin closed.
    pub fn command(&self, subcommand: &str, extra: &[&str]) -> Command {
        self.command_at(subcommand, &self.root, extra)
    }

    /// `jailprov enter ... -- ARGS` as a Command (stdin closed).
    pub fn enter_command(&self, args: &[&str]) -> Command {
        let mut command = self.command("enter", &[]);
        command.arg("--").args(args);
        command
    }

    pub fn enter(&self, args: &[&str]) -> Run {
        output(self.enter_command(args))
    }

    /// Like `command` with another `--root`.
    pub fn command_at(&self, subcommand: &str, root: &Path, extra: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .arg(subcommand)
            .arg("-f")
            .arg(&self.jailfile)
            .arg("--root")
            .arg(root)
            .arg("--state-dir")
            .arg(&self.state)
            .args(extra)
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        command
    }

    pub fn run(&self, subcommand: &str, extra: &[&str]) -> Run {
        output(self.command(subcommand, extra))
    }

    /// `jailprov apply`, which must succeed.
    pub fn apply(&self) -> Run {
        self.run("apply", &[]).ok("apply")
    }

    pub fn run_at(&self, subcommand: &str, root: &Path, extra: &[&str]) -> Run {
        output(self.command_at(subcommand, root, extra))
    }

    /// ROOT/rel for a jail path such as "/usr/bin/bash".
    pub fn at(&self, jail_path: &str) -> PathBuf {
        self.root.join(jail_path.trim_start_matches('/'))
    }
}

/// What one jailprov run printed and returned.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn describe(&self) -> String {
        format!("exit {}\n--- stdout:\n{}\n--- stderr:\n{}", self.code, self.stdout, self.stderr)
    }

    /// Asserts exit `code`, returning self for more checks.
    pub fn code(self, code: i32, what: &str) -> Run {
        assert_eq!(self.code, code, "{what}: {}", self.describe());
        self
    }

    pub fn ok(self, what: &str) -> Run {
        self.code(0, what)
    }
}

/// Runs `command` to completion, capturing its output.
pub fn output(mut command: Command) -> Run {
    let output = command.output().unwrap_or_else(|error| panic!("running {command:?}: {error}"));
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The mount points under `root` in this process's mount table, with "ro"/"rw" and the type.
pub fn mounts_under(root: &Path) -> Vec<(String, String, String)> {
    #[allow(clippy::disallowed_methods)] // the test process's own mount table
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let prefix = format!("{}/", root.display());
    table
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let point = fields.get(4)?.strip_prefix(&prefix)?;
            let access = fields.get(5)?.split(',').next()?.to_owned();
            Some((format!("/{point}"), access, after.split(' ').next()?.to_owned()))
        })
        .collect()
}

/// Lazily unmounts whatever is still mounted under a test jail when the test ends, pass or
/// fail, before its tempdir is removed (a removal must never walk into a mounted directory).
pub struct UnmountGuard(pub PathBuf);

impl Drop for UnmountGuard {
    fn drop(&mut self) {
        for _ in 0..8 {
            let mounted = mounts_under(&self.0);
            if mounted.is_empty() {
                return;
            }
            for (point, _, _) in mounted.iter().rev() {
                let path = self.0.join(point.trim_start_matches('/'));
                let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// Builds C `source` into a static `dir/name` (for programs run inside a jail that has no libc);
/// without gcc or a static libc the test fails, naming the package to install.
pub fn build_static(dir: &Path, name: &str, source: &str) -> PathBuf {
    prerequisites::require(&prerequisites::GCC);
    prerequisites::require(&prerequisites::STATIC_LIBC);
    let source_path = dir.join(format!("{name}.c"));
    #[allow(clippy::disallowed_methods)] // the test's own build directory, outside every jail
    std::fs::write(&source_path, source).expect("write the C source");
    let binary = dir.join(name);
    let gcc = Command::new("gcc")
        .arg("-static")
        .arg("-O2")
        .arg("-o")
        .arg(&binary)
        .arg(&source_path)
        .output()
        .unwrap_or_else(|error| panic!("running gcc: {error}"));
    assert!(gcc.status.success(), "gcc -static {name}.c failed: {}", String::from_utf8_lossy(&gcc.stderr));
    binary
}
