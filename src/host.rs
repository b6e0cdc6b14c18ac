//! Read-only access to the host file system under a sysroot ("/" normally, a fixture in tests).
//!
//! Paths given to and returned by `HostFs` are spelled as the host sees them ("/usr/bin/bash");
//! they are mapped under the sysroot only to touch the disk. Symlinks are resolved here, inside
//! the sysroot, the way the kernel would resolve them, recording every link on the way.

use rustc_hash::FxHashMap as HashMap;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

use rayon::slice::ParallelSliceMut;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{bail, Context, Result};

/// The host's secrets (the path itself and everything under it): password and group shadows,
/// sudo rules and their timestamps, private keys, root's home, backups of those. `trace` never
/// suggests them; `check` flags a jail that reaches them.
pub const SECRETS: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/security/opasswd",
    "/etc/ssl/private",
    "/etc/krb5.keytab",
    "/root",
    "/var/backups",
    "/var/lib/sudo",
];

/// The PATH used to find bare binary names, fixed so a Jailfile resolves the same on every host
/// whatever the operator's environment.
pub const BINARY_SEARCH_PATH: &[&str] =
    &["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// A file's identity and change markers, enough to tell "unchanged" without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct StatPrint {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub ino: u64,
}

impl StatPrint {
    pub fn of(metadata: &std::fs::Metadata) -> StatPrint {
        StatPrint {
            size: metadata.size(),
            mtime_ns: i128::from(metadata.mtime()) * 1_000_000_000 + i128::from(metadata.mtime_nsec()),
            ctime_ns: i128::from(metadata.ctime()) * 1_000_000_000 + i128::from(metadata.ctime_nsec()),
            ino: metadata.ino(),
        }
    }
}

/// A host file read to exactly its recorded size: more is never read, less is an error.
pub struct ExactReader {
    inner: io::Take<fs::File>,
    remaining: u64,
}

impl io::Read for ExactReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buffer)?;
        if read == 0 && self.remaining > 0 && !buffer.is_empty() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while it was read"));
        }
        self.remaining -= read as u64;
        Ok(read)
    }
}

/// One look at the host: a disk path, how it was looked at, and what was there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Observation {
    pub disk_path: PathBuf,
    pub look: Look,
    pub seen: SeenPrint,
}

/// What a look found, as 128 bits of blake3 over its fields: tens of thousands of these are
/// kept and compared, and only equality matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SeenPrint(pub [u8; 16]);

/// How a path was looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Look {
    /// lstat: the path itself.
    Lstat,
    /// stat: what it leads to (a file about to be read).
    Stat,
    /// A directory listed: its whole stat, since adding, removing or renaming an entry changes
    /// its mtime and ctime. Of a directory looked at otherwise only the type, mode and owner
    /// count: each name looked up in it is a look of its own, and a busy /tmp or /etc must not
    /// spoil the memo of a jail that only passes through it.
    List,
}

impl Look {
    /// What this look finds at a disk path now.
    pub fn see(self, disk_path: &Path) -> SeenPrint {
        self.seen_in(&match self {
            Look::Stat => fs::metadata(disk_path),
            Look::Lstat | Look::List => fs::symlink_metadata(disk_path),
        })
    }

    /// What this look makes of a stat's result.
    pub fn seen_in(self, result: &io::Result<Metadata>) -> SeenPrint {
        let seen = match (self, Seen::of(result)) {
            (Look::Lstat | Look::Stat, Seen::Present(mut found))
                if found.mode & nix::libc::S_IFMT == nix::libc::S_IFDIR =>
            {
                found.print = StatPrint { size: 0, mtime_ns: 0, ctime_ns: 0, ino: 0 };
                Seen::Present(found)
            }
            (_, seen) => seen,
        };
        seen.print()
    }
}

/// What a stat found.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Seen {
    Present(Fingerprint),
    /// Nothing there, or not reachable: the errno.
    Absent(i32),
}

impl Seen {
    pub fn of(result: &io::Result<Metadata>) -> Seen {
        match result {
            Ok(metadata) => Seen::Present(Fingerprint::of(metadata)),
            Err(error) => Seen::Absent(error.raw_os_error().unwrap_or(-1)),
        }
    }

