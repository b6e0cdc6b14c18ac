//! Closure and why-chains as text for people and JSON for machines.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};

use crate::closure::origin::Section;
use crate::closure::{Closure, Entry, EntryKind, Origin, Why};
use crate::tree::JailPath;

/// One line per path: kind, path (and link text or sonames), and what needs it.
pub fn closure_text(closure: &Closure) -> String {
    let mut text = String::new();
    let width = closure.entries.keys().map(|path| path.as_str().len()).max().unwrap_or(0).min(60);
    for entry in closure.entries.values() {
        let mut shown = entry.path.as_str().to_owned();
        if let Some(target) = &entry.target {
            let _ = write!(shown, " -> {target}");
        }
        let _ = writeln!(text, "{:<18} {:<width$}  {}", entry.kind.label(), shown, needers(entry));
    }
    text.push_str(&summary(closure));
    for note in &closure.notes {
        let _ = writeln!(text, "note: {note}");
    }
    text
}

/// The first few needers and how many more (libc is needed by every program).
fn needers(entry: &Entry) -> String {
    const SHOWN: usize = 3;
    let needers: Vec<String> = entry.needers().map(Origin::to_string).collect();
    let mut text = needers.iter().take(SHOWN).map(String::as_str).collect::<Vec<_>>().join(", ");
    if needers.len() > SHOWN {
        let _ = write!(text, " (+{} more)", needers.len() - SHOWN);
    }
    text
}

/// "42 paths: 2 binaries, 1 interpreter, ..." plus excluded and allowed-missing counts.
pub fn summary(closure: &Closure) -> String {
    let mut counts: BTreeMap<EntryKind, usize> = BTreeMap::new();
    for entry in closure.entries.values() {
        *counts.entry(entry.kind).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(kind, count)| crate::words::count(*count, kind.label())).collect();
    let mut line = format!("{}: {}", crate::words::count(closure.entries.len(), "path"), parts.join(", "));
    if !closure.excluded.is_empty() {
        let _ = write!(line, "; {} excluded", closure.excluded.len());
    }
    if !closure.allowed_missing.is_empty() {
        let _ = write!(line, "; allowed missing: {}", closure.allowed_missing.join(", "));
    }
    line.push('\n');
    line
}

/// The closure as `{"entries":[...]}` JSON.
pub fn closure_json(closure: &Closure) -> String {
    let mut text = serde_json::to_string_pretty(closure).unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"));
    text.push('\n');
    text
}

/// The dependency tree under each Jailfile declaration; a path shown once, later as "(above)".
pub fn closure_tree(closure: &Closure) -> String {
    // What hangs on each entry, and on each origin that hangs on none (the roots).
    let mut below_entries: BTreeMap<&JailPath, Vec<&JailPath>> = BTreeMap::new();
    let mut below_roots: BTreeMap<(bool, String), Vec<&JailPath>> = BTreeMap::new();
    for entry in closure.entries.values() {
        if entry.kind == EntryKind::Symlink {
            continue;
        }
        for origin in entry.needers() {
            match origin.needer() {
                Some(needer) => below_entries.entry(needer).or_default().push(&entry.path),
                // Binaries first, then the other declarations and reasons.
                None => {
                    let is_binary = origin.declaration().is_some_and(|declared| declared.section == Section::Binaries);
                    below_roots.entry((!is_binary, origin.to_string())).or_default().push(&entry.path);
                }
            }
        }
    }
    let mut text = String::new();
    let mut shown = BTreeSet::new();
    for ((_, root), children) in &below_roots {
        let _ = writeln!(text, "{root}");
        tree_lines(closure, &below_entries, children, 1, &mut shown, &mut text);
    }
    text
}

fn tree_lines<'a>(
    closure: &Closure,
    below_entries: &BTreeMap<&JailPath, Vec<&'a JailPath>>,
    children: &[&'a JailPath],
    depth: usize,
    shown: &mut BTreeSet<&'a JailPath>,
    text: &mut String,
) {
    for child in children {
        let kind = closure.entries.get(*child).map_or("", |entry| entry.kind.label());
        let first_time = shown.insert(*child);
        let _ = writeln!(text, "{}{} ({kind}){}", "  ".repeat(depth), child, if first_time { "" } else { " (above)" });
        if first_time {
            let grandchildren = below_entries.get(*child).map(Vec::as_slice).unwrap_or_default();
            tree_lines(closure, below_entries, grandchildren, depth + 1, shown, text);
        }
    }
}

