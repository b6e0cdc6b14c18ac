//! A systemd service unit that runs `[enter].command` in the applied jail under systemd's own
//! sandbox: the Jailfile's namespaces, mounts, user, limits and capabilities as unit directives.

use std::fmt::Write as _;
use std::path::Path;

use crate::jailfile::{MountKind, Namespace, NetworkMode};
use crate::spec::Spec;
use crate::tree::JailPath;

/// The unit's file name for a jail.
pub fn unit_name(name: &str) -> String {
    format!("jailprov-{name}.service")
}

/// The unit text. `root` is the applied jail (RootDirectory=); every other path in the unit is
/// inside it, as systemd reads them once it has changed root.
pub fn unit_text(spec: &Spec, root: &Path, name: &str) -> String {
    let enter = &spec.enter;
    let jailfile = spec.jailfile.file_name().map_or_else(|| "Jailfile".into(), |name| name.to_string_lossy());
    let mut unit = String::new();
    let mut line = |text: String| {
        unit.push_str(&text);
        unit.push('\n');
    };
    line("# Written by `jailprov export --format systemd`; the jail itself is `jailprov apply`'s.".into());
    line("[Unit]".into());
    line(format!("Description=jailprov jail {name} ({jailfile})"));
    line(String::new());
    line("[Service]".into());
    line("Type=exec".into());
    line(format!("RootDirectory={}", literal_path(&root.to_string_lossy())));
    line(format!("ExecStart={}", enter.command.iter().map(|word| quoted(word)).collect::<Vec<_>>().join(" ")));
    line(format!("User={}", enter.uid));
    line(format!("Group={}", enter.gid));
    if let Some(workdir) = &enter.workdir {
        line(format!("WorkingDirectory={}", literal_path(workdir.as_str())));
    }
    for (variable, value) in &enter.env {
        line(format!("Environment={}", quoted_value(&format!("{variable}={value}"))));
    }
    // As inside `enter`: the jail read-only but for its writable places. These two settings
    // take host paths (systemd.exec(5)), unlike every other path here.
    line(format!("ReadOnlyPaths={}", quoted_value(&root.to_string_lossy())));
    for place in writable_places(spec) {
        line(format!("ReadWritePaths={}", quoted_value(&root.join(place.relative()).to_string_lossy())));
    }
    for directive in mount_directives(spec) {
        line(directive);
    }
    for directive in namespace_directives(spec) {
        line(directive);
    }
    for directive in device_directives(spec) {
        line(directive);
    }
    line("NoNewPrivileges=yes".into());
    let capabilities = enter.capabilities.join(" ");
    line(format!("CapabilityBoundingSet={capabilities}"));
    if !capabilities.is_empty() && enter.uid != 0 {
        // A non-root user keeps a capability only as an ambient one.
        line(format!("AmbientCapabilities={capabilities}"));
    }
    if enter.seccomp {
        line("SystemCallFilter=@system-service".into());
        line("SystemCallArchitectures=native".into());
    }
    line("ProtectKernelTunables=yes".into());
    line("ProtectKernelModules=yes".into());
    line("ProtectControlGroups=yes".into());
    let limits = &enter.limits;
    let numbered = [
        ("LimitNOFILE", limits.nofile),
        ("LimitNPROC", limits.nproc),
        ("LimitCPU", limits.cpu),
        ("LimitFSIZE", limits.fsize),
        ("MemoryMax", limits.memory),
    ];
    for (directive, value) in numbered {
        if let Some(value) = value {
            line(format!("{directive}={value}"));
        }
    }
    line(String::new());
    line("[Install]".into());
    line("WantedBy=multi-user.target".into());
    unit
}

/// What `enter` leaves writable in the jail: `writable = true` [[dirs]] and the users' homes
/// (a home of "/" excepted: the root stays read-only).
fn writable_places(spec: &Spec) -> Vec<&JailPath> {
    let dirs = spec.dirs.iter().filter(|dir| dir.writable).map(|dir| &dir.path);
    let homes = spec.users.iter().filter(|user| !user.home.is_root()).map(|user| &user.home);
    let mut places: Vec<&JailPath> = dirs.chain(homes).collect();
    places.sort();
    places.dedup();
    places
}

