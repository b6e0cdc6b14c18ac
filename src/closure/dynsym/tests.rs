//! The symbol reader on libc, gcc-built libraries and corrupted copies of them.
#![allow(clippy::disallowed_methods)] // tests build their fixtures with plain fs calls

use super::*;
use std::fs;
use std::process::Command;

const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";

fn gcc(dir: &Path, args: &[&str]) -> bool {
    let out = Command::new("gcc").current_dir(dir).args(args).output().expect("gcc can be spawned");
    if !out.status.success() {
        eprintln!("gcc {:?} failed: {}", args, String::from_utf8_lossy(&out.stderr));
    }
    out.status.success()
}

/// A versioned library that also calls out (undefined references, relocations).
fn versioned_library(dir: &Path, out: &str, extra: &[&str]) -> Vec<u8> {
    fs::write(
        dir.join("v.c"),
        "#include <stdio.h>\nint v1(void) { return puts(\"x\"); }\nint v2(void) { return 2; }\n",
    )
    .expect("tempdir is writable");
    fs::write(dir.join("v.map"), "VER_1 { global: v1; local: *; };\nVER_2 { global: v2; } VER_1;\n")
        .expect("tempdir is writable");
    let mut args = vec!["-shared", "-fPIC", "-o", out, "-Wl,-soname,libv.so", "-Wl,--version-script=v.map", "v.c"];
    args.extend_from_slice(extra);
    assert!(gcc(dir, &args), "building {out} must succeed");
    fs::read(dir.join(out)).expect("gcc output is readable")
}

#[test]
fn libc_defines_its_versions_and_puts() {
    let facts = read_symbols(Path::new(LIBC)).unwrap().expect("libc is ELF");
    assert!(facts.has_versym);
    assert!(facts.defines_version("GLIBC_2.2.5") && facts.defines_version("GLIBC_2.34"));
    assert!(facts.defines_version("libc.so.6"), "the base entry counts, as in glibc's match_symbol");
    assert!(!facts.defined_versions().contains(&"libc.so.6"), "but is not listed as a version");
    assert!(facts.satisfies(b"puts", Some("GLIBC_2.2.5"), false));
    assert!(!facts.satisfies(b"puts", Some("GLIBC_9.99"), false));
    assert!(facts.satisfies(b"puts", None, false), "an unversioned reference binds to the default");
    assert!(!facts.satisfies(b"no_such_function_anywhere", None, false));
    assert!(facts.version_needs.iter().any(|need| need.file == "ld-linux-x86-64.so.2"));
}

#[test]
fn version_script_definitions_needs_and_references() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = versioned_library(tmp.path(), "libv.so", &[]);
    let facts = parse_symbols(&bytes).unwrap().unwrap();
    assert_eq!(facts.defined_versions(), ["VER_1", "VER_2"]);
    assert!(facts.satisfies(b"v2", Some("VER_2"), false));
    assert!(!facts.satisfies(b"v2", Some("VER_1"), false), "v2 is VER_2 only");
    assert!(!facts.satisfies(b"v1", Some("VER_2"), false));
    let puts = facts.undefined.iter().find(|reference| facts.name_of(reference) == b"puts").expect("puts is undefined");
    assert_eq!(facts.version_of(puts), Some("GLIBC_2.2.5"));
    assert!(facts.version_needs.iter().any(|need| need.file == "libc.so.6" && need.version == "GLIBC_2.2.5"));
    let uses = parse_relocation_uses(&bytes, &facts).unwrap();
    assert!(uses.plt.contains(&puts.index) || uses.at_start.contains(&puts.index), "{uses:?}");
}

