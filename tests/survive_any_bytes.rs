//! The readers of bytes a local user may control survive any bytes: mutations of real files
//! (ELF objects from the host, its /etc/ld.so.cache, the example Jailfiles, a lock written by
//! `jailprov lock` and a plan saved by `jailprov plan -o`) come back as a value or an error,
//! never as a panic, a hang or a huge allocation.
//!
//! The stable, bounded counterpart of the cargo-fuzz targets in fuzz/: a fixed-seed mutator (bit
//! flips, interesting numbers, truncations, splices, deletions), a few thousand cases in all.
//! - A panic fails the test, naming the reader and the case (rerun one case with
//!   `SURVIVE_CASE=<reader>:<case> cargo test --test survive_any_bytes`).
//! - Each case runs in a thread of its own; one still running after [`CASE_TIME_BOUND`] fails the
//!   test as a hang.
//! - The test binary's global allocator refuses any single allocation past
//!   [`MAX_ONE_ALLOCATION`] and any that would take the live heap past [`MAX_LIVE_HEAP`]: the
//!   refusal prints the reader and case, then aborts the binary (a failed test run).
#![allow(clippy::disallowed_methods)] // tests build their fixtures with plain fs calls

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use jailprov::closure::elf;
use jailprov::closure::ld_cache::LdCache;
use jailprov::diagnostics::JailfileErrors;
use jailprov::host::HostFs;
use jailprov::state::lock::Lock;

/// How long one case may take; the readers take milliseconds on these inputs, even unoptimized.
const CASE_TIME_BOUND: Duration = Duration::from_secs(10);
/// The largest single allocation a reader may make: every seed is under 1 MiB.
const MAX_ONE_ALLOCATION: usize = 256 * 1024 * 1024;
/// The live heap of the whole test binary (tests run in parallel).
const MAX_LIVE_HEAP: usize = 2 * 1024 * 1024 * 1024;

// ----- The bounded allocator -----

struct BoundedAllocator;

static LIVE_HEAP: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    /// The reader (index into [`READERS`]) and case this thread runs, for the refusal message
    /// (const-initialized and without destructor: reading them never allocates).
    static CURRENT_READER: Cell<usize> = const { Cell::new(usize::MAX) };
    static CURRENT_CASE: Cell<u64> = const { Cell::new(0) };
}

const READERS: &[&str] =
    &["elf", "elf_file", "ld_cache", "jailfile", "lock", "lock_review", "saved_plan", "closure_cache", "closure_memo"];

unsafe impl GlobalAlloc for BoundedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !admit(layout.size()) {
            return std::ptr::null_mut();
        }
        let pointer = unsafe { System.alloc(layout) };
        if pointer.is_null() {
            LIVE_HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !admit(layout.size()) {
            return std::ptr::null_mut();
        }
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if pointer.is_null() {
            LIVE_HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        LIVE_HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() && !admit(new_size - layout.size()) {
            return std::ptr::null_mut();
        }
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if moved.is_null() {
            if new_size > layout.size() {
                LIVE_HEAP.fetch_sub(new_size - layout.size(), Ordering::Relaxed);
            }
        } else if new_size < layout.size() {
            LIVE_HEAP.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        moved
    }
}

/// Counts `size` more live bytes, or refuses (saying which case asked) past the bounds.
fn admit(size: usize) -> bool {
    let live = LIVE_HEAP.fetch_add(size, Ordering::Relaxed) + size;
    if size <= MAX_ONE_ALLOCATION && live <= MAX_LIVE_HEAP {
        return true;
    }
    LIVE_HEAP.fetch_sub(size, Ordering::Relaxed);
    say_refused(size);
    false
}

/// Writes "refused an allocation of N bytes (reader R, case C)" without allocating.
fn say_refused(size: usize) {
    let mut line = [0u8; 160];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        let n = bytes.len().min(line.len() - at);
        line[at..at + n].copy_from_slice(&bytes[..n]);
        at += n;
    };
    let mut digits = [0u8; 20];
    put(b"\nsurvive_any_bytes: refused an allocation of ");
    put(decimal(size as u64, &mut digits));
    put(b" bytes (reader ");
    let reader = CURRENT_READER.with(Cell::get);
    put(READERS.get(reader).map_or(b"?".as_slice(), |name| name.as_bytes()));
    put(b", case ");
    put(decimal(CURRENT_CASE.with(Cell::get), &mut digits));
    put(b")\n");
    // SAFETY: writes bytes of a live stack buffer to stderr.
    unsafe { libc::write(2, line.as_ptr().cast(), at) };
}

