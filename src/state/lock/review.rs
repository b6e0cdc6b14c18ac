//! Reviewing the lock during plan, apply and `jailprov lock`: the routes to an answer (fresh
//! key, incremental, full), the full review, and what a review found as plan and apply show it.

use std::fmt::Write as _;
use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use rayon::prelude::*;

use crate::host::StatPrint;

use super::cache::{
    cache_path, load_cache, peek_fresh, store_path, Cache, KnownHashes, LazyStore, SourceKey, SourceStore,
};
use super::drift::{compare, Comparison};
use super::entries::{entry_of, hash_sources};
use super::format::{jailfile_digest, lock_path, Lock, LOCK_VERSION};
use super::incremental::review_incremental;
use super::lines::{desired_lines, fresh_key};
use super::packages::{assign_packages, content_key, packages_by_content};
use super::reviewing::{Inputs, Mode, Review, Reviewing, MAX_LOCK_SIZE};

/// How a review reached its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// Nothing moved since the lock was last found fresh.
    Fresh,
    /// Only the lines whose digest changed since the memo were looked at.
    Incremental,
    /// The whole lock was parsed and every line compared.
    Full,
}

/// Compares the lock with what the host gives now, writes it when missing or stale (in
/// `Refresh` and `Deliberate` modes), refuses any difference in `Locked` mode, only reports
/// it in `Review` mode (plan).
pub fn review(inputs: &Inputs, mode: Mode) -> Result<Review> {
    review_by_route(inputs, mode).map(|(review, _)| review)
}

pub(super) fn review_by_route(inputs: &Inputs, mode: Mode) -> Result<(Review, Route)> {
    let lock_path = lock_path(inputs.jailfile);
    let source = crate::beside::read_text(inputs.jailfile, "Jailfile", crate::spec::MAX_JAILFILE_SIZE)?;
    let jailfile = jailfile_digest(inputs.jailfile, &source)?;
    let cache_file = cache_path(inputs.state_dir, &lock_path);
    let lock_stat = fs::metadata(&lock_path).ok().map(|metadata| StatPrint::of(&metadata));
    let lines = {
        let _t = crate::timings::phase("lock: node bytes, fresh key");
        let lines = desired_lines(inputs.desired, inputs.facts);
        let fresh_key = fresh_key(&lines, &jailfile, lock_stat, inputs.host);
        (lines, fresh_key)
    };
    let (lines, fresh_key) = lines;
    let reviewing = Reviewing {
        inputs,
        mode,
        store_file: store_path(&cache_file),
        lock_path,
        jailfile,
        lines,
        fresh_key,
        cache_file,
    };
    if mode != Mode::Deliberate && lock_stat.is_some() && peek_fresh(&reviewing.cache_file) == Some(fresh_key) {
        // The entry count is not known without reading the lock; nothing shows it when
        // nothing was written.
        let review = Review { entries: 0, ..reviewing.unchanged(Comparison::default()) };
        return Ok((review, Route::Fresh));
    }
    let mut cache = {
        let _t = crate::timings::phase("lock: cache load");
        load_cache(&reviewing.cache_file)
    };
    // `jailprov lock` recomputes everything, on purpose.
    let memo_matches = cache.memo.as_ref().is_some_and(|memo| Some(memo.lock_stat) == lock_stat);
    if mode != Mode::Deliberate && memo_matches {
        if let Some(review) = review_incremental(&reviewing, &mut cache)? {
            return Ok((review, Route::Incremental));
        }
    }
    review_full(&reviewing, cache).map(|review| (review, Route::Full))
}

/// The lock's text and the stat print of the file it was read from (taken before reading: a
/// change while reading moves the stat past it); None when there is no lock.
/// A FIFO, device or socket at the lock's path is refused (never waited on), and so is a lock
/// past [`MAX_LOCK_SIZE`].
fn read_lock(path: &Path) -> Result<Option<(String, StatPrint)>> {
    let Some((file, metadata)) = crate::beside::open_regular(path, "the lock", MAX_LOCK_SIZE)? else { return Ok(None) };
    let stat = StatPrint::of(&metadata);
    let bytes = crate::beside::read_bounded(&file, path, "the lock", MAX_LOCK_SIZE)?;
    let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("the lock {} is not UTF-8", path.display()))?;
    Ok(Some((text, stat)))
}

