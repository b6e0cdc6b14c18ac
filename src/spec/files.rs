//! `[[files]]` (host files, directories and globs, or inline content) and `[[dirs]]`.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::users::Owners;
use super::values::{compile_glob, glob_base, is_glob};
use super::{DirSpec, FileSpec, HostSource, Validator};
use crate::diagnostics::Problem;
use crate::host::HostFs;
use crate::jailfile::{DirEntry, FileEntry};
use crate::tree::JailPath;

impl Validator<'_> {
    pub(super) fn files(&mut self, files: &[Spanned<FileEntry>], owners: &Owners) -> Vec<FileSpec> {
        let mut result = Vec::new();
        for (index, entry) in files.iter().enumerate() {
            let key = format!("files[{index}]");
            let file = entry.get_ref();
            let mut attributes =
                self.attributes(&key, file.mode.as_ref(), file.owner.as_ref(), file.group.as_ref(), owners);
            attributes.keep_setuid = file.setuid;
            match (&file.src, &file.path, &file.content) {
                (Some(src), None, None) => {
                    let dest = file.dest.as_ref().and_then(|dest| self.jail_path(&format!("{key}.dest"), dest));
                    if let Some(source) = self.host_source(&format!("{key}.src"), src) {
                        let dest = match (dest, &file.dest) {
                            (Some(path), Some(written)) if written.get_ref().ends_with('/') => {
                                let Some(inside) = self.dest_inside(&key, written, path, &source) else { continue };
                                Some(inside)
                            }
                            (dest, _) => dest,
                        };
                        result.push(FileSpec::Host { key, source, dest, attributes });
                    }
                }
                (None, Some(path), Some(content)) => {
                    if let Some(dest) = &file.dest {
                        self.report(Problem::at(
                            format!("{key}.dest"),
                            dest,
                            "`dest` goes with `src`; an inline file has only `path`",
                        ));
                    }
                    if let Some(path) = self.jail_path(&format!("{key}.path"), path) {
                        result.push(FileSpec::Inline { key, path, content: content.get_ref().clone(), attributes });
                    }
                }
                _ => self.report(Problem::new(
                    key,
                    entry.span(),
                    "a [[files]] entry has either `src` (a host file, directory or glob) or both `path` and `content`",
                )),
            }
        }
        result
    }

    /// A `dest` ending in "/" means "into this directory", as cp and rsync read it: a single
    /// file goes to `dest/<its name>`. A directory or glob source already fills `dest` itself.
    fn dest_inside(
        &mut self,
        key: &str,
        dest: &Spanned<String>,
        path: JailPath,
        source: &HostSource,
    ) -> Option<JailPath> {
        let HostSource::Path(host_path) = source else { return Some(path) };
        let is_directory = self.host.metadata(host_path).is_ok_and(|metadata| metadata.is_dir());
        let Some(name) = host_path.file_name().filter(|_| !is_directory) else { return Some(path) };
        match path.join(Path::new(name)) {
            Ok(inside) => Some(inside),
            Err(error) => {
                self.report(Problem::at(format!("{key}.dest"), dest, format!("the file name of `src` {error}")));
                None
            }
        }
    }

    fn host_source(&mut self, key: &str, src: &Spanned<String>) -> Option<HostSource> {
        let text = src.get_ref();
        let Ok(path) = JailPath::parse(text) else {
            self.report(Problem::at(key, src, "a host source must be an absolute path without `..`"));
            return None;
        };
        if !is_glob(text) {
            if self.host.symlink_metadata(Path::new(path.as_str())).is_err() {
                self.report(Problem::at(key, src, "no such file or directory on the host"));
                return None;
            }
            return Some(HostSource::Path(PathBuf::from(path.as_str())));
        }
        let matcher = match compile_glob(path.as_str()) {
            Ok(glob) => glob.compile_matcher(),
            Err(message) => {
                self.report(Problem::at(key, src, message));
                return None;
            }
        };
        let base = glob_base(path.as_str());
        let source = HostSource::Glob { pattern: path.as_str().to_owned(), base, matcher };
        if expand_glob_first(self.host, &source).is_none() {
            self.report(Problem::at(key, src, "the glob matches nothing on the host"));
            return None;
        }
        Some(source)
    }

    pub(super) fn dirs(&mut self, dirs: &[Spanned<DirEntry>], owners: &Owners) -> Vec<DirSpec> {
        let mut result = Vec::new();
        for (index, entry) in dirs.iter().enumerate() {
            let key = format!("dirs[{index}]");
            let dir = entry.get_ref();
            let attributes = self.attributes(&key, dir.mode.as_ref(), dir.owner.as_ref(), dir.group.as_ref(), owners);
            if let Some(path) = self.jail_path(&format!("{key}.path"), &dir.path) {
                if dir.writable && path.is_root() {
                    // `enter` mounts the jail root read-only; a writable "/" would undo it all.
                    self.report(
                        Problem::at(format!("{key}.writable"), &dir.path, "the jail root cannot be writable")
                            .with_help(
                                "declare the directories the command must write to, each with `writable = true`",
                            ),
                    );
                    continue;
                }
                result.push(DirSpec {
                    key,
                    path,
                    mode: attributes.mode.unwrap_or(0o755),
                    owner: attributes.owner.unwrap_or(0),
                    group: attributes.group.unwrap_or(0),
                    writable: dir.writable,
                });
            }
        }
        result
    }
}

/// The first host path a glob source matches, if any (validation only needs one).
fn expand_glob_first(host: &HostFs, source: &HostSource) -> Option<PathBuf> {
    let HostSource::Glob { base, matcher, .. } = source else { return None };
    walkdir::WalkDir::new(host.disk_path(base))
        .follow_links(false)
        .into_iter()
        .filter_map(|entry| entry.ok())
        .map(|entry| host.host_path(entry.path()))
        .find(|path| matcher.is_match(path))
}
