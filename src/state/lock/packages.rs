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

/// The installed packages and their versions, from dpkg's `status` file (read, never run);
/// empty where there is no dpkg.
pub fn installed_versions(host: &HostFs) -> HashMap<String, String> {
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
    versions
}

/// One package's line for an asked path: its name and version, and whether the same package
/// also lists something inside that path (then it ships the path as a directory).
struct Listing {
    package: String,
    version: String,
    lists_children: bool,
}

/// Package versions from the dpkg database (`/var/lib/dpkg/status` and `info/*.list`), read,
/// never run. Empty where there is no dpkg. A path's answer does not depend on which other
/// paths are asked with it (the caches keep answers one by one).
///
/// A path belongs to the package that ships it as the kind of object it is on the host
/// ([`owner`]): dpkg lists a directory under every package that puts files in it, so without
/// that rule the usr-merge link /lib was credited to whichever package came first by name.
pub(super) fn dpkg_packages(host: &HostFs, paths: &[&str]) -> HashMap<String, String> {
    let info = host.disk_path(Path::new("/var/lib/dpkg/info"));
    let versions = installed_versions(host);
    if versions.is_empty() {
        return HashMap::default();
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
    let Ok(lists) = fs::read_dir(&info) else { return HashMap::default() };
    let mut lists: Vec<PathBuf> = lists
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|extension| extension == "list"))
        .collect();
    lists.sort();
    // Hundreds of list files: read in parallel, merged in name order.
    let per_list: Vec<Vec<(&str, Listing)>> =
        lists.par_iter().map(|list| listings_of(list, &versions, &wanted)).collect();
    let mut listings: HashMap<&str, Vec<Listing>> = HashMap::default();
    for (path, listing) in per_list.into_iter().flatten() {
        listings.entry(path).or_default().push(listing);
    }
    listings
        .into_iter()
        .filter_map(|(path, listings)| {
            // A path the host lacks is judged as a file (dpkg gives a file one owner).
            let kind = host.symlink_metadata(Path::new(path)).ok().map(|metadata| metadata.file_type());
            let (is_dir, is_symlink) = kind.map_or((false, false), |kind| (kind.is_dir(), kind.is_symlink()));
            let owner = owner(is_dir, is_symlink, &listings)?;
            Some((path.to_owned(), format!("{} {}", owner.package, owner.version)))
        })
        .collect()
}

/// The asked paths one `info/PACKAGE.list` names (for each, whether it also names something
/// inside it).
fn listings_of<'a>(
    list: &Path,
    versions: &HashMap<String, String>,
    wanted: &HashMap<String, Vec<&'a str>>,
) -> Vec<(&'a str, Listing)> {
    let Some(stem) = list.file_stem().map(|stem| stem.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let package = stem.split(':').next().unwrap_or(&stem).to_owned();
    let Some(version) = versions.get(&package) else { return Vec::new() };
    let Ok(text) = fs::read_to_string(list) else { return Vec::new() };
    let mut named: HashMap<&str, bool> = HashMap::default();
    for line in text.lines() {
        if let Some(paths) = wanted.get(line) {
            for path in paths {
                named.entry(path).or_insert(false);
            }
        }
        // A package that lists /lib/x ships /lib as a directory (dpkg lists every parent).
        if let Some(paths) = line.rsplit_once('/').and_then(|(parent, _)| wanted.get(parent)) {
            for path in paths {
                named.insert(path, true);
            }
        }
    }
    named
        .into_iter()
        .map(|(path, lists_children)| {
            (path, Listing { package: package.clone(), version: version.clone(), lists_children })
        })
        .collect()
}

/// Which of the packages listing a path ships it as what the host has there: a symlink belongs to
/// the one package that lists it without listing anything inside it (a usr-merge link such as /lib
/// is listed as a directory by every package with files under it: none of those); a directory
/// shared by several packages belongs to base-files when it lists it (it creates the top-level
/// tree), else to none; anything else to the first package by name, as dpkg has one owner per file.
fn owner(is_dir: bool, is_symlink: bool, listings: &[Listing]) -> Option<&Listing> {
    let base_files = || listings.iter().find(|listing| listing.package == "base-files");
    if is_symlink {
        let mut as_symlink = listings.iter().filter(|listing| !listing.lists_children);
        return match (as_symlink.next(), as_symlink.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        };
    }
    if is_dir {
        return match listings {
            [only] => Some(only),
            _ => base_files(),
        };
    }
    listings.first()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The bug of issue #19: the lock credited the usr-merge link /lib to alsa-topology-conf, the
    /// first package by name that lists /lib (as the directory its files are in).
    #[test]
    fn usr_merge_links_and_shared_directories_belong_to_no_package_on_the_real_host() {
        let host = HostFs::real();
        if !installed_versions(&host).contains_key("libc6") {
            eprintln!("SKIPPED: no dpkg database with libc6 on this host");
            return;
        }
        let asked = ["/lib", "/lib64", "/bin", "/usr/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu/libc.so.6"];
        let found = dpkg_packages(&host, &asked);
        let package = |path: &str| found.get(path).map(|answer| answer.split(' ').next().unwrap_or_default());
        for link in ["/lib", "/lib64", "/bin"] {
            assert!(
                matches!(package(link), None | Some("base-files")),
                "{link} is a usr-merge link: no package ships it as a symlink, got {found:?}"
            );
        }
        assert!(
            matches!(package("/usr/lib/x86_64-linux-gnu"), None | Some("base-files")),
            "a directory every library package lists is none of theirs: {found:?}"
        );
        assert_eq!(package("/usr/lib/x86_64-linux-gnu/libc.so.6"), Some("libc6"), "{found:?}");
    }

    fn listing(package: &str, lists_children: bool) -> Listing {
        Listing { package: package.into(), version: "1".into(), lists_children }
    }

    #[test]
    fn a_symlink_belongs_to_the_one_package_that_ships_it_as_a_link() {
        let listings = [listing("alsa-topology-conf", true), listing("libfoo", false), listing("zlib1g", true)];
        assert_eq!(owner(false, true, &listings).map(|owner| owner.package.as_str()), Some("libfoo"));
        assert!(owner(false, true, &[listing("a", true), listing("b", true)]).is_none());
        assert_eq!(owner(true, false, &[listing("a", true)]).map(|owner| owner.package.as_str()), Some("a"));
        let shared = [listing("a", true), listing("base-files", true)];
        assert_eq!(owner(true, false, &shared).map(|owner| owner.package.as_str()), Some("base-files"));
        assert_eq!(owner(false, false, &shared).map(|owner| owner.package.as_str()), Some("a"));
    }
}
