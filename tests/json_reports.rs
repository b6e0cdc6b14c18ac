//! Every `--format json` output validates against the schema `jailprov schema KIND` prints (the
//! committed schemas/KIND.schema.json, tests/schema.rs): closure, why (tests/why.rs), plan,
//! apply, check and lock, each run for real on a jail with host drift and a finding.
#![allow(clippy::disallowed_methods)] // tests build fixtures and tamper with jails with plain fs calls

use std::fs;
use std::process::Command;

use serde_json::Value;

#[macro_use]
mod cli;
use cli::{output, Run, Workspace, BIN, UNUSED_ROOT};

/// A workspace copying `true` and one host file of its own, which tests edit (host drift).
fn workspace() -> Workspace {
    let workspace = Workspace::new("jailprov-json-");
    fs::write(workspace.dir.join("app.conf"), "port = 1\n").expect("write the source");
    workspace.write_jailfile(&format!(
        "root = \"{UNUSED_ROOT}\"\nbinaries = [\"true\"]\n\n[[files]]\nsrc = \"{}\"\ndest = \"/etc/app.conf\"\n\n\
         [[files]]\npath = \"/etc/motd\"\ncontent = \"hello\\n\"\n",
        workspace.dir.join("app.conf").display()
    ));
    workspace
}

/// Asserts `run` printed one JSON value obeying `jailprov schema KIND`, and returns it.
fn valid(kind: &str, run: &Run) -> Value {
    let schema = output({
        let mut command = Command::new(BIN);
        command.args(["schema", kind]);
        command
    })
    .ok("jailprov schema KIND");
    let schema: Value = serde_json::from_str(&schema.stdout).expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let value: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|error| panic!("{kind}: stdout is not one JSON value ({error}): {}", run.describe()));
    let errors: Vec<String> =
        validator.iter_errors(&value).map(|error| format!("{error} at {}", error.instance_path())).collect();
    assert!(errors.is_empty(), "{kind} output breaks its schema: {errors:#?}\n{value:#}");
    value
}

#[test]
fn closure_json_obeys_its_schema() {
    let workspace = workspace();
    let mut command = Command::new(BIN);
    command.args(["closure", "--format", "json", "-f"]).arg(&workspace.jailfile);
    let value = valid("closure", &output(command).ok("closure --format json"));
    assert!(value["entries"].as_array().is_some_and(|entries| entries.len() > 3), "{value:#}");
}

#[test]
fn plan_apply_check_and_lock_json_obey_their_schemas() {
    need_root!("plan_apply_check_and_lock_json_obey_their_schemas");
    let workspace = workspace();
    let plan = valid("plan", &workspace.run("plan", &["--format", "json"]).ok("plan before any apply"));
    assert_eq!(plan["lock"], "missing", "{plan:#}");
    valid("apply", &workspace.run("apply", &["--format", "json"]).ok("apply --format json"));
    let lock = valid("lock", &workspace.run("lock", &["--format", "json"]).ok("lock, up to date"));
    assert_eq!(lock["wrote"], false, "{lock:#}");

    // Host drift, and a managed file tampered with in the jail: every list gets an item.
    fs::write(workspace.dir.join("app.conf"), "port = 22\n").expect("edit the source");
    fs::write(workspace.at("/etc/motd"), "tampered\n").expect("tamper with the jail");
    let plan = valid("plan", &workspace.run("plan", &["--format", "json"]).ok("plan with drift"));
    assert_eq!(plan["host_drift"][0]["path"], "/etc/app.conf", "{plan:#}");
    assert!(plan["host_drift"][0]["source"].as_str().is_some_and(|source| source.ends_with("/app.conf")), "{plan:#}");
    let check = valid("check", &workspace.run("check", &["--format", "json"]).code(1, "check finds the tampering"));
    assert!(check["findings"].as_array().is_some_and(|findings| !findings.is_empty()), "{check:#}");
    let check = valid("check", &workspace.run("check", &["--format", "json", "--fix"]).ok("check --fix repairs"));
    assert!(check["fixed"].as_array().is_some_and(|fixed| !fixed.is_empty()), "{check:#}");
    let lock = valid("lock", &workspace.run("lock", &["--format", "json"]).ok("lock accepts the drift"));
    assert_eq!(lock["wrote"], true, "{lock:#}");
    assert_eq!(lock["changes"][0]["path"], "/etc/app.conf", "{lock:#}");
    assert_eq!(lock["host_drift"].as_array().map(Vec::len), Some(1), "{lock:#}");
}

/// Errors of a JSON command are one JSON object on stderr, for why, lock and check too.
#[test]
fn json_commands_report_errors_as_json() {
    let workspace = Workspace::new("jailprov-json-error-");
    workspace.write_jailfile("root = \"/srv/jails/x\"\nbinarys = [\"true\"]\n");
    for command in ["why", "lock", "check"] {
        let mut args = vec![command];
        if command == "why" {
            args.push("libc.so.6");
        }
        let mut run = Command::new(BIN);
        run.args(&args).args(["--format", "json", "-f"]).arg(&workspace.jailfile);
        let run = output(run).code(1, "a Jailfile with a typo");
        let error: Value =
            serde_json::from_str(&run.stderr).unwrap_or_else(|_| panic!("{command}: {}", run.describe()));
        assert!(error["error"].as_str().is_some_and(|text| text.contains("binarys")), "{command}: {error:#}");
    }
}
