//! Which jail root each Jailfile was last applied to, so that a command aimed at another root
//! can say so (`apply --root B`, then a plain `plan` looks at the Jailfile's own root).
//!
//! The records are keyed by jail root (one file per root); this keeps the other direction: one
//! small file per Jailfile under the state directory, `applied-<hash of its absolute path>`,
//! holding that path and the root. Only apply writes it; a missing or unreadable one is no
//! record (a rootless `plan` cannot read /var/lib/jailprov, and that is no error).
#![allow(clippy::disallowed_methods)] // the state directory, outside every jail

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::StateStore;

/// What one `applied-…` file says.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct AppliedTo {
    jailfile: PathBuf,
    root: PathBuf,
}

/// The Jailfile as one name whichever way it was spelled (`-f ./x`, `-f /abs/x`).
fn absolute(jailfile: &Path) -> PathBuf {
    std::fs::canonicalize(jailfile).or_else(|_| std::path::absolute(jailfile)).unwrap_or_else(|_| jailfile.to_owned())
}

fn record_file(state_dir: &Path, jailfile: &Path) -> PathBuf {
    let hash = blake3::hash(jailfile.as_os_str().as_encoded_bytes());
    state_dir.join(format!("applied-{}", &hash.to_hex()[..16]))
}

/// Notes that `jailfile` was just applied to `root` (after the apply, in its state directory).
pub fn record(state_dir: &Path, jailfile: &Path, root: &Path) -> Result<()> {
    let jailfile = absolute(jailfile);
    let text = serde_json::to_string(&AppliedTo { jailfile: jailfile.clone(), root: root.to_owned() })?;
    crate::beside::write_atomically(&record_file(state_dir, &jailfile), text.as_bytes(), 0o600, false)
}

/// The root `jailfile` was last applied to when that is not `root` and that jail is still
/// applied (it has a record in `state_dir`); None otherwise, or when nothing is known.
pub fn other_root(state_dir: &Path, jailfile: &Path, root: &Path) -> Option<PathBuf> {
    let jailfile = absolute(jailfile);
    let text = std::fs::read_to_string(record_file(state_dir, &jailfile)).ok()?;
    let applied: AppliedTo = serde_json::from_str(&text).ok()?;
    let still_applied = || StateStore::for_root(state_dir, &applied.root).state_file.exists();
    (applied.jailfile == jailfile && applied.root != root && still_applied()).then_some(applied.root)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        record(&state_dir, &jailfile, a).expect("record a");
        assert_eq!(other_root(&state_dir, &jailfile, a), None, "last applied to a");
    }
}
