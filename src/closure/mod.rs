//! The closure: every host file the jail needs, found the way glibc's loader would find it.
//!
//! Input is a validated [`Spec`]; output is a [`Closure`], a map from jail path to [`Entry`]
//! (what it is, which host file it comes from, and which entries need it). Nothing is executed:
//! ELF files are read with goblin, scripts by their `#!` line, NSS modules from nsswitch.conf.

pub mod dynsym;
pub mod elf;
pub mod ld_cache;
pub mod loader;
pub mod nss;
pub mod platform;
pub mod script;
pub mod symbols;

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap as HashMap;
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::Serialize;

use crate::host::{HostFs, Link, Look, StatPrint, BINARY_SEARCH_PATH};
use crate::spec::{Attributes, Exclude, FileSpec, HostSource, Spec};
use crate::tree::JailPath;
use elf::ElfIdent;
use loader::{LoadResult, Loader, MissingLibrary};

/// What a path in the jail is, and so how it gets there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
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
        }
    }
}

/// One path of the jail.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub path: JailPath,
    pub kind: EntryKind,
    /// The host file it is copied from (for a symlink: the link on the host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
    /// A symlink's text, exactly as on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// For libraries: the DT_NEEDED names it was loaded as.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub sonames: BTreeSet<String>,
    /// Jail paths of the entries that need it, or the Jailfile key that declares it (sorted,
    /// each once).
    pub needed_by: Vec<String>,
    /// Overrides from the Jailfile (mode, owner, group, setuid).
    #[serde(skip)]
    pub attributes: Attributes,
    /// Inline or generated content.
    #[serde(skip)]
    pub content: Option<String>,
    /// The host source's stat and mode as the closure saw it (spares the desired tree a second
    /// stat of every file in a large `[[files]]` tree).
    #[serde(skip)]
    pub source_stat: Option<(StatPrint, u32)>,
}

/// Every path the jail will hold.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Closure {
    #[serde(serialize_with = "entries_as_list")]
    /// Boxed: 50,000 entries are moved from the builder's map into this one, and on into the
    /// desired tree; moving pointers spares copying (and faulting in) whole entries each time.
    pub entries: BTreeMap<JailPath, Box<Entry>>,
    /// Paths the `exclude` patterns removed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<JailPath>,
    /// Sonames missing but allowed by `allow_missing`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_missing: Vec<String>,
    /// Things a user should know that do not stop the jail from being built.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Each started program's symbol and version verdict (src/closure/symbols.rs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub symbols: Vec<symbols::Verdict>,
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
    /// For a script: its interpreter programs (the `#!` path, and what `env` runs).
    interpreters: Vec<ProgramFacts>,
    /// What the loader's symbol and version checks say, for a program that is started.
    verdict: Option<symbols::Verdict>,
}

