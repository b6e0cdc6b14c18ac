//! /dev in a jail: `/proc` magic links (`/dev/stdout`) copied as the links they are.
#![allow(clippy::disallowed_methods)] // tests build fixtures with plain fs calls

use std::fs;
use std::process::Stdio;

#[macro_use]
mod cli;
use cli::{Workspace, UNUSED_ROOT};

/// `jailprov plan > FILE` with `[[files]] src = "/dev/stdout"`: the link names jailprov's own
/// stdout, which is FILE; the plan holds the link once and never FILE's content.
#[test]
fn plan_redirected_to_a_file_plans_dev_stdout_as_one_symlink() {
    let work = Workspace::new("jailprov-dev-");
    work.write_jailfile(&format!("root = {UNUSED_ROOT:?}\n[[files]]\nsrc = \"/dev/stdout\"\n"));
    let out = work.dir.join("plan.txt");
    let file = fs::File::create(&out).expect("create the plan's file");
    let status = work.command("plan", &[]).stdout(Stdio::from(file)).status().expect("run jailprov plan");
    let plan = fs::read_to_string(&out).expect("read the plan");
    assert!(status.success(), "plan failed:\n{plan}");
    let changes: Vec<&str> = plan.lines().filter(|line| line.trim_start().starts_with('+')).collect();
    let symlinks: Vec<&&str> = changes.iter().filter(|line| line.contains("symlink")).collect();
    assert_eq!(symlinks.len(), 1, "exactly one symlink planned:\n{plan}");
    assert!(symlinks[0].ends_with("/dev/stdout"), "{plan}");
    assert!(
        !changes.iter().any(|line| line.contains("plan.txt") || line.contains(" file ")),
        "the file stdout points at is not planned:\n{plan}"
    );
}

/// Applied, the jail holds the link itself (never a copy of what the caller's stdout was).
#[test]
fn apply_writes_dev_stdout_as_the_link_to_proc_self() {
    need_root!("apply_writes_dev_stdout_as_the_link_to_proc_self");
    let work = Workspace::new("jailprov-dev-");
    work.write_jailfile(&format!("root = {UNUSED_ROOT:?}\n[[files]]\nsrc = \"/dev/stdout\"\n"));
    work.apply();
    let link = fs::read_link(work.at("/dev/stdout")).expect("/dev/stdout is a symlink in the jail");
    assert_eq!(link, std::path::PathBuf::from("/proc/self/fd/1"));
}

/// `[[links]]`: planned, applied and recorded as the symlink it states; a second plan is empty.
#[test]
fn a_declared_link_is_planned_applied_and_then_in_place() {
    need_root!("a_declared_link_is_planned_applied_and_then_in_place");
    let work = Workspace::new("jailprov-dev-");
    work.write_jailfile(&format!(
        "root = {UNUSED_ROOT:?}\n[[links]]\npath = \"/dev/log\"\ntarget = \"/run/systemd/journal/dev-log\"\n"
    ));
    let plan = work.run("plan", &[]).ok("plan");
    assert!(
        plan.stdout.lines().any(|line| line.contains("+") && line.contains("symlink") && line.ends_with("/dev/log")),
        "{}",
        plan.describe()
    );
    work.apply();
    let link = fs::read_link(work.at("/dev/log")).expect("/dev/log is a symlink");
    assert_eq!(link, std::path::PathBuf::from("/run/systemd/journal/dev-log"));
    let again = work.run("plan", &[]).ok("plan after apply");
    assert!(!again.stdout.contains("symlink"), "nothing left to do:\n{}", again.describe());
}

/// A link over a path another entry brings is refused naming both; bad targets name the key.
#[test]
fn declared_links_are_validated_and_conflicts_named() {
    let work = Workspace::new("jailprov-dev-");
    work.write_jailfile(&format!(
        "root = {UNUSED_ROOT:?}\n[[files]]\npath = \"/etc/motd\"\ncontent = \"hi\"\n\
         [[links]]\npath = \"/etc/motd\"\ntarget = \"issue\"\n"
    ));
    let conflict = work.run("plan", &[]);
    assert_ne!(conflict.code, 0, "{}", conflict.describe());
    assert!(
        conflict.stderr.contains("links[0]: /etc/motd is also in the jail for files[0]"),
        "{}",
        conflict.describe()
    );

    work.write_jailfile(&format!(
        "root = {UNUSED_ROOT:?}\n[[links]]\npath = \"/a\"\ntarget = \"\"\n\
         [[links]]\npath = \"relative\"\ntarget = \"x\"\n[[links]]\npath = \"/b\"\ntarget = \"x\"\n\
         [[links]]\npath = \"/b\"\ntarget = \"y\"\n"
    ));
    let invalid = work.run("plan", &[]);
    assert_ne!(invalid.code, 0, "{}", invalid.describe());
    for expected in
        ["links[0].target", "cannot be empty", "links[1].path", "links[3].path", "already declared by links[2]"]
    {
        assert!(invalid.stderr.contains(expected), "{expected}: {}", invalid.describe());
    }
}

/// `[enter] dev = "minimal"`: every node of the tmpfs /dev works, /dev/stdout reaches the
/// caller, a pty can be opened, and the jail's own /dev on disk stays empty.
#[test]
fn a_minimal_dev_has_working_nodes_a_pty_and_leaves_the_disk_alone() {
    need_root!("a_minimal_dev_has_working_nodes_a_pty_and_leaves_the_disk_alone");
    cli::prerequisites::require(&cli::prerequisites::SCRIPT);
    let work = Workspace::new("jailprov-dev-");
    work.write_jailfile(&format!(
        "root = {UNUSED_ROOT:?}\nbinaries = [\"bash\", \"cat\", \"head\", \"script\", \"tty\"]\n\
         [[dirs]]\npath = \"/dev\"\n[[mounts]]\nkind = \"proc\"\ntarget = \"/proc\"\n[enter]\ndev = \"minimal\"\n"
    ));
    work.apply();
    let script = "echo hi > /dev/stdout; echo err > /dev/stderr; \
        echo x > /dev/null && echo null-ok; \
        head -c 4 /dev/zero > /dev/shm/zeros && [ -s /dev/shm/zeros ] && echo zero-and-shm-ok; \
        head -c 4 /dev/random > /dev/null && head -c 4 /dev/urandom > /dev/null && echo random-ok; \
        echo x > /dev/full || echo full-is-full; \
        [ -c /dev/tty ] && echo tty-node; \
        SHELL=/usr/bin/bash script -qc /usr/bin/tty /dev/null; \
        cat /proc/self/mountinfo";
    let run = work.enter(&["/usr/bin/bash", "-c", script]).ok("enter with a minimal /dev");
    for expected in ["hi\n", "null-ok", "zero-and-shm-ok", "random-ok", "full-is-full", "tty-node", "/dev/pts/0"] {
        assert!(run.stdout.contains(expected), "{expected}: {}", run.describe());
    }
    assert!(run.stderr.contains("err\n") && run.stderr.contains("No space left on device"), "{}", run.describe());
    let dev_mount = run.stdout.lines().find(|line| line.split(' ').nth(4) == Some("/dev")).unwrap_or_default();
    assert!(
        dev_mount.contains("nosuid") && dev_mount.contains("noexec") && dev_mount.contains("tmpfs"),
        "{}",
        run.describe()
    );
    let on_disk: Vec<_> = fs::read_dir(work.at("/dev")).expect("read the jail's /dev").collect();
    assert!(on_disk.is_empty(), "the jail's /dev on disk is untouched: {on_disk:?}");
}