fn decimal(mut value: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &digits[start..];
        }
    }
}

#[global_allocator]
static ALLOCATOR: BoundedAllocator = BoundedAllocator;

// ----- The mutator -----

/// xorshift64*: deterministic, so a failing case is reproduced by its number alone.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, bound: usize) -> usize {
        if bound == 0 {
            0
        } else {
            (self.next() % bound as u64) as usize
        }
    }
}

/// Numbers that sit on the edges parsers get wrong: zero, one, all ones, sign bits, sizes.
const INTERESTING: &[u64] =
    &[0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0xffff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, u64::MAX, 1 << 40];

/// Case `case` of `seeds`: one seed, changed by one to four mutations (another seed spliced in
/// now and then).
fn mutant(seeds: &[Vec<u8>], case: u64) -> Vec<u8> {
    let mut random = Random(0x9e37_79b9_7f4a_7c15 ^ case.wrapping_mul(0x1000_0000_01b3).wrapping_add(1));
    let mut bytes = seeds[random.below(seeds.len())].clone();
    for _ in 0..=random.below(4) {
        mutate(&mut bytes, seeds, &mut random);
    }
    bytes
}

fn mutate(bytes: &mut Vec<u8>, seeds: &[Vec<u8>], random: &mut Random) {
    let len = bytes.len();
    match random.below(8) {
        // Flip a few bits, mostly near the start, where headers are.
        0 | 1 => {
            let window = if random.below(2) == 0 { len.min(256) } else { len };
            for _ in 0..=random.below(8) {
                if window > 0 {
                    let at = random.below(window);
                    bytes[at] ^= 1 << random.below(8);
                }
            }
        }
        // An interesting number, 1, 2, 4 or 8 bytes wide, little or big endian.
        2 | 3 => {
            let width = 1 << random.below(4);
            if len >= width {
                let at = random.below(len - width + 1);
                let value = INTERESTING[random.below(INTERESTING.len())];
                let value = if random.below(2) == 0 { value } else { value.wrapping_neg() };
                let raw = value.to_le_bytes();
                let field = &mut bytes[at..at + width];
                field.copy_from_slice(&raw[..width]);
                if random.below(4) == 0 {
                    field.reverse(); // big endian
                }
            }
        }
        // Truncate.
        4 => bytes.truncate(random.below(len + 1)),
        // Delete a range.
        5 => {
            let start = random.below(len + 1);
            let end = (start + random.below(64) + 1).min(len);
            bytes.drain(start..end);
        }
        // Copy a range of this input over another place of it (duplicated records, strings).
        6 => {
            if len > 1 {
                let from = random.below(len);
                let size = random.below((len - from).min(512)) + 1;
                let to = random.below(len);
                let chunk = bytes[from..from + size].to_vec();
                let end = (to + size).min(len);
                bytes[to..end].copy_from_slice(&chunk[..end - to]);
            }
        }
        // Splice: this input's head, then another seed's tail.
        _ => {
            let other = &seeds[random.below(seeds.len())];
            let cut = random.below(len + 1);
            let from = random.below(other.len() + 1);
            bytes.truncate(cut);
            bytes.extend_from_slice(&other[from..]);
        }
    }
}

// ----- Running the cases -----

