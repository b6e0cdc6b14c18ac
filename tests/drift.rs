//! Host drift against Jailfile.lock is accepted only on purpose: `plan` shows it every time and
//! writes nothing, `jailprov lock` or a plain `apply` accepts it, `--locked` refuses it until then.
//!
//! Like tests/lock_check.rs: the real binary, as root, in a fresh 0700 tempdir holding the
//! Jailfile, its lock, the jail root and the state directory. Host drift is a `[[files]]` source
//! in that tempdir: no real host file is ever edited.
#![allow(clippy::disallowed_methods)] // tests build fixtures and read jails with plain fs calls

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[macro_use]
mod cli;
use cli::{Run, Workspace, UNUSED_ROOT};

/// A workspace with a private source tree (`src`) beside the Jailfile, and a Jailfile copying
/// `cat` and one `[[files]]` source from it.
struct Jail {
    workspace: Workspace,
    source: PathBuf,
}

impl std::ops::Deref for Jail {
    type Target = Workspace;

    fn deref(&self) -> &Workspace {
        &self.workspace
    }
}

impl Jail {
    fn with_source(content: &[u8]) -> Jail {
        let workspace = Workspace::new("jailprov-drift-");
        let src = workspace.dir.join("src");
        fs::create_dir(&src).expect("mkdir src");
        let source = src.join("app.conf");
        fs::write(&source, content).expect("write the source");
        workspace.write_jailfile(&format!(
            "root = \"{UNUSED_ROOT}\"\nbinaries = [\"cat\"]\n\n[[files]]\nsrc = \"{}\"\ndest = \"/etc/app.conf\"\nmode = \"0644\"\n",
            source.display()
        ));
        Jail { workspace, source }
    }

    fn lock_file(&self) -> PathBuf {
        self.dir.join("Jailfile.lock")
    }

    /// The host changes what the Jailfile copies.
    fn edit_source(&self, content: &[u8]) {
        fs::write(&self.source, content).expect("edit the source");
    }

    /// Output with the workspace's tempdir spelled `[DIR]`, for snapshots.
    fn stable(&self, text: &str) -> String {
        text.replace(&self.dir.display().to_string(), "[DIR]")
    }

    fn plan_json(&self) -> serde_json::Value {
        let run = self.run("plan", &["--format", "json"]).ok("plan --format json");
        serde_json::from_str(&run.stdout).unwrap_or_else(|error| panic!("plan JSON: {error}: {}", run.describe()))
    }

    /// What a user sees of the lock and the jail record: bytes and stat of each (the caches
    /// under the state directory, lock-cache/ and the plan memo, may change).
    fn user_visible(&self) -> BTreeMap<String, (Vec<u8>, i64, i64, i64, u64)> {
        let mut files = vec![self.lock_file()];
        if let Ok(entries) = fs::read_dir(&self.state) {
            files.extend(
                entries
                    .map(|entry| entry.expect("state entry").path())
                    .filter(|path| path.extension().is_some_and(|extension| extension == "state")),
            );
        }
        files
            .into_iter()
            .map(|path| {
                let metadata = fs::symlink_metadata(&path).expect("stat a user-visible file");
                let bytes = fs::read(&path).expect("read a user-visible file");
                let stat = (metadata.mtime(), metadata.mtime_nsec(), metadata.ctime_nsec(), metadata.ino());
                (path.display().to_string(), (bytes, stat.0, stat.1, stat.2, stat.3))
            })
            .collect()
    }
}

/// Every path of the jail with its mode, size, mtime, ctime and inode: the jail untouched means
/// this map unchanged.
fn stats(root: &Path) -> BTreeMap<String, (u32, u64, i64, i64, u64)> {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .map(|entry| {
            let entry = entry.expect("walk the jail");
            let metadata = entry.path().symlink_metadata().expect("lstat");
            let stat = (metadata.mode(), metadata.size(), metadata.mtime_nsec(), metadata.ctime_nsec(), metadata.ino());
            (entry.path().display().to_string(), stat)
        })
        .collect()
}

/// Runs `command` with `JAILPROV_TIMINGS=1`, whose stderr says when the plan memo answered.
fn output_with_timings(mut command: std::process::Command) -> Run {
    command.env("JAILPROV_TIMINGS", "1");
    cli::output(command)
}

/// The plan's lock section: everything before the jail's changes.
fn lock_section(plan: &Run) -> &str {
    let end = plan
        .stdout
        .find("jailprov will make these changes")
        .or_else(|| plan.stdout.find("No changes."))
        .unwrap_or_else(|| panic!("a plan: {}", plan.describe()));
    &plan.stdout[..end]
}

