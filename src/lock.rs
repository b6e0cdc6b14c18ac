//! Jailfile.lock: the exact contents a Jailfile gives on this host, committed beside it, and the
//! host drift found against it.
//!
//! The lock is JSON with one entry per line, sorted by jail path, so a review diff shows one
//! line per changed path. It holds only what is the same on every host that gives the same files
//! (paths, kinds, sources, sizes, modes, blake3 content hashes, symlink text, sonames, who needed
//! them, dpkg package versions, a digest of the normalized Jailfile and a host fingerprint): no
//! timestamps, inode numbers or ctimes, so two runs on an unchanged host write the same bytes and
//! the lock can be committed and shared.
//!
//! Hashing every file on every plan would turn a no-op plan (a stat walk) into a read of the
//! whole jail. So a per-host accelerator lives outside the repository, in the state directory
//! (`--state-dir`), keyed by the lock's absolute path: for each host source its stat print
//! (size, mtime, ctime, inode) and blake3, and the key of the last (desired tree, lock file)
//! pair found fresh. A stat match means "hash unchanged"; anything else is re-hashed. The cache
//! is never trusted beyond that: when it is missing, foreign-owned or unreadable, everything is
//! hashed again.
#![allow(clippy::disallowed_methods)] // writes Jailfile.lock beside the Jailfile and the cache in the state dir: outside every jail

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use crate::closure::{Closure, EntryKind};
use crate::desired::{DesiredKind, DesiredNode, DesiredTree};
use crate::host::{HostFs, StatPrint};
use crate::spec::{FileSpec, HostSource, Spec};
use crate::tree::JailPath;

/// The lock format this jailprov writes and reads.
pub const LOCK_VERSION: u32 = 1;

/// The cache format (postcard, in the state directory).
const CACHE_VERSION: u32 = 2;

/// The content hash algorithm, as the lock and the drift lines name it.
pub const HASH_ALGORITHM: &str = "blake3";

/// Where the lock of a Jailfile lives: beside it, named after it (`Jailfile.toml` ->
/// `Jailfile.lock`, `web.toml` -> `web.lock`), so two Jailfiles in one directory never share one.
pub fn lock_path(jailfile: &Path) -> PathBuf {
    let stem = jailfile.file_stem().map_or_else(|| "Jailfile".into(), |stem| stem.to_string_lossy().into_owned());
    jailfile.with_file_name(format!("{stem}.lock"))
}

// ---------------------------------------------------------------------------------------------
// The lock file
// ---------------------------------------------------------------------------------------------

/// What identifies the host a lock was written on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFingerprint {
    /// os-release `ID`.
    pub os: String,
    /// os-release `VERSION_ID`.
    pub os_version: String,
    /// The glibc of the jail's libc.so.6 (its highest `GLIBC_x.y` version definition), or
    /// "none" for a jail without one.
    pub glibc: String,
    pub arch: String,
}

impl std::fmt::Display for HostFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}, glibc {}, {}", self.os, self.os_version, self.glibc, self.arch)
    }
}

/// One jail path as the host gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockEntry {
    pub path: String,
    /// The closure's kind: binary, library, interpreter, nss-module, file, symlink, dir, device,
    /// content, generated...
    pub kind: String,
    /// The host file it is copied from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Octal permission bits the jail gets (not for symlinks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// "uid:gid" when not root's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// "blake3:<hex>" of the whole content, for files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// A symlink's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// "c 1:3" for a character device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sonames: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needed_by: Vec<String>,
    /// "package version" from the dpkg database, for review; informational, never compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
}

/// A whole lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub version: u32,
    /// "blake3:<hex>" of the normalized Jailfile (see [`jailfile_digest`]).
    pub jailfile: String,
    pub host: HostFingerprint,
    pub entries: Vec<LockEntry>,
}

impl Lock {
    /// The lock as written: one line per entry, fields in a fixed order, a final newline.
    pub fn to_text(&self) -> Result<String> {
        // One buffer, sized once (a 50,000-path lock is over 10 MB), entries written into it.
        let mut text: Vec<u8> = Vec::with_capacity(256 + self.entries.len() * 320);
        text.extend_from_slice(b"{\n");
        let _ = writeln!(text, "  \"version\": {},", self.version);
        let _ = writeln!(text, "  \"jailfile\": {},", serde_json::to_string(&self.jailfile)?);
        let _ = writeln!(text, "  \"host\": {},", serde_json::to_string(&self.host)?);
        text.extend_from_slice(b"  \"entries\": [");
        for (index, entry) in self.entries.iter().enumerate() {
            text.extend_from_slice(if index == 0 { b"\n    " } else { b",\n    " });
            serde_json::to_writer(&mut text, entry)?;
        }
        text.extend_from_slice(if self.entries.is_empty() { b"]\n}\n" } else { b"\n  ]\n}\n" });
        String::from_utf8(text).context("the lock text is not UTF-8")
    }

    pub fn parse(text: &str, path: &Path) -> Result<Lock> {
        let lock: Lock = serde_json::from_str(text).with_context(|| {
            format!("{} is not a lock jailprov can read; fix it or delete it and run `jailprov lock`", path.display())
        })?;
        if lock.version != LOCK_VERSION {
            bail!("{} has lock version {}; this jailprov reads version {LOCK_VERSION}", path.display(), lock.version);
        }
        Ok(lock)
    }
}

// ---------------------------------------------------------------------------------------------
// The normalized Jailfile digest and the host fingerprint
// ---------------------------------------------------------------------------------------------

/// blake3 of the Jailfile's TOML value in a canonical form (keys sorted, no comments, no
/// whitespace, `\n` line endings inside strings as TOML itself reads them): CRLF, comments,
/// formatting and key order do not change it.
pub fn jailfile_digest(text: &str) -> Result<String> {
    let table: toml::Table = toml::from_str(text).context("the Jailfile is not valid TOML")?;
    let mut canonical = String::new();
    canonical_table(&table, &mut canonical);
    Ok(format!("{HASH_ALGORITHM}:{}", blake3::hash(canonical.as_bytes()).to_hex()))
}

fn canonical_table(table: &toml::Table, out: &mut String) {
    let sorted: BTreeMap<&String, &toml::Value> = table.iter().collect();
    out.push('{');
    for (key, value) in sorted {
        out.push_str(&serde_json::to_string(key).unwrap_or_default());
        out.push(':');
        canonical_value(value, out);
        out.push(',');
    }
    out.push('}');
}

fn canonical_value(value: &toml::Value, out: &mut String) {
    match value {
        toml::Value::String(text) => out.push_str(&serde_json::to_string(text).unwrap_or_default()),
        toml::Value::Integer(number) => {
            let _ = write!(out, "i{number}");
        }
        toml::Value::Float(number) => {
            let _ = write!(out, "f{:x}", number.to_bits());
        }
        toml::Value::Boolean(flag) => {
            let _ = write!(out, "{flag}");
        }
        toml::Value::Datetime(datetime) => {
            let _ = write!(out, "d{datetime}");
        }
        toml::Value::Array(items) => {
            out.push('[');
            for item in items {
                canonical_value(item, out);
                out.push(',');
            }
            out.push(']');
        }
        toml::Value::Table(table) => canonical_table(table, out),
    }
}

