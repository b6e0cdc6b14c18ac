//! Shared helpers for the loader integration tests (`mod support;` from each test crate).
//!
//! * building fixture executables and shared libraries with gcc in a fresh tempdir,
//! * patching ELF headers and dynamic sections for cases gcc/ld cannot produce directly,
//! * asking the real glibc loader of this host for a reference listing,
//! * comparing a [`LoadResult`] with hand-written expectations and with that reference.
//!
//! Reference listings are taken with `LD_TRACE_LOADED_OBJECTS=1 /lib64/ld-linux-x86-64.so.2 EXE`
//! (what `ldd` does), which prints exactly what `ld.so --list EXE` prints. `--list` itself is not
//! used: glibc 2.36's `ld.so --list` aborts with "error while loading shared libraries" (exit 127)
//! at the first library it cannot find, instead of printing "=> not found" and going on.
#![allow(clippy::disallowed_methods)] // tests build fixtures and jails with plain fs calls
#![allow(dead_code)] // each test crate uses a different subset of these helpers

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, ensure, Context, Result};

/// What the tests need from the host, each with its Debian package.
pub mod prerequisites;
use jailprov::closure::loader::{LoadResult, Loader, LoaderOptions};

/// The x86_64 program interpreter (PT_INTERP of every dynamic executable on Debian 12 x86_64).
pub const RTLD: &str = "/lib64/ld-linux-x86-64.so.2";
/// Where ld.so.cache says libc lives on Debian 12 x86_64: the spelling the loader reports.
pub const LIBC_PATH: &str = "/lib/x86_64-linux-gnu/libc.so.6";
/// glibc's built-in search directories on Debian 12 x86_64, in search order.
pub const SYSTEM_DIRS: [&str; 4] = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib"];

const DT_NULL: u64 = 0;
pub const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
pub const DT_SONAME: u64 = 14;
pub const DT_RPATH: u64 = 15;
pub const DT_RUNPATH: u64 = 29;
pub const DT_FLAGS_1: u64 = 0x6fff_fffb;
pub const DF_1_NODEFLIB: u64 = 0x800;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;

// ---------------------------------------------------------------------------------------------
// Fixture directories
// ---------------------------------------------------------------------------------------------

/// A fresh temporary directory for one test; removed on drop. `root` is canonical so that the
/// paths the loader reports (which are built from it) compare equal to the ones we expect.
pub struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    pub fn new() -> Result<Fixture> {
        let tmp =
            tempfile::Builder::new().prefix("jailprov-loader-").tempdir().context("creating the fixture tempdir")?;
        let root = tmp.path().canonicalize().with_context(|| format!("canonicalizing {}", tmp.path().display()))?;
        Ok(Fixture { _tmp: tmp, root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `ROOT/rel`, created (with parents) if missing.
    pub fn dir(&self, rel: &str) -> Result<PathBuf> {
        let dir = self.root.join(rel);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }
}

// ---------------------------------------------------------------------------------------------
// Building fixtures with gcc
// ---------------------------------------------------------------------------------------------

/// The C function a fixture library defines, derived from its file name, so that every copy of
/// "the same" library (same file name in different directories) defines the same function and
/// its dependants call it (the link then needs it even without `--no-as-needed`).
pub fn symbol_for(file: &Path) -> String {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut sym = String::from("jp_");
    sym.extend(name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }));
    sym
}

fn c_source(defines: Option<&str>, deps: &[&Path]) -> String {
    let mut src = String::new();
    for dep in deps {
        let _ = writeln!(src, "extern int {}(void);", symbol_for(dep));
    }
    let calls: String = deps.iter().map(|d| format!(" + {}()", symbol_for(d))).collect();
    match defines {
        Some(sym) => {
            let _ = writeln!(src, "int {sym}(void) {{ return 1{calls}; }}");
        }
        None => {
            let _ = writeln!(src, "int main(void) {{ return 0{calls}; }}");
        }
    }
    src
}

/// Runs gcc on `source` (written to a temporary .c file) with `args` (output, flags, inputs);
/// without gcc (or, for `-m32`, gcc-multilib) the test fails naming the package.
fn gcc(source: &str, args: &[OsString]) -> Result<()> {
    prerequisites::require(&prerequisites::GCC);
    if args.iter().any(|arg| arg == "-m32") {
        prerequisites::require(&prerequisites::GCC_32BIT);
    }
    if args.iter().any(|arg| arg == "-static") {
        prerequisites::require(&prerequisites::STATIC_LIBC);
    }
    let mut file = tempfile::Builder::new()
        .prefix("jailprov-fixture-")
        .suffix(".c")
        .tempfile()
        .context("creating a temporary C source file")?;
    file.write_all(source.as_bytes()).context("writing the temporary C source file")?;
    let mut cmd = Command::new("gcc");
    cmd.arg(file.path()).args(args);
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\nsource:\n{source}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn ensure_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    Ok(())
}

