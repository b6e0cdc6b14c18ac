//! `jailprov trace` on real jails: what a command misses is found, suggested with its reason, and
//! the suggestion (`--write`, then `apply`) makes it run; what it must never suggest stays out.
//!
//! Each test applies its own jail in a fresh temporary directory and runs the real binary (the
//! namespaces and the tracer are never created inside this harness). Host files a jail should
//! get from a suggestion live under `CARGO_TARGET_TMPDIR`, not /tmp: paths under /tmp are never
//! suggested. Without root each test prints `SKIPPED <name>: needs root` and passes.
#![allow(clippy::disallowed_methods)] // tests build fixtures and jails with plain fs calls

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[macro_use]
mod cli;
use cli::{build_static, output, Run, Workspace, UNUSED_ROOT};

/// A program that dlopen()s its plugin by name, found through its RUNPATH (a private directory).
const PLUGIN_DEMO_C: &str = r#"
#include <dlfcn.h>
#include <stdio.h>
int main(void) {
    void *plugin = dlopen("libplugin.so", RTLD_NOW);
    if (!plugin) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 3; }
    const char *(*hello)(void) = (const char *(*)(void))dlsym(plugin, "plugin_hello");
    if (!hello) { fprintf(stderr, "dlsym: %s\n", dlerror()); return 4; }
    puts(hello());
    return 0;
}
"#;

const PLUGIN_C: &str = r#"const char *plugin_hello(void) { return "hello from the plugin"; }"#;

/// Looks for host files through every watched path: absolute, relative to the working directory
/// and to a directory fd, from a thread and from a forked child, and for the host's secrets.
const PROBE_C: &str = r#"
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
static void *from_a_thread(void *unused) {
    struct stat st;
    stat("/etc/host.conf", &st);
    return unused;
}
int main(void) {
    const char *secrets[] = {"/etc/shadow", "/etc/gshadow", "/root/.bashrc", "/root/.ssh/id_ed25519",
                             "/etc/ssh/ssh_host_ed25519_key", "/usr/../etc/shadow", "/etc/passwd"};
    for (unsigned i = 0; i < sizeof secrets / sizeof *secrets; i++) {
        if (open(secrets[i], O_RDONLY) >= 0) { printf("OPENED %s\n", secrets[i]); return 1; }
    }
    if (chdir("/") != 0) return 2;
    open("etc/hostname", O_RDONLY);
    int root = open("/", O_RDONLY | O_DIRECTORY);
    faccessat(root, "etc/debian_version", R_OK, 0);
    pthread_t thread;
    pthread_create(&thread, NULL, from_a_thread, NULL);
    pthread_join(thread, NULL);
    pid_t child = fork();
    if (child == 0) { access("/etc/hosts", R_OK); _exit(0); }
    waitpid(child, NULL, 0);
    puts("PROBED");
    return 7;
}
"#;

/// A jail holding only `binary` (with its closure), optionally a /proc.
fn jailfile(binary: &str, proc: bool) -> String {
    let proc =
        if proc { "\n[[dirs]]\npath = \"/proc\"\n\n[[mounts]]\nkind = \"proc\"\ntarget = \"/proc\"\n" } else { "" };
    format!("root = \"{UNUSED_ROOT}\"\nbinaries = [\"{binary}\"]\n{proc}")
}

/// A scratch directory for host files the suggestion may name: under the build's target/ unless
/// the checkout lies where trace never suggests anything (a clone under /tmp, /root or a home, as
/// CI's may be), else under /var/lib (these tests run as root).
fn host_scratch(prefix: &str) -> tempfile::TempDir {
    let home = std::env::var("HOME").ok();
    let base = [PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from("/var/lib")]
        .into_iter()
        .find(|base| jailprov::trace::host::refused(&base.to_string_lossy(), home.as_deref()).is_none())
        .expect("/var/lib is a place trace may suggest");
    tempfile::Builder::new().prefix(prefix).tempdir_in(base).expect("scratch dir")
}

/// Runs gcc; a fixture that does not build fails the test (gcc itself missing names its package).
fn gcc(args: &[&str]) {
    cli::prerequisites::require(&cli::prerequisites::GCC);
    let out = Command::new("gcc").args(args).output().expect("gcc runs");
    assert!(out.status.success(), "gcc {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn trace(work: &Workspace, extra: &[&str], command: &[&str]) -> Run {
    let mut run = work.command("trace", extra);
    run.arg("--").args(command);
    output(run)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).expect("read")
}