/// The flow: drift shows in every plan (text, JSON, exit 2), no plan writes the lock,
/// the state record or the jail, `--locked` refuses it however many plans ran, `jailprov lock`
/// names the changed path (old → new) and `--locked` passes after it.
#[test]
fn drift_stays_in_every_plan_until_jailprov_lock_accepts_it() {
    need_root!("drift_stays_in_every_plan_until_jailprov_lock_accepts_it");
    let jail = Jail::with_source(b"port = 1\n");
    jail.apply();
    jail.edit_source(b"port = 22\n");
    let visible = jail.user_visible();
    let jail_before = stats(&jail.root);

    for round in 1..=3 {
        let plan = jail.run("plan", &["--detailed-exitcode"]).code(2, "plan with host drift");
        insta::assert_snapshot!("drift_section", jail.stable(lock_section(&plan)));
        let json = jail.plan_json();
        assert_eq!(json["lock"], "stale", "round {round}: {json:#}");
        let drift = json["host_drift"].as_array().unwrap_or_else(|| panic!("{json:#}"));
        assert_eq!(drift.len(), 1, "round {round}: {json:#}");
        assert_eq!(drift[0]["path"], "/etc/app.conf", "{json:#}");

        for command in ["plan", "apply"] {
            let refused = jail.run(command, &["--locked"]).code(1, "--locked with drift not accepted");
            assert!(
                refused.stderr.contains("/etc/app.conf  blake3 ") && refused.stderr.contains("run `jailprov lock -f "),
                "round {round}: {command} --locked names the path and says to run jailprov lock: {}",
                refused.describe()
            );
        }
        assert_eq!(jail.user_visible(), visible, "round {round}: plan or --locked wrote the lock or the record");
        assert_eq!(stats(&jail.root), jail_before, "round {round}: plan or --locked touched the jail");
    }

    let lock = jail.run("lock", &[]).ok("jailprov lock");
    insta::assert_snapshot!("lock_accepts_drift", jail.stable(&lock.stdout));
    jail.run("plan", &["--locked"]).ok("plan --locked after jailprov lock");
    jail.run("apply", &["--locked"]).ok("apply --locked after jailprov lock");
    let clean = jail.run("plan", &["--locked", "--detailed-exitcode"]).ok("nothing pending after the locked apply");
    assert_eq!(lock_section(&clean), "", "{}", clean.describe());
}

/// Drift alone, with the jail already as the host gives it (the host changed, a plain apply
/// accepted it, the committed lock was checked out again): exit 2 in every plan, never the
/// plan memo's "No changes", and a plain apply accepts it, printing the same summary as
/// `jailprov lock`.
#[test]
fn drift_alone_is_pending_for_detailed_exitcode_and_apply_accepts_it() {
    need_root!("drift_alone_is_pending_for_detailed_exitcode_and_apply_accepts_it");
    let jail = Jail::with_source(b"port = 1\n");
    jail.apply();
    let committed = fs::read(jail.lock_file()).expect("the lock apply wrote");
    jail.edit_source(b"port = 22\n");
    let accepted = jail.apply();
    insta::assert_snapshot!("apply_accepts_drift", jail.stable(&accepted.stderr));
    // Past the timestamp ticks of the apply, so that the clean plan leaves its memo.
    std::thread::sleep(std::time::Duration::from_millis(150));
    jail.run("plan", &["--detailed-exitcode"]).ok("the jail and the lock match the host");
    let answered = |run: &Run| run.stderr.contains("answered by the memo");
    let memo = output_with_timings(jail.command("plan", &["--detailed-exitcode"])).ok("a memo's no-op plan");
    assert!(answered(&memo), "the memo answers now (else it is not put to the test below): {}", memo.describe());

    fs::write(jail.lock_file(), &committed).expect("check out the committed lock");
    for round in 1..=3 {
        let plan = output_with_timings(jail.command("plan", &["--detailed-exitcode"]));
        let plan = plan.code(2, "drift alone is pending");
        assert!(!answered(&plan), "round {round}: the memo answered while the lock is stale: {}", plan.describe());
        assert!(
            plan.stdout.contains("host drift: /etc/app.conf  blake3 ") && plan.stdout.contains("No changes."),
            "round {round}: the drift, and no jail change: {}",
            plan.describe()
        );
        let json = jail.plan_json();
        assert_eq!((json["changes"].as_array().map(Vec::len), &json["lock"]), (Some(0), &"stale".into()), "{json:#}");
        assert_eq!(fs::read(jail.lock_file()).expect("the lock"), committed, "round {round}: plan rewrote the lock");
    }
    let accepted = jail.apply();
    assert!(accepted.stderr.contains("/etc/app.conf: blake3 "), "{}", accepted.describe());
    jail.run("plan", &["--locked", "--detailed-exitcode"]).ok("apply accepted the drift");
}

