//! Line digests: what each lock line is made of, condensed, so a review finds the lines that
//! changed without building them; and the key of a lock found fresh.

use crate::desired::{ClosureFacts, DesiredKind, DesiredNode, DesiredTree, PathFacts};
use crate::host::{HostFs, StatPrint};

use super::format::{os_release, LOCK_VERSION};

/// The key the line digests are computed with. Change its context string whenever what
/// [`entry_of`](super::entries::entry_of) reads or how a [`LockEntry`](super::format::LockEntry) is
/// written changes: a memo of the old meaning must then match nothing.
fn line_digest_key() -> &'static [u8; 32] {
    static KEY: std::sync::LazyLock<[u8; 32]> =
        std::sync::LazyLock::new(|| blake3::derive_key("jailprov Jailfile.lock entry line, format 1", b""));
    &KEY
}

/// The desired nodes in lock order, each written out once as the bytes its lock line is made of
/// ([`node_bytes`]: everything [`entry_of`](super::entries::entry_of) reads for it, the host
/// source's stat print standing in for its content hash). The fresh key hashes all of them in one
/// go, on every plan; the line digests hash them one by one, only when the lock is not found fresh.
pub(super) struct DesiredLines<'a> {
    pub(super) nodes: Vec<&'a DesiredNode>,
    /// The nodes' bytes, one buffer per thread's share of them.
    shares: Vec<NodeBytes>,
    /// The first node that copies a libc.so.6 ([`host_fingerprint`](super::format::host_fingerprint) takes its glibc).
    pub(super) libc: Option<usize>,
    digests: std::sync::OnceLock<Vec<u128>>,
}

/// The bytes of consecutive nodes, and where each node's end.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct NodeBytes {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl NodeBytes {
    pub(super) fn nodes(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(start, end)| &self.bytes[start..*end])
    }
}

/// The work of one thread per core over consecutive shares of `items`, results in order. On
/// threads of its own rather than rayon's: the review runs beside plan compute, whose rayon jobs
/// would be served first, and the review is the longer of the two.
fn per_share<T: Sync, R: Send>(items: &[T], work: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from).clamp(1, 8);
    let share = items.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let work = &work;
        let workers: Vec<_> = items.chunks(share).map(|items| scope.spawn(move || work(items))).collect();
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}

pub(super) fn desired_lines<'a>(desired: &'a DesiredTree, facts: &ClosureFacts) -> DesiredLines<'a> {
    let nodes: Vec<&DesiredNode> = desired.nodes.values().collect();
    let (shares, libc): (Vec<NodeBytes>, Vec<Vec<bool>>) =
        per_share(&nodes, |nodes| share_bytes(nodes, facts)).into_iter().unzip();
    let libc = libc.iter().flatten().position(|libc| *libc);
    DesiredLines { nodes, shares, libc, digests: std::sync::OnceLock::new() }
}

/// The bytes of consecutive nodes, and which copy a libc.so.6 (noted while the node is at hand:
/// a second walk of 50,000 nodes costs milliseconds). The facts are met by walking them
/// alongside, both being sorted by path (cheaper than hashing every path to look it up).
pub(super) fn share_bytes(nodes: &[&DesiredNode], facts: &ClosureFacts) -> (NodeBytes, Vec<bool>) {
    let Some(first) = nodes.first() else { return (NodeBytes::default(), Vec::new()) };
    let mut facts = facts.facts.range(&first.path..).peekable();
    let mut share = NodeBytes { bytes: Vec::with_capacity(nodes.len() * 128), ends: Vec::with_capacity(nodes.len()) };
    let libc = nodes
        .iter()
        .map(|node| {
            while facts.next_if(|(path, _)| **path < node.path).is_some() {}
            let known = facts.peek().filter(|(path, _)| **path == node.path).map(|(_, facts)| *facts);
            node_bytes(node, known, &mut share.bytes);
            share.ends.push(share.bytes.len());
            matches!(node.kind, DesiredKind::File { .. }) && node.path.file_name() == "libc.so.6"
        })
        .collect();
    (share, libc)
}

impl DesiredLines<'_> {
    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The digest of each node's lock line, in lock order: 128 bits of blake3 of its bytes,
    /// keyed. The package is not in it: it is carried over from the old lock. Equal digests give
    /// equal lines, so a review after a few host changes re-derives only the lines whose digest
    /// moved.
    pub(super) fn digests(&self) -> &[u128] {
        self.digests.get_or_init(|| {
            let _t = crate::timings::phase("lock: line digests");
            let per_share = per_share(&self.shares, |shares| {
                shares.iter().flat_map(NodeBytes::nodes).map(line_digest).collect::<Vec<u128>>()
            });
            per_share.into_iter().flatten().collect()
        })
    }
}

