//! Reads what glibc's symbol lookup and version check read of an ELF object: its dynamic
//! symbols with their `.gnu.version` (DT_VERSYM) entries, its version needs (DT_VERNEED) and
//! definitions (DT_VERDEF), and, on demand, which symbols its relocations use.
//!
//! Every read is bounded by the file and by the PT_LOAD segment it lies in, and every count is
//! checked against the bytes read: any bytes give a value or an error, never a panic or a huge
//! allocation (a local user may own a `[[files]]` tree).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;

use anyhow::{bail, Context, Result};
use goblin::container::Ctx;
use goblin::elf::dynamic::{
    Dynamic, DT_GNU_HASH, DT_HASH, DT_JMPREL, DT_PLTREL, DT_PLTRELSZ, DT_REL, DT_RELA, DT_RELASZ, DT_RELSZ, DT_STRSZ,
    DT_STRTAB, DT_SYMTAB, DT_VERDEF, DT_VERDEFNUM, DT_VERNEED, DT_VERNEEDNUM, DT_VERSYM,
};
use goblin::elf::program_header::{ProgramHeader, PT_DYNAMIC, PT_LOAD};
use goblin::elf::reloc::RelocSection;
use goblin::elf::sym::{STB_GLOBAL, STB_GNU_UNIQUE, STB_WEAK, STT_COMMON, STT_FUNC, STT_GNU_IFUNC};
use goblin::elf::sym::{STT_NOTYPE, STT_OBJECT, STT_TLS};
use rustc_hash::FxHashMap as HashMap;

use super::elf::{
    file_slice, ident_of, open_regular_file, parse_from, program_headers, ByteSource, ElfClass, ElfInfo, FileSource,
};

const SHN_UNDEF: usize = 0;
const SHN_ABS: usize = 0xfff1;
/// The bit of a `.gnu.version` entry that hides a definition from unversioned references.
const VERSYM_HIDDEN: u16 = 0x8000;
/// vna_flags bit: a weak version need, whose absence is not fatal.
const VER_FLG_WEAK: u16 = 0x2;
/// No real object has more; a count past it is corruption (and a bound on the work done).
const MAX_VERSION_ENTRIES: u64 = 1 << 16;
/// How much of a DT_GNU_HASH chain is read at once.
const GNU_CHAIN_CHUNK: u64 = 256;
/// Largest version section read (a real one is a few kilobytes).
const MAX_VERSION_BYTES: u64 = 1 << 20;

/// One object's symbols as the loader's lookup sees them.
#[derive(Debug, Clone, Default)]
pub struct SymbolFacts {
    /// Definitions other objects can bind to, looked up by name.
    definitions: Definitions,
    /// Undefined, non-weak references: what must be found elsewhere.
    pub undefined: Vec<Reference>,
    /// DT_VERSYM is present (the object's definitions carry versions).
    pub has_versym: bool,
    /// DT_VERDEF: (index, name) of each version the object defines, its base entry (its soname)
    /// included.
    pub version_definitions: Vec<(u16, String)>,
    /// DT_VERNEED: the versions the object needs, from which file.
    pub version_needs: Vec<VersionNeed>,
    /// vna_other -> version name, for the versions of references.
    need_names: Vec<(u16, String, String)>,
    /// DT_STRTAB as read: the names of references and definitions.
    strings: Vec<u8>,
    /// Where the relocation tables lie in the file, read only when a reference is unresolved.
    pub relocations: RelocationTables,
}

/// How an object's definitions are found by name.
#[derive(Debug, Clone)]
enum Definitions {
    /// Through the object's own DT_GNU_HASH table, as the loader does: nothing is built, the
    /// tables are kept as read (a program exporting 100,000 symbols costs one read, not a map).
    GnuHash(GnuHashTable),
    /// Objects without DT_GNU_HASH (rare): name -> the `.gnu.version` entry of each definition.
    Map(HashMap<Box<[u8]>, Vec<u16>>),
}

impl Default for Definitions {
    fn default() -> Definitions {
        Definitions::Map(HashMap::default())
    }
}

/// The bytes a DT_GNU_HASH lookup reads.
#[derive(Debug, Clone)]
struct GnuHashTable {
    /// The Bloom filter (32-bit words widened for ELFCLASS32) and its shift: most lookups miss,
    /// and the filter says so in one load.
    bloom: Vec<u64>,
    bloom_shift: u32,
    buckets: Vec<u32>,
    /// The symbols from `symbol_offset` on, as the chain walk reads them (kept instead of the
    /// 16- or 24-byte table entries: the tables of every library stay in memory for the run).
    hashed: Vec<HashedSymbol>,
    symbol_offset: u32,
    is_64: bool,
}

/// One symbol of a DT_GNU_HASH table: its chain value, and what a lookup compares.
#[derive(Debug, Clone, Copy)]
struct HashedSymbol {
    chain: u32,
    /// Its name's offset in DT_STRTAB; [`NOT_EXPORTED`] for a symbol no other object binds to.
    name: u32,
    /// Its `.gnu.version` entry.
    version: u16,
}

/// The name offset of a hashed symbol that is not an exported definition.
const NOT_EXPORTED: u32 = u32::MAX;