/// `why` output: the path, then each entry that needs the previous one, ending at the Jailfile.
pub fn why_text(why: &Why, jailfile: &str) -> String {
    let mut text = String::new();
    let entries = why.entries.iter().map(|entry| {
        let sonames: Vec<&str> = entry.sonames.iter().map(String::as_str).collect();
        let soname = if sonames.is_empty() { String::new() } else { format!(" as {}", sonames.join(", ")) };
        format!("{} ({}{soname})", entry.path, entry.kind.label())
    });
    for (index, described) in entries.chain(std::iter::once(described_origin(why.origin, jailfile))).enumerate() {
        if index == 0 {
            let _ = writeln!(text, "{described}");
        } else {
            let _ = writeln!(text, "{}needed {}by {described}", "  ".repeat(index), run_time_import(why, index));
        }
    }
    text
}

/// "at run time (iconv_open) " when the entry before `index` is in the chain for an import of
/// the entry at `index`; empty otherwise.
fn run_time_import(why: &Why, index: usize) -> String {
    let (Some(needed), Some(needer)) = (why.entries.get(index - 1), why.entries.get(index)) else {
        return String::new();
    };
    let import = needed.origins.iter().find_map(|origin| match origin.reason() {
        Origin::Runtime { symbol, importer, .. } if *importer == needer.path => Some(symbol),
        _ => None,
    });
    import.map(|symbol| format!("at run time ({symbol}) ")).unwrap_or_default()
}

/// The end of a why-chain: a binary with what it names, another Jailfile key, or a reason of
/// jailprov's own ("usr-merge layout of the host", "users/groups").
fn described_origin(origin: &Origin, jailfile: &str) -> String {
    let declared_binary = origin
        .declaration()
        .filter(|declaration| declaration.section == Section::Binaries)
        .and_then(|declaration| declaration.declares.as_ref());
    match declared_binary {
        Some(declared) => format!("{origin} = {declared:?} in {jailfile}"),
        None if origin.is_jailfile_key() => format!("{origin} in {jailfile}"),
        None => origin.to_string(),
    }
}

/// Colors for people at a terminal, as Terraform's plan: + green, ~ yellow, - red. Off, every
/// string comes back as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Palette {
    enabled: bool,
}

impl Palette {
    pub const PLAIN: Palette = Palette { enabled: false };
    pub const COLOR: Palette = Palette { enabled: true };

    /// Colored when stdout gets color: `--color always`; or `auto` (the default) on a terminal
    /// with no NO_COLOR set (anstream decides, from the choice main recorded).
    pub fn for_stdout() -> Palette {
        let choice = anstream::AutoStream::choice(&std::io::stdout());
        Palette { enabled: choice != anstream::ColorChoice::Never }
    }

    fn paint(self, style: Style, text: &str) -> String {
        if self.enabled {
            format!("{style}{text}{style:#}")
        } else {
            text.to_owned()
        }
    }

    fn action(self, action: crate::plan::Action, text: &str) -> String {
        use crate::plan::Action;
        let color = match action {
            Action::Create | Action::Mount => AnsiColor::Green,
            Action::Update => AnsiColor::Yellow,
            Action::Replace | Action::Delete | Action::Unmount => AnsiColor::Red,
        };
        self.paint(Style::new().fg_color(Some(color.into())), text)
    }
}

const BOLD: Style = Style::new().bold();

fn colored(color: AnsiColor) -> Style {
    Style::new().fg_color(Some(color.into()))
}

/// One change as apply and destroy report it: "+   file     /usr/bin/bash", the marker colored.
pub fn change_line(change: &crate::plan::Change, palette: Palette) -> String {
    let marker = palette.action(change.action, &format!("{:<3}", change.action.marker()));
    format!("{marker} {:<8} {}", change.kind, change.path)
}

/// A line of a unified diff in a plan: added lines green, removed red, hunk headers cyan.
fn diff_line(line: &str, palette: Palette) -> String {
    match line.as_bytes().first() {
        Some(b'+') => palette.paint(colored(AnsiColor::Green), line),
        Some(b'-') => palette.paint(colored(AnsiColor::Red), line),
        Some(b'@') => palette.paint(colored(AnsiColor::Cyan), line),
        _ => line.to_owned(),
    }
}

