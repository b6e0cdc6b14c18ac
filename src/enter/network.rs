//! `network = "private"`: the jail's own network namespace wired to the host by pasta (Debian's
//! `passt`), started against that namespace by jailprov and stopped with the jail.
//!
//! pasta gets the namespace as an inherited descriptor (`--netns /proc/self/fd/3`), never as a
//! /proc/PID path: the 2023 build drops privileges before it opens the path, and the ptrace
//! check on another process's /proc/PID/ns refuses it. What pasta must not do on the host is
//! switched off: no automatic forwarding of the ports the jail binds (`-t none`, `-u none`
//! unless `ports` publishes some), none of the host's loopback ports brought into the jail
//! (`-T none -U none`), and the gateway address does not lead to the host's loopback
//! (`--no-map-gw`): the jail reaches the outside world, not the host's local services.
//!
//! `egress = false` leaves the jail's outside interface unconfigured (no `--config-net`): no
//! address and no route, so every outbound connect fails with "network unreachable" inside the
//! jail, with nothing to install or keep in sync (no nftables in the jail). Published ports still
//! work for clients on the host's loopback: pasta splices those connections to the jail's `lo`
//! (hence the loopback-only rule on `ports` then, spec/enter.rs).

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::spec::{PortSpec, GATEWAY, JAIL_ADDRESS, RESOLVER};

/// The Debian package that provides pasta, named when it is missing.
pub const PASTA_PACKAGE: &str = "passt";

/// What `enter` asks of the private network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPlan {
    pub ports: Vec<PortSpec>,
    pub egress: bool,
    /// jailprov runs unprivileged: pasta joins the jail's user namespace (its owner, the
    /// caller, has every capability there) instead of running as root.
    pub rootless: bool,
}

/// Descriptor numbers pasta inherits: the jail's network namespace, the pipe it writes its PID
/// to once the namespace is configured (the readiness signal), the jail's user namespace.
const NETNS_FD: i32 = 3;
const READY_FD: i32 = 4;
const USERNS_FD: i32 = 5;

/// pasta's command line for `plan` (program name excluded).
pub fn pasta_arguments(plan: &NetworkPlan) -> Vec<String> {
    let mut args: Vec<String> = vec!["--quiet".into(), "--foreground".into()];
    if plan.rootless {
        args.extend(["--userns".into(), format!("/proc/self/fd/{USERNS_FD}")]);
    } else {
        // Root: pasta would drop to nobody, who may not enter a namespace root made. It keeps
        // only the capabilities it needs and sandboxes itself once the namespace is set up.
        args.extend(["--runas".into(), "0".into(), "--netns-only".into()]);
    }
    args.extend(["--netns".into(), format!("/proc/self/fd/{NETNS_FD}")]);
    args.extend(["--pid".into(), format!("/proc/self/fd/{READY_FD}")]);
    for (flag, udp) in [("-t", false), ("-u", true)] {
        let specs: Vec<String> = plan.ports.iter().filter(|port| port.udp == udp).map(forward_spec).collect();
        if specs.is_empty() {
            args.extend([flag.into(), "none".into()]);
        }
        for spec in specs {
            args.extend([flag.into(), spec]);
        }
    }
    args.extend(["-T", "none", "-U", "none", "--no-map-gw"].map(String::from));
    if plan.egress {
        args.extend(
            [
                "--config-net",
                "--address",
                JAIL_ADDRESS,
                "--netmask",
                "24",
                "--gateway",
                GATEWAY,
                "--dns-forward",
                RESOLVER,
            ]
            .map(String::from),
        );
    }
    args
}

/// pasta's form of one published port: `ADDRESS/HOSTPORT:JAILPORT`.
fn forward_spec(port: &PortSpec) -> String {
    let address = port.address.map(|address| format!("{address}/")).unwrap_or_default();
    format!("{address}{}:{}", port.host_port, port.jail_port)
}

/// A running pasta; stopped (SIGTERM, then reaped) when dropped.
#[derive(Debug)]
pub struct Pasta {
    child: Child,
}

impl Drop for Pasta {
    fn drop(&mut self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX));
        let _ = kill(pid, Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// Starts pasta on the network namespace of `jail` (a process jailprov created) and returns
/// once pasta has configured it.
pub fn start_pasta(jail: Pid, plan: &NetworkPlan) -> Result<Pasta> {
    let program = find_pasta()?;
    let netns = open_namespace(jail, "net")?;
    let userns = if plan.rootless { Some(open_namespace(jail, "user")?) } else { None };
    let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|errno| anyhow::anyhow!("cannot create pasta's readiness pipe: {errno}"))?;
    // Above the numbers they get in pasta, or one dup2 could overwrite another's source.
    let (netns, ready_write) = (above_inherited(netns)?, above_inherited(ready_write)?);
    let userns = userns.map(above_inherited).transpose()?;
    let inherited = [(netns.as_raw_fd(), NETNS_FD), (ready_write.as_raw_fd(), READY_FD)]
        .into_iter()
        .chain(userns.as_ref().map(|userns| (userns.as_raw_fd(), USERNS_FD)))
        .collect::<Vec<(i32, i32)>>();
    let mut command = Command::new(&program);
    command.args(pasta_arguments(plan)).stdin(Stdio::null()).stdout(Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl, sigprocmask,
    // prctl) on descriptors this process owns.
    unsafe {
        command.pre_exec(move || prepare_pasta_process(&inherited));
    }
    let mut child = command.spawn().with_context(|| format!("cannot run {}", program.display()))?;
    drop(ready_write);
    drop(netns);
    drop(userns);
    if !pid_line_written(ready_read) {
        let status = child.wait().context("waiting for pasta")?;
        bail!("pasta could not set up the jail's network ({status}; its message is above)");
    }
    Ok(Pasta { child })
}

/// Whether pasta wrote its PID line: it does once the namespace is configured, and keeps the
/// descriptor open afterwards (so no EOF to wait for); an EOF first means it gave up.
fn pid_line_written(ready: OwnedFd) -> bool {
    let mut file = std::fs::File::from(ready);
    let mut byte = [0u8; 1];
    let mut digits = 0;
    loop {
        match file.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => return digits > 0,
            Ok(1) => digits += 1,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => return false,
        }
    }
}

