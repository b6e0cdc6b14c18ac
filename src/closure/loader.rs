//! glibc's library search, replayed without running anything: which file each DT_NEEDED loads.
//!
//! The rules follow glibc 2.36's `elf/dl-load.c` (`_dl_map_object`) and `elf/dl-deps.c`:
//! breadth-first over DT_NEEDED, each name loaded once (matched by requested name, path or
//! DT_SONAME, also the same file reached by another path), and for a name without `/`:
//! 1. DT_RPATH of the object that needs it, then of the object that loaded that one, up to the
//!    executable — only while the needing object has no DT_RUNPATH (an object with DT_RUNPATH has
//!    its DT_RPATH ignored altogether);
//! 2. (LD_LIBRARY_PATH: never, a jail is provisioned for every environment);
//! 3. the needing object's own DT_RUNPATH (not inherited by its dependencies);
//! 4. /etc/ld.so.cache, unless the needing object is `-z nodeflib` and the hit is in a system dir;
//! 5. the built-in system directories, unless `-z nodeflib`.
//!
//! Every directory is tried as `DIR/glibc-hwcaps/<level>/` for each level the CPU supports,
//! best first, then as each legacy hwcaps subdirectory glibc 2.36 still searches (`tls/`,
//! `haswell/`, `x86_64/`..., gone in 2.37), then as `DIR/`. Files of the wrong ELF class or
//! machine are skipped and the search goes on.

use rustc_hash::FxHashMap as HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{anyhow, Context, Result};

use super::cache::{verdict_key, ClosureCache, FileIdentity, VerdictKey};
use super::dynsym::{read_program, read_relocation_uses, read_symbols, RelocationUses, SymbolFacts};
use super::elf::{read_elf_with_metadata, ElfIdent, ElfInfo};
use super::ld_cache::{CacheQuery, LdCache};
use super::platform::{
    host_cache_query, host_hwcaps_subdirs, host_legacy_hwcap_subdirs, platform_for, platform_token, Platform,
};
use crate::host::HostFs;

/// How to look at the host.
#[derive(Debug, Clone)]
pub struct LoaderOptions {
    /// "/" for the host; a fixture tree in tests. Paths elsewhere are as the loader sees them.
    pub sysroot: PathBuf,
    /// glibc-hwcaps subdirectories to search, best first; `None` detects them from this CPU.
    pub hwcaps: Option<Vec<String>>,
    /// What `$PLATFORM` expands to; `None` detects it like glibc does on this CPU.
    pub platform: Option<String>,
}

impl LoaderOptions {
    /// The real host, with this CPU's hwcaps and platform.
    pub fn host() -> LoaderOptions {
        LoaderOptions { sysroot: PathBuf::from("/"), hwcaps: None, platform: None }
    }
}

/// What loading one program brings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadResult {
    /// PT_INTERP of the executable (None for static executables and libraries).
    pub interpreter: Option<PathBuf>,
    /// Every shared object loaded, in glibc's breadth-first order, without the root object and
    /// the interpreter.
    pub objects: Vec<LoadedObject>,
    /// Needed names that no search found.
    pub missing: Vec<MissingLibrary>,
    /// Every object mapped (the root first, then the interpreter, then `objects` in order), with
    /// the names it answers to and how it was found: what the symbol checks walk.
    pub mapped: Vec<MappedFacts>,
}

/// One mapped object as the symbol and version checks need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedFacts {
    /// Host path as the loader spells it.
    pub path: PathBuf,
    /// Its ELF facts.
    pub info: Arc<ElfInfo>,
    /// How the loader found it.
    pub found_by: SearchStep,
    /// For each of its DT_NEEDED names (in order): the index in `mapped` of the object that
    /// answers to it, if one was found.
    pub dependencies: Vec<Option<usize>>,
    /// The names the object answers to (names it was needed as, its path, its DT_SONAME): what
    /// glibc's `_dl_name_match_p` compares a DT_VERNEED file name with.
    pub names: Vec<String>,
}

/// The search step that found an object: what an error names so the user knows which copy the
/// loader picked and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum SearchStep {
    /// The program itself.
    Program,
    /// The program's PT_INTERP.
    Interpreter,
    /// A DT_NEEDED name with a `/`, used as a path.
    NeededPath,
    /// An entry of the DT_RPATH of `of` (the needing object or one up its loading chain).
    Rpath { entry: String, of: PathBuf },
    /// An entry of the needing object's DT_RUNPATH.
    Runpath { entry: String, of: PathBuf },
    /// /etc/ld.so.cache.
    Cache,
    /// A built-in system directory.
    DefaultDir { dir: PathBuf },
}

