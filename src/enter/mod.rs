//! `jailprov enter`: run a command in the applied jail behind namespaces, pivot_root and a privilege drop.
//!
//! Three processes, each with its own steps below:
//!
//! - **jailprov** (on the host) reads the Jailfile, opens a pty for the jail when its stdin is
//!   a terminal ([`terminal`]), creates the namespaces with clone3, writes the user namespace's
//!   id maps (through the child's pidfd) and the cgroup, releases the child, then waits for it,
//!   passing on the signals it is sent (and relaying the pty); its exit code is the command's;
//! - **the jail's PID 1** ([`init`]) leaves the caller's session, builds the mount table
//!   (steps 1-3), sets the hostname and brings up `lo` (step 4), forks the command's process,
//!   drops every privilege of its own, then reaps and forwards signals;
//! - **the command's process** drops every privilege (step 5), waits for PID 1 to be bare,
//!   starts a session of its own (the jail's pty as its terminal), cleans its environment and
//!   file descriptors (step 6) and execs the command (step 7).
//!
//! Exit codes: the command's own, 128+N when signal N ended it; 125 when jailprov could not set
//! up the jail (the message starts with `jailprov enter:`), 126 when the command cannot be
//! executed, 127 when it is not found (as env(1) and chroot(8) do). Errors before anything is
//! started (a bad Jailfile, a jail never applied) exit 1, like every jailprov command.

pub mod caps;
pub mod cgroup;
pub mod dev;
pub mod id_maps;
pub mod init;
pub mod mounts;
pub mod network;
pub mod output;
pub mod seccomp;
pub mod signals;
pub mod sys;
pub mod terminal;
pub mod trace;

use std::collections::BTreeSet;
use std::ffi::CString;
use std::path::PathBuf;
use std::process::ExitCode;

use ::caps::CapsHashSet;
use anyhow::{bail, Result};
use nix::sched::CloneFlags;
use nix::unistd::Pid;

use crate::jail_root::JailRoot;
use crate::jailfile::{MountKind, Namespace, NetworkMode};
use crate::spec::Spec;
use cgroup::{Cgroup, LimitsPlan};
use id_maps::{IdMaps, IdRange};
use mounts::MountOp;
use sys::{Fork, RealSys, Sys};

/// Exit code when jailprov itself could not set up the jail.
pub const EXIT_SETUP_FAILED: i32 = 125;
/// Exit code when the command exists but cannot be executed.
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
/// Exit code when the command is not found.
pub const EXIT_NOT_FOUND: i32 = 127;

/// PATH of the command unless `[enter].env` sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where jail ids 0..65536 land on the host when root asks for a user namespace: far above
/// any real account, so jail root is nobody in particular outside.
pub const ROOT_USERNS_BASE: u32 = 0x6000_0000;
const ROOT_USERNS_COUNT: u32 = 65536;

/// Who runs jailprov, and what of their session the command may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// TERM, when one of stdin/stdout/stderr is a terminal.
    pub term: Option<String>,
}

/// Everything `enter` does, decided before any process is created.
#[derive(Debug, Clone)]
pub struct EnterPlan {
    pub root: PathBuf,
    pub namespaces: CloneFlags,
    pub id_maps: Option<IdMaps>,
    pub mounts: Vec<MountOp>,
    pub hostname: Option<String>,
    pub loopback: bool,
    /// `dev = "minimal"` (the default): a tmpfs /dev (dev.rs), built once the root is read-only.
    pub minimal_dev: Option<dev::MinimalDev>,
    /// `network = "private"`: pasta wires the jail's network namespace to the host.
    pub network: Option<network::NetworkPlan>,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups; `None` where setgroups is denied (a rootless user namespace).
    pub groups: Option<Vec<u32>>,
    pub keep: CapsHashSet,
    pub seccomp: bool,
    pub limits: LimitsPlan,
    pub env: Vec<(String, String)>,
    pub workdir: String,
    pub argv: Vec<String>,
    pub warnings: Vec<String>,
    /// `jailprov trace`: PID 1 follows the command with ptrace and reports what it missed.
    pub trace: bool,
}

