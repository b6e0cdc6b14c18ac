//! `[[mounts]]`: bind, tmpfs and proc mounts, their sources, sizes and options; proc only inside
//! a PID namespace.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::{EnterSpec, MountSpec, Validator, MOUNT_OPTIONS};
use crate::diagnostics::{closest, Problem};
use crate::jailfile::{MountEntry, MountKind, Namespace};
use crate::tree::JailPath;

impl Validator<'_> {
    pub(super) fn mounts(&mut self, mounts: &[Spanned<MountEntry>], enter: &Option<EnterSpec>) -> Vec<MountSpec> {
        let mut result = Vec::new();
        for (index, entry) in mounts.iter().enumerate() {
            let key = format!("mounts[{index}]");
            let mount = entry.get_ref();
            let kind = *mount.kind.get_ref();
            let Some(target_value) = &mount.target else {
                self.report(
                    Problem::new(&key, entry.span(), "a mount needs a `target`: where in the jail it is mounted")
                        .with_help("add e.g. target = \"/data\""),
                );
                continue;
            };
            let Some(target) = self.jail_path(&format!("{key}.target"), target_value) else { continue };
            if target.is_root() {
                self.report(Problem::at(format!("{key}.target"), target_value, "cannot mount over the jail root"));
                continue;
            }
            let source = match (kind, &mount.source) {
                (MountKind::Bind, None) => {
                    self.report(Problem::new(&key, entry.span(), "a bind mount needs a `source` on the host"));
                    continue;
                }
                (MountKind::Bind, Some(source)) => match JailPath::parse(source.get_ref()) {
                    Ok(path) if self.host.symlink_metadata(Path::new(path.as_str())).is_ok() => {
                        Some(PathBuf::from(path.as_str()))
                    }
                    Ok(_) => {
                        self.report(Problem::at(
                            format!("{key}.source"),
                            source,
                            "no such file or directory on the host",
                        ));
                        continue;
                    }
                    Err(error) => {
                        self.report(Problem::at(format!("{key}.source"), source, format!("a bind source {error}")));
                        continue;
                    }
                },
                (_, Some(source)) => {
                    self.report(Problem::at(format!("{key}.source"), source, "only bind mounts take a `source`"));
                    continue;
                }
                (_, None) => None,
            };
            let size = match (&mount.size, kind) {
                (None, _) => None,
                (Some(size), MountKind::Tmpfs) => self.size(&format!("{key}.size"), size),
                (Some(size), _) => {
                    self.report(Problem::at(format!("{key}.size"), size, "only tmpfs mounts take a `size`"));
                    None
                }
            };
            let mode = self.mode(&format!("{key}.mode"), mount.mode.as_ref());
            let mut options = Vec::new();
            for (option_index, option) in mount.options.iter().enumerate() {
                if MOUNT_OPTIONS.contains(&option.get_ref().as_str()) {
                    options.push(option.get_ref().clone());
                } else {
                    let mut problem = Problem::at(
                        format!("{key}.options[{option_index}]"),
                        option,
                        format!("unknown mount option; known: {}", MOUNT_OPTIONS.join(", ")),
                    );
                    if option.get_ref() == "ro" {
                        problem = problem.with_help("write `readonly = true`");
                    } else if let Some(near) = closest(option.get_ref(), MOUNT_OPTIONS.iter().copied()) {
                        problem = problem.with_help(format!("did you mean {near:?}?"));
                    }
                    self.report(problem);
                }
            }
            if kind == MountKind::Proc {
                if mount.persistent {
                    self.report(Problem::new(
                        format!("{key}.persistent"),
                        entry.span(),
                        "a persistent proc mount would show the jail every host process; proc is mounted only by `enter`, in a PID namespace",
                    ));
                    continue;
                }
                let has_pid_namespace = enter.as_ref().is_none_or(|enter| enter.namespaces.contains(&Namespace::Pid));
                if !has_pid_namespace {
                    self.report(
                        Problem::new(
                            &key,
                            mount.kind.span(),
                            "a proc mount needs the `pid` namespace, or it would show every host process",
                        )
                        .with_value("proc")
                        .with_help("add \"pid\" to [enter].namespaces"),
                    );
                    continue;
                }
            }
            result.push(MountSpec {
                key,
                kind,
                source,
                target,
                readonly: mount.readonly,
                options,
                size,
                mode,
                persistent: mount.persistent,
            });
        }
        result
    }
}
