//! `jailprov trace`: turns what a traced command looked for in vain into a Jailfile suggestion (pure).
//!
//! The tracing itself is [`crate::enter::trace`]; which paths may be suggested is [`host`];
//! the run is [`run`]. Here, from paths already judged on the host, the entries to add: one
//! `[[files]]` entry per path (jailprov computes the closure of an ELF object itself), a
//! directory's descendants folded into it (unless all of them are ELF objects: then the
//! directory was the loader probing its search path, and the objects are suggested alone), and
//! [`COLLAPSE_AT`] or more files of one directory folded into one `DIR/*` glob. The suggestion is appended to the Jailfile, whose text above it
//! stays byte for byte what the user wrote.

pub mod host;
pub mod run;

use std::collections::{BTreeMap, BTreeSet};

/// How many suggested files of one directory become one `DIR/*` glob entry.
pub const COLLAPSE_AT: usize = 8;

/// What the suggested path is on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostKind {
    /// An ELF object (a library, a plugin): its own libraries come through the closure.
    Elf,
    File,
    /// Copied whole.
    Directory,
}

/// A path the command missed in the jail, found on the host and allowed to be suggested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The absolute path as the command asked for it (lexically normalised).
    pub path: String,
    pub kind: HostKind,
    pub syscall: String,
    pub errno: String,
    pub program: String,
    /// For a directory, what it holds on the host (shown in the reason).
    pub holds: Option<String>,
}

/// One `[[files]]` entry to add, with the comment lines that say why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub src: String,
    pub reasons: Vec<String>,
}

/// The entries to add for `candidates`, leaving out what the Jailfile's `[[files]]` already
/// bring (`already`: their `src` values).
pub fn suggest(candidates: &[Candidate], already: &BTreeSet<String>) -> Vec<Entry> {
    let mut by_path: BTreeMap<&str, &Candidate> = BTreeMap::new();
    for candidate in candidates {
        by_path.entry(candidate.path.as_str()).or_insert(candidate);
    }
    let whole: Vec<&str> = by_path
        .values()
        .filter(|candidate| candidate.kind == HostKind::Directory && !only_objects_under(&candidate.path, &by_path))
        .map(|candidate| candidate.path.as_str())
        .collect();
    let wanted: Vec<&Candidate> = by_path
        .values()
        .copied()
        .filter(|candidate| !is_brought_by(&candidate.path, already.iter().map(String::as_str)))
        .filter(|candidate| candidate.kind != HostKind::Directory || whole.contains(&candidate.path.as_str()))
        .filter(|candidate| !whole.iter().any(|directory| is_strictly_under(&candidate.path, directory)))
        .collect();
    let mut files_by_parent: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for candidate in wanted.iter().filter(|candidate| candidate.kind != HostKind::Directory) {
        files_by_parent.entry(parent_of(&candidate.path)).or_default().push(candidate);
    }
    let collapsed: BTreeSet<&str> = files_by_parent
        .iter()
        .filter(|(parent, files)| files.len() >= COLLAPSE_AT && !has_glob_characters(parent))
        .map(|(parent, _)| *parent)
        .collect();
    let mut entries = Vec::new();
    let mut globbed = BTreeSet::new();
    for candidate in wanted {
        let parent = parent_of(&candidate.path);
        if candidate.kind != HostKind::Directory && collapsed.contains(parent) {
            if globbed.insert(parent) {
                entries.push(glob_entry(parent, &files_by_parent[parent]));
            }
            continue;
        }
        entries.push(Entry { src: candidate.path.clone(), reasons: vec![reason(candidate)] });
    }
    entries
}

/// Whether the misses under `directory` are all ELF objects (and there are some): the loader
/// looks at each directory of its search path before it opens the object it wants there, and
/// that object, not the whole directory, is what the program needs.
fn only_objects_under(directory: &str, by_path: &BTreeMap<&str, &Candidate>) -> bool {
    let mut under = by_path.values().filter(|candidate| is_strictly_under(&candidate.path, directory)).peekable();
    under.peek().is_some() && under.all(|candidate| candidate.kind == HostKind::Elf)
}

