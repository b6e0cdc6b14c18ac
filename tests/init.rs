//! `jailprov init`: the Jailfile it writes (snapshot), that it validates and applies, and that it
//! never overwrites a file nor accepts a program the host lacks.
#![allow(clippy::disallowed_methods)] // tests read their own workspace with plain fs calls

#[macro_use]
mod cli;

use std::process::{Command, Stdio};

use cli::{output, Run, Workspace, BIN};

/// `jailprov init ARGS... -f Jailfile --root ROOT`, run in the workspace.
fn init(ws: &Workspace, args: &[&str]) -> Run {
    let mut command = Command::new(BIN);
    command
        .arg("init")
        .args(args)
        .arg("-f")
        .arg(&ws.jailfile)
        .arg("--root")
        .arg(&ws.root)
        .current_dir(&ws.dir)
        .stdin(Stdio::null());
    output(command)
}

/// `jailprov validate -f Jailfile` (its own `root`, no override), which must succeed.
fn validate(ws: &Workspace) -> Run {
    let mut command = Command::new(BIN);
    command.arg("validate").arg("-f").arg(&ws.jailfile).current_dir(&ws.dir).stdin(Stdio::null());
    output(command).ok("the written Jailfile validates")
}

/// The written Jailfile with the workspace's path (a fresh tempdir) as [DIR].
fn written(ws: &Workspace) -> String {
    let text = std::fs::read_to_string(&ws.jailfile).expect("init wrote the Jailfile");
    text.replace(&ws.dir.display().to_string(), "[DIR]")
}

#[test]
fn init_writes_a_commented_jailfile_that_validates() {
    let ws = Workspace::new("jailprov-init-");
    init(&ws, &["bash", "/usr/bin/ls", "bash"]).ok("init");
    insta::assert_snapshot!("init_bash_and_ls", written(&ws));
    validate(&ws);
    // The #:schema line names the schema init wrote beside it, the one `jailprov schema` prints.
    let schema = std::fs::read_to_string(ws.dir.join("jailfile.schema.json")).expect("the schema was written");
    assert_eq!(schema, jailprov::jailfile::json_schema());
    let first = std::fs::read_to_string(&ws.jailfile).expect("read");
    assert!(first.starts_with(&format!("#:schema {}\n", ws.dir.join("jailfile.schema.json").display())), "{first}");
}

#[test]
fn init_without_programs_comments_the_enter_example_and_still_validates() {
    let ws = Workspace::new("jailprov-init-empty-");
    init(&ws, &[]).ok("init");
    let text = written(&ws);
    assert!(text.contains("binaries = [\n]"), "{text}");
    assert!(text.contains("# [enter]\n# command = [\"/usr/bin/bash\"]"), "{text}");
    validate(&ws);
}

#[test]
fn init_never_overwrites_an_existing_jailfile() {
    let ws = Workspace::new("jailprov-init-exists-");
    ws.write_jailfile("# mine\n");
    let run = init(&ws, &["bash"]).code(1, "an existing Jailfile");
    assert!(
        run.stderr.contains(&format!("the Jailfile {} already exists", ws.jailfile.display())),
        "{}",
        run.describe()
    );
    assert_eq!(std::fs::read_to_string(&ws.jailfile).expect("read"), "# mine\n", "left as it was");
}

#[test]
fn init_refuses_a_program_the_host_lacks_naming_the_search_path() {
    let ws = Workspace::new("jailprov-init-missing-");
    let run = init(&ws, &["bash", "no-such-program-jailprov"]).code(1, "an unknown program");
    insta::assert_snapshot!("init_unknown_program", run.stderr);
    assert!(!ws.jailfile.exists(), "nothing written");
    let run = init(&ws, &["./not-here"]).code(1, "a missing path");
    assert!(run.stderr.contains("no such file on the host"), "{}", run.describe());
}

#[test]
fn init_output_applies_and_bash_runs_in_the_jail() {
    need_root!("init_output_applies_and_bash_runs_in_the_jail");
    let ws = Workspace::new("jailprov-init-apply-");
    init(&ws, &["bash"]).ok("init");
    ws.apply();
    assert!(ws.at("/usr/bin/bash").is_file(), "bash is in the jail");
    assert!(ws.at("/dev/null").exists(), "the devices of the template are made");
    let plan = ws.run("plan", &[]).ok("plan after apply");
    assert!(plan.stdout.contains("No changes."), "{}", plan.describe());
}