impl std::fmt::Display for SearchStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SearchStep::Program => write!(f, "the program itself"),
            SearchStep::Interpreter => write!(f, "the program's ELF interpreter"),
            SearchStep::NeededPath => write!(f, "a DT_NEEDED path"),
            SearchStep::Rpath { entry, of } => write!(f, "DT_RPATH entry {entry:?} of {}", of.display()),
            SearchStep::Runpath { entry, of } => write!(f, "DT_RUNPATH entry {entry:?} of {}", of.display()),
            SearchStep::Cache => write!(f, "/etc/ld.so.cache"),
            SearchStep::DefaultDir { dir } => write!(f, "the default directory {}", dir.display()),
        }
    }
}

/// One shared object and why it was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedObject {
    /// The DT_NEEDED string that caused the load.
    pub name: String,
    /// Where the loader found it, spelled as the loader spells it (what `ld.so --list` prints).
    pub path: PathBuf,
    /// The object whose DT_NEEDED first asked for it.
    pub needed_by: PathBuf,
}

/// A needed name that could not be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingLibrary {
    pub name: String,
    /// From the root object to the object that needed `name`.
    pub chain: Vec<PathBuf>,
    /// Directories searched, in order ("/etc/ld.so.cache" stands for the cache).
    pub searched: Vec<PathBuf>,
}

