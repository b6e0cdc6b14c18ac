//! The incremental review against the full one: after each kind of edit, the same lock bytes,
//! the same comparison, the same review, and the same error.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::closure::EntryKind;
use crate::desired::{ClosureFacts, DesiredKind, DesiredNode, DesiredTree, PathFacts};
use crate::host::{HostFs, StatPrint};
use crate::tree::JailPath;

use super::cache::{
    cache_path, load_cache, load_store, store_path, Cache, LazyStore, Memo, MemoLine, SourceHash, SourceKey,
    SourceStore, RECENT_LIMIT,
};
use super::drift::{diff_closures_text, Drift};
use super::format::{lock_path, Lock};
use super::incremental::{matched_lines, too_many_changed};
use super::lines::{desired_lines, line_digest, node_bytes, share_bytes};
use super::review::{review_by_route, Route};
use super::reviewing::{Inputs, Mode, Review};

/// A host sysroot (with a dpkg database), a Jailfile and a state directory in one tempdir,
/// and the desired tree and closure facts a test edits between reviews.
struct Bench {
    dir: tempfile::TempDir,
    desired: DesiredTree,
    facts: ClosureFacts,
}

/// What a review gave, in a form two reviews can be compared by.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    route: Option<Route>,
    /// The review's fields, or the error's text.
    outcome: std::result::Result<Reviewed, String>,
    lock: Option<Vec<u8>>,
}

#[derive(Debug, PartialEq, Eq)]
struct Reviewed {
    existed: bool,
    wrote: bool,
    entries: usize,
    /// Every difference in full, old and new entries included.
    comparison: String,
    lines: Vec<String>,
    drift: Vec<String>,
    diff_closures: String,
}

/// The cache directory's files and the lock file, as bytes.
struct Snapshot {
    cache_files: Vec<(PathBuf, Vec<u8>)>,
    lock: Option<Vec<u8>>,
}

const DPKG_STATUS: &str = "Package: libfoo1\nStatus: install ok installed\nVersion: 1.2-3\n\n\
    Package: shared\nStatus: install ok installed\nVersion: 1.0\n\n\
    Package: tool\nStatus: install ok installed\nVersion: 7\n";

fn path(text: &str) -> JailPath {
    JailPath::parse(text).expect("a valid jail path")
}

/// Lets the coarse kernel clock move on, so that a file written now gets another ctime
/// than one written just before (stat prints tell writes apart by it).
fn tick() {
    std::thread::sleep(std::time::Duration::from_millis(15));
}

impl Bench {
    fn new() -> Bench {
        let dir = tempfile::tempdir().expect("tempdir");
        let bench = Bench { dir, desired: DesiredTree::default(), facts: ClosureFacts::default() };
        fs::create_dir_all(bench.host().join("var/lib/dpkg/info")).expect("mkdir dpkg");
        fs::create_dir_all(bench.dir.path().join("repo")).expect("mkdir repo");
        bench.write_dpkg(DPKG_STATUS);
        fs::write(bench.host().join("var/lib/dpkg/info/libfoo1:amd64.list"), "/.\n/lib/x86_64-linux-gnu/libfoo.so.1\n")
            .expect("list");
        fs::write(bench.host().join("var/lib/dpkg/info/shared.list"), "/srv/shared.conf\n").expect("list");
        fs::write(bench.host().join("var/lib/dpkg/info/tool.list"), "/usr/bin/tool\n").expect("list");
        bench.write_jailfile("root = \"/srv/jails/bench\"\n");
        bench
    }

    /// A jail of every kind of entry: files (one a library with facts, one a program),
    /// a directory, a symlink with facts, inline content, a device.
    fn typical() -> Bench {
        let mut bench = Bench::new();
        bench.add_dir("/srv");
        bench.add_file("/srv/app/a.conf", "/srv/app/a.conf", b"a = 1\n");
        bench.add_file("/srv/app/b.conf", "/srv/app/b.conf", b"b = 2\n");
        bench.add_file("/srv/app/c.conf", "/srv/app/c.conf", b"c = 3\n");
        bench.add_file("/srv/shared.conf", "/srv/shared.conf", b"shared\n");
        bench.add_file("/usr/bin/tool", "/usr/bin/tool", b"\x7fELF tool");
        bench.add_file("/usr/lib/x86_64-linux-gnu/libfoo.so.1", "/usr/lib/x86_64-linux-gnu/libfoo.so.1", b"foo");
        bench.set_facts("/usr/bin/tool", EntryKind::Binary, None, &[], &["binaries \"tool\""]);
        bench.set_facts(
            "/usr/lib/x86_64-linux-gnu/libfoo.so.1",
            EntryKind::Library,
            None,
            &["libfoo.so.1"],
            &["/usr/bin/tool"],
        );
        bench.add_node("/lib", DesiredKind::Symlink { target: "usr/lib".into() }, 0o777);
        bench.set_facts("/lib", EntryKind::Symlink, Some("/lib"), &[], &["/usr/bin/tool"]);
        bench.add_node("/etc/motd", DesiredKind::Content { bytes: b"hello\n".to_vec() }, 0o644);
        bench.add_node("/dev/null", DesiredKind::Device { block: false, rdev: nix::sys::stat::makedev(1, 3) }, 0o666);
        bench
    }

