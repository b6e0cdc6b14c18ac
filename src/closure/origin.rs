//! Why a path is in the jail: one typed reason per way a path gets there, carried from the
//! closure to `closure`, `why`, the tree view and the lock without being parsed back from text.
//!
//! An origin shows as the text jailprov has always printed for it: the jail path of the entry
//! that needs the path (`/usr/bin/bash`), the Jailfile key that declares it (`binaries[0]`), or a
//! reason of jailprov's own (`users/groups`). Two origins can show alike (the ELF interpreter
//! of a program that also lists it in DT_NEEDED): lists show each text once.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use super::runtime::Need;
use crate::spec::{BinarySpec, DeviceSpec, DirSpec, FileSpec, HostSource, MountSpec};
use crate::tree::JailPath;

/// A Jailfile section whose entries declare paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    Binaries,
    Files,
    Dirs,
    Devices,
    Mounts,
}

impl Section {
    /// The section as the Jailfile spells it.
    pub fn name(self) -> &'static str {
        match self {
            Section::Binaries => "binaries",
            Section::Files => "files",
            Section::Dirs => "dirs",
            Section::Devices => "devices",
            Section::Mounts => "mounts",
        }
    }
}

/// One Jailfile entry that declares paths (shared by every path it brings).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Declaration {
    pub section: Section,
    /// Its key, as messages name it: `binaries[0]`, `files[2]`.
    pub key: String,
    /// What it declares, as written (`bash`, `/etc/motd`, a glob), for the entries the lock names
    /// by it: binaries, devices and files. Their index shifts when entries move within the
    /// Jailfile; what they declare does not.
    pub declares: Option<String>,
}

impl Declaration {
    pub fn binary(binary: &BinarySpec) -> Arc<Declaration> {
        Declaration::new(Section::Binaries, &binary.key, Some(binary.declared.clone()))
    }

    pub fn file(file: &FileSpec) -> Arc<Declaration> {
        let (key, declares) = match file {
            FileSpec::Host { key, source: HostSource::Path(path), .. } => (key, path.display().to_string()),
            FileSpec::Host { key, source: HostSource::Glob { pattern, .. }, .. } => (key, pattern.clone()),
            FileSpec::Inline { key, path, .. } => (key, path.as_str().to_owned()),
        };
        Declaration::new(Section::Files, key, Some(declares))
    }

    pub fn device(device: &DeviceSpec) -> Arc<Declaration> {
        Declaration::new(Section::Devices, &device.key, Some(device.path.as_str().to_owned()))
    }

    pub fn dir(dir: &DirSpec) -> Arc<Declaration> {
        Declaration::new(Section::Dirs, &dir.key, None)
    }

    pub fn mount(mount: &MountSpec) -> Arc<Declaration> {
        Declaration::new(Section::Mounts, &mount.key, None)
    }

    fn new(section: Section, key: &str, declares: Option<String>) -> Arc<Declaration> {
        Arc::new(Declaration { section, key: key.to_owned(), declares })
    }

    /// How the lock names the entry: by what it declares (`binaries "bash"`) where it can, so
    /// that moving an entry within the Jailfile does not rewrite every line of the lock it
    /// brings; else by its key.
    pub fn lasting_name(&self) -> String {
        match &self.declares {
            Some(declares) => format!("{} {declares:?}", self.section.name()),
            None => self.key.clone(),
        }
    }
}

/// Why a path is in the jail.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    /// Declared by a `binaries`, `[[files]]`, `[[dirs]]` or `devices` entry.
    Declared(Arc<Declaration>),
    /// The directory a `[[mounts]]` entry mounts on.
    MountTarget(Arc<Declaration>),
    /// The home directory of a `[[users]]` entry.
    Home { user: String },
    /// /etc/passwd or /etc/group, written for `[[users]]` and `[[groups]]`.
    Accounts,
    /// The nsswitch.conf jailprov writes when the jail has users, groups or network files.
    NameService,
    /// A directory link of the host's usr-merge layout (/bin -> usr/bin), so that paths written
    /// the old way work inside as on the host.
    UsrMerge,
    /// A shared library the object `by` loads under `soname` (DT_NEEDED).
    Needed { by: JailPath, soname: String },
    /// The ELF interpreter (PT_INTERP) of the program `of`.
    Interpreter { of: JailPath },
    /// The `#!` interpreter of the script `of`.
    Shebang { of: JailPath },
    /// The program the script `of` runs through `#!/usr/bin/env NAME`.
    Env { of: JailPath },
    /// An NSS module glibc loads for a `service` that `nsswitch` names.
    Nss { nsswitch: JailPath, service: String },
    /// What the symlink `link` (brought by `[[files]]`) points at.
    LinkTarget { link: JailPath },
    /// A symlink met on the way to `to`: in the jail for the same reason as `to`.
    Link { to: JailPath, reason: Box<Origin> },
    /// The jail's own /etc/ld.so.cache, for libraries the host finds only through the cache in
    /// these directories (listed in /etc/ld.so.conf.d, outside the loader's built-in ones).
    LibraryCache { dirs: Vec<String> },
    /// What the object `importer` opens at run time because it imports `symbol` (runtime.rs).
    /// `shown` is its text, made once ([`Origin::runtime`]): a locale file has an origin per
    /// program, compared and listed by text many times.
    Runtime { need: Need, symbol: Arc<str>, importer: JailPath, shown: Arc<str> },
    /// A gconv module the gconv configuration file `config` names (brought for `iconv_open`).
    GconvConfig { config: JailPath },
}

