//! jailprov's command line: parse arguments, run one command, print errors once, exit 0/1/2.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use clap::Parser;

/// mimalloc: a plan of a 50,000-path jail makes a few hundred thousand small allocations across
/// threads, where glibc malloc spends a quarter of the run (measured with perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use jailprov::cli::{Cli, ClosureArgs, ClosureFormat, Command, JailfileArgs, WhyArgs};
use jailprov::closure;
use jailprov::diagnostics::JailfileErrors;
use jailprov::host::HostFs;
use jailprov::spec::{self, Spec};
use jailprov::tree::JailPath;
use jailprov::{jailfile, render};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            if is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            match error.downcast_ref::<JailfileErrors>() {
                Some(problems) => eprintln!("{problems}"),
                None => eprintln!("error: {error:#}"),
            }
            ExitCode::from(1)
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe))
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate(args) => validate(&args),
        Command::Schema => print(&jailfile::json_schema()),
        Command::Closure(args) => closure_command(&args),
        Command::Why(args) => why(&args),
        Command::Plan(args) => commands::plan(&args),
        Command::Apply(args) => commands::apply(&args),
        Command::Destroy(args) => commands::destroy(&args),
        Command::Enter(args) => jailprov::enter::command(&args),
        Command::Lock(args) => commands::lock(&args),
        Command::Check(args) => jailprov::check::command(&args),
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

fn validate(args: &JailfileArgs) -> Result<ExitCode> {
    let spec = load_spec(args, &HostFs::real())?;
    print(&format!(
        "{} is valid: root {}, {} binaries, {} [[files]], {} users, {} mounts\n",
        args.file.display(),
        spec.root.display(),
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
