//! The serde model of Jailfile.toml as the user wrote it: every value keeps its span for messages.
//!
//! Nothing here judges values; `spec.rs` does. The JSON schema (`jailprov schema`) is generated
//! from these types, so a key added here is documented for editors at the same time.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use toml::Spanned;

/// A whole Jailfile.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Jailfile", description = "A jailprov Jailfile: what a chroot jail holds and how to enter it.")]
pub struct Jailfile {
    /// Jailfiles this one builds on, relative to this file's directory (e.g.
    /// "../base/Jailfile.toml"). Their lists come first, this file's are added (an entry present
    /// twice is kept once); a table key set in two files to different values is an error.
    #[serde(default)]
    #[schemars(with = "Vec<String>", example = ["../base/Jailfile.toml"])]
    pub include: Vec<Spanned<String>>,
    /// Absolute path of the jail on the host; never "/". `--root DIR` overrides it. Optional:
    /// validate, closure, why and lock read only the host; plan, apply, destroy, enter and check
    /// need a root, from here or from --root.
    #[schemars(with = "Option<String>")]
    #[schemars(example = &"/srv/jails/web")]
    pub root: Option<Spanned<String>>,
    /// Programs to put in the jail with everything they load. Bare names are looked up in
    /// /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin on the host. Each is checked
    /// as the loader checks it before it starts: every needed symbol version and every undefined
    /// symbol must be defined by what it loads.
    #[serde(default)]
    #[schemars(with = "Vec<BinaryEntry>")]
    #[schemars(example = ["bash"], extend("x-jailprov-noun" = "a list of names or paths"))]
    pub binaries: Vec<Spanned<BinaryEntry>>,
    /// Glob patterns (globset syntax, `*` stays within one directory, `**` crosses them) of host
    /// paths the closure must not bring.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    #[schemars(example = ["/usr/share/doc/**"])]
    pub exclude: Vec<Spanned<String>>,
    /// Device nodes to create in the jail, copied from the host's major/minor numbers.
    #[serde(default)]
    #[schemars(with = "Vec<DeviceEntry>")]
    #[schemars(example = ["/dev/null"], extend("x-jailprov-noun" = "a list of device paths"))]
    pub devices: Vec<Spanned<DeviceEntry>>,
    /// Sonames that may be missing on purpose; any other unresolved soname is an error.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    #[schemars(example = ["libfoo.so.1"])]
    pub allow_missing: Vec<Spanned<String>>,
    /// Host files, directories or globs to copy, or files with inline content.
    #[serde(default)]
    #[schemars(with = "Vec<FileEntry>")]
    pub files: Vec<Spanned<FileEntry>>,
    /// Directories to create, with their mode and owner.
    #[serde(default)]
    #[schemars(with = "Vec<DirEntry>")]
    pub dirs: Vec<Spanned<DirEntry>>,
    /// Symlinks to create, each with its target as written (e.g. /dev/log -> /run/systemd/journal/dev-log).
    #[serde(default)]
    #[schemars(with = "Vec<LinkEntry>")]
    pub links: Vec<Spanned<LinkEntry>>,
    /// Users of the jail's /etc/passwd.
    #[serde(default)]
    #[schemars(with = "Vec<UserEntry>")]
    pub users: Vec<Spanned<UserEntry>>,
    /// Groups of the jail's /etc/group.
    #[serde(default)]
    #[schemars(with = "Vec<GroupEntry>")]
    pub groups: Vec<Spanned<GroupEntry>>,
    /// Mounts inside the jail: realized by `enter`, or by `apply` when persistent.
    #[serde(default)]
    #[schemars(with = "Vec<MountEntry>")]
    pub mounts: Vec<Spanned<MountEntry>>,
    /// How `jailprov enter` runs a command inside the jail.
    #[schemars(with = "Option<EnterSection>")]
    pub enter: Option<Spanned<EnterSection>>,
    /// What the jail's programs open while they run, found from what they import (their
    /// undefined dynamic symbols): gconv modules for `iconv_open`, libgcc_s for
    /// `pthread_cancel`, locales for `setlocale`, zoneinfo for `localtime`, resolver files for
    /// `getaddrinfo`, terminfo for libtinfo users. All on by default.
    #[schemars(with = "Option<RuntimeSection>")]
    pub runtime: Option<Spanned<RuntimeSection>>,
    /// What `jailprov hook run` (after every dpkg run, or from its timer) does with this jail
    /// when host files it copied have changed.
    pub update: Option<UpdateSection>,
}

