//! The ld.so.cache writer: what it writes reads back the same, and a cache rewritten from one
//! ldconfig made reads back as ldconfig's (entries, order, flags, hwcap fields, lookups).
#![allow(clippy::disallowed_methods)] // tests build fixtures with plain fs calls

use std::fs;
use std::path::Path;
use std::process::Command;

use jailprov::closure::ld_cache::{CacheEntry, LdCache};
use jailprov::closure::ld_cache_writer::{write_cache, WrittenEntry};

fn entry(flags: i32, key: &str, value: &str, hwcaps: Option<&str>, legacy: u64, isa_level: u8) -> WrittenEntry {
    WrittenEntry {
        entry: CacheEntry {
            flags,
            key: key.into(),
            value: value.into(),
            hwcaps_subdir: hwcaps.map(str::to_owned),
            legacy_hwcap: legacy,
        },
        isa_level,
    }
}

/// Every entry of a cache with its ISA level, in file order.
fn written_entries(cache: &LdCache) -> Vec<WrittenEntry> {
    cache
        .entries()
        .iter()
        .enumerate()
        .map(|(index, entry)| WrittenEntry { entry: entry.clone(), isa_level: cache.isa_level(index) })
        .collect()
}

#[test]
fn what_the_writer_writes_the_reader_reads_back_in_ldconfig_order() {
    let given = vec![
        entry(0x0303, "libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6", None, 0, 0),
        entry(0x0003, "libc.so.6", "/usr/lib32/libc.so.6", None, 0, 0),
        entry(0x0001, "libnolibc.so.1", "/usr/lib32/libnolibc.so.1", None, 0, 0),
        entry(0x0303, "libjp.so.1", "/opt/jp/lib/libjp.so.1", None, 0, 0),
        entry(0x0303, "libjp.so.1", "/opt/jp/lib/glibc-hwcaps/x86-64-v3/libjp.so.1", Some("x86-64-v3"), 0, 3),
        entry(0x0303, "libjp.so.1", "/opt/jp/lib/glibc-hwcaps/x86-64-v2/libjp.so.1", Some("x86-64-v2"), 0, 2),
        entry(0x0303, "libjp.so.10", "/opt/jp/lib/libjp.so.10", None, 0, 0),
    ];
    let bytes = write_cache(&given, "jailprov");
    let cache = LdCache::parse(&bytes).expect("the written cache parses (its order is checked too)");
    assert_eq!(cache.generator(), Some("jailprov"));
    let read = written_entries(&cache);
    assert_eq!(read.len(), given.len(), "{read:#?}");
    for written in &given {
        assert!(read.contains(written), "{written:?} is read back: {read:#?}");
    }
    let keys: Vec<&str> = read.iter().map(|written| written.entry.key.as_str()).collect();
    assert_eq!(
        keys,
        ["libnolibc.so.1", "libjp.so.10", "libjp.so.1", "libjp.so.1", "libjp.so.1", "libc.so.6", "libc.so.6"],
        "descending _dl_cache_libcmp order: 10 sorts above 1 numerically"
    );
    let jp: Vec<Option<&str>> =
        read.iter().filter(|w| w.entry.key == "libjp.so.1").map(|w| w.entry.hwcaps_subdir.as_deref()).collect();
    assert_eq!(jp, [Some("x86-64-v2"), Some("x86-64-v3"), None], "glibc-hwcaps entries first, by name");
    let libc_flags: Vec<i32> = read.iter().filter(|w| w.entry.key == "libc.so.6").map(|w| w.entry.flags).collect();
    assert_eq!(libc_flags, [0x0303, 0x0003], "higher flags first for one soname");

    let hwcaps = ["x86-64-v3".to_owned(), "x86-64-v2".to_owned()];
    assert_eq!(cache.lookup("libjp.so.1", 0x0303, &hwcaps), Some("/opt/jp/lib/glibc-hwcaps/x86-64-v3/libjp.so.1"));
    assert_eq!(cache.lookup("libjp.so.1", 0x0303, &[]), Some("/opt/jp/lib/libjp.so.1"));
    assert_eq!(cache.lookup("libc.so.6", 0x0003, &[]), Some("/usr/lib32/libc.so.6"));
    assert_eq!(cache.lookup("libjp.so.01", 0x0303, &[]), Some("/opt/jp/lib/libjp.so.1"), "libcmp equality");
}