/// The loader's view of the host: its ld.so.cache, and caches of what it has read.
pub struct Loader {
    host: HostFs,
    cache: Option<LdCache>,
    hwcaps_override: Option<Vec<String>>,
    platform_override: Option<String>,
    elf_cache: Mutex<HashMap<OsString, Option<ElfFile>>>,
    /// Per search directory (and architecture): the directories really tried in it, in order
    /// (existing glibc-hwcaps and legacy subdirectories, then itself); None if it does not exist.
    search_directories: Mutex<HashMap<(&'static str, OsString), Option<SearchDirectories>>>,
    /// The cache-and-system-directories step for a name, which does not depend on who needs it:
    /// done once per (architecture, name, nodeflib), then reused for every program.
    default_search_memo: Mutex<HashMap<(&'static str, String, bool), DefaultSearch>>,
    /// One search context per architecture: CPU detection runs once, not once per program.
    contexts: Mutex<HashMap<&'static str, Arc<SearchContext>>>,
    /// Symbol facts per host path, read once (by whichever thread asks first) and shared.
    symbol_cache: Mutex<HashMap<OsString, Arc<OnceLock<SymbolsRead>>>>,
    /// Per object and its own load scope (the objects, in order, by [`ScopeKey`]): the indexes
    /// of its references that scope leaves unresolved. libc and friends are checked once, not
    /// once per program.
    local_unresolved: Mutex<HashMap<Vec<ScopeKey>, Arc<Vec<usize>>>>,
    /// Libraries the cache found where the built-in directories would not find them (a
    /// directory of /etc/ld.so.conf.d): a jail holding one needs its own cache.
    found_only_through_cache: Mutex<Vec<PathBuf>>,
    /// What earlier runs learned of files that have not changed since (src/closure/cache.rs).
    closure_cache: ClosureCache,
}

/// A program's ELF facts (None when it is not ELF) and, read with them, its symbol facts.
pub type ProgramRead = (Option<Arc<ElfInfo>>, Option<Arc<SymbolFacts>>);

/// One object of a load scope, named by the address of its ELF facts: the loader reads each
/// path once and keeps its facts (and so that address) for as long as it lives, so equal keys
/// mean the same path, and a key costs no path copy or path hashing.
pub type ScopeKey = usize;

/// The [`ScopeKey`] of a mapped object.
pub fn scope_key(object: &MappedFacts) -> ScopeKey {
    Arc::as_ptr(&object.info) as ScopeKey
}

/// The outcome of reading one object's symbols (the error as text, so every asker gets it).
type SymbolsRead = std::result::Result<Arc<SymbolFacts>, String>;

/// What the cache and the system directories give for a name, and what was searched.
type DefaultSearch = (Option<Hit>, Vec<PathBuf>);

/// A file found by a search, its ELF facts, and the step that found it.
type Hit = (PathBuf, Arc<ElfInfo>, SearchStep);

/// The directories really tried for one search directory, in order.
type SearchDirectories = Arc<Vec<PathBuf>>;

/// A parsed ELF file and its identity on disk, read together.
type ElfFile = (Arc<ElfInfo>, FileIdentity);

/// An object in one load: the root (index 0), or a library.
struct MappedObject {
    path: PathBuf,
    origin: PathBuf,
    info: Arc<ElfInfo>,
    /// Index of the object that loaded this one.
    loaded_by: Option<usize>,
    found_by: SearchStep,
}

/// Per-architecture facts of the loader on this CPU.
struct SearchContext {
    platform: &'static Platform,
    hwcaps: Vec<String>,
    legacy_subdirs: Vec<String>,
    platform_token: String,
    /// The cache query of this CPU, with an empty hwcaps list (filled in per lookup).
    cache_query: CacheQuery<'static>,
}

impl Loader {
    pub fn new(options: LoaderOptions) -> Result<Loader> {
        Loader::with_host(HostFs::new(&options.sysroot), options)
    }

    /// A loader sharing `host` (and what it has already walked); `options.sysroot` is ignored.
    pub fn with_host(host: HostFs, options: LoaderOptions) -> Result<Loader> {
        let cache_path = host.disk_path(Path::new("/etc/ld.so.cache"));
        host.note_before_reading(&cache_path);
        let cache = LdCache::load(&cache_path)?;
        Ok(Loader {
            host,
            cache,
            hwcaps_override: options.hwcaps,
            platform_override: options.platform,
            elf_cache: Mutex::new(HashMap::default()),
            search_directories: Mutex::new(HashMap::default()),
            contexts: Mutex::new(HashMap::default()),
            default_search_memo: Mutex::new(HashMap::default()),
            symbol_cache: Mutex::new(HashMap::default()),
            local_unresolved: Mutex::new(HashMap::default()),
            found_only_through_cache: Mutex::new(Vec::new()),
            closure_cache: ClosureCache::default(),
        })
    }

    /// This loader, trusting what `cache` remembers of files whose identity has not changed.
    pub fn remembering(mut self, cache: ClosureCache) -> Loader {
        self.closure_cache = cache;
        self
    }

    /// What earlier runs remembered, and what this one learns.
    pub fn closure_cache(&self) -> &ClosureCache {
        &self.closure_cache
    }

    /// The key under which the verdict of a program load is remembered (None: not remembered).
    pub fn verdict_key(&self, program: &Path, allow_unresolved: bool, load: &LoadResult) -> Option<VerdictKey> {
        verdict_key(program, allow_unresolved, load, |path| self.elf_file(path).ok().flatten().map(|(_, id)| id))
    }

    /// The file identity of an ELF host path read before (or now).
    pub fn identity_of(&self, path: &Path) -> Option<FileIdentity> {
        self.elf_file(path).ok().flatten().map(|(_, identity)| identity)
    }

    /// The ELF facts remembered for what `target` (a disk path) is now, with its identity.
    fn remembered_elf(&self, target: &Path) -> Option<ElfFile> {
        if self.closure_cache.is_empty() {
            return None;
        }
        let metadata = std::fs::metadata(target).ok().filter(std::fs::Metadata::is_file)?;
        let identity = FileIdentity::of(&metadata);
        Some((self.closure_cache.elf(&identity)?, identity))
    }

    /// Reads an ELF file's facts afresh, and teaches them to the cache.
    fn learned_elf(&self, info: ElfInfo, metadata: &std::fs::Metadata) -> ElfFile {
        let (info, identity) = (Arc::new(info), FileIdentity::of(metadata));
        self.closure_cache.learn_elf(identity, &info);
        (info, identity)
    }

    pub fn host(&self) -> &HostFs {
        &self.host
    }

    /// The host's /etc/ld.so.cache, if it has one.
    pub fn cache(&self) -> Option<&LdCache> {
        self.cache.as_ref()
    }

    /// The libraries (as the cache spells them) that only the cache finds: without a cache,
    /// the loader would not find them in the built-in directories. Sorted, each once.
    pub fn found_only_through_cache(&self) -> Vec<PathBuf> {
        let mut found = self.found_only_through_cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        found.sort_unstable();
        found.dedup();
        found
    }

    /// Reads (once) the ELF facts of a host path; `None` when it is not ELF or does not exist.
    pub fn elf(&self, path: &Path) -> Result<Option<Arc<ElfInfo>>> {
        Ok(self.elf_file(path)?.map(|(info, _)| info))
    }

    fn elf_file(&self, path: &Path) -> Result<Option<ElfFile>> {
        // Keyed by the path's bytes: hashing a Path parses its components, bytes hash faster.
        if let Some(known) = self.lock_elf_cache().get(path.as_os_str()) {
            return Ok(known.clone());
        }
        let disk = self.host.disk_path(path);
        // Inside a sysroot, absolute symlinks must stay inside it: resolve them ourselves.
        let target = if self.host.sysroot() == Path::new("/") {
            disk.clone()
        } else {
            self.host.disk_path(&self.host.resolve(path)?.path)
        };
        self.host.note_before_reading(&target);
        if let Some(remembered) = self.remembered_elf(&target) {
            return Ok(self.keep_elf_file(path, Some(remembered)));
        }
        let file = read_elf_with_metadata(&target)?.map(|(info, metadata)| self.learned_elf(info, &metadata));
        Ok(self.keep_elf_file(path, file))
    }

    /// Caches what was read of `path`, unless another thread cached it first: then theirs is
    /// kept and returned. One path has one `Arc<ElfInfo>` for the loader's life, which is what
    /// makes a [`ScopeKey`] (its address) name that path and no other.
    fn keep_elf_file(&self, path: &Path, file: Option<ElfFile>) -> Option<ElfFile> {
        self.lock_elf_cache().entry(path.as_os_str().to_owned()).or_insert(file).clone()
    }

    /// The ELF facts of a program that is about to be judged, and its symbol facts read in the
    /// same open (when it is started: it has PT_INTERP). A path read before (a program that is
    /// also a library of another) gives no symbols here: the check reads them as for any object.
    pub fn program(&self, path: &Path) -> Result<ProgramRead> {
        if let Some(known) = self.lock_elf_cache().get(path.as_os_str()) {
            return Ok((known.as_ref().map(|(info, _)| info.clone()), None));
        }
        let target = self.disk_target(path)?;
        if let Some(remembered) = self.remembered_elf(&target) {
            // Its symbols are read only if its verdict is not remembered either.
            return Ok((self.keep_elf_file(path, Some(remembered)).map(|(info, _)| info), None));
        }
        let Some((info, metadata, symbols)) = read_program(&target)? else {
            let kept = self.keep_elf_file(path, None);
            return Ok((kept.map(|(info, _)| info), None));
        };
        let kept = self.keep_elf_file(path, Some(self.learned_elf(info, &metadata)));
        Ok((kept.map(|(info, _)| info), symbols.map(Arc::new)))
    }

    /// The dynamic symbols and versions of a host ELF path, read once.
    pub fn symbols(&self, path: &Path) -> Result<Arc<SymbolFacts>> {
        let slot = {
            let mut cache = self.symbol_cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            cache.entry(path.as_os_str().to_owned()).or_default().clone()
        };
        let read = slot.get_or_init(|| {
            let facts = self.disk_target(path).and_then(|disk| {
                read_symbols(&disk)?.with_context(|| format!("{} is no longer an ELF file", path.display()))
            });
            facts.map(Arc::new).map_err(|error| format!("{error:#}"))
        });
        read.clone().map_err(|message| anyhow!(message))
    }

    /// The symbols of a file read for one use (a program, judged once): not kept, so a run
    /// over many programs holds only their libraries' tables.
    pub fn symbols_uncached(&self, path: &Path) -> Result<Arc<SymbolFacts>> {
        if let Some(Some(Ok(known))) = self
            .symbol_cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(path.as_os_str())
            .map(|slot| slot.get().cloned())
        {
            return Ok(known);
        }
        let disk = self.disk_target(path)?;
        let facts = read_symbols(&disk)?.with_context(|| format!("{} is no longer an ELF file", path.display()))?;
        Ok(Arc::new(facts))
    }

    /// `compute` for a scope (an object, then its own dependencies), or what it gave before.
    pub fn unresolved_in_scope(
        &self,
        key: Vec<ScopeKey>,
        compute: impl FnOnce() -> Result<Vec<usize>>,
    ) -> Result<Arc<Vec<usize>>> {
        if let Some(known) = self.local_unresolved.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&key) {
            return Ok(known.clone());
        }
        let computed = Arc::new(compute()?);
        self.local_unresolved.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(key, computed.clone());
        Ok(computed)
    }

    /// Which symbols the relocations of a host ELF path use (read when a check needs it).
    pub fn relocation_uses(&self, path: &Path, facts: &SymbolFacts) -> Result<RelocationUses> {
        read_relocation_uses(&self.disk_target(path)?, facts)
    }

    /// Where a host path's file is on disk (inside a sysroot, links resolved inside it).
    fn disk_target(&self, path: &Path) -> Result<PathBuf> {
        let target = if self.host.sysroot() == Path::new("/") {
            self.host.disk_path(path)
        } else {
            self.host.disk_path(&self.host.resolve(path)?.path)
        };
        self.host.note_before_reading(&target);
        Ok(target)
    }

    fn lock_elf_cache(&self) -> std::sync::MutexGuard<'_, HashMap<OsString, Option<ElfFile>>> {
        // A panic while holding the lock leaves a usable map: recover it rather than poison everything.
        self.elf_cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn directory_exists(&self, dir: &Path) -> bool {
        let disk = if self.host.sysroot() == Path::new("/") {
            dir.to_path_buf()
        } else {
            match self.host.resolve(dir) {
                Ok(resolved) => self.host.disk_path(&resolved.path),
                Err(_) => return false,
            }
        };
        self.host.metadata_of_disk_path(&disk).is_ok_and(|metadata| metadata.is_dir())
    }

    /// The directories the loader really tries for a search directory, computed once.
    fn search_directories(&self, dir: &Path, context: &SearchContext) -> Option<SearchDirectories> {
        let key = (context.platform.name, dir.as_os_str().to_owned());
        let mut cache = self.search_directories.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(known) = cache.get(&key) {
            return known.clone();
        }
        let directories = self.directory_exists(dir).then(|| {
            let hwcaps = context.hwcaps.iter().map(|level| dir.join("glibc-hwcaps").join(level));
            let legacy = context.legacy_subdirs.iter().map(|subdir| dir.join(subdir));
            let mut tried: Vec<PathBuf> = hwcaps.chain(legacy).filter(|subdir| self.directory_exists(subdir)).collect();
            tried.push(dir.to_path_buf());
            Arc::new(tried)
        });
        cache.insert(key, directories.clone());
        directories
    }

    /// The file identity (device, inode) of an ELF host path, following links inside the sysroot.
    fn file_identity(&self, path: &Path) -> Option<(u64, u64)> {
        self.identity_of(path).map(|identity| identity.file())
    }

    fn context_for(&self, ident: &ElfIdent, path: &Path) -> Result<Arc<SearchContext>> {
        let platform = platform_for(ident).ok_or_else(|| {
            anyhow!("{}: unsupported ELF architecture (machine {}, {:?})", path.display(), ident.machine, ident.class)
        })?;
        let mut contexts = self.contexts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let context = contexts.entry(platform.name).or_insert_with(|| {
            Arc::new(SearchContext {
                platform,
                hwcaps: self.hwcaps_override.clone().unwrap_or_else(|| host_hwcaps_subdirs(platform)),
                legacy_subdirs: host_legacy_hwcap_subdirs(platform),
                platform_token: self.platform_override.clone().unwrap_or_else(|| platform_token(platform)),
                cache_query: host_cache_query(platform, &[]),
            })
        });
        Ok(context.clone())
    }

    /// Everything the loader maps to start the executable at `path`.
    pub fn load_executable(&self, path: &Path) -> Result<LoadResult> {
        self.load(path, true)
    }

    /// Everything the loader maps when `path` (a shared object) is dlopen'ed on its own.
    pub fn load_library(&self, path: &Path) -> Result<LoadResult> {
        self.load(path, false)
    }

    fn load(&self, path: &Path, is_executable: bool) -> Result<LoadResult> {
        let info = self.elf(path)?.ok_or_else(|| anyhow!("{} is not an ELF file", path.display()))?;
        let context = self.context_for(&info.ident, path)?;
        // The kernel hands the loader the executable's canonical path (/proc/self/exe), which is
        // what $ORIGIN means for it; a library's $ORIGIN is the directory it was found in.
        let origin_of_root = if is_executable {
            let canonical = self.host.resolve(path).with_context(|| format!("cannot resolve {}", path.display()))?;
            parent_dir(&canonical.path)
        } else {
            parent_dir(path)
        };
        let mut objects = vec![MappedObject {
            path: path.to_path_buf(),
            origin: origin_of_root,
            info: info.clone(),
            loaded_by: None,
            found_by: SearchStep::Program,
        }];
        let mut names: HashMap<String, usize> = HashMap::default();
        let mut identities: HashMap<(u64, u64), usize> = HashMap::default();
        if let Some(soname) = &info.soname {
            names.insert(soname.clone(), 0);
        }
        if let Some(identity) = self.file_identity(path) {
            identities.insert(identity, 0);
        }

        let interpreter = if is_executable { info.interpreter.as_ref().map(PathBuf::from) } else { None };
        if let Some(interpreter_path) = &interpreter {
            let interpreter_info = self.elf(interpreter_path)?.ok_or_else(|| {
                anyhow!("{}: its interpreter {} is missing or not ELF", path.display(), interpreter_path.display())
            })?;
            // The interpreter is mapped before any library: libc's DT_NEEDED on
            // ld-linux-x86-64.so.2 matches it by soname and is never searched.
            let index = objects.len();
            if let Some(soname) = &interpreter_info.soname {
                names.insert(soname.clone(), index);
            }
            names.insert(interpreter_path.to_string_lossy().into_owned(), index);
            if let Some(identity) = self.file_identity(interpreter_path) {
                identities.insert(identity, index);
            }
            objects.push(MappedObject {
                path: interpreter_path.clone(),
                origin: parent_dir(interpreter_path),
                info: interpreter_info,
                loaded_by: None,
                found_by: SearchStep::Interpreter,
            });
        }

        let mut loaded = Vec::new();
        let mut missing = Vec::new();
        let mut queue = std::collections::VecDeque::from([0usize]);
        while let Some(current) = queue.pop_front() {
            let current_info = objects[current].info.clone();
            for name in &current_info.needed {
                if names.contains_key(name) {
                    continue;
                }
                let name = name.clone();
                match self.search(&name, current, &objects, &context)? {
                    Found::Yes((found_path, found_info, found_by)) => {
                        let identity = self.file_identity(&found_path);
                        if let Some(&existing) = identity.as_ref().and_then(|identity| identities.get(identity)) {
                            // The same file under another name: glibc reuses the mapped object.
                            names.insert(name, existing);
                            continue;
                        }
                        let index = objects.len();
                        names.insert(name.clone(), index);
                        names.insert(found_path.to_string_lossy().into_owned(), index);
                        if let Some(soname) = &found_info.soname {
                            names.entry(soname.clone()).or_insert(index);
                        }
                        if let Some(identity) = identity {
                            identities.insert(identity, index);
                        }
                        loaded.push(LoadedObject {
                            name,
                            path: found_path.clone(),
                            needed_by: objects[current].path.clone(),
                        });
                        objects.push(MappedObject {
                            origin: parent_dir(&found_path),
                            path: found_path,
                            info: found_info,
                            loaded_by: Some(current),
                            found_by,
                        });
                        queue.push_back(index);
                    }
                    Found::No(searched) => {
                        missing.push(MissingLibrary { name, chain: chain_of(current, &objects), searched });
                    }
                }
            }
        }
        let mapped = mapped_facts(objects, &names);
        Ok(LoadResult { interpreter, objects: loaded, missing, mapped })
    }

    /// Where `dlopen(name)` called from libc finds a module (NSS and the like): the cache, then
    /// the system directories. `like` is an ELF of the program that will load it.
    pub fn find_for_dlopen(&self, name: &str, like: &ElfIdent) -> Result<Option<PathBuf>> {
        let context = self.context_for(like, Path::new(name))?;
        let mut searched = Vec::new();
        if let Some((path, _, _)) = self.search_cache_and_system(name, false, &context, &mut searched)? {
            return Ok(Some(path));
        }
        Ok(None)
    }

    fn search(&self, name: &str, needing: usize, objects: &[MappedObject], context: &SearchContext) -> Result<Found> {
        let object = &objects[needing];
        if name.contains('/') {
            let expanded = expand_tokens(name, &object.origin, context);
            let path = PathBuf::from(&expanded);
            if path.is_absolute() {
                if let Some(info) = self.usable(&path, context)? {
                    return Ok(Found::Yes((path, info, SearchStep::NeededPath)));
                }
            }
            return Ok(Found::No(vec![path]));
        }
        let mut searched = Vec::new();
        if object.info.runpath.is_empty() {
            // RPATH of the needing object and of every object up the loading chain.
            let mut link = Some(needing);
            while let Some(index) = link {
                let chain_object = &objects[index];
                if chain_object.info.runpath.is_empty() {
                    for entry in &chain_object.info.rpath {
                        let dir = expand_tokens(entry, &chain_object.origin, context);
                        if let Some((path, info)) = self.search_dir(Path::new(&dir), name, context, &mut searched)? {
                            let step = SearchStep::Rpath { entry: entry.clone(), of: chain_object.path.clone() };
                            return Ok(Found::Yes((path, info, step)));
                        }
                    }
                }
                link = chain_object.loaded_by;
            }
        }
        for entry in &object.info.runpath {
            let dir = expand_tokens(entry, &object.origin, context);
            if let Some((path, info)) = self.search_dir(Path::new(&dir), name, context, &mut searched)? {
                let step = SearchStep::Runpath { entry: entry.clone(), of: object.path.clone() };
                return Ok(Found::Yes((path, info, step)));
            }
        }
        match self.search_cache_and_system(name, object.info.nodeflib, context, &mut searched)? {
            Some(hit) => Ok(Found::Yes(hit)),
            None => Ok(Found::No(searched)),
        }
    }

    fn search_cache_and_system(
        &self,
        name: &str,
        nodeflib: bool,
        context: &SearchContext,
        searched: &mut Vec<PathBuf>,
    ) -> Result<Option<Hit>> {
        let key = (context.platform.name, name.to_owned(), nodeflib);
        let memo = self.default_search_memo.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&key).cloned();
        let (found, tried) = match memo {
            Some(known) => known,
            None => {
                let mut tried = Vec::new();
                let found = self.search_cache_and_system_uncached(name, nodeflib, context, &mut tried)?;
                let known = (found, tried);
                self.default_search_memo
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(key, known.clone());
                known
            }
        };
        searched.extend(tried);
        Ok(found)
    }

