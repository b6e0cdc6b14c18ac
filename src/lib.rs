//! jailprov: turns a Jailfile.toml into a working chroot jail (library half; `main.rs` is the CLI).

pub mod cli;
pub mod closure;
pub mod diagnostics;
pub mod host;
pub mod jailfile;
pub mod render;
pub mod spec;
pub mod tree;
