//! Output that fits: long change lists summarised by kind (`-v` lists all, `-q` the summary line
//! only), counted nouns in the singular for one, and `schema --write`.
#![allow(clippy::disallowed_methods)] // tests read their own workspace with plain fs calls

#[macro_use]
mod cli;

use std::process::{Command, Stdio};

use cli::{inline_files, output, Run, Workspace, BIN};

fn workspace(prefix: &str, files: usize) -> Workspace {
    let ws = Workspace::new(prefix);
    ws.write_jailfile(&inline_files(files));
    ws
}

/// The lines of a plan or apply that list one change each.
fn change_lines(text: &str) -> usize {
    text.lines().filter(|line| line.trim_start().starts_with("+   ") || line.trim_start().starts_with("-   ")).count()
}

#[test]
fn a_plan_of_40_lines_is_listed_whole_and_one_of_41_is_summarised_by_kind() {
    // n inline files make n + 2 paths: the files, their /etc, and the /dev every jail has.
    let ws = workspace("jailprov-output-threshold-", 38);
    let whole = ws.run("plan", &[]).ok("plan of 40 paths");
    assert_eq!(change_lines(&whole.stdout), 40, "{}", whole.stdout);
    assert!(!whole.stdout.contains("more (-v"), "{}", whole.stdout);

    let ws = workspace("jailprov-output-long-", 39);
    let summarised = ws.run("plan", &[]).ok("plan of 41 paths");
    insta::assert_snapshot!("long_plan_summarised", ws.anonymous(&summarised.stdout));
    let verbose = ws.run("plan", &["-v"]).ok("plan -v");
    assert_eq!(change_lines(&verbose.stdout), 41, "-v lists every path: {}", verbose.stdout);
    let quiet = ws.run("plan", &["-q"]).ok("plan -q");
    // The lock's note stays (it is pending too); no change is listed.
    assert!(quiet.stdout.ends_with("\nPlan: 41 to create, 0 to update, 0 to delete.\n"), "{}", quiet.describe());
    assert_eq!(change_lines(&quiet.stdout), 0, "{}", quiet.describe());
    let both = ws.run("plan", &["-q", "-v"]).code(2, "-q and -v together are a usage error");
    assert!(both.stderr.contains("cannot be used with"), "{}", both.describe());
}

#[test]
fn apply_and_destroy_of_a_long_list_print_the_first_lines_and_a_summary() {
    need_root!("apply_and_destroy_of_a_long_list_print_the_first_lines_and_a_summary");
    let ws = workspace("jailprov-output-apply-", 50);
    let applied = ws.apply();
    insta::assert_snapshot!("long_apply_summarised", ws.anonymous(&applied.stdout));
    assert!(applied.stdout.lines().count() < 30, "{}", applied.stdout);

    let quiet = ws.run("destroy", &["--yes", "-q"]).ok("destroy -q");
    assert_eq!(
        ws.anonymous(&quiet.stdout),
        "Destroy complete: 52 deleted.\nRemoved the empty jail root [DIR]/jail.\n",
        "{}",
        quiet.describe()
    );

    ws.apply();
    let verbose = ws.run("destroy", &["--yes", "-v"]).ok("destroy -v");
    assert_eq!(change_lines(&verbose.stdout), 52, "{}", verbose.stdout);
}

#[test]
fn apply_quiet_prints_only_the_summary_line() {
    need_root!("apply_quiet_prints_only_the_summary_line");
    let ws = workspace("jailprov-output-quiet-", 2);
    let run = ws.run("apply", &["-q"]).ok("apply -q");
    assert_eq!(run.stdout, "Apply complete: 4 created, 0 updated, 0 deleted.\n", "{}", run.describe());
    ws.run("destroy", &["--yes"]).ok("destroy");
}

/// `jailprov ARGS...` in `dir`, stdin closed.
fn jailprov_in(dir: &std::path::Path, args: &[&str]) -> Run {
    let mut command = Command::new(BIN);
    command.args(args).current_dir(dir).stdin(Stdio::null());
    output(command)
}

#[test]
fn one_of_a_thing_is_said_in_the_singular() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("Jailfile.toml"), "root = \"/srv/jails/one\"\nbinaries = [\"sh\"]\n")
        .expect("Jailfile");
    let valid = jailprov_in(dir.path(), &["validate"]).ok("validate");
    insta::assert_snapshot!("validate_one_binary", valid.stdout);
    let closure = jailprov_in(dir.path(), &["closure"]).ok("closure");
    let summary = closure.stdout.lines().find(|line| line.contains(" paths: ")).expect("a summary line");
    assert!(summary.contains(": 1 binary,"), "{summary}");
    assert!(!summary.contains(" 1 binaries") && !summary.contains(" 1 libraries"), "{summary}");
}

#[test]
fn schema_write_puts_the_schema_where_a_jailfile_can_name_it_and_never_over_another_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let schemas = dir.path().join("schemas");
    std::fs::create_dir(&schemas).expect("mkdir");
    let dir_text = dir.path().display().to_string();
    let said = |run: &Run| run.stdout.replace(&dir_text, "[DIR]") + &run.stderr.replace(&dir_text, "[DIR]");

    let wrote = jailprov_in(dir.path(), &["schema", "--write", "schemas"]).ok("schema --write");
    let printed = jailprov_in(dir.path(), &["schema"]).ok("schema");
    let written = std::fs::read_to_string(schemas.join("jailfile.schema.json")).expect("the schema was written");
    assert_eq!(written, printed.stdout, "the file is what `jailprov schema` prints");
    let again = jailprov_in(dir.path(), &["schema", "--write", "schemas"]).ok("schema --write again");

    std::fs::write(schemas.join("jailfile.schema.json"), "{}\n").expect("another file there");
    let refused =
        jailprov_in(dir.path(), &["schema", "--write", "schemas"]).code(1, "schema --write over another file");
    assert_eq!(std::fs::read_to_string(schemas.join("jailfile.schema.json")).expect("kept"), "{}\n");
    insta::assert_snapshot!("schema_write", [said(&wrote), said(&again), said(&refused)].join("---\n"));
}
