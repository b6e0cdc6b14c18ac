//! Scripts: the `#!` line names the interpreter the kernel runs (and `env NAME` the program).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::host::HostFs;

/// How much of a file the kernel reads for the `#!` line (BINPRM_BUF_SIZE).
const SHEBANG_LIMIT: usize = 256;

/// A parsed `#!` line: the interpreter and its single optional argument (as the kernel splits it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shebang {
    pub interpreter: String,
    pub argument: Option<String>,
}

/// Reads the `#!` line of a host file; `None` when it has none.
pub fn read_shebang(host: &HostFs, path: &Path) -> Result<Option<Shebang>> {
    let mut file = host.open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut buffer = Vec::with_capacity(SHEBANG_LIMIT);
    file.by_ref()
        .take(SHEBANG_LIMIT as u64)
        .read_to_end(&mut buffer)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(parse_shebang(&buffer))
}

/// Parses a `#!` line like Linux's binfmt_script: interpreter up to the first blank, the rest
/// (trimmed) as one argument.
pub fn parse_shebang(bytes: &[u8]) -> Option<Shebang> {
    let rest = bytes.strip_prefix(b"#!")?;
    let line_end = rest.iter().position(|&byte| byte == b'\n').unwrap_or(rest.len());
    let line = String::from_utf8_lossy(&rest[..line_end]);
    let line = line.trim_matches(|c: char| c == ' ' || c == '\t' || c == '\r');
    if line.is_empty() {
        return None;
    }
    let (interpreter, argument) = match line.find([' ', '\t']) {
        Some(split) => (&line[..split], Some(line[split..].trim_matches([' ', '\t']).to_owned())),
        None => (line, None),
    };
    Some(Shebang { interpreter: interpreter.to_owned(), argument: argument.filter(|argument| !argument.is_empty()) })
}

/// The host programs a script runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptPrograms {
    /// The `#!` interpreter.
    pub interpreter: PathBuf,
    /// For `#!/usr/bin/env [-S] [VAR=x] NAME`: NAME found in the search path.
    pub env_program: Option<PathBuf>,
}

/// The host programs a script runs: its interpreter, and for `/usr/bin/env [-S] [VAR=x] NAME`
/// also NAME found in `search_path`.
pub fn programs_run_by(shebang: &Shebang, host: &HostFs, search_path: &[String]) -> Result<ScriptPrograms> {
    let interpreter = PathBuf::from(&shebang.interpreter);
    if !interpreter.is_absolute() {
        bail!("the interpreter {:?} is not an absolute path; the kernel cannot run it", shebang.interpreter);
    }
    if !host.exists(&interpreter) {
        bail!("the interpreter {} is not on the host", interpreter.display());
    }
    let mut found_program = None;
    if interpreter.file_name().is_some_and(|name| name == "env") {
        if let Some(program) = env_program(shebang.argument.as_deref().unwrap_or("")) {
            let found = if program.starts_with('/') {
                Some(PathBuf::from(program)).filter(|path| host.exists(path))
            } else {
                let dirs: Vec<&str> = search_path.iter().map(String::as_str).collect();
                host.find_in_search_path(program, &dirs)
            };
            match found {
                Some(path) => found_program = Some(path),
                None => bail!("`env` runs {program:?}, which is not in {} on the host", search_path.join(":")),
            }
        }
    }
    Ok(ScriptPrograms { interpreter, env_program: found_program })
}

/// The program `env` runs given its arguments: the first word that is not an option or a
/// VAR=value assignment (`-S` splits the rest into words, which covers the plain case too).
fn env_program(arguments: &str) -> Option<&str> {
    let mut words = arguments.split_whitespace();
    while let Some(word) = words.next() {
        if word == "-u" || word == "--unset" || word == "-C" || word == "--chdir" {
            words.next();
            continue;
        }
        if word.starts_with('-') || word.contains('=') {
            continue;
        }
        return Some(word);
    }
    None
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests build their fixtures with plain fs calls
mod tests {
    use super::*;

    #[test]
    fn shebang_splits_interpreter_and_one_argument() {
        let parsed = parse_shebang(b"#! /usr/bin/env  python3 -u\r\nprint()").expect("has a shebang");
        assert_eq!(parsed.interpreter, "/usr/bin/env");
        assert_eq!(parsed.argument.as_deref(), Some("python3 -u"));
        assert_eq!(parse_shebang(b"#!/bin/sh\n"), Some(Shebang { interpreter: "/bin/sh".into(), argument: None }));
        assert_eq!(parse_shebang(b"\x7fELF"), None);
        assert_eq!(parse_shebang(b"#!\n"), None);
    }

    #[test]
    fn env_program_skips_options_and_assignments() {
        assert_eq!(env_program("-S LC_ALL=C perl -w"), Some("perl"));
        assert_eq!(env_program("-u HOME bash"), Some("bash"));
        assert_eq!(env_program(""), None);
    }
}
