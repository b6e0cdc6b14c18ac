//! The image's layers: the desired tree split by the Debian package each path comes from into a
//! bounded, stable set of groups, each written as a reproducible tar, gzip-compressed while it is
//! hashed, straight into a blob file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rustc_hash::FxHashMap as HashMap;
use sha2::{Digest as _, Sha256};

use crate::desired::{DesiredKind, DesiredNode, DesiredTree};
use crate::host::HostFs;
use crate::tree::JailPath;

/// Package groups besides the C runtime and the Jailfile's own files: 1 + 6 + 1 = 8 layers at
/// most, whatever the jail holds. Fixed, so a package lands in the same group in every jail.
const PACKAGE_GROUPS: u8 = 6;

/// The gzip level: zlib's default, what `gzip -6` and most registries use. Fixed: the same
/// bytes in give the same blob out.
const GZIP_LEVEL: u32 = 6;

/// The package of the C runtime, given a layer of its own.
const C_RUNTIME_PACKAGE: &str = "libc6";

/// Which layer a path goes to, in the order the layers stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// From libc6: the dynamic loader, libc.so.6 and the links on the way to them. Nearly every
    /// jail holds exactly these, so this layer is the one most shared between images.
    CRuntime,
    /// Files of the Debian packages whose name hashes to this group (libc6's other files too).
    Packages(u8),
    /// What no package gives: the Jailfile's content, generated files (passwd, group),
    /// directories it declares, files it copies from outside dpkg.
    Jailfile,
}

impl Group {
    /// What the layer holds, as the image history says it.
    pub fn describe(&self) -> String {
        match self {
            Group::CRuntime => "jailprov export: the C runtime (libc6: loader, libc.so.6)".to_owned(),
            Group::Packages(index) => format!("jailprov export: Debian packages, group {}/{PACKAGE_GROUPS}", index + 1),
            Group::Jailfile => "jailprov export: the Jailfile's own files".to_owned(),
        }
    }
}

/// The group of one path, from the package the lock attributes it to.
pub fn group_of(node: &DesiredNode, package: Option<&str>) -> Group {
    let Some(package) = package else { return Group::Jailfile };
    if package == C_RUNTIME_PACKAGE && is_c_runtime(node) {
        return Group::CRuntime;
    }
    // A hash of the name alone (not the version, not the jail): stable across jails and hosts.
    let hash = Sha256::digest(package.as_bytes());
    Group::Packages(hash[0] % PACKAGE_GROUPS)
}

/// The loader, libc.so.6, and the links that lead to the loader (/lib64, /usr/lib64/ld-linux...).
fn is_c_runtime(node: &DesiredNode) -> bool {
    let name = node.path.file_name();
    name.starts_with("ld-linux") || name.starts_with("ld64.so") || name == "libc.so.6" || name.starts_with("lib64")
}

/// One layer to write: its group and its entries, sorted, parents first.
pub struct LayerContents<'a> {
    pub group: Group,
    pub entries: Vec<&'a DesiredNode>,
}

/// The layers of a desired tree, lowest first, empty groups left out. Each path is in exactly
/// one layer, but for directories: one is also in every layer holding something below it, with
/// the same mode and owner everywhere (all come from the one desired node). Device nodes are
/// left out: an image cannot carry them, the runtime makes its own /dev.
pub fn split<'a>(tree: &'a DesiredTree, packages: &HashMap<&str, &str>) -> Vec<LayerContents<'a>> {
    let mut groups: BTreeMap<Group, BTreeMap<&'a JailPath, &'a DesiredNode>> = BTreeMap::new();
    for (path, node) in &tree.nodes {
        if matches!(node.kind, DesiredKind::Device { .. }) || path.is_root() {
            continue;
        }
        let group = group_of(node, packages.get(path.as_str()).copied());
        let entries = groups.entry(group).or_default();
        entries.insert(path, node);
        for ancestor in path.ancestors() {
            if let Some((path, node)) = tree.nodes.get_key_value(&ancestor) {
                entries.insert(path, node);
            }
        }
    }
    groups
        .into_iter()
        .map(|(group, entries)| LayerContents { group, entries: entries.into_values().collect() })
        .collect()
}

/// A blob written under blobs/sha256/: its digest (hex) and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub hex: String,
    pub size: u64,
}

/// A written layer: the compressed blob and the digest of its uncompressed tar (the diff id).
#[derive(Debug, Clone)]
pub struct WrittenLayer {
    pub group: Group,
    pub blob: Blob,
    pub diff_id_hex: String,
}

/// A writer that hashes and counts what passes through it.
pub struct Digesting<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Digesting<W> {
    pub fn new(inner: W) -> Digesting<W> {
        Digesting { inner, hasher: Sha256::new(), bytes: 0 }
    }

