//! Jailfile -> validated Spec: paths normalised, globs compiled, modes parsed, names cross-checked.
//!
//! Every problem is collected (not just the first) and reported with its place in the file; a
//! `Spec` exists only when the Jailfile has none.
//!
//! This file holds what callers see (the validated types, [`load`]) and the top-level keys
//! (`root`, `binaries`, `exclude`); each section of the Jailfile is validated in a file of its
//! own (`users`, `devices`, `files` with `dirs`, `mounts`, `enter`), and the values every
//! section shares (jail paths, modes, owners, sizes, globs) in `values`.

mod devices;
mod enter;
mod files;
mod include;
mod links;
mod mounts;
mod ports;
mod runtime;
mod shape;
mod users;
mod values;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Result;
use globset::{GlobMatcher, GlobSet, GlobSetBuilder};
use toml::Spanned;

use crate::diagnostics::Problem;
use crate::host::{HostFs, BINARY_SEARCH_PATH};
pub use crate::jailfile::OnHostChange;
use crate::jailfile::{BinaryEntry, Jailfile, MountKind, Namespace, NetworkMode};
use crate::tree::JailPath;
use users::Owners;

pub use ports::{hosts_file, resolv_conf, GATEWAY, JAIL_ADDRESS, RESOLVER};
pub use runtime::{
    archive_names, find_locale, host_zone, normalize_locale_name, parse_archive_names, terminfo_file, zone_file,
    Charsets, LocaleSource, NoSuchLocale, RuntimeSpec, Timezones, DEFAULT_TERMINALS, LOCALE_DIR, TERMINFO_DIRS,
    ZONEINFO_DIR,
};
pub use values::{compile_glob, glob_base, is_glob, parse_mode, parse_size};

/// A validated Jailfile.
#[derive(Debug)]
pub struct Spec {
    /// The Jailfile this came from.
    pub jailfile: PathBuf,
    /// Host path of the jail root; None when neither the Jailfile nor `--root` names one, which
    /// only the commands that read the host alone (validate, closure, why, lock) accept. Those
    /// that touch a jail ask for it through [`Spec::root`].
    pub root: Option<PathBuf>,
    pub binaries: Vec<BinarySpec>,
    pub exclude: Exclude,
    pub devices: Vec<DeviceSpec>,
    pub allow_missing: BTreeSet<String>,
    pub files: Vec<FileSpec>,
    pub dirs: Vec<DirSpec>,
    pub links: Vec<LinkSpec>,
    pub users: Vec<UserSpec>,
    /// Declared groups plus a user-private group for each user whose gid no group declares.
    pub groups: Vec<GroupSpec>,
    pub mounts: Vec<MountSpec>,
    pub enter: EnterSpec,
    /// What the closure brings for what the programs open while they run.
    pub runtime: RuntimeSpec,
    /// Where each entry of a top-level list was written, `binaries[3]` ->
    /// `base/Jailfile.toml:4:13`: with `include`, not always in `jailfile`.
    pub places: BTreeMap<String, String>,
    /// What `jailprov hook run` does when the host files the jail copied have changed.
    pub on_host_change: OnHostChange,
}

/// A program to bring, found on the host.
#[derive(Debug, Clone)]
pub struct BinarySpec {
    /// Where it was declared, e.g. `binaries[0]`.
    pub key: String,
    /// As written: "bash" or "/usr/bin/python3".
    pub declared: String,
    /// The host path it names (found through the search path; may be a symlink).
    pub host_path: PathBuf,
    /// Unresolved symbols and missing symbol versions are warnings, not errors.
    pub allow_unresolved: bool,
}

/// Compiled `exclude` patterns.
#[derive(Debug, Clone, Default)]
pub struct Exclude {
    pub patterns: Vec<String>,
    set: GlobSet,
}

impl Exclude {
    pub fn is_excluded(&self, host_path: &Path) -> bool {
        !self.patterns.is_empty() && self.set.is_match(host_path)
    }
}

/// Mode, owner and group overrides of an entry, owners as numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub mode: Option<u32>,
    pub owner: Option<u32>,
    pub group: Option<u32>,
    pub keep_setuid: bool,
}

