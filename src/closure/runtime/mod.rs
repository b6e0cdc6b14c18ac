//! Run-time needs: what glibc and the common libraries open while a program runs (gconv
//! modules, libgcc_s, locales, zoneinfo, resolver files, terminfo), brought when an object of the
//! jail imports the function that opens them. Never by guess: each addition names the import
//! that asked for it (`Origin::Runtime`).

mod gconv;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use rayon::prelude::*;

use super::dynsym::SymbolFacts;
use super::elf::ElfIdent;
use super::loader::{LoadResult, Loader};
use super::{jail_path_of, Builder, EntryKind, Origin};
use crate::jailfile::NetworkMode;
use crate::spec::{LocaleSource, Spec, Timezones, ZONEINFO_DIR};
use crate::tree::JailPath;

/// One thing a program opens while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Need {
    /// gconv modules, for `iconv_open`.
    Iconv,
    /// libgcc_s.so.1, which glibc dlopens to unwind (`pthread_cancel`, `backtrace`...).
    Unwind,
    /// Compiled locales, for `setlocale`/`newlocale`.
    Locales,
    /// /etc/localtime and zoneinfo, for `tzset`, `localtime`...
    Timezones,
    /// /etc/hosts and the resolver's configuration, for `getaddrinfo`...
    Resolver,
    /// terminfo entries, for libtinfo and libncurses users.
    Terminfo,
    /// /dev/log, for `openlog`/`syslog`: only a note (a socket is mounted, not copied).
    Syslog,
}

impl Need {
    /// The `[runtime]` key that switches it.
    pub fn key(self) -> &'static str {
        match self {
            Need::Iconv => "iconv",
            Need::Unwind => "unwind",
            Need::Locales => "locales",
            Need::Timezones => "timezones",
            Need::Resolver => "resolver",
            Need::Terminfo => "terminfo",
            Need::Syslog => "syslog",
        }
    }
}

impl fmt::Display for Need {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.key())
    }
}

/// The run-time need an imported function name triggers, if any.
pub fn need_of_symbol(name: &[u8]) -> Option<Need> {
    Some(match name {
        b"iconv_open" => Need::Iconv,
        b"pthread_cancel" | b"pthread_exit" | b"backtrace" => Need::Unwind,
        _ if name.starts_with(b"_Unwind_") => Need::Unwind,
        b"setlocale" | b"newlocale" => Need::Locales,
        b"tzset" | b"localtime" | b"localtime_r" | b"mktime" | b"strftime" | b"strftime_l" | b"ctime" | b"ctime_r" => {
            Need::Timezones
        }
        b"getaddrinfo" | b"gethostbyname" | b"gethostbyname_r" | b"gethostbyname2" | b"gethostbyname2_r"
        | b"getnameinfo" | b"gethostbyaddr" | b"gethostbyaddr_r" => Need::Resolver,
        b"openlog" | b"syslog" | b"vsyslog" => Need::Syslog,
        _ => return None,
    })
}

/// Whether a DT_NEEDED name is a terminfo reader (libtinfo, libncurses, libncursesw...).
pub fn reads_terminfo(soname: &str) -> bool {
    soname.starts_with("libtinfo.so") || soname.starts_with("libncurses")
}

/// One run-time need of one object: the first import (or loaded library) that triggers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    pub need: Need,
    pub symbol: Arc<str>,
}

/// The needs an object's imports trigger, one [`Import`] per need. `needed` is its DT_NEEDED:
/// an `_Unwind_*` import of an object that links libgcc_s itself is met by the loader.
pub fn imports_of(facts: &SymbolFacts, needed: &[String]) -> Vec<Import> {
    let links_libgcc = needed.iter().any(|name| name == LIBGCC_S);
    let mut imports: Vec<Import> = Vec::new();
    for reference in &facts.undefined {
        let name = facts.name_of(reference);
        let Some(need) = need_of_symbol(name) else { continue };
        if need == Need::Unwind && links_libgcc && name.starts_with(b"_Unwind_") {
            continue;
        }
        if !imports.iter().any(|known| known.need == need) {
            imports.push(Import { need, symbol: String::from_utf8_lossy(name).into() });
        }
    }
    imports
}

/// A program's imports, and the terminfo need of a program whose load brings a terminfo reader.
pub fn program_imports(facts: &SymbolFacts, needed: &[String], load: &LoadResult) -> Vec<Import> {
    let mut imports = imports_of(facts, needed);
    if let Some(reader) = load.objects.iter().find(|object| reads_terminfo(&object.name)) {
        imports.push(Import { need: Need::Terminfo, symbol: reader.name.as_str().into() });
    }
    imports
}

