//! Which dpkg package (and version) gave each host source: read from the dpkg database, never
//! run; the answers kept in the cache while the database stays the same.

use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use rustc_hash::FxHashMap as HashMap;

use crate::host::{HostFs, StatPrint};

use super::cache::{source_key, DatabasePrint, LazyStore, SourceKey};
use super::format::LockEntry;

/// A host source and what the lock says it holds (hash, symlink text).
type ContentKey<'a> = (&'a str, Option<&'a str>, Option<&'a str>);

/// A [`ContentKey`] that owns its strings.
pub(super) type OwnedContentKey = (String, Option<String>, Option<String>);

pub(super) fn content_key(entry: &LockEntry) -> Option<ContentKey<'_>> {
    entry.source.as_deref().map(|source| (source, entry.hash.as_deref(), entry.target.as_deref()))
}

/// The package each content key of `entries` was recorded with: a file the old lock already
/// had, from the same source with the same content, keeps the package it was found in (for two
/// lines of one key, the later line's).
pub(super) fn packages_by_content<'a>(
    entries: impl Iterator<Item = &'a LockEntry>,
) -> HashMap<ContentKey<'a>, Option<&'a String>> {
    entries.filter_map(|entry| Some((content_key(entry)?, entry.package.as_ref()))).collect()
}

/// Package versions from the dpkg database (`/var/lib/dpkg/status` and `info/*.list`), read,
/// never run. Empty where there is no dpkg. A path's answer does not depend on which other
/// paths are asked with it (the caches keep answers one by one).
pub(super) fn dpkg_packages(host: &HostFs, paths: &[&str]) -> HashMap<String, String> {
    let info = host.disk_path(Path::new("/var/lib/dpkg/info"));
    let Ok(status) = fs::read_to_string(host.disk_path(Path::new("/var/lib/dpkg/status"))) else {
        return HashMap::default();
    };
    let mut versions: HashMap<String, String> = HashMap::default();
    for stanza in status.split("\n\n") {
        let field = |name: &str| stanza.lines().find_map(|line| line.strip_prefix(name)).map(str::trim);
        if let (Some(package), Some(version)) = (field("Package:"), field("Version:")) {
            if field("Status:").is_some_and(|status| status.ends_with(" installed")) {
                versions.insert(package.to_owned(), version.to_owned());
            }
        }
    }
    // Debian 12 packages still name /lib/... where the file is reached as /usr/lib/...; both
    // /lib/x and /usr/lib/x may be asked for, so one listed name can answer several paths.
    let mut wanted: HashMap<String, Vec<&str>> = HashMap::default();
    for path in paths {
        wanted.entry((*path).to_owned()).or_default().push(path);
        if let Some(rest) = path.strip_prefix("/usr") {
            if ["/lib", "/bin", "/sbin", "/lib64", "/lib32"].iter().any(|dir| rest.starts_with(&format!("{dir}/"))) {
                wanted.entry(rest.to_owned()).or_default().push(path);
            }
        }
    }
    let mut found = HashMap::default();
    let Ok(lists) = fs::read_dir(&info) else { return found };
    let mut lists: Vec<PathBuf> = lists
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|extension| extension == "list"))
        .collect();
    lists.sort();
    // Hundreds of list files: read in parallel, merged in name order (the first package that
    // lists a path names it, as before).
    let per_list: Vec<Vec<(String, String)>> = lists
        .par_iter()
        .map(|list| {
            let Some(stem) = list.file_stem().map(|stem| stem.to_string_lossy().into_owned()) else {
                return Vec::new();
            };
            let package = stem.split(':').next().unwrap_or(&stem).to_owned();
            let Some(version) = versions.get(&package) else { return Vec::new() };
            let Ok(text) = fs::read_to_string(list) else { return Vec::new() };
            text.lines()
                .filter_map(|line| wanted.get(line))
                .flatten()
                .map(|path| ((*path).to_owned(), format!("{package} {version}")))
                .collect()
        })
        .collect();
    for (path, package) in per_list.into_iter().flatten() {
        found.entry(path).or_insert(package);
    }
    found
}

/// The stat prints that change whenever dpkg installs, upgrades or removes a package.
pub(super) fn dpkg_database_print(host: &HostFs) -> Option<DatabasePrint> {
    let status = fs::metadata(host.disk_path(Path::new("/var/lib/dpkg/status"))).ok()?;
    let info = fs::metadata(host.disk_path(Path::new("/var/lib/dpkg/info"))).ok()?;
    Some((StatPrint::of(&status), StatPrint::of(&info)))
}

/// Package answers for host sources: the store's (while the dpkg database is the one they were
/// found in) and those looked up now.
pub(super) struct PackageAnswers<'a> {
    database: Option<DatabasePrint>,
    store: &'a LazyStore<'a>,
    /// Looked up in this review: source -> package (None: no package lists it).
    pub(super) learned: HashMap<String, Option<String>>,
}

impl<'a> PackageAnswers<'a> {
    pub(super) fn new(host: &HostFs, store: &'a LazyStore<'a>) -> PackageAnswers<'a> {
        PackageAnswers { database: dpkg_database_print(host), store, learned: HashMap::default() }
    }

    fn known(&self, source: &str) -> Option<Option<&str>> {
        match self.learned.get(source) {
            Some(answer) => Some(answer.as_deref()),
            None => self.store.package(&source_key(Path::new(source)), self.database),
        }
    }

    /// Asks the dpkg database about the sources no answer is known for yet.
    pub(super) fn look_up(&mut self, host: &HostFs, sources: &[&str]) {
        let mut unknown: Vec<&str> = sources.iter().copied().filter(|source| self.known(source).is_none()).collect();
        unknown.sort_unstable();
        unknown.dedup();
        if unknown.is_empty() {
            return;
        }
        let mut found = dpkg_packages(host, &unknown);
        for source in unknown {
            self.learned.insert(source.to_owned(), found.remove(source));
        }
    }

    pub(super) fn get(&self, source: &str) -> Option<&str> {
        self.known(source).flatten()
    }

    /// The answers a store keeps after this review: the still valid ones it had, and the new.
    pub(super) fn into_store_packages(
        self,
    ) -> (Option<DatabasePrint>, impl Iterator<Item = (SourceKey, Option<String>)> + 'a) {
        let store = self.store.whole();
        let valid = self.database.is_some() && store.database == self.database;
        let kept = store.packages().filter(move |_| valid);
        let learned = self.learned.into_iter().map(|(source, answer)| (source_key(Path::new(&source)), answer));
        (self.database, kept.chain(learned))
    }
}

/// Gives each entry its dpkg package: `reused` where the old lock already knew it (same source,
/// same content), else the dpkg database, searched once and only for the rest. Returns the
/// answers, whose new findings the store keeps.
pub(super) fn assign_packages<'a>(
    entries: &mut [LockEntry],
    reused: Vec<Option<Option<String>>>,
    host: &HostFs,
    store: &'a LazyStore<'a>,
) -> PackageAnswers<'a> {
    let unknown: Vec<&str> = entries
        .iter()
        .zip(&reused)
        .filter(|(_, reused)| reused.is_none())
        .filter_map(|(entry, _)| entry.source.as_deref())
        .collect();
    let mut answers = PackageAnswers::new(host, store);
    answers.look_up(host, &unknown);
    for (entry, reused) in entries.iter_mut().zip(reused) {
        entry.package = match reused {
            Some(package) => package,
            None => entry.source.as_deref().and_then(|source| answers.get(source)).map(str::to_owned),
        };
    }
    answers
}
