//! `jailprov enter` against a hostile inhabitant of the jail: the process it runs must not reach
//! the caller's terminal, another process's id maps, the jail's PID 1, or the kernel interfaces
//! Docker's default seccomp profile closes.
//!
//! Each test applies its own jail in a fresh tempdir and runs the real binary for every `enter`;
//! the attacks are small static C programs built with gcc (skipped, loudly, without gcc or libc.a).
#![allow(clippy::disallowed_methods)] // tests build fixtures and jails with plain fs calls

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

#[macro_use]
mod cli;
use cli::{output, Workspace, UNUSED_ROOT};

/// A jail with bash and a few tools, /proc mounted, `files` (static test programs) installed and
/// `enter` as its `[enter]` table.
fn jailfile(enter: &str, files: &str) -> String {
    format!(
        r#"root = "{UNUSED_ROOT}"
binaries = ["bash", "cat", "id", "ls", "readlink", "sleep", "stty"]
exclude = ["/usr/share/doc/**", "/usr/share/man/**"]
devices = ["/dev/null", "/dev/zero"]

[[dirs]]
path = "/tmp"
mode = "1777"

[[dirs]]
path = "/proc"

[[mounts]]
kind = "proc"
target = "/proc"

[[groups]]
name = "jailer"
gid = 1000

[[users]]
name = "jailer"
uid = 1000
gid = 1000
home = "/home/jailer"
shell = "/usr/bin/bash"

{files}

[enter]
{enter}
"#
    )
}

/// A fresh applied jail in its own workspace, made traversable (jail root may be an
/// unprivileged host id), with the build directory of its test programs.
struct Jail {
    workspace: Workspace,
}

impl std::ops::Deref for Jail {
    type Target = Workspace;

    fn deref(&self) -> &Workspace {
        &self.workspace
    }
}

impl Jail {
    fn new(text: &str) -> Jail {
        let workspace = Workspace::new("jailprov-hardening-");
        fs::set_permissions(&workspace.dir, fs::Permissions::from_mode(0o755)).expect("chmod the tempdir");
        workspace.write_jailfile(text);
        workspace.apply();
        Jail { workspace }
    }
}

/// The `[[files]]` entry installing `binary` as /usr/bin/NAME.
fn installed(binary: &Path, name: &str) -> String {
    format!("[[files]]\nsrc = \"{}\"\ndest = \"/usr/bin/{name}\"\nmode = \"0755\"\n", binary.display())
}

// ---------------------------------------------------------------------------------------------
// Another process's id maps
// ---------------------------------------------------------------------------------------------

/// Under `unshare --pid --fork` without a /proc of its own, jailprov's child has one pid number
/// for jailprov and another in /proc: writing "/proc/<number jailprov sees>/uid_map" wrote
/// another process's map (or failed on it). jailprov finds the child through its pidfd.
#[test]
fn enter_works_under_unshare_pid_fork() {
    need_root!("enter_works_under_unshare_pid_fork");
    let enter = "user = \"root\"\nnamespaces = [\"mount\", \"pid\", \"net\", \"uts\", \"ipc\", \"user\"]";
    let jail = Jail::new(&jailfile(enter, ""));
    let mut command = Command::new("unshare");
    command.args(["--pid", "--fork"]).arg(cli::BIN).args(jail.enter_command(&[]).get_args());
    command.args(["/usr/bin/bash", "-c", "id -u; cat /proc/self/uid_map"]).current_dir(&jail.dir);
    command.stdin(std::process::Stdio::null());
    let run = output(command).code(0, "enter under unshare --pid --fork");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.first().copied(), Some("0"), "{}", run.describe());
    let map: Vec<&str> = lines.get(1).map(|line| line.split_whitespace().collect()).unwrap_or_default();
    assert_eq!(map, ["0", "1610612736", "65536"], "the unprivileged mapping: {}", run.describe());
}

