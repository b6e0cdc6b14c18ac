//! Run-time needs on real jails: each jail lists only the program, applied for real, and the
//! program run in it with `chroot`. With its need on it works; the same jail with the need
//! switched off in `[runtime]` fails as it did before run-time needs were found (asserted, so
//! each test fails when the need stops being brought).
#![allow(clippy::disallowed_methods)] // tests build fixtures and jails with plain fs calls

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

#[macro_use]
mod cli;
use cli::{output, Run, Workspace, BIN, UNUSED_ROOT};

/// A jail holding `binaries` with `runtime` as its `[runtime]` table, applied.
fn applied_jail(binaries: &str, runtime: &str) -> Workspace {
    applied_jail_with(binaries, "", runtime)
}

/// Like [`applied_jail`], with more top-level keys (`extra`).
fn applied_jail_with(binaries: &str, extra: &str, runtime: &str) -> Workspace {
    let workspace = Workspace::new("jailprov-runtime-");
    workspace.write_jailfile(&format!(
        "root = \"{UNUSED_ROOT}\"\nbinaries = [{binaries}]\n{extra}\n\n[runtime]\n{runtime}\n"
    ));
    workspace.apply();
    workspace
}

/// Runs `args` chrooted in the jail with only `env`, feeding `input` on stdin.
fn run_in(jail: &Workspace, env: &[(&str, &str)], args: &[&str], input: &[u8]) -> (Run, Vec<u8>) {
    let mut command = Command::new("/usr/sbin/chroot");
    command.arg(&jail.root).args(args).env_clear().envs(env.iter().copied());
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|error| panic!("chroot {args:?}: {error}"));
    // A program that fails before reading closes its stdin: a broken pipe is its answer.
    let _ = child.stdin.take().expect("piped stdin").write_all(input);
    let output = child.wait_with_output().expect("wait for chroot");
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    (run, output.stdout)
}

#[test]
fn iconv_converts_utf8_to_latin1_with_the_gconv_modules_and_fails_without_them() {
    need_root!("iconv_converts_utf8_to_latin1_with_the_gconv_modules_and_fails_without_them");
    let args = ["/usr/bin/iconv", "-f", "UTF-8", "-t", "ISO-8859-1"];
    let jail = applied_jail("\"iconv\"", "charsets = [\"ISO-8859-1\"]");
    let (run, bytes) = run_in(&jail, &[], &args, "café\n".as_bytes());
    assert_eq!(bytes, b"caf\xe9\n", "é becomes one Latin-1 byte: {}", run.describe());
    let off = applied_jail("\"iconv\"", "iconv = false");
    let (run, _) = run_in(&off, &[], &args, "café\n".as_bytes());
    assert_ne!(run.code, 0, "without gconv modules iconv cannot convert: {}", run.describe());
    assert!(run.stderr.contains("conversion"), "{}", run.describe());
}

const CANCEL_C: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
static void *sleeper(void *arg) { (void)arg; for (;;) pause(); return NULL; }
int main(void) {
    pthread_t thread;
    if (pthread_create(&thread, NULL, sleeper, NULL) != 0) return 2;
    if (pthread_cancel(thread) != 0) return 3;
    void *result;
    if (pthread_join(thread, &result) != 0) return 4;
    puts(result == PTHREAD_CANCELED ? "cancelled" : "not cancelled");
    return 0;
}
"#;

/// Builds the pthread_cancel fixture (dynamically linked, as programs are) in `dir`.
fn build_cancel_fixture(dir: &Path) -> Option<std::path::PathBuf> {
    let source = dir.join("cancel.c");
    std::fs::write(&source, CANCEL_C).expect("write the C source");
    let binary = dir.join("cancel");
    let gcc = Command::new("gcc").args(["-O2", "-pthread", "-o"]).arg(&binary).arg(&source).output().ok()?;
    if !gcc.status.success() {
        eprintln!("gcc failed: {}", String::from_utf8_lossy(&gcc.stderr));
        return None;
    }
    Some(binary)
}

#[test]
fn a_program_calling_pthread_cancel_gets_libgcc_s_and_aborts_without_it() {
    need_root!("a_program_calling_pthread_cancel_gets_libgcc_s_and_aborts_without_it");
    let fixtures = tempfile::Builder::new().prefix("jailprov-cancel-").tempdir().expect("tempdir");
    let Some(binary) = build_cancel_fixture(fixtures.path()) else {
        eprintln!("SKIPPED a_program_calling_pthread_cancel_gets_libgcc_s_and_aborts_without_it: no gcc");
        return;
    };
    let program = binary.display().to_string();
    let jail = applied_jail(&format!("{program:?}"), "");
    let (run, _) = run_in(&jail, &[], &[&program], b"");
    assert_eq!((run.code, run.stdout.as_str()), (0, "cancelled\n"), "{}", run.describe());
    let off = applied_jail(&format!("{program:?}"), "unwind = false");
    let (run, _) = run_in(&off, &[], &[&program], b"");
    assert_ne!(run.code, 0, "{}", run.describe());
    assert!(run.stderr.contains("libgcc_s.so.1 must be installed"), "{}", run.describe());
}

