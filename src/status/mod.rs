//! `jailprov status`: every jail applied on this host, and whether the host files it copied have
//! changed since (stat prints only), grouped by Debian package with the versions before and now.

mod processes;
mod text;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rustc_hash::FxHashMap as HashMap;
use schemars::JsonSchema;
use serde::Serialize;

use crate::host::{HostFs, StatPrint};
use crate::state::lock::{self, Lock};
use crate::state::{self as record, ManagedKind, State, StateStore};
use crate::tree::JailPath;

pub use processes::StaleProcess;
pub use text::text;

/// The answer of `jailprov status`: one entry per recorded jail, sorted by root.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Report {
    pub jails: Vec<JailStatus>,
}

/// One recorded jail.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct JailStatus {
    /// The jail root.
    pub root: PathBuf,
    /// The Jailfile last applied to it (none for a jail last applied before jailprov recorded it).
    pub jailfile: Option<PathBuf>,
    /// When that apply finished, seconds since the Unix epoch.
    pub applied_at: Option<u64>,
    pub condition: Condition,
    /// Why the jail is orphaned, unknown or in error; empty otherwise.
    pub reason: String,
    /// The command that resolves it (`jailprov forget ROOT`, `jailprov apply -f ...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// The changed host files, by package (behind jails only).
    pub packages: Vec<PackageChange>,
    /// Processes in the jail that still map a file apply has since replaced (`--processes`).
    pub processes: Vec<StaleProcess>,
}

/// Whether a jail holds what the host has now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// No host file it copied has changed since the last apply.
    Current,
    /// Host files it copied have changed: apply it again.
    Behind,
    /// Its Jailfile or its root is gone: the record only remains.
    Orphaned,
    /// Applied before jailprov recorded the Jailfile: apply it once to know.
    Unknown,
    /// Its record or lock could not be read.
    Error,
}

/// The changed host files of one package (or of none: files no package ships).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PackageChange {
    /// The Debian package, or none for files outside every package.
    pub package: Option<String>,
    /// Its version when the jail was applied (from Jailfile.lock).
    pub old_version: Option<String>,
    /// Its version installed now (none: removed).
    pub new_version: Option<String>,
    /// Jail paths whose host source changed.
    pub paths: Vec<String>,
}

impl Report {
    pub fn behind(&self) -> usize {
        self.count(Condition::Behind)
    }

    /// Jails whose condition could not be found (unknown or error).
    pub fn unknown(&self) -> usize {
        self.count(Condition::Unknown) + self.count(Condition::Error)
    }

    pub fn count(&self, condition: Condition) -> usize {
        self.jails.iter().filter(|jail| jail.condition == condition).count()
    }

    pub fn json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self).context("serializing the status")? + "\n")
    }
}

/// The JSON schema of `jailprov status --format json` (schemas/status.schema.json).
pub fn json_schema() -> String {
    crate::json::schema_of::<Report>()
}

/// The status of every jail recorded in `state_dir`; with `processes`, the processes in each that
/// map replaced files. A jail whose record cannot be read is reported as an error, never skipped.
pub fn collect(state_dir: &Path, host: &HostFs, processes: bool) -> Result<Report> {
    let roots = record::recorded_roots(state_dir)?;
    let mut versions = None;
    let mut jails: Vec<JailStatus> = roots
        .into_iter()
        .map(|root| {
            let root = match root {
                Ok(root) => root,
                Err(error) => {
                    let reason = format!("{error:#}");
                    return JailStatus {
                        condition: Condition::Error,
                        reason,
                        ..JailStatus::new(state_dir.to_path_buf())
                    };
                }
            };
            let store = StateStore::for_root(state_dir, &root);
            jail_status(&store, &root, host, &mut versions).unwrap_or_else(|error| JailStatus {
                condition: Condition::Error,
                reason: format!("{error:#}"),
                ..JailStatus::new(root)
            })
        })
        .collect();
    if processes {
        let stale = processes::stale_by_root(jails.iter().map(|jail| jail.root.as_path()));
        for jail in &mut jails {
            jail.processes = stale.get(&jail.root).cloned().unwrap_or_default();
        }
    }
    Ok(Report { jails })
}

