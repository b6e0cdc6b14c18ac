//! `jailprov closure` from its memo (`<state dir>/closure-cache/closure-<format>.memo`): the
//! saved answer is printed only while everything it looked at is as it was. Each test makes one
//! change after a memo answered and expects exactly what a cold run (`JAILPROV_NO_CACHE=1`)
//! prints.
#![allow(clippy::disallowed_methods)] // tests build fixtures with plain fs calls

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "support/prerequisites.rs"]
mod prerequisites;

/// A fresh directory: fixtures, Jailfile.toml and a private state directory.
struct Work {
    _dir: tempfile::TempDir,
    root: PathBuf,
    /// The command each run asks (`closure --format json` unless a test asks `why`).
    question: Vec<&'static str>,
}

/// One closure run: stdout, and whether the memo answered (no closure was computed).
struct Run {
    stdout: String,
    from_memo: bool,
}

impl Work {
    fn new() -> Work {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = fs::canonicalize(dir.path()).expect("canonical tempdir");
        fs::create_dir(root.join("state")).expect("state dir");
        Work { _dir: dir, root, question: vec!["closure", "--format", "json"] }
    }

    fn path(&self, relative: &str) -> String {
        self.root.join(relative).to_str().expect("UTF-8 tempdir").to_owned()
    }

    fn write(&self, relative: &str, content: &str) {
        let path = self.root.join(relative);
        fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        fs::write(path, content).expect("write fixture");
    }

    fn gcc(&self, args: &[&str]) {
        prerequisites::require(&prerequisites::GCC);
        let output = Command::new("gcc").args(args).current_dir(&self.root).output().expect("gcc runs");
        assert!(output.status.success(), "gcc {args:?}:\n{}", String::from_utf8_lossy(&output.stderr));
    }

    /// A shared library `libjpm.so.1` at `relative`, needing libm when `with_libm`.
    fn library(&self, relative: &str, with_libm: bool) -> String {
        let body = if with_libm {
            "#include <math.h>\ndouble jp_m(double x) { return sin(x); }\n"
        } else {
            "double jp_m(double x) { return x; }\n"
        };
        self.write("src/jpm.c", body);
        let out = self.path(relative);
        fs::create_dir_all(Path::new(&out).parent().expect("a parent")).expect("mkdir");
        let mut args = vec!["-shared", "-fPIC", "-Wl,-soname,libjpm.so.1", "-o", &out, "src/jpm.c"];
        if with_libm {
            args.push("-lm");
        }
        self.gcc(&args);
        out
    }

    /// An executable `bin/app` needing libjpm.so.1, with an RPATH of `first:second` (absolute).
    fn app(&self, lib: &str, rpath: &str) -> String {
        self.write("src/app.c", "double jp_m(double);\nint main(void) { return (int)jp_m(1.0); }\n");
        let exe = self.path("bin/app");
        fs::create_dir_all(self.path("bin")).expect("mkdir bin");
        self.gcc(&["-o", &exe, "src/app.c", lib, &format!("-Wl,-rpath,{rpath}")]);
        exe
    }

    fn run(&self, cold: bool) -> Run {
        self.run_args(&self.question, cold)
    }

    fn run_args(&self, args: &[&str], cold: bool) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_jailprov"));
        command.args(args).args(["-f", "Jailfile.toml", "--state-dir", "state"]);
        command.current_dir(&self.root).env("JAILPROV_TIMINGS", "1").env_remove("JAILPROV_NO_CACHE");
        if cold {
            command.env("JAILPROV_NO_CACHE", "1");
        }
        let output = command.output().expect("jailprov runs");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "closure failed:\n{stderr}");
        let computed = stderr.lines().any(|line| line.contains("timing: closure:") || line.contains("memo: write"));
        Run { stdout: String::from_utf8_lossy(&output.stdout).into_owned(), from_memo: !computed }
    }

    /// Runs twice: the second must answer from the memo the first wrote (or answered from),
    /// after a pause (a file changed moments before a run keeps it from writing a memo: see
    /// `HostFs::observing`). Returns the memo's answer.
    fn memo_answers(&self) -> String {
        std::thread::sleep(std::time::Duration::from_millis(120));
        let first = self.run(false);
        let second = self.run(false);
        assert!(second.from_memo, "the second run answers from the memo");
        assert_eq!(second.stdout, first.stdout, "the memo prints what was computed");
        second.stdout
    }

    /// After a change: the next run is computed, equal to a cold run, and differs from `before`.
    fn assert_follows_the_change(&self, before: &str, what: &str) {
        let after = self.run(false);
        assert!(!after.from_memo, "{what}: the memo must not answer");
        assert_eq!(after.stdout, self.run(true).stdout, "{what}: as a cold run");
        assert_ne!(after.stdout, before, "{what}: the closure changed");
    }
}