/// Runs `cases` mutants of `seeds` through `reader`, each in its own thread under the time bound.
/// `SURVIVE_CASE=<name>:<case>` runs that one case only.
fn survive(name: &'static str, seeds: Vec<Vec<u8>>, cases: u64, reader: fn(&[u8])) {
    assert!(!seeds.is_empty(), "{name}: no seeds");
    let reader_index = READERS.iter().position(|known| *known == name).expect("every reader is listed in READERS");
    let only = std::env::var("SURVIVE_CASE").ok().and_then(|wanted| {
        let (wanted_name, case) = wanted.split_once(':')?;
        (wanted_name == name).then(|| case.parse::<u64>().ok()).flatten()
    });
    let range = match only {
        Some(case) => case..case + 1,
        None if std::env::var("SURVIVE_CASE").is_ok() => return,
        None => 0..cases,
    };
    let seeds = std::sync::Arc::new(seeds);
    for case in range {
        // The seeds themselves first: a reader must take the real files too.
        let input = match usize::try_from(case).ok().and_then(|index| seeds.get(index)) {
            Some(seed) => seed.clone(),
            None => mutant(&seeds, case),
        };
        run_case(name, reader_index, case, input, reader);
    }
}

fn run_case(name: &str, reader_index: usize, case: u64, input: Vec<u8>, reader: fn(&[u8])) {
    let (done, finished) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        CURRENT_READER.with(|current| current.set(reader_index));
        CURRENT_CASE.with(|current| current.set(case));
        reader(&input);
        let _ = done.send(());
    });
    match finished.recv_timeout(CASE_TIME_BOUND) {
        Ok(()) => {
            let _ = worker.join();
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{name} case {case} still running after {CASE_TIME_BOUND:?}: a hang (rerun with SURVIVE_CASE={name}:{case})")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let _ = worker.join();
            panic!("{name} case {case} panicked (rerun with SURVIVE_CASE={name}:{case})")
        }
    }
}

// ----- Seeds -----

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|error| panic!("seed {}: {error}", path.display()))
}

/// A few real ELF objects of the host: an executable, the loader, small and large libraries.
fn elf_seeds() -> Vec<Vec<u8>> {
    let wanted = [
        "/usr/bin/true",
        "/lib64/ld-linux-x86-64.so.2",
        "/usr/lib/x86_64-linux-gnu/libdl.so.2",
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0",
    ];
    let seeds: Vec<Vec<u8>> = wanted
        .iter()
        .map(Path::new)
        .filter(|path| path.exists())
        .map(|path| read(&path.canonicalize().expect("canonical")))
        .collect();
    assert!(seeds.len() >= 2, "the host has at least /usr/bin/true and the loader");
    seeds
}

fn example_jailfiles() -> Vec<PathBuf> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&examples)
        .expect("examples/")
        .filter_map(|entry| Some(entry.ok()?.path().join("Jailfile.toml")))
        .filter(|path| path.exists())
        .collect();
    found.sort();
    found
}

/// A lock and a saved plan of the seed-shell example, written by jailprov itself.
fn lock_and_saved_plan() -> (Vec<u8>, Vec<u8>) {
    static MADE: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    MADE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/seed-shell/Jailfile.toml");
        std::fs::copy(example, dir.path().join("Jailfile.toml")).expect("copy the example");
        let jailprov = |args: &[&str]| {
            let output = Command::new(env!("CARGO_BIN_EXE_jailprov"))
                .args(args)
                .args(["-f", "Jailfile.toml", "--state-dir", "state"])
                .current_dir(dir.path())
                .output()
                .expect("jailprov runs");
            assert!(output.status.success(), "jailprov {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        };
        jailprov(&["lock"]);
        let root = dir.path().join("jail");
        jailprov(&["plan", "--root", root.to_str().expect("UTF-8 temp path"), "-o", "plan.json"]);
        (read(&dir.path().join("Jailfile.lock")), read(&dir.path().join("plan.json")))
    })
    .clone()
}

// ----- The readers, as a local user's bytes reach them -----

fn read_elf_bytes(bytes: &[u8]) {
    let _ = elf::ident_of(bytes);
    let _ = elf::parse_elf(bytes);
}

/// The same bytes through a file: the reader that reads on demand instead of from memory.
fn read_elf_file(bytes: &[u8]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("object");
    std::fs::write(&path, bytes).expect("write the object");
    let _ = elf::read_ident(&path);
    let _ = elf::read_elf(&path);
}

