//! jailprov's command line: parse arguments, run one command, print errors once, exit 0/1/2.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use clap::Parser;

/// mimalloc: a plan of a 50,000-path jail makes a few hundred thousand small allocations across
/// threads, where glibc malloc spends a quarter of the run (measured with perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use jailprov::cli::{
    Cli, ClosureArgs, ClosureFormat, ColorWhen, Command, EnterArgs, InitArgs, JailfileArgs, ManpageArgs, PlanFormat,
    SchemaArgs, StateArgs, TraceArgs, WhyArgs,
};
use jailprov::closure;
use jailprov::diagnostics::JailfileErrors;
use jailprov::host::HostFs;
use jailprov::init::SchemaFile;
use jailprov::jail_root::JailRoot;
use jailprov::plan::closure_memo::{Answer, ClosureMemo};
use jailprov::render;
use jailprov::spec::{self, Spec};
use jailprov::state::StateStore;
use jailprov::tree::JailPath;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_errors = wants_json(&cli.command);
    let state_dir = state_dir_of(&cli.command);
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            if is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            match error.downcast_ref::<JailfileErrors>() {
                // Machines reading JSON get their error as JSON too, on stderr.
                _ if json_errors => eprint!("{}", render::error_json(&error)),
                Some(problems) => eprintln!("{problems}"),
                None => eprintln!("error: {error:#}"),
            }
            if let Some(help) = state_dir.and_then(|dir| state_dir_help(&error, &dir)).filter(|_| !json_errors) {
                eprintln!("help: {help}");
            }
            ExitCode::from(1)
        }
    }
}

/// Whether the command was asked for JSON output (`--format json`), so errors are JSON too.
fn wants_json(command: &Command) -> bool {
    match command {
        Command::Plan(args) => args.format == PlanFormat::Json,
        Command::Apply(args) => args.format == PlanFormat::Json,
        Command::Closure(args) => args.format == ClosureFormat::Json,
        Command::Why(args) => args.format == PlanFormat::Json,
        Command::Lock(args) => args.format == PlanFormat::Json,
        Command::Check(args) => args.format == jailprov::cli::CheckFormat::Json,
        Command::Status(args) => args.format == jailprov::cli::StatusFormat::Json,
        _ => false,
    }
}

/// The state directory a command uses, if it uses one.
fn state_dir_of(command: &Command) -> Option<PathBuf> {
    let state = match command {
        Command::Plan(args) => &args.state,
        Command::Apply(args) => &args.state,
        Command::Lock(args) => &args.state,
        Command::Check(args) => &args.state,
        Command::Destroy(args) => &args.state,
        Command::Enter(args) => &args.state,
        Command::Export(args) => &args.state,
        Command::Trace(args) => &args.state,
        _ => return None,
    };
    Some(state.state_dir.clone())
}

/// What to do when a caller without root meets a state directory only root may use (the
/// default one is): the io error alone ("Permission denied") does not say it.
fn state_dir_help(error: &anyhow::Error, state_dir: &Path) -> Option<String> {
    let denied = error
        .chain()
        .any(|cause| cause.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::PermissionDenied));
    let dir = state_dir.display();
    (denied && !nix::unistd::geteuid().is_root() && format!("{error:#}").contains(&dir.to_string())).then(|| {
        format!(
            "jailprov keeps what it manages in the state directory {dir}, which this user may not use: run as \
             root, or pass --state-dir DIR (a directory of yours) to every command for this jail"
        )
    })
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe))
}