/// os-release, the glibc the jail gets, and the architecture. Nothing is executed: glibc's
/// version is the highest `GLIBC_x.y` version its libc.so.6 defines, read with goblin.
pub fn host_fingerprint(host: &HostFs, desired: &DesiredTree) -> HostFingerprint {
    let os_release = os_release(host);
    let field = |name: &str| {
        os_release
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
            .map(|value| value.trim().trim_matches('"').to_owned())
            .unwrap_or_else(|| "unknown".to_owned())
    };
    let glibc = desired
        .nodes
        .values()
        .find_map(|node| match &node.kind {
            DesiredKind::File { source, .. } if node.path.file_name() == "libc.so.6" => Some(source.clone()),
            _ => None,
        })
        .map_or_else(|| "none".to_owned(), |libc| glibc_version(host, &libc).unwrap_or_else(|| "unknown".to_owned()));
    HostFingerprint { os: field("ID"), os_version: field("VERSION_ID"), glibc, arch: std::env::consts::ARCH.to_owned() }
}

fn os_release(host: &HostFs) -> String {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|path| host.read(Path::new(path)).ok().and_then(|bytes| String::from_utf8(bytes).ok()))
        .unwrap_or_default()
}

/// The highest `GLIBC_x.y[.z]` version definition of a libc.so.6.
fn glibc_version(host: &HostFs, libc: &Path) -> Option<String> {
    let bytes = host.read(libc).ok()?;
    let elf = goblin::elf::Elf::parse(&bytes).ok()?;
    let verdef = elf.verdef.as_ref()?;
    let mut best: Option<(Vec<u32>, String)> = None;
    for definition in verdef.iter() {
        for aux in definition.iter() {
            let Some(name) = elf.dynstrtab.get_at(aux.vda_name) else { continue };
            let Some(version) = name.strip_prefix("GLIBC_") else { continue };
            let Ok(numbers) = version.split('.').map(str::parse::<u32>).collect::<Result<Vec<u32>, _>>() else {
                continue;
            };
            if best.as_ref().is_none_or(|(known, _)| numbers > *known) {
                best = Some((numbers, version.to_owned()));
            }
        }
    }
    best.map(|(_, version)| version)
}

// ---------------------------------------------------------------------------------------------
// What the closure knows that the desired tree does not
// ---------------------------------------------------------------------------------------------

/// The closure's kind, sonames and "needed by" of each path, kept before the desired tree takes
/// the closure apart. Plain `[[files]]` files and directories (possibly tens of thousands) are
/// left out: their kind follows from the desired tree and their reason is one Jailfile key.
#[derive(Debug, Clone, Default)]
pub struct ClosureFacts {
    facts: HashMap<JailPath, Facts>,
}

#[derive(Debug, Clone)]
struct Facts {
    kind: EntryKind,
    /// For symlinks: the link on the host.
    source: Option<String>,
    sonames: Vec<String>,
    needed_by: Vec<String>,
}

impl ClosureFacts {
    /// The facts of `closure`; a Jailfile key among the needers is named by what it declares
    /// (`binaries "bash"`, not `binaries[0]`), so that moving an entry within the Jailfile does
    /// not rewrite every line of the lock that it brings.
    pub fn of(closure: &Closure, spec: &Spec) -> ClosureFacts {
        let labels = declaration_labels(spec);
        let label = |needer: &String| labels.get(needer.as_str()).cloned().unwrap_or_else(|| needer.clone());
        let facts = closure
            .entries
            .values()
            .filter(|entry| !matches!(entry.kind, EntryKind::File | EntryKind::Dir))
            .map(|entry| {
                let facts = Facts {
                    kind: entry.kind,
                    source: match entry.kind {
                        EntryKind::Symlink => entry.source.as_ref().map(|source| source.to_string_lossy().into_owned()),
                        _ => None,
                    },
                    sonames: entry.sonames.iter().cloned().collect(),
                    needed_by: {
                        let mut needed_by: Vec<String> = entry.needed_by.iter().map(label).collect();
                        needed_by.sort();
                        needed_by.dedup();
                        needed_by
                    },
                };
                (entry.path.clone(), facts)
            })
            .collect();
        ClosureFacts { facts }
    }
}

/// Jailfile keys whose index shifts when entries move, named by what they declare instead.
fn declaration_labels(spec: &Spec) -> HashMap<&str, String> {
    let mut labels: HashMap<&str, String> = HashMap::default();
    for binary in &spec.binaries {
        labels.insert(&binary.key, format!("binaries {:?}", binary.declared));
    }
    for device in &spec.devices {
        labels.insert(&device.key, format!("devices {:?}", device.path.as_str()));
    }
    for file in &spec.files {
        match file {
            FileSpec::Host { key, source: HostSource::Path(path), .. } => {
                labels.insert(key, format!("files {:?}", path.display().to_string()));
            }
            FileSpec::Host { key, source: HostSource::Glob { pattern, .. }, .. } => {
                labels.insert(key, format!("files {pattern:?}"));
            }
            FileSpec::Inline { key, path, .. } => {
                labels.insert(key, format!("files {:?}", path.as_str()));
            }
        }
    }
    labels
}

// ---------------------------------------------------------------------------------------------
// The per-host hash cache (state directory)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Serialize, Deserialize)]
struct HashCache {
    version: u32,
    /// The key of the last (desired tree, lock file, Jailfile, os-release) found fresh.
    fresh: Option<[u8; 32]>,
    /// Host source -> its stat print and blake3 when it was hashed.
    files: HashMap<String, (StatPrint, [u8; 32])>,
    /// Packages found (or not) for host sources, valid while the dpkg database is unchanged.
    packages: PackageCache,
}

/// Answers of the dpkg database, keyed by the stat prints of its status file and info
/// directory: reading hundreds of list files again to learn that a file no package ships is
/// still in none costs more than the rest of a lock refresh.
#[derive(Debug, Default, Serialize, Deserialize)]
struct PackageCache {
    database: Option<(StatPrint, StatPrint)>,
    /// Source -> "package version", or None when no package lists it.
    found: HashMap<String, Option<String>>,
}

/// The stat prints that change whenever dpkg installs, upgrades or removes a package.
fn dpkg_database_print(host: &HostFs) -> Option<(StatPrint, StatPrint)> {
    let status = fs::metadata(host.disk_path(Path::new("/var/lib/dpkg/status"))).ok()?;
    let info = fs::metadata(host.disk_path(Path::new("/var/lib/dpkg/info"))).ok()?;
    Some((StatPrint::of(&status), StatPrint::of(&info)))
}

