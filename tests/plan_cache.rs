//! The plan's cache (src/plan/reuse.rs): `apply` right after `plan` takes the desired tree the
//! plan computed instead of computing the closure again, but never when anything it came from
//! moved in between, and never from a damaged file.
//!
//! Like tests/memo.rs: the real binary, as root, in a fresh 0700 tempdir; host changes are made
//! to a `[[files]]` tree inside that tempdir. Whether apply took the cache is read from
//! `JAILPROV_TIMINGS=1`'s line for it.
#![allow(clippy::disallowed_methods)] // tests build fixtures and jails with plain fs calls

use std::fs;
use std::path::PathBuf;

#[macro_use]
mod cli;
use cli::{output, Run, Workspace, UNUSED_ROOT};

const TAKEN: &str = "desired tree from the plan's cache";

struct Jail {
    workspace: Workspace,
    src: PathBuf,
}

impl std::ops::Deref for Jail {
    type Target = Workspace;

    fn deref(&self) -> &Workspace {
        &self.workspace
    }
}

impl Jail {
    /// A jail of a private tree of two small files, applied.
    fn applied() -> Jail {
        let workspace = Workspace::new("jailprov-plan-cache-");
        let src = workspace.dir.join("src");
        fs::create_dir_all(src.join("sub")).expect("mkdir src/sub");
        fs::write(src.join("a.txt"), "alpha\n").expect("write a.txt");
        fs::write(src.join("sub/b.txt"), "bravo\n").expect("write b.txt");
        workspace.write_jailfile(&format!("root = \"{UNUSED_ROOT}\"\n\n[[files]]\nsrc = \"{}\"\n", src.display()));
        let jail = Jail { workspace, src };
        jail.apply();
        // Past the window in which a path changed before a plan makes its looks racy.
        std::thread::sleep(std::time::Duration::from_millis(100));
        jail
    }

    fn timed(&self, subcommand: &str, extra: &[&str]) -> Run {
        let mut command = self.command(subcommand, extra);
        command.env("JAILPROV_TIMINGS", "1");
        output(command)
    }

    /// `plan --detailed-exitcode`, which must find changes.
    fn plan_changes(&self, what: &str) {
        self.timed("plan", &["--detailed-exitcode"]).code(2, what);
    }

    /// `apply`: the run, and whether it took the plan's cache.
    fn apply_timed(&self, what: &str) -> (Run, bool) {
        let run = self.timed("apply", &[]).ok(what);
        let taken = run.stderr.contains(TAKEN);
        (run, taken)
    }

    /// The jail's copy of the tree's file `name` (the tree lands at its host path).
    fn in_jail(&self, name: &str) -> String {
        let source = self.src.join(name);
        fs::read_to_string(self.at(source.to_str().expect("a UTF-8 tempdir"))).expect("read the jail's copy")
    }

    /// The plan caches in the state directory.
    fn caches(&self) -> Vec<PathBuf> {
        let entries = fs::read_dir(&self.state).expect("the state directory");
        let paths = entries.map(|entry| entry.expect("a state directory entry").path());
        paths.filter(|path| path.extension().is_some_and(|extension| extension == "plan-cache")).collect()
    }

    fn the_cache(&self) -> PathBuf {
        let caches = self.caches();
        assert_eq!(caches.len(), 1, "the plan kept one cache: {caches:?}");
        caches[0].clone()
    }

    fn assert_clean(&self, what: &str) {
        self.timed("plan", &["--detailed-exitcode"]).ok(what);
    }
}

fn src_path(jail: &Jail, name: &str) -> PathBuf {
    jail.src.join(name)
}

