//! `jailprov export`: hands the locked jail to other engines, as an OCI image (layout,
//! oci-archive, docker-archive) built from the desired tree and the lock, or a systemd unit
//! running the applied jail. Writes only its --output, atomically, never into a jail.
//!
//! Nothing here needs an applied jail or root: file contents are read from their host sources
//! (as apply would copy them), owners and modes come from the desired tree, and the tar records
//! them as numbers.
#![allow(clippy::disallowed_methods)] // writes the export's own output, outside every jail

pub mod layers;
pub mod oci;
pub mod systemd;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use rustc_hash::FxHashMap as HashMap;

use crate::desired::DesiredTree;
use crate::host::HostFs;
use crate::jailfile::MountKind;
use crate::spec::Spec;
use crate::state::lock::Lock;

/// What `--format` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OciLayout,
    OciArchive,
    DockerArchive,
}

/// Everything an image is made from: the desired tree apply would write, and the lock that
/// records it (its packages split the layers; its digest is a label).
pub struct Image<'a> {
    pub spec: &'a Spec,
    pub desired: &'a DesiredTree,
    pub lock: &'a Lock,
    /// "blake3:…" of the normalized Jailfile, as the lock records it.
    pub jailfile_digest: String,
    /// "sha256:…" of the lock file's bytes.
    pub lock_digest: String,
    pub tag: String,
}

/// What was written, for the command to report.
pub struct Exported {
    pub manifest_digest: String,
    pub layers: Vec<(String, String, u64)>,
}

/// "sha256:<hex>" of some bytes (the lock's digest label).
pub fn sha256_text(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", layers::hex(&sha2::Sha256::digest(bytes)))
}

/// The tar mtime of every entry: SOURCE_DATE_EPOCH when set (the reproducible-builds
/// convention), else the epoch; never the time of the export.
pub fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(_) => Ok(0),
        Ok(text) => text.trim().parse().with_context(|| {
            format!("SOURCE_DATE_EPOCH={text:?} is not a number of seconds since 1970; unset it or fix it")
        }),
    }
}

/// The jail's name: the root directory's name, else the Jailfile's directory's, in the
/// characters image references and unit names allow.
pub fn jail_name(spec: &Spec) -> String {
    let from = spec.root.as_deref().or_else(|| spec.jailfile.parent()).and_then(Path::file_name);
    let raw = from.map_or_else(|| "jail".to_owned(), |name| name.to_string_lossy().to_lowercase());
    let cleaned: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' }).collect();
    let trimmed = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        "jail".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// Writes the image in `format` at `output`, atomically: built in a fresh directory beside it,
/// then renamed into place. A symlink planted at `output` is replaced, never followed.
pub fn write_image(image: &Image, host: &HostFs, format: Format, output: &Path) -> Result<Exported> {
    let mtime = source_date_epoch()?;
    let staging = Staging::beside(output)?;
    let written = build_layout(image, host, &staging.path, mtime)?;
    match format {
        Format::OciLayout => staging.place_as_layout(output)?,
        Format::OciArchive | Format::DockerArchive => {
            if format == Format::DockerArchive {
                let repo_tag = format!("jailprov/{}:{}", jail_name(image.spec), image.tag);
                oci::add_docker_manifest(&staging.path, &written, &repo_tag)?;
            }
            let (file, temporary) = crate::beside::create_temp_beside(output, 0o644)?;
            if let Err(error) = oci::tar_layout(&staging.path, file, mtime) {
                let _ = fs::remove_file(&temporary);
                return Err(error.context(format!("cannot write {}", output.display())));
            }
            crate::beside::rename_into_place(&temporary, output)?;
        }
    }
    Ok(Exported {
        manifest_digest: format!("sha256:{}", written.manifest.hex),
        layers: written
            .layers
            .iter()
            .map(|layer| (layer.group.describe(), format!("sha256:{}", layer.blob.hex), layer.blob.size))
            .collect(),
    })
}

/// Writes the layers (in parallel: each streams through its own gzip) and the image files.
fn build_layout(image: &Image, host: &HostFs, layout: &Path, mtime: u64) -> Result<oci::WrittenImage> {
    let blobs = layout.join("blobs/sha256");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&blobs)
        .with_context(|| format!("cannot create {}", blobs.display()))?;
    // "package version" -> the package: the version changes the bytes, never the grouping.
    let packages: HashMap<&str, &str> = image
        .lock
        .entries
        .iter()
        .filter_map(|entry| {
            let package = entry.package.as_deref()?;
            Some((entry.path.as_str(), package.split(' ').next().unwrap_or(package)))
        })
        .collect();
    let contents = layers::split(image.desired, &packages);
    let written: Vec<layers::WrittenLayer> =
        contents.par_iter().map(|layer| layers::write_layer(layer, host, &blobs, mtime)).collect::<Result<_>>()?;
    oci::write_layout(layout, written, &image_facts(image, mtime))
}