/// The `[update]` table: how the jail follows the host's package updates.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSection {
    /// "report" (the default): the hook names the jail as behind; "apply": the hook applies it
    /// again, so it gets the host's new files.
    #[serde(default)]
    pub on_host_change: OnHostChange,
}

/// What the hook does with a jail that is behind the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnHostChange {
    /// Name the jail and the packages that changed; leave it as it is.
    #[default]
    Report,
    /// Apply the Jailfile again (its lock refreshed), as `jailprov apply` does.
    Apply,
}

/// The `[runtime]` table: which run-time needs the closure brings, and which of each.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    /// false switches every run-time need off (the closure is then the ELF closure alone).
    /// Default true.
    pub enabled: Option<bool>,
    /// `iconv_open` importers get gconv-modules, gconv-modules.d/, gconv-modules.cache and the
    /// charset modules of `charsets`. Default true.
    pub iconv: Option<bool>,
    /// Charsets whose gconv modules are brought, as iconv names them (e.g. "ISO-8859-1").
    /// Default: every module of the host.
    #[schemars(with = "Option<Vec<String>>")]
    pub charsets: Option<Vec<Spanned<String>>>,
    /// Importers of `pthread_cancel`, `pthread_exit`, `_Unwind_*` or `backtrace` get
    /// libgcc_s.so.1 (glibc dlopens it to unwind). Default true.
    pub unwind: Option<bool>,
    /// `setlocale`/`newlocale` importers get these locales from /usr/lib/locale (a locale
    /// directory, or the locale-archive when that is all the host has); false switches this
    /// off. Default ["C.UTF-8"].
    #[schemars(with = "Option<SwitchOrNames>")]
    #[schemars(example = ["C.UTF-8"])]
    pub locales: Option<Spanned<SwitchOrNames>>,
    /// `tzset`/`localtime`/`mktime`/`strftime` importers get /etc/localtime as the host has it
    /// and these zones of /usr/share/zoneinfo (["*"]: all of it); false switches this off.
    /// Default: the host's zone and UTC.
    #[schemars(with = "Option<SwitchOrNames>")]
    #[schemars(example = ["UTC", "Europe/Paris"])]
    pub timezones: Option<Spanned<SwitchOrNames>>,
    /// `getaddrinfo`/`gethostbyname`/`getnameinfo` importers get /etc/hosts, host.conf,
    /// gai.conf, resolv.conf when `[enter].network = "host"`, and the NSS modules of the
    /// `hosts:` line. Default true.
    pub resolver: Option<bool>,
    /// Programs that load libtinfo or libncurses get the terminfo entries of `terminals`.
    /// Default true.
    pub terminfo: Option<bool>,
    /// Terminal names whose terminfo entries are brought. Default xterm, xterm-256color, screen,
    /// screen-256color, tmux, tmux-256color, linux, vt100, dumb (those the host has).
    #[schemars(with = "Option<Vec<String>>")]
    pub terminals: Option<Vec<Spanned<String>>>,
}

/// `false` (switched off), `true` (the default list), or a list of names.
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(untagged)]
pub enum SwitchOrNames {
    /// true: the default list; false: none.
    Switch(bool),
    /// The names to bring.
    Names(#[schemars(with = "Vec<String>")] Vec<Spanned<String>>),
}

// A bool or a list; a hand-written visitor keeps the spans of the names (untagged would lose
// them) and says what is expected.
impl<'de> Deserialize<'de> for SwitchOrNames {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SwitchVisitor;
        impl<'de> Visitor<'de> for SwitchVisitor {
            type Value = SwitchOrNames;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false or a list of names such as [\"C.UTF-8\"]")
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<SwitchOrNames, E> {
                Ok(SwitchOrNames::Switch(value))
            }
            fn visit_seq<S: de::SeqAccess<'de>>(self, mut seq: S) -> Result<SwitchOrNames, S::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<Spanned<String>>()? {
                    names.push(name);
                }
                Ok(SwitchOrNames::Names(names))
            }
        }
        deserializer.deserialize_any(SwitchVisitor)
    }
}

/// A device node: a path such as "/dev/null", or a table when it needs more.
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(untagged)]
pub enum DeviceEntry {
    /// The device's path on the host, e.g. "/dev/null".
    Path(String),
    /// A device with options.
    Detailed(DeviceTable),
}

/// A program: a bare name or absolute path, or a table when it needs more.
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(untagged)]
pub enum BinaryEntry {
    /// A bare name such as "bash" (looked up in PATH) or an absolute host path.
    Name(String),
    /// A program with options.
    Detailed(BinaryTable),
}

