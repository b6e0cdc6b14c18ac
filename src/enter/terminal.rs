//! The jail's own terminal: a pty pair jailprov relays to the caller's terminal.
//!
//! A jailed process holding the caller's terminal as its controlling terminal could type into
//! it (TIOCSTI: the bytes run in the caller's shell once jailprov exits) or drive the console
//! (TIOCLINUX), whatever the seccomp setting. So when jailprov's stdin is a terminal, as
//! `systemd-run --pty` does, the command gets the slave of a fresh pty as stdin, stdout, stderr
//! and controlling terminal, and jailprov puts the caller's terminal in raw mode and copies
//! bytes both ways. The caller's terminal settings come back on every exit path: each signal
//! that would end jailprov is taken from a signalfd and passed on to the jail instead, stop
//! signals restore the terminal before stopping, and the guard restores it on return, error or
//! panic (only SIGKILL leaves it raw).

use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::libc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::enter::signals::{Ended, FORWARDED_SIGNALS};

/// A pty pair for the jail when jailprov's stdin is a terminal, with the caller's window size.
pub fn open_pair() -> Result<Option<(OwnedFd, OwnedFd)>> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Ok(None);
    }
    let size = window_size(stdin.as_fd());
    let pair = nix::pty::openpty(size.as_ref(), None).context("cannot open a pty for the jail")?;
    for fd in [&pair.master, &pair.slave] {
        // Neither end may reach an exec: the jail gets the slave as stdin/stdout/stderr only.
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
            .context("cannot set FD_CLOEXEC on the jail's pty")?;
    }
    Ok(Some((pair.master, pair.slave)))
}

fn window_size(terminal: BorrowedFd<'_>) -> Option<libc::winsize> {
    // SAFETY: winsize is plain old data; TIOCGWINSZ fills it in.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into `size`, which outlives the call.
    let result = unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (result == 0).then_some(size)
}

/// Gives the jail's pty the caller's window size (the kernel then sends SIGWINCH inside).
fn pass_window_size(caller: BorrowedFd<'_>, master: &OwnedFd) {
    if let Some(size) = window_size(caller) {
        // SAFETY: TIOCSWINSZ reads one winsize, alive for the call. A failure only leaves the
        // previous size.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    }
}

/// The caller's terminal in raw mode while it lives; its settings come back on drop.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter(terminal: BorrowedFd<'_>) -> Result<RawMode> {
        let saved = tcgetattr(terminal).context("cannot read the settings of the terminal on stdin")?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(terminal, SetArg::TCSANOW, &raw).context("cannot put the terminal on stdin in raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}

/// Signals jailprov takes from the signalfd while it relays: every one that would end or stop
/// it (SIGKILL and SIGSTOP aside), SIGCHLD and SIGWINCH.
fn relayed_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in FORWARDED_SIGNALS.iter().chain(ALSO_FORWARDED).chain(STOPS) {
        set.add(*signal);
    }
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGWINCH);
    set
}

/// Signals that would end jailprov with the terminal raw: passed on to the jail like the rest.
const ALSO_FORWARDED: &[Signal] = &[
    Signal::SIGALRM,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGXCPU,
    Signal::SIGXFSZ,
    Signal::SIGPWR,
    Signal::SIGIO,
];

/// Job control: jailprov stops itself, with the caller's terminal restored meanwhile.
const STOPS: &[Signal] = &[Signal::SIGTSTP, Signal::SIGTTIN, Signal::SIGTTOU];

/// Relays between the caller's terminal (stdin, stdout) and the jail's pty `master` until
/// `child` (the jail's PID 1) ends; returns how it ended.
pub fn relay(master: OwnedFd, child: Pid) -> Result<Ended> {
    let stdin = std::io::stdin();
    let caller = stdin.as_fd();
    let mut raw = Some(RawMode::enter(caller)?);
    let signals = relayed_signals();
    signals.thread_block().context("cannot block signals")?;
    let signal_fd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("cannot create a signalfd")?;
    nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))
        .context("cannot make the jail's pty non-blocking")?;
    let mut relay = Relay { master, to_jail: Vec::new(), input_open: true, output_open: true };
    loop {
        let (signals_ready, master_ready, input_ready) = relay.wait(caller, signal_fd.as_fd())?;
        if master_ready {
            relay.pump_output()?;
            relay.flush_input()?;
        }
        if input_ready {
            relay.read_input(caller)?;
        }
        if !signals_ready {
            continue;
        }
        while let Some(info) = signal_fd.read_signal().context("cannot read the signalfd")? {
            let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else { continue };
            match signal {
                Signal::SIGCHLD => {
                    if let Some(ended) = ended(child)? {
                        relay.pump_output()?;
                        drop(raw.take());
                        return Ok(ended);
                    }
                }
                Signal::SIGWINCH => pass_window_size(caller, &relay.master),
                Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU => {
                    drop(raw.take());
                    let _ = kill(Pid::this(), Signal::SIGSTOP);
                    // Continued: raw again, and the size the terminal has now.
                    raw = Some(RawMode::enter(caller)?);
                    pass_window_size(caller, &relay.master);
                }
                other => {
                    let _ = kill(child, other);
                }
            }
        }
    }
}

