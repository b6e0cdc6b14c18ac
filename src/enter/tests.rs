//! The plan `enter` makes, and the order of its steps, checked against the recording Sys.
#![allow(clippy::disallowed_methods)] // tests build fixture jails with plain fs calls

use anyhow::Result;
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;
use nix::unistd::Pid;

use super::id_maps::{IdMaps, IdRange};
use super::signals::Ended;
use super::sys::{Fork, Recorder};
use super::*;
use crate::host::HostFs;
use crate::spec;

const JAILFILE: &str = r#"
root = "/srv/jails/unit"

[[groups]]
name = "staff"
gid = 2000
members = ["jailer"]

[[users]]
name = "jailer"
uid = 1000
gid = 1000
home = "/home/jailer"

[[mounts]]
kind = "devpts"
target = "/dev/pts"

[[mounts]]
kind = "proc"
target = "/proc"

[[mounts]]
kind = "bind"
source = "/usr/share"
target = "/data"
readonly = true

[[mounts]]
kind = "tmpfs"
target = "/dev"
size = "1M"

[enter]
command = ["/bin/sh", "-l"]
user = "jailer"
hostname = "jailbox"
env = { LANG = "C.UTF-8" }
limits = { nofile = 64, memory = "64M" }
capabilities = ["net_bind_service"]
"#;

struct Fixture {
    _tmp: tempfile::TempDir,
    jail_dir: std::path::PathBuf,
    spec: Spec,
}

/// A Jailfile loaded into a Spec whose root is a tempdir holding the mount targets.
fn fixture(jailfile: &str) -> Result<Fixture> {
    let tmp = tempfile::tempdir()?;
    let jail_dir = tmp.path().join("jail");
    for dir in ["dev/pts", "proc", "data", "home/jailer"] {
        std::fs::create_dir_all(jail_dir.join(dir))?;
    }
    let file = tmp.path().join("Jailfile.toml");
    std::fs::write(&file, jailfile)?;
    let spec = spec::load(&file, Some(&jail_dir), &HostFs::real())?;
    Ok(Fixture { _tmp: tmp, jail_dir, spec })
}

fn root_caller() -> Caller {
    Caller { uid: 0, gid: 0, term: None }
}

fn recorder(fixture: &Fixture, forks: &[Fork]) -> Recorder {
    let sys = Recorder::new(&fixture.jail_dir);
    sys.forks.borrow_mut().extend(forks.iter().copied());
    sys
}

/// Asserts that calls starting with these prefixes happened in this order (each one searched
/// after the previous match, so a call may appear twice in the list).
fn assert_order(sys: &Recorder, prefixes: &[&str]) {
    let lines = sys.lines();
    let mut from = 0;
    for prefix in prefixes {
        match lines[from..].iter().position(|line| line.starts_with(prefix)) {
            Some(offset) => from += offset + 1,
            None => panic!("{prefix} was not called after {:?}: {lines:#?}", lines.get(from.wrapping_sub(1))),
        }
    }
}

#[test]
fn the_default_plan_isolates_everything_and_keeps_only_what_is_declared() -> Result<()> {
    let fixture = fixture(JAILFILE)?;
    let plan = plan(&fixture.spec, &[], &root_caller(), &[])?;
    let expected = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET;
    assert_eq!(plan.namespaces, expected);
    assert_eq!(plan.id_maps, None, "a jail user other than root gets no user namespace unless asked");
    assert!(!plan.warnings.iter().any(|warning| warning.contains("real host root")), "{:?}", plan.warnings);
    assert!(plan.loopback);
    assert_eq!(plan.hostname.as_deref(), Some("jailbox"));
    assert_eq!((plan.uid, plan.gid, plan.groups.clone()), (1000, 1000, Some(vec![2000])));
    assert_eq!(plan.argv, ["/bin/sh", "-l"]);
    assert_eq!(plan.workdir, "/home/jailer", "the user's home by default");
    assert_eq!(plan.env, [("LANG".into(), "C.UTF-8".into()), ("PATH".into(), DEFAULT_PATH.into())]);
    assert_eq!(plan.keep.len(), 1);
    assert!(plan.seccomp);
    // No cgroup here: memory falls back to RLIMIT_AS, with a warning.
    assert!(plan.limits.rlimits.contains(&(Resource::RLIMIT_AS, 64 << 20)));
    assert!(plan.warnings.iter().any(|warning| warning.contains("RLIMIT_AS")), "{:?}", plan.warnings);
    let targets: Vec<String> = plan.mounts.iter().map(|operation| operation.target.to_string()).collect();
    // The user's home writable, the root read-only, the wishes, then /proc's hardening.
    assert_eq!(targets[..6], ["/home/jailer", "/", "/proc", "/data", "/dev", "/dev/pts"]);
    assert!(targets[6..].iter().all(|target| target.starts_with("/proc/")), "{targets:?}");
    let overridden = super::plan(&fixture.spec, &["id".into(), "-u".into()], &root_caller(), &[])?;
    assert_eq!(overridden.argv, ["id", "-u"]);
    Ok(())
}

