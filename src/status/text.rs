//! `jailprov status` for people: one block per jail, what changed under it by package, and the
//! command that resolves it.

use std::fmt::Write as _;

use super::{Condition, JailStatus, Report};

pub fn text(report: &Report) -> String {
    let mut out = String::new();
    if report.jails.is_empty() {
        out.push_str("No jails are recorded in the state directory.\n");
        return out;
    }
    for jail in &report.jails {
        jail_text(jail, &mut out);
    }
    let count = |condition| report.count(condition);
    let _ = writeln!(
        out,
        "{} jails: {} current, {} behind, {} orphaned, {} unknown, {} errors.",
        report.jails.len(),
        count(Condition::Current),
        count(Condition::Behind),
        count(Condition::Orphaned),
        count(Condition::Unknown),
        count(Condition::Error),
    );
    out
}

fn jail_text(jail: &JailStatus, out: &mut String) {
    let condition = match jail.condition {
        Condition::Current => "current",
        Condition::Behind => "BEHIND",
        Condition::Orphaned => "ORPHANED",
        Condition::Unknown => "UNKNOWN",
        Condition::Error => "ERROR",
    };
    let _ = writeln!(out, "{}: {condition}", jail.root.display());
    if let Some(jailfile) = &jail.jailfile {
        let _ = writeln!(out, "  Jailfile: {}", jailfile.display());
    }
    if let Some(applied_at) = jail.applied_at {
        let _ = writeln!(out, "  last apply: {}", crate::export::rfc3339(applied_at));
    }
    if !jail.reason.is_empty() {
        let _ = writeln!(out, "  {}", jail.reason);
    }
    for change in &jail.packages {
        let version = |version: &Option<String>| version.clone().unwrap_or_else(|| "(none)".into());
        let files = match change.paths.len() {
            1 => "1 file".to_owned(),
            count => format!("{count} files"),
        };
        match &change.package {
            Some(package) => {
                let new = change.new_version.clone().unwrap_or_else(|| "(removed)".into());
                let _ = writeln!(out, "  {package} {} -> {new}: {files}", version(&change.old_version));
            }
            None => {
                let _ = writeln!(out, "  files of no package: {files}");
            }
        }
        for path in &change.paths {
            let _ = writeln!(out, "    {path}");
        }
    }
    for process in &jail.processes {
        let _ = writeln!(
            out,
            "  process {} ({}) maps replaced files: {}",
            process.pid,
            process.command,
            process.deleted.join(", ")
        );
    }
    if let Some(fix) = &jail.fix {
        let _ = writeln!(out, "  run: {fix}");
    }
}
