//! The lock's unit tests: its text, digests, drift lines, package lookup and glibc version.

use std::fs;
use std::path::{Path, PathBuf};

use crate::host::HostFs;

use super::drift::{compare, diff_closures_text, human_size, set_change, signed_size, Drift};
use super::format::{glibc_version, jailfile_digest, lock_path, HostFingerprint, Lock, LockEntry, LOCK_VERSION};
use super::packages::{dpkg_database_print, dpkg_packages};

/// A sysroot with a two-package dpkg database: libfoo1 installed (listing its library under
/// /lib, as Debian 12 packages still do), bar only configured-away.
fn dpkg_sysroot() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    let dpkg = root.path().join("var/lib/dpkg");
    fs::create_dir_all(dpkg.join("info")).expect("mkdir");
    fs::write(
        dpkg.join("status"),
        "Package: libfoo1\nStatus: install ok installed\nVersion: 1.2-3\n\n\
         Package: bar\nStatus: deinstall ok config-files\nVersion: 9\n",
    )
    .expect("status");
    fs::write(dpkg.join("info/libfoo1:amd64.list"), "/.\n/lib/x86_64-linux-gnu/libfoo.so.1\n").expect("list");
    fs::write(dpkg.join("info/bar.list"), "/usr/bin/bar\n").expect("list");
    root
}

#[test]
fn changes_of_needers_are_named_by_what_moved() {
    let list = |items: &[&str]| items.iter().map(|item| (*item).to_owned()).collect::<Vec<_>>();
    assert_eq!(set_change(&list(&["/usr/bin/ls"]), &list(&["/usr/bin/head", "/usr/bin/ls"])), "+/usr/bin/head");
    assert_eq!(set_change(&list(&["a", "b"]), &list(&["b", "c"])), "+c -a");
}

#[test]
fn packages_come_from_the_dpkg_lists_of_installed_packages_only() {
    let root = dpkg_sysroot();
    let host = HostFs::new(root.path());
    let found = dpkg_packages(&host, &["/usr/lib/x86_64-linux-gnu/libfoo.so.1", "/usr/bin/bar", "/etc/motd"]);
    assert_eq!(found.get("/usr/lib/x86_64-linux-gnu/libfoo.so.1").map(String::as_str), Some("libfoo1 1.2-3"));
    assert_eq!(found.get("/usr/bin/bar"), None, "bar is not installed");
    assert_eq!(found.len(), 1);
}

#[test]
fn the_package_cache_key_moves_when_dpkg_installs_something() {
    let root = dpkg_sysroot();
    let host = HostFs::new(root.path());
    let before = dpkg_database_print(&host).expect("a dpkg database");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let status = root.path().join("var/lib/dpkg/status");
    let mut text = fs::read_to_string(&status).expect("status");
    text.push_str("\nPackage: baz\nStatus: install ok installed\nVersion: 1\n");
    fs::write(&status, text).expect("rewrite status");
    assert_ne!(dpkg_database_print(&host), Some(before), "a changed status file invalidates cached answers");
    assert_eq!(dpkg_database_print(&HostFs::new(root.path().join("nowhere"))), None);
}

fn file_entry(path: &str, hash: &str, size: u64, package: Option<&str>) -> LockEntry {
    let library = path.contains(".so");
    LockEntry {
        path: path.to_owned(),
        kind: if library { "library" } else { "file" }.to_owned(),
        source: Some(path.to_owned()),
        size: Some(size),
        mode: Some("0644".to_owned()),
        owner: None,
        hash: Some(format!("blake3:{hash}")),
        target: None,
        device: None,
        sonames: if library { vec![path.rsplit('/').next().unwrap_or_default().to_owned()] } else { Vec::new() },
        needed_by: vec!["/usr/bin/python3.11".to_owned()],
        package: package.map(str::to_owned),
    }
}

fn lock(entries: Vec<LockEntry>) -> Lock {
    Lock {
        version: LOCK_VERSION,
        jailfile: "blake3:00".to_owned(),
        host: HostFingerprint {
            os: "debian".into(),
            os_version: "12".into(),
            glibc: "2.36".into(),
            arch: "x86_64".into(),
        },
        entries,
    }
}

