//! What glibc's loader checks before a program starts, beyond finding its files: that every
//! needed symbol version is defined by the copy it picked (elf/dl-version.c), and that every
//! undefined symbol is defined somewhere in the program's load scope (elf/dl-lookup.c), as
//! `ldd -r` reports them. Nothing is run: the facts are the dynamic symbols, `.gnu.version`,
//! DT_VERNEED and DT_VERDEF of each mapped object, read once per file.
//!
//! Only programs the kernel starts are judged (binaries and script interpreters). ELF files of
//! `[[files]]` (plugins, Python extension modules) get their undefined symbols from whoever
//! loads them, which the Jailfile does not say: nothing is reported about them.

use std::borrow::Cow;
use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::dynsym::{gnu_hash, SymbolFacts};
use super::loader::{scope_key, LoadResult, Loader, MappedFacts, SearchStep};
use super::{Closure, ProgramFacts};
use crate::spec::Spec;

/// What the loader would say about one program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Verdict {
    /// The program's host path (canonical).
    pub program: PathBuf,
    /// "ok", "warning" (it starts, but a lazily bound function is missing, or an error was
    /// lowered by `allow_unresolved`), or "error" (the loader refuses to start it).
    pub verdict: Cow<'static, str>,
    /// Its Jailfile entry lowers errors to warnings.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unresolved: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_versions: Vec<MissingVersion>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved_symbols: Vec<UnresolvedSymbol>,
}

/// A needed version the picked copy does not define: "version `X' not found".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MissingVersion {
    pub version: String,
    /// The object whose DT_VERNEED asks for it.
    pub needed_by: PathBuf,
    /// The DT_VERNEED file name.
    pub file: String,
    /// The copy the loader picked for that name, and how.
    pub library: PathBuf,
    pub found_by: SearchStep,
    /// The versions that copy defines.
    pub defined: Vec<String>,
}

/// An undefined symbol no object of the load scope defines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UnresolvedSymbol {
    pub symbol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The object that needs it.
    pub object: PathBuf,
    /// "error": resolved before the program starts (`-z now`, or a non-PLT relocation);
    /// "warning": a lazily bound function, missing at its first call.
    pub severity: Cow<'static, str>,
    /// Why it has that severity.
    pub binding: Cow<'static, str>,
}

impl Verdict {
    fn has_errors(&self) -> bool {
        !self.missing_versions.is_empty() || self.unresolved_symbols.iter().any(|symbol| symbol.severity == "error")
    }
}

/// Judges a program and its script interpreters (each gets its own verdict); `allow_unresolved`
/// comes from the Jailfile entry that declared it.
pub(super) fn check_program(loader: &Loader, mut facts: ProgramFacts, allow_unresolved: bool) -> Result<ProgramFacts> {
    if let Some(load) = &facts.load {
        // Only executables are started; a shared object named in `binaries` is loaded by others.
        if load.interpreter.is_some() {
            let symbols = facts.symbols.take();
            let (verdict, imports) = judge_load(loader, &facts.canonical, load, symbols, allow_unresolved)?;
            facts.verdict = Some(verdict);
            facts.imports = imports;
        }
    }
    for interpreter in [&mut facts.shebang, &mut facts.env_program] {
        if let Some(program) = interpreter.take() {
            *interpreter = Some(Box::new(check_program(loader, *program, allow_unresolved)?));
        }
    }
    Ok(facts)
}

/// Fails with every program the loader would refuse to start (unless its entry allows it);
/// turns the rest of the findings into warnings.
pub(super) fn report(spec: &Spec, closure: &mut Closure) -> Result<()> {
    let mut seen = BTreeSet::new();
    closure.symbols.retain(|verdict| seen.insert((verdict.program.clone(), verdict.allow_unresolved)));
    let mut errors = String::new();
    for verdict in &closure.symbols {
        let refused = verdict.has_errors() && !verdict.allow_unresolved;
        for missing in &verdict.missing_versions {
            let line = describe_missing_version(&verdict.program, missing);
            if refused {
                let _ = writeln!(errors, "  {line}");
            } else {
                closure.warnings.push(format!("{line} (allowed by `allow_unresolved`)"));
            }
        }
        for symbol in &verdict.unresolved_symbols {
            let line = describe_unresolved(&verdict.program, symbol);
            if refused && symbol.severity == "error" {
                let _ = writeln!(errors, "  {line}");
            } else if symbol.severity == "error" {
                closure.warnings.push(format!("{line} (allowed by `allow_unresolved`)"));
            } else {
                closure.warnings.push(line);
            }
        }
    }
    if !errors.is_empty() {
        bail!(
            "programs the loader would refuse to start:\n{errors}  make the search order pick a copy that has \
             them (RPATH/RUNPATH, the files on the host), or, if the program copes, set \
             `allow_unresolved = true` on its `binaries` entry in {}",
            spec.jailfile.display()
        );
    }
    Ok(())
}

