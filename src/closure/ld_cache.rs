//! Parses glibc's /etc/ld.so.cache and answers lookups exactly as glibc 2.36's `_dl_load_cache_lookup`.

use rustc_hash::FxHashMap as HashMap;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::ffi::c_char;
use std::io::ErrorKind;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

/// Magic of the libc5-era format that old caches start with.
const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";
/// CACHEMAGIC_NEW followed by CACHE_VERSION, compared as one string like glibc does.
const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
/// struct cache_file: magic (11 bytes, padded to 12) + nlibs.
const OLD_HEADER_SIZE: usize = 16;
const OLD_NLIBS_OFFSET: usize = 12;
/// struct file_entry: flags, key, value.
const OLD_ENTRY_SIZE: usize = 12;
/// struct cache_file_new (static_assert'ed to 48 bytes in glibc).
const NEW_HEADER_SIZE: usize = 48;
const NEW_NLIBS_OFFSET: usize = 20;
const NEW_LEN_STRINGS_OFFSET: usize = 24;
const NEW_FLAGS_OFFSET: usize = 28;
const NEW_EXTENSION_OFFSET: usize = 32;
/// struct file_entry_new: flags, key, value, osversion_unused, hwcap.
const NEW_ENTRY_SIZE: usize = 24;
/// ALIGN_CACHE: alignment of struct cache_file_new behind the old format.
const NEW_HEADER_ALIGN: usize = 8;

/// cache_file_new_flags_endian_*: the low two bits of the header flags.
const ENDIAN_MASK: u8 = 3;
const ENDIAN_CURRENT: u8 = if cfg!(target_endian = "little") { 2 } else { 3 };

const EXTENSION_MAGIC: u32 = 0xeaa4_2174;
const EXTENSION_HEADER_SIZE: usize = 8;
const EXTENSION_SECTION_SIZE: usize = 16;
const EXTENSION_TAG_GENERATOR: u32 = 0;
const EXTENSION_TAG_GLIBC_HWCAPS: u32 = 1;

/// DL_CACHE_HWCAP_EXTENSION: the low 32 bits index the glibc-hwcaps section.
const HWCAP_EXTENSION: u64 = 1 << 62;
/// DL_CACHE_HWCAP_ISA_LEVEL_MASK: bits 32..41 hold the x86 ISA level of the library.
const ISA_LEVEL_MASK: u64 = (1 << 10) - 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// FLAG_* bits, e.g. 0x0303 = FLAG_ELF_LIBC6 | FLAG_X8664_LIB64.
    pub flags: i32,
    /// The soname.
    pub key: String,
    /// The path of the library.
    pub value: String,
    /// For glibc-hwcaps entries: the subdirectory name, e.g. "x86-64-v3".
    pub hwcaps_subdir: Option<String>,
    /// Legacy hwcap bits (tls/, haswell/, x86_64/ ... subdirectories); 0 for glibc-hwcaps entries.
    pub legacy_hwcap: u64,
}

/// How a loader treats legacy hwcap entries, i.e. glibc 2.36's `hwcap_exclude`/platform test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegacyHwcapFilter {
    /// Bits an entry may carry: `(dl_hwcap & hwcap_mask) | _DL_HWCAP_PLATFORM | TLS bit (63)`.
    pub allowed: u64,
    /// `_DL_HWCAP_PLATFORM`: the bits that name a platform (0 where the arch has none).
    pub platform_mask: u64,
    /// The bit of this CPU's `dl_platform`; None when the name is not in the loader's table,
    /// in which case every platform-tagged entry is rejected (as with glibc's `-1`).
    pub platform_bit: Option<u64>,
}

/// Everything `_dl_load_cache_lookup` depends on besides the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheQuery<'a> {
    /// Flags `_dl_cache_check_flags` accepts (x86_64: [0x0303]; i386: [0x0001, 0x0003]).
    pub accepted_flags: &'a [i32],
    /// `_DL_CACHE_DEFAULT_ID`: a plain entry with these flags ends the search at once.
    pub default_flags: i32,
    /// glibc-hwcaps subdirectories the loader searches, best first.
    pub hwcaps: &'a [String],
    /// x86 `cpu_features->isa_1` (bit n = ISA level n supported); None skips the check, as on
    /// architectures without ISA level markers.
    pub isa_1: Option<u32>,
    /// None rejects every entry with legacy hwcap bits (what glibc 2.37 and later do).
    pub legacy: Option<LegacyHwcapFilter>,
}

#[derive(Debug, Clone)]
pub struct LdCache {
    entries: Vec<CacheEntry>,
    /// ISA level (bits 32..41 of hwcap) per entry; only meaningful for glibc-hwcaps entries.
    isa_levels: Vec<u8>,
    /// Entry indices (file order) per soname in `canonical_key` form.
    index: HashMap<String, Vec<usize>>,
    generator: Option<String>,
}

impl LdCache {
    /// Parses a cache file image; any out-of-range offset or missing terminator is an error.
    pub fn parse(bytes: &[u8]) -> Result<LdCache> {
        let raw = match locate_format(bytes)? {
            Format::New { start } => parse_new_format(bytes, start)?,
            Format::OldOnly { nlibs } => parse_old_format(bytes, nlibs)?,
        };
        check_sorted(&raw.entries)?;
        let index = build_index(&raw.entries);
        Ok(LdCache { entries: raw.entries, isa_levels: raw.isa_levels, index, generator: raw.generator })
    }

