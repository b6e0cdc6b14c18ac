//! The closure: every host file the jail needs, found the way glibc's loader would find it.
//!
//! Input is a validated [`Spec`]; output is a [`Closure`], a map from jail path to [`Entry`]
//! (what it is, which host file it comes from, and why it is there: its typed [`Origin`]s).
//! Nothing is executed: ELF files are read with goblin, scripts by their `#!` line, NSS modules
//! from nsswitch.conf; `[[files]]` trees are walked in `walk`.

pub mod cache;
mod chains;
pub mod dynsym;
pub mod elf;
pub mod ld_cache;
pub mod ld_cache_writer;
pub mod loader;
pub mod nss;
pub mod origin;
pub mod platform;
pub mod runtime;
pub mod script;
pub mod symbols;
pub use chains::MAX_CHAINS;
mod walk;

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap as HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::Serialize;

use crate::host::{HostFs, Link, StatPrint, BINARY_SEARCH_PATH};
use crate::spec::{Attributes, Exclude, FileSpec, HostSource, Spec};
use crate::tree::JailPath;
use elf::ElfIdent;
use loader::{LoadResult, Loader, MissingLibrary};
use origin::Declaration;
pub use origin::Origin;
use walk::{expand_source, may_be_loaded, source_base, Found};

/// A fixed-seed xorshift64 stream: the ELF, symbol and ld.so.cache readers' corruption tests
/// mutate real files with it, reproducibly and without a crate.
#[cfg(test)]
pub(crate) fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// What a path in the jail is, and so how it gets there.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// A program named in `binaries`.
    Binary,
    /// The ELF interpreter (PT_INTERP) of a program.
    Interpreter,
    /// A shared library some object needs (DT_NEEDED).
    Library,
    /// The `#!` interpreter of a script (or the program `/usr/bin/env` runs).
    ScriptInterpreter,
    /// A module glibc dlopens for nsswitch.conf.
    NssModule,
    /// A host file from `[[files]]`.
    File,
    /// A symlink, kept with its own text.
    Symlink,
    /// A directory from `[[dirs]]`, a `[[files]]` tree, a home or a mount target.
    Dir,
    /// A device node from `devices`.
    Device,
    /// A file with inline `content` from the Jailfile.
    Content,
    /// A file jailprov writes: /etc/passwd, /etc/group, /etc/nsswitch.conf.
    Generated,
    /// What a program opens while it runs (a gconv module, a locale, a zone...), brought for an
    /// import of one of the jail's objects (runtime.rs). Last: any other reason for the same
    /// path names it better.
    #[serde(rename = "run-time")]
    RuntimeFile,
}

impl EntryKind {
    pub fn label(self) -> &'static str {
        match self {
            EntryKind::Binary => "binary",
            EntryKind::Interpreter => "interpreter",
            EntryKind::Library => "library",
            EntryKind::ScriptInterpreter => "script-interpreter",
            EntryKind::NssModule => "nss-module",
            EntryKind::File => "file",
            EntryKind::Symlink => "symlink",
            EntryKind::Dir => "dir",
            EntryKind::Device => "device",
            EntryKind::Content => "content",
            EntryKind::Generated => "generated",
            EntryKind::RuntimeFile => "run-time",
        }
    }
}

/// One path of the jail.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Entry {
    #[schemars(with = "String")]
    pub path: JailPath,
    pub kind: EntryKind,
    /// The host file it is copied from (for a symlink: the link on the host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
    /// A symlink's text, exactly as on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// For libraries: the DT_NEEDED names it was loaded as.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub sonames: BTreeSet<String>,
    /// Why it is in the jail (sorted by how each shows, each once); listed as `needed_by`,
    /// each text once.
    #[serde(rename = "needed_by", serialize_with = "names_shown_once")]
    #[schemars(with = "Vec<String>")]
    pub origins: Vec<Origin>,
    /// Overrides from the Jailfile (mode, owner, group, setuid).
    #[serde(skip)]
    pub attributes: Attributes,
    /// Inline or generated content (bytes: a generated ld.so.cache is binary).
    #[serde(skip)]
    pub content: Option<Vec<u8>>,
    /// The host source's stat and mode as the closure saw it (spares the desired tree a second
    /// stat of every file in a large `[[files]]` tree).
    #[serde(skip)]
    pub source_stat: Option<(StatPrint, u32)>,
}

