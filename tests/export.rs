//! `jailprov export`: OCI images that skopeo and umoci accept and that unpack to exactly the
//! applied jail (minus device nodes and mount points), byte-reproducible, sharing the C runtime
//! layer between jails; docker-archives skopeo loads; systemd units systemd-analyze accepts.
#![allow(clippy::disallowed_methods)] // tests build their fixtures and read outputs with plain fs calls

#[macro_use]
mod cli;

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use cli::prerequisites::{require, SKOPEO, SYSTEMD_ANALYZE, UMOCI};
use cli::{output, Run, Workspace};

fn example_text(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name).join("Jailfile.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// A workspace holding `text` as its Jailfile, with the lock written (`jailprov lock`).
fn locked(prefix: &str, text: &str) -> Workspace {
    let workspace = Workspace::new(prefix);
    workspace.write_jailfile(text);
    workspace.run("lock", &[]).ok("lock");
    workspace
}

fn export(workspace: &Workspace, format: &str, out: &Path) -> Run {
    let out = out.to_str().expect("UTF-8 temp path");
    workspace.run("export", &["--format", format, "--output", out])
}

fn run_tool(program: &str, args: &[&str]) -> Run {
    let mut command = Command::new(program);
    command.args(args);
    output(command)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

/// The manifest a layout's index.json names.
fn layout_manifest(layout: &Path) -> serde_json::Value {
    let index = json(&std::fs::read_to_string(layout.join("index.json")).expect("index.json"));
    let digest = index["manifests"][0]["digest"].as_str().expect("a manifest digest").to_owned();
    let blob = layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    json(&std::fs::read_to_string(blob).expect("the manifest blob"))
}

fn layer_digests(layout: &Path) -> Vec<String> {
    let manifest = layout_manifest(layout);
    let layers = manifest["layers"].as_array().expect("layers");
    layers.iter().map(|layer| layer["digest"].as_str().expect("digest").to_owned()).collect()
}

/// What one path is, as compared between the applied jail and the unpacked image.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File { blake3: String },
    Symlink { target: PathBuf },
}

#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// Every path under `root` but device nodes and the mount targets (and what is below them).
fn snapshot_tree(root: &Path, mount_targets: &[&str]) -> BTreeMap<String, Node> {
    let mut nodes = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.expect("walk");
        let relative = format!("/{}", entry.path().strip_prefix(root).expect("under root").display());
        if mount_targets.iter().any(|target| relative == *target || relative.starts_with(&format!("{target}/"))) {
            continue;
        }
        let metadata = entry.path().symlink_metadata().expect("lstat");
        let file_type = metadata.file_type();
        if file_type.is_char_device() || file_type.is_block_device() {
            continue;
        }
        let kind = if file_type.is_dir() {
            Kind::Dir
        } else if file_type.is_symlink() {
            Kind::Symlink { target: std::fs::read_link(entry.path()).expect("readlink") }
        } else {
            let bytes = std::fs::read(entry.path()).expect("read");
            Kind::File { blake3: blake3::hash(&bytes).to_hex().to_string() }
        };
        let mode = if file_type.is_symlink() { 0 } else { metadata.mode() & 0o7777 };
        nodes.insert(relative, Node { kind, mode, uid: metadata.uid(), gid: metadata.gid() });
    }
    nodes
}

/// A small Jailfile with what is hard to carry in a layer: a setuid file, a file owned by a
/// user, a directory with the sticky bit, symlinks (the usr-merge ones), a device node.
const TRICKY: &str = r#"
root = "/srv/jails/unused"
binaries = ["cat"]
devices = ["/dev/null"]

[[files]]
path = "/usr/local/bin/setuid-tool"
content = "kept\n"
mode = "4755"

[[dirs]]
path = "/tmp"
mode = "1777"

[[groups]]
name = "app"
gid = 1000

[[users]]
name = "app"
uid = 1000
gid = 1000
home = "/home/app"
shell = "/usr/bin/cat"

[[mounts]]
kind = "tmpfs"
target = "/tmp"
"#;