    pub fn print(&self) -> SeenPrint {
        let mut bytes = [0u8; 96];
        let mut at = 0;
        let mut put = |field: &[u8]| {
            bytes[at..at + field.len()].copy_from_slice(field);
            at += field.len();
        };
        match self {
            Seen::Present(found) => {
                put(&[1]);
                put(&found.mode.to_le_bytes());
                put(&found.uid.to_le_bytes());
                put(&found.gid.to_le_bytes());
                put(&found.rdev.to_le_bytes());
                put(&found.dev.to_le_bytes());
                put(&found.print.size.to_le_bytes());
                put(&found.print.mtime_ns.to_le_bytes());
                put(&found.print.ctime_ns.to_le_bytes());
                put(&found.print.ino.to_le_bytes());
            }
            Seen::Absent(errno) => {
                put(&[0]);
                put(&errno.to_le_bytes());
            }
        }
        let hash = blake3::hash(&bytes[..at]);
        let mut print = [0u8; 16];
        print.copy_from_slice(&hash.as_bytes()[..16]);
        SeenPrint(print)
    }
}

/// Everything a stat says that a closure could depend on (the link count aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub dev: u64,
    pub print: StatPrint,
}

impl Fingerprint {
    pub fn of(metadata: &Metadata) -> Fingerprint {
        Fingerprint {
            mode: metadata.mode(),
            uid: metadata.uid(),
            gid: metadata.gid(),
            rdev: metadata.rdev(),
            dev: metadata.dev(),
            print: StatPrint::of(metadata),
        }
    }
}

/// Linux's limit of symlinks followed in one path resolution.
const MAX_SYMLINKS: usize = 40;

/// What an observing HostFs has looked at.
#[derive(Debug)]
struct Observer {
    looks: Mutex<Vec<Observation>>,
    /// A path changed this recently (ctime, ns since the epoch) may change again within the
    /// file system's timestamp granularity without its stat showing it: nothing is vouched for.
    racy_after_ns: i128,
    racy: std::sync::atomic::AtomicBool,
    /// Of the racy looks, one that read what it looked at (a file opened, a directory listed):
    /// its content may have changed unseen. A path only lstat'ed counts by its stat alone, so
    /// a result built from it is still sound (see [`HostFs::observations_before`]).
    racy_read: std::sync::atomic::AtomicBool,
}

/// How long before observing starts a change still makes the observation racy: file
/// timestamps come from a clock that ticks once a jiffy (at most 10 ms), so a change that soon
/// after an earlier one may keep the same ctime.
pub const RACY_NS: i128 = 50_000_000;

/// Now, in ns since the epoch (the clock file timestamps come from).
pub fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| i128::try_from(since.as_nanos()).unwrap_or(i128::MAX))
}

/// Whether a stat shows a change at or after `after_ns` (see [`Observer`]).
pub fn changed_since(result: &io::Result<Metadata>, after_ns: i128) -> bool {
    result.as_ref().is_ok_and(|metadata| {
        i128::from(metadata.ctime()) * 1_000_000_000 + i128::from(metadata.ctime_nsec()) >= after_ns
    })
}

/// Sorted by path bytes, each (path, look) once; None when one path was seen in two different
/// states (the host moved under the run: nothing can be vouched for).
fn sorted_unique(mut seen: Vec<Observation>) -> Option<Vec<Observation>> {
    seen.par_sort_unstable_by(|a, b| {
        (a.disk_path.as_os_str().as_bytes(), a.look).cmp(&(b.disk_path.as_os_str().as_bytes(), b.look))
    });
    let mut unique: Vec<Observation> = Vec::with_capacity(seen.len());
    for observation in seen {
        match unique.last() {
            Some(last)
                if last.look == observation.look
                    && last.disk_path.as_os_str().as_bytes() == observation.disk_path.as_os_str().as_bytes() =>
            {
                if last.seen != observation.seen {
                    return None;
                }
            }
            _ => unique.push(observation),
        }
    }
    Some(unique)
}

/// How far the record of looks had come (see [`HostFs::mark`]).
#[derive(Debug, Clone, Copy)]
pub struct LookMark {
    count: usize,
    /// A racy look before the mark read content.
    racy_read: bool,
}

/// The host file system seen through a sysroot.
#[derive(Debug, Clone)]
pub struct HostFs {
    sysroot: PathBuf,
    /// When set, every look at the host is written down (see [`Observation`]): what a plan's
    /// result depends on, so that the next plan can tell by stats alone that nothing moved.
    observer: Option<Arc<Observer>>,
    /// Directories and symlinks met while resolving, so the path walks of hundreds of programs
    /// through the same /usr/lib do not lstat the same directories again. (The host is assumed
    /// not to change under one run; files are always looked at afresh.)
    walked: Arc<RwLock<HashMap<OsString, WalkedNode>>>,
}

