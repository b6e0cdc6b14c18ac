//! `include = [...]` (issue #16): a Jailfile built on shared ones, merged, with every problem
//! and every entry named by the file and line it was written on.
#![allow(clippy::disallowed_methods)] // tests build fixtures with plain fs calls

use std::path::Path;
use std::process::Command;

/// A tempdir holding `base/Jailfile.toml` and `app/Jailfile.toml` (the one run).
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new(base: &str, app: &str) -> Tree {
        let tree = Tree { dir: tempfile::tempdir().expect("tempdir") };
        tree.write("base/Jailfile.toml", base);
        tree.write("app/Jailfile.toml", app);
        tree
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.dir.path().join(relative);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write a Jailfile");
    }

    /// `jailprov ARGS -f app/Jailfile.toml`, run in the tree: (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_jailprov"))
            .args(args)
            .args(["-f", "app/Jailfile.toml"])
            .current_dir(self.dir.path())
            .output()
            .expect("jailprov runs");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// stderr of a run that must be refused with exit 1.
    fn refused(&self) -> String {
        let (code, stdout, stderr) = self.run(&["validate"]);
        assert_eq!(code, 1, "refused; stdout: {stdout}\nstderr: {stderr}");
        stderr
    }

    fn path(&self, relative: &str) -> std::path::PathBuf {
        self.dir.path().join(relative)
    }
}

const BASE: &str = "binaries = [\"sh\", \"ls\"]\n\n[[users]]\nname = \"app\"\nuid = 1000\ngid = 1000\n\n[enter]\nhostname = \"base\"\n";

/// Lists add up (the included file's first), an entry in both is kept once, and tables merge
/// key by key.
#[test]
fn included_lists_are_concatenated_without_repeats_and_tables_merged() {
    let tree = Tree::new(
        BASE,
        "include = [\"../base/Jailfile.toml\"]\nroot = \"/srv/jails/app\"\nbinaries = [\"ls\", \"cat\"]\n\n[enter]\nuser = \"app\"\n",
    );
    let (code, stdout, stderr) = tree.run(&["validate"]);
    assert_eq!(code, 0, "stderr: {stderr}");
    insta::assert_snapshot!(stdout, @"app/Jailfile.toml is valid: root /srv/jails/app, 3 binaries, 0 [[files]], 1 user, 0 mounts");
    let (code, closure, stderr) = tree.run(&["closure"]);
    assert_eq!(code, 0, "stderr: {stderr}");
    let declared: Vec<&str> = closure
        .lines()
        .filter(|line| line.starts_with("binary ") && line.trim_end().ends_with(']'))
        .filter_map(|line| line.split_whitespace().last())
        .collect();
    assert_eq!(declared.len(), 3, "sh, ls and cat, ls once: {closure}");
    let from_base = closure.split("written in included Jailfiles:\n").nth(1).unwrap_or_default();
    insta::assert_snapshot!(from_base, @r"
      binaries[0]        base/Jailfile.toml:1:13
      binaries[1]        base/Jailfile.toml:1:19
      users[0]           base/Jailfile.toml:3:1
    ");
}

/// `why` names the file and line an entry was written on, in the included file or the own one.
#[test]
fn why_names_the_included_file_and_line_of_an_entry() {
    let tree = Tree::new(BASE, "include = [\"../base/Jailfile.toml\"]\nbinaries = [\"cat\"]\n");
    let sh = std::fs::canonicalize("/bin/sh").expect("the host has /bin/sh");
    let (code, stdout, stderr) = tree.run(&["why", sh.to_str().expect("UTF-8")]);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.contains("binaries[0] = \"sh\" in base/Jailfile.toml:1:13"), "{stdout}");
    let (_, stdout, _) = tree.run(&["why", "/usr/bin/cat"]);
    assert!(stdout.contains("binaries[2] = \"cat\" in app/Jailfile.toml:2:13"), "{stdout}");
}

/// A key set in two files to different values shows both places.
#[test]
fn a_key_set_twice_to_different_values_shows_both_places() {
    let tree = Tree::new(BASE, "include = [\"../base/Jailfile.toml\"]\n[enter]\nhostname = \"app\"\n");
    insta::assert_snapshot!(tree.refused());
}

/// An include cycle names its chain.
#[test]
fn an_include_cycle_names_the_chain() {
    let tree =
        Tree::new(&format!("include = [\"../app/Jailfile.toml\"]\n{BASE}"), "include = [\"../base/Jailfile.toml\"]\n");
    insta::assert_snapshot!(tree.refused());
}

/// A missing include names the including file and line.
#[test]
fn a_missing_include_names_the_including_file_and_line() {
    let tree = Tree::new(
        BASE,
        "root = \"/srv/jails/app\"\ninclude = [\"../base/Jailfile.toml\", \"../common/Jailfile.toml\"]\n",
    );
    insta::assert_snapshot!(tree.refused());
}

/// Problems of an included file are placed in it, among those of the including file.
#[test]
fn a_typo_in_an_included_file_is_placed_in_that_file() {
    let tree = Tree::new(
        "binaries = [\"sh\"]\nexlude = [\"/x\"]\n",
        "include = [\"../base/Jailfile.toml\"]\nrot = \"/srv\"\n",
    );
    insta::assert_snapshot!(tree.refused());
}

/// The lock's Jailfile digest covers the included files: editing one makes the lock stale.
#[test]
fn the_lock_changes_when_an_included_file_changes() {
    let tree = Tree::new(BASE, "include = [\"../base/Jailfile.toml\"]\n");
    let state = tree.path("state");
    let state = state.to_str().expect("UTF-8");
    let digest = |tree: &Tree| {
        let (code, _, stderr) = tree.run(&["lock", "--state-dir", state]);
        assert_eq!(code, 0, "lock: {stderr}");
        let lock = std::fs::read_to_string(tree.path("app/Jailfile.lock")).expect("the lock");
        let value: serde_json::Value = serde_json::from_str(&lock).expect("the lock is JSON");
        value["jailfile"].as_str().expect("a digest").to_owned()
    };
    let before = digest(&tree);
    assert_eq!(before, digest(&tree), "nothing changed, the digest stays");
    tree.write("base/Jailfile.toml", &BASE.replace("\"base\"", "\"edited\""));
    assert_ne!(before, digest(&tree), "an edit of the included file is an edit of the Jailfile");
    assert!(Path::new(&tree.path("app/Jailfile.lock")).exists());
}