/// The whole review: every line of the old lock parsed, every line of the new one built and
/// compared. Taken without a memo of the lock file as it is (first run, a lock checked out or
/// edited by hand), and by `jailprov lock`.
fn review_full(reviewing: &Reviewing, mut cache: Cache) -> Result<Review> {
    let inputs = reviewing.inputs;
    let lazy_store = LazyStore::new(&reviewing.store_file);
    let store = lazy_store.whole();
    let _t = crate::timings::phase("lock: old lock parse");
    let old_text = read_lock(&reviewing.lock_path)?;
    let old = match &old_text {
        Some((text, _)) => Some(Lock::parse(text, &reviewing.lock_path)?),
        None => None,
    };
    if old.is_none() && reviewing.mode == Mode::Locked {
        return Err(reviewing.no_lock_error());
    }
    drop(_t);
    let _t = crate::timings::phase("lock: hashes, entries, compare");
    let nodes = &reviewing.lines.nodes;
    let hashed = hash_sources(nodes, inputs.host, &KnownHashes::new(&cache.recent, &lazy_store))?;
    let mut new = Lock {
        version: LOCK_VERSION,
        jailfile: reviewing.jailfile.clone(),
        host: reviewing.fingerprint(&mut cache),
        entries: nodes
            .par_iter()
            .zip(&hashed)
            .map(|(node, hashed)| entry_of(node, inputs.facts, hashed.as_ref().map(|hashed| &hashed.source.hash)))
            .collect(),
    };
    let comparison = match &old {
        Some(old) => compare(old, &new),
        None => Comparison::default(),
    };
    // Every source's hash goes to the store, which keeps the jail's sources only.
    let keep: rustc_hash::FxHashSet<SourceKey> = hashed.iter().flatten().map(|hashed| hashed.source.key).collect();
    let files = hashed.iter().flatten().map(|hashed| hashed.source);
    cache.recent.clear();
    if let (Some(old), Some((old_text, old_stat))) = (&old, &old_text) {
        if comparison.is_empty() {
            // The memo vouches for the lines as a rewrite would write them, packages included;
            // a lock that reads the same but is written otherwise (by hand) gets none, and the
            // next review is a full one again.
            let packages = packages_by_content(old.entries.iter());
            for entry in &mut new.entries {
                entry.package = content_key(entry).and_then(|key| packages.get(&key)).cloned().flatten().cloned();
            }
            let as_written = new.to_text()? == *old_text;
            cache.memo = as_written.then(|| reviewing.memo_of(*old_stat, old_text, &new.entries)).flatten();
            cache.fresh = Some(reviewing.fresh_key);
            drop(_t);
            let _t = crate::timings::phase("lock: save cache");
            reviewing
                .save_cache(&reviewing.store_file, SourceStore::encode(files, store.packages(), store.database, &keep));
            reviewing.save_cache(&reviewing.cache_file, cache.encode());
            return Ok(reviewing.unchanged(comparison));
        }
    }
    if matches!(reviewing.mode, Mode::Locked | Mode::Review) {
        // The cache still learned the hashes; it never vouches for a stale or missing lock, so
        // the next plan sees the same difference and `--locked` refuses it, however many plans
        // ran before.
        cache.fresh = None;
        cache.memo = None;
        reviewing
            .save_cache(&reviewing.store_file, SourceStore::encode(files, store.packages(), store.database, &keep));
        reviewing.save_cache(&reviewing.cache_file, cache.encode());
        if reviewing.mode == Mode::Locked {
            return Err(reviewing.locked_error(&comparison));
        }
        return Ok(Review {
            lock_path: reviewing.lock_path.clone(),
            existed: old.is_some(),
            comparison,
            wrote: false,
            entries: new.entries.len(),
        });
    }
    // A file the old lock already had, from the same source with the same content, keeps the
    // package it was found in; the dpkg database (hundreds of list files) is searched only for
    // the rest, and not at all when there is no rest.
    drop(_t);
    let _t = crate::timings::phase("lock: packages");
    let known = packages_by_content(old.iter().flat_map(|old| &old.entries));
    let reused: Vec<Option<Option<String>>> = new
        .entries
        .iter()
        .map(|entry| content_key(entry).and_then(|key| known.get(&key)).map(|package| package.cloned()))
        .collect();
    let answers = assign_packages(&mut new.entries, reused, inputs.host, &lazy_store);
    // Compared again now that the new side has its package versions, for `jailprov lock`'s
    // "3.0.15 → 3.0.17" lines (packages never make a difference by themselves).
    let reported = match &old {
        Some(old) => compare(old, &new),
        None => comparison,
    };
    drop(_t);
    let _t = crate::timings::phase("lock: write lock and cache");
    let text = new.to_text()?;
    let written = reviewing.write_lock(|mut file, temporary| {
        file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", temporary.display()))
    })?;
    match &written {
        Some(file) => {
            reviewing.remember_written(&mut cache, file, |lock_stat| reviewing.memo_of(lock_stat, &text, &new.entries))
        }
        None => cache.memo = None,
    }
    let wrote = written.is_some();
    let (database, packages) = answers.into_store_packages();
    reviewing.save_cache(&reviewing.store_file, SourceStore::encode(files, packages, database, &keep));
    reviewing.save_cache(&reviewing.cache_file, cache.encode());
    Ok(Review {
        lock_path: reviewing.lock_path.clone(),
        existed: old.is_some(),
        comparison: reported,
        wrote,
        entries: new.entries.len(),
    })
}

