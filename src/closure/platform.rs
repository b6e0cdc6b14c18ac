//! Per-architecture facts of Debian 12's glibc 2.36 loaders, and what each derives from this CPU.

use goblin::elf::header::{EM_386, EM_AARCH64, EM_X86_64};

use super::elf::{ElfClass, ElfIdent};
use super::ld_cache::{CacheQuery, LegacyHwcapFilter};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// "x86_64", "i386", "aarch64".
    pub name: &'static str,
    pub class: ElfClass,
    /// e_machine: EM_X86_64 = 62, EM_386 = 3, EM_AARCH64 = 183.
    pub machine: u16,
    /// What `$LIB` expands to (Debian's DL_DST_LIB is slibdir without its leading '/').
    pub lib_token: &'static str,
    /// The loader's built-in search directories, in order.
    pub system_dirs: &'static [&'static str],
    /// `_DL_CACHE_DEFAULT_ID`: the ld.so.cache flags of this loader's own libraries.
    pub cache_flags: i32,
    /// Every flags value `_dl_cache_check_flags` accepts. Only i386 (generic dl-cache.h) accepts
    /// two: FLAG_ELF (1) for libraries ldconfig could not tag as libc6, and FLAG_ELF_LIBC6 (3).
    pub accepted_cache_flags: &'static [i32],
    /// PT_INTERP of programs for this platform.
    pub interpreter: &'static str,
}

pub static X86_64: Platform = Platform {
    name: "x86_64",
    class: ElfClass::Elf64,
    machine: EM_X86_64,
    lib_token: "lib/x86_64-linux-gnu",
    system_dirs: &["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib"],
    cache_flags: 0x0303,
    accepted_cache_flags: &[0x0303],
    interpreter: "/lib64/ld-linux-x86-64.so.2",
};

/// The multiarch libc6:i386 loader. (The biarch libc6-i386 package that gcc-multilib pulls in
/// on amd64 is built with slibdir=/lib32 and searches /lib32, /usr/lib32, /lib, /usr/lib.)
pub static I386: Platform = Platform {
    name: "i386",
    class: ElfClass::Elf32,
    machine: EM_386,
    lib_token: "lib/i386-linux-gnu",
    system_dirs: &["/lib/i386-linux-gnu", "/usr/lib/i386-linux-gnu", "/lib", "/usr/lib"],
    cache_flags: 0x0003,
    accepted_cache_flags: &[0x0001, 0x0003],
    interpreter: "/lib/ld-linux.so.2",
};

pub static AARCH64: Platform = Platform {
    name: "aarch64",
    class: ElfClass::Elf64,
    machine: EM_AARCH64,
    lib_token: "lib/aarch64-linux-gnu",
    system_dirs: &["/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib", "/usr/lib"],
    cache_flags: 0x0a03,
    accepted_cache_flags: &[0x0a03],
    interpreter: "/lib/ld-linux-aarch64.so.1",
};

static PLATFORMS: [&Platform; 3] = [&X86_64, &I386, &AARCH64];

/// The platform whose loader runs objects with this identification (all three are little-endian).
pub fn platform_for(ident: &ElfIdent) -> Option<&'static Platform> {
    if !ident.little_endian {
        return None;
    }
    PLATFORMS.iter().copied().find(|p| p.class == ident.class && p.machine == ident.machine)
}

/// What the loader expands `$PLATFORM` to on THIS cpu (GLRO(dl_platform)): on x86_64 "haswell"
/// or "xeon_phi" for capable Intel CPUs, else the kernel's AT_PLATFORM "x86_64"; "i686" for
/// i386; "aarch64" for aarch64.
pub fn platform_token(platform: &Platform) -> String {
    loader_cpu(platform).dl_platform
}

/// glibc-hwcaps subdirectories the loader searches on this CPU, best first (x86_64: a suffix of
/// x86-64-v4, x86-64-v3, x86-64-v2; empty for other architectures).
pub fn host_hwcaps_subdirs(platform: &Platform) -> Vec<String> {
    loader_cpu(platform).hwcaps_subdirs
}

