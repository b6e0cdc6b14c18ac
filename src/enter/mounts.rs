//! Mount wishes as data: a pure Spec -> operations step, and an executor for one operation.
//!
//! Split so that `apply` can realize `persistent = true` mounts with the same code: [`plan`]
//! decides what `enter` mounts (file system, options, flags, order), [`operations`] what one
//! `[[mounts]]` wish is, [`realize`] performs one operation on a target resolved inside a jail
//! root fd without following any symlink.
//!
//! What `enter` mounts, in order: the writable places (`writable = true` [[dirs]], the users'
//! homes) and the device nodes each bound onto itself, the jail root then made read-only,
//! nosuid and nodev in place, the `[[mounts]]` wishes, and last the hardening of each proc and
//! sysfs among them (runc's and Docker's read-only and masked paths).

use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::enter::sys::MountSys;
use crate::jail_root::{JailError, JailRoot, NodeKind};
use crate::jailfile::MountKind;
use crate::spec::{MountSpec, Spec};
use crate::tree::JailPath;

// MOUNT_ATTR_* of linux/mount.h: the flags of mount_setattr and fsmount.
pub const MOUNT_ATTR_RDONLY: u64 = 0x01;
pub const MOUNT_ATTR_NOSUID: u64 = 0x02;
pub const MOUNT_ATTR_NODEV: u64 = 0x04;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x08;
pub const MOUNT_ATTR_NOATIME: u64 = 0x10;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x80;

/// What gets attached at the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A clone of the host tree at `source` (with the mounts below it).
    Bind { source: PathBuf },
    /// A fresh instance of a file system, configured with `options` (fsconfig key/value pairs).
    Filesystem { fstype: &'static str, options: Vec<(String, String)> },
    /// The jail's own node at the target, cloned (with the mounts below it when `recursive`)
    /// and attached onto itself: how one place gets flags other than its parent mount's.
    Itself { recursive: bool },
    /// No new mount: the mount whose root the target is (the jail root) gets `attributes` in
    /// place, that mount alone (the mounts below it keep their own flags).
    InPlace,
    /// Hidden: the host's /dev/null bound over a file, an empty read-only tmpfs over a directory
    /// (runc's and Docker's way to mask a path).
    Masked,
}

/// The host node bound over a masked file: reads as empty, takes writes nowhere.
pub const MASK_FILE_SOURCE: &str = "/dev/null";

/// One mount to make: attach `source` onto the jail path `target` with `attributes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOp {
    /// The Jailfile entry it comes from, e.g. `mounts[2]`.
    pub key: String,
    pub target: JailPath,
    pub source: MountSource,
    /// MOUNT_ATTR_* bits, set before the mount becomes visible.
    pub attributes: u64,
    /// Skipped when the target does not exist (a /proc entry this kernel lacks); otherwise a
    /// missing target is an error.
    pub optional: bool,
}

/// Flags of every writable place: writes stay, setuid bits and device nodes mean nothing.
const WRITABLE: u64 = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
/// Flags of the jail root inside `enter`.
const READ_ONLY_ROOT: u64 = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
/// Flags of a declared device node bound onto itself (as bubblewrap's --dev-bind): no nodev,
/// or the device could not be opened; nothing to run or setuid in a device node.
const DEVICE: u64 = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC;
/// Flags of the read-only and masked paths of proc and sysfs.
const HARDENED: u64 = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;

/// Below a proc mount, read-only: sysctls (the uid-0 DAC check is all that guards
/// kernel.core_pattern), sysrq, IRQ affinity, bus and file system tunables. runc's and
/// Docker's `readonlyPaths`.
pub const PROC_READ_ONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs"];
/// Below a proc mount, masked: kernel memory, other users' keys, timers and scheduler state
/// that leak addresses, hardware lists. Docker's `maskedPaths` under /proc.
pub const PROC_MASKED: &[&str] =
    &["asound", "acpi", "kcore", "keys", "latency_stats", "timer_list", "timer_stats", "sched_debug", "scsi"];
/// Below a sysfs mount, masked: firmware tables (ACPI, EFI variables) and the power meters
/// that leak what other code runs (Platypus). Docker's `maskedPaths` under /sys.
pub const SYSFS_MASKED: &[&str] = &["firmware", "devices/virtual/powercap"];