fn read_ld_cache(bytes: &[u8]) {
    let Ok(cache) = LdCache::parse(bytes) else { return };
    let _ = cache.generator();
    let hwcaps = ["x86-64-v3".to_owned(), "x86-64-v2".to_owned()];
    let names: Vec<String> = cache.entries().iter().take(64).map(|entry| entry.key.clone()).collect();
    for name in names.iter().map(String::as_str).chain(["libc.so.6", "", "libx.so.1.2"]) {
        let _ = cache.lookup(name, 0x0303, &hwcaps);
        let _ = cache.lookup(name, -1, &[]);
    }
}

/// The closure cache as read, and again with its checksum made to match: most mutants stop at
/// the checksum, and the decoder behind it must survive them too.
fn read_closure_cache(bytes: &[u8]) {
    use jailprov::closure::cache::ClosureCache;
    let _ = ClosureCache::decode(bytes);
    let mut stamped = bytes.to_vec();
    if stamped.len() >= 40 {
        let checksum = *blake3::hash(&stamped[40..]).as_bytes();
        stamped[8..40].copy_from_slice(&checksum);
        if let Ok(cache) = ClosureCache::decode(&stamped) {
            let _ = cache.encode();
        }
    }
}

/// A closure cache as `jailprov closure --state-dir` writes it, of a few host programs.
fn closure_cache_seed() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir state");
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
    let jailfile = dir.path().join("Jailfile.toml");
    std::fs::write(&jailfile, "binaries = [\"/usr/bin/true\", \"/usr/bin/iconv\", \"/usr/bin/date\"]\n")
        .expect("write the Jailfile");
    let output = Command::new(env!("CARGO_BIN_EXE_jailprov"))
        .args(["closure", "-f"])
        .arg(&jailfile)
        .arg("--state-dir")
        .arg(&state)
        .env_remove("JAILPROV_NO_CACHE")
        .output()
        .expect("jailprov runs");
    assert!(output.status.success(), "jailprov closure: {}", String::from_utf8_lossy(&output.stderr));
    read(&state.join("closure-cache/objects.bin"))
}

fn read_jailfile(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let _ = jailprov::state::lock::jailfile_digest(Path::new("Jailfile.toml"), &text);
    match jailprov::spec::from_text(Path::new("Jailfile.toml"), text, None, &HostFs::real()) {
        Ok(spec) => {
            let _ = spec.root();
        }
        // Problems are printed with their place in the file: spans into any text.
        Err(error) => {
            if let Some(problems) = error.downcast_ref::<JailfileErrors>() {
                let _ = problems.to_string();
            }
        }
    }
}

fn read_lock(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    if let Ok(lock) = Lock::parse(&text, Path::new("Jailfile.lock")) {
        let _ = lock.to_text();
    }
}

fn read_saved_plan(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    if let Ok(saved) = jailprov::plan::saved::parse(&text, Path::new("plan.json")) {
        let _ = jailprov::render::plan_text(&saved.plan, &saved.root, &saved.jailfile);
        let _ =
            jailprov::reports::plan_json(&saved.plan, &jailprov::state::lock::Review::fresh(saved.jailfile.clone()));
    }
}

/// What `jailprov plan --locked` reads a lock against: the seed-shell example's desired tree,
/// with the Jailfile (and so the lock beside it) in a directory of its own.
struct LockReview {
    dir: tempfile::TempDir,
    desired: jailprov::desired::DesiredTree,
    facts: jailprov::desired::ClosureFacts,
    host: HostFs,
}

fn lock_review() -> &'static LockReview {
    static MADE: std::sync::OnceLock<LockReview> = std::sync::OnceLock::new();
    MADE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/seed-shell/Jailfile.toml");
        std::fs::copy(example, dir.path().join("Jailfile.toml")).expect("copy the example");
        let host = HostFs::real();
        let spec = jailprov::spec::load(&dir.path().join("Jailfile.toml"), None, &host).expect("the example is valid");
        let (desired, facts) =
            jailprov::desired::desired_with_facts(&spec, &host, Default::default()).expect("the example's closure");
        LockReview { dir, desired, facts, host }
    })
}

