//! `[runtime]`: which run-time needs the closure brings, each list checked against the host.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::Validator;
use crate::diagnostics::{closest, Problem};
use crate::host::HostFs;
use crate::jailfile::{RuntimeSection, SwitchOrNames};

/// Where glibc looks for compiled locales (no LOCPATH in a jail).
pub const LOCALE_DIR: &str = "/usr/lib/locale";
/// Where glibc reads time zones (TZDIR unset).
pub const ZONEINFO_DIR: &str = "/usr/share/zoneinfo";
/// ncurses' system terminfo directories, in the order Debian's ncurses searches them.
pub const TERMINFO_DIRS: &[&str] = &["/etc/terminfo", "/lib/terminfo", "/usr/share/terminfo"];
/// Terminals a jail gets without `terminals`: the ones a user is likely to enter with.
pub const DEFAULT_TERMINALS: &[&str] =
    &["xterm", "xterm-256color", "screen", "screen-256color", "tmux", "tmux-256color", "linux", "vt100", "dumb"];
/// The locale a jail gets without `locales`.
pub const DEFAULT_LOCALES: &[&str] = &["C.UTF-8"];

/// The run-time needs switched on, each with what it brings (None: switched off).
#[derive(Debug, Clone, Default)]
pub struct RuntimeSpec {
    pub iconv: Option<Charsets>,
    pub unwind: bool,
    pub locales: Option<Vec<LocaleSource>>,
    pub timezones: Option<Timezones>,
    pub resolver: bool,
    /// The terminfo files of the terminals.
    pub terminfo: Option<Vec<PathBuf>>,
    /// The `/dev/log` note for `openlog`/`syslog` importers.
    pub syslog: bool,
}

/// Which gconv modules `iconv_open` importers get (checked against the gconv-modules of the
/// jail's libc by the closure, which knows which libc that is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charsets {
    All,
    /// (key, name as written), e.g. ("runtime.charsets[0]", "ISO-8859-1").
    Named(Vec<(String, String)>),
}

/// Where one locale's files are on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocaleSource {
    /// A compiled locale directory (/usr/lib/locale/C.utf8).
    Dir(PathBuf),
    /// The locale-archive that holds it (brought whole: glibc maps it as one file).
    Archive(PathBuf),
}

/// The zones `tz*` importers get, besides /etc/localtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timezones {
    /// The whole of /usr/share/zoneinfo.
    All,
    /// Zone files (host paths under /usr/share/zoneinfo).
    Zones(Vec<PathBuf>),
}

impl RuntimeSpec {
    /// Every need on, with the defaults this host has.
    pub fn defaults(host: &HostFs) -> RuntimeSpec {
        RuntimeSpec {
            iconv: Some(Charsets::All),
            unwind: true,
            locales: Some(default_locales(host)),
            timezones: Some(Timezones::Zones(default_zones(host))),
            resolver: true,
            terminfo: Some(DEFAULT_TERMINALS.iter().filter_map(|name| terminfo_file(host, name)).collect()),
            syslog: true,
        }
    }

    /// Every need off.
    pub fn off() -> RuntimeSpec {
        RuntimeSpec::default()
    }
}

