//! The JSON reports of plan and lock, and the JSON Schema of every `--format json` output.

use serde::Serialize;

use crate::cli::SchemaKind;
use crate::plan::{Action, Plan, Summary};
use crate::state::lock::{Drift, Review};

/// The version of every report's layout; consumers check it before reading on.
const FORMAT_VERSION: &str = "1";

/// Whether Jailfile.lock matches what the host gives now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LockStatus {
    /// It matches.
    Fresh,
    /// There is none yet (pending, like a jail change).
    Missing,
    /// It differs (host drift, or an edited Jailfile): pending.
    Stale,
}

impl LockStatus {
    pub fn of(review: &Review) -> LockStatus {
        match (review.existed, review.pending()) {
            (false, _) => LockStatus::Missing,
            (true, true) => LockStatus::Stale,
            (true, false) => LockStatus::Fresh,
        }
    }
}

/// What `plan --format json` prints.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "jailprov plan --format json")]
pub struct PlanReport {
    /// "1".
    pub format_version: &'static str,
    /// In the order apply makes them: deletions deepest first, then the rest parents first.
    pub changes: Vec<PlannedChange>,
    /// Paths jailprov did not create where the Jailfile wants its own (`--adopt` takes them).
    pub conflicts: Vec<PlannedConflict>,
    /// Directories jailprov created that now hold files it did not create: kept.
    pub kept: Vec<String>,
    /// Counts per action. The text output words them as Terraform does: create = "to add",
    /// update = "to change", delete = "to destroy", and a replace counts once in each.
    pub summary: Summary,
    /// What the host now gives differently from Jailfile.lock.
    pub host_drift: Vec<Drift>,
    pub lock: LockStatus,
}

/// One change a plan would make.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlannedChange {
    pub action: Action,
    pub path: String,
    /// file | dir | symlink | device | mount ...
    pub kind: String,
    /// What differs: "content", "mode 0755 -> 1777", ...
    pub what: Vec<String>,
    /// A unified diff of a small text file (jail -> Jailfile or host source), or for other
    /// files a one-line note ("binary, N bytes → M bytes").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlannedConflict {
    pub path: String,
    pub reason: String,
}

impl PlanReport {
    pub fn of(plan: &Plan, review: &Review) -> PlanReport {
        PlanReport {
            format_version: FORMAT_VERSION,
            changes: plan
                .changes
                .iter()
                .map(|change| PlannedChange {
                    action: change.action,
                    path: change.path.to_string(),
                    kind: change.kind.clone(),
                    what: change.what.clone(),
                    diff: change.diff.clone(),
                })
                .collect(),
            conflicts: plan
                .conflicts
                .iter()
                .map(|conflict| PlannedConflict { path: conflict.path.to_string(), reason: conflict.reason.clone() })
                .collect(),
            kept: plan.kept.iter().map(ToString::to_string).collect(),
            summary: plan.summary(),
            host_drift: review.host_drift(),
            lock: LockStatus::of(review),
        }
    }
}

/// What `lock --format json` prints.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "jailprov lock --format json")]
pub struct LockReport {
    /// "1".
    pub format_version: &'static str,
    /// The lock file.
    pub lock: String,
    /// Whether it existed before this run.
    pub existed: bool,
    /// Whether this run (re)wrote it.
    pub wrote: bool,
    /// Its entries (paths).
    pub entries: usize,
    /// The Jailfile changed since the lock was written.
    pub jailfile_changed: bool,
    /// Every path whose entry changed since the lock was written (empty for a new lock).
    pub changes: Vec<LockChange>,
    /// The part of `changes` the host caused, not the Jailfile.
    pub host_drift: Vec<Drift>,
}

/// One path whose lock entry changed.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LockChange {
    pub path: String,
    /// "blake3 a1b2… → c3d4…, size 9 B → 10 B", "∅ → library blake3 …" (added), "… → ∅" (removed).
    pub what: String,
    /// The host file the path is copied from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl LockReport {
    pub fn of(review: &Review) -> LockReport {
        let changes = if review.existed { review.comparison.entries.as_slice() } else { &[] };
        LockReport {
            format_version: FORMAT_VERSION,
            lock: review.lock_path.display().to_string(),
            existed: review.existed,
            wrote: review.wrote,
            entries: review.entries,
            jailfile_changed: review.existed && review.comparison.jailfile.is_some(),
            changes: changes
                .iter()
                .map(|difference| LockChange {
                    path: difference.path.clone(),
                    what: difference.what(),
                    source: difference.source().map(str::to_owned),
                })
                .collect(),
            host_drift: review.host_drift(),
        }
    }
}

pub use crate::json::to_json;

/// The plan with the lock's host drift, as `plan --format json` prints it.
pub fn plan_json(plan: &Plan, review: &Review) -> String {
    to_json(&PlanReport::of(plan, review))
}

use crate::json::schema_of;

/// The JSON Schema of one kind of file or output (`jailprov schema KIND`).
pub fn json_schema(kind: SchemaKind) -> String {
    match kind {
        SchemaKind::Jailfile => crate::jailfile::json_schema(),
        SchemaKind::Closure => schema_of::<crate::closure::Closure>(),
        SchemaKind::Why => schema_of::<crate::why::WhyReport>(),
        SchemaKind::Plan => schema_of::<PlanReport>(),
        SchemaKind::Apply => crate::render::apply_json_schema(),
        SchemaKind::Check => schema_of::<crate::check::CheckReport>(),
        SchemaKind::Lock => schema_of::<LockReport>(),
        SchemaKind::Status => crate::status::json_schema(),
    }
}

/// Where the committed schema of `kind` lives in the repository.
pub fn schema_file(kind: SchemaKind) -> String {
    format!("schemas/{}.schema.json", kind.name())
}