    fn host(&self) -> PathBuf {
        self.dir.path().join("host")
    }

    fn jailfile(&self) -> PathBuf {
        self.dir.path().join("repo/Jailfile.toml")
    }

    fn lock_file(&self) -> PathBuf {
        lock_path(&self.jailfile())
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn cache_file(&self) -> PathBuf {
        cache_path(&self.state(), &self.lock_file())
    }

    fn write_jailfile(&self, text: &str) {
        fs::write(self.jailfile(), text).expect("write the Jailfile");
    }

    fn write_dpkg(&self, status: &str) {
        fs::write(self.host().join("var/lib/dpkg/status"), status).expect("write the dpkg status");
    }

    fn host_file(&self, source: &str) -> PathBuf {
        self.host().join(source.trim_start_matches('/'))
    }

    /// Writes a host file and puts a node copying it at `jail`.
    fn add_file(&mut self, jail: &str, source: &str, content: &[u8]) {
        let disk = self.host_file(source);
        fs::create_dir_all(disk.parent().expect("a parent")).expect("mkdir");
        fs::write(&disk, content).expect("write a host file");
        let source_print = StatPrint::of(&fs::metadata(&disk).expect("stat"));
        self.add_node(jail, DesiredKind::File { source: PathBuf::from(source), source_print }, 0o644);
    }

    fn add_dir(&mut self, jail: &str) {
        self.add_node(jail, DesiredKind::Dir, 0o755);
    }

    fn add_node(&mut self, jail: &str, kind: DesiredKind, mode: u32) {
        self.desired.nodes.insert(path(jail), DesiredNode { path: path(jail), kind, mode, uid: 0, gid: 0 });
    }

    fn set_facts(&mut self, jail: &str, kind: EntryKind, source: Option<&str>, sonames: &[&str], needed_by: &[&str]) {
        let owned = |items: &[&str]| items.iter().map(|item| (*item).to_owned()).collect();
        let facts =
            PathFacts { kind, source: source.map(str::to_owned), sonames: owned(sonames), needed_by: owned(needed_by) };
        self.facts.facts.insert(path(jail), facts);
    }

    /// Rewrites a host file and takes its new stat print into the desired tree, as the next
    /// plan's desired tree would have it.
    fn edit(&mut self, source: &str, content: &[u8]) {
        fs::write(self.host_file(source), content).expect("rewrite a host file");
        self.restat();
    }

    /// The stat prints of every host source as they are now.
    fn restat(&mut self) {
        let host = self.host();
        for node in self.desired.nodes.values_mut() {
            if let DesiredKind::File { source, source_print } = &mut node.kind {
                let disk = host.join(source.strip_prefix("/").expect("an absolute source"));
                *source_print = StatPrint::of(&fs::metadata(disk).expect("stat"));
            }
        }
    }

    fn review(&self, mode: Mode) -> Result<(Review, Route)> {
        let host = HostFs::new(self.host());
        let (jailfile, state) = (self.jailfile(), self.state());
        let inputs =
            Inputs { jailfile: &jailfile, desired: &self.desired, facts: &self.facts, host: &host, state_dir: &state };
        review_by_route(&inputs, mode)
    }

    fn seen(&self, mode: Mode) -> Seen {
        let result = self.review(mode);
        let route = result.as_ref().ok().map(|(_, route)| *route);
        let outcome = result
            .map(|(review, _)| Reviewed {
                existed: review.existed,
                wrote: review.wrote,
                entries: review.entries,
                comparison: format!("{:?}", review.comparison),
                lines: review.comparison.lines(),
                drift: review.host_drift().iter().map(Drift::line).collect(),
                diff_closures: diff_closures_text(&review.comparison),
            })
            .map_err(|error| format!("{error:#}"));
        Seen { route, outcome, lock: fs::read(self.lock_file()).ok() }
    }

    /// The first review writes the lock (full), the second finds it fresh: the memo is in
    /// place for what a test does next.
    fn locked_in(self) -> Bench {
        let first = self.seen(Mode::Refresh);
        assert_eq!(first.route, Some(Route::Full), "{first:?}");
        let second = self.seen(Mode::Refresh);
        assert_eq!(second.route, Some(Route::Fresh), "{second:?}");
        assert!(load_cache(&self.cache_file()).memo.is_some(), "a written lock has its memo");
        tick();
        self
    }

    fn snapshot(&self) -> Snapshot {
        let cache_files = fs::read_dir(self.cache_file().parent().expect("a parent"))
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                    .map(|path| {
                        let bytes = fs::read(&path).expect("read a cache file");
                        (path, bytes)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Snapshot { cache_files, lock: fs::read(self.lock_file()).ok() }
    }

    fn restore(&self, Snapshot { cache_files, lock }: &Snapshot) {
        let dir = self.cache_file().parent().expect("a parent").to_path_buf();
        if dir.exists() {
            fs::remove_dir_all(&dir).expect("clear the cache");
        }
        fs::create_dir_all(&dir).expect("mkdir the cache");
        for (path, bytes) in cache_files {
            fs::write(path, bytes).expect("restore a cache file");
        }
        match lock {
            Some(bytes) => fs::write(self.lock_file(), bytes).expect("restore the lock"),
            None => {
                let _ = fs::remove_file(self.lock_file());
            }
        }
    }

    /// Forgets the memo: the next review of this lock is a full one.
    fn drop_memo(&self) {
        let mut cache = load_cache(&self.cache_file());
        cache.memo = None;
        fs::write(self.cache_file(), cache.encode().expect("encode")).expect("write the cache");
    }

    /// Reviews as a plan would now (incrementally, the memo being in place) and, from the
    /// same lock and cache, in full; asserts that both give the same, then that the state
    /// left behind is coherent (a review right after finds nothing to do, or the same
    /// error). Returns the incremental review's outcome.
    fn assert_incremental_is_full(&self, mode: Mode) -> Seen {
        self.assert_same_as_full(mode, Route::Incremental)
    }

    /// [`Bench::assert_incremental_is_full`] for a review expected to take `route`.
    fn assert_same_as_full(&self, mode: Mode, route: Route) -> Seen {
        let before = self.snapshot();
        let incremental = self.seen(mode);
        let after_incremental = self.snapshot();
        self.restore(&before);
        self.drop_memo();
        let full = self.seen(mode);
        assert_eq!(full.route.unwrap_or(Route::Full), Route::Full, "without a memo the review is a full one");
        assert_eq!(incremental.route.unwrap_or(route), route, "{incremental:?}");
        assert_eq!(incremental.outcome, full.outcome, "incremental and full reviews differ");
        assert_eq!(
            incremental.lock.as_deref().map(String::from_utf8_lossy),
            full.lock.as_deref().map(String::from_utf8_lossy),
            "the lock files differ"
        );
        // Back to the state the incremental review left: what comes next must agree.
        self.restore(&after_incremental);
        let cache = load_cache(&self.cache_file());
        if let (Some(memo), Ok(metadata)) = (&cache.memo, fs::metadata(self.lock_file())) {
            // The restore rewrote the lock: give the memo the restored file's stat.
            let restored = Memo { lock_stat: StatPrint::of(&metadata), lines: memo.lines.clone() };
            let cache = Cache { memo: Some(restored), fresh: None, ..cache };
            fs::write(self.cache_file(), cache.encode().expect("encode")).expect("write the cache");
        }
        let again = self.seen(mode);
        match &incremental.outcome {
            Ok(_) => {
                // Whatever route it took, the review left a memo that vouches for the lock.
                assert_eq!(again.route, Some(Route::Incremental), "{again:?}");
                let reviewed = again.outcome.as_ref().expect("no error after a review that passed");
                assert!(!reviewed.wrote, "a second review rewrote the lock: {again:?}");
                assert_eq!(again.lock, incremental.lock);
            }
            Err(error) => assert_eq!(again.outcome.as_ref().err(), Some(error), "the same error again"),
        }
        incremental
    }
}

fn wrote(seen: &Seen) -> bool {
    seen.outcome.as_ref().is_ok_and(|reviewed| reviewed.wrote)
}

fn lines(seen: &Seen) -> Vec<String> {
    seen.outcome.as_ref().map(|reviewed| reviewed.lines.clone()).unwrap_or_default()
}

#[test]
fn a_changed_file_content_is_one_changed_line() {
    let mut bench = Bench::typical().locked_in();
    bench.edit("/srv/app/b.conf", b"b = 22\n");
    let seen = bench.assert_incremental_is_full(Mode::Refresh);
    assert!(wrote(&seen));
    assert_eq!(lines(&seen).len(), 1, "{seen:?}");
    assert!(lines(&seen)[0].starts_with("/srv/app/b.conf  blake3 "), "{seen:?}");
}

#[test]
fn a_same_size_edit_with_its_mtime_put_back_is_found_by_its_ctime() {
    let mut bench = Bench::typical().locked_in();
    let disk = bench.host_file("/srv/app/b.conf");
    let mtime = fs::metadata(&disk).expect("stat").modified().expect("mtime");
    fs::write(&disk, b"b = 9\n").expect("same size");
    fs::File::options().write(true).open(&disk).expect("open").set_modified(mtime).expect("put the mtime back");
    bench.restat();
    let seen = bench.assert_incremental_is_full(Mode::Refresh);
    assert!(wrote(&seen), "{seen:?}");
    assert_eq!(lines(&seen).len(), 1, "{seen:?}");
}

#[test]
fn a_touched_file_with_the_same_content_changes_nothing() {
    let mut bench = Bench::typical().locked_in();
    let before = fs::read(bench.lock_file()).expect("the lock");
    fs::File::options()
        .write(true)
        .open(bench.host_file("/srv/app/a.conf"))
        .expect("open")
        .set_modified(std::time::SystemTime::now())
        .expect("touch");
    bench.restat();
    let seen = bench.assert_incremental_is_full(Mode::Refresh);
    assert!(!wrote(&seen), "{seen:?}");
    assert!(lines(&seen).is_empty(), "{seen:?}");
    assert_eq!(seen.lock.as_deref(), Some(&before[..]), "the lock is left as it was");
    // The memo now vouches for the lines with the touched file's digest.
    let memo = load_cache(&bench.cache_file()).memo.expect("a memo");
    let digests: Vec<u128> = memo.lines.iter().map(|line| line.digest).collect();
    assert_eq!(digests, desired_lines(&bench.desired, &bench.facts).digests());
}

/// Many incremental reviews do not grow the cache without end: the recent hashes go to
/// the store once there are more than [`RECENT_LIMIT`], and the store keeps the jail's
/// sources only.
#[test]
fn the_cache_stays_the_size_of_the_jail() {
    let mut bench = Bench::typical();
    let many: Vec<String> = (0..RECENT_LIMIT + 8).map(|index| format!("/srv/many/{index:04}")).collect();
    for source in &many {
        bench.add_file(source, source, b"0");
    }
    let mut bench = bench.locked_in();
    let store_file = store_path(&bench.cache_file());
    let store_size = || fs::read(&store_file).expect("a store");
    let full_store = store_size();
    for source in &many[..RECENT_LIMIT / 2] {
        fs::write(bench.host_file(source), b"1").expect("edit");
    }
    bench.desired.nodes.remove(&path(&many[0]));
    bench.restat();
    assert_eq!(bench.seen(Mode::Refresh).route, Some(Route::Incremental));
    assert_eq!(load_cache(&bench.cache_file()).recent.len(), RECENT_LIMIT / 2 - 1, "the store waits");
    assert_eq!(store_size(), full_store, "the store was not rewritten");
    tick();
    for source in &many[RECENT_LIMIT / 2..] {
        fs::write(bench.host_file(source), b"2").expect("edit");
    }
    bench.restat();
    assert_eq!(bench.seen(Mode::Refresh).route, Some(Route::Incremental));
    assert!(load_cache(&bench.cache_file()).recent.is_empty(), "merged into the store");
    let store = load_store(&store_file);
    assert_eq!(store.files().count(), 6 + many.len() - 1, "the jail's sources, the removed one pruned");
}

#[test]
fn added_and_removed_files_are_lines_added_and_removed() {
    let mut bench = Bench::typical().locked_in();
    bench.add_file("/srv/app/b2.conf", "/srv/app/b2.conf", b"new\n");
    let seen = bench.assert_incremental_is_full(Mode::Refresh);
    assert!(lines(&seen).iter().any(|line| line.starts_with("/srv/app/b2.conf  ∅ → ")), "{seen:?}");

    let mut bench = Bench::typical().locked_in();
    bench.desired.nodes.remove(&path("/srv/app/b.conf"));
    let seen = bench.assert_incremental_is_full(Mode::Refresh);
    assert!(lines(&seen).iter().any(|line| line.starts_with("/srv/app/b.conf  file blake3 ")), "{seen:?}");
}

#[test]
fn mode_and_owner_changes_are_changed_lines() {
    let mut bench = Bench::typical().locked_in();
    if let Some(node) = bench.desired.nodes.get_mut(&path("/srv/app/a.conf")) {
        node.mode = 0o600;
    }
    if let Some(node) = bench.desired.nodes.get_mut(&path("/etc/motd")) {
        (node.uid, node.gid) = (1000, 1000);
    }
    let seen = bench.assert_incremental_is_full(Mode::Refresh);
    assert_eq!(lines(&seen).len(), 2, "{seen:?}");
}

#[test]
fn a_change_of_needers_in_the_closure_facts_is_a_changed_line() {
    let mut bench = Bench::typical().locked_in();
    bench.set_facts(
        "/usr/lib/x86_64-linux-gnu/libfoo.so.1",
        EntryKind::Library,
        None,
        &["libfoo.so.1"],
        &["/usr/bin/other", "/usr/bin/tool"],
    );
    let seen = bench.assert_incremental_is_full(Mode::Refresh);
    assert_eq!(lines(&seen), vec!["/usr/lib/x86_64-linux-gnu/libfoo.so.1  needed by +/usr/bin/other"]);
}

#[test]
fn an_edited_jailfile_changes_the_header_alone() {
    let bench = Bench::typical().locked_in();
    bench.write_jailfile("root = \"/srv/jails/bench\"\nbinaries = [\"tool\"]\n");
    let seen = bench.assert_incremental_is_full(Mode::Refresh);
    assert!(wrote(&seen));
    assert!(lines(&seen)[0].starts_with("the Jailfile changed since the lock"), "{seen:?}");
    // A host fingerprint change too (os-release appears), with no line changed.
    fs::create_dir_all(bench.host().join("etc")).expect("mkdir");
    fs::write(bench.host().join("etc/os-release"), "ID=debian\nVERSION_ID=\"12\"\n").expect("os-release");
    let seen = bench.assert_incremental_is_full(Mode::Refresh);
    assert!(lines(&seen)[0].starts_with("the host is debian 12"), "{seen:?}");
}

#[test]
fn a_changed_libc_changes_the_glibc_of_the_header() {
    let mut bench = Bench::typical();
    bench.add_file("/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", b"not ELF");
    let mut bench = bench.locked_in();
    assert!(String::from_utf8_lossy(&fs::read(bench.lock_file()).expect("lock")).contains("\"glibc\":\"unknown\""));
    let Some(libc) = ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"]
        .iter()
        .find_map(|path| fs::read(path).ok())
    else {
        eprintln!("SKIPPED a_changed_libc_changes_the_glibc_of_the_header: no libc.so.6 here");
        return;
    };
    bench.edit("/usr/lib/x86_64-linux-gnu/libc.so.6", &libc);
    let seen = bench.assert_incremental_is_full(Mode::Refresh);
    assert!(lines(&seen).iter().any(|line| line.contains(", glibc unknown, ")), "{seen:?}");
    assert!(!String::from_utf8_lossy(seen.lock.as_deref().unwrap_or_default()).contains("\"glibc\":\"unknown\""));
}

#[test]
fn the_first_and_the_last_line_and_several_at_once() {
    let mut bench = Bench::typical().locked_in();
    // "/dev/null" sorts first, "/usr/lib/..." last.
    if let Some(node) = bench.desired.nodes.get_mut(&path("/dev/null")) {
        node.mode = 0o600;
    }
    bench.edit("/usr/lib/x86_64-linux-gnu/libfoo.so.1", b"foo 2");
    let seen = bench.assert_incremental_is_full(Mode::Refresh);
    assert_eq!(lines(&seen).len(), 2, "{seen:?}");

    let mut bench = Bench::typical().locked_in();
    bench.add_file("/aaa", "/srv/aaa", b"first now\n");
    bench.add_file("/zzz", "/srv/zzz", b"last now\n");
    bench.desired.nodes.remove(&path("/srv/app/c.conf"));
    bench.edit("/srv/app/a.conf", b"a = 11\n");
    bench.edit("/usr/bin/tool", b"\x7fELF tool 2");
    bench.write_jailfile("root = \"/srv/jails/bench\"\n# reformatted, same digest\n");
    let seen = bench.assert_incremental_is_full(Mode::Refresh);
    assert_eq!(lines(&seen).len(), 5, "{seen:?}");
    // And --locked refuses all of it with the same words, writing nothing.
    bench.add_file("/zzz", "/srv/zzz", b"last changed\n");
    let before = fs::read(bench.lock_file()).expect("the lock");
    let seen = bench.assert_incremental_is_full(Mode::Locked);
    assert!(seen.outcome.as_ref().is_err_and(|error| error.starts_with("--locked: what the host gives differs")));
    assert_eq!(seen.lock.as_deref(), Some(&before[..]), "--locked leaves the lock byte for byte");
}

/// Past a quarter of the lines (and a thousand), the full review is the cheaper one.
#[test]
fn many_changed_lines_are_reviewed_in_full() {
    let mut bench = Bench::typical();
    for index in 0..2100 {
        let source = format!("/srv/many/{index:04}");
        bench.add_file(&source, &source, b"0");
    }
    let mut bench = bench.locked_in();
    // 520 changed lines of 2,110, counted on both sides: 1,040 of 4,220.
    for node in bench.desired.nodes.values_mut().filter(|node| node.path.as_str() >= "/srv/many/").take(520) {
        node.mode = 0o600;
    }
    let seen = bench.assert_incremental_is_full(Mode::Refresh);
    assert_eq!(lines(&seen).len(), 520);
    for node in bench.desired.nodes.values_mut().filter(|node| node.path.as_str().starts_with("/srv/many/")) {
        node.mode = 0o640;
    }
    let seen = bench.assert_same_as_full(Mode::Refresh, Route::Full);
    assert_eq!(lines(&seen).len(), 2100);
    assert!(!too_many_changed(1024, 1024) && too_many_changed(1025, 4096) && !too_many_changed(1025, 4100));
}

#[test]
fn an_empty_lock_and_back() {
    let mut bench = Bench::new().locked_in();
    assert!(String::from_utf8_lossy(&fs::read(bench.lock_file()).expect("lock")).contains("\"entries\": []"));
    bench.add_file("/srv/one", "/srv/one", b"1\n");
    bench.add_dir("/srv");
    let seen = bench.assert_incremental_is_full(Mode::Refresh);
    assert_eq!(lines(&seen).len(), 2, "{seen:?}");

    let mut bench = Bench::typical().locked_in();
    bench.desired = DesiredTree::default();
    let seen = bench.assert_incremental_is_full(Mode::Refresh);
    assert_eq!(lines(&seen).len(), 10, "{seen:?}");
    assert!(String::from_utf8_lossy(seen.lock.as_deref().unwrap_or_default()).contains("\"entries\": []"));
}

/// A new path copying a host source an unchanged line already has takes that line's
/// package, as the full review does, even when dpkg would now answer otherwise.
#[test]
fn a_new_copy_of_a_source_takes_the_package_an_unchanged_line_has() {
    let mut bench = Bench::typical().locked_in();
    assert!(String::from_utf8_lossy(&fs::read(bench.lock_file()).expect("lock")).contains("\"package\":\"shared 1.0\""));
    bench.write_dpkg(&DPKG_STATUS.replace("Version: 1.0", "Version: 2.0"));
    bench.add_file("/opt/copy.conf", "/srv/shared.conf", b"shared\n");
    bench.restat();
    let seen = bench.assert_incremental_is_full(Mode::Refresh);
    let lock = String::from_utf8_lossy(seen.lock.as_deref().unwrap_or_default()).into_owned();
    let copy = lock.lines().find(|line| line.contains("\"path\":\"/opt/copy.conf\"")).expect("the new line");
    assert!(copy.contains("\"package\":\"shared 1.0\""), "{copy}");
    // A new source no line has: asked of dpkg (the answer is cached in the store).
    bench.add_file("/usr/bin/tool2", "/usr/bin/tool", b"\x7fELF tool");
    bench.restat();
    bench.assert_incremental_is_full(Mode::Refresh);
}

#[test]
fn a_lock_edited_by_hand_is_reviewed_in_full_and_rewritten() {
    let bench = Bench::typical().locked_in();
    let written = fs::read_to_string(bench.lock_file()).expect("lock");
    fs::write(bench.lock_file(), written.replace("\"mode\":\"0755\"", "\"mode\":\"0700\"")).expect("hand edit");
    let seen = bench.seen(Mode::Refresh);
    assert_eq!(seen.route, Some(Route::Full), "{seen:?}");
    assert!(wrote(&seen), "{seen:?}");
    assert_eq!(seen.lock.as_deref(), Some(written.as_bytes()), "rewritten as the host gives it");
    // Reformatted by hand but equal in content: no difference, but no memo either.
    tick();
    let pretty = serde_json::to_string_pretty(&Lock::parse(&written, Path::new("x")).expect("parses")).expect("json");
    fs::write(bench.lock_file(), &pretty).expect("reformat");
    let seen = bench.seen(Mode::Refresh);
    assert_eq!((seen.route, wrote(&seen)), (Some(Route::Full), false), "{seen:?}");
    assert!(load_cache(&bench.cache_file()).memo.is_none(), "a memo vouches only for lines as jailprov writes them");
}

/// The incremental review really leaves unchanged lines alone: one damaged on purpose (the
/// memo made to vouch for the damaged file) is carried over as it stands, where the full
/// review would have put it right.
#[test]
fn unchanged_lines_are_copied_not_parsed() {
    let mut bench = Bench::typical().locked_in();
    let written = fs::read_to_string(bench.lock_file()).expect("lock");
    let motd = written.lines().find(|line| line.contains("\"path\":\"/etc/motd\"")).expect("motd line");
    let damaged_line = motd.replace("\"kind\":\"content\"", "\"kind\":\"CONTENT\"");
    assert_eq!(damaged_line.len(), motd.len());
    let damaged = written.replace(motd, &damaged_line);
    fs::write(bench.lock_file(), &damaged).expect("damage");
    let mut cache = load_cache(&bench.cache_file());
    let memo = cache.memo.as_mut().expect("a memo");
    memo.lock_stat = StatPrint::of(&fs::metadata(bench.lock_file()).expect("stat"));
    fs::write(bench.cache_file(), cache.encode().expect("encode")).expect("write the cache");

    bench.edit("/srv/app/a.conf", b"a = 100\n");
    let seen = bench.seen(Mode::Refresh);
    assert_eq!(seen.route, Some(Route::Incremental), "{seen:?}");
    assert_eq!(lines(&seen).len(), 1, "only a.conf was compared: {seen:?}");
    let lock = String::from_utf8_lossy(seen.lock.as_deref().unwrap_or_default()).into_owned();
    assert!(lock.contains(&damaged_line), "the unchanged (damaged) line was copied as it stood");
    bench.drop_memo();
    tick();
    bench.edit("/srv/app/a.conf", b"a = 1000\n");
    let seen = bench.seen(Mode::Refresh);
    assert_eq!(seen.route, Some(Route::Full));
    assert!(lines(&seen).iter().any(|line| line.starts_with("/etc/motd  kind CONTENT → content")), "{seen:?}");
}

/// The facts met by walking them alongside the nodes are the facts of each node's path,
/// wherever a thread's share of the nodes starts; the digests are of each node's bytes.
#[test]
fn line_digests_take_each_node_with_its_own_facts() {
    let bench = Bench::typical();
    let nodes: Vec<&DesiredNode> = bench.desired.nodes.values().collect();
    let expected: Vec<Vec<u8>> = nodes
        .iter()
        .map(|node| {
            let mut bytes = Vec::new();
            node_bytes(node, bench.facts.facts.get(&node.path), &mut bytes);
            bytes
        })
        .collect();
    for start in 0..nodes.len() {
        let (share, _) = share_bytes(&nodes[start..], &bench.facts);
        assert_eq!(share.nodes().collect::<Vec<_>>(), expected[start..], "from node {start}");
    }
    let lines = desired_lines(&bench.desired, &bench.facts);
    let digests: Vec<u128> = expected.iter().map(|bytes| line_digest(bytes)).collect();
    assert_eq!(lines.digests(), digests);
    assert_eq!(lines.libc, None);
    let mut bench = bench;
    bench.add_file("/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", b"not ELF");
    let lines = desired_lines(&bench.desired, &bench.facts);
    assert_eq!(lines.libc.map(|index| lines.nodes[index].path.as_str()), Some("/usr/lib/x86_64-linux-gnu/libc.so.6"));
}

/// A lock file whose lines do not add up to the memo's lengths is not the memo's, even with
/// the memo's stat print: reviewed in full (here the last line grew by a byte, which a copy
/// by the memo's offsets would have cut).
#[test]
fn a_lock_that_does_not_add_up_to_the_memo_is_reviewed_in_full() {
    let mut bench = Bench::typical().locked_in();
    let written = fs::read_to_string(bench.lock_file()).expect("lock");
    let last = written.lines().rev().find(|line| line.starts_with("    {")).expect("a last line");
    let grown = written.replace(last, &last.replacen("{\"path\"", "{ \"path\"", 1));
    fs::write(bench.lock_file(), &grown).expect("grow the last line");
    let mut cache = load_cache(&bench.cache_file());
    cache.memo.as_mut().expect("a memo").lock_stat = StatPrint::of(&fs::metadata(bench.lock_file()).expect("stat"));
    fs::write(bench.cache_file(), cache.encode().expect("encode")).expect("write the cache");
    bench.edit("/srv/app/a.conf", b"a = 5\n");
    let seen = bench.seen(Mode::Refresh);
    assert_eq!(seen.route, Some(Route::Full), "{seen:?}");
    let lock = String::from_utf8_lossy(seen.lock.as_deref().unwrap_or_default()).into_owned();
    assert!(lock.contains(&format!("\n{last}\n")), "the last line as a rewrite writes it: {lock}");
    let parsed = Lock::parse(&lock, Path::new("Jailfile.lock")).expect("a lock");
    assert_eq!(parsed.to_text().expect("text"), lock, "written whole, as jailprov writes a lock");
}

#[test]
fn equal_digests_pair_up_in_order() {
    assert_eq!(matched_lines(&[1, 2, 3, 4], &[1, 2, 3, 4]), Some(vec![(0, 0), (1, 1), (2, 2), (3, 3)]));
    assert_eq!(matched_lines(&[1, 2, 3, 4], &[1, 9, 3, 4]), Some(vec![(0, 0), (2, 2), (3, 3)]));
    assert_eq!(matched_lines(&[1, 2, 3], &[1, 5, 2, 3, 6]), Some(vec![(0, 0), (1, 2), (2, 3)]));
    assert_eq!(matched_lines(&[1, 2, 3, 4], &[2, 4]), Some(vec![(1, 0), (3, 1)]));
    assert_eq!(matched_lines(&[], &[1]), Some(vec![]));
    assert_eq!(matched_lines(&[1, 7, 8, 2], &[1, 8, 7, 2]), None, "out of order: not digests of sorted lines");
}

#[test]
fn caches_round_trip_and_refuse_what_is_not_theirs() {
    let print = StatPrint { size: 3, mtime_ns: -5, ctime_ns: i128::MAX, ino: 9 };
    let cache = Cache {
        fresh: Some([7; 32]),
        memo: Some(Memo {
            lock_stat: print,
            lines: vec![MemoLine { digest: u128::MAX - 1, length: 80, source_tag: 3 }],
        }),
        recent: vec![SourceHash { key: [1; 16], print, hash: [2; 32] }],
        glibc: None,
    };
    let bytes = cache.encode().expect("encode");
    let decoded = Cache::decode(&bytes).expect("decode");
    assert_eq!((decoded.fresh, &decoded.memo, &decoded.recent), (cache.fresh, &cache.memo, &cache.recent));
    assert!(Cache::decode(&bytes[..bytes.len() - 1]).is_none(), "a torn cache is no cache");

    let keep: rustc_hash::FxHashSet<SourceKey> = [[1; 16], [3; 16]].into_iter().collect();
    let files = [SourceHash { key: [3; 16], print, hash: [4; 32] }, SourceHash { key: [1; 16], print, hash: [5; 32] }];
    let packages = [([3; 16], Some("p 1".to_owned())), ([1; 16], None), ([2; 16], Some("gone 1".to_owned()))];
    let database = Some((print, print));
    let bytes = SourceStore::encode(files.into_iter(), packages.into_iter(), database, &keep).expect("encode");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("store");
    fs::write(&file, &bytes).expect("write the store");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).expect("chmod");
    // Read whole (a full review) and searched in the file (an incremental one): the same.
    for store in [LazyStore::new(&file), LazyStore::for_few_lookups(&file)] {
        assert_eq!(store.hash(&[1; 16], &print), Some([5; 32]));
        assert_eq!(store.hash(&[3; 16], &print), Some([4; 32]));
        assert_eq!(store.hash(&[3; 16], &StatPrint { ino: 10, ..print }), None, "another stat print");
        assert_eq!(store.hash(&[0; 16], &print), None);
        assert_eq!(store.hash(&[9; 16], &print), None);
        assert_eq!(store.package(&[3; 16], database), Some(Some("p 1")));
        assert_eq!(store.package(&[1; 16], database), Some(None));
        assert_eq!(store.package(&[2; 16], database), None, "pruned: not a source of the jail");
        assert_eq!(store.package(&[3; 16], None), None, "answers hold for their dpkg database only");
        assert_eq!(store.whole.get().is_some(), !store.few_lookups, "an incremental review reads no whole store");
    }
    fs::write(&file, &bytes[..bytes.len() - 1]).expect("tear the store");
    assert!(LazyStore::for_few_lookups(&file).hash(&[1; 16], &print).is_none(), "a torn store is no store");
    assert!(LazyStore::new(&file).hash(&[1; 16], &print).is_none(), "a torn store is no store");
}

/// plan's review reports drift and writes no lock: the incremental review finds what the full
/// one finds, the lock stays byte for byte, and every later review finds the same drift again
/// (nothing vouches for the stale lock), so `--locked` still refuses it.
#[test]
fn a_plan_review_reports_drift_every_time_and_writes_no_lock() {
    let mut bench = Bench::typical().locked_in();
    let before = fs::read(bench.lock_file()).expect("the lock");
    bench.edit("/srv/app/b.conf", b"b = 22\n");
    for round in 1..=3 {
        let seen = bench.assert_incremental_is_full(Mode::Review);
        assert!(!wrote(&seen), "round {round}: {seen:?}");
        assert_eq!(lines(&seen).len(), 1, "round {round}: {seen:?}");
        assert_eq!(seen.lock.as_deref(), Some(&before[..]), "round {round}: plan rewrote the lock");
    }
    let seen = bench.seen(Mode::Locked);
    assert!(seen.outcome.as_ref().is_err_and(|error| error.starts_with("--locked: what the host gives differs")));
}

/// plan's review of a Jailfile without a lock says so, and creates neither the lock nor a
/// missing state directory (its cache is only an accelerator).
#[test]
fn a_plan_review_without_a_lock_creates_nothing() {
    let bench = Bench::typical();
    let seen = bench.seen(Mode::Review);
    let reviewed = seen.outcome.as_ref().expect("a review without a lock is no error");
    assert!(!reviewed.existed && !reviewed.wrote && reviewed.entries > 0, "{seen:?}");
    assert!(seen.lock.is_none(), "plan wrote the lock");
    assert!(!bench.state().exists(), "plan created the state directory");
    fs::create_dir(bench.state()).expect("mkdir the state directory");
    bench.seen(Mode::Review);
    assert!(bench.cache_file().exists(), "into an existing state directory, the cache is saved");
    assert!(!bench.lock_file().exists(), "plan wrote the lock");
}
