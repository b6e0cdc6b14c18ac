//! The jail writer's tests: what each operation makes, and the attacks by a jail process it
//! resists (they need root: chown, mknod, mount).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{symlink as host_symlink, FileTypeExt, MetadataExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::{major, makedev, minor, umask};
use tempfile::TempDir;

use super::write::{chmod_through_proc, fchmodat2_fd};
use super::*;

fn jp(text: &str) -> JailPath {
    JailPath::parse(text).expect("test paths are valid jail paths")
}

/// `set_attributes` on whatever is at the path right now (what a plan made a moment ago
/// would see); a missing path is refused like any other change.
trait SetAttributesNow {
    fn set_attributes_now(&self, path: &JailPath, mode: u32, uid: u32, gid: u32) -> Result<()>;
}

impl SetAttributesNow for JailRoot {
    fn set_attributes_now(&self, path: &JailPath, mode: u32, uid: u32, gid: u32) -> Result<()> {
        let seen = match self.stat(path)? {
            Some(stat) => stat.identity(),
            None => NodeIdentity { kind: NodeKind::File, dev: 0, ino: 0 },
        };
        self.set_attributes(path, &seen, mode, uid, gid)
    }
}

/// A jail and, next to it, an "outside" canary directory standing for the host.
struct Scene {
    _dir: TempDir,
    jail_dir: PathBuf,
    outside: PathBuf,
    jail: JailRoot,
}

fn scene() -> Result<Scene> {
    assert!(nix::unistd::geteuid().is_root(), "the jail_root tests need root (chown, mknod, mount)");
    let dir = tempfile::tempdir()?;
    let jail_dir = dir.path().join("jail");
    let outside = dir.path().join("outside");
    fs::create_dir(&jail_dir)?;
    fs::create_dir(&outside)?;
    fs::write(outside.join("secret"), b"host secret\n")?;
    fs::create_dir(outside.join("empty"))?;
    fs::create_dir(outside.join("sub"))?;
    fs::write(outside.join("sub/file"), b"host file\n")?;
    let jail = JailRoot::open(&jail_dir)?;
    Ok(Scene { _dir: dir, jail_dir, outside, jail })
}

/// Every fact about a host tree a write could change: names, kinds, modes, owners, inode
/// numbers, mtime and ctime (a chown to the same owner still moves ctime), contents, link
/// texts.
fn snapshot(root: &Path) -> Result<BTreeMap<PathBuf, String>> {
    let mut facts = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = fs::symlink_metadata(&path)?;
        let what = if meta.file_type().is_symlink() {
            format!("-> {}", fs::read_link(&path)?.display())
        } else if meta.is_dir() {
            for entry in fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
            "dir".to_owned()
        } else if meta.is_file() {
            format!("{:?}", fs::read(&path)?)
        } else {
            format!("special rdev {}", meta.rdev())
        };
        let facts_of = format!(
            "{what} mode {:o} owner {}:{} ino {} mtime {}.{} ctime {}.{}",
            meta.mode(),
            meta.uid(),
            meta.gid(),
            meta.ino(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec()
        );
        facts.insert(path.strip_prefix(root)?.to_path_buf(), facts_of);
    }
    Ok(facts)
}

fn symlink_in_path(error: &anyhow::Error) -> Option<JailPath> {
    match error.downcast_ref::<JailError>() {
        Some(JailError::SymlinkInPath { path }) => Some(path.clone()),
        _ => None,
    }
}

fn temp_names(jail: &JailRoot, dir: &str) -> Result<Vec<String>> {
    Ok(jail
        .list(&jp(dir))?
        .into_iter()
        .filter_map(|name| name.into_string().ok())
        .filter(|name| name.starts_with(TEMP_PREFIX))
        .collect())
}

/// Runs `body` on a thread of its own after `unshare(flags)`: a private umask (CLONE_FS) or
/// mount namespace (CLONE_NEWNS) that the other tests of this process never see.
fn on_own_thread(flags: CloneFlags, body: impl FnOnce() -> Result<()> + Send + 'static) -> Result<()> {
    let thread = std::thread::spawn(move || -> Result<()> {
        unshare(flags).context("unshare")?;
        body()
    });
    match thread.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A reader that fails after a few bytes, like a host file vanishing mid-copy.
struct FailingReader(usize);

impl Read for FailingReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if self.0 == 0 {
            return Err(io::Error::other("source vanished"));
        }
        let count = self.0.min(buffer.len());
        buffer[..count].fill(b'x');
        self.0 -= count;
        Ok(count)
    }
}

#[test]
fn open_refuses_a_symlink_a_file_and_the_host_root() -> Result<()> {
    let scene = scene()?;
    let link = scene.jail_dir.with_file_name("jail-link");
    host_symlink(&scene.jail_dir, &link)?;
    for refused in [link.clone(), link.join(""), PathBuf::from(format!("{}/", link.display()))] {
        let error = JailRoot::open(&refused).expect_err("a symlinked jail root must be refused");
        assert!(error.to_string().contains("is a symlink"), "{error:#}");
    }
    let error = JailRoot::open(&scene.outside.join("secret")).expect_err("a file is no jail root");
    assert!(error.to_string().contains("not a directory"), "{error:#}");
    assert!(JailRoot::open(Path::new("/")).is_err(), "the host root is no jail root");
    assert!(JailRoot::open(&scene.jail_dir.join("missing")).is_err());
    let opened = JailRoot::open(&scene.jail_dir.join(""))?;
    assert_eq!(opened.host_path(), scene.jail_dir.as_path());
    Ok(())
}

