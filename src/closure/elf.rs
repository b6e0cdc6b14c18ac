//! Reads the loader-relevant facts of an ELF file (interpreter, DT_NEEDED, soname, search paths) without running it.

use std::borrow::Cow;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use goblin::container::{Container, Ctx, Endian};
use goblin::elf::dynamic::{
    Dynamic, DF_1_NODEFLIB, DF_1_NOW, DF_BIND_NOW, DT_BIND_NOW, DT_FLAGS, DT_FLAGS_1, DT_NEEDED, DT_RPATH, DT_RUNPATH,
    DT_SONAME, DT_STRTAB,
};
use goblin::elf::program_header::{ProgramHeader, PT_DYNAMIC, PT_INTERP, PT_LOAD};
use goblin::elf::Elf;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ELFDATA2MSB: u8 = 2;
/// Offset of e_machine; identical for both classes because it directly follows e_ident and e_type.
const E_MACHINE_OFFSET: usize = 18;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ElfClass {
    Elf32,
    Elf64,
}

impl ElfClass {
    /// Size of the ELF file header (Elf32_Ehdr / Elf64_Ehdr).
    pub fn header_size(self) -> usize {
        match self {
            ElfClass::Elf32 => 52,
            ElfClass::Elf64 => 64,
        }
    }