    /// Ok(None) if the file does not exist. Error context names the path.
    pub fn load(path: &Path) -> Result<Option<LdCache>> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err).with_context(|| format!("reading ld.so cache {}", path.display())),
        };
        LdCache::parse(&bytes).with_context(|| format!("parsing ld.so cache {}", path.display())).map(Some)
    }

    /// All entries in file order (the order `ldconfig -p` prints).
    pub fn entries(&self) -> &[CacheEntry] {
        &self.entries
    }

    /// The x86 ISA level ldconfig recorded for entry `index` of [`LdCache::entries`] (0 for
    /// plain entries).
    pub fn isa_level(&self, index: usize) -> u8 {
        self.isa_levels.get(index).copied().unwrap_or(0)
    }

    /// The generator extension ("ldconfig (Debian GLIBC 2.36-...) ..."), if present.
    pub fn generator(&self) -> Option<&str> {
        self.generator.as_deref()
    }

    /// What glibc's `_dl_load_cache_lookup` returns for `soname` when the loader accepts exactly
    /// `wanted_flags` (e.g. 0x0303 for x86-64 libc6): the best-priority glibc-hwcaps entry whose
    /// subdirectory is in `hwcaps` (best first), otherwise the first plain entry (hwcap == 0).
    /// Entries with non-zero legacy hwcap bits are skipped and ISA level markers are not checked;
    /// glibc 2.36 itself still honours both, which [`LdCache::lookup_with`] models.
    pub fn lookup(&self, soname: &str, wanted_flags: i32, hwcaps: &[String]) -> Option<&str> {
        self.lookup_with(
            soname,
            &CacheQuery {
                accepted_flags: &[wanted_flags],
                default_flags: wanted_flags,
                hwcaps,
                isa_1: None,
                legacy: None,
            },
        )
    }

    /// `search_cache` of glibc 2.36's elf/dl-cache.c, step for step, over the entries whose
    /// name compares equal under `_dl_cache_libcmp` (so "libfoo.so.01" finds "libfoo.so.1").
    pub fn lookup_with(&self, soname: &str, query: &CacheQuery) -> Option<&str> {
        let candidates = self.index.get(canonical_key(soname).as_ref())?;
        let mut best: Option<&CacheEntry> = None;
        let mut best_priority = 0;
        for &i in candidates {
            let entry = &self.entries[i];
            if !query.accepted_flags.contains(&entry.flags) {
                continue;
            }
            let named = entry.hwcaps_subdir.is_some();
            if named && !isa_level_compatible(self.isa_levels[i], query.isa_1) {
                continue;
            }
            // ldconfig sorts glibc-hwcaps entries before plain ones, so the first acceptable
            // plain entry after a hwcaps match means no better hwcaps entry can follow.
            if !named && best.is_some() {
                break;
            }
            if !named && !legacy_hwcap_accepted(entry.legacy_hwcap, query.legacy) {
                continue;
            }
            if let Some(subdir) = &entry.hwcaps_subdir {
                let priority = hwcaps_priority(subdir, query.hwcaps);
                if priority == 0 || (best.is_some() && priority >= best_priority) {
                    continue;
                }
                best_priority = priority;
            }
            best = Some(entry);
            if !named && entry.flags == query.default_flags {
                break;
            }
        }
        best.map(|entry| entry.value.as_str())
    }
}

/// Which layout the file uses, decided the way `_dl_load_cache_lookup` decides it.
enum Format {
    /// New format header at `start` (0, or right after an old-format table).
    New { start: usize },
    /// Only the libc5-era table.
    OldOnly { nlibs: usize },
}

/// Entries and extension data before indexing.
struct RawCache {
    entries: Vec<CacheEntry>,
    isa_levels: Vec<u8>,
    generator: Option<String>,
}

fn locate_format(bytes: &[u8]) -> Result<Format> {
    if bytes.starts_with(NEW_MAGIC) {
        return Ok(Format::New { start: 0 });
    }
    ensure!(
        bytes.starts_with(OLD_MAGIC),
        "not an ld.so cache: neither {:?} nor {:?} magic",
        String::from_utf8_lossy(NEW_MAGIC),
        String::from_utf8_lossy(OLD_MAGIC)
    );
    ensure!(bytes.len() >= OLD_HEADER_SIZE, "truncated old-format header");
    let nlibs = read_u32(bytes, OLD_NLIBS_OFFSET)? as usize;
    ensure!(
        (bytes.len() - OLD_HEADER_SIZE) / OLD_ENTRY_SIZE >= nlibs,
        "old-format table claims {nlibs} entries but the file has {} bytes",
        bytes.len()
    );
    let new_start = (OLD_HEADER_SIZE + nlibs * OLD_ENTRY_SIZE).next_multiple_of(NEW_HEADER_ALIGN);
    let has_new = bytes.len() >= new_start + NEW_HEADER_SIZE && bytes[new_start..].starts_with(NEW_MAGIC);
    Ok(if has_new { Format::New { start: new_start } } else { Format::OldOnly { nlibs } })
}

