//! Files a hostile inhabitant or local user controls: jail files that grow into terabytes while
//! they are read, names check or plan cannot spell, and files beside the jail (the Jailfile, its
//! lock, the state directory, a saved plan) swapped for FIFOs, forged or planted links.
//!
//! Like tests/apply.rs: the real binary, as root, in a fresh 0700 tempdir (tests/cli's
//! Workspace). Without root each test prints `SKIPPED <name>: needs root` and passes.
#![allow(clippy::disallowed_methods)] // tests build fixtures and jails with plain fs calls

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[macro_use]
mod cli;
use cli::{output, Run, Workspace, BIN, UNUSED_ROOT};

/// 1 TiB: reading it whole would take hours and any attempt to hold it fails at once.
const TERABYTE: u64 = 1 << 40;

/// The address-space limit (1 GiB) the memory tests run jailprov under: a plan of a small jail
/// fits in it with room for the thread stacks of a large machine; holding a terabyte does not.
const ADDRESS_SPACE: &str = "--as=1073741824";

/// A workspace whose Jailfile has one inline file, /etc/motd.
fn jail_with_content() -> Workspace {
    let workspace = Workspace::new("jailprov-hostile-");
    workspace.write_jailfile(&format!(
        "root = \"{UNUSED_ROOT}\"\n\n[[files]]\npath = \"/etc/motd\"\ncontent = \"ten bytes\\n\"\n"
    ));
    workspace
}

/// A sparse file of `size` bytes at `path` (no data blocks: it costs nothing on disk).
fn sparse_file(path: &Path, size: u64) {
    let file = fs::File::create(path).unwrap_or_else(|error| panic!("create {}: {error}", path.display()));
    file.set_len(size).expect("set_len");
}

/// `jailprov SUBCOMMAND` under `prlimit --as` and `timeout`: a run that tries to hold a huge
/// file fails to allocate, one that reads it forever is killed (exit 124).
fn run_bounded(workspace: &Workspace, subcommand: &str, extra: &[&str]) -> (Run, Duration) {
    let plain = workspace.command(subcommand, extra);
    let mut command = Command::new("timeout");
    command.arg("60").arg("prlimit").arg(ADDRESS_SPACE).arg(BIN);
    command.args(plain.get_args()).current_dir(&workspace.dir).stdin(std::process::Stdio::null());
    let started = Instant::now();
    let run = output(command);
    (run, started.elapsed())
}

// ---------------------------------------------------------------------------------------------
// 1. Bounded reads of jail files
// ---------------------------------------------------------------------------------------------

/// An inhabitant replaces a managed inline file with a 1 TiB sparse file: plan and check finish
/// at once, within a small address space, reporting the file as changed.
#[test]
fn terabyte_sparse_file_in_place_of_managed_content_is_changed_not_read() {
    need_root!("terabyte_sparse_file_in_place_of_managed_content_is_changed_not_read");
    let jail = jail_with_content();
    jail.apply();
    let motd = jail.at("/etc/motd");
    fs::remove_file(&motd).expect("remove motd");
    sparse_file(&motd, TERABYTE);

    let (plan, took) = run_bounded(&jail, "plan", &["--detailed-exitcode"]);
    let plan = plan.code(2, "plan with a terabyte in place of /etc/motd");
    assert!(plan.stdout.contains("/etc/motd"), "the file is a change: {}", plan.describe());
    assert!(took < Duration::from_secs(30), "plan took {took:?}");

    let (check, took) = run_bounded(&jail, "check", &["--format", "json"]);
    let check = check.code(1, "check with a terabyte in place of /etc/motd");
    assert!(check.stdout.contains("\"JP001\"") && check.stdout.contains("/etc/motd"), "{}", check.describe());
    assert!(took < Duration::from_secs(30), "check took {took:?}");
}

