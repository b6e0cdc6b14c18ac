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
    /// Color the output of plan, apply and destroy: auto (on a terminal, unless NO_COLOR is set),
    /// always (even into a pipe), never.
    #[arg(long, global = true, value_enum, default_value_t = ColorWhen::Auto)]
    pub color: ColorWhen,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented Jailfile.toml for the given programs (never over an existing file).
    Init(InitArgs),
    /// Check a Jailfile: syntax, keys, values, and that every host path it names exists.
    Validate(JailfileArgs),
    /// Print the JSON schema of Jailfile.toml (for editors and CI linters) or of a command's
    /// `--format json` output, or write the Jailfile's into a directory (`--write DIR`) for a
    /// Jailfile's `#:schema` line to name.
    Schema(SchemaArgs),
    /// List every path the jail will hold, with its kind and why it is there.
    Closure(ClosureArgs),
    /// Show the chain from a Jailfile entry to PATH: why PATH is in the jail.
    Why(WhyArgs),
    /// Show what apply would create, change and delete in the jail (reads only).
    ///
    /// plan writes nothing you see: not the jail, not Jailfile.lock, not the state record, and
    /// it creates neither the jail root nor the state directory. Host drift against
    /// Jailfile.lock shows in every plan until `jailprov lock` (or a plain `apply`) accepts it.
    /// Only caches are written, and only into a state directory that exists: the plan memo and
    /// lock-cache/ (stat prints and hashes of host files), which make the next plan faster.
    Plan(PlanArgs),
    /// Make the jail match the Jailfile (or apply a plan saved with `plan -o`).
    Apply(ApplyArgs),
    /// Remove everything jailprov created in the jail; files it did not create stay.
    ///
    /// Shows what it will remove and asks on a terminal; `--yes` skips the question (needed
    /// without a terminal). `jailprov plan --destroy` previews the same list.
    Destroy(DestroyArgs),
    /// Run a command in the applied jail: namespaces, pivot_root, no capabilities, seccomp.
    Enter(EnterArgs),
    /// Run a command in the applied jail as `enter` does, watching what it looks for in vain;
    /// print the Jailfile entries that bring what the host has (a diff), `--write` to add them.
    #[command(
        long_about = "Run CMD in the applied jail with exactly the isolation of `enter` (never on the host),\nfollowing it and every process it starts (ptrace from the jail's PID 1), and note each path\nit tries to open, exec, stat, access, readlink or dlopen that is missing in the jail\n(ENOENT, ENOTDIR) but present on the host.\n\nPrints a Jailfile suggestion as a unified diff: one [[files]] entry per path, its reason as\na comment; 8 or more files of one directory fold into one DIR/* glob. --write appends it.\n\nNever suggested: paths under /proc, /sys, /dev, /tmp, /var/tmp, /run, /home and your $HOME;\nthe deny list (/etc/shadow, /etc/gshadow, /etc/sudoers*, /root, /etc/ssh/ssh_host_*,\n/etc/ssl/private, ...); /etc/passwd and /etc/group; files not readable by others; paths\nthe host lacks.\n\nExit code: CMD's, or 1 on a jailprov error (125, 126, 127 as for `enter`)."
    )]
    Trace(TraceArgs),
    /// Refresh Jailfile.lock deliberately (accepting host drift) and show what changed since.
    Lock(LockArgs),
    /// Audit the jail on disk: content hashes, setuid files, devices, symlinks, permissions.
    Check(CheckArgs),
    /// Hand the locked jail to other engines: an OCI image (byte-reproducible, layers shared
    /// between jails by Debian package) or a systemd unit running the applied jail.
    ///
    /// Images are built from what apply would write and Jailfile.lock records (the lock must be
    /// up to date, as with --locked); they need neither an applied jail nor root. Device nodes
    /// and mounts are the runtime's: nodes are left out, mount targets listed as volumes.
    Export(ExportArgs),
    /// Every jail applied on this host: current, behind the host's files (by Debian package, old
    /// -> new version), or orphaned (Jailfile or root gone).
    ///
    /// Exit code: 0, or with --detailed-exitcode 0 when every jail is current, 2 when some are
    /// behind, 1 on an error or a jail whose state cannot be told.
    Status(StatusArgs),
    /// Forget a jail's record (one `status` shows as orphaned): files in the jail stay.
    Forget(ForgetArgs),
    /// The apt hook (and systemd timer) that keeps jails following host package updates.
    Hook(HookArgs),
    /// Print a shell completion script, e.g. `jailprov completions bash >
    /// /etc/bash_completion.d/jailprov`.
    Completions(CompletionsArgs),
    /// Print the man page (roff) to stdout, or write one page per subcommand into --output DIR.
    Manpage(ManpageArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Programs for the jail: bare names (looked up in PATH as `binaries` does) or paths.
    #[arg(value_name = "BINARY")]
    pub binaries: Vec<String>,
    /// The jail root to write (default /srv/jails/<first program>).
    #[arg(long = "root")]
    pub root: Option<PathBuf>,
    /// The Jailfile to write; it must not exist.
    #[arg(short = 'f', long = "file", default_value = "Jailfile.toml")]
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Whose schema: the Jailfile's, or the `--format json` output of a command.
    #[arg(value_enum, default_value_t = SchemaKind::Jailfile)]
    pub kind: SchemaKind,
    /// Write jailfile.schema.json into DIR (never over a different file) instead of printing it;
    /// then start a Jailfile with `#:schema DIR/jailfile.schema.json`.
    #[arg(long, value_name = "DIR")]
    pub write: Option<PathBuf>,
}