/// Builds the shared library `out` (any file name) with DT_SONAME `soname` (none if `None`),
/// linked against the libraries `deps` (paths to .so files; each becomes a DT_NEEDED: its
/// DT_SONAME, or the path exactly as given if it has none), plus extra `link_flags`.
pub fn build_lib_file(out: &Path, soname: Option<&str>, deps: &[&Path], link_flags: &[String]) -> Result<PathBuf> {
    ensure_parent(out)?;
    let mut args: Vec<OsString> = vec!["-shared".into(), "-fPIC".into(), "-o".into(), out.into()];
    if let Some(soname) = soname {
        args.push(format!("-Wl,-soname,{soname}").into());
    }
    args.push("-Wl,--no-as-needed".into());
    args.extend(deps.iter().map(|d| d.as_os_str().to_owned()));
    args.extend(link_flags.iter().map(OsString::from));
    gcc(&c_source(Some(&symbol_for(out)), deps), &args)
        .with_context(|| format!("building shared library {}", out.display()))?;
    Ok(out.to_path_buf())
}

/// Builds `dir/soname` with DT_SONAME `soname`. See [`build_lib_file`].
pub fn build_lib(dir: &Path, soname: &str, deps: &[&Path], link_flags: &[String]) -> Result<PathBuf> {
    build_lib_file(&dir.join(soname), Some(soname), deps, link_flags)
}

/// Builds a 32-bit (i386) `out` with DT_SONAME `soname` and no dependencies (needs gcc-multilib).
pub fn build_lib_m32(out: &Path, soname: &str) -> Result<PathBuf> {
    ensure_parent(out)?;
    let args: Vec<OsString> = vec![
        "-m32".into(),
        "-shared".into(),
        "-fPIC".into(),
        "-o".into(),
        out.into(),
        format!("-Wl,-soname,{soname}").into(),
    ];
    gcc(&c_source(Some(&symbol_for(out)), &[]), &args)
        .with_context(|| format!("building 32-bit shared library {}", out.display()))?;
    Ok(out.to_path_buf())
}

/// Builds the (PIE, dynamically linked) executable `out` needing `deps`, plus `link_flags`.
pub fn build_exe(out: &Path, deps: &[&Path], link_flags: &[String]) -> Result<PathBuf> {
    ensure_parent(out)?;
    let mut args: Vec<OsString> = vec![
        "-o".into(),
        out.into(),
        "-Wl,--no-as-needed".into(),
        // The dependencies' own DT_NEEDED are often not findable at link time (that is the
        // point of most fixtures); do not let ld insist on resolving their symbols.
        "-Wl,--allow-shlib-undefined".into(),
    ];
    args.extend(deps.iter().map(|d| d.as_os_str().to_owned()));
    args.extend(link_flags.iter().map(OsString::from));
    gcc(&c_source(None, deps), &args).with_context(|| format!("building executable {}", out.display()))?;
    Ok(out.to_path_buf())
}

/// Builds a statically linked executable (`-static`, or `-static-pie` if `pie`).
pub fn build_static_exe(out: &Path, pie: bool) -> Result<PathBuf> {
    ensure_parent(out)?;
    let args: Vec<OsString> = vec![if pie { "-static-pie" } else { "-static" }.into(), "-o".into(), out.into()];
    gcc(&c_source(None, &[]), &args).with_context(|| format!("building static executable {}", out.display()))?;
    Ok(out.to_path_buf())
}

/// Link flags recording `dirs` (joined with ':') as DT_RPATH.
pub fn rpath(dirs: &[&str]) -> Vec<String> {
    vec!["-Wl,--disable-new-dtags".into(), format!("-Wl,-rpath,{}", dirs.join(":"))]
}

/// Link flags recording `dirs` (joined with ':') as DT_RUNPATH.
pub fn runpath(dirs: &[&str]) -> Vec<String> {
    vec!["-Wl,--enable-new-dtags".into(), format!("-Wl,-rpath,{}", dirs.join(":"))]
}