/// The table form of a `binaries` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BinaryTable {
    /// A bare name such as "bash" (looked up in PATH) or an absolute host path.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Report the loader checks' errors for this program (a needed symbol version its library
    /// lacks, an undefined symbol resolved at start) as warnings instead of refusing the
    /// Jailfile: for a program that copes with them itself. Default false.
    #[serde(default)]
    pub allow_unresolved: bool,
}

// A string or a table, with serde's precise messages for the table form (see DeviceEntry).
impl<'de> Deserialize<'de> for BinaryEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BinaryVisitor;
        impl<'de> Visitor<'de> for BinaryVisitor {
            type Value = BinaryEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a program name such as \"bash\" or a table { name = \"...\" }")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<BinaryEntry, E> {
                Ok(BinaryEntry::Name(value.to_owned()))
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<BinaryEntry, M::Error> {
                BinaryTable::deserialize(de::value::MapAccessDeserializer::new(map)).map(BinaryEntry::Detailed)
            }
        }
        deserializer.deserialize_any(BinaryVisitor)
    }
}

/// The table form of a device entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceTable {
    /// The device's path on the host, e.g. "/dev/sda".
    #[schemars(with = "String")]
    pub path: Spanned<String>,
    /// Allow a device beyond the harmless character devices (/dev/null, /dev/zero, /dev/full,
    /// /dev/random, /dev/urandom, /dev/tty, /dev/ptmx, recognised by major:minor): block devices,
    /// /dev/mem, /dev/kmsg, /dev/fuse, consoles, SCSI generic... give the jail the host's disks,
    /// memory, kernel log or input.
    #[serde(default)]
    pub allow_unsafe_device: bool,
    /// Octal mode of the node, e.g. "0666". Default: the host node's mode.
    #[schemars(with = "Option<String>")]
    #[schemars(example = &"0666")]
    pub mode: Option<Spanned<String>>,
    /// Owner (a jail user name, "root", or a number). Default: root.
    #[schemars(with = "Option<String>")]
    pub owner: Option<Spanned<String>>,
    /// Group (a jail group name, "root", or a number). Default: root.
    #[schemars(with = "Option<String>")]
    pub group: Option<Spanned<String>>,
}

// A device is a string or a table; a hand-written visitor keeps serde's precise messages for
// the table form ("unknown field ...") instead of untagged's "did not match any variant".
impl<'de> Deserialize<'de> for DeviceEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DeviceVisitor;
        impl<'de> Visitor<'de> for DeviceVisitor {
            type Value = DeviceEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a device path such as \"/dev/null\" or a table { path = \"...\" }")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<DeviceEntry, E> {
                Ok(DeviceEntry::Path(value.to_owned()))
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<DeviceEntry, M::Error> {
                DeviceTable::deserialize(de::value::MapAccessDeserializer::new(map)).map(DeviceEntry::Detailed)
            }
        }
        deserializer.deserialize_any(DeviceVisitor)
    }
}

/// One `[[files]]` entry: either `src` (host path, directory or glob) or `path` + `content`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Host source: a file, a directory (copied recursively) or a glob such as "/usr/lib/python3.11/**".
    #[schemars(with = "Option<String>")]
    pub src: Option<Spanned<String>>,
    /// Where `src` goes in the jail. Default: the same path as on the host. For a directory or
    /// glob it is the directory that receives the matched tree. Ending in "/" it means "into
    /// this directory", as cp and rsync read it: a file `src` goes to `dest/<its name>`.
    #[schemars(with = "Option<String>")]
    pub dest: Option<Spanned<String>>,
    /// Jail path of a file with inline `content`.
    #[schemars(with = "Option<String>")]
    pub path: Option<Spanned<String>>,
    /// Inline content of the file at `path`.
    #[schemars(with = "Option<String>")]
    pub content: Option<Spanned<String>>,
    /// Octal mode override, e.g. "0644".
    #[schemars(with = "Option<String>")]
    #[schemars(example = &"0644")]
    pub mode: Option<Spanned<String>>,
    /// Owner override (a jail user name, "root", or a number). Default: root.
    #[schemars(with = "Option<String>")]
    pub owner: Option<Spanned<String>>,
    /// Group override (a jail group name, "root", or a number). Default: root.
    #[schemars(with = "Option<String>")]
    pub group: Option<Spanned<String>>,
    /// Keep setuid/setgid bits of copied files (stripped by default).
    #[serde(default)]
    pub setuid: bool,
}

