//! Convergence after any kill: applies SIGKILLed at deterministic points (`JAILPROV_TEST_KILL_AFTER=N`,
//! honoured by debug builds after the Nth write into the jail or the state directory), then one
//! apply to the end, must leave exactly what an uninterrupted apply leaves.
//!
//! Three transitions of a rich Jailfile (binaries with their libraries and symlinks, `awk` through
//! /etc/alternatives, a `[[files]]` tree with nested directories and symlinks, inline content,
//! users and groups so /etc/passwd exists, directory modes): a grow (small -> rich: creates,
//! updates, a file replaced by a directory), a shrink (rich -> small: deletes, updates, a
//! directory replaced by a file), and a flip (a grow interrupted, then a shrink interrupted: the
//! paths the first left half-made must still be deleted). Each seed kills one to three applies in
//! a row, the first kill point taken from its own slice of the whole run so that the seeds cover
//! every phase; the final jail is compared with a reference jail built without interruption:
//! path set, kinds, modes, owners, link targets, contents, no temporary file; `plan
//! --detailed-exitcode` exits 0; the record names exactly the paths on disk, as the reference's.
//!
//! `JAILPROV_INTERRUPT_SEEDS=N` sets the seeds per transition (default 6); a failure prints its
//! seed, and `JAILPROV_INTERRUPT_SEED=S` runs that one alone.
#![allow(clippy::disallowed_methods)] // tests build fixtures and read jails with plain fs calls

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

#[macro_use]
mod cli;
use cli::tree::{tree, Node};
use cli::{output, Workspace, UNUSED_ROOT};

/// The two Jailfiles every transition moves between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Small,
    Rich,
}

/// The source trees both Jailfiles copy to /srv/data: overlapping names with other content, a
/// symlink with another target, and `kind` a file in one and a directory in the other.
fn make_sources(dir: &Path) {
    let write = |path: PathBuf, text: &str| {
        fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    };
    let rich = dir.join("rich");
    write(rich.join("top.txt"), "rich top\n");
    write(rich.join("a/two.txt"), "rich two\n");
    write(rich.join("a/b/one.txt"), "one\n");
    write(rich.join("a/b/c/deep.txt"), "deep\n");
    write(rich.join("kind/inner.txt"), "inside a directory\n");
    for index in 0..40 {
        write(rich.join(format!("many/d{}/file{index:02}.txt", index % 4)), &format!("file {index}\n"));
    }
    fs::create_dir_all(rich.join("empty")).expect("mkdir");
    symlink("a/two.txt", rich.join("link")).expect("symlink");
    symlink("../top.txt", rich.join("a/up")).expect("symlink");
    let small = dir.join("small");
    write(small.join("top.txt"), "small top\n");
    write(small.join("a/two.txt"), "small two, longer than the rich one\n");
    write(small.join("kind"), "a file here\n");
    symlink("top.txt", small.join("link")).expect("symlink");
}

fn jailfile(shape: Shape, sources: &Path) -> String {
    match shape {
        Shape::Small => format!(
            r#"root = "{UNUSED_ROOT}"
binaries = ["cat"]

[[dirs]]
path = "/tmp"
mode = "0755"

[[files]]
path = "/etc/motd"
mode = "0600"
content = "small\n"

[[files]]
src = "{}"
dest = "/srv/data"
"#,
            sources.join("small").display()
        ),
        Shape::Rich => format!(
            r#"root = "{UNUSED_ROOT}"
binaries = ["cat", "id", "awk"]

[[dirs]]
path = "/tmp"
mode = "1777"

[[dirs]]
path = "/var/empty/deeper"
mode = "0711"

[[files]]
path = "/etc/motd"
mode = "0644"
content = "rich, and longer\n"

[[files]]
src = "{}"
dest = "/srv/data"

[[groups]]
name = "jailer"
gid = 1000

[[users]]
name = "jailer"
uid = 1000
gid = 1000
home = "/home/jailer"
shell = "/usr/bin/cat"
"#,
            sources.join("rich").display()
        ),
    }
}

/// A transition: the shapes applied one after the other, each but the first interrupted.
#[derive(Clone, Copy, Debug)]
enum Transition {
    Grow,
    Shrink,
    Flip,
}

impl Transition {
    fn start(self) -> Shape {
        match self {
            Transition::Grow | Transition::Flip => Shape::Small,
            Transition::Shrink => Shape::Rich,
        }
    }