/// Every path the jail will hold (`closure --format json`, schemas/closure.schema.json).
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
#[schemars(title = "jailprov closure --format json")]
pub struct Closure {
    #[serde(serialize_with = "entries_as_list")]
    #[schemars(with = "Vec<Entry>")]
    /// Boxed: 50,000 entries are moved from the builder's map into this one, and on into the
    /// desired tree; moving pointers spares copying (and faulting in) whole entries each time.
    pub entries: BTreeMap<JailPath, Box<Entry>>,
    /// Paths the `exclude` patterns removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub excluded: Vec<JailPath>,
    /// Sonames missing but allowed by `allow_missing`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_missing: Vec<String>,
    /// Things a user should know that do not stop the jail from being built.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Each started program's symbol and version verdict (src/closure/symbols.rs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub symbols: Vec<symbols::Verdict>,
    /// What the jail may need that no copy gives (a socket to mount), with the Jailfile lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Entry {
    /// Its origins as lists show them: each text once.
    pub fn needers(&self) -> impl Iterator<Item = &Origin> {
        origin::shown_once(&self.origins)
    }
}

fn names_shown_once<S: serde::Serializer>(origins: &[Origin], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(origin::shown_once(origins).map(|origin| origin.name()))
}

fn entries_as_list<S: serde::Serializer>(
    entries: &BTreeMap<JailPath, Box<Entry>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(entries.values())
}

/// How deep `#!` interpreters may nest (the kernel allows 4 levels of binfmt rewriting).
const MAX_SCRIPT_DEPTH: usize = 4;

/// What one program (binary, script interpreter, ELF file of `[[files]]`) brings.
struct ProgramFacts {
    /// Host path as named, links met resolving it, and its canonical path.
    named: PathBuf,
    links: Vec<Link>,
    canonical: PathBuf,
    ident: Option<ElfIdent>,
    load: Option<LoadResult>,
    /// For a script: the `#!` interpreter, and the program `#!/usr/bin/env NAME` runs.
    shebang: Option<Box<ProgramFacts>>,
    env_program: Option<Box<ProgramFacts>>,
    /// What the loader's symbol and version checks say, for a program that is started.
    verdict: Option<symbols::Verdict>,
    /// The program's own symbols, read with its ELF headers when it is judged (taken by the check).
    symbols: Option<Arc<dynsym::SymbolFacts>>,
    /// The run-time needs its imports trigger (read with its symbols for the checks).
    imports: Vec<runtime::Import>,
}

/// The closure of a validated Jailfile on this host (its loader rules and ld.so.cache); the
/// warnings, which do not stop the jail from being built, go to stderr.
pub fn compute(spec: &Spec, host: &HostFs) -> Result<Closure> {
    compute_remembering(spec, host, cache::ClosureCache::default())
}

/// [`compute`], trusting what `cache` remembers of unchanged files, and saving what it learns.
pub fn compute_remembering(spec: &Spec, host: &HostFs, cache: cache::ClosureCache) -> Result<Closure> {
    let loader = Loader::with_host(host.clone(), loader::LoaderOptions::host())?.remembering(cache);
    let closure = build(spec, &loader)?;
    loader.closure_cache().save();
    for warning in &closure.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(closure)
}

/// Builds the closure of a validated Jailfile.
pub fn build(spec: &Spec, loader: &Loader) -> Result<Closure> {
    let host = loader.host();
    let search_path = program_search_path(spec);
    let mut builder = Builder {
        host,
        entries: HashMap::default(),
        closure: Closure::default(),
        resolved: HashMap::default(),
        missing: Vec::new(),
        importers: Vec::new(),
    };

    // Programs are read in parallel and placed, in Jailfile order, as their results arrive: the
    // placing overlaps the reading instead of waiting for all of it.
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::scope(|scope| -> Result<()> {
        let search_path = &search_path;
        scope.spawn(move || {
            spec.binaries.par_iter().enumerate().for_each_with(sender, |sender, (index, binary)| {
                // A send fails only when placing stopped at an error; the rest is then moot.
                let facts = analyze_program(loader, &binary.host_path, search_path, true, 0)
                    .and_then(|facts| symbols::check_program(loader, facts, binary.allow_unresolved));
                let _ = sender.send((index, facts));
            });
        });
        let mut arrived = BTreeMap::new();
        let mut next = 0;
        for (index, facts) in receiver {
            arrived.insert(index, facts);
            while let Some(facts) = arrived.remove(&next) {
                let binary = &spec.binaries[next];
                let facts = facts.with_context(|| {
                    format!("{} ({} = {:?})", binary.host_path.display(), binary.key, binary.declared)
                })?;
                builder.add_program(&facts, EntryKind::Binary, Origin::Declared(Declaration::binary(binary)))?;
                next += 1;
            }
        }
        Ok(())
    })?;

    let mut elf_files = Vec::new();
    let _t = crate::timings::phase("closure: [[files]] trees");
    for file in &spec.files {
        builder.add_file_spec(file, &spec.exclude, &mut elf_files)?;
    }
    drop(_t);
    let _t = crate::timings::phase("closure: their ELF loads");
    let loads: Vec<(JailPath, Result<ProgramFacts>)> = elf_files
        .into_par_iter()
        .map(|(host_path, jail_path)| (jail_path, analyze_program(loader, &host_path, &search_path, false, 0)))
        .collect();
    for (jail_path, facts) in loads {
        builder.add_dependencies(&facts?, &jail_path)?;
    }

    drop(_t);
    let _t = crate::timings::phase("closure: the rest, sorted");
    for device in &spec.devices {
        let source = Some(PathBuf::from(device.path.as_str()));
        let origin = Origin::Declared(Declaration::device(device));
        builder.add(device.path.clone(), EntryKind::Device, source, origin).attributes =
            Attributes { mode: device.mode, owner: Some(device.owner), group: Some(device.group), keep_setuid: false };
    }
    for dir in &spec.dirs {
        builder.add(dir.path.clone(), EntryKind::Dir, None, Origin::Declared(Declaration::dir(dir))).attributes =
            Attributes { mode: Some(dir.mode), owner: Some(dir.owner), group: Some(dir.group), keep_setuid: false };
    }
    for mount in &spec.mounts {
        if !builder.entries.contains_key(&mount.target) {
            builder.add(mount.target.clone(), EntryKind::Dir, None, Origin::MountTarget(Declaration::mount(mount)));
        }
    }
    builder.add_accounts(spec);
    // Before NSS: the resolver files it brings are network files, which ask for nsswitch.conf.
    runtime::add_runtime(spec, loader, &mut builder)?;
    nss::add_nss(spec, loader, &mut builder)?;
    builder.add_usr_merge_links()?;
    builder.apply_exclude(spec);
    ld_cache_writer::add_jail_cache(spec, loader, &mut builder);
    builder.finish_missing(spec)?;
    symbols::report(spec, &mut builder.closure)?;
    Ok(builder.finish())
}

