//! Jailfile.lock (host drift, `--locked`, `jailprov lock`) and `jailprov check` against real
//! jails on this host's disk.
//!
//! Like tests/apply.rs: every test runs the real binary as root in a fresh 0700 tempdir holding
//! the Jailfile, its lock, the jail root and the state directory. Host changes are simulated
//! with `[[files]]` sources in that tempdir: no real host file is ever edited. Without root each
//! test prints `SKIPPED <name>: needs root` and passes.
#![allow(clippy::disallowed_methods)] // tests build fixtures and jails with plain fs calls

use std::collections::BTreeMap;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

#[macro_use]
mod cli;
use cli::{Workspace, BIN, UNUSED_ROOT};

/// A workspace (tests/cli) with a private source tree (`src`) beside the Jailfile.
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
    fn new() -> Jail {
        let workspace = Workspace::new("jailprov-lock-");
        let src = workspace.dir.join("src");
        fs::create_dir(&src).expect("mkdir src");
        Jail { workspace, src }
    }

    fn with_jailfile(text: &str) -> Jail {
        let jail = Jail::new();
        jail.write_jailfile(text);
        jail
    }

    fn lock_file(&self) -> PathBuf {
        self.dir.join("Jailfile.lock")
    }

    fn check_json(&self) -> (i32, serde_json::Value) {
        let run = self.run("check", &["--format", "json"]);
        let value =
            serde_json::from_str(&run.stdout).unwrap_or_else(|error| panic!("check JSON: {error}: {}", run.describe()));
        (run.code, value)
    }
}

