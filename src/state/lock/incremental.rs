//! The incremental review: only the lines whose digest moved are read, built and compared;
//! a new lock file takes the others from the old one as they stand.

use std::fs;
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::{Context, Result};
use rustc_hash::FxHashMap as HashMap;

use crate::desired::DesiredNode;
use crate::host::StatPrint;

use super::cache::{source_tag, Cache, KnownHashes, LazyStore, Memo, MemoLine, SourceHash, SourceStore, RECENT_LIMIT};
use super::drift::compare;
use super::entries::{entry_of, hash_sources, source_keys};
use super::format::{
    parse_header, write_lock_text, HostFingerprint, Lock, LockEntry, LockHeader, LockSink, Piece, AFTER_LINES,
    ENTRIES_OPEN, FIRST_LINE, LOCK_VERSION, NEXT_LINE, NO_LINES,
};
use super::packages::{assign_packages, OwnedContentKey, PackageAnswers};
use super::reviewing::{Mode, OldLockMoved, Review, Reviewing, MAX_LOCK_SIZE};

/// How much of the lock file is read for its header (a header jailprov writes is a few hundred
/// bytes; one that does not fit is not jailprov's, and the full review reads it).
const HEADER_READ: u64 = 4096;

/// The old lock file as the memo describes it, read only where needed: its header, and the
/// lines that changed (where each line is follows from the memo's line lengths).
struct OldLock<'m> {
    file: fs::File,
    version: u32,
    jailfile: String,
    host: HostFingerprint,
    lines: &'m [MemoLine],
    /// Where each entry line's JSON starts in the file.
    starts: Vec<u64>,
}

impl<'m> OldLock<'m> {
    /// None when the file is not what the memo describes: another stat print, a header that
    /// does not parse, lines that do not add up to its size.
    fn open(path: &Path, memo: &'m Memo) -> Option<OldLock<'m>> {
        // Never blocks on a FIFO; anything odd there leaves it to the full review's errors.
        let (file, _) = crate::beside::open_regular(path, "the lock", MAX_LOCK_SIZE).ok()??;
        if StatPrint::of(&file.metadata().ok()?) != memo.lock_stat {
            return None;
        }
        let size = memo.lock_stat.size;
        let mut head = vec![0u8; usize::try_from(size.min(HEADER_READ)).ok()?];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0).ok()?;
        // The read may end inside a character of a line after the header.
        let head = match std::str::from_utf8(&head) {
            Ok(head) => head,
            Err(error) => std::str::from_utf8(&head[..error.valid_up_to()]).ok()?,
        };
        let header_end = head.find(ENTRIES_OPEN)? + ENTRIES_OPEN.len();
        let (version, jailfile, host, header_size) = parse_header(&head[..header_end])?;
        let mut at = header_size as u64;
        let mut starts = Vec::with_capacity(memo.lines.len());
        for (index, line) in memo.lines.iter().enumerate() {
            at += if index == 0 { FIRST_LINE.len() } else { NEXT_LINE.len() } as u64;
            starts.push(at);
            at += u64::from(line.length);
        }
        at += if memo.lines.is_empty() { NO_LINES.len() } else { AFTER_LINES.len() } as u64;
        (at == size).then_some(OldLock { file, version, jailfile, host, lines: &memo.lines, starts })
    }

    /// Lines `first..=last` as they stand in the file, the separators between them included.
    fn range(&self, first: usize, last: usize) -> std::ops::Range<u64> {
        self.starts[first]..self.starts[last] + u64::from(self.lines[last].length)
    }

    /// Line `index`, parsed; None if it does not read as an entry.
    fn entry(&self, index: usize) -> Option<LockEntry> {
        let mut json = vec![0u8; usize::try_from(self.lines[index].length).ok()?];
        std::os::unix::fs::FileExt::read_exact_at(&self.file, &mut json, self.starts[index]).ok()?;
        if !(json.starts_with(b"{") && json.ends_with(b"}")) {
            return None;
        }
        serde_json::from_slice(&json).ok()
    }
}