    fn container(self) -> Container {
        match self {
            ElfClass::Elf32 => Container::Little,
            ElfClass::Elf64 => Container::Big,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ElfIdent {
    pub class: ElfClass,
    pub little_endian: bool,
    /// e_machine, e.g. 62 (EM_X86_64), 3 (EM_386), 183 (EM_AARCH64).
    pub machine: u16,
}

impl ElfIdent {
    pub(super) fn ctx(self) -> Ctx {
        let endian = if self.little_endian { Endian::Little } else { Endian::Big };
        Ctx::new(self.class.container(), endian)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ElfInfo {
    pub ident: ElfIdent,
    /// PT_INTERP without the trailing NUL (the first PT_INTERP, which is the one the kernel uses).
    pub interpreter: Option<String>,
    /// DT_NEEDED in file order.
    pub needed: Vec<String>,
    /// DT_SONAME.
    pub soname: Option<String>,
    /// DT_RPATH split on ':' (raw, `$ORIGIN` etc. not expanded, empty pieces dropped).
    /// Kept even when DT_RUNPATH exists, although the loader then ignores it.
    /// glibc 2.36 itself treats an empty piece as the current working directory.
    pub rpath: Vec<String>,
    /// DT_RUNPATH split on ':' (same rules as `rpath`).
    pub runpath: Vec<String>,
    /// DF_1_NODEFLIB is set in DT_FLAGS_1.
    pub nodeflib: bool,
    /// Linked `-z now` (DT_BIND_NOW, DF_BIND_NOW or DF_1_NOW): the loader resolves every symbol,
    /// its PLT ones included, before the program starts.
    pub bind_now: bool,
    /// The file has a PT_DYNAMIC segment.
    pub has_dynamic: bool,
}

/// Reads only the first 64 bytes. Ok(None) when the file is not ELF (or shorter than an ELF header),
/// and for anything that is not a regular file (directories, FIFOs, devices).
pub fn read_ident(path: &Path) -> Result<Option<ElfIdent>> {
    if !is_regular_file(path)? {
        return Ok(None);
    }
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut head = Vec::with_capacity(ElfClass::Elf64.header_size());
    file.take(ElfClass::Elf64.header_size() as u64)
        .read_to_end(&mut head)
        .with_context(|| format!("reading ELF header of {}", path.display()))?;
    Ok(ident_of(&head))
}

/// Same check as [`read_ident`] on bytes already in memory.
pub fn ident_of(bytes: &[u8]) -> Option<ElfIdent> {
    if !bytes.starts_with(ELF_MAGIC) {
        return None;
    }
    let class = match *bytes.get(EI_CLASS)? {
        ELFCLASS32 => ElfClass::Elf32,
        ELFCLASS64 => ElfClass::Elf64,
        _ => return None,
    };
    let little_endian = match *bytes.get(EI_DATA)? {
        ELFDATA2LSB => true,
        ELFDATA2MSB => false,
        _ => return None,
    };
    if bytes.len() < class.header_size() {
        return None;
    }
    let raw = [bytes[E_MACHINE_OFFSET], bytes[E_MACHINE_OFFSET + 1]];
    let machine = if little_endian { u16::from_le_bytes(raw) } else { u16::from_be_bytes(raw) };
    Some(ElfIdent { class, little_endian, machine })
}

/// Ok(None) when the file is not ELF (or not a regular file). Errors, naming the path, when it
/// starts with the ELF magic but is truncated or corrupt.
///
/// Only the parts the loader reads are read, with positioned reads: the file header, the program
/// headers, PT_INTERP, PT_DYNAMIC and the strings it names. (Mapping whole files cost more in
/// page faults and munmap TLB shootdowns than the few kilobytes read here.)
pub fn read_elf(path: &Path) -> Result<Option<ElfInfo>> {
    Ok(read_elf_with_metadata(path)?.map(|(info, _)| info))
}

/// [`read_elf`], also returning the file's metadata (for its identity), with one open and one
/// fstat: a missing path is Ok(None), like any non-ELF.
pub fn read_elf_with_metadata(path: &Path) -> Result<Option<(ElfInfo, fs::Metadata)>> {
    let Some((file, metadata)) = open_regular_file(path)? else { return Ok(None) };
    let parsed = FileSource::new(&file, metadata.len())
        .and_then(|source| parse_from(&source))
        .with_context(|| format!("parsing ELF file {}", path.display()))?;
    Ok(parsed.map(|info| (info, metadata)))
}

/// Opens a regular file for reading, with its metadata (one open and one fstat): Ok(None) when
/// the path is missing or not a regular file.
pub(super) fn open_regular_file(path: &Path) -> Result<Option<(File, fs::Metadata)>> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: opening a FIFO must not block; it is then refused as not a regular file.
    let file = match fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK).open(path) {
        Ok(file) => file,
        Err(error) if matches!(error.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
            return Ok(None)
        }
        Err(error) => return Err(error).with_context(|| format!("opening {}", path.display())),
    };
    let metadata = file.metadata().with_context(|| format!("inspecting {}", path.display()))?;
    Ok(metadata.is_file().then_some((file, metadata)))
}

/// Parses an ELF image held in memory. Ok(None) when it does not start with the ELF magic.
pub fn parse_elf(bytes: &[u8]) -> Result<Option<ElfInfo>> {
    parse_from(&bytes)
}

/// Random access to the bytes of an ELF file: memory, or a file read on demand.
pub(super) trait ByteSource {
    fn length(&self) -> u64;
    /// Exactly `size` bytes at `offset`; the caller has checked the range against `length`.
    fn read(&self, offset: u64, size: usize) -> Result<Cow<'_, [u8]>>;
}

impl ByteSource for &[u8] {
    fn length(&self) -> u64 {
        self.len() as u64
    }
    fn read(&self, offset: u64, size: usize) -> Result<Cow<'_, [u8]>> {
        let start = usize::try_from(offset).context("offset does not fit in memory")?;
        let end = start.checked_add(size).context("range overflows")?;
        self.get(start..end).map(Cow::Borrowed).context("range past the end of the data")
    }
}

/// A file read on demand; its first page is read once, since the file header, the program
/// headers and PT_INTERP almost always lie there.
pub(super) struct FileSource<'a> {
    file: &'a File,
    length: u64,
    first_page: Vec<u8>,
}

const FIRST_PAGE: usize = 4096;

impl<'a> FileSource<'a> {
    pub(super) fn new(file: &'a File, length: u64) -> Result<FileSource<'a>> {
        let size = length.min(FIRST_PAGE as u64) as usize;
        let mut first_page = vec![0; size];
        file.read_exact_at(&mut first_page, 0).context("reading the first page")?;
        Ok(FileSource { file, length, first_page })
    }
}

impl ByteSource for FileSource<'_> {
    fn length(&self) -> u64 {
        self.length
    }
    fn read(&self, offset: u64, size: usize) -> Result<Cow<'_, [u8]>> {
        let end = offset.checked_add(size as u64).context("range overflows")?;
        if end <= self.first_page.len() as u64 {
            return Ok(Cow::Borrowed(&self.first_page[offset as usize..end as usize]));
        }
        let mut buffer = vec![0; size];
        self.file.read_exact_at(&mut buffer, offset).with_context(|| format!("reading {size} bytes at {offset:#x}"))?;
        Ok(Cow::Owned(buffer))
    }
}

pub(super) fn parse_from(source: &dyn ByteSource) -> Result<Option<ElfInfo>> {
    let head_size = source.length().min(ElfClass::Elf64.header_size() as u64) as usize;
    let head = source.read(0, head_size)?;
    if !head.starts_with(ELF_MAGIC) {
        return Ok(None);
    }
    let ident =
        ident_of(&head).context("ELF magic present but the identification or file header is truncated/invalid")?;
    let ctx = ident.ctx();
    let phdrs = program_headers(source, &head, ctx)?;
    let interpreter = interpreter(source, &phdrs)?;
    let mut info = ElfInfo {
        ident,
        interpreter,
        needed: Vec::new(),
        soname: None,
        rpath: Vec::new(),
        runpath: Vec::new(),
        nodeflib: false,
        bind_now: false,
        has_dynamic: false,
    };
    // glibc's loader keeps the last PT_DYNAMIC it sees (l_ld is overwritten per segment).
    if let Some(dynamic) = phdrs.iter().rev().find(|ph| ph.p_type == PT_DYNAMIC) {
        info.has_dynamic = true;
        read_dynamic(source, &phdrs, dynamic, ctx, &mut info)?;
    }
    Ok(Some(info))
}

