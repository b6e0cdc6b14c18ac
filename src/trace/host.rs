//! Which paths a trace may suggest: judged on the host by jailprov itself, never by the jail.
//!
//! The paths come from a jailed program, which may name anything it likes in the hope that the
//! suggestion copies a secret of the host into its jail. So a path is suggested only when all of
//! this holds, for the path as written (lexically normalised) and for what it resolves to on the
//! host (a host symlink into `/etc/shadow` counts as `/etc/shadow`):
//!
//! - it is under none of [`NEVER_UNDER`] (kernel and runtime file systems, scratch space, homes)
//!   nor the caller's `$HOME`;
//! - it is none of [`DENIED`] nor under one (shadow and gshadow, sudoers, root's home, private
//!   keys, the ssh host keys, backups of those), nor starts with one of [`DENIED_PREFIXES`];
//! - it exists on the host, is a regular file or a directory, and is readable by others (mode
//!   `o+r`): what any local user could read anyway, never a file only root may read.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::HostKind;

/// Paths under these are never suggested: what the kernel or the jail's mounts provide, scratch
/// space, and homes; each with what to declare instead.
pub const NEVER_UNDER: &[(&str, &str)] = &[
    ("/proc", "mount one: [[mounts]] kind = \"proc\""),
    ("/sys", "mount one: [[mounts]] kind = \"sysfs\""),
    ("/dev", "declare the node in devices = [...]"),
    ("/tmp", "declare a writable [[dirs]]"),
    ("/var/tmp", "declare a writable [[dirs]]"),
    ("/run", "declare a writable [[dirs]] or a [[mounts]] kind = \"tmpfs\""),
    ("/var/run", "declare a writable [[dirs]] or a [[mounts]] kind = \"tmpfs\""),
    ("/home", "declare [[users]] with their home"),
];

/// Never suggested, nor anything under them: the host's secrets.
pub const DENIED: &[&str] = crate::host::SECRETS;

/// Never suggested: paths starting with these (the ssh host keys, private and public).
pub const DENIED_PREFIXES: &[&str] = &["/etc/ssh/ssh_host_"];

/// Never suggested from the host: jailprov writes these itself from `[[users]]` and `[[groups]]`
/// (the host's would hand the jail every account name of the host).
pub const GENERATED: &[&str] = &["/etc/passwd", "/etc/group"];