/// One `[[links]]` entry: a symlink stated directly, its target not looked at on the host.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkEntry {
    /// Absolute path of the link in the jail.
    #[schemars(with = "String")]
    pub path: Spanned<String>,
    /// What the link points at, as written (absolute or relative; need not exist).
    #[schemars(with = "String")]
    pub target: Spanned<String>,
}

/// One `[[dirs]]` entry.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirEntry {
    /// Jail path of the directory.
    #[schemars(with = "String")]
    pub path: Spanned<String>,
    /// Octal mode, e.g. "1777". Default "0755".
    #[schemars(with = "Option<String>")]
    #[schemars(example = &"1777")]
    pub mode: Option<Spanned<String>>,
    /// Owner (a jail user name, "root", or a number). Default: root.
    #[schemars(with = "Option<String>")]
    pub owner: Option<Spanned<String>>,
    /// Group (a jail group name, "root", or a number). Default: root.
    #[schemars(with = "Option<String>")]
    pub group: Option<Spanned<String>>,
    /// Writable inside `jailprov enter` (still nosuid, nodev). The rest of the jail is mounted
    /// read-only there; the home directories of [[users]] are writable too. Jail root, in its
    /// user namespace, owns nothing of the host's: it writes where `mode` lets others (e.g.
    /// "1777"). Default false.
    #[serde(default)]
    pub writable: bool,
}

/// One `[[users]]` entry: a line of the jail's /etc/passwd (no password hash ever).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// Login name.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Numeric user id.
    #[schemars(with = "u32")]
    #[schemars(example = 1000)]
    pub uid: Spanned<u32>,
    /// Primary group id; a group named like the user is made when no `[[groups]]` has this gid.
    #[schemars(with = "u32")]
    #[schemars(example = 1000)]
    pub gid: Spanned<u32>,
    /// Home directory in the jail, created and owned by the user; writable inside `jailprov
    /// enter` (the rest of the jail is read-only there, but for `writable` [[dirs]]). Default "/"
    /// (then nothing is made writable for the user).
    #[schemars(with = "Option<String>")]
    pub home: Option<Spanned<String>>,
    /// Login shell in the jail. Default "/bin/sh".
    #[schemars(with = "Option<String>")]
    pub shell: Option<Spanned<String>>,
    /// Free-text GECOS field.
    pub gecos: Option<String>,
}

/// One `[[groups]]` entry: a line of the jail's /etc/group.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupEntry {
    /// Group name.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Numeric group id.
    #[schemars(with = "u32")]
    #[schemars(example = 1000)]
    pub gid: Spanned<u32>,
    /// Names of declared users who are supplementary members.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    #[schemars(example = ["app"])]
    pub members: Vec<Spanned<String>>,
}

/// What a mount is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A host directory or file bound into the jail.
    Bind,
    /// A fresh /proc for the jail's PID namespace.
    Proc,
    /// A memory file system.
    Tmpfs,
    /// A read-only /sys.
    Sysfs,
    /// A new devpts instance for /dev/pts.
    Devpts,
    /// A POSIX message-queue file system.
    Mqueue,
}

/// One `[[mounts]]` entry.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MountEntry {
    /// bind | proc | tmpfs | sysfs | devpts | mqueue
    #[schemars(with = "MountKind")]
    pub kind: Spanned<MountKind>,
    /// Host path of a bind mount.
    #[schemars(with = "Option<String>")]
    pub source: Option<Spanned<String>>,
    /// Jail path where it is mounted.
    #[schemars(with = "Option<String>")]
    pub target: Option<Spanned<String>>,
    /// Mount read-only (really: bind mounts are remounted read-only).
    #[serde(default)]
    pub readonly: bool,
    /// Extra flags: nosuid, nodev, noexec, noatime, nodiratime, relatime, strictatime.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub options: Vec<Spanned<String>>,
    /// Size limit of a tmpfs, e.g. "64M".
    #[schemars(with = "Option<String>")]
    pub size: Option<Spanned<String>>,
    /// Octal mode of a tmpfs root, e.g. "1777".
    #[schemars(with = "Option<String>")]
    #[schemars(example = &"1777")]
    pub mode: Option<Spanned<String>>,
    /// true: `apply` mounts it on the host (for sshd's ChrootDirectory); false: only inside `enter`.
    #[serde(default)]
    pub persistent: bool,
}

/// A namespace `enter` can create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Namespace {
    /// Private mount table (always used by enter).
    Mount,
    /// Own process tree; the command is PID 1's child.
    Pid,
    /// Own hostname.
    Uts,
    /// Own System V IPC and POSIX message queues.
    Ipc,
    /// Own network stack with only `lo`.
    Net,
    /// Own user ids: jail root maps to an unprivileged host id.
    User,
    /// Own cgroup root view.
    Cgroup,
}

