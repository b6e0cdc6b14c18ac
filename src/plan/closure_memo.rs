//! The memo of a `jailprov closure` or `why` answer: what it looked at and what it printed, so the next run can print it again after re-stating those paths.
//!
//! A closure is a function of the Jailfile (and the files it includes), of what it looked at on
//! the host (every stat, open and listing, misses included:
//! [`HostFs::observing`](crate::host::HostFs::observing)), of the CPU as the loader sees it and
//! of jailprov itself. The answer is written down with all of these in
//! `<state dir>/closure-cache/`; the next run with the same question re-stats the paths through
//! the plan memo's checker ([`HostPrint`]) and, when every one looks as it did, prints the saved
//! text without reading an ELF file. Any difference or doubt means the full computation.
#![allow(clippy::disallowed_methods)] // the memo lives in the state directory, outside every jail

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::memo::{cpu_as_the_loader_sees_it, read_keyed, write_keyed, HostPrint, Memo};
use crate::host::{Observation, Seen};

const MAGIC: &[u8] = b"jailprov closure memo\n";
const FORMAT_VERSION: u32 = 1;

/// What an answer was computed from besides the paths it looked at: all of it must be equal for
/// the memo to speak.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    /// The jailprov binary: another build may answer differently.
    pub program: Seen,
    /// The CPU as the loader sees it (it picks among glibc-hwcaps copies of a library).
    pub cpu: String,
    /// The Jailfile as named on the command line and the directory it was named from: the text
    /// output names it as typed.
    pub cwd: PathBuf,
    pub jailfile: PathBuf,
    pub root_override: Option<PathBuf>,
    /// What the Jailfile and its included files say ([`crate::state::lock::jailfile_digest`]).
    pub jailfile_digest: String,
    /// The command and its arguments, e.g. `closure json`.
    pub question: String,
    /// The cache directory (device, inode): a state directory made again starts afresh.
    pub cache_dir: (u64, u64),
}

/// Where one question's memo is kept and the key it must have.
#[derive(Debug, Clone)]
pub struct ClosureMemo {
    pub file: PathBuf,
    pub key: Key,
}

/// A saved answer: the warnings to say on stderr and the text to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub warnings: Vec<String>,
    pub output: String,
}

impl ClosureMemo {
    /// The memo of `question` about `jailfile`, kept in `<stem>.memo` of `state_dir`'s closure
    /// cache directory (one file per stem: another question of the same stem replaces it);
    /// None when there is none to use (no private state directory, `JAILPROV_NO_CACHE`, or a
    /// Jailfile that does not read: the full run then says why).
    pub fn in_state_dir(
        state_dir: &Path,
        jailfile: &Path,
        root_override: Option<&Path>,
        stem: &str,
        question: &str,
    ) -> Option<ClosureMemo> {
        let dir = crate::closure::cache::cache_dir(state_dir)?;
        let source = crate::beside::read_text(jailfile, "Jailfile", crate::spec::MAX_JAILFILE_SIZE).ok()?;
        let jailfile_digest = crate::state::lock::jailfile_digest(jailfile, &source).ok()?;
        // Absent until the first run saves into it; the key is taken again when the memo is written.
        let cache_dir = fs::symlink_metadata(&dir).map_or((0, 0), |metadata| (metadata.dev(), metadata.ino()));
        let file = dir.join(format!("{stem}.memo"));
        let key = Key {
            program: Seen::of(&fs::metadata("/proc/self/exe")),
            cpu: cpu_as_the_loader_sees_it(),
            cwd: std::env::current_dir().unwrap_or_default(),
            jailfile: jailfile.to_path_buf(),
            root_override: root_override.map(Path::to_path_buf),
            jailfile_digest,
            question: question.to_owned(),
            cache_dir,
        };
        Some(ClosureMemo { file, key })
    }

    /// The saved answer, when the memo is of this key and every path it looked at looks as it
    /// did; None otherwise (missing, damaged, another key, or anything moved).
    pub fn answer(&self) -> Option<Answer> {
        let _timing = crate::timings::phase("closure memo: check");
        // `rest`: the output printed.
        let memo: Memo<Key, String> = read_keyed(&self.file, MAGIC, FORMAT_VERSION, &self.key)?;
        memo.host.holds_now().then_some(Answer { warnings: memo.warnings, output: memo.rest })
    }

    /// Writes down an answer computed from `observations` (None: something looked at changed
    /// moments before, so nothing is written). Failing only costs the next run its shortcut.
    pub fn record(&self, observations: Option<Vec<Observation>>, answer: &Answer) {
        let _timing = crate::timings::phase("closure memo: write");
        let Some(observations) = observations else { return };
        let dir = self.file.parent().unwrap_or(Path::new("/"));
        let mut key = self.key.clone();
        match fs::symlink_metadata(dir) {
            Ok(metadata) => key.cache_dir = (metadata.dev(), metadata.ino()),
            // The object cache made no directory (nothing to learn): no memo either.
            Err(_) => return,
        }
        // A state directory this user may only read keeps its memos as they are, quietly.
        if nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_err() {
            return;
        }
        let memo = Memo {
            format_version: FORMAT_VERSION,
            key,
            warnings: answer.warnings.clone(),
            host: HostPrint::of(&observations),
            rest: answer.output.clone(),
        };
        if let Err(error) = write_keyed(&self.file, MAGIC, &memo) {
            eprintln!("warning: cannot save the closure memo ({error:#}); the next closure is computed again");
        }
    }
}
