//! What a new user runs into in the first hour (issue #21): a `dest` ending in "/", and the
//! errors of a run without root.
#![allow(clippy::disallowed_methods)] // tests build fixtures with plain fs calls

#[macro_use]
mod cli;

use cli::{Run, Workspace, UNUSED_ROOT};

/// A workspace (mode `mode`, open to the unprivileged user) with a Jailfile for `sh` and a
/// state directory only root may use.
fn with_root_only_state_dir(prefix: &str, mode: u32) -> Workspace {
    use std::os::unix::fs::PermissionsExt;
    let workspace = Workspace::new(prefix);
    std::fs::set_permissions(&workspace.dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
    std::fs::create_dir(&workspace.state).expect("state dir");
    std::fs::set_permissions(&workspace.state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    workspace.write_jailfile(&format!("root = \"{UNUSED_ROOT}\"\nbinaries = [\"sh\"]\n"));
    workspace
}

/// Runs a jailprov command (as `Workspace::command` built it) as the unprivileged user nobody.
fn as_nobody(workspace: &Workspace, jailprov: std::process::Command) -> Run {
    let mut command = std::process::Command::new("setpriv");
    command.args(["--reuid=65534", "--regid=65534", "--clear-groups", cli::BIN]);
    command.args(jailprov.get_args()).current_dir(&workspace.dir).stdin(std::process::Stdio::null());
    cli::output(command)
}

/// `dest = "/srv/www/"` with a file `src` puts the file into that directory, as `cp` would;
/// without the "/", `dest` is the file's own path.
#[test]
fn a_dest_ending_in_slash_receives_the_file_under_its_own_name() {
    need_root!("a_dest_ending_in_slash_receives_the_file_under_its_own_name");
    let workspace = Workspace::new("jailprov-dest-dir-");
    let page = workspace.dir.join("index.html");
    std::fs::write(&page, "<h1>hello</h1>\n").expect("write the source");
    workspace.write_jailfile(&format!(
        "root = \"{UNUSED_ROOT}\"\n[[files]]\nsrc = \"{page}\"\ndest = \"/srv/www/\"\n[[files]]\nsrc = \"{page}\"\ndest = \"/srv/site\"\n",
        page = page.display()
    ));
    workspace.apply();
    let inside = workspace.at("/srv/www/index.html");
    assert_eq!(std::fs::read_to_string(&inside).expect("the file is in the directory"), "<h1>hello</h1>\n");
    assert!(workspace.at("/srv/www").is_dir(), "/srv/www is a directory, not the file");
    assert!(workspace.at("/srv/site").is_file(), "a dest without a slash names the file itself");
}

/// A caller without root whose state directory is root's is told what to do, not only
/// "Permission denied".
#[test]
fn a_state_directory_only_root_may_use_says_run_as_root_or_pass_state_dir() {
    need_root!("a_state_directory_only_root_may_use_says_run_as_root_or_pass_state_dir");
    let workspace = with_root_only_state_dir("jailprov-rootless-", 0o755);
    let run = as_nobody(&workspace, workspace.command("plan", &[])).code(1, "plan without root");
    let state = workspace.state.display().to_string();
    insta::assert_snapshot!(run
        .stderr
        .replace(&state, "[STATE]")
        .replace(&workspace.root.display().to_string(), "[ROOT]"));
}

/// Without root, `enter` maps the jail user to the caller's uid, which cannot enter a home the
/// jail user owns: the error says why and what to do, not only EACCES.
#[test]
fn a_rootless_enter_refused_its_working_directory_says_why_and_what_to_do() {
    need_root!("a_rootless_enter_refused_its_working_directory_says_why_and_what_to_do");
    use std::os::unix::fs::PermissionsExt;
    let workspace = Workspace::new("jailprov-rootless-enter-");
    std::fs::set_permissions(&workspace.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    workspace.write_jailfile(&format!(
        "root = \"{UNUSED_ROOT}\"\nbinaries = [\"bash\"]\n[[users]]\nname = \"jailer\"\nuid = 1000\ngid = 1000\nhome = \"/home/jailer\"\n[enter]\nuser = \"jailer\"\n"
    ));
    workspace.apply();
    let run = as_nobody(&workspace, workspace.enter_command(&["/usr/bin/bash", "-c", "true"]));
    if run.stderr.contains("user namespaces are disabled") {
        eprintln!(
            "SKIPPED a_rootless_enter_refused_its_working_directory_says_why_and_what_to_do: {}",
            run.stderr.trim()
        );
        return;
    }
    assert_ne!(run.code, 0, "{}", run.describe());
    insta::assert_snapshot!(run.stderr);
}

/// `lock` saves its hash cache as two files; an unwritable state directory warns once, not
/// once per file.
#[test]
fn the_hash_cache_warning_is_printed_once() {
    need_root!("the_hash_cache_warning_is_printed_once");
    // 0777: the unprivileged user writes the lock beside the Jailfile.
    let workspace = with_root_only_state_dir("jailprov-warn-once-", 0o777);
    let run = as_nobody(&workspace, workspace.command("lock", &[])).ok("lock without root");
    assert_eq!(run.stderr.matches("warning: cannot save the lock's hash cache").count(), 1, "{}", run.describe());
}
