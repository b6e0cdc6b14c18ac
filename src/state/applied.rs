//! Which jail roots a Jailfile is applied to, so that a command aimed at another root can say so
//! (`apply --root B`, then a plain `plan` looks at the Jailfile's own root).
//!
//! The records are keyed by jail root; each has an origin beside it (the Jailfile applied to it,
//! its root, when — written by apply, read by `status`). This reads them the other way: every
//! origin in the state directory that names this Jailfile. A missing or unreadable one is no
//! record (a rootless `plan` cannot read /var/lib/jailprov, and that is no error).
#![allow(clippy::disallowed_methods)] // the state directory, outside every jail

use std::path::{Path, PathBuf};

use super::{jailfile_name, read_origin, StateStore};

/// The root `jailfile` was last applied to (its newest origin) when that is not `root` and that
/// jail is still applied (it has a record in `state_dir`); None otherwise, or when nothing is known.
pub fn other_root(state_dir: &Path, jailfile: &Path, root: &Path) -> Option<PathBuf> {
    let jailfile = jailfile_name(jailfile);
    // Newest by the origin file's mtime: applies of one Jailfile to two roots in one second are
    // still told apart (applied_at counts seconds, for people).
    let (_, last) = std::fs::read_dir(state_dir)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "origin"))
        .filter_map(|path| {
            let written = std::fs::symlink_metadata(&path).and_then(|metadata| metadata.modified()).ok()?;
            let origin = read_origin(&path).ok()??;
            (origin.jailfile == jailfile).then_some((written, origin.root?))
        })
        .max()?;
    let still_applied = StateStore::for_root(state_dir, &last).state_file.exists();
    (last != root && still_applied).then_some(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state_dir: &Path, jailfile: &Path, root: &Path) -> anyhow::Result<()> {
        StateStore::for_root(state_dir, root).write_origin(jailfile, root)
    }

    #[test]
    fn the_last_root_applied_to_is_named_only_when_another_is_targeted_and_it_is_still_applied() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (state_dir, jailfile) = (tmp.path().join("state"), tmp.path().join("Jailfile.toml"));
        std::fs::create_dir(&state_dir).expect("state dir");
        std::fs::write(&jailfile, "").expect("Jailfile");
        let (a, b) = (Path::new("/srv/jails/a"), Path::new("/srv/jails/b"));
        assert_eq!(other_root(&state_dir, &jailfile, a), None, "never applied");
        record(&state_dir, &jailfile, b).expect("record");
        assert_eq!(other_root(&state_dir, &jailfile, a), None, "b has no state record: destroyed");
        std::fs::write(StateStore::for_root(&state_dir, b).state_file, "").expect("b's record");
        assert_eq!(other_root(&state_dir, &jailfile, a), Some(b.to_owned()));
        assert_eq!(other_root(&state_dir, &jailfile, b), None, "b is the one targeted");
        let spelled_otherwise = tmp.path().join(".").join("Jailfile.toml");
        assert_eq!(other_root(&state_dir, &spelled_otherwise, a), Some(b.to_owned()));
        // Past the file system's timestamp granularity: a's origin is the newer one.
        std::thread::sleep(std::time::Duration::from_millis(20));
        record(&state_dir, &jailfile, a).expect("record a");
        assert_eq!(other_root(&state_dir, &jailfile, a), None, "last applied to a");
    }
}
