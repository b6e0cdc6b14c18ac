//! The apt hook: `jailprov hook install` writes an apt configuration whose `DPkg::Post-Invoke`
//! runs `jailprov hook run` after every dpkg run; it names the jails now behind the host and
//! applies those whose Jailfile opts in, and never fails apt.
//!
//! The end-to-end test changes the host's dpkg state (it installs and purges a package it builds,
//! `libdemo`) and /etc/apt/apt.conf.d: every test here takes one lock, so they run one after
//! another, and a guard undoes both even when the test fails. Root only.
#![allow(clippy::disallowed_methods)] // tests build fixtures with plain fs calls

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};

#[macro_use]
mod cli;
use cli::{output, Run, Workspace, BIN};

/// Held by every test: they share the host's dpkg database and apt configuration.
static HOST_PACKAGES: Mutex<()> = Mutex::new(());

fn serialised() -> MutexGuard<'static, ()> {
    HOST_PACKAGES.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn jailprov(args: &[&str], state: &Path) -> Run {
    let mut command = Command::new(BIN);
    command.args(args).arg("--state-dir").arg(state).stdin(Stdio::null());
    output(command)
}

fn run(program: &str, args: &[&str]) -> Run {
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null());
    let run = output(command);
    assert_eq!(run.code, 0, "{program} {args:?}: {}", run.describe());
    run
}

/// Jails sharing one state directory, each `NAME.toml` in the workspace with its root
/// `jails/NAME`, copying what `body` names.
struct Jails {
    ws: Workspace,
}

impl Jails {
    fn new(prefix: &str) -> Jails {
        Jails { ws: Workspace::new(prefix) }
    }
    fn jailfile(&self, name: &str) -> PathBuf {
        self.ws.dir.join(format!("{name}.toml"))
    }
    fn root(&self, name: &str) -> PathBuf {
        self.ws.dir.join("jails").join(name)
    }
    fn write(&self, name: &str, body: &str) {
        let text = format!("root = \"{}\"\n{body}", self.root(name).display());
        fs::write(self.jailfile(name), text).expect("write the Jailfile");
    }
    fn apply(&self, name: &str) -> Run {
        let jailfile = self.jailfile(name).display().to_string();
        jailprov(&["apply", "-f", &jailfile], &self.ws.state).ok("apply")
    }
    fn hook_run(&self) -> Run {
        jailprov(&["hook", "run"], &self.ws.state).ok("hook run never fails")
    }
    fn status(&self) -> Run {
        jailprov(&["status", "--detailed-exitcode"], &self.ws.state)
    }
    fn enter(&self, name: &str, args: &[&str]) -> Run {
        let jailfile = self.jailfile(name).display().to_string();
        let mut command = Command::new(BIN);
        command.args(["enter", "-f", &jailfile, "--state-dir"]).arg(&self.ws.state).arg("--").args(args);
        command.stdin(Stdio::null()).current_dir(&self.ws.dir);
        output(command)
    }
}

/// A jail copying `true` and `host/NAME.txt` to /data.txt, applied; with `apply`, it opts in.
fn data_jail(jails: &Jails, name: &str, apply: bool) {
    let source = jails.ws.dir.join(format!("{name}.txt"));
    fs::write(&source, "version 1\n").expect("source");
    let update = if apply { "[update]\non_host_change = \"apply\"\n" } else { "" };
    jails.write(
        name,
        &format!("binaries = [\"true\"]\n[[files]]\nsrc = \"{}\"\ndest = \"/data.txt\"\n{update}", source.display()),
    );
    jails.apply(name);
}

/// Among several jails behind the host, one whose Jailfile no longer validates is skipped with
/// the reason; the one that opts in is applied, the one that reports is left; exit status 0.
#[test]
fn a_broken_jailfile_among_several_is_skipped_and_the_others_followed() {
    need_root!("a_broken_jailfile_among_several_is_skipped_and_the_others_followed");
    let _serial = serialised();
    let jails = Jails::new("jailprov-hook-broken-");
    for (name, apply) in [("follows", true), ("reports", false), ("broken", true)] {
        data_jail(&jails, name, apply);
        fs::write(jails.ws.dir.join(format!("{name}.txt")), "version 2\n").expect("update");
    }
    fs::write(jails.jailfile("broken"), "root = 42\n").expect("break the Jailfile");
    let hook = jails.hook_run();
    let line = |name: &str, what: &str| {
        format!("jailprov hook: {}: behind (1 files of no package); {what}", jails.root(name).display())
    };
    assert!(hook.stderr.contains(&line("follows", "applied again")), "{}", hook.describe());
    assert!(hook.stderr.contains(&line("reports", "left as it is")), "{}", hook.describe());
    assert!(
        hook.stderr.contains(&line(
            "broken",
            &format!("skipped: the Jailfile {} does not validate", jails.jailfile("broken").display())
        )),
        "{}",
        hook.describe()
    );
    assert_eq!(fs::read_to_string(jails.root("follows").join("data.txt")).expect("read"), "version 2\n");
    assert_eq!(fs::read_to_string(jails.root("reports").join("data.txt")).expect("read"), "version 1\n");
    assert_eq!(fs::read_to_string(jails.root("broken").join("data.txt")).expect("read"), "version 1\n");
}