    fn search_cache_and_system_uncached(
        &self,
        name: &str,
        nodeflib: bool,
        context: &SearchContext,
        searched: &mut Vec<PathBuf>,
    ) -> Result<Option<Hit>> {
        if let Some(cache) = &self.cache {
            searched.push(PathBuf::from("/etc/ld.so.cache"));
            let query = CacheQuery { hwcaps: &context.hwcaps, ..context.cache_query };
            if let Some(hit) = cache.lookup_with(name, &query) {
                let hit = PathBuf::from(hit);
                // glibc compares by prefix: a glibc-hwcaps subdirectory of a system dir counts too.
                let in_system_dir = context.platform.system_dirs.iter().any(|dir| is_under(&hit, dir));
                if !(nodeflib && in_system_dir) {
                    if let Some(info) = self.usable(&hit, context)? {
                        if !self.built_in_search_finds(&hit, name, context) {
                            self.found_only_through_cache
                                .lock()
                                .unwrap_or_else(|poisoned| poisoned.into_inner())
                                .push(hit.clone());
                        }
                        return Ok(Some((hit, info, SearchStep::Cache)));
                    }
                }
            }
        }
        if nodeflib {
            return Ok(None);
        }
        for dir in context.platform.system_dirs {
            if let Some((path, info)) = self.search_dir(Path::new(dir), name, context, searched)? {
                return Ok(Some((path, info, SearchStep::DefaultDir { dir: PathBuf::from(dir) })));
            }
        }
        Ok(None)
    }