/// The same file flipped between its ten bytes and a 1 TiB sparse file while plan runs (the stat
/// sees ten bytes, the read a terabyte): plan never reads past what it may hold.
#[test]
fn managed_content_flipped_to_a_terabyte_during_plan_is_never_read_whole() {
    need_root!("managed_content_flipped_to_a_terabyte_during_plan_is_never_read_whole");
    let jail = jail_with_content();
    jail.apply();
    let motd = jail.at("/etc/motd");
    let small = jail.at("/etc/motd.small");
    let big = jail.at("/etc/motd.big");
    fs::write(&small, "changed!!\n").expect("write the small one");
    sparse_file(&big, TERABYTE);
    fs::rename(&small, &motd).expect("start small");

    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (stop, motd, big) = (Arc::clone(&stop), motd.clone(), big.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // Atomic swap: /etc/motd is always there, ten bytes or a terabyte.
                let _ = nix::fcntl::renameat2(
                    nix::fcntl::AT_FDCWD,
                    &motd,
                    nix::fcntl::AT_FDCWD,
                    &big,
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                );
            }
        })
    };
    let mut runs = Vec::new();
    for _ in 0..12 {
        runs.push(run_bounded(&jail, "plan", &["--detailed-exitcode"]));
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().expect("the flipper thread");
    for (run, took) in runs {
        let run = run.code(2, "plan while /etc/motd flips between ten bytes and a terabyte");
        assert!(run.stdout.contains("/etc/motd"), "{}", run.describe());
        assert!(took < Duration::from_secs(30), "plan took {took:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. A name that is not UTF-8 in a directory jailprov created
// ---------------------------------------------------------------------------------------------

/// An inhabitant drops a file named with bytes that are not UTF-8 into a directory jailprov
/// created; the Jailfile then drops the directory. plan, apply and destroy keep the directory for
/// the foreign file (as for any other), none of them fails, and the file survives all three.
#[test]
fn non_utf8_name_in_a_created_directory_is_foreign_and_kept() {
    use std::os::unix::ffi::OsStrExt;
    need_root!("non_utf8_name_in_a_created_directory_is_foreign_and_kept");
    let jail = Workspace::new("jailprov-hostile-");
    let with_dir = format!("root = \"{UNUSED_ROOT}\"\n\n[[dirs]]\npath = \"/data\"\n\n[[files]]\npath = \"/etc/motd\"\ncontent = \"hi\\n\"\n");
    jail.write_jailfile(&with_dir);
    jail.apply();
    let planted = jail.at("/data").join(std::ffi::OsStr::from_bytes(b"bad-\xff\xfe-name"));
    fs::write(&planted, "the inhabitant's").expect("plant a non-UTF-8 name");

    jail.write_jailfile(&format!("root = \"{UNUSED_ROOT}\"\n\n[[files]]\npath = \"/etc/motd\"\ncontent = \"hi\\n\"\n"));
    let plan = jail.run("plan", &[]).ok("plan with a non-UTF-8 name in a directory to delete");
    assert!(!plan.stdout.contains("- dir"), "the directory is not deleted: {}", plan.describe());
    jail.run("apply", &[]).ok("apply with a non-UTF-8 name in a directory to delete");
    assert!(planted.exists(), "apply kept the foreign file");
    let destroy = jail.run("destroy", &["--yes"]).ok("destroy with a non-UTF-8 name in a kept directory");
    assert!(planted.exists(), "destroy kept the foreign file: {}", destroy.describe());
    assert!(destroy.stdout.contains("/data"), "destroy names what it kept: {}", destroy.describe());
}

// ---------------------------------------------------------------------------------------------
// 2. check walks every subtree
// ---------------------------------------------------------------------------------------------

/// A root-owned setuid copy of a shell at `name` in the directory fd `dir`.
fn setuid_file_at(dir: &std::os::fd::OwnedFd, name: &str) {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC;
    let fd = openat(dir, name, flags, Mode::from_bits_truncate(0o755)).expect("create the setuid file");
    nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(0o4755)).expect("chmod u+s");
}

/// check's exit code and findings (code, path) of a run with `--format json`.
fn check_findings(jail: &Workspace) -> (Run, Vec<(String, String)>) {
    let run = jail.run("check", &["--format", "json"]);
    let value: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|error| panic!("check JSON: {error}: {}", run.describe()));
    let findings = value["findings"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    let field = |name: &str| item[name].as_str().unwrap_or_default().to_owned();
                    (field("code"), field("path"))
                })
                .collect()
        })
        .unwrap_or_default();
    (run, findings)
}