/// Where `/usr/bin/env NAME` looks NAME up: the jail's PATH if the Jailfile sets one.
fn program_search_path(spec: &Spec) -> Vec<String> {
    match spec.enter.env.get("PATH") {
        Some(path) => path.split(':').filter(|dir| dir.starts_with('/')).map(str::to_owned).collect(),
        None => BINARY_SEARCH_PATH.iter().map(|dir| (*dir).to_owned()).collect(),
    }
}

/// Reads what a program needs: its ELF closure, or its script interpreters (recursively);
/// `judged`: its symbols are checked next, so they are read with its headers.
fn analyze_program(
    loader: &Loader,
    named: &Path,
    search_path: &[String],
    judged: bool,
    depth: usize,
) -> Result<ProgramFacts> {
    let host = loader.host();
    let resolved = host.resolve(named)?;
    let canonical = resolved.path;
    let mut facts = ProgramFacts {
        named: named.to_path_buf(),
        links: resolved.links,
        canonical: canonical.clone(),
        ident: None,
        load: None,
        shebang: None,
        env_program: None,
        verdict: None,
        symbols: None,
        imports: Vec::new(),
    };
    let (info, symbols) = if judged { loader.program(&canonical)? } else { (loader.elf(&canonical)?, None) };
    facts.symbols = symbols;
    if let Some(info) = info {
        facts.ident = Some(info.ident);
        if info.has_dynamic || info.interpreter.is_some() {
            let load = if info.interpreter.is_some() {
                loader.load_executable(&canonical)?
            } else {
                loader.load_library(&canonical)?
            };
            facts.load = Some(load);
        }
        return Ok(facts);
    }
    let Some(shebang) = script::read_shebang(host, &canonical)? else { return Ok(facts) };
    if depth >= MAX_SCRIPT_DEPTH {
        bail!("{}: `#!` interpreters nest more than {MAX_SCRIPT_DEPTH} levels deep", named.display());
    }
    let programs = script::programs_run_by(&shebang, host, search_path)
        .with_context(|| format!("{}: its `#!` line", named.display()))?;
    facts.shebang = Some(Box::new(analyze_program(loader, &programs.interpreter, search_path, judged, depth + 1)?));
    if let Some(program) = &programs.env_program {
        facts.env_program = Some(Box::new(analyze_program(loader, program, search_path, judged, depth + 1)?));
    }
    Ok(facts)
}

/// Where a host path lands: the symlinks on its way (with their jail paths) and its canonical
/// jail path.
struct Placement {
    links: Vec<(JailPath, Link)>,
    path: JailPath,
}

impl Placement {
    fn new(links: &[Link], canonical: &Path) -> Result<Placement> {
        Ok(Placement { links: links_in_the_jail(links)?, path: jail_path_of(canonical)? })
    }
}