#[test]
fn a_terminal_passes_term_and_nothing_else_of_the_callers_environment() -> Result<()> {
    let fixture = fixture(JAILFILE)?;
    let caller = Caller { term: Some("xterm".into()), ..root_caller() };
    let plan = plan(&fixture.spec, &[], &caller, &[])?;
    let names: Vec<&str> = plan.env.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["LANG", "PATH", "TERM"]);
    Ok(())
}

#[test]
fn a_rootless_caller_gets_a_user_namespace_mapping_the_jail_user_to_itself() -> Result<()> {
    let fixture = fixture(JAILFILE)?;
    let caller = Caller { uid: 65534, gid: 65534, term: None };
    let plan = plan(&fixture.spec, &[], &caller, &["memory".into()])?;
    assert!(plan.namespaces.contains(CloneFlags::CLONE_NEWUSER));
    assert_eq!(
        plan.id_maps,
        Some(IdMaps {
            uid: IdRange { inside: 1000, outside: 65534, count: 1 },
            gid: IdRange { inside: 1000, outside: 65534, count: 1 },
            deny_setgroups: true,
        })
    );
    assert_eq!(plan.groups, None, "setgroups is denied in an unprivileged user namespace");
    assert!(plan.warnings.iter().any(|warning| warning.contains("supplementary groups")), "{:?}", plan.warnings);
    assert_eq!(plan.limits.memory_max, None, "no cgroup for a rootless caller");
    Ok(())
}

#[test]
fn root_asking_for_a_user_namespace_maps_jail_root_to_an_unprivileged_range() -> Result<()> {
    let fixture = fixture(&JAILFILE.replace("[enter]\n", "[enter]\nnamespaces = [\"user\", \"pid\"]\n"))?;
    let plan = plan(&fixture.spec, &[], &root_caller(), &[])?;
    let range = IdRange { inside: 0, outside: ROOT_USERNS_BASE, count: 65536 };
    assert_eq!(plan.id_maps, Some(IdMaps { uid: range, gid: range, deny_setgroups: false }));
    assert_eq!(plan.groups, Some(vec![2000]));
    assert!(!plan.loopback, "no net namespace asked");
    assert_eq!(plan.hostname, None, "no uts namespace: the host's hostname must not be touched");
    assert!(plan.warnings.iter().any(|warning| warning.contains("would rename the host")));
    Ok(())
}

#[test]
fn network_host_keeps_the_host_network_and_touches_no_interface() -> Result<()> {
    let fixture = fixture(&JAILFILE.replace("[enter]\n", "[enter]\nnetwork = \"host\"\n"))?;
    let plan = plan(&fixture.spec, &[], &root_caller(), &[])?;
    assert!(!plan.namespaces.contains(CloneFlags::CLONE_NEWNET));
    assert!(!plan.loopback);
    Ok(())
}