#[test]
fn an_exported_layout_passes_skopeo_and_unpacks_to_the_applied_jail() {
    need_root!("an_exported_layout_passes_skopeo_and_unpacks_to_the_applied_jail");
    require(&SKOPEO);
    require(&UMOCI);
    let cases = [
        ("seed-shell", example_text("seed-shell"), vec!["/proc", "/tmp"]),
        ("tricky", TRICKY.to_owned(), vec!["/tmp"]),
        ("python", example_text("python"), vec!["/tmp"]),
    ];
    for (name, text, mount_targets) in cases {
        let workspace = locked(&format!("jailprov-export-{name}-"), &text);
        workspace.apply();
        let layout = workspace.dir.join("image");
        export(&workspace, "oci-layout", &layout).ok("export oci-layout");
        let reference = format!("oci:{}:latest", layout.display());
        let inspected = json(&run_tool("skopeo", &["inspect", &reference]).ok("skopeo inspect").stdout);
        assert_eq!(inspected["Layers"].as_array().map(Vec::len), Some(layer_digests(&layout).len()), "{name}");
        let bundle = workspace.dir.join("bundle");
        let image = format!("{}:latest", layout.display());
        run_tool("umoci", &["unpack", "--image", &image, bundle.to_str().expect("UTF-8")]).ok("umoci unpack");
        let unpacked = snapshot_tree(&bundle.join("rootfs"), &mount_targets);
        let applied = snapshot_tree(&workspace.root, &mount_targets);
        assert!(applied.len() > 10, "{name}: the applied jail holds something: {applied:?}");
        let differences: Vec<String> = applied
            .keys()
            .chain(unpacked.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|path| applied.get(*path) != unpacked.get(*path))
            .map(|path| format!("{path}: applied {:?}, image {:?}", applied.get(path), unpacked.get(path)))
            .collect();
        assert!(differences.is_empty(), "{name}: the image differs from the applied jail:\n{}", differences.join("\n"));
        if name == "tricky" {
            assert_eq!(unpacked["/usr/local/bin/setuid-tool"].mode, 0o4755, "the setuid bit is kept");
            assert_eq!((unpacked["/home/app"].uid, unpacked["/home/app"].gid), (1000, 1000));
            assert!(!bundle.join("rootfs/dev/null").exists(), "device nodes are the runtime's");
            let config = &inspected;
            assert_eq!(config["Labels"]["org.opencontainers.image.title"], "jail");
        }
    }
}

#[test]
fn the_image_config_carries_enter_and_the_digests() {
    require(&SKOPEO);
    let workspace = locked("jailprov-export-config-", &example_text("python"));
    let layout = workspace.dir.join("image");
    export(&workspace, "oci-layout", &layout).ok("export");
    let reference = format!("oci:{}:latest", layout.display());
    let config = json(&run_tool("skopeo", &["inspect", "--config", &reference]).ok("skopeo inspect --config").stdout);
    let config = &config["config"];
    assert_eq!(config["User"], "1000:1000");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/usr/bin/python3"]));
    assert_eq!(config["Cmd"][0], "-c");
    assert_eq!(config["WorkingDir"], "/home/app");
    assert_eq!(config["Volumes"], serde_json::json!({"/tmp": {}}));
    assert!(config["Env"].as_array().expect("Env").contains(&serde_json::json!("PYTHONDONTWRITEBYTECODE=1")));
    let lock = std::fs::read(workspace.dir.join("Jailfile.lock")).expect("the lock");
    let lock_digest = {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(&lock);
        format!("sha256:{}", digest.iter().map(|byte| format!("{byte:02x}")).collect::<String>())
    };
    assert_eq!(config["Labels"]["io.jailprov.lock.digest"], lock_digest.as_str());
    assert!(config["Labels"]["io.jailprov.jailfile.digest"]
        .as_str()
        .is_some_and(|digest| digest.starts_with("blake3:")));
}

#[test]
fn two_exports_are_byte_identical() {
    let workspace = locked("jailprov-export-twice-", &example_text("seed-shell"));
    for format in ["oci-archive", "docker-archive"] {
        let first = workspace.dir.join(format!("first-{format}.tar"));
        let second = workspace.dir.join(format!("second-{format}.tar"));
        export(&workspace, format, &first).ok("first export");
        export(&workspace, format, &second).ok("second export");
        let (first, second) = (std::fs::read(&first).expect("first"), std::fs::read(&second).expect("second"));
        assert!(first.len() > 100_000, "{format}: the archive holds the jail ({} bytes)", first.len());
        assert!(first == second, "{format}: two exports of one Jailfile, lock and host differ");
    }
    let (first, second) = (workspace.dir.join("first-layout"), workspace.dir.join("second-layout"));
    export(&workspace, "oci-layout", &first).ok("first layout");
    export(&workspace, "oci-layout", &second).ok("second layout");
    assert_eq!(layout_manifest(&first), layout_manifest(&second));
    let index = |layout: &Path| std::fs::read(layout.join("index.json")).expect("index.json");
    assert_eq!(index(&first), index(&second), "the same manifest digest");
}