/// apply flushes a few written paths one by one: every kind (a symlink and a device through
/// their directory), a path already gone, and one under a symlink planted since, without error
/// and without reaching outside.
#[test]
fn sync_paths_takes_every_kind_and_paths_gone_or_planted_over() -> Result<()> {
    let scene = scene()?;
    let jail = &scene.jail;
    jail.mkdir(&jp("/d"), 0o755, 0, 0)?;
    jail.write_file(&jp("/d/f"), &mut &b"x"[..], 0o644, 0, 0, None)?;
    jail.symlink(&jp("/d/l"), "f", 0, 0)?;
    jail.mknod(&jp("/d/null"), NodeKind::CharDevice, makedev(1, 3), 0o666, 0, 0)?;
    host_symlink(&scene.outside, scene.jail_dir.join("planted"))?;
    let paths = [jp("/d"), jp("/d/f"), jp("/d/l"), jp("/d/null"), jp("/gone"), jp("/planted/secret")];
    jail.sync_paths(&paths.iter().collect::<Vec<_>>())?;
    assert_eq!(fs::read(scene.outside.join("secret"))?, b"host secret\n");
    Ok(())
}

#[test]
fn creates_every_kind_exactly_whatever_the_umask() -> Result<()> {
    let scene = scene()?;
    on_own_thread(CloneFlags::CLONE_FS, move || {
        umask(Mode::from_bits_truncate(0o077));
        // The umask is in force on this thread: a plain mkdir loses group/other bits.
        let control = scene.jail_dir.join("control");
        fs::create_dir(&control)?;
        assert_eq!(fs::metadata(&control)?.mode() & 0o7777, 0o700);

        let jail = &scene.jail;
        jail.mkdir(&jp("/tmp"), 0o1777, 0, 0)?;
        jail.mkdir(&jp("/home"), 0o755, 0, 0)?;
        jail.mkdir(&jp("/home/jailer"), 0o750, 1000, 1001)?;
        jail.mkdir(&jp("/usr"), 0o755, 0, 0)?;
        jail.mkdir(&jp("/usr/bin"), 0o755, 0, 0)?;
        jail.mkdir(&jp("/dev"), 0o755, 0, 0)?;
        jail.mkdir(&jp("/run"), 0o755, 0, 0)?;
        let mtime = 1_600_000_000_123_456_789;
        jail.write_file(&jp("/usr/bin/su"), &mut &b"#!/bin/true\n"[..], 0o4755, 1000, 1000, Some(mtime))?;
        jail.write_file(&jp("/usr/bin/wall"), &mut &b"wall"[..], 0o2711, 0, 5, None)?;
        jail.symlink(&jp("/bin"), "usr/bin", 1000, 1001)?;
        jail.mknod(&jp("/dev/sda1"), NodeKind::BlockDevice, makedev(8, 1), 0o660, 0, 6)?;
        jail.mknod(&jp("/run/initctl"), NodeKind::Fifo, 0, 0o620, 0, 5)?;

        let stat = |path: &str| -> Result<NodeStat> { jail.stat(&jp(path))?.context("missing") };
        let dir = stat("/tmp")?;
        assert_eq!((dir.kind, dir.mode, dir.uid, dir.gid), (NodeKind::Dir, 0o1777, 0, 0));
        assert_eq!(fs::metadata(scene.jail_dir.join("tmp"))?.mode() & 0o7777, 0o1777);
        let home = stat("/home/jailer")?;
        assert_eq!((home.kind, home.mode, home.uid, home.gid), (NodeKind::Dir, 0o750, 1000, 1001));
        let su = stat("/usr/bin/su")?;
        assert_eq!((su.kind, su.mode, su.uid, su.gid, su.size), (NodeKind::File, 0o4755, 1000, 1000, 12));
        assert_eq!(su.mtime_ns, mtime);
        assert_eq!(fs::read(scene.jail_dir.join("usr/bin/su"))?, b"#!/bin/true\n");
        let wall = stat("/usr/bin/wall")?;
        assert_eq!((wall.mode, wall.uid, wall.gid), (0o2711, 0, 5));
        let bin = stat("/bin")?;
        assert_eq!((bin.kind, bin.uid, bin.gid), (NodeKind::Symlink, 1000, 1001));
        assert_eq!(jail.read_link(&jp("/bin"))?, "usr/bin");
        assert_eq!(fs::read_link(scene.jail_dir.join("bin"))?, Path::new("usr/bin"));
        let disk = stat("/dev/sda1")?;
        assert_eq!((disk.kind, disk.mode, disk.uid, disk.gid), (NodeKind::BlockDevice, 0o660, 0, 6));
        assert_eq!((major(disk.rdev), minor(disk.rdev)), (8, 1));
        assert!(fs::symlink_metadata(scene.jail_dir.join("dev/sda1"))?.file_type().is_block_device());
        let fifo = stat("/run/initctl")?;
        assert_eq!((fifo.kind, fifo.mode, fifo.gid), (NodeKind::Fifo, 0o620, 5));

        // mkdir over an existing directory changes nothing: it is not the one mkdir made.
        let error = jail.mkdir(&jp("/tmp"), 0o755, 1000, 1000).expect_err("the directory was there already");
        let changed = error.downcast_ref::<ChangedUnderfoot>().expect("a ChangedUnderfoot");
        assert_eq!(changed.was, "absent", "{error:#}");
        let tmp = stat("/tmp")?;
        assert_eq!((tmp.mode, tmp.uid, tmp.gid), (0o1777, 0, 0));
        for dir in ["/", "/usr/bin", "/dev", "/run"] {
            assert_eq!(temp_names(jail, dir)?, Vec::<String>::new(), "temporaries left in {dir}");
        }
        Ok(())
    })
}

