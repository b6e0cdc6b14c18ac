//! A plan saved by `plan -o` for `apply FILE`: its format, and the parse of its text.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::Plan;

/// The format `plan -o` writes and `apply FILE` reads.
pub const SAVED_PLAN_FORMAT: &str = "1";

/// What a saved plan was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digests {
    /// The Jailfile's bytes.
    pub jailfile: String,
    /// The desired tree: what the Jailfile asks for and the host provides.
    pub host: String,
    /// The jail's paths at stat level, and the record of what jailprov manages.
    pub jail: String,
}

/// A plan saved by `plan -o`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedPlan {
    pub format_version: String,
    pub jailfile: PathBuf,
    pub root: PathBuf,
    pub adopt: bool,
    pub digests: Digests,
    pub plan: Plan,
}

/// Reads a saved plan's text (already read, bounded, from a trusted file); `file` names it in
/// errors. Any text gives a plan or an error, never a panic (tests/survive_any_bytes.rs).
pub fn parse(text: &str, file: &Path) -> Result<SavedPlan> {
    let saved: SavedPlan = serde_json::from_str(text)
        .with_context(|| format!("{} is not a plan saved by `jailprov plan -o`", file.display()))?;
    if saved.format_version != SAVED_PLAN_FORMAT {
        bail!(
            "{} has plan format {}; this jailprov reads format {SAVED_PLAN_FORMAT}",
            file.display(),
            saved.format_version
        );
    }
    Ok(saved)
}