#[test]
fn date_shows_paris_time_with_the_zone_brought_and_not_without() {
    need_root!("date_shows_paris_time_with_the_zone_brought_and_not_without");
    let args = ["/usr/bin/date", "+%Z"];
    let jail = applied_jail("\"date\"", "timezones = [\"Europe/Paris\"]");
    let (run, _) = run_in(&jail, &[("TZ", "Europe/Paris")], &args, b"");
    assert!(matches!(run.stdout.trim(), "CET" | "CEST"), "{}", run.describe());
    let off = applied_jail("\"date\"", "timezones = false");
    let (run, _) = run_in(&off, &[("TZ", "Europe/Paris")], &args, b"");
    assert!(!matches!(run.stdout.trim(), "CET" | "CEST"), "no zoneinfo, no CET: {}", run.describe());
}

#[test]
fn getent_finds_localhost_in_the_hosts_file_brought_and_nothing_without_it() {
    need_root!("getent_finds_localhost_in_the_hosts_file_brought_and_nothing_without_it");
    let args = ["/usr/bin/getent", "hosts", "localhost"];
    let jail = applied_jail("\"getent\"", "");
    let (run, _) = run_in(&jail, &[], &args, b"");
    assert_eq!(run.code, 0, "{}", run.describe());
    assert!(run.stdout.contains("localhost"), "{}", run.describe());
    let off = applied_jail("\"getent\"", "resolver = false");
    let (run, _) = run_in(&off, &[], &args, b"");
    assert_ne!(run.code, 0, "{}", run.describe());
    assert!(!run.stdout.contains("localhost"), "{}", run.describe());
}

#[test]
fn tput_reads_the_xterm_entry_brought_and_knows_no_terminal_without_terminfo() {
    need_root!("tput_reads_the_xterm_entry_brought_and_knows_no_terminal_without_terminfo");
    let args = ["/usr/bin/tput", "cols"];
    let jail = applied_jail("\"tput\"", "");
    let (run, _) = run_in(&jail, &[("TERM", "xterm")], &args, b"");
    assert_eq!(run.code, 0, "{}", run.describe());
    assert!(run.stdout.trim().parse::<u32>().is_ok(), "a column count: {}", run.describe());
    let off = applied_jail("\"tput\"", "terminfo = false");
    let (run, _) = run_in(&off, &[("TERM", "xterm")], &args, b"");
    assert_ne!(run.code, 0, "{}", run.describe());
    assert!(run.stderr.contains("unknown terminal"), "{}", run.describe());
}

#[test]
fn perl_starts_without_a_locale_warning_under_c_utf8_and_warns_without_the_locale() {
    need_root!("perl_starts_without_a_locale_warning_under_c_utf8_and_warns_without_the_locale");
    let args = ["/usr/bin/perl", "-e", "1"];
    let env = [("LANG", "C.UTF-8")];
    // perl opens /dev/null for `-e`.
    let devices = "devices = [\"/dev/null\"]";
    let jail = applied_jail_with("\"perl\"", devices, "");
    let (run, _) = run_in(&jail, &env, &args, b"");
    assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{}", run.describe());
    let off = applied_jail_with("\"perl\"", devices, "locales = false");
    let (run, _) = run_in(&off, &env, &args, b"");
    assert!(run.stderr.contains("Setting locale failed"), "{}", run.describe());
}

/// A workspace whose Jailfile lists `binaries` with `runtime` as its `[runtime]` table (not
/// applied: closure, why, lock and validate read only the host).
fn jailfile_only(binaries: &str, runtime: &str) -> Workspace {
    let workspace = Workspace::new("jailprov-runtime-");
    workspace.write_jailfile(&format!("root = \"{UNUSED_ROOT}\"\nbinaries = [{binaries}]\n\n[runtime]\n{runtime}\n"));
    workspace
}

/// `jailprov SUBCOMMAND -f Jailfile EXTRA...`: a command that reads only the host.
fn host_run(jail: &Workspace, subcommand: &str, extra: &[&str]) -> Run {
    let mut command = Command::new(BIN);
    command.arg(subcommand).arg("-f").arg(&jail.jailfile).args(extra).current_dir(&jail.dir).stdin(Stdio::null());
    output(command)
}

/// A file of the gconv directory of this host's libc (where iconv's libc looks).
fn gconv_file(name: &str) -> String {
    let libc = std::fs::canonicalize("/lib/x86_64-linux-gnu/libc.so.6").expect("an x86-64 glibc host");
    libc.parent().expect("libc has a directory").join("gconv").join(name).display().to_string()
}

