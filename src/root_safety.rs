//! Refuses jail roots a non-root user could move or swap: "/", symlinks, unsafe ancestors, a
//! root directory someone else made.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, mkdirat, Mode};

use crate::jail_root::JailRoot;

const STICKY: u32 = 0o1000;

/// Checks the jail root and every directory above it, as written and as they really are (a
/// symlink above the root is followed, and each real directory it leads through is checked:
/// `/srv/jails -> /home/bob/jails` is bob's to swap however root-owned `/srv/jails` looks). A
/// non-root owner, or group/other write permission without the sticky bit, lets someone rename
/// the jail away and put a symlink to a host directory in its place between two jailprov runs.
pub fn check(root: &Path) -> Result<()> {
    if root == Path::new("/") || !root.is_absolute() {
        bail!("the jail root must be an absolute directory other than /, not {}", root.display());
    }
    if let Ok(metadata) = std::fs::symlink_metadata(root) {
        if metadata.file_type().is_symlink() {
            bail!("the jail root {} is a symlink; name the real directory", root.display());
        }
        if !metadata.is_dir() {
            bail!("the jail root {} exists and is not a directory", root.display());
        }
        check_directory(root, None, &metadata, root)?;
    }
    let mut checked = BTreeSet::new();
    for written in root.ancestors().skip(1) {
        // Not there yet: create_root makes it, root-owned, under ancestors checked here.
        let Ok(real) = std::fs::canonicalize(written) else { continue };
        for dir in real.ancestors() {
            if !checked.insert(dir.to_path_buf()) {
                continue;
            }
            let metadata =
                std::fs::symlink_metadata(dir).with_context(|| format!("cannot inspect {}", dir.display()))?;
            let reached_through = (real != written).then_some(written);
            check_directory(dir, reached_through, &metadata, root)?;
        }
    }
    Ok(())
}

/// `dir` is a real directory (no symlink in it); `reached_through` the path as written above
/// the root that led there through a symlink, for the message.
fn check_directory(
    dir: &Path,
    reached_through: Option<&Path>,
    metadata: &std::fs::Metadata,
    root: &Path,
) -> Result<()> {
    let mode = metadata.mode();
    let place = match reached_through {
        Some(written) => {
            format!("reached through the symlink {} above the jail root {}", written.display(), root.display())
        }
        None => format!("above or at the jail root {}", root.display()),
    };
    if metadata.uid() != 0 {
        bail!(
            "{} ({place}) is owned by uid {}, who could replace the jail with a link to the host; use a root-owned location (or --unsafe-root if you accept that)",
            dir.display(),
            metadata.uid()
        );
    }
    if mode & 0o022 != 0 && mode & STICKY == 0 {
        bail!(
            "{} ({place}) is writable by {} without the sticky bit, so others could swap the jail for a link to the host (or pass --unsafe-root)",
            dir.display(),
            if mode & 0o020 != 0 { "its group" } else { "everyone" }
        );
    }
    Ok(())
}

