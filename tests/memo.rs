//! The plan memo: a second no-op plan is answered from stats alone, and every change made after
//! the memo was written (on the host, in the jail, in the Jailfile, the lock, the record) is still
//! planned, exactly as a full plan plans it.
//!
//! Like tests/apply.rs: the real binary, as root, in a fresh 0700 tempdir; host changes are made
//! to `[[files]]` sources and a fixture program inside that tempdir, never to real host files.
//! Whether the memo answered is read from `JAILPROV_TIMINGS=1`'s line for it.
#![allow(clippy::disallowed_methods)] // tests build fixtures and jails with plain fs calls

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

#[macro_use]
mod cli;
use cli::{mounts_under, output, Run, UnmountGuard, Workspace, UNUSED_ROOT};

const ANSWERED: &str = "answered by the memo";

struct Jail {
    workspace: Workspace,
    src: PathBuf,
}

impl std::ops::Deref for Jail {
    type Target = Workspace;

    fn deref(&self) -> &Workspace {
        &self.workspace
    }
}

impl Jail {
    /// A jail of a private tree (`src`: a few files, a subdirectory, a dangling link) and an
    /// inline file.
    fn new() -> Jail {
        let workspace = Workspace::new("jailprov-memo-");
        let src = workspace.dir.join("src");
        fs::create_dir_all(src.join("sub")).expect("mkdir src/sub");
        fs::write(src.join("a.txt"), "alpha\n").expect("write a.txt");
        fs::write(src.join("sub/b.txt"), "bravo\n").expect("write b.txt");
        symlink("/nonexistent-jailprov-memo-target", src.join("dangling")).expect("symlink");
        let jail = Jail { workspace, src };
        jail.write_jailfile(&jail.jailfile_text(""));
        jail
    }

    fn jailfile_text(&self, extra: &str) -> String {
        format!(
            "root = \"{UNUSED_ROOT}\"\n\n[[files]]\nsrc = \"{}\"\n\n[[files]]\npath = \"/etc/motd\"\ncontent = \"hello\\n\"\n{extra}",
            self.src.display()
        )
    }

    /// `plan` with timings on: the run, and whether the memo answered it.
    fn plan(&self, extra: &[&str]) -> (Run, bool) {
        let mut command = self.command("plan", extra);
        command.env("JAILPROV_TIMINGS", "1");
        let run = output(command);
        let answered = run.stderr.contains(ANSWERED);
        (run, answered)
    }

    /// Applies, then plans until the memo answers (the first plan after an apply writes it).
    fn settle(&self, what: &str) {
        self.apply();
        let_timestamps_tick();
        let (first, answered) = self.plan(&["--detailed-exitcode"]);
        let first = first.ok(&format!("{what}: the plan after apply"));
        assert!(!answered, "{what}: the state just changed, the memo cannot answer: {}", first.describe());
        let (second, answered) = self.plan(&["--detailed-exitcode"]);
        let second = second.ok(&format!("{what}: the second plan"));
        assert!(answered, "{what}: the second no-op plan must be answered by the memo: {}", second.describe());
        assert_eq!(first.stdout, second.stdout, "{what}: the memo says what the full plan said");
    }

    /// After `change`, the plan is not the memo's, exits 2 and shows `expected`.
    fn assert_planned(&self, what: &str, expected: &str) {
        let (run, answered) = self.plan(&["--detailed-exitcode"]);
        assert!(!answered, "{what}: the memo must not answer: {}", run.describe());
        let run = run.code(2, what);
        assert!(run.stdout.contains(expected), "{what}: expected {expected:?} in the plan: {}", run.describe());
    }
}

/// A plan writes no memo while what it looks at changed within the last timestamp ticks (the
/// next change could keep the same ctime): wait those out, as a real jail would have.
fn let_timestamps_tick() {
    std::thread::sleep(std::time::Duration::from_millis(150));
}

/// Sets a file's mtime back to what it was (a same-size edit that keeps the mtime: only the
/// ctime tells).
fn rewrite_keeping_mtime(path: &Path, text: &str) {
    let modified = fs::metadata(path).and_then(|metadata| metadata.modified()).expect("mtime");
    fs::write(path, text).expect("rewrite");
    let file = fs::OpenOptions::new().write(true).open(path).expect("open");
    file.set_times(fs::FileTimes::new().set_modified(modified)).expect("restore mtime");
}

