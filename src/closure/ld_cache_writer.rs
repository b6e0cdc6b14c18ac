//! The jail's own /etc/ld.so.cache, written in glibc's new format ("glibc-ld.so.cache1.1", the
//! one ldconfig writes and `ld_cache` reads) when the jail holds a library the host finds only
//! through the cache (an /etc/ld.so.conf.d directory outside the loader's built-in ones).

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::path::Path;

use rustc_hash::FxHashMap as HashMap;

use super::ld_cache::{libcmp, CacheEntry};
use super::loader::Loader;
use super::{Builder, EntryKind, Origin};
use crate::spec::Spec;
use crate::tree::JailPath;

/// Where the loader reads its cache.
const CACHE_PATH: &str = "/etc/ld.so.cache";

/// Adds a generated /etc/ld.so.cache when a library of the jail was found only through the
/// host's cache: its entries are the host cache's entries (flags and hwcap as ldconfig set them)
/// for the libraries in the jail, at the paths the loader opens them by. Without such a
/// library nothing is added, and the jail is as before.
pub(super) fn add_jail_cache(spec: &Spec, loader: &Loader, builder: &mut Builder) {
    let Some(host_cache) = loader.cache() else { return };
    let in_the_jail = |builder: &Builder, host_path: &Path| {
        builder.placed(host_path).and_then(|path| builder.entries.get(path)).is_some_and(|entry| {
            matches!(entry.kind, EntryKind::Library | EntryKind::NssModule | EntryKind::Interpreter | EntryKind::File)
        })
    };
    let dirs: BTreeSet<String> = loader
        .found_only_through_cache()
        .iter()
        .filter(|library| in_the_jail(builder, library))
        .filter_map(|library| Some(library.parent()?.display().to_string()))
        .collect();
    if dirs.is_empty() {
        return;
    }
    let shown_dirs = dirs.iter().cloned().collect::<Vec<_>>().join(", ");
    if spec.exclude.is_excluded(Path::new(CACHE_PATH)) {
        builder.warn(format!(
            "{CACHE_PATH} is excluded, so libraries found through {shown_dirs} will not load in the jail"
        ));
        return;
    }
    let path = JailPath::parse(CACHE_PATH).expect("/etc/ld.so.cache is a valid jail path");
    if builder.contains(&path) {
        builder.warn(format!(
            "{CACHE_PATH} comes from the Jailfile; jailprov does not generate one (libraries found through {shown_dirs} need it)"
        ));
        return;
    }
    let entries: Vec<WrittenEntry> = host_cache
        .entries()
        .iter()
        .enumerate()
        .filter(|(_, entry)| in_the_jail(builder, Path::new(&entry.value)))
        .map(|(index, entry)| WrittenEntry { entry: entry.clone(), isa_level: host_cache.isa_level(index) })
        .collect();
    let bytes = write_cache(&entries, "jailprov");
    let entry =
        builder.add(path, EntryKind::Generated, None, Origin::LibraryCache { dirs: dirs.into_iter().collect() });
    entry.content = Some(bytes);
    entry.attributes.mode = Some(0o644);
}

/// CACHEMAGIC_NEW followed by CACHE_VERSION.
const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
const HEADER_SIZE: usize = 48;
const ENTRY_SIZE: usize = 24;
/// cache_file_new_flags_endian_current: the byte order of the machine that writes it.
const ENDIAN_CURRENT: u8 = if cfg!(target_endian = "little") { 2 } else { 3 };
const EXTENSION_MAGIC: u32 = 0xeaa4_2174;
const EXTENSION_TAG_GENERATOR: u32 = 0;
const EXTENSION_TAG_GLIBC_HWCAPS: u32 = 1;
/// DL_CACHE_HWCAP_EXTENSION: the entry's low 32 hwcap bits index the glibc-hwcaps names.
const HWCAP_EXTENSION: u64 = 1 << 62;

/// One library of the cache to write: what ldconfig records for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenEntry {
    pub entry: CacheEntry,
    /// x86 ISA level (for glibc-hwcaps entries; bits 32..41 of their hwcap).
    pub isa_level: u8,
}