// What a review found, as plan and apply show it

/// The plan's lock section (empty when the lock matches): a missing lock, the host drift per
/// path, or a lock behind an edited Jailfile; shown before the jail changes, in every plan
/// until `jailprov lock` or `apply` accepts it (apply shows [`written_text`] once it has).
pub fn drift_text(review: &Review) -> String {
    let name = lock_name(review);
    let mut text = String::new();
    if !review.existed {
        let _ = writeln!(text, "{name} does not exist yet; `jailprov apply` or `jailprov lock` writes it.\n");
        return text;
    }
    let drift = review.host_drift();
    if !drift.is_empty() {
        let _ = writeln!(text, "The host no longer gives what {name} records:\n");
        for item in &drift {
            let _ = writeln!(text, "  {}", item.line());
        }
        let _ = writeln!(
            text,
            "\nNot accepted yet: `jailprov lock` (or a plain `jailprov apply`) records it in {name};\n\
             review and commit the lock. Until then `--locked` refuses it."
        );
    } else if !review.comparison.is_empty() {
        let _ =
            writeln!(text, "{name} does not match the Jailfile yet; `jailprov apply` or `jailprov lock` updates it.");
    } else {
        return text;
    }
    text.push('\n');
    text
}

/// The lock's file name ("Jailfile.lock", "web.lock").
fn lock_name(review: &Review) -> String {
    review.lock_path.file_name().map_or_else(String::new, |name| name.to_string_lossy().into_owned())
}

/// What writing the lock did, as `jailprov lock` and `apply` say it: None when nothing was
/// written; else the new lock's size, or every changed path in the style of
/// `nix store diff-closures` (old → new) and where to review it.
pub fn written_text(review: &Review) -> Option<String> {
    let name = review.lock_path.display();
    match (review.wrote, review.existed) {
        (false, _) => None,
        (true, false) => Some(format!("Wrote {name}: {} entries.\n", review.entries)),
        (true, true) => Some(format!(
            "{}\nUpdated {name}: review it (git diff) and commit it.\n",
            super::drift::diff_closures_text(&review.comparison)
        )),
    }
}
