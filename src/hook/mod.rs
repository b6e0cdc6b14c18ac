//! The apt hook and its timer: after every dpkg run, name the jails now behind the host and apply
//! again those whose Jailfile opts in (`[update] on_host_change = "apply"`), never failing apt.
#![allow(clippy::disallowed_methods)] // writes apt and systemd configuration on the host, outside every jail

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::host::HostFs;
use crate::spec::OnHostChange;
use crate::state::StateStore;
use crate::status::{self, Condition, JailStatus};

/// The apt configuration file the hook lives in (read after the distribution's 70debconf).
pub const APT_CONF_NAME: &str = "80-jailprov";
/// The systemd units of `hook install --systemd`.
pub const SERVICE_NAME: &str = "jailprov-hook.service";
pub const TIMER_NAME: &str = "jailprov-hook.timer";

/// `hook run`'s command line, for apt and for the service.
fn run_command(exe: &Path, state_dir: &Path) -> String {
    format!("{} hook run --state-dir {}", exe.display(), state_dir.display())
}

/// The apt configuration: jailprov after every dpkg run, where apt shows its output; `|| true`
/// and the existence test keep apt working even when jailprov fails or was removed.
pub fn apt_conf_text(exe: &Path, state_dir: &Path) -> String {
    let run = run_command(exe, state_dir);
    format!(
        "// Written by `jailprov hook install`; `jailprov hook remove` deletes it.\n\
         // After every dpkg run: name the jails now behind the host, apply those that opt in.\n\
         DPkg::Post-Invoke {{ \"if [ -x {exe} ]; then {run} || true; fi\"; }};\n",
        exe = exe.display()
    )
}

/// The service of `hook install --systemd`: one `hook run` (it exits 0 whatever it finds).
pub fn service_text(exe: &Path, state_dir: &Path) -> String {
    format!(
        "# Written by `jailprov hook install --systemd`; `jailprov hook remove --systemd` deletes it.\n\
         [Unit]\n\
         Description=Apply the jails that follow host updates (jailprov hook run)\n\
         After=local-fs.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={}\n",
        run_command(exe, state_dir)
    )
}

/// The timer: hourly, and soon after boot (unattended-upgrades may have run while it was off).
pub fn timer_text() -> String {
    format!(
        "# Written by `jailprov hook install --systemd`; `jailprov hook remove --systemd` deletes it.\n\
         [Unit]\n\
         Description=Run {SERVICE_NAME} hourly\n\
         \n\
         [Timer]\n\
         OnBootSec=5min\n\
         OnUnitActiveSec=1h\n\
         Unit={SERVICE_NAME}\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n"
    )
}

/// The files `hook install` writes into `dir`: (name, text).
pub fn files(exe: &Path, state_dir: &Path, systemd: bool) -> Vec<(&'static str, String)> {
    if systemd {
        vec![(SERVICE_NAME, service_text(exe, state_dir)), (TIMER_NAME, timer_text())]
    } else {
        vec![(APT_CONF_NAME, apt_conf_text(exe, state_dir))]
    }
}

/// Writes the hook's files into `dir` (0644, atomically); returns their paths.
pub fn install(dir: &Path, exe: &Path, state_dir: &Path, systemd: bool) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (name, text) in files(exe, state_dir, systemd) {
        let path = dir.join(name);
        crate::beside::write_atomically(&path, text.as_bytes(), 0o644, true)
            .with_context(|| format!("cannot write the hook {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Removes the hook's files from `dir`; returns those that were there.
pub fn remove(dir: &Path, systemd: bool) -> Result<Vec<PathBuf>> {
    let names: &[&str] = if systemd { &[SERVICE_NAME, TIMER_NAME] } else { &[APT_CONF_NAME] };
    let mut removed = Vec::new();
    for name in names {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error).with_context(|| format!("cannot remove the hook {}", path.display())),
        }
    }
    Ok(removed)
}

/// What the hook did with one jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Current, orphaned or unknown: only reported.
    Reported,
    /// Behind, and its Jailfile says "report".
    LeftBehind,
    /// Behind and applied again (the apply's exit status was 0).
    Applied,
    /// Behind, and its apply failed.
    ApplyFailed(String),
    /// Behind, but another jailprov holds its lock.
    Busy,
    /// Behind, but its Jailfile or lock does not validate.
    Invalid(String),
}

