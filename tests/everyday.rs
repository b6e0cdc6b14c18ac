//! Conveniences around the commands: shell completions, man pages, and color in plan and apply.
#![allow(clippy::disallowed_methods)] // tests read their own workspace with plain fs calls

#[macro_use]
mod cli;

use std::process::{Command, Stdio};

use cli::{output, Run, Workspace, BIN};

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

/// A jail of two inline files and /tmp, planned without root (nothing exists yet).
const TWO_FILES: &str = "root = \"/unused\"\n[[dirs]]\npath = \"/tmp\"\nmode = \"1777\"\n\
    [[files]]\npath = \"/etc/motd\"\ncontent = \"hello\\n\"\n\
    [[files]]\npath = \"/etc/issue\"\ncontent = \"jail\\n\"\n";

/// Escapes made visible for snapshots and messages: ESC as `\e`.
fn visible(text: &str) -> String {
    text.replace('\x1b', "\\e")
}

/// `jailprov plan ...` for `ws` run on a pseudo-terminal by `script`, with `env` set (TERM=xterm,
/// so that `auto` has a color terminal to decide for); its stdout as the terminal showed it.
fn plan_on_a_terminal(ws: &Workspace, env: &[(&str, &str)], extra: &str) -> String {
    cli::prerequisites::require(&cli::prerequisites::SCRIPT);
    let line = ws.command_line("plan", extra);
    let mut command = Command::new("script");
    command.args(["-qec", &line, "/dev/null"]).env("TERM", "xterm").env_remove("NO_COLOR").env_remove("CLICOLOR_FORCE");
    command.envs(env.iter().copied());
    let run = output(command).ok("plan on a terminal");
    run.stdout
}

#[test]
fn plan_is_colored_on_a_terminal_by_default_and_not_with_no_color_or_never() {
    let ws = Workspace::new("jailprov-color-tty-");
    ws.write_jailfile(TWO_FILES);
    let colored = plan_on_a_terminal(&ws, &[], "");
    assert!(colored.contains("\x1b[32m+  \x1b[0m"), "a green + on a terminal:\n{}", visible(&colored));
    let no_color = plan_on_a_terminal(&ws, &[("NO_COLOR", "1")], "--color auto");
    assert!(
        !no_color.contains('\x1b') && no_color.contains("Plan: 5 to create"),
        "NO_COLOR=1:\n{}",
        visible(&no_color)
    );
    let never = plan_on_a_terminal(&ws, &[], "--color never");
    assert!(!never.contains('\x1b') && never.contains("Plan: 5 to create"), "--color never:\n{}", visible(&never));
    // `always` wins over NO_COLOR as over a pipe: the user asked on this very command line.
    let always = plan_on_a_terminal(&ws, &[("NO_COLOR", "1")], "--color always");
    assert!(always.contains('\x1b'), "--color always:\n{}", visible(&always));
}

#[test]
fn plan_into_a_pipe_has_no_color_unless_always() {
    let ws = Workspace::new("jailprov-color-pipe-");
    ws.write_jailfile(TWO_FILES);
    let mut piped = ws.command("plan", &[]);
    piped.env("TERM", "xterm").env_remove("NO_COLOR").env_remove("CLICOLOR_FORCE");
    let run = output(piped).ok("plan into a pipe");
    assert!(!run.stdout.contains('\x1b') && run.stdout.contains("Plan: 5 to create"), "{}", visible(&run.stdout));
    let run = ws.run("plan", &["--color", "always"]).ok("plan --color always");
    assert!(run.stdout.contains("\x1b[1mPlan:\x1b[0m \x1b[32m5 to create\x1b[0m"), "{}", visible(&run.stdout));
    let run = ws.run("plan", &["--color", "always", "--format", "json"]).ok("json is never colored");
    assert!(!run.stdout.contains('\x1b'), "{}", run.stdout);
}

/// Markers colored as a user at a terminal sees them (create green, change yellow with its diff
/// green/red/cyan, delete red) and the summary line; apply's and destroy's per-change lines the
/// same way.
#[test]
fn plan_and_destroy_colors_snapshot() {
    need_root!("plan_and_destroy_colors_snapshot");
    let ws = Workspace::new("jailprov-color-all-");
    ws.write_jailfile(TWO_FILES);
    ws.apply();
    ws.write_jailfile(&TWO_FILES.replace("hello", "hello again").replace(
        "[[files]]\npath = \"/etc/issue\"\ncontent = \"jail\\n\"\n",
        "[[files]]\npath = \"/etc/hostname\"\ncontent = \"j\\n\"\n",
    ));
    let run = ws.run("plan", &["--color", "always"]).ok("plan --color always");
    let text = visible(&run.stdout).replace(&ws.dir.display().to_string(), "[DIR]");
    insta::assert_snapshot!("plan_colored", text);
    let run = ws.run("apply", &["--color", "always"]).ok("apply --color always");
    assert!(run.stdout.contains("\x1b[32m+  \x1b[0m file     /etc/hostname"), "{}", visible(&run.stdout));
    let run = ws.run("apply", &[]).ok("apply into a pipe");
    assert!(!run.stdout.contains('\x1b'), "{}", visible(&run.stdout));
    let run = ws.run("destroy", &["--yes", "--color", "always"]).ok("destroy --color always");
    assert!(run.stdout.contains("\x1b[31m-  \x1b[0m file     /etc/motd"), "{}", visible(&run.stdout));
}