fn cache_path(state_dir: &Path, lock: &Path) -> PathBuf {
    let absolute = std::path::absolute(lock).unwrap_or_else(|_| lock.to_path_buf());
    let text = absolute.to_string_lossy();
    let readable: String =
        text.trim_matches('/').chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' }).collect();
    let key = blake3::hash(text.as_bytes()).to_hex();
    state_dir.join("lock-cache").join(format!("{readable}-{}.cache", &key[..16]))
}

/// The cache, or an empty one when it is missing, unreadable, or writable by anyone but us (a
/// forged cache could hide host drift).
fn load_cache(path: &Path) -> HashCache {
    let trusted = fs::symlink_metadata(path).is_ok_and(|metadata| {
        metadata.is_file() && metadata.uid() == nix::unistd::geteuid().as_raw() && metadata.mode() & 0o022 == 0
    });
    let cache = trusted.then(|| fs::read(path).ok()).flatten().and_then(|bytes| postcard::from_bytes(&bytes).ok());
    match cache {
        Some(cache @ HashCache { version: CACHE_VERSION, .. }) => cache,
        _ => HashCache { version: CACHE_VERSION, ..HashCache::default() },
    }
}

/// Only the "fresh" key of a trusted cache (postcard keeps fields in order: the version and the
/// key lead), so the no-op path does not decode tens of thousands of file hashes.
fn peek_fresh(path: &Path) -> Option<[u8; 32]> {
    let metadata = fs::symlink_metadata(path).ok()?;
    if !metadata.is_file() || metadata.uid() != nix::unistd::geteuid().as_raw() || metadata.mode() & 0o022 != 0 {
        return None;
    }
    let mut head = Vec::with_capacity(64);
    fs::File::open(path).ok()?.take(64).read_to_end(&mut head).ok()?;
    let ((version, fresh), _) = postcard::take_from_bytes::<(u32, Option<[u8; 32]>)>(&head).ok()?;
    (version == CACHE_VERSION).then_some(fresh).flatten()
}

/// Saves the cache; failing only warns (a plan by a user who cannot write the state directory
/// still works, just slower next time).
fn save_cache(path: &Path, cache: &HashCache) {
    let result = (|| -> Result<()> {
        let dir = path.parent().context("the cache path has a parent")?;
        if !dir.exists() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        let bytes = postcard::to_stdvec(cache).context("serializing the hash cache")?;
        write_atomically(path, &bytes, 0o600)
    })();
    if let Err(error) = result {
        eprintln!("warning: cannot save the lock's hash cache ({error:#}); the next plan hashes host files again");
    }
}

/// Writes through a temporary file in the same directory and a rename: never a half-written file.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let name = path.file_name().context("a file name")?.to_string_lossy().into_owned();
    let temporary = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode_of(mode)
        .open(&temporary)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    fs::rename(&temporary, path).with_context(|| format!("cannot move {} into place", path.display()))
}

trait OpenMode {
    fn mode_of(&mut self, mode: u32) -> &mut Self;
}

impl OpenMode for fs::OpenOptions {
    fn mode_of(&mut self, mode: u32) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, mode)
    }
}

// ---------------------------------------------------------------------------------------------
// Building the lock of what the host gives now
// ---------------------------------------------------------------------------------------------

/// blake3 of a whole file.
pub fn hash_reader(reader: &mut dyn Read) -> std::io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            return Ok(*hasher.finalize().as_bytes());
        }
        hasher.update(&buffer[..read]);
    }
}

pub fn hash_text(hash: &[u8; 32]) -> String {
    format!("{HASH_ALGORITHM}:{}", blake3::Hash::from_bytes(*hash).to_hex())
}

/// The hash of every host source, from the cache where the stat still matches, read otherwise
/// (in parallel). The cache is updated in place.
fn source_hashes(desired: &DesiredTree, host: &HostFs, cache: &mut HashCache) -> Result<HashMap<String, [u8; 32]>> {
    let mut known = HashMap::default();
    let mut missing: Vec<(String, PathBuf, StatPrint)> = Vec::new();
    for node in desired.nodes.values() {
        if let DesiredKind::File { source, source_print } = &node.kind {
            let key = source.to_string_lossy().into_owned();
            match cache.files.get(&key) {
                Some((print, hash)) if print == source_print => {
                    known.insert(key, *hash);
                }
                _ => missing.push((key, source.clone(), *source_print)),
            }
        }
    }
    let hashed: Vec<Result<(String, StatPrint, [u8; 32])>> = missing
        .into_par_iter()
        .map(|(key, source, print)| {
            let mut file =
                host.open(&source).with_context(|| format!("cannot read {} on the host", source.display()))?;
            let hash = hash_reader(&mut file).with_context(|| format!("cannot read {}", source.display()))?;
            // The stat is the one the desired tree saw: if the file changed since, the next run
            // sees another stat and hashes it again.
            Ok((key, print, hash))
        })
        .collect();
    for result in hashed {
        let (key, print, hash) = result?;
        cache.files.insert(key.clone(), (print, hash));
        known.insert(key, hash);
    }
    // Forget sources this jail no longer has, so the cache does not grow without end.
    cache.files.retain(|key, _| known.contains_key(key));
    Ok(known)
}

fn entry_of(node: &DesiredNode, facts: &ClosureFacts, hashes: &HashMap<String, [u8; 32]>) -> LockEntry {
    let known = facts.facts.get(&node.path);
    let kind = match (known, &node.kind) {
        (Some(facts), _) => facts.kind.label(),
        (None, DesiredKind::File { .. }) => EntryKind::File.label(),
        (None, DesiredKind::Content { .. }) => EntryKind::Content.label(),
        (None, DesiredKind::Dir) => EntryKind::Dir.label(),
        (None, DesiredKind::Symlink { .. }) => EntryKind::Symlink.label(),
        (None, DesiredKind::Device { .. }) => EntryKind::Device.label(),
    };
    let mut entry = LockEntry {
        path: node.path.as_str().to_owned(),
        kind: kind.to_owned(),
        source: None,
        size: None,
        mode: None,
        owner: None,
        hash: None,
        target: None,
        device: None,
        sonames: known.map(|facts| facts.sonames.clone()).unwrap_or_default(),
        needed_by: known.map(|facts| facts.needed_by.clone()).unwrap_or_default(),
        package: None,
    };
    if !matches!(node.kind, DesiredKind::Symlink { .. }) {
        entry.mode = Some(format!("{:04o}", node.mode));
        if (node.uid, node.gid) != (0, 0) {
            entry.owner = Some(format!("{}:{}", node.uid, node.gid));
        }
    }
    match &node.kind {
        DesiredKind::File { source, source_print } => {
            let key = source.to_string_lossy().into_owned();
            entry.source = Some(key.clone());
            entry.size = Some(source_print.size);
            entry.hash = hashes.get(&key).map(hash_text);
        }
        DesiredKind::Content { bytes } => {
            entry.size = Some(bytes.len() as u64);
            entry.hash = Some(hash_text(blake3::hash(bytes).as_bytes()));
        }
        DesiredKind::Symlink { target } => {
            entry.source = known.and_then(|facts| facts.source.clone());
            entry.target = Some(target.clone());
        }
        DesiredKind::Device { block, rdev } => {
            let letter = if *block { 'b' } else { 'c' };
            entry.device = Some(format!("{letter} {}:{}", nix::sys::stat::major(*rdev), nix::sys::stat::minor(*rdev)));
        }
        DesiredKind::Dir => {}
    }
    entry
}