/// Builds the plugin demo in `dir`: `dir/bin/plugin-demo`, RUNPATH `dir/plugins`, where
/// `libplugin.so` is.
fn build_plugin_demo(dir: &Path) -> (PathBuf, PathBuf) {
    for sub in ["bin", "plugins", "src"] {
        fs::create_dir_all(dir.join(sub)).expect("mkdir");
    }
    fs::write(dir.join("src/demo.c"), PLUGIN_DEMO_C).expect("write");
    fs::write(dir.join("src/plugin.c"), PLUGIN_C).expect("write");
    let plugin = dir.join("plugins/libplugin.so");
    let program = dir.join("bin/plugin-demo");
    let runpath = format!("-Wl,-rpath,{},--enable-new-dtags", dir.join("plugins").display());
    gcc(&["-shared", "-fPIC", "-o", &plugin.to_string_lossy(), &dir.join("src/plugin.c").to_string_lossy()]);
    gcc(&["-o", &program.to_string_lossy(), &dir.join("src/demo.c").to_string_lossy(), &runpath]);
    (program, plugin)
}

#[test]
fn a_plugin_dlopened_by_name_is_found_and_the_suggestion_makes_the_program_run() {
    need_root!("a_plugin_dlopened_by_name_is_found_and_the_suggestion_makes_the_program_run");
    let scratch = host_scratch("trace-plugin");
    let (program, plugin) = build_plugin_demo(scratch.path());
    let work = Workspace::new("jp-trace-plugin");
    work.write_jailfile(&jailfile(&program.to_string_lossy(), false));
    work.apply();
    let before = work.enter(&[&program.to_string_lossy()]).code(3, "the plugin is not in the jail");
    assert!(before.stderr.contains("libplugin.so"), "{}", before.describe());
    let original = read(&work.jailfile);

    let traced = trace(&work, &[], &[&program.to_string_lossy()]).code(3, "trace exits with the command's code");
    // The loader looked at its search directory (the RUNPATH) when it searched libc at start,
    // found none there, and so never opened the plugin in it at dlopen: what the trace sees
    // missing is that directory, and its reason names the plugin it holds on the host.
    let plugins = plugin.parent().expect("the plugin's directory");
    let plugin_line = format!("+src = \"{}\"", plugins.display());
    assert!(traced.stdout.contains(&plugin_line), "{}", traced.describe());
    let reason = format!(
        "+# trace: newfstatat by {} (ENOENT), a directory: copied whole (1 entry: libplugin.so)",
        program.display()
    );
    assert!(traced.stdout.contains(&reason), "{}", traced.describe());
    assert_eq!(read(&work.jailfile), original, "without --write the Jailfile is not touched");
    // The plugin's entry as the user sees it (other entries, such as /etc/ld.so.cache, depend
    // on what the closure brings already: the full format is pinned by the unit snapshot).
    let redacted = traced.stdout.replace(&scratch.path().display().to_string(), "[SCRATCH]");
    let lines: Vec<&str> = redacted.lines().collect();
    let src = lines.iter().position(|line| *line == "+src = \"[SCRATCH]/plugins\"").expect("the entry");
    insta::assert_snapshot!(lines[src - 2..=src].join("\n"));

    trace(&work, &["--write"], &[&program.to_string_lossy()]).code(3, "trace --write");
    let written = read(&work.jailfile);
    assert!(written.starts_with(&original), "the user's text is kept byte for byte above the suggestion");
    assert!(written.contains(&plugin_line[1..]), "{written}");
    work.apply();
    let after = work.enter(&[&program.to_string_lossy()]).ok("the program runs with its plugin");
    assert_eq!(after.stdout, "hello from the plugin\n");
}

#[test]
fn python_importing_json_is_given_its_standard_library() {
    need_root!("python_importing_json_is_given_its_standard_library");
    cli::prerequisites::require(&cli::prerequisites::PYTHON3);
    let work = Workspace::new("jp-trace-python");
    work.write_jailfile(&jailfile("python3", true));
    work.apply();
    let script = "import json; print(json.dumps({'traced': True}))";
    let traced = trace(&work, &["--write"], &["python3", "-c", script]);
    assert_ne!(traced.code, 0, "python3 fails without its library: {}", traced.describe());
    let library = traced
        .stdout
        .lines()
        .find(|line| line.starts_with("+src = \"/usr/lib/python3.") && !line.contains("dist-packages"));
    assert!(library.is_some(), "the standard library is suggested: {}", traced.describe());
    work.apply();
    let after = work.enter(&["python3", "-c", script]).ok("python3 runs with the suggestion applied");
    assert_eq!(after.stdout, "{\"traced\": true}\n");
}