/// `[[mounts]]` as directives: bind mounts (read-only or not), tmpfs, and the API file
/// systems (/proc, /sys, /dev) when the Jailfile wants proc or sysfs.
fn mount_directives(spec: &Spec) -> Vec<String> {
    let mut directives = Vec::new();
    directives.push(format!("MountAPIVFS={}", if mounts_api_file_systems(spec) { "yes" } else { "no" }));
    for mount in &spec.mounts {
        let target = mount.target.as_str();
        match mount.kind {
            MountKind::Bind => {
                let Some(source) = &mount.source else { continue };
                let directive = if mount.readonly { "BindReadOnlyPaths" } else { "BindPaths" };
                directives.push(format!("{directive}={}", quoted_value(&format!("{}:{target}", source.display()))));
            }
            MountKind::Tmpfs => {
                let mut options: Vec<String> = Vec::new();
                if let Some(mode) = mount.mode {
                    options.push(format!("mode={mode:04o}"));
                }
                if let Some(size) = mount.size {
                    options.push(format!("size={size}"));
                }
                options.extend(mount.options.iter().cloned());
                let spec =
                    if options.is_empty() { target.to_owned() } else { format!("{target}:{}", options.join(",")) };
                directives.push(format!("TemporaryFileSystem={}", quoted_value(&spec)));
            }
            // API file systems: MountAPIVFS=yes above gives /proc, /sys and /dev (with devpts).
            MountKind::Proc | MountKind::Sysfs | MountKind::Devpts | MountKind::Mqueue => {}
        }
    }
    directives
}

/// `[enter] dev` and `devices`. PrivateDevices=yes is systemd's minimal /dev (null, zero, full,
/// random, urandom, tty, ptmx, pts, shm), as `dev = "minimal"`; each other declared device is
/// bound into it and let through the device cgroup (DeviceAllow=), as `enter` binds it onto its
/// tmpfs. With `dev = "none"` the jail's /dev on disk is the unit's, unless MountAPIVFS=yes
/// would bind the host's /dev over it: then the private one stands in, with the same devices.
fn device_directives(spec: &Spec) -> Vec<String> {
    let api_vfs = mounts_api_file_systems(spec);
    let private = spec.enter.minimal_dev || api_vfs;
    let mut directives = Vec::new();
    if private {
        if !spec.enter.minimal_dev {
            directives.push(
                "# dev = \"none\": MountAPIVFS=yes would bind the host's /dev, a private one stands in".to_owned(),
            );
        }
        directives.push("PrivateDevices=yes".to_owned());
    } else {
        // The jail's own /dev on disk; only its declared nodes (and the harmless ones) open.
        directives.push("DevicePolicy=closed".to_owned());
    }
    let minimal_has = |path: &str| PRIVATE_DEVICES.contains(&path);
    for device in spec.devices.iter().filter(|device| !minimal_has(device.path.as_str())) {
        let path = quoted_value(device.path.as_str());
        if private {
            directives.push(format!("BindPaths={path}"));
        }
        directives.push(format!("DeviceAllow={path} rw"));
    }
    directives
}

/// The nodes PrivateDevices=yes (and DevicePolicy=closed) already give a unit.
const PRIVATE_DEVICES: &[&str] =
    &["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx"];

/// Whether a mount wish asks for proc, sysfs, devpts or mqueue, which systemd has only as
/// MountAPIVFS=yes.
fn mounts_api_file_systems(spec: &Spec) -> bool {
    spec.mounts.iter().any(|mount| !matches!(mount.kind, MountKind::Bind | MountKind::Tmpfs))
}

/// The Jailfile's namespaces as the sandbox options systemd has for them.
fn namespace_directives(spec: &Spec) -> Vec<String> {
    let enter = &spec.enter;
    let has = |namespace: Namespace| enter.namespaces.contains(&namespace);
    let yes_no = |flag: bool| if flag { "yes" } else { "no" };
    let mut directives = vec![
        format!("PrivateNetwork={}", yes_no(has(Namespace::Net) && enter.network == NetworkMode::None)),
        format!("PrivateUsers={}", yes_no(has(Namespace::User))),
        format!("PrivateIPC={}", yes_no(has(Namespace::Ipc))),
        format!("ProtectHostname={}", yes_no(has(Namespace::Uts))),
    ];
    if has(Namespace::Pid) {
        // systemd 252 has no private PID namespace for a service (PrivatePIDs= came in 257).
        directives.push("# pid namespace: not available as a unit directive before systemd 257 (PrivatePIDs=)".into());
    }
    if let (true, Some(hostname)) = (has(Namespace::Uts), &enter.hostname) {
        directives.push(format!("# hostname {hostname}: systemd keeps the host's name under ProtectHostname="));
    }
    directives
}

