//! `jailprov apply` against hostile inhabitants and hostile local users (issue #11): each test is
//! one attack that worked before, run for real as root on a fresh workspace (tests/cli).
//!
//! The attacker is played by the test process (root, but doing only what the jail's user or a
//! local user could: renaming inside a directory it owns, planting symlinks in a tree it can
//! write, creating a directory where the jail root will go).
#![allow(clippy::disallowed_methods)] // tests build fixtures and jails with plain fs calls

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
use nix::unistd::{chown, Gid, Uid};

#[macro_use]
mod cli;
use cli::{Run, Workspace, UNUSED_ROOT};

/// The jail user's uid and gid.
const USER: u32 = 1000;

fn give_to_user(path: &Path) {
    chown(path, Some(Uid::from_raw(USER)), Some(Gid::from_raw(USER))).expect("chown (tests run as root)");
}

/// Every non-directory under `dir` (not following symlinks) with its lstat.
fn files_under(dir: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(metadata) = fs::symlink_metadata(&path) else { continue };
        if metadata.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push((path, metadata));
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// 1. Owner and mode only ever land on the node the plan saw
// ---------------------------------------------------------------------------------------------

/// A user with a home it owns, holding a root-owned setgid directory the Jailfile manages.
fn shared_dir_jailfile(mode: &str) -> String {
    format!(
        r#"root = "{UNUSED_ROOT}"

[[groups]]
name = "u"
gid = {USER}

[[users]]
name = "u"
uid = {USER}
gid = {USER}
home = "/home/u"

[[dirs]]
path = "/home/u/shared"
mode = "{mode}"
"#
    )
}

/// A non-directory owned by root (user or group) with the setuid or setgid bit: a way up.
fn is_root_setid_program(metadata: &fs::Metadata) -> bool {
    !metadata.is_dir() && metadata.mode() & 0o6000 != 0 && (metadata.uid() == 0 || metadata.gid() == 0)
}

/// The jail user's own program, planted next to the managed directory.
fn plant_program(path: &Path) {
    let created = fs::OpenOptions::new().write(true).create_new(true).open(path);
    if created.is_ok() {
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod the program");
        give_to_user(path);
    }
}

#[test]
fn directory_exchanged_with_an_executable_never_gets_the_dirs_owner_or_mode() {
    need_root!("directory_exchanged_with_an_executable_never_gets_the_dirs_owner_or_mode");
    let work = Workspace::new("jailprov-hostile-");
    work.write_jailfile(&shared_dir_jailfile("2775"));
    work.apply();
    let shared = work.at("/home/u/shared");
    let program = work.at("/home/u/prog");
    plant_program(&program);

    // The jail user swaps its program and the managed directory as fast as it can (it owns
    // /home/u, so it may); whatever apply removes, it plants again.
    let stop = Arc::new(AtomicBool::new(false));
    let exchanges = Arc::new(AtomicUsize::new(0));
    let escalations = Arc::new(AtomicUsize::new(0));
    let attacker = {
        let (stop, exchanges, escalations) = (stop.clone(), exchanges.clone(), escalations.clone());
        let (shared, program) = (shared.clone(), program.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match renameat2(AT_FDCWD, &shared, AT_FDCWD, &program, RenameFlags::RENAME_EXCHANGE) {
                    Ok(()) => {
                        exchanges.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(Errno::ENOENT) => plant_program(&program),
                    Err(_) => std::thread::yield_now(),
                }
                let found: Vec<Option<fs::Metadata>> =
                    [&shared, &program].iter().map(|path| fs::symlink_metadata(path).ok()).collect();
                // The moment the program is root's and setuid or setgid, the user has won
                // (whatever a later apply removes).
                if found.iter().flatten().any(is_root_setid_program) {
                    escalations.fetch_add(1, Ordering::Relaxed);
                }
                // When apply replaced what it found at `shared` (the program, swapped in),
                // two directories are being exchanged: set the old one aside, plant again.
                if found.iter().all(|metadata| metadata.as_ref().is_some_and(fs::Metadata::is_dir)) {
                    let aside = program.with_file_name(format!("old-{}", exchanges.load(Ordering::Relaxed)));
                    if fs::rename(&program, aside).is_ok() {
                        plant_program(&program);
                    }
                }
            }
        })
    };
    // Each apply has a mode to set on what it believes is the directory.
    let mut refusals = 0;
    let mut taken_over = Vec::new();
    for round in 0..30 {
        work.write_jailfile(&shared_dir_jailfile(if round % 2 == 0 { "2770" } else { "2775" }));
        let apply = work.run("apply", &[]);
        if apply.stderr.contains("changed between plan and apply") {
            refusals += 1;
        }
        taken_over = files_under(&work.root)
            .into_iter()
            .filter(|(_, metadata)| is_root_setid_program(metadata))
            .map(|(path, metadata)| format!("after apply {round}: {} mode {:o}", path.display(), metadata.mode()))
            .collect();
        if !taken_over.is_empty() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    attacker.join().expect("the attacker thread");
    eprintln!(
        "{} exchanges during 30 applies; {refusals} applies refused a swapped path",
        exchanges.load(Ordering::Relaxed)
    );
    // The Jailfile declares no setuid or setgid file: none may ever have been root's.
    assert!(taken_over.is_empty(), "the jail user has root-owned setid programs: {taken_over:#?}");
    let seen = escalations.load(Ordering::Relaxed);
    assert_eq!(seen, 0, "the attacker saw its program root-owned and setid {seen} times");
    // And the user's programs still belong to the user, wherever the exchanges left them.
    for (path, metadata) in files_under(&work.at("/home/u")) {
        assert_eq!(metadata.uid(), USER, "{} was taken over by the directory's owner", path.display());
    }
}

// ---------------------------------------------------------------------------------------------
// 2. A [[files]] src tree brings its own files, not what its symlinks reach
// ---------------------------------------------------------------------------------------------

#[test]
fn symlink_planted_in_a_files_src_tree_is_copied_as_a_symlink_not_followed() {
    need_root!("symlink_planted_in_a_files_src_tree_is_copied_as_a_symlink_not_followed");
    let work = Workspace::new("jailprov-hostile-");
    // A root-only key elsewhere on the host, and a tree a user can write into.
    let secret_dir = work.dir.join("root-ssh");
    fs::create_dir(&secret_dir).expect("mkdir");
    let secret = secret_dir.join("id_ed25519");
    fs::write(&secret, "PRIVATE KEY\n").expect("write the key");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).expect("chmod the key");
    let tree = work.dir.join("app");
    fs::create_dir(&tree).expect("mkdir");
    fs::write(tree.join("app.conf"), "port = 8080\n").expect("write");
    give_to_user(&tree);
    // What the user plants: one link out of the tree, one inside it.
    symlink(&secret, tree.join("key")).expect("plant the link to the key");
    symlink("app.conf", tree.join("current.conf")).expect("plant the link inside the tree");
    work.write_jailfile(&format!("root = \"{UNUSED_ROOT}\"\n[[files]]\nsrc = \"{}\"\n", tree.display()));

    let apply = work.apply();

    let in_jail = |host: &Path| work.at(&host.display().to_string());
    let key = fs::symlink_metadata(in_jail(&tree.join("key"))).expect("the planted link is in the jail");
    assert!(key.file_type().is_symlink(), "copied as a symlink: {key:?}");
    assert_eq!(fs::read_link(in_jail(&tree.join("key"))).expect("readlink"), secret, "with its own text");
    assert!(
        fs::symlink_metadata(in_jail(&secret)).is_err(),
        "the key it points at was brought into the jail: {}",
        apply.describe()
    );
    let leaked: Vec<PathBuf> = files_under(&work.root)
        .into_iter()
        .filter(|(path, metadata)| metadata.is_file() && fs::read(path).is_ok_and(|bytes| bytes == b"PRIVATE KEY\n"))
        .map(|(path, _)| path)
        .collect();
    assert!(leaked.is_empty(), "the key's content is in the jail: {leaked:#?}");
    assert!(fs::symlink_metadata(in_jail(&tree.join("current.conf"))).is_ok_and(|meta| meta.file_type().is_symlink()));
    assert_eq!(fs::read(in_jail(&tree.join("app.conf"))).expect("the tree's own file"), b"port = 8080\n");
    assert!(apply.stderr.contains("points outside"), "the operator is told: {}", apply.describe());
}