/// The config's run-time fields and labels, from `[enter]`, `[[mounts]]` and the digests.
fn image_facts(image: &Image, mtime: u64) -> oci::ImageFacts {
    let spec = image.spec;
    let enter = &spec.enter;
    let name = jail_name(spec);
    let created = rfc3339(mtime);
    let jailfile_name = spec.jailfile.file_name().map_or_else(|| "Jailfile".into(), |name| name.to_string_lossy());
    let labels = BTreeMap::from([
        ("org.opencontainers.image.title".to_owned(), name.clone()),
        ("org.opencontainers.image.created".to_owned(), created.clone()),
        ("org.opencontainers.image.version".to_owned(), image.tag.clone()),
        (
            "org.opencontainers.image.description".to_owned(),
            format!("jailprov jail {name}, exported from {jailfile_name} and its lock"),
        ),
        ("io.jailprov.jailfile.digest".to_owned(), image.jailfile_digest.clone()),
        ("io.jailprov.lock.digest".to_owned(), image.lock_digest.clone()),
    ]);
    // The first word runs; the rest are default arguments a `run IMAGE ARGS...` replaces.
    let (entrypoint, cmd) = match enter.command.split_first() {
        Some((first, rest)) => (vec![first.clone()], rest.to_vec()),
        None => (Vec::new(), Vec::new()),
    };
    let mut volumes: Vec<String> = spec
        .mounts
        .iter()
        .filter(|mount| matches!(mount.kind, MountKind::Bind | MountKind::Tmpfs))
        .map(|mount| mount.target.as_str().to_owned())
        .collect();
    volumes.sort();
    volumes.dedup();
    oci::ImageFacts {
        name,
        tag: image.tag.clone(),
        created,
        entrypoint,
        cmd,
        user: format!("{}:{}", enter.uid, enter.gid),
        env: enter.env.iter().map(|(variable, value)| format!("{variable}={value}")).collect(),
        working_dir: enter.workdir.as_ref().map(|workdir| workdir.as_str().to_owned()),
        volumes,
        labels,
    }
}

/// Seconds since 1970 as an RFC 3339 UTC time (days to a civil date: Howard Hinnant's algorithm);
/// also how `jailprov status` shows the last apply.
pub fn rfc3339(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let second_of_day = seconds % 86_400;
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// A fresh directory beside the output, removed unless placed.
struct Staging {
    path: PathBuf,
    placed: bool,
}

impl Staging {
    fn beside(output: &Path) -> Result<Staging> {
        let name = output.file_name().with_context(|| format!("--output {} has no file name", output.display()))?;
        let parent = match output.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        for attempt in 0..16u32 {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            let path =
                parent.join(format!(".{}.export-{}-{nanos:x}-{attempt}", name.to_string_lossy(), std::process::id()));
            // Not recursive: an existing name (or a symlink planted there) is an error, never entered.
            match fs::DirBuilder::new().mode(0o755).create(&path) {
                Ok(()) => return Ok(Staging { path, placed: false }),
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(error) => {
                    return Err(error).with_context(|| format!("cannot create a directory beside {}", output.display()))
                }
            }
        }
        bail!("cannot find a free temporary name beside {}", output.display())
    }

    /// Renames the layout to `output`. An earlier layout there is swapped out atomically and
    /// removed; anything else there is refused (a symlink included: it is never followed).
    fn place_as_layout(mut self, output: &Path) -> Result<()> {
        match fs::symlink_metadata(output) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                fs::rename(&self.path, output).with_context(|| format!("cannot move the layout to {}", output.display()))?;
            }
            Err(error) => return Err(error).with_context(|| format!("cannot inspect {}", output.display())),
            Ok(metadata) if metadata.is_dir() && output.join("oci-layout").is_file() => {
                nix::fcntl::renameat2(
                    nix::fcntl::AT_FDCWD,
                    &self.path,
                    nix::fcntl::AT_FDCWD,
                    output,
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                )
                .with_context(|| format!("cannot swap the new layout into {}", output.display()))?;
                // The staging name now holds the old layout: dropping self removes it.
                return Ok(());
            }
            Ok(_) => bail!(
                "--output {} exists and is not an OCI layout: remove it or name another path (a layout is a new directory)",
                output.display()
            ),
        }
        self.placed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.placed {
            // remove_dir_all never follows symlinks inside what it removes.
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Writes the systemd unit into the directory `output` (created if missing) and returns its path.
pub fn write_unit(spec: &Spec, root: &Path, output: &Path) -> Result<PathBuf> {
    match fs::symlink_metadata(output) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => fs::DirBuilder::new()
            .mode(0o755)
            .create(output)
            .with_context(|| format!("cannot create the directory {}", output.display()))?,
        Err(error) => return Err(error).with_context(|| format!("cannot inspect {}", output.display())),
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => bail!(
            "--output {} is not a directory: with --format systemd it names the directory the unit is written into",
            output.display()
        ),
    }
    let name = jail_name(spec);
    let path = output.join(systemd::unit_name(&name));
    crate::beside::write_atomically(&path, systemd::unit_text(spec, root, &name).as_bytes(), 0o644, true)
        .with_context(|| format!("cannot write the unit {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn source_date_epoch_becomes_an_rfc3339_time() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