#[test]
fn a_jailed_program_cannot_use_the_trace_to_get_host_secrets_and_every_process_is_followed() {
    need_root!("a_jailed_program_cannot_use_the_trace_to_get_host_secrets_and_every_process_is_followed");
    let scratch = host_scratch("trace-probe");
    let probe = build_static(scratch.path(), "probe", PROBE_C);
    let work = Workspace::new("jp-trace-probe");
    work.write_jailfile(&jailfile(&probe.to_string_lossy(), true));
    work.apply();
    let traced = trace(&work, &[], &[&probe.to_string_lossy()]).code(7, "the probe's own exit code");
    assert!(traced.stdout.contains("PROBED"), "{}", traced.describe());
    for secret in ["shadow", "gshadow", "/root", "ssh_host", "/etc/passwd"] {
        assert!(!traced.stdout.contains(secret), "{secret} must never be suggested: {}", traced.describe());
    }
    assert!(
        traced.stderr.contains("not suggested: /etc/shadow (/etc/shadow is on the deny list)"),
        "{}",
        traced.describe()
    );
    for (path, how) in [
        ("/etc/hostname", "openat"),          // relative to the working directory
        ("/etc/debian_version", "faccessat"), // relative to a directory fd
        ("/etc/host.conf", "newfstatat"),     // from a thread
        ("/etc/hosts", "access"),             // from a forked child
    ] {
        if !Path::new(path).exists() {
            continue;
        }
        // `how` may be the start of the name: glibc calls faccessat2 for faccessat.
        let lines: Vec<&str> = traced.stdout.lines().collect();
        let at = lines.iter().position(|line| *line == format!("+src = \"{path}\""));
        let reason = at.and_then(|at| lines.get(at.wrapping_sub(2))).copied().unwrap_or_default();
        let expected = format!("+# trace: {how}");
        assert!(
            reason.starts_with(&expected) && reason.ends_with(&format!("by {} (ENOENT)", probe.display())),
            "{path} is suggested, from {how}:\n{}",
            traced.describe()
        );
    }
}

#[test]
fn a_suggestion_that_would_not_validate_is_not_written() {
    need_root!("a_suggestion_that_would_not_validate_is_not_written");
    let scratch = host_scratch("trace-invalid");
    let probe = build_static(scratch.path(), "probe", PROBE_C);
    let work = Workspace::new("jp-trace-invalid");
    // `files` as an inline array: appending [[files]] tables to it is no TOML.
    work.write_jailfile(&jailfile(&probe.to_string_lossy(), true).replacen("binaries", "files = []\nbinaries", 1));
    work.apply();
    let original = read(&work.jailfile);
    let traced = trace(&work, &["--write"], &[&probe.to_string_lossy()]).code(1, "a jailprov error");
    assert!(traced.stderr.contains("the suggestion does not validate"), "{}", traced.describe());
    assert_eq!(read(&work.jailfile), original, "the Jailfile is left as it was");
}

#[test]
fn a_jail_never_applied_is_refused_and_nothing_runs() {
    need_root!("a_jail_never_applied_is_refused_and_nothing_runs");
    let work = Workspace::new("jp-trace-unapplied");
    work.write_jailfile(&jailfile("true", false));
    let marker = work.dir.join("ran");
    let traced = trace(&work, &[], &["/bin/sh", "-c", &format!("touch {}", marker.display())]);
    let traced = traced.code(1, "not applied");
    assert!(traced.stderr.contains("run `jailprov apply` first"), "{}", traced.describe());
    assert!(!marker.exists(), "the command never runs on the host");
}

/// Looks for more distinct missing paths than the tracer reports, then says it is done.
const FLOOD_C: &str = r#"
#include <stdio.h>
#include <sys/stat.h>
int main(void) {
    char path[64];
    struct stat st;
    for (int i = 0; i < 10100; i++) {
        snprintf(path, sizeof path, "/jailprov-flood/%d", i);
        stat(path, &st);
    }
    puts("FLOODED");
    return 0;
}
"#;