impl Validator<'_> {
    pub(super) fn runtime(&mut self, section: Option<&Spanned<RuntimeSection>>) -> RuntimeSpec {
        let Some(section) = section.map(Spanned::get_ref) else { return RuntimeSpec::defaults(self.host) };
        if section.enabled == Some(false) {
            return RuntimeSpec::off();
        }
        let on = |switch: Option<bool>| switch.unwrap_or(true);
        let charsets = match &section.charsets {
            None => Charsets::All,
            Some(names) => Charsets::Named(
                names
                    .iter()
                    .enumerate()
                    .map(|(index, name)| (format!("runtime.charsets[{index}]"), name.get_ref().clone()))
                    .collect(),
            ),
        };
        let terminfo = on(section.terminfo).then(|| match &section.terminals {
            None => DEFAULT_TERMINALS.iter().filter_map(|name| terminfo_file(self.host, name)).collect(),
            Some(names) => self.terminals(names),
        });
        RuntimeSpec {
            iconv: on(section.iconv).then_some(charsets),
            unwind: on(section.unwind),
            locales: self.locales(section.locales.as_ref()),
            timezones: self.timezones(section.timezones.as_ref()),
            resolver: on(section.resolver),
            terminfo,
            syslog: true,
        }
    }

    fn locales(&mut self, locales: Option<&Spanned<SwitchOrNames>>) -> Option<Vec<LocaleSource>> {
        let names = match locales.map(Spanned::get_ref) {
            None | Some(SwitchOrNames::Switch(true)) => return Some(default_locales(self.host)),
            Some(SwitchOrNames::Switch(false)) => return None,
            Some(SwitchOrNames::Names(names)) => names,
        };
        let mut sources = Vec::new();
        for (index, name) in names.iter().enumerate() {
            match find_locale(self.host, name.get_ref()) {
                Ok(Some(source)) if !sources.contains(&source) => sources.push(source),
                Ok(_) => {}
                Err(NoSuchLocale) => {
                    let known = host_locales(self.host);
                    let mut problem = Problem::at(
                        format!("runtime.locales[{index}]"),
                        name,
                        format!("the host has no such locale in {LOCALE_DIR}"),
                    );
                    problem = problem.with_help(match known.is_empty() {
                        true => {
                            "the host has no compiled locale: generate it (locale-gen, localedef) or drop it".into()
                        }
                        false => format!("the host has: {}", known.join(", ")),
                    });
                    self.report(problem);
                }
            }
        }
        Some(sources)
    }

    fn timezones(&mut self, timezones: Option<&Spanned<SwitchOrNames>>) -> Option<Timezones> {
        let names = match timezones.map(Spanned::get_ref) {
            None | Some(SwitchOrNames::Switch(true)) => return Some(Timezones::Zones(default_zones(self.host))),
            Some(SwitchOrNames::Switch(false)) => return None,
            Some(SwitchOrNames::Names(names)) => names,
        };
        if names.iter().any(|name| name.get_ref() == "*") {
            return Some(Timezones::All);
        }
        let mut zones = Vec::new();
        for (index, name) in names.iter().enumerate() {
            match zone_file(self.host, name.get_ref()) {
                Some(path) => zones.push(path),
                None => {
                    let problem = Problem::at(
                        format!("runtime.timezones[{index}]"),
                        name,
                        format!("no such zone in the host's {ZONEINFO_DIR}"),
                    );
                    let known = host_zones(self.host);
                    let help = match closest(name.get_ref(), known.iter().map(String::as_str)) {
                        Some(near) => format!("did you mean {near:?}?"),
                        None if known.is_empty() => "the host has no zoneinfo: install tzdata".to_owned(),
                        None => format!(
                            "a zone is a path under {ZONEINFO_DIR} such as \"Europe/Paris\" or \"UTC\"; \"*\" brings them all"
                        ),
                    };
                    self.report(problem.with_help(help));
                }
            }
        }
        Some(Timezones::Zones(zones))
    }

    fn terminals(&mut self, names: &[Spanned<String>]) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for (index, name) in names.iter().enumerate() {
            match terminfo_file(self.host, name.get_ref()) {
                Some(path) => files.push(path),
                None => {
                    let known = host_terminals(self.host);
                    let help = match closest(name.get_ref(), known.iter().map(String::as_str)) {
                        Some(near) => format!("did you mean {near:?}?"),
                        None => format!("the host's terminfo entries are in {}", TERMINFO_DIRS.join(", ")),
                    };
                    self.report(
                        Problem::at(
                            format!("runtime.terminals[{index}]"),
                            name,
                            "no terminfo entry for it on the host",
                        )
                        .with_help(help),
                    );
                }
            }
        }
        files
    }
}