/// A /proc of another PID namespace (here a child namespace's, mounted in jailprov's mount
/// namespace): the child's number there, if any, is not jailprov's to guess. jailprov refuses,
/// saying what to mount, and writes no map.
#[test]
fn enter_refuses_a_proc_of_another_pid_namespace() {
    need_root!("enter_refuses_a_proc_of_another_pid_namespace");
    let enter = "user = \"root\"\nnamespaces = [\"mount\", \"pid\", \"user\"]";
    let jail = Jail::new(&jailfile(enter, ""));
    let jailprov: Vec<String> = std::iter::once(cli::BIN.to_owned())
        .chain(
            jail.enter_command(&["/usr/bin/cat", "/proc/self/uid_map"])
                .get_args()
                .map(|arg| format!("'{}'", arg.to_string_lossy())),
        )
        .collect();
    // A private mount namespace where a process of a new PID namespace mounts its own /proc.
    let script = format!(
        "unshare --pid --fork sh -c 'mount -t proc proc /proc; sleep 3' & \
         while [ -e /proc/self/fdinfo ]; do sleep 0.05; done; {}; echo \"exit $?\"; wait",
        jailprov.join(" ")
    );
    let mut command = Command::new("unshare");
    command.args(["--mount", "--propagation", "private", "sh", "-c", &script]).current_dir(&jail.dir);
    command.stdin(std::process::Stdio::null());
    let run = output(command);
    assert!(run.stdout.contains("exit 125"), "{}", run.describe());
    assert!(run.stderr.contains("mount a /proc of jailprov's own PID namespace"), "{}", run.describe());
}

// ---------------------------------------------------------------------------------------------
// Seccomp
// ---------------------------------------------------------------------------------------------

/// Calls each system call Docker's default profile refuses, with harmless arguments, and prints
/// `name errno` for each (0: it was not refused).
const DOCKER_DENIALS_C: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <sys/personality.h>
#include <sys/syscall.h>
#include <unistd.h>
static void report(const char *name, long result) {
    printf("%s %d\n", name, result < 0 ? errno : 0);
}
int main(void) {
    char buffer[8] = {0};
    report("perf_event_open", syscall(SYS_perf_event_open, buffer, 0, -1, -1, 0));
    report("userfaultfd", syscall(SYS_userfaultfd, 0));
    report("io_uring_setup", syscall(SYS_io_uring_setup, 1, buffer));
    report("keyctl", syscall(SYS_keyctl, 0, 0, 0, 0, 0));
    report("bpf", syscall(SYS_bpf, 0, buffer, 0));
    report("process_vm_readv", syscall(SYS_process_vm_readv, getpid(), NULL, 0, NULL, 0, 0));
    report("kcmp", syscall(SYS_kcmp, getpid(), getpid(), 0, 0, 0));
    report("personality(0x0400000)", personality(0x0400000));
    /* The query Docker allows: answers the current persona. */
    report("personality(0xffffffff)", personality(0xffffffff));
    return 0;
}
"#;

#[test]
fn seccomp_denies_what_dockers_default_denies_in_the_jail() {
    need_root!("seccomp_denies_what_dockers_default_denies_in_the_jail");
    let build = tempfile::tempdir().expect("tempdir");
    let program = cli::build_static(build.path(), "denials", DOCKER_DENIALS_C);
    // Root in the jail: the filter, not a missing capability, is what must refuse.
    let jail = Jail::new(&jailfile("user = \"root\"", &installed(&program, "denials")));
    let run = jail.enter(&["/usr/bin/denials"]).code(0, "the denials program");
    let errnos: Vec<(&str, i32)> = run
        .stdout
        .lines()
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(name, errno)| (name, errno.parse().unwrap_or(-1)))
        .collect();
    assert_eq!(errnos.len(), 9, "{}", run.describe());
    for (name, errno) in &errnos {
        let expected = if *name == "personality(0xffffffff)" { 0 } else { nix::libc::EPERM };
        assert_eq!(*errno, expected, "{name}: {}", run.describe());
    }
}