#[test]
fn a_flood_of_missing_paths_is_cut_at_the_bound_and_said() {
    need_root!("a_flood_of_missing_paths_is_cut_at_the_bound_and_said");
    let scratch = host_scratch("trace-flood");
    let flood = build_static(scratch.path(), "flood", FLOOD_C);
    let work = Workspace::new("jp-trace-flood");
    work.write_jailfile(&jailfile(&flood.to_string_lossy(), false));
    work.apply();
    let traced = trace(&work, &[], &[&flood.to_string_lossy()]).ok("the command's exit code");
    assert!(traced.stdout.starts_with("FLOODED"), "{}", traced.describe());
    assert!(traced.stderr.contains("more than 10000 distinct paths"), "{}", traced.describe());
    // Never more than the bound reaches jailprov (a note or two besides, such as the C
    // library's readlink of /proc/self/exe).
    let counted = traced
        .stderr
        .lines()
        .find_map(|line| {
            line.strip_prefix("jailprov trace: ")?.split_once(" paths missing in the jail are missing on the host")
        })
        .and_then(|(count, _)| count.parse::<usize>().ok());
    assert!(counted.is_some_and(|count| (9990..=10000).contains(&count)), "{}", traced.describe());
}

/// Says it is ready, then waits for a signal.
const WAIT_C: &str = r#"
#include <stdio.h>
#include <unistd.h>
int main(void) { puts("ready"); fflush(stdout); for (;;) pause(); }
"#;

#[test]
fn sigterm_sent_to_jailprov_reaches_the_traced_command() {
    need_root!("sigterm_sent_to_jailprov_reaches_the_traced_command");
    use std::io::{BufRead, BufReader};
    let scratch = host_scratch("trace-wait");
    let wait = build_static(scratch.path(), "wait", WAIT_C);
    let work = Workspace::new("jp-trace-signal");
    work.write_jailfile(&jailfile(&wait.to_string_lossy(), false));
    work.apply();
    let mut command = work.command("trace", &[]);
    command.arg("--").arg(&wait).stdout(std::process::Stdio::piped());
    let mut child = command.spawn().expect("spawn jailprov trace");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read");
    assert_eq!(line, "ready\n");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .expect("kill");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(128 + 15), "the command ended by SIGTERM: {status:?}");
}

#[test]
fn without_proc_in_the_jail_relative_paths_are_counted_and_the_way_to_place_them_is_said() {
    need_root!("without_proc_in_the_jail_relative_paths_are_counted_and_the_way_to_place_them_is_said");
    let scratch = host_scratch("trace-noproc");
    let probe = build_static(scratch.path(), "probe", PROBE_C);
    let work = Workspace::new("jp-trace-noproc");
    work.write_jailfile(&jailfile(&probe.to_string_lossy(), false));
    work.apply();
    let traced = trace(&work, &[], &[&probe.to_string_lossy()]).code(7, "the probe's own exit code");
    assert!(!traced.stdout.contains("+src = \"/etc/hostname\""), "not placed, so not suggested: {}", traced.describe());
    assert!(
        traced.stderr.contains("relative paths could not be placed (etc/debian_version, etc/hostname")
            && traced.stderr.contains("kind = \"proc\""),
        "{}",
        traced.describe()
    );
    if Path::new("/etc/hosts").exists() {
        assert!(traced.stdout.contains("+src = \"/etc/hosts\""), "absolute paths still are: {}", traced.describe());
    }
}

#[test]
fn a_command_keeping_capabilities_is_refused_before_anything_runs() {
    need_root!("a_command_keeping_capabilities_is_refused_before_anything_runs");
    let work = Workspace::new("jp-trace-caps");
    work.write_jailfile(&format!("{}\n[enter]\ncapabilities = [\"CAP_NET_BIND_SERVICE\"]\n", jailfile("true", false)));
    work.apply();
    let traced = trace(&work, &[], &["true"]).code(1, "a jailprov error");
    assert!(
        traced.stderr.contains("cannot follow a command that keeps capabilities")
            && traced.stderr.contains("CAP_NET_BIND_SERVICE"),
        "{}",
        traced.describe()
    );
    work.enter(&["true"]).ok("enter itself is unchanged");
}
