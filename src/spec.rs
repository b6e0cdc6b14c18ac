//! Jailfile -> validated Spec: paths normalised, globs compiled, modes parsed, names cross-checked.
//!
//! Every problem is collected (not just the first) and reported with its place in the file; a
//! `Spec` exists only when the Jailfile has none.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::Result;
use globset::{Glob, GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};
use toml::Spanned;

use crate::diagnostics::{closest, problem_from_toml_error, JailfileErrors, Problem};
use crate::host::{HostFs, BINARY_SEARCH_PATH};
use crate::jailfile::{
    DeviceEntry, DirEntry, EnterSection, FileEntry, GroupEntry, Jailfile, Limits, MountEntry, MountKind, Namespace,
    NetworkMode, UserEntry,
};
use crate::tree::JailPath;

/// A validated Jailfile.
#[derive(Debug)]
pub struct Spec {
    /// The Jailfile this came from.
    pub jailfile: PathBuf,
    /// Host path of the jail root.
    pub root: PathBuf,
    pub binaries: Vec<BinarySpec>,
    pub exclude: Exclude,
    pub devices: Vec<DeviceSpec>,
    pub allow_missing: BTreeSet<String>,
    pub files: Vec<FileSpec>,
    pub dirs: Vec<DirSpec>,
    pub users: Vec<UserSpec>,
    /// Declared groups plus a user-private group for each user whose gid no group declares.
    pub groups: Vec<GroupSpec>,
    pub mounts: Vec<MountSpec>,
    pub enter: EnterSpec,
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
    pub limits: LimitsSpec,
    pub capabilities: Vec<String>,
    pub seccomp: bool,
    /// A root jail user runs as the real host root (no user namespace forced on it).
    pub allow_host_root: bool,
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

/// Device nodes that hand the host's memory or I/O ports to the jail, refused by name even
/// where the host lacks them.
const UNSAFE_CHARACTER_DEVICES: &[&str] = &["/dev/mem", "/dev/kmem", "/dev/port"];

/// The only character devices a jail gets without `allow_unsafe_device`, by the host node's
/// major:minor: a node named /dev/null that is really something else does not pass.
const SAFE_CHARACTER_DEVICES: &[(u64, u64, &str)] = &[
    (1, 3, "/dev/null"),
    (1, 5, "/dev/zero"),
    (1, 7, "/dev/full"),
    (1, 8, "/dev/random"),
    (1, 9, "/dev/urandom"),
    (5, 0, "/dev/tty"),
    (5, 2, "/dev/ptmx"),
];

/// The largest Jailfile read: a hand-written Jailfile is a few KiB, and one generated with
/// thousands of entries and inline files stays well below this. Past it, the file is taken for a
/// mistake (a log, a device, a path swapped by someone else) rather than read into memory.
pub const MAX_JAILFILE_SIZE: u64 = 4 * 1024 * 1024;

/// Reads and validates a Jailfile. Problems in it come back as a [`JailfileErrors`] (downcast
/// the anyhow error to print or test them); a file that cannot be read is a plain error.
pub fn load(jailfile: &Path, root_override: Option<&Path>, host: &HostFs) -> Result<Spec> {
    let source = crate::beside::read_text(jailfile, "Jailfile", MAX_JAILFILE_SIZE)?;
    let parsed: Jailfile = match toml::from_str(&source) {
        Ok(parsed) => parsed,
        Err(error) => {
            let problem = problem_from_toml_error(&source, &error);
            return Err(JailfileErrors { file: jailfile.to_path_buf(), source, problems: vec![problem] }.into());
        }
    };
    let mut validator = Validator { host, problems: Vec::new() };
    let spec = validator.spec(jailfile, parsed, root_override);
    if validator.problems.is_empty() {
        if let Some(spec) = spec {
            return Ok(spec);
        }
    }
    let mut problems = validator.problems;
    problems.sort_by_key(|problem| problem.span.as_ref().map_or(0, |span| span.start));
    Err(JailfileErrors { file: jailfile.to_path_buf(), source, problems }.into())
}

struct Validator<'a> {
    host: &'a HostFs,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn report(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    fn spec(&mut self, jailfile: &Path, parsed: Jailfile, root_override: Option<&Path>) -> Option<Spec> {
        let root = self.root(&parsed.root, root_override);
        let binaries = self.binaries(&parsed.binaries);
        let exclude = self.exclude(&parsed.exclude);
        let (users, groups) = self.users_and_groups(&parsed.users, &parsed.groups);
        let owners = Owners { users: &users, groups: &groups };
        let devices = self.devices(&parsed.devices, &owners);
        let files = self.files(&parsed.files, &owners);
        let dirs = self.dirs(&parsed.dirs, &owners);
        let enter = self.enter(parsed.enter.as_ref(), &users);
        let mounts = self.mounts(&parsed.mounts, &enter);
        let allow_missing = parsed.allow_missing.iter().map(|name| name.get_ref().clone()).collect();
        Some(Spec {
            jailfile: jailfile.to_path_buf(),
            root: root?,
            binaries,
            exclude: exclude?,
            devices,
            allow_missing,
            files,
            dirs,
            users,
            groups,
            mounts,
            enter: enter?,
        })
    }

    fn root(&mut self, root: &Option<Spanned<String>>, root_override: Option<&Path>) -> Option<PathBuf> {
        // The file's own root is checked even when --root replaces it: a reviewed Jailfile
        // with `root = "/"` is wrong wherever it is applied.
        let from_file = root.as_ref().and_then(|root| self.root_from_file(root));
        if let Some(path) = root_override {
            if !path.is_absolute() || path == Path::new("/") {
                self.report(Problem {
                    span: None,
                    key: "--root".into(),
                    value: Some(path.display().to_string()),
                    message: "--root must be an absolute directory other than /".into(),
                    help: None,
                });
                return None;
            }
            return Some(path.to_path_buf());
        }
        if root.is_none() {
            self.report(Problem {
                span: Some(0..0),
                key: "root".into(),
                value: None,
                message: "no jail root: set `root = \"/srv/jails/NAME\"` or pass --root DIR".into(),
                help: None,
            });
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

    fn binaries(&mut self, binaries: &[Spanned<String>]) -> Vec<BinarySpec> {
        let mut result = Vec::new();
        for (index, declared) in binaries.iter().enumerate() {
            let key = format!("binaries[{index}]");
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
            result.push(BinarySpec { key, declared: name.clone(), host_path });
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

    fn users_and_groups(
        &mut self,
        users: &[Spanned<UserEntry>],
        groups: &[Spanned<GroupEntry>],
    ) -> (Vec<UserSpec>, Vec<GroupSpec>) {
        let mut user_specs: Vec<UserSpec> = Vec::new();
        let mut seen_names: BTreeMap<String, usize> = BTreeMap::new();
        let mut seen_uids: BTreeMap<u32, usize> = BTreeMap::new();
        for (index, entry) in users.iter().enumerate() {
            let user = entry.get_ref();
            let key = format!("users[{index}]");
            let name = user.name.get_ref();
            if let Err(message) = check_account_name(name) {
                self.report(Problem::at(format!("{key}.name"), &user.name, message));
            }
            if name == "root" || user.uid.get_ref() == &0 {
                self.report(
                    Problem::new(format!("{key}.name"), user.name.span(), "root is built in; do not declare it")
                        .with_value(name),
                );
            }
            if let Some(first) = seen_names.insert(name.clone(), index) {
                self.report(Problem::at(
                    format!("{key}.name"),
                    &user.name,
                    format!("duplicate user name: users[{first}] is already called {name:?}"),
                ));
            }
            if let Some(first) = seen_uids.insert(*user.uid.get_ref(), index) {
                self.report(
                    Problem::new(
                        format!("{key}.uid"),
                        user.uid.span(),
                        format!("duplicate uid: users[{first}] already has uid {}", user.uid.get_ref()),
                    )
                    .with_value(user.uid.get_ref()),
                );
            }
            let home = self.jail_path_or_default(&format!("{key}.home"), user.home.as_ref(), "/");
            let shell = self.jail_path_or_default(&format!("{key}.shell"), user.shell.as_ref(), "/bin/sh");
            user_specs.push(UserSpec {
                name: name.clone(),
                uid: *user.uid.get_ref(),
                gid: *user.gid.get_ref(),
                home,
                shell,
                gecos: user.gecos.clone().unwrap_or_default(),
            });
        }

        let mut group_specs: Vec<GroupSpec> = Vec::new();
        let mut seen_group_names: BTreeMap<String, usize> = BTreeMap::new();
        let mut seen_gids: BTreeMap<u32, usize> = BTreeMap::new();
        for (index, entry) in groups.iter().enumerate() {
            let group = entry.get_ref();
            let key = format!("groups[{index}]");
            let name = group.name.get_ref();
            if let Err(message) = check_account_name(name) {
                self.report(Problem::at(format!("{key}.name"), &group.name, message));
            }
            if let Some(first) = seen_group_names.insert(name.clone(), index) {
                self.report(Problem::at(
                    format!("{key}.name"),
                    &group.name,
                    format!("duplicate group name: groups[{first}] is already called {name:?}"),
                ));
            }
            if let Some(first) = seen_gids.insert(*group.gid.get_ref(), index) {
                self.report(
                    Problem::new(
                        format!("{key}.gid"),
                        group.gid.span(),
                        format!("duplicate gid: groups[{first}] already has gid {}", group.gid.get_ref()),
                    )
                    .with_value(group.gid.get_ref()),
                );
            }
            for (member_index, member) in group.members.iter().enumerate() {
                if !seen_names.contains_key(member.get_ref()) {
                    let declared = seen_names.keys().map(String::as_str);
                    let mut problem = Problem::at(
                        format!("{key}.members[{member_index}]"),
                        member,
                        "not a declared user (add it to [[users]])",
                    );
                    if let Some(near) = closest(member.get_ref(), declared) {
                        problem = problem.with_help(format!("did you mean {near:?}?"));
                    }
                    self.report(problem);
                }
            }
            group_specs.push(GroupSpec {
                name: name.clone(),
                gid: *group.gid.get_ref(),
                members: group.members.iter().map(|member| member.get_ref().clone()).collect(),
            });
        }
        // Like useradd's user-private groups: a user whose gid no group declares gets one.
        for (index, user) in user_specs.iter().enumerate() {
            if user.gid == 0 || group_specs.iter().any(|group| group.gid == user.gid) {
                continue;
            }
            if group_specs.iter().any(|group| group.name == user.name) {
                let entry = users[index].get_ref();
                self.report(
                    Problem::new(
                        format!("users[{index}].gid"),
                        entry.gid.span(),
                        format!("no group has gid {}, and the group {:?} has another gid", user.gid, user.name),
                    )
                    .with_value(user.gid)
                    .with_help("set the user's gid to its group's gid"),
                );
                continue;
            }
            group_specs.push(GroupSpec { name: user.name.clone(), gid: user.gid, members: Vec::new() });
        }
        (user_specs, group_specs)
    }

    fn jail_path_or_default(&mut self, key: &str, value: Option<&Spanned<String>>, default: &str) -> JailPath {
        match value {
            None => JailPath::parse(default).unwrap_or_else(|_| JailPath::root()),
            Some(value) => self.jail_path(key, value).unwrap_or_else(JailPath::root),
        }
    }

    fn jail_path(&mut self, key: &str, value: &Spanned<String>) -> Option<JailPath> {
        match JailPath::parse(value.get_ref()) {
            Ok(path) => Some(path),
            Err(error) => {
                self.report(Problem::at(key, value, format!("a path in the jail {error}")));
                None
            }
        }
    }

    fn mode(&mut self, key: &str, value: Option<&Spanned<String>>) -> Option<u32> {
        let value = value?;
        match parse_mode(value.get_ref()) {
            Ok(mode) => Some(mode),
            Err(message) => {
                self.report(
                    Problem::at(key, value, message)
                        .with_help("write the mode as a string of octal digits, e.g. mode = \"0755\""),
                );
                None
            }
        }
    }

    fn id(&mut self, key: &str, value: Option<&Spanned<String>>, known: &[(String, u32)]) -> Option<u32> {
        let value = value?;
        let text = value.get_ref();
        if text == "root" {
            return Some(0);
        }
        if let Ok(number) = text.parse::<u32>() {
            return Some(number);
        }
        if let Some((_, id)) = known.iter().find(|(name, _)| name == text) {
            return Some(*id);
        }
        let mut problem = Problem::at(key, value, "not \"root\", a number, or a name declared in the Jailfile");
        if let Some(near) = closest(text, known.iter().map(|(name, _)| name.as_str())) {
            problem = problem.with_help(format!("did you mean {near:?}?"));
        }
        self.report(problem);
        None
    }

    fn attributes(
        &mut self,
        key: &str,
        mode: Option<&Spanned<String>>,
        owner: Option<&Spanned<String>>,
        group: Option<&Spanned<String>>,
        owners: &Owners,
    ) -> Attributes {
        Attributes {
            mode: self.mode(&format!("{key}.mode"), mode),
            owner: self.id(&format!("{key}.owner"), owner, &owners.user_ids()),
            group: self.id(&format!("{key}.group"), group, &owners.group_ids()),
            keep_setuid: false,
        }
    }

    fn devices(&mut self, devices: &[Spanned<DeviceEntry>], owners: &Owners) -> Vec<DeviceSpec> {
        let mut result = Vec::new();
        for (index, entry) in devices.iter().enumerate() {
            let key = format!("devices[{index}]");
            let (path_value, allow_unsafe, attributes) = match entry.get_ref() {
                DeviceEntry::Path(path) => (Spanned::new(entry.span(), path.clone()), false, Attributes::default()),
                DeviceEntry::Detailed(table) => {
                    let attributes =
                        self.attributes(&key, table.mode.as_ref(), table.owner.as_ref(), table.group.as_ref(), owners);
                    (table.path.clone(), table.allow_unsafe_device, attributes)
                }
            };
            let Some(path) = self.jail_path(&key, &path_value) else { continue };
            if UNSAFE_CHARACTER_DEVICES.contains(&path.as_str()) && !allow_unsafe {
                self.report(unsafe_device_problem(&key, &path_value, "the host's memory or I/O ports".to_owned()));
                continue;
            }
            let Some(metadata) = self.host.symlink_metadata(Path::new(path.as_str())).ok() else {
                self.report(Problem::at(&key, &path_value, "no such device on the host"));
                continue;
            };
            let file_type = metadata.file_type();
            if !file_type.is_char_device() && !file_type.is_block_device() {
                self.report(Problem::at(&key, &path_value, "not a device node on the host"));
                continue;
            }
            if let Some(reason) = unsafe_device_reason(file_type.is_block_device(), metadata.rdev()) {
                if !allow_unsafe {
                    self.report(unsafe_device_problem(&key, &path_value, reason));
                    continue;
                }
            }
            result.push(DeviceSpec {
                key,
                path,
                allow_unsafe,
                mode: attributes.mode,
                owner: attributes.owner.unwrap_or(0),
                group: attributes.group.unwrap_or(0),
            });
        }
        result
    }

    fn files(&mut self, files: &[Spanned<FileEntry>], owners: &Owners) -> Vec<FileSpec> {
        let mut result = Vec::new();
        for (index, entry) in files.iter().enumerate() {
            let key = format!("files[{index}]");
            let file = entry.get_ref();
            let mut attributes =
                self.attributes(&key, file.mode.as_ref(), file.owner.as_ref(), file.group.as_ref(), owners);
            attributes.keep_setuid = file.setuid;
            match (&file.src, &file.path, &file.content) {
                (Some(src), None, None) => {
                    let dest = file.dest.as_ref().and_then(|dest| self.jail_path(&format!("{key}.dest"), dest));
                    if let Some(source) = self.host_source(&format!("{key}.src"), src) {
                        result.push(FileSpec::Host { key, source, dest, attributes });
                    }
                }
                (None, Some(path), Some(content)) => {
                    if let Some(dest) = &file.dest {
                        self.report(Problem::at(
                            format!("{key}.dest"),
                            dest,
                            "`dest` goes with `src`; an inline file has only `path`",
                        ));
                    }
                    if let Some(path) = self.jail_path(&format!("{key}.path"), path) {
                        result.push(FileSpec::Inline { key, path, content: content.get_ref().clone(), attributes });
                    }
                }
                _ => self.report(Problem::new(
                    key,
                    entry.span(),
                    "a [[files]] entry has either `src` (a host file, directory or glob) or both `path` and `content`",
                )),
            }
        }
        result
    }

    fn host_source(&mut self, key: &str, src: &Spanned<String>) -> Option<HostSource> {
        let text = src.get_ref();
        let Ok(path) = JailPath::parse(text) else {
            self.report(Problem::at(key, src, "a host source must be an absolute path without `..`"));
            return None;
        };
        if !is_glob(text) {
            if self.host.symlink_metadata(Path::new(path.as_str())).is_err() {
                self.report(Problem::at(key, src, "no such file or directory on the host"));
                return None;
            }
            return Some(HostSource::Path(PathBuf::from(path.as_str())));
        }
        let matcher = match compile_glob(path.as_str()) {
            Ok(glob) => glob.compile_matcher(),
            Err(message) => {
                self.report(Problem::at(key, src, message));
                return None;
            }
        };
        let base = glob_base(path.as_str());
        let source = HostSource::Glob { pattern: path.as_str().to_owned(), base, matcher };
        if expand_glob_first(self.host, &source).is_none() {
            self.report(Problem::at(key, src, "the glob matches nothing on the host"));
            return None;
        }
        Some(source)
    }

    fn dirs(&mut self, dirs: &[Spanned<DirEntry>], owners: &Owners) -> Vec<DirSpec> {
        let mut result = Vec::new();
        for (index, entry) in dirs.iter().enumerate() {
            let key = format!("dirs[{index}]");
            let dir = entry.get_ref();
            let attributes = self.attributes(&key, dir.mode.as_ref(), dir.owner.as_ref(), dir.group.as_ref(), owners);
            if let Some(path) = self.jail_path(&format!("{key}.path"), &dir.path) {
                if dir.writable && path.is_root() {
                    // `enter` mounts the jail root read-only; a writable "/" would undo it all.
                    self.report(
                        Problem::at(format!("{key}.writable"), &dir.path, "the jail root cannot be writable")
                            .with_help(
                                "declare the directories the command must write to, each with `writable = true`",
                            ),
                    );
                    continue;
                }
                result.push(DirSpec {
                    key,
                    path,
                    mode: attributes.mode.unwrap_or(0o755),
                    owner: attributes.owner.unwrap_or(0),
                    group: attributes.group.unwrap_or(0),
                    writable: dir.writable,
                });
            }
        }
        result
    }

    fn mounts(&mut self, mounts: &[Spanned<MountEntry>], enter: &Option<EnterSpec>) -> Vec<MountSpec> {
        let mut result = Vec::new();
        for (index, entry) in mounts.iter().enumerate() {
            let key = format!("mounts[{index}]");
            let mount = entry.get_ref();
            let kind = *mount.kind.get_ref();
            let Some(target_value) = &mount.target else {
                self.report(
                    Problem::new(&key, entry.span(), "a mount needs a `target`: where in the jail it is mounted")
                        .with_help("add e.g. target = \"/data\""),
                );
                continue;
            };
            let Some(target) = self.jail_path(&format!("{key}.target"), target_value) else { continue };
            if target.is_root() {
                self.report(Problem::at(format!("{key}.target"), target_value, "cannot mount over the jail root"));
                continue;
            }
            let source = match (kind, &mount.source) {
                (MountKind::Bind, None) => {
                    self.report(Problem::new(&key, entry.span(), "a bind mount needs a `source` on the host"));
                    continue;
                }
                (MountKind::Bind, Some(source)) => match JailPath::parse(source.get_ref()) {
                    Ok(path) if self.host.symlink_metadata(Path::new(path.as_str())).is_ok() => {
                        Some(PathBuf::from(path.as_str()))
                    }
                    Ok(_) => {
                        self.report(Problem::at(
                            format!("{key}.source"),
                            source,
                            "no such file or directory on the host",
                        ));
                        continue;
                    }
                    Err(error) => {
                        self.report(Problem::at(format!("{key}.source"), source, format!("a bind source {error}")));
                        continue;
                    }
                },
                (_, Some(source)) => {
                    self.report(Problem::at(format!("{key}.source"), source, "only bind mounts take a `source`"));
                    continue;
                }
                (_, None) => None,
            };
            let size = match (&mount.size, kind) {
                (None, _) => None,
                (Some(size), MountKind::Tmpfs) => self.size(&format!("{key}.size"), size),
                (Some(size), _) => {
                    self.report(Problem::at(format!("{key}.size"), size, "only tmpfs mounts take a `size`"));
                    None
                }
            };
            let mode = self.mode(&format!("{key}.mode"), mount.mode.as_ref());
            let mut options = Vec::new();
            for (option_index, option) in mount.options.iter().enumerate() {
                if MOUNT_OPTIONS.contains(&option.get_ref().as_str()) {
                    options.push(option.get_ref().clone());
                } else {
                    let mut problem = Problem::at(
                        format!("{key}.options[{option_index}]"),
                        option,
                        format!("unknown mount option; known: {}", MOUNT_OPTIONS.join(", ")),
                    );
                    if option.get_ref() == "ro" {
                        problem = problem.with_help("write `readonly = true`");
                    } else if let Some(near) = closest(option.get_ref(), MOUNT_OPTIONS.iter().copied()) {
                        problem = problem.with_help(format!("did you mean {near:?}?"));
                    }
                    self.report(problem);
                }
            }
            if kind == MountKind::Proc {
                if mount.persistent {
                    self.report(Problem::new(
                        format!("{key}.persistent"),
                        entry.span(),
                        "a persistent proc mount would show the jail every host process; proc is mounted only by `enter`, in a PID namespace",
                    ));
                    continue;
                }
                let has_pid_namespace = enter.as_ref().is_none_or(|enter| enter.namespaces.contains(&Namespace::Pid));
                if !has_pid_namespace {
                    self.report(
                        Problem::new(
                            &key,
                            mount.kind.span(),
                            "a proc mount needs the `pid` namespace, or it would show every host process",
                        )
                        .with_value("proc")
                        .with_help("add \"pid\" to [enter].namespaces"),
                    );
                    continue;
                }
            }
            result.push(MountSpec {
                key,
                kind,
                source,
                target,
                readonly: mount.readonly,
                options,
                size,
                mode,
                persistent: mount.persistent,
            });
        }
        result
    }

    fn size(&mut self, key: &str, value: &Spanned<String>) -> Option<u64> {
        match parse_size(value.get_ref()) {
            Ok(size) => Some(size),
            Err(message) => {
                self.report(Problem::at(key, value, message));
                None
            }
        }
    }

    fn enter(&mut self, enter: Option<&Spanned<EnterSection>>, users: &[UserSpec]) -> Option<EnterSpec> {
        let default_namespaces: BTreeSet<Namespace> = DEFAULT_NAMESPACES.iter().copied().collect();
        let Some(enter) = enter else {
            return Some(EnterSpec {
                command: vec!["/bin/sh".into()],
                user: "root".into(),
                uid: 0,
                gid: 0,
                workdir: None,
                hostname: None,
                env: BTreeMap::new(),
                namespaces: default_namespaces,
                network: NetworkMode::None,
                limits: LimitsSpec::default(),
                capabilities: Vec::new(),
                seccomp: true,
                allow_host_root: false,
            });
        };
        let section = enter.get_ref();
        let (user, uid, gid) = match &section.user {
            None => ("root".to_owned(), 0, 0),
            Some(name) if name.get_ref() == "root" => ("root".to_owned(), 0, 0),
            Some(name) => match users.iter().find(|user| &user.name == name.get_ref()) {
                Some(user) => (user.name.clone(), user.uid, user.gid),
                None => {
                    let mut problem =
                        Problem::at("enter.user", name, "not a declared user (add it to [[users]] or use \"root\")");
                    if let Some(near) = closest(name.get_ref(), users.iter().map(|user| user.name.as_str())) {
                        problem = problem.with_help(format!("did you mean {near:?}?"));
                    }
                    self.report(problem);
                    ("root".to_owned(), 0, 0)
                }
            },
        };
        if let Some(first) = section.command.first() {
            if !first.get_ref().starts_with('/') {
                self.report(Problem::at("enter.command[0]", first, "the command must be an absolute path in the jail"));
            }
        }
        let workdir = section.workdir.as_ref().and_then(|workdir| self.jail_path("enter.workdir", workdir));
        if let Some(hostname) = &section.hostname {
            if let Err(message) = check_hostname(hostname.get_ref()) {
                self.report(Problem::at("enter.hostname", hostname, message));
            }
        }
        for name in section.env.keys() {
            if name.get_ref().is_empty() || name.get_ref().contains('=') || name.get_ref().contains('\0') {
                self.report(Problem::at(
                    "enter.env",
                    name,
                    "an environment variable name cannot be empty or contain `=`",
                ));
            }
        }
        let namespaces = match &section.namespaces {
            None => default_namespaces,
            Some(list) => {
                let mut set: BTreeSet<Namespace> = list.iter().map(|ns| *ns.get_ref()).collect();
                // pivot_root needs a private mount table: the mount namespace is not optional.
                set.insert(Namespace::Mount);
                set
            }
        };
        let network = section.network.as_ref().map_or(NetworkMode::None, |network| *network.get_ref());
        if network == NetworkMode::Host
            && section.namespaces.as_ref().is_some_and(|_| namespaces.contains(&Namespace::Net))
        {
            let span = section.network.as_ref().map_or(enter.span(), |network| network.span());
            self.report(
                Problem::new(
                    "enter.network",
                    span,
                    "network = \"host\" contradicts the `net` namespace in [enter].namespaces",
                )
                .with_value("host"),
            );
        }
        let namespaces = if network == NetworkMode::Host {
            namespaces.into_iter().filter(|ns| *ns != Namespace::Net).collect()
        } else {
            namespaces
        };
        let limits = section.limits.as_ref().map(|limits| self.limits(limits)).unwrap_or_default();
        let mut capabilities = Vec::new();
        for (index, capability) in section.capabilities.iter().enumerate() {
            let upper = capability.get_ref().to_ascii_uppercase();
            let name = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
            if CAPABILITIES.contains(&name.as_str()) {
                capabilities.push(name);
            } else {
                let mut problem =
                    Problem::at(format!("enter.capabilities[{index}]"), capability, "not a Linux capability");
                if let Some(near) = closest(&name, CAPABILITIES.iter().copied()) {
                    problem = problem.with_help(format!("did you mean {near:?}?"));
                }
                self.report(problem);
            }
        }
        Some(EnterSpec {
            command: section.command.iter().map(|word| word.get_ref().clone()).collect(),
            user,
            uid,
            gid,
            workdir,
            hostname: section.hostname.as_ref().map(|hostname| hostname.get_ref().clone()),
            env: section.env.iter().map(|(name, value)| (name.get_ref().clone(), value.clone())).collect(),
            namespaces,
            network,
            limits,
            capabilities,
            seccomp: section.seccomp.unwrap_or(true),
            allow_host_root: section.allow_host_root,
        })
    }

    fn limits(&mut self, limits: &Limits) -> LimitsSpec {
        LimitsSpec {
            nofile: limits.nofile,
            nproc: limits.nproc,
            memory: limits.memory.as_ref().and_then(|memory| self.size("enter.limits.memory", memory)),
            cpu: limits.cpu,
            fsize: limits.fsize.as_ref().and_then(|fsize| self.size("enter.limits.fsize", fsize)),
        }
    }
}

/// Users and groups by name, to turn owner names into ids.
struct Owners<'a> {
    users: &'a [UserSpec],
    groups: &'a [GroupSpec],
}

impl Owners<'_> {
    fn user_ids(&self) -> Vec<(String, u32)> {
        self.users.iter().map(|user| (user.name.clone(), user.uid)).collect()
    }
    fn group_ids(&self) -> Vec<(String, u32)> {
        self.groups.iter().map(|group| (group.name.clone(), group.gid)).collect()
    }
}

fn unsafe_device_problem(key: &str, path: &Spanned<String>, reason: String) -> Problem {
    let safe: Vec<&str> = SAFE_CHARACTER_DEVICES.iter().map(|(_, _, name)| *name).collect();
    Problem::at(key, path, format!("this device gives the jail {reason}")).with_help(format!(
        "only {} pass without permission; if you mean it, write {{ path = {:?}, allow_unsafe_device = true }}",
        safe.join(", "),
        path.get_ref()
    ))
}

/// Why a host device node (block or character, with its rdev) is unsafe in a jail; None for the
/// few harmless character devices.
fn unsafe_device_reason(block: bool, rdev: u64) -> Option<String> {
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    if block {
        return Some(format!("the host's disk (block device {major}:{minor}) to read and write directly"));
    }
    if SAFE_CHARACTER_DEVICES.iter().any(|(safe_major, safe_minor, _)| (*safe_major, *safe_minor) == (major, minor)) {
        return None;
    }
    let what = match (major, minor) {
        (1, 1 | 2 | 4) => "the host's memory or I/O ports",
        (1, 11) => "the kernel log, to read and to write lines into",
        (10, 229) => "FUSE, to serve file systems to the host's kernel",
        (10, 223) => "uinput, to create input devices that type into the host's sessions",
        (4, 0..=63) | (7, _) => "a virtual console of the host, to read and inject keystrokes",
        (4, _) => "a serial port of the host",
        (21, _) => "SCSI generic: raw commands to the host's disks",
        (202, _) => "the CPUs' model-specific registers",
        (203, _) => "the CPUs' cpuid interface",
        _ => "a character device outside the small set of harmless ones",
    };
    Some(format!("{what} (character device {major}:{minor})"))
}

/// Parses "0644", "755", "1777": 3 or 4 octal digits.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if !(3..=4).contains(&digits.len()) || !digits.bytes().all(|byte| (b'0'..=b'7').contains(&byte)) {
        return Err(format!("{text:?} is not an octal mode (3 or 4 digits 0-7, e.g. \"0644\")"));
    }
    u32::from_str_radix(digits, 8).map_err(|error| format!("{text:?} is not an octal mode: {error}"))
}