/// A host source and what the lock says it holds (hash, symlink text).
type ContentKey<'a> = (&'a str, Option<&'a str>, Option<&'a str>);

/// Package versions from the dpkg database (`/var/lib/dpkg/status` and `info/*.list`), read,
/// never run. Empty where there is no dpkg.
fn dpkg_packages(host: &HostFs, paths: &[&str]) -> HashMap<String, String> {
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
    // Debian 12 packages still name /lib/... where the file is reached as /usr/lib/...
    let mut wanted: HashMap<String, &str> = HashMap::default();
    for path in paths {
        wanted.insert((*path).to_owned(), path);
        if let Some(rest) = path.strip_prefix("/usr") {
            if ["/lib", "/bin", "/sbin", "/lib64", "/lib32"].iter().any(|dir| rest.starts_with(&format!("{dir}/"))) {
                wanted.insert(rest.to_owned(), path);
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
                .filter_map(|line| wanted.get(line).map(|path| ((*path).to_owned(), format!("{package} {version}"))))
                .collect()
        })
        .collect();
    for (path, package) in per_list.into_iter().flatten() {
        found.entry(path).or_insert(package);
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Comparing: what changed since the lock
// ---------------------------------------------------------------------------------------------

/// One path whose entry differs (None: absent on that side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub path: String,
    pub old: Option<LockEntry>,
    pub new: Option<LockEntry>,
}

/// A difference the host caused (not the Jailfile), as plan shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub path: String,
    pub what: String,
}

impl Drift {
    pub fn line(&self) -> String {
        format!("host drift: {}  {}", self.path, self.what)
    }
}

/// Everything that differs between a lock and what the host gives now.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    pub jailfile: Option<(String, String)>,
    pub host: Option<(HostFingerprint, HostFingerprint)>,
    pub entries: Vec<Difference>,
}

impl Comparison {
    pub fn is_empty(&self) -> bool {
        self.jailfile.is_none() && self.host.is_none() && self.entries.is_empty()
    }

    /// The differences the host caused. With the Jailfile unchanged, every entry difference; when
    /// it was edited, only paths present on both sides, copied from the same host source, whose
    /// host facts (content, size, target, sonames) changed: added and removed paths, inline and
    /// generated files are then the edit's.
    pub fn host_drift(&self) -> Vec<Drift> {
        let mut drift = Vec::new();
        if let Some((old, new)) = &self.host {
            drift.push(Drift { path: "(host)".to_owned(), what: format!("{old} → {new}") });
        }
        for difference in &self.entries {
            let by_host = match (&difference.old, &difference.new) {
                _ if self.jailfile.is_none() => true,
                (Some(old), Some(new)) => {
                    old.kind == new.kind
                        && old.source.is_some()
                        && old.source == new.source
                        && (old.hash != new.hash
                            || old.size != new.size
                            || old.target != new.target
                            || old.sonames != new.sonames)
                }
                _ => false,
            };
            if by_host {
                drift.push(Drift { path: difference.path.clone(), what: describe(difference) });
            }
        }
        drift
    }

    /// Every difference, one line each (for `--locked` errors).
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some((old, new)) = &self.jailfile {
            lines.push(format!("the Jailfile changed since the lock ({} → {})", short(old), short(new)));
        }
        if let Some((old, new)) = &self.host {
            lines.push(format!("the host is {new}, the lock was written on {old}"));
        }
        lines.extend(self.entries.iter().map(|difference| format!("{}  {}", difference.path, describe(difference))));
        lines
    }
}

fn compare(old: &Lock, new: &Lock) -> Comparison {
    let mut comparison = Comparison {
        jailfile: (old.jailfile != new.jailfile).then(|| (old.jailfile.clone(), new.jailfile.clone())),
        host: (old.host != new.host).then(|| (old.host.clone(), new.host.clone())),
        entries: Vec::new(),
    };
    let mut olds = old.entries.iter().peekable();
    let mut news = new.entries.iter().peekable();
    loop {
        let order = match (olds.peek(), news.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(old), Some(new)) => old.path.cmp(&new.path),
        };
        let (old, new) = match order {
            std::cmp::Ordering::Less => (olds.next(), None),
            std::cmp::Ordering::Greater => (None, news.next()),
            std::cmp::Ordering::Equal => (olds.next(), news.next()),
        };
        let same = match (old, new) {
            (Some(old), Some(new)) => {
                LockEntry { package: None, ..old.clone() } == LockEntry { package: None, ..new.clone() }
            }
            _ => false,
        };
        if !same {
            let path = old.or(new).map(|entry| entry.path.clone()).unwrap_or_default();
            comparison.entries.push(Difference { path, old: old.cloned(), new: new.cloned() });
        }
    }
    comparison
}

/// A hash or digest shortened for people: "blake3 a1b2c3d4…".
fn short(hash: &str) -> String {
    match hash.split_once(':') {
        Some((algorithm, hex)) => format!("{algorithm} {}…", &hex[..hex.len().min(8)]),
        None => hash.to_owned(),
    }
}

/// What an entry is, briefly: its hash, link text, device or kind.
fn summary_of(entry: &LockEntry) -> String {
    if let Some(hash) = &entry.hash {
        format!("{} {}", entry.kind, short(hash))
    } else if let Some(target) = &entry.target {
        format!("symlink -> {target}")
    } else if let Some(device) = &entry.device {
        format!("device {device}")
    } else {
        entry.kind.clone()
    }
}