fn parse_new_format(bytes: &[u8], start: usize) -> Result<RawCache> {
    ensure!(bytes.len() - start >= NEW_HEADER_SIZE, "truncated header: {} bytes", bytes.len());
    let nlibs = read_u32(bytes, start + NEW_NLIBS_OFFSET)? as usize;
    let len_strings = read_u32(bytes, start + NEW_LEN_STRINGS_OFFSET)? as usize;
    let flags = bytes[start + NEW_FLAGS_OFFSET];
    let extension_offset = read_u32(bytes, start + NEW_EXTENSION_OFFSET)? as usize;
    // glibc ignores a cache whose endianness bits name the other byte order.
    ensure!(
        flags == 0 || flags & ENDIAN_MASK == ENDIAN_CURRENT,
        "cache was written for another byte order (header flags {flags:#x}); glibc would ignore it"
    );
    let entries_start = start + NEW_HEADER_SIZE;
    ensure!(
        (bytes.len() - entries_start) / NEW_ENTRY_SIZE >= nlibs,
        "header claims {nlibs} entries but the file has {} bytes",
        bytes.len()
    );
    let strings_start = entries_start + nlibs * NEW_ENTRY_SIZE;
    ensure!(
        strings_start.checked_add(len_strings).is_some_and(|end| end <= bytes.len()),
        "string table ({len_strings} bytes at {strings_start:#x}) extends past the end of the file ({} bytes)",
        bytes.len()
    );
    let extensions = parse_extensions(bytes, extension_offset)?;
    let strings = &bytes[start..];
    let mut entries = Vec::with_capacity(nlibs);
    let mut isa_levels = Vec::with_capacity(nlibs);
    for i in 0..nlibs {
        let at = entries_start + i * NEW_ENTRY_SIZE;
        let hwcap = read_u64(bytes, at + 16)?;
        let (hwcaps_subdir, legacy_hwcap, isa_level) =
            classify_hwcap(hwcap, &extensions.hwcaps).with_context(|| format!("cache entry {i}"))?;
        let (flags, key, value) = read_entry_core(bytes, at, strings).with_context(|| format!("cache entry {i}"))?;
        entries.push(CacheEntry { flags, key, value, hwcaps_subdir, legacy_hwcap });
        isa_levels.push(isa_level);
    }
    Ok(RawCache { entries, isa_levels, generator: extensions.generator })
}

