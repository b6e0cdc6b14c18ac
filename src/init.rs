//! `jailprov init`: a first, commented Jailfile.toml for the programs named on the command line.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::host::{HostFs, BINARY_SEARCH_PATH};

/// The name of the schema file init writes beside the Jailfile (the `#:schema` line names it).
pub const SCHEMA_FILE_NAME: &str = "jailfile.schema.json";

/// A program as the user named it and where the host has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// What goes into `binaries`: the bare name as typed, or the absolute path.
    pub declared: String,
    /// The file on the host (the same path inside the jail).
    pub host_path: PathBuf,
}

/// What `init` wrote.
#[derive(Debug)]
pub struct Written {
    pub jailfile: PathBuf,
    /// The schema file, when init wrote it (one already there is kept as it is).
    pub schema: Option<PathBuf>,
}

/// Resolves NAME as `binaries` does: a bare name through the search path, anything with a slash
/// as a path (made absolute); an unknown name is an error naming the directories searched.
pub fn resolve_program(name: &str, host: &HostFs) -> Result<Program> {
    if name.is_empty() {
        bail!("an empty program name; name a program (e.g. bash) or a path (e.g. /usr/bin/bash)");
    }
    if !name.contains('/') {
        let Some(host_path) = host.find_in_search_path(name, BINARY_SEARCH_PATH) else {
            bail!(
                "program {name:?} is not on the host: searched {}; give its path instead",
                BINARY_SEARCH_PATH.join(":")
            );
        };
        return Ok(Program { declared: name.to_owned(), host_path });
    }
    let path = std::path::absolute(name).with_context(|| format!("cannot make {name} absolute"))?;
    if !host.is_file(&path) {
        bail!("program {name:?}: no such file on the host ({}); name an existing program", path.display());
    }
    let declared = path.to_str().with_context(|| format!("program path {} is not UTF-8", path.display()))?.to_owned();
    Ok(Program { declared, host_path: path })
}

/// The jail root init proposes: `--root` (made absolute), else /srv/jails/<first program>.
pub fn default_root(root: Option<&Path>, programs: &[Program]) -> Result<String> {
    let root = match root {
        Some(root) => std::path::absolute(root).with_context(|| format!("cannot make {} absolute", root.display()))?,
        None => {
            let name = programs
                .first()
                .and_then(|program| program.host_path.file_name())
                .map_or_else(|| "jail".to_owned(), |name| name.to_string_lossy().into_owned());
            Path::new("/srv/jails").join(name)
        }
    };
    if root == Path::new("/") {
        bail!("--root /: the jail root cannot be the host's root; name a directory of its own");
    }
    root.to_str().map(str::to_owned).with_context(|| format!("jail root {} is not UTF-8", root.display()))
}

/// A TOML basic string holding `text` (quotes and backslashes escaped).
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// The commented Jailfile for `programs`, jailed under `root`, its schema at `schema`.
pub fn jailfile_text(programs: &[Program], root: &str, schema: &str) -> String {
    let mut binaries = String::new();
    for program in programs {
        let line = format!("  {},", quoted(&program.declared));
        if program.declared == program.host_path.to_string_lossy() {
            binaries.push_str(&format!("{line}\n"));
        } else {
            binaries.push_str(&format!("{line} # {}\n", program.host_path.display()));
        }
    }
    let enter = match programs.first() {
        Some(first) => format!(
            "[enter]\n# What `jailprov enter` runs when no command follows `--`.\ncommand = [{}]\n",
            quoted(&first.host_path.to_string_lossy())
        ),
        None => {
            "# [enter]\n# command = [\"/usr/bin/bash\"]  # what `jailprov enter` runs when no command follows `--`\n"
                .to_owned()
        }
    };
    format!(
        r#"#:schema {schema}
#
# Written by `jailprov init`. Next:
#   jailprov validate   # keys, values, and that every host path exists
#   jailprov closure    # every path the jail will hold, and why
#   jailprov plan       # what apply would change; then `jailprov apply` (as root)
#
# Every path below is a path inside the jail, except `src` and a bind mount's `source`, which
# are paths on the host.

# Where the jail lives on the host. Absolute and never "/"; `--root DIR` overrides it.
root = {root}

# The programs, with their ELF interpreter and shared libraries. A bare name is looked up on
# the host in {search}.
binaries = [
{binaries}]

# Device nodes created in the jail's /dev (the host's major/minor numbers).
devices = ["/dev/null", "/dev/zero", "/dev/urandom"]

# A world-writable /tmp with the sticky bit, as on any Unix system.
[[dirs]]
path = "/tmp"
mode = "1777"

# Inside `jailprov enter` the jail is read-only (nosuid, nodev) but for [[dirs]] with
# `writable = true`, users' homes and writable [[mounts]].
{enter}"#,
        root = quoted(root),
        search = BINARY_SEARCH_PATH.join(":"),
    )
}