/// The (old, new) positions of equal digests. A digest includes its path, and both sides are
/// sorted by path, so equal digests pair up in order by themselves: a common prefix and suffix,
/// then one hash join of the middle, linear however much changed (a general diff such as Myers'
/// costs the product of length and changes, seconds for an upgrade that touches thousands of
/// files). None when the pairs are not in order (digests of something else).
pub(super) fn matched_lines(old: &[u128], new: &[u128]) -> Option<Vec<(usize, usize)>> {
    let prefix = old.iter().zip(new).take_while(|(old, new)| old == new).count();
    let suffix = old[prefix..].iter().rev().zip(new[prefix..].iter().rev()).take_while(|(old, new)| old == new).count();
    let (old_end, new_end) = (old.len() - suffix, new.len() - suffix);
    let mut pairs: Vec<(usize, usize)> = (0..prefix).map(|index| (index, index)).collect();
    let mut at: HashMap<u128, usize> = HashMap::default();
    at.reserve(old_end - prefix);
    for (index, digest) in old.iter().enumerate().take(old_end).skip(prefix) {
        if at.insert(*digest, index).is_some() {
            return None;
        }
    }
    let mut last_old = prefix.checked_sub(1);
    for (new_index, digest) in new.iter().enumerate().take(new_end).skip(prefix) {
        if let Some(&old_index) = at.get(digest) {
            if last_old.is_some_and(|last| old_index <= last) {
                return None;
            }
            last_old = Some(old_index);
            pairs.push((old_index, new_index));
        }
    }
    pairs.extend((0..suffix).map(|offset| (old_end + offset, new_end + offset)));
    Some(pairs)
}

/// Whether `changed` of `lines` lines (old and new counted together) are better reviewed in full.
/// Reading lines one by one costs more than the full review's one parse once many changed:
/// measured on 40,000 lines, both take about 140 ms with a quarter of them changed, and with half
/// the incremental review takes 240 ms, the full one 190. A few hundred lines are cheap either way.
pub(super) fn too_many_changed(changed: usize, lines: usize) -> bool {
    changed > 1024 && changed * 4 > lines
}

