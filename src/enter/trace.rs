//! The traced mode of `enter` (`jailprov trace`): the jail's PID 1 follows the command with ptrace
//! and reports every path it looked for in vain.
//!
//! Why ptrace from PID 1, and not seccomp user notification: PID 1 is already the command's parent
//! inside the jail, so `PTRACE_TRACEME` (made by the command's process once its own capabilities
//! are gone, before no_new_privs and the seccomp filter, which denies ptrace) links the two
//! without any extra privilege, and every descendant is followed through
//! `PTRACE_O_TRACECLONE/FORK/VFORK`. Only syscall *exits* tell whether a lookup failed; a
//! user-notification filter sees entries only and would have to perform the call on the
//! command's behalf (the very thing a tracer must never do for a jailed process). The enter
//! filter is installed unchanged after `PTRACE_TRACEME`, so it still applies to the command.
//! The kernel records PID 1's credentials of that moment as the tracer's (PID 1 may not have
//! dropped its own yet); they would only let a setuid or file-capability exec keep its privileges
//! under the trace, which no_new_privs refuses anyway, or let PID 1 read a non-dumpable tracee.
//!
//! What the tracer does, and does not: it only *reads*. At each syscall exit of one of the
//! watched x86_64 calls (open, openat, openat2, execve, execveat, stat, lstat, newfstatat, statx,
//! access, faccessat, faccessat2, readlink, readlinkat) that failed with ENOENT or ENOTDIR, it
//! reads the path argument (at most `PATH_MAX` bytes, with process_vm_readv, or PTRACE_PEEKDATA
//! when the kernel refuses that), resolves a relative path against `/proc/PID/cwd` or
//! `/proc/PID/fd/N` of the jail's own /proc (left unresolved when the jail mounts none), and
//! writes one record to a pipe whose other end jailprov reads on the host. PID 1 holds no
//! capability and the jail user's ids; nothing on the host is opened, followed or checked here:
//! jailprov judges the paths itself. 32-bit calls (int 0x80, x32) are not watched: x86_64 only.
//! Under the trace, a stopped process (SIGTSTP, SIGSTOP) is resumed at once: job control inside
//! the jail is not honoured while it is traced.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::IoSliceMut;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{bail, Result};
use nix::errno::Errno;
use nix::libc;
use nix::sys::ptrace;
use nix::sys::signal::{kill, Signal};
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::enter::signals::{Ended, FORWARDED_SIGNALS};

/// The longest path the tracer reads (PATH_MAX, its NUL included).
const MAX_PATH: usize = 4096;
/// Distinct paths reported at most (PID 1 holds them all: at most 40 MiB of paths): past it,
/// one `Truncated` record, and the rest is dropped.
pub const MAX_RECORDS: usize = 10_000;
/// The longest record line jailprov accepts (three fields of at most MAX_PATH, and the rest).
pub const MAX_RECORD_LINE: usize = 3 * MAX_PATH + 64;
/// AUDIT_ARCH_X86_64: syscalls of the 64-bit ABI.
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const PTRACE_SYSCALL_INFO_ENTRY: u8 = 1;
const PTRACE_SYSCALL_INFO_EXIT: u8 = 2;

/// A watched system call: its name, which argument is the path, which the directory fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Watched {
    name: &'static str,
    path: usize,
    dirfd: Option<usize>,
}

/// The x86_64 calls that look a path up, with where their path and dirfd arguments are.
fn watched(number: u64) -> Option<Watched> {
    let (name, path, dirfd) = match number as i64 {
        libc::SYS_open => ("open", 0, None),
        libc::SYS_stat => ("stat", 0, None),
        libc::SYS_lstat => ("lstat", 0, None),
        libc::SYS_access => ("access", 0, None),
        libc::SYS_readlink => ("readlink", 0, None),
        libc::SYS_execve => ("execve", 0, None),
        libc::SYS_openat => ("openat", 1, Some(0)),
        libc::SYS_openat2 => ("openat2", 1, Some(0)),
        libc::SYS_newfstatat => ("newfstatat", 1, Some(0)),
        libc::SYS_statx => ("statx", 1, Some(0)),
        libc::SYS_faccessat => ("faccessat", 1, Some(0)),
        libc::SYS_faccessat2 => ("faccessat2", 1, Some(0)),
        libc::SYS_readlinkat => ("readlinkat", 1, Some(0)),
        libc::SYS_execveat => ("execveat", 1, Some(0)),
        _ => return None,
    };
    Some(Watched { name, path, dirfd })
}