/// An apply holding a jail's lock while the hook runs: the hook does not wait for it or apply
/// over it, says so, and exits 0.
#[test]
fn a_jail_being_applied_is_skipped_by_the_hook() {
    need_root!("a_jail_being_applied_is_skipped_by_the_hook");
    let _serial = serialised();
    let jails = Jails::new("jailprov-hook-busy-");
    data_jail(&jails, "busy", true);
    fs::write(jails.ws.dir.join("busy.txt"), "version 2\n").expect("update");
    let store = jailprov::state::StateStore::for_root(&jails.ws.state, &jails.root("busy"));
    let held = store.lock(std::time::Duration::from_secs(5)).expect("the apply's lock");
    let hook = jails.hook_run();
    assert!(hook.stderr.contains("skipped: another jailprov holds its lock"), "{}", hook.describe());
    assert_eq!(fs::read_to_string(jails.root("busy").join("data.txt")).expect("read"), "version 1\n");
    drop(held);
    let hook = jails.hook_run();
    assert!(hook.stderr.contains("applied again"), "{}", hook.describe());
    jails.status().code(0, "current once the lock was free");
}

/// `hook install` writes an apt configuration apt reads; `--systemd` a service and timer that
/// `systemd-analyze verify` accepts; `hook remove` takes each away.
#[test]
fn hook_files_are_what_apt_and_systemd_accept() {
    let _serial = serialised();
    let dir = tempfile::tempdir().expect("tempdir");
    let place = dir.path().display().to_string();
    let state = dir.path().join("state");
    jailprov(&["hook", "install", "--dir", &place], &state).ok("install");
    let conf = dir.path().join("80-jailprov");
    let dump = run("apt-config", &["-c", &conf.display().to_string(), "dump", "DPkg::Post-Invoke"]);
    assert!(
        dump.stdout.contains(&format!("{BIN} hook run --state-dir {} || true", state.display())),
        "{}",
        dump.describe()
    );
    jailprov(&["hook", "install", "--systemd", "--dir", &place], &state).ok("install --systemd");
    let service = dir.path().join("jailprov-hook.service").display().to_string();
    let timer = dir.path().join("jailprov-hook.timer").display().to_string();
    let mut verify = Command::new("systemd-analyze");
    verify.args(["verify", &service, &timer]).stdin(Stdio::null());
    let verified = output(verify);
    assert_eq!(verified.code, 0, "systemd-analyze verify: {}", verified.describe());
    assert!(verified.stderr.is_empty(), "no warnings: {}", verified.describe());
    let mut remove = Command::new(BIN);
    remove.args(["hook", "remove", "--dir", &place]);
    assert!(output(remove).ok("remove").stdout.contains("Removed"));
    let mut remove = Command::new(BIN);
    remove.args(["hook", "remove", "--systemd", "--dir", &place]);
    output(remove).ok("remove --systemd");
    assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 0, "everything it wrote is gone");
}

/// Undoes what the end-to-end test did to the host: the apt hook and the package.
struct HostGuard;

impl Drop for HostGuard {
    fn drop(&mut self) {
        let _ = fs::remove_file("/etc/apt/apt.conf.d/80-jailprov");
        let _ = Command::new("dpkg").args(["--purge", "libdemo"]).stdout(Stdio::null()).status();
    }
}