/// What a JSON Schema describes (each committed as schemas/KIND.schema.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaKind {
    Jailfile,
    Closure,
    Why,
    Plan,
    Apply,
    Check,
    Lock,
    Status,
}

impl SchemaKind {
    pub const ALL: [SchemaKind; 8] = [
        SchemaKind::Jailfile,
        SchemaKind::Closure,
        SchemaKind::Why,
        SchemaKind::Plan,
        SchemaKind::Apply,
        SchemaKind::Check,
        SchemaKind::Lock,
        SchemaKind::Status,
    ];

    /// As typed on the command line and in schemas/KIND.schema.json.
    pub fn name(self) -> &'static str {
        match self {
            SchemaKind::Jailfile => "jailfile",
            SchemaKind::Closure => "closure",
            SchemaKind::Why => "why",
            SchemaKind::Plan => "plan",
            SchemaKind::Apply => "apply",
            SchemaKind::Check => "check",
            SchemaKind::Lock => "lock",
            SchemaKind::Status => "status",
        }
    }
}

/// How much plan, apply and destroy list: past 40 lines a summary by kind, unless -v.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// List every path, however many.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Print only the closing summary line.
    #[arg(short = 'q', long, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManpageArgs {
    /// Write jailprov.1 and jailprov-SUBCOMMAND.1 into this directory (created if missing)
    /// instead of printing jailprov.1.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
}