/// Decides what `enter` does: pure, from the Spec, the command line and the caller.
pub fn plan(spec: &Spec, command: &[String], caller: &Caller, cgroup_controllers: &[String]) -> Result<EnterPlan> {
    let enter = &spec.enter;
    let mut warnings = Vec::new();
    let rootless = caller.uid != 0;
    let mut wanted = enter.namespaces.clone();
    if rootless {
        // Without root, only a user namespace grants the capabilities the setup needs.
        wanted.insert(Namespace::User);
    }
    if !rootless && enter.uid == 0 {
        if !enter.allow_host_root {
            // Jail root as host uid 0 leaves root's files (a setuid copy of a shell) on the host's
            // disk and passes the uid-0 checks of /proc and sysfs: it gets ids of its own.
            wanted.insert(Namespace::User);
        } else if !wanted.contains(&Namespace::User) {
            warnings.push(
                "the command runs as real host root (uid 0 on the host, no user namespace): [enter] allow_host_root = true; whatever it creates in a writable place is root's on the host".to_owned(),
            );
        }
    }
    if wanted.contains(&Namespace::User) {
        check_mountable_in_a_user_namespace(spec, &wanted)?;
    }
    let namespaces = wanted.iter().fold(CloneFlags::empty(), |flags, namespace| flags | clone_flag(*namespace));
    let id_maps = wanted.contains(&Namespace::User).then(|| {
        if rootless {
            // One id is all an unprivileged writer may map: the jail user becomes the caller.
            IdMaps {
                uid: IdRange { inside: enter.uid, outside: caller.uid, count: 1 },
                gid: IdRange { inside: enter.gid, outside: caller.gid, count: 1 },
                deny_setgroups: true,
            }
        } else {
            let range = IdRange { inside: 0, outside: ROOT_USERNS_BASE, count: ROOT_USERNS_COUNT };
            IdMaps { uid: range, gid: range, deny_setgroups: false }
        }
    });
    let groups: Vec<u32> = spec
        .groups
        .iter()
        .filter(|group| group.gid != enter.gid && group.members.contains(&enter.user))
        .map(|group| group.gid)
        .collect();
    let groups = if id_maps.as_ref().is_some_and(|maps| maps.deny_setgroups) {
        if !groups.is_empty() {
            warnings.push(format!(
                "rootless enter cannot set the supplementary groups {groups:?} of {}: an unprivileged user namespace denies setgroups",
                enter.user
            ));
        }
        None
    } else {
        Some(groups)
    };
    let hostname = match (&enter.hostname, wanted.contains(&Namespace::Uts)) {
        (Some(name), true) => Some(name.clone()),
        (Some(name), false) => {
            warnings.push(format!(
                "hostname {name:?} not set: [enter].namespaces has no \"uts\" (it would rename the host)"
            ));
            None
        }
        (None, _) => None,
    };
    let argv: Vec<String> = if command.is_empty() { enter.command.clone() } else { command.to_vec() };
    let argv = if argv.is_empty() { vec!["/bin/sh".to_owned()] } else { argv };
    let mut env: Vec<(String, String)> = enter.env.iter().map(|(name, value)| (name.clone(), value.clone())).collect();
    if !enter.env.contains_key("PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if let (Some(term), false) = (&caller.term, enter.env.contains_key("TERM")) {
        env.push(("TERM".into(), term.clone()));
    }
    env.sort();
    let workdir = match &enter.workdir {
        Some(workdir) => workdir.as_str().to_owned(),
        None => spec
            .users
            .iter()
            .find(|user| user.name == enter.user)
            .map_or_else(|| "/".to_owned(), |user| user.home.as_str().to_owned()),
    };
    let limits = cgroup::plan(&enter.limits, if rootless { &[] } else { cgroup_controllers });
    warnings.extend(limits.warnings.iter().cloned());
    Ok(EnterPlan {
        root: spec.root()?.to_path_buf(),
        namespaces,
        id_maps,
        mounts: mounts::plan(spec),
        hostname,
        loopback: enter.network != NetworkMode::Host && wanted.contains(&Namespace::Net),
        minimal_dev: dev::plan(spec),
        network: (enter.network == NetworkMode::Private).then(|| network::NetworkPlan {
            ports: enter.ports.clone(),
            egress: enter.egress,
            rootless,
        }),
        uid: enter.uid,
        gid: enter.gid,
        groups,
        keep: caps::kept(&enter.capabilities)?,
        seccomp: enter.seccomp,
        limits,
        env,
        workdir,
        argv,
        warnings,
        trace: false,
    })
}