/// "blake3 a1b2… → c3d4…, size 1.2 KiB → 1.3 KiB", "∅ → library blake3 c3d4…".
fn describe(difference: &Difference) -> String {
    let (old, new) = match (&difference.old, &difference.new) {
        (None, Some(new)) => return format!("∅ → {}", summary_of(new)),
        (Some(old), None) => return format!("{} → ∅", summary_of(old)),
        (Some(old), Some(new)) => (old, new),
        (None, None) => return String::new(),
    };
    let mut parts = Vec::new();
    if old.kind != new.kind {
        parts.push(format!("kind {} → {}", old.kind, new.kind));
    }
    if old.source != new.source {
        parts.push(format!("source {} → {}", or_none(&old.source), or_none(&new.source)));
    }
    if old.hash != new.hash {
        let algorithm = new
            .hash
            .as_deref()
            .or(old.hash.as_deref())
            .and_then(|hash| hash.split_once(':'))
            .map_or(HASH_ALGORITHM, |(algorithm, _)| algorithm);
        let hex = |hash: &Option<String>| {
            hash.as_deref().map_or("∅".to_owned(), |hash| {
                let hex = hash.split_once(':').map_or(hash, |(_, hex)| hex);
                format!("{}…", &hex[..hex.len().min(8)])
            })
        };
        parts.push(format!("{algorithm} {} → {}", hex(&old.hash), hex(&new.hash)));
    }
    if let (Some(left), Some(right)) = (&old.package, &new.package) {
        if left != right {
            parts.push(format!("{left} → {right}"));
        }
    }
    if old.size != new.size {
        let size = |size: Option<u64>| size.map_or("∅".to_owned(), human_size);
        parts.push(format!("size {} → {}", size(old.size), size(new.size)));
    }
    if old.target != new.target {
        parts.push(format!("target {} → {}", or_none(&old.target), or_none(&new.target)));
    }
    if old.mode != new.mode {
        parts.push(format!("mode {} → {}", or_none(&old.mode), or_none(&new.mode)));
    }
    if old.owner != new.owner {
        parts.push(format!(
            "owner {} → {}",
            old.owner.as_deref().unwrap_or("0:0"),
            new.owner.as_deref().unwrap_or("0:0")
        ));
    }
    if old.device != new.device {
        parts.push(format!("device {} → {}", or_none(&old.device), or_none(&new.device)));
    }
    if old.sonames != new.sonames {
        parts.push(format!("sonames {}", set_change(&old.sonames, &new.sonames)));
    }
    if old.needed_by != new.needed_by {
        parts.push(format!("needed by {}", set_change(&old.needed_by, &new.needed_by)));
    }
    parts.join(", ")
}

fn or_none(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("∅")
}

/// What a list gained and lost: "+/usr/bin/head -/usr/bin/cat" (the unchanged members would
/// bury the change).
fn set_change(old: &[String], new: &[String]) -> String {
    let added = new.iter().filter(|value| !old.contains(value)).map(|value| format!("+{value}"));
    let removed = old.iter().filter(|value| !new.contains(value)).map(|value| format!("-{value}"));
    let change: Vec<String> = added.chain(removed).collect();
    if change.is_empty() {
        // Same members, another order.
        format!("{} → {}", list_or_none(old), list_or_none(new))
    } else {
        change.join(" ")
    }
}

fn list_or_none(values: &[String]) -> String {
    if values.is_empty() {
        "∅".to_owned()
    } else {
        values.join(" ")
    }
}

/// 1024-based, one decimal, as `nix store diff-closures` prints sizes: "512 B", "12.6 KiB".
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn signed_size(delta: i128) -> String {
    let sign = if delta < 0 { '-' } else { '+' };
    format!("{sign}{}", human_size(u64::try_from(delta.unsigned_abs()).unwrap_or(u64::MAX)))
}

/// `jailprov lock`'s report, in the style of `nix store diff-closures`: one line per changed
/// path, libraries by file name with their package versions ("libssl.so.3: 3.0.15 → 3.0.17,
/// +12.6 KiB"), other paths by jail path with a hash prefix where no version is known, `∅` for
/// added or removed.
pub fn diff_closures_text(comparison: &Comparison) -> String {
    let mut text = String::new();
    if let Some((old, new)) = &comparison.jailfile {
        let _ = writeln!(text, "Jailfile: {} → {}", short(old), short(new));
    }
    if let Some((old, new)) = &comparison.host {
        let _ = writeln!(text, "host: {old} → {new}");
    }
    for difference in &comparison.entries {
        let _ = writeln!(text, "{}", diff_closures_line(difference));
    }
    text
}

fn diff_closures_line(difference: &Difference) -> String {
    let any = difference.new.as_ref().or(difference.old.as_ref()).expect("a difference has at least one side");
    let is_library = matches!(any.kind.as_str(), "library" | "interpreter" | "nss-module");
    let name = if is_library {
        // By soname, as the loader asks for it ("libtinfo.so.6", not "libtinfo.so.6.4").
        any.sonames
            .first()
            .cloned()
            .unwrap_or_else(|| difference.path.rsplit('/').next().unwrap_or(&difference.path).to_owned())
    } else {
        difference.path.clone()
    };
    let version_of = |entry: &LockEntry| {
        entry.package.as_deref().and_then(|package| package.split_once(' ')).map(|(_, version)| version.to_owned())
    };
    let hash_of = |entry: &LockEntry| entry.hash.as_deref().map(short).unwrap_or_else(|| summary_of(entry));
    let (old, new) = (difference.old.as_ref(), difference.new.as_ref());
    let (left, right) = match (old, new) {
        (Some(old), Some(new)) => match (version_of(old), version_of(new)) {
            (Some(left), Some(right)) if left != right => (left, right),
            _ if old.hash != new.hash => (hash_of(old), hash_of(new)),
            _ => (String::new(), describe(difference)),
        },
        (None, Some(new)) => ("∅".to_owned(), version_of(new).unwrap_or_else(|| hash_of(new))),
        (Some(old), None) => (version_of(old).unwrap_or_else(|| hash_of(old)), "∅".to_owned()),
        (None, None) => (String::new(), String::new()),
    };
    let mut line = if left.is_empty() { format!("{name}: {right}") } else { format!("{name}: {left} → {right}") };
    let size = |entry: Option<&LockEntry>| i128::from(entry.and_then(|entry| entry.size).unwrap_or(0));
    let delta = size(new) - size(old);
    if delta != 0 {
        let _ = write!(line, ", {}", signed_size(delta));
    }
    line
}

// ---------------------------------------------------------------------------------------------
// Reviewing the lock during plan, apply and `jailprov lock`
// ---------------------------------------------------------------------------------------------

/// What plan and apply have at hand.
pub struct Inputs<'a> {
    pub jailfile: &'a Path,
    pub desired: &'a DesiredTree,
    pub facts: &'a ClosureFacts,
    pub host: &'a HostFs,
    pub state_dir: &'a Path,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// plan and apply: write the lock when it is missing or stale.
    Refresh,
    /// `--locked`: any difference is an error; nothing is written.
    Locked,
    /// `jailprov lock`: recompute everything (no fast path), write when anything differs.
    Deliberate,
}

/// What a review found and did.
#[derive(Debug, Clone)]
pub struct Review {
    pub lock_path: PathBuf,
    /// The lock existed before (so the comparison means something).
    pub existed: bool,
    pub comparison: Comparison,
    /// The lock was (re)written.
    pub wrote: bool,
    pub entries: usize,
}

impl Review {
    pub fn host_drift(&self) -> Vec<Drift> {
        if self.existed {
            self.comparison.host_drift()
        } else {
            Vec::new()
        }
    }
}