/// One line of the report, as the tracer writes it and jailprov reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `syscall` by `program` failed with `errno` on the absolute jail path `path`.
    Missing { syscall: String, errno: String, program: String, path: String },
    /// A relative path the tracer could not place (the jail has no /proc).
    Unresolved { syscall: String, program: String, path: String },
    /// More distinct paths than [`MAX_RECORDS`]: the rest were not reported.
    Truncated,
}

impl Record {
    /// Fields separated by NUL, one record per line (neither byte can be in a reported path).
    pub fn encode(&self) -> Vec<u8> {
        let fields: Vec<&str> = match self {
            Record::Missing { syscall, errno, program, path } => vec!["M", syscall, errno, program, path],
            Record::Unresolved { syscall, program, path } => vec!["U", syscall, program, path],
            Record::Truncated => vec!["T"],
        };
        let mut line = fields.join("\0").into_bytes();
        line.push(b'\n');
        line
    }

    /// One line (without its newline); `None` for anything malformed.
    pub fn decode(line: &[u8]) -> Option<Record> {
        if line.len() > MAX_RECORD_LINE {
            return None;
        }
        let text = std::str::from_utf8(line).ok()?;
        let fields: Vec<&str> = text.split('\0').collect();
        match fields.as_slice() {
            ["M", syscall, errno, program, path] => Some(Record::Missing {
                syscall: (*syscall).to_owned(),
                errno: (*errno).to_owned(),
                program: (*program).to_owned(),
                path: (*path).to_owned(),
            }),
            ["U", syscall, program, path] => Some(Record::Unresolved {
                syscall: (*syscall).to_owned(),
                program: (*program).to_owned(),
                path: (*path).to_owned(),
            }),
            ["T"] => Some(Record::Truncated),
            _ => None,
        }
    }
}

/// What the jail's PID 1 reported, as jailprov read it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub records: Vec<Record>,
    /// Lines that were no record (too long, not UTF-8, a wrong number of fields): dropped.
    pub malformed: usize,
}

/// jailprov's side: reads the report pipe until PID 1 closes it. Bounded: a line longer than
/// [`MAX_RECORD_LINE`] is dropped, and past [`MAX_RECORDS`] records the rest is read and dropped
/// (the pipe is drained all the same, so that PID 1 never blocks on it).
pub fn read_report(read: OwnedFd) -> Result<Report> {
    use std::io::Read;
    let mut file = std::fs::File::from(read);
    let mut report = Report::default();
    let mut line: Vec<u8> = Vec::new();
    let mut overlong = false;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let count = match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(count) => count,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(anyhow::Error::new(error).context("cannot read the trace's report")),
        };
        for byte in &chunk[..count] {
            if *byte != b'\n' {
                if line.len() < MAX_RECORD_LINE {
                    line.push(*byte);
                } else {
                    overlong = true;
                }
                continue;
            }
            let record = if overlong { None } else { Record::decode(&line) };
            match record {
                Some(record) if report.records.len() <= MAX_RECORDS => report.records.push(record),
                Some(_) => {}
                None => report.malformed += 1,
            }
            line.clear();
            overlong = false;
        }
    }
    Ok(report)
}

/// The watched call a thread is in, noted at its entry (arguments are read there, where they
/// are the caller's; the result comes at the exit).
#[derive(Debug, Clone, Copy)]
struct InCall {
    call: Watched,
    args: [u64; 6],
}

/// The tracer's state: what each traced thread is doing and what was already reported.
struct Tracer<'a> {
    report: &'a OwnedFd,
    command: Pid,
    /// The command stopped after its exec and the options are set: syscalls are followed.
    started: bool,
    /// Threads whose first (attach) stop was seen.
    attached: HashSet<Pid>,
    in_call: HashMap<Pid, InCall>,
    /// The program each thread runs, when the jail has no /proc to ask.
    programs: HashMap<Pid, String>,
    /// The path of an execve in flight, the thread's program once it succeeds.
    exec_paths: HashMap<Pid, String>,
    reported: BTreeSet<String>,
    truncated: bool,
    /// The report pipe broke (jailprov is gone): the command still runs to its end.
    report_broken: bool,
}

