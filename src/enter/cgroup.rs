//! Memory and pids limits through cgroup v2 where the host offers it, rlimit fallbacks where not.
//!
//! [`plan`] is pure: given the Jailfile's limits and which cgroup v2 controllers the host can
//! give the jail, it says which cgroup files to write, which rlimits to set and what to warn
//! about. [`probe`] and [`Cgroup`] touch /sys/fs/cgroup.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::sys::resource::Resource;
use nix::unistd::Pid;

use crate::spec::LimitsSpec;

/// Where a unified (v2) hierarchy is mounted on a pure-v2 host.
pub const CGROUP_MOUNT: &str = "/sys/fs/cgroup";

/// What the limits become.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitsPlan {
    /// memory.max for the jail's cgroup.
    pub memory_max: Option<u64>,
    /// pids.max for the jail's cgroup.
    pub pids_max: Option<u64>,
    /// rlimits set (soft = hard) in the command's process before the privilege drop.
    pub rlimits: Vec<(Resource, u64)>,
    pub warnings: Vec<String>,
}

impl LimitsPlan {
    pub fn needs_cgroup(&self) -> bool {
        self.memory_max.is_some() || self.pids_max.is_some()
    }
}

/// Decides the limits. `controllers` are the cgroup v2 controllers a new cgroup can use (empty
/// without cgroup v2 at /sys/fs/cgroup, or when jailprov cannot create cgroups). What keeps a
/// controller away is looked up only when one is missing.
pub fn plan(limits: &LimitsSpec, controllers: &[String]) -> LimitsPlan {
    plan_explained(limits, controllers, |missing| Unavailable::now(missing).to_string())
}

/// [`plan`], with `why_missing` saying what keeps the named controllers away.
pub fn plan_explained(
    limits: &LimitsSpec,
    controllers: &[String],
    why_missing: impl FnOnce(&[&str]) -> String,
) -> LimitsPlan {
    let has = |name: &str| controllers.iter().any(|controller| controller == name);
    let mut plan = LimitsPlan::default();
    if let Some(nofile) = limits.nofile {
        plan.rlimits.push((Resource::RLIMIT_NOFILE, nofile));
    }
    if let Some(cpu) = limits.cpu {
        plan.rlimits.push((Resource::RLIMIT_CPU, cpu));
    }
    if let Some(fsize) = limits.fsize {
        plan.rlimits.push((Resource::RLIMIT_FSIZE, fsize));
    }
    // What each limit falls back to without its controller, for the one warning below.
    let mut missing = Vec::new();
    let mut fallbacks = Vec::new();
    if let Some(nproc) = limits.nproc {
        // RLIMIT_NPROC always (it is what the Jailfile documents); pids.max on top where it
        // exists, since RLIMIT_NPROC counts the user's processes on the whole host.
        plan.rlimits.push((Resource::RLIMIT_NPROC, nproc));
        if has("pids") {
            plan.pids_max = Some(nproc);
        } else {
            missing.push("pids");
            fallbacks.push(format!(
                "nproc is only RLIMIT_NPROC={nproc} (it counts every process of the jail user's uid on the host)"
            ));
        }
    }
    if let Some(memory) = limits.memory {
        if has("memory") {
            plan.memory_max = Some(memory);
        } else {
            plan.rlimits.push((Resource::RLIMIT_AS, memory));
            missing.push("memory");
            fallbacks.push(format!(
                "memory falls back to RLIMIT_AS={memory} (each process's address space, not the memory the jail uses)"
            ));
        }
    }
    if !missing.is_empty() {
        plan.warnings.push(format!("[enter].limits: {}; so {}", why_missing(&missing), fallbacks.join(", and ")));
    }
    plan
}

/// What keeps cgroup v2 controllers from the jail, said exactly: the first thing missing on the
/// way from "jailprov is root" to "the controller is enabled for a new cgroup".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// Rootless enter: only root makes cgroups here.
    NotRoot,
    /// Nothing is mounted at /sys/fs/cgroup (or it cannot be read).
    NotMounted,
    /// /sys/fs/cgroup is a cgroup v1 or hybrid layout (`unified`: a v2 hierarchy at
    /// /sys/fs/cgroup/unified, which holds no controllers while v1 has them).
    NotV2 { unified: bool },
    /// The controllers are not offered to jailprov's cgroup (`cgroup.controllers` of `base`).
    NotOffered { controllers: Vec<String>, base: PathBuf },
    /// Offered, but enabling them in `base`'s `cgroup.subtree_control` failed (a cgroup that
    /// holds processes itself cannot give controllers to children, or it is read-only).
    NotEnabled { controllers: Vec<String>, base: PathBuf },
}

