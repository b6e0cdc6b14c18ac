//! apply on a terminal shows a progress bar (paths done, bytes, rate) and colors once the work
//! has taken a second; piped, neither (issue #16). The terminal is a pty from util-linux's
//! `script`; JAILPROV_PROGRESS_DELAY_MS=0 lets the bar show at once, however fast the machine is.
#![allow(clippy::disallowed_methods)] // tests build fixtures with plain fs calls

use std::fs;
use std::process::Command;

#[macro_use]
mod cli;
use cli::{output, Workspace, UNUSED_ROOT};

const FILES: usize = 3000;

/// A workspace whose Jailfile copies a tree of [`FILES`] small files.
fn big_tree() -> Workspace {
    let workspace = Workspace::new("jailprov-progress-");
    let tree = workspace.dir.join("tree");
    fs::create_dir(&tree).expect("mkdir tree");
    for index in 0..FILES {
        fs::write(tree.join(format!("f{index:05}.txt")), "line\n".repeat(100)).expect("write a file");
    }
    workspace.write_jailfile(&format!(
        "root = \"{UNUSED_ROOT}\"\nbinaries = [\"true\"]\n\n[[files]]\nsrc = \"{}\"\ndest = \"/srv/tree\"\n",
        tree.display()
    ));
    workspace
}

/// The shell words of `command`, quoted for `script -c`.
fn shell_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|word| format!("'{}'", word.to_string_lossy().replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn apply_shows_progress_and_color_on_a_terminal_and_neither_when_piped() {
    need_root!("apply_shows_progress_and_color_on_a_terminal_and_neither_when_piped");
    cli::prerequisites::require(&cli::prerequisites::SCRIPT);
    let workspace = big_tree();

    // On a terminal: stdout and stderr are the pty `script` copies to its stdout.
    let apply = workspace.command("apply", &[]);
    let mut on_tty = Command::new("script");
    on_tty.args(["-qec", &shell_line(&apply), "/dev/null"]).env("TERM", "xterm").env_remove("NO_COLOR");
    // No waiting for the second that keeps quick commands quiet: a fast machine applies the
    // jail in less, and the bar must show however long the work takes.
    on_tty.env("JAILPROV_PROGRESS_DELAY_MS", "0");
    let tty = output(on_tty).ok("apply under script");
    assert!(has_counter(&tty.stdout), "no progress bar: {}", tail(&tty.stdout));
    assert!(tty.stdout.contains("B/s"), "the bar shows a rate: {}", tail(&tty.stdout));
    assert!(tty.stdout.contains("\u{1b}[32m+"), "the + of a created path is green: {}", tail(&tty.stdout));
    assert!(tty.stdout.contains("Apply complete"), "{}", tail(&tty.stdout));

    // Piped: the same work prints no bar and no escape sequence at all.
    workspace.run("destroy", &["--yes"]).ok("destroy");
    let mut piped = workspace.command("apply", &[]);
    piped.env("TERM", "xterm").env_remove("NO_COLOR").env("JAILPROV_PROGRESS_DELAY_MS", "0");
    let piped = output(piped).ok("apply into pipes");
    assert!(!piped.stderr.contains("B/s") && !has_counter(&piped.stderr), "a bar into a pipe: {}", tail(&piped.stderr));
    assert!(!piped.stdout.contains('\u{1b}') && !piped.stderr.contains('\u{1b}'), "escapes into a pipe");
    assert!(piped.stdout.contains("Apply complete"), "{}", tail(&piped.stdout));
}

/// Whether the bar's "apply DONE/ALL" counter was drawn.
fn has_counter(text: &str) -> bool {
    text.match_indices("apply ").any(|(index, found)| {
        let rest = &text[index + found.len()..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        digits > 0 && rest[digits..].starts_with('/')
    })
}

/// The last few hundred characters, enough to see what was drawn.
fn tail(text: &str) -> String {
    let start = text.char_indices().rev().nth(600).map_or(0, |(index, _)| index);
    text[start..].escape_debug().to_string()
}
