//! Conveniences around the commands: shell completions, man pages, and color in plan and apply.
#![allow(clippy::disallowed_methods)] // tests read their own workspace with plain fs calls

mod cli;

use std::process::{Command, Stdio};

use cli::{output, Run, BIN};

/// `jailprov ARGS...` with stdin closed, in `dir`.
fn jailprov(args: &[&str]) -> Run {
    let mut command = Command::new(BIN);
    command.args(args).stdin(Stdio::null());
    output(command)
}

/// Every subcommand the user can type, from clap's own definition.
fn subcommands() -> Vec<String> {
    let command = <jailprov::cli::Cli as clap::CommandFactory>::command();
    command.get_subcommands().map(|sub| sub.get_name().to_owned()).collect()
}

#[test]
fn bash_completion_offers_every_subcommand() {
    let run = jailprov(&["completions", "bash"]).ok("completions bash");
    assert!(run.stdout.contains("complete -F _jailprov"), "a bash completion script:\n{}", run.stdout);
    // The words offered after `jailprov <TAB>`: the `opts=` line of the script's `jailprov)` case.
    let top = run
        .stdout
        .lines()
        .skip_while(|line| line.trim() != "jailprov)")
        .find(|line| line.trim_start().starts_with("opts="))
        .expect("the top command's opts= line");
    let offered: Vec<&str> = top.trim().trim_start_matches("opts=").trim_matches('"').split(' ').collect();
    for sub in subcommands() {
        assert!(offered.contains(&sub.as_str()), "{sub} is offered after `jailprov `: {top}");
        assert!(run.stdout.contains(&format!("jailprov__subcmd__{sub})")), "{sub}'s options are completed");
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let run = jailprov(&["completions", shell]).ok(shell);
        assert!(run.stdout.contains("apply") && run.stdout.contains("color"), "{shell}:\n{}", run.stdout);
    }
}

#[test]
fn manpage_prints_roff_that_man_renders() {
    let run = jailprov(&["manpage"]).ok("manpage");
    assert!(run.stdout.lines().any(|line| line.starts_with(".TH jailprov 1")), "roff with a .TH:\n{}", run.stdout);
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join("jailprov.1");
    std::fs::write(&page, &run.stdout).expect("write the page");
    if let Ok(man) = Command::new("man").arg("-l").arg(&page).env("MANPAGER", "cat").env("COLUMNS", "100").output() {
        let text = String::from_utf8_lossy(&man.stdout);
        assert!(man.status.success() && text.contains("SUBCOMMANDS"), "man -l renders it:\n{text}");
    }
}

#[test]
fn manpage_output_dir_holds_a_page_per_subcommand() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("man1");
    let run = jailprov(&["manpage", "--output", &out.display().to_string()]).ok("manpage --output");
    let expected = subcommands().len() + 1;
    assert!(run.stdout.contains(&format!("Wrote {expected} man pages")), "{}", run.describe());
    for sub in subcommands() {
        let page = std::fs::read_to_string(out.join(format!("jailprov-{sub}.1")))
            .unwrap_or_else(|error| panic!("no page for {sub}: {error}"));
        assert!(page.contains(&format!(".TH jailprov-{sub} 1")), "{sub}:\n{page}");
    }
    assert!(out.join("jailprov.1").is_file(), "the main page");
}