/// `path` as a `&str` (fixture paths are always UTF-8 tempdir paths).
pub fn s(path: &Path) -> &str {
    path.to_str().expect("fixture paths are UTF-8")
}

// ---------------------------------------------------------------------------------------------
// ELF patching (ELF64 little-endian only: all our fixtures)
// ---------------------------------------------------------------------------------------------

fn read_u16(b: &[u8], off: usize) -> Result<u16> {
    let bytes = b.get(off..off + 2).ok_or_else(|| anyhow!("ELF truncated at {off:#x}"))?;
    Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
}

fn read_u32(b: &[u8], off: usize) -> Result<u32> {
    let bytes = b.get(off..off + 4).ok_or_else(|| anyhow!("ELF truncated at {off:#x}"))?;
    let mut a = [0u8; 4];
    a.copy_from_slice(bytes);
    Ok(u32::from_le_bytes(a))
}

fn read_u64(b: &[u8], off: usize) -> Result<u64> {
    let bytes = b.get(off..off + 8).ok_or_else(|| anyhow!("ELF truncated at {off:#x}"))?;
    let mut a = [0u8; 8];
    a.copy_from_slice(bytes);
    Ok(u64::from_le_bytes(a))
}

/// One program header: (p_type, p_offset, p_vaddr, p_filesz).
type Phdr = (u32, usize, u64, usize);

/// Every program header of an ELF64 LE file.
fn program_headers(b: &[u8]) -> Result<Vec<Phdr>> {
    ensure!(b.len() >= 64 && &b[..4] == b"\x7fELF", "not an ELF file");
    ensure!(b[4] == 2 && b[5] == 1, "not ELF64 little-endian");
    let phoff = usize::try_from(read_u64(b, 0x20)?)?;
    let phentsize = usize::from(read_u16(b, 0x36)?);
    let phnum = usize::from(read_u16(b, 0x38)?);
    (0..phnum)
        .map(|i| {
            let ph = phoff + i * phentsize;
            Ok((
                read_u32(b, ph)?,
                usize::try_from(read_u64(b, ph + 8)?)?,
                read_u64(b, ph + 16)?,
                usize::try_from(read_u64(b, ph + 32)?)?,
            ))
        })
        .collect()
}

/// (file offset, size) of the PT_DYNAMIC array.
fn dynamic_range(b: &[u8], path: &Path) -> Result<(usize, usize)> {
    program_headers(b)
        .with_context(|| path.display().to_string())?
        .into_iter()
        .find(|(ty, ..)| *ty == PT_DYNAMIC)
        .map(|(_, off, _, size)| (off, size))
        .ok_or_else(|| anyhow!("{}: no PT_DYNAMIC", path.display()))
}

/// The (tag, value) entries of the PT_DYNAMIC array, up to DT_NULL.
fn dynamic_entries(b: &[u8], path: &Path) -> Result<Vec<(u64, u64)>> {
    let (off, size) = dynamic_range(b, path)?;
    let mut entries = Vec::new();
    for entry in (off..off + size).step_by(16) {
        let tag = read_u64(b, entry)?;
        if tag == DT_NULL {
            break;
        }
        entries.push((tag, read_u64(b, entry + 8)?));
    }
    Ok(entries)
}

/// The strings of the dynamic entries with tag `tag` (DT_NEEDED, DT_SONAME, DT_RPATH...), in order.
pub fn dynamic_strings(path: &Path, tag: u64) -> Result<Vec<String>> {
    let b = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let entries = dynamic_entries(&b, path)?;
    let strtab = entries
        .iter()
        .find(|(t, _)| *t == DT_STRTAB)
        .map(|(_, v)| *v)
        .ok_or_else(|| anyhow!("{}: no DT_STRTAB", path.display()))?;
    // DT_STRTAB is an address: find the file offset through the PT_LOAD that maps it.
    let strtab_off = program_headers(&b)?
        .into_iter()
        .find(|(ty, _, vaddr, size)| *ty == PT_LOAD && (*vaddr..*vaddr + *size as u64).contains(&strtab))
        .map(|(_, off, vaddr, _)| off + usize::try_from(strtab - vaddr).unwrap_or(usize::MAX))
        .ok_or_else(|| anyhow!("{}: DT_STRTAB not in a PT_LOAD", path.display()))?;
    entries
        .iter()
        .filter(|(t, _)| *t == tag)
        .map(|(_, v)| {
            let start = strtab_off + usize::try_from(*v)?;
            let bytes = b.get(start..).ok_or_else(|| anyhow!("{}: string out of bounds", path.display()))?;
            let s = bytes.split(|&c| c == 0).next().unwrap_or_default();
            Ok(String::from_utf8_lossy(s).into_owned())
        })
        .collect()
}