/// The legacy hwcap subdirectories glibc 2.36 (not 2.37+) tries in every search directory after
/// the glibc-hwcaps ones and before the directory itself, in order: the power set of
/// {important hwcap names, `$PLATFORM`, "tls"}, e.g. "tls/haswell/avx512_1/x86_64" first and
/// "x86_64" last on this kind of CPU. The directory itself ("") is not included.
pub fn host_legacy_hwcap_subdirs(platform: &Platform) -> Vec<String> {
    legacy_subdirs(&loader_cpu(platform))
}

/// Everything glibc 2.36's cache lookup for `platform` takes from this CPU, for
/// [`super::ld_cache::LdCache::lookup_with`]. `hwcaps` is normally [`host_hwcaps_subdirs`].
pub fn host_cache_query<'a>(platform: &Platform, hwcaps: &'a [String]) -> CacheQuery<'a> {
    let cpu = loader_cpu(platform);
    CacheQuery {
        accepted_flags: platform.accepted_cache_flags,
        default_flags: platform.cache_flags,
        hwcaps,
        isa_1: cpu.isa_1,
        legacy: Some(LegacyHwcapFilter {
            allowed: cpu.hwcap_bits | cpu.platforms.mask() | HWCAP_TLS,
            platform_mask: cpu.platforms.mask(),
            platform_bit: cpu.platforms.bit_of(&cpu.dl_platform),
        }),
    }
}

/// The "tls" pseudo-hwcap (_DL_HWCAP_TLS_MASK), always accepted by the 2.36 cache lookup.
const HWCAP_TLS: u64 = 1 << 63;
/// sysdeps/x86/dl-hwcap.h.
const HWCAP_X86_SSE2: u64 = 1 << 0;
const HWCAP_X86_64: u64 = 1 << 1;
const HWCAP_X86_AVX512_1: u64 = 1 << 2;
const X86_HWCAP_NAMES: [&str; 3] = ["sse2", "x86_64", "avx512_1"];
/// HWCAP_ATOMICS, the only HWCAP_IMPORTANT bit on aarch64.
const HWCAP_AARCH64_ATOMICS: u64 = 1 << 8;
/// sysdeps/x86/dl-procinfo.c: platform names whose bits start at _DL_FIRST_PLATFORM.
const X86_PLATFORM_NAMES: [&str; 4] = ["i586", "i686", "haswell", "xeon_phi"];
const FIRST_PLATFORM_BIT: u32 = 48;

/// GNU_PROPERTY_X86_ISA_1_* bits of cpu_features->isa_1.
const ISA_BASELINE: u32 = 1 << 0;
const ISA_V2: u32 = 1 << 1;
const ISA_V3: u32 = 1 << 2;
const ISA_V4: u32 = 1 << 3;

/// The loader's platform table: `_dl_string_platform` looks names up in `names[start..]`, while
/// `_DL_HWCAP_PLATFORM` covers all `names.len()` bits.
#[derive(Debug, Clone, Copy)]
struct PlatformTable {
    names: &'static [&'static str],
    start: usize,
}

impl PlatformTable {
    const NONE: PlatformTable = PlatformTable { names: &[], start: 0 };

    fn mask(self) -> u64 {
        ((1u64 << self.names.len()) - 1) << FIRST_PLATFORM_BIT
    }

    fn bit_of(self, name: &str) -> Option<u64> {
        let index = self.names.iter().skip(self.start).position(|n| *n == name)?;
        Some(1 << (FIRST_PLATFORM_BIT as usize + self.start + index))
    }
}

/// What a loader computes from the CPU at startup (sysdeps/x86/cpu-features.c and friends).
#[derive(Debug, Clone)]
struct LoaderCpu {
    /// GLRO(dl_platform).
    dl_platform: String,
    /// Names of the bits of `dl_hwcap & hwcap_mask`, lowest bit first.
    hwcap_names: Vec<&'static str>,
    /// `dl_hwcap & hwcap_mask` (the tunable's default, HWCAP_IMPORTANT).
    hwcap_bits: u64,
    platforms: PlatformTable,
    /// cpu_features->isa_1; None where the loader has no ISA level check.
    isa_1: Option<u32>,
    hwcaps_subdirs: Vec<String>,
}