fn run(cli: Cli) -> Result<ExitCode> {
    // Read by render (and anything printing through anstream) when it decides to color stdout.
    match cli.color {
        ColorWhen::Auto => anstream::ColorChoice::Auto,
        ColorWhen::Always => anstream::ColorChoice::Always,
        ColorWhen::Never => anstream::ColorChoice::Never,
    }
    .write_global();
    match cli.command {
        Command::Init(args) => init(&args),
        Command::Completions(args) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut command, "jailprov", &mut script);
            print(&String::from_utf8_lossy(&script))
        }
        Command::Manpage(args) => manpage(&args),
        Command::Validate(args) => validate(&args),
        Command::Schema(args) => schema(&args),
        Command::Closure(args) => closure_command(&args),
        Command::Why(args) => why(&args),
        Command::Plan(args) => commands::plan(&args),
        Command::Apply(args) => commands::apply(&args),
        Command::Destroy(args) => commands::destroy(&args),
        Command::Enter(args) => enter(&args),
        Command::Trace(args) => trace(&args),
        Command::Lock(args) => commands::lock(&args),
        Command::Check(args) => commands::check(&args),
        Command::Export(args) => commands::export(&args),
        Command::Status(args) => commands::status(&args),
        Command::Forget(args) => commands::forget(&args),
        Command::Hook(args) => commands::hook(&args),
    }
}

pub(crate) fn print(text: &str) -> Result<ExitCode> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

mod commands;

pub(crate) fn load_spec(args: &JailfileArgs, host: &HostFs) -> Result<Spec> {
    spec::load(&args.file, args.root.as_deref(), host)
}

/// `jailprov init`: resolve the programs first (an unknown one writes nothing), then write.
fn init(args: &InitArgs) -> Result<ExitCode> {
    let host = HostFs::real();
    let mut programs: Vec<jailprov::init::Program> = Vec::new();
    for name in &args.binaries {
        let program = jailprov::init::resolve_program(name, &host)?;
        if !programs.contains(&program) {
            programs.push(program);
        }
    }
    let root = jailprov::init::default_root(args.root.as_deref(), &programs)?;
    let written = jailprov::init::write(&args.file, &programs, &root)?;
    let schema = match &written.schema {
        Some(schema) => format!(" and its schema {}", schema.display()),
        None => String::new(),
    };
    print(&format!(
        "Wrote {}{schema}: {}, jail root {root}.\nNext: jailprov validate -f {}\n",
        written.jailfile.display(),
        jailprov::words::count(programs.len(), "program"),
        args.file.display()
    ))
}

/// `jailprov schema`: the Jailfile schema on stdout, or written into a directory (`--write`).
fn schema(args: &SchemaArgs) -> Result<ExitCode> {
    let Some(dir) = &args.write else { return print(&jailprov::reports::json_schema(args.kind)) };
    if args.kind != jailprov::cli::SchemaKind::Jailfile {
        bail!("--write writes the Jailfile's schema only; `jailprov schema {}` prints that one", args.kind.name());
    }
    let path = dir.join(jailprov::init::SCHEMA_FILE_NAME);
    let said = match jailprov::init::schema_into(&path)? {
        SchemaFile::Written => "Wrote",
        SchemaFile::Same => "Up to date:",
        SchemaFile::Different => bail!(
            "{} exists and is not this jailprov's schema (an older jailprov's, or another file); jailprov never writes \
             over it: remove it, or pass another --write DIR",
            path.display()
        ),
    };
    let absolute = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
    print(&format!("{said} {}.\nName it on a Jailfile's first line: #:schema {}\n", path.display(), absolute.display()))
}

/// `jailprov manpage`: jailprov.1 to stdout, or one page per (sub)command into a directory.
fn manpage(args: &ManpageArgs) -> Result<ExitCode> {
    let mut command = <Cli as clap::CommandFactory>::command().disable_help_subcommand(true);
    command.build();
    let Some(dir) = &args.output else {
        return print(&String::from_utf8_lossy(&man_page(&command)?));
    };
    #[allow(clippy::disallowed_methods)] // the directory the user asked for, outside every jail
    std::fs::create_dir_all(dir).map_err(|error| anyhow!("cannot create {}: {error}", dir.display()))?;
    let mut pages = vec![command.clone()];
    let mut written = 0;
    while let Some(page) = pages.pop() {
        pages.extend(page.get_subcommands().filter(|sub| !sub.is_hide_set()).cloned());
        let path = dir.join(clap_mangen::Man::new(page.clone()).get_filename());
        jailprov::beside::write_atomically(&path, &man_page(&page)?, 0o644, false)?;
        written += 1;
    }
    print(&format!("Wrote {} into {}.\n", jailprov::words::count(written, "man page"), dir.display()))
}