impl Unavailable {
    /// Looks at this host, read only (after [`probe`] tried to enable them).
    pub fn now(missing: &[&str]) -> Unavailable {
        let names = || missing.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>();
        if !nix::unistd::geteuid().is_root() {
            return Unavailable::NotRoot;
        }
        let mount = Path::new(CGROUP_MOUNT);
        let Ok(statfs) = nix::sys::statfs::statfs(mount) else { return Unavailable::NotMounted };
        if statfs.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC {
            return Unavailable::NotV2 { unified: mount.join("unified").join("cgroup.controllers").exists() };
        }
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let own = own.lines().find_map(|line| line.strip_prefix("0::")).unwrap_or("/");
        let base = mount.join(own.trim_start_matches('/'));
        let offered = std::fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default();
        if missing.iter().any(|name| !offered.split_whitespace().any(|have| have == *name)) {
            return Unavailable::NotOffered { controllers: names(), base };
        }
        Unavailable::NotEnabled { controllers: names(), base }
    }
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let listed = |controllers: &[String]| controllers.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>();
        match self {
            Unavailable::NotRoot => write!(f, "jailprov runs without root, and only root makes cgroups for a jail"),
            Unavailable::NotMounted => write!(f, "no cgroup filesystem is mounted at {CGROUP_MOUNT}"),
            Unavailable::NotV2 { unified: true } => write!(
                f,
                "{CGROUP_MOUNT} is a hybrid cgroup v1/v2 layout: the controllers are v1's, and jailprov uses only cgroup \
                 v2 (boot with systemd.unified_cgroup_hierarchy=1)"
            ),
            Unavailable::NotV2 { unified: false } => write!(
                f,
                "{CGROUP_MOUNT} is cgroup v1, and jailprov uses only cgroup v2 (boot with \
                 systemd.unified_cgroup_hierarchy=1)"
            ),
            Unavailable::NotOffered { controllers, base } => write!(
                f,
                "the cgroup {} does not offer {} (see its cgroup.controllers; the parent must delegate them)",
                base.display(),
                listed(controllers).join(" and ")
            ),
            Unavailable::NotEnabled { controllers, base } => write!(
                f,
                "{} cannot be enabled in {}/cgroup.subtree_control (a cgroup holding processes itself gives no \
                 controllers to children; run jailprov from a leaf of a delegated subtree, e.g. `systemd-run --scope \
                 -p Delegate=yes`)",
                listed(controllers).join(" and "),
                base.display()
            ),
        }
    }
}

/// The directory under which jailprov can create a cgroup with the controllers it needs, and
/// those controllers; `None` without a writable cgroup v2 hierarchy at /sys/fs/cgroup.
pub fn probe(needed: &[&str]) -> Option<(PathBuf, Vec<String>)> {
    let mount = Path::new(CGROUP_MOUNT);
    let statfs = nix::sys::statfs::statfs(mount).ok()?;
    if statfs.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC {
        return None;
    }
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = own.lines().find_map(|line| line.strip_prefix("0::"))?;
    let mut candidates = vec![mount.join(own.trim_start_matches('/'))];
    // The root cgroup may hold processes and still delegate controllers to its children.
    candidates.push(mount.to_path_buf());
    for base in candidates {
        if let Some(controllers) = enable_controllers(&base, needed) {
            return Some((base, controllers));
        }
    }
    None
}

/// Enables `needed` for the children of `base` (if not already); the controllers then usable.
fn enable_controllers(base: &Path, needed: &[&str]) -> Option<Vec<String>> {
    let read = |file: &str| std::fs::read_to_string(base.join(file)).ok();
    let available: Vec<String> = read("cgroup.controllers")?.split_whitespace().map(str::to_owned).collect();
    let enabled = read("cgroup.subtree_control")?;
    let missing: Vec<&str> = needed
        .iter()
        .filter(|name| available.iter().any(|have| have == *name))
        .filter(|name| !enabled.split_whitespace().any(|have| have == **name))
        .copied()
        .collect();
    for name in &missing {
        #[allow(clippy::disallowed_methods)] // cgroupfs, outside every jail
        let _ = std::fs::write(base.join("cgroup.subtree_control"), format!("+{name}"));
    }
    let enabled = read("cgroup.subtree_control")?;
    let usable: Vec<String> = needed
        .iter()
        .filter(|name| enabled.split_whitespace().any(|have| have == **name))
        .map(|name| (*name).to_owned())
        .collect();
    (!usable.is_empty()).then_some(usable)
}

