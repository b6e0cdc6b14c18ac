//! `apply --format json` for Ansible and other automation: one object on stdout saying whether
//! anything changed, what, and the texts before and after; errors as one JSON object on stderr.
//!
//! Real jails as root in fresh temporary directories (`SKIPPED <name>: needs root` otherwise).
#![allow(clippy::disallowed_methods)] // tests build fixtures and jails with plain fs calls

use std::collections::BTreeSet;

use serde_json::Value;

#[macro_use]
mod cli;
use cli::{Run, Workspace, UNUSED_ROOT};

fn jailfile(port: u32) -> String {
    format!(
        "root = \"{UNUSED_ROOT}\"\nbinaries = [\"true\"]\n\n[[files]]\npath = \"/etc/app.conf\"\nmode = \"0644\"\n\
         content = \"name = app\\nport = {port}\\n\"\n"
    )
}

fn workspace(text: &str) -> Workspace {
    let workspace = Workspace::new("jailprov-apply-json-");
    workspace.write_jailfile(text);
    workspace
}

/// stdout must be exactly one JSON object (serde_json refuses trailing text).
fn one_object(run: &Run) -> Value {
    let value: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|error| panic!("stdout is not one JSON value ({error}): {}", run.describe()));
    assert!(value.is_object(), "stdout is not an object: {}", run.describe());
    value
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().map(|fields| fields.keys().cloned().collect()).unwrap_or_default()
}

fn apply_json(workspace: &Workspace) -> Value {
    let run = workspace.run("apply", &["--format", "json"]).ok("apply --format json");
    one_object(&run)
}

#[test]
fn a_fresh_apply_says_changed_and_lists_its_changes() {
    need_root!("a_fresh_apply_says_changed_and_lists_its_changes");
    let workspace = workspace(&jailfile(8080));
    let run = workspace.run("apply", &["--format", "json"]).ok("apply --format json");
    let report = one_object(&run);
    assert_eq!(report["changed"], true, "{report:#}");
    let changes = report["changes"].as_array().expect("changes is a list");
    let created: Vec<&str> = changes
        .iter()
        .filter(|change| change["action"] == "create")
        .filter_map(|change| change["path"].as_str())
        .collect();
    assert!(created.contains(&"/etc/app.conf") && created.contains(&"/usr/bin/true"), "{report:#}");
    assert_eq!(report["summary"]["create"].as_u64(), Some(changes.len() as u64), "{report:#}");
    for change in changes {
        assert_eq!(keys(change), ["action", "kind", "path", "what"].map(String::from).into(), "{change}");
    }
    assert_eq!(report["diff"], serde_json::json!([]), "creates have no before text");
    // The lock's note stays on stderr, and no per-change text line reaches stdout.
    assert!(run.stderr.contains("Wrote"), "{}", run.describe());
    assert!(!run.stdout.contains("Apply complete"), "{}", run.describe());
}