fn is_regular_file(path: &Path) -> Result<bool> {
    // Checked before open() because opening a FIFO would block.
    let meta = fs::metadata(path).with_context(|| format!("inspecting {}", path.display()))?;
    Ok(meta.is_file())
}

pub(super) fn program_headers(source: &dyn ByteSource, head: &[u8], ctx: Ctx) -> Result<Vec<ProgramHeader>> {
    let header = Elf::parse_header(head).context("malformed ELF file header")?;
    let count = usize::from(header.e_phnum);
    if count == 0 {
        return Ok(Vec::new());
    }
    let entry_size = ProgramHeader::size(ctx);
    // The loader refuses objects whose e_phentsize differs ("phentsize not the expected size").
    if usize::from(header.e_phentsize) != entry_size {
        bail!("e_phentsize is {} but this ELF class needs {}", header.e_phentsize, entry_size);
    }
    let table = file_slice(source, header.e_phoff, (count * entry_size) as u64, "program header table")?;
    ProgramHeader::parse(&table, 0, count, ctx).context("malformed program header table")
}

/// Reads `size` bytes at `offset`, or an error naming `what` when that is out of bounds.
pub(super) fn file_slice<'a>(source: &'a dyn ByteSource, offset: u64, size: u64, what: &str) -> Result<Cow<'a, [u8]>> {
    let end = offset.checked_add(size);
    match (end, usize::try_from(size)) {
        (Some(end), Ok(size)) if end <= source.length() => source.read(offset, size),
        _ => bail!(
            "{} (offset {:#x}, size {:#x}) extends past the end of the file ({} bytes)",
            what,
            offset,
            size,
            source.length()
        ),
    }
}

/// The bytes before the first NUL, as UTF-8.
fn c_string(raw: &[u8], what: &str) -> Result<String> {
    let nul = raw.iter().position(|&b| b == 0).with_context(|| format!("{what} is not NUL-terminated"))?;
    String::from_utf8(raw[..nul].to_vec()).with_context(|| format!("{what} is not valid UTF-8"))
}

/// The longest PT_INTERP the kernel accepts (PATH_MAX, binfmt_elf's check).
const MAX_INTERPRETER_SIZE: u64 = 4096;

/// The largest PT_DYNAMIC read: a real object's has a few dozen 16-byte entries; this is 65,536.
const MAX_DYNAMIC_SIZE: u64 = 1024 * 1024;

fn interpreter(source: &dyn ByteSource, phdrs: &[ProgramHeader]) -> Result<Option<String>> {
    // The kernel uses the first PT_INTERP, so that is the one that decides what runs.
    let Some(ph) = phdrs.iter().find(|ph| ph.p_type == PT_INTERP) else {
        return Ok(None);
    };
    // Checked before reading: a sparse file can claim gigabytes at no cost to its owner.
    if ph.p_filesz > MAX_INTERPRETER_SIZE {
        bail!(
            "PT_INTERP is {} bytes; the kernel runs no program whose interpreter path is longer than {MAX_INTERPRETER_SIZE}",
            ph.p_filesz
        );
    }
    let raw = file_slice(source, ph.p_offset, ph.p_filesz, "PT_INTERP segment")?;
    c_string(&raw, "PT_INTERP").map(Some)
}

/// Offsets (into the string table) of the dynamic entries we care about. Singletons keep the
/// last occurrence because glibc's elf_get_dynamic_info overwrites l_info[tag] per entry.
#[derive(Default)]
struct DynamicRefs {
    strtab: Option<u64>,
    needed: Vec<u64>,
    soname: Option<u64>,
    rpath: Option<u64>,
    runpath: Option<u64>,
    flags: u64,
    flags_1: u64,
    bind_now: bool,
}