/// The fields of a dynamic symbol the lookup looks at.
struct RawSymbol {
    name: u32,
    info: u8,
    section: u16,
    value: u64,
}

impl GnuHashTable {
    /// Whether some exported definition of `name` has a `.gnu.version` entry `accept` takes
    /// (a lookup allocates nothing: it runs once per reference of every program).
    fn any_definition(&self, name: &[u8], hash: u32, strings: &[u8], mut accept: impl FnMut(u16) -> bool) -> bool {
        if self.buckets.is_empty() || !self.may_define(hash) {
            return false;
        }
        let Some(&start) = self.buckets.get(hash as usize % self.buckets.len()) else { return false };
        if start < self.symbol_offset {
            return false;
        }
        let mut position = (start - self.symbol_offset) as usize;
        while let Some(symbol) = self.hashed.get(position) {
            if symbol.chain | 1 == hash | 1
                && symbol.name != NOT_EXPORTED
                && name_at(strings, symbol.name, name)
                && accept(symbol.version)
            {
                return true;
            }
            if symbol.chain & 1 == 1 {
                break;
            }
            position += 1;
        }
        false
    }
}

impl GnuHashTable {
    /// The Bloom filter test of glibc's do_lookup_x: false means surely not defined here.
    fn may_define(&self, hash: u32) -> bool {
        if self.bloom.is_empty() {
            return true;
        }
        let bits = if self.is_64 { 64 } else { 32 };
        let word = self.bloom[(hash / bits) as usize % self.bloom.len()];
        let mask = (1u64 << (hash % bits)) | (1u64 << ((hash >> (self.bloom_shift % 32)) % bits));
        word & mask == mask
    }
}

/// The GNU hash of a symbol name (dl_new_hash).
pub fn gnu_hash(name: &[u8]) -> u32 {
    name.iter().fold(5381u32, |hash, &byte| hash.wrapping_mul(33).wrapping_add(u32::from(byte)))
}

fn u16_of(bytes: &[u8], index: usize, little_endian: bool) -> Option<u16> {
    let raw: [u8; 2] = bytes.get(index * 2..index * 2 + 2)?.try_into().ok()?;
    Some(if little_endian { u16::from_le_bytes(raw) } else { u16::from_be_bytes(raw) })
}

/// Decodes one Elf32_Sym (16 bytes) or Elf64_Sym (24 bytes); `bytes` holds exactly one entry
/// (callers slice it out of the table with its size).
fn decode_symbol(bytes: &[u8], is_64: bool, little_endian: bool) -> RawSymbol {
    let u16_at = |at: usize| -> u16 {
        let raw = [bytes[at], bytes[at + 1]];
        if little_endian {
            u16::from_le_bytes(raw)
        } else {
            u16::from_be_bytes(raw)
        }
    };
    let u32_at = |at: usize| -> u32 {
        let raw = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        if little_endian {
            u32::from_le_bytes(raw)
        } else {
            u32::from_be_bytes(raw)
        }
    };
    if is_64 {
        let low = u64::from(u32_at(8));
        let high = u64::from(u32_at(12));
        let value = if little_endian { low | high << 32 } else { high | low << 32 };
        RawSymbol { name: u32_at(0), info: bytes[4], section: u16_at(6), value }
    } else {
        RawSymbol { name: u32_at(0), info: bytes[12], section: u16_at(14), value: u64::from(u32_at(4)) }
    }
}

/// Whether a defined symbol is one other objects can bind to (glibc's do_lookup_x).
fn is_exported(symbol: &RawSymbol) -> bool {
    let binding = symbol.info >> 4;
    let kind = symbol.info & 0xf;
    usize::from(symbol.section) != SHN_UNDEF
        && matches!(binding, STB_GLOBAL | STB_WEAK | STB_GNU_UNIQUE)
        && matches!(kind, STT_NOTYPE | STT_OBJECT | STT_FUNC | STT_COMMON | STT_TLS | STT_GNU_IFUNC)
        && !(symbol.value == 0 && usize::from(symbol.section) != SHN_ABS && kind != STT_TLS)
}

/// Whether the NUL-terminated name at `offset` of a string table is `name` (without scanning
/// the table for the NUL first).
fn name_at(strings: &[u8], offset: u32, name: &[u8]) -> bool {
    let start = offset as usize;
    let Some(end) = start.checked_add(name.len()) else { return false };
    strings.get(start..end) == Some(name) && strings.get(end) == Some(&0)
}

/// An undefined, non-weak dynamic symbol of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Where its name lies in the object's string table, and how long it is (no copy per
    /// reference: a program has hundreds).
    name_offset: u32,
    name_length: u32,
    /// Its index in the dynamic symbol table (what relocations name).
    pub index: u32,
    /// The DT_VERNEED pair (its position in `need_names`) whose version it asks for, if any.
    need: Option<u16>,
    /// Its `.gnu.version` entry has the hidden bit.
    pub hidden: bool,
}

/// One (file, version) pair of DT_VERNEED.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionNeed {
    pub file: String,
    pub version: String,
    /// VER_FLG_WEAK: the loader only warns when it is missing.
    pub weak: bool,
}