/// Everything `enter` mounts under the jail root, in the order it must happen (module doc).
pub fn plan(spec: &Spec) -> Vec<MountOp> {
    let mut plan = writable_places(spec);
    plan.extend(spec.devices.iter().map(|device| MountOp {
        key: device.key.clone(),
        target: device.path.clone(),
        source: MountSource::Itself { recursive: false },
        attributes: DEVICE,
        optional: false,
    }));
    // After the binds above: cloned from the root mount, they would inherit its flags.
    plan.push(MountOp {
        key: "root".to_owned(),
        target: JailPath::root(),
        source: MountSource::InPlace,
        attributes: READ_ONLY_ROOT,
        optional: false,
    });
    plan.extend(wishes(&spec.mounts));
    // Last: nothing mounted later may cover a hardened path with a fresh view.
    plan.extend(spec.mounts.iter().flat_map(hardening));
    plan
}

/// `writable = true` [[dirs]] and the users' homes (not a home of "/": the root stays
/// read-only), parents before children.
fn writable_places(spec: &Spec) -> Vec<MountOp> {
    let dirs = spec.dirs.iter().filter(|dir| dir.writable).map(|dir| (dir.key.clone(), dir.path.clone()));
    let homes = spec
        .users
        .iter()
        .filter(|user| !user.home.is_root())
        .map(|user| (format!("home of user {}", user.name), user.home.clone()));
    let mut places: Vec<MountOp> = Vec::new();
    for (key, target) in dirs.chain(homes) {
        if places.iter().any(|place| place.target == target) {
            continue;
        }
        // Recursive: a persistent mount below the place stays visible, with its own flags.
        places.push(MountOp {
            key,
            target,
            source: MountSource::Itself { recursive: true },
            attributes: WRITABLE,
            optional: false,
        });
    }
    places.sort_by_key(|place| place.target.ancestors().len());
    places
}

/// The operations of all mount wishes, parents before children (a mount at /dev/pts must come
/// after one at /dev, or the later /dev would hide it); the Jailfile's order otherwise.
pub fn wishes(mounts: &[MountSpec]) -> Vec<MountOp> {
    let mut operations: Vec<MountOp> = mounts.iter().flat_map(operations).collect();
    operations.sort_by_key(|operation| operation.target.ancestors().len());
    operations
}

/// The read-only and masked paths below a proc or sysfs mount; none for other kinds.
pub fn hardening(mount: &MountSpec) -> Vec<MountOp> {
    let (read_only, masked): (&[&str], &[&str]) = match mount.kind {
        MountKind::Proc => (PROC_READ_ONLY, PROC_MASKED),
        MountKind::Sysfs => (&[], SYSFS_MASKED),
        _ => return Vec::new(),
    };
    let below = |name: &str, source: MountSource| {
        let target = mount.target.join(std::path::Path::new(name)).ok()?;
        Some(MountOp {
            key: format!("{} (hardening)", mount.key),
            target,
            source,
            attributes: HARDENED,
            optional: true,
        })
    };
    let read_only = read_only.iter().filter_map(|name| below(name, MountSource::Itself { recursive: true }));
    let masked = masked.iter().filter_map(|name| below(name, MountSource::Masked));
    read_only.chain(masked).collect()
}

