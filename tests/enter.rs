//! `jailprov enter` on real jails: what a command inside can and cannot see or do.
//!
//! Every test builds its own jail with `jailprov apply` in a fresh temporary directory (`--root`
//! and `--state-dir` inside it) and runs the real binary as a fresh process for each `enter`:
//! the namespaces are never created inside this test harness. Without root each test prints
//! `SKIPPED <name>: needs root` and passes (CI runs them as root). Nothing on the host is
//! mounted, changed or removed: every bind source is a directory of the test's tempdir.
#![allow(clippy::disallowed_methods)] // tests build fixtures and jails with plain fs calls

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[macro_use]
mod cli;
use cli::{output, Run, Workspace, BIN, UNUSED_ROOT};

/// The classic escape: as root, chroot into a subdirectory (leaving the cwd outside the new
/// root), climb with "..", chroot there, and open a file only the host has.
const ESCAPE_C: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc < 2) return 64;
    if (chdir("/tmp") != 0) { perror("chdir /tmp"); return 65; }
    mkdir("jp-escape", 0755);
    if (chroot("jp-escape") != 0) { perror("chroot jp-escape"); puts("CONTAINED"); return 2; }
    for (int i = 0; i < 1000; i++) chdir("..");
    if (chroot(".") != 0) { perror("chroot ."); puts("CONTAINED"); return 3; }
    int fd = open(argv[1], O_RDONLY);
    if (fd >= 0) { puts("ESCAPED"); return 0; }
    perror(argv[1]);
    puts("CONTAINED");
    return 1;
}
"#;

/// What the jails hold; `{DIR}` is replaced by the test's tempdir.
fn jailfile(enter: &str, extra: &str) -> String {
    format!(
        r#"root = "{UNUSED_ROOT}"
binaries = ["bash", "ls", "cat", "id", "env", "sleep", "cp", "chmod", "touch", "head", "wc", "grep"]
exclude = ["/usr/share/doc/**", "/usr/share/man/**"]
devices = ["/dev/null", "/dev/zero", "/dev/urandom"]

[[dirs]]
path = "/tmp"
mode = "1777"
writable = true

[[dirs]]
path = "/proc"

[[dirs]]
path = "/sys"

[[dirs]]
path = "/scratch"

[[dirs]]
path = "/data"

[[dirs]]
path = "/dev/pts"

[[groups]]
name = "jailer"
gid = 1000

[[groups]]
name = "staff"
gid = 2000
members = ["jailer"]

[[users]]
name = "jailer"
uid = 1000
gid = 1000
home = "/home/jailer"
shell = "/usr/bin/bash"

{extra}

[enter]
{enter}
"#
    )
}

/// The mount wishes of the full jail.
const MOUNTS: &str = r#"
[[mounts]]
kind = "proc"
target = "/proc"

[[mounts]]
kind = "tmpfs"
target = "/scratch"
size = "1M"

[[mounts]]
kind = "sysfs"
target = "/sys"

[[mounts]]
kind = "devpts"
target = "/dev/pts"

[[mounts]]
kind = "mqueue"
target = "/dev/mqueue"

[[mounts]]
kind = "bind"
source = "{DIR}/shared"
target = "/data"
readonly = true
"#;

/// A fresh applied jail in its own workspace (tests/cli; 0700 unless made traversable for a
/// rootless test), beside a `shared` directory for bind mounts.
struct Jail(Workspace);

impl std::ops::Deref for Jail {
    type Target = Workspace;

    fn deref(&self) -> &Workspace {
        &self.0
    }
}

impl Jail {
    fn new(text: &str) -> Jail {
        let jail = Jail(Workspace::new("jailprov-enter-"));
        fs::create_dir(jail.dir.join("shared")).expect("mkdir shared");
        fs::write(jail.dir.join("shared/greeting"), "hello from the host\n").expect("write shared/greeting");
        jail.write_jailfile(&text.replace("{DIR}", &jail.dir.display().to_string()));
        jail.apply();
        jail
    }

    /// Runs a bash script in the jail.
    fn bash(&self, script: &str) -> Run {
        self.enter(&["/usr/bin/bash", "-c", script])
    }
}

fn host_mount_lines() -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo").lines().map(str::to_owned).collect()
}

// ---------------------------------------------------------------------------------------------
// The escape
// ---------------------------------------------------------------------------------------------