// ---------------------------------------------------------------------------------------------
// The jail's PID 1
// ---------------------------------------------------------------------------------------------

/// Attacks PID 1 from inside: prints its capability lines, then whether ptrace can attach to it
/// and whether its memory opens (`name errno`, 0: the attack worked).
const ATTACK_INIT_C: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <unistd.h>
int main(void) {
    char line[256];
    FILE *status = fopen("/proc/1/status", "r");
    if (!status) { perror("/proc/1/status"); return 2; }
    while (fgets(line, sizeof line, status))
        if (!strncmp(line, "CapEff:", 7) || !strncmp(line, "CapPrm:", 7) || !strncmp(line, "CapBnd:", 7)
            || !strncmp(line, "CapInh:", 7) || !strncmp(line, "CapAmb:", 7))
            fputs(line, stdout);
    fclose(status);
    long attached = ptrace(PTRACE_SEIZE, 1, 0, 0);
    printf("ptrace %d\n", attached < 0 ? errno : 0);
    int memory = open("/proc/1/mem", O_RDWR);
    printf("mem %d\n", memory < 0 ? errno : 0);
    return 0;
}
"#;

/// The jail's PID 1 outlives the setup and sits beside the command: with its capabilities (or
/// dumpable, as root of the same uid) it was a way to the host for whoever could ptrace it.
#[test]
fn the_jail_s_pid_1_keeps_no_capability_and_cannot_be_ptraced() {
    need_root!("the_jail_s_pid_1_keeps_no_capability_and_cannot_be_ptraced");
    let build = tempfile::tempdir().expect("tempdir");
    let program = cli::build_static(build.path(), "attack-init", ATTACK_INIT_C);
    // Root in the jail, the same uid as PID 1, and no seccomp: only PID 1's own state defends it.
    let jail = Jail::new(&jailfile("user = \"root\"\nseccomp = false", &installed(&program, "attack-init")));
    let run = jail.enter(&["/usr/bin/attack-init"]).code(0, "the attack on PID 1");
    for set in ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"] {
        assert!(run.stdout.contains(&format!("{set}:\t0000000000000000\n")), "{set} of PID 1: {}", run.describe());
    }
    assert!(run.stdout.contains(&format!("ptrace {}\n", nix::libc::EPERM)), "ptrace PID 1: {}", run.describe());
    assert!(run.stdout.contains(&format!("mem {}\n", nix::libc::EACCES)), "open /proc/1/mem: {}", run.describe());
    // A jail user of another uid: PID 1 takes that uid, so without CAP_KILL it still passes on
    // the signals it gets (here one the command sends it).
    let jail = Jail::new(&jailfile("user = \"jailer\"", ""));
    let script = "ls -ln /proc/1/status; trap 'echo forwarded; exit 0' TERM; kill -TERM 1; \
                  for i in 1 2 3 4 5 6 7 8 9 10; do sleep 0.2; done; echo lost";
    let run = jail.enter(&["/usr/bin/bash", "-c", script]).code(0, "PID 1 of a jailer jail");
    assert!(run.stdout.contains(" 0 0 "), "non-dumpable: PID 1's /proc files are root's: {}", run.describe());
    assert!(run.stdout.contains("forwarded\n"), "PID 1 passed SIGTERM on: {}", run.describe());
}

// ---------------------------------------------------------------------------------------------
// The caller's terminal
// ---------------------------------------------------------------------------------------------