impl Origin {
    /// Why a run-time need of `importer` is in the jail: "run-time: iconv_open in /usr/bin/iconv".
    pub fn runtime(need: Need, symbol: Arc<str>, importer: JailPath) -> Origin {
        let shown = format!("run-time: {symbol} in {importer}").into();
        Origin::Runtime { need, symbol, importer, shown }
    }

    /// The entry of the jail this origin hangs on (the object that needs the path, the script
    /// it interprets...): the path leaves the jail when that entry does. None for a Jailfile
    /// declaration or a reason of jailprov's own, which always hold.
    pub fn needer(&self) -> Option<&JailPath> {
        match self {
            Origin::Needed { by: path, .. }
            | Origin::Interpreter { of: path }
            | Origin::Shebang { of: path }
            | Origin::Env { of: path }
            | Origin::Nss { nsswitch: path, .. }
            | Origin::LinkTarget { link: path }
            | Origin::Runtime { importer: path, .. }
            | Origin::GconvConfig { config: path } => Some(path),
            Origin::Link { reason, .. } => reason.needer(),
            Origin::Declared(_)
            | Origin::MountTarget(_)
            | Origin::Home { .. }
            | Origin::Accounts
            | Origin::NameService
            | Origin::LibraryCache { .. }
            | Origin::UsrMerge => None,
        }
    }

    /// The origin behind the symlinks met on the way.
    pub fn reason(&self) -> &Origin {
        match self {
            Origin::Link { reason, .. } => reason.reason(),
            origin => origin,
        }
    }

    /// The Jailfile entry behind it, if any (through symlinks met on the way).
    pub fn declaration(&self) -> Option<&Declaration> {
        match self.reason() {
            Origin::Declared(declaration) | Origin::MountTarget(declaration) => Some(declaration),
            _ => None,
        }
    }

    /// Whether its text is a key of the Jailfile (`binaries[0]`, `mounts[1].target`,
    /// `users.app.home`).
    pub fn is_jailfile_key(&self) -> bool {
        matches!(self.reason(), Origin::Declared(_) | Origin::MountTarget(_) | Origin::Home { .. })
    }

    /// How it shows in listings: the needing entry's path, the Jailfile key, or the reason.
    pub fn name(&self) -> Cow<'_, str> {
        match self {
            Origin::Declared(declaration) => Cow::Borrowed(&declaration.key),
            Origin::MountTarget(declaration) => Cow::Owned(format!("{}.target", declaration.key)),
            Origin::Home { user } => Cow::Owned(format!("users.{user}.home")),
            Origin::Accounts => Cow::Borrowed("users/groups"),
            Origin::NameService => Cow::Borrowed("users/groups/network files"),
            Origin::UsrMerge => Cow::Borrowed("usr-merge layout of the host"),
            Origin::LibraryCache { dirs } => Cow::Owned(format!("ld.so.cache for {}", dirs.join(", "))),
            Origin::Link { reason, .. } => reason.name(),
            Origin::Runtime { shown, .. } => Cow::Borrowed(shown),
            Origin::Needed { by: path, .. }
            | Origin::Interpreter { of: path }
            | Origin::Shebang { of: path }
            | Origin::Env { of: path }
            | Origin::Nss { nsswitch: path, .. }
            | Origin::GconvConfig { config: path }
            | Origin::LinkTarget { link: path } => Cow::Borrowed(path.as_str()),
        }
    }

    /// How the lock names it: like [`Origin::name`], but a binary, device or file entry by what
    /// it declares (see [`Declaration::lasting_name`]).
    pub fn lasting_name(&self) -> String {
        match self.reason() {
            Origin::Declared(declaration) => declaration.lasting_name(),
            origin => origin.name().into_owned(),
        }
    }

    /// The order listings show origins in: by their text, then by what lies behind it.
    pub fn listing_order(&self, other: &Origin) -> Ordering {
        self.name().cmp(&other.name()).then_with(|| self.cmp(other))
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.name())
    }
}