#[test]
fn applying_again_says_not_changed_with_empty_lists() {
    need_root!("applying_again_says_not_changed_with_empty_lists");
    let workspace = workspace(&jailfile(8080));
    apply_json(&workspace);
    let report = apply_json(&workspace);
    assert_eq!(report["changed"], false, "{report:#}");
    assert_eq!(report["changes"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["diff"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["summary"], serde_json::json!({"create": 0, "update": 0, "delete": 0, "replace": 0}));
}

#[test]
fn a_content_change_gives_the_text_before_and_after() {
    need_root!("a_content_change_gives_the_text_before_and_after");
    let workspace = workspace(&jailfile(8080));
    apply_json(&workspace);
    workspace.write_jailfile(&jailfile(9090));
    let report = apply_json(&workspace);
    assert_eq!(report["changed"], true, "{report:#}");
    assert_eq!(
        report["changes"],
        serde_json::json!([{"action": "update", "path": "/etc/app.conf", "kind": "file", "what": ["content"]}])
    );
    assert_eq!(
        report["diff"],
        serde_json::json!([{
            "path": "/etc/app.conf",
            "before": "name = app\nport = 8080\n",
            "after": "name = app\nport = 9090\n",
        }])
    );
    assert_eq!(std::fs::read_to_string(workspace.at("/etc/app.conf")).expect("read"), "name = app\nport = 9090\n");
}

#[test]
fn plan_and_apply_summaries_use_the_same_keys() {
    need_root!("plan_and_apply_summaries_use_the_same_keys");
    let workspace = workspace(&jailfile(8080));
    let plan = one_object(&workspace.run("plan", &["--format", "json"]).ok("plan --format json"));
    let apply = apply_json(&workspace);
    assert_eq!(keys(&plan["summary"]), keys(&apply["summary"]), "plan {plan:#}\napply {apply:#}");
    assert_eq!(plan["summary"], apply["summary"], "the apply did what the plan said");
    let planned: Vec<Value> = plan["changes"]
        .as_array()
        .expect("plan changes")
        .iter()
        .map(|change| serde_json::json!({"action": change["action"], "path": change["path"], "kind": change["kind"], "what": change["what"]}))
        .collect();
    assert_eq!(apply["changes"], Value::Array(planned), "apply lists the plan's changes as the plan has them");
}

/// A bad mode on line 6 of the Jailfile.
fn bad_jailfile() -> String {
    jailfile(8080).replace("mode = \"0644\"", "mode = \"99x\"")
}

#[test]
fn a_bad_jailfile_in_json_mode_is_a_json_error_with_its_place() {
    let workspace = workspace(&bad_jailfile());
    for (command, extra) in
        [("apply", &["--format", "json"][..]), ("plan", &["--format", "json"]), ("closure", &["--format", "json"])]
    {
        let mut run = cli::Workspace::command(&workspace, command, extra);
        if command == "closure" {
            // closure takes no --state-dir: run it with the Jailfile only.
            run = std::process::Command::new(cli::BIN);
            run.args([command, "-f"]).arg(&workspace.jailfile).args(extra);
        }
        let run = cli::output(run).code(1, command);
        assert_eq!(run.stdout, "", "{command}: nothing on stdout: {}", run.describe());
        let error: Value = serde_json::from_str(&run.stderr)
            .unwrap_or_else(|error| panic!("{command}: stderr is not one JSON object ({error}): {}", run.describe()));
        assert_eq!(error["file"], workspace.jailfile.display().to_string(), "{command}: {error:#}");
        assert_eq!(error["line"], 6, "{command}: {error:#}");
        assert_eq!(error["column"], 8, "{command}: {error:#}");
        assert_eq!(error["key"], "files[0].mode", "{command}: {error:#}");
        assert_eq!(error["value"], "99x", "{command}: {error:#}");
        assert!(error["error"].as_str().is_some_and(|message| message.contains("not an octal mode")), "{error:#}");
    }
    // Text mode keeps the compiler-style message.
    let run = workspace.run("plan", &[]).code(1, "plan");
    assert!(run.stderr.contains("--> ") && serde_json::from_str::<Value>(&run.stderr).is_err(), "{}", run.describe());
}

#[test]
fn other_errors_in_json_mode_are_json_too() {
    let workspace = Workspace::new("jailprov-apply-json-");
    let run = workspace.run("apply", &["--format", "json"]).code(1, "apply without a Jailfile");
    let error: Value = serde_json::from_str(&run.stderr).unwrap_or_else(|_| panic!("{}", run.describe()));
    assert!(error["error"].as_str().is_some_and(|message| message.contains("Jailfile.toml")), "{error:#}");
}

#[test]
fn interactive_and_json_are_refused_together() {
    let workspace = workspace(&jailfile(8080));
    let run = workspace.run("apply", &["--format", "json", "--interactive"]).code(2, "clap refuses the pair");
    assert!(run.stderr.contains("cannot be used with"), "{}", run.describe());
}

#[test]
fn apply_output_validates_against_the_committed_schema() {
    need_root!("apply_output_validates_against_the_committed_schema");
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string("schemas/apply.schema.json").expect("schemas/apply.schema.json"))
            .expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let workspace = workspace(&jailfile(8080));
    let mut reports = vec![apply_json(&workspace)];
    workspace.write_jailfile(&jailfile(9090));
    reports.push(apply_json(&workspace));
    reports.push(apply_json(&workspace));
    for report in &reports {
        let errors: Vec<String> =
            validator.iter_errors(report).map(|error| format!("{error} at {}", error.instance_path())).collect();
        assert!(errors.is_empty(), "{report:#} breaks the schema: {errors:#?}");
    }
    assert!(!validator.is_valid(&serde_json::json!({"changed": "yes"})), "the schema must reject a wrong type");
}

#[test]
fn a_saved_plan_with_a_content_change_applies_with_its_texts() {
    need_root!("a_saved_plan_with_a_content_change_applies_with_its_texts");
    let workspace = workspace(&jailfile(8080));
    apply_json(&workspace);
    workspace.write_jailfile(&jailfile(9090));
    let saved = workspace.dir.join("plan.json");
    workspace.run("plan", &["-o", saved.to_str().expect("utf-8 path")]).ok("plan -o");
    // The saved plan holds the diff, not the whole texts; apply still finds it current.
    let run = cli::output({
        let mut command = std::process::Command::new(cli::BIN);
        command.args(["apply", "--format", "json", "--state-dir"]).arg(&workspace.state).arg(&saved);
        command
    })
    .ok("apply FILE --format json");
    let report = one_object(&run);
    assert_eq!(report["diff"][0]["after"], "name = app\nport = 9090\n", "{report:#}");
}

/// The shipped playbook maps check mode to `plan --detailed-exitcode` and reads `changed` and
/// the diff from `apply --format json`. With ansible-playbook on the host its syntax check
/// runs; otherwise the YAML is parsed by python3's yaml when present, else only the lines are
/// checked (the test says which on stderr).
#[test]
fn the_ansible_example_maps_check_mode_to_plan_and_reads_the_apply_json() {
    let path = "examples/ansible/playbook.yml";
    let text = std::fs::read_to_string(path).expect("examples/ansible/playbook.yml");
    for needed in [
        "'plan', '-f', jailfile, '--detailed-exitcode'",
        "check_mode: false",
        "when: ansible_check_mode",
        "changed_when: jail_plan.rc == 2",
        "failed_when: jail_plan.rc not in [0, 2]",
        "'apply', '-f', jailfile, '--format', 'json'",
        "when: not ansible_check_mode",
        "changed_when: (jail_apply.stdout | from_json).changed",
        "loop: \"{{ (jail_apply.stdout | from_json).diff }}\"",
    ] {
        assert!(text.contains(needed), "{path} lacks {needed:?}");
    }
    let has = |program: &str| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if has("ansible-playbook") {
        let run = cli::output({
            let mut command = std::process::Command::new("ansible-playbook");
            command.args(["--syntax-check", "-i", "localhost,", path]);
            command
        });
        run.ok("ansible-playbook --syntax-check");
        return;
    }
    // Task names and their modules, as YAML sees them (not just as lines of text).
    let script = "import sys, yaml\nplay = yaml.safe_load(open(sys.argv[1]))[0]\n\
                  print('\\n'.join(sorted(k for t in play['tasks'] for k in t if k.startswith('ansible.builtin.'))))";
    let parsed = std::process::Command::new("python3").args(["-c", script, path]).output();
    match parsed {
        Ok(output) if output.status.success() => {
            let modules = String::from_utf8_lossy(&output.stdout);
            assert_eq!(
                modules.lines().collect::<BTreeSet<_>>(),
                ["ansible.builtin.command", "ansible.builtin.copy", "ansible.builtin.debug", "ansible.builtin.file"]
                    .into(),
                "{path}: modules as parsed"
            );
            eprintln!("NOTE: ansible-playbook absent: {path} parsed with python3 yaml, not syntax-checked");
        }
        _ => eprintln!("NOTE: ansible-playbook and python3 yaml absent: {path} checked line by line only"),
    }
}