fn loader_cpu(platform: &Platform) -> LoaderCpu {
    match platform.machine {
        EM_X86_64 => x86_64_loader(&X86Cpu::detect()),
        EM_386 => i386_loader(&X86Cpu::detect()),
        _ => aarch64_loader(aarch64_has_atomics()),
    }
}

fn legacy_subdirs(cpu: &LoaderCpu) -> Vec<String> {
    // _dl_important_hwcaps: hwcap names, then the platform, then "tls"; every subset is a
    // path listing its members from the last to the first, subsets in descending bitmask order.
    let mut parts: Vec<&str> = cpu.hwcap_names.clone();
    parts.push(&cpu.dl_platform);
    parts.push("tls");
    let all = (1u32 << parts.len()) - 1;
    (0..all)
        .map(|k| {
            let members = all - k;
            (0..parts.len()).rev().filter(|i| members & (1 << i) != 0).map(|i| parts[i]).collect::<Vec<_>>().join("/")
        })
        .collect()
}

fn hwcap_names(bits: u64, names: &[&'static str]) -> Vec<&'static str> {
    names.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, name)| *name).collect()
}

/// The x86 CPU features glibc's loaders look at ("usable" in glibc's sense: OS support included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct X86Cpu {
    /// CPUID vendor "GenuineIntel" (glibc's arch_kind_intel).
    intel: bool,
    /// FPU, CX8, CMOV, MMX, FXSR, SSE, SSE2: the ISA baseline.
    baseline: bool,
    cmov: bool,
    cx8: bool,
    sse2: bool,
    cmpxchg16b: bool,
    lahf_sahf: bool,
    popcnt: bool,
    sse3: bool,
    ssse3: bool,
    sse4_1: bool,
    sse4_2: bool,
    avx: bool,
    avx2: bool,
    bmi1: bool,
    bmi2: bool,
    f16c: bool,
    fma: bool,
    lzcnt: bool,
    movbe: bool,
    avx512f: bool,
    avx512bw: bool,
    avx512cd: bool,
    avx512dq: bool,
    avx512vl: bool,
    avx512er: bool,
    avx512pf: bool,
}

impl X86Cpu {
    #[cfg(target_arch = "x86_64")]
    fn detect() -> X86Cpu {
        use core::arch::x86_64::{__cpuid, __cpuid_count};
        use std::arch::is_x86_feature_detected as has;

        let vendor = __cpuid(0);
        let leaf1 = if vendor.eax >= 1 { __cpuid(1).edx } else { 0 };
        let leaf7_ebx = if vendor.eax >= 7 { __cpuid_count(7, 0).ebx } else { 0 };
        let ext_ecx = if __cpuid(0x8000_0000).eax >= 0x8000_0001 { __cpuid(0x8000_0001).ecx } else { 0 };
        // Bits of CPUID.1:EDX: FPU 0, CX8 8, CMOV 15, MMX 23, FXSR 24, SSE 25, SSE2 26.
        let edx_bit = |bit: u32| leaf1 & (1 << bit) != 0;
        let avx512f = has!("avx512f");
        X86Cpu {
            intel: &vendor.ebx.to_le_bytes() == b"Genu"
                && &vendor.edx.to_le_bytes() == b"ineI"
                && &vendor.ecx.to_le_bytes() == b"ntel",
            baseline: [0, 8, 15, 23, 24, 25, 26].into_iter().all(edx_bit),
            cmov: edx_bit(15),
            cx8: edx_bit(8),
            sse2: has!("sse2"),
            cmpxchg16b: has!("cmpxchg16b"),
            // CPUID.80000001H:ECX bit 0; std has no feature name for it.
            lahf_sahf: ext_ecx & 1 != 0,
            popcnt: has!("popcnt"),
            sse3: has!("sse3"),
            ssse3: has!("ssse3"),
            sse4_1: has!("sse4.1"),
            sse4_2: has!("sse4.2"),
            avx: has!("avx"),
            avx2: has!("avx2"),
            bmi1: has!("bmi1"),
            bmi2: has!("bmi2"),
            f16c: has!("f16c"),
            fma: has!("fma"),
            lzcnt: has!("lzcnt"),
            movbe: has!("movbe"),
            avx512f,
            avx512bw: has!("avx512bw"),
            avx512cd: has!("avx512cd"),
            avx512dq: has!("avx512dq"),
            avx512vl: has!("avx512vl"),
            // CPUID.7.0:EBX bits 27 and 26; usable only with AVX-512 state enabled, like AVX512F.
            avx512er: avx512f && leaf7_ebx & (1 << 27) != 0,
            avx512pf: avx512f && leaf7_ebx & (1 << 26) != 0,
        }
    }