/// File ranges of the relocation tables (offset, size), and their entry kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelocationTables {
    /// DT_RELA/DT_REL without the PLT part (applied at start whatever the binding mode).
    non_plt: Option<(u64, u64, bool)>,
    /// DT_JMPREL: the PLT relocations (bound lazily unless the object is `-z now`).
    plt: Option<(u64, u64, bool)>,
    is_64: bool,
    little_endian: bool,
}

/// Which symbols (by index) an object's relocations use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelocationUses {
    /// Used by relocations applied at start (GLOB_DAT, absolute addresses, copies...).
    pub at_start: BTreeSet<u32>,
    /// Used by PLT relocations only.
    pub plt: BTreeSet<u32>,
}

impl SymbolFacts {
    /// Whether a reference to `name` (with `version`, `hidden`) binds to a definition of this
    /// object, by glibc 2.36's `check_match` (elf/dl-lookup.c).
    pub fn satisfies(&self, name: &[u8], version: Option<&str>, hidden: bool) -> bool {
        self.satisfies_hashed(name, gnu_hash(name), version, hidden)
    }

    /// [`SymbolFacts::satisfies`] with the name's [`gnu_hash`] computed once by the caller.
    pub fn satisfies_hashed(&self, name: &[u8], hash: u32, version: Option<&str>, hidden: bool) -> bool {
        if !self.has_versym {
            return self.any_definition(name, hash, |_| true);
        }
        match version {
            Some(wanted) => self.any_definition(name, hash, |entry| {
                let index = entry & !VERSYM_HIDDEN;
                // An unversioned (index 0/1) visible definition serves any versioned reference.
                self.version_name(index) == Some(wanted) || (!hidden && index < 2 && entry & VERSYM_HIDDEN == 0)
            }),
            None => {
                // An old unversioned reference binds to the base (index < 3) definition, or to
                // the one visible versioned definition when there is exactly one.
                let mut visible = 0;
                let base = self.any_definition(name, hash, |entry| {
                    visible += usize::from(entry & VERSYM_HIDDEN == 0);
                    entry & !VERSYM_HIDDEN < 3
                });
                base || visible == 1
            }
        }
    }

    /// Whether some exported definition of `name` has a `.gnu.version` entry `accept` takes.
    fn any_definition(&self, name: &[u8], hash: u32, mut accept: impl FnMut(u16) -> bool) -> bool {
        match &self.definitions {
            Definitions::Map(map) => map.get(name).is_some_and(|entries| entries.iter().any(|&entry| accept(entry))),
            Definitions::GnuHash(table) => table.any_definition(name, hash, &self.strings, accept),
        }
    }

    /// The name of one of this object's references.
    pub fn name_of(&self, reference: &Reference) -> &[u8] {
        let start = reference.name_offset as usize;
        self.strings.get(start..start + reference.name_length as usize).unwrap_or_default()
    }

    /// The version one of this object's references asks for.
    pub fn version_of(&self, reference: &Reference) -> Option<&str> {
        self.need_names.get(usize::from(reference.need?)).map(|(_, name, _)| name.as_str())
    }

    /// Which DT_VERNEED (file, version) pair of [`SymbolFacts::needs`] a reference asks for.
    pub fn need_of(&self, reference: &Reference) -> Option<usize> {
        reference.need.map(usize::from)
    }

    /// The (file, version) pairs this object's references name, in the order [`SymbolFacts::need_of`]
    /// counts them.
    pub fn needs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.need_names.iter().map(|(_, version, file)| (file.as_str(), version.as_str()))
    }

    /// The `.gnu.version` indexes that stand for `version` in this object (glibc matches
    /// versions by name; a reference's wanted version is looked up here once, then every
    /// definition is checked by index).
    pub fn version_indexes(&self, version: &str) -> Vec<u16> {
        let mut indexes: Vec<u16> = Vec::new();
        for (position, (index, name)) in self.version_definitions.iter().enumerate() {
            // The first definition of an index names it (as `version_name` reads it).
            let first = !self.version_definitions[..position].iter().any(|(earlier, _)| earlier == index);
            if first && name == version {
                indexes.push(*index);
            }
        }
        indexes
    }

    /// [`SymbolFacts::satisfies_hashed`] for a versioned reference whose version is known here
    /// by its [`SymbolFacts::version_indexes`].
    pub fn satisfies_indexed(&self, name: &[u8], hash: u32, version_indexes: &[u16], hidden: bool) -> bool {
        if !self.has_versym {
            return self.any_definition(name, hash, |_| true);
        }
        self.any_definition(name, hash, |entry| {
            let index = entry & !VERSYM_HIDDEN;
            version_indexes.contains(&index) || (!hidden && index < 2 && entry & VERSYM_HIDDEN == 0)
        })
    }

    /// How many definitions other objects can bind to.
    pub fn definition_count(&self) -> usize {
        match &self.definitions {
            Definitions::Map(map) => map.values().map(Vec::len).sum(),
            Definitions::GnuHash(table) => table.hashed.iter().filter(|symbol| symbol.name != NOT_EXPORTED).count(),
        }
    }

    fn version_name(&self, index: u16) -> Option<&str> {
        self.version_definitions.iter().find(|(defined, _)| *defined == index).map(|(_, name)| name.as_str())
    }

    /// Whether DT_VERDEF defines `version` (glibc's `match_symbol` compares every entry, the base
    /// one included).
    pub fn defines_version(&self, version: &str) -> bool {
        self.version_definitions.iter().any(|(_, name)| name == version)
    }

    /// The versions DT_VERDEF defines, the base entry (the soname) left out.
    pub fn defined_versions(&self) -> Vec<&str> {
        self.version_definitions.iter().filter(|(index, _)| *index > 1).map(|(_, name)| name.as_str()).collect()
    }

    /// The object has DT_VERDEF at all (glibc skips the check of a needed version otherwise).
    pub fn has_version_definitions(&self) -> bool {
        !self.version_definitions.is_empty()
    }
}