fn run(command: &mut Command) -> bool {
    match command.output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            eprintln!("{command:?} failed: {}", String::from_utf8_lossy(&out.stderr));
            false
        }
        Err(error) => {
            eprintln!("{command:?} cannot run: {error}");
            false
        }
    }
}

/// A shared library `name` (soname `soname`) built into `dir`; `extra` adds gcc flags.
fn library(dir: &Path, name: &str, soname: &str, extra: &[&str]) -> bool {
    fs::create_dir_all(dir).expect("mkdir");
    let source = dir.join(format!("{name}.c"));
    // A library that calls into libc needs it (DT_NEEDED libc.so.6): what ldconfig reads to tag
    // an i386 library libc6; one built -nostdlib cannot call it.
    let text = if extra.contains(&"-nostdlib") {
        "int jp_value(void) { return 42; }\n"
    } else {
        "#include <stdio.h>\nint jp_value(void) { return puts(\"jp\"); }\n"
    };
    fs::write(&source, text).expect("write source");
    let mut command = Command::new("gcc");
    command.args(["-shared", "-fPIC", "-o"]).arg(dir.join(name)).arg(format!("-Wl,-soname,{soname}")).arg(&source);
    command.args(extra);
    let built = run(&mut command);
    let _ = fs::remove_file(source);
    built
}

#[test]
fn a_cache_rewritten_from_ldconfigs_reads_back_as_ldconfigs() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED a_cache_rewritten_from_ldconfigs_reads_back_as_ldconfigs: ldconfig -r needs root");
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    // x86_64 (0x0303), i386 linked with libc (0x0003), i386 without libc (FLAG_ELF, 0x0001),
    // and a glibc-hwcaps subdirectory (its name and the ISA level of its library).
    let built = library(&root.join("opt/jp/lib"), "libjp.so.1.0", "libjp.so.1", &[])
        && library(
            &root.join("opt/jp/lib/glibc-hwcaps/x86-64-v2"),
            "libjp.so.1.0",
            "libjp.so.1",
            &["-march=x86-64-v2"],
        )
        && library(&root.join("opt/jp32/lib"), "libjp32.so.2.0", "libjp32.so.2", &["-m32"])
        && library(&root.join("opt/jp32/lib"), "libbare32.so.3.0", "libbare32.so.3", &["-m32", "-nostdlib"]);
    if !built {
        eprintln!("SKIPPED a_cache_rewritten_from_ldconfigs_reads_back_as_ldconfigs: gcc (with -m32) cannot build the fixtures");
        return;
    }
    fs::create_dir_all(root.join("etc")).expect("mkdir");
    fs::write(root.join("etc/ld.so.conf"), "/opt/jp/lib\n/opt/jp32/lib\n").expect("write conf");
    // -r: ldconfig chroots into the fixture and writes only its etc/ld.so.cache (and the
    // soname links in the fixture's directories); the host's cache is not touched.
    assert!(run(Command::new("ldconfig").arg("-r").arg(root)), "ldconfig -r builds the fixture cache");
    let made = LdCache::load(&root.join("etc/ld.so.cache")).expect("ldconfig's cache parses").expect("it exists");
    let theirs = written_entries(&made);
    let flags_of =
        |key: &str| -> Vec<i32> { theirs.iter().filter(|w| w.entry.key == key).map(|w| w.entry.flags).collect() };
    assert_eq!(flags_of("libjp32.so.2"), [0x0003], "{theirs:#?}");
    assert_eq!(flags_of("libbare32.so.3"), [0x0001], "{theirs:#?}");
    assert_eq!(flags_of("libjp.so.1"), [0x0303, 0x0303], "{theirs:#?}");

    // Rewritten in another order, the writer's cache reads back entry for entry as ldconfig's.
    let mut shuffled = theirs.clone();
    shuffled.reverse();
    let ours = LdCache::parse(&write_cache(&shuffled, "jailprov")).expect("the rewritten cache parses");
    assert_eq!(written_entries(&ours), theirs, "same entries, same order, same flags and hwcap fields");
    let hwcaps = ["x86-64-v2".to_owned()];
    for (key, flags) in [("libjp.so.1", 0x0303), ("libjp32.so.2", 0x0003), ("libbare32.so.3", 0x0001)] {
        for subdirs in [&hwcaps[..], &[]] {
            assert_eq!(ours.lookup(key, flags, subdirs), made.lookup(key, flags, subdirs), "{key} {subdirs:?}");
        }
    }
}
