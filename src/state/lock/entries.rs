//! The lock entries of what the host gives now: host sources hashed (or taken from the cache
//! while their stat print holds), and one entry per desired node.

use std::io::Read;

use anyhow::{Context, Result};
use rayon::prelude::*;

use crate::closure::EntryKind;
use crate::desired::{ClosureFacts, DesiredKind, DesiredNode, DesiredTree};
use crate::host::HostFs;

use super::cache::{source_key, KnownHashes, SourceHash, SourceKey};
use super::format::{LockEntry, HASH_ALGORITHM};

/// blake3 of a whole file.
pub fn hash_reader(reader: &mut dyn Read) -> std::io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            return Ok(*hasher.finalize().as_bytes());
        }
        hasher.update(&buffer[..read]);
    }
}

pub fn hash_text(hash: &[u8; 32]) -> String {
    format!("{HASH_ALGORITHM}:{}", blake3::Hash::from_bytes(*hash).to_hex())
}

/// A host source's hash, and whether it had to be read for it (nothing known matched its stat).
#[derive(Debug, Clone, Copy)]
pub(super) struct HashedSource {
    pub(super) source: SourceHash,
    pub(super) read: bool,
}

/// The hash of the host source of each of `nodes` (None for nodes that copy no host file):
/// known where the stat print still matches, read otherwise (in parallel).
pub(super) fn hash_sources(
    nodes: &[&DesiredNode],
    host: &HostFs,
    known: &KnownHashes,
) -> Result<Vec<Option<HashedSource>>> {
    nodes
        .par_iter()
        .map(|node| {
            let DesiredKind::File { source, source_print } = &node.kind else { return Ok(None) };
            let key = source_key(source);
            if let Some(hash) = known.get(&key, source_print) {
                return Ok(Some(HashedSource { source: SourceHash { key, print: *source_print, hash }, read: false }));
            }
            let mut file =
                host.open(source).with_context(|| format!("cannot read {} on the host", source.display()))?;
            let hash = hash_reader(&mut file).with_context(|| format!("cannot read {}", source.display()))?;
            // The stat is the one the desired tree saw: if the file changed since, the next run
            // sees another stat and hashes it again.
            Ok(Some(HashedSource { source: SourceHash { key, print: *source_print, hash }, read: true }))
        })
        .collect()
}

/// The keys of every host source of the jail: what the store keeps.
pub(super) fn source_keys(desired: &DesiredTree) -> rustc_hash::FxHashSet<SourceKey> {
    let keys: Vec<SourceKey> = desired
        .nodes
        .par_iter()
        .filter_map(|(_, node)| match &node.kind {
            DesiredKind::File { source, .. } => Some(source_key(source)),
            _ => None,
        })
        .collect();
    keys.into_iter().collect()
}

/// The lock entry of a node; `hash` is its host source's (for a node that copies one).
pub(super) fn entry_of(node: &DesiredNode, facts: &ClosureFacts, hash: Option<&[u8; 32]>) -> LockEntry {
    let known = facts.facts.get(&node.path);
    let kind = match (known, &node.kind) {
        (Some(facts), _) => facts.kind.label(),
        (None, DesiredKind::File { .. }) => EntryKind::File.label(),
        (None, DesiredKind::Content { .. }) => EntryKind::Content.label(),
        (None, DesiredKind::Dir) => EntryKind::Dir.label(),
        (None, DesiredKind::Symlink { .. }) => EntryKind::Symlink.label(),
        (None, DesiredKind::Device { .. }) => EntryKind::Device.label(),
    };
    let mut entry = LockEntry {
        path: node.path.as_str().to_owned(),
        kind: kind.to_owned(),
        source: None,
        size: None,
        mode: None,
        owner: None,
        hash: None,
        target: None,
        device: None,
        sonames: known.map(|facts| facts.sonames.clone()).unwrap_or_default(),
        needed_by: known.map(|facts| facts.needed_by.clone()).unwrap_or_default(),
        package: None,
    };
    if !matches!(node.kind, DesiredKind::Symlink { .. }) {
        entry.mode = Some(format!("{:04o}", node.mode));
        if (node.uid, node.gid) != (0, 0) {
            entry.owner = Some(format!("{}:{}", node.uid, node.gid));
        }
    }
    match &node.kind {
        DesiredKind::File { source, source_print } => {
            entry.source = Some(source.to_string_lossy().into_owned());
            entry.size = Some(source_print.size);
            entry.hash = hash.map(hash_text);
        }
        DesiredKind::Content { bytes } => {
            entry.size = Some(bytes.len() as u64);
            entry.hash = Some(hash_text(blake3::hash(bytes).as_bytes()));
        }
        DesiredKind::Symlink { target } => {
            entry.source = known.and_then(|facts| facts.source.clone());
            entry.target = Some(target.clone());
        }
        DesiredKind::Device { block, rdev } => {
            let letter = if *block { 'b' } else { 'c' };
            entry.device = Some(format!("{letter} {}:{}", nix::sys::stat::major(*rdev), nix::sys::stat::minor(*rdev)));
        }
        DesiredKind::Dir => {}
    }
    entry
}
