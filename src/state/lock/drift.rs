//! What changed since the lock: the comparison of two locks, the host drift plan shows, and
//! `jailprov lock`'s report in the style of `nix store diff-closures`.

use std::fmt::Write as _;

use serde::Serialize;

use super::format::{HostFingerprint, Lock, LockEntry, HASH_ALGORITHM};

/// One path whose entry differs (None: absent on that side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub path: String,
    pub old: Option<LockEntry>,
    pub new: Option<LockEntry>,
}

impl Difference {
    /// What differs, briefly: "blake3 a1b2… → c3d4…, size 1.2 KiB → 1.3 KiB".
    pub fn what(&self) -> String {
        describe(self)
    }

    /// The host file the path is copied from (the new one when it moved).
    pub fn source(&self) -> Option<&str> {
        self.new.as_ref().or(self.old.as_ref()).and_then(|entry| entry.source.as_deref())
    }
}

/// A difference the host caused (not the Jailfile), as plan shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Drift {
    /// The jail path, or "(host)" when the host itself changed (another distribution).
    pub path: String,
    pub what: String,
    /// The host file the jail path is copied from: where to look for what changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Drift {
    pub fn line(&self) -> String {
        match &self.source {
            Some(source) if source != &self.path => {
                format!("host drift: {}  {}  (from {source} on the host)", self.path, self.what)
            }
            _ => format!("host drift: {}  {}", self.path, self.what),
        }
    }
}

/// Everything that differs between a lock and what the host gives now.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    pub jailfile: Option<(String, String)>,
    pub host: Option<(HostFingerprint, HostFingerprint)>,
    pub entries: Vec<Difference>,
}

impl Comparison {
    pub fn is_empty(&self) -> bool {
        self.jailfile.is_none() && self.host.is_none() && self.entries.is_empty()
    }

    /// The differences the host caused. With the Jailfile unchanged, every entry difference; when
    /// it was edited, only paths present on both sides, copied from the same host source, whose
    /// host facts (content, size, target, sonames) changed: added and removed paths, inline and
    /// generated files are then the edit's.
    pub fn host_drift(&self) -> Vec<Drift> {
        let mut drift = Vec::new();
        if let Some((old, new)) = &self.host {
            drift.push(Drift { path: "(host)".to_owned(), what: format!("{old} → {new}"), source: None });
        }
        for difference in &self.entries {
            let by_host = match (&difference.old, &difference.new) {
                _ if self.jailfile.is_none() => true,
                (Some(old), Some(new)) => {
                    old.kind == new.kind
                        && old.source.is_some()
                        && old.source == new.source
                        && (old.hash != new.hash
                            || old.size != new.size
                            || old.target != new.target
                            || old.sonames != new.sonames)
                }
                _ => false,
            };
            if by_host {
                drift.push(Drift {
                    path: difference.path.clone(),
                    what: describe(difference),
                    source: difference.source().map(str::to_owned),
                });
            }
        }
        drift
    }

    /// Every difference, one line each (for `--locked` errors).
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some((old, new)) = &self.jailfile {
            lines.push(format!("the Jailfile changed since the lock ({} → {})", short(old), short(new)));
        }
        if let Some((old, new)) = &self.host {
            lines.push(format!("the host is {new}, the lock was written on {old}"));
        }
        lines.extend(self.entries.iter().map(|difference| format!("{}  {}", difference.path, describe(difference))));
        lines
    }
}