fn collect_dynamic_refs(source: &dyn ByteSource, dynamic: &ProgramHeader, ctx: Ctx) -> Result<DynamicRefs> {
    if dynamic.p_filesz > MAX_DYNAMIC_SIZE {
        bail!("PT_DYNAMIC is {} bytes, more than the {MAX_DYNAMIC_SIZE} any real object needs", dynamic.p_filesz);
    }
    let segment = file_slice(source, dynamic.p_offset, dynamic.p_filesz, "PT_DYNAMIC segment")?;
    // Only the PT_DYNAMIC header is passed (relocated to the start of the bytes just read) so
    // goblin does not translate addresses we never use.
    let relocated = ProgramHeader { p_offset: 0, ..dynamic.clone() };
    let parsed =
        Dynamic::parse(&segment, std::slice::from_ref(&relocated), ctx).context("malformed PT_DYNAMIC segment")?;
    let mut refs = DynamicRefs::default();
    for entry in parsed.iter().flat_map(|d| d.dyns.iter()) {
        match entry.d_tag {
            DT_STRTAB => refs.strtab = Some(entry.d_val),
            DT_NEEDED => refs.needed.push(entry.d_val),
            DT_SONAME => refs.soname = Some(entry.d_val),
            DT_RPATH => refs.rpath = Some(entry.d_val),
            DT_RUNPATH => refs.runpath = Some(entry.d_val),
            DT_FLAGS => refs.flags = entry.d_val,
            DT_FLAGS_1 => refs.flags_1 = entry.d_val,
            DT_BIND_NOW => refs.bind_now = true,
            _ => {}
        }
    }
    Ok(refs)
}

fn read_dynamic(
    source: &dyn ByteSource,
    phdrs: &[ProgramHeader],
    dynamic: &ProgramHeader,
    ctx: Ctx,
    info: &mut ElfInfo,
) -> Result<()> {
    let refs = collect_dynamic_refs(source, dynamic, ctx)?;
    info.nodeflib = refs.flags_1 & DF_1_NODEFLIB != 0;
    info.bind_now = refs.bind_now || refs.flags & DF_BIND_NOW != 0 || refs.flags_1 & DF_1_NOW != 0;
    let mut strings = DynamicStrings { source, phdrs, strtab: refs.strtab, window: None };
    let offsets = refs.needed.iter().chain(refs.soname.iter()).chain(refs.rpath.iter()).chain(refs.runpath.iter());
    strings.prefetch(offsets.copied());
    info.needed = refs.needed.iter().map(|&off| strings.get(off, "DT_NEEDED")).collect::<Result<_>>()?;
    info.soname = refs.soname.map(|off| strings.get(off, "DT_SONAME")).transpose()?;
    if let Some(off) = refs.rpath {
        info.rpath = split_search_path(&strings.get(off, "DT_RPATH")?);
    }
    if let Some(off) = refs.runpath {
        info.runpath = split_search_path(&strings.get(off, "DT_RUNPATH")?);
    }
    Ok(())
}

/// Reads strings of the dynamic string table by translating virtual addresses to file offsets.
struct DynamicStrings<'a> {
    source: &'a dyn ByteSource,
    phdrs: &'a [ProgramHeader],
    strtab: Option<u64>,
    /// String-table bytes read in one go (offset of the first byte, bytes), when they fit.
    window: Option<(u64, Cow<'a, [u8]>)>,
}

/// The largest string-table span read at once; wider spans are read string by string.
const STRING_WINDOW_LIMIT: u64 = 64 * 1024;

/// How much is read at once while looking for a string's terminating NUL.
const STRING_CHUNK: u64 = 512;

impl DynamicStrings<'_> {
    /// Reads the span of the string table holding all `offsets` with one read, so an object
    /// with ten DT_NEEDED costs one read instead of ten. Errors are left for `get` to report.
    fn prefetch(&mut self, offsets: impl Iterator<Item = u64>) {
        let (mut low, mut high) = (u64::MAX, 0);
        for offset in offsets {
            low = low.min(offset);
            high = high.max(offset);
        }
        let Some(strtab) = self.strtab else { return };
        if low > high || high - low > STRING_WINDOW_LIMIT {
            return;
        }
        let Some(vaddr) = strtab.checked_add(low) else { return };
        let Some(ph) = self.load_segment_of(vaddr) else { return };
        let start = ph.p_offset + (vaddr - ph.p_vaddr);
        let segment_end = ph.p_offset.saturating_add(ph.p_filesz);
        let size = (high - low + STRING_CHUNK).min(segment_end.saturating_sub(start));
        if let Ok(bytes) = file_slice(self.source, start, size, "string table") {
            self.window = Some((low, bytes));
        }
    }

    fn load_segment_of(&self, vaddr: u64) -> Option<&ProgramHeader> {
        self.phdrs.iter().find(|ph| ph.p_type == PT_LOAD && vaddr >= ph.p_vaddr && vaddr - ph.p_vaddr < ph.p_filesz)
    }

    fn get(&self, offset: u64, tag: &str) -> Result<String> {
        if let Some((low, bytes)) = &self.window {
            let from_window = offset.checked_sub(*low).and_then(|start| bytes.get(start as usize..));
            if let Some(rest) = from_window.filter(|rest| rest.contains(&0)) {
                return c_string(rest, tag);
            }
        }
        let strtab = self.strtab.with_context(|| format!("{tag} present but DT_STRTAB is missing"))?;
        let vaddr = strtab.checked_add(offset).with_context(|| format!("{tag} string address overflows"))?;
        let ph = self
            .phdrs
            .iter()
            .find(|ph| ph.p_type == PT_LOAD && vaddr >= ph.p_vaddr && vaddr - ph.p_vaddr < ph.p_filesz)
            .with_context(|| format!("{tag} string at address {vaddr:#x} is not inside any PT_LOAD file data"))?;
        // The string runs from vaddr to its NUL, which must lie inside the same segment's file data.
        let start = ph.p_offset.checked_add(vaddr - ph.p_vaddr).context("PT_LOAD offset overflows")?;
        let segment_end = ph.p_offset.checked_add(ph.p_filesz).context("PT_LOAD segment overflows")?;
        let mut size = STRING_CHUNK;
        loop {
            let available = segment_end - start;
            let chunk = file_slice(self.source, start, size.min(available), "PT_LOAD segment")?;
            if chunk.contains(&0) || size >= available {
                return c_string(&chunk, tag);
            }
            size = size.saturating_mul(8);
        }
    }
}

