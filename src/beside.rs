//! Files jailprov reads and writes beside the jail, outside every jail: the Jailfile, its lock, a
//! saved plan, and the state directory's records.
//!
//! Any local user who owns part of such a path is an attacker: a Jailfile path swapped for a FIFO
//! must not hang jailprov, nor a device or a multi-gigabyte file make it read forever; a record
//! or a saved plan someone else can write could be forged into deleting host files; a symlink
//! planted at a predictable temporary name must never be written through. So reads first hold the
//! file by an `O_PATH` fd (which opens nothing), refuse anything but a regular file, reopen that
//! very inode and read at most a stated size; writes go to a fresh `O_CREAT | O_EXCL | O_NOFOLLOW` temporary file with a random
//! name, renamed into place; and the state directory must be owned by root (or by the invoking
//! user) and writable by no one else.
#![allow(clippy::disallowed_methods)] // writes only in the state directory and beside the Jailfile

use std::fs::{self, File, Metadata};
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::sys::stat::{fstat, Mode};
use std::os::fd::AsRawFd;

/// How many fresh temporary names are tried before giving up (each collision is an `EEXIST`).
const TEMP_ATTEMPTS: usize = 32;

/// Opens `path` for reading (following a symlink: a Jailfile reached through a link the operator
/// made is legitimate) if it is a regular file of at most `limit` bytes; anything else (a FIFO, a
/// device, a socket) is refused without being opened.
/// `what` names the file in errors ("the Jailfile"). Ok(None) when it does not exist.
pub fn open_regular(path: &Path, what: &str, limit: u64) -> Result<Option<(File, Metadata)>> {
    open_checked(path, what, limit, OFlag::empty())
}

/// [`open_regular`] without following a symlink at `path` itself: for the state directory's
/// own files, which jailprov never makes symlinks.
pub fn open_regular_nofollow(path: &Path, what: &str, limit: u64) -> Result<Option<(File, Metadata)>> {
    open_checked(path, what, limit, OFlag::O_NOFOLLOW)
}

fn open_checked(path: &Path, what: &str, limit: u64, extra: OFlag) -> Result<Option<(File, Metadata)>> {
    // First an O_PATH fd, which opens nothing: a device node is never opened (that can have side
    // effects: a tape rewinds, a terminal hangs up) and a FIFO never waited on.
    let holder = match open(path, OFlag::O_PATH | OFlag::O_CLOEXEC | extra, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(errno) => bail!("cannot open {what} {}: {errno}", path.display()),
    };
    let held = fstat(&holder).with_context(|| format!("cannot inspect {what} {}", path.display()))?;
    if held.st_mode & libc::S_IFMT == libc::S_IFLNK {
        bail!("{what} {} is a symlink; jailprov writes this file itself and never follows one here", path.display());
    }
    if held.st_mode & libc::S_IFMT != libc::S_IFREG {
        bail!("{what} {} is {}, not a regular file; name a regular file", path.display(), kind_of(held.st_mode));
    }
    let size = u64::try_from(held.st_size).unwrap_or(0);
    if size > limit {
        bail!(
            "{what} {} is {size} bytes, more than the {limit} bytes jailprov reads; is it the right file?",
            path.display()
        );
    }
    // That very inode, reopened for reading; without /proc, by name and checked to be the same.
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let reopen = format!("/proc/self/fd/{}", holder.as_raw_fd());
    let fd = match open(reopen.as_str(), flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => open(path, flags | extra, Mode::empty())
            .map_err(|errno| anyhow::anyhow!("cannot open {what} {}: {errno}", path.display()))?,
        Err(errno) => bail!("cannot open {what} {}: {errno}", path.display()),
    };
    let opened = fstat(&fd).with_context(|| format!("cannot inspect {what} {}", path.display()))?;
    if (opened.st_dev, opened.st_ino) != (held.st_dev, held.st_ino) || opened.st_mode & libc::S_IFMT != libc::S_IFREG {
        bail!("{what} {} was replaced while it was opened; try again", path.display());
    }
    fcntl(&fd, FcntlArg::F_SETFL(OFlag::empty()))
        .with_context(|| format!("cannot clear O_NONBLOCK on {what} {}", path.display()))?;
    let file = File::from(fd);
    let metadata = file.metadata().with_context(|| format!("cannot inspect {what} {}", path.display()))?;
    Ok(Some((file, metadata)))
}

