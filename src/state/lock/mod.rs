//! Jailfile.lock: the exact contents a Jailfile gives on this host, committed beside it, and the
//! host drift found against it.
//!
//! The lock is JSON with one entry per line, sorted by jail path, so a review diff shows one
//! line per changed path. It holds only what is the same on every host that gives the same files
//! (paths, kinds, sources, sizes, modes, blake3 content hashes, symlink text, sonames, who needed
//! them, dpkg package versions, a digest of the normalized Jailfile and a host fingerprint): no
//! timestamps, inode numbers or ctimes, so two runs on an unchanged host write the same bytes and
//! the lock can be committed and shared.
//!
//! Hashing every file on every plan would turn a no-op plan (a stat walk) into a read of the
//! whole jail. So a per-host accelerator lives outside the repository, in the state directory
//! (`--state-dir`), keyed by the lock's absolute path: for each host source its stat print
//! (size, mtime, ctime, inode) and blake3, the key of the last (desired tree, lock file) pair
//! found fresh, and a memo of the lock file's lines (the digest of what each line was made from,
//! as of the lock file's stat print), so that after a few host changes a review looks at those
//! lines only. A stat match means "hash unchanged"; anything else is re-hashed. The cache is
//! never trusted beyond that: when it is missing, foreign-owned or unreadable, everything is
//! hashed again, and a lock file that is not the one the memo describes is reviewed in full.
//!
//! The files, in the order a review uses them: `format` (the lock's text, header, digest and
//! fingerprint), `cache` (the per-host cache), `entries` (hashing sources into entries),
//! `packages` (dpkg lookup), `lines` (line digests and the fresh key), `reviewing` (what every
//! review route works from and answers), `review` (the routes, the full review and its output), `incremental` (the incremental review), `drift` (the comparison
//! and `jailprov lock`'s report).
#![allow(clippy::disallowed_methods)] // writes Jailfile.lock beside the Jailfile and the cache in the state dir: outside every jail

mod cache;
mod drift;
mod entries;
mod format;
mod incremental;
mod lines;
mod packages;
mod review;
mod reviewing;

// The lock as plan, apply, check and `jailprov lock` use it; the rest stays inside.
pub use drift::{diff_closures_text, Comparison, Difference, Drift};
pub use entries::hash_text;
pub use format::{host_fingerprint, jailfile_digest, lock_path, HostFingerprint, Lock, LockEntry};
pub use packages::installed_versions;
pub use review::{drift_text, review, written_text};
pub use reviewing::{Inputs, Mode, Review};

#[cfg(test)]
mod incremental_tests;
#[cfg(test)]
mod tests;