// ---------------------------------------------------------------------------------------------
// 3. The jail root's location and the root directory itself
// ---------------------------------------------------------------------------------------------

#[test]
fn jail_root_under_a_symlinked_ancestor_owned_by_a_user_is_refused() {
    need_root!("jail_root_under_a_symlinked_ancestor_owned_by_a_user_is_refused");
    let work = Workspace::new("jailprov-hostile-");
    work.write_jailfile(&format!("root = \"{UNUSED_ROOT}\"\n[[dirs]]\npath = \"/data\"\n"));
    // /…/jails is a root-owned link to a root-owned directory, inside a user's home.
    let home = work.dir.join("bob");
    fs::create_dir_all(home.join("jails")).expect("mkdir");
    give_to_user(&home);
    let jails = work.dir.join("jails");
    symlink(home.join("jails"), &jails).expect("symlink");
    let root = jails.join("jail");

    let apply = work.run_at("apply", &root, &[]).code(1, "apply under bob's home");

    assert!(apply.stderr.contains(&home.display().to_string()), "names the real directory: {}", apply.stderr);
    assert!(apply.stderr.contains("owned by uid 1000"), "says why: {}", apply.stderr);
    assert!(!home.join("jails/jail").exists(), "nothing was created under bob's home");
}

#[test]
fn jail_root_pre_created_by_a_user_is_refused() {
    need_root!("jail_root_pre_created_by_a_user_is_refused");
    // The user makes the root directory while apply is computing its plan (after the location
    // was checked, before apply creates the root): the state lock appearing says apply is there.
    for attempt in 0..5 {
        let work = Workspace::new("jailprov-hostile-");
        work.write_jailfile(&format!("root = \"{UNUSED_ROOT}\"\nbinaries = [\"bash\"]\n"));
        let apply = work
            .command("apply", &[])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("jailprov starts");
        let started = std::time::Instant::now();
        let locked = || {
            fs::read_dir(&work.state).is_ok_and(|entries| {
                entries.flatten().any(|entry| entry.path().extension().is_some_and(|e| e == "lock"))
            })
        };
        while !locked() && started.elapsed() < std::time::Duration::from_secs(20) {
            std::hint::spin_loop();
        }
        let planted = fs::create_dir(&work.root).is_ok();
        if planted {
            give_to_user(&work.root);
        }
        let output = apply.wait_with_output().expect("jailprov ends");
        let run = Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        if !planted {
            eprintln!("attempt {attempt}: apply created the root first; again");
            continue;
        }
        let run = run.code(1, "apply into a root the user made");
        assert!(run.stderr.contains("owned by uid 1000"), "says whose it is: {}", run.stderr);
        let inside: Vec<_> = fs::read_dir(&work.root).expect("the user's directory").flatten().collect();
        assert!(inside.is_empty(), "nothing was written into the user's directory: {inside:?}");
        return;
    }
    panic!("apply created the jail root before the test could, 5 times in a row");
}