#[test]
fn mknod_of_dev_null_has_its_rdev() -> Result<()> {
    let scene = scene()?;
    scene.jail.mkdir(&jp("/dev"), 0o755, 0, 0)?;
    scene.jail.mknod(&jp("/dev/null"), NodeKind::CharDevice, makedev(1, 3), 0o666, 0, 0)?;
    let null = scene.jail.stat(&jp("/dev/null"))?.context("missing")?;
    assert_eq!((null.kind, null.mode, null.uid, null.gid), (NodeKind::CharDevice, 0o666, 0, 0));
    assert_eq!(null.rdev, makedev(1, 3));
    assert_eq!((major(null.rdev), minor(null.rdev)), (1, 3));
    let host = fs::symlink_metadata(scene.jail_dir.join("dev/null"))?;
    assert!(host.file_type().is_char_device());
    assert_eq!(host.rdev(), fs::symlink_metadata("/dev/null")?.rdev());
    assert!(scene.jail.mknod(&jp("/dev/x"), NodeKind::File, 0, 0o644, 0, 0).is_err());
    Ok(())
}

#[test]
fn replaces_every_kind_atomically_and_removes_them() -> Result<()> {
    let scene = scene()?;
    let jail = &scene.jail;
    jail.mkdir(&jp("/etc"), 0o755, 0, 0)?;
    jail.write_file(&jp("/etc/f"), &mut &b"old"[..], 0o644, 0, 0, None)?;
    fs::hard_link(scene.jail_dir.join("etc/f"), scene.jail_dir.join("etc/old-link"))?;
    let old_ino = jail.stat(&jp("/etc/f"))?.context("missing")?.ino;
    jail.write_file(&jp("/etc/f"), &mut &b"new"[..], 0o600, 1000, 1000, None)?;
    // Renamed over, not rewritten in place: the old inode keeps the old bytes.
    assert_eq!(fs::read(scene.jail_dir.join("etc/f"))?, b"new");
    assert_eq!(fs::read(scene.jail_dir.join("etc/old-link"))?, b"old");
    let new = jail.stat(&jp("/etc/f"))?.context("missing")?;
    assert_ne!(new.ino, old_ino);
    assert_eq!((new.mode, new.uid, new.nlink), (0o600, 1000, 1));

    // A file over a symlink and over a device node.
    jail.symlink(&jp("/etc/l"), "f", 0, 0)?;
    jail.write_file(&jp("/etc/l"), &mut &b"was a link"[..], 0o644, 0, 0, None)?;
    assert_eq!(jail.stat(&jp("/etc/l"))?.map(|stat| stat.kind), Some(NodeKind::File));
    jail.mknod(&jp("/etc/d"), NodeKind::CharDevice, makedev(1, 5), 0o666, 0, 0)?;
    jail.write_file(&jp("/etc/d"), &mut &b"was a device"[..], 0o644, 0, 0, None)?;
    assert_eq!(fs::read(scene.jail_dir.join("etc/d"))?, b"was a device");

    // A symlink over a symlink (new text) and over a file; a device over a file.
    jail.symlink(&jp("/lib"), "usr/lib", 0, 0)?;
    jail.symlink(&jp("/lib"), "usr/lib64", 1000, 1000)?;
    assert_eq!(jail.read_link(&jp("/lib"))?, "usr/lib64");
    assert_eq!(jail.stat(&jp("/lib"))?.map(|stat| stat.uid), Some(1000));
    jail.symlink(&jp("/etc/l"), "f", 0, 0)?;
    assert_eq!(jail.read_link(&jp("/etc/l"))?, "f");
    jail.mknod(&jp("/etc/f"), NodeKind::CharDevice, makedev(1, 3), 0o640, 0, 0)?;
    let device = jail.stat(&jp("/etc/f"))?.context("missing")?;
    assert_eq!((device.kind, device.rdev, device.mode), (NodeKind::CharDevice, makedev(1, 3), 0o640));

    // A directory in the way is refused, and leaves no temporary behind.
    jail.mkdir(&jp("/etc/dir"), 0o755, 0, 0)?;
    jail.write_file(&jp("/etc/dir/inner"), &mut &b"x"[..], 0o644, 0, 0, None)?;
    let error = jail.write_file(&jp("/etc/dir"), &mut &b"x"[..], 0o644, 0, 0, None).expect_err("dir in the way");
    assert!(format!("{error:#}").contains("a directory is in the way"), "{error:#}");
    assert!(jail.symlink(&jp("/etc/dir"), "x", 0, 0).is_err());
    assert!(jail.mknod(&jp("/etc/dir"), NodeKind::CharDevice, makedev(1, 3), 0o666, 0, 0).is_err());
    assert!(jail.mkdir(&jp("/etc/l"), 0o755, 0, 0).is_err(), "mkdir over a file");
    // A source failing mid-copy leaves the old file whole and no temporary.
    jail.write_file(&jp("/etc/keep"), &mut &b"intact"[..], 0o644, 0, 0, None)?;
    assert!(jail.write_file(&jp("/etc/keep"), &mut FailingReader(100_000), 0o644, 0, 0, None).is_err());
    assert_eq!(fs::read(scene.jail_dir.join("etc/keep"))?, b"intact");
    assert_eq!(temp_names(jail, "/etc")?, Vec::<String>::new());
    assert_eq!(temp_names(jail, "/")?, Vec::<String>::new());

    // Removal of each kind; a second removal reports absence.
    for name in ["/etc/f", "/etc/l", "/etc/d", "/lib", "/etc/old-link"] {
        assert!(jail.remove_file(&jp(name))?, "{name} was there");
        assert!(!jail.remove_file(&jp(name))?, "{name} is gone");
        assert_eq!(jail.stat(&jp(name))?, None);
    }
    assert!(!jail.remove_file(&jp("/nowhere/x"))?);
    assert!(jail.remove_file(&jp("/etc/dir")).is_err(), "remove_file refuses a directory");
    assert!(!jail.remove_dir(&jp("/etc/dir"))?, "not empty");
    assert!(jail.remove_dir(&jp("/etc/keep")).is_err(), "remove_dir refuses a file");
    assert!(jail.remove_file(&jp("/etc/dir/inner"))?);
    assert!(jail.remove_dir(&jp("/etc/dir"))?);
    assert!(!jail.remove_dir(&jp("/etc/dir"))?);
    assert_eq!(jail.stat(&jp("/etc/dir"))?, None);
    Ok(())
}