/// Reads the symbol facts of the ELF file at `path`; Ok(None) when it is not ELF.
pub fn read_symbols(path: &Path) -> Result<Option<SymbolFacts>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let length = file.metadata().with_context(|| format!("inspecting {}", path.display()))?.len();
    FileSource::new(&file, length)
        .and_then(|source| symbols_from(&source))
        .with_context(|| format!("reading the dynamic symbols of {}", path.display()))
}

/// The ELF facts of a program with, when it is started (it has PT_INTERP), its symbol facts,
/// read through one open: a program is judged right after its load, and reading it once spares
/// an open, an fstat and the header reads. Ok(None) when it is not ELF or not a regular file.
pub fn read_program(path: &Path) -> Result<Option<(ElfInfo, std::fs::Metadata, Option<SymbolFacts>)>> {
    let Some((file, metadata)) = open_regular_file(path)? else { return Ok(None) };
    let source =
        FileSource::new(&file, metadata.len()).with_context(|| format!("parsing ELF file {}", path.display()))?;
    let Some(info) = parse_from(&source).with_context(|| format!("parsing ELF file {}", path.display()))? else {
        return Ok(None);
    };
    let symbols = match info.interpreter {
        Some(_) => {
            symbols_from(&source).with_context(|| format!("reading the dynamic symbols of {}", path.display()))?
        }
        None => None,
    };
    Ok(Some((info, metadata, symbols)))
}

/// [`read_symbols`] on bytes in memory.
pub fn parse_symbols(bytes: &[u8]) -> Result<Option<SymbolFacts>> {
    symbols_from(&bytes)
}

/// Which symbols the relocations of the file at `path` use (its tables as `facts` found them).
pub fn read_relocation_uses(path: &Path, facts: &SymbolFacts) -> Result<RelocationUses> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let length = file.metadata().with_context(|| format!("inspecting {}", path.display()))?.len();
    FileSource::new(&file, length)
        .and_then(|source| relocation_uses(&source, &facts.relocations))
        .with_context(|| format!("reading the relocations of {}", path.display()))
}

/// [`read_relocation_uses`] on bytes in memory.
pub fn parse_relocation_uses(bytes: &[u8], facts: &SymbolFacts) -> Result<RelocationUses> {
    relocation_uses(&bytes, &facts.relocations)
}

/// The dynamic entries the symbol reading needs (the last of each, as glibc keeps).
#[derive(Default)]
struct SymbolRefs {
    symtab: Option<u64>,
    strtab: Option<u64>,
    strsz: u64,
    hash: Option<u64>,
    gnu_hash: Option<u64>,
    versym: Option<u64>,
    verneed: Option<u64>,
    verneednum: u64,
    verdef: Option<u64>,
    verdefnum: u64,
    rela: Option<u64>,
    relasz: u64,
    rel: Option<u64>,
    relsz: u64,
    jmprel: Option<u64>,
    pltrelsz: u64,
    pltrel: u64,
}

/// An ELF image being read: its bytes, header facts and load segments.
struct Image<'a> {
    source: &'a dyn ByteSource,
    phdrs: Vec<ProgramHeader>,
    ctx: Ctx,
}

impl<'a> Image<'a> {
    /// The file offset of `vaddr` and how many bytes of file data its PT_LOAD holds from there.
    fn at(&self, vaddr: u64) -> Option<(u64, u64)> {
        let ph = self
            .phdrs
            .iter()
            .find(|ph| ph.p_type == PT_LOAD && vaddr >= ph.p_vaddr && vaddr - ph.p_vaddr < ph.p_filesz)?;
        let into = vaddr - ph.p_vaddr;
        Some((ph.p_offset.checked_add(into)?, ph.p_filesz - into))
    }