/// Compares the lock with what the host gives now, writes it when missing or stale (in
/// `Refresh` and `Deliberate` modes), refuses any difference in `Locked` mode.
pub fn review(inputs: &Inputs, mode: Mode) -> Result<Review> {
    let lock_path = lock_path(inputs.jailfile);
    let source =
        fs::read_to_string(inputs.jailfile).with_context(|| format!("cannot read {}", inputs.jailfile.display()))?;
    let jailfile = jailfile_digest(&source)?;
    let cache_file = cache_path(inputs.state_dir, &lock_path);
    let lock_stat = fs::metadata(&lock_path).ok().map(|metadata| StatPrint::of(&metadata));
    let fresh_key = fresh_key(inputs, &jailfile, lock_stat);
    let unchanged = Review {
        lock_path: lock_path.clone(),
        existed: true,
        comparison: Comparison::default(),
        wrote: false,
        entries: 0,
    };
    if mode != Mode::Deliberate && lock_stat.is_some() && peek_fresh(&cache_file) == Some(fresh_key) {
        return Ok(unchanged);
    }
    let mut cache = {
        let _t = crate::timings::phase("lock: cache load");
        load_cache(&cache_file)
    };
    let _t = crate::timings::phase("lock: old lock parse");

    let old = match fs::read_to_string(&lock_path) {
        Ok(text) => Some(Lock::parse(&text, &lock_path)?),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", lock_path.display())),
    };
    if old.is_none() && mode == Mode::Locked {
        bail!(
            "--locked: {} does not exist; run `jailprov lock -f {}` and commit it",
            lock_path.display(),
            inputs.jailfile.display()
        );
    }
    drop(_t);
    let _t = crate::timings::phase("lock: hashes, entries, compare");
    let hashes = source_hashes(inputs.desired, inputs.host, &mut cache)?;
    let mut new = Lock {
        version: LOCK_VERSION,
        jailfile,
        host: host_fingerprint(inputs.host, inputs.desired),
        entries: inputs.desired.nodes.values().map(|node| entry_of(node, inputs.facts, &hashes)).collect(),
    };
    let comparison = match &old {
        Some(old) => compare(old, &new),
        None => Comparison::default(),
    };
    let entries = new.entries.len();
    if old.is_some() && comparison.is_empty() {
        cache.fresh = Some(fresh_key);
        save_cache(&cache_file, &cache);
        return Ok(Review { comparison, entries, ..unchanged });
    }
    if mode == Mode::Locked {
        // The cache still learned the hashes; it never vouches for a stale lock.
        cache.fresh = None;
        save_cache(&cache_file, &cache);
        bail!(
            "--locked: what the host gives differs from {}; nothing was changed:\n  {}\nrun `jailprov lock` to accept it, review and commit the lock",
            lock_path.display(),
            comparison.lines().join("\n  ")
        );
    }
    // A file the old lock already had, from the same source with the same content, keeps the
    // package it was found in; the dpkg database (hundreds of list files) is searched only for
    // the rest, and not at all when there is no rest.
    drop(_t);
    let _t = crate::timings::phase("lock: packages");
    let known: HashMap<ContentKey, Option<&String>> = old
        .iter()
        .flat_map(|old| &old.entries)
        .filter_map(|entry| {
            let source = entry.source.as_deref()?;
            Some(((source, entry.hash.as_deref(), entry.target.as_deref()), entry.package.as_ref()))
        })
        .collect();
    let mut unknown: Vec<&str> = Vec::new();
    let mut reused: Vec<Option<Option<String>>> = Vec::with_capacity(new.entries.len());
    for entry in &new.entries {
        let key = entry.source.as_deref().map(|source| (source, entry.hash.as_deref(), entry.target.as_deref()));
        match key.and_then(|key| known.get(&key)) {
            Some(package) => reused.push(Some(package.cloned())),
            None => {
                reused.push(None);
                unknown.extend(entry.source.as_deref());
            }
        }
    }
    let database = dpkg_database_print(inputs.host);
    if cache.packages.database != database || database.is_none() {
        cache.packages = PackageCache { database, found: HashMap::default() };
    }
    unknown.retain(|source| !cache.packages.found.contains_key(*source));
    if !unknown.is_empty() {
        let mut found = dpkg_packages(inputs.host, &unknown);
        for source in &unknown {
            cache.packages.found.insert((*source).to_owned(), found.remove(*source));
        }
    }
    let packages = &cache.packages.found;
    for (entry, reused) in new.entries.iter_mut().zip(reused) {
        entry.package = match reused {
            Some(package) => package,
            None => entry.source.as_ref().and_then(|source| packages.get(source)).cloned().flatten(),
        };
    }
    // Compared again now that the new side has its package versions, for `jailprov lock`'s
    // "3.0.15 → 3.0.17" lines (packages never make a difference by themselves).
    let reported = match &old {
        Some(old) => compare(old, &new),
        None => comparison,
    };
    drop(_t);
    let _t = crate::timings::phase("lock: write lock and cache");
    let text = new.to_text()?;
    if let Err(error) = write_atomically(&lock_path, text.as_bytes(), 0o644) {
        // plan and apply still work from a read-only checkout; `jailprov lock` must write.
        if mode == Mode::Deliberate {
            return Err(error);
        }
        eprintln!("warning: {error:#}; {} stays as it was", lock_path.display());
        save_cache(&cache_file, &cache);
        return Ok(Review { lock_path, existed: old.is_some(), comparison: reported, wrote: false, entries });
    }
    let lock_stat = fs::metadata(&lock_path).ok().map(|metadata| StatPrint::of(&metadata));
    cache.fresh = Some(self::fresh_key(inputs, &new.jailfile, lock_stat));
    save_cache(&cache_file, &cache);
    Ok(Review { lock_path, existed: old.is_some(), comparison: reported, wrote: true, entries })
}