/// In a user namespace the kernel lets sysfs be mounted only with a network namespace of its
/// own, and mqueue only with an IPC namespace of its own: said before anything starts, with the
/// way out, rather than as an EPERM from inside the jail.
fn check_mountable_in_a_user_namespace(spec: &Spec, wanted: &BTreeSet<Namespace>) -> Result<()> {
    for mount in &spec.mounts {
        let (kind, needed, name, fix) = match mount.kind {
            MountKind::Sysfs => {
                ("sysfs", Namespace::Net, "net", "remove network = \"host\" (or add \"net\" to [enter].namespaces)")
            }
            MountKind::Mqueue => ("mqueue", Namespace::Ipc, "ipc", "add \"ipc\" to [enter].namespaces"),
            _ => continue,
        };
        if !wanted.contains(&needed) {
            let why = if spec.enter.uid == 0 && !spec.enter.allow_host_root {
                "jail root runs in a user namespace by default"
            } else {
                "the command runs in a user namespace"
            };
            bail!(
                "{} ({kind} at {}) cannot be mounted: {why}, where the kernel allows {kind} only with its own \"{name}\" namespace; {fix}{}",
                mount.key,
                mount.target,
                if spec.enter.uid == 0 { ", or set [enter] allow_host_root = true" } else { "" }
            );
        }
    }
    Ok(())
}

fn clone_flag(namespace: Namespace) -> CloneFlags {
    match namespace {
        Namespace::Mount => CloneFlags::CLONE_NEWNS,
        Namespace::Pid => CloneFlags::CLONE_NEWPID,
        Namespace::Uts => CloneFlags::CLONE_NEWUTS,
        Namespace::Ipc => CloneFlags::CLONE_NEWIPC,
        Namespace::Net => CloneFlags::CLONE_NEWNET,
        Namespace::User => CloneFlags::CLONE_NEWUSER,
        Namespace::Cgroup => CloneFlags::CLONE_NEWCGROUP,
    }
}

/// `jailprov enter` once the caller has checked the jail is applied: runs `command` (the
/// Jailfile's `[enter].command` when empty) in the jail and returns its exit code.
pub fn run_in_jail(spec: &Spec, command: &[String]) -> Result<ExitCode> {
    let (code, _) = run_in_jail_with(spec, command, false)?;
    Ok(code)
}

/// `jailprov trace`'s run: [`run_in_jail`] with the command followed by the jail's PID 1;
/// returns the exit code and what the command looked for in vain, as PID 1 reported it.
pub fn trace_in_jail(spec: &Spec, command: &[String]) -> Result<(ExitCode, trace::Report)> {
    if !spec.enter.capabilities.is_empty() {
        bail!(
            "jailprov trace cannot follow a command that keeps capabilities ([enter].capabilities = {:?}): the jail's PID 1, its tracer, holds none; remove them while tracing",
            spec.enter.capabilities
        );
    }
    let (code, report) = run_in_jail_with(spec, command, true)?;
    Ok((code, report.unwrap_or_default()))
}

fn run_in_jail_with(spec: &Spec, command: &[String], traced: bool) -> Result<(ExitCode, Option<trace::Report>)> {
    let caller = Caller {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        term: term_of_a_terminal(),
    };
    let needed: Vec<&str> = [spec.enter.limits.memory.map(|_| "memory"), spec.enter.limits.nproc.map(|_| "pids")]
        .into_iter()
        .flatten()
        .collect();
    let (cgroup_base, controllers) = match (caller.uid, needed.is_empty()) {
        (0, false) => cgroup::probe(&needed).map_or((None, Vec::new()), |(base, found)| (Some(base), found)),
        _ => (None, Vec::new()),
    };
    let mut plan = plan(spec, command, &caller, &controllers)?;
    plan.trace = traced;
    for warning in &plan.warnings {
        eprintln!("jailprov enter: warning: {warning}");
    }
    let cgroup = match (&cgroup_base, plan.limits.needs_cgroup()) {
        (Some(base), true) => Some(Cgroup::create(base, &plan.limits)?),
        _ => None,
    };
    let (sys, reader) = if traced {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|errno| anyhow::anyhow!("cannot create the trace's report pipe: {errno}"))?;
        (RealSys::reporting_to(write), Some(read))
    } else {
        (RealSys::default(), None)
    };
    // The jail's stdout and stderr reopenable by the jail user (/dev/stdout), unless a pty
    // carries them.
    let output = match std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        false => {
            let (uid, gid) = command_host_ids(&plan);
            (uid != caller.uid).then(|| output::OutputRelay::install(uid, gid)).transpose()?
        }
        true => None,
    };
    // jailprov reads the report while it supervises: a thread, started only after the clone
    // (jailprov stays single-threaded until then).
    let mut collector = None;
    let output = std::cell::RefCell::new(output);
    let ran = run_with_collector(&sys, &plan, cgroup.as_ref(), reader, &mut collector, &output);
    if let (Ok(Side::Jailprov(_)) | Err(_), Some(relay)) = (&ran, output.into_inner()) {
        relay.finish();
    }
    let code = match ran {
        Ok(Side::Jailprov(code)) => code,
        Ok(Side::Child(code)) => {
            // A process of the jail: no destructors of jailprov's objects (the cgroup) here.
            // SAFETY: _exit ends the process at once, as a forked child must.
            unsafe { nix::libc::_exit(code) }
        }
        Err(error) => {
            eprintln!("jailprov enter: error: {error:#}");
            EXIT_SETUP_FAILED
        }
    };
    drop(cgroup);
    let report = match collector {
        Some(thread) => Some(thread.join().map_err(|_| anyhow::anyhow!("the trace's report reader panicked"))??),
        None => None,
    };
    Ok((ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)), report))
}