/// `path` with `.`, `..` and repeated slashes resolved lexically; `None` unless absolute.
pub fn normalized(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// Why `path` (normalised) may never be suggested, whatever the host holds; `None` if it may.
pub fn refused(path: &str, home: Option<&str>) -> Option<String> {
    let under = |base: &str| path == base || is_under(path, base);
    if let Some((base, instead)) = NEVER_UNDER.iter().find(|(base, _)| under(base)) {
        return Some(format!("under {base}, never suggested; {instead}"));
    }
    if let Some(home) = home.filter(|home| home.len() > 1 && under(home.trim_end_matches('/'))) {
        return Some(format!("under the caller's home {home}, never suggested"));
    }
    if let Some(denied) = DENIED.iter().find(|denied| under(denied)) {
        return Some(format!("{denied} is on the deny list"));
    }
    if GENERATED.contains(&path) {
        return Some(
            "jailprov generates it from [[users]] and [[groups]]; declare the accounts the jail needs".to_owned(),
        );
    }
    if let Some(prefix) = DENIED_PREFIXES.iter().find(|prefix| path.starts_with(*prefix)) {
        return Some(format!("{prefix}* is on the deny list"));
    }
    None
}

fn is_under(path: &str, base: &str) -> bool {
    path.strip_prefix(base).is_some_and(|rest| rest.starts_with('/'))
}

/// What the host holds at `path` (normalised), or why it is not suggested.
pub fn judge(path: &str, home: Option<&str>) -> Result<HostKind, String> {
    if let Some(why) = refused(path, home) {
        return Err(why);
    }
    if std::fs::symlink_metadata(path).is_err() {
        return Err("missing on the host too".to_owned());
    }
    // What the host path means: its symlinks resolved as the host resolves them.
    let resolved = std::fs::canonicalize(path).map_err(|error| format!("cannot be resolved on the host: {error}"))?;
    let resolved_text = resolved.to_string_lossy();
    if let Some(why) = refused(&resolved_text, home) {
        return Err(format!("leads to {resolved_text} on the host, {why}"));
    }
    let metadata = std::fs::metadata(&resolved).map_err(|error| format!("cannot be read on the host: {error}"))?;
    if metadata.mode() & 0o004 == 0 {
        return Err(format!("not readable by others on the host (mode {:o})", metadata.mode() & 0o7777));
    }
    if metadata.is_dir() {
        return Ok(HostKind::Directory);
    }
    if !metadata.is_file() {
        return Err("neither a regular file nor a directory on the host".to_owned());
    }
    Ok(if starts_with_elf_magic(&resolved) { HostKind::Elf } else { HostKind::File })
}

/// What a directory holds on the host, for the reason of its entry: its few entries by name,
/// or how many there are.
pub fn contents(directory: &str) -> String {
    let Ok(listing) = std::fs::read_dir(directory) else { return "unreadable".to_owned() };
    let mut names: Vec<String> =
        listing.filter_map(|entry| entry.ok()).map(|entry| entry.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    match names.len() {
        0 => "empty".to_owned(),
        1 => format!("1 entry: {}", names[0]),
        count @ 2..=3 => format!("{count} entries: {}", names.join(", ")),
        count => format!("{count} entries"),
    }
}

fn starts_with_elf_magic(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .and_then(|mut file| file.read_exact(&mut magic))
        .is_ok_and(|()| magic == *b"\x7fELF")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_lexically() {
        assert_eq!(normalized("/usr//lib/./x/../libc.so.6").as_deref(), Some("/usr/lib/libc.so.6"));
        assert_eq!(normalized("/../../etc/shadow").as_deref(), Some("/etc/shadow"));
        assert_eq!(normalized("lib/x"), None);
    }

    #[test]
    fn secrets_kernel_file_systems_scratch_and_homes_are_never_suggested() {
        for path in [
            "/etc/shadow",
            "/etc/gshadow",
            "/etc/sudoers.d/admins",
            "/root/.ssh/id_ed25519",
            "/etc/ssh/ssh_host_ed25519_key",
            "/etc/ssh/ssh_host_rsa_key.pub",
            "/proc/self/environ",
            "/sys/kernel",
            "/dev/sda",
            "/tmp/x",
            "/run/user/1000/bus",
            "/home/alice/.bashrc",
            "/srv/me/notes",
            "/etc/passwd",
        ] {
            assert!(refused(path, Some("/srv/me")).is_some(), "{path} must be refused");
        }
        for path in ["/usr/lib/libc.so.6", "/etc/ssh/ssh_config", "/etc/hosts", "/tmpfoo", "/etc/shadowsocks"] {
            assert_eq!(refused(path, Some("/srv/me")), None, "{path} may be suggested");
        }
    }

    /// A scratch directory whose paths trace may suggest: the checkout's target/ unless the
    /// checkout lies where trace never looks (a clone under /tmp or /root), else /var/lib.
    fn suggestible_scratch() -> Option<tempfile::TempDir> {
        [Path::new(env!("CARGO_MANIFEST_DIR")).join("target"), std::path::PathBuf::from("/var/lib")]
            .into_iter()
            .filter(|base| refused(&base.to_string_lossy(), None).is_none())
            .find_map(|base| tempfile::Builder::new().prefix("trace-host").tempdir_in(base).ok())
    }

    #[test]
    fn the_host_decides_what_a_path_is_and_secrets_stay_out_even_through_a_link() {
        assert_eq!(judge("/etc/shadow", None), Err("/etc/shadow is on the deny list".to_owned()));
        assert_eq!(judge("/usr/lib/jailprov-no-such-file", None), Err("missing on the host too".to_owned()));
        assert_eq!(judge("/usr", None), Ok(HostKind::Directory));
        assert_eq!(judge("/proc/self/exe", None).map_err(|why| why.contains("/proc")), Err(true));
        let loader = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .expect("a dynamic loader on the host");
        assert_eq!(judge(loader, None), Ok(HostKind::Elf));
        // A link planted on the host (here, in a scratch directory outside the never-list
        // check) that leads to a secret is judged by where it leads.
        let Some(dir) = suggestible_scratch() else {
            eprintln!(
                "SKIPPED the link and mode half of the_host_decides_what_a_path_is...: this checkout \
                 lies where trace never suggests (under /tmp, /root, ...) and /var/lib is not writable \
                 (run as root)"
            );
            return;
        };
        let link = dir.path().join("innocent");
        #[allow(clippy::disallowed_methods)] // the test's own scratch directory, outside every jail
        std::os::unix::fs::symlink("/etc/shadow", &link).expect("symlink");
        let why = judge(&link.to_string_lossy(), None).expect_err("a link to /etc/shadow");
        assert!(why.contains("/etc/shadow"), "{why}");
        // A file only its owner may read stays out, wherever it is.
        let private = dir.path().join("private.key");
        #[allow(clippy::disallowed_methods)] // the test's own scratch directory, outside every jail
        std::fs::write(&private, "secret").expect("write");
        #[allow(clippy::disallowed_methods)] // the test's own scratch directory, outside every jail
        std::fs::set_permissions(&private, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
        let why = judge(&private.to_string_lossy(), None).expect_err("mode 0600");
        assert_eq!(why, "not readable by others on the host (mode 600)");
    }
}