fn describe_missing_version(program: &Path, missing: &MissingVersion) -> String {
    let defined = if missing.defined.is_empty() { "none".to_owned() } else { missing.defined.join(", ") };
    format!(
        "{}: version `{}' not found in {} (loaded for {}, found through {}; required by {}); that copy defines: {}",
        program.display(),
        missing.version,
        missing.library.display(),
        missing.file,
        missing.found_by,
        missing.needed_by.display(),
        defined
    )
}

fn describe_unresolved(program: &Path, symbol: &UnresolvedSymbol) -> String {
    let version = symbol.version.as_deref().map(|version| format!(", version {version}")).unwrap_or_default();
    format!(
        "{}: undefined symbol `{}'{version} needed by {} ({}): no object the program loads defines it",
        program.display(),
        symbol.symbol,
        symbol.object.display(),
        symbol.binding
    )
}

/// The verdict, and the run-time needs the program's own imports trigger (read here, with its
/// symbols, rather than a second time). `program_symbols`: the program's own symbols when its
/// load read them already.
/// Remembered between runs (src/closure/cache.rs) under a key naming every file it reads.
fn judge_load(
    loader: &Loader,
    program: &Path,
    load: &LoadResult,
    program_symbols: Option<Arc<SymbolFacts>>,
    allow_unresolved: bool,
) -> Result<(Verdict, Vec<super::runtime::Import>)> {
    let key = loader.verdict_key(program, allow_unresolved, load);
    if let Some(remembered) = key.as_ref().and_then(|key| loader.closure_cache().verdict(key)) {
        return Ok(remembered);
    }
    let (verdict, imports) = judge_load_afresh(loader, program, load, program_symbols, allow_unresolved)?;
    if let Some(key) = key {
        loader.closure_cache().learn_verdict(key, &verdict, &imports);
    }
    Ok((verdict, imports))
}

fn judge_load_afresh(
    loader: &Loader,
    program: &Path,
    load: &LoadResult,
    program_symbols: Option<Arc<SymbolFacts>>,
    allow_unresolved: bool,
) -> Result<(Verdict, Vec<super::runtime::Import>)> {
    let mapped = &load.mapped;
    let order = breadth_first(mapped, 0);
    let mut facts: Vec<Option<Arc<SymbolFacts>>> = vec![None; mapped.len()];
    let mut program_symbols = program_symbols;
    for &index in &order {
        let path = &mapped[index].path;
        facts[index] = Some(match (index, program_symbols.take()) {
            (0, Some(known)) => known,
            (0, None) => loader.symbols_uncached(path)?,
            _ => loader.symbols(path)?,
        });
    }
    let in_scope = |index: usize| facts[index].as_deref();
    let imports =
        in_scope(0).map(|own| super::runtime::program_imports(own, &mapped[0].info.needed, load)).unwrap_or_default();
    let mut verdict = Verdict {
        program: program.to_path_buf(),
        verdict: "ok".into(),
        allow_unresolved,
        missing_versions: Vec::new(),
        unresolved_symbols: Vec::new(),
    };
    for &index in &order {
        let Some(object_facts) = in_scope(index) else { continue };
        check_versions(mapped, &order, index, object_facts, &in_scope, &mut verdict.missing_versions);
        // A library missing on the host (allowed by `allow_missing`) leaves its symbols
        // undefined: that is already known, not news.
        if load.missing.is_empty() {
            check_undefined(loader, mapped, &order, index, object_facts, &in_scope, &mut verdict.unresolved_symbols)?;
        }
    }
    verdict.verdict = if verdict.has_errors() && !allow_unresolved {
        "error"
    } else if verdict.missing_versions.is_empty() && verdict.unresolved_symbols.is_empty() {
        "ok"
    } else {
        "warning"
    }
    .into();
    Ok((verdict, imports))
}

/// The objects from `start` on in glibc's breadth-first order (each once); when `start` is the
/// program, the interpreter comes last if nothing needs it by name.
fn breadth_first(mapped: &[MappedFacts], start: usize) -> Vec<usize> {
    let mut order = vec![start];
    let mut seen = vec![false; mapped.len()];
    seen[start] = true;
    let mut queue = VecDeque::from([start]);
    while let Some(current) = queue.pop_front() {
        for &dependency in mapped[current].dependencies.iter().flatten() {
            if !seen[dependency] {
                seen[dependency] = true;
                order.push(dependency);
                queue.push_back(dependency);
            }
        }
    }
    if start == 0 {
        let interpreter = mapped.iter().position(|object| object.found_by == SearchStep::Interpreter);
        if let Some(interpreter) = interpreter.filter(|&index| !seen[index]) {
            order.push(interpreter);
        }
    }
    order
}

/// glibc's `_dl_check_map_versions`: each non-weak DT_VERNEED version must be in the DT_VERDEF
/// of the object that answers to its file name (objects without DT_VERDEF are not checked).
fn check_versions<'a>(
    mapped: &[MappedFacts],
    order: &[usize],
    index: usize,
    object_facts: &SymbolFacts,
    in_scope: &impl Fn(usize) -> Option<&'a SymbolFacts>,
    missing: &mut Vec<MissingVersion>,
) {
    for need in object_facts.version_needs.iter().filter(|need| !need.weak) {
        let provider = order.iter().copied().find(|&other| mapped[other].names.contains(&need.file));
        let Some(provider) = provider else { continue };
        let Some(provider_facts) = in_scope(provider) else { continue };
        if !provider_facts.has_version_definitions() || provider_facts.defines_version(&need.version) {
            continue;
        }
        missing.push(MissingVersion {
            version: need.version.clone(),
            needed_by: mapped[index].path.clone(),
            file: need.file.clone(),
            library: mapped[provider].path.clone(),
            found_by: mapped[provider].found_by.clone(),
            defined: provider_facts.defined_versions().into_iter().map(str::to_owned).collect(),
        });
    }
}

