//! Trees on disk as a user compares them: every path under a root with its kind, mode, owner
//! and content (never following a symlink), for the tests that hold one jail against another.
#![allow(dead_code)] // each test crate needs a different subset

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What a path holds, for byte-for-byte comparisons of trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A regular file's blake3 digest (libc is 2 MB: no raw bytes in assertion messages).
    File(String),
    Dir,
    Symlink(String),
    Device(u64),
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub body: Body,
}

/// Every path under `root` ("/" for the root itself), with mode, owner and content.
pub fn tree(root: &Path) -> BTreeMap<String, Node> {
    let mut nodes = BTreeMap::new();
    walk(root, &mut |path, metadata| {
        let file_type = metadata.file_type();
        let body = if file_type.is_symlink() {
            Body::Symlink(fs::read_link(path).expect("readlink").to_string_lossy().into_owned())
        } else if file_type.is_dir() {
            Body::Dir
        } else if file_type.is_file() {
            Body::File(blake3::hash(&fs::read(path).expect("read a file")).to_hex().to_string())
        } else if file_type.is_char_device() || file_type.is_block_device() {
            Body::Device(metadata.rdev())
        } else {
            Body::Other
        };
        let node = Node { mode: metadata.mode() & 0o7777, uid: metadata.uid(), gid: metadata.gid(), body };
        nodes.insert(jail_name(root, path), node);
    });
    nodes
}

pub fn jail_name(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).expect("under the root");
    format!("/{}", relative.display())
}

pub fn walk(path: &Path, visit: &mut dyn FnMut(&Path, &fs::Metadata)) {
    let metadata = fs::symlink_metadata(path).unwrap_or_else(|error| panic!("lstat {}: {error}", path.display()));
    visit(path, &metadata);
    if metadata.is_dir() {
        let mut entries: Vec<PathBuf> = fs::read_dir(path)
            .unwrap_or_else(|error| panic!("readdir {}: {error}", path.display()))
            .map(|entry| entry.expect("dir entry").path())
            .collect();
        entries.sort();
        for entry in entries {
            walk(&entry, visit);
        }
    }
}