/// The lock as `plan --locked` reads it: from its file beside the Jailfile, parsed, compared with
/// what the host gives, the difference rendered.
fn review_lock(bytes: &[u8]) {
    let review = lock_review();
    let jailfile = review.dir.path().join("Jailfile.toml");
    // As text: bytes that are not UTF-8 only reach the reader's first check.
    std::fs::write(jailprov::state::lock::lock_path(&jailfile), String::from_utf8_lossy(bytes).as_bytes())
        .expect("write the lock");
    let inputs = jailprov::state::lock::Inputs {
        jailfile: &jailfile,
        desired: &review.desired,
        facts: &review.facts,
        host: &review.host,
        state_dir: &review.dir.path().join("state"),
    };
    if let Ok(reviewed) = jailprov::state::lock::review(&inputs, jailprov::state::lock::Mode::Locked) {
        let _ = jailprov::state::lock::drift_text(&reviewed);
        let _ = jailprov::state::lock::diff_closures_text(&reviewed.comparison);
    }
}

// ----- The tests -----

#[test]
fn elf_reader_survives_mutated_host_objects() {
    survive("elf", elf_seeds(), 1500, read_elf_bytes);
}

#[test]
fn elf_file_reader_survives_mutated_host_objects() {
    survive("elf_file", elf_seeds(), 300, read_elf_file);
}

/// The key of the closure memo seed: a mutant must get past the key to reach what follows it.
fn closure_memo_key() -> jailprov::plan::closure_memo::Key {
    jailprov::plan::closure_memo::Key {
        program: jailprov::host::Seen::Absent(2),
        cpu: "x86_64".to_owned(),
        cwd: "/".into(),
        jailfile: "Jailfile.toml".into(),
        root_override: None,
        jailfile_digest: "blake3:0".to_owned(),
        question: "closure json".to_owned(),
        cache_dir: SEED_CACHE_DIR.get().copied().unwrap_or_default(),
    }
}

/// The identity of the directory the seed was written in (the memo keeps it in its key).
static SEED_CACHE_DIR: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();

/// The closure memo as read from a file holding `bytes`, under the seed's key.
fn read_closure_memo(bytes: &[u8]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("closure-json.memo");
    std::fs::write(&file, bytes).expect("write the memo");
    let memo = jailprov::plan::closure_memo::ClosureMemo { file, key: closure_memo_key() };
    let _ = memo.answer();
}

/// A closure memo of a few looks (a miss among them), written as `jailprov closure` writes one.
fn closure_memo_seed() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache_dir = dir.path().join("closure-cache");
    std::fs::create_dir(&cache_dir).expect("mkdir");
    let file = cache_dir.join("closure-json.memo");
    let key = closure_memo_key();
    let host = jailprov::host::HostFs::real().observing();
    for path in ["/usr/bin/env", "/usr/bin/cat", "/usr/lib/jailprov-none.so.1"] {
        let _ = host.metadata(Path::new(path));
    }
    let memo = jailprov::plan::closure_memo::ClosureMemo { file: file.clone(), key: key.clone() };
    let answer = jailprov::plan::closure_memo::Answer {
        warnings: vec!["a warning".to_owned()],
        output: "{\"entries\": []}\n".to_owned(),
    };
    memo.record(host.observations(), &answer);
    let written = read(&file);
    // The memo takes the directory's identity as its key: the seed carries the fixed one.
    let metadata = std::fs::metadata(&cache_dir).expect("cache dir");
    let identity = (std::os::unix::fs::MetadataExt::dev(&metadata), std::os::unix::fs::MetadataExt::ino(&metadata));
    let _ = SEED_CACHE_DIR.set(identity);
    let memo = jailprov::plan::closure_memo::ClosureMemo { file, key: closure_memo_key() };
    assert_eq!(memo.answer(), Some(answer), "the seed answers under its key");
    written
}