/// Host symlinks, each with the jail path it lands at.
fn links_in_the_jail(links: &[Link]) -> Result<Vec<(JailPath, Link)>> {
    links.iter().map(|link| Ok((jail_path_of(&link.path)?, link.clone()))).collect()
}

/// Accumulates entries; keeps the canonical jail path of every host path it has placed.
pub struct Builder<'a> {
    host: &'a HostFs,
    /// The entries while building: hashed (a sorted map of long common-prefix paths spends its
    /// time in memcmp); sorted once in `finish`.
    /// Boxed: a 50,000-entry map is sorted at the end, and moving pointers is cheap where
    /// moving whole entries is not.
    entries: HashMap<JailPath, Box<Entry>>,
    closure: Closure,
    /// Host path -> the links on its way and its canonical jail path (resolved once).
    resolved: HashMap<std::ffi::OsString, Arc<Placement>>,
    missing: Vec<MissingLibrary>,
    /// Programs whose imports trigger a run-time need (libraries are scanned in runtime.rs).
    importers: Vec<runtime::Importer>,
}

/// Records one more reason for `entry` (origins are deduplicated in `finish`; most repeats are
/// the same origin in a row).
fn note_need(entry: &mut Entry, origin: Origin) {
    if entry.origins.last() != Some(&origin) {
        entry.origins.push(origin);
    }
}