type Collector = std::thread::JoinHandle<Result<trace::Report>>;

/// [`run`], starting the reader of the trace's report in jailprov once the jail is cloned.
fn run_with_collector(
    sys: &RealSys,
    plan: &EnterPlan,
    cgroup: Option<&Cgroup>,
    reader: Option<std::os::fd::OwnedFd>,
    collector: &mut Option<Collector>,
    output: &std::cell::RefCell<Option<output::OutputRelay>>,
) -> Result<Side> {
    let reader = std::cell::RefCell::new(reader);
    let mut on_clone = || {
        if let Some(read) = reader.borrow_mut().take() {
            *collector = Some(std::thread::spawn(move || trace::read_report(read)));
        }
        if let Some(relay) = output.borrow_mut().as_mut() {
            if let Err(error) = relay.start() {
                eprintln!("jailprov enter: warning: {error:#}");
            }
        }
    };
    let side = run_observed(sys, plan, cgroup, &mut on_clone);
    if let Ok(Side::Child(_)) = side {
        // In the jail, the descriptor was closed with every other inherited one: never again.
        std::mem::forget(reader.borrow_mut().take());
        std::mem::forget(output.borrow_mut().take());
    }
    side
}

/// The host uid and gid the command runs as: through the user namespace's maps when it has one.
fn command_host_ids(plan: &EnterPlan) -> (u32, u32) {
    match &plan.id_maps {
        Some(maps) => (
            maps.uid.outside + plan.uid.saturating_sub(maps.uid.inside),
            maps.gid.outside + plan.gid.saturating_sub(maps.gid.inside),
        ),
        None => (plan.uid, plan.gid),
    }
}

/// TERM, passed on only when the command talks to a terminal.
fn term_of_a_terminal() -> Option<String> {
    use std::io::IsTerminal;
    let tty = std::io::stdin().is_terminal() || std::io::stdout().is_terminal() || std::io::stderr().is_terminal();
    tty.then(|| std::env::var("TERM").ok()).flatten()
}

/// Which process returns from [`run`]: jailprov with the command's exit code, or a child of it
/// (the jail's PID 1 or the command's process, when exec failed) with the code to _exit with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Jailprov(i32),
    Child(i32),
}

/// jailprov's side: create the namespaces and supervise the jail's PID 1.
pub fn run(sys: &impl Sys, plan: &EnterPlan, cgroup: Option<&Cgroup>) -> Result<Side> {
    run_observed(sys, plan, cgroup, &mut || {})
}

/// [`run`], calling `on_clone` in jailprov right after the clone (never in the jail).
fn run_observed(sys: &impl Sys, plan: &EnterPlan, cgroup: Option<&Cgroup>, on_clone: &mut dyn FnMut()) -> Result<Side> {
    // Signals arrive through sigwait in the supervisors; the command's process unblocks them.
    sys.block_signals()?;
    // The jail's own terminal when the caller's stdin is one: what the jail does to its
    // terminal (TIOCSTI, TIOCLINUX) then reaches only that pty.
    let terminal = sys.open_terminal()?;
    // 1 and 4. The namespaces (mount, pid, uts, ipc, net, user as asked), all in one clone3: the
    // child is PID 1 of the new PID namespace.
    let child = match sys.clone_into_namespaces(plan.namespaces)? {
        Fork::Child => return Ok(Side::Child(init::run(sys, plan))),
        Fork::Parent(child) => child,
    };
    on_clone();
    // The user-mode network stack, attached to the jail's namespace while the child waits;
    // stopped (dropped) once the jail has ended.
    let pasta = match &plan.network {
        Some(network) => sys.connect_network(child, network),
        None => Ok(None),
    };
    let released = pasta.and_then(|pasta| release(sys, plan, cgroup, child).map(|()| pasta));
    let pasta = match released {
        Ok(pasta) => pasta,
        Err(error) => {
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(child, None);
            return Err(error);
        }
    };
    let ended = if terminal { sys.relay_terminal(child) } else { sys.supervise(child, false) };
    drop(pasta);
    Ok(Side::Jailprov(ended?.code()))
}