/// A command-line word as ExecStart= reads it back: bare when plain, else in double quotes with
/// `\` and `"` escaped; `%` (specifiers) and `$` (variable expansion) doubled to stay literal.
pub fn quoted(word: &str) -> String {
    quote(word, true)
}

/// A word of a list setting (Environment=, BindPaths=, TemporaryFileSystem=): quoted like a
/// command word, but `$` is not special there.
fn quoted_value(word: &str) -> String {
    quote(word, false)
}

/// A path setting (RootDirectory=, WorkingDirectory=) takes the rest of the line as it is:
/// only specifiers are expanded.
fn literal_path(path: &str) -> String {
    path.replace('%', "%%")
}

fn quote(word: &str, dollar_expands: bool) -> String {
    let plain = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:=,@".contains(c));
    if plain {
        return word.to_owned();
    }
    let mut text = String::with_capacity(word.len() + 2);
    text.push('"');
    for c in word.chars() {
        match c {
            '\\' => text.push_str("\\\\"),
            '"' => text.push_str("\\\""),
            '\n' => text.push_str("\\n"),
            '\t' => text.push_str("\\t"),
            '%' => text.push_str("%%"),
            '$' if dollar_expands => text.push_str("$$"),
            c if c.is_control() => {
                let _ = write!(text, "\\x{:02x}", c as u32);
            }
            c => text.push(c),
        }
    }
    text.push('"');
    text
}

#[cfg(test)]
mod tests {
    use super::{device_directives, quoted, quoted_value};
    use crate::host::HostFs;
    use crate::spec::{DeviceSpec, Spec};
    use crate::tree::JailPath;

    /// A Spec of `text` with /dev/null and an extra device declared (pushed: the host need not
    /// have it).
    fn spec_with_devices(text: &str) -> Spec {
        let mut spec = crate::spec::from_text(
            std::path::Path::new("Jailfile.toml"),
            format!("root = \"/srv/jails/unit\"\n{text}"),
            None,
            &HostFs::real(),
        )
        .expect("a valid Jailfile");
        for path in ["/dev/null", "/dev/net/tun"] {
            spec.devices.push(DeviceSpec {
                key: "devices[0]".into(),
                path: JailPath::parse(path).expect("a valid jail path"),
                allow_unsafe: true,
                mode: None,
                owner: 0,
                group: 0,
            });
        }
        spec
    }

    #[test]
    fn the_minimal_dev_is_private_devices_with_the_extra_devices_bound_and_allowed() {
        let minimal = spec_with_devices("");
        assert_eq!(
            device_directives(&minimal),
            ["PrivateDevices=yes", "BindPaths=/dev/net/tun", "DeviceAllow=/dev/net/tun rw"]
        );
        // dev = "none": the jail's /dev on disk, only its declared nodes let through...
        let none = spec_with_devices("[enter]\ndev = \"none\"\n");
        assert_eq!(device_directives(&none), ["DevicePolicy=closed", "DeviceAllow=/dev/net/tun rw"]);
        // ...unless MountAPIVFS=yes would bind the host's /dev over it.
        let with_proc = spec_with_devices("[[mounts]]\nkind = \"proc\"\ntarget = \"/proc\"\n[enter]\ndev = \"none\"\n");
        let directives = device_directives(&with_proc);
        assert!(directives[0].starts_with("# dev = \"none\": MountAPIVFS=yes"), "{directives:?}");
        assert_eq!(directives[1..], ["PrivateDevices=yes", "BindPaths=/dev/net/tun", "DeviceAllow=/dev/net/tun rw"]);
    }

    #[test]
    fn words_with_spaces_quotes_specifiers_and_variables_stay_literal() {
        assert_eq!(quoted("/usr/bin/python3"), "/usr/bin/python3");
        assert_eq!(quoted("import ssl, sys; print(sys.version)"), "\"import ssl, sys; print(sys.version)\"");
        assert_eq!(quoted("say \"hi\" \\ 100% $HOME"), "\"say \\\"hi\\\" \\\\ 100%% $$HOME\"");
        assert_eq!(quoted(""), "\"\"");
        assert_eq!(quoted_value("HOME=$HOME 100%"), "\"HOME=$HOME 100%%\"");
    }
}