/// A plan for people, in the spirit of Terraform, colored when stdout takes color, long lists
/// summarised.
pub fn plan_text(plan: &crate::plan::Plan, root: &std::path::Path, jailfile: &std::path::Path) -> String {
    plan_text_in(plan, root, jailfile, Palette::for_stdout(), Verbosity::Normal)
}

/// How much of a long list of changes plan, apply and destroy print.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Verbosity {
    /// The closing summary line only (`-q`).
    Quiet,
    /// Every line up to [`LONG_LIST`] lines; past it the first [`SHOWN_OF_LONG_LIST`] and a
    /// summary by kind.
    #[default]
    Normal,
    /// Every line (`-v`).
    Verbose,
}

/// A list longer than this many lines is summarised: an 800-path jail is 800 lines nobody reads.
pub const LONG_LIST: usize = 40;
/// How many lines of a summarised list are still shown.
pub const SHOWN_OF_LONG_LIST: usize = 20;

/// Decides, line by line, which changes of a list are printed, and counts them all by kind for
/// the summary that closes a list too long to print whole.
#[derive(Debug)]
pub struct ChangeList {
    summarised: bool,
    quiet: bool,
    shown_lines: usize,
    hidden: usize,
    /// kind -> count per action marker, in the order markers first appear.
    by_kind: BTreeMap<String, Vec<(&'static str, usize)>>,
}

impl ChangeList {
    /// A list of `lines` lines in all (a change with its diff is several).
    pub fn new(lines: usize, verbosity: Verbosity) -> ChangeList {
        ChangeList {
            summarised: verbosity == Verbosity::Quiet || (verbosity == Verbosity::Normal && lines > LONG_LIST),
            quiet: verbosity == Verbosity::Quiet,
            shown_lines: 0,
            hidden: 0,
            by_kind: BTreeMap::new(),
        }
    }

    /// Counts `change` (`lines` lines long) and says whether to print it.
    pub fn admit(&mut self, change: &crate::plan::Change, lines: usize) -> bool {
        let counts = self.by_kind.entry(change.kind.clone()).or_default();
        let marker = change.action.marker();
        match counts.iter_mut().find(|(seen, _)| *seen == marker) {
            Some((_, count)) => *count += 1,
            None => counts.push((marker, 1)),
        }
        let shown = !self.summarised || (!self.quiet && self.shown_lines < SHOWN_OF_LONG_LIST);
        if shown {
            self.shown_lines += lines;
        } else {
            self.hidden += 1;
        }
        shown
    }

    /// What closes a summarised list, each line indented by `indent`: "… and 801 more (-v to
    /// list all)" and "by kind: 700 files (+700), 1 device (+1)"; empty for a list shown whole
    /// and for `-q`.
    pub fn close(&self, indent: &str) -> String {
        if !self.summarised || self.quiet {
            return String::new();
        }
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(kind, counts)| {
                let total = counts.iter().map(|(_, count)| count).sum();
                let markers: Vec<String> = counts.iter().map(|(marker, count)| format!("{marker}{count}")).collect();
                format!("{} ({})", crate::words::count(total, kind), markers.join(" "))
            })
            .collect();
        let mut text = String::new();
        if self.hidden > 0 {
            let _ = writeln!(text, "{indent}… and {} more (-v to list all)", self.hidden);
        }
        let _ = writeln!(text, "{indent}by kind: {}", kinds.join(", "));
        text
    }
}

/// A list of paths (what destroy kept), the first [`SHOWN_OF_LONG_LIST`] of a long one and how
/// many more; nothing for `-q`.
pub fn path_list(paths: &[String], indent: &str, verbosity: Verbosity) -> String {
    let shown = match verbosity {
        Verbosity::Quiet => 0,
        Verbosity::Normal if paths.len() > LONG_LIST => SHOWN_OF_LONG_LIST,
        _ => paths.len(),
    };
    let mut text = String::new();
    for path in &paths[..shown] {
        let _ = writeln!(text, "{indent}{path}");
    }
    if shown > 0 && shown < paths.len() {
        let _ = writeln!(text, "{indent}… and {} more (-v to list all)", paths.len() - shown);
    }
    text
}