/// Plans saved with `plan -o` before they carried what they saw still apply: the identity is
/// taken from the plan computed at apply time, which must equal the saved one anyway.
#[test]
fn plan_saved_without_the_nodes_it_saw_still_applies() {
    need_root!("plan_saved_without_the_nodes_it_saw_still_applies");
    let work = Workspace::new("jailprov-hostile-");
    work.write_jailfile(&shared_dir_jailfile("2775"));
    work.apply();
    work.write_jailfile(&shared_dir_jailfile("2770"));
    let plan_file = work.dir.join("plan.json");
    let plan_file_arg = plan_file.to_str().expect("UTF-8 tempdir");
    work.run("plan", &["-o", plan_file_arg]).ok("plan -o");
    let mut saved: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&plan_file).expect("read the plan")).expect("JSON");
    let changes = saved["plan"]["changes"].as_array_mut().expect("changes");
    assert!(changes.iter().any(|change| change.get("seen").is_some()), "the plan says what it saw: {changes:?}");
    for change in changes.iter_mut() {
        change.as_object_mut().expect("a change is an object").remove("seen");
    }
    fs::write(&plan_file, serde_json::to_string_pretty(&saved).expect("JSON")).expect("write the plan");

    let mut command = std::process::Command::new(cli::BIN);
    command.args(["apply", plan_file_arg, "--state-dir"]).arg(&work.state).current_dir(&work.dir);
    cli::output(command).ok("apply PLAN saved without `seen`");
    assert_eq!(fs::metadata(work.at("/home/u/shared")).expect("stat").mode() & 0o7777, 0o2770);
}