/// A setuid-root file inside a directory whose name is not UTF-8: check reports it (the name
/// escaped) and exits non-zero, instead of skipping the whole directory and exiting 0.
#[test]
fn setuid_file_under_a_non_utf8_directory_name_is_reported() {
    use std::os::unix::ffi::OsStrExt;
    need_root!("setuid_file_under_a_non_utf8_directory_name_is_reported");
    let jail = jail_with_content();
    jail.apply();
    let hidden = jail.at("/").join(std::ffi::OsStr::from_bytes(b"hid\xffden"));
    fs::create_dir(&hidden).expect("mkdir a non-UTF-8 name");
    let dir = nix::fcntl::open(
        &hidden,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .expect("open it");
    setuid_file_at(&dir, "sh");

    let (run, findings) = check_findings(&jail);
    assert_eq!(run.code, 1, "{}", run.describe());
    assert!(
        findings.contains(&("JP010".to_owned(), "/hid\\xffden/sh".to_owned())),
        "the setuid file is reported, its directory's name escaped: {findings:?}"
    );
}

/// A setuid-root file nested deeper than PATH_MAX (built with mkdirat/openat: no path string
/// can reach it): check reports it and exits non-zero.
#[test]
fn setuid_file_deeper_than_path_max_is_reported() {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::{mkdirat, Mode};
    need_root!("setuid_file_deeper_than_path_max_is_reported");
    let jail = jail_with_content();
    jail.apply();
    let component = "d".repeat(200);
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut dir = nix::fcntl::open(&jail.root, flags, Mode::empty()).expect("open the jail root");
    let levels = 24; // 24 * 201 bytes: past PATH_MAX (4096), far from the depth limit
    for _ in 0..levels {
        mkdirat(&dir, component.as_str(), Mode::from_bits_truncate(0o755)).expect("mkdirat");
        dir = openat(&dir, component.as_str(), flags, Mode::empty()).expect("openat");
    }
    setuid_file_at(&dir, "sh");
    let deep = format!("{}/sh", format!("/{component}").repeat(levels));
    assert!(deep.len() > 4096);

    let (run, findings) = check_findings(&jail);
    assert_eq!(run.code, 1, "{}", run.describe());
    assert!(
        findings.contains(&("JP010".to_owned(), deep)),
        "the setuid file deeper than PATH_MAX is reported: {:?}",
        findings.iter().map(|(code, path)| (code, path.len())).collect::<Vec<_>>()
    );
}

/// A tree deeper than check's depth limit: the subtree it does not descend into is an error
/// finding (JP019), never a silent exit 0.
#[test]
fn subtree_past_the_depth_limit_is_an_error_finding() {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::{mkdirat, Mode};
    need_root!("subtree_past_the_depth_limit_is_an_error_finding");
    let jail = jail_with_content();
    jail.apply();
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut dir = nix::fcntl::open(&jail.root, flags, Mode::empty()).expect("open the jail root");
    for _ in 0..300 {
        mkdirat(&dir, "d", Mode::from_bits_truncate(0o755)).expect("mkdirat");
        dir = openat(&dir, "d", flags, Mode::empty()).expect("openat");
    }
    let (run, findings) = check_findings(&jail);
    assert_eq!(run.code, 1, "{}", run.describe());
    assert!(findings.iter().any(|(code, path)| code == "JP019" && path.starts_with("/d/d/")), "{findings:?}");
}

// ---------------------------------------------------------------------------------------------
// 4. Files beside the jail
// ---------------------------------------------------------------------------------------------

/// `jailprov SUBCOMMAND` under `timeout 20`: exit 124 means it hung.
fn run_with_timeout(workspace: &Workspace, subcommand: &str, extra: &[&str]) -> Run {
    let plain = workspace.command(subcommand, extra);
    let mut command = Command::new("timeout");
    command.arg("20").arg(BIN).args(plain.get_args()).current_dir(&workspace.dir).stdin(std::process::Stdio::null());
    output(command)
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
}

/// A Jailfile path that is a FIFO (no writer ever comes): plan and check refuse it at once,
/// naming it, instead of hanging on the open.
#[test]
fn jailfile_that_is_a_fifo_is_refused_without_hanging() {
    need_root!("jailfile_that_is_a_fifo_is_refused_without_hanging");
    let jail = Workspace::new("jailprov-hostile-");
    mkfifo(&jail.jailfile);
    for subcommand in ["plan", "check", "apply"] {
        let run = run_with_timeout(&jail, subcommand, &[]).code(1, subcommand);
        assert!(run.stderr.contains("is a FIFO, not a regular file"), "{subcommand}: {}", run.describe());
        assert!(run.stderr.contains(&jail.jailfile.display().to_string()), "names it: {}", run.describe());
    }
}

/// A Jailfile.lock that is a FIFO: plan refuses it instead of hanging.
#[test]
fn lock_that_is_a_fifo_is_refused_without_hanging() {
    need_root!("lock_that_is_a_fifo_is_refused_without_hanging");
    let jail = jail_with_content();
    mkfifo(&jail.dir.join("Jailfile.lock"));
    let run = run_with_timeout(&jail, "plan", &[]).code(1, "plan with a FIFO lock");
    assert!(run.stderr.contains("the lock") && run.stderr.contains("is a FIFO"), "{}", run.describe());
}

/// A Jailfile of 5 MiB (valid TOML: one comment line) is refused with its size and the limit,
/// not read into memory.
#[test]
fn jailfile_over_the_size_limit_is_refused() {
    need_root!("jailfile_over_the_size_limit_is_refused");
    let jail = Workspace::new("jailprov-hostile-");
    let padding = format!("# {}\n", "x".repeat(5 * 1024 * 1024));
    jail.write_jailfile(&format!("{padding}root = \"{UNUSED_ROOT}\"\n"));
    let run = jail.run("plan", &[]).code(1, "plan of a 5 MiB Jailfile");
    assert!(run.stderr.contains("more than the 4194304 bytes"), "{}", run.describe());
}

/// A state directory others can write (or another user owns) is refused before anything in it
/// is read or written, naming it and what to do; nothing is applied.
#[test]
fn state_dir_writable_by_others_or_owned_by_another_user_is_refused() {
    need_root!("state_dir_writable_by_others_or_owned_by_another_user_is_refused");
    let jail = jail_with_content();
    fs::create_dir(&jail.state).expect("mkdir state");
    fs::set_permissions(&jail.state, fs::Permissions::from_mode(0o777)).expect("chmod 0777");
    for subcommand in ["apply", "plan"] {
        let run = jail.run(subcommand, &[]).code(1, &format!("{subcommand} with a 0777 state dir"));
        assert!(
            run.stderr.contains(&format!("the state directory {}", jail.state.display()))
                && run.stderr.contains("chmod go-w")
                && run.stderr.contains("--state-dir"),
            "{subcommand}: {}",
            run.describe()
        );
    }
    assert!(!jail.at("/etc/motd").exists(), "nothing applied");

    fs::set_permissions(&jail.state, fs::Permissions::from_mode(0o700)).expect("chmod 0700");
    nix::unistd::chown(&jail.state, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown nobody");
    let run = jail.run("apply", &[]).code(1, "apply with a state dir owned by nobody");
    assert!(run.stderr.contains("owned by uid 65534"), "{}", run.describe());

    // Its lock-cache subdirectory too.
    nix::unistd::chown(&jail.state, Some(nix::unistd::Uid::from_raw(0)), None).expect("chown root");
    jail.apply();
    fs::set_permissions(&jail.state, fs::Permissions::from_mode(0o770)).expect("chmod 0770");
    let run = jail.run("check", &[]).code(1, "check with a group-writable state dir");
    assert!(run.stderr.contains(&format!("the state directory {}", jail.state.display())), "{}", run.describe());
    fs::set_permissions(&jail.state, fs::Permissions::from_mode(0o700)).expect("chmod 0700");
    let cache = jail.state.join("lock-cache");
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o777)).expect("chmod the cache 0777");
    let run = jail.run("plan", &[]).code(1, "plan with a 0777 lock-cache");
    assert!(run.stderr.contains(&format!("the state directory {}", cache.display())), "{}", run.describe());
}