/// One jail's line in the log.
pub struct Outcome {
    pub jail: JailStatus,
    pub action: Action,
}

impl Outcome {
    /// "ROOT: behind (libdemo 1.0 -> 2.0): applied".
    pub fn line(&self) -> String {
        let jail = &self.jail;
        let condition = match jail.condition {
            Condition::Current => "current".to_owned(),
            Condition::Behind => {
                let packages: Vec<String> = jail
                    .packages
                    .iter()
                    .map(|change| match &change.package {
                        Some(package) => format!(
                            "{package} {} -> {}",
                            change.old_version.as_deref().unwrap_or("(none)"),
                            change.new_version.as_deref().unwrap_or("(removed)")
                        ),
                        None => format!("{} files of no package", change.paths.len()),
                    })
                    .collect();
                format!("behind ({})", packages.join(", "))
            }
            Condition::Orphaned => format!("orphaned, {}", jail.reason),
            Condition::Unknown => format!("unknown, {}", jail.reason),
            Condition::Error => format!("error, {}", jail.reason),
        };
        let action = match &self.action {
            Action::Reported => String::new(),
            Action::LeftBehind => "; left as it is ([update] on_host_change = \"report\")".into(),
            Action::Applied => "; applied again".into(),
            Action::ApplyFailed(why) => format!("; apply failed: {why}"),
            Action::Busy => "; skipped: another jailprov holds its lock (it is being applied)".into(),
            Action::Invalid(why) => format!("; skipped: {why}"),
        };
        format!("{}: {condition}{action}", jail.root.display())
    }
}

/// `hook run`: every recorded jail's status, and for each behind jail whose Jailfile opts in, an
/// apply by `exe` (the same lock as any apply, taken without waiting). Each outcome is passed to
/// `log` as it happens. Errors are the caller's to report; nothing here should fail apt.
pub fn run(state_dir: &Path, exe: &Path, log: &mut dyn FnMut(&Outcome)) -> Result<Vec<Outcome>> {
    let host = HostFs::real();
    let report = status::collect(state_dir, &host, false)?;
    let mut outcomes = Vec::new();
    for jail in report.jails {
        let action = match jail.condition {
            Condition::Behind => follow(&jail, state_dir, exe, &host),
            _ => Action::Reported,
        };
        let outcome = Outcome { jail, action };
        log(&outcome);
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// What to do with a jail that is behind: its Jailfile decides.
fn follow(jail: &JailStatus, state_dir: &Path, exe: &Path, host: &HostFs) -> Action {
    let Some(jailfile) = &jail.jailfile else { return Action::Reported };
    let spec = match crate::spec::load(jailfile, Some(&jail.root), host) {
        Ok(spec) => spec,
        Err(error) => {
            return Action::Invalid(format!("the Jailfile {} does not validate: {error:#}", jailfile.display()))
        }
    };
    if spec.on_host_change == OnHostChange::Report {
        return Action::LeftBehind;
    }
    let store = StateStore::for_root(state_dir, &jail.root);
    // A quick look: an apply running now is left to finish (it reads the new host files anyway).
    match store.lock(Duration::ZERO) {
        Ok(lock) => drop(lock),
        Err(_) => return Action::Busy,
    }
    let status = Command::new(exe)
        .arg("apply")
        .arg("--file")
        .arg(jailfile)
        .arg("--root")
        .arg(&jail.root)
        .arg("--state-dir")
        .arg(state_dir)
        .args(["--lock-timeout", "0", "--color", "never"])
        .status();
    match status {
        Ok(status) if status.success() => Action::Applied,
        Ok(status) => Action::ApplyFailed(format!("`jailprov apply` exited with {status}")),
        Err(error) => Action::ApplyFailed(format!("cannot run {}: {error}", exe.display())),
    }
}

/// Logs one line to syslog (the journal reads /dev/log) as `jailprov-hook`, user facility; a host
/// without a syslog socket only gets stderr, which apt shows.
pub fn syslog(line: &str) {
    use std::os::unix::net::UnixDatagram;
    // <13>: facility user (1) * 8 + severity notice (5).
    let message = format!("<13>jailprov-hook[{}]: {line}", std::process::id());
    if let Ok(socket) = UnixDatagram::unbound() {
        let _ = socket.send_to(message.as_bytes(), "/dev/log");
    }
    let _ = writeln!(std::io::stderr(), "jailprov hook: {line}");
}
