//! `jailprov closure` and `jailprov why` end to end: the real binary, run in a fresh tempdir with
//! `-f Jailfile.toml`, judged by what a user sees (exit code, JSON, text, tree, messages).
//!
//! Expectations about the host (symlink texts, canonical paths, where a program lives) are taken
//! from the host at test time with std::fs, never hard-coded: CI hosts are Debian 12 x86_64, but
//! library patch versions drift.
#![allow(clippy::disallowed_methods)] // tests build fixtures and jails with plain fs calls

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

#[path = "support/prerequisites.rs"]
mod prerequisites;

/// Where the closure looks up bare program names (and `#!/usr/bin/env NAME`), as documented.
const SEARCH_PATH: &[&str] = &["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// The PT_INTERP of every dynamic executable on x86_64 glibc (an ABI constant).
const RTLD: &str = "/lib64/ld-linux-x86-64.so.2";

/// A fresh directory holding a Jailfile.toml and whatever fixtures a test builds.
struct Workdir {
    _dir: tempfile::TempDir,
    /// The tempdir's canonical path: closure paths are canonical host paths.
    root: PathBuf,
}

/// What one jailprov run gave.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `closure --format json`, typed.
#[derive(Debug, Deserialize)]
struct Listing {
    entries: Vec<Entry>,
    #[serde(default)]
    excluded: Vec<String>,
    #[serde(default)]
    allowed_missing: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    path: String,
    kind: String,
    source: Option<String>,
    target: Option<String>,
    #[serde(default)]
    sonames: Vec<String>,
    needed_by: Vec<String>,
}

impl Workdir {
    fn new() -> Workdir {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = fs::canonicalize(dir.path()).expect("canonical tempdir");
        Workdir { _dir: dir, root }
    }

    /// Absolute host path of `relative` in the tempdir, as a string for Jailfiles and asserts.
    fn path(&self, relative: &str) -> String {
        self.root.join(relative).to_str().expect("UTF-8 tempdir").to_owned()
    }

    fn write(&self, relative: &str, content: &str) -> String {
        let path = self.root.join(relative);
        fs::create_dir_all(path.parent().expect("has a parent")).expect("create parent dirs");
        fs::write(&path, content).expect("write fixture");
        self.path(relative)
    }

    fn write_executable(&self, relative: &str, content: &str) -> String {
        let path = self.write(relative, content);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod +x");
        path
    }

    /// Writes Jailfile.toml: a fixed `root` line, then `body`.
    fn jailfile(&self, body: &str) {
        self.write("Jailfile.toml", &format!("root = \"/srv/jails/t\"\n{body}"));
    }

    fn run(&self, args: &[&str]) -> Run {
        let output = Command::new(env!("CARGO_BIN_EXE_jailprov"))
            .args(args)
            .current_dir(&self.root)
            .output()
            .expect("jailprov runs");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// `closure -f Jailfile.toml` with extra arguments; must succeed.
    fn closure_ok(&self, extra: &[&str]) -> String {
        let mut args = vec!["closure", "-f", "Jailfile.toml"];
        args.extend_from_slice(extra);
        let run = self.run(&args);
        assert_eq!(run.code, 0, "closure {extra:?} must succeed; stderr:\n{}", run.stderr);
        run.stdout
    }

    fn listing(&self) -> Listing {
        let stdout = self.closure_ok(&["--format", "json"]);
        serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("closure JSON parses ({error}):\n{stdout}"))
    }

    fn why(&self, path: &str) -> Run {
        self.run(&["why", path, "-f", "Jailfile.toml"])
    }

    /// Runs gcc in the tempdir; panics with its stderr on failure (naming the package when
    /// gcc or a static libc is missing).
    fn gcc(&self, args: &[&str]) {
        prerequisites::require(&prerequisites::GCC);
        if args.contains(&"-static") {
            prerequisites::require(&prerequisites::STATIC_LIBC);
        }
        let output = Command::new("gcc").args(args).current_dir(&self.root).output().expect("gcc runs");
        assert!(output.status.success(), "gcc {args:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    }

    /// A shared object at `relative` that calls sin(), so it needs libm.so.6.
    fn build_libm_user(&self, relative: &str) -> String {
        self.write("src/uses_libm.c", "#include <math.h>\ndouble jp_wave(double x) { return sin(x); }\n");
        let out = self.path(relative);
        fs::create_dir_all(Path::new(&out).parent().expect("has a parent")).expect("mkdir");
        self.gcc(&["-shared", "-fPIC", "-o", &out, "src/uses_libm.c", "-lm"]);
        out
    }
}

impl Listing {
    fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.iter().find(|entry| entry.path == path)
    }

    /// The entry at `path`; panics listing every path when it is absent.
    fn entry(&self, path: &str) -> &Entry {
        self.get(path).unwrap_or_else(|| panic!("no entry {path} in the closure; paths: {:#?}", self.paths()))
    }

    fn paths(&self) -> Vec<&str> {
        self.entries.iter().map(|entry| entry.path.as_str()).collect()
    }

    fn of_kind(&self, kind: &str) -> Vec<&Entry> {
        self.entries.iter().filter(|entry| entry.kind == kind).collect()
    }

    /// The one entry loaded under `soname` (a library or NSS module).
    fn with_soname(&self, soname: &str) -> &Entry {
        let found: Vec<&Entry> =
            self.entries.iter().filter(|entry| entry.sonames.iter().any(|s| s == soname)).collect();
        assert_eq!(found.len(), 1, "exactly one entry has soname {soname}: {found:#?}");
        found[0]
    }

    /// The one binary entry declared by `key`.
    fn binary_of(&self, key: &str) -> &Entry {
        let found: Vec<&Entry> =
            self.of_kind("binary").into_iter().filter(|entry| entry.needed_by.iter().any(|k| k == key)).collect();
        assert_eq!(found.len(), 1, "exactly one binary declared by {key}: {found:#?}");
        found[0]
    }

    /// Asserts there is a symlink entry for every link on the host's way to `host_path`, with
    /// the link text `readlink` gives on the host.
    fn assert_has_links_of(&self, host_path: &str) {
        let links = host_links(Path::new(host_path));
        for (link, text) in links {
            let entry = self.entry(&link);
            assert_eq!(entry.kind, "symlink", "{link} is a symlink on the host: {entry:#?}");
            assert_eq!(entry.target.as_deref(), Some(text.as_str()), "{link} keeps its host link text: {entry:#?}");
        }
    }
}

impl Entry {
    fn needed_by(&self, who: &str) -> bool {
        self.needed_by.iter().any(|needer| needer == who)
    }
}

fn canonical(path: &str) -> String {
    fs::canonicalize(path)
        .unwrap_or_else(|error| panic!("{path} must exist on the host: {error}"))
        .to_str()
        .expect("UTF-8 path")
        .to_owned()
}

fn read_link(path: &str) -> String {
    fs::read_link(path)
        .unwrap_or_else(|error| panic!("{path} must be a symlink on the host: {error}"))
        .to_str()
        .expect("UTF-8 link text")
        .to_owned()
}

fn is_symlink(path: &str) -> bool {
    fs::symlink_metadata(path).is_ok_and(|metadata| metadata.file_type().is_symlink())
}

/// Where a bare program name is found on the host, as the documented search path finds it.
fn find_program(name: &str) -> String {
    SEARCH_PATH
        .iter()
        .map(|dir| format!("{dir}/{name}"))
        .find(|candidate| Path::new(candidate).is_file())
        .unwrap_or_else(|| panic!("{name} must be installed on the host"))
}

/// Every symlink the kernel follows to resolve `path`, with its text, in order.
fn host_links(path: &Path) -> Vec<(String, String)> {
    let mut links = Vec::new();
    let mut done = PathBuf::from("/");
    let mut pending: Vec<OsString> = reversed_components(path);
    while let Some(name) = pending.pop() {
        if name == ".." {
            done.pop();
            continue;
        }
        let candidate = done.join(&name);
        match fs::read_link(&candidate) {
            Ok(text) => {
                assert!(links.len() < 40, "too many links resolving {}", path.display());
                links.push((candidate.to_str().expect("UTF-8").to_owned(), text.to_str().expect("UTF-8").to_owned()));
                if text.is_absolute() {
                    done = PathBuf::from("/");
                }
                pending.extend(reversed_components(&text));
            }
            Err(_) => done = candidate,
        }
    }
    links
}

fn reversed_components(path: &Path) -> Vec<OsString> {
    let mut parts: Vec<OsString> = path
        .components()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(name.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    parts.reverse();
    parts
}

const BASH_ELF_ONLY: &str = "binaries = [\"bash\"]\n\n[runtime]\nenabled = false\n";

/// bash's ELF closure alone: its run-time needs (gconv modules, locales...) are pinned by
/// tests/runtime.rs.
fn bash_jail() -> (Workdir, Listing) {
    let work = Workdir::new();
    work.jailfile(BASH_ELF_ONLY);
    let listing = work.listing();
    (work, listing)
}

// ---------------------------------------------------------------------------------------------
// 1. JSON shape, binaries = ["bash"]
// ---------------------------------------------------------------------------------------------

#[test]
fn json_is_an_entries_list_with_path_kind_needed_by_and_host_sources() {
    let work = Workdir::new();
    work.jailfile(BASH_ELF_ONLY);
    let stdout = work.closure_ok(&["--format", "json"]);
    let json: Value = serde_json::from_str(&stdout).expect("closure --format json is JSON");
    let entries = json["entries"].as_array().unwrap_or_else(|| panic!("{{\"entries\": [...]}} expected:\n{stdout}"));
    assert!(!entries.is_empty(), "bash brings something");
    for entry in entries {
        assert!(entry["path"].as_str().is_some_and(|path| path.starts_with('/')), "absolute path: {entry}");
        assert!(entry["kind"].is_string(), "kind is a string: {entry}");
        let needed_by = entry["needed_by"].as_array().unwrap_or_else(|| panic!("needed_by is a list: {entry}"));
        assert!(!needed_by.is_empty() && needed_by.iter().all(Value::is_string), "needed_by names someone: {entry}");
        // Everything a bare `binaries` list brings is copied from the host.
        assert!(entry["source"].as_str().is_some_and(|source| source.starts_with('/')), "host source: {entry}");
    }
}

#[test]
fn bash_is_a_binary_needed_by_its_declaration() {
    let (_work, listing) = bash_jail();
    let bash = listing.binary_of("binaries[0]");
    assert_eq!(bash.path, canonical(&find_program("bash")));
    assert_eq!(bash.needed_by, vec!["binaries[0]"]);
    assert_eq!(bash.source.as_deref(), Some(bash.path.as_str()));
    assert_eq!(listing.of_kind("binary").len(), 1, "only bash is a binary");
}

#[test]
fn bash_has_exactly_one_interpreter_at_the_canonical_pt_interp() {
    let (_work, listing) = bash_jail();
    let interpreters = listing.of_kind("interpreter");
    assert_eq!(interpreters.len(), 1, "exactly one ELF interpreter: {interpreters:#?}");
    let bash = listing.binary_of("binaries[0]");
    assert_eq!(interpreters[0].path, canonical(RTLD));
    assert!(interpreters[0].needed_by(&bash.path), "{:#?}", interpreters[0]);
}

#[test]
fn interpreter_symlink_chain_is_kept_with_host_link_text() {
    let (_work, listing) = bash_jail();
    let links = host_links(Path::new(RTLD));
    assert!(!links.is_empty(), "on Debian 12 (usr-merged) {RTLD} is reached through links");
    listing.assert_has_links_of(RTLD);
    // Spelled out for this usr-merged host: /lib64 -> usr/lib64, then the loader link in usr/lib64.
    assert_eq!(listing.entry("/lib64").target.as_deref(), Some(read_link("/lib64").as_str()));
    let loader_link = "/usr/lib64/ld-linux-x86-64.so.2";
    assert_eq!(listing.entry(loader_link).target.as_deref(), Some(read_link(loader_link).as_str()));
}

#[test]
fn libc_is_a_library_needed_by_bash_under_its_soname() {
    let (_work, listing) = bash_jail();
    let bash = listing.binary_of("binaries[0]");
    let libc = listing.with_soname("libc.so.6");
    assert_eq!(libc.kind, "library");
    assert!(libc.path.ends_with("/libc.so.6"), "{libc:#?}");
    assert!(libc.needed_by(&bash.path), "libc needed by {}: {libc:#?}", bash.path);
}

#[test]
fn usr_merge_bin_link_comes_with_a_program_in_usr_bin() {
    let (_work, listing) = bash_jail();
    if !is_symlink("/bin") {
        eprintln!("SKIPPED: /bin is not a symlink on this host (not usr-merged)");
        return;
    }
    assert!(listing.binary_of("binaries[0]").path.starts_with("/usr/bin/"));
    let bin = listing.entry("/bin");
    assert_eq!(bin.kind, "symlink");
    assert_eq!(bin.target.as_deref(), Some(read_link("/bin").as_str()));
}

// ---------------------------------------------------------------------------------------------
// 2. A binary that is a symlink
// ---------------------------------------------------------------------------------------------

#[test]
fn symlinked_binary_brings_the_link_with_its_text_and_the_target_as_binary() {
    prerequisites::require(&prerequisites::PYTHON3);
    let work = Workdir::new();
    work.jailfile("binaries = [\"/usr/bin/python3\"]\n");
    let listing = work.listing();
    let link = listing.entry("/usr/bin/python3");
    assert_eq!(link.kind, "symlink");
    assert_eq!(link.target.as_deref(), Some(read_link("/usr/bin/python3").as_str()));
    assert!(link.needed_by("binaries[0]"), "{link:#?}");
    let target = listing.entry(&canonical("/usr/bin/python3"));
    assert_eq!(target.kind, "binary");
    assert!(target.needed_by("binaries[0]"), "{target:#?}");
}

// ---------------------------------------------------------------------------------------------
// 3. Scripts
// ---------------------------------------------------------------------------------------------

#[test]
fn env_script_brings_env_and_the_program_env_runs() {
    prerequisites::require(&prerequisites::PYTHON3);
    let work = Workdir::new();
    let script = work.write_executable("bin/hello.py", "#!/usr/bin/env python3\nprint('hello')\n");
    work.jailfile(&format!("binaries = [\"{script}\"]\n"));
    let listing = work.listing();
    assert_eq!(listing.entry(&script).kind, "binary");
    let env = listing.entry(&canonical("/usr/bin/env"));
    assert_eq!(env.kind, "script-interpreter");
    assert!(env.needed_by(&script), "{env:#?}");
    let python = find_program("python3");
    let program = listing.entry(&canonical(&python));
    assert_eq!(program.kind, "script-interpreter");
    assert!(program.needed_by(&script), "{program:#?}");
    listing.assert_has_links_of(&python);
}

#[test]
fn sh_script_with_an_argument_brings_the_canonical_shell_and_its_links() {
    let work = Workdir::new();
    let script = work.write_executable("bin/hello.sh", "#!/bin/sh -e\necho hello\n");
    work.jailfile(&format!("binaries = [\"{script}\"]\n"));
    let listing = work.listing();
    let shell = listing.entry(&canonical("/bin/sh"));
    assert_eq!(shell.kind, "script-interpreter");
    assert!(shell.needed_by(&script), "{shell:#?}");
    listing.assert_has_links_of("/bin/sh");
    // The shell is an ELF program like any other: it comes with its loader and libc.
    assert!(listing.with_soname("libc.so.6").needed_by(&shell.path));
}

#[test]
fn script_with_a_missing_interpreter_fails_naming_script_and_interpreter() {
    let work = Workdir::new();
    let script = work.write_executable("bin/broken", "#!/nonexistent/jailprov-interp\n");
    work.jailfile(&format!("binaries = [\"{script}\"]\n"));
    let run = work.run(&["closure", "-f", "Jailfile.toml"]);
    assert_eq!(run.code, 1, "stdout: {}\nstderr: {}", run.stdout, run.stderr);
    assert!(run.stderr.contains(&script), "names the script: {}", run.stderr);
    assert!(run.stderr.contains("/nonexistent/jailprov-interp"), "names the interpreter: {}", run.stderr);
    assert!(run.stdout.is_empty(), "no partial closure on stdout: {}", run.stdout);
}

// ---------------------------------------------------------------------------------------------
// 4. Missing sonames
// ---------------------------------------------------------------------------------------------

/// An executable linked against libjpmissing.so.1 with an rpath, the library then deleted.
/// Returns (exe, rpath dir).
fn exe_with_deleted_library(work: &Workdir) -> (String, String) {
    let lib_dir = work.path("lib");
    fs::create_dir_all(&lib_dir).expect("mkdir lib");
    work.write("src/missing.c", "int jp_missing(void) { return 7; }\n");
    work.write("src/main.c", "int jp_missing(void);\nint main(void) { return jp_missing(); }\n");
    let lib = format!("{lib_dir}/libjpmissing.so.1");
    work.gcc(&["-shared", "-fPIC", "-Wl,-soname,libjpmissing.so.1", "-o", &lib, "src/missing.c"]);
    let exe = work.path("bin/needs-missing");
    fs::create_dir_all(work.path("bin")).expect("mkdir bin");
    work.gcc(&["-o", &exe, "src/main.c", &lib, &format!("-Wl,-rpath,{lib_dir}")]);
    fs::remove_file(&lib).expect("delete the library");
    (exe, lib_dir)
}

#[test]
fn missing_soname_fails_naming_library_requester_and_searched_rpath() {
    let work = Workdir::new();
    let (exe, lib_dir) = exe_with_deleted_library(&work);
    work.jailfile(&format!("binaries = [\"{exe}\"]\n"));
    let run = work.run(&["closure", "-f", "Jailfile.toml"]);
    assert_eq!(run.code, 1, "stdout: {}\nstderr: {}", run.stdout, run.stderr);
    assert!(run.stderr.contains("libjpmissing.so.1"), "names the soname: {}", run.stderr);
    assert!(run.stderr.contains(&exe), "names the object that needs it: {}", run.stderr);
    let searched = run
        .stderr
        .lines()
        .find(|line| line.trim_start().starts_with("searched:"))
        .unwrap_or_else(|| panic!("lists the searched directories: {}", run.stderr));
    assert!(searched.split([' ', ',']).any(|dir| dir == lib_dir), "rpath dir {lib_dir} searched: {searched}");
    assert!(run.stderr.contains("allow_missing"), "tells how to accept it: {}", run.stderr);
}

#[test]
fn allow_missing_accepts_the_soname_and_the_summary_says_so() {
    let work = Workdir::new();
    let (exe, _) = exe_with_deleted_library(&work);
    work.jailfile(&format!("binaries = [\"{exe}\"]\nallow_missing = [\"libjpmissing.so.1\"]\n"));
    let text = work.closure_ok(&[]);
    let summary = text.lines().last().expect("a summary line");
    assert!(summary.contains("allowed missing") && summary.contains("libjpmissing.so.1"), "summary: {summary}");
    let listing = work.listing();
    assert_eq!(listing.allowed_missing, vec!["libjpmissing.so.1"]);
    assert_eq!(listing.entry(&exe).kind, "binary");
    assert!(listing.with_soname("libc.so.6").needed_by(&exe), "the other libraries still come");
}

// ---------------------------------------------------------------------------------------------
// 5. NSS and generated /etc files
// ---------------------------------------------------------------------------------------------

const GENERATED: [&str; 3] = ["/etc/passwd", "/etc/group", "/etc/nsswitch.conf"];

#[test]
fn a_user_generates_passwd_group_and_nsswitch() {
    let work = Workdir::new();
    work.jailfile("binaries = [\"id\"]\n[[users]]\nname = \"app\"\nuid = 1000\ngid = 1000\n");
    let listing = work.listing();
    for path in GENERATED {
        let entry = listing.entry(path);
        assert_eq!(entry.kind, "generated", "{entry:#?}");
        assert_eq!(entry.source, None, "written by jailprov, not copied: {entry:#?}");
    }
}

#[test]
fn without_users_groups_or_network_files_no_etc_files_are_generated() {
    let work = Workdir::new();
    work.jailfile("binaries = [\"id\"]\n");
    let listing = work.listing();
    for path in GENERATED {
        assert!(listing.get(path).is_none(), "{path} must not be in the closure: {:#?}", listing.paths());
    }
    assert!(listing.of_kind("generated").is_empty() && listing.of_kind("nss-module").is_empty());
}

#[test]
fn a_network_file_alone_brings_nsswitch_but_no_accounts() {
    let work = Workdir::new();
    work.jailfile("binaries = [\"id\"]\n[[files]]\nsrc = \"/etc/hosts\"\n");
    let listing = work.listing();
    assert_eq!(listing.entry("/etc/nsswitch.conf").kind, "generated");
    assert!(listing.get("/etc/passwd").is_none() && listing.get("/etc/group").is_none(), "{:#?}", listing.paths());
}

// ---------------------------------------------------------------------------------------------
// 6. [[files]]
// ---------------------------------------------------------------------------------------------

#[test]
fn files_glob_with_dest_places_the_matched_tree_under_dest() {
    let work = Workdir::new();
    let source = work.write("tree/a/b.txt", "b\n");
    let tree = work.path("tree");
    work.jailfile(&format!("[[files]]\nsrc = \"{tree}/**\"\ndest = \"/opt/t\"\n"));
    let listing = work.listing();
    let file = listing.entry("/opt/t/a/b.txt");
    assert_eq!(file.kind, "file");
    assert_eq!(file.source.as_deref(), Some(source.as_str()));
    assert!(file.needed_by("files[0]"), "{file:#?}");
    assert_eq!(listing.entry("/opt/t/a").kind, "dir");
    let at_host_path: Vec<&str> = listing.paths().into_iter().filter(|path| path.starts_with(&tree)).collect();
    assert!(at_host_path.is_empty(), "dest relocates everything: {at_host_path:#?}");
}

#[test]
fn elf_from_files_brings_its_libraries_needed_by_its_jail_path() {
    let work = Workdir::new();
    work.build_libm_user("tree/lib/libjpwave.so");
    let tree = work.path("tree");
    work.jailfile(&format!("[[files]]\nsrc = \"{tree}/**\"\ndest = \"/opt/t\"\n"));
    let listing = work.listing();
    assert_eq!(listing.entry("/opt/t/lib/libjpwave.so").kind, "file");
    let libm = listing.with_soname("libm.so.6");
    assert_eq!(libm.kind, "library");
    assert!(libm.needed_by("/opt/t/lib/libjpwave.so"), "needed by the jail path of the file: {libm:#?}");
}

#[test]
fn elf_reached_through_a_files_symlink_brings_its_libraries() {
    let work = Workdir::new();
    work.build_libm_user("lib/libjpwave.so.1.0");
    symlink("libjpwave.so.1.0", work.root.join("lib/libjpwave.so.1")).expect("symlink");
    let link = work.path("lib/libjpwave.so.1");
    work.jailfile(&format!("[[files]]\nsrc = \"{link}\"\n"));
    let listing = work.listing();
    assert_eq!(listing.entry(&link).kind, "symlink");
    let target = work.path("lib/libjpwave.so.1.0");
    listing.entry(&target);
    let libm = listing.with_soname("libm.so.6");
    assert!(libm.needed_by(&target), "{libm:#?}");
}

// ---------------------------------------------------------------------------------------------
// 7. exclude
// ---------------------------------------------------------------------------------------------

#[test]
fn exclude_dir_glob_removes_the_directory_and_everything_below() {
    let work = Workdir::new();
    work.write("tree/a/b.txt", "b\n");
    work.write("tree/skip/deep/s.txt", "s\n");
    let tree = work.path("tree");
    work.jailfile(&format!("exclude = [\"{tree}/skip/**\"]\n[[files]]\nsrc = \"{tree}\"\n"));
    let listing = work.listing();
    listing.entry(&format!("{tree}/a/b.txt"));
    let skip = format!("{tree}/skip");
    let left: Vec<&str> = listing.paths().into_iter().filter(|path| path.starts_with(&skip)).collect();
    assert!(left.is_empty(), "nothing of {skip} remains, not even the directory: {left:#?}");
    assert!(listing.excluded.contains(&skip), "reported as excluded: {:#?}", listing.excluded);
}

#[test]
fn excluded_symlink_does_not_bring_its_target() {
    let work = Workdir::new();
    let target = work.write("outside/target.txt", "t\n");
    work.write("tree/keep.txt", "k\n");
    symlink("../outside/target.txt", work.root.join("tree/link")).expect("symlink");
    let tree = work.path("tree");
    let link = work.path("tree/link");

    // Not excluded: the link comes as a symlink; its target lies outside the tree the Jailfile
    // names, so it does not come (whoever writes into a tree must not bring host files).
    work.jailfile(&format!("[[files]]\nsrc = \"{tree}\"\n"));
    let listing = work.listing();
    assert_eq!(listing.entry(&link).target.as_deref(), Some("../outside/target.txt"));
    assert!(listing.get(&target).is_none(), "a target outside the tree is not brought: {:#?}", listing.paths());

    work.jailfile(&format!("exclude = [\"{link}\"]\n[[files]]\nsrc = \"{tree}\"\n"));
    let listing = work.listing();
    listing.entry(&format!("{tree}/keep.txt"));
    assert!(listing.get(&link).is_none(), "the link is excluded: {:#?}", listing.paths());
    assert!(listing.get(&target).is_none(), "its target does not come: {:#?}", listing.paths());
}

/// `ls` and the canonical path of the libselinux.so.1 it loads (which alone needs libpcre2-8).
fn ls_with_selinux_excluded() -> (Workdir, String) {
    let work = Workdir::new();
    work.jailfile("binaries = [\"ls\"]\n");
    let selinux = work.listing().with_soname("libselinux.so.1").path.clone();
    work.jailfile(&format!("binaries = [\"ls\"]\nexclude = [\"{selinux}\"]\n"));
    (work, selinux)
}

#[test]
fn excluded_library_is_left_out_of_the_closure() {
    let (work, selinux) = ls_with_selinux_excluded();
    let listing = work.listing();
    assert!(listing.get(&selinux).is_none(), "{selinux} is excluded: {:#?}", listing.paths());
    assert!(listing.excluded.contains(&selinux), "reported as excluded: {:#?}", listing.excluded);
    assert_eq!(listing.binary_of("binaries[0]").kind, "binary", "the binary itself stays");
}

#[test]
fn excluded_library_leaves_no_orphaned_dependencies() {
    let (work, selinux) = ls_with_selinux_excluded();
    let listing = work.listing();
    assert!(listing.get(&selinux).is_none(), "precondition: {selinux} is excluded");
    let orphans: Vec<&Entry> = listing.entries.iter().filter(|entry| entry.needed_by.is_empty()).collect();
    assert!(orphans.is_empty(), "every entry is needed by someone: {orphans:#?}");
    for entry in &listing.entries {
        let run = work.why(&entry.path);
        assert_eq!(run.code, 0, "`why` explains every listed path; {}: {}", entry.path, run.stderr);
    }
}

#[test]
fn excluded_library_takes_what_only_it_needed_along() {
    let (work, selinux) = ls_with_selinux_excluded();
    let listing = work.listing();
    let pcre = listing.entries.iter().find(|entry| entry.sonames.iter().any(|soname| soname.starts_with("libpcre2-8")));
    assert!(pcre.is_none(), "only {selinux} needed libpcre2-8: {pcre:#?}");
    let paths = listing.paths();
    for entry in &listing.entries {
        let gone: Vec<&String> = entry
            .needed_by
            .iter()
            .filter(|needer| needer.starts_with('/') && !paths.contains(&needer.as_str()))
            .collect();
        assert!(gone.is_empty(), "{} is needed by paths not in the jail: {gone:?}", entry.path);
    }
}

#[test]
fn symlink_inside_a_dest_tree_brings_no_copy_at_the_host_path() {
    let work = Workdir::new();
    work.write("tree/a/b.txt", "b\n");
    symlink("a/b.txt", work.root.join("tree/rel")).expect("symlink");
    let tree = work.path("tree");
    work.jailfile(&format!("[[files]]\nsrc = \"{tree}/**\"\ndest = \"/opt/t\"\n"));
    let listing = work.listing();
    assert_eq!(listing.entry("/opt/t/rel").target.as_deref(), Some("a/b.txt"));
    assert_eq!(listing.entry("/opt/t/a/b.txt").kind, "file");
    let at_host_path: Vec<&str> = listing.paths().into_iter().filter(|path| path.starts_with(&tree)).collect();
    assert!(at_host_path.is_empty(), "dest relocates the tree; nothing lands at its host path: {at_host_path:#?}");
}

// ---------------------------------------------------------------------------------------------
// 8. why
// ---------------------------------------------------------------------------------------------

fn ls_jail() -> (Workdir, Listing) {
    let work = Workdir::new();
    work.jailfile("binaries = [\"ls\"]\n");
    let listing = work.listing();
    (work, listing)
}

#[test]
fn why_libc_chains_back_to_the_binary_declaration() {
    let (work, listing) = ls_jail();
    let libc = listing.with_soname("libc.so.6").path.clone();
    let ls = listing.binary_of("binaries[0]").path.clone();
    let run = work.why(&libc);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines.first().is_some_and(|line| line.starts_with(&libc)), "starts at the path:\n{}", run.stdout);
    assert!(lines.iter().any(|line| line.contains(&ls)), "goes through {ls}:\n{}", run.stdout);
    let last = lines.last().expect("a chain");
    assert!(last.contains("binaries[0]") && last.contains("\"ls\""), "ends at the declaration:\n{}", run.stdout);
}

#[test]
fn why_follows_the_usr_merge_link_to_a_library_of_a_library() {
    let (work, listing) = ls_jail();
    let through_lib = "/lib/x86_64-linux-gnu/libpcre2-8.so.0";
    if !is_symlink("/lib") || !Path::new(through_lib).exists() {
        eprintln!("SKIPPED: /lib is not a symlink or {through_lib} is absent on this host");
        return;
    }
    let pcre = listing.with_soname("libpcre2-8.so.0").path.clone();
    let run = work.why(through_lib);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines.first().is_some_and(|line| line.starts_with(&pcre)), "resolved to {pcre}:\n{}", run.stdout);
    assert!(lines.len() >= 4, "path, the library needing it, ls, the declaration:\n{}", run.stdout);
    assert!(lines[1].contains("(library"), "needed by another library first:\n{}", run.stdout);
    let last = lines.last().expect("a chain");
    assert!(last.contains("binaries[0]") && last.contains("\"ls\""), "ends at the declaration:\n{}", run.stdout);
}

#[test]
fn why_a_path_outside_the_jail_fails_clearly() {
    let (work, _) = ls_jail();
    let run = work.why("/nonexistent");
    assert_eq!(run.code, 1, "stdout: {}", run.stdout);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(run.stderr.contains("/nonexistent") && run.stderr.contains("not in the jail"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------------------------
// 9. tree
// ---------------------------------------------------------------------------------------------

#[test]
fn tree_starts_with_the_declaration_and_indents_the_binary_under_it() {
    let (work, listing) = bash_jail();
    let bash = listing.binary_of("binaries[0]").path.clone();
    let tree = work.closure_ok(&["--format", "tree"]);
    let lines: Vec<&str> = tree.lines().collect();
    assert_eq!(lines.first().copied(), Some("binaries[0]"), "{tree}");
    assert_eq!(lines.get(1).copied(), Some(format!("  {bash} (binary)").as_str()), "{tree}");
    let libc = listing.with_soname("libc.so.6").path.clone();
    assert!(lines.contains(&format!("    {libc} (library)").as_str()), "libraries one level deeper:\n{tree}");
}

// ---------------------------------------------------------------------------------------------
// 10. static binary
// ---------------------------------------------------------------------------------------------

#[test]
fn static_binary_has_no_interpreter_or_libraries() {
    prerequisites::require(&prerequisites::STATIC_LIBC);
    let work = Workdir::new();
    work.write("src/static.c", "int main(void) { return 0; }\n");
    let exe = work.path("static-exe");
    work.gcc(&["-static", "-o", &exe, "src/static.c"]);
    work.jailfile(&format!("binaries = [\"{exe}\"]\n"));
    let listing = work.listing();
    assert_eq!(listing.entry(&exe).kind, "binary");
    assert!(listing.of_kind("interpreter").is_empty(), "{:#?}", listing.entries);
    assert!(listing.of_kind("library").is_empty(), "{:#?}", listing.entries);
}

// ---------------------------------------------------------------------------------------------
// 11. devices and dirs
// ---------------------------------------------------------------------------------------------

#[test]
fn devices_and_dirs_have_their_kinds() {
    let work = Workdir::new();
    work.jailfile(
        "devices = [\"/dev/null\", { path = \"/dev/zero\", mode = \"0666\" }]\n[[dirs]]\npath = \"/tmp\"\nmode = \"1777\"\n",
    );
    let listing = work.listing();
    for (device, key) in [("/dev/null", "devices[0]"), ("/dev/zero", "devices[1]")] {
        let entry = listing.entry(device);
        assert_eq!(entry.kind, "device");
        assert_eq!(entry.source.as_deref(), Some(device), "made from the host node: {entry:#?}");
        assert!(entry.needed_by(key), "{entry:#?}");
    }
    let tmp = listing.entry("/tmp");
    assert_eq!(tmp.kind, "dir");
    assert!(tmp.needed_by("dirs[0]"), "{tmp:#?}");
}

#[test]
fn unsafe_device_is_refused_by_validate() {
    let work = Workdir::new();
    work.jailfile("devices = [\"/dev/mem\"]\n");
    let run = work.run(&["validate", "-f", "Jailfile.toml"]);
    assert_eq!(run.code, 1, "stdout: {}", run.stdout);
    assert!(run.stderr.contains("devices[0]"), "names the key: {}", run.stderr);
    assert!(run.stderr.contains("allow_unsafe_device"), "tells how to allow it: {}", run.stderr);
    let closure = work.run(&["closure", "-f", "Jailfile.toml"]);
    assert_eq!(closure.code, 1, "closure refuses it too: {}", closure.stdout);
}

/// Every shipped example closes cleanly on this host: no missing library, no error, and the
/// programs it names are in the closure.
#[test]
fn every_example_closes_cleanly() {
    prerequisites::require(&prerequisites::PYTHON3);
    prerequisites::require(&prerequisites::SFTP_SERVER);
    let examples = ["seed-shell", "python", "sftp"];
    for name in examples {
        let jailfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name).join("Jailfile.toml");
        let output = Command::new(env!("CARGO_BIN_EXE_jailprov"))
            .args(["closure", "--format", "json", "-f"])
            .arg(&jailfile)
            .output()
            .expect("jailprov runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{name}: closure failed:\n{stderr}");
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("closure JSON");
        let entries = json["entries"].as_array().expect("entries");
        assert!(
            entries.iter().any(|entry| entry["kind"] == "binary")
                && entries.iter().any(|entry| entry["kind"] == "interpreter"),
            "{name}: a binary and its ELF interpreter must be in the closure"
        );
    }
}