/// What apply records is the stat write_file returns: it must be what the next plan's scan
/// sees of an untouched file (or every no-op plan would read every file again), and it must not
/// be what a jail process renamed over the path since (or plan would vouch for that file).
#[test]
fn write_file_returns_the_written_files_stat_not_whatever_is_at_the_path_later() -> Result<()> {
    let scene = scene()?;
    let jail = &scene.jail;
    jail.mkdir(&jp("/home"), 0o1777, 0, 0)?;
    let written = jail.write_file(&jp("/home/motd"), &mut &b"jailprov\n"[..], 0o644, 0, 0, Some(1_000_000_000))?;
    let scanned = jail.stat(&jp("/home/motd"))?.context("missing")?;
    assert_eq!(
        (written.ino, written.size, written.mtime_ns, written.ctime_ns),
        (scanned.ino, scanned.size, scanned.mtime_ns, scanned.ctime_ns),
        "taken after the rename, through the fd"
    );
    fs::write(scene.jail_dir.join("home/evil"), b"attacker\n")?;
    fs::rename(scene.jail_dir.join("home/evil"), scene.jail_dir.join("home/motd"))?;
    let swapped = jail.stat(&jp("/home/motd"))?.context("missing")?;
    assert_ne!(written.ino, swapped.ino, "the returned stat stays the written file's");
    Ok(())
}

#[test]
fn write_file_replaces_a_planted_symlink_instead_of_writing_through_it() -> Result<()> {
    let scene = scene()?;
    let jail = &scene.jail;
    jail.mkdir(&jp("/etc"), 0o755, 0, 0)?;
    let secret = scene.outside.join("secret");
    host_symlink(&secret, scene.jail_dir.join("etc/passwd"))?;
    host_symlink("../../outside/secret", scene.jail_dir.join("etc/shadow"))?;
    host_symlink(&secret, scene.jail_dir.join("etc/motd"))?;
    host_symlink(&scene.outside, scene.jail_dir.join("etc/dir"))?;
    // The trap is real: following those links lands on the host's file.
    assert_eq!(fs::read(scene.jail_dir.join("etc/shadow"))?, b"host secret\n");
    let before = snapshot(&scene.outside)?;

    jail.write_file(&jp("/etc/passwd"), &mut &b"root:x:0:0::/root:/bin/sh\n"[..], 0o644, 0, 0, None)?;
    jail.write_file(&jp("/etc/shadow"), &mut &b"root:*::::::\n"[..], 0o640, 0, 42, None)?;
    jail.symlink(&jp("/etc/motd"), "issue", 0, 0)?;
    jail.set_attributes_now(&jp("/etc/dir"), 0o777, 1000, 1000)?;
    let error = jail.mkdir(&jp("/etc/dir"), 0o755, 0, 0).expect_err("mkdir over a planted symlink");
    assert_eq!(symlink_in_path(&error), Some(jp("/etc/dir")), "{error:#}");

    assert_eq!(fs::read(&secret)?, b"host secret\n");
    assert_eq!(snapshot(&scene.outside)?, before, "the host side changed");
    let passwd = jail.stat(&jp("/etc/passwd"))?.context("missing")?;
    assert_eq!((passwd.kind, passwd.mode), (NodeKind::File, 0o644));
    assert_eq!(fs::read(scene.jail_dir.join("etc/passwd"))?, b"root:x:0:0::/root:/bin/sh\n");
    assert_eq!(jail.stat(&jp("/etc/shadow"))?.map(|stat| (stat.kind, stat.gid)), Some((NodeKind::File, 42)));
    assert_eq!(jail.read_link(&jp("/etc/motd"))?, "issue");
    // set_attributes on a symlink changed the link's owner only.
    assert_eq!(jail.stat(&jp("/etc/dir"))?.map(|stat| (stat.kind, stat.uid)), Some((NodeKind::Symlink, 1000)));
    Ok(())
}

