//! `[[links]]`: symlinks stated in the Jailfile, validated like every other entry.

use toml::Spanned;

use super::{LinkSpec, Validator};
use crate::diagnostics::Problem;
use crate::jailfile::LinkEntry;

/// Longest link target accepted: PATH_MAX less its NUL, what symlink(2) takes.
const LONGEST_TARGET: usize = 4095;

impl Validator<'_> {
    pub(super) fn links(&mut self, links: &[Spanned<LinkEntry>]) -> Vec<LinkSpec> {
        let mut result: Vec<LinkSpec> = Vec::new();
        for (index, entry) in links.iter().enumerate() {
            let key = format!("links[{index}]");
            let link = entry.get_ref();
            let path = self.jail_path(&format!("{key}.path"), &link.path);
            let target = link.target.get_ref();
            let bad_target = if target.is_empty() {
                Some("a link target cannot be empty".to_owned())
            } else if target.contains('\0') {
                Some("a link target cannot hold a NUL byte".to_owned())
            } else if target.len() > LONGEST_TARGET {
                Some(format!("a link target is at most {LONGEST_TARGET} bytes (this one is {})", target.len()))
            } else {
                None
            };
            if let Some(message) = bad_target {
                self.report(Problem::at(format!("{key}.target"), &link.target, message));
                continue;
            }
            let Some(path) = path else { continue };
            if path.is_root() {
                self.report(Problem::at(format!("{key}.path"), &link.path, "the jail root cannot be a symlink"));
                continue;
            }
            if let Some(first) = result.iter().find(|other| other.path == path) {
                self.report(
                    Problem::at(
                        format!("{key}.path"),
                        &link.path,
                        format!("{path} is already declared by {}", first.key),
                    )
                    .with_help("declare each link once"),
                );
                continue;
            }
            result.push(LinkSpec { key, path, target: target.clone() });
        }
        result
    }
}
