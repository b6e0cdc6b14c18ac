//! `jailprov plan`, `apply` and `destroy` against real jails on this host's disk.
//!
//! Every test runs the real binary as root on a fresh temporary directory (0700, root-owned, in
//! /tmp), always with `--root` and `--state-dir` inside it, writes its Jailfiles there, and checks
//! what a user would see: exit codes, output, and the files in the jail. The jails are built from
//! the host's own programs (bash, ls, cat, id, env, /usr/share/zoneinfo). Without root each test
//! prints `SKIPPED <name>: needs root` and passes (CI runs them as root).
#![allow(clippy::disallowed_methods)] // tests build fixtures and jails with plain fs calls

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read as _;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[macro_use]
mod cli;
use cli::tree::{jail_name, tree, walk};
use cli::{mounts_under, output, UnmountGuard, Workspace, BIN, UNUSED_ROOT};

/// The inline /etc/motd of the seed-shell-like jails.
const MOTD: &str = "You are inside the test jail.\n";

/// The seed-shell example's programs.
const SEED_BINARIES: [&str; 5] = ["bash", "ls", "cat", "id", "env"];

// ---------------------------------------------------------------------------------------------
// Jailfiles
// ---------------------------------------------------------------------------------------------

/// A seed-shell-like Jailfile: `binaries`, devices, a sticky /tmp, an inline motd, a user.
fn seed_like(binaries: &[&str]) -> String {
    let list: Vec<String> = binaries.iter().map(|binary| format!("\"{binary}\"")).collect();
    format!(
        r#"root = "{UNUSED_ROOT}"
binaries = [{}]
exclude = ["/usr/share/doc/**", "/usr/share/man/**"]
devices = ["/dev/null", "/dev/zero", "/dev/urandom", "/dev/tty"]

[[dirs]]
path = "/tmp"
mode = "1777"

[[files]]
path = "/etc/motd"
mode = "0644"
content = "You are inside the test jail.\n"

[[groups]]
name = "jailer"
gid = 1000

[[users]]
name = "jailer"
uid = 1000
gid = 1000
home = "/home/jailer"
shell = "/usr/bin/bash"
"#,
        list.join(", ")
    )
}

/// The seed programs plus all of /usr/share/zoneinfo: over a thousand paths, an apply of a second
/// or more (every file is fsynced).
fn big_jailfile() -> String {
    format!("{}\n[[files]]\nsrc = \"/usr/share/zoneinfo/**\"\n", seed_like(&SEED_BINARIES))
}

// ---------------------------------------------------------------------------------------------
// Running jailprov
// ---------------------------------------------------------------------------------------------

/// A fresh workspace (tests/cli) with its Jailfile written.
struct Jail(Workspace);

impl std::ops::Deref for Jail {
    type Target = Workspace;

    fn deref(&self) -> &Workspace {
        &self.0
    }
}

impl Jail {
    fn new(jailfile: &str) -> Jail {
        let jail = Jail(Workspace::new("jailprov-apply-"));
        jail.write_jailfile(jailfile);
        jail
    }

    /// Asserts `plan --detailed-exitcode` exits 0 and says "No changes.".
    fn assert_clean(&self, when: &str) {
        let plan = self.run("plan", &["--detailed-exitcode"]).code(0, &format!("plan {when}"));
        assert!(plan.stdout.contains("No changes."), "plan {when}: {}", plan.describe());
    }

    fn plan_json(&self) -> serde_json::Value {
        let plan = self.run("plan", &["--format", "json"]).ok("plan --format json");
        serde_json::from_str(&plan.stdout).unwrap_or_else(|error| panic!("plan JSON: {error}: {}", plan.stdout))
    }

    /// Runs a jailprov command in the background, output discarded.
    fn spawn(&self, subcommand: &str, extra: &[&str]) -> Child {
        self.command(subcommand, extra).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("jailprov starts")
    }
}

/// The `(action, path)` pairs of a JSON plan.
fn json_changes(plan: &serde_json::Value) -> Vec<(String, String)> {
    plan["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("no changes array: {plan}"))
        .iter()
        .map(|change| {
            (change["action"].as_str().unwrap_or("?").to_owned(), change["path"].as_str().unwrap_or("?").to_owned())
        })
        .collect()
}

/// Whether `text` names `file` with a line and a column: `Jailfile.toml:12:3`.
fn names_line_and_column(text: &str, file: &str) -> bool {
    let pattern = format!("{file}:");
    text.match_indices(&pattern).any(|(at, _)| {
        let rest = &text[at + pattern.len()..];
        let line: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let after = &rest[line.len()..];
        let column: String = after.strip_prefix(':').unwrap_or("").chars().take_while(char::is_ascii_digit).collect();
        !line.is_empty() && !column.is_empty()
    })
}

// ---------------------------------------------------------------------------------------------
// Looking at trees on disk (never following a symlink)
// ---------------------------------------------------------------------------------------------

/// Every path under `root` with (inode, mtime ns, ctime ns): what changes when anything is
/// rewritten, replaced or even chmod-ed.
fn stats(root: &Path) -> BTreeMap<String, (u64, i128, i128)> {
    let mut stats = BTreeMap::new();
    walk(root, &mut |path, metadata| {
        let mtime = i128::from(metadata.mtime()) * 1_000_000_000 + i128::from(metadata.mtime_nsec());
        let ctime = i128::from(metadata.ctime()) * 1_000_000_000 + i128::from(metadata.ctime_nsec());
        stats.insert(jail_name(root, path), (metadata.ino(), mtime, ctime));
    });
    stats
}

fn paths(root: &Path) -> BTreeSet<String> {
    tree(root).into_keys().collect()
}

fn temp_files(root: &Path) -> Vec<String> {
    paths(root)
        .into_iter()
        .filter(|path| path.rsplit('/').next().is_some_and(|name| name.starts_with(".jailprov-tmp-")))
        .collect()
}

fn is_real_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|metadata| metadata.is_dir())
}

fn is_regular_file(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|metadata| metadata.is_file())
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap_or_else(|error| panic!("lstat {}: {error}", path.display())).mode() & 0o7777
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create parents");
    }
    fs::write(path, text).unwrap_or_else(|error| panic!("write {}: {error}", path.display()));
}

fn append(path: &Path, text: &str) {
    let mut file = fs::OpenOptions::new().append(true).open(path).expect("open for append");
    std::io::Write::write_all(&mut file, text.as_bytes()).expect("append");
}

// ---------------------------------------------------------------------------------------------
// 1. Idempotence
// ---------------------------------------------------------------------------------------------