    /// Whether the built-in directories' search would reach `hit` for `name` in a jail that
    /// holds it: it is `name` in one of the directories really tried there (a file earlier in
    /// that order on the host is not in the jail unless something else loads it, and then it
    /// is what the host's loader would load too). Reads nothing new: the directories tried are
    /// known per system directory.
    fn built_in_search_finds(&self, hit: &Path, name: &str, context: &SearchContext) -> bool {
        let (Some(dir), Some(file_name)) = (hit.parent(), hit.file_name()) else { return false };
        file_name == name
            && context.platform.system_dirs.iter().any(|system_dir| {
                self.search_directories(Path::new(system_dir), context)
                    .is_some_and(|tried| tried.iter().any(|candidate| candidate == dir))
            })
    }

    /// Tries `dir/glibc-hwcaps/<level>/name` for each level, then `dir/name`.
    fn search_dir(
        &self,
        dir: &Path,
        name: &str,
        context: &SearchContext,
        searched: &mut Vec<PathBuf>,
    ) -> Result<Option<(PathBuf, Arc<ElfInfo>)>> {
        // A relative directory depends on the working directory at run time: unknowable here.
        if !dir.is_absolute() {
            return Ok(None);
        }
        searched.push(dir.to_path_buf());
        let Some(directories) = self.search_directories(dir, context) else { return Ok(None) };
        for directory in directories.iter() {
            let candidate = directory.join(name);
            if let Some(info) = self.usable(&candidate, context)? {
                return Ok(Some((candidate, info)));
            }
        }
        Ok(None)
    }

