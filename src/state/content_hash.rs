//! The content hashes the record keeps: blake3 of a jail file, read through the jail writer's
//! handle and bounded by the size it should have. Apply records them, `jailprov check` verifies
//! against them.

use std::io::Read as _;

use anyhow::{bail, Context, Result};

use crate::desired::{DesiredKind, DesiredNode};
use crate::jail_root::JailRoot;
use crate::tree::JailPath;

/// What apply records for a file it wrote: blake3 of the whole jail file (None for other kinds).
/// The read stops one byte past the size the file should have: a file a jail process makes grow
/// or swaps while it is hashed is an error (apply is then run again), never hashed forever.
pub fn recorded_hash(jail: &JailRoot, node: &DesiredNode) -> Result<Option<[u8; 32]>> {
    let expected = match &node.kind {
        DesiredKind::File { source_print, .. } => source_print.size,
        DesiredKind::Content { bytes } => bytes.len() as u64,
        _ => return Ok(None),
    };
    match content_hash(jail, &node.path, expected)? {
        ContentHash::Whole(hash) => Ok(Some(hash)),
        ContentHash::Changed(why) => bail!(
            "{} in the jail {why} while apply recorded it (a jail process is writing it); run `jailprov apply` again",
            node.path
        ),
    }
}

/// What a bounded hash of a jail file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentHash {
    /// blake3 of every byte, the file's stat the same before and after the read.
    Whole([u8; 32]),
    /// Why no whole hash could be taken: longer than it may be, or changed while it was read.
    Changed(String),
}

/// blake3 of a regular file in the jail, reading at most `limit` + 1 bytes: a file longer than
/// `limit` (at the stat, or grown since) or whose stat moved during the read is
/// [`ContentHash::Changed`], however large a sparse file a jail process put there.
pub fn content_hash(jail: &JailRoot, path: &JailPath, limit: u64) -> Result<ContentHash> {
    let file = jail.open_read(path)?;
    let cannot_read = || format!("cannot read {path} in the jail");
    let before = file.metadata().with_context(cannot_read)?;
    if before.len() > limit {
        return Ok(ContentHash::Changed(format!("is {} bytes, more than the {limit} expected", before.len())));
    }
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut reader = (&file).take(limit.saturating_add(1));
    let mut read_total: u64 = 0;
    loop {
        let read = reader.read(&mut buffer).with_context(cannot_read)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        read_total += read as u64;
    }
    if read_total > limit {
        return Ok(ContentHash::Changed(format!("grew past the {limit} bytes expected")));
    }
    let after = file.metadata().with_context(cannot_read)?;
    let print = |metadata: &std::fs::Metadata| {
        use std::os::unix::fs::MetadataExt;
        (metadata.len(), metadata.mtime(), metadata.mtime_nsec(), metadata.ctime(), metadata.ctime_nsec())
    };
    if print(&before) != print(&after) || read_total != after.len() {
        return Ok(ContentHash::Changed("changed".to_owned()));
    }
    Ok(ContentHash::Whole(*hasher.finalize().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> JailPath {
        JailPath::parse(text).expect("valid")
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // the test's own fixture, outside every jail
    fn a_file_longer_than_its_record_is_changed_without_being_hashed_whole() -> Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("f"), "0123456789")?;
        let jail = JailRoot::open(dir.path())?;
        let expected = *blake3::hash(b"0123456789").as_bytes();
        assert_eq!(content_hash(&jail, &path("/f"), 10)?, ContentHash::Whole(expected));
        // A sparse terabyte where ten bytes were recorded: refused at the stat, not read.
        std::fs::File::options().write(true).open(dir.path().join("f"))?.set_len(1 << 40)?;
        let ContentHash::Changed(why) = content_hash(&jail, &path("/f"), 10)? else { panic!("not hashed whole") };
        assert!(why.contains("more than the 10 expected"), "{why}");
        Ok(())
    }
}