#[test]
fn ld_cache_reader_survives_a_mutated_host_cache() {
    let cache = Path::new("/etc/ld.so.cache");
    assert!(cache.exists(), "the host has an ld.so.cache");
    survive("ld_cache", vec![read(cache)], 800, read_ld_cache);
}

#[test]
fn closure_cache_reader_survives_a_mutated_cache() {
    survive("closure_cache", vec![closure_cache_seed()], 800, read_closure_cache);
}

#[test]
fn closure_memo_reader_survives_a_mutated_memo() {
    survive("closure_memo", vec![closure_memo_seed()], 800, read_closure_memo);
}

#[test]
fn jailfile_reader_survives_mutated_examples() {
    let seeds = example_jailfiles().iter().map(|path| read(path)).collect();
    survive("jailfile", seeds, 600, read_jailfile);
}

#[test]
fn lock_reader_survives_a_mutated_lock() {
    survive("lock", vec![lock_and_saved_plan().0], 600, read_lock);
}

/// Fewer cases: each one reviews a whole jail's lock (hashes cached after the first).
#[test]
fn lock_review_survives_a_mutated_lock_file() {
    survive("lock_review", vec![lock_and_saved_plan().0], 400, review_lock);
}

#[test]
fn saved_plan_reader_survives_a_mutated_plan() {
    survive("saved_plan", vec![lock_and_saved_plan().1], 600, read_saved_plan);
}

// ----- Regressions: each bug found, named after it -----

const PT_INTERP: u32 = 3;
const PT_DYNAMIC: u32 = 2;

/// /usr/bin/true with the `p_type` segment claiming `claimed` bytes, written as a sparse file of
/// that size (a local user's `[[files]]` tree can hold one: it costs them no disk).
fn sparse_object_claiming(dir: &Path, p_type: u32, claimed: u64) -> PathBuf {
    let mut bytes = read(&Path::new("/usr/bin/true").canonicalize().expect("canonical"));
    assert_eq!(&bytes[..5], b"\x7fELF\x02", "a 64-bit ELF");
    let field = |bytes: &[u8], at: usize, width: usize| {
        let mut raw = [0u8; 8];
        raw[..width].copy_from_slice(&bytes[at..at + width]);
        u64::from_le_bytes(raw) as usize
    };
    let (phoff, phentsize, phnum) = (field(&bytes, 0x20, 8), field(&bytes, 0x36, 2), field(&bytes, 0x38, 2));
    let header = (0..phnum)
        .map(|index| phoff + index * phentsize)
        .find(|&at| field(&bytes, at, 4) == p_type as usize)
        .expect("/usr/bin/true has the segment");
    let offset = field(&bytes, header + 8, 8) as u64;
    bytes[header + 32..header + 40].copy_from_slice(&claimed.to_le_bytes());
    let path = dir.join("object");
    std::fs::write(&path, &bytes).expect("write the object");
    let file = std::fs::OpenOptions::new().write(true).open(&path).expect("open the object");
    file.set_len(offset + claimed).expect("a sparse file");
    path
}

/// A 64 GiB PT_INTERP in a sparse file was read whole into memory (an abort, or minutes of
/// reading zeros): the kernel refuses an interpreter path past PATH_MAX, and so does the reader.
#[test]
fn sparse_object_claiming_a_64_gib_interpreter_is_refused_unread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = sparse_object_claiming(dir.path(), PT_INTERP, 64 << 30);
    let error = elf::read_elf(&path).expect_err("a 64 GiB interpreter path is no ELF the kernel runs");
    assert!(format!("{error:#}").contains("PT_INTERP"), "the error names the segment: {error:#}");
}

/// The same with PT_DYNAMIC: a dynamic section is a few hundred bytes, never gigabytes.
#[test]
fn sparse_object_claiming_a_64_gib_dynamic_section_is_refused_unread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = sparse_object_claiming(dir.path(), PT_DYNAMIC, 64 << 30);
    let error = elf::read_elf(&path).expect_err("a 64 GiB dynamic section is refused");
    assert!(format!("{error:#}").contains("PT_DYNAMIC"), "the error names the segment: {error:#}");
}