/// The tags of the PT_DYNAMIC array, in order.
pub fn dynamic_tags(path: &Path) -> Result<Vec<u64>> {
    let b = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(dynamic_entries(&b, path)?.into_iter().map(|(t, _)| t).collect())
}

/// PT_INTERP of an ELF64 LE file, `None` if it has none.
pub fn read_interp(path: &Path) -> Result<Option<String>> {
    let b = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    for (ty, off, _, size) in program_headers(&b).with_context(|| path.display().to_string())? {
        if ty == PT_INTERP {
            let raw = b.get(off..off + size).ok_or_else(|| anyhow!("{}: PT_INTERP out of bounds", path.display()))?;
            let raw = raw.split(|&c| c == 0).next().unwrap_or_default();
            return Ok(Some(String::from_utf8_lossy(raw).into_owned()));
        }
    }
    Ok(None)
}

/// Calls `edit(tag, value)` on every entry of the PT_DYNAMIC array of `path` (up to DT_NULL),
/// writes the file back, and returns how many entries `edit` reported changing.
pub fn edit_dynamic(path: &Path, mut edit: impl FnMut(&mut u64, &mut u64) -> bool) -> Result<usize> {
    let mut b = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (off, size) = dynamic_range(&b, path)?;
    let mut changed = 0;
    for entry in (off..off + size).step_by(16) {
        let mut tag = read_u64(&b, entry)?;
        if tag == DT_NULL {
            break;
        }
        let mut val = read_u64(&b, entry + 8)?;
        if edit(&mut tag, &mut val) {
            changed += 1;
            b[entry..entry + 8].copy_from_slice(&tag.to_le_bytes());
            b[entry + 8..entry + 16].copy_from_slice(&val.to_le_bytes());
        }
    }
    fs::write(path, &b).with_context(|| format!("writing {}", path.display()))?;
    Ok(changed)
}

/// Changes the tag of the (single) `from` entry of the dynamic array to `to`, keeping its value.
/// E.g. DT_SONAME → DT_RPATH gives an executable both a DT_RPATH and a DT_RUNPATH, which current
/// GNU ld no longer emits together.
pub fn retag_dynamic(path: &Path, from: u64, to: u64) -> Result<()> {
    let changed = edit_dynamic(path, |tag, _| {
        if *tag == from {
            *tag = to;
            true
        } else {
            false
        }
    })?;
    ensure!(changed == 1, "{}: {changed} entries with tag {from:#x}", path.display());
    Ok(())
}

/// ORs `bits` into DT_FLAGS_1, which must exist (PIE executables have DF_1_PIE there; link a
/// shared library with `-Wl,-z,now` to get DF_1_NOW). GNU ld 2.40 ignores `-z nodeflib`
/// ("warning: -z nodeflib ignored"), so this is how a fixture gets DF_1_NODEFLIB.
pub fn set_flags_1(path: &Path, bits: u64) -> Result<()> {
    let changed = edit_dynamic(path, |tag, val| {
        if *tag == DT_FLAGS_1 {
            *val |= bits;
            true
        } else {
            false
        }
    })?;
    ensure!(changed == 1, "{}: no DT_FLAGS_1 entry", path.display());
    Ok(())
}

/// Copies `src` to `dst` with `bytes` written at `offset`.
pub fn copy_patched(src: &Path, dst: &Path, offset: usize, bytes: &[u8]) -> Result<PathBuf> {
    let mut b = fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    ensure!(b.len() >= offset + bytes.len(), "{} too short", src.display());
    b[offset..offset + bytes.len()].copy_from_slice(bytes);
    ensure_parent(dst)?;
    fs::write(dst, &b).with_context(|| format!("writing {}", dst.display()))?;
    Ok(dst.to_path_buf())
}

// ---------------------------------------------------------------------------------------------
// The host's real loader
// ---------------------------------------------------------------------------------------------

