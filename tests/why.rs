//! `jailprov why` answers the question asked (issue #21): a path, a soname or a file name; the
//! shortest chain and how many more, every chain with `--all`; a directory nobody declared is
//! explained by the paths below it. The JSON validates against `jailprov schema why`.
//!
//! The jail is `[[files]]` from a fresh tempdir (no root needed, nothing applied), so the
//! snapshots do not depend on the host's libraries; `ls` brings a real soname to look up.
#![allow(clippy::disallowed_methods)] // tests build fixtures with plain fs calls

use std::fs;
use std::process::Command;

#[allow(unused_macros)] // need_root: nothing here needs root
mod cli;
use cli::{output, Run, Workspace, BIN, UNUSED_ROOT};

/// A workspace whose Jailfile copies `ls`, a site tree, and one file of it a second time.
fn site() -> Workspace {
    let workspace = Workspace::new("jailprov-why-");
    let site = workspace.dir.join("site");
    fs::create_dir_all(site.join("css")).expect("mkdir site");
    fs::write(site.join("index.html"), "<h1>hi</h1>\n").expect("write index");
    fs::write(site.join("css/main.css"), "h1 {}\n").expect("write css");
    workspace.write_jailfile(&format!(
        "root = \"{UNUSED_ROOT}\"\nbinaries = [\"ls\"]\n\n\
         [[files]]\nsrc = \"{site}\"\ndest = \"/srv/www/site\"\n\n\
         [[files]]\nsrc = \"{site}/index.html\"\ndest = \"/srv/www/site/index.html\"\n",
        site = site.display()
    ));
    workspace
}

/// `jailprov why ARGS... -f Jailfile.toml`, from the workspace.
fn why(workspace: &Workspace, args: &[&str]) -> Run {
    let mut command = Command::new(BIN);
    command.arg("why").args(args).arg("-f").arg(&workspace.jailfile).current_dir(&workspace.dir);
    output(command)
}

fn stable(workspace: &Workspace, text: &str) -> String {
    text.replace(&workspace.jailfile.display().to_string(), "[JAILFILE]")
}

#[test]
fn why_shows_the_shortest_chain_and_counts_the_others() {
    let workspace = site();
    let run = why(&workspace, &["/srv/www/site/index.html"]).ok("why a path brought twice");
    insta::assert_snapshot!("why_shortest_and_more", stable(&workspace, &run.stdout));
}

#[test]
fn why_all_shows_every_chain() {
    let workspace = site();
    let run = why(&workspace, &["/srv/www/site/index.html", "--all"]).ok("why --all");
    insta::assert_snapshot!("why_all", stable(&workspace, &run.stdout));
}

#[test]
fn why_a_directory_names_the_paths_it_is_created_for() {
    let workspace = site();
    let run = why(&workspace, &["/srv/www"]).ok("why a directory nobody declared");
    insta::assert_snapshot!("why_directory", stable(&workspace, &run.stdout));
}

/// A library loaded under a soname that is not its file name (libpcre2-8.so.0 ->
/// libpcre2-8.so.0.11.2 on Debian), found in `closure --format json`.
fn library_named_otherwise(workspace: &Workspace) -> Option<(String, String)> {
    let mut command = Command::new(BIN);
    command.args(["closure", "--format", "json", "-f"]).arg(&workspace.jailfile);
    let listing: serde_json::Value =
        serde_json::from_str(&output(command).ok("closure --format json").stdout).expect("closure JSON");
    listing["entries"].as_array()?.iter().find_map(|entry| {
        let path = entry["path"].as_str()?;
        let file_name = path.rsplit('/').next()?;
        let soname =
            entry["sonames"].as_array()?.iter().filter_map(|name| name.as_str()).find(|name| *name != file_name)?;
        Some((soname.to_owned(), path.to_owned()))
    })
}

#[test]
fn why_takes_a_soname_as_the_lock_names_libraries() {
    let workspace = site();
    let Some((soname, path)) = library_named_otherwise(&workspace) else {
        eprintln!(
            "SKIPPED why_takes_a_soname_as_the_lock_names_libraries: ls loads no library under another name here"
        );
        return;
    };
    let run = why(&workspace, &[&soname]).ok("why by soname");
    let first = run.stdout.lines().next().unwrap_or_default();
    assert_eq!(first, format!("{path} (library as {soname})"), "{}", run.describe());
    let last = run.stdout.lines().last().unwrap_or_default();
    assert!(last.contains("binaries[0] = \"ls\""), "ends at the declaration: {}", run.describe());
}

#[test]
fn why_takes_a_bare_file_name() {
    let workspace = site();
    let run = why(&workspace, &["main.css"]).ok("why by file name");
    insta::assert_snapshot!("why_file_name", stable(&workspace, &run.stdout));
}

#[test]
fn why_an_unknown_name_suggests_the_closest_and_where_to_look() {
    let workspace = site();
    let run = why(&workspace, &["libc.so"]).code(1, "an unknown name");
    insta::assert_snapshot!("why_unknown_name", stable(&workspace, &run.stderr));
    let run = why(&workspace, &["lib/libc.so.6"]).code(1, "a relative path");
    insta::assert_snapshot!("why_relative_path", stable(&workspace, &run.stderr));
}

/// The JSON of every kind of answer obeys the schema the binary prints.
#[test]
fn why_json_validates_against_its_schema() {
    let workspace = site();
    let schema = output({
        let mut command = Command::new(BIN);
        command.args(["schema", "why"]);
        command
    })
    .ok("jailprov schema why");
    let schema: serde_json::Value = serde_json::from_str(&schema.stdout).expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    for query in [&["libc.so.6"][..], &["/srv/www"], &["/srv/www/site/index.html", "--all"]] {
        let mut args = query.to_vec();
        args.extend(["--format", "json"]);
        let run = why(&workspace, &args).ok("why --format json");
        let value: serde_json::Value = serde_json::from_str(&run.stdout).expect("why JSON");
        let errors: Vec<String> =
            validator.iter_errors(&value).map(|error| format!("{error} at {}", error.instance_path())).collect();
        assert!(errors.is_empty(), "{query:?}: {errors:#?}\n{value:#}");
        assert!(value["paths"].as_array().is_some_and(|paths| !paths.is_empty()), "{value:#}");
    }
}