#[test]
fn sysv_and_gnu_hash_tables_count_the_same_symbols() {
    let tmp = tempfile::tempdir().unwrap();
    let gnu = parse_symbols(&versioned_library(tmp.path(), "libgnu.so", &["-Wl,--hash-style=gnu"])).unwrap();
    let sysv = parse_symbols(&versioned_library(tmp.path(), "libsysv.so", &["-Wl,--hash-style=sysv"])).unwrap();
    let (gnu, sysv) = (gnu.unwrap(), sysv.unwrap());
    assert!(matches!(gnu.definitions, Definitions::GnuHash(_)), "{:?}", gnu.definitions);
    assert!(matches!(sysv.definitions, Definitions::Map(_)), "{:?}", sysv.definitions);
    assert_eq!(gnu.definition_count(), sysv.definition_count());
    let names = |facts: &SymbolFacts| -> Vec<Vec<u8>> {
        facts.undefined.iter().map(|reference| facts.name_of(reference).to_vec()).collect()
    };
    assert_eq!(names(&gnu), names(&sysv));
    assert!(gnu.definition_count() >= 2);
    for facts in [&gnu, &sysv] {
        assert!(facts.satisfies(b"v1", Some("VER_1"), false) && facts.satisfies(b"v2", Some("VER_2"), false));
        assert!(!facts.satisfies(b"v3", None, false) && !facts.satisfies(b"puts", None, false));
    }
}

#[test]
fn bind_now_relocations_are_read_from_the_plt_or_got() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = versioned_library(tmp.path(), "libnow.so", &["-Wl,-z,now"]);
    let facts = parse_symbols(&bytes).unwrap().unwrap();
    let uses = parse_relocation_uses(&bytes, &facts).unwrap();
    let puts = facts.undefined.iter().find(|reference| facts.name_of(reference) == b"puts").expect("puts is undefined");
    assert!(uses.plt.contains(&puts.index) || uses.at_start.contains(&puts.index), "{uses:?}");
}

#[test]
fn verneed_chains_revisiting_the_same_bytes_end_quickly() {
    // 65,536 overlapping records, each both an entry (vn_cnt 0x8000) and an aux, each
    // pointing 16 bytes on: every chain stays inside the 1 MiB read, and without a bound on
    // the pairs the walk takes ~2^30 steps and as many pushes.
    let record = [&1u16.to_le_bytes()[..], &0x8000u16.to_le_bytes(), &[0; 8], &16u32.to_le_bytes()].concat();
    let bytes = record.repeat(1 << 16);
    let empty: &[u8] = &[];
    let ctx = Ctx::new(goblin::container::Container::Big, goblin::container::Endian::Little);
    let image = Image { source: &empty, phdrs: Vec::new(), ctx };
    let started = std::time::Instant::now();
    let walked = walk_verneed(&image, &bytes, u64::MAX);
    assert!(walked.is_err(), "more pairs than any object has is corruption");
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
}

#[test]
fn every_truncation_and_corruption_of_a_library_is_handled_without_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let original = versioned_library(tmp.path(), "libcut.so", &[]);
    let complete = parse_symbols(&original).unwrap().unwrap();
    let mut errors = 0;
    for len in (0..original.len()).step_by(7) {
        match parse_symbols(&original[..len]) {
            Ok(Some(facts)) => {
                // A prefix that still parses must not invent anything.
                assert!(facts.definition_count() <= complete.definition_count(), "prefix of {len} bytes");
                let _ = parse_relocation_uses(&original[..len], &facts);
            }
            Ok(None) => assert!(len < 64, "only a cut header is 'not ELF' ({len})"),
            Err(_) => errors += 1,
        }
    }
    assert!(errors > 0, "short prefixes must be rejected");
    let mut next = crate::closure::xorshift(0x2545_f491_4f6c_dd1d);
    let mut outcomes = [0usize; 2];
    // The headers, dynamic symbols, strings and version sections of a small library lie in
    // its first pages: corrupt there, where every byte matters.
    let hot = original.len().min(8192);
    for _ in 0..3000 {
        let mut bytes = original.clone();
        for _ in 0..(1 + next() % 6) {
            let at = 4 + (next() as usize) % (hot - 4);
            bytes[at] = next() as u8;
        }
        let parsed = parse_symbols(&bytes);
        if let Ok(Some(facts)) = &parsed {
            let _ = parse_relocation_uses(&bytes, facts);
        }
        outcomes[usize::from(parsed.is_ok())] += 1;
    }
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "corruptions are caught, and harmless ones pass: {outcomes:?}");
}