/// The soname glibc dlopens for unwinding.
const LIBGCC_S: &str = "libgcc_s.so.1";

/// Resolver files brought when the host has them; resolv.conf only with the host's network.
const RESOLVER_FILES: &[&str] = &["/etc/hosts", "/etc/host.conf", "/etc/gai.conf"];

/// An object of the jail that triggers a need: the import, its jail path and its host path.
#[derive(Debug, Clone)]
pub(super) struct Importer {
    pub(super) import: Import,
    pub(super) jail_path: JailPath,
    pub(super) host_path: PathBuf,
}

impl Importer {
    fn origin(&self) -> Origin {
        Origin::runtime(self.import.need, self.import.symbol.clone(), self.jail_path.clone())
    }
}

/// Adds what the jail's objects open at run time: programs' imports were read with their
/// symbol checks; each library of the jail is scanned here, once.
pub(super) fn add_runtime(spec: &Spec, loader: &Loader, builder: &mut Builder) -> Result<()> {
    let runtime = &spec.runtime;
    let switched_on = |need: Need| match need {
        Need::Iconv => runtime.iconv.is_some(),
        Need::Unwind => runtime.unwind,
        Need::Locales => runtime.locales.as_ref().is_some_and(|locales| !locales.is_empty()),
        Need::Timezones => runtime.timezones.is_some(),
        Need::Resolver => runtime.resolver,
        Need::Terminfo => runtime.terminfo.as_ref().is_some_and(|files| !files.is_empty()),
        Need::Syslog => runtime.syslog,
    };
    if ![Need::Iconv, Need::Unwind, Need::Locales, Need::Timezones, Need::Resolver, Need::Terminfo, Need::Syslog]
        .into_iter()
        .any(switched_on)
    {
        return Ok(());
    }
    let _t = crate::timings::phase("closure: run-time needs, libraries' imports");
    let mut importers = std::mem::take(&mut builder.importers);
    importers.extend(library_importers(loader, builder)?);
    drop(_t);
    let _t = crate::timings::phase("closure: run-time needs, their files");
    let mut by_need: BTreeMap<Need, Vec<Importer>> = BTreeMap::new();
    for importer in importers.into_iter().filter(|importer| switched_on(importer.import.need)) {
        by_need.entry(importer.import.need).or_default().push(importer);
    }
    for (need, mut importers) in by_need {
        importers.sort_by(|a, b| a.jail_path.cmp(&b.jail_path));
        importers.dedup_by(|a, b| a.jail_path == b.jail_path);
        let _need = crate::timings::phase(match need {
            Need::Iconv => "  run-time: iconv",
            Need::Unwind => "  run-time: unwind",
            Need::Locales => "  run-time: locales",
            Need::Timezones => "  run-time: timezones",
            Need::Resolver => "  run-time: resolver",
            Need::Terminfo => "  run-time: terminfo",
            Need::Syslog => "  run-time: syslog",
        });
        let mut adder = Adder::new(&mut *builder, &importers);
        match need {
            Need::Iconv => {
                let charsets = runtime.iconv.as_ref().expect("switched on");
                for (ident, group) in by_architecture(loader, &importers)? {
                    gconv::add_gconv(loader, &mut Adder::new(&mut *adder.builder, &group), &ident, charsets)?;
                }
            }
            Need::Unwind => {
                for (ident, group) in by_architecture(loader, &importers)? {
                    add_libgcc(loader, &mut Adder::new(&mut *adder.builder, &group), &ident)?;
                }
            }
            Need::Locales => {
                for source in runtime.locales.iter().flatten() {
                    match source {
                        LocaleSource::Dir(dir) => adder.tree(dir)?,
                        LocaleSource::Archive(archive) => {
                            adder.file(archive)?;
                        }
                    }
                }
            }
            Need::Timezones => {
                if adder.builder.host.symlink_metadata(Path::new("/etc/localtime")).is_ok() {
                    adder.file(Path::new("/etc/localtime"))?;
                }
                match runtime.timezones.as_ref().expect("switched on") {
                    Timezones::All => adder.tree(Path::new(ZONEINFO_DIR))?,
                    Timezones::Zones(zones) => {
                        for zone in zones {
                            adder.file(zone)?;
                        }
                    }
                }
            }
            Need::Resolver => {
                let mut files: Vec<&str> = RESOLVER_FILES.to_vec();
                match spec.enter.network {
                    NetworkMode::Host => files.push("/etc/resolv.conf"),
                    // A private network's /etc/hosts is jailprov's own (src/desired.rs): the
                    // host's names and addresses mean nothing behind pasta.
                    NetworkMode::Private => files.retain(|file| *file != "/etc/hosts"),
                    _ => {}
                }
                for file in files {
                    if adder.builder.host.metadata(Path::new(file)).is_ok_and(|metadata| metadata.is_file()) {
                        adder.file(Path::new(file))?;
                    }
                }
            }
            Need::Terminfo => {
                for file in runtime.terminfo.iter().flatten() {
                    adder.file(file)?;
                }
            }
            Need::Syslog => note_syslog(spec, adder.builder, &importers),
        }
    }
    Ok(())
}

