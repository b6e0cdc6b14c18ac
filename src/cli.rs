//! Command-line definitions (clap) and nothing else: what the user can type.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "jailprov",
    version,
    about = "Declarative chroot jails: Jailfile.toml -> closure -> plan -> apply -> enter"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a Jailfile: syntax, keys, values, and that every host path it names exists.
    Validate(JailfileArgs),
    /// Print the JSON schema of Jailfile.toml (for editors and CI linters).
    Schema,
    /// List every path the jail will hold, with its kind and why it is there.
    Closure(ClosureArgs),
    /// Show the chain from a Jailfile entry to PATH: why PATH is in the jail.
    Why(WhyArgs),
}

#[derive(Debug, Args)]
pub struct JailfileArgs {
    /// The Jailfile to read.
    #[arg(short = 'f', long = "file", default_value = "Jailfile.toml")]
    pub file: PathBuf,
    /// Use this jail root instead of the Jailfile's `root`.
    #[arg(long = "root")]
    pub root: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClosureFormat {
    /// One line per path: kind, path, and why.
    Text,
    /// Machine-readable: {"entries":[{"path","kind","source","needed_by"}...]}.
    Json,
    /// The dependency tree under each Jailfile entry.
    Tree,
}

#[derive(Debug, Args)]
pub struct ClosureArgs {
    #[command(flatten)]
    pub jailfile: JailfileArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ClosureFormat::Text)]
    pub format: ClosureFormat,
}

#[derive(Debug, Args)]
pub struct WhyArgs {
    /// A path inside the jail, e.g. /usr/lib/x86_64-linux-gnu/libpcre2-8.so.0
    pub path: PathBuf,
    #[command(flatten)]
    pub jailfile: JailfileArgs,
}
