//! `jailprov validate` on bad Jailfiles: exit 1, and a message naming file, line, key and value.
#![allow(clippy::disallowed_methods)] // tests build fixtures and jails with plain fs calls

use std::path::Path;
use std::process::Command;

/// Runs `jailprov validate -f Jailfile.toml` in a fresh directory holding `jailfile`.
fn validate(jailfile: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("Jailfile.toml"), jailfile).expect("write Jailfile");
    run_in(dir.path(), &["validate", "-f", "Jailfile.toml"])
}

fn run_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let output =
        Command::new(env!("CARGO_BIN_EXE_jailprov")).args(args).current_dir(dir).output().expect("jailprov runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Asserts exit 1 and returns stderr for a snapshot.
fn rejected(jailfile: &str) -> String {
    let (code, stdout, stderr) = validate(jailfile);
    assert_eq!(code, 1, "a bad Jailfile must exit 1; stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("Jailfile.toml:"), "the message names the file with line:column: {stderr}");
    stderr
}

#[test]
fn valid_jailfile_passes() {
    let (code, stdout, stderr) = validate("root = \"/srv/jails/t\"\nbinaries = [\"sh\"]\n");
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.contains("is valid"), "{stdout}");
}

#[test]
fn unknown_key_suggests_the_close_one() {
    insta::assert_snapshot!(rejected("root = \"/srv/jails/t\"\nbinarys = [\"sh\"]\n"));
}

#[test]
fn unknown_key_in_a_nested_table_names_its_key_path() {
    insta::assert_snapshot!(rejected(
        "root = \"/srv/jails/t\"\n[[mounts]]\nkind = \"tmpfs\"\ntarget = \"/tmp\"\nsise = \"64M\"\n"
    ));
}

#[test]
fn runtime_names_the_host_lacks_and_a_switch_of_the_wrong_type_are_refused() {
    insta::assert_snapshot!(rejected(
        "root = \"/srv/jails/t\"\n[runtime]\ntimezones = [\"UTC\", \"../../../etc/passwd\"]\nterminals = [\"zz-no-such-terminal\"]\n"
    ));
    insta::assert_snapshot!(rejected("root = \"/srv/jails/t\"\n[runtime]\nlocales = \"C.UTF-8\"\n"));
}

#[test]
fn root_slash_is_refused() {
    insta::assert_snapshot!(rejected("root = \"/\"\n"));
}

#[test]
fn relative_and_escaping_jail_paths_are_refused() {
    insta::assert_snapshot!(rejected(
        "root = \"/srv/jails/t\"\n[[dirs]]\npath = \"tmp\"\n[[files]]\npath = \"/etc/../../host/x\"\ncontent = \"x\"\n"
    ));
}

#[test]
fn non_octal_mode_is_refused() {
    insta::assert_snapshot!(rejected("root = \"/srv/jails/t\"\n[[dirs]]\npath = \"/tmp\"\nmode = \"1797\"\n"));
}

#[test]
fn duplicate_user_name_and_uid_are_refused() {
    insta::assert_snapshot!(rejected(
        "root = \"/srv/jails/t\"\n[[users]]\nname = \"app\"\nuid = 1000\ngid = 1000\n[[users]]\nname = \"app\"\nuid = 1000\ngid = 1000\n"
    ));
}

#[test]
fn mount_without_target_is_refused() {
    insta::assert_snapshot!(rejected("root = \"/srv/jails/t\"\n[[mounts]]\nkind = \"tmpfs\"\nsize = \"64M\"\n"));
}

#[test]
fn undeclared_enter_user_is_refused() {
    insta::assert_snapshot!(rejected(
        "root = \"/srv/jails/t\"\n[[users]]\nname = \"alice\"\nuid = 1000\ngid = 1000\n[enter]\nuser = \"alic\"\n"
    ));
}

#[test]
fn glob_that_does_not_compile_is_refused() {
    insta::assert_snapshot!(rejected("root = \"/srv/jails/t\"\nexclude = [\"/usr/share/{doc\"]\n"));
}

#[test]
fn binary_and_src_matching_nothing_are_refused() {
    insta::assert_snapshot!(rejected(
        "root = \"/srv/jails/t\"\nbinaries = [\"no-such-binary-jailprov\"]\n[[files]]\nsrc = \"/usr/share/no-such-dir/**\"\n"
    ));
}

#[test]
fn unsafe_device_needs_explicit_permission() {
    insta::assert_snapshot!(rejected("root = \"/srv/jails/t\"\ndevices = [\"/dev/mem\"]\n"));
}

#[test]
fn syntax_error_points_at_the_line() {
    insta::assert_snapshot!(rejected("root = \"/srv/jails/t\"\nbinaries = [\"sh\"\n"));
}

#[test]
fn all_problems_are_reported_at_once() {
    let stderr = rejected("root = \"relative\"\n[[dirs]]\npath = \"/x\"\nmode = \"abc\"\n");
    assert!(stderr.contains("2 problems"), "{stderr}");
}

#[test]
fn missing_jailfile_names_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, stderr) = run_in(dir.path(), &["validate", "-f", "nope/Jailfile.toml"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot read Jailfile nope/Jailfile.toml"), "{stderr}");
}

#[test]
fn kernel_log_and_fuse_devices_need_explicit_permission() {
    let kmsg = rejected("root = \"/srv/jails/t\"\ndevices = [\"/dev/kmsg\"]\n");
    assert!(kmsg.contains("the kernel log") && kmsg.contains("character device 1:11"), "{kmsg}");
    assert!(kmsg.contains("allow_unsafe_device = true"), "says how to allow it: {kmsg}");
    if Path::new("/dev/fuse").exists() {
        let fuse = rejected("root = \"/srv/jails/t\"\ndevices = [\"/dev/fuse\"]\n");
        assert!(fuse.contains("FUSE"), "{fuse}");
    } else {
        eprintln!("SKIPPED the /dev/fuse half: this host has no /dev/fuse");
    }
    let (code, _, stderr) = validate("root = \"/srv/jails/t\"\ndevices = [\"/dev/null\", \"/dev/tty\"]\n");
    assert_eq!(code, 0, "/dev/null and /dev/tty are harmless: {stderr}");
    let (code, _, stderr) =
        validate("root = \"/srv/jails/t\"\ndevices = [{ path = \"/dev/kmsg\", allow_unsafe_device = true }]\n");
    assert_eq!(code, 0, "allowed explicitly: {stderr}");
}

/// A Jailfile shared by many hosts names no `root` (each host passes its own, or the jail is only
/// ever exported): the commands that read only the host must not ask for one.
#[test]
fn host_only_commands_need_no_jail_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("Jailfile.toml"), "binaries = [\"sh\"]\n").expect("write Jailfile");
    let state_dir = dir.path().join("state");
    let state_dir = state_dir.to_str().expect("a UTF-8 temp path");
    let sh = std::fs::canonicalize("/bin/sh").expect("the host has /bin/sh");
    let sh = sh.to_str().expect("a UTF-8 path");
    let commands: [&[&str]; 4] = [
        &["validate", "-f", "Jailfile.toml"],
        &["closure", "-f", "Jailfile.toml"],
        &["why", sh, "-f", "Jailfile.toml"],
        &["lock", "-f", "Jailfile.toml", "--state-dir", state_dir],
    ];
    for args in commands {
        let (code, stdout, stderr) = run_in(dir.path(), args);
        assert_eq!(code, 0, "`jailprov {}` without a root failed: stdout: {stdout}\nstderr: {stderr}", args.join(" "));
        assert!(!stderr.contains("no jail root"), "`jailprov {}` asked for a root: {stderr}", args.join(" "));
    }
    assert!(dir.path().join("Jailfile.lock").exists(), "lock wrote the lock beside the Jailfile");
}