#[test]
fn a_second_no_op_plan_is_answered_by_the_memo_and_says_the_same() {
    need_root!("a_second_no_op_plan_is_answered_by_the_memo_and_says_the_same");
    let jail = Jail::new();
    jail.apply();
    let_timestamps_tick();
    let (full, answered) = jail.plan(&[]);
    let full = full.ok("full plan");
    assert!(!answered);
    let (memo, answered) = jail.plan(&[]);
    let memo = memo.ok("memo plan");
    assert!(answered, "{}", memo.describe());
    assert_eq!(full.stdout, memo.stdout);
    assert!(memo.stdout.contains("No changes."), "{}", memo.describe());
    // The closure's warnings are said again.
    let warning = |run: &Run| run.stderr.lines().filter(|line| line.starts_with("warning:")).count();
    assert_eq!(warning(&full), 1, "{}", full.describe());
    assert_eq!(warning(&memo), 1, "{}", memo.describe());
    // JSON as the full plan gives it.
    let full_json = jail.run("plan", &["--format", "json", "--detailed-exitcode"]).ok("json");
    let (memo_json, answered) = jail.plan(&["--format", "json"]);
    assert!(answered, "{}", memo_json.describe());
    assert_eq!(full_json.stdout, memo_json.ok("memo json").stdout);
    // A saved plan is always computed in full (its digests need the closure).
    let saved = jail.dir.join("saved.plan");
    let (run, answered) = jail.plan(&["-o", saved.to_str().expect("utf-8")]);
    run.ok("plan -o");
    assert!(!answered, "plan -o must compute the closure");
}

#[test]
fn changes_on_the_host_after_the_memo_are_planned() {
    need_root!("changes_on_the_host_after_the_memo_are_planned");
    let jail = Jail::new();
    let a = jail.src.join("a.txt");

    jail.settle("before a same-size edit");
    rewrite_keeping_mtime(&a, "ALPHA\n");
    jail.assert_planned("same-size edit, mtime kept", "~   file     /");

    jail.settle("before a new file");
    fs::write(jail.src.join("sub/c.txt"), "charlie\n").expect("write c.txt");
    jail.assert_planned("new file in a subdirectory", "c.txt");

    jail.settle("before a removal");
    fs::remove_file(jail.src.join("sub/c.txt")).expect("rm c.txt");
    jail.assert_planned("removed file", "-   file");

    jail.settle("before a chmod");
    fs::set_permissions(&a, fs::Permissions::from_mode(0o600)).expect("chmod");
    jail.assert_planned("host mode", "mode 0644 -> 0600");

    jail.settle("before a link is retargeted");
    fs::remove_file(jail.src.join("dangling")).expect("rm link");
    symlink("a.txt", jail.src.join("dangling")).expect("relink");
    jail.assert_planned("link target", "target /nonexistent-jailprov-memo-target -> a.txt");
}

#[test]
fn changes_in_the_jail_jailfile_lock_and_record_after_the_memo_are_planned() {
    need_root!("changes_in_the_jail_jailfile_lock_and_record_after_the_memo_are_planned");
    let jail = Jail::new();
    let in_jail = jail.at(&format!("{}/a.txt", jail.src.display()));

    jail.settle("before drift in the jail");
    rewrite_keeping_mtime(&in_jail, "ALPHA\n");
    jail.assert_planned("jail file edited, mtime kept", "(content)");

    jail.settle("before a chmod in the jail");
    fs::set_permissions(&in_jail, fs::Permissions::from_mode(0o600)).expect("chmod");
    jail.assert_planned("jail mode", "mode 0600 -> 0644");

    jail.settle("before a removal in the jail");
    fs::remove_file(&in_jail).expect("rm");
    jail.assert_planned("jail file removed", "+   file");

    jail.settle("before a Jailfile edit");
    jail.write_jailfile(&jail.jailfile_text("\n[[files]]\npath = \"/etc/issue\"\ncontent = \"jail\\n\"\n"));
    jail.assert_planned("Jailfile edit", "/etc/issue");

    jail.settle("before a reformatted Jailfile");
    jail.write_jailfile(&format!(
        "# a comment changes nothing\n{}",
        jail.jailfile_text("\n[[files]]\npath = \"/etc/issue\"\ncontent = \"jail\\n\"\n")
    ));
    let (run, answered) = jail.plan(&["--detailed-exitcode"]);
    run.ok("reformatted Jailfile");
    assert!(answered, "a comment does not change what the Jailfile says: the memo still answers");

    // The lock edited by hand: the full review reports it (and rewrites the lock).
    let lock = jail.dir.join("Jailfile.lock");
    let text = fs::read_to_string(&lock).expect("lock");
    fs::write(&lock, text.replacen("\"size\":6", "\"size\":7", 1)).expect("edit lock");
    let (run, answered) = jail.plan(&[]);
    let run = run.ok("lock edited");
    assert!(!answered, "an edited lock must be reviewed: {}", run.describe());
    assert!(run.stdout.contains("no longer gives"), "{}", run.describe());

    // Another apply rewrites the record: the first plan after it is computed in full.
    jail.settle("before a record change");
    fs::write(jail.src.join("a.txt"), "changed again\n").expect("write");
    jail.apply();
    let (run, answered) = jail.plan(&["--detailed-exitcode"]);
    run.ok("after apply");
    assert!(!answered, "the record changed: the memo cannot answer");
}