/// Parses sizes such as "64M", "256MiB", "1G", "4096" (bytes, 1024-based suffixes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits_end = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(digits_end);
    let invalid = || format!("{text:?} is not a size (e.g. \"64M\", \"1G\", \"4096\")");
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let shift = match suffix.trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return Err(invalid()),
    };
    number.checked_mul(1u64 << shift).ok_or_else(|| format!("{text:?} is too large"))
}

fn check_account_name(name: &str) -> Result<(), String> {
    let valid_start = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let valid_rest = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if valid_start && valid_rest && name.len() <= 32 {
        Ok(())
    } else {
        Err("a user or group name is 1-32 of a-z 0-9 _ - and starts with a letter or _".into())
    }
}

fn check_hostname(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.split('.').all(|label| {
            !label.is_empty() && !label.starts_with('-') && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if valid {
        Ok(())
    } else {
        Err("a hostname is at most 64 characters of letters, digits, `-` and `.`".into())
    }
}

/// Whether a path contains glob syntax.
pub fn is_glob(text: &str) -> bool {
    text.contains(['*', '?', '[', '{'])
}

/// Compiles a path glob: `*` stays within one directory, `**` crosses directories.
pub fn compile_glob(pattern: &str) -> Result<Glob, String> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|error| format!("invalid glob: {}", error.kind()))
}

/// The longest leading directory of a glob pattern without glob syntax: "/usr/lib/python3.11/**" -> "/usr/lib/python3.11".
pub fn glob_base(pattern: &str) -> PathBuf {
    let mut base = PathBuf::from("/");
    for part in pattern.split('/').filter(|part| !part.is_empty()) {
        if is_glob(part) {
            break;
        }
        base.push(part);
    }
    base
}

/// The first host path a glob source matches, if any (validation only needs one).
fn expand_glob_first(host: &HostFs, source: &HostSource) -> Option<PathBuf> {
    let HostSource::Glob { base, matcher, .. } = source else { return None };
    walkdir::WalkDir::new(host.disk_path(base))
        .follow_links(false)
        .into_iter()
        .filter_map(|entry| entry.ok())
        .map(|entry| host.host_path(entry.path()))
        .find(|path| matcher.is_match(path))
}