/// Only the commands that touch a jail ask for its root, naming the Jailfile and both ways to give one.
#[test]
fn jail_commands_without_a_root_say_how_to_give_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("Jailfile.toml"), "binaries = [\"sh\"]\n").expect("write Jailfile");
    let state_dir = dir.path().join("state");
    let state_dir = state_dir.to_str().expect("a UTF-8 temp path");
    let commands: [&[&str]; 5] = [
        &["plan", "-f", "Jailfile.toml", "--state-dir", state_dir],
        &["apply", "-f", "Jailfile.toml", "--state-dir", state_dir],
        &["destroy", "-f", "Jailfile.toml", "--state-dir", state_dir],
        &["enter", "-f", "Jailfile.toml", "--state-dir", state_dir, "--", "true"],
        &["check", "-f", "Jailfile.toml"],
    ];
    for args in commands {
        let (code, _, stderr) = run_in(dir.path(), args);
        assert_eq!(code, 1, "`jailprov {}` without a root must fail: {stderr}", args.join(" "));
        assert!(
            stderr.contains("Jailfile.toml: no jail root") && stderr.contains("--root DIR"),
            "`jailprov {}` names the Jailfile and how to give a root: {stderr}",
            args.join(" ")
        );
    }
    assert!(!std::path::Path::new(state_dir).exists(), "nothing was recorded for a jail that has no root");
}