/// Reviews a lock from the lines whose digest differs from the memo's: the old ones read and
/// parsed, the new ones built, those compared; the other lines are what they were, and a new
/// lock file takes them from the old one as they stand. The same answer as `review::review_full`,
/// byte for byte, for a fraction of the work. Ok(None) when the lock file is not what the memo
/// describes: the full review decides then.
pub(super) fn review_incremental(reviewing: &Reviewing, cache: &mut Cache) -> Result<Option<Review>> {
    let inputs = reviewing.inputs;
    // The memo is rewritten on every way out of here, or by the full review.
    let Some(memo) = cache.memo.take() else { return Ok(None) };
    // Before the read's phase starts, so that the timings do not count the digests twice.
    let digests = reviewing.lines.digests();
    let _t = crate::timings::phase("lock: incremental read");
    let Some(old) = OldLock::open(&reviewing.lock_path, &memo) else { return Ok(None) };
    if old.version != LOCK_VERSION {
        return Ok(None);
    }
    let old_digests: Vec<u128> = memo.lines.iter().map(|line| line.digest).collect();
    let Some(pairs) = matched_lines(&old_digests, digests) else { return Ok(None) };
    if too_many_changed(memo.lines.len() + digests.len() - 2 * pairs.len(), memo.lines.len() + digests.len()) {
        return Ok(None);
    }
    let mut old_matched = vec![false; memo.lines.len()];
    let mut new_matched = vec![false; reviewing.lines.len()];
    for &(old_index, new_index) in &pairs {
        old_matched[old_index] = true;
        new_matched[new_index] = true;
    }
    let mut old_entries = Vec::new();
    for (index, _) in old_matched.iter().enumerate().filter(|(_, matched)| !**matched) {
        let Some(entry) = old.entry(index) else { return Ok(None) };
        old_entries.push(entry);
    }
    drop(_t);
    let _t = crate::timings::phase("lock: incremental entries");
    let changed_nodes: Vec<&DesiredNode> = reviewing
        .lines
        .nodes
        .iter()
        .zip(&new_matched)
        .filter(|(_, matched)| !**matched)
        .map(|(node, _)| *node)
        .collect();
    let store = LazyStore::for_few_lookups(&reviewing.store_file);
    let hashed = hash_sources(&changed_nodes, inputs.host, &KnownHashes::new(&cache.recent, &store))?;
    let read: Vec<SourceHash> =
        hashed.iter().flatten().filter(|hashed| hashed.read).map(|hashed| hashed.source).collect();
    // One recent record per source: the latest.
    cache.recent.retain(|known| !read.iter().any(|read| read.key == known.key));
    cache.recent.extend(read);
    let old_part =
        Lock { version: old.version, jailfile: old.jailfile.clone(), host: old.host.clone(), entries: old_entries };
    let mut new_part = Lock {
        version: LOCK_VERSION,
        jailfile: reviewing.jailfile.clone(),
        host: reviewing.fingerprint(cache),
        entries: changed_nodes
            .iter()
            .zip(&hashed)
            .map(|(node, hashed)| entry_of(node, inputs.facts, hashed.as_ref().map(|hashed| &hashed.source.hash)))
            .collect(),
    };
    let comparison = compare(&old_part, &new_part);
    drop(_t);
    if comparison.is_empty() {
        // The lines stand as they are, now for these digests (a touched file whose content is
        // the same, say). No difference means the same paths in the same places.
        cache.memo = (memo.lines.len() == reviewing.lines.len()).then(|| Memo {
            lock_stat: memo.lock_stat,
            lines: memo.lines.iter().zip(digests).map(|(line, digest)| MemoLine { digest: *digest, ..*line }).collect(),
        });
        cache.fresh = Some(reviewing.fresh_key);
        save_incremental(reviewing, cache, &store, None);
        return Ok(Some(reviewing.unchanged(comparison)));
    }
    if matches!(reviewing.mode, Mode::Locked | Mode::Review) {
        // Nothing is written: the memo still describes the lock, which stays as it was, and
        // nothing vouches for it being fresh.
        cache.memo = Some(memo);
        cache.fresh = None;
        save_incremental(reviewing, cache, &store, None);
        if reviewing.mode == Mode::Locked {
            return Err(reviewing.locked_error(&comparison));
        }
        return Ok(Some(Review {
            lock_path: reviewing.lock_path.clone(),
            existed: true,
            comparison,
            wrote: false,
            entries: reviewing.lines.len(),
        }));
    }
    let _t = crate::timings::phase("lock: incremental packages");
    // As the full review: by content key from any line of the old lock (unchanged lines
    // included: a new path may copy a source an unchanged line has), else the dpkg database.
    let Some(recorded) = recorded_packages(&old, &new_part.entries) else { return Ok(None) };
    let reused: Vec<Option<Option<String>>> = new_part
        .entries
        .iter()
        .map(|entry| {
            let key = entry.source.clone().map(|source| (source, entry.hash.clone(), entry.target.clone()));
            key.and_then(|key| recorded.get(&key)).cloned()
        })
        .collect();
    let answers = assign_packages(&mut new_part.entries, reused, inputs.host, &store);
    let reported = compare(&old_part, &new_part);
    drop(_t);
    let _t = crate::timings::phase("lock: incremental write");
    let pieces = spliced_pieces(&old, &new_part.entries, &pairs, reviewing.lines.len())?;
    let header = LockHeader { version: new_part.version, jailfile: &new_part.jailfile, host: &new_part.host };
    let written = reviewing.write_lock(|out, temporary| {
        let mut sink = SpliceSink { out, old: &old.file, temporary, buffer: Vec::with_capacity(SPLICE_BUFFER) };
        write_lock_text(&mut sink, &header, pieces.into_iter())?;
        sink.flush()?;
        // Unchanged lines came from the old file: it must still be the one the memo describes,
        // unchanged and still in place.
        let copied_from = old.file.metadata().map(|metadata| StatPrint::of(&metadata)).ok();
        let in_place = fs::metadata(&reviewing.lock_path).map(|metadata| StatPrint::of(&metadata)).ok();
        if copied_from != Some(memo.lock_stat) || in_place != Some(memo.lock_stat) {
            return Err(OldLockMoved.into());
        }
        Ok(())
    });
    let written = match written {
        Err(error) if error.is::<OldLockMoved>() => return Ok(None),
        written => written?,
    };
    match &written {
        Some(file) => {
            let lines = new_memo_lines(&memo.lines, &new_part.entries, &pairs, digests)?;
            reviewing.remember_written(cache, file, |lock_stat| Some(Memo { lock_stat, lines }));
        }
        None => cache.memo = Some(memo),
    }
    let wrote = written.is_some();
    let learned = Some(answers).filter(|answers| !answers.learned.is_empty());
    save_incremental(reviewing, cache, &store, learned);
    Ok(Some(Review {
        lock_path: reviewing.lock_path.clone(),
        existed: true,
        comparison: reported,
        wrote,
        entries: reviewing.lines.len(),
    }))
}

/// The package of every line of the old lock whose content key one of `entries` has, the later
/// line's for two of one key, as `review::review_full` finds them: the lines whose source tag is one
/// of these entries' sources' are read, and those whose source is one of them recorded. None for
/// a line that does not parse.
fn recorded_packages(old: &OldLock, entries: &[LockEntry]) -> Option<HashMap<OwnedContentKey, Option<String>>> {
    let sources: rustc_hash::FxHashSet<&str> = entries.iter().filter_map(|entry| entry.source.as_deref()).collect();
    let tags: rustc_hash::FxHashSet<u32> = sources.iter().map(|source| source_tag(Some(source))).collect();
    let mut recorded = HashMap::default();
    for (index, line) in old.lines.iter().enumerate() {
        if line.source_tag == 0 || !tags.contains(&line.source_tag) {
            continue;
        }
        let entry = old.entry(index)?;
        if let Some(source) = entry.source.filter(|source| sources.contains(source.as_str())) {
            recorded.insert((source, entry.hash, entry.target), entry.package);
        }
    }
    Some(recorded)
}

