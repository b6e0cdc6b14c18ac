//! gconv: the configuration and charset modules glibc's `iconv_open` loads, from the gconv
//! directory of the jail's libc (GCONV_PATH unset), narrowed by `charsets`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use rayon::prelude::*;

use super::Adder;
use crate::closure::elf::ElfIdent;
use crate::closure::loader::Loader;
use crate::closure::{EntryKind, Origin};
use crate::diagnostics::closest;
use crate::spec::Charsets;

/// Charsets glibc converts itself (iconv/gconv_builtin.h): no module is loaded for them.
const BUILT_IN: &[&str] = &[
    "INTERNAL",
    "ISO-10646/UCS4/",
    "UCS-4//",
    "UCS-4BE//",
    "CSUCS4//",
    "ISO-10646//",
    "10646-1:1993//",
    "10646-1:1993/UCS4/",
    "OSF00010104//",
    "OSF00010105//",
    "OSF00010106//",
    "WCHAR_T//",
    "UCS-4LE//",
    "ISO-10646/UTF8/",
    "ISO-10646/UTF-8/",
    "ISO-IR-193//",
    "OSF05010001//",
    "UTF8//",
    "UTF-8//",
    "ISO-10646/UCS2/",
    "UCS-2//",
    "UCS2//",
    "OSF00010100//",
    "OSF00010101//",
    "OSF00010102//",
    "ANSI_X3.4//",
    "ISO-IR-6//",
    "ANSI_X3.4-1968//",
    "ANSI_X3.4-1986//",
    "ISO_646.IRV:1991//",
    "ASCII//",
    "ISO646-US//",
    "US-ASCII//",
    "US//",
    "IBM367//",
    "CP367//",
    "CSASCII//",
    "OSF00010020//",
    "UNICODEBIG//",
    "UCS-2BE//",
    "UCS-2LE//",
    "UNICODELITTLE//",
    "UTF-16//",
    "UTF-16LE//",
    "UTF-16BE//",
    "UTF-32//",
    "UTF-32LE//",
    "UTF-32BE//",
    "UTF-7//",
    "UTF7//",
    "UTF-7-IMAP//",
];

/// What the gconv configuration files say.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GconvConfig {
    /// Alias -> the name it stands for.
    pub aliases: BTreeMap<String, String>,
    /// (from, to, module file) of each `module` line, files as written.
    pub modules: Vec<(String, String, String)>,
}

impl GconvConfig {
    /// Reads `alias` and `module` lines (glibc's gconv_conf.c; the cost column is ignored).
    pub fn parse(&mut self, text: &str) {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["alias", alias, target, ..] => {
                    self.aliases.insert(alias.to_ascii_uppercase(), target.to_ascii_uppercase());
                }
                ["module", from, to, file, ..] => {
                    self.modules.push((from.to_ascii_uppercase(), to.to_ascii_uppercase(), (*file).to_owned()));
                }
                _ => {}
            }
        }
    }

    /// The module files that convert from or to a charset as iconv names it ("latin1",
    /// "ISO-8859-1"): empty for a built-in one, None for a name the configuration does not know.
    pub fn modules_for(&self, charset: &str) -> Option<BTreeSet<String>> {
        let mut name = charset.trim().to_ascii_uppercase();
        if !name.contains('/') {
            name.push_str("//");
        }
        let canonical = self.aliases.get(&name).cloned().unwrap_or(name.clone());
        if BUILT_IN.contains(&name.as_str()) || BUILT_IN.contains(&canonical.as_str()) {
            return Some(BTreeSet::new());
        }
        let files: BTreeSet<String> = self
            .modules
            .iter()
            .filter(|(from, to, _)| *from == canonical || *to == canonical)
            .map(|(_, _, file)| file.clone())
            .collect();
        (!files.is_empty()).then_some(files)
    }

    /// Every charset name it knows (for suggestions), without the trailing slashes.
    fn names(&self) -> BTreeSet<String> {
        let modules = self.modules.iter().flat_map(|(from, to, _)| [from, to]);
        self.aliases.keys().chain(modules).map(|name| name.trim_end_matches('/').to_owned()).collect()
    }
}