/// Writes the child's id maps, puts it in the cgroup, and lets it go on.
fn release(sys: &impl Sys, plan: &EnterPlan, cgroup: Option<&Cgroup>, child: Pid) -> Result<()> {
    // 4. The user namespace: jail root (rootless: the jail user) maps to an unprivileged host id.
    if let Some(maps) = &plan.id_maps {
        sys.write_id_maps(child, maps)?;
    }
    // 5 (limits). The cgroup, before the child runs anything.
    if let Some(cgroup) = cgroup {
        cgroup.add(child)?;
    }
    sys.release_child()
}

/// Steps 1-4 in the jail's PID 1: the mount table, then the other namespaces' setup.
pub fn prepare_jail(sys: &impl Sys, plan: &EnterPlan) -> Result<()> {
    // Dies with jailprov; waits until jailprov has written the id maps.
    sys.die_with_parent()?;
    sys.wait_for_release()?;
    // Nothing of the host may stay open in the jail's PID 1 (an inherited directory fd would
    // be a way out for whoever could reach it through /proc/1/fd).
    sys.close_fds_above_stderr()?;
    // A private network: low ports for an unprivileged service, written through the host's
    // /proc while it is still in reach (its /proc/sys/net is this process's namespace).
    if plan.network.is_some() {
        sys.allow_unprivileged_low_ports()?;
    }
    // 1. Everything private, recursively, before anything is mounted: nothing mounted here may
    // propagate to the host, and nothing the host mounts later appears here.
    sys.make_mounts_private()?;
    // 2. The jail root bind-mounted onto itself (pivot_root needs a mount point), then the mount
    // plan realized under it, targets resolved inside it without following symlinks: writable
    // places and device nodes bound onto themselves, the root made read-only, nosuid and nodev,
    // the mount wishes, the hardening of proc and sysfs (mounts::plan).
    // A minimal /dev creates files on a tmpfs of the user namespace: PID 1 takes the ids it has
    // there (it still holds host ids that map to nothing, which such a file system refuses),
    // keeping every capability, and asks again to die with jailprov (a change of ids forgets it).
    if let (Some(_), Some(maps)) = (&plan.minimal_dev, &plan.id_maps) {
        sys.set_ids(maps.uid.inside, maps.gid.inside)?;
        sys.die_with_parent()?;
    }
    let new_root = sys.bind_root_onto_itself(&plan.root)?;
    let jail = JailRoot::from_directory_fd(new_root, &plan.root)?;
    for (index, operation) in plan.mounts.iter().enumerate() {
        mounts::realize(sys, &jail, operation)?;
        // The minimal /dev right after the root turns read-only: before the mount wishes, so
        // that one below /dev (an mqueue) lands on it rather than under it.
        if let (Some(minimal), mounts::MountSource::InPlace) = (&plan.minimal_dev, &operation.source) {
            dev::build(sys, &jail, minimal, &plan.mounts[index + 1..], pid_1_ids(plan))?;
        }
    }
    // 3. pivot_root into the jail and detach the old root: no path leads back to the host.
    sys.pivot_root(jail.as_fd())?;
    sys.detach_old_root()?;
    drop(jail);
    // 4. The hostname of the UTS namespace, and `lo` of the network namespace.
    if let Some(hostname) = &plan.hostname {
        sys.set_hostname(hostname)?;
    }
    if plan.loopback {
        sys.bring_up_loopback()?;
    }
    Ok(())
}

/// The ids the jail's PID 1 has while it builds the mount table: the inside ids of the user
/// namespace's maps (see prepare_jail), or root's.
fn pid_1_ids(plan: &EnterPlan) -> dev::Owner {
    plan.id_maps
        .as_ref()
        .map_or(dev::Owner { uid: 0, gid: 0 }, |maps| dev::Owner { uid: maps.uid.inside, gid: maps.gid.inside })
}

