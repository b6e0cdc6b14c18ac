//! `jailprov status`: every jail applied with one state directory, current or behind the host's
//! files (stat prints), orphaned records shown with the command that forgets them, the JSON
//! schema, and `--processes`.
//!
//! Each jail copies a `[[files]]` source from the test's own tempdir: the "host update" is an
//! edit of that file, never of a real host file (tests/hook.rs updates a real package).
#![allow(clippy::disallowed_methods)] // tests build fixtures with plain fs calls

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[macro_use]
mod cli;
use cli::{output, Run, Workspace, BIN};

/// Jails named `names` in one workspace, sharing its state directory: `NAME.toml` copies `true`
/// and `host/NAME.txt` (to /data.txt) into `jails/NAME`.
struct Jails {
    ws: Workspace,
}

impl Jails {
    fn new(names: &[&str]) -> Jails {
        let ws = Workspace::new("jailprov-status-");
        fs::create_dir_all(ws.dir.join("host")).expect("mkdir");
        let jails = Jails { ws };
        for name in names {
            fs::write(jails.source(name), format!("{name} version 1\n")).expect("source");
            fs::write(
                jails.jailfile(name),
                format!(
                    "root = \"{}\"\nbinaries = [\"true\"]\n[[files]]\nsrc = \"{}\"\ndest = \"/data.txt\"\n",
                    jails.root(name).display(),
                    jails.source(name).display()
                ),
            )
            .expect("Jailfile");
            jails.apply(name).ok("apply");
        }
        jails
    }

    fn jailfile(&self, name: &str) -> PathBuf {
        self.ws.dir.join(format!("{name}.toml"))
    }
    fn root(&self, name: &str) -> PathBuf {
        self.ws.dir.join("jails").join(name)
    }
    fn source(&self, name: &str) -> PathBuf {
        self.ws.dir.join("host").join(format!("{name}.txt"))
    }

    fn apply(&self, name: &str) -> Run {
        let mut command = Command::new(BIN);
        command.arg("apply").arg("-f").arg(self.jailfile(name)).arg("--state-dir").arg(&self.ws.state);
        command.stdin(Stdio::null());
        output(command)
    }

    fn status(&self, extra: &[&str]) -> Run {
        let mut command = Command::new(BIN);
        command.arg("status").arg("--state-dir").arg(&self.ws.state).args(extra);
        command.stdin(Stdio::null());
        output(command)
    }

    fn json(&self) -> serde_json::Value {
        let run = self.status(&["--format", "json"]).ok("status --format json");
        let value: serde_json::Value = serde_json::from_str(&run.stdout).expect("status prints JSON");
        let schema: serde_json::Value =
            serde_json::from_str(&fs::read_to_string("schemas/status.schema.json").expect("the committed schema"))
                .expect("the schema is JSON");
        let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
        let errors: Vec<String> = validator.iter_errors(&value).map(|error| error.to_string()).collect();
        assert!(errors.is_empty(), "status JSON breaks schemas/status.schema.json: {errors:?}\n{value:#}");
        value
    }