/// The new lock's entry lines: runs of unchanged lines from the old file, changed lines from
/// their entries (`changed`, in order).
fn spliced_pieces<'a>(
    old: &OldLock,
    changed: &'a [LockEntry],
    pairs: &[(usize, usize)],
    lines: usize,
) -> Result<Vec<Piece<'a>>> {
    let mut pieces: Vec<Piece> = Vec::new();
    let mut changed = changed.iter();
    let mut pairs = pairs.iter().copied().peekable();
    let mut new_index = 0;
    while new_index < lines {
        match pairs.peek().copied() {
            Some((first_old, paired_new)) if paired_new == new_index => {
                let mut last_old = first_old;
                pairs.next();
                new_index += 1;
                while let Some(&(next_old, next_new)) = pairs.peek() {
                    if next_old != last_old + 1 || next_new != new_index {
                        break;
                    }
                    last_old = next_old;
                    new_index += 1;
                    pairs.next();
                }
                pieces.push(Piece::OldLines(old.range(first_old, last_old)));
            }
            _ => {
                pieces.push(Piece::Entry(changed.next().context("a changed lock line without its entry")?));
                new_index += 1;
            }
        }
    }
    Ok(pieces)
}

/// The memo lines of the spliced lock: unchanged lines' from the old memo, changed lines' from
/// their entries as [`write_lock_text`] writes them.
fn new_memo_lines(
    old: &[MemoLine],
    changed: &[LockEntry],
    pairs: &[(usize, usize)],
    digests: &[u128],
) -> Result<Vec<MemoLine>> {
    let mut old_of_new: Vec<Option<usize>> = vec![None; digests.len()];
    for &(old_index, new_index) in pairs {
        old_of_new[new_index] = Some(old_index);
    }
    let mut changed = changed.iter();
    old_of_new
        .iter()
        .zip(digests)
        .map(|(old_index, digest)| match old_index {
            Some(old_index) => Ok(old[*old_index]),
            None => {
                let entry = changed.next().context("a changed lock line without its entry")?;
                let length = serde_json::to_vec(entry).context("serializing a lock entry")?.len();
                Ok(MemoLine {
                    digest: *digest,
                    length: u32::try_from(length).context("a lock line of 4 GiB")?,
                    source_tag: source_tag(entry.source.as_deref()),
                })
            }
        })
        .collect()
}

/// What a splice writes between two copies of old lines, gathered first.
const SPLICE_BUFFER: usize = 1 << 20;

/// A new lock file written from pieces: runs of unchanged lines are copied from the old lock
/// file by the kernel (`std::io::copy` of one file into another is `copy_file_range`), not read
/// into memory and written again.
struct SpliceSink<'f> {
    out: &'f fs::File,
    old: &'f fs::File,
    temporary: &'f Path,
    buffer: Vec<u8>,
}

impl SpliceSink<'_> {
    fn flush(&mut self) -> Result<()> {
        let mut out = self.out;
        out.write_all(&self.buffer).with_context(|| format!("cannot write {}", self.temporary.display()))?;
        self.buffer.clear();
        Ok(())
    }
}

impl LockSink for SpliceSink<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= SPLICE_BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    fn put_entry(&mut self, entry: &LockEntry) -> Result<()> {
        serde_json::to_writer(&mut self.buffer, entry).context("serializing a lock entry")
    }

    fn put_old(&mut self, range: std::ops::Range<u64>) -> Result<()> {
        self.flush()?;
        let mut old = self.old;
        old.seek(std::io::SeekFrom::Start(range.start)).map_err(|_| OldLockMoved)?;
        let length = range.end - range.start;
        let copied = std::io::copy(&mut old.take(length), &mut self.out)
            .with_context(|| format!("cannot write {}", self.temporary.display()))?;
        if copied != length {
            // Shorter than the memo says: the file changed.
            return Err(OldLockMoved.into());
        }
        Ok(())
    }
}

/// Saves what an incremental review learned: the small file always; the store only when the
/// recent hashes outgrew [`RECENT_LIMIT`] or package answers were looked up (rare: new sources,
/// or dpkg changed), then pruned to the jail's sources (so neither grows without end).
fn save_incremental(reviewing: &Reviewing, cache: &mut Cache, store: &LazyStore, learned: Option<PackageAnswers>) {
    let _t = crate::timings::phase("lock: incremental save cache");
    if cache.recent.len() > RECENT_LIMIT || learned.is_some() {
        let store = store.whole();
        let keep = source_keys(reviewing.inputs.desired);
        let files = store.files().chain(cache.recent.iter().copied());
        let bytes = match learned {
            Some(answers) => {
                let (database, packages) = answers.into_store_packages();
                SourceStore::encode(files, packages, database, &keep)
            }
            None => SourceStore::encode(files, store.packages(), store.database, &keep),
        };
        reviewing.save_cache(&reviewing.store_file, bytes);
        cache.recent.clear();
    }
    reviewing.save_cache(&reviewing.cache_file, cache.encode());
}