/// What the real loader printed for one executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// ("name", "path") in load order, without linux-vdso and the interpreter.
    pub objects: Vec<(String, PathBuf)>,
    /// Names printed as "=> not found", in load order.
    pub missing: Vec<String>,
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Parses `ld.so --list` / ldd output for `exe` (whose PT_INTERP identifies the interpreter line).
pub fn parse_listing(exe: &Path, stdout: &str) -> Result<Listing> {
    let interp = read_interp(exe)?.map(PathBuf::from);
    let mut listing = Listing { objects: Vec::new(), missing: Vec::new() };
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some((name, rest)) = line.split_once(" => ") {
            if rest == "not found" {
                listing.missing.push(name.to_string());
                continue;
            }
            let path = rest.rsplit_once(" (0x").map(|(p, _)| p).ok_or_else(|| anyhow!("unexpected line {line:?}"))?;
            listing.objects.push((name.to_string(), PathBuf::from(path)));
        } else {
            let name = line.rsplit_once(" (0x").map(|(n, _)| n).ok_or_else(|| anyhow!("unexpected line {line:?}"))?;
            if name.starts_with("linux-vdso.so") || name.starts_with("linux-gate.so") {
                continue;
            }
            let path = Path::new(name);
            let is_interp = interp.as_deref().is_some_and(|i| i == path || same_file(i, path));
            if is_interp {
                continue;
            }
            // Loaded by a DT_NEEDED containing '/': the name is the path.
            listing.objects.push((name.to_string(), path.to_path_buf()));
        }
    }
    Ok(listing)
}

fn run_listing(mut cmd: Command, exe: &Path) -> Result<Listing> {
    cmd.env_clear().env("LD_TRACE_LOADED_OBJECTS", "1");
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("{cmd:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    parse_listing(exe, &stdout)
}

/// The real loader's listing: `LD_TRACE_LOADED_OBJECTS=1 /lib64/ld-linux-x86-64.so.2 [args] EXE`
/// with an otherwise empty environment (no LD_LIBRARY_PATH, LD_PRELOAD, GLIBC_TUNABLES...).
/// Equivalent to `ld.so --list EXE`, but goes on past missing libraries (see the module doc).
pub fn reference_listing_with(exe: &Path, rtld_args: &[&str]) -> Result<Listing> {
    let mut cmd = Command::new(RTLD);
    cmd.args(rtld_args).arg(exe);
    run_listing(cmd, exe)
}

pub fn reference_listing(exe: &Path) -> Result<Listing> {
    reference_listing_with(exe, &[])
}

/// The listing when the kernel starts `exe` (as `ldd` does): unlike an explicit ld.so invocation,
/// $ORIGIN of the executable then comes from its canonical path (/proc/self/exe).
/// Only for our own fixture executables: the kernel execs them, though ld.so stops before main.
pub fn reference_listing_via_kernel(exe: &Path) -> Result<Listing> {
    run_listing(Command::new(exe), exe)
}

fn rtld_help() -> Result<String> {
    let out =
        Command::new(RTLD).arg("--help").env_clear().output().with_context(|| format!("running {RTLD} --help"))?;
    ensure!(out.status.success(), "{RTLD} --help failed: {}", out.status);
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The lines of `--help` output in the section starting with `heading`.
fn help_section<'a>(help: &'a str, heading: &str) -> Vec<&'a str> {
    help.lines()
        .skip_while(|l| !l.starts_with(heading))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .collect()
}

/// What $PLATFORM expands to for the real loader on this CPU: the legacy subdirectory marked
/// "(AT_PLATFORM; supported, searched)" in `ld.so --help` (e.g. "haswell"), else "x86_64".
pub fn host_platform() -> String {
    let help = rtld_help().unwrap_or_default();
    help_section(&help, "Legacy HWCAP subdirectories")
        .into_iter()
        .find_map(|l| l.strip_suffix(" (AT_PLATFORM; supported, searched)"))
        .map_or_else(|| "x86_64".to_string(), str::to_string)
}