/// Where jailprov records what it manages, and how long to wait for another jailprov.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// Directory of the records of managed paths (outside every jail).
    #[arg(long = "state-dir", default_value = crate::state::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub jailfile: JailfileArgs,
    #[command(flatten)]
    pub state: StateArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Exit 0 when there is nothing to do, 2 when changes are pending (in the jail, or
    /// Jailfile.lock missing or not matching the host and the Jailfile), 1 on error.
    #[arg(long = "detailed-exitcode")]
    pub detailed_exitcode: bool,
    /// Save the plan (a private 0600 file, replaced whole); `jailprov apply FILE` applies
    /// exactly it, or refuses if anything moved.
    #[arg(short = 'o', long = "out")]
    pub out: Option<PathBuf>,
    /// Plan to take over files jailprov did not create where the Jailfile wants its own.
    #[arg(long)]
    pub adopt: bool,
    /// Fail (exit 1) when what the host gives differs from Jailfile.lock, or there is none (CI).
    #[arg(long)]
    pub locked: bool,
    /// Preview what `jailprov destroy` would remove (text, JSON, --detailed-exitcode alike).
    #[arg(long, conflicts_with_all = ["out", "adopt", "locked"])]
    pub destroy: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan saved with `jailprov plan -o FILE`.
    pub plan_file: Option<PathBuf>,
    #[command(flatten)]
    pub jailfile: JailfileArgs,
    #[command(flatten)]
    pub state: StateArgs,
    /// Overwrite files jailprov did not create where the Jailfile wants its own.
    #[arg(long)]
    pub adopt: bool,
    /// Show the plan and ask before applying (needs a terminal).
    #[arg(long, conflicts_with = "format")]
    pub interactive: bool,
    /// Output format. json: one object {changed, summary, changes, diff} on stdout (Ansible's
    /// module and diff contract), errors as one JSON object on stderr.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Seconds to wait for another jailprov working on the same jail.
    #[arg(long = "lock-timeout", default_value_t = 60)]
    pub lock_timeout: u64,
    /// Accept a jail root under a directory that others could rename or replace.
    #[arg(long = "unsafe-root")]
    pub unsafe_root: bool,
    /// Refuse (exit 1, nothing applied) when what the host gives differs from Jailfile.lock.
    #[arg(long)]
    pub locked: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct LockArgs {
    #[command(flatten)]
    pub jailfile: JailfileArgs,
    /// Where the per-host hash cache of the lock lives (with the records of managed paths).
    #[command(flatten)]
    pub state: StateArgs,
    /// Output format (json: schemas/lock.schema.json).
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub jailfile: JailfileArgs,
    #[command(flatten)]
    pub state: StateArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
    pub format: CheckFormat,
    /// Repair what apply would repair (managed paths only); never deletes anything.
    #[arg(long)]
    pub fix: bool,
    /// Seconds to wait for another jailprov working on the same jail (with --fix).
    #[arg(long = "lock-timeout", default_value_t = 60)]
    pub lock_timeout: u64,
    /// Accept a jail root under a directory that others could rename or replace (with --fix).
    #[arg(long = "unsafe-root")]
    pub unsafe_root: bool,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    #[command(flatten)]
    pub jailfile: JailfileArgs,
    #[command(flatten)]
    pub state: StateArgs,
    /// Destroy without asking (scripts; without a terminal destroy refuses unless given this).
    #[arg(short = 'y', long)]
    pub yes: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Seconds to wait for another jailprov working on the same jail.
    #[arg(long = "lock-timeout", default_value_t = 60)]
    pub lock_timeout: u64,
    /// Accept a jail root under a directory that others could rename or replace.
    #[arg(long = "unsafe-root")]
    pub unsafe_root: bool,
}

#[derive(Debug, Args)]
pub struct EnterArgs {
    #[command(flatten)]
    pub jailfile: JailfileArgs,
    #[command(flatten)]
    pub state: StateArgs,
    /// Accept a jail root under a directory that others could rename or replace.
    #[arg(long = "unsafe-root")]
    pub unsafe_root: bool,
    /// The command and its arguments, after `--` (default: `[enter].command`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// An OCI image layout directory (oci-layout, index.json, blobs/sha256/...).
    OciLayout,
    /// The OCI layout as one tar file.
    OciArchive,
    /// A tar `docker load` and `podman load` read (manifest.json; the OCI layout beside it).
    DockerArchive,
    /// A systemd service unit `jailprov-NAME.service` in the --output directory.
    Systemd,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub jailfile: JailfileArgs,
    /// Where the lock's per-host hash cache lives (read, and saved when it can be).
    #[command(flatten)]
    pub state: StateArgs,
    /// What to write.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// The layout directory, the archive file, or (systemd) the directory of the unit; replaced
    /// whole, a symlink there never followed.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// The image tag (index annotation org.opencontainers.image.ref.name; `jailprov/NAME:TAG`
    /// in a docker-archive).
    #[arg(long, default_value = "latest")]
    pub tag: String,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub jailfile: JailfileArgs,
    #[command(flatten)]
    pub state: StateArgs,
    /// Accept a jail root under a directory that others could rename or replace.
    #[arg(long = "unsafe-root")]
    pub unsafe_root: bool,
    /// Append the suggestion to the Jailfile (validated first; the text above it is kept as is).
    #[arg(long)]
    pub write: bool,
    /// The command and its arguments, after `--` (default: `[enter].command`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
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
    /// Where the closure cache lives (closure-cache/, only in a state directory that exists;
    /// JAILPROV_NO_CACHE=1 neither reads nor writes it).
    #[command(flatten)]
    pub state: StateArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ClosureFormat::Text)]
    pub format: ClosureFormat,
}

#[derive(Debug, Args)]
pub struct WhyArgs {
    /// A path inside the jail (/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0, a directory), or a
    /// library's soname or a file name as the lock names them (libpcre2-8.so.0).
    #[arg(value_name = "PATH|NAME")]
    pub path: String,
    #[command(flatten)]
    pub jailfile: JailfileArgs,
    /// Show every chain that brings the path (default: the shortest, and how many more).
    #[arg(long)]
    pub all: bool,
    /// Output format (json: schemas/why.schema.json).
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Text,
    /// One JSON object (schemas/status.schema.json).
    Json,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    pub format: StatusFormat,
    /// Exit 0 when every jail is current, 2 when some are behind, 1 on errors (for monitoring).
    #[arg(long = "detailed-exitcode")]
    pub detailed_exitcode: bool,
    /// Also list the processes in each jail that still map a replaced file (to restart).
    #[arg(long)]
    pub processes: bool,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The jail root whose record to forget.
    #[arg(value_name = "ROOT")]
    pub root: PathBuf,
    /// Forget it even though its root and Jailfile are still there (jailprov then no longer
    /// knows which files in it are its own).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Args)]
pub struct HookArgs {
    /// install: write /etc/apt/apt.conf.d/80-jailprov (DPkg::Post-Invoke runs `jailprov hook
    /// run`), or with --systemd a jailprov-hook .service and hourly .timer; remove: delete what
    /// install wrote; run: report the jails behind the host and apply those whose Jailfile says
    /// `[update] on_host_change = "apply"` (always exits 0: apt must never fail because of it).
    #[arg(value_enum, value_name = "ACTION")]
    pub action: HookAction,
    /// install/remove: the systemd units instead of the apt hook.
    #[arg(long)]
    pub systemd: bool,
    /// install/remove: the directory to write into (default /etc/apt/apt.conf.d, or
    /// /etc/systemd/system with --systemd).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HookAction {
    Install,
    Remove,
    Run,
}