/// Steps 5-7 in the command's process; returns the exit code only when the command cannot run.
pub fn exec_command(sys: &impl Sys, plan: &EnterPlan) -> i32 {
    // The command runs only once the jail's PID 1 has dropped its own privileges.
    let ready = drop_privileges(sys, plan).and_then(|()| sys.wait_for_init());
    // A session of its own: the caller's terminal is not its controlling terminal (the jail's
    // pty is, when there is one).
    let ready = ready.and_then(|()| sys.start_session());
    match ready.and_then(|()| clean_process(sys, plan)) {
        Ok(()) => exec(sys, plan),
        Err(error) => {
            eprintln!("jailprov enter: error: {error:#}");
            EXIT_SETUP_FAILED
        }
    }
}

/// Step 5, privileges: rlimits, the capability sets, the jail user, no_new_privs, seccomp.
fn drop_privileges(sys: &impl Sys, plan: &EnterPlan) -> Result<()> {
    // Limits first: raising a hard limit needs CAP_SYS_RESOURCE, about to go.
    for (resource, limit) in &plan.limits.rlimits {
        sys.set_rlimit(*resource, *limit)?;
    }
    // The bounding set while CAP_SETPCAP is still held: no exec can get the rest back.
    sys.drop_bounding_set(&plan.keep)?;
    if plan.uid != 0 && !plan.keep.is_empty() {
        sys.keep_capabilities_across_setuid()?;
    }
    if let Some(groups) = &plan.groups {
        sys.set_groups(groups)?;
    }
    sys.set_ids(plan.uid, plan.gid)?;
    // Effective, permitted, inheritable and ambient: only what the Jailfile keeps (usually none).
    sys.set_capabilities(&plan.keep)?;
    // Traced: before seccomp (which denies ptrace) and once this process holds no more than the
    // jail's PID 1 will (nothing), so the kernel lets PID 1 be its tracer.
    if plan.trace {
        sys.trace_me()?;
    }
    // No setuid binary or file capability can raise privileges again; also what lets an
    // unprivileged process install a seccomp filter.
    sys.set_no_new_privs()?;
    if plan.seccomp {
        for filter in seccomp::default_filters()? {
            sys.install_seccomp(&filter)?;
        }
    }
    Ok(())
}

/// Step 6: signals back to default, file descriptors above 2 closed, the working directory,
/// and death with the jail's PID 1.
fn clean_process(sys: &impl Sys, plan: &EnterPlan) -> Result<()> {
    sys.reset_signals()?;
    sys.close_fds_above_stderr()?;
    sys.chdir(&plan.workdir)?;
    sys.die_with_parent()
}

/// Step 7: exec with only the declared environment.
fn exec(sys: &impl Sys, plan: &EnterPlan) -> i32 {
    let to_c = |text: &str| CString::new(text).ok();
    let Some(argv) = plan.argv.iter().map(|arg| to_c(arg)).collect::<Option<Vec<CString>>>() else {
        eprintln!("jailprov enter: error: the command holds a NUL byte");
        return EXIT_SETUP_FAILED;
    };
    let Some(env) =
        plan.env.iter().map(|(name, value)| to_c(&format!("{name}={value}"))).collect::<Option<Vec<CString>>>()
    else {
        eprintln!("jailprov enter: error: the environment holds a NUL byte");
        return EXIT_SETUP_FAILED;
    };
    let name = &plan.argv[0];
    let path = if name.contains('/') {
        Some(name.clone())
    } else {
        let search = plan.env.iter().find(|(key, _)| key == "PATH").map_or(DEFAULT_PATH, |(_, value)| value.as_str());
        search
            .split(':')
            .filter(|dir| !dir.is_empty())
            .map(|dir| format!("{}/{name}", dir.trim_end_matches('/')))
            .find(|candidate| sys.is_executable_file(candidate))
    };
    let Some(path) = path.and_then(|path| to_c(&path)) else {
        eprintln!("jailprov enter: {name}: command not found in the jail's PATH");
        return EXIT_NOT_FOUND;
    };
    let failure = sys.execve(&path, &argv, &env);
    eprintln!("jailprov enter: cannot run {name} in the jail: {}", failure.errno.desc());
    if failure.errno == nix::errno::Errno::ENOENT {
        EXIT_NOT_FOUND
    } else {
        EXIT_NOT_EXECUTABLE
    }
}

#[cfg(test)]
mod tests;
