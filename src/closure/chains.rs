//! Every chain that brings a path into the jail (`why --all`), and the bare names `why` accepts.

use std::collections::BTreeSet;

use super::origin::shown_once;
use super::{Closure, Entry, EntryKind, Why};
use crate::tree::JailPath;

/// The most chains `why --all` enumerates: libc hangs on every object of a big jail, and the
/// ways up to the Jailfile multiply with each level.
pub const MAX_CHAINS: usize = 200;

impl Closure {
    /// Every chain from a Jailfile declaration (or a reason of jailprov's own) to `path`, shortest
    /// first, at most [`MAX_CHAINS`] (and so a count that may be short of the true one when
    /// it reaches that). None when the path is not in the jail.
    pub fn why_all(&self, path: &JailPath) -> Option<Vec<Why<'_>>> {
        let start = self.lookup(path)?;
        let mut found = Vec::new();
        let mut on_chain = vec![start];
        self.extend_chains(&mut on_chain, &mut found);
        // Stable: among chains of one length, the order the origins are listed in.
        found.sort_by_key(|why| why.entries.len());
        Some(found)
    }

    /// Depth first from the last entry of `on_chain`: each origin either ends a chain (it hangs on
    /// no entry of the jail) or continues it through the entry it hangs on, never twice through
    /// one entry.
    fn extend_chains<'a>(&'a self, on_chain: &mut Vec<&'a Entry>, found: &mut Vec<Why<'a>>) {
        let Some(last) = on_chain.last().copied() else { return };
        for origin in shown_once(&last.origins) {
            if found.len() >= MAX_CHAINS {
                return;
            }
            match origin.needer().and_then(|needer| self.entries.get(needer)) {
                Some(needer) if on_chain.iter().any(|entry| entry.path == needer.path) => {}
                Some(needer) => {
                    on_chain.push(needer);
                    self.extend_chains(on_chain, found);
                    on_chain.pop();
                }
                None => found.push(Why { entries: on_chain.clone(), origin: origin.reason() }),
            }
        }
    }

    /// The jail paths a bare name stands for, as the lock and `ldd` name libraries: entries
    /// loaded under that soname, or whose file name it is (symlinks left out: `why` follows
    /// them to what they name).
    pub fn named(&self, name: &str) -> Vec<&JailPath> {
        let mut paths = BTreeSet::new();
        for entry in self.entries.values() {
            let file_name = entry.path.as_str().rsplit('/').next().unwrap_or_default();
            if entry.sonames.contains(name) || (file_name == name && entry.kind != EntryKind::Symlink) {
                paths.insert(&entry.path);
            }
        }
        paths.into_iter().collect()
    }

    /// The closure's paths strictly below `dir`, in order: why a directory nobody declared is
    /// created (every parent of a path is).
    pub fn below(&self, dir: &JailPath) -> Vec<&JailPath> {
        let prefix = if dir.as_str() == "/" { "/".to_owned() } else { format!("{}/", dir.as_str()) };
        self.entries.keys().filter(|path| path.as_str().starts_with(&prefix)).collect()
    }
}
