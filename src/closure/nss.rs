//! NSS: the modules glibc dlopens for the jail's nsswitch.conf, so names resolve inside.

use std::path::Path;

use anyhow::{Context, Result};

use super::{Builder, EntryKind, Origin};
use crate::closure::loader::Loader;
use crate::spec::{FileSpec, HostSource, Spec};
use crate::tree::JailPath;

/// The nsswitch.conf jailprov writes when the Jailfile brings none: everything from the jail's
/// own files (glibc >= 2.34 has `files` and `dns` built in, so no module is needed).
pub const DEFAULT_NSSWITCH: &str = "\
# Written by jailprov: names come from the jail's own /etc files.
passwd:    files
group:     files
shadow:    files
gshadow:   files
hosts:     files dns
networks:  files
protocols: files
services:  files
ethers:    files
rpc:       files
";

/// Network files whose presence means programs will look names up.
const NETWORK_FILES: &[&str] = &["/etc/hosts", "/etc/resolv.conf", "/etc/services", "/etc/protocols", "/etc/networks"];

/// Services glibc (>= 2.34) serves without loading a module.
const BUILT_IN_SERVICES: &[&str] = &["files", "dns"];

/// Adds the jail's nsswitch.conf (generated unless brought) and the modules it names, when the
/// jail has users, groups or network files.
pub(super) fn add_nss(spec: &Spec, loader: &Loader, builder: &mut Builder) -> Result<()> {
    let has_network_files =
        NETWORK_FILES.iter().any(|path| JailPath::parse(path).is_ok_and(|path| builder.contains(&path)));
    if spec.users.is_empty() && spec.groups.is_empty() && !has_network_files {
        return Ok(());
    }
    let nsswitch_path = JailPath::parse("/etc/nsswitch.conf").unwrap_or_else(|_| JailPath::root());
    let content = match brought_nsswitch(spec, loader)? {
        Some(content) => content,
        None => {
            let entry = builder.add(nsswitch_path.clone(), EntryKind::Generated, None, Origin::NameService);
            entry.content = Some(DEFAULT_NSSWITCH.as_bytes().to_vec());
            entry.attributes.mode = Some(0o644);
            DEFAULT_NSSWITCH.to_owned()
        }
    };
    // Modules must match the programs' architecture: take the first ELF program's.
    let Some(ident) = builder
        .entries()
        .filter(|entry| entry.kind == EntryKind::Binary)
        .filter_map(|entry| entry.source.as_deref())
        .find_map(|source| loader.elf(source).ok().flatten().map(|info| info.ident))
    else {
        return Ok(());
    };
    for service in services(&content) {
        let module = format!("libnss_{service}.so.2");
        match loader.find_for_dlopen(&module, &ident)? {
            Some(path) => {
                let load = loader.load_library(&path)?;
                let origin = Origin::Nss { nsswitch: nsswitch_path.clone(), service: service.clone() };
                let own = builder.add_host_path(&path, EntryKind::NssModule, origin)?;
                builder.add_load(&load, &own, EntryKind::Library)?;
            }
            None if BUILT_IN_SERVICES.contains(&service.as_str()) => {}
            None => builder.warn(format!(
                "nsswitch.conf names the service {service:?} but {module} is not on the host; lookups through it will fail in the jail"
            )),
        }
    }
    Ok(())
}

/// The nsswitch.conf content the Jailfile brings itself, if it does.
fn brought_nsswitch(spec: &Spec, loader: &Loader) -> Result<Option<String>> {
    for file in spec.files.iter().rev() {
        match file {
            FileSpec::Inline { path, content, .. } if path.as_str() == "/etc/nsswitch.conf" => {
                return Ok(Some(content.clone()));
            }
            FileSpec::Host { source: HostSource::Path(source), dest, .. } => {
                let lands_at = dest.as_ref().map_or(source.as_path(), |dest| Path::new(dest.as_str()));
                if lands_at == Path::new("/etc/nsswitch.conf") {
                    let bytes = loader.host().read(source).context("reading the nsswitch.conf the Jailfile brings")?;
                    return Ok(Some(String::from_utf8_lossy(&bytes).into_owned()));
                }
            }
            _ => {}
        }
    }
    Ok(None)
}

/// Service names of an nsswitch.conf, in order of appearance, without duplicates or
/// `[STATUS=action]` items.
pub fn services(content: &str) -> Vec<String> {
    let mut result: Vec<String> = Vec::new();
    for line in content.lines() {
        let line = line.split('#').next().unwrap_or("");
        let Some((_, rest)) = line.split_once(':') else { continue };
        let mut in_action = false;
        for word in rest.split_whitespace() {
            if word.starts_with('[') {
                in_action = !word.ends_with(']');
                continue;
            }
            if in_action {
                in_action = !word.ends_with(']');
                continue;
            }
            if !result.iter().any(|known| known == word) {
                result.push(word.to_owned());
            }
        }
    }
    result
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests build their fixtures with plain fs calls
mod tests {
    use super::*;

    #[test]
    fn services_skip_comments_and_actions() {
        let conf = "passwd: files systemd # comment\nhosts: files mdns4_minimal [NOTFOUND=return] dns\n#group: ldap\n";
        assert_eq!(services(conf), vec!["files", "systemd", "mdns4_minimal", "dns"]);
    }
}
