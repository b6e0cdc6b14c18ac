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
    TraceArgs, WhyArgs,
};
use jailprov::closure;
use jailprov::diagnostics::JailfileErrors;
use jailprov::host::HostFs;
use jailprov::jail_root::JailRoot;
use jailprov::spec::{self, Spec};
use jailprov::state::StateStore;
use jailprov::tree::JailPath;
use jailprov::{jailfile, render};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_errors = wants_json(&cli.command);
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
        Command::Status(args) => args.format == jailprov::cli::StatusFormat::Json,
        _ => false,
    }
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
        Command::Schema => print(&jailfile::json_schema()),
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
        "Wrote {}{schema}: {} programs, jail root {root}.\nNext: jailprov validate -f {}\n",
        written.jailfile.display(),
        programs.len(),
        args.file.display()
    ))
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
    print(&format!("Wrote {written} man pages into {}.\n", dir.display()))
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
        "{} is valid: root {}, {} binaries, {} [[files]], {} users, {} mounts\n",
        args.file.display(),
        spec.root
            .as_ref()
            .map_or_else(|| "none (closure, why and lock only)".to_owned(), |root| root.display().to_string()),
        spec.binaries.len(),
        spec.files.len(),
        spec.users.len(),
        spec.mounts.len()
    ))
}

fn closure_command(args: &ClosureArgs) -> Result<ExitCode> {
    let host = HostFs::real();
    let spec = load_spec(&args.jailfile, &host)?;
    let closure = closure::compute(&spec, &host)?;
    let text = match args.format {
        ClosureFormat::Text => render::closure_text(&closure),
        ClosureFormat::Json => render::closure_json(&closure),
        ClosureFormat::Tree => render::closure_tree(&closure),
    };
    print(&text)
}

fn why(args: &WhyArgs) -> Result<ExitCode> {
    let host = HostFs::real();
    let spec = load_spec(&args.jailfile, &host)?;
    let closure = closure::compute(&spec, &host)?;
    let path = JailPath::from_host(&args.path).map_err(|error| anyhow!("{}: {error}", args.path.display()))?;
    let Some(why) = closure.why(&path) else {
        return Err(anyhow!("{path} is not in the jail described by {}", args.jailfile.file.display()));
    };
    let jailfile_name = PathBuf::from(&args.jailfile.file).display().to_string();
    print(&render::why_text(&why, &jailfile_name))
}

/// `jailprov enter`: checks the jail is applied (the record is read here, so that `enter` itself
/// needs nothing of the state layer), then runs the command in it.
fn enter(args: &EnterArgs) -> Result<ExitCode> {
    let spec = load_spec(&args.jailfile, &HostFs::real())?;
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
