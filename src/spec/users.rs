//! `[[users]]` and `[[groups]]`: names and ids unique, members declared, and a user-private group
//! for each user whose gid no group declares.

use std::collections::BTreeMap;

use toml::Spanned;

use super::{GroupSpec, UserSpec, Validator};
use crate::diagnostics::{closest, Problem};
use crate::jailfile::{GroupEntry, UserEntry};

impl Validator<'_> {
    pub(super) fn users_and_groups(
        &mut self,
        users: &[Spanned<UserEntry>],
        groups: &[Spanned<GroupEntry>],
    ) -> (Vec<UserSpec>, Vec<GroupSpec>) {
        let mut user_specs: Vec<UserSpec> = Vec::new();
        let mut seen_names: BTreeMap<String, usize> = BTreeMap::new();
        let mut seen_uids: BTreeMap<u32, usize> = BTreeMap::new();
        for (index, entry) in users.iter().enumerate() {
            let user = entry.get_ref();
            let key = format!("users[{index}]");
            let name = user.name.get_ref();
            if let Err(message) = check_account_name(name) {
                self.report(Problem::at(format!("{key}.name"), &user.name, message));
            }
            if name == "root" || user.uid.get_ref() == &0 {
                self.report(
                    Problem::new(format!("{key}.name"), user.name.span(), "root is built in; do not declare it")
                        .with_value(name),
                );
            }
            if let Some(first) = seen_names.insert(name.clone(), index) {
                self.report(Problem::at(
                    format!("{key}.name"),
                    &user.name,
                    format!("duplicate user name: users[{first}] is already called {name:?}"),
                ));
            }
            if let Some(first) = seen_uids.insert(*user.uid.get_ref(), index) {
                self.report(
                    Problem::new(
                        format!("{key}.uid"),
                        user.uid.span(),
                        format!("duplicate uid: users[{first}] already has uid {}", user.uid.get_ref()),
                    )
                    .with_value(user.uid.get_ref()),
                );
            }
            let home = self.jail_path_or_default(&format!("{key}.home"), user.home.as_ref(), "/");
            let shell = self.jail_path_or_default(&format!("{key}.shell"), user.shell.as_ref(), "/bin/sh");
            user_specs.push(UserSpec {
                name: name.clone(),
                uid: *user.uid.get_ref(),
                gid: *user.gid.get_ref(),
                home,
                shell,
                gecos: user.gecos.clone().unwrap_or_default(),
            });
        }

        let mut group_specs: Vec<GroupSpec> = Vec::new();
        let mut seen_group_names: BTreeMap<String, usize> = BTreeMap::new();
        let mut seen_gids: BTreeMap<u32, usize> = BTreeMap::new();
        for (index, entry) in groups.iter().enumerate() {
            let group = entry.get_ref();
            let key = format!("groups[{index}]");
            let name = group.name.get_ref();
            if let Err(message) = check_account_name(name) {
                self.report(Problem::at(format!("{key}.name"), &group.name, message));
            }
            if let Some(first) = seen_group_names.insert(name.clone(), index) {
                self.report(Problem::at(
                    format!("{key}.name"),
                    &group.name,
                    format!("duplicate group name: groups[{first}] is already called {name:?}"),
                ));
            }
            if let Some(first) = seen_gids.insert(*group.gid.get_ref(), index) {
                self.report(
                    Problem::new(
                        format!("{key}.gid"),
                        group.gid.span(),
                        format!("duplicate gid: groups[{first}] already has gid {}", group.gid.get_ref()),
                    )
                    .with_value(group.gid.get_ref()),
                );
            }
            for (member_index, member) in group.members.iter().enumerate() {
                if !seen_names.contains_key(member.get_ref()) {
                    let declared = seen_names.keys().map(String::as_str);
                    let mut problem = Problem::at(
                        format!("{key}.members[{member_index}]"),
                        member,
                        "not a declared user (add it to [[users]])",
                    );
                    if let Some(near) = closest(member.get_ref(), declared) {
                        problem = problem.with_help(format!("did you mean {near:?}?"));
                    }
                    self.report(problem);
                }
            }
            group_specs.push(GroupSpec {
                name: name.clone(),
                gid: *group.gid.get_ref(),
                members: group.members.iter().map(|member| member.get_ref().clone()).collect(),
            });
        }
        // Like useradd's user-private groups: a user whose gid no group declares gets one.
        for (index, user) in user_specs.iter().enumerate() {
            if user.gid == 0 || group_specs.iter().any(|group| group.gid == user.gid) {
                continue;
            }
            if group_specs.iter().any(|group| group.name == user.name) {
                let entry = users[index].get_ref();
                self.report(
                    Problem::new(
                        format!("users[{index}].gid"),
                        entry.gid.span(),
                        format!("no group has gid {}, and the group {:?} has another gid", user.gid, user.name),
                    )
                    .with_value(user.gid)
                    .with_help("set the user's gid to its group's gid"),
                );
                continue;
            }
            group_specs.push(GroupSpec { name: user.name.clone(), gid: user.gid, members: Vec::new() });
        }
        (user_specs, group_specs)
    }
}

/// Users and groups by name, to turn owner names into ids.
pub(super) struct Owners<'a> {
    pub(super) users: &'a [UserSpec],
    pub(super) groups: &'a [GroupSpec],
}

impl Owners<'_> {
    pub(super) fn user_ids(&self) -> Vec<(String, u32)> {
        self.users.iter().map(|user| (user.name.clone(), user.uid)).collect()
    }
    pub(super) fn group_ids(&self) -> Vec<(String, u32)> {
        self.groups.iter().map(|group| (group.name.clone(), group.gid)).collect()
    }
}

fn check_account_name(name: &str) -> Result<(), String> {
    let valid_start = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let valid_rest = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if valid_start && valid_rest && name.len() <= 32 {
        Ok(())
    } else {
        Err("a user or group name is 1-32 of a-z 0-9 _ - and starts with a letter or _".into())
    }
}