/// Follows `command` (which made itself traceable) and all its descendants until it ends,
/// passing on forwarded signals as [`crate::enter::sys::Sys::supervise`] does, and reaping every
/// orphan (this runs as the jail's PID 1).
pub fn supervise(command: Pid, program: &str, report: &OwnedFd) -> Result<Ended> {
    let mut tracer = Tracer {
        report,
        command,
        started: false,
        attached: HashSet::new(),
        in_call: HashMap::new(),
        programs: HashMap::from([(command, program.to_owned())]),
        exec_paths: HashMap::new(),
        reported: BTreeSet::new(),
        truncated: false,
        report_broken: false,
    };
    let mut set = nix::sys::signal::SigSet::empty();
    for signal in FORWARDED_SIGNALS {
        set.add(*signal);
    }
    set.add(Signal::SIGCHLD);
    crate::enter::sys::install_forwarding_handlers()?;
    loop {
        // Stops and ends arrive as SIGCHLD (blocked, so queued even for a PID 1); drain them all.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(status) => {
                    if let Some(ended) = tracer.on_status(status) {
                        return Ok(ended);
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(errno) => bail!("cannot wait for the traced command: {errno}"),
            }
        }
        let signal = match set.wait() {
            Ok(signal) => signal,
            Err(Errno::EINTR) => continue,
            Err(errno) => bail!("cannot wait for signals: {errno}"),
        };
        if signal != Signal::SIGCHLD {
            let _ = kill(command, signal);
        }
    }
}

impl Tracer<'_> {
    /// Handles one wait status; `Some` once the command itself has ended.
    fn on_status(&mut self, status: WaitStatus) -> Option<Ended> {
        match status {
            WaitStatus::Exited(pid, code) => {
                self.forget(pid);
                (pid == self.command).then_some(Ended::Exited(code))
            }
            WaitStatus::Signaled(pid, signal, _) => {
                self.forget(pid);
                (pid == self.command).then_some(Ended::Signaled(signal as i32))
            }
            WaitStatus::PtraceSyscall(pid) => {
                self.on_syscall_stop(pid);
                let _ = ptrace::syscall(pid, None);
                None
            }
            WaitStatus::PtraceEvent(pid, _, event) => {
                self.on_event(pid, event);
                let _ = ptrace::syscall(pid, None);
                None
            }
            WaitStatus::Stopped(pid, signal) => {
                self.on_signal_stop(pid, signal);
                None
            }
            _ => None,
        }
    }

    fn forget(&mut self, pid: Pid) {
        self.attached.remove(&pid);
        self.in_call.remove(&pid);
        self.programs.remove(&pid);
        self.exec_paths.remove(&pid);
    }

    fn on_signal_stop(&mut self, pid: Pid, signal: Signal) {
        if pid == self.command && !self.started {
            if signal == Signal::SIGTRAP {
                // The SIGTRAP of PTRACE_TRACEME after the command's exec: its own code starts
                // now (jailprov's setup before the exec is not the command's and is not followed).
                let options = ptrace::Options::PTRACE_O_TRACESYSGOOD
                    | ptrace::Options::PTRACE_O_TRACECLONE
                    | ptrace::Options::PTRACE_O_TRACEFORK
                    | ptrace::Options::PTRACE_O_TRACEVFORK
                    | ptrace::Options::PTRACE_O_TRACEEXEC
                    | ptrace::Options::PTRACE_O_EXITKILL;
                if ptrace::setoptions(pid, options).is_ok() {
                    self.started = true;
                    self.attached.insert(pid);
                    let _ = ptrace::syscall(pid, None);
                } else {
                    let _ = ptrace::cont(pid, None);
                }
            } else {
                // A signal before the exec: delivered, nothing followed yet.
                let _ = ptrace::cont(pid, signal);
            }
            return;
        }
        if signal == Signal::SIGSTOP && self.attached.insert(pid) {
            // The stop a new traced thread or child starts with: not the program's.
            let _ = ptrace::syscall(pid, None);
            return;
        }
        let stop_signal = matches!(signal, Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU);
        if stop_signal && ptrace::getsiginfo(pid) == Err(Errno::EINVAL) {
            // A group-stop: resumed (job control is not honoured under the trace).
            let _ = ptrace::syscall(pid, None);
        } else {
            let _ = ptrace::syscall(pid, signal);
        }
    }

    fn on_event(&mut self, pid: Pid, event: i32) {
        match event {
            libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE => {
                if let Ok(child) = ptrace::getevent(pid) {
                    let program = self.programs.get(&pid).cloned().unwrap_or_default();
                    self.programs.insert(Pid::from_raw(child as i32), program);
                }
            }
            libc::PTRACE_EVENT_EXEC => {
                if let Some(path) = self.exec_paths.remove(&pid) {
                    self.programs.insert(pid, path);
                }
            }
            _ => {}
        }
    }

    fn on_syscall_stop(&mut self, pid: Pid) {
        let Some(info) = syscall_info(pid) else { return };
        if info.arch != AUDIT_ARCH_X86_64 {
            return;
        }
        match info.op {
            PTRACE_SYSCALL_INFO_ENTRY => {
                // SAFETY: op ENTRY says the kernel filled the `entry` member of the union.
                let entry = unsafe { info.u.entry };
                match watched(entry.nr) {
                    Some(call) => {
                        if matches!(call.name, "execve" | "execveat") {
                            if let Some(path) = self.resolved_path(pid, call, &entry.args) {
                                self.exec_paths.insert(pid, path);
                            }
                        }
                        self.in_call.insert(pid, InCall { call, args: entry.args });
                    }
                    None => {
                        self.in_call.remove(&pid);
                    }
                }
            }
            PTRACE_SYSCALL_INFO_EXIT => {
                // SAFETY: op EXIT says the kernel filled the `exit` member of the union.
                let exit = unsafe { info.u.exit };
                let Some(in_call) = self.in_call.remove(&pid) else { return };
                let errno = match -exit.sval {
                    e if e == i64::from(libc::ENOENT) => "ENOENT",
                    e if e == i64::from(libc::ENOTDIR) => "ENOTDIR",
                    _ => return,
                };
                self.on_missing(pid, in_call, errno);
            }
            _ => {}
        }
    }

    fn on_missing(&mut self, pid: Pid, in_call: InCall, errno: &str) {
        let Some(raw) = read_path(pid, in_call.args[in_call.call.path]) else { return };
        if raw.is_empty() {
            // AT_EMPTY_PATH on a descriptor: no path was looked up.
            return;
        }
        let resolved = absolute(pid, in_call.call, &in_call.args, &raw);
        // An unresolved path is told apart from an absolute one by a leading NUL.
        let key = resolved.clone().unwrap_or_else(|| format!("\0{raw}"));
        if self.reported.contains(&key) {
            return;
        }
        // Bounded: the set (and the report) stop growing at MAX_RECORDS paths.
        if self.reported.len() >= MAX_RECORDS {
            if !self.truncated {
                self.truncated = true;
                self.send(&Record::Truncated);
            }
            return;
        }
        self.reported.insert(key);
        let program = self.program_of(pid);
        let syscall = in_call.call.name.to_owned();
        let record = match resolved {
            Some(path) => Record::Missing { syscall, errno: errno.to_owned(), program, path },
            None => Record::Unresolved { syscall, program, path: raw },
        };
        self.send(&record);
    }

    /// The absolute path an exec asks for (for naming the program it starts).
    fn resolved_path(&self, pid: Pid, call: Watched, args: &[u64; 6]) -> Option<String> {
        let raw = read_path(pid, args[call.path])?;
        absolute(pid, call, args, &raw).or(Some(raw))
    }

    fn program_of(&self, pid: Pid) -> String {
        match std::fs::read_link(format!("/proc/{pid}/exe")) {
            Ok(path) => path.to_string_lossy().into_owned(),
            Err(_) => self.programs.get(&pid).cloned().unwrap_or_else(|| "a process".to_owned()),
        }
    }

    fn send(&mut self, record: &Record) {
        if self.report_broken {
            return;
        }
        let bytes = record.encode();
        let mut written = 0;
        while written < bytes.len() {
            match nix::unistd::write(self.report.as_fd(), &bytes[written..]) {
                Ok(count) => written += count,
                Err(Errno::EINTR) => continue,
                Err(_) => {
                    self.report_broken = true;
                    return;
                }
            }
        }
    }
}