    /// On a non-x86 host an x86 loader cannot run natively; assume the plain baseline CPU.
    #[cfg(not(target_arch = "x86_64"))]
    fn detect() -> X86Cpu {
        X86Cpu { baseline: true, cmov: true, cx8: true, sse2: true, ..X86Cpu::default() }
    }

    /// sysdeps/x86/get-isa-level.h.
    fn isa_levels(&self) -> u32 {
        if !self.baseline {
            return 0;
        }
        let v2 =
            self.cmpxchg16b && self.lahf_sahf && self.popcnt && self.sse3 && self.ssse3 && self.sse4_1 && self.sse4_2;
        let v3 =
            v2 && self.avx && self.avx2 && self.bmi1 && self.bmi2 && self.f16c && self.fma && self.lzcnt && self.movbe;
        let v4 = v3 && self.avx512f && self.avx512bw && self.avx512cd && self.avx512dq && self.avx512vl;
        [(true, ISA_BASELINE), (v2, ISA_V2), (v3, ISA_V3), (v4, ISA_V4)]
            .iter()
            .filter(|(supported, _)| *supported)
            .fold(0, |acc, (_, bit)| acc | bit)
    }
}

/// sysdeps/x86_64/dl-hwcaps-subdirs.c: each level needs all lower ones.
fn x86_64_hwcaps_subdirs(isa_1: u32) -> Vec<String> {
    let mut subdirs = Vec::new();
    for (bit, name) in [(ISA_V2, "x86-64-v2"), (ISA_V3, "x86-64-v3"), (ISA_V4, "x86-64-v4")] {
        if isa_1 & bit == 0 {
            break;
        }
        subdirs.push(name.to_owned());
    }
    subdirs.reverse();
    subdirs
}

/// init_cpu_features for the x86_64 loader.
fn x86_64_loader(cpu: &X86Cpu) -> LoaderCpu {
    let mut hwcap = HWCAP_X86_64;
    let mut platform = None;
    // Only Intel CPUs get a platform or the avx512_1 hwcap.
    if cpu.intel {
        if cpu.avx512cd {
            if cpu.avx512er {
                if cpu.avx512pf {
                    platform = Some("xeon_phi");
                }
            } else if cpu.avx512bw && cpu.avx512dq && cpu.avx512vl {
                hwcap |= HWCAP_X86_AVX512_1;
            }
        }
        let haswell = cpu.avx2 && cpu.fma && cpu.bmi1 && cpu.bmi2 && cpu.lzcnt && cpu.movbe && cpu.popcnt;
        if platform.is_none() && haswell {
            platform = Some("haswell");
        }
    }
    let masked = hwcap & (HWCAP_X86_64 | HWCAP_X86_AVX512_1);
    let isa_1 = cpu.isa_levels();
    LoaderCpu {
        // Otherwise AT_PLATFORM of an x86_64 kernel stays.
        dl_platform: platform.unwrap_or("x86_64").to_owned(),
        hwcap_names: hwcap_names(masked, &X86_HWCAP_NAMES),
        hwcap_bits: masked,
        platforms: PlatformTable { names: &X86_PLATFORM_NAMES, start: 2 },
        isa_1: Some(isa_1),
        hwcaps_subdirs: x86_64_hwcaps_subdirs(isa_1),
    }
}