/// The closure of a validated Jailfile on this host (its loader rules and ld.so.cache); the
/// warnings, which do not stop the jail from being built, go to stderr.
pub fn compute(spec: &Spec, host: &HostFs) -> Result<Closure> {
    let loader = Loader::with_host(host.clone(), loader::LoaderOptions::host())?;
    let closure = build(spec, &loader)?;
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
    };

    // Programs are read in parallel and placed, in Jailfile order, as their results arrive: the
    // placing overlaps the reading instead of waiting for all of it.
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::scope(|scope| -> Result<()> {
        let search_path = &search_path;
        scope.spawn(move || {
            spec.binaries.par_iter().enumerate().for_each_with(sender, |sender, (index, binary)| {
                // A send fails only when placing stopped at an error; the rest is then moot.
                let facts = analyze_program(loader, &binary.host_path, search_path, 0)
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
                builder.add_program(&facts, EntryKind::Binary, &binary.key)?;
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
    let loads: Vec<(String, Result<ProgramFacts>)> = elf_files
        .par_iter()
        .map(|(host_path, needed_by)| (needed_by.clone(), analyze_program(loader, host_path, &search_path, 0)))
        .collect();
    for (needed_by, facts) in loads {
        builder.add_dependencies(&facts?, &needed_by)?;
    }

    drop(_t);
    let _t = crate::timings::phase("closure: the rest, sorted");
    for device in &spec.devices {
        let source = Some(PathBuf::from(device.path.as_str()));
        builder.add(device.path.clone(), EntryKind::Device, source, &device.key).attributes =
            Attributes { mode: device.mode, owner: Some(device.owner), group: Some(device.group), keep_setuid: false };
    }
    for dir in &spec.dirs {
        builder.add(dir.path.clone(), EntryKind::Dir, None, &dir.key).attributes =
            Attributes { mode: Some(dir.mode), owner: Some(dir.owner), group: Some(dir.group), keep_setuid: false };
    }
    for mount in &spec.mounts {
        if !builder.entries.contains_key(&mount.target) {
            builder.add(mount.target.clone(), EntryKind::Dir, None, &format!("{}.target", mount.key));
        }
    }
    builder.add_accounts(spec);
    nss::add_nss(spec, loader, &mut builder)?;
    builder.add_usr_merge_links()?;
    builder.apply_exclude(spec);
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

/// Reads what a program needs: its ELF closure, or its script interpreters (recursively).
fn analyze_program(loader: &Loader, named: &Path, search_path: &[String], depth: usize) -> Result<ProgramFacts> {
    let host = loader.host();
    let resolved = host.resolve(named)?;
    let canonical = resolved.path;
    let mut facts = ProgramFacts {
        named: named.to_path_buf(),
        links: resolved.links,
        canonical: canonical.clone(),
        ident: None,
        load: None,
        interpreters: Vec::new(),
        verdict: None,
    };
    if let Some(info) = loader.elf(&canonical)? {
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
    for program in script::programs_run_by(&shebang, host, search_path)
        .with_context(|| format!("{}: its `#!` line", named.display()))?
    {
        facts.interpreters.push(analyze_program(loader, &program, search_path, depth + 1)?);
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
        let links = links.iter().map(|link| Ok((jail_path_of(&link.path)?, link.clone()))).collect::<Result<_>>()?;
        Ok(Placement { links, path: jail_path_of(canonical)? })
    }
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
}

/// Records that `needed_by` needs `entry` (needers are deduplicated in `finish`; most repeats are
/// the same needer in a row).
fn note_need(entry: &mut Entry, needed_by: &str) {
    if entry.needed_by.last().map(String::as_str) != Some(needed_by) {
        entry.needed_by.push(needed_by.to_owned());
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

    /// The closure, sorted by path, each entry's needers sorted and unique.
    fn finish(mut self) -> Closure {
        let mut sorted: Vec<(JailPath, Box<Entry>)> = self.entries.into_iter().collect();
        sorted.par_sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        self.closure.entries = sorted
            .into_iter()
            .map(|(path, mut entry)| {
                entry.needed_by.sort_unstable();
                entry.needed_by.dedup();
                (path, entry)
            })
            .collect();
        self.closure
    }

    pub fn warn(&mut self, warning: String) {
        self.closure.warnings.push(warning);
    }

    /// Adds (or merges into) the entry at `path`.
    pub fn add(&mut self, path: JailPath, kind: EntryKind, source: Option<PathBuf>, needed_by: &str) -> &mut Entry {
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
                    needed_by: Vec::new(),
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
        note_need(entry, needed_by);
        entry
    }

    /// Places a host path at the same jail path: every symlink on the way (with its text) and
    /// the final file. Returns the canonical jail path.
    pub fn add_host_path(&mut self, host_path: &Path, kind: EntryKind, needed_by: &str) -> Result<JailPath> {
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
        self.add_placed_links(&known.links, needed_by);
        if let Some(entry) = self.entries.get_mut(path) {
            // Already placed: only record who else needs it (the common case for libc & co).
            if kind < entry.kind && entry.kind != EntryKind::Symlink {
                entry.kind = kind;
            }
            note_need(entry, needed_by);
        } else {
            self.add(path.clone(), kind, Some(PathBuf::from(path.as_str())), needed_by);
        }
        Ok(path.clone())
    }

    /// The canonical jail path of a host path placed before.
    fn placed(&self, host_path: &Path) -> Option<&JailPath> {
        self.resolved.get(host_path.as_os_str()).map(|known| &known.path)
    }

    fn add_links(&mut self, links: &[Link], needed_by: &str) -> Result<()> {
        let placed =
            links.iter().map(|link| Ok((jail_path_of(&link.path)?, link.clone()))).collect::<Result<Vec<_>>>()?;
        self.add_placed_links(&placed, needed_by);
        Ok(())
    }

    fn add_placed_links(&mut self, links: &[(JailPath, Link)], needed_by: &str) {
        for (path, link) in links {
            if let Some(entry) = self.entries.get_mut(path).filter(|entry| entry.kind == EntryKind::Symlink) {
                note_need(entry, needed_by);
                continue;
            }
            let entry = self.add(path.clone(), EntryKind::Symlink, Some(link.path.clone()), needed_by);
            entry.kind = EntryKind::Symlink;
            entry.target = Some(link.target.clone());
        }
    }

    /// A program and everything it loads.
    fn add_program(&mut self, facts: &ProgramFacts, kind: EntryKind, needed_by: &str) -> Result<JailPath> {
        self.add_links(&facts.links, needed_by)?;
        let path = jail_path_of(&facts.canonical)?;
        self.add(path.clone(), kind, Some(facts.canonical.clone()), needed_by);
        self.closure.symbols.extend(facts.verdict.clone());
        self.resolved
            .insert(facts.named.as_os_str().to_owned(), Arc::new(Placement::new(&facts.links, &facts.canonical)?));
        self.add_dependencies(facts, path.as_str())?;
        Ok(path)
    }

    /// What a program loads, needed by `needed_by` (its own jail path, or a Jailfile key).
    fn add_dependencies(&mut self, facts: &ProgramFacts, needed_by: &str) -> Result<()> {
        let own = jail_path_of(&facts.canonical)?;
        let requester = if self.entries.contains_key(&own) { own.as_str().to_owned() } else { needed_by.to_owned() };
        if let Some(load) = &facts.load {
            self.add_load(load, &requester, EntryKind::Library)?;
        }
        for interpreter in &facts.interpreters {
            self.add_program(interpreter, EntryKind::ScriptInterpreter, &requester)?;
        }
        Ok(())
    }

    /// Places the objects of one load, each needed by the (canonical) object that asked for it.
    pub fn add_load(&mut self, load: &LoadResult, root: &str, kind: EntryKind) -> Result<()> {
        if let Some(interpreter) = &load.interpreter {
            self.add_host_path(interpreter, EntryKind::Interpreter, root)?;
        }
        for object in &load.objects {
            let requester = match self.placed(&object.needed_by) {
                Some(path) => path.as_str().to_owned(),
                None => root.to_owned(),
            };
            let path = self.add_host_path(&object.path, kind, &requester)?;
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
        elf_files: &mut Vec<(PathBuf, String)>,
    ) -> Result<()> {
        match file {
            FileSpec::Inline { key, path, content, attributes } => {
                let entry = self.add(path.clone(), EntryKind::Content, None, key);
                entry.kind = EntryKind::Content;
                entry.content = Some(content.clone());
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
                let copy = CopySource { key, attributes, exclude, moved_tree, walked_tree: walked_tree.as_deref() };
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
    fn add_copied(&mut self, found: Found, copy: &CopySource, elf_files: &mut Vec<(PathBuf, String)>) -> Result<()> {
        let CopySource { key, attributes, exclude, moved_tree, walked_tree } = *copy;
        let Found { host_path: source, jail_path, stat } = found;
        let host_path = source.as_path();
        if stat.is(nix::libc::S_IFLNK) {
            let target = self
                .host
                .read_link(host_path)
                .with_context(|| format!("cannot read symlink {}", host_path.display()))?;
            let entry = self.add(jail_path.clone(), EntryKind::Symlink, Some(host_path.to_path_buf()), key);
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
            match self.host.symlink_metadata(&resolved.path) {
                Ok(target_metadata) if target_metadata.is_file() => {
                    let target_path = self.add_host_path(&resolved.path, EntryKind::File, jail_path.as_str())?;
                    if self.is_elf(&resolved.path)? {
                        elf_files.push((resolved.path.clone(), target_path.as_str().to_owned()));
                    }
                }
                Ok(target_metadata) if target_metadata.is_dir() => {
                    self.add_host_path(&resolved.path, EntryKind::Dir, jail_path.as_str())?;
                }
                _ => self.warn(format!(
                    "{key}: {} is a dangling symlink on the host; it is copied as it is",
                    host_path.display()
                )),
            }
        } else if stat.is(nix::libc::S_IFDIR) {
            let entry = self.add(jail_path, EntryKind::Dir, Some(source), key);
            entry.attributes = Attributes { mode: None, ..attributes.clone() };
            entry.source_stat = Some((stat.print, stat.mode & 0o7777));
        } else if stat.is(nix::libc::S_IFREG) {
            if may_be_loaded(host_path, stat.mode) && self.is_elf(host_path)? {
                elf_files.push((host_path.to_path_buf(), jail_path.as_str().to_owned()));
            }
            let entry = self.add(jail_path, EntryKind::File, Some(source), key);
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
            let entry = self.add(path, EntryKind::Generated, None, "users/groups");
            entry.content = Some(content);
            entry.attributes.mode = Some(0o644);
        }
        for user in &spec.users {
            if user.home.is_root() {
                continue;
            }
            let key = format!("users.{}.home", user.name);
            // A [[dirs]] entry for the same path is explicit and wins over the home default.
            let declared = self.entries.contains_key(&user.home);
            let entry = self.add(user.home.clone(), EntryKind::Dir, None, &key);
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
                self.add_links(&resolved.links, "usr-merge layout of the host")?;
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
                    EntryKind::File | EntryKind::Library | EntryKind::Symlink | EntryKind::Dir | EntryKind::NssModule
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
            let kept: std::collections::HashSet<String> =
                self.entries.keys().map(|path| path.as_str().to_owned()).collect();
            let mut orphans = Vec::new();
            for entry in self.entries.values_mut() {
                // A needer that is a path must still be in the jail; other needers are
                // declarations (Jailfile keys, generated files' reasons) and always stay.
                entry.needed_by.retain(|needer| !needer.starts_with('/') || kept.contains(needer));
                if entry.needed_by.is_empty() {
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

/// A host path found for a `[[files]]` source, the jail path it goes to, and its lstat.
struct Found {
    host_path: PathBuf,
    jail_path: JailPath,
    stat: FoundStat,
}

/// What the walk keeps of a host path's lstat: its type and mode bits, and its print.
#[derive(Debug, Clone, Copy)]
struct FoundStat {
    mode: u32,
    print: StatPrint,
}

impl FoundStat {
    fn of(metadata: &std::fs::Metadata) -> FoundStat {
        FoundStat { mode: metadata.mode(), print: StatPrint::of(metadata) }
    }

    /// Whether the file type (`nix::libc::S_IF*`) is `file_type`.
    fn is(&self, file_type: nix::libc::mode_t) -> bool {
        self.mode & nix::libc::S_IFMT == file_type
    }
}

/// The paths of a `[[files]]` source that are not excluded, each with the jail path it goes to
/// (the excluded ones are added to `pruned`). Placing runs in parallel, one walked directory at
/// a time.
fn expand_source(
    host: &HostFs,
    source: &HostSource,
    dest: Option<&JailPath>,
    exclude: &Exclude,
    pruned: &mut Vec<PathBuf>,
) -> Result<Vec<Vec<Found>>> {
    let base = source_base(source);
    let place = |host_path: PathBuf, stat: FoundStat| -> Result<Option<Found>> {
        let jail_path = match dest {
            None => jail_path_of(&host_path)?,
            Some(dest) => {
                let relative = host_path.strip_prefix(base).unwrap_or(Path::new(""));
                dest.join(relative).map_err(|error| anyhow::anyhow!("{}: {error}", host_path.display()))?
            }
        };
        // Excluded paths are dropped before they are looked at, so nothing they would bring (a
        // link's target, an ELF file's libraries) comes either; `dest` can move a path under a
        // pattern, so the jail path is checked too.
        if exclude.is_excluded(Path::new(jail_path.as_str())) {
            return Ok(None);
        }
        Ok(Some(Found { host_path, jail_path, stat }))
    };
    let batches = match source {
        HostSource::Path(path) => {
            let metadata = host.symlink_metadata(path).with_context(|| format!("cannot inspect {}", path.display()))?;
            if !metadata.is_dir() {
                return Ok(vec![place(path.clone(), FoundStat::of(&metadata))?.into_iter().collect()]);
            }
            walk(host, path, exclude, pruned)?
        }
        HostSource::Glob { base, .. } => walk(host, base, exclude, pruned)?,
    };
    let matcher = match source {
        HostSource::Glob { matcher, .. } => Some(matcher),
        HostSource::Path(_) => None,
    };
    let placed: Vec<Result<(Vec<Found>, Vec<PathBuf>)>> = batches
        .into_par_iter()
        .map(|batch| {
            let mut found = Vec::with_capacity(batch.len());
            let mut excluded = Vec::new();
            for (host_path, stat) in batch {
                if matcher.is_some_and(|matcher| !matcher.is_match(&host_path)) {
                    continue;
                }
                let kept = host_path.clone();
                match place(host_path, stat)? {
                    Some(one) => found.push(one),
                    None => excluded.push(kept),
                }
            }
            Ok((found, excluded))
        })
        .collect();
    let mut result = Vec::with_capacity(placed.len());
    for batch in placed {
        let (found, excluded) = batch?;
        result.push(found);
        pruned.extend(excluded);
    }
    Ok(result)
}

/// Whether the kernel or the loader could run or load this file: executable, or named like a
/// shared object (`.so`, `.so.1.2`; dlopen'ed modules need no exec bit). Only these are read
/// for an ELF header, so a tree of 40,000 data files costs no extra open each.
fn may_be_loaded(path: &Path, mode: u32) -> bool {
    mode & 0o111 != 0 || path.file_name().and_then(|name| name.to_str()).is_some_and(|name| name.contains(".so"))
}

/// The `[[files]]` entry a copied host path comes from, and how it is treated.
#[derive(Clone, Copy)]
struct CopySource<'a> {
    key: &'a str,
    attributes: &'a Attributes,
    exclude: &'a Exclude,
    /// The source tree's base when `dest` moves it elsewhere in the jail.
    moved_tree: Option<&'a Path>,
    /// The real (symlink-free) directory a directory or glob source is walked from: symlinks
    /// found in it bring their target only when it lies inside.
    walked_tree: Option<&'a Path>,
}

/// The host directory a source's paths are taken relative to when `dest` moves them.
fn source_base(source: &HostSource) -> &Path {
    match source {
        HostSource::Path(path) => path,
        HostSource::Glob { base, .. } => base,
    }
}

/// Every path under a host directory (itself included) with its lstat, not following
/// symlinks, one batch per directory read; excluded paths and everything under an excluded
/// directory are left out (and listed in `pruned`). Directories are read in parallel at every
/// level (a 40,000-file tree is mostly waiting on getdents and lstat, and its top-level subtrees
/// are rarely balanced).
fn walk(host: &HostFs, dir: &Path, exclude: &Exclude, pruned: &mut Vec<PathBuf>) -> Result<Vec<WalkBatch>> {
    if exclude.is_excluded(dir) {
        pruned.push(dir.to_path_buf());
        return Ok(Vec::new());
    }
    let metadata = host.symlink_metadata(dir).with_context(|| format!("cannot inspect {}", dir.display()))?;
    let is_dir = metadata.is_dir();
    let mut batches = vec![vec![(dir.to_path_buf(), FoundStat::of(&metadata))]];
    if is_dir {
        let mut excluded = Vec::new();
        walk_children(host, dir, exclude, &mut batches, &mut excluded)?;
        pruned.extend(excluded);
    }
    Ok(batches)
}

/// What one directory holds (its subdirectories' contents come as batches of their own, so
/// nothing is copied up the tree level by level).
type WalkBatch = Vec<(PathBuf, FoundStat)>;

fn walk_children(
    host: &HostFs,
    dir: &Path,
    exclude: &Exclude,
    batches: &mut Vec<WalkBatch>,
    pruned: &mut Vec<PathBuf>,
) -> Result<()> {
    let mut batch = Vec::new();
    let mut subdirs = Vec::new();
    let entries = host.read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut observed = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let path = dir.join(entry.file_name());
        if exclude.is_excluded(&path) {
            pruned.push(path);
            continue;
        }
        // DirEntry::metadata is fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW): an lstat.
        let metadata = entry.metadata();
        if host.is_observing() {
            observed.push(host.observation(entry.path(), Look::Lstat, &metadata));
        }
        let metadata = metadata.with_context(|| format!("cannot inspect {}", path.display()))?;
        if metadata.is_dir() {
            subdirs.push(path.clone());
        }
        batch.push((path, FoundStat::of(&metadata)));
    }
    batches.push(batch);
    host.record(observed);
    let below: Vec<Result<(Vec<WalkBatch>, Vec<PathBuf>)>> = subdirs
        .par_iter()
        .map(|subdir| {
            let (mut nested, mut excluded) = (Vec::new(), Vec::new());
            walk_children(host, subdir, exclude, &mut nested, &mut excluded).map(|()| (nested, excluded))
        })
        .collect();
    for nested in below {
        let (nested, excluded) = nested?;
        batches.extend(nested);
        pruned.extend(excluded);
    }
    Ok(())
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

    /// The shortest chain from a Jailfile declaration to `path`: the path first, the
    /// declaring key last.
    pub fn why(&self, path: &JailPath) -> Option<Vec<String>> {
        let start = self.lookup(path)?;
        let mut previous: HashMap<String, String> = HashMap::default();
        let mut queue = std::collections::VecDeque::from([start.path.as_str().to_owned()]);
        while let Some(current) = queue.pop_front() {
            let Some(entry) = JailPath::parse(&current).ok().and_then(|path| self.entries.get(&path)) else {
                // Not a path: a Jailfile key, the start of the chain.
                let mut chain = vec![current.clone()];
                let mut link = current;
                while let Some(next) = previous.get(&link) {
                    chain.push(next.clone());
                    link = next.clone();
                }
                chain.reverse();
                return Some(chain);
            };
            for parent in &entry.needed_by {
                if !previous.contains_key(parent) && parent != start.path.as_str() {
                    previous.insert(parent.clone(), current.clone());
                    queue.push_back(parent.clone());
                }
            }
        }
        None
    }
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