    /// The file's ELF facts if the loader of `context`'s architecture would accept it.
    fn usable(&self, path: &Path, context: &SearchContext) -> Result<Option<Arc<ElfInfo>>> {
        let Some(info) = self.elf(path)? else { return Ok(None) };
        let matches = info.ident.class == context.platform.class && info.ident.machine == context.platform.machine;
        Ok(matches.then_some(info))
    }
}

enum Found {
    Yes(Hit),
    No(Vec<PathBuf>),
}

/// The mapped objects with, for each, the objects its DT_NEEDED names resolved to and the names
/// it answers to.
fn mapped_facts(objects: Vec<MappedObject>, names: &HashMap<String, usize>) -> Vec<MappedFacts> {
    let mut names_of: Vec<Vec<String>> = vec![Vec::new(); objects.len()];
    for (name, &index) in names {
        names_of[index].push(name.clone());
    }
    objects
        .into_iter()
        .zip(names_of)
        .map(|(object, mut own_names)| {
            own_names.sort_unstable();
            let dependencies = object.info.needed.iter().map(|name| names.get(name).copied()).collect();
            MappedFacts {
                path: object.path,
                info: object.info,
                found_by: object.found_by,
                dependencies,
                names: own_names,
            }
        })
        .collect()
}

/// Whether `path` lies below `dir`, comparing bytes (cheaper than Path's component walk).
fn is_under(path: &Path, dir: &str) -> bool {
    let bytes = path.as_os_str().as_encoded_bytes();
    bytes.starts_with(dir.as_bytes()) && bytes.get(dir.len()) == Some(&b'/')
}

