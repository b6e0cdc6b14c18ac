//! `[enter]`: the command, user, namespaces, network, limits and capabilities `jailprov enter`
//! runs with.

use std::collections::{BTreeMap, BTreeSet};

use toml::Spanned;

use super::ports::parse_port;
use super::{EnterSpec, LimitsSpec, PortSpec, UserSpec, Validator, CAPABILITIES, DEFAULT_NAMESPACES};
use crate::diagnostics::{closest, Problem};
use crate::jailfile::{DevMode, EnterSection, Limits, Namespace, NetworkMode};

impl Validator<'_> {
    pub(super) fn enter(&mut self, enter: Option<&Spanned<EnterSection>>, users: &[UserSpec]) -> Option<EnterSpec> {
        let default_namespaces: BTreeSet<Namespace> = DEFAULT_NAMESPACES.iter().copied().collect();
        let Some(enter) = enter else {
            return Some(EnterSpec {
                command: vec!["/bin/sh".into()],
                user: "root".into(),
                uid: 0,
                gid: 0,
                workdir: None,
                hostname: None,
                env: BTreeMap::new(),
                namespaces: default_namespaces,
                network: NetworkMode::None,
                ports: Vec::new(),
                egress: true,
                minimal_dev: true,
                limits: LimitsSpec::default(),
                capabilities: Vec::new(),
                seccomp: true,
                allow_host_root: false,
            });
        };
        let section = enter.get_ref();
        let (user, uid, gid) = match &section.user {
            None => ("root".to_owned(), 0, 0),
            Some(name) if name.get_ref() == "root" => ("root".to_owned(), 0, 0),
            Some(name) => match users.iter().find(|user| &user.name == name.get_ref()) {
                Some(user) => (user.name.clone(), user.uid, user.gid),
                None => {
                    let mut problem =
                        Problem::at("enter.user", name, "not a declared user (add it to [[users]] or use \"root\")");
                    if let Some(near) = closest(name.get_ref(), users.iter().map(|user| user.name.as_str())) {
                        problem = problem.with_help(format!("did you mean {near:?}?"));
                    }
                    self.report(problem);
                    ("root".to_owned(), 0, 0)
                }
            },
        };
        if let Some(first) = section.command.first() {
            if !first.get_ref().starts_with('/') {
                self.report(Problem::at("enter.command[0]", first, "the command must be an absolute path in the jail"));
            }
        }
        let workdir = section.workdir.as_ref().and_then(|workdir| self.jail_path("enter.workdir", workdir));
        if let Some(hostname) = &section.hostname {
            if let Err(message) = check_hostname(hostname.get_ref()) {
                self.report(Problem::at("enter.hostname", hostname, message));
            }
        }
        for name in section.env.keys() {
            if name.get_ref().is_empty() || name.get_ref().contains('=') || name.get_ref().contains('\0') {
                self.report(Problem::at(
                    "enter.env",
                    name,
                    "an environment variable name cannot be empty or contain `=`",
                ));
            }
        }
        let namespaces = match &section.namespaces {
            None => default_namespaces,
            Some(list) => {
                let mut set: BTreeSet<Namespace> = list.iter().map(|ns| *ns.get_ref()).collect();
                // pivot_root needs a private mount table: the mount namespace is not optional.
                set.insert(Namespace::Mount);
                set
            }
        };
        let network = section.network.as_ref().map_or(NetworkMode::None, |network| *network.get_ref());
        if network == NetworkMode::Host
            && section.namespaces.as_ref().is_some_and(|_| namespaces.contains(&Namespace::Net))
        {
            let span = section.network.as_ref().map_or(enter.span(), |network| network.span());
            self.report(
                Problem::new(
                    "enter.network",
                    span,
                    "network = \"host\" contradicts the `net` namespace in [enter].namespaces",
                )
                .with_value("host"),
            );
        }
        let mut namespaces = namespaces;
        if network == NetworkMode::Private {
            // The private network is a network namespace of its own.
            namespaces.insert(Namespace::Net);
        }
        let namespaces = if network == NetworkMode::Host {
            namespaces.into_iter().filter(|ns| *ns != Namespace::Net).collect()
        } else {
            namespaces
        };
        let (ports, egress) = self.published_ports(section, network);
        let limits = section.limits.as_ref().map(|limits| self.limits(limits)).unwrap_or_default();
        let mut capabilities = Vec::new();
        for (index, capability) in section.capabilities.iter().enumerate() {
            let upper = capability.get_ref().to_ascii_uppercase();
            let name = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
            if CAPABILITIES.contains(&name.as_str()) {
                capabilities.push(name);
            } else {
                let mut problem =
                    Problem::at(format!("enter.capabilities[{index}]"), capability, "not a Linux capability");
                if let Some(near) = closest(&name, CAPABILITIES.iter().copied()) {
                    problem = problem.with_help(format!("did you mean {near:?}?"));
                }
                self.report(problem);
            }
        }
        Some(EnterSpec {
            command: section.command.iter().map(|word| word.get_ref().clone()).collect(),
            user,
            uid,
            gid,
            workdir,
            hostname: section.hostname.as_ref().map(|hostname| hostname.get_ref().clone()),
            env: section.env.iter().map(|(name, value)| (name.get_ref().clone(), value.clone())).collect(),
            namespaces,
            network,
            ports,
            egress,
            // Minimal unless the Jailfile opts out with "none".
            minimal_dev: section.dev.as_ref().is_none_or(|dev| *dev.get_ref() == DevMode::Minimal),
            limits,
            capabilities,
            seccomp: section.seccomp.unwrap_or(true),
            allow_host_root: section.allow_host_root,
        })
    }

    /// `ports` and `egress`, which only a private network has (the host's network publishes
    /// nothing, loopback only has nothing to publish through).
    fn published_ports(&mut self, section: &EnterSection, network: NetworkMode) -> (Vec<PortSpec>, bool) {
        let private = network == NetworkMode::Private;
        let egress = section.egress.as_ref().is_none_or(|egress| *egress.get_ref());
        let mut ports = Vec::new();
        for (index, port) in section.ports.iter().enumerate() {
            let key = format!("enter.ports[{index}]");
            if !private {
                self.report(Problem::at(key, port, "ports are published only with [enter] network = \"private\""));
                continue;
            }
            match parse_port(port.get_ref()) {
                // Without egress the jail's outside interface stays unconfigured: only host
                // loopback connections reach it (pasta splices them to the jail's loopback).
                Ok(parsed) if !egress && !parsed.address.is_some_and(|address| address.is_loopback()) => {
                    self.report(Problem::at(
                        key,
                        port,
                        "with egress = false a published port must name a loopback address (\"127.0.0.1:…\" or \"[::1]:…\"): the jail's outside interface is left unconfigured",
                    ))
                }
                Ok(parsed) => ports.push(parsed),
                Err(message) => self.report(Problem::at(key, port, message)),
            }
        }
        if let Some(egress) = section.egress.as_ref().filter(|_| !private) {
            self.report(
                Problem::new("enter.egress", egress.span(), "egress applies only to [enter] network = \"private\"")
                    .with_value(egress.get_ref()),
            );
        }
        (ports, egress)
    }

    fn limits(&mut self, limits: &Limits) -> LimitsSpec {
        LimitsSpec {
            nofile: limits.nofile,
            nproc: limits.nproc,
            memory: limits.memory.as_ref().and_then(|memory| self.size("enter.limits.memory", memory)),
            cpu: limits.cpu,
            fsize: limits.fsize.as_ref().and_then(|fsize| self.size("enter.limits.fsize", fsize)),
        }
    }
}

fn check_hostname(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.split('.').all(|label| {
            !label.is_empty() && !label.starts_with('-') && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if valid {
        Ok(())
    } else {
        Err("a hostname is at most 64 characters of letters, digits, `-` and `.`".into())
    }
}