/// Which network the jail sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A fresh network namespace with only loopback.
    None,
    /// The host's network (no network namespace).
    Host,
    /// A network namespace of its own with a user-mode stack (pasta, Debian's `passt`) that
    /// reaches out and publishes `ports` on the host.
    Private,
}

/// What `enter` puts at /dev.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DevMode {
    /// Only the jail's own /dev on disk (the declared `devices`): what sshd's ChrootDirectory or
    /// a plain chroot sees.
    None,
    /// The default: a tmpfs /dev with null, zero, full, random, urandom and tty from the host, a
    /// private devpts, a /dev/shm tmpfs and the fd/stdin/stdout/stderr links (as `bwrap --dev`),
    /// plus the declared `devices` and the jail's own links and directories under /dev.
    Minimal,
}

/// Resource limits for the entered command.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// RLIMIT_NOFILE: open files.
    pub nofile: Option<u64>,
    /// RLIMIT_NPROC, and the cgroup pids limit where available.
    pub nproc: Option<u64>,
    /// Memory limit (cgroup v2 memory.max, else RLIMIT_AS), e.g. "256M".
    #[schemars(with = "Option<String>")]
    pub memory: Option<Spanned<String>>,
    /// RLIMIT_CPU: CPU seconds.
    pub cpu: Option<u64>,
    /// RLIMIT_FSIZE: largest file the command may write, e.g. "1G".
    #[schemars(with = "Option<String>")]
    pub fsize: Option<Spanned<String>>,
}

/// The `[enter]` table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnterSection {
    /// Command and arguments run by `jailprov enter` without `-- CMD`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    #[schemars(example = ["/bin/sh", "-c", "echo hello"])]
    pub command: Vec<Spanned<String>>,
    /// Declared user to run as, or "root". Default: root.
    #[schemars(with = "Option<String>")]
    pub user: Option<Spanned<String>>,
    /// Working directory in the jail. Default: the user's home.
    #[schemars(with = "Option<String>")]
    pub workdir: Option<Spanned<String>>,
    /// Hostname inside the jail's UTS namespace.
    #[schemars(with = "Option<String>")]
    pub hostname: Option<Spanned<String>>,
    /// The whole environment of the command (nothing is inherited but TERM from a TTY).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub env: BTreeMap<Spanned<String>, String>,
    /// Namespaces to create. Default: mount, pid, uts, ipc, net.
    #[schemars(with = "Option<Vec<Namespace>>")]
    #[schemars(example = ["mount", "pid"])]
    pub namespaces: Option<Vec<Spanned<Namespace>>>,
    /// none (only loopback, the default), private (own namespace, user-mode stack) or host.
    #[schemars(with = "Option<NetworkMode>")]
    pub network: Option<Spanned<NetworkMode>>,
    /// With network = "private": jail ports published on the host, "[ADDRESS:]HOSTPORT:JAILPORT[/tcp|/udp]",
    /// e.g. "127.0.0.1:8080:80/tcp".
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    #[schemars(example = ["127.0.0.1:8080:80/tcp"])]
    pub ports: Vec<Spanned<String>>,
    /// With network = "private": whether the jail may connect out. Default true.
    #[schemars(with = "Option<bool>")]
    pub egress: Option<Spanned<bool>>,
    /// minimal (the default: a tmpfs /dev as `bwrap --dev`, declared `devices` bound onto it) or
    /// none (only the jail's /dev on disk).
    #[schemars(with = "Option<DevMode>")]
    pub dev: Option<Spanned<DevMode>>,
    /// Resource limits.
    pub limits: Option<Limits>,
    /// Capabilities kept (e.g. "CAP_NET_BIND_SERVICE"); all others are dropped.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    #[schemars(example = ["CAP_NET_BIND_SERVICE"])]
    pub capabilities: Vec<Spanned<String>>,
    /// The default seccomp filter (denies mount, chroot, ptrace, ...). Default true.
    pub seccomp: Option<bool>,
    /// Run a root jail user as the real host root (uid 0 on the host, no user namespace).
    /// Default false: jail root gets a user namespace, jail ids 0-65535 mapped to host ids
    /// 0x60000000 and up, so nothing it creates is root's on the host. `enter` warns on every run
    /// when this is true.
    #[serde(default)]
    pub allow_host_root: bool,
}

/// The JSON schema of Jailfile.toml, as committed in schemas/jailfile.schema.json.
pub fn json_schema() -> String {
    crate::json::schema_of::<Jailfile>()
}