#[test]
fn every_operation_refuses_a_parent_replaced_by_a_symlink() -> Result<()> {
    for style in ["absolute", "relative", "dotdot-heavy"] {
        let scene = scene()?;
        let jail = &scene.jail;
        let root = scene.jail_dir.display().to_string();
        let target = match style {
            "absolute" => scene.outside.clone(),
            "relative" => PathBuf::from("../outside"),
            _ => PathBuf::from(format!("{}{}", "../".repeat(40), scene.outside.display())),
        };
        host_symlink(&target, scene.jail_dir.join("usr"))?;
        fs::create_dir_all(scene.jail_dir.join("a"))?;
        host_symlink(&target, scene.jail_dir.join("a/b"))?;
        assert_eq!(fs::read(scene.jail_dir.join("usr/secret"))?, b"host secret\n", "{style}: the trap works");
        let before = snapshot(&scene.outside)?;

        let outcomes: Vec<(&str, &str, Result<()>)> = vec![
            ("mkdir", "/usr/new", jail.mkdir(&jp("/usr/new"), 0o755, 0, 0)),
            ("mkdir", "/usr/sub/new", jail.mkdir(&jp("/usr/sub/new"), 0o755, 0, 0)),
            ("write_file", "/usr/new", jail.write_file(&jp("/usr/new"), &mut &b"x"[..], 0o644, 0, 0, None).map(drop)),
            (
                "write_file",
                "/usr/secret",
                jail.write_file(&jp("/usr/secret"), &mut &b"x"[..], 0o644, 0, 0, None).map(drop),
            ),
            ("symlink", "/usr/link", jail.symlink(&jp("/usr/link"), "x", 0, 0)),
            ("mknod", "/usr/null", jail.mknod(&jp("/usr/null"), NodeKind::CharDevice, makedev(1, 3), 0o666, 0, 0)),
            ("set_attributes", "/usr/secret", jail.set_attributes_now(&jp("/usr/secret"), 0o777, 1000, 1000)),
            ("set_attributes", "/usr/sub", jail.set_attributes_now(&jp("/usr/sub"), 0o777, 1000, 1000)),
            ("remove_file", "/usr/secret", jail.remove_file(&jp("/usr/secret")).map(drop)),
            ("remove_file", "/usr/sub/file", jail.remove_file(&jp("/usr/sub/file")).map(drop)),
            ("remove_dir", "/usr/empty", jail.remove_dir(&jp("/usr/empty")).map(drop)),
            ("remove_tree", "/usr/sub", jail.remove_tree(&jp("/usr/sub"))),
            ("remove_temp_files", "/usr", jail.remove_temp_files(&jp("/usr")).map(drop)),
            ("stat", "/usr/secret", jail.stat(&jp("/usr/secret")).map(drop)),
            ("read_link", "/usr/secret", jail.read_link(&jp("/usr/secret")).map(drop)),
            ("open_read", "/usr/secret", jail.open_read(&jp("/usr/secret")).map(drop)),
            ("list", "/usr", jail.list(&jp("/usr")).map(drop)),
            ("list", "/usr/sub", jail.list(&jp("/usr/sub")).map(drop)),
        ];
        for (operation, path, outcome) in outcomes {
            let error = outcome.expect_err(&format!("{style}: {operation} {path} went through the symlink"));
            assert_eq!(symlink_in_path(&error), Some(jp("/usr")), "{style}: {operation} {path}: {error:#}");
            let message = format!("{error:#}");
            assert!(message.contains(&format!(" {path} in {root}: ")), "{style}: {operation}: {message}");
        }
        let error = jail.mkdir(&jp("/usr/new"), 0o755, 0, 0).expect_err("refused");
        assert_eq!(
            format!("{error:#}"),
            format!("cannot create /usr/new in {root}: /usr is a symlink where a directory should be; jailprov never resolves a path through a symlink inside a jail")
        );
        // A symlink deeper down is named precisely.
        for path in ["/a/b/c", "/a/b/c/d/e"] {
            let error = jail.write_file(&jp(path), &mut &b"x"[..], 0o644, 0, 0, None).expect_err("refused");
            assert_eq!(symlink_in_path(&error), Some(jp("/a/b")), "{style}: {error:#}");
        }
        assert_eq!(snapshot(&scene.outside)?, before, "{style}: the host side changed");
    }
    Ok(())
}

#[test]
fn an_absolute_symlink_to_slash_does_not_reach_the_host() -> Result<()> {
    let scene = scene()?;
    let jail = &scene.jail;
    host_symlink("/", scene.jail_dir.join("x"))?;
    host_symlink("../../../../../../../../../../..", scene.jail_dir.join("y"))?;
    fs::create_dir(scene.jail_dir.join("z"))?;
    host_symlink("../../../../../../../../../../../etc", scene.jail_dir.join("z/w"))?;
    // Followed naively, each of them reads the host's /etc/passwd.
    for naive in ["x/etc/passwd", "y/etc/passwd", "z/w/passwd"] {
        assert!(fs::metadata(scene.jail_dir.join(naive)).is_ok(), "the trap {naive} works");
    }
    for (path, culprit) in [("/x/etc/passwd", "/x"), ("/y/etc/passwd", "/y"), ("/z/w/passwd", "/z/w")] {
        let error = jail.stat(&jp(path)).expect_err("stat through a symlink");
        assert_eq!(symlink_in_path(&error), Some(jp(culprit)), "{error:#}");
        let error = jail.open_read(&jp(path)).expect_err("open through a symlink");
        assert_eq!(symlink_in_path(&error), Some(jp(culprit)), "{error:#}");
    }
    // The links themselves are visible as links; reading one as a file is refused.
    assert_eq!(jail.stat(&jp("/x"))?.map(|stat| stat.kind), Some(NodeKind::Symlink));
    assert_eq!(jail.read_link(&jp("/y"))?, "../../../../../../../../../../..");
    assert_eq!(symlink_in_path(&jail.list(&jp("/x")).expect_err("list a symlink")), Some(jp("/x")));
    host_symlink("/etc/passwd", scene.jail_dir.join("passwd"))?;
    let error = jail.open_read(&jp("/passwd")).expect_err("open_read follows no final symlink");
    assert!(format!("{error:#}").contains("it is a symlink, not a regular file"), "{error:#}");
    Ok(())
}

#[test]
fn list_returns_a_non_utf8_name_and_escaped_shows_it() -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let scene = scene()?;
    let name = std::ffi::OsStr::from_bytes(b"a\xffb\n");
    fs::create_dir(scene.jail_dir.join("d"))?;
    fs::write(scene.jail_dir.join("d").join(name), "x")?;
    let jail = &scene.jail;
    assert_eq!(jail.list(&jp("/d"))?, vec![name.to_owned()], "listed, not an error");
    assert_eq!(escaped(name.as_bytes()), "a\\xffb\\n");
    assert_eq!(escaped("\\é".as_bytes()), "\\\\é");
    Ok(())
}