/// Issue #21: four typos took four runs, out of file order. Now one run names all four, in the
/// order of the file, each with its "did you mean".
#[test]
fn four_typos_are_reported_at_once_in_file_order() {
    let stderr = rejected(
        "root = \"/srv/jails/t\"\nbinaries = [\"sh\"]\ndevics = [\"/dev/null\"]\n[[users]]\nname = \"app\"\nuid = 1000\ngid = 1000\nhom = \"/home/app\"\n[enter]\ncomand = [\"/bin/sh\"]\n[[file]]\nsrc = \"/etc/hostname\"\n",
    );
    let places: Vec<&str> = stderr.lines().filter_map(|line| line.trim().strip_prefix("--> ")).collect();
    assert_eq!(
        places,
        ["Jailfile.toml:3:1", "Jailfile.toml:8:1", "Jailfile.toml:10:1", "Jailfile.toml:11:3"],
        "{stderr}"
    );
    for (typed, meant) in [("devics", "devices"), ("hom", "home"), ("comand", "command"), ("file", "files")] {
        assert!(stderr.contains(&format!("unknown key `{typed}`")), "{typed} is named: {stderr}");
        assert!(stderr.contains(&format!("did you mean `{meant}`?")), "{meant} is suggested: {stderr}");
    }
    insta::assert_snapshot!(stderr);
}

/// Type errors say what to write, with an example, and nothing of serde's vocabulary.
#[test]
fn wrong_types_are_explained_with_an_example() {
    let stderr = rejected(
        "root = \"/srv/jails/t\"\nbinaries = \"bash\"\n[[users]]\nname = \"app\"\nuid = \"1000\"\ngid = 1000\n[[dirs]]\npath = \"/tmp\"\nmode = 1777\n[[mounts]]\nkind = \"tmpfsx\"\ntarget = \"/tmp\"\n[enter]\nlimits = 5\n[[groups]]\nname = \"g\"\n",
    );
    for serde_words in ["invalid type", "expected u32", "expected a", "\\\""] {
        assert!(!stderr.contains(serde_words), "serde's `{serde_words}` is left: {stderr}");
    }
    assert!(stderr.contains("`binaries` is a list of names or paths, e.g. `binaries = [\"bash\"]`"), "{stderr}");
    assert!(stderr.contains("write modes as strings: `mode = \"1777\"`"), "{stderr}");
    assert!(stderr.contains("write uids as numbers: `uid = 1000`"), "{stderr}");
    insta::assert_snapshot!(stderr);
}