/// The usual pair: the plan found a source edited moments before it looked (only lstat'ed, so
/// its cache is sound); apply takes the cache, copies the edit, and leaves nothing to do.
#[test]
fn apply_right_after_plan_takes_the_plans_desired_tree() {
    need_root!("apply_right_after_plan_takes_the_plans_desired_tree");
    let jail = Jail::applied();
    fs::write(src_path(&jail, "a.txt"), "ALPHA\n").expect("edit a.txt");
    jail.plan_changes("plan after an edit");
    let cache = jail.the_cache();
    let (run, taken) = jail.apply_timed("apply after plan");
    assert!(taken, "apply must take the plan's cache: {}", run.describe());
    assert_eq!(jail.in_jail("a.txt"), "ALPHA\n");
    assert!(!cache.exists(), "a cache serves one apply");
    jail.assert_clean("after apply");
}

/// The cache is never stale: a source edited after the plan (same size, so only its stat
/// tells) sends apply back to the host, which copies what the source holds now.
#[test]
fn a_source_edited_between_plan_and_apply_is_applied_as_it_is_now() {
    need_root!("a_source_edited_between_plan_and_apply_is_applied_as_it_is_now");
    let jail = Jail::applied();
    let b = src_path(&jail, "sub/b.txt");
    fs::write(&b, "BRAVO\n").expect("edit b.txt");
    jail.plan_changes("plan after an edit");
    jail.the_cache();
    // A later tick, so the second edit's stat differs from the first's.
    std::thread::sleep(std::time::Duration::from_millis(50));
    fs::write(&b, "bravO\n").expect("edit b.txt again");
    let (run, taken) = jail.apply_timed("apply after a second edit");
    assert!(!taken, "the cache of a plan made before the edit must not be taken: {}", run.describe());
    assert_eq!(jail.in_jail("sub/b.txt"), "bravO\n", "apply copies the source as it is now");
    jail.assert_clean("after apply");
}

/// A new file in the tree after the plan: the tree's directory listing moved.
#[test]
fn a_file_added_between_plan_and_apply_is_applied() {
    need_root!("a_file_added_between_plan_and_apply_is_applied");
    let jail = Jail::applied();
    fs::write(src_path(&jail, "a.txt"), "ALPHA\n").expect("edit a.txt");
    jail.plan_changes("plan after an edit");
    fs::write(src_path(&jail, "sub/c.txt"), "charlie\n").expect("add c.txt");
    let (run, taken) = jail.apply_timed("apply after a new file");
    assert!(!taken, "{}", run.describe());
    assert_eq!(jail.in_jail("sub/c.txt"), "charlie\n");
    jail.assert_clean("after apply");
}

/// A truncated or overwritten cache is ignored (apply computes everything), never an error.
#[test]
fn a_damaged_cache_is_ignored() {
    need_root!("a_damaged_cache_is_ignored");
    let jail = Jail::applied();
    for (round, damage) in ["truncated", "garbage after the key", "empty"].into_iter().enumerate() {
        let text = format!("edit {round}\n");
        fs::write(src_path(&jail, "a.txt"), &text).expect("edit a.txt");
        jail.plan_changes(damage);
        let cache = jail.the_cache();
        let bytes = fs::read(&cache).expect("read the cache");
        let damaged = match damage {
            "truncated" => bytes[..bytes.len() / 2].to_vec(),
            "garbage after the key" => {
                let mut bytes = bytes;
                let half = bytes.len() / 2;
                bytes[half..].iter_mut().for_each(|byte| *byte = 0xff);
                bytes
            }
            _ => Vec::new(),
        };
        fs::write(&cache, damaged).expect("damage the cache");
        let (run, taken) = jail.apply_timed(damage);
        assert!(!taken, "{damage}: {}", run.describe());
        assert_eq!(jail.in_jail("a.txt"), text, "{damage}");
        jail.assert_clean(damage);
    }
}

/// `destroy` takes the cache with it.
#[test]
fn destroy_forgets_the_cache() {
    need_root!("destroy_forgets_the_cache");
    let jail = Jail::applied();
    fs::write(src_path(&jail, "a.txt"), "ALPHA\n").expect("edit a.txt");
    jail.plan_changes("plan after an edit");
    jail.the_cache();
    jail.run("destroy", &["--yes"]).ok("destroy");
    assert_eq!(jail.caches(), Vec::<PathBuf>::new(), "destroy leaves no plan cache behind");
}