#[test]
fn crlf_comments_whitespace_and_key_order_do_not_change_the_digest() {
    let plain =
        "root = \"/srv/j\"\nbinaries = [\"bash\", \"ls\"]\n\n[[files]]\npath = \"/etc/motd\"\ncontent = \"hi\\n\"\n";
    let reformatted = "# a comment\r\nbinaries = [\r\n  \"bash\",\r\n  \"ls\",\r\n]\r\nroot   =   '/srv/j'\r\n\r\n[[files]]\r\ncontent = \"hi\\n\"   # trailing\r\npath = \"/etc/motd\"\r\n";
    assert_eq!(
        jailfile_digest(Path::new("Jailfile.toml"), plain).expect("valid"),
        jailfile_digest(Path::new("Jailfile.toml"), reformatted).expect("valid")
    );
    let other = plain.replace("ls", "cat");
    assert_ne!(
        jailfile_digest(Path::new("Jailfile.toml"), plain).expect("valid"),
        jailfile_digest(Path::new("Jailfile.toml"), &other).expect("valid"),
        "values count"
    );
}

#[test]
fn lock_text_is_one_line_per_entry_and_round_trips() {
    let lock = lock(vec![
        file_entry("/usr/lib/x86_64-linux-gnu/libc.so.6", "aa", 10, None),
        file_entry("/usr/lib/x86_64-linux-gnu/libssl.so.3", "bb", 20, Some("libssl3 3.0.15-1")),
    ]);
    let text = lock.to_text().expect("serializes");
    insta::assert_snapshot!("lock_text", text);
    assert_eq!(Lock::parse(&text, Path::new("Jailfile.lock")).expect("parses"), lock);
    assert_eq!(text, lock.to_text().expect("serializes"), "the same lock, the same bytes");
}

#[test]
fn diff_closures_lines_name_versions_sizes_and_empty_sets() {
    let old = lock(vec![
        file_entry("/etc/gone.conf", "11", 100, None),
        file_entry("/usr/lib/x86_64-linux-gnu/libssl.so.3", "aa", 100_000, Some("libssl3 3.0.15-1")),
    ]);
    let new = lock(vec![
        file_entry("/usr/lib/x86_64-linux-gnu/libnew.so.1", "cc", 2048, None),
        file_entry("/usr/lib/x86_64-linux-gnu/libssl.so.3", "bb", 112_902, Some("libssl3 3.0.17-1")),
    ]);
    let comparison = compare(&old, &new);
    insta::assert_snapshot!("diff_closures", diff_closures_text(&comparison));
    let drift: Vec<String> = comparison.host_drift().iter().map(Drift::line).collect();
    insta::assert_snapshot!("host_drift_lines", drift.join("\n"));
}

#[test]
fn with_an_edited_jailfile_only_host_facts_are_drift() {
    let old = lock(vec![file_entry("/a", "aa", 1, None), file_entry("/b", "bb", 1, None)]);
    let mut new = lock(vec![file_entry("/a", "a2", 1, None), file_entry("/c", "cc", 1, None)]);
    let inline =
        |hash: &str| LockEntry { source: None, kind: "content".into(), ..file_entry("/etc/motd", hash, 1, None) };
    let mut old = old;
    old.entries.push(inline("m1"));
    new.entries.push(inline("m2"));
    new.jailfile = "blake3:11".to_owned();
    let drift = compare(&old, &new).host_drift();
    assert_eq!(drift.len(), 1, "only /a's content is the host's doing, /etc/motd's the Jailfile's: {drift:?}");
    assert_eq!(drift[0].path, "/a");
    assert!(drift[0].what.starts_with("blake3 "), "{drift:?}");
}

#[test]
fn a_package_version_alone_is_not_a_difference() {
    let old = lock(vec![file_entry("/a", "aa", 1, Some("p 1"))]);
    let new = lock(vec![file_entry("/a", "aa", 1, None)]);
    assert!(compare(&old, &new).is_empty());
}

#[test]
fn sizes_read_like_nix() {
    assert_eq!(human_size(512), "512 B");
    assert_eq!(human_size(12_902), "12.6 KiB");
    assert_eq!(signed_size(-3 * 1024 * 1024), "-3.0 MiB");
}

#[test]
fn the_lock_sits_beside_the_jailfile_named_after_it() {
    assert_eq!(lock_path(Path::new("/x/Jailfile.toml")), PathBuf::from("/x/Jailfile.lock"));
    assert_eq!(lock_path(Path::new("web.toml")), PathBuf::from("web.lock"));
}

#[test]
fn glibc_version_is_read_from_the_version_definitions_of_libc() {
    let host = HostFs::real();
    let Some(libc) = ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"]
        .iter()
        .map(Path::new)
        .find(|path| path.exists())
    else {
        eprintln!("SKIPPED glibc_version_is_read_from_the_version_definitions_of_libc: no libc.so.6 here");
        return;
    };
    let version = glibc_version(&host, libc).expect("libc.so.6 defines GLIBC_ versions");
    assert!(version.starts_with("2."), "{version}");
}
