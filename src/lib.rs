//! jailprov: turns a Jailfile.toml into a working chroot jail (library half; `main.rs` is the CLI).

pub mod apply;
pub mod beside;
pub mod check;
pub mod cli;
pub mod closure;
pub mod desired;
pub mod diagnostics;
pub mod enter;
pub mod export;
pub mod hook;
pub mod host;
pub mod init;
pub mod jail_root;
pub mod jailfile;
pub mod kill_point;
pub mod mountinfo;
pub mod plan;
pub mod render;
pub mod root_safety;
pub mod spec;
pub mod state;
pub mod status;
pub mod timings;
pub mod trace;
pub mod tree;