/// Every layer entry: sorted, parents first, numeric owners without names, the time of
/// SOURCE_DATE_EPOCH, and the config's creation time from it too.
#[test]
fn layers_have_sorted_entries_numeric_owners_and_the_source_date_epoch() {
    let workspace = locked("jailprov-export-epoch-", &example_text("seed-shell"));
    let layout = workspace.dir.join("image");
    let mut command = workspace.command("export", &["--format", "oci-layout", "--output"]);
    command.arg(&layout).env("SOURCE_DATE_EPOCH", "1700000000");
    output(command).ok("export with SOURCE_DATE_EPOCH");
    let manifest = layout_manifest(&layout);
    let config_digest = manifest["config"]["digest"].as_str().expect("config digest").trim_start_matches("sha256:");
    let config = json(&std::fs::read_to_string(layout.join("blobs/sha256").join(config_digest)).expect("config"));
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    let mut seen_paths = 0;
    let mut files_seen = std::collections::BTreeSet::new();
    let mut directories: BTreeMap<String, (u32, u64, u64)> = BTreeMap::new();
    for digest in layer_digests(&layout) {
        let blob =
            std::fs::File::open(layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))).expect("layer");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob));
        let mut previous = String::new();
        for entry in archive.entries().expect("a tar") {
            let entry = entry.expect("an entry");
            let header = entry.header();
            let path = entry.path().expect("path").to_string_lossy().trim_end_matches('/').to_owned();
            assert!(previous < path, "{digest}: {path} after {previous}: entries are sorted");
            assert_eq!(header.mtime().expect("mtime"), 1_700_000_000, "{path}");
            assert_eq!(header.username_bytes(), Some(&b""[..]), "{path}: no user name");
            assert_eq!(header.groupname_bytes(), Some(&b""[..]), "{path}: no group name");
            assert!(header.entry_type() != tar::EntryType::Char, "{path}: no device node");
            let attributes = (header.mode().expect("mode"), header.uid().expect("uid"), header.gid().expect("gid"));
            if header.entry_type() == tar::EntryType::Directory {
                let first = directories.entry(path.clone()).or_insert(attributes);
                assert_eq!(*first, attributes, "{path}: one mode and owner in every layer that has it");
            } else {
                assert!(files_seen.insert(path.clone()), "{path} is in two layers");
            }
            previous = path;
            seen_paths += 1;
        }
    }
    assert!(seen_paths > 30, "the layers hold the jail ({seen_paths} entries)");
}

#[test]
fn seed_shell_and_python_share_the_c_runtime_layer() {
    let shell = locked("jailprov-export-share-shell-", &example_text("seed-shell"));
    let python = locked("jailprov-export-share-python-", &example_text("python"));
    let (shell_layout, python_layout) = (shell.dir.join("image"), python.dir.join("image"));
    export(&shell, "oci-layout", &shell_layout).ok("export seed-shell");
    export(&python, "oci-layout", &python_layout).ok("export python");
    let (shell_layers, python_layers) = (layer_digests(&shell_layout), layer_digests(&python_layout));
    assert!(shell_layers.len() <= 8 && python_layers.len() <= 8, "a bounded number of layers");
    assert_eq!(shell_layers[0], python_layers[0], "the C runtime layer (libc6's loader and libc.so.6) is shared");
    assert_ne!(shell_layers.last(), python_layers.last(), "the Jailfiles' own layers differ");
}

#[test]
fn a_docker_archive_loads_in_skopeo() {
    require(&SKOPEO);
    let workspace = locked("jailprov-export-docker-", &example_text("seed-shell"));
    let archive = workspace.dir.join("image.tar");
    export(&workspace, "docker-archive", &archive).ok("export docker-archive");
    let reference = format!("docker-archive:{}", archive.display());
    let inspected = json(&run_tool("skopeo", &["inspect", &reference]).ok("skopeo inspect docker-archive").stdout);
    assert_eq!(inspected["Labels"]["org.opencontainers.image.title"], "jail");
    // The image is found by the repository tag manifest.json gives it.
    run_tool("skopeo", &["inspect", &format!("{reference}:jailprov/jail:latest")]).ok("skopeo inspect by RepoTag");
    // Copying reads every layer and checks it against its digest.
    let copy = format!("oci:{}:copied", workspace.dir.join("copy").display());
    run_tool("skopeo", &["copy", "--quiet", &reference, &copy]).ok("skopeo copy docker-archive -> oci");
    let oci = format!("oci-archive:{}", workspace.dir.join("image.tar").display());
    run_tool("skopeo", &["inspect", &oci]).ok("a docker-archive is an oci-archive too");
}

