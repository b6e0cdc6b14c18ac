//! How the jail's command ends, and which signals sent to jailprov reach it: shared by the
//! plain supervisor (sys.rs) and the pty relay (terminal.rs).

use nix::sys::signal::Signal;

/// How the command ended, as the supervisor saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
}

impl Ended {
    /// The exit code a shell would report: the code, or 128+N for signal N.
    pub fn code(self) -> i32 {
        match self {
            Ended::Exited(code) => code,
            Ended::Signaled(signal) => 128 + signal,
        }
    }
}

/// Signals the supervisors pass on to the command, whoever sends them (the terminal included:
/// the command runs in a session of its own, out of reach of the caller's terminal).
pub const FORWARDED_SIGNALS: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGCONT,
];