/// One `[[files]]` entry.
#[derive(Debug, Clone)]
pub enum FileSpec {
    Host { key: String, source: HostSource, dest: Option<JailPath>, attributes: Attributes },
    Inline { key: String, path: JailPath, content: String, attributes: Attributes },
}

/// What a `src` names.
#[derive(Debug, Clone)]
pub enum HostSource {
    /// A file, symlink or directory (copied recursively).
    Path(PathBuf),
    /// A glob: the literal directory it starts in, and the compiled pattern.
    Glob { pattern: String, base: PathBuf, matcher: GlobMatcher },
}

#[derive(Debug, Clone)]
pub struct DirSpec {
    pub key: String,
    pub path: JailPath,
    pub mode: u32,
    pub owner: u32,
    pub group: u32,
    /// Mounted read-write by `enter` on top of the read-only jail root.
    pub writable: bool,
}

#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub key: String,
    /// The device's path, the same on the host and in the jail.
    pub path: JailPath,
    pub allow_unsafe: bool,
    pub mode: Option<u32>,
    pub owner: u32,
    pub group: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: JailPath,
    pub shell: JailPath,
    pub gecos: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct MountSpec {
    pub key: String,
    pub kind: MountKind,
    pub source: Option<PathBuf>,
    pub target: JailPath,
    pub readonly: bool,
    pub options: Vec<String>,
    pub size: Option<u64>,
    pub mode: Option<u32>,
    pub persistent: bool,
}

#[derive(Debug, Clone, Default)]
pub struct LimitsSpec {
    pub nofile: Option<u64>,
    pub nproc: Option<u64>,
    pub memory: Option<u64>,
    pub cpu: Option<u64>,
    pub fsize: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct EnterSpec {
    pub command: Vec<String>,
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub workdir: Option<JailPath>,
    pub hostname: Option<String>,
    pub env: BTreeMap<String, String>,
    pub namespaces: BTreeSet<Namespace>,
    pub network: NetworkMode,
    /// Published ports (network = "private" only).
    pub ports: Vec<PortSpec>,
    /// The jail may connect out (network = "private"; always true otherwise).
    pub egress: bool,
    /// A tmpfs /dev built at enter time (`dev = "minimal"`, the default; false with "none").
    pub minimal_dev: bool,
    pub limits: LimitsSpec,
    pub capabilities: Vec<String>,
    pub seccomp: bool,
    /// A root jail user runs as the real host root (no user namespace forced on it).
    pub allow_host_root: bool,
}

impl Spec {
    /// The file:line:column of the entry a key such as `mounts[1].target` belongs to.
    pub fn place_of(&self, key: &str) -> Option<&str> {
        let entry = key.find(']').map_or(key, |end| &key[..=end]);
        self.places.get(entry).map(String::as_str)
    }

    /// The jail root, or the error a command that touches a jail gives when there is none.
    pub fn root(&self) -> Result<&Path> {
        self.root.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "{}: no jail root: set `root = \"/srv/jails/NAME\"` in it or pass --root DIR",
                self.jailfile.display()
            )
        })
    }
}

/// One `[[links]]` symlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    /// e.g. `links[0]`.
    pub key: String,
    pub path: JailPath,
    pub target: String,
}

/// One published port: `address:host_port` on the host reaches `jail_port` in the jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// None: every host address.
    pub address: Option<std::net::IpAddr>,
    pub host_port: u16,
    pub jail_port: u16,
    pub udp: bool,
}

/// Namespaces `enter` creates when the Jailfile names none.
pub const DEFAULT_NAMESPACES: &[Namespace] =
    &[Namespace::Mount, Namespace::Pid, Namespace::Uts, Namespace::Ipc, Namespace::Net];

/// Mount flags a Jailfile may ask for.
pub const MOUNT_OPTIONS: &[&str] = &["nosuid", "nodev", "noexec", "noatime", "nodiratime", "relatime", "strictatime"];

/// Linux capability names, for `[enter].capabilities`.
pub const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The largest Jailfile read: a hand-written Jailfile is a few KiB, and one generated with
/// thousands of entries and inline files stays well below this. Past it, the file is taken for a
/// mistake (a log, a device, a path swapped by someone else) rather than read into memory.
pub const MAX_JAILFILE_SIZE: u64 = 4 * 1024 * 1024;