#[derive(Debug, Clone)]
enum WalkedNode {
    Directory,
    Symlink(PathBuf),
    File,
    /// Anything else that exists (a device, a socket...).
    Other,
}

/// A symlink met while resolving a path: where it sits and its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Link {
    pub path: PathBuf,
    pub target: String,
}

/// The result of resolving a host path: every link followed, in order, and the final path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub links: Vec<Link>,
    pub path: PathBuf,
}

impl HostFs {
    pub fn new(sysroot: impl Into<PathBuf>) -> HostFs {
        HostFs { sysroot: sysroot.into(), observer: None, walked: Arc::default() }
    }

    /// This host, writing down from now on every path looked at (its stat, or its absence).
    pub fn observing(mut self) -> HostFs {
        self.observer = Some(Arc::new(Observer {
            looks: Mutex::default(),
            racy_after_ns: now_ns() - RACY_NS,
            racy: std::sync::atomic::AtomicBool::new(false),
            racy_read: std::sync::atomic::AtomicBool::new(false),
        }));
        self
    }

    /// What was looked at so far, when observing (taken: the record starts empty again):
    /// sorted by path bytes, each (path, look) once. `None` when not observing, or when one
    /// path was seen in two different states during the run (the host moved under it: nothing
    /// can be vouched for).
    pub fn observations(&self) -> Option<Vec<Observation>> {
        let observer = self.observer.as_ref()?;
        if observer.racy.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        sorted_unique(std::mem::take(&mut *observer.looks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())))
    }

    /// The point the record of looks has reached (None when not observing): what
    /// [`HostFs::observations_before`] gives back later.
    pub fn mark(&self) -> Option<LookMark> {
        let observer = self.observer.as_ref()?;
        let count = observer.looks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len();
        Some(LookMark { count, racy_read: observer.racy_read.load(std::sync::atomic::Ordering::Relaxed) })
    }

    /// The looks made before `mark`, as [`HostFs::observations`] gives them (the record is left
    /// as it is), except that a path only lstat'ed that changed moments before does not spoil
    /// them: what is computed from an lstat alone (a desired node: kind, mode, owner, size,
    /// times, inode) is the same for any content, so a cache of it stays sound, while a "no
    /// changes" verdict, which trusts content to follow the stat, would not. None when a racy
    /// look before `mark` read content (a file opened, a directory listed).
    pub fn observations_before(&self, mark: LookMark) -> Option<Vec<Observation>> {
        let observer = self.observer.as_ref()?;
        if mark.racy_read {
            return None;
        }
        let looks = observer.looks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        sorted_unique(looks.get(..mark.count)?.to_vec())
    }

    pub fn is_observing(&self) -> bool {
        self.observer.is_some()
    }

    /// Writes down a batch of looks (one directory's listing: one lock for all of them).
    pub fn record(&self, observations: impl IntoIterator<Item = Observation>) {
        if let Some(observer) = &self.observer {
            observer.looks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).extend(observations);
        }
    }

    /// Writes down a disk path's state as just read.
    pub fn note(&self, disk_path: &Path, look: Look, result: &io::Result<Metadata>) {
        if self.observer.is_some() {
            self.record([self.observation(disk_path.to_path_buf(), look, result)]);
        }
    }

    /// One look, to be recorded (alone with [`HostFs::note`], or in a batch); a path changed
    /// within seconds of the start makes the whole record racy.
    pub fn observation(&self, disk_path: PathBuf, look: Look, result: &io::Result<Metadata>) -> Observation {
        if let Some(observer) = &self.observer {
            // A directory looked at but not listed counts by type, mode and owner only (see
            // `Look`): its ctime moving with every entry made next to ours spoils nothing.
            let directory_contents_ignored =
                look != Look::List && result.as_ref().is_ok_and(|metadata| metadata.is_dir());
            if !directory_contents_ignored && changed_since(result, observer.racy_after_ns) {
                observer.racy.store(true, std::sync::atomic::Ordering::Relaxed);
                if look != Look::Lstat {
                    observer.racy_read.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        Observation { disk_path, look, seen: look.seen_in(result) }
    }

    /// Before a file's content is read (ELF headers, `#!` lines, the ld.so cache): its stat,
    /// taken first, so a change made while or after it is read shows as a different stat.
    pub fn note_before_reading(&self, disk_path: &Path) {
        if self.observer.is_some() {
            self.note(disk_path, Look::Stat, &fs::metadata(disk_path));
        }
    }

    /// stat (following symlinks) of a disk path, written down when observing.
    pub fn metadata_of_disk_path(&self, disk_path: &Path) -> io::Result<Metadata> {
        let result = fs::metadata(disk_path);
        self.note(disk_path, Look::Stat, &result);
        result
    }

    /// stat (following symlinks) of a host path, written down when observing.
    pub fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        self.metadata_of_disk_path(&self.disk_path(path))
    }

    /// The host as it is.
    pub fn real() -> HostFs {
        HostFs::new("/")
    }

    pub fn sysroot(&self) -> &Path {
        &self.sysroot
    }

    /// Where a host path lies on disk (under the sysroot).
    pub fn disk_path(&self, path: &Path) -> PathBuf {
        if self.sysroot.as_os_str() == "/" {
            return path.to_path_buf();
        }
        match path.strip_prefix("/") {
            Ok(relative) => self.sysroot.join(relative),
            Err(_) => path.to_path_buf(),
        }
    }

    /// The host path of a disk path under the sysroot (inverse of `disk_path`).
    pub fn host_path(&self, disk: &Path) -> PathBuf {
        if self.sysroot == Path::new("/") {
            return disk.to_path_buf();
        }
        match disk.strip_prefix(&self.sysroot) {
            Ok(relative) => Path::new("/").join(relative),
            Err(_) => disk.to_path_buf(),
        }
    }

    pub fn symlink_metadata(&self, path: &Path) -> io::Result<Metadata> {
        let disk = self.disk_path(path);
        let result = fs::symlink_metadata(&disk);
        self.note(&disk, Look::Lstat, &result);
        result
    }

    pub fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        let disk = self.disk_path(path);
        // A link's text changes only with a new link (a new inode and ctime): its lstat says.
        if self.observer.is_some() {
            self.note(&disk, Look::Lstat, &fs::symlink_metadata(&disk));
        }
        fs::read_link(disk)
    }

    pub fn read(&self, path: &Path) -> Result<Vec<u8>> {
        let disk = self.disk_path(path);
        self.note_before_reading(&disk);
        fs::read(disk).with_context(|| format!("cannot read {}", path.display()))
    }

    /// Opens a host file for reading (its stat written down first when observing).
    pub fn open(&self, path: &Path) -> io::Result<fs::File> {
        let disk = self.disk_path(path);
        self.note_before_reading(&disk);
        fs::File::open(disk)
    }

    /// Opens a host file the desired tree copies, refusing it unless it is still the file the
    /// tree was built from: a final symlink is never followed, a FIFO never waited on, and a file
    /// swapped (or reached through a swapped directory) is another inode, which `print` catches.
    /// The reader yields exactly `print.size` bytes, or fails: a file truncated meanwhile can
    /// never produce a short copy.
    pub fn open_unchanged(&self, source: &Path, print: &StatPrint) -> Result<ExactReader> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(self.disk_path(source))
            .with_context(|| {
                format!("cannot read {} on the host (a symlink there is not followed)", source.display())
            })?;
        let metadata = file.metadata().with_context(|| format!("cannot inspect {}", source.display()))?;
        if !metadata.is_file() || StatPrint::of(&metadata) != *print {
            bail!("{} changed on the host while jailprov was working; run the command again", source.display());
        }
        Ok(ExactReader { inner: io::Read::take(file, print.size), remaining: print.size })
    }

    /// Lists a host directory; when observing, its stat is written down first (an entry added,
    /// removed or renamed changes the directory's mtime and ctime).
    pub fn read_dir(&self, path: &Path) -> io::Result<fs::ReadDir> {
        let disk = self.disk_path(path);
        if self.observer.is_some() {
            self.note(&disk, Look::List, &fs::symlink_metadata(&disk));
        }
        fs::read_dir(disk)
    }

    /// Whether the path exists (following symlinks inside the sysroot).
    pub fn exists(&self, path: &Path) -> bool {
        self.resolve(path).is_ok_and(|resolved| self.symlink_metadata(&resolved.path).is_ok())
    }

    /// Resolves every symlink of `path` like the kernel, but inside the sysroot: absolute link
    /// targets restart at the sysroot, `..` never climbs above it. The last component need not
    /// exist (the result then names the missing file).
    pub fn resolve(&self, path: &Path) -> Result<Resolved> {
        if !path.is_absolute() {
            bail!("{} is not an absolute path", path.display());
        }
        let mut links = Vec::new();
        let mut done = PathBuf::from("/");
        let mut pending: Vec<std::ffi::OsString> = components_reversed(path);
        while let Some(name) = pending.pop() {
            if name == ".." {
                done.pop();
                continue;
            }
            let candidate = done.join(&name);
            let node = match self.walked_node(&candidate) {
                Some(node) => node,
                None => match self.symlink_metadata(&candidate) {
                    Ok(metadata) if metadata.file_type().is_symlink() => {
                        let target = self
                            .read_link(&candidate)
                            .with_context(|| format!("cannot read symlink {}", candidate.display()))?;
                        self.remember(&candidate, WalkedNode::Symlink(target))
                    }
                    Ok(metadata) if metadata.is_dir() => self.remember(&candidate, WalkedNode::Directory),
                    Ok(metadata) if metadata.is_file() => self.remember(&candidate, WalkedNode::File),
                    Ok(_) => self.remember(&candidate, WalkedNode::Other),
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {
                        // The rest does not exist: keep the remaining names as they are.
                        let mut rest = candidate;
                        while let Some(more) = pending.pop() {
                            rest.push(more);
                        }
                        return Ok(Resolved { links, path: rest });
                    }
                    Err(error) => return Err(error).with_context(|| format!("cannot inspect {}", candidate.display())),
                },
            };
            let WalkedNode::Symlink(target) = node else {
                done = candidate;
                continue;
            };
            if links.len() >= MAX_SYMLINKS {
                bail!("too many levels of symbolic links resolving {}", path.display());
            }
            let Some(target_text) = target.to_str().map(str::to_owned) else {
                bail!("symlink {} has a non-UTF-8 target", candidate.display());
            };
            // A /proc magic link (/dev/stdout -> /proc/self/fd/1) names whatever the process
            // looking at it has open, jailprov's own stdout here: it stays the link it is, the
            // resolution ends at it.
            let magic = is_in_a_process_directory(&candidate) || is_in_a_process_directory(&target);
            links.push(Link { path: candidate.clone(), target: target_text });
            if magic {
                let mut rest = candidate;
                while let Some(more) = pending.pop() {
                    rest.push(more);
                }
                return Ok(Resolved { links, path: rest });
            }
            if target.is_absolute() {
                done = PathBuf::from("/");
            }
            pending.extend(components_reversed(&target));
        }
        Ok(Resolved { links, path: done })
    }

    fn walked_node(&self, path: &Path) -> Option<WalkedNode> {
        self.walked.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(path.as_os_str()).cloned()
    }

    fn remember(&self, path: &Path, node: WalkedNode) -> WalkedNode {
        self.walked
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(path.as_os_str().to_owned(), node.clone());
        node
    }

    /// Whether a host path is a regular file, following symlinks inside the sysroot.
    pub fn is_file(&self, path: &Path) -> bool {
        self.resolve(path).is_ok_and(|resolved| matches!(self.walked_node(&resolved.path), Some(WalkedNode::File)))
    }

    /// The first `name` found in the fixed binary search path, as spelled there (not resolved).
    pub fn find_in_search_path(&self, name: &str, search_path: &[&str]) -> Option<PathBuf> {
        search_path.iter().map(|dir| Path::new(dir).join(name)).find(|candidate| self.is_file(candidate))
    }
}