/// Every undefined, non-weak symbol of one object must be defined in the load scope: first
/// looked up among the object's own dependencies (memoized per such scope), then what is left
/// in the program's whole scope.
fn check_undefined<'a>(
    loader: &Loader,
    mapped: &[MappedFacts],
    order: &[usize],
    index: usize,
    object_facts: &SymbolFacts,
    in_scope: &impl Fn(usize) -> Option<&'a SymbolFacts>,
    unresolved: &mut Vec<UnresolvedSymbol>,
) -> Result<()> {
    if object_facts.undefined.is_empty() {
        return Ok(());
    }
    let own_scope = if index == 0 { order.to_vec() } else { breadth_first(mapped, index) };
    let compute = || {
        let own_facts: Vec<&SymbolFacts> = own_scope.iter().filter_map(|&other| in_scope(other)).collect();
        let mut providers: Vec<(&str, &SymbolFacts)> = Vec::new();
        for need in &object_facts.version_needs {
            if providers.iter().any(|(file, _)| *file == need.file) {
                continue;
            }
            let provider = own_scope.iter().copied().find(|&other| mapped[other].names.contains(&need.file));
            if let Some(facts) = provider.and_then(in_scope) {
                providers.push((need.file.as_str(), facts));
            }
        }
        Ok(unresolved_among(object_facts, &own_facts, &providers))
    };
    // The program's own scope starts with the program: no other program shares it, so it is
    // not memoized (a library's is, and most programs share libc's).
    let left = if index == 0 {
        Arc::new(compute()?)
    } else {
        loader.unresolved_in_scope(own_scope.iter().map(|&other| scope_key(&mapped[other])).collect(), compute)?
    };
    if left.is_empty() {
        return Ok(());
    }
    let whole_scope: Vec<&SymbolFacts> = order.iter().filter_map(|&other| in_scope(other)).collect();
    let left: Vec<usize> = left
        .iter()
        .copied()
        .filter(|&reference| {
            let reference = &object_facts.undefined[reference];
            !whole_scope.iter().any(|facts| {
                facts.satisfies(object_facts.name_of(reference), object_facts.version_of(reference), reference.hidden)
            })
        })
        .collect();
    if left.is_empty() {
        return Ok(());
    }
    let object = &mapped[index];
    let uses = loader.relocation_uses(&object.path, object_facts)?;
    for reference in left.into_iter().map(|reference| &object_facts.undefined[reference]) {
        let (severity, binding) = if uses.at_start.contains(&reference.index) {
            ("error", "a relocation resolved at start")
        } else if uses.plt.contains(&reference.index) && object.info.bind_now {
            ("error", "linked -z now")
        } else if uses.plt.contains(&reference.index) {
            ("warning", "bound lazily: the program fails at its first call")
        } else {
            // No relocation names it: the loader never looks it up.
            continue;
        };
        unresolved.push(UnresolvedSymbol {
            symbol: String::from_utf8_lossy(object_facts.name_of(reference)).into_owned(),
            version: object_facts.version_of(reference).map(str::to_owned),
            object: object.path.clone(),
            severity: severity.into(),
            binding: binding.into(),
        });
    }
    Ok(())
}

/// Indexes (into `object.undefined`) of the references no object of `scope` satisfies. A
/// versioned reference is tried first in the object its DT_VERNEED names (`providers`: file
/// name -> that object), where it almost always is: one probe, its version compared by index
/// (looked up once per DT_VERNEED pair, not once per reference), instead of one per object.
fn unresolved_among(object: &SymbolFacts, scope: &[&SymbolFacts], providers: &[(&str, &SymbolFacts)]) -> Vec<usize> {
    let first_tries: Vec<Option<(&SymbolFacts, Vec<u16>)>> = object
        .needs()
        .map(|(file, version)| {
            let (_, provider) = providers.iter().find(|(provider_file, _)| *provider_file == file)?;
            Some((*provider, provider.version_indexes(version)))
        })
        .collect();
    object
        .undefined
        .iter()
        .enumerate()
        .filter(|(_, reference)| {
            let name = object.name_of(reference);
            let hash = gnu_hash(name);
            let first_try = object.need_of(reference).and_then(|need| first_tries.get(need)?.as_ref());
            if first_try.is_some_and(|(facts, indexes)| facts.satisfies_indexed(name, hash, indexes, reference.hidden))
            {
                return false;
            }
            let version = object.version_of(reference);
            !scope.iter().any(|facts| facts.satisfies_hashed(name, hash, version, reference.hidden))
        })
        .map(|(index, _)| index)
        .collect()
}