/// The glibc-hwcaps subdirectories the real loader searches on this CPU, best first.
pub fn host_hwcaps() -> Result<Vec<String>> {
    let help = rtld_help()?;
    Ok(help_section(&help, "Subdirectories of glibc-hwcaps directories")
        .into_iter()
        .filter_map(|l| l.strip_suffix(" (supported, searched)"))
        .map(str::to_string)
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Running the loader under test and checking its answer
// ---------------------------------------------------------------------------------------------

/// Prints `message` straight to stderr, past the test harness's output capture, so that a
/// skipped or degraded check shows even when the test passes.
pub fn note(message: &str) {
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// Host options: sysroot "/", hwcaps and platform detected (what the real loader uses).
pub fn host_options() -> LoaderOptions {
    LoaderOptions { sysroot: PathBuf::from("/"), hwcaps: None, platform: None }
}

pub fn load(options: LoaderOptions, exe: &Path) -> LoadResult {
    let loader = Loader::new(options).expect("Loader::new");
    loader.load_executable(exe).unwrap_or_else(|e| panic!("load_executable({}): {e:#}", exe.display()))
}

pub fn load_host(exe: &Path) -> LoadResult {
    load(host_options(), exe)
}

/// One expected [`jailprov::closure::loader::LoadedObject`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obj {
    pub name: String,
    pub path: PathBuf,
    pub needed_by: PathBuf,
}

pub fn obj(name: &str, path: impl AsRef<Path>, needed_by: impl AsRef<Path>) -> Obj {
    Obj { name: name.to_string(), path: path.as_ref().to_path_buf(), needed_by: needed_by.as_ref().to_path_buf() }
}

/// libc.so.6 from ld.so.cache.
pub fn libc(needed_by: impl AsRef<Path>) -> Obj {
    obj("libc.so.6", LIBC_PATH, needed_by)
}

/// One expected [`jailprov::closure::loader::MissingLibrary`] (its `searched` is checked apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miss {
    pub name: String,
    pub chain: Vec<PathBuf>,
}

pub fn miss(name: &str, chain: &[&Path]) -> Miss {
    Miss { name: name.to_string(), chain: chain.iter().map(|p| p.to_path_buf()).collect() }
}

pub fn describe(result: &LoadResult) -> String {
    let mut out = format!("interpreter: {:?}\n", result.interpreter);
    for o in &result.objects {
        let _ = writeln!(out, "  {} => {} (needed by {})", o.name, o.path.display(), o.needed_by.display());
    }
    for m in &result.missing {
        let _ = writeln!(out, "  {} => not found (chain {:?}; searched {:?})", m.name, m.chain, m.searched);
    }
    out
}

/// Asserts the exact closure: interpreter, every object (name, path, needed_by) in load order,
/// and every missing library (name, chain) in order.
pub fn assert_closure(result: &LoadResult, objects: &[Obj], missing: &[Miss]) {
    let got_objects: Vec<Obj> = result.objects.iter().map(|o| obj(&o.name, &o.path, &o.needed_by)).collect();
    let got_missing: Vec<Miss> =
        result.missing.iter().map(|m| Miss { name: m.name.clone(), chain: m.chain.clone() }).collect();
    let context = describe(result);
    assert_eq!(result.interpreter.as_deref(), Some(Path::new(RTLD)), "interpreter; loader said:\n{context}");
    assert_eq!(got_objects, objects, "objects; loader said:\n{context}");
    assert_eq!(got_missing, missing, "missing; loader said:\n{context}");
}

/// Asserts that the loader's (name, path) list and missing names equal the real loader's
/// listing for `exe` (taken with `rtld_args`), in order.
pub fn assert_matches_reference_with(result: &LoadResult, exe: &Path, rtld_args: &[&str]) {
    let reference = reference_listing_with(exe, rtld_args)
        .unwrap_or_else(|e| panic!("reference listing of {}: {e:#}", exe.display()));
    assert_matches_listing(result, &reference, exe);
}

pub fn assert_matches_reference(result: &LoadResult, exe: &Path) {
    assert_matches_reference_with(result, exe, &[]);
}

pub fn assert_matches_listing(result: &LoadResult, reference: &Listing, exe: &Path) {
    let got = Listing {
        objects: result.objects.iter().map(|o| (o.name.clone(), o.path.clone())).collect(),
        missing: result.missing.iter().map(|m| m.name.clone()).collect(),
    };
    assert_eq!(
        &got,
        reference,
        "loader (left) vs the real loader (right) for {}; loader said:\n{}",
        exe.display(),
        describe(result)
    );
}

/// Asserts that `needles` occur in `searched` in this order (other entries, e.g. glibc-hwcaps
/// subdirectories, may come between them).
pub fn assert_searched_in_order(searched: &[PathBuf], needles: &[&Path]) {
    let mut rest = searched.iter();
    for needle in needles {
        assert!(
            rest.any(|d| d == needle),
            "searched dirs {searched:#?} lack {} (in the order {needles:?})",
            needle.display()
        );
    }
}

pub fn system_dirs() -> Vec<&'static Path> {
    SYSTEM_DIRS.iter().map(Path::new).collect()
}