fn parse_old_format(bytes: &[u8], nlibs: usize) -> Result<RawCache> {
    // Old-format string offsets count from the end of the entry table.
    let strings = &bytes[OLD_HEADER_SIZE + nlibs * OLD_ENTRY_SIZE..];
    let entries = (0..nlibs)
        .map(|i| {
            let (flags, key, value) = read_entry_core(bytes, OLD_HEADER_SIZE + i * OLD_ENTRY_SIZE, strings)
                .with_context(|| format!("old-format cache entry {i}"))?;
            Ok(CacheEntry { flags, key, value, hwcaps_subdir: None, legacy_hwcap: 0 })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RawCache { isa_levels: vec![0; entries.len()], entries, generator: None })
}

/// flags, key and value of an entry at `at`; key/value are offsets into `strings`.
fn read_entry_core(bytes: &[u8], at: usize, strings: &[u8]) -> Result<(i32, String, String)> {
    let flags = read_u32(bytes, at)? as i32;
    let key = read_string(strings, read_u32(bytes, at + 4)?, "soname")?;
    let value = read_string(strings, read_u32(bytes, at + 8)?, "path")?;
    Ok((flags, key, value))
}

/// Splits an entry's hwcap into (glibc-hwcaps subdirectory, legacy bits, ISA level).
fn classify_hwcap(hwcap: u64, hwcaps_names: &[String]) -> Result<(Option<String>, u64, u8)> {
    // dl_cache_hwcap_extension: only bit 62 may be set in the upper half besides the ISA level.
    let is_extension = (hwcap >> 32) & !ISA_LEVEL_MASK == HWCAP_EXTENSION >> 32;
    if !is_extension {
        return Ok((None, hwcap, 0));
    }
    let index = hwcap as u32;
    let name = hwcaps_names.get(index as usize).with_context(|| {
        format!("glibc-hwcaps index {index} but the cache names only {} subdirectories", hwcaps_names.len())
    })?;
    let isa_level = (hwcap >> 32) & ISA_LEVEL_MASK;
    // ldconfig stores the index of the highest bit of a 32-bit mask, so anything above 31 is corrupt.
    let isa_level = u8::try_from(isa_level)
        .ok()
        .filter(|&level| level < 32)
        .with_context(|| format!("ISA level {isa_level} is out of range"))?;
    Ok((Some(name.clone()), 0, isa_level))
}

/// The extension directory's contents that matter.
#[derive(Default)]
struct Extensions {
    generator: Option<String>,
    /// glibc-hwcaps subdirectory names by index.
    hwcaps: Vec<String>,
}

/// cache_extension_load + cache_extension_verify, with errors instead of silently dropping data.
fn parse_extensions(bytes: &[u8], offset: usize) -> Result<Extensions> {
    let mut extensions = Extensions::default();
    if offset == 0 {
        return Ok(extensions);
    }
    ensure!(offset.is_multiple_of(4), "extension directory offset {offset:#x} is misaligned");
    ensure!(
        offset + EXTENSION_HEADER_SIZE <= bytes.len(),
        "extension directory at {offset:#x} extends past the end of the file"
    );
    let magic = read_u32(bytes, offset)?;
    ensure!(magic == EXTENSION_MAGIC, "bad extension magic {magic:#x}");
    let count = read_u32(bytes, offset + 4)? as usize;
    let sections_start = offset + EXTENSION_HEADER_SIZE;
    ensure!(
        count
            .checked_mul(EXTENSION_SECTION_SIZE)
            .and_then(|size| size.checked_add(sections_start))
            .is_some_and(|end| end <= bytes.len()),
        "extension directory with {count} sections extends past the end of the file"
    );
    for i in 0..count {
        let at = sections_start + i * EXTENSION_SECTION_SIZE;
        let tag = read_u32(bytes, at)?;
        let data_offset = read_u32(bytes, at + 8)? as usize;
        let size = read_u32(bytes, at + 12)? as usize;
        ensure!(
            data_offset.checked_add(size).is_some_and(|end| end <= bytes.len()),
            "extension section {i} ({size} bytes at {data_offset:#x}) extends past the end of the file"
        );
        let data = &bytes[data_offset..data_offset + size];
        // As in glibc, unknown tags are skipped and a repeated tag replaces the earlier one.
        match tag {
            EXTENSION_TAG_GENERATOR => extensions.generator = Some(generator_text(data)),
            EXTENSION_TAG_GLIBC_HWCAPS => extensions.hwcaps = parse_hwcaps_section(bytes, data_offset, data)?,
            _ => {}
        }
    }
    Ok(extensions)
}

fn generator_text(data: &[u8]) -> String {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

/// The glibc-hwcaps names. The loader reads them relative to the start of the file (not the
/// new-format header) and matches them by a merge that needs them sorted by strcmp.
fn parse_hwcaps_section(bytes: &[u8], offset: usize, data: &[u8]) -> Result<Vec<String>> {
    ensure!(
        !data.is_empty() && offset.is_multiple_of(4) && data.len().is_multiple_of(4),
        "glibc-hwcaps section ({} bytes at {offset:#x}) is empty or misaligned",
        data.len()
    );
    let names = data
        .chunks_exact(4)
        .map(|chunk| {
            let index = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            read_string(bytes, index, "glibc-hwcaps subdirectory name")
        })
        .collect::<Result<Vec<_>>>()?;
    ensure!(names.windows(2).all(|pair| pair[0] < pair[1]), "glibc-hwcaps names are not strictly sorted: {names:?}");
    Ok(names)
}

fn array_at<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N]> {
    bytes
        .get(at..)
        .and_then(|rest| rest.get(..N))
        .and_then(|raw| raw.try_into().ok())
        .with_context(|| format!("{N} bytes at {at:#x} are past the end of the file"))
}

fn read_u32(bytes: &[u8], at: usize) -> Result<u32> {
    array_at(bytes, at).map(u32::from_ne_bytes)
}

fn read_u64(bytes: &[u8], at: usize) -> Result<u64> {
    array_at(bytes, at).map(u64::from_ne_bytes)
}

/// The NUL-terminated string at `offset` of `table`, as UTF-8.
fn read_string(table: &[u8], offset: u32, what: &str) -> Result<String> {
    let rest = table
        .get(offset as usize..)
        .filter(|rest| !rest.is_empty())
        .with_context(|| format!("{what} offset {offset:#x} is outside the string table"))?;
    let Some(nul) = rest.iter().position(|&b| b == 0) else {
        bail!("{what} at offset {offset:#x} is not NUL-terminated");
    };
    String::from_utf8(rest[..nul].to_vec()).with_context(|| format!("{what} at offset {offset:#x} is not valid UTF-8"))
}

/// glibc binary-searches the table, so our per-name index only answers the same as glibc if the
/// table is in ldconfig's order (descending under `_dl_cache_libcmp`).
fn check_sorted(entries: &[CacheEntry]) -> Result<()> {
    for (i, pair) in entries.windows(2).enumerate() {
        if libcmp(pair[0].key.as_bytes(), pair[1].key.as_bytes()) == Ordering::Less {
            bail!(
                "entries {} ({:?}) and {} ({:?}) are not in ldconfig's order; glibc's binary search would misbehave",
                i,
                pair[0].key,
                i + 1,
                pair[1].key
            );
        }
    }
    Ok(())
}

fn build_index(entries: &[CacheEntry]) -> HashMap<String, Vec<usize>> {
    let mut index: HashMap<String, Vec<usize>> = HashMap::with_capacity_and_hasher(entries.len(), Default::default());
    for (i, entry) in entries.iter().enumerate() {
        index.entry(canonical_key(&entry.key).into_owned()).or_default().push(i);
    }
    index
}

/// `name` with leading zeros removed from every digit run: two names are equal under
/// `_dl_cache_libcmp` exactly when their canonical keys are equal.
fn canonical_key(name: &str) -> Cow<'_, str> {
    let bytes = name.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        // Keep the last digit so that "00" becomes "0", not "".
        let zeros = bytes[start..i - 1].iter().take_while(|&&b| b == b'0').count();
        if zeros > 0 {
            // Digits are ASCII, so these byte offsets are char boundaries.
            let text = out.get_or_insert_with(|| String::with_capacity(name.len()));
            text.push_str(&name[copied..start]);
            text.push_str(&name[start + zeros..i]);
            copied = i;
        }
    }
    match out {
        None => Cow::Borrowed(name),
        Some(mut text) => {
            text.push_str(&name[copied..]);
            Cow::Owned(text)
        }
    }
}