/// PTRACE_GET_SYSCALL_INFO of a thread in a syscall stop. Called directly: the kernel copies
/// at most the size passed as `addr`, which nix's wrapper leaves at 0 (nothing copied).
fn syscall_info(pid: Pid) -> Option<libc::ptrace_syscall_info> {
    // SAFETY: all-zero is a valid value of this plain C struct (an op of 0 means "none").
    let mut info: libc::ptrace_syscall_info = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::ptrace_syscall_info>();
    // SAFETY: the kernel writes at most `size` bytes into `info`, which outlives the call.
    let result = unsafe {
        libc::ptrace(libc::PTRACE_GET_SYSCALL_INFO, pid.as_raw(), size as *mut libc::c_void, &mut info as *mut _)
    };
    (result > 0).then_some(info)
}

/// The path argument at `address` in `pid`, at most [`MAX_PATH`] bytes; `None` when it cannot
/// be read, is not UTF-8, or holds a newline (no such path goes into a Jailfile suggestion).
fn read_path(pid: Pid, address: u64) -> Option<String> {
    let bytes = read_c_string(pid, address)?;
    let text = String::from_utf8(bytes).ok()?;
    (!text.contains('\n')).then_some(text)
}

fn read_c_string(pid: Pid, address: u64) -> Option<Vec<u8>> {
    if address == 0 {
        return None;
    }
    let mut bytes = Vec::new();
    let mut at = address;
    while bytes.len() < MAX_PATH {
        // Up to the end of the page: the next one may not be mapped.
        let page_left = 4096 - (at % 4096) as usize;
        let mut chunk = vec![0u8; page_left.min(MAX_PATH - bytes.len())];
        let read = read_memory(pid, at, &mut chunk)?;
        chunk.truncate(read);
        if let Some(end) = chunk.iter().position(|byte| *byte == 0) {
            bytes.extend_from_slice(&chunk[..end]);
            return Some(bytes);
        }
        bytes.extend_from_slice(&chunk);
        at += read as u64;
    }
    None
}