#[test]
fn stat_list_read_link_and_open_read() -> Result<()> {
    let scene = scene()?;
    let jail = &scene.jail;
    assert_eq!(jail.stat(&JailPath::root())?.map(|stat| stat.kind), Some(NodeKind::Dir));
    assert_eq!(jail.stat(&jp("/missing"))?, None);
    assert_eq!(jail.stat(&jp("/missing/deeper/still"))?, None);
    jail.mkdir(&jp("/etc"), 0o755, 0, 0)?;
    jail.write_file(&jp("/etc/hosts"), &mut &b"127.0.0.1 localhost\n"[..], 0o644, 0, 0, None)?;
    jail.write_file(&jp("/etc/a"), &mut &b""[..], 0o644, 0, 0, None)?;
    jail.symlink(&jp("/etc/localtime"), "/usr/share/zoneinfo/UTC", 0, 0)?;
    let error = jail.stat(&jp("/etc/hosts/x")).expect_err("a file as a parent");
    assert_eq!(error.downcast_ref::<JailError>(), Some(&JailError::NotADirectory { path: jp("/etc/hosts") }));
    assert_eq!(jail.list(&JailPath::root())?, vec!["etc"]);
    assert_eq!(jail.list(&jp("/etc"))?, vec!["a", "hosts", "localtime"]);
    assert!(jail.list(&jp("/etc/hosts")).is_err());
    assert!(jail.list(&jp("/nope")).is_err());
    assert_eq!(jail.read_link(&jp("/etc/localtime"))?, "/usr/share/zoneinfo/UTC");
    assert!(jail.read_link(&jp("/etc/hosts")).is_err());
    let mut text = String::new();
    jail.open_read(&jp("/etc/hosts"))?.read_to_string(&mut text)?;
    assert_eq!(text, "127.0.0.1 localhost\n");
    assert!(jail.open_read(&jp("/etc")).is_err(), "a directory is not a regular file");
    assert!(jail.open_read(&jp("/etc/missing")).is_err());
    let root = jail.stat(&JailPath::root())?.context("root")?;
    assert_eq!(root.ino, fs::metadata(&scene.jail_dir)?.ino());
    Ok(())
}

/// A character major no driver registered: opening such a node fails (ENXIO), so an
/// operation that opened the node would fail too.
fn unregistered_char_major() -> Result<u64> {
    let devices = fs::read_to_string("/proc/devices")?;
    let section = devices.split("Block devices:").next().unwrap_or_default();
    let used: Vec<u64> = section.lines().filter_map(|line| line.split_whitespace().next()?.parse().ok()).collect();
    (60..=63).chain(120..=127).chain(240..=254).find(|major| !used.contains(major)).context("no free major")
}

#[test]
fn set_attributes_refuses_a_node_swapped_in_after_the_plan_saw_a_directory() -> Result<()> {
    let scene = scene()?;
    let jail = &scene.jail;
    jail.mkdir(&jp("/home"), 0o755, 1000, 1000)?;
    jail.mkdir(&jp("/home/shared"), 0o755, 0, 0)?;
    let seen = jail.stat(&jp("/home/shared"))?.context("missing")?.identity();
    // The jail user swaps its program for the directory.
    jail.write_file(&jp("/home/prog"), &mut &b"#!/bin/sh\n"[..], 0o755, 1000, 1000, None)?;
    let home = scene.jail_dir.join("home");
    renameat2(AT_FDCWD, &home.join("shared"), AT_FDCWD, &home.join("prog"), RenameFlags::RENAME_EXCHANGE)?;
    let error = jail.set_attributes(&jp("/home/shared"), &seen, 0o2775, 0, 0).expect_err("not the directory");
    let changed = error.downcast_ref::<ChangedUnderfoot>().expect("a ChangedUnderfoot");
    assert!(changed.was.starts_with("dir ino ") && changed.now.starts_with("file ino "), "{changed}");
    assert!(changed.to_string().ends_with("; not touched"), "{changed}");
    let program = jail.stat(&jp("/home/shared"))?.context("missing")?;
    assert_eq!((program.mode, program.uid, program.gid), (0o755, 1000, 1000), "the program is untouched");
    // Back in place, the directory itself is changed.
    renameat2(AT_FDCWD, &home.join("shared"), AT_FDCWD, &home.join("prog"), RenameFlags::RENAME_EXCHANGE)?;
    jail.set_attributes(&jp("/home/shared"), &seen, 0o2775, 0, 0)?;
    assert_eq!(jail.stat(&jp("/home/shared"))?.context("missing")?.mode, 0o2775);
    Ok(())
}

#[test]
fn set_attributes_never_opens_the_node() -> Result<()> {
    let scene = scene()?;
    let jail = Arc::new(JailRoot::open(&scene.jail_dir)?);
    jail.set_attributes_now(&JailPath::root(), 0o711, 1000, 1001)?;
    let root = jail.stat(&JailPath::root())?.context("root")?;
    assert_eq!((root.mode, root.uid, root.gid), (0o711, 1000, 1001));
    jail.set_attributes_now(&JailPath::root(), 0o755, 0, 0)?;

    jail.mkdir(&jp("/dev"), 0o755, 0, 0)?;
    let free = unregistered_char_major()?;
    jail.mknod(&jp("/dev/nothing"), NodeKind::CharDevice, makedev(free, 0), 0o600, 0, 0)?;
    assert!(File::open(scene.jail_dir.join("dev/nothing")).is_err(), "opening the node must fail");
    jail.set_attributes_now(&jp("/dev/nothing"), 0o4640, 1000, 1000)?;
    let node = jail.stat(&jp("/dev/nothing"))?.context("missing")?;
    assert_eq!((node.mode, node.uid, node.gid), (0o4640, 1000, 1000));
    let error = jail.open_read(&jp("/dev/nothing")).expect_err("not a regular file");
    assert!(format!("{error:#}").contains("it is a character device, not a regular file"), "{error:#}");

    // A FIFO without a writer blocks whoever opens it for reading: this must not block.
    jail.mknod(&jp("/dev/fifo"), NodeKind::Fifo, 0, 0o600, 0, 0)?;
    let (done, finished) = mpsc::channel();
    let background = Arc::clone(&jail);
    std::thread::spawn(move || {
        let result = background
            .set_attributes_now(&jp("/dev/fifo"), 0o666, 1000, 1000)
            .and_then(|()| background.open_read(&jp("/dev/fifo")).map(drop).err().context("open_read opened a FIFO"));
        let _ = done.send(result.map(|error| format!("{error:#}")));
    });
    let message = finished.recv_timeout(Duration::from_secs(30)).context("blocked on a FIFO")??;
    assert!(message.contains("it is a FIFO, not a regular file"), "{message}");
    assert_eq!(jail.stat(&jp("/dev/fifo"))?.map(|stat| (stat.mode, stat.uid)), Some((0o666, 1000)));

    // A regular file keeps setuid (mode after owner); a directory keeps sticky.
    jail.write_file(&jp("/su"), &mut &b"x"[..], 0o755, 0, 0, None)?;
    jail.set_attributes_now(&jp("/su"), 0o4755, 1000, 1000)?;
    assert_eq!(jail.stat(&jp("/su"))?.map(|stat| (stat.mode, stat.uid)), Some((0o4755, 1000)));
    jail.set_attributes_now(&jp("/dev"), 0o1777, 0, 0)?;
    assert_eq!(jail.stat(&jp("/dev"))?.map(|stat| stat.mode), Some(0o1777));
    assert!(jail.set_attributes_now(&jp("/missing"), 0o755, 0, 0).is_err());
    assert!(jail.set_attributes_now(&jp("/su"), 0o10755, 0, 0).is_err(), "file-type bits are refused");
    Ok(())
}