#[test]
fn second_apply_changes_nothing_not_even_a_timestamp() {
    need_root!("second_apply_changes_nothing_not_even_a_timestamp");
    let jail = Jail::new(&seed_like(&SEED_BINARIES));
    let first = jail.apply();
    assert!(first.stdout.contains("Apply complete:"), "{}", first.describe());
    assert!(is_regular_file(&jail.at("/usr/bin/bash")));
    jail.assert_clean("right after apply");

    let before = stats(&jail.root);
    assert!(before.contains_key("/usr/bin/bash") && before.contains_key("/etc/motd"), "{before:?}");
    let second = jail.apply();
    assert!(second.stdout.contains("No changes"), "{}", second.describe());
    assert_eq!(stats(&jail.root), before, "the second apply touched the jail (inode, mtime or ctime changed)");
    jail.assert_clean("after the second apply");
    assert_eq!(stats(&jail.root), before, "plan touched the jail");
}

// ---------------------------------------------------------------------------------------------
// 2. A no-op plan reads no copied file
// ---------------------------------------------------------------------------------------------

/// The jail paths `jailprov plan` opened (not O_PATH, not a directory), from `strace -y`, which
/// prints the path each returned descriptor refers to (also for /proc/self/fd/N reopens).
fn files_opened_by_plan(jail: &Jail, log: &Path) -> BTreeSet<String> {
    let mut command = Command::new("strace");
    command.args(["-f", "-y", "-qq", "-e", "trace=open,openat,openat2", "-o"]).arg(log).arg(BIN);
    command.args(["plan", "-f"]).arg(&jail.jailfile).arg("--root").arg(&jail.root).arg("--state-dir").arg(&jail.state);
    let run = output(command).ok("strace jailprov plan");
    assert!(run.stdout.contains("No changes."), "{}", run.describe());
    let prefix = format!("{}/", jail.root.display());
    whole_calls(&read(log))
        .iter()
        .filter(|call| !call.contains("O_PATH") && !call.contains("O_DIRECTORY"))
        .filter_map(|call| {
            // `... ) = 6</tmp/x/jail/etc/motd>`
            let (_, result) = call.rsplit_once(" = ")?;
            let (_, path) = result.split_once('<')?;
            let path = path.strip_suffix('>')?;
            path.strip_prefix(&prefix).map(|relative| format!("/{relative}"))
        })
        .collect()
}

/// strace's lines with each interrupted call joined again: when two threads' calls interleave,
/// strace prints `PID openat(..., O_PATH <unfinished ...>` and later `PID <... openat resumed>)
/// = 6</path>`; judged apart, the second half would lose the first half's flags.
fn whole_calls(log: &str) -> Vec<String> {
    let mut pending: BTreeMap<&str, &str> = BTreeMap::new();
    let mut calls = Vec::new();
    for line in log.lines() {
        let pid = line.split_whitespace().next().unwrap_or_default();
        if let Some(start) = line.strip_suffix("<unfinished ...>") {
            pending.insert(pid, start);
        } else if let Some((_, rest)) = line.split_once(" resumed>") {
            let start = pending.remove(pid).unwrap_or_default();
            calls.push(format!("{start}{rest}"));
        } else {
            calls.push(line.to_owned());
        }
    }
    calls
}