/// "a FIFO", "a directory"... of an `st_mode`, for errors.
fn kind_of(st_mode: u32) -> &'static str {
    match st_mode & libc::S_IFMT {
        libc::S_IFDIR => "a directory",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        _ => "not a regular file",
    }
}

/// At most `limit` bytes of an opened file (the size was checked at the open; a file that grew
/// since is refused rather than read on).
pub fn read_bounded(file: &File, path: &Path, what: &str, limit: u64) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if bytes.len() as u64 > limit {
        bail!("{what} {} grew past the {limit} bytes jailprov reads while it was read", path.display());
    }
    Ok(bytes)
}

/// The whole text of a regular file of at most `limit` bytes (see [`open_regular`]).
pub fn read_text(path: &Path, what: &str, limit: u64) -> Result<String> {
    let Some((file, _)) = open_regular(path, what, limit)? else {
        bail!("cannot read {what} {}: it does not exist", path.display());
    };
    let bytes = read_bounded(&file, path, what, limit)?;
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{what} {} is not UTF-8 text", path.display()))
}

/// Whether a file or directory may be trusted for what jailprov decides from it: owned by root
/// or by the user running jailprov, and writable by neither group nor others.
pub fn trusted_owner(metadata: &Metadata) -> bool {
    let euid = nix::unistd::geteuid().as_raw();
    (metadata.uid() == 0 || metadata.uid() == euid) && metadata.mode() & 0o022 == 0
}

/// Refuses an existing state directory (or a subdirectory of it) that another user owns or can
/// write: they could plant or swap the records that decide what jailprov deletes.
pub fn check_state_dir(dir: &Path) -> Result<()> {
    let metadata = match fs::metadata(dir) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot inspect the state directory {}", dir.display()))
        }
    };
    if !metadata.is_dir() {
        bail!("the state directory {} is not a directory; remove it or pass --state-dir DIR", dir.display());
    }
    if !trusted_owner(&metadata) {
        let euid = nix::unistd::geteuid().as_raw();
        let owner = if euid == 0 { "root".to_owned() } else { format!("root or uid {euid}") };
        bail!(
            "the state directory {} is owned by uid {} with mode {:04o}: it must be owned by {owner} and writable by no one \
             else (whoever can write it can forge what jailprov deletes); run `chown {euid} {0}; chmod go-w {0}`, \
             or pass --state-dir with a private directory",
            dir.display(),
            metadata.uid(),
            metadata.mode() & 0o7777,
        );
    }
    Ok(())
}

/// A fresh random temporary name for `final_name`: `.NAME.tmp-<16 hex digits>`.
fn temp_name(final_name: &str) -> String {
    // RandomState is seeded from the OS's random source.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    format!(".{final_name}.tmp-{:016x}", hasher.finish())
}

/// Creates a fresh temporary file beside `path` (`O_CREAT | O_EXCL | O_NOFOLLOW`, `mode`, random
/// name): a symlink or file planted at any name is never opened. Returns it and its path.
pub fn create_temp_beside(path: &Path, mode: u32) -> Result<(File, std::path::PathBuf)> {
    let name = path.file_name().with_context(|| format!("{} has no file name", path.display()))?;
    let name = name.to_string_lossy();
    for _ in 0..TEMP_ATTEMPTS {
        let temporary = path.with_file_name(temp_name(&name));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temporary)
        {
            Ok(file) => return Ok((file, temporary)),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error).with_context(|| format!("cannot create {}", temporary.display())),
        }
    }
    bail!("cannot find a free temporary name beside {} ({TEMP_ATTEMPTS} taken)", path.display())
}

/// Writes `bytes` to `path`: a fresh temporary file ([`create_temp_beside`]), optionally synced,
/// renamed over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32, sync: bool) -> Result<()> {
    let (mut file, temporary) = create_temp_beside(path, mode)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| if sync { file.sync_all() } else { Ok(()) })
        .with_context(|| format!("cannot write {}", temporary.display()));
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        return Err(error);
    }
    rename_into_place(&temporary, path)
}