pub(super) fn compare(old: &Lock, new: &Lock) -> Comparison {
    let mut comparison = Comparison {
        jailfile: (old.jailfile != new.jailfile).then(|| (old.jailfile.clone(), new.jailfile.clone())),
        host: (old.host != new.host).then(|| (old.host.clone(), new.host.clone())),
        entries: Vec::new(),
    };
    let mut olds = old.entries.iter().peekable();
    let mut news = new.entries.iter().peekable();
    loop {
        let order = match (olds.peek(), news.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(old), Some(new)) => old.path.cmp(&new.path),
        };
        let (old, new) = match order {
            std::cmp::Ordering::Less => (olds.next(), None),
            std::cmp::Ordering::Greater => (None, news.next()),
            std::cmp::Ordering::Equal => (olds.next(), news.next()),
        };
        let same = match (old, new) {
            (Some(old), Some(new)) => {
                LockEntry { package: None, ..old.clone() } == LockEntry { package: None, ..new.clone() }
            }
            _ => false,
        };
        if !same {
            let path = old.or(new).map(|entry| entry.path.clone()).unwrap_or_default();
            comparison.entries.push(Difference { path, old: old.cloned(), new: new.cloned() });
        }
    }
    comparison
}

/// A hash or digest shortened for people: "blake3 a1b2c3d4…".
fn short(hash: &str) -> String {
    match hash.split_once(':') {
        Some((algorithm, hex)) => format!("{algorithm} {}…", &hex[..hex.len().min(8)]),
        None => hash.to_owned(),
    }
}

/// What an entry is, briefly: its hash, link text, device or kind.
fn summary_of(entry: &LockEntry) -> String {
    if let Some(hash) = &entry.hash {
        format!("{} {}", entry.kind, short(hash))
    } else if let Some(target) = &entry.target {
        format!("symlink -> {target}")
    } else if let Some(device) = &entry.device {
        format!("device {device}")
    } else {
        entry.kind.clone()
    }
}

/// "blake3 a1b2… → c3d4…, size 1.2 KiB → 1.3 KiB", "∅ → library blake3 c3d4…".
fn describe(difference: &Difference) -> String {
    let (old, new) = match (&difference.old, &difference.new) {
        (None, Some(new)) => return format!("∅ → {}", summary_of(new)),
        (Some(old), None) => return format!("{} → ∅", summary_of(old)),
        (Some(old), Some(new)) => (old, new),
        (None, None) => return String::new(),
    };
    let mut parts = Vec::new();
    if old.kind != new.kind {
        parts.push(format!("kind {} → {}", old.kind, new.kind));
    }
    if old.source != new.source {
        parts.push(format!("source {} → {}", or_none(&old.source), or_none(&new.source)));
    }
    if old.hash != new.hash {
        let algorithm = new
            .hash
            .as_deref()
            .or(old.hash.as_deref())
            .and_then(|hash| hash.split_once(':'))
            .map_or(HASH_ALGORITHM, |(algorithm, _)| algorithm);
        let hex = |hash: &Option<String>| {
            hash.as_deref().map_or("∅".to_owned(), |hash| {
                let hex = hash.split_once(':').map_or(hash, |(_, hex)| hex);
                format!("{}…", &hex[..hex.len().min(8)])
            })
        };
        parts.push(format!("{algorithm} {} → {}", hex(&old.hash), hex(&new.hash)));
    }
    if let (Some(left), Some(right)) = (&old.package, &new.package) {
        if left != right {
            parts.push(format!("{left} → {right}"));
        }
    }
    if old.size != new.size {
        let size = |size: Option<u64>| size.map_or("∅".to_owned(), human_size);
        parts.push(format!("size {} → {}", size(old.size), size(new.size)));
    }
    if old.target != new.target {
        parts.push(format!("target {} → {}", or_none(&old.target), or_none(&new.target)));
    }
    if old.mode != new.mode {
        parts.push(format!("mode {} → {}", or_none(&old.mode), or_none(&new.mode)));
    }
    if old.owner != new.owner {
        parts.push(format!(
            "owner {} → {}",
            old.owner.as_deref().unwrap_or("0:0"),
            new.owner.as_deref().unwrap_or("0:0")
        ));
    }
    if old.device != new.device {
        parts.push(format!("device {} → {}", or_none(&old.device), or_none(&new.device)));
    }
    if old.sonames != new.sonames {
        parts.push(format!("sonames {}", set_change(&old.sonames, &new.sonames)));
    }
    if old.needed_by != new.needed_by {
        parts.push(format!("needed by {}", set_change(&old.needed_by, &new.needed_by)));
    }
    parts.join(", ")
}