#[test]
fn the_steps_run_in_the_order_that_makes_them_safe() -> Result<()> {
    let fixture = fixture(JAILFILE)?;
    let plan = plan(&fixture.spec, &[], &root_caller(), &[])?;
    // The clone and the fork both answer "child": the recorder walks PID 1, then the command.
    let sys = recorder(&fixture, &[Fork::Child, Fork::Child]);
    let side = run(&sys, &plan, None)?;
    assert_eq!(side, Side::Child(EXIT_NOT_FOUND), "the recorder's execve fails with ENOENT");
    assert_order(
        &sys,
        &[
            "block_signals",
            "clone_into_namespaces",
            "die_with_parent",
            "wait_for_release",
            "close_fds_above_stderr",
            // Private propagation before any mount.
            "make_mounts_private",
            "bind_root_onto_itself",
            "mount_",
            // pivot_root and the old root's detach after every mount wish, before any drop.
            "pivot_root",
            "detach_old_root",
            "set_hostname jailbox",
            "bring_up_loopback",
            "become_subreaper",
            "fork",
            // Limits and the bounding set while the capabilities to set them are still held.
            "set_rlimit",
            "drop_bounding_set",
            "keep_capabilities_across_setuid",
            "set_groups [2000]",
            "set_ids 1000 1000",
            "set_capabilities",
            // no_new_privs before seccomp (an unprivileged filter needs it).
            "set_no_new_privs",
            "install_seccomp",
            "reset_signals",
            "close_fds_above_stderr",
            "chdir /home/jailer",
            "execve",
        ],
    );
    let lines = sys.lines();
    let mounts: Vec<&String> = lines.iter().filter(|line| line.starts_with("mount_")).collect();
    assert_eq!(mounts.len(), 4, "{lines:#?}");
    assert!(
        mounts[0].starts_with("mount_filesystem proc")
            && mounts[0].ends_with(&format!("{}/proc attributes=0xe", fixture.jail_dir.display()))
    );
    assert!(
        mounts[1].starts_with("mount_bind /usr/share -> ") && mounts[1].contains("attributes=0x7"),
        "{}",
        mounts[1]
    );
    assert!(mounts[3].contains("devpts") && mounts[3].contains("/dev/pts"), "the parent /dev first: {lines:#?}");
    assert!(lines.iter().any(|line| line.starts_with("drop_bounding_set keep=[CAP_NET_BIND_SERVICE]")), "{lines:#?}");
    let execve = lines.iter().find(|line| line.starts_with("execve")).map(String::as_str).unwrap_or_default();
    assert!(execve.contains(r#""LANG=C.UTF-8""#) && execve.contains("PATH="), "{execve}");
    assert!(!lines.iter().any(|line| line.starts_with("write_id_maps")), "no user namespace for root");
    Ok(())
}

#[test]
fn without_seccomp_no_new_privs_is_still_set() -> Result<()> {
    let fixture = fixture(&JAILFILE.replace("[enter]\n", "[enter]\nseccomp = false\n"))?;
    let plan = plan(&fixture.spec, &[], &root_caller(), &[])?;
    let sys = recorder(&fixture, &[Fork::Child, Fork::Child]);
    run(&sys, &plan, None)?;
    assert!(sys.position("set_no_new_privs").is_some());
    assert!(sys.position("install_seccomp").is_none(), "{:#?}", sys.lines());
    Ok(())
}

#[test]
fn jailprov_writes_the_id_maps_then_releases_and_reports_the_command_s_signal() -> Result<()> {
    let fixture = fixture(&JAILFILE.replace("[enter]\n", "[enter]\nnamespaces = [\"user\", \"pid\", \"net\"]\n"))?;
    let plan = plan(&fixture.spec, &[], &root_caller(), &[])?;
    let mut sys = recorder(&fixture, &[Fork::Parent(Pid::from_raw(4242))]);
    sys.ended = Ended::Signaled(15);
    let side = run(&sys, &plan, None)?;
    assert_eq!(side, Side::Jailprov(143), "128 + SIGTERM");
    assert_order(
        &sys,
        &["block_signals", "clone_into_namespaces", "write_id_maps 4242", "release_child", "supervise 4242"],
    );
    assert!(sys.position("make_mounts_private").is_none(), "jailprov itself mounts nothing");
    let clone = sys.position("clone_into_namespaces").map(|index| sys.lines()[index].clone()).unwrap_or_default();
    assert!(clone.contains("CLONE_NEWUSER"), "{:#?}", sys.lines());
    Ok(())
}

#[test]
fn a_failed_setup_step_stops_before_the_command_exists() -> Result<()> {
    let fixture = fixture(JAILFILE)?;
    let plan = plan(&fixture.spec, &[], &root_caller(), &[])?;
    let mut sys = recorder(&fixture, &[Fork::Child, Fork::Child]);
    sys.failing = vec!["pivot_root"];
    assert_eq!(run(&sys, &plan, None)?, Side::Child(EXIT_SETUP_FAILED));
    assert!(sys.position("fork").is_none() && sys.position("execve").is_none(), "{:#?}", sys.lines());
    Ok(())
}

#[test]
fn a_bare_command_name_is_found_in_the_jail_s_path() -> Result<()> {
    let fixture = fixture(JAILFILE)?;
    let plan = plan(&fixture.spec, &["id".into()], &root_caller(), &[])?;
    let mut sys = recorder(&fixture, &[]);
    sys.executables = vec!["/usr/bin/id".into()];
    exec_command(&sys, &plan);
    let lines = sys.lines();
    assert!(lines.last().is_some_and(|line| line.starts_with(r#"execve "/usr/bin/id" ["id"]"#)), "{lines:#?}");
    let plan = super::plan(&fixture.spec, &["nope".into()], &root_caller(), &[])?;
    let sys = recorder(&fixture, &[]);
    assert_eq!(exec_command(&sys, &plan), EXIT_NOT_FOUND);
    assert!(sys.position("execve").is_none());
    Ok(())
}

/// A jail root user, a writable dir, a device and proc: every kind of step of the mount plan.
const MOUNT_PLAN_JAILFILE: &str = r#"
root = "/srv/jails/unit"
devices = ["/dev/null"]

[[dirs]]
path = "/tmp"
mode = "1777"
writable = true

[[dirs]]
path = "/etc"

[[users]]
name = "jailer"
uid = 1000
gid = 1000
home = "/home/jailer"

[[mounts]]
kind = "proc"
target = "/proc"

[[mounts]]
kind = "tmpfs"
target = "/tmp/scratch"
"#;

#[test]
fn jail_root_gets_a_user_namespace_unless_allow_host_root_which_warns() -> Result<()> {
    let fixture = fixture(MOUNT_PLAN_JAILFILE)?;
    let plan = plan(&fixture.spec, &[], &root_caller(), &[])?;
    assert!(plan.namespaces.contains(CloneFlags::CLONE_NEWUSER), "jail root is never host root by default");
    let range = IdRange { inside: 0, outside: ROOT_USERNS_BASE, count: 65536 };
    assert_eq!(plan.id_maps, Some(IdMaps { uid: range, gid: range, deny_setgroups: false }));
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);

    let allowed = fixture_with_enter(MOUNT_PLAN_JAILFILE, "allow_host_root = true")?;
    let plan = super::plan(&allowed.spec, &[], &root_caller(), &[])?;
    assert!(!plan.namespaces.contains(CloneFlags::CLONE_NEWUSER));
    assert_eq!(plan.id_maps, None);
    assert!(plan.warnings.iter().any(|warning| warning.contains("runs as real host root")), "{:?}", plan.warnings);

    // Asking for the user namespace too: not host root, no warning.
    let both = fixture_with_enter(MOUNT_PLAN_JAILFILE, "allow_host_root = true\nnamespaces = [\"user\", \"pid\"]")?;
    let plan = super::plan(&both.spec, &[], &root_caller(), &[])?;
    assert!(plan.id_maps.is_some() && plan.warnings.is_empty(), "{:?}", plan.warnings);

    // A rootless caller already maps jail root to itself: nothing changes.
    let caller = Caller { uid: 65534, gid: 65534, term: None };
    let plan = super::plan(&fixture.spec, &[], &caller, &[])?;
    assert_eq!(plan.id_maps.map(|maps| maps.uid), Some(IdRange { inside: 0, outside: 65534, count: 1 }));
    Ok(())
}

fn fixture_with_enter(jailfile: &str, enter: &str) -> Result<Fixture> {
    fixture(&format!("{jailfile}\n[enter]\n{enter}\n"))
}

#[test]
fn the_root_is_made_read_only_after_the_writable_places_and_devices_and_proc_is_hardened_last() -> Result<()> {
    let fixture = fixture(MOUNT_PLAN_JAILFILE)?;
    for dir in ["tmp/scratch", "etc", "proc/sys", "proc/acpi"] {
        std::fs::create_dir_all(fixture.jail_dir.join(dir))?;
    }
    std::fs::write(fixture.jail_dir.join("dev/null"), "")?;
    std::fs::write(fixture.jail_dir.join("proc/kcore"), "")?;
    let plan = plan(&fixture.spec, &[], &root_caller(), &[])?;
    let sys = recorder(&fixture, &[Fork::Child, Fork::Child]);
    run(&sys, &plan, None)?;
    let jail = fixture.jail_dir.display().to_string();
    let mounts: Vec<String> = sys
        .lines()
        .into_iter()
        .filter(|line| {
            line.starts_with("mount_") || line.starts_with("bind_onto_itself") || line.starts_with("restrict_")
        })
        .map(|line| line.replace(&jail, "JAIL"))
        .collect();
    assert_eq!(
        mounts,
        [
            // Writable places, parents first: read-write, nosuid, nodev, with what is below them.
            "bind_onto_itself JAIL/tmp recursive=true attributes=0x6",
            "bind_onto_itself JAIL/home/jailer recursive=true attributes=0x6",
            // A device node keeps working on the nodev root: nosuid, noexec, not nodev.
            "bind_onto_itself JAIL/dev/null recursive=false attributes=0xa",
            // Then the root: read-only, nosuid, nodev (cloned before, the binds above would
            // have inherited it).
            "restrict_mount JAIL attributes=0x7",
            // The minimal /dev (the default) on the read-only root, before the wishes: a
            // nosuid,noexec tmpfs, the host's six nodes, a devpts of its own, /dev/shm.
            r#"mount_filesystem tmpfs [("mode", "755"), ("size", "65536")] -> JAIL/dev attributes=0xa"#,
            "mount_bind /dev/null -> JAIL/dev/null recursive=true attributes=0xa",
            "mount_bind /dev/zero -> JAIL/dev/zero recursive=true attributes=0xa",
            "mount_bind /dev/full -> JAIL/dev/full recursive=true attributes=0xa",
            "mount_bind /dev/random -> JAIL/dev/random recursive=true attributes=0xa",
            "mount_bind /dev/urandom -> JAIL/dev/urandom recursive=true attributes=0xa",
            "mount_bind /dev/tty -> JAIL/dev/tty recursive=true attributes=0xa",
            r#"mount_filesystem devpts [("ptmxmode", "0666"), ("mode", "0620")] -> JAIL/dev/pts attributes=0xa"#,
            r#"mount_filesystem tmpfs [("mode", "1777")] -> JAIL/dev/shm attributes=0x6"#,
            "mount_filesystem proc [] -> JAIL/proc attributes=0xe",
            "mount_filesystem tmpfs [] -> JAIL/tmp/scratch attributes=0x6",
            // proc's hardening, only what exists: /proc/sys read-only, the masks.
            "bind_onto_itself JAIL/proc/sys recursive=true attributes=0xf",
            "mount_filesystem tmpfs [] -> JAIL/proc/acpi attributes=0xf",
            "mount_bind /dev/null -> JAIL/proc/kcore recursive=false attributes=0xb",
        ]
    );
    assert_order(&sys, &["make_mounts_private", "bind_root_onto_itself", "bind_onto_itself", "pivot_root"]);

    // dev = "none": the jail's /dev on disk alone, its declared node bound onto itself.
    let none = fixture_with_enter(MOUNT_PLAN_JAILFILE, "dev = \"none\"")?;
    std::fs::create_dir_all(none.jail_dir.join("tmp/scratch"))?;
    std::fs::write(none.jail_dir.join("dev/null"), "")?;
    let plan = super::plan(&none.spec, &[], &root_caller(), &[])?;
    assert_eq!(plan.minimal_dev, None);
    let sys = recorder(&none, &[Fork::Child, Fork::Child]);
    run(&sys, &plan, None)?;
    let lines = sys.lines();
    assert!(!lines.iter().any(|line| line.contains("/dev/") && line.starts_with("mount_")), "{lines:#?}");
    assert!(lines.iter().any(|line| line.starts_with("bind_onto_itself") && line.contains("/dev/null")));
    Ok(())
}

/// Under the minimal /dev, a declared device it lacks is the jail's own node bound onto the
/// tmpfs, and a wish under /dev gets its mount point there (a file for a bound socket).
#[test]
fn the_minimal_dev_carries_extra_devices_links_and_wish_targets() -> Result<()> {
    let host = tempfile::tempdir()?;
    let socket = host.path().join("log.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket)?;
    let jailfile = format!(
        "{MOUNT_PLAN_JAILFILE}\n[[mounts]]\nkind = \"bind\"\nsource = {socket:?}\ntarget = \"/dev/log\"\n\
         [[mounts]]\nkind = \"mqueue\"\ntarget = \"/dev/mqueue\"\n"
    );
    let fixture = fixture(&jailfile)?;
    let mut plan = plan(&fixture.spec, &[], &root_caller(), &[])?;
    // Declared devices come from the host; the jail's stand-in is a plain file here.
    let extra = crate::tree::JailPath::parse("/dev/net/tun").expect("a valid jail path");
    plan.minimal_dev = Some(dev::MinimalDev { devices: vec![extra] });
    std::fs::create_dir_all(fixture.jail_dir.join("tmp/scratch"))?;
    std::fs::create_dir_all(fixture.jail_dir.join("dev/net"))?;
    std::fs::write(fixture.jail_dir.join("dev/null"), "")?;
    std::fs::write(fixture.jail_dir.join("dev/net/tun"), "")?;
    std::os::unix::fs::symlink("/run/elsewhere", fixture.jail_dir.join("dev/kept-link"))?;
    let sys = recorder(&fixture, &[Fork::Child, Fork::Child]);
    run(&sys, &plan, None)?;
    let jail = fixture.jail_dir.display().to_string();
    let lines: Vec<String> = sys.lines().into_iter().map(|line| line.replace(&jail, "JAIL")).collect();
    assert!(lines.contains(&"bind_node JAIL/dev/net/tun -> JAIL/dev/net/tun attributes=0xa".to_owned()), "{lines:#?}");
    assert!(fixture.jail_dir.join("dev/log").is_file(), "a file as the mount point of a bound socket");
    assert!(fixture.jail_dir.join("dev/mqueue").is_dir());
    assert_order(&sys, &["restrict_mount", "mount_filesystem tmpfs", "bind_node", "mount_bind /tmp", "pivot_root"]);
    Ok(())
}

#[test]
fn the_jail_s_pid_1_is_bare_before_the_command_may_exec() -> Result<()> {
    let fixture = fixture(JAILFILE)?;
    let plan = plan(&fixture.spec, &[], &root_caller(), &[])?;
    // The clone answers "child" (PID 1), its fork "parent": the recorder walks PID 1's own side.
    let sys = recorder(&fixture, &[Fork::Child, Fork::Parent(Pid::from_raw(7))]);
    assert_eq!(run(&sys, &plan, None)?, Side::Child(0));
    assert_order(
        &sys,
        &[
            "pivot_root",
            "fork",
            "drop_bounding_set keep=[]",
            "set_groups []",
            "set_ids 1000 1000",
            "die_with_parent",
            "set_capabilities keep=[]",
            "set_non_dumpable",
            "release_command",
            "supervise 7 reap_all=true",
        ],
    );
    // And the command's process execs only after PID 1 released it.
    let sys = recorder(&fixture, &[Fork::Child, Fork::Child]);
    run(&sys, &plan, None)?;
    assert_order(&sys, &["fork", "set_no_new_privs", "wait_for_init", "close_fds_above_stderr", "execve"]);
    Ok(())
}

#[test]
fn sysfs_with_the_host_network_in_a_user_namespace_is_refused_before_anything_starts() -> Result<()> {
    let sysfs = "[[mounts]]\nkind = \"sysfs\"\ntarget = \"/sys\"\n";
    let default = fixture(&format!("root = \"/srv/jails/unit\"\n{sysfs}\n[enter]\nnetwork = \"host\"\n"))?;
    let error = plan(&default.spec, &[], &root_caller(), &[]).expect_err("EPERM from the kernel otherwise");
    let message = format!("{error:#}");
    assert!(message.contains("mounts[0] (sysfs at /sys) cannot be mounted"), "{message}");
    assert!(message.contains("remove network = \"host\"") && message.contains("allow_host_root = true"), "{message}");
    let allowed = fixture(&format!(
        "root = \"/srv/jails/unit\"\n{sysfs}\n[enter]\nnetwork = \"host\"\nallow_host_root = true\n"
    ))?;
    assert!(plan(&allowed.spec, &[], &root_caller(), &[]).is_ok(), "host root mounts sysfs anywhere");
    Ok(())
}

#[test]
fn a_writable_jail_root_is_refused_with_what_to_declare_instead() {
    let error = fixture("root = \"/srv/jails/unit\"\n[[dirs]]\npath = \"/\"\nwritable = true\n")
        .err()
        .expect("the jail root cannot be writable");
    let message = format!("{error:#}");
    assert!(message.contains("dirs[0].writable") && message.contains("the jail root cannot be writable"), "{message}");
    assert!(message.contains("each with `writable = true`"), "{message}");
}

#[test]
fn with_a_terminal_the_jail_gets_its_own_pty_and_session() -> Result<()> {
    let fixture = fixture(JAILFILE)?;
    let plan = plan(&fixture.spec, &[], &root_caller(), &[])?;
    // jailprov's side: the pty before the clone, then the relay instead of the plain supervisor.
    let mut sys = recorder(&fixture, &[Fork::Parent(Pid::from_raw(9))]);
    sys.terminal = true;
    assert_eq!(run(&sys, &plan, None)?, Side::Jailprov(0));
    assert_order(&sys, &["open_terminal", "clone_into_namespaces", "release_child", "relay_terminal 9"]);
    assert!(sys.position("supervise").is_none(), "{:#?}", sys.lines());
    // PID 1 leaves the caller's session first; the command starts its own before it execs.
    let sys = recorder(&fixture, &[Fork::Child, Fork::Child]);
    run(&sys, &plan, None)?;
    assert_order(&sys, &["clone_into_namespaces", "leave_caller_session", "make_mounts_private", "fork"]);
    assert_order(&sys, &["fork", "wait_for_init", "start_session", "execve"]);
    Ok(())
}

#[test]
fn traced_the_command_asks_for_its_tracer_before_seccomp_and_pid_1_follows_it() -> Result<()> {
    let fixture = fixture(JAILFILE)?;
    let mut plan = plan(&fixture.spec, &["/usr/bin/prog".into()], &root_caller(), &[])?;
    plan.trace = true;
    let sys = recorder(&fixture, &[Fork::Child, Fork::Child]);
    run(&sys, &plan, None)?;
    // Its own capabilities gone first (PID 1, bare, must be allowed to trace it), then
    // PTRACE_TRACEME while seccomp (which denies ptrace) is not there yet; the filter still comes.
    assert_order(&sys, &["set_capabilities", "trace_me", "set_no_new_privs", "install_seccomp", "execve"]);
    let sys = recorder(&fixture, &[Fork::Child, Fork::Parent(Pid::from_raw(7))]);
    run(&sys, &plan, None)?;
    assert_order(&sys, &["set_non_dumpable", "release_command", "supervise_traced 7 /usr/bin/prog"]);
    assert!(sys.position("supervise ").is_none(), "{:#?}", sys.lines());
    // Untraced, nothing of the trace happens.
    plan.trace = false;
    let sys = recorder(&fixture, &[Fork::Child, Fork::Child]);
    run(&sys, &plan, None)?;
    assert!(sys.position("trace_me").is_none(), "{:#?}", sys.lines());
    Ok(())
}