/// The key of "this lock file was found fresh for this desired tree": the desired tree (host
/// sources by stat print), the lock file's stat print, the normalized Jailfile, os-release and
/// the architecture. glibc's version is covered by libc.so.6's stat print in the desired tree.
fn fresh_key(inputs: &Inputs, jailfile: &str, lock_stat: Option<StatPrint>) -> [u8; 32] {
    // Raw bytes gathered in one buffer and hashed once (many tiny hasher updates cost more):
    // this runs on every no-op plan, over every path of the jail.
    let mut bytes: Vec<u8> = Vec::with_capacity(inputs.desired.nodes.len() * 96);
    for node in inputs.desired.nodes.values() {
        bytes.extend_from_slice(node.path.as_str().as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&node.mode.to_le_bytes());
        bytes.extend_from_slice(&node.uid.to_le_bytes());
        bytes.extend_from_slice(&node.gid.to_le_bytes());
        match &node.kind {
            DesiredKind::File { source, source_print } => {
                bytes.extend_from_slice(b"f");
                bytes.extend_from_slice(source.as_os_str().as_encoded_bytes());
                bytes.push(0);
                bytes.extend_from_slice(&source_print.size.to_le_bytes());
                bytes.extend_from_slice(&source_print.mtime_ns.to_le_bytes());
                bytes.extend_from_slice(&source_print.ctime_ns.to_le_bytes());
                bytes.extend_from_slice(&source_print.ino.to_le_bytes());
            }
            DesiredKind::Content { bytes: content } => {
                bytes.extend_from_slice(b"c");
                bytes.extend_from_slice(&(content.len() as u64).to_le_bytes());
                bytes.extend_from_slice(content);
            }
            DesiredKind::Dir => {
                bytes.extend_from_slice(b"d");
            }
            DesiredKind::Symlink { target } => {
                bytes.extend_from_slice(b"l");
                bytes.extend_from_slice(target.as_bytes());
                bytes.push(0);
            }
            DesiredKind::Device { block, rdev } => {
                bytes.extend_from_slice(if *block { b"b" } else { b"v" });
                bytes.extend_from_slice(&rdev.to_le_bytes());
            }
        }
    }
    bytes.extend_from_slice(format!("{lock_stat:?}").as_bytes());
    bytes.extend_from_slice(jailfile.as_bytes());
    bytes.extend_from_slice(os_release(inputs.host).as_bytes());
    bytes.extend_from_slice(std::env::consts::ARCH.as_bytes());
    bytes.extend_from_slice(format!("{LOCK_VERSION}").as_bytes());
    *blake3::hash(&bytes).as_bytes()
}

// ---------------------------------------------------------------------------------------------
// Output for plan
// ---------------------------------------------------------------------------------------------

/// The plan's "host drift" section (empty when there is none), shown before the jail changes.
pub fn drift_text(review: &Review) -> String {
    let drift = review.host_drift();
    let mut text = String::new();
    if drift.is_empty() {
        return text;
    }
    let name = review.lock_path.file_name().map_or_else(String::new, |name| name.to_string_lossy().into_owned());
    let _ = writeln!(text, "The host no longer gives what {name} records:\n");
    for item in &drift {
        let _ = writeln!(text, "  {}", item.line());
    }
    if review.wrote {
        let _ = writeln!(text, "\n{name} was updated: review it (git diff) and commit it; `--locked` refuses drift.");
    }
    text.push('\n');
    text
}

/// The plan JSON with `"host_drift": [{"path","what"}...]` added.
pub fn plan_json_with_drift(plan_json: &str, review: &Review) -> Result<String> {
    let mut value: serde_json::Value = serde_json::from_str(plan_json).context("re-reading the plan JSON")?;
    if let Some(fields) = value.as_object_mut() {
        fields.insert("host_drift".into(), serde_json::to_value(review.host_drift())?);
    }
    let mut text = serde_json::to_string_pretty(&value)?;
    text.push('\n');
    Ok(text)
}

/// A line on stderr when plan or apply wrote the lock.
pub fn note(review: &Review) {
    if review.wrote {
        let verb = if review.existed { "updated" } else { "wrote" };
        eprintln!("jailprov: {verb} {} ({} entries)", review.lock_path.display(), review.entries);
    }
}

// ---------------------------------------------------------------------------------------------
// `jailprov lock`
// ---------------------------------------------------------------------------------------------

/// The desired tree of a Jailfile and the closure facts the lock needs.
pub fn desired_with_facts(spec: &crate::spec::Spec, host: &HostFs) -> Result<(DesiredTree, ClosureFacts)> {
    let closure = {
        let _t = crate::timings::phase("closure compute");
        crate::closure::compute(spec, host)?
    };
    let facts = {
        let _t = crate::timings::phase("closure facts");
        ClosureFacts::of(&closure, spec)
    };
    let _t = crate::timings::phase("desired build");
    Ok((crate::desired::build(closure, host)?, facts))
}