/// Creates the jail root (missing parents root-owned 0755) and opens it. The root itself is made
/// by mkdirat in its parent; one that exists already (made a moment ago by someone racing this
/// apply, say) must be a directory owned by root that no one else can write to, checked on the
/// opened directory, not by path. `unsafe_root` (`--unsafe-root`) skips that check.
pub fn create_root(root: &Path, unsafe_root: bool) -> Result<JailRoot> {
    let parent = root
        .parent()
        .filter(|_| root.is_absolute())
        .ok_or_else(|| anyhow!("the jail root must be an absolute directory other than /, not {}", root.display()))?;
    let name = root.file_name().ok_or_else(|| anyhow!("the jail root {} names no directory", root.display()))?;
    create_parents(parent)?;
    let failed = || format!("cannot create the jail root {}", root.display());
    let parent_fd = nix::fcntl::open(parent, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|errno| anyhow!("cannot open {}: {errno}", parent.display()))
        .with_context(failed)?;
    match mkdirat(&parent_fd, name, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(errno) => return Err(anyhow!("{errno}")).with_context(failed),
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(&parent_fd, name, flags, Mode::empty()).map_err(|errno| match errno {
        Errno::ELOOP | Errno::ENOTDIR => {
            anyhow!("the jail root {} is not a directory (a symlink or file took its place)", root.display())
        }
        errno => anyhow!("cannot open the jail root {}: {errno}", root.display()),
    })?;
    let jail = JailRoot::from_directory_fd(fd, root)?;
    if !unsafe_root {
        check_opened(&jail)?;
    }
    Ok(jail)
}

/// The jail root's owner and mode, read from its open directory (whatever the path names now):
/// owned by root and writable by no one else, or a user could plant what apply then takes over.
pub fn check_opened(jail: &JailRoot) -> Result<()> {
    let root = jail.host_path();
    let stat =
        fstat(jail.as_fd()).map_err(|errno| anyhow!("cannot inspect the jail root {}: {errno}", root.display()))?;
    if stat.st_uid != 0 {
        bail!(
            "the jail root {} is owned by uid {}, not root: someone else made it, and could swap what jailprov writes there; remove it (or pass --unsafe-root if you accept that)",
            root.display(),
            stat.st_uid
        );
    }
    if stat.st_mode & 0o022 != 0 {
        bail!(
            "the jail root {} has mode {:04o}: others could plant files for jailprov to take over; chmod go-w it (or pass --unsafe-root)",
            root.display(),
            stat.st_mode & 0o7777
        );
    }
    Ok(())
}

/// The directories above the jail root that do not exist yet, root-owned 0755.
#[allow(clippy::disallowed_methods)] // the root's parents are outside the jail
fn create_parents(parent: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(parent)
        .with_context(|| format!("cannot create {}, the jail root's parent", parent.display()))
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests build their fixtures with plain fs calls
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn slash_and_symlink_roots_are_refused() {
        assert!(check(Path::new("/")).is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).expect("symlink");
        let error = check(&link).expect_err("a symlink root");
        assert!(error.to_string().contains("is a symlink"), "{error}");
    }

    #[test]
    fn group_writable_ancestor_without_sticky_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).expect("mkdir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o775)).expect("chmod");
        let error = check(&shared.join("jail")).expect_err("unsafe ancestor");
        assert!(error.to_string().contains(&shared.display().to_string()), "{error}");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        check(&shared.join("jail")).expect("sticky like /tmp is fine");
    }

    #[test]
    fn non_root_owner_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED non_root_owner_is_refused: needs root to chown a directory to uid 1000");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("bob");
        std::fs::create_dir(&home).expect("mkdir");
        nix::unistd::chown(&home, Some(nix::unistd::Uid::from_raw(1000)), None).expect("chown (tests run as root)");
        let error = check(&home.join("jail")).expect_err("bob could swap it");
        assert!(error.to_string().contains("owned by uid 1000"), "{error}");
    }

    #[test]
    fn root_created_by_a_user_in_the_meantime_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED root_created_by_a_user_in_the_meantime_is_refused: needs root to chown");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        // Absent when `check` ran; bob made it before apply got to create it.
        let root = dir.path().join("jail");
        check(&root).expect("a safe place, nothing there yet");
        std::fs::create_dir(&root).expect("mkdir");
        nix::unistd::chown(&root, Some(nix::unistd::Uid::from_raw(1000)), None).expect("chown (tests run as root)");
        let error = create_root(&root, false).expect_err("bob's directory is no jail root");
        assert!(error.to_string().contains("owned by uid 1000"), "{error}");
        // Root's own, but open to all: as bad.
        nix::unistd::chown(&root, Some(nix::unistd::Uid::from_raw(0)), None).expect("chown back");
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let error = create_root(&root, false).expect_err("a world-writable jail root");
        assert!(error.to_string().contains("mode 0777"), "{error}");
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        create_root(&root, false).expect("a root-owned 0755 directory is fine");
        let fresh = dir.path().join("deeper/jail");
        create_root(&fresh, false).expect("made here");
        let made = std::fs::metadata(&fresh).expect("stat");
        assert_eq!((made.uid(), made.mode() & 0o7777), (0, 0o755));
    }

    #[test]
    fn symlinked_ancestor_whose_real_parent_a_user_owns_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED symlinked_ancestor_whose_real_parent_a_user_owns_is_refused: needs root to chown");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("bob");
        std::fs::create_dir_all(home.join("jails")).expect("mkdir");
        nix::unistd::chown(&home, Some(nix::unistd::Uid::from_raw(1000)), None).expect("chown (tests run as root)");
        let link = dir.path().join("jails");
        std::os::unix::fs::symlink(home.join("jails"), &link).expect("symlink");
        let error = check(&link.join("jail")).expect_err("bob can swap bob/jails");
        let text = error.to_string();
        assert!(
            text.contains(&format!("{} (reached through the symlink {}", home.display(), link.display())),
            "{text}"
        );
        assert!(text.contains("owned by uid 1000"), "{text}");
    }
}