#[test]
fn no_op_plan_never_opens_a_copied_file() {
    need_root!("no_op_plan_never_opens_a_copied_file");
    cli::prerequisites::require(&cli::prerequisites::STRACE);
    let jail = Jail::new(&seed_like(&SEED_BINARIES));
    jail.apply();
    let opened = files_opened_by_plan(&jail, &jail.dir.join("strace-1.log"));
    // Inline and generated files are small and compared by content; every copy of a host file
    // must be vouched for by its recorded stat.
    let inline: BTreeSet<&str> = ["/etc/motd", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf"].into();
    let copied: Vec<&String> = opened.iter().filter(|path| !inline.contains(path.as_str())).collect();
    assert!(copied.is_empty(), "a no-op plan opened copied files of the jail: {copied:?} (all opened: {opened:?})");

    // The check can fail: once bash's ctime moves (chmod to the same mode), plan must read it.
    fs::set_permissions(jail.at("/usr/bin/bash"), fs::Permissions::from_mode(mode_of(&jail.at("/usr/bin/bash"))))
        .expect("chmod");
    let opened = files_opened_by_plan(&jail, &jail.dir.join("strace-2.log"));
    assert!(
        opened.contains("/usr/bin/bash"),
        "the strace check sees no open of bash after its ctime moved: {opened:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Incremental changes
// ---------------------------------------------------------------------------------------------

#[test]
fn adding_then_removing_a_binary_is_exactly_one_create_then_one_delete() {
    need_root!("adding_then_removing_a_binary_is_exactly_one_create_then_one_delete");
    let without_cat = seed_like(&["bash", "ls", "id", "env"]);
    let jail = Jail::new(&without_cat);
    jail.apply();
    let before = paths(&jail.root);
    assert!(!before.contains("/usr/bin/cat"));

    jail.write_jailfile(&seed_like(&["bash", "ls", "id", "env", "cat"]));
    let plan = jail.plan_json();
    assert_eq!(
        json_changes(&plan),
        [("create".to_owned(), "/usr/bin/cat".to_owned())],
        "cat needs only libc, which is there: {plan:#}"
    );
    assert_eq!(plan["conflicts"], serde_json::json!([]), "{plan:#}");
    jail.apply();
    assert!(is_regular_file(&jail.at("/usr/bin/cat")));
    jail.assert_clean("after adding cat");

    jail.write_jailfile(&without_cat);
    let plan = jail.plan_json();
    assert_eq!(json_changes(&plan), [("delete".to_owned(), "/usr/bin/cat".to_owned())], "{plan:#}");
    let text = jail.run("plan", &[]).ok("plan");
    assert!(text.stdout.contains("-   file     /usr/bin/cat"), "{}", text.describe());
    assert!(text.stdout.contains("Plan: 0 to create, 0 to update, 1 to delete."), "{}", text.describe());
    jail.apply();
    assert_eq!(paths(&jail.root), before, "removing cat again must give back exactly the jail before it was added");
    jail.assert_clean("after removing cat");
}

/// Jailfile.lock is written only when its bytes change: an apply that repairs the jail alone
/// (the host gives what the lock says) leaves the very file in place, as does the plan after it;
/// the record takes a few bytes in its journal, never a rewrite of the whole snapshot.
#[test]
fn an_apply_that_changes_only_the_jail_rewrites_neither_the_lock_nor_the_record() {
    need_root!("an_apply_that_changes_only_the_jail_rewrites_neither_the_lock_nor_the_record");
    let jail = Jail::new(&seed_like(&["cat"]));
    jail.apply();
    let lock = jail.dir.join("Jailfile.lock");
    let snapshot = fs::read_dir(&jail.state)
        .expect("the state directory")
        .map(|entry| entry.expect("an entry").path())
        .find(|path| path.extension().is_some_and(|extension| extension == "state"))
        .expect("a snapshot of the record");
    let identity = |path: &Path| {
        let metadata = fs::metadata(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        (metadata.ino(), metadata.mtime(), metadata.mtime_nsec(), metadata.size())
    };
    let (lock_before, snapshot_before) = (identity(&lock), identity(&snapshot));
    fs::remove_file(jail.at("/etc/motd")).expect("remove a managed file");
    let run = jail.apply();
    assert!(run.stdout.contains("Apply complete: 1 created"), "{}", run.describe());
    jail.assert_clean("after the repair");
    assert_eq!(identity(&lock), lock_before, "Jailfile.lock was rewritten with the same bytes");
    assert_eq!(identity(&snapshot), snapshot_before, "the whole record was rewritten for one path");
}

// ---------------------------------------------------------------------------------------------
// 4. Foreign data survives apply and destroy
// ---------------------------------------------------------------------------------------------

#[test]
fn foreign_files_survive_apply_and_destroy() {
    need_root!("foreign_files_survive_apply_and_destroy");
    let jail = Jail::new(&seed_like(&SEED_BINARIES));
    write(&jail.at("/tmp/mine.txt"), "mine, not jailprov's\n");
    write(&jail.at("/home/foreign-dir/x"), "x\u{0}binary\n");
    let foreign = |jail: &Jail| {
        let all = tree(&jail.root);
        ["/tmp/mine.txt", "/home/foreign-dir", "/home/foreign-dir/x"]
            .map(|path| (path, all.get(path).cloned().unwrap_or_else(|| panic!("{path} vanished: {all:#?}"))))
    };
    let before = foreign(&jail);

    jail.apply();
    assert_eq!(foreign(&jail), before, "apply changed foreign files");
    assert!(is_regular_file(&jail.at("/usr/bin/bash")));
    assert_eq!(mode_of(&jail.at("/tmp")), 0o1777, "the existing /tmp is kept in shape");
    jail.assert_clean("after apply");

    let destroy = jail.run("destroy", &["--yes", "-v"]).ok("destroy");
    assert_eq!(foreign(&jail), before, "destroy changed foreign files");
    assert!(destroy.stdout.contains("-   file     /usr/bin/bash"), "{}", destroy.describe());
    let kept =
        destroy.stdout.split_once("Kept ").map(|(_, kept)| kept).unwrap_or_else(|| panic!("{}", destroy.describe()));
    for dir in ["/tmp", "/home"] {
        assert!(
            kept.lines().any(|line| line.trim_start().starts_with(dir)),
            "{dir} not listed as kept: {}",
            destroy.describe()
        );
    }
    for gone in ["/usr/bin/bash", "/usr", "/etc/motd", "/etc", "/dev/null", "/bin", "/lib", "/home/jailer"] {
        assert!(fs::symlink_metadata(jail.at(gone)).is_err(), "destroy left {gone}: {}", destroy.describe());
    }
    let left = paths(&jail.root);
    let expected: BTreeSet<String> =
        ["/", "/tmp", "/tmp/mine.txt", "/home", "/home/foreign-dir", "/home/foreign-dir/x"].map(String::from).into();
    assert_eq!(left, expected, "destroy must remove exactly what jailprov created");
}

/// A foreign file two levels below a directory jailprov created: both directories stay, and
/// stay jailprov's, so that a later destroy removes them once the foreign file is gone.
#[test]

fn destroy_keeps_track_of_parents_of_kept_directories() {
    need_root!("destroy_keeps_track_of_parents_of_kept_directories");
    let jail = Jail::new(&seed_like(&SEED_BINARIES));
    jail.apply();
    write(&jail.at("/usr/bin/foreign"), "foreign\n");
    let destroy = jail.run("destroy", &["--yes"]).ok("destroy with a foreign file in /usr/bin");
    assert_eq!(read(&jail.at("/usr/bin/foreign")), "foreign\n");
    assert!(
        !destroy.stdout.lines().any(|line| line.trim_end() == "-   dir      /usr"),
        "destroy claims to have destroyed /usr, which still holds /usr/bin: {}",
        destroy.describe()
    );
    fs::remove_file(jail.at("/usr/bin/foreign")).expect("remove the foreign file");
    let destroy = jail.run("destroy", &["--yes"]).ok("destroy once the foreign file is gone");
    assert!(
        !jail.at("/usr").exists(),
        "jailprov created /usr, yet it stays after everything foreign is gone: {}",
        destroy.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Drift is shown and repaired
// ---------------------------------------------------------------------------------------------

#[test]
fn drift_in_content_mode_and_symlink_target_is_shown_and_repaired() {
    need_root!("drift_in_content_mode_and_symlink_target_is_shown_and_repaired");
    let jail = Jail::new(&seed_like(&SEED_BINARIES));
    jail.apply();
    let lib_target = fs::read_link(jail.at("/lib")).expect("/lib is a symlink in a usr-merged jail");
    assert_eq!(lib_target, Path::new("usr/lib"));
    let repaired = tree(&jail.root);

    append(&jail.at("/etc/motd"), "a line from inside the jail\n");
    fs::set_permissions(jail.at("/usr/bin/bash"), fs::Permissions::from_mode(0o777)).expect("chmod");
    fs::remove_file(jail.at("/lib")).expect("rm /lib");
    symlink("usr/elsewhere", jail.at("/lib")).expect("ln -s");

    let plan = jail.run("plan", &["--detailed-exitcode"]).code(2, "plan with drift");
    for expected in [
        "~   file     /etc/motd (content)",
        "--- /etc/motd (jail)",
        "+++ /etc/motd (Jailfile)",
        "-a line from inside the jail",
        "~   file     /usr/bin/bash (mode 0777 -> 0755)",
        "~   symlink  /lib (target usr/elsewhere -> usr/lib)",
        "Plan: 0 to create, 3 to update, 0 to delete.",
    ] {
        assert!(plan.stdout.contains(expected), "plan lacks {expected:?}: {}", plan.describe());
    }
    let json = jail.plan_json();
    let updates: Vec<(String, String)> = json_changes(&json);
    assert_eq!(
        updates,
        [("update", "/etc/motd"), ("update", "/lib"), ("update", "/usr/bin/bash")]
            .map(|(action, path)| (action.to_owned(), path.to_owned())),
        "{json:#}"
    );

    let apply = jail.apply();
    assert!(apply.stdout.contains("0 created, 3 updated, 0 deleted"), "{}", apply.describe());
    assert_eq!(read(&jail.at("/etc/motd")), MOTD);
    assert_eq!(mode_of(&jail.at("/usr/bin/bash")), 0o755);
    assert_eq!(fs::read_link(jail.at("/lib")).expect("readlink"), Path::new("usr/lib"));
    assert_eq!(tree(&jail.root), repaired, "the repaired jail differs from the freshly applied one");
    jail.assert_clean("after the repair");
}

// ---------------------------------------------------------------------------------------------
// 6. Conflicts with foreign files
// ---------------------------------------------------------------------------------------------

#[test]
fn foreign_file_at_a_wanted_path_is_a_conflict_until_adopted() {
    need_root!("foreign_file_at_a_wanted_path_is_a_conflict_until_adopted");
    let jail = Jail::new(&seed_like(&SEED_BINARIES));
    write(&jail.at("/etc/motd"), "the admin's own motd\n");

    let plan = jail.run("plan", &["--detailed-exitcode"]).code(2, "plan with a conflict");
    let conflicts =
        plan.stdout.split_once("Conflicts:").map(|(_, rest)| rest).unwrap_or_else(|| panic!("{}", plan.describe()));
    assert!(conflicts.contains("/etc/motd: not created by jailprov"), "{}", plan.describe());
    let json = jail.plan_json();
    assert_eq!(json["conflicts"][0]["path"], "/etc/motd", "{json:#}");

    let before = tree(&jail.root);
    let apply = jail.run("apply", &[]).code(1, "apply over a conflict");
    assert!(apply.stderr.contains("/etc/motd"), "{}", apply.describe());
    assert!(apply.stderr.contains("--adopt"), "{}", apply.describe());
    assert_eq!(tree(&jail.root), before, "a refused apply changed the jail");
    assert_eq!(read(&jail.at("/etc/motd")), "the admin's own motd\n");

    let adopt = jail.run("apply", &["--adopt"]).ok("apply --adopt");
    assert!(adopt.stdout.contains("/etc/motd"), "{}", adopt.describe());
    assert_eq!(read(&jail.at("/etc/motd")), MOTD);
    assert!(is_regular_file(&jail.at("/usr/bin/bash")));
    jail.assert_clean("after adopting");
}

// ---------------------------------------------------------------------------------------------
// 7. Symlinks planted in the jail
// ---------------------------------------------------------------------------------------------

#[test]
fn symlinks_planted_over_managed_dirs_never_lead_outside() {
    need_root!("symlinks_planted_over_managed_dirs_never_lead_outside");
    let jail = Jail::new(&seed_like(&SEED_BINARIES));
    jail.apply();
    let outside_lib = jail.dir.join("outside-lib");
    let outside_etc = jail.dir.join("outside-etc");
    write(&outside_lib.join("canary"), "do not touch\n");
    write(&outside_lib.join("x86_64-linux-gnu/keep"), "keep\n");
    write(&outside_etc.join("motd"), "the host's motd\n");
    let outside = || (tree(&outside_lib), tree(&outside_etc));
    let host_before = outside();

    fs::remove_dir_all(jail.at("/usr/lib")).expect("rm -r /usr/lib");
    symlink(&outside_lib, jail.at("/usr/lib")).expect("plant /usr/lib");
    fs::remove_dir_all(jail.at("/etc")).expect("rm -r /etc");
    symlink(&outside_etc, jail.at("/etc")).expect("plant /etc");

    let plan = jail.run("plan", &[]);
    assert_eq!(outside(), host_before, "plan wrote outside the jail: {}", plan.describe());
    let apply = jail.run("apply", &[]);
    assert_eq!(outside(), host_before, "apply wrote outside the jail: {}", apply.describe());
    if apply.code == 0 {
        eprintln!("symlinks_planted_over_managed_dirs_never_lead_outside: apply repaired the jail");
        assert!(is_real_dir(&jail.at("/usr/lib")), "/usr/lib is still not a directory");
        assert!(is_real_dir(&jail.at("/etc")), "/etc is still not a directory");
        assert!(is_regular_file(&jail.at("/usr/lib/x86_64-linux-gnu/libc.so.6")), "libc is missing");
        assert_eq!(read(&jail.at("/etc/motd")), MOTD);
        jail.assert_clean("after the repair");
    } else {
        eprintln!("symlinks_planted_over_managed_dirs_never_lead_outside: apply refused: {}", apply.stderr);
        assert_eq!(apply.code, 1, "{}", apply.describe());
        assert!(apply.stderr.contains("symlink"), "the refusal must say why: {}", apply.describe());
    }

    // Planted again, then destroy: the links go, what they point to stays.
    fs::remove_dir_all(jail.at("/usr/lib")).ok();
    let _ = fs::remove_file(jail.at("/usr/lib"));
    symlink(&outside_lib, jail.at("/usr/lib")).expect("plant /usr/lib again");
    let destroy = jail.run("destroy", &["--yes"]);
    assert_eq!(outside(), host_before, "destroy deleted outside the jail: {}", destroy.describe());
    assert!(fs::symlink_metadata(jail.at("/usr/bin/bash")).is_err() || destroy.code != 0, "{}", destroy.describe());
}

// ---------------------------------------------------------------------------------------------
// 8. SIGKILL at any moment, then apply converges
// ---------------------------------------------------------------------------------------------

#[test]
fn apply_killed_at_any_moment_converges_on_the_next_apply() {
    need_root!("apply_killed_at_any_moment_converges_on_the_next_apply");
    let reference = Jail::new(&big_jailfile());
    reference.apply();
    let want = tree(&reference.root);
    assert!(want.len() > 1000, "the zoneinfo jail is small: {} paths", want.len());
    drop(reference);

    // Startup (closure of ~1300 paths) takes a while before the first write: short delays kill
    // before or while the state is written, long ones in the middle of the copies.
    let delays_ms = [5u64, 10, 20, 40, 80, 160, 300, 500, 800];
    let mut interrupted_with_work_left = 0;
    let mut temporaries_seen = 0;
    let mut jails = Vec::new();
    for delay in delays_ms {
        let jail = Jail::new(&big_jailfile());
        // Kill the first apply, then the apply that recovers from it.
        for round in 0..2 {
            let mut child = jail.spawn("apply", &[]);
            std::thread::sleep(Duration::from_millis(delay * (round + 1)));
            let _ = child.kill();
            let _ = child.wait();
        }
        if jail.root.exists() {
            temporaries_seen += temp_files(&jail.root).len();
        }
        let plan = jail.run("plan", &["--detailed-exitcode"]);
        assert_ne!(plan.code, 1, "plan after a kill at {delay} ms fails: {}", plan.describe());
        if plan.code == 2 {
            interrupted_with_work_left += 1;
        }
        jails.push((delay, jail));
    }
    for (delay, jail) in &jails {
        jail.run("apply", &[]).ok(&format!("apply after a kill at {delay} ms"));
        jail.assert_clean(&format!("after recovering from a kill at {delay} ms"));
        assert_eq!(temp_files(&jail.root), Vec::<String>::new(), "temporaries left after the kill at {delay} ms");
        let got = tree(&jail.root);
        if got != want {
            let differ: Vec<&String> =
                want.keys().chain(got.keys()).filter(|path| want.get(*path) != got.get(*path)).collect();
            panic!("after a kill at {delay} ms and a new apply, these paths differ from an uninterrupted apply: {differ:?}");
        }
    }
    eprintln!(
        "apply_killed_at_any_moment_converges_on_the_next_apply: {interrupted_with_work_left}/{} kills left work, \
         {temporaries_seen} temporaries seen",
        delays_ms.len()
    );
    assert!(interrupted_with_work_left > 0, "no kill landed before the apply finished: the test exercised nothing");
}

// ---------------------------------------------------------------------------------------------
// 9. Bad Jailfiles leave the jail untouched
// ---------------------------------------------------------------------------------------------

/// `good` with `from` replaced by `to` (which must occur).
fn edited(good: &str, from: &str, to: &str) -> String {
    assert!(good.contains(from), "{from:?} is not in the Jailfile");
    good.replacen(from, to, 1)
}

#[test]
fn bad_jailfile_is_refused_with_its_place_and_changes_nothing() {
    need_root!("bad_jailfile_is_refused_with_its_place_and_changes_nothing");
    let good = seed_like(&SEED_BINARIES);
    let jail = Jail::new(&good);
    jail.apply();
    let before = tree(&jail.root);
    let bad = [
        ("relative path", format!("{good}\n[[dirs]]\npath = \"data\"\n")),
        ("escaping path", format!("{good}\n[[files]]\npath = \"/etc/../../x\"\ncontent = \"x\"\n")),
        ("bad mode", edited(&good, "mode = \"1777\"", "mode = \"1797\"")),
        ("duplicate uid", format!("{good}\n[[users]]\nname = \"other\"\nuid = 1000\ngid = 1000\n")),
        ("mount without target", format!("{good}\n[[mounts]]\nkind = \"tmpfs\"\nsize = \"64M\"\n")),
        ("undeclared enter user", format!("{good}\n[enter]\ncommand = [\"/usr/bin/bash\"]\nuser = \"nobody\"\n")),
        ("bad glob", edited(&good, "\"/usr/share/man/**\"", "\"/usr/share/[man\"")),
        ("missing binary", edited(&good, "\"env\"", "\"env\", \"no-such-program-jailprov\"")),
        ("unknown key", edited(&good, "binaries =", "binarys =")),
        ("syntax error", format!("{good}\n[[dirs]\npath = \"/x\"\n")),
    ];
    for (case, jailfile) in bad {
        jail.write_jailfile(&jailfile);
        let apply = jail.run("apply", &[]).code(1, case);
        assert!(
            names_line_and_column(&apply.stderr, "Jailfile.toml"),
            "{case}: no file:line:col: {}",
            apply.describe()
        );
        assert!(apply.stdout.is_empty(), "{case}: apply printed changes: {}", apply.describe());
        assert_eq!(tree(&jail.root), before, "{case}: the jail changed");
        jail.run("plan", &[]).code(1, &format!("plan, {case}"));
    }
    jail.write_jailfile(&good);
    jail.assert_clean("with the good Jailfile back");
}

/// `root = "/"` is refused by `validate`; with `--root` given, the same Jailfile is applied.
#[test]

fn jailfile_root_slash_is_refused_even_with_root_override() {
    need_root!("jailfile_root_slash_is_refused_even_with_root_override");
    let good = seed_like(&SEED_BINARIES);
    let jail = Jail::new(&good);
    jail.apply();
    let before = tree(&jail.root);
    jail.write_jailfile(&edited(&good, &format!("root = \"{UNUSED_ROOT}\""), "root = \"/\""));
    let apply = jail.run("apply", &[]).code(1, "a Jailfile with root = \"/\"");
    assert!(names_line_and_column(&apply.stderr, "Jailfile.toml"), "{}", apply.describe());
    assert_eq!(tree(&jail.root), before, "the jail changed");
}

// ---------------------------------------------------------------------------------------------
// 10. Saved plans
// ---------------------------------------------------------------------------------------------

#[test]
fn saved_plan_applies_exactly_or_refuses_when_anything_moved() {
    need_root!("saved_plan_applies_exactly_or_refuses_when_anything_moved");
    let good = seed_like(&SEED_BINARIES);
    let jail = Jail::new(&good);
    let plan_file = jail.dir.join("plan.json");
    let plan_file_arg = plan_file.to_str().expect("UTF-8 tempdir");
    let state_dir = jail.state.to_str().expect("UTF-8 tempdir");
    let apply_saved = || {
        output({
            let mut command = Command::new(BIN);
            command.args(["apply", plan_file_arg, "--state-dir", state_dir]).current_dir(&jail.dir);
            command
        })
    };

    // A plan saved on an empty jail, applied as is.
    let plan = jail.run("plan", &["-o", plan_file_arg]).ok("plan -o");
    assert!(plan.stdout.contains("to create"), "{}", plan.describe());
    let apply = apply_saved().ok("apply PLAN");
    assert!(apply.stdout.contains("Apply complete:"), "{}", apply.describe());
    assert!(is_regular_file(&jail.at("/usr/bin/bash")));
    jail.assert_clean("after applying the saved plan");

    // Planned, then the Jailfile is edited: refused, nothing applied.
    let new_motd = edited(&good, "You are inside the test jail.", "A new motd.");
    jail.write_jailfile(&new_motd);
    jail.run("plan", &["-o", plan_file_arg]).ok("plan -o (new motd)");
    jail.write_jailfile(&edited(&new_motd, "\"env\"", "\"env\", \"head\""));
    let before = tree(&jail.root);
    let stale = apply_saved().code(1, "apply PLAN after the Jailfile was edited");
    assert!(stale.stderr.contains("was edited"), "{}", stale.describe());
    assert!(stale.stderr.contains("Jailfile.toml"), "{}", stale.describe());
    assert_eq!(tree(&jail.root), before, "a stale plan changed the jail");
    assert_eq!(read(&jail.at("/etc/motd")), MOTD);

    // Planned, then a managed file in the jail changes: refused, nothing applied.
    jail.write_jailfile(&new_motd);
    jail.run("plan", &["-o", plan_file_arg]).ok("plan -o (new motd, again)");
    append(&jail.at("/etc/motd"), "written from inside\n");
    let before = tree(&jail.root);
    let stale = apply_saved().code(1, "apply PLAN after the jail changed");
    assert!(stale.stderr.contains("the jail") && stale.stderr.contains("changed"), "{}", stale.describe());
    assert!(stale.stderr.contains("nothing was applied"), "{}", stale.describe());
    assert_eq!(tree(&jail.root), before, "a stale plan changed the jail");
    assert_eq!(read(&jail.at("/etc/motd")), format!("{MOTD}written from inside\n"));

    // A fresh plan of the same goes through, even after the Jailfile is only reformatted
    // (CRLF line endings and a comment): what it says is unchanged.
    jail.run("plan", &["-o", plan_file_arg]).ok("plan -o (fresh)");
    jail.write_jailfile(&format!("# reformatted, same meaning\r\n{}", new_motd.replace('\n', "\r\n")));
    apply_saved().ok("apply a fresh PLAN after a reformat");
    assert_eq!(read(&jail.at("/etc/motd")), "A new motd.\n");
    jail.assert_clean("after the fresh saved plan");
}

// ---------------------------------------------------------------------------------------------
// 11. One jailprov at a time per jail
// ---------------------------------------------------------------------------------------------

#[test]
fn a_second_apply_fails_while_another_holds_the_lock() {
    need_root!("a_second_apply_fails_while_another_holds_the_lock");
    const HELD: &str = "another jailprov holds the lock";
    // Racing two real applies: the first holds the lock for the whole (second-long) zoneinfo apply.
    let mut observed = false;
    for attempt in 1..=3 {
        let jail = Jail::new(&big_jailfile());
        let mut first = jail.spawn("apply", &[]);
        std::thread::sleep(Duration::from_millis(100 * attempt));
        let second = jail.run("apply", &["--lock-timeout", "0"]);
        let still_running = first.try_wait().expect("try_wait").is_none();
        let status = first.wait().expect("wait for the first apply");
        let mut first_stderr = String::new();
        if let Some(mut stderr) = first.stderr.take() {
            let _ = stderr.read_to_string(&mut first_stderr);
        }
        assert!(status.success(), "the first apply failed: {first_stderr}");
        if second.code == 1 && second.stderr.contains(HELD) {
            observed = true;
            break;
        }
        eprintln!(
            "a_second_apply_fails_while_another_holds_the_lock: attempt {attempt} not observed (first still running: \
             {still_running}): {}",
            second.describe()
        );
    }

    // Deterministically: hold the lock file ourselves.
    let jail = Jail::new(&seed_like(&SEED_BINARIES));
    jail.apply();
    let lock_file = fs::read_dir(&jail.state)
        .expect("the state dir")
        .map(|entry| entry.expect("entry").path())
        .find(|path| path.extension().is_some_and(|extension| extension == "lock"))
        .expect("a .lock file in the state dir");
    let held = nix::fcntl::Flock::lock(
        fs::File::open(&lock_file).expect("open the lock"),
        nix::fcntl::FlockArg::LockExclusive,
    )
    .unwrap_or_else(|(_, errno)| panic!("flock: {errno}"));
    jail.write_jailfile(&seed_like(&["bash", "ls", "id", "env"]));
    let before = tree(&jail.root);
    let started = Instant::now();
    let apply = jail.run("apply", &["--lock-timeout", "1"]).code(1, "apply while the lock is held");
    assert!(apply.stderr.contains(HELD), "{}", apply.describe());
    assert!(started.elapsed() >= Duration::from_millis(900), "it did not wait for --lock-timeout 1");
    let destroy = jail.run("destroy", &["--yes", "--lock-timeout", "0"]).code(1, "destroy while the lock is held");
    assert!(destroy.stderr.contains(HELD), "{}", destroy.describe());
    assert_eq!(tree(&jail.root), before, "a locked-out jailprov changed the jail");
    drop(held);
    jail.apply();
    assert!(!jail.at("/usr/bin/cat").exists());
    if !observed {
        eprintln!("a_second_apply_fails_while_another_holds_the_lock: the race was never observed; flock check only");
    }
}

// ---------------------------------------------------------------------------------------------
// 12. Jail roots others could swap
// ---------------------------------------------------------------------------------------------

#[test]
fn unsafe_and_symlink_roots_are_refused() {
    need_root!("unsafe_and_symlink_roots_are_refused");
    let jail = Jail::new(&seed_like(&SEED_BINARIES));
    let bob = jail.dir.join("bob");
    fs::create_dir(&bob).expect("mkdir bob");
    nix::unistd::chown(&bob, Some(nix::unistd::Uid::from_raw(1000)), None).expect("chown 1000");
    let under_bob = bob.join("jail");

    let refused = jail.run_at("apply", &under_bob, &[]).code(1, "apply under a uid 1000 directory");
    assert!(refused.stderr.contains(&bob.display().to_string()), "{}", refused.describe());
    assert!(refused.stderr.contains("uid 1000"), "{}", refused.describe());
    assert!(!under_bob.exists(), "the refused apply created the root");
    jail.run_at("apply", &under_bob, &["--unsafe-root"]).ok("apply --unsafe-root");
    assert!(is_regular_file(&under_bob.join("usr/bin/bash")));

    let real = jail.dir.join("real");
    fs::create_dir(&real).expect("mkdir real");
    let link = jail.dir.join("link");
    symlink(&real, &link).expect("ln -s");
    for extra in [&[][..], &["--unsafe-root"][..]] {
        let refused = jail.run_at("apply", &link, extra).code(1, &format!("apply to a symlink root {extra:?}"));
        assert!(refused.stderr.contains("is a symlink"), "{}", refused.describe());
        assert_eq!(fs::read_dir(&real).expect("readdir").count(), 0, "something was written through the link");
    }
    let refused = jail.run_at("destroy", &link, &["--yes"]).code(1, "destroy of a symlink root");
    assert!(refused.stderr.contains("is a symlink"), "{}", refused.describe());
}

/// An applied jail whose root was swapped for a symlink: destroy must refuse, and keep the
/// record of what it manages, not say "does not exist" and drop it.
#[test]

fn destroy_refuses_a_symlink_root_and_keeps_the_record() {
    need_root!("destroy_refuses_a_symlink_root_and_keeps_the_record");
    let jail = Jail::new(&seed_like(&SEED_BINARIES));
    jail.apply();
    let moved = jail.dir.join("moved");
    fs::rename(&jail.root, &moved).expect("move the jail away");
    symlink(&moved, &jail.root).expect("a symlink where the root was");
    let destroy = jail.run("destroy", &["--yes", "--unsafe-root"]);
    fs::remove_file(&jail.root).expect("rm the link");
    fs::rename(&moved, &jail.root).expect("move the jail back");
    assert_eq!(destroy.code, 1, "destroy of a symlink root: {}", destroy.describe());
    assert!(!destroy.stdout.contains("does not exist"), "{}", destroy.describe());
    // With the real root back, jailprov still knows what it created and destroys it.
    let destroy = jail.run("destroy", &["--yes"]).ok("destroy of the real root");
    assert!(!jail.at("/usr/bin/bash").exists(), "jailprov forgot what it created: {}", destroy.describe());
}

// ---------------------------------------------------------------------------------------------
// 13. setuid bits
// ---------------------------------------------------------------------------------------------

#[test]
fn copied_setuid_program_loses_the_bit_unless_asked() {
    need_root!("copied_setuid_program_loses_the_bit_unless_asked");
    let host_mode = mode_of(Path::new("/usr/bin/passwd"));
    assert_eq!(host_mode, 0o4755, "the host's /usr/bin/passwd is expected setuid root");
    let files = format!("root = \"{UNUSED_ROOT}\"\n[[files]]\nsrc = \"/usr/bin/passwd\"\n");
    let jail = Jail::new(&files);
    jail.apply();
    assert_eq!(mode_of(&jail.at("/usr/bin/passwd")), 0o755, "the setuid bit must be stripped");
    jail.assert_clean("after the stripped copy");

    jail.write_jailfile(&format!("{files}setuid = true\n"));
    let plan = jail.run("plan", &[]).ok("plan");
    assert!(plan.stdout.contains("~   file     /usr/bin/passwd (mode 0755 -> 4755)"), "{}", plan.describe());
    jail.apply();
    assert_eq!(mode_of(&jail.at("/usr/bin/passwd")), 0o4755, "setuid = true keeps the bit");
    jail.assert_clean("after keeping setuid");

    let fresh = Jail::new(&format!("{files}setuid = true\n"));
    fresh.apply();
    assert_eq!(mode_of(&fresh.at("/usr/bin/passwd")), 0o4755, "a fresh copy with setuid = true");
}

// ---------------------------------------------------------------------------------------------
// 14. The seed-shell example works in a chroot
// ---------------------------------------------------------------------------------------------

#[test]
fn seed_shell_example_runs_in_a_chroot() {
    need_root!("seed_shell_example_runs_in_a_chroot");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/seed-shell/Jailfile.toml");
    let jail = Jail::new(&read(&example));
    let root = jail.dir.join("x");
    jail.run_at("apply", &root, &[]).ok("apply the seed-shell example");

    let ls = output({
        let mut command = Command::new("/usr/sbin/chroot");
        command.arg(&root).args(["/bin/bash", "-c", "ls /"]).env_clear().env("PATH", "/usr/bin:/bin");
        command
    })
    .ok("chroot ROOT /bin/bash -c 'ls /'");
    let listed: BTreeSet<&str> = ls.stdout.lines().collect();
    for name in ["bin", "etc", "usr"] {
        assert!(listed.contains(name), "`ls /` in the jail lacks {name}: {}", ls.describe());
    }
    let id = output({
        let mut command = Command::new("/usr/sbin/chroot");
        command.arg(&root).args(["/usr/bin/id", "jailer"]).env_clear();
        command
    })
    .ok("chroot ROOT /usr/bin/id jailer");
    assert!(id.stdout.starts_with("uid=1000(jailer)"), "{}", id.describe());
}

// ---------------------------------------------------------------------------------------------
// 15. Plans as users and scripts see them (snapshots)
// ---------------------------------------------------------------------------------------------

/// Only inline files and directories: nothing depends on the host's versions.
const SMALL: &str = r#"root = "/srv/jails/small"

[[dirs]]
path = "/data"
mode = "0750"

[[dirs]]
path = "/var/spool/app"
owner = "1000"

[[files]]
path = "/etc/app.conf"
content = "name = app\nport = 8080\nworkers = 4\nlog = info\n"

[[files]]
path = "/etc/motd"
mode = "0640"
content = "hello\n"
"#;

#[test]
fn plan_text_and_json_snapshots() {
    need_root!("plan_text_and_json_snapshots");
    let jail = Jail::new(SMALL);
    let root = jail.root.display().to_string();
    let text = |jail: &Jail| jail.run("plan", &[]).ok("plan").stdout.replace(&root, "ROOT");
    let json =
        |jail: &Jail| jail.run("plan", &["--format", "json"]).ok("plan --format json").stdout.replace(&root, "ROOT");

    insta::assert_snapshot!("first_plan_text", text(&jail));
    insta::assert_snapshot!("first_plan_json", json(&jail));
    jail.apply();
    jail.assert_clean("after applying the small Jailfile");

    let edited_small = edited(SMALL, "port = 8080", "port = 9090");
    let edited_small = edited(&edited_small, "[[dirs]]\npath = \"/data\"\nmode = \"0750\"\n\n", "");
    jail.write_jailfile(&edited_small);
    insta::assert_snapshot!("edited_plan_text", text(&jail));
    insta::assert_snapshot!("edited_plan_json", json(&jail));
    jail.run("plan", &["--detailed-exitcode"]).code(2, "plan with an edit pending");
    jail.apply();
    assert!(!jail.at("/data").exists());
    assert_eq!(read(&jail.at("/etc/app.conf")), "name = app\nport = 9090\nworkers = 4\nlog = info\n");
    jail.assert_clean("after applying the edit");
}

/// `apply --interactive` asks on a terminal: anything but "yes" cancels with the jail untouched,
/// "yes" applies; without a terminal it refuses instead of hanging or assuming an answer.
#[test]
fn interactive_apply_asks_on_a_terminal_and_refuses_without_one() {
    need_root!("interactive_apply_asks_on_a_terminal_and_refuses_without_one");
    cli::prerequisites::require(&cli::prerequisites::SCRIPT);
    let jail = Jail::new("[[files]]\npath = \"/etc/motd\"\ncontent = \"hi\\n\"\n");

    let no_tty = jail.run("apply", &["--interactive"]).code(1, "apply --interactive without a terminal");
    assert!(no_tty.stderr.contains("needs a terminal"), "{}", no_tty.describe());
    assert!(!jail.root.exists(), "nothing may be created without an answer");

    // `script` runs jailprov on a pseudo-terminal and forwards our answer to it.
    let interactive = |answer: &str| cli::on_a_terminal(&jail.command_line("apply", "--interactive"), answer);

    let (code, text) = interactive("no\n");
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("Plan: 3 to create") && text.contains("Apply cancelled."), "{text}");
    assert!(!jail.root.exists(), "a cancelled apply creates nothing");

    let (code, text) = interactive("yes\n");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("Apply complete: 3 created"), "{text}");
    assert_eq!(fs::read_to_string(jail.at("/etc/motd")).expect("motd"), "hi\n");
    jail.assert_clean("after the interactive apply");
}

// ---------------------------------------------------------------------------------------------
// Persistent mounts
// ---------------------------------------------------------------------------------------------

#[test]
fn persistent_mounts_are_planned_made_kept_and_removed_and_foreign_mounts_are_left_alone() {
    need_root!("persistent_mounts_are_planned_made_kept_and_removed_and_foreign_mounts_are_left_alone");
    let source = tempfile::Builder::new().prefix("jailprov-mount-source-").tempdir().expect("tempdir");
    fs::write(source.path().join("data.txt"), "host data\n").expect("write the source");
    let mounts = format!(
        r#"
[[mounts]]
kind = "bind"
source = "{}"
target = "/data"
readonly = true
persistent = true

[[mounts]]
kind = "tmpfs"
target = "/scratch"
size = "1M"
persistent = true
"#,
        source.path().display()
    );
    let with_both = format!("{}{mounts}", seed_like(&["bash"]));
    let jail = Jail::new(&with_both);
    let _unmount = UnmountGuard(jail.root.clone());

    // plan: the mounts are shown, after the files (their targets are created first).
    let plan = jail.run("plan", &["--detailed-exitcode", "-v"]).code(2, "plan before apply");
    let data_line = format!("+   mount    /data (bind {}, read-only)", source.path().display());
    assert!(plan.stdout.contains(&data_line), "{}", plan.describe());
    assert!(plan.stdout.contains("+   mount    /scratch (tmpfs, size 1048576)"), "{}", plan.describe());
    assert!(plan.stdout.contains(", 2 to mount."), "{}", plan.describe());
    let json = jail.plan_json();
    assert_eq!(json["summary"]["mount"], 2, "{json}");
    let actions: Vec<&str> =
        json["changes"].as_array().expect("changes").iter().filter_map(|c| c["action"].as_str()).collect();
    assert_eq!(actions.iter().rev().take(2).collect::<Vec<_>>(), [&"mount", &"mount"], "mounts come last: {actions:?}");

    // apply mounts them, read-only really read-only.
    let applied = jail.apply();
    assert!(applied.stdout.contains(", 2 mounted."), "{}", applied.describe());
    let mounted = mounts_under(&jail.root);
    assert!(mounted.iter().any(|(p, a, _)| p == "/data" && a == "ro"), "{mounted:?}");
    assert!(mounted.iter().any(|(p, a, t)| p == "/scratch" && a == "rw" && t == "tmpfs"), "{mounted:?}");
    assert_eq!(fs::read_to_string(jail.at("/data/data.txt")).expect("read through the bind"), "host data\n");
    let error = fs::write(jail.at("/data/new.txt"), "x").expect_err("a read-only bind refuses writes");
    assert_eq!(error.raw_os_error(), Some(nix::libc::EROFS), "{error}");
    jail.assert_clean("after mounting");
    let check = jail.run("check", &[]);
    assert_eq!(check.code, 0, "a jail with its persistent mounts in place passes check: {}", check.describe());
    assert!(jail.apply().stdout.contains("No changes."), "a second apply mounts nothing again");
    assert_eq!(mounts_under(&jail.root).len(), 2, "not mounted twice");

    // Dropping the tmpfs from the Jailfile unmounts it, then removes its target.
    jail.write_jailfile(&format!(
        "{}{}",
        seed_like(&["bash"]),
        mounts.split("\n[[mounts]]\nkind = \"tmpfs\"").next().expect("the bind part")
    ));
    let plan = jail.run("plan", &[]).ok("plan without the tmpfs");
    assert!(plan.stdout.contains("-   mount    /scratch"), "{}", plan.describe());
    assert!(plan.stdout.contains("-   dir      /scratch"), "{}", plan.describe());
    assert!(plan.stdout.contains(", 1 to unmount."), "{}", plan.describe());
    let applied = jail.apply();
    assert!(applied.stdout.contains("1 deleted, 1 unmounted."), "{}", applied.describe());
    let mounted = mounts_under(&jail.root);
    assert_eq!(mounted.iter().map(|(p, _, _)| p.as_str()).collect::<Vec<_>>(), ["/data"], "{mounted:?}");
    assert!(!jail.at("/scratch").exists());
    jail.assert_clean("after unmounting");

    // A persistent mount that went away (an admin's umount, a reboot) is planned again and
    // reported by check.
    nix::mount::umount2(&jail.at("/data"), nix::mount::MntFlags::MNT_DETACH).expect("unmount /data by hand");
    let check = jail.run("check", &[]).code(1, "check with /data unmounted");
    assert!(check.stdout.contains("JP018") && check.stdout.contains("/data"), "{}", check.describe());
    let plan = jail.run("plan", &[]).ok("plan with /data unmounted");
    assert!(plan.stdout.contains("+   mount    /data"), "{}", plan.describe());
    assert!(jail.apply().stdout.contains("1 mounted."), "apply mounts it again");

    // A mount jailprov did not make: never unmounted, never emptied.
    nix::mount::mount(Some("tmpfs"), &jail.at("/tmp"), Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>)
        .expect("a foreign tmpfs on the jail's /tmp");
    fs::write(jail.at("/tmp/user-file"), "mine\n").expect("a file on the foreign mount");
    jail.assert_clean("with a foreign mount on /tmp");
    let destroyed = jail.run("destroy", &["--yes"]).ok("destroy");
    assert!(destroyed.stdout.contains("1 unmounted."), "{}", destroyed.describe());
    let mounted = mounts_under(&jail.root);
    assert_eq!(mounted.iter().map(|(p, _, _)| p.as_str()).collect::<Vec<_>>(), ["/tmp"], "{mounted:?}");
    assert_eq!(fs::read_to_string(jail.at("/tmp/user-file")).expect("the foreign mount's file"), "mine\n");
    assert_eq!(fs::read_to_string(source.path().join("data.txt")).expect("the bind source"), "host data\n");
    assert!(jail.root.exists(), "the root holds a foreign mount: kept");
}