/// Symlinks planted at the temporary names the state, intent and memo writers used to use
/// (`NAME.tmp`, `NAME.memo.tmp`): apply and plan never write through them.
#[test]
fn symlink_planted_at_a_state_temp_name_is_never_followed() {
    need_root!("symlink_planted_at_a_state_temp_name_is_never_followed");
    let jail = jail_with_content();
    fs::create_dir(&jail.state).expect("mkdir state");
    fs::set_permissions(&jail.state, fs::Permissions::from_mode(0o700)).expect("chmod 0700");
    let victim = jail.dir.join("victim");
    fs::write(&victim, "the victim's bytes\n").expect("write the victim");
    let store = jailprov::state::StateStore::for_root(&jail.state, &jail.root);
    let with_tmp =
        |path: &Path| path.with_file_name(format!("{}.tmp", path.file_name().expect("name").to_string_lossy()));
    let planted =
        [with_tmp(&store.state_file), with_tmp(&store.intent_file), store.memo_file.with_extension("memo.tmp")];
    for link in &planted {
        symlink(&victim, link).expect("plant a symlink");
    }

    jail.apply();
    // A plan writes no memo while what it looks at changed in the last ticks (tests/memo.rs).
    std::thread::sleep(Duration::from_millis(150));
    jail.run("plan", &[]).ok("a no-op plan writes the memo");
    jail.run("plan", &[]).ok("a plan answered by the memo");
    assert_eq!(fs::read_to_string(&victim).expect("the victim"), "the victim's bytes\n", "never written through");
    for link in &planted {
        assert!(fs::symlink_metadata(link).expect("still there").file_type().is_symlink(), "{}", link.display());
    }
    assert!(store.state_file.exists() && store.memo_file.exists(), "state and memo were written beside them");
    let state = fs::symlink_metadata(&store.state_file).expect("state");
    assert!(state.file_type().is_file() && state.mode() & 0o077 == 0, "a private regular file");
}

