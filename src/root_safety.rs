//! Refuses jail roots a non-root user could move or swap: "/", symlinks, unsafe ancestors.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

const STICKY: u32 = 0o1000;

/// Checks the jail root and every directory above it. A non-root owner, or group/other write
/// permission without the sticky bit, lets someone rename the jail away and put a symlink to a
/// host directory in its place between two jailprov runs.
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
        check_directory(root, &metadata, root)?;
    }
    let mut ancestor = root.parent();
    while let Some(dir) = ancestor {
        if let Ok(metadata) = std::fs::metadata(dir) {
            // Symlinks above the root are followed: what matters is the directory they reach.
            let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
            check_directory(&real, &metadata, root)?;
        }
        ancestor = dir.parent();
    }
    Ok(())
}

fn check_directory(dir: &Path, metadata: &std::fs::Metadata, root: &Path) -> Result<()> {
    let mode = metadata.mode();
    if metadata.uid() != 0 {
        bail!(
            "{} (above or at the jail root {}) is owned by uid {}, who could replace the jail with a link to the host; use a root-owned location (or --unsafe-root if you accept that)",
            dir.display(),
            root.display(),
            metadata.uid()
        );
    }
    if mode & 0o022 != 0 && mode & STICKY == 0 {
        bail!(
            "{} (above or at the jail root {}) is writable by {} without the sticky bit, so others could swap the jail for a link to the host (or pass --unsafe-root)",
            dir.display(),
            root.display(),
            if mode & 0o020 != 0 { "its group" } else { "everyone" }
        );
    }
    Ok(())
}

/// Creates the jail root (and missing parents) root-owned with mode 0755.
#[allow(clippy::disallowed_methods)] // the root itself and its parents are outside the jail
pub fn create_root(root: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(root)
        .with_context(|| format!("cannot create the jail root {}", root.display()))
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
}