/// The default locales the host has (a default the host lacks is no error).
fn default_locales(host: &HostFs) -> Vec<LocaleSource> {
    DEFAULT_LOCALES.iter().filter_map(|name| find_locale(host, name).ok().flatten()).collect()
}

/// The host's own zone and UTC, those it has.
fn default_zones(host: &HostFs) -> Vec<PathBuf> {
    let mut zones: Vec<PathBuf> =
        host_zone(host).into_iter().chain(["UTC".to_owned()]).filter_map(|zone| zone_file(host, &zone)).collect();
    zones.dedup();
    zones
}

/// A locale the host has neither as a directory nor in its archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoSuchLocale;

/// Where a locale's files are: Ok(None) for the built-in C and POSIX, Err when the host has
/// neither its directory nor an archive entry. glibc tries the name as written and with its
/// codeset normalized ("C.UTF-8" -> "C.utf8").
pub fn find_locale(host: &HostFs, name: &str) -> Result<Option<LocaleSource>, NoSuchLocale> {
    if name == "C" || name == "POSIX" {
        return Ok(None);
    }
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(NoSuchLocale);
    }
    let candidates = [name.to_owned(), normalize_locale_name(name)];
    for candidate in &candidates {
        let dir = Path::new(LOCALE_DIR).join(candidate);
        if host.metadata(&dir).is_ok_and(|metadata| metadata.is_dir()) {
            return Ok(Some(LocaleSource::Dir(dir)));
        }
    }
    let archive = Path::new(LOCALE_DIR).join("locale-archive");
    if archive_names(host, &archive).iter().any(|known| candidates.contains(known)) {
        return Ok(Some(LocaleSource::Archive(archive)));
    }
    Err(NoSuchLocale)
}

/// glibc's `_nl_normalize_codeset` applied to the codeset of `lang_TERRITORY.codeset@modifier`:
/// letters lowered, punctuation dropped, "iso" before an all-digit codeset.
pub fn normalize_locale_name(name: &str) -> String {
    let Some((before, rest)) = name.split_once('.') else { return name.to_owned() };
    let (codeset, modifier) = match rest.split_once('@') {
        Some((codeset, modifier)) => (codeset, Some(modifier)),
        None => (rest, None),
    };
    let mut normalized: String =
        codeset.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect();
    if normalized.chars().all(|c| c.is_ascii_digit()) {
        normalized.insert_str(0, "iso");
    }
    let modifier = modifier.map(|modifier| format!("@{modifier}")).unwrap_or_default();
    format!("{before}.{normalized}{modifier}")
}

/// The locales of the host: its locale directories and the archive's entries.
fn host_locales(host: &HostFs) -> Vec<String> {
    let mut names: Vec<String> = host
        .read_dir(Path::new(LOCALE_DIR))
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.extend(archive_names(host, &Path::new(LOCALE_DIR).join("locale-archive")));
    names.sort();
    names.dedup();
    names
}

/// The locale names a glibc locale-archive holds (none if it is missing or not one).
pub fn archive_names(host: &HostFs, archive: &Path) -> Vec<String> {
    use std::os::unix::fs::FileExt;
    let Ok(file) = host.open(archive) else { return Vec::new() };
    // Up to `length` bytes (fewer at the end of the file).
    let read = |offset: u64, length: usize| -> Option<Vec<u8>> {
        let mut bytes = vec![0u8; length];
        let read = file.read_at(&mut bytes, offset).ok()?;
        bytes.truncate(read);
        Some(bytes)
    };
    let Some(header) = read(0, 32) else { return Vec::new() };
    parse_archive_names(&header, read)
}