#[test]
fn chmod_fallbacks_reach_the_inode_of_an_o_path_fd() -> Result<()> {
    let scene = scene()?;
    let path = scene.jail_dir.join("f");
    fs::write(&path, b"x")?;
    let fd = nix::fcntl::open(&path, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())?;
    fchmodat2_fd(fd.as_fd(), 0o4711)?;
    assert_eq!(fs::metadata(&path)?.mode() & 0o7777, 0o4711);
    chmod_through_proc(fd.as_fd(), 0o2750)?;
    assert_eq!(fs::metadata(&path)?.mode() & 0o7777, 0o2750);
    Ok(())
}

#[test]
fn scan_stats_agrees_with_stat_across_subtrees_and_never_follows_a_planted_link() -> Result<()> {
    let scene = scene()?;
    let jail = &scene.jail;
    for dir in ["/a", "/a/b", "/a/b/c", "/a/d", "/e"] {
        jail.mkdir(&jp(dir), 0o755, 0, 0)?;
    }
    for file in ["/a/1", "/a/b/2", "/a/b/c/3", "/a/b.x", "/a/d/4", "/e/5", "/top"] {
        jail.write_file(&jp(file), &mut &b"x"[..], 0o644, 0, 0, None)?;
    }
    // A directory of the jail replaced by a link to the host, as a jailed process could.
    host_symlink(&scene.outside, scene.jail_dir.join("link"))?;
    let mut paths: Vec<JailPath> = [
        "/a",
        "/a/1",
        "/a/b",
        "/a/b/2",
        "/a/b/c",
        "/a/b/c/3",
        "/a/b.x",
        "/a/d",
        "/a/d/4",
        "/a/missing/x",
        "/e",
        "/e/5",
        "/link",
        "/link/secret",
        "/link/sub/file",
        "/top",
    ]
    .into_iter()
    .map(jp)
    .collect();
    paths.sort();
    let refs: Vec<&JailPath> = paths.iter().collect();
    for (path, scanned) in paths.iter().zip(jail.scan_stats(&refs)) {
        let one_by_one = jail.stat(path);
        match (scanned, one_by_one) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{path}"),
            (Err(a), Err(b)) => {
                assert!(a.downcast_ref::<JailError>().is_some(), "{path}: {a:#}");
                assert!(b.downcast_ref::<JailError>().is_some(), "{path}: {b:#}");
            }
            (a, b) => panic!("{path}: scan {a:?} but stat {b:?}"),
        }
    }
    let link_children: Vec<JailPath> = ["/link/secret", "/link/sub/file"].into_iter().map(jp).collect();
    for result in jail.scan_stats(&link_children.iter().collect::<Vec<_>>()) {
        assert!(result.is_err(), "a path under a planted link is never stat'ed through it: {result:?}");
    }
    Ok(())
}

#[test]
fn remove_temp_files_cleans_leftovers_only() -> Result<()> {
    let scene = scene()?;
    let jail = &scene.jail;
    jail.mkdir(&jp("/etc"), 0o755, 0, 0)?;
    let etc = scene.jail_dir.join("etc");
    fs::write(etc.join(".jailprov-tmp-0123456789abcdef"), b"half written")?;
    host_symlink(scene.outside.join("secret"), etc.join(".jailprov-tmp-link"))?;
    nix::unistd::mkfifo(&etc.join(".jailprov-tmp-fifo"), Mode::S_IRUSR)?;
    fs::create_dir(etc.join(".jailprov-tmp-dir"))?;
    fs::write(etc.join("keep"), b"keep")?;
    fs::write(etc.join("x.jailprov-tmp-not-a-prefix"), b"keep")?;
    fs::write(scene.jail_dir.join(".jailprov-tmp-at-root"), b"x")?;
    let before = snapshot(&scene.outside)?;
    assert_eq!(jail.remove_temp_files(&jp("/etc"))?, 3);
    assert_eq!(jail.list(&jp("/etc"))?, vec![".jailprov-tmp-dir", "keep", "x.jailprov-tmp-not-a-prefix"]);
    assert_eq!(jail.remove_temp_files(&JailPath::root())?, 1);
    assert_eq!(jail.list(&JailPath::root())?, vec!["etc"]);
    assert_eq!(jail.remove_temp_files(&jp("/etc"))?, 0);
    assert_eq!(jail.remove_temp_files(&jp("/missing"))?, 0);
    assert_eq!(snapshot(&scene.outside)?, before);
    Ok(())
}