impl JailStatus {
    fn new(root: PathBuf) -> JailStatus {
        JailStatus {
            root,
            jailfile: None,
            applied_at: None,
            condition: Condition::Current,
            reason: String::new(),
            fix: None,
            packages: Vec::new(),
            processes: Vec::new(),
        }
    }
}

/// Installed package versions, read from dpkg's status once and only when some jail is behind.
type Versions = Option<HashMap<String, String>>;

fn jail_status(store: &StateStore, root: &Path, host: &HostFs, versions: &mut Versions) -> Result<JailStatus> {
    let mut status = JailStatus::new(root.to_path_buf());
    let origin = store.load_origin()?;
    if let Some(origin) = &origin {
        status.jailfile = Some(origin.jailfile.clone());
        status.applied_at = Some(origin.applied_at);
    }
    let forget = Some(format!("jailprov forget {}", shell_word(root)));
    if std::fs::symlink_metadata(root).is_err() {
        return Ok(JailStatus {
            condition: Condition::Orphaned,
            reason: "its root is gone".into(),
            fix: forget,
            ..status
        });
    }
    let Some(origin) = origin else {
        return Ok(JailStatus {
            condition: Condition::Unknown,
            reason: "applied before jailprov recorded its Jailfile".into(),
            fix: Some(format!("jailprov apply -f JAILFILE --root {}", shell_word(root))),
            ..status
        });
    };
    if std::fs::symlink_metadata(&origin.jailfile).is_err() {
        let reason = format!("its Jailfile {} is gone", origin.jailfile.display());
        return Ok(JailStatus { condition: Condition::Orphaned, reason, fix: forget, ..status });
    }
    let state = store.load(root)?;
    let lock = read_lock(&origin.jailfile)?;
    status.packages = changed_packages(&state, &lock, host, versions);
    if !status.packages.is_empty() {
        status.condition = Condition::Behind;
        status.fix = Some(format!("jailprov apply -f {} --root {}", shell_word(&origin.jailfile), shell_word(root)));
    }
    Ok(status)
}

/// The Jailfile's lock, which names each jail path's host source and package.
fn read_lock(jailfile: &Path) -> Result<Lock> {
    let path = lock::lock_path(jailfile);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {} (apply the jail again to write it)", path.display()))?;
    Lock::parse(&text, &path)
}

/// The host sources of managed files whose stat print is no longer the one apply copied, by
/// package: a stat per managed file, no content read.
fn changed_packages(state: &State, lock: &Lock, host: &HostFs, versions: &mut Versions) -> Vec<PackageChange> {
    let mut by_package: BTreeMap<Option<String>, PackageChange> = BTreeMap::new();
    for entry in &lock.entries {
        let Some(source) = entry.source.as_deref() else { continue };
        let Ok(path) = JailPath::parse(&entry.path) else { continue };
        let Some(managed) = state.entries.get(&path) else { continue };
        let (ManagedKind::File, Some(copied)) = (managed.kind, managed.source.as_ref()) else { continue };
        let now = host.symlink_metadata(Path::new(source)).ok().map(|metadata| StatPrint::of(&metadata));
        if now.as_ref() == Some(copied) {
            continue;
        }
        let (package, old_version) = match entry.package.as_deref().and_then(|named| named.split_once(' ')) {
            Some((name, version)) => (Some(name.to_owned()), Some(version.to_owned())),
            None => (None, None),
        };
        let change = by_package.entry(package.clone()).or_insert_with(|| {
            let installed = versions.get_or_insert_with(|| lock::installed_versions(host));
            let new_version = package.as_ref().and_then(|name| installed.get(name).cloned());
            PackageChange { package, old_version, new_version, paths: Vec::new() }
        });
        change.paths.push(entry.path.clone());
    }
    by_package.into_values().collect()
}

/// A path as a shell word: quoted only when it needs to be.
fn shell_word(path: &Path) -> String {
    let text = path.to_string_lossy();
    if text.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:@%".contains(c)) {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}