/// A cgroup jailprov created for one `enter`; removed when dropped (empty by then: the jail's
/// PID 1 has ended, and the kernel ends the rest of its PID namespace with it).
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    /// Creates `base/jailprov-enter-PID` with the limits of `plan`.
    #[allow(clippy::disallowed_methods)] // cgroupfs, outside every jail
    pub fn create(base: &Path, plan: &LimitsPlan) -> Result<Cgroup> {
        let dir = base.join(format!("jailprov-enter-{}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("cannot create the cgroup {}", dir.display()))?;
        let cgroup = Cgroup { dir };
        let write = |file: &str, value: u64| {
            let path = cgroup.dir.join(file);
            std::fs::write(&path, value.to_string())
                .with_context(|| format!("cannot write {value} to {}", path.display()))
        };
        if let Some(memory) = plan.memory_max {
            write("memory.max", memory)?;
            // Without this, memory.max only pushes the jail into swap.
            let _ = write("memory.swap.max", 0);
        }
        if let Some(pids) = plan.pids_max {
            write("pids.max", pids)?;
        }
        Ok(cgroup)
    }

    /// Moves `pid` (and the children it will have) into the cgroup.
    #[allow(clippy::disallowed_methods)] // cgroupfs, outside every jail
    pub fn add(&self, pid: Pid) -> Result<()> {
        let procs = self.dir.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).with_context(|| format!("cannot move {pid} into {}", procs.display()))
    }
}

impl Drop for Cgroup {
    #[allow(clippy::disallowed_methods)] // cgroupfs, outside every jail
    fn drop(&mut self) {
        // rmdir of a cgroup only removes an empty cgroup, never files.
        if let Err(error) = std::fs::remove_dir(&self.dir) {
            eprintln!("jailprov enter: warning: cannot remove the cgroup {}: {error}", self.dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LimitsSpec {
        LimitsSpec { nofile: Some(64), nproc: Some(32), memory: Some(64 << 20), cpu: Some(5), fsize: Some(1 << 20) }
    }

    #[test]
    fn with_cgroup_v2_memory_and_pids_go_to_the_cgroup() {
        let plan = plan(&limits(), &["memory".into(), "pids".into()]);
        assert_eq!(plan.memory_max, Some(64 << 20));
        assert_eq!(plan.pids_max, Some(32));
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        assert!(!plan.rlimits.iter().any(|(resource, _)| *resource == Resource::RLIMIT_AS));
        assert!(plan.rlimits.contains(&(Resource::RLIMIT_NPROC, 32)));
        assert!(plan.rlimits.contains(&(Resource::RLIMIT_NOFILE, 64)));
        assert!(plan.rlimits.contains(&(Resource::RLIMIT_CPU, 5)));
        assert!(plan.rlimits.contains(&(Resource::RLIMIT_FSIZE, 1 << 20)));
    }

    #[test]
    fn without_cgroup_v2_memory_falls_back_to_rlimit_as_with_one_warning() {
        let plan = plan_explained(&limits(), &[], |_| Unavailable::NotV2 { unified: true }.to_string());
        assert!(!plan.needs_cgroup());
        assert!(plan.rlimits.contains(&(Resource::RLIMIT_AS, 64 << 20)));
        assert!(plan.rlimits.contains(&(Resource::RLIMIT_NPROC, 32)));
        insta::assert_snapshot!("limits_without_cgroup_v2", plan.warnings.join("\n---\n"));
    }

    #[test]
    fn with_only_pids_the_warning_names_only_memory() {
        let mut asked = Vec::new();
        let plan = plan_explained(&limits(), &["pids".into()], |missing| {
            asked = missing.iter().map(|name| (*name).to_owned()).collect();
            Unavailable::NotOffered { controllers: asked.clone(), base: "/sys/fs/cgroup/a".into() }.to_string()
        });
        assert_eq!(asked, ["memory"], "only the missing controller is looked into");
        assert_eq!(plan.pids_max, Some(32));
        insta::assert_snapshot!("limits_memory_not_offered", plan.warnings.join("\n---\n"));
    }

    #[test]
    fn each_reason_says_what_is_missing_and_never_blames_root_for_root() {
        let controllers = vec!["memory".to_owned(), "pids".to_owned()];
        let base = PathBuf::from("/sys/fs/cgroup/user.slice");
        let reasons = [
            Unavailable::NotRoot,
            Unavailable::NotMounted,
            Unavailable::NotV2 { unified: false },
            Unavailable::NotV2 { unified: true },
            Unavailable::NotOffered { controllers: controllers.clone(), base: base.clone() },
            Unavailable::NotEnabled { controllers, base },
        ];
        let said: Vec<String> = reasons.iter().map(ToString::to_string).collect();
        for (reason, text) in reasons.iter().zip(&said).skip(1) {
            assert!(!text.contains("root"), "{reason:?} blames root: {text}");
        }
        insta::assert_snapshot!("cgroup_unavailable_reasons", said.join("\n"));
    }

    #[test]
    fn as_root_on_this_host_the_reason_is_not_root() {
        if nix::unistd::geteuid().is_root() {
            assert_ne!(Unavailable::now(&["memory"]), Unavailable::NotRoot);
        } else {
            eprintln!("SKIPPED as_root_on_this_host_the_reason_is_not_root: needs root");
        }
    }

    #[test]
    fn no_limits_no_cgroup_no_warning() {
        let plan = plan(&LimitsSpec::default(), &[]);
        assert_eq!(plan, LimitsPlan::default());
    }
}
