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

    /// `jailprov SUBCOMMAND -f JAILFILE --root ROOT --state-dir STATE EXTRA` as one line for a shell
    /// (`script -c`); the workspace's tempdir paths hold no spaces.
    pub fn command_line(&self, subcommand: &str, extra: &str) -> String {
        format!(
            "{BIN} {subcommand} -f {} --root {} --state-dir {} {extra}",
            self.jailfile.display(),
            self.root.display(),
            self.state.display()
        )
    }

    /// `text` with the workspace's directory written `[DIR]`, for snapshots.
    pub fn anonymous(&self, text: &str) -> String {
        text.replace(&self.dir.display().to_string(), "[DIR]")
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

/// A Jailfile of `count` small inline files /etc/f01, /etc/f02...: `count + 1` paths to create
/// (/etc too), for output whose length matters.
pub fn inline_files(count: usize) -> String {
    let mut text = String::from("root = \"/unused\"\n");
    for index in 1..=count {
        text.push_str(&format!("[[files]]\npath = \"/etc/f{index:02}\"\ncontent = \"{index}\\n\"\n"));
    }
    text
}

/// Runs the shell command `line` on a pseudo-terminal (`script` from util-linux), `answer` typed
/// into it: its exit code and what the terminal showed, colors stripped, `\r\n` as `\n`, and
/// the terminal's echo of the answer left out (it lands before or after the question by timing).
pub fn on_a_terminal(line: &str, answer: &str) -> (i32, String) {
    use std::io::Write;
    prerequisites::require(&prerequisites::SCRIPT);
    let mut child = Command::new("script")
        .args(["-qec", line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script starts");
    child.stdin.take().expect("piped stdin").write_all(answer.as_bytes()).expect("answer");
    let output = child.wait_with_output().expect("script ends");
    let text = anstream::adapter::strip_str(&String::from_utf8_lossy(&output.stdout)).to_string().replace("\r\n", "\n");
    let typed = answer.trim_end();
    let text = text.replace(&format!("accepted: {typed}\n"), "accepted: ");
    let text: Vec<&str> = text.split_inclusive('\n').filter(|line| line.trim_end() != typed).collect();
    (output.status.code().unwrap_or(-1), text.concat())
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
