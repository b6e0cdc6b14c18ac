//! The OCI image around the layers (image-spec 1.1, oci-spec's types): config, manifest, index
//! and oci-layout in a layout directory; and the layout as one tar (oci-archive), with Docker's
//! manifest.json beside it (docker-archive, what `docker save` writes since Docker 25).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, HistoryBuilder, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, RootFsBuilder, Sha256Digest,
};
use serde::Serialize;

use super::layers::{create_blob_file, Blob, WrittenLayer};

/// The index annotation that names a manifest by its tag (what `oci:DIR:TAG` looks up).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What the image's config says beyond its layers.
pub struct ImageFacts {
    /// The jail's name (title label, docker repository).
    pub name: String,
    pub tag: String,
    /// RFC 3339, from SOURCE_DATE_EPOCH or the epoch: never the time of the export.
    pub created: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// "uid:gid".
    pub user: String,
    /// "NAME=value", sorted.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// Mount targets: the runtime mounts them.
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// The image written into a layout directory.
pub struct WrittenImage {
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<WrittenLayer>,
}

/// JSON with its object keys sorted: oci-spec keeps labels and annotations in HashMaps, whose
/// order changes from run to run; going through serde_json's Value (a BTreeMap) fixes it.
fn canonical_json<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>> {
    let value = serde_json::to_value(value).with_context(|| format!("cannot serialize the {what}"))?;
    serde_json::to_vec(&value).with_context(|| format!("cannot serialize the {what}"))
}

/// Writes `bytes` as a blob of the layout and returns its digest and size.
fn write_blob(blobs: &Path, bytes: &[u8]) -> Result<Blob> {
    use sha2::Digest as _;
    let hex = super::layers::hex(&sha2::Sha256::digest(bytes));
    let (mut file, path) = create_blob_file(blobs, &hex)?;
    file.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Blob { hex, size: bytes.len() as u64 })
}

fn descriptor(media_type: MediaType, blob: &Blob) -> Result<Descriptor> {
    let digest: Sha256Digest = blob.hex.parse().context("a sha256 digest")?;
    Ok(Descriptor::new(media_type, blob.size, digest))
}

/// The architecture as Go (and so OCI) names it.
fn architecture() -> Arch {
    match std::env::consts::ARCH {
        "x86_64" => Arch::Amd64,
        "aarch64" => Arch::ARM64,
        "x86" => Arch::i386,
        other => Arch::from(other),
    }
}

/// Writes the config, manifest, index.json and oci-layout of an image whose layers are already
/// in `layout`/blobs/sha256.
pub fn write_layout(layout: &Path, layers: Vec<WrittenLayer>, facts: &ImageFacts) -> Result<WrittenImage> {
    let blobs = layout.join("blobs/sha256");
    let optional = |list: &[String]| (!list.is_empty()).then(|| list.to_vec());
    let mut config = ConfigBuilder::default()
        .user(facts.user.clone())
        .env(facts.env.clone())
        .labels(facts.labels.iter().map(|(key, value)| (key.clone(), value.clone())).collect::<HashMap<_, _>>());
    if let Some(entrypoint) = optional(&facts.entrypoint) {
        config = config.entrypoint(entrypoint);
    }
    if let Some(cmd) = optional(&facts.cmd) {
        config = config.cmd(cmd);
    }
    if let Some(volumes) = optional(&facts.volumes) {
        config = config.volumes(volumes);
    }
    if let Some(working_dir) = &facts.working_dir {
        config = config.working_dir(working_dir.clone());
    }
    let history = layers
        .iter()
        .map(|layer| {
            HistoryBuilder::default().created(facts.created.clone()).created_by(layer.group.describe()).build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(layers.iter().map(|layer| format!("sha256:{}", layer.diff_id_hex)).collect::<Vec<_>>())
        .build()?;
    let configuration = ImageConfigurationBuilder::default()
        .created(facts.created.clone())
        .architecture(architecture())
        .os(Os::Linux)
        .config(config.build()?)
        .rootfs(rootfs)
        .history(history)
        .build()?;
    let config_blob = write_blob(&blobs, &canonical_json(&configuration, "image config")?)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(MediaType::ImageConfig, &config_blob)?)
        .layers(
            layers
                .iter()
                .map(|layer| descriptor(MediaType::ImageLayerGzip, &layer.blob))
                .collect::<Result<Vec<_>>>()?,
        )
        .build()?;
    let manifest_blob = write_blob(&blobs, &canonical_json(&manifest, "image manifest")?)?;
    let manifest_descriptor = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(descriptor(MediaType::ImageManifest, &manifest_blob)?.digest().clone())
        .size(manifest_blob.size)
        .annotations(HashMap::from([(REF_NAME.to_owned(), facts.tag.clone())]))
        .build()?;
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_descriptor])
        .build()?;
    write_new_file(&layout.join("index.json"), &canonical_json(&index, "image index")?)?;
    let oci_layout = OciLayoutBuilder::default().image_layout_version("1.0.0").build()?;
    write_new_file(&layout.join("oci-layout"), &canonical_json(&oci_layout, "oci-layout")?)?;
    Ok(WrittenImage { manifest: manifest_blob, config: config_blob, layers })
}

fn write_new_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("a layout file has a directory")?;
    let name = path.file_name().context("a layout file has a name")?.to_string_lossy();
    let (mut file, path) = create_blob_file(dir, &name)?;
    file.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// One image of Docker's manifest.json (`docker load` reads it; the OCI files beside it are
/// for OCI tools).
#[derive(Serialize)]
struct DockerImage {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Adds Docker's manifest.json to a layout, making it a docker-archive once tarred.
pub fn add_docker_manifest(layout: &Path, image: &WrittenImage, repo_tag: &str) -> Result<()> {
    let manifest = [DockerImage {
        config: format!("blobs/sha256/{}", image.config.hex),
        repo_tags: vec![repo_tag.to_owned()],
        layers: image.layers.iter().map(|layer| format!("blobs/sha256/{}", layer.blob.hex)).collect(),
    }];
    write_new_file(&layout.join("manifest.json"), &canonical_json(&manifest, "docker manifest.json")?)
}

/// Tars a layout directory (only the files this export wrote, sorted, with fixed owners and
/// times) into `out`.
pub fn tar_layout(layout: &Path, out: std::fs::File, mtime: u64) -> Result<()> {
    let mut names: Vec<String> = Vec::new();
    for entry in
        std::fs::read_dir(layout.join("blobs/sha256")).with_context(|| format!("cannot list {}", layout.display()))?
    {
        let name = entry.with_context(|| format!("cannot list {}", layout.display()))?.file_name();
        names.push(format!("blobs/sha256/{}", name.to_string_lossy()));
    }
    for top in ["index.json", "oci-layout", "manifest.json"] {
        if layout.join(top).is_file() {
            names.push(top.to_owned());
        }
    }
    names.sort();
    let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, out));
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut header = fixed_header(tar::EntryType::Directory, 0o755, 0, mtime);
        tar.append_data(&mut header, dir, std::io::empty())?;
    }
    for name in names {
        let path = layout.join(&name);
        let file = std::fs::File::open(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let size = file.metadata().with_context(|| format!("cannot inspect {}", path.display()))?.len();
        let mut header = fixed_header(tar::EntryType::Regular, 0o644, size, mtime);
        tar.append_data(&mut header, &name, file).with_context(|| format!("cannot archive {}", path.display()))?;
    }
    let mut out = tar.into_inner().context("cannot finish the archive")?;
    out.flush().context("cannot write the archive")?;
    Ok(())
}

fn fixed_header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_size(size);
    header
}