#[test]
fn remove_tree_deletes_symlinks_not_what_they_point_to() -> Result<()> {
    let scene = scene()?;
    let jail = &scene.jail;
    let app = scene.jail_dir.join("opt/app");
    fs::create_dir_all(app.join("sub/deeper"))?;
    fs::write(app.join("a"), b"a")?;
    fs::write(app.join("sub/deeper/c"), b"c")?;
    host_symlink(&scene.outside, app.join("sub/escape"))?;
    host_symlink("../../../../outside", app.join("sub/deeper/escape-relative"))?;
    host_symlink(scene.outside.join("secret"), app.join("secret-link"))?;
    // Links handed to a destructive operation point at the scene's canary directory, never
    // at the real "/": a regression (or a mutation test) must damage only the canary. A link
    // to "/" here once let a bug injected during mutation testing delete files of the host's
    // /etc.
    host_symlink(scene.outside.join(".."), app.join("up-and-out"))?;
    nix::unistd::mkfifo(&app.join("fifo"), Mode::S_IRUSR)?;
    fs::create_dir(app.join("locked"))?;
    fs::write(app.join("locked/inside"), b"x")?;
    fs::set_permissions(app.join("locked"), std::os::unix::fs::PermissionsExt::from_mode(0o000))?;
    assert!(fs::metadata(app.join("sub/escape/secret")).is_ok(), "the trap works");
    let before = snapshot(&scene.outside)?;
    jail.remove_tree(&jp("/opt/app"))?;
    assert_eq!(jail.stat(&jp("/opt/app"))?, None);
    assert_eq!(jail.list(&jp("/opt"))?, Vec::<OsString>::new());
    assert_eq!(snapshot(&scene.outside)?, before, "the host side changed");
    jail.remove_tree(&jp("/opt/app"))?;
    jail.remove_tree(&jp("/missing/app"))?;
    fs::write(scene.jail_dir.join("opt/file"), b"x")?;
    jail.remove_tree(&jp("/opt/file"))?;
    assert_eq!(jail.stat(&jp("/opt/file"))?, None);
    assert!(jail.remove_tree(&JailPath::root()).is_err());
    Ok(())
}

#[test]
fn bind_mounts_are_crossed_for_writes_but_never_emptied_by_remove_tree() -> Result<()> {
    let scene = scene()?;
    on_own_thread(CloneFlags::CLONE_NEWNS, move || {
        mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)?;
        let target = scene.jail_dir.join("opt/app/mnt");
        fs::create_dir_all(&target)?;
        mount(Some(&scene.outside), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
        let outcome = (|| -> Result<()> {
            // Opened in this mount namespace: an fd opened before the unshare keeps walking
            // the old namespace's mounts, where the bind mount does not exist.
            let jail = JailRoot::open(&scene.jail_dir)?;
            // A legitimate bind mount inside the jail is written through.
            jail.mkdir(&jp("/opt/app/mnt/made-inside"), 0o755, 0, 0)?;
            assert!(scene.outside.join("made-inside").is_dir());
            let before = snapshot(&scene.outside)?;
            let error = jail.remove_tree(&jp("/opt/app")).expect_err("a mount point inside the tree");
            assert!(format!("{error:#}").contains("/opt/app/mnt is a mount point"), "{error:#}");
            let error = jail.remove_tree(&jp("/opt/app/mnt")).expect_err("the tree is a mount point");
            assert!(format!("{error:#}").contains("is a mount point"), "{error:#}");
            assert_eq!(snapshot(&scene.outside)?, before, "the mounted directory was emptied");
            Ok(())
        })();
        umount2(&target, MntFlags::MNT_DETACH)?;
        outcome
    })
}

#[test]
fn racing_a_parent_against_a_symlink_never_reaches_outside() -> Result<()> {
    let scene = scene()?;
    fs::create_dir(scene.jail_dir.join("usr"))?;
    host_symlink(&scene.outside, scene.jail_dir.join("usr-swap"))?;
    let before = snapshot(&scene.outside)?;
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let stop = Arc::clone(&stop);
        let (dir, link) = (scene.jail_dir.join("usr"), scene.jail_dir.join("usr-swap"));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = renameat2(AT_FDCWD, &dir, AT_FDCWD, &link, RenameFlags::RENAME_EXCHANGE);
            }
        })
    };
    let (mut written, mut refused) = (0, 0);
    let started = Instant::now();
    let mut round = 0;
    while round < 300 || ((written == 0 || refused == 0) && started.elapsed() < Duration::from_secs(20)) {
        round += 1;
        let name = format!("/usr/f{round}");
        match scene.jail.write_file(&jp(&name), &mut &b"x"[..], 0o644, 0, 0, None) {
            Ok(_) => written += 1,
            Err(error) if symlink_in_path(&error).is_some() => refused += 1,
            Err(error) => return Err(error),
        }
        let _ = scene.jail.mkdir(&jp(&format!("/usr/d{round}")), 0o755, 0, 0);
        let _ = scene.jail.symlink(&jp(&format!("/usr/l{round}")), "x", 0, 0);
        assert!(scene.jail.set_attributes_now(&jp("/usr/secret"), 0o777, 1000, 1000).is_err());
        assert!(!matches!(scene.jail.remove_file(&jp("/usr/secret")), Ok(true)));
    }
    stop.store(true, Ordering::Relaxed);
    if attacker.join().is_err() {
        bail!("the attacker thread panicked");
    }
    assert!(written > 0 && refused > 0, "the race was not exercised: {written} written, {refused} refused");
    assert_eq!(snapshot(&scene.outside)?, before, "a write went through the swapped-in symlink");
    Ok(())
}