/// The imports of every library placed so far, each library scanned once. Its symbols were
/// read (and kept) by the loader for the programs' symbol checks: this reads no file again.
fn library_importers(loader: &Loader, builder: &Builder) -> Result<Vec<Importer>> {
    let mut libraries: Vec<(&JailPath, &std::ffi::OsString)> = builder
        .resolved
        .iter()
        .filter(|(_, placement)| {
            builder.entries.get(&placement.path).is_some_and(|entry| entry.kind == EntryKind::Library)
        })
        .map(|(spelled, placement)| (&placement.path, spelled))
        .collect();
    libraries.sort();
    libraries.dedup_by(|a, b| a.0 == b.0);
    let found: Vec<Vec<Importer>> = libraries
        .par_iter()
        .map(|(jail_path, spelled)| {
            let host_path = Path::new(spelled.as_os_str());
            let Some(info) = loader.elf(host_path)? else { return Ok(Vec::new()) };
            Ok(library_imports(loader, host_path, &info.needed)?
                .into_iter()
                .map(|import| Importer { import, jail_path: (*jail_path).clone(), host_path: host_path.to_path_buf() })
                .collect())
        })
        .collect::<Result<_>>()?;
    Ok(found.into_iter().flatten().collect())
}

/// The needs a library's imports trigger: remembered by its file identity, or read now.
fn library_imports(loader: &Loader, host_path: &Path, needed: &[String]) -> Result<Vec<Import>> {
    let identity = loader.identity_of(host_path);
    if let Some(remembered) = identity.as_ref().and_then(|identity| loader.closure_cache().imports(identity)) {
        return Ok(remembered);
    }
    let imports = imports_of(&*loader.symbols(host_path)?, needed);
    if let Some(identity) = identity {
        loader.closure_cache().learn_imports(identity, &imports);
    }
    Ok(imports)
}

/// Importers grouped by ELF architecture (a module must match the program that loads it).
fn by_architecture(loader: &Loader, importers: &[Importer]) -> Result<Vec<(ElfIdent, Vec<Importer>)>> {
    let mut groups: Vec<(ElfIdent, Vec<Importer>)> = Vec::new();
    for importer in importers {
        let Some(info) = loader.elf(&importer.host_path)? else { continue };
        match groups.iter_mut().find(|(ident, _)| *ident == info.ident) {
            Some((_, group)) => group.push(importer.clone()),
            None => groups.push((info.ident, vec![importer.clone()])),
        }
    }
    Ok(groups)
}

/// libgcc_s.so.1 where libc's dlopen finds it (the host's ld.so.cache), with what it loads.
fn add_libgcc(loader: &Loader, adder: &mut Adder, ident: &ElfIdent) -> Result<()> {
    match loader.find_for_dlopen(LIBGCC_S, ident)? {
        Some(path) => {
            let load = loader.load_library(&path)?;
            let own = adder.file(&path)?;
            adder.builder.add_load(&load, &own, EntryKind::Library)
        }
        None => {
            let first = &adder.importers[0];
            adder.builder.warn(format!(
                "{} imports {} (glibc then dlopens {LIBGCC_S}), but the host has no {LIBGCC_S}: it will abort in the \
                 jail when it unwinds; install libgcc-s1, or set `unwind = false` in [runtime] to silence this",
                first.jail_path, first.import.symbol
            ));
            Ok(())
        }
    }
}

