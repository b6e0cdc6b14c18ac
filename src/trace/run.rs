//! One `jailprov trace` run: the command traced in the jail, its misses judged on the host, the
//! suggestion as a diff, and with `--write` the Jailfile rewritten (validated first, atomically).

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::{appended, host, printable, sources_in, suggest, unified_diff, Candidate, HostKind};
use crate::enter::trace::Record;
use crate::host::HostFs;
use crate::spec::{self, Spec};

/// What the user asked for.
pub struct Request<'a> {
    pub jailfile: &'a Path,
    pub root_override: Option<&'a Path>,
    pub command: &'a [String],
    pub write: bool,
}

/// What one run found: the command's exit code, the diff (empty when there is nothing to add),
/// and notes for stderr.
pub struct Outcome {
    pub code: ExitCode,
    pub diff: String,
    pub notes: Vec<String>,
}

/// Traces the command in the applied jail of `spec` (the caller checked it is applied).
pub fn trace(spec: &Spec, request: &Request<'_>) -> Result<Outcome> {
    let (code, report) = crate::enter::trace_in_jail(spec, request.command)?;
    let home = std::env::var("HOME").ok();
    let mut notes = Vec::new();
    let mut candidates = Vec::new();
    let mut missing_on_host = 0;
    let mut unresolved = BTreeSet::new();
    for record in &report.records {
        match record {
            Record::Missing { syscall, errno, program, path } => {
                let Some(path) = host::normalized(path) else { continue };
                match host::judge(&path, home.as_deref()) {
                    Ok(kind) => candidates.push(Candidate {
                        holds: (kind == HostKind::Directory).then(|| host::contents(&path)),
                        path,
                        kind,
                        syscall: syscall.clone(),
                        errno: errno.clone(),
                        program: program.clone(),
                    }),
                    Err(why) if why == "missing on the host too" => missing_on_host += 1,
                    Err(why) => {
                        let note = format!("not suggested: {} ({why})", printable(&path));
                        if !notes.contains(&note) {
                            notes.push(note);
                        }
                    }
                }
            }
            Record::Unresolved { path, .. } => {
                unresolved.insert(printable(path));
            }
            Record::Truncated => notes.push(format!(
                "the command missed more than {} distinct paths: the rest were not reported",
                crate::enter::trace::MAX_RECORDS
            )),
        }
    }
    if missing_on_host > 0 {
        notes.push(format!("{missing_on_host} paths missing in the jail are missing on the host too (not suggested)"));
    }
    if !unresolved.is_empty() {
        let first: Vec<&str> = unresolved.iter().take(3).map(String::as_str).collect();
        notes.push(format!(
            "{} relative paths could not be placed ({}...): the jail has no /proc to read the working directory from; add [[mounts]] kind = \"proc\" target = \"/proc\" while tracing",
            unresolved.len(),
            first.join(", ")
        ));
    }
    if report.malformed > 0 {
        notes.push(format!("{} malformed report lines dropped", report.malformed));
    }
    let original = crate::beside::read_text(request.jailfile, "Jailfile", spec::MAX_JAILFILE_SIZE)?;
    let entries = suggest(&candidates, &sources_in(&original));
    let name = request.jailfile.display().to_string();
    if entries.is_empty() {
        notes.push(format!(
            "nothing to suggest: the command missed nothing in the jail that the host has to give ({name} unchanged)"
        ));
        return Ok(Outcome { code, diff: String::new(), notes });
    }
    // The command as it ran: the Jailfile's own when none was given.
    let ran = if request.command.is_empty() { &spec.enter.command } else { request.command };
    let suggested = appended(&original, &entries, ran);
    let diff = unified_diff(&original, &suggested, &name);
    if request.write {
        write_suggestion(request, &suggested)?;
        notes.push(format!(
            "wrote {} [[files]] entries to {name}; run `jailprov apply -f {name}` to bring them into the jail",
            entries.len()
        ));
    }
    Ok(Outcome { code, diff, notes })
}

/// Validates the suggested Jailfile as `apply` would read it, then replaces the file atomically.
fn write_suggestion(request: &Request<'_>, suggested: &str) -> Result<()> {
    // A plain error, not the JailfileErrors itself: the problem is in the suggestion, not in
    // what the user wrote, and the message must say so.
    let checked = spec::from_text(request.jailfile, suggested.to_owned(), request.root_override, &HostFs::real());
    if let Err(error) = checked {
        let name = request.jailfile.display();
        bail!("the suggestion does not validate once appended to {name} (left unchanged; add the entries by hand): {error}");
    }
    // Through a symlink the operator made, the file it leads to is the one rewritten.
    let target = std::fs::canonicalize(request.jailfile)
        .with_context(|| format!("cannot resolve {}", request.jailfile.display()))?;
    let mode = std::fs::metadata(&target).with_context(|| format!("cannot read {}", target.display()))?.mode() & 0o7777;
    crate::beside::write_atomically(&target, suggested.as_bytes(), mode, true)
}