/// In pasta's process before exec: the inherited descriptors at their numbers, the signals
/// jailprov blocks unblocked (or SIGTERM could not stop it), and death with jailprov.
fn prepare_pasta_process(inherited: &[(i32, i32)]) -> std::io::Result<()> {
    for &(from, to) in inherited {
        // SAFETY: plain dup2 of a descriptor this process holds; dup2 clears FD_CLOEXEC on `to`.
        if unsafe { nix::libc::dup2(from, to) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // SAFETY: an empty set unblocks nothing it should keep; prctl takes plain integers.
    unsafe {
        let mut none: nix::libc::sigset_t = std::mem::zeroed();
        nix::libc::sigemptyset(&mut none);
        nix::libc::sigprocmask(nix::libc::SIG_SETMASK, &none, std::ptr::null_mut());
        nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGTERM);
    }
    Ok(())
}

/// In the jail's PID 1, before the command runs: ports below 1024 bindable without
/// CAP_NET_BIND_SERVICE in the jail's own network namespace (as podman sets it). /proc/sys/net
/// is the writer's network namespace: the host's is untouched.
pub fn allow_unprivileged_low_ports() -> Result<()> {
    const SYSCTL: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
    #[allow(clippy::disallowed_methods)] // a sysctl of the jail's network namespace, no jail file
    std::fs::OpenOptions::new()
        .write(true)
        .open(SYSCTL)
        .and_then(|mut file| std::io::Write::write_all(&mut file, b"0\n"))
        .with_context(|| format!("cannot write 0 to {SYSCTL} in the jail's network namespace"))
}

/// `fd` moved to a number above those pasta inherits (close-on-exec, as every jailprov fd).
fn above_inherited(fd: OwnedFd) -> Result<OwnedFd> {
    let moved = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
        .map_err(|errno| anyhow::anyhow!("cannot duplicate a descriptor for pasta: {errno}"))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(moved) })
}

fn open_namespace(jail: Pid, kind: &str) -> Result<OwnedFd> {
    let path = format!("/proc/{jail}/ns/{kind}");
    let file = std::fs::File::open(&path).with_context(|| format!("cannot open the jail's namespace {path}"))?;
    Ok(file.into())
}

/// pasta from PATH (or the usual places when PATH lacks them), or the error naming its package.
fn find_pasta() -> Result<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    find_program("pasta", &path, &["/usr/bin", "/usr/sbin", "/bin", "/sbin"])
}

/// `name` in the directories of `search_path`, then in `fallback`; missing, the error says which
/// Debian package to install.
fn find_program(name: &str, search_path: &str, fallback: &[&str]) -> Result<PathBuf> {
    let found = search_path
        .split(':')
        .chain(fallback.iter().copied())
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| candidate.is_file());
    found.ok_or_else(|| {
        anyhow::anyhow!(
            "[enter] network = \"private\" needs {name}, which is not installed: install Debian's `{PASTA_PACKAGE}` package (apt-get install {PASTA_PACKAGE})"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(text: &str, udp: bool) -> PortSpec {
        let (host, jail) = text.split_once(':').expect("host:jail");
        PortSpec {
            address: Some([127, 0, 0, 1].into()),
            host_port: host.parse().expect("a port"),
            jail_port: jail.parse().expect("a port"),
            udp,
        }
    }

    #[test]
    fn pasta_publishes_only_the_declared_ports_and_nothing_of_the_host() {
        let plan = NetworkPlan { ports: vec![port("8080:80", false)], egress: true, rootless: false };
        let args = pasta_arguments(&plan).join(" ");
        assert!(args.contains("-t 127.0.0.1/8080:80 -u none -T none -U none --no-map-gw"), "{args}");
        assert!(args.contains("--runas 0 --netns-only --netns /proc/self/fd/3"), "{args}");
        assert!(args.contains("--config-net"), "{args}");
    }

    #[test]
    fn a_missing_pasta_names_its_package() {
        let empty = tempfile::tempdir().expect("tempdir");
        let error = find_program("pasta", &empty.path().display().to_string(), &[]).expect_err("not there");
        assert!(error.to_string().contains("install Debian's `passt` package"), "{error}");
    }

    #[test]
    fn without_egress_the_outside_interface_stays_unconfigured() {
        let plan = NetworkPlan { ports: Vec::new(), egress: false, rootless: true };
        let args = pasta_arguments(&plan).join(" ");
        assert!(!args.contains("--config-net"), "{args}");
        assert!(args.contains("-t none -u none"), "{args}");
        assert!(args.contains("--userns /proc/self/fd/5"), "{args}");
    }
}