/// Writes `bytes` to `path`, which must not exist: a fresh temporary file moved into place with
/// `RENAME_NOREPLACE`, so an existing file (or a symlink planted there) is never replaced and a
/// reader never sees half a file. `what` names the file in the error ("the Jailfile").
pub fn write_new(path: &Path, bytes: &[u8], mode: u32, what: &str) -> Result<()> {
    let (mut file, temporary) = create_temp_beside(path, mode)?;
    let written = file.write_all(bytes).with_context(|| format!("cannot write {}", temporary.display()));
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        return Err(error);
    }
    let moved = nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        temporary.as_path(),
        nix::fcntl::AT_FDCWD,
        path,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    );
    match moved {
        Ok(()) => Ok(()),
        Err(errno) => {
            let _ = fs::remove_file(&temporary);
            if errno == Errno::EEXIST {
                bail!(
                    "{what} {} already exists; jailprov never overwrites it (remove it or choose another -f)",
                    path.display()
                );
            }
            bail!("cannot move {} into place: {errno}", path.display())
        }
    }
}

/// Renames a temporary file made by [`create_temp_beside`] over `path` (removing it on failure).
pub fn rename_into_place(temporary: &Path, path: &Path) -> Result<()> {
    fs::rename(temporary, path).map_err(|error| {
        let _ = fs::remove_file(temporary);
        anyhow::Error::new(error).context(format!("cannot move {} into place", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("Jailfile.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let error = read_text(&fifo, "Jailfile", 1024).expect_err("a FIFO is refused");
        assert!(error.to_string().contains("is a FIFO, not a regular file"), "{error:#}");
        let error = read_text(Path::new("/dev/null"), "Jailfile", 1024).expect_err("a device is refused");
        assert!(error.to_string().contains("is a character device"), "{error:#}");
    }

    #[test]
    fn a_file_past_the_limit_is_refused_and_a_link_to_a_regular_file_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("big");
        fs::write(&file, vec![b'x'; 2048]).expect("write");
        let error = read_text(&file, "Jailfile", 1024).expect_err("too big");
        assert!(error.to_string().contains("2048 bytes, more than the 1024"), "{error:#}");
        symlink(&file, dir.path().join("link")).expect("symlink");
        assert_eq!(read_text(&dir.path().join("link"), "Jailfile", 4096).expect("followed").len(), 2048);
        let error = open_regular_nofollow(&dir.path().join("link"), "the state file", 4096).expect_err("not followed");
        assert!(error.to_string().contains("is a symlink"), "{error:#}");
    }

    #[test]
    fn writes_never_follow_a_planted_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        fs::write(&victim, "untouched").expect("write");
        let path = dir.path().join("x.state");
        symlink(&victim, &path).expect("plant a link at the final name");
        write_atomically(&path, b"new", 0o600, true).expect("written");
        assert_eq!(fs::read_to_string(&victim).expect("victim"), "untouched");
        assert_eq!(fs::read_to_string(&path).expect("the link was replaced"), "new");
        assert_eq!(fs::metadata(&path).expect("stat").permissions().mode() & 0o777, 0o600);
        let leftovers = fs::read_dir(dir.path()).expect("list").count();
        assert_eq!(leftovers, 2, "no temporary file left");
    }

    #[test]
    fn write_new_never_replaces_a_file_or_a_planted_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("Jailfile.toml");
        write_new(&path, b"first", 0o644, "the Jailfile").expect("a new file is written");
        let error = write_new(&path, b"second", 0o644, "the Jailfile").expect_err("it exists");
        assert!(error.to_string().contains("already exists"), "{error:#}");
        assert_eq!(fs::read_to_string(&path).expect("read"), "first");
        let link = dir.path().join("link.toml");
        symlink(dir.path().join("nowhere"), &link).expect("plant a dangling link");
        write_new(&link, b"x", 0o644, "the Jailfile").expect_err("a symlink counts as existing");
        assert!(!dir.path().join("nowhere").exists(), "the link was not followed");
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 2, "no temporary file left");
    }

    #[test]
    fn a_state_dir_others_can_write_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).expect("chmod");
        let error = check_state_dir(dir.path()).expect_err("refused");
        assert!(error.to_string().contains("--state-dir"), "{error:#}");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).expect("chmod");
        check_state_dir(dir.path()).expect("a private directory is fine");
        check_state_dir(&dir.path().join("missing")).expect("a missing one is created later");
    }
}