/// The note for `openlog`/`syslog` importers: /dev/log is a socket of the host's logger, which
/// only a bind mount brings.
fn note_syslog(spec: &Spec, builder: &mut Builder, importers: &[Importer]) {
    let mounted = spec.mounts.iter().any(|mount| {
        let target = mount.target.as_str();
        target == "/dev/log" || target == "/dev" || target == "/run/systemd/journal"
    });
    if mounted || importers.is_empty() {
        return;
    }
    let names: Vec<String> = importers
        .iter()
        .take(3)
        .map(|importer| format!("{} ({})", importer.jail_path, importer.import.symbol))
        .collect();
    let more = importers.len().saturating_sub(3);
    let more = if more > 0 { format!(" and {more} more") } else { String::new() };
    let link_target = builder.host.read_link(Path::new("/dev/log")).ok();
    builder.closure.notes.push(format!(
        "{}{more} log through syslog(3), which writes to the socket /dev/log: the jail has none, so those \
         messages are lost. To keep them, add to {}:\n{}",
        names.join(", "),
        spec.jailfile.display(),
        syslog_lines(link_target.as_deref())
    ));
}

/// The Jailfile lines that give a jail the host's /dev/log. A mount goes onto a directory: where
/// /dev/log is a link (systemd: to /run/systemd/journal/dev-log), the link is copied and the
/// socket's directory bound; else /dev/log itself is bound.
fn syslog_lines(dev_log_target: Option<&Path>) -> String {
    let socket_dir = dev_log_target.filter(|target| target.is_absolute()).and_then(Path::parent);
    match socket_dir {
        Some(dir) => format!(
            "  [[files]]\n  src = \"/dev/log\"\n  [[mounts]]\n  kind = \"bind\"\n  source = \"{0}\"\n  target = \"{0}\"",
            dir.display()
        ),
        None => "  [[mounts]]\n  kind = \"bind\"\n  source = \"/dev/log\"\n  target = \"/dev/log\"".to_owned(),
    }
}

/// Places host paths for a need, each needed by every importer of it.
struct Adder<'b, 'a, 'i> {
    builder: &'b mut Builder<'a>,
    importers: &'i [Importer],
    /// The importers' origins, made once (not once per file).
    origins: Vec<Origin>,
}

impl<'b, 'a, 'i> Adder<'b, 'a, 'i> {
    fn new(builder: &'b mut Builder<'a>, importers: &'i [Importer]) -> Adder<'b, 'a, 'i> {
        let origins = importers.iter().map(Importer::origin).collect();
        Adder { builder, importers, origins }
    }
}

impl Adder<'_, '_, '_> {
    /// One host file (the links on its way kept); returns its jail path.
    fn file(&mut self, host_path: &Path) -> Result<JailPath> {
        let mut placed = None;
        for origin in &self.origins {
            placed = Some(self.builder.add_host_path(host_path, EntryKind::RuntimeFile, origin.clone())?);
        }
        match placed {
            Some(path) => Ok(path),
            None => jail_path_of(host_path),
        }
    }

    /// A symlink kept as it is (its target is in the same tree, or brought on its own).
    fn link(&mut self, host_path: &Path) -> Result<()> {
        let target = self.builder.host.read_link(host_path)?;
        let jail_path = jail_path_of(host_path)?;
        for importer in self.importers {
            let entry = self.builder.add(
                jail_path.clone(),
                EntryKind::Symlink,
                Some(host_path.to_path_buf()),
                importer.origin(),
            );
            entry.kind = EntryKind::Symlink;
            entry.target = Some(target.to_string_lossy().into_owned());
        }
        Ok(())
    }

    /// Every file and symlink under a host directory (links kept as links, not followed).
    fn tree(&mut self, dir: &Path) -> Result<()> {
        let dir = self.builder.host.resolve(dir)?.path;
        let mut pending = vec![dir];
        while let Some(current) = pending.pop() {
            let entries = self.builder.host.read_dir(&current).map_err(|error| {
                anyhow::anyhow!("cannot list {} for the jail's run-time needs: {error}", current.display())
            })?;
            let mut names: Vec<_> = entries.filter_map(|entry| entry.ok()).map(|entry| entry.file_name()).collect();
            names.sort();
            for name in names {
                let path = current.join(name);
                let metadata = self.builder.host.symlink_metadata(&path)?;
                if metadata.is_dir() {
                    pending.push(path);
                } else if metadata.file_type().is_symlink() {
                    self.link(&path)?;
                } else if metadata.is_file() {
                    self.file(&path)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
