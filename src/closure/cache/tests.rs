#![allow(clippy::disallowed_methods)] // tests build their fixtures with plain fs calls

use super::*;
use crate::closure::elf::read_elf_with_metadata;
use crate::closure::loader::{Loader, LoaderOptions};
use crate::host::HostFs;

/// A real shared library of this host: libc, which every test machine has.
fn host_library() -> PathBuf {
    let loader = Loader::new(LoaderOptions::host()).expect("the host's loader");
    let load = loader.load_executable(Path::new("/bin/sh")).expect("/bin/sh loads");
    load.objects.iter().find(|object| object.name.starts_with("libc.so")).expect("/bin/sh needs libc").path.clone()
}

/// A private state directory, as `jailprov` would find it.
fn state_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary state directory")
}

fn facts_of(path: &Path) -> (ElfInfo, FileIdentity) {
    let (info, metadata) = read_elf_with_metadata(path).expect("readable").expect("an ELF file");
    (info, FileIdentity::of(&metadata))
}

#[test]
fn what_one_run_learns_the_next_run_finds() {
    let state = state_dir();
    let library = host_library();
    let (info, identity) = facts_of(&library);
    let imports = vec![Import { need: Need::Iconv, symbol: "iconv_open".into() }];
    let cache = ClosureCache::in_state_dir(state.path());
    assert!(cache.is_empty(), "a fresh state directory remembers nothing");
    cache.learn_elf(identity, &Arc::new(info.clone()));
    cache.learn_imports(identity, &imports);
    cache.save();

    let next = ClosureCache::in_state_dir(state.path());
    assert_eq!(next.elf(&identity).as_deref(), Some(&info));
    assert_eq!(next.imports(&identity), Some(imports));
    let mode = fs::metadata(state.path().join(CACHE_DIR)).expect("the cache directory").permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the cache directory is private like the state directory");
}

#[test]
fn nothing_is_written_without_a_state_directory() {
    let state = state_dir();
    let missing = state.path().join("not-there");
    let cache = ClosureCache::in_state_dir(&missing);
    let (info, identity) = facts_of(&host_library());
    cache.learn_elf(identity, &Arc::new(info));
    cache.save();
    assert!(!missing.exists(), "the state directory is never created for a cache");
}

#[test]
fn a_truncated_or_flipped_cache_is_refused_never_misread() {
    let state = state_dir();
    let (info, identity) = facts_of(&host_library());
    let cache = ClosureCache::in_state_dir(state.path());
    cache.learn_elf(identity, &Arc::new(info));
    let bytes = cache.encode();
    assert!(ClosureCache::decode(&bytes).is_ok(), "the unharmed encoding decodes");
    for length in 0..bytes.len() {
        assert!(ClosureCache::decode(&bytes[..length]).is_err(), "a cache cut to {length} bytes is refused");
    }
    let mut random = crate::closure::xorshift(0x5eed);
    for _ in 0..500 {
        let mut flipped = bytes.clone();
        let at = (random() % bytes.len() as u64) as usize;
        flipped[at] ^= 1 << (random() % 8);
        assert!(ClosureCache::decode(&flipped).is_err(), "a flipped bit at byte {at} is refused");
    }
}