impl Builder<'_> {
    /// The entries so far, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values().map(|entry| &**entry)
    }

    pub fn contains(&self, path: &JailPath) -> bool {
        self.entries.contains_key(path)
    }

    /// The closure, sorted by path, each entry's origins sorted and unique.
    fn finish(mut self) -> Closure {
        let mut sorted: Vec<(JailPath, Box<Entry>)> = self.entries.into_iter().collect();
        sorted.par_sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        self.closure.entries = sorted
            .into_iter()
            .map(|(path, mut entry)| {
                entry.origins.sort_unstable_by(Origin::listing_order);
                entry.origins.dedup();
                (path, entry)
            })
            .collect();
        self.closure
    }

    pub fn warn(&mut self, warning: String) {
        self.closure.warnings.push(warning);
    }

    /// Adds (or merges into) the entry at `path`.
    pub fn add(&mut self, path: JailPath, kind: EntryKind, source: Option<PathBuf>, origin: Origin) -> &mut Entry {
        let entry = match self.entries.entry(path) {
            std::collections::hash_map::Entry::Occupied(occupied) => occupied.into_mut(),
            std::collections::hash_map::Entry::Vacant(vacant) => {
                let path = vacant.key().clone();
                vacant.insert(Box::new(Entry {
                    path,
                    kind,
                    source,
                    target: None,
                    sonames: BTreeSet::new(),
                    origins: Vec::new(),
                    attributes: Attributes::default(),
                    content: None,
                    source_stat: None,
                }))
            }
        };
        // A path reached for several reasons keeps the most specific kind (binary over library...).
        if kind < entry.kind && entry.kind != EntryKind::Symlink {
            entry.kind = kind;
        }
        note_need(entry, origin);
        entry
    }

    /// Places a host path at the same jail path: every symlink on the way (with its text) and
    /// the final file. Returns the canonical jail path.
    pub fn add_host_path(&mut self, host_path: &Path, kind: EntryKind, origin: Origin) -> Result<JailPath> {
        let known = match self.resolved.get(host_path.as_os_str()) {
            Some(known) => known.clone(),
            None => {
                let resolved = self.host.resolve(host_path)?;
                let known = Arc::new(Placement::new(&resolved.links, &resolved.path)?);
                self.resolved.insert(host_path.as_os_str().to_owned(), known.clone());
                known
            }
        };
        let path = &known.path;
        self.add_links_on_the_way(&known.links, path, &origin);
        if let Some(entry) = self.entries.get_mut(path) {
            // Already placed: only record who else needs it (the common case for libc & co).
            if kind < entry.kind && entry.kind != EntryKind::Symlink {
                entry.kind = kind;
            }
            note_need(entry, origin);
        } else {
            self.add(path.clone(), kind, Some(PathBuf::from(path.as_str())), origin);
        }
        Ok(path.clone())
    }

    /// The canonical jail path of a host path placed before.
    fn placed(&self, host_path: &Path) -> Option<&JailPath> {
        self.resolved.get(host_path.as_os_str()).map(|known| &known.path)
    }

    /// The symlinks met on the way to `to`, there for the same reason as `to`.
    fn add_links_on_the_way(&mut self, links: &[(JailPath, Link)], to: &JailPath, reason: &Origin) {
        if !links.is_empty() {
            let origin = Origin::Link { to: to.clone(), reason: Box::new(reason.clone()) };
            self.add_placed_links(links, &origin);
        }
    }

    fn add_placed_links(&mut self, links: &[(JailPath, Link)], origin: &Origin) {
        for (path, link) in links {
            if let Some(entry) = self.entries.get_mut(path).filter(|entry| entry.kind == EntryKind::Symlink) {
                note_need(entry, origin.clone());
                continue;
            }
            let entry = self.add(path.clone(), EntryKind::Symlink, Some(link.path.clone()), origin.clone());
            entry.kind = EntryKind::Symlink;
            entry.target = Some(link.target.clone());
        }
    }

    /// A program and everything it loads.
    fn add_program(&mut self, facts: &ProgramFacts, kind: EntryKind, origin: Origin) -> Result<JailPath> {
        let placement = Placement::new(&facts.links, &facts.canonical)?;
        let path = placement.path.clone();
        self.add_links_on_the_way(&placement.links, &path, &origin);
        self.add(path.clone(), kind, Some(facts.canonical.clone()), origin);
        self.closure.symbols.extend(facts.verdict.clone());
        self.importers.extend(facts.imports.iter().map(|import| runtime::Importer {
            import: import.clone(),
            jail_path: path.clone(),
            host_path: facts.canonical.clone(),
        }));
        self.resolved.insert(facts.named.as_os_str().to_owned(), Arc::new(placement));
        self.add_dependencies(facts, &path)?;
        Ok(path)
    }

    /// What a program loads or runs, needed by the program at `jail_path` (a `[[files]]` copy
    /// moved by `dest` when its host path is not in the jail).
    fn add_dependencies(&mut self, facts: &ProgramFacts, jail_path: &JailPath) -> Result<()> {
        let own = jail_path_of(&facts.canonical)?;
        let requester = if self.entries.contains_key(&own) { own } else { jail_path.clone() };
        if let Some(load) = &facts.load {
            self.add_load(load, &requester, EntryKind::Library)?;
        }
        if let Some(interpreter) = &facts.shebang {
            self.add_program(interpreter, EntryKind::ScriptInterpreter, Origin::Shebang { of: requester.clone() })?;
        }
        if let Some(program) = &facts.env_program {
            self.add_program(program, EntryKind::ScriptInterpreter, Origin::Env { of: requester.clone() })?;
        }
        Ok(())
    }

    /// Places the objects of one load, each needed by the (canonical) object that asked for it.
    pub fn add_load(&mut self, load: &LoadResult, root: &JailPath, kind: EntryKind) -> Result<()> {
        if let Some(interpreter) = &load.interpreter {
            self.add_host_path(interpreter, EntryKind::Interpreter, Origin::Interpreter { of: root.clone() })?;
        }
        for object in &load.objects {
            let by = self.placed(&object.needed_by).unwrap_or(root).clone();
            let origin = Origin::Needed { by, soname: object.name.clone() };
            let path = self.add_host_path(&object.path, kind, origin)?;
            if let Some(entry) = self.entries.get_mut(&path) {
                if !entry.sonames.contains(&object.name) {
                    entry.sonames.insert(object.name.clone());
                }
            }
        }
        self.missing.extend(load.missing.iter().cloned());
        Ok(())
    }

    fn add_file_spec(
        &mut self,
        file: &FileSpec,
        exclude: &Exclude,
        elf_files: &mut Vec<(PathBuf, JailPath)>,
    ) -> Result<()> {
        let origin = Origin::Declared(Declaration::file(file));
        match file {
            FileSpec::Inline { path, content, attributes, .. } => {
                let entry = self.add(path.clone(), EntryKind::Content, None, origin);
                entry.kind = EntryKind::Content;
                entry.content = Some(content.clone().into_bytes());
                entry.attributes = attributes.clone();
            }
            FileSpec::Host { key, source, dest, attributes } => {
                // Excluded paths are dropped before they are looked at, so nothing they would
                // bring (a link's target, an ELF file's libraries) comes either.
                let mut pruned = Vec::new();
                let moved_tree = dest.as_ref().map(|_| source_base(source));
                let walked_tree = self.walked_tree(source)?;
                let found = expand_source(self.host, source, dest.as_ref(), exclude, &mut pruned)?;
                // Grow once: rehashing moves every entry again.
                self.entries.reserve(found.iter().map(Vec::len).sum());
                let walked_tree = walked_tree.as_deref();
                let copy = CopySource { key, origin: &origin, attributes, exclude, moved_tree, walked_tree };
                // Batch by batch, each freed (and its memory reused) as soon as it is placed.
                for batch in found {
                    for found in batch {
                        self.add_copied(found, &copy, elf_files)?;
                    }
                }
                for path in pruned {
                    self.closure.excluded.push(jail_path_of(&path)?);
                }
            }
        }
        Ok(())
    }

    /// The real directory a `[[files]]` source walks (a directory or a glob's base); None for a
    /// single file or symlink, named by the Jailfile itself.
    fn walked_tree(&self, source: &HostSource) -> Result<Option<PathBuf>> {
        let base = match source {
            HostSource::Glob { base, .. } => base,
            HostSource::Path(path) if self.host.symlink_metadata(path).is_ok_and(|metadata| metadata.is_dir()) => path,
            HostSource::Path(_) => return Ok(None),
        };
        Ok(Some(self.host.resolve(base)?.path))
    }

    /// Whether a host file starts like an ELF file (its stat written down first when observing).
    fn is_elf(&self, host_path: &Path) -> Result<bool> {
        let disk = self.host.disk_path(host_path);
        self.host.note_before_reading(&disk);
        Ok(elf::read_ident(&disk)?.is_some())
    }

    /// One host path of a `[[files]]` source placed at `jail_path`.
    fn add_copied(&mut self, found: Found, copy: &CopySource, elf_files: &mut Vec<(PathBuf, JailPath)>) -> Result<()> {
        let CopySource { key, origin, attributes, exclude, moved_tree, walked_tree } = *copy;
        let Found { host_path: source, jail_path, stat } = found;
        let host_path = source.as_path();
        if stat.is(nix::libc::S_IFLNK) {
            let target = self
                .host
                .read_link(host_path)
                .with_context(|| format!("cannot read symlink {}", host_path.display()))?;
            let entry = self.add(jail_path.clone(), EntryKind::Symlink, Some(host_path.to_path_buf()), origin.clone());
            entry.kind = EntryKind::Symlink;
            entry.target = Some(target.to_string_lossy().into_owned());
            // Bring what the link points at (CA certificate farms, /etc/localtime...).
            let resolved = self.host.resolve(host_path)?;
            if exclude.is_excluded(&resolved.path) {
                return Ok(());
            }
            if let Some(tree) = moved_tree {
                // The tree lands elsewhere (`dest`): a target inside it comes with the tree, at
                // its new place; one outside would land where the moved link does not point.
                if !resolved.path.starts_with(tree) {
                    self.warn(format!(
                        "{key}: {} points outside {} and the tree is moved by `dest`: its target is not brought",
                        host_path.display(),
                        tree.display()
                    ));
                }
                return Ok(());
            }
            if let Some(tree) = walked_tree.filter(|tree| !resolved.path.starts_with(tree)) {
                // Whoever can write into the tree could plant `key -> /root/.ssh/id_ed25519`:
                // the Jailfile named the tree, not what its links reach.
                self.warn(format!(
                    "{key}: {} points outside {} (to {}): copied as a symlink, its target is not brought \
                     (name it in [[files]] if the jail needs it)",
                    host_path.display(),
                    tree.display(),
                    resolved.path.display()
                ));
                return Ok(());
            }
            let link_target = Origin::LinkTarget { link: jail_path };
            match self.host.symlink_metadata(&resolved.path) {
                Ok(target_metadata) if target_metadata.is_file() => {
                    let target_path = self.add_host_path(&resolved.path, EntryKind::File, link_target)?;
                    if self.is_elf(&resolved.path)? {
                        elf_files.push((resolved.path.clone(), target_path));
                    }
                }
                Ok(target_metadata) if target_metadata.is_dir() => {
                    self.add_host_path(&resolved.path, EntryKind::Dir, link_target)?;
                }
                // Resolution stopped at a /proc magic link (HostFs::resolve): the link is all
                // there is to copy; what it names is the looking process's own file.
                Ok(target_metadata) if target_metadata.is_symlink() => {}
                _ => self.warn(format!(
                    "{key}: {} is a dangling symlink on the host; it is copied as it is",
                    host_path.display()
                )),
            }
        } else if stat.is(nix::libc::S_IFDIR) {
            let entry = self.add(jail_path, EntryKind::Dir, Some(source), origin.clone());
            entry.attributes = Attributes { mode: None, ..attributes.clone() };
            entry.source_stat = Some((stat.print, stat.mode & 0o7777));
        } else if stat.is(nix::libc::S_IFREG) {
            if may_be_loaded(host_path, stat.mode) && self.is_elf(host_path)? {
                elf_files.push((host_path.to_path_buf(), jail_path.clone()));
            }
            let entry = self.add(jail_path, EntryKind::File, Some(source), origin.clone());
            entry.attributes = attributes.clone();
            entry.source_stat = Some((stat.print, stat.mode & 0o7777));
        } else {
            self.warn(format!("{key}: {} is not a file, directory or symlink; skipped", host_path.display()));
        }
        Ok(())
    }

    fn add_accounts(&mut self, spec: &Spec) {
        if spec.users.is_empty() && spec.groups.is_empty() {
            return;
        }
        for (path, content) in [("/etc/passwd", passwd_content(spec)), ("/etc/group", group_content(spec))] {
            let path = JailPath::parse(path).unwrap_or_else(|_| JailPath::root());
            if self.entries.contains_key(&path) {
                self.warn(format!("{path} comes from [[files]]; [[users]]/[[groups]] do not rewrite it"));
                continue;
            }
            let entry = self.add(path, EntryKind::Generated, None, Origin::Accounts);
            entry.content = Some(content.into_bytes());
            entry.attributes.mode = Some(0o644);
        }
        for user in &spec.users {
            if user.home.is_root() {
                continue;
            }
            // A [[dirs]] entry for the same path is explicit and wins over the home default.
            let declared = self.entries.contains_key(&user.home);
            let entry = self.add(user.home.clone(), EntryKind::Dir, None, Origin::Home { user: user.name.clone() });
            if !declared {
                entry.attributes =
                    Attributes { mode: Some(0o750), owner: Some(user.uid), group: Some(user.gid), keep_setuid: false };
            }
        }
    }

    /// The host's usr-merge directory links (/bin -> usr/bin, /lib -> usr/lib...) for every
    /// directory the jail uses, so paths written the old way work inside as on the host.
    fn add_usr_merge_links(&mut self) -> Result<()> {
        for name in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            let link_path = Path::new("/").join(name);
            let Ok(metadata) = self.host.symlink_metadata(&link_path) else { continue };
            if !metadata.file_type().is_symlink() {
                continue;
            }
            let resolved = self.host.resolve(&link_path)?;
            let target_dir = jail_path_of(&resolved.path)?;
            let used = self.entries.keys().any(|path| path.starts_with(&target_dir) && path != &target_dir);
            if used {
                self.add_placed_links(&links_in_the_jail(&resolved.links)?, &Origin::UsrMerge);
            }
        }
        Ok(())
    }

    fn apply_exclude(&mut self, spec: &Spec) {
        if spec.exclude.patterns.is_empty() {
            return;
        }
        let excluded: Vec<JailPath> = self
            .entries
            .values()
            .filter(|entry| {
                matches!(
                    entry.kind,
                    EntryKind::File
                        | EntryKind::Library
                        | EntryKind::Symlink
                        | EntryKind::Dir
                        | EntryKind::NssModule
                        | EntryKind::RuntimeFile
                ) && (spec.exclude.is_excluded(Path::new(entry.path.as_str()))
                    || entry.source.as_deref().is_some_and(|source| spec.exclude.is_excluded(source)))
            })
            .map(|entry| entry.path.clone())
            .collect();
        for path in &excluded {
            self.entries.remove(path);
        }
        self.closure.excluded.extend(excluded);
        self.drop_orphans();
        self.closure.excluded.sort();
        self.closure.excluded.dedup();
    }

    /// Removes entries nothing needs any more (what only an excluded library needed), until
    /// every entry is needed by a kept entry or declared by the Jailfile.
    fn drop_orphans(&mut self) {
        loop {
            let kept: std::collections::HashSet<JailPath> = self.entries.keys().cloned().collect();
            let mut orphans = Vec::new();
            for entry in self.entries.values_mut() {
                // An origin that hangs on an entry goes with it; declarations (Jailfile entries,
                // generated files' reasons) always stay.
                entry.origins.retain(|origin| origin.needer().is_none_or(|needer| kept.contains(needer)));
                if entry.origins.is_empty() {
                    orphans.push(entry.path.clone());
                }
            }
            if orphans.is_empty() {
                return;
            }
            for path in orphans {
                self.entries.remove(&path);
            }
        }
    }

    fn finish_missing(&mut self, spec: &Spec) -> Result<()> {
        let mut report = String::new();
        let mut seen = BTreeSet::new();
        for missing in std::mem::take(&mut self.missing) {
            if spec.allow_missing.contains(&missing.name) {
                if !self.closure.allowed_missing.contains(&missing.name) {
                    self.closure.allowed_missing.push(missing.name);
                }
                continue;
            }
            let chain: Vec<String> = missing.chain.iter().map(|path| path.display().to_string()).collect();
            if !seen.insert((missing.name.clone(), chain.clone())) {
                continue;
            }
            let searched: Vec<String> = missing.searched.iter().map(|path| path.display().to_string()).collect();
            let _ = writeln!(report, "  {} needed by {}", missing.name, chain.join(" -> "));
            let _ = writeln!(report, "    searched: {}", searched.join(", "));
        }
        if !report.is_empty() {
            bail!(
                "shared libraries not found on the host:\n{report}  install them, or list them in `allow_missing = [...]` in {} if the jail works without them",
                spec.jailfile.display()
            );
        }
        Ok(())
    }
}