/// One command's man page, in roff.
fn man_page(command: &clap::Command) -> Result<Vec<u8>> {
    let mut roff = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut roff)
        .map_err(|error| anyhow!("cannot render the man page of {}: {error}", command.get_name()))?;
    Ok(roff)
}

fn validate(args: &JailfileArgs) -> Result<ExitCode> {
    let spec = load_spec(args, &HostFs::real())?;
    print(&format!(
        "{} is valid: root {}, {}, {} [[files]], {}, {}\n",
        args.file.display(),
        spec.root
            .as_ref()
            .map_or_else(|| "none (closure, why and lock only)".to_owned(), |root| root.display().to_string()),
        jailprov::words::count(spec.binaries.len(), "binary"),
        spec.files.len(),
        jailprov::words::count(spec.users.len(), "user"),
        jailprov::words::count(spec.mounts.len(), "mount")
    ))
}

/// `jailprov closure`: from the memo when nothing it looked at moved, else computed (and the
/// memo written).
fn closure_command(args: &ClosureArgs) -> Result<ExitCode> {
    let format = match args.format {
        ClosureFormat::Text => "text",
        ClosureFormat::Json => "json",
        ClosureFormat::Tree => "tree",
    };
    let question = format!("closure {format}");
    answer_remembered(&args.jailfile, &args.state, &format!("closure-{format}"), &question, |spec, closure| {
        Ok(match args.format {
            ClosureFormat::Text => render::closure_text(closure) + &included_entries(spec),
            ClosureFormat::Json => render::closure_json(closure),
            ClosureFormat::Tree => render::closure_tree(closure),
        })
    })
}

/// Prints what `render` makes of the closure of the Jailfile: from the memo of `question` when
/// nothing it looked at moved, else computed (and the memo written).
fn answer_remembered(
    jailfile: &JailfileArgs,
    state: &StateArgs,
    stem: &str,
    question: &str,
    render: impl FnOnce(&Spec, &closure::Closure) -> Result<String>,
) -> Result<ExitCode> {
    let memo = ClosureMemo::in_state_dir(&state.state_dir, &jailfile.file, jailfile.root.as_deref(), stem, question);
    if let Some(answer) = memo.as_ref().and_then(ClosureMemo::answer) {
        for warning in &answer.warnings {
            eprintln!("warning: {warning}");
        }
        return print(&answer.output);
    }
    let host = if memo.is_some() { HostFs::real().observing() } else { HostFs::real() };
    let spec = load_spec(jailfile, &host)?;
    let cache = closure::cache::ClosureCache::in_state_dir(&state.state_dir);
    let closure = closure::compute_remembering(&spec, &host, cache)?;
    let answer = Answer { output: render(&spec, &closure)?, warnings: closure.warnings };
    if let Some(memo) = &memo {
        memo.record(host.observations(), &answer);
    }
    print(&answer.output)
}

/// Where the entries written in included Jailfiles are: the closure names entries by key
/// (`binaries[0]`), which alone does not say in which file. Empty without `include`.
fn included_entries(spec: &Spec) -> String {
    let own = format!("{}:", spec.jailfile.display());
    let included: Vec<String> = spec
        .places
        .iter()
        .filter(|(_, place)| !place.starts_with(&own))
        .map(|(key, place)| format!("  {key:<18} {place}\n"))
        .collect();
    if included.is_empty() {
        return String::new();
    }
    format!("written in included Jailfiles:\n{}", included.concat())
}