/// The gconv module of ISO-8859-1 on this host.
fn latin1_module() -> String {
    gconv_file("ISO8859-1.so")
}

/// The gconv configuration files of this host (the modules hang on them).
fn gconv_configs() -> Vec<String> {
    let mut configs = vec![gconv_file("gconv-modules"), gconv_file("gconv-modules.cache")];
    let confd = gconv_file("gconv-modules.d");
    for entry in std::fs::read_dir(&confd).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().ends_with(".conf") {
            configs.push(entry.path().display().to_string());
        }
    }
    configs.retain(|config| Path::new(config).is_file());
    configs.sort();
    configs
}

#[test]
fn closure_lists_each_run_time_file_with_the_import_that_needs_it() {
    let jail = jailfile_only("\"iconv\"", "charsets = [\"latin1\"]\nlocales = false");
    let text = host_run(&jail, "closure", &[]).ok("closure").stdout;
    let module = latin1_module();
    let line = text
        .lines()
        .find(|line| line.split_whitespace().nth(1) == Some(module.as_str()))
        .unwrap_or_else(|| panic!("{module} listed:\n{text}"));
    assert!(line.starts_with("run-time "), "its own kind: {line}");
    let config = gconv_file("gconv-modules");
    assert!(line.contains(&config), "a module is there because the configuration names it: {line}");
    let config_line = text
        .lines()
        .find(|line| line.split_whitespace().nth(1) == Some(config.as_str()))
        .unwrap_or_else(|| panic!("{config} listed:\n{text}"));
    assert!(config_line.ends_with("  run-time: iconv_open in /usr/bin/iconv"), "its reason: {config_line}");
    assert!(!text.contains("/usr/lib/locale/"), "locales = false brings none:\n{text}");
    assert!(!text.contains("gconv/IBM"), "charsets narrows the modules:\n{text}");

    let json: serde_json::Value =
        serde_json::from_str(&host_run(&jail, "closure", &["--format", "json"]).ok("closure json").stdout)
            .expect("JSON");
    let entry = json["entries"]
        .as_array()
        .and_then(|entries| entries.iter().find(|entry| entry["path"] == module.as_str()))
        .unwrap_or_else(|| panic!("{module} in the JSON"));
    assert_eq!(entry["kind"], "run-time");
    assert_eq!(entry["needed_by"], serde_json::json!(gconv_configs()));
    let config = json["entries"]
        .as_array()
        .and_then(|entries| entries.iter().find(|entry| entry["path"] == gconv_file("gconv-modules").as_str()))
        .unwrap_or_else(|| panic!("gconv-modules in the JSON"));
    assert_eq!(config["needed_by"], serde_json::json!(["run-time: iconv_open in /usr/bin/iconv"]));
}

#[test]
fn why_names_the_import_and_the_lock_pins_the_run_time_entry() {
    let jail = jailfile_only("\"iconv\"", "charsets = [\"ISO-8859-1\"]");
    let module = latin1_module();
    let why = host_run(&jail, "why", &[&module]).ok("why").stdout;
    // The shortest chain; other chains are only counted after it, past an empty line.
    let lines: Vec<&str> = why.lines().take_while(|line| !line.is_empty()).collect();
    assert_eq!(lines.len(), 4, "module, its configuration, iconv, the Jailfile:\n{why}");
    assert_eq!(lines[0], format!("{module} (run-time)"));
    assert!(lines[1].starts_with("  needed by ") && lines[1].contains("/gconv/gconv-modules"), "{why}");
    assert_eq!(lines[2], "    needed at run time (iconv_open) by /usr/bin/iconv (binary)", "{why}");
    assert!(lines[3].contains("binaries[0] = \"iconv\""), "{why}");

    host_run(&jail, "lock", &[]).ok("lock");
    let lock = std::fs::read_to_string(jail.dir.join("Jailfile.lock")).expect("the lock is written");
    let config = gconv_file("gconv-modules");
    let line = lock.lines().find(|line| line.contains(&format!("\"path\":\"{config}\""))).unwrap_or_else(|| {
        panic!("{config} pinned in the lock:\n{lock}");
    });
    assert!(line.contains("\"kind\":\"run-time\""), "{line}");
    assert!(line.contains("\"needed_by\":[\"run-time: iconv_open in /usr/bin/iconv\"]"), "{line}");
    assert!(line.contains("\"hash\":\"blake3:"), "its content is pinned: {line}");
}