    /// (root, condition) of every jail in the JSON.
    fn conditions(&self) -> Vec<(String, String)> {
        let value = self.json();
        let jails = value["jails"].as_array().expect("jails").clone();
        jails
            .iter()
            .map(|jail| {
                (
                    jail["root"].as_str().unwrap_or_default().to_owned(),
                    jail["condition"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    fn condition(&self, name: &str) -> String {
        let root = self.root(name).display().to_string();
        let found = self.conditions().into_iter().find(|(jail, _)| *jail == root);
        found.map(|(_, condition)| condition).unwrap_or_else(|| panic!("{root} missing from {:?}", self.conditions()))
    }
}

#[test]
fn committed_status_schema_matches_the_rust_types() {
    let generated = jailprov::status::json_schema();
    let committed = fs::read_to_string("schemas/status.schema.json").unwrap_or_default();
    if committed != generated && std::env::var_os("JAILPROV_BLESS").is_some() {
        fs::write("schemas/status.schema.json", &generated).expect("write schema");
        return;
    }
    assert!(committed == generated, "schemas/status.schema.json is stale: `JAILPROV_BLESS=1 cargo test --test status`");
}

/// A host file a jail copied changes: the jail is behind (exit 2 with --detailed-exitcode),
/// naming the path and the command; the other jail stays current; an apply makes it current.
#[test]
fn a_changed_host_file_puts_its_jail_behind_until_the_next_apply() {
    need_root!("a_changed_host_file_puts_its_jail_behind_until_the_next_apply");
    let jails = Jails::new(&["web", "mail"]);
    let all = jails.status(&["--detailed-exitcode"]).code(0, "all current");
    assert!(all.stdout.contains("2 jails: 2 current, 0 behind"), "{}", all.describe());
    assert!(all.stdout.contains(&format!("Jailfile: {}", jails.jailfile("web").display())), "{}", all.describe());
    assert!(all.stdout.contains("last apply: 20"), "{}", all.describe());

    fs::write(jails.source("web"), "web version 2, a security fix\n").expect("update");
    let behind = jails.status(&["--detailed-exitcode"]).code(2, "one jail behind");
    assert!(behind.stdout.contains(&format!("{}: BEHIND", jails.root("web").display())), "{}", behind.describe());
    assert!(behind.stdout.contains("files of no package: 1 file\n    /data.txt"), "{}", behind.describe());
    assert!(
        behind.stdout.contains(&format!(
            "run: jailprov apply -f {} --root {}",
            jails.jailfile("web").display(),
            jails.root("web").display()
        )),
        "{}",
        behind.describe()
    );
    assert_eq!((jails.condition("web"), jails.condition("mail")), ("behind".into(), "current".into()));
    let value = jails.json();
    let web = value["jails"].as_array().expect("jails").iter().find(|jail| jail["condition"] == "behind").cloned();
    assert_eq!(web.expect("the behind jail")["packages"][0]["paths"], serde_json::json!(["/data.txt"]));
    jails.status(&[]).ok("without --detailed-exitcode a behind jail is no failure");

    jails.apply("web").ok("apply again");
    jails.status(&["--detailed-exitcode"]).code(0, "current again");
}

/// Records of jails whose root or Jailfile is gone are shown as orphaned, with `jailprov forget
/// ROOT`; forget drops them, and refuses a jail that is still there.
#[test]
fn orphaned_records_are_shown_with_the_command_that_forgets_them() {
    need_root!("orphaned_records_are_shown_with_the_command_that_forgets_them");
    let jails = Jails::new(&["gone-root", "gone-jailfile", "kept"]);
    fs::remove_dir_all(jails.root("gone-root")).expect("rm the root");
    fs::remove_file(jails.jailfile("gone-jailfile")).expect("rm the Jailfile");
    let run = jails.status(&["--detailed-exitcode"]).code(0, "orphans are not behind");
    for (name, reason) in [
        ("gone-root", "its root is gone".to_owned()),
        ("gone-jailfile", format!("its Jailfile {} is gone", jails.jailfile("gone-jailfile").display())),
    ] {
        let root = jails.root(name);
        let block = format!("{}: ORPHANED\n", root.display());
        assert!(run.stdout.contains(&block), "{name}: {}", run.describe());
        assert!(run.stdout.contains(&reason), "{name}: {}", run.describe());
        assert!(run.stdout.contains(&format!("run: jailprov forget {}", root.display())), "{name}: {}", run.describe());
    }
    assert_eq!(jails.condition("kept"), "current");

    let forget = |name: &str, extra: &[&str]| {
        let mut command = Command::new(BIN);
        command.arg("forget").arg(jails.root(name)).arg("--state-dir").arg(&jails.ws.state).args(extra);
        command.stdin(Stdio::null());
        output(command)
    };
    forget("gone-root", &[]).ok("forget an orphan");
    forget("gone-jailfile", &[]).ok("forget an orphan");
    let refused = forget("kept", &[]).code(1, "a jail still there is destroyed, not forgotten");
    assert!(refused.stderr.contains("jailprov destroy"), "{}", refused.describe());
    let roots: Vec<String> = jails.conditions().into_iter().map(|(root, _)| root).collect();
    assert_eq!(roots, [jails.root("kept").display().to_string()]);
}

/// A process running in a jail that still maps a file apply replaced is listed by
/// `--processes`, with the replaced file, so the admin knows what to restart.
#[test]
fn processes_mapping_replaced_files_are_listed() {
    need_root!("processes_mapping_replaced_files_are_listed");
    let (pid, run) = status_of_a_sleeper_whose_program_is_replaced("sleeper", |ws| {
        let sleeper = Command::new("chroot")
            .arg(&ws.root)
            .args(["/usr/local/bin/sleeper", "60"])
            .stdin(Stdio::null())
            .spawn()
            .expect("chroot sleeper");
        let pid = sleeper.id();
        (sleeper, pid)
    });
    assert!(
        run.stdout.contains(&format!("process {pid} (sleeper) maps replaced files: /usr/local/bin/sleeper")),
        "{}",
        run.describe()
    );
}

/// The same for a jail started as users start it: `jailprov enter` (new namespaces, pivot_root,
/// the jail's root a bind mount of the applied one), seen from the host's pid namespace.
#[test]
fn processes_of_an_entered_jail_mapping_replaced_files_are_listed() {
    need_root!("processes_of_an_entered_jail_mapping_replaced_files_are_listed");
    // Its own name: the chroot test's sleeper may run at the same time.
    let (pid, run) = status_of_a_sleeper_whose_program_is_replaced("entered-sleeper", |ws| {
        let mut enter = ws.enter_command(&["/usr/local/bin/entered-sleeper", "60"]);
        let enter = enter.stdin(Stdio::null()).stdout(Stdio::null()).spawn().expect("jailprov enter");
        (enter, host_pid_of("entered-sleeper"))
    });
    assert!(
        run.stdout
            .contains(&format!("process {pid} (entered-sleeper) maps replaced files: /usr/local/bin/entered-sleeper")),
        "{}",
        run.describe()
    );
}

/// The host pid of the one process named `name`, waited for (up to 10 s).
fn host_pid_of(name: &str) -> u32 {
    for _ in 0..200 {
        let found = fs::read_dir("/proc").expect("list /proc").flatten().find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = fs::read_to_string(entry.path().join("comm")).ok()?;
            (comm.trim_end() == name).then_some(pid)
        });
        if let Some(pid) = found {
            return pid;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("no process named {name} appeared");
}

/// Applies a jail of a copy of sleep named `name`, starts it with `start` (the child to stop afterwards and the
/// sleeper's host pid), updates the host program and applies again (the jail's copy is replaced
/// by rename), and runs `status --processes`.
fn status_of_a_sleeper_whose_program_is_replaced(
    name: &str,
    start: impl FnOnce(&Workspace) -> (std::process::Child, u32),
) -> (u32, Run) {
    let ws = Workspace::new("jailprov-status-processes-");
    let program = ws.dir.join(name);
    fs::copy("/usr/bin/sleep", &program).expect("copy sleep");
    ws.write_jailfile(&format!(
        "root = \"/unused\"\nbinaries = [\"sleep\"]\n[[files]]\nsrc = \"{}\"\ndest = \"/usr/local/bin/{name}\"\nmode = \"0755\"\n",
        program.display()
    ));
    ws.apply();
    let (mut child, pid) = start(&ws);
    // An update: the host program gets one byte more; apply replaces the jail's copy by rename.
    let mut bytes = fs::read(&program).expect("read");
    bytes.push(0);
    fs::write(&program, bytes).expect("update");
    ws.apply();
    let mut status = Command::new(BIN);
    status.args(["status", "--processes", "--state-dir"]).arg(&ws.state);
    let run = output(status);
    // SIGTERM: `enter` forwards it to the jail, which ends; chroot's sleeper simply ends.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
    (pid, run.ok("status --processes"))
}

/// A record that cannot be read is an error naming its file, and hides no other jail.
#[test]
fn an_unreadable_record_is_an_error_beside_the_other_jails() {
    need_root!("an_unreadable_record_is_an_error_beside_the_other_jails");
    use std::os::unix::fs::OpenOptionsExt;
    let jails = Jails::new(&["fine"]);
    let bad = jails.ws.state.join("srv-jails-bad-0000000000000000.state");
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&bad).expect("create");
    std::io::Write::write_all(&mut file, b"jailprov state\n\xff\xff").expect("write");
    let run = jails.status(&["--detailed-exitcode"]).code(1, "a record that cannot be read is an error");
    assert!(run.stdout.contains(&format!("the state file {} is corrupt", bad.display())), "{}", run.describe());
    assert!(run.stdout.contains(&format!("{}: current", jails.root("fine").display())), "{}", run.describe());
}