    /// The inner writer, the hex digest and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex(&self.hasher.finalize()), self.bytes)
    }
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buffer)?;
        self.hasher.update(&buffer[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Creates a new file in `dir` for a blob being written (never opening anything already there).
pub fn create_blob_file(dir: &Path, name: &str) -> Result<(File, PathBuf)> {
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    Ok((file, path))
}

/// Writes one layer into `blobs` (the layout's blobs/sha256 directory) as
/// tar -> sha256 (diff id) -> gzip -> sha256 (blob digest) -> file, then names the file by its
/// digest. Memory stays bounded: file contents stream from the host through fixed buffers.
pub fn write_layer(layer: &LayerContents, host: &HostFs, blobs: &Path, mtime: u64) -> Result<WrittenLayer> {
    let (file, temporary) = create_blob_file(blobs, &format!(".layer-{:?}.tmp", layer.group))?;
    let compressed = Digesting::new(BufWriter::with_capacity(1 << 20, file));
    let gzip = flate2::GzBuilder::new().mtime(0).write(compressed, flate2::Compression::new(GZIP_LEVEL));
    let mut tar = tar::Builder::new(Digesting::new(gzip));
    for node in &layer.entries {
        append_node(&mut tar, node, host, mtime).with_context(|| format!("cannot put {} in the image", node.path))?;
    }
    let what = || format!("cannot write the layer {}", temporary.display());
    let (gzip, diff_id_hex, _) = tar.into_inner().with_context(what)?.finish();
    let (compressed, hex, size) = gzip.finish().with_context(what)?.finish();
    let file = compressed.into_inner().map_err(|error| error.into_error()).with_context(what)?;
    drop(file);
    let path = blobs.join(&hex);
    std::fs::rename(&temporary, &path).with_context(|| format!("cannot name the layer {}", path.display()))?;
    Ok(WrittenLayer { group: layer.group, blob: Blob { hex, size }, diff_id_hex })
}

/// One desired node as a tar entry: numeric owner only (no user or group names), the fixed
/// mtime, the node's mode with its setuid bits, no atime or ctime.
fn append_node<W: Write>(tar: &mut tar::Builder<W>, node: &DesiredNode, host: &HostFs, mtime: u64) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_mtime(mtime);
    header.set_uid(u64::from(node.uid));
    header.set_gid(u64::from(node.gid));
    header.set_mode(node.mode);
    let name = node.path.relative();
    match &node.kind {
        DesiredKind::Dir => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            tar.append_data(&mut header, format!("{name}/"), io::empty())?;
        }
        DesiredKind::Symlink { target } => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            tar.append_link(&mut header, name, target)?;
        }
        DesiredKind::Content { bytes } => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(bytes.len() as u64);
            tar.append_data(&mut header, name, bytes.as_slice())?;
        }
        DesiredKind::File { source, source_print } => {
            let reader = host.open_unchanged(source, source_print)?;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(source_print.size);
            tar.append_data(&mut header, name, reader)
                .with_context(|| format!("cannot read {} on the host", source.display()))?;
        }
        DesiredKind::Device { .. } => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(path: &str, kind: DesiredKind) -> DesiredNode {
        DesiredNode { path: JailPath::parse(path).expect("valid"), kind, mode: 0o755, uid: 0, gid: 0 }
    }

    #[test]
    fn the_loader_and_libc_form_the_c_runtime_group_other_libc6_files_do_not() {
        let libc = node("/usr/lib/x86_64-linux-gnu/libc.so.6", DesiredKind::Content { bytes: Vec::new() });
        let libm = node("/usr/lib/x86_64-linux-gnu/libm.so.6", DesiredKind::Content { bytes: Vec::new() });
        let lib64 = node("/lib64", DesiredKind::Symlink { target: "usr/lib64".into() });
        assert_eq!(group_of(&libc, Some("libc6")), Group::CRuntime);
        assert_eq!(group_of(&lib64, Some("libc6")), Group::CRuntime);
        assert!(matches!(group_of(&libm, Some("libc6")), Group::Packages(_)));
        assert_eq!(group_of(&libm, None), Group::Jailfile);
        // The group of a package never depends on the path or the jail.
        assert_eq!(group_of(&libm, Some("bash")), group_of(&libc, Some("bash")));
    }

    #[test]
    fn directories_follow_their_contents_into_each_layer_devices_stay_out() {
        let mut tree = DesiredTree::default();
        for node in [
            node("/usr", DesiredKind::Dir),
            node("/usr/lib", DesiredKind::Dir),
            node("/usr/lib/libc.so.6", DesiredKind::Content { bytes: Vec::new() }),
            node("/usr/lib/motd", DesiredKind::Content { bytes: Vec::new() }),
            node("/dev", DesiredKind::Dir),
            node("/dev/null", DesiredKind::Device { block: false, rdev: 0x103 }),
        ] {
            tree.nodes.insert(node.path.clone(), node);
        }
        let packages: HashMap<&str, &str> = [("/usr/lib/libc.so.6", "libc6")].into_iter().collect();
        let layers = split(&tree, &packages);
        let paths = |index: usize| layers[index].entries.iter().map(|node| node.path.as_str()).collect::<Vec<_>>();
        assert_eq!(layers.len(), 2);
        assert_eq!(layers[0].group, Group::CRuntime);
        assert_eq!(paths(0), ["/usr", "/usr/lib", "/usr/lib/libc.so.6"]);
        assert_eq!(paths(1), ["/dev", "/usr", "/usr/lib", "/usr/lib/motd"]);
    }
}
