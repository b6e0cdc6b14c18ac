//! destroy asks before it removes anything, `plan --destroy` previews it, and every command that
//! targets a root says when the Jailfile was last applied to another one.
#![allow(clippy::disallowed_methods)] // tests read their own workspace with plain fs calls

#[macro_use]
mod cli;

use std::path::Path;

use cli::{inline_files, Run, Workspace};

/// A workspace with `count` inline files, applied.
fn applied(prefix: &str, count: usize) -> Workspace {
    let ws = Workspace::new(prefix);
    ws.write_jailfile(&inline_files(count));
    ws.apply();
    ws
}

/// `jailprov destroy` on a pseudo-terminal, `answer` typed into it.
fn destroy_on_a_terminal(ws: &Workspace, answer: &str) -> (i32, String) {
    cli::on_a_terminal(&ws.command_line("destroy", "--color never"), answer)
}

#[test]
fn destroy_without_a_terminal_refuses_unless_told_yes() {
    need_root!("destroy_without_a_terminal_refuses_unless_told_yes");
    let ws = applied("jailprov-destroy-notty-", 3);
    let refused = ws.run("destroy", &[]).code(1, "destroy with stdin not a terminal and no --yes");
    insta::assert_snapshot!("destroy_refused_without_a_terminal", ws.anonymous(&refused.stderr));
    assert!(refused.stdout.is_empty(), "{}", refused.describe());
    assert!(ws.at("/etc/f01").exists(), "a refused destroy removed files: {}", refused.describe());

    let done = ws.run("destroy", &["--yes"]).ok("destroy --yes");
    insta::assert_snapshot!("destroy_yes", ws.anonymous(&done.stdout));
    assert!(!ws.root.exists(), "destroy --yes left the jail: {}", done.describe());
}

#[test]
fn destroy_on_a_terminal_shows_what_goes_and_wants_yes() {
    need_root!("destroy_on_a_terminal_shows_what_goes_and_wants_yes");
    let ws = applied("jailprov-destroy-tty-", 3);
    let (code, text) = destroy_on_a_terminal(&ws, "y\n");
    assert_eq!(code, 1, "only `yes` is yes: {text}");
    insta::assert_snapshot!("destroy_asked_and_cancelled", ws.anonymous(&text));
    assert!(ws.at("/etc/f03").exists(), "a cancelled destroy removed files: {text}");

    let (code, text) = destroy_on_a_terminal(&ws, "yes\n");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("Destroy complete: 5 deleted.\n"), "{text}");
    assert!(!text.contains("-   file     /etc/f01\n-   file"), "the list is shown once, before the question: {text}");
    assert!(!ws.root.exists(), "{text}");
}

#[test]
fn plan_destroy_previews_what_destroy_removes_and_changes_nothing() {
    need_root!("plan_destroy_previews_what_destroy_removes_and_changes_nothing");
    let ws = applied("jailprov-plan-destroy-", 3);
    let preview = ws.run("plan", &["--destroy", "--detailed-exitcode"]).code(2, "plan --destroy with a jail");
    insta::assert_snapshot!("plan_destroy_text", ws.anonymous(&preview.stdout));
    let json = ws.run("plan", &["--destroy", "--format", "json"]).ok("plan --destroy --format json");
    let json: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(json["summary"]["delete"], 5, "{json}");
    assert_eq!(json["summary"]["create"], 0, "{json}");
    assert!(ws.at("/etc/f02").exists(), "plan --destroy removed something");
    ws.run("plan", &["--detailed-exitcode"]).ok("the jail still matches after the preview");

    ws.run("destroy", &["--yes"]).ok("destroy");
    let nothing = ws.run("plan", &["--destroy", "--detailed-exitcode"]).ok("plan --destroy without a jail");
    assert_eq!(ws.anonymous(&nothing.stdout), "Nothing to destroy: [DIR]/jail does not exist.\n");
    let refused = ws.run("plan", &["--destroy", "--adopt"]).code(2, "--destroy with --adopt is a usage error");
    assert!(refused.stderr.contains("cannot be used with"), "{}", refused.describe());
}

/// Runs `subcommand` against `root` and returns its stderr lines that warn about another root.
fn root_warnings(ws: &Workspace, subcommand: &str, root: &Path, extra: &[&str]) -> (Run, Vec<String>) {
    let run = ws.run_at(subcommand, root, extra);
    let warnings =
        run.stderr.lines().filter(|line| line.contains("was last applied to")).map(|line| ws.anonymous(line)).collect();
    (run, warnings)
}

#[test]
fn every_command_says_when_the_jailfile_was_last_applied_to_another_root() {
    need_root!("every_command_says_when_the_jailfile_was_last_applied_to_another_root");
    let ws = Workspace::new("jailprov-other-root-");
    ws.write_jailfile(&inline_files(2));
    let other = ws.dir.join("other");
    ws.run_at("apply", &other, &[]).ok("apply --root other");

    let (_, said) = root_warnings(&ws, "plan", &ws.root, &[]);
    insta::assert_snapshot!("applied_to_another_root", said.join("\n"));
    for (subcommand, extra) in [("plan", &["--destroy"][..]), ("check", &[]), ("destroy", &["--yes"])] {
        let (run, said) = root_warnings(&ws, subcommand, &ws.root, extra);
        assert_eq!(said.len(), 1, "{subcommand} says it once: {}", run.describe());
    }
    let (run, said) = root_warnings(&ws, "plan", &other, &[]);
    assert!(said.is_empty(), "the root applied last is the one targeted: {}", run.describe());

    // Applied to the Jailfile's root now: that is the last one, and no warning is left for it.
    let (run, said) = root_warnings(&ws, "apply", &ws.root, &[]);
    assert_eq!(said.len(), 1, "apply names the root it moves away from: {}", run.describe());
    let (run, said) = root_warnings(&ws, "plan", &ws.root, &[]);
    assert!(said.is_empty(), "{}", run.describe());
    let (run, said) = root_warnings(&ws, "plan", &other, &[]);
    assert_eq!(said.len(), 1, "{}", run.describe());

    // A destroyed jail is no longer named.
    ws.run("destroy", &["--yes"]).ok("destroy the jail applied last");
    let (run, said) = root_warnings(&ws, "plan", &other, &[]);
    assert!(said.is_empty(), "a destroyed root is not named: {}", run.describe());
    ws.run_at("destroy", &other, &["--yes"]).ok("destroy the other jail");
}