/// A plan of a jail never applied, with no lock and no state directory, creates none of them;
/// the missing lock is said and pending.
#[test]
fn plan_on_a_missing_root_creates_nothing() {
    need_root!("plan_on_a_missing_root_creates_nothing");
    let jail = Jail::with_source(b"port = 1\n");
    let listing = || {
        let mut names: Vec<String> = fs::read_dir(&jail.dir)
            .expect("list the workspace")
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = listing();
    let plan = jail.run("plan", &["--detailed-exitcode"]).code(2, "a first plan: everything pending");
    assert_eq!(
        lock_section(&plan),
        "Jailfile.lock does not exist yet; `jailprov apply` or `jailprov lock` writes it.\n\n",
        "{}",
        plan.describe()
    );
    assert_eq!(jail.plan_json()["lock"], "missing");
    let refused = jail.run("plan", &["--locked"]).code(1, "plan --locked without a lock");
    assert!(refused.stderr.contains("does not exist"), "{}", refused.describe());
    assert_eq!(listing(), before, "plan created something beside the Jailfile (root, state directory or lock)");
    assert!(!jail.root.exists() && !jail.state.exists() && !jail.lock_file().exists());
}

/// `plan -o FILE` over a planted symlink replaces the link with its own private file: the
/// link's target (existing or not) is never written.
#[test]
fn plan_out_never_writes_through_a_planted_symlink() {
    need_root!("plan_out_never_writes_through_a_planted_symlink");
    let jail = Jail::with_source(b"port = 1\n");
    let victim = jail.dir.join("victim");
    fs::write(&victim, b"precious\n").expect("write the victim");
    let missing = jail.dir.join("created-through-the-link");
    for target in [&victim, &missing] {
        let out = jail.dir.join("plan.json");
        let _ = fs::remove_file(&out);
        symlink(target, &out).expect("plant the link");
        jail.run("plan", &["-o", "plan.json"]).ok("plan -o over a symlink");
        let metadata = fs::symlink_metadata(&out).expect("the saved plan");
        assert!(metadata.is_file(), "the link was replaced by a regular file");
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600, "a saved plan is private");
        let saved: serde_json::Value =
            serde_json::from_slice(&fs::read(&out).expect("read the plan")).expect("the saved plan is JSON");
        assert!(saved["plan"].is_object(), "{saved:#}");
    }
    assert_eq!(fs::read(&victim).expect("read the victim"), b"precious\n", "plan -o wrote through the link");
    assert!(!missing.exists(), "plan -o created the dangling link's target");
}

/// `plan --help` says what plan writes: nothing a user sees, caches only.
#[test]
fn plan_help_names_the_caches_it_may_write() {
    let help = cli::output({
        let mut command = std::process::Command::new(cli::BIN);
        command.args(["plan", "--help"]);
        command
    })
    .ok("plan --help");
    for words in ["plan writes nothing you see", "not Jailfile.lock", "the plan memo and lock-cache/"] {
        assert!(help.stdout.contains(words), "{words:?}: {}", help.describe());
    }
}

/// The plan's text for one change: its line and the lines indented under it.
fn change_block<'a>(plan: &'a Run, path: &str) -> &'a str {
    let changes = plan.stdout.find("will make these changes").unwrap_or_else(|| panic!("changes: {}", plan.describe()));
    let start = changes
        + plan.stdout[changes..].find(&format!(" {path}")).unwrap_or_else(|| panic!("{path} in {}", plan.describe()));
    let start = plan.stdout[..start].rfind('\n').map_or(0, |newline| newline + 1);
    let end = plan.stdout[start..].find("\n\n").map_or(plan.stdout.len(), |end| start + end);
    &plan.stdout[start..end]
}

/// Issue #21: a changed `[[files]]` source shows which host file changed and how, as inline
/// `content` always did: a unified diff jail -> host source.
#[test]
fn a_changed_host_source_shows_its_path_and_a_unified_diff() {
    need_root!("a_changed_host_source_shows_its_path_and_a_unified_diff");
    let jail = Jail::with_source(b"name = app\nport = 1\nuser = app\n");
    jail.apply();
    jail.edit_source(b"name = app\nport = 22\nuser = app\n");
    let plan = jail.run("plan", &[]).ok("plan with a changed source");
    insta::assert_snapshot!("host_source_diff", jail.stable(change_block(&plan, "/etc/app.conf")));
    let json = jail.plan_json();
    let change = &json["changes"][0];
    assert_eq!(change["path"], "/etc/app.conf", "{json:#}");
    let diff = change["diff"].as_str().unwrap_or_else(|| panic!("a diff in the JSON: {json:#}"));
    assert!(diff.contains("-port = 1\n+port = 22\n"), "{diff}");
}

/// A changed binary source is not dumped as text: its sizes and its host path.
#[test]
fn a_changed_binary_source_says_binary_and_both_sizes() {
    need_root!("a_changed_binary_source_says_binary_and_both_sizes");
    let jail = Jail::with_source(b"\x7fELF\x00\x01\x02");
    jail.apply();
    jail.edit_source(b"\x7fELF\x00\x01\x02\x03\x04");
    let plan = jail.run("plan", &[]).ok("plan with a changed binary source");
    insta::assert_snapshot!("binary_source_diff", jail.stable(change_block(&plan, "/etc/app.conf")));
}