pub(super) fn line_digest(bytes: &[u8]) -> u128 {
    let hash = blake3::keyed_hash(line_digest_key(), bytes);
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&hash.as_bytes()[..16]);
    u128::from_le_bytes(digest)
}

/// A node and its closure facts as bytes, every variable-length field length-prefixed so that
/// no two nodes give the same bytes. Kept short (most nodes fit two blake3 blocks): a host
/// source named like its jail path is not written twice, times that fit 64 bits take 64.
pub(super) fn node_bytes(node: &DesiredNode, facts: Option<&PathFacts>, bytes: &mut Vec<u8>) {
    fn field(bytes: &mut Vec<u8>, value: &[u8]) {
        // No path or list item reaches 4 GiB.
        bytes.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_le_bytes());
        bytes.extend_from_slice(value);
    }
    let path = node.path.as_str().as_bytes();
    field(bytes, path);
    bytes.extend_from_slice(&node.mode.to_le_bytes());
    bytes.extend_from_slice(&node.uid.to_le_bytes());
    bytes.extend_from_slice(&node.gid.to_le_bytes());
    match &node.kind {
        DesiredKind::File { source, source_print } => {
            let source = source.as_os_str().as_encoded_bytes();
            if source == path {
                bytes.push(b'=');
            } else {
                bytes.push(b'f');
                field(bytes, source);
            }
            bytes.extend_from_slice(&source_print.size.to_le_bytes());
            match (i64::try_from(source_print.mtime_ns), i64::try_from(source_print.ctime_ns)) {
                (Ok(mtime), Ok(ctime)) => {
                    bytes.push(8);
                    bytes.extend_from_slice(&mtime.to_le_bytes());
                    bytes.extend_from_slice(&ctime.to_le_bytes());
                }
                _ => {
                    bytes.push(16);
                    bytes.extend_from_slice(&source_print.mtime_ns.to_le_bytes());
                    bytes.extend_from_slice(&source_print.ctime_ns.to_le_bytes());
                }
            }
            bytes.extend_from_slice(&source_print.ino.to_le_bytes());
        }
        DesiredKind::Content { bytes: content } => {
            bytes.push(b'c');
            field(bytes, content);
        }
        DesiredKind::Dir => bytes.push(b'd'),
        DesiredKind::Symlink { target } => {
            bytes.push(b'l');
            field(bytes, target.as_bytes());
        }
        DesiredKind::Device { block, rdev } => {
            bytes.push(if *block { b'b' } else { b'v' });
            bytes.extend_from_slice(&rdev.to_le_bytes());
        }
    }
    match facts {
        None => bytes.push(0),
        Some(facts) => {
            bytes.push(1);
            field(bytes, facts.kind.label().as_bytes());
            match &facts.source {
                None => bytes.push(0),
                Some(source) => {
                    bytes.push(1);
                    field(bytes, source.as_bytes());
                }
            }
            for list in [&facts.sonames, &facts.needed_by] {
                bytes.extend_from_slice(&u32::try_from(list.len()).unwrap_or(u32::MAX).to_le_bytes());
                for item in list {
                    field(bytes, item.as_bytes());
                }
            }
        }
    }
}

/// The key of "this lock file was found fresh for this desired tree": every node's bytes (host
/// sources by stat print), the lock file's stat print, the normalized Jailfile, os-release and
/// the architecture. glibc's version is covered by libc.so.6's stat print among the nodes'.
pub(super) fn fresh_key(lines: &DesiredLines, jailfile: &str, lock_stat: Option<StatPrint>, host: &HostFs) -> [u8; 32] {
    // The nodes' bytes in a few large updates, which blake3 hashes many chunks at a time: this
    // runs on every no-op plan. (Node bytes delimit themselves; the rest is length-prefixed.)
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(lines.len() as u64).to_le_bytes());
    for share in &lines.shares {
        hasher.update(&share.bytes);
    }
    let rest = [format!("{lock_stat:?}"), jailfile.to_owned(), os_release(host), std::env::consts::ARCH.to_owned()];
    for part in rest.iter().map(String::as_bytes).chain([&LOCK_VERSION.to_le_bytes()[..]]) {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    *hasher.finalize().as_bytes()
}