/// Reads and validates a Jailfile. Problems in it come back as a [`JailfileErrors`] (downcast
/// the anyhow error to print or test them); a file that cannot be read is a plain error.
pub fn load(jailfile: &Path, root_override: Option<&Path>, host: &HostFs) -> Result<Spec> {
    let source = crate::beside::read_text(jailfile, "Jailfile", MAX_JAILFILE_SIZE)?;
    from_text(jailfile, source, root_override, host)
}

/// The texts of the Jailfiles `source` (read from `jailfile`) includes, in the order they are
/// read; an include that cannot be read is an error naming it.
pub fn included_texts(jailfile: &Path, source: &str) -> Result<Vec<String>> {
    let sources = include::read_included(jailfile, source.to_owned(), MAX_JAILFILE_SIZE)?;
    Ok(sources.included.into_iter().map(|file| file.text).collect())
}

/// Validates the text of a Jailfile read from `jailfile` (named in messages, and the base of
/// nothing: every path in a Jailfile is absolute). [`load`] without the read, for callers that
/// hold the text already (and for the fuzz targets, which hand it any bytes).
pub fn from_text(jailfile: &Path, source: String, root_override: Option<&Path>, host: &HostFs) -> Result<Spec> {
    let sources = include::read_included(jailfile, source, MAX_JAILFILE_SIZE)?;
    let (parsed, places) = match parse(&sources) {
        Ok(parsed) => parsed,
        Err(problems) => return Err(sources.errors(problems).into()),
    };
    let mut validator = Validator { host, problems: Vec::new() };
    let spec = validator.spec(jailfile, parsed, root_override);
    if validator.problems.is_empty() {
        if let Some(mut spec) = spec {
            spec.places = places.into_iter().map(|(key, offset)| (key, sources.place(offset))).collect();
            return Ok(spec);
        }
    }
    let mut problems = validator.problems;
    problems.sort_by_key(|problem| problem.span.as_ref().map_or(0, |span| span.start));
    Err(sources.errors(problems).into())
}

/// The Jailfile model of a Jailfile and its includes, or every problem of its syntax (the
/// first of each file) or shape (all, in file order): serde alone would stop at the first
/// unknown key or wrong type.
fn parse(sources: &include::Sources) -> Result<(Jailfile, BTreeMap<String, usize>), Vec<Problem>> {
    use serde::de::{Deserialize, IntoDeserializer};
    let document = include::merged(sources)?;
    let places = include::entry_offsets(document.get_ref());
    let mut problems = shape::problems(document.get_ref());
    if !problems.is_empty() {
        problems.sort_by_key(|problem| problem.span.as_ref().map_or(0, |span| span.start));
        return Err(problems);
    }
    let parsed = Jailfile::deserialize(document.into_deserializer()).map_err(|error| {
        let span = error.span();
        vec![Problem { span, key: String::new(), value: None, message: error.message().trim().to_owned(), help: None }]
    })?;
    Ok((parsed, places))
}

