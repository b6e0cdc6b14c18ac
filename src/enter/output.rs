//! The jail's stdout and stderr as pipes the jail user owns, relayed by jailprov to its own.
//!
//! A service that logs to `/dev/stdout` reopens it through `/proc/self/fd/1`, and the kernel
//! checks that open against the file's owner: the caller's pipe or file belongs to the caller
//! (host root), never to the jail user's host id, so nginx's `access_log /dev/stdout` fails with
//! EACCES. jailprov gives the jail pipes of its own instead, owned by the command's host ids
//! (fchown of a pipe changes only that pipe), and copies what comes out to the caller's
//! descriptors, as conmon does for podman. A terminal is left alone (the pty relay has it).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// stdout and stderr while the jail runs: which are relayed, and the relays once started.
pub struct OutputRelay {
    /// (descriptor number, the caller's original, the pipe's read end)
    pending: Vec<(i32, OwnedFd, OwnedFd)>,
    relays: Vec<JoinHandle<()>>,
    ended: Arc<AtomicBool>,
    restored: Vec<(i32, OwnedFd)>,
}

impl OutputRelay {
    /// Puts a pipe owned by `uid`/`gid` in place of each of stdout and stderr that is not a
    /// terminal; jailprov keeps the originals. Call before the clone.
    pub fn install(uid: u32, gid: u32) -> Result<OutputRelay> {
        let mut pending = Vec::new();
        for fd in [1, 2] {
            // SAFETY: 1 and 2 stay open for as long as this borrow.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            if nix::unistd::isatty(borrowed).unwrap_or(false)
                || nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD).is_err()
            {
                continue;
            }
            let original = borrowed.try_clone_to_owned().with_context(|| format!("cannot keep descriptor {fd}"))?;
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|errno| anyhow::anyhow!("cannot create the jail's output pipe: {errno}"))?;
            nix::unistd::fchown(&write, Some(uid.into()), Some(gid.into()))
                .map_err(|errno| anyhow::anyhow!("cannot give the jail's output pipe to uid {uid}: {errno}"))?;
            dup2_onto(write.as_fd(), fd)?;
            pending.push((fd, original, read));
        }
        Ok(OutputRelay { pending, relays: Vec::new(), ended: Arc::default(), restored: Vec::new() })
    }

    /// In jailprov right after the clone: its own stdout and stderr back, and one thread per
    /// pipe copying the jail's output to them.
    pub fn start(&mut self) -> Result<()> {
        for (fd, original, read) in self.pending.drain(..) {
            dup2_onto(original.as_fd(), fd)?;
            let ended = Arc::clone(&self.ended);
            let to = original.try_clone().context("cannot keep the caller's output")?;
            self.relays.push(std::thread::spawn(move || copy_until_done(&read, &to, &ended)));
            self.restored.push((fd, original));
        }
        Ok(())
    }

    /// Once the jail has ended: copies what is left and stops.
    pub fn finish(mut self) {
        self.ended.store(true, Ordering::SeqCst);
        for relay in self.relays.drain(..) {
            let _ = relay.join();
        }
    }
}

impl Drop for OutputRelay {
    fn drop(&mut self) {
        // Never started (setup failed before the clone): jailprov's own descriptors back.
        for (fd, original, _) in self.pending.drain(..) {
            let _ = dup2_onto(original.as_fd(), fd);
        }
    }
}

fn dup2_onto(from: BorrowedFd<'_>, to: i32) -> Result<()> {
    // SAFETY: dup2 onto a standard descriptor number this process owns.
    if unsafe { nix::libc::dup2(from.as_raw_fd(), to) } < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("cannot replace descriptor {to}"));
    }
    Ok(())
}

/// Copies `from` to `to` until every writer is gone, or until the jail has ended and nothing
/// more is waiting (a process left outside a PID namespace may keep the pipe open forever).
fn copy_until_done(from: &OwnedFd, to: &OwnedFd, ended: &AtomicBool) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let mut fds = [PollFd::new(from.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(100u16)).unwrap_or(0);
        if ready == 0 {
            if ended.load(Ordering::SeqCst) {
                return;
            }
            continue;
        }
        match nix::unistd::read(from, &mut buffer) {
            Ok(0) => return,
            Ok(count) => {
                let mut rest = &buffer[..count];
                while !rest.is_empty() {
                    match nix::unistd::write(to, rest) {
                        Ok(written) => rest = &rest[written..],
                        Err(nix::errno::Errno::EINTR) => {}
                        // The caller stopped reading: drop the jail's output, keep draining.
                        Err(_) => break,
                    }
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}