/// init_cpu_features for the i386 loader.
fn i386_loader(cpu: &X86Cpu) -> LoaderCpu {
    let masked = if cpu.sse2 { HWCAP_X86_SSE2 } else { 0 };
    let platform = if cpu.cmov {
        "i686"
    } else if cpu.cx8 {
        "i586"
    } else {
        // AT_PLATFORM an x86_64 kernel gives 32-bit processes.
        "i686"
    };
    LoaderCpu {
        dl_platform: platform.to_owned(),
        hwcap_names: hwcap_names(masked, &X86_HWCAP_NAMES),
        hwcap_bits: masked,
        platforms: PlatformTable { names: &X86_PLATFORM_NAMES[..2], start: 0 },
        isa_1: Some(cpu.isa_levels()),
        hwcaps_subdirs: Vec::new(),
    }
}

fn aarch64_loader(atomics: bool) -> LoaderCpu {
    let masked = if atomics { HWCAP_AARCH64_ATOMICS } else { 0 };
    LoaderCpu {
        dl_platform: "aarch64".to_owned(),
        hwcap_names: if atomics { vec!["atomics"] } else { Vec::new() },
        hwcap_bits: masked,
        platforms: PlatformTable::NONE,
        isa_1: None,
        hwcaps_subdirs: Vec::new(),
    }
}