/// The bytes of a cache holding `entries`, sorted as ldconfig sorts them (the loader
/// binary-searches the table), with a generator extension naming `generator`.
pub fn write_cache(entries: &[WrittenEntry], generator: &str) -> Vec<u8> {
    let mut sorted: Vec<&WrittenEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| ldconfig_order(&a.entry, &b.entry));
    sorted.dedup_by(|a, b| a.entry == b.entry);

    // glibc-hwcaps subdirectory names, sorted (the loader merges them with its own list).
    let mut hwcaps: Vec<&str> = sorted.iter().filter_map(|written| written.entry.hwcaps_subdir.as_deref()).collect();
    hwcaps.sort_unstable();
    hwcaps.dedup();

    let strings_start = HEADER_SIZE + sorted.len() * ENTRY_SIZE;
    let mut strings = StringTable { bytes: Vec::new(), offsets: HashMap::default(), start: strings_start };
    let mut table = Vec::with_capacity(sorted.len() * ENTRY_SIZE);
    for written in &sorted {
        let entry = &written.entry;
        let (key, value) = (strings.offset_of(&entry.key), strings.offset_of(&entry.value));
        let hwcap = match &entry.hwcaps_subdir {
            Some(subdir) => {
                let index = hwcaps.iter().position(|name| name == subdir).unwrap_or(0) as u64;
                HWCAP_EXTENSION | (u64::from(written.isa_level) << 32) | index
            }
            None => entry.legacy_hwcap,
        };
        table.extend_from_slice(&entry.flags.to_ne_bytes());
        table.extend_from_slice(&key.to_ne_bytes());
        table.extend_from_slice(&value.to_ne_bytes());
        table.extend_from_slice(&0u32.to_ne_bytes()); // osversion_unused
        table.extend_from_slice(&hwcap.to_ne_bytes());
    }
    let hwcaps_offsets: Vec<u32> = hwcaps.iter().map(|name| strings.offset_of(name)).collect();
    let len_strings = strings.bytes.len();

    // The extension directory (4-aligned), then its sections: the generator text, and the
    // glibc-hwcaps name offsets when any entry lives in such a subdirectory.
    let extension_offset = (strings_start + len_strings).next_multiple_of(4);
    let section_count = if hwcaps.is_empty() { 1 } else { 2 };
    let mut data_offset = extension_offset + 8 + 16 * section_count;
    let mut sections: Vec<(u32, Vec<u8>)> = vec![(EXTENSION_TAG_GENERATOR, generator.as_bytes().to_vec())];
    if !hwcaps.is_empty() {
        sections.push((
            EXTENSION_TAG_GLIBC_HWCAPS,
            hwcaps_offsets.iter().flat_map(|offset| offset.to_ne_bytes()).collect(),
        ));
    }

    let mut bytes = Vec::with_capacity(data_offset + 64);
    bytes.extend_from_slice(NEW_MAGIC);
    bytes.extend_from_slice(&u32_of(sorted.len()).to_ne_bytes());
    bytes.extend_from_slice(&u32_of(len_strings).to_ne_bytes());
    bytes.push(ENDIAN_CURRENT);
    bytes.extend_from_slice(&[0; 3]);
    bytes.extend_from_slice(&u32_of(extension_offset).to_ne_bytes());
    bytes.extend_from_slice(&[0; 12]);
    bytes.extend_from_slice(&table);
    bytes.extend_from_slice(&strings.bytes);
    bytes.resize(extension_offset, 0);
    bytes.extend_from_slice(&EXTENSION_MAGIC.to_ne_bytes());
    bytes.extend_from_slice(&u32_of(sections.len()).to_ne_bytes());
    let mut placed = Vec::new();
    for (tag, data) in &sections {
        // Each section's data 4-aligned: the glibc-hwcaps array is read as 32-bit words.
        data_offset = data_offset.next_multiple_of(4);
        for field in [*tag, 0, u32_of(data_offset), u32_of(data.len())] {
            bytes.extend_from_slice(&field.to_ne_bytes());
        }
        placed.push(data_offset);
        data_offset += data.len();
    }
    for ((_, data), offset) in sections.iter().zip(placed) {
        bytes.resize(offset, 0);
        bytes.extend_from_slice(data);
    }
    bytes
}

/// A cache is far below 4 GiB (one entry per library of a jail): offsets fit in 32 bits.
fn u32_of(value: usize) -> u32 {
    u32::try_from(value).expect("an ld.so.cache of a jail's libraries is far below 4 GiB")
}

/// NUL-terminated strings, each stored once, with their offsets from the start of the file.
struct StringTable<'a> {
    bytes: Vec<u8>,
    offsets: HashMap<&'a str, u32>,
    start: usize,
}

impl<'a> StringTable<'a> {
    fn offset_of(&mut self, text: &'a str) -> u32 {
        if let Some(&offset) = self.offsets.get(text) {
            return offset;
        }
        let offset = u32_of(self.start + self.bytes.len());
        self.bytes.extend_from_slice(text.as_bytes());
        self.bytes.push(0);
        self.offsets.insert(text, offset);
        offset
    }
}

/// ldconfig's `compare` (elf/cache.c): sonames in descending `_dl_cache_libcmp` order; for one
/// soname, higher flags first, glibc-hwcaps entries before plain ones (by subdirectory name),
/// then the most specific hwcap first.
fn ldconfig_order(a: &CacheEntry, b: &CacheEntry) -> Ordering {
    libcmp(b.key.as_bytes(), a.key.as_bytes())
        .then_with(|| b.flags.cmp(&a.flags))
        .then_with(|| match (&a.hwcaps_subdir, &b.hwcaps_subdir) {
            (Some(a), Some(b)) => a.cmp(b),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
        .then_with(|| b.legacy_hwcap.cmp(&a.legacy_hwcap))
}