/// Whether `path` lies below a process's own /proc directory (/proc/self, /proc/thread-self,
/// /proc/<pid>), where symlinks are magic: they resolve to the looking process's open files.
pub fn is_in_a_process_directory(path: &Path) -> bool {
    let mut components = path.components();
    let (Some(std::path::Component::RootDir), Some(proc), Some(process), Some(_)) =
        (components.next(), components.next(), components.next(), components.next())
    else {
        return false;
    };
    let process = process.as_os_str().to_string_lossy();
    proc.as_os_str() == "proc"
        && (process == "self" || process == "thread-self" || process.bytes().all(|byte| byte.is_ascii_digit()))
}

/// Path components as names, last first (a stack to pop from), skipping "/" and ".".
fn components_reversed(path: &Path) -> Vec<std::ffi::OsString> {
    let mut names: Vec<std::ffi::OsString> = path
        .components()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    names.reverse();
    names
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests build their fixtures with plain fs calls
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn open_unchanged_reads_exactly_the_recorded_file_and_refuses_a_changed_or_linked_one() {
        let sysroot = tempfile::tempdir().expect("tempdir");
        let host = HostFs::new(sysroot.path());
        fs::write(sysroot.path().join("data"), b"hello").expect("write");
        let print = StatPrint::of(&fs::metadata(sysroot.path().join("data")).expect("stat"));
        let mut read = Vec::new();
        io::Read::read_to_end(&mut host.open_unchanged(Path::new("/data"), &print).expect("opens"), &mut read)
            .expect("reads");
        assert_eq!(read, b"hello");
        // A file that holds fewer bytes than recorded: the reader fails, never comes up short.
        fs::write(sysroot.path().join("short"), b"hello").expect("write");
        let short = StatPrint::of(&fs::metadata(sysroot.path().join("short")).expect("stat"));
        let opened = fs::File::open(sysroot.path().join("short")).expect("open");
        let mut reader = ExactReader { inner: io::Read::take(opened, short.size + 1), remaining: short.size + 1 };
        assert!(io::Read::read_to_end(&mut reader, &mut Vec::new()).is_err(), "a short file is an error");
        fs::write(sysroot.path().join("data"), b"changed!").expect("rewrite");
        let error = host.open_unchanged(Path::new("/data"), &print).err().expect("a changed file is refused");
        assert!(error.to_string().contains("changed on the host"), "{error}");
        symlink("short", sysroot.path().join("link")).expect("symlink");
        assert!(host.open_unchanged(Path::new("/link"), &short).is_err(), "a symlink is never followed");
    }

    #[test]
    fn resolve_records_directory_and_file_links_inside_the_sysroot() {
        let sysroot = tempfile::tempdir().expect("tempdir");
        let base = sysroot.path();
        fs::create_dir_all(base.join("usr/lib/x86_64-linux-gnu")).expect("mkdir");
        fs::write(base.join("usr/lib/x86_64-linux-gnu/libc.so.6"), b"x").expect("write");
        symlink("usr/lib", base.join("lib")).expect("symlink");
        fs::create_dir_all(base.join("usr/lib64")).expect("mkdir");
        symlink("/lib/x86_64-linux-gnu/libc.so.6", base.join("usr/lib64/ld.so")).expect("symlink");
        symlink("usr/lib64", base.join("lib64")).expect("symlink");

        let host = HostFs::new(base);
        let resolved = host.resolve(Path::new("/lib64/ld.so")).expect("resolves");
        assert_eq!(resolved.path, PathBuf::from("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        let link_paths: Vec<&Path> = resolved.links.iter().map(|link| link.path.as_path()).collect();
        assert_eq!(link_paths, vec![Path::new("/lib64"), Path::new("/usr/lib64/ld.so"), Path::new("/lib")]);
    }

    #[test]
    fn resolution_stops_at_a_proc_magic_link() {
        let sysroot = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(sysroot.path().join("dev")).expect("mkdir");
        symlink("/proc/self/fd/1", sysroot.path().join("dev/stdout")).expect("symlink");
        let resolved = HostFs::new(sysroot.path()).resolve(Path::new("/dev/stdout")).expect("resolves");
        assert_eq!(resolved.path, PathBuf::from("/dev/stdout"), "the link itself, never what it names");
        assert!(is_in_a_process_directory(Path::new("/proc/4242/fd/1")));
        assert!(is_in_a_process_directory(Path::new("/proc/thread-self/fd")));
        assert!(!is_in_a_process_directory(Path::new("/proc/self")), "the pid link itself is plain");
        assert!(!is_in_a_process_directory(Path::new("/proc/sys/kernel")));
    }

    #[test]
    fn absolute_link_to_outside_stays_in_sysroot() {
        let sysroot = tempfile::tempdir().expect("tempdir");
        symlink("/../../etc", sysroot.path().join("escape")).expect("symlink");
        let resolved = HostFs::new(sysroot.path()).resolve(Path::new("/escape/passwd")).expect("resolves");
        assert_eq!(resolved.path, PathBuf::from("/etc/passwd"));
    }

    #[test]
    fn symlink_loop_is_an_error_not_a_hang() {
        let sysroot = tempfile::tempdir().expect("tempdir");
        symlink("b", sysroot.path().join("a")).expect("symlink");
        symlink("a", sysroot.path().join("b")).expect("symlink");
        assert!(HostFs::new(sysroot.path()).resolve(Path::new("/a")).is_err());
    }
}