    /// The shapes applied (with kills) after the start.
    fn steps(self) -> &'static [Shape] {
        match self {
            Transition::Grow => &[Shape::Rich],
            Transition::Shrink => &[Shape::Small],
            Transition::Flip => &[Shape::Rich, Shape::Small],
        }
    }
}

/// splitmix64: a seed gives the same kill points on every machine.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// In 1..=bound.
    fn below(&mut self, bound: u64) -> u64 {
        1 + self.next() % bound.max(1)
    }
}

/// A workspace with both source trees and a Jailfile of the chosen shape.
struct Scene {
    workspace: Workspace,
    sources: PathBuf,
}

impl Scene {
    fn new() -> Scene {
        let workspace = Workspace::new("jailprov-interrupt-");
        let sources = workspace.dir.join("sources");
        make_sources(&sources);
        Scene { workspace, sources }
    }

    fn shape(&self, shape: Shape) {
        self.workspace.write_jailfile(&jailfile(shape, &self.sources));
    }

    /// An apply to the end; returns how many kill points it passed.
    fn apply(&self, what: &str) -> u64 {
        let mut command = self.workspace.command("apply", &[]);
        command.env("JAILPROV_TEST_KILL_AFTER", u64::MAX.to_string());
        let run = output(command).ok(what);
        run.stderr
            .lines()
            .find_map(|line| line.strip_prefix("kill points passed: "))
            .and_then(|count| count.trim().parse().ok())
            .unwrap_or_else(|| panic!("{what}: no kill point count (is this a debug build?): {}", run.describe()))
    }

    /// An apply killed after `after` writes; whether the kill happened (it may finish first).
    fn apply_killed(&self, after: u64, what: &str) -> bool {
        let mut command = self.workspace.command("apply", &[]);
        command.env("JAILPROV_TEST_KILL_AFTER", after.to_string());
        let result = command.output().unwrap_or_else(|error| panic!("{what}: {error}"));
        match result.status.signal() {
            Some(9) => true,
            _ => {
                assert!(
                    result.status.success(),
                    "{what}: exit {:?}\n{}",
                    result.status,
                    String::from_utf8_lossy(&result.stderr)
                );
                false
            }
        }
    }
}

/// The record's paths, with kind and whether jailprov created them.
fn record(workspace: &Workspace) -> BTreeMap<String, String> {
    let store = jailprov::state::StateStore::for_root(&workspace.state, &workspace.root);
    let state = store.load(&workspace.root).expect("the record loads");
    assert!(!state.interrupted, "the record says an apply is still under way");
    state
        .entries
        .iter()
        .map(|(path, managed)| (path.to_string(), format!("{:?} {}", managed.kind, managed.created)))
        .collect()
}

/// The differences between two walks, for the failure message.
fn differences(got: &BTreeMap<String, Node>, want: &BTreeMap<String, Node>) -> Vec<String> {
    let mut lines = Vec::new();
    for (path, node) in got {
        match want.get(path) {
            None => lines.push(format!("  extra   {path} {node:?}")),
            Some(wanted) if wanted != node => lines.push(format!("  differs {path}: {node:?}, want {wanted:?}")),
            _ => {}
        }
    }
    for path in want.keys().filter(|path| !got.contains_key(*path)) {
        lines.push(format!("  missing {path}"));
    }
    lines
}

/// The reference jail of a transition (applied without interruption), and how many kill points
/// each of its interrupted steps passes.
struct Reference {
    nodes: BTreeMap<String, Node>,
    record: BTreeMap<String, String>,
    points: Vec<u64>,
}

fn reference(transition: Transition) -> Reference {
    let scene = Scene::new();
    scene.shape(transition.start());
    scene.apply("the reference's first apply");
    let mut points = Vec::new();
    for (index, shape) in transition.steps().iter().enumerate() {
        scene.shape(*shape);
        points.push(scene.apply(&format!("the reference's step {index}")));
    }
    Reference { nodes: tree(&scene.workspace.root), record: record(&scene.workspace), points }
}