/// `_dl_cache_libcmp`: digit runs compare by numeric value, other bytes as C `char`.
pub(super) fn libcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    loop {
        let ca = a.get(i).copied().unwrap_or(0);
        let cb = b.get(j).copied().unwrap_or(0);
        if ca == 0 {
            return as_c_char(0).cmp(&as_c_char(cb));
        }
        match (ca.is_ascii_digit(), cb.is_ascii_digit()) {
            (true, true) => {
                let (run_a, next_i) = digit_run(a, i);
                let (run_b, next_j) = digit_run(b, j);
                let order = compare_numeric(run_a, run_b);
                if order != Ordering::Equal {
                    return order;
                }
                (i, j) = (next_i, next_j);
            }
            (true, false) => return Ordering::Greater,
            (false, true) => return Ordering::Less,
            (false, false) if ca != cb => return as_c_char(ca).cmp(&as_c_char(cb)),
            (false, false) => (i, j) = (i + 1, j + 1),
        }
    }
}

/// Bytes compare as the C `char` of the platform ldconfig ran on (signed on x86).
fn as_c_char(b: u8) -> c_char {
    b as c_char
}

fn digit_run(s: &[u8], start: usize) -> (&[u8], usize) {
    let len = s[start..].iter().take_while(|b| b.is_ascii_digit()).count();
    (&s[start..start + len], start + len)
}

