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
        let _ = writeln!(out, "  last apply: {}", utc_time(applied_at));
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

/// `seconds` since the epoch as "YYYY-MM-DD HH:MM:SS UTC" (civil-from-days, no time crate).
fn utc_time(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    // Howard Hinnant's days_from_civil, inverted.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rest / 3600, rest % 3600 / 60, rest % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_time_is_the_civil_date() {
        assert_eq!(super::utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc_time(1_709_210_096), "2024-02-29 12:34:56 UTC");
    }
}