    /// Exactly `size` bytes at `vaddr`, inside one PT_LOAD segment's file data.
    fn read(&self, vaddr: u64, size: u64, what: &str) -> Result<Cow<'a, [u8]>> {
        let (offset, available) = self.at(vaddr).with_context(|| format!("{what} at {vaddr:#x} is not in the file"))?;
        if size > available {
            bail!("{what} at {vaddr:#x} ({size} bytes) runs past its segment");
        }
        file_slice(self.source, offset, size, what)
    }

    /// Up to `limit` bytes at `vaddr` (fewer when its segment ends first).
    fn read_up_to(&self, vaddr: u64, limit: u64, what: &str) -> Result<Cow<'a, [u8]>> {
        let (offset, available) = self.at(vaddr).with_context(|| format!("{what} at {vaddr:#x} is not in the file"))?;
        file_slice(self.source, offset, available.min(limit), what)
    }

    fn u32_at(&self, bytes: &[u8], at: usize) -> Option<u32> {
        let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.ctx.is_little_endian() { u32::from_le_bytes(raw) } else { u32::from_be_bytes(raw) })
    }

    fn u16_at(&self, bytes: &[u8], at: usize) -> Option<u16> {
        let raw: [u8; 2] = bytes.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if self.ctx.is_little_endian() { u16::from_le_bytes(raw) } else { u16::from_be_bytes(raw) })
    }
}

fn symbols_from(source: &dyn ByteSource) -> Result<Option<SymbolFacts>> {
    let head_size = source.length().min(ElfClass::Elf64.header_size() as u64) as usize;
    let head = source.read(0, head_size)?;
    let Some(ident) = ident_of(&head) else { return Ok(None) };
    let ctx = ident.ctx();
    let phdrs = program_headers(source, &head, ctx)?;
    let Some(dynamic) = phdrs.iter().rev().find(|ph| ph.p_type == PT_DYNAMIC).cloned() else {
        return Ok(Some(SymbolFacts::default()));
    };
    let image = Image { source, phdrs, ctx };
    let refs = symbol_refs(&image, &dynamic)?;
    let mut facts = SymbolFacts {
        relocations: relocation_tables(&image, &refs),
        has_versym: refs.versym.is_some(),
        ..SymbolFacts::default()
    };
    let strings = match refs.strtab {
        Some(strtab) if refs.strsz > 0 => image.read_up_to(strtab, refs.strsz, "DT_STRTAB")?,
        _ => Cow::Borrowed(&[][..]),
    };
    let name = |offset: u32, what: &str| -> Result<&[u8]> {
        let rest = strings.get(offset as usize..).with_context(|| format!("{what} name past DT_STRSZ"))?;
        let end = rest.iter().position(|&byte| byte == 0).with_context(|| format!("{what} name not terminated"))?;
        Ok(&rest[..end])
    };
    let text =
        |offset: u32, what: &str| -> Result<String> { Ok(String::from_utf8_lossy(name(offset, what)?).into_owned()) };

    // Version needs first: a reference's version is named through its vna_other index.
    let mut need_names: Vec<(u16, String, String)> = Vec::new();
    if let Some(verneed) = refs.verneed {
        let entries =
            walk_growing(&image, verneed, "DT_VERNEED", |bytes| walk_verneed(&image, bytes, refs.verneednum))?;
        for (file, aux) in entries {
            let file = text(file, "DT_VERNEED file")?;
            for (name_offset, flags, index) in aux {
                let version = text(name_offset, "DT_VERNEED version")?;
                need_names.push((index, version.clone(), file.clone()));
                facts.version_needs.push(VersionNeed { file: file.clone(), version, weak: flags & VER_FLG_WEAK != 0 });
            }
        }
    }
    if let Some(verdef) = refs.verdef {
        let entries = walk_growing(&image, verdef, "DT_VERDEF", |bytes| walk_verdef(&image, bytes, refs.verdefnum))?;
        for (index, name_offset) in entries {
            facts.version_definitions.push((index, text(name_offset, "DT_VERDEF")?));
        }
    }

    let Some(symtab) = refs.symtab else { return Ok(Some(facts)) };
    let count = symbol_count(&image, &refs)?;
    let entry_size = if ctx.is_big() { 24 } else { 16 };
    let table_size = count.checked_mul(entry_size).context("symbol count overflows")?;
    if table_size > source.length() {
        bail!("the hash table claims {count} dynamic symbols, more than the file holds");
    }
    let table = image.read(symtab, table_size, "DT_SYMTAB")?;
    let versions = match refs.versym {
        Some(versym) if count > 0 => image.read(versym, count * 2, "DT_VERSYM")?,
        _ => Cow::Borrowed(&[][..]),
    };
    let (is_64, little_endian) = (ctx.is_big(), ctx.is_little_endian());
    // Both tables were read at exactly `count` entries: no entry lies past its data.
    let version_entry = |index: usize| -> u16 {
        if refs.versym.is_none() {
            return 1;
        }
        u16_of(&versions, index, little_endian).unwrap_or(1)
    };
    let gnu_table = gnu_table_of(&image, &refs, count)?;
    let mut map: Option<HashMap<Box<[u8]>, Vec<u16>>> = gnu_table.is_none().then(HashMap::default);
    // The hashed symbols' chain values, filled in with what a lookup compares as the loop
    // meets them.
    let (mut hashed, hashed_from) = match &gnu_table {
        Some((_, _, _, chains, symbol_offset)) => (
            chains.iter().map(|&chain| HashedSymbol { chain, name: NOT_EXPORTED, version: 1 }).collect(),
            *symbol_offset as usize,
        ),
        None => (Vec::new(), usize::MAX),
    };
    for (index, entry_bytes) in table.chunks_exact(entry_size as usize).enumerate().skip(1) {
        let symbol = decode_symbol(entry_bytes, is_64, little_endian);
        if let Some(slot) = index.checked_sub(hashed_from).and_then(|position| hashed.get_mut(position)) {
            if is_exported(&symbol) {
                *slot = HashedSymbol { chain: slot.chain, name: symbol.name, version: version_entry(index) };
            }
        }
        if usize::from(symbol.section) == SHN_UNDEF {
            if symbol.info >> 4 != STB_GLOBAL {
                // A weak undefined reference resolves to 0 when nothing defines it.
                continue;
            }
            let symbol_name = name(symbol.name, "symbol")?;
            if symbol_name.is_empty() {
                continue;
            }
            let entry = version_entry(index);
            let version_index = entry & !VERSYM_HIDDEN;
            let need = match version_index {
                0 | 1 => None,
                _ => need_names.iter().position(|(index, _, _)| *index == version_index),
            };
            facts.undefined.push(Reference {
                name_offset: symbol.name,
                name_length: symbol_name.len() as u32,
                index: index as u32,
                // At most MAX_VERSION_ENTRIES pairs are read: a position fits.
                need: need.and_then(|position| u16::try_from(position).ok()),
                hidden: entry & VERSYM_HIDDEN != 0,
            });
            continue;
        }
        if let Some(map) = map.as_mut().filter(|_| is_exported(&symbol)) {
            map.entry(name(symbol.name, "symbol")?.into()).or_default().push(version_entry(index));
        }
    }
    facts.need_names = need_names;
    facts.strings = strings.into_owned();
    facts.definitions = match (map, gnu_table) {
        (Some(map), _) => Definitions::Map(map),
        (None, None) => Definitions::default(),
        (None, Some((bloom, bloom_shift, buckets, _, symbol_offset))) => {
            Definitions::GnuHash(GnuHashTable { bloom, bloom_shift, buckets, hashed, symbol_offset, is_64 })
        }
    };
    Ok(Some(facts))
}