#[test]
fn a_garbage_cache_is_ignored_and_rewritten() {
    let state = state_dir();
    let dir = state.path().join(CACHE_DIR);
    fs::create_dir(&dir).expect("mkdir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    fs::write(dir.join(CACHE_FILE), b"JPCLOSC\0 not a cache at all").expect("write garbage");
    let cache = ClosureCache::in_state_dir(state.path());
    assert!(cache.is_empty(), "garbage is ignored");
    let (info, identity) = facts_of(&host_library());
    cache.learn_elf(identity, &Arc::new(info.clone()));
    cache.save();
    let rewritten = ClosureCache::in_state_dir(state.path());
    assert_eq!(rewritten.elf(&identity).as_deref(), Some(&info), "the next run rewrote it whole");
}

/// The cache is trusted only for the very file it describes: a library swapped for another of
/// the same size and mtime (a new inode, a new ctime) is read again.
#[test]
fn a_replaced_library_of_the_same_size_and_mtime_is_read_again() {
    let state = state_dir();
    let work = tempfile::tempdir().expect("a work directory");
    let library = work.path().join("libsame.so");
    fs::copy(host_library(), &library).expect("copy libc");
    let (_, identity) = facts_of(&library);
    // Remember something false of the file, to see whether the cache or the file answers.
    let (mut planted, _) = facts_of(&library);
    planted.soname = Some("remembered.so".to_owned());
    let cache = ClosureCache::in_state_dir(state.path());
    cache.learn_elf(identity, &Arc::new(planted));
    cache.save();

    let soname_seen = || {
        let cache = ClosureCache::in_state_dir(state.path());
        let loader = Loader::with_host(HostFs::real(), LoaderOptions::host()).expect("loader").remembering(cache);
        loader.elf(&library).expect("readable").expect("ELF").soname.clone()
    };
    assert_eq!(soname_seen().as_deref(), Some("remembered.so"), "an unchanged file is answered by the cache");

    // Same bytes, same size, same mtime: only the inode and the ctime differ.
    let mtime = fs::metadata(&library).expect("stat").modified().expect("mtime");
    let replacement = work.path().join("libsame.so.new");
    fs::copy(&library, &replacement).expect("copy");
    fs::File::options().write(true).open(&replacement).expect("open").set_modified(mtime).expect("set mtime");
    fs::rename(&replacement, &library).expect("replace");
    let (_, replaced) = facts_of(&library);
    assert_eq!((replaced.print.size, replaced.print.mtime_ns), (identity.print.size, identity.print.mtime_ns));
    assert_ne!(replaced, identity);
    assert_ne!(soname_seen().as_deref(), Some("remembered.so"), "the replaced file is read again");
}

#[test]
fn a_verdict_comes_back_whole() {
    use crate::closure::loader::SearchStep;
    use crate::closure::symbols::{MissingVersion, UnresolvedSymbol};
    let verdict = Verdict {
        program: PathBuf::from("/opt/prog"),
        verdict: "error".into(),
        allow_unresolved: false,
        missing_versions: vec![MissingVersion {
            version: "VER_2".to_owned(),
            needed_by: PathBuf::from("/opt/prog"),
            file: "libv.so".to_owned(),
            library: PathBuf::from("/opt/old/libv.so"),
            found_by: SearchStep::Rpath { entry: "/opt/old".to_owned(), of: PathBuf::from("/opt/prog") },
            defined: vec!["VER_1".to_owned()],
        }],
        unresolved_symbols: vec![UnresolvedSymbol {
            symbol: "v2".to_owned(),
            version: None,
            object: PathBuf::from("/opt/prog"),
            severity: "warning".into(),
            binding: "bound lazily: the program fails at its first call".into(),
        }],
    };
    let allowed = Verdict { verdict: "ok".into(), allow_unresolved: true, ..verdict.clone() };
    let imports = vec![Import { need: Need::Timezones, symbol: "tzset".into() }];
    let state = state_dir();
    let cache = ClosureCache::in_state_dir(state.path());
    cache.learn_verdict([1; 16], &verdict, &imports);
    cache.learn_verdict([2; 16], &allowed, &[]);
    cache.save();
    let next = ClosureCache::in_state_dir(state.path());
    assert_eq!(next.verdict(&[1; 16]), Some((verdict, imports)));
    assert_eq!(next.verdict(&[2; 16]), Some((allowed, Vec::new())));
    assert_eq!(next.verdict(&[3; 16]), None);
}

/// Past the limit, what the run asked for and what it learned stay; the rest goes.
#[test]
fn past_the_limit_only_what_was_used_or_learned_is_kept() {
    let state = state_dir();
    let (info, identity) = facts_of(&host_library());
    let info = Arc::new(info);
    let cache = ClosureCache::in_state_dir(state.path());
    let unused = |n: u64| FileIdentity { dev: u64::MAX, print: StatPrint { ino: n, ..identity.print } };
    for n in 0..ENTRY_LIMIT as u64 {
        cache.learn_imports(unused(n), &[]);
    }
    cache.learn_elf(identity, &info);
    cache.save();

    let next = ClosureCache::in_state_dir(state.path());
    assert!(next.elf(&identity).is_some(), "asked for");
    let fresh = FileIdentity { dev: u64::MAX - 1, ..identity };
    next.learn_elf(fresh, &info);
    next.save();

    let last = ClosureCache::in_state_dir(state.path());
    assert!(last.elf(&identity).is_some(), "what the run used is kept");
    assert!(last.elf(&fresh).is_some(), "what it learned is kept");
    assert_eq!(last.imports(&unused(7)), None, "what nothing asked for is forgotten past the limit");
}