/// A plan for people, in the spirit of Terraform: markers, what changes, diffs, a closing line.
pub fn plan_text_in(
    plan: &crate::plan::Plan,
    root: &std::path::Path,
    jailfile: &std::path::Path,
    palette: Palette,
    verbosity: Verbosity,
) -> String {
    let mut text = String::new();
    if !plan.changes.is_empty() && verbosity != Verbosity::Quiet {
        let _ = writeln!(text, "jailprov will make these changes in {}:\n", root.display());
        let lines = plan.changes.iter().map(|change| 1 + change.diff.as_ref().map_or(0, |diff| diff.lines().count()));
        let mut list = ChangeList::new(lines.sum(), verbosity);
        for change in &plan.changes {
            let diff_lines = change.diff.as_ref().map_or(0, |diff| diff.lines().count());
            if !list.admit(change, 1 + diff_lines) {
                continue;
            }
            let what = if change.what.is_empty() { String::new() } else { format!(" ({})", change.what.join(", ")) };
            let _ = writeln!(text, "  {}{what}", change_line(change, palette));
            if let Some(diff) = &change.diff {
                for line in diff.lines() {
                    let _ = writeln!(text, "        {}", diff_line(line, palette));
                }
            }
        }
        text.push_str(&list.close("  "));
        text.push('\n');
    }
    if !plan.conflicts.is_empty() {
        text.push_str(
            "Conflicts: jailprov did not create these and will not overwrite them (apply --adopt takes them over):\n",
        );
        for conflict in &plan.conflicts {
            let _ = writeln!(
                text,
                "  {}   {}: {}",
                palette.paint(BOLD.fg_color(Some(AnsiColor::Red.into())), "!"),
                conflict.path,
                conflict.reason
            );
        }
        text.push('\n');
    }
    if !plan.kept.is_empty() && verbosity != Verbosity::Quiet {
        text.push_str("Kept: directories jailprov created that now hold files it did not create:\n");
        let kept: Vec<String> = plan.kept.iter().map(ToString::to_string).collect();
        text.push_str(&path_list(&kept, "      ", verbosity));
        text.push('\n');
    }
    if plan.changes.is_empty() && plan.conflicts.is_empty() {
        text.push_str(&no_changes_in(jailfile, palette));
    } else {
        let _ = writeln!(
            text,
            "{} {}.",
            palette.paint(BOLD, "Plan:"),
            summary_text(&plan.summary(), Tense::Planned, palette)
        );
    }
    text
}

/// Whether a summary says what a plan will do or what was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tense {
    /// "3 to create"
    Planned,
    /// "3 created"
    Done,
}

/// The counts of a plan in the words of its JSON summary and actions (create, update, replace,
/// delete, mount, unmount): "3 to create, 0 to update, 1 to delete" or "3 created, ...".
/// create, update and delete always; replace, mount and unmount when there are some.
pub fn summary_text(summary: &crate::plan::Summary, tense: Tense, palette: Palette) -> String {
    let counts = [
        (summary.create, "create", "created", AnsiColor::Green, true),
        (summary.update, "update", "updated", AnsiColor::Yellow, true),
        (summary.replace, "replace", "replaced", AnsiColor::Red, false),
        (summary.delete, "delete", "deleted", AnsiColor::Red, true),
        (summary.mount, "mount", "mounted", AnsiColor::Green, false),
        (summary.unmount, "unmount", "unmounted", AnsiColor::Red, false),
    ];
    let parts: Vec<String> = counts
        .iter()
        .filter(|(count, _, _, _, always)| *always || *count > 0)
        .map(|(count, verb, done, color, _)| {
            let words = match tense {
                Tense::Planned => format!("{count} to {verb}"),
                Tense::Done => format!("{count} {done}"),
            };
            palette.paint(colored(*color), &words)
        })
        .collect();
    parts.join(", ")
}

/// The closing line of a plan with nothing to do (colored when stdout takes color).
pub fn no_changes(jailfile: &std::path::Path) -> String {
    no_changes_in(jailfile, Palette::for_stdout())
}

fn no_changes_in(jailfile: &std::path::Path, palette: Palette) -> String {
    let name =
        jailfile.file_name().map_or_else(|| jailfile.display().to_string(), |name| name.to_string_lossy().into_owned());
    format!("{} The jail matches {name}.\n", palette.paint(BOLD.fg_color(Some(AnsiColor::Green.into())), "No changes."))
}