/// How `child` ended, once it has.
fn ended(child: Pid) -> Result<Option<Ended>> {
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Some(Ended::Exited(code))),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(Some(Ended::Signaled(signal as i32))),
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno).context("cannot wait for the jail"),
        }
    }
}

/// The two directions: the caller's keystrokes to the jail (buffered, the pty may be full), the
/// jail's output to the caller (written as it comes).
struct Relay {
    master: OwnedFd,
    to_jail: Vec<u8>,
    input_open: bool,
    output_open: bool,
}

impl Relay {
    /// Polls what can move; returns (signals, master, caller's input) readiness.
    fn wait(&self, caller: BorrowedFd<'_>, signal_fd: BorrowedFd<'_>) -> Result<(bool, bool, bool)> {
        let mut fds = vec![PollFd::new(signal_fd, PollFlags::POLLIN)];
        let mut master_events = PollFlags::empty();
        if self.output_open {
            master_events |= PollFlags::POLLIN;
        }
        if !self.to_jail.is_empty() {
            master_events |= PollFlags::POLLOUT;
        }
        let master_index = (!master_events.is_empty()).then(|| {
            fds.push(PollFd::new(self.master.as_fd(), master_events));
            fds.len() - 1
        });
        let input_index = (self.input_open && self.to_jail.is_empty()).then(|| {
            fds.push(PollFd::new(caller, PollFlags::POLLIN));
            fds.len() - 1
        });
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => return Err(errno).context("cannot poll the terminals"),
        }
        let ready = |index: Option<usize>| {
            index.and_then(|index| fds[index].revents()).is_some_and(|events| !events.is_empty())
        };
        Ok((ready(Some(0)), ready(master_index), ready(input_index)))
    }

    /// Copies what the jail wrote to stdout, until the pty has nothing more now.
    fn pump_output(&mut self) -> Result<()> {
        let mut buffer = [0u8; 4096];
        let mut stdout = std::io::stdout().lock();
        while self.output_open {
            match nix::unistd::read(&self.master, &mut buffer) {
                Ok(0) | Err(Errno::EIO) => self.output_open = false,
                Ok(count) => stdout.write_all(&buffer[..count]).context("cannot write the jail's output")?,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(errno) => return Err(errno).context("cannot read the jail's pty"),
            }
        }
        stdout.flush().context("cannot write the jail's output")
    }

    /// Reads what the caller typed, to pass on.
    fn read_input(&mut self, caller: BorrowedFd<'_>) -> Result<()> {
        let mut buffer = [0u8; 4096];
        match nix::unistd::read(caller, &mut buffer) {
            // End of input (or a hung-up terminal): the jail keeps running on what it has.
            Ok(0) | Err(Errno::EIO) => self.input_open = false,
            Ok(count) => self.to_jail.extend_from_slice(&buffer[..count]),
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(errno) => return Err(errno).context("cannot read the terminal on stdin"),
        }
        self.flush_input()
    }

    /// Writes what the caller typed into the jail's pty, as much as it takes now.
    fn flush_input(&mut self) -> Result<()> {
        while !self.to_jail.is_empty() {
            match nix::unistd::write(&self.master, &self.to_jail) {
                Ok(count) => drop(self.to_jail.drain(..count)),
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                // Nobody in the jail holds the pty any more.
                Err(Errno::EIO) => self.to_jail.clear(),
                Err(errno) => return Err(errno).context("cannot write to the jail's pty"),
            }
        }
        Ok(())
    }
}