/// glibc's locarchive.h: the header's magic and name hash table, each used slot naming a
/// locale by an offset to its NUL-terminated name. `read(offset, length)` gives file bytes.
pub fn parse_archive_names(header: &[u8], read: impl Fn(u64, usize) -> Option<Vec<u8>>) -> Vec<String> {
    const MAGIC: u32 = 0xde02_0109;
    /// No real archive has more (all of glibc's locales are about 500).
    const MAX_SLOTS: u32 = 1 << 20;
    let word = |bytes: &[u8], index: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(bytes.get(index * 4..index * 4 + 4)?.try_into().ok()?))
    };
    let (Some(magic), Some(table), Some(slots)) = (word(header, 0), word(header, 2), word(header, 4)) else {
        return Vec::new();
    };
    if magic != MAGIC || slots > MAX_SLOTS {
        return Vec::new();
    }
    let Some(entries) = read(u64::from(table), slots as usize * 12) else { return Vec::new() };
    if entries.len() < slots as usize * 12 {
        return Vec::new();
    }
    let mut names = Vec::new();
    for slot in entries.chunks_exact(12) {
        let (Some(name_offset), Some(record)) = (word(slot, 1), word(slot, 2)) else { continue };
        if name_offset == 0 || record == 0 {
            continue;
        }
        let Some(bytes) = read(u64::from(name_offset), 256) else { continue };
        if let Some(end) = bytes.iter().position(|&byte| byte == 0) {
            names.push(String::from_utf8_lossy(&bytes[..end]).into_owned());
        }
    }
    names.sort();
    names
}

/// The host's zone: the /etc/localtime link's path below zoneinfo, else /etc/timezone.
pub fn host_zone(host: &HostFs) -> Option<String> {
    if let Ok(target) = host.read_link(Path::new("/etc/localtime")) {
        let target = target.to_string_lossy().into_owned();
        if let Some((_, zone)) = target.split_once("zoneinfo/") {
            return Some(zone.to_owned());
        }
    }
    let text = host.read(Path::new("/etc/timezone")).ok()?;
    let zone = String::from_utf8_lossy(&text).trim().to_owned();
    (!zone.is_empty()).then_some(zone)
}

/// The host file of a zone name ("Europe/Paris"), if it is one.
pub fn zone_file(host: &HostFs, zone: &str) -> Option<PathBuf> {
    let safe = !zone.is_empty()
        && !zone.starts_with('/')
        && zone.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
    let path = Path::new(ZONEINFO_DIR).join(zone);
    (safe && host.metadata(&path).is_ok_and(|metadata| metadata.is_file())).then_some(path)
}

/// Every zone name under the host's zoneinfo (for suggestions).
fn host_zones(host: &HostFs) -> Vec<String> {
    let mut zones = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let Ok(entries) = host.read_dir(&Path::new(ZONEINFO_DIR).join(&relative)) else { continue };
        for entry in entries.filter_map(|entry| entry.ok()) {
            let name = relative.join(entry.file_name());
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(name),
                Ok(_) => zones.push(name.to_string_lossy().into_owned()),
                Err(_) => {}
            }
        }
    }
    zones.sort();
    zones
}

/// The first terminfo file of a terminal name in ncurses' search order.
pub fn terminfo_file(host: &HostFs, name: &str) -> Option<PathBuf> {
    let first = name.chars().next()?;
    if name.contains('/') || name.starts_with('.') {
        return None;
    }
    TERMINFO_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(first.to_string()).join(name))
        .find(|path| host.metadata(path).is_ok_and(|metadata| metadata.is_file()))
}

