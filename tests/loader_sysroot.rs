//! The loader looks only inside its sysroot: a fixture tree, never the host behind it.
#![allow(clippy::disallowed_methods)] // tests build fixtures and jails with plain fs calls

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use jailprov::closure::loader::{Loader, LoaderOptions};

/// Copies a host file into the sysroot at the same path.
fn copy_in(sysroot: &Path, host_path: &str) {
    let target = sysroot.join(host_path.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().expect("has a parent")).expect("mkdir");
    std::fs::copy(host_path, &target).unwrap_or_else(|error| panic!("copy {host_path}: {error}"));
}

fn loader_for(sysroot: &Path) -> Loader {
    Loader::new(LoaderOptions { sysroot: sysroot.to_path_buf(), hwcaps: Some(Vec::new()), platform: None })
        .expect("a loader over the fixture sysroot")
}

#[test]
fn libraries_are_found_in_the_sysroot_not_on_the_host() {
    let sysroot = tempfile::tempdir().expect("tempdir");
    let root = sysroot.path();
    // A usr-merged layout like Debian 12's, with an absolute symlink that must stay inside.
    std::fs::create_dir_all(root.join("usr/lib/x86_64-linux-gnu")).expect("mkdir");
    std::fs::create_dir_all(root.join("usr/lib64")).expect("mkdir");
    symlink("usr/lib", root.join("lib")).expect("symlink");
    symlink("usr/lib64", root.join("lib64")).expect("symlink");
    copy_in(root, "/usr/bin/bash");
    copy_in(root, "/usr/lib/x86_64-linux-gnu/libc.so.6");
    copy_in(root, "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
    symlink("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", root.join("usr/lib64/ld-linux-x86-64.so.2"))
        .expect("symlink");
    // libtinfo is deliberately left out: the host has it, the sysroot does not.

    let result = loader_for(root).load_executable(Path::new("/usr/bin/bash")).expect("bash loads");
    assert_eq!(result.interpreter, Some(PathBuf::from("/lib64/ld-linux-x86-64.so.2")));
    let found: Vec<(&str, &Path)> =
        result.objects.iter().map(|object| (object.name.as_str(), object.path.as_path())).collect();
    // No ld.so.cache in the sysroot: libc comes from the first built-in directory.
    assert_eq!(found, vec![("libc.so.6", Path::new("/lib/x86_64-linux-gnu/libc.so.6"))]);
    let missing: Vec<&str> = result.missing.iter().map(|missing| missing.name.as_str()).collect();
    assert_eq!(missing, vec!["libtinfo.so.6"], "the host's libtinfo must not leak into a sysroot closure");
    assert_eq!(
        result.missing[0].searched,
        ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib"].map(PathBuf::from),
        "without a cache only the built-in directories are searched"
    );
}

#[test]
fn absolute_symlink_in_the_sysroot_does_not_reach_the_host() {
    let sysroot = tempfile::tempdir().expect("tempdir");
    let root = sysroot.path();
    copy_in(root, "/usr/bin/bash");
    // /lib64 points at an absolute path that exists on the host but not in the sysroot.
    symlink("/usr/lib64", root.join("lib64")).expect("symlink");
    let error = loader_for(root).load_executable(Path::new("/usr/bin/bash")).expect_err("no interpreter inside");
    assert!(format!("{error:#}").contains("interpreter"), "{error:#}");
}