/// The operations of one mount wish. One each today: read-only binds get their flags on the
/// detached clone before it is attached (mount_setattr), the new mount API's form of
/// "bind, then remount read-only" that is never visible writable.
pub fn operations(mount: &MountSpec) -> Vec<MountOp> {
    let requested = option_attributes(&mount.options) | if mount.readonly { MOUNT_ATTR_RDONLY } else { 0 };
    let (source, defaults) = match mount.kind {
        MountKind::Bind => (
            MountSource::Bind { source: mount.source.clone().unwrap_or_default() },
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        ),
        MountKind::Proc => (
            MountSource::Filesystem { fstype: "proc", options: Vec::new() },
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        ),
        MountKind::Tmpfs => {
            let mut options = Vec::new();
            if let Some(size) = mount.size {
                options.push(("size".to_owned(), size.to_string()));
            }
            if let Some(mode) = mount.mode {
                options.push(("mode".to_owned(), format!("{mode:o}")));
            }
            (MountSource::Filesystem { fstype: "tmpfs", options }, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
        }
        MountKind::Sysfs => (
            MountSource::Filesystem { fstype: "sysfs", options: Vec::new() },
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        ),
        MountKind::Devpts => (
            // Every devpts made with fsopen is a new instance: the host's ptys stay out of sight.
            MountSource::Filesystem {
                fstype: "devpts",
                options: vec![("ptmxmode".to_owned(), "0666".to_owned()), ("mode".to_owned(), "0620".to_owned())],
            },
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
        ),
        MountKind::Mqueue => (
            MountSource::Filesystem { fstype: "mqueue", options: Vec::new() },
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        ),
    };
    vec![MountOp {
        key: mount.key.clone(),
        target: mount.target.clone(),
        source,
        attributes: defaults | requested,
        optional: false,
    }]
}

/// MOUNT_ATTR_* bits of the Jailfile's `options` (validated against spec::MOUNT_OPTIONS).
fn option_attributes(options: &[String]) -> u64 {
    options
        .iter()
        .map(|option| match option.as_str() {
            "nosuid" => MOUNT_ATTR_NOSUID,
            "nodev" => MOUNT_ATTR_NODEV,
            "noexec" => MOUNT_ATTR_NOEXEC,
            "noatime" => MOUNT_ATTR_NOATIME,
            "nodiratime" => MOUNT_ATTR_NODIRATIME,
            "strictatime" => MOUNT_ATTR_STRICTATIME,
            // relatime is MOUNT_ATTR_RELATIME == 0, the default.
            _ => 0,
        })
        .fold(0, |all, bits| all | bits)
}

/// Realizes one operation: resolves `operation.target` inside `jail` (no symlink followed, a
/// symlink at the target itself refused) and attaches the mount onto that very node.
pub fn realize(sys: &impl MountSys, jail: &JailRoot, operation: &MountOp) -> Result<()> {
    let what = format!("{} at {}", operation.key, operation.target);
    // A /proc or /sys entry this kernel lacks is skipped; any other error is said below, better
    // (a symlink on the way, a missing parent).
    if operation.optional && matches!(jail.stat(&operation.target), Ok(None)) {
        return Ok(());
    }
    let target = jail.open_path(&operation.target).map_err(|error| match error.downcast_ref::<JailError>() {
        Some(JailError::SymlinkInPath { path }) => anyhow::anyhow!(
            "refusing {what}: {path} is a symlink in the jail, and jailprov never mounts through one (it could point at the host)"
        ),
        _ => error.context(format!(
            "cannot mount {what}: the target must exist in the jail (declare it in [[dirs]] and run `jailprov apply`)"
        )),
    })?;
    // The kind of the very node the mount goes onto, not of what a path named a moment before.
    let kind = nix::sys::stat::fstat(&target).ok().and_then(|stat| NodeKind::from_mode(stat.st_mode));
    match &operation.source {
        MountSource::Bind { source } => sys.mount_bind(source, true, operation.attributes, target.as_fd()),
        MountSource::Filesystem { fstype, options } => {
            sys.mount_filesystem(fstype, options, operation.attributes, target.as_fd())
        }
        MountSource::Itself { recursive } => sys.bind_onto_itself(target.as_fd(), *recursive, operation.attributes),
        MountSource::InPlace => sys.restrict_mount(target.as_fd(), operation.attributes),
        MountSource::Masked if kind == Some(NodeKind::Dir) => {
            sys.mount_filesystem("tmpfs", &[], operation.attributes, target.as_fd())
        }
        // No nodev here: the mask is a device node that must open (and read as empty).
        MountSource::Masked => sys.mount_bind(
            std::path::Path::new(MASK_FILE_SOURCE),
            false,
            operation.attributes & !MOUNT_ATTR_NODEV,
            target.as_fd(),
        ),
    }
    .with_context(|| format!("cannot mount {what}"))
}

/// Detaches the mount at `target` in `jail`, resolved like a mount target (no symlink
/// followed). Only for mounts jailprov made: the caller checks its record.
pub fn unmount(sys: &impl MountSys, jail: &JailRoot, target: &JailPath) -> Result<()> {
    let node = jail.open_path(target).with_context(|| format!("cannot unmount {target}"))?;
    sys.unmount(node.as_fd()).with_context(|| format!("cannot unmount {target}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // tests build fixture jails with plain fs calls

    use super::*;
    use crate::enter::sys::Recorder;

    fn jp(path: &str) -> JailPath {
        JailPath::parse(path).expect("a valid jail path")
    }

    fn spec(kind: MountKind, target: &str) -> MountSpec {
        MountSpec {
            key: "mounts[0]".into(),
            kind,
            source: None,
            target: jp(target),
            readonly: false,
            options: Vec::new(),
            size: None,
            mode: None,
            persistent: false,
        }
    }

    #[test]
    fn a_readonly_bind_is_read_only_nosuid_and_nodev() {
        let mut bind = spec(MountKind::Bind, "/data");
        bind.source = Some(PathBuf::from("/srv/data"));
        bind.readonly = true;
        bind.options = vec!["noexec".into()];
        let operations = operations(&bind);
        assert_eq!(operations.len(), 1);
        assert_eq!(operations[0].source, MountSource::Bind { source: PathBuf::from("/srv/data") });
        assert_eq!(
            operations[0].attributes,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC
        );
        bind.readonly = false;
        bind.options.clear();
        assert_eq!(operations_of(&bind), MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, "nosuid,nodev even when not asked");
    }

    fn operations_of(mount: &MountSpec) -> u64 {
        operations(mount)[0].attributes
    }

    #[test]
    fn each_kind_is_a_fresh_file_system_with_safe_flags() {
        let mut tmpfs = spec(MountKind::Tmpfs, "/scratch");
        tmpfs.size = Some(1 << 20);
        tmpfs.mode = Some(0o1777);
        assert_eq!(
            operations(&tmpfs)[0].source,
            MountSource::Filesystem {
                fstype: "tmpfs",
                options: vec![("size".into(), "1048576".into()), ("mode".into(), "1777".into())]
            }
        );
        let sysfs = spec(MountKind::Sysfs, "/sys");
        assert_ne!(operations_of(&sysfs) & MOUNT_ATTR_RDONLY, 0, "sysfs is always read-only");
        let proc = spec(MountKind::Proc, "/proc");
        assert!(matches!(operations(&proc)[0].source, MountSource::Filesystem { fstype: "proc", .. }));
        assert_ne!(operations_of(&proc) & MOUNT_ATTR_NOEXEC, 0);
        let devpts = spec(MountKind::Devpts, "/dev/pts");
        assert!(matches!(&operations(&devpts)[0].source, MountSource::Filesystem { fstype: "devpts", options }
            if options.contains(&("ptmxmode".into(), "0666".into()))));
        let mqueue = spec(MountKind::Mqueue, "/dev/mqueue");
        assert!(matches!(operations(&mqueue)[0].source, MountSource::Filesystem { fstype: "mqueue", .. }));
    }

    #[test]
    fn parents_are_mounted_before_their_children() {
        let mounts = [
            spec(MountKind::Devpts, "/dev/pts"),
            spec(MountKind::Tmpfs, "/dev"),
            spec(MountKind::Proc, "/proc"),
            spec(MountKind::Tmpfs, "/a/b/c"),
            spec(MountKind::Tmpfs, "/a"),
        ];
        let order: Vec<String> = wishes(&mounts).iter().map(|operation| operation.target.to_string()).collect();
        assert_eq!(order, ["/dev", "/proc", "/a", "/dev/pts", "/a/b/c"]);
    }

    #[test]
    fn proc_and_sysfs_are_hardened_below_their_own_target() {
        let proc = hardening(&spec(MountKind::Proc, "/jail-proc"));
        let read_only: Vec<&str> = proc
            .iter()
            .filter(|operation| operation.source == MountSource::Itself { recursive: true })
            .map(|operation| operation.target.as_str())
            .collect();
        assert_eq!(
            read_only,
            ["/jail-proc/sys", "/jail-proc/sysrq-trigger", "/jail-proc/irq", "/jail-proc/bus", "/jail-proc/fs"]
        );
        let masked: Vec<&str> = proc
            .iter()
            .filter(|operation| operation.source == MountSource::Masked)
            .map(|operation| operation.target.as_str())
            .collect();
        for path in ["/jail-proc/kcore", "/jail-proc/keys", "/jail-proc/timer_list", "/jail-proc/sched_debug"] {
            assert!(masked.contains(&path), "{path} masked: {masked:?}");
        }
        assert!(!masked.contains(&"/jail-proc/interrupts"), "Docker leaves /proc/interrupts readable");
        assert!(proc.iter().all(|operation| operation.optional && operation.attributes & MOUNT_ATTR_RDONLY != 0));
        let sysfs = hardening(&spec(MountKind::Sysfs, "/sys"));
        assert!(sysfs
            .iter()
            .any(|operation| operation.target.as_str() == "/sys/firmware" && operation.source == MountSource::Masked));
        assert!(hardening(&spec(MountKind::Tmpfs, "/tmp")).is_empty());
    }

    #[test]
    fn a_masked_file_gets_dev_null_a_masked_directory_an_empty_tmpfs_a_missing_one_nothing() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let jail_dir = tmp.path().join("jail");
        std::fs::create_dir_all(jail_dir.join("proc/acpi"))?;
        std::fs::write(jail_dir.join("proc/kcore"), "kernel memory")?;
        let jail = JailRoot::open(&jail_dir)?;
        let sys = Recorder::new(&jail_dir);
        for operation in hardening(&spec(MountKind::Proc, "/proc")) {
            realize(&sys, &jail, &operation)?;
        }
        let lines = sys.lines();
        assert_eq!(lines.len(), 2, "only what exists is mounted: {lines:#?}");
        assert!(
            lines[0].starts_with("mount_filesystem tmpfs [] -> ") && lines[0].ends_with("/proc/acpi attributes=0xf")
        );
        assert!(
            lines[1].starts_with("mount_bind /dev/null -> ")
                && lines[1].ends_with("/proc/kcore recursive=false attributes=0xb"),
            "read-only, nosuid, noexec, but not nodev: {}",
            lines[1]
        );
        // A required target that is missing stays an error.
        let mut required = hardening(&spec(MountKind::Proc, "/proc")).remove(0);
        required.optional = false;
        assert!(realize(&sys, &jail, &required).is_err());
        Ok(())
    }

    #[test]
    fn a_symlink_planted_at_a_mount_target_is_refused() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let jail_dir = tmp.path().join("jail");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(jail_dir.join("real"))?;
        std::fs::create_dir_all(jail_dir.join("parent"))?;
        std::fs::create_dir(&outside)?;
        // Followed, either link would put the mount on the host directory `outside`.
        std::os::unix::fs::symlink(&outside, jail_dir.join("scratch"))?;
        std::os::unix::fs::symlink(&outside, jail_dir.join("parent/link"))?;
        let jail = JailRoot::open(&jail_dir)?;
        let sys = Recorder::new(&jail_dir);
        for target in ["/scratch", "/scratch/below", "/parent/link/below"] {
            let operation = operations(&spec(MountKind::Tmpfs, target)).remove(0);
            let error = realize(&sys, &jail, &operation).expect_err("a symlink target is refused");
            assert!(format!("{error:#}").contains("is a symlink in the jail"), "{target}: {error:#}");
        }
        assert!(sys.lines().is_empty(), "nothing was mounted: {:?}", sys.lines());
        let missing = operations(&spec(MountKind::Tmpfs, "/missing")).remove(0);
        let error = realize(&sys, &jail, &missing).expect_err("a missing target");
        assert!(format!("{error:#}").contains("declare it in [[dirs]]"), "{error:#}");
        let fine = operations(&spec(MountKind::Tmpfs, "/real")).remove(0);
        realize(&sys, &jail, &fine)?;
        let lines = sys.lines();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("mount_filesystem tmpfs") && lines[0].contains("jail/real"), "{lines:?}");
        Ok(())
    }
}
