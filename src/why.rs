//! `jailprov why`: the chains that bring a path (or a library named by soname) into the jail,
//! and what a directory nobody declared is created for; as text and as JSON.

use std::fmt::Write as _;

use anyhow::{anyhow, bail, Result};
use serde::Serialize;

use crate::closure::{Closure, Why, MAX_CHAINS};
use crate::tree::JailPath;

/// How many paths below a directory `why DIR` names as examples.
const EXAMPLES: usize = 3;

/// The answer for one jail path.
pub struct Answer<'a> {
    pub path: JailPath,
    /// The chains shown: the shortest, or every one with `--all` (empty for a directory made
    /// for the paths below it).
    pub chains: Vec<Why<'a>>,
    /// How many chains lead to the path in all (at most [`MAX_CHAINS`]).
    pub total: usize,
    /// For a directory that is no entry of its own: the paths below it.
    pub below: Vec<&'a JailPath>,
}

/// Answers `why QUERY`: a jail path, or a bare soname or file name (possibly several paths).
pub fn answer<'a>(closure: &'a Closure, query: &str, all: bool, jailfile: &str) -> Result<Vec<Answer<'a>>> {
    let paths = resolve(closure, query, jailfile)?;
    let mut answers = Vec::new();
    for path in paths {
        let every = closure.why_all(&path).unwrap_or_default();
        let total = every.len();
        let chains = match (all, closure.why(&path)) {
            (true, _) => every,
            (false, Some(shortest)) => vec![shortest],
            (false, None) => Vec::new(),
        };
        let below = if chains.is_empty() { closure.below(&path) } else { Vec::new() };
        if chains.is_empty() && below.is_empty() {
            bail!("{path} is not in the jail described by {jailfile}; `jailprov closure` lists every path it holds");
        }
        answers.push(Answer { path, chains, total, below });
    }
    Ok(answers)
}

/// The jail paths a query names: an absolute path as it is; a bare name as every path loaded
/// under that soname or with that file name.
fn resolve(closure: &Closure, query: &str, jailfile: &str) -> Result<Vec<JailPath>> {
    if query.starts_with('/') {
        return JailPath::parse(query).map(|path| vec![path]).map_err(|error| anyhow!("{query}: {error}"));
    }
    if query.is_empty() || query.contains('/') {
        bail!(
            "why {query:?}: give a path in the jail (/usr/lib/x86_64-linux-gnu/libssl.so.3) or a bare soname or \
             file name (libssl.so.3)"
        );
    }
    let named: Vec<JailPath> = closure.named(query).into_iter().cloned().collect();
    if named.is_empty() {
        let hint = closest_name(closure, query).map(|name| format!(" (did you mean {name}?)")).unwrap_or_default();
        bail!(
            "no path in the jail described by {jailfile} is named {query} or loaded as soname {query}{hint}; \
             `jailprov closure` lists every path and soname"
        );
    }
    Ok(named)
}

/// The soname or file name of the jail most like `query`, when one is close.
fn closest_name(closure: &Closure, query: &str) -> Option<String> {
    let names = closure.entries.values().flat_map(|entry| {
        let file_name = entry.path.as_str().rsplit('/').next().unwrap_or_default();
        entry.sonames.iter().map(String::as_str).chain(std::iter::once(file_name))
    });
    names
        .map(|name| (strsim::jaro_winkler(query, name), name))
        .filter(|(score, _)| *score > 0.9)
        .max_by(|left, right| left.0.total_cmp(&right.0))
        .map(|(_, name)| name.to_owned())
}

/// The answers for people: each chain as `render::why_text` draws it, a note of the chains not
/// shown, and for a directory what it is created for.
/// `place_of` names the Jailfile (and with `include`, the file and line) a chain's entry is
/// written in.
pub fn text(answers: &[Answer<'_>], all: bool, place_of: &dyn Fn(&Why<'_>) -> String) -> String {
    let mut blocks = Vec::new();
    for answer in answers {
        let mut block = String::new();
        if !answer.below.is_empty() {
            block.push_str(&directory_text(answer));
        }
        let chains: Vec<String> =
            answer.chains.iter().map(|why| crate::render::why_text(why, &place_of(why))).collect();
        block.push_str(&chains.join("\n"));
        let more = answer.total.saturating_sub(answer.chains.len());
        if !all && more > 0 {
            let at_least = if answer.total >= MAX_CHAINS { "at least " } else { "" };
            let (chains, lead, them) = if more == 1 { ("chain", "leads", "it") } else { ("chains", "lead", "them") };
            let _ =
                writeln!(block, "\n{at_least}{more} more {chains} {lead} to {}; `--all` shows {them}.", answer.path);
        }
        blocks.push(block);
    }
    blocks.join("\n")
}

/// "/usr/lib/x86_64-linux-gnu (dir): created for the 12 paths below it, e.g." and examples.
fn directory_text(answer: &Answer<'_>) -> String {
    let count = answer.below.len();
    let paths = if count == 1 { "path" } else { "paths" };
    let mut text = format!("{} (dir): created for the {count} {paths} below it, e.g.\n", answer.path);
    for path in answer.below.iter().take(EXAMPLES) {
        let _ = writeln!(text, "  {path}");
    }
    let _ = writeln!(text, "`jailprov why PATH` tells why each of them is there.");
    text
}

/// What `why --format json` prints.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "jailprov why --format json")]
pub struct WhyReport {
    /// "1".
    pub format_version: &'static str,
    /// What was asked: a jail path, a soname or a file name.
    pub query: String,
    /// One per jail path the query names.
    pub paths: Vec<WhyPath>,
}

/// Why one jail path is there.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WhyPath {
    pub path: String,
    /// The shortest chain, or every chain with `--all`; empty for a directory created only for
    /// the paths below it.
    pub chains: Vec<WhyChain>,
    /// How many chains lead to the path in all (counting stops at 200).
    pub total_chains: usize,
    /// For a directory created for the paths below it: how many there are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub below: Option<usize>,
    /// A few of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
}

/// The path, each entry that needs the one before, and the reason the last one is there.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WhyChain {
    pub entries: Vec<WhyEntry>,
    /// A Jailfile key (`binaries[0]`, `files[2]`) or a reason of jailprov's own
    /// ("usr-merge layout of the host").
    pub origin: String,
    /// What that Jailfile entry declares, as written (`bash`, `/etc/motd`), when it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declares: Option<String>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WhyEntry {
    pub path: String,
    /// binary | library | interpreter | file | dir | ... (as `closure` lists them).
    pub kind: String,
    /// The DT_NEEDED names a library was loaded as.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sonames: Vec<String>,
}

/// The answers for machines.
pub fn report(answers: &[Answer<'_>], query: &str) -> WhyReport {
    let paths = answers
        .iter()
        .map(|answer| WhyPath {
            path: answer.path.to_string(),
            chains: answer.chains.iter().map(chain).collect(),
            total_chains: answer.total,
            below: (!answer.below.is_empty()).then_some(answer.below.len()),
            examples: answer.below.iter().take(EXAMPLES).map(ToString::to_string).collect(),
        })
        .collect();
    WhyReport { format_version: "1", query: query.to_owned(), paths }
}

fn chain(why: &Why<'_>) -> WhyChain {
    WhyChain {
        entries: why
            .entries
            .iter()
            .map(|entry| WhyEntry {
                path: entry.path.to_string(),
                kind: entry.kind.label().to_owned(),
                sonames: entry.sonames.iter().cloned().collect(),
            })
            .collect(),
        origin: why.origin.to_string(),
        declares: why.origin.declaration().and_then(|declaration| declaration.declares.clone()),
    }
}