/// AT_HWCAP's HWCAP_ATOMICS (LSE) on an aarch64 host; unknowable for a foreign architecture.
fn aarch64_has_atomics() -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("lse")
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        false
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests build their fixtures with plain fs calls
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;
    use std::process::Command;

    const LD_SO: &str = "/lib64/ld-linux-x86-64.so.2";
    const LD_SO_I386: &str = "/lib/ld-linux.so.2";

    fn help_of(loader: &str) -> String {
        let out = Command::new(loader).arg("--help").output().expect("the host loader can be run with --help");
        assert!(out.status.success(), "{loader} --help failed");
        String::from_utf8(out.stdout).expect("ld.so --help prints UTF-8")
    }

    /// The indented lines of the --help section whose heading starts with `heading`.
    fn help_section<'a>(help: &'a str, heading: &str) -> Vec<&'a str> {
        help.lines()
            .skip_while(|line| !line.starts_with(heading))
            .skip(1)
            .take_while(|line| line.starts_with("  "))
            .map(str::trim)
            .collect()
    }

    /// Names in a section marked "supported, searched", with the marker text.
    fn searched(section: &[&str]) -> Vec<(String, String)> {
        section
            .iter()
            .filter(|line| line.ends_with("supported, searched)"))
            .filter_map(|line| line.split_once(" ("))
            .map(|(name, mark)| (name.to_owned(), mark.to_owned()))
            .collect()
    }

    fn gcc(dir: &Path, args: &[&str]) -> bool {
        let out = Command::new("gcc").current_dir(dir).args(args).output().expect("gcc can be spawned");
        if !out.status.success() {
            eprintln!("gcc {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        out.status.success()
    }

    #[test]
    fn hwcaps_subdirs_match_ld_so_help() {
        let help = help_of(LD_SO);
        let listed: Vec<String> = searched(&help_section(&help, "Subdirectories of glibc-hwcaps"))
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(host_hwcaps_subdirs(&X86_64), listed);
    }

    #[test]
    fn platform_token_and_legacy_names_match_ld_so_help() {
        let help = help_of(LD_SO);
        let legacy = searched(&help_section(&help, "Legacy HWCAP subdirectories"));
        let at_platform =
            legacy.iter().find(|(_, mark)| mark.starts_with("AT_PLATFORM")).map_or("x86_64", |(name, _)| name.as_str());
        assert_eq!(platform_token(&X86_64), at_platform);

        // The power set is built from exactly the names --help lists as searched.
        let cpu = loader_cpu(&X86_64);
        let mut ours: Vec<&str> = cpu.hwcap_names.clone();
        ours.extend([cpu.dl_platform.as_str(), "tls"]);
        let mut listed: Vec<&str> = legacy.iter().map(|(name, _)| name.as_str()).collect();
        ours.sort_unstable();
        listed.sort_unstable();
        assert_eq!(ours, listed);
    }

    #[test]
    fn system_dirs_match_ld_so_help() {
        let help = help_of(LD_SO);
        let dirs: Vec<&str> = help_section(&help, "Shared library search path")
            .into_iter()
            .filter_map(|line| line.strip_suffix(" (system search path)"))
            .collect();
        assert_eq!(dirs, X86_64.system_dirs);
    }

    /// The directory components between a search directory and the file, as LD_DEBUG shows
    /// them for the first directory of the first search path: legacy ones only.
    fn legacy_dirs_from_ld_debug(loader: &str, exe: &Path) -> Vec<String> {
        let out = Command::new(loader)
            .args(["--inhibit-cache", "--list"])
            .arg(exe)
            .env("LD_DEBUG", "libs")
            // cargo test puts build-script output dirs in LD_LIBRARY_PATH; they would be the
            // first search path instead of the fixture's RPATH.
            .env_remove("LD_LIBRARY_PATH")
            .output()
            .expect("the loader can be spawned");
        let debug = String::from_utf8_lossy(&out.stderr);
        let path = debug
            .lines()
            .find_map(|line| line.split_once("search path=").map(|(_, rest)| rest))
            .unwrap_or_else(|| panic!("no search path in LD_DEBUG output:\n{debug}"));
        let path = path.split("\t\t").next().expect("split yields a first piece");
        let elements: Vec<&str> = path.split(':').collect();
        // The first directory is the last element every earlier element lies below (legacy
        // subdirectories nest, so earlier elements can have that property too).
        let base_index = (1..elements.len())
            .rev()
            .find(|&i| {
                let prefix = format!("{}/", elements[i]);
                elements[..i].iter().all(|e| e.starts_with(&prefix))
            })
            .expect("search path has a base directory after its subdirectories");
        let prefix = format!("{}/", elements[base_index]);
        elements[..base_index]
            .iter()
            .map(|e| e.strip_prefix(&prefix).expect("checked above").to_owned())
            .filter(|sub| !sub.starts_with("glibc-hwcaps/"))
            .collect()
    }

    #[test]
    fn legacy_subdirs_match_ld_debug_x86_64() {
        let expected = legacy_dirs_from_ld_debug(LD_SO, Path::new("/bin/true"));
        assert_eq!(host_legacy_hwcap_subdirs(&X86_64), expected);
    }

    #[test]
    fn i386_loader_facts_match_the_host_i386_loader() {
        if !Path::new(LD_SO_I386).exists() {
            eprintln!("SKIPPED: {LD_SO_I386} not installed");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("m.c"), "int main(void) { return 0; }\n").unwrap();
        if !gcc(tmp.path(), &["-m32", "m.c", "-o", "exe32"]) {
            eprintln!("SKIPPED: gcc -m32 unavailable");
            return;
        }
        let help = help_of(LD_SO_I386);
        let legacy = searched(&help_section(&help, "Legacy HWCAP subdirectories"));
        let at_platform = legacy.iter().find(|(_, mark)| mark.starts_with("AT_PLATFORM")).map(|(name, _)| name.clone());
        assert_eq!(Some(platform_token(&I386)), at_platform);
        assert!(host_hwcaps_subdirs(&I386).is_empty());
        assert!(help.contains("No subdirectories of glibc-hwcaps directories are searched"));
        let expected = legacy_dirs_from_ld_debug(LD_SO_I386, &tmp.path().join("exe32"));
        assert_eq!(host_legacy_hwcap_subdirs(&I386), expected);
    }

    #[test]
    fn platform_token_is_what_the_loader_substitutes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join("lib.c"), "int plat(void) { return 7; }\n").unwrap();
        fs::write(dir.join("main.c"), "int plat(void);\nint main(void) { return plat(); }\n").unwrap();
        assert!(gcc(dir, &["-shared", "-fPIC", "-Wl,-soname,libplat.so", "lib.c", "-o", "libplat.so"]));
        assert!(gcc(
            dir,
            &["main.c", "./libplat.so", "-o", "exe", "-Wl,-rpath,$ORIGIN/$PLATFORM", "-Wl,--disable-new-dtags"]
        ));
        let token = platform_token(&X86_64);
        let resolve = || {
            let out = Command::new(LD_SO)
                .arg("--list")
                .arg(dir.join("exe"))
                .env_remove("LD_LIBRARY_PATH")
                .output()
                .expect("ld.so can be spawned");
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            (out.status.success(), text)
        };
        // Not yet anywhere the loader looks (ld.so --list fails on a missing library).
        fs::rename(dir.join("libplat.so"), dir.join("libplat.so.hidden")).unwrap();
        if token != "x86_64" {
            fs::create_dir(dir.join("x86_64")).unwrap();
            fs::copy(dir.join("libplat.so.hidden"), dir.join("x86_64/libplat.so")).unwrap();
            let (ok, text) = resolve();
            assert!(!ok && text.contains("libplat.so: cannot open shared object file"), "{text}");
        }
        fs::create_dir_all(dir.join(&token)).unwrap();
        fs::copy(dir.join("libplat.so.hidden"), dir.join(&token).join("libplat.so")).unwrap();
        let expected = format!("libplat.so => {}/{token}/libplat.so ", dir.display());
        let (ok, text) = resolve();
        assert!(ok && text.contains(&expected), "want {expected:?} in:\n{text}");
    }

    #[test]
    fn platform_for_maps_debian_architectures() {
        let ident = |class, little_endian, machine| ElfIdent { class, little_endian, machine };
        let name = |i: ElfIdent| platform_for(&i).map(|p| p.name);
        assert_eq!(name(ident(ElfClass::Elf64, true, 62)), Some("x86_64"));
        assert_eq!(name(ident(ElfClass::Elf32, true, 3)), Some("i386"));
        assert_eq!(name(ident(ElfClass::Elf64, true, 183)), Some("aarch64"));
        assert_eq!(name(ident(ElfClass::Elf32, true, 62)), None, "x32 is not supported");
        assert_eq!(name(ident(ElfClass::Elf64, false, 183)), None, "big-endian aarch64");
        assert_eq!(name(ident(ElfClass::Elf64, true, 40)), None, "ARM is not listed");
    }

    #[test]
    fn interpreter_of_host_binaries_matches_platform() {
        let info = crate::closure::elf::read_elf(Path::new("/bin/true")).unwrap().expect("/bin/true is ELF");
        let platform = platform_for(&info.ident).expect("host binaries are x86_64");
        assert_eq!(info.interpreter.as_deref(), Some(platform.interpreter));
    }

    fn intel_with(features: impl FnOnce(&mut X86Cpu)) -> X86Cpu {
        let mut cpu = X86Cpu { intel: true, baseline: true, cmov: true, cx8: true, sse2: true, ..X86Cpu::default() };
        features(&mut cpu);
        cpu
    }

    fn set_v3(cpu: &mut X86Cpu) {
        cpu.cmpxchg16b = true;
        cpu.lahf_sahf = true;
        cpu.popcnt = true;
        cpu.sse3 = true;
        cpu.ssse3 = true;
        cpu.sse4_1 = true;
        cpu.sse4_2 = true;
        cpu.avx = true;
        cpu.avx2 = true;
        cpu.bmi1 = true;
        cpu.bmi2 = true;
        cpu.f16c = true;
        cpu.fma = true;
        cpu.lzcnt = true;
        cpu.movbe = true;
    }

    fn set_avx512(cpu: &mut X86Cpu) {
        cpu.avx512f = true;
        cpu.avx512bw = true;
        cpu.avx512cd = true;
        cpu.avx512dq = true;
        cpu.avx512vl = true;
    }

    #[test]
    fn x86_64_rules_follow_cpu_features_c() {
        let baseline = x86_64_loader(&intel_with(|_| {}));
        assert_eq!(baseline.dl_platform, "x86_64");
        assert!(baseline.hwcaps_subdirs.is_empty());
        assert_eq!(baseline.hwcap_names, ["x86_64"]);

        let skylake = x86_64_loader(&intel_with(|c| {
            set_v3(c);
            set_avx512(c);
        }));
        assert_eq!(skylake.dl_platform, "haswell");
        assert_eq!(skylake.hwcap_names, ["x86_64", "avx512_1"]);
        assert_eq!(skylake.hwcaps_subdirs, ["x86-64-v4", "x86-64-v3", "x86-64-v2"]);

        let amd = x86_64_loader(&X86Cpu {
            intel: false,
            ..intel_with(|c| {
                set_v3(c);
                set_avx512(c);
            })
        });
        assert_eq!(amd.dl_platform, "x86_64", "only Intel gets a platform");
        assert_eq!(amd.hwcap_names, ["x86_64"], "only Intel gets avx512_1");
        assert_eq!(amd.hwcaps_subdirs, ["x86-64-v4", "x86-64-v3", "x86-64-v2"]);

        let phi = x86_64_loader(&intel_with(|c| {
            set_v3(c);
            c.avx512f = true;
            c.avx512cd = true;
            c.avx512er = true;
            c.avx512pf = true;
        }));
        assert_eq!(phi.dl_platform, "xeon_phi");
        assert_eq!(phi.hwcap_names, ["x86_64"]);
        assert_eq!(phi.hwcaps_subdirs, ["x86-64-v3", "x86-64-v2"]);

        // A level needs every lower level: v3 features without LAHF/SAHF give nothing.
        let no_lahf = x86_64_loader(&intel_with(|c| {
            set_v3(c);
            c.lahf_sahf = false;
        }));
        assert!(no_lahf.hwcaps_subdirs.is_empty());
        assert_eq!(no_lahf.dl_platform, "haswell", "haswell does not need LAHF/SAHF");
    }

    #[test]
    fn legacy_power_set_order() {
        let cpu = i386_loader(&intel_with(|_| {}));
        assert_eq!(legacy_subdirs(&cpu), ["tls/i686/sse2", "tls/i686", "tls/sse2", "tls", "i686/sse2", "i686", "sse2"]);
        let bare = aarch64_loader(false);
        assert_eq!(legacy_subdirs(&bare), ["tls/aarch64", "tls", "aarch64"]);
    }

    #[test]
    fn cache_query_bits_for_this_host() {
        let hwcaps = host_hwcaps_subdirs(&X86_64);
        let query = host_cache_query(&X86_64, &hwcaps);
        let legacy = query.legacy.expect("glibc 2.36 honours legacy hwcaps");
        let cpu = loader_cpu(&X86_64);
        assert_eq!(legacy.platform_mask, 0xf << 48);
        assert_ne!(legacy.allowed & HWCAP_TLS, 0);
        assert_ne!(legacy.allowed & HWCAP_X86_64, 0);
        assert_eq!(legacy.allowed & HWCAP_X86_SSE2, 0, "sse2 is not important on x86_64");
        let expected_bit = match cpu.dl_platform.as_str() {
            "haswell" => Some(1 << 50),
            "xeon_phi" => Some(1 << 51),
            _ => None,
        };
        assert_eq!(legacy.platform_bit, expected_bit);
        assert_eq!(query.accepted_flags, [0x0303]);
        let isa = query.isa_1.expect("x86 has ISA levels");
        assert_eq!(x86_64_hwcaps_subdirs(isa), hwcaps);

        let i386 = host_cache_query(&I386, &[]);
        assert_eq!(i386.accepted_flags, [1, 3]);
        let i386_legacy = i386.legacy.expect("glibc 2.36 honours legacy hwcaps");
        assert_eq!(i386_legacy.platform_mask, 0x3 << 48);
        assert_eq!(i386_legacy.platform_bit, Some(1 << 49), "i686 on any x86_64 CPU");
    }
}
