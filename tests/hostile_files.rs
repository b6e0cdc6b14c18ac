//! Files a hostile inhabitant or local user controls: jail files that grow into terabytes while
//! they are read, names check or plan cannot spell, and files beside the jail (the Jailfile, its
//! lock, the state directory, a saved plan) swapped for FIFOs, forged or planted links.
//!
//! Like tests/apply.rs: the real binary, as root, in a fresh 0700 tempdir (tests/cli's
//! Workspace). Without root each test prints `SKIPPED <name>: needs root` and passes.
#![allow(clippy::disallowed_methods)] // tests build fixtures and jails with plain fs calls

use std::fs;
#[allow(unused_imports)] // used by the tests of later items
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

/// The address-space limit the memory tests run jailprov under: a plan of a small jail fits in
/// it many times over, a read of a terabyte (or a 1 MiB buffer per thread gone wild) does not.
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
    let destroy = jail.run("destroy", &[]).ok("destroy with a non-UTF-8 name in a kept directory");
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