// ---------------------------------------------------------------------------------------------
// 5. What an inhabitant leaves in the jail neither stops apply nor gets deleted with a tree
// ---------------------------------------------------------------------------------------------

/// A managed symlink, then a managed directory in the user's home.
fn link_and_dir_jailfile(data: &str) -> String {
    format!(
        r#"root = "{UNUSED_ROOT}"

[[users]]
name = "u"
uid = {USER}
gid = {USER}
home = "/home/u"

[[files]]
path = "/home/u/motd"
content = "hello\n"

{data}
"#
    )
}

#[test]
fn managed_symlink_pointed_at_a_non_utf8_name_is_replaced_not_a_dead_end() {
    need_root!("managed_symlink_pointed_at_a_non_utf8_name_is_replaced_not_a_dead_end");
    use std::os::unix::ffi::OsStrExt;
    let work = Workspace::new("jailprov-hostile-");
    // A binary brings the host's usr-merge links (/lib -> usr/lib...), managed symlinks.
    work.write_jailfile(&format!("binaries = [\"true\"]\n{}", link_and_dir_jailfile("")));
    work.apply();
    let lib = work.at("/lib");
    let Ok(target) = fs::read_link(&lib) else {
        eprintln!("SKIPPED managed_symlink_pointed_at_a_non_utf8_name_is_replaced_not_a_dead_end: no /lib link (host without usr-merge)");
        return;
    };
    // Jail root re-points it at a name that is not UTF-8.
    fs::remove_file(&lib).expect("remove the link");
    symlink(std::ffi::OsStr::from_bytes(b"usr/li\xffb"), &lib).expect("re-point it");
    let plan = work.run("plan", &[]);
    assert_eq!(plan.code, 0, "plan must not stop at a non-UTF-8 target: {}", plan.describe());
    let expected = format!("target usr/li\\xffb -> {}", target.display());
    assert!(plan.stdout.contains(&expected), "{expected}: {}", plan.describe());
    work.apply();
    assert_eq!(fs::read_link(&lib).expect("readlink"), target);
}

#[test]
fn directory_to_be_replaced_keeps_what_the_user_put_in_it() {
    need_root!("directory_to_be_replaced_keeps_what_the_user_put_in_it");
    let work = Workspace::new("jailprov-hostile-");
    work.write_jailfile(&link_and_dir_jailfile(
        "[[dirs]]\npath = \"/home/u/data\"\n\n[[dirs]]\npath = \"/home/u/data/sub\"\n",
    ));
    work.apply();
    let mine = work.at("/home/u/data/sub/mine.txt");
    fs::write(&mine, "the user's own work\n").expect("the user's file");
    // The Jailfile now wants a file where jailprov had made the directory.
    work.write_jailfile(&link_and_dir_jailfile("[[files]]\npath = \"/home/u/data\"\ncontent = \"now a file\\n\"\n"));
    let plan = work.run("plan", &[]);
    assert!(
        plan.stdout.contains("holds what jailprov did not create (/home/u/data/sub/mine.txt)")
            || plan.stderr.contains("holds what jailprov did not create (/home/u/data/sub/mine.txt)"),
        "{}",
        plan.describe()
    );
    let apply = work.run("apply", &[]);
    assert_ne!(apply.code, 0, "apply must refuse: {}", apply.describe());
    assert_eq!(fs::read_to_string(&mine).expect("the user's file is still there"), "the user's own work\n");
    // Once the user moves it away, the replacement goes through.
    fs::remove_file(&mine).expect("the user moves it away");
    work.apply();
    assert_eq!(fs::read_to_string(work.at("/home/u/data")).expect("now a file"), "now a file\n");
}
