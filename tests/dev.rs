//! /dev in a jail: `/proc` magic links (`/dev/stdout`) copied as the links they are, and the
//! minimal /dev `enter` mounts by default (or the jail's own with `dev = "none"`).
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

/// With no `dev` key (minimal is the default), every node of the tmpfs /dev works, /dev/stdout
/// reaches the caller, a pty serves an interactive shell, and the jail's /dev on disk (which
/// apply made without being asked: the tmpfs's mount point) stays empty.
#[test]
fn the_default_dev_is_minimal_with_working_nodes_a_pty_and_leaves_the_disk_alone() {
    need_root!("the_default_dev_is_minimal_with_working_nodes_a_pty_and_leaves_the_disk_alone");
    cli::prerequisites::require(&cli::prerequisites::SCRIPT);
    let work = Workspace::new("jailprov-dev-");
    work.write_jailfile(&format!(
        "root = {UNUSED_ROOT:?}\nbinaries = [\"bash\", \"cat\", \"head\", \"script\", \"tty\"]\n\
         [[mounts]]\nkind = \"proc\"\ntarget = \"/proc\"\n"
    ));
    work.apply();
    let script = "echo hi > /dev/stdout; echo err > /dev/stderr; \
        echo x > /dev/null && echo null-ok; \
        head -c 4 /dev/zero > /dev/shm/zeros && [ -s /dev/shm/zeros ] && echo zero-and-shm-ok; \
        head -c 4 /dev/random > /dev/null && head -c 4 /dev/urandom > /dev/null && echo random-ok; \
        echo x > /dev/full || echo full-is-full; \
        [ -c /dev/tty ] && echo tty-node; \
        SHELL=/usr/bin/bash script -qc 'tty; echo pty-shell-$((6*7))' /dev/null; \
        cat /proc/self/mountinfo";
    let run = work.enter(&["/usr/bin/bash", "-c", script]).ok("enter with the default /dev");
    for expected in
        ["hi\n", "null-ok", "zero-and-shm-ok", "random-ok", "full-is-full", "tty-node", "/dev/pts/0", "pty-shell-42"]
    {
        assert!(run.stdout.contains(expected), "{expected}: {}", run.describe());
    }
    assert!(run.stderr.contains("err\n") && run.stderr.contains("No space left on device"), "{}", run.describe());
    let dev_mount = run.stdout.lines().find(|line| line.split(' ').nth(4) == Some("/dev")).unwrap_or_default();
    assert!(
        dev_mount.contains("nosuid") && dev_mount.contains("noexec") && dev_mount.contains("tmpfs"),
        "{}",
        run.describe()
    );
    let on_disk: Vec<_> = fs::read_dir(work.at("/dev")).expect("apply made the jail's /dev").collect();
    assert!(on_disk.is_empty(), "the jail's /dev on disk is untouched: {on_disk:?}");
}

/// A char node made on the host for the test (the numbers of /dev/null, so it passes without
/// allow_unsafe_device), removed when the test ends.
struct HostNode(std::path::PathBuf);

impl HostNode {
    fn new() -> HostNode {
        let path = std::path::PathBuf::from(format!("/dev/jailprov-test-{}", std::process::id()));
        let _ = fs::remove_file(&path);
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o666);
        nix::sys::stat::mknod(&path, nix::sys::stat::SFlag::S_IFCHR, mode, nix::sys::stat::makedev(1, 3))
            .expect("mknod a test node in the host's /dev");
        // mknod applied the umask; jail root (in a user namespace) is "other" to the node.
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666)).expect("chmod the node");
        HostNode(path)
    }
}

impl Drop for HostNode {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Under the default minimal /dev, what the jail's /dev on disk adds stays visible: an extra
/// declared device (bound onto the tmpfs), a declared link, and the mount wishes under /dev (a
/// socket bound at /dev/log, an mqueue).
#[test]
fn extra_devices_links_and_mounts_under_dev_are_on_the_minimal_dev() {
    need_root!("extra_devices_links_and_mounts_under_dev_are_on_the_minimal_dev");
    let node = HostNode::new();
    let work = Workspace::new("jailprov-dev-");
    let socket = work.dir.join("log.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind a unix socket");
    let name = node.0.display().to_string();
    work.write_jailfile(&format!(
        "root = {UNUSED_ROOT:?}\nbinaries = [\"bash\", \"cat\", \"grep\", \"ls\", \"readlink\"]\n\
         devices = [\"/dev/null\", {name:?}]\n\
         [[links]]\npath = \"/dev/journal-log\"\ntarget = \"/run/systemd/journal/dev-log\"\n\
         [[mounts]]\nkind = \"proc\"\ntarget = \"/proc\"\n\
         [[mounts]]\nkind = \"bind\"\nsource = {socket:?}\ntarget = \"/dev/log\"\n\
         [[mounts]]\nkind = \"mqueue\"\ntarget = \"/dev/mqueue\"\n"
    ));
    work.apply();
    assert!(fs::symlink_metadata(work.at(&name)).is_ok(), "apply made the node on disk for sshd or chroot");
    let script = format!(
        "[ -c {name} ] && echo extra-is-a-char-device; echo x > {name} && cat {name} && echo extra-works; \
         readlink /dev/journal-log; [ -S /dev/log ] && echo log-is-a-socket; \
         grep -q ' /dev/mqueue .* - mqueue ' /proc/self/mountinfo && echo mqueue-mounted; \
         echo x > /dev/zero && echo zero-too"
    );
    let run = work.enter(&["/usr/bin/bash", "-c", &script]).ok("enter with extras on the minimal /dev");
    for expected in [
        "extra-is-a-char-device",
        "extra-works",
        "/run/systemd/journal/dev-log",
        "log-is-a-socket",
        "mqueue-mounted",
        "zero-too",
    ] {
        assert!(run.stdout.contains(expected), "{expected}: {}", run.describe());
    }
}

/// `dev = "none"` keeps only the jail's /dev on disk: the declared node works, nothing else is there.
#[test]
fn dev_none_gives_only_the_nodes_on_disk() {
    need_root!("dev_none_gives_only_the_nodes_on_disk");
    let work = Workspace::new("jailprov-dev-");
    work.write_jailfile(&format!(
        "root = {UNUSED_ROOT:?}\nbinaries = [\"bash\", \"ls\", \"grep\"]\ndevices = [\"/dev/null\"]\n\
         [[mounts]]\nkind = \"proc\"\ntarget = \"/proc\"\n[enter]\ndev = \"none\"\n"
    ));
    work.apply();
    let script = "echo x > /dev/null && echo null-ok; ls -A /dev; \
        grep ' /dev ' /proc/self/mountinfo || echo no-dev-mount";
    let run = work.enter(&["/usr/bin/bash", "-c", script]).ok("enter with dev = none");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines, ["null-ok", "null", "no-dev-mount"], "{}", run.describe());
}