#[test]
fn runtime_false_brings_the_elf_closure_alone() {
    let jail = jailfile_only("\"iconv\", \"date\", \"tput\", \"getent\"", "enabled = false");
    let text = host_run(&jail, "closure", &[]).ok("closure").stdout;
    assert!(!text.lines().any(|line| line.starts_with("run-time ")), "{text}");
    assert!(!text.contains("/etc/hosts"), "{text}");
}

#[test]
fn a_locale_zone_or_terminal_the_host_lacks_is_refused_naming_key_and_value() {
    let jail = jailfile_only(
        "\"date\"",
        "locales = [\"xx_YY.UTF-8\"]\ntimezones = [\"Europe/Pariss\"]\nterminals = [\"no-such-terminal\"]",
    );
    let run = host_run(&jail, "validate", &[]);
    assert_ne!(run.code, 0, "{}", run.describe());
    for expected in [
        "runtime.locales[0]",
        "xx_YY.UTF-8",
        "the host has: C.utf8",
        "runtime.timezones[0]",
        "did you mean \"Europe/Paris\"?",
        "runtime.terminals[0]",
        "no-such-terminal",
    ] {
        assert!(run.stderr.contains(expected), "{expected:?} in:\n{}", run.describe());
    }
}

#[test]
fn an_unknown_charset_is_refused_with_the_closest_one() {
    let jail = jailfile_only("\"iconv\"", "charsets = [\"ISO-8859-1X\"]");
    let run = host_run(&jail, "closure", &[]);
    assert_ne!(run.code, 0, "{}", run.describe());
    assert!(run.stderr.contains("runtime.charsets[0] = \"ISO-8859-1X\""), "{}", run.describe());
    assert!(run.stderr.contains("did you mean"), "{}", run.describe());
}

#[test]
fn a_syslog_user_gets_a_note_with_the_mount_to_add_and_no_copy() {
    let jail = jailfile_only("\"chsh\"", "");
    let text = host_run(&jail, "closure", &[]).ok("closure").stdout;
    let note = text.lines().position(|line| line.starts_with("note: /usr/bin/chsh (openlog)")).unwrap_or_else(|| {
        panic!("a note for chsh:\n{text}");
    });
    let lines: Vec<&str> = text.lines().skip(note + 1).take(4).collect();
    assert_eq!(lines, ["  [[mounts]]", "  kind = \"bind\"", "  source = \"/dev/log\"", "  target = \"/dev/log\""]);
    assert!(!text.contains(" /dev/log "), "nothing copied for it:\n{text}");
    // Any mount at /dev/log answers it (this host may have no logger: the source is a stand-in).
    jail.write_jailfile(&format!(
        "root = \"{UNUSED_ROOT}\"\nbinaries = [\"chsh\"]\n[[mounts]]\nkind = \"bind\"\nsource = \"{}\"\ntarget = \"/dev/log\"\n",
        jail.dir.display()
    ));
    let text = host_run(&jail, "closure", &[]).ok("closure with the mount").stdout;
    assert!(!text.contains("note:"), "the mount answers the note:\n{text}");
}

#[test]
fn resolv_conf_comes_only_with_the_host_s_network() {
    if !Path::new("/etc/resolv.conf").exists() {
        eprintln!("SKIPPED resolv_conf_comes_only_with_the_host_s_network: the host has no /etc/resolv.conf");
        return;
    }
    let listed = |text: &str| text.lines().any(|line| line.split_whitespace().nth(1) == Some("/etc/resolv.conf"));
    let isolated = jailfile_only("\"getent\"", "");
    let text = host_run(&isolated, "closure", &[]).ok("closure").stdout;
    assert!(!listed(&text), "a jail with only loopback has no use for the host's resolvers:\n{text}");
    assert!(text.contains("/etc/hosts"), "{text}");
    let networked = Workspace::new("jailprov-runtime-");
    networked.write_jailfile(&format!(
        "root = \"{UNUSED_ROOT}\"\nbinaries = [\"getent\"]\n[enter]\nnetwork = \"host\"\nnamespaces = [\"mount\", \"pid\"]\n"
    ));
    let text = host_run(&networked, "closure", &[]).ok("closure").stdout;
    assert!(listed(&text), "{text}");
}

#[test]
fn excluding_the_gconv_configuration_takes_the_modules_it_names_with_it() {
    let jail = Workspace::new("jailprov-runtime-");
    let dir = gconv_file("");
    jail.write_jailfile(&format!(
        "root = \"{UNUSED_ROOT}\"\nbinaries = [\"iconv\"]\nexclude = [\"{dir}gconv-modules*\", \"{dir}gconv-modules.d/**\"]\n"
    ));
    let text = host_run(&jail, "closure", &[]).ok("closure").stdout;
    assert!(!text.contains(&latin1_module()), "no configuration names it any more:\n{text}");
    assert!(text.contains("/usr/lib/locale/C.utf8/LC_CTYPE"), "the other needs stay:\n{text}");
}