/// (code, severity, path) of each finding.
fn findings(check: &serde_json::Value) -> Vec<(String, String, String)> {
    check["findings"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    let field = |name: &str| item[name].as_str().unwrap_or_default().to_owned();
                    (field("code"), field("severity"), field("path"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn has_finding(check: &serde_json::Value, code: &str, severity: &str, path: &str) -> bool {
    findings(check).iter().any(|(c, s, p)| c == code && s == severity && p == path)
}

/// Every path of the jail with its stat (kind bits, size, mtime, ctime, inode): the jail
/// untouched means this map unchanged.
fn stats(root: &Path) -> BTreeMap<String, (u32, u64, i64, i64, i64, u64)> {
    let mut map = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.expect("walk the jail");
        let metadata = entry.path().symlink_metadata().expect("lstat");
        map.insert(
            entry.path().display().to_string(),
            (
                metadata.mode(),
                metadata.size(),
                metadata.mtime_nsec(),
                metadata.mtime(),
                metadata.ctime_nsec(),
                metadata.ino(),
            ),
        );
    }
    map
}

/// A small jail: `cat` and its libraries, one `[[files]]` source from the private tree.
fn jail_with_source(content: &[u8]) -> Jail {
    let jail = Jail::new();
    fs::write(jail.src.join("app.conf"), content).expect("write the source");
    jail.write_jailfile(&format!(
        "root = \"{UNUSED_ROOT}\"\nbinaries = [\"cat\"]\n\n[[files]]\nsrc = \"{}\"\ndest = \"/etc/app.conf\"\nmode = \"0644\"\n",
        jail.src.join("app.conf").display()
    ));
    jail
}

/// Overwrites one byte of a file in place, keeping its size and modification time (what a
/// careful tamperer would do; only the ctime moves).
fn flip_byte(path: &Path, offset: u64) {
    let modified = fs::metadata(path).expect("stat").modified().expect("mtime");
    let mut file = fs::OpenOptions::new().read(true).write(true).open(path).expect("open for writing");
    let mut byte = [0u8; 1];
    file.seek(SeekFrom::Start(offset)).expect("seek");
    std::io::Read::read_exact(&mut file, &mut byte).expect("read the byte");
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.write_all(&[byte[0] ^ 0x20]).expect("write the byte");
    file.set_times(fs::FileTimes::new().set_modified(modified)).expect("restore mtime");
}

// ---------------------------------------------------------------------------------------------
// Jailfile.lock
// ---------------------------------------------------------------------------------------------

/// The lock proof: an edited `[[files]]` source is host drift, `--locked` refuses it
/// (exit 1, jail and lock untouched), `jailprov lock` prints the one-line change, and plan shows
/// it in its own section before the jail changes.
#[test]
fn edited_source_is_host_drift_refused_by_locked_and_one_line_in_lock() {
    need_root!("edited_source_is_host_drift_refused_by_locked_and_one_line_in_lock");
    let jail = jail_with_source(b"port = 1\n");
    let first = jail.apply();
    assert!(first.stderr.contains("Wrote") && jail.lock_file().exists(), "apply writes the lock: {}", first.describe());
    jail.run("plan", &["--locked", "--detailed-exitcode"]).code(0, "plan --locked right after apply");

    // Same size, so only the content hash can tell.
    fs::write(jail.src.join("app.conf"), b"port = 2\n").expect("edit the source");
    let lock_before = fs::read(jail.lock_file()).expect("read the lock");
    let jail_before = stats(&jail.root);

    let refused = jail.run("plan", &["--locked"]).code(1, "plan --locked with host drift");
    assert!(
        refused.stderr.contains("/etc/app.conf  blake3 ") && refused.stderr.contains("--locked"),
        "the error names the path and the hashes: {}",
        refused.describe()
    );
    let refused = jail.run("apply", &["--locked"]).code(1, "apply --locked with host drift");
    assert!(refused.stderr.contains("nothing was changed"), "{}", refused.describe());
    assert_eq!(stats(&jail.root), jail_before, "apply --locked touched the jail");
    assert_eq!(fs::read(jail.lock_file()).expect("read"), lock_before, "--locked rewrote the lock");

    let lock = jail.run("lock", &[]).ok("jailprov lock");
    let changes: Vec<&str> = lock.stdout.lines().filter(|line| line.contains(" → ")).collect();
    assert_eq!(changes.len(), 1, "exactly one changed path: {}", lock.describe());
    assert!(changes[0].starts_with("/etc/app.conf: blake3 "), "{}", lock.describe());
    assert!(!changes[0].contains(" B"), "same size: no size change shown: {}", changes[0]);
    jail.run("plan", &["--locked"]).ok("plan --locked after jailprov lock accepted the change");
    let again = jail.run("lock", &[]).ok("jailprov lock again");
    assert!(again.stdout.contains("is up to date"), "{}", again.describe());

    // Without --locked, plan shows the drift first, then the jail change, and leaves the lock
    // alone (tests/drift.rs: until `jailprov lock` or apply accepts it).
    fs::write(jail.src.join("app.conf"), b"port = 33\n").expect("edit the source again");
    let plan = jail.run("plan", &[]).ok("plan with host drift");
    let drift = plan.stdout.find("host drift: /etc/app.conf  blake3 ").unwrap_or_else(|| panic!("{}", plan.describe()));
    let changes = plan.stdout.find("will make these changes").unwrap_or_else(|| panic!("{}", plan.describe()));
    assert!(drift < changes, "the drift section comes before the jail changes: {}", plan.describe());
    assert!(plan.stdout.contains("size 9 B → 10 B"), "{}", plan.describe());
    jail.run("plan", &["--locked"]).code(1, "plan did not accept the drift");
}

#[test]
fn plan_json_lists_host_drift() {
    need_root!("plan_json_lists_host_drift");
    let jail = jail_with_source(b"a\n");
    jail.run("lock", &[]).ok("jailprov lock writes the lock");
    fs::write(jail.src.join("app.conf"), b"b\n").expect("edit the source");
    let plan = jail.run("plan", &["--format", "json"]).ok("plan --format json");
    let value: serde_json::Value = serde_json::from_str(&plan.stdout).expect("plan JSON");
    let drift = value["host_drift"].as_array().unwrap_or_else(|| panic!("{}", plan.describe()));
    assert_eq!(drift.len(), 1, "{value:#}");
    assert_eq!(drift[0]["path"], "/etc/app.conf");
    assert!(drift[0]["what"].as_str().is_some_and(|what| what.starts_with("blake3 ")), "{value:#}");
}

#[test]
fn locked_without_a_lock_is_an_error_and_writes_nothing() {
    need_root!("locked_without_a_lock_is_an_error_and_writes_nothing");
    let jail = jail_with_source(b"x\n");
    let run = jail.run("apply", &["--locked"]).code(1, "apply --locked without a lock");
    assert!(run.stderr.contains("does not exist") && run.stderr.contains("jailprov lock"), "{}", run.describe());
    assert!(!jail.lock_file().exists(), "--locked must not write a lock");
    assert!(!jail.root.exists(), "nothing was applied");
}

/// Two runs on an unchanged host write the same bytes (even with the per-host cache gone), and a
/// Jailfile rewritten with CRLF, comments, other spacing and key order has the same digest.
#[test]
fn lock_is_byte_identical_across_runs_and_ignores_jailfile_formatting() {
    need_root!("lock_is_byte_identical_across_runs_and_ignores_jailfile_formatting");
    let jail = jail_with_source(b"port = 1\n");
    jail.run("lock", &[]).ok("first lock");
    let first = fs::read(jail.lock_file()).expect("the lock exists");
    fs::remove_file(jail.lock_file()).expect("remove the lock");
    fs::remove_dir_all(jail.state.join("lock-cache")).expect("remove the hash cache");
    jail.run("lock", &[]).ok("second lock");
    assert_eq!(fs::read(jail.lock_file()).expect("the lock exists"), first, "the lock changed between runs");
    let unchanged = jail.run("lock", &[]).ok("jailprov lock on an unchanged host");
    assert!(unchanged.stdout.contains("is up to date"), "{}", unchanged.describe());

    let source = jail.src.join("app.conf");
    let reformatted = format!(
        "# the same Jailfile, written differently\r\n[[files]]\r\nmode   = '0644'\r\ndest = \"/etc/app.conf\"   # moved\r\nsrc = '{}'\r\n\r\n[[dirs]]\r\n",
        source.display()
    );
    // Keys after [[dirs]] would belong to it: put the top-level keys first, in another order.
    let reformatted = format!(
        "binaries = [\r\n  \"cat\",\r\n]\r\nroot = '{UNUSED_ROOT}'\r\n\r\n{}",
        reformatted.trim_end_matches("[[dirs]]\r\n")
    );
    jail.write_jailfile(&reformatted);
    jail.run("plan", &["--locked"]).ok("the reformatted CRLF Jailfile matches the lock");
    assert_eq!(fs::read(jail.lock_file()).expect("the lock exists"), first);
}

// ---------------------------------------------------------------------------------------------
// jailprov check
// ---------------------------------------------------------------------------------------------

/// A one-byte edit that keeps size and mtime is found in a small file and 40 KB into a large
/// one (jk_check's single 1 KB sample would miss the latter); `--fix` restores both.
#[test]
fn one_byte_same_size_edits_are_found_anywhere_in_a_file() {
    need_root!("one_byte_same_size_edits_are_found_anywhere_in_a_file");
    let jail = Jail::new();
    let big: Vec<u8> = (0..64 * 1024u32).map(|index| b'a' + (index % 26) as u8).collect();
    fs::write(jail.src.join("big.dat"), &big).expect("write big");
    fs::write(jail.src.join("small.conf"), b"key = value\n").expect("write small");
    jail.write_jailfile(&format!(
        "root = \"{UNUSED_ROOT}\"\nbinaries = [\"cat\"]\n\n[[files]]\nsrc = \"{}\"\ndest = \"/data\"\n",
        jail.src.display()
    ));
    jail.apply();
    let (code, clean) = jail.check_json();
    assert_eq!(code, 0, "{clean:#}");
    assert_eq!(findings(&clean), [], "{clean:#}");

    flip_byte(&jail.at("/data/big.dat"), 40_000);
    flip_byte(&jail.at("/data/small.conf"), 0);
    let (code, check) = jail.check_json();
    assert_eq!(code, 1, "an edited managed file is an error: {check:#}");
    assert!(has_finding(&check, "JP001", "error", "/data/big.dat"), "the edit 40 KB in is found: {check:#}");
    assert!(has_finding(&check, "JP001", "error", "/data/small.conf"), "{check:#}");

    let fixed = jail.run("check", &["--fix"]).ok("check --fix");
    assert!(fixed.stdout.contains("/data/big.dat (content)"), "{}", fixed.describe());
    assert_eq!(fs::read(jail.at("/data/big.dat")).expect("read"), big, "--fix restored the content");
    let (code, check) = jail.check_json();
    assert_eq!((code, findings(&check)), (0, vec![]), "{check:#}");
}

/// The security findings, each planted by hand in an applied jail: a setuid binary owned
/// by nobody, a symlink to /etc/shadow (and one to /proc/self/root, one climbing out), an
/// undeclared device, a world-writable directory, a hard link to a copied source, an unsafe
/// ancestor of the root; `--fix` deletes none of these foreign files.
#[test]
fn planted_setuid_symlinks_devices_and_writable_dirs_are_flagged() {
    need_root!("planted_setuid_symlinks_devices_and_writable_dirs_are_flagged");
    let jail = jail_with_source(b"x\n");
    jail.apply();
    let nobody = 65534;

    let evil = jail.at("/usr/bin/evil");
    fs::write(&evil, b"#!/bin/sh\n").expect("plant a program");
    std::os::unix::fs::chown(&evil, Some(nobody), Some(nobody)).expect("chown nobody");
    fs::set_permissions(&evil, fs::Permissions::from_mode(0o4755)).expect("chmod 4755");
    // Links are only ever read (readlinkat) by check; they point at host paths, so this test never
    // runs --fix while they exist and the tempdir removal unlinks them without following.
    symlink("/etc/shadow", jail.at("/etc/shadow-link")).expect("plant a link");
    symlink("/proc/self/root", jail.at("/etc/rootfs")).expect("plant a link");
    symlink("../../../../../../../../etc/passwd", jail.at("/etc/escape")).expect("plant a link");
    nix::sys::stat::mknod(
        &jail.at("/etc/mem"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 1),
    )
    .expect("mknod");
    fs::create_dir(jail.at("/srv")).expect("mkdir");
    fs::set_permissions(jail.at("/srv"), fs::Permissions::from_mode(0o777)).expect("chmod 0777");
    // A hard link to a file the Jailfile copies (the private source, in this tempdir).
    fs::hard_link(jail.src.join("app.conf"), jail.at("/etc/linked.conf")).expect("hard link");

    let (code, check) = jail.check_json();
    assert_eq!(code, 1, "{check:#}");
    for (code, path) in [
        ("JP010", "/usr/bin/evil"),
        ("JP016", "/usr/bin/evil"),
        ("JP014", "/etc/shadow-link"),
        ("JP014", "/etc/rootfs"),
        ("JP013", "/etc/escape"),
        ("JP012", "/etc/mem"),
        ("JP011", "/srv"),
        ("JP015", "/etc/linked.conf"),
    ] {
        assert!(has_finding(&check, code, "error", path), "{code} {path} expected: {check:#}");
    }
    let text = jail.run("check", &[]).code(1, "check (text)");
    assert!(text.stdout.contains("error   JP010 /usr/bin/evil: setuid file owned by uid 65534"), "{}", text.describe());
    assert!(text.stdout.contains("        fix: "), "{}", text.describe());

    // The tempdir above the jail root made writable by everyone: the root could be swapped.
    fs::set_permissions(&jail.dir, fs::Permissions::from_mode(0o777)).expect("chmod the tempdir");
    let (_, check) = jail.check_json();
    fs::set_permissions(&jail.dir, fs::Permissions::from_mode(0o700)).expect("chmod the tempdir back");
    assert!(has_finding(&check, "JP017", "error", "/"), "{check:#}");

    // --fix with only the planted program, device, directory and hard link: they stay (foreign).
    for link in ["/etc/shadow-link", "/etc/rootfs", "/etc/escape"] {
        fs::remove_file(jail.at(link)).expect("unlink the planted link");
    }
    jail.run("check", &["--fix"]).code(1, "the foreign findings remain errors after --fix");
    for foreign in ["/usr/bin/evil", "/etc/mem", "/srv", "/etc/linked.conf"] {
        assert!(jail.at(foreign).exists(), "--fix deleted the foreign {foreign}");
    }
    assert_eq!(fs::read(jail.src.join("app.conf")).expect("read the source"), b"x\n", "the linked source is untouched");
}

/// A managed file whose mode drifted (setuid added, world-writable) is found and `--fix`
/// restores it like apply would.
#[test]
fn mode_drift_of_a_managed_program_is_found_and_fixed() {
    need_root!("mode_drift_of_a_managed_program_is_found_and_fixed");
    let jail = jail_with_source(b"x\n");
    jail.apply();
    let cat = jail.at("/usr/bin/cat");
    fs::set_permissions(&cat, fs::Permissions::from_mode(0o4777)).expect("chmod");
    let (code, check) = jail.check_json();
    assert_eq!(code, 1);
    for finding in ["JP003", "JP010", "JP016"] {
        assert!(has_finding(&check, finding, "error", "/usr/bin/cat"), "{finding}: {check:#}");
    }
    jail.run("check", &["--fix"]).ok("check --fix");
    assert_eq!(fs::metadata(&cat).expect("stat").mode() & 0o7777, 0o755);
    jail.run("plan", &["--detailed-exitcode"]).code(0, "plan after --fix");
}

/// Each shipped example, applied to a fresh root, has no findings at all.
#[test]
fn a_clean_jail_from_each_example_has_no_findings() {
    need_root!("a_clean_jail_from_each_example_has_no_findings");
    cli::prerequisites::require(&cli::prerequisites::PYTHON3);
    cli::prerequisites::require(&cli::prerequisites::SFTP_SERVER);
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for name in ["seed-shell", "python", "sftp"] {
        let text = fs::read_to_string(examples.join(name).join("Jailfile.toml")).expect("read the example");
        let jail = Jail::with_jailfile(&text);
        jail.apply();
        let (code, check) = jail.check_json();
        assert_eq!((code, findings(&check)), (0, vec![]), "{name}: {check:#}");
        assert!(check["summary"]["verified_files"].as_u64().is_some_and(|count| count > 0), "{name}: {check:#}");
    }
}

/// The lock's per-host cache keeps a no-op plan a stat walk: with the lock fresh, plan opens no
/// host source to hash it; with the cache gone, it hashes them again (and finds no drift).
#[test]
fn no_op_plan_hashes_no_host_source_while_the_cache_vouches() {
    need_root!("no_op_plan_hashes_no_host_source_while_the_cache_vouches");
    cli::prerequisites::require(&cli::prerequisites::STRACE);
    let jail = jail_with_source(b"port = 1\n");
    jail.apply();
    let source = jail.src.join("app.conf").display().to_string();
    let opens_source = |log: &str| -> bool {
        let log_path = jail.dir.join(log);
        let mut command = Command::new("strace");
        command.args(["-f", "-qq", "-e", "trace=open,openat,openat2", "-o"]).arg(&log_path).arg(BIN);
        command
            .args(["plan", "-f"])
            .arg(&jail.jailfile)
            .arg("--root")
            .arg(&jail.root)
            .arg("--state-dir")
            .arg(&jail.state);
        let output = command.output().expect("strace runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        fs::read_to_string(&log_path).expect("read the strace log").contains(&format!("\"{source}\""))
    };
    assert!(!opens_source("strace-1.log"), "a no-op plan with a fresh lock read the host source");
    fs::remove_dir_all(jail.state.join("lock-cache")).expect("remove the cache");
    // And the plan memo, which would answer without looking at the lock at all.
    for entry in fs::read_dir(&jail.state).expect("list the state directory") {
        let path = entry.expect("state entry").path();
        if path.extension().is_some_and(|extension| extension == "memo") {
            fs::remove_file(&path).expect("remove the plan memo");
        }
    }
    assert!(
        opens_source("strace-2.log"),
        "without the cache, plan must hash the source (else the check above proves nothing)"
    );
    assert!(!opens_source("strace-3.log"), "the cache was rebuilt");
}