pub fn command(args: &crate::cli::LockArgs) -> Result<ExitCode> {
    let host = HostFs::real();
    let spec = crate::spec::load(&args.jailfile.file, args.jailfile.root.as_deref(), &host)?;
    let (desired, facts) = desired_with_facts(&spec, &host)?;
    let inputs = Inputs {
        jailfile: &args.jailfile.file,
        desired: &desired,
        facts: &facts,
        host: &host,
        state_dir: &args.state.state_dir,
    };
    let review = review(&inputs, Mode::Deliberate)?;
    let name = review.lock_path.display();
    let text = if !review.existed {
        format!("Wrote {name}: {} entries.\n", review.entries)
    } else if !review.wrote {
        format!("{name} is up to date ({} entries).\n", review.entries)
    } else {
        format!("{}\nUpdated {name}.\n", diff_closures_text(&review.comparison))
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysroot with a two-package dpkg database: libfoo1 installed (listing its library under
    /// /lib, as Debian 12 packages still do), bar only configured-away.
    fn dpkg_sysroot() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        let dpkg = root.path().join("var/lib/dpkg");
        fs::create_dir_all(dpkg.join("info")).expect("mkdir");
        fs::write(
            dpkg.join("status"),
            "Package: libfoo1\nStatus: install ok installed\nVersion: 1.2-3\n\n\
             Package: bar\nStatus: deinstall ok config-files\nVersion: 9\n",
        )
        .expect("status");
        fs::write(dpkg.join("info/libfoo1:amd64.list"), "/.\n/lib/x86_64-linux-gnu/libfoo.so.1\n").expect("list");
        fs::write(dpkg.join("info/bar.list"), "/usr/bin/bar\n").expect("list");
        root
    }

    #[test]
    fn needers_are_named_by_what_they_declare_and_changes_by_what_moved() {
        let jailfile = tempfile::NamedTempFile::new().expect("tempfile");
        fs::write(
            jailfile.path(),
            "root = \"/srv/jails/labels\"\nbinaries = [\"ls\", \"cat\"]\ndevices = [\"/dev/null\"]\n\
             [[files]]\npath = \"/etc/motd\"\ncontent = \"hi\\n\"\n",
        )
        .expect("write");
        let spec = crate::spec::load(jailfile.path(), None, &HostFs::real()).expect("a valid Jailfile");
        let labels = declaration_labels(&spec);
        assert_eq!(labels.get("binaries[1]").map(String::as_str), Some("binaries \"cat\""));
        assert_eq!(labels.get("devices[0]").map(String::as_str), Some("devices \"/dev/null\""));
        assert_eq!(labels.get("files[0]").map(String::as_str), Some("files \"/etc/motd\""));
        let list = |items: &[&str]| items.iter().map(|item| (*item).to_owned()).collect::<Vec<_>>();
        assert_eq!(set_change(&list(&["/usr/bin/ls"]), &list(&["/usr/bin/head", "/usr/bin/ls"])), "+/usr/bin/head");
        assert_eq!(set_change(&list(&["a", "b"]), &list(&["b", "c"])), "+c -a");
    }

    #[test]
    fn packages_come_from_the_dpkg_lists_of_installed_packages_only() {
        let root = dpkg_sysroot();
        let host = HostFs::new(root.path());
        let found = dpkg_packages(&host, &["/usr/lib/x86_64-linux-gnu/libfoo.so.1", "/usr/bin/bar", "/etc/motd"]);
        assert_eq!(found.get("/usr/lib/x86_64-linux-gnu/libfoo.so.1").map(String::as_str), Some("libfoo1 1.2-3"));
        assert_eq!(found.get("/usr/bin/bar"), None, "bar is not installed");
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn the_package_cache_key_moves_when_dpkg_installs_something() {
        let root = dpkg_sysroot();
        let host = HostFs::new(root.path());
        let before = dpkg_database_print(&host).expect("a dpkg database");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let status = root.path().join("var/lib/dpkg/status");
        let mut text = fs::read_to_string(&status).expect("status");
        text.push_str("\nPackage: baz\nStatus: install ok installed\nVersion: 1\n");
        fs::write(&status, text).expect("rewrite status");
        assert_ne!(dpkg_database_print(&host), Some(before), "a changed status file invalidates cached answers");
        assert_eq!(dpkg_database_print(&HostFs::new(root.path().join("nowhere"))), None);
    }

    fn file_entry(path: &str, hash: &str, size: u64, package: Option<&str>) -> LockEntry {
        let library = path.contains(".so");
        LockEntry {
            path: path.to_owned(),
            kind: if library { "library" } else { "file" }.to_owned(),
            source: Some(path.to_owned()),
            size: Some(size),
            mode: Some("0644".to_owned()),
            owner: None,
            hash: Some(format!("blake3:{hash}")),
            target: None,
            device: None,
            sonames: if library { vec![path.rsplit('/').next().unwrap_or_default().to_owned()] } else { Vec::new() },
            needed_by: vec!["/usr/bin/python3.11".to_owned()],
            package: package.map(str::to_owned),
        }
    }

    fn lock(entries: Vec<LockEntry>) -> Lock {
        Lock {
            version: LOCK_VERSION,
            jailfile: "blake3:00".to_owned(),
            host: HostFingerprint {
                os: "debian".into(),
                os_version: "12".into(),
                glibc: "2.36".into(),
                arch: "x86_64".into(),
            },
            entries,
        }
    }

    #[test]
    fn crlf_comments_whitespace_and_key_order_do_not_change_the_digest() {
        let plain = "root = \"/srv/j\"\nbinaries = [\"bash\", \"ls\"]\n\n[[files]]\npath = \"/etc/motd\"\ncontent = \"hi\\n\"\n";
        let reformatted = "# a comment\r\nbinaries = [\r\n  \"bash\",\r\n  \"ls\",\r\n]\r\nroot   =   '/srv/j'\r\n\r\n[[files]]\r\ncontent = \"hi\\n\"   # trailing\r\npath = \"/etc/motd\"\r\n";
        assert_eq!(jailfile_digest(plain).expect("valid"), jailfile_digest(reformatted).expect("valid"));
        let other = plain.replace("ls", "cat");
        assert_ne!(jailfile_digest(plain).expect("valid"), jailfile_digest(&other).expect("valid"), "values count");
    }

    #[test]
    fn lock_text_is_one_line_per_entry_and_round_trips() {
        let lock = lock(vec![
            file_entry("/usr/lib/x86_64-linux-gnu/libc.so.6", "aa", 10, None),
            file_entry("/usr/lib/x86_64-linux-gnu/libssl.so.3", "bb", 20, Some("libssl3 3.0.15-1")),
        ]);
        let text = lock.to_text().expect("serializes");
        insta::assert_snapshot!("lock_text", text);
        assert_eq!(Lock::parse(&text, Path::new("Jailfile.lock")).expect("parses"), lock);
        assert_eq!(text, lock.to_text().expect("serializes"), "the same lock, the same bytes");
    }

    #[test]
    fn diff_closures_lines_name_versions_sizes_and_empty_sets() {
        let old = lock(vec![
            file_entry("/etc/gone.conf", "11", 100, None),
            file_entry("/usr/lib/x86_64-linux-gnu/libssl.so.3", "aa", 100_000, Some("libssl3 3.0.15-1")),
        ]);
        let new = lock(vec![
            file_entry("/usr/lib/x86_64-linux-gnu/libnew.so.1", "cc", 2048, None),
            file_entry("/usr/lib/x86_64-linux-gnu/libssl.so.3", "bb", 112_902, Some("libssl3 3.0.17-1")),
        ]);
        let comparison = compare(&old, &new);
        insta::assert_snapshot!("diff_closures", diff_closures_text(&comparison));
        let drift: Vec<String> = comparison.host_drift().iter().map(Drift::line).collect();
        insta::assert_snapshot!("host_drift_lines", drift.join("\n"));
    }

    #[test]
    fn with_an_edited_jailfile_only_host_facts_are_drift() {
        let old = lock(vec![file_entry("/a", "aa", 1, None), file_entry("/b", "bb", 1, None)]);
        let mut new = lock(vec![file_entry("/a", "a2", 1, None), file_entry("/c", "cc", 1, None)]);
        let inline =
            |hash: &str| LockEntry { source: None, kind: "content".into(), ..file_entry("/etc/motd", hash, 1, None) };
        let mut old = old;
        old.entries.push(inline("m1"));
        new.entries.push(inline("m2"));
        new.jailfile = "blake3:11".to_owned();
        let drift = compare(&old, &new).host_drift();
        assert_eq!(drift.len(), 1, "only /a's content is the host's doing, /etc/motd's the Jailfile's: {drift:?}");
        assert_eq!(drift[0].path, "/a");
        assert!(drift[0].what.starts_with("blake3 "), "{drift:?}");
    }

    #[test]
    fn a_package_version_alone_is_not_a_difference() {
        let old = lock(vec![file_entry("/a", "aa", 1, Some("p 1"))]);
        let new = lock(vec![file_entry("/a", "aa", 1, None)]);
        assert!(compare(&old, &new).is_empty());
    }

    #[test]
    fn sizes_read_like_nix() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(12_902), "12.6 KiB");
        assert_eq!(signed_size(-3 * 1024 * 1024), "-3.0 MiB");
    }

    #[test]
    fn the_lock_sits_beside_the_jailfile_named_after_it() {
        assert_eq!(lock_path(Path::new("/x/Jailfile.toml")), PathBuf::from("/x/Jailfile.lock"));
        assert_eq!(lock_path(Path::new("web.toml")), PathBuf::from("web.lock"));
    }

    #[test]
    fn glibc_version_is_read_from_the_version_definitions_of_libc() {
        let host = HostFs::real();
        let Some(libc) = ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"]
            .iter()
            .map(Path::new)
            .find(|path| path.exists())
        else {
            eprintln!("SKIPPED glibc_version_is_read_from_the_version_definitions_of_libc: no libc.so.6 here");
            return;
        };
        let version = glibc_version(&host, libc).expect("libc.so.6 defines GLIBC_ versions");
        assert!(version.starts_with("2."), "{version}");
    }
}
