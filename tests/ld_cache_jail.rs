//! A library the host finds only through /etc/ld.so.cache (a directory of ld.so.conf, outside
//! the loader's built-in ones) loads in the jail because the closure generates the jail's own
//! cache. The host is a fixture sysroot whose cache ldconfig -r builds: the real /etc/ld.so.conf.d
//! and /etc/ld.so.cache are never touched.
#![allow(clippy::disallowed_methods)] // tests build fixtures and jails with plain fs calls

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use jailprov::closure::ld_cache::LdCache;
use jailprov::closure::loader::{Loader, LoaderOptions};
use jailprov::closure::{Closure, EntryKind};
use jailprov::host::HostFs;

const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";
const LD_SO: &str = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";

fn run(command: &mut Command) -> Output {
    let out = command.output().unwrap_or_else(|error| panic!("{command:?} cannot run: {error}"));
    assert!(out.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn copy_into(sysroot: &Path, from: &str, to: &str) {
    let target = sysroot.join(to.trim_start_matches('/'));
    fs::create_dir_all(target.parent().expect("has a parent")).expect("mkdir");
    fs::copy(from, &target).unwrap_or_else(|error| panic!("copy {from}: {error}"));
}

/// A host with libc in its built-in directory, `libjp.so.1` in /opt/jp/lib (listed only in
/// its ld.so.conf), and two programs: one needs libjp, the other only libc.
fn fixture_host(sysroot: &Path) {
    copy_into(sysroot, LIBC, "/lib/x86_64-linux-gnu/libc.so.6");
    copy_into(sysroot, LD_SO, "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
    copy_into(sysroot, LD_SO, "/lib64/ld-linux-x86-64.so.2");
    let lib_dir = sysroot.join("opt/jp/lib");
    let bin_dir = sysroot.join("opt/jp/bin");
    fs::create_dir_all(&lib_dir).expect("mkdir");
    fs::create_dir_all(&bin_dir).expect("mkdir");
    let work = tempfile::tempdir().expect("tempdir");
    fs::write(work.path().join("jp.c"), "int jp_value(void) { return 42; }\n").expect("write");
    fs::write(
        work.path().join("main.c"),
        "#include <stdio.h>\nint jp_value(void);\nint main(void) { printf(\"%d\\n\", jp_value()); return 0; }\n",
    )
    .expect("write");
    fs::write(work.path().join("plain.c"), "#include <stdio.h>\nint main(void) { puts(\"plain\"); return 0; }\n")
        .expect("write");
    let library = lib_dir.join("libjp.so.1");
    run(Command::new("gcc")
        .args(["-shared", "-fPIC", "-Wl,-soname,libjp.so.1", "-o"])
        .arg(&library)
        .arg(work.path().join("jp.c")));
    // Linked by path, without RPATH/RUNPATH: only the cache knows where libjp.so.1 is.
    run(Command::new("gcc").arg("-o").arg(bin_dir.join("jp-hello")).arg(work.path().join("main.c")).arg(&library));
    run(Command::new("gcc").arg("-o").arg(bin_dir.join("plain")).arg(work.path().join("plain.c")));
    fs::create_dir_all(sysroot.join("etc")).expect("mkdir");
    fs::write(sysroot.join("etc/ld.so.conf"), "/opt/jp/lib\n").expect("write");
    // ldconfig -r chroots into the fixture: it writes the fixture's etc/ld.so.cache only.
    run(Command::new("ldconfig").arg("-r").arg(sysroot));
}

fn closure_of(sysroot: &Path, program: &str) -> Closure {
    let host = HostFs::new(sysroot);
    let jailfile = tempfile::tempdir().expect("tempdir");
    let path = jailfile.path().join("Jailfile.toml");
    fs::write(&path, format!("root = \"/tmp/jailprov-ld-cache-jail\"\nbinaries = [{program:?}]\n")).expect("write");
    let spec = jailprov::spec::load(&path, None, &host).expect("the Jailfile is valid on the fixture host");
    let loader =
        Loader::new(LoaderOptions { sysroot: sysroot.to_path_buf(), hwcaps: Some(Vec::new()), platform: None })
            .expect("a loader over the fixture");
    jailprov::closure::build(&spec, &loader).expect("the closure builds")
}

/// The jail the closure describes, laid out under `jail` (files from the fixture host).
fn lay_out(closure: &Closure, sysroot: &Path, jail: &Path) {
    for entry in closure.entries.values() {
        let at = jail.join(entry.path.as_str().trim_start_matches('/'));
        fs::create_dir_all(at.parent().expect("has a parent")).expect("mkdir");
        match entry.kind {
            EntryKind::Dir => fs::create_dir_all(&at).expect("mkdir"),
            EntryKind::Symlink => symlink(entry.target.as_deref().expect("a target"), &at).expect("symlink"),
            EntryKind::Generated | EntryKind::Content => {
                fs::write(&at, entry.content.as_deref().expect("content")).expect("write")
            }
            _ => {
                let source: PathBuf = entry.source.clone().expect("a source");
                fs::copy(sysroot.join(source.strip_prefix("/").expect("absolute")), &at).expect("copy");
                fs::set_permissions(&at, fs::Permissions::from_mode(0o755)).expect("chmod");
            }
        }
    }
}

fn run_in(jail: &Path, program: &str) -> Output {
    Command::new("chroot").arg(jail).arg(program).output().expect("chroot can be spawned")
}

#[test]
fn a_library_found_only_through_the_cache_loads_in_the_jail_through_its_own_cache() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "SKIPPED a_library_found_only_through_the_cache_loads_in_the_jail_through_its_own_cache: chroot needs root"
        );
        return;
    }
    if !Path::new(LIBC).exists() || !Path::new(LD_SO).exists() {
        eprintln!("SKIPPED a_library_found_only_through_the_cache_loads_in_the_jail_through_its_own_cache: no x86_64 glibc here");
        return;
    }
    let sysroot = tempfile::tempdir().expect("tempdir");
    fixture_host(sysroot.path());

    let closure = closure_of(sysroot.path(), "/opt/jp/bin/jp-hello");
    let cache_entry = closure
        .entries
        .values()
        .find(|entry| entry.path.as_str() == "/etc/ld.so.cache")
        .expect("the closure generates the jail's /etc/ld.so.cache");
    assert_eq!(cache_entry.kind, EntryKind::Generated);
    let reasons: Vec<String> = cache_entry.needers().map(ToString::to_string).collect();
    assert_eq!(reasons, ["ld.so.cache for /opt/jp/lib"]);
    let cache = LdCache::parse(cache_entry.content.as_deref().expect("content")).expect("the generated cache parses");
    assert_eq!(cache.lookup("libjp.so.1", 0x0303, &[]), Some("/opt/jp/lib/libjp.so.1"));
    let values: Vec<&str> = cache.entries().iter().map(|entry| entry.value.as_str()).collect();
    assert_eq!(
        values,
        ["/opt/jp/lib/libjp.so.1", "/lib/x86_64-linux-gnu/libc.so.6"],
        "entries only for the jail's libraries, in ldconfig's order"
    );

    let jail = tempfile::tempdir().expect("tempdir");
    lay_out(&closure, sysroot.path(), jail.path());
    let ran = run_in(jail.path(), "/opt/jp/bin/jp-hello");
    assert!(ran.status.success(), "the program runs in the jail: {}", String::from_utf8_lossy(&ran.stderr));
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "42\n");

    // The loader's own verdict without the cache: the library is not found.
    fs::remove_file(jail.path().join("etc/ld.so.cache")).expect("remove the cache");
    let ran = run_in(jail.path(), "/opt/jp/bin/jp-hello");
    assert!(!ran.status.success(), "without the generated cache the program must fail");
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(stderr.contains("libjp.so.1: cannot open shared object file"), "{stderr}");
}

#[test]
fn a_jail_whose_libraries_the_built_in_directories_find_gets_no_cache() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED a_jail_whose_libraries_the_built_in_directories_find_gets_no_cache: ldconfig -r needs root");
        return;
    }
    if !Path::new(LIBC).exists() || !Path::new(LD_SO).exists() {
        eprintln!("SKIPPED a_jail_whose_libraries_the_built_in_directories_find_gets_no_cache: no x86_64 glibc here");
        return;
    }
    let sysroot = tempfile::tempdir().expect("tempdir");
    fixture_host(sysroot.path());
    let closure = closure_of(sysroot.path(), "/opt/jp/bin/plain");
    assert!(
        closure.entries.values().all(|entry| entry.path.as_str() != "/etc/ld.so.cache"),
        "libc comes from the cache too, but the built-in directories find it: no cache, the jail is as before"
    );
    assert!(closure.entries.values().any(|entry| entry.path.as_str() == "/lib/x86_64-linux-gnu/libc.so.6"));
}