fn jailfile_for(exe: &str) -> String {
    format!("root = \"/srv/jails/t\"\nbinaries = [\"{exe}\"]\n")
}

#[test]
fn a_library_replaced_in_place_with_the_same_size_and_mtime_is_seen() {
    let work = Work::new();
    let lib = work.library("lib/libjpm.so.1", false);
    let exe = work.app(&lib, &work.path("lib"));
    work.write("Jailfile.toml", &jailfile_for(&exe));
    // The replacement (needing libm) built aside, padded to one size, given the same mtime.
    let other = work.library("aside/libjpm.so.1", true);
    let size = fs::metadata(&lib).expect("lib").len().max(fs::metadata(&other).expect("other").len());
    for file in [&lib, &other] {
        fs::OpenOptions::new().write(true).open(file).expect("open").set_len(size).expect("pad");
    }
    let before = work.memo_answers();
    assert!(!before.contains("libm.so.6"), "the first library needs no libm");
    let mtime = fs::metadata(&lib).expect("lib").modified().expect("mtime");
    fs::File::options().write(true).open(&other).expect("open").set_modified(mtime).expect("set mtime");
    fs::rename(&other, &lib).expect("replace the library");
    work.assert_follows_the_change(&before, "a library replaced in place");
}

/// `bin/app` with an RPATH of `first:second` and its library in `second` (`first` empty), the
/// memo's answer about it (which must name the library in `second`).
fn library_in_the_second_rpath_dir(work: &Work) -> String {
    let lib = work.library("second/libjpm.so.1", false);
    let exe = work.app(&lib, &format!("{}:{}", work.path("first"), work.path("second")));
    fs::create_dir(work.path("first")).expect("mkdir first");
    work.write("Jailfile.toml", &jailfile_for(&exe));
    let before = work.memo_answers();
    assert!(before.contains(&work.path("second/libjpm.so.1")), "found in the second directory: {before}");
    before
}

#[test]
fn a_library_appearing_earlier_in_the_rpath_is_seen() {
    let work = Work::new();
    let before = library_in_the_second_rpath_dir(&work);
    work.library("first/libjpm.so.1", true);
    work.assert_follows_the_change(&before, "a library in the first RPATH directory");
}

#[test]
fn an_edited_jailfile_or_included_file_is_seen() {
    let work = Work::new();
    work.write("base/Jailfile.toml", "binaries = [\"/usr/bin/cat\"]\n");
    work.write(
        "Jailfile.toml",
        "include = [\"base/Jailfile.toml\"]\nroot = \"/srv/jails/t\"\nbinaries = [\"/usr/bin/ls\"]\n",
    );
    let before = work.memo_answers();
    work.write(
        "Jailfile.toml",
        "include = [\"base/Jailfile.toml\"]\nroot = \"/srv/jails/t\"\nbinaries = [\"/usr/bin/env\"]\n",
    );
    work.assert_follows_the_change(&before, "an edited Jailfile");
    let before = work.memo_answers();
    work.write("base/Jailfile.toml", "binaries = [\"/usr/bin/bash\"]\n");
    work.assert_follows_the_change(&before, "an edited included Jailfile");
}

#[test]
fn no_cache_neither_reads_nor_writes_the_memo() {
    let work = Work::new();
    work.write("Jailfile.toml", &jailfile_for("/usr/bin/cat"));
    std::thread::sleep(std::time::Duration::from_millis(120));
    let cold = work.run(true);
    assert!(!cold.from_memo);
    assert!(!Path::new(&work.path("state/closure-cache")).exists(), "a cold run writes nothing");
    work.memo_answers();
    assert!(!work.run(true).from_memo, "a cold run computes even with a memo there");
}

#[test]
fn a_damaged_memo_is_ignored() {
    let work = Work::new();
    work.write("Jailfile.toml", &jailfile_for("/usr/bin/cat"));
    let before = work.memo_answers();
    let memo = work.path("state/closure-cache/closure-json.memo");
    let bytes = fs::read(&memo).expect("memo");
    fs::write(&memo, &bytes[..bytes.len() / 2]).expect("truncate");
    let after = work.run(false);
    assert!(!after.from_memo, "a truncated memo does not answer");
    assert_eq!(after.stdout, before);
}

#[test]
fn why_answers_from_its_memo_and_sees_a_library_appearing_earlier_in_the_rpath() {
    let mut work = Work::new();
    work.question = vec!["why", "libjpm.so.1", "--format", "json"];
    let before = library_in_the_second_rpath_dir(&work);
    let other_question = work.run_args(&["why", "libc.so.6", "--format", "json"], false);
    assert!(!other_question.from_memo, "another path is another question");
    work.library("first/libjpm.so.1", true);
    work.assert_follows_the_change(&before, "why, a library in the first RPATH directory");
}