/// The jail path that mirrors a host path.
fn jail_path_of(host_path: &Path) -> Result<JailPath> {
    JailPath::from_host(host_path).map_err(|error| anyhow::anyhow!("{}: {error}", host_path.display()))
}

/// The `[[files]]` entry a copied host path comes from, and how it is treated.
#[derive(Clone, Copy)]
struct CopySource<'a> {
    key: &'a str,
    origin: &'a Origin,
    attributes: &'a Attributes,
    exclude: &'a Exclude,
    /// The source tree's base when `dest` moves it elsewhere in the jail.
    moved_tree: Option<&'a Path>,
    /// The real (symlink-free) directory a directory or glob source is walked from: symlinks
    /// found in it bring their target only when it lies inside.
    walked_tree: Option<&'a Path>,
}

fn passwd_content(spec: &Spec) -> String {
    let mut text = String::from("root:x:0:0:root:/root:/bin/sh\n");
    for user in &spec.users {
        let _ = writeln!(text, "{}:x:{}:{}:{}:{}:{}", user.name, user.uid, user.gid, user.gecos, user.home, user.shell);
    }
    text
}

fn group_content(spec: &Spec) -> String {
    let mut text = String::from("root:x:0:\n");
    for group in &spec.groups {
        let _ = writeln!(text, "{}:x:{}:{}", group.name, group.gid, group.members.join(","));
    }
    text
}