/// Compares two digit strings by value without overflowing.
fn compare_numeric(a: &[u8], b: &[u8]) -> Ordering {
    let strip = |s: &[u8]| -> usize { s.iter().take_while(|&&d| d == b'0').count() };
    let (a, b) = (&a[strip(a)..], &b[strip(b)..]);
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// `dl_cache_hwcap_isa_level_compatible` (x86): the CPU must support the library's ISA level.
fn isa_level_compatible(level: u8, isa_1: Option<u32>) -> bool {
    match isa_1 {
        None => true,
        Some(supported) => {
            let bit = 1u32 << level;
            supported & bit == bit
        }
    }
}

/// The `hwcap_exclude` and platform tests glibc 2.36 applies to non-glibc-hwcaps entries.
fn legacy_hwcap_accepted(hwcap: u64, filter: Option<LegacyHwcapFilter>) -> bool {
    let Some(filter) = filter else {
        return hwcap == 0;
    };
    if hwcap & !filter.allowed != 0 {
        return false;
    }
    let platform = hwcap & filter.platform_mask;
    platform == 0 || Some(platform) == filter.platform_bit
}

/// 1 for the best subdirectory, 2 for the next...; 0 when the loader does not search it.
fn hwcaps_priority(subdir: &str, hwcaps: &[String]) -> u32 {
    hwcaps.iter().position(|name| name == subdir).map_or(0, |i| i as u32 + 1)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests build their fixtures with plain fs calls
mod tests {
    use super::*;
    use crate::closure::platform::{host_cache_query, host_hwcaps_subdirs, X86_64};
    use std::fs;
    use std::path::PathBuf;
    use std::process::Command;

    const X86_64_LIBC6: i32 = 0x0303;

    fn run(cmd: &mut Command) -> std::process::Output {
        let out = cmd.output().expect("test tool can be spawned");
        assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    /// The text ldconfig -p prints between "(" and ")" for an entry (glibc's print_entry).
    fn ldconfig_description(entry: &CacheEntry) -> String {
        let kind = match entry.flags & 0xff {
            0 => "libc4",
            1 => "ELF",
            2 => "libc5",
            3 => "libc6",
            _ => "unknown",
        };
        let arch = match entry.flags & 0xff00 {
            0 => String::new(),
            0x0300 => ",x86-64".into(),
            0x0800 => ",x32".into(),
            0x0a00 => ",AArch64".into(),
            other => format!(",{other}"),
        };
        let hwcap = match (&entry.hwcaps_subdir, entry.legacy_hwcap) {
            (Some(name), _) => format!(", hwcap: \"{name}\""),
            (None, 0) => String::new(),
            (None, bits) => format!(", hwcap: {bits:#018x}"),
        };
        format!("{kind}{arch}{hwcap}")
    }

    fn ldconfig_print(cache: &Path) -> Vec<String> {
        let out = run(Command::new("ldconfig").arg("-p").arg("-C").arg(cache));
        String::from_utf8(out.stdout)
            .expect("ldconfig -p prints UTF-8 paths")
            .lines()
            .filter(|line| line.starts_with('\t'))
            .map(|line| line.trim_start().to_owned())
            .collect()
    }

    fn our_print(cache: &LdCache) -> Vec<String> {
        cache.entries().iter().map(|e| format!("{} ({}) => {}", e.key, ldconfig_description(e), e.value)).collect()
    }

    fn host_cache() -> LdCache {
        LdCache::load(Path::new("/etc/ld.so.cache"))
            .expect("host cache parses")
            .expect("Debian host has /etc/ld.so.cache")
    }

    #[test]
    fn host_cache_matches_ldconfig_print() {
        let cache = host_cache();
        let expected = ldconfig_print(Path::new("/etc/ld.so.cache"));
        assert!(expected.len() > 50, "host cache unexpectedly small: {}", expected.len());
        assert_eq!(our_print(&cache), expected);
        let generator = cache.generator().expect("glibc 2.36 ldconfig writes a generator");
        assert!(generator.contains("2.36"), "{generator}");
    }

    #[test]
    fn host_libc_lookup_matches_ldconfig() {
        let cache = host_cache();
        let printed = ldconfig_print(Path::new("/etc/ld.so.cache"));
        let prefix = "libc.so.6 (libc6,x86-64) => ";
        let expected =
            printed.iter().find_map(|line| line.strip_prefix(prefix)).expect("ldconfig -p lists an x86-64 libc.so.6");
        assert_eq!(cache.lookup("libc.so.6", X86_64_LIBC6, &[]), Some(expected));
        let hwcaps = host_hwcaps_subdirs(&X86_64);
        assert_eq!(cache.lookup("libc.so.6", X86_64_LIBC6, &hwcaps), Some(expected));
        // _dl_cache_libcmp compares digit runs numerically.
        assert_eq!(cache.lookup("libc.so.06", X86_64_LIBC6, &[]), Some(expected));
        assert_eq!(cache.lookup("libc.so.60", X86_64_LIBC6, &[]), None);
        assert_eq!(cache.lookup("libc.so.6", 0x0a03, &[]), None, "no AArch64 libc on this host");
        assert_eq!(cache.lookup("libdoes-not-exist.so.1", X86_64_LIBC6, &[]), None);
    }

    #[test]
    fn every_host_entry_is_found_by_lookup() {
        let cache = host_cache();
        for entry in cache.entries().iter().filter(|e| e.legacy_hwcap == 0 && e.hwcaps_subdir.is_none()) {
            let first_plain = cache
                .entries()
                .iter()
                .find(|e| {
                    e.key == entry.key && e.flags == entry.flags && e.hwcaps_subdir.is_none() && e.legacy_hwcap == 0
                })
                .expect("the entry itself qualifies");
            assert_eq!(cache.lookup(&entry.key, entry.flags, &[]), Some(first_plain.value.as_str()), "{entry:?}");
        }
    }

    #[test]
    fn truncated_or_corrupt_caches_are_errors() {
        let bytes = fs::read("/etc/ld.so.cache").unwrap();
        let mut lengths: Vec<usize> = (0..bytes.len()).step_by(61).collect();
        lengths.extend([1, 20, 47, 48, 49, bytes.len() - 2, bytes.len() - 1]);
        for len in lengths {
            assert!(LdCache::parse(&bytes[..len]).is_err(), "prefix of {len} bytes");
        }
        assert!(LdCache::parse(b"definitely not a cache").is_err());

        let mut wrong_endian = bytes.clone();
        wrong_endian[NEW_FLAGS_OFFSET] = if ENDIAN_CURRENT == 2 { 3 } else { 2 };
        assert!(LdCache::parse(&wrong_endian).is_err());

        let mut bad_key = bytes.clone();
        bad_key[NEW_HEADER_SIZE + 4..NEW_HEADER_SIZE + 8].copy_from_slice(&u32::MAX.to_ne_bytes());
        let err = LdCache::parse(&bad_key).expect_err("key offset past the end");
        assert!(format!("{err:#}").contains("entry 0"), "{err:#}");
    }

    #[test]
    fn random_corruption_never_panics() {
        let original = fs::read("/etc/ld.so.cache").unwrap();
        let mut next = crate::closure::xorshift(0x2545_f491_4f6c_dd1d);
        let mut rejected = 0;
        for _ in 0..500 {
            let mut bytes = original.clone();
            for _ in 0..(1 + next() % 8) {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            if let Ok(cache) = LdCache::parse(&bytes) {
                // Whatever survives must still be answerable.
                let _ = cache.lookup("libc.so.6", X86_64_LIBC6, &[]);
            } else {
                rejected += 1;
            }
        }
        assert!(rejected > 0, "some corruptions must be detected");
    }

    #[test]
    fn libcmp_and_canonical_key_agree() {
        let names = [
            "libfoo.so.1",
            "libfoo.so.01",
            "libfoo.so.001",
            "libfoo.so.10",
            "libfoo.so.1.0",
            "libfoo.so.1.00",
            "libfoo.so",
            "libfoo0.so",
            "libfoo00.so",
            "lib.so.0",
            "lib.so.00",
            "libx.so.1a",
            "libx.so.01a",
            "a",
            "",
        ];
        for a in names {
            for b in names {
                let equal = libcmp(a.as_bytes(), b.as_bytes()) == Ordering::Equal;
                assert_eq!(equal, canonical_key(a) == canonical_key(b), "{a:?} vs {b:?}");
                assert_eq!(
                    libcmp(a.as_bytes(), b.as_bytes()),
                    libcmp(b.as_bytes(), a.as_bytes()).reverse(),
                    "antisymmetry {a:?} {b:?}"
                );
            }
        }
        assert_eq!(canonical_key("libfoo.so.0010.00"), "libfoo.so.10.0");
        assert_eq!(libcmp(b"libfoo.so.9", b"libfoo.so.10"), Ordering::Less);
        assert_eq!(libcmp(b"libfoo.so.1", b"libfoo.so.1.0"), Ordering::Less);
    }

    /// A directory tree ldconfig -r can index: ROOT/etc/ld.so.conf naming ROOT/opt/t.
    struct SynthRoot {
        _tmp: tempfile::TempDir,
        root: PathBuf,
    }

    impl SynthRoot {
        fn new() -> SynthRoot {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().join("root");
            fs::create_dir_all(root.join("etc")).unwrap();
            fs::create_dir_all(root.join("opt/t")).unwrap();
            fs::write(root.join("etc/ld.so.conf"), "/opt/t\n").unwrap();
            fs::write(tmp.path().join("lib.c"), "int foo(void) { return 1; }\n").unwrap();
            SynthRoot { _tmp: tmp, root }
        }

        /// Builds a library with `soname` at ROOT/opt/t/`subdir`/`soname`.
        fn add_lib(&self, subdir: &str, soname: &str) -> String {
            let dir = self.root.join("opt/t").join(subdir);
            fs::create_dir_all(&dir).unwrap();
            let src = self.root.parent().expect("root is inside the tempdir").join("lib.c");
            run(Command::new("gcc")
                .args(["-shared", "-fPIC", &format!("-Wl,-soname,{soname}")])
                .arg(&src)
                .arg("-o")
                .arg(dir.join(soname)));
            Path::new("/opt/t").join(subdir).join(soname).display().to_string()
        }

        /// Removes ROOT/opt/t/`relative`, a library file or a whole variant directory.
        fn remove(&self, relative: &str) {
            let path = self.root.join("opt/t").join(relative);
            if path.is_dir() {
                fs::remove_dir_all(path).unwrap();
            } else {
                fs::remove_file(path).unwrap();
            }
        }

        /// Runs ldconfig for this root only (-X: leave symlinks alone) and parses the result.
        fn cache(&self) -> LdCache {
            run(Command::new("ldconfig").arg("-X").arg("-r").arg(&self.root));
            let path = self.root.join("etc/ld.so.cache");
            let cache = LdCache::load(&path).unwrap().expect("ldconfig wrote a cache");
            assert_eq!(our_print(&cache), ldconfig_print(&path));
            cache
        }
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn synthetic_cache_prefers_matching_glibc_hwcaps_entry() {
        let root = SynthRoot::new();
        let plain = root.add_lib("", "libfoo.so.1");
        let v2 = root.add_lib("glibc-hwcaps/x86-64-v2", "libfoo.so.1");
        let v3 = root.add_lib("glibc-hwcaps/x86-64-v3", "libfoo.so.1");
        let cache = root.cache();
        let v2_entry = cache.entries().iter().find(|e| e.value == v2).expect("ldconfig indexed the x86-64-v2 variant");
        assert_eq!(v2_entry.hwcaps_subdir.as_deref(), Some("x86-64-v2"));
        assert_eq!(v2_entry.legacy_hwcap, 0);

        let lookup = |hwcaps: &[&str]| cache.lookup("libfoo.so.1", X86_64_LIBC6, &strings(hwcaps));
        assert_eq!(lookup(&["x86-64-v2"]), Some(v2.as_str()));
        assert_eq!(lookup(&[]), Some(plain.as_str()));
        assert_eq!(lookup(&["x86-64-v3", "x86-64-v2"]), Some(v3.as_str()));
        assert_eq!(lookup(&["x86-64-v2", "x86-64-v3"]), Some(v2.as_str()), "priority is list order");
        assert_eq!(lookup(&["x86-64-v4"]), Some(plain.as_str()));
        assert_eq!(cache.lookup("libfoo.so.1", 0x0003, &strings(&["x86-64-v2"])), None);

        // Without a plain library only a searched hwcaps subdirectory can satisfy the lookup.
        root.remove("libfoo.so.1");
        let cache = root.cache();
        assert_eq!(cache.lookup("libfoo.so.1", X86_64_LIBC6, &[]), None);
        assert_eq!(cache.lookup("libfoo.so.1", X86_64_LIBC6, &strings(&["x86-64-v3"])), Some(v3.as_str()));
    }

    #[test]
    fn legacy_hwcap_entries_are_skipped_by_lookup() {
        let root = SynthRoot::new();
        let plain = root.add_lib("", "libleg.so.1");
        let tls = root.add_lib("tls", "libleg.so.1");
        let cache = root.cache();
        let tls_entry = cache.entries().iter().find(|e| e.value == tls).expect("tls variant indexed");
        assert_eq!(tls_entry.legacy_hwcap, 1 << 63);
        assert_eq!(tls_entry.hwcaps_subdir, None);
        assert_eq!(cache.lookup("libleg.so.1", X86_64_LIBC6, &[]), Some(plain.as_str()));
    }

    #[test]
    fn compat_format_with_old_table_is_understood() {
        let root = SynthRoot::new();
        let plain = root.add_lib("", "libcompat.so.2");
        run(Command::new("ldconfig").args(["-X", "-c", "compat", "-r"]).arg(&root.root));
        let path = root.root.join("etc/ld.so.cache");
        let bytes = fs::read(&path).unwrap();
        assert!(bytes.starts_with(OLD_MAGIC), "ldconfig -c compat writes the old table first");
        let cache = LdCache::parse(&bytes).unwrap();
        assert_eq!(our_print(&cache), ldconfig_print(&path));
        assert_eq!(cache.lookup("libcompat.so.2", X86_64_LIBC6, &[]), Some(plain.as_str()));

        run(Command::new("ldconfig").args(["-X", "-c", "old", "-r"]).arg(&root.root));
        let old = LdCache::load(&path).unwrap().unwrap();
        assert_eq!(our_print(&old), ldconfig_print(&path));
        assert_eq!(old.lookup("libcompat.so.2", X86_64_LIBC6, &[]), Some(plain.as_str()));
        assert_eq!(old.generator(), None);
    }

    #[test]
    fn missing_cache_file_is_none() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(LdCache::load(&tmp.path().join("nope")).unwrap().is_none());
        let err = LdCache::load(tmp.path()).expect_err("a directory is not a cache");
        assert!(format!("{err:#}").contains(&tmp.path().display().to_string()), "{err:#}");
    }

    /// Asks the real glibc 2.36 loader, chrooted into `root`, where it finds `needed` for `exe`.
    /// None when chroot is not permitted (tests not run as root).
    fn real_loader_choice(root: &Path, exe: &str, needed: &str) -> Option<String> {
        let out = Command::new("chroot")
            .arg(root)
            .args(["/lib64/ld-linux-x86-64.so.2", "--list", exe])
            .output()
            .expect("chroot can be spawned");
        if !out.status.success() {
            eprintln!("SKIPPED: cannot run the loader in a chroot: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        let text = String::from_utf8(out.stdout).expect("ld.so --list prints UTF-8");
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{needed} => ")))
            .unwrap_or_else(|| panic!("{needed} not in ld.so --list output:\n{text}"));
        let after = line.split(" => ").nth(1).expect("line has =>");
        Some(after.split(" (").next().expect("path precedes address").to_owned())
    }

    /// Copies the host loader and libc into ROOT and builds /exe needing `needed_soname`.
    fn prepare_chroot(root: &SynthRoot, needed_soname: &str) {
        let r = &root.root;
        fs::create_dir_all(r.join("lib64")).unwrap();
        fs::create_dir_all(r.join("lib/x86_64-linux-gnu")).unwrap();
        fs::copy("/lib64/ld-linux-x86-64.so.2", r.join("lib64/ld-linux-x86-64.so.2")).unwrap();
        fs::copy("/lib/x86_64-linux-gnu/libc.so.6", r.join("lib/x86_64-linux-gnu/libc.so.6")).unwrap();
        let build = r.parent().expect("root is inside the tempdir");
        fs::write(build.join("main.c"), "int foo(void);\nint main(void) { return foo(); }\n").unwrap();
        run(Command::new("gcc")
            .args(["-shared", "-fPIC", &format!("-Wl,-soname,{needed_soname}")])
            .arg(build.join("lib.c"))
            .arg("-o")
            .arg(build.join("stub.so")));
        run(Command::new("gcc").arg(build.join("main.c")).arg(build.join("stub.so")).arg("-o").arg(r.join("exe")));
    }

    #[test]
    fn lookup_with_host_query_matches_the_real_loader() {
        let root = SynthRoot::new();
        prepare_chroot(&root, "libfoo.so.1");
        let hwcaps = host_hwcaps_subdirs(&X86_64);
        let query = host_cache_query(&X86_64, &hwcaps);
        let mut variants: Vec<String> = ["", "x86_64", "haswell", "avx512_1", "tls"]
            .iter()
            .map(|s| (*s).to_owned())
            .chain(hwcaps.iter().map(|h| format!("glibc-hwcaps/{h}")))
            .collect();
        for subdir in &variants {
            root.add_lib(subdir, "libfoo.so.1");
        }
        // Remove the variants one by one, best first as far as the loader is concerned.
        loop {
            let cache = root.cache();
            let ours = cache.lookup_with("libfoo.so.1", &query).map(str::to_owned);
            let Some(real) = real_loader_choice(&root.root, "/exe", "libfoo.so.1") else {
                return;
            };
            assert_eq!(ours.as_deref(), Some(real.as_str()), "variants left: {variants:?}");
            let chosen = Path::new(&real)
                .parent()
                .and_then(|dir| dir.strip_prefix("/opt/t").ok())
                .expect("loader chose a file under /opt/t")
                .display()
                .to_string();
            if chosen.is_empty() {
                break;
            }
            root.remove(&chosen);
            variants.retain(|v| *v != chosen);
        }
    }

    #[test]
    fn numeric_soname_comparison_matches_the_real_loader() {
        let root = SynthRoot::new();
        prepare_chroot(&root, "libbar.so.1");
        let cached = root.add_lib("", "libbar.so.01");
        let cache = root.cache();
        assert_eq!(cache.lookup("libbar.so.1", X86_64_LIBC6, &[]), Some(cached.as_str()));
        if let Some(real) = real_loader_choice(&root.root, "/exe", "libbar.so.1") {
            assert_eq!(real, cached);
        }
    }
}