/// What `apply --format json` prints: Ansible's module result (`changed`) and diff contract.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
// deny_unknown_fields: the schema says additionalProperties false, so a new field is a
// deliberate schema change.
#[serde(deny_unknown_fields)]
#[schemars(title = "jailprov apply --format json")]
pub struct ApplyReport {
    /// Whether the jail was changed (false: it already matched the Jailfile).
    pub changed: bool,
    /// Counts per action, with the same keys as `plan --format json`.
    pub summary: crate::plan::Summary,
    pub changes: Vec<AppliedChange>,
    /// Whole texts of the small text files whose content changed.
    pub diff: Vec<TextDiff>,
}

/// One change made, as `plan --format json` lists it.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppliedChange {
    pub action: crate::plan::Action,
    pub path: String,
    /// file | dir | symlink | device | mount ...
    pub kind: String,
    /// What differed: "content", "mode 0755 -> 1777", ...
    pub what: Vec<String>,
}

/// One entry of Ansible's diff list: a file's text before and after.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextDiff {
    pub path: String,
    pub before: String,
    pub after: String,
}

impl ApplyReport {
    /// The report of an applied plan (an empty plan: nothing changed).
    pub fn of(plan: &crate::plan::Plan) -> ApplyReport {
        ApplyReport {
            changed: !plan.changes.is_empty(),
            summary: plan.summary(),
            changes: plan
                .changes
                .iter()
                .map(|change| AppliedChange {
                    action: change.action,
                    path: change.path.to_string(),
                    kind: change.kind.clone(),
                    what: change.what.clone(),
                })
                .collect(),
            diff: plan
                .changes
                .iter()
                .filter_map(|change| {
                    let texts = change.texts.as_ref()?;
                    Some(TextDiff {
                        path: change.path.to_string(),
                        before: texts.before.clone(),
                        after: texts.after.clone(),
                    })
                })
                .collect(),
        }
    }
}

/// The apply report as one line of JSON (Ansible's `from_json` reads it whole).
pub fn apply_json(plan: &crate::plan::Plan) -> String {
    let mut text =
        serde_json::to_string(&ApplyReport::of(plan)).unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"));
    text.push('\n');
    text
}

/// The JSON Schema of `apply --format json` (committed as schemas/apply.schema.json).
pub fn apply_json_schema() -> String {
    crate::json::schema_of::<ApplyReport>()
}

/// An error as one JSON object for machines: `{"error", "file", "line", "column", "key",
/// "value"}`, the place fields present when known (a Jailfile problem knows them; with several
/// problems the first gives them and all are under "problems").
pub fn error_json(error: &anyhow::Error) -> String {
    let value = match error.downcast_ref::<crate::diagnostics::JailfileErrors>() {
        Some(errors) => jailfile_errors_json(errors),
        None => serde_json::json!({ "error": format!("{error:#}") }),
    };
    let mut text = serde_json::to_string(&value).unwrap_or_else(|_| "{\"error\":\"unprintable error\"}".to_owned());
    text.push('\n');
    text
}

fn jailfile_errors_json(errors: &crate::diagnostics::JailfileErrors) -> serde_json::Value {
    let problem_json = |problem: &crate::diagnostics::Problem| {
        let mut fields = serde_json::Map::new();
        fields.insert("error".into(), problem.message.clone().into());
        fields.insert("file".into(), errors.file.display().to_string().into());
        if let Some(span) = &problem.span {
            let (file, line, column) = errors.place(span.start);
            fields.insert("file".into(), file.display().to_string().into());
            fields.insert("line".into(), line.into());
            fields.insert("column".into(), column.into());
        }
        if !problem.key.is_empty() {
            fields.insert("key".into(), problem.key.clone().into());
        }
        if let Some(value) = &problem.value {
            fields.insert("value".into(), value.clone().into());
        }
        if let Some(help) = &problem.help {
            fields.insert("help".into(), help.clone().into());
        }
        serde_json::Value::Object(fields)
    };
    let problems: Vec<serde_json::Value> = errors.problems.iter().map(problem_json).collect();
    let mut first = match problems.first() {
        Some(serde_json::Value::Object(fields)) => fields.clone(),
        _ => {
            let mut fields = serde_json::Map::new();
            fields.insert("file".into(), errors.file.display().to_string().into());
            fields
        }
    };
    if problems.len() > 1 {
        // The one message says there are more, as the text error's last line does.
        let message = format!(
            "{} (and {} more; nothing was changed)",
            errors.problems[0].message,
            crate::words::count(problems.len() - 1, "problem")
        );
        first.insert("error".into(), message.into());
    }
    first.insert("problems".into(), problems.into());
    serde_json::Value::Object(first)
}