/// `# trace: openat by /usr/bin/python3 (ENOENT)`, and what the entry brings.
fn reason(candidate: &Candidate) -> String {
    let what = match candidate.kind {
        HostKind::Elf => ", an ELF object: its libraries come with it",
        HostKind::File => "",
        HostKind::Directory => ", a directory: copied whole",
    };
    let holds = candidate.holds.as_deref().map(|holds| format!(" ({})", printable(holds))).unwrap_or_default();
    format!(
        "trace: {} by {} ({}){what}{holds}",
        printable(&candidate.syscall),
        printable(&candidate.program),
        printable(&candidate.errno)
    )
}

fn glob_entry(parent: &str, files: &[&Candidate]) -> Entry {
    let first = files[0];
    Entry {
        src: format!("{}/*", parent.trim_end_matches('/')),
        reasons: vec![
            format!("trace: {} files of {} missed, folded into one glob", files.len(), printable(parent)),
            format!("trace: e.g. {}", printable(&first.path)),
            reason(first),
        ],
    }
}

/// Whether an existing `src` already brings `path`: the same path, or a directory above it.
fn is_brought_by<'a>(path: &str, sources: impl IntoIterator<Item = &'a str>) -> bool {
    sources.into_iter().any(|source| source == path || is_strictly_under(path, source))
}

fn is_strictly_under(path: &str, directory: &str) -> bool {
    let directory = directory.trim_end_matches('/');
    path.strip_prefix(directory).is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(index) => &path[..index],
    }
}