/// DT_GNU_HASH's buckets, the chain values of the hashed symbols, and the first hashed symbol.
/// DT_GNU_HASH as the lookup uses it: Bloom words and shift, buckets, chain values, first
/// hashed symbol.
type GnuTableParts = (Vec<u64>, u32, Vec<u32>, Vec<u32>, u32);

fn gnu_table_of(image: &Image, refs: &SymbolRefs, count: u64) -> Result<Option<GnuTableParts>> {
    let Some(gnu_hash) = refs.gnu_hash else { return Ok(None) };
    let layout = gnu_hash_layout(image, gnu_hash)?;
    let bucket_bytes = image.read(layout.buckets_at, layout.buckets * 4, "DT_GNU_HASH buckets")?;
    let buckets = u32s(&bucket_bytes, image.ctx.is_little_endian());
    let hashed = count.saturating_sub(layout.symbol_offset);
    let chain_bytes = image.read(layout.buckets_at + layout.buckets * 4, hashed * 4, "DT_GNU_HASH chains")?;
    let chains = u32s(&chain_bytes, image.ctx.is_little_endian());
    let symbol_offset = u32::try_from(layout.symbol_offset).context("DT_GNU_HASH symbol offset")?;
    let word = if image.ctx.is_big() { 8 } else { 4 };
    let bloom_bytes = image.read(gnu_hash + 16, layout.buckets_at - (gnu_hash + 16), "DT_GNU_HASH Bloom filter")?;
    let bloom = bloom_bytes
        .chunks_exact(word)
        .filter_map(|raw| {
            let low = u64::from(image.u32_at(raw, 0)?);
            if word == 4 {
                return Some(low);
            }
            let high = u64::from(image.u32_at(raw, 4)?);
            Some(if image.ctx.is_little_endian() { low | high << 32 } else { high | low << 32 })
        })
        .collect();
    Ok(Some((bloom, layout.bloom_shift, buckets, chains, symbol_offset)))
}

/// The 32-bit words of `bytes` (collected at their exact count: no regrowing).
fn u32s(bytes: &[u8], little_endian: bool) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|raw| {
            let raw = [raw[0], raw[1], raw[2], raw[3]];
            if little_endian {
                u32::from_le_bytes(raw)
            } else {
                u32::from_be_bytes(raw)
            }
        })
        .collect()
}

/// Where the parts of a DT_GNU_HASH table are.
struct GnuHashLayout {
    bloom_shift: u32,
    buckets: u64,
    symbol_offset: u64,
    buckets_at: u64,
}

fn gnu_hash_layout(image: &Image, gnu_hash: u64) -> Result<GnuHashLayout> {
    let header = image.read(gnu_hash, 16, "DT_GNU_HASH")?;
    let field = |at| image.u32_at(&header, at).context("DT_GNU_HASH header");
    let (buckets, symbol_offset, bloom_words) = (u64::from(field(0)?), u64::from(field(4)?), u64::from(field(8)?));
    let word = if image.ctx.is_big() { 8 } else { 4 };
    let buckets_at = bloom_words
        .checked_mul(word)
        .and_then(|bloom| gnu_hash.checked_add(16)?.checked_add(bloom))
        .context("DT_GNU_HASH overflows")?;
    if buckets.checked_mul(4).is_none_or(|bytes| bytes > image.source.length()) {
        bail!("DT_GNU_HASH claims {buckets} buckets, more than the file holds");
    }
    let bloom_shift = field(12)?;
    Ok(GnuHashLayout { bloom_shift, buckets, symbol_offset, buckets_at })
}

