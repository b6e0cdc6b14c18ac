//! Paths inside the jail: absolute, normalised, never escaping the jail root.

use std::fmt;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

/// An absolute path inside the jail, in normal form: starts with "/", no ".", "..", empty or
/// trailing components. "/" itself is the jail root. Built only through [`JailPath::parse`] or
/// from another `JailPath`, so holding one proves it cannot name anything outside the jail.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JailPath(String);

impl TryFrom<String> for JailPath {
    type Error = JailPathError;
    /// Deserialized paths (state files, saved plans) are checked like any other input.
    fn try_from(text: String) -> Result<JailPath, JailPathError> {
        JailPath::parse(&text)
    }
}

impl From<JailPath> for String {
    fn from(path: JailPath) -> String {
        path.0
    }
}

/// Why a string is not a valid jail path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JailPathError {
    NotAbsolute,
    DotDot,
    NulByte,
}

impl fmt::Display for JailPathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JailPathError::NotAbsolute => f.write_str("must be an absolute path (start with /)"),
            JailPathError::DotDot => f.write_str("must not contain `..`: jail paths cannot leave the jail"),
            JailPathError::NulByte => f.write_str("must not contain a NUL byte"),
        }
    }
}

impl JailPath {
    /// The jail root, "/".
    pub fn root() -> JailPath {
        JailPath("/".to_owned())
    }

    /// Parses a user-written jail path: absolute, no `..`; `.`, `//` and a trailing `/` are
    /// normalised away.
    pub fn parse(text: &str) -> Result<JailPath, JailPathError> {
        if text.contains('\0') {
            return Err(JailPathError::NulByte);
        }
        if !text.starts_with('/') {
            return Err(JailPathError::NotAbsolute);
        }
        if is_normal(text) {
            return Ok(JailPath(text.to_owned()));
        }
        let mut normal = String::with_capacity(text.len());
        for part in text.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(JailPathError::DotDot),
                name => {
                    normal.push('/');
                    normal.push_str(name);
                }
            }
        }
        if normal.is_empty() {
            normal.push('/');
        }
        Ok(JailPath(normal))
    }

    /// The same path as a host path would be spelled: a jail path is the host path it mirrors.
    pub fn from_host(path: &Path) -> Result<JailPath, JailPathError> {
        match path.to_str() {
            Some(text) => JailPath::parse(text),
            None => Err(JailPathError::NulByte),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The parent directory; `None` for the root.
    pub fn parent(&self) -> Option<JailPath> {
        if self.is_root() {
            return None;
        }
        let cut = self.0.rfind('/').unwrap_or(0);
        Some(if cut == 0 { JailPath::root() } else { JailPath(self.0[..cut].to_owned()) })
    }

    /// The last component ("" for the root).
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// This path with `relative` appended; `relative` must be made of normal components.
    pub fn join(&self, relative: &Path) -> Result<JailPath, JailPathError> {
        let mut text = if self.is_root() { String::new() } else { self.0.clone() };
        for component in relative.components() {
            match component {
                Component::Normal(name) => {
                    text.push('/');
                    text.push_str(name.to_str().ok_or(JailPathError::NulByte)?);
                }
                Component::CurDir => {}
                _ => return Err(JailPathError::DotDot),
            }
        }
        JailPath::parse(if text.is_empty() { "/" } else { &text })
    }

    /// Every ancestor from the top down, excluding the root and the path itself:
    /// "/a/b/c" gives "/a", "/a/b".
    pub fn ancestors(&self) -> Vec<JailPath> {
        let mut result = Vec::new();
        let mut current = self.parent();
        while let Some(dir) = current {
            if dir.is_root() {
                break;
            }
            current = dir.parent();
            result.push(dir);
        }
        result.reverse();
        result
    }

    /// Whether `self` is `other` or below it.
    pub fn starts_with(&self, other: &JailPath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// The path relative to the jail root, e.g. "usr/bin/bash" ("" for the root).
    pub fn relative(&self) -> &str {
        &self.0[1..]
    }
}

/// Whether an absolute path is already in normal form (no empty, "." or ".." component, no
/// trailing slash): the common case, checked in one pass without building a new string.
fn is_normal(text: &str) -> bool {
    if text == "/" {
        return true;
    }
    !text.ends_with('/') && text[1..].split('/').all(|part| !part.is_empty() && part != "." && part != "..")
}

impl fmt::Display for JailPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests build their fixtures with plain fs calls
mod tests {
    use super::*;

    #[test]
    fn parse_normalises_dots_slashes_and_trailing_slash() {
        assert_eq!(JailPath::parse("/usr//lib/./x/").map(|p| p.0), Ok("/usr/lib/x".to_owned()));
        assert_eq!(JailPath::parse("/").map(|p| p.0), Ok("/".to_owned()));
    }

    #[test]
    fn parse_refuses_relative_and_dotdot() {
        assert_eq!(JailPath::parse("etc/passwd"), Err(JailPathError::NotAbsolute));
        assert_eq!(JailPath::parse("/etc/../../host"), Err(JailPathError::DotDot));
    }

    #[test]
    fn parent_ancestors_and_prefix() {
        let path = JailPath::parse("/a/b/c").expect("valid");
        assert_eq!(path.parent().map(|p| p.0), Some("/a/b".to_owned()));
        let names: Vec<String> = path.ancestors().into_iter().map(|p| p.0).collect();
        assert_eq!(names, vec!["/a", "/a/b"]);
        assert!(path.starts_with(&JailPath::parse("/a").expect("valid")));
        assert!(!JailPath::parse("/ab").expect("valid").starts_with(&JailPath::parse("/a").expect("valid")));
    }

    #[test]
    fn join_refuses_parent_components() {
        let base = JailPath::parse("/opt").expect("valid");
        assert_eq!(base.join(Path::new("py/x.py")).map(|p| p.0), Ok("/opt/py/x.py".to_owned()));
        assert!(base.join(Path::new("../etc")).is_err());
    }
}
