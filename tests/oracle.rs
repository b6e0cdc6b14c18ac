//! Agreement with the real loader over every dynamically linked executable in /usr/bin.
//!
//! For each one, the loader under test (host options: sysroot "/", hwcaps and platform detected)
//! must find the same (name, path) pairs, the same missing names and the same interpreter as the
//! host's glibc loader prints (`LD_TRACE_LOADED_OBJECTS=1 ld.so EXE`, i.e. `ld.so --list EXE`
//! without its abort on the first missing library; see tests/support/mod.rs).
#![allow(clippy::disallowed_methods)] // tests build fixtures and jails with plain fs calls

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::thread;

use jailprov::closure::loader::{LoadResult, Loader};
use support::{describe, host_options, read_interp, reference_listing, Listing};

/// Executables whose disagreement is understood and accepted, each with the reason.
/// Empty: every disagreement is a loader bug until explained here.
const EXPLAINED_EXCEPTIONS: &[(&str, &str)] = &[
    // ("/usr/bin/example", "why the real loader and ours legitimately differ"),
];

const MIN_EXECUTABLES: usize = 200;
const THREADS: usize = 4;

/// The canonical paths of the executable ELF files with a PT_INTERP in `dir` (symlinks are
/// followed, then deduplicated; canonical because the real loader, run explicitly, takes $ORIGIN
/// of the executable from the path as given, the kernel from the canonical path), sorted.
fn dynamic_executables(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
    let exes: BTreeSet<PathBuf> = entries
        .filter_map(|entry| {
            let path = entry.ok()?.path().canonicalize().ok()?;
            let meta = fs::metadata(&path).ok()?;
            if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
                return None;
            }
            // Scripts and non-ELF files fail to parse; static executables have no PT_INTERP.
            read_interp(&path).ok()?.map(|_| path)
        })
        .collect();
    exes.into_iter().collect()
}

fn reference_listings(exes: &[PathBuf]) -> Vec<Result<Listing, String>> {
    let chunk = exes.len().div_ceil(THREADS).max(1);
    thread::scope(|scope| {
        let handles: Vec<_> = exes
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter().map(|exe| reference_listing(exe).map_err(|e| format!("{e:#}"))).collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("reference listing thread panicked")).collect()
    })
}

type Closure = (BTreeSet<(String, PathBuf)>, BTreeSet<String>);

fn closure_of_listing(listing: &Listing) -> Closure {
    (listing.objects.iter().cloned().collect(), listing.missing.iter().cloned().collect())
}

fn closure_of_result(result: &LoadResult) -> Closure {
    (
        result.objects.iter().map(|o| (o.name.clone(), o.path.clone())).collect(),
        result.missing.iter().map(|m| m.name.clone()).collect(),
    )
}

/// `None` if the loader agrees with the real loader on `exe`, else a full report of both sides.
fn disagreement(loader: &Loader, exe: &Path, reference: &Result<Listing, String>) -> Option<String> {
    let reference = match reference {
        Ok(listing) => listing,
        Err(e) => return Some(format!("the real loader failed: {e}")),
    };
    let interp = match read_interp(exe) {
        Ok(i) => i.map(PathBuf::from),
        Err(e) => return Some(format!("reading PT_INTERP: {e:#}")),
    };
    let result = match loader.load_executable(exe) {
        Ok(r) => r,
        Err(e) => return Some(format!("load_executable failed: {e:#}\nreal loader:\n{reference:#?}")),
    };
    let (ours, theirs) = (closure_of_result(&result), closure_of_listing(reference));
    if result.interpreter == interp && ours == theirs {
        return None;
    }
    let mut report = format!("interpreter: ours {:?}, PT_INTERP {:?}\n", result.interpreter, interp);
    for pair in ours.0.difference(&theirs.0) {
        report += &format!("  only ours:   {} => {}\n", pair.0, pair.1.display());
    }
    for pair in theirs.0.difference(&ours.0) {
        report += &format!("  only ld.so:  {} => {}\n", pair.0, pair.1.display());
    }
    for name in ours.1.symmetric_difference(&theirs.1) {
        let side = if ours.1.contains(name) { "ours" } else { "ld.so" };
        report += &format!("  missing only in {side}: {name}\n");
    }
    report += &format!("ours in full:\n{}ld.so in full:\n{reference:#?}\n", describe(&result));
    Some(report)
}

#[test]
fn loader_agrees_with_ld_so_list_on_usr_bin() {
    let exes = dynamic_executables(Path::new("/usr/bin"));
    assert!(
        exes.len() >= MIN_EXECUTABLES,
        "only {} dynamically linked executables in /usr/bin; the oracle needs at least \
         {MIN_EXECUTABLES} to mean anything",
        exes.len()
    );
    let references = reference_listings(&exes);
    let loader = Loader::new(host_options()).expect("Loader::new with host options");

    // Written straight to stderr (not through the test harness's capture) so it always shows.
    let mut err = std::io::stderr();
    let mut agree = 0;
    let mut unexplained = Vec::new();
    for (exe, reference) in exes.iter().zip(&references) {
        let Some(report) = disagreement(&loader, exe, reference) else {
            agree += 1;
            continue;
        };
        let explained = EXPLAINED_EXCEPTIONS.iter().find(|(path, _)| Path::new(path) == exe);
        let _ = writeln!(
            err,
            "oracle: DISAGREEMENT on {}{}\n{report}",
            exe.display(),
            explained.map_or(String::new(), |(_, why)| format!(" (explained: {why})"))
        );
        if explained.is_none() {
            unexplained.push(exe.display().to_string());
        }
    }
    let _ = writeln!(err, "oracle: {agree}/{} executables agree with ld.so --list", exes.len());
    assert!(
        unexplained.is_empty(),
        "oracle: {} unexplained disagreement(s) with ld.so --list: {unexplained:#?}",
        unexplained.len()
    );
}