/// Every terminal name with an entry on the host (for suggestions).
fn host_terminals(host: &HostFs) -> Vec<String> {
    let mut names = Vec::new();
    for dir in TERMINFO_DIRS {
        let Ok(letters) = host.read_dir(Path::new(dir)) else { continue };
        for letter in letters.filter_map(|entry| entry.ok()) {
            let Ok(entries) = host.read_dir(&Path::new(dir).join(letter.file_name())) else { continue };
            names.extend(
                entries.filter_map(|entry| entry.ok()).map(|entry| entry.file_name().to_string_lossy().into_owned()),
            );
        }
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locale_codesets_are_normalized_as_glibc_does() {
        assert_eq!(normalize_locale_name("C.UTF-8"), "C.utf8");
        assert_eq!(normalize_locale_name("de_DE.ISO-8859-1@euro"), "de_DE.iso88591@euro");
        assert_eq!(normalize_locale_name("ja_JP.eucJP"), "ja_JP.eucjp");
        assert_eq!(normalize_locale_name("en_US"), "en_US", "no codeset, nothing to normalize");
    }

    /// A locale-archive with `names` in its name hash table (and one empty slot).
    fn archive_with(names: &[&str]) -> Vec<u8> {
        let table_offset = 32u32;
        let slots = names.len() as u32 + 1;
        let strings_offset = table_offset + slots * 12;
        let mut header = Vec::new();
        for word in [0xde02_0109u32, 0, table_offset, names.len() as u32, slots, strings_offset, 0, 0] {
            header.extend_from_slice(&word.to_ne_bytes());
        }
        let mut table = Vec::new();
        let mut strings = Vec::new();
        for name in names {
            let offset = strings_offset + strings.len() as u32;
            for word in [1u32, offset, 4096] {
                table.extend_from_slice(&word.to_ne_bytes());
            }
            strings.extend_from_slice(name.as_bytes());
            strings.push(0);
        }
        table.extend_from_slice(&[0u8; 12]);
        [header, table, strings].concat()
    }

    #[test]
    fn archive_names_are_read_from_the_name_table() {
        let bytes = archive_with(&["en_US.utf8", "fr_FR.utf8"]);
        let read = |offset: u64, length: usize| {
            let start = usize::try_from(offset).ok()?;
            Some(bytes.get(start..)?.iter().copied().take(length).collect::<Vec<u8>>())
        };
        assert_eq!(parse_archive_names(&bytes[..32], read), ["en_US.utf8", "fr_FR.utf8"]);
    }

    #[test]
    fn a_file_that_is_not_an_archive_names_no_locale() {
        let mut bytes = archive_with(&["en_US.utf8"]);
        bytes[0] ^= 0xff;
        let read = |offset: u64, length: usize| {
            let start = usize::try_from(offset).ok()?;
            Some(bytes.get(start..)?.iter().copied().take(length).collect::<Vec<u8>>())
        };
        assert!(parse_archive_names(&bytes[..32], read).is_empty());
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // the test builds its sysroot with plain fs calls
    fn a_locale_only_the_archive_has_brings_the_archive_and_a_directory_wins_over_it() {
        let sysroot = tempfile::tempdir().expect("tempdir");
        let locale_dir = sysroot.path().join("usr/lib/locale");
        std::fs::create_dir_all(&locale_dir).expect("mkdir");
        std::fs::write(locale_dir.join("locale-archive"), archive_with(&["C.utf8", "fr_FR.utf8"])).expect("archive");
        let host = HostFs::new(sysroot.path());
        let archive = Path::new(LOCALE_DIR).join("locale-archive");
        assert_eq!(find_locale(&host, "fr_FR.UTF-8"), Ok(Some(LocaleSource::Archive(archive))));
        assert_eq!(find_locale(&host, "de_DE.UTF-8"), Err(NoSuchLocale));
        assert_eq!(find_locale(&host, "POSIX"), Ok(None), "built in");
        std::fs::create_dir(locale_dir.join("C.utf8")).expect("mkdir C.utf8");
        assert_eq!(find_locale(&host, "C.UTF-8"), Ok(Some(LocaleSource::Dir(Path::new(LOCALE_DIR).join("C.utf8")))));
        assert_eq!(host_locales(&host), ["C.utf8", "fr_FR.utf8"]);
    }

    #[test]
    fn zone_names_cannot_climb_out_of_zoneinfo() {
        let host = HostFs::real();
        assert_eq!(zone_file(&host, "../../../etc/passwd"), None);
        assert_eq!(zone_file(&host, "/etc/passwd"), None);
        assert_eq!(zone_file(&host, ""), None);
    }
}