fn or_none(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("∅")
}

/// What a list gained and lost: "+/usr/bin/head -/usr/bin/cat" (the unchanged members would
/// bury the change).
pub(super) fn set_change(old: &[String], new: &[String]) -> String {
    let added = new.iter().filter(|value| !old.contains(value)).map(|value| format!("+{value}"));
    let removed = old.iter().filter(|value| !new.contains(value)).map(|value| format!("-{value}"));
    let change: Vec<String> = added.chain(removed).collect();
    if change.is_empty() {
        // Same members, another order.
        format!("{} → {}", list_or_none(old), list_or_none(new))
    } else {
        change.join(" ")
    }
}

fn list_or_none(values: &[String]) -> String {
    if values.is_empty() {
        "∅".to_owned()
    } else {
        values.join(" ")
    }
}

/// 1024-based, one decimal, as `nix store diff-closures` prints sizes: "512 B", "12.6 KiB".
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

pub(super) fn signed_size(delta: i128) -> String {
    let sign = if delta < 0 { '-' } else { '+' };
    format!("{sign}{}", human_size(u64::try_from(delta.unsigned_abs()).unwrap_or(u64::MAX)))
}

/// `jailprov lock`'s report, in the style of `nix store diff-closures`: one line per changed
/// path, libraries by file name with their package versions ("libssl.so.3: 3.0.15 → 3.0.17,
/// +12.6 KiB"), other paths by jail path with a hash prefix where no version is known, `∅` for
/// added or removed.
pub fn diff_closures_text(comparison: &Comparison) -> String {
    let mut text = String::new();
    if let Some((old, new)) = &comparison.jailfile {
        let _ = writeln!(text, "Jailfile: {} → {}", short(old), short(new));
    }
    if let Some((old, new)) = &comparison.host {
        let _ = writeln!(text, "host: {old} → {new}");
    }
    for difference in &comparison.entries {
        let _ = writeln!(text, "{}", diff_closures_line(difference));
    }
    text
}

fn diff_closures_line(difference: &Difference) -> String {
    let any = difference.new.as_ref().or(difference.old.as_ref()).expect("a difference has at least one side");
    let is_library = matches!(any.kind.as_str(), "library" | "interpreter" | "nss-module");
    let name = if is_library {
        // By soname, as the loader asks for it ("libtinfo.so.6", not "libtinfo.so.6.4").
        any.sonames
            .first()
            .cloned()
            .unwrap_or_else(|| difference.path.rsplit('/').next().unwrap_or(&difference.path).to_owned())
    } else {
        difference.path.clone()
    };
    let version_of = |entry: &LockEntry| {
        entry.package.as_deref().and_then(|package| package.split_once(' ')).map(|(_, version)| version.to_owned())
    };
    let hash_of = |entry: &LockEntry| entry.hash.as_deref().map(short).unwrap_or_else(|| summary_of(entry));
    let (old, new) = (difference.old.as_ref(), difference.new.as_ref());
    let (left, right) = match (old, new) {
        (Some(old), Some(new)) => match (version_of(old), version_of(new)) {
            (Some(left), Some(right)) if left != right => (left, right),
            _ if old.hash != new.hash => (hash_of(old), hash_of(new)),
            _ => (String::new(), describe(difference)),
        },
        (None, Some(new)) => ("∅".to_owned(), version_of(new).unwrap_or_else(|| hash_of(new))),
        (Some(old), None) => (version_of(old).unwrap_or_else(|| hash_of(old)), "∅".to_owned()),
        (None, None) => (String::new(), String::new()),
    };
    let mut line = if left.is_empty() { format!("{name}: {right}") } else { format!("{name}: {left} → {right}") };
    let size = |entry: Option<&LockEntry>| i128::from(entry.and_then(|entry| entry.size).unwrap_or(0));
    let delta = size(new) - size(old);
    if delta != 0 {
        let _ = write!(line, ", {}", signed_size(delta));
    }
    line
}