/// `libdemo_VERSION_amd64.deb` shipping a libdemo.so.1 whose `demo_version()` returns VERSION.
fn build_deb(dir: &Path, version: &str, multiarch: &str) -> PathBuf {
    let tree = dir.join(format!("libdemo-{version}"));
    let lib_dir = tree.join("usr/lib").join(multiarch);
    fs::create_dir_all(&lib_dir).expect("mkdir");
    fs::create_dir_all(tree.join("DEBIAN")).expect("mkdir");
    let source = dir.join(format!("demo-{version}.c"));
    fs::write(&source, format!("const char *demo_version(void) {{ return \"{version}\"; }}\n")).expect("source");
    let lib = lib_dir.join("libdemo.so.1").display().to_string();
    run("gcc", &["-shared", "-fPIC", "-Wl,-soname,libdemo.so.1", "-o", &lib, &source.display().to_string()]);
    let arch = run("dpkg", &["--print-architecture"]).stdout.trim().to_owned();
    fs::write(
        tree.join("DEBIAN/control"),
        format!(
            "Package: libdemo\nVersion: {version}\nArchitecture: {arch}\nMaintainer: jailprov tests <tests@jailprov.invalid>\n\
             Section: libs\nPriority: optional\nDescription: library of the jailprov hook test\n"
        ),
    )
    .expect("control");
    let deb = dir.join(format!("libdemo_{version}_{arch}.deb"));
    run("dpkg-deb", &["--root-owner-group", "--build", &tree.display().to_string(), &deb.display().to_string()]);
    deb
}

fn apt_get_install(deb: &Path) -> Run {
    run("apt-get", &["install", "-y", "-o", "DPkg::Lock::Timeout=300", &format!("{}", deb.display())])
}

/// The proof of issue #19 with real dpkg and apt: version 2 of a library two jails copy is
/// installed with apt-get; the hook apt runs names the reporting jail behind (package, both
/// versions) and applies the one that opted in; status agrees; both programs still run.
#[test]
fn an_apt_upgrade_is_reported_and_followed_by_the_jail_that_opts_in() {
    need_root!("an_apt_upgrade_is_reported_and_followed_by_the_jail_that_opts_in");
    let _serial = serialised();
    let _host = HostGuard;
    let jails = Jails::new("jailprov-hook-apt-");
    let dir = &jails.ws.dir;
    let multiarch = run("gcc", &["-print-multiarch"]).stdout.trim().to_owned();
    let version1 = build_deb(dir, "1.0", &multiarch);
    let version2 = build_deb(dir, "2.0", &multiarch);
    apt_get_install(&version1);
    let host_lib = Path::new("/usr/lib").join(&multiarch).join("libdemo.so.1");
    let program = dir.join("demo");
    fs::write(
        dir.join("demo.c"),
        "#include <stdio.h>\nconst char *demo_version(void);\nint main(void) { puts(demo_version()); return 0; }\n",
    )
    .expect("source");
    run(
        "gcc",
        &[
            "-o",
            &program.display().to_string(),
            &dir.join("demo.c").display().to_string(),
            &host_lib.display().to_string(),
        ],
    );
    let body = |update: &str| format!("binaries = [\"{}\"]\n{update}", program.display());
    jails.write("reports", &body(""));
    jails.write("follows", &body("[update]\non_host_change = \"apply\"\n"));
    jails.apply("reports");
    jails.apply("follows");
    let jail_lib = |name: &str| jails.root(name).join("usr/lib").join(&multiarch).join("libdemo.so.1");
    let state = jails.ws.state.display().to_string();
    run(BIN, &["hook", "install", "--state-dir", &state]);

    let apt = apt_get_install(&version2);
    let said = format!("{}{}", apt.stdout, apt.stderr);
    let reported = format!("{}: behind (libdemo 1.0 -> 2.0); left as it is", jails.root("reports").display());
    let followed = format!("{}: behind (libdemo 1.0 -> 2.0); applied again", jails.root("follows").display());
    assert!(said.contains(&reported), "apt shows the hook's report: {}", apt.describe());
    assert!(said.contains(&followed), "{}", apt.describe());
    let version2_bytes = fs::read(&host_lib).expect("the host library");
    assert_eq!(fs::read(jail_lib("follows")).expect("read"), version2_bytes, "the opted-in jail has version 2");
    assert_ne!(fs::read(jail_lib("reports")).expect("read"), version2_bytes, "the reporting jail keeps version 1");

    let status = jails.status().code(2, "one jail behind");
    assert!(status.stdout.contains(&format!("{}: BEHIND", jails.root("reports").display())), "{}", status.describe());
    assert!(status.stdout.contains(&format!("{}: current", jails.root("follows").display())), "{}", status.describe());
    assert!(
        status.stdout.contains(&format!("libdemo 1.0 -> 2.0: 1 file\n    /usr/lib/{multiarch}/libdemo.so.1")),
        "{}",
        status.describe()
    );
    let program = program.display().to_string();
    assert_eq!(jails.enter("reports", &[&program]).ok("enter reports").stdout, "1.0\n");
    assert_eq!(jails.enter("follows", &[&program]).ok("enter follows").stdout, "2.0\n");
}
