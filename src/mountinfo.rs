//! The host's mount table (/proc/self/mountinfo): which jail paths have something mounted on them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::tree::JailPath;

/// One line of mountinfo, the fields jailprov looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPoint {
    /// Where it is mounted (field 5, unescaped).
    pub point: PathBuf,
    /// Mounted read-only (the per-mount options of field 6 start with `ro`).
    pub readonly: bool,
    /// The file system type (after the ` - ` separator).
    pub fstype: String,
}

/// The mounts at or below `root`, as jail paths (the root itself is `/`), in mount order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JailMounts {
    pub mounts: Vec<(JailPath, MountPoint)>,
}

impl JailMounts {
    /// Reads the calling process's mount table and keeps what lies under `root`.
    pub fn read(root: &Path) -> Result<JailMounts> {
        let text = std::fs::read_to_string("/proc/self/mountinfo").context("cannot read /proc/self/mountinfo")?;
        // mountinfo names mount points by their real path: compare with the root's.
        let root = std::fs::canonicalize(root).with_context(|| format!("cannot resolve {}", root.display()))?;
        Ok(JailMounts::under(&parse(&text), &root))
    }

    pub fn under(points: &[MountPoint], root: &Path) -> JailMounts {
        let mounts = points
            .iter()
            .filter_map(|point| {
                let relative = point.point.strip_prefix(root).ok()?;
                let path = JailPath::from_host(&Path::new("/").join(relative)).ok()?;
                Some((path, point.clone()))
            })
            .collect();
        JailMounts { mounts }
    }

    /// The topmost mount at exactly `path` (later lines stack on earlier ones).
    pub fn at(&self, path: &JailPath) -> Option<&MountPoint> {
        self.mounts.iter().rev().find(|(at, _)| at == path).map(|(_, point)| point)
    }

    /// The mount point `path` lies strictly below, if any (other than the jail root itself).
    pub fn covering(&self, path: &JailPath) -> Option<&JailPath> {
        self.mounts.iter().map(|(at, _)| at).find(|at| !at.is_root() && path.starts_with(at) && *at != path)
    }

    pub fn is_empty(&self) -> bool {
        self.mounts.iter().all(|(at, _)| at.is_root())
    }
}

/// Parses mountinfo text; malformed lines are skipped (the kernel writes it, one mount a line).
pub fn parse(text: &str) -> Vec<MountPoint> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let point = unescape(fields.get(4)?);
            let readonly = fields.get(5)?.split(',').any(|option| option == "ro");
            let fstype = after.split(' ').next()?.to_owned();
            Some(MountPoint { point: PathBuf::from(point), readonly, fstype })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let octal = bytes.get(index + 1..index + 4).filter(|digits| digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match (bytes[index], octal) {
            (b'\\', Some(digits)) => {
                let value = digits.iter().fold(0u32, |value, digit| value * 8 + u32::from(digit - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                index += 4;
            }
            (byte, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:25 / /srv/jail/proc rw,nosuid - proc proc rw
31 22 254:0 /srv/data /srv/jail/data ro,nosuid,nodev shared:1 - ext4 /dev/vda rw
32 22 0:40 / /srv/jail/with\\040space rw - tmpfs tmpfs rw,size=1024k
33 22 0:41 / /srv/jail2/other rw - tmpfs tmpfs rw
";

    fn jp(path: &str) -> JailPath {
        JailPath::parse(path).expect("valid")
    }

    #[test]
    fn mounts_under_the_root_become_jail_paths() {
        let mounts = JailMounts::under(&parse(SAMPLE), Path::new("/srv/jail"));
        let paths: Vec<String> = mounts.mounts.iter().map(|(path, _)| path.to_string()).collect();
        assert_eq!(paths, ["/proc", "/data", "/with space"], "/srv/jail2 is another jail");
        let data = mounts.at(&jp("/data")).expect("mounted");
        assert!(data.readonly);
        assert_eq!(data.fstype, "ext4");
        assert!(!mounts.at(&jp("/with space")).expect("mounted").readonly);
        assert_eq!(mounts.covering(&jp("/data/file")), Some(&jp("/data")));
        assert_eq!(mounts.covering(&jp("/data")), None, "a mount point is not below itself");
        assert_eq!(mounts.covering(&jp("/database")), None, "a sibling with a common prefix is not below");
    }

    #[test]
    fn a_root_without_mounts_is_empty() {
        assert!(JailMounts::under(&parse(SAMPLE), Path::new("/elsewhere")).is_empty());
    }
}