/// The gconv directory of the jail's libc for one architecture, its configuration, and the
/// modules `charsets` asks for (with what each loads).
pub(super) fn add_gconv(loader: &Loader, adder: &mut Adder, ident: &ElfIdent, charsets: &Charsets) -> Result<()> {
    let host = adder.builder.host;
    let Some(libc) = loader.find_for_dlopen("libc.so.6", ident)? else { return Ok(()) };
    let libc = host.resolve(&libc)?.path;
    let Some(dir) = libc.parent().map(|parent| parent.join("gconv")) else { return Ok(()) };
    if !host.metadata(&dir).is_ok_and(|metadata| metadata.is_dir()) {
        let first = &adder.importers[0];
        adder.builder.warn(format!(
            "{} imports {}, but the host has no gconv directory {}: conversions other than UTF-8 and ASCII will fail in \
             the jail",
            first.jail_path,
            first.import.symbol,
            dir.display()
        ));
        return Ok(());
    }
    let mut config = GconvConfig::default();
    let mut config_files = Vec::new();
    let main = dir.join("gconv-modules");
    if host.is_file(&main) {
        config.parse(&String::from_utf8_lossy(&host.read(&main)?));
        config_files.push(main);
    }
    let confd = dir.join("gconv-modules.d");
    if let Ok(entries) = host.read_dir(&confd) {
        let mut names: Vec<_> = entries.filter_map(|entry| entry.ok()).map(|entry| entry.file_name()).collect();
        names.sort();
        for name in names.into_iter().filter(|name| name.to_string_lossy().ends_with(".conf")) {
            let path = confd.join(name);
            if host.is_file(&path) {
                config.parse(&String::from_utf8_lossy(&host.read(&path)?));
                config_files.push(path);
            }
        }
    }
    let cache = dir.join("gconv-modules.cache");
    if host.is_file(&cache) {
        config_files.push(cache);
    }
    let mut configs = Vec::new();
    for file in &config_files {
        configs.push(adder.file(file)?);
    }
    // A module is loaded because a configuration file names it: it hangs on those files (and
    // leaves with the last of them), not on every importer of iconv_open again.
    let origins: Vec<Origin> = configs.into_iter().map(|config| Origin::GconvConfig { config }).collect();
    // Read in parallel (a few hundred small files), placed in order.
    let modules = module_files(&config, &dir, charsets, host)?;
    let loads: Vec<_> = modules.par_iter().map(|module| loader.load_library(module)).collect::<Result<_>>()?;
    for (module, load) in modules.iter().zip(loads) {
        let mut own = None;
        for origin in &origins {
            own = Some(adder.builder.add_host_path(module, EntryKind::RuntimeFile, origin.clone())?);
        }
        if let Some(own) = own {
            adder.builder.add_load(&load, &own, EntryKind::Library)?;
        }
    }
    Ok(())
}

/// The module files to bring: every `.so` of the directory, or those of the named charsets.
fn module_files(
    config: &GconvConfig,
    dir: &Path,
    charsets: &Charsets,
    host: &crate::host::HostFs,
) -> Result<Vec<PathBuf>> {
    let files: BTreeSet<String> = match charsets {
        Charsets::All => config.modules.iter().map(|(_, _, file)| file.clone()).collect(),
        Charsets::Named(names) => {
            let mut files = BTreeSet::new();
            for (key, name) in names {
                match config.modules_for(name) {
                    Some(found) => files.extend(found),
                    None => {
                        let known = config.names();
                        let help = match closest(&name.to_ascii_uppercase(), known.iter().map(String::as_str)) {
                            Some(near) => format!("did you mean {near:?}?"),
                            None => format!("it knows {} names, e.g. ISO-8859-1, LATIN1, CP1252, EUC-JP", known.len()),
                        };
                        bail!(
                            "{key} = {name:?}: the host's gconv configuration ({}) names no such charset; {help} \
                             (or leave `charsets` out to bring every module)",
                            dir.display()
                        );
                    }
                }
            }
            files
        }
    };
    Ok(files
        .into_iter()
        .map(|file| {
            let path = if file.starts_with('/') { PathBuf::from(&file) } else { dir.join(&file) };
            if file.ends_with(".so") {
                path
            } else {
                PathBuf::from(format!("{}.so", path.display()))
            }
        })
        .filter(|path| host.is_file(path))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
# comment
alias\tLATIN1//\t\tISO-8859-1//
alias\tISO8859-1//\tISO-8859-1//
module\tISO-8859-1//\t\tINTERNAL\t\tISO8859-1\t1
module\tINTERNAL\t\tISO-8859-1//\t\tISO8859-1\t1
module\tEUC-JP//\tINTERNAL\tEUC-JP\t1
";

    fn config() -> GconvConfig {
        let mut config = GconvConfig::default();
        config.parse(CONFIG);
        config
    }

    #[test]
    fn a_charset_finds_its_module_through_its_aliases_in_any_case() {
        let config = config();
        let expected: BTreeSet<String> = ["ISO8859-1".to_owned()].into();
        assert_eq!(config.modules_for("ISO-8859-1"), Some(expected.clone()));
        assert_eq!(config.modules_for("latin1"), Some(expected.clone()), "an alias, lower case");
        assert_eq!(config.modules_for("LATIN1//"), Some(expected));
    }

    #[test]
    fn built_in_charsets_need_no_module_and_unknown_ones_are_refused() {
        let config = config();
        assert_eq!(config.modules_for("UTF-8"), Some(BTreeSet::new()));
        assert_eq!(config.modules_for("ascii"), Some(BTreeSet::new()));
        assert_eq!(config.modules_for("KLINGON"), None);
    }
}