/// The origins of a list sorted by [`Origin::listing_order`], each text once (the first origin
/// that shows it).
pub fn shown_once(origins: &[Origin]) -> impl Iterator<Item = &Origin> {
    origins
        .iter()
        .enumerate()
        .filter(|(index, origin)| *index == 0 || origins[index - 1].name() != origin.name())
        .map(|(_, origin)| origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> JailPath {
        JailPath::parse(text).expect("a valid jail path")
    }

    fn declaration(section: Section, key: &str, declares: Option<&str>) -> Arc<Declaration> {
        Declaration::new(section, key, declares.map(str::to_owned))
    }

    #[test]
    fn origins_show_as_the_texts_closure_and_why_have_always_printed() {
        let bash = path("/usr/bin/bash");
        let shown = [
            (Origin::Declared(declaration(Section::Binaries, "binaries[0]", Some("bash"))), "binaries[0]"),
            (Origin::MountTarget(declaration(Section::Mounts, "mounts[1]", None)), "mounts[1].target"),
            (Origin::Home { user: "app".into() }, "users.app.home"),
            (Origin::Accounts, "users/groups"),
            (Origin::NameService, "users/groups/network files"),
            (Origin::UsrMerge, "usr-merge layout of the host"),
            (Origin::LibraryCache { dirs: vec!["/opt/lib".into()] }, "ld.so.cache for /opt/lib"),
            (Origin::Needed { by: bash.clone(), soname: "libc.so.6".into() }, "/usr/bin/bash"),
            (Origin::Interpreter { of: bash.clone() }, "/usr/bin/bash"),
            (Origin::Nss { nsswitch: path("/etc/nsswitch.conf"), service: "files".into() }, "/etc/nsswitch.conf"),
            (
                Origin::Link { to: path("/usr/bin/dash"), reason: Box::new(Origin::Shebang { of: bash }) },
                "/usr/bin/bash",
            ),
        ];
        for (origin, text) in shown {
            assert_eq!(origin.to_string(), text, "{origin:?}");
        }
    }

    #[test]
    fn the_lock_names_binaries_devices_and_files_by_what_they_declare_not_their_index() {
        let binary = Origin::Declared(declaration(Section::Binaries, "binaries[1]", Some("cat")));
        let device = Origin::Declared(declaration(Section::Devices, "devices[0]", Some("/dev/null")));
        let dir = Origin::Declared(declaration(Section::Dirs, "dirs[0]", None));
        let link = Origin::Link { to: path("/usr/bin/cat"), reason: Box::new(binary.clone()) };
        assert_eq!(binary.lasting_name(), "binaries \"cat\"");
        assert_eq!(device.lasting_name(), "devices \"/dev/null\"");
        assert_eq!(dir.lasting_name(), "dirs[0]", "a dir is named by its key, as it always was");
        assert_eq!(link.lasting_name(), "binaries \"cat\"", "a link on the way is named by its reason");
    }

    #[test]
    fn only_origins_that_hang_on_an_entry_leave_with_it() {
        let bash = path("/usr/bin/bash");
        assert_eq!(Origin::Needed { by: bash.clone(), soname: "libc.so.6".into() }.needer(), Some(&bash));
        let link = Origin::Link { to: path("/lib64"), reason: Box::new(Origin::Interpreter { of: bash.clone() }) };
        assert_eq!(link.needer(), Some(&bash), "a link on the way hangs on what its target hangs on");
        assert_eq!(Origin::UsrMerge.needer(), None);
        assert_eq!(Origin::Home { user: "app".into() }.needer(), None);
    }

    #[test]
    fn a_text_shown_by_two_origins_is_listed_once() {
        let program = path("/usr/bin/ldd-user");
        let mut origins = vec![
            Origin::Needed { by: program.clone(), soname: "ld-linux-x86-64.so.2".into() },
            Origin::Declared(declaration(Section::Files, "files[0]", Some("/lib"))),
            Origin::Interpreter { of: program },
        ];
        origins.sort_by(Origin::listing_order);
        let shown: Vec<String> = shown_once(&origins).map(Origin::to_string).collect();
        assert_eq!(shown, ["/usr/bin/ldd-user", "files[0]"]);
    }
}