struct Validator<'a> {
    host: &'a HostFs,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    pub(super) fn report(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    fn spec(&mut self, jailfile: &Path, parsed: Jailfile, root_override: Option<&Path>) -> Option<Spec> {
        let root = self.root(parsed.root.as_ref(), root_override);
        let binaries = self.binaries(&parsed.binaries);
        let exclude = self.exclude(&parsed.exclude);
        let (users, groups) = self.users_and_groups(&parsed.users, &parsed.groups);
        let owners = Owners { users: &users, groups: &groups };
        let devices = self.devices(&parsed.devices, &owners);
        let files = self.files(&parsed.files, &owners);
        let dirs = self.dirs(&parsed.dirs, &owners);
        let links = self.links(&parsed.links);
        let enter = self.enter(parsed.enter.as_ref(), &users);
        let mounts = self.mounts(&parsed.mounts, &enter);
        let runtime = self.runtime(parsed.runtime.as_ref());
        let allow_missing = parsed.allow_missing.iter().map(|name| name.get_ref().clone()).collect();
        Some(Spec {
            jailfile: jailfile.to_path_buf(),
            root: root.ok()?,
            binaries,
            exclude: exclude?,
            devices,
            allow_missing,
            files,
            dirs,
            links,
            users,
            groups,
            mounts,
            enter: enter?,
            runtime,
            places: BTreeMap::new(),
            on_host_change: parsed.update.map(|update| update.on_host_change).unwrap_or_default(),
        })
    }

    /// The jail root: Ok(None) when none is named (see [`Spec::root`]), Err(()) when the one
    /// named is wrong (reported).
    fn root(&mut self, root: Option<&Spanned<String>>, root_override: Option<&Path>) -> Result<Option<PathBuf>, ()> {
        // The file's own root is checked even when --root replaces it: a reviewed Jailfile
        // with `root = "/"` is wrong wherever it is applied.
        let from_file = root.map(|root| self.root_from_file(root).ok_or(())).transpose();
        if let Some(path) = root_override {
            if !path.is_absolute() || path == Path::new("/") {
                self.report(Problem {
                    span: None,
                    key: "--root".into(),
                    value: Some(path.display().to_string()),
                    message: "--root must be an absolute directory other than /".into(),
                    help: None,
                });
                return Err(());
            }
            return Ok(Some(path.to_path_buf()));
        }
        from_file
    }

    fn root_from_file(&mut self, root: &Spanned<String>) -> Option<PathBuf> {
        match JailPath::parse(root.get_ref()) {
            Ok(path) if path.is_root() => {
                self.report(Problem::at("root", root, "the jail root cannot be `/`: that is the host itself"));
                None
            }
            Ok(path) => Some(PathBuf::from(path.as_str())),
            Err(error) => {
                self.report(Problem::at("root", root, format!("the jail root {error}")));
                None
            }
        }
    }

    fn binaries(&mut self, binaries: &[Spanned<BinaryEntry>]) -> Vec<BinarySpec> {
        let mut result = Vec::new();
        for (index, entry) in binaries.iter().enumerate() {
            let key = format!("binaries[{index}]");
            let (declared, allow_unresolved) = match entry.get_ref() {
                BinaryEntry::Name(name) => (Spanned::new(entry.span(), name.clone()), false),
                BinaryEntry::Detailed(table) => (table.name.clone(), table.allow_unresolved),
            };
            let declared = &declared;
            let name = declared.get_ref();
            let host_path = if name.starts_with('/') {
                match JailPath::parse(name) {
                    Err(error) => {
                        self.report(Problem::at(&key, declared, format!("a binary path {error}")));
                        continue;
                    }
                    Ok(_) if !self.host.is_file(Path::new(name)) => {
                        self.report(Problem::at(&key, declared, "no such file on the host"));
                        continue;
                    }
                    Ok(path) => PathBuf::from(path.as_str()),
                }
            } else if name.contains('/') || name.is_empty() {
                self.report(
                    Problem::at(&key, declared, "a binary is a bare name (looked up in PATH) or an absolute path")
                        .with_help("write the absolute host path, e.g. \"/usr/bin/bash\""),
                );
                continue;
            } else {
                match self.host.find_in_search_path(name, BINARY_SEARCH_PATH) {
                    Some(path) => path,
                    None => {
                        self.report(
                            Problem::at(&key, declared, "not found on the host")
                                .with_help(format!("searched {}", BINARY_SEARCH_PATH.join(":"))),
                        );
                        continue;
                    }
                }
            };
            result.push(BinarySpec { key, declared: name.clone(), host_path, allow_unresolved });
        }
        result
    }

    fn exclude(&mut self, patterns: &[Spanned<String>]) -> Option<Exclude> {
        let mut builder = GlobSetBuilder::new();
        let mut ok = true;
        for (index, pattern) in patterns.iter().enumerate() {
            match compile_glob(pattern.get_ref()) {
                Ok(glob) => {
                    builder.add(glob);
                    // "DIR/**" also excludes DIR itself: nothing under it, not even an empty directory.
                    if let Some(directory) = pattern.get_ref().strip_suffix("/**") {
                        if let Ok(glob) = compile_glob(directory) {
                            builder.add(glob);
                        }
                    }
                }
                Err(message) => {
                    self.report(Problem::at(format!("exclude[{index}]"), pattern, message));
                    ok = false;
                }
            }
        }
        let set = builder.build().ok()?;
        ok.then(|| Exclude { patterns: patterns.iter().map(|p| p.get_ref().clone()).collect(), set })
    }
}