/// Splits DT_RPATH/DT_RUNPATH on ':' and drops empty pieces.
fn split_search_path(raw: &str) -> Vec<String> {
    raw.split(':').filter(|piece| !piece.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests build their fixtures with plain fs calls
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;

    const EM_386: u16 = 3;
    const EM_X86_64: u16 = 62;
    const EM_AARCH64: u16 = 183;

    fn host_bash() -> PathBuf {
        ["/bin/bash", "/usr/bin/bash"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("test host has bash in /bin or /usr/bin")
    }

    /// Runs gcc with `args` in `dir`; returns whether it succeeded.
    fn gcc(dir: &Path, args: &[&str]) -> bool {
        let out =
            Command::new("gcc").current_dir(dir).args(args).output().expect("gcc can be spawned on the test host");
        if !out.status.success() {
            eprintln!("gcc {:?} failed: {}", args, String::from_utf8_lossy(&out.stderr));
        }
        out.status.success()
    }

    fn write_source(dir: &Path) {
        fs::write(dir.join("lib.c"), "int answer(void) { return 42; }\n").expect("tempdir is writable");
        fs::write(dir.join("main.c"), "int answer(void);\nint main(void) { return answer(); }\n")
            .expect("tempdir is writable");
    }

    fn build_lib(dir: &Path, out: &str, extra: &[&str]) -> ElfInfo {
        let mut args = vec!["-shared", "-fPIC", "lib.c", "-o", out];
        args.extend_from_slice(extra);
        assert!(gcc(dir, &args), "building {out} must succeed");
        read_elf(&dir.join(out)).expect("gcc output parses").expect("gcc output is ELF")
    }

    #[test]
    fn bash_has_known_interpreter_and_needed() {
        let info = read_elf(&host_bash()).unwrap().expect("bash is ELF");
        assert_eq!(info.interpreter.as_deref(), Some("/lib64/ld-linux-x86-64.so.2"));
        assert!(info.needed.iter().any(|n| n == "libtinfo.so.6"), "{:?}", info.needed);
        assert!(info.needed.iter().any(|n| n == "libc.so.6"), "{:?}", info.needed);
        assert_eq!(info.ident.class, ElfClass::Elf64);
        assert_eq!(info.ident.machine, EM_X86_64);
        assert!(info.ident.little_endian);
        assert!(info.has_dynamic);
        assert_eq!(info.soname, None);
    }

    #[test]
    fn libc_has_soname_and_needs_the_loader() {
        let info = read_elf(Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6")).unwrap().expect("libc is ELF");
        assert_eq!(info.soname.as_deref(), Some("libc.so.6"));
        assert!(info.needed.iter().any(|n| n == "ld-linux-x86-64.so.2"), "{:?}", info.needed);
        // libc.so.6 is executable on Debian and names the loader as its interpreter.
        assert_eq!(info.interpreter.as_deref(), Some("/lib64/ld-linux-x86-64.so.2"));
    }

    #[test]
    fn ident_matches_full_parse_for_host_binaries() {
        for path in [host_bash(), PathBuf::from("/usr/lib/x86_64-linux-gnu/libc.so.6")] {
            let ident = read_ident(&path).unwrap().expect("host binary is ELF");
            let info = read_elf(&path).unwrap().expect("host binary is ELF");
            assert_eq!(ident, info.ident, "{}", path.display());
        }
    }

    #[test]
    fn rpath_runpath_and_nodeflib_from_gcc() {
        let tmp = tempfile::tempdir().unwrap();
        write_source(tmp.path());

        let rpath = build_lib(
            tmp.path(),
            "librpath.so",
            &["-Wl,-rpath,/a:/b", "-Wl,--disable-new-dtags", "-Wl,-soname,librpath.so.7"],
        );
        assert_eq!(rpath.rpath, ["/a", "/b"]);
        assert!(rpath.runpath.is_empty());
        assert!(!rpath.nodeflib);
        assert_eq!(rpath.soname.as_deref(), Some("librpath.so.7"));
        assert_eq!(rpath.interpreter, None);

        let runpath = build_lib(tmp.path(), "librunpath.so", &["-Wl,-rpath,/a:/b", "-Wl,--enable-new-dtags"]);
        assert_eq!(runpath.runpath, ["/a", "/b"]);
        assert!(runpath.rpath.is_empty());
        assert_eq!(runpath.soname, None);

        // GNU ld spells DF_1_NODEFLIB "-z nodefaultlib"; "-z nodeflib" is ignored with a warning.
        let nodeflib = build_lib(tmp.path(), "libnodeflib.so", &["-Wl,-z,nodefaultlib"]);
        assert!(nodeflib.nodeflib);

        let dollar =
            build_lib(tmp.path(), "libdollar.so", &["-Wl,-rpath,$ORIGIN/../$LIB::/c:", "-Wl,--disable-new-dtags"]);
        assert_eq!(dollar.rpath, ["$ORIGIN/../$LIB", "/c"], "raw, empty pieces dropped");
    }

    #[test]
    fn needed_keeps_file_order() {
        let tmp = tempfile::tempdir().unwrap();
        write_source(tmp.path());
        build_lib(tmp.path(), "libzz.so", &["-Wl,-soname,libzz.so.3"]);
        build_lib(tmp.path(), "libaa.so", &["-Wl,-soname,libaa.so.1"]);
        assert!(gcc(tmp.path(), &["main.c", "-o", "exe", "-Wl,--no-as-needed", "./libzz.so", "./libaa.so"]));
        let exe = read_elf(&tmp.path().join("exe")).unwrap().unwrap();
        assert_eq!(exe.needed, ["libzz.so.3", "libaa.so.1", "libc.so.6"]);
        assert_eq!(exe.interpreter.as_deref(), Some("/lib64/ld-linux-x86-64.so.2"));
        assert!(exe.has_dynamic);
    }

    #[test]
    fn static_executable_has_no_dynamic_segment() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("s.c"), "int main(void) { return 0; }\n").unwrap();
        assert!(gcc(tmp.path(), &["-static", "s.c", "-o", "static"]));
        let info = read_elf(&tmp.path().join("static")).unwrap().unwrap();
        assert!(!info.has_dynamic);
        assert_eq!(info.interpreter, None);
        assert!(info.needed.is_empty());
    }

    #[test]
    fn thirty_two_bit_objects() {
        let tmp = tempfile::tempdir().unwrap();
        write_source(tmp.path());
        let probe = ["-m32", "-shared", "-fPIC", "lib.c", "-o", "probe.so"];
        if !gcc(tmp.path(), &probe) {
            eprintln!("SKIPPED: gcc -m32 unavailable");
            return;
        }
        let lib = build_lib(
            tmp.path(),
            "lib32.so",
            &[
                "-m32",
                "-Wl,-rpath,/x32:/y32",
                "-Wl,--disable-new-dtags",
                "-Wl,-soname,lib32.so.1",
                // Debian's gcc links --as-needed, which would drop the unused libc.
                "-Wl,--no-as-needed",
            ],
        );
        assert_eq!(lib.ident, ElfIdent { class: ElfClass::Elf32, little_endian: true, machine: EM_386 });
        assert_eq!(lib.rpath, ["/x32", "/y32"]);
        assert_eq!(lib.soname.as_deref(), Some("lib32.so.1"));
        assert!(lib.needed.iter().any(|n| n == "libc.so.6"), "{:?}", lib.needed);

        assert!(gcc(tmp.path(), &["-m32", "main.c", "-o", "exe32", "./lib32.so"]));
        let exe = read_elf(&tmp.path().join("exe32")).unwrap().unwrap();
        assert_eq!(exe.interpreter.as_deref(), Some("/lib/ld-linux.so.2"));
        assert_eq!(read_ident(&tmp.path().join("exe32")).unwrap(), Some(exe.ident));
    }

    #[test]
    fn non_elf_files_are_none() {
        let tmp = tempfile::tempdir().unwrap();
        let text = tmp.path().join("script.sh");
        fs::write(&text, "#!/bin/sh\necho hello\n").unwrap();
        let empty = tmp.path().join("empty");
        fs::write(&empty, "").unwrap();
        for path in [&text, &empty] {
            assert_eq!(read_elf(path).unwrap(), None, "{}", path.display());
            assert_eq!(read_ident(path).unwrap(), None, "{}", path.display());
        }
        assert_eq!(read_elf(tmp.path()).unwrap(), None, "a directory is not ELF");
        // The loader probes many candidate paths: a missing one is simply not an ELF file.
        assert_eq!(read_elf(&tmp.path().join("missing")).unwrap(), None);
    }

    #[test]
    fn truncated_elf_is_an_error_naming_the_path() {
        let bash = fs::read(host_bash()).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let cut = tmp.path().join("cut");
        fs::write(&cut, &bash[..200]).unwrap();
        let err = read_elf(&cut).expect_err("200 bytes of bash is not a complete ELF");
        assert!(format!("{err:#}").contains(&cut.display().to_string()), "{err:#}");
        // The identification is intact, so the cheap check still recognises it.
        assert!(read_ident(&cut).unwrap().is_some());
        // Shorter than a file header: ident says "not ELF", full parse says "broken ELF".
        assert_eq!(ident_of(&bash[..40]), None);
        assert!(parse_elf(&bash[..40]).is_err());
    }

    #[test]
    fn every_truncation_of_a_library_is_handled_without_panic() {
        let tmp = tempfile::tempdir().unwrap();
        write_source(tmp.path());
        build_lib(tmp.path(), "libcut.so", &["-Wl,-rpath,/r", "-Wl,-soname,libcut.so.1"]);
        let full = fs::read(tmp.path().join("libcut.so")).unwrap();
        let complete = parse_elf(&full).unwrap().unwrap();
        let mut errors = 0;
        for len in 0..full.len() {
            match parse_elf(&full[..len]) {
                Ok(Some(info)) => assert_eq!(info, complete, "prefix of {len} bytes"),
                Ok(None) => assert!(len < 4, "only a cut magic is 'not ELF' ({len})"),
                Err(_) => errors += 1,
            }
        }
        assert!(errors > 0, "short prefixes must be rejected");
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let tmp = tempfile::tempdir().unwrap();
        write_source(tmp.path());
        build_lib(tmp.path(), "libfuzz.so", &["-Wl,-rpath,/r", "-Wl,-soname,libfuzz.so.1"]);
        let original = fs::read(tmp.path().join("libfuzz.so")).unwrap();
        // Corrupt only the headers region, where every byte matters to the parser.
        let hot = original.len().min(4096);
        let mut next = crate::closure::xorshift(0x9e37_79b9_7f4a_7c15);
        let mut outcomes = [0usize; 2];
        for _ in 0..3000 {
            let mut bytes = original.clone();
            for _ in 0..(1 + next() % 4) {
                let at = 4 + (next() as usize) % (hot - 4);
                bytes[at] = next() as u8;
            }
            outcomes[usize::from(parse_elf(&bytes).is_ok())] += 1;
        }
        assert!(outcomes[0] > 0, "some corruptions must be detected as errors");
    }

    /// A value in a synthetic dynamic section.
    enum DynVal<'a> {
        Str(&'a str),
        Num(u64),
    }

    /// Writes integers in the class/byte order of the ELF being synthesised.
    struct Writer {
        class64: bool,
        le: bool,
        out: Vec<u8>,
    }

    impl Writer {
        fn u16(&mut self, v: u16) {
            let b = if self.le { v.to_le_bytes() } else { v.to_be_bytes() };
            self.out.extend_from_slice(&b);
        }
        fn u32(&mut self, v: u32) {
            let b = if self.le { v.to_le_bytes() } else { v.to_be_bytes() };
            self.out.extend_from_slice(&b);
        }
        fn u64(&mut self, v: u64) {
            let b = if self.le { v.to_le_bytes() } else { v.to_be_bytes() };
            self.out.extend_from_slice(&b);
        }
        /// An Elf32_Addr/Off/Word or Elf64_Addr/Off/Xword.
        fn word(&mut self, v: u64) {
            if self.class64 {
                self.u64(v)
            } else {
                self.u32(u32::try_from(v).expect("synthetic 32-bit values fit in 32 bits"))
            }
        }
    }

    /// Builds a minimal ELF: one PT_LOAD mapping the whole file at `BASE`, PT_INTERP, PT_DYNAMIC.
    fn synthesize(class64: bool, le: bool, machine: u16, interp: &str, dyns: &[(u64, DynVal)]) -> Vec<u8> {
        const BASE: u64 = 0x40_0000;
        let (ehsize, phentsize, dynsize) = if class64 { (64, 56, 16) } else { (52, 32, 8) };
        let phnum = 3u64;
        let interp_off = ehsize + phnum * phentsize;
        let interp_bytes = [interp.as_bytes(), b"\0"].concat();
        let strtab_off = interp_off + interp_bytes.len() as u64;
        let mut strtab = vec![0u8];
        let mut resolved = Vec::new();
        for (tag, val) in dyns {
            let v = match val {
                DynVal::Str(s) => {
                    let off = strtab.len() as u64;
                    strtab.extend_from_slice(s.as_bytes());
                    strtab.push(0);
                    off
                }
                DynVal::Num(n) => *n,
            };
            resolved.push((*tag, v));
        }
        resolved.push((DT_STRTAB, BASE + strtab_off));
        resolved.push((0, 0));
        let dyn_off = (strtab_off + strtab.len() as u64).next_multiple_of(8);
        let total = dyn_off + resolved.len() as u64 * dynsize;

        let mut w = Writer { class64, le, out: Vec::new() };
        w.out.extend_from_slice(ELF_MAGIC);
        w.out.extend_from_slice(&[if class64 { 2 } else { 1 }, if le { 1 } else { 2 }, 1]);
        w.out.resize(16, 0);
        w.u16(3); // e_type = ET_DYN
        w.u16(machine);
        w.u32(1); // e_version
        w.word(0); // e_entry
        w.word(ehsize); // e_phoff
        w.word(0); // e_shoff
        w.u32(0); // e_flags
        w.u16(ehsize as u16);
        w.u16(phentsize as u16);
        w.u16(phnum as u16);
        w.u16(0);
        w.u16(0);
        w.u16(0);
        let segments = [
            (PT_LOAD, 0, total),
            (PT_INTERP, interp_off, interp_bytes.len() as u64),
            (PT_DYNAMIC, dyn_off, total - dyn_off),
        ];
        for (p_type, off, size) in segments {
            if class64 {
                w.u32(p_type);
                w.u32(4); // p_flags
                w.u64(off);
                w.u64(BASE + off);
                w.u64(BASE + off);
                w.u64(size);
                w.u64(size);
                w.u64(8);
            } else {
                w.u32(p_type);
                w.word(off);
                w.word(BASE + off);
                w.word(BASE + off);
                w.word(size);
                w.word(size);
                w.u32(4);
                w.word(4);
            }
        }
        w.out.extend_from_slice(&interp_bytes);
        w.out.extend_from_slice(&strtab);
        w.out.resize(dyn_off as usize, 0);
        for (tag, val) in resolved {
            w.word(tag);
            w.word(val);
        }
        assert_eq!(w.out.len() as u64, total);
        w.out
    }

    #[test]
    fn synthetic_big_endian_and_little_endian_agree() {
        let dyns = [
            (DT_NEEDED, DynVal::Str("liba.so.1")),
            (DT_SONAME, DynVal::Str("old.so")),
            (DT_NEEDED, DynVal::Str("libb.so.2")),
            (DT_SONAME, DynVal::Str("libself.so.9")),
            (DT_RUNPATH, DynVal::Str("/r1::/r2")),
            (DT_RPATH, DynVal::Str("/p")),
            (DT_FLAGS_1, DynVal::Num(DF_1_NODEFLIB | 1)),
        ];
        for class64 in [false, true] {
            for le in [false, true] {
                let bytes = synthesize(class64, le, EM_AARCH64, "/lib/ld-test.so.1", &dyns);
                let info = parse_elf(&bytes).unwrap().unwrap();
                let label = format!("class64={class64} le={le}");
                assert_eq!(info.ident.little_endian, le, "{label}");
                assert_eq!(info.ident.machine, EM_AARCH64, "{label}");
                let class = if class64 { ElfClass::Elf64 } else { ElfClass::Elf32 };
                assert_eq!(info.ident.class, class, "{label}");
                assert_eq!(ident_of(&bytes), Some(info.ident), "{label}");
                assert_eq!(info.interpreter.as_deref(), Some("/lib/ld-test.so.1"), "{label}");
                assert_eq!(info.needed, ["liba.so.1", "libb.so.2"], "{label}");
                assert_eq!(info.soname.as_deref(), Some("libself.so.9"), "last DT_SONAME wins: {label}");
                assert_eq!(info.runpath, ["/r1", "/r2"], "{label}");
                assert_eq!(info.rpath, ["/p"], "{label}");
                assert!(info.nodeflib, "{label}");
            }
        }
    }

    #[test]
    fn string_outside_any_segment_is_an_error() {
        let bytes = synthesize(true, true, EM_X86_64, "/i", &[(DT_NEEDED, DynVal::Num(1 << 40))]);
        let err = parse_elf(&bytes).expect_err("DT_NEEDED points far outside the file");
        assert!(format!("{err:#}").contains("DT_NEEDED"), "{err:#}");
    }
}