#[test]
fn the_classic_escape_works_under_plain_chroot_and_fails_under_enter() {
    need_root!("the_classic_escape_works_under_plain_chroot_and_fails_under_enter");
    let build = tempfile::tempdir().expect("tempdir");
    let escape = cli::build_static(build.path(), "escape", ESCAPE_C);
    let files = format!("[[files]]\nsrc = \"{}\"\ndest = \"/usr/bin/escape\"\nmode = \"0755\"\n", escape.display());
    for (enter, what) in [
        ("user = \"root\"", "jail user root"),
        ("user = \"jailer\"", "jail user jailer"),
        // Even with chroot allowed (the capability kept, no seccomp): pivot_root left no host
        // root to climb back to.
        ("user = \"root\"\ncapabilities = [\"CAP_SYS_CHROOT\"]\nseccomp = false", "root keeping CAP_SYS_CHROOT"),
        // The same as the real host root (no user namespace).
        (
            "user = \"root\"\nallow_host_root = true\ncapabilities = [\"CAP_SYS_CHROOT\"]\nseccomp = false",
            "host root keeping CAP_SYS_CHROOT",
        ),
    ] {
        let jail = Jail::new(&jailfile(enter, &files));
        let marker = jail.dir.join("host-only-marker");
        fs::write(&marker, "the host\n").expect("write the marker");
        let marker = marker.display().to_string();
        // The control: plain chroot(8) as root lets the program out.
        let control = output({
            let mut command = Command::new("chroot");
            command.arg(&jail.root).arg("/usr/bin/escape").arg(&marker);
            command
        });
        assert!(control.stdout.contains("ESCAPED"), "the control must escape: {}", control.describe());
        let entered = jail.enter(&["/usr/bin/escape", &marker]);
        assert!(
            !entered.stdout.contains("ESCAPED") && entered.stdout.contains("CONTAINED"),
            "{what}: {}",
            entered.describe()
        );
        if what.contains("CAP_SYS_CHROOT") {
            // chroot itself succeeded: it is pivot_root that holds, not a refused call.
            assert_eq!(entered.code, 1, "{what}: the climb ran and found no host: {}", entered.describe());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What the command sees
// ---------------------------------------------------------------------------------------------

#[test]
fn proc_inside_lists_only_the_jail_s_processes() {
    need_root!("proc_inside_lists_only_the_jail_s_processes");
    let jail = Jail::new(&jailfile("user = \"jailer\"", MOUNTS));
    let run = jail.bash("for entry in /proc/[0-9]*; do echo \"${entry#/proc/}\"; done").code(0, "list /proc");
    let pids: Vec<u32> = run.stdout.lines().filter_map(|line| line.parse().ok()).collect();
    // PID 1 (jailprov's init) and bash: this test's own process is far away on the host.
    assert!(!pids.is_empty() && pids.len() <= 3, "{}", run.describe());
    assert!(pids.contains(&1), "{}", run.describe());
    assert!(!pids.contains(&std::process::id()), "{}", run.describe());
    let host_processes = fs::read_dir("/proc").expect("host /proc").count();
    assert!(host_processes > pids.len(), "the host has more processes than the jail shows");
}

#[test]
fn hostname_network_capabilities_user_and_environment_are_the_jail_s() {
    need_root!("hostname_network_capabilities_user_and_environment_are_the_jail_s");
    let enter = "user = \"jailer\"\nhostname = \"jailbox\"\nenv = { GREETING = \"hello\" }";
    let jail = Jail::new(&jailfile(enter, MOUNTS));
    let hostname = jail.enter(&["/usr/bin/cat", "/proc/sys/kernel/hostname"]).code(0, "hostname");
    assert_eq!(hostname.stdout.trim(), "jailbox");
    let host_hostname = fs::read_to_string("/proc/sys/kernel/hostname").expect("host hostname");
    assert_ne!(host_hostname.trim(), "jailbox", "the host's hostname is untouched");

    let net = jail.enter(&["/usr/bin/cat", "/proc/net/dev"]).code(0, "/proc/net/dev");
    let interfaces: Vec<&str> =
        net.stdout.lines().skip(2).filter_map(|line| line.split(':').next()).map(str::trim).collect();
    assert_eq!(interfaces, ["lo"], "{}", net.describe());
    let flags = jail.enter(&["/usr/bin/cat", "/sys/class/net/lo/flags"]).code(0, "lo flags");
    let flags = u32::from_str_radix(flags.stdout.trim().trim_start_matches("0x"), 16).expect("hex flags");
    assert_eq!(flags & 1, 1, "lo is up (IFF_UP)");

    let status = jail.enter(&["/usr/bin/cat", "/proc/self/status"]).code(0, "status");
    for line in [
        "CapEff:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(status.stdout.lines().any(|have| have == line), "{line}: {}", status.describe());
    }

    let id = jail.enter(&["id"]).code(0, "id");
    assert_eq!(id.stdout.trim(), "uid=1000(jailer) gid=1000(jailer) groups=1000(jailer),2000(staff)");

    let env = jail.enter(&["env"]).code(0, "env");
    let mut names: Vec<&str> = env.stdout.lines().filter_map(|line| line.split('=').next()).collect();
    names.sort();
    assert_eq!(names, ["GREETING", "PATH"], "only what [enter].env declares, plus PATH: {}", env.describe());
    assert!(env.stdout.contains("GREETING=hello\n"));
}

#[test]
fn a_file_descriptor_opened_by_the_parent_is_not_visible_inside() {
    need_root!("a_file_descriptor_opened_by_the_parent_is_not_visible_inside");
    let jail = Jail::new(&jailfile("user = \"jailer\"", MOUNTS));
    let secret = jail.dir.join("secret");
    fs::write(&secret, "host secret\n").expect("write secret");
    // bash opens fd 7 without close-on-exec and execs jailprov with it.
    let script = format!(
        "exec 7<'{}'; ls /proc/self/fd/7 >/dev/null || exit 99; exec '{BIN}' enter -f '{}' --root '{}' --state-dir '{}' -- /usr/bin/ls /proc/self/fd",
        secret.display(),
        jail.jailfile.display(),
        jail.root.display(),
        jail.state.display()
    );
    let run = output({
        let mut command = Command::new("bash");
        command.arg("-c").arg(script).stdin(Stdio::null());
        command
    })
    .code(0, "ls /proc/self/fd inside");
    let fds: Vec<&str> = run.stdout.lines().collect();
    // 0-2, and the directory ls itself is reading.
    assert!(!fds.contains(&"7"), "fd 7 leaked into the jail: {}", run.describe());
    assert!(fds.len() <= 4, "{}", run.describe());
}

// ---------------------------------------------------------------------------------------------
// Mounts
// ---------------------------------------------------------------------------------------------

#[test]
fn a_readonly_bind_rejects_writes_a_tmpfs_has_its_size_and_nothing_stays_mounted() {
    need_root!("a_readonly_bind_rejects_writes_a_tmpfs_has_its_size_and_nothing_stays_mounted");
    let before = host_mount_lines();
    let jail = Jail::new(&jailfile("user = \"root\"", MOUNTS));
    let read = jail.enter(&["/usr/bin/cat", "/data/greeting"]).code(0, "read the bind");
    assert_eq!(read.stdout, "hello from the host\n");
    let write = jail.bash("echo changed > /data/greeting");
    assert_ne!(write.code, 0, "{}", write.describe());
    assert!(write.stderr.contains("Read-only file system"), "{}", write.describe());
    assert_eq!(fs::read_to_string(jail.dir.join("shared/greeting")).expect("read"), "hello from the host\n");

    let sysfs = jail.bash("echo 1 > /sys/jailprov-test");
    assert!(sysfs.stderr.contains("Read-only file system"), "sysfs is read-only: {}", sysfs.describe());

    let mountinfo = jail.enter(&["/usr/bin/cat", "/proc/self/mountinfo"]).code(0, "mountinfo inside");
    let scratch = mountinfo.stdout.lines().find(|line| line.contains(" /scratch ")).unwrap_or_default();
    assert!(scratch.contains("size=1024k"), "{}", mountinfo.describe());
    assert!(mountinfo.stdout.lines().any(|line| line.contains(" /dev/pts ") && line.contains("devpts")));
    assert!(
        mountinfo.stdout.lines().any(|line| line.contains(" /dev/mqueue ") && line.contains(" - mqueue ")),
        "{}",
        mountinfo.describe()
    );
    let fill = jail.bash("cat /dev/zero > /scratch/fill; ls -l /scratch/fill");
    assert!(fill.stderr.contains("No space left on device"), "{}", fill.describe());
    assert!(fill.stdout.contains(&(1024 * 1024).to_string()), "exactly 1 MiB fits: {}", fill.describe());

    let after = host_mount_lines();
    let root = jail.root.display().to_string();
    assert!(!after.iter().any(|line| line.contains(&root)), "a mount under the jail is left on the host");
    assert_eq!(before.len(), after.len(), "the host's mount table changed:\n{}", after.join("\n"));
}

#[test]
fn a_symlink_planted_at_a_mount_target_is_refused() {
    need_root!("a_symlink_planted_at_a_mount_target_is_refused");
    let jail = Jail::new(&jailfile("user = \"root\"", MOUNTS));
    let canary = jail.dir.join("canary");
    fs::create_dir(&canary).expect("mkdir canary");
    fs::write(canary.join("keep"), "keep").expect("write canary");
    fs::remove_dir(jail.root.join("scratch")).expect("rmdir /scratch");
    std::os::unix::fs::symlink(&canary, jail.root.join("scratch")).expect("plant the link");
    let run = jail.enter(&["/usr/bin/ls", "/scratch"]).code(125, "a symlink target");
    assert!(
        run.stderr.contains("jailprov enter: error:") && run.stderr.contains("/scratch is a symlink"),
        "{}",
        run.describe()
    );
    assert_eq!(fs::read_dir(&canary).expect("canary").count(), 1);
}

// ---------------------------------------------------------------------------------------------
// Safe defaults: jail root is not host root, the jail is read-only, /proc and /sys are hardened
// ---------------------------------------------------------------------------------------------

/// uid_map inside, as its three numbers.
fn uid_map_line(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

#[test]
fn setuid_file_made_by_jail_root_is_not_setuid_root_on_the_host() {
    need_root!("setuid_file_made_by_jail_root_is_not_setuid_root_on_the_host");
    // No [enter].namespaces, no allow_host_root: the defaults.
    let jail = Jail::new(&jailfile("user = \"root\"", MOUNTS));
    let run = jail
        .bash("cp /usr/bin/bash /tmp/x && chmod 4755 /tmp/x && cat /proc/self/uid_map && grep ' /tmp ' /proc/self/mountinfo")
        .code(0, "jail root makes a setuid copy of bash");
    let copy = fs::symlink_metadata(jail.root.join("tmp/x")).expect("the copy is on the host's disk");
    use std::os::unix::fs::MetadataExt;
    assert_ne!(copy.uid(), 0, "a setuid-root shell was left on the host: {copy:?}");
    assert_eq!(copy.uid(), 0x6000_0000, "owned by jail root's unprivileged host id");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(uid_map_line(lines[0]), ["0", "1610612736", "65536"], "{}", run.describe());
    assert!(lines[1].contains("nosuid"), "the writable place is nosuid: {}", run.describe());
}

#[test]
fn the_jail_root_is_read_only_and_only_writable_places_take_writes() {
    need_root!("the_jail_root_is_read_only_and_only_writable_places_take_writes");
    for enter in ["user = \"root\"", "user = \"root\"\nallow_host_root = true", "user = \"jailer\""] {
        let jail = Jail::new(&jailfile(enter, MOUNTS));
        let run = jail.bash("touch /new-file; echo changed > /etc/passwd; touch /tmp/ok && echo TMP-OK");
        assert_eq!(run.code, 0, "{enter}: {}", run.describe());
        assert!(
            run.stderr.contains("touch: cannot touch '/new-file': Read-only file system"),
            "{enter}: {}",
            run.describe()
        );
        assert!(run.stderr.contains("/etc/passwd: Read-only file system"), "{enter}: {}", run.describe());
        assert!(run.stdout.contains("TMP-OK"), "a writable = true dir takes writes: {}", run.describe());
        assert!(jail.root.join("tmp/ok").exists());
        assert!(!jail.root.join("new-file").exists());
        assert!(fs::read_to_string(jail.root.join("etc/passwd")).expect("passwd").contains("jailer"));
    }
    // The user's home is writable for the user.
    let jail = Jail::new(&jailfile("user = \"jailer\"", ""));
    jail.bash("echo mine > /home/jailer/notes && cat /home/jailer/notes").code(0, "write the home");
    assert_eq!(fs::read_to_string(jail.root.join("home/jailer/notes")).expect("notes"), "mine\n");
}

#[test]
fn declared_devices_work_on_the_nodev_root() {
    need_root!("declared_devices_work_on_the_nodev_root");
    for enter in ["user = \"jailer\"", "user = \"root\""] {
        let jail = Jail::new(&jailfile(enter, MOUNTS));
        let run = jail
            .bash("echo gone > /dev/null && head -c 32 /dev/urandom | wc -c && grep ' / ' /proc/self/mountinfo")
            .code(0, "write /dev/null, read /dev/urandom");
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(lines[0], "32", "{enter}: {}", run.describe());
        let root_options = lines[1].split_whitespace().nth(5).unwrap_or_default();
        assert!(
            ["ro", "nosuid", "nodev"].iter().all(|flag| root_options.split(',').any(|option| option == *flag)),
            "{enter}: the root is ro,nosuid,nodev: {}",
            run.describe()
        );
    }
}

#[test]
fn proc_sys_kcore_and_sys_firmware_are_out_of_reach_even_of_real_host_root() {
    need_root!("proc_sys_kcore_and_sys_firmware_are_out_of_reach_even_of_real_host_root");
    // Masked files of Docker's list this kernel has (kcore needs CONFIG_PROC_KCORE).
    let masked: Vec<&str> =
        ["/proc/kcore", "/proc/keys", "/proc/timer_list"].into_iter().filter(|path| Path::new(path).exists()).collect();
    assert!(!masked.is_empty(), "no masked /proc file exists here to test");
    assert!(fs::read_dir("/sys/firmware").is_ok_and(|mut entries| entries.next().is_some()), "the host's is not empty");
    let reads: Vec<String> = masked
        .iter()
        .map(|path| format!("if cat {path} > /dev/null; then echo \"{path} $(wc -c < {path}) bytes\"; fi; "))
        .collect();
    for enter in ["user = \"root\"\nallow_host_root = true", "user = \"root\""] {
        let jail = Jail::new(&jailfile(enter, MOUNTS));
        // Writes back the value it read: were the write let through, the host would not change.
        let run = jail.bash(&format!(
            "pattern=$(cat /proc/sys/kernel/core_pattern); \
             printf '%s\\n' \"$pattern\" > /proc/sys/kernel/core_pattern && echo CORE-PATTERN-WRITTEN; \
             {} echo \"firmware $(ls -A /sys/firmware | wc -l) entries\"",
            reads.concat()
        ));
        assert!(!run.stdout.contains("CORE-PATTERN-WRITTEN"), "{enter}: {}", run.describe());
        assert!(
            run.stderr.contains("core_pattern: Read-only file system")
                || run.stderr.contains("core_pattern: Permission denied"),
            "{enter}: {}",
            run.describe()
        );
        for path in &masked {
            assert!(run.stdout.contains(&format!("{path} 0 bytes")), "{enter}: {path} reads empty: {}", run.describe());
        }
        assert!(run.stdout.contains("firmware 0 entries"), "{enter}: /sys/firmware is empty: {}", run.describe());
    }
}

#[test]
fn allow_host_root_warns_on_every_run_and_creates_no_user_namespace() {
    need_root!("allow_host_root_warns_on_every_run_and_creates_no_user_namespace");
    let jail = Jail::new(&jailfile("user = \"root\"\nallow_host_root = true", MOUNTS));
    for _ in 0..2 {
        let run = jail.enter(&["/usr/bin/cat", "/proc/self/uid_map"]).code(0, "uid_map");
        assert_eq!(uid_map_line(&run.stdout), ["0", "0", "4294967295"], "the host's own map: {}", run.describe());
        assert!(
            run.stderr.contains("jailprov enter: warning: the command runs as real host root"),
            "{}",
            run.describe()
        );
    }
    let default = Jail::new(&jailfile("user = \"root\"", MOUNTS));
    let run = default.enter(&["/usr/bin/cat", "/proc/self/uid_map"]).code(0, "uid_map");
    assert_eq!(uid_map_line(&run.stdout), ["0", "1610612736", "65536"], "{}", run.describe());
    assert!(!run.stderr.contains("warning"), "{}", run.describe());
}

// ---------------------------------------------------------------------------------------------
// Exit codes and signals
// ---------------------------------------------------------------------------------------------

#[test]
fn the_exit_code_is_the_command_s_and_128_plus_the_signal_that_ended_it() {
    need_root!("the_exit_code_is_the_command_s_and_128_plus_the_signal_that_ended_it");
    let jail = Jail::new(&jailfile("user = \"jailer\"", ""));
    jail.bash("exit 7").code(7, "exit 7");
    jail.bash("kill -KILL $$").code(137, "SIGKILL");
    jail.enter(&["/usr/bin/true-is-not-there"]).code(127, "not found");
    let run = jail.enter(&["/etc/passwd"]).code(126, "not executable");
    assert!(run.stderr.contains("jailprov enter: cannot run /etc/passwd"), "{}", run.describe());
}

/// Starts `script` in the jail, waits for it to print "ready", sends SIGTERM to jailprov.
fn terminate_when_ready(jail: &Jail, script: &str) -> Run {
    let mut child = jail
        .enter_command(&["/usr/bin/bash", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("jailprov starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(first, "ready");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid fits i32"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal jailprov");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            return Run { code: status.code().unwrap_or(-1), stdout: String::new(), stderr };
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("jailprov did not end after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_sent_to_jailprov_reaches_the_command() {
    need_root!("sigterm_sent_to_jailprov_reaches_the_command");
    let jail = Jail::new(&jailfile("user = \"jailer\"", ""));
    // A command that handles SIGTERM decides the exit code...
    terminate_when_ready(&jail, "trap 'exit 42' TERM; echo ready; sleep 100 & wait").code(42, "trapped");
    // ...one that does not dies of it: 128 + 15.
    terminate_when_ready(&jail, "echo ready; exec sleep 100").code(143, "untrapped");
}

// ---------------------------------------------------------------------------------------------
// Refusals, limits, rootless
// ---------------------------------------------------------------------------------------------

#[test]
fn a_jail_never_applied_is_refused_with_the_command_to_run() {
    need_root!("a_jail_never_applied_is_refused_with_the_command_to_run");
    let jail = Jail::new(&jailfile("user = \"jailer\"", ""));
    let refused = |root: &Path, when: &str| {
        let run = jail.run_at("enter", root, &["--", "/usr/bin/true"]).code(1, when);
        assert!(run.stderr.contains("run `jailprov apply` first"), "{when}: {}", run.describe());
    };
    let elsewhere = jail.dir.join("never-applied");
    refused(&elsewhere, "a root that does not exist");
    // A directory with files in it, but no record of an apply.
    fs::create_dir(&elsewhere).expect("mkdir");
    fs::write(elsewhere.join("something"), "x").expect("write");
    refused(&elsewhere, "a root never applied");
    // Destroyed, with a foreign file keeping the root: the record is gone, so is the jail.
    fs::write(jail.root.join("foreign"), "mine\n").expect("a foreign file");
    jail.run("destroy", &["--yes"]).ok("destroy");
    assert!(jail.root.join("foreign").exists(), "destroy keeps what it did not create");
    refused(&jail.root, "a destroyed jail");
}

#[test]
fn limits_without_cgroup_v2_fall_back_to_rlimits_and_say_so() {
    need_root!("limits_without_cgroup_v2_fall_back_to_rlimits_and_say_so");
    let enter = "user = \"jailer\"\nlimits = { memory = \"512M\", nofile = 64 }";
    let jail = Jail::new(&jailfile(enter, ""));
    let run = jail.bash("ulimit -n; ulimit -v").code(0, "ulimit");
    assert!(run.stdout.starts_with("64\n"), "{}", run.describe());
    let pure_v2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        && fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").is_ok_and(|text| text.contains("memory"));
    if pure_v2 {
        let cgroup = jail.bash("cat /proc/self/cgroup").code(0, "cgroup");
        assert!(!run.stderr.contains("RLIMIT_AS"), "{}", run.describe());
        assert!(cgroup.stdout.contains("jailprov-enter-"), "{}", cgroup.describe());
    } else {
        assert!(run.stderr.contains("memory falls back to RLIMIT_AS=536870912"), "{}", run.describe());
        // One warning that says what is missing on this host, never blaming root for root.
        assert_eq!(run.stderr.matches("[enter].limits").count(), 1, "{}", run.describe());
        assert!(!run.stderr.contains("without root") && !run.stderr.contains("not root"), "{}", run.describe());
        assert!(run.stdout.ends_with(&format!("{}\n", 512 * 1024)), "ulimit -v is in KiB: {}", run.describe());
    }
}

#[test]
fn an_unprivileged_user_enters_the_same_jail_through_a_user_namespace() {
    need_root!("an_unprivileged_user_enters_the_same_jail_through_a_user_namespace");
    // The home belongs to uid 1000 of the host, which is not the caller: start in "/".
    let enter = "user = \"jailer\"\nhostname = \"jailbox\"\nworkdir = \"/\"";
    let mounts =
        "[[mounts]]\nkind = \"proc\"\ntarget = \"/proc\"\n\n[[mounts]]\nkind = \"tmpfs\"\ntarget = \"/scratch\"\n";
    let jail = Jail::new(&jailfile(enter, mounts));
    // nobody must reach the Jailfile and the jail: the tempdir becomes traversable.
    fs::set_permissions(&jail.dir, fs::Permissions::from_mode(0o755)).expect("chmod the tempdir");
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN, "enter", "-f"])
        .arg(&jail.jailfile)
        .arg("--root")
        .arg(&jail.root)
        .arg("--state-dir")
        .arg(&jail.state)
        .args([
            "--",
            "/usr/bin/bash",
            "-c",
            "id -u; cat /proc/self/uid_map; cat /proc/sys/kernel/hostname; cat /proc/self/status",
        ])
        .current_dir(&jail.dir)
        .stdin(Stdio::null());
    let run = output(command);
    if run.stderr.contains("user namespaces are disabled") {
        eprintln!("SKIPPED an_unprivileged_user_enters_the_same_jail_through_a_user_namespace: {}", run.stderr.trim());
        return;
    }
    assert_eq!(run.code, 0, "{}", run.describe());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "1000", "the jail user, mapped to nobody outside: {}", run.describe());
    assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["1000", "65534", "1"], "{}", run.describe());
    assert_eq!(lines[2], "jailbox");
    assert!(run.stdout.lines().any(|line| line == "CapEff:\t0000000000000000"), "{}", run.describe());
    assert!(run.stdout.lines().any(|line| line == "NoNewPrivs:\t1"), "{}", run.describe());
}

#[test]
fn the_jail_dies_with_jailprov() {
    need_root!("the_jail_dies_with_jailprov");
    let jail = Jail::new(&jailfile("user = \"jailer\"", ""));
    // A duration no other process on this host is sleeping for, to find it in /proc.
    let tag = format!("{}.{}", 4000 + std::process::id() % 1000, std::process::id());
    let mut child = jail
        .enter_command(&["/usr/bin/bash", "-c", &format!("echo ready; /usr/bin/sleep {tag}")])
        .stdout(Stdio::piped())
        .spawn()
        .expect("jailprov starts");
    let stdout = child.stdout.take().expect("piped stdout");
    assert_eq!(BufReader::new(stdout).lines().next().and_then(Result::ok).unwrap_or_default(), "ready");
    let sleeping = || {
        fs::read_dir("/proc").expect("/proc").filter_map(Result::ok).any(|entry| {
            fs::read(entry.path().join("cmdline")).is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&tag))
        })
    };
    let started = Instant::now();
    while !sleeping() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(sleeping(), "the command runs");
    child.kill().expect("SIGKILL jailprov");
    let _ = child.wait();
    let started = Instant::now();
    while sleeping() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!sleeping(), "the command outlived jailprov");
}

#[test]
fn root_asking_for_a_user_namespace_is_nobody_on_the_host() {
    need_root!("root_asking_for_a_user_namespace_is_nobody_on_the_host");
    let enter = "user = \"root\"\nnamespaces = [\"user\", \"mount\", \"pid\", \"net\", \"uts\", \"ipc\"]";
    let jail = Jail::new(&jailfile(enter, "[[mounts]]\nkind = \"proc\"\ntarget = \"/proc\"\n"));
    let run = jail.bash("id -u; cat /proc/self/uid_map; ls -ln /usr/bin/bash").code(0, "enter with a user namespace");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["0", "1610612736", "65536"], "{}", run.describe());
    // Host root's files are nobody's inside: jail root cannot write them.
    assert!(lines[2].contains(" 65534 65534 "), "{}", run.describe());
}
