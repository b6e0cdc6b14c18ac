//! On the real host: a program whose library only the host's ld.so.cache finds (fakeroot's
//! directory, listed in /etc/ld.so.conf.d and outside the loader's built-in ones) gets the
//! jail's own cache from `closure`, `plan` and `apply`, and runs in the applied jail; without
//! that cache the loader inside does not find the library. The host's cache and ld.so.conf.d
//! are only read.
#![allow(clippy::disallowed_methods)] // tests build fixtures with plain fs calls

#[macro_use]
mod cli;

use std::path::Path;
use std::process::Command;

use jailprov::closure::ld_cache::LdCache;

const FAKEROOT_DIR: &str = "/usr/lib/x86_64-linux-gnu/libfakeroot";
const FAKEROOT_SONAME: &str = "libfakeroot-0.so";

/// Whether the host's cache finds fakeroot's library in its own directory (fakeroot installed).
fn host_cache_has_fakeroot() -> bool {
    let Ok(Some(cache)) = LdCache::load(Path::new("/etc/ld.so.cache")) else { return false };
    cache.lookup(FAKEROOT_SONAME, 0x0303, &[]).is_some_and(|path| path.starts_with(FAKEROOT_DIR))
}

#[test]
fn a_program_needing_a_library_only_the_cache_finds_runs_in_the_applied_jail() {
    need_root!("a_program_needing_a_library_only_the_cache_finds_runs_in_the_applied_jail");
    if !host_cache_has_fakeroot() {
        eprintln!("SKIPPED a_program_needing_a_library_only_the_cache_finds_runs_in_the_applied_jail: no {FAKEROOT_SONAME} in the host's cache");
        return;
    }
    let workspace = cli::Workspace::new("jailprov-ld-cache-");
    let source = workspace.dir.join("hello.c");
    std::fs::write(&source, "#include <stdio.h>\nint main(void) { puts(\"hello\"); return 0; }\n").expect("write");
    let program = workspace.dir.join("hello-fakeroot");
    // Linked by path without RPATH/RUNPATH; --no-as-needed keeps the DT_NEEDED it never calls.
    let built = Command::new("gcc")
        .arg("-o")
        .arg(&program)
        .arg(&source)
        .arg("-Wl,--no-as-needed")
        .arg(format!("{FAKEROOT_DIR}/{FAKEROOT_SONAME}"))
        .status()
        .is_ok_and(|status| status.success());
    assert!(built, "gcc links the fixture");
    workspace.write_jailfile(&format!("binaries = [{:?}]\n", program.display().to_string()));

    // `closure` reads only the host: no root or state directory.
    let mut closure = Command::new(cli::BIN);
    closure.arg("closure").arg("-f").arg(&workspace.jailfile).current_dir(&workspace.dir);
    let closure = cli::output(closure).ok("closure");
    let line = closure.stdout.lines().find(|line| line.contains("/etc/ld.so.cache")).unwrap_or_default();
    assert!(
        line.starts_with("generated") && line.contains(&format!("ld.so.cache for {FAKEROOT_DIR}")),
        "closure lists the generated cache and why: {}",
        closure.describe()
    );
    let plan = workspace.run("plan", &[]).ok("plan");
    assert!(plan.stdout.contains("/etc/ld.so.cache"), "plan creates it: {}", plan.describe());
    workspace.apply();

    let in_jail = |what: &str| {
        let out = Command::new("chroot").arg(&workspace.root).arg(&program).output().expect("chroot runs");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), format!("{what}: {stderr}"))
    };
    let (ran, stdout, stderr) = in_jail("with the generated cache");
    assert!(ran && stdout == "hello\n", "{stderr}");

    std::fs::remove_file(workspace.at("/etc/ld.so.cache")).expect("remove the jail's cache");
    let (ran, _, stderr) = in_jail("without it");
    assert!(!ran, "without the cache the loader in the jail must not find the library");
    assert!(stderr.contains(&format!("{FAKEROOT_SONAME}: cannot open shared object file")), "{stderr}");
    let plan = workspace.run("plan", &[]).ok("plan after the cache was removed");
    assert!(plan.stdout.contains("/etc/ld.so.cache"), "plan puts it back: {}", plan.describe());
}