fn symbol_refs(image: &Image, dynamic: &ProgramHeader) -> Result<SymbolRefs> {
    let segment = file_slice(image.source, dynamic.p_offset, dynamic.p_filesz, "PT_DYNAMIC segment")?;
    let relocated = ProgramHeader { p_offset: 0, ..dynamic.clone() };
    let parsed = Dynamic::parse(&segment, std::slice::from_ref(&relocated), image.ctx)
        .context("malformed PT_DYNAMIC segment")?;
    let mut refs = SymbolRefs::default();
    for entry in parsed.iter().flat_map(|d| d.dyns.iter()) {
        let value = entry.d_val;
        match entry.d_tag {
            DT_SYMTAB => refs.symtab = Some(value),
            DT_STRTAB => refs.strtab = Some(value),
            DT_STRSZ => refs.strsz = value,
            DT_HASH => refs.hash = Some(value),
            DT_GNU_HASH => refs.gnu_hash = Some(value),
            DT_VERSYM => refs.versym = Some(value),
            DT_VERNEED => refs.verneed = Some(value),
            DT_VERNEEDNUM => refs.verneednum = value,
            DT_VERDEF => refs.verdef = Some(value),
            DT_VERDEFNUM => refs.verdefnum = value,
            DT_RELA => refs.rela = Some(value),
            DT_RELASZ => refs.relasz = value,
            DT_REL => refs.rel = Some(value),
            DT_RELSZ => refs.relsz = value,
            DT_JMPREL => refs.jmprel = Some(value),
            DT_PLTRELSZ => refs.pltrelsz = value,
            DT_PLTREL => refs.pltrel = value,
            _ => {}
        }
    }
    Ok(refs)
}

/// How many entries DT_SYMTAB has: DT_HASH says it (nchain); DT_GNU_HASH by its last chain.
fn symbol_count(image: &Image, refs: &SymbolRefs) -> Result<u64> {
    if let Some(hash) = refs.hash {
        let header = image.read(hash, 8, "DT_HASH")?;
        return Ok(u64::from(image.u32_at(&header, 4).context("DT_HASH header")?));
    }
    let Some(gnu_hash) = refs.gnu_hash else { return Ok(0) };
    let GnuHashLayout { buckets, symbol_offset, buckets_at, .. } = gnu_hash_layout(image, gnu_hash)?;
    let bucket_bytes = buckets * 4;
    let bucket_table = image.read(buckets_at, bucket_bytes, "DT_GNU_HASH buckets")?;
    let last_start = (0..buckets as usize).filter_map(|bucket| image.u32_at(&bucket_table, bucket * 4)).max();
    let last_start = match last_start {
        Some(start) if u64::from(start) >= symbol_offset => u64::from(start),
        _ => return Ok(symbol_offset),
    };
    // The chain of the last bucket ends at the last symbol: its entry has the low bit set.
    let chains_at = buckets_at.checked_add(bucket_bytes).context("DT_GNU_HASH overflows")?;
    let first_entry = chains_at
        .checked_add((last_start - symbol_offset).checked_mul(4).context("DT_GNU_HASH overflows")?)
        .context("DT_GNU_HASH overflows")?;
    // A chain is a few entries long: read it a little at a time, not to its segment's end.
    let mut position = 0u64;
    loop {
        let at = first_entry.checked_add(position * 4).context("DT_GNU_HASH overflows")?;
        let chunk = image.read_up_to(at, GNU_CHAIN_CHUNK, "DT_GNU_HASH chain")?;
        let entries: Vec<&[u8]> = chunk.chunks_exact(4).collect();
        if entries.is_empty() {
            bail!("the last DT_GNU_HASH chain never ends");
        }
        for entry in entries {
            let value = image.u32_at(entry, 0).context("DT_GNU_HASH chain")?;
            position += 1;
            if value & 1 == 1 {
                return Ok(last_start + position);
            }
        }
    }
}

/// Walks a version section read a page first, then more while the walk runs past what was read
/// (up to MAX_VERSION_BYTES): the sections are small, their segments may be huge.
fn walk_growing<T>(image: &Image, vaddr: u64, what: &str, walk: impl Fn(&[u8]) -> Result<T>) -> Result<T> {
    let mut size = 4096;
    loop {
        let bytes = image.read_up_to(vaddr, size, what)?;
        let walked = walk(&bytes);
        if walked.is_ok() || (bytes.len() as u64) < size || size >= MAX_VERSION_BYTES {
            return walked;
        }
        size *= 8;
    }
}

/// DT_VERNEED entries: (vn_file, [(vna_name, vna_flags, vna_other)]).
type NeedEntries = Vec<(u32, Vec<(u32, u16, u16)>)>;