fn has_glob_characters(text: &str) -> bool {
    text.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

/// Text a jailed program chose (its name, a path) as it may go into a comment or onto the
/// terminal: control characters (escape sequences, carriage returns) become `?`.
pub fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// The `src` values of the Jailfile's `[[files]]` (nothing when the text does not parse: the
/// Jailfile was validated before the trace, so that happens only if it changed meanwhile).
pub fn sources_in(jailfile_text: &str) -> BTreeSet<String> {
    let Ok(table) = jailfile_text.parse::<toml::Table>() else { return BTreeSet::new() };
    let Some(files) = table.get("files").and_then(toml::Value::as_array) else { return BTreeSet::new() };
    files
        .iter()
        .filter_map(|file| file.get("src").and_then(toml::Value::as_str))
        .map(|src| src.trim_end_matches("/**").to_owned())
        .collect()
}

/// The Jailfile with `entries` appended: `original` untouched above them.
pub fn appended(original: &str, entries: &[Entry], command: &[String]) -> String {
    let mut text = original.to_owned();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let command: Vec<String> = command.iter().map(|arg| shell_quoted(arg)).collect();
    text.push_str(&format!("\n# Suggested by `jailprov trace -- {}`\n", printable(&command.join(" "))));
    for entry in entries {
        text.push('\n');
        for reason in &entry.reasons {
            text.push_str(&format!("# {reason}\n"));
        }
        text.push_str("[[files]]\n");
        text.push_str(&format!("src = {}\n", toml::Value::String(entry.src.clone())));
    }
    text
}

/// `arg` as a shell would need it typed: bare when it is plain, else in single quotes.
fn shell_quoted(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./=:,+-@%".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The unified diff from `original` to `suggested`, both named after `name`.
pub fn unified_diff(original: &str, suggested: &str, name: &str) -> String {
    similar::TextDiff::from_lines(original, suggested)
        .unified_diff()
        .context_radius(3)
        .header(name, &format!("{name} (suggested by jailprov trace)"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(path: &str, kind: HostKind) -> Candidate {
        Candidate {
            path: path.into(),
            kind,
            syscall: "openat".into(),
            errno: "ENOENT".into(),
            program: "/usr/bin/python3.11".into(),
            holds: (kind == HostKind::Directory).then(|| "2 entries: a, b".to_owned()),
        }
    }

    const JAILFILE: &str = "root = \"/srv/jails/py\"\nbinaries = [\"python3\"]\n\n[enter]\nuser = \"root\"";

    #[test]
    fn each_path_gets_an_entry_with_its_reason_and_the_jailfile_stays_byte_identical_above() {
        let candidates = [
            candidate("/opt/plugins/libplugin.so", HostKind::Elf),
            candidate("/usr/lib/python3.11", HostKind::Directory),
            candidate("/usr/lib/python3.11/os.py", HostKind::File),
            candidate("/etc/ld.so.cache", HostKind::File),
        ];
        let entries = suggest(&candidates, &BTreeSet::new());
        let sources: Vec<&str> = entries.iter().map(|entry| entry.src.as_str()).collect();
        assert_eq!(
            sources,
            ["/etc/ld.so.cache", "/opt/plugins/libplugin.so", "/usr/lib/python3.11"],
            "os.py comes with its directory"
        );
        let text = appended(JAILFILE, &entries, &["python3".into(), "-c".into(), "import json".into()]);
        assert!(text.starts_with(JAILFILE), "the user's text is kept as it was");
        text.parse::<toml::Table>().expect("the suggestion is TOML");
        insta::assert_snapshot!(unified_diff(JAILFILE, &text, "Jailfile.toml"));
    }

    #[test]
    fn a_search_directory_the_loader_looked_at_gives_way_to_the_object_it_wanted() {
        let candidates = [
            candidate("/opt/app/plugins", HostKind::Directory),
            candidate("/opt/app/plugins/libplugin.so", HostKind::Elf),
            candidate("/opt/app/data", HostKind::Directory),
        ];
        let entries = suggest(&candidates, &BTreeSet::new());
        let sources: Vec<&str> = entries.iter().map(|entry| entry.src.as_str()).collect();
        assert_eq!(sources, ["/opt/app/data", "/opt/app/plugins/libplugin.so"]);
    }

    #[test]
    fn many_files_of_one_directory_fold_into_one_glob() {
        let mut candidates: Vec<Candidate> =
            (0..COLLAPSE_AT).map(|n| candidate(&format!("/usr/share/data/file{n}.dat"), HostKind::File)).collect();
        candidates.push(candidate("/usr/share/other/one.dat", HostKind::File));
        let entries = suggest(&candidates, &BTreeSet::new());
        let sources: Vec<&str> = entries.iter().map(|entry| entry.src.as_str()).collect();
        assert_eq!(sources, ["/usr/share/data/*", "/usr/share/other/one.dat"]);
        assert!(entries[0].reasons[0].contains("8 files of /usr/share/data"), "{:?}", entries[0].reasons);
        candidates.pop();
        candidates.pop();
        let entries = suggest(&candidates, &BTreeSet::new());
        assert_eq!(entries.len(), COLLAPSE_AT - 1, "below the threshold each file stays an entry of its own");
    }

    #[test]
    fn what_the_jailfile_already_brings_is_not_suggested_again() {
        let text = "[[files]]\nsrc = \"/usr/lib/python3.11/**\"\n\n[[files]]\nsrc = \"/etc/ld.so.cache\"\n";
        let already = sources_in(text);
        let candidates = [
            candidate("/usr/lib/python3.11/json/__init__.py", HostKind::File),
            candidate("/etc/ld.so.cache", HostKind::File),
            candidate("/etc/hosts", HostKind::File),
        ];
        let entries = suggest(&candidates, &already);
        assert_eq!(entries.iter().map(|entry| entry.src.as_str()).collect::<Vec<_>>(), ["/etc/hosts"]);
    }

    #[test]
    fn what_a_jailed_program_named_cannot_break_the_comment_or_the_terminal() {
        let mut hostile = candidate("/usr/lib/x\u{1b}[2J.so", HostKind::File);
        hostile.program = "/bin/evil\r\u{1b}]0;title\u{7}".into();
        let entries = suggest(&[hostile], &BTreeSet::new());
        let text = appended("", &entries, &["evil".into(), "it's".into()]);
        assert!(text.contains("trace -- evil 'it'\\''s'`"), "{text}");
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
        text.parse::<toml::Table>().expect("still TOML: the path is a TOML string, escaped");
    }

    #[test]
    fn a_jailfile_without_a_final_newline_gets_one_before_the_suggestion() {
        let entries = [Entry { src: "/etc/hosts".into(), reasons: vec!["trace: x".into()] }];
        let text = appended("root = \"/j\"", &entries, &["true".into()]);
        assert!(text.starts_with("root = \"/j\"\n\n# Suggested"), "{text}");
    }
}