/// `jailprov why PATH|NAME [--all]`: the chains that bring it, or what a directory is for.
fn why(args: &WhyArgs) -> Result<ExitCode> {
    let format = match args.format {
        PlanFormat::Text => "text",
        PlanFormat::Json => "json",
    };
    // One memo per format: asking about another path replaces it.
    let question = format!("why {format} all={} {}", args.all, args.path);
    answer_remembered(&args.jailfile, &args.state, &format!("why-{format}"), &question, |spec, closure| {
        let jailfile_name = args.jailfile.file.display().to_string();
        let answers = jailprov::why::answer(closure, &args.path, args.all, &jailfile_name)?;
        // The entry's own file and line: with `include` it may be written in another Jailfile.
        let place_of = |why: &closure::Why<'_>| {
            why.origin
                .declaration()
                .and_then(|declaration| spec.place_of(&declaration.key))
                .map_or_else(|| jailfile_name.clone(), str::to_owned)
        };
        Ok(match args.format {
            PlanFormat::Text => jailprov::why::text(&answers, args.all, &place_of),
            PlanFormat::Json => jailprov::reports::to_json(&jailprov::why::report(&answers, &args.path)),
        })
    })
}

/// `jailprov enter`: checks the jail is applied (the record is read here, so that `enter` itself
/// needs nothing of the state layer), then runs the command in it.
fn enter(args: &EnterArgs) -> Result<ExitCode> {
    let spec = load_spec(&args.jailfile, &HostFs::real())?;
    commands::warn_if_applied_elsewhere(&args.jailfile, &args.state.state_dir, spec.root()?);
    if !args.unsafe_root {
        jailprov::root_safety::check(spec.root()?)?;
    }
    check_applied(spec.root()?, &args.state.state_dir)?;
    jailprov::enter::run_in_jail(&spec, &args.command)
}

/// `jailprov trace`: the checks of `enter`, then the traced run; the suggestion goes to stdout,
/// notes to stderr, and the exit code is the command's.
fn trace(args: &TraceArgs) -> Result<ExitCode> {
    let spec = load_spec(&args.jailfile, &HostFs::real())?;
    commands::warn_if_applied_elsewhere(&args.jailfile, &args.state.state_dir, spec.root()?);
    if !args.unsafe_root {
        jailprov::root_safety::check(spec.root()?)?;
    }
    check_applied(spec.root()?, &args.state.state_dir)?;
    let request = jailprov::trace::run::Request {
        jailfile: &args.jailfile.file,
        root_override: args.jailfile.root.as_deref(),
        command: &args.command,
        write: args.write,
    };
    let outcome = jailprov::trace::run::trace(&spec, &request)?;
    print(&outcome.diff)?;
    for note in &outcome.notes {
        eprintln!("jailprov trace: {note}");
    }
    Ok(outcome.code)
}

/// The jail root must exist and be applied: a record of what jailprov put there, or (when the
/// record is not readable, as for a rootless caller) at least a non-empty root.
fn check_applied(root: &Path, state_dir: &Path) -> Result<()> {
    let missing = || format!("the jail {} has not been applied; run `jailprov apply` first", root.display());
    let jail = match JailRoot::open(root) {
        Ok(jail) => jail,
        Err(_) if std::fs::symlink_metadata(root).is_err() => bail!("{}", missing()),
        Err(error) => return Err(error),
    };
    let store = StateStore::for_root(state_dir, root);
    match store.load(root) {
        Ok(state) if state.entries.is_empty() => bail!("{}", missing()),
        Ok(_) => Ok(()),
        Err(_) if jail.list(&JailPath::root())?.is_empty() => bail!("{}", missing()),
        // The record is root's; an unprivileged caller checks what it can see.
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::check_applied;

    #[test]
    fn an_unapplied_jail_is_refused_with_the_command_to_run() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("jail");
        let error = check_applied(&root, &tmp.path().join("state")).expect_err("no jail");
        assert!(format!("{error:#}").contains("run `jailprov apply` first"), "{error:#}");
        #[allow(clippy::disallowed_methods)] // the test's own empty root, not a jail yet
        std::fs::create_dir(&root).expect("mkdir");
        let error = check_applied(&root, &tmp.path().join("state")).expect_err("an empty root");
        assert!(format!("{error:#}").contains("has not been applied"), "{error:#}");
    }
}