fn walk_verneed(image: &Image, bytes: &[u8], count: u64) -> Result<NeedEntries> {
    let mut entries = Vec::new();
    let mut at = 0usize;
    // Bounds the work on hostile counts: no more (file, version) pairs than a real object has.
    let mut pairs_left = MAX_VERSION_ENTRIES;
    for _ in 0..count.min(MAX_VERSION_ENTRIES) {
        let field16 = |offset: usize| image.u16_at(bytes, at + offset).context("DT_VERNEED entry past its data");
        let field32 = |offset: usize| image.u32_at(bytes, at + offset).context("DT_VERNEED entry past its data");
        let (aux_count, file, aux_offset, next) = (field16(2)?, field32(4)?, field32(8)?, field32(12)?);
        let mut aux = Vec::new();
        let mut aux_at = at.checked_add(aux_offset as usize).context("DT_VERNEED overflows")?;
        for _ in 0..aux_count {
            pairs_left = pairs_left.checked_sub(1).context("DT_VERNEED names more versions than any object has")?;
            let field16 = |offset: usize| image.u16_at(bytes, aux_at + offset).context("DT_VERNEED aux past its data");
            let field32 = |offset: usize| image.u32_at(bytes, aux_at + offset).context("DT_VERNEED aux past its data");
            aux.push((field32(8)?, field16(4)?, field16(6)?));
            let aux_next = field32(12)?;
            if aux_next == 0 {
                break;
            }
            aux_at = aux_at.checked_add(aux_next as usize).context("DT_VERNEED overflows")?;
        }
        entries.push((file, aux));
        if next == 0 {
            break;
        }
        at = at.checked_add(next as usize).context("DT_VERNEED overflows")?;
    }
    Ok(entries)
}

/// DT_VERDEF entries: (vd_ndx, name of its first aux).
fn walk_verdef(image: &Image, bytes: &[u8], count: u64) -> Result<Vec<(u16, u32)>> {
    let mut entries = Vec::new();
    let mut at = 0usize;
    for _ in 0..count.min(MAX_VERSION_ENTRIES) {
        let field16 = |offset: usize| image.u16_at(bytes, at + offset).context("DT_VERDEF entry past its data");
        let field32 = |offset: usize| image.u32_at(bytes, at + offset).context("DT_VERDEF entry past its data");
        let (index, aux_offset, next) = (field16(4)?, field32(12)?, field32(16)?);
        let aux_at = at.checked_add(aux_offset as usize).context("DT_VERDEF overflows")?;
        let name = image.u32_at(bytes, aux_at).context("DT_VERDEF aux past its data")?;
        entries.push((index, name));
        if next == 0 {
            break;
        }
        at = at.checked_add(next as usize).context("DT_VERDEF overflows")?;
    }
    Ok(entries)
}

/// The file ranges of the relocation tables; ranges that do not map to the file are left out
/// (their uses are then unknown).
fn relocation_tables(image: &Image, refs: &SymbolRefs) -> RelocationTables {
    let range = |vaddr: Option<u64>, size: u64| -> Option<(u64, u64)> {
        let (offset, available) = image.at(vaddr?)?;
        (size > 0 && size <= available).then_some((offset, size))
    };
    let plt_is_rela = refs.pltrel == DT_RELA;
    let plt = range(refs.jmprel, refs.pltrelsz);
    let (table, size, is_rela) = match refs.rela {
        Some(_) => (refs.rela, refs.relasz, true),
        None => (refs.rel, refs.relsz, false),
    };
    // GNU ld may count .rela.plt in DT_RELASZ when it follows .rela.dyn; glibc then skips it
    // there (elf/dynamic-link.h): so do we.
    let non_plt = range(table, size).map(|(offset, size)| match plt {
        Some((plt_offset, _)) if plt_offset > offset && plt_offset < offset + size => (offset, plt_offset - offset),
        _ => (offset, size),
    });
    RelocationTables {
        non_plt: non_plt.map(|(offset, size)| (offset, size, is_rela)),
        plt: plt.map(|(offset, size)| (offset, size, plt_is_rela)),
        is_64: image.ctx.is_big(),
        little_endian: image.ctx.is_little_endian(),
    }
}

fn relocation_uses(source: &dyn ByteSource, tables: &RelocationTables) -> Result<RelocationUses> {
    let container = if tables.is_64 { goblin::container::Container::Big } else { goblin::container::Container::Little };
    let endian = if tables.little_endian { goblin::container::Endian::Little } else { goblin::container::Endian::Big };
    let ctx = Ctx::new(container, endian);
    let mut uses = RelocationUses::default();
    let read = |range: Option<(u64, u64, bool)>, into: &mut BTreeSet<u32>| -> Result<()> {
        let Some((offset, size, is_rela)) = range else { return Ok(()) };
        let bytes = file_slice(source, offset, size, "relocation table")?;
        let table = RelocSection::parse(&bytes, 0, bytes.len(), is_rela, ctx).context("malformed relocation table")?;
        for relocation in table.iter() {
            if relocation.r_sym != 0 {
                into.insert(u32::try_from(relocation.r_sym).unwrap_or(u32::MAX));
            }
        }
        Ok(())
    };
    read(tables.non_plt, &mut uses.at_start)?;
    read(tables.plt, &mut uses.plt)?;
    Ok(uses)
}

#[cfg(test)]
mod tests;
