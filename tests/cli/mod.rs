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

use std::process::Command;

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