impl Closure {
    /// The entry at `path`; a path through the closure's own symlinks resolves as in the jail.
    pub fn lookup(&self, path: &JailPath) -> Option<&Entry> {
        if let Some(entry) = self.entries.get(path) {
            return Some(entry);
        }
        let mut current = path.clone();
        for _ in 0..40 {
            if let Some(entry) = self.entries.get(&current).filter(|entry| entry.kind != EntryKind::Symlink) {
                return Some(entry);
            }
            let is_link = |candidate: &JailPath| {
                self.entries.get(candidate).is_some_and(|entry| entry.kind == EntryKind::Symlink)
            };
            let link_at = current.ancestors().into_iter().chain(std::iter::once(current.clone())).find(is_link)?;
            let target = self.entries.get(&link_at)?.target.as_deref().unwrap_or("");
            let base = if target.starts_with('/') {
                JailPath::root()
            } else {
                link_at.parent().unwrap_or_else(JailPath::root)
            };
            let rest = &current.as_str()[link_at.as_str().len()..];
            current = normalize_lexically(&format!("{}/{target}/{rest}", base.as_str()))?;
        }
        None
    }

    /// The shortest chain from a Jailfile declaration (or a reason of jailprov's own) to
    /// `path`: the entries from `path` on, each needed by the next, and the origin of the last.
    pub fn why(&self, path: &JailPath) -> Option<Why<'_>> {
        let start = self.lookup(path)?;
        // Each origin reached, by how it shows, with the entry it was reached from.
        let mut previous: HashMap<std::borrow::Cow<'_, str>, &Entry> = HashMap::default();
        let mut queue = std::collections::VecDeque::from([start]);
        while let Some(entry) = queue.pop_front() {
            for origin in &entry.origins {
                // Keyed by the entry it hangs on, so the chain can be walked back by path (a
                // run-time origin shows as more than its importer's path).
                let name = match origin.needer() {
                    Some(needer) => std::borrow::Cow::Borrowed(needer.as_str()),
                    None => origin.name(),
                };
                if previous.contains_key(&name) || name == start.path.as_str() {
                    continue;
                }
                previous.insert(name, entry);
                match origin.needer().and_then(|needer| self.entries.get(needer)) {
                    Some(needer) => queue.push_back(needer),
                    // Breadth first: the first origin that hangs on no entry ends a shortest chain.
                    None => {
                        let mut entries = vec![entry];
                        while let Some(next) = previous.get(entries[entries.len() - 1].path.as_str()) {
                            entries.push(next);
                        }
                        entries.reverse();
                        return Some(Why { entries, origin: origin.reason() });
                    }
                }
            }
        }
        None
    }
}

/// Why a path is in the jail: the path's entry first, each entry needed by the next, and why
/// the last one is there.
#[derive(Debug)]
pub struct Why<'a> {
    pub entries: Vec<&'a Entry>,
    /// A Jailfile declaration, a reason of jailprov's own, or (when the entry it hangs on is not
    /// in the jail) the origin the chain stops at.
    pub origin: &'a Origin,
}

/// Normalises "a/./b/../c" without touching the disk; `None` if it climbs above the root.
fn normalize_lexically(text: &str) -> Option<JailPath> {
    let mut parts: Vec<&str> = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    JailPath::parse(&format!("/{}", parts.join("/"))).ok()
}