fn parent_dir(path: &Path) -> PathBuf {
    path.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
}

/// The paths from the root object down to `index`.
fn chain_of(index: usize, objects: &[MappedObject]) -> Vec<PathBuf> {
    let mut chain = Vec::new();
    let mut link = Some(index);
    while let Some(current) = link {
        chain.push(objects[current].path.clone());
        link = objects[current].loaded_by;
    }
    chain.reverse();
    chain
}

/// Expands `$ORIGIN`, `$LIB`, `$PLATFORM` (and their `${...}` forms) like glibc's
/// `_dl_dst_substitute`; unknown `$NAME`s stay as written.
fn expand_tokens(text: &str, origin: &Path, context: &SearchContext) -> String {
    expand_dynamic_string_tokens(text, &origin.to_string_lossy(), context.platform.lib_token, &context.platform_token)
}

/// Token expansion with explicit values (testable without a platform).
pub fn expand_dynamic_string_tokens(text: &str, origin: &str, lib: &str, platform: &str) -> String {
    if !text.contains('$') {
        return text.to_owned();
    }
    let mut result = String::with_capacity(text.len() + origin.len());
    let mut rest = text;
    while let Some(position) = rest.find('$') {
        result.push_str(&rest[..position]);
        let after = &rest[position + 1..];
        let tokens = [("ORIGIN", origin), ("LIB", lib), ("PLATFORM", platform)];
        let mut replaced = false;
        for (token, value) in tokens {
            let braced = format!("{{{token}}}");
            let consumed = if after.starts_with(&braced) {
                Some(braced.len())
            } else if after.starts_with(token)
                && !after[token.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            {
                Some(token.len())
            } else {
                None
            };
            if let Some(length) = consumed {
                result.push_str(value);
                rest = &after[length..];
                replaced = true;
                break;
            }
        }
        if !replaced {
            result.push('$');
            rest = after;
        }
    }
    result.push_str(rest);
    result
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests build their fixtures with plain fs calls
mod tests {
    use super::*;

    #[test]
    fn tokens_expand_in_both_spellings_and_unknown_ones_stay() {
        let expand = |text| expand_dynamic_string_tokens(text, "/opt/app/bin", "lib/x86_64-linux-gnu", "haswell");
        assert_eq!(expand("$ORIGIN/../lib"), "/opt/app/bin/../lib");
        assert_eq!(expand("${ORIGIN}/x:$LIB"), "/opt/app/bin/x:lib/x86_64-linux-gnu");
        assert_eq!(expand("/usr/$PLATFORM/lib"), "/usr/haswell/lib");
        assert_eq!(expand("/a/$ORIGINAL/$FOO"), "/a/$ORIGINAL/$FOO");
    }
}