/// One seed: the start applied, each step killed one to three times (the first kill of the first
/// step in the seed's slice of the run), then applied to the end; then compared.
fn run_seed(transition: Transition, reference: &Reference, seed: u64, seeds: u64) -> Result<(), String> {
    let mut random = Random(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ transition as u64);
    let scene = Scene::new();
    scene.shape(transition.start());
    scene.apply("the first apply");
    let mut kills = Vec::new();
    for (index, shape) in transition.steps().iter().enumerate() {
        scene.shape(*shape);
        let total = reference.points[index];
        let attempts = random.below(3);
        for attempt in 0..attempts {
            let after = if index == 0 && attempt == 0 {
                // The seed's own slice of the run: the seeds together cover every phase.
                let slice = (seed % seeds) * total / seeds;
                slice + random.below((total / seeds).max(1))
            } else {
                random.below(total)
            };
            let killed = scene.apply_killed(after, &format!("seed {seed}: step {index}, kill after {after}"));
            kills.push(format!("step {index} ({shape:?}) after {after}{}", if killed { "" } else { " (finished)" }));
            // A plan between the kills reads (and may memoize) the interrupted record.
            if random.below(2) == 1 {
                let _ = output(scene.workspace.command("plan", &[]));
            }
        }
    }
    let final_apply = output(scene.workspace.command("apply", &[]));
    let context =
        || format!("{transition:?} seed {seed} (JAILPROV_INTERRUPT_SEED={seed}), kills: {}", kills.join(", "));
    if final_apply.code != 0 {
        return Err(format!("{}: the final apply failed: {}", context(), final_apply.describe()));
    }
    let mut problems = Vec::new();
    let nodes = tree(&scene.workspace.root);
    let temporaries: Vec<&String> = nodes.keys().filter(|path| path.contains(".jailprov-tmp-")).collect();
    if !temporaries.is_empty() {
        problems.push(format!("temporary files left: {temporaries:?}"));
    }
    let differ = differences(&nodes, &reference.nodes);
    if !differ.is_empty() {
        problems.push(format!("the jail differs from the uninterrupted one:\n{}", differ.join("\n")));
    }
    let plan = output(scene.workspace.command("plan", &["--detailed-exitcode"]));
    if plan.code != 0 {
        problems.push(format!("plan after the final apply: {}", plan.describe()));
    }
    let recorded = record(&scene.workspace);
    // The root itself is the operator's (made by root_safety), never in the record.
    let on_disk: Vec<&String> = nodes.keys().filter(|path| *path != "/").collect();
    let in_record: Vec<&String> = recorded.keys().collect();
    if on_disk != in_record {
        let unrecorded: Vec<_> = on_disk.iter().filter(|path| !recorded.contains_key(**path)).collect();
        // (the root is never recorded)
        let gone: Vec<_> = in_record.iter().filter(|path| !nodes.contains_key(**path)).collect();
        problems.push(format!("on disk but not in the record: {unrecorded:?}; recorded but gone: {gone:?}"));
    }
    if recorded != reference.record {
        let differ: Vec<String> = recorded
            .iter()
            .filter(|(path, what)| reference.record.get(*path) != Some(*what))
            .map(|(path, what)| format!("{path} {what} (reference: {:?})", reference.record.get(path)))
            .collect();
        problems.push(format!("the record differs from the uninterrupted one's: {differ:?}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}:\n{}", context(), problems.join("\n")))
    }
}

fn converges(transition: Transition, name: &str) {
    need_root!(name);
    let seeds: u64 = std::env::var("JAILPROV_INTERRUPT_SEEDS").ok().and_then(|n| n.parse().ok()).unwrap_or(6).max(1);
    let only: Option<u64> = std::env::var("JAILPROV_INTERRUPT_SEED").ok().and_then(|n| n.parse().ok());
    let reference = reference(transition);
    // The reference itself must be what a plan calls clean, with a record of exactly its paths.
    assert_eq!(
        reference.nodes.keys().filter(|path| *path != "/").collect::<Vec<_>>(),
        reference.record.keys().collect::<Vec<_>>(),
        "the uninterrupted jail and its record name the same paths"
    );
    let failures: Vec<String> = match only {
        Some(seed) => run_seed(transition, &reference, seed, seeds).err().into_iter().collect(),
        None => (0..seeds).filter_map(|seed| run_seed(transition, &reference, seed, seeds).err()).collect(),
    };
    assert!(failures.is_empty(), "{} of {seeds} seeds did not converge:\n\n{}", failures.len(), failures.join("\n\n"));
}

#[test]
fn a_grow_killed_anywhere_converges() {
    converges(Transition::Grow, "a_grow_killed_anywhere_converges");
}

#[test]
fn a_shrink_killed_anywhere_converges() {
    converges(Transition::Shrink, "a_shrink_killed_anywhere_converges");
}

#[test]
fn a_grow_then_a_shrink_both_killed_converge() {
    converges(Transition::Flip, "a_grow_then_a_shrink_both_killed_converge");
}