/// A program whose library is found in the second of two RUNPATH directories: when the same
/// library appears in the first, the loader would take that one, and so must the plan.
#[test]
fn a_library_appearing_earlier_in_the_search_path_is_planned() {
    need_root!("a_library_appearing_earlier_in_the_search_path_is_planned");
    let workspace = Workspace::new("jailprov-memo-rpath-");
    let (first, second) = (workspace.dir.join("first"), workspace.dir.join("second"));
    fs::create_dir(&first).expect("mkdir first");
    fs::create_dir(&second).expect("mkdir second");
    fs::write(workspace.dir.join("lib.c"), "int memo_lib(void) { return 7; }\n").expect("lib.c");
    fs::write(workspace.dir.join("main.c"), "int memo_lib(void);\nint main(void) { return memo_lib(); }\n")
        .expect("main.c");
    cli::prerequisites::require(&cli::prerequisites::GCC);
    let gcc = |args: &[&str]| {
        let run = output({
            let mut command = Command::new("gcc");
            command.args(args).current_dir(&workspace.dir);
            command
        });
        assert_eq!(run.code, 0, "gcc {args:?} (CI installs gcc): {}", run.describe());
    };
    let library = second.join("libmemo.so");
    gcc(&["-shared", "-fPIC", "-o", library.to_str().expect("utf-8"), "lib.c"]);
    let runpath = format!("-Wl,--enable-new-dtags,-rpath,{}:{}", first.display(), second.display());
    let program = workspace.dir.join("prog");
    gcc(&["-o", program.to_str().expect("utf-8"), "main.c", &format!("-L{}", second.display()), "-lmemo", &runpath]);
    workspace.write_jailfile(&format!("root = \"{UNUSED_ROOT}\"\nbinaries = [\"{}\"]\n", program.display()));
    let jail = Jail { src: workspace.dir.clone(), workspace };

    jail.settle("program with its library in the second RUNPATH directory");
    fs::copy(&library, first.join("libmemo.so")).expect("copy the library into the first directory");
    jail.assert_planned("library now found earlier", &format!("{}/libmemo.so", first.display()));
}

/// A persistent mount taken off by hand after the memo was written: the plan mounts it again.
#[test]
fn a_persistent_mount_taken_off_by_hand_is_planned() {
    need_root!("a_persistent_mount_taken_off_by_hand_is_planned");
    let jail = Jail::new();
    jail.write_jailfile(
        &jail
            .jailfile_text("\n[[mounts]]\nkind = \"tmpfs\"\ntarget = \"/scratch\"\nsize = \"1M\"\npersistent = true\n"),
    );
    let _unmount = UnmountGuard(jail.root.clone());
    jail.settle("with /scratch mounted");
    assert!(mounts_under(&jail.root).iter().any(|(point, _, _)| point == "/scratch"), "apply mounts /scratch");
    nix::mount::umount2(&jail.at("/scratch"), nix::mount::MntFlags::MNT_DETACH).expect("unmount by hand");
    jail.assert_planned("mount taken off by hand", "+   mount    /scratch");
}

/// The plan memos in the state directory.
fn memo_files(jail: &Jail) -> Vec<PathBuf> {
    let entries = fs::read_dir(&jail.state).expect("the state directory");
    let paths = entries.map(|entry| entry.expect("a state directory entry").path());
    paths.filter(|path| path.extension().is_some_and(|extension| extension == "memo")).collect()
}

/// Destroy takes the jail's plan memo with it; and a memo left behind (put back by hand) cannot
/// answer for the jail made again after the destroy: its key holds the record's stat and the
/// stats of the jail paths, which all moved.
#[test]
fn destroy_forgets_the_memo_and_an_old_memo_cannot_answer_after_it() {
    need_root!("destroy_forgets_the_memo_and_an_old_memo_cannot_answer_after_it");
    let jail = Jail::new();
    jail.settle("before destroy");
    let memos = memo_files(&jail);
    assert_eq!(memos.len(), 1, "the no-op plan wrote one memo: {memos:?}");
    let old_memo = fs::read(&memos[0]).expect("read the memo");

    jail.run("destroy", &["--yes"]).ok("destroy");
    assert_eq!(memo_files(&jail), Vec::<PathBuf>::new(), "destroy leaves no plan memo behind");

    fs::write(&memos[0], &old_memo).expect("put the old memo back");
    fs::set_permissions(&memos[0], fs::Permissions::from_mode(0o600)).expect("chmod the memo");
    jail.assert_planned("a destroyed jail, its old memo put back", "+   file");
    jail.apply();
    fs::write(&memos[0], &old_memo).expect("put the old memo back again");
    let (run, answered) = jail.plan(&["--detailed-exitcode"]);
    run.ok("the jail made again");
    assert!(!answered, "the memo of the destroyed jail must not answer for the one made again");
}