/// Types "x" into its terminal with TIOCSTI, then prints what session and terminal it has:
/// `tiocsti ERRNO`, `session SID PID`, `tty MAJOR:MINOR` (of /proc/self/stat's tty_nr, 0:0 for
/// none); exits 3.
const TERMINAL_PROBE_C: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
int main(void) {
    char byte = 'x';
    int typed = ioctl(0, TIOCSTI, &byte);
    printf("tiocsti %d\n", typed < 0 ? errno : 0);
    printf("session %d %d\n", (int)getsid(0), (int)getpid());
    char stat[1024] = {0};
    FILE *file = fopen("/proc/self/stat", "r");
    if (!file || !fgets(stat, sizeof stat, file)) { perror("/proc/self/stat"); return 2; }
    int tty = 0;
    char *after = strrchr(stat, ')');
    if (!after || sscanf(after + 2, "%*c %*d %*d %*d %d", &tty) != 1) { puts("no tty_nr"); return 2; }
    printf("tty %u:%u\n", (tty >> 8) & 0xfff, (tty & 0xff) | ((tty >> 12) & 0xfff00));
    fflush(stdout);
    return 3;
}
"#;

/// Reads whatever is waiting on `fd` now, without blocking.
fn read_available(fd: &std::os::fd::OwnedFd) -> String {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).expect("O_NONBLOCK");
    let mut text = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(count) = nix::unistd::read(fd, &mut buffer) {
        if count == 0 {
            break;
        }
        text.extend_from_slice(&buffer[..count]);
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// A command in the jail sharing the caller's terminal types into it with TIOCSTI: the bytes
/// run in the caller's shell once jailprov exits (seccomp off here: the defence is the jail's
/// own pty and session, whatever the filter says).
#[test]
fn a_command_in_the_jail_cannot_type_into_the_caller_s_terminal() {
    need_root!("a_command_in_the_jail_cannot_type_into_the_caller_s_terminal");
    let build = tempfile::tempdir().expect("tempdir");
    let program = cli::build_static(build.path(), "probe", TERMINAL_PROBE_C);
    let jail = Jail::new(&jailfile("user = \"jailer\"\nseccomp = false", &installed(&program, "probe")));
    // The caller's terminal: a pty whose slave is jailprov's stdin, stdout and controlling terminal.
    let (child, caller, before) = enter_on_a_terminal(&jail, &["/usr/bin/probe"], 24, 80);
    let caller_tty = nix::sys::stat::fstat(&caller.slave).expect("fstat the slave").st_rdev;
    let caller_tty = format!("{}:{}", nix::libc::major(caller_tty), nix::libc::minor(caller_tty));
    let finished = child.wait_with_output().expect("jailprov runs");
    let shown = read_available(&caller.master).replace('\r', "");
    let describe = format!("{shown}\n--- stderr:\n{}", String::from_utf8_lossy(&finished.stderr));
    assert_eq!(finished.status.code(), Some(3), "the command's exit code: {describe}");
    // jailprov put the caller's terminal in raw mode while it relayed, and gave it back.
    let after = nix::sys::termios::tcgetattr(&caller.slave).expect("tcgetattr");
    assert_eq!((after.local_flags, after.input_flags), (before.local_flags, before.input_flags), "{describe}");
    // What the caller's shell would read next: nothing the jail typed. (Non-canonical first: a
    // canonical terminal holds back a line without its newline.)
    let mut settings = nix::sys::termios::tcgetattr(&caller.slave).expect("tcgetattr");
    nix::sys::termios::cfmakeraw(&mut settings);
    nix::sys::termios::tcsetattr(&caller.slave, nix::sys::termios::SetArg::TCSANOW, &settings).expect("tcsetattr");
    let typed = read_available(&caller.slave);
    assert!(!typed.contains('x'), "the jail typed {typed:?} into the caller's terminal: {describe}");
    let line = |key: &str| shown.lines().find_map(|line| line.strip_prefix(key)).map(str::to_owned).unwrap_or_default();
    // The command leads a session of its own (inside the caller's session is not even visible).
    let session_line = line("session ");
    let session: Vec<&str> = session_line.split(' ').collect();
    assert!(session.len() == 2 && session[0] == session[1] && session[0] != "0", "{describe}");
    // Its controlling terminal is a terminal, and not the caller's.
    let tty = line("tty ");
    assert!(!tty.is_empty() && tty != "0:0" && tty != caller_tty, "tty {tty} vs the caller's {caller_tty}: {describe}");
}

#[test]
fn without_a_terminal_pipes_and_exit_codes_pass_through() {
    need_root!("without_a_terminal_pipes_and_exit_codes_pass_through");
    let jail = Jail::new(&jailfile("user = \"jailer\"", ""));
    let mut command = jail.enter_command(&["/usr/bin/bash", "-c", "read line; echo \"got $line\"; exit 7"]);
    command.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let mut child = command.spawn().expect("jailprov runs");
    use std::io::Write;
    child.stdin.take().expect("piped stdin").write_all(b"hello\n").expect("write stdin");
    let finished = child.wait_with_output().expect("jailprov ends");
    assert_eq!(String::from_utf8_lossy(&finished.stdout), "got hello\n");
    assert_eq!(finished.status.code(), Some(7));
}

/// jailprov `enter -- ARGS` on a fresh caller terminal (a pty of `rows` x `columns` whose slave
/// is its stdin, stdout and controlling terminal); returns the running jailprov, the pty and
/// the pty's settings before jailprov started.
fn enter_on_a_terminal(
    jail: &Jail,
    args: &[&str],
    rows: u16,
    columns: u16,
) -> (std::process::Child, nix::pty::OpenptyResult, nix::sys::termios::Termios) {
    use std::os::unix::process::CommandExt;
    let size = nix::pty::Winsize { ws_row: rows, ws_col: columns, ws_xpixel: 0, ws_ypixel: 0 };
    let caller = nix::pty::openpty(Some(&size), None).expect("openpty");
    let mut command = jail.enter_command(args);
    command
        .stdin(caller.slave.try_clone().expect("dup the slave"))
        .stdout(caller.slave.try_clone().expect("dup the slave"))
        .stderr(std::process::Stdio::piped());
    // SAFETY: setsid and ioctl are async-signal-safe; this runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()?;
            if nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let before = nix::sys::termios::tcgetattr(&caller.slave).expect("tcgetattr");
    (command.spawn().expect("jailprov runs"), caller, before)
}

/// The jail's pty has the caller's window size, and a signal that ends the command (sent to
/// jailprov, passed on) still gives the caller back a terminal in its own settings.
#[test]
fn the_jail_s_pty_has_the_caller_s_size_and_a_signal_leaves_the_terminal_as_it_was() {
    need_root!("the_jail_s_pty_has_the_caller_s_size_and_a_signal_leaves_the_terminal_as_it_was");
    let jail = Jail::new(&jailfile("user = \"jailer\"", ""));
    let (child, caller, _) = enter_on_a_terminal(&jail, &["/usr/bin/stty", "size"], 33, 101);
    let finished = child.wait_with_output().expect("jailprov ends");
    let shown = read_available(&caller.master);
    assert_eq!(finished.status.code(), Some(0), "{shown} {}", String::from_utf8_lossy(&finished.stderr));
    assert!(shown.contains("33 101"), "the jail's pty size: {shown:?}");

    let (mut child, caller, before) =
        enter_on_a_terminal(&jail, &["/usr/bin/bash", "-c", "echo ready; exec /usr/bin/sleep 30"], 24, 80);
    let started = std::time::Instant::now();
    let mut shown = String::new();
    while !shown.contains("ready") && started.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        shown.push_str(&read_available(&caller.master));
    }
    assert!(shown.contains("ready"), "{shown:?}");
    let raw = nix::sys::termios::tcgetattr(&caller.slave).expect("tcgetattr");
    assert!(!raw.local_flags.contains(nix::sys::termios::LocalFlags::ICANON), "raw while relaying");
    let jailprov = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(jailprov, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM jailprov");
    let status = child.wait().expect("jailprov ends");
    assert_eq!(status.code(), Some(128 + 15), "the command ended by the SIGTERM passed on");
    let after = nix::sys::termios::tcgetattr(&caller.slave).expect("tcgetattr");
    assert_eq!((after.local_flags, after.input_flags), (before.local_flags, before.input_flags));
}