#[test]
fn export_refuses_a_missing_or_stale_lock() {
    let workspace = Workspace::new("jailprov-export-stale-");
    workspace.write_jailfile(&example_text("seed-shell"));
    let out = workspace.dir.join("image.tar");
    let run = export(&workspace, "oci-archive", &out).code(1, "no lock");
    assert!(run.stderr.contains("jailprov lock"), "{}", run.describe());
    workspace.run("lock", &[]).ok("lock");
    workspace.write_jailfile(&format!(
        "{}\n[[files]]\npath = \"/etc/added\"\ncontent = \"x\"\n",
        example_text("seed-shell")
    ));
    let run = export(&workspace, "oci-archive", &out).code(1, "stale lock");
    assert!(run.stderr.contains("Jailfile.lock"), "{}", run.describe());
    assert!(!out.exists(), "nothing written");
}

#[test]
fn a_symlink_planted_at_the_output_is_never_followed() {
    let workspace = locked("jailprov-export-symlink-", &example_text("seed-shell"));
    let victim = workspace.dir.join("victim");
    std::fs::write(&victim, "precious\n").expect("victim");
    let out = workspace.dir.join("image.tar");
    std::os::unix::fs::symlink(&victim, &out).expect("plant");
    export(&workspace, "oci-archive", &out).ok("export over a symlink");
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "precious\n");
    assert!(out.symlink_metadata().expect("out").file_type().is_file(), "the link itself was replaced");

    let victim_dir = workspace.dir.join("victim-dir");
    std::fs::create_dir(&victim_dir).expect("victim dir");
    let layout = workspace.dir.join("layout");
    std::os::unix::fs::symlink(&victim_dir, &layout).expect("plant");
    let run = export(&workspace, "oci-layout", &layout).code(1, "a symlink at a layout output");
    assert!(run.stderr.contains("is not an OCI layout"), "{}", run.describe());
    assert_eq!(std::fs::read_dir(&victim_dir).expect("victim dir").count(), 0, "nothing written through the link");
    // An earlier layout is replaced whole.
    let real = workspace.dir.join("real-layout");
    export(&workspace, "oci-layout", &real).ok("first layout");
    std::fs::write(real.join("stray"), "old").expect("stray");
    export(&workspace, "oci-layout", &real).ok("second layout over the first");
    assert!(!real.join("stray").exists() && real.join("oci-layout").is_file());
    let leftovers: Vec<_> = std::fs::read_dir(&workspace.dir)
        .expect("list")
        .filter_map(|entry| entry.ok().map(|entry| entry.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.contains(".export-") || name.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary left behind: {leftovers:?}");
}

#[test]
fn export_needs_no_root_and_no_applied_jail() {
    need_root!("export_needs_no_root_and_no_applied_jail (drops to nobody)");
    let workspace = Workspace::new("jailprov-export-nobody-");
    let dir = workspace.dir.join("nobody");
    std::fs::create_dir(&dir).expect("dir");
    std::fs::write(dir.join("Jailfile.toml"), example_text("seed-shell")).expect("Jailfile");
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).expect("chown");
    std::os::unix::fs::chown(dir.join("Jailfile.toml"), Some(65534), Some(65534)).expect("chown");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&workspace.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let as_nobody = |args: &[&str]| {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(cli::BIN)
            .args(args)
            .args(["-f", "Jailfile.toml", "--state-dir", "state", "--root", "/nonexistent/jail"])
            .current_dir(&dir);
        output(command)
    };
    as_nobody(&["lock"]).ok("lock as nobody");
    as_nobody(&["export", "--format", "oci-archive", "--output", "image.tar"]).ok("export as nobody");
    assert!(dir.join("image.tar").metadata().expect("the archive").len() > 100_000);
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    need_root!("the_systemd_unit_passes_systemd_analyze_verify (applies the jail it names)");
    require(&SYSTEMD_ANALYZE);
    for name in ["seed-shell", "python"] {
        let workspace = locked(&format!("jailprov-export-unit-{name}-"), &example_text(name));
        // The unit as it reads for the Jailfile's own root.
        let units = workspace.dir.join("units");
        let at_own_root = Path::new("/srv/jails").join(name);
        let mut own = workspace.command_at("export", &at_own_root, &["--format", "systemd", "--output"]);
        own.arg(&units);
        output(own).ok("export systemd");
        let text = std::fs::read_to_string(units.join(format!("jailprov-{name}.service"))).expect("the unit");
        insta::assert_snapshot!(format!("unit_{name}"), text);
        // And verified against a jail applied for it.
        workspace.apply();
        let verified_units = workspace.dir.join("verified");
        export(&workspace, "systemd", &verified_units).ok("export systemd at the applied root");
        let unit = verified_units.join("jailprov-jail.service");
        let run = run_tool("systemd-analyze", &["verify", unit.to_str().expect("UTF-8")]).ok("systemd-analyze verify");
        assert!(run.stderr.trim().is_empty(), "{name}: systemd-analyze warns:\n{}", run.describe());
    }
}
