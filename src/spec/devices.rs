//! `[[devices]]`: only device nodes that cannot reach the host's memory, disks, consoles or
//! kernel pass without `allow_unsafe_device`, judged by the host node's major:minor.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use toml::Spanned;

use super::users::Owners;
use super::{Attributes, DeviceSpec, Validator};
use crate::diagnostics::Problem;
use crate::jailfile::DeviceEntry;

/// Device nodes that hand the host's memory or I/O ports to the jail, refused by name even
/// where the host lacks them.
const UNSAFE_CHARACTER_DEVICES: &[&str] = &["/dev/mem", "/dev/kmem", "/dev/port"];

/// The only character devices a jail gets without `allow_unsafe_device`, by the host node's
/// major:minor: a node named /dev/null that is really something else does not pass.
const SAFE_CHARACTER_DEVICES: &[(u64, u64, &str)] = &[
    (1, 3, "/dev/null"),
    (1, 5, "/dev/zero"),
    (1, 7, "/dev/full"),
    (1, 8, "/dev/random"),
    (1, 9, "/dev/urandom"),
    (5, 0, "/dev/tty"),
    (5, 2, "/dev/ptmx"),
];

impl Validator<'_> {
    pub(super) fn devices(&mut self, devices: &[Spanned<DeviceEntry>], owners: &Owners) -> Vec<DeviceSpec> {
        let mut result = Vec::new();
        for (index, entry) in devices.iter().enumerate() {
            let key = format!("devices[{index}]");
            let (path_value, allow_unsafe, attributes) = match entry.get_ref() {
                DeviceEntry::Path(path) => (Spanned::new(entry.span(), path.clone()), false, Attributes::default()),
                DeviceEntry::Detailed(table) => {
                    let attributes =
                        self.attributes(&key, table.mode.as_ref(), table.owner.as_ref(), table.group.as_ref(), owners);
                    (table.path.clone(), table.allow_unsafe_device, attributes)
                }
            };
            let Some(path) = self.jail_path(&key, &path_value) else { continue };
            if UNSAFE_CHARACTER_DEVICES.contains(&path.as_str()) && !allow_unsafe {
                self.report(unsafe_device_problem(&key, &path_value, "the host's memory or I/O ports".to_owned()));
                continue;
            }
            let Some(metadata) = self.host.symlink_metadata(Path::new(path.as_str())).ok() else {
                self.report(Problem::at(&key, &path_value, "no such device on the host"));
                continue;
            };
            let file_type = metadata.file_type();
            if !file_type.is_char_device() && !file_type.is_block_device() {
                self.report(Problem::at(&key, &path_value, "not a device node on the host"));
                continue;
            }
            if let Some(reason) = unsafe_device_reason(file_type.is_block_device(), metadata.rdev()) {
                if !allow_unsafe {
                    self.report(unsafe_device_problem(&key, &path_value, reason));
                    continue;
                }
            }
            result.push(DeviceSpec {
                key,
                path,
                allow_unsafe,
                mode: attributes.mode,
                owner: attributes.owner.unwrap_or(0),
                group: attributes.group.unwrap_or(0),
            });
        }
        result
    }
}

fn unsafe_device_problem(key: &str, path: &Spanned<String>, reason: String) -> Problem {
    let safe: Vec<&str> = SAFE_CHARACTER_DEVICES.iter().map(|(_, _, name)| *name).collect();
    Problem::at(key, path, format!("this device gives the jail {reason}")).with_help(format!(
        "only {} pass without permission; if you mean it, write {{ path = {:?}, allow_unsafe_device = true }}",
        safe.join(", "),
        path.get_ref()
    ))
}

/// Why a host device node (block or character, with its rdev) is unsafe in a jail; None for the
/// few harmless character devices.
fn unsafe_device_reason(block: bool, rdev: u64) -> Option<String> {
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    if block {
        return Some(format!("the host's disk (block device {major}:{minor}) to read and write directly"));
    }
    if SAFE_CHARACTER_DEVICES.iter().any(|(safe_major, safe_minor, _)| (*safe_major, *safe_minor) == (major, minor)) {
        return None;
    }
    let what = match (major, minor) {
        (1, 1 | 2 | 4) => "the host's memory or I/O ports",
        (1, 11) => "the kernel log, to read and to write lines into",
        (10, 229) => "FUSE, to serve file systems to the host's kernel",
        (10, 223) => "uinput, to create input devices that type into the host's sessions",
        (4, 0..=63) | (7, _) => "a virtual console of the host, to read and inject keystrokes",
        (4, _) => "a serial port of the host",
        (21, _) => "SCSI generic: raw commands to the host's disks",
        (202, _) => "the CPUs' model-specific registers",
        (203, _) => "the CPUs' cpuid interface",
        _ => "a character device outside the small set of harmless ones",
    };
    Some(format!("{what} (character device {major}:{minor})"))
}