/// Writes the Jailfile at `jailfile` (never over an existing file) and, when none is there, the
/// schema beside it, which the `#:schema` line names by its absolute path (a copy of the Jailfile
/// elsewhere on this host still finds it).
pub fn write(jailfile: &Path, programs: &[Program], root: &str) -> Result<Written> {
    let jailfile =
        std::path::absolute(jailfile).with_context(|| format!("cannot make {} absolute", jailfile.display()))?;
    if std::fs::symlink_metadata(&jailfile).is_ok() {
        bail!(
            "the Jailfile {} already exists; jailprov never overwrites it (remove it or choose another -f)",
            jailfile.display()
        );
    }
    let schema = jailfile.with_file_name(SCHEMA_FILE_NAME);
    // One already there is kept as it is, even an older jailprov's: init writes the Jailfile.
    let wrote_schema = schema_into(&schema)? == SchemaFile::Written;
    let schema_text = schema.to_str().with_context(|| format!("{} is not UTF-8", schema.display()))?;
    crate::beside::write_new(&jailfile, jailfile_text(programs, root, schema_text).as_bytes(), 0o644, "the Jailfile")?;
    Ok(Written { jailfile, schema: wrote_schema.then_some(schema) })
}

/// What a schema file at a path is after [`schema_into`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaFile {
    /// Written now.
    Written,
    /// Already there, this jailprov's schema byte for byte.
    Same,
    /// Something else is there (an older jailprov's schema, another file, a symlink): kept.
    Different,
}

/// Writes the Jailfile schema at `path` unless something is there already (never over it, a
/// symlink there never followed), and says which.
pub fn schema_into(path: &Path) -> Result<SchemaFile> {
    let schema = crate::jailfile::json_schema();
    if std::fs::symlink_metadata(path).is_err() {
        crate::beside::write_new(path, schema.as_bytes(), 0o644, "the schema")?;
        return Ok(SchemaFile::Written);
    }
    let limit = 4 * schema.len() as u64;
    let there = match crate::beside::open_regular_nofollow(path, "the schema", limit) {
        Ok(Some((file, _))) => crate::beside::read_bounded(&file, path, "the schema", limit).ok(),
        _ => None,
    };
    Ok(if there.as_deref() == Some(schema.as_bytes()) { SchemaFile::Same } else { SchemaFile::Different })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_root_is_named_for_the_first_program_and_never_the_host_root() {
        let bash = Program { declared: "bash".into(), host_path: PathBuf::from("/usr/bin/bash") };
        assert_eq!(default_root(None, &[bash]).expect("a root"), "/srv/jails/bash");
        assert_eq!(default_root(None, &[]).expect("a root"), "/srv/jails/jail");
        let error = default_root(Some(Path::new("/")), &[]).expect_err("/ is refused");
        assert!(error.to_string().contains("cannot be the host's root"), "{error:#}");
    }

    #[test]
    fn a_quote_in_a_program_path_stays_valid_toml() {
        let odd = Program { declared: "/opt/a\"b".into(), host_path: PathBuf::from("/opt/a\"b") };
        let text = jailfile_text(&[odd], "/srv/jails/x", "/s.json");
        let parsed: toml::Table = toml::from_str(&text).expect("valid TOML");
        assert_eq!(parsed["binaries"][0].as_str(), Some("/opt/a\"b"));
        assert_eq!(parsed["enter"]["command"][0].as_str(), Some("/opt/a\"b"));
    }
}