/// A saved plan owned by another user, or writable by others, is refused by `apply FILE`; the
/// same plan owned by root with mode 0644 is applied.
#[test]
fn saved_plan_owned_by_nobody_or_writable_by_others_is_refused() {
    need_root!("saved_plan_owned_by_nobody_or_writable_by_others_is_refused");
    let jail = jail_with_content();
    let saved = jail.dir.join("plan.json");
    let saved_text = saved.display().to_string();
    jail.run("plan", &["-o", &saved_text]).ok("plan -o");
    fs::set_permissions(&saved, fs::Permissions::from_mode(0o644)).expect("chmod 0644");

    nix::unistd::chown(&saved, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown nobody");
    let run = jail.run("apply", &[&saved_text]).code(1, "apply of a plan owned by nobody");
    assert!(run.stderr.contains("the saved plan") && run.stderr.contains("owned by uid 65534"), "{}", run.describe());

    nix::unistd::chown(&saved, Some(nix::unistd::Uid::from_raw(0)), None).expect("chown root");
    fs::set_permissions(&saved, fs::Permissions::from_mode(0o666)).expect("chmod 0666");
    let run = jail.run("apply", &[&saved_text]).code(1, "apply of a plan anyone can write");
    assert!(run.stderr.contains("mode 0666"), "{}", run.describe());
    assert!(!jail.at("/etc/motd").exists(), "nothing applied");

    fs::set_permissions(&saved, fs::Permissions::from_mode(0o644)).expect("chmod 0644");
    jail.run("apply", &[&saved_text]).ok("apply of a private plan");
    assert!(jail.at("/etc/motd").exists());
}

/// The lock's hash cache in the state directory replaced by a FIFO (say by an earlier run as
/// another user): plan ignores it and hashes again instead of hanging on it.
#[test]
fn lock_cache_that_is_a_fifo_is_ignored_without_hanging() {
    need_root!("lock_cache_that_is_a_fifo_is_ignored_without_hanging");
    let jail = jail_with_content();
    jail.apply();
    let caches: Vec<_> = fs::read_dir(jail.state.join("lock-cache"))
        .expect("the lock cache directory")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert!(!caches.is_empty());
    for cache in &caches {
        fs::remove_file(cache).expect("remove a cache file");
        mkfifo(cache);
    }
    fs::write(jail.at("/etc/motd"), "edited\n").expect("a change, so the plan is not answered by the memo");
    let run = run_with_timeout(&jail, "plan", &["--detailed-exitcode"]);
    assert_eq!(run.code, 2, "plan finishes with the change: {}", run.describe());
}