/// Reads the tracee's memory: process_vm_readv, or word by word with PTRACE_PEEKDATA where the
/// kernel refuses it (a Yama scope of 2, a non-dumpable tracee).
fn read_memory(pid: Pid, address: u64, buffer: &mut [u8]) -> Option<usize> {
    let remote = [RemoteIoVec { base: address as usize, len: buffer.len() }];
    match process_vm_readv(pid, &mut [IoSliceMut::new(buffer)], &remote) {
        Ok(count) if count > 0 => return Some(count),
        _ => {}
    }
    let word = std::mem::size_of::<libc::c_long>();
    let aligned = address - address % word as u64;
    let value = ptrace::read(pid, aligned as ptrace::AddressType).ok()?;
    let bytes = value.to_ne_bytes();
    let skip = (address - aligned) as usize;
    let count = (word - skip).min(buffer.len());
    buffer[..count].copy_from_slice(&bytes[skip..skip + count]);
    Some(count)
}

/// The absolute jail path a call looked up: `raw` itself, or joined to the thread's working
/// directory or the directory of its dirfd, read from the jail's /proc (`None` without one).
fn absolute(pid: Pid, call: Watched, args: &[u64; 6], raw: &str) -> Option<String> {
    if raw.starts_with('/') {
        return Some(raw.to_owned());
    }
    let dirfd = call.dirfd.map_or(libc::AT_FDCWD, |index| args[index] as i32);
    let link = if dirfd == libc::AT_FDCWD { format!("/proc/{pid}/cwd") } else { format!("/proc/{pid}/fd/{dirfd}") };
    let base = std::fs::read_link(link).ok()?;
    let base = base.to_str()?;
    // Anything but a path ("socket:[…]", "/x (deleted)") is no directory to join.
    if !base.starts_with('/') || base.ends_with(" (deleted)") {
        return None;
    }
    Some(format!("{}/{raw}", base.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_the_pipe_and_garbage_is_refused() {
        let records = [
            Record::Missing {
                syscall: "openat".into(),
                errno: "ENOENT".into(),
                program: "/usr/bin/python3.11".into(),
                path: "/usr/lib/python3.11/os.py".into(),
            },
            Record::Unresolved { syscall: "stat".into(), program: "a process".into(), path: "lib/x".into() },
            Record::Truncated,
        ];
        for record in records {
            let line = record.encode();
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(Record::decode(&line[..line.len() - 1]), Some(record));
        }
        assert_eq!(Record::decode(b"M\0openat"), None, "too few fields");
        assert_eq!(Record::decode(b"X\0a\0b\0c\0d"), None, "unknown kind");
        assert_eq!(Record::decode(&[0xff, 0xfe]), None, "not UTF-8");
        assert_eq!(Record::decode(&vec![b'a'; MAX_RECORD_LINE + 1]), None, "too long");
    }

    #[test]
    fn every_watched_call_names_its_path_and_dirfd_arguments() {
        let openat = watched(libc::SYS_openat as u64).expect("openat is watched");
        assert_eq!((openat.path, openat.dirfd), (1, Some(0)));
        let stat = watched(libc::SYS_stat as u64).expect("stat is watched");
        assert_eq!((stat.path, stat.dirfd), (0, None));
        assert!(watched(libc::SYS_read as u64).is_none());
        let names: Vec<&str> = [
            libc::SYS_open,
            libc::SYS_openat,
            libc::SYS_openat2,
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_newfstatat,
            libc::SYS_statx,
            libc::SYS_access,
            libc::SYS_faccessat,
            libc::SYS_faccessat2,
            libc::SYS_readlink,
            libc::SYS_readlinkat,
            libc::SYS_stat,
            libc::SYS_lstat,
        ]
        .iter()
        .filter_map(|number| watched(*number as u64).map(|call| call.name))
        .collect();
        assert_eq!(names.len(), 14, "{names:?}");
    }
}
